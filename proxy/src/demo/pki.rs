//! The demo's certificates: four CAs, as a real control plane has them.
//!
//! - server CA → apigate's serving certificate for the demo host name;
//! - replica CA → the replicas' serving certificates (`kubernetes.default.svc`);
//! - client CA → the demo user's client certificate;
//! - front-proxy CA → apigate's front-proxy client certificate.

use std::path::Path;

use anyhow::Context;
use apigate_fake_apiserver::pki::{Ca, Issued};

/// CN of apigate's front-proxy certificate, trusted by the replicas.
pub(super) const FRONT_PROXY_CN: &str = "apigate-front-proxy";

/// Generated demo PKI.
pub(crate) struct DemoPki {
    pub(super) server_ca: Ca,
    pub(super) serving: Issued,
    pub(super) replica_ca: Ca,
    pub(super) replica_serving: Issued,
    pub(super) client_ca: Ca,
    pub(super) admin: Issued,
    pub(super) front_proxy_ca: Ca,
    pub(super) front_proxy: Issued,
}

impl DemoPki {
    /// Generate everything (ECDSA P-256, in memory).
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let server_ca = Ca::new("apigate-demo-server-ca")?;
        let serving = server_ca.issue_server(&[super::DEMO_HOST, "localhost", "127.0.0.1"])?;
        let replica_ca = Ca::new("apigate-demo-replica-ca")?;
        let replica_serving =
            replica_ca.issue_server(&["kubernetes.default.svc", "localhost", "127.0.0.1"])?;
        let client_ca = Ca::new("apigate-demo-client-ca")?;
        let admin = client_ca.issue_client("demo-admin", &["system:masters", "demo"])?;
        let front_proxy_ca = Ca::new("apigate-demo-front-proxy-ca")?;
        let front_proxy = front_proxy_ca.issue_client(FRONT_PROXY_CN, &[])?;
        Ok(DemoPki {
            server_ca,
            serving,
            replica_ca,
            replica_serving,
            client_ca,
            admin,
            front_proxy_ca,
            front_proxy,
        })
    }

    /// Write the files the demo config and kubeconfig refer to.
    pub(super) fn write(&self, dir: &Path) -> anyhow::Result<()> {
        for (name, content) in self.files() {
            let path = dir.join(name);
            std::fs::write(&path, content)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// The files by name, as PEM.
    pub(crate) fn files(&self) -> [(&'static str, String); 9] {
        [
            ("server-ca.pem", self.server_ca.cert_pem()),
            ("apigate-serving.pem", self.serving.cert_pem.clone()),
            ("apigate-serving-key.pem", self.serving.key_pem.clone()),
            ("replica-ca.pem", self.replica_ca.cert_pem()),
            ("client-ca.pem", self.client_ca.cert_pem()),
            ("admin.pem", self.admin.cert_pem.clone()),
            ("admin-key.pem", self.admin.key_pem.clone()),
            ("front-proxy.pem", self.front_proxy.cert_pem.clone()),
            ("front-proxy-key.pem", self.front_proxy.key_pem.clone()),
        ]
    }
}
