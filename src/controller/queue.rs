//! The controller's queue: which OAuthClients are to be reconciled, and when.
//!
//! kube-runtime's `Controller` queues every trigger in its own scheduler: per entry an
//! `ObjectRef` twice (map key and delay queue), with the map and the delay queue's slab sized
//! for the largest burst and never shrunk. At 10,000 clients, a creation burst and the 10,000
//! requeues (one refresh each) held about 6 MiB there for good. Here each client waiting is its
//! (namespace, name) once, with its due time, and kube's applier is handed at most `limit`
//! clients at a time (its number of reconcile slots): its scheduler holds no more than that.
//!
//! * A trigger (a watch event mapped to a client, a wake-up of the exchange gate) makes the
//!   client due now; a requeue (the refresh time, a retry after an error) makes it due then. A
//!   client is due once, at the earlier of what it was asked for.
//! * A client being reconciled is not handed out again until its reconcile is over (what
//!   kube's scheduler does with `hold_unless`); a trigger meanwhile makes it due again, so
//!   nothing that happened during a reconcile is lost.
//! * Clients the exchange gate wakes (it has a place for them) go first, in the order woken;
//!   then clients in the order of their due times (first come, first served for triggers; the
//!   same instant is ordered by name). Kube's scheduler knew no such lane: a woken client
//!   waited behind a burst's triggers while its place stayed empty.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::Stream;
use futures::task::AtomicWaker;
use tokio::time::{Instant, Sleep};

use crate::api::name::NamespacedName;

/// The longest wait before a client is looked at again (as kube's scheduler, about 6 months):
/// a token valid for years is still checked twice a year.
pub const MAX_DELAY: Duration = Duration::from_secs(180 * 24 * 3600);

/// Why a client waits: woken by the exchange gate (a place is free for it: it goes before every
/// client that is only due), or due at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    /// The gate woke it (in the order it was woken).
    Woken,
    /// A trigger or a requeue made it due.
    Due,
}

/// When a client goes out: its lane first, then its time.
type When = (Lane, Instant);

/// The clients waiting and those handed out (the pure part: every time is given).
#[derive(Debug, Default)]
pub struct Pending {
    /// Clients by lane and due time.
    due: BTreeSet<(When, Arc<NamespacedName>)>,
    /// Each waiting client's lane and due time.
    at: HashMap<Arc<NamespacedName>, When>,
    /// Clients handed out whose reconcile is not over.
    out: HashSet<Arc<NamespacedName>>,
    /// How many may be out at once.
    limit: usize,
}

impl Pending {
    /// No client waiting; at most `limit` out at once.
    pub fn new(limit: usize) -> Self {
        Pending {
            limit: limit.max(1),
            ..Pending::default()
        }
    }

    /// `key` is due at `at`, or earlier if it already was.
    pub fn schedule(&mut self, key: &NamespacedName, at: Instant) {
        self.enter(key, (Lane::Due, at));
    }

    /// The exchange gate woke `key` at `now` (a place is free for it).
    pub fn wake(&mut self, key: &NamespacedName, now: Instant) {
        self.enter(key, (Lane::Woken, now));
    }

    /// `key` waits for `when`, or for what it already waited for if that comes first.
    fn enter(&mut self, key: &NamespacedName, when: When) {
        if let Some((shared, was)) = self.at.get_key_value(key) {
            if *was <= when {
                return;
            }
            let shared = shared.clone();
            self.due.remove(&(*was, shared.clone()));
            self.due.insert((when, shared.clone()));
            self.at.insert(shared, when);
            return;
        }
        let shared = Arc::new(key.clone());
        self.due.insert((when, shared.clone()));
        self.at.insert(shared, when);
    }

    /// `key` no longer waits (its client is gone).
    pub fn forget(&mut self, key: &NamespacedName) {
        if let Some((shared, at)) = self.at.remove_entry(key) {
            self.due.remove(&(at, shared));
        }
        self.shrink();
    }

    /// The next client to hand out at `now`: the earliest due whose reconcile is not running,
    /// if fewer than `limit` are out. It counts as out until [`Pending::finished`].
    pub fn next(&mut self, now: Instant) -> Option<NamespacedName> {
        if self.out.len() >= self.limit {
            return None;
        }
        let (when, key) = self
            .due
            .iter()
            .take_while(|((lane, at), _)| *lane == Lane::Woken || *at <= now)
            .find(|(_, key)| !self.out.contains(key))
            .cloned()?;
        self.due.remove(&(when, key.clone()));
        self.at.remove(&key);
        let handed = NamespacedName::clone(&key);
        self.out.insert(key);
        self.shrink();
        Some(handed)
    }

    /// The reconcile of `key` is over: it may be handed out again.
    pub fn finished(&mut self, key: &NamespacedName) {
        self.out.remove(key);
    }

    /// When a client not yet due becomes due (clients due already but held, because they are
    /// out or the limit is reached, wait for a reconcile to finish instead).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.due.iter().map(|((_, at), _)| *at).find(|at| *at > now)
    }

    /// Clients waiting.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether no client waits.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Clients out.
    pub fn out(&self) -> usize {
        self.out.len()
    }

    /// Gives back the map's room after a burst (a map keeps the capacity of its largest size).
    fn shrink(&mut self) {
        if self.at.capacity() > 1024 && self.at.len() < self.at.capacity() / 8 {
            self.at.shrink_to(self.at.len() * 2);
        }
    }
}

/// The queue shared by the stream that feeds the applier, the reconciles (their requeues) and
/// the loop that sees reconciles end.
#[derive(Debug)]
pub struct Queue {
    pending: Mutex<Pending>,
    /// The stream's task, woken when a client becomes due earlier or a reconcile ends.
    waker: AtomicWaker,
}

impl Queue {
    /// An empty queue handing out at most `limit` clients at once.
    pub fn new(limit: usize) -> Self {
        Queue {
            pending: Mutex::new(Pending::new(limit)),
            waker: AtomicWaker::new(),
        }
    }

    /// `key` is to be reconciled in `delay` (or earlier if it already was due earlier), at the
    /// latest in [`MAX_DELAY`].
    pub fn requeue(&self, key: &NamespacedName, delay: Duration) {
        let at = Instant::now() + delay.min(MAX_DELAY);
        self.lock().schedule(key, at);
        self.waker.wake();
    }

    /// `key`'s reconcile is over (or it was handed out for a client that no longer exists).
    pub fn finished(&self, key: &NamespacedName) {
        self.lock().finished(key);
        self.waker.wake();
    }

    /// `key`'s client is gone.
    pub fn forget(&self, key: &NamespacedName) {
        self.lock().forget(key);
    }

    /// Clients waiting, and clients out (read by the tests).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let pending = self.lock();
        (pending.len(), pending.out())
    }

    /// The clients to reconcile, as they become due: `triggers` (read as fast as they come, so
    /// that the watches behind them never wait) make them due at once, in their lane.
    pub fn stream<T>(self: &Arc<Self>, triggers: T) -> QueueStream<T>
    where
        T: Stream<Item = (NamespacedName, Lane)> + Unpin,
    {
        QueueStream {
            queue: self.clone(),
            triggers: Some(triggers),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().expect("queue lock")
    }
}

/// See [`Queue::stream`]. It ends when `triggers` end (the graceful shutdown).
pub struct QueueStream<T> {
    queue: Arc<Queue>,
    triggers: Option<T>,
    sleep: Pin<Box<Sleep>>,
}

impl<T: Stream<Item = (NamespacedName, Lane)> + Unpin> Stream for QueueStream<T> {
    type Item = NamespacedName;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.queue.waker.register(cx.waker());
        let Some(triggers) = this.triggers.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let now = Instant::now();
            loop {
                match Pin::new(&mut *triggers).poll_next(cx) {
                    Poll::Ready(Some((key, lane))) => this.queue.lock().enter(&key, (lane, now)),
                    Poll::Ready(None) => {
                        this.triggers = None;
                        return Poll::Ready(None);
                    }
                    Poll::Pending => break,
                }
            }
            let mut pending = this.queue.lock();
            if let Some(key) = pending.next(now) {
                return Poll::Ready(Some(key));
            }
            if pending.out() >= pending.limit {
                // Every slot busy: nothing can go out before a reconcile ends, which wakes
                // this task (and the due times need no scan while a burst waits).
                return Poll::Pending;
            }
            let Some(deadline) = pending.next_deadline(now) else {
                return Poll::Pending;
            };
            drop(pending);
            if this.sleep.deadline() != deadline {
                this.sleep.as_mut().reset(deadline);
            }
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> NamespacedName {
        NamespacedName::new("ns", name)
    }

    fn names(pending: &mut Pending, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| pending.next(now))
            .map(|k| k.name.to_string())
            .collect()
    }

    #[test]
    fn a_client_is_due_once_at_the_earlier_time() {
        let t0 = Instant::now();
        let mut p = Pending::new(10);
        p.schedule(&key("a"), t0 + Duration::from_secs(60));
        p.schedule(&key("a"), t0 + Duration::from_secs(5));
        p.schedule(&key("a"), t0 + Duration::from_secs(30));
        assert_eq!(p.len(), 1);
        assert_eq!(p.next_deadline(t0), Some(t0 + Duration::from_secs(5)));
        assert!(p.next(t0 + Duration::from_secs(4)).is_none());
        assert_eq!(names(&mut p, t0 + Duration::from_secs(5)), ["a"]);
        assert!(p.is_empty());
        assert_eq!(p.next_deadline(t0), None);
    }

    #[test]
    fn clients_go_out_in_due_order_at_most_limit_at_once() {
        let t0 = Instant::now();
        let mut p = Pending::new(2);
        for (i, name) in ["c", "a", "d", "b"].iter().enumerate() {
            p.schedule(&key(name), t0 + Duration::from_millis(i as u64));
        }
        let now = t0 + Duration::from_secs(1);
        assert_eq!(names(&mut p, now), ["c", "a"], "the limit");
        p.finished(&key("c"));
        assert_eq!(names(&mut p, now), ["d"]);
        p.finished(&key("a"));
        p.finished(&key("d"));
        assert_eq!(names(&mut p, now), ["b"]);
        assert_eq!(p.out(), 1);
    }

    #[test]
    fn a_trigger_during_a_reconcile_waits_for_its_end_and_is_not_lost() {
        let t0 = Instant::now();
        let mut p = Pending::new(10);
        p.schedule(&key("a"), t0);
        assert_eq!(names(&mut p, t0), ["a"]);
        // A watch event while a runs, then its requeue (the refresh) later.
        p.schedule(&key("a"), t0);
        p.schedule(&key("a"), t0 + Duration::from_secs(3600));
        p.schedule(&key("b"), t0);
        assert_eq!(
            names(&mut p, t0),
            ["b"],
            "a is running: held, not handed out twice"
        );
        assert_eq!(p.next_deadline(t0), None, "held clients need no timer");
        p.finished(&key("a"));
        assert_eq!(names(&mut p, t0), ["a"], "due at once, not at the refresh");
    }

    #[test]
    fn a_forgotten_client_is_not_handed_out_and_the_room_of_a_burst_is_given_back() {
        let t0 = Instant::now();
        let mut p = Pending::new(10_000);
        for i in 0..10_000 {
            p.schedule(&key(&format!("c{i}")), t0);
        }
        let burst = p.at.capacity();
        p.forget(&key("c0"));
        assert_eq!(p.len(), 9_999);
        let out = names(&mut p, t0);
        assert_eq!(out.len(), 9_999);
        assert!(!out.contains(&"c0".to_owned()));
        assert!(
            p.at.capacity() * 8 < burst,
            "{} of {burst}",
            p.at.capacity()
        );
    }

    #[test]
    fn a_client_the_gate_woke_goes_before_every_client_only_due() {
        let t0 = Instant::now();
        let mut p = Pending::new(10);
        for name in ["a", "b", "c"] {
            p.schedule(&key(name), t0);
        }
        let later = t0 + Duration::from_secs(1);
        p.wake(&key("y"), later);
        p.wake(&key("x"), later + Duration::from_millis(1));
        // A woken client already due as a trigger moves to the woken lane.
        p.wake(&key("c"), later + Duration::from_millis(2));
        assert_eq!(
            names(&mut p, later + Duration::from_secs(1)),
            ["y", "x", "c", "a", "b"],
            "woken first, in the order woken; then by due time"
        );
        // Woken while due earlier as a trigger: still once.
        p.schedule(&key("z"), t0);
        p.wake(&key("z"), later);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn a_requeue_years_away_is_looked_at_within_six_months() {
        let queue = Queue::new(1);
        let asked = Instant::now();
        queue.requeue(&key("a"), Duration::from_secs(10 * 365 * 24 * 3600));
        let due = queue.lock().next_deadline(asked).unwrap();
        assert!(due <= asked + MAX_DELAY + Duration::from_secs(1));
        assert!(due >= asked + MAX_DELAY);
    }

    #[tokio::test]
    async fn the_stream_reads_triggers_at_once_and_hands_out_requeues_when_due() {
        use futures::StreamExt;
        let queue = Arc::new(Queue::new(1));
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut stream = queue.stream(rx);
        for name in ["a", "b", "c"] {
            tx.unbounded_send((key(name), Lane::Due)).unwrap();
        }
        assert_eq!(stream.next().await.unwrap().name.as_ref(), "a");
        // Limit 1: nothing more until a is over, yet every trigger was read.
        let held = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
        assert!(held.is_err());
        assert_eq!(queue.sizes(), (2, 1));
        let asked = Instant::now();
        queue.requeue(&key("a"), Duration::from_millis(300));
        queue.finished(&key("a"));
        assert_eq!(stream.next().await.unwrap().name.as_ref(), "b");
        queue.finished(&key("b"));
        assert_eq!(stream.next().await.unwrap().name.as_ref(), "c");
        queue.finished(&key("c"));
        assert_eq!(stream.next().await.unwrap().name.as_ref(), "a");
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
            "the requeue came {waited:?} after it was asked, not 300 ms"
        );
        drop(tx);
        queue.finished(&key("a"));
        assert!(stream.next().await.is_none(), "ends with its triggers");
    }
}
