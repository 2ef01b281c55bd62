//! A spec merged over its preset and validated: everything the exchange and the refresh timing
//! read. Resolving is pure; every problem is an `InvalidSpec` failure with a message that names
//! the field.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use url::Url;

use crate::crd::{
    BasicAuthEncoding, ClientAuthMethod, MAX_MAP_ENTRIES, MAX_NAME_LEN, MAX_VALUE_LEN,
    OAuthClientSpec, Provider, RequestEncoding, ResponseFields,
};
use crate::duration;
use crate::presets::preset;
use crate::reason::Failure;
use crate::template::{self, Template};
use crate::url_policy::TokenUrlPolicy;

/// Operator-wide rules that a spec must satisfy.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Allow `http://` token URLs (tests and development only).
    pub allow_insecure_http: bool,
    /// Where credentials may be sent (`--token-url-deny-cidrs`, `--token-url-allow-hosts`).
    pub token_urls: Arc<TokenUrlPolicy>,
}

/// Body parameters that only the dedicated fields may set (compared after trimming and ASCII
/// case-folding, since servers differ in how they read names).
pub const RESERVED_PARAMS: [&str; 7] = [
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "audience",
    "client_assertion",
    "client_assertion_type",
];

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

/// Keys the managed Secret always has; `target.template` may not reuse them.
pub const STANDARD_KEYS: [&str; 4] = ["access_token", "token_type", "expires_at", "scope"];

/// Secret types the managed Secret may have. Every other built-in type either makes the Secret
/// something a Kubernetes component acts on (`kubernetes.io/service-account-token` is filled in
/// with a ServiceAccount token, `bootstrap.kubernetes.io/token` authenticates nodes,
/// `kubernetes.io/dockercfg` / `dockerconfigjson` are used by the kubelet to pull images) or
/// requires keys the operator does not write (`kubernetes.io/tls`, `basic-auth`, `ssh-auth`); a
/// custom type gains nothing and could acquire a meaning later.
pub const SECRET_TYPES: [&str; 1] = ["Opaque"];

/// Longest object name Kubernetes accepts (a DNS subdomain).
pub const MAX_OBJECT_NAME: usize = 253;

/// How the token request is made.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeSettings {
    /// The preset the settings came from (a metric label; never used for branching).
    pub provider: Provider,
    /// The token endpoint.
    pub token_url: Url,
    /// Client authentication.
    pub client_auth_method: ClientAuthMethod,
    /// Basic header encoding.
    pub basic_auth_encoding: BasicAuthEncoding,
    /// Body encoding.
    pub request_encoding: RequestEncoding,
    /// With ClientSecretBasic, also send client_id in the body.
    pub client_id_in_body: bool,
    /// `audience` parameter.
    pub audience: Option<String>,
    /// Scopes, sent space-joined.
    pub scopes: Vec<String>,
    /// Extra body parameters.
    pub extra_params: BTreeMap<String, String>,
    /// Extra headers, validated.
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    /// Where to read values in the response.
    pub response_fields: ResponseFields,
    /// Lifetime assumed when the response does not tell.
    pub default_lifetime: Duration,
}

/// When to refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshSettings {
    /// Refresh this long before expiry, when set.
    pub renew_before: Option<Duration>,
    /// Otherwise refresh when this percentage of the lifetime remains.
    pub renew_before_percentage: u8,
}

/// Everything resolved from a spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientSettings {
    /// The request side.
    pub exchange: ExchangeSettings,
    /// Refresh timing.
    pub refresh: RefreshSettings,
    /// Parsed `target.template`, by Secret key.
    pub templates: BTreeMap<String, Template>,
}

impl ClientSettings {
    /// Merges `spec` over its preset and validates the result.
    pub fn resolve(spec: &OAuthClientSpec, policy: &Policy) -> Result<Self, Failure> {
        let preset = preset(spec.provider);

        let url_text = spec
            .token_url
            .as_deref()
            .or(preset.token_url)
            .ok_or_else(|| {
                Failure::invalid_spec(format!(
                    "spec.tokenUrl is required for provider {}",
                    spec.provider.as_str()
                ))
            })?;
        let token_url = check_token_url(url_text, policy)?;

        let scopes = spec
            .scopes
            .clone()
            .unwrap_or_else(|| preset.scopes.iter().map(|s| (*s).to_owned()).collect());
        for scope in &scopes {
            if scope.is_empty() || scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Failure::invalid_spec(format!(
                    "spec.scopes: {scope:?} is not a single scope (no spaces; list each scope separately)"
                )));
            }
        }

        if spec.credentials_secret_ref.namespace.is_some() {
            return Err(Failure::invalid_spec(
                "spec.credentialsSecretRef.namespace is not allowed: credentials are read only from the OAuthClient's own namespace",
            ));
        }
        check_map("spec.extraParams", spec.extra_params.as_ref(), MAX_NAME_LEN)?;
        check_map(
            "spec.extraHeaders",
            spec.extra_headers.as_ref(),
            MAX_NAME_LEN,
        )?;

        let extra_params = spec.extra_params.clone().unwrap_or_default();
        for name in extra_params.keys() {
            if RESERVED_PARAMS.contains(&name.trim().to_ascii_lowercase().as_str()) {
                return Err(Failure::invalid_spec(format!(
                    "spec.extraParams may not set {name:?}: the operator sets it from the dedicated field, clientAuthMethod or the credentials Secret"
                )));
            }
            if name.is_empty() {
                return Err(Failure::invalid_spec("spec.extraParams has an empty name"));
            }
        }

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
            let value = HeaderValue::from_str(value).ok().filter(|_| printable).ok_or_else(|| {
                Failure::invalid_spec(format!(
                    "spec.extraHeaders: the value of {name} is not a valid header value (printable ASCII only)"
                ))
            })?;
            extra_headers.push((header, value));
        }

        let refresh_spec = spec.refresh.clone().unwrap_or_default();
        let default_lifetime = duration::parse(&refresh_spec.default_lifetime)
            .map_err(|e| Failure::invalid_spec(format!("spec.refresh.defaultLifetime: {e}")))?;
        if default_lifetime < Duration::from_secs(1) {
            return Err(Failure::invalid_spec(
                "spec.refresh.defaultLifetime must be at least 1s",
            ));
        }
        let renew_before = refresh_spec
            .renew_before
            .as_deref()
            .map(duration::parse)
            .transpose()
            .map_err(|e| Failure::invalid_spec(format!("spec.refresh.renewBefore: {e}")))?;
        let percentage = refresh_spec.renew_before_percentage;
        if !(1..=90).contains(&percentage) {
            return Err(Failure::invalid_spec(format!(
                "spec.refresh.renewBeforePercentage must be between 1 and 90, not {percentage}"
            )));
        }

        let target = spec.target.clone().unwrap_or_default();
        check_target(&target)?;
        check_map("spec.target.template", target.template.as_ref(), 253)?;
        let templates_spec = target.template.unwrap_or_default();
        for key in templates_spec.keys() {
            check_secret_key(key)?;
        }
        let templates = template::parse_all(&templates_spec).map_err(|(key, e)| {
            Failure::invalid_spec(format!("spec.target.template.{key}: {e}"))
        })?;

        Ok(ClientSettings {
            exchange: ExchangeSettings {
                provider: spec.provider,
                token_url,
                client_auth_method: spec.client_auth_method.unwrap_or(preset.client_auth_method),
                basic_auth_encoding: spec
                    .basic_auth_encoding
                    .unwrap_or(preset.basic_auth_encoding),
                request_encoding: spec.request_encoding.unwrap_or(preset.request_encoding),
                client_id_in_body: preset.client_id_in_body,
                audience: spec.audience.clone(),
                scopes,
                extra_params,
                extra_headers,
                response_fields: spec.response_fields.clone().unwrap_or_default(),
                default_lifetime,
            },
            refresh: RefreshSettings {
                renew_before,
                renew_before_percentage: percentage as u8,
            },
            templates,
        })
    }
}

/// Checks a token URL against the policy: an absolute https URL (http only when allowed),
/// with a host and without credentials in it, that the token URL policy allows.
pub fn check_token_url(text: &str, policy: &Policy) -> Result<Url, Failure> {
    let url = Url::parse(text)
        .map_err(|e| Failure::invalid_spec(format!("spec.tokenUrl is not a valid URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_insecure_http => {}
        "http" => {
            return Err(Failure::invalid_spec(
                "spec.tokenUrl uses http://, which sends credentials in clear text; use https:// (or run the operator with --allow-insecure-http for testing)",
            ));
        }
        other => {
            return Err(Failure::invalid_spec(format!(
                "spec.tokenUrl must be an https:// URL, not {other}:"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Failure::invalid_spec("spec.tokenUrl has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Failure::invalid_spec(
            "spec.tokenUrl may not carry user:password; put credentials in the credentials Secret",
        ));
    }
    policy.token_urls.check_url(&url)?;
    Ok(url)
}

/// The bounds the CRD schema also states, for specs that did not pass through it (the
/// `exchange` command, or an API server without CEL): at most [`MAX_MAP_ENTRIES`] entries,
/// names of 1 to `max_name` bytes, values of at most [`MAX_VALUE_LEN`] bytes.
fn check_map(
    field: &str,
    map: Option<&BTreeMap<String, String>>,
    max_name: usize,
) -> Result<(), Failure> {
    let Some(map) = map else { return Ok(()) };
    if map.len() > MAX_MAP_ENTRIES {
        return Err(Failure::invalid_spec(format!(
            "{field} has {} entries; at most {MAX_MAP_ENTRIES} are allowed",
            map.len()
        )));
    }
    for (name, value) in map {
        if name.is_empty() || name.len() > max_name {
            let mut shown: String = name.chars().take(40).collect();
            if shown.len() < name.len() {
                shown.push_str("...");
            }
            return Err(Failure::invalid_spec(format!(
                "{field}: the name {shown:?} is {} bytes; names must be 1 to {max_name}",
                name.len()
            )));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(Failure::invalid_spec(format!(
                "{field}.{name} is {} bytes; at most {MAX_VALUE_LEN} are allowed",
                value.len()
            )));
        }
    }
    Ok(())
}

/// The managed Secret may never become a credential of the cluster: its type is from
/// [`SECRET_TYPES`], and its labels and annotations may not use keys reserved for Kubernetes
/// (`kubernetes.io/`, `k8s.io/` and their subdomains; the recommended `app.kubernetes.io/`
/// labels excepted) or this operator's own prefix (which would let a user forge the fingerprint
/// or the issue time).
fn check_target(target: &crate::crd::Target) -> Result<(), Failure> {
    if !SECRET_TYPES.contains(&target.type_.as_str()) {
        let shown: String = target.type_.chars().take(64).collect();
        return Err(Failure::invalid_spec(format!(
            "spec.target.type {shown:?} is not allowed (allowed: {}); a managed Secret must never become a credential of the cluster",
            SECRET_TYPES.join(", ")
        )));
    }
    if let Some(name) = &target.name {
        check_object_name("spec.target.name", name)?;
    }
    for (field, map, labels) in [
        ("spec.target.labels", target.labels.as_ref(), true),
        (
            "spec.target.annotations",
            target.annotations.as_ref(),
            false,
        ),
    ] {
        check_map(field, map, MAX_OBJECT_NAME + 64)?;
        for (key, value) in map.into_iter().flatten() {
            check_metadata_key(field, key, labels)?;
            if labels {
                check_label_value(field, key, value)?;
            }
        }
    }
    Ok(())
}

/// Whether a label or annotation key uses a prefix reserved for Kubernetes or this operator.
/// `app.kubernetes.io/` is allowed for labels (the recommended labels).
pub fn reserved_metadata_key(key: &str, label: bool) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    let prefix = prefix.to_ascii_lowercase();
    let under = |domain: &str| {
        prefix == domain
            || prefix
                .strip_suffix(domain)
                .is_some_and(|head| head.ends_with('.'))
    };
    if label && prefix == "app.kubernetes.io" {
        return false;
    }
    under("kubernetes.io") || under("k8s.io") || under(crate::crd::GROUP)
}

fn check_metadata_key(field: &str, key: &str, label: bool) -> Result<(), Failure> {
    let shown: String = key.chars().take(80).collect();
    if reserved_metadata_key(key, label) {
        let allowed = if label {
            " (only the recommended app.kubernetes.io/ labels are allowed)"
        } else {
            ""
        };
        return Err(Failure::invalid_spec(format!(
            "{field}: the key {shown:?} uses a prefix reserved for Kubernetes (kubernetes.io/, k8s.io/ and their subdomains) or for this operator ({}/){allowed}",
            crate::crd::GROUP
        )));
    }
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| dns_subdomain(p) && p.len() <= MAX_OBJECT_NAME);
    if !prefix_ok || !label_name(name) {
        return Err(Failure::invalid_spec(format!(
            "{field}: {shown:?} is not a valid key (an optional DNS-subdomain prefix and '/', then 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        )));
    }
    Ok(())
}

fn check_label_value(field: &str, key: &str, value: &str) -> Result<(), Failure> {
    if !(value.is_empty() || label_name(value)) {
        let shown: String = key.chars().take(80).collect();
        return Err(Failure::invalid_spec(format!(
            "{field}.{shown}: a label value is at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )));
    }
    Ok(())
}

/// A label value or the name part of a qualified name: 1 to 63 characters `[A-Za-z0-9_.-]`,
/// starting and ending alphanumeric.
pub fn label_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
}

/// A DNS subdomain as Kubernetes checks it (`IsDNS1123Subdomain`): at most 253 characters,
/// lowercase parts of letters, digits and '-', separated by '.' (no per-part length limit).
pub fn dns_subdomain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_OBJECT_NAME
        && text.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Checks the name of an object the operator writes (the managed Secret).
pub fn check_object_name(field: &str, name: &str) -> Result<(), Failure> {
    if dns_subdomain(name) {
        return Ok(());
    }
    let shown: String = name.chars().take(80).collect();
    Err(Failure::invalid_spec(format!(
        "{field} {shown:?} ({} characters) is not a valid Secret name: at most {MAX_OBJECT_NAME} lowercase letters, digits, '-' and '.'",
        name.chars().count()
    )))
}

fn check_secret_key(key: &str) -> Result<(), Failure> {
    let valid = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !valid {
        return Err(Failure::invalid_spec(format!(
            "spec.target.template: {key:?} is not a valid Secret key (letters, digits, '-', '_', '.')"
        )));
    }
    if STANDARD_KEYS.contains(&key) {
        return Err(Failure::invalid_spec(format!(
            "spec.target.template may not redefine the standard key {key}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CredentialsSecretRef, Refresh, Target};
    use crate::reason::Reason;

    fn spec(provider: Provider) -> OAuthClientSpec {
        serde_json::from_value(serde_json::json!({
            "provider": provider,
            "credentialsSecretRef": {"name": "creds"},
        }))
        .unwrap()
    }

    fn generic(url: &str) -> OAuthClientSpec {
        OAuthClientSpec {
            token_url: Some(url.into()),
            ..spec(Provider::Generic)
        }
    }

    fn resolve(spec: &OAuthClientSpec) -> Result<ClientSettings, Failure> {
        ClientSettings::resolve(spec, &Policy::default())
    }

    fn invalid(spec: &OAuthClientSpec) -> String {
        let err = resolve(spec).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidSpec, "{err}");
        err.message
    }

    #[test]
    fn preset_supplies_defaults() {
        let s = resolve(&spec(Provider::Iotspot)).unwrap();
        assert_eq!(
            s.exchange.token_url.as_str(),
            "https://iotspot-m2mauth-prod.auth.eu-central-1.amazoncognito.com/oauth2/token"
        );
        assert_eq!(
            s.exchange.client_auth_method,
            ClientAuthMethod::ClientSecretBasic
        );
        assert_eq!(s.exchange.basic_auth_encoding, BasicAuthEncoding::Raw);
        assert_eq!(s.exchange.request_encoding, RequestEncoding::Form);
        assert_eq!(s.exchange.scopes, ["iotspot/openapi"]);
        assert!(s.exchange.client_id_in_body);
        assert_eq!(s.exchange.default_lifetime, Duration::from_secs(3600));
        assert_eq!(s.refresh.renew_before, None);
        assert_eq!(s.refresh.renew_before_percentage, 33);
    }

    #[test]
    fn explicit_fields_win_over_the_preset() {
        let s = resolve(&OAuthClientSpec {
            token_url: Some("https://emulator.example/token".into()),
            client_auth_method: Some(ClientAuthMethod::ClientSecretPost),
            basic_auth_encoding: Some(BasicAuthEncoding::UrlEncoded),
            request_encoding: Some(RequestEncoding::Json),
            scopes: Some(vec!["a".into(), "b".into()]),
            ..spec(Provider::Iotspot)
        })
        .unwrap();
        assert_eq!(
            s.exchange.token_url.as_str(),
            "https://emulator.example/token"
        );
        assert_eq!(
            s.exchange.client_auth_method,
            ClientAuthMethod::ClientSecretPost
        );
        assert_eq!(
            s.exchange.basic_auth_encoding,
            BasicAuthEncoding::UrlEncoded
        );
        assert_eq!(s.exchange.request_encoding, RequestEncoding::Json);
        assert_eq!(s.exchange.scopes, ["a", "b"]);
        // An explicit empty list also wins: no scope is sent.
        let s = resolve(&OAuthClientSpec {
            scopes: Some(vec![]),
            ..spec(Provider::Iotspot)
        })
        .unwrap();
        assert!(s.exchange.scopes.is_empty());
    }

    #[test]
    fn token_url_rules() {
        assert!(invalid(&spec(Provider::Generic)).contains("spec.tokenUrl is required"));
        assert!(invalid(&generic("not a url")).contains("not a valid URL"));
        assert!(invalid(&generic("http://127.0.0.1/token")).contains("--allow-insecure-http"));
        assert!(invalid(&generic("ftp://x/token")).contains("https://"));
        assert!(invalid(&generic("https://user:pw@x/token")).contains("user:password"));
        assert!(invalid(&generic("file:///etc/passwd")).contains("https://"));
        let allowed = ClientSettings::resolve(
            &generic("http://127.0.0.1:8080/token"),
            &Policy {
                allow_insecure_http: true,
                ..Default::default()
            },
        );
        assert!(allowed.is_ok());
        // The token URL policy applies (its rules are tested in url_policy).
        assert!(
            invalid(&generic("https://169.254.169.254/token")).contains("--token-url-deny-cidrs")
        );
    }

    #[test]
    fn size_bounds_and_namespaced_references_are_invalid_spec() {
        let many: BTreeMap<String, String> = (0..=MAX_MAP_ENTRIES)
            .map(|i| (format!("p{i}"), "v".to_owned()))
            .collect();
        let long_name = [("n".repeat(MAX_NAME_LEN + 1), "v".to_owned())].into();
        let long_value = [("n".to_owned(), "v".repeat(MAX_VALUE_LEN + 1))].into();
        let at_limit: BTreeMap<String, String> = (0..MAX_MAP_ENTRIES)
            .map(|i| (format!("{i:0>256}"), "v".repeat(MAX_VALUE_LEN)))
            .collect();
        let params = |map: &BTreeMap<String, String>| OAuthClientSpec {
            extra_params: Some(map.clone()),
            ..generic("https://x/t")
        };
        assert!(invalid(&params(&many)).contains("at most 32"));
        assert!(invalid(&params(&long_name)).contains("names must be 1 to 256"));
        assert!(invalid(&params(&long_value)).contains("at most 4096"));
        assert!(resolve(&params(&at_limit)).is_ok());
        let headers = OAuthClientSpec {
            extra_headers: Some(many.clone()),
            ..generic("https://x/t")
        };
        assert!(invalid(&headers).contains("spec.extraHeaders has 33 entries"));
        let mut s = generic("https://x/t");
        s.target = Some(Target {
            template: Some(long_value),
            ..Target::default()
        });
        assert!(invalid(&s).contains("spec.target.template.n is 4097 bytes"));

        let mut s = generic("https://x/t");
        s.credentials_secret_ref.namespace = Some("other-team".into());
        assert!(invalid(&s).contains("own namespace"));
    }

    #[test]
    fn forbidden_headers_and_bad_header_values() {
        for name in ["Authorization", "content-type", "Host", "Content-Length"] {
            let mut s = generic("https://x/t");
            s.extra_headers = Some([(name.to_owned(), "v".to_owned())].into());
            assert!(invalid(&s).contains("may not set"), "{name}");
        }
        let mut s = generic("https://x/t");
        s.extra_headers = Some([("bad name".to_owned(), "v".to_owned())].into());
        assert!(invalid(&s).contains("not a valid header name"));
        s.extra_headers = Some([("X-Ok".to_owned(), "line\nbreak".to_owned())].into());
        assert!(invalid(&s).contains("not a valid header value"));
        s.extra_headers = Some([("X-Api-Version".to_owned(), "2".to_owned())].into());
        assert_eq!(resolve(&s).unwrap().exchange.extra_headers.len(), 1);
    }

    #[test]
    fn every_forbidden_header_is_refused_in_any_case() {
        for name in FORBIDDEN_HEADERS {
            let upper = name.to_ascii_uppercase();
            let title: String = name
                .split('-')
                .map(|part| {
                    let mut chars = part.chars();
                    chars.next().map_or(String::new(), |first| {
                        first.to_ascii_uppercase().to_string() + chars.as_str()
                    })
                })
                .collect::<Vec<_>>()
                .join("-");
            for variant in [name.to_owned(), upper, title] {
                let mut s = generic("https://x/t");
                s.extra_headers = Some([(variant.clone(), "v".to_owned())].into());
                let msg = invalid(&s);
                assert!(
                    msg.contains("spec.extraHeaders may not set") && msg.contains(&variant),
                    "{variant}: {msg}"
                );
            }
        }
        for name in [
            "Proxy-Authorization",
            "Proxy-Connection",
            "Cookie",
            "Connection",
            "TE",
            "Upgrade",
            "Expect",
            "Transfer-Encoding",
            "Keep-Alive",
        ] {
            assert!(
                FORBIDDEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()),
                "{name}"
            );
        }
    }

    #[test]
    fn header_values_must_be_printable_ascii() {
        let with_value = |value: &str| {
            let mut s = generic("https://x/t");
            s.extra_headers = Some([("X-Tenant".to_owned(), value.to_owned())].into());
            s
        };
        for hostile in ["café", "é", "\u{80}", "a\u{7f}b", "a\rb", "a\0b", "日本"] {
            let msg = invalid(&with_value(hostile));
            assert!(
                msg.contains("spec.extraHeaders") && msg.contains("X-Tenant"),
                "{hostile:?}: {msg}"
            );
            assert!(msg.contains("printable ASCII"), "{msg}");
        }
        for fine in ["v1", "a b\tc", "~!@#$%^&*()_+{}|:<>?", ""] {
            let s = resolve(&with_value(fine)).unwrap();
            assert_eq!(s.exchange.extra_headers[0].1.as_bytes(), fine.as_bytes());
        }
    }

    #[test]
    fn reserved_params_are_compared_trimmed_and_case_folded() {
        for name in [
            " Client_Secret ",
            "CLIENT_ID",
            "SCOPE",
            "Grant_Type",
            "\taudience",
            "client_assertion",
            "Client_Assertion_Type",
        ] {
            let mut s = generic("https://x/t");
            s.extra_params = Some([(name.to_owned(), "v".to_owned())].into());
            let msg = invalid(&s);
            assert!(
                msg.contains("spec.extraParams may not set") && msg.contains(name.trim()),
                "{name:?}: {msg}"
            );
        }
        let mut s = generic("https://x/t");
        s.extra_params = Some([("resource".to_owned(), "https://api".to_owned())].into());
        assert_eq!(resolve(&s).unwrap().exchange.extra_params.len(), 1);
    }

    #[test]
    fn reserved_params_and_bad_scopes() {
        for name in RESERVED_PARAMS {
            let mut s = generic("https://x/t");
            s.extra_params = Some([(name.to_owned(), "v".to_owned())].into());
            assert!(invalid(&s).contains(name), "{name}");
        }
        let mut s = generic("https://x/t");
        s.scopes = Some(vec!["a b".into()]);
        assert!(invalid(&s).contains("not a single scope"));
    }

    #[test]
    fn refresh_and_template_errors_name_the_field() {
        let mut s = generic("https://x/t");
        s.refresh = Some(Refresh {
            renew_before: Some("5 minutes".into()),
            ..Refresh::default()
        });
        assert!(invalid(&s).contains("spec.refresh.renewBefore"));
        s.refresh = Some(Refresh {
            default_lifetime: "0s".into(),
            ..Refresh::default()
        });
        assert!(invalid(&s).contains("spec.refresh.defaultLifetime"));
        s.refresh = Some(Refresh {
            renew_before_percentage: 95,
            ..Refresh::default()
        });
        assert!(invalid(&s).contains("between 1 and 90"));
        s.refresh = None;
        s.target = Some(Target {
            template: Some([("auth".to_owned(), "Bearer {{ token }}".to_owned())].into()),
            ..Target::default()
        });
        let msg = invalid(&s);
        assert!(msg.contains("spec.target.template.auth") && msg.contains("unknown placeholder"));
        s.target = Some(Target {
            template: Some([("access_token".to_owned(), "x".to_owned())].into()),
            ..Target::default()
        });
        assert!(invalid(&s).contains("standard key"));
        s.target = Some(Target {
            template: Some([("a/b".to_owned(), "x".to_owned())].into()),
            ..Target::default()
        });
        assert!(invalid(&s).contains("not a valid Secret key"));
    }

    #[test]
    fn credentials_ref_defaults() {
        let r = CredentialsSecretRef::named("c");
        assert_eq!(
            (r.client_id_key.as_str(), r.client_secret_key.as_str()),
            ("client_id", "client_secret")
        );
    }
}
