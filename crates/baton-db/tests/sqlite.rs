//! The runner against SQLite files: Flyway's rows, rollback of a failing
//! migration, and two migrators on one file.

#[path = "support/files.rs"]
mod files;

use baton_db::{Database, Options, Phases};
use baton_migrate::plan::State;
use files::Folder;

fn sqlite3(path: &std::path::Path, sql: &str) -> String {
    // Read back through Python's own sqlite3 module, not through Baton.
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\nfor row in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]): print('|'.join(map(str, row)))",
        ])
        .arg(path)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

#[tokio::test]
async fn migrate_info_validate_and_a_rolled_back_failure() {
    let folder = Folder::new();
    let file = folder.path("app.db");
    let url = format!("sqlite://{}", file.display());
    let migrations = Folder::new();
    migrations.write(
        "V1__users.sql",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\r\n",
    );
    migrations.write(
        "V2__trigger.sql",
        "CREATE TABLE log (name TEXT);\nCREATE TRIGGER users_log AFTER INSERT ON users BEGIN\n  INSERT INTO log VALUES (new.name);\nEND;\nINSERT INTO users (name) VALUES ('ada');\n",
    );
    let mut db = Database::connect(&url).await.unwrap();
    let report = baton_db::migrate(
        &mut db,
        &migrations.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
    assert_eq!(report.applied.len(), 2);
    assert_eq!(sqlite3(&file, "SELECT name FROM log"), "ada");
    assert_eq!(
        sqlite3(&file, "SELECT installed_rank, version, description, type, script, checksum, installed_by, success FROM flyway_schema_history ORDER BY installed_rank"),
        format!(
            "1|1|users|SQL|V1__users.sql|{}||1\n2|2|trigger|SQL|V2__trigger.sql|{}||1",
            files::flyway_checksum(&migrations.path("V1__users.sql")),
            files::flyway_checksum(&migrations.path("V2__trigger.sql")),
        )
    );

    migrations.write("V3__breaks.sql", "CREATE TABLE half (id INTEGER);\nINSERT INTO users (name) VALUES ('bob');\nINSERT INTO nowhere VALUES (1);\n");
    let err = baton_db::migrate(
        &mut db,
        &migrations.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("V3__breaks.sql") && err.contains("nowhere") && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(sqlite3(&file, "SELECT count(*) FROM users"), "1");
    assert_eq!(
        sqlite3(
            &file,
            "SELECT count(*) FROM sqlite_master WHERE name = 'half'"
        ),
        "0"
    );
    assert_eq!(
        sqlite3(&file, "SELECT count(*) FROM flyway_schema_history"),
        "2"
    );
    let info = baton_db::info(&mut db, &migrations.migrations(), &Options::default())
        .await
        .unwrap();
    assert_eq!(info.entries[2].state, State::Pending);

    migrations.write(
        "V1__users.sql",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, x INT);\n",
    );
    let problems = baton_db::validate(&mut db, &migrations.migrations(), &Options::default())
        .await
        .unwrap();
    assert!(
        problems[0]
            .to_string()
            .starts_with("checksum mismatch for version 1"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn two_migrators_on_one_file_apply_each_migration_once() {
    let folder = Folder::new();
    let url = format!("sqlite://{}", folder.path("app.db").display());
    let migrations = Folder::new();
    for i in 1..=40 {
        migrations.write(
            &format!("V{i}__t{i}.sql"),
            &format!("CREATE TABLE t{i} (id INTEGER);\nINSERT INTO t{i} VALUES ({i});\n"),
        );
    }
    let files = migrations.migrations();
    let run = |files: Vec<baton_migrate::Migration>, url: String| async move {
        let mut db = Database::connect(&url).await.unwrap();
        baton_db::migrate(&mut db, &files, &Options::default(), Phases::All)
            .await
            .expect("both runs succeed")
    };
    let (a, b) = tokio::join!(
        tokio::spawn(run(files.clone(), url.clone())),
        tokio::spawn(run(files.clone(), url.clone()))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.applied.len() + b.applied.len(), 40);
    assert_eq!(
        sqlite3(
            &folder.path("app.db"),
            "SELECT count(*), count(DISTINCT version) FROM flyway_schema_history"
        ),
        "40|40"
    );
}

/// A gate that refuses, recording what it was asked about.
struct Refuse(std::sync::Mutex<Vec<String>>);

impl baton_db::ContractGate for Refuse {
    fn allow<'a>(
        &'a self,
        scripts: &'a [String],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        self.0.lock().unwrap().extend(scripts.iter().cloned());
        Box::pin(async { Err("release v1 is still warm".to_string()) })
    }
}

#[tokio::test]
async fn a_refused_contract_gate_stops_the_run_before_anything_is_applied() {
    let folder = Folder::new();
    let file = folder.path("app.db");
    let url = format!("sqlite://{}", file.display());
    let migrations = Folder::new();
    migrations.write(
        "V1__users.sql",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, full_name TEXT);\n",
    );
    let mut db = Database::connect(&url).await.unwrap();
    let options = Options::default();
    baton_db::migrate(&mut db, &migrations.migrations(), &options, Phases::All)
        .await
        .unwrap();
    migrations.write("V2__more.sql", "CREATE TABLE more (id INTEGER);\n");
    migrations.write(
        "V3__drop_name.sql",
        "-- baton:contract\nALTER TABLE users DROP COLUMN name;\n",
    );
    let gate = Refuse(Default::default());
    let err = baton_db::migrate_gated(
        &mut db,
        &migrations.migrations(),
        &options,
        Phases::All,
        &gate,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("V3__drop_name.sql")
            && err.contains("release v1 is still warm")
            && err.contains("nothing was applied"),
        "{err}"
    );
    assert_eq!(*gate.0.lock().unwrap(), ["V3__drop_name.sql"]);
    // Not even the expand migration before it ran.
    assert_eq!(
        sqlite3(&file, "SELECT count(*) FROM flyway_schema_history"),
        "1"
    );
    // The expand half alone never asks.
    let report = baton_db::migrate_gated(
        &mut db,
        &migrations.migrations(),
        &options,
        Phases::Expand,
        &gate,
    )
    .await
    .unwrap();
    assert_eq!(report.applied.len(), 1);
    assert_eq!(report.left, ["V3__drop_name.sql"]);
    assert_eq!(gate.0.lock().unwrap().len(), 1);
    db.close().await;
}

#[tokio::test]
async fn a_failed_statement_says_what_the_database_said_once() {
    let folder = Folder::new();
    let url = format!("sqlite://{}", folder.path("app.db").display());
    let migrations = Folder::new();
    migrations.write("V1__typo.sql", "INSERT INTO userz VALUES (1);\n");
    let mut db = Database::connect(&url).await.unwrap();
    let err = baton_db::migrate(
        &mut db,
        &migrations.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap_err();
    // Printed with its chain (as the CLI does), the message is not repeated.
    let mut shown = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        shown.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert_eq!(shown.matches("no such table: userz").count(), 1, "{shown}");
    assert!(!shown.contains("error returned from database"), "{shown}");
    db.close().await;
}
