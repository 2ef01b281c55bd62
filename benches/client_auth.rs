//! Client authentication at scale: N OAuthClients of each method, one method after the other,
//! against the same operator process (the compiled binary, measured alone) and the API-server
//! double, in one run:
//!
//! 1. `ClientSecretPost` (the baseline);
//! 2. `PrivateKeyJwt` RS256 (one RSA 2048 key, each client its own Secret);
//! 3. `PrivateKeyJwt` ES256 (a distinct P-256 key per client);
//! 4. `TlsClientAuth` (a distinct key and certificate per client, from a CA made for the run,
//!    against the mTLS endpoint; the operator trusts that CA through `--ca-file`).
//!
//! For each: the time until all N are Ready, the operator's CPU time per client, its RSS
//! growth per client at Ready (and for mTLS also 65 s later, once idle connections have
//! closed). Before that, the CPU time of signing one assertion, measured in this process with
//! the operator's own assertion code.
//!
//! ```sh
//! cargo bench --bench client_auth            # N = 1000
//! cargo bench --bench client_auth -- 100     # another N
//! ```

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support::apiserver::{ApiServer, OAUTHCLIENTS, SECRETS};
use support::assertions::{Expectation, VerifyingKey};
use support::mtls::{MtlsServer, fixture};
use support::process::{Process, spawn_with};
use support::vendors::{TokenServer, Tokens, Vendor};

const TOKEN_DELAY: Duration = Duration::from_millis(5);

/// CPU seconds (user + system) and RSS (KiB) of a process.
fn stats(pid: &str) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ((ticks(11) + ticks(12)) as f64 / 100.0, rss)
}

/// CPU time of building and signing one assertion with `key`, over `rounds`.
fn signing_cost(key: &str, rounds: u32) -> Duration {
    use oauth_token_operator::oauth::assertion::{Signer, build};
    use oauth_token_operator::oauth::identity::Identity;
    use oauth_token_operator::spec::AssertionSettings;
    let identity = Identity::load(&fixture(key), key, None).unwrap();
    let settings = AssertionSettings {
        algorithm: None,
        key_id: Some("bench".into()),
        audience: "https://idp.example/token".into(),
        lifetime: Duration::from_secs(300),
    };
    let before = stats("self").0;
    for i in 0..rounds {
        let now = jiff::Timestamp::now();
        let random: [u8; 16] = std::array::from_fn(|b| (i as u8).wrapping_add(b as u8));
        build(&settings, "bench", Signer::Key(&identity), now, random).unwrap();
    }
    Duration::from_secs_f64((stats("self").0 - before) / f64::from(rounds))
}

/// What one method's N clients cost.
struct Figures {
    method: &'static str,
    all_ready: Duration,
    cpu_per_client: Duration,
    rss_growth_kib: f64,
    rss_growth_idle_kib: Option<f64>,
}

/// One client to create: its Secret's data and its spec.
struct Client {
    data: Value,
    spec: Value,
}

/// Creates the clients of one method and measures until all are Ready.
async fn measure(
    api: &ApiServer,
    pid: &str,
    method: &'static str,
    clients: Vec<Client>,
) -> Figures {
    let n = clients.len();
    let ready_before = api.ready_count();
    let (cpu0, rss0) = stats(pid);
    let started = Instant::now();
    let ns = format!("bench-{}", method.to_lowercase().replace(' ', "-"));
    for (i, c) in clients.into_iter().enumerate() {
        let name = format!("client-{i}");
        api.create(
            SECRETS,
            json!({"metadata": {"name": format!("{name}-creds"), "namespace": ns}, "data": c.data}),
        );
        let mut spec = c.spec;
        spec["credentialsSecretRef"] = json!({"name": format!("{name}-creds")});
        api.create(
            OAUTHCLIENTS,
            json!({"apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
                   "metadata": {"name": name, "namespace": ns}, "spec": spec}),
        );
    }
    while api.ready_count() < ready_before + n {
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{method}: {} of {n} Ready after 15 min",
            api.ready_count() - ready_before
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu1, rss1) = stats(pid);
    Figures {
        method,
        all_ready,
        cpu_per_client: Duration::from_secs_f64((cpu1 - cpu0) / n as f64),
        rss_growth_kib: (rss1 as f64 - rss0 as f64) / n as f64,
        rss_growth_idle_kib: None,
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// N ClientSecretPost clients.
fn secret_clients(url: &str, n: usize) -> Vec<Client> {
    (0..n)
        .map(|_| Client {
            data: json!({"client_id": b64(b"bench-id"), "client_secret": b64(b"bench-secret")}),
            spec: json!({"tokenUrl": url, "clientAuthMethod": "ClientSecretPost"}),
        })
        .collect()
}

/// N PrivateKeyJwt clients with the fixture RSA key, registered with the emulator.
fn rs256_clients(vendor: &TokenServer, n: usize) -> Vec<Client> {
    let url = vendor.url();
    let key = fixture("rsa-pkcs1.pem");
    (0..n)
        .map(|i| {
            let id = format!("rs256-{i}");
            let registered = VerifyingKey::of_certificate(&fixture("rsa.crt"), &["RS256"]);
            vendor.expect_assertions(Expectation::of_client(&id, registered, &url));
            Client {
                data: json!({"client_id": b64(id.as_bytes()), "tls.key": b64(&key)}),
                spec: json!({"tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt"}),
            }
        })
        .collect()
}

/// N PrivateKeyJwt clients, each with its own P-256 key, registered with the emulator.
fn es256_clients(vendor: &TokenServer, n: usize) -> Vec<Client> {
    let url = vendor.url();
    (0..n)
        .map(|i| {
            let id = format!("es256-{i}");
            let key = rcgen::KeyPair::generate().unwrap();
            let registered = VerifyingKey::Public(key.public_key_raw().to_vec(), vec!["ES256"]);
            vendor.expect_assertions(Expectation::of_client(&id, registered, &url));
            Client {
                data: json!({"client_id": b64(id.as_bytes()), "tls.key": b64(key.serialize_pem().as_bytes())}),
                spec: json!({"tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt"}),
            }
        })
        .collect()
}

/// A CA for the run: its certificate (PEM), and an issuer of certificates.
struct BenchCa {
    pem: String,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl BenchCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client-auth bench CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        BenchCa { pem, params, key }
    }

    /// A certificate for `names` (and a new key), signed by the CA.
    fn issue(&self, names: Vec<String>, cn: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::new(self.params.clone(), &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// N TlsClientAuth clients, each with its own key and certificate, registered with the endpoint.
fn tls_clients(endpoint: &MtlsServer, ca: &BenchCa, n: usize) -> Vec<Client> {
    (0..n)
        .map(|i| {
            let id = format!("mtls-{i}");
            let (cert, key) = ca.issue(Vec::new(), &id);
            endpoint.register(&id, cert.as_bytes());
            Client {
                data: json!({"client_id": b64(id.as_bytes()), "tls.key": b64(key.as_bytes()), "tls.crt": b64(cert.as_bytes())}),
                spec: json!({"tokenUrl": endpoint.url(), "clientAuthMethod": "TlsClientAuth"}),
            }
        })
        .collect()
}

async fn start_operator(api: &ApiServer, dir: &std::path::Path, ca: &BenchCa) -> Process {
    let ca_file = dir.join("bench-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let kubeconfig = api.write_kubeconfig(dir);
    let ca_file = ca_file.to_string_lossy().into_owned();
    let process = spawn_with(
        support::process::BIN,
        &kubeconfig,
        &["--max-concurrent-exchanges", "32"],
        "bench",
        &[
            // The metrics address is read back from the health server's log line.
            (
                "RUST_LOG",
                "warn,oauth_token_operator::runtime::health=info",
            ),
            ("OAUTH_TOKEN_OPERATOR_CA_FILE", &ca_file),
        ],
    );
    let port = process.metrics_port().await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    while !client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not ready:\n{}",
            process.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    process
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    println!(
        "client authentication benchmark: N = {n} per method, token endpoints answer in about {TOKEN_DELAY:?}"
    );
    // /proc counts CPU time in 10 ms ticks: enough rounds for a second or so of each.
    let rs256 = signing_cost("rsa-pkcs1.pem", 1_000);
    let es256 = signing_cost("ec-p256-sec1.pem", 10_000);
    println!(
        "CPU per assertion (build and sign, in-process): RS256 {rs256:.2?}, ES256 {es256:.2?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start().await;
    api.set_history_limit(50_000);
    let vendor =
        TokenServer::start(Vendor::Generic, "bench-id", "bench-secret", Tokens::Unique).await;
    vendor.set_delay(TOKEN_DELAY);
    let ca = BenchCa::new();
    let (server_cert, server_key) = ca.issue(vec!["localhost".into()], "localhost");
    let endpoint = MtlsServer::start_with(
        ca.pem.as_bytes(),
        server_cert.as_bytes(),
        server_key.as_bytes(),
    )
    .await;
    let operator = start_operator(&api, dir.path(), &ca).await;
    let pid = operator.child.id().to_string();

    let mut figures = Vec::new();
    figures.push(
        measure(
            &api,
            &pid,
            "ClientSecretPost",
            secret_clients(&vendor.url(), n),
        )
        .await,
    );
    figures.push(measure(&api, &pid, "PrivateKeyJwt RS256", rs256_clients(&vendor, n)).await);
    figures.push(measure(&api, &pid, "PrivateKeyJwt ES256", es256_clients(&vendor, n)).await);
    let (_, rss_before_tls) = stats(&pid);
    let mut tls = measure(&api, &pid, "TlsClientAuth", tls_clients(&endpoint, &ca, n)).await;
    // The identity clients' idle connections close after 60 s; their clients stay.
    tokio::time::sleep(Duration::from_secs(65)).await;
    let (_, rss_idle) = stats(&pid);
    tls.rss_growth_idle_kib = Some((rss_idle as f64 - rss_before_tls as f64) / n as f64);
    figures.push(tls);
    operator.signal("TERM");
    let _ = operator.wait_exit(Duration::from_secs(30)).await;

    let baseline = figures[0].all_ready.as_secs_f64();
    println!();
    println!(
        "| method (N = {n}) | all Ready | vs ClientSecretPost | operator CPU per client | RSS growth per client at Ready | after 65 s idle |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for f in &figures {
        println!(
            "| {} | {:.1} s | x{:.2} | {:.2?} | {:.1} KiB | {} |",
            f.method,
            f.all_ready.as_secs_f64(),
            f.all_ready.as_secs_f64() / baseline,
            f.cpu_per_client,
            f.rss_growth_kib,
            f.rss_growth_idle_kib
                .map_or("-".into(), |k| format!("{k:.1} KiB")),
        );
    }
}
