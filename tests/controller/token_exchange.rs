//! Token exchange (RFC 8693) against a strict exchange endpoint ([`crate::support::sts`]): each
//! subject kind (a Secret's key, another OAuthClient's token, a ServiceAccount token the double
//! signs), the request exactly as the RFC says, `issued_token_type` in the status and the
//! Secret, restart reuse with no request, rotation of each subject, a subject client that is
//! not Ready (this one says so and sends nothing), reference cycles, and a hostile endpoint that
//! echoes the subject token.

use std::time::{Duration, Instant};

use crate::common::{NS, b64, sleep};
use crate::support::apiserver::{ApiServer, OAUTHCLIENTS, SECRETS, SERVICEACCOUNTS};
use crate::support::assertions::VerifyingKey;
use crate::support::harness::*;
use crate::support::sts::{
    ACCESS_TOKEN_TYPE, ClientAuth, JWT_TYPE, Policy, StsServer, Subjects, one,
};
use crate::support::vendors::*;
use serde_json::{Value, json};

const SUBJECT_ONE: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJidWlsZGVyIn0.c3ViamVjdC1zaWduYXR1cmUtb25lLWxvbmc";
const SUBJECT_TWO: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJidWlsZGVyIn0.c3ViamVjdC1zaWduYXR1cmUtdHdvLWxvbmc";
const POOL: &str =
    "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/ci/providers/k8s";

fn public(subject_token_type: &str, subjects: Subjects) -> Policy {
    Policy {
        client: ClientAuth::Public,
        subject_token_type: subject_token_type.into(),
        audience: Some(POOL.into()),
        subjects,
    }
}

/// A public token-exchange client of `url` with `subject` (the `subjectToken` object).
fn exchanging(url: &str, subject: Value) -> Value {
    json!({
        "tokenUrl": url,
        "grantType": "TokenExchange",
        "clientAuthMethod": "None",
        "audience": POOL,
        "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
        "tokenExchange": {"subjectToken": subject},
    })
}

fn subject_secret(api: &ApiServer, name: &str, token: &str) {
    api.create(
        SECRETS,
        json!({"metadata": {"name": name, "namespace": NS}, "stringData": {"token": token}}),
    );
}

/// A client `name` of `sts` whose subject is [`SUBJECT_ONE`] in the Secret `ci-token`.
fn from_a_secret(api: &ApiServer, sts: &StsServer, name: &str) {
    subject_secret(api, "ci-token", SUBJECT_ONE);
    oauth_client(
        api,
        NS,
        name,
        exchanging(
            &sts.url(),
            json!({"secretRef": {"name": "ci-token", "key": "token"}}),
        ),
    );
}

fn status(api: &ApiServer, name: &str) -> Value {
    api.get(OAUTHCLIENTS, NS, name).unwrap()["status"].clone()
}

// === a token in a Secret ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_subject_is_exchanged_rotated_and_reused_after_a_restart() {
    let api = ApiServer::start().await;
    let sts = StsServer::start(public(JWT_TYPE, Subjects::Known(vec![SUBJECT_ONE.into()]))).await;
    let operator = Operator::start(&api, &[], 4);
    subject_secret(&api, "ci-token", &format!("{SUBJECT_ONE}\n"));
    let mut spec = exchanging(
        &sts.url(),
        json!({"secretRef": {"name": "ci-token", "key": "token"}}),
    );
    spec["tokenExchange"]["requestedTokenType"] = ACCESS_TOKEN_TYPE.into();
    spec["tokenExchange"]["resources"] = json!(["https://a.example/", "https://b.example/"]);
    oauth_client(&api, NS, "gcp", spec);
    wait_ready(&api, NS, "gcp", "True", "TokenIssued").await;

    // The request, exactly: no client credential, the subject once, its type, the rest.
    let requests = sts.requests();
    assert_eq!(requests.len(), 1);
    let form = &requests[0];
    assert_eq!(
        one(form, "grant_type"),
        Ok("urn:ietf:params:oauth:grant-type:token-exchange")
    );
    assert_eq!(one(form, "subject_token"), Ok(SUBJECT_ONE));
    assert_eq!(one(form, "subject_token_type"), Ok(JWT_TYPE));
    assert_eq!(one(form, "requested_token_type"), Ok(ACCESS_TOKEN_TYPE));
    let resources: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(resources, ["https://a.example/", "https://b.example/"]);
    assert!(
        form.iter().all(|(k, _)| !k.starts_with("client_")),
        "{form:?}"
    );

    // The answer's issued_token_type, in the status and the Secret.
    assert_eq!(status(&api, "gcp")["issuedTokenType"], ACCESS_TOKEN_TYPE);
    assert_eq!(
        secret_value(&api, NS, "gcp-token", "issued_token_type").as_deref(),
        Some(ACCESS_TOKEN_TYPE)
    );
    assert_eq!(
        secret_value(&api, NS, "gcp-token", "access_token"),
        sts.issued().first().cloned()
    );

    // A label on the subject's Secret is no new subject.
    api.modify(SECRETS, NS, "ci-token", |s| {
        s["metadata"]["labels"] = json!({"team": "ci"})
    });
    sleep(2000).await;
    assert_eq!(sts.count(), 1, "a metadata-only change exchanged again");

    // A new subject token: one new exchange within 10 s, with it.
    sts.accept(Subjects::Known(vec![SUBJECT_TWO.into()]));
    let rotated = Instant::now();
    api.modify(SECRETS, NS, "ci-token", |s| {
        s["data"]["token"] = b64(SUBJECT_TWO)
    });
    eventually("the new subject exchanged", Duration::from_secs(10), || {
        (sts.count() == 2).then_some(())
    })
    .await;
    assert!(rotated.elapsed() < Duration::from_secs(10));
    assert_eq!(one(&sts.requests()[1], "subject_token"), Ok(SUBJECT_TWO));
    eventually("the new token stored", Duration::from_secs(5), || {
        (secret_value(&api, NS, "gcp-token", "access_token") == sts.issued().last().cloned())
            .then_some(())
    })
    .await;
    sleep(1500).await;
    assert_eq!(sts.count(), 2, "one rotation, one exchange");
    operator.stop().await;

    // A restart reuses the token: the subject is read, nothing is sent.
    let again = Operator::start(&api, &[], 4);
    again.ready().await;
    sleep(2000).await;
    assert_eq!(sts.count(), 2, "a restart exchanged again");
    assert_eq!(
        condition(&api, NS, "gcp", "Ready").unwrap().1,
        "TokenIssued"
    );
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_subject_secret_or_key_sends_nothing_and_its_creation_retries_at_once() {
    let api = ApiServer::start().await;
    let sts = StsServer::start(public(JWT_TYPE, Subjects::Known(vec![SUBJECT_ONE.into()]))).await;
    let operator = Operator::start(&api, &[], 4);
    oauth_client(
        &api,
        NS,
        "waiting",
        exchanging(
            &sts.url(),
            json!({"secretRef": {"name": "later", "key": "token"}}),
        ),
    );
    let (_, _, message) = wait_ready(&api, NS, "waiting", "False", "CredentialsNotFound").await;
    assert!(message.contains("Secret later"), "{message}");
    api.create(
        SECRETS,
        json!({"metadata": {"name": "later", "namespace": NS}, "stringData": {"other": "x"}}),
    );
    eventually("the missing key said", Duration::from_secs(10), || {
        condition(&api, NS, "waiting", "Ready").filter(|c| c.2.contains("no key token"))
    })
    .await;
    assert_eq!(sts.count(), 0);
    let created = Instant::now();
    api.modify(SECRETS, NS, "later", |s| {
        s["data"] = json!({"token": b64(SUBJECT_ONE)})
    });
    wait_ready(&api, NS, "waiting", "True", "TokenIssued").await;
    assert!(
        created.elapsed() < Duration::from_secs(5),
        "{:?}",
        created.elapsed()
    );
    assert_eq!(sts.count(), 1);
    operator.stop().await;
}

// === another client's token ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_client_follows_its_subjects_token_and_waits_while_it_is_not_ready() {
    let api = ApiServer::start().await;
    let vendor = std::sync::Arc::new(
        TokenServer::start(Vendor::Generic, "builder", "first-secret", Tokens::Unique).await,
    );
    let issued = vendor.clone();
    let sts = StsServer::start(public(
        ACCESS_TOKEN_TYPE,
        Subjects::IssuedBy(std::sync::Arc::new(move || issued.issued())),
    ))
    .await;
    let operator = Operator::start(&api, &[], 4);

    // The second client is created first: its subject does not exist yet.
    oauth_client(
        &api,
        NS,
        "second",
        exchanging(&sts.url(), json!({"oauthClientRef": {"name": "first"}})),
    );
    let (_, _, message) = wait_ready(&api, NS, "second", "False", "CredentialsNotFound").await;
    assert!(message.contains("OAuthClient first"), "{message}");
    // The first client cannot get a token (no credentials): the second says so within
    // seconds (its own backoff notwithstanding), and sends nothing.
    oauth_client(
        &api,
        NS,
        "first",
        json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "builder"}}),
    );
    wait_ready(&api, NS, "first", "False", "CredentialsNotFound").await;
    // Before the first client's status is written, the second may say it has no token yet;
    // the first's status then reaches it.
    let (_, _, message) = wait_ready(&api, NS, "second", "False", "TokenExpired").await;
    assert!(message.contains("OAuthClient first"), "{message}");
    eventually("the first client's reason", Duration::from_secs(10), || {
        condition(&api, NS, "second", "Ready")
            .filter(|c| c.1 == "TokenExpired" && c.2.contains("not Ready (CredentialsNotFound)"))
    })
    .await;
    assert_eq!(sts.count(), 0);

    // Once the first has a token, the second exchanges it within seconds.
    credentials(&api, NS, "builder", "builder", "first-secret");
    wait_ready(&api, NS, "first", "True", "TokenIssued").await;
    let first_token = secret_value(&api, NS, "first-token", "access_token").unwrap();
    let issued = Instant::now();
    wait_ready(&api, NS, "second", "True", "TokenIssued").await;
    assert!(
        issued.elapsed() < Duration::from_secs(10),
        "{:?}",
        issued.elapsed()
    );
    let sent = sts.requests();
    let last = sent.last().unwrap();
    assert_eq!(one(last, "subject_token"), Ok(first_token.as_str()));
    assert_eq!(one(last, "subject_token_type"), Ok(ACCESS_TOKEN_TYPE));
    let before = sts.count();

    // The first client's token changes (its secret rotated): the second follows within 10 s.
    vendor.set_credentials("builder", "second-secret");
    api.modify(SECRETS, NS, "builder", |s| {
        s["data"]["client_secret"] = b64("second-secret")
    });
    let rotated = Instant::now();
    let new_first = eventually(
        "the first client's new token",
        Duration::from_secs(10),
        || secret_value(&api, NS, "first-token", "access_token").filter(|t| *t != first_token),
    )
    .await;
    eventually("the chained exchange", Duration::from_secs(10), || {
        sts.requests()
            .iter()
            .skip(before)
            .any(|r| one(r, "subject_token") == Ok(new_first.as_str()))
            .then_some(())
    })
    .await;
    assert!(rotated.elapsed() < Duration::from_secs(10));
    wait_ready(&api, NS, "second", "True", "TokenIssued").await;
    operator.stop().await;

    // A restart: neither client sends anything.
    let (vendor_before, sts_before) = (vendor.count(), sts.count());
    let again = Operator::start(&api, &[], 4);
    again.ready().await;
    sleep(2000).await;
    assert_eq!((vendor.count(), sts.count()), (vendor_before, sts_before));
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_cycles_are_invalid_and_send_nothing() {
    let api = ApiServer::start().await;
    let sts = StsServer::start(public(ACCESS_TOKEN_TYPE, Subjects::Known(vec![]))).await;
    let operator = Operator::start(&api, &[], 4);
    let to = |name: &str| exchanging(&sts.url(), json!({"oauthClientRef": {"name": name}}));
    oauth_client(&api, NS, "alone", to("alone"));
    oauth_client(&api, NS, "a", to("b"));
    oauth_client(&api, NS, "b", to("c"));
    oauth_client(&api, NS, "c", to("a"));
    let (_, _, message) = wait_ready(&api, NS, "alone", "False", "InvalidSpec").await;
    assert!(message.contains("alone -> alone"), "{message}");
    for name in ["a", "b", "c"] {
        let (_, _, message) = wait_ready(&api, NS, name, "False", "InvalidSpec").await;
        assert!(message.contains("cycle"), "{name}: {message}");
    }
    let (_, _, message) = condition(&api, NS, "a", "Ready").unwrap();
    assert!(message.contains("a -> b -> c -> a"), "{message}");
    assert_eq!(sts.count(), 0);
    operator.stop().await;
}

// === a ServiceAccount token ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_subject_is_verified_by_the_endpoint_and_needs_the_opt_in() {
    let api = ApiServer::start().await;
    let sts = StsServer::start(public(
        JWT_TYPE,
        Subjects::ServiceAccount {
            issuer: api.service_account_issuer().into(),
            key: VerifyingKey::Public(api.service_account_public_key(), vec!["ES256"]),
            audience: POOL.into(),
            subject: format!("system:serviceaccount:{NS}:ci"),
        },
    ))
    .await;
    let origin = url::Url::parse(&sts.url())
        .unwrap()
        .origin()
        .ascii_serialization();
    let subject = json!({"serviceAccountToken": {"serviceAccountName": "ci", "audience": POOL}});

    // Without --allow-service-account-tokens: InvalidSpec, no ServiceAccount read.
    let plain = Operator::start(&api, &[], 4);
    oauth_client(
        &api,
        NS,
        "federated",
        exchanging(&sts.url(), subject.clone()),
    );
    let (_, _, message) = wait_ready(&api, NS, "federated", "False", "InvalidSpec").await;
    assert!(
        message.contains("--allow-service-account-tokens"),
        "{message}"
    );
    plain.stop().await;

    let operator = Operator::start_with(&api, &[], 4, Options::with_service_account_tokens());
    // Not opted in: denied, no TokenRequest, nothing sent.
    api.create(
        SERVICEACCOUNTS,
        json!({"metadata": {"name": "ci", "namespace": NS}}),
    );
    let (_, _, message) =
        wait_ready(&api, NS, "federated", "False", "ServiceAccountTokenDenied").await;
    assert!(message.contains("has not opted in"), "{message}");
    assert_eq!(api.count("create serviceaccounts/token"), 0);
    assert_eq!(sts.count(), 0);

    // The owner opts in: the endpoint verifies the token against the API server's key.
    api.modify(SERVICEACCOUNTS, NS, "ci", |sa| {
        sa["metadata"]["annotations"] = json!({
            "oauth.token-operator.dev/token-audiences": POOL,
            "oauth.token-operator.dev/token-endpoints": origin,
        })
    });
    wait_ready(&api, NS, "federated", "True", "TokenIssued").await;
    assert_eq!(
        (api.count("create serviceaccounts/token"), sts.count()),
        (1, 1)
    );
    assert_eq!(one(&sts.requests()[0], "subject_token_type"), Ok(JWT_TYPE));
    operator.stop().await;

    // A restart reuses the token: no TokenRequest, no exchange.
    let again = Operator::start_with(&api, &[], 4, Options::with_service_account_tokens());
    again.ready().await;
    sleep(2000).await;
    assert_eq!(
        (api.count("create serviceaccounts/token"), sts.count()),
        (1, 1)
    );
    again.stop().await;
}

// === hostile endpoints and answers ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_echoes_the_subject_token_never_gets_it_into_the_status() {
    let api = ApiServer::start().await;
    let sts = StsServer::start(public(JWT_TYPE, Subjects::Known(vec![SUBJECT_ONE.into()]))).await;
    sts.echo_subject(true);
    let operator = Operator::start(&api, &[], 4);
    from_a_secret(&api, &sts, "echoed");
    let (_, _, message) = wait_ready(&api, NS, "echoed", "False", "InvalidRequest").await;
    let signature = SUBJECT_ONE.rsplit('.').next().unwrap();
    let text = status(&api, "echoed").to_string();
    for shown in [message.as_str(), text.as_str()] {
        assert!(!shown.contains(signature), "{shown}");
        assert!(!shown.contains("c3ViamVjdC1zaWduYXR1cmU"), "{shown}");
    }
    // The stop scans the logs and events for every subject token the endpoint saw.
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_type_of_n_a_is_kept_as_sent() {
    let api = ApiServer::start().await;
    let sts = StsServer::start(public(JWT_TYPE, Subjects::Known(vec![SUBJECT_ONE.into()]))).await;
    sts.not_applicable(true);
    let operator = Operator::start(&api, &[], 4);
    from_a_secret(&api, &sts, "n-a");
    wait_ready(&api, NS, "n-a", "True", "TokenIssued").await;
    assert_eq!(
        secret_value(&api, NS, "n-a-token", "token_type").as_deref(),
        Some("N_A")
    );
    assert_eq!(status(&api, "n-a")["tokenType"], "N_A");
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_echoes_the_subject_as_its_issued_token_type_is_not_stored() {
    let api = ApiServer::start().await;
    let sts = StsServer::start(public(JWT_TYPE, Subjects::Known(vec![SUBJECT_ONE.into()]))).await;
    sts.echo_subject_as_issued_type(true);
    let operator = Operator::start(&api, &[], 4);
    from_a_secret(&api, &sts, "typed");
    let (_, _, message) = wait_ready(&api, NS, "typed", "False", "InvalidResponse").await;
    assert!(message.contains("issued_token_type holds"), "{message}");
    assert!(api.get(SECRETS, NS, "typed-token").is_none());
    assert!(
        !status(&api, "typed")
            .to_string()
            .contains("c3ViamVjdC1zaWduYXR1cmU")
    );
    operator.stop().await;
}

/// Review of the token exchange change: a secretRef naming a managed Secret (the client's own,
/// or one leading back to it through oauthClientRef) exchanged about 150 times a second; a
/// legacy ServiceAccount token Secret went to any endpoint without the opt-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_secrets_and_cluster_credentials_are_never_subjects() {
    let api = ApiServer::start().await;
    let sts = StsServer::start(public(JWT_TYPE, Subjects::Known(vec![SUBJECT_ONE.into()]))).await;
    let operator = Operator::start(&api, &[], 4);
    from_a_secret(&api, &sts, "looped");
    wait_ready(&api, NS, "looped", "True", "TokenIssued").await;
    // Pointed at its own managed Secret: refused, no loop.
    api.modify(OAUTHCLIENTS, NS, "looped", |o| {
        o["spec"]["tokenExchange"]["subjectToken"]["secretRef"] =
            json!({"name": "looped-token", "key": "access_token"});
        o["metadata"]["generation"] = json!(2);
    });
    let (_, _, message) = wait_ready(&api, NS, "looped", "False", "InvalidSpec").await;
    assert!(message.contains("managed Secret"), "{message}");
    // Through another client: a -> oauthClientRef b, b -> secretRef a-token.
    oauth_client(
        &api,
        NS,
        "b",
        exchanging(
            &sts.url(),
            json!({"secretRef": {"name": "looped-token", "key": "access_token"}}),
        ),
    );
    wait_ready(&api, NS, "b", "False", "InvalidSpec").await;
    // A legacy ServiceAccount token Secret, without any opt-in.
    api.create(
        SECRETS,
        json!({"metadata": {"name": "legacy", "namespace": NS,
            "annotations": {"kubernetes.io/service-account.name": "default"}},
            "type": "kubernetes.io/service-account-token",
            "stringData": {"token": SUBJECT_ONE}}),
    );
    oauth_client(
        &api,
        NS,
        "legacy",
        exchanging(
            &sts.url(),
            json!({"secretRef": {"name": "legacy", "key": "token"}}),
        ),
    );
    let (_, _, message) =
        wait_ready(&api, NS, "legacy", "False", "ServiceAccountTokenDenied").await;
    assert!(
        message.contains("kubernetes.io/service-account-token"),
        "{message}"
    );
    sleep(3000).await;
    assert_eq!(sts.count(), 1, "only the first, legitimate exchange");
    operator.stop().await;
}
