//! The zero-downtime linter: which statements would break the release still
//! running or lock a busy table, and whether a migration is *expand* or
//! *contract*.
//!
//! This module owns judging migration SQL before a deploy. It must never run
//! SQL or read files; it reads text with [`crate::sql`] and decides. Rules
//! are modelled on squawk's and carry its ids (see [`Rule::ALL`]); each
//! [`Finding`] names its rule, script and line, and says why the statement
//! hurts and what to do instead.
//!
//! Severity: an *error* is what breaks the release still running or blocks
//! a busy table (a lock held for a scan, a rewrite, a dropped column, a
//! `DROP DATABASE`); any error stops the deploy. A *warning* is advice that
//! never stops one: column types that age badly (`int`, `smallint`,
//! `serial`, `varchar(n)`, `char(n)`, `timestamp`), statements of a
//! no-transaction migration that fail when it runs again, a missing
//! `statement_timeout`, `DROP NOT NULL`, constraints on new domains, enum
//! values added without `BEFORE`/`AFTER`, names PostgreSQL would cut to 63
//! bytes. The type rules apply to new tables too; the lock rules exempt
//! tables (and domains) the same migration made, and tables an earlier
//! expand migration of the same pending batch made ([`lint_batch`]).
//!
//! Dialects: the rules about PostgreSQL's locks and online DDL, its types
//! and its names apply to PostgreSQL only; on SQLite and MySQL the linter
//! judges what breaks the release still running and what breaks the script
//! ([`Rule::applies_to`]). squawk's rules against
//! dropping functions, views, types, triggers, defaults, sequences, schemas
//! and extensions, or renaming functions and types, are one rule here,
//! `contract-without-marker`: a migration marked contract may do them all.
//!
//! Why a tokenizer and not the `sqlparser` crate: `sqlparser` (0.63, tried on
//! the statements these rules care about) refuses `DROP INDEX CONCURRENTLY IF
//! EXISTS` (the very recipe the linter recommends), `DO` blocks (used for
//! batched backfills), `CLUSTER` and `REINDEX`, and one unreadable statement
//! fails the whole file; it has no comments to read directives from either.
//! The rules need keywords, names and line numbers, which a PostgreSQL-aware
//! tokenizer gives for every statement, and an unknown statement is simply
//! not flagged.
//!
//! Classification: a statement is *contract* when it drops or renames
//! something the running release may use (tables, columns, views,
//! functions, types, triggers, defaults, databases) or changes a column's
//! type, unless the object was made by the same migration; everything else
//! is *expand*.
//! A migration is contract when it holds a contract statement or is marked
//! `-- baton:contract`; Baton runs contract migrations only once the release
//! that used the removed things is gone.
//!
//! Directives, in `--` or `/* */` comments:
//! - `-- baton:no-transaction` runs the script outside a transaction (as
//!   Flyway's `<script>.conf` with `executeInTransaction=false`, which is also
//!   honoured). Without either, a script whose statements PostgreSQL refuses
//!   in a transaction (`CREATE INDEX CONCURRENTLY`, …) runs outside one, as
//!   Flyway decides, provided it holds nothing else.
//! - `-- baton:contract` declares the contract half: dropping tables,
//!   columns, functions… is then expected.
//! - `-- baton:allow <rule-id>[, …]` just above a statement accepts those
//!   rules' findings for that statement (they are kept in
//!   [`LintReport::allowed`]).

mod analyze;
mod check;
mod rules;

use std::fmt;

use serde::Serialize;

use crate::dialect::Dialect;
use crate::discovery::Migration;

pub use rules::{Rule, Severity};

/// Which half of an expand/contract change a statement or migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Safe while the previous release still runs.
    Expand,
    /// Only once no running release uses what it removes.
    Contract,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Expand => "expand",
            Phase::Contract => "contract",
        })
    }
}

/// What the linter needs to know about the target database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LintOptions {
    /// The database the migrations run on: PostgreSQL's locking, online-DDL,
    /// type and naming rules apply to PostgreSQL only (see
    /// [`Rule::applies_to`]).
    pub dialect: Dialect,
    /// The oldest PostgreSQL major version the migration must be safe on.
    pub postgres_major: u32,
    /// Whether the runner sets a `lock_timeout` for the session before each
    /// migration (Baton's runner does, by default), which satisfies
    /// `require-lock-timeout` (not `require-statement-timeout`: the runner
    /// sets no `statement_timeout`). Off for a plain lint: the script may be
    /// run by another tool.
    pub runner_lock_timeout: bool,
}

impl Default for LintOptions {
    fn default() -> Self {
        LintOptions {
            dialect: Dialect::Postgres,
            postgres_major: 14,
            runner_lock_timeout: false,
        }
    }
}

/// One problem in one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub script: String,
    pub line: u32,
    pub severity: Severity,
    /// What was found, naming the table, column or statement.
    pub message: String,
    pub why: &'static str,
    pub recipe: &'static str,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} [{}] {}\n  why: {}\n  fix: {}",
            self.script, self.line, self.severity, self.rule, self.message, self.why, self.recipe
        )
    }
}

/// How one statement was classified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementReport {
    pub line: u32,
    /// The statement's first words, to recognise it.
    pub summary: String,
    pub phase: Phase,
}

/// The linter's verdict on one migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LintReport {
    pub script: String,
    pub phase: Phase,
    /// Whether the runner wraps the script in one transaction.
    pub execute_in_transaction: bool,
    pub statements: Vec<StatementReport>,
    pub findings: Vec<Finding>,
    /// Findings accepted by `-- baton:allow`.
    pub allowed: Vec<Finding>,
}

impl LintReport {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

/// Lints a script's SQL; only the directives in its comments say how it runs.
pub fn lint_sql(script: &str, sql: &str, options: &LintOptions) -> LintReport {
    check::lint(script, sql, None, options, &[]).0
}

/// Lints a discovered migration on its own, honouring its `.conf` file too.
pub fn lint_migration(migration: &Migration, options: &LintOptions) -> LintReport {
    check::lint(
        &migration.script,
        &migration.sql,
        migration.execute_in_transaction,
        options,
        &[],
    )
    .0
}

/// Lints the migrations one run applies, in the order it applies them: the
/// one judgement the deploy's gate, `baton db plan` and `baton db lint`
/// share. A table created by an earlier expand migration of the batch is as
/// new to the later ones as to its own: the release still running has never
/// seen it, so indexing, altering or dropping it locks nothing anyone waits
/// on. (Tables made by a contract migration are not carried: an expand
/// migration after it in the batch runs before it.)
pub fn lint_batch<'a>(
    batch: impl IntoIterator<Item = &'a Migration>,
    options: &LintOptions,
) -> Vec<LintReport> {
    let mut new_tables = Vec::new();
    batch
        .into_iter()
        .map(|migration| {
            let (report, created) = check::lint(
                &migration.script,
                &migration.sql,
                migration.execute_in_transaction,
                options,
                &new_tables,
            );
            if report.phase == Phase::Expand {
                new_tables = created;
            }
            report
        })
        .collect()
}
