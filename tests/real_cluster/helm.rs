//! The chart with the real `helm`: installed with its defaults and with each value set under
//! `charts/oauth-token-operator/ci/` (and `examples/behind-a-proxy.yaml`), upgraded to
//! another value set, and uninstalled. After each step every object `helm template` renders for
//! the step's values exists as rendered (kind, name, namespace, and for the Deployment its
//! arguments), objects the new values no longer render are gone, and nothing of the release is
//! left after the uninstall. The Prometheus Operator's CRDs (pinned, from its Go module; see
//! `controlplane/build.sh`) are applied first for `ServiceMonitor` and `PrometheusRule`. No pod
//! runs (there is no kubelet).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::*;
use crate::support::control_plane::{Cluster, apply_crd_file, cluster, third_party_crd};

/// (kind, namespace, name) of every object `helm template` renders for `values`.
fn rendered(cluster: &Cluster, install: &Install, values: Option<&str>) -> Vec<Value> {
    let mut args = vec![
        "template",
        install.release.as_str(),
        CHART,
        "-n",
        install.namespace.as_str(),
        "--skip-crds",
    ];
    if let Some(values) = values {
        args.extend(["-f", values]);
    }
    let text = cluster.helm(&args).ok("helm template");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &Value| d.is_object())
        .collect()
}

fn key(object: &Value, release_namespace: &str) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let namespace = match object["metadata"]["namespace"].as_str() {
        Some(ns) => ns.to_owned(),
        // Cluster-scoped kinds have none; namespaced ones without one go to the release's.
        None if ["ClusterRole", "ClusterRoleBinding"]
            .contains(&object["kind"].as_str().unwrap_or_default()) =>
        {
            String::new()
        }
        None => release_namespace.to_owned(),
    };
    (
        s(&object["kind"]),
        namespace,
        s(&object["metadata"]["name"]),
    )
}

/// The object, as the API server has it, or `None`.
fn live(cluster: &Cluster, (kind, namespace, name): &(String, String, String)) -> Option<Value> {
    let mut args = vec![
        "get",
        kind.as_str(),
        name.as_str(),
        "-o",
        "json",
        "--ignore-not-found",
    ];
    if !namespace.is_empty() {
        args.extend(["-n", namespace.as_str()]);
    }
    let out = cluster.kubectl(&args).ok("kubectl get");
    (!out.trim().is_empty()).then(|| serde_json::from_str(&out).unwrap())
}

/// Every rendered object exists as rendered; the Deployment with the rendered arguments.
fn assert_installed(cluster: &Cluster, install: &Install, objects: &[Value], step: &str) {
    for object in objects {
        let key = key(object, &install.namespace);
        let found = live(cluster, &key).unwrap_or_else(|| panic!("{step}: {key:?} missing"));
        if key.0 == "Deployment" {
            let args = |d: &Value| d["spec"]["template"]["spec"]["containers"][0]["args"].clone();
            assert_eq!(
                args(&found),
                args(object),
                "{step}: the Deployment's arguments"
            );
        }
    }
}

fn keys(objects: &[Value], ns: &str) -> BTreeSet<(String, String, String)> {
    objects.iter().map(|o| key(o, ns)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_upgrades_and_uninstalls_with_every_value_set() {
    let Some(cluster) =
        cluster("the_chart_installs_upgrades_and_uninstalls_with_every_value_set").await
    else {
        return;
    };
    let client = cluster.client().await;
    for crd in [
        "monitoring.coreos.com_servicemonitors.yaml",
        "monitoring.coreos.com_prometheusrules.yaml",
    ] {
        apply_crd_file(&client, &third_party_crd(crd))
            .await
            .unwrap_or_else(|e| panic!("{crd}: {e}"));
    }
    let ci = std::path::Path::new(CHART).join("ci");
    let mut value_sets: Vec<String> = std::fs::read_dir(&ci)
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with("-values.yaml"))
        .collect();
    value_sets.sort();
    value_sets.push(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/behind-a-proxy.yaml").into());
    // The namespaces the value sets name (watchNamespaces a, b; the dashboard's monitoring).
    for ns in ["a", "b", "monitoring"] {
        cluster.create_namespace(ns).await;
    }
    let mut steps = vec![(None, value_sets.first().cloned())];
    for (i, values) in value_sets.iter().enumerate() {
        let next = value_sets
            .get(i + 1)
            .cloned()
            .or_else(|| Some(value_sets[0].clone()));
        steps.push((Some(values.clone()), next));
    }
    for (n, (values, upgrade)) in steps.into_iter().enumerate() {
        let release = format!("chart-{n}");
        let install_values: Value = match &values {
            Some(path) => serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap(),
            None => serde_json::json!({}),
        };
        let step = format!(
            "{release} with {}",
            values.as_deref().unwrap_or("the defaults")
        );
        let install = Install::new(&cluster, &release, install_values).await;
        let first = rendered(&cluster, &install, values.as_deref());
        assert!(!first.is_empty());
        assert_installed(&cluster, &install, &first, &step);

        let upgrade = upgrade.unwrap();
        cluster
            .helm(&[
                "upgrade",
                &release,
                CHART,
                "-n",
                &install.namespace,
                "--skip-crds",
                "-f",
                &upgrade,
            ])
            .ok("helm upgrade");
        let second = rendered(&cluster, &install, Some(&upgrade));
        assert_installed(
            &cluster,
            &install,
            &second,
            &format!("{step}, upgraded to {upgrade}"),
        );
        for gone in keys(&first, &install.namespace).difference(&keys(&second, &install.namespace))
        {
            assert!(
                live(&cluster, gone).is_none(),
                "{step}: {gone:?} left after the upgrade"
            );
        }

        install.uninstall();
        for object in keys(&second, &install.namespace) {
            assert!(
                live(&cluster, &object).is_none(),
                "{step}: {object:?} left after uninstall"
            );
        }
    }
}
