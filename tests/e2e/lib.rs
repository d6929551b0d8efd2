//! End-to-end harness: the real kube-apiserver testbed (etcd + 3 replicas, see
//! `tests/testbed/`) with apigate started in front of it, in-process, through the same
//! path as `apigate run`.
//!
//! The testbed processes are started by `testbed.sh up` and always stopped by
//! [`Testbed`]'s `Drop` (`testbed.sh down`, which kills by pid); apigate by
//! [`Gateway`]'s and [`kube::KubeGateway`]'s. Every command the harness runs (kubectl,
//! openssl, the testbed script) is bounded in time by [`run_bounded`].

#![allow(missing_docs)]

pub mod front;
pub mod kube;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use apigate::server::Running;
use apigate_test_support::client::{ClientTls, H2Client};
use apigate_test_support::metrics::Metrics;

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
        // Constructed first so that Drop brings down whatever `up` started, also when
        // `up` fails or has to be killed.
        let mut testbed = Testbed {
            dir: tempfile::tempdir()?,
            env: BTreeMap::new(),
            script: script(),
        };
        // `up` bounds its own waits (APIGATE_TESTBED_READY_TIMEOUT, 180 s by default).
        let output = testbed
            .script_run("up", Duration::from_secs(300))
            .context("running testbed.sh up")?;
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

    /// One replica's `/metrics`, scraped directly with the admin BEARER TOKEN over a
    /// connection without a client certificate: a scrape presenting one would itself
    /// count in `apiserver_client_certificate_expiration_seconds`.
    pub async fn scrape(&self, replica: SocketAddr) -> anyhow::Result<Metrics> {
        let client = H2Client::connect(replica, &self.client_tls(None, "localhost")?)
            .await
            .with_context(|| format!("connecting to replica {replica}"))?;
        let bearer = format!("Bearer {}", self.get("ADMIN_TOKEN")?);
        let response = client
            .get("/metrics", &[("Authorization", &bearer)])
            .await
            .with_context(|| format!("scraping replica {replica}"))?;
        ensure!(
            response.status == 200,
            "scraping replica {replica}: status {}",
            response.status
        );
        Metrics::parse(&String::from_utf8_lossy(&response.body))
            .with_context(|| format!("parsing the metrics of replica {replica}"))
    }

    /// `apiserver_request_total` of one replica summed over the series carrying every
    /// one of `labels`.
    pub async fn request_total(
        &self,
        replica: SocketAddr,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<f64> {
        Ok(self
            .scrape(replica)
            .await?
            .sum("apiserver_request_total", labels))
    }

    /// Issue a client certificate signed by the testbed CA (as `testbed.sh` issues
    /// alice's) into `dir`: `CN=cn`, one `O=` per group. Returns (cert, key) paths.
    pub fn issue_client_cert(
        &self,
        dir: &Path,
        cn: &str,
        groups: &[&str],
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        let subject: String = groups
            .iter()
            .map(|g| format!("/O={g}"))
            .chain([format!("/CN={cn}")])
            .collect();
        self.issue_cert(
            dir,
            cn,
            &subject,
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
        )
    }

    /// Issue a certificate signed by the testbed CA with openssl, as the testbed's own
    /// are: an EC P-256 key, `subject`, the X.509v3 `extensions` (openssl extfile
    /// syntax), valid two days. Files `NAME.{key,crt}` in `dir`; returns (cert, key).
    pub fn issue_cert(
        &self,
        dir: &Path,
        name: &str,
        subject: &str,
        extensions: &str,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.issue_cert_by("ca", dir, name, subject, extensions)
    }

    /// [`Testbed::issue_cert`], signed by the testbed's CA named `ca` (`ca`, or
    /// `front-proxy-ca` for front-proxy client certificates).
    pub fn issue_cert_by(
        &self,
        ca: &str,
        dir: &Path,
        name: &str,
        subject: &str,
        extensions: &str,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        let key = dir.join(format!("{name}.key"));
        let csr = dir.join(format!("{name}.csr"));
        let cert = dir.join(format!("{name}.crt"));
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(&ext, extensions)?;
        let p = |p: &Path| p.display().to_string();
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &p(&key),
        ])?;
        openssl(&[
            "req",
            "-new",
            "-key",
            &p(&key),
            "-subj",
            subject,
            "-out",
            &p(&csr),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p(&csr),
            "-CA",
            &p(&self.pki(&format!("{ca}.crt"))?),
            "-CAkey",
            &p(&self.pki(&format!("{ca}.key"))?),
            "-set_serial",
            &format!("0x{:x}", rand_serial()),
            "-days",
            "2",
            "-sha256",
            "-extfile",
            &p(&ext),
            "-out",
            &p(&cert),
        ])?;
        Ok((cert, key))
    }

    /// Run `testbed.sh SUBCOMMAND DIR`, bounded by `limit`.
    fn script_run(
        &self,
        subcommand: &str,
        limit: Duration,
    ) -> anyhow::Result<std::process::Output> {
        run_bounded(
            Command::new("bash")
                .arg(&self.script)
                .arg(subcommand)
                .arg(self.dir.path()),
            None,
            limit,
        )
    }

    /// `testbed.sh down` (idempotent: only processes `up` recorded and still running
    /// are signalled). Also run by `Drop`.
    pub fn down(&self) {
        let _ = self.script_run("down", Duration::from_secs(60));
    }
}

/// A certificate serial unlikely to repeat (several certificates per CA in one run).
fn rand_serial() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    u64::try_from(nanos % u128::from(u64::MAX >> 1)).unwrap_or(1) | 1
}

/// Run openssl; an error carries its output.
pub fn openssl(args: &[&str]) -> anyhow::Result<()> {
    run_checked(
        Command::new("openssl").args(args),
        Duration::from_secs(30),
        &format!("openssl {args:?}"),
    )
}

/// [`run_bounded`] without input; a failed exit is an error that names `what` and
/// carries the output.
fn run_checked(command: &mut Command, limit: Duration, what: &str) -> anyhow::Result<()> {
    let output = run_bounded(command, None, limit)?;
    ensure!(output.status.success(), "{what}: {}", text(&output));
    Ok(())
}

/// Run a command with `stdin` (or none) and wait at most `limit`; on timeout the
/// process is killed and the error carries what it printed. On a multi-threaded
/// tokio runtime the wait runs under `block_in_place`: a plain blocking call would
/// strand the tasks queued on this worker (apigate's own listener among them).
pub fn run_bounded(
    command: &mut Command,
    stdin: Option<&[u8]>,
    limit: Duration,
) -> anyhow::Result<Output> {
    let run = || -> anyhow::Result<Output> {
        let mut child = command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        // Readers and the writer in threads: a full pipe never blocks the deadline.
        fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        }
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        let deadline = Instant::now() + limit;
        let (status, killed) = loop {
            if let Some(status) = child.try_wait()? {
                break (status, false);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                break (child.wait()?, true);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // A grandchild holding the pipes open must not block us either.
        let join = |handle: std::thread::JoinHandle<Vec<u8>>| {
            let until = Instant::now() + Duration::from_secs(5);
            while !handle.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                handle.join().unwrap_or_default()
            } else {
                b"(output still open after the process ended)".to_vec()
            }
        };
        let output = Output {
            status,
            stdout: join(stdout),
            stderr: join(stderr),
        };
        if killed {
            bail!(
                "{command:?} did not finish within {limit:?}; killed. Output: {}",
                short(&text(&output))
            );
        }
        Ok(output)
    };
    blocking(run)
}

/// Run blocking `f`; on a multi-threaded tokio runtime under `block_in_place`, so
/// that the tasks queued on this worker (apigate's own listener among them) move to
/// another one meanwhile.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// At most ~2 KiB of `text`, for error messages.
pub fn short(text: &str) -> String {
    const LIMIT: usize = 2048;
    if text.len() <= LIMIT {
        return text.to_string();
    }
    let mut end = LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// A GET over plain HTTP/1.1 to an admin address: status and body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(admin).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await?;
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .with_context(|| format!("GET {path} on {admin}: no answer within 10 s"))??;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("GET {path} on {admin}: bad answer {:?}", short(&answer)))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// apigate's own metrics, scraped from its admin listener as an operator would.
pub async fn apigate_metrics(running: &Running) -> anyhow::Result<Metrics> {
    let admin = running.admin.context("apigate has no admin listener")?;
    let (status, body) = admin_get(admin, "/metrics").await?;
    ensure!(status == 200, "apigate /metrics: status {status}");
    Ok(Metrics::parse(&body)?)
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.down();
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
        let (fp_cert, fp_key) = Gateway::front_proxy_files_in(dir.path());
        std::fs::copy(testbed.pki("front-proxy-client.crt")?, &fp_cert)?;
        std::fs::copy(testbed.pki("front-proxy-client.key")?, &fp_key)?;
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
  # Every HTTP/2 client (kubectl, client-go) silent for half a second is PINGed: all
  # scenarios run with the keepalive busy.
  http2: {{keepaliveInterval: 500ms, keepaliveTimeout: 3s}}
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
  # One policy, on lists in kube-public only (the flow-control scenario's): no other
  # scenario is limited. No group is exempt, so the admin certificate is limited too.
  flowControl:
    exempt: {{groups: []}}
    policies:
    - name: e2e-kube-public-lists
      match: {{verbs: [list], namespaces: [kube-public]}}
      qps: 0.25
      burst: 1
",
            backends = backends.join(", "),
            cert = pki("apiserver.crt")?,
            key = pki("apiserver.key")?,
            ca = pki("ca.crt")?,
            fp_cert = fp_cert.display(),
            fp_key = fp_key.display(),
        );
        let path = dir.path().join("apigate.yaml");
        std::fs::write(&path, config)?;
        // Reloaded when a file changes, as `apigate run` does: a scenario rotates the
        // front-proxy identity (its own copy) under load.
        let (snapshot, file) = apigate::server::FileConfig::load(&path, Duration::from_millis(100))
            .map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
        let running = apigate::server::start(snapshot, Some(file)).await?;
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

    /// The front-proxy certificate and key this gateway presents (its own copies).
    pub fn front_proxy_files(&self) -> (PathBuf, PathBuf) {
        Gateway::front_proxy_files_in(self.dir.path())
    }

    fn front_proxy_files_in(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("front-proxy.crt"), dir.join("front-proxy.key"))
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
        self.kubectl_input(testbed, context, args, None)
    }

    /// [`Gateway::kubectl`] with `stdin` fed to kubectl.
    pub fn kubectl_input(
        &self,
        testbed: &Testbed,
        context: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> anyhow::Result<Output> {
        kubectl(testbed, &self.kubeconfig, Some(context), args, stdin)
    }

    /// A kubeconfig (written into `path`) for a client certificate user through
    /// apigate's terminating route; context `user`.
    pub fn write_kubeconfig(
        &self,
        testbed: &Testbed,
        path: &Path,
        user: &str,
        cert: &Path,
        key: &Path,
    ) -> anyhow::Result<()> {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: apigate
  cluster: {{server: \"https://{address}\", tls-server-name: {HOST}, certificate-authority: {ca}}}
users:
- name: {user}
  user: {{client-certificate: {cert}, client-key: {key}}}
contexts:
- {{name: {user}, context: {{cluster: apigate, user: {user}}}}}
current-context: {user}
",
                address = self.address()?,
                ca = testbed.pki("ca.crt")?.display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )?;
        Ok(())
    }

    /// apigate's metrics, scraped from its admin listener.
    pub async fn metrics(&self) -> anyhow::Result<Metrics> {
        apigate_metrics(self.running.as_ref().context("apigate not running")?).await
    }

    pub async fn stop(&mut self) {
        self.forwarder.abort();
        if let Some(running) = self.running.take() {
            running.shutdown(Duration::from_secs(2)).await;
        }
    }
}

impl Drop for Gateway {
    /// A scenario that panicked or timed out never leaves apigate serving.
    fn drop(&mut self) {
        self.forwarder.abort();
        if let Some(running) = self.running.take() {
            running.stop_now();
        }
    }
}

/// The testbed's kubectl 1.20 with `kubeconfig` (and `context`), bounded in time:
/// `--request-timeout=20s` for each request and 60 s for the whole command.
pub fn kubectl(
    testbed: &Testbed,
    kubeconfig: &Path,
    context: Option<&str>,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> anyhow::Result<Output> {
    let mut command = Command::new(testbed.get("KUBECTL")?);
    command.arg("--kubeconfig").arg(kubeconfig);
    if let Some(context) = context {
        command.arg("--context").arg(context);
    }
    command.arg("--request-timeout=20s").args(args);
    run_bounded(&mut command, stdin, Duration::from_secs(60))
        .with_context(|| format!("kubectl {args:?} ({context:?})"))
}

/// stdout + stderr of a command, for assertions and messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether process `pid` exists and is not a zombie (testbed processes are not our
/// children; nobody may reap them at once).
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s != "Z"))
        })
        .unwrap_or(false)
}

/// `kill -SIGNAL pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    run_checked(
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string()),
        Duration::from_secs(10),
        &format!("kill -{signal} {pid}"),
    )
}

/// One HTTP/1.1 request over TLS (ALPN `http/1.1`) to `address`: `head` is the
/// request head without its final blank line. Returns the response head and whatever
/// body arrived within 5 s (for upgrade requests: the refusal, or nothing after 101).
pub async fn http1_exchange(
    address: SocketAddr,
    tls: &ClientTls,
    head: &str,
) -> anyhow::Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = apigate_test_support::client::client_config(tls, vec![b"http/1.1".to_vec()])?;
    let name = rustls_pki_types::ServerName::try_from(tls.server_name.clone())?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(address).await?;
        let mut stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await?;
        stream
            .write_all(format!("{head}\r\n\r\n").as_bytes())
            .await?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            }
            // A 101 leaves the stream open: the head is all we want.
            if answer.starts_with(b"HTTP/1.1 101") && answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .context("HTTP/1.1 exchange timed out")??;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or((answer, String::new()));
    Ok((head, body))
}
