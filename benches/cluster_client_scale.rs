//! One ClusterOAuthClient selecting N namespaces (default 2,000) on a real kube-apiserver, etcd and
//! kube-controller-manager, with the cluster-wide chart's operator (`clusterOAuthClients.enabled`)
//! and a loopback token endpoint issuing 120-second tokens (refreshed at half their lifetime).
//! Prints:
//!
//! - the time from the ClusterOAuthClient's creation to every copy written;
//! - the token requests;
//! - the copy writes: at creation, between refreshes (in the quiet window before the first
//!   refresh) and for one refresh, per namespace;
//! - the RSS the ClusterOAuthClient adds to the operator (VmRSS before it, peak VmHWM after).
//!
//! Writes are counted in the API server's audit log: the operator's create, patch and update of
//! Secrets outside the cluster resource namespace. Needs the control plane of
//! `controlplane/build.sh`. Not a test: it asserts nothing about time.
//!
//! ```sh
//! cargo bench --bench cluster_client_scale -- 2000
//! ```

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

#[path = "../tests/real_cluster/common.rs"]
#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use oauth_token_operator::api::cluster_crd::ClusterOAuthClient;
use serde_json::json;

use common::*;
use support::control_plane::{ControlPlane, Options, own_cluster};
use support::vendors::{TokenServer, Tokens, Vendor};

const ID: &str = "bench-client";
const SECRET: &str = "bench-s3cret-value";
const LABEL: &str = "bench.example.com/vendor-token";

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The operator's Secret writes (create, patch, update) outside `resource_namespace` from the
/// audit event with index `from` on.
fn copy_writes(plane: &ControlPlane, user: &str, resource_namespace: &str, from: usize) -> usize {
    plane
        .audit_events()
        .into_iter()
        .skip(from)
        .filter(|e| {
            e.user == user
                && e.resource == "secrets"
                && e.namespace != resource_namespace
                && matches!(e.verb.as_str(), "create" | "patch" | "update")
        })
        .count()
}

async fn status(client: &kube::Client) -> Option<serde_json::Value> {
    let api: Api<ClusterOAuthClient> = Api::all(client.clone());
    let object = api.get_opt("bench").await.ok()??;
    serde_json::to_value(object).ok()
}

async fn run(n: usize) -> Option<()> {
    let cluster = own_cluster("cluster client scale", Options::default()).await?;
    let plane = cluster.local.clone()?;
    let client = cluster.client().await;
    let values = json!({"allowInsecureHttp": true, "clusterOAuthClients": {"enabled": true}});
    let install = Install::new(&cluster, "coac-bench", values).await;
    let operator = install.pod("coac-bench-0").await;
    let pid = operator.child.id();
    let user = install.user();
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    vendor.set_expires_in(json!(120));
    credentials(&client, &install.namespace, "bench-creds", ID, SECRET).await;
    let made = Instant::now();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(0..n)
        .map(|i| {
            let api = namespaces.clone();
            async move {
                let ns: Namespace = serde_json::from_value(json!({
                    "metadata": {"name": format!("bench-{i:05}"), "labels": {LABEL: "yes"}}
                }))
                .unwrap();
                api.create(&PostParams::default(), &ns).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    println!(
        "{n} namespaces created in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_before = proc_kib(pid, "VmRSS:");
    let audit_from = plane.audit_events().len();
    let api: Api<ClusterOAuthClient> = Api::all(client.clone());
    let object: ClusterOAuthClient = serde_json::from_value(json!({
        "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "ClusterOAuthClient",
        "metadata": {"name": "bench"},
        "spec": {
            "tokenUrl": vendor.url(),
            "credentialsSecretRef": {"name": "bench-creds"},
            "refresh": {"renewBeforePercentage": 50},
            "target": {"name": "vendor-token", "namespaceSelector": {"matchLabels": {LABEL: "yes"}}}
        }
    }))
    .unwrap();
    let created = Instant::now();
    api.create(&PostParams::default(), &object).await.unwrap();
    let written = |status: &serde_json::Value| status["status"]["targets"]["written"].as_u64();
    let issued_at =
        |status: &serde_json::Value| status["status"]["issuedAt"].as_str().map(str::to_owned);
    let first = loop {
        if let Some(s) = status(&client).await
            && written(&s) == Some(n as u64)
        {
            break s;
        }
        assert!(
            created.elapsed() < Duration::from_secs(300),
            "not every copy written after 300 s\n{}",
            operator.text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let all_written = created.elapsed();
    let first_issued = issued_at(&first);
    let audit_after_creation = plane.audit_events().len();
    let creation_writes = copy_writes(&plane, &user, &install.namespace, audit_from);
    let requests_at_creation = vendor.count();
    // Between refreshes: nothing is written until the refresh (at about 60 s).
    let quiet_until = created + Duration::from_secs(50);
    tokio::time::sleep(quiet_until.saturating_duration_since(Instant::now())).await;
    let quiet = created.elapsed() - all_written;
    let between = copy_writes(&plane, &user, &install.namespace, audit_after_creation);
    let audit_before_refresh = plane.audit_events().len();
    // The refresh: every copy holds the new token.
    loop {
        if let Some(s) = status(&client).await
            && issued_at(&s) != first_issued
            && written(&s) == Some(n as u64)
        {
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(400),
            "no refresh distributed after 400 s\n{}",
            operator.text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refresh_writes = copy_writes(&plane, &user, &install.namespace, audit_before_refresh);
    let peak = proc_kib(pid, "VmHWM:");
    println!(
        "ClusterOAuthClient selecting {n} namespaces: all copies written {:.1} s after creation; \
         token requests {} at creation, {} after one refresh; copy writes: {} at creation \
         ({:.2} per namespace), {} in the {:.0} s between (after all were written, before the \
         refresh), {} for one refresh ({:.2} per namespace); operator RSS {:.1} MiB before, peak \
         {:.1} MiB after (+{:.1} MiB)",
        all_written.as_secs_f64(),
        requests_at_creation,
        vendor.count(),
        creation_writes,
        creation_writes as f64 / n as f64,
        between,
        quiet.as_secs_f64(),
        refresh_writes,
        refresh_writes as f64 / n as f64,
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak.saturating_sub(rss_before)) as f64 / 1024.0,
    );
    assert_operator_never_refused(&cluster, &user);
    Some(())
}

fn main() {
    let n = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if runtime.block_on(run(n)).is_none() {
        eprintln!("no control plane: build it with controlplane/build.sh");
        std::process::exit(1);
    }
}
