//! What can go wrong with one attempt at a replica, and the one rule that says which
//! failures count against the replica and which allow a retry elsewhere.
//!
//! The rule, in words: a replica is blamed for what only a broken or unreachable replica
//! does (connect and TLS failures, a broken connection, apigate's own connect and
//! response-header timeouts). It is never blamed for its own answers (a 5xx is an
//! answer), for refusing a request because of the request's shape (a stream reset with
//! an error code), or for saying it did not process a request (REFUSED_STREAM, GOAWAY):
//! those are one client's or one moment's problem, and must never eject a replica that
//! serves everyone else. Health checks (the health issue) consume the same rule.

/// Why one attempt at a replica failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection could not be made (refused, unreachable, reset).
    Connect,
    /// TCP + TLS did not finish within `connectTimeout`.
    ConnectTimeout,
    /// The TLS handshake with the replica failed (certificate, protocol).
    Tls,
    /// The replica provably did not process the request: it refused the stream
    /// (`REFUSED_STREAM`), or the stream was above the last-stream-id of its GOAWAY (or
    /// opened after it), as when kube-apiserver shuts down or uses `--goaway-chance`.
    NotProcessed,
    /// The connection to the replica broke (reset, closed, I/O error) while the request
    /// was in flight. `before_response`: no response head had arrived.
    Reset {
        /// No response head had arrived when it broke.
        before_response: bool,
    },
    /// No response head within the request's timeout.
    ResponseHeaderTimeout,
    /// The response went silent for longer than the request's timeout after its head.
    BodyTimeout,
    /// The replica refused this request for its shape: a stream reset with an error
    /// code, or a malformed exchange.
    Refused,
}

impl Failure {
    /// Whether this failure counts against the replica (towards ejection).
    pub fn counts_against_replica(self) -> bool {
        match self {
            Failure::Connect
            | Failure::ConnectTimeout
            | Failure::Tls
            | Failure::Reset { .. }
            | Failure::ResponseHeaderTimeout => true,
            Failure::NotProcessed | Failure::BodyTimeout | Failure::Refused => false,
        }
    }

    /// Whether the replica certainly did not act on the request, so that it may go to
    /// another replica whatever its method.
    pub fn not_processed(self) -> bool {
        matches!(
            self,
            Failure::Connect | Failure::ConnectTimeout | Failure::Tls | Failure::NotProcessed
        )
    }

    /// Stable metric label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::Tls => "tls",
            Failure::NotProcessed => "not_processed",
            Failure::Reset {
                before_response: true,
            } => "reset",
            Failure::Reset {
                before_response: false,
            } => "reset_after_response",
            Failure::ResponseHeaderTimeout => "response_timeout",
            Failure::BodyTimeout => "body_timeout",
            Failure::Refused => "refused",
        }
    }
}

/// kube-apiserver's shutdown signal in a response head. With
/// `--shutdown-send-retry-after`, a replica past its shutdown delay answers every new
/// request with 429, `Retry-After` and `Connection: close` (over HTTP/2 the
/// `Connection` header becomes a GOAWAY and is not seen). API Priority and Fairness
/// also answers 429 with `Retry-After` when one user exceeds their own share: that says
/// nothing about the replica and must never drain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownSignal {
    /// 429 + `Retry-After` + `Connection: close`: the replica is going away. Throttling
    /// never closes the connection, so this drains the replica at once.
    Announced,
    /// 429 + `Retry-After` alone: shutdown over HTTP/2, or throttling. The replica's
    /// readiness decides (a probe at once; if it fails, the replica drains).
    Suspected,
}

impl ShutdownSignal {
    /// The signal in a response head given as its status and header (name, value)
    /// pairs, if any.
    pub fn in_head<'a>(
        status: u16,
        headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Option<ShutdownSignal> {
        if status != 429 {
            return None;
        }
        let (mut retry_after, mut close) = (false, false);
        for (name, value) in headers {
            if name.eq_ignore_ascii_case(b"retry-after") {
                retry_after = true;
            } else if name.eq_ignore_ascii_case(b"connection") {
                close |= value
                    .split(|b| *b == b',')
                    .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
        }
        ShutdownSignal::of(status, retry_after, close)
    }

    /// The signal of a response with this status, `Retry-After` present or not, and
    /// `Connection: close` or not.
    pub fn of(status: u16, retry_after: bool, connection_close: bool) -> Option<ShutdownSignal> {
        match (status, retry_after, connection_close) {
            (429, true, true) => Some(ShutdownSignal::Announced),
            (429, true, false) => Some(ShutdownSignal::Suspected),
            _ => None,
        }
    }
}

/// What the request allows when its attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    /// The method is idempotent (GET, HEAD, PUT, DELETE, OPTIONS, TRACE).
    pub idempotent: bool,
    /// Everything the client sent so far can be sent again (the body, if any, is
    /// still buffered).
    pub body_replayable: bool,
}

impl Replay {
    /// A request of which nothing has been sent anywhere yet (own connections: the
    /// request is written only once the connection stands).
    pub const NOTHING_SENT: Replay = Replay {
        idempotent: true,
        body_replayable: true,
    };
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try another replica.
    Retry,
    /// Answer the client with the failure.
    Stop,
}

/// The retry rule. A request whose replica provably did not process it is retried
/// whatever its method, if what was sent can be sent again. One whose connection broke
/// before any answer is retried only when it is idempotent. Nothing is retried after
/// a response head reached the client, after a timeout (the client has already waited
/// a full timeout, and the replica may have done the work), or when it was the
/// request itself the replica refused. `attempts_left` is the budget after this one.
pub fn verdict(failure: Failure, replay: Replay, responded: bool, attempts_left: bool) -> Verdict {
    if responded || !attempts_left || !replay.body_replayable {
        return Verdict::Stop;
    }
    let retry = match failure {
        f if f.not_processed() => true,
        Failure::Reset {
            before_response: true,
        } => replay.idempotent,
        _ => false,
    };
    if retry {
        Verdict::Retry
    } else {
        Verdict::Stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_429_with_retry_after_is_a_shutdown_signal_and_only_with_close_is_it_certain() {
        let h = |pairs: &'static [(&'static str, &'static str)]| {
            pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        };
        assert_eq!(
            ShutdownSignal::in_head(429, h(&[("Retry-After", "5"), ("Connection", "close")])),
            Some(ShutdownSignal::Announced)
        );
        assert_eq!(
            ShutdownSignal::in_head(
                429,
                h(&[("retry-after", "5"), ("connection", "keep-alive, Close")])
            ),
            Some(ShutdownSignal::Announced)
        );
        // API Priority and Fairness: 429 + Retry-After, connection kept.
        assert_eq!(
            ShutdownSignal::in_head(429, h(&[("Retry-After", "1")])),
            Some(ShutdownSignal::Suspected)
        );
        assert_eq!(
            ShutdownSignal::in_head(429, h(&[("Connection", "close")])),
            None
        );
        assert_eq!(
            ShutdownSignal::in_head(503, h(&[("Retry-After", "5"), ("Connection", "close")])),
            None
        );
    }

    const ALL: [Failure; 9] = [
        Failure::Connect,
        Failure::ConnectTimeout,
        Failure::Tls,
        Failure::NotProcessed,
        Failure::Reset {
            before_response: true,
        },
        Failure::Reset {
            before_response: false,
        },
        Failure::ResponseHeaderTimeout,
        Failure::BodyTimeout,
        Failure::Refused,
    ];

    #[test]
    fn only_a_broken_or_unreachable_replica_is_blamed() {
        let blamed: Vec<&str> = ALL
            .iter()
            .filter(|f| f.counts_against_replica())
            .map(|f| f.label())
            .collect();
        assert_eq!(
            blamed,
            vec![
                "connect",
                "connect_timeout",
                "tls",
                "reset",
                "reset_after_response",
                "response_timeout"
            ]
        );
    }

    #[test]
    fn unprocessed_requests_are_retried_whatever_their_method() {
        let post = Replay {
            idempotent: false,
            body_replayable: true,
        };
        for f in [
            Failure::Connect,
            Failure::ConnectTimeout,
            Failure::Tls,
            Failure::NotProcessed,
        ] {
            assert_eq!(verdict(f, post, false, true), Verdict::Retry, "{f:?}");
        }
    }

    #[test]
    fn a_broken_connection_retries_only_idempotent_requests() {
        let reset = Failure::Reset {
            before_response: true,
        };
        let get = Replay {
            idempotent: true,
            body_replayable: true,
        };
        let post = Replay {
            idempotent: false,
            body_replayable: true,
        };
        assert_eq!(verdict(reset, get, false, true), Verdict::Retry);
        assert_eq!(verdict(reset, post, false, true), Verdict::Stop);
    }

    #[test]
    fn nothing_is_retried_after_an_answer_a_timeout_a_refusal_or_the_budget() {
        let get = Replay {
            idempotent: true,
            body_replayable: true,
        };
        assert_eq!(verdict(Failure::Connect, get, true, true), Verdict::Stop);
        assert_eq!(verdict(Failure::Connect, get, false, false), Verdict::Stop);
        for f in [
            Failure::ResponseHeaderTimeout,
            Failure::BodyTimeout,
            Failure::Refused,
            Failure::Reset {
                before_response: false,
            },
        ] {
            assert_eq!(verdict(f, get, false, true), Verdict::Stop, "{f:?}");
        }
        let truncated = Replay {
            idempotent: true,
            body_replayable: false,
        };
        assert_eq!(
            verdict(Failure::NotProcessed, truncated, false, true),
            Verdict::Stop
        );
    }
}
