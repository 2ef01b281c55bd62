//! A strict RFC 8693 token exchange endpoint on 127.0.0.1 (`POST /v1/token`, as Google's
//! Security Token Service serves it), independent of the operator's code:
//!
//! * a form body; `grant_type` the token-exchange URN (else `unsupported_grant_type`);
//!   `subject_token` and `subject_token_type` present exactly once, the type the one this
//!   endpoint accepts (else `invalid_request`); `audience` when it is required;
//!   `requested_token_type`, `scope` and each `resource` recorded as sent;
//! * client authentication: a public endpoint refuses any client credential (a Basic header,
//!   `client_secret`, `client_assertion`) with `invalid_client`; a confidential one requires
//!   its Basic header;
//! * the subject token: one of the tokens it was told are valid (tokens another endpoint issued,
//!   a token in a Secret), or a Kubernetes ServiceAccount token whose ES256 signature verifies
//!   with the API server's key and whose `iss`, `sub`, `aud` and `exp` are right (else
//!   `invalid_grant`);
//! * the answer: a fresh access token with `issued_token_type`, `token_type` (`Bearer`, or
//!   `N_A` when told) and `expires_in`. It can also be told to echo the subject token back in an
//!   error, as a hostile endpoint would.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::assertions::{VerifyingKey, verify_signature};

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// How the endpoint authenticates clients.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// A public endpoint: no client credential at all.
    Public,
    /// `Authorization: Basic` with this id and secret (form-urlencoded, RFC 6749).
    Basic(String, String),
}

/// Which subject tokens are valid.
#[derive(Clone)]
pub enum Subjects {
    /// Exactly these.
    Known(Vec<String>),
    /// Those this returns when asked (the tokens another endpoint has issued so far).
    IssuedBy(Arc<dyn Fn() -> Vec<String> + Send + Sync>),
    /// ServiceAccount tokens of `issuer` signed with `key`, for `audience`, of `subject`
    /// (`system:serviceaccount:NS:NAME`).
    ServiceAccount {
        issuer: String,
        key: VerifyingKey,
        audience: String,
        subject: String,
    },
}

/// What the endpoint accepts.
#[derive(Clone)]
pub struct Policy {
    pub client: ClientAuth,
    pub subject_token_type: String,
    /// `audience` must be this, when set.
    pub audience: Option<String>,
    pub subjects: Subjects,
}

struct Inner {
    policy: Mutex<Policy>,
    requests: Mutex<Vec<Vec<(String, String)>>>,
    issued: Mutex<Vec<String>>,
    serial: AtomicUsize,
    echo: AtomicBool,
    echo_as_type: AtomicBool,
    not_applicable: AtomicBool,
}

/// The endpoint.
pub struct StsServer {
    inner: Arc<Inner>,
    url: String,
}

impl StsServer {
    pub async fn start(policy: Policy) -> Self {
        let inner = Arc::new(Inner {
            policy: Mutex::new(policy),
            requests: Mutex::default(),
            issued: Mutex::default(),
            serial: AtomicUsize::new(0),
            echo: AtomicBool::new(false),
            echo_as_type: AtomicBool::new(false),
            not_applicable: AtomicBool::new(false),
        });
        let app = axum::Router::new()
            .route("/v1/token", axum::routing::post(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        StsServer {
            inner,
            url: format!("http://{addr}/v1/token"),
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every request's form body, in order.
    pub fn requests(&self) -> Vec<Vec<(String, String)>> {
        self.inner.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.inner.requests.lock().unwrap().len()
    }

    /// The access tokens it issued.
    pub fn issued(&self) -> Vec<String> {
        self.inner.issued.lock().unwrap().clone()
    }

    /// Replaces the valid subject tokens.
    pub fn accept(&self, subjects: Subjects) {
        self.inner.policy.lock().unwrap().subjects = subjects;
    }

    /// Answers with an error that echoes the subject token (and the whole body).
    pub fn echo_subject(&self, on: bool) {
        self.inner.echo.store(on, Ordering::SeqCst);
    }

    /// Answers 200 with the subject token as `issued_token_type`.
    pub fn echo_subject_as_issued_type(&self, on: bool) {
        self.inner.echo_as_type.store(on, Ordering::SeqCst);
    }

    /// Answers `token_type: N_A`.
    pub fn not_applicable(&self, on: bool) {
        self.inner.not_applicable.store(on, Ordering::SeqCst);
    }
}

/// The one value of `name` in `form` (`Err`: missing or repeated).
pub fn one<'f>(form: &'f [(String, String)], name: &str) -> Result<&'f str, String> {
    let mut values = form.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
    match (values.next(), values.next()) {
        (Some(v), None) if !v.is_empty() => Ok(v),
        (Some(_), Some(_)) => Err(format!("{name} is repeated")),
        _ => Err(format!("{name} is required")),
    }
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"error": code, "error_description": description}).to_string(),
    )
        .into_response()
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    inner.requests.lock().unwrap().push(form.clone());
    if let Ok(subject) = one(&form, "subject_token") {
        super::harness::seen_secret(subject);
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be form-encoded",
        );
    }
    if inner.echo.load(Ordering::SeqCst) {
        let subject = one(&form, "subject_token").unwrap_or("");
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            &format!(
                "subject_token {subject} was rejected; request was {}",
                String::from_utf8_lossy(&body)
            ),
        );
    }
    let policy = inner.policy.lock().unwrap().clone();
    if one(&form, "grant_type") != Ok(TOKEN_EXCHANGE) {
        return error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be urn:ietf:params:oauth:grant-type:token-exchange",
        );
    }
    let basic = headers.get("authorization").is_some();
    match &policy.client {
        ClientAuth::Public => {
            let sent = basic
                || form.iter().any(|(k, _)| {
                    matches!(
                        k.as_str(),
                        "client_secret" | "client_assertion" | "client_assertion_type"
                    )
                });
            if sent {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "this endpoint takes no client credentials",
                );
            }
        }
        ClientAuth::Basic(id, secret) => {
            let expected = format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!(
                        "{}:{}",
                        form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>(),
                        form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()
                    )
                )
            );
            let given = headers.get("authorization").and_then(|v| v.to_str().ok());
            if given != Some(expected.as_str()) || form.iter().any(|(k, _)| k == "client_secret") {
                return error(StatusCode::UNAUTHORIZED, "invalid_client", "bad client");
            }
        }
    }
    let (subject, subject_type) = match (
        one(&form, "subject_token"),
        one(&form, "subject_token_type"),
    ) {
        (Ok(s), Ok(t)) => (s, t),
        (Err(e), _) | (_, Err(e)) => {
            return error(StatusCode::BAD_REQUEST, "invalid_request", &e);
        }
    };
    if subject_type != policy.subject_token_type {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("subject_token_type must be {}", policy.subject_token_type),
        );
    }
    if let Some(audience) = &policy.audience
        && one(&form, "audience") != Ok(audience.as_str())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "audience is missing or wrong",
        );
    }
    if let Err(why) = check_subject(&policy.subjects, subject) {
        return error(StatusCode::BAD_REQUEST, "invalid_grant", &why);
    }
    let n = inner.serial.fetch_add(1, Ordering::SeqCst);
    let token = format!("sts-token-{n}-{:016x}", rand::random::<u64>());
    inner.issued.lock().unwrap().push(token.clone());
    let token_type = if inner.not_applicable.load(Ordering::SeqCst) {
        "N_A"
    } else {
        "Bearer"
    };
    let requested = if inner.echo_as_type.load(Ordering::SeqCst) {
        subject
    } else {
        one(&form, "requested_token_type").unwrap_or(ACCESS_TOKEN_TYPE)
    };
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        json!({
            "access_token": token,
            "issued_token_type": requested,
            "token_type": token_type,
            "expires_in": 3600,
        })
        .to_string(),
    )
        .into_response()
}

fn check_subject(subjects: &Subjects, token: &str) -> Result<(), String> {
    match subjects {
        Subjects::Known(valid) => valid
            .iter()
            .any(|v| v == token)
            .then_some(())
            .ok_or_else(|| "the subject token is not valid".to_owned()),
        Subjects::IssuedBy(issued) => issued()
            .iter()
            .any(|v| v == token)
            .then_some(())
            .ok_or_else(|| "the subject token is not valid".to_owned()),
        Subjects::ServiceAccount {
            issuer,
            key,
            audience,
            subject,
        } => {
            let claims: Value = verify_signature(token, key)?;
            if claims["iss"] != issuer.as_str() {
                return Err("iss is not the trusted issuer".into());
            }
            if claims["sub"] != subject.as_str() {
                return Err("sub is not the trusted ServiceAccount".into());
            }
            let aud_ok = match &claims["aud"] {
                Value::String(a) => a == audience,
                Value::Array(list) => list.iter().any(|a| a == audience.as_str()),
                _ => false,
            };
            if !aud_ok {
                return Err("aud is not this provider".into());
            }
            let exp = claims["exp"].as_i64().ok_or("exp is required")?;
            if exp <= jiff::Timestamp::now().as_second() {
                return Err("the subject token expired".into());
            }
            Ok(())
        }
    }
}
