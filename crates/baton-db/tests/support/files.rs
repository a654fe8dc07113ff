//! A migrations folder in a temporary directory, and Flyway's checksum
//! computed independently of Baton (Python's zlib.crc32, line by line as
//! Java's BufferedReader.readLine splits them).

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
    let out = Command::new("python3")
        .args(["-c", FLYWAY_CHECKSUM])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

pub fn flyway_checksum_of(bytes: &[u8]) -> i32 {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    flyway_checksum(file.path())
}
