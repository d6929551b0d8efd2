//! Compile one `ApiServerRoute`.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::gateway::{parse_address, CompiledGateway};
use super::tls;
use crate::access::compile_policy;
use crate::error::{Errors, ObjectRef, Problem};
use crate::model::Balancing;
use crate::model::{ApiServerRoute, RouteMode, ServingTlsSpec, UpstreamSpec};
use crate::snapshot::{CertificateExpiry, Mode, Route, RouteId, Terminate, UpstreamTls};

/// The CONNECT destination that selects a route by default: what Gardener's
/// apiserver-proxy and VPN send for the shoot's `kube-apiserver` Service.
pub fn default_destination(namespace: &str) -> String {
    format!("outbound|443||kube-apiserver.{namespace}.svc.cluster.local")
}

/// Upstream server name used when a route does not set one: the name every
/// kube-apiserver serving certificate carries.
pub const DEFAULT_UPSTREAM_SERVER_NAME: &str = "kubernetes.default.svc";

use crate::inputs::Files;

/// The route's namespace, `default` when unset.
pub(super) fn namespace_of(object: &ApiServerRoute) -> &str {
    object.namespace()
}

/// Compile a route, or record its errors and return `None`. `sole_in_namespace` says
/// whether the default CONNECT destination can be given to it.
pub(super) fn compile(
    object: &ApiServerRoute,
    files: &Files,
    gateway: &CompiledGateway,
    sole_in_namespace: bool,
    errors: &mut Errors,
) -> Option<Route> {
    let object_ref = object.object_ref();
    let before = errors.len();
    let spec = &object.spec;

    if object.metadata.name.is_empty() {
        errors.push(&object_ref, "metadata.name", Problem::Missing("a name"));
    }
    let namespace = namespace_of(object).to_string();

    let hostnames = compile_hostnames(&spec.hostnames, &object_ref, errors);
    let backends = compile_backends(&spec.backends, &object_ref, errors);
    // Terminating endpoints come from the Kubernetes source, already checked there;
    // one that does not parse is simply not shown as draining.
    let draining = spec
        .backends
        .draining()
        .iter()
        .filter_map(|text| parse_address(text).ok())
        .filter(|addr| !backends.contains(addr))
        .collect::<Vec<_>>();
    let access = compile_policy(
        spec.access_control.as_ref(),
        spec.acl.as_ref(),
        &gateway.always_allowed,
        &spec.always_allowed_cidrs,
        gateway.max_cidrs,
        &object_ref,
        errors,
    );
    let destinations = compile_destinations(
        sole_in_namespace.then_some(namespace.as_str()),
        &spec.destinations,
        &object_ref,
        errors,
    );

    let balancing = spec.balancing.unwrap_or(gateway.balancing);
    let terminate = match spec.mode {
        RouteMode::Terminate => match (&spec.tls, &spec.upstream) {
            (Some(tls), Some(upstream)) => {
                compile_terminate(tls, upstream, balancing, files, &object_ref, errors)
            }
            (tls, upstream) => {
                if tls.is_none() {
                    errors.push(
                        &object_ref,
                        "spec.tls",
                        Problem::Missing("the serving certificate in terminate mode"),
                    );
                }
                if upstream.is_none() {
                    errors.push(
                        &object_ref,
                        "spec.upstream",
                        Problem::Missing("the upstream CA in terminate mode"),
                    );
                }
                None
            }
        },
        RouteMode::Passthrough => {
            for (field, present) in [
                ("spec.tls", spec.tls.is_some()),
                ("spec.upstream", spec.upstream.is_some()),
                ("spec.balancing", spec.balancing.is_some()),
            ] {
                if present {
                    errors.push(
                        &object_ref,
                        field,
                        Problem::Invalid {
                            value: "set".into(),
                            reason: "not used in passthrough mode (TLS goes to the replica untouched, one replica per connection); remove it or use mode: terminate".into(),
                        },
                    );
                }
            }
            None
        }
    };

    let health = super::health::compile_route(
        spec.health.as_ref(),
        &gateway.health,
        super::health::RouteKind {
            passthrough: spec.mode == RouteMode::Passthrough,
            front_proxy: spec
                .upstream
                .as_ref()
                .is_some_and(|u| u.front_proxy_cert_file.is_some()),
        },
        files,
        &object_ref,
        errors,
    );

    let flow_spec = super::flow::merge(gateway.flow_control.as_ref(), spec.flow_control.as_ref());
    let flow_control = if spec.mode == RouteMode::Passthrough {
        if spec.flow_control.is_some() {
            errors.push(
                &object_ref,
                "spec.flowControl",
                Problem::Invalid {
                    value: "set".into(),
                    reason: "not used in passthrough mode (apigate sees no requests); remove it or use mode: terminate".into(),
                },
            );
        }
        None
    } else {
        super::flow::compile(flow_spec.as_ref(), "spec.flowControl", &object_ref, errors)
    };

    if errors.len() != before {
        return None;
    }
    let access = access?;
    let settings = gateway.settings.defaults;
    let mut route_hash = std::collections::hash_map::DefaultHasher::new();
    hostnames.hash(&mut route_hash);
    backends.hash(&mut route_hash);
    draining.hash(&mut route_hash);
    spec.mode.hash(&mut route_hash);
    let mode = match (spec.mode, terminate) {
        (RouteMode::Terminate, Some((terminate, hash))) => {
            hash.hash(&mut route_hash);
            Mode::Terminate(Box::new(terminate))
        }
        (RouteMode::Terminate, None) => return None,
        (RouteMode::Passthrough, _) => Mode::Passthrough,
    };
    access.fingerprint().hash(&mut route_hash);
    destinations.hash(&mut route_hash);
    settings.hash(&mut route_hash);
    health.hash(&mut route_hash);
    // The compiled form holds floats; what it was compiled from is hashable as text.
    format!("{flow_spec:?}").hash(&mut route_hash);

    Some(Route {
        id: RouteId {
            namespace,
            name: object.metadata.name.clone(),
        },
        hostnames,
        mode,
        backends,
        draining,
        access,
        destinations,
        settings,
        health,
        flow_control,
        fingerprint: route_hash.finish(),
    })
}

/// TLS material of a terminating route and a hash of it.
fn compile_terminate(
    tls_spec: &ServingTlsSpec,
    upstream_spec: &UpstreamSpec,
    balancing: Balancing,
    files: &Files,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> Option<(Terminate, u64)> {
    let before = errors.len();
    let file = |field: &str, path: &str, errors: &mut Errors| -> Option<Arc<[u8]>> {
        let reason = match files.get(path) {
            Some(Ok(bytes)) => return Some(bytes.clone()),
            Some(Err(reason)) => reason.clone(),
            None => "not provided by the configuration source".into(),
        };
        errors.push(
            object_ref,
            field,
            Problem::Unreadable {
                path: path.to_string(),
                reason,
            },
        );
        None
    };

    let cert = file("spec.tls.certFile", &tls_spec.cert_file, errors);
    let key = file("spec.tls.keyFile", &tls_spec.key_file, errors);
    let client_ca = tls_spec
        .client_ca_file
        .as_deref()
        .and_then(|p| file("spec.tls.clientCAFile", p, errors));
    let upstream_ca = file("spec.upstream.caFile", &upstream_spec.ca_file, errors);
    let front_proxy_cert = upstream_spec
        .front_proxy_cert_file
        .as_deref()
        .and_then(|p| file("spec.upstream.frontProxyCertFile", p, errors));
    let front_proxy_key = upstream_spec
        .front_proxy_key_file
        .as_deref()
        .and_then(|p| file("spec.upstream.frontProxyKeyFile", p, errors));

    match (
        &upstream_spec.front_proxy_cert_file,
        &upstream_spec.front_proxy_key_file,
    ) {
        (Some(_), None) => errors.push(
            object_ref,
            "spec.upstream.frontProxyKeyFile",
            Problem::Missing("the key of frontProxyCertFile"),
        ),
        (None, Some(_)) => errors.push(
            object_ref,
            "spec.upstream.frontProxyCertFile",
            Problem::Missing("the certificate for frontProxyKeyFile"),
        ),
        (None, None) if tls_spec.client_ca_file.is_some() => errors.push(
            object_ref,
            "spec.upstream.frontProxyCertFile",
            Problem::Missing(
                "a front-proxy client certificate when clientCAFile is set (certificate-authenticated requests are forwarded with it)",
            ),
        ),
        _ => {}
    }

    let server_name = upstream_spec
        .server_name
        .clone()
        .unwrap_or_else(|| DEFAULT_UPSTREAM_SERVER_NAME.to_string());
    if rustls::pki_types::ServerName::try_from(server_name.clone()).is_err() {
        errors.push(
            object_ref,
            "spec.upstream.serverName",
            Problem::Invalid {
                value: server_name.clone(),
                reason: "not a valid DNS name or IP address".into(),
            },
        );
    }

    let server_tls = match (&cert, &key) {
        (Some(cert), Some(key)) => {
            tls::server_config(cert, key, client_ca.as_deref(), object_ref, errors)
        }
        _ => None,
    };
    let ca = upstream_ca
        .and_then(|pem| tls::ca_bundle(&pem, object_ref, "spec.upstream.caFile", errors));
    let front_proxy = match (&front_proxy_cert, &front_proxy_key) {
        (Some(cert), Some(key)) => tls::client_identity(cert, key, object_ref, errors),
        _ => None,
    };
    let http1 = match &ca {
        Some(ca) => tls::upstream_clients(&ca.ders, front_proxy.as_ref(), object_ref, errors),
        None => None,
    };
    if errors.len() != before {
        return None;
    }
    let (server, ca, http1) = (server_tls?, ca?, http1?);
    let expiry = CertificateExpiry {
        serving: server.serving_not_after,
        client_ca: server.client_ca_not_after,
        upstream_ca: ca.last_not_after,
        front_proxy: front_proxy.as_ref().map(|identity| identity.not_after),
    };
    let ca = ca.ders;
    let client_ca_fingerprint = {
        let mut hash = std::collections::hash_map::DefaultHasher::new();
        client_ca.hash(&mut hash);
        hash.finish()
    };

    let mut upstream_hash = std::collections::hash_map::DefaultHasher::new();
    server_name.hash(&mut upstream_hash);
    ca.hash(&mut upstream_hash);
    front_proxy_cert.hash(&mut upstream_hash);
    front_proxy_key.hash(&mut upstream_hash);
    let upstream_fingerprint = upstream_hash.finish();
    let mut hash = std::collections::hash_map::DefaultHasher::new();
    cert.hash(&mut hash);
    key.hash(&mut hash);
    client_ca.hash(&mut hash);
    upstream_fingerprint.hash(&mut hash);
    format!("{balancing:?}").hash(&mut hash);

    Some((
        Terminate {
            server_tls: server.config,
            client_auth: client_ca.is_some(),
            client_verifier: server.client_verifier,
            expiry,
            client_ca_fingerprint,
            upstream: UpstreamTls {
                server_name,
                ca,
                front_proxy,
                http1,
                fingerprint: upstream_fingerprint,
            },
            balancing,
        },
        hash.finish(),
    ))
}

fn compile_destinations(
    default_namespace: Option<&str>,
    extra: &[String],
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> Vec<String> {
    let mut out: Vec<String> = default_namespace
        .map(|ns| default_destination(ns).to_ascii_lowercase())
        .into_iter()
        .collect();
    for (i, value) in extra.iter().enumerate() {
        let lower = value.trim().to_ascii_lowercase();
        if lower.is_empty()
            || lower
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            errors.push(
                object_ref,
                format!("spec.destinations[{i}]"),
                Problem::Invalid {
                    value: value.clone(),
                    reason: "a destination is a non-empty header value without spaces, e.g. outbound|443||kube-apiserver.shoot--p--n.svc.cluster.local".into(),
                },
            );
        } else if !out.contains(&lower) {
            out.push(lower);
        }
    }
    out
}

fn compile_hostnames(names: &[String], object_ref: &ObjectRef, errors: &mut Errors) -> Vec<String> {
    if names.is_empty() {
        errors.push(
            object_ref,
            "spec.hostnames",
            Problem::Missing("at least one hostname"),
        );
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let field = format!("spec.hostnames[{i}]");
        let lower = name.trim().to_ascii_lowercase();
        let valid = !lower.is_empty()
            && !lower.contains('*')
            && lower.parse::<std::net::IpAddr>().is_err()
            && matches!(
                rustls::pki_types::ServerName::try_from(lower.as_str()),
                Ok(rustls::pki_types::ServerName::DnsName(_))
            );
        if !valid {
            errors.push(
                object_ref,
                field,
                Problem::Invalid {
                    value: name.clone(),
                    reason:
                        "expected a DNS name as sent in TLS SNI (no wildcards, no IP addresses)"
                            .into(),
                },
            );
        } else if !seen.insert(lower.clone()) {
            errors.push(
                object_ref,
                field,
                Problem::Conflict {
                    value: name.clone(),
                    other: "an earlier entry of this list".into(),
                },
            );
        } else {
            out.push(lower);
        }
    }
    out
}

fn compile_backends(
    spec: &crate::model::BackendsSpec,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> Vec<std::net::SocketAddr> {
    let addresses = &spec.static_addresses;
    if addresses.is_empty() && spec.source == crate::model::BackendSource::Static {
        errors.push(
            object_ref,
            "spec.backends.static",
            Problem::Missing("at least one backend address"),
        );
    }
    let mut out = Vec::new();
    for (i, text) in addresses.iter().enumerate() {
        let field = format!("spec.backends.static[{i}]");
        match parse_address(text) {
            Ok(addr) if out.contains(&addr) => errors.push(
                object_ref,
                field,
                Problem::Conflict {
                    value: text.clone(),
                    other: "an earlier entry of this list".into(),
                },
            ),
            Ok(addr) if addr.port() == 0 || addr.ip().is_unspecified() => errors.push(
                object_ref,
                field,
                Problem::Invalid {
                    value: text.clone(),
                    reason: "a backend needs a concrete address and a non-zero port".into(),
                },
            ),
            Ok(addr) => out.push(addr),
            Err(problem) => errors.push(object_ref, field, problem),
        }
    }
    out
}
