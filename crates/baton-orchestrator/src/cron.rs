//! Cron jobs (`[cron.NAME]` in the live release's manifest): one scheduler
//! loop, started by `baton server`, runs each tick of each job in every
//! environment where the app is live, in the live release's folder and
//! environment (as `baton run` does), at most once. A tick is claimed in
//! the store (a unique row) before its command starts; a run a stopped or
//! killed server left unfinished is marked interrupted at the next start,
//! never run again. The pure part (`due`, `overlap`) decides which ticks
//! run after a gap and what a tick does while the previous run still
//! runs; it is tested without I/O. This module never decides deploys and
//! never starts a target.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_manifest::cron::{CronJob, Missed, Overlap};
use baton_runtime::Exit;
use baton_store::{CronRun, CronState, EventKind, NewCronRun, Release};
use serde::{Deserialize, Serialize};

use crate::commands::run_to_log;
use crate::{Error, Orchestrator, Result};

/// A tick seen this late is still on time (the loop's own delays).
const ON_TIME_MS: i64 = 10_000;
/// `missed = "run_once"`: the latest missed tick runs if at most this old.
pub const CATCH_UP_MS: i64 = 3_600_000;
/// Missed ticks recorded one by one (as skipped) after a gap, at most.
const MAX_MISSED: usize = 100;
/// `overlap = "queue"`: ticks waiting behind a run, at most (then skipped).
const MAX_QUEUED: usize = 10;
/// Runs kept per job (with their logs); older ones are forgotten.
const KEEP_RUNS: i64 = 1_000;
/// How often the scheduler looks at the clock.
const PASS: Duration = Duration::from_millis(200);

// ---- the pure part ----

/// A job's parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    zone: jiff::tz::TimeZone,
}

impl Schedule {
    pub fn of(job: &CronJob) -> std::result::Result<Schedule, String> {
        let (cron, zone) = job.schedule()?;
        Ok(Schedule { cron, zone })
    }

    fn zoned(&self, ms: i64) -> Option<jiff::Zoned> {
        Some(
            jiff::Timestamp::from_millisecond(ms)
                .ok()?
                .to_zoned(self.zone.clone()),
        )
    }

    /// The first tick strictly after `ms`.
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let next = self
            .cron
            .find_next_occurrence(&self.zoned(ms)?, false)
            .ok()?;
        Some(next.timestamp().as_millisecond())
    }

    /// The last tick at or before `ms`.
    pub fn latest_at(&self, ms: i64) -> Option<i64> {
        let at = self.zoned(ms)?;
        let latest = self.cron.find_previous_occurrence(&at, true).ok()?;
        Some(latest.timestamp().as_millisecond())
    }
}

/// What the ticks after `cursor` come to at `now`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Due {
    /// The tick to run now.
    pub run: Option<i64>,
    /// Ticks to record as skipped (missed), oldest first: the first
    /// `MAX_MISSED` of a gap (and its latest, when it does not run).
    pub missed: Vec<i64>,
}

impl Due {
    /// The newest tick this decides about (the job's next cursor).
    pub fn newest(&self) -> Option<i64> {
        self.run.or(self.missed.last().copied())
    }
}

/// Which ticks after `cursor` (the newest already decided) run at `now`:
/// the latest due tick runs if it is on time, or under `run_once` if it
/// is at most `CATCH_UP_MS` old; every other due tick is missed. Never
/// more than one run, whatever the gap.
pub fn due(schedule: &Schedule, cursor: i64, now: i64, policy: Missed) -> Due {
    let Some(latest) = schedule.latest_at(now).filter(|t| *t > cursor) else {
        return Due::default();
    };
    // The first ticks of a gap are recorded one by one; past
    // `MAX_MISSED`, the rest of a long gap is not walked at all.
    let mut missed = Vec::new();
    let mut tick = cursor;
    while missed.len() < MAX_MISSED {
        match schedule.next_after(tick).filter(|t| *t < latest) {
            Some(next) => {
                missed.push(next);
                tick = next;
            }
            None => break,
        }
    }
    let late = now - latest;
    let runs = late <= ON_TIME_MS || (policy == Missed::RunOnce && late <= CATCH_UP_MS);
    if runs {
        Due {
            run: Some(latest),
            missed,
        }
    } else {
        missed.push(latest);
        Due { run: None, missed }
    }
}

/// What a tick does while the job may be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Now,
    Queue,
    Skip,
}

pub fn overlap(policy: Overlap, running: bool, queued: usize) -> Start {
    match (running, policy) {
        (false, _) => Start::Now,
        (true, Overlap::Skip) => Start::Skip,
        (true, Overlap::Queue) if queued < MAX_QUEUED => Start::Queue,
        (true, Overlap::Queue) => Start::Skip,
    }
}

/// A tick's time as the job sees it (`BATON_CRON_TICK`): RFC 3339, UTC.
pub fn tick_text(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

// ---- the scheduler ----

type JobKey = (String, String, String);

/// What the scheduler keeps in memory per job.
#[derive(Default)]
struct JobState {
    /// The newest tick decided (from the store at first sight).
    cursor: Option<i64>,
    /// The run under way, if any.
    running: Option<i64>,
    /// Runs recorded as queued behind it: (run, tick).
    queue: VecDeque<(i64, i64)>,
}

/// The scheduler's memory; the store holds the truth.
#[derive(Default)]
pub(crate) struct Jobs {
    jobs: Mutex<HashMap<JobKey, JobState>>,
}

impl Jobs {
    fn with<T>(&self, key: &JobKey, f: impl FnOnce(&mut JobState) -> T) -> T {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        f(jobs.entry(key.clone()).or_default())
    }
}

/// A job as `baton cron list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CronJobView {
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub command: String,
    pub timeout: String,
    pub overlap: Overlap,
    pub missed: Missed,
    pub next_run: Option<i64>,
    pub last_run: Option<CronRun>,
}

/// A run and the part of its output asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CronRunOutput {
    pub run: CronRun,
    pub output: String,
    /// Where the next read starts.
    pub next_offset: u64,
}

/// Where the live release of an environment runs, for a job.
struct Live {
    release: Release,
    config: Option<i64>,
    jobs: BTreeMap<String, CronJob>,
}

impl Orchestrator {
    /// The live release of `app` in `environment` and its jobs.
    async fn live_jobs(&self, app: &str, environment: &str) -> Result<Option<Live>> {
        let Some(target) = self.live_target(app, environment).await? else {
            return Ok(None);
        };
        let release = self.store.release(&target.release_id).await?;
        let jobs = baton_manifest::Manifest::parse(&release.manifest, "baton.toml")
            .map(|m| m.cron)
            .unwrap_or_default();
        let config = self.config_of_target(target.deployment_id).await?;
        Ok(Some(Live {
            release,
            config,
            jobs,
        }))
    }

    /// The one scheduler: every `PASS`, for every live environment, runs
    /// the jobs' due ticks, until `stop` turns true. Runs still under way
    /// then are left to end with the process (the next start marks them
    /// interrupted).
    pub async fn run_cron(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        match self.store.interrupt_cron_runs().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                runs = n,
                "cron runs left unfinished by the previous server are marked interrupted"
            ),
            Err(e) => {
                // Without that, a run could be taken for still running; no
                // tick is run rather than one run twice.
                tracing::error!(error = %e, "cannot read the cron runs; no cron job runs until the server restarts");
                return;
            }
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PASS) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            if let Err(e) = self.cron_pass().await {
                tracing::error!(error = %e, "cron pass failed; trying again");
            }
        }
    }

    async fn cron_pass(self: &Arc<Self>) -> Result<()> {
        let mut seen = HashSet::new();
        for route in self.store.routes().await? {
            let Some(live) = self.live_jobs(&route.app, &route.environment).await? else {
                continue;
            };
            for (name, job) in &live.jobs {
                let key: JobKey = (route.app.clone(), route.environment.clone(), name.clone());
                seen.insert(key.clone());
                if let Err(e) = self.cron_job_pass(&key, job, &live).await {
                    tracing::error!(app = %key.0, environment = %key.1, job = %key.2, error = %e, "cron job not looked at");
                }
            }
        }
        // Jobs removed by a deploy (or apps no longer live) are forgotten
        // once their runs have ended.
        self.cron
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|key, state| seen.contains(key) || state.running.is_some());
        Ok(())
    }

    async fn cron_job_pass(
        self: &Arc<Self>,
        key: &JobKey,
        job: &CronJob,
        live: &Live,
    ) -> Result<()> {
        let (app, environment, name) = key;
        let schedule = Schedule::of(job).map_err(Error::Invalid)?;
        let now = baton_store::now_ms();
        let cursor = match self.cron.with(key, |s| s.cursor) {
            Some(cursor) => cursor,
            None => {
                // First sight: from the last tick recorded, else from now
                // (a new job does not run the ticks before it existed).
                let cursor = self
                    .store
                    .last_cron_tick(app, environment, name)
                    .await?
                    .unwrap_or(now);
                self.cron.with(key, |s| s.cursor = Some(cursor));
                cursor
            }
        };
        let due = due(&schedule, cursor, now, job.missed);
        let Some(newest) = due.newest() else {
            return Ok(());
        };
        let release = Some(live.release.id.as_str());
        for tick in &due.missed {
            self.store
                .claim_cron_run(&NewCronRun {
                    app,
                    environment,
                    job: name,
                    scheduled_at: *tick,
                    manual: false,
                    release_id: None,
                    state: CronState::Skipped,
                    detail: Some(
                        "missed: no scheduler ran at this tick (Baton was down or busy; see `missed` in [cron])",
                    ),
                })
                .await?;
        }
        if let Some(tick) = due.run {
            let (running, queued) = self.cron.with(key, |s| (s.running, s.queue.len()));
            let skipped = match job.overlap {
                Overlap::Skip => format!(
                    "run {} was still running; overlap = \"skip\"",
                    running.unwrap_or_default()
                ),
                Overlap::Queue => format!("{queued} ticks were queued already, the most kept"),
            };
            let (state, detail) = match overlap(job.overlap, running.is_some(), queued) {
                Start::Now => (CronState::Running, None),
                Start::Queue => (CronState::Queued, None),
                Start::Skip => (CronState::Skipped, Some(skipped.as_str())),
            };
            let claimed = self
                .store
                .claim_cron_run(&NewCronRun {
                    app,
                    environment,
                    job: name,
                    scheduled_at: tick,
                    manual: false,
                    release_id: release,
                    state,
                    detail,
                })
                .await?;
            match (claimed, state) {
                (Some(id), CronState::Running) => {
                    self.cron.with(key, |s| s.running = Some(id));
                    self.spawn_cron_run(
                        key.clone(),
                        id,
                        tick,
                        job.clone(),
                        live.release.clone(),
                        live.config,
                    );
                }
                (Some(id), CronState::Queued) => {
                    self.cron.with(key, |s| s.queue.push_back((id, tick)))
                }
                _ => {}
            }
        }
        self.cron.with(key, |s| s.cursor = Some(newest));
        Ok(())
    }

    /// Runs a claimed run, then what queued behind it (each in the
    /// release live when it starts).
    fn spawn_cron_run(
        self: &Arc<Self>,
        key: JobKey,
        id: i64,
        tick: i64,
        job: CronJob,
        release: Release,
        config: Option<i64>,
    ) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.execute_cron_run(&key, id, tick, &job, &release, config)
                .await;
            loop {
                let next = this.cron.with(&key, |s| {
                    let next = s.queue.pop_front();
                    s.running = next.map(|(id, _)| id);
                    next
                });
                let Some((id, tick)) = next else { break };
                let live = match this.live_jobs(&key.0, &key.1).await {
                    Ok(Some(live)) => live,
                    _ => {
                        noted(
                            this.store
                                .finish_cron_run(
                                    id,
                                    CronState::Skipped,
                                    None,
                                    Some("the app was no longer live when its turn came"),
                                )
                                .await,
                        );
                        continue;
                    }
                };
                let Some(job) = live.jobs.get(&key.2) else {
                    noted(
                        this.store
                            .finish_cron_run(
                                id,
                                CronState::Skipped,
                                None,
                                Some("the live release no longer has this job"),
                            )
                            .await,
                    );
                    continue;
                };
                match this.store.start_queued_cron_run(id, &live.release.id).await {
                    Ok(true) => {
                        this.execute_cron_run(&key, id, tick, job, &live.release, live.config)
                            .await
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(run = id, error = %e, "cannot start a queued cron run")
                    }
                }
            }
        });
    }

    /// Where a run's output goes.
    pub fn cron_log(&self, run: i64) -> std::path::PathBuf {
        self.logs.dir().join(format!("cron-{run}.log"))
    }

    async fn execute_cron_run(
        &self,
        key: &JobKey,
        id: i64,
        tick: i64,
        job: &CronJob,
        release: &Release,
        config: Option<i64>,
    ) {
        let (app, environment, name) = key;
        let log = self.cron_log(id);
        let outcome = async {
            let mut spec = self
                .command_spec(release, environment, config, &job.command)
                .await
                .map_err(|e| e.to_string())?;
            spec.env.insert("BATON_CRON_JOB".into(), name.clone());
            spec.env.insert("BATON_CRON_TICK".into(), tick_text(tick));
            spec.env.insert("BATON_CRON_RUN".into(), id.to_string());
            run_to_log(&spec, self.runtimes.app_user.as_ref(), &log, job.timeout).await
        }
        .await;
        let (state, code, detail) = match outcome {
            Ok(ran) => match ran.exit {
                Some(Exit::Code(0)) => (CronState::Succeeded, Some(0), None),
                Some(Exit::Code(code)) => (
                    CronState::Failed,
                    Some(code as i64),
                    Some(format!("`{}` exited with code {code}", job.command)),
                ),
                Some(exit) => (
                    CronState::Failed,
                    None,
                    Some(format!("`{}` {exit}", job.command)),
                ),
                None => (
                    CronState::TimedOut,
                    None,
                    Some(format!(
                        "ran longer than its timeout ({}) and was stopped",
                        humantime::format_duration(job.timeout)
                    )),
                ),
            },
            Err(e) => (
                CronState::Failed,
                None,
                Some(format!("could not start: {e}")),
            ),
        };
        noted(
            self.store
                .finish_cron_run(id, state, code, detail.as_deref())
                .await,
        );
        if let Some(detail) = &detail {
            let message = format!(
                "cron job {name} (tick {}, run {id}) {}: {detail}; its output is in `baton cron history {app} {name} -e {environment}`",
                tick_text(tick),
                state.as_str().replace('_', " ")
            );
            self.event(
                &crate::RouteKey::new(app, environment),
                EventKind::CronFailed,
                &message,
            )
            .await;
        }
        if let Ok(gone) = self
            .store
            .prune_cron_runs(app, environment, name, KEEP_RUNS)
            .await
        {
            for run in gone {
                let _ = std::fs::remove_file(self.cron_log(run));
            }
        }
    }

    // ---- what the API asks ----

    async fn live_or_not_found(&self, app: &str, environment: &str) -> Result<Live> {
        crate::check_environment(environment)?;
        self.live_jobs(app, environment).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "{app} is not running in {environment}: deploy it there first (`baton deploy DIR -e {environment}`)"
            ))
        })
    }

    /// `baton cron list`: the live release's jobs, their next tick and
    /// their last run.
    pub async fn cron_jobs(&self, app: &str, environment: &str) -> Result<Vec<CronJobView>> {
        let live = self.live_or_not_found(app, environment).await?;
        let now = baton_store::now_ms();
        let mut out = Vec::new();
        for (name, job) in live.jobs {
            let last_run = self
                .store
                .cron_runs(app, environment, &name, 1)
                .await?
                .into_iter()
                .next();
            out.push(CronJobView {
                next_run: Schedule::of(&job).ok().and_then(|s| s.next_after(now)),
                timezone: job.timezone.clone().unwrap_or_else(|| "UTC".into()),
                timeout: humantime::format_duration(job.timeout).to_string(),
                name,
                schedule: job.schedule,
                command: job.command,
                overlap: job.overlap,
                missed: job.missed,
                last_run,
            });
        }
        Ok(out)
    }

    fn known_job<'a>(
        live: &'a Live,
        app: &str,
        environment: &str,
        name: &str,
    ) -> Result<&'a CronJob> {
        live.jobs.get(name).ok_or_else(|| {
            let known: Vec<&str> = live.jobs.keys().map(String::as_str).collect();
            Error::NotFound(format!(
                "{app}'s live release in {environment} has no cron job {name:?} (it has: {}); `baton cron list {app} -e {environment}`",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        })
    }

    /// `baton cron history`: a job's runs, newest first.
    pub async fn cron_history(
        &self,
        app: &str,
        environment: &str,
        name: &str,
        limit: i64,
    ) -> Result<Vec<CronRun>> {
        crate::check_environment(environment)?;
        Ok(self
            .store
            .cron_runs(app, environment, name, limit.clamp(1, 1000))
            .await?)
    }

    /// One run of a job, and its output from `offset` (at most 64 KiB).
    pub async fn cron_run_output(
        &self,
        app: &str,
        environment: &str,
        name: &str,
        id: i64,
        offset: u64,
    ) -> Result<CronRunOutput> {
        let run = self.store.cron_run(id).await?;
        if run.app != app || run.environment != environment || run.job != name {
            return Err(Error::NotFound(format!(
                "{app}'s cron job {name} in {environment} has no run {id}"
            )));
        }
        let (output, next_offset) = read_from(&self.cron_log(id), offset, 64 * 1024);
        Ok(CronRunOutput {
            run,
            output,
            next_offset,
        })
    }

    async fn claim_manual_run(
        &self,
        app: &str,
        environment: &str,
        name: &str,
        live: &Live,
        actor: &crate::Actor,
    ) -> Result<(i64, i64)> {
        let entry = actor.entry(
            "cron.run",
            format!("cron job {name} of {app}/{environment}"),
            app,
            environment,
            serde_json::json!({ "job": name, "release": live.release.id }),
        );
        self.store.record_audit(&entry).await?;
        let at = baton_store::now_ms();
        let id = self
            .store
            .claim_cron_run(&NewCronRun {
                app,
                environment,
                job: name,
                scheduled_at: at,
                manual: true,
                release_id: Some(&live.release.id),
                state: CronState::Running,
                detail: Some(&format!("run by hand by {}", actor.name)),
            })
            .await?
            .ok_or_else(|| Error::Internal("the manual run was not recorded".into()))?;
        Ok((id, at))
    }

    /// `baton cron run`: the job now, in the live release, recorded as a
    /// manual run (audited); refused while a run of it is under way.
    pub async fn run_cron_now(
        self: &Arc<Self>,
        app: &str,
        environment: &str,
        name: &str,
        actor: &crate::Actor,
    ) -> Result<CronRun> {
        let live = self.live_or_not_found(app, environment).await?;
        let job = Self::known_job(&live, app, environment, name)?.clone();
        let key: JobKey = (app.to_string(), environment.to_string(), name.to_string());
        // Taken at once (the scheduler may look meanwhile): run 0 stands
        // for this one until it has its id.
        let busy = self.cron.with(&key, |s| match s.running {
            Some(running) => Some(running),
            None => {
                s.running = Some(0);
                None
            }
        });
        if let Some(running) = busy {
            return Err(Error::Refused(format!(
                "run {running} of {name} is still under way; wait for it (`baton cron history {app} {name} -e {environment}`)"
            )));
        }
        let claimed = self
            .claim_manual_run(app, environment, name, &live, actor)
            .await;
        let (id, at) = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                self.cron.with(&key, |s| s.running = None);
                return Err(e);
            }
        };
        self.cron.with(&key, |s| s.running = Some(id));
        self.spawn_cron_run(key, id, at, job, live.release.clone(), live.config);
        Ok(self.store.cron_run(id).await?)
    }
}

/// Up to `max` bytes of `path` from `offset` (nothing if it is missing),
/// cut at a character boundary; and the offset after them.
fn read_from(path: &std::path::Path, offset: u64, max: usize) -> (String, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return (String::new(), offset);
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return (String::new(), offset);
    }
    let mut bytes = Vec::new();
    let _ = file.take(max as u64).read_to_end(&mut bytes);
    let mut end = bytes.len();
    while end > 0 && std::str::from_utf8(&bytes[..end]).is_err() && bytes.len() - end < 4 {
        end -= 1;
    }
    let text = String::from_utf8_lossy(&bytes[..end]).into_owned();
    (text, offset + end as u64)
}

fn noted<T>(written: baton_store::Result<T>) {
    crate::noted(written, "a cron run");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(text: &str, zone: Option<&str>) -> Schedule {
        Schedule::of(&CronJob {
            schedule: text.into(),
            timezone: zone.map(str::to_string),
            command: "true".into(),
            timeout: Duration::from_secs(60),
            overlap: Overlap::Skip,
            missed: Missed::RunOnce,
        })
        .unwrap()
    }

    fn ms(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn the_next_tick_follows_the_schedule_in_its_zone() {
        let every_5 = schedule("*/5 * * * *", None);
        assert_eq!(
            every_5.next_after(ms("2026-01-01T10:02:30Z")),
            Some(ms("2026-01-01T10:05:00Z"))
        );
        assert_eq!(
            every_5.next_after(ms("2026-01-01T10:05:00Z")),
            Some(ms("2026-01-01T10:10:00Z"))
        );
        // 03:00 in Paris is 02:00 UTC in winter.
        let paris = schedule("0 3 * * *", Some("Europe/Paris"));
        assert_eq!(
            paris.next_after(ms("2026-01-01T00:00:00Z")),
            Some(ms("2026-01-01T02:00:00Z"))
        );
        let seconds = schedule("*/2 * * * * *", None);
        assert_eq!(
            seconds.next_after(ms("2026-01-01T10:00:01.500Z")),
            Some(ms("2026-01-01T10:00:02Z"))
        );
    }

    #[test]
    fn an_on_time_tick_runs_once_and_then_nothing_is_due() {
        let s = schedule("*/2 * * * * *", None);
        let cursor = ms("2026-01-01T10:00:00Z");
        let now = ms("2026-01-01T10:00:02.200Z");
        let due = due(&s, cursor, now, Missed::Skip);
        assert_eq!(
            due,
            Due {
                run: Some(ms("2026-01-01T10:00:02Z")),
                missed: vec![]
            }
        );
        assert_eq!(
            super::due(&s, due.newest().unwrap(), now + 500, Missed::Skip),
            Due::default()
        );
    }

    #[test]
    fn after_a_gap_only_the_latest_tick_runs_the_others_are_missed() {
        let s = schedule("*/2 * * * * *", None);
        let cursor = ms("2026-01-01T10:00:00Z");
        let now = ms("2026-01-01T10:00:07Z");
        let due = due(&s, cursor, now, Missed::RunOnce);
        assert_eq!(due.run, Some(ms("2026-01-01T10:00:06Z")));
        assert_eq!(
            due.missed,
            vec![ms("2026-01-01T10:00:02Z"), ms("2026-01-01T10:00:04Z")]
        );
    }

    #[test]
    fn the_missed_policy_decides_a_late_tick() {
        let s = schedule("0 * * * *", None);
        let cursor = ms("2026-01-01T08:00:00Z");
        let now = ms("2026-01-01T10:20:00Z");
        let run_once = due(&s, cursor, now, Missed::RunOnce);
        assert_eq!(run_once.run, Some(ms("2026-01-01T10:00:00Z")));
        assert_eq!(run_once.missed, vec![ms("2026-01-01T09:00:00Z")]);
        let skip = due(&s, cursor, now, Missed::Skip);
        assert_eq!(skip.run, None);
        assert_eq!(
            skip.missed,
            vec![ms("2026-01-01T09:00:00Z"), ms("2026-01-01T10:00:00Z")]
        );
        // Beyond the catch-up window even run_once runs nothing.
        let daily = schedule("0 3 * * *", None);
        let stale = due(
            &daily,
            ms("2026-01-01T03:00:00Z"),
            ms("2026-01-03T05:00:00Z"),
            Missed::RunOnce,
        );
        assert_eq!(stale.run, None);
        assert_eq!(
            stale.missed,
            vec![ms("2026-01-02T03:00:00Z"), ms("2026-01-03T03:00:00Z")]
        );
    }

    #[test]
    fn a_long_gap_records_a_bounded_number_of_missed_ticks() {
        let s = schedule("* * * * * *", None);
        let cursor = ms("2026-01-01T00:00:00Z");
        let now = ms("2026-01-08T00:00:00Z");
        let due = due(&s, cursor, now, Missed::RunOnce);
        assert_eq!(due.run, Some(now));
        assert!(due.missed.len() <= MAX_MISSED);
        assert!(due.missed.windows(2).all(|w| w[0] < w[1]));
        assert!(due.missed.iter().all(|t| *t > cursor && *t < now));
    }

    #[test]
    fn overlap_skips_or_queues_a_bounded_number() {
        assert_eq!(overlap(Overlap::Skip, false, 0), Start::Now);
        assert_eq!(overlap(Overlap::Skip, true, 0), Start::Skip);
        assert_eq!(overlap(Overlap::Queue, true, 0), Start::Queue);
        assert_eq!(overlap(Overlap::Queue, true, MAX_QUEUED), Start::Skip);
    }
}
