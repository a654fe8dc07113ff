//! Prints the expand/contract pair for renaming `users.name` to `full_name`
//! and what the linter says about each half.
//!
//! `cargo run --example rename_column`

use baton_migrate::{lint_sql, ColumnRename, LintOptions, Version};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rename = ColumnRename::new("users", "name", "full_name", "text");
    rename.not_null = true;
    let pair = rename.generate()?;
    for (file, sql) in [
        (pair.expand_file_name(&Version::parse("12")?), &pair.expand),
        (
            pair.contract_file_name(&Version::parse("13")?),
            &pair.contract,
        ),
    ] {
        let report = lint_sql(&file, sql, &LintOptions::default());
        println!(
            "==> {file} ({}, {} finding(s))\n{sql}",
            report.phase,
            report.findings.len()
        );
    }
    Ok(())
}
