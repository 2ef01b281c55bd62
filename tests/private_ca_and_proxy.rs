//! The compiled binary behind a private CA and an egress proxy: `run` starts and works with the
//! proxy variables set (the API connection and token requests each routed by their rules), goes
//! to the API server through the proxy of the environment or the kubeconfig's `proxy-url`, and
//! trusts `--ca-file` / `OAUTH_TOKEN_OPERATOR_CA_FILE`; `exchange` verifies against
//! `--ca-bundle-file` alone, `--ca-file` on top of the system store, or the bundle the file's
//! `caBundleRef` names, through the proxy of the environment. Proxy userinfo never appears in
//! what the binaries print.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use support::apiserver::ApiServer;
use support::harness::*;
use support::process::{BIN, spawn_with};
use support::proxy::ProxyDouble;
use support::tls::{TestCa, TlsFront, https_url, port_of};
use support::vendors::*;

const ID: &str = "proxied-client";
const SECRET: &str = "proxied-secret-7d1e";
const PROXY_USER: &str = "egress-user-5b2a";
const PROXY_PASSWORD: &str = "egressPassw0rd9Kq";

/// A kubeconfig for `server`, with the cluster's `proxy-url` when given.
fn kubeconfig(dir: &Path, server: &str, proxy_url: Option<&str>) -> PathBuf {
    let path = dir.join("kubeconfig");
    let proxy = proxy_url
        .map(|p| format!("    proxy-url: {p}\n"))
        .unwrap_or_default();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {server}\n{proxy}contexts:\n- name: double\n  context:\n    cluster: double\n    user: test\n    namespace: default\ncurrent-context: double\nusers:\n- name: test\n  user:\n    token: test-token\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn forbidden() -> Vec<String> {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"));
    vec![
        SECRET.to_owned(),
        PROXY_USER.to_owned(),
        PROXY_PASSWORD.to_owned(),
        basic,
    ]
}

fn assert_clean(output: &str) {
    let forbidden = forbidden();
    let refs: Vec<&str> = forbidden.iter().map(String::as_str).collect();
    support::logs::assert_absent(output, &refs, "binary output");
    assert!(!output.contains("panicked"), "{output}");
}

/// Starts `run` with `env`, creates a client for `token_url` and waits until it is Ready; then
/// stops the process and returns its output.
async fn ready_through(
    api: &ApiServer,
    kubeconfig: &Path,
    token_url: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> String {
    let child = spawn_with(BIN, kubeconfig, extra, "op-proxy", env);
    credentials(api, "apps", "creds", ID, SECRET);
    oauth_client(
        api,
        "apps",
        "idp",
        json!({"tokenUrl": token_url, "credentialsSecretRef": {"name": "creds"}}),
    );
    wait_ready(api, "apps", "idp", "True", "TokenIssued").await;
    child.signal("TERM");
    let (code, output) = child.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, 0, "{output}");
    assert_clean(&output);
    output
}

// === run: the Kubernetes API connection and proxies ===

/// Before kube's `http-proxy` feature was on, `run` refused to start as soon as `HTTPS_PROXY`
/// was set. The `NO_PROXY` here ends with a comma, which kube's own parser refuses; the API
/// server (a loopback address, which client-go never proxies) and the token endpoint
/// (127.0.0.1 in `NO_PROXY`) are both reached directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_starts_with_the_proxy_variables_set_and_no_proxy_keeps_connections_direct() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let proxy = ProxyDouble::start().await;
    let proxy_url = proxy.url_with_userinfo(PROXY_USER, PROXY_PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &api.url(), None);
    let env = [
        ("HTTPS_PROXY", proxy_url.as_str()),
        ("HTTP_PROXY", proxy_url.as_str()),
        ("NO_PROXY", "127.0.0.1,"),
    ];
    let output = ready_through(&api, &config, &vendor.url(), &[], &env).await;
    assert_eq!(proxy.connections(), 0, "{:?}", proxy.requests());
    assert!(output.contains("kubernetes_api=direct"), "{output}");
    assert_eq!(vendor.count(), 1);
}

/// The API server's name resolves only at the proxy (as cluster-external names do behind an
/// egress proxy): the operator can only reach it through the proxy of the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reaches_the_api_server_through_the_proxy_of_the_environment() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let proxy = ProxyDouble::start().await;
    proxy.resolve_to_loopback("kubernetes.proxied.test");
    let proxy_url = proxy.url_with_userinfo(PROXY_USER, PROXY_PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let server = format!("http://kubernetes.proxied.test:{}", api.addr.port());
    let config = kubeconfig(dir.path(), &server, None);
    let env = [
        ("http_proxy", proxy_url.as_str()),
        ("no_proxy", "127.0.0.1"),
    ];
    let output = ready_through(&api, &config, &vendor.url(), &[], &env).await;
    let requests = proxy.requests();
    assert!(proxy.tunnels() >= 1, "{requests:?}");
    let target = format!("kubernetes.proxied.test:{}", api.addr.port());
    for request in &requests {
        assert_eq!(request.line, format!("CONNECT {target} HTTP/1.1"));
        let expected = base64::engine::general_purpose::STANDARD
            .encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"));
        assert_eq!(
            request.header("proxy-authorization"),
            Some(format!("Basic {expected}").as_str())
        );
    }
    assert!(
        output.contains(&format!(
            "kubernetes_api=via http://127.0.0.1:{} (http_proxy)",
            proxy.port()
        )),
        "{output}"
    );
    // The token endpoint is in no_proxy: reached directly.
    assert_eq!(vendor.count(), 1);
}

/// The kubeconfig's `proxy-url` carries every API request, loopback included, as in client-go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_the_kubeconfig_proxy_url() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let proxy = ProxyDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &api.url(), Some(&proxy.url()));
    let output = ready_through(&api, &config, &vendor.url(), &[], &[]).await;
    assert!(proxy.tunnels() >= 1);
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| r.line == format!("CONNECT 127.0.0.1:{} HTTP/1.1", api.addr.port())),
        "{:?}",
        proxy.requests()
    );
    assert!(output.contains("(kubeconfig proxy-url)"), "{output}");
}

// === run: --ca-file ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_trusts_the_ca_file_of_its_environment_variable_and_refuses_a_file_without_certificates()
 {
    let corp = TestCa::new("Corp Root CA");
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let front = TlsFront::start(&corp.issue(&["localhost"]), port_of(&server.url())).await;
    let url = https_url(&server.url(), "localhost", &front);
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = api.write_kubeconfig(dir.path());
    let ca = dir.path().join("corp-ca.pem");
    std::fs::write(&ca, corp.pem()).unwrap();
    let output = ready_through(
        &api,
        &config,
        &url,
        &[],
        &[("OAUTH_TOKEN_OPERATOR_CA_FILE", ca.to_str().unwrap())],
    )
    .await;
    assert!(output.contains("extra_trust_anchors=1"), "{output}");
    assert_eq!(server.count(), 1);

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let child = spawn_with(
        BIN,
        &config,
        &["--ca-file", empty.to_str().unwrap()],
        "op-1",
        &[],
    );
    let (code, output) = child.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!(
            "--ca-file {} holds no parseable PEM certificate",
            empty.display()
        )),
        "{output}"
    );
}

// === exchange: --ca-bundle-file, --ca-file, the file's caBundleRef, the proxy ===

struct Exchange {
    code: i32,
    stderr: String,
}

async fn exchange(args: Vec<String>, env: Vec<(&'static str, String)>) -> Exchange {
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(BIN);
        command
            .arg("exchange")
            .args(&args)
            .env("OAUTH_CLIENT_SECRET", SECRET)
            .env("RUST_LOG", "trace")
            .env_remove("OAUTH_TOKEN_OPERATOR_CA_FILE");
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_clean(&format!("{stdout}{stderr}"));
    Exchange {
        code: output.status.code().unwrap(),
        stderr,
    }
}

fn client_file(dir: &Path, name: &str, url: &str, extra: &str) -> String {
    let path = dir.join(name);
    let text = format!(
        "apiVersion: oauth.token-operator.dev/v1alpha1\nkind: OAuthClient\nmetadata:\n  name: idp\nspec:\n  tokenUrl: {url}\n  clientId: {ID}\n  credentialsSecretRef:\n    name: creds\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_verifies_against_the_bundle_alone_or_the_ca_file_on_top_of_the_system_store() {
    let (corp, other) = (TestCa::new("Corp Root CA"), TestCa::new("Other CA"));
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let front = TlsFront::start(&corp.issue(&["localhost"]), port_of(&server.url())).await;
    let url = https_url(&server.url(), "localhost", &front);
    let dir = tempfile::tempdir().unwrap();
    let (corp_pem, other_pem) = (dir.path().join("corp.pem"), dir.path().join("other.pem"));
    std::fs::write(&corp_pem, corp.pem()).unwrap();
    std::fs::write(&other_pem, other.pem()).unwrap();
    let (corp_pem, other_pem) = (
        corp_pem.to_str().unwrap().to_owned(),
        other_pem.to_str().unwrap().to_owned(),
    );
    let plain = client_file(dir.path(), "plain.yaml", &url, "");
    let args = |extra: &[&str]| {
        let mut args = vec!["-f".to_owned(), plain.clone()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let refused = exchange(args(&[]), vec![]).await;
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(
            "error: exchange failed: EndpointUnavailable: TLS: certificate signed by an unknown authority"
        ),
        "{}",
        refused.stderr
    );
    assert_eq!(
        exchange(args(&["--ca-file", &corp_pem]), vec![]).await.code,
        0
    );
    // --ca-bundle-file stands in for caBundleRef: that bundle alone, --ca-file or not.
    let alone = exchange(
        args(&["--ca-file", &corp_pem, "--ca-bundle-file", &other_pem]),
        vec![],
    )
    .await;
    assert_eq!(alone.code, 3, "{}", alone.stderr);
    assert!(
        alone.stderr.contains(&format!(
            "verified against --ca-bundle-file {other_pem} alone"
        )),
        "{}",
        alone.stderr
    );
    assert_eq!(
        exchange(args(&["--ca-bundle-file", &corp_pem]), vec![])
            .await
            .code,
        0
    );
    assert_eq!(server.count(), 2);

    // The file's caBundleRef, read from the ConfigMap in the file (as trust-manager writes it).
    let bundle = format!(
        "  caBundleRef:\n    name: corp-ca\n    key: trust-bundle.pem\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: corp-ca\ndata:\n  trust-bundle.pem: |\n{}",
        corp.pem()
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    let with_map = client_file(dir.path(), "bundle.yaml", &url, &bundle);
    assert_eq!(exchange(vec!["-f".into(), with_map], vec![]).await.code, 0);
    let missing = client_file(
        dir.path(),
        "missing.yaml",
        &url,
        "  caBundleRef:\n    name: absent\n",
    );
    let run = exchange(vec!["-f".into(), missing], vec![]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("CredentialsNotFound: spec.caBundleRef names ConfigMap absent, which is not in the file: pass --ca-bundle-file FILE or include it"),
        "{}",
        run.stderr
    );
    assert_eq!(server.count(), 3);
}

/// An endpoint whose certificate authority is unknown is the tenant's misconfiguration: the
/// command says so once, and no dependency adds an `ERROR` line (the TLS verifier logged one for
/// every refused certificate), at the default level or at `RUST_LOG=info` as deployments set it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_authority_is_said_once_and_logs_no_error_line() {
    let corp = TestCa::new("Corp Root CA");
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let front = TlsFront::start(&corp.issue(&["localhost"]), port_of(&server.url())).await;
    let url = https_url(&server.url(), "localhost", &front);
    let dir = tempfile::tempdir().unwrap();
    let file = client_file(dir.path(), "plain.yaml", &url, "");
    for level in [None, Some("info"), Some("debug")] {
        let output = std::process::Command::new(BIN)
            .args(["exchange", "-f", &file])
            .env("OAUTH_CLIENT_SECRET", SECRET)
            .env_remove("RUST_LOG")
            .env_remove("OAUTH_TOKEN_OPERATOR_CA_FILE")
            .envs(level.map(|l| ("RUST_LOG", l)))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains("certificate signed by an unknown authority"),
            "{stderr}"
        );
        assert!(
            !stderr.lines().any(|l| l.contains("ERROR"))
                && !stderr.contains("failed to verify TLS certificate"),
            "RUST_LOG={level:?}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_goes_through_the_proxy_of_the_environment_and_verifies_through_the_tunnel() {
    let corp = TestCa::new("Corp Root CA");
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let front = TlsFront::start(&corp.issue(&["localhost"]), port_of(&server.url())).await;
    let url = https_url(&server.url(), "localhost", &front);
    let proxy = ProxyDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("corp.pem");
    std::fs::write(&ca, corp.pem()).unwrap();
    let file = client_file(dir.path(), "c.yaml", &url, "");
    let run = exchange(
        vec![
            "-f".into(),
            file,
            "--ca-bundle-file".into(),
            ca.to_str().unwrap().into(),
        ],
        vec![(
            "HTTPS_PROXY",
            proxy.url_with_userinfo(PROXY_USER, PROXY_PASSWORD),
        )],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(proxy.tunnels(), 1);
    assert_eq!(
        proxy.requests()[0].line,
        format!("CONNECT localhost:{} HTTP/1.1", front.port())
    );
    assert_eq!(server.count(), 1);
}
