//! One connection to the app's database, and everything that differs
//! between PostgreSQL, SQLite and MySQL: the history table's DDL, reading
//! and writing its rows, the migration lock, timeouts and transactions.

use std::time::{Duration, Instant};

use baton_migrate::{HistoryRow, MigrationType, NewHistoryRow, Version};
use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};

use crate::DbError;

/// The history table, as Flyway names it.
pub const HISTORY_TABLE: &str = "flyway_schema_history";

pub use baton_migrate::Dialect;

/// The dialect of a database URL, or why Baton cannot migrate it.
pub fn dialect_of(url: &str) -> Result<Dialect, DbError> {
    Dialect::from_url(url).ok_or_else(|| DbError::BadUrl {
        url: redact(url),
        reason: "the scheme must be postgres://, sqlite:// or mysql:// (mariadb:// too)".into(),
    })
}

fn placeholder(dialect: Dialect, n: usize) -> String {
    match dialect {
        Dialect::Postgres => format!("${n}"),
        Dialect::Sqlite | Dialect::MySql => "?".into(),
    }
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

/// A boxed, `Send` future. sqlx's driver futures carry higher-ranked
/// lifetimes that make a caller's future fail the `Send` check of
/// `tokio::spawn`; boxing each driver call at its source ends that.
type Fut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

enum Conn {
    Pg(PgConnection),
    Lite(SqliteConnection),
    My(MySqlConnection),
}

/// Runs `$body` with `$c` bound to the connection, whichever driver it is.
/// The body is compiled once per driver, so it may only use what all three
/// support.
macro_rules! on {
    ($conn:expr, $c:ident => $body:expr) => {{
        let future: Fut<'_, _> = match $conn {
            Conn::Pg($c) => Box::pin(async move { $body }),
            Conn::Lite($c) => Box::pin(async move { $body }),
            Conn::My($c) => Box::pin(async move { $body }),
        };
        future.await
    }};
}

/// A connection to the app's database, dedicated to migrating it. Locks are
/// held by this connection's session, so it is never pooled.
pub struct Database {
    conn: Conn,
    dialect: Dialect,
    target: String,
    locked: bool,
}

impl Database {
    pub async fn connect(url: &str) -> Result<Database, DbError> {
        let dialect = dialect_of(url)?;
        let target = redact(url);
        let failed = |error: sqlx::Error| DbError::Connect {
            target: target.clone(),
            error,
        };
        let conn = match dialect {
            Dialect::Postgres => Conn::Pg(PgConnection::connect(url).await.map_err(failed)?),
            Dialect::MySql => {
                let url = url.replacen("mariadb://", "mysql://", 1);
                Conn::My(MySqlConnection::connect(&url).await.map_err(failed)?)
            }
            Dialect::Sqlite => {
                // A database file that does not exist yet is created, as
                // Flyway's SQLite driver does.
                let options: SqliteConnectOptions = url.parse().map_err(failed)?;
                Conn::Lite(
                    SqliteConnection::connect_with(&options.create_if_missing(true))
                        .await
                        .map_err(failed)?,
                )
            }
        };
        Ok(Database {
            conn,
            dialect,
            target,
            locked: false,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL without its password.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn query_error(&self, context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> DbError {
        let target = self.target.clone();
        let context = context.into();
        move |error| DbError::Query {
            target,
            context,
            error,
        }
    }

    /// Runs SQL text without parameters: PostgreSQL's simple query protocol,
    /// so that DDL, `DO` blocks and `CREATE INDEX CONCURRENTLY` run as
    /// written, and nothing is prepared.
    pub async fn execute(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        on!(&mut self.conn, c => sqlx::Executor::execute(&mut *c, sql).await.map(|_| ()))
    }

    async fn execute_or(&mut self, sql: &str, context: &str) -> Result<(), DbError> {
        let error = self.query_error(context);
        self.execute(sql).await.map_err(error)
    }

    async fn count(&mut self, sql: &str, context: &str) -> Result<i64, DbError> {
        let error = self.query_error(context);
        let n: i64 = on!(&mut self.conn, c => sqlx::query_scalar(sql).fetch_one(&mut *c).await)
            .map_err(error)?;
        Ok(n)
    }

    /// The user Flyway records in `installed_by`: the database user (SQLite
    /// has none, and Flyway records an empty string there).
    pub async fn current_user(&mut self) -> Result<String, DbError> {
        let sql = match self.dialect {
            Dialect::Postgres => "SELECT CAST(current_user AS TEXT)",
            Dialect::MySql => "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)",
            Dialect::Sqlite => return Ok(String::new()),
        };
        let error = self.query_error("reading the database user");
        on!(&mut self.conn, c => sqlx::query_scalar::<_, String>(sql).fetch_one(&mut *c).await)
            .map_err(error)
    }

    /// Sets how long each statement may wait for a lock; zero waits for ever.
    pub async fn set_lock_timeout(&mut self, timeout: Duration) -> Result<(), DbError> {
        let ms = timeout.as_millis();
        let sql = match self.dialect {
            Dialect::Postgres => format!("SET lock_timeout = '{ms}ms'"),
            // MySQL counts whole seconds, at least one; 0 is not allowed.
            Dialect::MySql => {
                let secs = if ms == 0 {
                    31_536_000
                } else {
                    ms.div_ceil(1000)
                };
                format!(
                    "SET SESSION lock_wait_timeout = {secs}, SESSION innodb_lock_wait_timeout = {}",
                    secs.min(1_073_741_824)
                )
            }
            Dialect::Sqlite => format!("PRAGMA busy_timeout = {}", ms.min(i32::MAX as u128)),
        };
        self.execute_or(&sql, "setting the lock timeout").await
    }

    /// Whether the history table exists in the current schema.
    pub async fn has_history(&mut self) -> Result<bool, DbError> {
        let sql = match self.dialect {
            Dialect::Postgres => "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'flyway_schema_history'",
            Dialect::MySql => "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'flyway_schema_history'",
            Dialect::Sqlite => "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'flyway_schema_history'",
        };
        Ok(self.count(sql, "looking for flyway_schema_history").await? > 0)
    }

    /// Whether the schema holds tables other than the history: Flyway's test
    /// for `baselineOnMigrate`.
    pub async fn schema_has_tables(&mut self) -> Result<bool, DbError> {
        let sql = match self.dialect {
            Dialect::Postgres => "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name <> 'flyway_schema_history'",
            Dialect::MySql => "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name <> 'flyway_schema_history'",
            Dialect::Sqlite => "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name <> 'flyway_schema_history' AND name NOT LIKE 'sqlite_%'",
        };
        Ok(self.count(sql, "listing the schema's tables").await? > 0)
    }

    /// Creates the history table exactly as Flyway does, if it is missing.
    pub async fn create_history(&mut self) -> Result<(), DbError> {
        if self.has_history().await? {
            return Ok(());
        }
        let ddl: &[&str] = match self.dialect {
            Dialect::Postgres => &[
                r#"CREATE TABLE IF NOT EXISTS "flyway_schema_history" (
    "installed_rank" INT NOT NULL,
    "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "script" VARCHAR(1000) NOT NULL,
    "checksum" INTEGER,
    "installed_by" VARCHAR(100) NOT NULL,
    "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL,
    CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank")
)"#,
                r#"CREATE INDEX IF NOT EXISTS "flyway_schema_history_s_idx" ON "flyway_schema_history" ("success")"#,
            ],
            Dialect::Sqlite => &[
                r#"CREATE TABLE IF NOT EXISTS "flyway_schema_history" (
    "installed_rank" INT NOT NULL PRIMARY KEY,
    "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "script" VARCHAR(1000) NOT NULL,
    "checksum" INT,
    "installed_by" VARCHAR(100) NOT NULL,
    "installed_on" TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f','now')),
    "execution_time" INT NOT NULL,
    "success" BOOLEAN NOT NULL
)"#,
                r#"CREATE INDEX IF NOT EXISTS "flyway_schema_history_s_idx" ON "flyway_schema_history" ("success")"#,
            ],
            Dialect::MySql => &["CREATE TABLE IF NOT EXISTS `flyway_schema_history` (
    `installed_rank` INT NOT NULL,
    `version` VARCHAR(50),
    `description` VARCHAR(200) NOT NULL,
    `type` VARCHAR(20) NOT NULL,
    `script` VARCHAR(1000) NOT NULL,
    `checksum` INT,
    `installed_by` VARCHAR(100) NOT NULL,
    `installed_on` TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    `execution_time` INT NOT NULL,
    `success` BOOL NOT NULL,
    CONSTRAINT `flyway_schema_history_pk` PRIMARY KEY (`installed_rank`),
    INDEX `flyway_schema_history_s_idx` (`success`)
) ENGINE=InnoDB"],
        };
        for sql in ddl {
            self.execute_or(sql, "creating flyway_schema_history")
                .await?;
        }
        Ok(())
    }

    /// Every history row, by rank; none when the table does not exist.
    pub async fn history(&mut self) -> Result<Vec<HistoryRow>, DbError> {
        if !self.has_history().await? {
            return Ok(Vec::new());
        }
        let installed_on = match self.dialect {
            Dialect::Postgres => "CAST(installed_on AS TEXT)",
            Dialect::MySql => "CAST(installed_on AS CHAR)",
            Dialect::Sqlite => "CAST(installed_on AS TEXT)",
        };
        let sql = format!(
            "SELECT installed_rank, version, description, type, script, checksum, installed_by, {installed_on} AS installed_on, execution_time, success FROM flyway_schema_history ORDER BY installed_rank"
        );
        let error = self.query_error("reading flyway_schema_history");
        let raw = on!(&mut self.conn, c => {
            sqlx::query(&sql).fetch_all(&mut *c).await.and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok(RawRow {
                            installed_rank: r.try_get("installed_rank")?,
                            version: r.try_get("version")?,
                            description: r.try_get("description")?,
                            kind: r.try_get("type")?,
                            script: r.try_get("script")?,
                            checksum: r.try_get("checksum")?,
                            installed_by: r.try_get("installed_by")?,
                            installed_on: r.try_get("installed_on")?,
                            execution_time: r.try_get("execution_time")?,
                            success: r.try_get("success")?,
                        })
                    })
                    .collect::<Result<Vec<RawRow>, sqlx::Error>>()
            })
        })
        .map_err(error)?;
        raw.into_iter()
            .map(|r| {
                let version = match r.version.as_deref() {
                    None | Some("") => None,
                    Some(text) => Some(Version::parse(text).map_err(|e| DbError::BadHistory {
                        target: self.target.clone(),
                        reason: format!("row {} has version {text:?}: {e}", r.installed_rank),
                    })?),
                };
                Ok(HistoryRow {
                    installed_rank: r.installed_rank,
                    version,
                    description: r.description,
                    kind: MigrationType::parse(&r.kind),
                    script: r.script,
                    checksum: r.checksum,
                    installed_by: r.installed_by,
                    installed_on: r.installed_on,
                    execution_time: r.execution_time,
                    success: r.success,
                })
            })
            .collect()
    }

    /// The rows of sqlx's `_sqlx_migrations`, by version.
    pub async fn sqlx_history(&mut self) -> Result<Vec<crate::import::SqlxRow>, DbError> {
        let sql = "SELECT version, description, success, checksum, execution_time FROM _sqlx_migrations ORDER BY version";
        let error = self.query_error("reading _sqlx_migrations");
        on!(&mut self.conn, c => {
            sqlx::query(sql).fetch_all(&mut *c).await.and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok(crate::import::SqlxRow {
                            version: r.try_get("version")?,
                            description: r.try_get("description")?,
                            success: r.try_get("success")?,
                            checksum: r.try_get("checksum")?,
                            execution_time: r.try_get("execution_time")?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })
        })
        .map_err(error)
    }

    pub async fn insert_row(&mut self, row: &NewHistoryRow) -> Result<(), DbError> {
        let p = |n| placeholder(self.dialect, n);
        let sql = format!(
            "INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, checksum, installed_by, execution_time, success) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {})",
            p(1), p(2), p(3), p(4), p(5), p(6), p(7), p(8), p(9)
        );
        let version = row.version.as_ref().map(|v| v.to_string());
        let error = self.query_error(format!("recording {} in flyway_schema_history", row.script));
        on!(&mut self.conn, c => sqlx::query(&sql)
            .bind(row.installed_rank)
            .bind(version)
            .bind(&row.description)
            .bind(row.kind.as_str())
            .bind(&row.script)
            .bind(row.checksum)
            .bind(&row.installed_by)
            .bind(row.execution_time)
            .bind(row.success)
            .execute(&mut *c)
            .await
            .map(|_| ()))
        .map_err(error)
    }

    pub async fn delete_row(&mut self, rank: i32) -> Result<(), DbError> {
        let sql = format!(
            "DELETE FROM flyway_schema_history WHERE installed_rank = {}",
            placeholder(self.dialect, 1)
        );
        let error = self.query_error("removing a failed row from flyway_schema_history");
        on!(&mut self.conn, c => sqlx::query(&sql).bind(rank).execute(&mut *c).await.map(|_| ()))
            .map_err(error)
    }

    pub async fn realign_row(
        &mut self,
        rank: i32,
        checksum: i32,
        description: &str,
        kind: &str,
    ) -> Result<(), DbError> {
        let p = |n| placeholder(self.dialect, n);
        let sql = format!(
            "UPDATE flyway_schema_history SET checksum = {}, description = {}, type = {} WHERE installed_rank = {}",
            p(1), p(2), p(3), p(4)
        );
        let error = self.query_error("realigning a row of flyway_schema_history");
        on!(&mut self.conn, c => sqlx::query(&sql)
            .bind(checksum)
            .bind(description)
            .bind(kind)
            .bind(rank)
            .execute(&mut *c)
            .await
            .map(|_| ()))
        .map_err(error)
    }

    pub async fn begin(&mut self) -> Result<(), DbError> {
        let sql = match self.dialect {
            Dialect::Postgres => "BEGIN",
            // Takes SQLite's write lock at once: two migrators serialise
            // here, and the one that waited re-reads the history.
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::MySql => "START TRANSACTION",
        };
        self.execute_or(sql, "starting a transaction").await
    }

    pub async fn commit(&mut self) -> Result<(), DbError> {
        self.execute_or("COMMIT", "committing").await
    }

    /// Rolls back, keeping the first error if this one fails too.
    pub async fn rollback(&mut self) {
        if let Err(e) = self.execute("ROLLBACK").await {
            tracing::warn!(target = self.target, error = %e, "rollback failed");
        }
    }

    /// Takes the database-wide migration lock, waiting up to `wait` for
    /// another migrator to finish. PostgreSQL: a session advisory lock keyed
    /// on the history table's schema; MySQL: a named lock. SQLite has no
    /// such lock: each migration takes the database's write lock instead
    /// (`BEGIN IMMEDIATE`) and re-reads the history under it.
    pub async fn lock(&mut self, wait: Duration) -> Result<(), DbError> {
        let sql = match self.dialect {
            Dialect::Postgres => {
                "SELECT CAST(pg_try_advisory_lock(1651470446, hashtext(current_schema() || '.flyway_schema_history')) AS INT)"
            }
            Dialect::MySql => {
                "SELECT CAST(GET_LOCK(CONCAT('baton:', DATABASE(), '.flyway_schema_history'), 0) AS SIGNED)"
            }
            Dialect::Sqlite => return Ok(()),
        };
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let error = self.query_error("taking the migration lock");
            let got: i64 = match self.dialect {
                Dialect::Postgres => {
                    let n: i32 =
                        on!(&mut self.conn, c => sqlx::query_scalar(sql).fetch_one(&mut *c).await)
                            .map_err(error)?;
                    n.into()
                }
                _ => on!(&mut self.conn, c => sqlx::query_scalar(sql).fetch_one(&mut *c).await)
                    .map_err(error)?,
            };
            if got == 1 {
                self.locked = true;
                return Ok(());
            }
            if started.elapsed() >= wait {
                return Err(DbError::Locked {
                    target: self.target.clone(),
                    waited: wait,
                });
            }
            tracing::info!(
                target = self.target,
                "another migration holds the lock; waiting"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    pub async fn unlock(&mut self) {
        if !self.locked {
            return;
        }
        let sql = match self.dialect {
            Dialect::Postgres => {
                "SELECT pg_advisory_unlock(1651470446, hashtext(current_schema() || '.flyway_schema_history'))"
            }
            Dialect::MySql => {
                "SELECT RELEASE_LOCK(CONCAT('baton:', DATABASE(), '.flyway_schema_history'))"
            }
            Dialect::Sqlite => return,
        };
        if let Err(e) = self.execute(sql).await {
            // The lock goes with the session when the connection closes.
            tracing::warn!(target = self.target, error = %e, "releasing the migration lock failed");
        }
        self.locked = false;
    }

    pub async fn close(mut self) {
        self.unlock().await;
        let _ = match self.conn {
            Conn::Pg(c) => c.close().await,
            Conn::Lite(c) => c.close().await,
            Conn::My(c) => c.close().await,
        };
    }
}

struct RawRow {
    installed_rank: i32,
    version: Option<String>,
    description: String,
    kind: String,
    script: String,
    checksum: Option<i32>,
    installed_by: String,
    installed_on: String,
    execution_time: i32,
    success: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/app"),
            "postgres://app:***@db:5432/app"
        );
        assert_eq!(
            redact("postgres://localhost/app"),
            "postgres://localhost/app"
        );
        assert_eq!(redact("sqlite://data/app.db"), "sqlite://data/app.db");
    }

    #[test]
    fn dialects_come_from_the_scheme() {
        assert_eq!(dialect_of("postgresql://x/y").unwrap(), Dialect::Postgres);
        assert_eq!(dialect_of("mariadb://x/y").unwrap(), Dialect::MySql);
        assert_eq!(dialect_of("sqlite::memory:").unwrap(), Dialect::Sqlite);
        let err = dialect_of("oracle://a:pw@x/y").unwrap_err().to_string();
        assert!(err.contains("oracle://a:***@x/y"), "{err}");
    }
}
