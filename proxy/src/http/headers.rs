//! The request headers apigate owns: identity and forwarding.
//!
//! kube-apiserver believes `X-Remote-*` from a connection with the front-proxy
//! certificate, and its audit log takes the client's address from `X-Forwarded-For`,
//! then `X-Real-Ip`. So whatever a client sends in those headers (and in `Forwarded`)
//! is removed from every request, and apigate sets them itself: identity only from a
//! verified client certificate, `X-Forwarded-For` always to the client's address.

use std::net::IpAddr;

use pingora::http::RequestHeader;

use crate::identity::{is_identity_header, Identity, GROUP_HEADER, USER_HEADER};

/// Forwarding headers a client must not plant (kube-apiserver's audit `sourceIPs`
/// reads the first two).
const FORWARDING: [&str; 3] = ["x-forwarded-for", "x-real-ip", "forwarded"];

/// Whether a header name is one apigate owns.
fn owned(name: &str) -> bool {
    is_identity_header(name) || FORWARDING.iter().any(|f| name.eq_ignore_ascii_case(f))
}

/// Whether `request` carries any header apigate owns (for assertions after
/// [`sanitize`]).
pub fn has_owned_headers(request: &RequestHeader) -> bool {
    request.headers.keys().any(|n| owned(n.as_str()))
}

/// Remove every identity and forwarding header from a client's request. Returns how
/// many values were removed.
pub fn sanitize(request: &mut RequestHeader) -> usize {
    if !has_owned_headers(request) {
        return 0;
    }
    let names: Vec<http::HeaderName> = request
        .headers
        .keys()
        .filter(|name| owned(name.as_str()))
        .cloned()
        .collect();
    let mut removed = 0;
    for name in names {
        removed += request.headers.get_all(&name).iter().count();
        request.remove_header(&name);
    }
    removed
}

/// Set the headers apigate owns on an upstream request (after [`sanitize`]).
pub fn set_upstream(
    request: &mut RequestHeader,
    identity: Option<&Identity>,
    client: IpAddr,
) -> pingora::Result<()> {
    if let Some(identity) = identity {
        request.insert_header(USER_HEADER, identity.user.as_str())?;
        for group in &identity.groups {
            request.append_header(GROUP_HEADER, group.as_str())?;
        }
    }
    request.insert_header("X-Forwarded-For", client.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_removes_identity_and_forwarding_headers_in_any_case() {
        let mut req = RequestHeader::build("GET", b"/api", None).unwrap();
        for (name, value) in [
            ("X-Remote-User", "admin"),
            ("x-remote-group", "system:masters"),
            ("X-REMOTE-GROUP", "second"),
            ("X-Remote-Uid", "0"),
            ("X-Remote-Extra-Scopes", "all"),
            ("x-remote-extra-foo", "bar"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Real-Ip", "10.0.0.2"),
            ("Forwarded", "for=10.0.0.3"),
            ("Authorization", "Bearer t"),
            ("Impersonate-User", "bob"),
            ("X-Remote-Userx", "kept: not an identity header"),
        ] {
            req.append_header(name.to_string(), value).unwrap();
        }
        assert_eq!(sanitize(&mut req), 9);
        let left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(req.headers.get("authorization").is_some());
        assert!(req.headers.get("impersonate-user").is_some());
        assert!(!has_owned_headers(&req));
    }

    #[test]
    fn upstream_headers_carry_one_group_each_and_the_client_address() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let identity = Identity {
            user: "alice".into(),
            groups: vec!["a".into(), "b".into()],
        };
        set_upstream(&mut req, Some(&identity), "192.0.2.7".parse().unwrap()).unwrap();
        let groups: Vec<_> = req.headers.get_all("x-remote-group").iter().collect();
        assert_eq!(groups.len(), 2);
        assert_eq!(req.headers.get("x-remote-user").unwrap(), "alice");
        assert_eq!(req.headers.get("x-forwarded-for").unwrap(), "192.0.2.7");
    }
}
