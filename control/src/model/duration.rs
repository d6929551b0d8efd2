//! Durations written as text (`5s`, `250ms`, `24h`, `1h30m`).

use serde::{Deserialize, Deserializer};

/// A duration in configuration, written the way operators write them in Kubernetes
/// objects (`30s`, `24h`) rather than as bare numbers whose unit must be guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl std::str::FromStr for Duration {
    type Err = String;

    /// Parse `250ms`, `30s`, `5m`, `24h`, `1h30m`; the error says what is expected.
    fn from_str(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text.trim())
            .map(Duration)
            .map_err(|e| format!("invalid duration {text:?} ({e}); write e.g. 250ms, 30s, 5m, 24h"))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl serde::Serialize for Duration {
    /// Written back the way it is read (`30s`, `1h 30m`).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}
