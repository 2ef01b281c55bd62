//! `grantType` and `tokenExchange` (RFC 8693): which grant the request makes and, for a token
//! exchange, where the subject token comes from and what is asked for — the CRD's CEL rules
//! again (exactly one subject source; `tokenExchange` with `TokenExchange` only; `None` with
//! it only), and the operator's own (`--allow-service-account-tokens` for a ServiceAccount
//! subject, URIs that parse).

use url::Url;

use crate::api::crd::{ClientAuthMethod, GrantType, OAuthClientSpec, SubjectTokenSource};
use crate::api::reason::Failure;
use crate::spec::client_auth::{ServiceAccountSettings, service_account};
use crate::spec::presets::Preset;
use crate::spec::target::secret_key;
use crate::spec::{Policy, check_reference_name};

/// `grant_type` of a token exchange.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of a JWT (RFC 8693 section 3).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The token type of an OAuth 2.0 access token (RFC 8693 section 3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Most `tokenExchange.resources` entries.
pub const MAX_RESOURCES: usize = 16;

/// How a token exchange is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenExchangeSettings {
    /// Where the subject token comes from.
    pub subject: SubjectSettings,
    /// `subject_token_type`.
    pub subject_token_type: String,
    /// `requested_token_type`, when set.
    pub requested_token_type: Option<String>,
    /// One `resource` parameter each.
    pub resources: Vec<String>,
}

/// Where the subject token comes from (all in the client's namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectSettings {
    /// A fresh token of this ServiceAccount for each exchange.
    ServiceAccount(ServiceAccountSettings),
    /// The current access token of this OAuthClient.
    Client(String),
    /// The value of `key` in the Secret `name`.
    Secret {
        /// The Secret.
        name: String,
        /// Its key.
        key: String,
    },
}

impl SubjectSettings {
    /// The subject as messages and the fingerprint name it.
    pub fn describe(&self) -> String {
        match self {
            SubjectSettings::ServiceAccount(sa) => format!("ServiceAccount {}", sa.name),
            SubjectSettings::Client(name) => format!("OAuthClient {name}"),
            SubjectSettings::Secret { name, key } => format!("key {key} of Secret {name}"),
        }
    }
}

/// The grant of `spec`: its own, or its preset's.
pub fn grant_type(spec: &OAuthClientSpec, preset: &Preset) -> GrantType {
    spec.grant_type.unwrap_or(preset.grant_type)
}

/// The token exchange settings (`None` for client credentials), checked against the grant and
/// the client authentication method.
pub fn settings(
    spec: &OAuthClientSpec,
    preset: &Preset,
    method: ClientAuthMethod,
    policy: &Policy,
) -> Result<Option<TokenExchangeSettings>, Failure> {
    let grant = grant_type(spec, preset);
    if method == ClientAuthMethod::None && grant != GrantType::TokenExchange {
        return Err(Failure::invalid_spec(
            "clientAuthMethod None (the gcp-sts preset's default) is only allowed with grantType TokenExchange",
        ));
    }
    let given = match (grant, &spec.token_exchange) {
        (GrantType::ClientCredentials, None) => return Ok(None),
        (GrantType::ClientCredentials, Some(_)) => {
            return Err(Failure::invalid_spec(
                "spec.tokenExchange is only allowed with grantType TokenExchange",
            ));
        }
        (GrantType::TokenExchange, None) => {
            return Err(Failure::invalid_spec(
                "grantType TokenExchange requires spec.tokenExchange.subjectToken (a serviceAccountToken, an oauthClientRef or a secretRef)",
            ));
        }
        (GrantType::TokenExchange, Some(given)) => given,
    };
    let (subject, default_type) = subject(&given.subject_token, policy)?;
    // The preset's type is for the JWT sources; another client's token is an access token
    // whatever the preset.
    let subject_token_type = match (&given.subject_token_type, &subject) {
        (Some(given), _) => uri("spec.tokenExchange.subjectTokenType", given)?,
        (None, SubjectSettings::Client(_)) => default_type.to_owned(),
        (None, _) => preset.subject_token_type.unwrap_or(default_type).to_owned(),
    };
    let requested_token_type = given
        .requested_token_type
        .as_deref()
        .map(|t| uri("spec.tokenExchange.requestedTokenType", t))
        .transpose()?;
    let resources = given.resources.clone().unwrap_or_default();
    if resources.len() > MAX_RESOURCES {
        return Err(Failure::invalid_spec(format!(
            "spec.tokenExchange.resources has {} entries; at most {MAX_RESOURCES} are allowed",
            resources.len()
        )));
    }
    let extra_resource = spec
        .extra_params
        .iter()
        .flatten()
        .any(|(name, _)| name.trim().eq_ignore_ascii_case("resource"));
    if !resources.is_empty() && extra_resource {
        return Err(Failure::invalid_spec(
            "spec.extraParams may not set resource beside spec.tokenExchange.resources: list every resource there",
        ));
    }
    for resource in &resources {
        let parsed = uri("spec.tokenExchange.resources", resource)?;
        if parsed.contains('#') {
            return Err(Failure::invalid_spec(format!(
                "spec.tokenExchange.resources: {resource:?} has a fragment, which RFC 8693 section 2.1 does not allow"
            )));
        }
    }
    Ok(Some(TokenExchangeSettings {
        subject,
        subject_token_type,
        requested_token_type,
        resources,
    }))
}

/// The one subject source, and its default subject token type.
fn subject(
    source: &SubjectTokenSource,
    policy: &Policy,
) -> Result<(SubjectSettings, &'static str), Failure> {
    let given = [
        source.service_account_token.is_some(),
        source.oauth_client_ref.is_some(),
        source.secret_ref.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(Failure::invalid_spec(
            "spec.tokenExchange.subjectToken must set exactly one of serviceAccountToken, oauthClientRef, secretRef",
        ));
    }
    if let Some(sa) = &source.service_account_token {
        if !policy.allow_service_account_tokens {
            return Err(Failure::invalid_spec(
                "spec.tokenExchange.subjectToken.serviceAccountToken is not enabled in this operator: it runs without --allow-service-account-tokens (chart value serviceAccountTokens.enabled), so it requests no ServiceAccount tokens",
            ));
        }
        let settings = service_account(sa, "spec.tokenExchange.subjectToken.serviceAccountToken")?;
        return Ok((SubjectSettings::ServiceAccount(settings), JWT_TOKEN_TYPE));
    }
    if let Some(client) = &source.oauth_client_ref {
        check_reference_name(
            "spec.tokenExchange.subjectToken.oauthClientRef.name",
            "OAuthClient",
            &client.name,
        )?;
        return Ok((
            SubjectSettings::Client(client.name.clone()),
            ACCESS_TOKEN_TYPE,
        ));
    }
    let secret = source.secret_ref.as_ref().expect("exactly one is set");
    check_reference_name(
        "spec.tokenExchange.subjectToken.secretRef.name",
        "Secret",
        &secret.name,
    )?;
    if !secret_key(&secret.key) {
        return Err(Failure::invalid_spec(format!(
            "spec.tokenExchange.subjectToken.secretRef.key {:?} is not a Secret key (1 to 253 letters, digits, '-', '_', '.')",
            secret.key.chars().take(80).collect::<String>()
        )));
    }
    Ok((
        SubjectSettings::Secret {
            name: secret.name.clone(),
            key: secret.key.clone(),
        },
        JWT_TOKEN_TYPE,
    ))
}

/// A token type or resource: an absolute URI of at most 2048 bytes.
pub fn uri(field: &str, value: &str) -> Result<String, Failure> {
    let shown: String = value.chars().take(80).collect();
    if value.is_empty() || value.len() > 2048 {
        return Err(Failure::invalid_spec(format!(
            "{field} is {} bytes; it must be 1 to 2048",
            value.len()
        )));
    }
    if value.trim() != value || Url::parse(value).is_err() {
        return Err(Failure::invalid_spec(format!(
            "{field}: {shown:?} is not an absolute URI (such as urn:ietf:params:oauth:token-type:jwt or https://api.example.com)"
        )));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::reason::Reason;
    use crate::spec::ClientSettings;

    fn resolve(spec: serde_json::Value, allow_sa: bool) -> Result<ClientSettings, Failure> {
        let spec: OAuthClientSpec = serde_json::from_value(spec).unwrap();
        let policy = Policy {
            allow_service_account_tokens: allow_sa,
            ..Policy::default()
        };
        ClientSettings::resolve(&spec, &policy)
    }

    fn refused(spec: serde_json::Value, allow_sa: bool) -> String {
        let failure = resolve(spec, allow_sa).unwrap_err();
        assert_eq!(failure.reason, Reason::InvalidSpec, "{}", failure.message);
        failure.message
    }

    fn secret_subject() -> serde_json::Value {
        serde_json::json!({"subjectToken": {"secretRef": {"name": "idp", "key": "token"}}})
    }

    #[test]
    fn the_gcp_sts_preset_is_a_public_token_exchange_with_a_jwt_subject() {
        let settings = resolve(
            serde_json::json!({
                "provider": "gcp-sts",
                "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k",
                "tokenExchange": secret_subject(),
            }),
            false,
        )
        .unwrap()
        .exchange;
        assert_eq!(
            settings.token_url.as_str(),
            "https://sts.googleapis.com/v1/token"
        );
        assert_eq!(settings.client_auth_method, ClientAuthMethod::None);
        assert_eq!(
            settings.scopes,
            ["https://www.googleapis.com/auth/cloud-platform"]
        );
        let exchange = settings.token_exchange.unwrap();
        assert_eq!(exchange.subject_token_type, JWT_TOKEN_TYPE);
        assert_eq!(
            exchange.subject,
            SubjectSettings::Secret {
                name: "idp".into(),
                key: "token".into()
            }
        );
        // The pool provider is the audience: without it nothing is sent.
        let message = refused(
            serde_json::json!({"provider": "gcp-sts", "tokenExchange": secret_subject()}),
            false,
        );
        assert!(message.contains("spec.audience is required"), "{message}");
    }

    #[test]
    fn each_subject_source_has_its_default_type_and_an_explicit_one_wins() {
        let base = |subject: serde_json::Value, given: Option<&str>| {
            let mut exchange = serde_json::json!({"subjectToken": subject});
            if let Some(given) = given {
                exchange["subjectTokenType"] = given.into();
            }
            resolve(
                serde_json::json!({
                    "tokenUrl": "https://sts.example/token",
                    "grantType": "TokenExchange",
                    "clientAuthMethod": "None",
                    "tokenExchange": exchange,
                }),
                true,
            )
            .unwrap()
            .exchange
            .token_exchange
            .unwrap()
        };
        let chained = base(
            serde_json::json!({"oauthClientRef": {"name": "first"}}),
            None,
        );
        assert_eq!(chained.subject_token_type, ACCESS_TOKEN_TYPE);
        assert_eq!(chained.subject, SubjectSettings::Client("first".into()));
        let sa = serde_json::json!({"serviceAccountToken": {"serviceAccountName": "app", "audience": "sts"}});
        let federated = base(sa, None);
        assert_eq!(federated.subject_token_type, JWT_TOKEN_TYPE);
        assert!(matches!(
            federated.subject,
            SubjectSettings::ServiceAccount(ref s) if s.name == "app" && s.expiration_seconds == 600
        ));
        let typed = base(
            serde_json::json!({"oauthClientRef": {"name": "first"}}),
            Some("urn:ietf:params:oauth:token-type:id_token"),
        );
        assert_eq!(
            typed.subject_token_type,
            "urn:ietf:params:oauth:token-type:id_token"
        );
    }

    #[test]
    fn bad_token_exchange_specs_are_refused_with_the_field_named() {
        let url = "https://sts.example/token";
        let exchange = |te: serde_json::Value| serde_json::json!({"tokenUrl": url, "grantType": "TokenExchange", "clientAuthMethod": "None", "tokenExchange": te});
        // No subject, or two.
        let none = refused(exchange(serde_json::json!({"subjectToken": {}})), true);
        assert!(none.contains("exactly one of"), "{none}");
        let two = refused(
            exchange(serde_json::json!({"subjectToken": {
                "secretRef": {"name": "idp", "key": "token"},
                "oauthClientRef": {"name": "first"}
            }})),
            true,
        );
        assert!(two.contains("exactly one of"), "{two}");
        // A ServiceAccount subject needs the operator's opt-in.
        let sa = refused(
            exchange(
                serde_json::json!({"subjectToken": {"serviceAccountToken": {"serviceAccountName": "app", "audience": "sts"}}}),
            ),
            false,
        );
        assert!(sa.contains("--allow-service-account-tokens"), "{sa}");
        let long = refused(
            exchange(
                serde_json::json!({"subjectToken": {"serviceAccountToken": {"serviceAccountName": "app", "audience": "sts", "expirationSeconds": 86400}}}),
            ),
            true,
        );
        assert!(
            long.contains("spec.tokenExchange.subjectToken.serviceAccountToken.expirationSeconds"),
            "{long}"
        );
        // Names that would leave the namespace's path.
        let path = refused(
            exchange(serde_json::json!({"subjectToken": {"oauthClientRef": {"name": "../x"}}})),
            true,
        );
        assert!(path.contains("oauthClientRef.name"), "{path}");
        let key = refused(
            exchange(
                serde_json::json!({"subjectToken": {"secretRef": {"name": "idp", "key": "a/b"}}}),
            ),
            true,
        );
        assert!(key.contains("secretRef.key"), "{key}");
        // URIs.
        let mut with_fragment = secret_subject();
        with_fragment["resources"] = serde_json::json!(["https://api.example/#x"]);
        let fragment = refused(exchange(with_fragment), true);
        assert!(fragment.contains("fragment"), "{fragment}");
        let mut not_uri = secret_subject();
        not_uri["requestedTokenType"] = "access token".into();
        let uri = refused(exchange(not_uri), true);
        assert!(uri.contains("requestedTokenType"), "{uri}");
        // The grant and the method.
        let stray = refused(
            serde_json::json!({"tokenUrl": url, "credentialsSecretRef": {"name": "c"}, "tokenExchange": secret_subject()}),
            true,
        );
        assert!(
            stray.contains("only allowed with grantType TokenExchange"),
            "{stray}"
        );
        let missing = refused(
            serde_json::json!({"tokenUrl": url, "credentialsSecretRef": {"name": "c"}, "grantType": "TokenExchange"}),
            true,
        );
        assert!(missing.contains("requires spec.tokenExchange"), "{missing}");
        let public = refused(
            serde_json::json!({"tokenUrl": url, "clientAuthMethod": "None"}),
            true,
        );
        assert!(
            public.contains("is only allowed with grantType TokenExchange"),
            "{public}"
        );
        let mut with_secret = exchange(secret_subject());
        with_secret["credentialsSecretRef"] = serde_json::json!({"name": "c"});
        let both = refused(with_secret, true);
        assert!(
            both.contains("must be absent with clientAuthMethod None"),
            "{both}"
        );
        let mut doubled = exchange(secret_subject());
        doubled["tokenExchange"]["resources"] = serde_json::json!(["https://a.example/"]);
        doubled["extraParams"] = serde_json::json!({"Resource": "https://evil.example/"});
        let resource = refused(doubled, true);
        assert!(
            resource.contains("beside spec.tokenExchange.resources"),
            "{resource}"
        );
        let preset_default = refused(
            serde_json::json!({"provider": "gcp-sts", "audience": "a", "grantType": "ClientCredentials"}),
            true,
        );
        assert!(
            preset_default.contains("gcp-sts preset's default"),
            "{preset_default}"
        );
        let mut reserved = exchange(secret_subject());
        reserved["extraParams"] = serde_json::json!({"Subject.Token": "x"});
        let param = refused(reserved, true);
        assert!(param.contains("Subject.Token"), "{param}");
    }

    #[test]
    fn a_confidential_client_may_exchange_tokens() {
        let settings = resolve(
            serde_json::json!({
                "tokenUrl": "https://sts.example/token",
                "credentialsSecretRef": {"name": "c"},
                "grantType": "TokenExchange",
                "tokenExchange": {
                    "subjectToken": {"oauthClientRef": {"name": "first"}},
                    "requestedTokenType": ACCESS_TOKEN_TYPE,
                    "resources": ["https://a.example/api", "https://b.example/api"]
                }
            }),
            false,
        )
        .unwrap()
        .exchange;
        assert_eq!(
            settings.client_auth_method,
            ClientAuthMethod::ClientSecretBasic
        );
        let exchange = settings.token_exchange.unwrap();
        assert_eq!(exchange.resources.len(), 2);
        assert_eq!(
            exchange.requested_token_type.as_deref(),
            Some(ACCESS_TOKEN_TYPE)
        );
    }
}
