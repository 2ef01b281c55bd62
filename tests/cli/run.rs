//! The compiled binary's `run` command as a separate process, with a kubeconfig pointing at the
//! API-server double: it issues tokens, serves its probes and metrics (a deleted client's gauges
//! go with it) and stops on SIGTERM without printing a secret; a missing CRD, a cluster that is
//! gone and invalid flags are each one clear error; with leader election one instance is active
//! and a standby takes over without re-fetching valid tokens.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::unreachable_kubeconfig;
use crate::support::apiserver::ApiServer;
use crate::support::builders::{Spec, create_client};
use crate::support::harness::*;
use crate::support::process::{BIN, spawn, spawn_as};
use crate::support::vendors::*;

const ID: &str = "binary-client";
const SECRET: &str = "binary-secret-value";

async fn http_get(port: u16, path: &str) -> Option<u16> {
    fetch(port, path).await.map(|(status, _)| status)
}

async fn fetch(port: u16, path: &str) -> Option<(u16, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = format!("http://127.0.0.1:{port}{path}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let response = client.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// The value of the sample `series` (name and labels) in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_issues_tokens_serves_probes_and_stops_on_sigterm() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Iotspot, ID, SECRET, Tokens::Unique).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let child = spawn(&kubeconfig, &["--max-concurrent-exchanges", "2"]);
    let port = child.metrics_port().await;

    credentials(&api, "facilities", "iotspot-credentials", ID, SECRET);
    let spec = Spec::to(&vendor.url())
        .provider("iotspot")
        .credentials("iotspot-credentials");
    create_client(&api, "facilities", "iotspot", &spec);
    wait_ready(&api, "facilities", "iotspot", "True", "TokenIssued").await;
    assert_eq!(vendor.count(), 1);
    assert_eq!(http_get(port, "/healthz").await, Some(200));
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(port, "/readyz").await != Some(200) {
        assert!(Instant::now() < deadline, "/readyz never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Metrics hold the real exchange count and the expiry the status reports.
    let (status, text) = fetch(port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let exchanges = sample(
        &text,
        "oauth_token_operator_exchanges_total{provider=\"iotspot\",result=\"success\"}",
    );
    assert_eq!(exchanges, Some(1.0), "{text}");
    let expires_at: jiff::Timestamp = api
        .get(
            crate::support::apiserver::OAUTHCLIENTS,
            "facilities",
            "iotspot",
        )
        .unwrap()["status"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let gauge = sample(
        &text,
        "oauth_token_operator_token_expiration_timestamp_seconds{namespace=\"facilities\",name=\"iotspot\"}",
    );
    assert_eq!(gauge, Some(expires_at.as_second() as f64), "{text}");
    let ready = sample(
        &text,
        "oauth_token_operator_client_ready_status{namespace=\"facilities\",name=\"iotspot\",condition=\"True\"}",
    );
    assert_eq!(ready, Some(1.0));
    assert!(
        sample(
            &text,
            "oauth_token_operator_exchange_duration_seconds_count{provider=\"iotspot\"}"
        ) == Some(1.0)
    );
    assert!(sample(&text, "oauth_token_operator_reconcile_total").is_some_and(|n| n >= 1.0));
    // Deleting the OAuthClient removes its gauges.
    api.delete(
        crate::support::apiserver::OAUTHCLIENTS,
        "facilities",
        "iotspot",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = fetch(port, "/metrics").await.unwrap().1;
        if !text.contains("name=\"iotspot\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gauges of a deleted OAuthClient remain:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    child.signal("TERM");
    let (code, output) = child.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("shutting down"), "{output}");
    crate::support::logs::assert_absent(&output, &[SECRET, &vendor.issued()[0]], "operator logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_crd_is_one_clear_error() {
    let api = ApiServer::start_with(false).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let child = spawn(&kubeconfig, &[]);
    let (code, output) = child.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(
            "the OAuthClient CRD (oauthclients.oauth.token-operator.dev) is not installed"
        ),
        "{output}"
    );
    assert!(
        output.contains("kubectl apply -f crds/oauthclient.yaml"),
        "{output}"
    );
    assert!(!output.contains("panicked"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, port) = unreachable_kubeconfig(dir.path());
    let child = spawn(&path, &[]);
    let (code, output) = child.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!(
            "cannot reach the Kubernetes API server at http://127.0.0.1:{port}"
        )),
        "{output}"
    );
    assert!(!output.contains("panicked"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_are_validated_with_clear_errors() {
    let output = Command::new(BIN)
        .args(["run", "--max-concurrent-exchanges", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--max-concurrent-exchanges"));
    let output = Command::new(BIN)
        .args(["run", "--request-timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid duration"));
    let help = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--namespaces",
        "--allow-insecure-http",
        "--metrics-addr",
        "--max-concurrent-exchanges",
        "--request-timeout",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_keeps_one_active_instance_and_fails_over_without_refetching() {
    use crate::support::apiserver::{LEASES, OAUTHCLIENTS};
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let flags = ["--leader-elect", "--lease-duration", "3s"];
    let mut a = Some(spawn_as(&kubeconfig, &flags, "op-a"));
    let mut b = Some(spawn_as(&kubeconfig, &flags, "op-b"));
    let port_a = a.as_ref().unwrap().metrics_port().await;
    let port_b = b.as_ref().unwrap().metrics_port().await;

    credentials(&api, "ns", "creds", ID, SECRET);
    for i in 0..3 {
        create_client(&api, "ns", &format!("c{i}"), &Spec::to(&vendor.url()));
    }
    for i in 0..3 {
        wait_ready(&api, "ns", &format!("c{i}"), "True", "TokenIssued").await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        vendor.count(),
        3,
        "only the leader exchanges, once per client"
    );
    // Both are ready: the standby too.
    assert_eq!(http_get(port_a, "/readyz").await, Some(200));
    assert_eq!(http_get(port_b, "/readyz").await, Some(200));
    let holder = |api: &ApiServer| {
        api.get(
            LEASES,
            "oauth-token-operator-system",
            "oauth-token-operator",
        )
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    };
    let leader = holder(&api).expect("a lease holder");
    let standby = if leader == "op-a" { "op-b" } else { "op-a" };

    // Kill the leader without a chance to release the lease.
    let killed = if leader == "op-a" { a.take() } else { b.take() };
    let mut killed = killed.unwrap();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let started = Instant::now();
    eventually(
        "the standby to take the lease",
        Duration::from_secs(10),
        || (holder(&api).as_deref() == Some(standby)).then_some(()),
    )
    .await;
    let failover = started.elapsed();
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?} (lease 3 s)"
    );

    // The new leader reconciles: a forced refresh is served, and no valid token was re-fetched.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        vendor.count(),
        3,
        "valid tokens are not re-fetched during the failover"
    );
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    api.modify(OAUTHCLIENTS, "ns", "c0", |o| {
        o["metadata"]["annotations"] =
            json!({"oauth.token-operator.dev/refresh-requested-at": now});
    });
    eventually(
        "the new leader serves the forced refresh",
        Duration::from_secs(10),
        || (vendor.count() == 4).then_some(()),
    )
    .await;

    let survivor = a.or(b).unwrap();
    survivor.signal("TERM");
    let (code, output) = survivor.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("became the leader"), "{output}");
    // A graceful stop releases the lease.
    assert_eq!(holder(&api), None);
}
