//! A value that must never reach a log line: a client secret, an access token, a key.
//! `Debug` and `Display` print [`REDACTED`]; the only way to the value is
//! [`Sensitive::expose`], so every place that handles the real value is easy to find with grep.

use std::fmt;

/// What `Debug` and `Display` print instead of a sensitive value, and what replaces a scrubbed
/// needle.
pub const REDACTED: &str = "[redacted]";

/// A secret or token. Cloning is allowed (the controller needs copies), printing is not.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sensitive<T = String>(T);

impl<T> Sensitive<T> {
    /// Wraps a sensitive value.
    pub fn new(value: T) -> Self {
        Sensitive(value)
    }

    /// The real value. Callers must not log it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Consumes the wrapper, returning the real value. Callers must not log it.
    pub fn into_exposed(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for Sensitive<String> {
    fn from(value: String) -> Self {
        Sensitive(value)
    }
}

impl From<&str> for Sensitive<String> {
    fn from(value: &str) -> Self {
        Sensitive(value.to_owned())
    }
}
