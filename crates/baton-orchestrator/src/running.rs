//! What runs, started and stopped as a whole: `baton restart` (the live
//! release deployed again, blue-green), `baton stop` (the route keeps its
//! hosts but sends them nowhere — the proxy answers 503 — and every target
//! and worker of the environment stops; a restarted server keeps it so)
//! and `baton start` (the release that was live, deployed again with the
//! newest config).

use std::sync::Arc;

use baton_proxy::RouteKey;
use baton_store::{Deployment, DeploymentKind, EventKind, TargetState};

use crate::deploy::Runs;
use crate::{Actor, Error, Managed, Orchestrator, Result};

impl Orchestrator {
    /// Deploys the live release of `app` in `environment` again, with the
    /// newest config: new target, health check, switch, drain (zero
    /// downtime), as any deploy.
    pub async fn restart(
        self: &std::sync::Arc<Self>,
        app: &str,
        environment: &str,
        actor: &Actor,
    ) -> Result<Deployment> {
        crate::check_environment(environment)?;
        let Some(live) = self.live_target(app, environment).await? else {
            return Err(Error::NotFound(format!(
                "{app} is not running in {environment}: deploy it there (`baton deploy DIR -e {environment}`)"
            )));
        };
        let release = self.store.release(&live.release_id).await?;
        let version = self
            .store
            .config_version(app, environment, None)
            .await?
            .map(|v| v.version);
        self.start_deployment(
            DeploymentKind::Restart,
            environment,
            crate::deploy::Runs {
                release,
                config_version: version,
            },
            false,
            None,
            actor,
        )
        .await
    }

    /// Stops `app` in `environment`: its route goes nowhere (visitors get
    /// 503), then its targets (live, warm) drain and stop, and its workers.
    pub async fn stop_environment(
        self: &Arc<Self>,
        app: &str,
        environment: &str,
        actor: &Actor,
    ) -> Result<()> {
        crate::check_environment(environment)?;
        let Some(live) = self.live_target(app, environment).await? else {
            return Err(Error::NotFound(format!(
                "{app} is not running in {environment}; nothing to stop (`baton status` shows what runs)"
            )));
        };
        let key = RouteKey::new(app, environment);
        let lock = self.environment_lock(&key);
        let _held = lock.lock().await;
        self.refuse_while_deploying(app, Some(environment)).await?;
        let entry = actor.entry(
            "environment.stop",
            format!("environment {app}/{environment}"),
            app,
            environment,
            serde_json::json!({ "release": live.release_id, "target": live.id }),
        );
        self.store.stop_route(app, environment, &entry).await?;
        if let Some(spec) = self.proxy.route(&key) {
            let spec = baton_proxy::RouteSpec {
                live: None,
                live_instances: Vec::new(),
                preview: None,
                canary: None,
                ..spec
            };
            self.proxy
                .set_route(spec)
                .await
                .map_err(|e| Error::Internal(format!("the proxy did not take the change: {e}")))?;
        }
        // Every group of web instances (the live one, the warm one), then
        // the workers: nothing of the environment runs.
        let running: Vec<Arc<Managed>> = self
            .managed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|m| {
                m.key == key
                    && m.spec.is_web()
                    && m.is_first()
                    && matches!(
                        m.state(),
                        TargetState::Live | TargetState::Warm | TargetState::Draining
                    )
            })
            .cloned()
            .collect();
        let drain_timeout = self
            .store
            .release(&live.release_id)
            .await
            .ok()
            .and_then(|r| baton_manifest::Manifest::parse(&r.manifest, "baton.toml").ok())
            .map(|m| m.deploy.drain_timeout)
            .unwrap_or_default();
        futures_util::future::join_all(running.iter().map(|m| async move {
            if m.state() == TargetState::Live {
                let _ = self.drain_all(m, drain_timeout).await;
            }
            self.stop_target(
                m,
                &format!("{app} was stopped in {environment} by {}", actor.name),
            )
            .await;
        }))
        .await;
        self.reconcile_held(&key).await?;
        let message = format!(
            "stopped by {}: visitors get 503 until `baton start {app} -e {environment}`",
            actor.name
        );
        self.event(&key, EventKind::EnvironmentStopped, &message)
            .await;
        Ok(())
    }

    /// Starts `app` in `environment` again after `baton stop`: the release
    /// that was live, with the newest config, as a deployment.
    pub async fn start_environment(
        self: &Arc<Self>,
        app: &str,
        environment: &str,
        actor: &Actor,
    ) -> Result<Deployment> {
        crate::check_environment(environment)?;
        if self.live_target(app, environment).await?.is_some() {
            return Err(Error::Refused(format!(
                "{app} is running in {environment} already; `baton restart {app} -e {environment}` starts it afresh"
            )));
        }
        let last = self
            .last_succeeded(app, environment, None)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{app} was never deployed to {environment}: `baton deploy DIR -e {environment}`"
                ))
            })?;
        let release = self.store.release(&last.release_id).await?;
        if !self.release_files_present(&release.id) {
            return Err(Error::Refused(format!(
                "the files of release {} are gone; deploy its folder again",
                baton_package::short_id(&release.id)
            )));
        }
        // With the newest config, as any deploy: one set while it was
        // stopped applies now.
        let config_version = self
            .store
            .config_version(app, environment, None)
            .await?
            .map(|v| v.version);
        self.start_deployment(
            DeploymentKind::Restart,
            environment,
            Runs {
                release,
                config_version,
            },
            false,
            None,
            actor,
        )
        .await
    }
}
