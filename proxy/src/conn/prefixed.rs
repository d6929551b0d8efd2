//! A TCP stream with bytes already read in front of it.
//!
//! Reading the PROXY header and the ClientHello consumes bytes that the next stage
//! (rustls, or a passthrough backend) must still see; this stream replays them first.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream whose first bytes come from `prefix`.
#[derive(Debug)]
pub struct PrefixedStream {
    prefix: BytesMut,
    inner: TcpStream,
}

impl PrefixedStream {
    /// Replay `prefix` before reading from `inner`.
    pub fn new(prefix: BytesMut, inner: TcpStream) -> Self {
        PrefixedStream { prefix, inner }
    }

    /// Put `bytes` in front of whatever is still to be replayed.
    pub fn unread(&mut self, bytes: &[u8]) {
        let mut prefix = BytesMut::with_capacity(bytes.len() + self.prefix.len());
        prefix.extend_from_slice(bytes);
        prefix.extend_from_slice(&self.prefix);
        self.prefix = prefix;
    }

    /// Take the bytes not yet replayed (to forward them elsewhere).
    pub fn take_prefix(&mut self) -> BytesMut {
        std::mem::take(&mut self.prefix)
    }

    /// The underlying socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.inner
    }

    /// The underlying socket, mutably (to splice it).
    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.inner
    }
}

impl AsyncRead for PrefixedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PrefixedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
