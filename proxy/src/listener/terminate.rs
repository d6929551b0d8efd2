//! Terminate mode: finish the TLS handshake with the route's certificate and hand the
//! connection to the HTTP engine.

use std::sync::Arc;

use apigate_control::snapshot::Mode;
use pingora::apps::ServerApp;
use tokio_rustls::LazyConfigAcceptor;

use super::pipeline::Admitted;
use super::record::{self, Refusal, Refused};
use super::ListenerContext;
use crate::access_log;
use crate::conn::transport::{Conn, Cut, Cuts, HeadLimits};
use crate::conn::{ClientAuth, ConnCtx};
use crate::identity::Identity;

/// Turn a rustls handshake error into a short metric label.
fn failure_reason(e: &std::io::Error) -> &'static str {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "io";
    };
    match tls {
        rustls::Error::InvalidCertificate(_) => "bad_client_certificate",
        rustls::Error::NoCertificatesPresented => "no_client_certificate",
        rustls::Error::AlertReceived(_) => "alert_received",
        rustls::Error::PeerIncompatible(_) => "incompatible",
        rustls::Error::InvalidMessage(_) | rustls::Error::PeerMisbehaved(_) => "protocol",
        _ => "other",
    }
}

/// Handshake, then serve HTTP until the connection ends.
pub async fn serve(admitted: Admitted, ctx: &ListenerContext) -> Result<(), Box<Refused>> {
    // The route as loaded at accept serves the handshake only: each request loads the
    // active configuration, so a long connection holds no old snapshot.
    let Admitted {
        stream,
        addrs,
        route,
        deadline,
        kill,
        registration,
        ..
    } = admitted;
    let Mode::Terminate(terminate) = &route.route.mode else {
        return Ok(());
    };
    let refuse = |refusal: Refusal| {
        Box::new(Refused {
            refusal,
            listener: ctx.name.clone(),
            addrs,
            route: Some(route.label.clone()),
        })
    };
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout_at(deadline, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(_)) => return Err(refuse(Refusal::Handshake("protocol"))),
        Err(_) => return Err(refuse(Refusal::Handshake("timeout"))),
    };
    let handshake = start.into_stream(terminate.server_tls.clone());
    let tls = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(refuse(Refusal::Handshake(failure_reason(&e)))),
        Err(_) => return Err(refuse(Refusal::Handshake("timeout"))),
    };
    let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
    let client = match chain.first() {
        // rustls only returns certificates it verified against the route's client CA.
        Some(leaf) if terminate.client_auth => match Identity::from_certificate(leaf.as_ref()) {
            Ok(identity) => {
                // A later change of the route's client CAs re-verifies this chain.
                registration.verified(chain.iter().map(|c| c.clone().into_owned()).collect());
                ClientAuth::Verified(identity)
            }
            Err(e) => ClientAuth::Invalid(e),
        },
        _ => ClientAuth::Anonymous,
    };
    record::accepted(&ctx.state, &ctx.name);
    let settings = route.upstream.settings;
    let limits = HeadLimits {
        max_bytes: settings.max_request_header_bytes,
        timeout: settings.timeouts.request_header,
    };
    let conn_ctx = Arc::new(ConnCtx::new(
        route.route.id.clone(),
        client,
        (addrs.remote, addrs.direct),
        ctx.name.clone(),
        kill.clone(),
    ));
    let protocol = match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => "HTTP/2",
        _ => "HTTP/1.1",
    };
    let metrics = ctx.state.metrics.clone();
    let label = route.label.clone();
    let (state, conn) = (ctx.state.clone(), conn_ctx.clone());
    let refused: Cuts = Arc::new(move |cut| match cut {
        Cut::Head { reason, status } => {
            metrics
                .head_refusals
                .with_label_values(&[&*label, reason])
                .inc();
            // A refused head is a request apigate answered (or closed): an error, logged
            // as the access log's settings say errors are.
            let settings = state.load().snapshot.gateway.access_log.clone();
            if let Some(settings) = settings.filter(|s| access_log::wanted(s, status, true)) {
                let entry = access_log::refused_head(
                    settings,
                    &conn,
                    label.clone(),
                    protocol,
                    (reason, status),
                );
                state.access_log.submit(entry);
            }
        }
        Cut::KeepaliveTimeout => {
            tracing::debug!(route = %label, peer = %addrs.remote, "HTTP/2 client answered no PING: closed");
            metrics
                .keepalive_timeouts
                .with_label_values(&[&*label])
                .inc()
        }
        Cut::Http2(abuse) => {
            tracing::info!(route = %label, peer = %addrs.remote, reason = abuse.label(), "HTTP/2 client closed with ENHANCE_YOUR_CALM");
            metrics
                .http2_abuse
                .with_label_values(&[&*label, abuse.label()])
                .inc()
        }
    });
    let http2 = ctx.state.load().snapshot.gateway.http2;
    let conn = match Conn::new(tls, conn_ctx, (limits, &http2), kill, registration, refused) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %e, "could not prepare connection");
            return Ok(());
        }
    };
    drop(route);
    // pingora drives HTTP/1.1 keep-alive or HTTP/2 streams until the connection ends.
    let _ = ctx.engine.process_new(Box::new(conn), &ctx.shutdown).await;
    Ok(())
}
