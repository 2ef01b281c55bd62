//! The security issue, item 3 ("No response can exhaust memory"): what reading one response
//! costs, measured with a counting allocator (stats_alloc as this test binary's global allocator).
//!
//! Attacks `response::jwt_exp`: when a 2xx body has no usable `expires_in` / `expires_on`, the
//! access token's payload (up to 48 KiB once decoded, inside the 64 KiB token limit) is parsed
//! into a `serde_json::Value` tree. A payload of tiny objects (`[{"a":0},{"a":0},...]`, 8 bytes
//! each) becomes one `BTreeMap` node plus a `String` per object: hundreds of bytes of heap per
//! 8 bytes of input. With `--max-concurrent-exchanges 32` that is 32 such trees at once, on top
//! of 32 bodies of 1 MiB, against the chart's 128 MiB limit; after the OOM kill the same
//! reconciles run again (the issue's "stopping refreshes for every tenant"). The module docs of
//! `response` promise "a 1 MiB body costs about its own size at most"; only `exp` is needed, so
//! the payload can be scanned with `IgnoredAny` for everything else.

use std::alloc::System;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oauth_token_operator::api::crd::ResponseFields;
use oauth_token_operator::base::Scrubber;
use oauth_token_operator::oauth::credentials::Credentials;
use oauth_token_operator::oauth::response::{self, ReadContext, Response};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn a_jwt_payload_costs_about_its_size_not_a_tree() {
    // A JWT whose payload is as large as the 64 KiB token limit allows, made of tiny objects.
    let mut payload = String::from("[");
    while payload.len() + 9 < 47 * 1024 {
        payload.push_str(r#"{"a":0},"#);
    }
    payload.push_str(r#"{"exp":4102444800}]"#);
    let token = format!(
        "{}.{}.sig",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(payload.as_bytes())
    );
    assert!(token.len() <= 64 * 1024);
    let body = serde_json::json!({"access_token": token, "token_type": "Bearer"}).to_string();

    let credentials = Credentials::with_secret("id", "a-long-enough-secret");
    let scrubber = Scrubber::for_credentials(&credentials);
    let fields = ResponseFields::default();
    let url = url::Url::parse("https://idp.example/token").unwrap();
    let headers = http::HeaderMap::new();
    let ctx = ReadContext {
        fields: &fields,
        default_lifetime: Duration::from_secs(3600),
        now: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        request_url: &url,
        scrubber: &scrubber,
    };
    let response = Response {
        status: 200,
        headers: &headers,
        body: body.as_bytes(),
    };

    let region = Region::new(GLOBAL);
    let token = response::read(&response, &ctx).expect("a usable token");
    // stats_alloc counts bytes allocated, not the peak: a bound on the peak.
    let peak = region.change().bytes_allocated;
    drop(token);

    assert!(
        peak <= 4 * body.len(),
        "reading a {} byte body took {peak} bytes of heap at peak ({}x)",
        body.len(),
        peak / body.len()
    );
}
