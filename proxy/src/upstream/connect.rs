//! Connections apigate makes itself (upgrades, passthrough): TCP, optionally TLS, bounded
//! by the route's connect timeout, failures classified for the one rule in
//! [`super::failure`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::failure::Failure;

/// A TCP connection to `addr` within `timeout`.
pub async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Failure> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(_)) => Err(Failure::Connect),
        Err(_) => Err(Failure::ConnectTimeout),
    }
}

/// TCP + TLS to `addr`, verifying the replica as `server_name`, within `timeout` for
/// both together.
pub async fn tls(
    addr: SocketAddr,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => return Err(Failure::Connect),
        Err(_) => return Err(Failure::ConnectTimeout),
    };
    let _ = tcp.set_nodelay(true);
    let handshake = tokio_rustls::TlsConnector::from(config).connect(server_name, tcp);
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(_)) => Err(Failure::Tls),
        Err(_) => Err(Failure::ConnectTimeout),
    }
}
