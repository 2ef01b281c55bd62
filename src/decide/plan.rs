//! Is an exchange due, and why.

use jiff::Timestamp;

use super::{Next, Observed, Plan, SecretState, StoredToken, Trigger, current_token, valid_token};
use crate::api::conditions;
use crate::api::reason::{Failure, Reason};
use crate::base::time::{self, add};
use crate::spec::RefreshSettings;
use crate::timing::refresh;

/// When a stored token should be refreshed. The time keeps its sub-second part so that refreshes
/// spread evenly instead of bunching at second boundaries; the status shows it rounded up.
///
/// It is never sooner than [`refresh::MIN_EXCHANGE_INTERVAL`] after the exchange
/// (`last_exchange`, when this process knows it to the nanosecond, else the token's issue time):
/// a token that lives shorter expires before its refresh.
pub fn refresh_time(
    token: &StoredToken,
    settings: &RefreshSettings,
    uid: &str,
    last_exchange: Option<Timestamp>,
) -> Timestamp {
    let planned = refresh::refresh_at(
        token.issued_at,
        token.expires_at,
        settings,
        refresh::token_jitter(uid, token.issued_at),
    );
    let exchanged = last_exchange.map_or(token.issued_at, |t| t.max(token.issued_at));
    planned.max(add(exchanged, refresh::MIN_EXCHANGE_INTERVAL))
}

/// Decides what to do now.
///
/// * With a current token and no failure, the next exchange is at its refresh time, even when
///   it has expired already (a lifetime shorter than the least exchange interval): never in a
///   loop.
/// * Without a current token, an exchange is due at once.
/// * After a failure, the retry schedule (`status.nextRefreshAt`) rules until a change that can
///   resolve it: the spec, the credentials or the CA bundle changed, or the failure's cause is
///   gone ([`cause_gone`]); then it retries at once.
/// * A refresh request later than the last exchange and the last attempt makes one due at its
///   time, whatever the backoff (once per request), never sooner than
///   [`refresh::MIN_EXCHANGE_INTERVAL`] after the last attempt.
pub fn plan(observed: &Observed<'_>, now: Timestamp) -> Plan {
    let status = observed.status;
    let failing = status.consecutive_failures.unwrap_or(0) > 0;
    let spec_changed = status.observed_generation != observed.generation;
    let input_changed = spec_changed
        || observed.credentials_changed
        || observed.trust_changed
        || (failing && cause_gone(observed));
    let backing_off = failing && !input_changed;

    let mut due_at = if backing_off {
        time::parse(status.next_refresh_at.as_deref()).unwrap_or(now)
    } else {
        match (current_token(observed), &observed.refresh, observed.secret) {
            (Some(token), Ok(settings), _) => {
                refresh_time(&token, settings, observed.uid, observed.last_exchange_at)
            }
            (_, _, SecretState::Tampered(_)) => restore_time(observed, now),
            _ => now,
        }
    };
    let requested = pending_request(observed);
    if let Some(requested) = requested {
        due_at = due_at.min(requested.max(earliest_attempt(observed)));
    }

    let next = if now >= due_at {
        let trigger = trigger(observed, failing, spec_changed, requested, now);
        match blocker(observed) {
            Some(failure) => Next::Fail(trigger, failure),
            None => Next::Exchange(trigger),
        }
    } else if valid_token(observed, now).is_some_and(|t| !t.target_current) {
        Next::Rerender
    } else {
        Next::Idle
    };
    Plan { next, due_at }
}

/// The earliest time of the next attempt: [`refresh::MIN_EXCHANGE_INTERVAL`] after the last
/// attempt this process knows of, or (after a restart) after the last issue or the start of the
/// failure streak as the status shows them.
fn earliest_attempt(observed: &Observed<'_>) -> Timestamp {
    let failing_since =
        conditions::failing(&observed.status.conditions).map(|c| c.last_transition_time.0);
    let last = [
        observed.last_attempt_at,
        observed.last_exchange_at,
        time::parse(observed.status.issued_at.as_deref()),
        failing_since,
    ]
    .into_iter()
    .flatten()
    .max();
    last.map_or(Timestamp::UNIX_EPOCH, |at| {
        add(at, refresh::MIN_EXCHANGE_INTERVAL)
    })
}

/// Restores with a new token wait at least [`refresh::MIN_EXCHANGE_INTERVAL`] after the last
/// exchange; after [`FREE_RESTORES`] restores in a row the wait doubles with each one, up to five
/// minutes: someone who keeps changing the Secret (a GitOps tool reverting it) causes no token
/// storm, while a few edits are each undone within seconds.
pub const MAX_RESTORE_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Restores in a row before the wait starts doubling.
pub const FREE_RESTORES: u32 = 3;

fn restore_time(observed: &Observed<'_>, now: Timestamp) -> Timestamp {
    let Some(last) = observed.last_exchange_at else {
        return now;
    };
    let doubling = 1u32
        << observed
            .restore_streak
            .saturating_sub(FREE_RESTORES - 1)
            .min(10);
    let wait = (refresh::MIN_EXCHANGE_INTERVAL * doubling).min(MAX_RESTORE_WAIT);
    add(last, wait).max(now)
}

/// The time of a refresh request not served yet: later than the last exchange, which this
/// process knows to the nanosecond (the status keeps whole seconds, so a request made in the
/// same second as the exchange that served it would otherwise look new again), and not the
/// request this process's last attempt served (requests are stamped in whole seconds: one made
/// just after an attempt, in the same second, is still a new one). A process that has made no
/// attempt yet knows only the status: a request older than the current failure streak was
/// served by its first failure.
fn pending_request(observed: &Observed<'_>) -> Option<Timestamp> {
    let requested = observed.refresh_requested_at?;
    if observed.last_attempt_at.is_some() && observed.served_request == Some(requested) {
        return None;
    }
    let failing_since = conditions::failing(&observed.status.conditions)
        .filter(|_| observed.last_attempt_at.is_none())
        .map(|c| c.last_transition_time.0);
    let served = [
        time::parse(observed.status.issued_at.as_deref()),
        observed.last_exchange_at,
        failing_since,
    ]
    .into_iter()
    .flatten()
    .max();
    served.is_none_or(|s| requested > s).then_some(requested)
}

/// Whether the cause of the failure in the status is gone, so that waiting out the backoff
/// would only delay the fix: the Secret that was in the way (`SecretConflict`) is gone or is
/// this client's now; or a spec refused (`InvalidSpec`) resolves now on the first look of a
/// process (its flags, such as `--allow-service-account-tokens`, `--allow-insecure-http` or a
/// token-URL policy, may allow what the previous process refused; a failure this process saw
/// itself follows its backoff, so a refusal after the request, such as the size limit, cannot
/// loop).
fn cause_gone(observed: &Observed<'_>) -> bool {
    let reason = conditions::failing(&observed.status.conditions).map(|c| c.reason.as_str());
    match reason {
        Some("SecretConflict") => !matches!(observed.secret, SecretState::Conflict(_)),
        Some("InvalidSpec") => !observed.failure_seen_here && observed.refresh.is_ok(),
        _ => false,
    }
}

/// Why the exchange that is due is due. A change that cut a backoff short is named first; then
/// the state of the stored token; then an explicit request; else the refresh time came.
fn trigger(
    observed: &Observed<'_>,
    failing: bool,
    spec_changed: bool,
    requested: Option<Timestamp>,
    now: Timestamp,
) -> Trigger {
    let stored = match observed.secret {
        SecretState::Owned(Some(token)) => Some(*token),
        _ => None,
    };
    if failing && spec_changed {
        Trigger::SpecChanged
    } else if failing && observed.credentials_changed {
        Trigger::CredentialsChanged
    } else if failing && observed.trust_changed {
        Trigger::TrustChanged
    } else if matches!(observed.secret, SecretState::Tampered(_)) {
        Trigger::Restore
    } else if stored.is_none() {
        Trigger::NoToken
    } else if stored.is_some_and(|t| !t.current) {
        if spec_changed {
            Trigger::SpecChanged
        } else {
            Trigger::CredentialsChanged
        }
    } else if requested.is_some_and(|r| r <= now) {
        Trigger::Requested
    } else {
        Trigger::RefreshDue
    }
}

/// What stops an attempt that is due from being made: an unusable spec, a Secret of that name
/// this client does not control, or credentials known to be unusable.
fn blocker(observed: &Observed<'_>) -> Option<Failure> {
    if let Err(failure) = &observed.refresh {
        Some((*failure).clone())
    } else if let SecretState::Conflict(message) = observed.secret {
        Some(Failure::new(Reason::SecretConflict, message.clone()))
    } else {
        observed.credentials_problem.cloned()
    }
}
