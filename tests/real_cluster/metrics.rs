//! `/metrics` is not an open directory of tenants (security round three, item 7): with the
//! chart's defaults the endpoint is TLS, `/metrics` answers only a bearer token that the real
//! API server accepts (TokenReview) for an identity that may get the non-resource URL
//! `/metrics` (SubjectAccessReview: the chart's metrics-reader ClusterRole), and the probes stay
//! open. The operator's reviews run with exactly the chart's rights.

use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::common::*;
use crate::support::control_plane::cluster;

async fn get(port: u16, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut request = client.get(format!("https://127.0.0.1:{port}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_only_callers_the_api_server_authorizes() {
    let Some(cluster) = cluster("metrics_answer_only_callers_the_api_server_authorizes").await
    else {
        return;
    };
    let client = cluster.client().await;
    let ns = cluster.namespace("metrics").await;
    let (install, operator) = Install::watching(&cluster, "metrics", &[&ns], json!({})).await;
    let port = operator.metrics_port().await;
    assert!(
        operator.text().contains("scheme=\"https\"") || operator.text().contains("scheme=https"),
        "{}",
        operator.text()
    );
    // A scraper bound to the chart's metrics-reader ClusterRole, and a nosy tenant who is not.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    for name in ["scraper", "nosy"] {
        let account = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        accounts
            .create(&PostParams::default(), &account)
            .await
            .unwrap();
    }
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    let binding = serde_json::from_value(json!({
        "metadata": {"name": format!("{ns}-scraper")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": format!("{}-metrics-reader", install.fullname())},
        "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": ns}],
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let scraper = cluster.service_account_token(&ns, "scraper").await;
    let nosy = cluster.service_account_token(&ns, "nosy").await;

    // The probes: open, over TLS.
    assert_eq!(get(port, "/healthz", None).await.unwrap().0, 200);
    eventually(
        "ready",
        Duration::from_secs(20),
        Some(&operator),
        || async { (get(port, "/readyz", None).await.ok()?.0 == 200).then_some(()) },
    )
    .await;
    // /metrics: 401 without a token or with one the API server refuses, 403 for the nosy
    // tenant, 200 for the scraper (after RBAC caught up with the binding).
    let (status, _) = get(port, "/metrics", None).await.unwrap();
    assert_eq!(status, 401);
    let (status, _) = get(port, "/metrics", Some("not-a-token")).await.unwrap();
    assert_eq!(status, 401);
    let (status, body) = get(port, "/metrics", Some(&nosy)).await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("oauth_token_operator_"), "{body}");
    let text = eventually(
        "the scraper reads /metrics",
        Duration::from_secs(90),
        Some(&operator),
        || async {
            let (status, body) = get(port, "/metrics", Some(&scraper)).await.ok()?;
            (status == 200).then_some(body)
        },
    )
    .await;
    assert!(text.contains("oauth_token_operator_"), "{text}");
    // Plain HTTP gets nothing from the TLS port.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP served /metrics"
    );
    drop(operator);
    assert_operator_never_refused(&cluster, &install.user());
}
