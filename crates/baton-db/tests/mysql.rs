//! The runner against a real MariaDB server: Flyway's rows, a failure on a
//! database whose DDL commits itself, and two concurrent runs.

#[path = "support/files.rs"]
mod files;
#[path = "support/mysql.rs"]
mod mysql;

use baton_db::{Database, Options, Phases};
use files::Folder;
use mysql::{query_url, server};

#[tokio::test]
async fn migrate_writes_flyways_rows_and_a_failure_is_recorded_as_flyway_does() {
    let url = server().database();
    let folder = Folder::new();
    folder.write(
        "V1__users.sql",
        "CREATE TABLE users (id BIGINT AUTO_INCREMENT PRIMARY KEY, name TEXT);\r\n",
    );
    folder.write(
        "V2__seed.sql",
        "INSERT INTO users (name) VALUES ('ada');\nINSERT INTO users (name) VALUES ('bob');\n",
    );
    let mut db = Database::connect(&url).await.unwrap();
    let report = baton_db::migrate(
        &mut db,
        &folder.migrations(),
        &Options::default(),
        Phases::All,
    )
    .await
    .unwrap();
    assert_eq!(report.applied.len(), 2);
    assert_eq!(
        query_url(&url, "SELECT installed_rank, version, description, type, script, checksum, installed_by, success FROM flyway_schema_history ORDER BY installed_rank"),
        format!(
            "1\t1\tusers\tSQL\tV1__users.sql\t{}\troot\t1\n2\t2\tseed\tSQL\tV2__seed.sql\t{}\troot\t1",
            files::flyway_checksum(&folder.path("V1__users.sql")),
            files::flyway_checksum(&folder.path("V2__seed.sql")),
        )
    );

    // Data changes alone roll back whole: nothing recorded.
    folder.write(
        "V3__bad_data.sql",
        "INSERT INTO users (name) VALUES ('eve');\nINSERT INTO nowhere VALUES (1);\n",
    );
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
        err.contains("V3__bad_data.sql:2") && err.contains("nowhere"),
        "{err}"
    );
    assert_eq!(query_url(&url, "SELECT count(*) FROM users"), "2");

    // DDL commits itself on MySQL: the failed row says so, and migrate
    // refuses to go on until repair.
    folder.write(
        "V3__bad_data.sql",
        "CREATE TABLE half (id INT);\nINSERT INTO nowhere VALUES (1);\n",
    );
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
        err.contains("flyway_schema_history records it as failed"),
        "{err}"
    );
    assert_eq!(
        query_url(
            &url,
            "SELECT success FROM flyway_schema_history WHERE version = '3'"
        ),
        "0"
    );
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
        "V3__bad_data.sql",
        "CREATE TABLE IF NOT EXISTS half (id INT);\n",
    );
    baton_db::repair(&mut db, &folder.migrations(), &Options::default())
        .await
        .unwrap();
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
async fn two_concurrent_migrate_runs_apply_each_migration_once() {
    let url = server().database();
    let folder = Folder::new();
    for i in 1..=20 {
        folder.write(
            &format!("V{i}__t{i}.sql"),
            &format!("CREATE TABLE t{i} (id INT);\nDO SLEEP(0.005);\n"),
        );
    }
    let files = folder.migrations();
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
    assert_eq!(a.unwrap().applied.len() + b.unwrap().applied.len(), 20);
    assert_eq!(
        query_url(
            &url,
            "SELECT count(*), count(DISTINCT version) FROM flyway_schema_history"
        ),
        "20\t20"
    );
}
