//! The proxy as a whole: the current route table, the hold gates, the
//! upstream connection pool, and the accept loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::hold::{Gate, HoldGuard};
use crate::route::{RouteKey, RouteSpec, RouteTable};

/// How many requests one route may hold at once during a switch.
const MAX_HELD_PER_ROUTE: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("host {host:?} is already served by {owner}; remove it from that app's hosts first")]
    HostTaken { host: String, owner: RouteKey },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

pub(crate) type UpstreamClient = Client<HttpConnector, BoxBody<Bytes, hyper::Error>>;

pub struct Proxy {
    table: ArcSwap<RouteTable>,
    gates: Mutex<HashMap<RouteKey, Arc<Gate>>>,
    /// Serialises table updates so two concurrent changes cannot lose one.
    update: Mutex<()>,
    pub(crate) client: UpstreamClient,
}

impl Proxy {
    pub fn new() -> Arc<Proxy> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Arc::new(Proxy {
            table: ArcSwap::from_pointee(RouteTable::default()),
            gates: Mutex::new(HashMap::new()),
            update: Mutex::new(()),
            client,
        })
    }

    fn gate(&self, key: &RouteKey) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            gates
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Gate::new(MAX_HELD_PER_ROUTE))),
        )
    }

    /// Adds or replaces the route of `spec.key`, atomically for all its hosts.
    pub fn set_route(&self, spec: RouteSpec) -> Result<(), ProxyError> {
        let _update = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let gate = self.gate(&spec.key);
        let next = self.table.load().with(spec, gate)?;
        self.table.store(Arc::new(next));
        Ok(())
    }

    pub fn remove_route(&self, key: &RouteKey) {
        let _update = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let next = self.table.load().without(key);
        self.table.store(Arc::new(next));
    }

    /// Makes new requests for `key` wait until the guard is dropped.
    pub fn hold(&self, key: &RouteKey) -> HoldGuard {
        HoldGuard::new(self.gate(key))
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.table.load()
    }

    /// Binds the proxy's listening socket.
    pub async fn bind(addr: &str) -> Result<TcpListener, ProxyError> {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Listen {
                addr: addr.to_string(),
                source,
            })
    }

    /// Accepts connections until `shutdown` completes, then lets open
    /// connections finish their current request (up to `grace`).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a moment
                        // rather than spinning; pending clients stay queued.
                        tracing::warn!(error = %e, "proxy accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let proxy = Arc::clone(&self);
            let service = service_fn(move |req| {
                let proxy = Arc::clone(&proxy);
                async move { Ok::<_, std::convert::Infallible>(proxy.forward(req, peer).await) }
            });
            let conn = http1::Builder::new()
                .keep_alive(true)
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("proxy shut down with requests still in flight after {grace:?}");
        }
    }
}

/// The peer address type used by the forwarder, re-exported for clarity.
pub(crate) type Peer = SocketAddr;
