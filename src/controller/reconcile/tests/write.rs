//! The write step: create when absent, apply, re-render; what each answer of the API server
//! comes to.

use serde_json::json;

use super::*;
use crate::api::reason::Reason;
use crate::controller::memory::Pending;
use crate::controller::reconcile::write::{self, Rerendered, Stored};
use crate::oauth::credentials::Credentials;

/// The write step with the token of [`pending`].
async fn store(fixture: &Fixture, client: &OAuthClient, seen: &Snapshot) -> Stored {
    let settings = fixture.settings(client);
    write::store(
        client,
        &fixture.ctx,
        seen,
        &settings,
        pending(fixture, client),
    )
    .await
}

fn pending(fixture: &Fixture, client: &OAuthClient) -> Box<Pending> {
    let settings = fixture.settings(client);
    let credentials = Credentials::with_secret("client-1", "secret-1");
    Box::new(Pending {
        token: token(&fixture.clock, "tok-1"),
        fingerprint: crate::output::fingerprint::compute(
            &crate::output::fingerprint::new_salt(),
            &settings.exchange,
            &credentials,
        ),
        settings: settings.exchange.clone(),
        credentials_rv: Some("11".into()),
        credentials_digest: [1; 32],
    })
}

fn written(rv: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "demo-token", "namespace": NS, "resourceVersion": rv,
                        "annotations": {"oauth.token-operator.dev/issued-at": "x"}}})
}

#[tokio::test]
async fn a_new_token_creates_the_whole_secret_in_one_write() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let seen = fixture.snapshot(&client);
    fixture.api.on(
        "POST",
        &format!("/api/v1/namespaces/{NS}/secrets"),
        201,
        written("50"),
    );
    let stored = store(&fixture, &client, &seen).await;
    let Stored::Written {
        record,
        verified,
        exchanged_at,
        ..
    } = stored
    else {
        panic!("{stored:?}");
    };
    assert_eq!(record.trusted_rv.as_deref(), Some("50"));
    assert_eq!(record.written.before, [None]);
    assert!(verified.matched);
    assert_eq!(exchanged_at, fixture.clock.now());
    let sent = fixture.api.seen();
    // One write (issue 23: it was a create of what identifies the Secret, then an apply): the
    // create carries the token, the seal and the ownerReference.
    assert_eq!(sent.len(), 1);
    assert!(sent[0].body["data"]["access_token"].is_string());
    assert!(sent[0].body["metadata"]["annotations"]["oauth.token-operator.dev/mac"].is_string());
    assert_eq!(
        sent[0].body["metadata"]["ownerReferences"][0]["uid"],
        "uid-demo"
    );
    assert!(sent[0].uri.contains("fieldManager=oauth-token-operator"));
}

#[tokio::test]
async fn a_secret_created_by_someone_else_meanwhile_is_a_conflict_and_never_applied() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let seen = fixture.snapshot(&client);
    fixture
        .api
        .on(
            "POST",
            &format!("/api/v1/namespaces/{NS}/secrets"),
            409,
            status_body(409, "AlreadyExists", "exists"),
        )
        .on(
            "GET",
            &path("secrets", "demo-token"),
            200,
            json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "demo-token", "namespace": NS, "resourceVersion": "7"}}),
        );
    let stored = store(&fixture, &client, &seen).await;
    let Stored::Refused { failure, kept } = stored else {
        panic!("{stored:?}");
    };
    assert_eq!(failure.reason, Reason::SecretConflict);
    assert!(kept.is_some(), "the token is kept for a later attempt");
    assert!(!fixture.api.lines().iter().any(|l| l.starts_with("PATCH")));
}

#[tokio::test]
async fn a_write_the_api_server_refuses_is_a_failure_with_its_message_and_the_token_kept() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let mut seen = fixture.snapshot(&client);
    seen.secret = SecretState::Owned(None);
    fixture.api.on(
        "PATCH",
        &path("secrets", "demo-token"),
        422,
        status_body(
            422,
            "Invalid",
            "Secret \"demo-token\" is invalid: data: Too long: tok-1",
        ),
    );
    let stored = store(&fixture, &client, &seen).await;
    let Stored::Refused { failure, kept } = stored else {
        panic!("{stored:?}");
    };
    assert_eq!(failure.reason, Reason::InvalidSpec);
    assert!(failure.message.contains("Too long"), "{}", failure.message);
    assert!(
        !failure.message.contains("tok-1"),
        "the token is scrubbed: {}",
        failure.message
    );
    assert!(kept.is_some());
    assert_eq!(fixture.api.lines().len(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn a_transient_failure_is_retried_in_place_then_interrupts_with_the_token_kept() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let mut seen = fixture.snapshot(&client);
    seen.secret = SecretState::Owned(None);
    fixture.api.on(
        "PATCH",
        &path("secrets", "demo-token"),
        503,
        status_body(503, "ServiceUnavailable", "try later"),
    );
    let stored = store(&fixture, &client, &seen).await;
    let Stored::Interrupted { error, kept } = stored else {
        panic!("{stored:?}");
    };
    assert_eq!(error.metric_label(), "write_secret");
    assert_eq!(kept.token.access_token.expose(), "tok-1");
    assert_eq!(fixture.api.lines().len(), 3, "three attempts in place");
}

#[tokio::test]
async fn a_transient_failure_that_passes_costs_one_more_write_and_no_exchange() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let mut seen = fixture.snapshot(&client);
    seen.secret = SecretState::Owned(None);
    let secret = path("secrets", "demo-token");
    fixture.api.on_times(
        "PATCH",
        &secret,
        1,
        409,
        status_body(409, "Conflict", "the object has been modified"),
    );
    fixture.api.on("PATCH", &secret, 200, written("81"));
    let stored = store(&fixture, &client, &seen).await;
    assert!(matches!(stored, Stored::Written { .. }), "{stored:?}");
    assert_eq!(fixture.api.lines().len(), 2);
}

#[tokio::test]
async fn a_rerender_writes_nothing_when_the_token_read_back_is_not_intact() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let seen = fixture.snapshot(&client);
    let mut tampered = managed_secret(&fixture, &client, &token(&fixture.clock, "tok-1"), "60");
    tampered["data"]["access_token"] = json!("YXR0YWNrZXI=");
    fixture
        .api
        .on("GET", &path("secrets", "demo-token"), 200, tampered);
    let rerendered =
        write::rerender(&client, &fixture.ctx, &seen, &fixture.settings(&client)).await;
    assert!(
        matches!(rerendered, Rerendered::NotIntact),
        "{rerendered:?}"
    );
    assert_eq!(
        fixture.api.lines(),
        [format!("GET {}", path("secrets", "demo-token"))]
    );
}

#[tokio::test]
async fn a_rerender_writes_the_intact_token_again() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let seen = fixture.snapshot(&client);
    let secret = managed_secret(&fixture, &client, &token(&fixture.clock, "tok-1"), "70");
    fixture
        .api
        .on("GET", &path("secrets", "demo-token"), 200, secret)
        .on("PATCH", &path("secrets", "demo-token"), 200, written("71"));
    let rerendered =
        write::rerender(&client, &fixture.ctx, &seen, &fixture.settings(&client)).await;
    let Rerendered::Written(record) = rerendered else {
        panic!("{rerendered:?}");
    };
    assert_eq!(record.trusted_rv.as_deref(), Some("71"));
    let patch = &fixture.api.seen()[1];
    use base64::Engine as _;
    let value = base64::engine::general_purpose::STANDARD
        .decode(patch.body["data"]["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(value, b"tok-1");
}
