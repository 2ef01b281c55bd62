//! Step 7, record what a reconcile learned, once, at its end: built from the snapshot and the
//! typed outputs of the steps — the client's memory, the exchange metrics (each attempt counted
//! exactly once), the per-client gauges, the log line.

use jiff::Timestamp;

use super::credentials::Loaded;
use super::exchange::{Counted, Sent};
use super::observe::Snapshot;
use super::trust::LoadedTrust;
use super::write::{Rerendered, Stored, WriteRecord};
use crate::api::conditions::{self, READY};
use crate::api::crd::{OAuthClient, OAuthClientStatus};
use crate::base::time;
use crate::controller::context::Context;
use crate::controller::memory::{
    CacheUpdate, Change, EventLedger, FailedWith, HandlesUpdate, Learned, Pending, RetryUpdate,
    Verified,
};
use crate::controller::own_writes::WriteOf;
use crate::decide::{Attempt, Settled, Trigger};
use crate::oauth::transport::HttpClient;

/// What the steps after observing produced that the memory, the metrics or the log need, as the
/// driver collected it from their outputs.
#[derive(Debug, Default)]
pub struct Outputs {
    /// The exchange attempt, or the refusal before one, as counted.
    pub counted: Option<Counted>,
    /// The credentials, when a step read them.
    pub credentials: Option<Loaded>,
    /// The trust's client, when an exchange loaded it.
    pub trust: Option<LoadedTrust>,
    /// The identity client of the request.
    pub identity: Change<HttpClient>,
    /// The token waiting to be written: taken out (written now or dropped), or kept.
    pub outbox: Change<Box<Pending>>,
    /// The write of the managed Secret.
    pub written: Option<WriteRecord>,
    /// A new token written: its fingerprint check and when its request was sent.
    pub issued: Option<Issued>,
    /// A re-rendering found the stored token not intact: its version is no longer trusted.
    pub untrusted: bool,
}

/// A new token in the managed Secret.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The stored fingerprint, matching by construction.
    pub verified: Verified,
    /// When the request that obtained it was sent.
    pub exchanged_at: Timestamp,
}

/// What the act part of a reconcile came to.
#[derive(Debug)]
pub enum Acted {
    /// An attempt (or none) to settle.
    Attempted(Attempt),
    /// No room at the exchange gate: nothing was attempted; the gate wakes the client.
    Deferred,
    /// An API error ended the reconcile.
    Interrupted(super::error::Error),
}

impl Outputs {
    /// A plan that fails before any attempt (counted as a refusal).
    pub fn refused(&mut self, trigger: Trigger, failure: &crate::api::reason::Failure) -> Acted {
        self.counted = Some(Counted::refused(trigger, failure));
        Acted::Attempted(Attempt::Failed(failure.clone()))
    }

    /// The request sent.
    pub fn sent(&mut self, sent: Sent) -> super::exchange::Exchanged {
        self.counted = Some(sent.counted);
        self.identity = sent.identity;
        sent.exchanged
    }

    /// What writing a new token came to.
    pub fn stored(&mut self, stored: Stored) -> Acted {
        match stored {
            Stored::Written {
                attempt,
                record,
                verified,
                exchanged_at,
            } => {
                self.written = Some(record);
                self.outbox = Change::Clear;
                self.issued = Some(Issued {
                    verified,
                    exchanged_at,
                });
                Acted::Attempted(*attempt)
            }
            Stored::Refused { failure, kept } => {
                if let Some(kept) = kept {
                    self.outbox = Change::Set(kept);
                }
                Acted::Attempted(Attempt::Failed(failure))
            }
            Stored::Interrupted { error, kept } => {
                self.outbox = Change::Set(kept);
                Acted::Interrupted(error)
            }
        }
    }

    /// What re-rendering came to.
    pub fn rerendered(&mut self, rerendered: Rerendered) -> Acted {
        match rerendered {
            Rerendered::Written(record) => {
                self.written = Some(record);
                Acted::Attempted(Attempt::None)
            }
            Rerendered::NotIntact => {
                self.untrusted = true;
                Acted::Attempted(Attempt::None)
            }
            Rerendered::Refused(failure) => Acted::Attempted(Attempt::Failed(failure)),
            Rerendered::Interrupted(error) => Acted::Interrupted(error),
        }
    }

    /// The credentials as some step read them.
    fn credentials<'a>(&'a self, seen: &'a Snapshot) -> Option<&'a Loaded> {
        self.credentials.as_ref().or(seen.credentials.as_ref())
    }
}

/// Records a reconcile that ended before it settled (deferred at the gate, or an API error).
pub fn unsettled(ctx: &Context, client: &OAuthClient, seen: &Snapshot, outputs: Outputs) {
    count(ctx, client, &outputs);
    let key = &ctx.shared.credentials_key;
    let learned = learned(key, seen, outputs, None);
    record(ctx, seen, learned);
}

/// Records what the memory learned; the write of the managed Secret only while the watches are
/// still to show it (it stands in for a cache that has not caught up, and nothing else: kept
/// after that, it would cost every client the copy of its annotations until its next reconcile).
fn record(ctx: &Context, seen: &Snapshot, mut learned: Learned) {
    if matches!(learned.caches.written, Change::Set(_))
        && !ctx.own_writes.awaits(WriteOf::Secret, &seen.secret_key())
    {
        learned.caches.written = Change::Clear;
    }
    ctx.memories.record(&seen.key, learned);
}

/// Records a reconcile that settled.
pub fn settled(
    ctx: &Context,
    client: &OAuthClient,
    seen: &Snapshot,
    outputs: Outputs,
    attempt: &Attempt,
    settled: &Settled,
) {
    count(ctx, client, &outputs);
    gauges(ctx, seen, &settled.status);
    match attempt {
        Attempt::Failed(failure) => {
            tracing::info!(reason = %failure.reason, message = %failure.message, "exchange failed");
        }
        Attempt::Issued { expires_at, .. } => {
            tracing::info!(expires_at = %expires_at, "token issued")
        }
        Attempt::None => {}
    }
    let key = &ctx.shared.credentials_key;
    let learned = learned(key, seen, outputs, Some((attempt, settled)));
    record(ctx, seen, learned);
}

/// What the memory learns from the snapshot, the steps' outputs and (when it settled) the
/// attempt and the settled decision (pure; `credentials_key` keys the credentials' digest).
pub(super) fn learned(
    credentials_key: &[u8; 32],
    seen: &Snapshot,
    outputs: Outputs,
    settled: Option<(&Attempt, &Settled)>,
) -> Learned {
    let found = &seen.found;
    let mut caches = found.caches.clone().then(CacheUpdate {
        verified: outputs
            .issued
            .as_ref()
            .map_or(Change::Keep, |i| Change::Set(i.verified.clone())),
        written: outputs
            .written
            .as_ref()
            .map_or(Change::Keep, |w| Change::Set(w.written.clone())),
        trusted_rv: match &outputs.written {
            Some(WriteRecord {
                trusted_rv: Some(rv),
                ..
            }) => Change::Set(rv.clone()),
            _ => Change::Keep,
        },
    });
    if outputs.untrusted {
        caches.trusted_rv = Change::Clear;
    }
    let mut retry = RetryUpdate {
        failed_with: found.failed_with.clone().map_or(Change::Keep, Change::Set),
        last_exchange_at: outputs.issued.as_ref().map(|i| i.exchanged_at),
        ..RetryUpdate::default()
    };
    let mut ledger = None;
    if let Some((attempt, settled)) = settled {
        if !matches!(attempt, Attempt::None) {
            retry.last_attempt_at = Some((seen.now, seen.refresh_requested_at));
        }
        match attempt {
            Attempt::Failed(_) => {
                retry.failed_with = Change::Set(failed_with(credentials_key, seen, &outputs));
            }
            Attempt::Issued { .. } => {
                retry.failed_with = Change::Clear;
                // Restores in a row wait longer each time; any other new token ends the streak.
                let restored = outputs
                    .counted
                    .is_some_and(|c| c.trigger == Trigger::Restore);
                let streak = seen.memory.retry.restore_streak;
                retry.restore_streak = Some(if restored {
                    streak.saturating_add(1)
                } else {
                    0
                });
            }
            Attempt::None => {}
        }
        retry.settled = Some(settled.failure_streak);
        ledger = Some(EventLedger {
            issued: settled.issued_events,
            margin_warned: settled.margin_warned,
        });
    }
    let trust = match &outputs.trust {
        Some(loaded) => loaded.handle.clone(),
        None if found.trust_released => Change::Clear,
        None => Change::Keep,
    };
    Learned {
        caches,
        retry,
        ledger,
        outbox: outputs.outbox,
        handles: HandlesUpdate {
            trust,
            identity: outputs.identity,
        },
    }
}

/// The exchange attempt, or the refusal before one, counted once.
fn count(ctx: &Context, client: &OAuthClient, outputs: &Outputs) {
    if let Some(counted) = outputs.counted {
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
fn failed_with(credentials_key: &[u8; 32], seen: &Snapshot, outputs: &Outputs) -> FailedWith {
    let trust_rv = match &outputs.trust {
        Some(loaded) => loaded.resource_version.clone(),
        None => seen.trust_rv.clone(),
    };
    match outputs.credentials(seen) {
        Some(loaded) => FailedWith {
            resource_version: loaded.resource_version.clone(),
            digest: Some(loaded.digest(credentials_key)),
            trust_rv,
        },
        None => FailedWith {
            trust_rv,
            ..seen
                .found
                .failed_with
                .clone()
                .or_else(|| seen.memory.retry.failed_with.as_deref().cloned())
                .unwrap_or(FailedWith {
                    resource_version: seen.credentials_rv.clone(),
                    digest: None,
                    trust_rv: None,
                })
        },
    }
}

/// Publishes the client's token times and Ready condition as metrics.
fn gauges(ctx: &Context, seen: &Snapshot, status: &OAuthClientStatus) {
    let second = |t: &Option<String>| time::parse(t.as_deref()).map(|t| t.as_second() as f64);
    let token = second(&status.issued_at).zip(second(&status.expires_at));
    let ready = conditions::find(&status.conditions, READY)
        .map(|c| c.status.as_str())
        .unwrap_or("Unknown");
    let key = &seen.key;
    ctx.shared
        .metrics
        .client_state(&key.namespace, &key.name, token, ready);
}
