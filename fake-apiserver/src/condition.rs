//! What a replica is going through, as a current kube-apiserver shows it: ready, not
//! ready (a failing readiness check), shutting down (first with `/readyz` failing while
//! requests are still served, then — with `--shutdown-send-retry-after` — answering
//! new requests with 429), or throttling one flow (API Priority and Fairness).

use std::sync::atomic::{AtomicU8, Ordering};

/// A replica's condition; set with [`crate::Replica::set_condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `/readyz` 200; requests served.
    Ready,
    /// `/readyz` 500 with a failing `etcd` check (lost its storage); requests served.
    NotReady,
    /// `--shutdown-delay-duration` running: `/readyz` 500 with a failing `shutdown`
    /// check; requests still served.
    ShuttingDown,
    /// Past the shutdown delay with `--shutdown-send-retry-after`: `/readyz` fails
    /// as in [`Condition::ShuttingDown`], and every API request is answered 429 with
    /// `Retry-After: 5` and `Connection: close`.
    RetryAfterShutdown,
    /// API Priority and Fairness rejecting a flow: every API request is answered 429
    /// with `Retry-After: 1` on a kept connection; `/readyz` 200.
    Throttling,
}

impl Condition {
    /// Its name: `ready`, `not-ready`, `shutting-down`, `retry-after-shutdown`,
    /// `throttling`.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Ready => "ready",
            Condition::NotReady => "not-ready",
            Condition::ShuttingDown => "shutting-down",
            Condition::RetryAfterShutdown => "retry-after-shutdown",
            Condition::Throttling => "throttling",
        }
    }

    /// The condition with this [`Condition::name`].
    pub fn from_name(name: &str) -> Option<Condition> {
        Condition::ALL.into_iter().find(|c| c.name() == name)
    }

    const ALL: [Condition; 5] = [
        Condition::Ready,
        Condition::NotReady,
        Condition::ShuttingDown,
        Condition::RetryAfterShutdown,
        Condition::Throttling,
    ];

    /// The `/readyz` failure body, if `/readyz` fails.
    pub(crate) fn readyz_failure(self) -> Option<&'static str> {
        match self {
            Condition::Ready | Condition::Throttling => None,
            Condition::NotReady => {
                Some("[+]ping ok\n[+]shutdown ok\n[-]etcd failed: reason withheld\nreadyz check failed\n")
            }
            Condition::ShuttingDown | Condition::RetryAfterShutdown => {
                Some("[+]ping ok\n[-]shutdown failed: reason withheld\n[+]etcd ok\nreadyz check failed\n")
            }
        }
    }
}

/// The condition, shared by every connection of a replica.
#[derive(Debug, Default)]
pub(crate) struct Current(AtomicU8);

impl Current {
    pub(crate) fn set(&self, condition: Condition) -> Condition {
        let index = Condition::ALL
            .iter()
            .position(|c| *c == condition)
            .unwrap_or(0);
        let old = self
            .0
            .swap(u8::try_from(index).unwrap_or(0), Ordering::Relaxed);
        Condition::ALL[usize::from(old).min(Condition::ALL.len() - 1)]
    }

    pub(crate) fn get(&self) -> Condition {
        Condition::ALL[usize::from(self.0.load(Ordering::Relaxed)).min(Condition::ALL.len() - 1)]
    }
}
