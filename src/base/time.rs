//! Time arithmetic and formats, in one place: RFC 3339 with whole seconds (as metav1.Time and
//! the Secret's annotations keep them), truncation and rounding to seconds, saturating addition.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Formats a timestamp as RFC 3339 UTC with second precision (`2026-01-02T03:04:05Z`).
pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses an RFC 3339 time (any precision); `None` when absent or unreadable.
pub fn parse(text: Option<&str>) -> Option<Timestamp> {
    text.and_then(|t| t.parse().ok())
}

/// Truncates to a whole second. metav1.Time and the Secret's annotations have second
/// precision; keeping ours the same makes comparisons with what the API server returns exact.
pub fn truncate_to_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Rounds up to a whole second: a time shown in whole seconds is then never earlier than the
/// one acted on.
pub fn ceil_second(t: Timestamp) -> Timestamp {
    let floor = truncate_to_seconds(t);
    if floor == t {
        t
    } else {
        floor.checked_add(SignedDuration::from_secs(1)).unwrap_or(t)
    }
}

/// `t + d`, saturating at the largest timestamp.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_rounding_and_formats() {
        let exact = Timestamp::from_second(1_700_000_000).unwrap();
        let later = Timestamp::from_millisecond(1_700_000_000_999).unwrap();
        assert_eq!(truncate_to_seconds(later), exact);
        assert_eq!(
            ceil_second(later),
            Timestamp::from_second(1_700_000_001).unwrap()
        );
        assert_eq!(ceil_second(exact), exact);
        assert_eq!(rfc3339(later), "2023-11-14T22:13:20Z");
        assert_eq!(parse(Some("2023-11-14T22:13:20Z")), Some(exact));
        assert_eq!(parse(Some("garbage")), None);
        assert_eq!(add(exact, Duration::MAX), Timestamp::MAX);
        assert_eq!(
            add(exact, Duration::from_secs(1)),
            Timestamp::from_second(1_700_000_001).unwrap()
        );
    }
}
