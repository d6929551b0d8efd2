//! TLS termination for a replica and what the handshake tells us about the client.
//!
//! kube-apiserver asks for, but never requires, a client certificate, and accepts one from
//! either of two CAs: the front-proxy CA (whose holders may assert `X-Remote-*` headers)
//! and the end-user client CA. rustls verifies the chain during the handshake against a
//! root store holding both; afterwards [`ServerTls::peer_cert`] re-verifies the leaf
//! against each CA separately, so the decision "which CA issued it" is cryptographic and
//! works even when two CAs share a subject name.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::TlsAcceptor;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Error, ReplicaOptions, TlsMaterial};

/// The subject of a verified client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CertSubject {
    /// First `CN` (empty when there is none).
    pub(crate) common_name: String,
    /// Every `O`, in certificate order.
    pub(crate) organizations: Vec<String>,
}

/// What one connection's client certificate proves; fixed for the connection's lifetime.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerCert {
    /// The leaf chains to the front-proxy CA.
    pub(crate) front_proxy: bool,
    /// The leaf chains to an end-user client CA.
    pub(crate) client_ca: bool,
    /// Subject of the leaf, present when either flag is set.
    pub(crate) subject: Option<CertSubject>,
}

/// A ready acceptor plus the per-CA verifiers used to classify client certificates.
pub(crate) struct ServerTls {
    pub(crate) acceptor: TlsAcceptor,
    front_proxy: Option<Arc<dyn ClientCertVerifier>>,
    client_ca: Option<Arc<dyn ClientCertVerifier>>,
}

fn certs(what: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what,
            reason: "no CERTIFICATE block found".to_owned(),
        });
    }
    Ok(certs)
}

fn add_all(store: &mut RootCertStore, what: &'static str, pem: &str) -> Result<(), Error> {
    for cert in certs(what, pem)? {
        store.add(cert).map_err(|e| Error::Pem {
            what,
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(())
}

fn verifier(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, Error> {
    if roots.is_empty() {
        return Ok(None);
    }
    let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    Ok(Some(v))
}

impl ServerTls {
    /// Builds the rustls server config (ring provider, ALPN h2 + http/1.1, optional client
    /// certificates from the front-proxy and client CAs).
    pub(crate) fn new(tls: &TlsMaterial, opts: &ReplicaOptions) -> Result<ServerTls, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certs("cert_chain_pem", &tls.cert_chain_pem)?;
        let key =
            PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).map_err(|e| Error::Pem {
                what: "key_pem",
                reason: e.to_string(),
            })?;

        let mut front = RootCertStore::empty();
        if let Some(pem) = &opts.front_proxy_ca_pem {
            add_all(&mut front, "front_proxy_ca_pem", pem)?;
        }
        let mut client = RootCertStore::empty();
        if let Some(pem) = &opts.client_ca_pem {
            add_all(&mut client, "client_ca_pem", pem)?;
        }
        if let Some(pem) = &tls.client_ca_pem {
            add_all(&mut client, "tls.client_ca_pem", pem)?;
        }
        let mut both = RootCertStore::empty();
        both.roots.extend(front.roots.iter().cloned());
        both.roots.extend(client.roots.iter().cloned());

        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let mut config = match verifier(both, &provider)? {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        }
        .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            front_proxy: verifier(front, &provider)?,
            client_ca: verifier(client, &provider)?,
        })
    }

    /// Classifies the client certificate of an established connection.
    pub(crate) fn peer_cert(&self, conn: &rustls::ServerConnection) -> PeerCert {
        let Some((leaf, intermediates)) = conn.peer_certificates().and_then(|c| c.split_first())
        else {
            return PeerCert::default();
        };
        let now = UnixTime::now();
        let verified = |v: &Option<Arc<dyn ClientCertVerifier>>| {
            v.as_ref()
                .is_some_and(|v| v.verify_client_cert(leaf, intermediates, now).is_ok())
        };
        let front_proxy = verified(&self.front_proxy);
        let client_ca = verified(&self.client_ca);
        let subject = (front_proxy || client_ca).then(|| subject(leaf));
        PeerCert {
            front_proxy,
            client_ca,
            subject,
        }
    }
}

/// Reads CN and O from a certificate that rustls already parsed and verified; attributes
/// that are not strings are skipped rather than trusted.
fn subject(leaf: &CertificateDer<'_>) -> CertSubject {
    match X509Certificate::from_der(leaf.as_ref()) {
        Ok((_, cert)) => CertSubject {
            common_name: cert
                .subject()
                .iter_common_name()
                .find_map(|a| a.as_str().ok())
                .unwrap_or_default()
                .to_owned(),
            organizations: cert
                .subject()
                .iter_organization()
                .filter_map(|a| a.as_str().ok())
                .map(str::to_owned)
                .collect(),
        },
        Err(e) => {
            tracing::debug!(error = %e, "verified client certificate did not parse");
            CertSubject::default()
        }
    }
}
