//! Scale benchmark: N OAuthClients on the API-server double, with the compiled operator binary
//! as a separate process (so that its memory and CPU are measured alone).
//!
//! ```sh
//! cargo bench --bench scale                       # N = 100, 1000, 10000
//! cargo bench --bench scale -- 100 --quick        # the CI smoke run
//! cargo bench --bench scale -- 10000 --baseline /path/to/previous/oauth-token-operator
//! ```
//!
//! With `--baseline BINARY`, each N runs first with that binary (for example the build of the
//! previous main), then with this build, and both figures are printed with their ratio.
//!
//! Each run (one binary, one N) is a child process of the bench (`--one N BINARY`), with its own
//! double, token endpoint and runtime: a later run inherits nothing of an earlier one. (Run in one
//! process, the second of two runs of the same binary took 14% longer to all Ready: the first
//! run's double, 20,000 objects and their history, was still in memory and served.)
//!
//! For each N it: fills the double with 10,000 unrelated Secrets (a few of 1 MiB), starts the
//! operator, creates N credentials Secrets and N OAuthClients at once against a loopback token
//! endpoint answering in about 5 ms, and measures the time until all are Ready, apply→Ready
//! latency, token requests and API writes per OAuthClient, the operator's RSS and CPU; then
//! switches to 60 s tokens and measures refresh lateness; then restarts the operator with every
//! token valid and counts token requests and writes.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use support::apiserver::{ApiServer, OAUTHCLIENTS, SECRETS};
use support::process::{Process, spawn_with};
use support::vendors::{TokenServer, Tokens, Vendor};

/// The bench's own process (the API-server double and the token endpoint) runs on jemalloc, as
/// the operator does: on glibc's malloc about 40% of the double's CPU went to malloc and free
/// (perf; docs/performance.md), and on two cores that CPU is taken from the operator measured.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const UNRELATED_SECRETS: usize = 10_000;
const LARGE_SECRETS: usize = 5;
const TOKEN_DELAY: Duration = Duration::from_millis(5);

struct Options {
    sizes: Vec<usize>,
    quick: bool,
    /// Another operator binary to run beside this build.
    baseline: Option<String>,
    /// A child's one run: N and the binary.
    one: Option<(usize, String)>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    if let Some(i) = args.iter().position(|a| a == "--one") {
        let n = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--one N BINARY");
        let binary = args.get(i + 2).expect("--one N BINARY").clone();
        return Options {
            sizes: vec![n],
            quick,
            baseline: None,
            one: Some((n, binary)),
        };
    }
    let baseline = args
        .iter()
        .position(|a| a == "--baseline")
        .map(|i| args.get(i + 1).expect("--baseline BINARY").clone());
    if let Some(binary) = &baseline {
        assert!(
            std::path::Path::new(binary).is_file(),
            "--baseline {binary}: no such file"
        );
    }
    let sizes: Vec<usize> = args
        .iter()
        .filter(|a| Some(*a) != baseline.as_ref())
        .filter_map(|a| a.parse().ok())
        .collect();
    Options {
        sizes: if sizes.is_empty() {
            vec![100, 1_000, 10_000]
        } else {
            sizes
        },
        quick,
        baseline,
        one: None,
    }
}

/// Operator process figures from /proc.
struct ProcStats {
    rss_kib: u64,
    /// The part of `rss_kib` that is pages of files (the binary's code), not the heap.
    rss_file_kib: u64,
    peak_kib: u64,
    cpu_seconds: f64,
}

fn proc_stats(pid: u32) -> ProcStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of /proc/pid/stat: 12 and 13 after the name.
    let clock_ticks = 100.0;
    ProcStats {
        rss_kib: field("VmRSS:"),
        rss_file_kib: field("RssFile:"),
        peak_kib: field("VmHWM:"),
        cpu_seconds: (ticks(11) + ticks(12)) as f64 / clock_ticks,
    }
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank]
}

fn writes(api: &ApiServer) -> (u64, u64, u64) {
    let c = |l: &str| api.count(l);
    (
        // A new client's Secret is created whole (one create); later tokens are applied.
        c("patch secrets") + c("create secrets"),
        c("patch oauthclients/status"),
        c("create events") + c("patch events"),
    )
}

async fn wait_ready(process: &Process, port: u16) -> Duration {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    loop {
        let url = format!("http://127.0.0.1:{port}/readyz");
        if let Ok(r) = client.get(url).send().await {
            if r.status().as_u16() == 200 {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "operator not ready:\n{}",
            process.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This build's binary, or SCALE_OPERATOR_BIN: another binary or a wrapper (e.g. a script that
/// execs heaptrack on the operator) in its place.
fn this_build() -> String {
    std::env::var("SCALE_OPERATOR_BIN").unwrap_or_else(|_| support::process::BIN.to_owned())
}

async fn start_operator(
    api: &ApiServer,
    dir: &std::path::Path,
    binary: &str,
) -> (Process, u16, Duration) {
    let kubeconfig = api.write_kubeconfig(dir);
    let started = Instant::now();
    let process = spawn_with(
        binary,
        &kubeconfig,
        &["--max-concurrent-exchanges", "32"],
        "bench",
        &[(
            "RUST_LOG",
            "warn,oauth_token_operator::runtime::health=info",
        )],
    );
    let port = process.metrics_port().await;
    wait_ready(&process, port).await;
    (process, port, started.elapsed())
}

fn fill_unrelated_secrets(api: &ApiServer) {
    let mut rng_data = vec![0u8; 1536];
    for i in 0..UNRELATED_SECRETS {
        let size = if i < LARGE_SECRETS {
            1024 * 1024 - 64
        } else {
            1536
        };
        if rng_data.len() != size {
            rng_data = vec![0u8; size];
        }
        for (j, b) in rng_data.iter_mut().enumerate() {
            *b = (i * 31 + j * 7) as u8;
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(&rng_data);
        api.create(
            SECRETS,
            json!({
                "metadata": {
                    "name": format!("unrelated-{i}"),
                    "namespace": format!("apps-{}", i % 20),
                    "labels": {"app": "something-else"},
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Secret\"}"},
                },
                "type": "Opaque",
                "data": {"payload": encoded},
            }),
        );
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Report {
    n: usize,
    /// How long the bench took to create the N credentials Secrets and N OAuthClients.
    creation: Duration,
    all_ready: Duration,
    latency_p50: f64,
    latency_p99: f64,
    requests_per_client: f64,
    secret_writes: f64,
    status_writes: f64,
    event_writes: f64,
    writes_between_refreshes: u64,
    peak_rss_mib: f64,
    steady_rss_mib: f64,
    /// Of the steady RSS, the pages of files (the binary's code).
    steady_rss_file_mib: f64,
    cpu_seconds: f64,
    lateness_p50: f64,
    lateness_p99: f64,
    lateness_samples: usize,
    requests_per_token: f64,
    restart_requests: usize,
    restart_writes: u64,
    restart_ready: Duration,
    /// Reconciles per client from creation until 3 s after all were Ready.
    reconciles_per_client: f64,
}

/// Forces one refresh of every created client (the refresh-requested-at annotation) and waits,
/// at most 5 minutes, until all `n` hold a token issued after the request.
async fn force_refresh_all<'k>(
    api: &ApiServer,
    created: impl Iterator<Item = &'k (String, String)>,
    n: usize,
) {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for key in created {
        api.modify(OAUTHCLIENTS, &key.0, &key.1, |o| {
            o["metadata"]["annotations"] =
                json!({"oauth.token-operator.dev/refresh-requested-at": now});
        });
    }
    let started = Instant::now();
    loop {
        let done = api.count_matching(OAUTHCLIENTS, |o| {
            o["status"]["issuedAt"]
                .as_str()
                .is_some_and(|t| t >= now.as_str())
        });
        if done >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "forced refresh stuck at {done}/{n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run(n: usize, quick: bool, binary: &str) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start().await;
    api.set_history_limit(50_000);
    let vendor =
        TokenServer::start(Vendor::Generic, "bench-id", "bench-secret", Tokens::Unique).await;
    vendor.set_delay(TOKEN_DELAY);
    vendor.count_only();
    fill_unrelated_secrets(&api);
    let (operator, metrics_port, _) = start_operator(&api, dir.path(), binary).await;
    let pid = operator.child.id();
    let reconciles_at_start = reconciles(metrics_port).await;

    // --- N OAuthClients created at once ---
    api.reset_counts();
    let mut created: HashMap<(String, String), Instant> = HashMap::new();
    let t0 = Instant::now();
    for i in 0..n {
        let ns = format!("team-{}", i % 50);
        let name = format!("client-{i}");
        api.create(
            SECRETS,
            json!({"metadata": {"name": format!("{name}-credentials"), "namespace": ns},
                   "stringData": {"client_id": "bench-id", "client_secret": "bench-secret"}}),
        );
        api.create(
            OAUTHCLIENTS,
            json!({"apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
                   "metadata": {"name": name, "namespace": ns},
                   "spec": {"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": format!("{name}-credentials")}}}),
        );
        created.insert((ns, name), Instant::now());
    }
    let creation = t0.elapsed();
    // SCALE_TRACE=1: the count of Ready clients every half second, to see the pace of the burst.
    let trace = std::env::var_os("SCALE_TRACE").is_some();
    let mut traced = Instant::now();
    while api.ready_count() < n {
        if trace && traced.elapsed() >= Duration::from_millis(500) {
            traced = Instant::now();
            println!(
                "  {:>5.1} s: {} Ready, operator CPU {:.1} s",
                t0.elapsed().as_secs_f64(),
                api.ready_count(),
                proc_stats(pid).cpu_seconds
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "only {} of {n} Ready after 10 min",
            api.ready_count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_ready = t0.elapsed();
    if trace {
        println!("  requests to the API server by then: {:?}", api.counts());
    }
    let ready_at = api.first_ready();
    let mut latencies: Vec<f64> = created
        .iter()
        .filter_map(|(k, at)| ready_at.get(k).map(|r| r.duration_since(*at).as_secs_f64()))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (secret_writes, status_writes, event_writes) = writes(&api);
    let requests = vendor.count();
    let reconciles_per_client = (reconciles(metrics_port).await - reconciles_at_start) / n as f64;
    let busy = proc_stats(pid);

    // --- steady state: nothing to do, nothing written ---
    let before = writes(&api);
    tokio::time::sleep(Duration::from_secs(if quick { 3 } else { 10 })).await;
    let after = writes(&api);
    let writes_between = (after.0 - before.0) + (after.1 - before.1) + (after.2 - before.2);
    let steady = proc_stats(pid);

    // --- 60 s tokens: refresh lateness ---
    vendor.set_expires_in(json!(60));
    force_refresh_all(&api, created.keys(), n).await;
    api.take_refresh_lateness();
    let phase_requests = vendor.count();
    let phase_secret_writes = api.count("patch secrets");
    let observe = Duration::from_secs(if quick { 45 } else { 90 });
    tokio::time::sleep(observe).await;
    let mut lateness = api.take_refresh_lateness();
    let tokens_stored = (api.count("patch secrets") - phase_secret_writes) as f64;
    let phase_tokens = (vendor.count() - phase_requests) as f64;
    let requests_per_token = if tokens_stored > 0.0 {
        phase_tokens / tokens_stored
    } else {
        f64::NAN
    };
    let peak = proc_stats(pid);

    // --- restart with every token valid ---
    vendor.set_expires_in(json!(3600));
    force_refresh_all(&api, created.keys(), n).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let final_peak = proc_stats(pid).peak_kib.max(peak.peak_kib);
    operator.signal("TERM");
    let (code, output) = operator.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{output}");
    let requests_before = vendor.count();
    api.reset_counts();
    let (operator, _, restart_ready) = start_operator(&api, dir.path(), binary).await;
    tokio::time::sleep(Duration::from_secs(if quick { 3 } else { 10 })).await;
    let restart_requests = vendor.count() - requests_before;
    let (a, b, c) = writes(&api);
    operator.signal("TERM");
    let _ = operator.wait_exit(Duration::from_secs(30)).await;

    Report {
        n,
        creation,
        all_ready,
        latency_p50: percentile(&mut latencies, 50.0),
        latency_p99: percentile(&mut latencies, 99.0),
        requests_per_client: requests as f64 / n as f64,
        secret_writes: secret_writes as f64 / n as f64,
        status_writes: status_writes as f64 / n as f64,
        event_writes: event_writes as f64 / n as f64,
        writes_between_refreshes: writes_between,
        peak_rss_mib: final_peak.max(busy.peak_kib) as f64 / 1024.0,
        steady_rss_mib: steady.rss_kib as f64 / 1024.0,
        steady_rss_file_mib: steady.rss_file_kib as f64 / 1024.0,
        cpu_seconds: peak.cpu_seconds,
        lateness_p50: percentile(&mut lateness, 50.0),
        lateness_p99: percentile(&mut lateness, 99.0),
        lateness_samples: lateness.len(),
        requests_per_token,
        restart_requests,
        restart_writes: a + b + c,
        restart_ready,
        reconciles_per_client,
    }
}

/// The operator's reconciles so far (its metric `oauth_token_operator_reconcile_total`).
async fn reconciles(metrics_port: u16) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("oauth_token_operator_reconcile_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// The line a child prints its report on.
const REPORT_PREFIX: &str = "scale-report: ";

/// One run in a child process of this bench (see the module documentation).
fn run_in_child(n: usize, quick: bool, binary: &str) -> Report {
    use std::io::BufRead as _;
    let mut command = std::process::Command::new(std::env::current_exe().expect("bench path"));
    command.args(["--one", &n.to_string(), binary]);
    if quick {
        command.arg("--quick");
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the bench's child");
    let mut report = None;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.expect("child output");
        match line.strip_prefix(REPORT_PREFIX) {
            Some(json) => report = Some(serde_json::from_str(json).expect("child report")),
            None => println!("{line}"),
        }
    }
    let status = child.wait().expect("child");
    assert!(
        status.success(),
        "the run of {binary} at N={n} failed: {status}"
    );
    report.expect("the child printed no report")
}

/// One run's figures on one line.
fn print_line(what: &str, report: &Report) {
    println!(
        "{what}: N={:>6}: created in {:.1}s; all Ready {:.1}s; apply→Ready p50 {:.3}s p99 {:.3}s; token requests/client {:.2}; \
         writes/client: Secret {:.2}, status {:.2}, events {:.2}; writes between refreshes {}; \
         RSS peak {:.1} MiB steady {:.1} MiB (files {:.1} MiB); CPU {:.1}s; 60 s tokens: lateness p50 {:.3}s p99 {:.3}s ({} refreshes), \
         requests per token {:.2}; restart: {} token requests, {} writes, /readyz in {:.2}s; \
         reconciles/client {:.2}",
        report.n,
        report.creation.as_secs_f64(),
        report.all_ready.as_secs_f64(),
        report.latency_p50,
        report.latency_p99,
        report.requests_per_client,
        report.secret_writes,
        report.status_writes,
        report.event_writes,
        report.writes_between_refreshes,
        report.peak_rss_mib,
        report.steady_rss_mib,
        report.steady_rss_file_mib,
        report.cpu_seconds,
        report.lateness_p50,
        report.lateness_p99,
        report.lateness_samples,
        report.requests_per_token,
        report.restart_requests,
        report.restart_writes,
        report.restart_ready.as_secs_f64(),
        report.reconciles_per_client,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = options();
    if let Some((n, binary)) = &options.one {
        let report = run(*n, options.quick, binary).await;
        println!("{REPORT_PREFIX}{}", serde_json::to_string(&report).unwrap());
        return;
    }
    println!(
        "scale benchmark: N = {:?}, {} unrelated Secrets ({} of 1 MiB), token endpoint delay {:?}{}",
        options.sizes,
        UNRELATED_SECRETS,
        LARGE_SECRETS,
        TOKEN_DELAY,
        if options.quick { ", quick" } else { "" }
    );
    let mut reports = Vec::new();
    let mut baselines = Vec::new();
    let this = this_build();
    for &n in &options.sizes {
        if let Some(binary) = &options.baseline {
            println!("N={n:>6}: baseline {binary}");
            let report = run_in_child(n, options.quick, binary);
            print_line("baseline", &report);
            baselines.push(report);
        }
        let report = run_in_child(n, options.quick, &this);
        print_line("this build", &report);
        reports.push(report);
    }
    println!();
    println!(
        "| N | all Ready | p50 / p99 apply→Ready | token req./client | Secret / status / event writes per client | writes between refreshes | peak / steady RSS | CPU | refresh lateness p50 / p99 | req./token | restart: requests, writes, /readyz |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &reports {
        println!(
            "| {} | {:.1} s | {:.3} / {:.3} s | {:.2} | {:.2} / {:.2} / {:.2} | {} | {:.1} / {:.1} MiB | {:.1} s | {:.3} / {:.3} s | {:.2} | {}, {}, {:.2} s |",
            r.n,
            r.all_ready.as_secs_f64(),
            r.latency_p50,
            r.latency_p99,
            r.requests_per_client,
            r.secret_writes,
            r.status_writes,
            r.event_writes,
            r.writes_between_refreshes,
            r.peak_rss_mib,
            r.steady_rss_mib,
            r.cpu_seconds,
            r.lateness_p50,
            r.lateness_p99,
            r.requests_per_token,
            r.restart_requests,
            r.restart_writes,
            r.restart_ready.as_secs_f64()
        );
    }
    if !baselines.is_empty() {
        println!();
        println!("| N | figure | baseline | this build | this / baseline |");
        println!("| --- | --- | --- | --- | --- |");
        for (b, r) in baselines.iter().zip(&reports) {
            for (figure, before, after) in [
                (
                    "all Ready (s)",
                    b.all_ready.as_secs_f64(),
                    r.all_ready.as_secs_f64(),
                ),
                ("apply→Ready p50 (s)", b.latency_p50, r.latency_p50),
                ("apply→Ready p99 (s)", b.latency_p99, r.latency_p99),
                (
                    "token requests / client",
                    b.requests_per_client,
                    r.requests_per_client,
                ),
                ("Secret writes / client", b.secret_writes, r.secret_writes),
                ("status writes / client", b.status_writes, r.status_writes),
                (
                    "writes between refreshes",
                    b.writes_between_refreshes as f64,
                    r.writes_between_refreshes as f64,
                ),
                ("peak RSS (MiB)", b.peak_rss_mib, r.peak_rss_mib),
                ("steady RSS (MiB)", b.steady_rss_mib, r.steady_rss_mib),
                ("CPU (s)", b.cpu_seconds, r.cpu_seconds),
                (
                    "reconciles / client",
                    b.reconciles_per_client,
                    r.reconciles_per_client,
                ),
                ("refresh lateness p99 (s)", b.lateness_p99, r.lateness_p99),
                (
                    "restart token requests",
                    b.restart_requests as f64,
                    r.restart_requests as f64,
                ),
                (
                    "restart writes",
                    b.restart_writes as f64,
                    r.restart_writes as f64,
                ),
            ] {
                let ratio = if before == 0.0 {
                    "–".to_owned()
                } else {
                    format!("{:.2}", after / before)
                };
                println!(
                    "| {} | {figure} | {before:.3} | {after:.3} | {ratio} |",
                    r.n
                );
            }
        }
    }
}
