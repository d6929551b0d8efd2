//! Compile one `ApiServerRoute`.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

use super::gateway::parse_address;
use super::tls;
use crate::error::{Errors, ObjectRef, Problem};
use crate::model::{ApiServerRoute, Balancing, RouteMode};
use crate::snapshot::{Route, RouteId, UpstreamTls};

/// Upstream server name used when a route does not set one: the name every
/// kube-apiserver serving certificate carries.
pub const DEFAULT_UPSTREAM_SERVER_NAME: &str = "kubernetes.default.svc";

type Files = BTreeMap<String, Result<Vec<u8>, String>>;

/// Compile a route, or record its errors and return `None`.
pub(super) fn compile(
    object: &ApiServerRoute,
    files: &Files,
    default_balancing: Balancing,
    errors: &mut Errors,
) -> Option<Route> {
    let object_ref = object.object_ref();
    let before = errors.len();
    let spec = &object.spec;

    if object.metadata.name.is_empty() {
        errors.push(&object_ref, "metadata.name", Problem::Missing("a name"));
    }
    let namespace = if object.metadata.namespace.is_empty() {
        "default".to_string()
    } else {
        object.metadata.namespace.clone()
    };

    let hostnames = compile_hostnames(&spec.hostnames, &object_ref, errors);
    let backends = compile_backends(&spec.backends.static_addresses, &object_ref, errors);

    let file = |field: &str, path: &str, errors: &mut Errors| -> Option<Vec<u8>> {
        match files.get(path) {
            Some(Ok(bytes)) => Some(bytes.clone()),
            Some(Err(reason)) => {
                errors.push(
                    &object_ref,
                    field,
                    Problem::Unreadable {
                        path: path.to_string(),
                        reason: reason.clone(),
                    },
                );
                None
            }
            None => {
                errors.push(
                    &object_ref,
                    field,
                    Problem::Unreadable {
                        path: path.to_string(),
                        reason: "not provided by the configuration source".into(),
                    },
                );
                None
            }
        }
    };

    let cert = file("spec.tls.certFile", &spec.tls.cert_file, errors);
    let key = file("spec.tls.keyFile", &spec.tls.key_file, errors);
    let client_ca = spec
        .tls
        .client_ca_file
        .as_deref()
        .and_then(|p| file("spec.tls.clientCAFile", p, errors));
    let upstream_ca = file("spec.upstream.caFile", &spec.upstream.ca_file, errors);
    let front_proxy_cert = spec
        .upstream
        .front_proxy_cert_file
        .as_deref()
        .and_then(|p| file("spec.upstream.frontProxyCertFile", p, errors));
    let front_proxy_key = spec
        .upstream
        .front_proxy_key_file
        .as_deref()
        .and_then(|p| file("spec.upstream.frontProxyKeyFile", p, errors));

    match (
        &spec.upstream.front_proxy_cert_file,
        &spec.upstream.front_proxy_key_file,
    ) {
        (Some(_), None) => errors.push(
            &object_ref,
            "spec.upstream.frontProxyKeyFile",
            Problem::Missing("the key of frontProxyCertFile"),
        ),
        (None, Some(_)) => errors.push(
            &object_ref,
            "spec.upstream.frontProxyCertFile",
            Problem::Missing("the certificate for frontProxyKeyFile"),
        ),
        (None, None) if spec.tls.client_ca_file.is_some() => errors.push(
            &object_ref,
            "spec.upstream.frontProxyCertFile",
            Problem::Missing(
                "a front-proxy client certificate when clientCAFile is set (certificate-authenticated requests are forwarded with it)",
            ),
        ),
        _ => {}
    }

    let server_name = spec
        .upstream
        .server_name
        .clone()
        .unwrap_or_else(|| DEFAULT_UPSTREAM_SERVER_NAME.to_string());
    if rustls::pki_types::ServerName::try_from(server_name.clone()).is_err() {
        errors.push(
            &object_ref,
            "spec.upstream.serverName",
            Problem::Invalid {
                value: server_name.clone(),
                reason: "not a valid DNS name or IP address".into(),
            },
        );
    }

    let server_tls = match (&cert, &key) {
        (Some(cert), Some(key)) => {
            tls::server_config(cert, key, client_ca.as_deref(), &object_ref, errors)
        }
        _ => None,
    };
    let ca = upstream_ca
        .and_then(|pem| tls::ca_bundle(&pem, &object_ref, "spec.upstream.caFile", errors));
    let front_proxy = match (&front_proxy_cert, &front_proxy_key) {
        (Some(cert), Some(key)) => tls::client_identity(cert, key, &object_ref, errors),
        _ => None,
    };

    if errors.len() != before {
        return None;
    }
    let (server_tls, ca) = (server_tls?, ca?);

    let mut upstream_hash = std::collections::hash_map::DefaultHasher::new();
    server_name.hash(&mut upstream_hash);
    ca.hash(&mut upstream_hash);
    front_proxy_cert.hash(&mut upstream_hash);
    front_proxy_key.hash(&mut upstream_hash);
    let upstream_fingerprint = upstream_hash.finish();

    let balancing = spec.balancing.unwrap_or(default_balancing);
    let RouteMode::Terminate = spec.mode;
    let mut route_hash = std::collections::hash_map::DefaultHasher::new();
    hostnames.hash(&mut route_hash);
    backends.hash(&mut route_hash);
    format!("{balancing:?}").hash(&mut route_hash);
    cert.hash(&mut route_hash);
    key.hash(&mut route_hash);
    client_ca.hash(&mut route_hash);
    upstream_fingerprint.hash(&mut route_hash);

    Some(Route {
        id: RouteId {
            namespace,
            name: object.metadata.name.clone(),
        },
        hostnames,
        server_tls,
        client_auth: client_ca.is_some(),
        upstream: UpstreamTls {
            server_name,
            ca,
            front_proxy,
            fingerprint: upstream_fingerprint,
        },
        backends,
        balancing,
        fingerprint: route_hash.finish(),
    })
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
    addresses: &[String],
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> Vec<std::net::SocketAddr> {
    if addresses.is_empty() {
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
