//! The exchange scheduler's pure core: who may send a token request now, and who is woken when
//! a place frees. Time is passed in (`now`); the controller's gate (`controller::gate`) does the
//! waking and the ticking around it.
//!
//! * **Places.** At most `budget` (`--max-concurrent-exchanges`) requests are *active*: sent
//!   less than [`STALL`] ago, or places reserved for woken clients. A request without an answer
//!   after [`STALL`] is *stalled*: it leaves the budget for a separate allowance, at most
//!   [`STALLED_PER_NAMESPACE`] times the budget per namespace and [`STALLED_TOTAL`] times in
//!   all (a stalled request is one idle connection). So endpoints that hang, however many, cost
//!   the other clients a quarter of a second, not a request timeout. When the allowance is used
//!   up, stalled requests stay active, and a namespace whose allowance is used up sends no more
//!   requests to endpoints that have not answered quickly lately.
//! * **Per endpoint, held back by latency.** An endpoint (`host:port`) may have `limit`
//!   requests in flight, active or stalled. The limit starts at the budget, grows by one with
//!   every answer within [`SLOW`] and halves with every answer (or timeout) after it; while one
//!   of its requests has been out for [`SLOW`], it gets no new one. A tarpit drops to one
//!   request at a time; a quick vendor keeps the whole budget.
//! * **Work-conserving.** A client that asks while a place is free and nobody eligible waits
//!   takes it: one endpoint, or one namespace, alone uses the whole budget.
//! * **Fair.** When places are short, clients queue: first come first served per endpoint.
//!   Each place that frees goes round-robin between the namespaces that have a client waiting
//!   whose endpoint has room, then round-robin between that namespace's endpoints, to the
//!   first client of the endpoint; it is reserved for that client (woken through its
//!   controller) for [`HOLD`]. A client of the same namespace and endpoint that asks first may
//!   take the reserved place (so a burst at one endpoint never idles a place while the woken
//!   client goes through the controller's queue); the woken client then goes back to the head
//!   of its endpoint's queue. A namespace or an endpoint therefore gets at most every other
//!   place while another waits, whatever its demand or its number of endpoints.
//! * A client that is gone, or now uses another endpoint, leaves the queue.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A request without an answer for this long leaves the budget (it is stalled).
pub const STALL: Duration = Duration::from_millis(250);

/// An answer later than this halves the endpoint's limit; a request out for this long stops
/// new requests to its endpoint until it ends.
pub const SLOW: Duration = Duration::from_secs(5);

/// An answer within this makes its endpoint proven quick (for [`PROVEN_FOR`]).
pub const QUICK: Duration = Duration::from_secs(1);

/// How long a quick answer counts as proof.
pub const PROVEN_FOR: Duration = Duration::from_secs(60);

/// How long a place is reserved for a woken client.
pub const HOLD: Duration = Duration::from_secs(2);

/// How long an idle endpoint's lowered limit is remembered.
pub const REMEMBER: Duration = Duration::from_secs(600);

/// Stalled requests allowed per namespace, in budgets.
pub const STALLED_PER_NAMESPACE: usize = 8;

/// Stalled requests allowed in all, in budgets.
pub const STALLED_TOTAL: usize = 16;

/// A request in flight, as [`Scheduler::enter`] admitted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

#[derive(Debug)]
struct Request {
    namespace: Box<str>,
    endpoint: Box<str>,
    started: Instant,
    stalled: bool,
    /// The endpoint had not proven quick when it was sent.
    unproven: bool,
}

#[derive(Debug)]
struct Endpoint {
    /// Start times of its requests in flight.
    started: Vec<Instant>,
    limit: usize,
    /// Places reserved at it, by every namespace.
    reserved: usize,
    /// When an answer last came within [`QUICK`].
    quick_at: Option<Instant>,
    last_used: Instant,
}

impl Endpoint {
    fn new(budget: usize, now: Instant) -> Endpoint {
        Endpoint {
            started: Vec::new(),
            limit: budget,
            reserved: 0,
            quick_at: None,
            last_used: now,
        }
    }

    /// Answered within [`QUICK`] lately, and none of its requests out for that long now (an
    /// endpoint that proves quick and then hangs loses the proof within a second).
    fn proven(&self, now: Instant) -> bool {
        self.quick_at
            .is_some_and(|at| now.duration_since(at) < PROVEN_FOR)
            && self.started.iter().all(|t| now.duration_since(*t) < QUICK)
    }

    /// Requests it may have in flight now.
    fn limit_now(&self, now: Instant) -> usize {
        if self.started.iter().any(|t| now.duration_since(*t) >= SLOW) {
            0
        } else {
            self.limit
        }
    }
}

/// Requests in flight, by kind: of one namespace, or of all.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    active: usize,
    stalled: usize,
    /// Active requests to endpoints that had not proven quick.
    active_unproven: usize,
}

impl Counts {
    fn start(&mut self, unproven: bool) {
        self.active += 1;
        self.active_unproven += usize::from(unproven);
    }

    fn stall(&mut self, unproven: bool) {
        self.active -= 1;
        self.active_unproven -= usize::from(unproven);
        self.stalled += 1;
    }

    fn end(&mut self, request: &Request) {
        if request.stalled {
            self.stalled -= 1;
        } else {
            self.active -= 1;
            self.active_unproven -= usize::from(request.unproven);
        }
    }

    /// Stalled requests and those that may stall (to endpoints not proven quick).
    fn may_stall(&self) -> usize {
        self.stalled + self.active_unproven
    }
}

/// The clients queued at one endpoint of one namespace, first come first served.
#[derive(Debug)]
struct Queue<W> {
    waiters: VecDeque<W>,
    /// How many of them hold a reserved place.
    reserved: usize,
}

#[derive(Debug)]
struct Namespace<W> {
    counts: Counts,
    /// Places reserved for its clients.
    reserved: usize,
    /// Endpoints with waiters, in round-robin order.
    turn: VecDeque<Box<str>>,
    queues: HashMap<Box<str>, Queue<W>>,
}

impl<W> Default for Namespace<W> {
    fn default() -> Self {
        Namespace {
            counts: Counts::default(),
            reserved: 0,
            turn: VecDeque::new(),
            queues: HashMap::new(),
        }
    }
}

impl<W> Namespace<W> {
    fn idle(&self) -> bool {
        self.counts.active == 0 && self.counts.stalled == 0 && self.queues.is_empty()
    }
}

/// Where a client is queued, and until when a place is reserved for it.
#[derive(Clone, Debug)]
struct Place {
    namespace: Box<str>,
    endpoint: Box<str>,
    reserved_until: Option<Instant>,
}

/// The scheduler (see the module documentation). `W` names a waiting client.
#[derive(Debug)]
pub struct Scheduler<W> {
    budget: usize,
    next_id: u64,
    requests: HashMap<RequestId, Request>,
    endpoints: HashMap<Box<str>, Endpoint>,
    namespaces: HashMap<Box<str>, Namespace<W>>,
    /// Namespaces with waiters, in round-robin order.
    turn: VecDeque<Box<str>>,
    waiting: HashMap<W, Place>,
    /// Reservations in the order they lapse.
    lapses: VecDeque<(Instant, W)>,
    /// Clients given a reserved place since [`Scheduler::take_woken`] was last called.
    woken: Vec<W>,
    counts: Counts,
    reserved: usize,
    forgotten_at: Option<Instant>,
}

/// What the scheduler holds, for tests, diagnostics and benches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Requests in the budget.
    pub active: usize,
    /// Requests out of it.
    pub stalled: usize,
    /// Places reserved for woken clients.
    pub reserved: usize,
    /// Clients queued (woken ones included).
    pub waiting: usize,
}

impl<W: Clone + Eq + Hash> Scheduler<W> {
    /// A scheduler with `budget` places (at least one).
    pub fn new(budget: usize) -> Self {
        Scheduler {
            budget: budget.max(1),
            next_id: 0,
            requests: HashMap::new(),
            endpoints: HashMap::new(),
            namespaces: HashMap::new(),
            turn: VecDeque::new(),
            waiting: HashMap::new(),
            lapses: VecDeque::new(),
            woken: Vec::new(),
            counts: Counts::default(),
            reserved: 0,
            forgotten_at: None,
        }
    }

    /// The budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// What it holds now.
    pub fn load(&self) -> Load {
        Load {
            active: self.counts.active,
            stalled: self.counts.stalled,
            reserved: self.reserved,
            waiting: self.waiting.len(),
        }
    }

    /// Requests in flight to `endpoint`.
    pub fn in_flight_at(&self, endpoint: &str) -> usize {
        self.endpoints.get(endpoint).map_or(0, |e| e.started.len())
    }

    /// The clients a place was reserved for since the last call: to be woken.
    pub fn take_woken(&mut self) -> Vec<W> {
        std::mem::take(&mut self.woken)
    }

    /// `who` asks for a place for a request of `namespace` to `endpoint`: admitted, or queued
    /// (then it is among [`Scheduler::take_woken`] once a place is reserved for it).
    pub fn enter(
        &mut self,
        namespace: &str,
        endpoint: &str,
        who: &W,
        now: Instant,
    ) -> Option<RequestId> {
        // Queued elsewhere (its endpoint changed): it leaves that queue.
        if let Some(place) = self.waiting.get(who)
            && (&*place.namespace != namespace || &*place.endpoint != endpoint)
        {
            self.remove_waiter(who);
        }
        // Places that free up by themselves go to the waiters first.
        self.tick(now);
        let queued = self.waiting.get(who).map(|p| p.reserved_until.is_some());
        let admitted = match queued {
            // Its reserved place, unless its endpoint closed meanwhile (a request out for SLOW):
            // then it waits again, at the head of its queue.
            Some(true) if self.closed(endpoint, now) => {
                self.unreserve(who);
                false
            }
            Some(true) => true,
            _ if self.free() > 0 => self.eligible(namespace, endpoint, now, 0),
            // The place reserved for another woken client of this namespace and endpoint.
            _ => self.eligible(namespace, endpoint, now, 1) && self.steal(namespace, endpoint, who),
        };
        if admitted {
            if queued.is_some() {
                self.remove_waiter(who);
            }
            let id = self.start(namespace, endpoint, now);
            self.reserve(now);
            Some(id)
        } else {
            if queued.is_none() {
                self.queue(namespace, endpoint, who.clone());
            }
            self.reserve(now);
            None
        }
    }

    /// The request `id` is over (answered, failed or abandoned).
    pub fn finish(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.remove(&id) else {
            return;
        };
        if let Some(ns) = self.namespaces.get_mut(&request.namespace) {
            ns.counts.end(&request);
        }
        self.counts.end(&request);
        let budget = self.budget;
        if let Some(endpoint) = self.endpoints.get_mut(&request.endpoint) {
            if let Some(i) = endpoint.started.iter().position(|t| *t == request.started) {
                endpoint.started.swap_remove(i);
            }
            let took = now.duration_since(request.started);
            if took < SLOW {
                endpoint.limit = (endpoint.limit + 1).min(budget);
            } else {
                endpoint.limit = (endpoint.limit / 2).max(1);
            }
            if took < QUICK {
                endpoint.quick_at = Some(now);
            }
            endpoint.last_used = now;
        }
        self.drop_idle_namespace(&request.namespace);
        self.tick(now);
    }

    /// Forgets `who`: its place in the queue and any place reserved for it.
    pub fn forget(&mut self, who: &W, now: Instant) {
        if self.waiting.contains_key(who) {
            self.remove_waiter(who);
            self.reserve(now);
        }
    }

    /// Moves requests out for [`STALL`] out of the budget (while the allowance lasts), drops
    /// the clients whose reservation lapsed (a client that comes back later queues again),
    /// forgets idle endpoints, and reserves the free places for waiters.
    pub fn tick(&mut self, now: Instant) {
        let per_namespace = self.budget * STALLED_PER_NAMESPACE;
        let total = self.budget * STALLED_TOTAL;
        for request in self.requests.values_mut() {
            if request.stalled || now.duration_since(request.started) < STALL {
                continue;
            }
            let Some(ns) = self.namespaces.get_mut(&request.namespace) else {
                continue;
            };
            if ns.counts.stalled >= per_namespace || self.counts.stalled >= total {
                continue;
            }
            request.stalled = true;
            ns.counts.stall(request.unproven);
            self.counts.stall(request.unproven);
        }
        while let Some((until, _)) = self.lapses.front()
            && *until <= now
        {
            let (until, who) = self.lapses.pop_front().expect("front exists");
            if self
                .waiting
                .get(&who)
                .is_some_and(|p| p.reserved_until == Some(until))
            {
                self.remove_waiter(&who);
            }
        }
        // After a burst: the queue's memory back (a burst of 10,000 clients leaves maps sized
        // for thousands of waiters otherwise).
        if self.waiting.is_empty() {
            self.lapses.clear();
            if self.waiting.capacity() > 64 {
                self.waiting.shrink_to_fit();
                self.lapses.shrink_to_fit();
                self.turn.shrink_to_fit();
            }
        }
        // Idle endpoints, now and then: their lowered limit is kept for a while.
        if self
            .forgotten_at
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10))
        {
            self.forgotten_at = Some(now);
            let budget = self.budget;
            let queued: std::collections::HashSet<&str> =
                self.waiting.values().map(|p| &*p.endpoint).collect();
            self.endpoints.retain(|name, e| {
                !e.started.is_empty()
                    || queued.contains(&**name)
                    || (e.limit < budget && now.duration_since(e.last_used) < REMEMBER)
                    || e.proven(now)
            });
        }
        self.reserve(now);
    }

    /// The instant of the next change [`Scheduler::tick`] makes by itself (a request stalls or
    /// a reservation lapses), if any.
    pub fn next_change(&self) -> Option<Instant> {
        let stall = self
            .requests
            .values()
            .filter(|r| !r.stalled)
            .map(|r| r.started + STALL)
            .min();
        let lapse = self.lapses.front().map(|(until, _)| *until);
        stall.into_iter().chain(lapse).min()
    }

    /// Reserves the free places for waiting clients, round-robin between namespaces, then
    /// between a namespace's endpoints, first come first served within an endpoint.
    fn reserve(&mut self, now: Instant) {
        let mut passes_without_pick = 0;
        while self.free() > 0 && passes_without_pick < self.turn.len() {
            let Some(namespace) = self.turn.pop_front() else {
                break;
            };
            self.turn.push_back(namespace.clone());
            if self.pick(&namespace, now) {
                passes_without_pick = 0;
            } else {
                passes_without_pick += 1;
            }
        }
    }

    /// Places neither in use nor reserved.
    fn free(&self) -> usize {
        self.budget
            .saturating_sub(self.counts.active + self.reserved)
    }

    /// Whether a request of `namespace` to `endpoint` may be sent now, the budget aside: the
    /// endpoint's limit (places reserved at it included), and for an endpoint not proven
    /// quick, the stalled allowance.
    /// `taken`: places reserved at the endpoint that the request would take (not counted).
    fn eligible(&self, namespace: &str, endpoint: &str, now: Instant, taken: usize) -> bool {
        let (in_flight, limit, proven) = match self.endpoints.get(endpoint) {
            Some(e) => (e.started.len(), e.limit_now(now), e.proven(now)),
            None => (0, self.budget, false),
        };
        let reserved = self.endpoints.get(endpoint).map_or(0, |e| e.reserved);
        if in_flight + reserved.saturating_sub(taken) >= limit {
            return false;
        }
        if proven {
            return true;
        }
        // Requests that may stall, the places reserved for more included.
        let in_namespace = self
            .namespaces
            .get(namespace)
            .map_or(0, |ns| ns.counts.may_stall() + ns.reserved);
        in_namespace.saturating_sub(taken) < self.budget * STALLED_PER_NAMESPACE
            && self.counts.may_stall() + self.reserved.saturating_sub(taken)
                < self.budget * STALLED_TOTAL
    }

    /// Whether `endpoint` takes no request now (one of its requests is out for [`SLOW`]).
    fn closed(&self, endpoint: &str, now: Instant) -> bool {
        self.endpoints
            .get(endpoint)
            .is_some_and(|e| e.limit_now(now) == 0)
    }

    /// Lets the place reserved for `who` go; it stays queued, at the head of its queue.
    fn unreserve(&mut self, who: &W) {
        let Some(place) = self.waiting.get_mut(who) else {
            return;
        };
        if place.reserved_until.take().is_none() {
            return;
        }
        let (namespace, endpoint) = (place.namespace.clone(), place.endpoint.clone());
        self.count_reservation(&namespace, &endpoint, false);
        if let Some(queue) = self
            .namespaces
            .get_mut(&namespace)
            .and_then(|ns| ns.queues.get_mut(&endpoint))
        {
            queue.reserved -= 1;
            if let Some(i) = queue.waiters.iter().position(|w| w == who) {
                let w = queue.waiters.remove(i).expect("index from position");
                queue.waiters.push_front(w);
            }
        }
    }

    /// Takes the place reserved for another woken client of `namespace` at `endpoint` (the
    /// first found from the head, where the woken ones are); that client goes back to the head
    /// of the queue, and is woken again with the next place.
    fn steal(&mut self, namespace: &str, endpoint: &str, who: &W) -> bool {
        let Some(queue) = self
            .namespaces
            .get_mut(namespace)
            .and_then(|ns| ns.queues.get_mut(endpoint))
        else {
            return false;
        };
        if queue.reserved == 0 {
            return false;
        }
        let waiting = &mut self.waiting;
        let Some(i) = queue
            .waiters
            .iter()
            .position(|w| w != who && waiting.get(w).is_some_and(|p| p.reserved_until.is_some()))
        else {
            return false;
        };
        let robbed = queue.waiters.remove(i).expect("index from position");
        if let Some(place) = waiting.get_mut(&robbed) {
            place.reserved_until = None;
        }
        queue.waiters.push_front(robbed);
        queue.reserved -= 1;
        self.count_reservation(namespace, endpoint, false);
        true
    }

    /// Reserves a place for the next client of `namespace` (its endpoints round-robin);
    /// whether there was one.
    fn pick(&mut self, namespace: &str, now: Instant) -> bool {
        let Some(ns) = self.namespaces.get(namespace) else {
            return false;
        };
        let Some(endpoint) = ns
            .turn
            .iter()
            .find(|e| {
                self.eligible(namespace, e, now, 0)
                    && ns
                        .queues
                        .get(&***e)
                        .is_some_and(|q| q.waiters.len() > q.reserved)
            })
            .cloned()
        else {
            return false;
        };
        let ns = self.namespaces.get_mut(namespace).expect("looked up above");
        let queue = ns
            .queues
            .get_mut(&endpoint)
            .expect("an endpoint in turn has a queue");
        let waiting = &mut self.waiting;
        let Some(who) = queue
            .waiters
            .iter()
            .find(|w| waiting.get(*w).is_some_and(|p| p.reserved_until.is_none()))
            .cloned()
        else {
            return false;
        };
        let until = now + HOLD;
        if let Some(place) = waiting.get_mut(&who) {
            place.reserved_until = Some(until);
        }
        queue.reserved += 1;
        // This endpoint goes to the back of the namespace's turn.
        if let Some(i) = ns.turn.iter().position(|e| *e == endpoint) {
            let e = ns.turn.remove(i).expect("index from position");
            ns.turn.push_back(e);
        }
        let budget = self.budget;
        self.endpoints
            .entry(endpoint.clone())
            .or_insert_with(|| Endpoint::new(budget, now));
        self.count_reservation(namespace, &endpoint, true);
        self.lapses.push_back((until, who.clone()));
        self.woken.push(who);
        true
    }

    fn start(&mut self, namespace: &str, endpoint: &str, now: Instant) -> RequestId {
        let budget = self.budget;
        let entry = self
            .endpoints
            .entry(endpoint.into())
            .or_insert_with(|| Endpoint::new(budget, now));
        let unproven = !entry.proven(now);
        entry.started.push(now);
        entry.last_used = now;
        let ns = self.namespaces.entry(namespace.into()).or_default();
        ns.counts.start(unproven);
        self.counts.start(unproven);
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.requests.insert(
            id,
            Request {
                namespace: namespace.into(),
                endpoint: endpoint.into(),
                started: now,
                stalled: false,
                unproven,
            },
        );
        id
    }

    fn queue(&mut self, namespace: &str, endpoint: &str, who: W) {
        let ns = self.namespaces.entry(namespace.into()).or_default();
        if ns.queues.is_empty() {
            self.turn.push_back(namespace.into());
        }
        let queue = ns.queues.entry(endpoint.into()).or_insert_with(|| {
            ns.turn.push_back(endpoint.into());
            Queue {
                waiters: VecDeque::new(),
                reserved: 0,
            }
        });
        queue.waiters.push_back(who.clone());
        self.waiting.insert(
            who,
            Place {
                namespace: namespace.into(),
                endpoint: endpoint.into(),
                reserved_until: None,
            },
        );
    }

    fn remove_waiter(&mut self, who: &W) {
        let Some(place) = self.waiting.remove(who) else {
            return;
        };
        let namespace = &*place.namespace;
        let endpoint = &*place.endpoint;
        if place.reserved_until.is_some() {
            self.count_reservation(namespace, endpoint, false);
        }
        let Some(ns) = self.namespaces.get_mut(namespace) else {
            return;
        };
        let Some(queue) = ns.queues.get_mut(endpoint) else {
            return;
        };
        if let Some(i) = queue.waiters.iter().position(|w| w == who) {
            queue.waiters.remove(i);
        }
        if place.reserved_until.is_some() {
            queue.reserved -= 1;
        }
        if queue.waiters.is_empty() {
            ns.queues.remove(endpoint);
            ns.turn.retain(|e| &**e != endpoint);
            if ns.queues.is_empty() {
                self.turn.retain(|n| &**n != namespace);
            }
        }
        self.drop_idle_namespace(namespace);
    }

    /// Counts a place reserved (`made`) or let go at `namespace` / `endpoint`: in all, for the
    /// namespace and for the endpoint.
    fn count_reservation(&mut self, namespace: &str, endpoint: &str, made: bool) {
        let adjust = |n: &mut usize| {
            if made {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
            }
        };
        adjust(&mut self.reserved);
        if let Some(ns) = self.namespaces.get_mut(namespace) {
            adjust(&mut ns.reserved);
        }
        if let Some(e) = self.endpoints.get_mut(endpoint) {
            adjust(&mut e.reserved);
        }
    }

    fn drop_idle_namespace(&mut self, namespace: &str) {
        if self.namespaces.get(namespace).is_some_and(Namespace::idle) {
            self.namespaces.remove(namespace);
        }
    }
}

#[cfg(test)]
mod tests;
