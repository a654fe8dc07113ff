//! A canary: the new release takes a growing share of the clients, step by
//! step (`[deploy] steps`), while the proxy's counters for the two releases
//! are compared. A canary answering 5xx more often than `max_error_rate`
//! (and than the old release), once it has answered `min_requests`, is
//! aborted on its own: every client goes back to the old release, and the
//! deployment fails with the figures. `baton canary promote` ends it early
//! (or ends a `pause` with no time); `baton canary abort` aborts it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_manifest::CanaryStep;
use baton_proxy::{CanarySpec, TargetStats};
use baton_store::EventKind;

use crate::deploy::Job;
use crate::{Managed, Orchestrator};

/// How often the two releases' figures are compared.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// The two releases' figures since the canary began.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    requests: u64,
    errors: u64,
}

impl Figures {
    fn since(now: &TargetStats, start: &TargetStats) -> Figures {
        let errors = |s: &TargetStats| s.server_errors + s.failures;
        Figures {
            requests: now.requests.saturating_sub(start.requests),
            errors: errors(now).saturating_sub(errors(start)),
        }
    }

    fn rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1}% 5xx ({} of {} requests)",
            self.rate() * 100.0,
            self.errors,
            self.requests
        )
    }
}

/// How a canary ended, short of the switch.
enum Stop {
    /// Promoted by hand: go on to the switch now.
    Promoted,
    /// Aborted (by hand, or by the analysis): the reason.
    Aborted(String),
}

impl Orchestrator {
    /// Walks the canary's steps; Ok once it reaches 100 % (the switch
    /// follows), Err with the figures when it was aborted (every client
    /// is back on the old release by then).
    pub(crate) async fn canary(
        &self,
        job: &Job,
        new: &Arc<Managed>,
        old: &Arc<Managed>,
    ) -> std::result::Result<((), Option<String>), String> {
        let policy = &job.manifest.deploy;
        let mut answer = self.await_preview(job.deployment.id);
        let ids = [old.record_id, new.record_id];
        let start = self.proxy.stats(&ids).await;
        let started = Instant::now();
        let figures = |stats: &std::collections::HashMap<i64, TargetStats>| {
            let of = |id: i64| {
                Figures::since(
                    &stats.get(&id).copied().unwrap_or_default(),
                    &start.get(&id).copied().unwrap_or_default(),
                )
            };
            (of(old.record_id), of(new.record_id))
        };
        let mut share = 0u8;
        let mut outcome = Ok(());
        for step in policy.canary_steps() {
            let until = match step {
                CanaryStep::Share(100) => break,
                CanaryStep::Share(n) => {
                    share = n;
                    if let Err(e) = self.set_canary(job, old, Some((new, n))).await {
                        outcome = Err(Stop::Aborted(e));
                        break;
                    }
                    let message = format!(
                        "canary of release {} at {n}% of the clients",
                        baton_package::short_id(&new.release)
                    );
                    self.event(&job.key, EventKind::CanaryStep, &message).await;
                    // A share is judged at once, then at every pause.
                    Some(Instant::now())
                }
                CanaryStep::Pause(Some(d)) => Some(Instant::now() + d),
                CanaryStep::Pause(None) => None,
            };
            // Watch until the pause is over (or, with no time, promoted).
            loop {
                let stats = self.proxy.stats(&ids).await;
                let (was, is) = figures(&stats);
                if is.requests >= policy.min_requests
                    && is.rate() > policy.max_error_fraction()
                    && is.rate() > was.rate()
                {
                    outcome = Err(Stop::Aborted(format!(
                        "the canary at {share}% answered {is}, above max_error_rate {} (the old release: {was}); aborted by itself after {:.1} s",
                        policy.max_error_rate,
                        started.elapsed().as_secs_f64()
                    )));
                    break;
                }
                if until.is_some_and(|t| Instant::now() >= t) {
                    break;
                }
                tokio::select! {
                    told = &mut answer => {
                        outcome = Err(match told {
                            Ok(true) => Stop::Promoted,
                            _ => Stop::Aborted(format!("aborted by hand at {share}%")),
                        });
                        break;
                    }
                    _ = tokio::time::sleep(LOOK_EVERY) => {}
                }
            }
            if outcome.is_err() {
                break;
            }
        }
        let stats = self.proxy.stats(&ids).await;
        let (was, is) = figures(&stats);
        match outcome {
            Ok(()) | Err(Stop::Promoted) => Ok((
                (),
                Some(format!(
                    "canary passed at {share}%: new release {is}, old release {was}"
                )),
            )),
            Err(Stop::Aborted(why)) => {
                // Everyone back on the old release, at once.
                if let Err(e) = self.set_canary(job, old, None).await {
                    tracing::error!(error = %e, "cannot end the canary route; the server's next start sets it again");
                }
                Err(format!(
                    "{why}; every client is back on the old release (new release: {is}; old: {was})"
                ))
            }
        }
    }

    /// The route with `old` live and, if given, the canary at its share.
    async fn set_canary(
        &self,
        job: &Job,
        old: &Arc<Managed>,
        canary: Option<(&Arc<Managed>, u8)>,
    ) -> std::result::Result<(), String> {
        let mut spec = self.route_spec(job, Some(old), None);
        spec.canary = canary.map(|(new, percent)| CanarySpec {
            target: new.proxy_target.clone(),
            percent,
        });
        self.proxy.set_route(spec).await.map_err(|e| e.to_string())
    }
}
