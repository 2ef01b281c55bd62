//! The CLI through the real kubectl: `kubectl get oac` and `-o wide` render the contract's
//! printer columns (the real server builds the Table; the double cannot), and `kubectl
//! oauth-token status|renew --wait|inspect` run the binary as a kubectl plugin on the PATH.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::common::*;
use crate::support::control_plane::{Cluster, cluster, tool};
use crate::support::process::BIN;
use crate::support::vendors::{TokenServer, Tokens, Vendor};

const ID: &str = "cli-client";
const SECRET: &str = "cli-s3cret-value";

/// Runs `kubectl args` with the plugin (a symlink named `kubectl-oauth_token` to the binary) on
/// the PATH; returns (exit code, stdout, stderr).
fn kubectl_with_plugin(cluster: &Cluster, plugins: &Path, args: &[&str]) -> (i32, String, String) {
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(tool("kubectl"))
        .args(args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The header cells of a kubectl table.
fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_the_printer_columns_and_runs_the_plugin() {
    let Some(cluster) = cluster("kubectl_shows_the_printer_columns_and_runs_the_plugin").await
    else {
        return;
    };
    let client = cluster.client().await;
    let ns = cluster.namespace("cli").await;
    let (install, operator) = Install::watching(&cluster, "cli", &[&ns], json!({})).await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    // A JWT access token, so that inspect has claims to show.
    vendor.set_expires_in(json!(3600));
    credentials(&client, &ns, "creds", ID, SECRET).await;
    oauth_client(
        &client,
        &ns,
        "billing",
        json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "creds"}, "scopes": ["read"]}),
    )
    .await;
    wait_ready(
        &client,
        &ns,
        "billing",
        "True",
        "TokenIssued",
        Some(&operator),
    )
    .await;

    printer_columns(&cluster, &ns);
    plugin_commands(&cluster, &client, &ns, &vendor).await;
    drop(operator);
    assert_operator_never_refused(&cluster, &install.user());
}

/// `kubectl get oac` (and `-o wide`, and by category) shows the contract's printer columns for
/// the Ready client `billing` of `ns`, rendered by the real server's Table.
fn printer_columns(cluster: &Cluster, ns: &str) {
    let table = cluster
        .kubectl(&["get", "oac", "-n", ns])
        .ok("kubectl get oac");
    assert_eq!(
        header(&table),
        ["NAME", "READY", "REASON", "EXPIRES", "AGE"],
        "{table}"
    );
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with("billing") && row.contains("True") && row.contains("TokenIssued"),
        "{table}"
    );
    let wide = cluster
        .kubectl(&["get", "oac", "-n", ns, "-o", "wide"])
        .ok("kubectl get oac -o wide");
    assert_eq!(
        header(&wide),
        [
            "NAME",
            "READY",
            "REASON",
            "EXPIRES",
            "AGE",
            "PROVIDER",
            "SECRET",
            "NEXT REFRESH"
        ],
        "{wide}"
    );
    let row = wide.lines().nth(1).unwrap();
    assert!(
        row.contains("generic") && row.contains("billing-token"),
        "{wide}"
    );
    // The short name and the category.
    let by_category = cluster
        .kubectl(&["get", "oauth", "-n", ns])
        .ok("kubectl get oauth");
    assert!(by_category.contains("billing"), "{by_category}");
}

/// `kubectl oauth-token status|renew --wait|inspect` run the binary as a plugin on the PATH for
/// the Ready client `billing` of `ns`; inspect never prints the token.
async fn plugin_commands(cluster: &Cluster, client: &kube::Client, ns: &str, vendor: &TokenServer) {
    let plugins = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(BIN, plugins.path().join("kubectl-oauth_token")).unwrap();
    let (code, out, err) = kubectl_with_plugin(
        cluster,
        plugins.path(),
        &["oauth-token", "status", "-n", ns],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("billing") && out.contains("TokenIssued"),
        "{out}"
    );
    let (code, out, err) = kubectl_with_plugin(
        cluster,
        plugins.path(),
        &["oauth-token", "status", "billing", "-n", ns],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("billing-token") && out.contains("access_token"),
        "{out}"
    );
    let before = vendor.count();
    let (code, out, err) = kubectl_with_plugin(
        cluster,
        plugins.path(),
        &[
            "oauth-token",
            "renew",
            "billing",
            "-n",
            ns,
            "--wait",
            "--timeout",
            "30s",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        vendor.count(),
        before + 1,
        "renew --wait: one exchange\n{out}{err}"
    );
    let (code, out, err) = kubectl_with_plugin(
        cluster,
        plugins.path(),
        &["oauth-token", "inspect", "billing", "-n", ns],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Bearer"), "{out}");
    let token = secret_text(
        &get_secret(client, ns, "billing-token").await.unwrap(),
        "access_token",
    )
    .unwrap();
    for text in [&out, &err] {
        assert!(!text.contains(&token), "inspect never prints the token");
    }
}
