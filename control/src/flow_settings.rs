//! Flow control as compiled from `flowControl`: what the proxy's limiter reads, and the
//! one rule deciding which policy a request meets. A leaf module: routes in the
//! snapshot carry these settings.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// A route's flow control with the defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowControl {
    /// Ordinary requests in flight on the route, all clients together (`None`: no cap).
    pub max_in_flight: Option<u32>,
    /// Requests that may wait for a slot, all clients together.
    pub max_queued: u32,
    /// Longest wait for a slot.
    pub queue_timeout: Duration,
    /// Requests never limited.
    pub exempt: Exempt,
    /// Policies in the order requests meet them.
    pub policies: Vec<FlowPolicy>,
}

/// Who and what is never limited.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exempt {
    /// Groups of verified client certificates.
    pub groups: Vec<String>,
    /// Users of verified client certificates.
    pub users: Vec<String>,
    /// Non-resource URLs.
    pub non_resource_urls: Vec<UrlPattern>,
}

/// One policy.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowPolicy {
    /// Name, in metrics and 429 messages.
    pub name: Arc<str>,
    /// Which requests.
    pub matches: FlowMatch,
    /// Requests of one client in flight.
    pub max_in_flight: Option<u32>,
    /// One client's token bucket.
    pub rate: Option<Rate>,
    /// Watches and upgrades of one client open at once.
    pub max_watches: Option<u32>,
}

/// A token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub qps: f64,
    /// Tokens the bucket holds at most.
    pub burst: u32,
}

/// Which requests a policy matches; an empty list matches anything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FlowMatch {
    /// Client names (certificate user, `token:<hash>`, `anonymous`).
    pub users: Vec<String>,
    /// Groups of verified client certificates.
    pub groups: Vec<String>,
    /// Client networks.
    pub sources: Vec<IpNet>,
    /// Verbs, as kube-apiserver names them.
    pub verbs: Vec<String>,
    /// Resources.
    pub resources: Vec<ResourcePattern>,
    /// Namespaces.
    pub namespaces: Vec<String>,
    /// Non-resource URLs.
    pub non_resource_urls: Vec<UrlPattern>,
}

/// A resource a policy names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourcePattern {
    /// `*`: any resource.
    Any,
    /// One resource of one group (`""` for the core group).
    Named {
        /// API group.
        group: String,
        /// Resource.
        resource: String,
    },
}

/// A non-resource URL a policy or exemption names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlPattern {
    /// This path exactly.
    Exact(String),
    /// Any path starting with this.
    Prefix(String),
}

impl UrlPattern {
    /// Whether `path` is matched.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            UrlPattern::Exact(exact) => path == exact,
            UrlPattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

/// What flow control knows of a request.
#[derive(Debug, Clone, Copy)]
pub struct FlowRequest<'a> {
    /// The client's name: certificate user, `token:<hash>` or `anonymous`.
    pub user: &'a str,
    /// Groups of the verified client certificate (none for other clients).
    pub groups: &'a [String],
    /// The client address.
    pub source: IpAddr,
    /// kube-apiserver's verb.
    pub verb: &'a str,
    /// `(group, resource)` of a resource request.
    pub resource: Option<(&'a str, &'a str)>,
    /// Namespace (`""` when none).
    pub namespace: &'a str,
    /// The request path.
    pub path: &'a str,
}

impl FlowControl {
    /// Whether a request is exempt: a certificate user or group listed, or a listed
    /// non-resource URL.
    pub fn is_exempt(&self, request: &FlowRequest<'_>, verified: bool) -> bool {
        let who = verified
            && (self.exempt.users.iter().any(|u| u == request.user)
                || request
                    .groups
                    .iter()
                    .any(|g| self.exempt.groups.contains(g)));
        let what = request.resource.is_none()
            && self
                .exempt
                .non_resource_urls
                .iter()
                .any(|p| p.matches(request.path));
        who || what
    }

    /// The index of the first policy the request meets.
    pub fn policy_for(&self, request: &FlowRequest<'_>) -> Option<usize> {
        self.policies
            .iter()
            .position(|policy| policy.matches.matches(request))
    }
}

impl FlowMatch {
    /// Whether every non-empty list matches the request.
    pub fn matches(&self, request: &FlowRequest<'_>) -> bool {
        let any = |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
        let source = request.source.to_canonical();
        any(&self.users, request.user)
            && (self.groups.is_empty() || request.groups.iter().any(|g| self.groups.contains(g)))
            && (self.sources.is_empty() || self.sources.iter().any(|net| net.contains(&source)))
            && any(&self.verbs, request.verb)
            && self.resource_matches(request)
            && (self.namespaces.is_empty()
                || (!request.namespace.is_empty() && any(&self.namespaces, request.namespace)))
    }

    fn resource_matches(&self, request: &FlowRequest<'_>) -> bool {
        match request.resource {
            Some((group, resource)) => {
                // A policy naming only non-resource URLs is not about resources.
                if self.resources.is_empty() {
                    return self.non_resource_urls.is_empty();
                }
                self.resources.iter().any(|pattern| match pattern {
                    ResourcePattern::Any => true,
                    ResourcePattern::Named {
                        group: g,
                        resource: r,
                    } => g == group && r == resource,
                })
            }
            None => {
                if self.non_resource_urls.is_empty() {
                    return self.resources.is_empty();
                }
                self.non_resource_urls
                    .iter()
                    .any(|p| p.matches(request.path))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(user: &'a str, groups: &'a [String]) -> FlowRequest<'a> {
        FlowRequest {
            user,
            groups,
            source: "10.0.0.5".parse().unwrap(),
            verb: "list",
            resource: Some(("", "pods")),
            namespace: "default",
            path: "/api/v1/namespaces/default/pods",
        }
    }

    #[test]
    fn every_listed_dimension_must_match() {
        let m = FlowMatch {
            verbs: vec!["list".into(), "watch".into()],
            resources: vec![ResourcePattern::Named {
                group: String::new(),
                resource: "pods".into(),
            }],
            sources: vec!["10.0.0.0/8".parse().unwrap()],
            ..FlowMatch::default()
        };
        assert!(m.matches(&request("alice", &[])));
        let mut other = request("alice", &[]);
        other.verb = "get";
        assert!(!m.matches(&other));
        other = request("alice", &[]);
        other.resource = Some(("apps", "pods"));
        assert!(!m.matches(&other), "the group counts");
        other = request("alice", &[]);
        other.source = "::ffff:10.1.2.3".parse().unwrap();
        assert!(
            m.matches(&other),
            "an IPv4-mapped client matches IPv4 networks"
        );
        other.source = "192.0.2.1".parse().unwrap();
        assert!(!m.matches(&other));
    }

    #[test]
    fn resource_and_non_resource_policies_do_not_cross() {
        let urls = FlowMatch {
            non_resource_urls: vec![UrlPattern::Prefix("/metrics".into())],
            ..FlowMatch::default()
        };
        assert!(!urls.matches(&request("a", &[])));
        let mut metrics = request("a", &[]);
        metrics.resource = None;
        metrics.namespace = "";
        metrics.path = "/metrics/cadvisor";
        assert!(urls.matches(&metrics));
        let namespaced = FlowMatch {
            namespaces: vec!["default".into()],
            ..FlowMatch::default()
        };
        assert!(!namespaced.matches(&metrics), "no namespace, no match");
        assert!(
            FlowMatch::default().matches(&metrics),
            "an empty match takes anything"
        );
    }

    #[test]
    fn only_verified_certificates_are_exempt_by_group() {
        let flow = FlowControl {
            max_in_flight: Some(1),
            max_queued: 0,
            queue_timeout: Duration::from_secs(1),
            exempt: Exempt {
                groups: vec!["system:masters".into()],
                users: vec![],
                non_resource_urls: vec![UrlPattern::Exact("/readyz".into())],
            },
            policies: vec![],
        };
        let masters = ["system:masters".to_string()];
        assert!(flow.is_exempt(&request("admin", &masters), true));
        assert!(!flow.is_exempt(&request("admin", &masters), false));
        let mut probe = request("anonymous", &[]);
        probe.resource = None;
        probe.path = "/readyz";
        assert!(flow.is_exempt(&probe, false));
    }
}
