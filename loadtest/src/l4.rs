//! The L4 baseline: a minimal TCP round-robin balancer, built in so the comparison has a
//! connection-level balancer before apigate's own passthrough mode exists.
//!
//! It picks a backend per *TCP connection* (round robin) and then copies bytes both ways;
//! TLS passes through untouched. That is the behaviour of any L4 balancer (Istio TLS
//! passthrough, a cloud NLB, IPVS): all requests of one HTTP/2 connection — one client-go
//! process — land on one replica. It is a measurement baseline, not a product.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A running L4 baseline balancer.
#[derive(Debug)]
pub struct L4Baseline {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<AtomicUsize>,
}

/// Why the balancer could not start.
#[derive(Debug, thiserror::Error)]
pub enum L4Error {
    /// No backends given.
    #[error("the L4 baseline needs at least one --backend")]
    NoBackends,
    /// Binding the listener failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl L4Baseline {
    /// Binds `listen` and starts forwarding connections round-robin over `backends`.
    pub async fn start(listen: SocketAddr, backends: Vec<SocketAddr>) -> Result<Self, L4Error> {
        if backends.is_empty() {
            return Err(L4Error::NoBackends);
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| L4Error::Bind {
                addr: listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| L4Error::Bind {
            addr: listen,
            source,
        })?;
        let (stop, mut stopped) = watch::channel(false);
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept() => {
                        while conns.try_join_next().is_some() {}
                        let (client, peer) = match accepted {
                            Ok(x) => x,
                            Err(e) => {
                                tracing::warn!(error = %e, "accept failed");
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        };
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let backend = backends[n % backends.len()];
                        tracing::debug!(%peer, %backend, "l4 connection");
                        conns.spawn(forward(client, backend));
                    }
                }
            }
            conns.shutdown().await;
        });
        Ok(Self {
            local_addr,
            stop,
            task,
            connections,
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes every forwarded connection.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn forward(mut client: TcpStream, backend: SocketAddr) {
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%backend, error = %e, "backend connect failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%backend, "backend connect timed out");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let mut upstream = upstream;
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%backend, error = %e, "l4 connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Echo servers that prefix replies with their index, to see where connections go.
    async fn tagged_servers(n: usize) -> std::io::Result<(Vec<SocketAddr>, JoinSet<()>)> {
        let mut set = JoinSet::new();
        let mut addrs = Vec::new();
        for i in 0..n {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(l.local_addr()?);
            set.spawn(async move {
                for _ in 0..100 {
                    let Ok((mut s, _)) = l.accept().await else {
                        return;
                    };
                    let _ = s.write_all(&[i as u8]).await;
                }
            });
        }
        Ok((addrs, set))
    }

    #[tokio::test]
    async fn round_robin_per_connection() -> Result<(), Box<dyn std::error::Error>> {
        let (addrs, mut servers) = tagged_servers(3).await?;
        let lb = L4Baseline::start("127.0.0.1:0".parse()?, addrs).await?;
        let mut seen = Vec::new();
        for _ in 0..6 {
            let mut c = TcpStream::connect(lb.local_addr()).await?;
            let mut b = [0u8; 1];
            tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut b)).await??;
            seen.push(b[0]);
        }
        assert_eq!(seen, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(lb.connections(), 6);
        lb.shutdown().await;
        servers.shutdown().await;
        Ok(())
    }

    #[tokio::test]
    async fn rejects_empty_backend_list() -> Result<(), Box<dyn std::error::Error>> {
        assert!(matches!(
            L4Baseline::start("127.0.0.1:0".parse()?, vec![]).await,
            Err(L4Error::NoBackends)
        ));
        Ok(())
    }
}
