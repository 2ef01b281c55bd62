//! Fairness: token endpoints that accept connections and never answer (tarpits) delay only the
//! clients that use them, whether one endpoint or several: healthy clients created meanwhile
//! are Ready within 5 s.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::apiserver::ApiServer;
use crate::support::builders::create_client;
use crate::support::harness::*;
use crate::support::vendors::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_delays_only_the_clients_that_use_it() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let tarpit = tarpit().await;
    let operator = Operator::start_with_timeout(&api, &[], 32, Duration::from_secs(10));
    operator.ready().await;
    credentials(&api, NS, "creds", ID, SECRET);
    let stuck = generic_spec(&vendor).token_url(&tarpit);
    for i in 0..200 {
        create_client(&api, NS, &format!("stuck-{i}"), &stuck);
    }
    // Let the stuck clients take what they can.
    sleep(1500).await;
    let mut created = Vec::new();
    for i in 0..20 {
        create_client(&api, NS, &format!("healthy-{i}"), &generic_spec(&vendor));
        created.push((format!("healthy-{i}"), Instant::now()));
    }
    for (name, at) in &created {
        wait_ready(&api, NS, name, "True", "TokenIssued").await;
        let took = at.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "{name} Ready {took:?} after creation"
        );
    }
    assert_eq!(vendor.count(), 20);
    operator.stop().await;
}

// === item 9: fairness, with the tarpit spread over two endpoints ===

/// Attacks the exchange gate (src/controller/gate.rs): the per-endpoint share is half of
/// `--max-concurrent-exchanges` and keyed by `host:port` text, so a tenant that uses two tarpit
/// URLs (two ports here; `host` and `host.` or a name and its address work the same) holds
/// every pass, and healthy clients queue behind the tarpits' waiters for several request
/// timeouts. Issue item 9: "a slow or hanging endpoint delays only the clients that use it";
/// healthy clients Ready within 5 s of creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tarpit_endpoints_delay_only_their_own_clients() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let tarpits = [tarpit().await, tarpit().await];
    let operator = Operator::start_with_timeout(&api, &[], 32, Duration::from_secs(10));
    operator.ready().await;
    credentials(&api, NS, "creds", ID, SECRET);
    for i in 0..100 {
        let stuck = generic_spec(&vendor).token_url(&tarpits[i % 2]);
        create_client(&api, NS, &format!("stuck-{i}"), &stuck);
    }
    sleep(1500).await;
    let created = Instant::now();
    for i in 0..5 {
        create_client(&api, NS, &format!("healthy-{i}"), &generic_spec(&vendor));
    }
    let all_ready = || {
        (0..5).all(|i| {
            condition(&api, NS, &format!("healthy-{i}"), "Ready").is_some_and(|c| c.0 == "True")
        })
    };
    while !all_ready() && created.elapsed() < Duration::from_secs(8) {
        sleep(50).await;
    }
    let took = created.elapsed();
    assert!(
        all_ready() && took < Duration::from_secs(5),
        "healthy clients not all Ready {took:?} after creation ({} token requests reached the healthy endpoint)",
        vendor.count()
    );
    operator.stop().await;
}
