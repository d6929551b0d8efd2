//! How long a replica "works" on a request before answering.
//!
//! A balancer is only interesting when backends differ: least-request balancing beats
//! round-robin exactly when service times vary. [`ServiceTime`] models that with a fixed
//! delay, a uniform range or an exponential distribution, and parses from the short text
//! forms used on command lines (`exp:5ms`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;

use crate::Error;

/// The delay a replica adds before answering each non-watch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceTime {
    /// Always the same delay (`Fixed(Duration::ZERO)` answers at once).
    Fixed(Duration),
    /// Uniformly distributed between `min` and `max` (inclusive).
    Uniform {
        /// Shortest delay.
        min: Duration,
        /// Longest delay.
        max: Duration,
    },
    /// Exponentially distributed with this mean: many fast answers and a long tail, the
    /// shape that makes per-request balancing pay off.
    Exponential {
        /// Mean delay.
        mean: Duration,
    },
}

impl Default for ServiceTime {
    fn default() -> Self {
        ServiceTime::Fixed(Duration::ZERO)
    }
}

impl ServiceTime {
    /// Draws one delay from the distribution.
    pub fn sample(&self) -> Duration {
        match *self {
            ServiceTime::Fixed(d) => d,
            ServiceTime::Uniform { min, max } if max > min => {
                rand::thread_rng().gen_range(min..=max)
            }
            ServiceTime::Uniform { min, .. } => min,
            ServiceTime::Exponential { mean } => {
                // 1 - U lies in (0, 1], so ln() is finite and <= 0.
                let u: f64 = rand::thread_rng().gen();
                let factor = -(1.0 - u).ln();
                mean.mul_f64(factor.min(1e6))
            }
        }
    }
}

/// Parses a duration such as `250us`, `5ms`, `1.5s`, `2m` or a bare `0`.
fn parse_duration(input: &str, text: &str) -> Result<Duration, Error> {
    let err = |reason: String| Error::ServiceTime {
        input: input.to_owned(),
        reason,
    };
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| err(format!("duration {text:?} has no unit (ns, us, ms, s, m)")))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| err(format!("{number:?} is not a number")))?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        other => return Err(err(format!("unknown unit {other:?} (ns, us, ms, s, m)"))),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| err(format!("{text:?}: {e}")))
}

impl FromStr for ServiceTime {
    type Err = Error;

    /// Accepts `0`, `5ms`, `fixed:5ms`, `uniform:1ms..9ms` and `exp:5ms`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (kind, rest) = s.split_once(':').unwrap_or(("fixed", s));
        match kind {
            "fixed" => Ok(ServiceTime::Fixed(parse_duration(s, rest)?)),
            "exp" | "exponential" => Ok(ServiceTime::Exponential {
                mean: parse_duration(s, rest)?,
            }),
            "uniform" => {
                let (lo, hi) = rest.split_once("..").ok_or_else(|| Error::ServiceTime {
                    input: s.to_owned(),
                    reason: "uniform needs a range MIN..MAX".to_owned(),
                })?;
                let (min, max) = (parse_duration(s, lo)?, parse_duration(s, hi)?);
                if min > max {
                    return Err(Error::ServiceTime {
                        input: s.to_owned(),
                        reason: "MIN is larger than MAX".to_owned(),
                    });
                }
                Ok(ServiceTime::Uniform { min, max })
            }
            other => Err(Error::ServiceTime {
                input: s.to_owned(),
                reason: format!("unknown kind {other:?} (fixed, uniform, exp)"),
            }),
        }
    }
}

impl fmt::Display for ServiceTime {
    /// The canonical text form, which [`FromStr`] parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |d: Duration| d.as_micros();
        match self {
            ServiceTime::Fixed(d) => write!(f, "fixed:{}us", us(*d)),
            ServiceTime::Uniform { min, max } => {
                write!(f, "uniform:{}us..{}us", us(*min), us(*max))
            }
            ServiceTime::Exponential { mean } => write!(f, "exp:{}us", us(*mean)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_all_forms() {
        let cases = [
            ("0", ServiceTime::Fixed(Duration::ZERO)),
            ("5ms", ServiceTime::Fixed(ms(5))),
            ("fixed:5ms", ServiceTime::Fixed(ms(5))),
            ("250us", ServiceTime::Fixed(Duration::from_micros(250))),
            ("1s", ServiceTime::Fixed(ms(1000))),
            ("1.5ms", ServiceTime::Fixed(Duration::from_micros(1500))),
            (
                "uniform:1ms..9ms",
                ServiceTime::Uniform {
                    min: ms(1),
                    max: ms(9),
                },
            ),
            ("exp:5ms", ServiceTime::Exponential { mean: ms(5) }),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<ServiceTime>().unwrap(), want, "{text}");
            let round = want.to_string().parse::<ServiceTime>().unwrap();
            assert_eq!(round, want, "round trip of {text}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "5",
            "5xs",
            "uniform:9ms..1ms",
            "uniform:5ms",
            "gauss:5ms",
            "-1ms",
        ] {
            assert!(bad.parse::<ServiceTime>().is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn samples_stay_in_range() {
        let u = ServiceTime::Uniform {
            min: ms(1),
            max: ms(9),
        };
        let e = ServiceTime::Exponential { mean: ms(5) };
        let mut total = Duration::ZERO;
        for _ in 0..2000 {
            let d = u.sample();
            assert!(d >= ms(1) && d <= ms(9));
            total += e.sample();
        }
        let mean = total / 2000;
        assert!(mean > ms(3) && mean < ms(7), "exp mean {mean:?}");
    }
}
