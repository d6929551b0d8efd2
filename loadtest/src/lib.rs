//! apigate-loadtest: a load generator that shows how requests spread over API-server
//! replicas.
//!
//! It is deliberately independent of apigate's internals: it speaks plain HTTPS
//! (HTTP/2 like client-go, or HTTP/1.1 keep-alive pools) to whatever sits in front of the
//! API servers — apigate, HAProxy, an L4 balancer or a replica directly — and measures
//! from the outside:
//!
//! - latency from the *intended* send time in open-loop mode ([`schedule`]), so a stalled
//!   backend cannot hide behind coordinated omission;
//! - which replica served each request, from a response header or by scraping
//!   `apiserver_request_total` ([`distribution`], [`scrape`]);
//! - errors by kind ([`client::ErrorKind`]), watches as open streams rather than slow
//!   requests ([`stats`]).
//!
//! The binary (`src/main.rs`) wires these into the `run`, `compare`, `backend` and
//! `l4-baseline` subcommands ([`cli`]).
#![forbid(unsafe_code)]

pub mod actions;
pub mod backend;
pub mod cli;
pub mod client;
pub mod compare;
pub mod distribution;
pub mod l4;
pub mod progress;
pub mod report;
pub mod requests;
pub mod retry;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod scrape;
pub mod stats;
pub mod units;
pub mod verdict;
