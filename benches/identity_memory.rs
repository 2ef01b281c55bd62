//! Memory under the identity attack of the third security review: 200 OAuthClients with
//! throwaway client certificates (`TlsClientAuth`, a fresh key and self-signed certificate each),
//! all trusting one CA bundle of about 1 MiB (1,000 certificates, the most a bundle may hold),
//! in four namespaces (so that no namespace's share of `--max-tls-identities` refuses them and
//! every identity client is built). The operator binary runs as a separate process against the
//! API-server double; the token endpoint closes every handshake, so each client fails after its
//! identity client was built (and kept for its retry). The figure is the operator's RSS growth
//! from idle to every client failed, which must stay under 60 MiB: before the verifier of a
//! bundle was shared, each identity client built its own root store of the bundle (the review
//! measured 34 → 135 MiB, past the chart's 128 MiB limit).
//!
//! ```sh
//! cargo bench --bench identity_memory
//! ```

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports, dead_code)]
mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use support::apiserver::{ApiServer, CONFIGMAPS, OAUTHCLIENTS, SECRETS};
use support::process::spawn_with;

const CLIENTS: usize = 200;
const NAMESPACES: usize = 4;
const BUNDLE_CERTIFICATES: usize = 1000;
const TARGET_MIB: f64 = 60.0;

fn kib_field(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A self-signed certificate (a CA, for the bundle; or a throwaway client identity) and its key.
fn self_signed(name: &str, ca: bool) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec![format!("{name}.example")]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    // CAs with long subjects (what a root store keeps of each), so that 1,000 of them make a
    // bundle of about 1 MiB, as corporate bundles with long organisation names do.
    if ca {
        let long = |what: &str| format!("{what} of {name} ").repeat(8);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, long("Organisation"));
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, long("Unit"));
        params
            .distinguished_name
            .push(rcgen::DnType::LocalityName, long("Locality"));
    }
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start_unlogged().await;
    let (port, _) = support::tls::closing_endpoint().await;
    let kubeconfig = api.write_kubeconfig(dir.path());
    let process = spawn_with(
        support::process::BIN,
        &kubeconfig,
        &[],
        "bench",
        &[(
            "RUST_LOG",
            "warn,oauth_token_operator::runtime::health=info",
        )],
    );
    let pid = process.child.id();
    process.metrics_port().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = kib_field(pid, "VmRSS:");

    let bundle: String = (0..BUNDLE_CERTIFICATES)
        .map(|i| self_signed(&format!("ca-{i}"), true).0)
        .collect();
    let bundle = &bundle[..bundle.len().min(1024 * 1024)];
    let bundle = &bundle[..bundle.rfind("-----END CERTIFICATE-----").unwrap() + 25];
    for n in 0..NAMESPACES {
        api.create(
            CONFIGMAPS,
            json!({"metadata": {"name": "corp-ca", "namespace": format!("tenant-{n}")},
                   "data": {"ca.crt": bundle}}),
        );
    }
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for i in 0..CLIENTS {
        let ns = format!("tenant-{}", i % NAMESPACES);
        let (cert, key) = self_signed(&format!("client-{i}"), false);
        api.create(
            SECRETS,
            json!({"metadata": {"name": format!("tls-{i}"), "namespace": ns},
                   "type": "kubernetes.io/tls",
                   "data": {"tls.crt": b64(&cert), "tls.key": b64(&key)}}),
        );
        api.create(
            OAUTHCLIENTS,
            json!({
                "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
                "metadata": {"name": format!("mtls-{i}"), "namespace": ns},
                "spec": {
                    "tokenUrl": format!("https://127.0.0.1:{port}/token"),
                    "clientAuthMethod": "TlsClientAuth",
                    "clientId": format!("client-{i}"),
                    "credentialsSecretRef": {"name": format!("tls-{i}")},
                    "caBundleRef": {"name": "corp-ca"},
                },
            }),
        );
    }
    let created = Instant::now();
    let failed = |reason: &str| {
        api.count_matching(OAUTHCLIENTS, |o| {
            o["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["reason"] == reason)
            })
        })
    };
    loop {
        let done = failed("EndpointUnavailable");
        if done == CLIENTS {
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(180),
            "{done}/{CLIENTS} failed at the endpoint\n{}",
            process.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_kib = kib_field(pid, "VmRSS:");
    let peak_kib = kib_field(pid, "VmHWM:");
    let growth = (rss_kib.saturating_sub(idle_kib)) as f64 / 1024.0;
    let messages: Vec<String> = api
        .list(OAUTHCLIENTS, None)
        .iter()
        .filter_map(|o| {
            o["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?["message"]
                .as_str()
                .map(|m| m.chars().take(60).collect())
        })
        .collect::<std::collections::BTreeSet<String>>()
        .into_iter()
        .collect();
    println!(
        "identity attack: {CLIENTS} TlsClientAuth clients with distinct throwaway certificates, one {:.0} KiB bundle of {BUNDLE_CERTIFICATES} certificates, {NAMESPACES} namespaces: operator RSS idle {:.1} MiB, after {:.1} MiB, growth {growth:.1} MiB (target < {TARGET_MIB} MiB: {}), peak {:.1} MiB; every client failed at the endpoint after {:.1} s ({messages:?})",
        bundle.len() as f64 / 1024.0,
        idle_kib as f64 / 1024.0,
        rss_kib as f64 / 1024.0,
        if growth < TARGET_MIB { "met" } else { "MISSED" },
        peak_kib as f64 / 1024.0,
        created.elapsed().as_secs_f64(),
    );
    drop(process);
}
