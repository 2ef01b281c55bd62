//! The managed Secret's ownership on the real server: its controller ownerReference lets the real
//! garbage collector delete it with its OAuthClient, and server-side apply keeps what another
//! field manager adds while the operator restores what it wrote.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use oauth_token_operator::api::crd::OAuthClient;
use serde_json::json;

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
