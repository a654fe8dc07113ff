//! One empty database of any dialect, as a test body that holds on every
//! dialect sees it: the URL Baton connects to, the database's own client to
//! read back what Baton wrote (never Baton itself), and the little that
//! differs between dialects, as SQL snippets and expectations.

use std::path::Path;

use baton_db::{Database, Dialect};

use crate::files::{self, Folder};
use crate::{defaults, mysql, postgres};

pub struct TestDb {
    pub dialect: Dialect,
    pub url: String,
    /// The database's own client on `url`: rows one a line, columns split
    /// by `|`.
    client: fn(&str, &str) -> String,
    /// Where a SQLite database's file lives, for as long as the test.
    _folder: Option<Folder>,
}

impl TestDb {
    /// A new database on the throwaway PostgreSQL server.
    pub fn on_postgres() -> TestDb {
        TestDb {
            dialect: Dialect::Postgres,
            url: postgres::server().database(),
            client: postgres::psql_url,
            _folder: None,
        }
    }

    /// A new SQLite file.
    pub fn on_sqlite() -> TestDb {
        let folder = Folder::new();
        TestDb {
            dialect: Dialect::Sqlite,
            url: format!("sqlite://{}", folder.path("app.db").display()),
            client: |url, sql| files::sqlite3(Path::new(url.trim_start_matches("sqlite://")), sql),
            _folder: Some(folder),
        }
    }

    /// A new database on the throwaway MariaDB server.
    pub fn on_mysql() -> TestDb {
        TestDb {
            dialect: Dialect::MySql,
            url: mysql::server().database(),
            client: |url, sql| mysql::query_url(url, sql).replace('\t', "|"),
            _folder: None,
        }
    }

    /// Another new database of the same dialect.
    pub fn another(&self) -> TestDb {
        match self.dialect {
            Dialect::Postgres => TestDb::on_postgres(),
            Dialect::Sqlite => TestDb::on_sqlite(),
            Dialect::MySql => TestDb::on_mysql(),
        }
    }

    pub async fn connect(&self) -> Database {
        defaults::connect(&self.url).await
    }

    /// Runs SQL with the database's own client: rows one a line, columns
    /// split by `|`.
    pub fn query(&self, sql: &str) -> String {
        (self.client)(&self.url, sql)
    }

    /// How many of the tables named exist.
    pub fn tables_named(&self, names: &[&str]) -> usize {
        let names = names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = match self.dialect {
            Dialect::Postgres => format!("SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name IN ({names})"),
            Dialect::MySql => format!("SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name IN ({names})"),
            Dialect::Sqlite => format!("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ({names})"),
        };
        self.query(&sql).parse().unwrap()
    }

    /// Who Flyway records in `installed_by`: the URL's user; SQLite has
    /// none.
    pub fn user(&self) -> &str {
        let authority = self.url.split_once("://").map_or("", |(_, rest)| rest);
        match authority.split_once('@') {
            Some((user, _)) if self.dialect != Dialect::Sqlite => {
                user.split(':').next().unwrap_or("")
            }
            _ => "",
        }
    }

    /// SQL for the time now, comparable with `installed_on`.
    pub fn now(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres | Dialect::MySql => "now()",
            // SQLite's installed_on is text, written as Flyway's driver does.
            Dialect::Sqlite => "strftime('%Y-%m-%d %H:%M:%f', 'now')",
        }
    }

    /// A statement that makes a migration last a few milliseconds, so that
    /// two concurrent runs overlap; SQLite has none (its runs take turns on
    /// the write lock in any case).
    pub fn pause(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => "SELECT pg_sleep(0.005);\n",
            Dialect::MySql => "DO SLEEP(0.005);\n",
            Dialect::Sqlite => "",
        }
    }

    /// What the database says of a table that does not exist.
    pub fn says_no_such_table(&self, table: &str) -> String {
        match self.dialect {
            Dialect::Postgres => format!("relation \"{table}\" does not exist"),
            Dialect::Sqlite => format!("no such table: {table}"),
            // "Table 'db.table' doesn't exist"
            Dialect::MySql => format!(".{table}' doesn't exist"),
        }
    }

    /// The line Baton names for a statement at `line` that fails: SQLite
    /// runs a script whole (trigger bodies hold `;`), so it names the
    /// script's first.
    pub fn failing_line(&self, line: u32) -> u32 {
        match self.dialect {
            Dialect::Sqlite => 1,
            Dialect::Postgres | Dialect::MySql => line,
        }
    }
}
