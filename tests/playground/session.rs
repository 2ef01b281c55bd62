//! The playground's session, shared by `scripts/playground.sh` (the `playground` target) and
//! the real-cluster test that runs it: on a control plane of its own, the chart installed with
//! the real `helm` (its RBAC, ServiceAccount and Deployment; the CRD is applied first), the
//! operator binary run as the chart's pod would run it with a token of the chart's
//! ServiceAccount, the local demo token endpoint on 127.0.0.1:8089, and `examples/local.yaml`
//! applied with `kubectl apply -f`, until the client is Ready.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use crate::common::{Install, get_client, wait_ready};
use crate::support::control_plane::Cluster;
use crate::support::process::Process;

#[allow(dead_code)]
#[path = "../../examples/local-token-endpoint.rs"]
mod local_token_endpoint;

/// The demo endpoint's address, as `examples/local.yaml` names it.
pub const ENDPOINT: &str = "127.0.0.1:8089";
/// The example the playground applies.
pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/local.yaml");

/// What the playground started; dropping it stops the operator (the control plane stops with
/// the last handle of its [`Cluster`], the endpoint with its runtime).
pub struct Session {
    pub install: Install,
    /// The operator, held until the session ends (dropping it stops the process).
    _operator: Process,
    /// The administrator's kubeconfig, for `kubectl` and `kubectl oauth-token`.
    pub kubeconfig: PathBuf,
    /// What `kubectl get oac -A` printed once the client was Ready.
    pub clients: String,
    /// The time from the start of the session until the client was Ready.
    pub ready_after: std::time::Duration,
}

/// Starts the session on `cluster` and waits until `default/demo` is Ready.
pub async fn start(cluster: &Cluster) -> Session {
    let started = Instant::now();
    serve_endpoint().await;
    let install = Install::new(cluster, "playground", json!({"allowInsecureHttp": true})).await;
    let operator = install.pod("playground-0").await;
    cluster
        .kubectl(&["apply", "-f", EXAMPLE])
        .ok("kubectl apply -f examples/local.yaml");
    let client = cluster.client().await;
    wait_ready(
        &client,
        "default",
        "demo",
        "True",
        "TokenIssued",
        Some(&operator),
    )
    .await;
    let ready_after = started.elapsed();
    assert!(get_client(&client, "default", "demo").await.is_some());
    let clients = cluster
        .kubectl(&["get", "oac", "-A"])
        .ok("kubectl get oac -A");
    Session {
        install,
        _operator: operator,
        kubeconfig: cluster.kubeconfig.clone(),
        clients,
        ready_after,
    }
}

/// Serves the demo endpoint on [`ENDPOINT`], unless something already listens there (the
/// endpoint started by hand, as the README's `exchange` example does).
async fn serve_endpoint() {
    match tokio::net::TcpListener::bind(ENDPOINT).await {
        Ok(listener) => {
            tokio::spawn(async move {
                let _ = axum::serve(listener, local_token_endpoint::app()).await;
            });
        }
        Err(e) => eprintln!("{ENDPOINT} is in use ({e}): using the endpoint already there"),
    }
}

impl Session {
    /// What the playground prints once the client is Ready.
    pub fn summary(&self) -> String {
        let kubeconfig = self.kubeconfig.display();
        format!(
            "The playground is ready ({:.1} s): a local kube-apiserver, etcd and kube-controller-manager, the operator installed with the chart in namespace {ns}, the demo token endpoint on http://{ENDPOINT}/token.\n\n$ kubectl get oac -A\n{clients}\nThe token is in Secret default/demo-token. To explore:\n\n  export KUBECONFIG={kubeconfig}\n  export PATH={tools}:{bin}:$PATH   # this kubectl, and the operator binary\n  kubectl get oac demo -o yaml\n  kubectl get secret demo-token -o yaml\n  oauth-token-operator status demo       # or: kubectl oauth-token status demo\n  oauth-token-operator renew demo --wait\n\nCtrl-C stops everything the playground started.\n",
            self.ready_after.as_secs_f64(),
            ns = self.install.namespace,
            tools = crate::support::control_plane::bin_dir().display(),
            bin = std::path::Path::new(crate::support::process::BIN)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            clients = self.clients,
        )
    }
}
