//! A throwaway MariaDB server for tests: one per test binary, on a fresh
//! data directory and a free loopback port, gone when the binary exits.
//! `BATON_TEST_MYSQL_URL` (a root URL without a database) points the tests
//! at an existing server instead.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct MySql {
    base: String,
    _server: Option<Mutex<Child>>,
}

static SERVER: OnceLock<MySql> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn server() -> &'static MySql {
    SERVER.get_or_init(|| match std::env::var("BATON_TEST_MYSQL_URL") {
        Ok(url) => MySql {
            base: url.trim_end_matches('/').to_string(),
            _server: None,
        },
        Err(_) => start(),
    })
}

impl MySql {
    /// A new empty database; its URL.
    pub fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        self.query("", &format!("CREATE DATABASE {name}"));
        format!("{}/{name}", self.base)
    }

    /// Runs SQL with the mariadb client; tab-separated rows.
    pub fn query(&self, database: &str, sql: &str) -> String {
        let rest = self.base.trim_start_matches("mysql://");
        let (user, host) = rest.split_once('@').unwrap();
        let (host, port) = host.split_once(':').unwrap();
        let mut command = Command::new("mariadb");
        command.args(["-N", "-B", "-u", user, "-h", host, "-P", port, "-e", sql]);
        if !database.is_empty() {
            command.arg(database);
        }
        let out = command.output().expect("the mariadb client runs");
        assert!(
            out.status.success(),
            "mariadb {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string()
    }
}

/// Runs SQL on a database URL of [`server`].
pub fn query_url(url: &str, sql: &str) -> String {
    let (_, database) = url.rsplit_once('/').unwrap();
    server().query(database, sql)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn start() -> MySql {
    let bin = |name: &str| {
        ["/usr/bin", "/usr/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name} is missing: run ./scripts/test (it installs mariadb-server) or apt-get install mariadb-server"))
    };
    let dir = tempfile::Builder::new()
        .prefix("baton-mysql-")
        .tempdir()
        .unwrap()
        .keep();
    let data = dir.join("data");
    let user = if is_root() { "mysql" } else { "" };
    if is_root() {
        assert!(Command::new("chown")
            .args(["-R", "mysql:mysql"])
            .arg(&dir)
            .status()
            .unwrap()
            .success());
    }
    let mut install = Command::new(bin("mariadb-install-db"));
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if !user.is_empty() {
        install.arg(format!("--user={user}"));
    }
    let out = install.output().expect("mariadb-install-db runs");
    assert!(
        out.status.success(),
        "mariadb-install-db failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let user_arg = if user.is_empty() {
        String::new()
    } else {
        format!("--user={user}")
    };
    let script = format!(
        "'{}' --no-defaults --datadir='{}' --socket='{}/sock' --port={port} --bind-address=127.0.0.1 --skip-name-resolve --innodb-flush-log-at-trx-commit=2 {user_arg} >'{}/server.log' 2>&1 & pid=$!; read _; kill $pid; wait $pid; rm -rf '{}'",
        bin("mariadbd").display(),
        data.display(),
        dir.display(),
        dir.display(),
        dir.display(),
    );
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .spawn()
        .expect("mariadbd starts");
    let started = Instant::now();
    loop {
        let ready = Command::new("mariadb-admin")
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
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ready {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            panic!("MariaDB did not become ready in 60 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    MySql {
        base: format!("mysql://root@127.0.0.1:{port}"),
        _server: Some(Mutex::new(child)),
    }
}
