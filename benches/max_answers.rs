//! Memory under the largest answers the operator accepts: 32 OAuthClients (the default
//! `--max-concurrent-exchanges`) receive, at the same moment, a response body just under the
//! 1 MiB cap holding a 64 KiB access token, a 1 KiB `token_type` and a 1 KiB `scope`, and render
//! it through templates into a managed Secret just under the 256 KiB limit. The operator binary
//! runs as a separate process; the figure is its peak RSS (VmHWM), which must stay under 96 MiB
//! (the chart's memory limit is 128 MiB). The clients use two endpoints (the operator sends at
//! most half of its requests in flight to one endpoint), each holding its answers until its 16
//! requests have arrived, so that all 32 answers are in memory at once.
//!
//! ```sh
//! cargo bench --bench max_answers
//! ```

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::apiserver::{ApiServer, OAUTHCLIENTS, SECRETS};
use support::process::spawn_with;

const CLIENTS: usize = 32;
const BODY_CAP: usize = 1024 * 1024;
const TOKEN_LEN: usize = 64 * 1024;
const FIELD_LEN: usize = 1024;
const TARGET_MIB: f64 = 96.0;

fn kib_field(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `len` bytes of NQCHAR scope tokens separated by single spaces.
fn scope_of(len: usize) -> String {
    let mut scope = String::new();
    let mut i = 0;
    while scope.len() < len {
        if !scope.is_empty() {
            scope.push(' ');
        }
        scope.push_str(&format!("s{i:04}"));
        i += 1;
    }
    scope.truncate(len);
    scope.trim_end().to_owned()
}

/// The largest answer the operator accepts, different per request (so that no two tokens are
/// equal), padded to just under the body cap.
fn answer(serial: usize) -> String {
    let token: String = format!("{serial:08}")
        .chars()
        .chain(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
                .chars()
                .cycle(),
        )
        .take(TOKEN_LEN)
        .collect();
    let token_type: String = "T".repeat(FIELD_LEN);
    let mut body = json!({
        "access_token": token,
        "token_type": token_type,
        "scope": scope_of(FIELD_LEN),
        "expires_in": 3600,
        "padding": "",
    })
    .to_string();
    let pad = BODY_CAP - 64 - body.len();
    body = body.replace(
        r#""padding":"""#,
        &format!(r#""padding":"{}""#, "p".repeat(pad)),
    );
    body
}

/// A token endpoint that holds every request until `expected` have arrived (or 20 s passed), so
/// that all answers are in flight at once.
async fn endpoint(expected: usize, first_serial: usize) -> String {
    let arrived = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().fallback(move || {
        let arrived = arrived.clone();
        async move {
            let serial = arrived.fetch_add(1, Ordering::SeqCst);
            let started = Instant::now();
            while arrived.load(Ordering::SeqCst) < expected
                && started.elapsed() < Duration::from_secs(20)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (
                [("content-type", "application/json")],
                answer(first_serial + serial),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    format!("http://{addr}/token")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start_unlogged().await;
    let half = CLIENTS / 2;
    let urls = [endpoint(half, 0).await, endpoint(half, half).await];
    let kubeconfig = api.write_kubeconfig(dir.path());
    let process = spawn_with(
        support::process::BIN,
        &kubeconfig,
        &["--max-concurrent-exchanges", &CLIENTS.to_string()],
        "bench",
        &[(
            "RUST_LOG",
            "warn,oauth_token_operator::runtime::health=info",
        )],
    );
    let pid = process.child.id();
    let port = process.metrics_port().await;
    let started = Instant::now();
    let client = reqwest::Client::new();
    while !client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().as_u16() == 200)
    {
        assert!(started.elapsed() < Duration::from_secs(60), "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle_kib = kib_field(pid, "VmRSS:");

    let template = json!({
        "bearer": "Bearer {{ access_token }}",
        "copy": "{{ access_token }}",
        "scopes": "{{ scope }}".repeat(55),
    });
    for i in 0..CLIENTS {
        api.create(
            SECRETS,
            json!({
                "metadata": {"name": format!("creds-{i}"), "namespace": "bench"},
                "stringData": {"client_id": format!("id-{i}"), "client_secret": "a-long-enough-secret"},
            }),
        );
        api.create(
            OAUTHCLIENTS,
            json!({
                "apiVersion": "oauth.token-operator.dev/v1alpha1",
                "kind": "OAuthClient",
                "metadata": {"name": format!("max-{i}"), "namespace": "bench"},
                "spec": {
                    "tokenUrl": urls[i % 2],
                    "clientAuthMethod": "ClientSecretPost",
                    "credentialsSecretRef": {"name": format!("creds-{i}")},
                    "target": {"template": template},
                },
            }),
        );
    }
    let created = Instant::now();
    let ready = loop {
        let ready = api.count_matching(OAUTHCLIENTS, |o| {
            o["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        });
        if ready == CLIENTS {
            break created.elapsed();
        }
        assert!(
            created.elapsed() < Duration::from_secs(120),
            "{ready}/{CLIENTS} Ready; statuses: {:?}\n{}",
            api.list(OAUTHCLIENTS, Some("bench"))
                .iter()
                .map(|o| o["status"]["conditions"].clone())
                .collect::<Vec<_>>(),
            process.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let peak_kib = kib_field(pid, "VmHWM:");
    let secret = api.get(SECRETS, "bench", "max-0-token").unwrap();
    let secret_bytes: usize = secret["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| k.len() + v.as_str().unwrap().len() * 3 / 4)
        .sum();
    let token_len = support::harness::secret_value(&api, "bench", "max-0-token", "access_token")
        .unwrap()
        .len();
    assert_eq!(token_len, TOKEN_LEN);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("max answers: {CLIENTS} clients at once");
    println!(
        "  answer body                {} bytes (cap {BODY_CAP})",
        answer(0).len()
    );
    println!(
        "  access token / type / scope {TOKEN_LEN} / {FIELD_LEN} / {} bytes",
        scope_of(FIELD_LEN).len()
    );
    println!("  managed Secret             about {secret_bytes} bytes (limit 262144)");
    println!("  all Ready after            {:.2} s", ready.as_secs_f64());
    println!("  operator RSS idle          {:.1} MiB", mib(idle_kib));
    println!(
        "  operator peak RSS          {:.1} MiB (target < {TARGET_MIB} MiB: {})",
        mib(peak_kib),
        if mib(peak_kib) < TARGET_MIB {
            "met"
        } else {
            "NOT met"
        }
    );
    process.signal("TERM");
    let _ = process.wait_exit(Duration::from_secs(10)).await;
}
