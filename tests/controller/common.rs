//! What the controller tests share: the namespace and the credentials they use, a double, an
//! emulator and a controller started together ([`Setup`]), the spec of a vendor's client
//! ([`spec_for`]), and small readers and writers of events, statuses, Secrets and annotations.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::apiserver::{ApiServer, EVENTS, OAUTHCLIENTS, SECRETS};
use crate::support::builders::Spec;
use crate::support::harness::Operator;
use crate::support::vendors::{STREAMHUB_AUDIENCE, TokenServer, Tokens, Vendor};

/// The namespace of the clients (the client-authentication tests use their own).
pub const NS: &str = "telemetry";
/// The client id the emulators know.
pub const ID: &str = "streamhub-client";
/// The client secret the emulators know (with the characters form encoding must escape).
pub const SECRET: &str = "s3cr3t/+=value";
/// The managed Secret of the client `demo`.
pub const TOKEN_SECRET: &str = "demo-token";
/// The annotation that asks for one exchange.
pub const REFRESH_REQUESTED: &str = "oauth.token-operator.dev/refresh-requested-at";

/// A double, an emulator that knows [`ID`] and [`SECRET`], and a controller over all
/// namespaces.
pub struct Setup {
    pub api: ApiServer,
    pub vendor: TokenServer,
    pub operator: Operator,
}

/// Starts a [`Setup`] whose emulator speaks as `vendor` and issues a new token each time.
pub async fn setup(vendor: Vendor) -> Setup {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(vendor, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    Setup {
        api,
        vendor,
        operator,
    }
}

/// The spec of a client of `vendor` with the preset `provider` and the credentials Secret
/// `creds` (with StreamHub's audience for microboxlabs).
pub fn spec_for(vendor: &TokenServer, provider: &str) -> Spec {
    let spec = Spec::to(&vendor.url()).provider(provider);
    if provider == "microboxlabs" {
        spec.audience(STREAMHUB_AUDIENCE)
    } else {
        spec
    }
}

/// The spec of a generic client of `vendor` (the credentials Secret `creds`).
pub fn generic_spec(vendor: &TokenServer) -> Spec {
    spec_for(vendor, "generic")
}

/// The events of [`NS`] with `reason`.
pub fn events(api: &ApiServer, reason: &str) -> Vec<Value> {
    api.list(EVENTS, Some(NS))
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

/// `status.<field>` of the OAuthClient `name` in [`NS`].
pub fn status_field(api: &ApiServer, name: &str, field: &str) -> Value {
    api.get(OAUTHCLIENTS, NS, name).unwrap()["status"][field].clone()
}

pub async fn sleep(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// `bytes` in base64, as a JSON string (a value of a Secret's `data`).
pub fn b64(bytes: impl AsRef<[u8]>) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Now, to the second, as the refresh-requested annotation holds it.
pub fn now_to_the_second() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Sets the refresh-requested annotation of the OAuthClient `name` in [`NS`] to `at` (the
/// client's other annotations go).
pub fn request_refresh(api: &ApiServer, name: &str, at: &str) {
    api.modify(OAUTHCLIENTS, NS, name, |o| {
        o["metadata"]["annotations"] = json!({ REFRESH_REQUESTED: at });
    });
}

/// Sets `client_secret` of the Secret `secret` in [`NS`] to `value`.
pub fn set_client_secret(api: &ApiServer, secret: &str, value: &str) {
    api.modify(SECRETS, NS, secret, |s| {
        s["data"]["client_secret"] = b64(value);
    });
}

/// Accepts connections and never answers (until the test ends).
pub async fn tarpit() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}/token")
}

/// The value of one series in the Prometheus text, 0 when absent.
pub fn series(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}
