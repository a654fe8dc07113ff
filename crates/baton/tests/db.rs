//! `baton db lint`: the migrations of an app folder, checked before deploy.

mod common;

use std::process::Command;

use common::*;

fn app_with(migrations: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(example_dir().join("baton.toml")).unwrap();
    std::fs::write(
        dir.path().join("baton.toml"),
        format!("{manifest}\n[database]\nmigrations = \"db/migrations\"\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("db/migrations")).unwrap();
    for (name, sql) in migrations {
        std::fs::write(dir.path().join("db/migrations").join(name), sql).unwrap();
    }
    dir
}

fn lint(dir: &std::path::Path, json: bool) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["db", "lint"]).arg(dir).env("NO_COLOR", "1");
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

#[test]
fn a_dropped_column_outside_a_contract_migration_is_refused_with_file_line_and_recipe() {
    let app = app_with(&[
        (
            "V1__create_users.sql",
            "CREATE TABLE users (id bigint PRIMARY KEY, email text);\n",
        ),
        (
            "V2__drop_email.sql",
            "-- tidy up\nALTER TABLE users DROP COLUMN email;\n",
        ),
    ]);
    let out = lint(app.path(), false);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("V2__drop_email.sql:2: error [ban-drop-column]"),
        "{text}"
    );
    assert!(text.contains("fix: "), "{text}");
    assert!(text.contains("2 migrations"), "{text}");

    let out = lint(app.path(), true);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["errors"].as_u64().unwrap() >= 1);
    let second = &report["migrations"][1];
    assert_eq!(second["script"], "V2__drop_email.sql");
    assert_eq!(second["phase"], "contract");
    assert!(second["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["rule"] == "ban-drop-column"));
}

#[test]
fn safe_migrations_pass() {
    let app = app_with(&[
        (
            "V1__create_users.sql",
            "CREATE TABLE users (id bigint PRIMARY KEY);\n",
        ),
        (
            "V2__add_email.sql",
            "SET lock_timeout = '5s';\nALTER TABLE users ADD COLUMN email text;\n",
        ),
    ]);
    let out = lint(app.path(), false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 errors"));
}

#[test]
fn a_bad_file_name_or_a_missing_folder_setting_is_named() {
    let app = app_with(&[("V1_create_users.sql", "SELECT 1;\n")]);
    let out = lint(app.path(), false);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("V1_create_users.sql"), "{error}");

    let out = lint(&example_dir(), false);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("[database] migrations"), "{error}");
}
