//! Reading token responses and classifying failures, as pure code.
//!
//! The rules, each with tests below:
//!
//! * Any 2xx is a success candidate. The body may be JSON or, rarely, form-encoded
//!   (`access_token=...&expires_in=...`), whatever the Content-Type says.
//! * A 2xx body that carries a non-null `error` field, or has no usable (non-empty string)
//!   access token, is `InvalidResponse`.
//! * Values are read at the names in `spec.responseFields` (default `access_token`,
//!   `expires_in`, `token_type`, `scope`). A name that exists as a top-level key is used as is;
//!   otherwise it is read as a dotted path (`data.token`, `items.0.token`).
//! * `expires_in` may be a number or a numeric string (`3599`, `"3599"`, `3599.0`); fractions
//!   are rounded down; `0`, negative, `null`, non-finite or unparseable values count as absent;
//!   values are clamped to one year. An absolute `expires_on` (Unix seconds, as Entra ID v1
//!   sends it; milliseconds are recognised) wins when it lies in the future. When neither is
//!   usable, the access token's JWT `exp` claim is used: the payload is decoded but the
//!   signature is **not** verified (the operator only needs a hint of the lifetime; the
//!   resource server verifies the token). Failing that, `refresh.defaultLifetime` applies.
//! * Expiry is always computed from the operator's own clock at the time the request was sent,
//!   never from a vendor's `issued_at`: vendors' clocks and time zones vary (Microbilt documents
//!   its `issued_at` as "central standard time"). `issued_at` is still read, in seconds or
//!   milliseconds, and reported as the vendor's issue time.
//! * `scope` may be a string or an array of strings (joined with spaces); empty means unknown.
//! * `token_type`: missing or empty is `Bearer`; `bearer` and `BearerToken` (any case) are
//!   `Bearer`; other values (`DPoP`, `N_A`, ...) are kept as sent.
//! * Failures carry the RFC 6749 `error` / `error_description`, or the common non-RFC envelopes
//!   (Apigee `ErrorCode` / `Error`, `fault.faultstring`, `reason`, `message`,
//!   `errors[].message`, an `error` object with `code` / `message`), else the HTTP status and a
//!   short, sanitised start of the body (the `<title>` of an HTML page). Messages never contain
//!   the client secret or a token.
//! * `Retry-After` is read as delta-seconds or an HTTP date.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode};
use jiff::Timestamp;
use serde_json::{Map, Value};
use url::Url;

use crate::crd::ResponseFields;
use crate::reason::{Failure, Reason};
use crate::redact::{Sensitive, scrub};

/// Longest lifetime believed (one year).
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Longest `Retry-After` honoured (one day); longer values are clamped.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Longest excerpt of a body or error text put into a message.
const MAX_EXCERPT: usize = 200;

/// Where the lifetime of a token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum LifetimeSource {
    /// The response's `expires_in`.
    ExpiresIn,
    /// The response's absolute `expires_on`.
    ExpiresOn,
    /// The JWT `exp` claim of the access token.
    JwtExp,
    /// `refresh.defaultLifetime`.
    DefaultLifetime,
}

/// A token read from a successful response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The access token.
    pub access_token: Sensitive<String>,
    /// Normalised token type.
    pub token_type: String,
    /// Granted scope, when the endpoint said.
    pub scope: Option<String>,
    /// When the request was sent, by the operator's clock.
    pub issued_at: Timestamp,
    /// When the token expires, by the operator's clock.
    pub expires_at: Timestamp,
    /// Where the lifetime came from.
    pub lifetime_source: LifetimeSource,
    /// The vendor's own `issued_at`, when sent (informational only).
    pub vendor_issued_at: Option<Timestamp>,
}

/// A response as the transport received it.
#[derive(Clone, Copy, Debug)]
pub struct Response<'a> {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: &'a HeaderMap,
    /// The body (already capped by the transport).
    pub body: &'a [u8],
}

/// What reading a response needs besides the response.
#[derive(Clone, Copy, Debug)]
pub struct ReadContext<'a> {
    /// Where to find values.
    pub fields: &'a ResponseFields,
    /// Lifetime assumed when the response does not tell.
    pub default_lifetime: Duration,
    /// When the request was sent.
    pub now: Timestamp,
    /// The request URL (to name a redirect's target host).
    pub request_url: &'a Url,
    /// Values that must never appear in a message (the client secret).
    pub redact: &'a [&'a str],
}

/// Reads a token response: a [`Token`] for a usable 2xx, else a classified [`Failure`].
pub fn read(response: &Response<'_>, ctx: &ReadContext<'_>) -> Result<Token, Failure> {
    let status = response.status;
    if (200..300).contains(&status) {
        read_success(response, ctx)
    } else if (300..400).contains(&status) {
        Err(redirect_failure(response, ctx))
    } else {
        Err(classify_error(response, ctx))
    }
}

// === success ===

fn read_success(response: &Response<'_>, ctx: &ReadContext<'_>) -> Result<Token, Failure> {
    let status = status_text(response.status);
    let object = parse_body(response.body).ok_or_else(|| {
        let content_type = header(response.headers, "content-type").unwrap_or("no content type");
        let mut message = format!(
            "{status} with a body that is neither a JSON object nor form-encoded ({})",
            sanitise(content_type, ctx.redact)
        );
        if let Some(title) = html_title(response.body) {
            message.push_str(&format!(": {}", sanitise(&title, ctx.redact)));
        }
        Failure::new(Reason::InvalidResponse, message)
    })?;

    if let Some(error) = object.get("error").filter(|v| !v.is_null()) {
        let described = describe_error_fields(&object).unwrap_or_else(|| short_json(error));
        return Err(Failure::new(
            Reason::InvalidResponse,
            format!(
                "{status} carries an error instead of a token: {}",
                sanitise(&described, ctx.redact)
            ),
        ));
    }

    let fields = ctx.fields;
    let access_token = match lookup(&object, &fields.access_token) {
        Some(Value::String(token)) if !token.trim().is_empty() => token.clone(),
        found => {
            let what = match found {
                None => "has no",
                Some(_) => "has an unusable (empty or non-string)",
            };
            let mut names: Vec<&str> = object.keys().map(String::as_str).take(12).collect();
            names.sort_unstable();
            return Err(Failure::new(
                Reason::InvalidResponse,
                format!(
                    "{status} {what} {} (top-level fields: {}); set spec.responseFields.accessToken if the token is elsewhere",
                    sanitise(&fields.access_token, ctx.redact),
                    sanitise(&names.join(", "), ctx.redact)
                ),
            ));
        }
    };

    let now = ctx.now;
    let (expires_at, lifetime_source) = if let Some(at) = object
        .get("expires_on")
        .and_then(unix_time)
        .filter(|at| *at > now)
    {
        (at.min(add(now, MAX_LIFETIME)), LifetimeSource::ExpiresOn)
    } else if let Some(secs) = lookup(&object, &fields.expires_in).and_then(positive_seconds) {
        (
            add(now, Duration::from_secs(secs)),
            LifetimeSource::ExpiresIn,
        )
    } else if let Some(at) = jwt_exp(&access_token).filter(|at| *at > now) {
        (at.min(add(now, MAX_LIFETIME)), LifetimeSource::JwtExp)
    } else {
        (
            add(now, ctx.default_lifetime.min(MAX_LIFETIME)),
            LifetimeSource::DefaultLifetime,
        )
    };

    let token_type =
        normalize_token_type(lookup(&object, &fields.token_type).and_then(Value::as_str));
    let scope = lookup(&object, &fields.scope).and_then(scope_text);
    let vendor_issued_at = object.get("issued_at").and_then(unix_time);

    Ok(Token {
        access_token: Sensitive::new(access_token),
        token_type,
        scope,
        issued_at: now,
        expires_at,
        lifetime_source,
        vendor_issued_at,
    })
}

/// Parses a body as a JSON object, or else as a form-encoded set of fields.
fn parse_body(body: &[u8]) -> Option<Map<String, Value>> {
    let text = std::str::from_utf8(body).ok()?;
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.starts_with('{') {
        return match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        };
    }
    parse_form(text)
}

fn parse_form(text: &str) -> Option<Map<String, Value>> {
    if text.is_empty() || !text.contains('=') {
        return None;
    }
    let mut map = Map::new();
    for pair in text.split('&') {
        let (key, _) = pair.split_once('=')?;
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.%+".contains(&b));
        if !key_ok {
            return None;
        }
    }
    for (key, value) in form_urlencoded::parse(text.as_bytes()) {
        map.insert(key.into_owned(), Value::String(value.into_owned()));
    }
    Some(map)
}

/// Finds a value by top-level name, else by dotted path (numeric segments index arrays).
pub fn lookup<'v>(object: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    if let Some(v) = object.get(path) {
        return Some(v);
    }
    let mut segments = path.split('.');
    let mut current = object.get(segments.next()?)?;
    for segment in segments {
        current = match current {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// A number or numeric string as whole seconds; `None` for 0, negative, null or garbage.
fn positive_seconds(value: &Value) -> Option<u64> {
    let secs = number(value)?;
    if secs < 1.0 {
        return None;
    }
    Some((secs.floor() as u64).min(MAX_LIFETIME.as_secs()))
}

/// A finite number from a JSON number or a numeric string.
fn number(value: &Value) -> Option<f64> {
    let n = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => {
            let s = s.trim();
            // f64::from_str also accepts "inf" and "NaN"; only digits, sign, point and exponent
            // are numbers here.
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
            {
                return None;
            }
            s.parse::<f64>().ok()?
        }
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// Unix time in seconds, or in milliseconds when the number is too large to be seconds
/// (10^11 seconds is the year 5138).
fn unix_time(value: &Value) -> Option<Timestamp> {
    let n = number(value)?;
    if n <= 0.0 {
        return None;
    }
    let secs = if n >= 1e11 { n / 1000.0 } else { n };
    Timestamp::from_second(secs.floor() as i64).ok()
}

/// The `exp` claim of a JWT, without verifying the signature.
fn jwt_exp(token: &str) -> Option<Timestamp> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 64 * 1024 {
        return None;
    }
    let decoded = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&decoded).ok()?;
    unix_time(claims.get("exp")?)
}

/// `token_type` normalisation.
pub fn normalize_token_type(raw: Option<&str>) -> String {
    match raw.map(str::trim) {
        None | Some("") => "Bearer".into(),
        Some(t) if t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("bearertoken") => {
            "Bearer".into()
        }
        Some(t) => t.to_owned(),
    }
}

fn scope_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    let d = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

// === failures ===

fn redirect_failure(response: &Response<'_>, ctx: &ReadContext<'_>) -> Failure {
    let target = header(response.headers, "location")
        .and_then(|loc| ctx.request_url.join(loc).ok())
        .and_then(|url| url.host_str().map(str::to_owned));
    let to = match target {
        Some(host) => format!("to host {}", sanitise(&host, ctx.redact)),
        None => "without a usable Location".to_owned(),
    };
    Failure::new(
        Reason::InvalidResponse,
        format!(
            "{} redirect {to}; redirects are not followed so that credentials are never sent to another URL: set spec.tokenUrl to the final URL",
            status_text(response.status)
        ),
    )
}

/// Classifies a non-2xx, non-3xx answer into a contract reason.
fn classify_error(response: &Response<'_>, ctx: &ReadContext<'_>) -> Failure {
    let status = response.status;
    let object = parse_body(response.body);
    let code = object.as_ref().and_then(error_code);
    let reason = reason_for(status, code.as_deref());

    let detail = object
        .as_ref()
        .and_then(describe_error_fields)
        .or_else(|| body_excerpt(response.body));
    let mut message = status_text(status);
    if let Some(detail) = detail {
        message.push_str(": ");
        message.push_str(&sanitise(&detail, ctx.redact));
    }

    let retry_after = header(response.headers, "retry-after")
        .and_then(|v| parse_retry_after(v, SystemTime::from(ctx.now)));
    if let Some(after) = retry_after {
        message.push_str(&format!(" (Retry-After {}s)", after.as_secs()));
    }
    Failure {
        reason,
        message,
        retry_after,
    }
}

/// The reason for an error status and RFC 6749 error code.
pub fn reason_for(status: u16, code: Option<&str>) -> Reason {
    match (status, code) {
        (429, _) => Reason::RateLimited,
        (500..=599, _) => Reason::EndpointUnavailable,
        (401, _) => Reason::InvalidClient,
        (_, Some("invalid_client")) => Reason::InvalidClient,
        (_, Some("unauthorized_client" | "access_denied")) => Reason::AccessDenied,
        (_, Some("invalid_scope")) => Reason::InvalidScope,
        (403, _) => Reason::AccessDenied,
        (400..=499, _) => Reason::InvalidRequest,
        // 1xx or a status outside the HTTP range: not an answer we can use.
        _ => Reason::InvalidResponse,
    }
}

/// The machine-readable error code: RFC 6749 `error`, or Apigee `ErrorCode`, or an `error`
/// object's `code`.
fn error_code(object: &Map<String, Value>) -> Option<String> {
    let code = match object.get("error") {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Object(inner)) => inner.get("code").and_then(Value::as_str),
        _ => None,
    }
    .or_else(|| object.get("ErrorCode").and_then(Value::as_str))?;
    Some(code.trim().to_ascii_lowercase())
}

/// A human description from the known error envelopes, if any.
fn describe_error_fields(object: &Map<String, Value>) -> Option<String> {
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let mut parts: Vec<String> = Vec::new();
    match object.get("error") {
        Some(Value::String(code)) if !code.trim().is_empty() => parts.push(code.trim().to_owned()),
        Some(Value::Object(inner)) => {
            parts.extend(text(inner.get("code")));
            parts.extend(text(inner.get("message")));
        }
        _ => {}
    }
    parts.extend(text(object.get("error_description")));
    if parts.is_empty() {
        parts.extend(text(object.get("ErrorCode")));
        parts.extend(text(object.get("Error")));
    }
    if parts.is_empty() {
        let fault = object.get("fault");
        parts.extend(text(fault.and_then(|f| f.get("faultstring"))));
        parts.extend(text(
            fault
                .and_then(|f| f.get("detail"))
                .and_then(|d| d.get("errorcode")),
        ));
    }
    if parts.is_empty() {
        parts.extend(text(object.get("reason")));
        parts.extend(text(object.get("message")));
    }
    if parts.is_empty() {
        if let Some(Value::Array(errors)) = object.get("errors") {
            let messages: Vec<String> = errors
                .iter()
                .filter_map(|e| text(e.get("message")).or_else(|| text(Some(e))))
                .take(5)
                .collect();
            if !messages.is_empty() {
                parts.push(messages.join("; "));
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join(": "))
}

/// A short start of a non-JSON body: the `<title>` of an HTML page, else its text.
fn body_excerpt(body: &[u8]) -> Option<String> {
    if let Some(title) = html_title(body) {
        return Some(title);
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(4 * MAX_EXCERPT)]);
    let text = strip_tags(&text);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

fn html_title(body: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&body[..body.len().min(16 * 1024)]);
    let lower = head.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let open_end = start + lower[start..].find('>')? + 1;
    let close = open_end + lower[open_end..].find("</title")?;
    let title = head[open_end..close]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!title.is_empty()).then_some(title)
}

fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn short_json(value: &Value) -> String {
    let text = value.to_string();
    text.chars().take(MAX_EXCERPT).collect()
}

/// Makes outside text safe for a message: no control characters, collapsed whitespace, at most
/// [`MAX_EXCERPT`] characters, and no occurrence of a value to redact.
pub fn sanitise(text: &str, redact: &[&str]) -> String {
    let scrubbed = scrub(text, redact);
    let cleaned: String = scrubbed
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let collapsed = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() > MAX_EXCERPT {
        let mut cut: String = collapsed.chars().take(MAX_EXCERPT).collect();
        cut.push('…');
        // Cutting could have split a secret that was not scrubbed whole; scrub once more.
        scrub(&cut, redact)
    } else {
        collapsed
    }
}

fn status_text(status: u16) -> String {
    match StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("HTTP {status} {reason}"),
        None => format!("HTTP {status}"),
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Reads a `Retry-After` value: delta-seconds or an HTTP date, relative to `now`. Dates in the
/// past give zero; values are clamped to [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let wait = if value.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate absurdly long digit strings instead of failing.
        Duration::from_secs(
            value
                .parse::<u64>()
                .unwrap_or(u64::MAX)
                .min(MAX_RETRY_AFTER.as_secs()),
        )
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests;
