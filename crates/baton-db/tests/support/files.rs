//! A migrations folder in a temporary directory, and what the tests read
//! independently of Baton, through Python: Flyway's checksum (zlib.crc32,
//! line by line as Java's BufferedReader.readLine splits them) and a SQLite
//! database's rows (its sqlite3 module).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Folder {
    dir: tempfile::TempDir,
}

impl Folder {
    pub fn new() -> Folder {
        Folder {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) {
        let path = self.path(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path(name)).unwrap();
    }

    pub fn migrations(&self) -> Vec<baton_migrate::Migration> {
        baton_migrate::discover(self.dir.path())
            .expect("valid migrations")
            .migrations
    }
}

const FLYWAY_CHECKSUM: &str = r#"
import re, sys, zlib
data = sys.stdin.buffer.read() if sys.argv[1] == "-" else open(sys.argv[1], "rb").read()
crc = 0
for i, line in enumerate(re.split(r"\r\n|\r|\n", data.decode("utf-8"))):
    if i == 0 and line.startswith("\ufeff"):
        line = line[1:]
    crc = zlib.crc32(line.encode("utf-8"), crc)
print(crc - (1 << 32) if crc >= (1 << 31) else crc)
"#;

pub fn flyway_checksum(path: &Path) -> i32 {
    python(FLYWAY_CHECKSUM, &[path.as_os_str()])
        .parse()
        .unwrap()
}

pub fn flyway_checksum_of(bytes: &[u8]) -> i32 {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    flyway_checksum(file.path())
}

const SQLITE_ROWS: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
for row in db.execute(sys.argv[2]):
    print("|".join("NULL" if v is None else str(v) for v in row))
"#;

/// Runs SQL on a SQLite file (committing at once): rows one a line, columns
/// split by `|`.
pub fn sqlite3(path: &Path, sql: &str) -> String {
    python(SQLITE_ROWS, &[path.as_os_str(), sql.as_ref()])
}

/// Runs a Python script with arguments: what it printed, without the
/// trailing newline.
fn python(script: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}
