//! Formatting shared by `status`, `renew` and `inspect` (pure): aligned tables, times as
//! RFC 3339 and relative to now ("in 41m", "5m ago"), cluster text made safe for a terminal, and
//! the refresh-margin warning.

use jiff::{SignedDuration, Timestamp};

use crate::api::conditions::{self, READY};
use crate::api::crd::OAuthClientStatus;
use crate::base::time::rfc3339;

/// [`crate::timing::refresh::SHORT_MARGIN`] as a signed duration.
pub const SHORT_MARGIN: SignedDuration =
    SignedDuration::from_secs(crate::timing::refresh::SHORT_MARGIN.as_secs() as i64);

/// Parses an RFC 3339 time from the cluster.
pub fn parse_time(text: Option<&str>) -> Option<Timestamp> {
    text.and_then(|t| t.parse().ok())
}

/// A length of time as kubectl prints ages: `45s`, `5m30s`, `41m`, `3h12m`, `20h`, `3d4h`, `40d`,
/// `2y`.
pub fn span(d: SignedDuration) -> String {
    let s = d.as_secs().unsigned_abs();
    let (m, h, days) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{}h", h % 24)
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else {
        format!("{}y", days / 365)
    }
}

/// `t` relative to `now`: `in 41m`, `5m ago`, `now`.
pub fn relative(t: Timestamp, now: Timestamp) -> String {
    let d = t.duration_since(now);
    if d.as_secs() == 0 {
        "now".into()
    } else if d.is_positive() {
        format!("in {}", span(d))
    } else {
        format!("{} ago", span(d))
    }
}

/// `2026-01-02T03:04:05Z (in 41m)`.
pub fn when(t: Timestamp, now: Timestamp) -> String {
    format!("{} ({})", rfc3339(t), relative(t, now))
}

/// An RFC 3339 time from the cluster with its relative form, or `-` when absent (or as given
/// when it does not parse).
pub fn when_text(text: Option<&str>, now: Timestamp) -> String {
    match (text, parse_time(text)) {
        (_, Some(t)) => when(t, now),
        (Some(raw), None) => printable(raw),
        (None, None) => "-".into(),
    }
}

/// Text from the cluster, safe to print on a terminal: newlines and tabs become spaces, other
/// control characters (escape sequences among them) become `?`.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// At most `max` characters, the cut marked with `...`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max.saturating_sub(3)).collect();
    format!("{}...", kept.trim_end())
}

/// Rows of text printed in aligned columns, three spaces apart, as kubectl prints them.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row (cells made printable).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| printable(c)).collect());
    }

    /// The table, each line starting with `indent`; the last column is not padded.
    pub fn render(&self, indent: &str) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::from(indent);
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The refresh margin (`expiresAt - nextRefreshAt`) of a Ready client when it is under
/// [`SHORT_MARGIN`]. (While a client fails, `nextRefreshAt` is a retry, not a refresh.)
pub fn short_margin(status: &OAuthClientStatus) -> Option<SignedDuration> {
    let ready = conditions::find(&status.conditions, READY).is_some_and(|c| c.status == "True");
    let expires = parse_time(status.expires_at.as_deref())?;
    let next = parse_time(status.next_refresh_at.as_deref())?;
    let margin = expires.duration_since(next);
    (ready && margin < SHORT_MARGIN).then_some(margin)
}

/// The warning about a short refresh margin of `namespace/name`.
pub fn margin_warning(namespace: &str, name: &str, margin: SignedDuration) -> String {
    let margin = if margin.is_negative() {
        format!("-{}", span(margin))
    } else {
        span(margin)
    };
    format!(
        "{namespace}/{name}: the refresh margin (expiresAt - nextRefreshAt) is {margin}, under {}: the kubelet updates a mounted Secret only when it resyncs the pod (every 60-90 s, minutes more with the Cache change-detection strategy), so pods may read an expired token; set refresh.renewBefore to at least 2m or use longer-lived tokens",
        span(SHORT_MARGIN)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{TOKEN_ISSUED, set};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn spans_read_like_kubectl_ages() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (41 * 60 + 20, "41m"),
            (3 * 3600 + 12 * 60, "3h12m"),
            (20 * 3600, "20h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (40 * 86_400, "40d"),
            (800 * 86_400, "2y"),
        ];
        for (secs, text) in cases {
            assert_eq!(span(SignedDuration::from_secs(secs)), text, "{secs}");
            assert_eq!(span(SignedDuration::from_secs(-secs)), text, "-{secs}");
        }
    }

    #[test]
    fn relative_times_say_in_or_ago() {
        assert_eq!(relative(at(41 * 60), at(0)), "in 41m");
        assert_eq!(relative(at(0), at(300)), "5m ago");
        assert_eq!(relative(at(0), at(0)), "now");
        assert_eq!(when(at(60), at(0)), "2023-11-14T22:14:20Z (in 60s)");
        assert_eq!(when_text(None, at(0)), "-");
        assert_eq!(when_text(Some("soon"), at(0)), "soon");
    }

    #[test]
    fn tables_align_and_never_print_control_characters() {
        let mut table = Table::new(&["NAME", "READY", "MESSAGE"]);
        table.row(vec!["a".into(), "True".into(), "ok".into()]);
        table.row(vec![
            "longer-name".into(),
            "False".into(),
            "line\nbreak \u{1b}[31mred".into(),
        ]);
        assert_eq!(
            table.render("  "),
            "  NAME          READY   MESSAGE\n  a             True    ok\n  longer-name   False   line break ?[31mred\n"
        );
        assert_eq!(truncate("abcdefghij", 8), "abcde...");
        assert_eq!(truncate("abc", 8), "abc");
    }

    #[test]
    fn the_margin_warning_needs_a_ready_client_and_a_margin_under_two_minutes() {
        let mut status = OAuthClientStatus {
            expires_at: Some(rfc3339(at(600))),
            next_refresh_at: Some(rfc3339(at(500))),
            ..Default::default()
        };
        assert_eq!(short_margin(&status), None, "not Ready: a retry time");
        set(
            &mut status.conditions,
            READY,
            true,
            TOKEN_ISSUED,
            "ok",
            None,
            at(0),
        );
        assert_eq!(short_margin(&status), Some(SignedDuration::from_secs(100)));
        status.next_refresh_at = Some(rfc3339(at(480)));
        assert_eq!(short_margin(&status), None, "exactly 2m is enough");
        status.next_refresh_at = Some(rfc3339(at(610)));
        let margin = short_margin(&status).unwrap();
        assert!(
            margin_warning("ns", "a", margin).starts_with(
                "ns/a: the refresh margin (expiresAt - nextRefreshAt) is -10s, under 2m"
            )
        );
    }
}
