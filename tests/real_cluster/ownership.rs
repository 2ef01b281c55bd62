//! The managed Secret's ownership on the real server: its controller ownerReference lets the real
//! garbage collector delete it with its OAuthClient, and server-side apply keeps what another
//! field manager adds while the operator restores what it wrote.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use oauth_token_operator::api::crd::OAuthClient;
use serde_json::{Value, json};

use crate::common::*;
use crate::support::control_plane::cluster;
use crate::support::vendors::{TokenServer, Tokens, Vendor};

const ID: &str = "ownership-client";
const SECRET: &str = "ownership-s3cret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_oauthclient_garbage_collects_its_managed_secret() {
    let Some(cluster) =
        cluster("deleting_an_oauthclient_garbage_collects_its_managed_secret").await
    else {
        return;
    };
    let client = cluster.client().await;
    let ns = cluster.namespace("gc").await;
    let (install, operator) = Install::watching(&cluster, "gc", &[&ns], json!({})).await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    credentials(&client, &ns, "creds", ID, SECRET).await;
    oauth_client(
        &client,
        &ns,
        "doomed",
        json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "creds"}}),
    )
    .await;
    let object = wait_ready(
        &client,
        &ns,
        "doomed",
        "True",
        "TokenIssued",
        Some(&operator),
    )
    .await;
    let secret = get_secret(&client, &ns, "doomed-token").await.unwrap();
    let owners = secret.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let owner = &owners[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        (
            "OAuthClient",
            "doomed",
            object["metadata"]["uid"].as_str().unwrap()
        )
    );
    assert_eq!(owner.controller, Some(true), "a controller ownerReference");
    let clients: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    delete(&clients, "doomed").await;
    eventually(
        "the garbage collector deletes the managed Secret",
        Duration::from_secs(30),
        Some(&operator),
        || async {
            get_secret(&client, &ns, "doomed-token")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    // The credentials Secret is not the OAuthClient's: it stays.
    assert!(get_secret(&client, &ns, "creds").await.is_some());
    drop(operator);
    assert_operator_never_refused(&cluster, &install.user());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_field_managers_edit_is_restored_and_its_own_keys_survive() {
    let Some(cluster) =
        cluster("another_field_managers_edit_is_restored_and_its_own_keys_survive").await
    else {
        return;
    };
    let client = cluster.client().await;
    let ns = cluster.namespace("ssa").await;
    let (install, operator) = Install::watching(&cluster, "ssa", &[&ns], json!({})).await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    credentials(&client, &ns, "creds", ID, SECRET).await;
    oauth_client(
        &client,
        &ns,
        "shared",
        json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "creds"},
               "target": {"labels": {"team": "a"}, "template": {"Authorization": "Bearer {{ access_token }}"}}}),
    )
    .await;
    wait_ready(
        &client,
        &ns,
        "shared",
        "True",
        "TokenIssued",
        Some(&operator),
    )
    .await;
    let issued = vendor.issued();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // Another tool applies (server-side, forced) over the operator's fields and adds its own.
    let edit = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "shared-token", "namespace": ns,
                     "labels": {"team": "b", "owner": "other-tool"},
                     "annotations": {"example.com/note": "kept"}},
        "data": {"access_token": b64("forged"), "Authorization": b64("Bearer forged"), "note": b64("mine")},
    });
    secrets
        .patch(
            "shared-token",
            &PatchParams::apply("other-tool").force(),
            &Patch::Apply(&edit),
        )
        .await
        .unwrap();
    let restored = eventually(
        "the operator's fields restored",
        Duration::from_secs(20),
        Some(&operator),
        || async {
            let secret = get_secret(&client, &ns, "shared-token").await?;
            let token = secret_text(&secret, "access_token")?;
            let label = secret.metadata.labels.as_ref()?.get("team")?.clone();
            let header = secret_text(&secret, "Authorization")?;
            (token != "forged" && label == "a" && header == format!("Bearer {token}"))
                .then_some(secret)
        },
    )
    .await;
    let token = secret_text(&restored, "access_token").unwrap();
    assert!(vendor.issued().contains(&token));
    // The other manager's own keys, labels and annotations are left alone.
    assert_eq!(secret_text(&restored, "note").as_deref(), Some("mine"));
    let labels = restored.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("owner").map(String::as_str), Some("other-tool"));
    let annotations = restored.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations.get("example.com/note").map(String::as_str),
        Some("kept")
    );
    // A forged token cannot be trusted: a new exchange, once.
    assert_eq!(vendor.count(), issued.len() + 1);
    drop(operator);
    assert_operator_never_refused(&cluster, &install.user());
}

/// Issue 23: a new client's managed Secret is written once, whole, by a create (which a Secret
/// created meanwhile refuses); the operator then owns its fields as an updater, so a key that a
/// later rendering drops is removed by a follow-up patch that also hands the fields over to the
/// applier (a plain apply would leave it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_clients_secret_is_created_whole_in_one_write_and_a_dropped_key_goes() {
    let Some(cluster) =
        cluster("a_new_clients_secret_is_created_whole_in_one_write_and_a_dropped_key_goes").await
    else {
        return;
    };
    let client = cluster.client().await;
    let ns = cluster.namespace("once").await;
    // The operator: one write of the new client's Secret.
    let (install, operator) = Install::watching(&cluster, "once", &[&ns], json!({})).await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    credentials(&client, &ns, "creds", ID, SECRET).await;
    let spec = |template: Value| {
        json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "creds"},
               "target": {"template": template}})
    };
    oauth_client(
        &client,
        &ns,
        "one",
        spec(json!({"Authorization": "Bearer {{ access_token }}", "extra": "x"})),
    )
    .await;
    wait_ready(&client, &ns, "one", "True", "TokenIssued", Some(&operator)).await;
    let audit = cluster.local.as_ref().map(|p| p.audit_events());
    let writes: Vec<_> = audit
        .iter()
        .flatten()
        .filter(|e| {
            e.user == install.user()
                && e.resource == "secrets"
                && e.namespace == ns
                // A create's URI has no name: the operator creates no other Secret here.
                && (e.verb == "create"
                    || (e.uri.contains("/secrets/one-token")
                        && matches!(e.verb.as_str(), "patch" | "update")))
        })
        .map(|e| (e.verb.clone(), e.code))
        .collect();
    if audit.is_some() {
        assert_eq!(writes.len(), 1, "one write: {writes:?}");
    }
    let secret = get_secret(&client, &ns, "one-token").await.unwrap();
    assert_eq!(secret_text(&secret, "extra").as_deref(), Some("x"));
    // A key dropped from the templates goes, and with it the create's update entry.
    let clients: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    clients
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"target": {"template": {"extra": null}}}})),
        )
        .await
        .unwrap();
    eventually(
        "the dropped key removed",
        Duration::from_secs(20),
        Some(&operator),
        || async {
            let secret = get_secret(&client, &ns, "one-token").await?;
            let managers: Vec<(String, String)> = secret
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .filter_map(|e| Some((e.manager.clone()?, e.operation.clone()?)))
                .collect();
            (secret_text(&secret, "extra").is_none()
                && secret_text(&secret, "Authorization").is_some()
                && !managers
                    .iter()
                    .any(|(m, o)| m == "oauth-token-operator" && o == "Update"))
            .then_some(())
        },
    )
    .await;
    drop(operator);
    assert_operator_never_refused(&cluster, &install.user());
}
