//! `Ready`, `Degraded` (and a ClusterOAuthClient's `Distributed`) conditions (metav1.Condition), set the way cert-manager does:
//! `observedGeneration` every time, `lastTransitionTime` only when the status flips.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The `Ready` condition type.
pub const READY: &str = "Ready";
/// The `Degraded` condition type.
pub const DEGRADED: &str = "Degraded";
/// Reason of `Ready=True`.
pub const TOKEN_ISSUED: &str = "TokenIssued";
/// Reason of `Degraded=False`.
pub const REFRESH_SUCCEEDED: &str = "RefreshSucceeded";
/// The `Distributed` condition type (ClusterOAuthClient): every selected namespace holds the
/// current token.
pub const DISTRIBUTED: &str = "Distributed";
/// Reason of `Distributed=True`.
pub const ALL_TARGETS_WRITTEN: &str = "AllTargetsWritten";
/// Reason of `Distributed=False` when only namespaces with a conflicting Secret lack the token.
pub const SECRET_CONFLICT: &str = "SecretConflict";
/// Reason of `Distributed=False` otherwise.
pub const WRITE_FAILED: &str = "WriteFailed";

/// Condition status as the API writes it.
pub fn status_str(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The `Degraded` condition while it is `True`: the latest attempt failed (its reason says why,
/// its `lastTransitionTime` when the current run of failures began).
pub fn failing(conditions: &[Condition]) -> Option<&Condition> {
    find(conditions, DEGRADED).filter(|c| c.status == "True")
}

/// Sets a condition: replaces reason, message and observedGeneration, and moves
/// `lastTransitionTime` to `now` only when the status changes (or the condition is new).
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = status_str(status);
    let now = Time(crate::base::time::truncate_to_seconds(now));
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now;
            }
            existing.status = status.into();
            existing.reason = reason.into();
            existing.message = message.into();
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: now,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut c = Vec::new();
        set(&mut c, READY, false, "InvalidClient", "bad", Some(1), t(0));
        assert_eq!(c[0].last_transition_time.0, t(0));
        set(
            &mut c,
            READY,
            false,
            "EndpointUnavailable",
            "down",
            Some(2),
            t(10),
        );
        assert_eq!(c[0].last_transition_time.0, t(0), "same status: time kept");
        assert_eq!(
            (c[0].reason.as_str(), c[0].observed_generation),
            ("EndpointUnavailable", Some(2))
        );
        set(&mut c, READY, true, TOKEN_ISSUED, "ok", Some(2), t(20));
        assert_eq!(c[0].last_transition_time.0, t(20));
        assert_eq!(c[0].status, "True");
        set(
            &mut c,
            DEGRADED,
            false,
            REFRESH_SUCCEEDED,
            "ok",
            Some(2),
            t(30),
        );
        assert_eq!(c.len(), 2);
        assert_eq!(find(&c, DEGRADED).unwrap().last_transition_time.0, t(30));
    }

    #[test]
    fn times_are_whole_seconds() {
        let mut c = Vec::new();
        let now = Timestamp::from_millisecond(1_700_000_000_999).unwrap();
        set(&mut c, READY, true, TOKEN_ISSUED, "ok", None, now);
        assert_eq!(
            c[0].last_transition_time.0,
            Timestamp::from_second(1_700_000_000).unwrap()
        );
    }
}
