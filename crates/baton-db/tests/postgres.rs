//! The runner against a real PostgreSQL server, where PostgreSQL alone
//! behaves so: Flyway's column types, online DDL outside a transaction, the
//! lock timeout, the concurrent-index rule, TLS, importing sqlx's history.
//! What holds on every database is in every_dialect.rs.

#[path = "support/defaults.rs"]
mod defaults;
#[path = "support/files.rs"]
mod files;
#[path = "support/postgres.rs"]
mod postgres;

use std::time::Duration;

use baton_db::{Database, Options, Phases};
use defaults::connect;
use files::Folder;
use postgres::{psql_url, server};

#[tokio::test]
async fn the_history_table_has_flyways_columns_and_types() {
    let url = server().database();
    let folder = Folder::new();
    folder.write("V1__t.sql", "CREATE TABLE t (id int);\n");
    let mut db = connect(&url).await;
    defaults::migrate(&mut db, &folder).await.unwrap();
    assert_eq!(
        psql_url(&url, "SELECT string_agg(column_name || ':' || data_type || ':' || is_nullable, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'flyway_schema_history'"),
        "installed_rank:integer:NO,version:character varying:YES,description:character varying:NO,type:character varying:NO,script:character varying:NO,checksum:integer:YES,installed_by:character varying:NO,installed_on:timestamp without time zone:NO,execution_time:integer:NO,success:boolean:NO"
    );
}

#[tokio::test]
async fn a_no_transaction_migration_builds_an_index_concurrently() {
    let url = server().database();
    let folder = Folder::new();
    folder.write(
        "V1__create_users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY, name text);\n",
    );
    // CREATE INDEX CONCURRENTLY cannot run inside a transaction block.
    folder.write(
        "V2__index.sql",
        "-- baton:no-transaction\nCREATE INDEX CONCURRENTLY users_name ON users (name);\n",
    );
    let mut db = connect(&url).await;
    let report = defaults::migrate(&mut db, &folder).await.unwrap();
    let applied: Vec<(&str, bool)> = report
        .applied
        .iter()
        .map(|a| (a.script.as_str(), a.in_transaction))
        .collect();
    assert_eq!(
        applied,
        [("V1__create_users.sql", true), ("V2__index.sql", false)]
    );
    assert_eq!(
        psql_url(
            &url,
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_name'::regclass"
        ),
        "t"
    );
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
    let err = defaults::migrate(&mut db, &folder)
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
    let err = defaults::migrate(&mut db, &folder)
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
    defaults::migrate(&mut db, &folder).await.unwrap();
    assert_eq!(
        psql_url(&url, "SELECT string_agg(version || ':' || success, ',' ORDER BY installed_rank) FROM flyway_schema_history"),
        "1:true,2:true"
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
    assert!(defaults::validate(&mut db, &flyway).await.is_empty());
    flyway.write(
        "V3__add_name.sql",
        "ALTER TABLE users ADD COLUMN name text;\n",
    );
    let report = defaults::migrate(&mut db, &flyway).await.unwrap();
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
    defaults::migrate(&mut db, &folder).await.unwrap();
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
