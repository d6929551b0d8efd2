//! What a replica is told at start: its name, TLS material, how slow and how big its
//! answers are, and whom it trusts (the knobs of kube-apiserver's authentication flags).

use std::fmt;
use std::time::Duration;

use crate::pki::Issued;
use crate::ServiceTime;

/// Serving certificate and key of a TLS replica, plus an optional extra client CA.
///
/// Client certificates are optional (requested, never required); when presented they are
/// verified against `client_ca_pem` and the CAs in [`ReplicaOptions`]. A certificate that
/// chains to `client_ca_pem` authenticates like one from [`ReplicaOptions::client_ca_pem`]
/// (CN → user, O → groups).
#[derive(Clone, Default)]
pub struct TlsMaterial {
    /// Leaf certificate first, then any intermediates (PEM).
    pub cert_chain_pem: String,
    /// The leaf's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
    /// Extra CA bundle for end-user client certificates (PEM), merged with
    /// [`ReplicaOptions::client_ca_pem`].
    pub client_ca_pem: Option<String>,
}

impl TlsMaterial {
    /// Serving material from a certificate issued by [`crate::pki::Ca::issue_server`], the
    /// common case in tests and the demo.
    pub fn from_issued(issued: &Issued) -> TlsMaterial {
        TlsMaterial {
            cert_chain_pem: issued.cert_pem.clone(),
            key_pem: issued.key_pem.clone(),
            client_ca_pem: None,
        }
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("cert_chain_pem", &self.cert_chain_pem)
            .field("key_pem", &"<redacted>")
            .field("client_ca_pem", &self.client_ca_pem)
            .finish()
    }
}

/// Everything that shapes one fake replica. `Default` gives a fast plaintext replica
/// named `replica-0` that answers instantly with small lists.
#[derive(Clone)]
pub struct ReplicaOptions {
    /// Replica name, returned in [`crate::REPLICA_HEADER`] so tests and load reports can
    /// see which backend answered.
    pub id: String,
    /// `None` serves plaintext HTTP/1.1 and h2c (prior knowledge) on the same port.
    pub tls: Option<TlsMaterial>,
    /// Delay before answering every non-watch request (health and metrics excluded).
    pub service_time: ServiceTime,
    /// Items in a LIST response.
    pub list_size: usize,
    /// Padding bytes per object (an annotation of this many characters), to control
    /// response sizes.
    pub object_bytes: usize,
    /// A watch sends one event per interval.
    pub watch_event_interval: Duration,
    /// CA of front-proxy client certs (kube's `--requestheader-client-ca-file`).
    pub front_proxy_ca_pem: Option<String>,
    /// CNs trusted to assert `X-Remote-*` headers (kube's `--requestheader-allowed-names`;
    /// empty = any cert from the front-proxy CA).
    pub front_proxy_allowed_names: Vec<String>,
    /// CA for end-user client certs (kube's `--client-ca-file`): CN → user, O → groups.
    pub client_ca_pem: Option<String>,
    /// Static bearer tokens `(token, user, groups)` (kube's `--token-auth-file`).
    pub tokens: Vec<(String, String, Vec<String>)>,
    /// kube's `--anonymous-auth`: when false, unauthenticated requests (health checks
    /// included) get 401.
    pub anonymous_auth: bool,
    /// API groups served by an unavailable aggregated API: every request under
    /// `/apis/<group>/` gets kube-aggregator's 503.
    pub unavailable_groups: Vec<String>,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            id: "replica-0".to_owned(),
            tls: None,
            service_time: ServiceTime::Fixed(Duration::ZERO),
            list_size: 10,
            object_bytes: 256,
            watch_event_interval: Duration::from_secs(1),
            front_proxy_ca_pem: None,
            front_proxy_allowed_names: Vec::new(),
            client_ca_pem: None,
            tokens: Vec::new(),
            anonymous_auth: true,
            unavailable_groups: Vec::new(),
        }
    }
}

impl fmt::Debug for ReplicaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaOptions")
            .field("id", &self.id)
            .field("tls", &self.tls)
            .field("service_time", &self.service_time)
            .field("list_size", &self.list_size)
            .field("object_bytes", &self.object_bytes)
            .field("watch_event_interval", &self.watch_event_interval)
            .field("front_proxy_ca_pem", &self.front_proxy_ca_pem.is_some())
            .field("front_proxy_allowed_names", &self.front_proxy_allowed_names)
            .field("client_ca_pem", &self.client_ca_pem.is_some())
            .field("tokens", &self.tokens.len())
            .field("anonymous_auth", &self.anonymous_auth)
            .field("unavailable_groups", &self.unavailable_groups)
            .finish()
    }
}
