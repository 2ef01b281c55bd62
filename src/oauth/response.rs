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
//! * Limits, checked before anything is stored (`InvalidResponse`, naming the field and, for a
//!   length, the length; never showing the value): the access token at most
//!   [`MAX_ACCESS_TOKEN`] bytes of visible ASCII (0x21-0x7E, so no spaces, CR or LF);
//!   `token_type` at most [`MAX_TOKEN_TYPE`] bytes of visible ASCII once trimmed; `scope` at
//!   most [`MAX_SCOPE`] bytes, RFC 6749 scope tokens (NQCHAR: visible ASCII except `"` and `\`)
//!   separated by single spaces, surrounding whitespace trimmed; for an array, every element
//!   a valid token.
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
//!   short, sanitised start of the body (the `<title>` of an HTML page).
//! * Messages are public (events are readable with the default `view` role). Text from the
//!   endpoint goes through [`sanitise`]: the client secret, the Basic header values and the
//!   access token are scrubbed in every encoding ([`Scrubber`]) before anything is trimmed,
//!   stripped or cut, and a text that would end with part of one is dropped whole. With a
//!   client secret (or access token) shorter than [`crate::base::scrub::MIN_SCRUBBABLE_LEN`]
//!   characters no text of the body is kept at all: the message carries the HTTP status and,
//!   when it is one of RFC 6749's, the `error` code.
//! * `Retry-After` is read as delta-seconds or an HTTP date.
//! * Reading a body never builds a tree of it (module `body`): a 1 MiB body costs about its own
//!   size at most.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode};
use jiff::Timestamp;
use serde_json::Value;
use url::Url;

use crate::api::crd::ResponseFields;
use crate::api::reason::{Failure, Reason};
use crate::base::scrub::normalise;
use crate::base::time::add;
use crate::base::{REDACTED, Scrubber, Sensitive};

mod body;

use body::{Body, Field};

/// Longest lifetime believed (one year).
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Longest `Retry-After` honoured (one day); longer values are clamped.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Longest access token accepted, in bytes (64 KiB).
pub const MAX_ACCESS_TOKEN: usize = 64 * 1024;

/// Longest `token_type` accepted, in bytes (1 KiB).
pub const MAX_TOKEN_TYPE: usize = 1024;

/// Longest `scope` accepted, in bytes (1 KiB; for an array, joined with spaces).
pub const MAX_SCOPE: usize = 1024;

/// The error codes of RFC 6749 section 5.2: the only text of a body that a message keeps when
/// the client secret is too short to scrub.
pub const RFC_ERROR_CODES: [&str; 6] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
];

/// Longest excerpt of a body or error text put into a message, in characters.
const MAX_EXCERPT: usize = 200;

/// How much of an outside text (in bytes) is looked at for a message: more could never show
/// after whitespace is collapsed and the excerpt cut, and scrubbing a window costs little.
const SCAN_WINDOW: usize = 4 * 1024;

/// How much of a body is searched for an HTML `<title>`.
const TITLE_WINDOW: usize = 16 * 1024;

/// Top-level names that classifying a failure reads.
const ERROR_FIELDS: [&str; 8] = [
    "error",
    "error_description",
    "ErrorCode",
    "Error",
    "fault",
    "reason",
    "message",
    "errors",
];

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
    /// `issued_token_type` of a token exchange answer (RFC 8693 section 2.2.1), when sent.
    pub issued_token_type: Option<String>,
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
    /// What must never appear in a message: the credentials of the exchange, in every form
    /// ([`Scrubber::for_credentials`]). The access token of a 2xx body is added to it here.
    pub scrubber: &'a Scrubber<'a>,
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
    let fields = ctx.fields;
    let wanted = wanted_fields(fields);
    let Some(body) = Body::parse(response.body, &wanted) else {
        return Err(not_a_token_body(&status, response, ctx.scrubber));
    };

    // Every message from here on is built from a body that may hold the token: scrub it too.
    let found = body.lookup(&fields.access_token);
    let token_text = found.and_then(Field::str);
    let with_token;
    let scrubber = match token_text.as_deref() {
        Some(token) => {
            with_token = ctx.scrubber.with_token(token);
            &with_token
        }
        None => ctx.scrubber,
    };

    if let Some(failure) = error_instead_of_token(&status, &body, scrubber) {
        return Err(failure);
    }
    let access_token = match token_text.as_deref() {
        Some(token) if !token.trim().is_empty() => token,
        _ => return Err(no_token(&status, found.is_some(), &body, fields, scrubber)),
    };
    check_access_token(&status, access_token, fields)?;

    let (expires_at, lifetime_source) = lifetime(&body, access_token, ctx);
    let token_type = read_token_type(&status, &body, fields)?;
    let scope = match body.lookup(&fields.scope) {
        Some(value) => read_scope(&status, value, &FieldName::new("scope", &fields.scope))?,
        None => None,
    };
    let issued_token_type = read_issued_token_type(&status, &body)?;
    // The values kept beside the token are shown (status, Secret keys, the exchange command):
    // an answer that puts the client secret or the subject token into one is refused.
    let kept = [
        ("token_type", Some(&token_type)),
        ("scope", scope.as_ref()),
        ("issued_token_type", issued_token_type.as_ref()),
    ];
    if let Some((field, _)) = kept
        .iter()
        .find(|(_, value)| value.is_some_and(|v| ctx.scrubber.holds_secret(v)))
    {
        return Err(Failure::new(
            Reason::InvalidResponse,
            format!(
                "{status}: {field} holds a credential or the subject token that was sent; the answer is not stored"
            ),
        ));
    }
    let vendor_issued_at = body
        .get("issued_at")
        .and_then(Field::small_value)
        .and_then(|v| unix_time(&v));

    Ok(Token {
        access_token: Sensitive::new(access_token.to_owned()),
        token_type,
        scope,
        issued_token_type,
        issued_at: ctx.now,
        expires_at,
        lifetime_source,
        vendor_issued_at,
    })
}

/// `issued_token_type` (RFC 8693 section 2.2.1), when it is a non-empty string, read as
/// `token_type` is.
fn read_issued_token_type(status: &str, body: &Body<'_>) -> Result<Option<String>, Failure> {
    let Some(raw) = body.get("issued_token_type").and_then(Field::str) else {
        return Ok(None);
    };
    let name = FieldName::new("issued_token_type", "issued_token_type");
    let trimmed = token_type_text(status, &name, &raw)?;
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// A 2xx body with an `error` member is a failure, whatever else it holds.
fn error_instead_of_token(status: &str, body: &Body, scrubber: &Scrubber) -> Option<Failure> {
    let error = body.get("error").filter(|v| !v.is_null())?;
    let described = describe_error_fields(body)
        .or_else(|| Some(head(error.as_written(), SCAN_WINDOW).to_owned()));
    let mut message = format!("{status} carries an error instead of a token");
    if let Some(detail) = detail(described, error_code(body), scrubber) {
        message.push_str(": ");
        message.push_str(&detail);
    }
    Some(Failure::new(Reason::InvalidResponse, message))
}

/// The access token's length and characters (visible ASCII only).
fn check_access_token(status: &str, token: &str, fields: &ResponseFields) -> Result<(), Failure> {
    let name = FieldName::new("access_token", &fields.access_token);
    check_length(status, &name, token.len(), MAX_ACCESS_TOKEN)?;
    if let Some((at, what)) = first_invalid(token, is_visible) {
        return Err(invalid_characters(status, &name, at, what, VISIBLE_RULE));
    }
    Ok(())
}

/// When the token expires, and where that came from: an absolute `expires_on` in the future,
/// else `expires_in`, else the token's JWT `exp`, else the default lifetime (all clamped to a
/// year).
fn lifetime(
    body: &Body<'_>,
    access_token: &str,
    ctx: &ReadContext<'_>,
) -> (Timestamp, LifetimeSource) {
    let now = ctx.now;
    let expires_on = body
        .get("expires_on")
        .and_then(Field::small_value)
        .and_then(|v| unix_time(&v))
        .filter(|at| *at > now);
    if let Some(at) = expires_on {
        return (at.min(add(now, MAX_LIFETIME)), LifetimeSource::ExpiresOn);
    }
    let expires_in = body
        .lookup(&ctx.fields.expires_in)
        .and_then(Field::small_value)
        .and_then(|v| positive_seconds(&v));
    if let Some(secs) = expires_in {
        return (
            add(now, Duration::from_secs(secs)),
            LifetimeSource::ExpiresIn,
        );
    }
    if let Some(at) = jwt_exp(access_token).filter(|at| *at > now) {
        return (at.min(add(now, MAX_LIFETIME)), LifetimeSource::JwtExp);
    }
    let default = add(now, ctx.default_lifetime.min(MAX_LIFETIME));
    (default, LifetimeSource::DefaultLifetime)
}

/// The top-level names reading a 2xx body may look at.
fn wanted_fields(fields: &ResponseFields) -> Vec<&str> {
    let mut wanted: Vec<&str> = ERROR_FIELDS.to_vec();
    wanted.extend(["expires_on", "issued_at", "issued_token_type"]);
    for path in [
        &fields.access_token,
        &fields.expires_in,
        &fields.token_type,
        &fields.scope,
    ] {
        wanted.push(path);
        wanted.extend(path.split('.').next());
    }
    wanted
}

fn not_a_token_body(status: &str, response: &Response<'_>, scrubber: &Scrubber<'_>) -> Failure {
    let mut message =
        format!("{status} with a body that is neither a JSON object nor form-encoded");
    match header(response.headers, "content-type") {
        None => message.push_str(" (no content type)"),
        Some(content_type) => {
            if let Some(content_type) = excerpt(content_type, scrubber) {
                message.push_str(&format!(" ({content_type})"));
            }
        }
    }
    if let Some(title) = html_title(response.body).and_then(|t| excerpt(&t, scrubber)) {
        message.push_str(&format!(": {title}"));
    }
    Failure::new(Reason::InvalidResponse, message)
}

fn no_token(
    status: &str,
    found: bool,
    body: &Body<'_>,
    fields: &ResponseFields,
    scrubber: &Scrubber<'_>,
) -> Failure {
    let what = if found {
        "has an unusable (empty or non-string)"
    } else {
        "has no"
    };
    let mut message = format!("{status} {what} {}", spec_text(&fields.access_token));
    let mut names = Joined::default();
    for name in body.names() {
        names.push(name, ", ");
    }
    if let Some(names) = excerpt(&names.text, scrubber) {
        message.push_str(&format!(" (top-level fields: {names})"));
    }
    message.push_str("; set spec.responseFields.accessToken if the token is elsewhere");
    Failure::new(Reason::InvalidResponse, message)
}

// === limits and character rules ===

const VISIBLE_RULE: &str = "it must be visible ASCII (0x21-0x7E) without spaces";
const SCOPE_RULE: &str = "scope must be RFC 6749 scope tokens (visible ASCII except '\"' and '\\') separated by single spaces";

/// A field as messages name it: its role, and where the spec says it is read when that differs.
struct FieldName {
    text: String,
}

impl FieldName {
    fn new(role: &str, path: &str) -> Self {
        let text = if path == role {
            role.to_owned()
        } else {
            format!("{role} (read at {})", spec_text(path))
        };
        FieldName { text }
    }
}

fn check_length(status: &str, name: &FieldName, len: usize, max: usize) -> Result<(), Failure> {
    if len <= max {
        return Ok(());
    }
    Err(Failure::new(
        Reason::InvalidResponse,
        format!(
            "{status}: {} is {len} bytes long; at most {max} are accepted",
            name.text
        ),
    ))
}

fn invalid_characters(
    status: &str,
    name: &FieldName,
    at: usize,
    what: &str,
    rule: &str,
) -> Failure {
    Failure::new(
        Reason::InvalidResponse,
        format!("{status}: {} holds {what} at byte {at}; {rule}", name.text),
    )
}

fn is_visible(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// RFC 6749 NQCHAR: %x21 / %x23-5B / %x5D-7E.
fn is_nqchar(b: u8) -> bool {
    is_visible(b) && b != b'"' && b != b'\\'
}

/// The first byte of `value` that `allowed` refuses, and what it is (never the byte itself).
fn first_invalid(value: &str, allowed: fn(u8) -> bool) -> Option<(usize, &'static str)> {
    let (at, b) = value.bytes().enumerate().find(|(_, b)| !allowed(*b))?;
    Some((at, byte_kind(b)))
}

/// What a refused byte is, for a message that must not show it.
fn byte_kind(b: u8) -> &'static str {
    match b {
        b' ' => "a space",
        b'"' => "a double quote",
        b'\\' => "a backslash",
        0x00..=0x1f | 0x7f => "a control character",
        0x80.. => "a non-ASCII character",
        _ => "a character that is not allowed",
    }
}

fn read_token_type(
    status: &str,
    body: &Body<'_>,
    fields: &ResponseFields,
) -> Result<String, Failure> {
    let Some(raw) = body.lookup(&fields.token_type).and_then(Field::str) else {
        // Missing, or not a string: Bearer, as before.
        return Ok(normalize_token_type(None));
    };
    let name = FieldName::new("token_type", &fields.token_type);
    let trimmed = token_type_text(status, &name, &raw)?;
    Ok(normalize_token_type(Some(trimmed)))
}

/// A token type (`token_type`, `issued_token_type`) as sent: at most [`MAX_TOKEN_TYPE`] bytes,
/// trimmed, visible ASCII.
fn token_type_text<'r>(status: &str, name: &FieldName, raw: &'r str) -> Result<&'r str, Failure> {
    check_length(status, name, raw.len(), MAX_TOKEN_TYPE)?;
    let trimmed = raw.trim();
    if let Some((at, what)) = first_invalid(trimmed, is_visible) {
        return Err(invalid_characters(status, name, at, what, VISIBLE_RULE));
    }
    Ok(trimmed)
}

/// The granted scope: a string (trimmed) or an array of tokens (joined with spaces); `None`
/// when empty or of another type.
fn read_scope(status: &str, value: Field<'_>, name: &FieldName) -> Result<Option<String>, Failure> {
    match value.str() {
        Some(text) => read_scope_text(status, &text, name),
        None => read_scope_array(status, value, name),
    }
}

/// A scope string: NQCHAR tokens separated by single spaces (surrounding spaces trimmed).
fn read_scope_text(status: &str, text: &str, name: &FieldName) -> Result<Option<String>, Failure> {
    check_length(status, name, text.len(), MAX_SCOPE)?;
    let text = text.trim();
    let mut previous = b'x';
    for (at, b) in text.bytes().enumerate() {
        let what = if b == b' ' && previous == b' ' {
            Some("two spaces in a row")
        } else if b != b' ' && !is_nqchar(b) {
            Some(byte_kind(b))
        } else {
            None
        };
        if let Some(what) = what {
            return Err(invalid_characters(status, name, at, what, SCOPE_RULE));
        }
        previous = b;
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// A scope array: every element a non-empty NQCHAR token, joined with spaces; `None` when the
/// value is not an array.
fn read_scope_array(
    status: &str,
    value: Field<'_>,
    name: &FieldName,
) -> Result<Option<String>, Failure> {
    let mut joined = String::new();
    let mut total = 0usize;
    let mut problem: Option<Failure> = None;
    let mut index = 0usize;
    let is_array = value.each_element(|element| {
        let i = index;
        index += 1;
        let element_name = FieldName {
            text: format!("{} element {i}", name.text),
        };
        match scope_element(status, element, &element_name) {
            Ok(token) => {
                total += token.len() + usize::from(i > 0);
                if total <= MAX_SCOPE {
                    if i > 0 {
                        joined.push(' ');
                    }
                    joined.push_str(&token);
                }
                true
            }
            Err(failure) => {
                problem = Some(failure);
                false
            }
        }
    });
    if !is_array {
        return Ok(None);
    }
    if let Some(problem) = problem {
        return Err(problem);
    }
    check_length(status, name, total, MAX_SCOPE)?;
    Ok((!joined.is_empty()).then_some(joined))
}

/// One element of a scope array: a non-empty string of NQCHAR.
fn scope_element(status: &str, element: Field<'_>, name: &FieldName) -> Result<String, Failure> {
    let refused = |what: &str| {
        Failure::new(
            Reason::InvalidResponse,
            format!("{status}: {} {what}; {SCOPE_RULE}", name.text),
        )
    };
    let Some(token) = element.str() else {
        return Err(refused("is not a string"));
    };
    if token.is_empty() {
        return Err(refused("is empty"));
    }
    if let Some((at, what)) = first_invalid(&token, is_nqchar) {
        return Err(invalid_characters(status, name, at, what, SCOPE_RULE));
    }
    Ok(token.into_owned())
}

// === values ===

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
        Value::String(s) => numeric_text(s)?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// A numeric string: f64::from_str also accepts "inf" and "NaN"; only digits, sign, point and
/// exponent are numbers here.
fn numeric_text(s: &str) -> Option<f64> {
    let s = s.trim();
    let numeric = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    numeric.then(|| s.parse::<f64>().ok()).flatten()
}

/// Unix time in seconds, or in milliseconds when the number is too large to be seconds
/// (10^11 seconds is the year 5138).
fn unix_time(value: &Value) -> Option<Timestamp> {
    unix_seconds(number(value)?)
}

fn unix_seconds(n: f64) -> Option<Timestamp> {
    if !n.is_finite() || n <= 0.0 {
        return None;
    }
    let secs = if n >= 1e11 { n / 1000.0 } else { n };
    Timestamp::from_second(secs.floor() as i64).ok()
}

/// The `exp` claim of a JWT, without verifying the signature.
fn jwt_exp(token: &str) -> Option<Timestamp> {
    /// Only `exp` is read; every other claim is skipped without being built (a payload of many
    /// tiny objects would otherwise cost dozens of times its size).
    #[derive(serde::Deserialize)]
    struct Claims {
        #[serde(default, deserialize_with = "exp_claim")]
        exp: Option<f64>,
    }
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 64 * 1024 {
        return None;
    }
    let decoded = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Claims = serde_json::from_slice(&decoded).ok()?;
    unix_seconds(claims.exp?)
}

/// `exp` as a number or a numeric string; anything else (an object, an array) is skipped
/// without being built.
fn exp_claim<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    struct Exp;
    impl<'de> serde::de::Visitor<'de> for Exp {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(numeric_text(v))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }
    deserializer.deserialize_any(Exp)
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

// === failures ===

fn redirect_failure(response: &Response<'_>, ctx: &ReadContext<'_>) -> Failure {
    let target = header(response.headers, "location")
        .and_then(|loc| ctx.request_url.join(loc).ok())
        .and_then(|url| url.host_str().map(str::to_owned));
    let to = match target {
        Some(host) => match excerpt(&host, ctx.scrubber) {
            Some(host) => format!("to host {host}"),
            None => "to a host not shown".to_owned(),
        },
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
    let body = Body::parse(response.body, &ERROR_FIELDS);
    let code = body.as_ref().and_then(error_code);
    let reason = reason_for(status, code.as_deref());

    let mut message = status_text(status);
    let detail = match body.as_ref().and_then(describe_error_fields) {
        Some(described) => detail(Some(described), code, ctx.scrubber),
        None if ctx.scrubber.allows_excerpts() => body_excerpt(response.body, ctx.scrubber),
        None => detail(None, code, ctx.scrubber),
    };
    if let Some(detail) = detail {
        message.push_str(": ");
        message.push_str(&detail);
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

/// What a message says about a body: the sanitised description when excerpts are allowed,
/// else the RFC 6749 error code alone, when it is one.
fn detail(
    described: Option<String>,
    code: Option<String>,
    scrubber: &Scrubber<'_>,
) -> Option<String> {
    if scrubber.allows_excerpts() {
        return described.and_then(|d| sanitise(&d, scrubber));
    }
    let code = code?;
    RFC_ERROR_CODES
        .iter()
        .find(|known| **known == code)
        .map(|known| (*known).to_owned())
}

/// The machine-readable error code: RFC 6749 `error`, or Apigee `ErrorCode`, or an `error`
/// object's `code`.
fn error_code(body: &Body<'_>) -> Option<String> {
    let error = body.get("error");
    let code = match error {
        Some(field) if field.is_object() => field.child("code").and_then(Field::str),
        Some(field) => field.str(),
        None => None,
    }
    .or_else(|| body.get("ErrorCode").and_then(Field::str))?;
    Some(code.trim().to_ascii_lowercase())
}

/// A string value, trimmed, if it is one and not empty.
fn text_of(field: Option<Field<'_>>) -> Option<Cow<'_, str>> {
    let text = field?.str()?;
    if text.trim().is_empty() {
        return None;
    }
    Some(match text {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
        Cow::Owned(mut s) => {
            // Trimmed in place: a decoded description may be most of the body.
            s.truncate(s.trim_end().len());
            let start = s.len() - s.trim_start().len();
            s.drain(..start);
            Cow::Owned(s)
        }
    })
}

/// A human description from the known error envelopes, if any (at most [`SCAN_WINDOW`]
/// bytes: a longer one ends where it was cut, so that the partial rule sees the cut).
fn describe_error_fields(body: &Body<'_>) -> Option<String> {
    let mut parts = Joined::default();
    match body.get("error") {
        Some(error) if error.is_object() => {
            parts.extend(text_of(error.child("code")), ": ");
            parts.extend(text_of(error.child("message")), ": ");
        }
        error => parts.extend(text_of(error), ": "),
    }
    parts.extend(text_of(body.get("error_description")), ": ");
    if parts.is_empty() {
        parts.extend(text_of(body.get("ErrorCode")), ": ");
        parts.extend(text_of(body.get("Error")), ": ");
    }
    if parts.is_empty() {
        let fault = body.get("fault");
        parts.extend(text_of(fault.and_then(|f| f.child("faultstring"))), ": ");
        parts.extend(
            text_of(
                fault
                    .and_then(|f| f.child("detail"))
                    .and_then(|d| d.child("errorcode")),
            ),
            ": ",
        );
    }
    if parts.is_empty() {
        parts.extend(text_of(body.get("reason")), ": ");
        parts.extend(text_of(body.get("message")), ": ");
    }
    if parts.is_empty() {
        if let Some(errors) = body.get("errors") {
            let mut messages = Joined::default();
            let mut count = 0;
            errors.each_element(|e| {
                if let Some(text) = text_of(e.child("message")).or_else(|| text_of(Some(e))) {
                    messages.push(&text, "; ");
                    count += 1;
                }
                count < 5
            });
            if !messages.is_empty() {
                parts.push(&messages.text, ": ");
            }
        }
    }
    (!parts.is_empty()).then_some(parts.text)
}

/// Pieces of text joined with separators, up to [`SCAN_WINDOW`] bytes; the piece that does not
/// fit is cut and nothing follows it.
#[derive(Default)]
struct Joined {
    text: String,
    full: bool,
}

impl Joined {
    fn push(&mut self, part: &str, separator: &str) {
        if self.full {
            return;
        }
        if !self.text.is_empty() {
            self.text.push_str(separator);
        }
        let room = SCAN_WINDOW.saturating_sub(self.text.len());
        let kept = head(part, room);
        self.full = kept.len() < part.len();
        self.text.push_str(kept);
    }

    fn extend(&mut self, part: Option<Cow<'_, str>>, separator: &str) {
        if let Some(part) = part {
            self.push(&part, separator);
        }
    }

    fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// A short start of a non-JSON body: the `<title>` of an HTML page, else its text with tags
/// stripped.
fn body_excerpt(body: &[u8], scrubber: &Scrubber<'_>) -> Option<String> {
    if !scrubber.allows_excerpts() {
        return None;
    }
    if let Some(title) = html_title(body) {
        return sanitise(&title, scrubber);
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(SCAN_WINDOW)]);
    clean(&text, scrubber, true)
}

/// The text between `<title...>` and `</title` in the first [`TITLE_WINDOW`] bytes, as
/// written (cleaning and scrubbing are the caller's).
fn html_title(body: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&body[..body.len().min(TITLE_WINDOW)]);
    let lower = head.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let open_end = start + lower[start..].find('>')? + 1;
    let close = open_end + lower[open_end..].find("</title")?;
    let title = &head[open_end..close];
    (!title.trim().is_empty()).then(|| title.to_owned())
}

/// The start of `text` of at most `max` bytes, cut at a character boundary.
fn head(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Text from the spec (a field name), made one line; it is the user's own and not scrubbed.
fn spec_text(text: &str) -> String {
    let cleaned = normalise(head(text, SCAN_WINDOW), false);
    if cleaned.chars().count() > MAX_EXCERPT {
        let mut cut: String = cleaned.chars().take(MAX_EXCERPT).collect();
        cut.push('…');
        cut
    } else {
        cleaned
    }
}

/// Body-derived text for a message: [`sanitise`]d, and only when the scrubber allows excerpts
/// at all.
fn excerpt(text: &str, scrubber: &Scrubber<'_>) -> Option<String> {
    if !scrubber.allows_excerpts() {
        return None;
    }
    sanitise(text, scrubber)
}

/// Makes outside text safe for a message, or `None` when none of it may be shown.
///
/// In this order: the first 4 KiB are scrubbed of every form of every needle
/// ([`Scrubber::scrub`]); control characters become spaces and whitespace is collapsed
/// ([`normalise`]); the result is scrubbed again (for forms that only appear once cleaned) and
/// cut to 200 characters. Nothing is shown when the text, after scrubbing or after
/// the cut, ends with the start of a needle ([`Scrubber::partial_at_end`]), when scrubbing
/// gives up, or when nothing is left.
pub fn sanitise(text: &str, scrubber: &Scrubber<'_>) -> Option<String> {
    clean(text, scrubber, false)
}

fn clean(text: &str, scrubber: &Scrubber<'_>, strip_tags: bool) -> Option<String> {
    let scrubbed = scrubber.scrub(head(text, SCAN_WINDOW))?;
    if scrubber.partial_at_end(&scrubbed) {
        return None;
    }
    let scrubbed = scrubber.scrub(&normalise(&scrubbed, strip_tags))?;
    if scrubbed.is_empty() {
        return None;
    }
    let Some((cut_at, _)) = scrubbed.char_indices().nth(MAX_EXCERPT) else {
        return (!scrubber.partial_at_end(&scrubbed)).then_some(scrubbed);
    };
    let mut kept = &scrubbed[..cut_at];
    // Never leave half of a [redacted] marker.
    if let Some(open) = kept.rfind('[') {
        if scrubbed[open..].starts_with(REDACTED) && open + REDACTED.len() > cut_at {
            kept = &kept[..open];
        }
    }
    if scrubber.partial_at_end(kept) {
        return None;
    }
    Some(format!("{}…", kept.trim_end()))
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
