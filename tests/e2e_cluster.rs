//! End-to-end test against a real cluster (whatever `KUBECONFIG` points to). Ignored by
//! default; run it with
//!
//! ```sh
//! kubectl apply -f crds/oauthclient.yaml
//! cargo test --test e2e_cluster -- --ignored
//! ```
//!
//! It creates a namespace `oauth-token-operator-e2e-<random>`, runs the controller in-process
//! against the cluster (scoped to that namespace) and a token endpoint emulator on 127.0.0.1,
//! and deletes the namespace at the end.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use oauth_token_operator::api::crd::OAuthClient;
use oauth_token_operator::controller::{self, Config};
use oauth_token_operator::runtime::health::Health;
use oauth_token_operator::spec::Policy;
use oauth_token_operator::timing::clock::SystemClock;
use serde_json::json;
use support::vendors::*;

const ID: &str = "e2e-client";
const SECRET: &str = "e2e-secret-value";

async fn wait<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real cluster: KUBECONFIG and the CRD installed"]
async fn real_cluster_end_to_end() {
    let client = kube::Client::try_default()
        .await
        .expect("a cluster from KUBECONFIG");
    let ns = format!(
        "oauth-token-operator-e2e-{:06x}",
        rand::random::<u32>() & 0xffffff
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("create the test namespace");

    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    vendor.set_expires_in(json!(120));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let config = Config {
        namespaces: vec![ns.clone()],
        policy: Policy {
            allow_insecure_http: true,
            ..Default::default()
        },
        max_concurrent_exchanges: 4,
        request_timeout: Duration::from_secs(5),
        proxy: Default::default(),
        // The seal key Secret goes into the test namespace, deleted with it.
        namespace: ns.clone(),
        ca_file: None,
    };
    let needs = controller::Needs {
        namespaces: &config.namespaces,
        own_namespace: &ns,
        service_account_tokens: false,
        lease_namespace: None,
    };
    controller::preflight(&client, &needs, "the test cluster")
        .await
        .expect("the CRD is installed: kubectl apply -f crds/oauthclient.yaml");
    let operator = tokio::spawn({
        let client = client.clone();
        async move {
            let mut rx = stop_rx;
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            controller::run(
                client,
                config,
                Arc::new(SystemClock),
                Arc::new(Health::default()),
                Arc::new(Default::default()),
                shutdown,
            )
            .await
            .unwrap();
        }
    });

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let clients: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "creds"},
                "stringData": {"client_id": ID, "client_secret": SECRET},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    clients
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "oauth.token-operator.dev/v1alpha1",
                "kind": "OAuthClient",
                "metadata": {"name": "demo"},
                "spec": {"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "creds"}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let ready = async || {
        let c = clients.get("demo").await.ok()?;
        let conditions = c.status?.conditions;
        conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == "True" && c.reason == "TokenIssued")
            .map(|_| ())
    };
    wait("Ready=True", ready).await;
    let secret = secrets.get("demo-token").await.unwrap();
    let token = String::from_utf8(secret.data.unwrap()["access_token"].0.clone()).unwrap();
    assert_eq!(vendor.issued(), [token]);

    // Force a refresh with the annotation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    clients
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"oauth.token-operator.dev/refresh-requested-at": now}}})),
        )
        .await
        .unwrap();
    wait("a forced refresh", async || {
        (vendor.count() == 2).then_some(())
    })
    .await;

    // Deleting the OAuthClient garbage-collects its Secret.
    clients
        .delete("demo", &DeleteParams::default())
        .await
        .unwrap();
    wait("the Secret to be collected", async || {
        secrets
            .get_opt("demo-token")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    let _ = stop.send(true);
    let _ = operator.await;
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
