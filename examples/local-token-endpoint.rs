//! A demo RFC 6749 client-credentials endpoint on 127.0.0.1:8089, for trying the `exchange`
//! command without a vendor account:
//!
//! ```sh
//! cargo run --example local-token-endpoint &
//! cargo run -- exchange -f examples/local.yaml --allow-insecure-http
//! ```
//!
//! It accepts client_id `demo-client` and client_secret `demo-secret` (Basic header or body),
//! and answers with a fresh opaque token valid for 10 minutes. The playground
//! (`scripts/playground.sh`) serves the same routes ([`app`]).

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use serde_json::json;

async fn token(headers: HeaderMap, body: String) -> (StatusCode, axum::Json<serde_json::Value>) {
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|d| String::from_utf8(d).ok());
    let credentials = match (basic, get("client_secret")) {
        (Some(pair), None) => pair
            .split_once(':')
            .map(|(i, s)| (i.to_owned(), s.to_owned())),
        (None, Some(secret)) => Some((get("client_id").unwrap_or_default(), secret)),
        _ => None,
    };
    if get("grant_type").as_deref() != Some("client_credentials") {
        let body = json!({"error": "unsupported_grant_type"});
        return (StatusCode::BAD_REQUEST, axum::Json(body));
    }
    if credentials != Some(("demo-client".into(), "demo-secret".into())) {
        let body = json!({"error": "invalid_client", "error_description": "unknown client or wrong secret"});
        return (StatusCode::UNAUTHORIZED, axum::Json(body));
    }
    let token = format!("demo-{:032x}", rand::random::<u128>());
    let mut body = json!({"access_token": token, "token_type": "bearer", "expires_in": 600});
    if let Some(scope) = get("scope") {
        body["scope"] = json!(scope);
    }
    (StatusCode::OK, axum::Json(body))
}

/// The endpoint's routes.
pub fn app() -> axum::Router {
    axum::Router::new().route("/token", post(token))
}

#[tokio::main]
async fn main() {
    let app = app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8089")
        .await
        .expect("port 8089 is free");
    println!(
        "demo token endpoint on http://127.0.0.1:8089/token (client demo-client / demo-secret)"
    );
    axum::serve(listener, app).await.expect("server runs");
}
