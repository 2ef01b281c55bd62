//! The exchange gate: the controller's side of the exchange scheduler
//! ([`crate::decide::scheduling`], which decides who may send a token request and who is next).
//!
//! A reconcile that wants to exchange asks for a [`Pass`] ([`ExchangeGate::enter`]): it gets one
//! at once, or its client is queued and the reconcile returns without waiting (it never holds
//! one of the controller's reconcile slots). When a place is reserved for a queued client, the
//! gate triggers its reconcile through its scope's trigger channel; that reconcile asks again
//! and takes the place. A pass gives its place back when dropped. A ticker moves requests that
//! have had no answer for [`STALL`] out of the budget and lets lapsed reservations go.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc::UnboundedSender;

use crate::api::crd::OAuthClient;
pub use crate::decide::scheduling::{Load, STALL};
use crate::decide::scheduling::{RequestId, Scheduler};

/// A reference in a scope's controller queue.
pub type QueueRef = ObjectRef<PartialObjectMeta<OAuthClient>>;

/// The ticker's longest sleep.
const TICK: Duration = Duration::from_millis(100);

/// Who is waiting: the scope whose controller must be triggered, and the client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Waiter {
    scope: usize,
    client: QueueRef,
}

#[derive(Debug)]
struct State {
    scheduler: Scheduler<Waiter>,
    scopes: Vec<UnboundedSender<QueueRef>>,
}

impl State {
    /// Triggers the reconciles of the clients a place was reserved for.
    fn wake(&mut self) {
        for who in self.scheduler.take_woken() {
            if let Some(trigger) = self.scopes.get(who.scope) {
                let _ = trigger.send(who.client);
            }
        }
    }
}

/// The gate (see the module documentation).
#[derive(Debug)]
pub struct ExchangeGate {
    state: Arc<Mutex<State>>,
    ticking: AtomicBool,
}

/// The right to send one token request; its place is given back when dropped.
#[derive(Debug)]
pub struct Pass {
    id: RequestId,
    state: Arc<Mutex<State>>,
}

impl ExchangeGate {
    /// A gate with `budget` places (`--max-concurrent-exchanges`, at least one).
    pub fn new(budget: usize) -> Self {
        ExchangeGate {
            state: Arc::new(Mutex::new(State {
                scheduler: Scheduler::new(budget),
                scopes: Vec::new(),
            })),
            ticking: AtomicBool::new(false),
        }
    }

    /// The budget: the most requests in flight to one endpoint, and the most in flight that
    /// have had an answer or been out for less than [`STALL`].
    pub fn budget(&self) -> usize {
        self.lock().scheduler.budget()
    }

    /// Registers a scope's trigger channel; the index is the `scope` of [`ExchangeGate::enter`].
    pub fn add_scope(&self, trigger: UnboundedSender<QueueRef>) -> usize {
        let mut state = self.lock();
        state.scopes.push(trigger);
        state.scopes.len() - 1
    }

    /// A pass for a request of `client` to `endpoint` (`host:port`), or `None`: then `client`
    /// is queued, and its scope's controller is triggered once a place is reserved for it.
    pub fn enter(&self, endpoint: &str, scope: usize, client: &QueueRef) -> Option<Pass> {
        self.start_ticker();
        let who = Waiter {
            scope,
            client: client.clone(),
        };
        let namespace = client.namespace.as_deref().unwrap_or_default();
        let mut state = self.lock();
        let id = state
            .scheduler
            .enter(namespace, endpoint, &who, Instant::now());
        state.wake();
        drop(state);
        id.map(|id| Pass {
            id,
            state: self.state.clone(),
        })
    }

    /// Triggers the reconcile of `client` of `scope` (a detached request is over).
    pub fn wake(&self, scope: usize, client: &QueueRef) {
        if let Some(trigger) = self.lock().scopes.get(scope) {
            let _ = trigger.send(client.clone());
        }
    }

    /// Forgets a client that no longer exists: its place in the queue and any place reserved
    /// for it.
    pub fn forget(&self, scope: usize, client: &QueueRef) {
        let who = Waiter {
            scope,
            client: client.clone(),
        };
        let mut state = self.lock();
        state.scheduler.forget(&who, Instant::now());
        state.wake();
    }

    /// What the scheduler holds now: for tests and diagnostics.
    pub fn load(&self) -> Load {
        self.lock().scheduler.load()
    }

    /// Requests in flight to `endpoint`.
    pub fn in_flight_at(&self, endpoint: &str) -> usize {
        self.lock().scheduler.in_flight_at(endpoint)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("gate lock")
    }

    /// Starts the ticker once, on the runtime of the first request.
    fn start_ticker(&self) {
        if self.ticking.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.ticking.swap(true, Ordering::Relaxed) {
            return;
        }
        runtime.spawn(tick(Arc::downgrade(&self.state)));
    }
}

/// Ticks the scheduler until the gate is gone: at its next change, at least every [`TICK`].
async fn tick(state: Weak<Mutex<State>>) {
    loop {
        let sleep = {
            let Some(state) = state.upgrade() else {
                return;
            };
            let mut state = state.lock().expect("gate lock");
            let now = Instant::now();
            state.scheduler.tick(now);
            state.wake();
            state
                .scheduler
                .next_change()
                .map_or(TICK, |at| at.saturating_duration_since(now).min(TICK))
                .max(Duration::from_millis(5))
        };
        tokio::time::sleep(sleep).await;
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut state = self.state.lock().expect("gate lock");
        state.scheduler.finish(self.id, Instant::now());
        state.wake();
    }
}
