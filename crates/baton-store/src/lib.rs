//! Baton's records: releases, deployments and their steps, targets, routes
//! and events, in SQLite. The store is the single source of truth that a
//! restarted server rebuilds itself from. It only reads and writes records:
//! it never decides anything and never talks to processes or the proxy.
//! Every multi-row change happens in one transaction, so a crash leaves each
//! record either as it was or as it was meant to be.

mod accounts;
mod audit;
mod certificates;
mod config;
mod cron;
mod flags;
mod lifecycle;
mod pipeline;
mod records;

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

pub use accounts::{SessionRecord, TokenRecord, UserRecord};
pub use audit::{AuditCursor, AuditFilter, AuditValues};
pub use certificates::CertificateRecord;
pub use config::{ConfigKey, ConfigVersion, KeyError};
pub use cron::{CronRun, NewCronRun};
pub use flags::{Actor, ApiKeyRecord, AuditEntry, FlagChange, FlagExpectation, FlagRecord};
pub use lifecycle::ReleaseUse;
pub use pipeline::{
    Announcement, Build, BuildStep, NewBuild, NewNotification, Notification, Promotion,
    ReleaseNote, ReviewApp,
};
pub use records::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Config values that cannot be sealed or opened (the key).
    #[error("{0}")]
    Sealed(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What kind of failure an error is, whatever crate raised it: the one
/// thing an edge (API, dashboard, CLI) needs to decide how to answer.
/// Errors keep domain names and their causes; each says its fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// What was asked for is malformed or not allowed as it stands.
    Invalid,
    /// Something named does not exist.
    NotFound,
    /// It cannot be done now, as things are (another deployment runs, it
    /// is live already, a gate holds it).
    Refused,
    /// Baton failed (the store, the runtime): not the caller's doing.
    Internal,
}

impl StoreError {
    pub fn fault(&self) -> Fault {
        match self {
            StoreError::NotFound(_) => Fault::NotFound,
            StoreError::Conflict(_) => Fault::Refused,
            StoreError::Open { .. } | StoreError::Query(_) | StoreError::Sealed(_) => {
                Fault::Internal
            }
        }
    }
}

/// Milliseconds since the Unix epoch: the one time format in the store.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS releases (
    id          TEXT PRIMARY KEY,
    app         TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    files       INTEGER NOT NULL,
    manifest    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS releases_app ON releases (app, created_at);
CREATE TABLE IF NOT EXISTS deployments (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    app              TEXT NOT NULL,
    environment      TEXT NOT NULL,
    release_id       TEXT NOT NULL REFERENCES releases (id),
    kind             TEXT NOT NULL,
    state            TEXT NOT NULL,
    error            TEXT,
    previous_release TEXT,
    target_id        INTEGER,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
CREATE INDEX IF NOT EXISTS deployments_app ON deployments (app, environment, id);
CREATE TABLE IF NOT EXISTS deployment_steps (
    deployment_id INTEGER NOT NULL REFERENCES deployments (id),
    seq           INTEGER NOT NULL,
    step          TEXT NOT NULL,
    state         TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    detail        TEXT,
    PRIMARY KEY (deployment_id, seq)
);
CREATE TABLE IF NOT EXISTS targets (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    app           TEXT NOT NULL,
    environment   TEXT NOT NULL,
    release_id    TEXT NOT NULL REFERENCES releases (id),
    deployment_id INTEGER,
    port          INTEGER NOT NULL,
    handle        TEXT,
    state         TEXT NOT NULL,
    restarts      INTEGER NOT NULL DEFAULT 0,
    warm_until    INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS targets_state ON targets (state);
CREATE TABLE IF NOT EXISTS routes (
    app            TEXT NOT NULL,
    environment    TEXT NOT NULL,
    hosts          TEXT NOT NULL,
    preview_hosts  TEXT NOT NULL,
    hold_timeout_ms INTEGER NOT NULL,
    live_target    INTEGER,
    preview_target INTEGER,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (app, environment)
);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    app         TEXT NOT NULL,
    environment TEXT NOT NULL,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_app ON events (app, id);
"#;

/// Changes to the schema after its first version, applied in order at open.
/// SQLite's `user_version` counts those already applied. Never edit one
/// that has shipped: add another.
const MIGRATIONS: &[&str] = &[
    "ALTER TABLE releases ADD COLUMN image TEXT",
    "ALTER TABLE targets ADD COLUMN runtime TEXT NOT NULL DEFAULT 'process'",
    "CREATE TABLE contracts (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        app           TEXT NOT NULL,
        environment   TEXT NOT NULL,
        release_id    TEXT NOT NULL REFERENCES releases (id),
        deployment_id INTEGER NOT NULL REFERENCES deployments (id),
        scripts       TEXT NOT NULL,
        state         TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        finished_at   INTEGER,
        detail        TEXT
    );
    CREATE INDEX contracts_app ON contracts (app, environment, state)",
    accounts::ACCOUNTS_SCHEMA,
    "ALTER TABLE deployments ADD COLUMN actor TEXT",
    flags::FLAGS_SCHEMA,
    pipeline::PIPELINE_SCHEMA,
    "ALTER TABLE users ADD COLUMN apps TEXT",
    flags::API_KEY_ORIGINS,
    // A contract applied by hand (`baton db migrate`) names who applied it,
    // and may belong to no release or deployment (nothing ran there yet).
    "CREATE TABLE contracts_new (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        app           TEXT NOT NULL,
        environment   TEXT NOT NULL,
        release_id    TEXT REFERENCES releases (id),
        deployment_id INTEGER REFERENCES deployments (id),
        scripts       TEXT NOT NULL,
        state         TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        finished_at   INTEGER,
        detail        TEXT,
        actor         TEXT
    );
    INSERT INTO contracts_new (id, app, environment, release_id, deployment_id, scripts, state, created_at, finished_at, detail)
        SELECT id, app, environment, release_id, deployment_id, scripts, state, created_at, finished_at, detail FROM contracts;
    DROP TABLE contracts;
    ALTER TABLE contracts_new RENAME TO contracts;
    CREATE INDEX contracts_app ON contracts (app, environment, state)",
    // `baton maintenance on`: the proxy answers 503 with the message.
    "CREATE TABLE maintenance (
        app         TEXT NOT NULL,
        environment TEXT NOT NULL,
        message     TEXT NOT NULL,
        since       INTEGER NOT NULL,
        PRIMARY KEY (app, environment)
    )",
    // HTTPS: the apps' certificates and the ACME accounts they come from.
    certificates::CERTIFICATES_SCHEMA,
    // `baton config set`: sealed config versions; the one a deployment ran with.
    config::CONFIG_SCHEMA,
    // `[processes.NAME]`: a target is the web process or a worker; `baton
    // scale` overrides the manifest's instances.
    "ALTER TABLE targets ADD COLUMN process TEXT NOT NULL DEFAULT 'web';
    CREATE TABLE scale (
        app         TEXT NOT NULL,
        environment TEXT NOT NULL,
        process     TEXT NOT NULL,
        instances   INTEGER NOT NULL,
        PRIMARY KEY (app, environment, process)
    )",
    // `[cron.NAME]`: every run of a job, a scheduled tick at most once.
    cron::CRON_SCHEMA,
];

/// A target about to start, as `create_target` records it.
#[derive(Debug, Clone, Copy)]
pub struct NewTarget<'a> {
    pub app: &'a str,
    pub environment: &'a str,
    pub release_id: &'a str,
    /// The deployment it belongs to.
    pub deployment_id: i64,
    /// Where the proxy reaches it; 0 for a worker.
    pub port: u16,
    /// `process` or `docker`.
    pub runtime: &'a str,
    /// `web`, or a worker's name.
    pub process: &'a str,
}

/// How many deployments of one kind ended (or stand) in one state.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentCount {
    pub app: String,
    pub environment: String,
    pub kind: String,
    pub state: String,
    pub count: u64,
    /// Seconds the finished ones took, in all.
    pub seconds: f64,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the store file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Store> {
        let open_error = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(open_error)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(open_error)?;
        let applied: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&pool)
            .await
            .map_err(open_error)?;
        for (n, change) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
            let mut tx = pool.begin().await.map_err(open_error)?;
            sqlx::raw_sql(change)
                .execute(&mut *tx)
                .await
                .map_err(open_error)?;
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", n + 1))
                .execute(&mut *tx)
                .await
                .map_err(open_error)?;
            tx.commit().await.map_err(open_error)?;
        }
        Ok(Store { pool })
    }

    // ---- releases ----

    /// Records a release; recording the same id again is a no-op and returns
    /// the existing record with `created == false`.
    pub async fn put_release(&self, release: &Release) -> Result<(Release, bool)> {
        let inserted = sqlx::query(
            "INSERT INTO releases (id, app, created_at, size, files, manifest, image) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&release.id)
        .bind(&release.app)
        .bind(release.created_at)
        .bind(release.size)
        .bind(release.files)
        .bind(&release.manifest)
        .bind(&release.image)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let stored = self.release(&release.id).await?;
        if stored.app != release.app {
            return Err(StoreError::Conflict(format!(
                "release {} already belongs to app {}",
                stored.id, stored.app
            )));
        }
        Ok((stored, inserted))
    }

    /// Records the image of a release whose image had to be built again
    /// (it had been pruned from the engine).
    pub async fn set_release_image(&self, id: &str, image: &str) -> Result<()> {
        sqlx::query("UPDATE releases SET image = ? WHERE id = ?")
            .bind(image)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn release(&self, id: &str) -> Result<Release> {
        let row = sqlx::query("SELECT * FROM releases WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Release::from_row(&r))
            .ok_or_else(|| StoreError::NotFound(format!("no release {id}")))
    }

    /// Finds a release of `app` by its full id or an unambiguous prefix.
    pub async fn find_release(&self, app: &str, prefix: &str) -> Result<Release> {
        let pattern = format!("{}%", prefix.replace(['%', '_'], ""));
        let rows = sqlx::query("SELECT * FROM releases WHERE app = ? AND id LIKE ? LIMIT 2")
            .bind(app)
            .bind(pattern)
            .fetch_all(&self.pool)
            .await?;
        match rows.len() {
            0 => Err(StoreError::NotFound(format!(
                "app {app} has no release {prefix:?}; `baton releases {app}` lists them"
            ))),
            1 => Ok(Release::from_row(&rows[0])),
            _ => Err(StoreError::Conflict(format!(
                "{prefix:?} matches several releases of {app}; give more of the id"
            ))),
        }
    }

    pub async fn releases(&self, app: &str) -> Result<Vec<Release>> {
        let rows = sqlx::query("SELECT * FROM releases WHERE app = ? ORDER BY created_at DESC, id")
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(Release::from_row).collect())
    }

    pub async fn apps(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT app FROM releases ORDER BY app")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    // ---- deployments ----

    /// Records a new running deployment, refusing if one is already running
    /// for the same app and environment, and its audit entry (`action` by
    /// `actor`, with `detail`) in the same transaction: there is no
    /// deployment without its entry, whoever started it.
    #[allow(clippy::too_many_arguments)]
    pub async fn begin_deployment(
        &self,
        app: &str,
        environment: &str,
        release_id: &str,
        kind: DeploymentKind,
        previous_release: Option<&str>,
        config_version: Option<i64>,
        actor: &Actor,
        action: &str,
        detail: serde_json::Value,
    ) -> Result<Deployment> {
        // IMMEDIATE: a deferred transaction that reads, then writes after
        // another connection wrote, fails at once with SQLITE_BUSY instead
        // of waiting out the busy timeout.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let running: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, state FROM deployments WHERE app = ? AND environment = ? AND state IN ('running', 'previewing') LIMIT 1",
        )
        .bind(app)
        .bind(environment)
        .fetch_optional(&mut *tx)
        .await?;
        match running {
            Some((id, state)) if state == "previewing" => {
                return Err(StoreError::Conflict(format!(
                    "deployment {id} of {app} to {environment} is paused in preview; first `baton continue {id}` to switch to it, or `baton abort {id}` to drop it"
                )))
            }
            Some((id, _)) => {
                return Err(StoreError::Conflict(format!(
                    "deployment {id} of {app} to {environment} is still running; wait for it or follow it with `baton deployments {app}`"
                )))
            }
            None => {}
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO deployments (app, environment, release_id, kind, state, previous_release, created_at, actor, config_version)
             VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?) RETURNING id",
        )
        .bind(app)
        .bind(environment)
        .bind(release_id)
        .bind(kind.as_str())
        .bind(previous_release)
        .bind(now_ms())
        .bind(&actor.name)
        .bind(config_version)
        .fetch_one(&mut *tx)
        .await?;
        let entry = actor.entry(action, format!("deployment {id}"), app, environment, detail);
        flags::audit(&mut tx, &entry).await?;
        tx.commit().await?;
        self.deployment(id).await
    }

    pub async fn deployment(&self, id: i64) -> Result<Deployment> {
        let row = sqlx::query("SELECT * FROM deployments WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no deployment {id}")))?;
        let mut deployment = Deployment::from_row(&row);
        let steps =
            sqlx::query("SELECT * FROM deployment_steps WHERE deployment_id = ? ORDER BY seq")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        deployment.steps = steps.iter().map(Step::from_row).collect();
        Ok(deployment)
    }

    pub async fn deployments(&self, app: &str, limit: i64) -> Result<Vec<Deployment>> {
        let rows = sqlx::query("SELECT id FROM deployments WHERE app = ? ORDER BY id DESC LIMIT ?")
            .bind(app)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.deployment(row.get(0)).await?);
        }
        Ok(out)
    }

    /// Deployments left running or previewing by a server that stopped.
    pub async fn unfinished_deployments(&self) -> Result<Vec<Deployment>> {
        let rows = sqlx::query(
            "SELECT id FROM deployments WHERE state IN ('running', 'previewing') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.deployment(row.get(0)).await?);
        }
        Ok(out)
    }

    /// Records which target the deployment puts live (before it is switched to).
    pub async fn set_deployment_target(&self, id: i64, target: i64) -> Result<()> {
        sqlx::query("UPDATE deployments SET target_id = ? WHERE id = ?")
            .bind(target)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that a step is about to be taken; returns its sequence number.
    pub async fn begin_step(
        &self,
        deployment: i64,
        step: StepKind,
        detail: Option<&str>,
    ) -> Result<i64> {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO deployment_steps (deployment_id, seq, step, state, started_at, detail)
             VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM deployment_steps WHERE deployment_id = ?), ?, 'running', ?, ?)
             RETURNING seq",
        )
        .bind(deployment)
        .bind(deployment)
        .bind(step.as_str())
        .bind(now_ms())
        .bind(detail)
        .fetch_one(&self.pool)
        .await?;
        Ok(seq)
    }

    pub async fn end_step(
        &self,
        deployment: i64,
        seq: i64,
        state: StepState,
        detail: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE deployment_steps SET state = ?, finished_at = ?, detail = COALESCE(?, detail)
             WHERE deployment_id = ? AND seq = ?",
        )
        .bind(state.as_str())
        .bind(now_ms())
        .bind(detail)
        .bind(deployment)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_deployment_state(
        &self,
        id: i64,
        state: DeploymentState,
        error: Option<&str>,
    ) -> Result<()> {
        let finished =
            matches!(state, DeploymentState::Succeeded | DeploymentState::Failed).then(now_ms);
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE deployments SET state = ?, error = COALESCE(?, error), finished_at = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(error)
            .bind(finished)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if finished.is_some() {
            // A step still marked running when its deployment ends was cut short.
            sqlx::query(
                "UPDATE deployment_steps SET state = 'failed', finished_at = ? WHERE deployment_id = ? AND state = 'running'",
            )
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- targets ----

    pub async fn create_target(&self, new: &NewTarget<'_>) -> Result<TargetRecord> {
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO targets (app, environment, release_id, deployment_id, port, runtime, process, state, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'starting', ?, ?) RETURNING id",
        )
        .bind(new.app)
        .bind(new.environment)
        .bind(new.release_id)
        .bind(new.deployment_id)
        .bind(new.port as i64)
        .bind(new.runtime)
        .bind(new.process)
        .bind(now)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        self.target(id).await
    }

    pub async fn target(&self, id: i64) -> Result<TargetRecord> {
        let row = sqlx::query("SELECT * FROM targets WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no target {id}")))?;
        Ok(TargetRecord::from_row(&row))
    }

    pub async fn set_target_handle(&self, id: i64, handle: &str) -> Result<()> {
        sqlx::query("UPDATE targets SET handle = ?, updated_at = ? WHERE id = ?")
            .bind(handle)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_target_state(
        &self,
        id: i64,
        state: TargetState,
        warm_until: Option<i64>,
    ) -> Result<()> {
        sqlx::query("UPDATE targets SET state = ?, warm_until = ?, updated_at = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(warm_until)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn count_restart(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE targets SET restarts = restarts + 1, updated_at = ? WHERE id = ?")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Targets that may have a process running: everything not stopped or failed.
    pub async fn active_targets(&self) -> Result<Vec<TargetRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM targets WHERE state NOT IN ('stopped', 'failed') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(TargetRecord::from_row).collect())
    }

    pub async fn targets_of(&self, app: &str, environment: &str) -> Result<Vec<TargetRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM targets WHERE app = ? AND environment = ? AND state NOT IN ('stopped', 'failed') ORDER BY id",
        )
        .bind(app)
        .bind(environment)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(TargetRecord::from_row).collect())
    }

    // ---- contract migrations ----

    /// Records the contract half left by a successful deployment, dropping
    /// any still pending for the app and environment (one transaction).
    pub async fn put_contract(
        &self,
        app: &str,
        environment: &str,
        release_id: &str,
        deployment_id: i64,
        scripts: &[String],
    ) -> Result<Contract> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        sqlx::query(
            "UPDATE contracts SET state = 'dropped', finished_at = ?, detail = ? WHERE app = ? AND environment = ? AND state = 'pending'",
        )
        .bind(now)
        .bind(format!("deployment {deployment_id} went live first"))
        .bind(app)
        .bind(environment)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "INSERT INTO contracts (app, environment, release_id, deployment_id, scripts, state, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?) RETURNING *",
        )
        .bind(app)
        .bind(environment)
        .bind(release_id)
        .bind(deployment_id)
        .bind(serde_json::to_string(scripts).unwrap_or_else(|_| "[]".into()))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Contract::from_row(&row))
    }

    /// Records contract migrations applied by hand (`baton db migrate`) as
    /// applied, before they are run, with their audit entry, in one
    /// transaction: from then on a release lacking them is neither deployed
    /// nor rolled back to, as for contracts the server applied. A pending
    /// contract of the same release whose scripts are all among them is
    /// applied with it. `release_id` and `deployment_id` are those live in
    /// the environment, if any.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_contract_by_hand(
        &self,
        app: &str,
        environment: &str,
        release_id: Option<&str>,
        deployment_id: Option<i64>,
        scripts: &[String],
        detail: &str,
        audit_entry: &AuditEntry,
    ) -> Result<Contract> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let pending = sqlx::query(
            "SELECT * FROM contracts WHERE app = ? AND environment = ? AND state = 'pending'",
        )
        .bind(app)
        .bind(environment)
        .fetch_all(&mut *tx)
        .await?;
        for row in pending.iter().map(Contract::from_row) {
            let covered = row.scripts.iter().all(|s| scripts.contains(s));
            if covered && row.release_id.as_deref() == release_id {
                sqlx::query(
                    "UPDATE contracts SET state = 'applied', finished_at = ?, detail = ?, actor = ? WHERE id = ?",
                )
                .bind(now)
                .bind(detail)
                .bind(&audit_entry.actor)
                .bind(row.id)
                .execute(&mut *tx)
                .await?;
            }
        }
        let row = sqlx::query(
            "INSERT INTO contracts (app, environment, release_id, deployment_id, scripts, state, created_at, finished_at, detail, actor)
             VALUES (?, ?, ?, ?, ?, 'applied', ?, ?, ?, ?) RETURNING *",
        )
        .bind(app)
        .bind(environment)
        .bind(release_id)
        .bind(deployment_id)
        .bind(serde_json::to_string(scripts).unwrap_or_else(|_| "[]".into()))
        .bind(now)
        .bind(now)
        .bind(detail)
        .bind(&audit_entry.actor)
        .fetch_one(&mut *tx)
        .await?;
        flags::audit(&mut tx, audit_entry).await?;
        tx.commit().await?;
        Ok(Contract::from_row(&row))
    }

    /// Drops the pending contract of an app and environment, saying why.
    pub async fn drop_pending_contracts(
        &self,
        app: &str,
        environment: &str,
        why: &str,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE contracts SET state = 'dropped', finished_at = ?, detail = ? WHERE app = ? AND environment = ? AND state = 'pending'",
        )
        .bind(now_ms())
        .bind(why)
        .bind(app)
        .bind(environment)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Every pending contract, oldest first.
    pub async fn pending_contracts(&self) -> Result<Vec<Contract>> {
        let rows = sqlx::query("SELECT * FROM contracts WHERE state = 'pending' ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(Contract::from_row).collect())
    }

    /// The contracts of an app and environment, newest first.
    pub async fn contracts(&self, app: &str, environment: &str) -> Result<Vec<Contract>> {
        let rows = sqlx::query(
            "SELECT * FROM contracts WHERE app = ? AND environment = ? ORDER BY id DESC",
        )
        .bind(app)
        .bind(environment)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(Contract::from_row).collect())
    }

    /// Ends a pending contract; a no-op (returning false) when it is no
    /// longer pending.
    pub async fn finish_contract(
        &self,
        id: i64,
        state: ContractState,
        detail: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE contracts SET state = ?, finished_at = ?, detail = ? WHERE id = ? AND state = 'pending'",
        )
        .bind(state.as_str())
        .bind(now_ms())
        .bind(detail)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- routes ----

    pub async fn put_route(&self, route: &RouteRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO routes (app, environment, hosts, preview_hosts, hold_timeout_ms, live_target, preview_target, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (app, environment) DO UPDATE SET hosts = excluded.hosts, preview_hosts = excluded.preview_hosts,
               hold_timeout_ms = excluded.hold_timeout_ms, live_target = excluded.live_target,
               preview_target = excluded.preview_target, updated_at = excluded.updated_at",
        )
        .bind(&route.app)
        .bind(&route.environment)
        .bind(serde_json::to_string(&route.hosts).unwrap_or_default())
        .bind(serde_json::to_string(&route.preview_hosts).unwrap_or_default())
        .bind(route.hold_timeout_ms)
        .bind(route.live_target)
        .bind(route.preview_target)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `baton stop`: the route keeps its hosts but sends them nowhere, with
    /// its audit entry, in one transaction.
    pub async fn stop_route(&self, app: &str, environment: &str, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE routes SET live_target = NULL, preview_target = NULL, updated_at = ?
             WHERE app = ? AND environment = ?",
        )
        .bind(now_ms())
        .bind(app)
        .bind(environment)
        .execute(&mut *tx)
        .await?;
        flags::audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Puts an app's environment in maintenance with `message`, or out of
    /// it (`None`), with its audit entry, in one transaction.
    pub async fn set_maintenance(
        &self,
        app: &str,
        environment: &str,
        message: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        match message {
            Some(message) => {
                sqlx::query(
                    "INSERT INTO maintenance (app, environment, message, since) VALUES (?, ?, ?, ?)
                     ON CONFLICT (app, environment) DO UPDATE SET message = excluded.message",
                )
                .bind(app)
                .bind(environment)
                .bind(message)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM maintenance WHERE app = ? AND environment = ?")
                    .bind(app)
                    .bind(environment)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        flags::audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every app and environment in maintenance: (app, environment, message).
    pub async fn maintenance(&self) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query("SELECT app, environment, message FROM maintenance")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("app"), r.get("environment"), r.get("message")))
            .collect())
    }

    pub async fn routes(&self) -> Result<Vec<RouteRecord>> {
        let rows = sqlx::query("SELECT * FROM routes ORDER BY app, environment")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(RouteRecord::from_row).collect())
    }

    pub async fn route(&self, app: &str, environment: &str) -> Result<Option<RouteRecord>> {
        let row = sqlx::query("SELECT * FROM routes WHERE app = ? AND environment = ?")
            .bind(app)
            .bind(environment)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(RouteRecord::from_row))
    }

    /// Deployments by app, environment, kind and state, with the seconds
    /// the finished ones took in all: the control plane's figures.
    pub async fn deployment_counts(&self) -> Result<Vec<DeploymentCount>> {
        let rows = sqlx::query(
            "SELECT app, environment, kind, state, COUNT(*) AS n,
                    COALESCE(SUM(finished_at - created_at), 0) AS took_ms
             FROM deployments GROUP BY app, environment, kind, state ORDER BY app, environment, kind, state",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| DeploymentCount {
                app: r.get("app"),
                environment: r.get("environment"),
                kind: r.get("kind"),
                state: r.get("state"),
                count: r.get::<i64, _>("n").max(0) as u64,
                seconds: r.get::<i64, _>("took_ms").max(0) as f64 / 1000.0,
            })
            .collect())
    }

    /// Pipeline builds by app and state, and notifications by channel,
    /// event kind and state: the rest of the control plane's figures.
    pub async fn pipeline_counts(
        &self,
    ) -> Result<(
        Vec<(String, String, u64)>,
        Vec<(String, String, String, u64)>,
    )> {
        let builds = sqlx::query(
            "SELECT COALESCE(app, '') AS app, state, COUNT(*) AS n FROM builds GROUP BY app, state ORDER BY app, state",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| (r.get("app"), r.get("state"), r.get::<i64, _>("n").max(0) as u64))
        .collect();
        let notifications = sqlx::query(
            "SELECT channel, event_kind, state, COUNT(*) AS n FROM notifications GROUP BY channel, event_kind, state ORDER BY channel, event_kind, state",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            (
                r.get("channel"),
                r.get("event_kind"),
                r.get("state"),
                r.get::<i64, _>("n").max(0) as u64,
            )
        })
        .collect();
        Ok((builds, notifications))
    }

    // ---- events ----

    pub async fn record_event(
        &self,
        app: &str,
        environment: &str,
        kind: EventKind,
        message: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO events (at, app, environment, kind, message) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(now_ms())
        .bind(app)
        .bind(environment)
        .bind(kind.as_str())
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn events(&self, app: &str, limit: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query("SELECT * FROM events WHERE app = ? ORDER BY id DESC LIMIT ?")
            .bind(app)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(Event::from_row).collect())
    }
}

#[cfg(test)]
mod tests;

impl Store {
    /// Instances of each process of `app` in `environment` set by `baton
    /// scale` (over the manifest's).
    pub async fn scale(&self, app: &str, environment: &str) -> Result<Vec<(String, u32)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT process, instances FROM scale WHERE app = ? AND environment = ? ORDER BY process",
        )
        .bind(app)
        .bind(environment)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(process, n)| (process, n.clamp(0, u32::MAX as i64) as u32))
            .collect())
    }

    /// Records `baton scale` with its audit entry, in one transaction.
    pub async fn set_scale(
        &self,
        app: &str,
        environment: &str,
        counts: &[(String, u32)],
        audit: &AuditEntry,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (process, instances) in counts {
            sqlx::query(
                "INSERT INTO scale (app, environment, process, instances) VALUES (?, ?, ?, ?)
                 ON CONFLICT (app, environment, process) DO UPDATE SET instances = excluded.instances",
            )
            .bind(app)
            .bind(environment)
            .bind(process)
            .bind(*instances as i64)
            .execute(&mut *tx)
            .await?;
        }
        flags::audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }
}
