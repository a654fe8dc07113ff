//! Test harness: a real `baton server` process on loopback ports, the real
//! `baton` CLI, and copies of the example app made to differ or misbehave.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const BIN: &str = env!("CARGO_BIN_EXE_baton");
pub const HOST: &str = "hello.localhost";

pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello")
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub api: SocketAddr,
    pub proxy: SocketAddr,
}

impl Server {
    pub fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (child, api, proxy) = spawn(dir.path(), "127.0.0.1:0", "127.0.0.1:0");
        Server {
            dir,
            child: Some(child),
            api,
            proxy,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// kill -9 of the server process alone; its targets live on.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the server again on the same data folder and addresses.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        let (child, api, proxy) = spawn(
            self.dir.path(),
            &self.api.to_string(),
            &self.proxy.to_string(),
        );
        assert_eq!((api, proxy), (self.api, self.proxy));
        self.child = Some(child);
    }

    /// Runs the CLI against this server.
    pub fn baton(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("BATON_API", self.api_url())
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    /// Runs the CLI and insists that it succeeds; returns its stdout.
    pub fn baton_ok(&self, args: &[&str]) -> String {
        let out = self.baton(args);
        assert!(
            out.status.success(),
            "baton {args:?} failed:\nstdout: {}\nstderr: {}\nserver log: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Deploys an app folder and returns the finished deployment record.
    pub fn deploy(&self, app: &Path) -> Value {
        serde_json::from_str(&self.baton_ok(&["deploy", app.to_str().unwrap(), "--json"])).unwrap()
    }

    pub fn rollback(&self, app: &str) -> Value {
        serde_json::from_str(&self.baton_ok(&["rollback", app, "--json"])).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.baton_ok(&all)).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The live target of hello in production, from `baton status`.
    pub fn live(&self) -> Value {
        let status = self.json(&["status"]);
        status[0]["live"].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        kill_processes_under(&self.data());
    }
}

fn spawn(dir: &Path, api: &str, proxy: &str) -> (Child, SocketAddr, SocketAddr) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    let mut child = Command::new(BIN)
        .args(["server", "--data"])
        .arg(dir.join("data"))
        .args(["--api-listen", api, "--proxy-listen", proxy])
        .env("BATON_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines
        .next()
        .unwrap_or_else(|| {
            panic!(
                "server exited before it was ready: {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            )
        })
        .unwrap();
    // "baton server ready: api http://A proxy http://P data D"
    let words: Vec<&str> = ready.split_whitespace().collect();
    assert_eq!(&words[..3], ["baton", "server", "ready:"], "{ready}");
    let api = words[4].trim_start_matches("http://").parse().unwrap();
    let proxy = words[6].trim_start_matches("http://").parse().unwrap();
    std::thread::spawn(move || for _ in lines {});
    (child, api, proxy)
}

/// Kills every process whose working folder is under `root`: the targets a
/// test's server started, which deliberately outlive the server.
pub fn kill_processes_under(root: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) {
            if cwd.starts_with(root) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A copy of the example app, changed so that it is a different release.
pub struct AppCopy {
    pub dir: tempfile::TempDir,
}

impl AppCopy {
    pub fn new(message: &str) -> AppCopy {
        let dir = tempfile::tempdir().unwrap();
        for file in ["app.py", "baton.toml"] {
            std::fs::copy(example_dir().join(file), dir.path().join(file)).unwrap();
        }
        let app = AppCopy { dir };
        app.edit("app.py", "Hello from Baton's example app!", message);
        app
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }

    /// Sets a variable in the manifest's [env] section.
    pub fn set_env(&self, key: &str, value: &str) {
        self.edit(
            "baton.toml",
            "[env]\n",
            &format!("[env]\n{key} = \"{value}\"\n"),
        );
    }

    /// Sets a key of the manifest's [deploy] section, replacing its value.
    pub fn set_deploy(&self, key: &str, value: &str) {
        let path = self.dir.path().join("baton.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut section = String::new();
        let mut out: Vec<String> = Vec::new();
        for line in text.lines() {
            if line.starts_with('[') {
                section = line.to_string();
            }
            if section == "[deploy]" && line.starts_with(&format!("{key} =")) {
                continue;
            }
            out.push(line.to_string());
            if line == "[deploy]" {
                out.push(format!("{key} = \"{value}\""));
            }
        }
        std::fs::write(&path, out.join("\n") + "\n").unwrap();
    }
}

/// One HTTP/1.1 request on a fresh connection. Returns status and body.
pub async fn get_fresh(proxy: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = tokio::net::TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no response head in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// The release id an example app's answer names.
pub fn release_of(body: &str) -> Option<String> {
    body.lines()
        .find_map(|l| l.strip_prefix("release: "))
        .map(str::to_string)
}

pub fn short(id: &str) -> String {
    id[..12].to_string()
}

/// When a deployment's switch step began and ended (ms since the epoch).
pub fn switch_window(deployment: &Value) -> (i64, i64) {
    let step = deployment["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "switch")
        .unwrap_or_else(|| panic!("no switch step in {deployment}"));
    (
        step["started_at"].as_i64().unwrap(),
        step["finished_at"].as_i64().unwrap(),
    )
}

/// Runs a future to completion from synchronous code inside a test runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Polls `check` until it returns Some, failing after `within`.
pub async fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
