//! Tokens kept fresh: refreshed before they expire with a bounded number of requests (however
//! short their lifetime), exchanged again when the credentials or the request change and not
//! for unrelated edits, exactly once for a refresh-requested annotation (with or without
//! milliseconds), reused with no request and no write after a restart, and a refresh margin too
//! short for mounted Secrets said in Ready and warned once.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::apiserver::{OAUTHCLIENTS, SECRETS};
use crate::support::builders::create_client;
use crate::support::harness::*;
use crate::support::vendors::*;
use serde_json::json;

// === refresh timing ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_refreshed_before_expiry_with_bounded_requests() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    vendor.set_expires_in(json!(6));
    credentials(&api, NS, "creds", ID, SECRET);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    // Watch the Secret for 14 s: it must always hold an unexpired token.
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_secs(14) {
        let token = secret_value(&api, NS, "demo-token", "access_token").unwrap();
        let expires: jiff::Timestamp = secret_value(&api, NS, "demo-token", "expires_at")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            expires > jiff::Timestamp::now(),
            "the Secret held an expired token"
        );
        if seen.last() != Some(&token) {
            seen.push(token);
        }
        sleep(100).await;
    }
    // 6 s tokens would be refreshed at two thirds of their life (4 s), but a scheduled refresh
    // is never sooner than 5 s after the previous exchange (the contract): one request per 5 s,
    // still before expiry.
    let requests = vendor.count();
    assert!(
        (3..=4).contains(&requests),
        "{requests} token requests in 14 s"
    );
    let gap = vendor.shortest_gap().unwrap();
    assert!(gap >= Duration::from_millis(4900), "requests {gap:?} apart");
    assert_eq!(
        seen,
        vendor.issued(),
        "every token reached the Secret once, in order"
    );
    // Each exchange writes the Secret and the status once (the first, a create).
    assert_eq!(api.count("patch secrets") as usize + 1, requests);
    assert_eq!(api.count("patch oauthclients/status") as usize, requests);
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_lifetimes_cause_no_storm_and_say_why_the_token_is_expired() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    vendor.set_expires_in(json!(1));
    credentials(&api, NS, "creds", ID, SECRET);
    create_client(&api, NS, "tiny", &generic_spec(&vendor));
    wait_ready(&api, NS, "tiny", "True", "TokenIssued").await;
    // Expired a second later, and so until the next exchange at least 5 s after the first.
    let (_, _, message) = wait_ready(&api, NS, "tiny", "False", "TokenExpired").await;
    assert!(
        message.contains("too short for mounted Secrets"),
        "{message}"
    );
    sleep(11_000).await;
    let requests = vendor.count();
    assert!(
        (2..=3).contains(&requests),
        "{requests} token requests in about 12 s"
    );
    let gap = vendor.shortest_gap().unwrap();
    assert!(gap >= Duration::from_millis(4900), "requests {gap:?} apart");
    // Each exchange writes the Secret once (no loop on the operator's own writes), and one
    // TokenIssued event stands for all of them (at most one a minute). The first is a create.
    assert_eq!(api.count("patch secrets") as usize + 1, requests);
    assert_eq!(events(&api, "TokenIssued").len(), 1);
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_second_tokens_over_two_minutes() {
    // A 30 s token refreshed when a third of its life remains is replaced about every 20 s, so
    // 2 minutes hold the first request and 6 refreshes at most; each token is requested once.
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    vendor.set_expires_in(json!(30));
    credentials(&api, NS, "creds", ID, SECRET);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    sleep(120_000).await;
    let requests = vendor.count();
    assert!(
        (6..=7).contains(&requests),
        "{requests} token requests in 2 minutes"
    );
    assert_eq!(
        api.count("patch secrets") as usize + 1,
        requests,
        "the first a create"
    );
    operator.stop().await;
}

// === rotation ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_exchanges_again_and_unrelated_changes_do_not() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    let first = secret_value(&api, NS, "demo-token", "access_token").unwrap();

    // A label on the credentials Secret and one on the OAuthClient: no exchange.
    api.modify(SECRETS, NS, "creds", |s| {
        s["metadata"]["labels"] = json!({"rotated": "no"})
    });
    api.modify(OAUTHCLIENTS, NS, "demo", |o| {
        o["metadata"]["labels"] = json!({"x": "y"})
    });
    sleep(1500).await;
    assert_eq!(vendor.count(), 1);
    assert_eq!(
        api.count("patch oauthclients/status"),
        1,
        "no-op reconciles write nothing"
    );

    // A new secret: a new token within seconds.
    vendor.set_credentials(ID, "rotated-secret");
    let rotated = Instant::now();
    set_client_secret(&api, "creds", "rotated-secret");
    let second = eventually("a new token", Duration::from_secs(5), || {
        secret_value(&api, NS, "demo-token", "access_token").filter(|t| *t != first)
    })
    .await;
    assert!(rotated.elapsed() < Duration::from_secs(5));
    assert_eq!(vendor.issued(), [first, second]);
    // A spec change that alters the request (a new scope) exchanges again too.
    api.modify(OAUTHCLIENTS, NS, "demo", |o| {
        o["spec"]["scopes"] = json!(["more"])
    });
    eventually("a third token", Duration::from_secs(5), || {
        (vendor.count() == 3).then_some(())
    })
    .await;
    sleep(500).await;
    assert_eq!(vendor.count(), 3);
    operator.stop().await;
}

// === the refresh-requested annotation ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_refresh_annotation_exchanges_exactly_once() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    sleep(1100).await;
    let now = now_to_the_second();
    request_refresh(&api, "demo", &now);
    eventually("second token", Duration::from_secs(5), || {
        (vendor.count() == 2).then_some(())
    })
    .await;
    sleep(2000).await;
    assert_eq!(vendor.count(), 2, "exactly one forced exchange");
    let issued: jiff::Timestamp = status_field(&api, "demo", "issuedAt")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(issued >= now.parse().unwrap());
    operator.stop().await;
}

/// Attacks the annotation path end to end (see also the unit test
/// `plan::tests::review_a_sub_second_refresh_request_is_served_by_one_exchange`): a
/// `refresh-requested-at` with milliseconds is compared with the whole-second `issuedAt`, so the
/// operator exchanges on every reconcile its own writes trigger until the next second.
/// Contract *Behaviour*: the annotation "forces one exchange".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_request_with_milliseconds_exchanges_once() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    sleep(1100).await;
    // Early in a second, so that most of it remains after the first forced exchange.
    while jiff::Timestamp::now().subsec_millisecond() > 100 {
        sleep(5).await;
    }
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    request_refresh(&api, "demo", &now);
    eventually("second token", Duration::from_secs(5), || {
        (vendor.count() >= 2).then_some(())
    })
    .await;
    sleep(2000).await;
    assert_eq!(
        vendor.count(),
        2,
        "exactly one forced exchange for refresh-requested-at {now}"
    );
    operator.stop().await;
}

// === restart ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reuses_valid_tokens_with_zero_requests_and_writes() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    for i in 0..5 {
        create_client(&api, NS, &format!("c{i}"), &generic_spec(&vendor));
    }
    for i in 0..5 {
        wait_ready(&api, NS, &format!("c{i}"), "True", "TokenIssued").await;
    }
    operator.stop().await;
    let requests = vendor.count();
    assert_eq!(requests, 5);
    api.reset_counts();

    let operator = Operator::start(&api, &[], 4);
    operator.ready().await;
    sleep(2000).await;
    assert_eq!(
        vendor.count(),
        requests,
        "zero token requests after the restart"
    );
    let writes: u64 = api
        .counts()
        .iter()
        .filter(|(label, _)| {
            label.starts_with("patch") || label.starts_with("create") || label.starts_with("update")
        })
        .map(|(_, n)| n)
        .sum();
    assert_eq!(writes, 0, "{:?}", api.counts());
    operator.stop().await;
}

// === margins too short for mounted Secrets ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_refresh_margin_is_said_in_ready_and_warned_once() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    vendor.set_expires_in(json!(90));
    credentials(&api, NS, "creds", ID, SECRET);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    let (_, _, message) = wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert!(message.contains("refresh margin of"), "{message}");
    eventually("the ShortRenewMargin event", Duration::from_secs(5), || {
        (events(&api, "ShortRenewMargin").len() == 1).then_some(())
    })
    .await;
    // A forced refresh of the same generation: no second warning.
    sleep(1100).await;
    request_refresh(&api, "demo", &now_to_the_second());
    eventually("a second token", Duration::from_secs(10), || {
        (vendor.count() == 2).then_some(())
    })
    .await;
    sleep(1000).await;
    assert_eq!(events(&api, "ShortRenewMargin").len(), 1);
    operator.stop().await;
}
