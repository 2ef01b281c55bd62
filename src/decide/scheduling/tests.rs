//! The scheduler's rules, with an injected clock: places, fairness, latency, the queue.

use super::*;

/// A client: (namespace, name).
type Who = (String, String);

fn who(namespace: &str, name: &str) -> Who {
    (namespace.to_owned(), name.to_owned())
}

/// A simulation: clients ask for places, woken clients come back at once, each endpoint answers
/// after a fixed time (or never: a tarpit, until the 10 s request timeout).
struct Sim {
    s: Scheduler<Who>,
    start: Instant,
    now: Instant,
    /// Per endpoint, how long it takes to answer (`None`: it never does).
    latency: HashMap<String, Option<Duration>>,
    /// Requests in flight: (id, endpoint, client, when it ends).
    flying: Vec<(RequestId, String, Who, Instant)>,
    /// Clients not admitted yet, with their endpoint.
    asking: HashMap<Who, String>,
    /// When each client was admitted.
    admitted: HashMap<Who, Instant>,
    /// The most requests in flight seen at each endpoint.
    peak: HashMap<String, usize>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl Sim {
    fn new(budget: usize) -> Sim {
        let start = Instant::now();
        Sim {
            s: Scheduler::new(budget),
            start,
            now: start,
            latency: HashMap::new(),
            flying: Vec::new(),
            asking: HashMap::new(),
            admitted: HashMap::new(),
            peak: HashMap::new(),
        }
    }

    fn endpoint(&mut self, name: &str, latency: Option<Duration>) {
        self.latency.insert(name.to_owned(), latency);
    }

    /// `who` asks for a place at `endpoint`.
    fn ask(&mut self, who: Who, endpoint: &str) -> bool {
        let id = self.s.enter(&who.0, endpoint, &who, self.now);
        self.after(&who, endpoint, id)
    }

    fn after(&mut self, who: &Who, endpoint: &str, id: Option<RequestId>) -> bool {
        match id {
            Some(id) => {
                let took = self.latency[endpoint].unwrap_or(TIMEOUT);
                self.flying
                    .push((id, endpoint.to_owned(), who.clone(), self.now + took));
                self.asking.remove(who);
                self.admitted.insert(who.clone(), self.now);
                let n = self.s.in_flight_at(endpoint);
                let peak = self.peak.entry(endpoint.to_owned()).or_default();
                *peak = (*peak).max(n);
                true
            }
            None => {
                self.asking.insert(who.clone(), endpoint.to_owned());
                false
            }
        }
    }

    /// The woken clients come back (each asks again).
    fn come_back(&mut self) {
        loop {
            let woken = self.s.take_woken();
            if woken.is_empty() {
                return;
            }
            for who in woken {
                if let Some(endpoint) = self.asking.get(&who).cloned() {
                    self.ask(who, &endpoint);
                }
            }
        }
    }

    /// Advances the clock by `step`, ending the requests due, ticking, and letting the woken
    /// clients come back.
    fn advance(&mut self, step: Duration) {
        self.now += step;
        let now = self.now;
        let (done, left): (Vec<_>, Vec<_>) = self.flying.drain(..).partition(|f| f.3 <= now);
        self.flying = left;
        for (id, ..) in done {
            self.s.finish(id, now);
        }
        self.s.tick(now);
        self.come_back();
    }

    fn run_for(&mut self, total: Duration, step: Duration) {
        let end = self.now + total;
        while self.now < end {
            self.advance(step);
        }
    }

    fn since_start(&self, who: &Who) -> Option<Duration> {
        self.admitted
            .get(who)
            .map(|at| at.duration_since(self.start))
    }
}

/// One endpoint, 600 clients waiting: the whole budget is in flight all along (work-conserving:
/// a quarter before issue 23), and every client is served first come first served.
#[test]
fn one_endpoint_with_600_waiting_clients_uses_the_whole_budget() {
    let mut sim = Sim::new(32);
    sim.endpoint("vendor:443", Some(Duration::from_millis(50)));
    for i in 0..600 {
        sim.ask(who("ns", &format!("c{i:03}")), "vendor:443");
    }
    assert_eq!(sim.s.in_flight_at("vendor:443"), 32);
    let mut low = usize::MAX;
    while !sim.asking.is_empty() {
        sim.advance(Duration::from_millis(10));
        if !sim.asking.is_empty() {
            low = low.min(sim.s.in_flight_at("vendor:443"));
        }
        assert!(sim.now.duration_since(sim.start) < Duration::from_secs(10));
    }
    assert!(
        low >= 29,
        "at least 90% of 32 in flight while clients wait: {low}"
    );
    // First come first served.
    let order: Vec<Instant> = (0..600)
        .map(|i| sim.admitted[&who("ns", &format!("c{i:03}"))])
        .collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]));
}

/// A tarpit's requests leave the budget after [`STALL`]: a client of another namespace, and a
/// client of another endpoint in the tarpit's own namespace, get a place a quarter of a second
/// later, not a request timeout later.
#[test]
fn requests_to_a_tarpit_leave_the_budget_once_stalled() {
    let mut sim = Sim::new(32);
    sim.endpoint("tarpit:443", None);
    sim.endpoint("healthy:443", Some(Duration::from_millis(5)));
    for i in 0..200 {
        sim.ask(who("evil", &format!("t{i}")), "tarpit:443");
    }
    assert_eq!(sim.s.load().active, 32);
    assert!(!sim.ask(who("other", "h"), "healthy:443"));
    assert!(!sim.ask(who("evil", "h"), "healthy:443"));
    sim.run_for(STALL + Duration::from_millis(50), Duration::from_millis(50));
    assert!(sim.since_start(&who("other", "h")).unwrap() <= STALL + Duration::from_millis(50));
    assert!(sim.since_start(&who("evil", "h")).unwrap() <= STALL + Duration::from_millis(50));
    // The tarpit never gets more than the budget in flight; once its requests are out for
    // SLOW, none more, and after their timeouts its limit is down to a few.
    sim.run_for(Duration::from_secs(12), Duration::from_millis(50));
    assert_eq!(sim.peak["tarpit:443"], 32);
    sim.run_for(Duration::from_secs(30), Duration::from_millis(100));
    assert!(
        sim.s.in_flight_at("tarpit:443") <= 2,
        "{}",
        sim.s.in_flight_at("tarpit:443")
    );
}

/// The review's attack: 200 tarpit clients of one namespace spread over 200 endpoints. A
/// client of another namespace is served within a quarter of a second, and 20 clients of a
/// healthy endpoint in the tarpits' own namespace, queued behind all 200, within 2 s.
#[test]
fn tarpits_spread_over_200_endpoints_delay_others_by_a_stall_at_most() {
    let mut sim = Sim::new(32);
    for i in 0..200 {
        let endpoint = format!("127.0.0.1:{}", 20000 + i);
        sim.endpoint(&endpoint, None);
        sim.ask(who("evil", &format!("t{i}")), &endpoint);
    }
    sim.endpoint("127.0.0.1:8443", Some(Duration::from_millis(5)));
    sim.advance(Duration::from_millis(10));
    assert!(!sim.ask(who("other", "h"), "127.0.0.1:8443"));
    for i in 0..20 {
        sim.ask(who("evil", &format!("h{i}")), "127.0.0.1:8443");
    }
    sim.run_for(Duration::from_secs(3), Duration::from_millis(50));
    let other = sim.since_start(&who("other", "h")).unwrap();
    assert!(other <= Duration::from_millis(350), "{other:?}");
    for i in 0..20 {
        let took = sim.since_start(&who("evil", &format!("h{i}"))).unwrap();
        assert!(took <= Duration::from_secs(2), "h{i}: {took:?}");
    }
    // Every tarpit got its one request out: 200 stalled requests, within the allowance.
    assert_eq!(sim.s.load().stalled, 200);
}

/// Two namespaces with 10:1 demand at one endpoint: while both wait, each gets at least a
/// third of the places handed out.
#[test]
fn two_namespaces_with_ten_to_one_demand_both_progress() {
    let mut sim = Sim::new(32);
    sim.endpoint("vendor:443", Some(Duration::from_millis(200)));
    for i in 0..1000 {
        sim.ask(who("big", &format!("b{i}")), "vendor:443");
        if i % 10 == 0 {
            sim.ask(who("small", &format!("s{i}")), "vendor:443");
        }
    }
    let before: HashMap<&str, usize> = [("big", 0), ("small", 0)].into();
    let _ = before;
    let count = |sim: &Sim, ns: &str| sim.admitted.keys().filter(|w| w.0 == ns).count();
    let (big0, small0) = (count(&sim, "big"), count(&sim, "small"));
    // While both wait.
    while sim.asking.keys().any(|w| w.0 == "small") {
        sim.advance(Duration::from_millis(10));
    }
    let big = count(&sim, "big") - big0;
    let small = count(&sim, "small") - small0;
    let third = (big + small) / 3;
    assert!(small >= third && big >= third, "big {big}, small {small}");
}

/// Round-robin between a namespace's endpoints: one endpoint with many waiters does not keep
/// another of the same namespace waiting.
#[test]
fn endpoints_of_one_namespace_take_turns() {
    let mut sim = Sim::new(4);
    sim.endpoint("a:443", Some(Duration::from_millis(100)));
    sim.endpoint("b:443", Some(Duration::from_millis(100)));
    for i in 0..100 {
        sim.ask(who("ns", &format!("a{i}")), "a:443");
    }
    for i in 0..4 {
        sim.ask(who("ns", &format!("b{i}")), "b:443");
    }
    sim.run_for(Duration::from_millis(250), Duration::from_millis(10));
    let b = (0..4)
        .filter(|i| sim.admitted.contains_key(&who("ns", &format!("b{i}"))))
        .count();
    assert_eq!(b, 4, "b's clients had every other place");
}

/// An endpoint's limit: halved by each answer slower than SLOW, no new request while one is
/// out for SLOW, and grown back by quick answers.
#[test]
fn an_endpoints_limit_follows_its_latency() {
    let mut s: Scheduler<u32> = Scheduler::new(8);
    let t0 = Instant::now();
    let ids: Vec<RequestId> = (0..8)
        .map(|i| s.enter("ns", "slow:443", &i, t0).unwrap())
        .collect();
    let later = t0 + SLOW;
    assert!(
        s.enter("ns", "slow:443", &100, later).is_none(),
        "a request is out for SLOW"
    );
    s.forget(&100, later);
    for id in ids {
        s.finish(id, later);
    }
    // 8 halved 8 times: 1.
    let a = s.enter("ns", "slow:443", &200, later).unwrap();
    assert!(
        s.enter("ns", "slow:443", &201, later).is_none(),
        "one at a time"
    );
    // A quick answer: two.
    let t = later + Duration::from_millis(10);
    s.finish(a, t);
    assert!(s.take_woken().contains(&201));
    let b = s.enter("ns", "slow:443", &201, t).unwrap();
    let c = s.enter("ns", "slow:443", &202, t).unwrap();
    assert!(s.enter("ns", "slow:443", &203, t).is_none());
    s.finish(b, t);
    s.finish(c, t);
    assert_eq!(s.in_flight_at("slow:443"), 0);
}

/// The stalled allowance: a namespace with 8 budgets of stalled requests sends no more requests
/// to endpoints that have not proven quick; proven ones and other namespaces go on.
#[test]
fn a_namespace_out_of_stalled_allowance_only_uses_proven_endpoints() {
    let mut s: Scheduler<String> = Scheduler::new(2);
    let t0 = Instant::now();
    // A proven endpoint.
    let q = s.enter("evil", "quick:443", &"q0".to_owned(), t0).unwrap();
    s.finish(q, t0 + Duration::from_millis(5));
    let mut t = t0 + Duration::from_millis(10);
    for i in 0..16 {
        let id = s.enter("evil", &format!("t{i}:443"), &format!("t{i}"), t);
        assert!(id.is_some(), "t{i}");
        t += STALL;
        s.tick(t);
    }
    assert_eq!(s.load().stalled, 16);
    assert!(s.enter("evil", "t16:443", &"t16".to_owned(), t).is_none());
    assert!(s.enter("evil", "quick:443", &"q1".to_owned(), t).is_some());
    assert!(s.enter("good", "t17:443", &"g".to_owned(), t).is_some());
}

#[test]
fn a_client_that_is_gone_or_moved_leaves_the_queue() {
    let mut s: Scheduler<u32> = Scheduler::new(1);
    let t = Instant::now();
    let a = s.enter("ns", "x:443", &1, t).unwrap();
    assert!(s.enter("ns", "x:443", &2, t).is_none());
    assert!(s.enter("ns", "x:443", &3, t).is_none());
    assert!(s.enter("ns", "x:443", &4, t).is_none());
    s.forget(&2, t);
    // 3 now uses another endpoint: it leaves x's queue (and waits at y's).
    assert!(s.enter("ns", "y:443", &3, t).is_none());
    assert_eq!(s.load().waiting, 2);
    s.finish(a, t);
    // y has had its waiter longer than... round-robin: x's turn came first.
    let woken = s.take_woken();
    assert_eq!(woken.len(), 1);
    assert!(woken == vec![4] || woken == vec![3]);
    assert!(!woken.contains(&2));
}

/// One place, 1 in flight and 2, 3 waiting; 1 ends: the place is reserved for 2, woken.
fn two_waiting_and_a_place_reserved_for_the_first() -> (Scheduler<u32>, Instant) {
    let mut s: Scheduler<u32> = Scheduler::new(1);
    let t = Instant::now();
    let a = s.enter("ns", "x:443", &1, t).unwrap();
    assert!(s.enter("ns", "x:443", &2, t).is_none());
    assert!(s.enter("ns", "x:443", &3, t).is_none());
    s.finish(a, t);
    assert_eq!(s.take_woken(), vec![2]);
    (s, t)
}

/// A reserved place waits for its client for HOLD; then the client is dropped from the queue
/// and the place goes to the next.
#[test]
fn a_lapsed_reservation_goes_to_the_next_waiter() {
    let (mut s, t) = two_waiting_and_a_place_reserved_for_the_first();
    // Another namespace's newcomer cannot take it.
    assert!(s.enter("other", "x:443", &9, t).is_none());
    s.tick(t + HOLD);
    assert_eq!(s.take_woken(), vec![3]);
    assert_eq!(s.load().waiting, 2, "3 (reserved) and 9; 2 is dropped");
    assert!(s.enter("ns", "x:443", &3, t + HOLD).is_some());
}

/// A newcomer of the same namespace and endpoint may take a place reserved for a woken client
/// (no place idles during a burst); the woken client keeps the head of the queue.
#[test]
fn a_newcomer_of_the_same_endpoint_takes_a_reserved_place_and_the_woken_keeps_its_turn() {
    let (mut s, t) = two_waiting_and_a_place_reserved_for_the_first();
    let b = s.enter("ns", "x:443", &7, t).unwrap();
    assert_eq!(s.load().reserved, 0);
    s.finish(b, t);
    assert_eq!(s.take_woken(), vec![2], "2 is still first");
    assert!(s.enter("ns", "x:443", &2, t).is_some());
}
