//! One reconcile, as its steps:
//!
//! 1. **observe** ([`observe`]; caches, memo, the API only when they cannot tell): the
//!    OAuthClient, its managed Secret, whether the stored token is current, its credentials;
//! 2. **decide** ([`crate::decide::plan`], pure): is an exchange due, and why;
//! 3. **exchange** ([`act`], HTTP, through the exchange gate) when due, through the HTTP
//!    client of the endpoint's trust ([`trust`]: the default one, or the CA bundle's);
//! 4. **write the Secret** ([`write`]) when there is a new token or a new rendering;
//! 5. **write the status** ([`status`]) when it changed, after settling it
//!    ([`crate::decide::settle`], pure);
//! 6. **record** ([`record`]) what was learned, once: memo, metrics, log; emit the event;
//!    requeue at the next refresh or retry.

mod act;
mod error;
mod observe;
mod record;
mod status;
mod trust;
mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;

pub use error::Error;

use super::context::Context;
use crate::api::crd::OAuthClient;
use crate::api::name::NamespacedName;
use crate::api::reason::Reason;
use crate::decide;
use crate::timing::backoff;

/// Runs one reconcile of the OAuthClient the watch cache shows (metadata only), counted in the
/// metrics. The object itself is read first: one GET, so spec and status are never stale.
pub async fn reconcile(
    meta: Arc<PartialObjectMeta<OAuthClient>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = meta.namespace().unwrap_or_default();
    let api: Api<OAuthClient> = Api::namespaced(ctx.shared.kube.clone(), &namespace);
    let result = match api.get_opt(&meta.name_any()).await {
        Ok(Some(client)) => run(&client, &ctx).await,
        // Deleted meanwhile: the watch will tell.
        Ok(None) => Ok(Action::await_change()),
        Err(e) => Err(Error::ReadClient(e)),
    };
    let error = result.as_ref().err().map(Error::metric_label);
    let metrics = &ctx.shared.metrics;
    metrics.reconcile(started.elapsed().as_secs_f64(), error);
    metrics.http_clients(ctx.shared.exchanger.transport().clients_in_use());
    result
}

#[tracing::instrument(skip_all, fields(namespace = client.namespace().unwrap_or_default(), name = client.name_any()))]
async fn run(client: &OAuthClient, ctx: &Context) -> Result<Action, Error> {
    let mut observation = observe::observe(client, ctx).await?;
    let plan = decide::plan(&observation.view(), observation.now);
    tracing::debug!(next = ?plan.next, due_at = %plan.due_at, "planned");
    let attempt = match act::act(client, ctx, &mut observation, &plan).await {
        Ok(act::Acted::Done(attempt)) => attempt,
        Ok(act::Acted::Deferred) => {
            record::unsettled(ctx, client, observation);
            return Ok(Action::requeue(act::deferred_wait(ctx)));
        }
        Err(error) => {
            record::unsettled(ctx, client, observation);
            return Err(error);
        }
    };
    let settled = decide::settle(
        &observation.view(),
        &plan,
        &attempt,
        observation.now,
        rand::random::<f64>(),
    );
    let current = std::mem::take(&mut observation.status);
    record::settled(ctx, client, observation, &attempt, &settled);
    status::write(client, ctx, &current, &settled.status).await?;
    for note in settled.event.iter().chain(&settled.notices) {
        let now = ctx.shared.clock.now();
        ctx.shared.events.publish(client, note, now).await;
    }
    let wait = settled.requeue_at.duration_since(ctx.shared.clock.now());
    let wait = Duration::try_from(wait)
        .unwrap_or(decide::MIN_WAIT)
        .max(decide::MIN_WAIT);
    Ok(Action::requeue(wait))
}

/// After an API error: retry with exponential backoff from 5 s up to 5 min.
pub fn error_policy(
    meta: Arc<PartialObjectMeta<OAuthClient>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let errors = ctx.memos.count_error(&NamespacedName::of(&meta.metadata));
    let delay = backoff::retry_delay(
        Reason::EndpointUnavailable,
        errors,
        None,
        rand::random::<f64>(),
    );
    tracing::warn!(
        namespace = meta.namespace().unwrap_or_default(),
        name = meta.name_any(),
        error = %error,
        retry_in_s = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}
