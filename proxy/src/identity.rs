//! Identity headers for kube-apiserver's authenticating-proxy mode.
//!
//! kube-apiserver trusts `X-Remote-User`, `X-Remote-Group` and `X-Remote-Extra-*` from a
//! connection that presents the front-proxy client certificate. So apigate removes every
//! such header a client sends, whoever the client is, and sets them only from a client
//! certificate it verified itself. (Gardener's gateway strips only User and Group, which
//! leaves `X-Remote-Extra-*` injectable; apigate strips the whole family.)

use pingora::http::RequestHeader;

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

/// Whether `request` carries any identity header (for assertions after [`strip`]).
pub fn has_identity_headers(request: &RequestHeader) -> bool {
    request
        .headers
        .keys()
        .any(|n| is_identity_header(n.as_str()))
}

/// Remove every identity header from `request`. Returns how many were removed (for logs).
pub fn strip(request: &mut RequestHeader) -> usize {
    let names: Vec<http::HeaderName> = request
        .headers
        .keys()
        .filter(|name| is_identity_header(name.as_str()))
        .cloned()
        .collect();
    let mut removed = 0;
    for name in names {
        removed += request.headers.get_all(&name).iter().count();
        request.remove_header(&name);
    }
    debug_assert!(!request
        .headers
        .keys()
        .any(|n| is_identity_header(n.as_str())));
    removed
}

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
    /// CN → user, each O → group, like kube-apiserver's x509 authenticator.
    pub fn from_certificate(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
        let subject = cert.subject();
        let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
            attr.as_str()
                .map(str::to_string)
                .map_err(|_| IdentityError::InvalidCharacters)
        };
        let user = match subject.iter_common_name().next() {
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

    /// Set the identity headers on an upstream request (after [`strip`]).
    pub fn apply(&self, request: &mut RequestHeader) -> pingora::Result<()> {
        request.insert_header(USER_HEADER, self.user.as_str())?;
        for group in &self.groups {
            request.append_header(GROUP_HEADER, group.as_str())?;
        }
        Ok(())
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
    fn strip_removes_the_whole_identity_family_in_any_case() {
        let mut req = RequestHeader::build("GET", b"/api", None).unwrap();
        for (name, value) in [
            ("X-Remote-User", "admin"),
            ("x-remote-group", "system:masters"),
            ("X-REMOTE-GROUP", "second"),
            ("X-Remote-Uid", "0"),
            ("X-Remote-Extra-Scopes", "all"),
            ("x-remote-extra-foo", "bar"),
            ("Authorization", "Bearer t"),
            ("Impersonate-User", "bob"),
            ("X-Remote-Userx", "kept: not an identity header"),
        ] {
            req.append_header(name.to_string(), value).unwrap();
        }
        assert_eq!(strip(&mut req), 6);
        let left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(req.headers.get("authorization").is_some());
        assert!(req.headers.get("impersonate-user").is_some());
    }

    #[test]
    fn apply_sets_one_group_header_per_group() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        Identity {
            user: "alice".into(),
            groups: vec!["a".into(), "b".into()],
        }
        .apply(&mut req)
        .unwrap();
        let groups: Vec<_> = req.headers.get_all("x-remote-group").iter().collect();
        assert_eq!(groups.len(), 2);
        assert_eq!(req.headers.get("x-remote-user").unwrap(), "alice");
    }
}
