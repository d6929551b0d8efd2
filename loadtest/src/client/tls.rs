//! TLS client configuration: trust a given CA (never the system store, so a benchmark
//! cannot silently talk to the wrong server), optionally present a client certificate,
//! and offer the ALPN protocol matching the chosen HTTP version.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::scenario::Protocol;

/// TLS settings of a target, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) that sign the target's serving certificate.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain (mTLS).
    pub cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key: Option<PathBuf>,
    /// Server name to send as SNI and verify the certificate against, instead of the URL
    /// host (e.g. `api.shoot.example` while connecting to 127.0.0.1).
    pub sni: Option<String>,
}

/// Why a TLS configuration could not be built; always names the file or flag.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// An https target without `--ca`.
    #[error("https target needs --ca FILE (the CA that signed the target's certificate)")]
    MissingCa,
    /// `--cert` without `--key` or the other way round.
    #[error("--cert and --key must be given together")]
    HalfClientCert,
    /// The SNI name is not a valid DNS name or IP address.
    #[error("--sni {0:?} is not a valid DNS name or IP address")]
    BadServerName(String),
    /// rustls rejected the configuration (e.g. key does not match certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Builds the rustls client configuration for `protocol` (ALPN `h2` or `http/1.1`).
pub fn client_config(opts: &TlsOptions, protocol: Protocol) -> Result<Arc<ClientConfig>, TlsError> {
    let ca = opts.ca.as_ref().ok_or(TlsError::MissingCa)?;
    let mut roots = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| file_err(ca, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(ca, e))?;
    if certs.is_empty() {
        return Err(file_err(ca, "no PEM certificate found"));
    }
    for c in certs {
        roots.add(c).map_err(|e| file_err(ca, e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| file_err(cert, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_err(cert, e))?;
            if chain.is_empty() {
                return Err(file_err(cert, "no PEM certificate found"));
            }
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
            builder.with_client_auth_cert(chain, key_der)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::HalfClientCert),
    };
    config.alpn_protocols = match protocol {
        Protocol::H2 => vec![b"h2".to_vec()],
        Protocol::H1 => vec![b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

/// The name to verify the server certificate against: `--sni` or the URL host.
pub fn server_name(opts: &TlsOptions, url_host: &str) -> Result<ServerName<'static>, TlsError> {
    let name = opts.sni.as_deref().unwrap_or(url_host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::BadServerName(name.to_owned()))
}
