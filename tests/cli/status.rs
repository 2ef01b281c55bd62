//! `status` as a user runs it against the [`Fleet`]: the table puts not-Ready clients first and
//! exits 1 when there is any, `-A`, `-o wide` and `-o json` list every client, the detail view
//! shows conditions, the managed Secret (never its values) and the events folded with counts,
//! short refresh margins are warnings; the kubeconfig list, its contexts and `~/.kube/config`
//! choose the cluster and namespace; the binary works as the kubectl plugin
//! `kubectl-oauth_token` (and through `kubectl` itself when it is installed); a cluster that is
//! gone, a missing kubeconfig and a missing CRD are each one clear error with exit 2.
//!
//! Every command's standard output and error (at RUST_LOG=trace) is scanned for the client
//! secrets, every token the emulators issued or the Secrets hold, the JWT's signature and the
//! kubeconfig's bearer token, raw and base64-encoded.

use std::path::Path;

use crate::common::*;
use crate::support::apiserver::ApiServer;
use crate::support::process::BIN;

// === the table ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_lists_not_ready_clients_first_and_exits_1() {
    let fleet = Fleet::start().await;
    let run = fleet.run(&["status", "-n", "telemetry"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let rows = run.rows();
    assert_eq!(
        rows[0],
        [
            "NAMESPACE",
            "NAME",
            "PROVIDER",
            "READY",
            "REASON",
            "EXPIRES",
            "NEXT-REFRESH",
            "FAILURES",
            "MESSAGE"
        ]
    );
    assert_eq!(
        run.names(),
        ["broken", "taken", "streamhub"],
        "not Ready first"
    );
    assert_eq!(&rows[1][2..5], ["generic", "False", "InvalidClient"]);
    assert_eq!(rows[1][5], "-", "broken never had a token");
    assert!(
        rows[1]
            .last()
            .unwrap()
            .contains("Client authentication failed"),
        "{:?}",
        rows[1]
    );
    assert_eq!(&rows[2][3..5], ["False", "SecretConflict"]);
    assert_eq!(&rows[3][3..5], ["True", "TokenIssued"]);
    assert!(
        rows[3][5].starts_with("in 5") && rows[3][5].ends_with('m'),
        "{:?}",
        rows[3]
    );
    assert!(rows[3][6].starts_with("in "), "{:?}", rows[3]);
    assert_eq!(rows[3][7], "0");
    assert!(!run.stderr.contains("warning:"), "{}", run.stderr);
    fleet.finish().await;
}

/// -A: every namespace; the short margin of billing/quick is a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_namespaces_list_every_client_and_warn_of_a_short_margin() {
    let fleet = Fleet::start().await;
    let run = fleet.run(&["status", "-A"]).await;
    assert_eq!(run.code, 1);
    let rows = run.rows();
    let listed: Vec<(String, String, String)> = rows[1..]
        .iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[3].clone()))
        .collect();
    let expected = [
        ("billing", "expired", "False"),
        ("telemetry", "broken", "False"),
        ("telemetry", "taken", "False"),
        ("billing", "quick", "True"),
        ("telemetry", "streamhub", "True"),
    ];
    assert_eq!(
        listed,
        expected.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    assert!(rows[1][4] == "TokenExpired", "{:?}", rows[1]);
    assert!(
        run.stderr
            .contains("warning: billing/quick: the refresh margin (expiresAt - nextRefreshAt) is "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("so pods may read an expired token"));
    fleet.finish().await;
}

/// -o wide adds the Secret and does not cut messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_output_adds_the_secret_and_keeps_whole_messages() {
    let fleet = Fleet::start().await;
    let run = fleet.run(&["status", "-A", "-o", "wide"]).await;
    let rows = run.rows();
    assert_eq!(rows[0][8], "SECRET");
    assert_eq!(rows[5][8], "streamhub-token");
    assert!(rows[1][9].len() > 80, "full message: {:?}", rows[1]);
    fleet.finish().await;
}

/// -o json, for scripts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_lists_every_client_for_scripts() {
    let fleet = Fleet::start().await;
    let run = fleet.run(&["status", "-A", "-o", "json"]).await;
    assert_eq!(run.code, 1);
    let value = run.json();
    assert_eq!(value["allReady"], false);
    let items = value["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["name"], "expired");
    assert_eq!(items[0]["reason"], "TokenExpired");
    assert_eq!(items[3]["name"], "quick");
    assert_eq!(items[3]["warnings"].as_array().unwrap().len(), 1);
    assert_eq!(items[4]["secretName"], "streamhub-token");
    assert!(items[4]["expiresInSeconds"].as_i64().unwrap() > 3500);
    fleet.finish().await;
}

/// Exit 0 when every client listed is Ready or none is found (with a note), 1 when a client
/// named does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_code_says_whether_every_client_is_ready() {
    let fleet = Fleet::start().await;
    let run = fleet.run(&["status", "streamhub", "-n", "telemetry"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run_empty = fleet.run(&["status", "-n", "nothing-here"]).await;
    assert_eq!(run_empty.code, 0);
    assert!(
        run_empty
            .stderr
            .contains("No OAuthClients found in namespace nothing-here")
    );
    let run = fleet.run(&["status", "nope", "-n", "telemetry"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("error: OAuthClient telemetry/nope not found"),
        "{}",
        run.stderr
    );
    fleet.finish().await;
}

// === the detail view ===

/// The cells of the first line of `text` that starts (indentation aside) with `prefix`.
fn line(text: &str, prefix: &str) -> Vec<String> {
    let found = text
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"));
    cells(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_view_of_a_ready_client_shows_conditions_the_secrets_keys_and_events() {
    let fleet = Fleet::start().await;
    let run = fleet.run(&["status", "streamhub", "-n", "telemetry"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = &run.stdout;
    for needle in [
        "Name:                streamhub",
        "Namespace:           telemetry",
        "Provider:            generic",
        &format!("Token URL:           {}", fleet.jwt_vendor.url()),
        // What one needs for a 401: the method and the objects read (issue 22, item 5).
        "Client auth:         ClientSecretBasic (preset generic)",
        "Credentials:         Secret ",
        "(key client_id; key client_secret)",
        "Conditions:",
        "  secretName:           streamhub-token",
        "  tokenType:            Bearer",
        "  scope:                read:tracks",
        "  consecutiveFailures:  0",
        "Secret telemetry/streamhub-token (Opaque, controlled by this OAuthClient; values not shown):",
        "Events (oldest first):",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let ready = line(text, "Ready ");
    assert_eq!(&ready[..3], ["Ready", "True", "TokenIssued"]);
    assert!(ready[3].ends_with(" ago"), "{ready:?}");
    assert_eq!(
        &line(text, "Degraded ")[..3],
        ["Degraded", "False", "RefreshSucceeded"]
    );
    let token = &fleet.token;
    assert_eq!(
        line(text, "access_token "),
        ["access_token", &token.len().to_string()]
    );
    assert_eq!(
        line(text, "Authorization "),
        ["Authorization", &(token.len() + 7).to_string()]
    );
    assert_eq!(line(text, "expires_at "), ["expires_at", "20"]);
    let issued = line(text, "Normal ");
    assert_eq!(&issued[..3], ["Normal", "TokenIssued", "1"]);
    assert!(line(text, "issuedAt:").concat().contains(" ago)"), "{text}");
    assert!(line(text, "expiresAt:").concat().contains("(in "), "{text}");
    fleet.finish().await;
}

/// A failing client: its events folded with counts, others' left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_view_of_a_failing_client_folds_its_events_and_leaves_out_others() {
    let fleet = Fleet::start().await;
    let run = fleet.run(&["status", "broken", "-n", "telemetry"]).await;
    assert_eq!(run.code, 1);
    let text = &run.stdout;
    let failed_line = text
        .lines()
        .find(|l| l.contains("Warning") && l.contains("ExchangeFailed"))
        .unwrap_or_else(|| panic!("{text}"));
    let cells = cells(failed_line);
    assert_eq!(&cells[..3], ["Warning", "ExchangeFailed", "3"], "{text}");
    assert!(cells[4].starts_with("InvalidClient: "), "{text}");
    assert!(!text.contains("not about broken"), "{text}");
    assert!(
        text.contains("Secret telemetry/broken-token: does not exist"),
        "{text}"
    );
    assert!(text.contains("  consecutiveFailures:  "), "{text}");
    fleet.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_view_of_a_conflicting_client_says_the_secret_is_not_its_own() {
    let fleet = Fleet::start().await;
    let run = fleet.run(&["status", "taken", "-n", "telemetry"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("Secret telemetry/taken-token (Opaque, NOT controlled by this OAuthClient"),
        "{}",
        run.stdout
    );
    fleet.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_view_of_an_expired_client_as_json_says_why_and_lists_the_keys() {
    let fleet = Fleet::start().await;
    let run = fleet
        .run(&["status", "expired", "-n", "billing", "-o", "json"])
        .await;
    assert_eq!(run.code, 1);
    let value = run.json();
    assert_eq!(value["reason"], "TokenExpired");
    assert!(
        value["message"]
            .as_str()
            .unwrap()
            .contains("no new one could be obtained: InvalidClient"),
        "{value:#}"
    );
    let keys: Vec<&str> = value["secret"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["access_token", "expires_at", "token_type"]);
    assert!(value["status"]["consecutiveFailures"].as_i64() >= Some(1));
    fleet.finish().await;
}

/// The margin warning in the detail view too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_view_warns_of_a_short_margin() {
    let fleet = Fleet::start().await;
    let run = fleet.run(&["status", "quick", "-n", "billing"]).await;
    assert_eq!(run.code, 0);
    assert!(
        run.stderr
            .contains("warning: billing/quick: the refresh margin"),
        "{}",
        run.stderr
    );
    fleet.finish().await;
}

// === kubeconfig handling ===

/// A kubeconfig with two contexts on the double's cluster and user (found in the second file
/// of the list): `tele` (the current one, namespace telemetry) and `bill` (namespace billing).
fn contexts_file(dir: &Path) -> std::path::PathBuf {
    let contexts = dir.join("contexts.yaml");
    std::fs::write(
        &contexts,
        "apiVersion: v1\nkind: Config\ncurrent-context: tele\ncontexts:\n- name: tele\n  context:\n    cluster: double\n    user: test\n    namespace: telemetry\n- name: bill\n  context:\n    cluster: double\n    user: test\n    namespace: billing\n",
    )
    .unwrap();
    contexts
}

/// KUBECONFIG with two files: the current context's namespace, `--context`, `-n` over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubeconfig_list_and_its_contexts_choose_the_namespace() {
    let fleet = Fleet::start().await;
    let contexts = contexts_file(fleet.user.dir.path());
    let both = std::env::join_paths([&contexts, &fleet.user.kubeconfig])
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let env = [("KUBECONFIG", both)];
    let bin = Path::new(BIN);
    let run = fleet.run_as(bin, &["status"], &env).await;
    assert_eq!(run.code, 1);
    assert_eq!(
        run.names(),
        ["broken", "taken", "streamhub"],
        "the context's namespace"
    );
    let run = fleet
        .run_as(bin, &["status", "--context", "bill"], &env)
        .await;
    assert_eq!(run.names(), ["expired", "quick"], "--context");
    let run = fleet.run_as(bin, &["status", "-n", "billing"], &env).await;
    assert_eq!(run.rows().len(), 3, "-n overrides the context");
    fleet.finish().await;
}

/// ~/.kube/config when KUBECONFIG is unset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_kube_config_is_read_when_kubeconfig_is_unset() {
    let fleet = Fleet::start().await;
    let dir = fleet.user.dir.path();
    std::fs::create_dir_all(dir.join(".kube")).unwrap();
    std::fs::copy(&fleet.user.kubeconfig, dir.join(".kube/config")).unwrap();
    let run = fleet
        .run_as(
            Path::new(BIN),
            &["status", "-n", "telemetry", "-o", "json"],
            &[],
        )
        .await;
    assert_eq!(run.json()["items"].as_array().unwrap().len(), 3);
    fleet.finish().await;
}

/// An unknown context (of ~/.kube/config) is a usage error; the other usage errors are clap's:
/// exit 2 for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_context_and_conflicting_flags_are_usage_errors_with_exit_2() {
    let api = ApiServer::start_unlogged().await;
    let user = User::new(&api);
    let secrets = forbidden(&api, &[]);
    let dir = user.dir.path();
    std::fs::create_dir_all(dir.join(".kube")).unwrap();
    std::fs::copy(&user.kubeconfig, dir.join(".kube/config")).unwrap();
    let bin = Path::new(BIN);
    let run = cli_as(bin, dir, &["status", "--context", "missing"], &[], &secrets).await;
    assert_eq!(run.code, 2, "an unknown context is a usage error");
    assert!(
        run.stderr.starts_with("error: ") || run.stderr.contains("\nerror: "),
        "{}",
        run.stderr
    );
    let run = cli_as(bin, dir, &["status", "-A", "-n", "x"], &[], &secrets).await;
    assert_eq!(run.code, 2);
}

// === the kubectl plugin ===

/// A directory `bin` in the user's HOME holding `kubectl-oauth_token`, a symlink to the binary.
fn install_plugin(home: &Path) -> std::path::PathBuf {
    let plugins = home.join("bin");
    std::fs::create_dir_all(&plugins).unwrap();
    std::os::unix::fs::symlink(BIN, plugins.join("kubectl-oauth_token")).unwrap();
    plugins
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubectl_plugin_runs_status() {
    let fleet = Fleet::start().await;
    let plugin = install_plugin(fleet.user.dir.path()).join("kubectl-oauth_token");
    let kubeconfig = fleet.user.kubeconfig_arg();
    let run = fleet
        .run_as(
            &plugin,
            &["status", "-n", "telemetry", "--kubeconfig", &kubeconfig],
            &[],
        )
        .await;
    assert_eq!(run.code, 1);
    assert_eq!(run.rows().len(), 4);
    fleet.finish().await;
}

/// The plugin's help and usage errors name it as kubectl runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubectl_plugin_prints_usage_under_its_kubectl_name() {
    let api = ApiServer::start_unlogged().await;
    let user = User::new(&api);
    let secrets = forbidden(&api, &[]);
    let dir = user.dir.path();
    let plugin = install_plugin(dir).join("kubectl-oauth_token");
    let run = cli_as(&plugin, dir, &["--help"], &[], &secrets).await;
    assert!(
        run.stdout.contains("Usage: kubectl oauth-token <COMMAND>"),
        "{}",
        run.stdout
    );
    for command in ["status", "renew", "inspect"] {
        assert!(
            run.stdout.contains(&format!("\n  {command} ")),
            "{}",
            run.stdout
        );
    }
    let run = cli_as(&plugin, dir, &["renew"], &[], &secrets).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("Usage: kubectl oauth-token renew"),
        "{}",
        run.stderr
    );
}

/// Through kubectl itself, when it is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_the_plugin_when_it_is_installed() {
    let Some(kubectl) = which("kubectl") else {
        println!("kubectl is not installed: `kubectl oauth-token` itself not tried");
        return;
    };
    let fleet = Fleet::start().await;
    let plugins = install_plugin(fleet.user.dir.path());
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [("PATH", path), ("KUBECONFIG", fleet.user.kubeconfig_arg())];
    let run = fleet
        .run_as(
            &kubectl,
            &["oauth-token", "status", "-n", "telemetry"],
            &env,
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.names(), ["broken", "taken", "streamhub"]);
    let run = fleet
        .run_as(
            &kubectl,
            &["oauth-token", "inspect", "streamhub", "-n", "telemetry"],
            &env,
        )
        .await;
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Access token: JWT"));
    fleet.finish().await;
}

// === connection problems ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_one_clear_error_with_exit_2() {
    assert_unreachable_cluster_is_exit_2(&["status"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_kubeconfig_file_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let run = cli_as(
        Path::new(BIN),
        dir.path(),
        &["status", "--kubeconfig", &missing.to_string_lossy()],
        &[],
        &[],
    )
    .await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("error: cannot read --kubeconfig"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_crd_is_one_clear_error_with_exit_2() {
    let api = ApiServer::start_unlogged_with(false).await;
    let user = User::new(&api);
    let run = user.run(&["status", "-A"], &[KUBE_TOKEN.to_owned()]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(
            "the OAuthClient CRD (oauthclients.oauth.token-operator.dev) is not installed"
        ),
        "{}",
        run.stderr
    );
}
