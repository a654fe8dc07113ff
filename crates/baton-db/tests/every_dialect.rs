//! The runner's behaviours that hold on every database: each is one test
//! body over a `TestDb`, run once per dialect it holds on by `on_dialects!`
//! (`two_concurrent_migrate_runs_apply_each_migration_once::on_mysql`).
//! What one dialect alone does stays in its own file: PostgreSQL's online
//! DDL, lock timeout, TLS and sqlx import in postgres.rs; MySQL's DDL that
//! commits itself in mysql.rs; SQLite's scripts run whole in sqlite.rs.

#[path = "support/defaults.rs"]
mod defaults;
#[path = "support/files.rs"]
mod files;
#[path = "support/mysql.rs"]
mod mysql;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/test_db.rs"]
mod test_db;

use baton_db::{DbError, Options, Phases};
use baton_migrate::plan::State;
use baton_migrate::Version;
use files::Folder;
use test_db::TestDb;

/// One module per behaviour, one test in it per dialect named.
macro_rules! on_dialects {
    ($($behaviour:ident: $($dialect:ident),+;)+) => {$(
        mod $behaviour {
            $(
                #[tokio::test]
                async fn $dialect() {
                    super::$behaviour(&super::TestDb::$dialect()).await
                }
            )+
        }
    )+};
}

on_dialects! {
    migrate_writes_flyways_rows_and_applies_each_migration_once: on_postgres, on_sqlite, on_mysql;
    checksums_equal_flyways_for_lf_crlf_and_bom: on_postgres, on_sqlite, on_mysql;
    // MySQL commits DDL by itself: mysql.rs says what a failure leaves there.
    a_failing_migration_changes_nothing: on_postgres, on_sqlite;
    a_failed_statement_says_what_the_database_said_once: on_postgres, on_sqlite, on_mysql;
    validate_and_repair_behave_as_flyway: on_postgres, on_sqlite, on_mysql;
    baseline_and_baseline_on_migrate_skip_what_the_database_already_has: on_postgres, on_sqlite, on_mysql;
    out_of_order_versions_are_ignored_unless_allowed: on_postgres, on_sqlite, on_mysql;
    two_concurrent_migrate_runs_apply_each_migration_once: on_postgres, on_sqlite, on_mysql;
    phases_split_expand_from_contract_and_unsafe_expands_are_refused: on_postgres, on_sqlite, on_mysql;
    a_refused_contract_gate_stops_the_run_before_anything_is_applied: on_postgres, on_sqlite, on_mysql;
}

/// `success` as one word on every dialect: psql prints booleans as t and f,
/// the others as 1 and 0.
const SUCCESS: &str = "CASE WHEN success THEN 'true' ELSE 'false' END";

async fn migrate_writes_flyways_rows_and_applies_each_migration_once(db: &TestDb) {
    let folder = Folder::new();
    // CRLF line ends, as an editor on Windows writes them.
    folder.write(
        "V1__create_users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY, name text);\r\n",
    );
    folder.write(
        "V1.1__add_email.sql",
        "ALTER TABLE users ADD COLUMN email text;\n",
    );
    folder.write("sub/V2__seed.sql", "INSERT INTO users (id, name) VALUES (1, 'ada');\nINSERT INTO users (id, name) VALUES (2, 'bob');\n");
    folder.write(
        "R__users_view.sql",
        "DROP VIEW IF EXISTS user_names;\nCREATE VIEW user_names AS SELECT name FROM users;\n",
    );

    let mut conn = db.connect().await;
    let report = defaults::migrate(&mut conn, &folder)
        .await
        .expect("migrates");
    let scripts: Vec<&str> = report.applied.iter().map(|a| a.script.as_str()).collect();
    assert_eq!(
        scripts,
        [
            "V1__create_users.sql",
            "V1.1__add_email.sql",
            "sub/V2__seed.sql",
            "R__users_view.sql"
        ]
    );
    assert_eq!(db.query("SELECT count(*) FROM user_names"), "2");

    // The rows Flyway writes, column by column.
    let rows = db.query(&format!(
        "SELECT installed_rank, coalesce(version, '<null>'), description, type, script, checksum, installed_by, {SUCCESS} FROM flyway_schema_history ORDER BY installed_rank"
    ));
    let user = db.user();
    let checksum = |script: &str| files::flyway_checksum(&folder.path(script));
    let expected = [
        format!(
            "1|1|create users|SQL|V1__create_users.sql|{}|{user}|true",
            checksum("V1__create_users.sql")
        ),
        format!(
            "2|1.1|add email|SQL|V1.1__add_email.sql|{}|{user}|true",
            checksum("V1.1__add_email.sql")
        ),
        format!(
            "3|2|seed|SQL|sub/V2__seed.sql|{}|{user}|true",
            checksum("sub/V2__seed.sql")
        ),
        format!(
            "4|<null>|users view|SQL|R__users_view.sql|{}|{user}|true",
            checksum("R__users_view.sql")
        ),
    ];
    assert_eq!(rows, expected.join("\n"));
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM flyway_schema_history WHERE execution_time >= 0 AND installed_on <= {}",
            db.now()
        )),
        "4",
        "every row has a time it took and a time it was installed at"
    );

    // Again: nothing to do.
    let again = defaults::migrate(&mut conn, &folder).await.unwrap();
    assert!(again.applied.is_empty());
    let info = defaults::info(&mut conn, &folder).await;
    assert!(
        info.entries.iter().all(|e| e.state == State::Success),
        "{:?}",
        info.entries
    );
    assert_eq!(info.current, Some(Version::parse("2").unwrap()));

    // A changed repeatable runs again; a new version is appended.
    folder.write(
        "R__users_view.sql",
        "DROP VIEW IF EXISTS user_names;\nCREATE VIEW user_names AS SELECT name, email FROM users;\n",
    );
    folder.write("V3__index.sql", "CREATE INDEX users_id ON users (id);\n");
    let report = defaults::migrate(&mut conn, &folder).await.unwrap();
    let applied: Vec<&str> = report.applied.iter().map(|a| a.script.as_str()).collect();
    assert_eq!(applied, ["V3__index.sql", "R__users_view.sql"]);
    let info = defaults::info(&mut conn, &folder).await;
    let states: Vec<(String, State)> = info
        .entries
        .iter()
        .map(|e| (e.script.clone(), e.state))
        .collect();
    assert!(
        states.contains(&("R__users_view.sql".into(), State::Superseded)),
        "{states:?}"
    );
    conn.close().await;
}

async fn checksums_equal_flyways_for_lf_crlf_and_bom(db: &TestDb) {
    let folder = Folder::new();
    let body = "CREATE TABLE a (id int);\n\nINSERT INTO a VALUES (1); -- é\n";
    folder.write("V1__lf.sql", body);
    folder.write(
        "V2__crlf.sql",
        &body
            .replace('\n', "\r\n")
            .replace("TABLE a", "TABLE b")
            .replace("INTO a", "INTO b"),
    );
    folder.write(
        "V3__bom.sql",
        &format!(
            "\u{feff}{}",
            body.replace("TABLE a", "TABLE c")
                .replace("INTO a", "INTO c")
        ),
    );
    let mut conn = db.connect().await;
    defaults::migrate(&mut conn, &folder).await.unwrap();
    let stored = db.query("SELECT checksum FROM flyway_schema_history ORDER BY installed_rank");
    let independent: Vec<String> = ["V1__lf.sql", "V2__crlf.sql", "V3__bom.sql"]
        .iter()
        .map(|f| files::flyway_checksum(&folder.path(f)).to_string())
        .collect();
    assert_eq!(stored, independent.join("\n"));
    // Same text with other line endings: same checksum, as in Flyway.
    let lf = files::flyway_checksum_of(body.as_bytes());
    assert_eq!(
        lf,
        files::flyway_checksum_of(body.replace('\n', "\r\n").as_bytes())
    );
    assert_eq!(
        lf,
        files::flyway_checksum_of(format!("\u{feff}{body}").as_bytes())
    );
    assert_eq!(lf, baton_migrate::checksum(body));
    conn.close().await;
}

async fn a_failing_migration_changes_nothing(db: &TestDb) {
    let folder = Folder::new();
    folder.write("V1__ok.sql", "CREATE TABLE ok (id int);\n");
    folder.write(
        "V2__breaks.sql",
        "CREATE TABLE half (id int);\nINSERT INTO ok VALUES (1);\n\nINSERT INTO nowhere VALUES (1);\n",
    );
    folder.write("V3__after.sql", "CREATE TABLE after (id int);\n");
    let mut conn = db.connect().await;
    let err = defaults::migrate(&mut conn, &folder).await.unwrap_err();
    let text = err.to_string();
    let line = db.failing_line(4);
    assert!(
        matches!(err, DbError::Failed { line: l, .. } if l == line),
        "{text}"
    );
    assert!(text.contains(&format!("V2__breaks.sql:{line}")), "{text}");
    assert!(text.contains("nowhere"), "{text}");
    assert!(text.contains("rolled back"), "{text}");
    // V1 stays applied; V2 left nothing behind; V3 never ran.
    assert_eq!(
        db.query(&format!(
            "SELECT script, {SUCCESS} FROM flyway_schema_history ORDER BY installed_rank"
        )),
        "V1__ok.sql|true"
    );
    assert_eq!(db.query("SELECT count(*) FROM ok"), "0");
    assert_eq!(db.tables_named(&["half", "after"]), 0);
    let info = defaults::info(&mut conn, &folder).await;
    let pending: Vec<&str> = info.pending().map(|e| e.script.as_str()).collect();
    assert_eq!(pending, ["V2__breaks.sql", "V3__after.sql"]);

    // Fixed, it applies.
    folder.write(
        "V2__breaks.sql",
        "CREATE TABLE half (id int);\nINSERT INTO ok VALUES (1);\n",
    );
    let report = defaults::migrate(&mut conn, &folder).await.unwrap();
    assert_eq!(report.applied.len(), 2);
    conn.close().await;
}

async fn a_failed_statement_says_what_the_database_said_once(db: &TestDb) {
    let folder = Folder::new();
    folder.write("V1__typo.sql", "INSERT INTO userz VALUES (1);\n");
    let mut conn = db.connect().await;
    let err = defaults::migrate(&mut conn, &folder).await.unwrap_err();
    // Printed with its chain (as the CLI does), the message is not repeated.
    let mut shown = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        shown.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    let said = db.says_no_such_table("userz");
    assert_eq!(shown.matches(&said).count(), 1, "{shown}");
    assert!(!shown.contains("error returned from database"), "{shown}");
    conn.close().await;
}

async fn validate_and_repair_behave_as_flyway(db: &TestDb) {
    let folder = Folder::new();
    folder.write("V1__a.sql", "CREATE TABLE a (id int);\n");
    folder.write("V2__b.sql", "CREATE TABLE b (id int);\n");
    folder.write("V3__c.sql", "CREATE TABLE c (id int);\n");
    let mut conn = db.connect().await;
    defaults::migrate(&mut conn, &folder).await.unwrap();
    assert!(defaults::validate(&mut conn, &folder).await.is_empty());

    // An applied file edited, another removed, a new one pending.
    folder.write("V1__a.sql", "CREATE TABLE a (id bigint);\n");
    folder.remove("V2__b.sql");
    folder.write("V4__d.sql", "CREATE TABLE d (id int);\n");
    let problems: Vec<String> = defaults::validate(&mut conn, &folder)
        .await
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].starts_with("checksum mismatch for version 1"),
        "{problems:#?}"
    );
    assert!(
        problems[1].contains("version 2 (V2__b.sql) was applied but its file is gone"),
        "{problems:#?}"
    );
    assert!(
        problems[2].contains("version 4 (V4__d.sql) has not been applied"),
        "{problems:#?}"
    );
    // Migrate validates first and applies nothing.
    let err = defaults::migrate(&mut conn, &folder)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert_eq!(db.query("SELECT count(*) FROM flyway_schema_history"), "3");

    let plan = baton_db::repair(&mut conn, &folder.migrations(), &Options::default())
        .await
        .unwrap();
    assert_eq!((plan.realign.len(), plan.mark_deleted.len()), (1, 1));
    assert_eq!(
        db.query("SELECT installed_rank, version, type, checksum FROM flyway_schema_history ORDER BY installed_rank"),
        format!(
            "1|1|SQL|{}\n2|2|SQL|{}\n3|3|SQL|{}\n4|2|DELETE|{}",
            files::flyway_checksum(&folder.path("V1__a.sql")),
            baton_migrate::checksum("CREATE TABLE b (id int);\n"),
            files::flyway_checksum(&folder.path("V3__c.sql")),
            baton_migrate::checksum("CREATE TABLE b (id int);\n"),
        )
    );
    let info = defaults::info(&mut conn, &folder).await;
    let states: Vec<(Option<String>, State)> = info
        .entries
        .iter()
        .map(|e| (e.version.as_ref().map(|v| v.to_string()), e.state))
        .collect();
    assert_eq!(
        states,
        [
            (Some("1".into()), State::Success),
            (Some("2".into()), State::Deleted),
            (Some("3".into()), State::Success),
            (Some("4".into()), State::Pending),
        ]
    );
    defaults::migrate(&mut conn, &folder).await.unwrap();
    assert!(defaults::validate(&mut conn, &folder).await.is_empty());
    conn.close().await;
}

async fn baseline_and_baseline_on_migrate_skip_what_the_database_already_has(db: &TestDb) {
    let folder = Folder::new();
    folder.write("V1__legacy.sql", "CREATE TABLE legacy (id int);\n");
    folder.write("V2__next.sql", "CREATE TABLE next (id int);\n");

    // Explicit baseline on an existing schema.
    db.query("CREATE TABLE legacy (id int)");
    let mut conn = db.connect().await;
    let version = |v: &str| Version::parse(v).unwrap();
    let row = baton_db::baseline(&mut conn, &version("1"), None, &Options::default())
        .await
        .unwrap()
        .expect("written");
    assert_eq!(row.description, "<< Flyway Baseline >>");
    assert_eq!(
        db.query(&format!("SELECT installed_rank, version, description, type, script, {SUCCESS} FROM flyway_schema_history")),
        "1|1|<< Flyway Baseline >>|BASELINE|<< Flyway Baseline >>|true"
    );
    assert_eq!(
        db.query("SELECT count(*) FROM flyway_schema_history WHERE checksum IS NULL"),
        "1"
    );
    // The same baseline again is a no-op; another is refused.
    assert!(
        baton_db::baseline(&mut conn, &version("1"), None, &Options::default())
            .await
            .unwrap()
            .is_none()
    );
    let err = baton_db::baseline(&mut conn, &version("2"), None, &Options::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already baselined at version 1"), "{err}");
    let report = defaults::migrate(&mut conn, &folder).await.unwrap();
    let applied: Vec<&str> = report.applied.iter().map(|a| a.script.as_str()).collect();
    assert_eq!(applied, ["V2__next.sql"]);
    let info = defaults::info(&mut conn, &folder).await;
    assert_eq!(info.entries[0].state, State::BaselineIgnored);
    conn.close().await;

    // baselineOnMigrate: only when the schema holds tables and no history.
    let mut options = Options::default();
    options.settings.baseline_on_migrate = Some(version("1"));
    let legacy = db.another();
    legacy.query("CREATE TABLE legacy (id int)");
    let mut conn = legacy.connect().await;
    let report = baton_db::migrate(&mut conn, &folder.migrations(), &options, Phases::All)
        .await
        .unwrap();
    assert_eq!(report.baselined.as_deref(), Some("1"));
    assert_eq!(report.applied.len(), 1);
    conn.close().await;
    let empty = db.another();
    let mut conn = empty.connect().await;
    let report = baton_db::migrate(&mut conn, &folder.migrations(), &options, Phases::All)
        .await
        .unwrap();
    assert_eq!(
        report.baselined, None,
        "an empty schema is migrated from the start"
    );
    assert_eq!(report.applied.len(), 2);
    conn.close().await;
}

async fn out_of_order_versions_are_ignored_unless_allowed(db: &TestDb) {
    let folder = Folder::new();
    folder.write("V1__a.sql", "CREATE TABLE a (id int);\n");
    folder.write("V3__c.sql", "CREATE TABLE c (id int);\n");
    let mut conn = db.connect().await;
    defaults::migrate(&mut conn, &folder).await.unwrap();
    folder.write("V2__b.sql", "CREATE TABLE b (id int);\n");
    let err = defaults::migrate(&mut conn, &folder)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("version 2 (V2__b.sql) is below version 3"),
        "{err}"
    );
    let info = defaults::info(&mut conn, &folder).await;
    assert!(info
        .entries
        .iter()
        .any(|e| e.script == "V2__b.sql" && e.state == State::Ignored));

    let mut options = Options::default();
    options.settings.out_of_order = true;
    let report = baton_db::migrate(&mut conn, &folder.migrations(), &options, Phases::All)
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 1);
    assert!(report.applied[0].out_of_order);
    let info = baton_db::info(&mut conn, &folder.migrations(), &options)
        .await
        .unwrap();
    let v2 = info
        .entries
        .iter()
        .find(|e| e.script == "V2__b.sql")
        .unwrap();
    assert_eq!((v2.state, v2.installed_rank), (State::OutOfOrder, Some(3)));
    conn.close().await;
}

async fn two_concurrent_migrate_runs_apply_each_migration_once(db: &TestDb) {
    let folder = Folder::new();
    for i in 1..=40 {
        folder.write(
            &format!("V{i}__step_{i}.sql"),
            &format!(
                "CREATE TABLE step_{i} (id int);\n{}INSERT INTO step_{i} VALUES ({i});\n",
                db.pause()
            ),
        );
    }
    let files = folder.migrations();
    let run = |files: Vec<baton_migrate::Migration>, url: String| async move {
        let mut conn = defaults::connect(&url).await;
        let report = baton_db::migrate(&mut conn, &files, &Options::default(), Phases::All)
            .await
            .expect("both runs succeed");
        conn.close().await;
        report
    };
    let (a, b) = tokio::join!(
        tokio::spawn(run(files.clone(), db.url.clone())),
        tokio::spawn(run(files.clone(), db.url.clone()))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.applied.len() + b.applied.len(),
        40,
        "together they applied each migration"
    );
    assert_eq!(
        db.query("SELECT count(*), count(DISTINCT version) FROM flyway_schema_history"),
        "40|40"
    );
    let total: String = (1..=40)
        .map(|i| format!("SELECT count(*) AS n FROM step_{i}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    assert_eq!(db.query(&format!("SELECT sum(n) FROM ({total}) s")), "40");
}

async fn phases_split_expand_from_contract_and_unsafe_expands_are_refused(db: &TestDb) {
    let folder = Folder::new();
    folder.write("V1__users.sql", "CREATE TABLE users (id int, name text);\n");
    let mut conn = db.connect().await;
    defaults::migrate(&mut conn, &folder).await.unwrap();
    folder.write(
        "V2__drop_name.sql",
        "-- baton:contract\nALTER TABLE users DROP COLUMN name;\n",
    );
    folder.write(
        "V3__add_email.sql",
        "ALTER TABLE users ADD COLUMN email text;\n",
    );
    let options = Options {
        refuse_unsafe: true,
        ..Options::default()
    };
    let report = baton_db::migrate(&mut conn, &folder.migrations(), &options, Phases::Expand)
        .await
        .unwrap();
    let applied: Vec<&str> = report.applied.iter().map(|a| a.script.as_str()).collect();
    assert_eq!(applied, ["V3__add_email.sql"]);
    assert_eq!(report.left, ["V2__drop_name.sql"]);
    // The contract half later, out of order by design.
    let report = baton_db::migrate(&mut conn, &folder.migrations(), &options, Phases::Contract)
        .await
        .unwrap();
    assert_eq!(report.applied[0].script, "V2__drop_name.sql");
    assert!(report.applied[0].out_of_order);
    assert!(defaults::validate(&mut conn, &folder).await.is_empty());

    // A breaking statement in an expand migration: nothing applied.
    folder.write("V4__fine.sql", "CREATE TABLE fine (id int);\n");
    folder.write(
        "V5__rename.sql",
        "ALTER TABLE users RENAME COLUMN email TO mail;\n",
    );
    let err = baton_db::migrate(&mut conn, &folder.migrations(), &options, Phases::Expand)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nothing was applied")
            && err.contains("V5__rename.sql:1")
            && err.contains("renaming-column"),
        "{err}"
    );
    assert_eq!(db.tables_named(&["fine"]), 0);
    conn.close().await;
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

async fn a_refused_contract_gate_stops_the_run_before_anything_is_applied(db: &TestDb) {
    let folder = Folder::new();
    folder.write(
        "V1__users.sql",
        "CREATE TABLE users (id int PRIMARY KEY, name text, full_name text);\n",
    );
    let mut conn = db.connect().await;
    let options = Options::default();
    defaults::migrate(&mut conn, &folder).await.unwrap();
    folder.write("V2__more.sql", "CREATE TABLE more (id int);\n");
    folder.write(
        "V3__drop_name.sql",
        "-- baton:contract\nALTER TABLE users DROP COLUMN name;\n",
    );
    let gate = Refuse(Default::default());
    let err = baton_db::migrate_gated(
        &mut conn,
        &folder.migrations(),
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
    assert_eq!(db.query("SELECT count(*) FROM flyway_schema_history"), "1");
    // The expand half alone never asks.
    let report = baton_db::migrate_gated(
        &mut conn,
        &folder.migrations(),
        &options,
        Phases::Expand,
        &gate,
    )
    .await
    .unwrap();
    assert_eq!(report.applied.len(), 1);
    assert_eq!(report.left, ["V3__drop_name.sql"]);
    assert_eq!(gate.0.lock().unwrap().len(), 1);
    conn.close().await;
}
