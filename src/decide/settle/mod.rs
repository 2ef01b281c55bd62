//! What a reconcile ends with, once the attempt (if any) is over: the status, an event, when to
//! look again. One file per outcome: [`issued`] (a new token), [`failed`] (an attempt failed),
//! [`waiting`] (no attempt: waiting for the refresh time or the retry).

mod failed;
mod issued;
mod waiting;

use jiff::Timestamp;

use super::{
    Attempt, EventNote, FailureStreak, IssuedEvents, MIN_WAIT, Next, Observed, Plan, SecretState,
    Settled, Trigger, valid_token,
};
use crate::api::conditions::{self, DEGRADED, READY, TOKEN_ISSUED};
use crate::api::crd::OAuthClientStatus;
use crate::api::reason::{Failure, Reason};
use crate::base::time::{add, rfc3339};
use crate::timing::refresh::short_margin_warning;

/// Computes the status, event and requeue time after the attempt.
///
/// `backoff_jitter` (in [0, 1)) spreads retries after a failure.
pub fn settle(
    observed: &Observed<'_>,
    plan: &Plan,
    attempt: &Attempt,
    now: Timestamp,
    backoff_jitter: f64,
) -> Settled {
    let mut out = Settling::new(observed, now);
    let requeue_at = match attempt {
        Attempt::Issued { .. } => issued::settle(&mut out, attempt),
        Attempt::Failed(failure) => failed::settle(&mut out, failure, backoff_jitter),
        Attempt::None => waiting::settle(&mut out, plan),
    };
    out.notices.extend(restored(observed, plan, attempt));
    out.finish(requeue_at)
}

/// The `SecretRestored` event, when this reconcile restored the managed Secret: with a new
/// token (its sealed data or annotations had been changed) or by re-applying the metadata the
/// operator owns. It names what was changed, never a value.
fn restored(observed: &Observed<'_>, plan: &Plan, attempt: &Attempt) -> Option<EventNote> {
    let name = observed.secret_name;
    let note = match (&plan.next, attempt, observed.secret, observed.drift) {
        (
            Next::Exchange(Trigger::Restore),
            Attempt::Issued { .. },
            SecretState::Tampered(items),
            _,
        ) => {
            format!(
                "Secret {name} was changed by someone else ({}); restored with a new token",
                describe(items)
            )
        }
        (Next::Rerender, Attempt::None, _, Some(drift)) if !drift.is_empty() => format!(
            "Secret {name} was changed by someone else ({}); restored",
            drift.join(", ")
        ),
        _ => return None,
    };
    Some(EventNote {
        normal: false,
        reason: "SecretRestored",
        action: "Restore".into(),
        note,
    })
}

/// Sealed items as messages name them: `data key access_token`, `annotation ...`, `seal`.
fn describe(items: &[String]) -> String {
    let named: Vec<String> = items
        .iter()
        .map(|item| match item.strip_prefix("data/") {
            Some(key) => format!("data key {key}"),
            None if item == "seal" => "the operator's seal is missing or was altered".to_owned(),
            None => format!("annotation {item}"),
        })
        .collect();
    named.join(", ")
}

/// The status being settled, and what else the reconcile ends with.
struct Settling<'o, 'a> {
    observed: &'o Observed<'a>,
    now: Timestamp,
    status: OAuthClientStatus,
    event: Option<EventNote>,
    notices: Vec<EventNote>,
    margin_warned: Option<i64>,
    failure_streak: Option<FailureStreak>,
    issued_events: Option<IssuedEvents>,
}

impl<'o, 'a> Settling<'o, 'a> {
    /// Starts from the current status, with the generation, the Secret's name and the times of
    /// the token the Secret holds (a failure keeps the Secret as it is).
    fn new(observed: &'o Observed<'a>, now: Timestamp) -> Self {
        let mut status = observed.status.clone();
        status.observed_generation = observed.generation;
        status.secret_name = Some(observed.secret_name.to_owned());
        if let SecretState::Owned(Some(token)) = observed.secret {
            status.issued_at = Some(rfc3339(token.issued_at));
            status.expires_at = Some(rfc3339(token.expires_at));
        }
        Settling {
            observed,
            now,
            status,
            event: None,
            notices: Vec::new(),
            margin_warned: observed.margin_warned,
            failure_streak: observed.failure_streak,
            issued_events: observed.issued_events,
        }
    }

    /// Sets a condition for the current generation at `now`.
    fn condition(&mut self, type_: &str, value: bool, reason: &str, message: &str) {
        conditions::set(
            &mut self.status.conditions,
            type_,
            value,
            reason,
            message,
            self.observed.generation,
            self.now,
        );
    }

    /// Ready=True for a token valid until `expires_at` and refreshed at `refresh_at` (when
    /// known); a refresh margin too short for mounted Secrets is said, and warned about once
    /// per spec generation (`ShortRenewMargin`).
    fn ready(&mut self, expires_at: Timestamp, refresh_at: Option<Timestamp>) {
        let mut message = format!(
            "Secret {} holds a token valid until {}",
            self.observed.secret_name,
            rfc3339(expires_at)
        );
        if let Some(warning) = refresh_at.and_then(|at| short_margin_warning(at, expires_at)) {
            message.push_str("; ");
            message.push_str(&warning);
            let generation = self.observed.generation;
            if self.margin_warned != generation || generation.is_none() {
                self.margin_warned = generation;
                self.notices.push(EventNote {
                    normal: false,
                    reason: "ShortRenewMargin",
                    action: "Refresh".into(),
                    note: format!("Secret {}: {warning}", self.observed.secret_name),
                });
            }
        }
        self.condition(READY, true, TOKEN_ISSUED, &message);
    }

    /// Conditions after a failure (`failure`), or while waiting to retry after one (`None`: the
    /// failure is the one already in the Degraded condition).
    fn failure_conditions(&mut self, failure: Option<&Failure>) {
        let degraded = conditions::find(&self.status.conditions, DEGRADED).cloned();
        let (reason, message) = match (failure, &degraded) {
            (Some(f), _) => (f.reason.as_str().to_owned(), f.message.clone()),
            (None, Some(c)) if c.status == "True" => (c.reason.clone(), c.message.clone()),
            // No failure recorded (status lost): say what is known.
            _ => match conditions::find(&self.status.conditions, READY) {
                Some(c) if c.status == "False" => (c.reason.clone(), c.message.clone()),
                _ => (
                    Reason::TokenExpired.as_str().to_owned(),
                    "No valid token is stored".to_owned(),
                ),
            },
        };
        match super::current_token(self.observed) {
            Some(token) if token.expires_at > self.now => self.ready(token.expires_at, None),
            Some(token) => {
                let expired = format!(
                    "The token in Secret {} expired at {} and no new one could be obtained: {reason}: {message}",
                    self.observed.secret_name,
                    rfc3339(token.expires_at)
                );
                self.condition(READY, false, Reason::TokenExpired.as_str(), &expired);
            }
            None => self.condition(READY, false, &reason, &message),
        }
        if failure.is_some() || degraded.is_some_and(|c| c.status == "True") {
            self.condition(DEGRADED, true, &reason, &message);
        }
    }

    /// The next wake-up: the planned time, or earlier when a still-valid token expires first
    /// (so that Ready turns False in time).
    fn wake_for(&self, planned: Timestamp) -> Timestamp {
        match valid_token(self.observed, self.now) {
            Some(token) => planned.min(token.expires_at),
            None => planned,
        }
    }

    fn finish(mut self, requeue_at: Timestamp) -> Settled {
        // Keep conditions in a stable order: Ready, then Degraded.
        self.status.conditions.sort_by_key(|c| c.type_ != READY);
        Settled {
            status: self.status,
            event: self.event,
            notices: self.notices,
            margin_warned: self.margin_warned,
            requeue_at: requeue_at.max(add(self.now, MIN_WAIT)),
            failure_streak: self.failure_streak,
            issued_events: self.issued_events,
        }
    }
}
