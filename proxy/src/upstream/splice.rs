//! Splicing two byte streams (upgraded requests, passthrough connections) with a
//! silence limit and a revocation signal.
//!
//! A splice ends when both directions have closed, when a direction fails, when no byte
//! moved in either direction for the idle limit (`longRunningTimeout`: an exec session
//! whose user types nothing while the command prints is not silent; one where neither
//! side says anything is), or when the connection is revoked.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How a splice ended.
#[derive(Debug)]
pub enum SpliceEnd {
    /// Both sides closed.
    Closed,
    /// Nothing moved in either direction for the idle limit.
    Idle,
    /// The connection was revoked (its route or allowlist no longer allows it).
    Revoked,
    /// A read or write failed.
    Failed(io::Error),
}

impl SpliceEnd {
    /// Metric and log label.
    pub fn label(&self) -> &'static str {
        match self {
            SpliceEnd::Closed => "closed",
            SpliceEnd::Idle => "idle_timeout",
            SpliceEnd::Revoked => "revoked",
            SpliceEnd::Failed(_) => "error",
        }
    }
}

/// Bytes a splice moved, however it ended (for the access log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Read from the client (and written, or being written, upstream).
    pub up: u64,
    /// Read from the upstream.
    pub down: u64,
}

/// Copy both ways between `client` and `upstream` until one of the ends above.
pub async fn splice<A, B, R>(
    client: &mut A,
    upstream: &mut B,
    idle: Duration,
    revoked: R,
) -> (SpliceEnd, Moved)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    R: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    // Nanoseconds since `start` of the last byte moved in either direction.
    let last = AtomicU64::new(0);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut client = Active {
        inner: client,
        start,
        last: &last,
        read: &up,
    };
    let mut upstream = Active {
        inner: upstream,
        start,
        last: &last,
        read: &down,
    };
    let end = watch(&mut client, &mut upstream, start, &last, idle, revoked).await;
    let moved = Moved {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
    };
    (end, moved)
}

/// Run the copy until it ends, the splice is revoked or both sides are silent.
async fn watch<A, B, R>(
    client: &mut Active<'_, A>,
    upstream: &mut Active<'_, B>,
    start: Instant,
    last: &AtomicU64,
    idle: Duration,
    revoked: R,
) -> SpliceEnd
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    R: std::future::Future<Output = ()>,
{
    let copy = tokio::io::copy_bidirectional(client, upstream);
    tokio::pin!(copy);
    tokio::pin!(revoked);
    loop {
        let quiet_until = start + Duration::from_nanos(last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            // A revoked connection also fails its reads: report the revocation.
            biased;
            () = &mut revoked => return SpliceEnd::Revoked,
            result = &mut copy => {
                return match result {
                    Ok(_) => SpliceEnd::Closed,
                    Err(e) => SpliceEnd::Failed(e),
                };
            }
            () = tokio::time::sleep_until(quiet_until) => {
                let since = start + Duration::from_nanos(last.load(Ordering::Relaxed));
                if Instant::now().saturating_duration_since(since) >= idle {
                    return SpliceEnd::Idle;
                }
            }
        }
    }
}

/// A stream that records when it last moved a byte, and how many it read.
struct Active<'a, S: ?Sized> {
    inner: &'a mut S,
    start: Instant,
    last: &'a AtomicU64,
    read: &'a AtomicU64,
}

impl<S: ?Sized> Active<'_, S> {
    fn touch(&self) {
        let since = Instant::now().saturating_duration_since(self.start);
        self.last.store(
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Active<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if matches!(result, Poll::Ready(Ok(()))) && read > 0 {
            self.touch();
            self.read
                .fetch_add(u64::try_from(read).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Active<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_silent_splice_ends_after_the_idle_limit_and_traffic_keeps_it_open() {
        let (mut client, mut client_peer) = tokio::io::duplex(1024);
        let (mut upstream, mut upstream_peer) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let (end, moved) = splice(
                &mut client_peer,
                &mut upstream_peer,
                IDLE,
                std::future::pending(),
            )
            .await;
            (end, moved, started.elapsed())
        });
        // Upstream → client traffic every 40 s for two minutes: never 60 s of silence.
        let mut buf = [0u8; 4];
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(40)).await;
            upstream.write_all(b"ping").await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
        }
        let (end, moved, elapsed) = task.await.unwrap();
        assert!(matches!(end, SpliceEnd::Idle), "{end:?}");
        assert_eq!(
            moved,
            Moved { up: 0, down: 12 },
            "bytes are counted however it ends"
        );
        // Last byte at 120 s, then 60 s of silence.
        assert_eq!(elapsed.as_secs(), 180);
    }

    #[tokio::test(start_paused = true)]
    async fn revocation_and_closing_end_a_splice() {
        let (_client, mut client_peer) = tokio::io::duplex(64);
        let (_upstream, mut upstream_peer) = tokio::io::duplex(64);
        let (end, _) = splice(&mut client_peer, &mut upstream_peer, IDLE, async {}).await;
        assert!(matches!(end, SpliceEnd::Revoked), "{end:?}");

        let (client, mut client_peer) = tokio::io::duplex(64);
        let (mut upstream, mut upstream_peer) = tokio::io::duplex(64);
        upstream.write_all(b"bye").await.unwrap();
        drop(upstream);
        drop(client);
        let (end, _) = splice(
            &mut client_peer,
            &mut upstream_peer,
            IDLE,
            std::future::pending(),
        )
        .await;
        assert!(
            matches!(end, SpliceEnd::Closed | SpliceEnd::Failed(_)),
            "{end:?}"
        );
    }
}
