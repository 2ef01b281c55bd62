//! The compiled binary's `run` command as a separate process, with a kubeconfig pointing at the
//! API-server double.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::apiserver::ApiServer;
use support::harness::*;
use support::vendors::*;

const BIN: &str = env!("CARGO_BIN_EXE_oauth-token-operator");
const ID: &str = "binary-client";
const SECRET: &str = "binary-secret-value";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(kubeconfig: &std::path::Path, metrics_port: u16, extra: &[&str]) -> Child {
    Command::new(BIN)
        .arg("run")
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env(
            "OAUTH_TOKEN_OPERATOR_METRICS_ADDR",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("OAUTH_TOKEN_OPERATOR_ALLOW_INSECURE_HTTP", "true")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn http_get(port: u16, path: &str) -> Option<u16> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = format!("http://127.0.0.1:{port}{path}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Waits for the process to exit, at most `timeout`; returns its exit code and output.
async fn wait_exit(mut child: Child, timeout: Duration) -> (i32, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return (status.code().unwrap_or(-1), text);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the process did not exit within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_issues_tokens_serves_probes_and_stops_on_sigterm() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Iotspot, ID, SECRET, Tokens::Unique).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let port = free_port();
    let child = spawn(&kubeconfig, port, &["--max-concurrent-exchanges", "2"]);

    credentials(&api, "facilities", "iotspot-credentials", ID, SECRET);
    oauth_client(
        &api,
        "facilities",
        "iotspot",
        json!({"provider": "iotspot", "tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "iotspot-credentials"}}),
    );
    wait_ready(&api, "facilities", "iotspot", "True", "TokenIssued").await;
    assert_eq!(vendor.count(), 1);
    assert_eq!(http_get(port, "/healthz").await, Some(200));
    assert_eq!(http_get(port, "/readyz").await, Some(200));

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let (code, output) = wait_exit(child, Duration::from_secs(10)).await;
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("shutting down"), "{output}");
    support::logs::assert_absent(&output, &[SECRET, &vendor.issued()[0]], "operator logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_crd_is_one_clear_error() {
    let api = ApiServer::start_with(false).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let child = spawn(&kubeconfig, free_port(), &[]);
    let (code, output) = wait_exit(child, Duration::from_secs(10)).await;
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
    let port = free_port();
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: gone\n  context:\n    cluster: gone\ncurrent-context: gone\nusers: []\n"),
    )
    .unwrap();
    let child = spawn(&path, free_port(), &[]);
    let (code, output) = wait_exit(child, Duration::from_secs(20)).await;
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
