//! What the controller remembers about each OAuthClient between reconciles, split by concern,
//! each part with its own update rule:
//!
//! | part | holds | updated |
//! | --- | --- | --- |
//! | [`Caches`] | facts that save API reads: the fingerprint check, this process's last write of the managed Secret, the Secret version known intact | per fact, by the reconcile that learned it; each is dropped when its object's version moves |
//! | [`RetryState`] | the credentials and bundle of the last failure, the failure and restore streaks, the last exchange, the API error streak | by every reconcile that settles (the failure streak and API errors), and by the attempt (failures, exchanges) |
//! | [`EventLedger`] | the last `TokenIssued` event and the tokens issued since, the generation a `ShortRenewMargin` was emitted for | replaced by every reconcile that settles |
//! | [`Outbox`] | a token obtained but not yet written | set by a write that failed, cleared by one that succeeded or a token no longer usable |
//! | [`Handles`] | the HTTP clients in use (the CA bundle's, the mutual-TLS identity's) | by the reconcile that chose them; dropping them lets the pool free the client |
//!
//! A reconcile reads its client's memory once, when it observes ([`Memories::snapshot`]), and
//! writes what it learned once, at the end ([`Memories::record`]). Nothing here is needed to
//! be correct after a restart: the failure streak, when this process has none, is derived from
//! the status (`consecutiveFailures` and the `Degraded` reason) by the settle step.

mod caches;
mod change;
mod handles;
mod ledger;
mod outbox;
mod retry;

use std::collections::HashMap;
use std::sync::Mutex;

use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;

pub use caches::{CacheUpdate, Caches, Verified, WRITE_CACHE_TTL, Written};
pub use change::Change;
pub use handles::{Handles, HandlesUpdate, TrustHandle};
pub use ledger::EventLedger;
pub use outbox::{Outbox, Pending};
pub use retry::{FailedWith, RetryState, RetryUpdate};

use crate::api::crd::OAuthClient;
use crate::api::name::NamespacedName;

/// The reference the controller's queue uses for the OAuthClient of `key`.
pub fn queue_ref(key: &NamespacedName) -> ObjectRef<PartialObjectMeta<OAuthClient>> {
    ObjectRef::new(&key.name).within(&key.namespace)
}

/// The key of a controller queue entry: the inverse of [`queue_ref`].
pub fn queue_key<K: kube::runtime::reflector::Lookup>(client: &ObjectRef<K>) -> NamespacedName {
    NamespacedName::new(
        client.namespace.as_deref().unwrap_or_default(),
        &client.name,
    )
}

/// What the controller remembers about one OAuthClient between reconciles.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// Facts that save API reads.
    pub caches: Caches,
    /// What the backoff and the triggers need.
    pub retry: RetryState,
    /// What the events need.
    pub ledger: EventLedger,
    /// A token waiting to be written.
    pub outbox: Outbox,
    /// The HTTP clients in use.
    pub handles: Handles,
}

/// What one reconcile learned, recorded at its end.
#[derive(Debug, Default)]
pub struct Learned {
    /// Facts that save API reads.
    pub caches: CacheUpdate,
    /// The retry state (its settled part only when the reconcile settled).
    pub retry: RetryUpdate,
    /// The event ledger after the reconcile (when it settled).
    pub ledger: Option<EventLedger>,
    /// The token waiting to be written.
    pub outbox: Change<Box<Pending>>,
    /// The HTTP clients in use.
    pub handles: HandlesUpdate,
}

/// The memory of every OAuthClient, boxed so that the table's spare capacity costs a pointer per
/// slot, not a whole [`Memory`].
#[derive(Debug, Default)]
pub struct Memories {
    table: Mutex<HashMap<NamespacedName, Box<Memory>>>,
}

impl Memories {
    /// A copy of the memory of `key` (empty for a client not seen before).
    pub fn snapshot(&self, key: &NamespacedName) -> Memory {
        let table = self.table.lock().expect("memory lock");
        table.get(key).map(|m| (**m).clone()).unwrap_or_default()
    }

    /// Records what a reconcile of `key` learned, part by part.
    pub fn record(&self, key: &NamespacedName, learned: Learned) {
        let mut table = self.table.lock().expect("memory lock");
        let memory = table.entry(key.clone()).or_default();
        memory.caches.apply(learned.caches);
        memory.retry.apply(learned.retry);
        if let Some(ledger) = learned.ledger {
            memory.ledger = ledger;
        }
        learned.outbox.apply(&mut memory.outbox.pending);
        memory.handles.apply(learned.handles);
    }

    /// Forgets this process's last write of the managed Secret of `key`: the watches have shown
    /// it, so the caches are as current as the write.
    pub fn forget_write(&self, key: &NamespacedName) {
        let mut table = self.table.lock().expect("memory lock");
        if let Some(memory) = table.get_mut(key) {
            memory.caches.written = None;
        }
    }

    /// Counts one more reconcile error of `key`; returns the streak.
    pub fn count_error(&self, key: &NamespacedName) -> u32 {
        let mut table = self.table.lock().expect("memory lock");
        table.entry(key.clone()).or_default().retry.count_error()
    }

    /// Forgets a client.
    pub fn forget(&self, key: &NamespacedName) {
        self.table.lock().expect("memory lock").remove(key);
    }

    /// Number of clients remembered.
    pub fn len(&self) -> usize {
        self.table.lock().expect("memory lock").len()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The clients remembered that `live` does not hold.
    pub fn stale(&self, live: impl Fn(&NamespacedName) -> bool) -> Vec<NamespacedName> {
        let table = self.table.lock().expect("memory lock");
        table.keys().filter(|k| !live(k)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::decide::FailureStreak;

    #[test]
    fn a_reconcile_is_recorded_once_and_changes_only_what_it_learned() {
        let memories = Memories::default();
        let key = NamespacedName::new("ns", "a");
        memories.record(
            &key,
            Learned {
                retry: RetryUpdate {
                    last_exchange_at: Some(Timestamp::UNIX_EPOCH),
                    failed_with: Change::Set(FailedWith {
                        resource_version: Some("1".into()),
                        digest: None,
                        trust_rv: None,
                    }),
                    ..RetryUpdate::default()
                },
                ..Learned::default()
            },
        );
        assert_eq!(memories.count_error(&key), 1);
        assert_eq!(memories.count_error(&key), 2);
        let streak = FailureStreak {
            reason: crate::api::reason::Reason::RateLimited,
            count: 2,
        };
        memories.record(
            &key,
            Learned {
                retry: RetryUpdate {
                    settled: Some(Some(streak)),
                    failed_with: Change::Clear,
                    ..RetryUpdate::default()
                },
                ledger: Some(EventLedger {
                    issued: None,
                    margin_warned: Some(3),
                }),
                ..Learned::default()
            },
        );
        let memory = memories.snapshot(&key);
        assert_eq!(memory.retry.last_exchange_at, Some(Timestamp::UNIX_EPOCH));
        assert_eq!(memory.retry.failed_with, None);
        assert_eq!(memory.retry.failure_streak, Some(streak));
        assert_eq!(memory.ledger.margin_warned, Some(3));
        assert_eq!(
            memory.retry.errors, 0,
            "a reconcile that settled ends the error streak"
        );
        // A reconcile that did not settle leaves the settled parts alone.
        memories.record(&key, Learned::default());
        let memory = memories.snapshot(&key);
        assert_eq!(memory.retry.failure_streak, Some(streak));
        assert_eq!(memory.ledger.margin_warned, Some(3));
        assert_eq!(
            memories.stale(|k| k.name.as_ref() != "a"),
            std::slice::from_ref(&key)
        );
        memories.forget(&key);
        assert!(memories.is_empty());
    }
}
