//! The runner's commands as most tests call them: on a folder's migrations,
//! with Baton's default options, `migrate` applying every pending one.

#![allow(dead_code)]

use baton_db::{Database, DbError, MigrateReport, Options, Phases};
use baton_migrate::{Info, ValidationError};

use crate::files::Folder;

pub async fn connect(url: &str) -> Database {
    Database::connect(url).await.expect("connects")
}

pub async fn migrate(db: &mut Database, folder: &Folder) -> Result<MigrateReport, DbError> {
    baton_db::migrate(db, &folder.migrations(), &Options::default(), Phases::All).await
}

pub async fn info(db: &mut Database, folder: &Folder) -> Info {
    baton_db::info(db, &folder.migrations(), &Options::default())
        .await
        .expect("info reads the history")
}

pub async fn validate(db: &mut Database, folder: &Folder) -> Vec<ValidationError> {
    baton_db::validate(db, &folder.migrations(), &Options::default())
        .await
        .expect("validate reads the history")
}
