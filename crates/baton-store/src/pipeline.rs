//! The pipeline's records: webhook deliveries (for de-duplication), builds
//! and their steps, review apps, notification deliveries, release notes,
//! announcements and promotions waiting for their gate. Like the rest of the
//! store, these only record; the pipeline crate decides.

use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{now_ms, Event, Result, Store, StoreError};

/// The pipeline's tables, one entry of the store's `MIGRATIONS`.
pub(crate) const PIPELINE_SCHEMA: &str = "
CREATE TABLE webhook_deliveries (
    delivery_id TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    event       TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE TABLE builds (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    repository  TEXT NOT NULL,
    clone_url   TEXT NOT NULL,
    git_ref     TEXT NOT NULL,
    commit_sha  TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    pr_number   INTEGER,
    app         TEXT,
    environment TEXT,
    state       TEXT NOT NULL,
    error       TEXT,
    release_id  TEXT,
    created_at  INTEGER NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER
);
CREATE TABLE build_steps (
    build_id    INTEGER NOT NULL REFERENCES builds (id),
    seq         INTEGER NOT NULL,
    name        TEXT NOT NULL,
    command     TEXT NOT NULL,
    state       TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    exit_code   INTEGER,
    detail      TEXT,
    PRIMARY KEY (build_id, seq)
);
CREATE TABLE review_apps (
    repository  TEXT NOT NULL,
    number      INTEGER NOT NULL,
    app         TEXT NOT NULL,
    environment TEXT NOT NULL,
    head_sha    TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    removed_at  INTEGER,
    PRIMARY KEY (repository, number)
);
CREATE TABLE notifications (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     INTEGER,
    channel      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    event_kind   TEXT NOT NULL,
    app          TEXT NOT NULL,
    environment  TEXT NOT NULL,
    subject      TEXT NOT NULL,
    body         TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    delivered_at INTEGER
);
CREATE UNIQUE INDEX notifications_event ON notifications (event_id, channel);
CREATE TABLE release_notes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    repository  TEXT NOT NULL,
    number      INTEGER NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    labels      TEXT NOT NULL,
    release_id  TEXT,
    created_at  INTEGER NOT NULL,
    UNIQUE (repository, number)
);
CREATE TABLE announcements (
    release_id      TEXT PRIMARY KEY,
    app             TEXT NOT NULL,
    notes           TEXT NOT NULL,
    notification_id INTEGER,
    sent_at         INTEGER,
    override_by     TEXT,
    override_reason TEXT,
    override_at     INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE TABLE promotions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    app           TEXT NOT NULL,
    release_id    TEXT NOT NULL,
    environment   TEXT NOT NULL,
    actor         TEXT NOT NULL,
    state         TEXT NOT NULL,
    deployment_id INTEGER,
    detail        TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE TABLE pipeline_cursors (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
)";

/// One build of one commit: checkout, build and test steps, package, deploy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Build {
    pub id: i64,
    pub repository: String,
    pub clone_url: String,
    pub git_ref: String,
    pub commit_sha: String,
    /// `push` or `pull_request`.
    pub trigger: String,
    pub pr_number: Option<i64>,
    /// Known once the commit's baton.toml was read.
    pub app: Option<String>,
    pub environment: Option<String>,
    /// `queued`, `running`, `passed`, `failed` or `skipped`.
    pub state: String,
    pub error: Option<String>,
    pub release_id: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    #[serde(default)]
    pub steps: Vec<BuildStep>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildStep {
    pub seq: i64,
    pub name: String,
    pub command: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
    pub detail: Option<String>,
}

/// What starts a build.
#[derive(Debug, Clone)]
pub struct NewBuild {
    pub repository: String,
    pub clone_url: String,
    pub git_ref: String,
    pub commit_sha: String,
    pub trigger: String,
    pub pr_number: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReviewApp {
    pub repository: String,
    pub number: i64,
    pub app: String,
    pub environment: String,
    pub head_sha: String,
    /// `live`, `closing` (its pull request closed, removal under way) or `removed`.
    pub state: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub removed_at: Option<i64>,
}

/// One message to one channel, and how its delivery went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    pub id: i64,
    pub event_id: Option<i64>,
    pub channel: String,
    pub kind: String,
    pub event_kind: String,
    pub app: String,
    pub environment: String,
    pub subject: String,
    pub body: String,
    /// `pending`, `delivered` or `failed` (every attempt failed).
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// A message to record before its first delivery attempt.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub event_id: Option<i64>,
    pub channel: String,
    pub kind: String,
    pub event_kind: String,
    pub app: String,
    pub environment: String,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseNote {
    pub id: i64,
    pub repository: String,
    pub number: i64,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub release_id: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Announcement {
    pub release_id: String,
    pub app: String,
    pub notes: String,
    pub notification_id: Option<i64>,
    pub sent_at: Option<i64>,
    pub override_by: Option<String>,
    pub override_reason: Option<String>,
    pub override_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Promotion {
    pub id: i64,
    pub app: String,
    pub release_id: String,
    pub environment: String,
    /// Who asked: a person, or `pipeline (build N)` for an automatic promotion.
    pub actor: String,
    /// `waiting` (for its announcement), `started`, `failed` or `cancelled`.
    pub state: String,
    pub deployment_id: Option<i64>,
    pub detail: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Build {
    fn from_row(r: &SqliteRow) -> Build {
        Build {
            id: r.get("id"),
            repository: r.get("repository"),
            clone_url: r.get("clone_url"),
            git_ref: r.get("git_ref"),
            commit_sha: r.get("commit_sha"),
            trigger: r.get("trigger"),
            pr_number: r.get("pr_number"),
            app: r.get("app"),
            environment: r.get("environment"),
            state: r.get("state"),
            error: r.get("error"),
            release_id: r.get("release_id"),
            created_at: r.get("created_at"),
            started_at: r.get("started_at"),
            finished_at: r.get("finished_at"),
            steps: Vec::new(),
        }
    }
}

impl ReviewApp {
    fn from_row(r: &SqliteRow) -> ReviewApp {
        ReviewApp {
            repository: r.get("repository"),
            number: r.get("number"),
            app: r.get("app"),
            environment: r.get("environment"),
            head_sha: r.get("head_sha"),
            state: r.get("state"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
            removed_at: r.get("removed_at"),
        }
    }
}

impl Notification {
    fn from_row(r: &SqliteRow) -> Notification {
        Notification {
            id: r.get("id"),
            event_id: r.get("event_id"),
            channel: r.get("channel"),
            kind: r.get("kind"),
            event_kind: r.get("event_kind"),
            app: r.get("app"),
            environment: r.get("environment"),
            subject: r.get("subject"),
            body: r.get("body"),
            state: r.get("state"),
            attempts: r.get("attempts"),
            last_error: r.get("last_error"),
            created_at: r.get("created_at"),
            delivered_at: r.get("delivered_at"),
        }
    }
}

impl ReleaseNote {
    fn from_row(r: &SqliteRow) -> ReleaseNote {
        let labels: String = r.get("labels");
        ReleaseNote {
            id: r.get("id"),
            repository: r.get("repository"),
            number: r.get("number"),
            title: r.get("title"),
            body: r.get("body"),
            labels: serde_json::from_str(&labels).unwrap_or_default(),
            release_id: r.get("release_id"),
            created_at: r.get("created_at"),
        }
    }
}

impl Announcement {
    fn from_row(r: &SqliteRow) -> Announcement {
        Announcement {
            release_id: r.get("release_id"),
            app: r.get("app"),
            notes: r.get("notes"),
            notification_id: r.get("notification_id"),
            sent_at: r.get("sent_at"),
            override_by: r.get("override_by"),
            override_reason: r.get("override_reason"),
            override_at: r.get("override_at"),
            created_at: r.get("created_at"),
        }
    }
}

impl Promotion {
    fn from_row(r: &SqliteRow) -> Promotion {
        Promotion {
            id: r.get("id"),
            app: r.get("app"),
            release_id: r.get("release_id"),
            environment: r.get("environment"),
            actor: r.get("actor"),
            state: r.get("state"),
            deployment_id: r.get("deployment_id"),
            detail: r.get("detail"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        }
    }
}

impl Store {
    // ---- webhook deliveries ----

    /// Records a delivery id; `false` when it was already recorded (a replay).
    pub async fn record_webhook_delivery(
        &self,
        delivery_id: &str,
        source: &str,
        event: &str,
    ) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO webhook_deliveries (delivery_id, source, event, received_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(delivery_id)
        .bind(source)
        .bind(event)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    // ---- builds ----

    pub async fn create_build(&self, new: &NewBuild) -> Result<Build> {
        let row = sqlx::query(
            "INSERT INTO builds (repository, clone_url, git_ref, commit_sha, trigger, pr_number, state, created_at)
             VALUES (?, ?, ?, ?, ?, ?, 'queued', ?) RETURNING *",
        )
        .bind(&new.repository)
        .bind(&new.clone_url)
        .bind(&new.git_ref)
        .bind(&new.commit_sha)
        .bind(&new.trigger)
        .bind(new.pr_number)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(Build::from_row(&row))
    }

    pub async fn build(&self, id: i64) -> Result<Build> {
        let row = sqlx::query("SELECT * FROM builds WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no build {id}")))?;
        let mut build = Build::from_row(&row);
        let steps = sqlx::query("SELECT * FROM build_steps WHERE build_id = ? ORDER BY seq")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        build.steps = steps
            .iter()
            .map(|r| BuildStep {
                seq: r.get("seq"),
                name: r.get("name"),
                command: r.get("command"),
                state: r.get("state"),
                started_at: r.get("started_at"),
                finished_at: r.get("finished_at"),
                exit_code: r.get("exit_code"),
                detail: r.get("detail"),
            })
            .collect();
        Ok(build)
    }

    /// Builds, newest first; of one app when `app` is given.
    pub async fn builds(&self, app: Option<&str>, limit: i64) -> Result<Vec<Build>> {
        let rows = sqlx::query(
            "SELECT * FROM builds WHERE (?1 IS NULL OR app = ?1) ORDER BY id DESC LIMIT ?2",
        )
        .bind(app)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(Build::from_row).collect())
    }

    /// Builds left `queued` or `running` by a server that stopped.
    pub async fn unfinished_builds(&self) -> Result<Vec<Build>> {
        let rows =
            sqlx::query("SELECT * FROM builds WHERE state IN ('queued', 'running') ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(Build::from_row).collect())
    }

    pub async fn start_build(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE builds SET state = 'running', started_at = ? WHERE id = ?")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The app and environment a build turned out to be for.
    pub async fn set_build_app(&self, id: i64, app: &str, environment: &str) -> Result<()> {
        sqlx::query("UPDATE builds SET app = ?, environment = ? WHERE id = ?")
            .bind(app)
            .bind(environment)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_build_release(&self, id: i64, release_id: &str) -> Result<()> {
        sqlx::query("UPDATE builds SET release_id = ? WHERE id = ?")
            .bind(release_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn finish_build(&self, id: i64, state: &str, error: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE builds SET state = ?, error = ?, finished_at = ? WHERE id = ?")
            .bind(state)
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a step as begun; returns its sequence number.
    pub async fn begin_build_step(&self, build: i64, name: &str, command: &str) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO build_steps (build_id, seq, name, command, state, started_at)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM build_steps WHERE build_id = ?1), ?2, ?3, 'running', ?4)
             RETURNING seq",
        )
        .bind(build)
        .bind(name)
        .bind(command)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.get("seq"))
    }

    pub async fn end_build_step(
        &self,
        build: i64,
        seq: i64,
        ok: bool,
        exit_code: Option<i32>,
        detail: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE build_steps SET state = ?, exit_code = ?, detail = ?, finished_at = ? WHERE build_id = ? AND seq = ?",
        )
        .bind(if ok { "done" } else { "failed" })
        .bind(exit_code)
        .bind(detail)
        .bind(now_ms())
        .bind(build)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- review apps ----

    pub async fn put_review_app(
        &self,
        repository: &str,
        number: i64,
        app: &str,
        environment: &str,
        head_sha: &str,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO review_apps (repository, number, app, environment, head_sha, state, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, 'live', ?, ?)
             ON CONFLICT (repository, number) DO UPDATE SET
               app = excluded.app, environment = excluded.environment, head_sha = excluded.head_sha,
               state = 'live', updated_at = excluded.updated_at, removed_at = NULL,
               created_at = CASE WHEN review_apps.state = 'removed' THEN excluded.created_at ELSE review_apps.created_at END",
        )
        .bind(repository)
        .bind(number)
        .bind(app)
        .bind(environment)
        .bind(head_sha)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn review_app(&self, repository: &str, number: i64) -> Result<Option<ReviewApp>> {
        let row = sqlx::query("SELECT * FROM review_apps WHERE repository = ? AND number = ?")
            .bind(repository)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(ReviewApp::from_row))
    }

    /// Review apps running, or closed but not yet removed (`closing`).
    pub async fn live_review_apps(&self) -> Result<Vec<ReviewApp>> {
        let rows = sqlx::query(
            "SELECT * FROM review_apps WHERE state IN ('live', 'closing') ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(ReviewApp::from_row).collect())
    }

    /// Marks a review app whose pull request closed, before it is removed,
    /// so that the sweep finishes the removal if it fails now.
    pub async fn set_review_app_closing(&self, repository: &str, number: i64) -> Result<()> {
        sqlx::query(
            "UPDATE review_apps SET state = 'closing' WHERE repository = ? AND number = ? AND state = 'live'",
        )
        .bind(repository)
        .bind(number)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_review_app_removed(&self, repository: &str, number: i64) -> Result<()> {
        sqlx::query(
            "UPDATE review_apps SET state = 'removed', removed_at = ? WHERE repository = ? AND number = ?",
        )
        .bind(now_ms())
        .bind(repository)
        .bind(number)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the route of an app's environment (the environment is gone).
    pub async fn delete_route(&self, app: &str, environment: &str) -> Result<()> {
        sqlx::query("DELETE FROM routes WHERE app = ? AND environment = ?")
            .bind(app)
            .bind(environment)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- events, as the notifier reads them ----

    /// Events of every app after `after` (an event id), oldest first.
    pub async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(Event::from_row).collect())
    }

    pub async fn last_event_id(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn cursor(&self, name: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM pipeline_cursors WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn set_cursor(&self, name: &str, value: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO pipeline_cursors (name, value) VALUES (?, ?)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- notifications ----

    /// Records a message; `None` when this event was already recorded for
    /// this channel (the notifier re-reading events after a restart).
    pub async fn create_notification(&self, new: &NewNotification) -> Result<Option<Notification>> {
        let row = sqlx::query(
            "INSERT INTO notifications (event_id, channel, kind, event_kind, app, environment, subject, body, state, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)
             ON CONFLICT (event_id, channel) DO NOTHING RETURNING *",
        )
        .bind(new.event_id)
        .bind(&new.channel)
        .bind(&new.kind)
        .bind(&new.event_kind)
        .bind(&new.app)
        .bind(&new.environment)
        .bind(&new.subject)
        .bind(&new.body)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(Notification::from_row))
    }

    /// Records one delivery attempt: delivered, failed for good, or to be tried again.
    pub async fn record_notification_attempt(
        &self,
        id: i64,
        state: &str,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET attempts = attempts + 1, state = ?, last_error = COALESCE(?, last_error),
               delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END WHERE id = ?",
        )
        .bind(state)
        .bind(error)
        .bind(state)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn notification(&self, id: i64) -> Result<Notification> {
        let row = sqlx::query("SELECT * FROM notifications WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no notification {id}")))?;
        Ok(Notification::from_row(&row))
    }

    pub async fn notifications(&self, limit: i64) -> Result<Vec<Notification>> {
        let rows = sqlx::query("SELECT * FROM notifications ORDER BY id DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(Notification::from_row).collect())
    }

    pub async fn pending_notifications(&self) -> Result<Vec<Notification>> {
        let rows = sqlx::query("SELECT * FROM notifications WHERE state = 'pending' ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(Notification::from_row).collect())
    }

    // ---- release notes and announcements ----

    /// Records a merged pull request's note; the same pull request again
    /// replaces its text while no release carries it yet.
    pub async fn put_release_note(
        &self,
        repository: &str,
        number: i64,
        title: &str,
        body: &str,
        labels: &[String],
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO release_notes (repository, number, title, body, labels, created_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (repository, number) DO UPDATE SET title = excluded.title, body = excluded.body,
               labels = excluded.labels WHERE release_notes.release_id IS NULL",
        )
        .bind(repository)
        .bind(number)
        .bind(title)
        .bind(body)
        .bind(serde_json::to_string(labels).unwrap_or_else(|_| "[]".into()))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives a release every note of its repository that no release carries
    /// yet (one transaction); returns them.
    pub async fn claim_release_notes(
        &self,
        repository: &str,
        release_id: &str,
    ) -> Result<Vec<ReleaseNote>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE release_notes SET release_id = ? WHERE repository = ? AND release_id IS NULL",
        )
        .bind(release_id)
        .bind(repository)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query("SELECT * FROM release_notes WHERE release_id = ? ORDER BY number")
            .bind(release_id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.iter().map(ReleaseNote::from_row).collect())
    }

    pub async fn put_announcement(
        &self,
        release_id: &str,
        app: &str,
        notes: &str,
        notification_id: Option<i64>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO announcements (release_id, app, notes, notification_id, created_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (release_id) DO NOTHING",
        )
        .bind(release_id)
        .bind(app)
        .bind(notes)
        .bind(notification_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn announcement(&self, release_id: &str) -> Result<Option<Announcement>> {
        let row = sqlx::query("SELECT * FROM announcements WHERE release_id = ?")
            .bind(release_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(Announcement::from_row))
    }

    pub async fn set_announcement_sent(&self, release_id: &str, at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE announcements SET sent_at = ? WHERE release_id = ? AND sent_at IS NULL",
        )
        .bind(at)
        .bind(release_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records who let a release through to production without its
    /// announcement, and why.
    pub async fn override_announcement(
        &self,
        release_id: &str,
        by: &str,
        reason: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE announcements SET override_by = ?, override_reason = ?, override_at = ? WHERE release_id = ?",
        )
        .bind(by)
        .bind(reason)
        .bind(now_ms())
        .bind(release_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- promotions ----

    pub async fn create_promotion(
        &self,
        app: &str,
        release_id: &str,
        environment: &str,
        actor: &str,
        state: &str,
        detail: Option<&str>,
    ) -> Result<Promotion> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO promotions (app, release_id, environment, actor, state, detail, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(app)
        .bind(release_id)
        .bind(environment)
        .bind(actor)
        .bind(state)
        .bind(detail)
        .bind(now)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(Promotion::from_row(&row))
    }

    pub async fn update_promotion(
        &self,
        id: i64,
        state: &str,
        deployment_id: Option<i64>,
        detail: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE promotions SET state = ?, deployment_id = COALESCE(?, deployment_id), detail = COALESCE(?, detail), updated_at = ? WHERE id = ?",
        )
        .bind(state)
        .bind(deployment_id)
        .bind(detail)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Cancels the promotions of an app to an environment still waiting for
    /// their gate: a newer one replaces them.
    pub async fn cancel_waiting_promotions(
        &self,
        app: &str,
        environment: &str,
        detail: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE promotions SET state = 'cancelled', detail = ?, updated_at = ? WHERE app = ? AND environment = ? AND state = 'waiting'",
        )
        .bind(detail)
        .bind(now_ms())
        .bind(app)
        .bind(environment)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn waiting_promotions(&self) -> Result<Vec<Promotion>> {
        let rows = sqlx::query("SELECT * FROM promotions WHERE state = 'waiting' ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(Promotion::from_row).collect())
    }

    pub async fn promotions(&self, app: &str, limit: i64) -> Result<Vec<Promotion>> {
        let rows = sqlx::query("SELECT * FROM promotions WHERE app = ? ORDER BY id DESC LIMIT ?")
            .bind(app)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(Promotion::from_row).collect())
    }
}
