//! No client secret or token value reaches a log line or an error message, with logging at
//! TRACE for every crate (reqwest, hyper and rustls included). This file holds one test so that
//! its global subscriber sees every callsite.

mod support;

use std::time::Duration;

use oauth_token_operator::api::crd::OAuthClientSpec;
use oauth_token_operator::api::reason::Failure;
use oauth_token_operator::base::clock::SystemClock;
use oauth_token_operator::oauth::exchange;
use oauth_token_operator::oauth::request::Credentials;
use oauth_token_operator::oauth::response::Token;
use oauth_token_operator::oauth::transport::Transport;
use oauth_token_operator::oauth::transport::trust::Trust;
use oauth_token_operator::spec::{ClientSettings, Policy};
use serde_json::{Value, json};
use support::vendors::*;

const ID: &str = "1PpG/Q 1";
const SECRET: &str = "z/tZ9VwFZqApmIQ+ZH1I5pLk/uB4ud:X2/8bL+wfFTt1rFw=";

fn creds(id: &str, secret: &str) -> Credentials {
    Credentials::with_secret(id, secret)
}

async fn exchange_with(fields: Value, credentials: &Credentials) -> Result<Token, Failure> {
    let mut spec = json!({"credentialsSecretRef": {"name": "creds"}});
    spec.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    let spec: OAuthClientSpec = serde_json::from_value(spec).unwrap();
    let policy = Policy {
        allow_insecure_http: true,
        ..Default::default()
    };
    let settings = ClientSettings::resolve(&spec, &policy)?;
    let transport = Transport::new(Duration::from_secs(5)).unwrap();
    exchange::exchange_once(
        &transport,
        &Trust::Default,
        &settings.exchange,
        credentials,
        &SystemClock,
    )
    .await
}

#[test]
fn no_secret_or_token_in_trace_logs() {
    let logs = support::logs::capture_global();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut issued = Vec::new();
    runtime.block_on(async {
        for vendor in [Vendor::Microboxlabs, Vendor::Microbilt, Vendor::Iotspot, Vendor::Generic] {
            let server = TokenServer::start(vendor, ID, SECRET, Tokens::Unique).await;
            let provider = match vendor {
                Vendor::Microboxlabs => "microboxlabs",
                Vendor::Microbilt => "microbilt",
                Vendor::Iotspot => "iotspot",
                Vendor::Generic => "generic",
            };
            let fields = json!({"provider": provider, "tokenUrl": server.url(), "audience": STREAMHUB_AUDIENCE});
            let fields = if vendor == Vendor::Microboxlabs {
                fields
            } else {
                let mut f = fields;
                f.as_object_mut().unwrap().remove("audience");
                f
            };
            let token = exchange_with(fields.clone(), &creds(ID, SECRET))
                .await
                .unwrap();
            tracing::info!(?token, "the test logs the token's Debug form on purpose");
            let failure = exchange_with(fields.clone(), &creds(ID, "wrong-secret-value"))
                .await
                .unwrap_err();
            tracing::info!(%failure, "failure");
            server.push(Canned::new(500, format!("internal error for {SECRET}")));
            let failure = exchange_with(fields, &creds(ID, SECRET))
                .await
                .unwrap_err();
            assert!(!failure.message.contains(SECRET));
            issued.extend(server.issued());
        }

        // The controller: a success, a wrong secret, a rotation, with everything it writes
        // to the API checked too.
        let api = support::apiserver::ApiServer::start().await;
        let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
        let operator = support::harness::Operator::start(&api, &[], 2);
        support::harness::credentials(&api, "ns", "good", ID, SECRET);
        support::harness::credentials(&api, "ns", "bad", ID, "wrong-secret-value");
        for (name, creds) in [("ok", "good"), ("denied", "bad")] {
            support::harness::oauth_client(
                &api,
                "ns",
                name,
                json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": creds},
                       "target": {"template": {"Authorization": "Bearer {{ access_token }}"}}}),
            );
        }
        support::harness::wait_ready(&api, "ns", "ok", "True", "TokenIssued").await;
        support::harness::wait_ready(&api, "ns", "denied", "False", "InvalidClient").await;
        vendor.set_credentials(ID, "rotated-secret-value");
        api.modify(support::apiserver::SECRETS, "ns", "good", |s| {
            use base64::Engine as _;
            s["data"]["client_secret"] =
                json!(base64::engine::general_purpose::STANDARD.encode("rotated-secret-value"));
        });
        support::harness::eventually("rotated token", Duration::from_secs(10), || {
            (vendor.count() >= 3).then_some(())
        })
        .await;
        support::harness::wait_ready(&api, "ns", "ok", "True", "TokenIssued").await;
        operator.stop().await;
        issued.extend(vendor.issued());
        let mut written = String::new();
        for kind in [support::apiserver::OAUTHCLIENTS, support::apiserver::EVENTS] {
            for object in api.list(kind, Some("ns")) {
                written.push_str(&object.to_string());
            }
        }
        let pairs = basic_pairs();
        let mut values: Vec<&str> = vec![SECRET, "wrong-secret-value", "rotated-secret-value"];
        values.extend(issued.iter().map(String::as_str));
        values.extend(pairs.iter().map(String::as_str));
        support::logs::assert_absent(&written, &values, "status and events");
    });
    let text = logs.text();
    assert!(
        text.contains("requesting a token"),
        "logging is captured: {text}"
    );
    assert!(text.contains("TRACE"), "dependencies log at TRACE too");
    assert!(text.contains("[redacted]"));
    assert!(
        text.contains("token issued"),
        "controller logs are captured"
    );
    let pairs = basic_pairs();
    let mut values: Vec<&str> = vec![SECRET, "wrong-secret-value", "rotated-secret-value"];
    values.extend(issued.iter().map(String::as_str));
    values.extend(pairs.iter().map(String::as_str));
    assert!(issued.len() >= 4);
    support::logs::assert_absent(&text, &values, "trace logs");
}

/// The `id:secret` pairs of every Basic header the test sends.
fn basic_pairs() -> Vec<String> {
    ["wrong-secret-value", SECRET, "rotated-secret-value"]
        .into_iter()
        .flat_map(|secret| support::logs::basic_pairs(ID, secret))
        .collect()
}
