//! Retries as client-go makes them (`--retries`): what a well-behaved client handles by
//! itself, so a fault run can tell those signals from failures its callers would see.
//!
//! - A request that never reached the server (its connection closed before it was
//!   written) or that the server refused before processing it (HTTP/2
//!   `REFUSED_STREAM`, or a graceful GOAWAY that did not cover its stream) is sent again
//!   at once, whatever its method: Go's HTTP/2 transport does this under client-go.
//! - A GET cut by a reset or an early end of stream is sent again after 1 s: client-go
//!   retries GETs on connection resets and EOFs.
//! - A 429 or 5xx with `Retry-After` is sent again after waiting it out: client-go's
//!   `checkWait`.
//!
//! At most [`MAX_RETRIES`] times per request (client-go's default); the answer after the
//! last is the request's outcome.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{ClientError, ErrorKind};

/// Retries per request, as client-go's `rest.Request` allows by default.
pub const MAX_RETRIES: u32 = 10;

/// Wait before a GET cut by a reset is sent again.
const RESET_WAIT: Duration = Duration::from_secs(1);

/// A signal a client-go client handles by retrying; counted apart from failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Signal {
    /// Never sent (its connection closed first), or refused before processing
    /// (`REFUSED_STREAM`, or outside a graceful GOAWAY).
    Unprocessed,
    /// A GET cut by a reset or an early end of stream.
    ResetGet,
    /// A 429 or 5xx with `Retry-After`.
    RetryAfter(u16),
}

impl Signal {
    /// Stable label in reports: `unprocessed`, `reset_get`, `http_429_retry_after`.
    pub fn label(&self) -> String {
        match self {
            Signal::Unprocessed => "unprocessed".into(),
            Signal::ResetGet => "reset_get".into(),
            Signal::RetryAfter(status) => format!("http_{status}_retry_after"),
        }
    }
}

/// How one attempt ended, as the retry rule reads it.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    /// An answer with this status and `Retry-After` (of a 429 or 503).
    Answered {
        /// Status code.
        status: u16,
        /// Its `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// No answer.
    Failed(&'a ClientError),
}

/// Whether to send attempt `done + 1` of a request with `method`, after what wait, and
/// the signal that caused it; `None` means the attempt's result is the outcome.
pub fn after(method: &http::Method, done: u32, attempt: Attempt<'_>) -> Option<(Signal, Duration)> {
    if done >= MAX_RETRIES {
        return None;
    }
    match attempt {
        Attempt::Failed(e) if e.unprocessed => Some((Signal::Unprocessed, Duration::ZERO)),
        Attempt::Failed(e) if *method == http::Method::GET && e.kind == ErrorKind::Reset => {
            Some((Signal::ResetGet, RESET_WAIT))
        }
        Attempt::Failed(_) => None,
        Attempt::Answered {
            status,
            retry_after: Some(wait),
        } if status == 429 || (500..600).contains(&status) => {
            Some((Signal::RetryAfter(status), wait))
        }
        Attempt::Answered { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: ErrorKind, unprocessed: bool) -> ClientError {
        ClientError {
            unprocessed,
            ..ClientError::new(kind, "x")
        }
    }

    #[test]
    fn the_signals_client_go_retries_and_nothing_else() {
        let get = http::Method::GET;
        let post = http::Method::POST;
        let refused = failed(ErrorKind::Reset, true);
        let reset = failed(ErrorKind::Reset, false);
        assert_eq!(
            after(&post, 0, Attempt::Failed(&refused)),
            Some((Signal::Unprocessed, Duration::ZERO)),
            "a refused POST was never processed: safe to send again"
        );
        assert_eq!(
            after(&get, 0, Attempt::Failed(&reset)),
            Some((Signal::ResetGet, RESET_WAIT))
        );
        assert_eq!(
            after(&post, 0, Attempt::Failed(&reset)),
            None,
            "a POST cut mid-way may have been processed"
        );
        for kind in [ErrorKind::Timeout, ErrorKind::Tls, ErrorKind::Connect] {
            assert_eq!(after(&get, 0, Attempt::Failed(&failed(kind, false))), None);
        }
        let answered = |status, retry_after| Attempt::Answered {
            status,
            retry_after,
        };
        let two = Some(Duration::from_secs(2));
        assert_eq!(
            after(&post, 0, answered(429, two)),
            Some((Signal::RetryAfter(429), Duration::from_secs(2)))
        );
        assert_eq!(
            after(&get, 0, answered(503, two)).map(|r| r.0),
            Some(Signal::RetryAfter(503))
        );
        assert_eq!(after(&get, 0, answered(429, None)), None, "no Retry-After");
        assert_eq!(after(&get, 0, answered(409, two)), None);
        assert_eq!(
            after(&get, MAX_RETRIES, Attempt::Failed(&refused)),
            None,
            "bounded"
        );
        assert!(after(&get, MAX_RETRIES - 1, Attempt::Failed(&refused)).is_some());
    }
}
