//! The managed Secret's content, built from a token (pure).

use std::collections::BTreeMap;

use crate::redact::Sensitive;
use crate::response::Token;
use crate::template::{Template, Values};

/// One key of the managed Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The Secret key.
    pub key: String,
    /// The value (sensitive: it may hold the token).
    pub value: Sensitive<String>,
    /// Whether the value contains the access token.
    pub holds_token: bool,
}

/// Formats a timestamp as RFC 3339 UTC with second precision (`2026-01-02T03:04:05Z`).
pub fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The Secret keys for a token: `access_token`, `token_type`, `expires_at`, `scope` (when
/// known) and the rendered `target.template` keys, in that order.
pub fn token_entries(token: &Token, templates: &BTreeMap<String, Template>) -> Vec<Entry> {
    let expires_at = rfc3339(token.expires_at);
    let scope = token.scope.clone().unwrap_or_default();
    let plain = |key: &str, value: &str| Entry {
        key: key.to_owned(),
        value: Sensitive::new(value.to_owned()),
        holds_token: false,
    };
    let mut entries = vec![
        Entry {
            key: "access_token".into(),
            value: token.access_token.clone(),
            holds_token: true,
        },
        plain("token_type", &token.token_type),
        plain("expires_at", &expires_at),
    ];
    if token.scope.is_some() {
        entries.push(plain("scope", &scope));
    }
    let values = Values {
        access_token: token.access_token.expose(),
        token_type: &token.token_type,
        expires_at: &expires_at,
        scope: &scope,
    };
    for (key, template) in templates {
        entries.push(Entry {
            key: key.clone(),
            value: Sensitive::new(template.render(&values)),
            holds_token: template.uses_access_token(),
        });
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::LifetimeSource;
    use jiff::Timestamp;

    fn token(scope: Option<&str>) -> Token {
        Token {
            access_token: Sensitive::from("tok-123"),
            token_type: "Bearer".into(),
            scope: scope.map(str::to_owned),
            issued_at: Timestamp::from_second(1_700_000_000).unwrap(),
            expires_at: Timestamp::from_second(1_700_003_600).unwrap(),
            lifetime_source: LifetimeSource::ExpiresIn,
            vendor_issued_at: None,
        }
    }

    #[test]
    fn standard_keys_then_templates() {
        let templates = crate::template::parse_all(
            &[
                (
                    "Authorization".to_owned(),
                    "Bearer {{ access_token }}".to_owned(),
                ),
                ("until".to_owned(), "{{ expires_at }}".to_owned()),
            ]
            .into(),
        )
        .unwrap();
        let entries = token_entries(&token(Some("a b")), &templates);
        let view: Vec<_> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.expose().as_str(), e.holds_token))
            .collect();
        assert_eq!(
            view,
            [
                ("access_token", "tok-123", true),
                ("token_type", "Bearer", false),
                ("expires_at", "2023-11-14T23:13:20Z", false),
                ("scope", "a b", false),
                ("Authorization", "Bearer tok-123", true),
                ("until", "2023-11-14T23:13:20Z", false),
            ]
        );
    }

    #[test]
    fn scope_key_only_when_known() {
        let entries = token_entries(&token(None), &BTreeMap::new());
        assert!(entries.iter().all(|e| e.key != "scope"));
    }
}
