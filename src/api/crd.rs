//! The `OAuthClient` custom resource (`oauth.token-operator.dev/v1alpha1`).
//!
//! Field names, defaults and enum values follow the API contract. The CRD YAML in
//! `crds/oauthclient.yaml` is generated from these types by `oauth-token-operator crd`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the CRD.
pub const GROUP: &str = group!();
/// API version of the CRD.
pub const VERSION: &str = "v1alpha1";

/// Most entries allowed in `extraParams`, `extraHeaders`, `target.template`, `target.labels`
/// and `target.annotations`.
pub const MAX_MAP_ENTRIES: usize = 32;
/// Longest value allowed in those maps.
pub const MAX_VALUE_LEN: usize = 4096;
/// Longest name (key) allowed in `extraParams`, `extraHeaders` and `target.template`.
pub const MAX_NAME_LEN: usize = 256;

/// Providers whose preset carries a fixed token URL; for the others `tokenUrl` is required.
/// The CEL rule on `spec` is generated from this list (and a test checks it against the
/// preset table).
pub const PROVIDERS_WITH_TOKEN_URL: [&str; 5] = [
    "microboxlabs",
    "microbilt",
    "microbilt-sandbox",
    "iotspot",
    "gcp-sts",
];

/// Desired state of an OAuthClient: how to obtain a client-credentials token and where to store it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "oauth.token-operator.dev",
    version = "v1alpha1",
    kind = "OAuthClient",
    plural = "oauthclients",
    singular = "oauthclient",
    shortname = "oac",
    category = "oauth",
    namespaced,
    status = "OAuthClientStatus",
    doc = "An OAuth2 client-credentials client whose access token is kept fresh in a managed Secret.",
    printcolumn = r#"{"name":"Ready","type":"string","description":"Whether the managed Secret holds a valid token","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","description":"Reason of the Ready condition","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","description":"When the current token expires (RFC 3339)","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","priority":1,"description":"Vendor preset","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","priority":1,"description":"The managed Secret","jsonPath":".status.secretName"}"#,
    printcolumn = r#"{"name":"Next Refresh","type":"string","priority":1,"description":"When the next exchange is planned: a refresh, or a retry after a failure (RFC 3339)","jsonPath":".status.nextRefreshAt"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.tokenUrl) || (has(self.provider) && self.provider in ['microboxlabs', 'microbilt', 'microbilt-sandbox', 'iotspot', 'gcp-sts'])",
        "message": "spec.tokenUrl is required unless provider is one of microboxlabs, microbilt, microbilt-sandbox, iotspot, gcp-sts (whose presets have a fixed token URL)"
    },
    {
        "rule": "(has(self.clientAuthMethod) && self.clientAuthMethod in ['ServiceAccountToken', 'None']) || (!has(self.clientAuthMethod) && has(self.provider) && self.provider == 'gcp-sts') || has(self.credentialsSecretRef)",
        "message": "spec.credentialsSecretRef is required unless clientAuthMethod is ServiceAccountToken or None"
    },
    {
        "rule": "!(has(self.clientAuthMethod) ? self.clientAuthMethod == 'None' : (has(self.provider) && self.provider == 'gcp-sts')) || !has(self.credentialsSecretRef)",
        "message": "spec.credentialsSecretRef must be absent with clientAuthMethod None (a public client sends no credentials; None is the gcp-sts preset's default: set clientAuthMethod to authenticate)"
    },
    {
        "rule": "!(has(self.clientAuthMethod) ? self.clientAuthMethod == 'None' : (has(self.provider) && self.provider == 'gcp-sts')) || (has(self.grantType) ? self.grantType == 'TokenExchange' : (has(self.provider) && self.provider == 'gcp-sts'))",
        "message": "clientAuthMethod None (the gcp-sts preset's default) is only allowed with grantType TokenExchange"
    },
    {
        "rule": "(has(self.grantType) ? self.grantType == 'TokenExchange' : (has(self.provider) && self.provider == 'gcp-sts')) == has(self.tokenExchange)",
        "message": "spec.tokenExchange is required with grantType TokenExchange and not allowed otherwise"
    },
    {
        "rule": "!(has(self.clientAuthMethod) && self.clientAuthMethod == 'ServiceAccountToken') || !has(self.credentialsSecretRef)",
        "message": "spec.credentialsSecretRef must be absent with clientAuthMethod ServiceAccountToken, which authenticates with a ServiceAccount token and reads no Secret"
    },
    {
        "rule": "!(has(self.clientAuthMethod) && self.clientAuthMethod == 'ServiceAccountToken') || (has(self.serviceAccountToken) && has(self.clientId))",
        "message": "clientAuthMethod ServiceAccountToken requires spec.serviceAccountToken (the ServiceAccount and the audience) and spec.clientId (there is no Secret to read it from)"
    },
    {
        "rule": "!has(self.serviceAccountToken) || (has(self.clientAuthMethod) && self.clientAuthMethod == 'ServiceAccountToken')",
        "message": "spec.serviceAccountToken is only allowed with clientAuthMethod ServiceAccountToken"
    },
    {
        "rule": "!has(self.clientAssertion) || (has(self.clientAuthMethod) && self.clientAuthMethod in ['ClientSecretJwt', 'PrivateKeyJwt'])",
        "message": "spec.clientAssertion is only allowed with clientAuthMethod ClientSecretJwt or PrivateKeyJwt"
    },
    {
        "rule": "!has(self.clientAssertion) || !has(self.clientAssertion.algorithm) || !has(self.clientAuthMethod) || self.clientAuthMethod != 'ClientSecretJwt' || self.clientAssertion.algorithm in ['HS256', 'HS384', 'HS512']",
        "message": "clientAuthMethod ClientSecretJwt MACs the assertion with the client_secret: spec.clientAssertion.algorithm must be HS256, HS384 or HS512"
    },
    {
        "rule": "!has(self.clientAssertion) || !has(self.clientAssertion.algorithm) || !has(self.clientAuthMethod) || self.clientAuthMethod != 'PrivateKeyJwt' || !(self.clientAssertion.algorithm in ['HS256', 'HS384', 'HS512'])",
        "message": "clientAuthMethod PrivateKeyJwt signs the assertion with the private key: spec.clientAssertion.algorithm must be one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
    }
]))]
pub struct OAuthClientSpec {
    /// Vendor preset supplying defaults for the token URL, client authentication, request
    /// encoding and scopes. Any field set explicitly in this spec wins over the preset.
    #[serde(default)]
    pub provider: Provider,

    /// Token endpoint URL. Required unless the preset has a fixed URL (microboxlabs, microbilt,
    /// microbilt-sandbox, iotspot, gcp-sts). Must be https:// unless the operator runs with
    /// --allow-insecure-http.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub token_url: Option<String>,

    /// client_id given inline (it is not a secret). When absent it is read from the credentials
    /// Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub client_id: Option<String>,

    /// Secret in the same namespace holding the client credentials. Required unless
    /// clientAuthMethod is ServiceAccountToken, and absent with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,

    /// Where the token endpoint's trust anchors are: a ConfigMap (a trust-manager Bundle
    /// target works as it is) or a Secret in the same namespace, holding one or more PEM
    /// certificates. When set, the endpoint is verified against this bundle alone, not the
    /// operator's default trust (the system store and --ca-file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<CaBundleRef>,

    /// How the client authenticates: ClientSecretBasic (HTTP Basic header) or ClientSecretPost
    /// (client_id and client_secret in the body), RFC 6749 section 2.3.1, never both ways;
    /// ClientSecretJwt or PrivateKeyJwt (an RFC 7523 client assertion MAC'd with the
    /// client_secret or signed with the private key); TlsClientAuth (RFC 8705: the certificate
    /// in the TLS handshake, client_id in the body); ServiceAccountToken (a fresh Kubernetes
    /// token of spec.serviceAccountToken.serviceAccountName as the client assertion: workload
    /// identity federation, no Secret). Defaults to the preset's method (generic:
    /// ClientSecretBasic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth_method: Option<ClientAuthMethod>,

    /// The client assertion of ClientSecretJwt and PrivateKeyJwt: its algorithm, kid, audience
    /// and lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_assertion: Option<ClientAssertion>,

    /// The grant: ClientCredentials (RFC 6749 section 4.4) or TokenExchange (RFC 8693: a subject
    /// token, from spec.tokenExchange, exchanged for an access token). Defaults to the preset's
    /// grant (gcp-sts: TokenExchange; the others: ClientCredentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<GrantType>,

    /// TokenExchange: the subject token and what to ask for. Required with grantType
    /// TokenExchange, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_exchange: Option<TokenExchange>,

    /// ServiceAccountToken: the ServiceAccount whose token is the client assertion, and the
    /// token's audience and lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_token: Option<ServiceAccountTokenSource>,

    /// How client_id and client_secret enter the Basic header: UrlEncoded form-urlencodes them
    /// before base64 as RFC 6749 requires; Raw sends base64(id:secret) for servers that do not
    /// decode. Defaults to the preset's encoding (generic: UrlEncoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth_encoding: Option<BasicAuthEncoding>,

    /// Body encoding of the token request. Defaults to the preset's encoding (generic: Form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_encoding: Option<RequestEncoding>,

    /// Sent as the audience parameter (required by microboxlabs and usually by auth0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub audience: Option<String>,

    /// Scopes to request, sent space-joined as the scope parameter. Defaults to the preset's
    /// scopes (iotspot: iotspot/openapi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 512)))]
    pub scopes: Option<Vec<String>>,

    /// Extra, non-secret body parameters (for example resource for Entra ID v1). The names
    /// grant_type, client_id, client_secret, scope, audience, client_assertion and
    /// client_assertion_type are refused in any letter case and with surrounding spaces: use
    /// the dedicated fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "maxProperties" = MAX_MAP_ENTRIES,
        "additionalProperties" = {"type": "string", "maxLength": MAX_VALUE_LEN},
        "x-kubernetes-validations" = [{"rule": "self.all(k, size(k) >= 1 && size(k) <= 256)", "message": "spec.extraParams names must be 1 to 256 characters"}]
    ))]
    pub extra_params: Option<BTreeMap<String, String>>,

    /// Extra, non-secret request headers. Authorization, Proxy-Authorization, Cookie and
    /// Content-Type are refused, as are headers that frame the request or control the
    /// connection (Host, Content-Length, Transfer-Encoding, Connection, Proxy-Connection,
    /// Keep-Alive, TE, Trailer, Upgrade, Expect). Values are printable ASCII (and tab) only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "maxProperties" = MAX_MAP_ENTRIES,
        "additionalProperties" = {"type": "string", "maxLength": MAX_VALUE_LEN},
        "x-kubernetes-validations" = [{"rule": "self.all(k, size(k) >= 1 && size(k) <= 256)", "message": "spec.extraHeaders names must be 1 to 256 characters"}]
    ))]
    pub extra_headers: Option<BTreeMap<String, String>>,

    /// Where to read each value in a non-standard JSON response: a top-level name or a dotted
    /// path such as data.token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_fields: Option<ResponseFields>,

    /// The managed Secret that receives the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,

    /// When to refresh the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Refresh>,
}

// A vendor preset.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Provider {
    /// Plain RFC 6749 section 4.4.
    #[default]
    #[serde(rename = "generic")]
    Generic,
    /// MicroboxLabs / ModularIoT login API.
    #[serde(rename = "microboxlabs")]
    Microboxlabs,
    /// Microbilt production.
    #[serde(rename = "microbilt")]
    Microbilt,
    /// Microbilt sandbox.
    #[serde(rename = "microbilt-sandbox")]
    MicrobiltSandbox,
    /// iotspot (AWS Cognito).
    #[serde(rename = "iotspot")]
    Iotspot,
    /// AWS Cognito user pools.
    #[serde(rename = "aws-cognito")]
    AwsCognito,
    /// Auth0.
    #[serde(rename = "auth0")]
    Auth0,
    /// Okta.
    #[serde(rename = "okta")]
    Okta,
    /// Microsoft Entra ID.
    #[serde(rename = "entra-id")]
    EntraId,
    /// Keycloak.
    #[serde(rename = "keycloak")]
    Keycloak,
    /// Google Cloud Security Token Service (token exchange, workload identity federation).
    #[serde(rename = "gcp-sts")]
    GcpSts,
}

impl Provider {
    /// The name used in the spec and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Generic => "generic",
            Provider::Microboxlabs => "microboxlabs",
            Provider::Microbilt => "microbilt",
            Provider::MicrobiltSandbox => "microbilt-sandbox",
            Provider::Iotspot => "iotspot",
            Provider::AwsCognito => "aws-cognito",
            Provider::Auth0 => "auth0",
            Provider::Okta => "okta",
            Provider::EntraId => "entra-id",
            Provider::Keycloak => "keycloak",
            Provider::GcpSts => "gcp-sts",
        }
    }
}

// Client authentication method.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ClientAuthMethod {
    /// HTTP Basic header (RFC 6749 section 2.3.1).
    ClientSecretBasic,
    /// client_id and client_secret in the request body (RFC 6749 section 2.3.1).
    ClientSecretPost,
    /// A client assertion MAC'd with the client_secret (RFC 7523, OIDC Core section 9).
    ClientSecretJwt,
    /// A client assertion signed with the private key (RFC 7523, OIDC Core section 9).
    PrivateKeyJwt,
    /// The certificate in the TLS handshake, client_id in the body (RFC 8705 section 2).
    TlsClientAuth,
    /// A fresh ServiceAccount token as the client assertion (workload identity federation).
    ServiceAccountToken,
    /// No client authentication: a public client (RFC 6749 section 2.1), client_id in the body
    /// when spec.clientId is set. Only with grantType TokenExchange.
    None,
}

impl ClientAuthMethod {
    /// The name used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretBasic => "ClientSecretBasic",
            ClientAuthMethod::ClientSecretPost => "ClientSecretPost",
            ClientAuthMethod::ClientSecretJwt => "ClientSecretJwt",
            ClientAuthMethod::PrivateKeyJwt => "PrivateKeyJwt",
            ClientAuthMethod::TlsClientAuth => "TlsClientAuth",
            ClientAuthMethod::ServiceAccountToken => "ServiceAccountToken",
            ClientAuthMethod::None => "None",
        }
    }

    /// Whether the method authenticates with a client assertion the operator builds.
    pub fn builds_assertions(self) -> bool {
        matches!(
            self,
            ClientAuthMethod::ClientSecretJwt | ClientAuthMethod::PrivateKeyJwt
        )
    }
}

// JWS algorithm of a client assertion.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum AssertionAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (PrivateKeyJwt, RSA key).
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384 (PrivateKeyJwt, RSA key).
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512 (PrivateKeyJwt, RSA key).
    RS512,
    /// RSASSA-PSS with SHA-256 (PrivateKeyJwt, RSA key).
    PS256,
    /// RSASSA-PSS with SHA-384 (PrivateKeyJwt, RSA key).
    PS384,
    /// RSASSA-PSS with SHA-512 (PrivateKeyJwt, RSA key).
    PS512,
    /// ECDSA P-256 with SHA-256 (PrivateKeyJwt, EC P-256 key).
    ES256,
    /// ECDSA P-384 with SHA-384 (PrivateKeyJwt, EC P-384 key).
    ES384,
    /// Ed25519 (PrivateKeyJwt, Ed25519 key).
    EdDSA,
    /// HMAC with SHA-256 (ClientSecretJwt).
    HS256,
    /// HMAC with SHA-384 (ClientSecretJwt).
    HS384,
    /// HMAC with SHA-512 (ClientSecretJwt).
    HS512,
}

impl AssertionAlgorithm {
    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            AssertionAlgorithm::RS256 => "RS256",
            AssertionAlgorithm::RS384 => "RS384",
            AssertionAlgorithm::RS512 => "RS512",
            AssertionAlgorithm::PS256 => "PS256",
            AssertionAlgorithm::PS384 => "PS384",
            AssertionAlgorithm::PS512 => "PS512",
            AssertionAlgorithm::ES256 => "ES256",
            AssertionAlgorithm::ES384 => "ES384",
            AssertionAlgorithm::EdDSA => "EdDSA",
            AssertionAlgorithm::HS256 => "HS256",
            AssertionAlgorithm::HS384 => "HS384",
            AssertionAlgorithm::HS512 => "HS512",
        }
    }

    /// Whether it is a MAC with the client_secret (ClientSecretJwt) rather than a signature.
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            AssertionAlgorithm::HS256 | AssertionAlgorithm::HS384 | AssertionAlgorithm::HS512
        )
    }
}

/// Default of `clientAssertion.lifetime`.
pub const DEFAULT_ASSERTION_LIFETIME: &str = "5m";

/// The client assertion of ClientSecretJwt and PrivateKeyJwt (RFC 7523 section 3).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.lifetime) || (duration(self.lifetime) >= duration('10s') && duration(self.lifetime) <= duration('1h'))",
    "message": "spec.clientAssertion.lifetime must be between 10s and 1h"
}]))]
pub struct ClientAssertion {
    /// JWS algorithm. Defaults from the key: RSA RS256, EC P-256 ES256, EC P-384 ES384,
    /// Ed25519 EdDSA; HS256 for ClientSecretJwt. HS256, HS384 and HS512 only with
    /// ClientSecretJwt, the others only with PrivateKeyJwt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<AssertionAlgorithm>,

    /// kid header of the assertion (the key's identifier as registered with the provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub key_id: Option<String>,

    /// aud claim of the assertion. Defaults to the token URL, which Entra ID, Okta and Keycloak
    /// expect; servers following RFC 7523bis or FAPI 2 want their issuer identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub audience: Option<String>,

    /// exp - iat of the assertion, 10s to 1h (for example 90s, 5m).
    #[serde(default = "default_assertion_lifetime")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = [duration_rule()]))]
    pub lifetime: String,
}

fn default_assertion_lifetime() -> String {
    DEFAULT_ASSERTION_LIFETIME.into()
}

impl Default for ClientAssertion {
    fn default() -> Self {
        ClientAssertion {
            algorithm: None,
            key_id: None,
            audience: None,
            lifetime: default_assertion_lifetime(),
        }
    }
}

// The grant of the token request.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum GrantType {
    /// client_credentials (RFC 6749 section 4.4).
    ClientCredentials,
    /// urn:ietf:params:oauth:grant-type:token-exchange (RFC 8693).
    TokenExchange,
}

impl GrantType {
    /// The name used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "ClientCredentials",
            GrantType::TokenExchange => "TokenExchange",
        }
    }
}

/// Token exchange (RFC 8693 section 2.1): the subject token and what to ask for.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenExchange {
    /// Where the subject token comes from: exactly one of serviceAccountToken, oauthClientRef,
    /// secretRef.
    pub subject_token: SubjectTokenSource,

    /// Sent as subject_token_type. Defaults to urn:ietf:params:oauth:token-type:jwt for a
    /// ServiceAccount token or a Secret, and urn:ietf:params:oauth:token-type:access_token for
    /// another OAuthClient's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub subject_token_type: Option<String>,

    /// Sent as requested_token_type, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub requested_token_type: Option<String>,

    /// Sent as one resource parameter each (absolute URIs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 2048)))]
    pub resources: Option<Vec<String>>,
}

/// The source of the subject token: exactly one of the three.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.serviceAccountToken) ? 1 : 0) + (has(self.oauthClientRef) ? 1 : 0) + (has(self.secretRef) ? 1 : 0) == 1",
    "message": "spec.tokenExchange.subjectToken must set exactly one of serviceAccountToken, oauthClientRef, secretRef"
}]))]
pub struct SubjectTokenSource {
    /// A fresh token of a ServiceAccount of the same namespace for each exchange, under the
    /// opt-in rules of clientAuthMethod ServiceAccountToken (the ServiceAccount's annotations
    /// oauth.token-operator.dev/token-audiences and oauth.token-operator.dev/token-endpoints,
    /// --allow-service-account-tokens, refused audiences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_token: Option<ServiceAccountTokenSource>,

    /// The current access token of another OAuthClient of the same namespace (chaining). This
    /// client is exchanged again when that token changes, and not while that client is not
    /// Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_client_ref: Option<OAuthClientRef>,

    /// A token held in a Secret of the same namespace, written by something else; a change of
    /// it is exchanged again within seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SubjectSecretRef>,
}

/// Another OAuthClient of the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthClientRef {
    /// Name of the OAuthClient, in the same namespace.
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = [dns_subdomain_rule()]))]
    pub name: String,
}

/// A key of a Secret of the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubjectSecretRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = [dns_subdomain_rule()]))]
    pub name: String,

    /// Key holding the token.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Default of `serviceAccountToken.expirationSeconds`.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 600;

/// The ServiceAccount whose token authenticates the client (ServiceAccountToken).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountTokenSource {
    /// ServiceAccount in the same namespace whose token is used (the client assertion, or the
    /// subject token of a token exchange). It must opt in: its annotation oauth.token-operator.dev/token-audiences lists the audiences it
    /// allows, and oauth.token-operator.dev/token-endpoints the origins (scheme://host[:port])
    /// of the token endpoints its tokens may be sent to (both comma-separated).
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = [dns_subdomain_rule()]))]
    pub service_account_name: String,

    /// Audience of the Kubernetes token, as the identity provider's federation trust expects
    /// (Entra ID: api://AzureADTokenExchange). Audiences the API server itself accepts are
    /// refused.
    #[schemars(length(min = 1, max = 2048))]
    pub audience: String,

    /// Lifetime requested from the TokenRequest API, 600 to 3600 seconds (the token is used
    /// once, at once: a longer one would only help whoever captures it).
    #[serde(default = "default_expiration_seconds")]
    #[schemars(range(min = 600, max = 3600))]
    pub expiration_seconds: i64,
}

fn default_expiration_seconds() -> i64 {
    DEFAULT_EXPIRATION_SECONDS
}

// How id and secret enter the Basic header.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum BasicAuthEncoding {
    /// Form-urlencode id and secret before base64 (RFC 6749 section 2.3.1).
    UrlEncoded,
    /// base64(id:secret) without encoding, for servers that do not decode.
    Raw,
}

// Body encoding of the token request.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RequestEncoding {
    /// application/x-www-form-urlencoded.
    Form,
    /// application/json.
    #[serde(rename = "JSON")]
    Json,
}

/// The CEL rule that a name the operator puts in an API path is a name (a DNS subdomain, as
/// Kubernetes names objects), with a message in words.
/// A duration field's rule, with a message in words (a `pattern` made the API server answer
/// with the regular expression).
fn duration_rule() -> serde_json::Value {
    serde_json::json!({
        "rule": "self.matches('^([0-9]+([.][0-9]+)?(ms|h|m|s))+$')",
        "message": "must be a duration: a number and a unit (ms, s, m or h), repeated, such as 90s, 5m or 1h30m"
    })
}

fn dns_subdomain_rule() -> serde_json::Value {
    serde_json::json!({
        "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
        "message": "must be an object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (a DNS subdomain)"
    })
}

/// Reference to the Secret holding the client credentials, in the OAuthClient's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.__namespace__)",
    "message": "credentialsSecretRef.namespace is not allowed: credentials are read only from the OAuthClient's own namespace"
}]))]
pub struct CredentialsSecretRef {
    /// Name of the Secret, in the same namespace as the OAuthClient.
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = [dns_subdomain_rule()]))]
    pub name: String,

    /// Key holding client_id (ignored when spec.clientId is set).
    #[serde(default = "default_client_id_key")]
    #[schemars(length(min = 1, max = 253))]
    pub client_id_key: String,

    /// Key holding client_secret.
    #[serde(default = "default_client_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub client_secret_key: String,

    /// Key holding the PEM private key (PrivateKeyJwt, TlsClientAuth): PKCS#8, PKCS#1 or SEC1,
    /// unencrypted.
    #[serde(default = "default_private_key_key")]
    #[schemars(length(min = 1, max = 253))]
    pub private_key_key: String,

    /// Key holding the PEM certificate chain, leaf first (TlsClientAuth: required;
    /// PrivateKeyJwt: optional, adds x5t and x5t#S256 to the assertion header). A
    /// kubernetes.io/tls Secret, such as one cert-manager issues, works as it is.
    #[serde(default = "default_certificate_key")]
    #[schemars(length(min = 1, max = 253))]
    pub certificate_key: String,

    /// Not allowed. Declared only so that the API server refuses it instead of silently
    /// dropping it: credentials are read only from the OAuthClient's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn default_client_id_key() -> String {
    "client_id".into()
}

fn default_client_secret_key() -> String {
    "client_secret".into()
}

fn default_private_key_key() -> String {
    "tls.key".into()
}

fn default_certificate_key() -> String {
    "tls.crt".into()
}

impl CredentialsSecretRef {
    /// A reference with the default keys.
    pub fn named(name: impl Into<String>) -> Self {
        CredentialsSecretRef {
            name: name.into(),
            client_id_key: default_client_id_key(),
            client_secret_key: default_client_secret_key(),
            private_key_key: default_private_key_key(),
            certificate_key: default_certificate_key(),
            namespace: None,
        }
    }
}

/// Reference to the trust anchors of the token endpoint, in the OAuthClient's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.__namespace__)",
    "message": "caBundleRef.namespace is not allowed: the bundle is read only from the OAuthClient's own namespace"
}]))]
pub struct CaBundleRef {
    /// Kind of the object holding the bundle: ConfigMap or Secret.
    #[serde(default)]
    pub kind: CaBundleKind,

    /// Name of the ConfigMap or Secret, in the same namespace as the OAuthClient.
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = [dns_subdomain_rule()]))]
    pub name: String,

    /// Key holding one or more PEM certificates.
    #[serde(default = "default_ca_bundle_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,

    /// Not allowed. Declared only so that the API server refuses it instead of silently
    /// dropping it: the bundle is read only from the OAuthClient's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Default of `caBundleRef.key`.
pub const DEFAULT_CA_BUNDLE_KEY: &str = "ca.crt";

fn default_ca_bundle_key() -> String {
    DEFAULT_CA_BUNDLE_KEY.into()
}

impl CaBundleRef {
    /// A reference to `key` of the ConfigMap `name`.
    pub fn config_map(name: impl Into<String>, key: impl Into<String>) -> Self {
        CaBundleRef {
            kind: CaBundleKind::ConfigMap,
            name: name.into(),
            key: key.into(),
            namespace: None,
        }
    }
}

// Kind of the object holding a CA bundle.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum CaBundleKind {
    /// A ConfigMap (data or binaryData).
    #[default]
    ConfigMap,
    /// A Secret.
    Secret,
}

/// Where to read values in a non-standard JSON response.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponseFields {
    /// Name or dotted path of the access token.
    #[serde(default = "default_access_token_field")]
    #[schemars(length(min = 1, max = 256))]
    pub access_token: String,
    /// Name or dotted path of the lifetime in seconds.
    #[serde(default = "default_expires_in_field")]
    #[schemars(length(min = 1, max = 256))]
    pub expires_in: String,
    /// Name or dotted path of the token type.
    #[serde(default = "default_token_type_field")]
    #[schemars(length(min = 1, max = 256))]
    pub token_type: String,
    /// Name or dotted path of the granted scope.
    #[serde(default = "default_scope_field")]
    #[schemars(length(min = 1, max = 256))]
    pub scope: String,
}

fn default_access_token_field() -> String {
    "access_token".into()
}
fn default_expires_in_field() -> String {
    "expires_in".into()
}
fn default_token_type_field() -> String {
    "token_type".into()
}
fn default_scope_field() -> String {
    "scope".into()
}

impl Default for ResponseFields {
    fn default() -> Self {
        ResponseFields {
            access_token: default_access_token_field(),
            expires_in: default_expires_in_field(),
            token_type: default_token_type_field(),
            scope: default_scope_field(),
        }
    }
}

/// The managed Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Name of the managed Secret, in the same namespace. Defaults to <metadata.name>-token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = [dns_subdomain_rule()]))]
    pub name: Option<String>,

    /// Type of the managed Secret. Only Opaque is allowed: a managed Secret must never become
    /// a credential of the cluster (kubernetes.io/service-account-token,
    /// bootstrap.kubernetes.io/token) or of its nodes.
    #[serde(default = "default_secret_type", rename = "type")]
    #[schemars(length(min = 1, max = 253), extend("enum" = ["Opaque"]))]
    pub type_: String,

    /// Labels added to the managed Secret. Keys under kubernetes.io/, k8s.io/ (and their
    /// subdomains) or oauth.token-operator.dev/ are refused, except the recommended
    /// app.kubernetes.io/ labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "maxProperties" = MAX_MAP_ENTRIES,
        "additionalProperties" = {"type": "string", "maxLength": 63},
        "x-kubernetes-validations" = [{"rule": "self.all(k, k.startsWith('app.kubernetes.io/') || !k.matches('^([^/]*[.])?(kubernetes[.]io|k8s[.]io|oauth[.]token-operator[.]dev)/'))", "message": "spec.target.labels may not use keys reserved for Kubernetes (kubernetes.io/, k8s.io/ and their subdomains, except app.kubernetes.io/) or for the operator (oauth.token-operator.dev/)"}]
    ))]
    pub labels: Option<BTreeMap<String, String>>,

    /// Annotations added to the managed Secret. Keys under kubernetes.io/, k8s.io/ (and their
    /// subdomains) or oauth.token-operator.dev/ are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "maxProperties" = MAX_MAP_ENTRIES,
        "additionalProperties" = {"type": "string", "maxLength": MAX_VALUE_LEN},
        "x-kubernetes-validations" = [{"rule": "self.all(k, !k.matches('^([^/]*[.])?(kubernetes[.]io|k8s[.]io|oauth[.]token-operator[.]dev)/'))", "message": "spec.target.annotations may not use keys reserved for Kubernetes (kubernetes.io/, k8s.io/ and their subdomains) or for the operator (oauth.token-operator.dev/)"}]
    ))]
    pub annotations: Option<BTreeMap<String, String>>,

    /// Extra Secret keys rendered from the placeholders {{ access_token }}, {{ token_type }},
    /// {{ expires_at }} and {{ scope }}, for example Authorization: "Bearer {{ access_token }}".
    /// An unknown placeholder makes the spec invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "maxProperties" = MAX_MAP_ENTRIES,
        "additionalProperties" = {"type": "string", "maxLength": MAX_VALUE_LEN},
        "x-kubernetes-validations" = [{"rule": "self.all(k, size(k) >= 1 && size(k) <= 253)", "message": "spec.target.template keys must be 1 to 253 characters"}]
    ))]
    pub template: Option<BTreeMap<String, String>>,
}

fn default_secret_type() -> String {
    "Opaque".into()
}

impl Default for Target {
    fn default() -> Self {
        Target {
            name: None,
            type_: default_secret_type(),
            labels: None,
            annotations: None,
            template: None,
        }
    }
}

/// When to refresh the token.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Refresh {
    /// Refresh this long before expiry (for example 90s, 5m, 1h30m). When unset,
    /// renewBeforePercentage applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = [duration_rule()]))]
    pub renew_before: Option<String>,

    /// When renewBefore is unset: refresh when this share of the lifetime remains (33 refreshes
    /// at two thirds of the lifetime).
    #[serde(default = "default_renew_before_percentage")]
    #[schemars(range(min = 1, max = 90))]
    pub renew_before_percentage: i32,

    /// Lifetime assumed when the response has no usable expires_in and the token is not a JWT
    /// with exp.
    #[serde(default = "default_lifetime")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = [duration_rule()]))]
    pub default_lifetime: String,
}

/// Default of `refresh.renewBeforePercentage`.
pub const DEFAULT_RENEW_BEFORE_PERCENTAGE: i32 = 33;
/// Default of `refresh.defaultLifetime`.
pub const DEFAULT_LIFETIME: &str = "1h";

fn default_renew_before_percentage() -> i32 {
    DEFAULT_RENEW_BEFORE_PERCENTAGE
}

fn default_lifetime() -> String {
    DEFAULT_LIFETIME.into()
}

impl Default for Refresh {
    fn default() -> Self {
        Refresh {
            renew_before: None,
            renew_before_percentage: DEFAULT_RENEW_BEFORE_PERCENTAGE,
            default_lifetime: default_lifetime(),
        }
    }
}

/// Observed state of an OAuthClient.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthClientStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready: the managed Secret holds an unexpired token obtained for the current spec and
    /// credentials. Degraded: the latest exchange attempt failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Name of the managed Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// Token type of the last successful exchange (normalised; Bearer for bearer tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,

    /// Scope granted by the last successful exchange, when the endpoint said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,

    /// issued_token_type of the last successful token exchange (RFC 8693), when the endpoint
    /// said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<String>,

    /// When the current token was issued (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,

    /// When the current token expires (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,

    /// When the next exchange is planned: a refresh, or a retry after a failure (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_at: Option<String>,

    /// Failed exchange attempts since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<i64>,
}

/// The CRD's OpenAPI schema of an OAuthClient (`openAPIV3Schema`), as JSON.
pub fn schema() -> serde_json::Value {
    let crd = serde_json::to_value(OAuthClient::crd()).expect("a CRD always serialises to JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The CRD as YAML, exactly as `oauth-token-operator crd` prints it.
pub fn crd_yaml() -> String {
    let crd = OAuthClient::crd();
    let yaml = serde_yaml::to_string(&crd).expect("a CRD always serialises to YAML");
    format!("---\n{yaml}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd_json() -> serde_json::Value {
        serde_json::to_value(OAuthClient::crd()).unwrap()
    }

    #[test]
    fn names_scope_and_subresources() {
        let crd = crd_json();
        assert_eq!(
            crd["metadata"]["name"],
            "oauthclients.oauth.token-operator.dev"
        );
        let spec = &crd["spec"];
        assert_eq!(spec["group"], GROUP);
        assert_eq!(spec["scope"], "Namespaced");
        assert_eq!(spec["names"]["kind"], "OAuthClient");
        assert_eq!(spec["names"]["plural"], "oauthclients");
        assert_eq!(spec["names"]["shortNames"], serde_json::json!(["oac"]));
        assert_eq!(spec["names"]["categories"], serde_json::json!(["oauth"]));
        let version = &spec["versions"][0];
        assert_eq!(version["name"], VERSION);
        assert!(version["subresources"]["status"].is_object());
        let printer_columns = version["additionalPrinterColumns"].as_array().unwrap();
        // `kubectl get oac` shows the columns of priority 0; `-o wide` adds those of priority 1.
        let columns = |wide: bool| -> Vec<String> {
            printer_columns
                .iter()
                .filter(|c| (c["priority"].as_i64().unwrap_or(0) == 1) == wide)
                .map(|c| c["name"].as_str().unwrap().to_uppercase())
                .collect()
        };
        assert_eq!(columns(false), ["READY", "REASON", "EXPIRES", "AGE"]);
        assert_eq!(columns(true), ["PROVIDER", "SECRET", "NEXT REFRESH"]);
        assert!(
            printer_columns
                .iter()
                .all(|c| c["priority"].as_i64().unwrap_or(0) <= 1)
        );
        let paths: Vec<&str> = printer_columns
            .iter()
            .map(|c| c["jsonPath"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths[4..],
            [
                ".spec.provider",
                ".status.secretName",
                ".status.nextRefreshAt"
            ]
        );
    }

    /// Walks a schema and returns the paths of properties without a description.
    fn undescribed(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        if let Some(props) = schema["properties"].as_object() {
            for (name, sub) in props {
                let p = format!("{path}.{name}");
                if sub["description"].as_str().is_none_or(str::is_empty) {
                    out.push(p.clone());
                }
                undescribed(sub, &p, out);
                if sub["items"].is_object() {
                    undescribed(&sub["items"], &format!("{p}[]"), out);
                }
            }
        }
    }

    #[test]
    fn every_spec_and_status_field_has_a_description() {
        let crd = crd_json();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        undescribed(&schema["properties"]["spec"], "spec", &mut missing);
        undescribed(&schema["properties"]["status"], "status", &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }

    #[test]
    fn the_enums_and_the_credentials_keys_defaults_are_in_the_schema() {
        let crd = crd_json();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let props = &spec["properties"];
        assert_eq!(props["provider"]["default"], "generic");
        assert_eq!(
            props["provider"]["enum"],
            serde_json::json!([
                "generic",
                "microboxlabs",
                "microbilt",
                "microbilt-sandbox",
                "iotspot",
                "aws-cognito",
                "auth0",
                "okta",
                "entra-id",
                "keycloak",
                "gcp-sts"
            ])
        );
        assert_eq!(
            props["clientAuthMethod"]["enum"],
            serde_json::json!([
                "ClientSecretBasic",
                "ClientSecretPost",
                "ClientSecretJwt",
                "PrivateKeyJwt",
                "TlsClientAuth",
                "ServiceAccountToken",
                "None"
            ])
        );
        assert_eq!(
            props["grantType"]["enum"],
            serde_json::json!(["ClientCredentials", "TokenExchange"])
        );
        let exchange = &props["tokenExchange"]["properties"];
        let subject = &exchange["subjectToken"]["properties"];
        for source in ["serviceAccountToken", "oauthClientRef", "secretRef"] {
            assert!(subject[source].is_object(), "{source}");
        }
        for field in ["subjectTokenType", "requestedTokenType", "resources"] {
            assert!(exchange[field].is_object(), "{field}");
        }
        assert_eq!(
            props["basicAuthEncoding"]["enum"],
            serde_json::json!(["UrlEncoded", "Raw"])
        );
        assert_eq!(
            props["requestEncoding"]["enum"],
            serde_json::json!(["Form", "JSON"])
        );
        let creds = &props["credentialsSecretRef"]["properties"];
        assert_eq!(creds["clientIdKey"]["default"], "client_id");
        assert_eq!(creds["clientSecretKey"]["default"], "client_secret");
        assert_eq!(creds["privateKeyKey"]["default"], "tls.key");
        assert_eq!(creds["certificateKey"]["default"], "tls.crt");
    }

    #[test]
    fn the_rules_bounds_and_other_defaults_are_in_the_schema() {
        let crd = crd_json();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let props = &spec["properties"];
        // credentialsSecretRef is required unless ServiceAccountToken (a CEL rule, below), so
        // the schema itself requires nothing.
        assert!(spec["required"].is_null(), "{}", spec["required"]);
        let rules: Vec<&str> = spec["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        assert!(
            rules
                .iter()
                .any(|r| r.ends_with("|| has(self.credentialsSecretRef)")),
            "{rules:?}"
        );
        let assertion = &props["clientAssertion"]["properties"];
        assert_eq!(assertion["lifetime"]["default"], DEFAULT_ASSERTION_LIFETIME);
        assert_eq!(
            assertion["algorithm"]["enum"],
            serde_json::json!([
                "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
                "HS256", "HS384", "HS512"
            ])
        );
        let sa = &props["serviceAccountToken"];
        assert_eq!(
            sa["required"],
            serde_json::json!(["audience", "serviceAccountName"])
        );
        let seconds = &sa["properties"]["expirationSeconds"];
        assert_eq!(seconds["default"], DEFAULT_EXPIRATION_SECONDS);
        assert_eq!(seconds["minimum"].as_f64(), Some(600.0));
        assert_eq!(seconds["maximum"].as_f64(), Some(3600.0));
        let refresh = &props["refresh"]["properties"];
        assert_eq!(refresh["renewBeforePercentage"]["default"], 33);
        assert_eq!(
            refresh["renewBeforePercentage"]["minimum"].as_f64(),
            Some(1.0)
        );
        assert_eq!(
            refresh["renewBeforePercentage"]["maximum"].as_f64(),
            Some(90.0)
        );
        assert_eq!(props["extraParams"]["maxProperties"], MAX_MAP_ENTRIES);
        assert_eq!(
            props["extraParams"]["additionalProperties"]["maxLength"],
            MAX_VALUE_LEN
        );
        assert_eq!(refresh["defaultLifetime"]["default"], "1h");
        assert_eq!(props["target"]["properties"]["type"]["default"], "Opaque");
        let rule = spec["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap();
        for provider in PROVIDERS_WITH_TOKEN_URL {
            assert!(rule.contains(&format!("'{provider}'")), "{rule}");
        }
        assert!(rule.starts_with("has(self.tokenUrl)"));
    }

    #[test]
    fn ca_bundle_ref_defaults_to_a_config_map_key_ca_crt_in_the_same_namespace() {
        let crd = crd_json();
        let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["caBundleRef"];
        assert_eq!(props["properties"]["kind"]["default"], "ConfigMap");
        assert_eq!(
            props["properties"]["kind"]["enum"],
            serde_json::json!(["ConfigMap", "Secret"])
        );
        assert_eq!(props["properties"]["key"]["default"], DEFAULT_CA_BUNDLE_KEY);
        assert_eq!(props["required"], serde_json::json!(["name"]));
        assert!(
            props["x-kubernetes-validations"][0]["rule"]
                .as_str()
                .unwrap()
                .contains("namespace")
        );
        let spec: OAuthClientSpec = serde_json::from_value(serde_json::json!({
            "credentialsSecretRef": {"name": "x"},
            "caBundleRef": {"name": "corp-ca"},
        }))
        .unwrap();
        assert_eq!(
            spec.ca_bundle_ref,
            Some(CaBundleRef::config_map("corp-ca", "ca.crt"))
        );
    }

    #[test]
    fn conditions_are_a_list_map_keyed_by_type() {
        let crd = crd_json();
        let status =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
        let conditions = &status["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
    }

    #[test]
    fn the_contract_example_deserialises_with_defaults() {
        let yaml = r#"
apiVersion: oauth.token-operator.dev/v1alpha1
kind: OAuthClient
metadata:
  name: streamhub
  namespace: telemetry
spec:
  provider: microboxlabs
  credentialsSecretRef:
    name: streamhub-credentials
  audience: https://iot.streamhub.cl/v1/asset/track
"#;
        let oac: OAuthClient = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(oac.spec.provider, Provider::Microboxlabs);
        let reference = oac.spec.credentials_secret_ref.as_ref().unwrap();
        assert_eq!(reference.client_id_key, "client_id");
        assert_eq!(reference.client_secret_key, "client_secret");
        assert_eq!(
            oac.spec.audience.as_deref(),
            Some("https://iot.streamhub.cl/v1/asset/track")
        );
        let empty: OAuthClientSpec =
            serde_json::from_value(serde_json::json!({"credentialsSecretRef": {"name": "x"}}))
                .unwrap();
        assert_eq!(empty.provider, Provider::Generic);
    }

    #[test]
    fn crd_yaml_is_one_yaml_document() {
        let yaml = crd_yaml();
        assert!(yaml.starts_with("---\napiVersion: apiextensions.k8s.io/v1\n"));
        let back: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back["kind"], "CustomResourceDefinition");
    }
}
