//! The managed Secret belongs to its client and to nothing else: a Secret the client does not
//! control is never touched (nor one another writer creates between the operator's read and
//! its write), a Secret write the API server refuses or denies is said in the status with
//! backoff and its token kept, a transient one is retried without a new exchange, a pending
//! token is never written once the credentials it was issued for changed, and deleting the
//! client deletes its Secret.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::apiserver::{ApiServer, Matcher, OAUTHCLIENTS, SECRETS};
use crate::support::builders::{SecretObject, create_client};
use crate::support::harness::*;
use crate::support::vendors::*;
use serde_json::json;

// === Secrets the client does not control ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_not_controlled_by_the_client_are_never_touched() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    // An unrelated Secret with the target name.
    SecretObject::named("demo-token")
        .entry("keep", "me")
        .create(&api, NS);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "SecretConflict").await;
    assert!(message.contains("demo-token"), "{message}");
    assert_eq!(
        vendor.count(),
        0,
        "no token is requested that could not be stored"
    );
    let untouched = api.get(SECRETS, NS, "demo-token").unwrap();
    assert_eq!(untouched["data"], json!({"keep": b64("me")}));

    // A Secret controlled by a different OAuthClient.
    let shared = generic_spec(&vendor).target("shared-token");
    create_client(&api, NS, "first", &shared);
    wait_ready(&api, NS, "first", "True", "TokenIssued").await;
    let first_token = secret_value(&api, NS, "shared-token", "access_token").unwrap();
    create_client(&api, NS, "second", &shared);
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

/// Deleting the Secret that was in the way retries within seconds (before, the next scheduled
/// retry came about a minute later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_conflicting_secret_issues_a_token_within_seconds() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    SecretObject::named("demo-token")
        .entry("keep", "me")
        .create(&api, NS);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    wait_ready(&api, NS, "demo", "False", "SecretConflict").await;
    sleep(1000).await;
    let deleted = Instant::now();
    api.delete(SECRETS, NS, "demo-token");
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert!(
        deleted.elapsed() < Duration::from_secs(10),
        "{:?}",
        deleted.elapsed()
    );
    assert_eq!(vendor.count(), 1);
    operator.stop().await;
}

// === no adoption race ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_created_between_the_read_and_the_write_is_never_taken_over() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    let foreign = SecretObject::named("demo-token")
        .label("owner", "someone")
        .entry("password", "not-yours");
    // The cache says "absent"; another client creates the Secret just before the operator
    // writes it.
    api.create_before_next(Matcher::new("create", "secrets"), SECRETS, foreign.json(NS));
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "SecretConflict").await;
    assert!(message.contains("demo-token"), "{message}");
    let secret = api.get(SECRETS, NS, "demo-token").unwrap();
    assert!(
        secret["metadata"]["ownerReferences"].is_null(),
        "no ownerReference added: {secret:#}"
    );
    assert_eq!(
        secret_value(&api, NS, "demo-token", "password").as_deref(),
        Some("not-yours")
    );
    assert!(secret["data"]["access_token"].is_null(), "nothing merged");
    assert_eq!(api.count("patch secrets"), 0, "never applied to it");
    operator.stop().await;
}

// === refused, denied and failed Secret writes ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_secret_write_is_visible_with_backoff_and_the_token_is_kept() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    // The API server refuses the Secret (422) on every write for now.
    // Every write of the Secret: the create of a new one, the apply of an existing one.
    api.fail_next(
        Matcher::new("create", "secrets").in_namespace(NS),
        1000,
        422,
    );
    api.fail_next(Matcher::new("patch", "secrets"), 1000, 422);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "InvalidSpec").await;
    assert!(
        message.contains("the API server refused the managed Secret demo-token")
            && message.contains("injected fault"),
        "{message}"
    );
    let degraded = condition(&api, NS, "demo", "Degraded").unwrap();
    assert_eq!(
        (degraded.0.as_str(), degraded.1.as_str()),
        ("True", "InvalidSpec")
    );
    eventually("the ExchangeFailed event", Duration::from_secs(5), || {
        (events(&api, "ExchangeFailed").len() == 1).then_some(())
    })
    .await;
    // Backoff (about a minute), not a re-exchange loop.
    sleep(3000).await;
    assert_eq!(vendor.count(), 1, "one token request, no loop");
    let object = api.get(OAUTHCLIENTS, NS, "demo").unwrap();
    assert_eq!(object["status"]["consecutiveFailures"], 1);
    let next: jiff::Timestamp = object["status"]["nextRefreshAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(next.duration_since(jiff::Timestamp::now()).as_secs() >= 40);

    // The cause goes away and the spec changes: the token obtained is written, not re-fetched.
    api.reset_faults();
    api.modify(OAUTHCLIENTS, NS, "demo", |o| {
        o["spec"]["target"] = json!({"labels": {"team": "a"}});
    });
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert_eq!(vendor.count(), 1, "the token obtained before was written");
    assert_eq!(
        secret_value(&api, NS, "demo-token", "access_token").unwrap(),
        vendor.issued()[0]
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
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    // Every write of the Secret: the create of a new one, the apply of an existing one.
    api.fail_next(
        Matcher::new("create", "secrets").in_namespace(NS),
        1000,
        403,
    );
    api.fail_next(Matcher::new("patch", "secrets"), 1000, 403);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_write_failure_retries_the_write_not_the_exchange() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    // More 500s than the in-place retries absorb: the reconcile fails and is retried.
    api.fail_next(Matcher::new("patch", "secrets"), 4, 500);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    let started = Instant::now();
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert!(started.elapsed() < Duration::from_secs(12));
    assert_eq!(
        vendor.count(),
        1,
        "the write was retried with the same token"
    );
    operator.stop().await;
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
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    SecretObject::client_credentials(ID, SECRET)
        // Another application's secret in the same Secret: the vendor refuses it.
        .entry("other_secret", "another-apps-secret")
        .create(&api, NS);
    // Every write of the Secret: the create of a new one, the apply of an existing one.
    api.fail_next(
        Matcher::new("create", "secrets").in_namespace(NS),
        1000,
        422,
    );
    api.fail_next(Matcher::new("patch", "secrets"), 1000, 422);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
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

// === deletion ===

/// The deletion half of the former
/// `deleting_the_client_deletes_its_secret_and_namespaces_limit_the_scope` (the namespaces half
/// is `issue::namespaces_limit_the_scope`): the managed Secret goes with its client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_client_deletes_its_secret() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &["team-a"], 4);
    credentials(&api, "team-a", "creds", ID, SECRET);
    create_client(&api, "team-a", "demo", &generic_spec(&vendor));
    wait_ready(&api, "team-a", "demo", "True", "TokenIssued").await;
    assert!(api.get(SECRETS, "team-a", "demo-token").is_some());
    api.delete(OAUTHCLIENTS, "team-a", "demo");
    assert!(api.get(SECRETS, "team-a", "demo-token").is_none());
    operator.stop().await;
}

/// Issue 23: the managed Secret's first write is a create carrying the whole Secret, which makes
/// the operator its owner as an updater; a key that a later rendering drops is still removed
/// (an apply alone would leave it), and from then on the operator owns it as the applier alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_key_dropped_after_the_create_is_removed() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    credentials(&api, NS, "creds", ID, SECRET);
    let spec = generic_spec(&vendor)
        .template("Authorization", "Bearer {{ access_token }}")
        .template("extra", "x");
    create_client(&api, NS, "demo", &spec);
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert_eq!(api.count("patch secrets"), 0, "one write: the create");
    assert_eq!(
        secret_value(&api, NS, "demo-token", "extra").as_deref(),
        Some("x")
    );
    api.modify(OAUTHCLIENTS, NS, "demo", |o| {
        o["spec"]["target"]["template"]
            .as_object_mut()
            .unwrap()
            .remove("extra");
    });
    eventually("the dropped key removed", Duration::from_secs(10), || {
        secret_value(&api, NS, "demo-token", "extra")
            .is_none()
            .then_some(())
    })
    .await;
    let secret = api.get(SECRETS, NS, "demo-token").unwrap();
    assert!(secret_value(&api, NS, "demo-token", "Authorization").is_some());
    assert!(
        secret["metadata"]["managedFields"].is_null(),
        "the create's update entry is gone: {:#}",
        secret["metadata"]
    );
    assert_eq!(vendor.count(), 1, "a re-render, no new token");
    operator.stop().await;
}
