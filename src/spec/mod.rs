//! A spec merged over its vendor preset and validated: everything the exchange and the refresh
//! timing read. Resolving is pure; every problem is an `InvalidSpec` failure with a message that
//! names the field. One file per concern:
//!
//! | file | checks |
//! | --- | --- |
//! | [`token_url`] | `tokenUrl` (scheme, host, the token URL policy) |
//! | [`client_auth`] | `clientAuthMethod` and what it needs (`credentialsSecretRef`, `clientAssertion`, `serviceAccountToken`) |
//! | [`token_exchange`] | `grantType` and `tokenExchange` (RFC 8693: the subject token, token types, resources) |
//! | [`scopes`] | `scopes` |
//! | [`params`] | `extraParams` (reserved names) |
//! | [`headers`] | `extraHeaders` (forbidden names, header values) |
//! | [`refresh`] | `refresh` (durations, percentage) |
//! | [`target`] | `target` (Secret type, name, labels, annotations, templates) |
//! | [`ca_bundle`] | `caBundleRef` (the reference only; the bundle is read when needed) |
//! | [`presets`] | the vendor preset table the spec is merged over |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use url::Url;

use crate::api::crd::{
    BasicAuthEncoding, CaBundleRef, ClientAuthMethod, MAX_MAP_ENTRIES, MAX_VALUE_LEN,
    OAuthClientSpec, Provider, RequestEncoding, ResponseFields,
};
use crate::api::reason::Failure;
use crate::spec::presets::preset;
use crate::spec::template::Template;
use crate::spec::url_policy::TokenUrlPolicy;

pub mod ca_bundle;
pub mod client_auth;
pub mod duration;
pub mod headers;
pub mod params;
pub mod presets;
pub mod refresh;
pub mod scopes;
pub mod target;
pub mod template;
pub mod token_exchange;
pub mod token_url;
pub mod url_policy;

pub use client_auth::{AssertionSettings, ServiceAccountSettings};
pub use headers::FORBIDDEN_HEADERS;
pub use params::RESERVED_PARAMS;
pub use target::{
    MAX_OBJECT_NAME, SECRET_TYPES, STANDARD_KEYS, check_object_name, check_reference_name,
    dns_subdomain, label_name, reserved_metadata_key,
};
pub use token_exchange::{SubjectSettings, TokenExchangeSettings};
pub use token_url::check_token_url;

#[cfg(test)]
mod tests;

/// Operator-wide rules that a spec must satisfy.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Allow `http://` token URLs (tests and development only).
    pub allow_insecure_http: bool,
    /// Where credentials may be sent (`--token-url-deny-cidrs`, `--token-url-allow-hosts`).
    pub token_urls: Arc<TokenUrlPolicy>,
    /// Allow `clientAuthMethod: ServiceAccountToken` (`--allow-service-account-tokens`).
    pub allow_service_account_tokens: bool,
}

/// How the token request is made.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeSettings {
    /// The preset the settings came from (a metric label; never used for branching).
    pub provider: Provider,
    /// The token endpoint.
    pub token_url: Url,
    /// Client authentication.
    pub client_auth_method: ClientAuthMethod,
    /// The client assertion (ClientSecretJwt, PrivateKeyJwt).
    pub assertion: Option<AssertionSettings>,
    /// The ServiceAccount token (ServiceAccountToken).
    pub service_account: Option<ServiceAccountSettings>,
    /// The token exchange (grantType TokenExchange); `None`: client credentials.
    pub token_exchange: Option<TokenExchangeSettings>,
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
    /// `caBundleRef`: the endpoint's own trust anchors (`None`: the operator's default trust).
    ///
    /// Not part of [`ExchangeSettings`], on purpose: the fingerprint of a stored token covers
    /// what the token was issued for (the request and the credentials), and which anchors
    /// verified the endpoint is not that. A CA bundle rotation, or adding a `caBundleRef` for
    /// an endpoint that already works, does not by itself make a new exchange due.
    pub ca_bundle: Option<CaBundleRef>,
}

impl ClientSettings {
    /// Merges `spec` over its preset and validates the result.
    pub fn resolve(spec: &OAuthClientSpec, policy: &Policy) -> Result<Self, Failure> {
        let preset = preset(spec.provider);
        let method = client_auth_method(spec);
        let token_url = token_url::token_url(spec, preset, policy)?;
        if preset.needs_audience && spec.audience.as_deref().is_none_or(|a| a.trim().is_empty()) {
            return Err(Failure::invalid_spec(format!(
                "spec.audience is required by the {} preset: set it to the API identifier the vendor gave with the credentials",
                spec.provider.as_str()
            )));
        }
        let auth = client_auth::settings(spec, method, &token_url, policy)?;
        let token_exchange = token_exchange::settings(spec, preset, method, policy)?;
        let refresh = spec.refresh.clone().unwrap_or_default();
        let target = spec.target.clone().unwrap_or_default();
        Ok(ClientSettings {
            exchange: ExchangeSettings {
                provider: spec.provider,
                token_url,
                client_auth_method: method,
                assertion: auth.assertion,
                service_account: auth.service_account,
                token_exchange,
                basic_auth_encoding: spec
                    .basic_auth_encoding
                    .unwrap_or(preset.basic_auth_encoding),
                request_encoding: spec.request_encoding.unwrap_or(preset.request_encoding),
                client_id_in_body: preset.client_id_in_body,
                audience: spec.audience.clone(),
                scopes: scopes::scopes(spec, preset)?,
                extra_params: params::extra_params(spec)?,
                extra_headers: headers::extra_headers(spec)?,
                response_fields: spec.response_fields.clone().unwrap_or_default(),
                default_lifetime: refresh::default_lifetime(&refresh)?,
            },
            refresh: refresh::settings(&refresh)?,
            templates: target::templates(&target)?,
            ca_bundle: ca_bundle::ca_bundle(spec)?,
        })
    }
}

/// The client authentication method of `spec`: its own, or its preset's.
pub fn client_auth_method(spec: &OAuthClientSpec) -> ClientAuthMethod {
    spec.client_auth_method
        .unwrap_or(preset(spec.provider).client_auth_method)
}

/// The bounds the CRD schema also states, for specs that did not pass through it (the
/// `exchange` command, or an API server without CEL): at most [`MAX_MAP_ENTRIES`] entries,
/// names of 1 to `max_name` bytes, values of at most [`MAX_VALUE_LEN`] bytes.
pub(crate) fn check_map(
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
