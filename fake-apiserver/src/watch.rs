//! Watch responses: a never-ending stream of newline-delimited JSON events.
//!
//! Long watches are what pins load to one replica behind an L4 balancer, so the fake keeps
//! them open until the client leaves, `timeoutSeconds` elapses or the replica shuts down.
//! The body is a hand-written [`Body`] so it can be dropped at any point: dropping it
//! (connection closed, HTTP/2 stream reset) releases the [`WatchGuard`] and the stream no
//! longer counts in `open_watches`. HTTP/1.1 sends it chunked, HTTP/2 as DATA frames.

use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use serde_json::json;
use tokio::time::{Interval, MissedTickBehavior, Sleep};

use crate::handler::Shared;
use crate::metrics::WatchGuard;
use crate::objects::{to_bytes, Resource};

/// Shortest interval between events; tokio intervals cannot be zero.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The streaming body of one watch.
pub(crate) struct WatchBody {
    shared: Arc<Shared>,
    resource: Resource,
    namespace: String,
    interval: Interval,
    deadline: Option<Pin<Box<Sleep>>>,
    sent: u64,
    _open: WatchGuard,
}

impl WatchBody {
    /// Starts a watch; the first event is sent at once, then one per `interval`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        resource: Resource,
        namespace: Option<&str>,
        interval: Duration,
        timeout: Option<Duration>,
    ) -> WatchBody {
        let mut interval = tokio::time::interval(interval.max(MIN_INTERVAL));
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let open = shared.metrics.watch_opened();
        WatchBody {
            shared,
            resource,
            namespace: namespace.unwrap_or("default").to_owned(),
            interval,
            deadline: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            sent: 0,
            _open: open,
        }
    }

    fn next_event(&mut self) -> Bytes {
        let rv = self.shared.next_resource_version();
        let name = format!("watch-{}", self.sent);
        self.sent += 1;
        self.shared.metrics.watch_event_sent();
        let object = self
            .shared
            .catalog
            .object(self.resource, &self.namespace, &name, rv, true);
        let mut line = to_bytes(&json!({"type": "ADDED", "object": object})).to_vec();
        line.push(b'\n');
        Bytes::from(line)
    }
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!(replica = %this.shared.id, events = this.sent, "watch reached timeoutSeconds");
                return Poll::Ready(None);
            }
        }
        match this.interval.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(Frame::data(this.next_event())))),
            Poll::Pending => Poll::Pending,
        }
    }
}
