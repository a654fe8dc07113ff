//! Taking over from sqlx: the history of `_sqlx_migrations` written into
//! `flyway_schema_history`, so a team moving from `sqlx migrate` to Baton
//! keeps its applied migrations applied.
//!
//! sqlx names files `<version>_<description>.sql` (or `.up.sql`) and records
//! each one's SHA-384; Baton needs Flyway names. [`flyway_name`] converts a
//! name; [`import_sqlx`] checks that every applied sqlx migration has a
//! Flyway file with the very same bytes, then writes one history row per
//! migration, in version order. `_sqlx_migrations` is left untouched.

use baton_migrate::history::stored_description;
use baton_migrate::{Migration, MigrationType, NewHistoryRow, Version};
use sha2::{Digest, Sha384};

use crate::conn::Database;
use crate::run::Options;
use crate::DbError;

/// One row of `_sqlx_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlxRow {
    pub version: i64,
    pub description: String,
    pub success: bool,
    pub checksum: Vec<u8>,
    /// Nanoseconds.
    pub execution_time: i64,
}

/// The Flyway name of a sqlx migration file (`20240101120000_add_users.sql`
/// → `V20240101120000__add_users.sql`); `None` for down migrations and
/// names that are not sqlx's.
pub fn flyway_name(sqlx_name: &str) -> Option<String> {
    if sqlx_name.ends_with(".down.sql") {
        return None;
    }
    let stem = sqlx_name
        .strip_suffix(".up.sql")
        .or_else(|| sqlx_name.strip_suffix(".sql"))?;
    let (version, description) = stem.split_once('_')?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) || description.is_empty()
    {
        return None;
    }
    Some(format!("V{version}__{description}.sql"))
}

/// Writes the Flyway history of the migrations sqlx applied. Refused when a
/// Flyway history already exists, when sqlx recorded a failed migration, or
/// when an applied migration has no Flyway file with the same content.
pub async fn import_sqlx(
    db: &mut Database,
    files: &[Migration],
    options: &Options,
) -> Result<Vec<NewHistoryRow>, DbError> {
    db.set_lock_timeout(options.lock_timeout).await?;
    db.lock(options.lock_wait).await?;
    let result = async {
        let rows = db.sqlx_history().await?;
        if !db.history().await?.is_empty() {
            return Err(DbError::Import(
                "flyway_schema_history already holds rows; import only into a database Baton or Flyway never migrated".into(),
            ));
        }
        let user = match &options.installed_by {
            Some(user) => user.clone(),
            None => db.current_user().await?,
        };
        let mut new = Vec::new();
        for (rank, row) in rows.iter().enumerate() {
            if !row.success {
                return Err(DbError::Import(format!(
                    "_sqlx_migrations records version {} ({}) as failed; fix it with sqlx first",
                    row.version, row.description
                )));
            }
            let version = Version::parse(&row.version.to_string())
                .map_err(|e| DbError::Import(format!("version {}: {e}", row.version)))?;
            let file = files
                .iter()
                .find(|m| m.version.as_ref() == Some(&version))
                .ok_or_else(|| {
                    DbError::Import(format!(
                        "sqlx applied version {} ({}) but the migrations folder has no V{}__….sql; convert the sqlx files first (`baton db import-sqlx --from DIR`)",
                        row.version, row.description, row.version
                    ))
                })?;
            if Sha384::digest(file.sql.as_bytes()).as_slice() != row.checksum.as_slice() {
                return Err(DbError::Import(format!(
                    "{} is not the migration sqlx applied as version {}: its SHA-384 differs from _sqlx_migrations.checksum",
                    file.script, row.version
                )));
            }
            new.push(NewHistoryRow {
                installed_rank: rank as i32 + 1,
                version: Some(version),
                description: stored_description(&file.description),
                kind: MigrationType::Sql,
                script: file.script.clone(),
                checksum: Some(file.checksum),
                installed_by: user.clone(),
                execution_time: (row.execution_time / 1_000_000).clamp(0, i32::MAX as i64) as i32,
                success: true,
            });
        }
        db.create_history().await?;
        db.begin().await?;
        for row in &new {
            if let Err(e) = db.insert_row(row).await {
                db.rollback().await;
                return Err(e);
            }
        }
        db.commit().await?;
        Ok(new)
    }
    .await;
    db.unlock().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlx_names_become_flyway_names() {
        assert_eq!(
            flyway_name("20240101120000_add_users.sql").as_deref(),
            Some("V20240101120000__add_users.sql")
        );
        assert_eq!(
            flyway_name("2_seed.up.sql").as_deref(),
            Some("V2__seed.sql")
        );
        assert_eq!(flyway_name("2_seed.down.sql"), None);
        assert_eq!(flyway_name("README.md"), None);
        assert_eq!(flyway_name("x_y.sql"), None);
    }
}
