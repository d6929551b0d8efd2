//! `backend`: N fake API-server replicas (from the shared `apigate-fake-apiserver`
//! crate) as a controllable benchmark target, plus what a benchmark around them needs:
//! certificate files on disk, a machine-readable list of replicas, and a small admin
//! endpoint to flip a replica's `/readyz` while load is running.
//!
//! Admin API (plain HTTP/1.1, loopback by default):
//! - `GET /replicas` → `[{"id","addr","ready","condition","requests_total",
//!   "last_request_unix_ns","open_watches"}]`
//! - `POST /replicas/{id}/ready?value=false|true` → 204, 404 unknown id, 400 bad value
//!   (`false`: `/readyz` fails as during kube-apiserver's shutdown delay)
//! - `POST /replicas/{id}/condition?value=ready|not-ready|shutting-down|retry-after-shutdown|throttling`
//!   → 204: what a current kube-apiserver goes through ([`Condition`])

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use apigate_fake_apiserver::pki::Ca;
use apigate_fake_apiserver::{
    spawn_many, Condition, Replica, ReplicaOptions, ServiceTime, TlsMaterial,
};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What to start.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Number of replicas.
    pub replicas: usize,
    /// Listen address of the replicas.
    pub host: IpAddr,
    /// Service time of non-watch requests.
    pub service_time: ServiceTime,
    /// Items per LIST.
    pub list_size: usize,
    /// Padding per object.
    pub object_bytes: usize,
    /// Interval between watch events.
    pub watch_event_interval: Duration,
    /// Plaintext instead of TLS.
    pub plain: bool,
    /// Extra names for the serving certificate.
    pub san: Vec<String>,
    /// Where to write certificates and the replica list.
    pub out_dir: Option<PathBuf>,
    /// Admin listen address.
    pub admin: SocketAddr,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            replicas: 3,
            host: IpAddr::from([127, 0, 0, 1]),
            service_time: ServiceTime::default(),
            list_size: 10,
            object_bytes: 256,
            watch_event_interval: Duration::from_secs(1),
            plain: false,
            san: Vec::new(),
            out_dir: None,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Bad option.
    #[error("{0}")]
    Invalid(String),
    /// Certificates or replicas could not be created.
    #[error("fake apiserver: {0}")]
    Fake(#[from] apigate_fake_apiserver::Error),
    /// Files or admin listener.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Certificate material in memory (also written to `out_dir` when given).
#[derive(Clone)]
pub struct Pki {
    /// CA certificate (PEM) — pass to `run --ca`.
    pub ca_pem: String,
    /// Serving certificate (PEM).
    pub server_cert_pem: String,
    /// Serving key (PEM).
    pub server_key_pem: String,
    /// Client certificate (PEM), CN `apigate-loadtest`, O `system:masters`.
    pub client_cert_pem: String,
    /// Client key (PEM).
    pub client_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// Running replicas and their admin endpoint.
pub struct Backend {
    replicas: Arc<Vec<Replica>>,
    ready: Arc<Vec<AtomicBool>>,
    admin_addr: SocketAddr,
    admin_stop: watch::Sender<bool>,
    admin_task: tokio::task::JoinHandle<()>,
    /// Certificates (None when plain).
    pub pki: Option<Pki>,
    plain: bool,
}

/// One replica in `GET /replicas` and `backends.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaInfo {
    /// Replica id (the `x-apiserver-replica` header value).
    pub id: String,
    /// Listen address.
    pub addr: SocketAddr,
    /// Base URL.
    pub url: String,
    /// Whether `/readyz` is 200.
    pub ready: bool,
    /// Its condition ([`Condition::name`]).
    pub condition: &'static str,
    /// Requests served (health and metrics excluded).
    pub requests_total: u64,
    /// Unix time (ns) of the latest of them; 0 before the first.
    pub last_request_unix_ns: u64,
    /// Open watch streams.
    pub open_watches: u64,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
    let context = context.into();
    move |source| BackendError::Io { context, source }
}

impl Backend {
    /// Starts the replicas and the admin endpoint, and writes files to `out_dir`.
    pub async fn start(opts: BackendOptions) -> Result<Self, BackendError> {
        if opts.replicas == 0 || opts.replicas > 1000 {
            return Err(BackendError::Invalid(
                "--replicas must be between 1 and 1000".into(),
            ));
        }
        let pki = if opts.plain {
            None
        } else {
            Some(make_pki(&opts)?)
        };
        let ropts = ReplicaOptions {
            tls: pki.as_ref().map(|p| TlsMaterial {
                cert_chain_pem: p.server_cert_pem.clone(),
                key_pem: p.server_key_pem.clone(),
                client_ca_pem: None,
            }),
            client_ca_pem: pki.as_ref().map(|p| p.ca_pem.clone()),
            service_time: opts.service_time,
            list_size: opts.list_size,
            object_bytes: opts.object_bytes,
            watch_event_interval: opts.watch_event_interval,
            ..ReplicaOptions::default()
        };
        let replicas = spawn_many(opts.replicas, opts.host, ropts).await?;
        let ready = Arc::new(
            replicas
                .iter()
                .map(|_| AtomicBool::new(true))
                .collect::<Vec<_>>(),
        );
        let replicas = Arc::new(replicas);
        let listener = TcpListener::bind(opts.admin)
            .await
            .map_err(io_err(format!("binding admin {}", opts.admin)))?;
        let admin_addr = listener.local_addr().map_err(io_err("admin address"))?;
        let (admin_stop, stop_rx) = watch::channel(false);
        let admin_task = tokio::spawn(admin_loop(
            listener,
            Arc::clone(&replicas),
            Arc::clone(&ready),
            opts.plain,
            stop_rx,
        ));
        let backend = Self {
            replicas,
            ready,
            admin_addr,
            admin_stop,
            admin_task,
            pki,
            plain: opts.plain,
        };
        if let Some(dir) = &opts.out_dir {
            backend.write_files(dir)?;
        }
        Ok(backend)
    }

    /// The replicas' current state.
    pub fn replicas(&self) -> Vec<ReplicaInfo> {
        infos(&self.replicas, &self.ready, self.plain)
    }

    /// Replica ids in order.
    pub fn ids(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.id().to_owned()).collect()
    }

    /// Base URLs in order.
    pub fn urls(&self) -> Vec<String> {
        self.replicas().into_iter().map(|r| r.url).collect()
    }

    /// Admin endpoint address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Flips a replica's readiness; false when the id is unknown.
    pub fn set_ready(&self, id: &str, ready: bool) -> bool {
        set_ready(&self.replicas, &self.ready, id, ready)
    }

    /// Human-readable description for the terminal.
    pub fn describe(&self, dir: Option<&Path>) -> String {
        let mut s = String::new();
        for r in self.replicas() {
            let _ = writeln!(s, "replica {} {}", r.id, r.url);
        }
        let _ = writeln!(s, "admin http://{}/replicas", self.admin_addr);
        if let Some(d) = dir {
            let _ = writeln!(s, "files {} (ca.pem, client.pem, client-key.pem, server-bundle.pem, backends.env, backends.json)", d.display());
        }
        s
    }

    fn write_files(&self, dir: &Path) -> Result<(), BackendError> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let write = |name: &str, content: &str| {
            let p = dir.join(name);
            std::fs::write(&p, content).map_err(io_err(format!("writing {}", p.display())))
        };
        let mut env = String::new();
        if let Some(p) = &self.pki {
            write("ca.pem", &p.ca_pem)?;
            write("server.pem", &p.server_cert_pem)?;
            write("server-key.pem", &p.server_key_pem)?;
            write(
                "server-bundle.pem",
                &format!("{}{}", p.server_cert_pem, p.server_key_pem),
            )?;
            write("client.pem", &p.client_cert_pem)?;
            write("client-key.pem", &p.client_key_pem)?;
            for (k, f) in [
                ("CA", "ca.pem"),
                ("SERVER_CERT", "server.pem"),
                ("SERVER_KEY", "server-key.pem"),
                ("SERVER_BUNDLE", "server-bundle.pem"),
                ("CLIENT_CERT", "client.pem"),
                ("CLIENT_KEY", "client-key.pem"),
            ] {
                let _ = writeln!(env, "{k}='{}'", dir.join(f).display());
            }
        }
        let infos = self.replicas();
        let ids: Vec<&str> = infos.iter().map(|r| r.id.as_str()).collect();
        let addrs: Vec<String> = infos.iter().map(|r| r.addr.to_string()).collect();
        let urls: Vec<&str> = infos.iter().map(|r| r.url.as_str()).collect();
        let _ = writeln!(env, "REPLICA_IDS='{}'", ids.join(","));
        let _ = writeln!(env, "REPLICA_ADDRS='{}'", addrs.join(" "));
        let _ = writeln!(env, "REPLICA_URLS='{}'", urls.join(" "));
        let _ = writeln!(env, "ADMIN='{}'", self.admin_addr);
        write("backends.env", &env)?;
        let mut json = BTreeMap::new();
        json.insert("replicas", serde_json::to_value(&infos).unwrap_or_default());
        json.insert(
            "admin",
            serde_json::Value::String(format!("http://{}", self.admin_addr)),
        );
        json.insert(
            "ca",
            serde_json::Value::String(dir.join("ca.pem").display().to_string()),
        );
        write(
            "backends.json",
            &serde_json::to_string_pretty(&json).unwrap_or_default(),
        )?;
        Ok(())
    }

    /// Stops the admin endpoint and all replicas (bounded).
    pub async fn shutdown(self) {
        let _ = self.admin_stop.send(true);
        let _ = self.admin_task.await;
        match Arc::try_unwrap(self.replicas) {
            Ok(replicas) => {
                for r in replicas {
                    r.shutdown().await;
                }
            }
            // Someone still holds them (cannot happen once the admin task ended); dropping
            // the last reference stops them without waiting.
            Err(shared) => drop(shared),
        }
    }
}

fn make_pki(opts: &BackendOptions) -> Result<Pki, BackendError> {
    let ca = Ca::new("apigate-loadtest CA")?;
    let host = opts.host.to_string();
    let mut names: Vec<&str> = vec!["localhost", "127.0.0.1", "::1"];
    if !names.contains(&host.as_str()) {
        names.push(&host);
    }
    names.extend(opts.san.iter().map(String::as_str));
    let server = ca.issue_server(&names)?;
    let client = ca.issue_client("apigate-loadtest", &["system:masters"])?;
    Ok(Pki {
        ca_pem: ca.cert_pem(),
        server_cert_pem: server.cert_pem,
        server_key_pem: server.key_pem,
        client_cert_pem: client.cert_pem,
        client_key_pem: client.key_pem,
    })
}

fn infos(replicas: &[Replica], ready: &[AtomicBool], plain: bool) -> Vec<ReplicaInfo> {
    replicas
        .iter()
        .zip(ready)
        .map(|(r, ready)| ReplicaInfo {
            id: r.id().to_owned(),
            addr: r.local_addr(),
            url: format!(
                "{}://{}",
                if plain { "http" } else { "https" },
                r.local_addr()
            ),
            ready: ready.load(Ordering::Relaxed),
            condition: r.condition().name(),
            requests_total: r.requests_total(),
            last_request_unix_ns: r.last_request_unix_nanos(),
            open_watches: r.open_watches(),
        })
        .collect()
}

fn set_ready(replicas: &[Replica], ready: &[AtomicBool], id: &str, value: bool) -> bool {
    match replicas.iter().position(|r| r.id() == id) {
        Some(i) => {
            replicas[i].set_ready(value);
            if let Some(flag) = ready.get(i) {
                flag.store(value, Ordering::Relaxed);
            }
            true
        }
        None => false,
    }
}

async fn admin_loop(
    listener: TcpListener,
    replicas: Arc<Vec<Replica>>,
    ready: Arc<Vec<AtomicBool>>,
    plain: bool,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let Ok((tcp, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (replicas, ready) = (Arc::clone(&replicas), Arc::clone(&ready));
        conns.spawn(async move {
            let svc = service_fn(move |req| {
                let resp = admin(req, &replicas, &ready, plain);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
            // Admin connections are short; bound them anyway.
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
    conns.shutdown().await;
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn admin(
    req: Request<Incoming>,
    replicas: &[Replica],
    ready: &[AtomicBool],
    plain: bool,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segs.as_slice()) {
        (&Method::GET, ["replicas"]) => {
            let body =
                serde_json::to_vec_pretty(&infos(replicas, ready, plain)).unwrap_or_default();
            let mut r = reply(StatusCode::OK, body);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        (&Method::POST, ["replicas", id, "ready"]) => {
            let value = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("value="))
                .map(str::to_ascii_lowercase);
            let value = match value.as_deref() {
                Some("true") | Some("1") => true,
                Some("false") | Some("0") => false,
                _ => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        "expected ?value=true or ?value=false\n",
                    )
                }
            };
            if set_ready(replicas, ready, id, value) {
                reply(StatusCode::NO_CONTENT, Bytes::new())
            } else {
                reply(StatusCode::NOT_FOUND, format!("no replica {id:?}\n"))
            }
        }
        (&Method::POST, ["replicas", id, "condition"]) => {
            let value = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("value="));
            let Some(condition) = value.and_then(Condition::from_name) else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "expected ?value=ready|not-ready|shutting-down|retry-after-shutdown|throttling\n",
                );
            };
            match replicas.iter().position(|r| r.id() == *id) {
                Some(i) => {
                    replicas[i].set_condition(condition);
                    if let Some(flag) = ready.get(i) {
                        let ready = matches!(condition, Condition::Ready | Condition::Throttling);
                        flag.store(ready, Ordering::Relaxed);
                    }
                    reply(StatusCode::NO_CONTENT, Bytes::new())
                }
                None => reply(StatusCode::NOT_FOUND, format!("no replica {id:?}\n")),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "try GET /replicas, POST /replicas/{id}/ready?value=false or /replicas/{id}/condition?value=not-ready\n",
        ),
    }
}
