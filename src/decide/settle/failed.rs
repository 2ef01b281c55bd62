//! An attempt failed: the Secret is left as it is.

use jiff::Timestamp;

use super::Settling;
use crate::api::conditions;
use crate::api::reason::{Failure, Reason};
use crate::base::time::{add, ceil_second, rfc3339};
use crate::decide::{EventNote, FailureStreak, MIN_WAIT};
use crate::timing::backoff;

/// One more failure: the backoff step, the retry time, Degraded (and Ready once the token is
/// gone), an `ExchangeFailed` event unless it repeats the last failure. Returns when to look
/// again: the retry, or the expiry of a still-valid token if that comes first.
pub(super) fn settle(out: &mut Settling<'_, '_>, failure: &Failure, jitter: f64) -> Timestamp {
    let previous = out.observed.status;
    let failures = previous.consecutive_failures.unwrap_or(0).max(0) + 1;
    let streak = streak(out, failure, failures);
    out.failure_streak = Some(streak);
    let delay = backoff::retry_delay(failure.reason, streak.count, failure.retry_after, jitter);
    let retry_at = ceil_second(add(out.now, delay.max(MIN_WAIT)));
    out.status.consecutive_failures = Some(failures);
    out.status.next_refresh_at = Some(rfc3339(retry_at));
    let message = failure.message.as_str();
    let repeated = conditions::failing(&previous.conditions)
        .is_some_and(|c| c.reason == failure.reason.as_str() && c.message == message);
    out.failure_conditions(Some(failure));
    if !repeated {
        out.event = Some(EventNote {
            normal: false,
            reason: "ExchangeFailed",
            action: failure.reason.as_str().into(),
            note: format!("{}: {message}", failure.reason),
        });
    }
    out.wake_for(retry_at)
}

/// The backoff step counts consecutive failures of one reason. This process knows the streak;
/// after a restart, the status tells what it can: when the Degraded condition names the same
/// reason, the streak is taken as `consecutiveFailures` (the failures since the last success;
/// the status keeps no count per reason, so a run that mixed reasons before the restart waits
/// longer, within the cap, never shorter); another reason starts again.
fn streak(out: &Settling<'_, '_>, failure: &Failure, failures: i64) -> FailureStreak {
    let reason = failure.reason;
    let count = match out.observed.failure_streak {
        Some(streak) if streak.reason == reason => streak.count.saturating_add(1),
        Some(_) => 1,
        None => {
            let previous = conditions::failing(&out.observed.status.conditions)
                .and_then(|c| Reason::ALL.iter().find(|r| r.as_str() == c.reason));
            if previous == Some(&reason) {
                u32::try_from(failures).unwrap_or(u32::MAX)
            } else {
                1
            }
        }
    };
    FailureStreak { reason, count }
}
