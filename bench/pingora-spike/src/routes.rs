//! The spike's route table and the state that outlives one table: targets
//! (an upstream address with its in-flight counter) and hold gates (one per
//! host). It mirrors baton-proxy's nouns on purpose, so the measurement
//! compares engines, not designs: a table is immutable and swapped whole
//! (arc-swap), counters and gates are shared by every version of the table,
//! and holding never turns into dropping. Everything here except `Gate::wait`
//! and `Target::drain` is pure and synchronous; no file or socket I/O.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::prelude::HttpPeer;
use tokio::sync::{watch, Notify};

/// An upstream as the proxy sees it. One per address, kept across tables so a
/// request that started on an old table still counts on the target it reached.
pub struct Target {
    pub addr: SocketAddr,
    /// Built once; cloned per request (pingora wants a boxed peer each time).
    pub peer: HttpPeer,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    idle: Notify,
}

impl Target {
    fn new(addr: SocketAddr) -> Arc<Target> {
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        Arc::new(Target {
            addr,
            peer,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle: Notify::new(),
        })
    }

    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Waits until nothing is in flight here, or `timeout` passes. Returns
    /// how many requests were still in flight (0 when drained).
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight();
            }
        }
    }
}

/// Held in the request's context; pingora drops the context once the last
/// byte of the response has gone (or the request failed), which ends it.
pub struct InFlight(Arc<Target>);

impl InFlight {
    pub fn target(&self) -> &Arc<Target> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Holds a host's new requests while its route switches: a bounded number
/// wait, for a bounded time, then read the table again.
pub struct Gate {
    held: watch::Sender<bool>,
    waiting: AtomicUsize,
}

const MAX_WAITING: usize = 4096;

impl Gate {
    fn new() -> Gate {
        Gate {
            held: watch::Sender::new(false),
            waiting: AtomicUsize::new(0),
        }
    }

    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    fn set_held(&self, held: bool) {
        self.held
            .send_if_modified(|now| std::mem::replace(now, held) != held);
    }

    /// Returns when the hold ends, the wait times out or the queue is full;
    /// in every case the caller goes on to whatever is live then.
    pub async fn wait(&self, timeout: Duration) {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let mut rx = self.held.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|held| !held)).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

pub struct Route {
    pub target: Arc<Target>,
    pub gate: Arc<Gate>,
}

/// host → route. Immutable once built.
#[derive(Default)]
pub struct RouteTable {
    hosts: HashMap<String, Route>,
}

impl RouteTable {
    pub fn resolve(&self, host: &str) -> Option<&Route> {
        self.hosts.get(host)
    }

    pub fn targets(&self) -> impl Iterator<Item = &Arc<Target>> {
        self.hosts.values().map(|r| &r.target)
    }
}

/// What a routes file says: `{"routes": {"host": "ip:port", ...}, "held": ["host", ...]}`.
#[derive(Debug, PartialEq, Eq)]
pub struct RouteFile {
    pub routes: BTreeMap<String, SocketAddr>,
    pub held: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct RouteFileError(pub String);

impl std::fmt::Display for RouteFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl RouteFile {
    pub fn parse(text: &str) -> Result<RouteFile, RouteFileError> {
        let err = |m: String| RouteFileError(m);
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(format!("not JSON: {e}")))?;
        let routes = value
            .get("routes")
            .and_then(|r| r.as_object())
            .ok_or_else(
                || err("field `routes`: expected an object of host → \"ip:port\"".into()),
            )?;
        let mut out = BTreeMap::new();
        for (host, addr) in routes {
            let addr = addr
                .as_str()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .ok_or_else(|| err(format!("routes.{host}: expected \"ip:port\", found {addr}")))?;
            out.insert(normalise_host(host).into_owned(), addr);
        }
        let held = match value.get("held") {
            None => vec![],
            Some(list) => list
                .as_array()
                .and_then(|l| {
                    l.iter()
                        .map(|h| h.as_str().map(|h| normalise_host(h).into_owned()))
                        .collect()
                })
                .ok_or_else(|| err("field `held`: expected a list of hosts".into()))?,
        };
        Ok(RouteFile { routes: out, held })
    }
}

/// The proxy's shared state: the current table and what outlives it.
#[derive(Default)]
pub struct State {
    pub table: ArcSwap<RouteTable>,
    targets: Mutex<HashMap<SocketAddr, Arc<Target>>>,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

impl State {
    /// Builds the table a routes file describes, swaps it in whole, then sets
    /// the hold flags (so a host released in the same file sees the new
    /// table first). Returns the targets no longer routed to, for draining.
    pub fn apply(&self, file: &RouteFile) -> Vec<Arc<Target>> {
        let mut targets = self.targets.lock().expect("targets lock");
        let mut gates = self.gates.lock().expect("gates lock");
        let hosts = file
            .routes
            .iter()
            .map(|(host, addr)| {
                let target = Arc::clone(targets.entry(*addr).or_insert_with(|| Target::new(*addr)));
                let gate = Arc::clone(
                    gates
                        .entry(host.clone())
                        .or_insert_with(|| Arc::new(Gate::new())),
                );
                (host.clone(), Route { target, gate })
            })
            .collect::<HashMap<_, _>>();
        let old = self.table.swap(Arc::new(RouteTable { hosts }));
        for (host, gate) in gates.iter() {
            gate.set_held(file.held.contains(host));
        }
        let live: Vec<SocketAddr> = file.routes.values().copied().collect();
        let mut retired: Vec<Arc<Target>> = old
            .targets()
            .filter(|t| !live.contains(&t.addr))
            .cloned()
            .collect();
        retired.sort_by_key(|t| t.addr);
        retired.dedup_by_key(|t| t.addr);
        retired
    }

    /// Counters of every target ever routed to, and the held hosts, as JSON.
    pub fn status_json(&self) -> String {
        let targets = self.targets.lock().expect("targets lock");
        let gates = self.gates.lock().expect("gates lock");
        let targets: serde_json::Map<String, serde_json::Value> = targets
            .values()
            .map(|t| {
                (
                    t.addr.to_string(),
                    serde_json::json!({"in_flight": t.in_flight(), "requests": t.requests()}),
                )
            })
            .collect();
        let held: serde_json::Map<String, serde_json::Value> = gates
            .iter()
            .filter(|(_, g)| g.is_held())
            .map(|(h, g)| (h.clone(), serde_json::json!({"waiting": g.waiting()})))
            .collect();
        serde_json::json!({"pid": std::process::id(), "targets": targets, "held": held}).to_string()
    }
}

/// Lower-cases a Host value and strips its port and trailing dot, without
/// allocating when it is already plain (same rule as baton-proxy).
pub fn normalise_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let raw = raw.trim();
    let without_port = if raw.starts_with('[') {
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        raw.rsplit_once(':').map(|(h, _)| h).unwrap_or(raw)
    };
    let host = without_port.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(routes: &[(&str, &str)], held: &[&str]) -> RouteFile {
        RouteFile {
            routes: routes
                .iter()
                .map(|(h, a)| (h.to_string(), a.parse().unwrap()))
                .collect(),
            held: held.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn a_routes_file_names_its_faults() {
        assert_eq!(
            RouteFile::parse(r#"{"routes": {"A.test:80": "127.0.0.1:1"}, "held": ["a.test"]}"#),
            Ok(file(&[("a.test", "127.0.0.1:1")], &["a.test"]))
        );
        let e = RouteFile::parse(r#"{"routes": {"a.test": "nowhere"}}"#).unwrap_err();
        assert!(
            e.0.starts_with("routes.a.test: expected \"ip:port\""),
            "{e}"
        );
        assert!(RouteFile::parse(r#"{"held": []}"#)
            .unwrap_err()
            .0
            .contains("`routes`"));
    }

    #[test]
    fn counters_survive_a_swap_and_retired_targets_are_returned() {
        let state = State::default();
        assert!(state
            .apply(&file(&[("a.test", "127.0.0.1:1")], &[]))
            .is_empty());
        let t1 = Arc::clone(&state.table.load().resolve("a.test").unwrap().target);
        let req = t1.begin();
        let retired = state.apply(&file(&[("a.test", "127.0.0.1:2")], &[]));
        assert_eq!(retired.len(), 1);
        assert!(Arc::ptr_eq(&retired[0], &t1));
        assert_eq!(retired[0].in_flight(), 1);
        drop(req);
        assert_eq!(t1.in_flight(), 0);
        // Routing back to the old address finds the same counters.
        state.apply(&file(&[("a.test", "127.0.0.1:1")], &[]));
        assert_eq!(
            state
                .table
                .load()
                .resolve("a.test")
                .unwrap()
                .target
                .requests(),
            1
        );
    }

    #[tokio::test]
    async fn a_held_host_waits_until_the_file_releases_it() {
        let state = Arc::new(State::default());
        state.apply(&file(&[("a.test", "127.0.0.1:1")], &["a.test"]));
        let gate = Arc::clone(&state.table.load().resolve("a.test").unwrap().gate);
        assert!(gate.is_held());
        let waiter = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move { gate.wait(Duration::from_secs(5)).await })
        };
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        state.apply(&file(&[("a.test", "127.0.0.1:2")], &[]));
        waiter.await.unwrap();
        assert_eq!(
            state
                .table
                .load()
                .resolve("a.test")
                .unwrap()
                .target
                .addr
                .port(),
            2
        );
    }

    #[tokio::test]
    async fn drain_returns_when_the_last_request_ends() {
        let t = Target::new("127.0.0.1:1".parse().unwrap());
        let a = t.begin();
        let waiter = {
            let t = Arc::clone(&t);
            tokio::spawn(async move { t.drain(Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        drop(a);
        assert_eq!(waiter.await.unwrap(), 0);
    }
}
