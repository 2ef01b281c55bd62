//! This process's own writes, told apart from everyone else's changes in the watches.
//!
//! A reconcile that writes the managed Secret or the status knows what it wrote: the watch
//! events of those writes ask for no further reconcile of the client that wrote (before this, a
//! new client was reconciled about four times: once for its creation, then once for each watch
//! that showed its own writes). Every other change still reconciles it:
//!
//! - an event with another resourceVersion than the write made is someone else's change;
//! - an event that arrives while the write is out (the watch may show it before the write's
//!   answer) is held, and once the answer names the version written, the client is reconciled
//!   if any event held was not that version, or if the write failed.
//!
//! Only the writing client's own reconcile is spared: clients that use the written Secret (token
//! exchange, credentials) are reconciled as before. Nothing is spared while two clients write
//! the same Secret at once (both are reconciled after), nor after [`MADE_TTL`]: an entry whose
//! events never came (a write that changed nothing, a watch that relisted past it) lapses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::name::NamespacedName;
use crate::controller::memory::WRITE_CACHE_TTL;

/// How long the version a write made is looked for in the watches: as long as the memory of the
/// write may stand in for a cache that has not shown it.
pub const MADE_TTL: Duration = WRITE_CACHE_TTL;

/// The object written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteOf {
    /// The status of the OAuthClient (seen by the OAuthClient watch).
    Status,
    /// The managed Secret (seen by two watches: the managed Secrets' and all Secrets').
    Secret,
}

impl WriteOf {
    /// How many watches show one version of the object.
    fn deliveries(self) -> usize {
        match self {
            WriteOf::Status => 1,
            WriteOf::Secret => 2,
        }
    }
}

#[derive(Debug)]
enum Entry {
    /// A write is out; the versions the watches showed meanwhile, one per delivery.
    Writing {
        writer: NamespacedName,
        seen: Vec<Box<str>>,
    },
    /// The last write made `version` at `at`; `left` deliveries of it are still to come.
    Made {
        writer: NamespacedName,
        version: Box<str>,
        left: usize,
        at: Instant,
    },
    /// Several clients write the object at once (the same target Secret): nothing is spared,
    /// and each is reconciled when its write is over.
    Contended { writers: Vec<NamespacedName> },
}

impl Entry {
    fn lapsed(&self, now: Instant) -> bool {
        matches!(self, Entry::Made { at, .. } if now.duration_since(*at) >= MADE_TTL)
    }
}

/// The writes of one scope (see the module documentation), by object and the object's key.
#[derive(Debug, Default)]
pub struct OwnWrites {
    table: Mutex<HashMap<(WriteOf, NamespacedName), Entry>>,
}

impl OwnWrites {
    /// `writer` starts a write of `object` (its status, or the Secret `object_key`).
    pub fn begin(&self, object: WriteOf, object_key: &NamespacedName, writer: &NamespacedName) {
        let mut table = self.lock();
        let key = (object, object_key.clone());
        let entry = match table.remove(&key) {
            Some(Entry::Writing { writer: first, .. }) if first != *writer => Entry::Contended {
                writers: vec![first, writer.clone()],
            },
            Some(Entry::Contended { mut writers }) => {
                writers.push(writer.clone());
                Entry::Contended { writers }
            }
            _ => Entry::Writing {
                writer: writer.clone(),
                seen: Vec::new(),
            },
        };
        table.insert(key, entry);
    }

    /// The write of `object` is over: it made `version` (`None`: it failed, or wrote nothing).
    /// Returns the writer when it must be reconciled: a watch showed a change that was not this
    /// write while it was out (or any change, when the write failed).
    pub fn end(
        &self,
        object: WriteOf,
        object_key: &NamespacedName,
        writer: &NamespacedName,
        version: Option<&str>,
    ) -> Option<NamespacedName> {
        let mut table = self.lock();
        let key = (object, object_key.clone());
        let (writer, seen) = match table.remove(&key) {
            Some(Entry::Writing { writer: w, seen }) if w == *writer => (w, seen),
            Some(Entry::Contended { mut writers }) => {
                // Whatever the watches showed meanwhile, each writer looks again.
                let at = writers.iter().position(|w| w == writer);
                let ended = at.map(|at| writers.remove(at));
                if !writers.is_empty() {
                    table.insert(key, Entry::Contended { writers });
                }
                return ended;
            }
            // Not this writer's entry (it lapsed, or was forgotten): left as it is.
            other => {
                if let Some(other) = other {
                    table.insert(key, other);
                }
                return None;
            }
        };
        let mine = seen.iter().filter(|v| Some(&***v) == version).count();
        let others = seen.len() > mine;
        if let Some(version) = version {
            let left = object.deliveries().saturating_sub(mine);
            if left > 0 {
                table.insert(
                    key,
                    Entry::Made {
                        writer: writer.clone(),
                        version: version.into(),
                        left,
                        at: Instant::now(),
                    },
                );
            }
        }
        others.then_some(writer)
    }

    /// A watch shows `object` at `version`: the writer whose reconcile this event does not ask
    /// for (its own write, or an event held while its write is out), if any.
    pub fn spare(
        &self,
        object: WriteOf,
        object_key: &NamespacedName,
        version: Option<&str>,
    ) -> Option<NamespacedName> {
        let version = version?;
        let mut table = self.lock();
        let key = (object, object_key.clone());
        if table.get(&key)?.lapsed(Instant::now()) {
            table.remove(&key);
            shrink(&mut table);
            return None;
        }
        match table.get_mut(&key)? {
            Entry::Writing { writer, seen } => {
                seen.push(version.into());
                Some(writer.clone())
            }
            Entry::Contended { .. } => None,
            Entry::Made {
                writer,
                version: made,
                left,
                ..
            } => {
                if **made != *version {
                    return None;
                }
                let writer = writer.clone();
                *left -= 1;
                if *left == 0 {
                    table.remove(&key);
                    shrink(&mut table);
                }
                Some(writer)
            }
        }
    }

    /// Whether a watch is still to show a write of `object`: one is out, or not every watch has
    /// shown the version it made. Until then a cache may show the object as it was before.
    pub fn awaits(&self, object: WriteOf, object_key: &NamespacedName) -> bool {
        let now = Instant::now();
        self.lock()
            .get(&(object, object_key.clone()))
            .is_some_and(|entry| !entry.lapsed(now))
    }

    /// Forgets what `client` wrote (it no longer exists).
    pub fn forget(&self, client: &NamespacedName) {
        let now = Instant::now();
        self.lock().retain(|_, entry| {
            let mine = match entry {
                Entry::Writing { writer, .. } | Entry::Made { writer, .. } => writer == client,
                Entry::Contended { writers } => {
                    writers.retain(|w| w != client);
                    writers.is_empty()
                }
            };
            !mine && !entry.lapsed(now)
        });
        shrink(&mut self.lock());
    }

    /// Entries held (writes out, and writes whose events are still to come).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(WriteOf, NamespacedName), Entry>> {
        self.table.lock().expect("own writes lock")
    }
}

/// Gives back the room of a burst once most of its entries are gone (a map keeps the capacity
/// of its largest size: 10,000 clients created at once left 1.8 MiB here for good).
fn shrink(table: &mut HashMap<(WriteOf, NamespacedName), Entry>) {
    if table.capacity() > 1024 && table.len() < table.capacity() / 8 {
        table.shrink_to(table.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> NamespacedName {
        NamespacedName::new("ns", name)
    }

    #[test]
    fn the_room_of_a_burst_is_given_back_once_its_events_came() {
        let writes = OwnWrites::default();
        let clients: Vec<NamespacedName> = (0..10_000).map(|i| key(&format!("c{i}"))).collect();
        for client in &clients {
            writes.begin(WriteOf::Status, client, client);
        }
        for client in &clients {
            assert_eq!(writes.end(WriteOf::Status, client, client, Some("7")), None);
        }
        let burst = writes.lock().capacity();
        assert!(burst >= 10_000);
        for client in &clients {
            assert_eq!(
                writes.spare(WriteOf::Status, client, Some("7")).as_ref(),
                Some(client)
            );
        }
        assert!(writes.is_empty());
        let left = writes.lock().capacity();
        assert!(left * 8 < burst, "{left} of {burst}");
    }

    #[test]
    fn the_events_of_a_write_spare_its_writer_and_then_nothing_is_held() {
        let writes = OwnWrites::default();
        let (secret, client) = (key("a-token"), key("a"));
        writes.begin(WriteOf::Secret, &secret, &client);
        assert_eq!(
            writes.end(WriteOf::Secret, &secret, &client, Some("7")),
            None
        );
        for _ in 0..2 {
            assert_eq!(
                writes.spare(WriteOf::Secret, &secret, Some("7")),
                Some(client.clone())
            );
        }
        assert!(writes.is_empty(), "both deliveries seen");
        assert!(!writes.awaits(WriteOf::Secret, &secret));
        assert_eq!(
            writes.spare(WriteOf::Secret, &secret, Some("7")),
            None,
            "a third delivery (a relist) is not spared"
        );
    }

    #[test]
    fn events_held_while_the_write_is_out_are_settled_by_its_answer() {
        let writes = OwnWrites::default();
        let (status, client) = (key("a"), key("a"));
        // The watch shows the write before its answer arrives: held, then it was this write.
        writes.begin(WriteOf::Status, &status, &client);
        assert_eq!(
            writes.spare(WriteOf::Status, &status, Some("5")),
            Some(client.clone())
        );
        assert_eq!(
            writes.end(WriteOf::Status, &status, &client, Some("5")),
            None
        );
        assert!(writes.is_empty());
        // Someone else's change (another version) while the write is out: the writer is
        // reconciled once the write is over.
        writes.begin(WriteOf::Status, &status, &client);
        assert!(writes.spare(WriteOf::Status, &status, Some("8")).is_some());
        assert_eq!(
            writes.end(WriteOf::Status, &status, &client, Some("9")),
            Some(client.clone())
        );
        // Its own event still to come is spared; someone else's later change is not.
        assert_eq!(writes.spare(WriteOf::Status, &status, Some("10")), None);
        assert_eq!(
            writes.spare(WriteOf::Status, &status, Some("9")),
            Some(client.clone())
        );
        // A failed write: whatever was seen meanwhile reconciles the writer.
        writes.begin(WriteOf::Status, &status, &client);
        writes.spare(WriteOf::Status, &status, Some("11"));
        assert_eq!(
            writes.end(WriteOf::Status, &status, &client, None),
            Some(client)
        );
        assert!(writes.is_empty());
    }

    #[test]
    fn one_delivery_seen_before_the_answer_leaves_the_other_to_spare() {
        let writes = OwnWrites::default();
        let (secret, client) = (key("a-token"), key("a"));
        writes.begin(WriteOf::Secret, &secret, &client);
        writes.spare(WriteOf::Secret, &secret, Some("3"));
        assert_eq!(
            writes.end(WriteOf::Secret, &secret, &client, Some("3")),
            None
        );
        assert_eq!(writes.len(), 1);
        assert!(
            writes.awaits(WriteOf::Secret, &secret),
            "one watch is behind"
        );
        assert_eq!(
            writes.spare(WriteOf::Secret, &secret, Some("3")),
            Some(client)
        );
        assert!(writes.is_empty());
    }

    #[test]
    fn objects_nobody_here_wrote_and_deleted_writers_spare_nothing() {
        let writes = OwnWrites::default();
        assert_eq!(writes.spare(WriteOf::Secret, &key("b"), Some("1")), None);
        assert_eq!(writes.spare(WriteOf::Status, &key("b"), None), None);
        writes.begin(WriteOf::Secret, &key("a-token"), &key("a"));
        writes.begin(WriteOf::Status, &key("c"), &key("c"));
        writes.forget(&key("a"));
        assert_eq!(writes.len(), 1);
        assert_eq!(
            writes.spare(WriteOf::Secret, &key("a-token"), Some("2")),
            None
        );
    }

    #[test]
    fn two_clients_writing_one_secret_at_once_are_both_reconciled_and_spare_nothing() {
        let writes = OwnWrites::default();
        let (secret, a, b) = (key("shared-token"), key("a"), key("b"));
        writes.begin(WriteOf::Secret, &secret, &a);
        // a's write is seen, then someone else's change: both held for a.
        assert_eq!(
            writes.spare(WriteOf::Secret, &secret, Some("4")),
            Some(a.clone())
        );
        assert_eq!(
            writes.spare(WriteOf::Secret, &secret, Some("5")),
            Some(a.clone())
        );
        // b starts a write of the same Secret before a's answer.
        writes.begin(WriteOf::Secret, &secret, &b);
        assert_eq!(writes.spare(WriteOf::Secret, &secret, Some("6")), None);
        assert_eq!(writes.end(WriteOf::Secret, &secret, &b, None), Some(b));
        assert_eq!(
            writes.end(WriteOf::Secret, &secret, &a, Some("4")),
            Some(a),
            "the change held for a is not lost"
        );
        assert!(writes.is_empty());
    }

    #[test]
    fn a_made_version_lapses() {
        let at = Instant::now();
        let made = Entry::Made {
            writer: key("a"),
            version: "1".into(),
            left: 2,
            at,
        };
        assert!(!made.lapsed(at + MADE_TTL / 2));
        assert!(made.lapsed(at + MADE_TTL));
        let writing = Entry::Writing {
            writer: key("a"),
            seen: Vec::new(),
        };
        assert!(
            !writing.lapsed(at + MADE_TTL * 10),
            "a write out never lapses"
        );
    }
}
