//! Who a client is, as kube-apiserver's authenticating-proxy mode will be told.
//!
//! kube-apiserver trusts `X-Remote-User`, `X-Remote-Group` and `X-Remote-Extra-*` from a
//! connection that presents the front-proxy client certificate. So apigate removes every
//! such header a client sends, whoever the client is (see [`crate::http::headers`]), and
//! sets them only from a client certificate it verified itself, read exactly as
//! kube-apiserver's x509 authenticator reads it. (Gardener's gateway strips only User
//! and Group, which leaves `X-Remote-Extra-*` injectable; apigate strips the whole
//! family.)

/// Header carrying the authenticated user name.
pub const USER_HEADER: &str = "X-Remote-User";
/// Header carrying one group each; repeated.
pub const GROUP_HEADER: &str = "X-Remote-Group";

/// Whether a header name belongs to the identity family apigate controls.
pub fn is_identity_header(name: &str) -> bool {
    let matches = |prefix: &str| {
        name.len() >= prefix.len()
            && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    name.eq_ignore_ascii_case("x-remote-user")
        || name.eq_ignore_ascii_case("x-remote-group")
        || name.eq_ignore_ascii_case("x-remote-uid")
        || matches("x-remote-extra-")
}

/// A stable name for a bearer-token client, since apigate cannot see who the token
/// belongs to: `token:` and the first 64 bits of the token's SHA-256, in hex. The token
/// itself never leaves the request. `None` when the header holds no token.
pub fn token_id(authorization: &[u8]) -> Option<String> {
    let token = match authorization.split_first_chunk::<7>() {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest,
        _ => authorization,
    };
    let token = token.trim_ascii();
    if token.is_empty() {
        return None;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, token);
    let mut id = String::with_capacity(6 + 16);
    id.push_str("token:");
    for byte in digest.as_ref().iter().take(8) {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    Some(id)
}

/// Lowercase hex digits (token ids, audit IDs).
pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

/// A user authenticated by a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate's Common Name.
    pub user: String,
    /// One per Organization of the certificate, in order.
    pub groups: Vec<String>,
}

/// Why a verified certificate cannot be turned into an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// kube-apiserver rejects certificates without a CN; so does apigate, with a 400.
    #[error("client certificate has an empty Common Name")]
    EmptyCommonName,
    /// The certificate did not parse (cannot happen after rustls verified it, but the
    /// data is from the network, so it is handled).
    #[error("client certificate cannot be parsed: {0}")]
    Unparseable(String),
    /// A name is not representable as an HTTP header value.
    #[error("client certificate subject contains characters not allowed in a header")]
    InvalidCharacters,
}

impl Identity {
    /// CN → user, each O → group, like kube-apiserver's x509 authenticator. With several
    /// CNs the *last* one wins: Go's crypto/x509 (and so kube-apiserver) keeps the last
    /// value of a repeated attribute, and the two must never disagree on who a client is.
    pub fn from_certificate(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
        let subject = cert.subject();
        let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
            attr.as_str()
                .map(str::to_string)
                .map_err(|_| IdentityError::InvalidCharacters)
        };
        let user = match subject.iter_common_name().last() {
            Some(cn) => text(cn)?,
            None => String::new(),
        };
        if user.is_empty() {
            return Err(IdentityError::EmptyCommonName);
        }
        let groups = subject
            .iter_organization()
            .map(text)
            .collect::<Result<Vec<_>, _>>()?;
        let valid = |s: &str| http::HeaderValue::from_str(s).is_ok();
        if !valid(&user) || !groups.iter().all(|g| valid(g)) {
            return Err(IdentityError::InvalidCharacters);
        }
        Ok(Identity { user, groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: Option<&str>, orgs: &[&str]) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        let ca = apigate_fake_apiserver::pki::Ca::new("test-ca").unwrap();
        let pem = match cn {
            Some(cn) => ca.issue_client(cn, orgs).unwrap().cert_pem,
            None => {
                let key = rcgen::KeyPair::generate().unwrap();
                let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                params.distinguished_name = rcgen::DistinguishedName::new();
                params.self_signed(&key).unwrap().pem()
            }
        };
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn common_name_and_organizations_become_user_and_groups() {
        let id = Identity::from_certificate(&cert(Some("alice"), &["devs", "ops"])).unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, vec!["devs", "ops"]);
    }

    #[test]
    fn empty_or_missing_common_name_is_rejected() {
        assert_eq!(
            Identity::from_certificate(&cert(None, &[])),
            Err(IdentityError::EmptyCommonName)
        );
        assert_eq!(
            Identity::from_certificate(&cert(Some(""), &[])),
            Err(IdentityError::EmptyCommonName)
        );
    }

    #[test]
    fn the_last_common_name_wins_like_in_go() {
        use rustls::pki_types::pem::PemObject;
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CommonName, "first");
        params.distinguished_name = name;
        // rcgen keeps one value per attribute type, so the second CN goes in as a
        // custom attribute with the CN's OID (2.5.4.3).
        params
            .distinguished_name
            .push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 3]), "second");
        let pem = params.self_signed(&key).unwrap().pem();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let cns: Vec<&str> = parsed
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            cns,
            vec!["first", "second"],
            "the test certificate has two CNs"
        );
        let id = Identity::from_certificate(der.as_ref()).unwrap();
        assert_eq!(id.user, "second");
    }

    #[test]
    fn a_token_is_named_by_its_hash_never_by_itself() {
        let id = token_id(b"Bearer secret-token").unwrap();
        assert_eq!(id.len(), "token:".len() + 16);
        assert!(!id.contains("secret"));
        // The scheme's case and surrounding spaces do not matter; the token does.
        assert_eq!(
            token_id(b"bearer  secret-token ").as_deref(),
            Some(id.as_str())
        );
        assert_ne!(token_id(b"Bearer other").as_deref(), Some(id.as_str()));
        // The first 8 bytes of SHA-256("secret-token"), as `sha256sum` prints them.
        assert_eq!(id, "token:930bbdc51b6aed5c");
        assert_eq!(token_id(b"Bearer "), None);
    }
}
