//! Durations given on the command line, bounded: an absurd value is a usage error that
//! names the flag, never a panic of clock arithmetic later.

use std::time::Duration;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn parse(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let value = text.parse::<apigate_control::model::Duration>()?.0;
    if value < min || value > max {
        return Err(format!(
            "{text:?} is out of range: between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(value)
}

/// A wait of at most a day (`--grace`, `--shutdown-delay`, `--debounce`, `--max-delay`).
pub fn wait(text: &str) -> Result<Duration, String> {
    parse(text, Duration::ZERO, DAY)
}

/// A polling period: at least 10 ms (zero would spin), at most an hour.
pub fn period(text: &str) -> Result<Duration, String> {
    parse(text, Duration::from_millis(10), Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded() {
        assert_eq!(wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(wait("0s"), Ok(Duration::ZERO));
        assert!(wait("1000000y").unwrap_err().contains("out of range"));
        assert!(wait("soon").is_err());
        assert!(period("0s").is_err());
        assert_eq!(period("2s"), Ok(Duration::from_secs(2)));
    }
}
