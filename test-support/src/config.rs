//! Configurations built from apigate's own typed objects.
//!
//! Tests change fields of real [`GatewayConfig`] and [`ApiServerRoute`] values (a typo
//! does not compile) and render them to the multi-document YAML apigate reads, through
//! the same file source and compile as `apigate run`.
//!
//! ```
//! use apigate_test_support::config::{Config, route};
//! let backends = ["127.0.0.1:6443".parse().unwrap()];
//! let mut config = Config::new("127.0.0.1".parse().unwrap());
//! config.gateway.spec.defaults.request_timeout = Some(apigate_test_support::config::secs(5));
//! config.routes.push(route::terminate("shoot", "garden", &["api.example.com"], &backends));
//! assert!(config.render().contains("api.example.com"));
//! ```

use std::net::{IpAddr, SocketAddr};

use apigate_control::model::{
    AdminSpec, ApiServerRoute, BackendsSpec, Duration, GatewayConfig, GatewaySpec, ListenerKind,
    ListenerSpec, Object, ObjectMeta, RouteMode, RouteSpec, ServingTlsSpec, UpstreamSpec,
    API_VERSION,
};

/// File names the PKI of a test writes next to the configuration.
pub mod files {
    /// The route's serving certificate chain.
    pub const SERVING_CERT: &str = "serving.pem";
    /// Its key.
    pub const SERVING_KEY: &str = "serving-key.pem";
    /// CA of client certificates.
    pub const CLIENT_CA: &str = "client-ca.pem";
    /// CA of the replicas' serving certificates.
    pub const REPLICA_CA: &str = "replica-ca.pem";
    /// Front-proxy client certificate.
    pub const FRONT_PROXY_CERT: &str = "front-proxy.pem";
    /// Its key.
    pub const FRONT_PROXY_KEY: &str = "front-proxy-key.pem";
}

/// A duration of `n` seconds.
pub fn secs(n: u64) -> Duration {
    Duration(std::time::Duration::from_secs(n))
}

/// A duration of `n` milliseconds.
pub fn millis(n: u64) -> Duration {
    Duration(std::time::Duration::from_millis(n))
}

/// A gateway and its routes.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `GatewayConfig`.
    pub gateway: GatewayConfig,
    /// The `ApiServerRoute`s.
    pub routes: Vec<ApiServerRoute>,
}

impl Config {
    /// A gateway named `test` with one TLS listener `https` on `host` (port chosen by
    /// the OS), the admin endpoint on loopback, and no routes.
    pub fn new(host: IpAddr) -> Config {
        Config {
            gateway: GatewayConfig {
                api_version: API_VERSION.into(),
                kind: "GatewayConfig".into(),
                metadata: ObjectMeta {
                    name: "test".into(),
                    ..ObjectMeta::default()
                },
                spec: GatewaySpec {
                    listeners: vec![listener("https", ListenerKind::Tls, host)],
                    admin: Some(AdminSpec {
                        address: "127.0.0.1:0".into(),
                        token_file: None,
                    }),
                    ..GatewaySpec::default()
                },
            },
            routes: Vec::new(),
        }
    }

    /// The listener named `name`.
    pub fn listener_mut(&mut self, name: &str) -> Option<&mut ListenerSpec> {
        self.gateway
            .spec
            .listeners
            .iter_mut()
            .find(|l| l.name == name)
    }

    /// The route named `name`.
    pub fn route_mut(&mut self, name: &str) -> Option<&mut ApiServerRoute> {
        self.routes.iter_mut().find(|r| r.metadata.name == name)
    }

    /// The configuration file's text.
    pub fn render(&self) -> String {
        let mut objects = vec![Object::Gateway(self.gateway.clone())];
        objects.extend(
            self.routes
                .iter()
                .map(|r| Object::Route(std::sync::Arc::new(r.clone()))),
        );
        // Rendering plain data cannot fail; an empty string would fail the test that
        // loads it, naming the problem.
        apigate_control::source::render_documents(&objects).unwrap_or_default()
    }
}

/// A listener on `host`, port chosen by the OS.
pub fn listener(name: &str, kind: ListenerKind, host: IpAddr) -> ListenerSpec {
    ListenerSpec {
        name: name.into(),
        address: SocketAddr::new(host, 0).to_string(),
        kind,
        proxy_protocol: Default::default(),
        trusted_proxies: Vec::new(),
    }
}

/// Routes.
pub mod route {
    use super::*;

    fn base(
        name: &str,
        namespace: &str,
        hostnames: &[&str],
        backends: &[SocketAddr],
    ) -> ApiServerRoute {
        ApiServerRoute {
            api_version: API_VERSION.into(),
            kind: "ApiServerRoute".into(),
            metadata: ObjectMeta {
                name: name.into(),
                namespace: namespace.into(),
                ..ObjectMeta::default()
            },
            spec: RouteSpec {
                hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
                mode: RouteMode::Terminate,
                backends: BackendsSpec {
                    static_addresses: backends.iter().map(|b| b.to_string()).collect(),
                    source: Default::default(),
                },
                tls: None,
                upstream: None,
                balancing: None,
                access_control: None,
                acl: None,
                always_allowed_cidrs: Vec::new(),
                destinations: Vec::new(),
                health: None,
                flow_control: None,
            },
        }
    }

    /// A terminating route using the test PKI's files: serving certificate, client CA,
    /// replica CA and front-proxy identity.
    pub fn terminate(
        name: &str,
        namespace: &str,
        hostnames: &[&str],
        backends: &[SocketAddr],
    ) -> ApiServerRoute {
        let mut route = base(name, namespace, hostnames, backends);
        route.spec.tls = Some(ServingTlsSpec {
            cert_file: files::SERVING_CERT.into(),
            key_file: files::SERVING_KEY.into(),
            client_ca_file: Some(files::CLIENT_CA.into()),
        });
        route.spec.upstream = Some(UpstreamSpec {
            ca_file: files::REPLICA_CA.into(),
            server_name: None,
            front_proxy_cert_file: Some(files::FRONT_PROXY_CERT.into()),
            front_proxy_key_file: Some(files::FRONT_PROXY_KEY.into()),
        });
        route
    }

    /// A passthrough route (no TLS material).
    pub fn passthrough(
        name: &str,
        namespace: &str,
        hostnames: &[&str],
        backends: &[SocketAddr],
    ) -> ApiServerRoute {
        let mut route = base(name, namespace, hostnames, backends);
        route.spec.mode = RouteMode::Passthrough;
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_configuration_is_what_apigate_reads() {
        let backends: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap()];
        let mut config = Config::new("::1".parse().unwrap());
        config.gateway.spec.defaults.idle_timeout = Some(secs(30));
        config
            .routes
            .push(route::terminate("a", "ns", &["a.example.com"], &backends));
        config.routes.push(route::passthrough(
            "p",
            "ns2",
            &["p.example.com"],
            &backends,
        ));
        let text = config.render();
        let objects = apigate_control::source::parse_documents(&text, "test").unwrap();
        assert_eq!(objects.len(), 3);
        assert_eq!(objects[0], Object::Gateway(config.gateway.clone()));
        assert_eq!(
            objects[2],
            Object::Route(std::sync::Arc::new(config.routes[1].clone()))
        );
        assert!(text.contains("[::1]:0"), "{text}");
    }
}
