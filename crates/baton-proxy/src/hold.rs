//! Holding requests while a route switches. A held route makes new requests
//! wait (a bounded number, for a bounded time) until the hold ends; then they
//! read the route table again and reach whatever is live. A request that
//! cannot wait (queue full, or waited long enough) goes on to the target that
//! is live at that moment: holding must never turn into dropping.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug)]
pub(crate) struct Gate {
    held: watch::Sender<bool>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    Released,
    TimedOut,
    QueueFull,
}

impl Gate {
    pub fn new(max_waiting: usize) -> Gate {
        Gate {
            held: watch::Sender::new(false),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    pub async fn wait(&self, timeout: Duration) -> Waited {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Waited::QueueFull;
        }
        let mut rx = self.held.subscribe();
        let outcome = match tokio::time::timeout(timeout, rx.wait_for(|held| !held)).await {
            Ok(_) => Waited::Released,
            Err(_) => Waited::TimedOut,
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        outcome
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// While this lives, the route's new requests wait. Dropping it releases them.
#[derive(Debug)]
pub struct HoldGuard {
    pub(crate) gate: Arc<Gate>,
}

impl HoldGuard {
    pub(crate) fn new(gate: Arc<Gate>) -> HoldGuard {
        gate.held.send_replace(true);
        HoldGuard { gate }
    }

    /// How many requests are waiting on this hold right now.
    pub fn waiting(&self) -> usize {
        self.gate.waiting()
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.gate.held.send_replace(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_are_released_when_the_hold_ends() {
        let gate = Arc::new(Gate::new(8));
        let guard = HoldGuard::new(Arc::clone(&gate));
        assert!(gate.is_held());
        let waiter = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move { gate.wait(Duration::from_secs(5)).await })
        };
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        drop(guard);
        assert_eq!(waiter.await.unwrap(), Waited::Released);
        assert!(!gate.is_held());
    }

    #[tokio::test]
    async fn a_full_queue_lets_requests_through_instead_of_waiting() {
        let gate = Arc::new(Gate::new(1));
        let _guard = HoldGuard::new(Arc::clone(&gate));
        let first = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move { gate.wait(Duration::from_secs(5)).await })
        };
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.wait(Duration::from_secs(5)).await, Waited::QueueFull);
        first.abort();
    }

    #[tokio::test]
    async fn waiting_is_bounded_in_time() {
        let gate = Gate::new(8);
        let _guard = HoldGuard::new(Arc::new(Gate::new(1)));
        gate.held.send_replace(true);
        assert_eq!(gate.wait(Duration::from_millis(10)).await, Waited::TimedOut);
        assert_eq!(gate.waiting(), 0);
    }
}
