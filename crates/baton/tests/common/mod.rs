//! Test harness: a real `baton server` process on loopback ports, the real
//! `baton` CLI, and copies of the example app made to differ or misbehave.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    /// The proxy's HTTPS address, when started with BATON_HTTPS_LISTEN.
    pub https: Option<SocketAddr>,
    /// The executable the server runs (a copy, for upgrade tests).
    pub bin: PathBuf,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server with extra environment variables (e.g. DOCKER_HOST).
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        Server::start_from(Path::new(BIN), env)
    }

    /// A server whose open-files limit (soft and hard) is `limit`, as on
    /// a host with the common default of 1,024.
    pub fn start_with_open_files(limit: u64) -> Server {
        Server::start_in(
            tempfile::tempdir().unwrap(),
            Path::new(BIN),
            &[],
            Some(limit),
        )
    }

    /// A server run from another copy of the executable.
    pub fn start_from(bin: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), bin, env, None)
    }

    fn start_in(
        dir: tempfile::TempDir,
        bin: &Path,
        env: &[(&str, &str)],
        open_files: Option<u64>,
    ) -> Server {
        if let Some(limit) = open_files {
            std::fs::write(dir.path().join("open-files"), limit.to_string()).unwrap();
        }
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        std::fs::write(dir.path().join("env"), serde_json::to_string(&env).unwrap()).unwrap();
        let (child, api, proxy, https) = spawn(bin, dir.path(), "127.0.0.1:0", "127.0.0.1:0");
        Server {
            dir,
            child: Some(child),
            api,
            proxy,
            https,
            bin: bin.to_path_buf(),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// SIGTERM to the server, waiting for it to end; its targets and the
    /// proxy live on.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            let status = child.wait().unwrap();
            assert!(status.success(), "{status:?}: {}", self.log());
        }
    }

    /// The proxy process serving this server's data folder.
    pub fn proxy_info(&self) -> Value {
        let out = Command::new(BIN)
            .args(["proxy", "status", "--json"])
            .env("BATON_DATA", self.data())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// kill -9 of the server process alone; its targets and the proxy live on.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the server again on the same data folder and addresses.
    /// Environment variables for the next (re)start of the server.
    pub fn set_env(&self, env: &[(&str, &str)]) {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        std::fs::write(
            self.dir.path().join("env"),
            serde_json::to_string(&env).unwrap(),
        )
        .unwrap();
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        let (child, api, proxy, _) = spawn(
            &self.bin,
            self.dir.path(),
            &self.api.to_string(),
            &self.proxy.to_string(),
        );
        assert_eq!((api, proxy), (self.api, self.proxy));
        self.child = Some(child);
    }

    /// The data folder's admin token: what the CLI on the server's host
    /// uses when it can read it.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data().join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Makes an account on the server's host (`baton users add`) with the
    /// given extra arguments (`--admin`, `--role deployer --env staging`, …)
    /// and returns an API token of it named `cli`.
    pub fn user_token(&self, name: &str, extra: &[&str]) -> String {
        let password = format!("{name}'s long password");
        let mut args = vec!["users", "add", name, "--password-stdin"];
        args.extend_from_slice(extra);
        let mut child = Command::new(BIN)
            .args(&args)
            .env("BATON_DATA", self.data())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "users add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer = login(&self.api_url(), name, &password);
        answer["token"].as_str().unwrap().to_string()
    }

    /// An HTTP client that acts with the admin token.
    pub fn http(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.admin_token()).parse().unwrap(),
        );
        reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .build()
            .unwrap()
    }

    /// Runs the CLI against this server, on the server's host (it reads
    /// the data folder's admin token).
    pub fn baton(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("BATON_DATA", self.data())
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

    /// The pid of hello's live target in production, read from the store
    /// (works while the server is down).
    pub fn live_pid_from_store(&self) -> i32 {
        let out = Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute(\"SELECT t.handle FROM routes r JOIN targets t ON t.id = r.live_target WHERE r.app = 'hello' AND r.environment = 'production'\").fetchone()[0])")
            .arg(self.data().join("baton.db"))
            .output()
            .unwrap();
        let handle = String::from_utf8_lossy(&out.stdout).trim().to_string();
        handle
            .split('@')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no live handle: {handle:?} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
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

fn spawn(
    bin: &Path,
    dir: &Path,
    api: &str,
    proxy: &str,
) -> (Child, SocketAddr, SocketAddr, Option<SocketAddr>) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    let env: Vec<(String, String)> = std::fs::read_to_string(dir.join("env"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let mut command = Command::new(bin);
    if let Some(limit) = std::fs::read_to_string(dir.join("open-files"))
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and touches no memory.
        unsafe {
            command.pre_exec(move || {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    limit,
                    limit,
                )
                .map_err(std::io::Error::from)
            });
        }
    }
    let mut child = command
        .envs(env)
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
    // "… proxy http://P https https://H data D" when it serves HTTPS.
    let https =
        (words[7] == "https").then(|| words[8].trim_start_matches("https://").parse().unwrap());
    std::thread::spawn(move || for _ in lines {});
    (child, api, proxy, https)
}

/// Logs in through the API from test code, sync or async alike (on a
/// thread of its own, so it never blocks a test's runtime).
pub fn login(api: &str, user: &str, password: &str) -> Value {
    let (url, user, password) = (
        format!("{api}/api/v1/login"),
        user.to_string(),
        password.to_string(),
    );
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let answer = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .unwrap()
                    .post(url)
                    .json(&serde_json::json!({"user": user, "password": password}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 201, "login of {user}");
                answer.json::<Value>().await.unwrap()
            })
    })
    .join()
    .unwrap()
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

    /// Adds lines (a section of its own) at the end of the manifest.
    pub fn append(&self, lines: &str) {
        let path = self.dir.path().join("baton.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}\n{lines}\n")).unwrap();
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

/// What one request of a [`Load`] got: the release that answered, or why not.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub client: usize,
    pub started: i64,
    pub ended: i64,
    pub result: Result<String, String>,
}

/// Continuous load through the proxy: half the clients keep their
/// connection alive, half open a new one for every request.
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<std::sync::atomic::AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    pub fn start(proxy: SocketAddr, host: &'static str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|n| {
                let stop = Arc::clone(&stop);
                let done = Arc::clone(&done);
                tokio::spawn(async move {
                    let keep_alive = reqwest::Client::builder().no_proxy().build().unwrap();
                    let url = format!("http://{proxy}/");
                    let mut mine = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = now_ms();
                        let result = if n % 2 == 0 {
                            match keep_alive.get(&url).header("host", host).send().await {
                                Ok(r) if r.status() == 200 => {
                                    r.text().await.map_err(|e| e.to_string())
                                }
                                Ok(r) => Err(format!("status {}", r.status())),
                                Err(e) => Err(e.to_string()),
                            }
                        } else {
                            match get_fresh(proxy, host, "/").await {
                                Ok((200, body)) => Ok(body),
                                Ok((status, body)) => Err(format!("status {status}: {body}")),
                                Err(e) => Err(e),
                            }
                        };
                        done.fetch_add(1, Ordering::Relaxed);
                        mine.push(Outcome {
                            client: n,
                            started,
                            ended: now_ms(),
                            result: result.map(|body| {
                                release_of(&body)
                                    .unwrap_or_else(|| format!("no release in {body:?}"))
                            }),
                        });
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    mine
                })
            })
            .collect();
        Load {
            stop,
            done,
            clients,
        }
    }

    /// Waits (from synchronous test code too) until `more` requests have
    /// completed since the call, whatever their outcome.
    pub fn wait_for_more(&self, more: usize) {
        let target = self.done.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.done.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the load made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for client in self.clients {
            all.extend(client.await.unwrap());
        }
        all
    }
}

pub fn assert_no_failures(outcomes: &[Outcome], at_least: usize) {
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failed.len(),
        outcomes.len(),
        failed.first()
    );
    assert!(
        outcomes.len() >= at_least,
        "too little load to prove anything: {} requests",
        outcomes.len()
    );
}

/// Checks that every request was answered by the release live when it
/// started, or by one switched to before it ended; returns how many
/// requests fell where exactly one release could answer.
pub fn assert_served_by_switched_releases(outcomes: &[Outcome], deployments: &[Value]) -> usize {
    // A request that starts after switch i is done must be answered by
    // release i, or by a later release whose switch began before it ended.
    let switches: Vec<(i64, i64, String)> = deployments
        .iter()
        .map(|d| {
            let (start, end) = switch_window(d);
            (start, end, short(d["release_id"].as_str().unwrap()))
        })
        .collect();
    let mut checked = 0;
    for o in outcomes {
        let answered = o.result.as_ref().unwrap();
        let Some(i) = switches.iter().rposition(|(_, done, _)| *done < o.started) else {
            continue;
        };
        let allowed: Vec<&String> = std::iter::once(&switches[i].2)
            .chain(
                switches[i + 1..]
                    .iter()
                    .filter(|(start, _, _)| *start <= o.ended)
                    .map(|s| &s.2),
            )
            .collect();
        assert!(
            allowed.contains(&answered),
            "request {o:?} of client {} started {} ms after switch {i} was done and reached {answered}, not one of {allowed:?}; switches: {switches:?}",
            o.client,
            o.started - switches[i].1
        );
        if allowed.len() == 1 {
            checked += 1;
        }
    }
    checked
}

/// A copy of the Docker example app under a name of its own, with its
/// static binary built (once per test run) and copied in. Its containers and
/// images are removed when it is dropped.
pub struct DockerApp {
    pub name: &'static str,
    pub host: &'static str,
    pub dir: tempfile::TempDir,
    /// Only the first copy of an app cleans up after it.
    owner: bool,
}

static DOCKER_BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn docker_binary() -> &'static PathBuf {
    DOCKER_BINARY.get_or_init(|| {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/docker-hello");
        let out = Command::new("bash")
            .arg(example.join("build.sh"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building the Docker example failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        example.join("hello")
    })
}

impl DockerApp {
    pub fn new(tag: &str, version: &str) -> DockerApp {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name: &'static str = Box::leak(
            format!(
                "dt{}-{}-{}",
                std::process::id(),
                tag,
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
            .into_boxed_str(),
        );
        let mut app = DockerApp::named(name, version);
        app.owner = true;
        app
    }

    /// Another release of the same app: same name, different content.
    pub fn named(name: &'static str, version: &str) -> DockerApp {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/docker-hello");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(docker_binary(), dir.path().join("hello")).unwrap();
        let dockerfile = std::fs::read_to_string(example.join("Dockerfile")).unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!("{dockerfile}# {version}\n"),
        )
        .unwrap();
        let host: &'static str = Box::leak(format!("{name}.localhost").into_boxed_str());
        let manifest = std::fs::read_to_string(example.join("baton.toml"))
            .unwrap()
            .replace("name = \"docker-hello\"", &format!("name = \"{name}\""))
            .replace("docker-hello.localhost", host);
        let manifest =
            format!("{manifest}\n[environments.staging]\nhosts = [\"staging-{host}\"]\n");
        std::fs::write(dir.path().join("baton.toml"), manifest).unwrap();
        DockerApp {
            name,
            host,
            dir,
            owner: false,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Appends lines to a section of the manifest (which must exist).
    pub fn add_to(&self, section: &str, lines: &str) {
        let path = self.dir.path().join("baton.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let header = format!("[{section}]\n");
        let text = if text.contains(&header) {
            text.replacen(&header, &format!("{header}{lines}\n"), 1)
        } else {
            format!("{text}\n{header}{lines}\n")
        };
        std::fs::write(&path, text).unwrap();
    }

    /// Ids of the images Baton built for this app.
    pub fn images(&self) -> Vec<String> {
        docker(&[
            "images",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=baton.app={}", self.name),
        ])
    }

    /// Ids of this app's containers, running or not.
    pub fn containers(&self) -> Vec<String> {
        docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=baton.app={}", self.name),
        ])
    }
}

impl Drop for DockerApp {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        let containers = self.containers();
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(containers.iter().map(String::as_str));
            docker(&args);
        }
        let images = self.images();
        if !images.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(images.iter().map(String::as_str));
            docker(&args);
        }
    }
}

/// Runs the docker command line (tests only; Baton itself uses the API).
pub fn docker(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker command line");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

const SELENIUM: &str = "selenium==4.27.1";

/// A Python with selenium (from PyPI, pinned) in a venv under the target
/// folder, made once; for the tests that drive headless Chromium.
pub fn selenium_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-venv");
    let python = venv.join("bin/python");
    let marker = venv.join("installed.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(SELENIUM) {
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            SELENIUM,
        ]));
        std::fs::write(&marker, SELENIUM).unwrap();
    }
    python
}

/// Runs a command, failing the test with its output if it fails.
pub fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free port on loopback (bound, then let go), for a program of the
/// test's own that must be told its port before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
