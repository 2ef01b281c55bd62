//! What every reconcile shares: clients, caches, the exchange semaphore, the event publisher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;

use crate::api::crd::OAuthClient;
use crate::oauth::exchange::Exchanger;
use crate::runtime::metrics::Metrics;
use crate::spec::Policy;
use crate::timing::clock::Clock;

/// How long what this process wrote is trusted over a watch cache that has not caught up.
pub const WRITE_CACHE_TTL: Duration = Duration::from_secs(30);

/// Shared by every scope (namespace) of the controller.
pub struct Shared {
    /// Kubernetes client.
    pub client: Client,
    /// Token exchanges.
    pub exchanger: Exchanger,
    /// Rules a spec must satisfy.
    pub policy: Policy,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Bounds token requests in flight, in all and per endpoint (`--max-concurrent-exchanges`).
    pub gate: super::gate::ExchangeGate,
    /// Token request timeout: a client waiting at the gate looks again after twice this.
    pub request_timeout: Duration,
    /// Key of the credential digests remembered after a failure (random per process; never
    /// stored or shown).
    pub credentials_key: [u8; 32],
    /// Publishes events.
    pub events: super::events::EventPublisher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// The context of one controller scope (all namespaces, or one).
pub struct Context {
    /// What all scopes share.
    pub shared: Arc<Shared>,
    /// Managed Secrets (label-selected): controllers, our annotations, resourceVersion.
    pub managed: Arc<super::secret_index::ManagedIndex>,
    /// Names and resourceVersions of all Secrets in scope (credentials).
    pub secrets: Arc<super::secret_index::SecretIndex>,
    /// Per-OAuthClient memory, keyed by (namespace, name); boxed so that the table's spare
    /// capacity costs a pointer per slot, not a whole `Memo`.
    pub memo: Mutex<HashMap<Pair, Box<Memo>>>,
    /// Which OAuthClients reference which credentials Secrets.
    pub references: Mutex<References>,
    /// True once both Secret caches hold a complete first list.
    pub secrets_synced: tokio::sync::watch::Receiver<bool>,
    /// This scope's index at the exchange gate.
    pub scope: usize,
}

/// A reference by namespace and name only.
fn object_ref<K>(namespace: Option<&str>, name: &str) -> ObjectRef<K>
where
    K: kube::Resource,
    K::DynamicType: Default,
{
    let r = ObjectRef::new(name);
    match namespace {
        Some(ns) => r.within(ns),
        None => r,
    }
}

/// The key of an OAuthClient in the per-client maps: namespace and name only. (An `ObjectRef`
/// made from the object also carries its uid and resourceVersion, which equality ignores but
/// memory does not: at 10,000 clients these copies cost megabytes.)
pub fn client_key(meta: &ObjectMeta) -> ObjectRef<OAuthClient> {
    object_ref(
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// The reference the controller's queue uses for the OAuthClient of `key`.
pub fn meta_ref(key: &ObjectRef<OAuthClient>) -> ObjectRef<PartialObjectMeta<OAuthClient>> {
    object_ref(key.namespace.as_deref(), &key.name)
}

/// Credentials Secret ↔ the OAuthClients that reference it. Both live in one namespace, so
/// entries are (namespace, name) pairs of boxed strings; most Secrets are referenced by one
/// client, so each holds a boxed slice rather than a set.
#[derive(Debug, Default)]
pub struct References {
    /// (namespace, Secret name) → OAuthClient names.
    by_secret: HashMap<Pair, Box<[Box<str>]>>,
    /// (namespace, OAuthClient name) → Secret name.
    by_client: HashMap<Pair, Box<str>>,
}

/// (namespace, name).
pub type Pair = (Box<str>, Box<str>);

/// The (namespace, name) pair of the per-client maps.
pub fn pair(namespace: &str, name: &str) -> Pair {
    (namespace.into(), name.into())
}

/// The (namespace, name) of the OAuthClient of `client`.
fn ref_key(client: &ObjectRef<OAuthClient>) -> Pair {
    pair(
        client.namespace.as_deref().unwrap_or_default(),
        &client.name,
    )
}

impl References {
    /// Records that `client` references the Secret `secret` of its namespace (replacing what
    /// it referenced before).
    fn link(&mut self, secret: &str, client: &ObjectRef<OAuthClient>) {
        if self.by_client.get(&ref_key(client)).map(|s| &**s) == Some(secret) {
            return;
        }
        self.unlink(client);
        let namespace = client.namespace.as_deref().unwrap_or_default();
        let clients = self.by_secret.entry(pair(namespace, secret)).or_default();
        let mut list = std::mem::take(clients).into_vec();
        list.push(client.name.as_str().into());
        *clients = list.into_boxed_slice();
        self.by_client.insert(ref_key(client), secret.into());
    }

    fn unlink(&mut self, client: &ObjectRef<OAuthClient>) {
        let key = ref_key(client);
        if let Some(secret) = self.by_client.remove(&key) {
            let secret_key = (key.0, secret);
            if let Some(clients) = self.by_secret.get_mut(&secret_key) {
                let rest: Box<[Box<str>]> = clients
                    .iter()
                    .filter(|c| ***c != *client.name)
                    .cloned()
                    .collect();
                if rest.is_empty() {
                    self.by_secret.remove(&secret_key);
                } else {
                    *clients = rest;
                }
            }
        }
    }
}

/// A credentials check that need not be repeated while its inputs stay the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// resourceVersion of the credentials Secret.
    pub credentials_rv: Option<String>,
    /// The fingerprint annotation checked.
    pub fingerprint: String,
    /// The OAuthClient generation.
    pub generation: Option<i64>,
    /// Whether it matched.
    pub matched: bool,
}

/// Something this process wrote, remembered until the watch cache shows it.
///
/// While the cache still shows the object at a resourceVersion from before the write, the
/// cache is stale and the written value is the truth (for at most [`WRITE_CACHE_TTL`]).
#[derive(Clone, Debug)]
pub struct Written<T> {
    /// resourceVersions of the object before the write (None: it did not exist): the one the
    /// cache showed, and the one the operator's own create made just before.
    pub before: Vec<Option<String>>,
    /// When it was written.
    pub at: Instant,
    /// What was written.
    pub value: T,
}

impl<T: Clone> Written<T> {
    /// The written value, if the cache still shows the object as it was before the write.
    pub fn if_cache_is_behind(&self, cached_rv: Option<&String>) -> Option<T> {
        (self.before.iter().any(|rv| rv.as_ref() == cached_rv)
            && self.at.elapsed() < WRITE_CACHE_TTL)
            .then(|| self.value.clone())
    }
}

/// The credentials an exchange failed with: the Secret's resourceVersion and a keyed digest of
/// the values (so that a metadata-only edit of the Secret does not count as a change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedWith {
    /// resourceVersion of the credentials Secret (None: it did not exist).
    pub resource_version: Option<String>,
    /// HMAC of the credential values (None: they could not be read).
    pub digest: Option<[u8; 32]>,
}

/// A token that was obtained but could not be written yet (the API refused or failed the
/// write). It is written by a later reconcile instead of exchanging again, while it is valid and
/// the request settings and credentials are the ones it was issued for.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The token (its `Debug` is redacted).
    pub token: crate::oauth::response::Token,
    /// The fingerprint to store with it.
    pub fingerprint: String,
    /// The request settings it was issued for.
    pub settings: crate::spec::ExchangeSettings,
    /// resourceVersion of the credentials Secret it was issued with.
    pub credentials_rv: Option<String>,
}

/// What the controller remembers about one OAuthClient between reconciles.
#[derive(Clone, Debug, Default)]
pub struct Memo {
    /// Last fingerprint verification.
    pub verified: Option<Verified>,
    /// The credentials of the last failure.
    pub failed_with: Option<FailedWith>,
    /// A token waiting to be written.
    pub pending: Option<Box<Pending>>,
    /// The last `TokenIssued` event.
    pub issued_events: Option<crate::decide::IssuedEvents>,
    /// When the last token request that gave a token was sent.
    pub last_exchange_at: Option<jiff::Timestamp>,
    /// The managed Secret's annotations as last written by this process.
    pub written_secret: Option<Written<std::collections::BTreeMap<String, String>>>,
    /// Consecutive reconcile errors (API failures), for the error backoff.
    pub errors: u32,
    /// Consecutive exchange failures of one kind, for the backoff step.
    pub failure_streak: Option<crate::decide::FailureStreak>,
}

impl Context {
    /// Runs `f` on the memo of `key`.
    pub fn with_memo<R>(&self, key: &ObjectRef<OAuthClient>, f: impl FnOnce(&mut Memo) -> R) -> R {
        let mut memo = self.memo.lock().expect("memo lock");
        f(memo.entry(ref_key(key)).or_default())
    }

    /// Records that `client` references the credentials Secret `name` of its namespace.
    /// (The Secret is in the OAuthClient's namespace, which `client` carries.)
    pub fn reference(&self, name: &str, client: &ObjectRef<OAuthClient>) {
        self.references
            .lock()
            .expect("references lock")
            .link(name, client);
    }

    /// The OAuthClients that reference the credentials Secret `name` in `namespace`.
    pub fn referencing(&self, namespace: &str, name: &str) -> Vec<ObjectRef<OAuthClient>> {
        let refs = self.references.lock().expect("references lock");
        refs.by_secret
            .get(&pair(namespace, name))
            .map(|clients| {
                clients
                    .iter()
                    .map(|c| ObjectRef::new(c).within(namespace))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets an OAuthClient that no longer exists (memory and metrics).
    pub fn forget(&self, key: &ObjectRef<OAuthClient>) {
        self.shared
            .metrics
            .forget_client(key.namespace.as_deref().unwrap_or_default(), &key.name);
        self.shared.gate.forget(self.scope, &meta_ref(key));
        self.memo.lock().expect("memo lock").remove(&ref_key(key));
        self.references.lock().expect("references lock").unlink(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> ObjectRef<OAuthClient> {
        ObjectRef::new(name).within("ns")
    }

    fn names(refs: &References, secret: &str) -> Vec<String> {
        let mut v: Vec<String> = refs
            .by_secret
            .get(&pair("ns", secret))
            .map(|c| c.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn references_follow_links_and_unlinks() {
        let mut refs = References::default();
        let link = |refs: &mut References, c: &str, s: &str| refs.link(s, &client(c));
        link(&mut refs, "a", "creds");
        link(&mut refs, "b", "creds");
        assert_eq!(names(&refs, "creds"), ["a", "b"]);
        link(&mut refs, "a", "other");
        assert_eq!(names(&refs, "creds"), ["b"]);
        assert_eq!(names(&refs, "other"), ["a"]);
        refs.unlink(&client("b"));
        assert!(!refs.by_secret.contains_key(&pair("ns", "creds")));
        assert_eq!(refs.by_client.len(), 1);
    }
}
