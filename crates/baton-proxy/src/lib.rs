//! The data plane. The proxy owns the route table (which target serves which
//! host), forwards each request to the target its route names, holds new
//! requests for the instant a route switches, and counts the requests in
//! flight on each target so an old target can be drained. It never starts or
//! stops targets, never touches the store and never decides *when* to switch:
//! the orchestrator tells it. If the control plane stops answering, the proxy
//! goes on serving the last table it was given.
//!
//! In production the proxy runs in a process of its own (`baton proxy
//! run`), driven over its control socket (`control`) by the control plane
//! through a [`ProxyClient`], so that the control plane can stop, crash or
//! be upgraded without a request being dropped; a new proxy process takes
//! the listening sockets over from the old one (`handover`).

mod access_log;
mod access_reader;
mod canary;
mod client;
pub mod control;
mod edge;
mod forward;
mod handover;
mod hold;
mod inbound;
mod live;
mod lookup;
mod pool;
mod rescue;
mod route;
mod server;
mod target;
mod tls;
mod upgrade;

pub use access_log::{AccessLog, AccessRecord};
pub use access_reader::AccessReader;
pub use client::{Hold, ProxyClient};
pub use edge::{EdgeConfig, X_REQUEST_ID};
pub use hold::HoldGuard;
pub use route::{
    AcmeChallenge, CanarySpec, RouteKey, RouteLimits, RouteSpec, RouteTable, RouteTls, TargetRef,
    TlsSource,
};
pub use server::{listen_on, Listeners, Proxy, ProxyError};
pub use target::{TargetMetrics, TargetStats, LATENCY_BUCKETS};
pub use tls::{certified_key, CertificateSpec, Challenge, TlsError, ACME_TLS_ALPN};

/// The access log's file name, in the data folder's `logs`.
pub const ACCESS_LOG: &str = "access.log";

/// Requests carrying this header reach the route's preview target, if any.
pub const PREVIEW_HEADER: &str = "x-baton-preview";
