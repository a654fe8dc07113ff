//! A throwaway PostgreSQL server for tests: one per test binary, on a fresh
//! data directory and a free loopback port, gone when the binary exits.
//! `BATON_TEST_POSTGRES_URL` (a superuser URL) points the tests at an
//! existing server instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct Postgres {
    /// Superuser URL without the database name.
    base: String,
    _dir: Option<tempfile::TempDir>,
    /// Holds the server's stdin: when this process exits, the pipe closes
    /// and the wrapper shell stops the server.
    _server: Option<Mutex<Child>>,
}

static SERVER: OnceLock<Postgres> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn server() -> &'static Postgres {
    SERVER.get_or_init(|| match std::env::var("BATON_TEST_POSTGRES_URL") {
        Ok(url) => Postgres {
            base: url.trim_end_matches('/').to_string(),
            _dir: None,
            _server: None,
        },
        Err(_) => start(),
    })
}

impl Postgres {
    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.base)
    }

    /// A new empty database; its URL.
    pub fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs SQL with psql and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(database))
            .arg("-c")
            .arg(sql)
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string()
    }
}

/// psql on a database URL.
pub fn psql_url(url: &str, sql: &str) -> String {
    let (base, database) = url.rsplit_once('/').unwrap();
    Postgres {
        base: base.to_string(),
        _dir: None,
        _server: None,
    }
    .psql(database, sql)
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("postgres").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect(
        "PostgreSQL is not installed: run ./scripts/test (it installs it) or apt-get install postgresql",
    )
}

fn as_postgres_user(program: &Path) -> Command {
    if nix_is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn nix_is_root() -> bool {
    // SAFETY-free: reading our own uid through the proc file system.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn start() -> Postgres {
    let bin = bin_dir();
    let dir = tempfile::Builder::new()
        .prefix("baton-pg-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    if nix_is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown of the test database folder failed");
    }
    let out = as_postgres_user(&bin.join("initdb"))
        .args([
            "-U",
            "baton",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .output()
        .expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // TLS on, with a self-signed certificate: clients may ask for it.
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    if nix_is_root() {
        let ok = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&cert)
            .arg(&key)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown of the test certificate failed");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        "'{}' -D '{}' -p {port} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}' >'{}' 2>&1 & pid=$!; read _; kill -INT $pid; wait $pid; rm -rf '{}'",
        bin.join("postgres").display(),
        data.display(),
        dir.path().display(),
        cert.display(),
        key.display(),
        dir.path().join("server.log").display(),
        dir.path().display(),
    );
    let mut sh = as_postgres_user(Path::new("/bin/sh"));
    let child = sh
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .spawn()
        .expect("postgres starts");
    let base = format!("postgres://baton@127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ready {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            panic!("PostgreSQL did not become ready in 60 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut child = child;
    // Keep the pipe open; a newline would stop the server.
    let _ = child.stdin.as_mut().map(|s| s.flush());
    // The wrapper removes the folder once the server has stopped.
    let _ = dir.keep();
    Postgres {
        base,
        _dir: None,
        _server: Some(Mutex::new(child)),
    }
}
