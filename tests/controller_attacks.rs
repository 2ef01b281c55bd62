//! Attacks on the controller's guards, from the adversarial review of the security issue: a
//! pending token after the credentials changed, a write denied with 403, tarpits spread over
//! several endpoints, a refresh request with milliseconds, event notes over the byte limit.
//! Each failed on the reviewed code.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::apiserver::{ApiServer, EVENTS, Matcher, OAUTHCLIENTS, SECRETS};
use support::harness::*;
use support::vendors::*;

const NS: &str = "telemetry";
const ID: &str = "attack-client";
const SECRET: &str = "attack-s3cr3t-value";

fn spec(vendor: &TokenServer) -> Value {
    json!({
        "provider": "generic",
        "tokenUrl": vendor.url(),
        "credentialsSecretRef": {"name": "creds"},
    })
}

fn events(api: &ApiServer, reason: &str) -> Vec<Value> {
    api.list(EVENTS, Some(NS))
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

async fn sleep(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Accepts connections and never answers (until the test ends).
async fn tarpit() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}/token")
}

// === item 5 / contract "Behaviour": a pending token for other credentials ===

/// Attacks `usable_pending` (src/controller/reconcile.rs). A token whose Secret write was
/// refused is kept and written by a later reconcile "while it is valid and the request settings
/// and credentials are the ones it was issued for". The check compares `ExchangeSettings` and
/// the credentials Secret's resourceVersion only; neither covers
/// `credentialsSecretRef.clientSecretKey` / `clientIdKey` nor `spec.clientId`. So after the
/// spec switches to other credentials (same Secret, other key) the token of the *old*
/// credentials is written, and `store()` then marks it verified for the new generation: Ready
/// True for credentials that were never exchanged. Contract: Ready is True only "while the
/// managed Secret holds an unexpired token obtained for the current spec and credentials"; the
/// brief calls a pending token written for the wrong credentials a cross-tenant bug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_token_is_never_written_after_the_credentials_keys_change() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    api.create(
        SECRETS,
        json!({
            "metadata": {"name": "creds", "namespace": NS},
            "stringData": {
                "client_id": ID,
                "client_secret": SECRET,
                // Another application's secret in the same Secret: the vendor refuses it.
                "other_secret": "another-apps-secret",
            },
        }),
    );
    api.fail_next(Matcher::new("patch", "secrets"), 1000, 422);
    oauth_client(&api, NS, "demo", spec(&vendor));
    wait_ready(&api, NS, "demo", "False", "InvalidSpec").await;
    assert_eq!(vendor.count(), 1);

    api.reset_faults();
    // The spec now names other credentials. The pending token was issued for client_secret.
    api.modify(OAUTHCLIENTS, NS, "demo", |o| {
        o["spec"]["credentialsSecretRef"]["clientSecretKey"] = json!("other_secret");
    });
    let outcome = eventually("a settled Ready", Duration::from_secs(10), || {
        condition(&api, NS, "demo", "Ready").filter(|c| c.1 != "InvalidSpec")
    })
    .await;
    assert_eq!(
        (outcome.0.as_str(), outcome.1.as_str(), vendor.count()),
        ("False", "InvalidClient", 2),
        "the token obtained with client_secret was written as the token of other_secret: {outcome:?}"
    );
    operator.stop().await;
}

// === item 5: a refusal that is neither 400, 413 nor 422 ===

/// Attacks `WriteError::classify` (src/controller/reconcile.rs): only 400, 413 and 422 count as
/// a refusal; a 403 from an admission policy (ValidatingAdmissionPolicy, Kyverno and
/// Gatekeeper deny with 403, e.g. "Secrets must carry label team") or RBAC is treated as
/// transient: the reconcile returns an error before the status, so no condition and no event
/// says anything, forever. Issue item 5: "a refused write is recorded in the status (...) with
/// backoff"; only transient API errors keep the in-place retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_write_denied_with_403_is_visible_in_the_status() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    credentials(&api, NS, "creds", ID, SECRET);
    api.fail_next(Matcher::new("patch", "secrets"), 1000, 403);
    oauth_client(&api, NS, "demo", spec(&vendor));
    let ready = eventually("any Ready condition", Duration::from_secs(10), || {
        condition(&api, NS, "demo", "Ready")
    })
    .await;
    assert_eq!(ready.0, "False", "{ready:?}");
    assert!(
        ready.2.contains("refused") || ready.2.contains("injected fault"),
        "the API server's refusal is named: {ready:?}"
    );
    eventually("the ExchangeFailed event", Duration::from_secs(5), || {
        (!events(&api, "ExchangeFailed").is_empty()).then_some(())
    })
    .await;
    assert_eq!(vendor.count(), 1, "and the token is kept, not re-fetched");
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
        let mut s = spec(&vendor);
        s["tokenUrl"] = json!(tarpits[i % 2]);
        oauth_client(&api, NS, &format!("stuck-{i}"), s);
    }
    sleep(1500).await;
    let created = Instant::now();
    for i in 0..5 {
        oauth_client(&api, NS, &format!("healthy-{i}"), spec(&vendor));
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

// === item 5 / events: the note limit is in bytes ===

/// Attacks `EventPublisher::publish` (src/controller/events.rs): the note is cut at 1000
/// *characters*, but the API server's limit is 1024 *bytes* (`len(note) > 1024` in
/// events.k8s.io validation), so a message with non-ASCII text (an endpoint's localised field
/// names, a spec path) is refused by a real API server and the `ExchangeFailed` event is lost
/// (only a WARN log says so). The double does not enforce the limit; this test checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_notes_fit_the_api_servers_byte_limit() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    credentials(&api, NS, "creds", ID, SECRET);
    // A 2xx without the token where the spec looks, with non-ASCII names.
    let mut body = serde_json::Map::new();
    for i in 0..12 {
        body.insert(format!("{}{i:02}", "字段名称".repeat(6)), json!(i));
    }
    for _ in 0..10 {
        vendor.push(Canned::new(200, Value::Object(body.clone()).to_string()));
    }
    let mut s = spec(&vendor);
    s["responseFields"] = json!({"accessToken": "令牌".repeat(110)});
    oauth_client(&api, NS, "demo", s);
    wait_ready(&api, NS, "demo", "False", "InvalidResponse").await;
    let failed = eventually("the ExchangeFailed event", Duration::from_secs(5), || {
        events(&api, "ExchangeFailed").first().cloned()
    })
    .await;
    let note = failed["note"].as_str().unwrap();
    assert!(
        note.len() <= 1024,
        "event note of {} bytes ({} characters): a real API server refuses it",
        note.len(),
        note.chars().count()
    );
    operator.stop().await;
}

/// Attacks the annotation path end to end (see also the unit test
/// `plan::tests::review_a_sub_second_refresh_request_is_served_by_one_exchange`): a
/// `refresh-requested-at` with milliseconds is compared with the whole-second `issuedAt`, so the
/// operator exchanges on every reconcile its own writes trigger until the next second.
/// Contract *Behaviour*: the annotation "forces one exchange".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_request_with_milliseconds_exchanges_once() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    credentials(&api, NS, "creds", ID, SECRET);
    oauth_client(&api, NS, "demo", spec(&vendor));
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    sleep(1100).await;
    // Early in a second, so that most of it remains after the first forced exchange.
    while jiff::Timestamp::now().subsec_millisecond() > 100 {
        sleep(5).await;
    }
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    api.modify(OAUTHCLIENTS, NS, "demo", |o| {
        o["metadata"]["annotations"] =
            json!({"oauth.token-operator.dev/refresh-requested-at": now});
    });
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
