//! What the controller remembers between reconciles, per OAuthClient, keyed by
//! [`NamespacedName`]: the memory of each client ([`Memo`]) and which objects (credentials
//! Secret, CA bundle) each client references ([`References`]).
//!
//! A reconcile reads its client's memo once, when it observes ([`Memos::snapshot`]), and writes
//! what it learned once, at the end ([`Memos::record`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;

use crate::api::crd::{CaBundleRef, OAuthClient};
use crate::api::name::NamespacedName;
use crate::decide::{FailureStreak, IssuedEvents};
use crate::oauth::pool::TrustedClient;
use crate::oauth::response::Token;
use crate::spec::ExchangeSettings;

/// How long what this process wrote is trusted over a watch cache that has not caught up.
pub const WRITE_CACHE_TTL: Duration = Duration::from_secs(30);

/// The reference the controller's queue uses for the OAuthClient of `key`.
pub fn queue_ref(key: &NamespacedName) -> ObjectRef<PartialObjectMeta<OAuthClient>> {
    ObjectRef::new(&key.name).within(&key.namespace)
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

/// The managed Secret's annotations as this process last wrote them, remembered until the
/// watch cache shows the write.
///
/// While the cache still shows the Secret at a resourceVersion from before the write, the cache
/// is stale and the written annotations are the truth (for at most [`WRITE_CACHE_TTL`]).
#[derive(Clone, Debug)]
pub struct Written {
    /// resourceVersions of the Secret before the write (None: it did not exist): the one the
    /// cache showed, and the one the operator's own create made just before.
    pub before: Vec<Option<String>>,
    /// When it was written.
    pub at: Instant,
    /// The annotations written.
    pub annotations: BTreeMap<String, String>,
}

impl Written {
    /// The written annotations, if the cache still shows the Secret as it was before the write.
    pub fn if_cache_is_behind(
        &self,
        cached_rv: Option<&String>,
    ) -> Option<BTreeMap<String, String>> {
        let behind = self.before.iter().any(|rv| rv.as_ref() == cached_rv);
        (behind && self.at.elapsed() < WRITE_CACHE_TTL).then(|| self.annotations.clone())
    }
}

/// The credentials an exchange failed with: the Secret's resourceVersion and a keyed digest of
/// the values (so that a metadata-only edit of the Secret does not count as a change); and the
/// resourceVersion of the CA bundle's object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedWith {
    /// resourceVersion of the credentials Secret (None: it did not exist).
    pub resource_version: Option<String>,
    /// HMAC of the credential values, or of why they are unusable.
    pub digest: Option<[u8; 32]>,
    /// resourceVersion of the object `spec.caBundleRef` names (None: no reference, or the
    /// object did not exist).
    pub trust_rv: Option<String>,
}

/// The HTTP client of a client's `spec.caBundleRef`, kept while the reference and its object's
/// resourceVersion stay the same. The bundle's data is not kept: only the client, which holds
/// the parsed anchors, and which the pool shares with every client of the same bundle.
#[derive(Clone, Debug)]
pub struct TrustMemo {
    /// The reference it was read for.
    pub reference: CaBundleRef,
    /// resourceVersion of the object it was read from.
    pub resource_version: String,
    /// The client.
    pub client: TrustedClient,
}

/// A token that was obtained but could not be written yet (the API refused or failed the
/// write). It is written by a later reconcile instead of exchanging again, while it is valid and
/// the request settings and the exact credentials are the ones it was issued for.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The token (its `Debug` is redacted).
    pub token: Token,
    /// The fingerprint to store with it.
    pub fingerprint: String,
    /// The request settings it was issued for.
    pub settings: ExchangeSettings,
    /// resourceVersion of the credentials Secret it was issued with.
    pub credentials_rv: Option<String>,
    /// Keyed digest of the credentials it was issued with.
    pub credentials_digest: [u8; 32],
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
    pub issued_events: Option<IssuedEvents>,
    /// When the last token request that gave a token was sent.
    pub last_exchange_at: Option<Timestamp>,
    /// The managed Secret's annotations as last written by this process.
    pub written_secret: Option<Written>,
    /// Consecutive reconcile errors (API failures), for the error backoff.
    pub errors: u32,
    /// Consecutive exchange failures of one kind, for the backoff step.
    pub failure_streak: Option<FailureStreak>,
    /// The resourceVersion of the managed Secret that this process wrote or read and verified:
    /// a cache showing another one means someone else changed it.
    pub trusted_rv: Option<String>,
    /// Restores with a new token in a row.
    pub restore_streak: u32,
    /// The spec generation a `ShortRenewMargin` event was emitted for.
    pub margin_warned: Option<i64>,
    /// The HTTP client of the CA bundle, while it is current.
    pub trust: Option<TrustMemo>,
    /// The HTTP client of the identity it last exchanged with (TlsClientAuth): kept while the
    /// client uses that identity, dropped with it.
    pub identity: Option<TrustedClient>,
}

/// A change to one field of a [`Memo`].
#[derive(Clone, Debug, Default)]
pub enum Change<T> {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Set it to nothing.
    Clear,
    /// Set it.
    Set(T),
}

impl<T> Change<T> {
    fn apply(self, field: &mut Option<T>) {
        match self {
            Change::Keep => {}
            Change::Clear => *field = None,
            Change::Set(value) => *field = Some(value),
        }
    }
}

/// What one reconcile learned, recorded in the memo at its end.
#[derive(Debug, Default)]
pub struct Learned {
    /// The fingerprint check.
    pub verified: Change<Verified>,
    /// The credentials of a failure (cleared by a success).
    pub failed_with: Change<FailedWith>,
    /// A token waiting to be written.
    pub pending: Change<Box<Pending>>,
    /// The write of the managed Secret.
    pub written_secret: Change<Written>,
    /// The HTTP client of the CA bundle.
    pub trust: Change<TrustMemo>,
    /// The identity client of the last exchange.
    pub identity: Change<TrustedClient>,
    /// When a token request that gave a token was sent.
    pub last_exchange_at: Option<Timestamp>,
    /// The failure streak and the event bookkeeping after the reconcile (set when it settled).
    pub settled: Option<(Option<FailureStreak>, Option<IssuedEvents>, Option<i64>)>,
    /// The managed Secret's version known to be as the operator wrote it.
    pub trusted_rv: Change<String>,
    /// The restore streak after the reconcile.
    pub restore_streak: Option<u32>,
}

/// The memo of every OAuthClient, boxed so that the table's spare capacity costs a pointer per
/// slot, not a whole `Memo`.
#[derive(Debug, Default)]
pub struct Memos {
    table: Mutex<HashMap<NamespacedName, Box<Memo>>>,
}

impl Memos {
    /// A copy of the memo of `key` (empty for a client not seen before).
    pub fn snapshot(&self, key: &NamespacedName) -> Memo {
        let table = self.table.lock().expect("memo lock");
        table.get(key).map(|m| (**m).clone()).unwrap_or_default()
    }

    /// Records what a reconcile of `key` learned; a reconcile that ended (not with an API
    /// error) also ends the error streak.
    pub fn record(&self, key: &NamespacedName, learned: Learned) {
        let mut table = self.table.lock().expect("memo lock");
        let memo = table.entry(key.clone()).or_default();
        learned.verified.apply(&mut memo.verified);
        learned.failed_with.apply(&mut memo.failed_with);
        learned.pending.apply(&mut memo.pending);
        learned.written_secret.apply(&mut memo.written_secret);
        learned.trust.apply(&mut memo.trust);
        learned.identity.apply(&mut memo.identity);
        if let Some(at) = learned.last_exchange_at {
            memo.last_exchange_at = Some(at);
        }
        learned.trusted_rv.apply(&mut memo.trusted_rv);
        if let Some(streak) = learned.restore_streak {
            memo.restore_streak = streak;
        }
        if let Some((streak, events, margin_warned)) = learned.settled {
            memo.failure_streak = streak;
            memo.issued_events = events;
            memo.margin_warned = margin_warned;
            memo.errors = 0;
        }
    }

    /// Counts one more reconcile error of `key`; returns the streak.
    pub fn count_error(&self, key: &NamespacedName) -> u32 {
        let mut table = self.table.lock().expect("memo lock");
        let memo = table.entry(key.clone()).or_default();
        memo.errors = memo.errors.saturating_add(1);
        memo.errors
    }

    /// Forgets a client.
    pub fn forget(&self, key: &NamespacedName) {
        self.table.lock().expect("memo lock").remove(key);
    }

    /// Number of clients remembered.
    pub fn len(&self) -> usize {
        self.table.lock().expect("memo lock").len()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The clients remembered that `live` does not hold.
    pub fn stale(&self, live: impl Fn(&NamespacedName) -> bool) -> Vec<NamespacedName> {
        let table = self.table.lock().expect("memo lock");
        table.keys().filter(|k| !live(k)).cloned().collect()
    }
}

/// Objects of one kind (Secrets, ConfigMaps) ↔ the OAuthClients that use them, in two kinds of
/// use: what each client references (a credentials Secret, a CA bundle) and the managed Secret
/// each client writes (so that a change to a managed Secret whose ownerReference or label was
/// removed still reaches its client). All live in the client's namespace; most objects are used
/// by one client and each client references one or two, so both sides hold boxed slices rather
/// than sets.
#[derive(Debug, Default)]
pub struct References {
    referenced: Mutex<Links>,
    targets: Mutex<Links>,
}

#[derive(Debug, Default)]
struct Links {
    /// Object → OAuthClient names (in the object's namespace).
    by_object: HashMap<NamespacedName, Box<[Box<str>]>>,
    /// OAuthClient → object names (in the client's namespace).
    by_client: HashMap<NamespacedName, Box<[Box<str>]>>,
}

impl References {
    /// Records that `client` references the object `name` of its namespace (replacing what
    /// it referenced before).
    pub fn link(&self, client: &NamespacedName, name: &str) {
        self.link_all(client, &[name]);
    }

    /// Records that `client` references exactly the objects `names` of its namespace (none:
    /// it references nothing of this kind).
    pub fn link_all(&self, client: &NamespacedName, names: &[&str]) {
        self.referenced
            .lock()
            .expect("references lock")
            .link_all(client, names);
    }

    /// Records that `client` writes the managed Secret `secret` of its namespace.
    pub fn link_target(&self, client: &NamespacedName, secret: &str) {
        self.targets
            .lock()
            .expect("references lock")
            .link_all(client, &[secret]);
    }

    /// Forgets what `client` uses.
    pub fn unlink(&self, client: &NamespacedName) {
        self.referenced
            .lock()
            .expect("references lock")
            .unlink(client);
        self.targets.lock().expect("references lock").unlink(client);
    }

    /// The OAuthClients that reference the object `object`.
    pub fn referencing(&self, object: &NamespacedName) -> Vec<NamespacedName> {
        self.referenced
            .lock()
            .expect("references lock")
            .clients(object)
    }

    /// The OAuthClients that write the managed Secret `secret`.
    pub fn targeting(&self, secret: &NamespacedName) -> Vec<NamespacedName> {
        self.targets
            .lock()
            .expect("references lock")
            .clients(secret)
    }
}

impl Links {
    fn link_all(&mut self, client: &NamespacedName, names: &[&str]) {
        let mut wanted: Vec<&str> = names.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let current = self.by_client.get(client);
        if current.is_some_and(|c| c.iter().map(|n| &**n).eq(wanted.iter().copied()))
            || (current.is_none() && wanted.is_empty())
        {
            return;
        }
        self.unlink(client);
        if wanted.is_empty() {
            return;
        }
        for name in &wanted {
            let entry = self
                .by_object
                .entry(NamespacedName::new(&client.namespace, name))
                .or_default();
            let mut list = std::mem::take(entry).into_vec();
            list.push(client.name.clone());
            *entry = list.into_boxed_slice();
        }
        let names: Box<[Box<str>]> = wanted.into_iter().map(Box::from).collect();
        self.by_client.insert(client.clone(), names);
    }

    fn clients(&self, object: &NamespacedName) -> Vec<NamespacedName> {
        self.by_object
            .get(object)
            .map(|clients| {
                clients
                    .iter()
                    .map(|c| NamespacedName::new(&object.namespace, c))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn unlink(&mut self, client: &NamespacedName) {
        let Some(names) = self.by_client.remove(client) else {
            return;
        };
        for name in names.iter() {
            let key = NamespacedName {
                namespace: client.namespace.clone(),
                name: name.clone(),
            };
            if let Some(clients) = self.by_object.get_mut(&key) {
                let rest: Box<[Box<str>]> = clients
                    .iter()
                    .filter(|c| **c != client.name)
                    .cloned()
                    .collect();
                if rest.is_empty() {
                    self.by_object.remove(&key);
                } else {
                    *clients = rest;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> NamespacedName {
        NamespacedName::new("ns", name)
    }

    fn names(refs: &References, secret: &str) -> Vec<String> {
        let mut v: Vec<String> = refs
            .referencing(&NamespacedName::new("ns", secret))
            .into_iter()
            .map(|c| c.name.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn references_follow_links_and_unlinks() {
        let refs = References::default();
        refs.link(&client("a"), "creds");
        refs.link(&client("b"), "creds");
        assert_eq!(names(&refs, "creds"), ["a", "b"]);
        refs.link(&client("a"), "other");
        assert_eq!(names(&refs, "creds"), ["b"]);
        assert_eq!(names(&refs, "other"), ["a"]);
        refs.unlink(&client("b"));
        assert!(names(&refs, "creds").is_empty());
        assert_eq!(refs.referenced.lock().unwrap().by_client.len(), 1);
        refs.link_target(&client("a"), "a-token");
        assert_eq!(
            refs.targeting(&NamespacedName::new("ns", "a-token")),
            [client("a")]
        );
    }

    #[test]
    fn a_client_may_reference_several_objects_of_a_kind() {
        let refs = References::default();
        // Credentials and a CA bundle in Secrets.
        refs.link_all(&client("a"), &["creds", "corp-ca"]);
        refs.link_all(&client("b"), &["creds", "creds"]);
        assert_eq!(names(&refs, "creds"), ["a", "b"]);
        assert_eq!(names(&refs, "corp-ca"), ["a"]);
        refs.link_all(&client("a"), &["creds"]);
        assert!(names(&refs, "corp-ca").is_empty());
        refs.link_all(&client("a"), &[]);
        assert_eq!(names(&refs, "creds"), ["b"]);
        assert!(
            !refs
                .referenced
                .lock()
                .unwrap()
                .by_client
                .contains_key(&client("a"))
        );
        assert!(
            !refs
                .referenced
                .lock()
                .unwrap()
                .by_object
                .contains_key(&NamespacedName::new("ns", "corp-ca"))
        );
    }

    #[test]
    fn a_reconcile_is_recorded_once_and_changes_only_what_it_learned() {
        let memos = Memos::default();
        let key = client("a");
        memos.record(
            &key,
            Learned {
                last_exchange_at: Some(Timestamp::UNIX_EPOCH),
                failed_with: Change::Set(FailedWith {
                    resource_version: Some("1".into()),
                    digest: None,
                    trust_rv: None,
                }),
                ..Learned::default()
            },
        );
        assert_eq!(memos.count_error(&key), 1);
        memos.record(
            &key,
            Learned {
                settled: Some((None, None, None)),
                failed_with: Change::Clear,
                ..Learned::default()
            },
        );
        let memo = memos.snapshot(&key);
        assert_eq!(memo.last_exchange_at, Some(Timestamp::UNIX_EPOCH));
        assert_eq!(memo.failed_with, None);
        assert_eq!(
            memo.errors, 0,
            "a reconcile that settled ends the error streak"
        );
        assert_eq!(
            memos.stale(|k| k.name.as_ref() != "a"),
            std::slice::from_ref(&key)
        );
        memos.forget(&key);
        assert!(memos.is_empty());
    }
}
