//! Captures `tracing` output at TRACE level so that tests can scan it for secrets.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// A shared in-memory log buffer.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs a TRACE-level subscriber for the current thread; logs go to the returned buffer
/// until the guard is dropped.
pub fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let guard = tracing::subscriber::set_default(trace_subscriber(&captured));
    (captured, guard)
}

fn trace_subscriber(captured: &Captured) -> impl tracing::Subscriber + Send + Sync + use<> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish()
}

/// Installs a TRACE-level subscriber for the whole process (for test binaries with one test).
pub fn capture_global() -> Captured {
    try_capture_global().expect("one global subscriber per test binary")
}

/// Installs a TRACE-level subscriber for the whole process (records of the `log` crate, which
/// rustls uses, included), unless one is installed already.
pub fn try_capture_global() -> Option<Captured> {
    use tracing_subscriber::util::SubscriberInitExt as _;
    let captured = Captured::default();
    trace_subscriber(&captured)
        .try_init()
        .ok()
        .map(|()| captured)
}

/// Panics if any of the values appears in the text in any of its [`forms`].
///
/// For a Basic header, pass the `id:secret` pairs of [`basic_pairs`] among the values: their
/// base64 is the header value.
pub fn assert_absent(text: &str, values: &[&str], context: &str) {
    for value in values {
        assert!(!value.is_empty());
        for form in forms(value) {
            if let Some(at) = text.find(&form) {
                let start = text[..at]
                    .char_indices()
                    .rev()
                    .nth(80)
                    .map_or(0, |(i, _)| i);
                panic!(
                    "{context}: found a secret value (as {:?}) at byte {at}: ...{}",
                    form_kind(value, &form),
                    text[start..at].escape_debug()
                );
            }
        }
    }
}

/// The `id:secret` pairs whose base64 is the Basic header value: raw, and form-urlencoded as
/// RFC 6749 section 2.3.1 wants.
pub fn basic_pairs(id: &str, secret: &str) -> [String; 2] {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    [
        format!("{id}:{secret}"),
        format!("{}:{}", enc(id), enc(secret)),
    ]
}

/// Every form in which `value` may be written by a careless log line or an endpoint that
/// echoes the request: raw, trimmed, form-urlencoded (`+` and `%20` for spaces, upper- and
/// lower-case hex), JSON-escaped (with and without `\/`), HTML-escaped (`&#39;` and `&#x27;`)
/// and base64 (standard and URL-safe, padded and not). Derived here with the encoders
/// themselves, independently of the operator's scrubber.
pub fn forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = vec![value.to_owned(), value.trim().to_owned()];
    let plus: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let space = plus.replace('+', "%20");
    for encoded in [plus, space] {
        out.push(lower_hex(&encoded));
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
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        out.push(engine.encode(value));
    }
    out.retain(|f| !f.is_empty());
    out.sort();
    out.dedup();
    out
}

/// `%2B` → `%2b`.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// Which form was found, for the failure message (never the value itself).
fn form_kind(value: &str, form: &str) -> &'static str {
    if form == value {
        "raw"
    } else if form == value.trim() {
        "trimmed"
    } else if form.contains('%') || form.contains('+') && !value.contains('+') {
        "form-urlencoded"
    } else if form.contains('\\') {
        "JSON-escaped"
    } else if form.contains('&') {
        "HTML-escaped"
    } else {
        "base64 or another encoding"
    }
}
