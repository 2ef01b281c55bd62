//! Record what a reconcile learned, once, at its end: the client's memo, the exchange metrics
//! (each attempt counted exactly once), the per-client gauges, the log line.

use super::observe::{Observation, digest_of};
use crate::api::conditions::{self, READY};
use crate::api::crd::{OAuthClient, OAuthClientStatus};
use crate::controller::context::Context;
use crate::controller::memo::{Change, FailedWith};
use crate::decide::{Attempt, Settled, Trigger};
use crate::timing::time;

/// Records a reconcile that ended before it settled (deferred at the gate, or an API error).
pub fn unsettled(ctx: &Context, client: &OAuthClient, observation: Observation) {
    count(ctx, client, &observation);
    ctx.memos.record(&observation.key, observation.learned);
}

/// Records a reconcile that settled.
pub fn settled(
    ctx: &Context,
    client: &OAuthClient,
    mut observation: Observation,
    attempt: &Attempt,
    settled: &Settled,
) {
    count(ctx, client, &observation);
    gauges(ctx, &observation, &settled.status);
    match attempt {
        Attempt::Failed(failure) => {
            tracing::info!(reason = %failure.reason, message = %failure.message, "exchange failed");
            observation.learned.failed_with = Change::Set(failed_with(ctx, &observation));
        }
        Attempt::Issued { expires_at, .. } => {
            tracing::info!(expires_at = %expires_at, "token issued");
            observation.learned.failed_with = Change::Clear;
            // Restores in a row wait longer each time; any other new token ends the streak.
            let restored = observation
                .counted
                .is_some_and(|c| c.trigger == Trigger::Restore);
            let streak = observation.memo.restore_streak;
            observation.learned.restore_streak = Some(if restored {
                streak.saturating_add(1)
            } else {
                0
            });
        }
        Attempt::None => {}
    }
    observation.learned.settled = Some((
        settled.failure_streak,
        settled.issued_events,
        settled.margin_warned,
    ));
    ctx.memos.record(&observation.key, observation.learned);
}

/// The exchange attempt, or the refusal before one, counted once.
fn count(ctx: &Context, client: &OAuthClient, observation: &Observation) {
    if let Some(counted) = observation.counted {
        ctx.shared.metrics.exchange(
            client.spec.provider.as_str(),
            counted.trigger.as_str(),
            counted.result,
            counted.seconds,
        );
    }
}

/// The credentials a failure happened with: as read, else as the cache shows them; and the CA
/// bundle's object, as read, else as the cache shows it (always the current view, so that the
/// same version never counts as a change twice).
fn failed_with(ctx: &Context, observation: &Observation) -> FailedWith {
    let trust_rv = match &observation.trust {
        Some(loaded) => loaded.resource_version.clone(),
        None => observation.trust_rv.clone(),
    };
    match &observation.credentials {
        Some(loaded) => FailedWith {
            resource_version: loaded.resource_version.clone(),
            digest: digest_of(ctx, loaded),
            trust_rv,
        },
        None => FailedWith {
            trust_rv,
            ..observation.memo.failed_with.clone().unwrap_or(FailedWith {
                resource_version: observation.credentials_rv.clone(),
                digest: None,
                trust_rv: None,
            })
        },
    }
}

/// Publishes the client's token times and Ready condition as metrics.
fn gauges(ctx: &Context, observation: &Observation, status: &OAuthClientStatus) {
    let second = |t: &Option<String>| time::parse(t.as_deref()).map(|t| t.as_second() as f64);
    let token = second(&status.issued_at).zip(second(&status.expires_at));
    let ready = conditions::find(&status.conditions, READY)
        .map(|c| c.status.as_str())
        .unwrap_or("Unknown");
    let key = &observation.key;
    ctx.shared
        .metrics
        .client_state(&key.namespace, &key.name, token, ready);
}
