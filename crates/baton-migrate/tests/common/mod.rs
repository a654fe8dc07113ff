//! Helpers shared by the integration tests: a scratch folder that removes
//! itself, and builders for migrations and history rows.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use baton_migrate::{HistoryRow, Migration, MigrationType, Version};

/// A fresh folder under the system temp dir, deleted on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(label: &str) -> Scratch {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("baton-migrate-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch folder");
        Scratch { path }
    }

    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create folder");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }

    pub fn dir(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn v(text: &str) -> Version {
    Version::parse(text).expect("valid version")
}

/// A migration named `script` with `sql` as its text.
pub fn migration(script: &str, sql: &str) -> Migration {
    Migration::from_text(script, sql)
        .expect("valid name")
        .expect("a migration")
}

/// A successful history row recording `m` at `rank`.
pub fn applied(rank: i32, m: &Migration) -> HistoryRow {
    HistoryRow {
        installed_rank: rank,
        version: m.version.clone(),
        description: m.description.clone(),
        kind: MigrationType::Sql,
        script: m.script.clone(),
        checksum: Some(m.checksum),
        installed_by: "deploy".into(),
        installed_on: "2024-01-05 10:00:00".into(),
        execution_time: 12,
        success: true,
    }
}

pub fn failed(rank: i32, m: &Migration) -> HistoryRow {
    HistoryRow {
        success: false,
        ..applied(rank, m)
    }
}

pub fn baseline(rank: i32, version: &str) -> HistoryRow {
    HistoryRow {
        installed_rank: rank,
        version: Some(v(version)),
        description: "<< Flyway Baseline >>".into(),
        kind: MigrationType::Baseline,
        script: "<< Flyway Baseline >>".into(),
        checksum: None,
        installed_by: "deploy".into(),
        installed_on: "2024-01-01 00:00:00".into(),
        execution_time: 0,
        success: true,
    }
}
