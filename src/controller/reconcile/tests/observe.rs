//! The observe step: what it reads, and what the snapshot says.

use std::time::Instant;

use serde_json::json;

use super::*;
use crate::controller::memory::{Change, Written};
use crate::controller::own_writes::WriteOf;
use crate::controller::reconcile::observe::observe;

#[tokio::test]
async fn a_secret_the_caches_do_not_show_is_absent_without_a_request() {
    let fixture = Fixture::new();
    fixture.cache_secret(&credentials_secret("11"), false);
    let client = client(spec("http://127.0.0.1:9/token"));
    let seen = observe(&client, &fixture.ctx).await.unwrap();
    assert_eq!(seen.secret, SecretState::Absent);
    assert_eq!(seen.credentials_rv.as_deref(), Some("11"));
    assert!(
        seen.credentials.is_none(),
        "nothing made reading them necessary"
    );
    assert_eq!(seen.now, fixture.clock.now());
    assert!(fixture.api.lines().is_empty(), "{:?}", fixture.api.lines());
}

#[tokio::test]
async fn a_secret_of_another_owner_is_a_conflict_seen_by_its_metadata_alone() {
    let fixture = Fixture::new();
    let foreign = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "demo-token", "namespace": NS, "resourceVersion": "21",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "other", "controller": true}]},
        "data": {"access_token": "c2VjcmV0"},
    });
    fixture.cache_secret(&foreign, false);
    let mut meta = foreign.clone();
    meta["kind"] = json!("PartialObjectMetadata");
    meta["apiVersion"] = json!("meta.k8s.io/v1");
    meta.as_object_mut().unwrap().remove("data");
    fixture
        .api
        .on("GET", &path("secrets", "demo-token"), 200, meta);
    let seen = observe(&client(spec("http://127.0.0.1:9/token")), &fixture.ctx)
        .await
        .unwrap();
    assert!(
        matches!(&seen.secret, SecretState::Conflict(m) if m.contains("demo-token")),
        "{:?}",
        seen.secret
    );
    let requests = fixture.api.seen();
    assert_eq!(requests.len(), 1, "{:?}", fixture.api.lines());
    assert!(
        requests[0].accept.contains("PartialObjectMetadata"),
        "another owner's Secret is never read in full: {}",
        requests[0].accept
    );
}

#[tokio::test]
async fn an_intact_secret_read_once_is_trusted_at_its_version_and_its_fingerprint_checked() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let token = token(&fixture.clock, "token-1");
    let secret = managed_secret(&fixture, &client, &token, "31");
    fixture.cache_secret(&secret, true);
    fixture.cache_secret(&credentials_secret("11"), false);
    fixture
        .api
        .on("GET", &path("secrets", "demo-token"), 200, secret)
        .on(
            "GET",
            &path("secrets", "creds"),
            200,
            credentials_secret("11"),
        );
    let seen = observe(&client, &fixture.ctx).await.unwrap();
    let SecretState::Owned(Some(stored)) = seen.secret else {
        panic!("{:?}", seen.secret);
    };
    assert!(stored.current, "issued for these settings and credentials");
    assert!(matches!(&seen.found.caches.trusted_rv, Change::Set(rv) if rv == "31"));
    assert!(matches!(&seen.found.caches.verified, Change::Set(v) if v.matched));
    assert!(
        seen.intact_token.is_some(),
        "its token may be written again"
    );
    assert!(seen.credentials.is_some(), "read to check the fingerprint");
    assert_eq!(
        fixture.api.lines(),
        [
            format!("GET {}", path("secrets", "demo-token")),
            format!("GET {}", path("secrets", "creds"))
        ]
    );
}

#[tokio::test]
async fn the_operators_own_write_is_believed_over_a_cache_that_has_not_caught_up() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let token = token(&fixture.clock, "token-1");
    let written = managed_secret(&fixture, &client, &token, "41");
    let mut stale = written.clone();
    stale["metadata"]["resourceVersion"] = json!("40");
    fixture.cache_secret(&stale, true);
    fixture.cache_secret(&credentials_secret("11"), false);
    fixture.api.on(
        "GET",
        &path("secrets", "creds"),
        200,
        credentials_secret("11"),
    );
    let annotations: std::collections::BTreeMap<String, String> =
        serde_json::from_value(written["metadata"]["annotations"].clone()).unwrap();
    // The write made version 41, which the watches have not shown yet.
    let (secret_key, writer) = (
        NamespacedName::new(NS, "demo-token"),
        NamespacedName::new(NS, "demo"),
    );
    let own_writes = &fixture.ctx.own_writes;
    own_writes.begin(WriteOf::Secret, &secret_key, &writer);
    assert_eq!(
        own_writes.end(WriteOf::Secret, &secret_key, &writer, Some("41")),
        None
    );
    fixture.ctx.memories.record(
        &NamespacedName::new(NS, "demo"),
        crate::controller::memory::Learned {
            caches: crate::controller::memory::CacheUpdate {
                written: Change::Set(Written {
                    before: vec![Some("40".into())],
                    at: Instant::now(),
                    annotations: crate::controller::secret_index::OurAnnotations::of(&annotations),
                }),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let seen = observe(&client, &fixture.ctx).await.unwrap();
    assert!(
        matches!(seen.secret, SecretState::Owned(Some(t)) if t.issued_at == token.issued_at),
        "{:?}",
        seen.secret
    );
    // Its fingerprint was checked against the credentials (one read), the Secret never read.
    assert_eq!(
        fixture.api.lines(),
        [format!("GET {}", path("secrets", "creds"))]
    );
}

#[tokio::test]
async fn a_spec_without_a_ca_bundle_lets_go_of_the_bundles_client() {
    let fixture = Fixture::new();
    let client = client(spec("http://127.0.0.1:9/token"));
    let key = NamespacedName::new(NS, "demo");
    let held = fixture
        .ctx
        .shared
        .transport
        .client(&crate::oauth::transport::trust::Trust::Default, None, NS)
        .unwrap();
    fixture.ctx.memories.record(
        &key,
        crate::controller::memory::Learned {
            handles: crate::controller::memory::HandlesUpdate {
                trust: Change::Set(crate::controller::memory::TrustHandle {
                    reference: serde_json::from_value(
                        json!({"kind": "ConfigMap", "name": "ca", "key": "ca.crt"}),
                    )
                    .unwrap(),
                    resource_version: "1".into(),
                    client: held,
                }),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let seen = observe(&client, &fixture.ctx).await.unwrap();
    assert!(seen.found.trust_released);
}
