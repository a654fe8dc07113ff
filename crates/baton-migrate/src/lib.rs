//! The pure core of Baton's database migrations: Flyway-compatible naming,
//! checksums and history planning, a zero-downtime linter, and a generator
//! for the expand/contract pair of a column rename.
//!
//! This crate owns the decisions about migrations; it must never open a
//! database connection. The runner (PostgreSQL, SQLite, MySQL) reads
//! `flyway_schema_history` into [`HistoryRow`]s, asks this crate what to do,
//! runs the statements [`split`] gives it, and writes back the rows the plans
//! describe. The only I/O here is [`discover`], which lists and reads the
//! migrations folder.
//!
//! Modules, each usable alone:
//! - [`version`]: Flyway versions (`1.2` == `1_2`, `1.10` > `1.9`).
//! - [`mod@checksum`]: Flyway's CRC-32 over a script's lines.
//! - [`dialect`]: PostgreSQL, SQLite or MySQL, from a URL's scheme.
//! - [`discovery`]: file names, script configuration, duplicate checks.
//! - [`history`]: the `flyway_schema_history` row.
//! - [`plan`]: `info`, `validate`, and the plans of `migrate`, `repair`, `baseline`.
//! - [`sql`]: a PostgreSQL tokenizer and statement splitter with line numbers.
//! - [`lint`]: zero-downtime rules and the expand/contract classification.
//! - [`rename`]: the expand/contract pair for renaming a column.

pub mod checksum;
pub mod dialect;
pub mod discovery;
pub mod history;
pub mod lint;
pub mod plan;
pub mod rename;
pub mod sql;
pub mod version;

pub use checksum::checksum;
pub use dialect::Dialect;
pub use discovery::{discover, resolve, Discovery, DiscoveryError, Migration, SourceFile};
pub use history::{HistoryRow, MigrationType, NewHistoryRow};
pub use lint::{
    lint_batch, lint_migration, lint_sql, Finding, LintOptions, LintReport, Phase, Rule, Severity,
};
pub use plan::{
    info, plan_baseline, plan_migrate, plan_repair, validate, Info, MigratePlan, RepairPlan,
    Settings, State, ValidationError,
};
pub use rename::{ColumnRename, RenamePair};
pub use sql::{split, Statement};
pub use version::Version;

/// `n` and the noun, plural unless one: "1 migration", "2 problems".
pub(crate) fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
