//! The copies of a ClusterOAuthClient's token: one sealed Secret per selected namespace, written
//! only when it is not already the one to write, never over a Secret of someone else, and
//! removed from namespaces that stopped matching (only when the operator's seal proves it wrote
//! it there).
//!
//! A copy is rendered only for a namespace that needs a write or a check: one whose copy is the
//! one last written from the same token and spec (by its resourceVersion) costs a map lookup.

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};

use super::{ClusterContext, Remembered, owner_reference, spec_named};
use crate::api::cluster_crd::ClusterOAuthClient;
use crate::api::crd::OAuthClient;
use crate::api::keys::{CLIENT_LABEL, CLUSTER_CLIENT_LABEL, FIELD_MANAGER};
use crate::base::Scrubber;
use crate::base::time::rfc3339;
use crate::controller::reconcile::retries::with_retries;
use crate::decide::distribution::{self, Found, Need, Outcome};
use crate::decide::managed_secret::IntactToken;
use crate::oauth::response::sanitise;
use crate::output::mac::Check;
use crate::output::secret::{self, client_label_value};
use crate::spec::ClientSettings;

/// Copies written at once.
const CONCURRENT_WRITES: usize = 16;

/// The OAuthClient an OAuthClient of this name would be in `namespace`: what a copy is
/// rendered and sealed for (the seal binds namespace, name and the ClusterOAuthClient's uid).
fn stand_in(client: &ClusterOAuthClient, namespace: &str, target: &str) -> OAuthClient {
    let mut stand_in = OAuthClient::new(&client.name_any(), spec_named(client, target));
    stand_in.metadata.namespace = Some(namespace.to_owned());
    stand_in.metadata.uid = client.uid();
    stand_in
}

/// The copy to write into `namespace`: the managed Secret an OAuthClient of this name would
/// have there (keys, templates, labels, seal), owned by the ClusterOAuthClient and labelled
/// with its name.
pub fn body(
    client: &ClusterOAuthClient,
    namespace: &str,
    target: &str,
    token: &IntactToken,
    settings: &ClientSettings,
    keys: &crate::output::mac::SealKeys,
) -> Value {
    let stand_in = stand_in(client, namespace, target);
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

/// What a copy's content comes from: the token (its issue time and fingerprint) and the
/// ClusterOAuthClient's generation (the templates, labels and annotations of its spec).
pub fn source(client: &ClusterOAuthClient, token: &IntactToken) -> String {
    format!(
        "{}/{}/{}",
        rfc3339(token.token.issued_at),
        token.fingerprint,
        client.metadata.generation.unwrap_or_default()
    )
}

/// Whether the operator's seal proves that it wrote `secret` for `client` there: the token's
/// items are as sealed, together, for that namespace, name and the ClusterOAuthClient's uid
/// (only the seal key can make that; a label or ownerReference anyone can write).
fn sealed_for(
    secret: &Secret,
    client: &ClusterOAuthClient,
    keys: &crate::output::mac::SealKeys,
) -> bool {
    let namespace = secret.namespace().unwrap_or_default();
    let stand_in = stand_in(client, &namespace, &secret.name_any());
    match secret::check_seal(secret, &stand_in, keys) {
        Check::Valid | Check::ValidWithPrevious => true,
        Check::Changed { token_intact, .. } => token_intact,
    }
}

/// Whether `secret` is this ClusterOAuthClient's copy: controlled by it, or sealed by the
/// operator for it there (a copy whose ownerReference or label was removed is restored, not
/// taken for someone else's).
fn is_copy(
    secret: &Secret,
    client: &ClusterOAuthClient,
    keys: &crate::output::mac::SealKeys,
) -> bool {
    let uid = client.uid().unwrap_or_default();
    let controlled = secret
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == uid);
    controlled || sealed_for(secret, client, keys)
}

/// What the indexes show of the Secret of the target name in `namespace`.
fn found(client_uid: &str, cx: &ClusterContext, namespace: &str, target: &str) -> Found {
    match cx.copies.get(namespace, target) {
        Some(copy) if copy.controlled_by(client_uid) => Found::Ours {
            resource_version: copy.resource_version.to_string(),
        },
        Some(copy) => Found::Other {
            resource_version: copy.resource_version.to_string(),
        },
        None => match cx.scope.secrets.resource_version(namespace, target) {
            Some(resource_version) => Found::Other { resource_version },
            None => Found::Absent,
        },
    }
}

/// What happened in one namespace.
enum Done {
    /// It holds the current copy, at this resourceVersion.
    Holds(String),
    /// Someone else's Secret, at this resourceVersion.
    Conflict(String),
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
    let source = source(client, token);
    let mut work = Vec::new();
    for namespace in &outcome.selected {
        let written = remembered
            .written
            .get(namespace)
            .map(|(rv, from)| (rv.as_str(), from.as_str()));
        let conflict = remembered.conflicts.get(namespace).map(String::as_str);
        let found = found(&uid, cx, namespace, target);
        match distribution::need(&found, written, &source, conflict) {
            Need::Nothing => {
                outcome.written.insert(namespace.clone());
            }
            Need::Conflict => {
                outcome.conflicts.insert(namespace.clone());
            }
            need => work.push((namespace.clone(), need)),
        }
    }
    let results: Vec<(String, Done)> = futures::stream::iter(work)
        .map(|(namespace, need)| async move {
            // Rendered here, a few at a time: never one body per namespace at once.
            let keys = &cx.shared.seal_keys;
            let body = body(client, &namespace, target, token, settings, keys);
            let done = one(client, cx, &namespace, target, &body, need, token).await;
            (namespace, done)
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .collect()
        .await;
    for (namespace, done) in results {
        remembered.written.remove(&namespace);
        remembered.conflicts.remove(&namespace);
        match done {
            Done::Holds(rv) => {
                remembered
                    .written
                    .insert(namespace.clone(), (rv, source.clone()));
                outcome.written.insert(namespace);
            }
            Done::Conflict(rv) => {
                remembered.conflicts.insert(namespace.clone(), rv);
                outcome.conflicts.insert(namespace);
            }
            Done::Failed(message) => {
                outcome.failed.insert(namespace, message);
            }
        }
    }
    // What is remembered of namespaces no longer selected is of no use.
    remembered
        .written
        .retain(|namespace, _| outcome.selected.contains(namespace));
    remembered
        .conflicts
        .retain(|namespace, _| outcome.selected.contains(namespace));
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
    let api: Api<Secret> = Api::namespaced(cx.shared.kube.clone(), namespace);
    match need {
        Need::Create => {
            // Only what identifies the copy is created (so that one created by someone else
            // meanwhile is never merged into); the apply that follows writes the rest and owns
            // it alone, so that a key or label the spec drops later is removed by the next
            // apply (fields a create writes belong to an Update entry that applies never
            // remove).
            let mut skeleton = json!({
                "metadata": {
                    "name": body["metadata"]["name"],
                    "namespace": body["metadata"]["namespace"],
                    "labels": body["metadata"]["labels"],
                    "ownerReferences": body["metadata"]["ownerReferences"],
                },
            });
            if !body["type"].is_null() {
                skeleton["type"] = body["type"].clone();
            }
            let object: Secret = match serde_json::from_value(skeleton) {
                Ok(object) => object,
                Err(e) => return Done::Failed(format!("the copy could not be built: {e}")),
            };
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..Default::default()
            };
            match with_retries(|| api.create(&params, &object)).await {
                Ok(created) => {
                    let rv = created.resource_version().unwrap_or_default();
                    apply_over(&api, target, body, &rv, token).await
                }
                // Created meanwhile: by this operator (a copy), or by someone else.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    verify(client, cx, &api, target, body, token).await
                }
                Err(e) => Done::Failed(message(&e, token)),
            }
        }
        _ => verify(client, cx, &api, target, body, token).await,
    }
}

/// Reads the Secret; writes `body` only when it is this ClusterOAuthClient's copy and differs
/// from it.
async fn verify(
    client: &ClusterOAuthClient,
    cx: &ClusterContext,
    api: &Api<Secret>,
    target: &str,
    body: &Value,
    token: &IntactToken,
) -> Done {
    let current = match api.get_opt(target).await {
        Ok(current) => current,
        Err(e) => return Done::Failed(message(&e, token)),
    };
    let Some(current) = current else {
        // Deleted meanwhile: the watch tells, and the next reconcile creates it.
        return Done::Failed("the Secret was deleted while it was written".to_owned());
    };
    let rv = current.resource_version().unwrap_or_default();
    if !is_copy(&current, client, &cx.shared.seal_keys) {
        return Done::Conflict(rv);
    }
    let as_json = serde_json::to_value(&current).unwrap_or_default();
    let differ = distribution::differences(&as_json, body);
    if differ.is_empty() {
        return Done::Holds(rv);
    }
    tracing::info!(
        namespace = current.namespace().unwrap_or_default(),
        secret = target,
        changed = ?differ,
        "writing a copy of a cluster client's token"
    );
    apply_over(api, target, body, &rv, token).await
}

/// Applies `body` over the version `rv` of the copy, known to be this ClusterOAuthClient's: a
/// Secret deleted and created by someone else meanwhile is a conflict (409), never merged
/// into.
async fn apply_over(
    api: &Api<Secret>,
    target: &str,
    body: &Value,
    rv: &str,
    token: &IntactToken,
) -> Done {
    let mut body = body.clone();
    body["metadata"]["resourceVersion"] = json!(rv);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&body);
    match with_retries(|| api.patch_metadata(target, &params, &patch)).await {
        Ok(written) => Done::Holds(written.resource_version().unwrap_or_default()),
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

/// Deletes this ClusterOAuthClient's copies that are no longer wanted (in namespaces not
/// selected, or under another name than the target's), each only when, read again, it is
/// controlled by the ClusterOAuthClient and its seal proves the operator wrote it there: a
/// Secret that someone labelled and gave a copied ownerReference is never deleted.
pub async fn prune(
    client: &ClusterOAuthClient,
    cx: &ClusterContext,
    target: &str,
    selected: &BTreeSet<String>,
) {
    let uid = client.uid().unwrap_or_default();
    let stale = cx.copies.keys_where(|copy| copy.controlled_by(&uid));
    for (key, _) in stale {
        if selected.contains(&*key.namespace) && &*key.name == target {
            continue;
        }
        let api: Api<Secret> = Api::namespaced(cx.shared.kube.clone(), &key.namespace);
        let current = match api.get_opt(&key.name).await {
            Ok(Some(current)) => current,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(namespace = %key.namespace, secret = %key.name, %error, "could not read a cluster client's copy to remove it; trying again at the next reconcile");
                continue;
            }
        };
        if !sealed_for(&current, client, &cx.shared.seal_keys) {
            tracing::debug!(namespace = %key.namespace, secret = %key.name, "a Secret that claims to be a cluster client's copy but carries no seal of it is left alone");
            continue;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: current.resource_version(),
                uid: current.uid(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(&key.name, &params).await {
            Ok(_) => tracing::info!(
                namespace = %key.namespace,
                secret = %key.name,
                "removed a cluster client's copy that is no longer selected"
            ),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => tracing::warn!(
                namespace = %key.namespace,
                secret = %key.name,
                %error,
                "could not remove a cluster client's copy; trying again at the next reconcile"
            ),
        }
    }
}
