//! Flags, API keys and the audit log. A flag is stored as the JSON of Baton's
//! flag model, one row per app, environment and name; every change to a flag
//! or a key is written in the same transaction as its audit entry, so the
//! log never misses a change and never records one that did not happen. The
//! audit log is append-only: triggers refuse updates and deletes.

use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use crate::{now_ms, Result, Store, StoreError};

/// The tables, as one schema change.
pub(crate) const FLAGS_SCHEMA: &str = r#"
CREATE TABLE flags (
    app         TEXT NOT NULL,
    environment TEXT NOT NULL,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (app, environment, name)
);
CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    app         TEXT NOT NULL,
    environment TEXT NOT NULL,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    subject        TEXT NOT NULL,
    app            TEXT,
    environment    TEXT,
    detail         TEXT NOT NULL,
    remote_address TEXT
);
CREATE INDEX audit_log_app ON audit_log (app, id);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#;

/// The web origins (`https://shop.example`) whose pages may call the flag
/// client endpoints with a key (CORS), as a JSON list; none by default.
pub(crate) const API_KEY_ORIGINS: &str =
    "ALTER TABLE api_keys ADD COLUMN origins TEXT NOT NULL DEFAULT '[]'";

/// A flag of an app in an environment; `spec` is Baton's flag model as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagRecord {
    pub app: String,
    pub environment: String,
    pub name: String,
    pub spec: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

impl FlagRecord {
    fn from_row(r: &SqliteRow) -> FlagRecord {
        FlagRecord {
            app: r.get("app"),
            environment: r.get("environment"),
            name: r.get("name"),
            spec: serde_json::from_str(r.get::<&str, _>("spec")).unwrap_or_default(),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        }
    }
}

/// An API key's record; the key itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: i64,
    pub app: String,
    pub environment: String,
    pub name: String,
    #[serde(skip)]
    pub hash: String,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// Web origins allowed to use the key from a browser (CORS).
    #[serde(default)]
    pub origins: Vec<String>,
}

impl ApiKeyRecord {
    fn from_row(r: &SqliteRow) -> ApiKeyRecord {
        ApiKeyRecord {
            id: r.get("id"),
            app: r.get("app"),
            environment: r.get("environment"),
            name: r.get("name"),
            hash: r.get("hash"),
            prefix: r.get("prefix"),
            created_at: r.get("created_at"),
            revoked_at: r.get("revoked_at"),
            origins: serde_json::from_str(r.get::<&str, _>("origins")).unwrap_or_default(),
        }
    }
}

/// Who makes a change, for the record: an account (and its token), or the
/// pipeline (`pipeline (build N)`), and the address the request came from.
/// Every command that changes something takes one and writes its audit
/// entry in the same transaction as the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub name: String,
    pub remote_address: Option<String>,
}

impl Actor {
    pub fn new(name: impl Into<String>, remote_address: Option<String>) -> Actor {
        Actor {
            name: name.into(),
            remote_address,
        }
    }

    /// Baton itself (a deploy applying its release's flags.toml, the
    /// pipeline): a name and no address.
    pub fn system(name: impl Into<String>) -> Actor {
        Actor::new(name, None)
    }

    /// The audit entry of `action` on `subject` by this actor.
    pub fn entry(
        &self,
        action: &str,
        subject: String,
        app: &str,
        environment: &str,
        detail: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            id: 0,
            at: 0,
            actor: self.name.clone(),
            action: action.into(),
            subject,
            app: Some(app.into()),
            environment: Some(environment.into()),
            detail,
            remote_address: self.remote_address.clone(),
        }
    }
}

/// Who did what to which subject, from where. Written by every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub at: i64,
    pub actor: String,
    /// A dotted verb: `flag.create`, `flag.update`, `api_key.revoke`…
    pub action: String,
    /// What was acted on, e.g. `flag hello/production/new-checkout`.
    pub subject: String,
    pub app: Option<String>,
    pub environment: Option<String>,
    /// What changed, as JSON (for a flag: `before` and `after`).
    pub detail: serde_json::Value,
    pub remote_address: Option<String>,
}

impl AuditEntry {
    /// An entry for `action` on `subject` by `actor` from `remote_address`;
    /// the store sets the time when it writes it.
    pub fn new(
        actor: String,
        remote_address: Option<String>,
        action: &str,
        subject: String,
    ) -> Self {
        AuditEntry {
            id: 0,
            at: 0,
            actor,
            action: action.into(),
            subject,
            app: None,
            environment: None,
            detail: serde_json::Value::Object(Default::default()),
            remote_address,
        }
    }

    /// The app and environment it concerns.
    pub fn about(mut self, app: Option<&str>, environment: Option<&str>) -> Self {
        self.app = app.map(str::to_string);
        self.environment = environment.map(str::to_string);
        self
    }

    /// What changed, as JSON.
    pub fn with(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

impl AuditEntry {
    pub(crate) fn from_row(r: &SqliteRow) -> AuditEntry {
        AuditEntry {
            id: r.get("id"),
            at: r.get("at"),
            actor: r.get("actor"),
            action: r.get("action"),
            subject: r.get("subject"),
            app: r.get("app"),
            environment: r.get("environment"),
            detail: serde_json::from_str(r.get::<&str, _>("detail")).unwrap_or_default(),
            remote_address: r.get("remote_address"),
        }
    }
}

/// One change to a flag: its new spec, or `None` to delete it.
#[derive(Debug, Clone)]
pub struct FlagChange {
    pub name: String,
    pub spec: Option<serde_json::Value>,
    pub audit: AuditEntry,
}

pub(crate) async fn audit(tx: &mut Transaction<'_, Sqlite>, entry: &AuditEntry) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, subject, app, environment, detail, remote_address)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(now_ms())
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.subject)
    .bind(&entry.app)
    .bind(&entry.environment)
    .bind(entry.detail.to_string())
    .bind(&entry.remote_address)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Every flag of every app and environment, for building the snapshot.
    pub async fn all_flags(&self) -> Result<Vec<FlagRecord>> {
        let rows = sqlx::query("SELECT * FROM flags ORDER BY app, environment, name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(FlagRecord::from_row).collect())
    }

    pub async fn flags(&self, app: &str, environment: &str) -> Result<Vec<FlagRecord>> {
        let rows =
            sqlx::query("SELECT * FROM flags WHERE app = ? AND environment = ? ORDER BY name")
                .bind(app)
                .bind(environment)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(FlagRecord::from_row).collect())
    }

    pub async fn flag(&self, app: &str, environment: &str, name: &str) -> Result<FlagRecord> {
        sqlx::query("SELECT * FROM flags WHERE app = ? AND environment = ? AND name = ?")
            .bind(app)
            .bind(environment)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| FlagRecord::from_row(&r))
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "app {app} has no flag {name:?} in {environment}; `baton flags list {app} -e {environment}` lists them"
                ))
            })
    }

    /// Applies flag changes, each with its audit entry, in one transaction.
    /// `must_exist`/`must_not_exist` are checked inside it.
    pub async fn change_flags(
        &self,
        app: &str,
        environment: &str,
        changes: &[FlagChange],
        expect: FlagExpectation,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        for change in changes {
            let exists: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM flags WHERE app = ? AND environment = ? AND name = ?",
            )
            .bind(app)
            .bind(environment)
            .bind(&change.name)
            .fetch_optional(&mut *tx)
            .await?;
            match (expect, exists.is_some()) {
                (FlagExpectation::Absent, true) => {
                    return Err(StoreError::Conflict(format!(
                        "app {app} already has flag {:?} in {environment}; change it with `baton flags set`",
                        change.name
                    )))
                }
                (FlagExpectation::Present, false) => {
                    return Err(StoreError::NotFound(format!(
                        "app {app} has no flag {:?} in {environment}; create it with `baton flags create`",
                        change.name
                    )))
                }
                _ => {}
            }
            match &change.spec {
                Some(spec) => {
                    sqlx::query(
                        "INSERT INTO flags (app, environment, name, spec, created_at, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?)
                         ON CONFLICT (app, environment, name) DO UPDATE SET spec = excluded.spec,
                           updated_at = excluded.updated_at",
                    )
                    .bind(app)
                    .bind(environment)
                    .bind(&change.name)
                    .bind(spec.to_string())
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM flags WHERE app = ? AND environment = ? AND name = ?")
                        .bind(app)
                        .bind(environment)
                        .bind(&change.name)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            audit(&mut tx, &change.audit).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- API keys ----

    #[allow(clippy::too_many_arguments)]
    pub async fn create_api_key(
        &self,
        app: &str,
        environment: &str,
        name: &str,
        hash: &str,
        prefix: &str,
        origins: &[String],
        entry: &AuditEntry,
    ) -> Result<ApiKeyRecord> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO api_keys (app, environment, name, hash, prefix, created_at, origins)
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(app)
        .bind(environment)
        .bind(name)
        .bind(hash)
        .bind(prefix)
        .bind(now_ms())
        .bind(serde_json::to_string(origins).unwrap_or_else(|_| "[]".into()))
        .fetch_one(&mut *tx)
        .await?;
        let mut entry = entry.clone();
        entry.subject = format!("api_key {id}");
        audit(&mut tx, &entry).await?;
        tx.commit().await?;
        self.api_key(id).await
    }

    pub async fn api_key(&self, id: i64) -> Result<ApiKeyRecord> {
        sqlx::query("SELECT * FROM api_keys WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| ApiKeyRecord::from_row(&r))
            .ok_or_else(|| StoreError::NotFound(format!("no API key {id}")))
    }

    /// Every key, revoked ones included, for building the snapshot.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(ApiKeyRecord::from_row).collect())
    }

    /// Marks a key revoked (it stays recorded); revoking twice is refused.
    pub async fn revoke_api_key(&self, id: i64, entry: &AuditEntry) -> Result<ApiKeyRecord> {
        let mut tx = self.pool.begin().await?;
        let changed =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(format!(
                "no API key {id} that is not already revoked"
            )));
        }
        audit(&mut tx, entry).await?;
        tx.commit().await?;
        self.api_key(id).await
    }

    // ---- audit log ----

    /// Records an action that changes nothing in the store.
    pub async fn record_audit(&self, entry: &AuditEntry) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        audit(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest changes to one app's flags and API keys (`flag.*` and
    /// `api_key.*` entries), for `baton flags audit APP`.
    pub async fn flag_audit_log(&self, app: &str, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE app = ?
               AND (action LIKE 'flag.%' OR action LIKE 'api!_key.%' ESCAPE '!')
             ORDER BY id DESC LIMIT ?",
        )
        .bind(app)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(AuditEntry::from_row).collect())
    }

    /// The newest entries first, of one app when `app` is given.
    pub async fn audit_log(&self, app: Option<&str>, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE ? IS NULL OR app = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(app)
        .bind(app)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(AuditEntry::from_row).collect())
    }
}

/// What [`Store::change_flags`] insists on before each change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagExpectation {
    /// Creating: the flag must not exist yet.
    Absent,
    /// Updating or deleting: the flag must exist.
    Present,
    /// Applying a file: either way.
    Any,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            id: 0,
            at: 0,
            actor: "alice".into(),
            action: action.into(),
            subject: "flag a/production/f".into(),
            app: Some("a".into()),
            environment: Some("production".into()),
            detail: serde_json::json!({"after": {"enabled": true}}),
            remote_address: Some("127.0.0.1".into()),
        }
    }

    fn change(name: &str, spec: Option<serde_json::Value>, action: &str) -> FlagChange {
        FlagChange {
            name: name.into(),
            spec,
            audit: entry(action),
        }
    }

    #[tokio::test]
    async fn flag_changes_are_audited_in_the_same_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("baton.db")).await.unwrap();
        let on = serde_json::json!({"enabled": true});
        store
            .change_flags(
                "a",
                "production",
                &[change("f", Some(on.clone()), "flag.create")],
                FlagExpectation::Absent,
            )
            .await
            .unwrap();
        assert_eq!(store.flag("a", "production", "f").await.unwrap().spec, on);
        // A refused change leaves neither the flag nor the log touched.
        let again = store
            .change_flags(
                "a",
                "production",
                &[
                    change("g", Some(on.clone()), "flag.create"),
                    change("f", Some(on.clone()), "flag.create"),
                ],
                FlagExpectation::Absent,
            )
            .await;
        assert!(matches!(again, Err(StoreError::Conflict(_))));
        assert!(store.flag("a", "production", "g").await.is_err());
        let deleted = store
            .change_flags(
                "a",
                "production",
                &[change("nope", None, "flag.delete")],
                FlagExpectation::Present,
            )
            .await;
        assert!(matches!(deleted, Err(StoreError::NotFound(_))));
        store
            .change_flags(
                "a",
                "production",
                &[change("f", None, "flag.delete")],
                FlagExpectation::Present,
            )
            .await
            .unwrap();
        assert!(store.flags("a", "production").await.unwrap().is_empty());
        let log = store.audit_log(Some("a"), 10).await.unwrap();
        let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["flag.delete", "flag.create"]);
        assert_eq!(log[0].actor, "alice");
        assert_eq!(log[0].remote_address.as_deref(), Some("127.0.0.1"));
        assert!(log[0].at > 0);
        assert!(store.audit_log(Some("other"), 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_audit_log_refuses_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("baton.db")).await.unwrap();
        store.record_audit(&entry("flag.create")).await.unwrap();
        let update = sqlx::query("UPDATE audit_log SET actor = 'mallory'")
            .execute(&store.pool)
            .await;
        assert!(update.unwrap_err().to_string().contains("append-only"));
        let delete = sqlx::query("DELETE FROM audit_log")
            .execute(&store.pool)
            .await;
        assert!(delete.unwrap_err().to_string().contains("append-only"));
        assert_eq!(store.audit_log(None, 10).await.unwrap()[0].actor, "alice");
    }

    #[tokio::test]
    async fn an_apps_flag_audit_log_holds_only_its_flag_and_key_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("baton.db")).await.unwrap();
        for (app, action) in [
            ("a", "flag.create"),
            ("a", "deployment.start"),
            ("a", "token.create"),
            ("a", "apixkey.create"),
            ("a", "api_key.revoke"),
            ("b", "flag.update"),
            ("a", "flag.update"),
        ] {
            let mut entry = entry(action);
            entry.app = Some(app.into());
            store.record_audit(&entry).await.unwrap();
        }
        let log = store.flag_audit_log("a", 10).await.unwrap();
        let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["flag.update", "api_key.revoke", "flag.create"]);
        assert_eq!(store.flag_audit_log("a", 1).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn keys_are_revoked_once_and_stay_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("baton.db")).await.unwrap();
        let key = store
            .create_api_key(
                "a",
                "production",
                "web",
                "h1",
                "baton_ab",
                &["https://shop.example".to_string()],
                &entry("api_key.create"),
            )
            .await
            .unwrap();
        assert_eq!(key.revoked_at, None);
        assert_eq!(key.origins, ["https://shop.example"]);
        let revoked = store
            .revoke_api_key(key.id, &entry("api_key.revoke"))
            .await
            .unwrap();
        assert!(revoked.revoked_at.is_some());
        assert!(store
            .revoke_api_key(key.id, &entry("api_key.revoke"))
            .await
            .is_err());
        assert_eq!(store.api_keys().await.unwrap().len(), 1);
        assert_eq!(store.audit_log(None, 10).await.unwrap().len(), 2);
    }
}
