//! A Kubernetes API-server double for tests and benchmarks.
//!
//! It serves real HTTP on 127.0.0.1 so that the real kube-rs client (and the compiled binary,
//! through a kubeconfig) talks to it. Kinds: Secrets, ConfigMaps, OAuthClients, Events (both
//! groups) and Leases. What it implements:
//!
//! * **Reads:** get; list with label and field selectors (`metadata.name`, `metadata.namespace`,
//!   `type`, and on events `regarding.kind` / `.name` / `.namespace` / `.uid` and `reason`) and
//!   `limit` / `continue` pages; watch
//!   from a resourceVersion with bookmarks, and `410 Gone` for a resourceVersion older than the
//!   kept history; metadata-only list and watch (`as=PartialObjectMetadataList` /
//!   `as=PartialObjectMetadata`).
//! * **Writes:** create (409 when it exists), update (409 on a stale resourceVersion), delete
//!   (finalizers hold an object with a deletionTimestamp; owned objects are garbage-collected),
//!   patch as server-side apply (field manager, force), JSON merge patch, strategic merge (as
//!   merge) and JSON patch.
//! * **Status:** the status subresource of OAuthClients is kept apart from the main resource;
//!   the generation moves when the spec changes.
//! * **Schema:** OAuthClients are defaulted and validated against `crds/oauthclient.yaml`'s
//!   OpenAPI schema (types, enums, bounds, with the real server's messages); a write holding a
//!   field the schema would prune is refused and recorded as a violation, so tests fail on it.
//!   CEL rules are not evaluated: the real-cluster suite proves them on a real kube-apiserver.
//! * **Introspection:** counts per verb and resource, and the full list of calls (for the RBAC
//!   test).
//! * **Faults:** fail the next N matching requests with a status, drop every open watch, add
//!   latency to every request.
//! * **ServiceAccounts:** stored and watched like the other kinds (metadata-only watches
//!   included); `serviceaccounts/<name>/token` (TokenRequest) issues JWTs signed with a key the
//!   double publishes ([`ApiServer::service_account_public_key`]); `/.well-known/openid-configuration`
//!   names the issuer ([`tokens`]). A TokenRequest is refused with [`ApiServer::fail_next`] and
//!   a `create serviceaccounts/token` matcher.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::SinkExt;
use rand::Rng as _;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};

pub mod tokens;

// === resource kinds ===

/// A resource kind the double serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub tracks_generation: bool,
}

impl Kind {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub const SECRETS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "secrets",
    kind: "Secret",
    namespaced: true,
    status_subresource: false,
    tracks_generation: false,
};
pub const CONFIGMAPS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "configmaps",
    kind: "ConfigMap",
    namespaced: true,
    status_subresource: false,
    tracks_generation: false,
};
pub const OAUTHCLIENTS: Kind = Kind {
    group: "oauth.token-operator.dev",
    version: "v1alpha1",
    plural: "oauthclients",
    kind: "OAuthClient",
    namespaced: true,
    status_subresource: true,
    tracks_generation: true,
};
pub const EVENTS: Kind = Kind {
    group: "events.k8s.io",
    version: "v1",
    plural: "events",
    kind: "Event",
    namespaced: true,
    status_subresource: false,
    tracks_generation: false,
};
pub const CORE_EVENTS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "events",
    kind: "Event",
    namespaced: true,
    status_subresource: false,
    tracks_generation: false,
};
pub const LEASES: Kind = Kind {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    kind: "Lease",
    namespaced: true,
    status_subresource: false,
    tracks_generation: false,
};

pub const SERVICEACCOUNTS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "serviceaccounts",
    kind: "ServiceAccount",
    namespaced: true,
    status_subresource: false,
    tracks_generation: false,
};

const KINDS: [Kind; 7] = [
    SECRETS,
    CONFIGMAPS,
    OAUTHCLIENTS,
    EVENTS,
    CORE_EVENTS,
    LEASES,
    SERVICEACCOUNTS,
];

/// (group, plural, namespace, name)
type Key = (&'static str, &'static str, String, String);

// === calls, faults ===

/// Random faults and latency (the chaos soak).
#[derive(Clone, Copy, Debug)]
struct Chaos {
    rate: f64,
    max_latency: Duration,
}

/// One API call, as RBAC sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Call {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
}

impl Call {
    /// `verb resource[/subresource]`, e.g. `patch oauthclients/status`.
    pub fn label(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{} {}/{}", self.verb, self.resource, sub),
            None => format!("{} {}", self.verb, self.resource),
        }
    }
}

/// Which requests a fault applies to.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    pub verb: Option<&'static str>,
    pub resource: Option<&'static str>,
    pub subresource: Option<&'static str>,
}

impl Matcher {
    pub fn new(verb: &'static str, resource: &'static str) -> Self {
        Matcher {
            verb: Some(verb),
            resource: Some(resource),
            subresource: None,
        }
    }
    pub fn status(verb: &'static str, resource: &'static str) -> Self {
        Matcher {
            subresource: Some("status"),
            ..Matcher::new(verb, resource)
        }
    }
    fn matches(&self, call: &Call) -> bool {
        self.verb.is_none_or(|v| v == call.verb)
            && self.resource.is_none_or(|r| r == call.resource)
            && self
                .subresource
                .is_none_or(|s| call.subresource.as_deref() == Some(s))
    }
}

struct Fault {
    matcher: Matcher,
    remaining: usize,
    status: u16,
}

/// An object created by someone else just before the next matching request is served (to race
/// the controller between its read of a cache and its write).
struct Injection {
    matcher: Matcher,
    kind: Kind,
    object: Value,
}

// === state ===

struct LogEntry {
    rv: u64,
    group: &'static str,
    plural: &'static str,
    event: &'static str,
    object: Arc<Value>,
    previous: Option<Arc<Value>>,
}

struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<LogEntry>>,
    history_limit: usize,
    /// Watches from a resourceVersion below this one get 410 Gone.
    oldest_rv: u64,
    applied: HashMap<(Key, String, bool), Value>,
    calls: Vec<Call>,
    /// Every request path as received (before any parsing).
    paths: Vec<String>,
    counts: HashMap<String, u64>,
    faults: Vec<Fault>,
    /// Rights RBAC would not grant: matching requests get 403, and access reviews say no.
    denied: Vec<Matcher>,
    injections: Vec<Injection>,
    chaos: Option<Chaos>,
    chaos_faults: u64,
    violations: Vec<String>,
    crd_installed: bool,
    schema: Value,
    first_ready: HashMap<(String, String), std::time::Instant>,
    refresh_lateness: Vec<f64>,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Arc<LogEntry>>,
    drop_watches: watch::Sender<u64>,
    latency_ms: AtomicU64,
    bookmark_ms: AtomicU64,
    /// Whether calls go to the shared log that the RBAC test reads (off for tests of the double
    /// itself, whose calls are not the controller's).
    log_calls: bool,
    /// The operator configuration the calls are logged under (see [`ApiServer::set_profile`]).
    profile: Mutex<&'static str>,
    /// The ServiceAccount token issuer.
    issuer: tokens::Issuer,
    /// The user name SelfSubjectReviews answer (a user's by default, not a ServiceAccount's).
    username: Mutex<String>,
}

/// The profile of an operator run without `--allow-service-account-tokens`.
pub const DEFAULT_PROFILE: &str = "default";
/// The profile of an operator run with `--allow-service-account-tokens`.
pub const SERVICE_ACCOUNT_TOKENS_PROFILE: &str = "service-account-tokens";

impl Shared {
    /// The profile to log calls under, when calls are logged.
    fn log_profile(&self) -> Option<&'static str> {
        self.log_calls.then(|| *self.profile.lock().unwrap())
    }
}

/// A running API-server double.
#[derive(Clone)]
pub struct ApiServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    /// Notes (panics) of the operators started against this double, shown when a test times out.
    pub operator_logs: Arc<Mutex<Vec<super::logs::Captured>>>,
}

fn crd_schema() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/oauthclient.yaml"
    ))
    .expect("crds/oauthclient.yaml");
    let crd: Value = serde_yaml::from_str(&text).expect("CRD YAML");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

impl ApiServer {
    /// Starts the double with the OAuthClient CRD installed.
    pub async fn start() -> Self {
        Self::start_with(true).await
    }

    /// Starts the double, with or without the OAuthClient CRD.
    pub async fn start_with(crd_installed: bool) -> Self {
        Self::start_full(crd_installed, true).await
    }

    /// Starts a double whose calls are not the controller's (kept out of the RBAC log).
    pub async fn start_unlogged() -> Self {
        Self::start_full(true, false).await
    }

    /// As [`ApiServer::start_unlogged`], with or without the OAuthClient CRD.
    pub async fn start_unlogged_with(crd_installed: bool) -> Self {
        Self::start_full(crd_installed, false).await
    }

    async fn start_full(crd_installed: bool, log_calls: bool) -> Self {
        let (events, _) = broadcast::channel(1 << 16);
        let (drop_watches, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                rv: 1000,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit: 200_000,
                oldest_rv: 1000,
                applied: HashMap::new(),
                calls: Vec::new(),
                paths: Vec::new(),
                counts: HashMap::new(),
                faults: Vec::new(),
                denied: Vec::new(),
                injections: Vec::new(),
                chaos: None,
                chaos_faults: 0,
                violations: Vec::new(),
                crd_installed,
                schema: crd_schema(),
                first_ready: HashMap::new(),
                refresh_lateness: Vec::new(),
            }),
            events,
            drop_watches,
            latency_ms: AtomicU64::new(0),
            bookmark_ms: AtomicU64::new(1000),
            log_calls,
            profile: Mutex::new(DEFAULT_PROFILE),
            issuer: tokens::Issuer::new(),
            username: Mutex::new("test".into()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        ApiServer {
            addr,
            shared,
            operator_logs: Arc::default(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client talking to the double.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Writes a kubeconfig pointing at the double; returns its path.
    pub fn write_kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: test\n    namespace: default\ncurrent-context: double\nusers:\n- name: test\n  user:\n    token: test-token\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    // --- ServiceAccount tokens ---

    /// The issuer of the ServiceAccount tokens (as the discovery document names it).
    pub fn service_account_issuer(&self) -> &'static str {
        tokens::ISSUER
    }

    /// The public key (an uncompressed P-256 point) that verifies the ServiceAccount tokens.
    pub fn service_account_public_key(&self) -> Vec<u8> {
        self.shared.issuer.public_key()
    }

    /// From now on, SelfSubjectReviews name the client `username` (e.g.
    /// `system:serviceaccount:NS:NAME` for an operator running as that ServiceAccount).
    pub fn set_username(&self, username: &str) {
        *self.shared.username.lock().unwrap() = username.to_owned();
    }

    /// Sets the API server's own audiences, which fill a TokenRequest with no audience.
    pub fn set_api_audiences(&self, audiences: &[&str]) {
        self.shared
            .issuer
            .set_api_audiences(audiences.iter().map(|a| (*a).to_owned()).collect());
    }

    /// Every ServiceAccount token issued so far.
    pub fn issued_service_account_tokens(&self) -> Vec<String> {
        self.shared.issuer.issued()
    }

    /// Logs the calls from now on (for the RBAC test) as made by an operator configured as
    /// `profile` ([`DEFAULT_PROFILE`] or [`SERVICE_ACCOUNT_TOKENS_PROFILE`]).
    pub fn set_profile(&self, profile: &'static str) {
        *self.shared.profile.lock().unwrap() = profile;
    }

    // --- introspection ---

    /// Number of calls with this label (`patch oauthclients/status`, `create events`, ...).
    pub fn count(&self, label: &str) -> u64 {
        self.store().counts.get(label).copied().unwrap_or(0)
    }

    /// Every counted label and its count.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.store()
            .counts
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.store().calls.clone()
    }

    /// Every request path received so far, as sent.
    pub fn paths(&self) -> Vec<String> {
        self.store().paths.clone()
    }

    /// Forgets the counts and calls recorded so far.
    pub fn reset_counts(&self) {
        let mut store = self.store();
        store.counts.clear();
        store.calls.clear();
    }

    /// Schema violations (fields the schema would prune, invalid values) seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.store().violations.clone()
    }

    /// When each OAuthClient (namespace, name) first turned Ready.
    pub fn first_ready(&self) -> HashMap<(String, String), std::time::Instant> {
        self.store().first_ready.clone()
    }

    /// How many OAuthClients have turned Ready so far.
    pub fn ready_count(&self) -> usize {
        self.store().first_ready.len()
    }

    /// Seconds between each planned refresh (nextRefreshAt) and the status write of its new
    /// token; drained.
    pub fn take_refresh_lateness(&self) -> Vec<f64> {
        std::mem::take(&mut self.store().refresh_lateness)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store().rv
    }

    // --- faults ---

    /// Fails the next `n` requests matching `matcher` with `status`.
    pub fn fail_next(&self, matcher: Matcher, n: usize, status: u16) {
        self.store().faults.push(Fault {
            matcher,
            remaining: n,
            status,
        });
    }

    /// From now on, RBAC does not grant what `matcher` matches: such requests get 403 and
    /// access reviews for them answer no.
    pub fn deny(&self, matcher: Matcher) {
        self.store().denied.push(matcher);
    }

    /// Grants again everything [`ApiServer::deny`] took away.
    pub fn allow_all(&self) {
        self.store().denied.clear();
    }

    /// Drops every fault still queued by [`ApiServer::fail_next`].
    pub fn reset_faults(&self) {
        self.store().faults.clear();
    }

    /// From now on, fails each request with probability `rate` (500 or 429 for any verb, also
    /// 409 for writes) and delays each by up to `max_latency`; `rate` 0 and zero latency end it.
    pub fn set_chaos(&self, rate: f64, max_latency: Duration) {
        self.store().chaos =
            (rate > 0.0 || !max_latency.is_zero()).then_some(Chaos { rate, max_latency });
    }

    /// How many requests the chaos mode failed.
    pub fn chaos_faults(&self) -> u64 {
        self.store().chaos_faults
    }

    /// Ends every open watch stream.
    pub fn drop_watches(&self) {
        self.shared.drop_watches.send_modify(|g| *g += 1);
    }

    /// Forgets the watch history, so that resuming watches get 410 Gone.
    pub fn compact(&self) {
        let mut store = self.store();
        store.history.clear();
        store.oldest_rv = store.rv;
    }

    /// Adds latency to every request.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the interval between watch bookmarks.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared
            .bookmark_ms
            .store(interval.as_millis().max(1) as u64, Ordering::SeqCst);
    }

    /// Keeps at most `limit` watch events in history.
    pub fn set_history_limit(&self, limit: usize) {
        self.store().history_limit = limit;
    }

    // --- direct object access (not counted as calls) ---

    /// Gets an object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.store()
            .objects
            .get(&(
                kind.group,
                kind.plural,
                namespace.to_owned(),
                name.to_owned(),
            ))
            .cloned()
    }

    /// Creates `object` (of `kind`) just before the next request matching `matcher` is served,
    /// as another client racing the controller would.
    pub fn create_before_next(&self, matcher: Matcher, kind: Kind, object: Value) {
        self.store().injections.push(Injection {
            matcher,
            kind,
            object,
        });
    }

    /// Lists objects of a kind in a namespace (all namespaces with `None`).
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<Value> {
        self.store()
            .objects
            .iter()
            .filter(|((g, p, ns, _), _)| {
                *g == kind.group && *p == kind.plural && namespace.is_none_or(|n| n == ns)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Counts the objects of a kind for which `f` holds (without copying them).
    pub fn count_matching(&self, kind: Kind, f: impl Fn(&Value) -> bool) -> usize {
        self.store()
            .objects
            .iter()
            .filter(|((g, p, _, _), v)| *g == kind.group && *p == kind.plural && f(v))
            .count()
    }

    /// Creates an object as a user would (validated), or panics with the error.
    pub fn create(&self, kind: Kind, object: Value) -> Value {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let mut store = self.store();
        let result = store.create(&self.shared, kind, &namespace, object);
        match result {
            Ok(v) => v,
            Err(e) => panic!("create {}: {} {}", kind.plural, e.0, e.1),
        }
    }

    /// Creates an object as a user would, returning the API server's refusal (code, message).
    pub fn try_create(&self, kind: Kind, object: Value) -> Result<Value, (u16, String)> {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let mut store = self.store();
        store.create(&self.shared, kind, &namespace, object)
    }

    /// Changes an object with `f`, as a user's update would (validated), or panics.
    pub fn modify(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Value {
        let mut store = self.store();
        let key = (
            kind.group,
            kind.plural,
            namespace.to_owned(),
            name.to_owned(),
        );
        let mut object = store.objects.get(&key).cloned().expect("object exists");
        f(&mut object);
        match store.replace(&self.shared, kind, key, object, false) {
            Ok(v) => v,
            Err(e) => panic!("modify {}: {} {}", kind.plural, e.0, e.1),
        }
    }

    /// Deletes an object as a user would.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        let mut store = self.store();
        let key = (
            kind.group,
            kind.plural,
            namespace.to_owned(),
            name.to_owned(),
        );
        store.delete(&self.shared, key).expect("delete");
    }
}

type Failure = (u16, String);

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Every distinct call any double has served in this `cargo test` run, appended to a file that
/// the RBAC test reads. Test binaries of one run share their parent (cargo), hence the name.
pub fn calls_log_path() -> std::path::PathBuf {
    let run = std::os::unix::process::parent_id();
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("api-calls-{run}.txt"))
}

/// Appends `verb group resource subresource profile` (a non-resource URL as `verb - URL -`).
fn log_call(call: &Call, profile: &'static str) {
    use std::io::Write;
    static SEEN: std::sync::OnceLock<Mutex<std::collections::HashSet<(Call, &'static str)>>> =
        std::sync::OnceLock::new();
    let mut signature = call.clone();
    signature.namespace = None;
    let fresh = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .insert((signature, profile));
    if fresh {
        let group = match call.group.as_str() {
            "" if call.resource.starts_with('/') => "-",
            "" => "core",
            group => group,
        };
        let line = format!(
            "{} {group} {} {} {profile}\n",
            call.verb,
            call.resource,
            call.subresource.as_deref().unwrap_or("-")
        );
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(calls_log_path())
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

impl Store {
    fn record(&mut self, call: Call, log: Option<&'static str>) {
        if let Some(profile) = log {
            log_call(&call, profile);
        }
        *self.counts.entry(call.label()).or_default() += 1;
        self.calls.push(call);
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn publish(
        &mut self,
        shared: &Shared,
        kind: Kind,
        event: &'static str,
        object: &Value,
        previous: Option<&Value>,
    ) {
        let entry = Arc::new(LogEntry {
            rv: self.rv,
            group: kind.group,
            plural: kind.plural,
            event,
            object: Arc::new(object.clone()),
            previous: previous.map(|p| Arc::new(p.clone())),
        });
        self.history.push_back(entry.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.oldest_rv = old.rv;
            }
        }
        let _ = shared.events.send(entry);
    }

    fn check_schema(&mut self, kind: Kind, object: &mut Value, part: &str) -> Result<(), Failure> {
        if kind != OAUTHCLIENTS {
            return Ok(());
        }
        let schema = self.schema["properties"][part].clone();
        if object.get(part).is_none_or(Value::is_null) {
            if part == "spec" {
                return Err((422, "spec: Required value".into()));
            }
            return Ok(());
        }
        apply_defaults(&schema, &mut object[part]);
        let mut errors = Vec::new();
        validate(&schema, &object[part], part, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            self.violations.extend(errors.iter().cloned());
            Err((
                422,
                format!("{} is invalid: {}", kind.kind, errors.join("; ")),
            ))
        }
    }

    fn create(
        &mut self,
        shared: &Shared,
        kind: Kind,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, Failure> {
        let name = object["metadata"]["name"].as_str().map(str::to_owned);
        let name = match name {
            Some(n) if !n.is_empty() => n,
            _ => match object["metadata"]["generateName"].as_str() {
                Some(prefix) => format!("{prefix}{:05x}", rand::random::<u32>() & 0xfffff),
                None => return Err((422, "metadata.name: Required value".into())),
            },
        };
        let key = (kind.group, kind.plural, namespace.to_owned(), name.clone());
        if self.objects.contains_key(&key) {
            return Err((409, format!("{} \"{name}\" already exists", kind.plural)));
        }
        if kind.status_subresource {
            if let Some(o) = object.as_object_mut() {
                o.remove("status");
            }
        }
        normalise(kind, &mut object);
        self.check_schema(kind, &mut object, "spec")?;
        validate_metadata(kind, &name, &object, None)?;
        let rv = self.next_rv();
        let meta = object["metadata"].as_object_mut().unwrap();
        meta.insert("name".into(), json!(name));
        if kind.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        }
        meta.insert(
            "uid".into(),
            json!(format!("{:032x}", rand::random::<u128>())),
        );
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.remove("managedFields");
        if kind.tracks_generation {
            meta.insert("generation".into(), json!(1));
        }
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        self.objects.insert(key, object.clone());
        self.publish(shared, kind, "ADDED", &object, None);
        Ok(object)
    }

    /// Replaces an object (update, patch, apply): checks the resourceVersion when asked,
    /// keeps status or spec apart, bumps generation, handles finalizers.
    fn replace(
        &mut self,
        shared: &Shared,
        kind: Kind,
        key: Key,
        mut object: Value,
        status_only: bool,
    ) -> Result<Value, Failure> {
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or((404, format!("{} \"{}\" not found", kind.plural, key.3)))?;
        if let Some(rv) = object["metadata"]["resourceVersion"].as_str() {
            if rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("") {
                return Err((
                    409,
                    format!(
                        "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                        kind.plural, key.3
                    ),
                ));
            }
        }
        normalise(kind, &mut object);
        if kind.status_subresource {
            if status_only {
                let status = object.get("status").cloned();
                object = old.clone();
                match status {
                    Some(s) => object["status"] = s,
                    None => {
                        object.as_object_mut().unwrap().remove("status");
                    }
                }
                self.check_schema(kind, &mut object, "status")?;
            } else {
                match old.get("status") {
                    Some(s) => object["status"] = s.clone(),
                    None => {
                        object.as_object_mut().unwrap().remove("status");
                    }
                }
                self.check_schema(kind, &mut object, "spec")?;
            }
        }
        // Fields the server owns.
        for field in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "deletionTimestamp",
        ] {
            match old["metadata"].get(field) {
                Some(v) => object["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = object["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        if let Some(m) = object["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        validate_metadata(kind, &key.3, &object, Some(&old))?;
        if kind.tracks_generation {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            let bumped = if old.get("spec") != object.get("spec") {
                generation + 1
            } else {
                generation
            };
            object["metadata"]["generation"] = json!(bumped);
        }
        // Nothing changed: no new resourceVersion, no event (as the real server does).
        let mut comparable = object.clone();
        comparable["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if comparable == old {
            return Ok(old);
        }
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let finalizers_empty = object["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
        if old["metadata"].get("deletionTimestamp").is_some() && finalizers_empty {
            self.objects.remove(&key);
            self.publish(shared, kind, "DELETED", &object, Some(&old));
            self.collect_garbage(shared, &object);
            return Ok(object);
        }
        if kind == OAUTHCLIENTS && status_only {
            self.observe_status(&key, &old, &object);
        }
        self.objects.insert(key, object.clone());
        self.publish(shared, kind, "MODIFIED", &object, Some(&old));
        Ok(object)
    }

    /// Records, for benchmarks, when each OAuthClient first turned Ready and how late each
    /// planned refresh came (a new issuedAt compared with the previous nextRefreshAt).
    fn observe_status(&mut self, key: &Key, old: &Value, new: &Value) {
        let ready = |v: &Value| {
            v["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        };
        let id = (key.2.clone(), key.3.clone());
        if ready(new) && !self.first_ready.contains_key(&id) {
            self.first_ready.insert(id, std::time::Instant::now());
        }
        let issued = |v: &Value| v["status"]["issuedAt"].as_str().map(str::to_owned);
        let planned = old["status"]["nextRefreshAt"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let forced = new["metadata"]["annotations"]
            .get("oauth.token-operator.dev/refresh-requested-at")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .zip(issued(old).and_then(|t| t.parse::<jiff::Timestamp>().ok()))
            .is_some_and(|(requested, issued)| requested > issued);
        let was_healthy = old["status"]["consecutiveFailures"].as_i64() == Some(0);
        if let (Some(planned), true, false, true) = (
            planned,
            issued(old) != issued(new) && issued(old).is_some(),
            forced,
            was_healthy,
        ) {
            let late = jiff::Timestamp::now().duration_since(planned).as_secs_f64();
            self.refresh_lateness.push(late);
        }
    }

    fn delete(&mut self, shared: &Shared, key: Key) -> Result<Value, Failure> {
        let kind = KINDS
            .iter()
            .copied()
            .find(|k| k.group == key.0 && k.plural == key.1)
            .unwrap();
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or((404, format!("{} \"{}\" not found", kind.plural, key.3)))?;
        let has_finalizers = old["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old["metadata"].get("deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut object = old.clone();
            let rv = self.next_rv();
            object["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            self.objects.insert(key, object.clone());
            self.publish(shared, kind, "MODIFIED", &object, Some(&old));
            return Ok(object);
        }
        self.objects.remove(&key);
        let rv = self.next_rv();
        let mut object = old.clone();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.publish(shared, kind, "DELETED", &object, Some(&old));
        self.collect_garbage(shared, &object);
        Ok(object)
    }

    /// Deletes the objects owned by a deleted object (background cascading deletion).
    fn collect_garbage(&mut self, shared: &Shared, owner: &Value) {
        let Some(uid) = owner["metadata"]["uid"].as_str() else {
            return;
        };
        let owned: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, v)| {
                v["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in owned {
            let _ = self.delete(shared, key);
        }
    }
}

/// What the real API server checks of every object's metadata, and of Secrets: a DNS-subdomain
/// name, qualified label and annotation keys, label values, the annotations' total size; a
/// Secret's type is immutable and its data at most 1 MiB.
fn validate_metadata(
    kind: Kind,
    name: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), Failure> {
    let invalid = |what: String| Err((422, format!("{} \"{name}\" is invalid: {what}", kind.kind)));
    let subdomain = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|l| {
                let b = l.as_bytes();
                !b.is_empty()
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            })
    };
    let label_like = |s: &str| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
    };
    let qualified = |key: &str| match key.split_once('/') {
        Some((prefix, rest)) => subdomain(prefix) && label_like(rest),
        None => label_like(key),
    };
    if !subdomain(name) {
        return invalid(format!(
            "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most 253 characters)"
        ));
    }
    let meta = &object["metadata"];
    for (key, value) in meta["labels"].as_object().into_iter().flatten() {
        if !qualified(key) {
            return invalid(format!(
                "metadata.labels: Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.' (at most 63)"
            ));
        }
        let value = value.as_str().unwrap_or_default();
        if !value.is_empty() && !label_like(value) {
            return invalid(format!(
                "metadata.labels: Invalid value: \"{value}\": must be no more than 63 characters"
            ));
        }
    }
    let mut annotations_size = 0;
    for (key, value) in meta["annotations"].as_object().into_iter().flatten() {
        if !qualified(key) {
            return invalid(format!(
                "metadata.annotations: Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.'"
            ));
        }
        annotations_size += key.len() + value.as_str().map_or(0, str::len);
    }
    if annotations_size > 256 * 1024 {
        return invalid("metadata.annotations: Too long: must have at most 262144 bytes".into());
    }
    if kind == EVENTS && object["note"].as_str().is_some_and(|n| n.len() > 1024) {
        return invalid("note: Too long: may not be more than 1024 bytes".into());
    }
    if kind == SECRETS {
        let type_of = |o: &Value| o["type"].as_str().unwrap_or("Opaque").to_owned();
        if let Some(old) = old
            && type_of(old) != type_of(object)
        {
            return invalid("type: Invalid value: field is immutable".into());
        }
        let size: usize = object["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, |v| v.len() * 3 / 4))
            .sum();
        if size > 1024 * 1024 {
            return invalid("data: Too long: must have at most 1048576 bytes".into());
        }
    }
    Ok(())
}

/// Secrets keep only `data` (base64): `stringData` is folded in, as the real server does.
fn normalise(kind: Kind, object: &mut Value) {
    if object.get("metadata").is_none_or(|m| !m.is_object()) {
        object["metadata"] = json!({});
    }
    if kind != SECRETS {
        return;
    }
    if let Some(Value::Object(string_data)) =
        object.as_object_mut().and_then(|o| o.remove("stringData"))
    {
        if !object["data"].is_object() {
            object["data"] = json!({});
        }
        for (k, v) in string_data {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or(""));
            object["data"][k] = json!(encoded);
        }
    }
    if object.get("type").is_none() {
        object["type"] = json!("Opaque");
    }
}

// === schema ===

fn apply_defaults(schema: &Value, value: &mut Value) {
    let Some(props) = schema["properties"].as_object() else {
        if let (Some(items), Some(list)) = (schema.get("items"), value.as_array_mut()) {
            for item in list {
                apply_defaults(items, item);
            }
        }
        return;
    };
    let Some(object) = value.as_object_mut() else {
        return;
    };
    for (name, sub) in props {
        if !object.contains_key(name) {
            if let Some(default) = sub.get("default") {
                object.insert(name.clone(), default.clone());
            }
        }
        if let Some(child) = object.get_mut(name) {
            apply_defaults(sub, child);
        }
    }
}

fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != true {
            errors.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{path}: expected {ty}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            errors.push(format!("{path}: Unsupported value {value}"));
        }
    }
    match value {
        Value::Object(map) => validate_object(schema, map, path, errors),
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64() {
                if items.len() as u64 > max {
                    errors.push(format!(
                        "{path}: Too many: {}: must have at most {max} items",
                        items.len()
                    ));
                }
            }
            for (i, item) in items.iter().enumerate() {
                validate(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if schema["maxLength"].as_u64().is_some_and(|max| len > max) {
                errors.push(format!(
                    "{path}: Too long: may not be more than {} bytes",
                    schema["maxLength"]
                ));
            }
            if schema["minLength"].as_u64().is_some_and(|min| len < min) {
                errors.push(format!("{path}: Too short"));
            }
            if let Some(pattern) = schema["pattern"].as_str() {
                if !regex::Regex::new(pattern).unwrap().is_match(s) {
                    errors.push(format!("{path}: does not match {pattern}"));
                }
            }
            if schema["format"] == "date-time" && jiff::Timestamp::from_str_rfc3339(s).is_err() {
                errors.push(format!("{path}: not a date-time"));
            }
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap();
            if schema["minimum"].as_f64().is_some_and(|min| n < min) {
                errors.push(format!(
                    "{path}: Invalid value: {n}: {path} in body should be greater than or equal to {}",
                    schema["minimum"]
                ));
            }
            if schema["maximum"].as_f64().is_some_and(|max| n > max) {
                errors.push(format!(
                    "{path}: Invalid value: {n}: {path} in body should be less than or equal to {}",
                    schema["maximum"]
                ));
            }
        }
        _ => {}
    }
}

trait FromRfc3339 {
    fn from_str_rfc3339(s: &str) -> Result<jiff::Timestamp, jiff::Error>;
}

impl FromRfc3339 for jiff::Timestamp {
    fn from_str_rfc3339(s: &str) -> Result<jiff::Timestamp, jiff::Error> {
        s.parse()
    }
}

fn validate_object(schema: &Value, map: &Map<String, Value>, path: &str, errors: &mut Vec<String>) {
    if let Some(max) = schema["maxProperties"].as_u64() {
        if map.len() as u64 > max {
            errors.push(format!(
                "{path}: Too many: {}: must have at most {max} items",
                map.len()
            ));
        }
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let name = required.as_str().unwrap();
        if !map.contains_key(name) {
            errors.push(format!("{path}.{name}: Required value"));
        }
    }
    let props = schema["properties"].as_object();
    for (name, child) in map {
        let child_path = format!("{path}.{name}");
        match (
            props.and_then(|p| p.get(name)),
            schema.get("additionalProperties"),
        ) {
            (Some(sub), _) => validate(sub, child, &child_path, errors),
            (None, Some(additional)) if additional.is_object() => {
                validate(additional, child, &child_path, errors)
            }
            _ => errors.push(format!(
                "{child_path}: unknown field (the schema would prune it)"
            )),
        }
    }
    // `x-kubernetes-validations` (CEL) are not evaluated here: the real-cluster suite checks
    // them against a real kube-apiserver (tests/real_cluster/schema.rs), whose evaluation is
    // the reference.
}

// === selectors ===

fn label_matches(selector: &str, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    split_requirements(selector).iter().all(|req| {
        let req = req.trim();
        if req.is_empty() {
            return true;
        }
        if let Some((k, set)) = req.split_once(" notin ") {
            let set = parse_set(set);
            return get(k.trim()).is_none_or(|v| !set.contains(&v));
        }
        if let Some((k, set)) = req.split_once(" in ") {
            let set = parse_set(set);
            return get(k.trim()).is_some_and(|v| set.contains(&v));
        }
        if let Some((k, v)) = req.split_once("!=") {
            return get(k.trim()) != Some(v.trim());
        }
        if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            return get(k.trim()) == Some(v.trim());
        }
        if let Some(k) = req.strip_prefix('!') {
            return get(k.trim()).is_none();
        }
        get(req).is_some()
    })
}

fn split_requirements(selector: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out
}

fn parse_set(set: &str) -> Vec<&str> {
    set.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .collect()
}

fn field_matches(selector: &str, object: &Value) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|req| {
        let (path, value, negate) = match req.split_once("!=") {
            Some((p, v)) => (p, v, true),
            None => match req.split_once("==").or_else(|| req.split_once('=')) {
                Some((p, v)) => (p, v, false),
                None => return true,
            },
        };
        let actual = match path.trim() {
            "metadata.name" => object["metadata"]["name"].as_str(),
            "metadata.namespace" => object["metadata"]["namespace"].as_str(),
            "type" => object["type"].as_str(),
            // events.k8s.io/v1 (the real server maps these to involvedObject.*).
            "regarding.kind" => object["regarding"]["kind"].as_str(),
            "regarding.name" => object["regarding"]["name"].as_str(),
            "regarding.namespace" => object["regarding"]["namespace"].as_str(),
            "regarding.uid" => object["regarding"]["uid"].as_str(),
            "reason" => object["reason"].as_str(),
            _ => None,
        };
        (actual == Some(value.trim())) != negate
    })
}

// === request handling ===

struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, sub] => (*plural, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return None,
    };
    let kind = KINDS
        .iter()
        .copied()
        .find(|k| k.group == group && k.version == version && k.plural == plural)?;
    Some(Target {
        kind,
        namespace,
        name,
        subresource,
    })
}

fn status_body(code: u16, message: &str) -> Response {
    let reason = match code {
        404 => "NotFound",
        409 if message.contains("already exists") => "AlreadyExists",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        400 => "BadRequest",
        405 => "MethodNotAllowed",
        _ => "InternalError",
    };
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    let mut response = (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response();
    if code == 429 {
        response
            .headers_mut()
            .insert("retry-after", "1".parse().unwrap());
    }
    response
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn metadata_only(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object["metadata"].clone(),
    })
}

/// A SelfSubjectAccessReview: allowed unless [`ApiServer::deny`] matches it. Recorded as the
/// call `create selfsubjectaccessreviews`, which Kubernetes grants every authenticated user.
fn self_subject_access_review(shared: &Shared, body: &[u8]) -> Response {
    let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
        return status_body(400, "not a SelfSubjectAccessReview");
    };
    let attributes = &review["spec"]["resourceAttributes"];
    let field = |name: &str| attributes[name].as_str().unwrap_or_default().to_owned();
    let asked = Call {
        verb: field("verb"),
        group: field("group"),
        resource: field("resource"),
        subresource: Some(field("subresource")).filter(|s| !s.is_empty()),
        namespace: Some(field("namespace")).filter(|s| !s.is_empty()),
    };
    let mut store = shared.store.lock().unwrap();
    store.record(
        Call {
            verb: "create".into(),
            group: "authorization.k8s.io".into(),
            resource: "selfsubjectaccessreviews".into(),
            subresource: None,
            namespace: None,
        },
        shared.log_profile(),
    );
    let allowed = !store.denied.iter().any(|m| m.matches(&asked));
    review["status"] = json!({"allowed": allowed});
    (StatusCode::CREATED, axum::Json(review)).into_response()
}

/// A SelfSubjectReview: the user the double takes its clients for ([`ApiServer::set_username`]).
/// Recorded as `create selfsubjectreviews`, which Kubernetes grants every authenticated user.
fn self_subject_review(shared: &Shared) -> Response {
    let username = shared.username.lock().unwrap().clone();
    shared.store.lock().unwrap().record(
        Call {
            verb: "create".into(),
            group: "authentication.k8s.io".into(),
            resource: "selfsubjectreviews".into(),
            subresource: None,
            namespace: None,
        },
        shared.log_profile(),
    );
    let review = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
        "metadata": {}, "status": {"userInfo": {"username": username}},
    });
    (StatusCode::CREATED, axum::Json(review)).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = shared.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    shared
        .store
        .lock()
        .unwrap()
        .paths
        .push(uri.path().to_owned());
    if uri.path() == "/.well-known/openid-configuration" && method == Method::GET {
        let call = Call {
            verb: "get".into(),
            group: String::new(),
            resource: uri.path().to_owned(),
            subresource: None,
            namespace: None,
        };
        shared
            .store
            .lock()
            .unwrap()
            .record(call, shared.log_profile());
        return (StatusCode::OK, axum::Json(tokens::discovery())).into_response();
    }
    if uri.path() == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        && method == Method::POST
    {
        return self_subject_access_review(&shared, &body);
    }
    if uri.path() == "/apis/authentication.k8s.io/v1/selfsubjectreviews" && method == Method::POST {
        return self_subject_review(&shared);
    }
    let Some(target) = parse_path(uri.path()) else {
        return status_body(
            404,
            &format!(
                "the server could not find the requested resource ({})",
                uri.path()
            ),
        );
    };
    let query = query_map(&uri);
    let is_watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (&method, target.name.is_some()) {
        (&Method::GET, false) if is_watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, false) => "create",
        (&Method::POST, true) if target.subresource.as_deref() == Some("token") => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return status_body(405, "method not allowed"),
    };
    let call = Call {
        verb: verb.to_owned(),
        group: target.kind.group.to_owned(),
        resource: target.kind.plural.to_owned(),
        subresource: target.subresource.clone(),
        namespace: target.namespace.clone(),
    };
    let chaos = {
        let mut store = shared.store.lock().unwrap();
        store.record(call.clone(), shared.log_profile());
        if target.kind == OAUTHCLIENTS && !store.crd_installed {
            return status_body(404, "the server could not find the requested resource");
        }
        if let Some(i) = store
            .injections
            .iter()
            .position(|injection| injection.matcher.matches(&call))
        {
            let injection = store.injections.remove(i);
            let namespace = injection.object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            let created = store.create(&shared, injection.kind, &namespace, injection.object);
            assert!(created.is_ok(), "injected object: {created:?}");
        }
        if store.denied.iter().any(|m| m.matches(&call)) {
            return status_body(
                403,
                &format!("{} is forbidden (denied by the test)", call.label()),
            );
        }
        if let Some(fault) = store
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && f.matcher.matches(&call))
        {
            fault.remaining -= 1;
            let status = fault.status;
            store.faults.retain(|f| f.remaining > 0);
            return status_body(status, "injected fault");
        }
        store.chaos
    };
    if let Some(chaos) = chaos {
        let (fail, delay, status) = {
            let mut rng = rand::rng();
            let write = !matches!(verb, "get" | "list" | "watch");
            let statuses: &[u16] = if write { &[500, 409, 429] } else { &[500, 429] };
            (
                rng.random_bool(chaos.rate.clamp(0.0, 1.0)),
                rng.random_range(0..=chaos.max_latency.as_millis() as u64),
                statuses[rng.random_range(0..statuses.len())],
            )
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if fail {
            shared.store.lock().unwrap().chaos_faults += 1;
            let mut response = status_body(status, "injected chaos fault");
            if status == 429 {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
            }
            return response;
        }
    }
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let metadata = accept.contains("as=PartialObjectMetadata");
    match verb {
        "watch" => watch_stream(shared, target, query, metadata),
        "list" => list(&shared, &target, &query, metadata),
        _ => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let mut store = shared.store.lock().unwrap();
            let result = write(
                &mut store,
                &shared,
                verb,
                &target,
                &query,
                &content_type,
                &body,
            );
            match result {
                Ok((code, object)) => {
                    let object = if metadata {
                        metadata_only(&object)
                    } else {
                        object
                    };
                    (StatusCode::from_u16(code).unwrap(), axum::Json(object)).into_response()
                }
                Err((code, message)) => status_body(code, &message),
            }
        }
    }
}

fn write(
    store: &mut Store,
    shared: &Shared,
    verb: &str,
    target: &Target,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, Value), Failure> {
    let kind = target.kind;
    let namespace = target.namespace.clone().unwrap_or_default();
    let status_only = target.subresource.as_deref() == Some("status");
    if kind == SERVICEACCOUNTS && target.subresource.as_deref() == Some("token") && verb == "create"
    {
        let name = target.name.clone().unwrap_or_default();
        let key = (kind.group, kind.plural, namespace.clone(), name.clone());
        let Some(sa) = store.objects.get(&key) else {
            return Err((404, format!("serviceaccounts \"{name}\" not found")));
        };
        let request: Value = serde_json::from_slice(body).map_err(|e| (400, e.to_string()))?;
        return shared
            .issuer
            .token_request(&namespace, sa, &request)
            .map(|v| (201, v));
    }
    if target.subresource.is_some() && !(status_only && kind.status_subresource) {
        return Err((404, "no such subresource".into()));
    }
    let parse = |body: &[u8]| -> Result<Value, Failure> {
        serde_json::from_slice(body)
            .or_else(|_| serde_yaml::from_slice(body))
            .map_err(|e| (400, format!("cannot decode body: {e}")))
    };
    match verb {
        "get" => {
            let key = (
                kind.group,
                kind.plural,
                namespace,
                target.name.clone().unwrap(),
            );
            store
                .objects
                .get(&key)
                .cloned()
                .map(|v| (200, v))
                .ok_or((404, format!("{} \"{}\" not found", kind.plural, key.3)))
        }
        "create" => {
            let object = parse(body)?;
            store
                .create(shared, kind, &namespace, object)
                .map(|v| (201, v))
        }
        "update" => {
            let object = parse(body)?;
            let key = (
                kind.group,
                kind.plural,
                namespace,
                target.name.clone().unwrap(),
            );
            store
                .replace(shared, kind, key, object, status_only)
                .map(|v| (200, v))
        }
        "delete" => {
            let key = (
                kind.group,
                kind.plural,
                namespace,
                target.name.clone().unwrap(),
            );
            store.delete(shared, key).map(|v| (200, v))
        }
        "patch" => {
            let name = target.name.clone().unwrap();
            let key = (kind.group, kind.plural, namespace.clone(), name.clone());
            let patch = parse(body)?;
            let existing = store.objects.get(&key).cloned();
            if content_type.starts_with("application/apply-patch") {
                let manager = query
                    .get("fieldManager")
                    .cloned()
                    .ok_or((422, "fieldManager is required for apply".to_owned()))?;
                let applied_key = (key.clone(), manager.clone(), status_only);
                let previous = store.applied.get(&applied_key).cloned();
                let force = query.get("force").is_some_and(|f| f == "true");
                let config = if status_only {
                    json!({ "status": patch.get("status").cloned().unwrap_or(Value::Null) })
                } else {
                    patch.clone()
                };
                let result = match existing {
                    None if status_only => {
                        return Err((404, format!("{} \"{name}\" not found", kind.plural)));
                    }
                    None => {
                        // The real API server also authorizes an apply that creates as `create`.
                        store.record(
                            Call {
                                verb: "create".into(),
                                group: kind.group.into(),
                                resource: kind.plural.into(),
                                subresource: None,
                                namespace: Some(namespace.clone()),
                            },
                            shared.log_profile(),
                        );
                        let mut object = config.clone();
                        object["metadata"]["name"] = json!(name);
                        store
                            .create(shared, kind, &namespace, object)
                            .map(|v| (201, v))
                    }
                    Some(mut object) => {
                        if !force {
                            check_apply_conflicts(
                                store,
                                &key,
                                &manager,
                                status_only,
                                &config,
                                &object,
                            )?;
                        }
                        if let Some(prev) = &previous {
                            remove_unapplied(&mut object, prev, &config);
                        }
                        merge_applied(&mut object, &config);
                        if let Some(m) = object["metadata"].as_object_mut() {
                            m.remove("resourceVersion");
                        }
                        store
                            .replace(shared, kind, key, object, status_only)
                            .map(|v| (200, v))
                    }
                };
                if result.is_ok() {
                    store.applied.insert(applied_key, config);
                }
                result
            } else {
                let Some(mut object) = existing else {
                    return Err((404, format!("{} \"{name}\" not found", kind.plural)));
                };
                if content_type.starts_with("application/json-patch") {
                    let ops: json_patch::Patch =
                        serde_json::from_value(patch).map_err(|e| (400, e.to_string()))?;
                    json_patch::patch(&mut object, &ops).map_err(|e| (422, e.to_string()))?;
                } else {
                    // merge-patch+json and strategic-merge-patch+json
                    json_patch::merge(&mut object, &patch);
                }
                store
                    .replace(shared, kind, key, object, status_only)
                    .map(|v| (200, v))
            }
        }
        _ => Err((405, format!("{verb} is not supported by the double"))),
    }
}

/// Server-side apply without `force`: a field that another manager applied, and that still has
/// that manager's value, may not be set to a different value (409 Conflict).
fn check_apply_conflicts(
    store: &Store,
    key: &Key,
    manager: &str,
    status_only: bool,
    config: &Value,
    object: &Value,
) -> Result<(), Failure> {
    for ((other_key, other_manager, other_status), other_config) in &store.applied {
        if other_key != key || other_manager == manager || *other_status != status_only {
            continue;
        }
        let mut conflicts = Vec::new();
        find_conflicts(config, other_config, object, "", &mut conflicts);
        if let Some(path) = conflicts.first() {
            return Err((
                409,
                format!("Apply failed with 1 conflict: conflict with \"{other_manager}\": {path}"),
            ));
        }
    }
    Ok(())
}

fn find_conflicts(mine: &Value, theirs: &Value, live: &Value, path: &str, out: &mut Vec<String>) {
    let Some(mine) = mine.as_object() else { return };
    for (name, value) in mine {
        if path.is_empty() && (name == "apiVersion" || name == "kind") {
            continue;
        }
        if path == ".metadata" && (name == "name" || name == "namespace") {
            continue;
        }
        let (Some(their), Some(current)) = (theirs.get(name), live.get(name)) else {
            continue;
        };
        let child = format!("{path}.{name}");
        if value.is_object() && their.is_object() {
            find_conflicts(value, their, current, &child, out);
        } else if their == current && value != current {
            out.push(child);
        }
    }
}

/// Removes from `object` the fields a manager applied before but no longer applies.
fn remove_unapplied(object: &mut Value, previous: &Value, current: &Value) {
    let (Some(prev), Some(obj)) = (previous.as_object(), object.as_object_mut()) else {
        return;
    };
    for (name, prev_value) in prev {
        match current.get(name) {
            None => {
                obj.remove(name);
            }
            Some(cur) if prev_value.is_object() && cur.is_object() => {
                if let Some(child) = obj.get_mut(name) {
                    remove_unapplied(child, prev_value, cur);
                }
            }
            _ => {}
        }
    }
}

/// Sets every field of an applied configuration (maps merge, lists and scalars replace).
fn merge_applied(object: &mut Value, config: &Value) {
    match (object.as_object_mut(), config.as_object()) {
        (Some(obj), Some(cfg)) => {
            for (name, value) in cfg {
                if value.is_object() && obj.get(name).is_some_and(Value::is_object) {
                    merge_applied(obj.get_mut(name).unwrap(), value);
                } else if !value.is_null() {
                    obj.insert(name.clone(), value.clone());
                }
            }
        }
        _ => *object = config.clone(),
    }
}

fn matches_target(
    target: &Target,
    query: &HashMap<String, String>,
    group: &str,
    plural: &str,
    object: &Value,
) -> bool {
    group == target.kind.group
        && plural == target.kind.plural
        && target
            .namespace
            .as_ref()
            .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
        && query
            .get("labelSelector")
            .is_none_or(|s| label_matches(s, &object["metadata"]["labels"]))
        && query
            .get("fieldSelector")
            .is_none_or(|s| field_matches(s, object))
}

fn list(
    shared: &Shared,
    target: &Target,
    query: &HashMap<String, String>,
    metadata: bool,
) -> Response {
    let store = shared.store.lock().unwrap();
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    // continue = "<list rv>:<last key>"
    let (list_rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let decoded = String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(token)
                    .unwrap_or_default(),
            )
            .unwrap_or_default();
            let (rv, last) = decoded.split_once(':').unwrap_or(("0", ""));
            (rv.parse().unwrap_or(store.rv), Some(last.to_owned()))
        }
        None => (store.rv, None),
    };
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    for ((group, plural, ns, name), object) in &store.objects {
        if !matches_target(target, query, group, plural, object) {
            continue;
        }
        let flat = format!("{ns}/{name}");
        if after.as_ref().is_some_and(|a| flat.as_str() <= a.as_str()) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(if metadata {
            metadata_only(object)
        } else {
            object.clone()
        });
        last_key = Some(flat);
    }
    let continue_token = match (more, last_key) {
        (true, Some(last)) => {
            base64::engine::general_purpose::STANDARD.encode(format!("{list_rv}:{last}"))
        }
        _ => String::new(),
    };
    let (api_version, kind) = if metadata {
        (
            "meta.k8s.io/v1".to_owned(),
            "PartialObjectMetadataList".to_owned(),
        )
    } else {
        (
            target.kind.api_version(),
            format!("{}List", target.kind.kind),
        )
    };
    let body = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"resourceVersion": list_rv.to_string(), "continue": continue_token},
        "items": items,
    });
    drop(store);
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn watch_event_line(event: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": event, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch_stream(
    shared: Arc<Shared>,
    target: Target,
    query: HashMap<String, String>,
    metadata: bool,
) -> Response {
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(300));
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(256);

    let (backlog, mut live, expired, start_rv) = {
        let store = shared.store.lock().unwrap();
        let expired = since != 0 && since < store.oldest_rv;
        let backlog: Vec<Arc<LogEntry>> = if since == 0 {
            Vec::new()
        } else {
            store
                .history
                .iter()
                .filter(|e| e.rv > since)
                .cloned()
                .collect()
        };
        (
            backlog,
            shared.events.subscribe(),
            expired,
            since.max(if since == 0 { store.rv } else { 0 }),
        )
    };
    let mut drop_signal = shared.drop_watches.subscribe();
    let bookmark_every = Duration::from_millis(shared.bookmark_ms.load(Ordering::SeqCst));
    let kind = target.kind;

    tokio::spawn(async move {
        if expired {
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too old resource version", "reason": "Expired", "code": 410});
            let _ = tx.send(Ok(watch_event_line("ERROR", &status))).await;
            return;
        }
        let render = |object: &Value| {
            if metadata {
                metadata_only(object)
            } else {
                object.clone()
            }
        };
        let mut last_rv = start_rv;
        let emit = |entry: &LogEntry, last_rv: &mut u64| -> Option<Bytes> {
            if entry.rv <= *last_rv {
                return None;
            }
            *last_rv = entry.rv;
            let now = matches_target(&target, &query, entry.group, entry.plural, &entry.object);
            let before = entry
                .previous
                .as_ref()
                .is_some_and(|p| matches_target(&target, &query, entry.group, entry.plural, p));
            let event = match (entry.event, before, now) {
                ("DELETED", true, _) => "DELETED",
                ("DELETED", false, _) => return None,
                (_, false, true) => "ADDED",
                (_, true, true) => entry.event,
                (_, true, false) => "DELETED",
                (_, false, false) => return None,
            };
            Some(watch_event_line(event, &render(&entry.object)))
        };
        for entry in &backlog {
            if let Some(line) = emit(entry, &mut last_rv) {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(entry) => {
                        if let Some(line) = emit(&entry, &mut last_rv) {
                            if tx.send(Ok(line)).await.is_err() {
                                return;
                            }
                        }
                    }
                    // Too slow a reader, or shut down: end the watch; the client re-lists.
                    Err(_) => return,
                },
                _ = ticker.tick(), if bookmarks => {
                    let bookmark = json!({"kind": kind.kind, "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(Ok(watch_event_line("BOOKMARK", &bookmark))).await.is_err() {
                        return;
                    }
                }
                _ = drop_signal.changed() => return,
                _ = &mut deadline => return,
            }
        }
    });
    let mut response = Response::new(Body::from_stream(rx));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}
