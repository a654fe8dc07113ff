//! Cron runs (`[cron.NAME]` jobs): one row per scheduled tick or manual
//! run. A tick is claimed by inserting its row, under a unique index on
//! (app, environment, job, tick), before its command starts: a tick is
//! claimed once, whichever server, deploy or restart came in between.

use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{now_ms, CronState, Result, Store, StoreError};

pub(crate) const CRON_SCHEMA: &str = "CREATE TABLE cron_runs (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        app          TEXT NOT NULL,
        environment  TEXT NOT NULL,
        job          TEXT NOT NULL,
        scheduled_at INTEGER NOT NULL,
        manual       INTEGER NOT NULL DEFAULT 0,
        release_id   TEXT,
        state        TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        started_at   INTEGER,
        finished_at  INTEGER,
        exit_code    INTEGER,
        detail       TEXT
    );
    CREATE UNIQUE INDEX cron_ticks ON cron_runs (app, environment, job, scheduled_at) WHERE manual = 0;
    CREATE INDEX cron_runs_job ON cron_runs (app, environment, job, id)";

/// One run of a cron job, as `baton cron history` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CronRun {
    pub id: i64,
    pub app: String,
    pub environment: String,
    pub job: String,
    /// The tick it is for (a manual run: when it was asked for).
    pub scheduled_at: i64,
    /// Asked for with `baton cron run`, not by the schedule.
    pub manual: bool,
    /// The live release it ran in.
    pub release_id: Option<String>,
    pub state: CronState,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
    /// Why it was skipped, failed or interrupted.
    pub detail: Option<String>,
}

impl CronRun {
    fn from_row(r: &SqliteRow) -> Result<CronRun> {
        let state: String = r.get("state");
        Ok(CronRun {
            id: r.get("id"),
            app: r.get("app"),
            environment: r.get("environment"),
            job: r.get("job"),
            scheduled_at: r.get("scheduled_at"),
            manual: r.get::<i64, _>("manual") != 0,
            release_id: r.get("release_id"),
            state: CronState::parse(&state).ok_or_else(|| {
                StoreError::Conflict(format!("cron run in an unknown state {state:?}"))
            })?,
            created_at: r.get("created_at"),
            started_at: r.get("started_at"),
            finished_at: r.get("finished_at"),
            exit_code: r.get("exit_code"),
            detail: r.get("detail"),
        })
    }

    /// How long it ran, when it has ended.
    pub fn took_ms(&self) -> Option<i64> {
        Some(self.finished_at? - self.started_at?)
    }
}

/// A run about to be recorded.
#[derive(Debug, Clone)]
pub struct NewCronRun<'a> {
    pub app: &'a str,
    pub environment: &'a str,
    pub job: &'a str,
    pub scheduled_at: i64,
    pub manual: bool,
    pub release_id: Option<&'a str>,
    /// `Running` (its command starts next), `Queued` or `Skipped`.
    pub state: CronState,
    pub detail: Option<&'a str>,
}

impl Store {
    /// Records a run; `None` when its tick is recorded already (it ran,
    /// runs or was skipped: it is never run again).
    pub async fn claim_cron_run(&self, run: &NewCronRun<'_>) -> Result<Option<i64>> {
        let now = now_ms();
        let started = (run.state == CronState::Running).then_some(now);
        let finished = (run.state == CronState::Skipped).then_some(now);
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO cron_runs (app, environment, job, scheduled_at, manual, release_id, state, created_at, started_at, finished_at, detail)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(run.app)
        .bind(run.environment)
        .bind(run.job)
        .bind(run.scheduled_at)
        .bind(run.manual as i64)
        .bind(run.release_id)
        .bind(run.state.as_str())
        .bind(now)
        .bind(started)
        .bind(finished)
        .bind(run.detail)
        .fetch_optional(&self.pool)
        .await?;
        Ok(id)
    }

    /// A queued run starts, in `release`: false when it is no longer
    /// queued (a restart marked it interrupted).
    pub async fn start_queued_cron_run(&self, id: i64, release: &str) -> Result<bool> {
        let changed = sqlx::query(
            "UPDATE cron_runs SET state = 'running', started_at = ?, release_id = ? WHERE id = ? AND state = 'queued'",
        )
        .bind(now_ms())
        .bind(release)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    /// A run has ended (or was given up before it started).
    pub async fn finish_cron_run(
        &self,
        id: i64,
        state: CronState,
        exit_code: Option<i64>,
        detail: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE cron_runs SET state = ?, finished_at = ?, exit_code = ?, detail = COALESCE(?, detail) WHERE id = ?",
        )
        .bind(state.as_str())
        .bind(now_ms())
        .bind(exit_code)
        .bind(detail)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// At start-up: runs a previous server left running or queued are
    /// marked interrupted (their outcome is unknown), never run again.
    pub async fn interrupt_cron_runs(&self) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE cron_runs SET state = 'interrupted', finished_at = ?,
                 detail = 'Baton stopped while it was ' || state || '; its outcome is unknown and it is not run again'
             WHERE state IN ('running', 'queued')",
        )
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// The latest tick recorded for a job (run, skipped or interrupted).
    pub async fn last_cron_tick(
        &self,
        app: &str,
        environment: &str,
        job: &str,
    ) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(scheduled_at) FROM cron_runs WHERE app = ? AND environment = ? AND job = ? AND manual = 0",
        )
        .bind(app)
        .bind(environment)
        .bind(job)
        .fetch_one(&self.pool)
        .await?)
    }

    /// A job's runs, newest first.
    pub async fn cron_runs(
        &self,
        app: &str,
        environment: &str,
        job: &str,
        limit: i64,
    ) -> Result<Vec<CronRun>> {
        let rows = sqlx::query(
            "SELECT * FROM cron_runs WHERE app = ? AND environment = ? AND job = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(app)
        .bind(environment)
        .bind(job)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(CronRun::from_row).collect()
    }

    pub async fn cron_run(&self, id: i64) -> Result<CronRun> {
        let row = sqlx::query("SELECT * FROM cron_runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => CronRun::from_row(&row),
            None => Err(StoreError::NotFound(format!("no cron run {id}"))),
        }
    }

    /// The ids of an app's cron runs (in `environment`, when given): their
    /// logs are the app's files.
    pub async fn cron_run_ids_of(&self, app: &str, environment: Option<&str>) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM cron_runs WHERE app = ?1 AND (?2 IS NULL OR environment = ?2)",
        )
        .bind(app)
        .bind(environment)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Forgets a job's runs beyond its newest `keep`; returns their ids
    /// (their logs go too).
    pub async fn prune_cron_runs(
        &self,
        app: &str,
        environment: &str,
        job: &str,
        keep: i64,
    ) -> Result<Vec<i64>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM cron_runs WHERE app = ? AND environment = ? AND job = ?
               AND state NOT IN ('running', 'queued')
               AND id NOT IN (SELECT id FROM cron_runs WHERE app = ? AND environment = ? AND job = ? ORDER BY id DESC LIMIT ?)
             RETURNING id",
        )
        .bind(app)
        .bind(environment)
        .bind(job)
        .bind(app)
        .bind(environment)
        .bind(job)
        .bind(keep)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(at: i64, manual: bool) -> NewCronRun<'static> {
        NewCronRun {
            app: "shop",
            environment: "production",
            job: "backup",
            scheduled_at: at,
            manual,
            release_id: Some("abc"),
            state: CronState::Running,
            detail: None,
        }
    }

    #[tokio::test]
    async fn a_tick_is_claimed_once_and_an_unfinished_run_is_interrupted_not_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("baton.db")).await.unwrap();
        let first = store.claim_cron_run(&tick(1_000, false)).await.unwrap();
        assert!(first.is_some());
        assert_eq!(
            store.claim_cron_run(&tick(1_000, false)).await.unwrap(),
            None
        );
        // Runs by hand are not ticks: two at the same time are both kept.
        assert!(store
            .claim_cron_run(&tick(1_000, true))
            .await
            .unwrap()
            .is_some());
        assert!(store
            .claim_cron_run(&tick(1_000, true))
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            store
                .last_cron_tick("shop", "production", "backup")
                .await
                .unwrap(),
            Some(1_000)
        );
        assert_eq!(store.interrupt_cron_runs().await.unwrap(), 3);
        let run = store.cron_run(first.unwrap()).await.unwrap();
        assert_eq!(run.state, CronState::Interrupted);
        // Still claimed: a restarted server does not run it again.
        assert_eq!(
            store.claim_cron_run(&tick(1_000, false)).await.unwrap(),
            None
        );
    }
}
