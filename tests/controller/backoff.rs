//! Failures: each refusal and fault has its reason in Ready and Degraded and one event, retries
//! back off (from 5 s, honouring Retry-After, about a minute for what only a fix can cure), a
//! failed refresh keeps the token until it expires, a fix of the credentials retries at once
//! while an edit of their metadata only keeps the backoff, and API faults (5xx, conflicts,
//! dropped watches, compacted history) converge without losing a token.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::apiserver::{ApiServer, Matcher, SECRETS};
use crate::support::builders::{SecretObject, Spec, create_client};
use crate::support::harness::*;
use crate::support::vendors::*;
use serde_json::json;

// === refusals ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_invalid_client_with_one_event_and_bounded_retries_then_recover() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Microbilt).await;
    credentials(&api, NS, "creds", ID, "wrong-secret");
    create_client(&api, NS, "demo", &spec_for(&vendor, "microbilt"));
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "InvalidClient").await;
    assert!(
        message.contains("Client credentials are invalid"),
        "{message}"
    );
    assert!(!message.contains("wrong-secret"));
    let degraded = condition(&api, NS, "demo", "Degraded").unwrap();
    assert_eq!(
        (degraded.0.as_str(), degraded.1.as_str()),
        ("True", "InvalidClient")
    );
    assert_eq!(status_field(&api, "demo", "consecutiveFailures"), 1);
    sleep(3000).await;
    assert_eq!(
        vendor.count(),
        1,
        "auth failures retry after about a minute, not sooner"
    );
    let warnings = events(&api, "ExchangeFailed");
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0]["type"], "Warning");
    assert!(
        warnings[0]["note"]
            .as_str()
            .unwrap()
            .starts_with("InvalidClient: ")
    );

    // Fixing the credentials retries at once.
    let fixed = Instant::now();
    set_client_secret(&api, "creds", SECRET);
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert!(fixed.elapsed() < Duration::from_secs(5));
    assert_eq!(
        condition(&api, NS, "demo", "Degraded").unwrap().1,
        "RefreshSucceeded"
    );
    assert_eq!(status_field(&api, "demo", "consecutiveFailures"), 0);
    operator.stop().await;
}

/// A spec that a vendor refuses (or that the operator refuses before asking), with the reason
/// and a text of the message.
struct Refusal {
    vendor: Vendor,
    provider: &'static str,
    change: fn(Spec) -> Spec,
    reason: &'static str,
    text: &'static str,
}

fn refusals() -> [Refusal; 6] {
    let refusal = |vendor, provider, change, reason, text| Refusal {
        vendor,
        provider,
        change,
        reason,
        text,
    };
    [
        refusal(
            Vendor::Microboxlabs,
            "microboxlabs",
            |s| s.audience("https://other/api"),
            "AccessDenied",
            "not authorized to access the audience",
        ),
        refusal(
            Vendor::Microboxlabs,
            "microboxlabs",
            // The preset needs an audience: refused before any request (the vendor's 400
            // said it before).
            |s| s.unset("audience"),
            "InvalidSpec",
            "spec.audience is required by the microboxlabs preset",
        ),
        refusal(
            Vendor::Iotspot,
            "iotspot",
            |s| s.scopes(&["iotspot/admin"]),
            "InvalidScope",
            "invalid_scope",
        ),
        refusal(
            Vendor::Generic,
            "generic",
            |s| s.extra_header("Authorization", "x"),
            "InvalidSpec",
            "Authorization",
        ),
        refusal(
            Vendor::Generic,
            "generic",
            |s| s.template("a", "{{ nope }}"),
            "InvalidSpec",
            "unknown placeholder",
        ),
        // The default --token-url-deny-cidrs keeps credentials away from the metadata service.
        refusal(
            Vendor::Generic,
            "generic",
            |s| s.token_url("https://169.254.169.254/latest/meta-data/"),
            "InvalidSpec",
            "--token-url-deny-cidrs",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_vendor_refusal_maps_to_its_reason() {
    let api = ApiServer::start().await;
    let operator = Operator::start(&api, &[], 4);
    let mut servers = Vec::new();
    for (i, r) in refusals().into_iter().enumerate() {
        let server = TokenServer::start(r.vendor, ID, SECRET, Tokens::Unique).await;
        let spec = (r.change)(spec_for(&server, r.provider).credentials(&format!("creds-{i}")));
        credentials(&api, NS, &format!("creds-{i}"), ID, SECRET);
        create_client(&api, NS, &format!("c{i}"), &spec);
        let (_, _, message) = wait_ready(&api, NS, &format!("c{i}"), "False", r.reason).await;
        assert!(message.contains(r.text), "{}: {message}", r.reason);
        let degraded = condition(&api, NS, &format!("c{i}"), "Degraded").unwrap();
        assert_eq!(
            (degraded.0.as_str(), degraded.1.as_str()),
            ("True", r.reason)
        );
        servers.push((server, r.reason));
    }
    sleep(2000).await;
    for (server, reason) in &servers {
        let expected = usize::from(*reason != "InvalidSpec");
        assert_eq!(server.count(), expected, "{reason}: retries are backed off");
    }
    assert_eq!(events(&api, "ExchangeFailed").len(), servers.len());
    assert!(api.violations().is_empty(), "{:?}", api.violations());
    operator.stop().await;
}

// === transient failures ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_back_off_from_5s_and_honour_retry_after() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    vendor.push(Canned::new(429, r#"{"error":"slow_down"}"#).header("retry-after", "2"));
    vendor.push(
        Canned::new(503, "<html><title>Down for maintenance</title></html>")
            .header("content-type", "text/html"),
    );
    vendor.push(
        Canned::new(200, "<html><title>Login</title></html>").header("content-type", "text/html"),
    );
    credentials(&api, NS, "creds", ID, SECRET);
    let started = Instant::now();
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "RateLimited").await;
    assert!(message.contains("Retry-After 2s"), "{message}");
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "EndpointUnavailable").await;
    assert!(message.contains("Down for maintenance"), "{message}");
    let retry_after = started.elapsed();
    assert!(
        retry_after >= Duration::from_millis(1900),
        "Retry-After honoured: {retry_after:?}"
    );
    wait_ready(&api, NS, "demo", "False", "InvalidResponse").await;
    eventually(
        "Ready after the third backoff",
        Duration::from_secs(45),
        || condition(&api, NS, "demo", "Ready").filter(|c| c.0 == "True"),
    )
    .await;
    let elapsed = started.elapsed();
    // 2 s (Retry-After), then about 10 s (2nd backoff), then about 20 s: well under 40 s.
    assert!(
        elapsed >= Duration::from_secs(10) && elapsed < Duration::from_secs(40),
        "{elapsed:?}"
    );
    assert_eq!(vendor.count(), 4);
    assert_eq!(events(&api, "ExchangeFailed").len(), 3);
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_the_token_then_reports_token_expired() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    vendor.set_expires_in(json!(4));
    credentials(&api, NS, "creds", ID, SECRET);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    let token = secret_value(&api, NS, "demo-token", "access_token").unwrap();
    for _ in 0..10 {
        vendor.push(Canned::new(503, "busy"));
    }
    // Degraded while the old token is still valid, Secret untouched.
    eventually("Degraded=True", Duration::from_secs(10), || {
        condition(&api, NS, "demo", "Degraded").filter(|c| c.0 == "True")
    })
    .await;
    assert_eq!(
        secret_value(&api, NS, "demo-token", "access_token").unwrap(),
        token
    );
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "TokenExpired").await;
    assert!(message.contains("EndpointUnavailable"), "{message}");
    assert_eq!(
        secret_value(&api, NS, "demo-token", "access_token").unwrap(),
        token,
        "never emptied"
    );
    operator.stop().await;
}

// === recovery ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_then_recovery_within_seconds() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "CredentialsNotFound").await;
    assert!(message.contains("Secret creds not found"), "{message}");
    SecretObject::named("creds")
        .entry("client_id", ID)
        .create(&api, NS);
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "CredentialsNotFound").await;
    let message = if message.contains("has no key") {
        message
    } else {
        wait_ready(&api, NS, "demo", "False", "CredentialsNotFound").await;
        eventually("missing key message", Duration::from_secs(5), || {
            condition(&api, NS, "demo", "Ready")
                .map(|c| c.2)
                .filter(|m| m.contains("has no key"))
        })
        .await
    };
    assert!(message.contains("has no key client_secret"), "{message}");
    let fixed = Instant::now();
    set_client_secret(&api, "creds", SECRET);
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert!(fixed.elapsed() < Duration::from_secs(5));
    assert_eq!(vendor.count(), 1);
    operator.stop().await;
}

// === a metadata-only edit keeps the backoff ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_only_edit_of_the_credentials_does_not_skip_the_backoff() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, "wrong-secret-value");
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    wait_ready(&api, NS, "demo", "False", "InvalidClient").await;
    assert_eq!(vendor.count(), 1);
    for i in 0..3 {
        api.modify(SECRETS, NS, "creds", |s| {
            s["metadata"]["labels"] = json!({"touched": i.to_string()});
            s["metadata"]["annotations"] = json!({"note": format!("edit {i}")});
        });
        sleep(700).await;
    }
    sleep(1500).await;
    assert_eq!(vendor.count(), 1, "the backoff holds");
    // A real change of the values retries at once.
    set_client_secret(&api, "creds", SECRET);
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert_eq!(vendor.count(), 2);
    operator.stop().await;
}

// === API faults ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_faults_converge_without_losing_anything() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    // A new client's Secret is created whole (one create).
    api.fail_next(Matcher::new("create", "secrets").in_namespace(NS), 2, 500);
    api.fail_next(Matcher::status("patch", "oauthclients"), 2, 500);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert_eq!(
        vendor.count(),
        1,
        "write retries keep the token already obtained"
    );

    assert!(
        api.count("create secrets") >= 3,
        "two failed creates of the managed Secret, then one (and the seal key's)"
    );
    // Conflicts and a burst of errors on the next writes (more than one reconcile's in-place
    // retries), watches dropped and history compacted. Each failed reconcile is retried after
    // the API-error backoff (5 s, then 10 s, ...).
    api.fail_next(Matcher::status("patch", "oauthclients"), 4, 409);
    api.fail_next(Matcher::new("patch", "secrets"), 4, 500);
    api.drop_watches();
    api.compact();
    let now = now_to_the_second();
    sleep(1100).await;
    request_refresh(&api, "demo", &now);
    eventually("converged after faults", Duration::from_secs(60), || {
        let issued = status_field(&api, "demo", "issuedAt");
        let token = secret_value(&api, NS, "demo-token", "access_token")?;
        // A second token (the first may have been issued in the second `now` names).
        (vendor.count() >= 2
            && vendor.issued().last() == Some(&token)
            && issued.as_str()? >= now.as_str())
        .then_some(())
    })
    .await;
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    // Every token the vendor issued was either stored or replaced by a later one; the Secret was
    // never emptied.
    assert!(secret_value(&api, NS, "demo-token", "access_token").is_some());
    assert!(vendor.count() <= 4, "{} requests", vendor.count());
    operator.stop().await;
}
