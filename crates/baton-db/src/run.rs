//! The commands: migrate, info, validate, repair, baseline, each carrying out
//! what `baton-migrate` planned from the files and the history it read.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use baton_migrate::plan::{Info, RepairPlan, Step};
use baton_migrate::{
    lint_batch, lint_migration, plan_baseline, plan_migrate, plan_repair, split, Finding,
    LintOptions, LintReport, Migration, NewHistoryRow, Phase, Settings, ValidationError, Version,
};
use serde::Serialize;

use crate::conn::{Database, Dialect};
use crate::DbError;

/// Which halves of the pending migrations `migrate` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phases {
    /// Everything pending, as Flyway does.
    All,
    /// Only expand migrations: what a deploy applies before the new release
    /// starts.
    Expand,
    /// Only contract migrations: once no older release runs.
    Contract,
}

impl Phases {
    fn admits(self, phase: Phase) -> bool {
        match self {
            Phases::All => true,
            Phases::Expand => phase == Phase::Expand,
            Phases::Contract => phase == Phase::Contract,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Flyway's settings. `deferred` is filled in by the commands: contract
    /// migrations may always run out of order, since Baton defers them.
    pub settings: Settings,
    /// How long a statement may wait for a table lock.
    pub lock_timeout: Duration,
    /// How long to wait for another migrator to finish.
    pub lock_wait: Duration,
    /// `installed_by`; the database user when `None`, as in Flyway.
    pub installed_by: Option<String>,
    /// Refuse to apply anything when a migration to apply has a lint error.
    pub refuse_unsafe: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            settings: Settings::default(),
            lock_timeout: Duration::from_secs(5),
            lock_wait: Duration::from_secs(600),
            installed_by: None,
            refuse_unsafe: false,
        }
    }
}

impl Options {
    /// How the linter judges migrations run with these options on
    /// `dialect`: the one set of lint options the deploy's gate,
    /// `baton db lint` and `baton db plan` share (the runner's lock timeout
    /// satisfies `require-lock-timeout`).
    pub fn lint_options(&self, dialect: Dialect) -> LintOptions {
        LintOptions {
            dialect,
            runner_lock_timeout: !self.lock_timeout.is_zero(),
            ..LintOptions::default()
        }
    }

    fn settings_for(&self, files: &[Migration], dialect: Dialect) -> Settings {
        let lint = self.lint_options(dialect);
        let reports: Vec<LintReport> = files.iter().map(|m| lint_migration(m, &lint)).collect();
        self.settings_with(&reports)
    }

    /// The settings, with contract migrations allowed out of order.
    fn settings_with<'a>(&self, reports: impl IntoIterator<Item = &'a LintReport>) -> Settings {
        let mut settings = self.settings.clone();
        settings.deferred = reports
            .into_iter()
            .filter(|r| r.phase == Phase::Contract)
            .map(|r| r.script.clone())
            .collect();
        settings
    }
}

/// Asked before a run applies contract migrations, with their scripts, under
/// the migration lock; an `Err` (saying why not, and the way out) stops the
/// run before anything is applied. `baton db migrate` asks the Baton server
/// through it, so that a contract applied by hand obeys the same rule as one
/// the server applies.
pub trait ContractGate: Send + Sync {
    fn allow<'a>(
        &'a self,
        scripts: &'a [String],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;
}

/// One migration applied by `migrate`.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub version: Option<String>,
    pub description: String,
    pub script: String,
    pub phase: Phase,
    pub in_transaction: bool,
    pub out_of_order: bool,
    pub execution_ms: i32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateReport {
    /// The version a baseline marker was written at, with baselineOnMigrate.
    pub baselined: Option<String>,
    pub applied: Vec<Applied>,
    /// Pending migrations left for another phase.
    pub left: Vec<String>,
    pub warnings: Vec<String>,
}

/// Applies the pending migrations of `phases`, each in its own transaction
/// where the database and the script allow, under the migration lock.
pub async fn migrate(
    db: &mut Database,
    files: &[Migration],
    options: &Options,
    phases: Phases,
) -> Result<MigrateReport, DbError> {
    migrate_locking(db, files, options, phases, None).await
}

/// [`migrate`], asking `gate` first when contract migrations would be
/// applied.
pub async fn migrate_gated(
    db: &mut Database,
    files: &[Migration],
    options: &Options,
    phases: Phases,
    gate: &dyn ContractGate,
) -> Result<MigrateReport, DbError> {
    migrate_locking(db, files, options, phases, Some(gate)).await
}

async fn migrate_locking(
    db: &mut Database,
    files: &[Migration],
    options: &Options,
    phases: Phases,
    gate: Option<&dyn ContractGate>,
) -> Result<MigrateReport, DbError> {
    db.set_lock_timeout(options.lock_timeout).await?;
    db.lock(options.lock_wait).await?;
    let result = migrate_locked(db, files, options, phases, gate).await;
    db.unlock().await;
    result
}

/// The pending migrations a run would apply now, in order, each with the
/// linter's verdict as the run's gate judges it (the batch as one, on this
/// database's dialect, with these options).
pub async fn lint_pending(
    db: &mut Database,
    files: &[Migration],
    options: &Options,
) -> Result<Vec<LintReport>, DbError> {
    let history = db.history().await?;
    let settings = options.settings_for(files, db.dialect());
    let info = baton_migrate::info(files, &history, &settings);
    let batch = info
        .pending()
        .filter_map(|entry| files.iter().find(|m| m.script == entry.script));
    Ok(lint_batch(batch, &options.lint_options(db.dialect())))
}

async fn migrate_locked(
    db: &mut Database,
    files: &[Migration],
    options: &Options,
    phases: Phases,
    gate: Option<&dyn ContractGate>,
) -> Result<MigrateReport, DbError> {
    let user = match &options.installed_by {
        Some(user) => user.clone(),
        None => db.current_user().await?,
    };
    // Each file alone decides which are contract (allowed out of order);
    // the first plan's batch is then judged as one, and that verdict holds
    // for the whole run, however often the plan is remade.
    let lint = options.lint_options(db.dialect());
    let single: HashMap<&str, LintReport> = files
        .iter()
        .map(|m| (m.script.as_str(), lint_migration(m, &lint)))
        .collect();
    let mut judged: HashMap<String, LintReport> = HashMap::new();
    let mut settings = options.settings_with(single.values());
    if settings.baseline_on_migrate.is_some()
        && !(db.history().await?.is_empty() && db.schema_has_tables().await?)
    {
        settings.baseline_on_migrate = None;
    }
    db.create_history().await?;

    let mut report = MigrateReport::default();
    let sqlite = db.dialect() == Dialect::Sqlite;
    let mut checked = false;
    loop {
        // SQLite: each migration under the database's write lock, planned
        // afresh from the history read under it.
        if sqlite {
            begin_waiting(db, options.lock_wait).await?;
        }
        let step = async {
            let history = db.history().await?;
            let plan = plan_migrate(files, &history, &settings, &user)?;
            if !checked {
                judged = lint_batch(plan.steps.iter().map(|step| &step.migration), &lint)
                    .into_iter()
                    .map(|report| (report.script.clone(), report))
                    .collect();
            }
            // Plan steps are the files' own migrations, named by script.
            let reports: Vec<&LintReport> = plan
                .steps
                .iter()
                .map(|step| {
                    let script = step.migration.script.as_str();
                    judged.get(script).unwrap_or(&single[script])
                })
                .collect();
            let first = !checked;
            if !checked {
                checked = true;
                report.warnings = plan.warnings.clone();
                // Every pending migration counts, whichever phase runs now:
                // a contract statement left unmarked in an expand migration
                // is the very thing to stop.
                if options.refuse_unsafe {
                    let findings: Vec<Finding> =
                        reports.iter().flat_map(|r| r.errors().cloned()).collect();
                    if !findings.is_empty() {
                        return Err(DbError::Unsafe(findings));
                    }
                }
            }
            let mut steps: Vec<(Step, Phase, bool)> = Vec::new();
            let mut left = Vec::new();
            for (step, lint) in plan.steps.into_iter().zip(reports) {
                if phases.admits(lint.phase) {
                    steps.push((step, lint.phase, lint.execute_in_transaction));
                } else {
                    left.push(step.migration.script.clone());
                }
            }
            if let (true, Some(gate)) = (first, gate) {
                let contracts: Vec<String> = steps
                    .iter()
                    .filter(|(_, phase, _)| *phase == Phase::Contract)
                    .map(|(step, _, _)| step.migration.script.clone())
                    .collect();
                if !contracts.is_empty() {
                    if let Err(reason) = gate.allow(&contracts).await {
                        return Err(DbError::ContractRefused {
                            scripts: contracts,
                            reason,
                        });
                    }
                }
            }
            if let Some(row) = &plan.baseline {
                db.insert_row(row).await?;
                report.baselined = row.version.as_ref().map(|v| v.to_string());
            }
            report.left = left;
            Ok::<_, DbError>(steps)
        }
        .await;
        let steps = match step {
            Ok(steps) => steps,
            Err(e) => {
                if sqlite {
                    db.rollback().await;
                }
                return Err(e);
            }
        };
        if steps.is_empty() {
            if sqlite {
                db.commit().await?;
            }
            return Ok(report);
        }
        let take = if sqlite { 1 } else { steps.len() };
        for (step, phase, in_transaction) in steps.into_iter().take(take) {
            let args = settings.command_args.as_deref();
            let applied = apply(db, &step, phase, in_transaction, &user, sqlite, args).await?;
            report.applied.push(applied);
        }
        if !sqlite {
            return Ok(report);
        }
    }
}

/// `BEGIN IMMEDIATE` on SQLite, retried while another writer holds the
/// database, up to `wait`.
async fn begin_waiting(db: &mut Database, wait: Duration) -> Result<(), DbError> {
    let started = Instant::now();
    loop {
        match db.begin().await {
            Ok(()) => return Ok(()),
            Err(DbError::Query { error, .. }) if is_busy(&error) && started.elapsed() < wait => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(DbError::Query { error, .. }) if is_busy(&error) => {
                return Err(DbError::Locked {
                    target: db.target().to_string(),
                    waited: wait,
                })
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_busy(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "5" || code == "6" || code == "517")
}

/// Runs one migration and records it. `open` says a transaction is already
/// open (SQLite's planning transaction).
async fn apply(
    db: &mut Database,
    step: &Step,
    phase: Phase,
    in_transaction: bool,
    user: &str,
    open: bool,
    args: Option<&str>,
) -> Result<Applied, DbError> {
    let migration = &step.migration;
    let statements: Vec<(u32, String)> = if db.dialect() == Dialect::Sqlite {
        // SQLite reads its own scripts (trigger bodies hold `;`).
        vec![(1, migration.sql.clone())]
    } else {
        split(&migration.sql)
            .map_err(|e| DbError::Script {
                script: migration.script.clone(),
                reason: e.to_string(),
            })?
            .into_iter()
            .map(|s| (s.line, s.text))
            .collect()
    };
    let transactional = in_transaction || db.dialect() == Dialect::Sqlite;
    if open && !transactional {
        db.commit().await?;
    }
    if transactional && !open {
        db.begin().await?;
    }
    let started = Instant::now();
    // Statements that took effect whatever happens next: all of them outside
    // a transaction; inside one, only those the database commits by itself.
    let mut done = 0usize;
    for (line, sql) in &statements {
        if let Err(error) = db.execute(sql).await {
            let ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
            if transactional {
                db.rollback().await;
            }
            let outcome = if done == 0 && transactional {
                "the migration was rolled back: the schema and flyway_schema_history are as they were before it".to_string()
            } else {
                failed_row(db, step, user, ms, done, args).await
            };
            return Err(DbError::Failed {
                script: migration.script.clone(),
                line: *line,
                error,
                outcome,
            });
        }
        if !transactional || (!db.dialect().transactional_ddl() && commits_implicitly(sql)) {
            done += 1;
        }
    }
    let ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
    let recorded = db.insert_row(&step.history_row(user, ms, true)).await;
    if let Err(e) = recorded {
        if transactional {
            db.rollback().await;
        }
        return Err(e);
    }
    if transactional {
        db.commit().await?;
    }
    Ok(Applied {
        version: migration.version.as_ref().map(|v| v.to_string()),
        description: migration.description.clone(),
        script: migration.script.clone(),
        phase,
        in_transaction: transactional,
        out_of_order: step.out_of_order,
        execution_ms: ms,
    })
}

/// Whether MySQL commits this statement (and the transaction before it) by
/// itself: data definition and a few administrative statements.
fn commits_implicitly(sql: &str) -> bool {
    let word = sql
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    matches!(
        word.as_str(),
        "CREATE" | "ALTER" | "DROP" | "RENAME" | "TRUNCATE" | "GRANT" | "REVOKE" | "LOCK"
    )
}

/// After a failure outside a transaction: records a failed row when some
/// statements took effect (as Flyway does), and says what was left.
async fn failed_row(
    db: &mut Database,
    step: &Step,
    user: &str,
    ms: i32,
    done: usize,
    args: Option<&str>,
) -> String {
    if done == 0 {
        return "no statement before the failing one took effect, so flyway_schema_history is unchanged".into();
    }
    let how = if db.dialect().transactional_ddl() {
        format!(
            "it ran outside a transaction and the {} before the failing one took effect",
            crate::count(done, "statement")
        )
    } else {
        format!("it was rolled back, but MySQL commits DDL by itself, so the {} before the failing one took effect", crate::count(done, "DDL statement"))
    };
    let row: NewHistoryRow = step.history_row(user, ms, false);
    match db.insert_row(&row).await {
        Ok(()) => format!(
            "{how}; flyway_schema_history records it as failed: undo or finish those statements by hand, then run `{}` and migrate again",
            baton_migrate::plan::db_command("repair", args)
        ),
        Err(e) => format!("{how}; recording it as failed also failed ({e})"),
    }
}

/// Files and history reconciled, as `flyway info`.
pub async fn info(
    db: &mut Database,
    files: &[Migration],
    options: &Options,
) -> Result<Info, DbError> {
    let history = db.history().await?;
    Ok(baton_migrate::info(
        files,
        &history,
        &options.settings_for(files, db.dialect()),
    ))
}

/// Flyway's `validate`: every problem, or none.
pub async fn validate(
    db: &mut Database,
    files: &[Migration],
    options: &Options,
) -> Result<Vec<ValidationError>, DbError> {
    let history = db.history().await?;
    Ok(baton_migrate::validate(
        files,
        &history,
        &options.settings_for(files, db.dialect()),
        false,
    ))
}

/// Flyway's `repair`, in one transaction under the migration lock.
pub async fn repair(
    db: &mut Database,
    files: &[Migration],
    options: &Options,
) -> Result<RepairPlan, DbError> {
    db.set_lock_timeout(options.lock_timeout).await?;
    db.lock(options.lock_wait).await?;
    let result = async {
        let user = match &options.installed_by {
            Some(user) => user.clone(),
            None => db.current_user().await?,
        };
        if db.dialect() == Dialect::Sqlite {
            begin_waiting(db, options.lock_wait).await?;
        } else {
            db.begin().await?;
        }
        let written = async {
            let history = db.history().await?;
            let settings = options.settings_for(files, db.dialect());
            let plan = plan_repair(files, &history, &settings, &user);
            for row in &plan.remove_failed {
                db.delete_row(row.installed_rank).await?;
            }
            for row in &plan.mark_deleted {
                db.insert_row(row).await?;
            }
            for r in &plan.realign {
                db.realign_row(
                    r.before.installed_rank,
                    r.checksum,
                    &r.description,
                    r.kind.as_str(),
                )
                .await?;
            }
            Ok::<_, DbError>(plan)
        }
        .await;
        match written {
            Ok(plan) => {
                db.commit().await?;
                Ok(plan)
            }
            Err(e) => {
                db.rollback().await;
                Err(e)
            }
        }
    }
    .await;
    db.unlock().await;
    result
}

/// Flyway's `baseline`: the marker row in an empty history. `None` when the
/// same baseline was already there.
pub async fn baseline(
    db: &mut Database,
    version: &Version,
    description: Option<&str>,
    options: &Options,
) -> Result<Option<NewHistoryRow>, DbError> {
    db.set_lock_timeout(options.lock_timeout).await?;
    db.lock(options.lock_wait).await?;
    let result = async {
        let user = match &options.installed_by {
            Some(user) => user.clone(),
            None => db.current_user().await?,
        };
        db.create_history().await?;
        if db.dialect() == Dialect::Sqlite {
            begin_waiting(db, options.lock_wait).await?;
        } else {
            db.begin().await?;
        }
        let written = async {
            let history = db.history().await?;
            let row = plan_baseline(&history, version, description, &user)?;
            if let Some(row) = &row {
                db.insert_row(row).await?;
            }
            Ok::<_, DbError>(row)
        }
        .await;
        match written {
            Ok(row) => {
                db.commit().await?;
                Ok(row)
            }
            Err(e) => {
                db.rollback().await;
                Err(e)
            }
        }
    }
    .await;
    db.unlock().await;
    result
}
