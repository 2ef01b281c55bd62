//! Duration parsing (`90s`, `1h30m`) on arbitrary text. Invariants: no panic; the error names
//! at most 64 characters of the input; a parsed duration formats to text that parses back to
//! the same duration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oauth_token_operator::spec::duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match duration::parse(text) {
        Ok(d) => {
            let formatted = duration::format(d);
            assert_eq!(duration::parse(&formatted), Ok(d), "{text:?} -> {formatted}");
        }
        // At most 64 input characters, each Debug-escaped to at most 10 (`\u{10ffff}`).
        Err(e) => assert!(e.to_string().len() <= 64 * 10 + 200, "{e}"),
    }
});
