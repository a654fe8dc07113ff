//! Migration versions as Flyway reads and orders them.
//!
//! This module owns parsing a version string (`1`, `1.2`, `1_2`, `2024.01.05.1`)
//! and comparing two versions. It must never look at file names or history
//! rows: callers hand it the version text alone.
//!
//! Flyway's rules, kept here: `_` and `.` both separate parts; each part is a
//! non-negative decimal integer of any length (Flyway uses `BigInteger`, so a
//! timestamp such as `20240105143000` is one part); parts compare numerically
//! one by one, a missing part counting as zero, so `1.10 > 1.9` and
//! `1.0 == 1`. The text is kept as written (with `_` turned into `.`) because
//! that is what Flyway stores in `flyway_schema_history.version`.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Serialize, Serializer};

/// A parsed migration version. Equality and ordering are numeric, part by
/// part; [`Version::as_str`] keeps the text as written.
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    /// Decimal digits without leading zeros ("" stands for zero), trailing
    /// zero parts dropped, so that equal versions have equal `parts`.
    parts: Vec<String>,
}

/// Why a version string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("the version is empty")]
    Empty,
    #[error("version `{version}` is not valid: only digits separated by `.` or `_` are allowed (e.g. `1`, `1.2`, `2024_01_05`)")]
    Invalid { version: String },
}

impl Version {
    /// Parses a version as Flyway does (`_` and `.` separate numeric parts).
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        if text.is_empty() {
            return Err(VersionError::Empty);
        }
        let normalized = text.replace('_', ".");
        let mut parts = Vec::new();
        for part in normalized.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(VersionError::Invalid {
                    version: text.to_string(),
                });
            }
            parts.push(part.trim_start_matches('0').to_string());
        }
        while parts.len() > 1 && parts.last().is_some_and(|p| p.is_empty()) {
            parts.pop();
        }
        Ok(Version {
            text: normalized,
            parts,
        })
    }

    /// The version as Flyway writes it in the history table (`1_2` becomes `1.2`).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    // Both are digit strings without leading zeros: the longer one is larger.
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let longest = self.parts.len().max(other.parts.len());
        for i in 0..longest {
            let a = self.parts.get(i).map(String::as_str).unwrap_or("");
            let b = other.parts.get(i).map(String::as_str).unwrap_or("");
            match compare_part(a, b) {
                Ordering::Equal => continue,
                unequal => return unequal,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts.hash(state);
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).expect("valid version")
    }

    #[test]
    fn underscore_and_dot_separate_parts() {
        assert_eq!(v("1_2"), v("1.2"));
        assert_eq!(v("1_2").as_str(), "1.2");
    }

    #[test]
    fn parts_compare_numerically_not_as_text() {
        assert!(v("1.10") > v("1.9"));
        assert!(v("2") > v("1.999"));
        assert!(v("10") > v("9"));
        assert!(v("1.0.1") > v("1"));
    }

    #[test]
    fn trailing_zeros_and_leading_zeros_do_not_change_the_version() {
        assert_eq!(v("1.0"), v("1"));
        assert_eq!(v("1.0.0"), v("1"));
        assert_eq!(v("01"), v("1"));
        assert_eq!(v("0"), v("0.0"));
        assert!(v("0") < v("0.1"));
    }

    #[test]
    fn timestamps_longer_than_u64_still_order() {
        assert!(v("202401051430001234567890") > v("202401051430001234567889"));
    }

    #[test]
    fn malformed_versions_are_refused() {
        for bad in [
            "", "a", "1..2", "1.", ".1", "1.x", "-1", "+1", "1 2", "1__2",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
