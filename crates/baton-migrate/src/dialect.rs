//! Which database a migration is written for. The runner picks it from the
//! URL's scheme; the linter applies PostgreSQL's locking rules only to
//! PostgreSQL. This module knows names and properties, never connections.

use serde::Serialize;

/// A database Baton migrates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    #[default]
    Postgres,
    Sqlite,
    MySql,
}

impl Dialect {
    /// The dialect of a database URL (`postgres://`, `postgresql://`,
    /// `sqlite:`, `mysql://`, `mariadb://`), or `None` for another scheme.
    pub fn from_url(url: &str) -> Option<Dialect> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme {
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "sqlite" => Some(Dialect::Sqlite),
            "mysql" | "mariadb" => Some(Dialect::MySql),
            _ => None,
        }
    }

    /// Whether DDL can be rolled back: PostgreSQL and SQLite yes; MySQL
    /// commits implicitly around every DDL statement.
    pub fn transactional_ddl(self) -> bool {
        !matches!(self, Dialect::MySql)
    }

    /// The name people know it by.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "PostgreSQL",
            Dialect::Sqlite => "SQLite",
            Dialect::MySql => "MySQL",
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_names_the_dialect() {
        assert_eq!(
            Dialect::from_url("postgres://a@b/c"),
            Some(Dialect::Postgres)
        );
        assert_eq!(
            Dialect::from_url("postgresql://b/c"),
            Some(Dialect::Postgres)
        );
        assert_eq!(Dialect::from_url("sqlite://app.db"), Some(Dialect::Sqlite));
        assert_eq!(Dialect::from_url("sqlite::memory:"), Some(Dialect::Sqlite));
        assert_eq!(Dialect::from_url("mariadb://b/c"), Some(Dialect::MySql));
        assert_eq!(Dialect::from_url("oracle://b/c"), None);
    }
}
