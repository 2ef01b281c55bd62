//! The chart's Grafana dashboard queries only what the operator exports: every
//! `oauth_token_operator_*` name in it is a series the operator binary serves on `/metrics`
//! (scraped after one token and one failed reconcile, so that every family has samples), and
//! every label it selects or groups by is one those series carry.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::apiserver::{ApiServer, Matcher};
use support::harness::*;
use support::process::spawn;
use support::vendors::*;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/oauth-token-operator");
const DASHBOARD: &str = "dashboards/oauth-token-operator.json";

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{CHART}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard: panel targets and variable queries.
fn expressions(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            out.push(query.to_owned());
        }
    }
    out
}

/// The metric names the dashboard mentions anywhere.
fn dashboard_metrics() -> BTreeSet<String> {
    let pattern = regex::Regex::new(r"oauth_token_operator_[a-z_]+").unwrap();
    pattern
        .find_iter(&read(DASHBOARD))
        .map(|m| m.as_str().to_owned())
        .collect()
}

/// The labels the expressions select on or group by (`{a="x"}`, `by (a, b)`, `label_values(m, a)`).
fn dashboard_labels() -> BTreeSet<String> {
    let selector = regex::Regex::new(r"([a-z_]+)\s*(=~|!~|!=|=)\s*\x22").unwrap();
    let grouping = regex::Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").unwrap();
    let values = regex::Regex::new(r"label_values\([a-z_]+,\s*([a-z_]+)\)").unwrap();
    let mut out = BTreeSet::new();
    for expr in expressions(&dashboard()) {
        for c in selector.captures_iter(&expr) {
            out.insert(c[1].to_owned());
        }
        for c in grouping.captures_iter(&expr) {
            out.extend(
                c[1].split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            );
        }
        for c in values.captures_iter(&expr) {
            out.insert(c[1].to_owned());
        }
    }
    out
}

/// (name, labels) of every sample in an OpenMetrics text exposition.
fn samples(text: &str) -> Vec<(String, BTreeSet<String>)> {
    let label = regex::Regex::new(r#"([a-zA-Z_]+)=""#).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = match (line.find('{'), line.find('}')) {
                (Some(a), Some(b)) => label
                    .captures_iter(&line[a..b])
                    .map(|c| c[1].to_owned())
                    .collect(),
                _ => BTreeSet::new(),
            };
            (line[..end].to_owned(), labels)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_and_label_the_dashboard_queries_is_exported() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(
        Vendor::Generic,
        "dash-id",
        "dash-secret-value",
        Tokens::Unique,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let child = spawn(&kubeconfig, &[]);
    let port = child.metrics_port().await;
    // The first reconcile cannot read its object: reconcile_errors_total gets a sample too.
    api.fail_next(Matcher::new("get", "oauthclients"), 1, 500);
    credentials(&api, "ns", "creds", "dash-id", "dash-secret-value");
    oauth_client(
        &api,
        "ns",
        "dash",
        json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "creds"}}),
    );
    wait_ready(&api, "ns", "dash", "True", "TokenIssued").await;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    // The reconcile that failed and the one that issued the token are both counted.
    let text = eventually_async(|| async {
        let text = http.get(&url).send().await.ok()?.text().await.ok()?;
        (text.contains("oauth_token_operator_reconcile_errors_total{")
            && text.contains("oauth_token_operator_exchanges_total{"))
        .then_some(text)
    })
    .await;
    let mut exported = samples(&text);
    // Exported only by an operator serving ClusterOAuthClients (--enable-cluster-clients): the
    // same registry, with one ClusterOAuthClient's figures.
    let cluster = oauth_token_operator::runtime::metrics::Metrics::default();
    cluster.cluster_targets("vendor", [3, 2, 1]);
    exported.extend(
        samples(&cluster.encode())
            .into_iter()
            .filter(|(n, _)| n.contains("cluster_client")),
    );
    let names: BTreeSet<&str> = exported.iter().map(|(n, _)| n.as_str()).collect();
    let wanted = dashboard_metrics();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|m| !names.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries series the operator does not export: {missing:?}\nexported: {names:?}"
    );
    // Histograms are queried as _bucket / _sum / _count of a family the operator declares.
    for name in &wanted {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        if family != name {
            assert!(
                text.contains(&format!("# TYPE {family} histogram")),
                "{name}: {family} is not a histogram"
            );
        }
    }
    // What the issue asks for is there.
    for family in [
        "oauth_token_operator_client_ready_status",
        "oauth_token_operator_exchanges_total",
        "oauth_token_operator_token_expiration_timestamp_seconds",
        "oauth_token_operator_exchange_duration_seconds_bucket",
    ] {
        assert!(
            wanted.contains(family),
            "the dashboard does not show {family}"
        );
    }
    // Every label it selects or groups by exists on the exported series (`le` on histograms).
    let mut labels: BTreeSet<String> = exported.iter().flat_map(|(_, l)| l.clone()).collect();
    labels.insert("le".into());
    let unknown: Vec<String> = dashboard_labels().difference(&labels).cloned().collect();
    assert!(
        unknown.is_empty(),
        "labels no series has: {unknown:?} (exported: {labels:?})"
    );

    child.signal("TERM");
    let (code, output) = child.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, 0, "{output}");
    support::logs::assert_absent(&output, &["dash-secret-value"], "operator logs");
}

/// Polls `check` every 100 ms for at most 10 s.
async fn eventually_async<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out scraping /metrics"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn the_dashboard_is_well_formed_and_the_chart_ships_it_behind_a_value() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "oauth-token-operator");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let used = regex::Regex::new(r"\$([a-z_]+)").unwrap();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title}"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            for var in used.captures_iter(expr) {
                let var = &var[1];
                assert!(
                    variables.contains(var) || var.starts_with("__"),
                    "{title}: ${var} is not a dashboard variable"
                );
            }
        }
    }
    // The ConfigMap template includes exactly this file, with the sidecar's label, behind a
    // value that is off by default.
    let template = read("templates/grafana-dashboard.yaml");
    assert!(template.starts_with("{{- if .Values.grafanaDashboard.enabled }}"));
    assert!(template.contains(&format!(".Files.Get \"{DASHBOARD}\"")));
    assert!(template.contains("kind: ConfigMap"));
    assert!(template.contains(".Values.grafanaDashboard.labels"));
    assert!(template.contains(".Values.grafanaDashboard.annotations"));
    let values: serde_yaml::Value = serde_yaml::from_str(&read("values.yaml")).unwrap();
    let values = &values["grafanaDashboard"];
    assert_eq!(values["enabled"].as_bool(), Some(false));
    assert_eq!(values["labels"]["grafana_dashboard"].as_str(), Some("1"));
}
