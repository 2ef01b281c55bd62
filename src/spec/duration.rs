//! Durations as Kubernetes users write them: `90s`, `5m`, `1h30m`, `1.5h`, `500ms`.
//!
//! The grammar is Go's `time.ParseDuration` (which `metav1.Duration` uses) without signs and
//! without the sub-millisecond units: one or more `<number><unit>` pairs, unit one of `h`, `m`,
//! `s`, `ms`, number a decimal with an optional fraction. The same grammar is the `pattern` of
//! duration fields in the CRD, so bad values are refused when applied.

use std::fmt;
use std::time::Duration;

/// The CRD `pattern` for duration fields; it matches exactly what [`parse`] accepts, except for
/// the overall bound.
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|h|m|s))+$";

/// Longest duration accepted (ten years): anything longer is a typo, and it keeps arithmetic on
/// timestamps far from overflow.
pub const MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Why a duration could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {problem} (expected e.g. 90s, 5m, 1h30m)")]
pub struct ParseDurationError {
    input: String,
    problem: &'static str,
}

/// Parses a duration such as `1h30m`.
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let fail = |problem| ParseDurationError {
        input: input.chars().take(64).collect(),
        problem,
    };
    if input.is_empty() {
        return Err(fail("empty"));
    }
    let mut rest = input;
    let mut total_ms: u128 = 0;
    while !rest.is_empty() {
        let ms = component(&mut rest).map_err(fail)?;
        total_ms = total_ms.checked_add(ms).ok_or_else(|| fail("too large"))?;
        if total_ms > MAX.as_millis() {
            return Err(fail("longer than ten years"));
        }
    }
    Ok(Duration::from_millis(total_ms as u64))
}

/// Reads one `<number>[.<digits>]<unit>` from the start of `rest`, in milliseconds, and
/// advances `rest` past it.
fn component(rest: &mut &str) -> Result<u128, &'static str> {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let int_len = digits(rest);
    if int_len == 0 {
        return Err("expected a number");
    }
    let int_part = &rest[..int_len];
    *rest = &rest[int_len..];
    let mut frac_part = "";
    if let Some(after) = rest.strip_prefix('.') {
        let frac_len = digits(after);
        if frac_len == 0 {
            return Err("expected digits after the decimal point");
        }
        frac_part = &after[..frac_len];
        *rest = &after[frac_len..];
    }
    let (unit_ms, unit_len): (u128, usize) = if rest.starts_with("ms") {
        (1, 2)
    } else {
        match rest.as_bytes().first() {
            Some(b'h') => (3_600_000, 1),
            Some(b'm') => (60_000, 1),
            Some(b's') => (1_000, 1),
            Some(_) => return Err("unknown unit (use h, m, s or ms)"),
            None => return Err("missing unit (use h, m, s or ms)"),
        }
    };
    *rest = &rest[unit_len..];
    // Digits beyond 30 cannot be a sane duration and would overflow u128 below.
    if int_part.len() > 30 {
        return Err("too large");
    }
    let whole: u128 = int_part.parse().map_err(|_| "too large")?;
    let mut ms = whole.checked_mul(unit_ms).ok_or("too large")?;
    // Fractional part, to millisecond precision (extra digits are truncated).
    let mut scale = unit_ms;
    for digit in frac_part.bytes().take(12) {
        let d = u128::from(digit - b'0');
        ms += d * scale / 10;
        scale /= 10;
        if scale == 0 {
            break;
        }
    }
    Ok(ms)
}

/// Formats a duration the way [`parse`] reads it: `1h30m`, `90s` → `1m30s`, `0s`.
pub fn format(d: Duration) -> String {
    Formatted(d).to_string()
}

struct Formatted(Duration);

impl fmt::Display for Formatted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_ms = self.0.as_millis();
        if total_ms == 0 {
            return f.write_str("0s");
        }
        let h = total_ms / 3_600_000;
        let m = total_ms / 60_000 % 60;
        let s = total_ms / 1000 % 60;
        let ms = total_ms % 1000;
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        if ms > 0 {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzing reproducer (fuzz/artifacts/duration/crash-a59b432c...): control characters are
    /// Debug-escaped in the message, so it is longer than the input; it stays bounded.
    #[test]
    fn control_characters_give_a_bounded_readable_message() {
        let mut input = String::from("5");
        input.push_str(&"\u{1f}".repeat(67));
        input.push('2');
        let message = parse(&input).unwrap_err().to_string();
        assert!(message.len() <= 64 * 10 + 200, "{}", message.len());
        assert!(message.contains("\\u{1f}"), "{message}");
        let worst = "\u{10ffff}".repeat(1000);
        assert!(parse(&worst).unwrap_err().to_string().len() <= 64 * 10 + 200);
    }

    #[test]
    fn reads_the_contract_examples_and_go_forms() {
        let cases = [
            ("90s", 90_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1h", 3_600_000),
            ("1.5h", 5_400_000),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("2h45m10s250ms", 9_910_250),
            ("0s", 0),
            ("0.001s", 1),
            ("1.0005s", 1000),
        ];
        for (input, ms) in cases {
            assert_eq!(parse(input), Ok(Duration::from_millis(ms)), "{input}");
        }
    }

    #[test]
    fn refuses_what_go_refuses_and_more() {
        for bad in [
            "",
            "5",
            "s",
            "-5s",
            "+5s",
            "5 s",
            " 5s",
            "5s ",
            "1d",
            "5x",
            "1.s",
            ".5s",
            "5us",
            "1e3s",
            "99999999999999999999999999999999999h",
            "87601h",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid duration"), "{err}");
        }
    }

    #[test]
    fn the_crd_pattern_agrees_with_the_parser() {
        let pattern = regex::Regex::new(PATTERN).unwrap();
        let samples = [
            "90s",
            "5m",
            "1h30m",
            "1.5h",
            "500ms",
            "0s",
            "1m30s",
            "2h45m10s250ms",
            "",
            "5",
            "s",
            "-5s",
            "5 s",
            "1d",
            "1.s",
            ".5s",
            "5us",
            "1e3s",
            "ms",
            "1hm",
            "1h1",
        ];
        for sample in samples {
            assert_eq!(
                pattern.is_match(sample),
                parse(sample).is_ok(),
                "{sample:?}"
            );
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [
            0u64, 1, 999, 1000, 59_000, 90_000, 3_600_000, 5_400_000, 9_910_250,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
    }
}
