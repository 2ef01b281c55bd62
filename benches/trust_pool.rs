//! Memory per distinct CA bundle: the operator builds one HTTP client per distinct trust
//! configuration and shares it between the OAuthClients that use it. This measures, in this
//! process (`VmRSS` from `/proc/self/status`), what each distinct client costs while it is held:
//!
//! 1. the default client (the system trust store, built with the transport);
//! 2. clients for bundles of one private CA each (a small `caBundleRef`);
//! 3. clients for bundles of the system store plus one private CA each (what a trust-manager
//!    `Bundle` with `useDefaultCAs: true` distributes);
//! 4. many OAuthClients sharing one bundle (one client);
//!
//! and that the pool is back to the default client alone once they are dropped.
//!
//! ```sh
//! cargo bench --bench trust_pool            # 200 small and 50 large bundles
//! cargo bench --bench trust_pool -- 1000 100
//! ```

use std::time::Duration;

use oauth_token_operator::oauth::transport::HttpClient;
use oauth_token_operator::oauth::transport::trust::{CaBundle, Trust};
use oauth_token_operator::oauth::transport::{Transport, TransportConfig};

/// Where Debian-based images keep the system store as one PEM file.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A fresh private CA certificate, PEM.
fn private_ca(serial: usize) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("Private CA {serial}"));
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

/// Builds one client per PEM text (each bundle dropped once its client exists, as the
/// controller does) and returns the clients and the RSS growth per client in KiB.
fn hold_clients(transport: &Transport, pems: &[String]) -> (Vec<HttpClient>, f64) {
    let before = rss_kib();
    let clients: Vec<HttpClient> = pems
        .iter()
        .enumerate()
        .map(|(i, pem)| {
            let bundle = CaBundle::parse(pem.as_bytes(), format!("ConfigMap ca-{i}")).unwrap();
            transport
                .client(&Trust::Bundle(bundle), None, &format!("ns-{i}"))
                .unwrap()
        })
        .collect();
    let grown = rss_kib().saturating_sub(before) as f64;
    (clients, grown / pems.len().max(1) as f64)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let small = args.first().copied().unwrap_or(200);
    let large = args.get(1).copied().unwrap_or(50);

    let start = rss_kib();
    let transport = Transport::from_config(TransportConfig {
        timeout: Duration::from_secs(10),
        ..Default::default()
    })
    .expect("a system trust store");
    println!(
        "default client (system store): {:.0} KiB",
        rss_kib().saturating_sub(start) as f64
    );

    // Generate every certificate first, so that only the clients are measured. One client is
    // built and dropped to warm up what every client shares (the allocator's arenas, lazy
    // statics).
    let smalls: Vec<String> = (0..small).map(private_ca).collect();
    let system = std::fs::read_to_string(SYSTEM_BUNDLE).unwrap_or_default();
    let system_certs = system.matches("BEGIN CERTIFICATE").count();
    let larges: Vec<String> = (0..large)
        .map(|i| format!("{system}{}", private_ca(small + i)))
        .collect();
    drop(hold_clients(&transport, &smalls[..1]));

    let (small_clients, per_small) = hold_clients(&transport, &smalls);
    println!(
        "{small} distinct bundles of 1 certificate: {per_small:.1} KiB per client ({} clients in use)",
        transport.clients_in_use()
    );
    let (large_clients, per_large) = hold_clients(&transport, &larges);
    println!(
        "{large} distinct bundles of {} certificates ({} PEM bytes): {per_large:.1} KiB per client ({} clients in use)",
        system_certs + 1,
        larges.first().map_or(0, String::len),
        transport.clients_in_use()
    );

    // Bundles at the size limit: each of MAX_BUNDLE_CERTIFICATES distinct certificates.
    let per = oauth_token_operator::oauth::transport::trust::MAX_BUNDLE_CERTIFICATES;
    let key = rcgen::KeyPair::generate().unwrap();
    let biggest: Vec<String> = (0..5)
        .map(|i| {
            (0..per)
                .map(|j| {
                    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                    params
                        .distinguished_name
                        .push(rcgen::DnType::CommonName, format!("limit {i} {j}"));
                    params.self_signed(&key).unwrap().pem()
                })
                .collect()
        })
        .collect();
    let (biggest_clients, per_biggest) = hold_clients(&transport, &biggest);
    println!(
        "5 distinct bundles of {per} certificates (the limit): {per_biggest:.1} KiB per client, {:.2} KiB per certificate; MAX_POOLED_ANCHORS ({}) certificates cost about {:.1} MiB",
        per_biggest / per as f64,
        oauth_token_operator::oauth::transport::pool::MAX_POOLED_ANCHORS,
        per_biggest / per as f64
            * oauth_token_operator::oauth::transport::pool::MAX_POOLED_ANCHORS as f64
            / 1024.0
    );
    drop(biggest_clients);

    let shared_pem = private_ca(usize::MAX / 2);
    let before = rss_kib();
    let shared: Vec<HttpClient> = (0..1000)
        .map(|i| {
            let bundle =
                CaBundle::parse(shared_pem.as_bytes(), format!("ConfigMap same-{i}")).unwrap();
            transport
                .client(&Trust::Bundle(bundle), None, &format!("ns-{i}"))
                .unwrap()
        })
        .collect();
    let distinct = 1 + shared
        .iter()
        .filter(|c| !c.shares_pool_with(&shared[0]))
        .count();
    println!(
        "1000 OAuthClients with one bundle: {distinct} client, {:.0} KiB in all",
        rss_kib().saturating_sub(before) as f64
    );

    drop((small_clients, large_clients, shared));
    println!(
        "after dropping them: {} client in use (the default one)",
        transport.clients_in_use()
    );
    assert_eq!(transport.clients_in_use(), 1);
}
