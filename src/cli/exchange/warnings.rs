//! What `exchange` warns about without refusing: credentials that look like a document's
//! placeholders (`YOUR_CLIENT_SECRET`, `<client-secret>`, `changeme`), a refresh margin under two
//! minutes (as the operator warns for the same spec), unusable proxy variables. Each warning is
//! printed to standard error as it is found (`warning: ...`); with `-o json` they are the
//! `warnings` list of the one JSON object printed instead.

use jiff::Timestamp;

use crate::cli::OutputFormat;
use crate::cli::terminal::errln;
use crate::oauth::credentials::{Credentials, Proof};

/// The warnings of one run.
pub struct Warnings {
    output: OutputFormat,
    all: Vec<String>,
}

impl Warnings {
    pub fn new(output: OutputFormat) -> Self {
        Warnings {
            output,
            all: Vec::new(),
        }
    }

    /// Records a warning; in text output, prints it at once.
    pub fn add(&mut self, warning: String) {
        if self.output == OutputFormat::Text {
            errln!("warning: {warning}");
        }
        self.all.push(warning);
    }

    /// Every warning so far, in order.
    pub fn all(&self) -> Vec<String> {
        self.all.clone()
    }
}

/// Whether `value` looks like a placeholder left from an example: `YOUR_…` / `your-…`, a value
/// in angle brackets, or a word like `changeme` / `REPLACE_ME`.
fn is_placeholder(value: &str) -> bool {
    let value = value.trim();
    let lower = value.to_ascii_lowercase();
    let squashed: String = lower
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    lower.starts_with("your_")
        || lower.starts_with("your-")
        || (value.starts_with('<') && value.ends_with('>'))
        || matches!(squashed.as_str(), "changeme" | "replaceme" | "placeholder")
}

/// A warning for each credential that looks like a placeholder (never the value itself).
pub fn placeholders(credentials: &Credentials) -> Vec<String> {
    let mut found = Vec::new();
    if is_placeholder(&credentials.client_id) {
        found.push(
            "the client_id looks like a placeholder from an example; put the vendor's client_id in the credentials Secret".to_owned(),
        );
    }
    if let Proof::Secret(secret) = &credentials.proof
        && is_placeholder(secret.expose())
    {
        found.push(
            "the client_secret looks like a placeholder from an example (YOUR_..., <...>, changeme); the vendor will refuse it: put the real secret in the credentials Secret".to_owned(),
        );
    }
    found
}

/// The operator's warning for a refresh margin under two minutes, with this token's times.
pub fn short_margin(refresh_at: Timestamp, expires_at: Timestamp) -> Option<String> {
    crate::timing::refresh::short_margin_warning(refresh_at, expires_at)
        .map(|warning| format!("the operator would warn: {warning}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_and_real_values_are_not() {
        for value in [
            "YOUR_CLIENT_SECRET",
            "your-client-secret",
            "<client-secret>",
            "changeme",
            "CHANGE_ME",
            "change-me",
            "REPLACE_ME",
            " <secret> ",
        ] {
            assert!(is_placeholder(value), "{value}");
        }
        for value in [
            "s3cr3t-9f8a7b",
            "Yourself123",
            "a<b>c",
            "changemeplease-not-really-7",
            "4f1c2e9a-client",
        ] {
            assert!(!is_placeholder(value), "{value}");
        }
    }

    #[test]
    fn the_warning_names_the_credential_never_its_value() {
        let credentials = Credentials {
            subject: None,
            client_id: "<client-id>".into(),
            proof: Proof::Secret(crate::base::Sensitive::new("YOUR_CLIENT_SECRET".into())),
        };
        let found = placeholders(&credentials);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|w| !w.contains("YOUR_CLIENT_SECRET")));
        assert!(found[0].contains("client_id") && found[1].contains("client_secret"));
    }

    #[test]
    fn a_margin_under_two_minutes_is_warned_and_two_minutes_is_not() {
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        let warning = short_margin(at(0), at(40)).unwrap();
        assert!(warning.contains("refresh margin of 40s"), "{warning}");
        assert_eq!(short_margin(at(0), at(120)), None);
    }
}
