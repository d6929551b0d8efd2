//! Test harness: real fake-apiserver replicas, real TLS with generated certificates,
//! apigate started in-process through the same path as `apigate run`, on ports the OS
//! picks, configured through typed objects ([`apigate_test_support::config`]).
//!
//! Everything a harness started stops with it: [`Harness::stop`] drains apigate and the
//! replicas; dropping a harness (a failed assertion) stops apigate's listeners and the
//! replicas at once and removes the temporary directory.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod load;
pub mod misbehaving;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apigate::server::Running;
use apigate_control::source::FileSource;
use apigate_fake_apiserver::pki::{Ca, Issued};
use apigate_fake_apiserver::{Replica, ReplicaOptions, ServiceTime, TlsMaterial};
use apigate_test_support::client::{client_config, ClientTls, H2Client};
use apigate_test_support::config::{files, route, Config};
use apigate_test_support::metrics::Metrics;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const HOST: &str = "api.test.local";
pub const OTHER_HOST: &str = "other.test.local";
pub const TOKEN: &str = "tok-bob";
pub const ROUTE: &str = "garden-test/shoot";

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
        let serving = server_ca.issue_server(&[HOST, OTHER_HOST]).unwrap();
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

    pub fn write(&self, dir: &std::path::Path) {
        for (name, content) in [
            ("server-ca.pem", self.server_ca.cert_pem()),
            (files::SERVING_CERT, self.serving.cert_pem.clone()),
            (files::SERVING_KEY, self.serving.key_pem.clone()),
            (files::REPLICA_CA, self.replica_ca.cert_pem()),
            (files::CLIENT_CA, self.client_ca.cert_pem()),
            (files::FRONT_PROXY_CERT, self.front_proxy.cert_pem.clone()),
            (files::FRONT_PROXY_KEY, self.front_proxy.key_pem.clone()),
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

/// The configuration every test starts from: one TLS listener on `host` and the route
/// `garden-test/shoot` for [`HOST`], terminating TLS, in front of `backends`.
pub fn base_config(host: IpAddr, backends: &[SocketAddr]) -> Config {
    let mut config = Config::new(host);
    config
        .routes
        .push(route::terminate("shoot", "garden-test", &[HOST], backends));
    config
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub pki: Arc<Pki>,
    pub replicas: Vec<Replica>,
    pub running: Option<Running>,
    pub config: Config,
}

impl Harness {
    /// `replicas` fake replicas on 127.0.0.1 and apigate with [`base_config`].
    pub async fn start(replicas: usize) -> Harness {
        Self::start_with(replicas, |_| {}).await
    }

    /// Like [`Harness::start`], with the configuration changed by `change` first.
    pub async fn start_with(count: usize, change: impl FnOnce(&mut Config)) -> Harness {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), count, change).await
    }

    /// Replicas and apigate's listener on `host`.
    pub async fn start_on(host: IpAddr, count: usize, change: impl FnOnce(&mut Config)) -> Harness {
        let pki = Arc::new(Pki::new());
        let replicas = apigate_fake_apiserver::spawn_many(count, host, pki.replica_options())
            .await
            .unwrap();
        let backends: Vec<SocketAddr> = replicas.iter().map(|r| r.local_addr()).collect();
        let mut config = base_config(host, &backends);
        change(&mut config);
        Self::start_config(pki, replicas, config).await
    }

    /// apigate with exactly `config`, in front of whatever `config` names.
    pub async fn start_config(pki: Arc<Pki>, replicas: Vec<Replica>, config: Config) -> Harness {
        Self::start_config_with_files(pki, replicas, config, &[]).await
    }

    /// [`Harness::start_config`], with extra files (name, content) next to the
    /// configuration before apigate reads it.
    pub async fn start_config_with_files(
        pki: Arc<Pki>,
        replicas: Vec<Replica>,
        config: Config,
        extra: &[(&str, &str)],
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
        for (name, content) in extra {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let path = dir.path().join("apigate.yaml");
        std::fs::write(&path, config.render()).unwrap();
        let (snapshot, file) =
            apigate::server::FileConfig::load(&path, Duration::from_millis(100)).unwrap();
        let running = apigate::server::start(snapshot, Some(file)).await.unwrap();
        Harness {
            dir,
            pki,
            replicas,
            running: Some(running),
            config,
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

    /// Write a new configuration (apigate reloads it within ~100 ms) and wait until it
    /// is active.
    pub async fn reload(&mut self, config: Config) {
        let before = self.revision();
        std::fs::write(self.config_path(), config.render()).unwrap();
        self.config = config;
        self.activated_after(before, "the new configuration").await;
    }

    /// The active configuration's revision.
    pub fn revision(&self) -> f64 {
        self.metrics().sum("apigate_config_revision", &[])
    }

    /// Wait (5 s at most) until a configuration newer than revision `before`, made
    /// from `what`, is active.
    pub async fn activated_after(&self, before: f64, what: &str) {
        assert!(
            eventually(Duration::from_secs(5), || self.revision() > before).await,
            "{what} was activated"
        );
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

    /// apigate's metrics, scraped now.
    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&apigate::admin::scrape(&self.running().state)).unwrap()
    }

    /// The configuration on disk, compiled as apigate would.
    pub fn compile(&self) -> apigate_control::Snapshot {
        let source = FileSource::new(self.config_path());
        apigate_control::compile(&source.load().unwrap()).unwrap()
    }

    /// `GET` an admin path; the body, after checking for 200.
    pub async fn admin_get(&self, path: &str) -> String {
        let (status, body) = self.admin_request("GET", path).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `method` on an admin path (from loopback): status and body.
    pub async fn admin_request(&self, method: &str, path: &str) -> (u16, String) {
        let admin = self.running().admin.unwrap();
        let mut tcp = TcpStream::connect(admin).await.unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        write_all(&mut tcp, request.as_bytes()).await;
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut response))
            .await
            .expect("admin answers in time")
            .unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, body.to_string())
    }

    /// `/backends` as JSON, keyed by address.
    pub async fn backends(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        let body = self.admin_get("/backends").await;
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        list.into_iter()
            .map(|b| (b["address"].as_str().unwrap().to_string(), b))
            .collect()
    }

    /// The health state `/backends` shows for `addr` (`"absent"` when not listed).
    pub async fn backend_state(&self, addr: SocketAddr) -> String {
        self.backends()
            .await
            .get(&addr.to_string())
            .map_or("absent".to_string(), |b| {
                b["state"].as_str().unwrap().to_string()
            })
    }

    /// Poll `/backends` until `addr` is in `state`, or `limit` passes.
    pub async fn wait_for_state(&self, addr: SocketAddr, state: &str, limit: Duration) -> bool {
        let end = tokio::time::Instant::now() + limit;
        loop {
            if self.backend_state(addr).await == state {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The sum of metric `name` over the series with these labels, scraped now.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics().sum(name, labels)
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

impl Drop for Harness {
    fn drop(&mut self) {
        // A test that failed before `stop`: stop accepting and serving now. Replicas stop
        // when dropped; the temporary directory is removed after this.
        if let Some(running) = self.running.take() {
            running.stop_now();
        }
    }
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

/// Read a response's JSON body after its head (`content-length` bytes).
pub async fn read_body<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, head: &str) -> Vec<u8> {
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut body))
        .await
        .expect("body in time")
        .unwrap();
    body
}

/// `GET /version` with `host` on an HTTP/1.1 stream; the response head.
pub async fn h1_get_version<S>(stream: &mut S, host: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    write_all(
        stream,
        format!("GET /version HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .await;
    read_head(stream).await
}

pub async fn write_all<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
    stream.flush().await.unwrap();
}

/// Read until EOF or error; true if the server closed the connection within `limit`.
pub async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> bool {
    let mut buf = [0u8; 1024];
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
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

/// Allow only `cidrs` on the first route (its `accessControl`).
pub fn allow_only(config: &mut Config, cidrs: &[&str]) {
    config.routes[0].spec.access_control = Some(apigate_control::access::AccessControlSpec {
        rules: vec![apigate_control::access::RuleSpec {
            action: "allow".into(),
            address_type: None,
            cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        }],
        default_action: None,
    });
}

/// `n` fake replicas on 127.0.0.1 that take `service_time` per request.
pub async fn slow_replicas(pki: &Pki, n: usize, service_time: Duration) -> Vec<Replica> {
    let mut options = pki.replica_options();
    options.service_time = ServiceTime::Fixed(service_time);
    apigate_fake_apiserver::spawn_many(n, "127.0.0.1".parse().unwrap(), options)
        .await
        .unwrap()
}

/// The bytes of a ClientHello for `server_name` (or none, for an IP address).
pub fn client_hello(server_name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(apigate_control::compile::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut bytes = Vec::new();
    conn.write_tls(&mut bytes).unwrap();
    bytes
}

/// The bytes of a fatal TLS alert record with `description`.
pub fn alert(description: u8) -> Vec<u8> {
    vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

/// One HTTP/2 frame, by hand.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A response header's value as text (empty when absent).
pub fn header(r: &apigate_test_support::client::Response, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A kube `Status` body, parsed.
pub fn status(body: &[u8]) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(value["kind"], "Status", "{value}");
    value
}
