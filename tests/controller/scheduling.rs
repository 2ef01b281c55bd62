//! The exchange scheduler (issue 23) with the real controller: the whole budget at one endpoint
//! during a burst, tarpits on one endpoint or spread over 200 costing other clients a stall at
//! most, and two namespaces with 10:1 demand both progressing.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::apiserver::ApiServer;
use crate::support::builders::create_client;
use crate::support::harness::*;
use crate::support::vendors::*;

const BUDGET: usize = 32;

fn is_ready(api: &ApiServer, ns: &str, name: &str) -> bool {
    condition(api, ns, name, "Ready").is_some_and(|c| c.0 == "True")
}

/// 600 clients of one endpoint that answers in 1 s: while clients wait, at least 90% of the
/// budget (29 of 32) is in flight at the endpoint, and never more than the budget. (Answers of
/// 300 ms made the figure depend on the machine: each freed place stays empty while the next
/// client's reconcile runs, tens of milliseconds when another test's operator shares the two
/// cores. With a busy loop on one core the 10th percentile fell to 25 of 32 on the code before
/// the controller's own queue and to 20-23 after it; with 1 s answers it stays at 30.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_with_600_waiting_clients_keeps_90_percent_of_the_budget_in_flight() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    vendor.count_only();
    vendor.set_delay(Duration::from_millis(1000));
    let operator = Operator::start_with_timeout(&api, &[], BUDGET, Duration::from_secs(10));
    operator.ready().await;
    credentials(&api, NS, "creds", ID, SECRET);
    for i in 0..600 {
        create_client(&api, NS, &format!("c{i}"), &generic_spec(&vendor));
    }
    // Sampled every 20 ms while at least a budget of clients is still to be served.
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut peak = 0;
    while vendor.count() < 600 - BUDGET && started.elapsed() < Duration::from_secs(90) {
        let n = vendor.in_flight();
        peak = peak.max(n);
        // From the first full budget on (the clients are still being created before).
        if peak == BUDGET {
            samples.push(n);
        }
        sleep(20).await;
    }
    assert!(
        vendor.count() >= 600 - BUDGET,
        "{} requests in 90 s",
        vendor.count()
    );
    assert_eq!(peak, BUDGET, "never more than the budget at one endpoint");
    samples.sort_unstable();
    let median = samples[samples.len() / 2];
    let low = samples[samples.len() / 10];
    eprintln!(
        "in flight while clients waited: median {median}, 10th percentile {low}, peak {peak} of {BUDGET}"
    );
    assert!(
        median >= 29 && low >= 26,
        "in flight while clients waited: median {median}, 10th percentile {low} of {BUDGET} ({} samples)",
        samples.len()
    );
    operator.stop().await;
}

/// What a healthy client of another namespace and 20 healthy clients of the tarpits' own
/// namespace take to become Ready, created once 200 tarpit clients hold their requests.
async fn healthy_clients_beside(tarpits: &[String]) -> (Duration, Vec<Duration>) {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start_with_timeout(&api, &[], BUDGET, Duration::from_secs(10));
    operator.ready().await;
    credentials(&api, "evil", "creds", ID, SECRET);
    credentials(&api, "good", "creds", ID, SECRET);
    for i in 0..200 {
        let stuck = generic_spec(&vendor).token_url(&tarpits[i % tarpits.len()]);
        create_client(&api, "evil", &format!("stuck-{i}"), &stuck);
    }
    // Let the tarpits take what they can.
    sleep(1500).await;
    let created = Instant::now();
    create_client(&api, "good", "healthy", &generic_spec(&vendor));
    for i in 0..20 {
        create_client(
            &api,
            "evil",
            &format!("healthy-{i}"),
            &generic_spec(&vendor),
        );
    }
    let mut other = None;
    let mut own = vec![None; 20];
    while (other.is_none() || own.iter().any(Option::is_none))
        && created.elapsed() < Duration::from_secs(12)
    {
        if other.is_none() && is_ready(&api, "good", "healthy") {
            other = Some(created.elapsed());
        }
        for (i, at) in own.iter_mut().enumerate() {
            if at.is_none() && is_ready(&api, "evil", &format!("healthy-{i}")) {
                *at = Some(created.elapsed());
            }
        }
        sleep(25).await;
    }
    operator.stop().await;
    let never = Duration::from_secs(3600);
    (
        other.unwrap_or(never),
        own.into_iter().map(|t| t.unwrap_or(never)).collect(),
    )
}

fn assert_delays(what: &str, (other, own): (Duration, Vec<Duration>)) {
    let slowest = own.iter().max().copied().unwrap_or_default();
    eprintln!("{what}: other namespace Ready after {other:?}; own namespace's slowest {slowest:?}");
    assert!(
        other < Duration::from_secs(3) && slowest < Duration::from_secs(5),
        "{what}: the other namespace's client Ready after {other:?} (< 3 s), the tarpits' \
         namespace's 20 healthy clients after {slowest:?} at most (< 5 s)"
    );
}

/// 200 tarpit clients on one endpoint: the healthy clients are Ready within 3 s (another
/// namespace) and 5 s (the tarpits' own) of their creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tarpit_clients_on_one_endpoint_cost_others_nothing() {
    let tarpits = [tarpit().await];
    assert_delays("one tarpit", healthy_clients_beside(&tarpits).await);
}

/// The review's attack: the same 200 tarpit clients spread over 200 endpoints (before the
/// scheduler, each endpoint had its own share and together they held every place: the other
/// namespace's client took 17.4 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tarpit_endpoints_cost_others_nothing() {
    let mut tarpits = Vec::new();
    for _ in 0..200 {
        tarpits.push(tarpit().await);
    }
    assert_delays("200 tarpits", healthy_clients_beside(&tarpits).await);
}

/// Two namespaces with 10:1 demand at one endpoint (answering in 200 ms): while both have
/// clients waiting, each gets at least a third of the requests sent.
///
/// Both must really be waiting: the endpoint holds the first budget of requests until every
/// other client has reached the scheduler. (Without that hold, the small namespace's clients
/// reached the scheduler one in eleven, as the controller reconciled the creations in order; when
/// that ran slower than about eleven times the endpoint's 160 answers a second, the small
/// namespace was served the moment each arrived, never waited, and got fewer than a third of
/// the requests: on a slow machine in CI, 40 of 138.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_namespaces_with_ten_to_one_demand_both_progress() {
    const CLIENTS: usize = 440;
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    // Held below the operator's 10 s request timeout.
    vendor.set_delay(Duration::from_secs(8));
    let operator = Operator::start_with_timeout(&api, &[], BUDGET, Duration::from_secs(10));
    operator.ready().await;
    for ns in ["big", "small"] {
        credentials(&api, ns, "creds", ID, SECRET);
    }
    let spec = |ns: &str| generic_spec(&vendor).extra_header("X-Test-Namespace", ns);
    for i in 0..400 {
        create_client(&api, "big", &format!("b{i}"), &spec("big"));
        if i % 10 == 0 {
            create_client(&api, "small", &format!("s{i}"), &spec("small"));
        }
    }
    // A reconcile that waits for a place ends (it holds no reconcile slot); the held ones do not.
    let reconciled = || {
        series(
            &operator.metrics.encode(),
            "oauth_token_operator_reconcile_total",
        ) as usize
    };
    eventually(
        "every client not held waiting at the scheduler",
        Duration::from_secs(7),
        || (vendor.in_flight() == BUDGET && reconciled() >= CLIENTS - BUDGET).then_some(()),
    )
    .await;
    assert_eq!(vendor.count(), BUDGET, "nothing answered yet");
    vendor.set_delay(Duration::from_millis(200));
    eventually("every client Ready", Duration::from_secs(60), || {
        (vendor.count() >= CLIENTS).then_some(())
    })
    .await;
    let namespaces: Vec<String> = vendor
        .requests()
        .iter()
        .map(|r| r.header("x-test-namespace").unwrap_or_default())
        .collect();
    assert_eq!(namespaces.iter().filter(|n| *n == "small").count(), 40);
    // While both wait: from the first request after the held ones to the small namespace's last.
    let last = namespaces.iter().rposition(|n| n == "small").unwrap();
    let window = &namespaces[BUDGET..=last];
    let small = window.iter().filter(|n| *n == "small").count();
    let big = window.len() - small;
    eprintln!("while both waited: big {big}, small {small}");
    assert!(
        small * 3 >= window.len() && big * 3 >= window.len(),
        "while both waited: big {big}, small {small} of {} requests",
        window.len()
    );
    operator.stop().await;
}

/// From the adversarial review: queued clients that stop asking. A tenant queues many clients
/// (its vendor is slow enough that they wait), then makes their specs unusable: each queued
/// client's next reconcile plans `Fail` and never asks the gate again. They used to stay queued
/// and have places reserved for them, idle for 5 s each (healthy clients of another namespace
/// took 14 s at the median); a reconcile that does not ask now leaves the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_clients_that_stop_asking_leave_the_queue() {
    use crate::support::apiserver::OAUTHCLIENTS;
    let budget = 4;
    let api = ApiServer::start().await;
    let slow = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    slow.set_delay(Duration::from_millis(200));
    let quick = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start_with_timeout(&api, &[], budget, Duration::from_secs(10));
    operator.ready().await;
    credentials(&api, "evil", "creds", ID, SECRET);
    credentials(&api, "good", "creds", ID, SECRET);
    for i in 0..300 {
        create_client(&api, "evil", &format!("q{i}"), &generic_spec(&slow));
    }
    sleep(1500).await;
    // The queued ones (not Ready yet) get an unusable spec: their plan is Fail from now on.
    let mut made_invalid = 0;
    for i in 0..300 {
        let name = format!("q{i}");
        if !is_ready(&api, "evil", &name) {
            api.modify(OAUTHCLIENTS, "evil", &name, |o| {
                o["spec"]["tokenUrl"] = serde_json::json!("ftp://invalid.example/token");
            });
            made_invalid += 1;
        }
    }
    eprintln!("made invalid: {made_invalid}");
    sleep(1000).await;
    let served_evil = slow.count();
    let created = Instant::now();
    for i in 0..20 {
        create_client(&api, "good", &format!("h{i}"), &generic_spec(&quick));
    }
    let mut ready = vec![None; 20];
    while ready.iter().any(Option::is_none) && created.elapsed() < Duration::from_secs(60) {
        for (i, at) in ready.iter_mut().enumerate() {
            if at.is_none() && is_ready(&api, "good", &format!("h{i}")) {
                *at = Some(created.elapsed());
            }
        }
        sleep(50).await;
    }
    let mut times: Vec<Duration> = ready
        .iter()
        .map(|t| t.unwrap_or(Duration::from_secs(3600)))
        .collect();
    times.sort();
    eprintln!(
        "evil served before: {served_evil}; good's 20 clients Ready: first {:?}, median {:?}, last {:?}",
        times[0], times[10], times[19]
    );
    operator.stop().await;
    assert!(
        times[19] < Duration::from_secs(5),
        "good's last client Ready after {:?}",
        times[19]
    );
}
