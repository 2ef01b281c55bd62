//! `clientAuthMethod` and what each method needs: `credentialsSecretRef`, `clientAssertion`,
//! `serviceAccountToken`, `clientId` — the CRD's CEL rules again, for specs that did not pass
//! through them (the `exchange` command, an API server without CEL), and the operator's own
//! rules (`--allow-service-account-tokens`, https for mutual TLS).

use std::time::Duration;

use url::Url;

use crate::api::crd::{
    AssertionAlgorithm, ClientAssertion, ClientAuthMethod, OAuthClientSpec,
    ServiceAccountTokenSource,
};
use crate::api::reason::Failure;
use crate::spec::{Policy, check_reference_name, duration};

/// Shortest `clientAssertion.lifetime`.
pub const MIN_ASSERTION_LIFETIME: Duration = Duration::from_secs(10);
/// Longest `clientAssertion.lifetime`.
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// Bounds of `serviceAccountToken.expirationSeconds`.
pub const EXPIRATION_SECONDS: std::ops::RangeInclusive<i64> = 600..=3_600;

/// How the client assertion of ClientSecretJwt and PrivateKeyJwt is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertionSettings {
    /// The JWS algorithm; `None`: from the key (RSA RS256, P-256 ES256, P-384 ES384, Ed25519
    /// EdDSA), or HS256 with the client_secret.
    pub algorithm: Option<AssertionAlgorithm>,
    /// The `kid` header.
    pub key_id: Option<String>,
    /// The `aud` claim.
    pub audience: String,
    /// `exp - iat`.
    pub lifetime: Duration,
}

/// The ServiceAccount token of ServiceAccountToken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountSettings {
    /// The ServiceAccount, in the OAuthClient's namespace.
    pub name: String,
    /// The token's audience.
    pub audience: String,
    /// The lifetime asked of the TokenRequest API.
    pub expiration_seconds: i64,
}

/// The method-specific settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthSettings {
    /// ClientSecretJwt, PrivateKeyJwt.
    pub assertion: Option<AssertionSettings>,
    /// ServiceAccountToken.
    pub service_account: Option<ServiceAccountSettings>,
}

/// Checks that `spec` carries what `method` needs and nothing it cannot use, and resolves the
/// method's settings.
pub fn settings(
    spec: &OAuthClientSpec,
    method: ClientAuthMethod,
    token_url: &Url,
    policy: &Policy,
) -> Result<AuthSettings, Failure> {
    check_references(spec, method)?;
    if spec.client_assertion.is_some() && !method.builds_assertions() {
        return Err(Failure::invalid_spec(format!(
            "spec.clientAssertion is only allowed with clientAuthMethod ClientSecretJwt or PrivateKeyJwt, not {}",
            method.as_str()
        )));
    }
    if method == ClientAuthMethod::TlsClientAuth && token_url.scheme() != "https" {
        return Err(Failure::invalid_spec(
            "clientAuthMethod TlsClientAuth presents the client certificate in the TLS handshake: spec.tokenUrl must be https://",
        ));
    }
    let assertion = method
        .builds_assertions()
        .then(|| assertion(spec.client_assertion.as_ref(), method, token_url))
        .transpose()?;
    let service_account = match (method, &spec.service_account_token) {
        (ClientAuthMethod::ServiceAccountToken, Some(_))
            if !policy.allow_service_account_tokens =>
        {
            return Err(Failure::invalid_spec(
                "clientAuthMethod ServiceAccountToken is not enabled in this operator: it runs without --allow-service-account-tokens (chart value serviceAccountTokens.enabled), so it requests no ServiceAccount tokens",
            ));
        }
        (ClientAuthMethod::ServiceAccountToken, Some(source)) => {
            Some(service_account(source, "spec.serviceAccountToken")?)
        }
        _ => None,
    };
    Ok(AuthSettings {
        assertion,
        service_account,
    })
}

/// `credentialsSecretRef` with every method but ServiceAccountToken and None; `serviceAccountToken` and
/// `clientId` with ServiceAccountToken.
fn check_references(spec: &OAuthClientSpec, method: ClientAuthMethod) -> Result<(), Failure> {
    if method == ClientAuthMethod::None {
        if spec.credentials_secret_ref.is_some() {
            return Err(Failure::invalid_spec(
                "spec.credentialsSecretRef must be absent with clientAuthMethod None (a public client sends no credentials)",
            ));
        }
        if spec.service_account_token.is_some() {
            return Err(Failure::invalid_spec(
                "spec.serviceAccountToken is only allowed with clientAuthMethod ServiceAccountToken",
            ));
        }
        return Ok(());
    }
    let federated = method == ClientAuthMethod::ServiceAccountToken;
    match (&spec.credentials_secret_ref, federated) {
        (None, false) => {
            return Err(Failure::invalid_spec(
                "spec.credentialsSecretRef is required unless clientAuthMethod is ServiceAccountToken or None",
            ));
        }
        (Some(_), true) => {
            return Err(Failure::invalid_spec(
                "spec.credentialsSecretRef must be absent with clientAuthMethod ServiceAccountToken, which authenticates with a ServiceAccount token and reads no Secret",
            ));
        }
        (Some(reference), false) if reference.namespace.is_some() => {
            return Err(Failure::invalid_spec(
                "spec.credentialsSecretRef.namespace is not allowed: credentials are read only from the OAuthClient's own namespace",
            ));
        }
        (Some(reference), false) => {
            check_reference_name("spec.credentialsSecretRef.name", "Secret", &reference.name)?;
        }
        _ => {}
    }
    if federated && (spec.service_account_token.is_none() || spec.client_id.is_none()) {
        return Err(Failure::invalid_spec(
            "clientAuthMethod ServiceAccountToken requires spec.serviceAccountToken (the ServiceAccount and the audience) and spec.clientId (there is no Secret to read it from)",
        ));
    }
    if !federated && spec.service_account_token.is_some() {
        return Err(Failure::invalid_spec(
            "spec.serviceAccountToken is only allowed with clientAuthMethod ServiceAccountToken",
        ));
    }
    Ok(())
}

/// `clientAssertion`, its defaults and bounds.
fn assertion(
    given: Option<&ClientAssertion>,
    method: ClientAuthMethod,
    token_url: &Url,
) -> Result<AssertionSettings, Failure> {
    let given = given.cloned().unwrap_or_default();
    if let Some(algorithm) = given.algorithm {
        let hmac_method = method == ClientAuthMethod::ClientSecretJwt;
        if algorithm.is_hmac() != hmac_method {
            let allowed = if hmac_method {
                "HS256, HS384 or HS512 (ClientSecretJwt MACs the assertion with the client_secret)"
            } else {
                "one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA (PrivateKeyJwt signs the assertion with the private key)"
            };
            return Err(Failure::invalid_spec(format!(
                "spec.clientAssertion.algorithm {} does not fit clientAuthMethod {}: use {allowed}",
                algorithm.as_str(),
                method.as_str()
            )));
        }
    }
    bounded("spec.clientAssertion.keyId", given.key_id.as_deref(), 1024)?;
    bounded(
        "spec.clientAssertion.audience",
        given.audience.as_deref(),
        2048,
    )?;
    let lifetime = duration::parse(&given.lifetime)
        .map_err(|e| Failure::invalid_spec(format!("spec.clientAssertion.lifetime: {e}")))?;
    if !(MIN_ASSERTION_LIFETIME..=MAX_ASSERTION_LIFETIME).contains(&lifetime) {
        return Err(Failure::invalid_spec(format!(
            "spec.clientAssertion.lifetime must be between 10s and 1h, not {}",
            given.lifetime
        )));
    }
    Ok(AssertionSettings {
        algorithm: given
            .algorithm
            .or((method == ClientAuthMethod::ClientSecretJwt).then_some(AssertionAlgorithm::HS256)),
        key_id: given.key_id,
        audience: given.audience.unwrap_or_else(|| token_url.to_string()),
        lifetime,
    })
}

/// A ServiceAccount token source (`field`: where it is in the spec), its bounds checked (the
/// caller checks `--allow-service-account-tokens`).
pub(crate) fn service_account(
    source: &ServiceAccountTokenSource,
    field: &str,
) -> Result<ServiceAccountSettings, Failure> {
    check_reference_name(
        &format!("{field}.serviceAccountName"),
        "ServiceAccount",
        &source.service_account_name,
    )?;
    bounded(&format!("{field}.audience"), Some(&source.audience), 2048)?;
    if !EXPIRATION_SECONDS.contains(&source.expiration_seconds) {
        return Err(Failure::invalid_spec(format!(
            "{field}.expirationSeconds must be between 600 and 3600 (the token is used once, at once), not {}",
            source.expiration_seconds
        )));
    }
    Ok(ServiceAccountSettings {
        name: source.service_account_name.clone(),
        audience: source.audience.clone(),
        expiration_seconds: source.expiration_seconds,
    })
}

/// A string field of 1 to `max` bytes, when set.
fn bounded(field: &str, value: Option<&str>, max: usize) -> Result<(), Failure> {
    match value {
        Some(v) if v.is_empty() || v.len() > max => Err(Failure::invalid_spec(format!(
            "{field} is {} bytes; it must be 1 to {max}",
            v.len()
        ))),
        _ => Ok(()),
    }
}
