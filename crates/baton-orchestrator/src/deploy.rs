//! Running one deployment, step by step. Each step is recorded as begun
//! before it is taken and as done or failed after; a failure anywhere before
//! the switch leaves the live release exactly as it was.

use std::future::Future;
use std::sync::Arc;

use baton_manifest::RuntimeKind;
use baton_manifest::{EnvironmentConfig, Manifest};
use baton_proxy::{RouteKey, RouteSpec};
use baton_runtime::free_port;
use baton_store::EventKind;
use baton_store::{
    now_ms, Actor, Deployment, DeploymentKind, DeploymentState, Release, RouteRecord, StepKind,
    StepState, TargetState,
};

use crate::{plan, Error, Managed, Orchestrator, Result};

/// What one deployment needs, resolved before it starts.
pub(crate) struct Job {
    pub deployment: Deployment,
    pub release: Release,
    pub manifest: Manifest,
    pub config: EnvironmentConfig,
    pub key: RouteKey,
    pub preview: bool,
    pub warm: Option<Arc<Managed>>,
}

type StepResult<T> = std::result::Result<(T, Option<String>), String>;

/// What a deployment puts live: a release, with the config version its
/// target runs with (none before the first `baton config set`).
pub(crate) struct Runs {
    pub release: Release,
    pub config_version: Option<i64>,
}

impl Orchestrator {
    pub(crate) async fn start_deployment(
        self: &Arc<Self>,
        kind: DeploymentKind,
        environment: &str,
        runs: Runs,
        preview: bool,
        warm: Option<Arc<Managed>>,
        actor: &Actor,
    ) -> Result<Deployment> {
        let Runs {
            release,
            config_version,
        } = runs;
        let manifest = Manifest::parse(&release.manifest, "baton.toml").map_err(|e| {
            Error::Invalid(format!(
                "release {}: {e}",
                baton_package::short_id(&release.id)
            ))
        })?;
        let config = manifest.environment(environment);
        if config.hosts.is_empty() {
            return Err(Error::Invalid(format!(
                "baton.toml: field `hosts`: {} has no host names for environment {environment}; add `hosts = [\"{}.localhost\"]` (or [environments.{environment}] hosts)",
                manifest.name, manifest.name
            )));
        }
        let key = RouteKey::new(&release.app, environment);
        for host in config.hosts.iter().chain(&config.preview_hosts) {
            if let Some(owner) = self.proxy.owner(host).filter(|owner| *owner != key) {
                return Err(Error::Refused(format!(
                    "host {host:?} is already served by {owner}; give {} in {environment} hosts of its own in its baton.toml: [environments.{environment}] hosts = [\"{environment}.{host}\"]",
                    release.app
                )));
            }
        }
        let live = self.live_target(&release.app, environment).await?;
        let previous = live.as_ref().map(|t| t.release_id.as_str());
        // Recorded with the deployment, in its transaction: whichever edge
        // (CLI, API, dashboard, pipeline) asked.
        let action = match kind {
            DeploymentKind::Rollback => "deployment.rollback",
            DeploymentKind::Deploy => "deployment.create",
            DeploymentKind::Restart => "deployment.restart",
        };
        let detail = serde_json::json!({
            "release": release.id,
            "from": previous,
            "preview": preview,
            "config_version": config_version,
        });
        let deployment = self
            .store
            .begin_deployment(
                &release.app,
                environment,
                &release.id,
                kind,
                previous,
                config_version,
                actor,
                action,
                detail,
            )
            .await?;
        let job = Job {
            deployment: deployment.clone(),
            release,
            manifest,
            config,
            key,
            preview,
            warm,
        };
        let this = Arc::clone(self);
        tokio::spawn(async move { this.run(job).await });
        Ok(deployment)
    }

    async fn run(self: Arc<Self>, job: Job) {
        let id = job.deployment.id;
        let (app, environment) = (job.key.app.clone(), job.key.environment.clone());
        let short = baton_package::short_id(&job.release.id).to_string();
        let kind = job.deployment.kind;
        let by = job
            .deployment
            .actor
            .as_deref()
            .map(|actor| format!(" (by {actor})"))
            .unwrap_or_default();
        let outcome = self.execute(&job).await;
        if let Ok(contracts) = &outcome {
            self.record_contracts(&job, contracts).await;
        }
        let outcome = outcome.map(|_| ());
        if outcome.is_ok() && kind == DeploymentKind::Rollback {
            self.restore_config(&job.deployment).await;
        }
        let config = job
            .deployment
            .config_version
            .map(|v| format!(" with config version {v}"))
            .unwrap_or_default();
        let (state, error, event, message) = match &outcome {
            Ok(()) => (
                DeploymentState::Succeeded,
                None,
                if kind == DeploymentKind::Rollback {
                    EventKind::RolledBack
                } else {
                    EventKind::Deployed
                },
                format!("deployment {id}: release {short} is live{config}{by}"),
            ),
            Err(e) => (
                DeploymentState::Failed,
                Some(e.as_str()),
                EventKind::DeploymentFailed,
                format!("deployment {id} of release {short}{by} failed: {e}"),
            ),
        };
        // Before the deployment is recorded as ended, so that whoever waits
        // for its end finds the old images gone.
        if outcome.is_ok() && job.manifest.runtime == RuntimeKind::Docker {
            let keep = job.manifest.docker().keep_images;
            match self.prune_images(&job.key.app, &job.release.id, keep).await {
                Ok(removed) if !removed.is_empty() => {
                    let message = format!(
                        "removed {} old images, keeping the last {keep} releases",
                        removed.len()
                    );
                    self.event(&job.key, EventKind::ImagesPruned, &message)
                        .await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(app = job.key.app, error = %e, "pruning images failed"),
            }
        }
        if outcome.is_ok() {
            let retention = job.manifest.retention();
            self.apply_retention(&job.key, &retention, &job.release.id)
                .await;
        }
        if outcome.is_ok() && kind == DeploymentKind::Deploy {
            if let Some(flags) = self.flags.get() {
                let dir = self.release_dir(&job.release.id);
                match flags.apply_release_flags(&app, &environment, &dir).await {
                    Ok(Some(done)) => self.event(&job.key, EventKind::FlagsApplied, &done).await,
                    Ok(None) => {}
                    Err(e) => self.event(&job.key, EventKind::FlagsFailed, &e).await,
                }
            }
        }
        if let Err(e) = self.store.set_deployment_state(id, state, error).await {
            tracing::error!(deployment = id, error = %e, "cannot record the end of a deployment");
        }
        self.event(&job.key, event, &message).await;
        match outcome {
            Ok(()) => tracing::info!(
                deployment = id,
                app,
                environment,
                release = short,
                "deployment succeeded"
            ),
            Err(e) => tracing::warn!(
                deployment = id,
                app,
                environment,
                release = short,
                error = e,
                "deployment failed"
            ),
        }
    }

    /// Records the step, runs it, records how it ended.
    async fn step<T>(
        &self,
        deployment: i64,
        kind: StepKind,
        work: impl Future<Output = StepResult<T>>,
    ) -> std::result::Result<T, String> {
        let seq = self
            .store
            .begin_step(deployment, kind, None)
            .await
            .map_err(|e| format!("cannot record step {kind}: {e}"))?;
        match work.await {
            Ok((value, detail)) => {
                self.store
                    .end_step(deployment, seq, StepState::Done, detail.as_deref())
                    .await
                    .map_err(|e| format!("cannot record the end of step {kind}: {e}"))?;
                Ok(value)
            }
            Err(error) => {
                crate::noted(
                    self.store
                        .end_step(deployment, seq, StepState::Failed, Some(&error))
                        .await,
                    "end_step",
                );
                Err(error)
            }
        }
    }

    /// Runs the steps; on success, the contract migrations left for later.
    /// Carries out the deployment's plan (`plan::steps`), step by step in
    /// its order; each step is recorded as begun before it is taken.
    async fn execute(self: &Arc<Self>, job: &Job) -> std::result::Result<Vec<String>, String> {
        let d = job.deployment.id;
        let live = self
            .live_target(&job.key.app, &job.key.environment)
            .await
            .map_err(|e| e.to_string())?;
        let old = live.and_then(|t| self.managed(t.id));
        let steps = plan::steps(&plan::Shape {
            kind: job.deployment.kind,
            warm_target: job.warm.is_some(),
            preview: job.preview,
            has_previous: old.is_some(),
            has_database: job.manifest.database.is_some(),
            canary: job.manifest.deploy.is_canary(),
            watch: job.manifest.deploy.watch_window().is_some(),
            release_command: job.manifest.deploy.release_command.is_some(),
            processes: !job.manifest.processes.is_empty() || self.has_workers(&job.key),
        });
        let mut contracts = Vec::new();
        // A rollback to a warm target starts nothing: that target is the new one.
        let mut new: Option<Arc<Managed>> = None;
        if let Some(warm) = &job.warm {
            self.store
                .set_deployment_target(d, warm.record_id)
                .await
                .map_err(|e| e.to_string())?;
            new = Some(Arc::clone(warm));
        }
        let mut hold = None;
        for step in steps {
            match step {
                StepKind::Migrate => {
                    contracts = self.step(d, step, self.migrate_expand(job)).await?;
                }
                StepKind::Processes => {
                    self.step(d, step, async {
                        self.reconcile_processes(&job.key)
                            .await
                            .map(|done| ((), Some(done.describe())))
                            .map_err(|e| e.to_string())
                    })
                    .await?;
                }
                StepKind::ReleaseCommand => {
                    self.step(d, step, self.release_command(job)).await?;
                }
                StepKind::StartTarget => {
                    new = Some(self.step(d, step, self.start_target(job)).await?);
                }
                StepKind::HealthCheck => {
                    let target = planned(&new, step)?;
                    let health = &job.manifest.health;
                    let within = if job.warm.is_some() {
                        health.timeout
                    } else {
                        job.manifest.deploy.timeout
                    };
                    let checked = self
                        .step(d, step, async {
                            // Every instance of the release, at once.
                            let all = target.all();
                            let checks = all.iter().map(|m| self.wait_healthy(m, health, within));
                            let details = futures_util::future::try_join_all(checks).await?;
                            Ok(((), details.into_iter().next()))
                        })
                        .await;
                    if let Err(e) = checked {
                        if job.warm.is_none() {
                            self.fail_target(target, "it never became healthy").await;
                        }
                        return Err(e);
                    }
                    if job.warm.is_none() {
                        let _ = self.transition(target, TargetState::Healthy, None).await;
                    }
                }
                StepKind::Preview => {
                    let target = planned(&new, step)?;
                    if let Err(e) = self.step(d, step, self.preview(job, target)).await {
                        if job.warm.is_none() {
                            self.stop_target(target, "its deployment was abandoned in preview")
                                .await;
                        }
                        return Err(e);
                    }
                }
                StepKind::Canary => {
                    let target = planned(&new, step)?;
                    let Some(old) = &old else { continue };
                    if let Err(e) = self.step(d, step, self.canary(job, target, old)).await {
                        self.retire(job, target, "its canary was aborted").await;
                        return Err(e);
                    }
                }
                StepKind::Hold => {
                    hold = Some(
                        self.step(d, step, async {
                            let hold = self.proxy.hold(&job.key).await;
                            hold.map(|h| (h, None)).map_err(|e| e.to_string())
                        })
                        .await?,
                    );
                }
                StepKind::Switch => {
                    let target = planned(&new, step)?;
                    let switched = self
                        .step(d, step, async {
                            self.switch(job, target, old.as_ref())
                                .await
                                .map(|detail| ((), Some(detail)))
                        })
                        .await;
                    if let Err(e) = switched {
                        drop(hold.take());
                        if job.warm.is_none() {
                            self.stop_target(target, "the switch to it failed").await;
                        }
                        return Err(e);
                    }
                }
                StepKind::Release => {
                    let held = hold.take();
                    self.step(d, step, async {
                        let waiting = match held {
                            Some(hold) => hold.release().await,
                            None => 0,
                        };
                        Ok(((), Some(format!("{waiting} held requests released"))))
                    })
                    .await?;
                }
                StepKind::Drain => {
                    let Some(old) = &old else { continue };
                    let drain_timeout = job.manifest.deploy.drain_timeout;
                    self.step(d, step, async {
                        let left = self.drain_all(old, drain_timeout).await?;
                        let detail = if left == 0 {
                            "no request left in flight on the old target".to_string()
                        } else {
                            // WebSockets and event streams had their drain
                            // time: they close now, and reconnect to the new
                            // release.
                            let mut closed = 0;
                            for instance in old.all() {
                                closed += self
                                    .proxy
                                    .cut_long_lived(instance.record_id)
                                    .await
                                    .unwrap_or(0);
                            }
                            if closed > 0 {
                                let message = format!(
                                    "{closed} WebSockets and event streams on target {} closed after the drain timeout; their clients reconnect to the new release",
                                    old.record_id
                                );
                                self.event(&job.key, EventKind::LongLivedClosed, &message)
                                    .await;
                            }
                            format!(
                                "{left} requests still in flight after the drain timeout ({}); {closed} WebSockets and event streams closed",
                                humantime::format_duration(drain_timeout)
                            )
                        };
                        Ok(((), Some(detail)))
                    })
                    .await?;
                }
                StepKind::KeepWarm => {
                    let Some(old) = &old else { continue };
                    self.step(d, step, self.keep_warm(job, old)).await?;
                }
                StepKind::Watch => {
                    let (Some(old), Some(target)) = (&old, &new) else {
                        continue;
                    };
                    self.step(d, step, self.watch_after_switch(job, target, old))
                        .await?;
                }
                // Recorded by a restarted server, never planned.
                StepKind::Recover => {}
            }
        }
        Ok(contracts)
    }

    /// Starts the release's web instances (`[web] instances`, or `baton
    /// scale`'s count): the first stands for them all (the deployment and
    /// the route name it).
    async fn start_target(self: &Arc<Self>, job: &Job) -> StepResult<Arc<Managed>> {
        let wanted = self
            .web_instances(&job.key, &job.manifest)
            .await
            .map_err(|e| e.to_string())?;
        let first = self
            .start_instance(
                &job.key,
                &job.release,
                &job.manifest,
                baton_runtime::WEB,
                &job.deployment,
            )
            .await?;
        self.store
            .set_deployment_target(job.deployment.id, first.record_id)
            .await
            .map_err(|e| e.to_string())?;
        let mut others = Vec::new();
        for _ in 1..wanted {
            match self
                .start_instance(
                    &job.key,
                    &job.release,
                    &job.manifest,
                    baton_runtime::WEB,
                    &job.deployment,
                )
                .await
            {
                Ok(other) => others.push(other),
                Err(e) => {
                    *first.instances.lock().unwrap_or_else(|e| e.into_inner()) = others;
                    self.fail_target(&first, "another instance of its release could not start")
                        .await;
                    return Err(e);
                }
            }
        }
        for other in &others {
            *other.first.lock().unwrap_or_else(|e| e.into_inner()) = Some(first.record_id);
        }
        let detail = std::iter::once(&first)
            .chain(&others)
            .map(|m| {
                format!(
                    "target {} on port {} ({} {})",
                    m.record_id,
                    m.spec.port,
                    job.manifest.runtime.as_str(),
                    m.handle().reference
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        *first.instances.lock().unwrap_or_else(|e| e.into_inner()) = others;
        Ok((first, Some(detail)))
    }

    /// Starts one target of `release`'s `process` for `deployment` (with
    /// its config version), managed and supervised: a web instance (a
    /// port, starting until its health check) or a worker (no port, live
    /// at once).
    pub(crate) async fn start_instance(
        self: &Arc<Self>,
        key: &RouteKey,
        release: &Release,
        manifest: &Manifest,
        process: &str,
        deployment: &Deployment,
    ) -> std::result::Result<Arc<Managed>, String> {
        let web = process == baton_runtime::WEB;
        let runtime = self.runtime(manifest.runtime);
        let port = match web {
            true => free_port().map_err(|e| format!("no free port for the new target: {e}"))?,
            false => 0,
        };
        let record = self
            .store
            .create_target(&baton_store::NewTarget {
                app: &key.app,
                environment: &key.environment,
                release_id: &release.id,
                deployment_id: deployment.id,
                port,
                runtime: manifest.runtime.as_str(),
                process,
            })
            .await
            .map_err(|e| e.to_string())?;
        let config = self
            .config_values(&key.app, &key.environment, deployment.config_version)
            .await
            .map_err(|e| e.to_string())?;
        let started = match self.target_spec(&record, release, manifest, config) {
            Ok(spec) => runtime
                .start(&spec)
                .await
                .map(|handle| (spec, handle))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (spec, handle) = match started {
            Ok(started) => started,
            Err(e) => {
                crate::noted(
                    self.store
                        .set_target_state(record.id, TargetState::Failed, None)
                        .await,
                    "set_target_state",
                );
                return Err(e);
            }
        };
        self.store
            .set_target_handle(record.id, &handle.reference)
            .await
            .map_err(|e| e.to_string())?;
        let managed = Managed::new(
            spec,
            handle,
            TargetState::Starting,
            crate::stop_timeout(manifest, process),
            runtime,
        );
        if !web {
            self.transition(&managed, TargetState::Live, None)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.manage(Arc::clone(&managed));
        self.supervise(Arc::clone(&managed));
        Ok(managed)
    }

    pub(crate) fn route_spec(
        &self,
        job: &Job,
        live: Option<&Managed>,
        preview: Option<&Managed>,
    ) -> RouteSpec {
        RouteSpec {
            key: job.key.clone(),
            hosts: job.config.hosts.clone(),
            preview_hosts: job.config.preview_hosts.clone(),
            live: live.map(|m| m.proxy_target.clone()),
            live_instances: live
                .map(|m| {
                    m.instances()
                        .iter()
                        .map(|i| i.proxy_target.clone())
                        .collect()
                })
                .unwrap_or_default(),
            preview: preview.map(|m| m.proxy_target.clone()),
            hold_timeout: job.manifest.deploy.hold_timeout,
            limits: route_limits(&job.manifest),
            maintenance: self.maintenance_of(&job.key),
            tls: route_tls(&job.manifest),
            canary: None,
            live_updates: job.manifest.proxy.live_updates,
        }
    }

    pub(crate) fn route_record(
        &self,
        job: &Job,
        live: Option<i64>,
        preview: Option<i64>,
    ) -> RouteRecord {
        RouteRecord {
            app: job.key.app.clone(),
            environment: job.key.environment.clone(),
            hosts: job.config.hosts.clone(),
            preview_hosts: job.config.preview_hosts.clone(),
            hold_timeout_ms: job.manifest.deploy.hold_timeout.as_millis() as i64,
            live_target: live,
            preview_target: preview,
        }
    }

    async fn preview(&self, job: &Job, new: &Arc<Managed>) -> StepResult<()> {
        let current = self.proxy.route(&job.key);
        let live = current
            .as_ref()
            .and_then(|s| s.live.as_ref())
            .and_then(|t| self.managed(t.id));
        let live_id = live.as_ref().map(|m| m.record_id);
        let waiting = self.await_preview(job.deployment.id);
        self.store
            .put_route(&self.route_record(job, live_id, Some(new.record_id)))
            .await
            .map_err(|e| e.to_string())?;
        self.proxy
            .set_route(self.route_spec(job, live.as_deref(), Some(new)))
            .await
            .map_err(|e| e.to_string())?;
        crate::noted(
            self.store
                .set_deployment_state(job.deployment.id, DeploymentState::Previewing, None)
                .await,
            "set_deployment_state",
        );
        let go_on = waiting.await.unwrap_or(false);
        // Whatever the answer, the preview ends here; the switch (if any)
        // puts the new target live in the next steps.
        crate::noted(
            self.store
                .put_route(&self.route_record(job, live_id, None))
                .await,
            "put_route",
        );
        if let Err(e) = self
            .proxy
            .set_route(self.route_spec(job, live.as_deref(), None))
            .await
        {
            tracing::warn!(error = %e, "cannot end the preview route; the server's next start sets it again");
        }
        crate::noted(
            self.store
                .set_deployment_state(job.deployment.id, DeploymentState::Running, None)
                .await,
            "set_deployment_state",
        );
        if go_on {
            Ok(((), Some("continued after preview".into())))
        } else {
            Err("aborted during preview; the live release was not changed".into())
        }
    }

    pub(crate) async fn switch(
        &self,
        job: &Job,
        new: &Arc<Managed>,
        old: Option<&Arc<Managed>>,
    ) -> std::result::Result<String, String> {
        // Never between a `baton scale` and the route it sets.
        let lock = self.environment_lock(&job.key);
        let _held = lock.lock().await;
        let previous = self
            .store
            .route(&job.key.app, &job.key.environment)
            .await
            .map_err(|e| e.to_string())?;
        // The route is recorded before the proxy is told: after a crash the
        // store, not memory, says which target is live.
        self.store
            .put_route(&self.route_record(job, Some(new.record_id), None))
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = self
            .proxy
            .set_route(self.route_spec(job, Some(new), None))
            .await
        {
            if let Some(previous) = previous {
                crate::noted(self.store.put_route(&previous).await, "put_route");
            }
            return Err(e.to_string());
        }
        let _ = self.transition(new, TargetState::Live, None).await;
        if let Some(old) = old {
            let _ = self.transition(old, TargetState::Draining, None).await;
        }
        Ok(format!(
            "{} → target {} ({})",
            job.config.hosts.join(", "),
            new.record_id,
            baton_package::short_id(&new.release)
        ))
    }

    async fn keep_warm(&self, job: &Job, old: &Arc<Managed>) -> StepResult<()> {
        // Only the release just replaced stays warm; older warm ones go.
        let others: Vec<Arc<Managed>> = self
            .managed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|m| {
                m.key == job.key
                    && m.record_id != old.record_id
                    && m.is_first()
                    && m.state() == TargetState::Warm
            })
            .cloned()
            .collect();
        for other in others {
            self.stop_target(&other, "a newer release is now the one kept warm")
                .await;
        }
        let keep = job.manifest.deploy.keep_warm;
        if !old.runtime.alive(&old.handle()).await {
            // It died while draining; its supervisor has let it go.
            crate::noted(
                self.store
                    .set_target_state(old.record_id, TargetState::Stopped, None)
                    .await,
                "set_target_state",
            );
            return Ok((
                (),
                Some("old target had already exited; nothing to keep warm".into()),
            ));
        }
        if keep.is_zero() {
            self.stop_target(old, "keep_warm is 0").await;
            return Ok(((), Some("old target stopped (keep_warm = 0)".into())));
        }
        let until = now_ms() + keep.as_millis() as i64;
        self.transition(old, TargetState::Warm, Some(until))
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            (),
            Some(format!(
                "target {} ({}) kept warm for {}",
                old.record_id,
                baton_package::short_id(&old.release),
                humantime::format_duration(keep)
            )),
        ))
    }

    /// Stops a target no route sends to any more, once its requests in
    /// flight have finished (or the app's drain timeout has passed).
    pub(crate) async fn retire(&self, job: &Job, target: &Arc<Managed>, reason: &str) {
        let _ = self
            .drain_all(target, job.manifest.deploy.drain_timeout)
            .await;
        self.stop_target(target, reason).await;
    }

    /// Waits for the requests in flight on a release's instances to end
    /// (at most `timeout`); how many are left.
    pub(crate) async fn drain_all(
        &self,
        target: &Arc<Managed>,
        timeout: std::time::Duration,
    ) -> std::result::Result<usize, String> {
        let drains = target
            .all()
            .into_iter()
            .map(|m| async move { self.proxy.drain(m.record_id, timeout).await });
        let mut left = 0;
        for drained in futures_util::future::join_all(drains).await {
            left += drained.map_err(|e| e.to_string())?;
        }
        Ok(left)
    }

    /// Stops a target for good: marks it stopping (so its supervisor lets it
    /// go), stops it, records it stopped.
    pub(crate) async fn stop_target(&self, managed: &Arc<Managed>, reason: &str) {
        let _ = self.transition(managed, TargetState::Stopping, None).await;
        // Its release's other instances stop with it, at once.
        let stopping = managed.all();
        let mut exits = futures_util::future::join_all(stopping.iter().map(|m| async move {
            let handle = m.handle();
            m.runtime.stop(&handle, m.stop_timeout).await
        }))
        .await;
        for (m, exit) in stopping.iter().zip(&exits).skip(1) {
            if let Err(e) = exit {
                tracing::warn!(target = m.record_id, error = %e, "an instance could not be stopped cleanly");
            }
        }
        let exit = exits.swap_remove(0);
        let _ = self.transition(managed, TargetState::Stopped, None).await;
        for m in &stopping {
            self.forget(m.record_id);
        }
        let message = match exit {
            Ok(exit) => format!(
                "target {} stopped because {reason}; it {exit}",
                managed.record_id
            ),
            Err(e) => format!(
                "target {} could not be stopped cleanly ({reason}): {e}",
                managed.record_id
            ),
        };
        self.event(&managed.key, EventKind::TargetStopped, &message)
            .await;
    }

    async fn fail_target(&self, managed: &Arc<Managed>, reason: &str) {
        self.stop_target(managed, reason).await;
        let _ = self.transition(managed, TargetState::Failed, None).await;
    }
}

/// The new target a step works on, which an earlier step of the plan
/// provided (a start, or the warm target of a rollback).
fn planned(
    new: &Option<Arc<Managed>>,
    step: StepKind,
) -> std::result::Result<&Arc<Managed>, String> {
    new.as_ref().ok_or_else(|| {
        format!(
            "the plan reached {} with no new target (a bug in Baton's plan)",
            step.as_str()
        )
    })
}

/// The proxy's limits for an app, from its manifest's `[proxy]` section.
/// How the proxy serves the app's hosts over HTTPS (its `[tls]`).
pub(crate) fn route_tls(manifest: &Manifest) -> Option<baton_proxy::RouteTls> {
    let tls = manifest.tls.as_ref()?;
    let source = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) if !tls.acme => baton_proxy::TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => baton_proxy::TlsSource::Acme {
            challenge: baton_proxy::AcmeChallenge::from_name(&tls.challenge).unwrap_or_default(),
        },
    };
    Some(baton_proxy::RouteTls {
        source,
        redirect: tls.redirect,
        hsts: tls.hsts_max_age(),
    })
}

pub(crate) fn route_limits(manifest: &Manifest) -> baton_proxy::RouteLimits {
    baton_proxy::RouteLimits {
        connect_timeout: manifest.proxy.connect_timeout,
        response_timeout: manifest.proxy.response_timeout,
        max_body: manifest.proxy.max_body_bytes(),
    }
}
