//! The real controller against the API-server double and the vendor emulators.

mod support;

use std::time::Duration;

use serde_json::json;
use support::apiserver::{ApiServer, OAUTHCLIENTS, SECRETS};
use support::harness::*;
use support::vendors::*;

const NS: &str = "telemetry";
const ID: &str = "streamhub-client";
const SECRET: &str = "s3cr3t/+=value";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microboxlabs_happy_path() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Microboxlabs, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    credentials(&api, NS, "streamhub-credentials", ID, SECRET);
    oauth_client(
        &api,
        NS,
        "streamhub",
        json!({
            "provider": "microboxlabs",
            "tokenUrl": vendor.url(),
            "credentialsSecretRef": {"name": "streamhub-credentials"},
            "audience": STREAMHUB_AUDIENCE,
        }),
    );
    wait_ready(&api, NS, "streamhub", "True", "TokenIssued").await;
    let token = secret_value(&api, NS, "streamhub-token", "access_token").unwrap();
    assert_eq!(vendor.issued(), [token]);
    assert_eq!(
        secret_value(&api, NS, "streamhub-token", "token_type").unwrap(),
        "Bearer"
    );
    assert_eq!(
        secret_value(&api, NS, "streamhub-token", "scope").unwrap(),
        "asset:track:write"
    );
    let secret = api.get(SECRETS, NS, "streamhub-token").unwrap();
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "oauth-token-operator"
    );
    assert_eq!(
        secret["metadata"]["labels"]["oauth.token-operator.dev/client"],
        "streamhub"
    );
    let client = api.get(OAUTHCLIENTS, NS, "streamhub").unwrap();
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        client["metadata"]["uid"]
    );
    assert_eq!(secret["metadata"]["ownerReferences"][0]["controller"], true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(vendor.count(), 1);
    assert_eq!(
        api.count("patch oauthclients/status"),
        1,
        "{:?}",
        api.counts()
    );
    assert_eq!(api.count("patch secrets"), 1);
    assert_eq!(api.count("create events"), 1);
    assert!(api.violations().is_empty(), "{:?}", api.violations());
    operator.stop().await;
}
