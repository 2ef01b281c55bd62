//! The token-response reader on arbitrary status, headers and body.
//!
//! Input layout: the first line is the status code, the following lines up to an empty line
//! are headers (`name: value`), the rest is the body. Invariants: no panic; a failure message
//! never contains the client secret or a Basic header value in any form (raw, trimmed,
//! form-urlencoded, JSON- or HTML-escaped, base64: derived here independently of the
//! operator's scrubber), nor the access token of a 200 that carries an error, is one line and
//! is bounded; a token is never empty, is visible ASCII, is at most 64 KiB and never expires
//! before it was issued.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use oauth_token_operator::api::crd::ResponseFields;
use oauth_token_operator::base::Scrubber;
use oauth_token_operator::oauth::request::Credentials;
use oauth_token_operator::oauth::response::{self, ReadContext, Response};

const ID: &str = "fuzz id/1";
/// The seed corpus echoes its first part; the rest holds every character that encoders treat
/// differently.
const SECRET: &str = "fuzz-client-secret-9f8e7d ~+/=&<x>\"'";

/// Every form of `value` a message must not hold.
fn forms(value: &str) -> Vec<String> {
    let mut out = vec![value.to_owned(), value.trim().to_owned()];
    let plus: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let space = plus.replace('+', "%20");
    for encoded in [plus, space] {
        // Lower-case hex: `%2B` → `%2b`.
        let lower: String = encoded
            .split('%')
            .enumerate()
            .map(|(i, part)| match (i, part.get(..2)) {
                (0, _) | (_, None) => part.to_owned(),
                (_, Some(hex)) => format!("%{}{}", hex.to_ascii_lowercase(), &part[2..]),
            })
            .collect();
        out.push(lower);
        out.push(encoded);
    }
    let json = serde_json::to_string(value).unwrap();
    let json = &json[1..json.len() - 1];
    out.push(json.replace('/', "\\/"));
    out.push(json.to_owned());
    let html = value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    out.push(html.replace('\'', "&#39;"));
    out.push(html.replace('\'', "&#x27;"));
    out.retain(|f| !f.is_empty());
    out
}

/// The forms of the secret and of both Basic header values.
static FORBIDDEN: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut out = forms(SECRET);
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    for pair in [format!("{ID}:{SECRET}"), format!("{}:{}", enc(ID), enc(SECRET))] {
        for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            out.extend(forms(&engine.encode(pair.as_bytes())));
        }
    }
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        out.extend(forms(&engine.encode(SECRET)));
    }
    out
});

static SCRUBBER: LazyLock<Scrubber<'static>> = LazyLock::new(|| {
    Scrubber::for_credentials(&Credentials::with_secret(ID, SECRET))
});

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
        scrubber: &SCRUBBER,
    };
    let response = Response {
        status,
        headers: &headers,
        body,
    };
    match response::read(&response, &ctx) {
        Ok(token) => {
            let access_token = token.access_token.expose();
            assert!(!access_token.is_empty());
            assert!(access_token.len() <= response::MAX_ACCESS_TOKEN);
            assert!(access_token.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            assert!(token.expires_at > token.issued_at);
            assert!(!token.token_type.is_empty());
            assert!(token.token_type.len() <= response::MAX_TOKEN_TYPE);
            assert!(token.scope.as_ref().is_none_or(|s| s.len() <= response::MAX_SCOPE));
        }
        Err(failure) => {
            for form in FORBIDDEN.iter() {
                assert!(!failure.message.contains(form.as_str()), "{}", failure.message);
            }
            // A 200 that carries an error: the token it also carries is not shown (looked for
            // after the operator's own words; a well-formed token of 8 or more characters).
            const CARRIES: &str = "carries an error instead of a token";
            if let Some(at) = failure.message.find(CARRIES) {
                let shown = &failure.message[at + CARRIES.len()..];
                let token = serde_json::from_slice::<serde_json::Value>(body.trim_ascii())
                    .ok()
                    .and_then(|v| v.get("access_token")?.as_str().map(str::to_owned));
                if let Some(token) = token.filter(|t| {
                    t.len() >= 8 && t.bytes().all(|b| (0x21..=0x7e).contains(&b))
                }) {
                    for form in forms(&token) {
                        assert!(!shown.contains(form.as_str()), "{}", failure.message);
                    }
                }
            }
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
