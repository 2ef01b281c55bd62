//! What the backoff and the triggers need: the credentials and bundle of the last failure (a
//! change retries at once), the failure and restore streaks, the last exchange (the least
//! interval between two), and the streak of API errors.

use jiff::Timestamp;

use super::change::Change;
use crate::decide::FailureStreak;

/// The credentials an exchange failed with: the Secret's resourceVersion and a keyed digest of
/// the values (so that a metadata-only edit of the Secret does not count as a change); and the
/// resourceVersion of the CA bundle's object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedWith {
    /// resourceVersion of the credentials Secret (None: it did not exist).
    pub resource_version: Option<String>,
    /// HMAC of the credential values, or of why they are unusable.
    pub digest: Option<[u8; 32]>,
    /// resourceVersion of the object `spec.caBundleRef` names (None: no reference, or the
    /// object did not exist).
    pub trust_rv: Option<String>,
}

/// The retry state of one client.
#[derive(Clone, Debug, Default)]
pub struct RetryState {
    /// The credentials of the last failure.
    pub failed_with: Option<Box<FailedWith>>,
    /// Consecutive exchange failures of one reason, for the backoff step (as this process saw
    /// them; after a restart the settle step derives the streak from the status).
    pub failure_streak: Option<FailureStreak>,
    /// Restores with a new token in a row.
    pub restore_streak: u32,
    /// When the last token request that gave a token was sent.
    pub last_exchange_at: Option<Timestamp>,
    /// When this process last attempted an exchange (sent, or refused before sending).
    pub last_attempt_at: Option<Timestamp>,
    /// The refresh request (`refresh-requested-at`) on the object at that attempt: served.
    pub served_request: Option<Timestamp>,
    /// Consecutive reconcile errors (API failures), for the error backoff.
    pub errors: u32,
}

/// What a reconcile changes in it.
#[derive(Clone, Debug, Default)]
pub struct RetryUpdate {
    /// The credentials of a failure (cleared by a success).
    pub failed_with: Change<FailedWith>,
    /// After a reconcile that settled: the failure streak it left (`Some(None)`: none). A
    /// reconcile that settled also ends the streak of API errors.
    pub settled: Option<Option<FailureStreak>>,
    /// The restore streak after a new token.
    pub restore_streak: Option<u32>,
    /// When a token request that gave a token (now written) was sent.
    pub last_exchange_at: Option<Timestamp>,
    /// When an attempt was made, and the refresh request on the object then.
    pub last_attempt_at: Option<(Timestamp, Option<Timestamp>)>,
}

impl RetryState {
    pub(super) fn apply(&mut self, update: RetryUpdate) {
        update.failed_with.apply_boxed(&mut self.failed_with);
        if let Some(streak) = update.settled {
            self.failure_streak = streak;
            self.errors = 0;
        }
        if let Some(streak) = update.restore_streak {
            self.restore_streak = streak;
        }
        if let Some(at) = update.last_exchange_at {
            self.last_exchange_at = Some(at);
        }
        if let Some((at, request)) = update.last_attempt_at {
            self.last_attempt_at = Some(at);
            self.served_request = request;
        }
    }

    pub(super) fn count_error(&mut self) -> u32 {
        self.errors = self.errors.saturating_add(1);
        self.errors
    }
}
