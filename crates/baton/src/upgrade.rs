//! Upgrading Baton in place: `baton upgrade` (or SIGUSR2 to the server)
//! after the binary on disk was replaced. The server checks that the new
//! binary runs, stops its background work, and re-executes itself with the
//! same arguments and pid, handing its API socket to the new image (so the
//! API refuses no connection either); the new server then hands the proxy
//! over to a proxy of the new binary, which takes the listening sockets.
//! Apps are adopted as after any restart. `DATA/server.json` says which
//! server runs, and why the last upgrade failed if it did.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use baton_proxy::control::{FileId, ProxyInfo};
use serde::{Deserialize, Serialize};

/// The variable naming the API socket a re-executed server inherits, as
/// `FD:PID` (the pid guards against a child inheriting it by mistake).
const API_FD: &str = "BATON_API_FD";

/// What `DATA/server.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerRecord {
    pub pid: u32,
    pub version: String,
    pub exe: PathBuf,
    pub exe_id: FileId,
    pub started_ms: i64,
    pub proxy: ProxyInfo,
    /// Why the last upgrade asked of this server failed, and when.
    pub upgrade_error: Option<String>,
    pub upgrade_failed_ms: Option<i64>,
}

fn record_path(data: &Path) -> PathBuf {
    data.join("server.json")
}

fn write_record(data: &Path, record: &ServerRecord) -> Result<()> {
    crate::data_folder::write_json(&record_path(data), record)
}

fn read_record(data: &Path) -> Option<ServerRecord> {
    serde_json::from_slice(&std::fs::read(record_path(data)).ok()?).ok()
}

/// Says which server serves the data folder, once it is ready.
pub fn record_ready(data: &Path, exe: &Path, proxy: &ProxyInfo) -> Result<()> {
    write_record(
        data,
        &ServerRecord {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            exe: exe.to_path_buf(),
            exe_id: FileId::of_this_process()?,
            started_ms: baton_store::now_ms(),
            proxy: proxy.clone(),
            upgrade_error: None,
            upgrade_failed_ms: None,
        },
    )
}

pub fn record_failure(data: &Path, error: &str) {
    if let Some(mut record) = read_record(data) {
        record.upgrade_error = Some(error.to_string());
        record.upgrade_failed_ms = Some(baton_store::now_ms());
        if let Err(e) = write_record(data, &record) {
            tracing::warn!(error = %e, "cannot record the failed upgrade");
        }
    }
}

/// Runs `exe --version`: a binary that cannot even say its version (wrong
/// architecture, truncated copy) is never executed in the server's place.
pub async fn check_binary(exe: &Path) -> Result<String> {
    let run = tokio::process::Command::new(exe)
        .arg("--version")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| anyhow!("{} --version did not answer within 10 s", exe.display()))?
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !text.starts_with("baton ") {
        bail!(
            "{} --version failed ({}): {}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

/// Replaces this process with `exe`, same arguments, the API socket
/// inherited. Returns only if that failed.
pub fn exec(exe: &Path, argv: &[OsString], api: std::net::TcpListener) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let fd = api.as_raw_fd();
    // Kept open across exec on purpose: it is the API socket.
    if let Err(e) = nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    ) {
        return anyhow!("cannot pass the API socket on: {e}");
    }
    let e = std::process::Command::new(exe)
        .args(argv.iter().skip(1))
        .env(API_FD, format!("{fd}:{}", std::process::id()))
        .exec();
    anyhow!("cannot execute {}: {e}", exe.display())
}

/// What the image this process replaced (an upgrade) left it: its API
/// socket, taken here. Its children (proxies finishing their requests,
/// apps' processes, which the runtime adopts like any others) are not the
/// runtime's to wait for, so they are reaped here as they end, or they
/// would stay zombies. `None` on a fresh
/// start. Call before starting anything.
pub fn inherit() -> Option<std::net::TcpListener> {
    let value = std::env::var(API_FD).ok()?;
    let (fd, pid) = value.split_once(':')?;
    // Set by this very process before it re-executed, not by a parent.
    if pid.parse::<u32>().ok()? != std::process::id() {
        return None;
    }
    let fd: i32 = fd.parse().ok()?;
    reap_children_of_previous_image();
    // Not for the processes this one starts.
    let _ = nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    // SAFETY: the previous image of this very process left this descriptor
    // open for us (the pid says so) and nothing else here owns it.
    let socket = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    socket.local_addr().ok().map(|_| socket)
}

fn reap_children_of_previous_image() {
    let mut inherited = baton_runtime::children_of(std::process::id());
    if inherited.is_empty() {
        return;
    }
    tracing::debug!(
        ?inherited,
        "children of the previous image, reaped as they end"
    );
    tokio::spawn(async move {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        while !inherited.is_empty() {
            inherited.retain(|pid| {
                matches!(
                    waitpid(
                        nix::unistd::Pid::from_raw(*pid as i32),
                        Some(WaitPidFlag::WNOHANG)
                    ),
                    Ok(WaitStatus::StillAlive)
                )
            });
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// `baton upgrade`: on the server's host, after replacing the binary.
pub async fn upgrade(data: Option<PathBuf>, json: bool, within: Duration) -> Result<ExitCode> {
    let data = data.unwrap_or_else(crate::server::default_data_dir);
    let before = read_record(&data).ok_or_else(|| {
        anyhow!(
            "no baton server has run on {} (no server.json); start one with `baton server`",
            data.display()
        )
    })?;
    let pid = nix::unistd::Pid::from_raw(before.pid as i32);
    if !server_holds_lock(&data) {
        bail!(
            "no baton server runs on {}; start it with `baton server` (it takes the running proxy over itself)",
            data.display()
        );
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR2).map_err(|e| {
        anyhow!(
            "cannot signal the server (pid {}): {e}; run this as its user",
            before.pid
        )
    })?;
    let started = Instant::now();
    let after = loop {
        if let Some(now) = read_record(&data) {
            if now.started_ms != before.started_ms {
                break now;
            }
            if now.upgrade_failed_ms.is_some() && now.upgrade_failed_ms != before.upgrade_failed_ms
            {
                bail!(
                    "the upgrade failed; the server serves on unchanged: {}",
                    now.upgrade_error.unwrap_or_default()
                );
            }
        }
        if nix::sys::signal::kill(pid, None).is_err() {
            bail!(
                "the server (pid {}) exited during the upgrade; the proxy and the apps serve on: see the server's log, then start it with `baton server`",
                before.pid
            );
        }
        if started.elapsed() > within {
            bail!(
                "the server did not come back within {within:?}; see its log (pid {})",
                before.pid
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "before": before,
                "after": after,
                "took_ms": started.elapsed().as_millis() as u64,
            }))?
        );
    } else {
        println!(
            "upgraded in {} ms: server pid {} now runs baton {} ({}); proxy pid {} → {}",
            started.elapsed().as_millis(),
            after.pid,
            after.version,
            after.exe.display(),
            before.proxy.pid,
            after.proxy.pid
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a server holds the data folder's lock right now.
fn server_holds_lock(data: &Path) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    let Ok(file) = std::fs::File::open(data.join("server.lock")) else {
        return false;
    };
    Flock::lock(file, FlockArg::LockSharedNonblock).is_err()
}
