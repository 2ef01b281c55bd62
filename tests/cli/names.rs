//! Review of security round three, item 4 ("the same check guards every name the CLI puts in a
//! path"): the day-2 commands put NAME, `-n NAMESPACE`, `--secret NAME` and the managed
//! Secret's name read from the OAuthClient (`spec.target.name`, `status.secretName`) into
//! request paths unchecked. The server here is a front end that normalises dot-segments (as
//! the issue describes) in front of a cluster; it records every raw path.
//!
//! The OAuthClient's `spec.target.name` is tenant-controlled: the CRD's new CEL rule refuses
//! it only on writes after the upgrade (objects stored before keep it, and CEL ratcheting lets
//! unchanged fields through updates).

use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::common::serve;
use crate::support::process::BIN;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use base64::Engine as _;
use serde_json::json;

const CLIMB: &str = "../../victim/secrets/victim-token";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A JWT whose claims name the victim (unsigned: inspect decodes claims, never verifies).
fn victim_jwt() -> String {
    let part = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.{}",
        part(json!({"alg": "RS256", "typ": "JWT"})),
        part(
            json!({"sub": "victim-service-admin", "aud": "victim-payments-api", "exp": 4102444800u64})
        ),
        "c2lnbmF0dXJl"
    )
}

/// `/a/b/../c` as a front end that normalises dot-segments forwards it.
fn normalise(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/').skip(1) {
        match seg {
            ".." => {
                out.pop();
            }
            "." => {}
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

async fn front_end(paths: Arc<Mutex<Vec<String>>>) -> String {
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let paths = paths.clone();
        async move {
            paths.lock().unwrap().push(uri.to_string());
            let path = normalise(uri.path());
            let client = json!({
                "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
                "metadata": {"name": "demo", "namespace": "tenant", "uid": "u-1", "resourceVersion": "7"},
                "spec": {"tokenUrl": "https://idp.example/token", "credentialsSecretRef": {"name": "creds"},
                         "target": {"name": CLIMB}},
            });
            if path == "/apis/oauth.token-operator.dev/v1alpha1/namespaces/tenant/oauthclients/demo" {
                return (StatusCode::OK, axum::Json(client)).into_response();
            }
            if path == "/api/v1/namespaces/victim/secrets/victim-token" {
                let secret = json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "victim-token", "namespace": "victim", "resourceVersion": "9",
                                 "annotations": {"oauth.token-operator.dev/issued-at": "2026-01-01T00:00:00Z"}},
                    "type": "Opaque",
                    "data": {"access_token": b64(victim_jwt().as_bytes()), "token_type": b64(b"Bearer"),
                             "expires_at": b64(b"2100-01-01T00:00:00Z"), "payments-admin-key": b64(b"x")},
                });
                return (StatusCode::OK, axum::Json(secret)).into_response();
            }
            if path.ends_with("/events") || path.contains("/events") {
                let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []});
                return (StatusCode::OK, axum::Json(list)).into_response();
            }
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "message": "not found", "reason": "NotFound", "code": 404});
            (StatusCode::NOT_FOUND, axum::Json(status)).into_response()
        }
    });
    serve(app).await
}

fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "admin-token"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "tenant"}}],
        "current-context": "ctx",
    });
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

async fn run(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    run_with_code(kubeconfig, args).await.1
}

/// Runs the binary; returns its exit code and standard output and error together.
async fn run_with_code(kubeconfig: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let kubeconfig = kubeconfig.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(BIN)
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), text)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_puts_names_that_are_no_names_into_request_paths() {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let server = front_end(paths.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &server);
    let secret_flag = format!("--secret={CLIMB}");
    let climbing_name = "../../../../../../api/v1/namespaces/victim/secrets/victim-token";
    let commands: Vec<Vec<&str>> = vec![
        // spec.target.name of the tenant's OAuthClient
        vec!["inspect", "demo", "-n", "tenant"],
        vec!["status", "demo", "-n", "tenant"],
        // arguments
        vec!["inspect", "demo", "-n", "tenant", &secret_flag],
        vec!["status", climbing_name, "-n", "tenant"],
        vec!["renew", climbing_name, "-n", "tenant"],
        vec!["status", "demo", "-n", "../victim"],
    ];
    let mut report = Vec::new();
    for args in &commands {
        paths.lock().unwrap().clear();
        let output = run(&config, args).await;
        let sent: Vec<String> = paths
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains(".."))
            .cloned()
            .collect();
        let leaked = output.contains("victim-service-admin")
            || output.contains("victim-payments-api")
            || output.contains("payments-admin-key");
        if !sent.is_empty() || leaked {
            report.push(format!(
                "{args:?}: sent {sent:?}; victim data printed: {leaked}\n--- output ---\n{}",
                output.trim()
            ));
        }
    }
    assert!(
        report.is_empty(),
        "names reached request paths unchecked:\n{}",
        report.join("\n\n")
    );
}

/// An OAuthClient of `namespace` named `name`, as an API server returns it.
fn listed_client(namespace: &str, name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("u-{name}"), "resourceVersion": "7"},
        "spec": {"tokenUrl": "https://idp.example/token", "credentialsSecretRef": {"name": "creds"}},
    })
}

/// Names that are no names, as a hostile API server (or a front end before it) returns them:
/// (namespace, name).
const HOSTILE_KEYS: [(&str, &str); 3] = [
    ("tenant", "../../victim/oauthclients/victim"),
    ("../victim", "demo"),
    ("tenant", "x\u{1b}]52;c;cHduZWQ=\u{7}"),
];

/// A front end that lists, in `tenant` and in all namespaces, the OAuthClient `tenant/demo`
/// and one of each of [`HOSTILE_KEYS`]; answers a GET of `tenant/evil` with an object named
/// like the first of them; and records every method and raw path.
async fn hostile_lister(calls: Arc<Mutex<Vec<String>>>) -> String {
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri| {
        let calls = calls.clone();
        async move {
            calls.lock().unwrap().push(format!("{method} {uri}"));
            let base = "/apis/oauth.token-operator.dev/v1alpha1";
            let path = uri.path();
            if method == Method::GET
                && (path == format!("{base}/namespaces/tenant/oauthclients")
                    || path == format!("{base}/oauthclients"))
            {
                let items: Vec<serde_json::Value> = [("tenant", "demo")]
                    .iter()
                    .chain(HOSTILE_KEYS.iter())
                    .map(|(ns, name)| listed_client(ns, name))
                    .collect();
                let list = json!({"apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClientList",
                                  "metadata": {"resourceVersion": "9"}, "items": items});
                return (StatusCode::OK, axum::Json(list)).into_response();
            }
            if path == format!("{base}/namespaces/tenant/oauthclients/demo") {
                return (StatusCode::OK, axum::Json(listed_client("tenant", "demo"))).into_response();
            }
            if path == format!("{base}/namespaces/tenant/oauthclients/evil") {
                let (ns, name) = HOSTILE_KEYS[0];
                return (StatusCode::OK, axum::Json(listed_client(ns, name))).into_response();
            }
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "message": "not found", "reason": "NotFound", "code": 404});
            (StatusCode::NOT_FOUND, axum::Json(status)).into_response()
        }
    });
    serve(app).await
}

/// Security round three, issue 20, item 2: `renew --all` (and `renew NAME`) took the namespace
/// and name of the objects the API server returned and put them into the PATCH's path (and
/// `--wait`'s reads) unchecked. Such an object is skipped, with a line that quotes it
/// terminal-safe; the others are still renewed; the exit code is 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_never_puts_a_listed_name_that_is_no_name_into_a_request_path() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let server = hostile_lister(calls.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &server);
    let commands: [(&[&str], bool); 4] = [
        (&["renew", "--all", "-n", "tenant"], true),
        (&["renew", "--all", "-A"], true),
        (
            &[
                "renew",
                "--all",
                "-n",
                "tenant",
                "--wait",
                "--timeout",
                "2s",
            ],
            true,
        ),
        (&["renew", "evil", "-n", "tenant"], false),
    ];
    let demo = "/apis/oauth.token-operator.dev/v1alpha1/namespaces/tenant/oauthclients/demo";
    let mut report = Vec::new();
    for (args, renews_demo) in commands {
        calls.lock().unwrap().clear();
        let (code, output) = run_with_code(&config, args).await;
        let calls = calls.lock().unwrap().clone();
        let hostile: Vec<&String> = calls
            .iter()
            .filter(|c| {
                c.contains("..")
                    || c.contains("victim")
                    || c.contains("x%1B")
                    || c.contains('\u{1b}')
            })
            .collect();
        let patched_demo = calls
            .iter()
            .any(|c| c.split('?').next() == Some(format!("PATCH {demo}").as_str()));
        let controls: Vec<char> = output
            .chars()
            .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
            .collect();
        let skipped = output.matches("skipped an OAuthClient").count();
        let expected_skips = if renews_demo { HOSTILE_KEYS.len() } else { 1 };
        if !hostile.is_empty()
            || patched_demo != renews_demo
            || !controls.is_empty()
            || skipped != expected_skips
            || code != Some(1)
        {
            report.push(format!(
                "{args:?}: exit {code:?}; hostile requests {hostile:?}; demo renewed: {patched_demo} (expected {renews_demo}); control characters printed {controls:?}; {skipped} skipped of {expected_skips}\n--- calls ---\n{}\n--- output ---\n{}",
                calls.join("\n"),
                output.trim()
            ));
        }
    }
    assert!(
        report.is_empty(),
        "renew put names that are no names into request paths:\n{}",
        report.join("\n\n")
    );
}

/// Item 5 ("every line the CLI prints goes through the filter"): clap's own errors do not. On a
/// terminal (clap strips escapes only when standard error is not one) an invalid value is
/// echoed with its escape sequences. Low severity: the value is the caller's own argument,
/// though scripts pass through names and flags from elsewhere. Needs `script` (util-linux) for
/// a pseudo-terminal; skipped without it.
#[test]
fn clap_errors_echo_escape_sequences_to_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no script(1)");
        return;
    }
    let command = format!("{BIN} status -o \"$(printf 'x\\033]0;pwned\\007')\"");
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        !text.contains("\u{1b}]0;pwned"),
        "an OSC title sequence reached the terminal: {text:?}"
    );
}
