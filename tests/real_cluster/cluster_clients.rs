//! ClusterOAuthClient on the real server, with the chart's `clusterOAuthClients.enabled` rights
//! only: one token request, a copy in every selected namespace (by name and by label), a
//! namespace labelled in and out, a copy edited and deleted, a conflict in one namespace that
//! never blocks the others, the credential rotated, a restart that sends and writes nothing, and
//! deletion through the real garbage collector.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use oauth_token_operator::api::cluster_crd::ClusterOAuthClient;
use oauth_token_operator::api::crd::OAuthClient;
use serde_json::{Value, json};

use crate::common::*;
use crate::support::control_plane::{Cluster, Options, own_cluster};
use crate::support::process::Process;
use crate::support::vendors::{TokenServer, Tokens, Vendor};

const ID: &str = "cluster-client";
const SECRET: &str = "cluster-s3cret";
const ROTATED: &str = "cluster-s3cret-rotated";
const TARGET: &str = "vendor-token";

/// The ClusterOAuthClient as JSON.
async fn get(client: &kube::Client, name: &str) -> Option<Value> {
    let api: Api<ClusterOAuthClient> = Api::all(client.clone());
    let object = api.get_opt(name).await.unwrap()?;
    Some(serde_json::to_value(object).unwrap())
}

/// The copy's access token in `ns`, when there is one.
async fn copy(client: &kube::Client, ns: &str) -> Option<String> {
    secret_text(&get_secret(client, ns, TARGET).await?, "access_token")
}

/// Waits until the status says `written/selected` with Distributed `reason`.
async fn wait_targets(
    client: &kube::Client,
    summary: &str,
    reason: &str,
    operator: &Process,
) -> Value {
    eventually(
        &format!("targets {summary}, Distributed {reason}"),
        Duration::from_secs(30),
        Some(operator),
        || async {
            let object = get(client, "vendor").await?;
            let (_, r, _) = condition_of(&object, "Distributed")?;
            (object["status"]["targets"]["summary"] == summary && r == reason).then_some(object)
        },
    )
    .await
}

async fn label(client: &kube::Client, ns: &str, labels: Value) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(
        ns,
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": labels}})),
    )
    .await
    .unwrap();
}

async fn versions(client: &kube::Client, namespaces: &[&str]) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for ns in namespaces {
        if let Some(s) = get_secret(client, ns, TARGET).await {
            all.insert((*ns).to_owned(), s.metadata.resource_version.unwrap());
        }
    }
    all
}

struct Namespaces {
    listed: String,
    labelled: String,
    later: String,
    conflict: String,
}

async fn namespaces(cluster: &Cluster, client: &kube::Client) -> Namespaces {
    let n = Namespaces {
        listed: cluster.namespace("coac-listed").await,
        labelled: cluster.namespace("coac-labelled").await,
        later: cluster.namespace("coac-later").await,
        conflict: cluster.namespace("coac-conflict").await,
    };
    label(
        client,
        &n.labelled,
        json!({"example.com/vendor-token": "yes"}),
    )
    .await;
    label(
        client,
        &n.conflict,
        json!({"example.com/vendor-token": "yes"}),
    )
    .await;
    // Someone else's Secret of the target name.
    let api: Api<Secret> = Api::namespaced(client.clone(), &n.conflict);
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": {"name": TARGET}, "stringData": {"access_token": "theirs"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &theirs).await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_request_serves_every_selected_namespace_through_a_whole_life() {
    let test = "one_token_request_serves_every_selected_namespace_through_a_whole_life";
    let Some(cluster) = own_cluster(test, Options::default()).await else {
        return;
    };
    let client = cluster.client().await;
    let values = json!({"allowInsecureHttp": true, "clusterOAuthClients": {"enabled": true}});
    let install = Install::new(&cluster, "coac", values).await;
    let operator = install.pod("coac-0").await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    credentials(&client, &install.namespace, "vendor-creds", ID, SECRET).await;
    let ns = namespaces(&cluster, &client).await;
    let api: Api<ClusterOAuthClient> = Api::all(client.clone());
    let object: ClusterOAuthClient = serde_json::from_value(json!({
        "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "ClusterOAuthClient",
        "metadata": {"name": "vendor"},
        "spec": {
            "tokenUrl": vendor.url(),
            "credentialsSecretRef": {"name": "vendor-creds"},
            "target": {
                "name": TARGET,
                "namespaces": [ns.listed],
                "namespaceSelector": {"matchLabels": {"example.com/vendor-token": "yes"}},
                "template": {"Authorization": "Bearer {{ access_token }}"}
            }
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();

    // Created: the listed and the labelled namespaces hold the one token; the conflict is left
    // alone and named.
    let status = wait_targets(&client, "2/3", "SecretConflict", &operator).await;
    assert_eq!(
        status["status"]["targets"]["conflicts"],
        json!([ns.conflict])
    );
    assert_eq!(condition_of(&status, "Ready").unwrap().0, "True");
    assert_eq!(vendor.count(), 1, "one token request for every namespace");
    let token = copy(&client, &ns.listed).await.unwrap();
    assert_eq!(
        copy(&client, &ns.labelled).await.as_deref(),
        Some(token.as_str())
    );
    assert!(vendor.issued().contains(&token));
    let secret = get_secret(&client, &ns.listed, TARGET).await.unwrap();
    assert_eq!(
        secret_text(&secret, "Authorization"),
        Some(format!("Bearer {token}"))
    );
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["oauth.token-operator.dev/cluster-client"], "vendor");
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("ClusterOAuthClient", Some(true))
    );
    let theirs = get_secret(&client, &ns.conflict, TARGET).await.unwrap();
    assert_eq!(
        secret_text(&theirs, "access_token").as_deref(),
        Some("theirs")
    );
    // The token's events are told about the ClusterOAuthClient too, in `default`.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    let issued = eventually(
        "a TokenIssued event about the ClusterOAuthClient",
        Duration::from_secs(15),
        Some(&operator),
        || async {
            let list = events.list(&Default::default()).await.ok()?;
            list.items.into_iter().find(|e| {
                let about = e.regarding.as_ref();
                about.and_then(|r| r.kind.as_deref()) == Some("ClusterOAuthClient")
                    && about.and_then(|r| r.name.as_deref()) == Some("vendor")
                    && e.reason.as_deref() == Some("TokenIssued")
            })
        },
    )
    .await;
    assert!(!issued.note.unwrap_or_default().contains(&token));
    let table = cluster.kubectl(&["get", "coac"]).ok("kubectl get coac");
    assert!(
        table.contains("TARGETS") && table.contains("2/3"),
        "{table}"
    );

    // A namespace labelled in gets the token, one labelled out loses it; no new request.
    label(
        &client,
        &ns.later,
        json!({"example.com/vendor-token": "yes"}),
    )
    .await;
    label(
        &client,
        &ns.labelled,
        json!({"example.com/vendor-token": null}),
    )
    .await;
    eventually(
        "the copies follow the labels",
        Duration::from_secs(15),
        Some(&operator),
        || async {
            let later = copy(&client, &ns.later).await;
            let gone = get_secret(&client, &ns.labelled, TARGET).await.is_none();
            (later.as_deref() == Some(token.as_str()) && gone).then_some(())
        },
    )
    .await;
    wait_targets(&client, "2/3", "SecretConflict", &operator).await;

    // A copy edited and one deleted are restored with the same token.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.listed);
    secrets
        .patch(
            TARGET,
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"access_token": b64("forged")}})),
        )
        .await
        .unwrap();
    let later: Api<Secret> = Api::namespaced(client.clone(), &ns.later);
    delete(&later, TARGET).await;
    eventually(
        "the copies restored",
        Duration::from_secs(15),
        Some(&operator),
        || async {
            let listed = copy(&client, &ns.listed).await?;
            let later = copy(&client, &ns.later).await?;
            (listed == token && later == token).then_some(())
        },
    )
    .await;

    // The conflict resolved: that namespace gets the token too.
    let conflicting: Api<Secret> = Api::namespaced(client.clone(), &ns.conflict);
    delete(&conflicting, TARGET).await;
    wait_targets(&client, "3/3", "AllTargetsWritten", &operator).await;
    assert_eq!(
        copy(&client, &ns.conflict).await.as_deref(),
        Some(token.as_str())
    );
    assert_eq!(
        vendor.count(),
        1,
        "restores and new namespaces need no request"
    );

    // The credential rotated: one exchange, every copy updated.
    vendor.set_credentials(ID, ROTATED);
    credentials(&client, &install.namespace, "vendor-creds", ID, ROTATED).await;
    let all = [ns.listed.as_str(), ns.later.as_str(), ns.conflict.as_str()];
    let rotated = eventually(
        "every copy holds the new token",
        Duration::from_secs(30),
        Some(&operator),
        || async {
            let mut tokens = Vec::new();
            for n in all {
                tokens.push(copy(&client, n).await?);
            }
            (tokens.iter().all(|t| *t == tokens[0] && *t != token)).then(|| tokens[0].clone())
        },
    )
    .await;
    assert_eq!(vendor.count(), 2, "one exchange for the rotation");
    assert_eq!(vendor.issued().last(), Some(&rotated));
    wait_targets(&client, "3/3", "AllTargetsWritten", &operator).await;

    // A template key renamed: every copy gets the new key and loses the old one (no copy keeps
    // a key the spec no longer writes), with no new request.
    api.patch(
        "vendor",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"target": {"template": {
            "Authorization": null, "X-Token": "{{ access_token }}"}}}})),
    )
    .await
    .unwrap();
    eventually(
        "every copy re-rendered",
        Duration::from_secs(30),
        Some(&operator),
        || async {
            for n in all {
                let secret = get_secret(&client, n, TARGET).await?;
                let renamed = secret_text(&secret, "X-Token")? == rotated
                    && secret_text(&secret, "Authorization").is_none();
                if !renamed {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    assert_eq!(vendor.count(), 2, "a template edit needs no request");
    wait_targets(&client, "3/3", "AllTargetsWritten", &operator).await;

    // An empty selector (every namespace, kube-system included) is refused by the schema.
    let everything: ClusterOAuthClient = serde_json::from_value(json!({
        "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "ClusterOAuthClient",
        "metadata": {"name": "everything"},
        "spec": {"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "vendor-creds"},
                 "target": {"namespaceSelector": {}}}
    }))
    .unwrap();
    match api.create(&PostParams::default(), &everything).await {
        Err(kube::Error::Api(e)) => assert!(
            e.code == 422 && e.message.contains("may not be empty"),
            "{e:?}"
        ),
        other => panic!("an empty selector was accepted: {other:?}"),
    }

    // A restart: no request, no write.
    let before = versions(&client, &all).await;
    let status_before =
        get(&client, "vendor").await.unwrap()["metadata"]["resourceVersion"].clone();
    drop(operator);
    let operator = install.pod("coac-1").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(vendor.count(), 2, "a restart sends no request");
    assert_eq!(
        versions(&client, &all).await,
        before,
        "a restart writes no copy"
    );
    let status_after = get(&client, "vendor").await.unwrap()["metadata"]["resourceVersion"].clone();
    assert_eq!(status_before, status_after, "a restart writes no status");

    // Deleted: the real garbage collector removes every copy and the token's OAuthClient.
    delete(&api, "vendor").await;
    eventually(
        "the copies garbage collected",
        Duration::from_secs(30),
        Some(&operator),
        || async {
            for n in all {
                if get_secret(&client, n, TARGET).await.is_some() {
                    return None;
                }
            }
            let clients: Api<OAuthClient> = Api::namespaced(client.clone(), &install.namespace);
            clients
                .get_opt("cluster-vendor")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    drop(operator);
    assert_operator_never_refused(&cluster, &install.user());
}
