//! A real Kubernetes control plane for the real-cluster suite: etcd, kube-apiserver and
//! kube-controller-manager (garbage collection, namespace deletion), as built by
//! `controlplane/build.sh`, started on 127.0.0.1 with the authorization and ServiceAccount
//! configuration of a production cluster:
//!
//! * `--authorization-mode=Node,RBAC`, client certificates from a CA made here (the test's admin
//!   is in `system:masters`), the serving certificate issued for 127.0.0.1 by the same CA;
//! * a ServiceAccount issuer and signing key, so that TokenRequest and `/openid/v1/jwks` work;
//! * an audit log of every request at `Metadata` level, read by the tests to find requests of
//!   the operator that were refused.
//!
//! The suite starts one shared control plane per test binary ([`shared`]); tests that restart
//! kube-apiserver or compact etcd start their own ([`ControlPlane::start`]). Every process runs
//! under a small `sh` supervisor that holds a pipe from the test process: when the test binary
//! ends, however it ends, the pipe closes and the supervisor stops its process, so nothing
//! outlives the tests.
//!
//! `REAL_CLUSTER_KUBECONFIG=/path/to/kubeconfig` points the suite at another cluster instead
//! (see [`Cluster`]); tests that must restart or inspect the control plane itself are skipped
//! there, with a message.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};

/// The folder of the control plane's binaries (`controlplane/build.sh --print`).
pub const BIN_ENV: &str = "OAUTH_TOKEN_OPERATOR_CONTROL_PLANE";
/// Set to `required` by the README's test command: missing binaries fail the tests instead of
/// skipping them.
pub const REQUIRED_ENV: &str = "OAUTH_TOKEN_OPERATOR_REAL_CLUSTER";
/// A kubeconfig of another cluster to run the suite against.
pub const EXTERNAL_ENV: &str = "REAL_CLUSTER_KUBECONFIG";

/// The tools `controlplane/build.sh` builds.
const TOOLS: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "helm",
];

/// The folder holding the control plane's binaries.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os(BIN_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/oauth-token-operator/controlplane/bin"),
    }
}

/// The path of one of the control plane's tools.
pub fn tool(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The third-party CRDs `controlplane/build.sh` copies out of their pinned modules.
pub fn third_party_crd(file: &str) -> PathBuf {
    bin_dir().join("../crds").join(file)
}

/// What is missing for a local control plane, as a message that says how to build it.
fn missing_binaries() -> Option<String> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| !tool(t).is_file())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the real-cluster suite needs {} in {} (missing); build them with \
             `controlplane/build.sh` (Go 1.26 and the Go module proxy), or run the README's test \
             command `scripts/test.sh`, which builds them when they are missing",
            missing.join(", "),
            bin_dir().display()
        )
    })
}

/// Whether the README's test command runs us (then nothing may be skipped).
fn required() -> bool {
    std::env::var(REQUIRED_ENV).is_ok_and(|v| v == "required")
}

/// Skips (returns `None`) or fails, as [`REQUIRED_ENV`] says, with `why`.
fn skip<T>(test: &str, why: &str) -> Option<T> {
    assert!(!required(), "{test}: {why}");
    eprintln!("SKIPPED {test}: {why}");
    None
}

// === the cluster a test runs against ===

/// The cluster of a real-cluster test: the shared local control plane, or the cluster of
/// [`EXTERNAL_ENV`].
#[derive(Clone)]
pub struct Cluster {
    /// An administrator's kubeconfig.
    pub kubeconfig: PathBuf,
    /// The local control plane, when it is ours.
    pub local: Option<Arc<ControlPlane>>,
}

static SHARED: tokio::sync::OnceCell<Arc<ControlPlane>> = tokio::sync::OnceCell::const_new();

/// The cluster of this test binary: the shared local control plane (started by the first test
/// that asks), or the external one. `None` (after a `SKIPPED` line) when there is neither and
/// the README's command is not running us.
pub async fn cluster(test: &str) -> Option<Cluster> {
    if let Some(path) = std::env::var_os(EXTERNAL_ENV) {
        let kubeconfig = PathBuf::from(path);
        let cluster = Cluster {
            kubeconfig,
            local: None,
        };
        cluster.install_crds().await;
        return Some(cluster);
    }
    if let Some(why) = missing_binaries() {
        return skip(test, &why);
    }
    let plane = SHARED
        .get_or_init(|| async { Arc::new(ControlPlane::start(Options::default()).await) })
        .await;
    let cluster = plane.clone().cluster();
    cluster.install_crds().await;
    Some(cluster)
}

/// A control plane of this test's own: for a test that runs an operator over all namespaces
/// (which would reconcile the other tests' clients on a shared one), or that restarts or
/// compacts it. Stopped when the last handle is dropped. Against an external cluster, that
/// cluster (run the suite with `--test-threads=1` there); `None` (skipped) without binaries.
pub async fn own_cluster(test: &str, options: Options) -> Option<Cluster> {
    if std::env::var_os(EXTERNAL_ENV).is_some() {
        return cluster(test).await;
    }
    if let Some(why) = missing_binaries() {
        return skip(test, &why);
    }
    let cluster = Arc::new(ControlPlane::start(options).await).cluster();
    cluster.install_crds().await;
    Some(cluster)
}

/// As [`own_cluster`], for a test that must restart or compact the control plane: `None`
/// (skipped) against an external cluster.
pub async fn own_control_plane(test: &str, options: Options) -> Option<Cluster> {
    if std::env::var_os(EXTERNAL_ENV).is_some() {
        return skip(
            test,
            "restarts or compacts its control plane: not on an external cluster",
        );
    }
    own_cluster(test, options).await
}

impl Cluster {
    /// An administrator's client.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.kubeconfig).await
    }

    /// The local control plane, or `None` (skipped) against an external cluster.
    pub fn local_or_skip(&self, test: &str) -> Option<Arc<ControlPlane>> {
        match &self.local {
            Some(plane) => Some(plane.clone()),
            None => skip(
                test,
                "needs the local control plane (its audit log, metrics or processes)",
            ),
        }
    }

    /// Applies `crds/oauthclient.yaml` and `crds/clusteroauthclient.yaml` (server-side) and
    /// waits until they are established.
    pub async fn install_crds(&self) {
        let client = self.client().await;
        for file in ["oauthclient.yaml", "clusteroauthclient.yaml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("crds")
                .join(file);
            apply_crd_file(&client, &path)
                .await
                .unwrap_or_else(|e| panic!("the real API server refuses crds/{file}: {e}"));
        }
    }

    /// Runs the control plane's `kubectl` against this cluster; returns (success, stdout,
    /// stderr).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        run_tool(
            "kubectl",
            args,
            &[("KUBECONFIG", self.kubeconfig.as_os_str())],
        )
    }

    /// Runs the control plane's `helm` against this cluster.
    pub fn helm(&self, args: &[&str]) -> Output {
        let home = std::env::temp_dir().join(format!("helm-home-{}", std::process::id()));
        run_tool(
            "helm",
            args,
            &[
                ("KUBECONFIG", self.kubeconfig.as_os_str()),
                ("HELM_CACHE_HOME", home.join("cache").as_os_str()),
                ("HELM_CONFIG_HOME", home.join("config").as_os_str()),
                ("HELM_DATA_HOME", home.join("data").as_os_str()),
            ],
        )
    }

    /// Creates a namespace named `prefix-<random>` and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        self.create_namespace(&name).await;
        name
    }

    /// Creates the namespace `name` (it may exist).
    pub async fn create_namespace(&self, name: &str) {
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(self.client().await);
        let namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        match api.create(&Default::default(), &namespace).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("create namespace {name}: {e}"),
        }
    }

    /// A token of the ServiceAccount `namespace/name` from the TokenRequest API.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let client = self.client().await;
        let request = http::Request::post(format!(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
        ))
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600}
            }))
            .unwrap(),
        )
        .unwrap();
        let answer: Value = client
            .request(request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"));
        answer["status"]["token"].as_str().unwrap().to_owned()
    }

    /// Writes a kubeconfig for the same server with `token` as the user (a ServiceAccount's
    /// identity, exactly as a pod has it) and `namespace` as the default namespace.
    pub fn write_token_kubeconfig(&self, dir: &Path, token: &str, namespace: &str) -> PathBuf {
        let admin: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&self.kubeconfig).unwrap()).unwrap();
        let current = admin["current-context"].as_str().unwrap_or_default();
        let context = admin["contexts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == current || current.is_empty())
            .expect("a current context");
        let cluster_name = context["context"]["cluster"].clone();
        let cluster = admin["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == cluster_name)
            .expect("the context's cluster")["cluster"]
            .clone();
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "cluster", "cluster": cluster}],
            "users": [{"name": "service-account", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "cluster", "user": "service-account", "namespace": namespace}}],
            "current-context": "sa",
        });
        let path = dir.join(format!("kubeconfig-{:08x}", rand::random::<u32>()));
        std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
        path
    }
}

/// A kube client from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).expect("a readable kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("a usable kubeconfig");
    kube::Client::try_from(config).expect("a client")
}

/// Applies the CRD in `path` (server-side, as `kubectl apply --server-side` would) and waits
/// until it is established; the API server's refusal comes back as the error.
pub async fn apply_crd_file(client: &kube::Client, path: &Path) -> Result<(), kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let text = std::fs::read_to_string(path).unwrap();
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
    let name = crd.metadata.name.clone().unwrap();
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    api.patch(
        &name,
        &kube::api::PatchParams::apply("real-cluster-suite").force(),
        &kube::api::Patch::Apply(&crd),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let crd = api.get(&name).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "CRD {name} never became established"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a tool printed.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics with both streams unless the tool succeeded; returns stdout.
    #[track_caller]
    pub fn ok(self, what: &str) -> String {
        assert!(
            self.success,
            "{what} failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        self.stdout
    }
}

/// Runs one of the control plane's tools (bounded: two minutes).
fn run_tool(name: &str, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
    let mut child = Command::new(tool(name))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // The pipes are read while the tool runs: one that prints more than a pipe holds (64 KiB:
    // `kubectl get crd -o json` of the CRD) would otherwise wait for a reader for ever.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<_>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<_>));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} {args:?} did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        success: status.success(),
        stdout: String::from_utf8_lossy(&stdout.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().unwrap()).into_owned(),
    }
}

// === processes ===

/// Runs its arguments as a command in the background and stops it when its standard input
/// closes (the test process ended or let go of it), or at once with SIGKILL when it reads
/// `kill`. The command's pid goes to the file named by $SUPERVISED_PID.
const SUPERVISOR: &str = r#"
"$@" &
child=$!
echo "$child" > "$SUPERVISED_PID"
read -r command || command=
if [ "$command" = kill ]; then
  kill -KILL "$child" 2>/dev/null
else
  kill -TERM "$child" 2>/dev/null
  i=0
  while kill -0 "$child" 2>/dev/null && [ "$i" -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
  kill -KILL "$child" 2>/dev/null
fi
wait "$child"
"#;

/// A process under the supervisor.
pub struct Supervised {
    name: String,
    supervisor: Child,
    stdin: Option<ChildStdin>,
    pid_file: PathBuf,
    pub log: PathBuf,
}

impl Supervised {
    /// Starts `program args`, its output appended to `log`.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let pid_file = log.with_extension("pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut supervisor = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg(name)
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .env("SUPERVISED_PID", &pid_file)
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdin = supervisor.stdin.take();
        Supervised {
            name: name.to_owned(),
            supervisor,
            stdin,
            pid_file,
            log: log.to_owned(),
        }
    }

    /// The supervised process's pid.
    pub fn pid(&self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(pid) = std::fs::read_to_string(&self.pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return pid;
            }
            assert!(Instant::now() < deadline, "{}: no pid", self.name);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.supervisor.try_wait().unwrap().is_none()
    }

    /// Stops the process (SIGTERM, SIGKILL after 15 s) and waits for it.
    pub fn stop(&mut self) {
        self.stdin.take();
        self.wait_supervisor();
    }

    /// Kills the process at once (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"kill\n");
        }
        self.wait_supervisor();
    }

    fn wait_supervisor(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.supervisor.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.supervisor.kill();
                panic!("{} did not stop", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process's output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ControlPlane {
    /// Stops the processes (their supervisors' drop) and forgets the folder, unless a test is
    /// failing: then its logs stay for the reader.
    fn drop(&mut self) {
        if let Some(mut manager) = self.controller_manager.lock().unwrap().take() {
            manager.stop();
        }
        self.apiserver.lock().unwrap().stop();
        self.etcd.lock().unwrap().stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            self.stop();
        }
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// === the control plane ===

/// How to start a control plane.
#[derive(Clone, Debug)]
pub struct Options {
    /// Start kube-controller-manager (garbage collection, namespace deletion).
    pub controller_manager: bool,
    /// Extra kube-apiserver flags.
    pub apiserver_flags: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            controller_manager: true,
            apiserver_flags: Vec::new(),
        }
    }
}

/// A local control plane: etcd, kube-apiserver and (optionally) kube-controller-manager.
pub struct ControlPlane {
    /// Where its certificates, data, logs and kubeconfigs are.
    pub dir: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The ServiceAccount token issuer.
    pub issuer: String,
    /// etcd's client URL.
    pub etcd_url: String,
    /// The CA of the serving and client certificates, PEM.
    pub ca_pem: String,
    /// An administrator's (`system:masters`) kubeconfig.
    pub admin_kubeconfig: PathBuf,
    /// The audit log (one JSON event per line).
    pub audit_log: PathBuf,
    etcd: Mutex<Supervised>,
    apiserver: Mutex<Supervised>,
    apiserver_args: Vec<String>,
    controller_manager: Mutex<Option<Supervised>>,
    /// From each stop of kube-apiserver to its next /readyz: requests answered then (403 while
    /// its RBAC cache fills) say nothing about the operator's rights.
    restarts: Mutex<Vec<(jiff::Timestamp, jiff::Timestamp)>>,
}

/// Forgets the folders of control planes whose test process has ended.
fn clean_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn pem_of(key: &KeyPair) -> String {
    key.serialize_pem()
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and, as `options` say, kube-controller-manager; returns once
    /// kube-apiserver is ready. Prints how long that took.
    pub async fn start(options: Options) -> ControlPlane {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let started = Instant::now();
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("control-planes");
        std::fs::create_dir_all(&root).unwrap();
        clean_stale(&root);
        let dir = root.join(format!(
            "{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();

        // Certificates: one CA for serving and client certificates.
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "real-cluster-suite-ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let ca = Issuer::new(ca_params, ca_key);
        let issue = |names: Vec<String>, cn: &str, org: Option<&str>, server: bool| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            if let Some(org) = org {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, org);
            }
            params.extended_key_usages = vec![if server {
                ExtendedKeyUsagePurpose::ServerAuth
            } else {
                ExtendedKeyUsagePurpose::ClientAuth
            }];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), pem_of(&key))
        };
        let (serving_crt, serving_key) = issue(
            vec!["127.0.0.1".into(), "localhost".into()],
            "kube-apiserver",
            None,
            true,
        );
        let (admin_crt, admin_key) = issue(Vec::new(), "admin", Some("system:masters"), false);
        let sa_key = KeyPair::generate().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_string_lossy().into_owned()
        };
        let ca_file = write("ca.crt", &ca_pem);
        let serving_crt = write("apiserver.crt", &serving_crt);
        let serving_key = write("apiserver.key", &serving_key);
        let admin_crt = write("admin.crt", &admin_crt);
        let admin_key = write("admin.key", &admin_key);
        let sa_private = write("sa.key", &sa_key.serialize_pem());
        let sa_public = write("sa.pub", &sa_key.public_key_pem());
        let audit_policy = write(
            "audit-policy.yaml",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
        );

        // etcd.
        let (etcd_port, peer_port, port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Supervised::start(
            "etcd",
            &tool("etcd"),
            &[
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            &[],
            &dir.join("etcd.log"),
        );
        wait_until(
            Duration::from_secs(30),
            "etcd healthy",
            &etcd.log,
            || async { etcd_call(&etcd_url, "/health", None).await.is_some() },
        )
        .await;

        // kube-apiserver.
        let url = format!("https://127.0.0.1:{port}");
        let audit_log = dir.join("audit.log");
        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // The loopback address cannot be the kubernetes Service's endpoint.
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={serving_crt}"),
            format!("--tls-private-key-file={serving_key}"),
            format!("--client-ca-file={ca_file}"),
            "--authorization-mode=Node,RBAC".into(),
            format!("--service-account-issuer={url}"),
            format!("--service-account-key-file={sa_public}"),
            format!("--service-account-signing-key-file={sa_private}"),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            format!("--audit-log-path={}", audit_log.display()),
            format!("--audit-policy-file={audit_policy}"),
            // A graceful stop ends open watches within 2 s instead of waiting for their clients
            // to close them (tens of seconds with the operator's watches open).
            "--shutdown-watch-termination-grace-period=2s".into(),
            "--v=0".into(),
        ];
        apiserver_args.extend(options.apiserver_flags.iter().cloned());
        let apiserver = Supervised::start(
            "kube-apiserver",
            &tool("kube-apiserver"),
            &apiserver_args,
            &[],
            &dir.join("kube-apiserver.log"),
        );
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": url,
                "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(&ca_pem),
            }}],
            "users": [{"name": "admin", "user": {"client-certificate": admin_crt, "client-key": admin_key}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin", "namespace": "default"}}],
            "current-context": "local",
        });
        std::fs::write(
            &admin_kubeconfig,
            serde_yaml::to_string(&kubeconfig).unwrap(),
        )
        .unwrap();
        let plane = ControlPlane {
            dir: dir.clone(),
            url: url.clone(),
            issuer: url,
            etcd_url,
            ca_pem,
            admin_kubeconfig,
            audit_log,
            etcd: Mutex::new(etcd),
            apiserver: Mutex::new(apiserver),
            apiserver_args,
            controller_manager: Mutex::new(None),
            restarts: Mutex::new(Vec::new()),
        };
        plane.wait_ready().await;

        if options.controller_manager {
            let manager = Supervised::start(
                "kube-controller-manager",
                &tool("kube-controller-manager"),
                &[
                    format!("--kubeconfig={}", plane.admin_kubeconfig.display()),
                    "--controllers=garbagecollector,namespace".into(),
                    "--leader-elect=false".into(),
                    "--secure-port=0".into(),
                    "--v=0".into(),
                ],
                &[],
                &dir.join("kube-controller-manager.log"),
            );
            *plane.controller_manager.lock().unwrap() = Some(manager);
        }
        eprintln!(
            "real-cluster suite: control plane at {} ready in {:.1} s ({})",
            plane.url,
            started.elapsed().as_secs_f64(),
            plane.dir.display()
        );
        plane
    }

    /// An administrator's client.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.admin_kubeconfig).await
    }
}

/// The cluster handle of a control plane.
trait AsCluster {
    fn cluster(self) -> Cluster;
}

impl AsCluster for Arc<ControlPlane> {
    fn cluster(self) -> Cluster {
        Cluster {
            kubeconfig: self.admin_kubeconfig.clone(),
            local: Some(self),
        }
    }
}

impl ControlPlane {
    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let log = self.apiserver.lock().unwrap().log.clone();
        let kubeconfig = self.admin_kubeconfig.clone();
        wait_until(
            Duration::from_secs(90),
            "kube-apiserver ready",
            &log,
            || {
                let kubeconfig = kubeconfig.clone();
                async move {
                    let client = client_from(&kubeconfig).await;
                    let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
                    client.request_text(request).await.is_ok()
                }
            },
        )
        .await;
    }

    /// Stops kube-apiserver (etcd keeps running).
    pub fn stop_apiserver(&self) {
        let now = jiff::Timestamp::now();
        self.restarts
            .lock()
            .unwrap()
            .push((now, jiff::Timestamp::MAX));
        let started = Instant::now();
        self.apiserver.lock().unwrap().stop();
        eprintln!(
            "real-cluster suite: kube-apiserver stopped in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    /// Starts kube-apiserver again with the same flags and waits until it is ready.
    pub async fn start_apiserver(&self) {
        let log = self.dir.join("kube-apiserver.log");
        let fresh = Supervised::start(
            "kube-apiserver",
            &tool("kube-apiserver"),
            &self.apiserver_args,
            &[],
            &log,
        );
        *self.apiserver.lock().unwrap() = fresh;
        let started = Instant::now();
        self.wait_ready().await;
        eprintln!(
            "real-cluster suite: kube-apiserver ready again in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if let Some(window) = self.restarts.lock().unwrap().last_mut() {
            window.1 = jiff::Timestamp::now();
        }
    }

    /// etcd's current revision.
    pub async fn etcd_revision(&self) -> i64 {
        let answer = etcd_call(
            &self.etcd_url,
            "/v3/kv/range",
            Some(json!({"key": base64::engine::general_purpose::STANDARD.encode("\0")})),
        )
        .await
        .expect("etcd answers");
        answer["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("a revision")
    }

    /// Writes a key of no meaning to Kubernetes straight into etcd (moves the revision).
    pub async fn etcd_put_noise(&self) {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        etcd_call(
            &self.etcd_url,
            "/v3/kv/put",
            Some(json!({"key": b64("/real-cluster-suite/noise"), "value": b64(&format!("{}", rand::random::<u64>()))})),
        )
        .await
        .expect("etcd put");
    }

    /// Compacts etcd's history up to its current revision: every older resourceVersion is gone.
    pub async fn compact_etcd(&self) -> i64 {
        let revision = self.etcd_revision().await;
        etcd_call(
            &self.etcd_url,
            "/v3/kv/compaction",
            Some(json!({"revision": revision.to_string(), "physical": true})),
        )
        .await
        .expect("etcd compaction");
        revision
    }

    /// The audit log's events so far.
    pub fn audit_events(&self) -> Vec<AuditEvent> {
        let text = std::fs::read_to_string(&self.audit_log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|e| e["stage"] == "ResponseComplete" || e["stage"] == "Panic")
            .map(|e| AuditEvent::from(&e))
            .collect()
    }

    /// The requests of `user` that the API server refused with one of `codes` (outside its
    /// restarts).
    pub fn refused(&self, user: &str, codes: &[u16]) -> Vec<AuditEvent> {
        let restarts = self.restarts.lock().unwrap().clone();
        self.audit_events()
            .into_iter()
            .filter(|e| e.user == user && codes.contains(&e.code))
            .filter(|e| {
                !restarts
                    .iter()
                    .any(|(from, to)| e.received.is_some_and(|t| *from <= t && t <= *to))
            })
            .collect()
    }

    /// The sum of `apiserver_request_total` over every label (read with the admin's rights).
    pub async fn request_total(&self) -> f64 {
        let client = self.client().await;
        let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
        let text = client.request_text(request).await.expect("/metrics");
        text.lines()
            .filter(|l| l.starts_with("apiserver_request_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// One audited request.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub user: String,
    pub verb: String,
    pub uri: String,
    pub code: u16,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub message: String,
    /// When the API server received it.
    pub received: Option<jiff::Timestamp>,
}

impl From<&Value> for AuditEvent {
    fn from(e: &Value) -> Self {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        AuditEvent {
            user: s(&e["user"]["username"]),
            verb: s(&e["verb"]),
            uri: s(&e["requestURI"]),
            code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            resource: s(&e["objectRef"]["resource"]),
            subresource: s(&e["objectRef"]["subresource"]),
            namespace: s(&e["objectRef"]["namespace"]),
            message: s(&e["responseStatus"]["message"]),
            received: e["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| t.parse().ok()),
        }
    }
}

impl std::fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} ({}): {}",
            self.code, self.verb, self.uri, self.user, self.message
        )
    }
}

/// The audit user name of a ServiceAccount.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Calls etcd's JSON gateway (`None` body: GET).
async fn etcd_call(etcd_url: &str, path: &str, body: Option<Value>) -> Option<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let url = format!("{etcd_url}{path}");
    let request = match body {
        Some(body) => client
            .post(url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap()),
        None => client.get(url),
    };
    let response = request.send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

/// Polls `check` every 100 ms until it holds; panics with the tail of `log` after `within`.
async fn wait_until<F, Fut>(within: Duration, what: &str, log: &Path, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "{what}: not within {within:?}; the end of its log:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
