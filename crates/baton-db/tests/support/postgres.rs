//! A throwaway PostgreSQL server for tests: one per test binary, on a fresh
//! data directory and a free loopback port, gone when the binary exits.
//! `BATON_TEST_POSTGRES_URL` (a superuser URL) points the tests at an
//! existing server instead.

// Its own copy: crates/baton's tests include this file alone, by path.
#[allow(clippy::duplicate_mod)]
#[path = "server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Postgres(server::Server);

pub fn server() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| {
        Postgres(server::Server::from_env_or(
            "BATON_TEST_POSTGRES_URL",
            start,
        ))
    })
}

impl Postgres {
    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.0.base)
    }

    /// A new empty database; its URL.
    pub fn database(&self) -> String {
        let name = server::database_name();
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs SQL with psql and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        psql_url(&self.url(database), sql)
    }
}

/// psql on a database URL.
pub fn psql_url(url: &str, sql: &str) -> String {
    server::output(
        Command::new("psql").args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ]),
        &format!("psql {sql:?}"),
    )
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
    if server::is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn start() -> server::Server {
    let bin = bin_dir();
    let dir = tempfile::Builder::new()
        .prefix("baton-pg-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    server::chown_if_root("postgres:postgres", &[dir.path()]);
    server::output(
        as_postgres_user(&bin.join("initdb"))
            .args([
                "-U",
                "baton",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data),
        "initdb",
    );
    // TLS on, with a self-signed certificate: clients may ask for it.
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    server::output(
        Command::new("openssl")
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
            .arg(&cert),
        "openssl",
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    server::chown_if_root("postgres:postgres", &[&cert, &key]);
    let port = server::free_port();
    let postgres = format!(
        "'{}' -D '{}' -p {port} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}'",
        bin.join("postgres").display(),
        data.display(),
        dir.path().display(),
        cert.display(),
        key.display(),
    );
    let ready = || {
        Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    };
    server::start(server::Start {
        name: "PostgreSQL",
        shell: as_postgres_user(Path::new("/bin/sh")),
        command: &postgres,
        stop: "-INT",
        dir,
        ready,
        base: format!("postgres://baton@127.0.0.1:{port}"),
    })
}
