//! apigate data plane: a TLS-terminating, per-request load balancer for kube-apiservers.
//!
//! Data flows: [`listener`] admits a connection (PROXY header → CONNECT → ClientHello
//! → route → allowlist) → the route's certificate terminates TLS and [`conn`] carries
//! the stream into pingora's HTTP engine, which runs apigate's [`http`] hooks for every
//! HTTP/1.1 request and HTTP/2 stream → the forwarding core ([`upstream`], over
//! [`balance`]) picks a replica, the pool and the retries, for pooled requests,
//! upgrades and passthrough splices alike; each replica's health (passive failures,
//! [`probe`]s, drain signals) is a state machine in [`balance::health`], shown on the
//! [`admin`] listener. Configuration comes from `apigate-control`
//! as an immutable snapshot held in [`state`]; [`reload`] (the file) hands each revision
//! to the [`rollout`] controller, which decides what each route serves, and it and
//! [`kubernetes`] (the cluster) install through the one [`install`]er; every response
//! apigate writes itself is a [`rejection`].

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod conn;
pub mod demo;
pub mod flags;
pub mod flow;
pub mod fuzzing;
pub mod http;
pub mod identity;
pub mod install;
pub mod kubernetes;
pub mod listener;
pub mod metrics;
pub mod peer_tls;
pub mod probe;
pub mod rejection;
pub mod reload;
pub mod rollout;
pub mod runtime;
pub mod server;
pub mod state;
pub mod upstream;
pub mod weak_map;
