//! The pipeline: from a signed Git webhook to production. It owns the
//! webhook's checks (signature, replay, size, JSON, skip rules), builds
//! (checkout of the exact commit, build and test steps, their logs; all run
//! as the unprivileged app user, never as the server), the
//! promotion of the one release a passing build made — `staging`, then
//! `production` — review apps for pull requests, notifications and the
//! announcement gate. It never deploys by itself: it asks the orchestrator,
//! through the same calls the API uses, and records what it did in the
//! store. It serves no HTTP: the API crate's handlers call it, and the
//! server starts it with [`Pipeline::start`].

mod build;
pub mod config;
pub mod event;
pub mod notes;
mod notify;
pub mod signature;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baton_manifest::{Manifest, Promote};
use baton_orchestrator::{DeployRequest, Orchestrator};
use baton_runtime::AppUser;
use baton_store::{
    Build, DeploymentState, NewBuild, NewNotification, Promotion, Store, StoreError,
};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

pub use config::Config;

use crate::build::{note, Outcome, Workspace};
use crate::event::PullRequest;

/// The environment every passing build of the pipeline's branch goes to first.
pub const STAGING: &str = "staging";

/// Work for the build worker, done one at a time in arrival order, so a
/// pull request closed while its build waits is torn down after it.
enum Job {
    Build(i64),
    Close(PullRequest),
}

pub struct Pipeline {
    orchestrator: Arc<Orchestrator>,
    config: Config,
    builds_dir: PathBuf,
    /// Who checkouts and build steps run as; `None` only when the server
    /// is not root.
    app_user: Option<AppUser>,
    http: reqwest::Client,
    jobs: mpsc::UnboundedSender<Job>,
    /// Woken when a notification is delivered (an announcement may open a gate).
    wake: Notify,
    /// The background services, for a clean stop.
    services: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Runs a background service until `stop` turns true; dropping it then
/// ends what it was doing (a build's steps are killed with their group).
async fn until(mut stop: watch::Receiver<bool>, service: impl std::future::Future<Output = ()>) {
    tokio::select! {
        _ = service => {}
        _ = stop.wait_for(|stop| *stop) => {}
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A delivery, build or promotion that cannot be acted on as it is.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Not now: a replayed delivery, a promotion of what did not pass staging.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Orchestrator(#[from] baton_orchestrator::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn fault(&self) -> baton_store::Fault {
        use baton_store::Fault;
        match self {
            Error::Invalid(_) => Fault::Invalid,
            Error::NotFound(_) => Fault::NotFound,
            Error::Refused(_) => Fault::Refused,
            Error::Orchestrator(e) => e.fault(),
            Error::Store(e) => e.fault(),
            Error::Internal(_) => Fault::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Who asked for a promotion, and whether they let it past its announcement.
#[derive(Debug, Clone, Default)]
pub struct PromoteRequest {
    pub app: String,
    pub release: String,
    pub environment: String,
    pub actor: String,
    /// Promote without waiting for the announcement; the reason is recorded.
    pub override_announcement: Option<String>,
}

impl Pipeline {
    /// Starts the build worker, the notifier and the sweep; `data` is the
    /// server's data folder (builds go to `data/builds`). Builds run as
    /// `app_user` (see [`AppUser::for_server`]).
    ///
    /// Its four background services (build worker, notifier, announcement
    /// gate, review-app sweep) run until `stop` turns true; [`Pipeline::stopped`]
    /// waits for them. A build cut short by the stop is failed at the next
    /// start, as after a crash.
    pub async fn start(
        orchestrator: Arc<Orchestrator>,
        config: Config,
        data: &std::path::Path,
        app_user: Option<AppUser>,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Arc<Pipeline>> {
        let builds_dir = data.join("builds");
        std::fs::create_dir_all(&builds_dir)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let pipeline = Arc::new(Pipeline {
            orchestrator,
            config,
            builds_dir,
            app_user,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            jobs: tx,
            wake: Notify::new(),
            services: std::sync::Mutex::new(Vec::new()),
        });
        // Builds a stopped server left behind: running ones cannot be
        // trusted (their workspace is half-made), queued ones start now.
        if let Ok(builds) = pipeline.store().unfinished_builds().await {
            for b in builds {
                if b.state == "running" {
                    let _ = pipeline
                        .store()
                        .finish_build(b.id, "failed", Some("the server stopped during the build"))
                        .await;
                } else {
                    let _ = pipeline.jobs.send(Job::Build(b.id));
                }
            }
        }
        let services = vec![
            tokio::spawn(until(stop.clone(), Arc::clone(&pipeline).work(rx))),
            tokio::spawn(until(stop.clone(), Arc::clone(&pipeline).notify_loop())),
            tokio::spawn(until(stop.clone(), Arc::clone(&pipeline).gate_loop())),
            tokio::spawn(until(stop, Arc::clone(&pipeline).sweep_loop())),
        ];
        *pipeline.services.lock().unwrap_or_else(|e| e.into_inner()) = services;
        Ok(pipeline)
    }

    /// Resolves once every background service has ended (after `stop`).
    pub async fn stopped(&self) {
        let services: Vec<_> =
            std::mem::take(&mut *self.services.lock().unwrap_or_else(|e| e.into_inner()));
        for service in services {
            let _ = service.await;
        }
    }

    pub fn store(&self) -> &Store {
        self.orchestrator.store()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where a build's output is kept.
    pub fn log_path(&self, build: i64) -> PathBuf {
        build::log_path(&self.builds_dir, build)
    }

    /// Records a build of a pushed commit or a pull request's head, and queues it.
    pub async fn queue_build(&self, request: &event::BuildRequest) -> Result<Build> {
        let build = self
            .store()
            .create_build(&NewBuild {
                repository: request.repository.clone(),
                clone_url: request.clone_url.clone(),
                git_ref: request.git_ref.clone(),
                commit_sha: request.commit.clone(),
                trigger: if request.pull_request.is_some() {
                    "pull_request".into()
                } else {
                    "push".into()
                },
                pr_number: request.pull_request.as_ref().map(|p| p.number as i64),
            })
            .await?;
        self.jobs
            .send(Job::Build(build.id))
            .map_err(|_| Error::Internal("the build worker has stopped".into()))?;
        Ok(build)
    }

    /// A closed pull request: its release note when merged with the
    /// announcement label, and its review app torn down (after any build of
    /// it already queued).
    pub async fn pull_request_closed(&self, pr: PullRequest) -> Result<()> {
        if pr.merged && pr.labels.contains(&self.config.announcements.label) {
            self.store()
                .put_release_note(
                    &pr.repository,
                    pr.number as i64,
                    &pr.title,
                    &pr.body,
                    &pr.labels,
                )
                .await?;
        }
        self.jobs
            .send(Job::Close(pr))
            .map_err(|_| Error::Internal("the build worker has stopped".into()))
    }

    async fn work(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = rx.recv().await {
            match job {
                Job::Build(id) => {
                    if let Err(e) = self.run_build(id).await {
                        tracing::error!(build = id, error = %e, "build could not be recorded");
                    }
                }
                Job::Close(pr) => {
                    let number = pr.number as i64;
                    if let Err(e) = self
                        .store()
                        .set_review_app_closing(&pr.repository, number)
                        .await
                    {
                        tracing::error!(error = %e, "cannot record a closed pull request");
                    }
                    if let Err(e) = self
                        .remove_review_app(&pr.repository, number, "its pull request was closed")
                        .await
                    {
                        tracing::warn!(repository = pr.repository, number = pr.number, error = %e, "cannot remove a review app");
                    }
                }
            }
        }
    }

    /// Runs one build to its end; every failure is recorded on the build
    /// (and as a `build_failed` event, which notifies).
    async fn run_build(self: &Arc<Self>, id: i64) -> Result<()> {
        let build = self.store().build(id).await?;
        if build.state != "queued" {
            return Ok(());
        }
        self.store().start_build(id).await?;
        let ws = Workspace::new(&self.builds_dir, id);
        let outcome = self.build_steps(&build, &ws).await;
        ws.remove();
        let build = self.store().build(id).await?;
        match outcome {
            Ok(Some(skipped)) => {
                note(&ws.log, &format!("skipped: {skipped}"));
                self.store()
                    .finish_build(id, "skipped", Some(&skipped))
                    .await?;
            }
            Ok(None) => {
                note(&ws.log, "build passed");
                self.store().finish_build(id, "passed", None).await?;
            }
            Err(e) => {
                note(&ws.log, &format!("build failed: {e}"));
                self.store().finish_build(id, "failed", Some(&e)).await?;
                let app = build
                    .app
                    .clone()
                    .unwrap_or_else(|| build.repository.clone());
                let environment = build.environment.clone().unwrap_or_default();
                let message = format!(
                    "build {id} of {} at {} failed: {e}",
                    build.repository,
                    &build.commit_sha[..12.min(build.commit_sha.len())]
                );
                self.store()
                    .record_event(
                        &app,
                        &environment,
                        baton_store::EventKind::BuildFailed,
                        &message,
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// The steps of one build; `Ok(Some(reason))` when there is nothing to do.
    async fn build_steps(
        self: &Arc<Self>,
        build: &Build,
        ws: &Workspace,
    ) -> std::result::Result<Option<String>, String> {
        let started = Instant::now();
        // Until the manifest is read, the checkout has the default timeout.
        let checkout_deadline = started + Duration::from_secs(600);
        let store = self.store();
        let db = |e: StoreError| e.to_string();
        note(
            &ws.log,
            &format!(
                "build {} of {} at {}",
                build.id, build.repository, build.commit_sha
            ),
        );
        let seq = store
            .begin_build_step(
                build.id,
                "checkout",
                &format!("git fetch {} {}", build.clone_url, build.commit_sha),
            )
            .await
            .map_err(db)?;
        let checked = build::checkout(
            ws,
            &build.clone_url,
            &build.commit_sha,
            self.app_user.as_ref(),
            checkout_deadline,
        )
        .await;
        store
            .end_build_step(
                build.id,
                seq,
                checked.is_ok(),
                None,
                checked.as_ref().err().map(String::as_str),
            )
            .await
            .map_err(db)?;
        checked?;

        let manifest = Manifest::load(&ws.src).map_err(|e| e.to_string())?;
        let pipeline = manifest.pipeline.clone().unwrap_or_default();
        let environment = match build.pr_number {
            Some(number) => {
                if pipeline.review_domain.is_none() {
                    return Ok(Some(
                        "review apps are off: baton.toml has no pipeline.review_domain".into(),
                    ));
                }
                baton_manifest::review_environment(number as u64)
            }
            None => {
                let branch = build.git_ref.trim_start_matches("refs/heads/");
                if branch != pipeline.branch {
                    return Ok(Some(format!(
                        "branch {branch} is not the pipeline's branch ({}, pipeline.branch in baton.toml)",
                        pipeline.branch
                    )));
                }
                STAGING.to_string()
            }
        };
        store
            .set_build_app(build.id, &manifest.name, &environment)
            .await
            .map_err(db)?;

        let deadline = started + pipeline.timeout;
        let home = ws.home.to_string_lossy().to_string();
        let id = build.id.to_string();
        let env = [
            ("HOME", home.as_str()),
            ("BATON_BUILD", id.as_str()),
            ("BATON_COMMIT", build.commit_sha.as_str()),
            ("BATON_APP", manifest.name.as_str()),
        ];
        let steps = pipeline
            .build
            .iter()
            .map(|c| ("build", c))
            .chain(pipeline.test.iter().map(|c| ("test", c)));
        for (name, command) in steps {
            let seq = store
                .begin_build_step(build.id, name, command)
                .await
                .map_err(db)?;
            note(&ws.log, &format!("{name}: {command}"));
            let outcome = build::run(
                "sh",
                &["-c", command],
                &ws.src,
                &env,
                self.app_user.as_ref(),
                &ws.log,
                deadline,
            )
            .await;
            let (ok, code, detail) = match &outcome {
                Ok(Outcome::Exited(0)) => (true, Some(0), None),
                Ok(Outcome::Exited(code)) => (false, Some(*code), Some(format!("{name} step `{command}` exited with {code}"))),
                Ok(Outcome::TimedOut) => (false, None, Some(format!(
                    "{name} step `{command}` was stopped: the build ran out of its {} (pipeline.timeout)",
                    build::describe(pipeline.timeout)
                ))),
                Err(e) => (false, None, Some(e.clone())),
            };
            store
                .end_build_step(build.id, seq, ok, code, detail.as_deref())
                .await
                .map_err(db)?;
            if let Some(detail) = detail {
                return Err(detail);
            }
        }

        let seq = store
            .begin_build_step(build.id, "package", "pack the workspace")
            .await
            .map_err(db)?;
        let src = ws.src.clone();
        let package = tokio::task::spawn_blocking(move || baton_package::pack(&src))
            .await
            .map_err(|e| e.to_string())
            .and_then(|p| p.map_err(|e| e.to_string()));
        let release = match package {
            Ok(package) => self
                .orchestrator
                .create_release(&manifest.name, package.archive)
                .await
                .map(|(r, _)| r)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        store
            .end_build_step(
                build.id,
                seq,
                release.is_ok(),
                None,
                Some(&match &release {
                    Ok(r) => format!("release {}", r.id),
                    Err(e) => e.clone(),
                }),
            )
            .await
            .map_err(db)?;
        let release = release?;
        store
            .set_build_release(build.id, &release.id)
            .await
            .map_err(db)?;
        note(&ws.log, &format!("release {}", release.id));
        if build.pr_number.is_none() {
            self.attach_notes(&build.repository, &manifest.name, &release.id)
                .await
                .map_err(|e| e.to_string())?;
        }

        let seq = store
            .begin_build_step(build.id, "deploy", &format!("deploy to {environment}"))
            .await
            .map_err(db)?;
        let deployed = self
            .deploy_and_wait(
                &manifest.name,
                &environment,
                &release.id,
                &format!("pipeline (build {})", build.id),
            )
            .await;
        store
            .end_build_step(
                build.id,
                seq,
                deployed.is_ok(),
                None,
                Some(&match &deployed {
                    Ok(d) => format!("deployment {d} succeeded"),
                    Err(e) => e.clone(),
                }),
            )
            .await
            .map_err(db)?;
        deployed?;
        note(
            &ws.log,
            &format!("release {} is live in {environment}", release.id),
        );

        match build.pr_number {
            Some(number) => {
                store
                    .put_review_app(&build.repository, number, &manifest.name, &environment, &build.commit_sha)
                    .await
                    .map_err(db)?;
            }
            None if pipeline.promote == Promote::Auto => {
                let promoted = self
                    .promote(PromoteRequest {
                        app: manifest.name.clone(),
                        release: release.id.clone(),
                        environment: baton_manifest::DEFAULT_ENVIRONMENT.into(),
                        actor: format!("pipeline (build {})", build.id),
                        override_announcement: None,
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                note(&ws.log, &format!("promotion {} to production: {}", promoted.id, promoted.state));
            }
            None => note(&ws.log, &format!(
                "production waits for `baton promote {} {} --to production` (pipeline.promote = \"manual\")",
                manifest.name,
                baton_package::short_id(&release.id)
            )),
        }
        Ok(None)
    }

    /// Deploys and follows the deployment to its end; its id when it succeeded.
    async fn deploy_and_wait(
        self: &Arc<Self>,
        app: &str,
        environment: &str,
        release: &str,
        actor: &str,
    ) -> std::result::Result<i64, String> {
        let started = self
            .orchestrator
            .deploy(DeployRequest {
                app: app.to_string(),
                environment: environment.to_string(),
                release: release.to_string(),
                preview: false,
                actor: baton_orchestrator::Actor::system(actor),
            })
            .await;
        let deployment = match started {
            Ok(deployment) => deployment,
            // A build whose content is the live release's (a change the
            // package ignores): it is there already; the deployment that put
            // it live stands for this one.
            Err(baton_orchestrator::Error::AlreadyLive { .. }) => {
                return self
                    .store()
                    .deployments(app, 200)
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .find(|d| {
                        d.environment == environment
                            && d.release_id == release
                            && d.state == DeploymentState::Succeeded
                    })
                    .map(|d| d.id)
                    .ok_or_else(|| format!("release {release} is live in {environment} but no deployment put it there"));
            }
            Err(e) => return Err(e.to_string()),
        };
        self.wait_deployment(deployment.id).await
    }

    async fn wait_deployment(&self, id: i64) -> std::result::Result<i64, String> {
        loop {
            let d = self
                .store()
                .deployment(id)
                .await
                .map_err(|e| e.to_string())?;
            match d.state {
                DeploymentState::Succeeded => return Ok(id),
                DeploymentState::Failed => {
                    return Err(format!(
                        "deployment {id} to {} failed: {}",
                        d.environment,
                        d.error.unwrap_or_default()
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Gives a release its repository's waiting release notes and sends the
    /// announcement to the subscribers' channel.
    async fn attach_notes(
        self: &Arc<Self>,
        repository: &str,
        app: &str,
        release: &str,
    ) -> Result<()> {
        if self.store().announcement(release).await?.is_some() {
            return Ok(());
        }
        let notes = self
            .store()
            .claim_release_notes(repository, release)
            .await?;
        if notes.is_empty() {
            return Ok(());
        }
        let text = notes::render(app, release, &notes, &self.config.announcements.label);
        let notification = match self
            .config
            .announcements
            .channel
            .as_deref()
            .and_then(|c| self.config.channel(c))
        {
            Some(channel) => {
                self.queue_notification(NewNotification {
                    event_id: None,
                    channel: channel.name.clone(),
                    kind: channel.kind.as_str().to_string(),
                    event_kind: "announcement".into(),
                    app: app.to_string(),
                    environment: baton_manifest::DEFAULT_ENVIRONMENT.into(),
                    subject: format!(
                        "[baton] {app}: coming to production ({})",
                        baton_package::short_id(release)
                    ),
                    body: text.clone(),
                })
                .await
            }
            None => {
                tracing::warn!(
                    app,
                    release,
                    "release notes but no announcements.channel: production waits for an override"
                );
                None
            }
        };
        self.store()
            .put_announcement(release, app, &text, notification)
            .await?;
        Ok(())
    }

    /// Why production must still wait for a release, if it must.
    pub async fn production_waits_for(&self, release: &str) -> Result<Option<String>> {
        let Some(announcement) = self.store().announcement(release).await? else {
            return Ok(None);
        };
        if announcement.override_at.is_some() {
            return Ok(None);
        }
        let delivered = match announcement.notification_id {
            Some(id) => self.store().notification(id).await?.delivered_at,
            None => None,
        };
        let Some(delivered) = delivered else {
            return Ok(Some(format!(
                "its announcement has not been delivered to the {} channel yet",
                self.config
                    .announcements
                    .channel
                    .as_deref()
                    .unwrap_or("(no announcements.channel)")
            )));
        };
        self.store()
            .set_announcement_sent(release, delivered)
            .await?;
        let notice = self.config.announcements.notice.as_millis() as i64;
        let now = baton_store::now_ms();
        if delivered + notice > now {
            return Ok(Some(format!(
                "the announcement's notice period runs for {} ms more",
                delivered + notice - now
            )));
        }
        Ok(None)
    }

    /// Promotes a release that is live in staging — the same release, never
    /// a rebuild — to `environment`, at once or when its announcement gate opens.
    pub async fn promote(self: &Arc<Self>, request: PromoteRequest) -> Result<Promotion> {
        let release = self
            .store()
            .find_release(&request.app, &request.release)
            .await?;
        if request.environment == STAGING {
            return Err(Error::Invalid(
                "a release reaches staging by its build; promote it to production".into(),
            ));
        }
        let passed_staging = self
            .store()
            .deployments(&request.app, 1000)
            .await?
            .iter()
            .any(|d| {
                d.environment == STAGING
                    && d.release_id == release.id
                    && d.state == DeploymentState::Succeeded
            });
        if !passed_staging {
            return Err(Error::Refused(format!(
                "release {} of {} has not been deployed to staging successfully; only what passed staging is promoted",
                baton_package::short_id(&release.id),
                request.app
            )));
        }
        if let Some(reason) = &request.override_announcement {
            if self.store().announcement(&release.id).await?.is_some() {
                self.store()
                    .override_announcement(&release.id, &request.actor, reason)
                    .await?;
            }
        }
        let newer = format!(
            "a newer promotion (release {}) replaced it",
            baton_package::short_id(&release.id)
        );
        self.store()
            .cancel_waiting_promotions(&request.app, &request.environment, &newer)
            .await?;
        match self.production_waits_for(&release.id).await? {
            Some(why) => Ok(self
                .store()
                .create_promotion(
                    &request.app,
                    &release.id,
                    &request.environment,
                    &request.actor,
                    "waiting",
                    Some(&why),
                )
                .await?),
            None => {
                let promotion = self
                    .store()
                    .create_promotion(
                        &request.app,
                        &release.id,
                        &request.environment,
                        &request.actor,
                        "started",
                        None,
                    )
                    .await?;
                self.start_promotion(&promotion).await?;
                Ok(self
                    .store()
                    .promotions(&request.app, 1)
                    .await?
                    .into_iter()
                    .next()
                    .unwrap_or(promotion))
            }
        }
    }

    async fn start_promotion(self: &Arc<Self>, promotion: &Promotion) -> Result<()> {
        let started = self
            .orchestrator
            .deploy(DeployRequest {
                app: promotion.app.clone(),
                environment: promotion.environment.clone(),
                release: promotion.release_id.clone(),
                preview: false,
                // The person (or `pipeline (build N)`) who asked; the API
                // recorded their address with the promotion.
                actor: baton_orchestrator::Actor::system(promotion.actor.clone()),
            })
            .await;
        match started {
            Ok(d) => {
                self.store()
                    .update_promotion(
                        promotion.id,
                        "started",
                        Some(d.id),
                        Some(&format!("deployment {}", d.id)),
                    )
                    .await?;
                Ok(())
            }
            Err(e) => {
                let e = Error::from(e);
                self.store()
                    .update_promotion(promotion.id, "failed", None, Some(&e.to_string()))
                    .await?;
                Err(e)
            }
        }
    }

    /// Starts the promotions whose announcement gate has opened.
    async fn gate_loop(self: Arc<Self>) {
        loop {
            if let Ok(waiting) = self.store().waiting_promotions().await {
                for p in waiting {
                    match self.production_waits_for(&p.release_id).await {
                        Ok(None) => {
                            if let Err(e) = self.start_promotion(&p).await {
                                tracing::warn!(promotion = p.id, error = %e, "promotion failed to start");
                            }
                        }
                        Ok(Some(_)) => {}
                        Err(e) => {
                            tracing::warn!(promotion = p.id, error = %e, "cannot check a promotion's gate")
                        }
                    }
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), self.wake.notified()).await;
        }
    }

    /// Tears down a review app: its environment (route, targets, files) and record.
    pub async fn remove_review_app(
        &self,
        repository: &str,
        number: i64,
        why: &str,
    ) -> Result<bool> {
        let Some(review) = self.store().review_app(repository, number).await? else {
            return Ok(false);
        };
        if review.state == "removed" {
            return Ok(false);
        }
        let removed = self
            .orchestrator
            .remove_environment(&review.app, &review.environment)
            .await?;
        self.store()
            .set_review_app_removed(repository, number)
            .await?;
        tracing::info!(app = review.app, environment = review.environment, why, targets = ?removed.targets, "review app removed");
        Ok(true)
    }

    /// Removes review apps older than the TTL, those whose environment is
    /// gone, and closed ones whose removal failed (a deployment was running).
    async fn sweep_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.config.sweep_interval).await;
            self.sweep().await;
        }
    }

    pub async fn sweep(&self) {
        let Ok(reviews) = self.store().live_review_apps().await else {
            return;
        };
        let now = baton_store::now_ms();
        let ttl = self.config.review_ttl.as_millis() as i64;
        for r in reviews {
            let gone = matches!(self.store().route(&r.app, &r.environment).await, Ok(None));
            let why = if r.state == "closing" {
                "its pull request was closed"
            } else if r.created_at + ttl <= now {
                "it outlived the review TTL"
            } else if gone {
                "its environment is gone"
            } else {
                continue;
            };
            if let Err(e) = self.remove_review_app(&r.repository, r.number, why).await {
                tracing::warn!(app = r.app, environment = r.environment, error = %e, "sweep could not remove a review app");
            }
        }
    }
}
