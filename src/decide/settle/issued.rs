//! A new token was stored.

use jiff::Timestamp;

use super::Settling;
use crate::api::conditions::{DEGRADED, REFRESH_SUCCEEDED};
use crate::base::time::{add, ceil_second, rfc3339};
use crate::decide::{
    Attempt, EventNote, ISSUED_EVENT_INTERVAL, IssuedEvents, StoredToken, refresh_time,
};

/// Ready and not Degraded, the new token's times, the refresh time; a `TokenIssued` event at
/// most once a minute. Returns when to look again: the refresh time, or the token's expiry when
/// that comes first (a token shorter-lived than the least time between two exchanges: Ready
/// turns False when it expires).
pub(super) fn settle(out: &mut Settling<'_, '_>, attempt: &Attempt) -> Timestamp {
    let Attempt::Issued {
        exchanged_at,
        issued_at,
        expires_at,
        token_type,
        scope,
        issued_token_type,
    } = attempt
    else {
        unreachable!("called for an issued token only");
    };
    let observed = out.observed;
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
    out.failure_streak = None;
    let status = &mut out.status;
    status.issued_at = Some(rfc3339(*issued_at));
    status.expires_at = Some(rfc3339(*expires_at));
    status.next_refresh_at = Some(rfc3339(ceil_second(next)));
    status.token_type = Some(token_type.clone());
    status.scope = scope.clone();
    status.issued_token_type = issued_token_type.clone();
    status.consecutive_failures = Some(0);
    out.ready(*expires_at, Some(next));
    let succeeded = format!("Latest exchange succeeded at {}", rfc3339(*issued_at));
    out.condition(DEGRADED, false, REFRESH_SUCCEEDED, &succeeded);
    let lifetime = expires_at.duration_since(*issued_at).as_secs();
    let note = format!(
        "Issued a token valid until {} ({lifetime}s) into Secret {}",
        rfc3339(*expires_at),
        observed.secret_name
    );
    (out.event, out.issued_events) = issued_event(observed.issued_events, note, out.now);
    next.min(*expires_at)
}

/// The `TokenIssued` event for a new token, unless one was emitted less than
/// [`ISSUED_EVENT_INTERVAL`] ago (then the token is counted for the next event).
fn issued_event(
    previous: Option<IssuedEvents>,
    note: String,
    now: Timestamp,
) -> (Option<EventNote>, Option<IssuedEvents>) {
    if let Some(p) = previous
        && now < add(p.last_at, ISSUED_EVENT_INTERVAL)
    {
        let counted = IssuedEvents {
            suppressed: p.suppressed.saturating_add(1),
            ..p
        };
        return (None, Some(counted));
    }
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
