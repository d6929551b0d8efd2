//! What the benches share: certificates to build configurations from.

/// A PEM certificate and key for `cn`, signed by `ca` or self-signed as a CA, with the
/// rcgen values to sign others.
pub(crate) fn pem_pair(
    cn: &str,
    ca: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
) -> (String, String, rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut params =
        rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap_or_else(|e| panic!("{e}"));
    let cert = match ca {
        Some((ca_cert, ca_key)) => params.signed_by(&key, ca_cert, ca_key),
        None => {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.self_signed(&key)
        }
    }
    .unwrap_or_else(|e| panic!("{e}"));
    (cert.pem(), key.serialize_pem(), cert, key)
}
