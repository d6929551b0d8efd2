//! The one error type of this crate.
//!
//! Everything that can fail while building PKI material, TLS configuration or a listening
//! replica ends up here, so callers (the `demo` command, tests, the load generator) match
//! on a single enum. Request-time problems never become an [`Error`]: they are answered as
//! kube `Status` responses and logged.

use std::net::SocketAddr;

/// Why creating certificates, TLS configuration or a replica failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// rcgen could not build or sign a certificate (bad name, unsupported parameter).
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),

    /// A certificate was assembled by hand (several organizations) and its DER was not
    /// what we expected, or re-signing it failed.
    #[error("certificate encoding failed: {0}")]
    Encoding(String),

    /// PEM input (certificate chain, key, CA bundle) could not be decoded.
    #[error("invalid PEM for {what}: {reason}")]
    Pem {
        /// Which input was being decoded, e.g. "front_proxy_ca_pem".
        what: &'static str,
        /// What was wrong with it.
        reason: String,
    },

    /// rustls rejected the server certificate/key or another setting.
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),

    /// The client-certificate verifier could not be built from the configured CAs.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),

    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address that was asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// Another socket operation failed (e.g. reading the bound address).
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// A service-time specification (see [`crate::ServiceTime`]) could not be parsed.
    #[error("invalid service time {input:?}: {reason} (expected e.g. \"0\", \"5ms\", \"fixed:5ms\", \"uniform:1ms..9ms\", \"exp:5ms\")")]
    ServiceTime {
        /// The text that was given.
        input: String,
        /// What was wrong with it.
        reason: String,
    },
}
