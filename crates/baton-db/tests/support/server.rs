//! A database server for tests, whichever the server: an existing one named
//! by an environment variable, or a throwaway one started here (its tools
//! run, a free loopback port, a shell that keeps it until the test binary
//! exits, a wait until it answers), and names for fresh databases on it.
//!
//! postgres.rs and mysql.rs each include this file as their own child module
//! rather than through a sibling: crates/baton's tests include postgres.rs
//! alone, by path.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Server {
    /// The administrator's URL, without a database name.
    pub base: String,
    /// Holds a throwaway server's stdin: when this process exits, the pipe
    /// closes and the wrapper shell stops the server.
    _process: Option<Mutex<Child>>,
}

impl Server {
    /// The server whose URL the environment variable `var` holds, or else
    /// the one `start` starts.
    pub fn from_env_or(var: &str, start: impl FnOnce() -> Server) -> Server {
        match std::env::var(var) {
            Ok(url) => Server {
                base: url.trim_end_matches('/').to_string(),
                _process: None,
            },
            Err(_) => start(),
        }
    }
}

/// Runs `command` to its end: its standard output, without the trailing
/// newline; a panic naming `what` and saying what it printed if it failed.
pub fn output(command: &mut Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what} does not run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

/// Whether the tests run as root: the servers then run as their own users.
pub fn is_root() -> bool {
    // Our own uid, read through the proc file system.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Gives `paths` (and all in them) to `owner` when the tests run as root.
pub fn chown_if_root(owner: &str, paths: &[&Path]) {
    if is_root() {
        let ok = Command::new("chown")
            .arg("-R")
            .arg(owner)
            .args(paths)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown {owner} {paths:?} failed");
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How to start a throwaway server.
pub struct Start<'a, F: Fn() -> bool> {
    /// The server's name, for messages.
    pub name: &'a str,
    /// The shell to run it under (as the server's user, if need be).
    pub shell: Command,
    /// The command line that runs it in the foreground.
    pub command: &'a str,
    /// The signal that stops it cleanly, as `kill` takes it.
    pub stop: &'a str,
    /// Its folder; its log goes to `server.log` in it.
    pub dir: tempfile::TempDir,
    /// Whether it answers yet.
    pub ready: F,
    /// The administrator's URL once it runs.
    pub base: String,
}

/// Starts a server through a shell that holds it until this test binary
/// exits: the shell waits on its stdin, and when the pipe closes it stops
/// the server and removes its folder. Then waits up to 60 s for it to
/// answer.
pub fn start<F: Fn() -> bool>(start: Start<'_, F>) -> Server {
    let Start {
        name,
        mut shell,
        command,
        stop,
        dir,
        ready,
        base,
    } = start;
    let log = dir.path().join("server.log");
    let script = format!(
        "{command} >'{}' 2>&1 & pid=$!; read _; kill {stop} $pid; wait $pid; rm -rf '{}'",
        log.display(),
        dir.path().display(),
    );
    let child = shell
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
    // The shell removes the folder once the server has stopped.
    let _ = dir.keep();
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{name} did not become ready in 60 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        base,
        _process: Some(Mutex::new(child)),
    }
}

/// A name for a new database, unique on the server for this test binary.
pub fn database_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}
