//! Reading the first bytes of a connection (PROXY header, CONNECT request, ClientHello)
//! under the admission deadline.

use std::io;

use bytes::BytesMut;
use tokio::net::TcpStream;

/// Read more bytes into `buf` before `deadline`; `Ok(false)` at end of stream.
pub async fn read_more(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: tokio::time::Instant,
) -> io::Result<bool> {
    use tokio::io::AsyncReadExt;
    if buf.capacity() - buf.len() < 512 {
        buf.reserve(2048);
    }
    match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
        Ok(Ok(0)) => Ok(false),
        Ok(Ok(_)) => Ok(true),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed")),
    }
}
