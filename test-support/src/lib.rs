//! What apigate's tests drive apigate with.
//!
//! - [`client`]: a real HTTP/2 client over TLS (many streams on one connection, like
//!   client-go), also used by `apigate demo --requests N`;
//! - [`config`]: configurations built from the product's own typed objects and rendered
//!   to the YAML file apigate reads, instead of hand-indented text;
//! - [`metrics`]: the Prometheus text format parsed into samples, so tests assert on
//!   values by name and labels, not on exactly rendered lines.

pub mod client;
pub mod config;
pub mod metrics;
