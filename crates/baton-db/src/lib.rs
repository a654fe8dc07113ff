//! Runs an app's Flyway-style migrations against its database: PostgreSQL,
//! SQLite or MySQL/MariaDB, through sqlx.
//!
//! This crate owns talking to the app's database: the
//! `flyway_schema_history` table (created, read and written exactly as
//! Flyway does), the migration lock, the lock timeout, and running each
//! migration in its own transaction where the database allows. It must never
//! decide what to run or in which order: `baton-migrate` plans, this crate
//! carries the plan out and re-reads the history under the lock before
//! acting, so two migrators never apply the same migration twice.
//!
//! What a failure leaves behind:
//! - a migration run in a transaction (every one on PostgreSQL and SQLite,
//!   unless it is marked `-- baton:no-transaction`) is rolled back whole and
//!   no history row is written: schema and history are as before it;
//! - one run outside a transaction (or on MySQL, whose DDL commits itself)
//!   may have applied the statements before the failing one; if any was
//!   applied, a failed row is recorded, as Flyway does, and migrate refuses
//!   to go on until `repair` removes it.

mod conn;
mod import;
mod run;

use std::time::Duration;

pub use conn::{dialect_of, redact, Database, Dialect, HISTORY_TABLE};
pub use import::{flyway_name, import_sqlx, SqlxRow};
pub use run::{
    baseline, info, lint_pending, migrate, migrate_gated, repair, validate, Applied, ContractGate,
    MigrateReport, Options, Phases,
};

/// What went wrong. The database's own errors are part of the message and
/// deliberately not a `source`: a caller printing the chain would repeat
/// them (`relation "x" does not exist: relation "x" does not exist`).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot connect to {target}: {}", said(.error))]
    Connect { target: String, error: sqlx::Error },
    #[error("{target}: {context}: {}", said(.error))]
    Query {
        target: String,
        context: String,
        error: sqlx::Error,
    },
    #[error("{target}: flyway_schema_history is unreadable: {reason}")]
    BadHistory { target: String, reason: String },
    #[error("{target}: another migration held the lock for {}; nothing was applied, try again once it is done", humantime_secs(*.waited))]
    Locked { target: String, waited: Duration },
    #[error("{0}")]
    Plan(#[from] baton_migrate::plan::MigrateError),
    #[error("{0}")]
    Baseline(#[from] baton_migrate::plan::BaselineError),
    #[error("{script}: {reason}")]
    Script { script: String, reason: String },
    #[error("{script}:{line}: {}\n{outcome}", said(.error))]
    Failed {
        script: String,
        line: u32,
        error: sqlx::Error,
        outcome: String,
    },
    #[error("{} {} refused: {reason}; nothing was applied", if .scripts.len() == 1 { "contract migration" } else { "contract migrations" }, .scripts.join(", "))]
    ContractRefused {
        scripts: Vec<String>,
        reason: String,
    },
    #[error("cannot import the sqlx history: {0}")]
    Import(String),
    #[error("{} in the migrations to apply would break the release still running or block a busy table; nothing was applied:\n{}", count(.0.len(), "problem"), render_findings(.0))]
    Unsafe(Vec<baton_migrate::Finding>),
}

/// What the database said, without sqlx's "error returned from database: "
/// wrapper: for a database error, its own message.
fn said(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(e) => e.message().to_string(),
        other => other.to_string(),
    }
}

/// `n` and the noun, plural unless one: "1 problem", "2 statements".
pub(crate) fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn render_findings(findings: &[baton_migrate::Finding]) -> String {
    findings
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
