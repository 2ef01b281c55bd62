//! The API-server double behaves like the real API server where the controller relies on it.

mod support;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::PartialObjectMeta;
use oauth_token_operator::api::crd::OAuthClient;
use serde_json::json;
use support::apiserver::{ApiServer, Matcher, OAUTHCLIENTS, SECRETS};

fn secret(name: &str, labels: serde_json::Value) -> Secret {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "stringData": {"k": "v"}}),
    )
    .unwrap()
}

#[tokio::test]
async fn list_pages_selectors_and_metadata_only() {
    let api = ApiServer::start_unlogged().await;
    let secrets: Api<Secret> = Api::namespaced(api.client(), "ns");
    for i in 0..7 {
        let labels = if i % 2 == 0 {
            json!({"even": "yes"})
        } else {
            json!({})
        };
        secrets
            .create(&PostParams::default(), &secret(&format!("s{i}"), labels))
            .await
            .unwrap();
    }
    let page = secrets.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(page.items.len(), 3);
    let token = page.metadata.continue_.clone().unwrap();
    let rest = secrets
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 4);
    let even = secrets
        .list(&ListParams::default().labels("even=yes"))
        .await
        .unwrap();
    assert_eq!(even.items.len(), 4);
    let meta: Api<PartialObjectMeta<Secret>> = Api::namespaced(api.client(), "ns");
    let list = meta.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 7);
    assert_eq!(api.count("list secrets"), 4);
}

#[tokio::test]
async fn stale_updates_conflict_and_apply_owns_fields() {
    let api = ApiServer::start_unlogged().await;
    let secrets: Api<Secret> = Api::namespaced(api.client(), "ns");
    let created = secrets
        .create(&PostParams::default(), &secret("a", json!({})))
        .await
        .unwrap();
    let mut changed = created.clone();
    changed.metadata.labels = Some([("x".to_owned(), "1".to_owned())].into());
    secrets
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    let err = secrets
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(e) if e.code == 409));

    let params = PatchParams::apply("me").force();
    let config = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b", "annotations": {"a": "1", "b": "2"}}, "data": {}});
    secrets
        .patch("b", &params, &Patch::Apply(&config))
        .await
        .unwrap();
    let config = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b", "annotations": {"a": "1"}}, "data": {}});
    let applied = secrets
        .patch("b", &params, &Patch::Apply(&config))
        .await
        .unwrap();
    let annotations = applied.metadata.annotations.unwrap();
    assert!(
        annotations.contains_key("a") && !annotations.contains_key("b"),
        "a field no longer applied is removed"
    );
}

#[tokio::test]
async fn watches_resume_bookmark_and_expire() {
    let api = ApiServer::start_unlogged().await;
    api.set_bookmark_interval(std::time::Duration::from_millis(50));
    let secrets: Api<Secret> = Api::namespaced(api.client(), "ns");
    let list = secrets.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    secrets
        .create(&PostParams::default(), &secret("w", json!({})))
        .await
        .unwrap();
    let mut stream = secrets
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default()
            },
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(first, WatchEvent::Added(s) if s.metadata.name.as_deref() == Some("w")));
    let second = stream.next().await.unwrap().unwrap();
    assert!(matches!(second, WatchEvent::Bookmark(_)));

    api.compact();
    let mut stream = secrets
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let expired = stream.next().await.unwrap().unwrap();
    assert!(matches!(expired, WatchEvent::Error(e) if e.code == 410));

    api.fail_next(Matcher::new("watch", "secrets"), 1, 500);
    let failed = match secrets.watch(&WatchParams::default(), "0").await {
        Err(_) => true,
        Ok(stream) => stream.boxed().next().await.is_some_and(|e| e.is_err()),
    };
    assert!(failed, "an injected fault fails the watch");
}

#[tokio::test]
async fn finalizers_status_generation_and_schema() {
    let api = ApiServer::start_unlogged().await;
    let clients: Api<OAuthClient> = Api::namespaced(api.client(), "ns");
    let client: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "c", "finalizers": ["test/hold"]},
        "spec": {"provider": "iotspot", "credentialsSecretRef": {"name": "x"}},
    }))
    .unwrap();
    let created = clients
        .create(&PostParams::default(), &client)
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let stored = api.get(OAUTHCLIENTS, "ns", "c").unwrap();
    assert_eq!(
        stored["spec"]["credentialsSecretRef"]["clientIdKey"], "client_id",
        "defaults applied"
    );

    let params = PatchParams::apply("op").force();
    let status = json!({"apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient", "status": {"secretName": "x"}});
    let after = clients
        .patch_status("c", &params, &Patch::Apply(&status))
        .await
        .unwrap();
    assert_eq!(
        after.metadata.generation,
        Some(1),
        "status writes keep the generation"
    );
    clients
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"audience": "a"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        api.get(OAUTHCLIENTS, "ns", "c").unwrap()["metadata"]["generation"],
        2
    );

    // A field the schema would prune is refused and recorded.
    let bad = json!({"apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient", "status": {"bogus": 1}});
    assert!(
        clients
            .patch_status("c", &params, &Patch::Apply(&bad))
            .await
            .is_err()
    );
    assert_eq!(api.violations().len(), 1);
    // (CEL rules are not evaluated by the double: tests/real_cluster/schema.rs proves them on a
    // real kube-apiserver.)

    clients.delete("c", &DeleteParams::default()).await.unwrap();
    assert!(api.get(OAUTHCLIENTS, "ns", "c").unwrap()["metadata"]["deletionTimestamp"].is_string());
    clients
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(api.get(OAUTHCLIENTS, "ns", "c").is_none());
    assert!(api.list(SECRETS, None).is_empty());
}

#[tokio::test]
async fn events_are_selected_by_the_object_they_are_about() {
    use k8s_openapi::api::events::v1::Event;
    let api = ApiServer::start_unlogged().await;
    for (name, about, kind) in [
        ("a.1", "a", "OAuthClient"),
        ("a.2", "a", "OAuthClient"),
        ("b.1", "b", "OAuthClient"),
        ("a.3", "a", "Secret"),
    ] {
        api.create(
            support::apiserver::EVENTS,
            json!({"metadata": {"name": name, "namespace": "ns"}, "reason": "TokenIssued",
                   "regarding": {"kind": kind, "name": about, "namespace": "ns"}}),
        );
    }
    let events: Api<Event> = Api::namespaced(api.client(), "ns");
    let names = |selector: &str| {
        let events = events.clone();
        let selector = selector.to_owned();
        async move {
            let list = events
                .list(&ListParams::default().fields(&selector))
                .await
                .unwrap();
            list.items
                .into_iter()
                .map(|e| e.metadata.name.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names("regarding.kind=OAuthClient,regarding.name=a").await,
        ["a.1", "a.2"]
    );
    assert_eq!(names("regarding.name=a").await, ["a.1", "a.2", "a.3"]);
    assert_eq!(names("regarding.name!=a,reason=TokenIssued").await, ["b.1"]);
}
