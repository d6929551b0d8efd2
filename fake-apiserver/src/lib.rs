//! Fake kube-apiserver replicas: a controllable load target for apigate.
//!
//! apigate's `demo` command, its in-process integration tests and `apigate-loadtest
//! backend` need API servers that start in milliseconds, need no etcd, and can be told
//! how slow to be, how big to answer and when to turn unready. A [`Replica`] is that:
//! one listening socket speaking HTTP/1.1 and HTTP/2 (TLS with ALPN, or plaintext with
//! h2c), serving a small slice of the core/v1 API (discovery, pods, config maps, watches,
//! exec/attach/portforward upgrades), authenticating like kube-apiserver (front-proxy
//! headers, client certificates, bearer tokens, anonymous) and saying in every response
//! which replica answered and whom it believed the caller to be. [`pki`] makes the
//! certificates for all of it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), apigate_fake_apiserver::Error> {
//! use apigate_fake_apiserver::{spawn_many, ReplicaOptions};
//! let replicas = spawn_many(3, "127.0.0.1".parse().unwrap(), ReplicaOptions::default()).await?;
//! // curl --http2-prior-knowledge http://<replicas[0].local_addr()>/version
//! for r in replicas {
//!     r.shutdown().await;
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
// Tests may unwrap: a panic there is a failed test, not a crashed server.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod condition;
mod der;
mod error;
mod handler;
mod identity;
mod metrics;
mod objects;
mod options;
pub mod pki;
mod routes;
mod server;
mod service_time;
mod tls;
mod upgrade;
mod watch;

pub use condition::Condition;
pub use error::Error;
pub use options::{ReplicaOptions, TlsMaterial};
pub use server::{spawn, spawn_many, Replica};
pub use service_time::ServiceTime;

/// Response header on every response naming the replica id, so a test or load report can
/// tell which backend a balancer picked.
pub const REPLICA_HEADER: &str = "x-apiserver-replica";
/// Response header: the user the replica authenticated, to prove which identity a proxy
/// passed on (and that spoofed `X-Remote-*` headers were not believed).
pub const USER_HEADER: &str = "x-apiserver-user";
/// Response header: the authenticated user's groups, comma-joined.
pub const GROUPS_HEADER: &str = "x-apiserver-groups";
/// Response header: the `X-Remote-Extra-*` values a front proxy asserted, as
/// `key=value;key=value` (one pair per value; empty when none).
pub const EXTRA_HEADER: &str = "x-apiserver-extra";
/// Response header: how the identity was established: `front-proxy`, `x509`, `token` or
/// `anonymous`.
pub const AUTHN_HEADER: &str = "x-apiserver-authn";
/// Response header: which client certificate the TLS connection carrying the request
/// presented, whatever authenticated the request: `front-proxy` (chains to the
/// front-proxy CA), `client` (chains to the client CA) or `none`. A token request over a
/// connection with the front-proxy certificate still authenticates by its token, so
/// only this header shows which connection pool a proxy used.
pub const PEER_CERT_HEADER: &str = "x-apiserver-peer-cert";
/// Response header: the client address kube-apiserver's audit log would record
/// (`sourceIPs[0]`): the first `X-Forwarded-For` entry, else `X-Real-Ip`, else the TCP
/// peer. Shows what a proxy let a client plant there.
pub const SOURCE_IP_HEADER: &str = "x-apiserver-source-ip";
