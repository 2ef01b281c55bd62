//! The exchange step: a place at the gate, the request, and what it came to.

use super::*;
use crate::api::reason::Reason;
use crate::controller::memory::Change;
use crate::controller::reconcile::credentials::Loaded;
use crate::controller::reconcile::exchange::{self, Exchanged};
use crate::decide::Trigger;
use crate::oauth::credentials::Credentials;
use crate::oauth::transport::trust::Trust;

/// A token endpoint on 127.0.0.1 that answers every POST with `status` and `body`.
async fn endpoint(status: u16, body: &'static str) -> String {
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || async move {
            (
                http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/token")
}

fn as_read() -> Loaded {
    Loaded {
        resource_version: Some("11".into()),
        credentials: Ok(Credentials::with_secret("client-1", "secret-1")),
    }
}

#[tokio::test]
async fn the_gate_counts_requests_by_host_and_port() {
    let fixture = Fixture::new();
    for (url, expected) in [
        ("https://idp.example/token", "idp.example:443"),
        ("http://idp.example./token", "idp.example:80"),
        ("https://10.0.0.1:8443/t", "10.0.0.1:8443"),
    ] {
        let settings = fixture.settings(&client(spec(url)));
        assert_eq!(exchange::endpoint(&settings), expected);
    }
}

#[tokio::test]
async fn a_token_comes_back_fingerprinted_with_the_credentials_as_read_and_counted_once() {
    let fixture = Fixture::new();
    let url = endpoint(
        200,
        r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}"#,
    )
    .await;
    let client = client(spec(&url));
    let seen = fixture.snapshot(&client);
    let settings = fixture.settings(&client);
    let pass = exchange::admit(&fixture.ctx, &seen, &settings).unwrap();
    let http = fixture
        .ctx
        .shared
        .transport
        .client(&Trust::Default, None, NS)
        .unwrap();
    let credentials = Credentials::with_secret("client-1", "secret-1");
    let read = as_read();
    let sent = exchange::send(
        fixture.ctx.shared.clone(),
        pass,
        Trigger::NoToken,
        settings.clone(),
        read.clone(),
        credentials.clone(),
        http,
    )
    .await;
    assert_eq!(
        fixture.ctx.shared.gate.load().active,
        0,
        "the pass is given back"
    );
    assert_eq!(sent.counted.result, "success");
    assert_eq!(sent.counted.trigger, Trigger::NoToken);
    assert!(sent.counted.seconds.is_some());
    assert!(
        matches!(sent.identity, Change::Clear),
        "no identity client to keep"
    );
    let Exchanged::Issued(pending) = sent.exchanged else {
        panic!("{:?}", sent.exchanged);
    };
    assert_eq!(pending.token.access_token.expose(), "tok-1");
    assert_eq!(pending.token.issued_at, fixture.clock.now(), "by the clock");
    assert_eq!(pending.credentials_rv.as_deref(), Some("11"));
    assert!(crate::output::fingerprint::matches(
        &pending.fingerprint,
        &settings.exchange,
        &credentials
    ));
    assert!(pending.issued_with(Some(read.digest(&fixture.ctx.shared.credentials_key))));
}

#[tokio::test]
async fn a_refusal_at_the_endpoint_is_a_failure_counted_with_its_reason() {
    let fixture = Fixture::new();
    let url = endpoint(401, r#"{"error":"invalid_client"}"#).await;
    let client = client(spec(&url));
    let seen = fixture.snapshot(&client);
    let settings = fixture.settings(&client);
    let pass = exchange::admit(&fixture.ctx, &seen, &settings).unwrap();
    let http = fixture
        .ctx
        .shared
        .transport
        .client(&Trust::Default, None, NS)
        .unwrap();
    let credentials = Credentials::with_secret("client-1", "secret-1");
    let sent = exchange::send(
        fixture.ctx.shared.clone(),
        pass,
        Trigger::RefreshDue,
        settings.clone(),
        as_read(),
        credentials,
        http,
    )
    .await;
    let Exchanged::Failed(failure) = sent.exchanged else {
        panic!("{:?}", sent.exchanged);
    };
    assert_eq!(failure.reason, Reason::InvalidClient);
    assert_eq!(sent.counted.result, "InvalidClient");
    assert!(!failure.message.contains("secret-1"));
}

#[tokio::test]
async fn a_full_gate_defers_without_a_request() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let seen = fixture.snapshot(&client);
    let settings = fixture.settings(&client);
    // The whole budget (4) in flight, held by other clients of the namespace.
    let gate = &fixture.ctx.shared.gate;
    let held: Vec<_> = (0..gate.budget())
        .map(|i| {
            let other = crate::controller::gate::QueueRef::new(&format!("other-{i}"))
                .within(&seen.key.namespace);
            gate.enter("127.0.0.1:9", fixture.ctx.scope, &other)
                .unwrap()
        })
        .collect();
    assert!(exchange::admit(&fixture.ctx, &seen, &settings).is_none());
    assert_eq!(gate.load().waiting, 1, "queued, not sent");
    drop(held);
}
