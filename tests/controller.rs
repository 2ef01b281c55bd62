//! The real controller against the API-server double and the vendor emulators.

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support::apiserver::{ApiServer, EVENTS, Matcher, OAUTHCLIENTS, SECRETS};
use support::harness::*;
use support::vendors::*;

const NS: &str = "telemetry";
const ID: &str = "streamhub-client";
const SECRET: &str = "s3cr3t/+=value";

struct Setup {
    api: ApiServer,
    vendor: TokenServer,
    operator: Operator,
}

async fn setup(vendor: Vendor) -> Setup {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(vendor, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    Setup {
        api,
        vendor,
        operator,
    }
}

fn spec_for(vendor: &TokenServer, provider: &str) -> Value {
    let mut spec = json!({
        "provider": provider,
        "tokenUrl": vendor.url(),
        "credentialsSecretRef": {"name": "creds"},
    });
    if provider == "microboxlabs" {
        spec["audience"] = json!(STREAMHUB_AUDIENCE);
    }
    spec
}

fn events(api: &ApiServer, reason: &str) -> Vec<Value> {
    api.list(EVENTS, Some(NS))
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

fn status_field(api: &ApiServer, name: &str, field: &str) -> Value {
    api.get(OAUTHCLIENTS, NS, name).unwrap()["status"][field].clone()
}

async fn sleep(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

// === happy paths ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_seed_vendor_reaches_ready_with_the_contract_secret_layout() {
    for (vendor, provider) in [
        (Vendor::Microboxlabs, "microboxlabs"),
        (Vendor::Microbilt, "microbilt"),
        (Vendor::Iotspot, "iotspot"),
    ] {
        let Setup {
            api,
            vendor,
            operator,
        } = setup(vendor).await;
        credentials(&api, NS, "creds", ID, SECRET);
        oauth_client(&api, NS, "demo", spec_for(&vendor, provider));
        let (_, _, message) = wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
        assert!(message.contains("demo-token"), "{message}");
        let token = secret_value(&api, NS, "demo-token", "access_token").unwrap();
        assert_eq!(vendor.issued(), std::slice::from_ref(&token), "{provider}");
        assert_eq!(
            secret_value(&api, NS, "demo-token", "token_type").unwrap(),
            "Bearer"
        );
        let expires_at = secret_value(&api, NS, "demo-token", "expires_at").unwrap();
        assert!(
            expires_at.ends_with('Z') && expires_at.len() == 20,
            "{expires_at}"
        );

        let secret = api.get(SECRETS, NS, "demo-token").unwrap();
        let meta = &secret["metadata"];
        assert_eq!(
            meta["labels"]["app.kubernetes.io/managed-by"],
            "oauth-token-operator"
        );
        assert_eq!(meta["labels"]["oauth.token-operator.dev/client"], "demo");
        assert_eq!(
            meta["annotations"]["oauth.token-operator.dev/expires-at"],
            expires_at.as_str()
        );
        assert!(meta["annotations"]["oauth.token-operator.dev/issued-at"].is_string());
        let fingerprint = meta["annotations"]["oauth.token-operator.dev/fingerprint"]
            .as_str()
            .unwrap();
        assert!(!fingerprint.contains(SECRET));
        let client = api.get(OAUTHCLIENTS, NS, "demo").unwrap();
        let owner = &meta["ownerReferences"][0];
        assert_eq!(owner["uid"], client["metadata"]["uid"]);
        assert_eq!(owner["kind"], "OAuthClient");
        assert_eq!(owner["apiVersion"], "oauth.token-operator.dev/v1alpha1");
        assert_eq!(owner["controller"], true);
        assert_eq!(secret["type"], "Opaque");

        let status = &client["status"];
        assert_eq!(status["secretName"], "demo-token");
        assert_eq!(status["tokenType"], "Bearer");
        assert_eq!(status["expiresAt"], expires_at.as_str());
        assert_eq!(status["observedGeneration"], 1);
        assert_eq!(status["consecutiveFailures"], 0);
        assert!(status["nextRefreshAt"].is_string());
        assert_eq!(
            condition(&api, NS, "demo", "Degraded").unwrap().1,
            "RefreshSucceeded"
        );
        // The event follows the status write.
        eventually("the TokenIssued event", Duration::from_secs(5), || {
            (!events(&api, "TokenIssued").is_empty()).then_some(())
        })
        .await;
        sleep(500).await;
        assert_eq!(events(&api, "TokenIssued").len(), 1);
        assert_eq!(vendor.count(), 1);
        assert_eq!(
            api.count("patch oauthclients/status"),
            1,
            "{:?}",
            api.counts()
        );
        assert_eq!(api.count("patch secrets"), 1);
        assert!(api.violations().is_empty(), "{:?}", api.violations());
        operator.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_settings_and_template_are_applied_and_rerendered_without_a_new_token() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    let mut spec = spec_for(&vendor, "generic");
    spec["scopes"] = json!(["read"]);
    spec["target"] = json!({
        "name": "custom-name",
        "labels": {"team": "a"},
        "annotations": {"note": "x"},
        "template": {"Authorization": "Bearer {{ access_token }}", "expiry": "{{ expires_at }}"},
    });
    oauth_client(&api, NS, "demo", spec);
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    let token = secret_value(&api, NS, "custom-name", "access_token").unwrap();
    assert_eq!(
        secret_value(&api, NS, "custom-name", "Authorization").unwrap(),
        format!("Bearer {token}")
    );
    assert_eq!(
        secret_value(&api, NS, "custom-name", "scope").unwrap(),
        "read"
    );
    let secret = api.get(SECRETS, NS, "custom-name").unwrap();
    assert_eq!(secret["metadata"]["labels"]["team"], "a");
    assert_eq!(secret["metadata"]["annotations"]["note"], "x");

    api.modify(OAUTHCLIENTS, NS, "demo", |o| {
        o["spec"]["target"]["template"] = json!({"Authorization": "Token {{ access_token }}"});
    });
    eventually("re-rendered template", Duration::from_secs(10), || {
        secret_value(&api, NS, "custom-name", "Authorization").filter(|v| v.starts_with("Token "))
    })
    .await;
    assert_eq!(
        secret_value(&api, NS, "custom-name", "access_token").unwrap(),
        token
    );
    assert!(
        secret_value(&api, NS, "custom-name", "expiry").is_none(),
        "removed template key"
    );
    assert_eq!(vendor.count(), 1, "re-rendering needs no new token");
    eventually("observedGeneration 2", Duration::from_secs(5), || {
        (status_field(&api, "demo", "observedGeneration") == 2).then_some(())
    })
    .await;
    operator.stop().await;
}

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
    oauth_client(&api, NS, "demo", spec_for(&vendor, "generic"));
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
    // Each exchange writes the Secret and the status once.
    assert_eq!(api.count("patch secrets") as usize, requests);
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
    oauth_client(&api, NS, "tiny", spec_for(&vendor, "generic"));
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
    // TokenIssued event stands for all of them (at most one a minute).
    assert_eq!(api.count("patch secrets") as usize, requests);
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
    oauth_client(&api, NS, "demo", spec_for(&vendor, "generic"));
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    sleep(120_000).await;
    let requests = vendor.count();
    assert!(
        (6..=7).contains(&requests),
        "{requests} token requests in 2 minutes"
    );
    assert_eq!(api.count("patch secrets") as usize, requests);
    operator.stop().await;
}

// === failures ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_invalid_client_with_one_event_and_bounded_retries_then_recover() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Microbilt).await;
    credentials(&api, NS, "creds", ID, "wrong-secret");
    oauth_client(&api, NS, "demo", spec_for(&vendor, "microbilt"));
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
    api.modify(SECRETS, NS, "creds", |s| {
        s["data"]["client_secret"] =
            json!(base64::engine::general_purpose::STANDARD.encode(SECRET));
    });
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert!(fixed.elapsed() < Duration::from_secs(5));
    assert_eq!(
        condition(&api, NS, "demo", "Degraded").unwrap().1,
        "RefreshSucceeded"
    );
    assert_eq!(status_field(&api, "demo", "consecutiveFailures"), 0);
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_vendor_refusal_maps_to_its_reason() {
    // (vendor, provider, spec changes, reason, text in the message)
    let cases = [
        (
            Vendor::Microboxlabs,
            "microboxlabs",
            json!({"audience": "https://other/api"}),
            "AccessDenied",
            "not authorized to access the audience",
        ),
        (
            Vendor::Microboxlabs,
            "microboxlabs",
            json!({"audience": null}),
            "InvalidRequest",
            "audience",
        ),
        (
            Vendor::Iotspot,
            "iotspot",
            json!({"scopes": ["iotspot/admin"]}),
            "InvalidScope",
            "invalid_scope",
        ),
        (
            Vendor::Generic,
            "generic",
            json!({"extraHeaders": {"Authorization": "x"}}),
            "InvalidSpec",
            "Authorization",
        ),
        (
            Vendor::Generic,
            "generic",
            json!({"target": {"template": {"a": "{{ nope }}"}}}),
            "InvalidSpec",
            "unknown placeholder",
        ),
        (
            // The default --token-url-deny-cidrs keeps credentials away from the metadata service.
            Vendor::Generic,
            "generic",
            json!({"tokenUrl": "https://169.254.169.254/latest/meta-data/"}),
            "InvalidSpec",
            "--token-url-deny-cidrs",
        ),
    ];
    let api = ApiServer::start().await;
    let operator = Operator::start(&api, &[], 4);
    let mut servers = Vec::new();
    for (i, (vendor, provider, changes, reason, text)) in cases.into_iter().enumerate() {
        let server = TokenServer::start(vendor, ID, SECRET, Tokens::Unique).await;
        let mut spec = spec_for(&server, provider);
        spec["credentialsSecretRef"]["name"] = json!(format!("creds-{i}"));
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                spec.as_object_mut().unwrap().remove(k);
            } else {
                spec[k] = v.clone();
            }
        }
        credentials(&api, NS, &format!("creds-{i}"), ID, SECRET);
        oauth_client(&api, NS, &format!("c{i}"), spec);
        let (_, _, message) = wait_ready(&api, NS, &format!("c{i}"), "False", reason).await;
        assert!(message.contains(text), "{reason}: {message}");
        let degraded = condition(&api, NS, &format!("c{i}"), "Degraded").unwrap();
        assert_eq!((degraded.0.as_str(), degraded.1.as_str()), ("True", reason));
        servers.push((server, reason));
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
    oauth_client(&api, NS, "demo", spec_for(&vendor, "generic"));
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
    oauth_client(&api, NS, "demo", spec_for(&vendor, "generic"));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_then_recovery_within_seconds() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    oauth_client(&api, NS, "demo", spec_for(&vendor, "generic"));
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "CredentialsNotFound").await;
    assert!(message.contains("Secret creds not found"), "{message}");
    api.create(
        SECRETS,
        json!({"metadata": {"name": "creds", "namespace": NS}, "stringData": {"client_id": ID}}),
    );
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
    api.modify(SECRETS, NS, "creds", |s| {
        s["data"]["client_secret"] =
            json!(base64::engine::general_purpose::STANDARD.encode(SECRET));
    });
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert!(fixed.elapsed() < Duration::from_secs(5));
    assert_eq!(vendor.count(), 1);
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_not_controlled_by_the_client_are_never_touched() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    // An unrelated Secret with the target name.
    api.create(
        SECRETS,
        json!({"metadata": {"name": "demo-token", "namespace": NS}, "stringData": {"keep": "me"}}),
    );
    oauth_client(&api, NS, "demo", spec_for(&vendor, "generic"));
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "SecretConflict").await;
    assert!(message.contains("demo-token"), "{message}");
    assert_eq!(
        vendor.count(),
        0,
        "no token is requested that could not be stored"
    );
    let untouched = api.get(SECRETS, NS, "demo-token").unwrap();
    assert_eq!(
        untouched["data"],
        json!({"keep": base64::engine::general_purpose::STANDARD.encode("me")})
    );

    // A Secret controlled by a different OAuthClient.
    oauth_client(&api, NS, "first", {
        let mut s = spec_for(&vendor, "generic");
        s["target"] = json!({"name": "shared-token"});
        s
    });
    wait_ready(&api, NS, "first", "True", "TokenIssued").await;
    let first_token = secret_value(&api, NS, "shared-token", "access_token").unwrap();
    oauth_client(&api, NS, "second", {
        let mut s = spec_for(&vendor, "generic");
        s["target"] = json!({"name": "shared-token"});
        s
    });
    wait_ready(&api, NS, "second", "False", "SecretConflict").await;
    sleep(500).await;
    assert_eq!(
        secret_value(&api, NS, "shared-token", "access_token").unwrap(),
        first_token
    );
    let owner =
        api.get(SECRETS, NS, "shared-token").unwrap()["metadata"]["ownerReferences"].clone();
    assert_eq!(owner.as_array().unwrap().len(), 1);
    assert_eq!(owner[0]["name"], "first");
    operator.stop().await;
}

// === rotation, force refresh, restart ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_exchanges_again_and_unrelated_changes_do_not() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    oauth_client(&api, NS, "demo", spec_for(&vendor, "generic"));
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
    api.modify(SECRETS, NS, "creds", |s| {
        s["data"]["client_secret"] =
            json!(base64::engine::general_purpose::STANDARD.encode("rotated-secret"));
    });
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_refresh_annotation_exchanges_exactly_once() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    oauth_client(&api, NS, "demo", spec_for(&vendor, "generic"));
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    sleep(1100).await;
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    api.modify(OAUTHCLIENTS, NS, "demo", |o| {
        o["metadata"]["annotations"] =
            json!({"oauth.token-operator.dev/refresh-requested-at": now});
    });
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reuses_valid_tokens_with_zero_requests_and_writes() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    for i in 0..5 {
        oauth_client(&api, NS, &format!("c{i}"), spec_for(&vendor, "generic"));
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

// === API faults ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_faults_converge_without_losing_anything() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    api.fail_next(Matcher::new("patch", "secrets"), 2, 500);
    api.fail_next(Matcher::status("patch", "oauthclients"), 2, 500);
    oauth_client(&api, NS, "demo", spec_for(&vendor, "generic"));
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert_eq!(
        vendor.count(),
        1,
        "write retries keep the token already obtained"
    );

    // Conflicts and a burst of errors on the next writes, watches dropped and history compacted.
    api.fail_next(Matcher::status("patch", "oauthclients"), 5, 409);
    api.fail_next(Matcher::new("patch", "secrets"), 5, 500);
    api.drop_watches();
    api.compact();
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    sleep(1100).await;
    api.modify(OAUTHCLIENTS, NS, "demo", |o| {
        o["metadata"]["annotations"] =
            json!({"oauth.token-operator.dev/refresh-requested-at": now});
    });
    eventually("converged after faults", Duration::from_secs(30), || {
        let issued = status_field(&api, "demo", "issuedAt");
        let token = secret_value(&api, NS, "demo-token", "access_token")?;
        (vendor.issued().last() == Some(&token) && issued.as_str()? >= now.as_str()).then_some(())
    })
    .await;
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    // Every token the vendor issued was either stored or replaced by a later one; the Secret was
    // never emptied.
    assert!(secret_value(&api, NS, "demo-token", "access_token").is_some());
    assert!(vendor.count() <= 4, "{} requests", vendor.count());
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_client_deletes_its_secret_and_namespaces_limit_the_scope() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &["team-a"], 4);
    for ns in ["team-a", "team-b"] {
        credentials(&api, ns, "creds", ID, SECRET);
        oauth_client(&api, ns, "demo", spec_for(&vendor, "generic"));
    }
    wait_ready(&api, "team-a", "demo", "True", "TokenIssued").await;
    sleep(1000).await;
    assert!(
        condition(&api, "team-b", "demo", "Ready").is_none(),
        "team-b is not watched"
    );
    assert_eq!(vendor.count(), 1);
    api.delete(OAUTHCLIENTS, "team-a", "demo");
    assert!(api.get(SECRETS, "team-a", "demo-token").is_none());
    assert!(
        api.calls()
            .iter()
            .all(|c| c.namespace.as_deref() != Some("team-b"))
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_bytes_a_trailing_newline_is_kept_and_non_utf8_is_named() {
    let api = ApiServer::start().await;
    let operator = Operator::start(&api, &[], 4);
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let with_newline = format!("{SECRET}\n");
    // The classic `echo` mistake: the endpoint knows the secret without the newline, so the
    // secret with it must fail, not be silently "fixed".
    let strict = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    api.create(
        SECRETS,
        json!({"metadata": {"name": "echoed", "namespace": NS},
               "data": {"client_id": b64(ID.as_bytes()), "client_secret": b64(with_newline.as_bytes())}}),
    );
    let mut spec = spec_for(&strict, "generic");
    spec["credentialsSecretRef"]["name"] = json!("echoed");
    oauth_client(&api, NS, "echoed", spec);
    wait_ready(&api, NS, "echoed", "False", "InvalidClient").await;

    // An endpoint whose secret really ends in a newline gets it byte for byte.
    let exact = TokenServer::start(Vendor::Generic, ID, &with_newline, Tokens::Unique).await;
    let mut spec = spec_for(&exact, "generic");
    spec["credentialsSecretRef"]["name"] = json!("echoed");
    oauth_client(&api, NS, "exact", spec);
    wait_ready(&api, NS, "exact", "True", "TokenIssued").await;

    // Not UTF-8: InvalidCredentials naming the key (the contract moved it from InvalidSpec),
    // and nothing is sent.
    let never = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    api.create(
        SECRETS,
        json!({"metadata": {"name": "binary", "namespace": NS},
               "data": {"client_id": b64(ID.as_bytes()), "client_secret": b64(&[0xff, 0xfe, 0x00, 0x41])}}),
    );
    let mut spec = spec_for(&never, "generic");
    spec["credentialsSecretRef"]["name"] = json!("binary");
    oauth_client(&api, NS, "binary", spec);
    let (_, _, message) = wait_ready(&api, NS, "binary", "False", "InvalidCredentials").await;
    assert!(
        message.contains("key client_secret of Secret binary is not valid UTF-8"),
        "{message}"
    );
    assert_eq!(never.count(), 0);
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_only_from_the_clients_own_namespace() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    // The Secret exists, but in another namespace.
    credentials(&api, "other-team", "creds", ID, SECRET);
    oauth_client(&api, NS, "demo", spec_for(&vendor, "generic"));
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "CredentialsNotFound").await;
    assert!(
        message.contains(&format!("not found in namespace {NS}")),
        "{message}"
    );
    sleep(500).await;
    assert_eq!(vendor.count(), 0);
    assert!(
        api.calls()
            .iter()
            .filter(|c| c.resource == "secrets" && c.verb == "get")
            .all(|c| c.namespace.as_deref() != Some("other-team")),
        "no Secret is read outside the client's namespace (the operator reads its seal key in its own)"
    );
    operator.stop().await;
}
