//! Test harness: real fake-apiserver replicas, real TLS with generated certificates,
//! apigate started in-process through the same path as `apigate run`, on ports the OS
//! picks. Everything is stopped when the harness is dropped or shut down.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use apigate::demo::client::{client_config, ClientTls, H2Client};
use apigate::server::Running;
use apigate_control::source::FileSource;
use apigate_fake_apiserver::pki::{Ca, Issued};
use apigate_fake_apiserver::{Replica, ReplicaOptions, ServiceTime, TlsMaterial};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const HOST: &str = "api.test.local";
pub const TOKEN: &str = "tok-bob";

pub struct Pki {
    pub server_ca: Ca,
    pub serving: Issued,
    pub replica_ca: Ca,
    pub replica_serving: Issued,
    pub client_ca: Ca,
    pub alice: Issued,
    pub front_proxy_ca: Ca,
    pub front_proxy: Issued,
}

impl Pki {
    pub fn new() -> Pki {
        let server_ca = Ca::new("server-ca").unwrap();
        let serving = server_ca.issue_server(&[HOST, "other.test.local"]).unwrap();
        let replica_ca = Ca::new("replica-ca").unwrap();
        // HOST too: in passthrough mode clients see the replica's own certificate.
        let replica_serving = replica_ca
            .issue_server(&["kubernetes.default.svc", HOST, "127.0.0.1", "::1"])
            .unwrap();
        let client_ca = Ca::new("client-ca").unwrap();
        let alice = client_ca
            .issue_client("alice", &["devs", "testers"])
            .unwrap();
        let front_proxy_ca = Ca::new("front-proxy-ca").unwrap();
        let front_proxy = front_proxy_ca
            .issue_client("apigate-front-proxy", &[])
            .unwrap();
        Pki {
            server_ca,
            serving,
            replica_ca,
            replica_serving,
            client_ca,
            alice,
            front_proxy_ca,
            front_proxy,
        }
    }

    pub fn write(&self, dir: &Path) {
        for (name, content) in [
            ("server-ca.pem", self.server_ca.cert_pem()),
            ("serving.pem", self.serving.cert_pem.clone()),
            ("serving-key.pem", self.serving.key_pem.clone()),
            ("replica-ca.pem", self.replica_ca.cert_pem()),
            ("client-ca.pem", self.client_ca.cert_pem()),
            ("front-proxy.pem", self.front_proxy.cert_pem.clone()),
            ("front-proxy-key.pem", self.front_proxy.key_pem.clone()),
        ] {
            std::fs::write(dir.join(name), content).unwrap();
        }
    }

    pub fn replica_options(&self) -> ReplicaOptions {
        ReplicaOptions {
            tls: Some(TlsMaterial::from_issued(&self.replica_serving)),
            service_time: ServiceTime::Fixed(Duration::ZERO),
            watch_event_interval: Duration::from_millis(100),
            front_proxy_ca_pem: Some(self.front_proxy_ca.cert_pem()),
            front_proxy_allowed_names: vec!["apigate-front-proxy".into()],
            client_ca_pem: Some(self.client_ca.cert_pem()),
            tokens: vec![(TOKEN.into(), "bob".into(), vec!["devs".into()])],
            ..ReplicaOptions::default()
        }
    }
}

/// Extra settings for a test's config.
#[derive(Clone)]
pub struct Settings {
    /// Lines under `spec.defaults` (indented 4 spaces).
    pub defaults: String,
    pub balancing: &'static str,
    pub host: IpAddr,
    /// Extra keys of the `https` listener, e.g. `proxyProtocol: optional`.
    pub listener: String,
    /// Also start a CONNECT listener with these extra keys (`None`: no CONNECT listener).
    pub connect_listener: Option<String>,
    /// Lines under `spec` of the gateway (indented 2 spaces), e.g. `access:` settings.
    pub gateway: String,
    /// Lines appended to the route's spec (indented 2 spaces).
    pub route: String,
    /// Passthrough mode (no tls/upstream sections).
    pub passthrough: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            defaults: String::new(),
            balancing: "leastRequest",
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            listener: String::new(),
            connect_listener: None,
            gateway: String::new(),
            route: String::new(),
            passthrough: false,
        }
    }
}

pub fn config(backends: &[SocketAddr], settings: &Settings) -> String {
    let listen = SocketAddr::new(settings.host, 0);
    let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    let extra = |keys: &str| {
        if keys.is_empty() {
            String::new()
        } else {
            format!(", {keys}")
        }
    };
    let mut listeners = format!(
        "  - {{name: https, address: \"{listen}\"{}}}\n",
        extra(&settings.listener)
    );
    if let Some(keys) = &settings.connect_listener {
        listeners.push_str(&format!(
            "  - {{name: connect, kind: connect, address: \"{}\"{}}}\n",
            SocketAddr::new(settings.host, 0),
            extra(keys)
        ));
    }
    let (mode, terminate) = if settings.passthrough {
        ("passthrough", String::new())
    } else {
        (
            "terminate",
            "  tls: {certFile: serving.pem, keyFile: serving-key.pem, clientCAFile: client-ca.pem}
  upstream: {caFile: replica-ca.pem, frontProxyCertFile: front-proxy.pem, frontProxyKeyFile: front-proxy-key.pem}
  balancing: BALANCING
"
            .replace("BALANCING", settings.balancing),
        )
    };
    format!(
        "apiVersion: apigate.dev/v1alpha1
kind: GatewayConfig
metadata: {{name: test}}
spec:
  listeners:
{listeners}  admin: {{address: \"127.0.0.1:0\"}}
  defaults:
    balancing: {}
{}
{}
---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {{name: shoot, namespace: garden-test}}
spec:
  hostnames: [{HOST}]
  mode: {mode}
  backends: {{static: [{}]}}
{terminate}{}
",
        settings.balancing,
        settings.defaults,
        settings.gateway,
        backends.join(", "),
        settings.route,
    )
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub pki: Arc<Pki>,
    pub replicas: Vec<Replica>,
    pub running: Option<Running>,
    pub settings: Settings,
}

impl Harness {
    pub async fn start(replicas: usize) -> Harness {
        Self::start_with(replicas, Settings::default()).await
    }

    pub async fn start_with(count: usize, settings: Settings) -> Harness {
        let pki = Arc::new(Pki::new());
        let replicas =
            apigate_fake_apiserver::spawn_many(count, settings.host, pki.replica_options())
                .await
                .unwrap();
        let backends: Vec<SocketAddr> = replicas.iter().map(|r| r.local_addr()).collect();
        Self::start_backends(pki, replicas, &backends, settings).await
    }

    pub async fn start_backends(
        pki: Arc<Pki>,
        replicas: Vec<Replica>,
        backends: &[SocketAddr],
        settings: Settings,
    ) -> Harness {
        // `RUST_LOG=debug cargo test ...` shows apigate's and pingora's logs.
        if let Ok(filter) = std::env::var("RUST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        pki.write(dir.path());
        let path = dir.path().join("apigate.yaml");
        std::fs::write(&path, config(backends, &settings)).unwrap();
        let source = FileSource::new(&path);
        let snapshot = apigate_control::compile(&source.load().unwrap()).unwrap();
        let running = apigate::server::start(snapshot, Some((source, Duration::from_millis(100))))
            .await
            .unwrap();
        Harness {
            dir,
            pki,
            replicas,
            running: Some(running),
            settings,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub fn addr(&self) -> SocketAddr {
        self.running().address().unwrap()
    }

    /// Address of the listener with this name.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.running()
            .listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("apigate.yaml")
    }

    pub fn tls(&self, cert: Option<&Issued>) -> ClientTls {
        ClientTls {
            ca_pem: self.pki.server_ca.cert_pem(),
            client_cert: cert.map(|c| (c.cert_pem.clone(), c.key_pem.clone())),
            server_name: HOST.into(),
        }
    }

    pub async fn h2(&self, cert: Option<&Issued>) -> H2Client {
        H2Client::connect(self.addr(), &self.tls(cert))
            .await
            .unwrap()
    }

    /// An HTTP/1.1 TLS connection for raw requests (upgrades, slow clients).
    pub async fn h1_stream(
        &self,
        cert: Option<&Issued>,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let config = client_config(&self.tls(cert), vec![b"http/1.1".to_vec()]).unwrap();
        let tcp = TcpStream::connect(self.addr()).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(HOST).unwrap(), tcp)
            .await
            .unwrap()
    }

    pub fn metrics(&self) -> String {
        self.running().state.refresh_gauges();
        self.running().state.metrics.render()
    }

    /// Value of one metric line (exact label set as rendered), or 0.
    pub fn metric(&self, name_and_labels: &str) -> f64 {
        metric_value(&self.metrics(), name_and_labels)
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown(Duration::from_secs(2)).await;
        }
        for r in self.replicas.drain(..) {
            r.shutdown().await;
        }
    }
}

pub fn metric_value(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name_and_labels).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// Read an HTTP/1.1 response head from a raw stream (up to the blank line).
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("response head in time")
            .unwrap();
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

pub async fn write_all<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
    stream.flush().await.unwrap();
}

/// Poll `check` until it is true or `limit` passes.
pub async fn eventually<F: FnMut() -> bool>(limit: Duration, mut check: F) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    check()
}
