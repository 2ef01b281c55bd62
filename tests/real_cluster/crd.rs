//! The CRD and the examples on the real API server: `crds/oauthclient.yaml` is accepted
//! (structural schema, every CEL rule within the cost budget) and established, and every file
//! of `examples/` is applied with `kubectl apply -f` as the README says, creating its own
//! namespace (a Helm values file: its rendering of the chart passes a server-side dry run), with
//! the third-party CRDs the cert-manager and trust-manager examples use in place.

use serde_json::Value;

use crate::common::CHART;
use crate::support::control_plane::{apply_crd_file, cluster, third_party_crd};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

#[tokio::test]
async fn the_crd_is_accepted_and_established() {
    let Some(cluster) = cluster("the_crd_is_accepted_and_established").await else {
        return;
    };
    // `cluster` applied it (server-side) and waited until it was established; check it again
    // as a user would, with the real kubectl.
    let crd: Value = serde_json::from_str(
        &cluster
            .kubectl(&[
                "get",
                "crd",
                "oauthclients.oauth.token-operator.dev",
                "-o",
                "json",
            ])
            .ok("kubectl get crd"),
    )
    .unwrap();
    let conditions = crd["status"]["conditions"].as_array().unwrap();
    for wanted in ["Established", "NamesAccepted"] {
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == wanted && c["status"] == "True"),
            "{wanted}: {conditions:?}"
        );
    }
    // No condition says the schema is not structural.
    assert!(
        !conditions
            .iter()
            .any(|c| c["type"] == "NonStructuralSchema"),
        "{conditions:?}"
    );
    // A client-side apply as the README says works too (the CRD fits in the
    // last-applied-configuration annotation).
    cluster
        .kubectl(&[
            "apply",
            "-f",
            concat!(env!("CARGO_MANIFEST_DIR"), "/crds/oauthclient.yaml"),
        ])
        .ok("kubectl apply -f crds/oauthclient.yaml");
}

#[tokio::test]
async fn every_example_applies_as_written() {
    let Some(cluster) = cluster("every_example_applies_as_written").await else {
        return;
    };
    let client = cluster.client().await;
    for crd in [
        "cert-manager.io_certificates.yaml",
        "trust.cert-manager.io_bundles.yaml",
    ] {
        apply_crd_file(&client, &third_party_crd(crd))
            .await
            .unwrap_or_else(|e| panic!("{crd}: {e}"));
    }
    let mut files: Vec<_> = std::fs::read_dir(EXAMPLES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    let scratch = tempfile::tempdir().unwrap();
    let mut applied = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let path = path.to_string_lossy().into_owned();
        let values_file = documents.iter().all(|d| d.get("kind").is_none());
        let manifests = if values_file {
            // A Helm values file: the chart rendered with it.
            let ns = cluster.namespace("example-values").await;
            let rendered = cluster
                .helm(&["template", "example", CHART, "-n", &ns, "-f", &path])
                .ok(&format!("helm template -f {name}"));
            let file = scratch.path().join(&name);
            std::fs::write(&file, rendered).unwrap();
            file.to_string_lossy().into_owned()
        } else {
            path
        };
        if values_file {
            // The chart's rendering goes to a namespace of the test's own.
            let out = cluster.kubectl(&["apply", "--dry-run=server", "-f", &manifests]);
            assert!(out.success, "{name}: {}{}", out.stdout, out.stderr);
            continue;
        }
        // As the README tells a user: `kubectl apply -f examples/NAME` on a cluster with the
        // CRD (and, for the cert-manager and trust-manager examples, theirs), nothing else: the
        // file creates the namespace it uses.
        let out = cluster.kubectl(&["apply", "-f", &manifests]);
        assert!(
            out.success,
            "{name}: kubectl apply -f:\n{}{}",
            out.stdout, out.stderr
        );
        applied.push(manifests);
    }
    for manifests in applied {
        let _ = cluster.kubectl(&[
            "delete",
            "--wait=false",
            "--ignore-not-found",
            "-f",
            &manifests,
        ]);
    }
}
