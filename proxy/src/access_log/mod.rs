//! The access log: one structured line per request, so an operator can tell who sent
//! what, when, to which replica, and how it ended.
//!
//! The request path only decides whether a request is logged (sampling) and hands an
//! [`Entry`] of cheap clones to a bounded buffer; a thread of its own parses the request
//! and writes the line ([`line`], [`writer`]). When the buffer is full the line is
//! dropped and counted, never waited for: a slow log destination must not slow
//! requests.

pub mod line;
mod writer;

use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apigate_control::snapshot::AccessLogSettings;
use http::{HeaderValue, Method, Uri};
use prometheus::IntCounter;

use crate::balance::BackendState;
use crate::conn::ClientAuth;
use crate::identity::HEX;
use crate::metrics::Metrics;

/// Lines waiting for the writer at most; more are dropped (and counted).
pub const BUFFER_LINES: usize = 16 * 1024;

/// The request header carrying kube's audit ID.
pub const AUDIT_ID: &str = "audit-id";

/// Everything a line says about one request, gathered when the request ends.
pub struct Entry {
    /// The settings it was logged under (format and destination).
    pub settings: Arc<AccessLogSettings>,
    /// When the request's head arrived.
    pub time: SystemTime,
    /// The route's label.
    pub route: Arc<str>,
    /// The listener.
    pub listener: Arc<str>,
    /// The client (the PROXY address where one was given).
    pub client: SocketAddr,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// How the client authenticated at the TLS layer.
    pub auth: ClientAuth,
    /// The `Authorization` header, turned into a token id by the writer.
    pub authorization: Option<HeaderValue>,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// The request method and target (`None` for a head the transport refused before
    /// it was read whole).
    pub request: Option<(Method, Uri)>,
    /// An HTTP/1.1 upgrade (verb `connect`).
    pub upgrade: bool,
    /// The status sent, 0 when none was.
    pub status: u16,
    /// Why apigate answered the request itself, if it did.
    pub answered: Option<&'static str>,
    /// From the head's arrival to the end of the response (or of the upgraded stream).
    pub duration: Duration,
    /// Body bytes read from the client (all bytes, for an upgraded stream).
    pub bytes_in: u64,
    /// Body bytes sent to the client (all bytes, for an upgraded stream).
    pub bytes_out: u64,
    /// The replica of the last attempt.
    pub backend: Option<Arc<BackendState>>,
    /// Attempts after the first.
    pub retries: usize,
    /// The request's `Audit-ID`.
    pub audit_id: Option<HeaderValue>,
}

/// The request path's handle on the log.
pub struct AccessLog {
    sender: SyncSender<Entry>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Start the writer thread. It ends when the log (the proxy's state) is dropped. If
    /// no thread can be started, every line is counted as dropped.
    pub fn start(metrics: &Metrics) -> AccessLog {
        Self::with_capacity(metrics, BUFFER_LINES)
    }

    fn with_capacity(metrics: &Metrics, capacity: usize) -> AccessLog {
        let (sender, receiver) = sync_channel(capacity);
        let lines = &metrics.access_log_lines;
        let counts = writer::Counts {
            written: lines.with_label_values(&["written"]),
            failed: lines.with_label_values(&["failed"]),
        };
        let spawned = std::thread::Builder::new()
            .name("apigate-access-log".into())
            .spawn(move || writer::run(&receiver, &counts));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the access log writer; access log lines are dropped");
        }
        AccessLog {
            sender,
            dropped: lines.with_label_values(&["dropped"]),
        }
    }

    /// Hand a line to the writer, or count it dropped when the buffer is full.
    pub fn submit(&self, entry: Entry) {
        match self.sender.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped.inc(),
            // The writer thread is gone (it never ends on its own): count the loss.
            Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// The line of a request head the transport refused (too slow, too large or
/// unparseable) before the HTTP engine had a request: what is known of it, with the
/// reason and the status the transport answered (0: none).
pub fn refused_head(
    settings: Arc<AccessLogSettings>,
    conn: &crate::conn::ConnCtx,
    route: Arc<str>,
    protocol: &'static str,
    (reason, status): (&'static str, u16),
) -> Entry {
    Entry {
        settings,
        time: SystemTime::now(),
        route,
        listener: conn.listener.clone(),
        client: conn.peer,
        peer: conn.tcp_peer,
        auth: conn.client.clone(),
        authorization: None,
        protocol,
        request: None,
        upgrade: false,
        status,
        answered: Some(reason),
        duration: Duration::ZERO,
        bytes_in: 0,
        bytes_out: 0,
        backend: None,
        retries: 0,
        audit_id: None,
    }
}

/// Whether a request is logged: failures and apigate's own answers always (unless
/// configured otherwise), successes by the sampling ratio.
pub fn wanted(settings: &AccessLogSettings, status: u16, answered: bool) -> bool {
    let failed = answered || status == 0 || status >= 400;
    if failed && settings.always_log_errors {
        return true;
    }
    let ratio = settings.success_sample_ratio;
    ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio)
}

/// A fresh audit ID for a request that came without one: a random (version 4) UUID,
/// the form kube-apiserver generates itself.
pub fn new_audit_id() -> HeaderValue {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut text = [0u8; 36];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text[at] = b'-';
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apigate_control::model::AccessLogFormat;

    fn settings(ratio: f64, always_log_errors: bool) -> AccessLogSettings {
        AccessLogSettings {
            format: AccessLogFormat::Json,
            success_sample_ratio: ratio,
            always_log_errors,
            path: None,
        }
    }

    #[test]
    fn failures_are_always_logged_and_successes_sampled() {
        let none = settings(0.0, true);
        assert!(!wanted(&none, 200, false));
        assert!(wanted(&none, 503, false));
        assert!(wanted(&none, 0, false), "no response is a failure");
        assert!(wanted(&none, 200, true), "apigate's own answer");
        assert!(!wanted(&settings(0.0, false), 503, false));
        assert!(wanted(&settings(1.0, false), 200, false));
        let half = settings(0.5, true);
        let logged = (0..10_000).filter(|_| wanted(&half, 200, false)).count();
        assert!((4_000..6_000).contains(&logged), "{logged}");
    }

    #[test]
    fn a_full_buffer_drops_and_counts_lines_instead_of_waiting() {
        use std::io::BufRead;

        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let metrics = Metrics::new();
        let log = AccessLog::with_capacity(&metrics, 4);
        let mut entry = line::tests::entry(AccessLogFormat::Logfmt);
        let mut to_fifo = (*entry.settings).clone();
        to_fifo.path = Some(Arc::from(fifo.to_str().unwrap()));
        entry.settings = Arc::new(to_fifo);
        // Nobody reads the FIFO: the writer blocks opening it with the first entry, four
        // more wait in the buffer, and every other one is dropped at once.
        for _ in 0..20 {
            log.submit(line::tests::entry_like(&entry));
        }
        let count = |result: &str| metrics.access_log_lines.with_label_values(&[result]).get();
        assert!(
            (15..=16).contains(&count("dropped")),
            "{}",
            count("dropped")
        );
        // A reader comes: what waited is written.
        let reader = std::io::BufReader::new(std::fs::File::open(&fifo).unwrap());
        drop(log);
        let lines = reader.lines().map_while(Result::ok).count();
        assert_eq!(lines as u64, count("written"));
        assert_eq!(count("written") + count("dropped"), 20);
    }

    #[test]
    fn audit_ids_are_version_4_uuids() {
        let a = new_audit_id();
        let text = a.to_str().unwrap();
        assert_eq!(text.len(), 36);
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'));
        assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(new_audit_id(), a);
    }
}
