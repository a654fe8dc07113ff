//! `baton db …` from an app folder: lint (as the deploy judges), migrate,
//! validate, plan, against PostgreSQL and SQLite.

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

#[path = "../../baton-db/tests/support/postgres.rs"]
mod postgres;

fn db(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("db")
        .args(args)
        .arg(dir)
        .env("NO_COLOR", "1")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_cli_migrates_the_environments_database_and_reports_like_flyway() {
    let url = postgres::server().database();
    let app = app_with(&[
        (
            "V1__create_users.sql",
            "CREATE TABLE users (id bigint PRIMARY KEY, name text);\n",
        ),
        (
            "V2__add_email.sql",
            "ALTER TABLE users ADD COLUMN email text;\n",
        ),
    ]);
    let manifest = app.path().join("baton.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        format!("{text}\n[environments.staging.env]\nDATABASE_URL = \"{url}\"\n"),
    )
    .unwrap();

    // Production has no URL: the error says where to put one.
    let (ok, out) = db(app.path(), &["migrate"]);
    assert!(!ok);
    assert!(
        out.contains("no database URL for environment production: set DATABASE_URL in [environments.production.env]"),
        "{out}"
    );

    let (ok, out) = db(app.path(), &["info", "-e", "staging"]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("Pending").count(), 2, "{out}");
    let (ok, out) = db(app.path(), &["validate", "-e", "staging"]);
    assert!(!ok && out.contains("has not been applied"), "{out}");

    let (ok, out) = db(app.path(), &["migrate", "-e", "staging"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("✓ V1__create_users.sql") && out.contains("2 migrations applied"),
        "{out}"
    );
    let (ok, out) = db(app.path(), &["validate", "-e", "staging"]);
    assert!(ok, "{out}");
    let (ok, out) = db(app.path(), &["info", "-e", "staging", "--json"]);
    assert!(ok, "{out}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["current"], "2");
    assert_eq!(info["entries"][1]["state"], "success");

    // The rename recipe, then the plan of the next deploy.
    let (ok, out) = db(
        app.path(),
        &[
            "new",
            "rename-column",
            "users",
            "name",
            "full_name",
            "--type",
            "text",
            "--dir",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        app.path()
            .join("db/migrations/V3__expand_rename_users_name_to_full_name.sql")
            .exists(),
        "{out}"
    );
    let (ok, out) = db(app.path(), &["plan", "-e", "staging"]);
    assert!(ok, "{out}");
    let expand = out
        .find("before the new release starts (expand):")
        .expect(&out);
    let contract = out.find("(contract):").expect(&out);
    assert!(out[expand..contract].contains("V3__"), "{out}");
    assert!(out[contract..].contains("V4__"), "{out}");

    // An unsafe migration is refused by migrate unless allowed.
    std::fs::write(
        app.path().join("db/migrations/V5__drop.sql"),
        "ALTER TABLE users DROP COLUMN email;\n",
    )
    .unwrap();
    let (ok, out) = db(app.path(), &["migrate", "-e", "staging"]);
    assert!(
        !ok && out.contains("V5__drop.sql:1") && out.contains("ban-drop-column"),
        "{out}"
    );
    assert_eq!(
        postgres::psql_url(&url, "SELECT count(*) FROM flyway_schema_history"),
        "2"
    );
}

fn with_env_url(app: &std::path::Path, environment: &str, url: &str) {
    let manifest = app.join("baton.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        format!("{text}\n[environments.{environment}.env]\nDATABASE_URL = \"{url}\"\n"),
    )
    .unwrap();
}

fn json_of(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let (_, out) = db(dir, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn lint_counts_what_the_deploy_counts_and_leaves_out_what_is_already_applied() {
    let url = postgres::server().database();
    let app = app_with(&[
        (
            "V1__create_users.sql",
            "CREATE TABLE users (id bigint PRIMARY KEY, name text);\n",
        ),
        // No `SET lock_timeout`: Baton's runner sets one, so the deploy does
        // not count require-lock-timeout, and neither may lint.
        (
            "V2__add_email.sql",
            "ALTER TABLE users ADD COLUMN email text;\n",
        ),
    ]);
    with_env_url(app.path(), "staging", &url);

    // Production has no database URL: every migration, and lint says so.
    let (ok, out) = db(app.path(), &["lint"]);
    assert!(ok, "{out}");
    assert!(!out.contains("require-lock-timeout"), "{out}");
    assert!(
        out.contains("no database URL for environment production")
            && out.contains("every migration was linted"),
        "{out}"
    );
    assert!(out.contains("2 migrations in"), "{out}");
    assert!(out.contains("0 errors, 1 warning\n"), "{out}");

    let (ok, out) = db(app.path(), &["migrate", "-e", "staging"]);
    assert!(ok, "{out}");
    std::fs::write(
        app.path().join("db/migrations/V3__email_index.sql"),
        "CREATE INDEX users_email ON users (email);\n",
    )
    .unwrap();
    let (ok, out) = db(app.path(), &["lint", "-e", "staging"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("2 migrations already applied, not linted")
            && out.contains("1 pending migration in")
            && !out.contains("V2__add_email.sql"),
        "{out}"
    );
    // The same findings as the deploy's judgement (`plan`).
    let lint = json_of(app.path(), &["lint", "-e", "staging", "--json"]);
    let plan = json_of(app.path(), &["plan", "-e", "staging", "--json"]);
    let plan_errors = plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .count() as u64;
    assert_eq!(
        lint["errors"].as_u64().unwrap(),
        plan_errors,
        "{lint}\n{plan}"
    );
    assert_eq!(plan_errors, 1, "{plan}");
    assert_eq!(lint["linted"], "pending");
}

#[test]
fn sqlite_is_linted_as_sqlite_and_a_database_error_is_said_once() {
    let folder = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", folder.path().join("app.db").display());
    let app = app_with(&[
        (
            "V1__create_users.sql",
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);\n",
        ),
        (
            "V2__email_index.sql",
            "CREATE INDEX users_email ON users (email);\n",
        ),
    ]);
    with_env_url(app.path(), "production", &url);
    // Unreachable or not, the URL names the dialect: no CONCURRENTLY asked.
    let (ok, out) = db(app.path(), &["lint"]);
    assert!(ok && out.contains("0 errors, 0 warnings"), "{out}");
    assert!(!out.contains("CONCURRENTLY"), "{out}");
    let (ok, out) = db(app.path(), &["migrate"]);
    assert!(ok, "{out}");

    std::fs::write(
        app.path().join("db/migrations/V3__typo.sql"),
        "INSERT INTO userz VALUES (1);\n",
    )
    .unwrap();
    let (ok, out) = db(app.path(), &["migrate"]);
    assert!(!ok, "{out}");
    assert_eq!(out.matches("no such table: userz").count(), 1, "{out}");
}

#[test]
fn validate_lets_a_contract_half_wait_and_names_the_environment_in_its_hints() {
    let folder = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", folder.path().join("app.db").display());
    let app = app_with(&[
        (
            "V1__create_users.sql",
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, full_name TEXT);\n",
        ),
        (
            "V2__drop_name.sql",
            "-- baton:contract\nALTER TABLE users DROP COLUMN name;\n",
        ),
    ]);
    with_env_url(app.path(), "staging", &url);
    let (ok, out) = db(
        app.path(),
        &["migrate", "-e", "staging", "--phase", "expand"],
    );
    assert!(ok && out.contains("1 migration applied"), "{out}");

    // The contract half pending on purpose: valid, and no `migrate` advice.
    let (ok, out) = db(app.path(), &["validate", "-e", "staging"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("V2__drop_name.sql") && out.contains("waits for the old release to be gone"),
        "{out}"
    );
    assert!(!out.contains("baton db migrate"), "{out}");

    // An edited applied migration: the hint repeats `-e staging`.
    std::fs::write(
        app.path().join("db/migrations/V1__create_users.sql"),
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, full_name TEXT, x TEXT);\n",
    )
    .unwrap();
    let (ok, out) = db(app.path(), &["validate", "-e", "staging"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("checksum mismatch") && out.contains(" -e staging`"),
        "{out}"
    );
    assert!(out.contains("validation failed: 1 problem\n"), "{out}");
}
