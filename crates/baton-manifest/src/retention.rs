//! `[retention]`: how much of an app's past the server keeps on disk.
//! Release folders (and their records and images) beyond the newest
//! `releases` are removed after each successful deploy, and the output of
//! stopped targets once older than `logs` or beyond the newest `log_files`.
//! What stays whatever these say (the live and warm releases, a running
//! target's) is the orchestrator's rule, not the manifest's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The releases kept when the manifest says nothing.
pub const DEFAULT_RELEASES: usize = 10;
/// The most releases or log files `[retention]` may ask to keep.
const MOST: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// How many of the app's newest releases (by creation or last deploy)
    /// keep their folder, record and image.
    #[serde(default = "default_releases")]
    pub releases: usize,
    /// How long a stopped target's output is kept, e.g. "14d".
    #[serde(default = "default_logs", with = "crate::duration")]
    pub logs: Duration,
    /// How many stopped targets' output files are kept at most, newest first.
    #[serde(default = "default_log_files")]
    pub log_files: usize,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            releases: default_releases(),
            logs: default_logs(),
            log_files: default_log_files(),
        }
    }
}

impl RetentionSection {
    /// The field at fault and why, if any.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=MOST).contains(&self.releases) {
            return Err((
                "retention.releases",
                format!(
                    "{} is out of range: keep between 1 and {MOST} releases (the live one always stays)",
                    self.releases
                ),
            ));
        }
        if !(1..=MOST).contains(&self.log_files) {
            return Err((
                "retention.log_files",
                format!(
                    "{} is out of range: keep between 1 and {MOST} files",
                    self.log_files
                ),
            ));
        }
        if self.logs < Duration::from_secs(60) {
            return Err((
                "retention.logs",
                "keep output at least a minute, e.g. \"14d\"".into(),
            ));
        }
        Ok(())
    }
}

fn default_releases() -> usize {
    DEFAULT_RELEASES
}

fn default_logs() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

fn default_log_files() -> usize {
    50
}

#[cfg(test)]
mod tests {
    use crate::Manifest;

    const BASE: &str = "name = \"a\"\nhosts = [\"a.localhost\"]\n[web]\ncommand = \"x\"\n";

    #[test]
    fn retention_defaults_to_ten_releases_and_thirty_days_of_output() {
        let m = Manifest::parse(BASE, "baton.toml").unwrap();
        assert_eq!(m.retention().releases, 10);
        assert_eq!(m.retention().logs.as_secs(), 30 * 24 * 3600);
    }

    #[test]
    fn retention_reads_counts_and_ages() {
        let text = format!("{BASE}[retention]\nreleases = 3\nlogs = \"14d\"\nlog_files = 5\n");
        let m = Manifest::parse(&text, "baton.toml").unwrap();
        assert_eq!(m.retention().releases, 3);
        assert_eq!(m.retention().logs.as_secs(), 14 * 24 * 3600);
        assert_eq!(m.retention().log_files, 5);
    }

    #[test]
    fn retention_refuses_keeping_nothing_and_ages_without_units() {
        let zero = format!("{BASE}[retention]\nreleases = 0\n");
        let e = Manifest::parse(&zero, "baton.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("retention.releases"), "{e}");
        let unitless = format!("{BASE}[retention]\nlogs = 14\n");
        let e = Manifest::parse(&unitless, "baton.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no unit"), "{e}");
    }
}
