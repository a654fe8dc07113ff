//! `baton db …`: the app's migrations, checked on this machine before they
//! reach a database. Linting needs no server: it reads the app folder only.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use baton_migrate::{discover, lint_migration, LintOptions, Severity};
use serde_json::json;

use crate::output::{bold, dim, green, red};

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
