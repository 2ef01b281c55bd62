//! No attempt was made: the client waits for its refresh time or its retry.

use jiff::Timestamp;

use super::Settling;
use crate::api::conditions::{self, DEGRADED, READY, REFRESH_SUCCEEDED};
use crate::api::reason::Reason;
use crate::base::time::{ceil_second, rfc3339};
use crate::decide::{Plan, StoredToken, current_token, valid_token};
use crate::timing::refresh;

/// Ready while the stored token is valid; TokenExpired (saying why) while a token that lives
/// shorter than the least exchange interval waits for its refresh; the failure conditions while
/// a retry is pending. Returns when to look again: the planned time, or the expiry of a valid
/// token if that comes first.
pub(super) fn settle(out: &mut Settling<'_, '_>, plan: &Plan) -> Timestamp {
    let observed = out.observed;
    let failing = observed.status.consecutive_failures.unwrap_or(0) > 0;
    let current = current_token(observed);
    match (failing, valid_token(observed, out.now)) {
        (false, Some(token)) => {
            out.status.next_refresh_at = Some(rfc3339(ceil_second(plan.due_at)));
            out.ready(token.expires_at, Some(plan.due_at));
            if conditions::find(&out.status.conditions, DEGRADED).is_none() {
                let stored = "The stored token was issued for the current spec and credentials";
                out.condition(DEGRADED, false, REFRESH_SUCCEEDED, stored);
            }
            if out.status.consecutive_failures.is_none() {
                out.status.consecutive_failures = Some(0);
            }
        }
        (false, None) if current.is_some_and(|t| plan.due_at > t.expires_at) => {
            let token = current.expect("checked above");
            out.status.next_refresh_at = Some(rfc3339(ceil_second(plan.due_at)));
            let message = short_lifetime_message(observed.secret_name, &token, plan.due_at);
            out.condition(READY, false, Reason::TokenExpired.as_str(), &message);
        }
        _ => out.failure_conditions(None),
    }
    out.wake_for(plan.due_at)
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
