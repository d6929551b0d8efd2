//! apigate configured from the testbed's API server (`apigate run --kubernetes` path).
//!
//! The testbed is both the seed (where ApiServerRoutes, Services, EndpointSlices,
//! Secrets and the Gardener acl Extension live) and the backend (the Service's
//! EndpointSlices list the three replicas, as the endpoint controller would). apigate
//! runs in-process through the same functions as the binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use apigate::server::Running;
use apigate_control::source::kubernetes::lease::LeaseConfig;
use apigate_control::source::kubernetes::Options;
use apigate_test_support::metrics::Metrics;

use crate::{text, Testbed};

/// Namespace of the route under test (Gardener's shoot namespace style).
pub const NAMESPACE: &str = "shoot--e2e--k8s";
/// Hostname of the route under test; in the testbed's serving certificate.
pub const K8S_HOST: &str = "kubernetes.default.svc";
/// The route's label in apigate's metrics.
pub const ROUTE: &str = "shoot--e2e--k8s/kube-apiserver";

/// kubectl straight to the testbed as admin (not through apigate), bounded in time
/// (see [`crate::kubectl`]).
pub fn admin(testbed: &Testbed, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
    crate::kubectl(
        testbed,
        Path::new(testbed.get("KUBECONFIG_ADMIN")?),
        None,
        args,
        stdin.map(str::as_bytes),
    )
}

/// [`admin`] that must succeed; returns its output.
pub fn admin_ok(testbed: &Testbed, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let output = admin(testbed, args, stdin)?;
    let out = text(&output);
    ensure!(output.status.success(), "kubectl {args:?} failed: {out}");
    Ok(out)
}

/// `kubectl apply -f -` of `yaml`. Retried a few times: right after a CRD is
/// established, a replica that has not loaded it yet may drop the request.
pub fn apply(testbed: &Testbed, yaml: &str) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match admin_ok(testbed, &["apply", "-f", "-"], Some(yaml)) {
            Ok(_) => return Ok(()),
            Err(e) if attempt >= 4 => return Err(e),
            Err(_) => attempt += 1,
        }
        crate::blocking(|| std::thread::sleep(Duration::from_secs(1)));
    }
}

/// Delete the namespace's `kube-apiserver` route; gone already is fine.
pub fn delete_route(testbed: &Testbed, namespace: &str) -> anyhow::Result<()> {
    let args = [
        "-n",
        namespace,
        "delete",
        "apiserverroute",
        "kube-apiserver",
        "--ignore-not-found",
    ];
    admin_ok(testbed, &args, None).map(|_| ())
}

/// The repository's `manifests/` directory.
pub fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// The fixture CRD standing in for Gardener's `extensions.gardener.cloud` Extension.
pub fn extension_crd() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/fixtures/gardener-extension-crd.yaml")
}

/// Install apigate's CRD and the Gardener Extension CRD, and wait until established.
pub fn install_crds(testbed: &Testbed) -> anyhow::Result<()> {
    let ours = manifests().join("crd/apigate.dev_apiserverroutes.yaml");
    let rollouts = manifests().join("crd/apigate.dev_apigaterollouts.yaml");
    for file in [ours, rollouts, extension_crd()] {
        admin_ok(testbed, &["apply", "-f", &file.display().to_string()], None)?;
    }
    admin_ok(
        testbed,
        &[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/apiserverroutes.apigate.dev",
            "crd/apigaterollouts.apigate.dev",
            "crd/extensions.extensions.gardener.cloud",
        ],
        None,
    )?;
    Ok(())
}

/// One EndpointSlice per replica (all replicas share 127.0.0.1, and a slice has one
/// port list), `discovery.k8s.io/v1beta1` as kube-apiserver 1.20 serves it.
pub fn slice_yaml(index: usize, replica: SocketAddr, ready: bool) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata:
  name: kube-apiserver-{index}
  namespace: {NAMESPACE}
  labels: {{kubernetes.io/service-name: kube-apiserver}}
addressType: IPv4
ports: [{{name: https, port: {port}, protocol: TCP}}]
endpoints:
- addresses: [\"{ip}\"]
  conditions: {{ready: {ready}, terminating: {terminating}}}
",
        port = replica.port(),
        ip = replica.ip(),
        terminating = !ready,
    )
}

/// The acl Extension allowing `cidr`.
pub fn extension_yaml(cidr: &str) -> String {
    format!(
        "apiVersion: extensions.gardener.cloud/v1alpha1
kind: Extension
metadata: {{name: acl, namespace: {NAMESPACE}}}
spec:
  type: acl
  providerConfig:
    rule: {{action: ALLOW, type: remote_ip, cidrs: [\"{cidr}\"]}}
"
    )
}

/// The route under test, serving the TLS Secret `serving_secret`.
pub fn route_yaml(namespace: &str, name: &str, serving_secret: &str) -> String {
    format!(
        "apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hostnames: [{K8S_HOST}]
  backendRef: {{service: kube-apiserver, port: 443}}
  tls:
    secretName: {serving_secret}
    clientCA: {{name: ca}}
  upstream:
    ca: {{name: ca}}
    serverName: kubernetes.default.svc
    frontProxySecretName: front-proxy
"
    )
}

/// Namespace, Secrets, Service, EndpointSlices and acl Extension of the route.
pub fn create_backing_objects(testbed: &Testbed, namespace: &str) -> anyhow::Result<()> {
    let pki = |f: &str| testbed.pki(f).map(|p| p.display().to_string());
    apply(
        testbed,
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n"),
    )?;
    let secret = |args: &[&str]| -> anyhow::Result<()> {
        let mut all = vec!["-n", namespace, "create", "secret"];
        all.extend_from_slice(args);
        admin_ok(testbed, &all, None).map(|_| ())
    };
    secret(&[
        "tls",
        "serving",
        &format!("--cert={}", pki("apiserver.crt")?),
        &format!("--key={}", pki("apiserver.key")?),
    ])?;
    secret(&[
        "generic",
        "ca",
        &format!("--from-file=ca.crt={}", pki("ca.crt")?),
    ])?;
    secret(&[
        "tls",
        "front-proxy",
        &format!("--cert={}", pki("front-proxy-client.crt")?),
        &format!("--key={}", pki("front-proxy-client.key")?),
    ])?;
    // No selector: its endpoints are managed by hand (here: by the test), as an
    // endpoint controller would.
    apply(
        testbed,
        &format!(
            "apiVersion: v1
kind: Service
metadata: {{name: kube-apiserver, namespace: {namespace}}}
spec:
  ports: [{{name: https, port: 443, targetPort: 6443, protocol: TCP}}]
"
        ),
    )?;
    Ok(())
}

type Pending = (
    ::kube::Client,
    apigate_control::source::Inputs,
    Options,
    Option<apigate::kubernetes::share::Sharing>,
);

/// How an in-process apigate replica with the Kubernetes source is set up.
pub struct Replica {
    /// The seed client; the admin kubeconfig's when `None`.
    pub client: Option<::kube::Client>,
    /// Its identity in the Lease, the rollout record and Events.
    pub identity: String,
    /// The Lease electing the replica that writes status and decides rollouts.
    pub lease: String,
    /// How long a leader holds it without renewing.
    pub lease_duration: Duration,
    /// More of the GatewayConfig's spec (YAML lines indented by two spaces).
    pub gateway_spec: String,
}

impl Default for Replica {
    fn default() -> Self {
        Replica {
            client: None,
            identity: "e2e-0".into(),
            lease: "apigate-e2e".into(),
            lease_duration: Duration::from_secs(15),
            gateway_spec: String::new(),
        }
    }
}

/// apigate with the Kubernetes source, in-process.
pub struct KubeGateway {
    pub running: Option<Running>,
    /// What the source needs until [`KubeGateway::start_source`] spawns it.
    pending: Option<Pending>,
    source: Option<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl KubeGateway {
    /// Start the listeners and the admin endpoint, not ready, WITHOUT the Kubernetes
    /// source: `/readyz` can be read before anything could have synced. Then call
    /// [`KubeGateway::start_source`].
    pub async fn start(testbed: &Testbed) -> anyhow::Result<KubeGateway> {
        Self::start_with(testbed, None).await
    }

    /// [`KubeGateway::start`], the source talking to the seed through `client` (for
    /// example a [`crate::front::FaultyFront`]'s) instead of the admin kubeconfig's.
    pub async fn start_with(
        testbed: &Testbed,
        client: Option<::kube::Client>,
    ) -> anyhow::Result<KubeGateway> {
        Self::replica(
            testbed,
            Replica {
                client,
                ..Replica::default()
            },
        )
        .await
    }

    /// [`KubeGateway::start`] set up as `replica` says.
    pub async fn replica(testbed: &Testbed, replica: Replica) -> anyhow::Result<KubeGateway> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: apigate.dev/v1alpha1
kind: GatewayConfig
metadata: {{name: e2e-kubernetes}}
spec:
  listeners: [{{name: https, address: \"127.0.0.1:0\"}}]
  admin: {{address: \"127.0.0.1:0\"}}
{}",
                replica.gateway_spec
            ),
        )?;
        let base = apigate_control::source::load_file(&config)
            .map_err(|e| anyhow::anyhow!("gateway file: {e:?}"))?;
        let snapshot =
            apigate_control::compile(&base).map_err(|e| anyhow::anyhow!("gateway: {e:?}"))?;
        let seed_kubeconfig = PathBuf::from(testbed.get("KUBECONFIG_ADMIN")?);
        let client = match replica.client {
            Some(client) => client,
            None => apigate::kubernetes::client(Some(&seed_kubeconfig)).await?,
        };
        let record = apigate::rollout::shared::RecordName {
            namespace: "default".into(),
            name: "e2e-kubernetes".into(),
        };
        let running = apigate::server::start_with(
            snapshot,
            apigate::server::Source::Kubernetes {
                base: base.clone(),
                record: Some(record.clone()),
            },
            false,
        )
        .await?;
        let sharing = apigate::kubernetes::sharing(&client, record, &replica.identity);
        let options = Options {
            route_selector: None,
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            lease: Some(LeaseConfig {
                namespace: "default".into(),
                name: replica.lease.clone(),
                identity: replica.identity.clone(),
                duration: replica.lease_duration,
            }),
            leadership: None,
            controller: apigate::kubernetes::CONTROLLER.into(),
            instance: replica.identity.clone(),
            rediscovery: Duration::from_secs(1),
            data_plane: Some(apigate::kubernetes::data_plane_notes(running.state.clone())),
        };
        let address = running.address().context("no listener")?;
        let kubeconfig = dir.path().join("kubeconfig");
        let pki = testbed.get("PKI")?;
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: apigate
  cluster: {{server: \"https://{address}\", tls-server-name: {K8S_HOST}, certificate-authority: {pki}/ca.crt}}
users:
- name: admin
  user: {{client-certificate: {pki}/admin.crt, client-key: {pki}/admin.key}}
contexts:
- {{name: admin, context: {{cluster: apigate, user: admin}}}}
current-context: admin
"
            ),
        )?;
        Ok(KubeGateway {
            running: Some(running),
            pending: Some((client, base, options, Some(sharing))),
            source: None,
            dir,
            kubeconfig,
        })
    }

    /// Spawn the Kubernetes source (once); it reports readiness after its first sync.
    pub fn start_source(&mut self) -> anyhow::Result<()> {
        let (client, base, options, sharing) =
            self.pending.take().context("source already started")?;
        let parts = apigate::kubernetes::parts(self.running()?)?;
        self.source = Some(tokio::spawn(apigate::kubernetes::serve(
            client, base, options, parts, sharing,
        )));
        Ok(())
    }

    pub fn running(&self) -> anyhow::Result<&Running> {
        self.running.as_ref().context("apigate stopped")
    }

    pub fn address(&self) -> anyhow::Result<SocketAddr> {
        self.running()?.address().context("no listener")
    }

    /// The status code of `/readyz` on the admin listener (200 ready, 503 not).
    pub async fn readyz(&self) -> anyhow::Result<u16> {
        let admin = self.running()?.admin.context("no admin listener")?;
        Ok(crate::admin_get(admin, "/readyz").await?.0)
    }

    /// kubectl through apigate as admin.
    pub fn kubectl(&self, testbed: &Testbed, args: &[&str]) -> anyhow::Result<Output> {
        crate::kubectl(testbed, &self.kubeconfig, None, args, None)
    }

    /// apigate's metrics, scraped from its admin listener.
    pub async fn metrics(&self) -> anyhow::Result<Metrics> {
        crate::apigate_metrics(self.running()?).await
    }

    pub async fn stop(&mut self) {
        if let Some(source) = self.source.take() {
            source.abort();
            let _ = source.await;
        }
        if let Some(running) = self.running.take() {
            running.shutdown(Duration::from_secs(2)).await;
        }
    }
}

impl Drop for KubeGateway {
    /// A scenario that panicked or timed out leaves neither the source (watching the
    /// testbed with the admin client certificate) nor apigate running.
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            source.abort();
        }
        if let Some(running) = self.running.take() {
            running.stop_now();
        }
    }
}

/// Poll `check` every 50 ms until it holds or `limit` passes; returns the time taken.
pub async fn eventually<F>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> anyhow::Result<bool>,
{
    let started = Instant::now();
    let mut last_error = None;
    while started.elapsed() < limit {
        match check() {
            Ok(true) => return Ok(started.elapsed()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match last_error {
        Some(e) => bail!("{what}: not within {limit:?} (last error: {e:#})"),
        None => bail!("{what}: not within {limit:?}"),
    }
}

/// The DER of the certificate apigate presents for `server_name`, or the handshake
/// error (a refused SNI or a denied address fails the handshake).
pub async fn presented_certificate(
    address: SocketAddr,
    server_name: &str,
    ca_pem: &str,
) -> anyhow::Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(apigate_control::compile::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string())?;
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .context("handshake timed out")??;
    let (_, session) = tls.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no certificate presented")?;
    Ok(leaf.as_ref().to_vec())
}

/// Retry handshakes with `server_name` every 20 ms until they succeed (`allowed`) or
/// fail (refused SNI, denied address); how long it took, or an error after `limit`.
pub async fn until_handshake(
    address: SocketAddr,
    ca_pem: &str,
    allowed: bool,
    limit: Duration,
    what: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while presented_certificate(address, K8S_HOST, ca_pem)
        .await
        .is_ok()
        != allowed
    {
        ensure!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

/// DER of the first certificate in a PEM file.
pub fn certificate_der(path: &Path) -> anyhow::Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    let cert = rustls_pki_types::CertificateDer::from_pem_file(path)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(cert.as_ref().to_vec())
}

/// A second serving certificate for the same names (a rotation), signed by the
/// testbed CA with openssl, as the testbed's own certificates are.
pub fn rotated_serving_cert(testbed: &Testbed, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    testbed.issue_cert(
        dir,
        "rotated",
        "/CN=rotated",
        &format!("basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:{K8S_HOST},DNS:localhost\n"),
    )
}
