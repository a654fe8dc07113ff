//! Workers: the processes of `[processes.NAME]`, run beside the web one.
//! They follow the live web release: what should run is the live web
//! target's release with its config version, each process with its
//! instances (the manifest's, or `baton scale`'s); one function
//! (`reconcile_processes`) makes what runs match it — after a
//! deployment's switch, at start-up, after `baton scale` — starting what is
//! missing first, then stopping what is left over, each with its own
//! `stop_timeout` to finish its current job. Workers are supervised like
//! web targets: one that dies is started again.

use std::collections::BTreeMap;
use std::sync::Arc;

use baton_manifest::Manifest;
use baton_proxy::RouteKey;
use baton_runtime::WEB;
use baton_store::{Deployment, EventKind, TargetState};
use serde::{Deserialize, Serialize};

use crate::{Actor, Error, Managed, Orchestrator, Result};

/// What one reconciliation did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reconciled {
    pub started: Vec<i64>,
    pub stopped: Vec<i64>,
}

impl Reconciled {
    pub fn describe(&self) -> String {
        let ids = |ids: &[i64]| {
            ids.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (self.started.is_empty(), self.stopped.is_empty()) {
            (true, true) => "already as it should be".to_string(),
            (false, true) => format!("started targets {}", ids(&self.started)),
            (true, false) => format!("stopped targets {}", ids(&self.stopped)),
            (false, false) => format!(
                "started targets {}; stopped targets {} once they finished",
                ids(&self.started),
                ids(&self.stopped)
            ),
        }
    }
}

/// How many of each worker should run: the manifest's, with `baton
/// scale`'s counts over it (pure).
pub fn wanted(manifest: &Manifest, scaled: &[(String, u32)]) -> BTreeMap<String, u32> {
    manifest
        .processes
        .iter()
        .map(|(name, process)| (name.clone(), count(scaled, name, process.instances)))
        .collect()
}

/// How many of `process` run: `baton scale`'s count, else `manifest`'s.
fn count(scaled: &[(String, u32)], process: &str, manifest: u32) -> u32 {
    scaled
        .iter()
        .find(|(p, _)| p == process)
        .map(|(_, n)| *n)
        .unwrap_or(manifest)
}

impl Orchestrator {
    /// How many web instances a deployment of `key` starts: `baton
    /// scale`'s count, else the manifest's.
    pub(crate) async fn web_instances(&self, key: &RouteKey, manifest: &Manifest) -> Result<u32> {
        let scaled = self.store.scale(&key.app, &key.environment).await?;
        Ok(count(&scaled, WEB, manifest.web.instances).max(1))
    }

    /// The deployment that put `live` live: its release and config are
    /// what every instance and worker of the environment runs.
    async fn live_deployment(&self, live: &baton_store::TargetRecord) -> Result<Deployment> {
        let id = live.deployment_id.ok_or_else(|| {
            Error::Internal(format!(
                "live target {} names no deployment; deploy again",
                live.id
            ))
        })?;
        Ok(self.store.deployment(id).await?)
    }

    /// Whether workers of `key` run (an older release's, to be replaced).
    pub(crate) fn has_workers(&self, key: &RouteKey) -> bool {
        self.managed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|m| m.key == *key && !m.spec.is_web())
    }

    /// Whose output `baton logs` shows: the live web target, or the first
    /// running instance of a worker.
    pub async fn output_target(
        &self,
        app: &str,
        environment: &str,
        process: Option<&str>,
    ) -> Result<Option<baton_store::TargetRecord>> {
        let Some(process) = process else {
            return self.live_target(app, environment).await;
        };
        Ok(self
            .store
            .targets_of(app, environment)
            .await?
            .into_iter()
            .filter(|t| t.process == process && t.state == TargetState::Live)
            .min_by_key(|t| t.id))
    }

    /// Makes the workers of `key` match its live web target: its release,
    /// its config version, the wanted instances. Nothing live: no workers.
    pub(crate) async fn reconcile_processes(
        self: &Arc<Self>,
        key: &RouteKey,
    ) -> Result<Reconciled> {
        let lock = self.environment_lock(key);
        let _held = lock.lock().await;
        self.reconcile_held(key).await
    }

    /// `reconcile_processes`, the environment's lock already held.
    pub(crate) async fn reconcile_held(self: &Arc<Self>, key: &RouteKey) -> Result<Reconciled> {
        let live = self.live_target(&key.app, &key.environment).await?;
        let running: Vec<Arc<Managed>> = self
            .managed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|m| m.key == *key && !m.spec.is_web())
            .cloned()
            .collect();
        let mut done = Reconciled::default();
        let mut keep: Vec<i64> = Vec::new();
        if let Some(live) = &live {
            let release = self.store.release(&live.release_id).await?;
            let manifest = Manifest::parse(&release.manifest, "baton.toml")
                .map_err(|e| Error::Invalid(e.to_string()))?;
            let scaled = self.store.scale(&key.app, &key.environment).await?;
            let deployment = self.live_deployment(live).await?;
            for (name, instances) in wanted(&manifest, &scaled) {
                let mut current = 0;
                // Only running ones count: one found starting or stopping
                // after a crash is replaced.
                let live_ones = running
                    .iter()
                    .filter(|m| m.spec.process == name && m.state() == TargetState::Live);
                for worker in live_ones {
                    // A worker belongs to the deployment that put its web
                    // target live: its release and its config.
                    let record = self.store.target(worker.record_id).await?;
                    if record.deployment_id == live.deployment_id && current < instances {
                        keep.push(worker.record_id);
                        current += 1;
                    }
                }
                for _ in current..instances {
                    let started = self
                        .start_instance(key, &release, &manifest, &name, &deployment)
                        .await
                        .map_err(|e| {
                            Error::Internal(format!(
                                "worker {name} of {} could not start: {e}",
                                key.app
                            ))
                        })?;
                    done.started.push(started.record_id);
                }
            }
        }
        // Then the old ones go, all at once, each finishing its job.
        let leaving: Vec<Arc<Managed>> = running
            .into_iter()
            .filter(|m| !keep.contains(&m.record_id))
            .collect();
        let reason = "the workers of the live release replace it";
        futures_util::future::join_all(leaving.iter().map(|m| self.stop_target(m, reason))).await;
        done.stopped = leaving.iter().map(|m| m.record_id).collect();
        Ok(done)
    }

    /// `baton scale APP web=N worker=M`: workers' counts, kept over the
    /// manifest's, applied at once.
    pub async fn scale(
        self: &Arc<Self>,
        app: &str,
        environment: &str,
        counts: Vec<(String, u32)>,
        actor: &Actor,
    ) -> Result<Reconciled> {
        crate::check_environment(environment)?;
        let key = RouteKey::new(app, environment);
        let lock = self.environment_lock(&key);
        let _held = lock.lock().await;
        // A deployment replaces the instances it would change.
        self.refuse_while_deploying(app, Some(environment)).await?;
        let Some(live) = self.live_target(app, environment).await? else {
            return Err(Error::NotFound(format!(
                "{app} is not running in {environment}: deploy it there first"
            )));
        };
        let release = self.store.release(&live.release_id).await?;
        let manifest = Manifest::parse(&release.manifest, "baton.toml")
            .map_err(|e| Error::Invalid(e.to_string()))?;
        for (process, n) in &counts {
            if process == WEB {
                if *n == 0 {
                    return Err(Error::Invalid(
                        "web=0 would leave nothing to serve; `baton maintenance on` answers visitors while the app is down".into(),
                    ));
                }
            } else if !manifest.processes.contains_key(process) {
                let known: Vec<&String> = manifest.processes.keys().collect();
                return Err(Error::Invalid(format!(
                    "the live release of {app} has no process {process:?} (it has {known:?}); add [processes.{process}] to baton.toml"
                )));
            }
            if *n > baton_manifest::MAX_INSTANCES {
                return Err(Error::Invalid(format!(
                    "{process}={n}: at most {} instances",
                    baton_manifest::MAX_INSTANCES
                )));
            }
        }
        let entry = actor.entry(
            "scale",
            format!("processes of {app}/{environment}"),
            app,
            environment,
            serde_json::json!(counts.iter().cloned().collect::<BTreeMap<String, u32>>()),
        );
        self.store
            .set_scale(app, environment, &counts, &entry)
            .await?;
        let mut done = Reconciled::default();
        if let Some((_, n)) = counts.iter().find(|(p, _)| p == WEB) {
            done = self.scale_web(&key, &release, &manifest, &live, *n).await?;
        }
        let workers = self.reconcile_held(&key).await?;
        done.started.extend(workers.started);
        done.stopped.extend(workers.stopped);
        let message = format!("scaled by {}: {}", actor.name, done.describe());
        self.event(&key, EventKind::Scaled, &message).await;
        Ok(done)
    }
}

impl Orchestrator {
    /// More or fewer instances of the live web release, in place: new ones
    /// are started, checked and then given traffic; surplus ones are taken
    /// out of the route first, drained, then stopped.
    async fn scale_web(
        self: &Arc<Self>,
        key: &RouteKey,
        release: &baton_store::Release,
        manifest: &Manifest,
        live: &baton_store::TargetRecord,
        wanted: u32,
    ) -> Result<Reconciled> {
        let first = self.managed(live.id).ok_or_else(|| {
            Error::Refused(format!(
                "the live target {} is not running; deploy again",
                live.id
            ))
        })?;
        let mut done = Reconciled::default();
        let mut instances = first.instances();
        let deployment = self.live_deployment(live).await?;
        while (instances.len() as u32) + 1 < wanted {
            let started = self
                .start_instance(key, release, manifest, WEB, &deployment)
                .await
                .map_err(Error::Internal)?;
            let healthy = self
                .wait_healthy(&started, &manifest.health, manifest.deploy.timeout)
                .await;
            if let Err(why) = healthy {
                self.stop_target(&started, "it never became healthy").await;
                return Err(Error::Refused(format!(
                    "a new instance of {} did not become healthy: {why}",
                    key.app
                )));
            }
            *started.first.lock().unwrap_or_else(|e| e.into_inner()) = Some(first.record_id);
            self.transition(&started, TargetState::Live, None).await?;
            done.started.push(started.record_id);
            instances.push(started);
        }
        let mut leaving = Vec::new();
        while (instances.len() as u32) + 1 > wanted {
            leaving.extend(instances.pop());
        }
        *first.instances.lock().unwrap_or_else(|e| e.into_inner()) = instances.clone();
        if let Some(spec) = self.proxy.route(key) {
            let spec = baton_proxy::RouteSpec {
                live_instances: instances.iter().map(|m| m.proxy_target.clone()).collect(),
                ..spec
            };
            self.proxy
                .set_route(spec)
                .await
                .map_err(|e| Error::Internal(format!("the proxy did not take the change: {e}")))?;
        }
        for m in leaving {
            let _ = self
                .proxy
                .drain(m.record_id, manifest.deploy.drain_timeout)
                .await;
            self.stop_target(&m, "it was scaled down").await;
            done.stopped.push(m.record_id);
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_counts_win_over_the_manifest_s_and_only_for_its_processes() {
        let manifest = Manifest::parse(
            "name = \"shop\"\n[web]\ncommand = \"web\"\n[processes.worker]\ncommand = \"w\"\ninstances = 2\n[processes.mailer]\ncommand = \"m\"\n",
            "baton.toml",
        )
        .unwrap();
        let wanted = wanted(&manifest, &[("worker".into(), 5), ("gone".into(), 3)]);
        assert_eq!(
            wanted,
            BTreeMap::from([("mailer".into(), 1), ("worker".into(), 5)])
        );
    }
}
