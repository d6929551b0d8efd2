//! An admitted, terminated client connection: what every request on it needs to know
//! ([`ConnCtx`]), the transport the HTTP engine reads and writes ([`transport::Conn`]),
//! and the switch that closes it when a new configuration revokes it ([`KillSwitch`]).
//!
//! The transport bounds every request head in size and time ([`h1_head`],
//! [`h2_frames`]), bounds what an HTTP/2 client may send without requests
//! ([`h2_guard`]) and writes apigate's own response where the engine would answer with
//! one of its own before any request reached apigate's hooks.

pub mod h1_head;
pub mod h2_frames;
pub mod h2_guard;
pub mod h2_keepalive;
pub mod limits;
pub mod prefixed;
pub mod registry;
pub mod transport;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use apigate_control::RouteId;
use futures_util::task::AtomicWaker;

use crate::identity::{Identity, IdentityError};

/// How the client authenticated at the TLS layer.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No client certificate (bearer token or anonymous requests).
    Anonymous,
    /// A certificate verified against the route's client CA.
    Verified(Identity),
    /// A verified certificate that yields no usable identity; requests get a 400.
    Invalid(IdentityError),
}

/// Who a request comes from, as flow control and the access log name it: one rule.
#[derive(Debug)]
pub enum ClientName<'a> {
    /// A verified client certificate: its user, and its groups.
    Certificate(&'a Identity),
    /// A bearer token, named by [`crate::identity::token_id`] (never by itself).
    Token(String),
    /// Neither.
    Anonymous,
}

impl ClientName<'_> {
    /// The name: the certificate's user, `token:<hash>`, or `anonymous`.
    pub fn user(&self) -> &str {
        match self {
            ClientName::Certificate(identity) => &identity.user,
            ClientName::Token(id) => id,
            ClientName::Anonymous => "anonymous",
        }
    }
}

impl ClientAuth {
    /// Who sends a request on this connection with this `Authorization` header. A
    /// certificate that yields no identity is named as if there were none: by the
    /// token, else `anonymous`.
    pub fn name(&self, authorization: Option<&[u8]>) -> ClientName<'_> {
        if let ClientAuth::Verified(identity) = self {
            return ClientName::Certificate(identity);
        }
        match authorization.and_then(crate::identity::token_id) {
            Some(id) => ClientName::Token(id),
            None => ClientName::Anonymous,
        }
    }
}

/// What every request on a connection needs to know about it.
#[derive(Debug)]
pub struct ConnCtx {
    /// The route the ClientHello (or CONNECT destination) selected.
    pub route_id: RouteId,
    /// The client's TLS authentication.
    pub client: ClientAuth,
    /// The client's address (the PROXY address where one was given).
    pub peer: SocketAddr,
    /// The TCP peer (a load balancer, when it sent a PROXY header).
    pub tcp_peer: SocketAddr,
    /// The listener the connection came in on.
    pub listener: Arc<str>,
    /// Trips when a new configuration revokes the connection (ends upgraded streams
    /// taken out of the engine too).
    pub kill: Arc<KillSwitch>,
    /// Requests whose hooks have started and finished (HTTP/1.1 keeps the transport's
    /// head phases in step with the engine through these).
    started: AtomicU64,
    finished: AtomicU64,
}

impl ConnCtx {
    /// Context of a freshly terminated connection.
    pub fn new(
        route_id: RouteId,
        client: ClientAuth,
        (peer, tcp_peer): (SocketAddr, SocketAddr),
        listener: Arc<str>,
        kill: Arc<KillSwitch>,
    ) -> Self {
        ConnCtx {
            route_id,
            client,
            peer,
            tcp_peer,
            listener,
            kill,
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
        }
    }

    /// The engine handed a request to apigate's hooks.
    pub fn request_started(&self) {
        self.started.fetch_add(1, Ordering::AcqRel);
    }

    /// apigate's hooks are done with a request.
    pub fn request_finished(&self) {
        self.finished.fetch_add(1, Ordering::AcqRel);
    }

    fn finished(&self) -> u64 {
        self.finished.load(Ordering::Acquire)
    }

    /// Whether a request is in apigate's hooks right now.
    fn in_request(&self) -> bool {
        self.started.load(Ordering::Acquire) != self.finished.load(Ordering::Acquire)
    }
}

/// Trips once; wakes whoever waits on the connection.
#[derive(Debug, Default)]
pub struct KillSwitch {
    tripped: AtomicBool,
    read: AtomicWaker,
    write: AtomicWaker,
    waiter: AtomicWaker,
}

impl KillSwitch {
    /// Trip the switch and wake the connection.
    pub fn trip(&self) {
        self.tripped.store(true, Ordering::Release);
        self.read.wake();
        self.write.wake();
        self.waiter.wake();
    }

    /// Whether it tripped.
    pub fn is_tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }

    /// For `poll_read`: true when tripped; otherwise registers the waker.
    pub fn poll_read_tripped(&self, cx: &mut Context<'_>) -> bool {
        self.read.register(cx.waker());
        self.is_tripped()
    }

    /// For `poll_write`: true when tripped; otherwise registers the waker.
    pub fn poll_write_tripped(&self, cx: &mut Context<'_>) -> bool {
        self.write.register(cx.waker());
        self.is_tripped()
    }

    /// Resolves when tripped.
    pub async fn tripped(&self) {
        std::future::poll_fn(|cx| {
            self.waiter.register(cx.waker());
            if self.is_tripped() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}
