//! The `flyway_schema_history` table, as rows.
//!
//! This module owns the shape of one history row and the few conventions
//! Flyway attaches to its columns (type names, the baseline and delete
//! markers, the 200-character description limit). It must never talk to a
//! database: the runner reads rows into [`HistoryRow`] and writes
//! [`NewHistoryRow`]s back; everything in between is pure.
//!
//! Flyway's columns: `installed_rank` (the order rows were written, the
//! primary key), `version` (NULL for repeatable migrations), `description`,
//! `type` (`SQL` for script migrations, `BASELINE` for the marker written by
//! `baseline`, `DELETE` for the marker written by `repair` over a migration
//! whose file is gone, `SCHEMA` for the marker of schemas Flyway created, and
//! others such as `JDBC` for Java migrations), `script`, `checksum` (NULL for
//! markers), `installed_by`, `installed_on`, `execution_time` (milliseconds)
//! and `success`.

use serde::Serialize;

use crate::version::Version;

/// Flyway writes this as description and script of the `baseline` marker.
pub const BASELINE_DESCRIPTION: &str = "<< Flyway Baseline >>";

/// Flyway's `description` column is `VARCHAR(200)`.
pub const DESCRIPTION_LIMIT: usize = 200;

/// The `type` column of a history row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum MigrationType {
    /// A SQL script migration (versioned or repeatable).
    Sql,
    /// The marker written by `baseline`.
    Baseline,
    /// The marker written when Flyway created the schema itself.
    Schema,
    /// The marker written by `repair` for a migration whose file was removed.
    Delete,
    /// Any other type Flyway knows (`JDBC`, `SQL_BASELINE`, `UNDO_SQL`, ...).
    Other(String),
}

impl MigrationType {
    /// Reads the `type` column.
    pub fn parse(text: &str) -> MigrationType {
        match text {
            "SQL" => MigrationType::Sql,
            "BASELINE" => MigrationType::Baseline,
            "SCHEMA" => MigrationType::Schema,
            "DELETE" => MigrationType::Delete,
            other => MigrationType::Other(other.to_string()),
        }
    }

    /// The text for the `type` column.
    pub fn as_str(&self) -> &str {
        match self {
            MigrationType::Sql => "SQL",
            MigrationType::Baseline => "BASELINE",
            MigrationType::Schema => "SCHEMA",
            MigrationType::Delete => "DELETE",
            MigrationType::Other(other) => other,
        }
    }

    /// Markers Flyway writes itself rather than by running a script; they are
    /// never matched against files.
    pub fn is_synthetic(&self) -> bool {
        matches!(
            self,
            MigrationType::Baseline | MigrationType::Schema | MigrationType::Delete
        )
    }

    /// Rows that set the baseline: the `baseline` marker, and the baseline
    /// migrations of Flyway's paid editions (`SQL_BASELINE`, ...).
    pub fn is_baseline(&self) -> bool {
        match self {
            MigrationType::Baseline => true,
            MigrationType::Other(other) => other.ends_with("_BASELINE"),
            _ => false,
        }
    }
}

impl From<MigrationType> for String {
    fn from(kind: MigrationType) -> String {
        kind.as_str().to_string()
    }
}

impl std::fmt::Display for MigrationType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `flyway_schema_history`, as read from the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    pub installed_rank: i32,
    /// `None` for repeatable migrations and for the schema marker of some
    /// Flyway versions.
    pub version: Option<Version>,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: MigrationType,
    pub script: String,
    pub checksum: Option<i32>,
    pub installed_by: String,
    /// As the database printed it; Baton only shows it.
    pub installed_on: String,
    /// Milliseconds.
    pub execution_time: i32,
    pub success: bool,
}

/// A row Baton is about to insert; `installed_on` is left to the database's
/// clock (the column defaults to the current time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewHistoryRow {
    pub installed_rank: i32,
    pub version: Option<Version>,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: MigrationType,
    pub script: String,
    pub checksum: Option<i32>,
    pub installed_by: String,
    pub execution_time: i32,
    pub success: bool,
}

/// The description as Flyway stores it: cut to 197 characters plus `...` when
/// longer than the column allows, so long names still compare equal later.
pub fn stored_description(description: &str) -> String {
    if description.chars().count() <= DESCRIPTION_LIMIT {
        return description.to_string();
    }
    let mut cut: String = description.chars().take(DESCRIPTION_LIMIT - 3).collect();
    cut.push_str("...");
    cut
}

/// The rank the next inserted row gets: one more than any row's.
pub fn next_rank(rows: &[HistoryRow]) -> i32 {
    rows.iter()
        .map(|row| row.installed_rank)
        .max()
        .map_or(1, |rank| rank.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_column_round_trips() {
        for text in [
            "SQL",
            "BASELINE",
            "SCHEMA",
            "DELETE",
            "JDBC",
            "SQL_BASELINE",
        ] {
            assert_eq!(MigrationType::parse(text).as_str(), text);
        }
        assert!(MigrationType::parse("SQL_BASELINE").is_baseline());
        assert!(!MigrationType::parse("SQL_BASELINE").is_synthetic());
        assert!(MigrationType::Delete.is_synthetic());
    }

    #[test]
    fn long_descriptions_are_cut_like_flyway() {
        let long = "x".repeat(250);
        let stored = stored_description(&long);
        assert_eq!(stored.chars().count(), 200);
        assert!(stored.ends_with("..."));
        assert_eq!(stored_description("add users"), "add users");
    }
}
