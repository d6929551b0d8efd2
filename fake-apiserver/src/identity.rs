//! Who sent a request, decided the way kube-apiserver decides it.
//!
//! Order (first success wins, as in kube's union authenticator):
//! 1. **front proxy**: the connection's client certificate chains to the front-proxy CA
//!    and its CN is allowed → user from `X-Remote-User`, groups from every
//!    `X-Remote-Group`, extras from `X-Remote-Extra-<key>`. These headers are trusted in
//!    this case only; everywhere else they are ignored, which is what lets apigate's tests
//!    prove that spoofed headers have no effect. A trusted certificate without
//!    `X-Remote-User` falls through (kube does the same).
//! 2. **client certificate** from the client CA → CN is the user, each O a group.
//! 3. **bearer token** listed in the replica's tokens.
//! 4. otherwise **anonymous**: `system:anonymous` in `system:unauthenticated`.
//!
//! Like kube, presenting bad credentials (an unknown token while tokens are configured, a
//! client certificate without CN, a front-proxy certificate whose CN is not allowed) is a
//! 401, not anonymous.

use http::HeaderMap;

use crate::tls::PeerCert;

const REMOTE_USER: &str = "x-remote-user";
const REMOTE_GROUP: &str = "x-remote-group";
const REMOTE_EXTRA_PREFIX: &str = "x-remote-extra-";

/// How the identity was established; reported in [`crate::AUTHN_HEADER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    FrontProxy,
    ClientCert,
    Token,
    Anonymous,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::FrontProxy => "front-proxy",
            Method::ClientCert => "x509",
            Method::Token => "token",
            Method::Anonymous => "anonymous",
        }
    }
}

/// The authenticated user of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) method: Method,
    pub(crate) user: String,
    pub(crate) groups: Vec<String>,
    /// `(key, value)` pairs from `X-Remote-Extra-*`, in header order.
    pub(crate) extra: Vec<(String, String)>,
}

impl Identity {
    fn anonymous() -> Identity {
        Identity {
            method: Method::Anonymous,
            user: "system:anonymous".to_owned(),
            groups: vec!["system:unauthenticated".to_owned()],
            extra: Vec::new(),
        }
    }

    /// Extras as `key=value;key=value` (one pair per value).
    pub(crate) fn extra_header(&self) -> String {
        self.extra
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Who may authenticate, taken from [`crate::ReplicaOptions`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Authenticator {
    pub(crate) allowed_names: Vec<String>,
    pub(crate) tokens: Vec<(String, String, Vec<String>)>,
}

fn header_str(value: &http::HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// Decodes `%XX` escapes in an extra key, as kube does (keys may carry `/` etc.).
fn unescape(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(v as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_lowercase()
}

impl Authenticator {
    /// Authenticates one request; `Err` carries the 401 message.
    pub(crate) fn authenticate(
        &self,
        peer: &PeerCert,
        headers: &HeaderMap,
    ) -> Result<Identity, String> {
        let mut failure: Option<String> = None;

        if let (true, Some(subject)) = (peer.front_proxy, &peer.subject) {
            let allowed =
                self.allowed_names.is_empty() || self.allowed_names.contains(&subject.common_name);
            if !allowed {
                failure = Some(format!(
                    "front-proxy client certificate CN {:?} is not in the allowed names",
                    subject.common_name
                ));
            } else if let Some(user) = headers
                .get_all(REMOTE_USER)
                .iter()
                .map(header_str)
                .find(|u| !u.is_empty())
            {
                let groups = headers
                    .get_all(REMOTE_GROUP)
                    .iter()
                    .map(header_str)
                    .collect();
                let extra = headers
                    .iter()
                    .filter_map(|(name, value)| {
                        let key = name.as_str().strip_prefix(REMOTE_EXTRA_PREFIX)?;
                        Some((unescape(key), header_str(value)))
                    })
                    .collect();
                return Ok(Identity {
                    method: Method::FrontProxy,
                    user,
                    groups,
                    extra,
                });
            }
        }

        if let (true, Some(subject)) = (peer.client_ca, &peer.subject) {
            if subject.common_name.is_empty() {
                failure.get_or_insert_with(|| "client certificate has no CN".to_owned());
            } else {
                return Ok(Identity {
                    method: Method::ClientCert,
                    user: subject.common_name.clone(),
                    groups: subject.organizations.clone(),
                    extra: Vec::new(),
                });
            }
        }

        if !self.tokens.is_empty() {
            if let Some(token) = bearer(headers) {
                match self.tokens.iter().find(|(t, _, _)| *t == token) {
                    Some((_, user, groups)) => {
                        return Ok(Identity {
                            method: Method::Token,
                            user: user.clone(),
                            groups: groups.clone(),
                            extra: Vec::new(),
                        })
                    }
                    None => {
                        failure.get_or_insert_with(|| "invalid bearer token".to_owned());
                    }
                }
            }
        }

        match failure {
            Some(reason) => Err(reason),
            None => Ok(Identity::anonymous()),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::CertSubject;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn cert(front_proxy: bool, client_ca: bool, cn: &str, orgs: &[&str]) -> PeerCert {
        PeerCert {
            front_proxy,
            client_ca,
            subject: Some(CertSubject {
                common_name: cn.to_owned(),
                organizations: orgs.iter().map(|s| (*s).to_owned()).collect(),
            }),
        }
    }

    const SPOOF: &[(&str, &str)] = &[
        ("X-Remote-User", "admin"),
        ("X-Remote-Group", "system:masters"),
        ("X-Remote-Group", "dev"),
        ("X-Remote-Extra-Scopes", "a"),
        ("X-Remote-Extra-Acme.com%2Fproject", "p1"),
        ("X-Remote-Extra-Scopes", "b"),
    ];

    #[test]
    fn front_proxy_trusts_headers() {
        let auth = Authenticator {
            allowed_names: vec!["front-proxy".into()],
            tokens: vec![],
        };
        let id = auth
            .authenticate(&cert(true, false, "front-proxy", &[]), &headers(SPOOF))
            .unwrap();
        assert_eq!(id.method, Method::FrontProxy);
        assert_eq!(id.user, "admin");
        assert_eq!(id.groups, ["system:masters", "dev"]);
        assert_eq!(id.extra_header(), "scopes=a;scopes=b;acme.com/project=p1");
    }

    #[test]
    fn headers_ignored_without_front_proxy_cert() {
        let auth = Authenticator {
            allowed_names: vec![],
            tokens: vec![("t1".into(), "tok-user".into(), vec!["g".into()])],
        };
        let anon = auth
            .authenticate(&PeerCert::default(), &headers(SPOOF))
            .unwrap();
        assert_eq!(anon, Identity::anonymous());

        let x509 = auth
            .authenticate(&cert(false, true, "alice", &["o1", "o2"]), &headers(SPOOF))
            .unwrap();
        assert_eq!(x509.method, Method::ClientCert);
        assert_eq!((x509.user.as_str(), x509.groups.len()), ("alice", 2));
        assert!(x509.extra.is_empty());

        let mut h = headers(SPOOF);
        h.insert("authorization", "bearer t1".parse().unwrap());
        let tok = auth.authenticate(&PeerCert::default(), &h).unwrap();
        assert_eq!((tok.method, tok.user.as_str()), (Method::Token, "tok-user"));
    }

    #[test]
    fn bad_credentials_are_rejected() {
        let auth = Authenticator {
            allowed_names: vec!["front-proxy".into()],
            tokens: vec![("t1".into(), "u".into(), vec![])],
        };
        let wrong_cn = cert(true, false, "mallory", &[]);
        assert!(auth.authenticate(&wrong_cn, &headers(SPOOF)).is_err());
        let h = headers(&[("authorization", "Bearer nope")]);
        assert!(auth.authenticate(&PeerCert::default(), &h).is_err());
        assert!(auth
            .authenticate(&cert(false, true, "", &["g"]), &HeaderMap::new())
            .is_err());
        // Without configured tokens a bearer token is simply not looked at.
        let open = Authenticator::default();
        assert_eq!(
            open.authenticate(&PeerCert::default(), &h).unwrap(),
            Identity::anonymous()
        );
    }

    #[test]
    fn front_proxy_without_user_header_falls_through() {
        let auth = Authenticator::default();
        let both = cert(true, true, "alice", &["o"]);
        let id = auth.authenticate(&both, &HeaderMap::new()).unwrap();
        assert_eq!((id.method, id.user.as_str()), (Method::ClientCert, "alice"));
    }
}
