//! `flags.toml`: an app's flags kept in its repository. Each flag is written
//! once with the settings every environment shares, and may override any of
//! them per environment:
//!
//! ```toml
//! [flags.new-checkout]
//! description = "The one-page checkout"
//! enabled = true
//! users = ["alice"]
//! rollout = 30
//!
//! [flags.new-checkout.environments.production]
//! rollout = 5
//! ```
//!
//! This module only reads and validates text into Baton's flag model
//! ([`baton_flags::FlagSpec`]); it never talks to a server. Every error names
//! the file, the field and, for anything the parser sees, the line and column.

use std::collections::BTreeMap;
use std::path::Path;

use baton_flags::model::{de, flag_name_error, is_flag_name, ConstraintSpec, VariantSpec};
use baton_flags::FlagSpec;
use serde::{Deserialize, Deserializer};

use crate::{check_name, syntax_error, ManifestError};

/// The file name Baton looks for beside `baton.toml`.
pub const FILE_NAME: &str = "flags.toml";

/// A parsed and validated `flags.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagsFile {
    flags: BTreeMap<String, FileFlag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    flags: BTreeMap<FlagName, FileFlag>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FlagName(String);

impl<'de> Deserialize<'de> for FlagName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if is_flag_name(&name) {
            Ok(FlagName(name))
        } else {
            Err(serde::de::Error::custom(flag_name_error(&name)))
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct EnvironmentName(String);

impl<'de> Deserialize<'de> for EnvironmentName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        check_name("environment", &name).map_err(serde::de::Error::custom)?;
        Ok(EnvironmentName(name))
    }
}

/// A flag as written: shared settings plus per-environment overrides.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFlag {
    #[serde(default)]
    description: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    users: Option<Vec<String>>,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    constraints: Option<Vec<ConstraintSpec>>,
    #[serde(default, deserialize_with = "de::percentage")]
    rollout: Option<u8>,
    #[serde(default, deserialize_with = "de::field_name")]
    stickiness: Option<String>,
    #[serde(default)]
    variants: Option<Vec<VariantSpec>>,
    #[serde(default, deserialize_with = "environments")]
    environments: BTreeMap<String, Override>,
}

/// What one environment changes; a field left out keeps the shared value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Override {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    users: Option<Vec<String>>,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    constraints: Option<Vec<ConstraintSpec>>,
    #[serde(default, deserialize_with = "de::percentage")]
    rollout: Option<u8>,
    #[serde(default, deserialize_with = "de::field_name")]
    stickiness: Option<String>,
    #[serde(default)]
    variants: Option<Vec<VariantSpec>>,
}

fn environments<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Override>, D::Error> {
    let raw = BTreeMap::<EnvironmentName, Override>::deserialize(deserializer)?;
    Ok(raw.into_iter().map(|(name, o)| (name.0, o)).collect())
}

/// The environment's list if it gives one, else the shared one.
fn pick<T: Clone>(over: Option<&Vec<T>>, base: &Option<Vec<T>>) -> Vec<T> {
    over.or(base.as_ref()).cloned().unwrap_or_default()
}

impl FileFlag {
    fn resolve(&self, environment: Option<&str>) -> FlagSpec {
        let o = environment.and_then(|e| self.environments.get(e));
        FlagSpec {
            enabled: o.and_then(|o| o.enabled).or(self.enabled).unwrap_or(false),
            description: self.description.clone(),
            users: pick(o.and_then(|o| o.users.as_ref()), &self.users),
            groups: pick(o.and_then(|o| o.groups.as_ref()), &self.groups),
            constraints: pick(o.and_then(|o| o.constraints.as_ref()), &self.constraints),
            rollout: o.and_then(|o| o.rollout).or(self.rollout),
            stickiness: o
                .and_then(|o| o.stickiness.clone())
                .or_else(|| self.stickiness.clone()),
            variants: pick(o.and_then(|o| o.variants.as_ref()), &self.variants),
        }
    }
}

/// The largest `flags.toml` read.
pub const MAX_FILE: u64 = 1024 * 1024;

impl FlagsFile {
    /// Reads `flags.toml` from an app or release folder; `None` when there
    /// is none. The server reads it from releases anyone with upload rights
    /// made, so only a regular file of at most [`MAX_FILE`] bytes is read:
    /// never through a symbolic link, never a FIFO or device (which could
    /// block the reader forever). It blocks: call it off the async runtime.
    pub fn load(dir: &Path) -> Result<Option<FlagsFile>, ManifestError> {
        let path = dir.join(FILE_NAME);
        let file = path.display().to_string();
        match crate::read_regular_file(&path, MAX_FILE) {
            Ok(Some(text)) => FlagsFile::parse(&text, &file).map(Some),
            Ok(None) => Ok(None),
            Err(reason) => Err(ManifestError::Unreadable { file, reason }),
        }
    }

    /// Parses and validates the text of a `flags.toml`; `file` is only used
    /// in errors.
    pub fn parse(text: &str, file: &str) -> Result<FlagsFile, ManifestError> {
        let deserializer = toml::Deserializer::new(text);
        let raw: RawFile = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| syntax_error(text, file, e))?;
        let flags: BTreeMap<String, FileFlag> =
            raw.flags.into_iter().map(|(k, v)| (k.0, v)).collect();
        for (name, flag) in &flags {
            let environments = std::iter::once(None).chain(flag.environments.keys().map(Some));
            for environment in environments {
                flag.resolve(environment.map(String::as_str))
                    .check()
                    .map_err(|reason| {
                        let (field, reason) = reason.split_once(": ").unwrap_or(("", &reason));
                        let at = match environment {
                            Some(e) => format!("flags.{name}.environments.{e}"),
                            None => format!("flags.{name}"),
                        };
                        ManifestError::Invalid {
                            file: file.to_string(),
                            field: if field.is_empty() {
                                at
                            } else {
                                format!("{at}.{field}")
                            },
                            reason: reason.to_string(),
                        }
                    })?;
            }
        }
        Ok(FlagsFile { flags })
    }

    /// Every flag as it is in `environment`, by name.
    pub fn for_environment(&self, environment: &str) -> BTreeMap<String, FlagSpec> {
        self.flags
            .iter()
            .map(|(name, flag)| (name.clone(), flag.resolve(Some(environment))))
            .collect()
    }

    /// The flag names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.flags.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flags_file_that_is_a_link_a_fifo_or_huge_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert!(FlagsFile::load(dir.path()).unwrap().is_none());
        // A FIFO: opening it for reading would wait for a writer forever.
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let err = FlagsFile::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_file(&path).unwrap();
        // A link, even to a good file.
        let real = dir.path().join("real.toml");
        std::fs::write(&real, FILE).unwrap();
        std::os::unix::fs::symlink(&real, &path).unwrap();
        let err = FlagsFile::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, vec![b'#'; MAX_FILE as usize + 1]).unwrap();
        let err = FlagsFile::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
        std::fs::write(&path, FILE).unwrap();
        assert!(FlagsFile::load(dir.path()).unwrap().is_some());
    }

    const FILE: &str = r##"
[flags.new-checkout]
description = "The one-page checkout"
enabled = true
users = ["alice"]
rollout = 30
constraints = [{ field = "country", operator = "IN", values = ["FR", "BE"] }]

[flags.new-checkout.environments.production]
rollout = 5
users = []

[flags.dark-mode]
variants = [
  { name = "dim", weight = 1 },
  { name = "black", weight = 3, payload = { type = "string", value = "#000" } },
]
[flags.dark-mode.environments.staging]
enabled = true
"##;

    #[test]
    fn environments_override_the_shared_settings_field_by_field() {
        let file = FlagsFile::parse(FILE, "flags.toml").expect("valid");
        let staging = file.for_environment("staging");
        let checkout = &staging["new-checkout"];
        assert!(checkout.enabled);
        assert_eq!(checkout.rollout, Some(30));
        assert_eq!(checkout.users, ["alice"]);
        assert_eq!(checkout.description, "The one-page checkout");
        assert_eq!(checkout.constraints.len(), 1);
        let production = file.for_environment("production");
        assert_eq!(production["new-checkout"].rollout, Some(5));
        assert!(production["new-checkout"].users.is_empty());
        assert_eq!(production["new-checkout"].constraints.len(), 1);
        assert!(
            !production["dark-mode"].enabled,
            "off unless said otherwise"
        );
        assert!(staging["dark-mode"].enabled);
        assert_eq!(staging["dark-mode"].variants.len(), 2);
        assert_eq!(
            file.names().collect::<Vec<_>>(),
            ["dark-mode", "new-checkout"]
        );
    }

    fn error(text: &str) -> String {
        FlagsFile::parse(text, "app/flags.toml")
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn errors_name_the_file_line_column_and_field() {
        let e = error("[flags.a]\nenabled = true\nrollout = 130\n");
        assert!(
            e.starts_with("app/flags.toml:3:11: field `flags.a.rollout`"),
            "{e}"
        );
        assert!(e.contains("0 to 100"), "{e}");

        let e = error("[flags.a]\nenabeld = true\n");
        assert!(
            e.starts_with("app/flags.toml:2:1: field `flags.a.enabeld`"),
            "{e}"
        );
        assert!(e.contains("enabeld"), "{e}");

        let e = error(
            "[flags.a]\nconstraints = [{ field = \"x\", operator = \"LIKE\", values = [\"1\"] }]\n",
        );
        assert!(e.starts_with("app/flags.toml:2:"), "{e}");
        assert!(e.contains("flags.a.constraints[0].operator"), "{e}");
        assert!(e.contains("unknown operator \"LIKE\""), "{e}");

        let e = error("[flags.\"has space\"]\nenabled = true\n");
        assert!(e.contains("app/flags.toml:1:"), "{e}");
        assert!(e.contains("is not a flag name"), "{e}");

        let e = error("[flags.a.environments.Prod]\nenabled = true\n");
        assert!(e.contains("environment name"), "{e}");

        let e = error("[flags.a.environments.prod]\ndescription = \"x\"\n");
        assert!(e.contains("flags.a.environments.prod"), "{e}");

        let e = error("[flags.a]\nenabled = \"yes\"\n");
        assert!(
            e.starts_with("app/flags.toml:2:11: field `flags.a.enabled`"),
            "{e}"
        );

        let e = error(
            "[flags.a]\n[flags.a.environments.staging]\nvariants = [{ name = \"x\", payload = { type = \"json\", value = \"{\" } }]\n",
        );
        assert_eq!(
            e,
            "app/flags.toml: field `flags.a.environments.staging.variants[0].payload.value`: \"{\" is not valid JSON"
        );

        let e = error("[flags.a\n");
        assert!(e.starts_with("app/flags.toml:1:"), "{e}");
    }

    #[test]
    fn a_missing_file_is_none() {
        let dir = std::env::temp_dir().join(format!("baton-no-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(FlagsFile::load(&dir), Ok(None));
        std::fs::write(dir.join(FILE_NAME), "[flags.x]\nenabled = true\n").unwrap();
        assert!(FlagsFile::load(&dir).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
