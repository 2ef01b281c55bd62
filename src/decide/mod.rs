//! Planning a reconcile, as pure functions of what was observed and the current time.
//!
//! [`plan`] decides whether a token exchange is due; [`settle`] decides, once the attempt (if
//! any) is over, what the status should say, which event to emit and when to look again. The
//! controller does the I/O around them.
//!
//! The rules:
//!
//! * A token is *valid* when the managed Secret (controlled by this OAuthClient) holds one that
//!   was issued for the current spec and credentials and has not expired.
//! * With a valid token and no failure, the next exchange is at the refresh time
//!   ([`crate::timing::refresh::refresh_at`], with a jitter fixed per token so that the plan is stable).
//! * Without a valid token, an exchange is due at once.
//! * After a failure, the next attempt is at `status.nextRefreshAt` (the backoff), unless the
//!   spec or the credentials changed since, which retries at once.
//! * `oauth.token-operator.dev/refresh-requested-at` later than `status.issuedAt` makes an
//!   exchange due at that time (at once when it is in the past); after a successful exchange
//!   `issuedAt` is later, so it forces exactly one.
//! * A failed attempt never touches the Secret; `Ready` stays `True` while its token is valid,
//!   turns `False` with reason `TokenExpired` when it expires, and `Degraded` says why.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::conditions::{self, DEGRADED, READY, REFRESH_SUCCEEDED, TOKEN_ISSUED};
use crate::api::crd::OAuthClientStatus;
use crate::api::reason::{Failure, Reason};
use crate::spec::RefreshSettings;
use crate::timing::time::{self, add, ceil_second, rfc3339};
use crate::timing::{backoff, refresh};

/// Nothing is planned sooner than this after now (no tight loops).
pub const MIN_WAIT: Duration = Duration::from_secs(1);

/// The token the managed Secret holds, as its annotations describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredToken {
    /// When it was issued.
    pub issued_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Whether it was issued for the current spec and credentials.
    pub current: bool,
    /// Whether the Secret's type, labels, annotations and template keys match the spec.
    pub target_current: bool,
}

/// The managed Secret as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretState {
    /// No Secret of that name.
    Absent,
    /// A Secret of that name that this OAuthClient does not control.
    Conflict(String),
    /// Our Secret, with the token it holds (None when it holds no readable token).
    Owned(Option<StoredToken>),
}

/// Everything [`plan`] looks at.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Current status (default when none).
    pub status: &'a OAuthClientStatus,
    /// Refresh timing of the current spec, or the reason the spec is unusable.
    pub refresh: Result<RefreshSettings, &'a Failure>,
    /// Why credentials cannot be used, if known.
    pub credentials_problem: Option<&'a Failure>,
    /// The managed Secret.
    pub secret: &'a SecretState,
    /// `oauth.token-operator.dev/refresh-requested-at`, when set and readable.
    pub refresh_requested_at: Option<Timestamp>,
    /// The credentials Secret changed since the last failure.
    pub credentials_changed: bool,
    /// Identifies the object for the fixed per-token jitter (its uid).
    pub uid: &'a str,
    /// The managed Secret's name.
    pub secret_name: &'a str,
    /// The current run of consecutive failures of one kind, as this process saw it:
    /// (transient?, how many). `None` after a restart or a success.
    pub failure_streak: Option<FailureStreak>,
    /// The last `TokenIssued` event of this client, as this process saw it.
    pub issued_events: Option<IssuedEvents>,
    /// When this process last sent a token request for this client (to the nanosecond; the
    /// Secret keeps whole seconds).
    pub last_exchange_at: Option<Timestamp>,
}

/// `TokenIssued` events are emitted at most once per [`ISSUED_EVENT_INTERVAL`] per client; the
/// tokens issued in between are counted and reported in the next event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuedEvents {
    /// When the last event was emitted.
    pub last_at: Timestamp,
    /// Tokens issued since then without an event.
    pub suppressed: u32,
}

/// At most one `TokenIssued` event per client in this time.
pub const ISSUED_EVENT_INTERVAL: Duration = Duration::from_secs(60);

/// Consecutive failures of one kind (transient, or fixed by a person), which set the backoff
/// step: a 401 after two 429s waits about 1 min, the next 401 about 2 min.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureStreak {
    /// Whether the failures are transient.
    pub transient: bool,
    /// How many in a row.
    pub count: u32,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Exchange credentials for a token now.
    Exchange,
    /// An attempt is due but cannot be made: record this failure.
    Fail(Failure),
    /// The token is valid but the Secret's rendering changed: re-apply it from the stored token.
    Rerender,
    /// Nothing to do.
    Idle,
}

/// The plan for this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// What to do now.
    pub next: Next,
    /// When the next attempt is due, if nothing else happens.
    pub due_at: Timestamp,
}

/// The stored token, if it was issued for the current spec and credentials (expired or not).
fn current_token(observed: &Observed<'_>) -> Option<StoredToken> {
    match observed.secret {
        SecretState::Owned(Some(token)) if token.current => Some(*token),
        _ => None,
    }
}

/// The stored token, if it is valid now.
fn valid_token(observed: &Observed<'_>, now: Timestamp) -> Option<StoredToken> {
    current_token(observed).filter(|token| token.expires_at > now)
}

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
pub fn plan(observed: &Observed<'_>, now: Timestamp) -> Plan {
    let status = observed.status;
    let failing = status.consecutive_failures.unwrap_or(0) > 0;
    let spec_changed = status.observed_generation != observed.generation;
    let changed = spec_changed || observed.credentials_changed;
    let valid = valid_token(observed, now);
    // After a failure, the retry schedule rules until the spec or the credentials change.
    let backing_off = failing && !changed;

    // A current token is refreshed on its schedule even when it has expired already (a lifetime
    // shorter than the least exchange interval): never in a loop.
    let mut due_at = if backing_off {
        time::parse(status.next_refresh_at.as_deref()).unwrap_or(now)
    } else {
        match (current_token(observed), &observed.refresh) {
            (Some(token), Ok(settings)) => {
                refresh_time(&token, settings, observed.uid, observed.last_exchange_at)
            }
            _ => now,
        }
    };
    if let Some(requested) = observed.refresh_requested_at {
        let issued = time::parse(status.issued_at.as_deref());
        // A request made while failing is served by the retry schedule, never in a loop.
        if !backing_off && issued.is_none_or(|i| requested > i) {
            due_at = due_at.min(requested);
        }
    }

    let next = if now >= due_at {
        if let Err(failure) = &observed.refresh {
            Next::Fail((*failure).clone())
        } else if let SecretState::Conflict(message) = observed.secret {
            Next::Fail(Failure::new(Reason::SecretConflict, message.clone()))
        } else if let Some(problem) = observed.credentials_problem {
            Next::Fail(problem.clone())
        } else {
            Next::Exchange
        }
    } else if valid.is_some_and(|t| !t.target_current) {
        Next::Rerender
    } else {
        Next::Idle
    };
    Plan { next, due_at }
}

/// The result of the attempt, if one was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// No exchange was attempted.
    None,
    /// A new token was stored.
    Issued {
        /// When the request was sent (to the nanosecond).
        exchanged_at: Timestamp,
        /// When it was issued (whole seconds, as the Secret keeps it).
        issued_at: Timestamp,
        /// When it expires.
        expires_at: Timestamp,
        /// Normalised token type.
        token_type: String,
        /// Granted scope, when known.
        scope: Option<String>,
    },
    /// The attempt failed.
    Failed(Failure),
}

/// An event to emit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    /// `Normal` (true) or `Warning` (false).
    pub normal: bool,
    /// `TokenIssued` or `ExchangeFailed`.
    pub reason: &'static str,
    /// `Exchange` on success; the failure reason on failure.
    pub action: String,
    /// The note (never a secret).
    pub note: String,
}

/// What the reconcile ends with.
#[derive(Clone, Debug, PartialEq)]
pub struct Settled {
    /// The status to write (when it differs from the current one).
    pub status: OAuthClientStatus,
    /// An event to emit, if any.
    pub event: Option<EventNote>,
    /// When to reconcile again.
    pub requeue_at: Timestamp,
    /// The failure streak after this attempt (`None` after a success).
    pub failure_streak: Option<FailureStreak>,
    /// The `TokenIssued` event bookkeeping after this attempt.
    pub issued_events: Option<IssuedEvents>,
}

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
    let previous = observed.status;
    let mut status = previous.clone();
    status.observed_generation = observed.generation;
    status.secret_name = Some(observed.secret_name.to_owned());
    let generation = observed.generation;

    // Times of the token the Secret holds (a failure keeps the Secret as it is).
    let stored = match observed.secret {
        SecretState::Owned(Some(token)) => Some(*token),
        _ => None,
    };
    if let Some(token) = stored {
        status.issued_at = Some(rfc3339(token.issued_at));
        status.expires_at = Some(rfc3339(token.expires_at));
    }

    let mut event = None;
    let requeue_at;
    let mut failure_streak = observed.failure_streak;
    let mut issued_events = observed.issued_events;
    match attempt {
        Attempt::Issued {
            exchanged_at,
            issued_at,
            expires_at,
            token_type,
            scope,
        } => {
            let token = StoredToken {
                issued_at: *issued_at,
                expires_at: *expires_at,
                current: true,
                target_current: true,
            };
            let next = match &observed.refresh {
                Ok(settings) => refresh_time(&token, settings, observed.uid, Some(*exchanged_at)),
                Err(_) => *expires_at,
            };
            failure_streak = None;
            status.issued_at = Some(rfc3339(*issued_at));
            status.expires_at = Some(rfc3339(*expires_at));
            status.next_refresh_at = Some(rfc3339(ceil_second(next)));
            status.token_type = Some(token_type.clone());
            status.scope = scope.clone();
            status.consecutive_failures = Some(0);
            let lifetime = expires_at.duration_since(*issued_at).as_secs();
            conditions::set(
                &mut status.conditions,
                READY,
                true,
                TOKEN_ISSUED,
                &ready_message(observed.secret_name, *expires_at),
                generation,
                now,
            );
            conditions::set(
                &mut status.conditions,
                DEGRADED,
                false,
                REFRESH_SUCCEEDED,
                &format!("Latest exchange succeeded at {}", rfc3339(*issued_at)),
                generation,
                now,
            );
            let note = format!(
                "Issued a token valid until {} ({lifetime}s) into Secret {}",
                rfc3339(*expires_at),
                observed.secret_name
            );
            (event, issued_events) = issued_event(observed.issued_events, note, now);
            requeue_at = next;
        }
        Attempt::Failed(failure) => {
            let failures = previous.consecutive_failures.unwrap_or(0).max(0) + 1;
            let transient = failure.reason.is_transient();
            // The backoff step counts consecutive failures of this kind. This process knows the
            // streak; after a restart, the status tells the count and the last failure's kind.
            let count = match observed.failure_streak {
                Some(streak) if streak.transient == transient => streak.count.saturating_add(1),
                Some(_) => 1,
                None => {
                    let previous_kind = conditions::find(&previous.conditions, DEGRADED)
                        .filter(|c| c.status == "True")
                        .and_then(|c| Reason::ALL.iter().find(|r| r.as_str() == c.reason))
                        .map(|r| r.is_transient());
                    if previous_kind == Some(transient) {
                        u32::try_from(failures).unwrap_or(u32::MAX)
                    } else {
                        1
                    }
                }
            };
            failure_streak = Some(FailureStreak { transient, count });
            let delay =
                backoff::retry_delay(failure.reason, count, failure.retry_after, backoff_jitter);
            let retry_at = ceil_second(add(now, delay.max(MIN_WAIT)));
            status.consecutive_failures = Some(failures);
            status.next_refresh_at = Some(rfc3339(retry_at));
            let message = failure.message.as_str();
            let repeated = conditions::find(&previous.conditions, DEGRADED).is_some_and(|c| {
                c.status == "True" && c.reason == failure.reason.as_str() && c.message == message
            });
            set_failure_conditions(&mut status, observed, Some(failure), now);
            if !repeated {
                event = Some(EventNote {
                    normal: false,
                    reason: "ExchangeFailed",
                    action: failure.reason.as_str().into(),
                    note: format!("{}: {message}", failure.reason),
                });
            }
            requeue_at = wake_for(observed, retry_at, now);
        }
        Attempt::None => {
            let failing = previous.consecutive_failures.unwrap_or(0) > 0;
            let valid = valid_token(observed, now);
            match (failing, valid) {
                (false, Some(token)) => {
                    status.next_refresh_at = Some(rfc3339(ceil_second(plan.due_at)));
                    conditions::set(
                        &mut status.conditions,
                        READY,
                        true,
                        TOKEN_ISSUED,
                        &ready_message(observed.secret_name, token.expires_at),
                        generation,
                        now,
                    );
                    if conditions::find(&status.conditions, DEGRADED).is_none() {
                        conditions::set(
                            &mut status.conditions,
                            DEGRADED,
                            false,
                            REFRESH_SUCCEEDED,
                            "The stored token was issued for the current spec and credentials",
                            generation,
                            now,
                        );
                    }
                    if status.consecutive_failures.is_none() {
                        status.consecutive_failures = Some(0);
                    }
                }
                (false, None)
                    if current_token(observed).is_some_and(|t| plan.due_at > t.expires_at) =>
                {
                    let token = current_token(observed).expect("checked above");
                    status.next_refresh_at = Some(rfc3339(ceil_second(plan.due_at)));
                    conditions::set(
                        &mut status.conditions,
                        READY,
                        false,
                        Reason::TokenExpired.as_str(),
                        &short_lifetime_message(observed.secret_name, &token, plan.due_at),
                        generation,
                        now,
                    );
                }
                _ => set_failure_conditions(&mut status, observed, None, now),
            }
            requeue_at = wake_for(observed, plan.due_at, now);
        }
    }
    // Keep conditions in a stable order: Ready, then Degraded.
    status.conditions.sort_by_key(|c| c.type_ != READY);
    Settled {
        status,
        event,
        requeue_at: requeue_at.max(add(now, MIN_WAIT)),
        failure_streak,
        issued_events,
    }
}

/// The `TokenIssued` event for a new token, unless one was emitted less than
/// [`ISSUED_EVENT_INTERVAL`] ago (then the token is counted for the next event).
fn issued_event(
    previous: Option<IssuedEvents>,
    note: String,
    now: Timestamp,
) -> (Option<EventNote>, Option<IssuedEvents>) {
    match previous {
        Some(p) if now < add(p.last_at, ISSUED_EVENT_INTERVAL) => (
            None,
            Some(IssuedEvents {
                suppressed: p.suppressed.saturating_add(1),
                ..p
            }),
        ),
        _ => {
            let note = match previous {
                Some(p) if p.suppressed > 0 => format!(
                    "{note}; {} more token(s) issued since {} without an event",
                    p.suppressed,
                    rfc3339(p.last_at)
                ),
                _ => note,
            };
            let event = EventNote {
                normal: true,
                reason: "TokenIssued",
                action: "Exchange".into(),
                note,
            };
            let state = IssuedEvents {
                last_at: now,
                suppressed: 0,
            };
            (Some(event), Some(state))
        }
    }
}

/// Ready's message while a token that lives shorter than the least exchange interval is expired.
fn short_lifetime_message(secret_name: &str, token: &StoredToken, next: Timestamp) -> String {
    let lifetime = token.expires_at.duration_since(token.issued_at).as_secs();
    format!(
        "The token in Secret {secret_name} expired at {}: its lifetime of {lifetime}s is too short for mounted Secrets, which the kubelet refreshes only about once a minute, and the operator waits at least {}s between exchanges; the next token is requested at {}",
        rfc3339(token.expires_at),
        refresh::MIN_EXCHANGE_INTERVAL.as_secs(),
        rfc3339(ceil_second(next))
    )
}

fn ready_message(secret_name: &str, expires_at: Timestamp) -> String {
    format!(
        "Secret {secret_name} holds a token valid until {}",
        rfc3339(expires_at)
    )
}

/// Conditions after a failure (`failure`), or while waiting to retry after one (`None`: the
/// failure is the one already in the Degraded condition).
fn set_failure_conditions(
    status: &mut OAuthClientStatus,
    observed: &Observed<'_>,
    failure: Option<&Failure>,
    now: Timestamp,
) {
    let generation = observed.generation;
    let degraded = conditions::find(&status.conditions, DEGRADED).cloned();
    let (reason, message) = match (failure, &degraded) {
        (Some(f), _) => (f.reason.as_str().to_owned(), f.message.clone()),
        (None, Some(c)) if c.status == "True" => (c.reason.clone(), c.message.clone()),
        // No failure recorded (status lost): say what is known.
        _ => match conditions::find(&status.conditions, READY) {
            Some(c) if c.status == "False" => (c.reason.clone(), c.message.clone()),
            _ => (
                Reason::TokenExpired.as_str().to_owned(),
                "No valid token is stored".to_owned(),
            ),
        },
    };
    let stored = match observed.secret {
        SecretState::Owned(Some(token)) if token.current => Some(*token),
        _ => None,
    };
    match stored {
        Some(token) if token.expires_at > now => conditions::set(
            &mut status.conditions,
            READY,
            true,
            TOKEN_ISSUED,
            &ready_message(observed.secret_name, token.expires_at),
            generation,
            now,
        ),
        Some(token) => conditions::set(
            &mut status.conditions,
            READY,
            false,
            Reason::TokenExpired.as_str(),
            &format!(
                "The token in Secret {} expired at {} and no new one could be obtained: {reason}: {message}",
                observed.secret_name,
                rfc3339(token.expires_at)
            ),
            generation,
            now,
        ),
        None => conditions::set(
            &mut status.conditions,
            READY,
            false,
            &reason,
            &message,
            generation,
            now,
        ),
    }
    if failure.is_some() || degraded.is_some_and(|c| c.status == "True") {
        conditions::set(
            &mut status.conditions,
            DEGRADED,
            true,
            &reason,
            &message,
            generation,
            now,
        );
    }
}

/// The next wake-up: the planned time, or earlier when a still-valid token expires first (so that
/// Ready turns False in time).
fn wake_for(observed: &Observed<'_>, planned: Timestamp, now: Timestamp) -> Timestamp {
    match valid_token(observed, now) {
        Some(token) => planned.min(token.expires_at),
        None => planned,
    }
}

#[cfg(test)]
mod tests;
