//! A canary: the new release takes a growing share of the clients, step by
//! step (`[deploy] steps`), while the proxy's counters for the two releases
//! are compared. A canary answering 5xx more often than `max_error_rate`,
//! or slower than `max_p99` (each also worse than the old release), once
//! it has answered `min_requests`, is aborted on its own: every client goes
//! back to the old release, and the deployment fails with the figures.
//! `baton canary promote` ends it early (or ends a `pause` with no time);
//! `baton canary abort` aborts it. A blue-green `watch` judges the new
//! release after the switch by the same limits (`failing`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_manifest::{CanaryStep, DeployPolicy};
use baton_proxy::{CanarySpec, TargetStats};
use baton_store::EventKind;

use crate::deploy::Job;
use crate::{Managed, Orchestrator};

/// How often the two releases' figures are compared.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// How often a canary's PromQL query is asked (Prometheus scrapes every
/// few seconds: asking more often learns nothing).
const QUERY_EVERY: Duration = Duration::from_secs(1);

/// The two releases' figures since the canary began.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    requests: u64,
    errors: u64,
    /// The 99th percentile of the time to the response head (seconds, a
    /// bucket's bound).
    p99: Option<f64>,
}

impl Figures {
    /// Target `id`'s figures between two snapshots of the proxy's counters.
    fn of(id: i64, now: &HashMap<i64, TargetStats>, start: &HashMap<i64, TargetStats>) -> Figures {
        let counted =
            |stats: &HashMap<i64, TargetStats>| stats.get(&id).copied().unwrap_or_default();
        Figures::since(&counted(now), &counted(start))
    }

    fn since(now: &TargetStats, start: &TargetStats) -> Figures {
        Figures {
            requests: now.requests.saturating_sub(start.requests),
            errors: now.errors().saturating_sub(start.errors()),
            p99: now.metrics.since(&start.metrics).percentile(0.99),
        }
    }

    /// Whether its p99 is above `max` (and above `other`'s, if given).
    fn slower_than(&self, max: Option<Duration>, other: Option<&Figures>) -> bool {
        match (max, self.p99) {
            (Some(max), Some(p99)) => {
                p99 > max.as_secs_f64() && other.is_none_or(|o| o.p99.is_some_and(|q| p99 > q))
            }
            _ => false,
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
        )?;
        if let Some(p99) = self.p99 {
            write!(f, ", p99 ≤ {} ms", (p99 * 1000.0).round())?;
        }
        Ok(())
    }
}

/// Why a release's figures fail the manifest's limits, once it has answered
/// `min_requests`: a 5xx rate above `max_error_rate`, or a p99 above
/// `max_p99`, each also worse than `other`'s (the release it is compared
/// with), if there is one.
fn failing(policy: &DeployPolicy, is: &Figures, other: Option<&Figures>) -> Option<String> {
    if is.requests < policy.min_requests {
        return None;
    }
    if is.rate() > policy.max_error_fraction() && other.is_none_or(|o| is.rate() > o.rate()) {
        return Some(format!("above max_error_rate {}", policy.max_error_rate));
    }
    if is.slower_than(policy.max_p99_time(), other) {
        return Some(format!(
            "slower than max_p99 {}",
            policy.max_p99.as_deref().unwrap_or_default()
        ));
    }
    None
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
        if policy.query.is_some() && self.prometheus.get().is_none() {
            return Err("the canary has a `query`, but the server was started without --prometheus URL to ask it of; nothing was changed".into());
        }
        let mut asked = Instant::now() - QUERY_EVERY;
        let mut query_note = String::new();
        let mut answer = self.await_preview(job.deployment.id);
        let ids = [old.record_id, new.record_id];
        let start = self.proxy.stats(&ids).await;
        let started = Instant::now();
        let figures = |now: &HashMap<i64, TargetStats>| {
            (
                Figures::of(old.record_id, now, &start),
                Figures::of(new.record_id, now, &start),
            )
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
                if let Some(why) = failing(policy, &is, Some(&was)) {
                    outcome = Err(Stop::Aborted(format!(
                        "the canary at {share}% answered {is}, {why} (the old release: {was}); aborted by itself after {:.1} s",
                        started.elapsed().as_secs_f64()
                    )));
                    break;
                }
                if let (Some(query), Some(max)) = (&policy.query, policy.query_max) {
                    if asked.elapsed() >= QUERY_EVERY {
                        asked = Instant::now();
                        match self.promql(job, new, query).await {
                            Ok(Some(value)) if value > max => {
                                outcome = Err(Stop::Aborted(format!(
                                    "the canary at {share}%: Prometheus answered {value} to its query, above query_max {max}; aborted by itself after {:.1} s",
                                    started.elapsed().as_secs_f64()
                                )));
                                break;
                            }
                            Ok(Some(value)) => query_note = format!("; query {value} (max {max})"),
                            Ok(None) => query_note = "; query: no data yet".into(),
                            Err(e) => query_note = format!("; query failed: {e}"),
                        }
                    }
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
                    "canary passed at {share}%: new release {is}, old release {was}{query_note}"
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

    /// The value of a canary's PromQL query (its first series), with
    /// `{{release}}`, `{{app}}` and `{{environment}}` filled in.
    async fn promql(
        &self,
        job: &Job,
        new: &Managed,
        query: &str,
    ) -> std::result::Result<Option<f64>, String> {
        let base = self.prometheus.get().ok_or("no --prometheus to ask")?;
        let query = query
            .replace("{{release}}", baton_package::short_id(&new.release))
            .replace("{{app}}", &job.key.app)
            .replace("{{environment}}", &job.key.environment);
        let answer: serde_json::Value = self
            .health
            .get(format!("{base}/api/v1/query"))
            .query(&[("query", query.as_str())])
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| format!("cannot reach Prometheus at {base}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("Prometheus at {base} did not answer JSON: {e}"))?;
        if answer["status"] != "success" {
            return Err(format!(
                "Prometheus refused {query:?}: {}",
                answer["error"].as_str().unwrap_or("no reason given")
            ));
        }
        Ok(answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite()))
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

impl Orchestrator {
    /// Watches the new release for the manifest's `watch` window after the
    /// switch; one failing the limits (`failing`) is rolled back by itself
    /// to the release kept warm, and the deployment fails with the figures.
    pub(crate) async fn watch_after_switch(
        &self,
        job: &Job,
        new: &Arc<Managed>,
        old: &Arc<Managed>,
    ) -> std::result::Result<((), Option<String>), String> {
        let policy = &job.manifest.deploy;
        let Some(window) = policy.watch_window() else {
            return Ok(((), None));
        };
        let ids = [new.record_id];
        let start = self.proxy.stats(&ids).await;
        let started = Instant::now();
        loop {
            let is = Figures::of(new.record_id, &self.proxy.stats(&ids).await, &start);
            if let Some(why) = failing(policy, &is, None) {
                let failing = format!(
                    "the new release answered {is} in its first {:.1} s live, {why}",
                    started.elapsed().as_secs_f64()
                );
                return self.roll_back_watched(job, new, old, failing).await;
            }
            if started.elapsed() >= window {
                return Ok((
                    (),
                    Some(format!(
                        "watched for {}: {is}",
                        humantime::format_duration(window)
                    )),
                ));
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    /// Puts the release kept warm live again (the deployment's own switch,
    /// the other way), and retires the failing one.
    async fn roll_back_watched(
        &self,
        job: &Job,
        new: &Arc<Managed>,
        old: &Arc<Managed>,
        failing: String,
    ) -> std::result::Result<((), Option<String>), String> {
        let warm =
            old.state() == baton_store::TargetState::Warm && old.runtime.alive(&old.handle()).await;
        if !warm {
            // Nothing to go back to: said, and the new release stays.
            let message = format!("{failing}; no warm release to roll back to, so it stays live");
            self.event(&job.key, EventKind::DeploymentFailed, &message)
                .await;
            return Ok(((), Some(message)));
        }
        self.switch(job, old, Some(new))
            .await
            .map_err(|e| format!("{failing}; the roll back failed: {e}"))?;
        self.retire(job, new, "rolled back by the watch").await;
        Err(format!(
            "{failing}; rolled back by itself to release {} (target {}), which serves every request again",
            baton_package::short_id(&old.release),
            old.record_id
        ))
    }
}

/// A running canary as `baton canary status` shows it: the share, and both
/// releases' figures since their targets started.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CanaryView {
    /// Percent of the clients on the canary.
    pub share: u8,
    pub stable: ReleaseFigures,
    pub canary: ReleaseFigures,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReleaseFigures {
    pub target: i64,
    pub release: String,
    pub requests: u64,
    /// 5xx from the app, and the proxy's 502 and 504.
    pub errors: u64,
    /// The 99th percentile of the time to the response head, in ms (a
    /// histogram bucket's bound).
    pub p99_ms: Option<f64>,
}

impl Orchestrator {
    /// The canary running in an app's environment, if one is.
    pub async fn canary_view(&self, key: &baton_proxy::RouteKey) -> Option<CanaryView> {
        let (canary, share) = self.canary_of(key)?;
        let figures = self.target_metrics().await;
        let of = |f: &crate::TargetFigures| ReleaseFigures {
            target: f.target,
            release: f.release.clone(),
            requests: f.stats.requests,
            errors: f.stats.errors(),
            p99_ms: f.stats.metrics.percentile(0.99).map(|s| s * 1000.0),
        };
        let new = figures.iter().find(|f| f.target == canary)?;
        let old = figures
            .iter()
            .find(|f| f.key == *key && f.state == baton_store::TargetState::Live)?;
        Some(CanaryView {
            share,
            stable: of(old),
            canary: of(new),
        })
    }
}
