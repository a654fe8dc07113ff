//! `baton db …`: the app's migrations, run from this machine against the
//! database of one of its environments. The URL comes from the
//! environment's configuration in baton.toml (the variable named by
//! `[database] url_env`, `DATABASE_URL` by default), or `--url`. Linting and
//! writing recipes need no database.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _, Result};
use baton_db::{Database, Options, Phases};
use baton_migrate::{
    discover, lint_migration, ColumnRename, LintOptions, Migration, Phase, Severity, Version,
};
use serde_json::json;

use crate::output::{bold, dim, green, red, table};

#[derive(clap::Args, Clone)]
pub struct DbArgs {
    /// The app's folder, holding baton.toml.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment whose database to use.
    #[arg(short, long, default_value = baton_manifest::DEFAULT_ENVIRONMENT)]
    pub environment: String,
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

#[derive(clap::Subcommand, Clone)]
pub enum Recipe {
    /// The expand/contract pair renaming a PostgreSQL column without
    /// downtime: add the new column, keep both in step with a trigger,
    /// backfill in batches; later drop the trigger and the old column.
    RenameColumn {
        table: String,
        from: String,
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
        #[arg(long)]
        schema: Option<String>,
        /// The app's folder, holding baton.toml.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

struct Loaded {
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

fn load(args: &DbArgs) -> Result<Loaded> {
    baton_manifest::check_name("environment", &args.environment).map_err(|e| anyhow!(e))?;
    let (manifest, database) = section(&args.dir)?;
    let folder = args.dir.join(&database.migrations);
    let migrations = discover(&folder)
        .map_err(|e| anyhow!("{}: {e}", folder.display()))?
        .migrations;
    let config = manifest.environment(&args.environment);
    let url = match &args.url {
        Some(url) => url.clone(),
        None => match config.env.get(&database.url_env) {
            Some(url) => url.clone(),
            None => std::env::var(&database.url_env).map_err(|_| {
                anyhow!(
                    "no database URL for environment {env}: set {var} in [environments.{env}.env] (or [env]) of {manifest}, or pass --url",
                    env = args.environment,
                    var = database.url_env,
                    manifest = args.dir.join(baton_manifest::FILE_NAME).display(),
                )
            })?,
        },
    };
    let mut options = Options {
        lock_timeout: database.lock_timeout,
        ..Options::default()
    };
    options.settings.out_of_order = args.out_of_order || database.out_of_order;
    if let Some(target) = &args.target {
        options.settings.target =
            Some(Version::parse(target).map_err(|e| anyhow!("--target {target:?}: {e}"))?);
    }
    if let Some(version) = &database.baseline_on_migrate {
        options.settings.baseline_on_migrate = Some(Version::parse(version).map_err(|e| {
            anyhow!("baton.toml: field `database.baseline_on_migrate`: {version:?}: {e}")
        })?);
    }
    Ok(Loaded {
        folder,
        migrations,
        options,
        url,
    })
}

async fn connect(loaded: &Loaded) -> Result<Database> {
    Ok(Database::connect(&loaded.url).await?)
}

pub async fn migrate(args: &DbArgs, phase: &str, allow_unsafe: bool) -> Result<ExitCode> {
    let mut loaded = load(args)?;
    loaded.options.refuse_unsafe = !allow_unsafe;
    let phases = match phase {
        "expand" => Phases::Expand,
        "contract" => Phases::Contract,
        _ => Phases::All,
    };
    let mut db = connect(&loaded).await?;
    let result = baton_db::migrate(&mut db, &loaded.migrations, &loaded.options, phases).await;
    let target = db.target().to_string();
    db.close().await;
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
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
    println!("{} migration(s) applied to {target}", report.applied.len());
    Ok(ExitCode::SUCCESS)
}

pub async fn info(args: &DbArgs) -> Result<ExitCode> {
    let loaded = load(args)?;
    let mut db = connect(&loaded).await?;
    let info = baton_db::info(&mut db, &loaded.migrations, &loaded.options).await;
    let target = db.target().to_string();
    db.close().await;
    let info = info?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    let phases = phases_of(&loaded.migrations);
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
            phases
                .iter()
                .find(|(script, _)| *script == entry.script)
                .map(|(_, phase)| phase.to_string())
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

fn phases_of(migrations: &[Migration]) -> Vec<(String, Phase)> {
    let options = LintOptions {
        runner_lock_timeout: true,
        ..LintOptions::default()
    };
    migrations
        .iter()
        .map(|m| (m.script.clone(), lint_migration(m, &options).phase))
        .collect()
}

pub async fn validate(args: &DbArgs) -> Result<ExitCode> {
    let loaded = load(args)?;
    let mut db = connect(&loaded).await?;
    let problems = baton_db::validate(&mut db, &loaded.migrations, &loaded.options).await;
    let target = db.target().to_string();
    db.close().await;
    let problems = problems?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "valid": problems.is_empty(), "problems": problems })
            )?
        );
    } else if problems.is_empty() {
        println!(
            "{} {} migration(s) in {} agree with {target}",
            green("✓"),
            loaded.migrations.len(),
            loaded.folder.display()
        );
    } else {
        for problem in &problems {
            println!("{} {problem}", red("✗"));
        }
        println!("validation failed: {} problem(s)", problems.len());
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
    let info = baton_db::info(&mut db, &loaded.migrations, &loaded.options).await;
    let target = db.target().to_string();
    db.close().await;
    let info = info?;
    let options = LintOptions {
        runner_lock_timeout: !loaded.options.lock_timeout.is_zero(),
        ..LintOptions::default()
    };
    let mut expand = Vec::new();
    let mut contract = Vec::new();
    let mut findings = Vec::new();
    for entry in info.pending() {
        let Some(migration) = loaded.migrations.iter().find(|m| m.script == entry.script) else {
            continue;
        };
        let report = lint_migration(migration, &options);
        findings.extend(report.findings.iter().cloned());
        match report.phase {
            Phase::Expand => expand.push(report),
            Phase::Contract => contract.push(report),
        }
    }
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
        println!("A deploy to {} would, on {target}:", args.environment);
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
                "{} the deploy would stop before applying anything: {errors} error(s)",
                red("✗")
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
        "{} recorded {} migration(s) applied by sqlx in {target}'s flyway_schema_history; _sqlx_migrations is left as it was",
        green("✓"),
        rows.len()
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

pub fn lint(dir: &Path, as_json: bool) -> Result<ExitCode> {
    let manifest = baton_manifest::Manifest::load(dir)?;
    let database = manifest.database.ok_or_else(|| {
        anyhow!(
            "{}: no migrations folder; add [database] migrations = \"db/migrations\"",
            dir.join(baton_manifest::FILE_NAME).display()
        )
    })?;
    let folder = dir.join(&database.migrations);
    let discovered = discover(&folder).map_err(|e| anyhow!("{}: {e}", folder.display()))?;
    let reports: Vec<_> = discovered
        .migrations
        .iter()
        .map(|m| lint_migration(m, &LintOptions::default()))
        .collect();
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
    if as_json {
        let out = json!({
            "folder": folder.display().to_string(),
            "migrations": reports,
            "notes": discovered.notes,
            "errors": errors,
            "warnings": warnings,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for note in &discovered.notes {
            println!("{}", dim(&format!("skipped {note}")));
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
        println!(
            "{} migrations in {}: {errors} errors, {warnings} warnings",
            reports.len(),
            folder.display()
        );
    }
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
