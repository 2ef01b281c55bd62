//! `spec.extraHeaders`: extra, non-secret request headers.

use http::{HeaderName, HeaderValue};

use super::check_map;
use crate::api::crd::{MAX_NAME_LEN, OAuthClientSpec};
use crate::api::reason::Failure;

/// Headers that `extraHeaders` may not set: credentials (also the proxy's and cookies), body
/// type, request framing and the hop-by-hop headers that control the connection.
pub const FORBIDDEN_HEADERS: [&str; 14] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// The extra headers, validated: a valid name that is not forbidden, a value of printable
/// ASCII (and tab) only.
pub fn extra_headers(spec: &OAuthClientSpec) -> Result<Vec<(HeaderName, HeaderValue)>, Failure> {
    check_map(
        "spec.extraHeaders",
        spec.extra_headers.as_ref(),
        MAX_NAME_LEN,
    )?;
    let mut extra_headers = Vec::new();
    for (name, value) in spec.extra_headers.iter().flatten() {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Failure::invalid_spec(format!(
                "spec.extraHeaders: {name:?} is not a valid header name"
            ))
        })?;
        if FORBIDDEN_HEADERS.contains(&header.as_str()) {
            return Err(Failure::invalid_spec(format!(
                "spec.extraHeaders may not set {name}: credentials, cookies, the body type and connection headers are the operator's"
            )));
        }
        // HeaderValue accepts bytes >= 0x80 (obs-text); only visible ASCII, space and tab
        // are allowed here.
        let printable = value
            .bytes()
            .all(|b| b == b'\t' || (0x20..=0x7e).contains(&b));
        let value = HeaderValue::from_str(value)
            .ok()
            .filter(|_| printable)
            .ok_or_else(|| {
                Failure::invalid_spec(format!(
                    "spec.extraHeaders: the value of {name} is not a valid header value (printable ASCII only)"
                ))
            })?;
        extra_headers.push((header, value));
    }
    Ok(extra_headers)
}
