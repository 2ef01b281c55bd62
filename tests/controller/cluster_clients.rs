//! ClusterOAuthClient against the API-server double (the real-cluster suite runs the same life
//! with the chart's rights and the real garbage collector): one token request for a list and a
//! selector, a conflict that never blocks the others, namespaces labelled in and out, copies
//! edited and deleted, the credential rotated, a restart that sends and writes nothing, and a
//! tenant's forged Secrets.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::support::apiserver::{
    ApiServer, CLUSTEROAUTHCLIENTS, EVENTS, NAMESPACES, OAUTHCLIENTS, SECRETS,
};
use crate::support::harness::*;
use crate::support::vendors::*;

/// The cluster resource namespace (where the credentials are).
const RESOURCES: &str = "platform";
const TARGET: &str = "vendor-token";
const LABEL: &str = "example.com/vendor-token";

fn namespace(api: &ApiServer, name: &str, labelled: bool) {
    let labels = if labelled {
        json!({ LABEL: "yes" })
    } else {
        json!({})
    };
    api.create(
        NAMESPACES,
        json!({"metadata": {"name": name, "labels": labels}}),
    );
}

fn set_label(api: &ApiServer, name: &str, value: Option<&str>) {
    api.modify(NAMESPACES, "", name, |ns| {
        ns["metadata"]["labels"] = match value {
            Some(v) => json!({ LABEL: v }),
            None => json!({}),
        };
    });
}

struct Cluster {
    api: ApiServer,
    vendor: TokenServer,
    operator: Operator,
}

/// A double with namespaces `listed`, `labelled`, `conflict` (labelled, holding someone else's
/// Secret of the target name) and `other`; the credentials in [`RESOURCES`]; an operator
/// serving ClusterOAuthClients; and the ClusterOAuthClient `vendor`.
async fn cluster() -> Cluster {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    for (name, labelled) in [
        (RESOURCES, false),
        ("listed", false),
        ("labelled", true),
        ("conflict", true),
        ("other", false),
    ] {
        namespace(&api, name, labelled);
    }
    api.create(
        SECRETS,
        json!({"metadata": {"name": TARGET, "namespace": "conflict"},
               "stringData": {"access_token": "theirs"}}),
    );
    credentials(&api, RESOURCES, "vendor-creds", ID, SECRET);
    let operator = start(&api);
    api.create(
        CLUSTEROAUTHCLIENTS,
        json!({
            "apiVersion": "oauth.token-operator.dev/v1alpha1",
            "kind": "ClusterOAuthClient",
            "metadata": {"name": "vendor"},
            "spec": {
                "tokenUrl": vendor.url(),
                "credentialsSecretRef": {"name": "vendor-creds"},
                "target": {
                    "name": TARGET,
                    "namespaces": ["listed"],
                    "namespaceSelector": {"matchLabels": {LABEL: "yes"}},
                    "template": {"Authorization": "Bearer {{ access_token }}"}
                }
            }
        }),
    );
    Cluster {
        api,
        vendor,
        operator,
    }
}

fn start(api: &ApiServer) -> Operator {
    Operator::start_configured(api, |config| {
        config.cluster_clients = Some(RESOURCES.to_owned());
    })
}

fn status(api: &ApiServer) -> Value {
    api.get(CLUSTEROAUTHCLIENTS, "", "vendor")
        .map(|o| o["status"].clone())
        .unwrap_or_default()
}

fn distributed(status: &Value) -> Option<(String, String)> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Distributed")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

async fn wait_targets(api: &ApiServer, summary: &str, reason: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = status(api);
        if distributed(&status).is_some_and(|(_, r)| r == reason)
            && status["targets"]["summary"] == summary
        {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for targets {summary}, Distributed {reason}; status: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn copy(api: &ApiServer, ns: &str) -> Option<String> {
    secret_value(api, ns, TARGET, "access_token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_serves_a_list_and_a_selector_and_a_conflict_blocks_no_other_namespace() {
    let Cluster {
        api,
        vendor,
        operator,
    } = cluster().await;
    let status = wait_targets(&api, "2/3", "SecretConflict").await;
    assert_eq!(status["targets"]["conflicts"], json!(["conflict"]));
    assert_eq!(status["targets"]["selected"], 3);
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap_or_else(|| panic!("no Ready condition: {status:#}"));
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("True"), &json!("TokenIssued"))
    );
    assert_eq!(vendor.count(), 1, "one token request for every namespace");
    let token = copy(&api, "listed").unwrap();
    assert_eq!(vendor.issued(), std::slice::from_ref(&token));
    assert_eq!(copy(&api, "labelled").as_deref(), Some(token.as_str()));
    assert_eq!(
        secret_value(&api, "listed", TARGET, "Authorization"),
        Some(format!("Bearer {token}"))
    );
    assert_eq!(
        copy(&api, "conflict").as_deref(),
        Some("theirs"),
        "left alone"
    );
    assert!(api.get(SECRETS, "other", TARGET).is_none(), "not selected");
    // The copy: the cluster-client label, a controller ownerReference to the ClusterOAuthClient.
    let uid = api.get(CLUSTEROAUTHCLIENTS, "", "vendor").unwrap()["metadata"]["uid"].clone();
    let secret = api.get(SECRETS, "listed", TARGET).unwrap();
    assert_eq!(
        secret["metadata"]["labels"]["oauth.token-operator.dev/cluster-client"],
        "vendor"
    );
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["uid"], &owner["controller"]),
        (&json!("ClusterOAuthClient"), &uid, &json!(true))
    );
    assert!(secret["metadata"]["annotations"]["oauth.token-operator.dev/mac"].is_string());
    // The token's events are told about the ClusterOAuthClient too (in `default`, where the
    // events of cluster-scoped objects go), never with the token.
    let events = api.list(EVENTS, Some("default"));
    let about: Vec<&Value> = events
        .iter()
        .filter(|e| e["regarding"]["kind"] == "ClusterOAuthClient" && e["regarding"]["uid"] == uid)
        .collect();
    assert!(
        about.iter().any(|e| e["reason"] == "TokenIssued"),
        "{events:#?}"
    );
    assert!(
        about
            .iter()
            .all(|e| !e["note"].as_str().unwrap_or_default().contains(&token))
    );
    // The token's OAuthClient in the cluster resource namespace, owned the same way.
    let child = api.get(OAUTHCLIENTS, RESOURCES, "cluster-vendor").unwrap();
    assert_eq!(child["metadata"]["ownerReferences"][0]["uid"], uid);
    assert_eq!(
        child["spec"]["credentialsSecretRef"]["name"],
        "vendor-creds"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_labelled_in_and_out_gain_and_lose_their_copy_with_no_request() {
    let Cluster {
        api,
        vendor,
        operator,
    } = cluster().await;
    wait_targets(&api, "2/3", "SecretConflict").await;
    let token = copy(&api, "listed").unwrap();
    set_label(&api, "other", Some("yes"));
    set_label(&api, "labelled", None);
    eventually(
        "the copies follow the labels",
        Duration::from_secs(10),
        || {
            let gained = copy(&api, "other")? == token;
            let lost = api.get(SECRETS, "labelled", TARGET).is_none();
            (gained && lost).then_some(())
        },
    )
    .await;
    wait_targets(&api, "2/3", "SecretConflict").await;
    // A namespace created later, already labelled.
    namespace(&api, "newcomer", true);
    eventually("the newcomer's copy", Duration::from_secs(10), || {
        (copy(&api, "newcomer")? == token).then_some(())
    })
    .await;
    assert_eq!(
        vendor.count(),
        1,
        "no request for a namespace that starts matching"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_and_deleted_copies_are_restored_and_a_resolved_conflict_is_written() {
    let Cluster {
        api,
        vendor,
        operator,
    } = cluster().await;
    wait_targets(&api, "2/3", "SecretConflict").await;
    let token = copy(&api, "listed").unwrap();
    api.modify(SECRETS, "listed", TARGET, |s| {
        s["data"]["access_token"] = b64("forged");
        s["metadata"]["annotations"]["oauth.token-operator.dev/expires-at"] =
            json!("2099-01-01T00:00:00Z");
    });
    api.delete(SECRETS, "labelled", TARGET);
    eventually("the copies restored", Duration::from_secs(10), || {
        let listed = copy(&api, "listed")? == token;
        let labelled = copy(&api, "labelled")? == token;
        (listed && labelled).then_some(())
    })
    .await;
    // A copy whose cluster-client label was removed is still the copy (its ownerReference and
    // seal say so): its label is restored, and it is no conflict.
    api.modify(SECRETS, "listed", TARGET, |s| {
        s["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("oauth.token-operator.dev/cluster-client");
    });
    eventually("the label restored", Duration::from_secs(10), || {
        let secret = api.get(SECRETS, "listed", TARGET)?;
        (secret["metadata"]["labels"]["oauth.token-operator.dev/cluster-client"] == "vendor")
            .then_some(())
    })
    .await;
    wait_targets(&api, "2/3", "SecretConflict").await;
    api.delete(SECRETS, "conflict", TARGET);
    wait_targets(&api, "3/3", "AllTargetsWritten").await;
    assert_eq!(copy(&api, "conflict").as_deref(), Some(token.as_str()));
    assert_eq!(vendor.count(), 1, "restores need no request");
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_credential_is_one_exchange_and_every_copy_follows() {
    let Cluster {
        api,
        vendor,
        operator,
    } = cluster().await;
    wait_targets(&api, "2/3", "SecretConflict").await;
    let first = copy(&api, "listed").unwrap();
    vendor.set_credentials(ID, "rotated-s3cret");
    api.modify(SECRETS, RESOURCES, "vendor-creds", |s| {
        s["data"]["client_secret"] = b64("rotated-s3cret");
    });
    let rotated = eventually(
        "every copy holds the new token",
        Duration::from_secs(15),
        || {
            let listed = copy(&api, "listed")?;
            let labelled = copy(&api, "labelled")?;
            (listed != first && listed == labelled).then_some(listed)
        },
    )
    .await;
    assert_eq!(vendor.count(), 2, "one exchange for the rotation");
    assert_eq!(vendor.issued().last(), Some(&rotated));
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_sends_no_request_and_writes_nothing() {
    let Cluster {
        api,
        vendor,
        operator,
    } = cluster().await;
    wait_targets(&api, "2/3", "SecretConflict").await;
    operator.stop().await;
    api.reset_counts();
    let operator = start(&api);
    operator.ready().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(vendor.count(), 1, "a restart sends no request");
    for write in [
        "create secrets",
        "patch secrets",
        "delete secrets",
        "patch oauthclients",
        "patch oauthclients/status",
        "patch clusteroauthclients/status",
    ] {
        assert_eq!(
            api.count(write),
            0,
            "{write} after a restart: {:?}",
            api.counts()
        );
    }
    assert!(
        api.count("get secrets") >= 2,
        "each copy verified once by reading it"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_forged_secrets_are_never_given_the_token_nor_trusted() {
    let Cluster {
        api,
        vendor,
        operator,
    } = cluster().await;
    wait_targets(&api, "2/3", "SecretConflict").await;
    let token = copy(&api, "listed").unwrap();
    let uid = api.get(CLUSTEROAUTHCLIENTS, "", "vendor").unwrap()["metadata"]["uid"].clone();
    // In a namespace that is not selected, a Secret of the target name claiming to be a copy
    // (the label, a controller ownerReference with the ClusterOAuthClient's uid, read off a copy
    // the tenant can see): never written with the token.
    api.create(
        SECRETS,
        json!({"metadata": {"name": TARGET, "namespace": "other",
            "labels": {"oauth.token-operator.dev/cluster-client": "vendor"},
            "ownerReferences": [{"apiVersion": "oauth.token-operator.dev/v1alpha1",
                "kind": "ClusterOAuthClient", "name": "vendor", "uid": uid, "controller": true}]},
            "stringData": {"access_token": "tenant-bait"}}),
    );
    // The conflicting Secret in a selected namespace gains the label but not the owner.
    api.modify(SECRETS, "conflict", TARGET, |s| {
        s["metadata"]["labels"] = json!({"oauth.token-operator.dev/cluster-client": "vendor"});
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        copy(&api, "other").as_deref(),
        Some("tenant-bait"),
        "a Secret the operator did not write is neither written nor deleted"
    );
    assert_eq!(copy(&api, "listed").as_deref(), Some(token.as_str()));
    assert_eq!(copy(&api, "conflict").as_deref(), Some("theirs"));
    wait_targets(&api, "2/3", "SecretConflict").await;
    assert_eq!(vendor.count(), 1);
    operator.stop().await;
}
