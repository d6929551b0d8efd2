//! apigate in-process integration tests: real sockets (ports the OS picks), real TLS,
//! real HTTP/2 and HTTP/1.1 clients, fake API-server replicas as load targets.
//! One test binary, so the (large) link happens once.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod access_log;
mod bad_input;
mod balancing;
mod failures;
mod flow_control;
mod fuzz_corpus;
mod health;
mod http2_abuse;
mod identity;
mod monitoring;
mod reload;
mod rollout;
mod rotation;
mod shutdown;
mod streaming;
mod support;
mod tls;
