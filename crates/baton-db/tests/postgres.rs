//! The runner against a real PostgreSQL server: Flyway's commands, its
//! history rows and checksums, failure, locking and concurrency.

#[path = "support/files.rs"]
mod files;
#[path = "support/postgres.rs"]
mod postgres;

use std::time::Duration;

use baton_db::{Database, DbError, Options, Phases};
use baton_migrate::plan::State;
use baton_migrate::Version;
use files::Folder;
use postgres::{psql_url, server};

async fn connect(url: &str) -> Database {
    Database::connect(url).await.expect("connects")
}

#[tokio::test]
async fn migrate_writes_flyways_rows_and_applies_each_migration_once() {
    let url = server().database();
    let folder = Folder::new();
    folder.write(
        "V1__create_users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY, name text);\n",
    );
    folder.write(
        "V1.1__add_email.sql",
        "ALTER TABLE users ADD COLUMN email text;\n",
    );
    folder.write("sub/V2__seed.sql", "INSERT INTO users (id, name) VALUES (1, 'ada');\nINSERT INTO users (id, name) VALUES (2, 'bob');\n");
    folder.write(
        "R__users_view.sql",
        "CREATE OR REPLACE VIEW user_names AS SELECT name FROM users;\n",
    );

    let mut db = connect(&url).await;
    let report = baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
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
    assert_eq!(psql_url(&url, "SELECT count(*) FROM user_names"), "2");

    // The rows Flyway writes, column by column.
    let rows = psql_url(
        &url,
        "SELECT installed_rank, coalesce(version, '<null>'), description, type, script, checksum, installed_by, execution_time >= 0, success, installed_on <= now() FROM flyway_schema_history ORDER BY installed_rank",
    );
    let expected = [
        format!(
            "1|1|create users|SQL|V1__create_users.sql|{}|baton|t|t|t",
            files::flyway_checksum(&folder.path("V1__create_users.sql"))
        ),
        format!(
            "2|1.1|add email|SQL|V1.1__add_email.sql|{}|baton|t|t|t",
            files::flyway_checksum(&folder.path("V1.1__add_email.sql"))
        ),
        format!(
            "3|2|seed|SQL|sub/V2__seed.sql|{}|baton|t|t|t",
            files::flyway_checksum(&folder.path("sub/V2__seed.sql"))
        ),
        format!(
            "4|<null>|users view|SQL|R__users_view.sql|{}|baton|t|t|t",
            files::flyway_checksum(&folder.path("R__users_view.sql"))
        ),
    ];
    assert_eq!(rows, expected.join("\n"));
    // The table itself, as Flyway creates it.
    assert_eq!(
        psql_url(&url, "SELECT string_agg(column_name || ':' || data_type || ':' || is_nullable, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'flyway_schema_history'"),
        "installed_rank:integer:NO,version:character varying:YES,description:character varying:NO,type:character varying:NO,script:character varying:NO,checksum:integer:YES,installed_by:character varying:NO,installed_on:timestamp without time zone:NO,execution_time:integer:NO,success:boolean:NO"
    );

    // Again: nothing to do.
    let again = baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
    assert!(again.applied.is_empty());
    let info = baton_db::info(&mut db, &folder.migrations(), &Options::default())
        .await
        .unwrap();
    assert!(
        info.entries.iter().all(|e| e.state == State::Success),
        "{:?}",
        info.entries
    );
    assert_eq!(info.current, Some(Version::parse("2").unwrap()));

    // A changed repeatable runs again; a new version is appended.
    folder.write(
        "R__users_view.sql",
        "CREATE OR REPLACE VIEW user_names AS SELECT name, email FROM users;\n",
    );
    folder.write(
        "V3__index.sql",
        "-- baton:no-transaction\nCREATE INDEX CONCURRENTLY users_name ON users (name);\n",
    );
    let report = baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
    let applied: Vec<(&str, bool)> = report
        .applied
        .iter()
        .map(|a| (a.script.as_str(), a.in_transaction))
        .collect();
    assert_eq!(
        applied,
        [("V3__index.sql", false), ("R__users_view.sql", true)]
    );
    assert_eq!(
        psql_url(
            &url,
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_name'::regclass"
        ),
        "t"
    );
    let info = baton_db::info(&mut db, &folder.migrations(), &Options::default())
        .await
        .unwrap();
    let states: Vec<(String, State)> = info
        .entries
        .iter()
        .map(|e| (e.script.clone(), e.state))
        .collect();
    assert!(
        states.contains(&("R__users_view.sql".into(), State::Superseded)),
        "{states:?}"
    );
}

#[tokio::test]
async fn checksums_equal_flyways_for_lf_crlf_and_bom() {
    let url = server().database();
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
    let mut db = connect(&url).await;
    baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
    let stored = psql_url(
        &url,
        "SELECT string_agg(checksum::text, ',' ORDER BY installed_rank) FROM flyway_schema_history",
    );
    let independent: Vec<String> = ["V1__lf.sql", "V2__crlf.sql", "V3__bom.sql"]
        .iter()
        .map(|f| files::flyway_checksum(&folder.path(f)).to_string())
        .collect();
    assert_eq!(stored, independent.join(","));
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
}

#[tokio::test]
async fn a_failing_migration_changes_nothing() {
    let url = server().database();
    let folder = Folder::new();
    folder.write("V1__ok.sql", "CREATE TABLE ok (id int);\n");
    folder.write(
        "V2__breaks.sql",
        "CREATE TABLE half (id int);\nINSERT INTO ok VALUES (1);\n\nINSERT INTO nowhere VALUES (1);\n",
    );
    folder.write("V3__after.sql", "CREATE TABLE after (id int);\n");
    let mut db = connect(&url).await;
    let err = baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DbError::Failed { line: 4, .. }), "{text}");
    assert!(text.contains("V2__breaks.sql:4"), "{text}");
    assert!(text.contains("nowhere"), "{text}");
    assert!(text.contains("rolled back"), "{text}");
    // V1 stays applied; V2 left nothing behind; V3 never ran.
    assert_eq!(
        psql_url(&url, "SELECT string_agg(script || ':' || success, ',' ORDER BY installed_rank) FROM flyway_schema_history"),
        "V1__ok.sql:true"
    );
    assert_eq!(psql_url(&url, "SELECT count(*) FROM ok"), "0");
    assert_eq!(
        psql_url(
            &url,
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('half', 'after')"
        ),
        "0"
    );
    let info = baton_db::info(&mut db, &folder.migrations(), &Options::default())
        .await
        .unwrap();
    let pending: Vec<&str> = info.pending().map(|e| e.script.as_str()).collect();
    assert_eq!(pending, ["V2__breaks.sql", "V3__after.sql"]);

    // Fixed, it applies.
    folder.write(
        "V2__breaks.sql",
        "CREATE TABLE half (id int);\nINSERT INTO ok VALUES (1);\n",
    );
    let report = baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
    assert_eq!(report.applied.len(), 2);
}

#[tokio::test]
async fn outside_a_transaction_a_half_applied_migration_is_recorded_failed_until_repaired() {
    let url = server().database();
    let folder = Folder::new();
    folder.write("V1__t.sql", "CREATE TABLE t (id int);\n");
    folder.write(
        "V2__indexes.sql",
        "-- baton:no-transaction\nCREATE INDEX CONCURRENTLY t_id ON t (id);\nCREATE INDEX CONCURRENTLY t_bad ON t (nope);\n",
    );
    let mut db = connect(&url).await;
    let err = baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("V2__indexes.sql:3") && err.contains("outside a transaction"),
        "{err}"
    );
    assert_eq!(
        psql_url(&url, "SELECT string_agg(version || ':' || success, ',' ORDER BY installed_rank) FROM flyway_schema_history"),
        "1:true,2:false"
    );
    // Migrate refuses until repair, as Flyway does.
    let err = baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("repair"), "{err}");
    folder.write(
        "V2__indexes.sql",
        "-- baton:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n",
    );
    let plan = baton_db::repair(&mut db, &folder.migrations(), &Options::default())
        .await
        .unwrap();
    assert_eq!(plan.remove_failed.len(), 1);
    baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
    assert_eq!(
        psql_url(&url, "SELECT string_agg(version || ':' || success, ',' ORDER BY installed_rank) FROM flyway_schema_history"),
        "1:true,2:true"
    );
}

#[tokio::test]
async fn validate_and_repair_behave_as_flyway() {
    let url = server().database();
    let folder = Folder::new();
    folder.write("V1__a.sql", "CREATE TABLE a (id int);\n");
    folder.write("V2__b.sql", "CREATE TABLE b (id int);\n");
    folder.write("V3__c.sql", "CREATE TABLE c (id int);\n");
    let mut db = connect(&url).await;
    baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
    assert!(
        baton_db::validate(&mut db, &folder.migrations(), &Options::default())
            .await
            .unwrap()
            .is_empty()
    );

    // An applied file edited, another removed, a new one pending.
    folder.write("V1__a.sql", "CREATE TABLE a (id bigint);\n");
    folder.remove("V2__b.sql");
    folder.write("V4__d.sql", "CREATE TABLE d (id int);\n");
    let problems: Vec<String> =
        baton_db::validate(&mut db, &folder.migrations(), &Options::default())
            .await
            .unwrap()
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
    let err = baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert_eq!(
        psql_url(&url, "SELECT count(*) FROM flyway_schema_history"),
        "3"
    );

    let plan = baton_db::repair(&mut db, &folder.migrations(), &Options::default())
        .await
        .unwrap();
    assert_eq!((plan.realign.len(), plan.mark_deleted.len()), (1, 1));
    assert_eq!(
        psql_url(&url, "SELECT string_agg(installed_rank || ':' || version || ':' || type || ':' || checksum, ',' ORDER BY installed_rank) FROM flyway_schema_history"),
        format!(
            "1:1:SQL:{},2:2:SQL:{},3:3:SQL:{},4:2:DELETE:{}",
            files::flyway_checksum(&folder.path("V1__a.sql")),
            baton_migrate::checksum("CREATE TABLE b (id int);\n"),
            files::flyway_checksum(&folder.path("V3__c.sql")),
            baton_migrate::checksum("CREATE TABLE b (id int);\n"),
        )
    );
    let info = baton_db::info(&mut db, &folder.migrations(), &Options::default())
        .await
        .unwrap();
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
    baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
    assert!(
        baton_db::validate(&mut db, &folder.migrations(), &Options::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn baseline_and_baseline_on_migrate_skip_what_the_database_already_has() {
    let folder = Folder::new();
    folder.write("V1__legacy.sql", "CREATE TABLE legacy (id int);\n");
    folder.write("V2__next.sql", "CREATE TABLE next (id int);\n");

    // Explicit baseline on an existing schema.
    let url = server().database();
    psql_url(&url, "CREATE TABLE legacy (id int)");
    let mut db = connect(&url).await;
    let row = baton_db::baseline(
        &mut db,
        &Version::parse("1").unwrap(),
        None,
        &Options::default(),
    )
    .await
    .unwrap()
    .expect("written");
    assert_eq!(row.description, "<< Flyway Baseline >>");
    assert_eq!(
        psql_url(&url, "SELECT installed_rank || '|' || version || '|' || description || '|' || type || '|' || script || '|' || coalesce(checksum::text, 'null') || '|' || success FROM flyway_schema_history"),
        "1|1|<< Flyway Baseline >>|BASELINE|<< Flyway Baseline >>|null|true"
    );
    // The same baseline again is a no-op; another is refused.
    assert!(baton_db::baseline(
        &mut db,
        &Version::parse("1").unwrap(),
        None,
        &Options::default()
    )
    .await
    .unwrap()
    .is_none());
    let err = baton_db::baseline(
        &mut db,
        &Version::parse("2").unwrap(),
        None,
        &Options::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("already baselined at version 1"), "{err}");
    let report = baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
    let applied: Vec<&str> = report.applied.iter().map(|a| a.script.as_str()).collect();
    assert_eq!(applied, ["V2__next.sql"]);
    let info = baton_db::info(&mut db, &folder.migrations(), &Options::default())
        .await
        .unwrap();
    assert_eq!(info.entries[0].state, State::BaselineIgnored);

    // baselineOnMigrate: only when the schema holds tables and no history.
    let url = server().database();
    psql_url(&url, "CREATE TABLE legacy (id int)");
    let mut db = connect(&url).await;
    let mut options = Options::default();
    options.settings.baseline_on_migrate = Some(Version::parse("1").unwrap());
    let report = baton_db::migrate(&mut db, &folder.migrations(), &options, Phases::All)
        .await
        .unwrap();
    assert_eq!(report.baselined.as_deref(), Some("1"));
    assert_eq!(report.applied.len(), 1);
    let url = server().database();
    let mut db = connect(&url).await;
    let report = baton_db::migrate(&mut db, &folder.migrations(), &options, Phases::All)
        .await
        .unwrap();
    assert_eq!(
        report.baselined, None,
        "an empty schema is migrated from the start"
    );
    assert_eq!(report.applied.len(), 2);
}

#[tokio::test]
async fn out_of_order_versions_are_ignored_unless_allowed() {
    let url = server().database();
    let folder = Folder::new();
    folder.write("V1__a.sql", "CREATE TABLE a (id int);\n");
    folder.write("V3__c.sql", "CREATE TABLE c (id int);\n");
    let mut db = connect(&url).await;
    baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
    folder.write("V2__b.sql", "CREATE TABLE b (id int);\n");
    let err = baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("version 2 (V2__b.sql) is below version 3"),
        "{err}"
    );
    let info = baton_db::info(&mut db, &folder.migrations(), &Options::default())
        .await
        .unwrap();
    assert!(info
        .entries
        .iter()
        .any(|e| e.script == "V2__b.sql" && e.state == State::Ignored));

    let mut options = Options::default();
    options.settings.out_of_order = true;
    let report = baton_db::migrate(&mut db, &folder.migrations(), &options, Phases::All)
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 1);
    assert!(report.applied[0].out_of_order);
    let info = baton_db::info(&mut db, &folder.migrations(), &options)
        .await
        .unwrap();
    let v2 = info
        .entries
        .iter()
        .find(|e| e.script == "V2__b.sql")
        .unwrap();
    assert_eq!((v2.state, v2.installed_rank), (State::OutOfOrder, Some(3)));
}

#[tokio::test]
async fn two_concurrent_migrate_runs_apply_each_migration_once() {
    let url = server().database();
    let folder = Folder::new();
    for i in 1..=30 {
        folder.write(
            &format!("V{i}__step_{i}.sql"),
            &format!("CREATE TABLE step_{i} (id int);\nSELECT pg_sleep(0.005);\nINSERT INTO step_{i} VALUES ({i});\n"),
        );
    }
    let files = folder.migrations();
    let run = |files: Vec<baton_migrate::Migration>, url: String| async move {
        let mut db = connect(&url).await;
        baton_db::migrate(&mut db, &files, &Options::default(), Phases::All)
            .await
            .expect("both runs succeed")
    };
    let (a, b) = tokio::join!(
        tokio::spawn(run(files.clone(), url.clone())),
        tokio::spawn(run(files.clone(), url.clone()))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.applied.len() + b.applied.len(),
        30,
        "together they applied each migration"
    );
    assert_eq!(
        psql_url(
            &url,
            "SELECT count(*), count(DISTINCT version) FROM flyway_schema_history"
        ),
        "30|30"
    );
    let total: String = (1..=30)
        .map(|i| format!("SELECT count(*) FROM step_{i}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    assert_eq!(
        psql_url(&url, &format!("SELECT sum(count) FROM ({total}) s")),
        "30"
    );
}

#[tokio::test]
async fn the_lock_timeout_stops_a_migration_waiting_behind_a_busy_table() {
    let url = server().database();
    psql_url(&url, "CREATE TABLE busy (id int)");
    let folder = Folder::new();
    folder.write(
        "V1__alter_busy.sql",
        "ALTER TABLE busy ADD COLUMN note text;\n",
    );

    // Another session holds a lock on the table.
    let mut holder = connect(&url).await;
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute("LOCK TABLE busy IN ACCESS SHARE MODE")
        .await
        .unwrap();

    let mut db = connect(&url).await;
    let options = Options {
        lock_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    // PostgreSQL's own "canceling statement due to lock timeout": the
    // runner's timeout, not a wait until the holder lets go.
    let err = baton_db::migrate(&mut db, &folder.migrations(), &options, Phases::All)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("V1__alter_busy.sql:1") && err.contains("lock timeout"),
        "{err}"
    );
    assert_eq!(
        psql_url(&url, "SELECT count(*) FROM flyway_schema_history"),
        "0"
    );
    holder.execute("ROLLBACK").await.unwrap();
    baton_db::migrate(&mut db, &folder.migrations(), &options, Phases::All)
        .await
        .unwrap();
}

#[tokio::test]
async fn phases_split_expand_from_contract_and_unsafe_expands_are_refused() {
    let url = server().database();
    let folder = Folder::new();
    folder.write("V1__users.sql", "CREATE TABLE users (id int, name text);\n");
    let mut db = connect(&url).await;
    baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
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
    let report = baton_db::migrate(&mut db, &folder.migrations(), &options, Phases::Expand)
        .await
        .unwrap();
    let applied: Vec<&str> = report.applied.iter().map(|a| a.script.as_str()).collect();
    assert_eq!(applied, ["V3__add_email.sql"]);
    assert_eq!(report.left, ["V2__drop_name.sql"]);
    // The contract half later, out of order by design.
    let report = baton_db::migrate(&mut db, &folder.migrations(), &options, Phases::Contract)
        .await
        .unwrap();
    assert_eq!(report.applied[0].script, "V2__drop_name.sql");
    assert!(report.applied[0].out_of_order);
    assert!(
        baton_db::validate(&mut db, &folder.migrations(), &Options::default())
            .await
            .unwrap()
            .is_empty()
    );

    // A breaking statement in an expand migration: nothing applied.
    folder.write("V4__fine.sql", "CREATE TABLE fine (id int);\n");
    folder.write(
        "V5__rename.sql",
        "ALTER TABLE users RENAME COLUMN email TO mail;\n",
    );
    let err = baton_db::migrate(&mut db, &folder.migrations(), &options, Phases::Expand)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nothing was applied")
            && err.contains("V5__rename.sql:1")
            && err.contains("renaming-column"),
        "{err}"
    );
    assert_eq!(
        psql_url(
            &url,
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'fine'"
        ),
        "0"
    );
}

#[tokio::test]
async fn an_index_on_a_table_created_in_the_same_pending_batch_passes_the_gate() {
    let url = server().database();
    let folder = Folder::new();
    folder.write("V1__users.sql", "CREATE TABLE users (id bigint);\n");
    let mut db = connect(&url).await;
    let options = Options {
        refuse_unsafe: true,
        ..Options::default()
    };
    baton_db::migrate(&mut db, &folder.migrations(), &options, Phases::All)
        .await
        .unwrap();
    folder.write(
        "V2__orders.sql",
        "CREATE TABLE orders (id bigint, total numeric);\n",
    );
    folder.write(
        "V3__orders_total.sql",
        "CREATE INDEX orders_total ON orders (total);\n",
    );
    // What the gate judges is what `baton db lint` prints for this database.
    let judged = baton_db::lint_pending(&mut db, &folder.migrations(), &options)
        .await
        .unwrap();
    assert_eq!(judged.len(), 2);
    assert!(judged.iter().all(|r| r.findings.is_empty()), "{judged:?}");
    let report = baton_db::migrate(&mut db, &folder.migrations(), &options, Phases::All)
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 2);
    // Once orders exists and is in use, a second index is a locking risk.
    folder.write(
        "V4__orders_id.sql",
        "CREATE INDEX orders_id ON orders (id);\n",
    );
    let err = baton_db::migrate(&mut db, &folder.migrations(), &options, Phases::All)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("V4__orders_id.sql:1") && err.contains("require-concurrent-index-creation"),
        "{err}"
    );
    db.close().await;
}

#[tokio::test]
async fn bad_urls_and_dead_servers_are_named() {
    let err = Database::connect("postgres://baton:secret@127.0.0.1:1/nothing")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("cannot connect to postgres://baton:***@127.0.0.1:1/nothing"),
        "{err}"
    );
    assert!(!err.contains("secret"));
    let err = Database::connect("oracle://x/y")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("postgres://, sqlite:// or mysql://"), "{err}");
}

#[tokio::test]
async fn a_history_applied_by_sqlx_is_imported_and_migration_goes_on_from_it() {
    let url = server().database();
    let sqlx_files = Folder::new();
    sqlx_files.write(
        "1_create_users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY);\n",
    );
    sqlx_files.write(
        "2_add_email.sql",
        "ALTER TABLE users ADD COLUMN email text;\n",
    );
    // The real sqlx migrator applies them.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(sqlx_files.root())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool.close().await;

    let flyway = Folder::new();
    for name in ["1_create_users.sql", "2_add_email.sql"] {
        let text = std::fs::read_to_string(sqlx_files.path(name)).unwrap();
        flyway.write(&baton_db::flyway_name(name).unwrap(), &text);
    }
    // A file that is not what sqlx applied is refused, and nothing written.
    let tampered = Folder::new();
    tampered.write(
        "V1__create_users.sql",
        "CREATE TABLE users (id int PRIMARY KEY);\n",
    );
    tampered.write(
        "V2__add_email.sql",
        "ALTER TABLE users ADD COLUMN email text;\n",
    );
    let mut db = connect(&url).await;
    let err = baton_db::import_sqlx(&mut db, &tampered.migrations(), &Options::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("V1__create_users.sql is not the migration sqlx applied as version 1"),
        "{err}"
    );
    assert!(db.history().await.unwrap().is_empty());

    let rows = baton_db::import_sqlx(&mut db, &flyway.migrations(), &Options::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        psql_url(&url, "SELECT string_agg(installed_rank || ':' || version || ':' || description || ':' || script || ':' || checksum, ',' ORDER BY installed_rank) FROM flyway_schema_history"),
        format!(
            "1:1:create users:V1__create_users.sql:{},2:2:add email:V2__add_email.sql:{}",
            files::flyway_checksum(&flyway.path("V1__create_users.sql")),
            files::flyway_checksum(&flyway.path("V2__add_email.sql")),
        )
    );
    assert!(
        baton_db::validate(&mut db, &flyway.migrations(), &Options::default())
            .await
            .unwrap()
            .is_empty()
    );
    flyway.write(
        "V3__add_name.sql",
        "ALTER TABLE users ADD COLUMN name text;\n",
    );
    let report = baton_db::migrate(
        &mut db,
        &flyway.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
    assert_eq!(report.applied.len(), 1);
    assert_eq!(report.applied[0].script, "V3__add_name.sql");
    // sqlx's own table is left as it was.
    assert_eq!(psql_url(&url, "SELECT count(*) FROM _sqlx_migrations"), "2");
    let err = baton_db::import_sqlx(&mut db, &flyway.migrations(), &Options::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds rows"), "{err}");
}

#[tokio::test]
async fn the_runner_reaches_a_server_over_tls_when_the_url_asks_for_it() {
    let url = server().database();
    let folder = Folder::new();
    // The migration records whether its own connection is encrypted.
    folder.write(
        "V1__ssl.sql",
        "CREATE TABLE seen AS SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();\n",
    );
    let mut db = connect(&format!("{url}?sslmode=require")).await;
    baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
    assert_eq!(psql_url(&url, "SELECT ssl FROM seen"), "t");
    // Verifying the certificate against the system's roots refuses a
    // self-signed one, and says so.
    let err = Database::connect(&format!("{url}?sslmode=verify-full"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("cannot connect to"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}
