//! The access log: one JSON line per request (time, app, environment, host,
//! method, path, status, bytes, duration, release, target, request id),
//! written by a thread of its own so the data path never waits on the
//! disk, and rotated by size (`access.log` → `access.log.1` …). When the
//! writer falls behind, lines are dropped and counted rather than
//! slowing requests down.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method};
use serde::Serialize;

use crate::edge::Client;
use crate::route::Route;
use crate::target::Target;

/// Lines waiting for the writer at most; beyond, lines are dropped.
const QUEUE: usize = 65_536;
/// How long the writer gathers lines before writing them.
const BATCH: std::time::Duration = std::time::Duration::from_millis(50);

/// One request, as the log records it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct AccessRecord {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub app: Option<String>,
    pub environment: Option<String>,
    pub host: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    pub duration_ms: f64,
    pub release: Option<String>,
    pub target: Option<i64>,
    pub request_id: String,
    pub client: String,
    /// Why the proxy answered itself, when it did (`gateway_timeout`, …).
    pub error: Option<String>,
}

/// What the log needs of a request while it is served: shared handles
/// only (clones are reference counts), so the data path never formats.
#[derive(Clone)]
pub(crate) struct Entry {
    pub started: Instant,
    pub at: SystemTime,
    /// Copied, not shared: a shared slice would keep the connection's read
    /// buffer from being reused while the response streams.
    pub host: Box<str>,
    pub method: Method,
    pub path: Box<str>,
    pub request_id: HeaderValue,
    pub client: Arc<Client>,
    pub route: Option<Arc<Route>>,
    pub target: Option<Arc<Target>>,
}

/// A finished request, on its way to the writer thread.
struct Done {
    entry: Entry,
    duration_us: u64,
    status: u16,
    bytes: u64,
    error: Option<&'static str>,
}

pub struct AccessLog {
    queue: SyncSender<Done>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Starts the writer of `path`, rotating at `max_bytes` and keeping
    /// `keep` older files.
    pub fn open(path: PathBuf, max_bytes: u64, keep: usize) -> std::io::Result<AccessLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Fail at start, not silently later, if the file cannot be written.
        drop(open_append(&path)?);
        let (queue, lines) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("baton-access-log".into())
            .spawn(move || write_lines(lines, &path, max_bytes, keep))?;
        Ok(AccessLog {
            queue,
            dropped: AtomicU64::new(0),
        })
    }

    pub(crate) fn record(
        &self,
        entry: Entry,
        status: u16,
        bytes: u64,
        error: Option<&'static str>,
    ) {
        let duration_us = entry.started.elapsed().as_micros() as u64;
        let done = Done {
            entry,
            duration_us,
            status,
            bytes,
            error,
        };
        match self.queue.try_send(done) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "the access log falls behind; lines dropped");
                }
            }
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn write_lines(lines: Receiver<Done>, path: &Path, max_bytes: u64, keep: usize) {
    let mut file = match open_append(path) {
        Ok(file) => std::io::BufWriter::new(file),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot write the access log");
            return;
        }
    };
    let mut size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    while let Ok(first) = lines.recv() {
        // Lines are gathered for a moment and written together: a writer
        // woken for every request would cost the data path a wake-up and a
        // system call each, which is most of a proxied request's budget.
        // Senders meanwhile only queue (the writer is not waiting on them).
        std::thread::sleep(BATCH);
        // Whatever else is queued goes out in the same write.
        let mut line = Vec::with_capacity(512);
        for done in std::iter::once(first).chain(lines.try_iter()) {
            line.clear();
            format_line(&mut line, &done);
            if file.write_all(&line).is_ok() {
                size += line.len() as u64;
            }
        }
        let _ = file.flush();
        if size >= max_bytes {
            match rotate(path, keep) {
                Ok(()) => match open_append(path) {
                    Ok(next) => {
                        file = std::io::BufWriter::new(next);
                        size = 0;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot reopen the access log"),
                },
                Err(e) => tracing::error!(error = %e, "cannot rotate the access log"),
            }
        }
    }
}

/// One JSON line, the fields of [`AccessRecord`], written by hand: this runs
/// once per request and serde's generic path costs more than the rest.
fn format_line(out: &mut Vec<u8>, done: &Done) {
    let e = &done.entry;
    let text = |out: &mut Vec<u8>, value: &str| {
        // Strings are escaped by serde_json; they come from clients.
        let _ = serde_json::to_writer(&mut *out, value);
    };
    let opt = |out: &mut Vec<u8>, value: Option<&str>| match value {
        Some(v) => text(out, v),
        None => out.extend_from_slice(b"null"),
    };
    let route = e.route.as_ref().map(|r| &r.spec.key);
    out.extend_from_slice(b"{\"time\":\"");
    out.extend_from_slice(rfc3339(e.at).as_bytes());
    out.extend_from_slice(b"\",\"app\":");
    opt(out, route.map(|k| k.app.as_str()));
    out.extend_from_slice(b",\"environment\":");
    opt(out, route.map(|k| k.environment.as_str()));
    out.extend_from_slice(b",\"host\":");
    text(out, &e.host);
    out.extend_from_slice(b",\"method\":");
    text(out, e.method.as_str());
    out.extend_from_slice(b",\"path\":");
    text(out, &e.path);
    let _ = write!(
        out,
        ",\"status\":{},\"bytes\":{},\"duration_ms\":{}.{:03}",
        done.status,
        done.bytes,
        done.duration_us / 1000,
        done.duration_us % 1000
    );
    out.extend_from_slice(b",\"release\":");
    opt(out, e.target.as_ref().map(|t| t.release.as_str()));
    out.extend_from_slice(b",\"target\":");
    match &e.target {
        Some(t) => {
            let _ = write!(out, "{}", t.id);
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"request_id\":");
    text(out, e.request_id.to_str().unwrap_or("-"));
    let _ = write!(out, ",\"client\":\"{}\"", e.client.ip);
    out.extend_from_slice(b",\"error\":");
    opt(out, done.error);
    out.extend_from_slice(b"}\n");
}

/// `access.log.{keep}` is dropped, each older one moves up, and the
/// current file becomes `access.log.1`.
pub(crate) fn rotate(path: &Path, keep: usize) -> std::io::Result<()> {
    let numbered = |n: usize| rotated(path, n);
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let _ = std::fs::rename(numbered(n), numbered(n + 1));
    }
    std::fs::rename(path, numbered(1))
}

/// The `n`th older file of the log at `path` (`access.log.1` is the newest).
pub(crate) fn rotated(path: &Path, n: usize) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

/// A time as the log writes it: RFC 3339, UTC, milliseconds.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> Entry {
        let spec = crate::RouteSpec {
            key: crate::RouteKey::new("shop", "production"),
            hosts: vec!["shop.example".into()],
            preview_hosts: vec![],
            live: None,
            live_instances: Vec::new(),
            preview: None,
            hold_timeout: std::time::Duration::from_secs(1),
            limits: Default::default(),
            maintenance: None,
            tls: None,
            canary: None,
            live_updates: false,
        };
        Entry {
            started: Instant::now(),
            at: SystemTime::now(),
            host: "shop.example".into(),
            method: Method::GET,
            path: format!("/{n}").into(),
            request_id: HeaderValue::from_str(&format!("r{n}")).unwrap(),
            client: Arc::new(Client::new("127.0.0.1".parse().unwrap(), false, "http")),
            route: Some(Arc::new(Route {
                spec,
                gate: Arc::new(crate::hold::Gate::new(1)),
                live: None,
                live_instances: Vec::new(),
                preview: None,
                canary: None,
            })),
            target: Some(Target::new(&crate::TargetRef::new(
                1,
                "127.0.0.1:1".parse().unwrap(),
                "abc",
            ))),
        }
    }

    #[test]
    fn lines_are_json_and_the_file_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(path.clone(), 2_000, 2).unwrap();
        for n in 0..40 {
            log.record(entry(n), 200, 12, None);
        }
        drop(log);
        // The writer ends when the log is dropped; wait for its files.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let count = || {
            [
                path.clone(),
                dir.path().join("access.log.1"),
                dir.path().join("access.log.2"),
            ]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|t| t.lines().count())
            .sum::<usize>()
        };
        while count() < 20 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(dir.path().join("access.log.1").exists());
        assert!(!dir.path().join("access.log.3").exists(), "only two kept");
        let text = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        let first: AccessRecord = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first.app.as_deref(), Some("shop"));
        assert_eq!(first.status, 200);
        assert_eq!(first.release.as_deref(), Some("abc"));
        assert!(first.path.starts_with('/'));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
