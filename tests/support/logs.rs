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

/// Panics if any of the values appears in the text (checking the value and its base64 forms).
pub fn assert_absent(text: &str, values: &[&str], context: &str) {
    use base64::Engine as _;
    for value in values {
        assert!(!value.is_empty());
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        assert!(
            !text.contains(value),
            "{context}: found a secret value in:\n{text}"
        );
        assert!(
            !text.contains(&b64),
            "{context}: found a base64 secret value"
        );
    }
}
