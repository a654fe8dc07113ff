//! An app's whole life in the store: which apps there are, what one owns,
//! and removing it (`baton destroy`) or its oldest releases (retention).
//! Only the audit log outlives an app: it is append-only. Deletions run
//! children before parents (the foreign keys are enforced), each call in
//! one transaction, so a crash leaves everything or nothing of that call.

use sqlx::{Row, Sqlite, Transaction};

use crate::flags::{audit, AuditEntry};
use crate::{Result, Store};

/// The tables that hold an app's rows in a column `app` (with an
/// `environment` one too, unless said otherwise), deleted in this order
/// after the rows that point at them. `audit_log` is not one: it is kept.
const BY_ENVIRONMENT: &[&str] = &[
    "contracts",
    "cron_runs",
    "promotions",
    "targets",
    "deployments",
    "events",
    "flags",
    "api_keys",
    "config_versions",
    "scale",
    "maintenance",
    "certificates",
    "review_apps",
    "notifications",
    "routes",
];

/// A release the app may lose to retention: when it was last made or
/// deployed, and whether anything still needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseUse {
    pub id: String,
    /// The later of its creation and its newest deployment (ms).
    pub last_used: i64,
    pub image: Option<String>,
    /// Run by a target that is not stopped, or named by a pending contract,
    /// an unfinished deployment or a promotion waiting for its gate.
    pub needed: bool,
}

impl Store {
    /// Every app the server knows: those with a release or a route.
    pub async fn known_apps(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT app FROM releases UNION SELECT app FROM routes ORDER BY 1")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Whether any table but the audit log holds a row of `app` (in
    /// `environment`, when given).
    pub async fn owns_anything(&self, app: &str, environment: Option<&str>) -> Result<bool> {
        let mut tables: Vec<&str> = BY_ENVIRONMENT.to_vec();
        tables.push("builds");
        if environment.is_none() {
            tables.extend(["releases", "announcements"]);
        }
        for table in tables {
            let (sql, env) = scoped(&format!("SELECT 1 FROM {table}"), table, environment);
            let found = bind(sqlx::query(&sql), app, env)
                .fetch_optional(&self.pool)
                .await?;
            if found.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The environments in which `app` has anything: route, targets,
    /// deployments, flags…
    pub async fn environments_of(&self, app: &str) -> Result<Vec<String>> {
        let selects: Vec<String> = BY_ENVIRONMENT
            .iter()
            .map(|t| format!("SELECT environment FROM {t} WHERE app = ?1"))
            .collect();
        let sql = format!("{} ORDER BY 1", selects.join(" UNION "));
        let rows = sqlx::query(&sql).bind(app).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| r.get::<String, _>(0))
            // Events about an app as a whole (an image build) use "-".
            .filter(|e| e != "-")
            .collect())
    }

    /// What stands in the way of removing `app`: its running deployments
    /// (id and environment) and its unfinished builds (id).
    pub async fn unfinished_work(&self, app: &str) -> Result<(Vec<(i64, String)>, Vec<i64>)> {
        let deployments = sqlx::query(
            "SELECT id, environment FROM deployments WHERE app = ? AND state IN ('running', 'previewing') ORDER BY id",
        )
        .bind(app)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| (r.get("id"), r.get("environment")))
        .collect();
        let builds = sqlx::query(
            "SELECT id FROM builds WHERE app = ? AND state IN ('queued', 'running') ORDER BY id",
        )
        .bind(app)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.get("id"))
        .collect();
        Ok((deployments, builds))
    }

    /// Takes `app`'s routes in `environments` (and their maintenance) out
    /// of the store, with `entry` in the same transaction when given: the
    /// change that makes the app unreachable.
    pub async fn remove_routes(
        &self,
        app: &str,
        environments: &[String],
        entry: Option<&AuditEntry>,
    ) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for environment in environments {
            for table in ["routes", "maintenance"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE app = ? AND environment = ?"
                ))
                .bind(app)
                .bind(environment)
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some(entry) = entry {
            audit(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every target id `app` ever had (in `environment`, when given),
    /// stopped ones too: their output files are the app's.
    pub async fn target_ids_of(&self, app: &str, environment: Option<&str>) -> Result<Vec<i64>> {
        let (sql, env) = scoped("SELECT id FROM targets", "targets", environment);
        let rows = bind(sqlx::query(&sql), app, env)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The deployments of `app` (in `environment`, when given): their
    /// release commands' output is the app's.
    pub async fn deployment_ids_of(
        &self,
        app: &str,
        environment: Option<&str>,
    ) -> Result<Vec<i64>> {
        let (sql, env) = scoped("SELECT id FROM deployments", "deployments", environment);
        let rows = bind(sqlx::query(&sql), app, env)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The builds of `app` (in `environment`, when given): their logs are
    /// the app's.
    pub async fn build_ids_of(&self, app: &str, environment: Option<&str>) -> Result<Vec<i64>> {
        let (sql, env) = scoped("SELECT id FROM builds", "builds", environment);
        let rows = bind(sqlx::query(&sql), app, env)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Deletes every row of `app` in `environment`, or of the whole app
    /// (its releases and their notes and announcements too) when `None`,
    /// but the audit log's. One transaction.
    pub async fn delete_app(&self, app: &str, environment: Option<&str>) -> Result<u64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut deleted = 0;
        // Rows that point at the app's rows but hold no `app` themselves.
        for (child, column, parent) in [
            ("deployment_steps", "deployment_id", "deployments"),
            ("build_steps", "build_id", "builds"),
        ] {
            let (inner, env) = scoped(&format!("SELECT id FROM {parent}"), parent, environment);
            let sql = format!("DELETE FROM {child} WHERE {column} IN ({inner})");
            deleted += run(&mut tx, &sql, app, env).await?;
        }
        for table in BY_ENVIRONMENT.iter().chain(&["builds"]) {
            let (sql, env) = scoped(&format!("DELETE FROM {table}"), table, environment);
            deleted += run(&mut tx, &sql, app, env).await?;
        }
        if environment.is_none() {
            for sql in [
                "DELETE FROM release_notes WHERE release_id IN (SELECT id FROM releases WHERE app = ?)",
                "DELETE FROM announcements WHERE app = ?",
                "DELETE FROM releases WHERE app = ?",
            ] {
                deleted += run(&mut tx, sql, app, None).await?;
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// `app`'s releases, most recently used first, with what still needs
    /// each: what retention chooses from.
    pub async fn release_uses(&self, app: &str) -> Result<Vec<ReleaseUse>> {
        let rows = sqlx::query(
            "SELECT r.id, r.image,
                    MAX(r.created_at, COALESCE((SELECT MAX(d.created_at) FROM deployments d WHERE d.release_id = r.id), 0)) AS last_used,
                    EXISTS (SELECT 1 FROM targets t WHERE t.release_id = r.id AND t.state NOT IN ('stopped', 'failed'))
                    OR EXISTS (SELECT 1 FROM contracts c WHERE c.release_id = r.id AND c.state = 'pending')
                    OR EXISTS (SELECT 1 FROM deployments d WHERE d.release_id = r.id AND d.state IN ('running', 'previewing'))
                    OR EXISTS (SELECT 1 FROM promotions p WHERE p.release_id = r.id AND p.state = 'waiting')
                    AS needed
             FROM releases r WHERE r.app = ?
             ORDER BY last_used DESC, r.id",
        )
        .bind(app)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| ReleaseUse {
                id: r.get("id"),
                image: r.get("image"),
                last_used: r.get("last_used"),
                needed: r.get::<i64, _>("needed") != 0,
            })
            .collect())
    }

    /// Deletes releases of `app` and the history that names them (their
    /// deployments and steps, their stopped targets), in one transaction;
    /// returns the releases and the deployments deleted. A release that a
    /// target still runs is left alone. Contracts keep their record, no
    /// longer tied to the release.
    pub async fn delete_releases(
        &self,
        app: &str,
        ids: &[String],
    ) -> Result<(Vec<String>, Vec<i64>)> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut deleted = Vec::new();
        let mut deployments = Vec::new();
        for id in ids {
            let running: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM targets WHERE release_id = ? AND state NOT IN ('stopped', 'failed') LIMIT 1",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if running.is_some() {
                continue;
            }
            let of_release: Vec<i64> =
                sqlx::query_scalar("SELECT id FROM deployments WHERE release_id = ?")
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
            for sql in [
                "UPDATE contracts SET release_id = NULL, deployment_id = NULL WHERE release_id = ?1 OR deployment_id IN (SELECT id FROM deployments WHERE release_id = ?1)",
                "DELETE FROM deployment_steps WHERE deployment_id IN (SELECT id FROM deployments WHERE release_id = ?1)",
                "DELETE FROM targets WHERE release_id = ?1",
                "DELETE FROM deployments WHERE release_id = ?1",
                "DELETE FROM release_notes WHERE release_id = ?1",
            ] {
                sqlx::query(sql).bind(id).execute(&mut *tx).await?;
            }
            let gone = sqlx::query("DELETE FROM releases WHERE id = ? AND app = ?")
                .bind(id)
                .bind(app)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if gone == 1 {
                deleted.push(id.clone());
                deployments.extend(of_release);
            }
        }
        tx.commit().await?;
        Ok((deleted, deployments))
    }

    /// `app`'s stopped (or failed) targets, newest first, with their
    /// release and when they last changed (ms): whose output retention may remove.
    pub async fn stopped_targets(&self, app: &str) -> Result<Vec<(i64, String, i64)>> {
        let rows = sqlx::query(
            "SELECT id, release_id, updated_at FROM targets WHERE app = ? AND state IN ('stopped', 'failed') ORDER BY id DESC",
        )
        .bind(app)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}

/// `base` limited to `app` (and `environment`, when given and `table` has
/// one), and the environment to bind after the app.
fn scoped<'e>(base: &str, table: &str, environment: Option<&'e str>) -> (String, Option<&'e str>) {
    let has_environment = table != "announcements" && table != "releases";
    match environment {
        Some(env) if has_environment => (
            format!("{base} WHERE app = ? AND environment = ?"),
            Some(env),
        ),
        _ => (format!("{base} WHERE app = ?"), None),
    }
}

fn bind<'q>(
    query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    app: &'q str,
    environment: Option<&'q str>,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    let query = query.bind(app);
    match environment {
        Some(env) => query.bind(env),
        None => query,
    }
}

async fn run(
    tx: &mut Transaction<'_, Sqlite>,
    sql: &str,
    app: &str,
    environment: Option<&str>,
) -> Result<u64> {
    Ok(bind(sqlx::query(sql), app, environment)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    use crate::{now_ms, Actor, DeploymentKind, DeploymentState, Release, Store, TargetState};

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("baton.db")).await.unwrap();
        (dir, store)
    }

    async fn deployed(s: &Store, app: &str, environment: &str, release: &str) -> i64 {
        s.put_release(&Release {
            id: release.into(),
            app: app.into(),
            created_at: now_ms(),
            size: 1,
            files: 1,
            manifest: String::new(),
            image: None,
        })
        .await
        .unwrap();
        let d = s
            .begin_deployment(
                app,
                environment,
                release,
                DeploymentKind::Deploy,
                None,
                None,
                &Actor::system("test"),
                "deployment.create",
                serde_json::json!({}),
            )
            .await
            .unwrap();
        s.set_deployment_state(d.id, DeploymentState::Succeeded, None)
            .await
            .unwrap();
        s.create_target(&crate::NewTarget {
            app,
            environment,
            release_id: release,
            deployment_id: d.id,
            port: 4000,
            runtime: "process",
            process: "web",
        })
        .await
        .unwrap()
        .id
    }

    #[tokio::test]
    async fn deleting_an_app_leaves_only_its_audit_entries_and_other_apps() {
        let (_dir, s) = store().await;
        deployed(&s, "shop", "production", "s1").await;
        deployed(&s, "shop", "staging", "s2").await;
        deployed(&s, "blog", "production", "b1").await;
        assert_eq!(
            s.environments_of("shop").await.unwrap(),
            ["production", "staging"]
        );
        assert!(s.delete_app("shop", Some("staging")).await.unwrap() > 0);
        assert_eq!(s.environments_of("shop").await.unwrap(), ["production"]);
        assert!(s.owns_anything("shop", None).await.unwrap());
        s.delete_app("shop", None).await.unwrap();
        assert!(!s.owns_anything("shop", None).await.unwrap());
        assert_eq!(s.known_apps().await.unwrap(), ["blog"]);
        assert!(!s.audit_log(Some("shop"), 10).await.unwrap().is_empty());
        assert_eq!(s.deployments("blog", 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn releases_a_target_runs_are_needed_and_never_deleted() {
        let (_dir, s) = store().await;
        let old = deployed(&s, "shop", "production", "r1").await;
        s.set_target_state(old, TargetState::Stopped, None)
            .await
            .unwrap();
        deployed(&s, "shop", "production", "r2").await;
        let uses = s.release_uses("shop").await.unwrap();
        let needed: Vec<(&str, bool)> = uses.iter().map(|u| (u.id.as_str(), u.needed)).collect();
        assert!(needed.contains(&("r1", false)) && needed.contains(&("r2", true)));
        let deleted = s
            .delete_releases("shop", &["r1".into(), "r2".into()])
            .await
            .unwrap();
        assert_eq!(deleted.0, ["r1"]);
        assert_eq!(deleted.1.len(), 1);
        assert!(s.release("r2").await.is_ok());
        assert!(s.stopped_targets("shop").await.unwrap().is_empty());
    }
}
