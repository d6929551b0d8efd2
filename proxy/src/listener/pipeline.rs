//! The admission pipeline, one typed stage per step:
//!
//! [`Accepted`] → total connection cap → PROXY header and per-source cap →
//! [`Addressed`] → (CONNECT listeners: destination →
//! [`Tunnelled`]) → ClientHello → [`Hello`] → route → [`Routed`] → allowlist and
//! registration for revocation (and the per-route cap) → [`Admitted`].
//!
//! Each stage consumes the previous stage's result, so no step can be skipped or run
//! out of order, and ends a refused connection with one [`Refused`] that
//! [`super::record::refused`] counts in one place. The whole admission runs under one
//! deadline (`handshakeTimeout`) and one loaded configuration; [`Admitted`] drops it,
//! so a long-lived connection keeps no old configuration alive.

use std::net::SocketAddr;
use std::sync::Arc;

use apigate_control::model::{ListenerKind, ProxyProtocolMode};
use apigate_control::snapshot::Listener;
use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::client_hello::{self, HelloError};
use super::connect::{self, ConnectError};
use super::proxy_header::{self, ClientAddrs};
use super::record::{self, Limit, Refusal, Refused};
use super::revocation;
use crate::conn::limits::SourceSlot;
use crate::conn::prefixed::PrefixedStream;
use crate::conn::registry::{Registration, RoutedBy};
use crate::conn::KillSwitch;
use crate::state::{Active, RouteRuntime, State};

/// What every stage before [`Admitted`] carries: where the connection came in, the
/// configuration it is admitted under and the admission deadline.
struct Admission {
    listener: Arc<str>,
    active: Arc<Active>,
    deadline: Instant,
    /// The connection's place under `connections.maxPerSource`, once its address is
    /// known (and a cap is configured).
    source: Option<SourceSlot>,
}

impl Admission {
    fn refuse(
        &self,
        refusal: Refusal,
        addrs: ClientAddrs,
        route: Option<&RouteRuntime>,
    ) -> Box<Refused> {
        Box::new(Refused {
            refusal,
            listener: self.listener.clone(),
            addrs,
            route: route.map(|r| r.label.clone()),
        })
    }
}

/// A connection just accepted.
pub struct Accepted {
    tcp: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    proxy_protocol: ProxyProtocolMode,
    /// Whether the TCP peer may send a PROXY header.
    trusted: bool,
    admission: Admission,
}

impl Accepted {
    /// Start admitting `tcp` from `peer` on `listener` (its settings as in the active
    /// configuration, else as at start), under the active configuration.
    pub fn new(
        tcp: TcpStream,
        peer: SocketAddr,
        listener: Arc<str>,
        startup: &Listener,
        active: Arc<Active>,
    ) -> Self {
        let settings = active
            .snapshot
            .gateway
            .listeners
            .iter()
            .find(|l| *l.name == *listener)
            .unwrap_or(startup);
        let deadline = Instant::now() + active.snapshot.gateway.handshake_timeout;
        // Dual-stack listeners see IPv4 clients as ::ffff:a.b.c.d; use the plain form.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let (kind, proxy_protocol, trusted) = (
            settings.kind,
            settings.proxy_protocol,
            settings.trusts(peer.ip()),
        );
        Accepted {
            tcp,
            peer,
            kind,
            proxy_protocol,
            trusted,
            admission: Admission {
                listener,
                active,
                deadline,
                source: None,
            },
        }
    }

    /// `connections.max`: `open` counts every connection open now, this one included.
    pub fn within_total(self, open: usize) -> Result<Self, Box<Refused>> {
        if open <= self.admission.active.snapshot.gateway.connections.max {
            return Ok(self);
        }
        let addrs = ClientAddrs::direct(self.peer);
        Err(self
            .admission
            .refuse(Refusal::OverLimit(Limit::Total), addrs, None))
    }

    /// Read the PROXY header if the listener and the peer call for one; then the
    /// client address takes a place under `connections.maxPerSource`.
    pub async fn read_proxy_header(mut self, state: &State) -> Result<Addressed, Box<Refused>> {
        let read = proxy_header::read(
            &mut self.tcp,
            self.peer,
            self.proxy_protocol,
            self.trusted,
            self.admission.deadline,
        )
        .await;
        let (addrs, buffered) = match read {
            Ok((addrs, buffered)) => (
                ClientAddrs {
                    direct: addrs.direct,
                    remote: SocketAddr::new(addrs.remote.ip().to_canonical(), addrs.remote.port()),
                },
                buffered,
            ),
            Err(e) => {
                return Err(self.admission.refuse(
                    Refusal::ProxyHeader(e),
                    ClientAddrs::direct(self.peer),
                    None,
                ))
            }
        };
        if let Some(max) = self
            .admission
            .active
            .snapshot
            .gateway
            .connections
            .per_source
        {
            match state.sources.hold(addrs.remote.ip(), max) {
                Some(slot) => self.admission.source = Some(slot),
                None => {
                    return Err(self.admission.refuse(
                        Refusal::OverLimit(Limit::Source),
                        addrs,
                        None,
                    ))
                }
            }
        }
        Ok(Addressed {
            tcp: self.tcp,
            addrs,
            buffered,
            kind: self.kind,
            admission: self.admission,
        })
    }
}

/// Whose connection it is: the client addresses the allowlist will check.
pub struct Addressed {
    tcp: TcpStream,
    addrs: ClientAddrs,
    buffered: BytesMut,
    kind: ListenerKind,
    admission: Admission,
}

impl Addressed {
    /// The listener kind decides the next stage.
    pub fn kind(&self) -> ListenerKind {
        self.kind
    }

    /// CONNECT listeners: read the CONNECT request; its destination fixes the route,
    /// whose allowlist is checked before the tunnel opens.
    pub async fn open_tunnel(mut self) -> Result<Tunnelled, Box<Refused>> {
        let Admission {
            ref active,
            deadline,
            ..
        } = self.admission;
        let header = &active.snapshot.gateway.destination_header;
        let request = connect::read_request(&mut self.tcp, self.buffered, header, deadline)
            .await
            .and_then(
                |request| match active.route_for_destination(&request.destination) {
                    Some(route) => Ok((route.clone(), request.rest, request.destination)),
                    None => Err(ConnectError::UnknownDestination(request.destination)),
                },
            );
        let (route, rest, destination) = match request {
            Ok(found) => found,
            Err(e) => {
                let _ = tokio::time::timeout_at(
                    deadline,
                    connect::respond(&mut self.tcp, e.status_line()),
                )
                .await;
                return Err(self.admission.refuse(Refusal::Connect(e), self.addrs, None));
            }
        };
        let decision = route
            .route
            .access
            .decide(self.addrs.direct.ip(), self.addrs.remote.ip());
        if !decision.allowed() {
            let _ =
                tokio::time::timeout_at(deadline, connect::respond(&mut self.tcp, "403 Forbidden"))
                    .await;
            return Err(self
                .admission
                .refuse(Refusal::Denied(decision), self.addrs, Some(&route)));
        }
        match tokio::time::timeout_at(
            deadline,
            connect::respond(&mut self.tcp, "200 Connection established"),
        )
        .await
        {
            Ok(Ok(())) => Ok(Tunnelled {
                tcp: self.tcp,
                addrs: self.addrs,
                buffered: rest,
                route,
                destination: RoutedBy::Destination(destination.trim().to_ascii_lowercase().into()),
                admission: self.admission,
            }),
            Ok(Err(e)) => Err(self.admission.refuse(
                Refusal::ClosedEarly(e.to_string()),
                self.addrs,
                Some(&route),
            )),
            Err(_) => Err(self
                .admission
                .refuse(Refusal::HelloTimeout, self.addrs, Some(&route))),
        }
    }

    /// TLS listeners: read the ClientHello; its SNI will select the route.
    pub async fn read_client_hello(self) -> Result<Hello, Box<Refused>> {
        read_hello(self.tcp, self.addrs, self.buffered, None, self.admission).await
    }
}

/// A CONNECT tunnel open for the route its destination named.
pub struct Tunnelled {
    tcp: TcpStream,
    addrs: ClientAddrs,
    buffered: BytesMut,
    route: Arc<RouteRuntime>,
    destination: RoutedBy,
    admission: Admission,
}

impl Tunnelled {
    /// Read the ClientHello inside the tunnel; the route stays the destination's.
    pub async fn read_client_hello(self) -> Result<Hello, Box<Refused>> {
        read_hello(
            self.tcp,
            self.addrs,
            self.buffered,
            Some((self.route, self.destination)),
            self.admission,
        )
        .await
    }
}

async fn read_hello(
    mut tcp: TcpStream,
    addrs: ClientAddrs,
    buffered: BytesMut,
    fixed: Option<(Arc<RouteRuntime>, RoutedBy)>,
    admission: Admission,
) -> Result<Hello, Box<Refused>> {
    match client_hello::read(&mut tcp, buffered, admission.deadline).await {
        Ok(hello) => Ok(Hello {
            tcp,
            addrs,
            hello,
            fixed,
            admission,
        }),
        Err(e) => {
            let refusal = match e {
                HelloError::NotTls(detail) => Refusal::NotTls(detail),
                HelloError::Timeout => Refusal::HelloTimeout,
                HelloError::Closed(detail) => Refusal::ClosedEarly(detail),
            };
            Err(admission.refuse(refusal, addrs, fixed.as_ref().map(|(r, _)| &**r)))
        }
    }
}

/// A ClientHello read (and kept, to replay).
pub struct Hello {
    tcp: TcpStream,
    addrs: ClientAddrs,
    hello: client_hello::Hello,
    fixed: Option<(Arc<RouteRuntime>, RoutedBy)>,
    admission: Admission,
}

impl Hello {
    /// The route: the CONNECT destination's, else the one serving the SNI. A name no
    /// route serves gets an `unrecognized_name` alert.
    pub async fn route(mut self) -> Result<Routed, Box<Refused>> {
        let refusal = match (self.fixed.take(), &self.hello.server_name) {
            (Some(fixed), _) => Ok(fixed),
            (None, None) => Err(Refusal::NoSni),
            (None, Some(sni)) => match self.admission.active.route_for_sni(sni) {
                Some(route) => Ok((
                    route.clone(),
                    RoutedBy::Sni(sni.to_ascii_lowercase().into()),
                )),
                None => Err(Refusal::UnknownSni(sni.clone())),
            },
        };
        let (route, routed_by) = match refusal {
            Ok(route) => route,
            Err(refusal) => {
                alert(&mut self.tcp, UNRECOGNIZED_NAME, self.admission.deadline).await;
                return Err(self.admission.refuse(refusal, self.addrs, None));
            }
        };
        Ok(Routed {
            tcp: self.tcp,
            addrs: self.addrs,
            hello: self.hello,
            route,
            routed_by,
            admission: self.admission,
        })
    }
}

/// A connection with its route.
pub struct Routed {
    tcp: TcpStream,
    addrs: ClientAddrs,
    hello: client_hello::Hello,
    route: Arc<RouteRuntime>,
    routed_by: RoutedBy,
    admission: Admission,
}

impl Routed {
    /// The route's allowlist, before the handshake goes on; then registration for
    /// revocation, which re-checks against the configuration current *now*. A refused
    /// client gets an `access_denied` alert.
    pub async fn admit(mut self, state: &Arc<State>) -> Result<Admitted, Box<Refused>> {
        let source = self.admission.source.take();
        let decision = self
            .route
            .route
            .access
            .decide(self.addrs.direct.ip(), self.addrs.remote.ip());
        if !decision.allowed() {
            alert(&mut self.tcp, ACCESS_DENIED, self.admission.deadline).await;
            return Err(self.admission.refuse(
                Refusal::Denied(decision),
                self.addrs,
                Some(&self.route),
            ));
        }
        let registered = revocation::register(
            state,
            (self.admission.listener.clone(), self.route.route.id.clone()),
            self.addrs,
            self.routed_by.clone(),
            source,
        );
        let (kill, registration) = match registered {
            Ok(registered) => registered,
            Err(refusal) => {
                if let Refusal::Revoked(_) = refusal {
                    alert(&mut self.tcp, ACCESS_DENIED, self.admission.deadline).await;
                }
                return Err(self
                    .admission
                    .refuse(refusal, self.addrs, Some(&self.route)));
            }
        };
        record::admitted(
            state,
            &self.admission.listener,
            &self.route.label,
            &decision,
            &self.addrs,
        );
        Ok(Admitted {
            stream: PrefixedStream::new(self.hello.bytes, self.tcp),
            addrs: self.addrs,
            route: self.route,
            listener: self.admission.listener,
            deadline: self.admission.deadline,
            kill,
            registration,
        })
    }
}

/// A connection the route allows, registered for revocation, with the bytes read so
/// far in front of its stream.
pub struct Admitted {
    /// The client stream, replaying what admission read.
    pub stream: PrefixedStream,
    /// The client addresses.
    pub addrs: ClientAddrs,
    /// The route (as loaded at accept).
    pub route: Arc<RouteRuntime>,
    /// The listener it came in on.
    pub listener: Arc<str>,
    /// The admission deadline (the TLS handshake must finish by then).
    pub deadline: Instant,
    /// Trips when a later configuration revokes the connection.
    pub kill: Arc<KillSwitch>,
    /// Its registration for revocation, dropped with the connection.
    pub registration: Registration,
}

/// TLS alert `unrecognized_name` (RFC 6066): no route serves the name.
const UNRECOGNIZED_NAME: u8 = 112;
/// TLS alert `access_denied` (RFC 8446 §6.2): the allowlist refuses the client.
const ACCESS_DENIED: u8 = 49;

/// Send a fatal TLS alert in the clear (nothing but the ClientHello has been
/// exchanged), so a client fails at once with a reason instead of retrying what looks
/// like a dropped connection. No certificate or handshake message is ever sent.
async fn alert(tcp: &mut TcpStream, description: u8, deadline: Instant) {
    use tokio::io::AsyncWriteExt;
    let record = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description];
    let _ = tokio::time::timeout_at(deadline, tcp.write_all(&record)).await;
}

/// Run the whole pipeline for one accepted connection; `open` counts the connections
/// open now, this one included.
pub async fn admit(
    accepted: Accepted,
    state: &Arc<State>,
    open: usize,
) -> Result<Admitted, Box<Refused>> {
    let addressed = accepted
        .within_total(open)?
        .read_proxy_header(state)
        .await?;
    let hello = match addressed.kind() {
        ListenerKind::Tls => addressed.read_client_hello().await?,
        ListenerKind::Connect => addressed.open_tunnel().await?.read_client_hello().await?,
    };
    hello.route().await?.admit(state).await
}
