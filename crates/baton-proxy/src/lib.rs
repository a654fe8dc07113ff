//! The data plane. The proxy owns the route table (which target serves which
//! host), forwards each request to the target its route names, holds new
//! requests for the instant a route switches, and counts the requests in
//! flight on each target so an old target can be drained. It never starts or
//! stops targets, never touches the store and never decides *when* to switch:
//! the orchestrator tells it. If the control plane stops answering, the proxy
//! goes on serving the last table it was given.

mod access_log;
mod access_reader;
mod edge;
mod forward;
mod hold;
mod inbound;
mod lookup;
mod pool;
mod rescue;
mod route;
mod server;
mod target;

pub use access_log::{AccessLog, AccessRecord};
pub use access_reader::AccessReader;
pub use edge::{EdgeConfig, X_REQUEST_ID};
pub use hold::HoldGuard;
pub use route::{RouteKey, RouteLimits, RouteSpec, RouteTable};
pub use server::{Listeners, Proxy, ProxyError};
pub use target::{Target, TargetStats};

/// Requests carrying this header reach the route's preview target, if any.
pub const PREVIEW_HEADER: &str = "x-baton-preview";
