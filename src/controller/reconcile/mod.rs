//! One reconcile, as a pipeline of steps, each returning its own type:
//!
//! 1. **observe** ([`observe`]; the caches, the client's memory, the API only when they cannot
//!    tell) → an immutable [`observe::Snapshot`]: the OAuthClient, its managed Secret (what it
//!    is, decided purely by [`crate::decide::managed_secret`]), whether the stored token is
//!    current;
//! 2. **plan** ([`crate::decide::plan()`], pure): is an exchange due, and why;
//! 3. **act** on the plan: an **exchange** — the outbox's token when it can still be written,
//!    else a place at the gate ([`exchange::admit`]), the inputs ([`inputs`]: credentials, the
//!    HTTP client of the trust and identity, a ServiceAccount token) and the request
//!    ([`exchange::send`]) — or a **re-render**, a refusal, or nothing;
//! 4. **write** the managed Secret ([`write`]) with a new token or a new rendering;
//! 5. **settle** ([`crate::decide::settle()`], pure): the status, the event, when to look again;
//! 6. **status** ([`status`]) when it changed;
//! 7. **record** ([`record`]) what was learned, once: memory, metrics, log;
//! 8. **events**, and the requeue.
//!
//! No step calls a later one: the driver below ([`run`]) calls them in order and hands each the
//! outputs it needs.

mod credentials;
mod error;
mod exchange;
mod inputs;
mod observe;
mod record;
pub mod retries;
mod service_account_token;
mod status;
mod subject;
mod trust;
mod write;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;

pub use self::error::Error;
pub use self::exchange::DetachedRequests;
use self::exchange::{Counted, Exchanged};
use self::inputs::Ready;
use self::observe::Snapshot;
use self::record::{Acted, Outputs};
use super::context::Context;
use super::memory::Change;
use crate::api::crd::OAuthClient;
use crate::api::name::NamespacedName;
use crate::api::reason::Reason;
use crate::decide::{self, Attempt, Next, Settled, Trigger};
use crate::timing::backoff;

/// When to reconcile a client again without a change: after this long, or (`None`) only when
/// something changes.
pub type Requeue = Option<Duration>;

/// Runs one reconcile of the OAuthClient the watch cache shows (metadata only), counted in the
/// metrics. The object itself is read first: one GET, so spec and status are never stale.
pub async fn reconcile(
    meta: Arc<PartialObjectMeta<OAuthClient>>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    let started = Instant::now();
    let namespace = meta.namespace().unwrap_or_default();
    let api: Api<OAuthClient> = Api::namespaced(ctx.shared.kube.clone(), &namespace);
    let result = match api.get_opt(&meta.name_any()).await {
        Ok(Some(client)) => run(&client, &ctx).await,
        // Deleted meanwhile: the watch will tell.
        Ok(None) => Ok(None),
        Err(e) => Err(Error::ReadClient(e)),
    };
    let error = result.as_ref().err().map(Error::metric_label);
    let metrics = &ctx.shared.metrics;
    metrics.reconcile(started.elapsed().as_secs_f64(), error);
    metrics.http_clients(ctx.shared.transport.clients_in_use());
    result
}

/// The pipeline: observe → plan → exchange / re-render / fail / idle (→ write) → settle →
/// status → record → events → requeue.
#[tracing::instrument(skip_all, fields(namespace = client.namespace().unwrap_or_default(), name = client.name_any()))]
async fn run(client: &OAuthClient, ctx: &Context) -> Result<Requeue, Error> {
    let seen = observe::observe(client, ctx).await?;
    let plan = decide::plan(&seen.view(), seen.now);
    tracing::debug!(next = ?plan.next, due_at = %plan.due_at, "planned");
    let mut outputs = Outputs::default();
    if !matches!(plan.next, Next::Exchange(_)) {
        // Queued at the gate by an earlier reconcile, it no longer wants a place.
        exchange::leave_the_queue(ctx, &seen);
    }
    let acted = match &plan.next {
        Next::Idle => Acted::Attempted(Attempt::None),
        Next::Fail(trigger, failure) => outputs.refused(*trigger, failure),
        Next::Exchange(trigger) => exchange(client, ctx, &seen, *trigger, &mut outputs).await,
        Next::Rerender => {
            let settings = seen.usable_settings();
            outputs.rerendered(write::rerender(client, ctx, &seen, settings).await)
        }
    };
    let attempt = match acted {
        Acted::Attempted(attempt) => attempt,
        Acted::Deferred => {
            record::unsettled(ctx, client, &seen, outputs);
            return Ok(Some(exchange::deferred_wait(ctx)));
        }
        Acted::Interrupted(error) => {
            record::unsettled(ctx, client, &seen, outputs);
            return Err(error);
        }
    };
    let jitter = rand::random::<f64>();
    let settled = decide::settle(&seen.view(), &plan, &attempt, seen.now, jitter);
    record::settled(ctx, client, &seen, outputs, &attempt, &settled);
    status::write(client, ctx, &seen.status, &settled.status).await?;
    publish_events(ctx, client, &settled).await;
    Ok(Some(requeue_after(ctx, &settled)))
}

/// The exchange branch: the outcome of a request that went on by itself, or the outbox's token
/// when it may still be written, else a place at the gate, the inputs and the request; then the
/// write of the token obtained.
async fn exchange(
    client: &OAuthClient,
    ctx: &Context,
    seen: &Snapshot,
    trigger: Trigger,
    outputs: &mut Outputs,
) -> Acted {
    tracing::debug!(%trigger, "exchange due");
    let settings = seen.usable_settings();
    match exchange::take_detached(ctx, &seen.key) {
        // Its request is still out: the gate wakes this client when it is over.
        Some(None) => return Acted::Deferred,
        Some(Some(outcome)) if outcome.still_fresh(settings, seen) => {
            exchange::leave_the_queue(ctx, seen);
            return recorded(client, ctx, seen, settings, outputs, *outcome).await;
        }
        // For settings or credentials that changed meanwhile: a new request.
        Some(Some(_)) | None => {}
    }
    if let Some(pending) = &seen.memory.outbox.pending {
        outputs.outbox = Change::Clear;
        let settings_now = &settings.exchange;
        let credentials_rv = seen.credentials_rv.as_ref();
        if pending.still_fresh(settings_now, &settings.refresh, credentials_rv, seen.now) {
            let loaded = match inputs::credentials(client, ctx, seen).await {
                Ok(loaded) => loaded,
                Err(error) => return Acted::Interrupted(error),
            };
            let key = &ctx.shared.credentials_key;
            let same = loaded.credentials.is_ok() && pending.issued_with(Some(loaded.digest(key)));
            outputs.credentials = Some(loaded);
            if same {
                exchange::leave_the_queue(ctx, seen);
                let stored = write::store(client, ctx, seen, settings, pending.clone()).await;
                return outputs.stored(stored);
            }
        }
    }
    let Some(pass) = exchange::admit(ctx, seen, settings) else {
        return Acted::Deferred;
    };
    let known = outputs.credentials.take();
    let inputs = match inputs::load(client, ctx, seen, settings, known).await {
        Ok(inputs) => inputs,
        Err(error) => return Acted::Interrupted(error),
    };
    let (as_read, trust) = (inputs.credentials, inputs.trust);
    let outcome = match inputs.ready {
        Ready::Refused(failure) => {
            drop(pass);
            outputs.counted = Some(Counted::refused(trigger, &failure));
            outputs.credentials = Some(as_read);
            outputs.trust = Some(trust);
            return Acted::Attempted(Attempt::Failed(failure));
        }
        Ready::Send {
            credentials,
            client: http,
        } => {
            let request = tokio::spawn(exchange::send(
                ctx.shared.clone(),
                pass,
                trigger,
                settings.clone(),
                as_read.clone(),
                credentials,
                http,
            ));
            let answered =
                exchange::answer_or_detach(ctx, &seen.key, trigger, request, as_read, trust);
            match answered.await {
                Some(outcome) => outcome,
                None => return Acted::Deferred,
            }
        }
    };
    recorded(client, ctx, seen, settings, outputs, outcome).await
}

/// What a request came to, for the settle step; a token is written.
async fn recorded(
    client: &OAuthClient,
    ctx: &Context,
    seen: &Snapshot,
    settings: &crate::spec::ClientSettings,
    outputs: &mut Outputs,
    outcome: exchange::Outcome,
) -> Acted {
    outputs.credentials = Some(outcome.credentials);
    outputs.trust = Some(outcome.trust);
    match outputs.sent(outcome.sent) {
        Exchanged::Failed(failure) => Acted::Attempted(Attempt::Failed(failure)),
        Exchanged::Issued(token) => {
            outputs.stored(write::store(client, ctx, seen, settings, token).await)
        }
    }
}

/// Publishes the settled event and notices.
async fn publish_events(ctx: &Context, client: &OAuthClient, settled: &Settled) {
    for note in settled.event.iter().chain(&settled.notices) {
        let now = ctx.shared.clock.now();
        ctx.shared.events.publish(client, note, now).await;
    }
}

/// How long until the settled time to look again (never less than [`decide::MIN_WAIT`]).
fn requeue_after(ctx: &Context, settled: &Settled) -> Duration {
    let wait = settled.requeue_at.duration_since(ctx.shared.clock.now());
    Duration::try_from(wait)
        .unwrap_or(decide::MIN_WAIT)
        .max(decide::MIN_WAIT)
}

/// After an API error: when to retry, with exponential backoff from 5 s up to 5 min.
pub fn error_policy(
    meta: Arc<PartialObjectMeta<OAuthClient>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Duration {
    let errors = ctx
        .memories
        .count_error(&NamespacedName::of(&meta.metadata));
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
    delay
}
