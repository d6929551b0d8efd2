//! A throwaway certificate authority for demos, tests and benchmarks.
//!
//! apigate needs a whole PKI to be exercised end to end: a serving certificate for each
//! fake replica, a front-proxy CA and client certificate (kube's `--requestheader-*`),
//! and end-user client certificates whose `CN`/`O` become user and groups. [`Ca`] makes
//! all of them in memory with ECDSA P-256 keys (fast to generate, accepted by rustls and
//! by kube-apiserver), so nothing has to be prepared on disk.

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};

use crate::{der, Error};

/// A self-signed CA that issues server and client certs (rcgen, ECDSA P-256). For demo,
/// tests, benchmarks: it exists only in memory and its key is never meant to protect
/// anything real.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A certificate and its private key, both PEM, ready for [`crate::TlsMaterial`], a
/// rustls client config, a kubeconfig or a file on disk.
#[derive(Clone)]
pub struct Issued {
    /// The leaf certificate (PEM, one `CERTIFICATE` block).
    pub cert_pem: String,
    /// Its private key (PEM, PKCS#8 `PRIVATE KEY`).
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn new_key() -> Result<KeyPair, Error> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

impl Ca {
    /// Creates a new CA whose subject is `CN=<common_name>`. Give each CA a distinct name
    /// so certificates are easy to tell apart in logs (identity does not depend on it).
    pub fn new(common_name: &str) -> Result<Ca, Error> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Ca { cert, key })
    }

    /// The CA certificate (PEM): what a client trusts, or what a server is told to verify
    /// client certificates against.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Server cert for DNS names and/or IP literals (strings parsed as IpAddr become IP
    /// SANs). The first name is also the subject CN. Needed because rustls clients check
    /// the SAN against the name (or IP) they dialled.
    pub fn issue_server(&self, names: &[&str]) -> Result<Issued, Error> {
        self.issue_server_until(names, None)
    }

    /// [`Ca::issue_server`] with a chosen `notAfter` (`None`: rcgen's default, far in
    /// the future), for tests of expiry warnings.
    pub fn issue_server_until(
        &self,
        names: &[&str],
        not_after: Option<std::time::SystemTime>,
    ) -> Result<Issued, Error> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        if let Some(at) = not_after {
            let seconds = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
            params.not_after = x509_parser::time::ASN1Time::from_timestamp(seconds)
                .map_err(|e| Error::Encoding(format!("notAfter: {e}")))?
                .to_datetime();
        }
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*name).try_into()?)),
            })
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Client cert with CN and one O per org (clientAuth EKU). kube-apiserver (and the fake
    /// replicas) read the CN as user name and each O as a group; a front-proxy certificate
    /// is just a client certificate whose CN is in `--requestheader-allowed-names`.
    pub fn issue_client(&self, common_name: &str, orgs: &[&str]) -> Result<Issued, Error> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        // rcgen keeps one value per attribute type, so the O list is spliced in afterwards.
        let subject = der::subject_name(common_name, orgs);
        let cert_der = der::replace_subject(cert.der(), &subject, &self.key.serialize_der())?;
        Ok(Issued {
            cert_pem: pem_encode("CERTIFICATE", &cert_der),
            key_pem: key.serialize_pem(),
        })
    }
}

/// PEM-encodes one DER block with 64-column base64 lines (RFC 7468).
fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    use x509_parser::prelude::*;

    fn parse(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn client_cert_carries_cn_and_every_org() {
        let ca = Ca::new("test-ca").unwrap();
        let issued = ca
            .issue_client("alice", &["system:masters", "dev", "ops"])
            .unwrap();
        let der = parse(&issued.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        let orgs: Vec<_> = cert
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(cn, ["alice"]);
        assert_eq!(orgs, ["system:masters", "dev", "ops"]);
        assert_eq!(cert.issuer().to_string(), "CN=test-ca");
    }

    #[test]
    fn rebuilt_client_cert_verifies_against_the_ca() {
        let ca = Ca::new("test-ca").unwrap();
        let other = Ca::new("test-ca").unwrap();
        let issued = ca.issue_client("bob", &["g1", "g2"]).unwrap();
        let leaf = CertificateDer::from(parse(&issued.cert_pem));
        let verifier = |ca: &Ca| {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from(parse(&ca.cert_pem())))
                .unwrap();
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                rustls::crypto::ring::default_provider().into(),
            )
            .build()
            .unwrap()
        };
        let now = rustls_pki_types::UnixTime::now();
        assert!(verifier(&ca).verify_client_cert(&leaf, &[], now).is_ok());
        // Same subject DN, different key: must not verify.
        assert!(verifier(&other)
            .verify_client_cert(&leaf, &[], now)
            .is_err());
    }

    #[test]
    fn server_cert_has_dns_and_ip_sans() {
        let ca = Ca::new("test-ca").unwrap();
        let issued = ca.issue_server(&["localhost", "127.0.0.1", "::1"]).unwrap();
        let der = parse(&issued.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => (*d).to_owned(),
                GeneralName::IPAddress(ip) => format!("ip:{}", ip.len()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["localhost", "ip:4", "ip:16"]);
    }
}
