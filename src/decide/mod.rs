//! Deciding a reconcile, as pure functions of what was observed and the current time.
//!
//! [`plan()`] decides whether a token exchange is due and why ([`Trigger`]); [`settle()`]
//! decides, once the attempt (if any) is over, what the status should say, which event to emit
//! and when to look again (one file per outcome under `settle/`). The controller does the I/O
//! around them.
//!
//! The rules:
//!
//! * A token is *valid* when the managed Secret (controlled by this OAuthClient) holds one that
//!   was issued for the current spec and credentials and has not expired.
//! * With a valid token and no failure, the next exchange is at the refresh time
//!   ([`crate::timing::refresh::refresh_at`], with a jitter fixed per token so that the plan is stable).
//! * Without a valid token, an exchange is due at once.
//! * After a failure, the next attempt is at `status.nextRefreshAt` (the backoff), unless the
//!   spec, the credentials or the CA bundle's object changed since, which retries at once.
//! * `oauth.token-operator.dev/refresh-requested-at` later than `status.issuedAt` makes an
//!   exchange due at that time (at once when it is in the past); after a successful exchange
//!   `issuedAt` is later, so it forces exactly one.
//! * A failed attempt never touches the Secret; `Ready` stays `True` while its token is valid,
//!   turns `False` with reason `TokenExpired` when it expires, and `Degraded` says why.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::crd::OAuthClientStatus;
use crate::api::reason::{Failure, Reason};
use crate::spec::RefreshSettings;

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
    /// Our Secret, but what the operator wrote into it was changed by someone else (these
    /// sealed items): its token can no longer be trusted.
    Tampered(Vec<String>),
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
    /// The object `spec.caBundleRef` names changed since the last failure.
    pub trust_changed: bool,
    /// Identifies the object for the fixed per-token jitter (its uid).
    pub uid: &'a str,
    /// The managed Secret's name.
    pub secret_name: &'a str,
    /// The current run of consecutive failures of one reason, as this process saw it. `None`
    /// after a restart (the status tells it then) or a success.
    pub failure_streak: Option<FailureStreak>,
    /// The last `TokenIssued` event of this client, as this process saw it.
    pub issued_events: Option<IssuedEvents>,
    /// When this process last sent a token request for this client (to the nanosecond; the
    /// Secret keeps whole seconds).
    pub last_exchange_at: Option<Timestamp>,
    /// When this process last attempted an exchange for this client, failed or not.
    pub last_attempt_at: Option<Timestamp>,
    /// The refresh request on the object at that attempt (served by it).
    pub served_request: Option<Timestamp>,
    /// Whether this process recorded the current failure itself (`false` on the first look
    /// after a start: the failure in the status may stem from another process's flags).
    pub failure_seen_here: bool,
    /// The managed Secret's metadata the operator owns that someone else changed (its sealed
    /// data and annotations are intact): restored without a new token.
    pub drift: Option<&'a [String]>,
    /// Restores with a new token in a row (each waits longer: no storm when someone keeps
    /// changing the Secret).
    pub restore_streak: u32,
    /// The spec generation a `ShortRenewMargin` event was emitted for.
    pub margin_warned: Option<i64>,
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

/// Consecutive failures of one reason, which set the backoff step: another reason starts again
/// (two `InvalidSpec` then a `CredentialsNotFound` waits about 1 min, not 4; a 401 after two
/// 429s about 1 min).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureStreak {
    /// The failures' reason.
    pub reason: Reason,
    /// How many in a row.
    pub count: u32,
}

/// Why an exchange is due (cert-manager's renewal triggers, for tokens). Logged with every
/// exchange and counted in `exchange_triggers_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The managed Secret holds no token (absent, or unreadable).
    NoToken,
    /// The spec changed since the token was issued (or since the last failure).
    SpecChanged,
    /// The credentials changed since the token was issued (or since the last failure).
    CredentialsChanged,
    /// The CA bundle changed since the last failure (a bundle change alone never replaces a
    /// token that is current: it is not what the token was issued for).
    TrustChanged,
    /// The token's refresh time came (or it expired).
    RefreshDue,
    /// `oauth.token-operator.dev/refresh-requested-at` asked for one.
    Requested,
    /// The managed Secret was changed by someone else and its token can no longer be trusted.
    Restore,
}

impl Trigger {
    /// Every trigger.
    pub const ALL: [Trigger; 7] = [
        Trigger::NoToken,
        Trigger::SpecChanged,
        Trigger::CredentialsChanged,
        Trigger::TrustChanged,
        Trigger::RefreshDue,
        Trigger::Requested,
        Trigger::Restore,
    ];

    /// The snake_case name used in logs and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::NoToken => "no_token",
            Trigger::SpecChanged => "spec_changed",
            Trigger::CredentialsChanged => "credentials_changed",
            Trigger::TrustChanged => "trust_changed",
            Trigger::RefreshDue => "refresh_due",
            Trigger::Requested => "requested",
            Trigger::Restore => "restore",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Exchange credentials for a token now, because of the trigger.
    Exchange(Trigger),
    /// An attempt is due (because of the trigger) but cannot be made: record this failure.
    Fail(Trigger, Failure),
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
        /// `issued_token_type` of a token exchange, when the endpoint said.
        issued_token_type: Option<String>,
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
    /// An event to emit, if any (`TokenIssued`, `ExchangeFailed`).
    pub event: Option<EventNote>,
    /// Other events to emit (`SecretRestored`, `ShortRenewMargin`).
    pub notices: Vec<EventNote>,
    /// The spec generation a `ShortRenewMargin` event has been emitted for, after this one.
    pub margin_warned: Option<i64>,
    /// When to reconcile again.
    pub requeue_at: Timestamp,
    /// The failure streak after this attempt (`None` after a success).
    pub failure_streak: Option<FailureStreak>,
    /// The `TokenIssued` event bookkeeping after this attempt.
    pub issued_events: Option<IssuedEvents>,
}

pub mod distribution;
pub mod managed_secret;
mod plan;
pub mod scheduling;
mod settle;
pub mod stale_fields;

pub use plan::{plan, refresh_time};
pub use settle::settle;

#[cfg(test)]
mod tests;
