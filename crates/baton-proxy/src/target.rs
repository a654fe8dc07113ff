//! A target as the proxy sees it: an address and counters. The counters are
//! shared by every version of the route table, so a request that started on
//! an old table still counts on the target it reached.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::pool::Pool;
use crate::route::TargetRef;

#[derive(Debug)]
pub(crate) struct Target {
    pub id: i64,
    pub addr: SocketAddr,
    pub release: String,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Responses with a 5xx status from the target itself.
    server_errors: AtomicU64,
    timeouts: AtomicU64,
    /// Set when a request timed out, cleared by the next answer: a target
    /// that accepts connections but answers nothing (hung, stopped) shows
    /// as not responding.
    unresponsive: std::sync::atomic::AtomicBool,
    /// Open WebSockets (upgraded connections) and event streams.
    long_lived: AtomicUsize,
    /// Turned true to close them (the target's drain time is over).
    cut: tokio::sync::watch::Sender<bool>,
    idle: Notify,
    /// Idle upstream connections, one pool per proxy worker thread so a
    /// connection is only ever used from the thread that drives it.
    pools: Box<[Pool]>,
}

/// Pools per target; workers beyond this share (modulo).
const POOLS: usize = 16;

/// A snapshot of a target's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TargetStats {
    pub in_flight: usize,
    pub requests: u64,
    pub failures: u64,
    /// Requests it did not answer within the route's response timeout.
    pub timeouts: u64,
    /// Its last request timed out and none was answered since.
    pub unresponsive: bool,
    /// Open WebSockets and event streams (counted in `in_flight` too).
    #[serde(default)]
    pub long_lived: usize,
    /// Responses with a 5xx status from the target itself (the proxy's
    /// own 502 and 504 are `failures`).
    #[serde(default)]
    pub server_errors: u64,
}

impl Target {
    pub fn new(named: &TargetRef) -> Arc<Target> {
        Arc::new(Target {
            id: named.id,
            addr: named.addr,
            release: named.release.clone(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            unresponsive: std::sync::atomic::AtomicBool::new(false),
            long_lived: AtomicUsize::new(0),
            cut: tokio::sync::watch::Sender::new(false),
            idle: Notify::new(),
            pools: (0..POOLS).map(|_| Pool::default()).collect(),
        })
    }

    /// The connection pool of the calling proxy worker.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pools[crate::server::WORKER.with(|w| w.get()) % POOLS]
    }

    pub fn stats(&self) -> TargetStats {
        TargetStats {
            in_flight: self.in_flight.load(Ordering::Acquire),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            unresponsive: self.unresponsive.load(Ordering::Relaxed),
            long_lived: self.long_lived.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
        }
    }

    /// Counts a long-lived connection while the guard lives, and says when
    /// it must close (the receiver turns true).
    pub(crate) fn long_lived(self: &Arc<Self>) -> (LongLived, tokio::sync::watch::Receiver<bool>) {
        self.long_lived.fetch_add(1, Ordering::AcqRel);
        (
            LongLived {
                target: Arc::clone(self),
            },
            self.cut.subscribe(),
        )
    }

    pub(crate) fn uncut(&self) {
        self.cut
            .send_if_modified(|cut| std::mem::replace(cut, false));
    }

    /// Closes the target's WebSockets and event streams (its drain time is
    /// over); returns how many were open.
    pub fn cut_long_lived(&self) -> usize {
        // Counted first: once told, they start closing (on other threads).
        let open = self.long_lived.load(Ordering::Acquire);
        self.cut.send_replace(true);
        open
    }

    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight {
            target: Arc::clone(self),
        }
    }

    pub(crate) fn record_failure(&self, timed_out: bool) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if timed_out {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
            self.unresponsive.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_status(&self, status: http::StatusCode) {
        if status.is_server_error() {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.record_answer();
    }

    pub(crate) fn record_answer(&self) {
        // Read first: the common case writes nothing shared.
        if self.unresponsive.load(Ordering::Relaxed) {
            self.unresponsive.store(false, Ordering::Relaxed);
        }
    }

    /// Waits until no request is in flight on this target, or `timeout`
    /// passes. Returns the number still in flight (0 when drained).
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.in_flight.load(Ordering::Acquire);
            if now == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight.load(Ordering::Acquire);
            }
        }
    }
}

/// Held for as long as a long-lived connection is open.
pub(crate) struct LongLived {
    target: Arc<Target>,
}

impl Drop for LongLived {
    fn drop(&mut self) {
        self.target.long_lived.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Held for as long as a request (including its response body) is in flight.
pub(crate) struct InFlight {
    target: Arc<Target>,
}

impl InFlight {
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.target.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.target.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_returns_when_the_last_request_ends() {
        let t = Target::new(&TargetRef::new(1, "127.0.0.1:1".parse().unwrap(), "r1"));
        let a = t.begin();
        let b = t.begin();
        assert_eq!(t.stats().in_flight, 2);
        let waiter = {
            let t = Arc::clone(&t);
            tokio::spawn(async move { t.drain(Duration::from_secs(5)).await })
        };
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        assert_eq!(waiter.await.unwrap(), 0);
        assert_eq!(t.stats().requests, 2);
    }

    #[tokio::test]
    async fn drain_gives_up_after_its_timeout() {
        let t = Target::new(&TargetRef::new(1, "127.0.0.1:1".parse().unwrap(), "r1"));
        let _stuck = t.begin();
        assert_eq!(t.drain(Duration::from_millis(20)).await, 1);
    }
}
