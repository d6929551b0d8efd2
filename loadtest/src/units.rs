//! Parsing of the human-friendly units used on the command line: durations (`500ms`,
//! `2s`, `1.5m`) and fractions (`0.01` or `1%`).
//!
//! Kept separate so every flag that takes a duration accepts exactly the same syntax and
//! rejects bad input with the same actionable message.

use std::time::Duration;

/// Error for a value that is not a valid duration or fraction; the message says what
/// would be valid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {what} {value:?}: {hint}")]
pub struct UnitError {
    what: &'static str,
    value: String,
    hint: &'static str,
}

const DURATION_HINT: &str =
    "expected a number with a unit: us, ms, s, m or h (e.g. 250ms, 10s, 1.5m)";

/// Parses `250us`, `5ms`, `10s`, `1.5m`, `1h`. A bare `0` is accepted as zero; any other
/// number needs a unit, because a unit-less `10` is ambiguous on a latency flag.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let err = || UnitError {
        what: "duration",
        value: s.to_owned(),
        hint: DURATION_HINT,
    };
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(err)?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    let secs = match unit {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(err()),
    };
    if !secs.is_finite() || !(0.0..=365.0 * 24.0 * 3600.0).contains(&secs) {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a fraction in `[0, 1]`, written either as `0.01` or as `1%`.
pub fn parse_fraction(s: &str) -> Result<f64, UnitError> {
    let err = || UnitError {
        what: "fraction",
        value: s.to_owned(),
        hint: "expected a number between 0 and 1 (0.01) or a percentage (1%)",
    };
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| err())? / 100.0,
        None => t.parse::<f64>().map_err(|_| err())?,
    };
    if !(0.0..=1.0).contains(&v) {
        return Err(err());
    }
    Ok(v)
}

/// Formats a duration compactly for tables and progress lines (`1.5s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 && s.fract() == 0.0 && (s as u64) % 60 == 0 {
        format!("{}m", s as u64 / 60)
    } else if s >= 1.0 {
        format!("{}s", trim_float(s))
    } else {
        format!("{}ms", trim_float(s * 1e3))
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("5ms"), Ok(Duration::from_millis(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "10", "ms", "-1s", "1x", "1.2.3s", "NaNs"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_fraction("0.01"), Ok(0.01));
        assert_eq!(parse_fraction("5%"), Ok(0.05));
        assert!(parse_fraction("101%").is_err());
        assert!(parse_fraction("x").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }
}
