//! [`Sensitive`]: a value (client secret, access token) that must never reach a log line.
//!
//! `Debug` and `Display` print `[redacted]`; the only way to the value is [`Sensitive::expose`],
//! so every place that handles the real value is easy to find with grep.

use std::fmt;

/// What `Debug` and `Display` print instead of a sensitive value.
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

/// Replaces every occurrence of each non-empty needle in `text` with `[redacted]`.
///
/// Used on text that came from outside (an endpoint's error description, a body excerpt) before
/// it enters a message, in case an endpoint echoes a credential back.
pub fn scrub(text: &str, needles: &[&str]) -> String {
    let mut out = text.to_owned();
    for needle in needles {
        // Very short needles would shred ordinary words; real secrets and tokens are longer.
        if needle.len() >= 4 && out.contains(needle) {
            out = out.replace(needle, REDACTED);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Sensitive::from("hunter2-super-secret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2-super-secret");
    }

    #[test]
    fn scrub_replaces_every_occurrence() {
        let out = scrub("id abcd1234 and abcd1234 again", &["abcd1234", ""]);
        assert_eq!(out, "id [redacted] and [redacted] again");
    }
}
