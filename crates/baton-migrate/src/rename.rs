//! The expand/contract pair of migrations for renaming a PostgreSQL column.
//!
//! This module owns writing that pair as SQL text; it must never run it or
//! decide when it runs. Renaming in place breaks whichever release does not
//! know the new name, so the pair does it in two steps:
//!
//! - **Expand** (safe while the old release runs; runs outside a single
//!   transaction): adds the new column, installs a trigger that keeps old and
//!   new equal in both directions (an update wins for the column it changed;
//!   an insert fills whichever is missing), then copies existing rows in
//!   batches, committing each batch so no lock is held for long. Optionally
//!   it proves the new column has no NULLs with a `CHECK … NOT VALID` that it
//!   validates without blocking writes.
//! - **Contract** (only once no running release uses the old name): drops the
//!   trigger and its function, sets NOT NULL if asked (instant thanks to the
//!   validated check), and drops the old column.
//!
//! The backfill commits inside a `DO` block, so the runner must send the
//! expand file's statements one at a time ([`crate::sql::split`]), never as
//! one multi-statement string (PostgreSQL would wrap that in a transaction).
//! Statements before the backfill are idempotent, so a failed expand can be
//! re-run after `repair`.

use serde::Serialize;

use crate::version::Version;

/// PostgreSQL silently truncates longer identifiers.
const MAX_IDENTIFIER: usize = 63;

/// Words PostgreSQL reserves; identifiers equal to one must be quoted.
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// What to rename, and how to run the copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnRename {
    /// Names are exact PostgreSQL identifiers (case-sensitive); they are
    /// quoted in the SQL where needed.
    pub schema: Option<String>,
    pub table: String,
    pub from: String,
    pub to: String,
    /// The column's type, as in `ALTER TABLE … ADD COLUMN to <type>`.
    pub column_type: String,
    /// A unique, indexed column to walk the table by (usually the primary key).
    pub key_column: String,
    pub batch_size: u32,
    /// The `lock_timeout` both files set, e.g. `5s`.
    pub lock_timeout: String,
    /// Whether the new column must end up NOT NULL (the old one is).
    pub not_null: bool,
}

/// Why a rename cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenameError {
    #[error("the {what} name is empty")]
    EmptyName { what: &'static str },
    #[error("the {what} name `{name}` is longer than PostgreSQL's 63 bytes")]
    NameTooLong { what: &'static str, name: String },
    #[error("the {what} name `{name}` contains a control character or `$baton`")]
    BadName { what: &'static str, name: String },
    #[error("`{name}` is both the old and the new column name")]
    SameName { name: String },
    #[error("`{column_type}` is not a column type: give a single type such as `text` or `numeric(10,2)`")]
    BadType { column_type: String },
    #[error("the batch size must be at least 1")]
    ZeroBatch,
    #[error("lock timeout `{value}` is not a duration such as `5s` or `500ms`")]
    BadLockTimeout { value: String },
}

/// The two migrations, as file contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenamePair {
    pub expand: String,
    pub contract: String,
    pub expand_description: String,
    pub contract_description: String,
}

impl RenamePair {
    /// `V<version>__expand_rename_….sql`
    pub fn expand_file_name(&self, version: &Version) -> String {
        file_name(version, &self.expand_description)
    }

    /// `V<version>__contract_rename_….sql`
    pub fn contract_file_name(&self, version: &Version) -> String {
        file_name(version, &self.contract_description)
    }
}

fn file_name(version: &Version, description: &str) -> String {
    let slug: String = description
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("V{version}__{slug}.sql")
}

impl ColumnRename {
    /// A rename with the usual settings: key `id`, batches of 1000, a 5 s
    /// lock timeout, nullable new column.
    pub fn new(table: &str, from: &str, to: &str, column_type: &str) -> ColumnRename {
        ColumnRename {
            schema: None,
            table: table.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            column_type: column_type.to_string(),
            key_column: "id".to_string(),
            batch_size: 1000,
            lock_timeout: "5s".to_string(),
            not_null: false,
        }
    }

    fn check(&self) -> Result<(), RenameError> {
        let mut names = vec![
            ("table", &self.table),
            ("old column", &self.from),
            ("new column", &self.to),
            ("key column", &self.key_column),
        ];
        if let Some(schema) = &self.schema {
            names.push(("schema", schema));
        }
        for (what, name) in names {
            if name.is_empty() {
                return Err(RenameError::EmptyName { what });
            }
            if name.len() > MAX_IDENTIFIER {
                return Err(RenameError::NameTooLong {
                    what,
                    name: name.clone(),
                });
            }
            if name.chars().any(char::is_control) || name.contains("$baton") {
                return Err(RenameError::BadName {
                    what,
                    name: name.clone(),
                });
            }
        }
        if self.from == self.to {
            return Err(RenameError::SameName {
                name: self.from.clone(),
            });
        }
        let bad_type = || RenameError::BadType {
            column_type: self.column_type.clone(),
        };
        if self.column_type.contains(';') || self.column_type.contains("$baton") {
            return Err(bad_type());
        }
        let script = crate::sql::parse(&self.column_type).map_err(|_| bad_type())?;
        if script.statements.len() != 1 || script.comments().next().is_some() {
            return Err(bad_type());
        }
        if self.batch_size == 0 {
            return Err(RenameError::ZeroBatch);
        }
        let timeout_ok = self.lock_timeout.starts_with(|c: char| c.is_ascii_digit())
            && self.lock_timeout.chars().all(|c| c.is_ascii_alphanumeric());
        if !timeout_ok {
            return Err(RenameError::BadLockTimeout {
                value: self.lock_timeout.clone(),
            });
        }
        Ok(())
    }

    /// Writes the pair.
    pub fn generate(&self) -> Result<RenamePair, RenameError> {
        self.check()?;
        let table = match &self.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&self.table)),
            None => quote_ident(&self.table),
        };
        let old = quote_ident(&self.from);
        let new = quote_ident(&self.to);
        let key = quote_ident(&self.key_column);
        let helper = helper_name(&["baton_sync", &self.table, &self.from, &self.to]);
        let check = helper_name(&[&self.table, &self.to, "not_null"]);
        let function = match &self.schema {
            Some(schema) => format!("{}.{helper}", quote_ident(schema)),
            None => helper.clone(),
        };
        let shown = format!("{}.{} to {}", self.table, self.from, self.to);
        let timeout = &self.lock_timeout;
        let batch = self.batch_size;
        let column_type = self.column_type.trim();

        let mut expand = format!(
            "-- Expand half of renaming {shown}, written by `baton db new rename-column`.\n\
             -- Safe while the release that uses {old} still runs: it adds {new}, keeps\n\
             -- both columns equal with a trigger, and copies existing rows in batches\n\
             -- of {batch}, each committed on its own so no lock is held for long.\n\
             -- Next: deploy a release that reads and writes {new}; once no running\n\
             -- release uses {old}, apply the contract half.\n\
             -- Not copied to {new}: indexes, constraints, defaults, grants and comments\n\
             -- of {old}; add the ones you need.\n\
             -- baton:no-transaction\n\
             \n\
             SET lock_timeout = '{timeout}';\n\
             \n\
             BEGIN;\n\
             SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}';\n\
             \n\
             ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {new} {column_type};\n\
             \n\
             CREATE OR REPLACE FUNCTION {function}() RETURNS trigger\n\
             LANGUAGE plpgsql AS $baton$\n\
             BEGIN\n\
             \x20 -- An update wins for the column it changed; an insert fills the one left out.\n\
             \x20 IF TG_OP = 'UPDATE' THEN\n\
             \x20   IF NEW.{new} IS DISTINCT FROM OLD.{new} THEN\n\
             \x20     NEW.{old} := NEW.{new};\n\
             \x20     RETURN NEW;\n\
             \x20   END IF;\n\
             \x20   IF NEW.{old} IS DISTINCT FROM OLD.{old} THEN\n\
             \x20     NEW.{new} := NEW.{old};\n\
             \x20     RETURN NEW;\n\
             \x20   END IF;\n\
             \x20 END IF;\n\
             \x20 IF NEW.{new} IS NULL THEN\n\
             \x20   NEW.{new} := NEW.{old};\n\
             \x20 ELSIF NEW.{old} IS NULL THEN\n\
             \x20   NEW.{old} := NEW.{new};\n\
             \x20 END IF;\n\
             \x20 RETURN NEW;\n\
             END\n\
             $baton$;\n\
             \n\
             DROP TRIGGER IF EXISTS {helper} ON {table};\n\
             CREATE TRIGGER {helper}\n\
             \x20 BEFORE INSERT OR UPDATE ON {table}\n\
             \x20 FOR EACH ROW EXECUTE FUNCTION {function}();\n\
             \n\
             COMMIT;\n\
             \n\
             DO $baton$\n\
             DECLARE\n\
             \x20 copied bigint;\n\
             BEGIN\n\
             \x20 LOOP\n\
             \x20   UPDATE {table} SET {new} = {old}\n\
             \x20    WHERE {key} IN (\n\
             \x20      SELECT {key} FROM {table}\n\
             \x20       WHERE {new} IS NULL AND {old} IS NOT NULL\n\
             \x20       LIMIT {batch});\n\
             \x20   GET DIAGNOSTICS copied = ROW_COUNT;\n\
             \x20   EXIT WHEN copied = 0;\n\
             \x20   COMMIT;\n\
             \x20 END LOOP;\n\
             END\n\
             $baton$;\n"
        );
        if self.not_null {
            expand.push_str(&format!(
                "\n\
                 -- Prove {new} holds no NULL without blocking writes, so the contract half\n\
                 -- can SET NOT NULL without scanning the table (PostgreSQL 12+). The scan\n\
                 -- of VALIDATE blocks no reads or writes, so no statement_timeout limits it.\n\
                 BEGIN;\n\
                 SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}';\n\
                 ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check};\n\
                 ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({new} IS NOT NULL) NOT VALID;\n\
                 COMMIT;\n\
                 ALTER TABLE {table} VALIDATE CONSTRAINT {check};\n"
            ));
        }

        let mut contract = format!(
            "-- Contract half of renaming {shown}, written by `baton db new rename-column`.\n\
             -- Apply it only once no running release reads or writes {old}: it stops the\n\
             -- sync trigger and drops {old} for good.\n\
             -- baton:contract\n\
             \n\
             SET lock_timeout = '{timeout}';\n\
             SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}';\n\
             \n\
             DROP TRIGGER IF EXISTS {helper} ON {table};\n\
             DROP FUNCTION IF EXISTS {function}();\n"
        );
        if self.not_null {
            contract.push_str(&format!(
                "\n\
                 -- The check validated by the expand half lets PostgreSQL 12+ skip the scan.\n\
                 -- baton:allow adding-not-nullable-field\n\
                 ALTER TABLE {table} ALTER COLUMN {new} SET NOT NULL;\n\
                 ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check};\n"
            ));
        }
        contract.push_str(&format!(
            "\nALTER TABLE {table} DROP COLUMN IF EXISTS {old};\n"
        ));

        Ok(RenamePair {
            expand,
            contract,
            expand_description: format!("expand rename {shown}"),
            contract_description: format!("contract rename {shown}"),
        })
    }
}

/// Quotes an identifier unless PostgreSQL would read it unquoted as itself.
/// Bounds each locking step of the generated files once it has its lock;
/// none of them should take more than an instant. The batched backfill and
/// VALIDATE run outside it: they block no one and may take long.
const STATEMENT_TIMEOUT: &str = "1min";

pub fn quote_ident(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !RESERVED.contains(&name);
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A lower-case identifier built from parts, shortened with a checksum when
/// it would exceed PostgreSQL's limit (so two long names stay distinct).
fn helper_name(parts: &[&str]) -> String {
    let joined = parts.join("_");
    let mut name: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.len() > MAX_IDENTIFIER {
        let hash = crc32fast::hash(joined.as_bytes());
        name.truncate(MAX_IDENTIFIER - 9);
        name.push_str(&format!("_{hash:08x}"));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_only_when_needed() {
        assert_eq!(quote_ident("users"), "users");
        assert_eq!(quote_ident("full_name2"), "full_name2");
        assert_eq!(quote_ident("Users"), "\"Users\"");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("odd\"name"), "\"odd\"\"name\"");
        assert_eq!(quote_ident("2fa"), "\"2fa\"");
    }

    #[test]
    fn long_helper_names_fit_and_stay_distinct() {
        let a = helper_name(&["baton_sync", &"t".repeat(40), &"a".repeat(30), "x"]);
        let b = helper_name(&["baton_sync", &"t".repeat(40), &"a".repeat(30), "y"]);
        assert!(a.len() <= MAX_IDENTIFIER && b.len() <= MAX_IDENTIFIER);
        assert_ne!(a, b);
    }
}
