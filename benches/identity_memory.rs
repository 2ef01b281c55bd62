//! Memory under what one tenant can make the operator hold with certificates (security round
//! three, item 3, and the attacks of its review). Each scenario runs the operator binary as its
//! own process against the API-server double, with a token endpoint that closes every
//! handshake, so that each client fails after its HTTP client was built (and is kept for its
//! retry). The figure is the operator's RSS growth from idle to every client settled, which
//! must stay under 60 MiB (the chart's limit is 128 MiB):
//!
//! 1. 200 `TlsClientAuth` clients with throwaway certificates, all trusting one CA bundle of
//!    about 1 MiB, in four namespaces: before the verifier of a bundle was shared, each identity
//!    client built its own root store (the review measured 34 → 135 MiB);
//! 2. 128 `TlsClientAuth` clients in one namespace (its default share), each with a chain of
//!    about 0.9 MiB: identities are bounded by the bytes of their chains, not only by count;
//! 3. 64 CA bundles in one namespace (its default share), each of about 1 MiB of certificates
//!    with 60 KiB subjects: bundles are bounded by their bytes, not only by certificates.
//!
//! ```sh
//! cargo bench --bench identity_memory
//! ```

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support::apiserver::{ApiServer, CONFIGMAPS, OAUTHCLIENTS, SECRETS};
use support::process::{spawn_with, status_kib};

const TARGET_MIB: f64 = 60.0;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A self-signed certificate and its key; a CA with a long subject (what a root store keeps of
/// each) when `ca`.
fn self_signed(name: &str, ca: bool) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec![format!("{name}.example")]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
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
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// A CA certificate with a subject of about 30 KiB (webpki takes no anchor over 64 KiB).
fn heavy_ca(name: &str) -> String {
    let mut params = rcgen::CertificateParams::new(vec![format!("{name}.example")]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    for (kind, fill) in [
        (rcgen::DnType::OrganizationName, 'O'),
        (rcgen::DnType::OrganizationalUnitName, 'U'),
    ] {
        let value = format!("{name}-{}", String::from(fill).repeat(14_000));
        params.distinguished_name.push(kind, value);
    }
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

/// PEM certificates from `make`, as many as fit in `bytes`.
fn bundle_of(bytes: usize, mut make: impl FnMut(usize) -> String) -> String {
    let mut pem = String::new();
    for i in 0.. {
        let cert = make(i);
        if pem.len() + cert.len() > bytes {
            break;
        }
        pem.push_str(&cert);
    }
    pem
}

fn oauth_client(api: &ApiServer, ns: &str, name: &str, spec: Value) {
    api.create(
        OAUTHCLIENTS,
        json!({
            "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
            "metadata": {"name": name, "namespace": ns}, "spec": spec,
        }),
    );
}

/// The Ready reasons of every client, counted.
fn reasons(api: &ApiServer) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for o in api.list(OAUTHCLIENTS, None) {
        let reason = o["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["reason"].as_str().unwrap_or("").to_owned())
            .unwrap_or_else(|| "none".into());
        *by.entry(reason).or_default() += 1;
    }
    by
}

/// Runs the operator, lets `create` fill the double, waits until every client has a Ready
/// condition, and prints the RSS growth.
async fn scenario(what: &str, create: impl FnOnce(&ApiServer, u16)) {
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
    let idle = status_kib(pid, "VmRSS:");
    create(&api, port);
    let created = Instant::now();
    while reasons(&api).contains_key("none") {
        assert!(
            created.elapsed() < Duration::from_secs(300),
            "{what}: not every client settled: {:?}\n{}",
            reasons(&api),
            process.text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = status_kib(pid, "VmRSS:");
    let peak = status_kib(pid, "VmHWM:");
    let growth = rss.saturating_sub(idle) as f64 / 1024.0;
    let sample: Vec<String> = api
        .list(OAUTHCLIENTS, None)
        .iter()
        .filter_map(|o| {
            let ready = o["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?;
            Some(ready["message"].as_str()?.chars().take(90).collect())
        })
        .collect::<std::collections::BTreeSet<String>>()
        .into_iter()
        .take(3)
        .collect();
    println!(
        "{what}: operator RSS idle {:.1} MiB, after {:.1} MiB, growth {growth:.1} MiB (target < {TARGET_MIB} MiB: {}), peak {:.1} MiB; settled after {:.1} s; Ready reasons {:?}; e.g. {sample:?}",
        idle as f64 / 1024.0,
        rss as f64 / 1024.0,
        if growth < TARGET_MIB { "met" } else { "MISSED" },
        peak as f64 / 1024.0,
        created.elapsed().as_secs_f64(),
        reasons(&api),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    scenario(
        "1. 200 TlsClientAuth clients with throwaway certificates, one 1 MiB bundle, 4 namespaces",
        |api, port| {
            let bundle = bundle_of(1024 * 1024, |i| self_signed(&format!("ca-{i}"), true).0);
            for n in 0..4 {
                api.create(
                    CONFIGMAPS,
                    json!({"metadata": {"name": "corp-ca", "namespace": format!("tenant-{n}")},
                           "data": {"ca.crt": bundle}}),
                );
            }
            for i in 0..200 {
                let ns = format!("tenant-{}", i % 4);
                let (cert, key) = self_signed(&format!("client-{i}"), false);
                api.create(
                    SECRETS,
                    json!({"metadata": {"name": format!("tls-{i}"), "namespace": ns},
                           "type": "kubernetes.io/tls",
                           "data": {"tls.crt": b64(&cert), "tls.key": b64(&key)}}),
                );
                oauth_client(
                    api,
                    &ns,
                    &format!("mtls-{i}"),
                    json!({"tokenUrl": format!("https://127.0.0.1:{port}/token"),
                           "clientAuthMethod": "TlsClientAuth", "clientId": format!("client-{i}"),
                           "credentialsSecretRef": {"name": format!("tls-{i}")},
                           "caBundleRef": {"name": "corp-ca"}}),
                );
            }
        },
    )
    .await;
    scenario(
        "2. 128 TlsClientAuth clients in one namespace, each with a 0.9 MiB certificate chain",
        |api, port| {
            let (padding, _) = self_signed("padding", true);
            let tail = padding.repeat(900 * 1024 / padding.len());
            for i in 0..128 {
                let (leaf, key) = self_signed(&format!("client-{i}"), false);
                api.create(
                    SECRETS,
                    json!({"metadata": {"name": format!("tls-{i}"), "namespace": "tenant-a"},
                           "type": "kubernetes.io/tls",
                           "data": {"tls.crt": b64(&format!("{leaf}{tail}")), "tls.key": b64(&key)}}),
                );
                oauth_client(
                    api,
                    "tenant-a",
                    &format!("mtls-{i}"),
                    json!({"tokenUrl": format!("https://127.0.0.1:{port}/token"),
                           "clientAuthMethod": "TlsClientAuth", "clientId": format!("client-{i}"),
                           "credentialsSecretRef": {"name": format!("tls-{i}")}}),
                );
            }
        },
    )
    .await;
    scenario(
        "3. 64 CA bundles in one namespace, each of 1 MiB of certificates with 30 KiB subjects",
        |api, port| {
            api.create(
                SECRETS,
                json!({"metadata": {"name": "creds", "namespace": "tenant-a"},
                       "data": {"client_id": b64("c"), "client_secret": b64("s")}}),
            );
            for i in 0..64 {
                let pem = bundle_of(1_000_000, |j| heavy_ca(&format!("ca-{i}-{j}")));
                api.create(
                    CONFIGMAPS,
                    json!({"metadata": {"name": format!("ca-{i}"), "namespace": "tenant-a"},
                           "data": {"ca.crt": pem}}),
                );
                oauth_client(
                    api,
                    "tenant-a",
                    &format!("bundle-{i}"),
                    json!({"tokenUrl": format!("https://127.0.0.1:{port}/token"),
                           "credentialsSecretRef": {"name": "creds"},
                           "caBundleRef": {"name": format!("ca-{i}")}}),
                );
            }
        },
    )
    .await;
}
