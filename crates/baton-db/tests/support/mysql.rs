//! A throwaway MariaDB server for tests: one per test binary, on a fresh
//! data directory and a free loopback port, gone when the binary exits.
//! `BATON_TEST_MYSQL_URL` (a root URL without a database) points the tests
//! at an existing server instead.

// Its own copy: crates/baton's tests include this file alone, by path.
#[allow(clippy::duplicate_mod)]
#[path = "server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct MySql(server::Server);

pub fn server() -> &'static MySql {
    static SERVER: OnceLock<MySql> = OnceLock::new();
    SERVER.get_or_init(|| MySql(server::Server::from_env_or("BATON_TEST_MYSQL_URL", start)))
}

impl MySql {
    /// A new empty database; its URL.
    pub fn database(&self) -> String {
        let name = server::database_name();
        self.query("", &format!("CREATE DATABASE {name}"));
        format!("{}/{name}", self.0.base)
    }

    /// Runs SQL with the mariadb client; tab-separated rows.
    pub fn query(&self, database: &str, sql: &str) -> String {
        let rest = self.0.base.trim_start_matches("mysql://");
        let (user, host) = rest.split_once('@').unwrap();
        let (host, port) = host.split_once(':').unwrap();
        let mut command = Command::new("mariadb");
        command.args(["-N", "-B", "-u", user, "-h", host, "-P", port, "-e", sql]);
        if !database.is_empty() {
            command.arg(database);
        }
        server::output(&mut command, &format!("mariadb {sql:?}"))
    }
}

/// Runs SQL on a database URL of [`server`].
pub fn query_url(url: &str, sql: &str) -> String {
    let (_, database) = url.rsplit_once('/').unwrap();
    server().query(database, sql)
}

fn bin(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is missing: run ./scripts/test (it installs mariadb-server) or apt-get install mariadb-server"))
}

fn start() -> server::Server {
    let dir = tempfile::Builder::new()
        .prefix("baton-mysql-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    server::chown_if_root("mysql:mysql", &[dir.path()]);
    let user = if server::is_root() {
        "--user=mysql"
    } else {
        ""
    };
    let mut install = Command::new(bin("mariadb-install-db"));
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if !user.is_empty() {
        install.arg(user);
    }
    server::output(&mut install, "mariadb-install-db");
    let port = server::free_port();
    let mariadbd = format!(
        "'{}' --no-defaults --datadir='{}' --socket='{}/sock' --port={port} --bind-address=127.0.0.1 --skip-name-resolve --innodb-flush-log-at-trx-commit=2 {user}",
        bin("mariadbd").display(),
        data.display(),
        dir.path().display(),
    );
    let ready = || {
        Command::new("mariadb-admin")
            .args([
                "-u",
                "root",
                "-h",
                "127.0.0.1",
                "-P",
                &port.to_string(),
                "ping",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    server::start(server::Start {
        name: "MariaDB",
        shell: Command::new("/bin/sh"),
        command: &mariadbd,
        stop: "-TERM",
        dir,
        ready,
        base: format!("mysql://root@127.0.0.1:{port}"),
    })
}
