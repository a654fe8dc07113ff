//! Health checks of a starting (or warm) target, with an error that says
//! what the target answered and what it printed.

use std::time::Duration;

use baton_manifest::Health;
use tokio::time::Instant;

use crate::{Managed, Orchestrator};

/// How many of the last check outcomes and output lines an error quotes.
const QUOTED_CHECKS: usize = 3;
const QUOTED_LINES: usize = 20;

impl Orchestrator {
    /// Probes the target until it answers the expected status or `within`
    /// passes. Gives up at once if the target exits.
    pub(crate) async fn wait_healthy(
        &self,
        target: &Managed,
        health: &Health,
        within: Duration,
    ) -> Result<String, String> {
        let started = Instant::now();
        let deadline = started + within;
        let url = format!("http://{}{}", target.proxy_target.addr, health.path);
        let mut outcomes: Vec<String> = Vec::new();
        let mut checks = 0;
        loop {
            let handle = target.handle();
            if !target.runtime.alive(&handle).await {
                let exit = target.runtime.wait(&handle).await;
                return Err(self.unhealthy(
                    target,
                    &format!(
                        "target {} {exit} before it became healthy",
                        target.record_id
                    ),
                    &outcomes,
                ));
            }
            checks += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = match self
                .health
                .get(&url)
                .timeout(health.timeout.min(remaining.max(Duration::from_millis(10))))
                .send()
                .await
            {
                Ok(response) if response.status().as_u16() == health.status => {
                    return Ok(format!(
                        "GET {} answered {} after {checks} check{} in {} ms",
                        health.path,
                        health.status,
                        if checks == 1 { "" } else { "s" },
                        started.elapsed().as_millis()
                    ));
                }
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    let body: String = body.trim().chars().take(200).collect();
                    format!("GET {} answered {status} {body:?}", health.path)
                }
                Err(e) if e.is_timeout() => format!(
                    "GET {} got no answer within {:?}",
                    health.path, health.timeout
                ),
                Err(e) if e.is_connect() => format!(
                    "GET {} could not connect (nothing listening on port {} yet)",
                    health.path, target.spec.port
                ),
                Err(e) => format!("GET {} failed: {e}", health.path),
            };
            if outcomes.last() != Some(&outcome) {
                outcomes.push(outcome);
            }
            if Instant::now() + health.interval >= deadline {
                return Err(self.unhealthy(
                    target,
                    &format!(
                        "release {} did not answer {} on {} within {} ({checks} checks)",
                        baton_package::short_id(&target.release),
                        health.status,
                        health.path,
                        humantime::format_duration(within)
                    ),
                    &outcomes,
                ));
            }
            tokio::time::sleep(health.interval).await;
        }
    }

    fn unhealthy(&self, target: &Managed, summary: &str, outcomes: &[String]) -> String {
        let mut message = summary.to_string();
        if !outcomes.is_empty() {
            message.push_str("\nlast health checks:");
            for outcome in &outcomes[outcomes.len().saturating_sub(QUOTED_CHECKS)..] {
                message.push_str("\n  ");
                message.push_str(outcome);
            }
        }
        let lines = self.logs.tail(target.record_id, QUOTED_LINES);
        if lines.is_empty() {
            message.push_str("\nthe target printed nothing");
        } else {
            message.push_str(&format!("\nlast output of target {}:", target.record_id));
            for line in lines {
                message.push_str("\n  | ");
                message.push_str(&line);
            }
        }
        message
    }
}
