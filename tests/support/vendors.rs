//! Token-endpoint emulators on 127.0.0.1, as strict as the vendors' documents.
//!
//! * **MicroboxLabs** (`POST /api/v1/login`): JSON body with `client_id`, `client_secret`,
//!   `audience` and `grant_type: client_credentials`, all required. 400 for a missing or
//!   malformed field or a non-JSON body, 401 for wrong credentials, 403 for a wrong audience,
//!   with the documented error bodies.
//! * **Microbilt** (`POST /OAuth/GetAccessToken`): JSON body with `client_id`, `client_secret`
//!   and `grant_type`, or a form body with `grant_type` in the query string, as documented.
//!   Success is the documented body (strings for `expires_in` and `issued_at`, `BearerToken`).
//!   Errors use Apigee's OAuthV2 envelope (`ErrorCode` / `Error`), which is what the service
//!   (an Apigee proxy) returns.
//! * **iotspot** (AWS Cognito, `POST /oauth2/token`): form body, `Authorization: Basic
//!   base64(id:secret)` (raw, as documented), `client_id`, `scope=iotspot/openapi` and
//!   `grant_type=client_credentials` in the body. Errors are Cognito's (`{"error":"..."}`, 400).
//! * **Generic** (RFC 6749 section 4.4, `POST /token`): form body, client authentication by a
//!   form-urlencoded Basic header or by body parameters but never both, 401 with
//!   `WWW-Authenticate` for bad credentials; or, for the clients registered with
//!   [`TokenServer::expect_assertions`], by an RFC 7523 client assertion checked strictly
//!   ([`super::assertions`]): private_key_jwt, client_secret_jwt, and workload identity
//!   federation with a ServiceAccount token.
//!
//! Every emulator records the requests it got, can be scripted to answer the next requests
//! with canned responses (status, headers, body, delay), and can issue the documents' exact
//! token or a fresh one per request.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

pub const MICROBOXLABS_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9...";
pub const MICROBILT_TOKEN: &str = "kE8WyfAAgaoPPisGakxRw9aEL8eH";
pub const IOTSPOT_TOKEN: &str = "eyJraWQiOiJGZHFMUGJma3hoalNMbUdiRFZVU3BRXC94QytXYmh0SnhudXQwZGRPQ0RFdz0iLCJhbGciOiJSUzI1NiJ9.eyJzdWIiOiI2dTEzcXZtaWlzazhvZjMwNGNmZGZ1YnEzcyIsInRva2VuX3VzZSI6ImFjY2VzcyIsInNjb3BlIjoiaW90c3BvdFwvb3V0bG9vayBpb3RzcG90XC9wcm9kdWN0aW9uIiwiYXV0aF90aW1lIjoxNjQ2MzM1MzcxLCJpc3MiOiJodHRwczpcL1wvY29nbml0by1pZHAuZXUtY2VudHJhbC0xLmFtYXpvbmF3cy5jb21cL2V1LWNlbnRyYWwtMV9PaUVJWHFDUkciLCJleHAiOjE2NDYzMzg5NzEsImlhdCI6MTY0NjMzNTM3MSwidmVyc2lvbiI6MiwianRpIjoiM2ZiZGVlYjItYTBhNi00M2Q2LWE4MDItYjRlNTljMjk4ZWQ0IiwiY2xpZW50X2lkIjoiNnUxM3F2bWlpc2s4b2YzMDRjZmRmdWJxM3MifQ.f_8vwwlGU5PyivmfVjW0bYAyt7J4QJJx1dOXbfAVYCZ_Sa5eTiWXIbRxqb2WG0K63BvnOR3__wJj2iEQAE8ibkl712brlrPECwA5PwAjmKFa-sNISg4acaR4MmpKTOfpGqEVAejsh8O7s7XL8u-mn_0G6kx2S6lmB72D7iPVnUu4bgwD6vdmKYqR9djAj5eGSxYIAKKYYidcyMWZ58Fu5Un04eLuDQlHla5H6DiNoChm_UM9waiohXuWaknGF4CbRniAAUcZ5Xd6fBRkxdtpp0zRXy4AyAbekmKym05ypieNmYk3W7xeRTFvOEBQCbrU6AYacK6Iw4QQwKB032Q-gg";

/// The documented audience of the MicroboxLabs examples.
pub const STREAMHUB_AUDIENCE: &str = "https://iot.streamhub.cl/v1/asset/track";

/// Which vendor to emulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Microboxlabs,
    Microbilt,
    Iotspot,
    Generic,
}

impl Vendor {
    /// The token path of the vendor.
    pub fn path(self) -> &'static str {
        match self {
            Vendor::Microboxlabs => "/api/v1/login",
            Vendor::Microbilt => "/OAuth/GetAccessToken",
            Vendor::Iotspot => "/oauth2/token",
            Vendor::Generic => "/token",
        }
    }
}

/// Which token values to hand out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens {
    /// The document's exact success body, every time.
    Documented,
    /// The documented body shape with a fresh token each time.
    Unique,
}

/// A canned answer for the next request.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Canned {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Canned {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request as the emulator received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

struct Inner {
    vendor: Vendor,
    tokens: Tokens,
    client_id: Mutex<String>,
    client_secret: Mutex<String>,
    audience: String,
    expires_in: Mutex<Option<Value>>,
    canned: Mutex<VecDeque<Canned>>,
    requests: Mutex<Vec<Recorded>>,
    issued: Mutex<Vec<String>>,
    serial: AtomicUsize,
    delay_ms: std::sync::atomic::AtomicU64,
    /// Requests being answered now.
    in_flight: AtomicUsize,
    keep_records: std::sync::atomic::AtomicBool,
    chaos: Mutex<Option<Chaos>>,
    chaos_faults: AtomicUsize,
    assertions: Mutex<Vec<super::assertions::Expectation>>,
    verifier: super::assertions::Verifier,
}

/// Random misbehaviour of a token endpoint (the chaos soak): the share of requests answered
/// 429 with `Retry-After`, 503 with an HTML page, or slower than `slow`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Chaos {
    pub rate_429: f64,
    pub rate_503: f64,
    pub rate_slow: f64,
    pub slow: Duration,
}

/// A running emulator.
#[derive(Clone)]
pub struct TokenServer {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl TokenServer {
    /// Starts an emulator for `vendor` accepting `client_id` / `client_secret`.
    pub async fn start(
        vendor: Vendor,
        client_id: &str,
        client_secret: &str,
        tokens: Tokens,
    ) -> Self {
        let inner = Arc::new(Inner {
            vendor,
            tokens,
            client_id: Mutex::new(client_id.into()),
            client_secret: Mutex::new(client_secret.into()),
            audience: STREAMHUB_AUDIENCE.into(),
            expires_in: Mutex::new(None),
            canned: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            issued: Mutex::new(Vec::new()),
            serial: AtomicUsize::new(0),
            delay_ms: std::sync::atomic::AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            keep_records: std::sync::atomic::AtomicBool::new(true),
            chaos: Mutex::new(None),
            chaos_faults: AtomicUsize::new(0),
            assertions: Mutex::default(),
            verifier: Default::default(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        TokenServer { addr, inner }
    }

    /// The token URL.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.inner.vendor.path())
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// The shortest time between two consecutive requests (None with fewer than two).
    pub fn shortest_gap(&self) -> Option<Duration> {
        let requests = self.inner.requests.lock().unwrap();
        requests
            .windows(2)
            .map(|pair| pair[1].at.duration_since(pair[0].at))
            .min()
    }

    /// Number of requests received so far.
    pub fn count(&self) -> usize {
        self.inner.requests.lock().unwrap().len()
    }

    /// Every token handed out.
    pub fn issued(&self) -> Vec<String> {
        self.inner.issued.lock().unwrap().clone()
    }

    /// Answers the next request with `canned` (queued after earlier canned answers).
    pub fn push(&self, canned: Canned) {
        self.inner.canned.lock().unwrap().push_back(canned);
    }

    /// Changes the credentials the emulator accepts (rotation).
    pub fn set_credentials(&self, client_id: &str, client_secret: &str) {
        *self.inner.client_id.lock().unwrap() = client_id.into();
        *self.inner.client_secret.lock().unwrap() = client_secret.into();
    }

    /// Registers (or replaces) a client that authenticates with an RFC 7523 client assertion
    /// (Generic only).
    pub fn expect_assertions(&self, expectation: super::assertions::Expectation) {
        let mut list = self.inner.assertions.lock().unwrap();
        list.retain(|e| e.client_id != expectation.client_id);
        list.push(expectation);
    }

    /// Requests being answered now (received, answer not sent yet).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// Answers every request after `delay` (a realistic endpoint takes a few milliseconds).
    pub fn set_delay(&self, delay: Duration) {
        self.inner
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Misbehaves at random as `chaos` says (`None` ends it).
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        *self.inner.chaos.lock().unwrap() = chaos;
    }

    /// How many requests the chaos mode answered with a fault (429, 503 or a slow answer).
    pub fn chaos_faults(&self) -> usize {
        self.inner.chaos_faults.load(Ordering::SeqCst)
    }

    /// Keeps only the count of requests, not their copies (for benchmarks).
    pub fn count_only(&self) {
        self.inner.keep_records.store(false, Ordering::SeqCst);
    }

    /// Overrides `expires_in` in success bodies (Generic and MicroboxLabs).
    pub fn set_expires_in(&self, value: Value) {
        *self.inner.expires_in.lock().unwrap() = Some(value);
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let keep = inner.keep_records.load(Ordering::SeqCst);
    inner.requests.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: if keep {
            headers.clone()
        } else {
            HeaderMap::new()
        },
        body: if keep { body.to_vec() } else { Vec::new() },
        at: std::time::Instant::now(),
    });
    let _answering = Answering::new(&inner.in_flight);
    let delay = inner.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let chaos = *inner.chaos.lock().unwrap();
    if let Some(chaos) = chaos {
        let roll: f64 = rand::random();
        if roll < chaos.rate_429 {
            inner.chaos_faults.fetch_add(1, Ordering::SeqCst);
            let wait = 1 + rand::random::<u8>() % 3;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", wait.to_string())],
                r#"{"error":"rate_limited","error_description":"Too many requests"}"#,
            )
                .into_response();
        }
        if roll < chaos.rate_429 + chaos.rate_503 {
            inner.chaos_faults.fetch_add(1, Ordering::SeqCst);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("content-type", "text/html")],
                "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
            )
                .into_response();
        }
        if roll < chaos.rate_429 + chaos.rate_503 + chaos.rate_slow {
            inner.chaos_faults.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(chaos.slow).await;
        }
    }
    let canned = inner.canned.lock().unwrap().pop_front();
    if let Some(canned) = canned {
        tokio::time::sleep(canned.delay).await;
        let mut response =
            (StatusCode::from_u16(canned.status).unwrap(), canned.body).into_response();
        for (name, value) in canned.headers {
            response.headers_mut().insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        return response;
    }
    if uri.path() != inner.vendor.path() {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response();
    }
    let req = Req {
        query: uri.query().unwrap_or(""),
        headers: &headers,
        body: &body,
    };
    let answer = match inner.vendor {
        Vendor::Microboxlabs => microboxlabs(&inner, &req),
        Vendor::Microbilt => microbilt(&inner, &req),
        Vendor::Iotspot => iotspot(&inner, &req),
        Vendor::Generic => generic(&inner, &req),
    };
    match answer {
        Ok(body) => (StatusCode::OK, [("content-type", "application/json")], body).into_response(),
        Err((status, body, extra)) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body,
            )
                .into_response();
            for (name, value) in extra {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
    }
}

struct Req<'a> {
    query: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

impl Req<'_> {
    fn content_type(&self) -> String {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_ascii_lowercase()
    }
    fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
    fn basic(&self) -> Option<Vec<u8>> {
        let value = self.headers.get("authorization")?.to_str().ok()?;
        let encoded = value.strip_prefix("Basic ")?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
    }
}

type Answer = Result<String, (u16, String, Vec<(&'static str, String)>)>;

fn err(status: u16, body: &str) -> Answer {
    Err((status, body.to_owned(), vec![]))
}

fn fresh_token(inner: &Inner, documented: &str) -> String {
    let keep = inner.keep_records.load(Ordering::SeqCst);
    let token = match inner.tokens {
        Tokens::Documented => documented.to_owned(),
        Tokens::Unique => {
            let n = inner.serial.fetch_add(1, Ordering::SeqCst);
            format!("emulated-token-{n}-{:016x}", rand::random::<u64>())
        }
    };
    if keep {
        inner.issued.lock().unwrap().push(token.clone());
    }
    token
}

fn expires_in(inner: &Inner, documented: Value) -> Value {
    inner
        .expires_in
        .lock()
        .unwrap()
        .clone()
        .unwrap_or(documented)
}

fn field<'v>(object: &'v serde_json::Map<String, Value>, name: &str) -> Option<&'v str> {
    object.get(name).and_then(Value::as_str)
}

fn microboxlabs(inner: &Inner, req: &Req<'_>) -> Answer {
    let malformed = |what: &str| {
        err(
            400,
            &json!({"error": "invalid_request", "error_description": what}).to_string(),
        )
    };
    if req.content_type() != "application/json" {
        return malformed("Content-Type must be application/json");
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(req.body) else {
        return malformed("Malformed JSON body");
    };
    for name in ["client_id", "client_secret", "audience", "grant_type"] {
        if field(&body, name).is_none_or(str::is_empty) {
            return malformed(&format!("Missing or malformed field: {name}"));
        }
    }
    if field(&body, "grant_type") != Some("client_credentials") {
        return malformed("grant_type must be client_credentials");
    }
    if field(&body, "client_id") != Some(inner.client_id.lock().unwrap().as_str())
        || field(&body, "client_secret") != Some(inner.client_secret.lock().unwrap().as_str())
    {
        return err(
            401,
            r#"{ "error": "access_denied", "error_description": "Unauthorized" }"#,
        );
    }
    if field(&body, "audience") != Some(inner.audience.as_str()) {
        return err(
            403,
            r#"{ "error": "access_denied", "error_description": "Client is not authorized to access the audience" }"#,
        );
    }
    let documented =
        inner.tokens == Tokens::Documented && inner.expires_in.lock().unwrap().is_none();
    if documented {
        inner.issued.lock().unwrap().push(MICROBOXLABS_TOKEN.into());
        return Ok(r#"{ "access_token": "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9...", "token_type": "Bearer", "expires_in": 86400, "scope": "asset:track:write" }"#.into());
    }
    Ok(json!({
        "access_token": fresh_token(inner, MICROBOXLABS_TOKEN),
        "token_type": "Bearer",
        "expires_in": expires_in(inner, json!(86400)),
        "scope": "asset:track:write",
    })
    .to_string())
}

fn apigee(status: u16, code: &str, message: &str) -> Answer {
    err(
        status,
        &json!({"ErrorCode": code, "Error": message}).to_string(),
    )
}

fn microbilt(inner: &Inner, req: &Req<'_>) -> Answer {
    let (grant_type, client_id, client_secret) = match req.content_type().as_str() {
        "application/json" => {
            let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(req.body) else {
                return apigee(400, "invalid_request", "Invalid JSON payload");
            };
            (
                field(&body, "grant_type").map(str::to_owned),
                field(&body, "client_id").map(str::to_owned),
                field(&body, "client_secret").map(str::to_owned),
            )
        }
        "application/x-www-form-urlencoded" => {
            let form = req.form();
            let query: Vec<(String, String)> = form_urlencoded::parse(req.query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let get = |list: &[(String, String)], name: &str| {
                list.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            };
            (
                get(&query, "grant_type").or_else(|| get(&form, "grant_type")),
                get(&form, "client_id"),
                get(&form, "client_secret"),
            )
        }
        _ => return apigee(400, "invalid_request", "Unsupported Content-Type"),
    };
    match grant_type.as_deref() {
        Some("client_credentials") => {}
        other => {
            return apigee(
                400,
                "unsupported_grant_type",
                &format!("Unsupported grant type : {}", other.unwrap_or("")),
            );
        }
    }
    let (Some(id), Some(secret)) = (client_id, client_secret) else {
        return apigee(401, "invalid_client", "ClientId is Invalid");
    };
    if id != *inner.client_id.lock().unwrap() || secret != *inner.client_secret.lock().unwrap() {
        return apigee(401, "invalid_client", "Client credentials are invalid");
    }
    if inner.tokens == Tokens::Documented {
        inner.issued.lock().unwrap().push(MICROBILT_TOKEN.into());
        return Ok(r#"{ "issued_at" : "1525190727056", "expires_in" : "3599", "token_type" : "BearerToken", "access_token" : "kE8WyfAAgaoPPisGakxRw9aEL8eH", "status" : "approved" }"#.into());
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let expires = expires_in(inner, json!("3599"));
    Ok(json!({
        "issued_at": now_ms.to_string(),
        "expires_in": expires,
        "token_type": "BearerToken",
        "access_token": fresh_token(inner, MICROBILT_TOKEN),
        "status": "approved",
    })
    .to_string())
}

fn cognito(code: &str) -> Answer {
    err(400, &json!({ "error": code }).to_string())
}

fn iotspot(inner: &Inner, req: &Req<'_>) -> Answer {
    if req.content_type() != "application/x-www-form-urlencoded" {
        return cognito("invalid_request");
    }
    let Some(basic) = req.basic() else {
        return cognito("invalid_client");
    };
    let expected = format!(
        "{}:{}",
        inner.client_id.lock().unwrap(),
        inner.client_secret.lock().unwrap()
    );
    if basic != expected.as_bytes() {
        return cognito("invalid_client");
    }
    let form = req.form();
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if get("client_secret").is_some() {
        return cognito("invalid_request");
    }
    match get("grant_type") {
        Some("client_credentials") => {}
        Some(_) => return cognito("unsupported_grant_type"),
        None => return cognito("invalid_request"),
    }
    if get("client_id") != Some(inner.client_id.lock().unwrap().as_str()) {
        return cognito("invalid_request");
    }
    match get("scope") {
        Some("iotspot/openapi") => {}
        Some(_) => return cognito("invalid_scope"),
        None => return cognito("invalid_request"),
    }
    if inner.tokens == Tokens::Documented {
        inner.issued.lock().unwrap().push(IOTSPOT_TOKEN.into());
        return Ok(format!(
            "{{\n    \"access_token\": \"{IOTSPOT_TOKEN}\",\n    \"expires_in\": 3600,\n    \"token_type\": \"Bearer\"\n}}"
        ));
    }
    Ok(json!({
        "access_token": fresh_token(inner, IOTSPOT_TOKEN),
        "expires_in": expires_in(inner, json!(3600)),
        "token_type": "Bearer",
    })
    .to_string())
}

/// A client authenticating with an assertion: the registered expectation checked, then the
/// token issued as for any generic client.
fn assertion_client(
    inner: &Inner,
    req: &Req<'_>,
    form: &[(String, String)],
    get: &dyn Fn(&str) -> Option<String>,
) -> Answer {
    let refuse = |description: &str| {
        Err((
            401,
            json!({"error": "invalid_client", "error_description": description}).to_string(),
            vec![],
        ))
    };
    let client_id = get("client_id").unwrap_or_default();
    let expectation = inner
        .assertions
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.client_id == client_id)
        .cloned();
    let Some(expectation) = expectation else {
        return refuse("unknown client");
    };
    if let Err(why) = inner.verifier.check(
        &expectation,
        form,
        req.headers.get("authorization").is_some(),
    ) {
        return refuse(&why);
    }
    let mut body = json!({
        "access_token": fresh_token(inner, "generic-documented-token"),
        "token_type": "Bearer",
        "expires_in": expires_in(inner, json!(3600)),
    });
    if let Some(scope) = get("scope") {
        body["scope"] = json!(scope);
    }
    Ok(body.to_string())
}

fn generic(inner: &Inner, req: &Req<'_>) -> Answer {
    let rfc = |status: u16, code: &str, description: &str| {
        err(
            status,
            &json!({"error": code, "error_description": description}).to_string(),
        )
    };
    if req.content_type() != "application/x-www-form-urlencoded" {
        return rfc(
            400,
            "invalid_request",
            "expected application/x-www-form-urlencoded",
        );
    }
    let form = req.form();
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if get("grant_type").as_deref() != Some("client_credentials") {
        return rfc(
            400,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    if get("client_assertion").is_some() || get("client_assertion_type").is_some() {
        return assertion_client(inner, req, &form, &get);
    }
    let from_basic = req.basic().and_then(|decoded| {
        let decoded = String::from_utf8(decoded).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        let unescape = |s: &str| {
            form_urlencoded::parse(format!("v={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        Some((unescape(id)?, unescape(secret)?))
    });
    let from_body =
        get("client_secret").map(|secret| (get("client_id").unwrap_or_default(), secret));
    let (id, secret) = match (from_basic, from_body) {
        (Some(_), Some(_)) => {
            return rfc(
                400,
                "invalid_request",
                "multiple client authentication methods",
            );
        }
        (Some(pair), None) | (None, Some(pair)) => pair,
        (None, None) => ("".to_owned(), "".to_owned()),
    };
    if id != *inner.client_id.lock().unwrap() || secret != *inner.client_secret.lock().unwrap() {
        return Err((
            401,
            json!({"error": "invalid_client", "error_description": "Client authentication failed"})
                .to_string(),
            vec![("www-authenticate", "Basic realm=\"token\"".to_owned())],
        ));
    }
    if let Some(scope) = get("scope") {
        if scope.split(' ').any(|s| s == "forbidden") {
            return rfc(
                400,
                "invalid_scope",
                "The requested scope is invalid, unknown, or malformed",
            );
        }
    }
    let mut body = json!({
        "access_token": fresh_token(inner, "generic-documented-token"),
        "token_type": "bearer",
        "expires_in": expires_in(inner, json!(3600)),
    });
    if let Some(scope) = get("scope") {
        body["scope"] = json!(scope);
    }
    Ok(body.to_string())
}

/// Counts a request as being answered until dropped (the answer is sent, or the client hung up).
struct Answering<'a>(&'a AtomicUsize);

impl<'a> Answering<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Answering(count)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
