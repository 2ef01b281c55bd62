//! `Retry-After` parsing (delta-seconds or HTTP date) on arbitrary text. Invariants: no panic;
//! a result never exceeds the cap.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use oauth_token_operator::oauth::response::{MAX_RETRY_AFTER, parse_retry_after};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    if let Some(wait) = parse_retry_after(text, now) {
        assert!(wait <= MAX_RETRY_AFTER);
    }
});
