//! Listening, accepting and serving connections, and stopping all of it.
//!
//! Each accepted connection runs on its own task: optional TLS handshake (bounded), then
//! hyper-util's auto builder serves HTTP/1.1 and HTTP/2 (h2c by prior knowledge when
//! plaintext) on the same port, with upgrades enabled for exec/attach/portforward.
//! Every task holds a clone of one `mpsc::Sender` (the tracker) and watches one shutdown
//! signal; [`Replica::shutdown`] raises the signal, every task drops its connection, and
//! the replica knows all are gone when the tracker's channel reports no senders left.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::condition::Condition;
use crate::handler::{self, ConnCtx, Shared};
use crate::tls::{PeerCert, ServerTls};
use crate::{Error, ReplicaOptions};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Replica::shutdown`] waits for connections and upgraded streams to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every spawned task carries: a tracker that keeps [`Replica::shutdown`] waiting,
/// and the shutdown signal.
#[derive(Debug, Clone)]
pub(crate) struct TaskCtx {
    pub(crate) tracker: mpsc::Sender<()>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Resolves once shutdown was requested (or the [`Replica`] was dropped).
pub(crate) async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    // `wait_for` errs only when the sender is gone, which means shutdown too.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// A running fake kube-apiserver replica. Dropping it stops the replica without waiting;
/// [`Replica::shutdown`] stops it and waits (bounded) until every connection is closed.
#[derive(Debug)]
pub struct Replica {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    done: mpsc::Receiver<()>,
    accept: JoinHandle<()>,
}

impl Replica {
    /// The replica's id, the value of [`crate::REPLICA_HEADER`] in its responses.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The bound address (with the port the OS picked when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Flips `/readyz` to 500 (`false`, as during `--shutdown-delay-duration`:
    /// [`Condition::ShuttingDown`]) or back to 200 (`true`). Requests are still served,
    /// so tests can check that a balancer stops sending new requests on its own.
    pub fn set_ready(&self, ready: bool) {
        self.set_condition(if ready {
            Condition::Ready
        } else {
            Condition::ShuttingDown
        });
    }

    /// Put the replica in `condition` ([`Condition`]).
    pub fn set_condition(&self, condition: Condition) {
        let was = self.shared.condition.set(condition);
        self.shared
            .metrics
            .set_ready(condition.readyz_failure().is_none());
        if was != condition {
            info!(replica = %self.shared.id, ?condition, "condition changed");
        }
    }

    /// The replica's condition ([`Replica::set_condition`]).
    pub fn condition(&self) -> Condition {
        self.shared.condition.get()
    }

    /// Unix time in nanoseconds of the latest request counted by
    /// [`Replica::requests_total`] (0 before the first): when a balancer last sent it
    /// a new request.
    pub fn last_request_unix_nanos(&self) -> u64 {
        self.shared.metrics.last_request_unix_nanos()
    }

    /// All requests received except health checks and `/metrics`: what a balancer test
    /// compares across replicas.
    pub fn requests_total(&self) -> u64 {
        self.shared.metrics.requests_total()
    }

    /// Watch streams open right now.
    pub fn open_watches(&self) -> u64 {
        self.shared.metrics.open_watches()
    }

    /// Watch events sent so far, all watches together: a client (or proxy) that stops
    /// reading stops this count, since the HTTP layer asks for the next event only when
    /// the flow-control window has room.
    pub fn watch_events(&self) -> u64 {
        self.shared.metrics.watch_events()
    }

    /// Stops accepting, closes every connection (watch streams and upgraded streams end)
    /// and resolves when all are gone, or after at most 2 s.
    pub async fn shutdown(self) {
        let Replica {
            shared,
            shutdown,
            mut done,
            accept,
            ..
        } = self;
        let _ = shutdown.send(true);
        let all_closed = async {
            if let Err(e) = accept.await {
                warn!(replica = %shared.id, error = %e, "accept task failed");
            }
            // Nothing is ever sent; `None` means every task dropped its tracker.
            while done.recv().await.is_some() {}
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, all_closed).await {
            Ok(()) => info!(replica = %shared.id, "replica stopped"),
            Err(_) => {
                warn!(replica = %shared.id, grace = ?SHUTDOWN_GRACE, "replica stopped with tasks still ending")
            }
        }
    }
}

/// Starts one replica on `listen` (port 0 → the OS picks; see [`Replica::local_addr`]).
pub async fn spawn(listen: SocketAddr, opts: ReplicaOptions) -> Result<Replica, Error> {
    let tls = opts
        .tls
        .as_ref()
        .map(|material| ServerTls::new(material, &opts))
        .transpose()?
        .map(Arc::new);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Io {
        context: "reading the bound address",
        source,
    })?;
    let shared = Arc::new(Shared::new(&opts, addr));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (tracker, done) = mpsc::channel(1);
    info!(replica = %shared.id, %addr, tls = tls.is_some(), service_time = %opts.service_time, "fake apiserver replica listening");
    let accept = tokio::spawn(accept_loop(
        listener,
        tls,
        shared.clone(),
        TaskCtx {
            tracker,
            shutdown: shutdown_rx,
        },
    ));
    Ok(Replica {
        shared,
        addr,
        shutdown,
        done,
        accept,
    })
}

/// N replicas on `host` (ports chosen by the OS), ids "replica-0".., same options
/// otherwise: the usual backend set of a balancing test or the demo.
pub async fn spawn_many(
    n: usize,
    host: IpAddr,
    opts: ReplicaOptions,
) -> Result<Vec<Replica>, Error> {
    let mut replicas = Vec::with_capacity(n);
    for i in 0..n {
        let opts = ReplicaOptions {
            id: format!("replica-{i}"),
            ..opts.clone()
        };
        match spawn(SocketAddr::new(host, 0), opts).await {
            Ok(r) => replicas.push(r),
            Err(e) => {
                for r in replicas {
                    r.shutdown().await;
                }
                return Err(e);
            }
        }
    }
    Ok(replicas)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    shared: Arc<Shared>,
    tasks: TaskCtx,
) {
    let mut shutdown = tasks.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = wait_shutdown(&mut shutdown) => break,
        };
        match accepted {
            Ok((tcp, remote)) => {
                if let Err(e) = tcp.set_nodelay(true) {
                    debug!(replica = %shared.id, %remote, error = %e, "set_nodelay failed");
                }
                tokio::spawn(connection(
                    tcp,
                    remote,
                    tls.clone(),
                    shared.clone(),
                    tasks.clone(),
                ));
            }
            Err(e) => {
                warn!(replica = %shared.id, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    debug!(replica = %shared.id, "stopped accepting");
}

/// One connection, from handshake to close; ends early on shutdown.
async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: Option<Arc<ServerTls>>,
    shared: Arc<Shared>,
    tasks: TaskCtx,
) {
    let mut shutdown = tasks.shutdown.clone();
    let work = async {
        match tls {
            None => serve(tcp, PeerCert::default(), remote, &shared, tasks.clone()).await,
            Some(tls) => {
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        debug!(replica = %shared.id, %remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(replica = %shared.id, %remote, "TLS handshake timed out");
                        return;
                    }
                };
                let peer = tls.peer_cert(stream.get_ref().1);
                serve(stream, peer, remote, &shared, tasks.clone()).await;
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = wait_shutdown(&mut shutdown) => debug!(replica = %shared.id, %remote, "connection closed by shutdown"),
    }
}

async fn serve<I>(io: I, peer: PeerCert, remote: SocketAddr, shared: &Arc<Shared>, tasks: TaskCtx)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(ConnCtx {
        peer,
        remote,
        tasks,
    });
    let svc_shared = shared.clone();
    let service = service_fn(move |req| {
        let shared = svc_shared.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handler::handle(&shared, &conn, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        debug!(replica = %shared.id, %remote, error = %e, "connection ended with error");
    }
}
