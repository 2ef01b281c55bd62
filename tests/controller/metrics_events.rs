//! What the operator tells: event notes fit the API server's byte limit, every exchange attempt
//! is counted exactly once in the metrics on every path, and the TLS metrics endpoint of the
//! binary keeps answering its probes under idle connections and answers the metrics to no
//! variation of the path without a token.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::apiserver::{ApiServer, OAUTHCLIENTS};
use crate::support::builders::{SecretObject, Spec, create_client};
use crate::support::harness::*;
use crate::support::process::{Process, spawn_with};
use crate::support::vendors::*;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

// === item 5 / events: the note limit is in bytes ===

/// Attacks `EventPublisher::publish` (src/controller/events.rs): the note is cut at 1000
/// *characters*, but the API server's limit is 1024 *bytes* (`len(note) > 1024` in
/// events.k8s.io validation), so a message with non-ASCII text (an endpoint's localised field
/// names, a spec path) is refused by a real API server and the `ExchangeFailed` event is lost
/// (only a WARN log says so). The double does not enforce the limit; this test checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_notes_fit_the_api_servers_byte_limit() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    // A 2xx without the token where the spec looks, with non-ASCII names.
    let mut body = serde_json::Map::new();
    for i in 0..12 {
        body.insert(format!("{}{i:02}", "字段名称".repeat(6)), json!(i));
    }
    for _ in 0..10 {
        vendor.push(Canned::new(200, Value::Object(body.clone()).to_string()));
    }
    let spec = generic_spec(&vendor).response_field("accessToken", &"令牌".repeat(110));
    create_client(&api, NS, "demo", &spec);
    wait_ready(&api, NS, "demo", "False", "InvalidResponse").await;
    let failed = eventually("the ExchangeFailed event", Duration::from_secs(5), || {
        events(&api, "ExchangeFailed").first().cloned()
    })
    .await;
    let note = failed["note"].as_str().unwrap();
    assert!(
        note.len() <= 1024,
        "event note of {} bytes ({} characters): a real API server refuses it",
        note.len(),
        note.chars().count()
    );
    operator.stop().await;
}

// === every attempt counted exactly once ===

/// The sum of every series of `metric`.
fn total(metrics: &str, metric: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One client per path through an exchange attempt, with the Ready it settles on: a token, a
/// refusal by the endpoint, credentials missing, credentials that are not text, a bundle that
/// cannot be read. Creates the credentials Secrets they name.
fn attempt_paths(
    api: &ApiServer,
    vendor: &TokenServer,
) -> [(&'static str, Spec, &'static str, &'static str); 5] {
    credentials(api, NS, "creds", ID, SECRET);
    credentials(api, NS, "wrong", ID, "not-the-secret-value");
    SecretObject::named("binary")
        .entry("client_id", ID)
        .bytes("client_secret", &[0xff, 0xfe, 0x00])
        .create(api, NS);
    let with = |secret: &str| generic_spec(vendor).credentials(secret);
    let no_bundle = with("creds").set("caBundleRef/name", "absent-ca");
    [
        ("ok", with("creds"), "True", "TokenIssued"),
        ("refused", with("wrong"), "False", "InvalidClient"),
        ("missing", with("absent"), "False", "CredentialsNotFound"),
        ("binary", with("binary"), "False", "InvalidCredentials"),
        ("no-bundle", no_bundle, "False", "CredentialsNotFound"),
    ]
}

/// Each path through an exchange attempt — a token, a refusal by the endpoint, credentials
/// missing, credentials that are not text, a bundle that cannot be read (refusals before any
/// request) — is counted once per attempt in `exchanges_total` (by result) and in
/// `exchange_triggers_total`, no more, no less: the counters equal the attempts the statuses
/// report (`consecutiveFailures`) and the requests the endpoint received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_is_counted_exactly_once_on_every_path() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    let metrics = operator.metrics.clone();
    let cases = attempt_paths(&api, &vendor);
    for (name, spec, _, _) in &cases {
        create_client(&api, NS, name, spec);
    }
    for (name, _, status, reason) in &cases {
        wait_ready(&api, NS, name, status, reason).await;
    }
    // Let the backoff retry the failures a few times.
    sleep(4000).await;
    operator.stop().await;
    let text = metrics.encode();
    let attempts = |name: &str| {
        api.get(OAUTHCLIENTS, NS, name).unwrap()["status"]["consecutiveFailures"]
            .as_f64()
            .unwrap_or(0.0)
    };
    let result = |r: &str| {
        series(
            &text,
            &format!("oauth_token_operator_exchanges_total{{provider=\"generic\",result=\"{r}\"}}"),
        )
    };
    assert_eq!(result("success"), 1.0, "{text}");
    assert_eq!(result("InvalidClient"), attempts("refused"), "{text}");
    assert_eq!(
        result("CredentialsNotFound"),
        attempts("missing") + attempts("no-bundle"),
        "{text}"
    );
    assert_eq!(result("InvalidCredentials"), attempts("binary"), "{text}");
    for name in ["refused", "missing", "binary", "no-bundle"] {
        assert!(attempts(name) >= 1.0, "{name} was attempted");
    }
    // Only the token and the endpoint's refusals reached the endpoint.
    assert_eq!(
        vendor.count() as f64,
        result("success") + result("InvalidClient")
    );
    // The same attempts, by trigger.
    let all = total(&text, "oauth_token_operator_exchanges_total");
    assert_eq!(
        total(&text, "oauth_token_operator_exchange_triggers_total"),
        all,
        "{text}"
    );
    assert_eq!(
        all,
        1.0 + ["refused", "missing", "binary", "no-bundle"]
            .iter()
            .map(|n| attempts(n))
            .sum::<f64>()
    );
}

// === the /metrics endpoint of the binary (formerly tests/metrics_endpoint.rs) ===
//
// Review of security round three, item 7: the TLS metrics endpoint (the chart's default) runs
// at most 64 handshakes at once, each for up to 5 s, and accepts only when a handshake slot is
// free. Whoever reaches the port (any pod, unless the off-by-default NetworkPolicy is on) and
// keeps a few hundred idle TCP connections open holds every slot; the kubelet's probes, on the
// same port over HTTPS with a 1 s timeout, queue behind them and fail, so the liveness probe
// restarts the operator (and keeps restarting it while the connections last).
//
// Then (a CI machine faster than ours): with the oldest handshake dropped to make room, idle
// connections that reconnect at once churned through the 128 places within milliseconds, and
// every probe was dropped before its handshake finished. Now silent connections are dropped
// before any client that said hello; no probe is dropped.

const IDLE_CONNECTIONS: usize = 512;

/// The operator binary with its metrics endpoint over TLS, against a double whose kubeconfig
/// is written in `dir`; the double is returned to live as long as the process.
async fn secure_metrics(dir: &std::path::Path) -> (ApiServer, Process) {
    let api = ApiServer::start_unlogged().await;
    let kubeconfig = api.write_kubeconfig(dir);
    let process = spawn_with(
        crate::support::process::BIN,
        &kubeconfig,
        &[],
        "review",
        &[
            ("OAUTH_TOKEN_OPERATOR_METRICS_SECURE", "true"),
            (
                "RUST_LOG",
                "warn,oauth_token_operator::runtime::health=info",
            ),
        ],
    );
    (api, process)
}

async fn probe(port: u16, timeout: Duration) -> Result<(u16, Duration), String> {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(timeout)
        .build()
        .unwrap();
    let started = Instant::now();
    let response = client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .map_err(|e| {
            let mut chain = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                chain.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            format!("{chain} after {:?}", started.elapsed())
        })?;
    Ok((response.status().as_u16(), started.elapsed()))
}

/// The attacker: IDLE_CONNECTIONS connections to `port` that never say hello; each reconnects
/// as soon as the server drops it, until `deadline`. Each task returns how many connections it
/// opened.
fn hold_idle_connections(
    port: u16,
    deadline: Instant,
    opened: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..IDLE_CONNECTIONS)
        .map(|_| {
            let opened = opened.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let Ok(mut socket) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    opened.fetch_add(1, Ordering::Relaxed);
                    let mut byte = [0u8; 1];
                    let left = deadline.saturating_duration_since(Instant::now());
                    let _ = tokio::time::timeout(left, socket.read(&mut byte)).await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_reconnecting_at_once_never_crowd_out_the_probes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (_api, process) = secure_metrics(dir.path()).await;
    let port = process.metrics_port().await;
    let (code, took) = probe(port, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("no baseline: {e}\n{}", process.text()));
    assert_eq!(code, 200);
    println!("baseline /healthz over TLS: {took:?}");

    // Bounded: 40 s in all.
    let opened = Arc::new(AtomicUsize::new(0));
    let attackers = hold_idle_connections(
        port,
        Instant::now() + Duration::from_secs(40),
        opened.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The kubelet: liveness every 10 s with its default 1 s timeout, failureThreshold 3 (here
    // three probes 5 s apart, to stay short).
    let mut results = Vec::new();
    for _ in 0..3 {
        results.push(probe(port, Duration::from_secs(1)).await);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    // How long one patient probe waits.
    let patient = probe(port, Duration::from_secs(25)).await;
    let opened = opened.load(Ordering::Relaxed);
    for a in attackers {
        a.abort();
    }
    drop(process);
    println!(
        "probes under attack (1 s timeout): {results:?}; a patient probe: {patient:?}; attacker connections opened: {opened}"
    );
    assert!(
        opened >= IDLE_CONNECTIONS,
        "the attack never held its connections: {opened} opened"
    );
    // The kubelet restarts the pod after three failures in a row. A probe may time out when
    // the whole suite loads the machine; none may be dropped (reset, or closed mid-handshake),
    // which is what the churn did to every one of them.
    let failed = results.iter().filter(|r| r.is_err()).count();
    let dropped = results
        .iter()
        .chain([&patient])
        .filter(|r| {
            r.as_ref()
                .is_err_and(|e| e.contains("reset") || e.contains("close_notify"))
        })
        .count();
    assert!(
        failed < 3 && dropped == 0 && patient.is_ok(),
        "{failed} of three liveness probes failed ({dropped} dropped) while {IDLE_CONNECTIONS} idle connections were held: {results:?}; a patient probe: {patient:?}"
    );
}

/// Variations of the path `/metrics`.
const METRICS_PATHS: [&str; 14] = [
    "/metrics",
    "//metrics",
    "/metrics/",
    "/metrics?x=1",
    "/metrics#x",
    "/./metrics",
    "/healthz/../metrics",
    "/METRICS",
    "/Metrics",
    "/%6detrics",
    "/metrics%2f",
    "/metrics;x",
    "/metrics/.",
    "/healthz/..%2fmetrics",
];

/// Variations of the method, the protocol and the credentials (curl's arguments).
const REQUEST_VARIANTS: [&[&str]; 7] = [
    &[],
    &["-I"],
    &["-X", "OPTIONS"],
    &["--http2"],
    &["--http2-prior-knowledge"],
    &["-H", "Authorization: Bearer"],
    &["-H", "Authorization: Basic YWRtaW46YWRtaW4="],
];

/// What curl gets for `url` (the path as it is) with the arguments `extra`: the body, then the
/// status code on a line of its own.
async fn curl(url: String, extra: &[&str]) -> String {
    let args: Vec<String> = [
        "-sk",
        "--path-as-is",
        "--max-time",
        "5",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(extra.iter().map(|s| s.to_string()))
    .chain([url])
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Path, method and protocol variations of `/metrics` without an accepted token (curl with
/// `--path-as-is`). None may answer the metrics. (This attack holds; kept as a regression.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_variation_of_the_metrics_path_answers_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_api, process) = secure_metrics(dir.path()).await;
    let port = process.metrics_port().await;
    let base = format!("https://127.0.0.1:{port}");
    let mut leaks = Vec::new();
    for path in METRICS_PATHS {
        for extra in REQUEST_VARIANTS {
            let text = curl(format!("{base}{path}"), extra).await;
            if text.contains("oauth_token")
                || text.trim_end().ends_with("200") && !path.contains("healthz")
            {
                leaks.push(format!(
                    "{path} {extra:?}: {}",
                    text.lines().last().unwrap_or("")
                ));
            }
        }
    }
    drop(process);
    assert!(leaks.is_empty(), "{leaks:?}");
}
