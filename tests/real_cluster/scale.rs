//! Scale on the real API server: N OAuthClients (each with its credentials Secret) created at
//! once against the cluster-wide chart's operator and a loopback token endpoint answering in
//! about 5 ms. Prints the time from the first create to all Ready, the operator's API requests
//! per client (from the server's `apiserver_request_total`, the other clients' requests taken
//! out as the audit log counts them) and the operator's peak RSS. The test runs N = 1,000; the
//! bench `cargo bench --bench real_cluster_scale -- 10000` runs larger N (not in CI).

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams};
use oauth_token_operator::api::crd::OAuthClient;
use serde_json::json;

use crate::common::*;
use crate::support::control_plane::{Options, own_cluster};
use crate::support::vendors::{TokenServer, Tokens, Vendor};

const ID: &str = "scale-client";
const SECRET: &str = "scale-s3cret-value";
const NAMESPACES: usize = 10;

/// What one run measured.
#[derive(Debug)]
pub struct Figures {
    pub clients: usize,
    /// From the first create to the last (the test's own requests, 64 at a time).
    pub created: Duration,
    /// From the first create to the last client Ready.
    pub all_ready: Duration,
    /// Token requests per client.
    pub token_requests_per_client: f64,
    /// `apiserver_request_total` over the run, all clients of the API server.
    pub api_requests_total: f64,
    /// The operator's requests (the total less the test's own and kube-controller-manager's, as
    /// the audit log counts them).
    pub operator_requests: f64,
    /// The operator's requests as the audit log counts them (a cross-check).
    pub operator_requests_audited: usize,
    /// The operator's peak RSS (VmHWM), KiB.
    pub peak_rss_kib: u64,
}

impl Figures {
    pub fn print(&self) {
        println!(
            "real-cluster scale, {} OAuthClients: created in {:.1} s, all Ready {:.1} s; token requests per client \
             {:.2}; operator API requests per client {:.2} (apiserver_request_total: {:.0} in \
             all, {:.0} the operator's; audit log: {} the operator's); operator peak RSS {:.1} MiB",
            self.clients,
            self.created.as_secs_f64(),
            self.all_ready.as_secs_f64(),
            self.token_requests_per_client,
            self.operator_requests / self.clients as f64,
            self.api_requests_total,
            self.operator_requests,
            self.operator_requests_audited,
            self.peak_rss_kib as f64 / 1024.0
        );
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Runs the scenario with `n` clients on a control plane of its own.
pub async fn run(n: usize) -> Option<Figures> {
    let cluster = own_cluster("real-cluster scale", Options::default()).await?;
    let plane = cluster.local.clone()?;
    let client = cluster.client().await;
    let install = Install::new(&cluster, "scale", json!({"allowInsecureHttp": true})).await;
    let operator = install.pod("scale-0").await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    vendor.set_delay(Duration::from_millis(5));
    vendor.count_only();
    let mut namespaces = Vec::new();
    for i in 0..NAMESPACES {
        namespaces.push(cluster.namespace(&format!("scale-{i}")).await);
    }
    let before_total = plane.request_total().await;
    let audited_before = plane.audit_events().len();
    let started = Instant::now();
    // Create everything at once (64 requests in flight).
    let url = vendor.url();
    futures::stream::iter(0..n)
        .map(|i| {
            let (client, ns, url) = (
                client.clone(),
                namespaces[i % NAMESPACES].clone(),
                url.clone(),
            );
            async move {
                let creds = format!("creds-{i}");
                credentials(&client, &ns, &creds, ID, SECRET).await;
                oauth_client(
                    &client,
                    &ns,
                    &format!("client-{i}"),
                    json!({"tokenUrl": url, "credentialsSecretRef": {"name": creds}}),
                )
                .await;
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    let created = started.elapsed();
    let all: Api<OAuthClient> = Api::all(client.clone());
    let deadline = started + Duration::from_secs(60 + n as u64 / 10);
    loop {
        let list = all.list(&ListParams::default()).await.unwrap();
        let ready = list
            .items
            .iter()
            .filter(|c| {
                c.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if ready == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ready} of {n} Ready after {:?}\n{}",
            started.elapsed(),
            operator.text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_ready = started.elapsed();
    // Let the last status writes and events land in the counters.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = plane.request_total().await - before_total;
    let events: Vec<_> = plane
        .audit_events()
        .into_iter()
        .skip(audited_before)
        .collect();
    let operator_user = install.user();
    let audited = events.iter().filter(|e| e.user == operator_user).count();
    // Watches still open are not in apiserver_request_total (it counts finished requests).
    let others = events
        .iter()
        .filter(|e| e.user != operator_user && e.verb != "watch")
        .count();
    let figures = Figures {
        clients: n,
        created,
        all_ready,
        token_requests_per_client: vendor.count() as f64 / n as f64,
        api_requests_total: total,
        operator_requests: total - others as f64,
        operator_requests_audited: audited,
        peak_rss_kib: peak_rss_kib(operator.child.id()),
    };
    assert_operator_never_refused(&cluster, &operator_user);
    Some(figures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_created_at_once_all_become_ready() {
    let Some(figures) = run(1000).await else {
        return;
    };
    figures.print();
    assert_eq!(figures.token_requests_per_client, 1.0);
}
