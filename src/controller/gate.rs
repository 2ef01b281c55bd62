//! The exchange gate: bounds token requests in flight, in all and per token endpoint, without
//! letting a slow endpoint hold the controller's reconcile slots.
//!
//! A reconcile that wants to exchange asks for a [`Pass`]. When the operator-wide bound
//! (`--max-concurrent-exchanges`) or the endpoint's share of it (half, at least one) is used
//! up, it does not wait inside the reconcile (which would keep a controller slot busy for as long
//! as the endpoint hangs): it is queued and returns at once. When a pass is given back, the
//! first queued client whose endpoint has room is woken through its scope's trigger channel, and
//! the freed place is held for it for a few seconds. So a tarpit endpoint delays only the clients
//! that use it.

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

/// Who is waiting: the scope whose controller must be triggered, and the client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Waiter {
    scope: usize,
    client: QueueRef,
}

#[derive(Debug, Default)]
struct Endpoint {
    in_flight: usize,
    /// Places freed for woken clients, until the deadline.
    held: Vec<(Waiter, Instant)>,
}

#[derive(Debug, Default)]
struct State {
    in_flight: usize,
    endpoints: HashMap<Box<str>, Endpoint>,
    /// Clients waiting for a place, first come first served: (endpoint, who).
    waiting: VecDeque<(Box<str>, Waiter)>,
    scopes: Vec<UnboundedSender<QueueRef>>,
}

impl State {
    fn held(&self) -> usize {
        self.endpoints.values().map(|e| e.held.len()).sum()
    }

    fn expire_holds(&mut self, now: Instant) {
        for endpoint in self.endpoints.values_mut() {
            endpoint.held.retain(|(_, until)| *until > now);
        }
    }
}

/// The gate (see the module documentation).
#[derive(Debug)]
pub struct ExchangeGate {
    max_total: usize,
    max_per_endpoint: usize,
    state: Arc<Mutex<State>>,
}

/// The right to send one token request; given back when dropped.
#[derive(Debug)]
pub struct Pass {
    endpoint: Box<str>,
    state: Arc<Mutex<State>>,
    max_total: usize,
    max_per_endpoint: usize,
}

impl ExchangeGate {
    /// A gate allowing `max_total` requests in flight, at most half of them (at least one) to
    /// one endpoint.
    pub fn new(max_total: usize) -> Self {
        let max_total = max_total.max(1);
        ExchangeGate {
            max_total,
            max_per_endpoint: max_total.div_ceil(2).max(1),
            state: Arc::default(),
        }
    }

    /// The most requests in flight to one endpoint.
    pub fn max_per_endpoint(&self) -> usize {
        self.max_per_endpoint
    }

    /// Registers a scope's trigger channel; the index is the `scope` of [`ExchangeGate::enter`].
    pub fn add_scope(&self, trigger: UnboundedSender<QueueRef>) -> usize {
        let mut state = self.state.lock().expect("gate lock");
        state.scopes.push(trigger);
        state.scopes.len() - 1
    }

    /// A pass for a request to `endpoint`, or `None` when there is no room: then `client` is
    /// queued and its scope's controller is triggered once there is.
    pub fn enter(&self, endpoint: &str, scope: usize, client: &QueueRef) -> Option<Pass> {
        let who = Waiter {
            scope,
            client: client.clone(),
        };
        let mut state = self.state.lock().expect("gate lock");
        state.expire_holds(Instant::now());
        let entry = state.endpoints.entry(endpoint.into()).or_default();
        let held_here = entry.held.iter().position(|(w, _)| *w == who);
        let room = match held_here {
            Some(i) => {
                entry.held.swap_remove(i);
                true
            }
            None => {
                let endpoint_busy = entry.in_flight + entry.held.len();
                endpoint_busy < self.max_per_endpoint
                    && state.in_flight + state.held() < self.max_total
            }
        };
        if room {
            state.in_flight += 1;
            state
                .endpoints
                .get_mut(endpoint)
                .expect("entry made above")
                .in_flight += 1;
            state.waiting.retain(|(_, w)| *w != who);
            return Some(Pass {
                endpoint: endpoint.into(),
                state: self.state.clone(),
                max_total: self.max_total,
                max_per_endpoint: self.max_per_endpoint,
            });
        }
        if !state.waiting.iter().any(|(_, w)| *w == who) {
            state.waiting.push_back((endpoint.into(), who));
        }
        None
    }

    /// Forgets a client that no longer exists.
    pub fn forget(&self, scope: usize, client: &QueueRef) {
        let mut state = self.state.lock().expect("gate lock");
        state
            .waiting
            .retain(|(_, w)| !(w.scope == scope && w.client == *client));
    }

    /// (requests in flight, clients waiting): for tests and diagnostics.
    pub fn load(&self) -> (usize, usize) {
        let state = self.state.lock().expect("gate lock");
        (state.in_flight, state.waiting.len())
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut state = self.state.lock().expect("gate lock");
        state.in_flight = state.in_flight.saturating_sub(1);
        if let Some(entry) = state.endpoints.get_mut(&self.endpoint) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
        }
        let now = Instant::now();
        state.expire_holds(now);
        // Wake the first waiter whose endpoint has room, and hold the place for it.
        if state.in_flight + state.held() < self.max_total {
            let max = self.max_per_endpoint;
            let found = state.waiting.iter().position(|(endpoint, _)| {
                state
                    .endpoints
                    .get(endpoint)
                    .is_none_or(|e| e.in_flight + e.held.len() < max)
            });
            if let Some(i) = found {
                let (endpoint, who) = state.waiting.remove(i).expect("index from position");
                if let Some(trigger) = state.scopes.get(who.scope) {
                    let _ = trigger.send(who.client.clone());
                }
                state
                    .endpoints
                    .entry(endpoint)
                    .or_default()
                    .held
                    .push((who, now + HOLD));
            }
        }
        // Entries without traffic are dropped, so that the map follows the endpoints in use.
        state
            .endpoints
            .retain(|_, e| e.in_flight > 0 || !e.held.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> QueueRef {
        ObjectRef::new(name).within("ns")
    }

    #[test]
    fn a_busy_endpoint_queues_its_clients_and_leaves_room_for_others() {
        let gate = ExchangeGate::new(4);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let scope = gate.add_scope(tx);
        assert_eq!(gate.max_per_endpoint(), 2);
        let a = gate.enter("slow:443", scope, &client("a")).unwrap();
        let _b = gate.enter("slow:443", scope, &client("b")).unwrap();
        assert!(gate.enter("slow:443", scope, &client("c")).is_none());
        assert!(gate.enter("slow:443", scope, &client("c")).is_none());
        assert_eq!(gate.load(), (2, 1), "c is queued once");
        // Another endpoint still has room.
        let _d = gate.enter("fast:443", scope, &client("d")).unwrap();
        let _e = gate.enter("fast:443", scope, &client("e")).unwrap();
        // The total is used up now: even a third endpoint waits.
        assert!(gate.enter("other:443", scope, &client("f")).is_none());
        assert!(rx.try_recv().is_err(), "nobody woken yet");
        drop(a);
        // The first waiter whose endpoint has room is woken: c (slow has room again).
        assert_eq!(rx.try_recv().unwrap(), client("c"));
        // The place is held for c: f cannot take it.
        assert!(gate.enter("other:443", scope, &client("f")).is_none());
        let _c = gate.enter("slow:443", scope, &client("c")).unwrap();
        assert_eq!(gate.load(), (4, 1));
    }

    #[test]
    fn forgotten_clients_are_not_woken() {
        let gate = ExchangeGate::new(1);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let scope = gate.add_scope(tx);
        let a = gate.enter("x:443", scope, &client("a")).unwrap();
        assert!(gate.enter("x:443", scope, &client("b")).is_none());
        gate.forget(scope, &client("b"));
        drop(a);
        assert!(rx.try_recv().is_err());
        assert_eq!(gate.load(), (0, 0));
    }
}
