//! One reconcile of a ClusterOAuthClient: keep the OAuthClient that obtains its token, take
//! that token when it is intact, write the copies, report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::core::Selector;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::copies;
use super::{ClusterContext, Remembered, owner_reference, spec_named};
use crate::api::cluster_crd::{ClusterOAuthClient, ClusterOAuthClientStatus};
use crate::api::conditions::{self, DISTRIBUTED, READY};
use crate::api::crd::OAuthClient;
use crate::api::keys::{
    CLUSTER_CLIENT_LABEL, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    REFRESH_REQUESTED_ANNOTATION,
};
use crate::controller::reconcile::retries::with_retries;
use crate::decide::distribution::{self, NamespaceSeen, Outcome};
use crate::decide::managed_secret::{self, IntactToken};
use crate::output::secret::{client_label_value, shorten};
use crate::spec::ClientSettings;

/// Why a reconcile ended early (an API call failed; retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the OAuthClient that obtains the token.
    #[error("the token's OAuthClient: {0}")]
    Child(#[source] kube::Error),
    /// Reading its managed Secret.
    #[error("reading the token's Secret: {0}")]
    ReadSource(#[source] kube::Error),
    /// Applying the status.
    #[error("writing the ClusterOAuthClient status: {0}")]
    WriteStatus(#[source] kube::Error),
}

/// The name of the OAuthClient that obtains a ClusterOAuthClient's token, in the cluster
/// resource namespace: `cluster-<name>` (shortened with a hash past 253 characters).
pub fn child_name(cluster_client: &str) -> String {
    shorten(&format!("cluster-{cluster_client}"), 253)
}

/// The name of the Secret in each selected namespace: `spec.target.name`, else `<name>-token`.
pub fn target_name(client: &ClusterOAuthClient) -> String {
    client
        .spec
        .client
        .target
        .as_ref()
        .and_then(|t| t.name.clone())
        .unwrap_or_else(|| format!("{}-token", client.name_any()))
}

/// Runs one reconcile.
pub async fn reconcile(
    client: Arc<ClusterOAuthClient>,
    cx: Arc<ClusterContext>,
) -> Result<Action, Error> {
    let _ = cx.synced.clone().wait_for(|s| *s).await;
    let _ = cx.scope.secrets_synced.clone().wait_for(|s| *s).await;
    let name = client.name_any();
    let uid = client.uid().unwrap_or_default();
    let mut remembered = {
        let memory = cx.memory.lock().expect("cluster memory lock");
        match memory.get(&name) {
            Some(r) if r.uid == uid => r.clone(),
            _ => Remembered {
                uid: uid.clone(),
                ..Remembered::default()
            },
        }
    };
    let previous = client.status.clone().unwrap_or_default();
    let child = match ensure_child(&client, &cx).await? {
        Ok(child) => child,
        Err(message) => {
            let status = blocked(&client, &previous, &message, &cx);
            write_status(&client, &cx, &previous, &status).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let token = current_token(&child, &cx, &mut remembered).await?;
    let target = target_name(&client);
    let mut outcome = Outcome::default();
    match selection(&client, &cx) {
        Ok(selected) => outcome.selected = selected,
        Err(message) => {
            let status = blocked(&client, &previous, &message, &cx);
            write_status(&client, &cx, &previous, &status).await?;
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
    }
    match (&token, settings(&child, &cx)) {
        (Some(token), Some(settings)) => {
            copies::write_all(
                &client,
                &cx,
                &target,
                token,
                &settings,
                &mut remembered,
                &mut outcome,
            )
            .await;
        }
        _ => outcome.no_token = true,
    }
    copies::prune(&client, &cx, &target, &outcome.selected).await;
    remembered.selected = outcome.selected.clone();
    cx.memory
        .lock()
        .expect("cluster memory lock")
        .insert(name, remembered);
    let counts = [
        outcome.selected.len(),
        outcome.written.len(),
        outcome.conflicts.len(),
    ];
    cx.shared
        .metrics
        .cluster_targets(&client.name_any(), counts);
    let status = status_of(&client, &child, &previous, &outcome, &target, &cx);
    write_status(&client, &cx, &previous, &status).await?;
    // Conflicts and failed writes are looked at again within seconds (a Secret of someone else
    // that goes away sends no event here), and so is a token the OAuthClient's status records
    // but that could not be read yet.
    let expected = child.status.as_ref().is_some_and(|s| s.issued_at.is_some());
    let again = if outcome.conflicts.is_empty()
        && outcome.failed.is_empty()
        && !(outcome.no_token && expected)
    {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(5)
    };
    Ok(Action::requeue(again))
}

/// After an API error: again in 5 s.
pub fn error_policy(
    client: Arc<ClusterOAuthClient>,
    error: &Error,
    _: Arc<ClusterContext>,
) -> Action {
    tracing::warn!(name = client.name_any(), %error, "cluster client reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// The OAuthClient to keep for `client`: its spec with `target.name` set to the OAuthClient's
/// own name (its managed Secret), the labels, the refresh request, the ownerReference.
fn desired_child(client: &ClusterOAuthClient, namespace: &str) -> OAuthClient {
    let name = child_name(&client.name_any());
    let mut child = OAuthClient::new(&name, spec_named(client, &name));
    child.metadata.namespace = Some(namespace.to_owned());
    child.metadata.labels = Some(BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (
            CLUSTER_CLIENT_LABEL.to_owned(),
            client_label_value(&client.name_any()),
        ),
    ]));
    if let Some(at) = client.annotations().get(REFRESH_REQUESTED_ANNOTATION) {
        child.metadata.annotations = Some(BTreeMap::from([(
            REFRESH_REQUESTED_ANNOTATION.to_owned(),
            at.clone(),
        )]));
    }
    child.metadata.owner_references = Some(vec![owner_reference(client)]);
    child
}

/// Creates or updates the OAuthClient that obtains the token (only when it differs). `Err`
/// inside: an OAuthClient of that name that this ClusterOAuthClient does not control.
async fn ensure_child(
    client: &ClusterOAuthClient,
    cx: &ClusterContext,
) -> Result<Result<OAuthClient, String>, Error> {
    let desired = desired_child(client, &cx.namespace);
    let name = desired.name_any();
    let api: Api<OAuthClient> = Api::namespaced(cx.shared.kube.clone(), &cx.namespace);
    let current = api.get_opt(&name).await.map_err(Error::Child)?;
    let uid = client.uid().unwrap_or_default();
    if let Some(current) = &current {
        let controlled = current
            .owner_references()
            .iter()
            .any(|r| r.controller == Some(true) && r.uid == uid);
        if !controlled {
            return Ok(Err(format!(
                "OAuthClient {name} in the cluster resource namespace {} exists and is not this ClusterOAuthClient's; it is left untouched (delete or rename it)",
                cx.namespace
            )));
        }
        if same_child(current, &desired) {
            return Ok(Ok(current.clone()));
        }
    }
    let mut body = serde_json::to_value(&desired).expect("an OAuthClient serialises");
    body["apiVersion"] = json!(OAuthClient::api_version(&()));
    body["kind"] = json!(OAuthClient::kind(&()));
    if let Some(object) = body.as_object_mut() {
        object.remove("status");
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&body);
    let applied = with_retries(|| api.patch(&name, &params, &patch))
        .await
        .map_err(Error::Child)?;
    Ok(Ok(applied))
}

/// Whether the OAuthClient as read is the one to keep: the same spec, labels, refresh request
/// and controller.
fn same_child(current: &OAuthClient, desired: &OAuthClient) -> bool {
    let ours = |c: &OAuthClient, key: &str| c.labels().get(key).cloned();
    let requested = |c: &OAuthClient| c.annotations().get(REFRESH_REQUESTED_ANNOTATION).cloned();
    current.spec == desired.spec
        && [MANAGED_BY_LABEL, CLUSTER_CLIENT_LABEL]
            .iter()
            .all(|k| ours(current, k) == ours(desired, k))
        && (requested(desired).is_none() || requested(current) == requested(desired))
}

/// The spec resolved (for the templates); `None` when it is unusable (the OAuthClient's status
/// says why).
fn settings(child: &OAuthClient, cx: &ClusterContext) -> Option<ClientSettings> {
    ClientSettings::resolve(&child.spec, &cx.shared.policy).ok()
}

/// The token the OAuthClient's managed Secret holds, read when its version changed and taken
/// only if intact (sealed, owned) and the one the OAuthClient's status records (so that the
/// copies and this object's status always speak of the same token), and unexpired. `None`
/// while the status records none.
async fn current_token(
    child: &OAuthClient,
    cx: &ClusterContext,
    remembered: &mut Remembered,
) -> Result<Option<IntactToken>, Error> {
    let name = child.name_any();
    let Some(issued_at) = child.status.as_ref().and_then(|s| s.issued_at.clone()) else {
        return Ok(None);
    };
    let anchored =
        |token: &IntactToken| issued_at == crate::base::time::rfc3339(token.token.issued_at);
    // The index only saves the read: a Secret it does not show yet (its watch event may come
    // after the OAuthClient's status) is read all the same.
    let rv = cx
        .scope
        .managed
        .get(&cx.namespace, &name)
        .map(|m| m.resource_version.to_string());
    let fresh = match &remembered.source {
        // The status anchors the token: one issued after the one remembered is read even while
        // the Secret index has not caught up with its write.
        Some((seen, token)) if Some(seen) == rv.as_ref() && anchored(token) => Some(token.clone()),
        _ => None,
    };
    let token = match fresh {
        Some(token) => Some(token),
        None => {
            let api: Api<Secret> = Api::namespaced(cx.shared.kube.clone(), &cx.namespace);
            let read = api.get_opt(&name).await.map_err(Error::ReadSource)?;
            let status = child.status.clone().unwrap_or_default();
            let keys = &cx.shared.seal_keys;
            let intact = read.as_ref().and_then(|secret| {
                let token = managed_secret::inspect(secret, child, keys, &status).intact_token?;
                let rv = secret.resource_version().unwrap_or_default();
                Some((rv, token))
            });
            match intact.filter(|(_, token)| anchored(token)) {
                Some((rv, token)) => {
                    remembered.source = Some((rv, token.clone()));
                    Some(token)
                }
                // Deleted, changed by someone, or not yet the token the status records: the
                // copies keep the token last found intact while the status still records it;
                // the OAuthClient's restore or its next status brings the next one.
                None => remembered
                    .source
                    .as_ref()
                    .map(|(_, t)| t.clone())
                    .filter(|t| anchored(t)),
            }
        }
    };
    let now = cx.shared.clock.now();
    Ok(token.filter(|t| t.token.expires_at > now))
}

/// The selected namespaces, or why the selector is unusable.
fn selection(
    client: &ClusterOAuthClient,
    cx: &ClusterContext,
) -> Result<std::collections::BTreeSet<String>, String> {
    let selector = match &client.spec.namespace_selector {
        None => None,
        Some(s)
            if s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|e| e.is_empty()) =>
        {
            return Err("spec.target.namespaceSelector may not be empty: an empty selector selects every namespace, kube-system and every future one included (name the labels, or list the namespaces)".to_owned());
        }
        Some(s) => Some(Selector::try_from(s.clone()).map_err(|e| {
            format!("spec.target.namespaceSelector is not a valid label selector: {e}")
        })?),
    };
    let namespaces: Vec<NamespaceSeen> = cx
        .namespaces
        .state()
        .iter()
        .map(|ns| NamespaceSeen {
            name: ns.name_any(),
            labels: ns.labels().clone(),
            terminating: ns.metadata.deletion_timestamp.is_some(),
        })
        .collect();
    Ok(distribution::selected(
        &namespaces,
        &client.spec.namespaces,
        selector.as_ref(),
    ))
}

/// The status: the OAuthClient's (when it describes its current spec), with this object's
/// generation, the Secret's name, the targets and `Distributed`.
fn status_of(
    client: &ClusterOAuthClient,
    child: &OAuthClient,
    previous: &ClusterOAuthClientStatus,
    outcome: &Outcome,
    target: &str,
    cx: &ClusterContext,
) -> ClusterOAuthClientStatus {
    let generation = client.metadata.generation;
    let current = child.status.as_ref().filter(|s| {
        s.observed_generation.is_some() && s.observed_generation == child.metadata.generation
    });
    let mut status = match current {
        Some(s) => s.clone(),
        None => previous.client.clone(),
    };
    status.observed_generation = generation;
    status.secret_name = Some(target.to_owned());
    status.conditions.retain(|c| c.type_ != DISTRIBUTED);
    for condition in &mut status.conditions {
        condition.observed_generation = generation;
    }
    let now = Time(cx.shared.clock.now());
    let before = conditions::find(&previous.client.conditions, DISTRIBUTED);
    let distributed = distribution::distributed(outcome, target, generation, now, before);
    status.conditions.push(distributed);
    ClusterOAuthClientStatus {
        client: status,
        targets: Some(distribution::targets(outcome)),
    }
}

/// The status when nothing can be done: Ready False with `reason` SecretConflict or
/// InvalidSpec, the rest kept.
fn blocked(
    client: &ClusterOAuthClient,
    previous: &ClusterOAuthClientStatus,
    message: &str,
    cx: &ClusterContext,
) -> ClusterOAuthClientStatus {
    let mut status = previous.clone();
    let generation = client.metadata.generation;
    let reason = if message.starts_with("OAuthClient") {
        "SecretConflict"
    } else {
        "InvalidSpec"
    };
    let now = cx.shared.clock.now();
    conditions::set(
        &mut status.client.conditions,
        READY,
        false,
        reason,
        message,
        generation,
        now,
    );
    status.client.observed_generation = generation;
    status
}

/// Applies the status when it changed.
async fn write_status(
    client: &ClusterOAuthClient,
    cx: &ClusterContext,
    current: &ClusterOAuthClientStatus,
    desired: &ClusterOAuthClientStatus,
) -> Result<(), Error> {
    if current == desired && client.status.is_some() {
        return Ok(());
    }
    let api: Api<ClusterOAuthClient> = Api::all(cx.shared.kube.clone());
    let body = json!({
        "apiVersion": ClusterOAuthClient::api_version(&()),
        "kind": ClusterOAuthClient::kind(&()),
        "status": desired,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let name = client.name_any();
    let patch = Patch::Apply(&body);
    match with_retries(|| api.patch_status(&name, &params, &patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::WriteStatus(e)),
    }
}
