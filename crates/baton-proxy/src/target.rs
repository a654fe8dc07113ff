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
    /// Responses by status class (1xx … 5xx), the target's own.
    by_class: [AtomicU64; 5],
    /// Time to the response's head, in `LATENCY_BUCKETS`, with the sum
    /// (microseconds) and the count.
    latency: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_us: AtomicU64,
    /// Response body bytes sent to clients.
    bytes: AtomicU64,
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

/// Upper bounds (seconds) of the latency histogram's buckets, as
/// Prometheus' defaults; the last bucket (+Inf) is the count.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

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
    /// What `/metrics` shows of it.
    #[serde(default)]
    pub metrics: TargetMetrics,
}

/// A target's figures for Prometheus: responses by status class, the time
/// to the response's head (a histogram over `LATENCY_BUCKETS`: each count
/// is of its bucket alone; slower ones are the rest of `latency_count`),
/// and body bytes sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TargetMetrics {
    pub by_class: [u64; 5],
    pub latency_buckets: [u64; LATENCY_BUCKETS.len()],
    pub latency_count: u64,
    pub latency_sum_us: u64,
    pub bytes: u64,
}

impl TargetStats {
    /// Requests that went wrong: the target's 5xx, and the proxy's own
    /// 502 and 504 (it refused or did not answer). What a canary and the
    /// dashboard judge a release by.
    pub fn errors(&self) -> u64 {
        self.metrics.by_class[4] + self.failures
    }
}

impl TargetMetrics {
    /// What was counted since `earlier` (a snapshot of the same target).
    pub fn since(&self, earlier: &TargetMetrics) -> TargetMetrics {
        TargetMetrics {
            by_class: std::array::from_fn(|i| self.by_class[i].saturating_sub(earlier.by_class[i])),
            latency_buckets: std::array::from_fn(|i| {
                self.latency_buckets[i].saturating_sub(earlier.latency_buckets[i])
            }),
            latency_count: self.latency_count.saturating_sub(earlier.latency_count),
            latency_sum_us: self.latency_sum_us.saturating_sub(earlier.latency_sum_us),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }

    /// The upper bound (seconds) of the latency bucket holding the `q`
    /// quantile of the responses; none before any response, or when it
    /// lies beyond the last bucket (over 10 s).
    pub fn percentile(&self, q: f64) -> Option<f64> {
        if self.latency_count == 0 {
            return None;
        }
        let wanted = (self.latency_count as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (count, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            seen += count;
            if seen >= wanted {
                return Some(bound);
            }
        }
        None
    }
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
            by_class: Default::default(),
            latency: Default::default(),
            latency_sum_us: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
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
            metrics: self.metrics(),
        }
    }

    fn metrics(&self) -> TargetMetrics {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let by_class = std::array::from_fn(|i| load(&self.by_class[i]));
        let latency_buckets = std::array::from_fn(|i| load(&self.latency[i]));
        TargetMetrics {
            latency_count: by_class.iter().sum(),
            by_class,
            latency_buckets,
            latency_sum_us: load(&self.latency_sum_us),
            bytes: load(&self.bytes),
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

    /// Requests it is answering now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
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

    /// Counts a response of the target's, `took` after its request began.
    pub(crate) fn record_status(&self, status: http::StatusCode, took: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
            self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.record_answer();
    }

    pub(crate) fn add_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
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
