//! Taking an app's environments down: their routes, their targets, their
//! output and the release folders nothing else runs. One walk serves a
//! review app whose pull request closed (`remove_environment`) and
//! `baton destroy` (the `lifecycle` module). The route goes first, in the
//! store then in the proxy, so a crash half-way leaves targets that
//! recovery no longer routes to, never a route to stopped targets; doing
//! it again finishes it.

use baton_proxy::RouteKey;
use baton_store::{AuditEntry, EventKind};
use serde::{Deserialize, Serialize};

use crate::{Error, Orchestrator, Result};

/// What removing an environment took away.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Removed {
    pub targets: Vec<i64>,
    pub hosts: Vec<String>,
    /// Release folders deleted because no other environment runs them.
    pub release_folders: Vec<String>,
}

impl Orchestrator {
    /// Removes `environment` of `app`: refuses while a deployment of it runs.
    pub async fn remove_environment(&self, app: &str, environment: &str) -> Result<Removed> {
        crate::check_environment(environment)?;
        self.refuse_while_deploying(app, Some(environment)).await?;
        let removed = self
            .take_down(app, &[environment.to_string()], None)
            .await?;
        self.event(
            &RouteKey::new(app, environment),
            EventKind::EnvironmentRemoved,
            &format!(
                "environment {environment} removed: {} targets stopped, hosts {} released",
                removed.targets.len(),
                removed.hosts.join(", ")
            ),
        )
        .await;
        Ok(removed)
    }

    /// Refuses while a deployment of `app` (in `environment`, when given)
    /// runs or waits in preview: it would start targets behind our back.
    pub(crate) async fn refuse_while_deploying(
        &self,
        app: &str,
        environment: Option<&str>,
    ) -> Result<()> {
        let (deployments, _) = self.store.unfinished_work(app).await?;
        if let Some((id, env)) = deployments
            .into_iter()
            .find(|(_, env)| environment.is_none_or(|e| e == env))
        {
            return Err(Error::Refused(format!(
                "deployment {id} of {app} in {env} is still running; wait for it to end (`baton deployments {app}`) or abort it, then try again"
            )));
        }
        Ok(())
    }

    /// Takes `environments` of `app` down: routes out of the store (with
    /// `entry`, in the same transaction, when given) then out of the proxy,
    /// targets stopped, the output of every target they ever had removed,
    /// and the folders of releases no remaining route runs.
    pub(crate) async fn take_down(
        &self,
        app: &str,
        environments: &[String],
        entry: Option<&AuditEntry>,
    ) -> Result<Removed> {
        let mut removed = Removed::default();
        let mut targets = Vec::new();
        for environment in environments {
            if let Some(route) = self.store.route(app, environment).await? {
                removed.hosts.extend(route.hosts);
            }
            targets.extend(self.store.targets_of(app, environment).await?);
        }
        self.store.remove_routes(app, environments, entry).await?;
        for environment in environments {
            let key = RouteKey::new(app, environment);
            self.maintenance
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            if let Err(e) = self.proxy.remove_route(&key).await {
                tracing::warn!(error = %e, "cannot remove the route from the proxy; the server's next start does");
            }
        }
        // All at once: each may take its stop_timeout.
        let stops = targets.iter().map(|target| async move {
            if let Some(managed) = self.managed(target.id) {
                let reason = format!("environment {} was removed", target.environment);
                self.stop_target(&managed, &reason).await;
            } else {
                crate::noted(
                    self.store
                        .set_target_state(target.id, baton_store::TargetState::Stopped, None)
                        .await,
                    "set_target_state",
                );
            }
        });
        futures_util::future::join_all(stops).await;
        let mut releases = Vec::new();
        for target in &targets {
            removed.targets.push(target.id);
            if !releases.contains(&target.release_id) {
                releases.push(target.release_id.clone());
            }
        }
        for environment in environments {
            for id in self.store.target_ids_of(app, Some(environment)).await? {
                let _ = std::fs::remove_file(self.logs.path(id));
            }
        }
        let mut in_use = Vec::new();
        for other in self.store.routes().await? {
            for target in self
                .store
                .targets_of(&other.app, &other.environment)
                .await?
            {
                in_use.push(target.release_id);
            }
        }
        for release in releases.into_iter().filter(|r| !in_use.contains(r)) {
            // A later deploy of the same release unpacks it again.
            match baton_package::remove(&self.releases_dir, &release) {
                Ok(()) => removed.release_folders.push(release),
                Err(e) => tracing::warn!(release, error = %e, "cannot remove a release folder"),
            }
        }
        Ok(removed)
    }
}
