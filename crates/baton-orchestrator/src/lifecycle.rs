//! An app's life as a whole: the list of apps with where they run
//! (`baton apps`), the disk they take (`baton status`), and removing one,
//! or one of its environments, with everything it owns (`baton destroy`).
//! Removal goes in the order that lets a second run finish a first one cut
//! short: routes (store, then proxy), targets, files, then the store's
//! rows. Only the audit log keeps the app's name: it is append-only.

use std::path::{Path, PathBuf};

use baton_proxy::RouteKey;
use baton_store::{DeploymentState, TargetState};
use serde::{Deserialize, Serialize};

use crate::{Actor, Error, Orchestrator, Removed, Result};

/// One app, as `baton apps` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppSummary {
    pub app: String,
    /// How many releases the server keeps for it.
    pub releases: usize,
    pub environments: Vec<AppEnvironment>,
}

/// One environment of an app: what serves there and how it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppEnvironment {
    pub environment: String,
    /// The live release's id.
    pub live_release: Option<String>,
    pub state: EnvironmentState,
    pub hosts: Vec<String>,
}

/// How an app's environment stands, most pressing first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentState {
    /// A deployment runs or waits in preview.
    Deploying,
    /// Visitors get 503 and a message (`baton maintenance`).
    Maintenance,
    /// Its live target runs.
    Live,
    /// It has a route, but no live target runs.
    Down,
    /// No route: never deployed there, or taken down (only flags or
    /// history remain).
    NotServed,
}

impl EnvironmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentState::Deploying => "deploying",
            EnvironmentState::Maintenance => "maintenance",
            EnvironmentState::Live => "live",
            EnvironmentState::Down => "down",
            EnvironmentState::NotServed => "not served",
        }
    }
}

/// The disk an app takes in the data folder, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUse {
    /// Its unpacked release folders.
    pub releases: u64,
    /// Its targets' output, its images' build output and its release
    /// commands' output.
    pub logs: u64,
}

impl DiskUse {
    pub fn total(&self) -> u64 {
        self.releases + self.logs
    }
}

/// What `baton destroy` took away.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Destroyed {
    pub app: String,
    /// The environment named, or none for the whole app.
    pub environment: Option<String>,
    /// The environments taken down.
    pub environments: Vec<String>,
    #[serde(flatten)]
    pub removed: Removed,
    /// Files removed besides release folders: output, release command and
    /// build logs.
    pub files: usize,
    /// Docker images removed.
    pub images: Vec<String>,
    /// Store rows deleted (the audit log keeps its entries).
    pub rows: u64,
}

impl Orchestrator {
    /// Every app the server knows (a release or a route), with each
    /// environment's live release, state and hosts.
    pub async fn apps(&self) -> Result<Vec<AppSummary>> {
        let mut apps = Vec::new();
        for app in self.store.known_apps().await? {
            let releases = self.store.releases(&app).await?.len();
            let deployments = self.store.deployments(&app, 200).await?;
            let mut environments = Vec::new();
            for environment in self.store.environments_of(&app).await? {
                let deploying = deployments.iter().any(|d| {
                    d.environment == environment
                        && matches!(
                            d.state,
                            DeploymentState::Running | DeploymentState::Previewing
                        )
                });
                let route = self.store.route(&app, &environment).await?;
                let key = RouteKey::new(&app, &environment);
                let live = match route.as_ref().and_then(|r| r.live_target) {
                    Some(id) => self.store.target(id).await.ok(),
                    None => None,
                };
                let running = match live.as_ref().and_then(|t| self.managed(t.id)) {
                    Some(m) => m.runtime.alive(&m.handle()).await,
                    None => false,
                };
                let state = if deploying {
                    EnvironmentState::Deploying
                } else if route.is_none() {
                    EnvironmentState::NotServed
                } else if self.maintenance_of(&key).is_some() {
                    EnvironmentState::Maintenance
                } else if running && live.as_ref().is_some_and(|t| t.state == TargetState::Live) {
                    EnvironmentState::Live
                } else {
                    EnvironmentState::Down
                };
                environments.push(AppEnvironment {
                    environment,
                    live_release: live.map(|t| t.release_id),
                    state,
                    hosts: route.map(|r| r.hosts).unwrap_or_default(),
                });
            }
            apps.push(AppSummary {
                app,
                releases,
                environments,
            });
        }
        Ok(apps)
    }

    /// The disk `app` takes: its release folders and its output files.
    pub async fn disk_use(&self, app: &str) -> Result<DiskUse> {
        let folders: Vec<PathBuf> = self
            .store
            .releases(app)
            .await?
            .iter()
            .map(|r| self.release_dir(&r.id))
            .collect();
        let mut logs: Vec<PathBuf> = self
            .store
            .target_ids_of(app, None)
            .await?
            .into_iter()
            .map(|id| self.logs.path(id))
            .collect();
        logs.extend(
            self.store
                .releases(app)
                .await?
                .iter()
                .flat_map(|r| self.release_logs(&r.id)),
        );
        logs.extend(
            self.store
                .deployment_ids_of(app, None)
                .await?
                .into_iter()
                .map(|id| self.release_command_log(id)),
        );
        logs.extend(
            self.store
                .cron_run_ids_of(app, None)
                .await?
                .into_iter()
                .map(|id| self.cron_log(id)),
        );
        tokio::task::spawn_blocking(move || DiskUse {
            releases: folders.iter().map(|f| bytes_under(f)).sum(),
            logs: logs.iter().map(|f| bytes_under(f)).sum(),
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Removes `app` in `environment`, or the whole app when `None`, with
    /// everything it owns but its audit entries; audited as `app.destroy`
    /// in the transaction that takes its routes away. `files` are more of
    /// the app's files that others keep (the pipeline's build logs),
    /// removed before the rows that name them. Refused while a deployment
    /// or a build of the app runs. Running it again after a crash finishes
    /// the job.
    pub async fn destroy(
        &self,
        app: &str,
        environment: Option<&str>,
        actor: &Actor,
        files: &[PathBuf],
    ) -> Result<Destroyed> {
        baton_manifest::check_name("app", app).map_err(Error::Invalid)?;
        if let Some(environment) = environment {
            crate::check_environment(environment)?;
        }
        if !self.store.owns_anything(app, environment).await? {
            let scope = environment.map(|e| format!(" in {e}")).unwrap_or_default();
            return Err(Error::NotFound(format!(
                "the server has nothing of app {app}{scope}; `baton apps` lists the apps it knows"
            )));
        }
        self.refuse_while_deploying(app, environment).await?;
        let (_, builds) = self.store.unfinished_work(app).await?;
        if let Some(build) = builds.first() {
            return Err(Error::Refused(format!(
                "build {build} of {app} has not finished; wait for it (`baton builds list`), then try again"
            )));
        }
        let environments = match environment {
            Some(e) => vec![e.to_string()],
            None => self.store.environments_of(app).await?,
        };
        let mut entry = actor.entry(
            "app.destroy",
            match environment {
                Some(e) => format!("environment {app}/{e}"),
                None => format!("app {app}"),
            },
            app,
            environment.unwrap_or_default(),
            serde_json::json!({ "environments": environments }),
        );
        entry.environment = environment.map(str::to_string);
        let removed = self.take_down(app, &environments, Some(&entry)).await?;

        // Files, before the rows that name them.
        let mut removed_files = 0;
        let mut paths: Vec<PathBuf> = files.to_vec();
        paths.extend(
            self.store
                .target_ids_of(app, environment)
                .await?
                .into_iter()
                .map(|id| self.logs.path(id)),
        );
        paths.extend(
            self.store
                .deployment_ids_of(app, environment)
                .await?
                .into_iter()
                .map(|id| self.release_command_log(id)),
        );
        paths.extend(
            self.store
                .cron_run_ids_of(app, environment)
                .await?
                .into_iter()
                .map(|id| self.cron_log(id)),
        );
        let releases = match environment {
            Some(_) => Vec::new(),
            None => self.store.releases(app).await?,
        };
        paths.extend(releases.iter().flat_map(|r| self.release_logs(&r.id)));
        for path in &paths {
            if std::fs::remove_file(path).is_ok() {
                removed_files += 1;
            }
        }
        let mut removed = removed;
        for release in &releases {
            if !self.release_dir(&release.id).exists() {
                continue;
            }
            match baton_package::remove(&self.releases_dir, &release.id) {
                Ok(()) => removed.release_folders.push(release.id.clone()),
                Err(e) => {
                    return Err(Error::Internal(format!(
                        "cannot remove the folder of release {}: {e}; fix it and run `baton destroy {app}` again",
                        baton_package::short_id(&release.id)
                    )))
                }
            }
        }
        let mut images = Vec::new();
        if releases.iter().any(|r| r.image.is_some()) {
            images = self
                .runtimes
                .docker
                .prune_images(app, &[])
                .await
                .map_err(|e| {
                    Error::Internal(format!(
                        "cannot remove {app}'s images: {e}; run `baton destroy {app}` again once the Docker Engine answers"
                    ))
                })?;
        }
        let rows = self.store.delete_app(app, environment).await?;
        tracing::info!(
            app,
            environment,
            rows,
            files = removed_files,
            "app destroyed"
        );
        Ok(Destroyed {
            app: app.to_string(),
            environment: environment.map(str::to_string),
            environments,
            removed,
            files: removed_files,
            images,
            rows,
        })
    }
}

/// Bytes in the files under `path` (or of `path`, a file); what cannot be
/// read counts as nothing. Symbolic links are not followed.
fn bytes_under(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| bytes_under(&entry.path()))
        .sum()
}
