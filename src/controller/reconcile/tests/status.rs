//! The status step: written only when it changed; a deleted client has none to write.

use super::*;
use crate::api::crd::OAuthClientStatus;
use crate::controller::reconcile::status;

fn status_path() -> String {
    format!("/apis/oauth.token-operator.dev/v1alpha1/namespaces/{NS}/oauthclients/demo/status")
}

#[tokio::test]
async fn an_unchanged_status_is_not_written() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let current = OAuthClientStatus {
        consecutive_failures: Some(0),
        ..Default::default()
    };
    status::write(&client, &fixture.ctx, &current, &current.clone())
        .await
        .unwrap();
    assert!(fixture.api.lines().is_empty());
}

#[tokio::test]
async fn a_changed_status_is_applied_whole_and_a_deleted_client_is_no_error() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let desired = OAuthClientStatus {
        consecutive_failures: Some(2),
        ..Default::default()
    };
    fixture.api.on(
        "PATCH",
        &status_path(),
        404,
        status_body(404, "NotFound", "gone"),
    );
    status::write(
        &client,
        &fixture.ctx,
        &OAuthClientStatus::default(),
        &desired,
    )
    .await
    .unwrap();
    let sent = fixture.api.seen();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].uri.contains("fieldManager=oauth-token-operator"),
        "{}",
        sent[0].uri
    );
    assert_eq!(sent[0].body["status"]["consecutiveFailures"], 2);
    assert_eq!(sent[0].body["kind"], "OAuthClient");
}

#[tokio::test]
async fn a_status_write_that_keeps_failing_is_an_error_after_three_attempts() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let desired = OAuthClientStatus {
        consecutive_failures: Some(1),
        ..Default::default()
    };
    fixture.api.on(
        "PATCH",
        &status_path(),
        500,
        status_body(500, "InternalError", "boom"),
    );
    let error = status::write(
        &client,
        &fixture.ctx,
        &OAuthClientStatus::default(),
        &desired,
    )
    .await
    .unwrap_err();
    assert_eq!(error.metric_label(), "write_status");
    assert_eq!(fixture.api.lines().len(), 3);
}
