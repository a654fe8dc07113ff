//! The proxy as a whole: the current route table, the hold gates, the
//! upstream connection pool, and the accept loop.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::ToSocketAddrs;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};

use crate::access_log::AccessLog;
use crate::edge::{Client, EdgeConfig};
use crate::hold::{Gate, HoldGuard};
use crate::route::{Route, RouteKey, RouteSpec, RouteTable, TargetRef};
use crate::target::{Target, TargetStats};
use crate::tls::{CertificateSpec, Certificates, Challenge};

/// How many requests one route may hold at once during a switch.
const MAX_HELD_PER_ROUTE: usize = 10_000;
/// Targets no route names any more whose counters are still kept (for
/// `baton status` and a drain that asks late).
const RETIRED_KEPT: usize = 64;
/// While stopping, a keep-alive connection idle this long is closed: long
/// enough that a client sending request after request is never cut between
/// two of them (its next request is answered, with `Connection: close`).
const IDLE_BEFORE_CLOSE: Duration = Duration::from_millis(1000);

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("host {host:?} is already served by {owner}; remove it from that app's hosts first")]
    HostTaken { host: String, owner: RouteKey },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    /// The proxy process could not be reached or refused the request.
    #[error("{0}")]
    Control(String),
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
    /// The proxy's own view of every target a route names, by id: one
    /// object per target across table versions, so its counters and
    /// connection pool carry over a switch.
    targets: Mutex<Targets>,
    /// Set when the proxy stops: responses then say `Connection: close`.
    stopping: AtomicBool,
    /// What HTTPS connections are served with.
    certificates: Arc<Certificates>,
    tls_config: Arc<rustls::ServerConfig>,
    /// The HTTPS port (0 while the proxy serves no HTTPS): where plain
    /// requests are redirected.
    https_port: AtomicU16,
    /// Bumped at every change to the table (and when the proxy stops):
    /// what live-update streams follow.
    versions: watch::Sender<u64>,
}

#[derive(Default)]
struct Targets {
    named: HashMap<i64, Arc<Target>>,
    /// Recently unnamed ones, oldest first.
    retired: VecDeque<i64>,
}

impl Proxy {
    /// A proxy with the default edge and no access log.
    pub fn new() -> Arc<Proxy> {
        Proxy::with(EdgeConfig::default(), None)
    }

    pub fn with(edge: EdgeConfig, access_log: Option<AccessLog>) -> Arc<Proxy> {
        let certificates = Arc::new(Certificates::default());
        Arc::new(Proxy {
            table: ArcSwap::from_pointee(RouteTable::default()),
            gates: Mutex::new(HashMap::new()),
            update: Mutex::new(()),
            connections: Arc::new(Semaphore::new(edge.max_connections.max(1))),
            edge,
            access_log,
            targets: Mutex::new(Targets::default()),
            stopping: AtomicBool::new(false),
            tls_config: crate::tls::server_config(Arc::clone(&certificates)),
            certificates,
            https_port: AtomicU16::new(0),
            versions: watch::Sender::new(0),
        })
    }

    /// Serves exactly these certificates over HTTPS; returns those
    /// refused (by name, with why).
    pub fn set_certificates(&self, specs: &[CertificateSpec]) -> Vec<(String, String)> {
        self.certificates.replace(specs)
    }

    /// Answers exactly these ACME challenges; returns those refused.
    pub fn set_challenges(&self, challenges: &[Challenge]) -> Vec<(String, String)> {
        self.certificates.set_challenges(challenges)
    }

    /// The certificates served, as given (what a successor gets).
    pub fn certificate_specs(&self) -> Vec<CertificateSpec> {
        self.certificates.specs()
    }

    pub(crate) fn certificates(&self) -> &Certificates {
        &self.certificates
    }

    /// Follows the table's changes.
    pub(crate) fn table_versions(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    /// The HTTPS port, when the proxy serves HTTPS.
    pub(crate) fn https_port(&self) -> Option<u16> {
        Some(self.https_port.load(Ordering::Relaxed)).filter(|p| *p != 0)
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

    /// The route the proxy serves for `spec`, its targets resolved.
    fn route(&self, spec: RouteSpec) -> Route {
        let target = |named: &Option<TargetRef>| named.as_ref().map(|t| self.target(t));
        Route {
            gate: self.gate(&spec.key),
            live: target(&spec.live),
            live_instances: spec.live_instances.iter().map(|t| self.target(t)).collect(),
            preview: target(&spec.preview),
            canary: spec
                .canary
                .as_ref()
                .map(|c| (self.target(&c.target), c.percent.min(100))),
            spec,
        }
    }

    /// The proxy's own object for a target, made on first sight.
    fn target(&self, named: &TargetRef) -> Arc<Target> {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        match targets.named.get(&named.id) {
            Some(t) if t.addr == named.addr => {
                // Named by a route again (a rollback to it): its new
                // long-lived connections are welcome.
                t.uncut();
                Arc::clone(t)
            }
            _ => {
                let target = Target::new(named);
                targets.named.insert(named.id, Arc::clone(&target));
                target
            }
        }
    }

    /// Swaps in a new table and forgets the oldest targets it no longer
    /// names (keeping the last few for their counters).
    fn install(&self, next: RouteTable) {
        let named: std::collections::HashSet<i64> = next.targets().map(|t| t.id).collect();
        self.table.store(Arc::new(next));
        self.versions.send_modify(|v| *v += 1);
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let Targets {
            named: all,
            retired,
        } = &mut *targets;
        retired.retain(|id| !named.contains(id) && all.contains_key(id));
        for id in all.keys() {
            if !named.contains(id) && !retired.contains(id) {
                retired.push_back(*id);
            }
        }
        // A target with requests in flight stays known, however old: a
        // drain must find it.
        let mut excess = retired.len().saturating_sub(RETIRED_KEPT);
        retired.retain(|id| {
            let idle = all.get(id).is_none_or(|t| t.stats().in_flight == 0);
            if excess > 0 && idle {
                excess -= 1;
                all.remove(id);
                false
            } else {
                true
            }
        });
    }

    /// Adds or replaces the route of `spec.key`, atomically for all its hosts.
    pub fn set_route(&self, spec: RouteSpec) -> Result<(), ProxyError> {
        let _update = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let next = self.table.load().with(self.route(spec))?;
        self.install(next);
        Ok(())
    }

    pub fn remove_route(&self, key: &RouteKey) {
        let _update = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let next = self.table.load().without(key);
        self.install(next);
    }

    /// Replaces the whole table at once; a route whose host another one
    /// already has is left out and reported.
    pub fn replace_routes(&self, specs: Vec<RouteSpec>) -> Vec<(RouteKey, ProxyError)> {
        let _update = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = RouteTable::default();
        let mut refused = Vec::new();
        for spec in specs {
            let key = spec.key.clone();
            match next.with(self.route(spec)) {
                Ok(table) => next = table,
                Err(e) => refused.push((key, e)),
            }
        }
        self.install(next);
        refused
    }

    /// A target's counters, while the proxy still knows it.
    pub fn stats(&self, target: i64) -> Option<TargetStats> {
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets.named.get(&target).map(|t| t.stats())
    }

    /// Waits until no request is in flight on `target`, or `timeout`
    /// passes; returns how many still are (0 when drained or unknown).
    pub async fn drain(&self, target: i64, timeout: Duration) -> usize {
        let found = {
            let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
            targets.named.get(&target).cloned()
        };
        match found {
            Some(target) => target.drain(timeout).await,
            None => 0,
        }
    }

    /// Closes the WebSockets and event streams still open on `target` (its
    /// drain time is over); returns how many were open.
    pub fn cut_long_lived(&self, target: i64) -> usize {
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets
            .named
            .get(&target)
            .map(|t| t.cut_long_lived())
            .unwrap_or(0)
    }

    /// Whether the proxy is stopping (its responses close their connection).
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Makes new requests for `key` wait until the guard is dropped.
    pub fn hold(&self, key: &RouteKey) -> HoldGuard {
        HoldGuard::new(self.gate(key))
    }

    /// How many requests wait at `key`'s hold right now.
    pub fn held_requests(&self, key: &RouteKey) -> usize {
        let gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates.get(key).map(|gate| gate.waiting()).unwrap_or(0)
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
        let socket = listen_on(addr)?;
        Listeners::from_socket(socket, workers).map_err(|source| ProxyError::Listen {
            addr: addr.to_string(),
            source,
        })
    }

    /// Serves on every handle, each on its own thread with its own
    /// single-threaded runtime: a connection, its requests and its upstream
    /// connections stay on one thread, with no cross-thread wake-ups on the
    /// data path. When `stop` turns true the proxy stops accepting (the
    /// listening sockets themselves are left open for whoever else holds
    /// them: a successor, after a hand-over), finishes what is in flight,
    /// closes keep-alive connections politely, and returns, after `grace` at
    /// most.
    pub async fn serve(
        self: Arc<Self>,
        listeners: Listeners,
        stop: watch::Receiver<bool>,
        grace: Duration,
    ) {
        if let Some(addr) = listeners.tls_addr() {
            self.https_port.store(addr.port(), Ordering::Relaxed);
        }
        let mut finished = Vec::new();
        for (worker, sockets) in listeners.per_worker().into_iter().enumerate() {
            let (done, wait) = oneshot::channel::<()>();
            let proxy = Arc::clone(&self);
            let stop = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("baton-proxy-{worker}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => {
                            WORKER.with(|w| w.set(worker));
                            runtime.block_on(proxy.worker(sockets, stop, grace));
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

    /// One worker: accepts on each of its handles (plain HTTP, HTTPS) until
    /// stopped, then waits for its connections to close.
    async fn worker(
        self: Arc<Self>,
        sockets: Vec<(std::net::TcpListener, bool)>,
        stop: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let open = Arc::new(Open::default());
        OPEN.with(|o| *o.borrow_mut() = Some(Arc::clone(&open)));
        let mut accepting = tokio::task::JoinSet::new();
        for (socket, tls) in sockets {
            accepting.spawn(Arc::clone(&self).accept_loop(
                socket,
                tls,
                Arc::clone(&open),
                stop.clone(),
            ));
        }
        while accepting.join_next().await.is_some() {}
        // Stopped: responses from now on close their connection, and
        // live-update streams end.
        self.stopping.store(true, Ordering::Relaxed);
        self.versions.send_modify(|v| *v += 1);
        let all_closed = async {
            loop {
                let none = open.none.notified();
                tokio::pin!(none);
                none.as_mut().enable();
                if open.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                none.await;
            }
        };
        if tokio::time::timeout(grace, all_closed).await.is_err() {
            tracing::warn!(
                "proxy stopped with {} connections still open after {grace:?}",
                open.count.load(Ordering::Acquire)
            );
        }
    }

    async fn accept_loop(
        self: Arc<Self>,
        socket: std::net::TcpListener,
        tls: bool,
        open: Arc<Open>,
        mut stop: watch::Receiver<bool>,
    ) {
        let listener = match TcpListener::from_std(socket) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "cannot use a proxy socket");
                return;
            }
        };
        loop {
            // A connection over the cap waits in the kernel's queue, not
            // in our memory, until another closes.
            let permit = tokio::select! {
                permit = Arc::clone(&self.connections).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = stopped(&mut stop) => break,
            };
            let (stream, peer) = tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
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
            };
            let _ = stream.set_nodelay(true);
            let proxy = Arc::clone(&self);
            let stop = stop.clone();
            let counted = open.guard();
            tokio::spawn(async move {
                proxy.connection(stream, peer, tls, stop).await;
                drop(permit);
                drop(counted);
            });
        }
        // Only this worker's handle on the socket closes; connections
        // still queued are accepted by whoever else holds it.
        drop(listener);
    }

    /// One client connection, from its PROXY protocol header (if its peer
    /// speaks it) to its last response. Once the proxy stops, its next
    /// response closes it, and if it stays idle it is closed.
    async fn connection(
        self: Arc<Self>,
        mut stream: tokio::net::TcpStream,
        peer: SocketAddr,
        tls: bool,
        stop: watch::Receiver<bool>,
    ) {
        let edge = &self.edge;
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
        let trusted = edge.trusts(peer.ip());
        if !tls {
            let client = Arc::new(Client::new(ip, trusted, "http"));
            return self.serve_http(stream, client, stop).await;
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&self.tls_config));
        let stream = match tokio::time::timeout(edge.header_timeout, acceptor.accept(stream)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        // A CA validating a TLS-ALPN-01 challenge only needed the handshake.
        if stream.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
            return;
        }
        let client = Arc::new(Client::new(ip, trusted, "https"));
        self.serve_http(stream, client, stop).await
    }

    /// HTTP over one connection (plain or TLS): its requests, until the
    /// client closes it or the proxy stops.
    async fn serve_http<S>(
        self: Arc<Self>,
        stream: S,
        client: Arc<Client>,
        mut stop: watch::Receiver<bool>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let edge = &self.edge;
        let activity = Arc::new(Activity::default());
        let service = {
            let proxy = Arc::clone(&self);
            let activity = Arc::clone(&activity);
            service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let proxy = Arc::clone(&proxy);
                let client = Arc::clone(&client);
                let activity = Arc::clone(&activity);
                // HTTP/2 has no `Connection` header: a stopping proxy's h2
                // connections end with GOAWAY instead.
                let http1 = req.version() < http::Version::HTTP_2;
                async move {
                    activity.begin();
                    let mut response = proxy.handle(req, client).await;
                    if http1
                        && proxy.stopping()
                        && response.status() != http::StatusCode::SWITCHING_PROTOCOLS
                    {
                        response.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    activity.end();
                    Ok::<_, std::convert::Infallible>(response)
                }
            })
        };
        // HTTP/1.1, or HTTP/2 with prior knowledge (h2c), told apart by
        // the connection's first bytes.
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .keep_alive(true)
            // Responses through a proxy are mostly small: one flat
            // buffer costs fewer instructions than gathering iovecs.
            .writev(false)
            .timer(TokioTimer::new())
            .header_read_timeout(edge.header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .keep_alive_interval(None);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let ended = tokio::select! {
            ended = conn.as_mut() => Some(ended),
            _ = stop.wait_for(|stop| *stop) => None,
        };
        let ended = match ended {
            Some(ended) => ended,
            None => {
                // Stopping: a connection between two requests is closed
                // only once it has stayed idle a while (no request begun or
                // ended), so a client's next request is never cut as it
                // arrives; meanwhile that request is answered with
                // `Connection: close`.
                let mut before = activity.idle_mark();
                loop {
                    tokio::select! {
                        ended = conn.as_mut() => break ended,
                        _ = tokio::time::sleep(IDLE_BEFORE_CLOSE) => {}
                    }
                    let now = activity.idle_mark();
                    if now.is_some() && now == before {
                        conn.as_mut().graceful_shutdown();
                        break conn.as_mut().await;
                    }
                    before = now;
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "client connection ended with an error");
        }
    }
}

/// Connections a worker has open (client connections and upgraded
/// tunnels), and a wake-up when the last one closes.
#[derive(Default)]
pub(crate) struct Open {
    count: AtomicUsize,
    none: tokio::sync::Notify,
}

/// Counts as open on its worker while it lives.
pub(crate) struct OpenGuard(Arc<Open>);

impl Open {
    fn guard(self: &Arc<Self>) -> OpenGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        OpenGuard(Arc::clone(self))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none.notify_waiters();
        }
    }
}

/// Returns once `stop` turns true (holding no borrow of it, so the
/// future stays `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

thread_local! {
    static OPEN: std::cell::RefCell<Option<Arc<Open>>> = const { std::cell::RefCell::new(None) };
}

/// Counts something long-lived (an upgraded tunnel) as open on the calling
/// worker, so that a stopping worker waits for it.
pub(crate) fn hold_open() -> Option<OpenGuard> {
    OPEN.with(|open| open.borrow().as_ref().map(|o| o.guard()))
}

/// Whether a connection is answering a request, and how many it has
/// answered: two counters, no clock on the data path.
#[derive(Default)]
struct Activity {
    /// Requests being answered (a pipelining or HTTP/2 client may have
    /// several).
    busy: AtomicUsize,
    answered: AtomicU64,
}

impl Activity {
    fn begin(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
    }

    fn end(&self) {
        self.answered.fetch_add(1, Ordering::Release);
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }

    /// What changes whenever a request begins or ends; `None` while one
    /// is being answered.
    fn idle_mark(&self) -> Option<u64> {
        (self.busy.load(Ordering::Acquire) == 0).then(|| self.answered.load(Ordering::Acquire))
    }
}

/// The proxy's listening sockets, plain HTTP and (if asked) HTTPS, with
/// one handle on each per worker, ready for [`Proxy::serve`].
pub struct Listeners {
    groups: Vec<Group>,
}

struct Group {
    sockets: Vec<std::net::TcpListener>,
    local: SocketAddr,
    tls: bool,
}

impl Group {
    fn new(socket: std::net::TcpListener, workers: usize, tls: bool) -> std::io::Result<Group> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let mut sockets = Vec::with_capacity(workers.max(1));
        for _ in 1..workers.max(1) {
            sockets.push(socket.try_clone()?);
        }
        sockets.push(socket);
        Ok(Group {
            sockets,
            local,
            tls,
        })
    }
}

impl Listeners {
    /// Handles on a plain-HTTP socket already listening (bound here, or
    /// received from the process this one takes over from), one per worker.
    pub fn from_socket(
        socket: std::net::TcpListener,
        workers: usize,
    ) -> std::io::Result<Listeners> {
        Ok(Listeners {
            groups: vec![Group::new(socket, workers, false)?],
        })
    }

    /// Adds an HTTPS socket, served with TLS, one handle per worker.
    pub fn with_tls(
        mut self,
        socket: std::net::TcpListener,
        workers: usize,
    ) -> std::io::Result<Listeners> {
        self.groups.push(Group::new(socket, workers, true)?);
        Ok(self)
    }

    /// The plain-HTTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.groups[0].local
    }

    /// The HTTPS address, if the proxy serves HTTPS.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.groups.iter().find(|g| g.tls).map(|g| g.local)
    }

    /// Another handle on each socket: what a successor is given.
    pub fn sockets(&self) -> std::io::Result<Vec<std::net::TcpListener>> {
        self.groups
            .iter()
            .map(|g| g.sockets[0].try_clone())
            .collect()
    }

    /// Each worker's handles, with whether each is HTTPS.
    fn per_worker(self) -> Vec<Vec<(std::net::TcpListener, bool)>> {
        let workers = self
            .groups
            .iter()
            .map(|g| g.sockets.len())
            .max()
            .unwrap_or(0);
        let mut all: Vec<Vec<(std::net::TcpListener, bool)>> =
            (0..workers).map(|_| Vec::new()).collect();
        for group in self.groups {
            for (worker, socket) in group.sockets.into_iter().enumerate() {
                all[worker].push((socket, group.tls));
            }
        }
        all
    }
}

/// A listening TCP socket on `addr` (a name is resolved), with a deep
/// accept queue (1,024) and SO_REUSEADDR. Must run inside a Tokio runtime.
pub fn listen_on(addr: &str) -> Result<std::net::TcpListener, ProxyError> {
    let listen_error = |source| ProxyError::Listen {
        addr: addr.to_string(),
        source,
    };
    let resolved = addr
        .to_socket_addrs()
        .map_err(listen_error)?
        .next()
        .ok_or_else(|| listen_error(std::io::Error::other("the address resolves to nothing")))?;
    listen(resolved).map_err(listen_error)
}

/// Must run inside a Tokio runtime (listening registers the socket, which
/// `into_std` then takes back for the workers' own runtimes).
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Lets a restarted proxy listen again at once, despite old connections
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
