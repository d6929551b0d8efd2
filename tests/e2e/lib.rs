//! End-to-end harness: the real kube-apiserver testbed (etcd + 3 replicas, see
//! `tests/testbed/`) with apigate started in front of it, in-process, through the same
//! path as `apigate run`.
//!
//! The testbed processes are started by `testbed.sh up` and always stopped by
//! [`Testbed`]'s `Drop` (`testbed.sh down`, which kills by pid).

#![allow(missing_docs)]

pub mod kube;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context};
use apigate::server::Running;
use apigate_control::source::FileSource;
use apigate_test_support::client::{ClientTls, H2Client};

/// SNI clients use for the testbed's API server through apigate; it is in the
/// replicas' serving certificate, which apigate serves too (as Gardener's gateway does).
pub const HOST: &str = "kubernetes.default.svc.cluster.local";

/// A running testbed.
pub struct Testbed {
    pub dir: tempfile::TempDir,
    pub env: BTreeMap<String, String>,
    script: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/testbed.sh")
}

impl Testbed {
    /// `testbed.sh up` into a fresh directory.
    pub fn up() -> anyhow::Result<Testbed> {
        let dir = tempfile::tempdir()?;
        let script = script();
        let output = Command::new("bash")
            .arg(&script)
            .arg("up")
            .arg(dir.path())
            .output()
            .context("running testbed.sh up")?;
        // Constructed first so that Drop brings down whatever `up` started.
        let mut testbed = Testbed {
            dir,
            env: BTreeMap::new(),
            script,
        };
        if !output.status.success() {
            bail!(
                "testbed.sh up failed (run `tests/testbed/testbed.sh install` first):\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let text = std::fs::read_to_string(testbed.dir.path().join("testbed.env"))?;
        testbed.env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(testbed)
    }

    pub fn get(&self, key: &str) -> anyhow::Result<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("testbed.env has no {key}"))
    }

    pub fn pki(&self, file: &str) -> anyhow::Result<PathBuf> {
        Ok(Path::new(self.get("PKI")?).join(file))
    }

    pub fn replicas(&self) -> anyhow::Result<Vec<SocketAddr>> {
        self.get("APISERVER_ADDRS")?
            .split(',')
            .map(|a| a.parse().with_context(|| format!("bad address {a}")))
            .collect()
    }

    pub fn replica_pids(&self) -> anyhow::Result<Vec<u32>> {
        self.get("APISERVER_PIDS")?
            .split(',')
            .map(|p| p.parse().with_context(|| format!("bad pid {p}")))
            .collect()
    }

    fn read(&self, file: &str) -> anyhow::Result<String> {
        let path = self.pki(file)?;
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// TLS settings for a client of apigate (or of a replica, with `server_name`).
    pub fn client_tls(&self, user: Option<&str>, server_name: &str) -> anyhow::Result<ClientTls> {
        let client_cert = match user {
            Some(user) => Some((
                self.read(&format!("{user}.crt"))?,
                self.read(&format!("{user}.key"))?,
            )),
            None => None,
        };
        Ok(ClientTls {
            ca_pem: self.read("ca.crt")?,
            client_cert,
            server_name: server_name.into(),
        })
    }

    /// `apiserver_request_total` of one replica, scraped directly with the admin cert,
    /// summed over the series whose labels contain every one of `labels`.
    pub async fn request_total(&self, replica: SocketAddr, labels: &[&str]) -> anyhow::Result<f64> {
        let client =
            H2Client::connect(replica, &self.client_tls(Some("admin"), "localhost")?).await?;
        let response = client.get("/metrics", &[]).await?;
        let text = String::from_utf8_lossy(&response.body);
        Ok(sum_series(&text, "apiserver_request_total{", labels))
    }
}

/// Sum of the Prometheus text-format series starting with `prefix` whose line
/// contains every one of `labels`.
pub fn sum_series(text: &str, prefix: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("down")
            .arg(self.dir.path())
            .output();
    }
}

/// SNI of the passthrough route (also in the replicas' serving certificate).
pub const PASSTHROUGH_HOST: &str = "kubernetes";
/// CONNECT destination of the terminating route (its namespace is `e2e`).
pub const DESTINATION: &str = "outbound|443||kube-apiserver.e2e.svc.cluster.local";

/// apigate in front of the testbed.
pub struct Gateway {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    /// Stand-in for Gardener's apiserver-proxy: plain TCP in, CONNECT with the
    /// destination header to apigate's CONNECT listener, then a splice.
    forwarder: tokio::task::JoinHandle<()>,
}

/// Accept plain TCP and tunnel each connection through apigate's CONNECT listener,
/// the way the shoot's apiserver-proxy (Envoy) does.
async fn forward(listener: tokio::net::TcpListener, connect: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Ok((mut client, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(mut tunnel) = tokio::net::TcpStream::connect(connect).await else {
                return;
            };
            let request = format!(
                "CONNECT kube-apiserver:443 HTTP/1.1\r\nHost: kube-apiserver:443\r\nX-Gardener-Destination: {DESTINATION}\r\n\r\n"
            );
            if tunnel.write_all(request.as_bytes()).await.is_err() {
                return;
            }
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
                match tunnel.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            if !head.starts_with(b"HTTP/1.1 200") {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut client, &mut tunnel).await;
        });
    }
}

impl Gateway {
    pub async fn start(testbed: &Testbed) -> anyhow::Result<Gateway> {
        let dir = tempfile::tempdir()?;
        let backends: Vec<String> = testbed
            .replicas()?
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect();
        let pki = |f: &str| testbed.pki(f).map(|p| p.display().to_string());
        let config = format!(
            "apiVersion: apigate.dev/v1alpha1
kind: GatewayConfig
metadata: {{name: e2e}}
spec:
  listeners:
  - {{name: https, address: \"127.0.0.1:0\"}}
  - {{name: connect, kind: connect, address: \"127.0.0.1:0\"}}
  admin: {{address: \"127.0.0.1:0\"}}
---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {{name: testbed-passthrough, namespace: e2e-passthrough}}
spec:
  hostnames: [{PASSTHROUGH_HOST}]
  mode: passthrough
  backends: {{static: [{backends}]}}
---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {{name: testbed, namespace: e2e}}
spec:
  hostnames: [{HOST}]
  backends: {{static: [{backends}]}}
  tls: {{certFile: {cert}, keyFile: {key}, clientCAFile: {ca}}}
  upstream:
    caFile: {ca}
    serverName: kubernetes.default.svc
    frontProxyCertFile: {fp_cert}
    frontProxyKeyFile: {fp_key}
",
            backends = backends.join(", "),
            cert = pki("apiserver.crt")?,
            key = pki("apiserver.key")?,
            ca = pki("ca.crt")?,
            fp_cert = pki("front-proxy-client.crt")?,
            fp_key = pki("front-proxy-client.key")?,
        );
        let path = dir.path().join("apigate.yaml");
        std::fs::write(&path, config)?;
        let source = FileSource::new(&path);
        let snapshot = source
            .load()
            .and_then(|inputs| apigate_control::compile(&inputs))
            .map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
        let running = apigate::server::start(snapshot, None).await?;
        let address = running.address().context("no listener")?;
        let connect = running
            .listeners
            .iter()
            .find(|(name, _)| name == "connect")
            .map(|(_, a)| *a)
            .context("no CONNECT listener")?;
        let forwarder_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let forwarder_address = forwarder_listener.local_addr()?;
        let forwarder = tokio::spawn(forward(forwarder_listener, connect));
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: apigate
  cluster: {{server: \"https://{address}\", tls-server-name: {HOST}, certificate-authority: {ca}}}
- name: apigate-passthrough
  cluster: {{server: \"https://{address}\", tls-server-name: {PASSTHROUGH_HOST}, certificate-authority: {ca}}}
- name: apigate-connect
  cluster: {{server: \"https://{forwarder_address}\", tls-server-name: {HOST}, certificate-authority: {ca}}}
users:
- name: admin
  user: {{client-certificate: {pki_dir}/admin.crt, client-key: {pki_dir}/admin.key}}
- name: alice
  user: {{client-certificate: {pki_dir}/alice.crt, client-key: {pki_dir}/alice.key}}
- name: bob
  user: {{token: {bob}}}
contexts:
- {{name: admin, context: {{cluster: apigate, user: admin}}}}
- {{name: alice, context: {{cluster: apigate, user: alice}}}}
- {{name: bob, context: {{cluster: apigate, user: bob}}}}
- {{name: passthrough-alice, context: {{cluster: apigate-passthrough, user: alice}}}}
- {{name: passthrough-bob, context: {{cluster: apigate-passthrough, user: bob}}}}
- {{name: connect-alice, context: {{cluster: apigate-connect, user: alice}}}}
- {{name: connect-bob, context: {{cluster: apigate-connect, user: bob}}}}
current-context: admin
",
                ca = pki("ca.crt")?,
                pki_dir = testbed.get("PKI")?,
                bob = testbed.get("BOB_TOKEN")?,
            ),
        )?;
        Ok(Gateway {
            running: Some(running),
            dir,
            kubeconfig,
            forwarder,
        })
    }

    pub fn address(&self) -> anyhow::Result<SocketAddr> {
        self.running
            .as_ref()
            .and_then(Running::address)
            .context("apigate not running")
    }

    /// Run kubectl (the testbed's 1.20 client) through apigate as `context`.
    pub fn kubectl(
        &self,
        testbed: &Testbed,
        context: &str,
        args: &[&str],
    ) -> anyhow::Result<Output> {
        let output = Command::new(testbed.get("KUBECTL")?)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--context")
            .arg(context)
            .arg("--request-timeout=20s")
            .args(args)
            .output()
            .context("running kubectl")?;
        Ok(output)
    }

    /// Value of one apigate metric line (exact labels as rendered), or 0.
    pub fn metric(&self, name_and_labels: &str) -> f64 {
        let Some(running) = &self.running else {
            return 0.0;
        };
        running
            .state
            .metrics
            .render()
            .lines()
            .find_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                (key == name_and_labels).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }

    pub async fn stop(&mut self) {
        self.forwarder.abort();
        if let Some(running) = self.running.take() {
            running.shutdown(Duration::from_secs(2)).await;
        }
    }
}

/// stdout + stderr of a command, for assertions and messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
