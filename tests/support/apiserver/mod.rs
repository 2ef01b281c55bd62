//! A Kubernetes API-server double for tests and benchmarks.
//!
//! It serves real HTTP on 127.0.0.1 so that the real kube-rs client (and the compiled binary,
//! through a kubeconfig) talks to it. Kinds: Secrets, ConfigMaps, OAuthClients,
//! ClusterOAuthClients (cluster-scoped, stored under the namespace ""), Events (both groups) and
//! Leases. What it implements:
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
//! * **Status:** the status subresource of OAuthClients and ClusterOAuthClients is kept apart
//!   from the main resource; the generation moves when the spec changes.
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
//!
//! The files, by concern:
//!
//! * `mod.rs` (this file): [`ApiServer`] (start, client, kubeconfig, introspection, faults,
//!   direct object access), the resource [`Kind`]s and the server's shared state.
//! * `store.rs`: the in-memory store: objects, resourceVersions, the watch history, create,
//!   replace, delete, garbage collection, server-side apply bookkeeping.
//! * `schema.rs`: defaulting and OpenAPI validation against `crds/oauthclient.yaml`, and the
//!   metadata checks of every object.
//! * `selectors.rs`: label and field selectors.
//! * `requests.rs`: path parsing, the axum handler, the writes (create, update, patch, apply,
//!   delete, TokenRequest) and the `Status` bodies of errors.
//! * `watch.rs`: list and watch (bookmarks, 410 Gone, metadata-only).
//! * `faults.rs`: [`Matcher`], faults, injections, chaos, the RBAC call log ([`Call`],
//!   [`calls_log_path`]) and the access and subject reviews.
//! * `tokens.rs`: the ServiceAccount token issuer and the discovery document.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
// `tokio::sync::watch` is named in full: `watch` is the list-and-watch module.
use tokio::sync::broadcast;

mod faults;
mod requests;
mod schema;
mod selectors;
mod store;
pub mod tokens;
mod watch;

pub use faults::{Call, Matcher};
// Read by the RBAC test only (unused in the other test binaries).
#[allow(unused_imports)]
pub use faults::calls_log_path;

use faults::{Chaos, Fault, Injection};
use store::{LogEntry, Store};

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
pub const CLUSTEROAUTHCLIENTS: Kind = Kind {
    group: "oauth.token-operator.dev",
    version: "v1alpha1",
    plural: "clusteroauthclients",
    kind: "ClusterOAuthClient",
    namespaced: false,
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

pub const NAMESPACES: Kind = Kind {
    group: "",
    version: "v1",
    plural: "namespaces",
    kind: "Namespace",
    namespaced: false,
    status_subresource: false,
    tracks_generation: false,
};

const KINDS: [Kind; 9] = [
    NAMESPACES,
    SECRETS,
    CONFIGMAPS,
    OAUTHCLIENTS,
    CLUSTEROAUTHCLIENTS,
    EVENTS,
    CORE_EVENTS,
    LEASES,
    SERVICEACCOUNTS,
];

/// (group, plural, namespace, name)
type Key = (&'static str, &'static str, String, String);

// === the server ===

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Arc<LogEntry>>,
    drop_watches: tokio::sync::watch::Sender<u64>,
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
/// The profile of an operator run with `--enable-cluster-clients`.
pub const CLUSTER_CLIENTS_PROFILE: &str = "cluster-clients";

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
        let (drop_watches, _) = tokio::sync::watch::channel(0);
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
                schema: schema::crd_schema(),
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
            .fallback(requests::handle)
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
            .map(|v| (**v).clone())
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
            .map(|(_, v)| (**v).clone())
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
        let namespace = namespace_of(kind, &object);
        let mut store = self.store();
        let result = store.create(&self.shared, kind, &namespace, object);
        match result {
            Ok(v) => Arc::unwrap_or_clone(v),
            Err(e) => panic!("create {}: {} {}", kind.plural, e.0, e.1),
        }
    }

    /// Creates an object as a user would, returning the API server's refusal (code, message).
    pub fn try_create(&self, kind: Kind, object: Value) -> Result<Value, (u16, String)> {
        let namespace = namespace_of(kind, &object);
        let mut store = self.store();
        store
            .create(&self.shared, kind, &namespace, object)
            .map(Arc::unwrap_or_clone)
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
        let mut object = (**store.objects.get(&key).expect("object exists")).clone();
        f(&mut object);
        match store.replace(&self.shared, kind, key, object, false) {
            Ok(v) => Arc::unwrap_or_clone(v),
            Err(e) => panic!("modify {}: {} {}", kind.plural, e.0, e.1),
        }
    }

    /// Replaces the status of an object (its status subresource), as the operator's status
    /// write would, or panics. `namespace` is "" for a cluster-scoped kind.
    pub fn set_status(&self, kind: Kind, namespace: &str, name: &str, status: Value) -> Value {
        let mut store = self.store();
        let key = (
            kind.group,
            kind.plural,
            namespace.to_owned(),
            name.to_owned(),
        );
        let mut object = (**store.objects.get(&key).expect("object exists")).clone();
        object["status"] = status;
        match store.replace(&self.shared, kind, key, object, true) {
            Ok(v) => Arc::unwrap_or_clone(v),
            Err(e) => panic!("status of {}: {} {}", kind.plural, e.0, e.1),
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

/// The namespace an object of `kind` is stored under: its `metadata.namespace` (default
/// `default`), or "" for a cluster-scoped kind.
fn namespace_of(kind: Kind, object: &Value) -> String {
    if !kind.namespaced {
        return String::new();
    }
    object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_owned()
}
