//! Building the token request (RFC 6749 section 4.4.2), as pure code.
//!
//! The credentials travel exactly once: in the Basic header (ClientSecretBasic) or in the body
//! (ClientSecretPost), never both. With ClientSecretBasic a preset may also put `client_id`
//! alone in the body (iotspot's documented request does). The assertion methods
//! (ClientSecretJwt, PrivateKeyJwt, ServiceAccountToken) send `client_id`,
//! `client_assertion_type` and `client_assertion` (RFC 7523 section 2.2) and no secret;
//! TlsClientAuth sends `client_id` alone (RFC 8705 section 2: the certificate is in the
//! handshake).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue};
use url::Url;

use crate::api::crd::{BasicAuthEncoding, ClientAuthMethod, RequestEncoding};
use crate::api::reason::{Failure, Reason};
use crate::base::{Scrubber, Sensitive};
use crate::oauth::assertion::JWT_BEARER;
use crate::oauth::credentials::Proof;
use crate::spec::ExchangeSettings;
use crate::spec::token_exchange::TOKEN_EXCHANGE_GRANT;

pub use crate::oauth::credentials::Credentials;

/// A ready-to-send token request. Its `Debug` hides the Authorization header and the body.
#[derive(Clone)]
pub struct TokenRequest {
    /// Where to POST.
    pub url: Url,
    /// Headers, Authorization marked sensitive.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The encoded body (it may hold the client secret).
    pub body: Sensitive<Vec<u8>>,
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<_> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("TokenRequest")
            .field("url", &self.url.as_str())
            .field("header_names", &headers)
            .field("body", &self.body)
            .finish()
    }
}

impl TokenRequest {
    /// The value of a header, if present (for tests and diagnostics).
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// The `Authorization: Basic ...` value for the credentials.
///
/// `UrlEncoded` applies `application/x-www-form-urlencoded` to id and secret before base64, as
/// RFC 6749 section 2.3.1 requires, so `/ + = : %`, spaces and non-ASCII survive. `Raw` is
/// `base64(id:secret)` for servers that do not decode.
pub fn basic_authorization(credentials: &Credentials, encoding: BasicAuthEncoding) -> Sensitive {
    let secret = credentials
        .client_secret()
        .map(Sensitive::expose)
        .map_or("", String::as_str);
    let pair = match encoding {
        BasicAuthEncoding::UrlEncoded => format!(
            "{}:{}",
            form_urlencoded::byte_serialize(credentials.client_id.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()
        ),
        BasicAuthEncoding::Raw => format!("{}:{}", credentials.client_id, secret),
    };
    Sensitive::new(format!("Basic {}", BASE64.encode(pair)))
}

impl Scrubber<'static> {
    /// A scrubber for the secret part of `credentials`: the client secret, the Basic header
    /// values built from it (both encodings, padded and not) and the base64 of the secret alone;
    /// or the private key's PEM text and DER base64; or a ready assertion and its signature. The
    /// client_id alone is not a secret and is left in messages.
    pub fn for_credentials(credentials: &Credentials) -> Self {
        match &credentials.proof {
            Proof::Secret(secret) => {
                let basic = [BasicAuthEncoding::UrlEncoded, BasicAuthEncoding::Raw]
                    .into_iter()
                    .flat_map(|encoding| {
                        let header = basic_authorization(credentials, encoding);
                        let value = header.expose();
                        let encoded = value.strip_prefix("Basic ").unwrap_or(value).to_owned();
                        let unpadded = encoded.trim_end_matches('=').to_owned();
                        [encoded, unpadded]
                    })
                    .collect::<Vec<_>>();
                Scrubber::for_secret(secret.expose(), basic)
            }
            Proof::Key(identity) => Scrubber::for_values(identity.secret_forms().expose().clone()),
            Proof::Assertion(jwt) => Scrubber::for_jwt(jwt.expose()),
            Proof::ServiceAccount(_) | Proof::None => Scrubber::none(),
        }
    }

    /// [`Scrubber::for_credentials`], plus the subject token of a token exchange (a JWT, or any
    /// other token, in every encoding the scrubber knows).
    pub fn for_request(credentials: &Credentials) -> Self {
        let own = Scrubber::for_credentials(credentials);
        match credentials.subject_token() {
            Some(token) => own.with_subject_token(token.expose()),
            None => own,
        }
    }
}

/// How the request carries the client's authentication.
#[derive(Clone, Copy)]
enum Auth<'a> {
    /// The Basic header (ClientSecretBasic).
    Basic,
    /// client_id and client_secret in the body (ClientSecretPost).
    Post(&'a str),
    /// client_id and a client assertion in the body.
    Assertion(&'a str),
    /// client_id alone in the body (TlsClientAuth).
    ClientId,
    /// Nothing but the client_id, when there is one (None: a public client).
    Public,
}

impl<'a> Auth<'a> {
    /// What the method sends, given the credentials and, for the assertion methods, the
    /// assertion built for this request.
    fn of(
        method: ClientAuthMethod,
        credentials: &'a Credentials,
        assertion: Option<&'a Sensitive<String>>,
    ) -> Result<Self, Failure> {
        use ClientAuthMethod::*;
        let assertion = assertion
            .map(|a| a.expose().as_str())
            .or(match &credentials.proof {
                Proof::Assertion(jwt) => Some(jwt.expose().as_str()),
                _ => Option::None,
            });
        Ok(match (method, &credentials.proof, assertion) {
            (ClientSecretBasic, Proof::Secret(_), _) => Auth::Basic,
            (ClientSecretPost, Proof::Secret(secret), _) => Auth::Post(secret.expose()),
            (ClientSecretJwt | PrivateKeyJwt | ServiceAccountToken, _, Some(jwt)) => {
                Auth::Assertion(jwt)
            }
            (TlsClientAuth, Proof::Key(_), _) => Auth::ClientId,
            (None, Proof::None, _) => Auth::Public,
            _ => {
                return Err(Failure::invalid_credentials(format!(
                    "the credentials do not fit clientAuthMethod {}",
                    method.as_str()
                )));
            }
        })
    }
}

/// Builds the request for the merged settings and the credentials (the secret methods and
/// TlsClientAuth, or a ready assertion in the credentials).
pub fn build(
    settings: &ExchangeSettings,
    credentials: &Credentials,
) -> Result<TokenRequest, Failure> {
    build_with(settings, credentials, None)
}

/// Builds the request, with the client assertion built for it (ClientSecretJwt,
/// PrivateKeyJwt).
pub fn build_with(
    settings: &ExchangeSettings,
    credentials: &Credentials,
    assertion: Option<&Sensitive<String>>,
) -> Result<TokenRequest, Failure> {
    check(settings, credentials)?;
    let auth = Auth::of(settings.client_auth_method, credentials, assertion)?;
    let basic = matches!(auth, Auth::Basic);
    let scope = settings.scopes.join(" ");
    let params = params(settings, credentials, auth, &scope)?;
    let (content_type, body) = encode(settings.request_encoding, &params);
    let mut headers = vec![
        (CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (ACCEPT, HeaderValue::from_static("application/json")),
    ];
    if basic {
        let auth = basic_authorization(credentials, settings.basic_auth_encoding);
        let mut value = HeaderValue::from_str(auth.expose())
            .expect("Basic followed by base64 is a valid header value");
        value.set_sensitive(true);
        headers.push((AUTHORIZATION, value));
    }
    for (name, value) in &settings.extra_headers {
        // An extra header replaces a default of the same name (Accept, say).
        headers.retain(|(existing, _)| existing != name);
        headers.push((name.clone(), value.clone()));
    }
    Ok(TokenRequest {
        url: settings.token_url.clone(),
        headers,
        body: Sensitive::new(body),
    })
}

/// What the credentials must be for the settings to carry them.
fn check(settings: &ExchangeSettings, credentials: &Credentials) -> Result<(), Failure> {
    if credentials.client_id.is_empty() && settings.client_auth_method != ClientAuthMethod::None {
        return Err(Failure::new(
            crate::api::reason::Reason::CredentialsNotFound,
            "client_id is empty",
        ));
    }
    let raw_basic = settings.client_auth_method == ClientAuthMethod::ClientSecretBasic
        && settings.basic_auth_encoding == BasicAuthEncoding::Raw;
    if raw_basic && credentials.client_id.contains(':') {
        return Err(Failure::invalid_spec(
            "client_id contains ':', which basicAuthEncoding Raw cannot carry; use UrlEncoded",
        ));
    }
    Ok(())
}

/// The body parameters, in order: grant_type, the credentials the method puts in the body,
/// for a token exchange the subject token, its type and the requested type, audience, scope,
/// the resources, the extra parameters.
fn params<'a>(
    settings: &'a ExchangeSettings,
    credentials: &'a Credentials,
    auth: Auth<'a>,
    scope: &'a str,
) -> Result<Vec<(&'a str, &'a str)>, Failure> {
    let grant = match settings.token_exchange {
        Some(_) => TOKEN_EXCHANGE_GRANT,
        None => "client_credentials",
    };
    let mut params: Vec<(&str, &str)> = vec![("grant_type", grant)];
    let id_in_body = match auth {
        Auth::Basic => settings.client_id_in_body,
        Auth::Public => !credentials.client_id.is_empty(),
        _ => true,
    };
    if id_in_body {
        params.push(("client_id", &credentials.client_id));
    }
    match auth {
        Auth::Post(secret) => params.push(("client_secret", secret)),
        Auth::Assertion(jwt) => {
            params.push(("client_assertion_type", JWT_BEARER));
            params.push(("client_assertion", jwt));
        }
        Auth::Basic | Auth::ClientId | Auth::Public => {}
    }
    if let Some(exchange) = &settings.token_exchange {
        let Some(subject) = credentials.subject_token() else {
            return Err(Failure::new(
                Reason::CredentialsNotFound,
                format!(
                    "the subject token ({}) is not available",
                    exchange.subject.describe()
                ),
            ));
        };
        params.push(("subject_token", subject.expose()));
        params.push(("subject_token_type", &exchange.subject_token_type));
        if let Some(requested) = &exchange.requested_token_type {
            params.push(("requested_token_type", requested));
        }
    }
    if let Some(audience) = &settings.audience {
        params.push(("audience", audience));
    }
    if !scope.is_empty() {
        params.push(("scope", scope));
    }
    for resource in settings.token_exchange.iter().flat_map(|e| &e.resources) {
        params.push(("resource", resource));
    }
    for (name, value) in &settings.extra_params {
        params.push((name, value));
    }
    Ok(params)
}

/// The body in the request encoding, and its content type.
fn encode(encoding: RequestEncoding, params: &[(&str, &str)]) -> (&'static str, Vec<u8>) {
    match encoding {
        RequestEncoding::Form => {
            let mut form = form_urlencoded::Serializer::new(String::new());
            for (name, value) in params {
                form.append_pair(name, value);
            }
            (
                "application/x-www-form-urlencoded",
                form.finish().into_bytes(),
            )
        }
        RequestEncoding::Json => {
            // A parameter given more than once (`resource`) becomes an array.
            let mut object = serde_json::Map::new();
            for (name, value) in params {
                match object.get_mut(*name) {
                    None => {
                        object.insert((*name).to_owned(), serde_json::Value::from(*value));
                    }
                    Some(serde_json::Value::Array(values)) => values.push((*value).into()),
                    Some(first) => *first = serde_json::json!([first.take(), value]),
                }
            }
            let body = serde_json::to_vec(&object).expect("a string map always serialises");
            ("application/json", body)
        }
    }
}

/// The credential scrubber attacked with a secret in every encoding an endpoint might echo.
#[cfg(test)]
pub(crate) mod scrubbing_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::crd::OAuthClientSpec;
    use crate::oauth::credentials::Subject;
    use crate::spec::{ClientSettings, Policy};

    const AWKWARD_ID: &str = "1PpG/Q 1";
    const AWKWARD_SECRET: &str = "z/tZ9VwFZqApmIQ+ZH1I5pLk/uB4ud:X2/8bL+wfFTt1rFw=";

    fn creds(id: &str, secret: &str) -> Credentials {
        Credentials::with_secret(id, secret)
    }

    fn settings(json: serde_json::Value) -> ExchangeSettings {
        let mut spec = serde_json::json!({"credentialsSecretRef": {"name": "c"}});
        spec.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        let spec: OAuthClientSpec = serde_json::from_value(spec).unwrap();
        ClientSettings::resolve(&spec, &Policy::default())
            .unwrap()
            .exchange
    }

    fn body_text(req: &TokenRequest) -> String {
        String::from_utf8(req.body.expose().clone()).unwrap()
    }

    fn form(req: &TokenRequest) -> Vec<(String, String)> {
        form_urlencoded::parse(req.body.expose())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn basic_encoding_known_vector_both_modes() {
        let c = creds(AWKWARD_ID, AWKWARD_SECRET);
        assert_eq!(
            basic_authorization(&c, BasicAuthEncoding::UrlEncoded).expose(),
            "Basic MVBwRyUyRlErMTp6JTJGdFo5VndGWnFBcG1JUSUyQlpIMUk1cExrJTJGdUI0dWQlM0FYMiUyRjhiTCUyQndmRlR0MXJGdyUzRA=="
        );
        assert_eq!(
            basic_authorization(&c, BasicAuthEncoding::Raw).expose(),
            "Basic MVBwRy9RIDE6ei90WjlWd0ZacUFwbUlRK1pIMUk1cExrL3VCNHVkOlgyLzhiTCt3ZkZUdDFyRnc9"
        );
    }

    #[test]
    fn basic_encoding_round_trips_awkward_characters() {
        for (id, secret) in [
            ("plain", "plain"),
            ("a:b", "c:d"),
            ("100%", "%41%"),
            ("sp ace", "+plus+"),
            ("ünïcødé", "秘密/=&"),
            ("a&b=c", "x\ty"),
        ] {
            let header = basic_authorization(&creds(id, secret), BasicAuthEncoding::UrlEncoded);
            let decoded = BASE64
                .decode(header.expose().strip_prefix("Basic ").unwrap())
                .unwrap();
            let decoded = String::from_utf8(decoded).unwrap();
            // The form-encoded id cannot contain ':', so the first ':' splits.
            let (enc_id, enc_secret) = decoded.split_once(':').unwrap();
            let unescape = |s: &str| {
                form_urlencoded::parse(format!("v={s}").as_bytes())
                    .next()
                    .unwrap()
                    .1
                    .into_owned()
            };
            assert_eq!(
                (unescape(enc_id).as_str(), unescape(enc_secret).as_str()),
                (id, secret)
            );
        }
        // Only the awkward characters differ between the modes.
        let plain = creds("abc123", "def456");
        assert_eq!(
            basic_authorization(&plain, BasicAuthEncoding::UrlEncoded),
            basic_authorization(&plain, BasicAuthEncoding::Raw)
        );
    }

    #[test]
    fn generic_is_basic_form_with_no_credentials_in_the_body() {
        let s = settings(serde_json::json!({
            "tokenUrl": "https://idp.example/token",
            "scopes": ["read", "write"],
            "audience": "api://x",
            "extraParams": {"resource": "https://graph"},
            "extraHeaders": {"X-Tenant": "t1", "Accept": "application/json;v=2"},
        }));
        let req = build(&s, &creds("my id", "s3cr3t/+")).unwrap();
        assert_eq!(req.url.as_str(), "https://idp.example/token");
        assert_eq!(
            req.header("content-type").unwrap(),
            "application/x-www-form-urlencoded"
        );
        assert_eq!(req.header("accept").unwrap(), "application/json;v=2");
        assert_eq!(req.header("x-tenant").unwrap(), "t1");
        let auth = req.header("authorization").unwrap();
        assert!(auth.is_sensitive());
        assert_eq!(
            auth.to_str().unwrap(),
            basic_authorization(&creds("my id", "s3cr3t/+"), BasicAuthEncoding::UrlEncoded)
                .expose()
        );
        assert_eq!(
            form(&req),
            [
                ("grant_type".into(), "client_credentials".into()),
                ("audience".into(), "api://x".into()),
                ("scope".into(), "read write".into()),
                ("resource".into(), "https://graph".into()),
            ]
        );
        assert!(!body_text(&req).contains("s3cr3t"));
    }

    #[test]
    fn client_secret_post_puts_credentials_in_the_body_only() {
        let s = settings(serde_json::json!({
            "tokenUrl": "https://idp.example/token",
            "clientAuthMethod": "ClientSecretPost",
        }));
        let req = build(&s, &creds("id1", "sec1")).unwrap();
        assert!(req.header("authorization").is_none());
        assert_eq!(
            form(&req),
            [
                ("grant_type".into(), "client_credentials".into()),
                ("client_id".into(), "id1".into()),
                ("client_secret".into(), "sec1".into()),
            ]
        );
    }

    #[test]
    fn microboxlabs_preset_request() {
        let s = settings(serde_json::json!({
            "provider": "microboxlabs",
            "audience": "https://iot.streamhub.cl/v1/asset/track",
        }));
        let req = build(&s, &creds("YOUR_CLIENT_ID", "YOUR_CLIENT_SECRET")).unwrap();
        assert_eq!(
            req.url.as_str(),
            "https://api.microboxlabs.com/api/v1/login"
        );
        assert_eq!(req.header("content-type").unwrap(), "application/json");
        assert!(req.header("authorization").is_none());
        let body: serde_json::Value = serde_json::from_slice(req.body.expose()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "client_id": "YOUR_CLIENT_ID",
                "client_secret": "YOUR_CLIENT_SECRET",
                "audience": "https://iot.streamhub.cl/v1/asset/track",
                "grant_type": "client_credentials"
            })
        );
    }

    #[test]
    fn microbilt_presets_request() {
        for (provider, url) in [
            (
                "microbilt",
                "https://api.microbilt.com/OAuth/GetAccessToken",
            ),
            (
                "microbilt-sandbox",
                "https://apitest.microbilt.com/OAuth/GetAccessToken",
            ),
        ] {
            let s = settings(serde_json::json!({"provider": provider}));
            let req = build(&s, &creds("<CLIENT_ID>", "<CLIENT_SECRET>")).unwrap();
            assert_eq!(req.url.as_str(), url);
            assert_eq!(req.header("content-type").unwrap(), "application/json");
            assert!(req.header("authorization").is_none());
            let body: serde_json::Value = serde_json::from_slice(req.body.expose()).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"client_id": "<CLIENT_ID>", "client_secret": "<CLIENT_SECRET>", "grant_type": "client_credentials"})
            );
        }
    }

    #[test]
    fn iotspot_preset_request() {
        let s = settings(serde_json::json!({"provider": "iotspot"}));
        let req = build(&s, &creds("6u13qvmiisk8of304cfdfubq3s", "sec/ret+=")).unwrap();
        assert_eq!(
            req.url.as_str(),
            "https://iotspot-m2mauth-prod.auth.eu-central-1.amazoncognito.com/oauth2/token"
        );
        assert_eq!(
            req.header("content-type").unwrap(),
            "application/x-www-form-urlencoded"
        );
        assert_eq!(
            req.header("authorization").unwrap().to_str().unwrap(),
            format!(
                "Basic {}",
                BASE64.encode("6u13qvmiisk8of304cfdfubq3s:sec/ret+=")
            )
        );
        assert_eq!(
            form(&req),
            [
                ("grant_type".into(), "client_credentials".into()),
                ("client_id".into(), "6u13qvmiisk8of304cfdfubq3s".into()),
                ("scope".into(), "iotspot/openapi".into()),
            ]
        );
        assert!(!body_text(&req).contains("sec"));
    }

    #[test]
    fn every_other_preset_builds_its_documented_shape() {
        // (provider, expects Basic header, raw Basic, JSON body)
        let cases = [
            ("generic", true, false, false),
            ("aws-cognito", true, true, false),
            ("auth0", false, false, true),
            ("okta", true, false, false),
            ("entra-id", false, false, false),
            ("keycloak", true, false, false),
        ];
        let c = creds("id/1", "se:cret");
        for (provider, basic, raw, json) in cases {
            let s = settings(
                serde_json::json!({"provider": provider, "tokenUrl": "https://idp/t", "audience": "https://api"}),
            );
            let req = build(&s, &c).unwrap();
            let auth = req
                .header("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(auth.is_some(), basic, "{provider}");
            if basic {
                let mode = if raw {
                    BasicAuthEncoding::Raw
                } else {
                    BasicAuthEncoding::UrlEncoded
                };
                assert_eq!(
                    auth.unwrap(),
                    basic_authorization(&c, mode).expose().as_str(),
                    "{provider}"
                );
            }
            let ct = req.header("content-type").unwrap().to_str().unwrap();
            assert_eq!(ct == "application/json", json, "{provider}");
            let text = body_text(&req);
            assert_eq!(
                text.contains("se%3Acret") || text.contains("se:cret"),
                !basic,
                "{provider}: {text}"
            );
        }
    }

    #[test]
    fn raw_basic_refuses_a_colon_in_the_id() {
        let s =
            settings(serde_json::json!({"provider": "aws-cognito", "tokenUrl": "https://idp/t"}));
        let err = build(&s, &creds("a:b", "x")).unwrap_err();
        assert!(err.message.contains("UrlEncoded"));
    }

    #[test]
    fn assertion_methods_send_the_assertion_and_no_secret() {
        for method in ["ClientSecretJwt", "PrivateKeyJwt"] {
            let s = settings(serde_json::json!({
                "tokenUrl": "https://idp.example/token",
                "clientAuthMethod": method,
                "scopes": ["a"],
            }));
            let jwt = Sensitive::new("header.claims.signature".to_owned());
            let req = build_with(&s, &creds("id1", "sec1"), Some(&jwt)).unwrap();
            assert!(req.header("authorization").is_none(), "{method}");
            assert_eq!(
                form(&req),
                [
                    ("grant_type".into(), "client_credentials".into()),
                    ("client_id".into(), "id1".into()),
                    (
                        "client_assertion_type".into(),
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()
                    ),
                    ("client_assertion".into(), "header.claims.signature".into()),
                    ("scope".into(), "a".into()),
                ],
                "{method}"
            );
            assert!(!body_text(&req).contains("sec1"));
            // Without the assertion built for it, nothing is sent.
            let f = build(&s, &creds("id1", "sec1")).unwrap_err();
            assert_eq!(f.reason, crate::api::reason::Reason::InvalidCredentials);
        }
        // A ready assertion (ServiceAccountToken) travels the same way.
        let mut spec: OAuthClientSpec = serde_json::from_value(serde_json::json!({
            "tokenUrl": "https://idp.example/token",
            "clientAuthMethod": "ServiceAccountToken",
            "clientId": "app",
            "serviceAccountToken": {"serviceAccountName": "sa", "audience": "api://x"},
            "requestEncoding": "JSON",
        }))
        .unwrap();
        spec.credentials_secret_ref = None;
        let policy = Policy {
            allow_service_account_tokens: true,
            ..Policy::default()
        };
        let s = ClientSettings::resolve(&spec, &policy).unwrap().exchange;
        let c = Credentials {
            subject: None,
            client_id: "app".into(),
            proof: Proof::Assertion(Sensitive::new("k8s.token.sig".into())),
        };
        let req = build(&s, &c).unwrap();
        let body: serde_json::Value = serde_json::from_slice(req.body.expose()).unwrap();
        assert_eq!(body["client_assertion"], "k8s.token.sig");
        assert_eq!(body["client_id"], "app");
        assert_eq!(body["client_assertion_type"], JWT_BEARER);
    }

    #[test]
    fn tls_client_auth_sends_the_client_id_alone() {
        let s = settings(serde_json::json!({
            "tokenUrl": "https://idp.example/token",
            "clientAuthMethod": "TlsClientAuth",
        }));
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/client-auth/");
        let read = |f: &str| std::fs::read(format!("{dir}{f}")).unwrap();
        let identity = crate::oauth::identity::Identity::load(
            &read("ec-p256-sec1.pem"),
            "key tls.key",
            Some((&read("ec-p256.crt"), "key tls.crt")),
        )
        .unwrap();
        let c = Credentials {
            subject: None,
            client_id: "mtls-client".into(),
            proof: Proof::Key(std::sync::Arc::new(identity)),
        };
        let req = build(&s, &c).unwrap();
        assert!(req.header("authorization").is_none());
        assert_eq!(
            form(&req),
            [
                ("grant_type".into(), "client_credentials".into()),
                ("client_id".into(), "mtls-client".into()),
            ]
        );
    }

    #[test]
    fn debug_hides_the_secret_and_header() {
        let s = settings(
            serde_json::json!({"tokenUrl": "https://idp/t", "clientAuthMethod": "ClientSecretPost"}),
        );
        let req = build(&s, &creds("id", "very-secret-value")).unwrap();
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("very-secret-value"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
        let s = settings(serde_json::json!({"tokenUrl": "https://idp/t"}));
        let req = build(&s, &creds("id", "very-secret-value")).unwrap();
        let b64 = BASE64.encode("id:very-secret-value");
        assert!(!format!("{req:?}").contains(&b64));
    }

    fn exchange_settings(json: serde_json::Value) -> ExchangeSettings {
        let spec: OAuthClientSpec = serde_json::from_value(json).unwrap();
        ClientSettings::resolve(&spec, &Policy::default())
            .unwrap()
            .exchange
    }

    const SUBJECT: &str =
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJlLW9mLXRoZS1zdWJqZWN0";

    fn subject_secret() -> serde_json::Value {
        serde_json::json!({"secretRef": {"name": "idp", "key": "token"}})
    }

    #[test]
    fn a_public_token_exchange_sends_exactly_the_rfc_8693_parameters() {
        let s = exchange_settings(serde_json::json!({
            "provider": "gcp-sts",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k",
            "tokenExchange": {
                "subjectToken": subject_secret(),
                "requestedTokenType": "urn:ietf:params:oauth:token-type:access_token",
                "resources": ["https://a.example/", "https://b.example/"]
            },
            "extraParams": {"options": "x"}
        }));
        let c =
            Credentials::public("").with_subject(Subject::Token(Sensitive::new(SUBJECT.into())));
        let req = build(&s, &c).unwrap();
        assert!(req.header("authorization").is_none());
        assert_eq!(
            form(&req),
            [
                ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                ("subject_token", SUBJECT),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
                ("audience", "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k"),
                ("scope", "https://www.googleapis.com/auth/cloud-platform"),
                ("resource", "https://a.example/"),
                ("resource", "https://b.example/"),
                ("options", "x"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // With spec.clientId, a public client names itself, and nothing else.
        let named = Credentials::public("my-app")
            .with_subject(Subject::Token(Sensitive::new(SUBJECT.into())));
        let req = build(&s, &named).unwrap();
        let params = form(&req);
        assert!(params.contains(&("client_id".into(), "my-app".into())));
        assert!(params.iter().all(|(k, _)| !k.starts_with("client_secret") && !k.starts_with("client_assertion")));
    }

    #[test]
    fn a_confidential_token_exchange_authenticates_once_and_sends_the_subject_once() {
        let base = serde_json::json!({
            "tokenUrl": "https://sts.example/token",
            "credentialsSecretRef": {"name": "c"},
            "grantType": "TokenExchange",
            "tokenExchange": {"subjectToken": subject_secret(), "resources": ["https://a.example/", "https://b.example/"]}
        });
        let c = creds("client", "client-secret-value")
            .with_subject(Subject::Token(Sensitive::new(SUBJECT.into())));
        // Basic: the secret in the header only, the subject in the body only.
        let req = build(&exchange_settings(base.clone()), &c).unwrap();
        assert!(req.header("authorization").is_some());
        let body = body_text(&req);
        assert!(!body.contains("client-secret-value"));
        assert_eq!(body.matches("subject_token=").count(), 1);
        // Post, JSON: one object, resources as an array, the secret once.
        let mut post = base;
        post["clientAuthMethod"] = "ClientSecretPost".into();
        post["requestEncoding"] = "JSON".into();
        let req = build(&exchange_settings(post), &c).unwrap();
        assert!(req.header("authorization").is_none());
        let json: serde_json::Value = serde_json::from_slice(req.body.expose()).unwrap();
        assert_eq!(
            json["grant_type"],
            "urn:ietf:params:oauth:grant-type:token-exchange"
        );
        assert_eq!(json["client_secret"], "client-secret-value");
        assert_eq!(json["subject_token"], SUBJECT);
        assert_eq!(
            json["resource"],
            serde_json::json!(["https://a.example/", "https://b.example/"])
        );
        // The subject never stands in for the client's credential, nor the other way round.
        assert_ne!(json["client_secret"], json["subject_token"]);
    }

    #[test]
    fn a_token_exchange_without_its_subject_sends_nothing() {
        let s = exchange_settings(serde_json::json!({
            "tokenUrl": "https://sts.example/token",
            "grantType": "TokenExchange",
            "clientAuthMethod": "None",
            "tokenExchange": {"subjectToken": subject_secret()}
        }));
        let failure = build(&s, &Credentials::public("")).unwrap_err();
        assert_eq!(
            failure.reason,
            crate::api::reason::Reason::CredentialsNotFound
        );
        assert!(
            failure.message.contains("key token of Secret idp"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn the_subject_token_is_scrubbed_in_every_encoding() {
        let c =
            Credentials::public("").with_subject(Subject::Token(Sensitive::new(SUBJECT.into())));
        let scrubber = Scrubber::for_request(&c);
        let signature = SUBJECT.rsplit('.').next().unwrap();
        let form_encoded: String = form_urlencoded::byte_serialize(SUBJECT.as_bytes()).collect();
        for echoed in [
            format!("bad subject_token {SUBJECT}"),
            format!("{{\"echo\":\"{SUBJECT}\"}}"),
            format!("subject_token={form_encoded}&x=1"),
            format!("signature {signature} rejected"),
            format!("token {} seen", BASE64.encode(SUBJECT)),
            format!(
                "token {} seen",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SUBJECT)
            ),
        ] {
            let scrubbed = scrubber.scrub(&echoed).unwrap_or_default();
            assert!(!scrubbed.contains(signature), "{scrubbed}");
            assert!(
                !scrubbed.contains(&BASE64.encode(SUBJECT)[..40]),
                "{scrubbed}"
            );
        }
    }
}
