//! The copies of a ClusterOAuthClient's token: one sealed Secret per selected namespace, written
//! only when it is not already the one to write, never over a Secret it does not control, and
//! removed from namespaces that stopped matching.

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};

use super::{ClusterContext, Remembered, owner_reference, spec_named};
use crate::api::cluster_crd::ClusterOAuthClient;
use crate::api::crd::OAuthClient;
use crate::api::keys::{CLIENT_LABEL, CLUSTER_CLIENT_LABEL, FIELD_MANAGER, MAC_ANNOTATION};
use crate::base::Scrubber;
use crate::controller::reconcile::retries::with_retries;
use crate::decide::distribution::{self, Found, Need, Outcome};
use crate::decide::managed_secret::IntactToken;
use crate::oauth::response::sanitise;
use crate::output::secret::{self, client_label_value};
use crate::spec::ClientSettings;

/// Copies written at once.
const CONCURRENT_WRITES: usize = 16;

/// The copy to write into `namespace`: the managed Secret an OAuthClient of this name would
/// have there (keys, templates, labels, seal bound to that namespace, name and this
/// ClusterOAuthClient's uid), owned by the ClusterOAuthClient and labelled with its name.
pub fn body(
    client: &ClusterOAuthClient,
    namespace: &str,
    target: &str,
    token: &IntactToken,
    settings: &ClientSettings,
    keys: &crate::output::mac::SealKeys,
) -> Value {
    let spec = spec_named(client, target);
    let mut stand_in = OAuthClient::new(&client.name_any(), spec);
    stand_in.metadata.namespace = Some(namespace.to_owned());
    stand_in.metadata.uid = client.uid();
    let mut body = secret::managed_secret(
        &stand_in,
        &token.token,
        &settings.templates,
        &token.fingerprint,
        keys,
    );
    let metadata = &mut body["metadata"];
    metadata["ownerReferences"] = json!([owner_reference(client)]);
    if let Some(labels) = metadata["labels"].as_object_mut() {
        labels.remove(CLIENT_LABEL);
        labels.insert(
            CLUSTER_CLIENT_LABEL.to_owned(),
            json!(client_label_value(&client.name_any())),
        );
    }
    body
}

/// What was found of the Secret of the target name in `namespace`.
fn found(client_uid: &str, cx: &ClusterContext, namespace: &str, target: &str) -> Found {
    match cx.copies.get(namespace, target) {
        Some(copy) if copy.controlled_by(client_uid) => Found::Ours {
            resource_version: copy.resource_version.to_string(),
        },
        Some(_) => Found::Foreign,
        None if cx.scope.secrets.get(namespace, target).is_some() => Found::Foreign,
        None => Found::Absent,
    }
}

/// What happened in one namespace.
enum Done {
    /// It holds the current token, at this resourceVersion (and seal).
    Holds(String, String),
    /// Someone else's Secret.
    Conflict,
    /// The write failed (the message, scrubbed).
    Failed(String),
}

/// Writes the token into every selected namespace that does not hold it yet.
pub async fn write_all(
    client: &ClusterOAuthClient,
    cx: &ClusterContext,
    target: &str,
    token: &IntactToken,
    settings: &ClientSettings,
    remembered: &mut Remembered,
    outcome: &mut Outcome,
) {
    let uid = client.uid().unwrap_or_default();
    let keys = &cx.shared.seal_keys;
    let work: Vec<(String, Value, Need)> = outcome
        .selected
        .iter()
        .map(|namespace| {
            let body = body(client, namespace, target, token, settings, keys);
            let seal = seal_of(&body);
            let last = remembered
                .written
                .get(namespace)
                .map(|(rv, seal)| (rv.as_str(), seal.as_str()));
            let need = distribution::need(&found(&uid, cx, namespace, target), last, &seal);
            (namespace.clone(), body, need)
        })
        .collect();
    let results: Vec<(String, Done)> = futures::stream::iter(work)
        .map(|(namespace, body, need)| async move {
            let done = one(client, cx, &namespace, target, &body, need, token).await;
            (namespace, done)
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .collect()
        .await;
    for (namespace, done) in results {
        match done {
            Done::Holds(rv, seal) => {
                remembered.written.insert(namespace.clone(), (rv, seal));
                outcome.written.insert(namespace);
            }
            Done::Conflict => {
                remembered.written.remove(&namespace);
                outcome.conflicts.insert(namespace);
            }
            Done::Failed(message) => {
                remembered.written.remove(&namespace);
                outcome.failed.insert(namespace, message);
            }
        }
    }
}

fn seal_of(body: &Value) -> String {
    body["metadata"]["annotations"][MAC_ANNOTATION]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Brings one namespace's copy to `body`.
async fn one(
    client: &ClusterOAuthClient,
    cx: &ClusterContext,
    namespace: &str,
    target: &str,
    body: &Value,
    need: Need,
    token: &IntactToken,
) -> Done {
    let seal = seal_of(body);
    let api: Api<Secret> = Api::namespaced(cx.shared.kube.clone(), namespace);
    let failed = |e: kube::Error| Done::Failed(message(&e, token));
    match need {
        Need::Nothing => {
            let rv = cx
                .copies
                .get(namespace, target)
                .map(|c| c.resource_version.to_string())
                .unwrap_or_default();
            Done::Holds(rv, seal)
        }
        Need::Conflict => Done::Conflict,
        Need::Create => {
            let object: Secret = match serde_json::from_value(body.clone()) {
                Ok(object) => object,
                Err(e) => return Done::Failed(format!("the copy could not be built: {e}")),
            };
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..Default::default()
            };
            match with_retries(|| api.create(&params, &object)).await {
                Ok(created) => Done::Holds(created.resource_version().unwrap_or_default(), seal),
                // Created meanwhile: by this operator (a copy), or by someone else.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    verify(client, &api, target, body, token).await
                }
                Err(e) => failed(e),
            }
        }
        Need::Verify => verify(client, &api, target, body, token).await,
    }
}

/// Reads the copy; writes `body` only when the copy differs from it, and never over a Secret
/// this ClusterOAuthClient does not control.
async fn verify(
    client: &ClusterOAuthClient,
    api: &Api<Secret>,
    target: &str,
    body: &Value,
    token: &IntactToken,
) -> Done {
    let seal = seal_of(body);
    let current = match api.get_opt(target).await {
        Ok(current) => current,
        Err(e) => return Done::Failed(message(&e, token)),
    };
    let Some(current) = current else {
        // Deleted meanwhile: the watch tells, and the next reconcile creates it.
        return Done::Failed("the Secret was deleted while it was written".to_owned());
    };
    let uid = client.uid().unwrap_or_default();
    let controlled = current
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == uid);
    if !controlled {
        return Done::Conflict;
    }
    let as_json = serde_json::to_value(&current).unwrap_or_default();
    let differ = distribution::differences(&as_json, body);
    if differ.is_empty() {
        return Done::Holds(current.resource_version().unwrap_or_default(), seal);
    }
    tracing::info!(
        namespace = current.namespace().unwrap_or_default(),
        secret = target,
        changed = ?differ,
        "restoring a copy of a cluster client's token"
    );
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(body);
    match with_retries(|| api.patch_metadata(target, &params, &patch)).await {
        Ok(written) => Done::Holds(written.resource_version().unwrap_or_default(), seal),
        Err(e) => Done::Failed(message(&e, token)),
    }
}

/// An API error in words, scrubbed of the token.
fn message(error: &kube::Error, token: &IntactToken) -> String {
    let text = match error {
        kube::Error::Api(e) => format!("{} ({})", e.message, e.code),
        other => other.to_string(),
    };
    let scrubber = Scrubber::none();
    let scrubber = scrubber.with_token(token.token.access_token.expose());
    sanitise(&text, &scrubber).unwrap_or_else(|| "the API server refused the write".to_owned())
}

/// Deletes this ClusterOAuthClient's copies that are no longer wanted: in namespaces not
/// selected, or under another name than the target's.
pub async fn prune(
    client: &ClusterOAuthClient,
    cx: &ClusterContext,
    target: &str,
    selected: &BTreeSet<String>,
    remembered: &mut Remembered,
) {
    let uid = client.uid().unwrap_or_default();
    let stale = cx.copies.keys_where(|copy| copy.controlled_by(&uid));
    for (key, copy) in stale {
        if selected.contains(&*key.namespace) && &*key.name == target {
            continue;
        }
        let api: Api<Secret> = Api::namespaced(cx.shared.kube.clone(), &key.namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(copy.resource_version.to_string()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&key.name, &params).await {
            Ok(_) => {
                tracing::info!(
                    namespace = key.namespace,
                    secret = key.name,
                    "removed a cluster client's copy that is no longer selected"
                );
                if &*key.name == target {
                    remembered.written.remove(&*key.namespace);
                }
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => tracing::warn!(
                namespace = key.namespace,
                secret = key.name,
                %error,
                "could not remove a cluster client's copy; trying again at the next reconcile"
            ),
        }
    }
}
