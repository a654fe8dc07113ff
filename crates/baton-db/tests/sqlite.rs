//! The runner against SQLite files, where SQLite alone behaves so: it reads
//! each script whole, so a trigger body holding `;` runs as written. What
//! holds on every database is in every_dialect.rs.

#[path = "support/defaults.rs"]
mod defaults;
#[path = "support/files.rs"]
mod files;

use defaults::connect;
use files::{sqlite3, Folder};

#[tokio::test]
async fn a_trigger_whose_body_holds_semicolons_runs_as_written() {
    let folder = Folder::new();
    let file = folder.path("app.db");
    let migrations = Folder::new();
    migrations.write(
        "V1__users.sql",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\r\n",
    );
    migrations.write(
        "V2__trigger.sql",
        "CREATE TABLE log (name TEXT);\nCREATE TRIGGER users_log AFTER INSERT ON users BEGIN\n  INSERT INTO log VALUES (new.name);\nEND;\nINSERT INTO users (name) VALUES ('ada');\n",
    );
    let mut db = connect(&format!("sqlite://{}", file.display())).await;
    let report = defaults::migrate(&mut db, &migrations).await.unwrap();
    assert_eq!(report.applied.len(), 2);
    assert_eq!(sqlite3(&file, "SELECT name FROM log"), "ada");
    db.close().await;
}
