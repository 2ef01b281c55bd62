//! The inputs step: what it reads, and what the request will send.

use serde_json::json;

use super::*;
use crate::api::reason::Reason;
use crate::controller::reconcile::credentials::Loaded;
use crate::controller::reconcile::inputs::{self, Ready};

#[tokio::test]
async fn credentials_read_while_observing_are_not_read_again() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let mut seen = fixture.snapshot(&client);
    seen.credentials = Some(Loaded {
        resource_version: Some("11".into()),
        credentials: Ok(crate::oauth::credentials::Credentials::with_secret(
            "client-1", "secret-1",
        )),
    });
    let settings = fixture.settings(&client);
    let loaded = inputs::load(&client, &fixture.ctx, &seen, &settings, None)
        .await
        .unwrap();
    assert!(
        matches!(loaded.ready, Ready::Send { .. }),
        "{:?}",
        loaded.ready
    );
    assert!(loaded.trust.resource_version.is_none(), "the default trust");
    assert!(fixture.api.lines().is_empty(), "{:?}", fixture.api.lines());
}

#[tokio::test]
async fn a_missing_credentials_secret_is_refused_before_any_request() {
    let fixture = Fixture::new();
    fixture.api.on(
        "GET",
        &path("secrets", "creds"),
        404,
        status_body(404, "NotFound", "secrets \"creds\" not found"),
    );
    let client = client(spec("http://127.0.0.1:9/token"));
    let seen = fixture.snapshot(&client);
    let settings = fixture.settings(&client);
    let loaded = inputs::load(&client, &fixture.ctx, &seen, &settings, None)
        .await
        .unwrap();
    let Ready::Refused(failure) = loaded.ready else {
        panic!("{:?}", loaded.ready);
    };
    assert_eq!(failure.reason, Reason::CredentialsNotFound);
    assert_eq!(
        fixture.api.lines(),
        [format!("GET {}", path("secrets", "creds"))]
    );
}

#[tokio::test]
async fn an_api_error_reading_the_credentials_ends_the_step_with_it() {
    let fixture = Fixture::new();
    fixture.api.on(
        "GET",
        &path("secrets", "creds"),
        503,
        status_body(503, "ServiceUnavailable", "etcd is down"),
    );
    let client = client(spec("http://127.0.0.1:9/token"));
    let seen = fixture.snapshot(&client);
    let settings = fixture.settings(&client);
    let error = inputs::load(&client, &fixture.ctx, &seen, &settings, None)
        .await
        .unwrap_err();
    assert_eq!(error.metric_label(), "read_credentials");
}

#[tokio::test]
async fn a_ca_bundle_that_names_no_certificate_is_refused_and_not_remembered() {
    let fixture = Fixture::new();
    let mut with_bundle = spec("https://127.0.0.1:9/token");
    with_bundle["caBundleRef"] = json!({"kind": "ConfigMap", "name": "corp-ca", "key": "ca.crt"});
    let client = client(with_bundle);
    fixture.api.on(
        "GET",
        &path("configmaps", "corp-ca"),
        200,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "corp-ca", "namespace": NS, "resourceVersion": "5"},
               "data": {"ca.crt": "not a certificate"}}),
    );
    let mut seen = fixture.snapshot(&client);
    seen.credentials = Some(Loaded {
        resource_version: Some("11".into()),
        credentials: Ok(crate::oauth::credentials::Credentials::with_secret(
            "client-1", "secret-1",
        )),
    });
    let settings = fixture.settings(&client);
    let loaded = inputs::load(&client, &fixture.ctx, &seen, &settings, None)
        .await
        .unwrap();
    assert!(
        matches!(loaded.ready, Ready::Refused(_)),
        "{:?}",
        loaded.ready
    );
    assert_eq!(loaded.trust.resource_version.as_deref(), Some("5"));
    assert!(matches!(
        loaded.trust.handle,
        crate::controller::memory::Change::Clear
    ));
}

/// Security round three, issue 20, item 3: the subject of a token exchange that names another
/// OAuthClient read that client's `status.secretName` (or `spec.target.name`), and the
/// references further down its chain, and put them into request paths unchecked: a status or
/// spec that says `../../victim/secrets/victim-token` had the operator GET another namespace's
/// Secret (behind a front end that normalises dot-segments) and send its token. Each is
/// `InvalidSpec` naming where the name came from, and nothing is read under it.
#[tokio::test]
async fn names_read_from_a_subject_client_never_reach_a_request_path() {
    const CLIMB: &str = "../../victim/secrets/victim-token";
    let referenced_path =
        "/apis/oauth.token-operator.dev/v1alpha1/namespaces/team-a/oauthclients/first";
    let ready = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "TokenIssued",
        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    let referenced = |spec: serde_json::Value, status: serde_json::Value| {
        json!({
            "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
            "metadata": {"name": "first", "namespace": NS, "uid": "uid-first", "generation": 1, "resourceVersion": "5"},
            "spec": spec, "status": status,
        })
    };
    let plain =
        json!({"tokenUrl": "https://idp.example/token", "credentialsSecretRef": {"name": "c"}});
    let mut its_status = ready.clone();
    its_status["secretName"] = json!(CLIMB);
    let mut its_target = plain.clone();
    its_target["target"] = json!({"name": CLIMB});
    let mut its_chain = plain.clone();
    its_chain["grantType"] = json!("TokenExchange");
    its_chain["tokenExchange"] =
        json!({"subjectToken": {"oauthClientRef": {"name": "../../victim/oauthclients/x"}}});
    let cases = [
        ("status.secretName", referenced(plain.clone(), its_status)),
        ("spec.target.name", referenced(its_target, ready.clone())),
        (
            "oauthClientRef.name of OAuthClient first",
            referenced(its_chain, ready.clone()),
        ),
    ];
    for (field, first) in cases {
        let fixture = Fixture::new();
        fixture.api.on("GET", referenced_path, 200, first);
        let client = client(json!({
            "tokenUrl": "http://127.0.0.1:9/token", "grantType": "TokenExchange",
            "clientAuthMethod": "None", "audience": "pool",
            "tokenExchange": {"subjectToken": {"oauthClientRef": {"name": "first"}}},
        }));
        let seen = fixture.snapshot(&client);
        let settings = fixture.settings(&client);
        let loaded = inputs::load(&client, &fixture.ctx, &seen, &settings, None).await;
        let lines = fixture.api.lines();
        assert!(
            lines
                .iter()
                .all(|l| !l.contains("..") && !l.contains("victim")),
            "{field}: {lines:?}"
        );
        let Ready::Refused(failure) = loaded.unwrap().ready else {
            panic!("{field}: not refused");
        };
        assert_eq!(failure.reason, Reason::InvalidSpec, "{field}");
        assert!(
            failure.message.contains(field),
            "{field}: {}",
            failure.message
        );
        assert_eq!(lines, [format!("GET {referenced_path}")], "{field}");
    }
}
