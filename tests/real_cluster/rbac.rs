//! RBAC for real: the operator binary, run as the chart's pod with a token of the chart's
//! ServiceAccount (exactly the rights the chart grants), through a whole life, for the
//! cluster-wide and the namespace-scoped chart and with `serviceAccountTokens.enabled`. The audit
//! log shows no request of the operator refused. With a rule taken out of the chart's role, the
//! start-up check names what is missing.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams};
use oauth_token_operator::api::crd::OAuthClient;
use serde_json::{Value, json};

use crate::common::*;
use crate::support::control_plane::{Cluster, Options, cluster, own_cluster};
use crate::support::process::Process;
use crate::support::vendors::{TokenServer, Tokens, Vendor};

const ID: &str = "rbac-client";
const SECRET: &str = "rbac-s3cret-value";
const ROTATED: &str = "rbac-s3cret-rotated";

/// One whole life of a client in `ns`: issued, refreshed, rotated, its Secret edited and
/// deleted and restored, a forced refresh, events, deletion with garbage collection.
async fn life(cluster: &Cluster, operator: &Process, ns: &str) {
    let client = cluster.client().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    // Short-lived tokens: refreshed at two thirds of 9 s.
    vendor.set_expires_in(json!(9));
    credentials(&client, ns, "creds", ID, SECRET).await;
    oauth_client(
        &client,
        ns,
        "life",
        json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "creds"}}),
    )
    .await;
    wait_ready(&client, ns, "life", "True", "TokenIssued", Some(operator)).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);

    // Refresh of a short-lived token.
    eventually(
        "a refresh",
        Duration::from_secs(20),
        Some(operator),
        || async { (vendor.count() >= 2).then_some(()) },
    )
    .await;

    // Rotation: a new client_secret gets a new token within seconds.
    vendor.set_credentials(ID, ROTATED);
    credentials(&client, ns, "creds", ID, ROTATED).await;
    let after_rotation = vendor.count();
    eventually(
        "an exchange with the rotated secret",
        Duration::from_secs(15),
        Some(operator),
        || async {
            let accepted = vendor.requests()[after_rotation..].iter().any(|r| {
                r.header("authorization")
                    .is_some_and(|h| h.contains(&b64(&format!("{ID}:{ROTATED}"))))
            });
            accepted.then_some(())
        },
    )
    .await;
    wait_ready(&client, ns, "life", "True", "TokenIssued", Some(operator)).await;

    // The managed Secret edited by someone else: restored.
    secrets
        .patch(
            "life-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"access_token": b64("forged")}})),
        )
        .await
        .unwrap();
    eventually(
        "the edited Secret restored",
        Duration::from_secs(15),
        Some(operator),
        || async {
            let secret = get_secret(&client, ns, "life-token").await?;
            let token = secret_text(&secret, "access_token")?;
            (token != "forged" && vendor.issued().contains(&token)).then_some(())
        },
    )
    .await;

    // Deleted: written again.
    delete(&secrets, "life-token").await;
    eventually(
        "the deleted Secret restored",
        Duration::from_secs(15),
        Some(operator),
        || async {
            let secret = get_secret(&client, ns, "life-token").await?;
            let token = secret_text(&secret, "access_token")?;
            vendor.issued().contains(&token).then_some(())
        },
    )
    .await;

    // A forced refresh.
    let before = vendor.count();
    let clients: Api<OAuthClient> = Api::namespaced(client.clone(), ns);
    let now = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(1))
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    clients
        .patch(
            "life",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"oauth.token-operator.dev/refresh-requested-at": now}}})),
        )
        .await
        .unwrap();
    eventually(
        "the forced refresh",
        Duration::from_secs(15),
        Some(operator),
        || async { (vendor.count() > before).then_some(()) },
    )
    .await;

    // Events (events.k8s.io) in the client's namespace.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    eventually(
        "a TokenIssued event",
        Duration::from_secs(15),
        Some(operator),
        || async {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("TokenIssued"))
                .then_some(())
        },
    )
    .await;

    // Deletion: the garbage collector removes the managed Secret (its ownerReference).
    delete(&clients, "life").await;
    eventually(
        "the managed Secret garbage-collected",
        Duration::from_secs(30),
        Some(operator),
        || async {
            get_secret(&client, ns, "life-token")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
}

/// A ServiceAccountToken client: its assertion minted by the real TokenRequest API.
async fn service_account_life(cluster: &Cluster, operator: &Process, ns: &str) {
    let client = cluster.client().await;
    let vendor = TokenServer::start(Vendor::Generic, "wif-client", "unused", Tokens::Unique).await;
    let plane = cluster.local.as_ref().expect("a local control plane");
    let audience = "api://AzureADTokenExchange";
    vendor.expect_assertions(
        crate::token_request::expectation(plane, "wif-client", ns, "workload", audience).await,
    );
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let origin = url::Url::parse(&vendor.url())
        .unwrap()
        .origin()
        .ascii_serialization();
    let account: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": "workload", "annotations": {
            "oauth.token-operator.dev/token-audiences": audience,
            "oauth.token-operator.dev/token-endpoints": origin,
        }}
    }))
    .unwrap();
    accounts
        .create(&Default::default(), &account)
        .await
        .unwrap();
    oauth_client(
        &client,
        ns,
        "wif",
        json!({"tokenUrl": vendor.url(), "clientAuthMethod": "ServiceAccountToken", "clientId": "wif-client",
               "serviceAccountToken": {"serviceAccountName": "workload", "audience": audience}}),
    )
    .await;
    wait_ready(&client, ns, "wif", "True", "TokenIssued", Some(operator)).await;
    assert_eq!(vendor.count(), 1);
}

/// The cluster-wide chart, two replicas (leader election), through a whole life.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_wide_chart_grants_everything_the_operator_uses() {
    let Some(cluster) = own_cluster(
        "the_cluster_wide_chart_grants_everything_the_operator_uses",
        Options::default(),
    )
    .await
    else {
        return;
    };
    let install = Install::new(
        &cluster,
        "rbac-wide",
        json!({"allowInsecureHttp": true, "replicas": 2, "leaderElection": {"leaseDuration": "5s"}}),
    )
    .await;
    let operator = install.pod("rbac-wide-0").await;
    let ns = cluster.namespace("rbac-wide-team").await;
    life(&cluster, &operator, &ns).await;
    let client = cluster.client().await;
    // The seal key Secret, created on first start in the release namespace; the leader Lease.
    assert!(
        get_secret(&client, &install.namespace, "oauth-token-operator-seal-key")
            .await
            .is_some()
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &install.namespace);
    let lease = leases.get("oauth-token-operator").await.expect("the Lease");
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("rbac-wide-0")
    );
    drop(operator);
    assert_operator_never_refused(&cluster, &install.user());
}

/// The namespace-scoped chart (`watchNamespaces`), with `serviceAccountTokens.enabled`: Roles
/// only, nothing cluster-wide (the operator's own TokenRequest, which tells it the API server's
/// audiences, through a Role in the release namespace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespaced_chart_grants_everything_the_operator_uses() {
    let Some(cluster) = cluster("the_namespaced_chart_grants_everything_the_operator_uses").await
    else {
        return;
    };
    let a = cluster.namespace("rbac-ns-a").await;
    let b = cluster.namespace("rbac-ns-b").await;
    let install = Install::new(
        &cluster,
        "rbac-ns",
        json!({"allowInsecureHttp": true, "watchNamespaces": [a, b],
               "serviceAccountTokens": {"enabled": true}}),
    )
    .await;
    let operator = install.pod("rbac-ns-0").await;
    service_account_life(&cluster, &operator, &a).await;
    life(&cluster, &operator, &a).await;
    life(&cluster, &operator, &b).await;
    assert!(
        operator.text().contains("the API server's own audiences"),
        "learned at start:\n{}",
        operator.text()
    );
    drop(operator);
    assert_operator_never_refused(&cluster, &install.user());
}

/// `serviceAccountTokens.enabled`: the extra rights, used by a ServiceAccountToken client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_token_chart_grants_token_requests() {
    let Some(cluster) = own_cluster(
        "the_service_account_token_chart_grants_token_requests",
        Options::default(),
    )
    .await
    else {
        return;
    };
    let install = Install::new(
        &cluster,
        "rbac-sa",
        json!({"allowInsecureHttp": true, "serviceAccountTokens": {"enabled": true}}),
    )
    .await;
    let operator = install.pod("rbac-sa-0").await;
    let ns = cluster.namespace("rbac-sa-team").await;
    service_account_life(&cluster, &operator, &ns).await;
    life(&cluster, &operator, &ns).await;
    drop(operator);
    assert_operator_never_refused(&cluster, &install.user());
}

/// Every rule of the chart's role is needed: with any one taken out, the operator does not
/// start, and its message names the missing right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_rule_is_named_at_start() {
    let Some(cluster) = own_cluster("a_missing_rule_is_named_at_start", Options::default()).await
    else {
        return;
    };
    let install = Install::new(
        &cluster,
        "rbac-missing",
        json!({"allowInsecureHttp": true, "serviceAccountTokens": {"enabled": true}}),
    )
    .await;
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(cluster.client().await);
    // The controller's role, and the reviews of whoever reads /metrics.
    for role_name in [
        install.fullname(),
        format!("{}-metrics-auth", install.fullname()),
    ] {
        let role = roles.get(&role_name).await.unwrap();
        let rules = serde_json::to_value(role.rules.clone().unwrap()).unwrap();
        let rules = rules.as_array().unwrap().clone();
        for (i, rule) in rules.iter().enumerate() {
            for verb in rule["verbs"].as_array().unwrap() {
                let mut reduced: Vec<Value> = rules.clone();
                let verbs: Vec<Value> = rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|v| *v != verb)
                    .cloned()
                    .collect();
                if verbs.is_empty() {
                    reduced.remove(i);
                } else {
                    reduced[i]["verbs"] = json!(verbs);
                }
                roles
                    .patch(
                        &role_name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"rules": reduced})),
                    )
                    .await
                    .unwrap();
                let resource = rule["resources"][0].as_str().unwrap();
                let verb = verb.as_str().unwrap();
                let operator = install.pod("rbac-missing-0").await;
                let (code, output) = operator.wait_exit(Duration::from_secs(20)).await;
                assert_eq!(code, 1, "started without {verb} {resource}:\n{output}");
                assert!(
                    output.contains(&format!("{verb} {resource}")),
                    "the start-up check does not name {verb} {resource}:\n{output}"
                );
            }
        }
        roles
            .patch(
                &role_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"rules": rules})),
            )
            .await
            .unwrap();
    }
}
