//! The CLI prints nothing raw (security round three, item 5): a hostile API server answers
//! `status`, `renew` and `inspect` with terminal escape sequences (`ESC ]52;` writes the
//! clipboard, `ESC ]0;` the window title, C1 `CSI`, cursor moves, bidirectional overrides) in
//! every field of its errors and of the objects it lists, and a kubeconfig names a context
//! holding them; no line of standard output or error holds a control character but newline and
//! tab, even at `RUST_LOG=trace`.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use crate::common::serve;
use crate::support::process::{BIN, spawn_with};
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::json;

/// Every escape a terminal might act on.
const HOSTILE: &str = "x\u{1b}]52;c;ZWNobyBwd25lZA==\u{7}\u{1b}]0;owned\u{7}\u{9b}2J\u{1b}[31mred\u{202e}gnp.exe\u{2066}\r\u{8}\u{0}\u{7f}y";

/// A Kubernetes Status with `HOSTILE` in every field.
fn status(code: u16) -> serde_json::Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("message {HOSTILE}"),
        "reason": format!("Reason{HOSTILE}"),
        "details": {"name": HOSTILE, "kind": HOSTILE, "causes": [{"message": HOSTILE, "field": HOSTILE}]},
        "code": code,
    })
}

/// An OAuthClient whose every printed field holds `HOSTILE`.
fn listed() -> serde_json::Value {
    json!({
        "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "evil", "namespace": "ns", "uid": "1", "resourceVersion": "1"},
        "spec": {"tokenUrl": format!("https://idp.example/{HOSTILE}"), "credentialsSecretRef": {"name": "creds"}},
        "status": {
            "conditions": [{"type": "Ready", "status": "False", "reason": format!("Bad{HOSTILE}"),
                            "message": format!("failed {HOSTILE}"), "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "secretName": HOSTILE, "expiresAt": HOSTILE, "nextRefreshAt": HOSTILE,
            "consecutiveFailures": 1,
        },
    })
}

/// A server that answers lists with `listed()` and everything else with the Status of the code
/// in `code` (it cycles through the error codes a CLI meets).
async fn hostile_api(code: Arc<AtomicU16>) -> String {
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let code = code.clone();
        async move {
            let path = uri.path().to_owned();
            if path.ends_with("/oauthclients") {
                let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": [listed()]});
                return (StatusCode::OK, axum::Json(list)).into_response();
            }
            let c = code.load(Ordering::SeqCst);
            (StatusCode::from_u16(c).unwrap(), axum::Json(status(c))).into_response()
        }
    });
    serve(app).await
}

fn kubeconfig(dir: &std::path::Path, server: &str, context: &str) -> std::path::PathBuf {
    let path = dir.join(format!("kubeconfig-{}", rand::random::<u32>()));
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
        "current-context": context,
    });
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// Runs the binary; returns standard output and error together.
fn run(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_printable(what: &str, text: &str) {
    let bad: Vec<(usize, char)> = text
        .char_indices()
        .filter(|(_, c)| {
            (c.is_control() && *c != '\n' && *c != '\t')
                || matches!(*c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    assert!(bad.is_empty(), "{what} printed {bad:?}:\n{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_escape_sequence_from_the_cluster_reaches_the_terminal() {
    let code = Arc::new(AtomicU16::new(500));
    let server = hostile_api(code.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let good = kubeconfig(dir.path(), &server, "ctx");
    let commands: [&[&str]; 8] = [
        &["status", "-n", "ns"],
        &["status", "-A"],
        &["status", "evil", "-n", "ns"],
        &["status", "-n", "ns", "-o", "json"],
        &["renew", "evil", "-n", "ns"],
        &["renew", "--all", "-n", "ns"],
        &["inspect", "evil", "-n", "ns"],
        &["renew", "evil", "-n", "ns", "--wait", "--timeout", "2s"],
    ];
    for c in [500u16, 403, 401, 404, 409, 422] {
        code.store(c, Ordering::SeqCst);
        for args in commands {
            let text = run(&good, args);
            assert_printable(&format!("{args:?} with {c}"), &text);
        }
    }
    // A kubeconfig that names a context holding escapes: its load error names it.
    let hostile_context = kubeconfig(dir.path(), &server, HOSTILE);
    for args in commands {
        let text = run(&hostile_context, args);
        assert!(!text.is_empty());
        assert_printable(&format!("{args:?} with a hostile context"), &text);
    }
}

/// Security round three, issue 20, item 4: `run` printed its start-up error (which quotes what
/// the API server said: here the Status of the start-up check's access reviews and lists) with
/// `eprintln!`, past the filter. Its standard error holds no control character but newline and
/// tab, with logging off (the error line alone) and at TRACE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_error_of_run_reaches_the_terminal_filtered() {
    let code = Arc::new(AtomicU16::new(500));
    let server = hostile_api(code.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &server, "ctx");
    for c in [500u16, 403, 401, 422] {
        code.store(c, Ordering::SeqCst);
        for log in ["off", "trace"] {
            let process = spawn_with(BIN, &config, &[], "op-0", &[("RUST_LOG", log)]);
            let (exit, text) = process.wait_exit(Duration::from_secs(20)).await;
            let what = format!("run with {c}, RUST_LOG={log}");
            assert_eq!(exit, 1, "{what}: {text:?}");
            assert!(text.contains("error: "), "{what}: {text:?}");
            assert_printable(&what, &text);
        }
    }
}
