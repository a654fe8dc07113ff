//! The runner against a real MariaDB server, where MySQL alone behaves so:
//! its DDL commits itself, so a failure after DDL is recorded as Flyway
//! does. What holds on every database is in every_dialect.rs.

#[path = "support/defaults.rs"]
mod defaults;
#[path = "support/files.rs"]
mod files;
#[path = "support/mysql.rs"]
mod mysql;

use defaults::connect;
use files::Folder;
use mysql::{query_url, server};

#[tokio::test]
async fn data_changes_roll_back_whole_and_a_failure_after_ddl_is_recorded_as_flyway_does() {
    let url = server().database();
    let folder = Folder::new();
    folder.write(
        "V1__users.sql",
        "CREATE TABLE users (id BIGINT AUTO_INCREMENT PRIMARY KEY, name TEXT);\n",
    );
    folder.write(
        "V2__seed.sql",
        "INSERT INTO users (name) VALUES ('ada');\nINSERT INTO users (name) VALUES ('bob');\n",
    );
    let mut db = connect(&url).await;
    let report = defaults::migrate(&mut db, &folder).await.unwrap();
    assert_eq!(report.applied.len(), 2);

    // Data changes alone roll back whole: nothing recorded.
    folder.write(
        "V3__bad_data.sql",
        "INSERT INTO users (name) VALUES ('eve');\nINSERT INTO nowhere VALUES (1);\n",
    );
    let err = defaults::migrate(&mut db, &folder)
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
    let err = defaults::migrate(&mut db, &folder)
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
    let err = defaults::migrate(&mut db, &folder)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("repair"), "{err}");
    folder.write(
        "V3__bad_data.sql",
        "CREATE TABLE IF NOT EXISTS half (id INT);\n",
    );
    baton_db::repair(&mut db, &folder.migrations(), &baton_db::Options::default())
        .await
        .unwrap();
    defaults::migrate(&mut db, &folder).await.unwrap();
    assert!(defaults::validate(&mut db, &folder).await.is_empty());
}
