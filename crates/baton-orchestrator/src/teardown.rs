//! Removing a whole environment of an app (a review app whose pull request
//! closed): its route, its targets, their output and the release folders
//! nothing else runs. The route goes first, in the store then in the proxy,
//! so a crash half-way leaves targets that recovery no longer routes to,
//! never a route to stopped targets.

use baton_proxy::RouteKey;
use baton_store::DeploymentState;
use baton_store::EventKind;
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
        let running = self
            .store
            .deployments(app, 200)
            .await?
            .into_iter()
            .find(|d| {
                d.environment == environment
                    && matches!(
                        d.state,
                        DeploymentState::Running | DeploymentState::Previewing
                    )
            });
        if let Some(d) = running {
            return Err(Error::Refused(format!(
                "deployment {} of {app} in {environment} is still running; remove the environment once it ends",
                d.id
            )));
        }
        let key = RouteKey::new(app, environment);
        let route = self.store.route(app, environment).await?;
        let targets = self.store.targets_of(app, environment).await?;
        self.store.delete_route(app, environment).await?;
        if let Err(e) = self.proxy.remove_route(&key).await {
            tracing::warn!(error = %e, "cannot remove the route from the proxy; the server's next start does");
        }
        let mut removed = Removed {
            hosts: route.map(|r| r.hosts).unwrap_or_default(),
            ..Removed::default()
        };
        let mut releases = Vec::new();
        for target in &targets {
            if let Some(managed) = self.managed(target.id) {
                self.stop_target(&managed, &format!("environment {environment} was removed"))
                    .await;
            } else {
                crate::noted(
                    self.store
                        .set_target_state(target.id, baton_store::TargetState::Stopped, None)
                        .await,
                    "set_target_state",
                );
            }
            let _ = std::fs::remove_file(self.logs.path(target.id));
            removed.targets.push(target.id);
            if !releases.contains(&target.release_id) {
                releases.push(target.release_id.clone());
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
        self.event(
            &key,
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
}
