//! Target output, one append-only file per target (`<dir>/<target>.log`),
//! whatever the runtime: processes write theirs directly, containers' output
//! is copied in by the Docker runtime. Readers never need to know which.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct LogFiles {
    dir: PathBuf,
}

impl LogFiles {
    pub fn new(dir: impl Into<PathBuf>) -> LogFiles {
        LogFiles { dir: dir.into() }
    }

    pub fn path(&self, target_id: i64) -> PathBuf {
        self.dir.join(format!("{target_id}.log"))
    }

    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// Opens the target's file for appending, creating it (and the folder).
    pub fn append(&self, target_id: i64) -> std::io::Result<fs::File> {
        fs::create_dir_all(&self.dir)?;
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(target_id))
    }

    /// Size of the target's output so far, in bytes.
    pub fn len(&self, target_id: i64) -> u64 {
        fs::metadata(self.path(target_id))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Up to `max` bytes of the target's output from `offset`.
    pub fn read(&self, target_id: i64, offset: u64, max: usize) -> Vec<u8> {
        let read = || -> std::io::Result<Vec<u8>> {
            let mut file = fs::File::open(self.path(target_id))?;
            file.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::new();
            file.take(max as u64).read_to_end(&mut buf)?;
            Ok(buf)
        };
        read().unwrap_or_default()
    }

    /// The last `lines` lines of the target's output.
    pub fn tail(&self, target_id: i64, lines: usize) -> Vec<String> {
        let len = self.len(target_id);
        let window = 64 * 1024;
        let bytes = self.read(target_id, len.saturating_sub(window), window as usize);
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
}
