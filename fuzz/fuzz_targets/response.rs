//! The token-response reader on arbitrary status, headers and body.
//!
//! Input layout: the first line is the status code, the following lines up to an empty line
//! are headers (`name: value`), the rest is the body. Invariants: no panic; a failure message
//! never contains the client secret, is one line and is bounded; a token is never empty and
//! never expires before it was issued.
#![no_main]

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use oauth_token_operator::crd::ResponseFields;
use oauth_token_operator::response::{self, ReadContext, Response};

const SECRET: &str = "fuzz-client-secret-9f8e7d";

fuzz_target!(|data: &[u8]| {
    let (status, headers, body) = split(data);
    let url = url::Url::parse("https://idp.example/oauth/token").unwrap();
    let fields = ResponseFields::default();
    let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
    let ctx = ReadContext {
        fields: &fields,
        default_lifetime: Duration::from_secs(3600),
        now,
        request_url: &url,
        redact: &[SECRET],
    };
    let response = Response {
        status,
        headers: &headers,
        body,
    };
    match response::read(&response, &ctx) {
        Ok(token) => {
            assert!(!token.access_token.expose().is_empty());
            assert!(token.expires_at > token.issued_at);
            assert!(!token.token_type.is_empty());
        }
        Err(failure) => {
            assert!(!failure.message.contains(SECRET), "{}", failure.message);
            assert!(!failure.message.contains('\n'), "{}", failure.message);
            assert!(failure.message.len() <= 2048, "{}", failure.message.len());
        }
    }
});

fn split(data: &[u8]) -> (u16, HeaderMap, &[u8]) {
    let mut rest = data;
    let mut line = || -> Option<&[u8]> {
        let end = rest.iter().position(|&b| b == b'\n')?;
        let (head, tail) = rest.split_at(end);
        rest = &tail[1..];
        Some(head)
    };
    let status = line()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|s| s.trim().parse::<u16>().ok())
        .filter(|s| (100..1000).contains(s))
        .unwrap_or(200);
    let mut headers = HeaderMap::new();
    while let Some(l) = line() {
        if l.is_empty() || l == b"\r" {
            break;
        }
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&l[..colon]),
            HeaderValue::from_bytes(l[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    (status, headers, rest)
}
