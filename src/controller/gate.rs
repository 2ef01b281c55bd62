//! The exchange gate: bounds token requests in flight, in all and per token endpoint, without
//! letting a slow endpoint hold the controller's reconcile slots or the other endpoints' room.
//!
//! A reconcile that wants to exchange asks for a [`Pass`]. When the operator-wide bound
//! (`--max-concurrent-exchanges`) or the endpoint's share of it is used up, it does not wait
//! inside the reconcile (which would keep a controller slot busy for as long as the endpoint
//! hangs): it is queued and returns at once. When a place frees up, the first queued clients
//! whose endpoints have room are woken through their scope's trigger channel, and the places are
//! held for them for a few seconds (a hold that lapses wakes the next waiter).
//!
//! An endpoint that answers quickly frees its places within milliseconds, so for it the
//! reconcile first waits a little inside the gate ([`ExchangeGate::enter_patiently`]: at most
//! [`PATIENCE`], and only while the endpoint's requests in flight are younger than
//! [`QUICK`]): queueing there would send each such client through the controller's queue a
//! second time, and under a burst (10,000 refreshes requested at once) that queue is longer
//! than a hold lasts, so places would sit held for clients still far back in it. It stops
//! waiting (and is queued) as soon as a request to the endpoint has been out for [`QUICK`], so a
//! tarpit holds controller slots for about a second at most.
//!
//! An endpoint's share is a quarter of the bound (at least one), and only one request while it
//! is slow: when its last request took longer than [`SLOW`], or one of its requests in flight
//! has been waiting that long. So a tarpit endpoint, or several, delays only the clients that use
//! them. An endpoint that has proven quick (its last request came back within [`QUICK`], in the
//! last [`PROVEN_FOR`], and none is out for longer now) may use the whole bound while no client
//! of another endpoint waits: the common installation, many clients of one vendor, runs at the
//! full budget; a tarpit never proves quick and stays at its quarter.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc::UnboundedSender;

use crate::api::crd::OAuthClient;

/// A reference in a scope's controller queue.
pub type QueueRef = ObjectRef<PartialObjectMeta<OAuthClient>>;

/// How long a place freed for a woken client is held for it.
const HOLD: Duration = Duration::from_secs(5);

/// The longest a reconcile waits inside the gate for a place at a quick endpoint.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// How often a reconcile waiting inside the gate looks again whether its endpoint is still
/// quick (a place given back wakes it at once).
const RECHECK: Duration = Duration::from_millis(100);

/// An endpoint whose requests in flight are all younger than this is quick: worth waiting for.
pub const QUICK: Duration = Duration::from_secs(1);

/// A request slower than this makes its endpoint slow: one request in flight at a time until a
/// request is quick again.
pub const SLOW: Duration = Duration::from_secs(5);

/// How long a quick answer counts as proof that an endpoint is quick.
pub const PROVEN_FOR: Duration = Duration::from_secs(60);

/// Who is waiting: the scope whose controller must be triggered, and the client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Waiter {
    scope: usize,
    client: QueueRef,
}

#[derive(Debug, Default)]
struct Endpoint {
    /// Start times of the requests in flight.
    in_flight: Vec<Instant>,
    /// Places freed for woken clients, until the deadline.
    held: Vec<(Waiter, Instant)>,
    /// The last request took longer than [`SLOW`].
    slow: bool,
    /// When its last request came back within [`QUICK`] (`None`: never, or the last did not).
    proven: Option<Instant>,
}

impl Endpoint {
    /// Whether its requests come back quickly: not slow, and none in flight for [`QUICK`].
    fn quick(&self, now: Instant) -> bool {
        !self.slow
            && self
                .in_flight
                .iter()
                .all(|t| now.duration_since(*t) < QUICK)
    }

    /// Whether it has proven quick lately and nothing of it is out for long now.
    fn proven_quick(&self, now: Instant) -> bool {
        self.proven
            .is_some_and(|at| now.duration_since(at) < PROVEN_FOR)
            && self.quick(now)
    }

    /// How many requests it may have in flight now: one while slow; the whole bound when it has
    /// proven quick and `alone` says no client of another endpoint waits (asked only then: it
    /// looks through the queue); else `share`.
    fn share(
        &self,
        share: usize,
        max_total: usize,
        alone: impl FnOnce() -> bool,
        now: Instant,
    ) -> usize {
        let stuck = self
            .in_flight
            .iter()
            .any(|t| now.duration_since(*t) >= SLOW);
        if self.slow || stuck {
            1
        } else if self.proven_quick(now) && alone() {
            max_total
        } else {
            share
        }
    }

    fn busy(&self) -> usize {
        self.in_flight.len() + self.held.len()
    }
}

#[derive(Debug, Default)]
struct State {
    max_total: usize,
    share: usize,
    endpoints: HashMap<Box<str>, Endpoint>,
    /// Clients waiting for a place, first come first served: (endpoint, who).
    waiting: VecDeque<(Box<str>, Waiter)>,
    scopes: Vec<UnboundedSender<QueueRef>>,
}

impl State {
    fn busy(&self) -> usize {
        self.endpoints.values().map(Endpoint::busy).sum()
    }

    fn has_room(&self, endpoint: &str, now: Instant) -> bool {
        self.has_room_beyond(endpoint, 0, now)
    }

    /// Whether `endpoint` has room for `extra` more requests and then one.
    fn has_room_beyond(&self, endpoint: &str, extra: usize, now: Instant) -> bool {
        // The total first: when it is used up (most of a burst), nothing else is looked at.
        if self.busy() + extra >= self.max_total {
            return false;
        }
        // Work-conserving: the whole bound for a quick endpoint while nobody else waits.
        let alone = || {
            !self.waiting.iter().any(|(e, _)| &**e != endpoint)
                && self
                    .endpoints
                    .iter()
                    .all(|(e, entry)| &**e == endpoint || entry.held.is_empty())
        };
        self.endpoints
            .get(endpoint)
            .is_none_or(|e| e.busy() + extra < e.share(self.share, self.max_total, alone, now))
    }

    /// Drops lapsed holds, wakes the first waiters whose endpoints have room (holding a place
    /// for each), and forgets endpoints without traffic. Returns whether a hold was made.
    fn wake(&mut self, now: Instant) -> bool {
        for endpoint in self.endpoints.values_mut() {
            endpoint.held.retain(|(_, until)| *until > now);
        }
        let mut held = false;
        // Clients woken for a quick endpoint in this round: no place is held for them (their
        // reconcile waits inside the gate like any other, see `enter_patiently`), so a place is
        // never left idle for a client still far back in the controller's queue; but no more of
        // them are woken than there is room. (Unless another endpoint is beyond its quarter:
        // then the place is held, or that endpoint would take it back at once.)
        let mut woken: HashMap<Box<str>, usize> = HashMap::new();
        while let Some(i) = self.waiting.iter().position(|(endpoint, _)| {
            let extra = woken.get(endpoint).copied().unwrap_or(0);
            self.has_room_beyond(endpoint, extra, now)
        }) {
            let (endpoint, who) = self.waiting.remove(i).expect("index from position");
            if let Some(trigger) = self.scopes.get(who.scope) {
                let _ = trigger.send(who.client.clone());
            }
            // An endpoint using more than its quarter (alone, it may use the whole bound) would
            // take the freed place before the woken client is back: hold it for the client.
            let contended = self
                .endpoints
                .iter()
                .any(|(e, other)| *e != endpoint && other.busy() > self.share);
            let entry = self.endpoints.entry(endpoint.clone()).or_default();
            if entry.quick(now) && !contended {
                *woken.entry(endpoint).or_default() += 1;
            } else {
                entry.held.push((who, now + HOLD));
                held = true;
            }
        }
        self.endpoints.retain(|_, e| {
            !e.in_flight.is_empty()
                || !e.held.is_empty()
                || e.slow
                || e.proven
                    .is_some_and(|at| now.duration_since(at) < PROVEN_FOR)
        });
        held
    }
}

/// The gate (see the module documentation).
#[derive(Debug)]
pub struct ExchangeGate {
    state: Arc<Mutex<State>>,
    /// Notified whenever a pass is given back.
    freed: Arc<tokio::sync::Notify>,
}

/// The right to send one token request; given back when dropped.
#[derive(Debug)]
pub struct Pass {
    endpoint: Box<str>,
    started: Instant,
    state: Arc<Mutex<State>>,
    freed: Arc<tokio::sync::Notify>,
}

impl ExchangeGate {
    /// A gate allowing `max_total` requests in flight, at most a quarter of them (at least one)
    /// to one endpoint.
    pub fn new(max_total: usize) -> Self {
        let max_total = max_total.max(1);
        let state = State {
            max_total,
            share: (max_total / 4).max(1),
            ..State::default()
        };
        ExchangeGate {
            state: Arc::new(Mutex::new(state)),
            freed: Arc::default(),
        }
    }

    /// The most requests in flight to one endpoint that is not slow.
    pub fn max_per_endpoint(&self) -> usize {
        self.state.lock().expect("gate lock").share
    }

    /// Registers a scope's trigger channel; the index is the `scope` of [`ExchangeGate::enter`].
    pub fn add_scope(&self, trigger: UnboundedSender<QueueRef>) -> usize {
        let mut state = self.state.lock().expect("gate lock");
        state.scopes.push(trigger);
        state.scopes.len() - 1
    }

    /// As [`ExchangeGate::enter`], but while the endpoint is quick, first waits up to
    /// [`PATIENCE`] for one of its places to be given back. Places held for queued clients stay
    /// theirs: a patient reconcile takes only a place that nobody is owed.
    pub async fn enter_patiently(
        &self,
        endpoint: &str,
        scope: usize,
        client: &QueueRef,
    ) -> Option<Pass> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            // Created before the check, so that a place given back in between is not missed.
            let freed = self.freed.notified();
            let now = Instant::now();
            {
                let mut state = self.state.lock().expect("gate lock");
                let quick = state.endpoints.get(endpoint).is_none_or(|e| e.quick(now));
                if !quick || tokio::time::Instant::now() >= deadline {
                    drop(state);
                    return self.enter(endpoint, scope, client);
                }
                state.wake(now);
                if state.has_room(endpoint, now) {
                    drop(state);
                    return self.enter(endpoint, scope, client);
                }
            }
            let next = deadline.min(tokio::time::Instant::now() + RECHECK);
            let _ = tokio::time::timeout_at(next, freed).await;
        }
    }

    /// A pass for a request to `endpoint`, or `None` when there is no room: then `client` is
    /// queued and its scope's controller is triggered once there is.
    pub fn enter(&self, endpoint: &str, scope: usize, client: &QueueRef) -> Option<Pass> {
        let who = Waiter {
            scope,
            client: client.clone(),
        };
        let now = Instant::now();
        let mut state = self.state.lock().expect("gate lock");
        let mut held = state.wake(now);
        let entry = state.endpoints.entry(endpoint.into()).or_default();
        let own_hold = entry.held.iter().position(|(w, _)| *w == who);
        let room = match own_hold {
            Some(i) => {
                entry.held.swap_remove(i);
                true
            }
            None => state.has_room(endpoint, now),
        };
        let pass = if room {
            let entry = state.endpoints.entry(endpoint.into()).or_default();
            entry.in_flight.push(now);
            state.waiting.retain(|(_, w)| *w != who);
            Some(Pass {
                endpoint: endpoint.into(),
                started: now,
                state: self.state.clone(),
                freed: self.freed.clone(),
            })
        } else {
            if !state.waiting.iter().any(|(_, w)| *w == who) {
                state.waiting.push_back((endpoint.into(), who));
            }
            held |= state.wake(now);
            None
        };
        drop(state);
        if held {
            expire_holds_later(&self.state);
        }
        pass
    }

    /// Forgets a client that no longer exists: its place in the queue and any place held for it.
    pub fn forget(&self, scope: usize, client: &QueueRef) {
        let gone = |w: &Waiter| w.scope == scope && w.client == *client;
        let mut state = self.state.lock().expect("gate lock");
        state.waiting.retain(|(_, w)| !gone(w));
        for endpoint in state.endpoints.values_mut() {
            endpoint.held.retain(|(w, _)| !gone(w));
        }
        let held = state.wake(Instant::now());
        drop(state);
        if held {
            expire_holds_later(&self.state);
        }
    }

    /// (requests in flight, clients waiting): for tests and diagnostics.
    pub fn load(&self) -> (usize, usize) {
        let state = self.state.lock().expect("gate lock");
        let in_flight = state.endpoints.values().map(|e| e.in_flight.len()).sum();
        (in_flight, state.waiting.len())
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut state = self.state.lock().expect("gate lock");
        if let Some(entry) = state.endpoints.get_mut(&self.endpoint) {
            if let Some(i) = entry.in_flight.iter().position(|t| *t == self.started) {
                entry.in_flight.swap_remove(i);
            }
            let took = now.duration_since(self.started);
            entry.slow = took >= SLOW;
            entry.proven = (took < QUICK).then_some(now);
        }
        let held = state.wake(now);
        drop(state);
        self.freed.notify_waiters();
        if held {
            expire_holds_later(&self.state);
        }
    }
}

/// Runs the wake-up again once the holds just made may have lapsed, so that a woken client that
/// never comes back does not leave the next waiter asleep.
fn expire_holds_later(state: &Arc<Mutex<State>>) {
    let state = Arc::downgrade(state);
    let expire = move || {
        if let Some(state) = state.upgrade() {
            let held = state.lock().expect("gate lock").wake(Instant::now());
            if held {
                expire_holds_later(&state);
            }
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                tokio::time::sleep(HOLD + Duration::from_millis(10)).await;
                expire();
            });
        }
        Err(_) => {
            std::thread::spawn(move || {
                std::thread::sleep(HOLD + Duration::from_millis(10));
                expire();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> QueueRef {
        ObjectRef::new(name).within("ns")
    }

    /// Makes `pass`'s request look `by` older (past [`QUICK`]: its endpoint is no longer quick,
    /// so waiters woken for it get a held place; past [`SLOW`]: it makes the endpoint slow).
    fn age(gate: &ExchangeGate, pass: &mut Pass, by: Duration) {
        let mut state = gate.state.lock().unwrap();
        let entry = state.endpoints.get_mut(&pass.endpoint).unwrap();
        let t = entry
            .in_flight
            .iter_mut()
            .find(|t| **t == pass.started)
            .unwrap();
        *t -= by;
        pass.started -= by;
    }

    /// Issue 23, work-conserving part: one endpoint that has proven quick and 600 clients
    /// waiting uses the whole bound (a quarter before: 8 of 32); an endpoint that never
    /// answered quickly (a tarpit) stays at its quarter; once a client of another endpoint
    /// waits, the quick one is back at its quarter.
    #[test]
    fn a_quick_endpoint_alone_uses_the_whole_bound_and_shares_it_when_others_wait() {
        let gate = ExchangeGate::new(32);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let scope = gate.add_scope(tx);
        // Unproven: a quarter.
        let first: Vec<Pass> = (0..8)
            .map(|i| {
                gate.enter("vendor:443", scope, &client(&format!("p{i}")))
                    .unwrap()
            })
            .collect();
        assert!(gate.enter("vendor:443", scope, &client("p8")).is_none());
        // Its answers come back quickly: proven, and alone, it takes the whole bound.
        drop(first);
        let mut passes = Vec::new();
        for i in 0..600 {
            if let Some(pass) = gate.enter("vendor:443", scope, &client(&format!("c{i}"))) {
                passes.push(pass);
            }
        }
        assert_eq!(passes.len(), 32, "the whole bound at one quick endpoint");
        // Another endpoint's client waits: the quick endpoint gets no more than its quarter
        // from now on, and the newcomer the first place given back.
        assert!(gate.enter("other:443", scope, &client("o")).is_none());
        passes.truncate(31);
        assert!(gate.enter("vendor:443", scope, &client("c600")).is_none());
        assert!(gate.enter("other:443", scope, &client("o")).is_some());

        // A tarpit never proves quick: a quarter, whatever waits.
        let gate = ExchangeGate::new(32);
        let tarpit: Vec<Pass> = (0..40)
            .filter_map(|i| gate.enter("tarpit:443", scope, &client(&format!("t{i}"))))
            .collect();
        assert_eq!(tarpit.len(), 8);
        assert!(gate.enter("healthy:443", scope, &client("h")).is_some());
    }

    #[test]
    fn a_busy_endpoint_queues_its_clients_and_leaves_room_for_others() {
        let gate = ExchangeGate::new(8);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let scope = gate.add_scope(tx);
        assert_eq!(gate.max_per_endpoint(), 2);
        let mut a = gate.enter("slow:443", scope, &client("a")).unwrap();
        let mut b = gate.enter("slow:443", scope, &client("b")).unwrap();
        age(&gate, &mut a, QUICK);
        age(&gate, &mut b, QUICK);
        assert!(gate.enter("slow:443", scope, &client("c")).is_none());
        assert!(gate.enter("slow:443", scope, &client("c")).is_none());
        assert_eq!(gate.load(), (2, 1), "c is queued once");
        // Other endpoints still have room, until the total is used up.
        let mut others = Vec::new();
        for (i, endpoint) in ["f1:443", "f1:443", "f2:443", "f2:443", "f3:443", "f3:443"]
            .iter()
            .enumerate()
        {
            others.push(
                gate.enter(endpoint, scope, &client(&format!("o{i}")))
                    .unwrap(),
            );
        }
        assert!(gate.enter("other:443", scope, &client("f")).is_none());
        assert!(rx.try_recv().is_err(), "nobody woken yet");
        drop(a);
        // The first waiter whose endpoint has room is woken: c (slow has room again).
        assert_eq!(rx.try_recv().unwrap(), client("c"));
        // The place is held for c: f cannot take it.
        assert!(gate.enter("other:443", scope, &client("f")).is_none());
        let _c = gate.enter("slow:443", scope, &client("c")).unwrap();
        assert_eq!(gate.load(), (8, 1));
        drop(b);
    }

    /// Several hanging endpoints (two ports of one tarpit, `host` and `host.`) cannot take every
    /// pass: each gets a quarter of the bound.
    #[test]
    fn two_tarpit_endpoints_cannot_take_every_pass() {
        let gate = ExchangeGate::new(32);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let scope = gate.add_scope(tx);
        let mut passes = Vec::new();
        for i in 0..100 {
            for endpoint in ["tarpit.example:443", "tarpit.example:8443"] {
                let who = client(&format!("{endpoint}-{i}"));
                if let Some(pass) = gate.enter(endpoint, scope, &who) {
                    passes.push(pass);
                }
            }
        }
        assert_eq!(passes.len(), 16);
        assert!(
            gate.enter("healthy.example:443", scope, &client("healthy"))
                .is_some()
        );
    }

    /// An endpoint whose request has been in flight for [`SLOW`] gets one request at a time.
    #[test]
    fn a_slow_endpoint_gets_one_request_at_a_time() {
        let mut endpoint = Endpoint::default();
        let now = Instant::now();
        endpoint.in_flight.push(now);
        assert_eq!(endpoint.share(8, 32, || true, now), 8);
        assert_eq!(endpoint.share(8, 32, || true, now + SLOW), 1);
        endpoint.in_flight.clear();
        endpoint.slow = true;
        assert_eq!(endpoint.share(8, 32, || true, now), 1);
    }

    #[test]
    fn a_quick_endpoint_wakes_no_more_than_it_has_room_for_and_holds_nothing() {
        let gate = ExchangeGate::new(8);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let scope = gate.add_scope(tx);
        let a = gate.enter("q:443", scope, &client("a")).unwrap();
        let b = gate.enter("q:443", scope, &client("b")).unwrap();
        for name in ["c", "d", "e"] {
            assert!(gate.enter("q:443", scope, &client(name)).is_none());
        }
        // A client of another endpoint waits too (behind them): q keeps its quarter.
        let full: Vec<Pass> = (0..6)
            .map(|i| {
                gate.enter(&format!("o{i}:443"), scope, &client(&format!("o{i}")))
                    .unwrap()
            })
            .collect();
        assert!(gate.enter("z:443", scope, &client("z")).is_none());
        drop(a);
        // One place: c for q (at its quarter while z waits), and z (nothing held for either at
        // a quick endpoint; whoever reconciles first takes the place); not d.
        assert_eq!(rx.try_recv().unwrap(), client("c"));
        assert_eq!(rx.try_recv().unwrap(), client("z"));
        assert!(rx.try_recv().is_err(), "one place: d stays queued");
        drop(full);
        drop(b);
        assert_eq!(rx.try_recv().unwrap(), client("d"));
        assert_eq!(rx.try_recv().unwrap(), client("e"));
        assert_eq!(gate.load(), (0, 0), "nothing held, nobody left queued");
        // Nothing is held: a newcomer gets a place at once.
        assert!(gate.enter("q:443", scope, &client("f")).is_some());
    }

    #[test]
    fn a_lapsed_hold_wakes_the_next_waiter() {
        let gate = ExchangeGate::new(1);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let scope = gate.add_scope(tx);
        let mut a = gate.enter("x:443", scope, &client("a")).unwrap();
        age(&gate, &mut a, SLOW);
        assert!(gate.enter("x:443", scope, &client("b")).is_none());
        assert!(gate.enter("x:443", scope, &client("c")).is_none());
        drop(a);
        assert_eq!(rx.try_recv().unwrap(), client("b"));
        // b never comes back for its place.
        std::thread::sleep(HOLD + Duration::from_millis(1500));
        assert_eq!(
            rx.try_recv().ok(),
            Some(client("c")),
            "load {:?}",
            gate.load()
        );
    }

    #[test]
    fn forgotten_clients_are_not_woken_and_free_their_held_place() {
        let gate = ExchangeGate::new(1);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let scope = gate.add_scope(tx);
        let a = gate.enter("x:443", scope, &client("a")).unwrap();
        assert!(gate.enter("x:443", scope, &client("b")).is_none());
        assert!(gate.enter("x:443", scope, &client("c")).is_none());
        gate.forget(scope, &client("b"));
        drop(a);
        assert_eq!(rx.try_recv().unwrap(), client("c"), "b is forgotten");
        gate.forget(scope, &client("c"));
        assert_eq!(gate.load(), (0, 0));
        assert!(
            gate.enter("x:443", scope, &client("d")).is_some(),
            "c's hold is freed"
        );
    }

    #[tokio::test]
    async fn a_quick_endpoint_is_waited_for_inside_the_gate_a_slow_one_is_not() {
        let gate = Arc::new(ExchangeGate::new(4));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let scope = gate.add_scope(tx);
        let a = gate.enter("quick:443", scope, &client("a")).unwrap();
        // The place comes back within the patience: b gets it without being queued.
        let waiting = {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.enter_patiently("quick:443", scope, &client("b"))
                    .await
                    .is_some()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(a);
        assert!(waiting.await.unwrap(), "b got the place it waited for");
        assert_eq!(gate.load(), (0, 0), "nobody queued");
        assert!(rx.try_recv().is_err(), "nobody woken through the queue");
        // A place that is not given back while the request is quick: queued, as with enter,
        // once the request has been out for QUICK.
        // (Another endpoint, that has not proven quick yet: "quick:443" now has, and alone
        // could use the whole bound.)
        let c = gate.enter("fresh:443", scope, &client("c")).unwrap();
        let started = Instant::now();
        assert!(
            gate.enter_patiently("fresh:443", scope, &client("d"))
                .await
                .is_none()
        );
        let waited = started.elapsed();
        assert!(waited >= QUICK && waited < PATIENCE, "{waited:?}");
        assert_eq!(gate.load(), (1, 1), "d is queued");
        drop(c);
        assert_eq!(rx.try_recv().unwrap(), client("d"));
        // No place is held for d at a quick endpoint: whoever reconciles first takes it (d
        // will wait inside the gate like e), so no place sits idle for a client still far back
        // in the controller's queue.
        let e = gate.enter_patiently("fresh:443", scope, &client("e")).await;
        assert!(e.is_some(), "no place held at a quick endpoint");
        drop(e);
        assert!(gate.enter("fresh:443", scope, &client("d")).is_some());
        // An endpoint with a request out for longer than QUICK is not waited for.
        gate.state
            .lock()
            .unwrap()
            .endpoints
            .entry("hanging:443".into())
            .or_default()
            .in_flight
            .push(Instant::now() - QUICK);
        let started = Instant::now();
        assert!(
            gate.enter_patiently("hanging:443", scope, &client("f"))
                .await
                .is_none()
        );
        assert!(started.elapsed() < PATIENCE, "not waited for");
    }
}
