//! The proxy as a whole: the current route table, the hold gates, the
//! upstream connection pool, and the accept loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::ToSocketAddrs;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};

use crate::access_log::AccessLog;
use crate::edge::{Client, EdgeConfig};
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

pub struct Proxy {
    table: ArcSwap<RouteTable>,
    gates: Mutex<HashMap<RouteKey, Arc<Gate>>>,
    /// Serialises table updates so two concurrent changes cannot lose one.
    update: Mutex<()>,
    edge: EdgeConfig,
    access_log: Option<AccessLog>,
    /// Client connections open at once, across every worker.
    connections: Arc<Semaphore>,
}

impl Proxy {
    /// A proxy with the default edge and no access log.
    pub fn new() -> Arc<Proxy> {
        Proxy::with(EdgeConfig::default(), None)
    }

    pub fn with(edge: EdgeConfig, access_log: Option<AccessLog>) -> Arc<Proxy> {
        Arc::new(Proxy {
            table: ArcSwap::from_pointee(RouteTable::default()),
            gates: Mutex::new(HashMap::new()),
            update: Mutex::new(()),
            connections: Arc::new(Semaphore::new(edge.max_connections.max(1))),
            edge,
            access_log,
        })
    }

    pub(crate) fn edge(&self) -> &EdgeConfig {
        &self.edge
    }

    pub(crate) fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_ref()
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

    /// Binds the proxy's listening socket, with one handle on it per worker
    /// thread; each worker accepts from the same queue on its own thread.
    /// Must be called inside a Tokio runtime.
    pub fn bind(addr: &str, workers: usize) -> Result<Listeners, ProxyError> {
        let listen_error = |source| ProxyError::Listen {
            addr: addr.to_string(),
            source,
        };
        let resolved = addr
            .to_socket_addrs()
            .map_err(listen_error)?
            .next()
            .ok_or_else(|| {
                listen_error(std::io::Error::other("the address resolves to nothing"))
            })?;
        let first = listen(resolved).map_err(listen_error)?;
        let local = first.local_addr().map_err(listen_error)?;
        let mut sockets = Vec::with_capacity(workers.max(1));
        for _ in 1..workers.max(1) {
            sockets.push(first.try_clone().map_err(listen_error)?);
        }
        sockets.push(first);
        Ok(Listeners { sockets, local })
    }

    /// Serves on every handle, each on its own thread with its own
    /// single-threaded runtime: a connection, its requests and its upstream
    /// connections stay on one thread, with no cross-thread wake-ups on the
    /// data path. Returns when `shutdown` turns true and open connections
    /// have finished their current request (up to `grace`).
    pub async fn serve(
        self: Arc<Self>,
        listeners: Listeners,
        shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let mut finished = Vec::new();
        for (worker, socket) in listeners.sockets.into_iter().enumerate() {
            let (done, wait) = oneshot::channel::<()>();
            let proxy = Arc::clone(&self);
            let shutdown = shutdown.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("baton-proxy-{worker}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => {
                            WORKER.with(|w| w.set(worker));
                            runtime.block_on(proxy.accept_loop(socket, shutdown, grace));
                        }
                        Err(e) => tracing::error!(error = %e, "cannot start a proxy worker"),
                    }
                    let _ = done.send(());
                });
            match spawned {
                Ok(_) => finished.push(wait),
                Err(e) => tracing::error!(error = %e, "cannot start a proxy worker thread"),
            }
        }
        for wait in finished {
            let _ = wait.await;
        }
    }

    async fn accept_loop(
        self: Arc<Self>,
        socket: std::net::TcpListener,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let listener = match TcpListener::from_std(socket) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "cannot use a proxy socket");
                return;
            }
        };
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            // A connection over the cap waits in the kernel's queue, not
            // in our memory, until another closes.
            let permit = tokio::select! {
                permit = Arc::clone(&self.connections).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let (mut stream, peer) = tokio::select! {
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
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let _ = stream.set_nodelay(true);
            let proxy = Arc::clone(&self);
            let edge = self.edge.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _permit = permit;
                // A load balancer speaking the PROXY protocol names the client.
                let mut ip = peer.ip();
                if edge.speaks_proxy_protocol(ip) {
                    match tokio::time::timeout(
                        edge.header_timeout,
                        crate::edge::read_proxy_header(&mut stream),
                    )
                    .await
                    {
                        Ok(Ok(Some(client))) => ip = client,
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(peer = %peer, error = %e, "bad PROXY protocol header; connection closed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
                let client = Arc::new(Client::new(ip, edge.trusts(peer.ip()), "http"));
                let service = service_fn(move |req| {
                    let proxy = Arc::clone(&proxy);
                    let client = Arc::clone(&client);
                    async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, client).await) }
                });
                let conn = http1::Builder::new()
                    .keep_alive(true)
                    // Responses through a proxy are mostly small: one flat
                    // buffer costs fewer instructions than gathering iovecs.
                    .writev(false)
                    .timer(TokioTimer::new())
                    .header_read_timeout(edge.header_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = watcher.watch(conn).await {
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

/// The proxy's listening socket (one handle per worker), ready for [`Proxy::serve`].
pub struct Listeners {
    sockets: Vec<std::net::TcpListener>,
    local: SocketAddr,
}

impl Listeners {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Must run inside a Tokio runtime (listening registers the socket, which
/// `into_std` then takes back for the workers' own runtimes).
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Lets a restarted server listen again at once, despite old connections
    // lingering in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?.into_std()?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

thread_local! {
    /// Which proxy worker this thread is (0 outside the proxy's threads).
    pub(crate) static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}
