//! The orchestrator: deployments as recorded state machines. It owns the
//! decisions (what to start, when to switch, what to drain, keep warm or
//! stop) and sequences the store, the runtime and the proxy to carry them
//! out. Every step is written to the store before it is taken, so a server
//! that dies mid-deployment finds, on restart, a record it can finish or
//! undo ([`plan::recovery`]). It never serves HTTP itself and never reads
//! request traffic; the API calls it, the proxy obeys it.

mod build;
mod canary;
mod commands;
mod config;
pub mod cron;
pub use config::{ConfigChange, ConfigChanged, ConfigListing, ConfigVar};
pub use cron::{CronJobView, CronRunOutput};
mod deploy;
mod health;
mod maintenance;
mod migrate;
pub use migrate::{database_options, ContractByHand};
pub mod plan;
mod processes;
pub use processes::Reconciled;
mod recover;
mod running;
pub use canary::{CanaryView, ReleaseFigures};
pub use recover::RecoveryReport;
mod supervise;
mod teardown;
pub use teardown::Removed;
mod lifecycle;
pub use lifecycle::{AppEnvironment, AppSummary, Destroyed, DiskUse, EnvironmentState};
mod retention;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_manifest::Manifest;
use baton_manifest::RuntimeKind;
use baton_proxy::{ProxyClient, RouteKey, TargetStats};
use baton_runtime::{ContainerSpec, DockerRuntime, LogFiles, Runtime, TargetHandle, TargetSpec};
use baton_store::EventKind;
use baton_store::{
    Deployment, DeploymentKind, DeploymentState, Release, RouteRecord, Store, StoreError,
    TargetRecord, TargetState,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A release, manifest or request that cannot be acted on as it is
    /// (the message names the file, field or value, and the way out).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Not now, as things stand: another deployment runs, a host is taken,
    /// a contract or a gate holds it.
    #[error("{0}")]
    Refused(String),
    /// The release asked for is the one live already: no deployment starts.
    #[error("release {release} is already live for {app} in {environment}; nothing to do")]
    AlreadyLive {
        app: String,
        environment: String,
        release: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn fault(&self) -> Fault {
        match self {
            Error::Invalid(_) => Fault::Invalid,
            Error::NotFound(_) => Fault::NotFound,
            Error::Refused(_) | Error::AlreadyLive { .. } => Fault::Refused,
            Error::Store(e) => e.fault(),
            Error::Internal(_) => Fault::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A target the orchestrator is responsible for, as it lives in memory.
/// One target's figures, as the proxy counts them.
#[derive(Debug, Clone)]
pub struct TargetFigures {
    pub key: RouteKey,
    pub target: i64,
    pub release: String,
    pub state: TargetState,
    pub stats: baton_proxy::TargetStats,
}

pub(crate) struct Managed {
    pub record_id: i64,
    pub key: RouteKey,
    pub release: String,
    pub spec: TargetSpec,
    pub handle: Mutex<TargetHandle>,
    pub state: Mutex<TargetState>,
    pub proxy_target: baton_proxy::TargetRef,
    pub stop_timeout: Duration,
    /// The runtime the target runs on.
    pub runtime: Arc<dyn Runtime>,
    /// The release's other web instances (`[web] instances`), when this
    /// is the first: the route names it, and its state is theirs.
    pub instances: Mutex<Vec<Arc<Managed>>>,
    /// The first instance, when this is one of the others.
    pub first: Mutex<Option<i64>>,
}

impl Managed {
    /// Everything else about a target follows from its spec.
    pub fn new(
        spec: TargetSpec,
        handle: TargetHandle,
        state: TargetState,
        stop_timeout: Duration,
        runtime: Arc<dyn Runtime>,
    ) -> Arc<Managed> {
        Arc::new(Managed {
            record_id: spec.target_id,
            key: RouteKey::new(&spec.app, &spec.environment),
            release: spec.release.clone(),
            proxy_target: baton_proxy::TargetRef::new(
                spec.target_id,
                addr(spec.port),
                spec.release.clone(),
            ),
            spec,
            handle: Mutex::new(handle),
            state: Mutex::new(state),
            stop_timeout,
            runtime,
            instances: Mutex::new(Vec::new()),
            first: Mutex::new(None),
        })
    }

    /// The other instances of its release started with it.
    pub fn instances(&self) -> Vec<Arc<Managed>> {
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// It and its other instances.
    pub fn all(self: &Arc<Self>) -> Vec<Arc<Managed>> {
        let mut all = vec![Arc::clone(self)];
        all.extend(self.instances());
        all
    }

    /// Whether it stands for its release's instances (the route names
    /// it), rather than being one of the others.
    pub fn is_first(&self) -> bool {
        self.first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    pub fn state(&self) -> TargetState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn set_state(&self, state: TargetState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }
    pub fn handle(&self) -> TargetHandle {
        self.handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

pub struct Orchestrator {
    pub(crate) store: Store,
    pub(crate) proxy: Arc<ProxyClient>,
    pub(crate) runtimes: Runtimes,
    pub(crate) logs: LogFiles,
    releases_dir: PathBuf,
    pub(crate) health: reqwest::Client,
    pub(crate) managed: Mutex<HashMap<i64, Arc<Managed>>>,
    previews: Mutex<HashMap<i64, oneshot::Sender<bool>>>,
    flags: std::sync::OnceLock<Arc<dyn ApplyFlags>>,
    gate: std::sync::OnceLock<Arc<dyn ProductionGate>>,
    /// The Prometheus a canary's `query` is asked of (`--prometheus`).
    pub(crate) prometheus: std::sync::OnceLock<String>,
    /// Environments in maintenance, with their message (the store's
    /// `maintenance`, read at start): every route given to the proxy says so.
    pub(crate) maintenance: Mutex<HashMap<RouteKey, String>>,
    /// Seals and opens the apps' config values (`DATA/config.key`).
    pub(crate) config_key: baton_store::ConfigKey,
    /// Process releases' `[build]`: who runs them, which run now.
    builds: build::Builds,
    /// The cron scheduler's memory (`cron`): runs under way and queued.
    pub(crate) cron: cron::Jobs,
    /// Per environment, one change at a time to what runs (a deployment's
    /// switch and `processes` step, `baton scale`, `baton stop`, start-up):
    /// two never start the same missing worker or route different groups.
    environments: Mutex<HashMap<RouteKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// Applies a release's `flags.toml` when a deploy has put it live, before
/// the deployment is recorded as ended (the flag service implements it).
/// The outcome is recorded as a `flags_applied` or `flags_failed` event; it
/// cannot fail the deployment, whose release already serves traffic.
pub trait ApplyFlags: Send + Sync {
    /// Returns what changed (`None`: the release has no `flags.toml`), or
    /// why it failed.
    fn apply_release_flags<'a>(
        &'a self,
        app: &'a str,
        environment: &'a str,
        release_dir: &'a std::path::Path,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = std::result::Result<Option<String>, String>>
                + Send
                + 'a,
        >,
    >;
}

/// What may hold a release back from production (the pipeline's
/// announcement gate): `Some(reason)` while it must wait.
pub trait ProductionGate: Send + Sync {
    fn waits_for<'a>(
        &'a self,
        release: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + 'a>>;
}

/// The runtimes targets can run on.
#[derive(Clone)]
pub struct Runtimes {
    pub process: Arc<dyn Runtime>,
    /// Connects to the engine on first use; an unreachable engine fails only
    /// the Docker apps' deploys, with the engine named.
    pub docker: Arc<DockerRuntime>,
    /// Who one-off commands (release commands, `baton run`) run as; `None`
    /// only when the server is not root.
    pub app_user: Option<baton_runtime::AppUser>,
}

pub use baton_store::{Actor, Fault};

/// A deploy request.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub app: String,
    pub environment: String,
    pub release: String,
    /// Pause after the health check with the new release reachable through
    /// the preview header and hosts, until continued or aborted.
    pub preview: bool,
    /// Who asks: the audit log names them, in the deployment's transaction.
    pub actor: Actor,
}

/// One environment of one app, as `baton status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvironmentStatus {
    pub app: String,
    pub environment: String,
    pub hosts: Vec<String>,
    pub live: Option<TargetStatus>,
    pub targets: Vec<TargetStatus>,
    pub last_deployment: Option<Deployment>,
    /// The message visitors get while in maintenance (`baton maintenance`).
    #[serde(default)]
    pub maintenance: Option<String>,
    /// The disk the whole app takes (every environment's): filled in by
    /// `status`, not by `environment_status`.
    #[serde(default)]
    pub disk: Option<DiskUse>,
    /// The variables its targets get, by name, and where each comes from
    /// (`config` or `baton.toml`); never their values.
    #[serde(default)]
    pub variables: Vec<ConfigVar>,
    /// The config version the live target runs with.
    #[serde(default)]
    pub config_version: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetStatus {
    #[serde(flatten)]
    pub record: TargetRecord,
    pub address: String,
    pub running: bool,
    /// False once a request to it timed out (a hung app) and none has been
    /// answered since: running, yet unhealthy.
    pub responding: bool,
    pub in_flight: usize,
    pub requests: u64,
    pub failures: u64,
    /// Requests it did not answer within the app's response timeout.
    pub timeouts: u64,
    /// Open WebSockets and event streams (counted in `in_flight` too).
    pub long_lived: usize,
}

impl Orchestrator {
    pub fn new(
        store: Store,
        proxy: Arc<ProxyClient>,
        runtimes: Runtimes,
        logs: LogFiles,
        releases_dir: PathBuf,
        config_key: baton_store::ConfigKey,
    ) -> Arc<Orchestrator> {
        let health = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default();
        Arc::new(Orchestrator {
            store,
            proxy,
            runtimes,
            logs,
            releases_dir,
            health,
            managed: Mutex::new(HashMap::new()),
            previews: Mutex::new(HashMap::new()),
            flags: std::sync::OnceLock::new(),
            gate: std::sync::OnceLock::new(),
            prometheus: std::sync::OnceLock::new(),
            maintenance: Mutex::new(HashMap::new()),
            config_key,
            builds: build::Builds::default(),
            cron: cron::Jobs::default(),
            environments: Mutex::new(HashMap::new()),
        })
    }

    /// The lock of one environment's running set (see `environments`).
    pub(crate) fn environment_lock(&self, key: &RouteKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.environments.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(key.clone()).or_default())
    }

    /// Sets what applies a release's flags when a deploy puts it live (once).
    pub fn apply_flags_with(&self, flags: Arc<dyn ApplyFlags>) {
        let _ = self.flags.set(flags);
    }

    /// Sets what may hold releases back from production (once).
    pub fn gate_production_with(&self, gate: Arc<dyn ProductionGate>) {
        let _ = self.gate.set(gate);
    }

    /// Sets the Prometheus (its base URL) that canaries with a `query`
    /// ask (once).
    pub fn query_prometheus_at(&self, url: String) {
        let _ = self.prometheus.set(url.trim_end_matches('/').to_string());
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Target output, whatever the runtime.
    pub fn logs(&self) -> &LogFiles {
        &self.logs
    }

    /// The runtime of that kind.
    pub(crate) fn runtime(&self, kind: RuntimeKind) -> Arc<dyn Runtime> {
        match kind {
            RuntimeKind::Process => Arc::clone(&self.runtimes.process),
            RuntimeKind::Docker => Arc::clone(&self.runtimes.docker) as Arc<dyn Runtime>,
        }
    }

    /// Everything a runtime needs to start target `target_id` of a release.
    pub(crate) fn target_spec(
        &self,
        record: &TargetRecord,
        release: &Release,
        manifest: &Manifest,
        config: BTreeMap<String, String>,
    ) -> Result<TargetSpec> {
        let (environment, process) = (record.environment.as_str(), record.process.as_str());
        let command = if process == baton_runtime::WEB {
            manifest.web.command.clone()
        } else {
            manifest
                .processes
                .get(process)
                .map(|p| p.command.clone())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "release {} has no [processes.{process}]",
                        baton_package::short_id(&release.id)
                    ))
                })?
        };
        let container = match manifest.runtime {
            RuntimeKind::Process => None,
            RuntimeKind::Docker => {
                let docker = manifest.docker();
                let image = release.image.clone().ok_or_else(|| {
                    Error::Invalid(format!(
                        "release {} has no image; deploy its folder again",
                        baton_package::short_id(&release.id)
                    ))
                })?;
                Some(ContainerSpec {
                    image,
                    port: docker.port,
                    memory_bytes: docker.memory_bytes(),
                    nano_cpus: docker.nano_cpus(),
                    restart: docker.restart.clone(),
                })
            }
        };
        Ok(TargetSpec {
            target_id: record.id,
            app: release.app.clone(),
            environment: environment.to_string(),
            release: release.id.clone(),
            process: process.to_string(),
            dir: self.release_dir(&release.id),
            command,
            env: variables(manifest, environment, config),
            port: record.port,
            container,
        })
    }

    /// Every running target's figures from the proxy, with what it is
    /// (app and environment, release, state): what `/metrics` shows.
    pub async fn target_metrics(&self) -> Vec<TargetFigures> {
        let targets: Vec<Arc<Managed>> = self
            .managed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let ids: Vec<i64> = targets.iter().map(|m| m.record_id).collect();
        let stats = self.proxy.stats(&ids).await;
        let mut all: Vec<TargetFigures> = targets
            .iter()
            .filter_map(|m| {
                Some(TargetFigures {
                    key: m.key.clone(),
                    target: m.record_id,
                    release: m.release.clone(),
                    state: m.state(),
                    stats: *stats.get(&m.record_id)?,
                })
            })
            .collect();
        all.sort_by_key(|f| f.target);
        all
    }

    /// The canary an app's environment is running, if any: its target and
    /// its share of the clients (percent).
    pub fn canary_of(&self, key: &RouteKey) -> Option<(i64, u8)> {
        self.proxy
            .route(key)
            .and_then(|spec| spec.canary)
            .map(|c| (c.target.id, c.percent))
    }

    pub(crate) fn managed(&self, id: i64) -> Option<Arc<Managed>> {
        self.managed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    pub(crate) fn manage(&self, managed: Arc<Managed>) {
        self.managed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(managed.record_id, managed);
    }

    /// Records an event; a store failure is logged, never fatal to the caller.
    pub(crate) async fn event(&self, key: &RouteKey, kind: EventKind, message: &str) {
        if let Err(e) = self
            .store
            .record_event(&key.app, &key.environment, kind, message)
            .await
        {
            tracing::error!(app = key.app, environment = key.environment, kind = kind.as_str(), message, error = %e, "cannot record event");
        }
    }

    pub(crate) fn forget(&self, id: i64) -> Option<Arc<Managed>> {
        self.managed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// Records a release from a packed archive. The archive must hold a valid
    /// `baton.toml` naming `app`. Same bytes, same release: a second upload is
    /// accepted and changes nothing.
    pub async fn create_release(&self, app: &str, archive: Vec<u8>) -> Result<(Release, bool)> {
        let id = baton_package::release_id(&archive);
        let text = manifest_in(&archive)?;
        let label = format!("baton.toml (release {})", baton_package::short_id(&id));
        let manifest = Manifest::parse(&text, &label).map_err(|e| Error::Invalid(e.to_string()))?;
        if manifest.name != app {
            return Err(Error::Invalid(format!(
                "{label}: field `name`: the manifest names app {:?} but the release was sent for app {app:?}",
                manifest.name
            )));
        }
        check_release_files(&archive, &id)?;
        // Same bytes, same release: never unpacked or built twice, unless its
        // image has since been pruned from the engine.
        // A folder removed with its review app is unpacked again.
        let existing = self
            .store
            .release(&id)
            .await
            .ok()
            .filter(|r| r.app == app && self.release_dir(&r.id).exists());
        if let Some(existing) = &existing {
            let image_present = match (&existing.image, manifest.runtime) {
                (_, RuntimeKind::Process) => true,
                (Some(image), RuntimeKind::Docker) => {
                    self.runtimes.docker.image_id(image).await.is_ok()
                }
                (None, RuntimeKind::Docker) => false,
            };
            if image_present {
                return Ok((existing.clone(), false));
            }
        }
        let image = match manifest.runtime {
            RuntimeKind::Process => None,
            RuntimeKind::Docker => {
                let docker = &self.runtimes.docker;
                let settings = manifest.docker();
                let built = match &settings.image {
                    Some(reference) => docker.image_id(reference).await,
                    None => {
                        let log = self.image_log(&id);
                        let _ = std::fs::create_dir_all(self.logs.dir());
                        let _ = std::fs::remove_file(&log);
                        docker
                            .build_image(app, &id, archive.clone(), &settings.dockerfile, &log)
                            .await
                    }
                };
                match built {
                    Ok(image) => Some(image),
                    Err(e) => {
                        // The failure stays in the app's history.
                        let message = format!(
                            "the image of release {} failed to build: {e}",
                            baton_package::short_id(&id)
                        );
                        crate::noted(
                            self.store
                                .record_event(app, "-", EventKind::ImageBuildFailed, &message)
                                .await,
                            "record_event",
                        );
                        return Err(Error::Invalid(format!(
                            "release {}: {e}",
                            baton_package::short_id(&id)
                        )));
                    }
                }
            }
        };
        if let (Some(existing), Some(image)) = (&existing, &image) {
            self.store.set_release_image(&existing.id, image).await?;
            return Ok((self.store.release(&existing.id).await?, false));
        }
        let releases_dir = self.releases_dir.clone();
        let (id_for_unpack, size) = (id.clone(), archive.len());
        let files = match (&manifest.build, manifest.runtime) {
            // The release is what its build makes of the archive, once.
            (Some(build), RuntimeKind::Process) => {
                self.build_release(app, &id, archive, &manifest, build)
                    .await?
            }
            _ => tokio::task::spawn_blocking(move || {
                let limits = baton_package::Limits::default();
                baton_package::unpack(archive.as_slice(), &releases_dir, &id_for_unpack, &limits)
                    .map(|unpacked| unpacked.files)
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Invalid(e.to_string()))?,
        };
        let release = Release {
            id,
            app: app.to_string(),
            created_at: baton_store::now_ms(),
            size: size as i64,
            files: files as i64,
            manifest: text,
            image,
        };
        Ok(self.store.put_release(&release).await?)
    }

    /// Removes the images of an app's old releases, keeping those of running
    /// targets, of `current` (being deployed) and of the `keep` releases
    /// deployed most recently before it (the ones a rollback goes back to).
    pub(crate) async fn prune_images(
        &self,
        app: &str,
        current: &str,
        keep: usize,
    ) -> Result<Vec<String>> {
        let docker = &self.runtimes.docker;
        let releases = self.store.releases(app).await?;
        let image_of = |release: &str| {
            releases
                .iter()
                .find(|r| r.id == release)
                .and_then(|r| r.image.clone())
        };
        let mut recent: Vec<String> = vec![current.to_string()];
        for deployment in self.store.deployments(app, 1000).await? {
            if deployment.state == DeploymentState::Succeeded
                && !recent.contains(&deployment.release_id)
            {
                recent.push(deployment.release_id);
            }
        }
        let mut kept: Vec<String> = recent
            .iter()
            .take(keep + 1)
            .filter_map(|r| image_of(r))
            .collect();
        for route in self
            .store
            .routes()
            .await?
            .into_iter()
            .filter(|r| r.app == app)
        {
            for target in self.store.targets_of(app, &route.environment).await? {
                kept.extend(image_of(&target.release_id));
            }
        }
        docker
            .prune_images(app, &kept)
            .await
            .map_err(|e| Error::Internal(e.to_string()))
    }

    pub(crate) fn release_dir(&self, id: &str) -> PathBuf {
        self.releases_dir.join(id)
    }

    /// Where the output of a release's image build is kept.
    pub fn image_log(&self, release: &str) -> PathBuf {
        self.logs.dir().join(format!("image-{release}.log"))
    }

    /// Every log file a release has of its own (its image's or its
    /// `[build]`'s output): what disk use counts and retention and
    /// `destroy` remove with it.
    pub(crate) fn release_logs(&self, release: &str) -> [PathBuf; 2] {
        [self.image_log(release), self.build_log(release)]
    }

    /// Whether a release's files are on disk. Closing a review app removes
    /// the folders nothing else runs; such a release cannot start until its
    /// folder is sent again (`baton deploy DIR` unpacks it anew).
    pub fn release_files_present(&self, id: &str) -> bool {
        // A folder whose `[build]` runs is not a release yet.
        self.release_dir(id).is_dir() && !self.builds.running(id)
    }

    /// Starts a deployment and returns its record at once; the deployment
    /// goes on in the background. Follow it with [`Store::deployment`].
    pub async fn deploy(self: &Arc<Self>, request: DeployRequest) -> Result<Deployment> {
        check_environment(&request.environment)?;
        let release = self
            .store
            .find_release(&request.app, &request.release)
            .await?;
        // Whichever way a deploy comes (CLI, API, dashboard, pipeline), a
        // release held by its announcement does not reach production.
        if request.environment == baton_manifest::DEFAULT_ENVIRONMENT {
            if let Some(gate) = self.gate.get() {
                if let Some(reason) = gate.waits_for(&release.id).await {
                    return Err(Error::Refused(format!(
                        "release {} waits before production: {reason}; an authorised person can override it with `baton promote {} {} --to production --override-announcement REASON`",
                        baton_package::short_id(&release.id),
                        request.app,
                        baton_package::short_id(&release.id),
                    )));
                }
            }
        }
        // A deploy runs with the environment's newest config.
        let config = self
            .store
            .config_version(&request.app, &request.environment, None)
            .await?
            .map(|v| v.version);
        self.refuse_if_live(&request.app, &request.environment, &release.id, config)
            .await?;
        self.start_deployment(
            DeploymentKind::Deploy,
            &request.environment,
            deploy::Runs {
                release,
                config_version: config,
            },
            request.preview,
            None,
            &request.actor,
        )
        .await
    }

    /// The one rule for deploys, promotions and rollbacks alike: asking for
    /// the release that is live already, with the config it runs with,
    /// starts nothing.
    async fn refuse_if_live(
        &self,
        app: &str,
        environment: &str,
        release: &str,
        config: Option<i64>,
    ) -> Result<()> {
        let Some(live) = self.live_target(app, environment).await? else {
            return Ok(());
        };
        if live.release_id == release && self.config_of_target(live.deployment_id).await? == config
        {
            return Err(Error::AlreadyLive {
                app: app.to_string(),
                environment: environment.to_string(),
                release: baton_package::short_id(release).to_string(),
            });
        }
        Ok(())
    }

    /// Goes back to `to` (a release id or prefix), or to the release that was
    /// live before the current one. A route switch when that release is still
    /// warm; an ordinary deploy of it otherwise.
    pub async fn rollback(
        self: &Arc<Self>,
        app: &str,
        environment: &str,
        to: Option<&str>,
        actor: &Actor,
    ) -> Result<Deployment> {
        check_environment(environment)?;
        let route = self.store.route(app, environment).await?;
        let live = match route.as_ref().and_then(|r| r.live_target) {
            Some(id) => Some(self.store.target(id).await?),
            None => None,
        };
        let targets = self.store.targets_of(app, environment).await?;
        let release = match to {
            Some(prefix) => {
                let release = self.store.find_release(app, prefix).await?;
                // A rollback goes back to a release that was live here
                // before; anything else is a deploy, and is recorded as one.
                let was_live = self
                    .last_succeeded(app, environment, Some(&release.id))
                    .await?
                    .is_some();
                if !was_live {
                    return Err(Error::Invalid(format!(
                        "release {short} was never live for {app} in {environment}, so going to it is a deploy, not a rollback: `baton promote {app} {short} --to {environment}` (or deploy its folder)",
                        short = baton_package::short_id(&release.id)
                    )));
                }
                release
            }
            None => {
                let warm = targets.iter().rev().find(|t| t.state == TargetState::Warm);
                let previous = match warm {
                    Some(t) => Some(t.release_id.clone()),
                    None => {
                        self.previous_release(app, environment, live.as_ref())
                            .await?
                    }
                };
                let Some(previous) = previous else {
                    return Err(Error::Invalid(format!(
                        "{app} in {environment} has no earlier release to roll back to; name one with --to (see `baton releases {app}`)"
                    )));
                };
                self.store.release(&previous).await?
            }
        };
        // The first of the warm release's instances stands for them.
        let warm_record = targets.iter().rev().find(|t| {
            t.state == TargetState::Warm
                && t.release_id == release.id
                && self.managed(t.id).is_some_and(|m| m.is_first())
        });
        // Release and config go back together: the warm target's, or the
        // one the release last ran with here.
        let config = match warm_record {
            Some(t) => self.config_of_target(t.deployment_id).await?,
            None => self
                .last_succeeded(app, environment, Some(&release.id))
                .await?
                .and_then(|d| d.config_version),
        };
        self.refuse_if_live(app, environment, &release.id, config)
            .await?;
        let warm = warm_record.and_then(|t| self.managed(t.id));
        // Warm or not: a contract applied by hand (`--force`) may have run
        // while the release was warm.
        self.check_rollback_schema(&RouteKey::new(app, environment), &release)
            .await?;
        self.start_deployment(
            DeploymentKind::Rollback,
            environment,
            deploy::Runs {
                release,
                config_version: config,
            },
            false,
            warm,
            actor,
        )
        .await
    }

    /// The newest deployment of `app` that succeeded in `environment` (of
    /// `release`, when given): what was live there last.
    pub(crate) async fn last_succeeded(
        &self,
        app: &str,
        environment: &str,
        release: Option<&str>,
    ) -> Result<Option<Deployment>> {
        Ok(self
            .store
            .deployments(app, 1000)
            .await?
            .into_iter()
            .find(|d| {
                d.environment == environment
                    && d.state == DeploymentState::Succeeded
                    && release.is_none_or(|r| d.release_id == r)
            }))
    }

    async fn previous_release(
        &self,
        app: &str,
        environment: &str,
        live: Option<&TargetRecord>,
    ) -> Result<Option<String>> {
        let live_release = live.map(|t| t.release_id.clone());
        let deployments = self.store.deployments(app, 200).await?;
        Ok(deployments
            .into_iter()
            .filter(|d| {
                d.environment == environment && d.state == baton_store::DeploymentState::Succeeded
            })
            .map(|d| d.release_id)
            .find(|r| Some(r) != live_release.as_ref()))
    }

    /// Lets a deployment paused in preview go on to the switch (`go_on`), or
    /// abandons it, leaving the live release as it is. The answer is in the
    /// audit log (`deployment.continue` / `deployment.abort`) before it is
    /// acted on.
    pub async fn answer_preview(&self, deployment: i64, go_on: bool, actor: &Actor) -> Result<()> {
        let record = self.store.deployment(deployment).await?;
        let sender = self
            .previews
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&deployment)
            .ok_or_else(|| {
                Error::Refused(format!(
                    "deployment {deployment} is not waiting in preview or in a canary"
                ))
            })?;
        let action = if go_on {
            "deployment.continue"
        } else {
            "deployment.abort"
        };
        let entry = actor.entry(
            action,
            format!("deployment {deployment}"),
            &record.app,
            &record.environment,
            serde_json::json!({"release": record.release_id}),
        );
        if let Err(e) = self.store.record_audit(&entry).await {
            // Not recorded, not done: the preview waits for another answer.
            self.previews
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(deployment, sender);
            return Err(e.into());
        }
        sender.send(go_on).map_err(|_| {
            Error::Refused(format!(
                "deployment {deployment} is no longer waiting in preview"
            ))
        })
    }

    pub(crate) fn await_preview(&self, deployment: i64) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        self.previews
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(deployment, tx);
        rx
    }

    /// Every app and environment with a route, and their targets.
    pub async fn status(&self) -> Result<Vec<EnvironmentStatus>> {
        let mut out = Vec::new();
        let mut disks: HashMap<String, DiskUse> = HashMap::new();
        for route in self.store.routes().await? {
            let mut status = self.environment_status(&route).await?;
            let disk = match disks.get(&route.app) {
                Some(disk) => *disk,
                None => {
                    let disk = self.disk_use(&route.app).await?;
                    disks.insert(route.app.clone(), disk);
                    disk
                }
            };
            status.disk = Some(disk);
            out.push(status);
        }
        Ok(out)
    }

    pub async fn environment_status(&self, route: &RouteRecord) -> Result<EnvironmentStatus> {
        let records = self
            .store
            .targets_of(&route.app, &route.environment)
            .await?;
        // The proxy's counters for all of them, in one question.
        let ids: Vec<i64> = records.iter().map(|t| t.id).collect();
        let stats = self.proxy.stats(&ids).await;
        let targets: Vec<TargetStatus> = records
            .into_iter()
            .map(|t| {
                let stats = stats.get(&t.id).copied().unwrap_or_default();
                self.target_status(t, stats)
            })
            .collect::<futures_util::future::JoinAll<_>>()
            .await;
        let last_deployment = self
            .store
            .deployments(&route.app, 20)
            .await?
            .into_iter()
            .find(|d| d.environment == route.environment);
        // Names and sources only (no values): `status` is for everyone.
        let listing = self
            .config_listing(&route.app, &route.environment, false)
            .await
            .ok();
        Ok(EnvironmentStatus {
            app: route.app.clone(),
            environment: route.environment.clone(),
            hosts: route.hosts.clone(),
            live: targets
                .iter()
                .find(|t| Some(t.record.id) == route.live_target)
                .cloned(),
            targets,
            last_deployment,
            maintenance: self.maintenance_of(&RouteKey::new(&route.app, &route.environment)),
            disk: None,
            variables: listing.as_ref().map(|l| l.vars.clone()).unwrap_or_default(),
            config_version: listing.and_then(|l| l.live_version),
        })
    }

    async fn target_status(&self, record: TargetRecord, stats: TargetStats) -> TargetStatus {
        let running = match self.managed(record.id) {
            Some(m) => m.runtime.alive(&m.handle()).await,
            None => false,
        };
        TargetStatus {
            // Workers listen on nothing.
            address: match record.port {
                0 => String::new(),
                port => format!("127.0.0.1:{port}"),
            },
            running,
            responding: !stats.unresponsive,
            in_flight: stats.in_flight,
            requests: stats.requests,
            failures: stats.failures,
            timeouts: stats.timeouts,
            long_lived: stats.long_lived,
            record,
        }
    }

    /// The live target of an app in an environment, if any.
    pub async fn live_target(&self, app: &str, environment: &str) -> Result<Option<TargetRecord>> {
        match self
            .store
            .route(app, environment)
            .await?
            .and_then(|r| r.live_target)
        {
            Some(id) => Ok(Some(self.store.target(id).await?)),
            None => Ok(None),
        }
    }

    /// The one way a managed target changes state: the store first (what a
    /// restarted server trusts), then memory. A store that cannot be
    /// written is said in the log; the target still changes, since it has
    /// (recovery then decides from the store, as after a crash).
    pub(crate) async fn transition(
        &self,
        managed: &Managed,
        state: TargetState,
        warm_until: Option<i64>,
    ) -> Result<()> {
        // The other instances of its release go the same way.
        for other in managed.instances() {
            let written = self
                .store
                .set_target_state(other.record_id, state, warm_until)
                .await;
            if let Err(e) = &written {
                tracing::error!(target = other.record_id, state = state.as_str(), error = %e, "cannot record a target's state");
            }
            other.set_state(state);
        }
        let written = self
            .store
            .set_target_state(managed.record_id, state, warm_until)
            .await;
        if let Err(e) = &written {
            tracing::error!(target = managed.record_id, state = state.as_str(), error = %e, "cannot record a target's state");
        }
        managed.set_state(state);
        Ok(written?)
    }

    /// Stops warm targets whose time is up, then applies the contract
    /// migrations that became due, every half second, until `stop` turns
    /// true (a background service: a stopping server waits for it).
    pub async fn reap_warm_targets(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let now = baton_store::now_ms();
            let expired: Vec<Arc<Managed>> = self
                .managed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|m| m.state() == TargetState::Warm && m.is_first())
                .cloned()
                .collect();
            for managed in expired {
                let Ok(record) = self.store.target(managed.record_id).await else {
                    continue;
                };
                if record.state == TargetState::Warm
                    && record.warm_until.is_some_and(|until| until <= now)
                {
                    self.stop_target(&managed, "its keep-warm time is over")
                        .await;
                }
            }
            self.apply_due_contracts().await;
        }
    }
}

/// A store write whose failure must not stop what is under way (the
/// deployment goes on; recovery decides from the store later) but is never
/// dropped unsaid.
pub(crate) fn noted<T>(written: baton_store::Result<T>, what: &str) {
    if let Err(e) = written {
        tracing::error!(write = what, error = %e, "cannot record in the store");
    }
}

pub(crate) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An app's variables in `environment`: the manifest's `[env]` (and the
/// environment's), then the config's values, which win.
pub(crate) fn variables(
    manifest: &Manifest,
    environment: &str,
    config: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = manifest.environment(environment).env;
    env.extend(config);
    env
}

/// How long a target of `process` has to exit after SIGTERM.
pub(crate) fn stop_timeout(manifest: &Manifest, process: &str) -> Duration {
    match manifest.processes.get(process) {
        Some(worker) => worker.stop_timeout,
        None => manifest.web.stop_timeout,
    }
}

fn check_environment(environment: &str) -> Result<()> {
    baton_manifest::check_name("environment", environment).map_err(Error::Invalid)
}

/// The text of `baton.toml` at the root of a packed archive.
/// Every check of a release's files besides its manifest, in one place,
/// whichever edge sent the release (CLI, API, pipeline): today its
/// `flags.toml`, which a deploy applies and so must be valid before the
/// release is recorded.
fn check_release_files(archive: &[u8], id: &str) -> Result<()> {
    let name = baton_manifest::flags::FILE_NAME;
    let text =
        baton_package::read_text(archive, name).map_err(|e| Error::Invalid(e.to_string()))?;
    if let Some(text) = text {
        let label = format!("{name} (release {})", baton_package::short_id(id));
        baton_manifest::flags::FlagsFile::parse(&text, &label)
            .map_err(|e| Error::Invalid(e.to_string()))?;
    }
    Ok(())
}

fn manifest_in(archive: &[u8]) -> Result<String> {
    use std::io::Read;
    let damaged =
        |e: std::io::Error| Error::Invalid(format!("the release archive is damaged: {e}"));
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let is_manifest = entry
            .path()
            .map(|p| p.as_os_str() == baton_manifest::FILE_NAME || p.as_os_str() == "./baton.toml")
            .unwrap_or(false);
        if is_manifest {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| Error::Invalid(format!("baton.toml is not valid UTF-8 text: {e}")))?;
            return Ok(text);
        }
    }
    Err(Error::Invalid(
        "the release has no baton.toml at its root; run `baton deploy` on the app's folder".into(),
    ))
}
