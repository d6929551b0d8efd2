//! `apigate demo`: fake API-server replicas plus apigate in front of them, on loopback,
//! with freshly generated certificates. No cluster needed.
//!
//! The demo is the only part of the `apigate` crate that uses the fake replicas and the
//! test client (`apigate-fake-apiserver`, `apigate-test-support`); the data plane
//! never does.
//!
//! It writes a real configuration file and serves it through the same path as
//! `apigate run` (file source → compile → snapshot, with reload), so what the demo shows
//! is what production does. With `--requests N` it sends N requests over one HTTP/2
//! connection, prints how they spread over the replicas, and exits.

pub(crate) mod pki;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use apigate_fake_apiserver::{
    ReplicaOptions, ServiceTime, TlsMaterial, REPLICA_HEADER, USER_HEADER,
};

use self::pki::DemoPki;
use apigate_test_support::client::{ClientTls, H2Client};

/// Host name clients use for the demo API server.
pub const DEMO_HOST: &str = "api.demo.local";
/// Bearer token the demo replicas accept.
pub const DEMO_TOKEN: &str = "demo-token";

/// `apigate demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Fake API-server replicas to start.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// apigate's TLS port on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 8443)]
    pub port: u16,
    /// apigate's admin port on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 9090)]
    pub admin_port: u16,
    /// Where to write certificates, the config and the kubeconfig (default: a new
    /// temporary directory, removed on exit).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Send this many requests over ONE HTTP/2 connection, print the spread, and exit.
    #[arg(long)]
    pub requests: Option<usize>,
    /// Simulated service time of each replica, e.g. `2ms` or `exp:5ms`.
    #[arg(long, default_value = "1ms")]
    pub service_time: String,
}

/// Run the demo until Ctrl-C (or, with `--requests`, until the check is done).
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = TempDir::new()?;
            temp.0.clone()
        }
    };
    let pki = DemoPki::generate()?;
    pki.write(&dir)?;

    let service_time: ServiceTime = args
        .service_time
        .parse()
        .map_err(|e| anyhow::anyhow!("--service-time: {e}"))?;
    let options = ReplicaOptions {
        tls: Some(TlsMaterial::from_issued(&pki.replica_serving)),
        service_time,
        front_proxy_ca_pem: Some(pki.front_proxy_ca.cert_pem()),
        front_proxy_allowed_names: vec![pki::FRONT_PROXY_CN.to_string()],
        client_ca_pem: Some(pki.client_ca.cert_pem()),
        tokens: vec![(
            DEMO_TOKEN.into(),
            "demo-token-user".into(),
            vec!["demo".into()],
        )],
        ..ReplicaOptions::default()
    };
    let replicas = apigate_fake_apiserver::spawn_many(
        args.replicas.max(1),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        options,
    )
    .await
    .context("starting fake API-server replicas")?;
    let backends: Vec<SocketAddr> = replicas.iter().map(|r| r.local_addr()).collect();

    let config_path = dir.join("apigate.yaml");
    std::fs::write(
        &config_path,
        config_yaml(args.port, args.admin_port, &backends),
    )
    .with_context(|| format!("writing {}", config_path.display()))?;
    let (snapshot, file) = crate::server::FileConfig::load(&config_path, Duration::from_secs(1))
        .map_err(|errors| anyhow::anyhow!("demo config invalid: {errors:?}"))?;
    let running = crate::server::start(snapshot, Some(file))
        .await
        .context("starting apigate")?;
    let address = running.address().context("no listener bound")?;
    let admin = running.admin.context("no admin listener bound")?;
    std::fs::write(dir.join("kubeconfig"), kubeconfig(address, &dir))?;

    let result = match args.requests {
        Some(count) => spread_check(address, &pki, count, replicas.len()).await,
        None => {
            print_instructions(&dir, address, admin, &replicas);
            crate::server::wait_for_termination().await;
            Ok(())
        }
    };
    running.shutdown(Duration::from_secs(5)).await;
    for replica in replicas {
        replica.shutdown().await;
    }
    result
}

async fn spread_check(
    address: SocketAddr,
    pki: &DemoPki,
    count: usize,
    replicas: usize,
) -> anyhow::Result<()> {
    let tls = ClientTls {
        ca_pem: pki.server_ca.cert_pem(),
        client_cert: Some((pki.admin.cert_pem.clone(), pki.admin.key_pem.clone())),
        server_name: DEMO_HOST.into(),
    };
    let client = H2Client::connect(address, &tls).await?;
    let who = client.get("/version", &[]).await?;
    let user = who
        .headers
        .get(USER_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string();
    let counts = client
        .spread(
            "/api/v1/namespaces/default/pods",
            &[],
            REPLICA_HEADER,
            count,
            16,
        )
        .await?;
    println!("{count} requests over ONE HTTP/2 connection (client certificate user {user:?}):");
    let even = count as f64 / replicas as f64;
    for (replica, n) in &counts {
        println!(
            "  {replica:<12} {n:>6}  {:>5.1}%  ({:+.1}% from an even share)",
            100.0 * *n as f64 / count as f64,
            100.0 * (*n as f64 - even) / even
        );
    }
    if counts.len() < replicas {
        anyhow::bail!("only {} of {replicas} replicas answered", counts.len());
    }
    Ok(())
}

fn print_instructions(
    dir: &std::path::Path,
    address: SocketAddr,
    admin: SocketAddr,
    replicas: &[apigate_fake_apiserver::Replica],
) {
    let port = address.port();
    let d = dir.display();
    println!(
        "\napigate demo is running: {} fake kube-apiserver replicas behind apigate.",
        replicas.len()
    );
    for r in replicas {
        println!("  {} at {}", r.id(), r.local_addr());
    }
    println!("  apigate TLS listener {address} (SNI {DEMO_HOST}), admin http://{admin}");
    println!("  files in {d}\n");
    println!("Try (each response names the replica that served it in '{REPLICA_HEADER}'):");
    println!("  curl -si --cacert {d}/server-ca.pem --resolve {DEMO_HOST}:{port}:127.0.0.1 \\\n    --cert {d}/admin.pem --key {d}/admin-key.pem https://{DEMO_HOST}:{port}/api/v1/namespaces/default/pods | grep -i x-apiserver");
    println!("  curl -si --cacert {d}/server-ca.pem --resolve {DEMO_HOST}:{port}:127.0.0.1 \\\n    -H 'Authorization: Bearer {DEMO_TOKEN}' https://{DEMO_HOST}:{port}/version | grep -i x-apiserver");
    println!("  kubectl --kubeconfig {d}/kubeconfig get --raw /version");
    println!("  kubectl --kubeconfig {d}/kubeconfig --user token get --raw /api");
    println!("  curl -s http://{admin}/metrics | grep apigate_requests_total");
    println!("\nEdit {d}/apigate.yaml to see a hot reload (an invalid edit is rejected and logged). Ctrl-C stops.");
}

fn config_yaml(port: u16, admin_port: u16, backends: &[SocketAddr]) -> String {
    let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "# Generated by `apigate demo`.
apiVersion: apigate.dev/v1alpha1
kind: GatewayConfig
metadata:
  name: demo
spec:
  listeners:
  - name: https
    address: \"127.0.0.1:{port}\"
  admin:
    address: \"127.0.0.1:{admin_port}\"
  defaults:
    balancing: leastRequest
---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata:
  name: demo
  namespace: garden-demo
spec:
  hostnames: [\"{DEMO_HOST}\"]
  backends:
    static: [{}]
  tls:
    certFile: apigate-serving.pem
    keyFile: apigate-serving-key.pem
    clientCAFile: client-ca.pem
  upstream:
    caFile: replica-ca.pem
    serverName: kubernetes.default.svc
    frontProxyCertFile: front-proxy.pem
    frontProxyKeyFile: front-proxy-key.pem
",
        backends.join(", ")
    )
}

fn kubeconfig(address: SocketAddr, dir: &std::path::Path) -> String {
    let d = dir.display();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: demo
  cluster:
    server: https://{address}
    tls-server-name: {DEMO_HOST}
    certificate-authority: {d}/server-ca.pem
users:
- name: admin
  user:
    client-certificate: {d}/admin.pem
    client-key: {d}/admin-key.pem
- name: token
  user:
    token: {DEMO_TOKEN}
contexts:
- name: demo
  context: {{cluster: demo, user: admin}}
current-context: demo
"
    )
}

/// A temporary directory removed on drop (the demo's default output place).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path =
            std::env::temp_dir().join(format!("apigate-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
