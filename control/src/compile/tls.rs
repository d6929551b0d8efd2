//! TLS material: parse and check PEM, build rustls server configs.
//!
//! Everything is checked here, at the compile boundary, so the proxy never meets a
//! certificate it cannot parse or a key that does not match its certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::error::{Errors, ObjectRef, Problem};
use crate::snapshot::{ClientIdentity, ClientVerifier, UpstreamClients};

/// ALPN protocols offered to clients, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The crypto provider apigate uses everywhere: ring, explicitly, so no process-wide
/// default (or a second provider pulled in by a dependency) can change it. One for the
/// process: every route's TLS configs share it (a provider per config was about 1 KiB
/// per route).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::LazyLock<Arc<CryptoProvider>> =
        std::sync::LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
}

/// Certificates as DER, with the earliest `notAfter` among them (a chain stops working
/// when its first certificate expires) and the latest (a CA bundle keeps working until
/// its last CA expires; during a rotation it holds the old CA and the new).
pub(super) struct Certificates {
    pub(super) ders: Vec<CertificateDer<'static>>,
    pub(super) not_after: SystemTime,
    pub(super) last_not_after: SystemTime,
}

/// A certificate's `notAfter` (one before 1970 reads as 1970: long expired either way).
fn not_after(cert: &x509_parser::certificate::X509Certificate<'_>) -> SystemTime {
    let seconds = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    UNIX_EPOCH
        .checked_add(Duration::from_secs(seconds))
        .unwrap_or(UNIX_EPOCH)
}

fn certificates(
    pem: &[u8],
    object_ref: &ObjectRef,
    field: &str,
    errors: &mut Errors,
) -> Option<Certificates> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match certs {
        Ok(certs) if certs.is_empty() => {
            errors.push(
                object_ref,
                field,
                Problem::Tls("no PEM CERTIFICATE block found".into()),
            );
            None
        }
        Ok(certs) => {
            let mut earliest: Option<SystemTime> = None;
            let mut latest = UNIX_EPOCH;
            for (i, cert) in certs.iter().enumerate() {
                match x509_parser::parse_x509_certificate(cert.as_ref()) {
                    Ok((_, parsed)) => {
                        let this = not_after(&parsed);
                        earliest = Some(earliest.map_or(this, |e| e.min(this)));
                        latest = latest.max(this);
                    }
                    Err(e) => {
                        errors.push(
                            object_ref,
                            field,
                            Problem::Tls(format!("certificate #{i} is not valid X.509: {e}")),
                        );
                        return None;
                    }
                }
            }
            Some(Certificates {
                ders: certs,
                not_after: earliest.unwrap_or(UNIX_EPOCH),
                last_not_after: latest,
            })
        }
        Err(e) => {
            errors.push(
                object_ref,
                field,
                Problem::Tls(format!("malformed PEM: {e}")),
            );
            None
        }
    }
}

fn private_key(
    pem: &[u8],
    object_ref: &ObjectRef,
    field: &str,
    errors: &mut Errors,
) -> Option<PrivateKeyDer<'static>> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Some(key),
        Err(e) => {
            errors.push(
                object_ref,
                field,
                Problem::Tls(format!(
                    "no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"
                )),
            );
            None
        }
    }
}

/// A CA bundle as DER certificates, checked to be usable as trust anchors.
pub(super) fn ca_bundle(
    pem: &[u8],
    object_ref: &ObjectRef,
    field: &str,
    errors: &mut Errors,
) -> Option<Certificates> {
    let certs = certificates(pem, object_ref, field, errors)?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.ders.iter().enumerate() {
        if let Err(e) = roots.add(cert.clone()) {
            errors.push(
                object_ref,
                field,
                Problem::Tls(format!("certificate #{i} cannot be a trust anchor: {e}")),
            );
            return None;
        }
    }
    Some(certs)
}

/// A route's server side: its config, the client certificate verifier, and when its
/// certificate and client CAs expire.
pub(super) struct ServerSide {
    pub(super) config: Arc<rustls::ServerConfig>,
    pub(super) client_verifier: Option<ClientVerifier>,
    pub(super) serving_not_after: SystemTime,
    pub(super) client_ca_not_after: Option<SystemTime>,
}

/// The server config for a route: its certificate, ALPN h2 + http/1.1, and, when a
/// client CA is given, a verifier that *requests* client certificates and verifies the
/// ones presented (token and anonymous clients must still get through); and that
/// verifier.
pub(super) fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> Option<ServerSide> {
    let chain = certificates(cert_pem, object_ref, "spec.tls.certFile", errors);
    let key = private_key(key_pem, object_ref, "spec.tls.keyFile", errors);
    let client_roots =
        client_ca_pem.map(|pem| ca_bundle(pem, object_ref, "spec.tls.clientCAFile", errors));
    let (chain, key) = (chain?, key?);
    let serving_not_after = chain.not_after;
    let mut client_ca_not_after = None;
    let builder = match rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(e) => {
            errors.push(object_ref, "spec.tls", Problem::Tls(e.to_string()));
            return None;
        }
    };
    let mut client_verifier = None;
    let builder = match client_roots {
        Some(roots) => {
            let roots = roots?;
            client_ca_not_after = Some(roots.last_not_after);
            let mut store = RootCertStore::empty();
            for cert in roots.ders {
                // Already checked by ca_bundle.
                let _ = store.add(cert);
            }
            match WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
                .allow_unauthenticated()
                .build()
            {
                Ok(verifier) => {
                    client_verifier = Some(verifier.clone());
                    builder.with_client_cert_verifier(verifier)
                }
                Err(e) => {
                    errors.push(
                        object_ref,
                        "spec.tls.clientCAFile",
                        Problem::Tls(format!("cannot verify client certificates with it: {e}")),
                    );
                    return None;
                }
            }
        }
        None => builder.with_no_client_auth(),
    };
    match builder.with_single_cert(chain.ders, key) {
        Ok(mut config) => {
            config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
            // The server's cipher-suite order, not the client's: the strongest suite a
            // client supports wins (rustls' order puts AEADs with forward secrecy first).
            config.ignore_client_order = true;
            config.session_storage = super::sessions::server_store();
            Some(ServerSide {
                config: Arc::new(config),
                client_verifier,
                serving_not_after,
                client_ca_not_after,
            })
        }
        Err(e) => {
            errors.push(
                object_ref,
                "spec.tls.keyFile",
                Problem::Tls(format!("key does not fit certFile: {e}")),
            );
            None
        }
    }
}

/// The front-proxy client identity, checked by building a client config with it
/// (rustls verifies that the key matches the leaf).
pub(super) fn client_identity(
    cert_pem: &[u8],
    key_pem: &[u8],
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> Option<ClientIdentity> {
    let chain = certificates(
        cert_pem,
        object_ref,
        "spec.upstream.frontProxyCertFile",
        errors,
    );
    let key = private_key(
        key_pem,
        object_ref,
        "spec.upstream.frontProxyKeyFile",
        errors,
    );
    let (
        Certificates {
            ders: chain,
            not_after,
            ..
        },
        key,
    ) = (chain?, key?);
    let key_der = key.secret_der().to_vec();
    let check = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(RootCertStore::empty())
                .with_client_auth_cert(chain.clone(), key)
        });
    match check {
        Ok(Ok(_)) => Some(ClientIdentity {
            chain,
            key_der,
            not_after,
        }),
        Ok(Err(e)) | Err(e) => {
            errors.push(
                object_ref,
                "spec.upstream.frontProxyKeyFile",
                Problem::Tls(format!("key does not fit frontProxyCertFile: {e}")),
            );
            None
        }
    }
}

/// The client configs apigate uses for the upstream connections it makes itself
/// (upgrades, ALPN `http/1.1`): one without and one with the front-proxy certificate.
pub(super) fn upstream_clients(
    ca: &[CertificateDer<'static>],
    front_proxy: Option<&ClientIdentity>,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> Option<UpstreamClients> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        // Already checked by ca_bundle.
        let _ = roots.add(cert.clone());
    }
    let builder = || {
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots.clone()))
    };
    let finish = |mut config: rustls::ClientConfig| {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = super::sessions::upstream_resumption();
        Arc::new(config)
    };
    let anonymous = match builder() {
        Ok(b) => finish(b.with_no_client_auth()),
        Err(e) => {
            errors.push(
                object_ref,
                "spec.upstream.caFile",
                Problem::Tls(e.to_string()),
            );
            return None;
        }
    };
    let front_proxy = match front_proxy {
        None => None,
        Some(identity) => {
            let built = PrivateKeyDer::try_from(identity.key_der.clone())
                .map_err(|e| e.to_string())
                .and_then(|key| {
                    builder()
                        .map_err(|e| e.to_string())?
                        .with_client_auth_cert(identity.chain.clone(), key)
                        .map_err(|e| e.to_string())
                });
            match built {
                Ok(config) => Some(finish(config)),
                Err(e) => {
                    errors.push(
                        object_ref,
                        "spec.upstream.frontProxyKeyFile",
                        Problem::Tls(format!("cannot build the upstream client identity: {e}")),
                    );
                    return None;
                }
            }
        }
    };
    Some(UpstreamClients {
        anonymous,
        front_proxy,
    })
}
