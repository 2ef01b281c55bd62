//! K ClusterOAuthClients (default 1) each selecting the same N namespaces (default 2,000) on a real
//! kube-apiserver, etcd and
//! kube-controller-manager, with the cluster-wide chart's operator (`clusterOAuthClients.enabled`)
//! and a loopback token endpoint issuing 120-second tokens (refreshed at half their lifetime).
//! Prints:
//!
//! - the time from the ClusterOAuthClient's creation to every copy written;
//! - the token requests;
//! - the copy writes: at creation, between refreshes (in the quiet window before the first
//!   refresh) and for one refresh, per namespace;
//! - the RSS the ClusterOAuthClients add to the operator (VmRSS before them, peak VmHWM after);
//! - the operator's CPU time for one label change of a namespace none of them selects.
//!
//! Writes are counted in the API server's audit log: the operator's create, patch and update of
//! Secrets outside the cluster resource namespace. Needs the control plane of
//! `controlplane/build.sh`. Not a test: it asserts nothing about time.
//!
//! ```sh
//! cargo bench --bench cluster_client_scale -- 2000      # one ClusterOAuthClient
//! cargo bench --bench cluster_client_scale -- 2000 8    # eight, over the same namespaces
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

async fn status(client: &kube::Client, name: &str) -> Option<serde_json::Value> {
    let api: Api<ClusterOAuthClient> = Api::all(client.clone());
    let object = api.get_opt(name).await.ok()??;
    serde_json::to_value(object).ok()
}

/// The operator's CPU time (user and system), in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after the command name.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Waits until every ClusterOAuthClient of `names` says `written == n` and `pred` of its
/// status holds.
async fn wait_all(
    client: &kube::Client,
    names: &[String],
    n: usize,
    within: Duration,
    operator: &support::process::Process,
    pred: impl Fn(&str, &serde_json::Value) -> bool,
) {
    let started = Instant::now();
    loop {
        let mut done = true;
        for name in names {
            let ok = status(client, name).await.is_some_and(|s| {
                s["status"]["targets"]["written"].as_u64() == Some(n as u64) && pred(name, &s)
            });
            if !ok {
                done = false;
                break;
            }
        }
        if done {
            return;
        }
        assert!(
            started.elapsed() < within,
            "not every copy written within {within:?}\n{}",
            operator.text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn run(n: usize, k: usize) -> Option<()> {
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
    futures::stream::iter(0..=n)
        .map(|i| {
            let api = namespaces.clone();
            async move {
                // The last one is selected by none: its label changes are what the CPU figure
                // measures.
                let (name, labels) = if i == n {
                    ("bench-unrelated".to_owned(), json!({}))
                } else {
                    (format!("bench-{i:05}"), json!({LABEL: "yes"}))
                };
                let ns: Namespace = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": labels}
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
    let names: Vec<String> = (0..k).map(|i| format!("bench-{i}")).collect();
    let created = Instant::now();
    for name in &names {
        let object: ClusterOAuthClient = serde_json::from_value(json!({
            "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "ClusterOAuthClient",
            "metadata": {"name": name},
            "spec": {
                "tokenUrl": vendor.url(),
                "credentialsSecretRef": {"name": "bench-creds"},
                "refresh": {"renewBeforePercentage": 50},
                "target": {"name": format!("{name}-token"),
                           "namespaceSelector": {"matchLabels": {LABEL: "yes"}},
                           "template": {"Authorization": "Bearer {{ access_token }}"}}
            }
        }))
        .unwrap();
        api.create(&PostParams::default(), &object).await.unwrap();
    }
    let within = Duration::from_secs(300);
    wait_all(&client, &names, n, within, &operator, |_, _| true).await;
    let all_written = created.elapsed();
    let mut first_issued = std::collections::BTreeMap::new();
    for name in &names {
        let s = status(&client, name).await.unwrap();
        first_issued.insert(name.clone(), s["status"]["issuedAt"].clone());
    }
    let audit_after_creation = plane.audit_events().len();
    let creation_writes = copy_writes(&plane, &user, &install.namespace, audit_from);
    let requests_at_creation = vendor.count();
    // The CPU one unrelated namespace event costs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_before = cpu_ticks(pid);
    namespaces
        .patch(
            "bench-unrelated",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({"metadata": {"labels": {"unrelated": "1"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let unrelated_cpu = cpu_ticks(pid).saturating_sub(cpu_before);
    // Between refreshes: nothing is written until the refresh (at about 60 s).
    let quiet_until = created + Duration::from_secs(50);
    tokio::time::sleep(quiet_until.saturating_duration_since(Instant::now())).await;
    let quiet = created.elapsed() - all_written;
    let between = copy_writes(&plane, &user, &install.namespace, audit_after_creation);
    let audit_before_refresh = plane.audit_events().len();
    // The refresh: every copy holds the new token.
    let refreshed =
        |name: &str, s: &serde_json::Value| s["status"]["issuedAt"] != first_issued[name];
    wait_all(
        &client,
        &names,
        n,
        Duration::from_secs(400),
        &operator,
        refreshed,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refresh_writes = copy_writes(&plane, &user, &install.namespace, audit_before_refresh);
    let peak = proc_kib(pid, "VmHWM:");
    let pairs = (n * k) as f64;
    println!(
        "{k} ClusterOAuthClient(s) selecting {n} namespaces: all copies written {:.1} s after \
         creation; token requests {} at creation, {} after one refresh; copy writes: {} at \
         creation ({:.2} per copy), {} in the {:.0} s between (after all were written, before \
         the refresh), {} for one refresh ({:.2} per copy); operator CPU for one label change \
         of a namespace none selects: {:.2} s; operator RSS {:.1} MiB before, peak {:.1} MiB \
         after (+{:.1} MiB)",
        all_written.as_secs_f64(),
        requests_at_creation,
        vendor.count(),
        creation_writes,
        creation_writes as f64 / pairs,
        between,
        quiet.as_secs_f64(),
        refresh_writes,
        refresh_writes as f64 / pairs,
        unrelated_cpu as f64 / 100.0,
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak.saturating_sub(rss_before)) as f64 / 1024.0,
    );
    assert_operator_never_refused(&cluster, &user);
    Some(())
}

fn main() {
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = numbers.first().copied().unwrap_or(2000);
    let k = numbers.get(1).copied().unwrap_or(1).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if runtime.block_on(run(n, k)).is_none() {
        eprintln!("no control plane: build it with controlplane/build.sh");
        std::process::exit(1);
    }
}
