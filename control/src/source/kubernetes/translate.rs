//! Turn an `ApiServerRoute` custom resource plus what it references into the file form.
//!
//! The result is the same [`model::ApiServerRoute`] a YAML file produces, with the
//! Secret keys standing in for files (`Secret <ns>/<name> key <key>`) and the ready
//! endpoints as static backends. From here on both sources share validation and
//! compile. Reference problems (a missing Service, Secret or key) are reported here, in
//! the custom resource's own field names.

use super::crd::{RouteSpec, SecretKeyRef, CERT_KEY, KEY_KEY, TOKEN_KEY};
use super::world::{is_object_name, ObjectKey, RouteObject, SecretState, World};
use crate::access::parse_gardener_acl;
use crate::error::{ConfigError, Errors, ObjectRef, Problem};
use crate::model::{self, BackendSource, BackendsSpec, ObjectMeta, ServingTlsSpec, UpstreamSpec};

/// A route in the file form, with what it references.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The route as compile takes it.
    pub object: std::sync::Arc<model::ApiServerRoute>,
    /// Secret keys by their stand-in file names.
    pub files: crate::inputs::Files,
    /// Reference problems, in the custom resource's field names.
    pub problems: Vec<ConfigError>,
    /// What the route waits for, if anything: neither accept nor reject it yet.
    pub pending: Option<Waiting>,
    /// Ready endpoints found for the backend Service.
    pub ready_endpoints: usize,
    /// Endpoints that are terminating or not ready: they get no new requests.
    pub unready_endpoints: usize,
    /// The `acl` Extension whose `providerConfig` became the allowlist, if any.
    pub acl_extension: Option<ObjectKey>,
    /// `metadata.generation` of the translated object.
    pub generation: i64,
    /// Its hostnames as they are claimed against other routes' (lower case, without a
    /// trailing dot), computed once per translation rather than per reconcile.
    pub claimed_hosts: Vec<String>,
}

/// The error reference of a route custom resource.
pub fn route_ref(key: &ObjectKey) -> ObjectRef {
    ObjectRef::Named {
        kind: "ApiServerRoute".into(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

/// Stand-in file name of a Secret key; also what error messages show.
pub fn secret_file(namespace: &str, name: &str, key: &str) -> String {
    format!("Secret {namespace}/{name} key {key}")
}

/// What a route version waits for before it can be accepted or rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// A referenced Secret has not been listed yet.
    Secrets,
    /// Its allowlist may come from a Gardener `acl` Extension, and those cannot be read
    /// now (the Extension watch has not listed yet, or is failing).
    AclExtensions,
}

/// Translate one route.
pub fn translate(world: &World, key: &ObjectKey, route: &RouteObject) -> Translated {
    let object_ref = route_ref(key);
    let spec = &route.spec;
    let mut errors = Errors::default();
    let mut files = crate::inputs::Files::new();
    let mut pending = None;
    let mut secret = |field: &str, name: &str, secret_key: &str, errors: &mut Errors| -> String {
        let file = secret_file(&key.namespace, name, secret_key);
        let secret_ref = ObjectKey::new(key.namespace.clone(), name);
        if !is_object_name(name) {
            errors.push(
                &object_ref,
                field,
                Problem::Invalid {
                    value: name.to_string(),
                    reason: "not a valid Secret name (lowercase DNS-1123 subdomain)".into(),
                },
            );
            return file;
        }
        match world.secrets.get(&secret_ref).map(|s| &**s) {
            None | Some(SecretState::Pending) => pending = Some(Waiting::Secrets),
            Some(SecretState::Absent) => errors.push(
                &object_ref,
                field,
                Problem::Invalid {
                    value: name.to_string(),
                    reason: format!("Secret {secret_ref} does not exist"),
                },
            ),
            Some(SecretState::Present(data)) => match data.get(secret_key) {
                Some(bytes) => {
                    files.insert(file.as_str().into(), Ok(bytes.clone()));
                }
                None => errors.push(
                    &object_ref,
                    field,
                    Problem::Invalid {
                        value: name.to_string(),
                        reason: format!("Secret {secret_ref} has no key {secret_key:?}"),
                    },
                ),
            },
        }
        file
    };

    let tls = spec.tls.as_ref().map(|tls| ServingTlsSpec {
        cert_file: secret(
            "spec.tls.secretName",
            &tls.secret_name,
            CERT_KEY,
            &mut errors,
        ),
        key_file: secret(
            "spec.tls.secretName",
            &tls.secret_name,
            KEY_KEY,
            &mut errors,
        ),
        client_ca_file: tls
            .client_ca
            .as_ref()
            .map(|r: &SecretKeyRef| secret("spec.tls.clientCA", &r.name, r.key(), &mut errors)),
    });
    let upstream = spec.upstream.as_ref().map(|u| {
        let ca_file = secret("spec.upstream.ca", &u.ca.name, u.ca.key(), &mut errors);
        let (cert, key) = match &u.front_proxy_secret_name {
            Some(name) => (
                Some(secret(
                    "spec.upstream.frontProxySecretName",
                    name,
                    CERT_KEY,
                    &mut errors,
                )),
                Some(secret(
                    "spec.upstream.frontProxySecretName",
                    name,
                    KEY_KEY,
                    &mut errors,
                )),
            ),
            None => (None, None),
        };
        UpstreamSpec {
            ca_file,
            server_name: u.server_name.clone(),
            front_proxy_cert_file: cert,
            front_proxy_key_file: key,
        }
    });

    let health = spec.health.as_ref().map(|h| {
        let duration = |field: &str, text: &Option<String>, errors: &mut Errors| {
            text.as_ref()
                .and_then(|text| match text.parse::<model::Duration>() {
                    Ok(d) => Some(d),
                    Err(reason) => {
                        errors.push(
                            &object_ref,
                            field,
                            Problem::Invalid {
                                value: text.clone(),
                                reason,
                            },
                        );
                        None
                    }
                })
        };
        model::HealthSpec {
            enabled: h.enabled,
            interval: duration("spec.health.interval", &h.interval, &mut errors),
            timeout: duration("spec.health.timeout", &h.timeout, &mut errors),
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
            path: h.path.clone(),
            token_file: h.token.as_ref().map(|t| {
                secret(
                    "spec.health.token",
                    &t.name,
                    t.key_or(TOKEN_KEY),
                    &mut errors,
                )
            }),
            front_proxy_user: h.front_proxy_user.clone(),
        }
    });

    let (backends, ready, unready) = backends(world, key, spec, &object_ref, &mut errors);

    // The route's own `acl` wins; otherwise the namespace's Gardener acl Extension.
    let mut acl = spec.acl.clone();
    let mut acl_extension = None;
    if acl.is_none() && world.extensions_unreadable {
        // Whether an Extension applies is unknown: never guess "none" (allow-all).
        pending = Some(Waiting::AclExtensions);
    } else if acl.is_none() {
        if let Some((ext_key, ext)) = world.acl_extension(&key.namespace) {
            acl_extension = Some(ext_key.clone());
            if let Some(config) = &ext.provider_config {
                let field = format!("spec.acl (from Extension {ext_key} spec.providerConfig)");
                acl = parse_gardener_acl(config.clone(), &object_ref, &field, &mut errors);
            }
        }
    }

    let object = model::ApiServerRoute {
        api_version: model::API_VERSION.into(),
        kind: "ApiServerRoute".into(),
        metadata: ObjectMeta {
            name: key.name.clone(),
            namespace: key.namespace.clone(),
            labels: route.labels.clone(),
            ..ObjectMeta::default()
        },
        spec: model::RouteSpec {
            hostnames: spec.hostnames.clone(),
            mode: spec.mode,
            backends,
            tls,
            upstream,
            balancing: spec.balancing,
            access_control: spec.access_control.clone(),
            acl,
            always_allowed_cidrs: spec.always_allowed_cidrs.clone(),
            destinations: spec.destinations.clone(),
            health,
            flow_control: spec.flow_control.clone(),
        },
    };
    let claimed_hosts = spec.hostnames.iter().map(|h| claimed_host(h)).collect();
    Translated {
        claimed_hosts,
        object: object.into(),
        files,
        problems: errors.into_vec(),
        pending,
        ready_endpoints: ready,
        unready_endpoints: unready,
        acl_extension,
        generation: route.generation,
    }
}

/// A hostname as routes claim it: two routes claiming the same name in different
/// cases, or with a trailing dot, conflict.
pub fn claimed_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Ready endpoint addresses of the referenced Service port, as `ip:port` text.
fn backends(
    world: &World,
    key: &ObjectKey,
    spec: &RouteSpec,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> (BackendsSpec, usize, usize) {
    let mut out = Vec::new();
    let mut draining = Vec::new();
    let service = ObjectKey::new(key.namespace.clone(), spec.backend_ref.service.clone());
    let Some(ports) = world.services.get(&service) else {
        errors.push(
            object_ref,
            "spec.backendRef.service",
            Problem::Invalid {
                value: service.name.clone(),
                reason: format!("Service {service} does not exist"),
            },
        );
        return (discovered(Vec::new(), Vec::new()), 0, 0);
    };
    let Some(port) = ports.iter().find(|p| p.port == spec.backend_ref.port) else {
        errors.push(
            object_ref,
            "spec.backendRef.port",
            Problem::Invalid {
                value: spec.backend_ref.port.to_string(),
                reason: format!("Service {service} has no such port"),
            },
        );
        return (discovered(Vec::new(), Vec::new()), 0, 0);
    };
    let (mut ready, mut unready) = (0, 0);
    for slice in world.slices_of(&service) {
        let Some((_, target)) = slice.ports.iter().find(|(name, _)| *name == port.name) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            // Every address of an endpoint is the same pod; one suffices.
            let text = endpoint.addresses.first().map(|address| {
                match address.parse::<std::net::IpAddr>() {
                    Ok(ip) => std::net::SocketAddr::new(ip, u16::try_from(*target).unwrap_or(0))
                        .to_string(),
                    Err(_) => format!("{address}:{target}"),
                }
            });
            if !endpoint.ready || endpoint.terminating {
                unready += 1;
                // A terminating endpoint finishes what it serves, visibly draining.
                if let Some(text) = text.filter(|_| endpoint.terminating) {
                    if !draining.contains(&text) {
                        draining.push(text);
                    }
                }
                continue;
            }
            let Some(text) = text else {
                continue;
            };
            if !out.contains(&text) {
                out.push(text);
                ready += 1;
            }
        }
    }
    out.sort();
    // A pod ready in one slice and terminating in another is ready.
    draining.retain(|text| !out.contains(text));
    draining.sort();
    (discovered(out, draining), ready, unready)
}

fn discovered(addresses: Vec<String>, draining: Vec<String>) -> BackendsSpec {
    BackendsSpec {
        static_addresses: addresses,
        source: BackendSource::Discovered { draining },
    }
}

/// The custom resource's name for a field compile reported in the file form's terms.
pub fn crd_field(field: &str) -> String {
    const MAP: &[(&str, &str)] = &[
        ("spec.backends.static", "spec.backendRef"),
        ("spec.tls.certFile", "spec.tls.secretName"),
        ("spec.tls.keyFile", "spec.tls.secretName"),
        ("spec.tls.clientCAFile", "spec.tls.clientCA"),
        ("spec.upstream.caFile", "spec.upstream.ca"),
        (
            "spec.upstream.frontProxyCertFile",
            "spec.upstream.frontProxySecretName",
        ),
        (
            "spec.upstream.frontProxyKeyFile",
            "spec.upstream.frontProxySecretName",
        ),
    ];
    for (from, to) in MAP {
        if let Some(rest) = field.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    field.to_string()
}
