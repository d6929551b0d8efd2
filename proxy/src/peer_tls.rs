//! A route's upstream TLS material in the HTTP engine's (pingora's) types, built once
//! per route and snapshot rather than per request.
//!
//! The only module besides [`crate::http`] that knows the engine's TLS types; the rest
//! of the proxy uses the rustls material compiled into the snapshot.

use std::sync::Arc;

use apigate_control::snapshot::UpstreamTls;
use pingora::utils::tls::{CertKey, WrappedX509};

/// Upstream trust and the front-proxy identity of a terminating route.
pub struct PeerTls {
    /// Trust anchors for the replicas' serving certificates.
    pub ca: Arc<[WrappedX509]>,
    /// Front-proxy client certificate.
    pub front_proxy: Option<Arc<CertKey>>,
}

impl PeerTls {
    /// Convert compiled material. Compile has parsed every certificate and checked the
    /// key, so pingora's constructors (which panic on bad input) only see good material.
    pub fn new(upstream: &UpstreamTls) -> Self {
        let ca: Vec<WrappedX509> = upstream
            .ca
            .iter()
            .map(|der| WrappedX509::new(der.to_vec(), pingora::utils::tls::parse_x509))
            .collect();
        let front_proxy = upstream.front_proxy.as_ref().map(|id| {
            Arc::new(CertKey::new(
                id.chain.iter().map(|c| c.to_vec()).collect(),
                id.key_der.clone(),
            ))
        });
        PeerTls {
            ca: Arc::from(ca.into_boxed_slice()),
            front_proxy,
        }
    }
}
