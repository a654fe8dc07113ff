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

use serde::Serialize;

/// Lines waiting for the writer at most; beyond, lines are dropped.
const QUEUE: usize = 65_536;

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

pub struct AccessLog {
    queue: SyncSender<AccessRecord>,
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

    pub fn record(&self, record: AccessRecord) {
        match self.queue.try_send(record) {
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

fn write_lines(lines: Receiver<AccessRecord>, path: &Path, max_bytes: u64, keep: usize) {
    let mut file = match open_append(path) {
        Ok(file) => std::io::BufWriter::new(file),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot write the access log");
            return;
        }
    };
    let mut size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    while let Ok(first) = lines.recv() {
        // Whatever else is queued goes out in the same write.
        for record in std::iter::once(first).chain(lines.try_iter()) {
            let Ok(mut line) = serde_json::to_vec(&record) else {
                continue;
            };
            line.push(b'\n');
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

/// `access.log.(keep-1)` is dropped, each older one moves up, and the
/// current file becomes `access.log.1`.
fn rotate(path: &Path, keep: usize) -> std::io::Result<()> {
    let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let _ = std::fs::rename(numbered(n), numbered(n + 1));
    }
    std::fs::rename(path, numbered(1))
}

/// The current time as the log writes it.
pub(crate) fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        now.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> AccessRecord {
        AccessRecord {
            time: now_rfc3339(),
            app: Some("shop".into()),
            environment: Some("production".into()),
            host: "shop.example".into(),
            method: "GET".into(),
            path: format!("/{n}"),
            status: 200,
            bytes: 12,
            duration_ms: 1.5,
            release: Some("abc".into()),
            target: Some(1),
            request_id: format!("r{n}"),
            client: "127.0.0.1".into(),
            error: None,
        }
    }

    #[test]
    fn dates_are_the_calendars() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_516), (2026, 3, 4));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn lines_are_json_and_the_file_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(path.clone(), 2_000, 2).unwrap();
        for n in 0..40 {
            log.record(record(n));
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
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
