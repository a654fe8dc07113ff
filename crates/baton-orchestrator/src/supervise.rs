//! Watching targets after they start: a live target that exits is started
//! again (same release, same port) with a growing delay, and every exit and
//! restart is recorded as an event. Targets on their way out are let go.

use std::sync::Arc;
use std::time::Duration;

use baton_store::EventKind;
use baton_store::TargetState;
use tokio::time::Instant;

use crate::{Managed, Orchestrator};

const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(30);
/// A target that stayed up this long is considered well again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

impl Orchestrator {
    pub(crate) fn supervise(self: &Arc<Self>, managed: Arc<Managed>) {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.watch(managed).await });
    }

    async fn watch(self: Arc<Self>, managed: Arc<Managed>) {
        let (id, release) = (
            managed.record_id,
            baton_package::short_id(&managed.release).to_string(),
        );
        let mut delay = FIRST_DELAY;
        loop {
            let handle = managed.handle();
            let since = Instant::now();
            let exit = managed.runtime.wait(&handle).await;
            match managed.state() {
                // Being stopped on purpose, or a deployment's health check
                // will report it.
                TargetState::Stopping
                | TargetState::Stopped
                | TargetState::Failed
                | TargetState::Starting
                | TargetState::Healthy => return,
                TargetState::Warm | TargetState::Draining => {
                    // Its release's instances go as one: a warm release
                    // with an instance missing is no instant rollback.
                    let first = managed
                        .first
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .and_then(|first| self.managed(first));
                    let group = first.unwrap_or_else(|| Arc::clone(&managed));
                    self.stop_target(&group, &format!("its instance {id} exited"))
                        .await;
                    let message = format!(
                        "warm target {id} ({release}) {exit}; its release's instances were stopped, and a rollback to it will start them again"
                    );
                    self.event(&managed.key, EventKind::TargetExited, &message)
                        .await;
                    return;
                }
                TargetState::Live => {}
            }
            if since.elapsed() >= STABLE_AFTER {
                delay = FIRST_DELAY;
            }
            let last = self.logs.tail(id, 5).join("\n  | ");
            let message = format!(
                "live target {id} ({release}) {exit}; restarting it in {} ms\n  | {last}",
                delay.as_millis()
            );
            self.event(&managed.key, EventKind::TargetExited, &message)
                .await;
            tracing::warn!(target = id, %exit, "live target exited; restarting");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_DELAY);
            if managed.state() != TargetState::Live {
                return;
            }
            match managed.runtime.start(&managed.spec).await {
                Ok(handle) => {
                    crate::noted(
                        self.store.set_target_handle(id, &handle.reference).await,
                        "set_target_handle",
                    );
                    crate::noted(self.store.count_restart(id).await, "count_restart");
                    let message = format!("live target {id} restarted ({})", handle.reference);
                    self.event(&managed.key, EventKind::TargetRestarted, &message)
                        .await;
                    *managed.handle.lock().unwrap_or_else(|e| e.into_inner()) = handle;
                }
                Err(e) => {
                    self.event(&managed.key, EventKind::TargetRestartFailed, &e.to_string())
                        .await
                }
            }
        }
    }
}
