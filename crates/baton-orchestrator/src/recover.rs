//! Start-up after a restart, a crash or kill -9: adopt the targets that are
//! still running (never restarting them), restore the proxy's routes from the
//! store, and finish or undo the deployments that were cut short.

use std::sync::Arc;

use baton_manifest::Manifest;
use baton_manifest::RuntimeKind;
use baton_proxy::{RouteKey, RouteSpec};
use baton_runtime::TargetHandle;
use baton_store::EventKind;
use baton_store::{now_ms, DeploymentState, StepKind, StepState, TargetRecord, TargetState};
use serde::Serialize;

use crate::plan::{self, Recovery};
use crate::{stop_timeout, Managed, Orchestrator, Result};

/// What start-up found and did, for the log and for tests.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RecoveryReport {
    pub adopted: Vec<i64>,
    pub restarted: Vec<i64>,
    pub gone: Vec<i64>,
    pub routes: usize,
    pub finished_deployments: Vec<i64>,
    pub undone_deployments: Vec<i64>,
}

impl Orchestrator {
    pub async fn recover(self: &Arc<Self>) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let active = self.store.active_targets().await?;
        for record in &active {
            self.recover_target(record.clone(), &mut report).await?;
        }
        self.regroup_instances(&active).await?;
        *self.maintenance.lock().unwrap_or_else(|e| e.into_inner()) = self
            .store
            .maintenance()
            .await?
            .into_iter()
            .map(|(app, environment, message)| (RouteKey::new(app, environment), message))
            .collect();
        let mut specs = Vec::new();
        for route in self.store.routes().await? {
            let key = RouteKey::new(&route.app, &route.environment);
            let maintenance = self.maintenance_of(&key);
            let live = route.live_target.and_then(|id| self.managed(id));
            // The live release's manifest says how the proxy treats the app.
            let manifest = match &live {
                Some(m) => self
                    .store
                    .release(&m.release)
                    .await
                    .ok()
                    .and_then(|r| Manifest::parse(&r.manifest, "baton.toml").ok()),
                None => None,
            };
            let limits = manifest
                .as_ref()
                .map(crate::deploy::route_limits)
                .unwrap_or_default();
            let tls = manifest.as_ref().and_then(crate::deploy::route_tls);
            let spec = RouteSpec {
                key,
                hosts: route.hosts.clone(),
                preview_hosts: route.preview_hosts.clone(),
                live_instances: live
                    .as_ref()
                    .map(|m| {
                        m.instances()
                            .iter()
                            .map(|i| i.proxy_target.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                live: live.map(|m| m.proxy_target.clone()),
                preview: None,
                hold_timeout: std::time::Duration::from_millis(route.hold_timeout_ms.max(0) as u64),
                limits,
                maintenance,
                tls,
                canary: None,
                live_updates: manifest.as_ref().is_some_and(|m| m.proxy.live_updates),
            };
            specs.push(spec);
        }
        // The proxy may have served on while this process was down: its
        // table is replaced whole by the store's, routes gone since included.
        report.routes = specs.len();
        let refused = self.proxy.replace_routes(specs).await.map_err(|e| {
            crate::Error::Internal(format!("cannot give the proxy its routes: {e}"))
        })?;
        for (key, why) in refused {
            tracing::error!(app = key.app, environment = key.environment, error = %why, "cannot restore route");
            report.routes -= 1;
        }
        for deployment in self.store.unfinished_deployments().await? {
            let route = self
                .store
                .route(&deployment.app, &deployment.environment)
                .await?;
            let live_target = route.as_ref().and_then(|r| r.live_target);
            let seq = self
                .store
                .begin_step(
                    deployment.id,
                    StepKind::Recover,
                    Some("the server restarted during this deployment"),
                )
                .await?;
            match plan::recovery(&deployment, live_target) {
                Recovery::Finish => {
                    self.store
                        .end_step(
                            deployment.id,
                            seq,
                            StepState::Done,
                            Some("the switch had happened; deployment finished"),
                        )
                        .await?;
                    self.store
                        .set_deployment_state(deployment.id, DeploymentState::Succeeded, None)
                        .await?;
                    report.finished_deployments.push(deployment.id);
                }
                Recovery::Undo => {
                    if let Some(route) = route.as_ref().filter(|r| r.preview_target.is_some()) {
                        let mut cleared = route.clone();
                        cleared.preview_target = None;
                        self.store.put_route(&cleared).await?;
                    }
                    if let Some(target) = deployment.target_id {
                        let record = self.store.target(target).await?;
                        if record.deployment_id == Some(deployment.id)
                            && Some(target) != live_target
                        {
                            if let Some(managed) = self.managed(target) {
                                self.stop_target(
                                    &managed,
                                    "its deployment was interrupted by a server restart",
                                )
                                .await;
                            }
                            self.store
                                .set_target_state(target, TargetState::Failed, None)
                                .await?;
                        }
                    }
                    let why = "interrupted by a server restart before the switch; the live release did not change";
                    self.store
                        .end_step(deployment.id, seq, StepState::Done, Some(why))
                        .await?;
                    self.store
                        .set_deployment_state(deployment.id, DeploymentState::Failed, Some(why))
                        .await?;
                    report.undone_deployments.push(deployment.id);
                }
            }
        }
        self.settle_previous_targets().await?;
        // Workers as the live releases want them (those adopted stay).
        for route in self.store.routes().await? {
            let key = RouteKey::new(&route.app, &route.environment);
            if let Err(e) = self.reconcile_processes(&key).await {
                tracing::error!(app = key.app, environment = key.environment, error = %e, "cannot start the workers");
            }
        }
        Ok(report)
    }

    async fn recover_target(
        self: &Arc<Self>,
        record: TargetRecord,
        report: &mut RecoveryReport,
    ) -> Result<()> {
        let release = self.store.release(&record.release_id).await?;
        let manifest = match Manifest::parse(&release.manifest, "baton.toml") {
            Ok(manifest) => manifest,
            Err(e) => {
                tracing::error!(target = record.id, error = %e, "stored manifest no longer parses");
                return Ok(());
            }
        };
        let Some(kind) = RuntimeKind::from_name(&record.runtime) else {
            tracing::error!(
                target = record.id,
                runtime = record.runtime,
                "unknown runtime in the store"
            );
            return Ok(());
        };
        let runtime = self.runtime(kind);
        if let Err(e) = runtime.available().await {
            // Say a Docker Engine that is down: whether the target still
            // runs is unknown, so its record is left as it is.
            tracing::error!(target = record.id, error = %e, "cannot look after this target now");
            return Ok(());
        }
        // A target started again gets the config it ran with.
        let config = match self.config_of_target(record.deployment_id).await {
            Ok(version) => {
                self.config_values(&record.app, &record.environment, version)
                    .await
            }
            Err(e) => Err(e),
        };
        // A running target is adopted whatever happened to the key (its
        // process has its environment already); only a start needs it.
        let (config, unreadable) = match config {
            Ok(config) => (config, None),
            Err(e) => (Default::default(), Some(e.to_string())),
        };
        let spec = match self.target_spec(&record, &release, &manifest, config) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::error!(target = record.id, error = %e, "cannot look after this target");
                return Ok(());
            }
        };
        let handle = record.handle.clone().map(|reference| TargetHandle {
            target_id: record.id,
            reference,
        });
        let running = match &handle {
            Some(h) => runtime.alive(h).await,
            None => false,
        };
        let managed = |handle: TargetHandle, state| {
            Managed::new(
                spec.clone(),
                handle,
                state,
                stop_timeout(&manifest, &record.process),
                Arc::clone(&runtime),
            )
        };
        match (record.state, handle, running) {
            (state, Some(handle), true) => {
                runtime.adopt(&handle).await;
                let m = managed(handle, state);
                self.manage(Arc::clone(&m));
                self.supervise(m);
                report.adopted.push(record.id);
            }
            (TargetState::Live, _, _) if unreadable.is_some() => {
                let why = unreadable.unwrap_or_default();
                tracing::error!(target = record.id, error = %why, "a live target is down and its config cannot be read; not started");
                let message = format!(
                    "live target {} was not running when the server started, and could not be started without its config: {why}",
                    record.id
                );
                self.event(
                    &RouteKey::new(&record.app, &record.environment),
                    EventKind::TargetRestartFailed,
                    &message,
                )
                .await;
                return Ok(());
            }
            (TargetState::Live, _, _) => {
                // A live target that died while the server was down is
                // started again; if even that fails, its supervisor keeps
                // trying with backoff rather than the server refusing to start.
                let (handle, message) = match runtime.start(&spec).await {
                    Ok(handle) => {
                        self.store
                            .set_target_handle(record.id, &handle.reference)
                            .await?;
                        self.store.count_restart(record.id).await?;
                        let message = format!(
                            "live target {} was not running when the server started; started it again",
                            record.id
                        );
                        (handle, message)
                    }
                    Err(e) => {
                        let gone = TargetHandle {
                            target_id: record.id,
                            reference: "0@0".into(),
                        };
                        let message = format!(
                            "live target {} was not running and could not be started: {e}",
                            record.id
                        );
                        (gone, message)
                    }
                };
                let m = managed(handle, TargetState::Live);
                self.manage(Arc::clone(&m));
                self.supervise(Arc::clone(&m));
                self.event(&m.key, EventKind::TargetRestarted, &message)
                    .await;
                report.restarted.push(record.id);
            }
            (state, _, _) => {
                let next = if state == TargetState::Starting {
                    TargetState::Failed
                } else {
                    TargetState::Stopped
                };
                self.store.set_target_state(record.id, next, None).await?;
                report.gone.push(record.id);
            }
        }
        Ok(())
    }

    /// The web instances started together (one deployment's, one release's)
    /// are one group again: the route's live target, else the deployment's
    /// own, stands for the others; one found in another state (an instance
    /// a crash caught starting) is stopped, never routed unchecked.
    async fn regroup_instances(&self, active: &[TargetRecord]) -> Result<()> {
        let mut groups: std::collections::BTreeMap<(String, String, i64), Vec<Arc<Managed>>> =
            std::collections::BTreeMap::new();
        for record in active.iter().filter(|r| r.process == baton_runtime::WEB) {
            let (Some(deployment), Some(managed)) = (record.deployment_id, self.managed(record.id))
            else {
                continue;
            };
            groups
                .entry((record.app.clone(), record.environment.clone(), deployment))
                .or_default()
                .push(managed);
        }
        for ((app, environment, deployment), mut group) in groups {
            let live = self
                .store
                .route(&app, &environment)
                .await?
                .and_then(|r| r.live_target);
            let named = self.store.deployment(deployment).await?.target_id;
            group.sort_by_key(|m| {
                (
                    Some(m.record_id) != live,
                    Some(m.record_id) != named,
                    m.record_id,
                )
            });
            let first = group.remove(0);
            let (together, astray): (Vec<_>, Vec<_>) =
                group.into_iter().partition(|m| m.state() == first.state());
            for other in &together {
                *other.first.lock().unwrap_or_else(|e| e.into_inner()) = Some(first.record_id);
            }
            *first.instances.lock().unwrap_or_else(|e| e.into_inner()) = together;
            for other in astray {
                self.stop_target(
                    &other,
                    "a restart found it apart from its release's instances",
                )
                .await;
            }
        }
        Ok(())
    }

    /// After recovery, a running target that is not live is the previous
    /// release: the newest such is kept warm, any other is stopped.
    async fn settle_previous_targets(self: &Arc<Self>) -> Result<()> {
        for route in self.store.routes().await? {
            let mut previous: Vec<Arc<Managed>> = self
                .managed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|m| m.key.app == route.app && m.key.environment == route.environment)
                .filter(|m| {
                    m.spec.is_web() && m.is_first() && Some(m.record_id) != route.live_target
                })
                .filter(|m| {
                    matches!(
                        m.state(),
                        TargetState::Live
                            | TargetState::Draining
                            | TargetState::Warm
                            | TargetState::Healthy
                    )
                })
                .cloned()
                .collect();
            previous.sort_by_key(|m| std::cmp::Reverse(m.record_id));
            let mut kept = false;
            for m in previous {
                if !kept && m.state() != TargetState::Healthy {
                    kept = true;
                    if m.state() != TargetState::Warm {
                        let release = self.store.release(&m.release).await?;
                        let keep = Manifest::parse(&release.manifest, "baton.toml")
                            .map(|manifest| manifest.deploy.keep_warm)
                            .unwrap_or_default();
                        self.transition(
                            &m,
                            TargetState::Warm,
                            Some(now_ms() + keep.as_millis() as i64),
                        )
                        .await?;
                    }
                } else {
                    self.stop_target(&m, "it is neither live nor the previous release")
                        .await;
                }
            }
        }
        Ok(())
    }
}
