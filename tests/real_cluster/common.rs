//! What the real-cluster tests share: the chart installed with the real `helm`, the operator
//! binary run as the chart's pod would run it (its Deployment's arguments and environment, and a
//! token of its ServiceAccount: exactly the rights the chart grants), and typed access to
//! OAuthClients and Secrets through the real API.

use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use oauth_token_operator::api::crd::OAuthClient;
use serde_json::{Value, json};

use crate::support::control_plane::{AuditEvent, Cluster, service_account_user};
use crate::support::process::{BIN, Process, spawn_with};

/// The chart, as in the repository.
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/oauth-token-operator");

// === the chart and its pod ===

/// A release of the chart, installed with the real `helm`.
pub struct Install {
    pub cluster: Cluster,
    pub release: String,
    /// The release namespace.
    pub namespace: String,
    dir: tempfile::TempDir,
}

impl Install {
    /// `helm install <release> charts/oauth-token-operator -n <namespace> -f <values>` (the CRD
    /// is installed by the suite already, so `--skip-crds`).
    pub async fn new(cluster: &Cluster, release: &str, values: Value) -> Install {
        let namespace = cluster.namespace(release).await;
        let install = Install {
            cluster: cluster.clone(),
            release: release.to_owned(),
            namespace,
            dir: tempfile::tempdir().unwrap(),
        };
        let values = install.values_file("install", &values);
        install
            .cluster
            .helm(&[
                "install",
                &install.release,
                CHART,
                "-n",
                &install.namespace,
                "--skip-crds",
                "-f",
                &values,
            ])
            .ok("helm install");
        install
    }

    /// Writes `values` to a file of the release's folder; returns its path.
    pub fn values_file(&self, name: &str, values: &Value) -> String {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, serde_yaml::to_string(values).unwrap()).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// The chart's full name for this release (the prefix of its objects).
    pub fn fullname(&self) -> String {
        if self.release.contains("oauth-token-operator") {
            self.release.clone()
        } else {
            format!("{}-oauth-token-operator", self.release)
        }
    }

    /// The Deployment the chart rendered, as the API server stored it.
    pub fn deployment(&self) -> Value {
        let text = self
            .cluster
            .kubectl(&[
                "get",
                "deployment",
                &self.fullname(),
                "-n",
                &self.namespace,
                "-o",
                "json",
            ])
            .ok("kubectl get deployment");
        serde_json::from_str(&text).unwrap()
    }

    /// The audit user of the chart's ServiceAccount.
    pub fn user(&self) -> String {
        service_account_user(&self.namespace, &self.fullname())
    }

    /// Starts the operator binary as the chart's pod `pod` would run: the container's arguments
    /// and environment from the Deployment (POD_NAME and POD_NAMESPACE as the downward API
    /// gives them), a kubeconfig holding a token of the chart's ServiceAccount. Only the metrics
    /// address (127.0.0.1 and a free port) and the log format (text, which the test reads)
    /// differ.
    pub async fn pod(&self, pod: &str) -> Process {
        let token = self
            .cluster
            .service_account_token(&self.namespace, &self.fullname())
            .await;
        let kubeconfig =
            self.cluster
                .write_token_kubeconfig(self.dir.path(), &token, &self.namespace);
        self.pod_with_kubeconfig(pod, &kubeconfig)
    }

    /// As [`Install::pod`], with a kubeconfig of the caller's.
    pub fn pod_with_kubeconfig(&self, pod: &str, kubeconfig: &std::path::Path) -> Process {
        let deployment = self.deployment();
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .filter(|a| a != "run")
            .map(|a| {
                if a.starts_with("--metrics-addr=") {
                    "--metrics-addr=127.0.0.1:0".to_owned()
                } else if a.starts_with("--log-format=") {
                    "--log-format=text".to_owned()
                } else {
                    a
                }
            })
            .collect();
        let mut env: Vec<(String, String)> = Vec::new();
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap().to_owned();
            let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod.to_owned(),
                Some("metadata.namespace") => self.namespace.clone(),
                Some(other) => panic!("unexpected fieldRef {other}"),
                None => var["value"].as_str().unwrap_or_default().to_owned(),
            };
            env.push((name, value));
        }
        env.push(("NO_COLOR".into(), "1".into()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        spawn_with(BIN, kubeconfig, &args, pod, &env)
    }

    /// The chart installed to watch only `namespaces` (plain HTTP allowed: the token endpoint
    /// emulators listen on 127.0.0.1), `values` merged over that; and its pod started.
    pub async fn watching(
        cluster: &Cluster,
        release: &str,
        namespaces: &[&str],
        values: Value,
    ) -> (Install, Process) {
        let mut all = json!({"allowInsecureHttp": true, "watchNamespaces": namespaces});
        for (k, v) in values.as_object().into_iter().flatten() {
            all[k] = v.clone();
        }
        let install = Install::new(cluster, release, all).await;
        let pod = install.pod(&format!("{release}-0")).await;
        (install, pod)
    }

    /// `helm uninstall`.
    pub fn uninstall(&self) {
        self.cluster
            .helm(&["uninstall", &self.release, "-n", &self.namespace, "--wait"])
            .ok("helm uninstall");
    }
}

// === assertions on the audit log ===

/// Panics when the API server refused any request of `user` with `codes`.
pub fn assert_not_refused(cluster: &Cluster, user: &str, codes: &[u16]) {
    let Some(plane) = &cluster.local else {
        return;
    };
    let refused: Vec<AuditEvent> = plane.refused(user, codes);
    assert!(
        refused.is_empty(),
        "the API server refused requests of {user}:\n{}",
        refused
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The API server refused none of the operator's requests: no 403 (RBAC), and no write refused
/// as invalid or conflicting (400, 409, 415, 422).
pub fn assert_operator_never_refused(cluster: &Cluster, user: &str) {
    assert_not_refused(cluster, user, &[400, 403, 409, 415, 422]);
}

// === objects ===

/// Creates (or replaces) a credentials Secret.
pub async fn credentials(client: &kube::Client, ns: &str, name: &str, id: &str, secret: &str) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let object: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {"client_id": id, "client_secret": secret},
    }))
    .unwrap();
    api.patch(
        name,
        &PatchParams::apply("real-cluster-suite").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("credentials {ns}/{name}: {e}"));
}

/// Creates an OAuthClient with `spec`.
pub async fn oauth_client(client: &kube::Client, ns: &str, name: &str, spec: Value) {
    let api: Api<OAuthClient> = Api::namespaced(client.clone(), ns);
    let object: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create OAuthClient {ns}/{name}: {e}"));
}

/// Deletes an object of `api` (it may be gone).
pub async fn delete<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => panic!("delete {name}: {e}"),
    }
}

/// An OAuthClient as JSON, or `None`.
pub async fn get_client(client: &kube::Client, ns: &str, name: &str) -> Option<Value> {
    let api: Api<OAuthClient> = Api::namespaced(client.clone(), ns);
    let object = api.get_opt(name).await.unwrap()?;
    Some(serde_json::to_value(object).unwrap())
}

/// The condition `type_` of an OAuthClient as (status, reason, message).
pub fn condition_of(object: &Value, type_: &str) -> Option<(String, String, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("status"), s("reason"), s("message"))
        })
}

/// Polls `check` every 200 ms until it gives `Some`; panics after `within` with `what` and the
/// operator's output.
pub async fn eventually<T, F, Fut>(
    what: &str,
    within: Duration,
    operator: Option<&Process>,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {within:?} waiting for {what}\n--- operator output ---\n{}",
                operator.map(Process::text).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the OAuthClient's Ready condition has `status` and `reason`.
pub async fn wait_ready(
    client: &kube::Client,
    ns: &str,
    name: &str,
    status: &str,
    reason: &str,
    operator: Option<&Process>,
) -> Value {
    eventually(
        &format!("{ns}/{name} Ready={status} {reason}"),
        Duration::from_secs(30),
        operator,
        || async {
            let object = get_client(client, ns, name).await?;
            let (s, r, _) = condition_of(&object, "Ready")?;
            (s == status && r == reason).then_some(object)
        },
    )
    .await
}

/// A Secret, or `None`.
pub async fn get_secret(client: &kube::Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

/// The value of `key` of a Secret, as text.
pub fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// Base64 of `text` (for JSON patches of Secret data).
pub fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}
