//! Durations written as text (`5s`, `250ms`, `24h`, `1h30m`).

use serde::{Deserialize, Deserializer};

/// A duration in configuration, written the way operators write them in Kubernetes
/// objects (`30s`, `24h`) rather than as bare numbers whose unit must be guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Duration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?} ({e}); write e.g. 250ms, 30s, 5m, 24h"
                ))
            })
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}
