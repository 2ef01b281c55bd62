//! `target.template`: extra Secret keys rendered from the token.
//!
//! A value is literal text with placeholders `{{ access_token }}`, `{{ token_type }}`,
//! `{{ expires_at }}` and `{{ scope }}` (spaces inside the braces are optional). Anything else
//! between `{{` and `}}`, or a `{{` that is never closed, is an error, reported before any token
//! is requested.

use std::collections::BTreeMap;

/// A value a placeholder stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// The access token.
    AccessToken,
    /// The normalised token type.
    TokenType,
    /// Expiry, RFC 3339 UTC.
    ExpiresAt,
    /// Granted scope (empty when unknown).
    Scope,
}

impl Placeholder {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "access_token" => Some(Placeholder::AccessToken),
            "token_type" => Some(Placeholder::TokenType),
            "expires_at" => Some(Placeholder::ExpiresAt),
            "scope" => Some(Placeholder::Scope),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Text(String),
    Value(Placeholder),
}

/// One parsed template value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// Why a template value cannot be used. Messages quote at most a short excerpt of the template,
/// which is user-written and holds no token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{ name }}` with a name that is not a known placeholder.
    #[error(
        "unknown placeholder {{{{ {0} }}}} (known: access_token, token_type, expires_at, scope)"
    )]
    UnknownPlaceholder(String),
    /// `{{` without a matching `}}`.
    #[error("unclosed {{{{ in template")]
    Unclosed,
}

/// The values placeholders are replaced by.
#[derive(Clone, Copy, Debug)]
pub struct Values<'a> {
    /// The access token (the caller is responsible for keeping the result secret).
    pub access_token: &'a str,
    /// Normalised token type.
    pub token_type: &'a str,
    /// RFC 3339 expiry.
    pub expires_at: &'a str,
    /// Granted scope, empty when unknown.
    pub scope: &'a str,
}

impl Template {
    /// Parses one template value.
    pub fn parse(input: &str) -> Result<Self, TemplateError> {
        let mut segments = Vec::new();
        let mut rest = input;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                segments.push(Segment::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
            let name = after[..end].trim();
            let placeholder = Placeholder::from_name(name).ok_or_else(|| {
                TemplateError::UnknownPlaceholder(name.chars().take(40).collect())
            })?;
            segments.push(Segment::Value(placeholder));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Template { segments })
    }

    /// Renders the value.
    pub fn render(&self, values: &Values<'_>) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Value(Placeholder::AccessToken) => out.push_str(values.access_token),
                Segment::Value(Placeholder::TokenType) => out.push_str(values.token_type),
                Segment::Value(Placeholder::ExpiresAt) => out.push_str(values.expires_at),
                Segment::Value(Placeholder::Scope) => out.push_str(values.scope),
            }
        }
        out
    }

    /// The length in bytes of [`Template::render`]'s result, computed without rendering.
    pub fn rendered_len(&self, values: &Values<'_>) -> usize {
        self.segments
            .iter()
            .map(|segment| match segment {
                Segment::Text(text) => text.len(),
                Segment::Value(Placeholder::AccessToken) => values.access_token.len(),
                Segment::Value(Placeholder::TokenType) => values.token_type.len(),
                Segment::Value(Placeholder::ExpiresAt) => values.expires_at.len(),
                Segment::Value(Placeholder::Scope) => values.scope.len(),
            })
            .fold(0usize, usize::saturating_add)
    }

    /// Whether the rendered value contains the access token (and must be redacted in output).
    pub fn uses_access_token(&self) -> bool {
        self.segments
            .contains(&Segment::Value(Placeholder::AccessToken))
    }
}

/// Parses every value of a `target.template` map, naming the key of the first bad one.
pub fn parse_all(
    templates: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Template>, (String, TemplateError)> {
    templates
        .iter()
        .map(|(key, value)| {
            Template::parse(value)
                .map(|t| (key.clone(), t))
                .map_err(|e| (key.clone(), e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: Values<'static> = Values {
        access_token: "tok",
        token_type: "Bearer",
        expires_at: "2026-01-01T00:00:00Z",
        scope: "a b",
    };

    #[test]
    fn renders_every_placeholder_with_or_without_spaces() {
        let cases = [
            ("Bearer {{ access_token }}", "Bearer tok"),
            ("{{access_token}}", "tok"),
            ("{{token_type}} {{  access_token  }}", "Bearer tok"),
            (
                "until {{ expires_at }} for {{ scope }}",
                "until 2026-01-01T00:00:00Z for a b",
            ),
            ("no placeholders", "no placeholders"),
            ("", ""),
            ("single { brace } is text", "single { brace } is text"),
            ("}} alone is text", "}} alone is text"),
        ];
        for (input, out) in cases {
            assert_eq!(
                Template::parse(input).unwrap().render(&VALUES),
                out,
                "{input}"
            );
        }
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_errors() {
        assert_eq!(
            Template::parse("{{ client_secret }}"),
            Err(TemplateError::UnknownPlaceholder("client_secret".into()))
        );
        assert_eq!(
            Template::parse("Bearer {{ .AccessToken }}"),
            Err(TemplateError::UnknownPlaceholder(".AccessToken".into()))
        );
        assert_eq!(
            Template::parse("{{}}"),
            Err(TemplateError::UnknownPlaceholder("".into()))
        );
        assert_eq!(
            Template::parse("Bearer {{ access_token"),
            Err(TemplateError::Unclosed)
        );
        let msg = TemplateError::UnknownPlaceholder("x".into()).to_string();
        assert_eq!(
            msg,
            "unknown placeholder {{ x }} (known: access_token, token_type, expires_at, scope)"
        );
    }

    #[test]
    fn rendered_len_is_the_length_of_the_rendering() {
        for input in [
            "Bearer {{ access_token }}",
            "{{access_token}}{{ access_token }}{{scope}}",
            "until {{ expires_at }} ({{ token_type }})",
            "",
        ] {
            let t = Template::parse(input).unwrap();
            assert_eq!(t.rendered_len(&VALUES), t.render(&VALUES).len(), "{input}");
        }
    }

    #[test]
    fn knows_when_the_token_is_used() {
        assert!(
            Template::parse("Bearer {{ access_token }}")
                .unwrap()
                .uses_access_token()
        );
        assert!(!Template::parse("{{ scope }}").unwrap().uses_access_token());
    }

    #[test]
    fn parse_all_names_the_bad_key() {
        let mut map = BTreeMap::new();
        map.insert("good".to_owned(), "{{ scope }}".to_owned());
        map.insert("bad".to_owned(), "{{ nope }}".to_owned());
        let (key, _) = parse_all(&map).unwrap_err();
        assert_eq!(key, "bad");
    }
}
