//! apigate data plane: a TLS-terminating, per-request load balancer for kube-apiservers.
//!
//! Data flows: [`listener`] accepts a connection and picks its route from the TLS
//! ClientHello → the route's certificate terminates TLS → pingora's HTTP engine runs
//! apigate's [`http`] hooks for every HTTP/1.1 request and HTTP/2 stream → [`balance`]
//! picks a replica → the upstream pool (mTLS with the front-proxy certificate only for
//! verified client certificates) carries it. Configuration comes from
//! `apigate-control` as an immutable snapshot held in [`state`] and swapped by
//! [`reload`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod demo;
pub mod http;
pub mod kubernetes;
pub mod listener;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod state;
