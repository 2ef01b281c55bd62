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

// ===================== adversarial review tests =====================

/// A tiny deterministic PRNG (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Checks the scheduler's internal bookkeeping; returns a description of the first broken
/// invariant.
fn check_invariants(s: &Scheduler<u32>, now: Instant) -> Result<(), String> {
    // Counts vs requests.
    let mut c = Counts::default();
    let mut per_ns: HashMap<&str, Counts> = HashMap::new();
    let mut per_ep: HashMap<&str, usize> = HashMap::new();
    for r in s.requests.values() {
        let e = per_ns.entry(&*r.namespace).or_default();
        if r.stalled {
            c.stalled += 1;
            e.stalled += 1;
        } else {
            c.active += 1;
            e.active += 1;
            c.active_unproven += usize::from(r.unproven);
            e.active_unproven += usize::from(r.unproven);
        }
        *per_ep.entry(&*r.endpoint).or_default() += 1;
    }
    if (c.active, c.stalled, c.active_unproven)
        != (s.counts.active, s.counts.stalled, s.counts.active_unproven)
    {
        return Err(format!(
            "global counts {:?} vs recomputed {:?}",
            s.counts, c
        ));
    }
    for (ns, n) in &s.namespaces {
        let want = per_ns.get(&**ns).copied().unwrap_or_default();
        if (want.active, want.stalled, want.active_unproven)
            != (n.counts.active, n.counts.stalled, n.counts.active_unproven)
        {
            return Err(format!("ns {ns} counts {:?} vs {:?}", n.counts, want));
        }
    }
    for ns in per_ns.keys() {
        if !s.namespaces.contains_key(*ns) {
            return Err(format!("request of ns {ns} without a namespace entry"));
        }
    }
    for (ep, n) in &per_ep {
        let have = s.endpoints.get(*ep).map_or(0, |e| e.started.len());
        if have != *n {
            return Err(format!("endpoint {ep}: started {have} vs requests {n}"));
        }
    }
    // Reservations.
    let reserved_places = s
        .waiting
        .values()
        .filter(|p| p.reserved_until.is_some())
        .count();
    let reserved_queues: usize = s
        .namespaces
        .values()
        .flat_map(|n| n.queues.values())
        .map(|q| q.reserved)
        .sum();
    if reserved_places != s.reserved || reserved_queues != s.reserved {
        return Err(format!(
            "reserved {} vs places {reserved_places} vs queues {reserved_queues}",
            s.reserved
        ));
    }
    // The per-namespace and per-endpoint counts of reserved places.
    for (ns_name, n) in &s.namespaces {
        let queues: usize = n.queues.values().map(|q| q.reserved).sum();
        if n.reserved != queues {
            return Err(format!(
                "namespace {ns_name} reserved {} vs {queues}",
                n.reserved
            ));
        }
    }
    for (ep, e) in &s.endpoints {
        let queues: usize = s
            .namespaces
            .values()
            .filter_map(|n| n.queues.get(ep))
            .map(|q| q.reserved)
            .sum();
        if e.reserved != queues {
            return Err(format!("endpoint {ep} reserved {} vs {queues}", e.reserved));
        }
    }
    // Every waiter once in its queue, every queued client waiting.
    let mut queued = 0;
    for (ns_name, n) in &s.namespaces {
        for (ep, q) in &n.queues {
            if q.waiters.is_empty() {
                return Err(format!("empty queue {ns_name}/{ep}"));
            }
            let mut res = 0;
            for w in &q.waiters {
                queued += 1;
                let Some(p) = s.waiting.get(w) else {
                    return Err(format!("queued {w} not waiting"));
                };
                if *p.namespace != **ns_name || *p.endpoint != **ep {
                    return Err(format!("waiter {w} in the wrong queue"));
                }
                res += usize::from(p.reserved_until.is_some());
            }
            if res != q.reserved {
                return Err(format!(
                    "queue {ns_name}/{ep} reserved {} vs {res}",
                    q.reserved
                ));
            }
            if !n.turn.iter().any(|e| e == ep) {
                return Err(format!("queue {ns_name}/{ep} not in the ns turn"));
            }
        }
        if n.turn.len() != n.queues.len() {
            return Err(format!("ns {ns_name} turn {:?} vs queues", n.turn));
        }
        let in_turn = s.turn.iter().filter(|t| ***t == **ns_name).count();
        if in_turn != usize::from(!n.queues.is_empty()) {
            return Err(format!("ns {ns_name} in global turn {in_turn} times"));
        }
    }
    for t in &s.turn {
        if !s.namespaces.contains_key(t) {
            return Err(format!("ns {t} in turn without an entry"));
        }
    }
    if queued != s.waiting.len() {
        return Err(format!("{queued} queued vs {} waiting", s.waiting.len()));
    }
    // Places: active + reserved within the budget.
    if s.counts.active + s.reserved > s.budget {
        return Err(format!(
            "active {} + reserved {} > budget {}",
            s.counts.active, s.reserved, s.budget
        ));
    }
    // Work-conserving: with a free place, no unreserved waiter is eligible.
    if s.free() > 0 {
        for (w, p) in &s.waiting {
            if p.reserved_until.is_none() && s.eligible(&p.namespace, &p.endpoint, now, 0) {
                return Err(format!("free place and eligible waiter {w} not reserved"));
            }
        }
    }
    // The stalled allowance.
    let total = s.budget * STALLED_TOTAL;
    if s.counts.stalled > total {
        return Err(format!("stalled {} > {total}", s.counts.stalled));
    }
    Ok(())
}

/// Random enter/finish/forget/tick sequences with a moving clock: no panic, bookkeeping
/// consistent after every step.
#[test]
fn random_sequences_keep_the_books() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let budget = 1 + rng.below(4) as usize;
        let mut s: Scheduler<u32> = Scheduler::new(budget);
        let mut now = Instant::now();
        let mut flying: Vec<(RequestId, u32)> = Vec::new();
        let mut woken_since: std::collections::HashSet<u32> = Default::default();
        for step in 0..3000 {
            let op = rng.below(100);
            let who = rng.below(24) as u32;
            let ns = format!("n{}", rng.below(3));
            let ep = format!("e{}", rng.below(5));
            let what;
            if op < 45 {
                if flying.iter().any(|f| f.1 == who) {
                    continue;
                }
                if let Some(id) = s.enter(&ns, &ep, &who, now) {
                    flying.push((id, who));
                }
                what = format!("enter {ns} {ep} {who}");
            } else if op < 75 {
                if flying.is_empty() {
                    continue;
                }
                let i = rng.below(flying.len() as u64) as usize;
                let (id, _) = flying.swap_remove(i);
                s.finish(id, now);
                what = format!("finish {id:?}");
            } else if op < 82 {
                s.forget(&who, now);
                what = format!("forget {who}");
            } else if op < 90 {
                s.tick(now);
                what = "tick".into();
            } else {
                let ms = [1, 50, 250, 1000, 5000, 6000, 61_000][rng.below(7) as usize];
                now += Duration::from_millis(ms);
                what = format!("advance {ms}ms");
            }
            for w in s.take_woken() {
                woken_since.insert(w);
            }
            // Every reserved waiter has been woken.
            for (w, p) in &s.waiting {
                if p.reserved_until.is_some() && !woken_since.contains(w) {
                    panic!("seed {seed} step {step} ({what}): {w} reserved, never woken");
                }
            }
            if let Err(e) = check_invariants(&s, now) {
                panic!("seed {seed} budget {budget} step {step} after {what}: {e}");
            }
        }
    }
}

/// Admission vs an endpoint's limit: places reserved for clients of *different* namespaces at
/// one endpoint are not counted against its limit (eligible() counts only the asking
/// namespace's reservations), and a reserved client is admitted without any check, even at an
/// endpoint closed because a request is out for SLOW.
#[test]
fn reservations_of_several_namespaces_never_overrun_an_endpoints_limit() {
    let mut s: Scheduler<u32> = Scheduler::new(4);
    let t0 = Instant::now();
    // Bring slow:443 down to a limit of 1 (4 answers after SLOW: 4 -> 2 -> 1 -> 1 -> 1).
    let ids: Vec<_> = (0..4)
        .map(|i| s.enter("x", "slow:443", &i, t0).unwrap())
        .collect();
    let t1 = t0 + SLOW + Duration::from_secs(1);
    for id in ids {
        s.finish(id, t1);
    }
    assert_eq!(s.endpoints["slow:443"].limit, 1);
    // The budget is full with quick requests of another namespace.
    let fill: Vec<_> = (10..14)
        .map(|i| s.enter("f", "fill:443", &i, t1).unwrap())
        .collect();
    // Four namespaces queue one client each at slow:443.
    for (k, i) in (20..24).enumerate() {
        assert!(s.enter(&format!("n{k}"), "slow:443", &i, t1).is_none());
    }
    let t2 = t1 + Duration::from_millis(10);
    for id in fill {
        s.finish(id, t2);
    }
    let woken = s.take_woken();
    println!("woken: {woken:?}");
    let mut admitted = 0;
    for (k, i) in (20..24).enumerate() {
        if s.enter(&format!("n{k}"), "slow:443", &i, t2).is_some() {
            admitted += 1;
        }
    }
    println!(
        "slow:443 limit {} but in flight {} ({admitted} admitted)",
        s.endpoints["slow:443"].limit,
        s.in_flight_at("slow:443")
    );
    assert!(
        s.in_flight_at("slow:443") <= 1,
        "limit 1 overrun: {} in flight",
        s.in_flight_at("slow:443")
    );
}

/// A reserved client is admitted even when its endpoint has closed meanwhile (a request out
/// for SLOW).
#[test]
fn a_reserved_client_is_not_admitted_at_a_closed_endpoint() {
    let mut s: Scheduler<u32> = Scheduler::new(2);
    let t0 = Instant::now();
    let _r1 = s.enter("a", "e:443", &1, t0).unwrap(); // never answers (stalls at 250 ms)
    let t = t0 + Duration::from_millis(4900);
    let f1 = s.enter("f", "fill:443", &2, t).unwrap();
    let _f2 = s.enter("f", "fill:443", &4, t).unwrap();
    assert!(s.enter("b", "e:443", &3, t).is_none());
    // f1 ends at 4.95 s: the place is reserved for 3 (e is not closed yet).
    s.finish(f1, t0 + Duration::from_millis(4950));
    assert_eq!(s.take_woken(), vec![3]);
    // 3 comes back at 5.1 s: r1 has been out for SLOW, e is closed.
    let late = t0 + Duration::from_millis(5100);
    assert_eq!(s.endpoints["e:443"].limit_now(late), 0);
    let admitted = s.enter("b", "e:443", &3, late);
    println!("admitted at a closed endpoint: {}", admitted.is_some());
    assert!(
        admitted.is_none(),
        "admitted at an endpoint closed for SLOW"
    );
}

/// Places reserved in one pass are not counted against the stalled allowance (`eligible`
/// counts started requests only), so a namespace at 8 budgets - 1 gets every free place; once
/// sent, only one of them can stall, the others stay *active* for the whole request timeout.
#[test]
fn reservations_count_against_the_stalled_allowance() {
    let budget = 4;
    let mut s: Scheduler<u32> = Scheduler::new(budget);
    let t0 = Instant::now();
    // A proven quick endpoint for the victim.
    let q = s.enter("good", "quick:443", &900, t0).unwrap();
    s.finish(q, t0 + Duration::from_millis(5));
    // The attacker: 31 stalled requests to distinct hanging endpoints (8 budgets - 1).
    let mut t = t0 + Duration::from_millis(10);
    for i in 0..31 {
        assert!(s.enter("evil", &format!("t{i}:443"), &i, t).is_some());
        t += STALL;
        s.tick(t);
    }
    assert_eq!(s.load().stalled, 31);
    // The victim's 4 quick requests fill the budget; the attacker queues 10 more.
    let v: Vec<_> = (0..4)
        .map(|i| s.enter("good", "quick:443", &(1000 + i), t).unwrap())
        .collect();
    for i in 100..110 {
        assert!(s.enter("evil", &format!("t{i}:443"), &i, t).is_none());
    }
    // The victim's requests answer: all 4 places go to the attacker.
    let t = t + Duration::from_millis(5);
    for id in v {
        s.finish(id, t);
    }
    let woken = s.take_woken();
    for w in &woken {
        assert!(s.enter("evil", &format!("t{w}:443"), w, t).is_some());
    }
    let t = t + STALL + Duration::from_millis(10);
    s.tick(t);
    let evil = &s.namespaces["evil"].counts;
    println!(
        "woken {} attacker clients; evil stalled {} active {} (allowance {}); load {:?}",
        woken.len(),
        evil.stalled,
        evil.active,
        budget * STALLED_PER_NAMESPACE,
        s.load()
    );
    // A victim client now: how many places are left for the other namespaces?
    let free = budget - s.load().active - s.load().reserved;
    println!("free places for everyone else for the next ~10 s: {free} of {budget}");
    assert!(
        s.load().active <= 1,
        "hanging requests hold {} of {budget} budget places until their timeout",
        s.load().active
    );
}

/// A client with its own latency (not the endpoint's): a harness for multi-tenant attacks.
struct Tenant {
    ns: String,
    ep: String,
    latency: Option<Duration>,
}

/// The state of a steady-state attack (see [`steady_attack`]).
struct Attack {
    s: Scheduler<u32>,
    tenants: Vec<Tenant>,
    /// Requests in flight: (id, client, when it ends).
    flying: Vec<(RequestId, u32, Instant)>,
    /// Clients not admitted yet, since when they ask.
    asking: HashMap<u32, Instant>,
    /// The victim's admission delays.
    delays: Vec<Duration>,
    /// Clients below this are the attacker's.
    attackers_n: u32,
}

impl Attack {
    /// Client `c` asks for a place at `now`.
    fn ask(&mut self, c: u32, now: Instant) {
        let t = &self.tenants[c as usize];
        if c >= self.attackers_n {
            self.asking.entry(c).or_insert(now);
        }
        match self.s.enter(&t.ns, &t.ep, &c, now) {
            Some(id) => {
                // Timeouts jittered a little (real requests are not sent in lockstep).
                let jitter = Duration::from_millis(u64::from(c) * 37 % 500);
                let took = t.latency.unwrap_or(TIMEOUT + jitter);
                self.flying.push((id, c, now + took));
                if let Some(asked) = self.asking.remove(&c)
                    && c >= self.attackers_n
                {
                    self.delays.push(now.duration_since(asked));
                }
            }
            None => {
                self.asking.entry(c).or_insert(now);
            }
        }
    }
}

/// Steady-state attack: attacker namespaces keep many clients at hanging endpoints (each
/// re-asks as soon as its request times out); the victim asks once every `victim_every` at
/// `victim_ep`. Returns the victim's admission delays (sorted) and the mean number of hanging
/// requests in the budget (active for more than STALL).
fn steady_attack(
    budget: usize,
    attackers: &[(&str, usize)],
    victim_ep: &str,
    victim_latency: Duration,
    victim_every: Duration,
    prove_victim: bool,
    secs: u64,
) -> (Vec<Duration>, f64) {
    let start = Instant::now();
    let mut now = start;
    let mut tenants: Vec<Tenant> = Vec::new();
    for (ns, n) in attackers {
        for i in 0..*n {
            tenants.push(Tenant {
                ns: (*ns).into(),
                ep: format!("{ns}-tarpit-{i}:443"),
                latency: None,
            });
        }
    }
    let attackers_n = tenants.len() as u32;
    let mut a = Attack {
        s: Scheduler::new(budget),
        tenants,
        flying: Vec::new(),
        asking: HashMap::new(),
        delays: Vec::new(),
        attackers_n,
    };
    if prove_victim {
        let id = a.s.enter("good", victim_ep, &u32::MAX, now).unwrap();
        a.s.finish(id, now + Duration::from_millis(1));
    }
    for c in 0..attackers_n {
        a.ask(c, now);
    }
    let step = Duration::from_millis(10);
    let mut next_victim = start + Duration::from_secs(3);
    let mut pinned_sum = 0usize;
    let mut samples = 0usize;
    while now < start + Duration::from_secs(secs) {
        now += step;
        let (done, left): (Vec<_>, Vec<_>) = a.flying.drain(..).partition(|f| f.2 <= now);
        a.flying = left;
        for (id, c, _) in done {
            a.s.finish(id, now);
            if c < attackers_n {
                // The attacker's client asks again at once.
                a.ask(c, now);
            }
        }
        a.s.tick(now);
        if now >= next_victim && now < start + Duration::from_secs(secs - 12) {
            next_victim += victim_every;
            let c = a.tenants.len() as u32;
            a.tenants.push(Tenant {
                ns: "good".into(),
                ep: victim_ep.replace("{}", &c.to_string()),
                latency: Some(victim_latency),
            });
            a.ask(c, now);
        }
        loop {
            let woken = a.s.take_woken();
            if woken.is_empty() {
                break;
            }
            for c in woken {
                if a.asking.contains_key(&c) {
                    a.ask(c, now);
                }
            }
        }
        // A client dropped from the queue (lapse) looks again after 2 x timeout: not modelled
        // (woken clients come back at once here).
        let pinned =
            a.s.requests
                .values()
                .filter(|r| !r.stalled && now.duration_since(r.started) >= STALL)
                .count();
        if now >= start + Duration::from_secs(3) {
            pinned_sum += pinned;
            samples += 1;
        }
    }
    let never = a.asking.keys().filter(|c| **c >= attackers_n).count();
    let mut delays = a.delays;
    for _ in 0..never {
        delays.push(Duration::from_secs(999));
    }
    delays.sort();
    (delays, pinned_sum as f64 / samples.max(1) as f64)
}

fn pct(d: &[Duration], p: f64) -> Duration {
    if d.is_empty() {
        return Duration::ZERO;
    }
    d[((d.len() - 1) as f64 * p) as usize]
}

/// One attacker namespace with 300 hanging clients (distinct endpoints), budget 32: what the
/// victim (another namespace, a proven quick endpoint) waits, and how many budget places the
/// hanging requests hold on average.
#[test]
fn one_namespace_of_tarpits_steady_state() {
    // The victim: a vendor answering in 200 ms, 40 requests a second (8 places of 32).
    let (d, pinned) = steady_attack(
        32,
        &[("evil", 300)],
        "vendor:443",
        Duration::from_millis(200),
        Duration::from_millis(25),
        true,
        60,
    );
    println!(
        "1 attacker ns x300, victim proven: n={} p50 {:?} p90 {:?} p99 {:?} max {:?}; hanging requests in the budget: {pinned:.1} of 32",
        d.len(),
        pct(&d, 0.5),
        pct(&d, 0.9),
        pct(&d, 0.99),
        d.last()
    );
    // Without the attacker.
    let (d0, _) = steady_attack(
        32,
        &[],
        "vendor:443",
        Duration::from_millis(200),
        Duration::from_millis(25),
        true,
        60,
    );
    println!(
        "no attacker: n={} p99 {:?} max {:?}",
        d0.len(),
        pct(&d0, 0.99),
        d0.last()
    );
    assert!(
        pinned < 1.0,
        "hanging requests pin {pinned:.1} of 32 places on average"
    );
    assert!(
        pct(&d, 0.99) <= STALL + Duration::from_millis(50),
        "victim p99 {:?}",
        pct(&d, 0.99)
    );
}
