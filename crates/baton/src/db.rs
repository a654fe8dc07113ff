//! `baton db …`: the app's migrations, run from this machine against the
//! database of one of its environments. The URL comes from the
//! environment's configuration in baton.toml (the variable named by
//! `[database] url_env`, `DATABASE_URL` by default), or `--url`. Writing
//! recipes needs no database; linting uses one when it can, to leave out
//! what is already applied.
//!
//! Contract migrations obey the same rule here as in a deploy: before
//! applying one, `migrate` asks the Baton server of the environment, which
//! refuses while an older release is live or warm (unless `--force`) and
//! records it, so that no rollback goes back past it. What the linter
//! finds and how the runner runs come from the same translation of
//! `[database]` as the deploy's (`baton_orchestrator::database_options`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use baton_db::{ContractGate, Database, Dialect, Options, Phases};
use baton_migrate::{
    discover, lint_migration, ColumnRename, LintReport, Migration, Phase, Severity, Version,
};
use serde_json::{json, Value};

use crate::client::Api;
use crate::output::{bold, count, dim, green, red, table};

/// How long `lint` waits for the database before linting every migration.
const LINT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args, Clone)]
pub struct DbArgs {
    /// The app's folder, holding baton.toml.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment whose database to use (production unless given);
    /// with --url, the environment whose releases use that database.
    #[arg(short, long)]
    pub environment: Option<String>,
    /// The database URL (postgres://, sqlite://, mysql://), instead of the
    /// environment's.
    #[arg(long)]
    pub url: Option<String>,
    /// Flyway's outOfOrder: apply versions below the highest applied one.
    #[arg(long)]
    pub out_of_order: bool,
    /// Flyway's target: leave versions above this one alone.
    #[arg(long)]
    pub target: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl DbArgs {
    fn environment(&self) -> &str {
        self.environment
            .as_deref()
            .unwrap_or(baton_manifest::DEFAULT_ENVIRONMENT)
    }

    /// How a suggested `baton db` command names this database: the folder
    /// and `--url` as given, and always `-e ENV`, so that a hint never runs
    /// against production by accident.
    fn command_args(&self) -> String {
        let mut args = Vec::new();
        if self.dir != Path::new(".") {
            args.push(self.dir.display().to_string());
        }
        args.push(format!("-e {}", self.environment()));
        if self.url.is_some() {
            args.push("--url URL".to_string());
        }
        args.join(" ")
    }
}

#[derive(clap::Subcommand, Clone)]
pub enum Recipe {
    /// The expand/contract pair renaming a PostgreSQL column without
    /// downtime: add the new column, keep both in step with a trigger,
    /// backfill in batches; later drop the trigger and the old column.
    RenameColumn {
        /// The table holding the column.
        table: String,
        /// The column's current name.
        from: String,
        /// Its new name.
        to: String,
        /// The column's type, e.g. `text` or `numeric(10,2)`.
        #[arg(long = "type")]
        column_type: String,
        /// A unique, indexed column to walk the table by.
        #[arg(long, default_value = "id")]
        key: String,
        /// Rows copied per committed batch.
        #[arg(long, default_value_t = 1000)]
        batch: u32,
        /// The new column ends NOT NULL (proved by a validated check first).
        #[arg(long)]
        not_null: bool,
        /// The table's schema, if not the search path's.
        #[arg(long)]
        schema: Option<String>,
        /// The app's folder, holding baton.toml.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

struct Loaded {
    app: String,
    folder: PathBuf,
    migrations: Vec<Migration>,
    options: Options,
    url: String,
}

fn section(dir: &Path) -> Result<(baton_manifest::Manifest, baton_manifest::DatabaseSection)> {
    let manifest = baton_manifest::Manifest::load(dir)?;
    let database = manifest.database.clone().ok_or_else(|| {
        anyhow!(
            "{}: no migrations folder; add [database] migrations = \"db/migrations\"",
            dir.join(baton_manifest::FILE_NAME).display()
        )
    })?;
    Ok((manifest, database))
}

/// The manifest's migrations and the options to run them with, without a
/// database.
struct Files {
    manifest: baton_manifest::Manifest,
    database: baton_manifest::DatabaseSection,
    folder: PathBuf,
    discovered: baton_migrate::Discovery,
    options: Options,
}

fn files(args: &DbArgs) -> Result<Files> {
    baton_manifest::check_name("environment", args.environment()).map_err(|e| anyhow!(e))?;
    let (manifest, database) = section(&args.dir)?;
    let folder = args.dir.join(&database.migrations);
    let discovered = discover(&folder).map_err(|e| anyhow!("{}: {e}", folder.display()))?;
    let mut options = baton_orchestrator::database_options(&database).map_err(|e| anyhow!(e))?;
    options.settings.out_of_order |= args.out_of_order;
    options.settings.command_args = Some(args.command_args());
    if let Some(target) = &args.target {
        options.settings.target =
            Some(Version::parse(target).map_err(|e| anyhow!("--target {target:?}: {e}"))?);
    }
    Ok(Files {
        manifest,
        database,
        folder,
        discovered,
        options,
    })
}

/// The database URL: `--url`, else the environment's variable in
/// baton.toml, else the same variable in this process's environment.
fn url_of(args: &DbArgs, files: &Files) -> Result<String> {
    if let Some(url) = &args.url {
        return Ok(url.clone());
    }
    let env = args.environment();
    let var = &files.database.url_env;
    match files.manifest.environment(env).env.get(var) {
        Some(url) => Ok(url.clone()),
        None => std::env::var(var).map_err(|_| {
            anyhow!(
                "no database URL for environment {env}: set {var} in [environments.{env}.env] (or [env]) of {manifest}, or pass --url",
                manifest = args.dir.join(baton_manifest::FILE_NAME).display(),
            )
        }),
    }
}

fn load(args: &DbArgs) -> Result<Loaded> {
    let files = files(args)?;
    let url = url_of(args, &files)?;
    Ok(Loaded {
        app: files.manifest.name.clone(),
        folder: files.folder,
        migrations: files.discovered.migrations,
        options: files.options,
        url,
    })
}

async fn connect(loaded: &Loaded) -> Result<Database> {
    Ok(Database::connect(&loaded.url).await?)
}

/// The gate `migrate` passes its contract migrations through: the Baton
/// server of the environment checks the contract rule and records them.
struct AskServer {
    api: Api,
    app: String,
    environment: String,
    /// `--url` without `-e`: nobody said which environment's database it is.
    unnamed: bool,
    force: bool,
    /// Whether an expand half could be applied alone instead.
    expand_too: bool,
    /// What the server recorded.
    recorded: Mutex<Option<Value>>,
}

impl ContractGate for AskServer {
    fn allow<'a>(
        &'a self,
        scripts: &'a [String],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            if self.unnamed {
                return Err("--url names a database but not the environment whose releases use it; add -e ENV, so that the Baton server can check and record contract migrations applied by hand".into());
            }
            let asked = self
                .api
                .post_json::<Value>(
                    &format!("/apps/{}/contracts", self.app),
                    &json!({"environment": self.environment, "scripts": scripts, "force": self.force}),
                )
                .await;
            match asked {
                Ok(recorded) => {
                    *self.recorded.lock().unwrap_or_else(|e| e.into_inner()) = Some(recorded);
                    Ok(())
                }
                // The client's own words for a server it cannot reach:
                // forcing would not help, the server must record it.
                Err(e) if e.to_string().starts_with("cannot reach the Baton server") => Err(format!(
                    "{e}; the server of {} must record contract migrations applied by hand, so that no rollback goes back past them",
                    self.environment
                )),
                Err(e) if self.force => Err(e.to_string()),
                Err(e) => {
                    let expand = if self.expand_too {
                        "`--phase expand` applies only the expand half now, "
                    } else {
                        ""
                    };
                    Err(format!(
                        "{e}; {expand}`--force` applies the contract half anyway (the server records it, with you as the actor)"
                    ))
                }
            }
        })
    }
}

pub async fn migrate(
    args: &DbArgs,
    phase: &str,
    allow_unsafe: bool,
    force: bool,
    api: &str,
) -> Result<ExitCode> {
    let mut loaded = load(args)?;
    loaded.options.refuse_unsafe = !allow_unsafe;
    let phases = match phase {
        "expand" => Phases::Expand,
        "contract" => Phases::Contract,
        _ => Phases::All,
    };
    let gate = AskServer {
        api: Api::new(api),
        app: loaded.app.clone(),
        environment: args.environment().to_string(),
        unnamed: args.url.is_some() && args.environment.is_none(),
        force,
        expand_too: phases == Phases::All,
        recorded: Mutex::new(None),
    };
    let mut db = connect(&loaded).await?;
    let progress = crate::output::Progress::start("applying migrations");
    let result =
        baton_db::migrate_gated(&mut db, &loaded.migrations, &loaded.options, phases, &gate).await;
    drop(progress);
    let target = db.target().to_string();
    db.close().await;
    let recorded = gate
        .recorded
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    if let (Err(_), Some(_)) = (&result, &recorded) {
        // Recorded before it ran, as every step is: the server errs on the
        // side of refusing rollbacks.
        eprintln!(
            "{}",
            dim("note: the Baton server had recorded these contract migrations as applied by hand before the run; it keeps refusing rollbacks to releases without them")
        );
    }
    let report = result?;
    if args.json {
        let mut out = serde_json::to_value(&report)?;
        out["contract_by_hand"] = recorded.unwrap_or(Value::Null);
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    for warning in &report.warnings {
        println!("{} {warning}", bold("warning"));
    }
    if let Some(version) = &report.baselined {
        println!("{} baselined at version {version}", green("✓"));
    }
    for applied in &report.applied {
        let mut notes = vec![
            applied.phase.to_string(),
            format!("{} ms", applied.execution_ms),
        ];
        if !applied.in_transaction {
            notes.push("outside a transaction".into());
        }
        if applied.out_of_order {
            notes.push("out of order".into());
        }
        println!(
            "{} {} {}",
            green("✓"),
            applied.script,
            dim(&format!("({})", notes.join(", ")))
        );
    }
    for left in &report.left {
        println!("{} {left} {}", dim("·"), dim("(left for its phase)"));
    }
    println!(
        "{} applied to {target}",
        count(report.applied.len(), "migration")
    );
    if let Some(recorded) = recorded {
        match recorded["forced_past"].as_str() {
            Some(why) => println!(
                "{} contract migrations applied with --force although {why}; the Baton server recorded it (audit log, events), and refuses rollbacks to releases without them",
                bold("warning")
            ),
            None => println!(
                "{}",
                dim("the Baton server recorded the contract migrations applied by hand; it refuses rollbacks to releases without them")
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn info(args: &DbArgs) -> Result<ExitCode> {
    let loaded = load(args)?;
    let mut db = connect(&loaded).await?;
    let info = baton_db::info(&mut db, &loaded.migrations, &loaded.options).await;
    let pending = baton_db::lint_pending(&mut db, &loaded.migrations, &loaded.options).await;
    let (target, dialect) = (db.target().to_string(), db.dialect());
    db.close().await;
    let (info, pending) = (info?, pending?);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    let phase_of = |script: &str| {
        let judged = pending.iter().find(|r| r.script == script).map(|r| r.phase);
        judged.or_else(|| {
            let options = loaded.options.lint_options(dialect);
            loaded
                .migrations
                .iter()
                .find(|m| m.script == script)
                .map(|m| lint_migration(m, &options).phase)
        })
    };
    let mut rows = vec![vec![
        "VERSION".to_string(),
        "DESCRIPTION".into(),
        "TYPE".into(),
        "INSTALLED ON".into(),
        "STATE".into(),
        "PHASE".into(),
    ]];
    for entry in &info.entries {
        rows.push(vec![
            entry
                .version
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default(),
            entry.description.clone(),
            entry.kind.to_string(),
            entry.installed_on.clone().unwrap_or_default(),
            entry.state.name().to_string(),
            phase_of(&entry.script)
                .map(|p| p.to_string())
                .unwrap_or_default(),
        ]);
    }
    println!("{target}, migrations in {}", loaded.folder.display());
    table(&rows);
    match &info.current {
        Some(version) => println!("schema version: {version}"),
        None => println!("schema version: none (empty history)"),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn validate(args: &DbArgs) -> Result<ExitCode> {
    let loaded = load(args)?;
    let mut db = connect(&loaded).await?;
    let problems = baton_db::validate(&mut db, &loaded.migrations, &loaded.options).await;
    let pending = baton_db::lint_pending(&mut db, &loaded.migrations, &loaded.options).await;
    let target = db.target().to_string();
    db.close().await;
    let (problems, pending) = (problems?, pending?);
    // The contract half waits on purpose: not a problem, and never a
    // reason to run `baton db migrate`, which would apply it too early.
    let waiting: Vec<&str> = pending
        .iter()
        .filter(|r| r.phase == Phase::Contract)
        .map(|r| r.script.as_str())
        .collect();
    let command_args = args.command_args();
    if args.json {
        let messages: Vec<String> = problems
            .iter()
            .map(|p| p.explain(Some(&command_args)))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "valid": problems.is_empty(),
                "problems": problems,
                "messages": messages,
                "contracts_waiting": waiting,
            }))?
        );
    } else {
        for problem in &problems {
            println!("{} {}", red("✗"), problem.explain(Some(&command_args)));
        }
        for script in &waiting {
            println!(
                "{} {script}: the contract half, pending on purpose: it waits for the old release to be gone (Baton applies it once no older release is live or warm in {})",
                dim("·"),
                args.environment()
            );
        }
        if problems.is_empty() {
            let waits = if waiting.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} {} for the old release to be gone",
                    count(waiting.len(), "contract migration"),
                    if waiting.len() == 1 { "waits" } else { "wait" }
                )
            };
            println!(
                "{} {} in {} agree with {target}{waits}",
                green("✓"),
                count(loaded.migrations.len(), "migration"),
                loaded.folder.display()
            );
        } else {
            println!("validation failed: {}", count(problems.len(), "problem"));
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn repair(args: &DbArgs) -> Result<ExitCode> {
    let loaded = load(args)?;
    let mut db = connect(&loaded).await?;
    let plan = baton_db::repair(&mut db, &loaded.migrations, &loaded.options).await;
    let target = db.target().to_string();
    db.close().await;
    let plan = plan?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(ExitCode::SUCCESS);
    }
    for row in &plan.remove_failed {
        println!("{} removed the failed row of {}", green("✓"), row.script);
    }
    for row in &plan.mark_deleted {
        println!(
            "{} marked {} deleted (its file is gone)",
            green("✓"),
            row.script
        );
    }
    for r in &plan.realign {
        println!(
            "{} realigned {}: checksum {} → {}",
            green("✓"),
            r.before.script,
            r.before.checksum.map_or("none".into(), |c| c.to_string()),
            r.checksum
        );
    }
    if plan.is_empty() {
        println!("{target}: nothing to repair");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn baseline(args: &DbArgs, version: &str, description: Option<&str>) -> Result<ExitCode> {
    let loaded = load(args)?;
    let version = Version::parse(version).map_err(|e| anyhow!("--version {version:?}: {e}"))?;
    let mut db = connect(&loaded).await?;
    let row = baton_db::baseline(&mut db, &version, description, &loaded.options).await;
    let target = db.target().to_string();
    db.close().await;
    match row? {
        Some(_) => println!("{} {target} baselined at version {version}", green("✓")),
        None => println!("{target} was already baselined at version {version}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn plan(args: &DbArgs) -> Result<ExitCode> {
    let loaded = load(args)?;
    let mut db = connect(&loaded).await?;
    let pending = baton_db::lint_pending(&mut db, &loaded.migrations, &loaded.options).await;
    let target = db.target().to_string();
    db.close().await;
    let pending = pending?;
    let (expand, contract): (Vec<&LintReport>, Vec<&LintReport>) =
        pending.iter().partition(|r| r.phase == Phase::Expand);
    let findings: Vec<&baton_migrate::Finding> =
        pending.iter().flat_map(|r| r.findings.iter()).collect();
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if args.json {
        let out = json!({
            "database": target,
            "expand": expand,
            "contract": contract,
            "findings": findings,
            "refused": errors > 0,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("A deploy to {} would, on {target}:", args.environment());
        if expand.is_empty() && contract.is_empty() {
            println!("  apply no migration: the database is up to date");
        }
        if !expand.is_empty() {
            println!("  before the new release starts (expand):");
            for r in &expand {
                println!("    {}", r.script);
            }
        }
        if !contract.is_empty() {
            println!("  once no target of an older release is live or warm (contract):");
            for r in &contract {
                println!("    {}", r.script);
            }
        }
        for finding in &findings {
            let severity = match finding.severity {
                Severity::Error => red("error"),
                Severity::Warning => bold("warning"),
            };
            println!("{severity} {finding}");
        }
        if errors > 0 {
            println!(
                "{} the deploy would stop before applying anything: {}",
                red("✗"),
                count(errors, "error")
            );
        }
    }
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn import_sqlx(args: &DbArgs, from: Option<&Path>) -> Result<ExitCode> {
    if let Some(from) = from {
        let (_, database) = section(&args.dir)?;
        let folder = args.dir.join(&database.migrations);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        let mut names: Vec<String> = std::fs::read_dir(from)
            .with_context(|| format!("reading {}", from.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let Some(flyway) = baton_db::flyway_name(&name) else {
                continue;
            };
            let target = folder.join(&flyway);
            let text = std::fs::read(from.join(&name))
                .with_context(|| format!("reading {}", from.join(&name).display()))?;
            match std::fs::read(&target) {
                Ok(existing) if existing == text => continue,
                Ok(_) => bail!(
                    "{} exists with other content; not overwriting it",
                    target.display()
                ),
                Err(_) => {}
            }
            std::fs::write(&target, &text)
                .with_context(|| format!("writing {}", target.display()))?;
            println!("{} {name} → {}", green("copied"), target.display());
        }
    }
    let loaded = load(args)?;
    let mut db = connect(&loaded).await?;
    let rows = baton_db::import_sqlx(&mut db, &loaded.migrations, &loaded.options).await;
    let target = db.target().to_string();
    db.close().await;
    let rows = rows?;
    println!(
        "{} recorded {} applied by sqlx in {target}'s flyway_schema_history; _sqlx_migrations is left as it was",
        green("✓"),
        count(rows.len(), "migration")
    );
    Ok(ExitCode::SUCCESS)
}

pub fn new(recipe: Recipe) -> Result<ExitCode> {
    let Recipe::RenameColumn {
        table,
        from,
        to,
        column_type,
        key,
        batch,
        not_null,
        schema,
        dir,
    } = recipe;
    let (_, database) = section(&dir)?;
    let folder = dir.join(&database.migrations);
    std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
    let existing = discover(&folder).map_err(|e| anyhow!("{}: {e}", folder.display()))?;
    let next = existing
        .migrations
        .iter()
        .filter_map(|m| m.version.as_ref())
        .filter_map(|v| v.to_string().split(['.', '_']).next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let mut rename = ColumnRename::new(&table, &from, &to, &column_type);
    rename.key_column = key;
    rename.batch_size = batch;
    rename.not_null = not_null;
    rename.schema = schema;
    let pair = rename.generate()?;
    let expand_version = Version::parse(&next.to_string())?;
    let contract_version = Version::parse(&(next + 1).to_string())?;
    let expand = folder.join(pair.expand_file_name(&expand_version));
    let contract = folder.join(pair.contract_file_name(&contract_version));
    for (path, text) in [(&expand, &pair.expand), (&contract, &pair.contract)] {
        if path.exists() {
            bail!("{} already exists", path.display());
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{} {}", green("wrote"), expand.display());
    println!("{} {}", green("wrote"), contract.display());
    println!(
        "Ship the expand half with code that reads and writes {to}; Baton applies the contract half once no release using {from} is live or warm."
    );
    Ok(ExitCode::SUCCESS)
}

/// Which migrations `lint` judged, and why.
enum Linted {
    /// Those not yet applied to this database, as the deploy judges them.
    Pending { target: String, applied: usize },
    /// Every migration, each on its own, for want of the database.
    All { why: String },
}

pub async fn lint(args: &DbArgs) -> Result<ExitCode> {
    let files = files(args)?;
    let all = &files.discovered.migrations;
    let options = &files.options;
    let lint_all = |dialect: Dialect| -> Vec<LintReport> {
        let lint = options.lint_options(dialect);
        all.iter().map(|m| lint_migration(m, &lint)).collect()
    };
    let (reports, linted, dialect) = match url_of(args, &files) {
        Err(why) => (
            lint_all(Dialect::Postgres),
            Linted::All {
                why: why.to_string(),
            },
            Dialect::Postgres,
        ),
        Ok(url) => {
            let dialect = baton_db::dialect_of(&url)?;
            let connected = tokio::time::timeout(LINT_CONNECT_TIMEOUT, Database::connect(&url))
                .await
                .unwrap_or_else(|_| {
                    Err(baton_db::DbError::BadUrl {
                        url: baton_db::redact(&url),
                        reason: format!("no answer within {} s", LINT_CONNECT_TIMEOUT.as_secs()),
                    })
                });
            match connected {
                Ok(mut db) => {
                    let pending = baton_db::lint_pending(&mut db, all, options).await;
                    let target = db.target().to_string();
                    db.close().await;
                    let pending = pending?;
                    let applied = all.len().saturating_sub(pending.len());
                    (pending, Linted::Pending { target, applied }, dialect)
                }
                Err(e) => (
                    lint_all(dialect),
                    Linted::All { why: e.to_string() },
                    dialect,
                ),
            }
        }
    };
    let errors: usize = reports.iter().map(|r| r.errors().count()).sum();
    let warnings: usize = reports
        .iter()
        .map(|r| {
            r.findings
                .iter()
                .filter(|f| f.severity == Severity::Warning)
                .count()
        })
        .sum();
    let folder = &files.folder;
    if args.json {
        let (scope, database, why) = match &linted {
            Linted::Pending { target, .. } => ("pending", Some(target.clone()), None),
            Linted::All { why } => ("all", None, Some(why.clone())),
        };
        let out = json!({
            "folder": folder.display().to_string(),
            "linted": scope,
            "database": database,
            "why_all": why,
            "dialect": dialect,
            "migrations": reports,
            "notes": files.discovered.notes,
            "errors": errors,
            "warnings": warnings,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for note in &files.discovered.notes {
            println!("{}", dim(&format!("skipped {note}")));
        }
        match &linted {
            Linted::Pending { target, applied } => println!(
                "{}",
                dim(&format!(
                    "{target}: {} already applied, not linted",
                    count(*applied, "migration")
                ))
            ),
            Linted::All { why } => println!(
                "{}",
                dim(&format!(
                    "{why}\nso every migration was linted, each on its own, as {dialect}; give -e ENV or --url to lint only those not yet applied"
                ))
            ),
        }
        for report in &reports {
            let mark = if report.has_errors() {
                red("✗")
            } else {
                green("✓")
            };
            let transaction = if report.execute_in_transaction {
                ""
            } else {
                ", outside a transaction"
            };
            println!(
                "{mark} {} {}",
                report.script,
                dim(&format!("({}{transaction})", report.phase))
            );
            for finding in &report.findings {
                let severity = match finding.severity {
                    Severity::Error => red("error"),
                    Severity::Warning => bold("warning"),
                };
                println!(
                    "  {}:{}: {severity} [{}] {}\n    why: {}\n    fix: {}",
                    finding.script,
                    finding.line,
                    finding.rule,
                    finding.message,
                    finding.why,
                    finding.recipe
                );
            }
        }
        let noun = match linted {
            Linted::Pending { .. } => "pending migration",
            Linted::All { .. } => "migration",
        };
        println!(
            "{} in {}: {}, {}",
            count(reports.len(), noun),
            folder.display(),
            count(errors, "error"),
            count(warnings, "warning")
        );
    }
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
