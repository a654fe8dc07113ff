//! Finding migrations in a folder and naming them as Flyway does.
//!
//! This module owns the file-name convention, the per-script configuration
//! file, and the checks that make a set of files a valid migration set
//! (no malformed names, no two files for one version). It is the only place
//! in the crate that touches the file system, and only to list and read the
//! migrations folder ([`discover`]); [`resolve`] does the same work on files
//! already in memory. It must never decide what to run: that is
//! [`crate::plan`]'s job.
//!
//! Flyway's naming rules, kept here:
//! - `V<version>__<description>.sql` is a versioned migration; the version
//!   uses `.` or `_` between numeric parts (`V1_2__x.sql` is version 1.2).
//! - `R__<description>.sql` is a repeatable migration, re-run whenever its
//!   checksum changes; it must not carry a version.
//! - `U<version>__<description>.sql` is an undo migration (a paid Flyway
//!   feature): recognised and ignored with a note, as are `B<version>__`
//!   baseline migrations and callback scripts such as `afterMigrate.sql`.
//! - The description is the text after the first `__`, with every `_` turned
//!   into a space; the prefix and `.sql` are case-sensitive.
//! - Folders are scanned recursively; the `script` recorded in the history is
//!   the path relative to the migrations folder, with `/` separators.
//! - A file `<script>.conf` beside a script is Flyway's script configuration;
//!   Baton honours its `executeInTransaction=true|false` line.
//!
//! Where Flyway silently skips a file that is almost a migration name (a
//! missing `__`, a bad version, a lower-case `v1__x.sql`), Baton refuses the
//! whole set and names the file, because a skipped migration is a schema
//! change that silently never happens.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checksum::checksum;
use crate::version::Version;

const SUFFIX: &str = ".sql";
const CONFIG_SUFFIX: &str = ".sql.conf";
const SEPARATOR: &str = "__";

/// A migration script found in the migrations folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Migration {
    /// `None` for a repeatable migration.
    pub version: Option<Version>,
    pub description: String,
    /// Path relative to the migrations folder, `/`-separated, as stored in
    /// the history's `script` column.
    pub script: String,
    /// Flyway's checksum of the file's text (one leading byte order mark
    /// dropped, as from [`Migration::sql`]; a second one counts).
    pub checksum: i32,
    #[serde(skip)]
    pub sql: String,
    /// What the script's `.conf` file says about `executeInTransaction`, if
    /// anything; the linter also reads markers in the SQL itself.
    pub execute_in_transaction: Option<bool>,
}

impl Migration {
    pub fn is_repeatable(&self) -> bool {
        self.version.is_none()
    }

    /// Builds a migration from a script path and its text, naming it by the
    /// file-name rules. `Ok(None)` means the file is not a migration Baton
    /// runs (an undo script, a callback, a non-SQL file).
    pub fn from_text(script: &str, sql: &str) -> Result<Option<Migration>, FileProblem> {
        // Flyway drops one leading byte order mark before running the script
        // (the database would refuse it) and, on its own, before the
        // checksum: the checksum is taken of the text as read, so a second
        // mark counts, as it does for Flyway.
        let text = sql;
        let sql = sql.strip_prefix('\u{FEFF}').unwrap_or(sql);
        let file_name = script.rsplit('/').next().unwrap_or(script);
        match parse_name(file_name).map_err(|kind| kind.at(script))? {
            ScriptName::Versioned {
                version,
                description,
            } => Ok(Some(Migration {
                version: Some(version),
                description,
                script: script.to_string(),
                checksum: checksum(text),
                sql: sql.to_string(),
                execute_in_transaction: None,
            })),
            ScriptName::Repeatable { description } => Ok(Some(Migration {
                version: None,
                description,
                script: script.to_string(),
                checksum: checksum(text),
                sql: sql.to_string(),
                execute_in_transaction: None,
            })),
            ScriptName::Skipped(_) | ScriptName::NotSql => Ok(None),
        }
    }
}

/// What a file name says the file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptName {
    Versioned {
        version: Version,
        description: String,
    },
    Repeatable {
        description: String,
    },
    /// A `.sql` file Baton recognises but does not run, and why.
    Skipped(&'static str),
    /// Not a `.sql` file: not Baton's business.
    NotSql,
}

/// What is wrong with one file name, before knowing which file it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameProblem {
    MissingSeparator,
    MissingVersion,
    BadVersion(String),
    VersionInRepeatable,
    LowercasePrefix,
}

impl NameProblem {
    fn at(self, script: &str) -> FileProblem {
        let script = script.to_string();
        match self {
            NameProblem::MissingSeparator => FileProblem::MissingSeparator { script },
            NameProblem::MissingVersion => FileProblem::MissingVersion { script },
            NameProblem::BadVersion(version) => FileProblem::BadVersion { script, version },
            NameProblem::VersionInRepeatable => FileProblem::VersionInRepeatable { script },
            NameProblem::LowercasePrefix => FileProblem::LowercasePrefix { script },
        }
    }
}

/// Flyway's callback events; scripts named after them run around commands,
/// not as migrations.
const CALLBACK_PREFIXES: &[&str] = &["before", "after", "createSchema"];

/// Reads a migration file name (no folders) by Flyway's rules.
pub fn parse_name(file_name: &str) -> Result<ScriptName, NameProblem> {
    let Some(stem) = file_name.strip_suffix(SUFFIX) else {
        return Ok(ScriptName::NotSql);
    };
    let mut chars = stem.chars();
    let first = chars.next();
    let rest = chars.as_str();
    match first {
        Some('V') => {
            let (version, description) = split_name(rest)?;
            if version.is_empty() {
                return Err(NameProblem::MissingVersion);
            }
            let version =
                Version::parse(version).map_err(|_| NameProblem::BadVersion(version.to_string()))?;
            Ok(ScriptName::Versioned {
                version,
                description,
            })
        }
        Some('R') => {
            let (version, description) = split_name(rest)?;
            if !version.is_empty() {
                return Err(NameProblem::VersionInRepeatable);
            }
            Ok(ScriptName::Repeatable { description })
        }
        Some('U') => Ok(ScriptName::Skipped(
            "undo migration: Baton never runs undo scripts (roll forward with a new versioned migration instead)",
        )),
        Some('B') if rest.starts_with(|c: char| c.is_ascii_digit()) => Ok(ScriptName::Skipped(
            "baseline migration (a paid Flyway feature): Baton does not run it",
        )),
        Some('v') if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            Err(NameProblem::LowercasePrefix)
        }
        Some('r') if rest.starts_with(SEPARATOR) => Err(NameProblem::LowercasePrefix),
        _ if CALLBACK_PREFIXES.iter().any(|p| stem.starts_with(p)) => Ok(ScriptName::Skipped(
            "Flyway callback script: Baton does not run callbacks",
        )),
        _ => Ok(ScriptName::Skipped(
            "not named like a migration (V<version>__<description>.sql or R__<description>.sql)",
        )),
    }
}

fn split_name(rest: &str) -> Result<(&str, String), NameProblem> {
    let at = rest.find(SEPARATOR).ok_or(NameProblem::MissingSeparator)?;
    let description = rest[at + SEPARATOR.len()..].replace('_', " ");
    Ok((&rest[..at], description))
}

/// A file handed to [`resolve`]: its path relative to the migrations folder
/// (`/`-separated) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub contents: Vec<u8>,
}

/// A file Baton saw and deliberately did not run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    pub script: String,
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.script, self.message)
    }
}

/// The migrations of a folder: versioned ones by version, then repeatable
/// ones by description; plus the files that were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub migrations: Vec<Migration>,
    pub notes: Vec<Note>,
}

/// One thing wrong with the migration files. Every variant names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    #[error("{script}: no `__` between version and description; name it like `V1.2__add_users.sql` or `R__refresh_views.sql`")]
    MissingSeparator { script: String },
    #[error(
        "{script}: a versioned migration needs a version before `__`, like `V1.2__add_users.sql`"
    )]
    MissingVersion { script: String },
    #[error("{script}: version `{version}` is not valid: use digits separated by `.` or `_`, like `V1.2__add_users.sql`")]
    BadVersion { script: String, version: String },
    #[error("{script}: a repeatable migration must not have a version; name it like `R__refresh_views.sql`")]
    VersionInRepeatable { script: String },
    #[error("{script}: migration prefixes are upper-case (`V1__…`, `R__…`); Flyway would silently skip this file")]
    LowercasePrefix { script: String },
    #[error("{script}: not valid UTF-8 (byte {byte_offset}); save the file as UTF-8")]
    NotUtf8 { script: String, byte_offset: usize },
    #[error("{script}:{line}: {message}")]
    BadScriptConfig {
        script: String,
        line: usize,
        message: String,
    },
    #[error("version {version} is used by more than one migration: {}; give each file its own version", .scripts.join(", "))]
    DuplicateVersion {
        version: Version,
        scripts: Vec<String>,
    },
    #[error("repeatable migration \"{description}\" is defined more than once: {}; repeatable migrations are identified by their description", .scripts.join(", "))]
    DuplicateRepeatable {
        description: String,
        scripts: Vec<String>,
    },
}

/// Why a migrations folder could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} with the migration files:\n{}", crate::count(.0.len(), "problem"), render(.0))]
    Invalid(Vec<FileProblem>),
}

fn render(problems: &[FileProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lists and reads the migrations folder (recursively) and resolves it.
pub fn discover(folder: &Path) -> Result<Discovery, DiscoveryError> {
    let mut files = Vec::new();
    read_folder(folder, "", &mut files)?;
    resolve(files)
}

fn read_folder(
    folder: &Path,
    prefix: &str,
    files: &mut Vec<SourceFile>,
) -> Result<(), DiscoveryError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DiscoveryError::Io { path, source }
    };
    let mut entries = std::fs::read_dir(folder)
        .map_err(io(folder))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(folder))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = format!("{prefix}{name}");
        // `file_type` does not follow symlinks, so a link loop cannot recurse forever.
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            read_folder(&path, &format!("{relative}/"), files)?;
        } else if name.ends_with(SUFFIX) || name.ends_with(CONFIG_SUFFIX) {
            let contents = std::fs::read(&path).map_err(io(&path))?;
            files.push(SourceFile {
                path: relative,
                contents,
            });
        }
    }
    Ok(())
}

/// Names, checksums and checks files already in memory; reports every
/// problem at once rather than the first.
pub fn resolve(files: Vec<SourceFile>) -> Result<Discovery, DiscoveryError> {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut configs = BTreeMap::new();
    let mut migrations = Vec::new();

    for file in &files {
        if let Some(script) = file.path.strip_suffix(".conf") {
            if file.path.ends_with(CONFIG_SUFFIX) {
                match read_config(&file.path, &file.contents) {
                    Ok(setting) => {
                        configs.insert(script.to_string(), setting);
                    }
                    Err(problem) => problems.push(problem),
                }
                continue;
            }
        }
        let file_name = file.path.rsplit('/').next().unwrap_or(&file.path);
        match parse_name(file_name) {
            Ok(ScriptName::NotSql) => {}
            Ok(ScriptName::Skipped(why)) => notes.push(Note {
                script: file.path.clone(),
                message: why.to_string(),
            }),
            Ok(_) => match std::str::from_utf8(&file.contents) {
                Ok(sql) => match Migration::from_text(&file.path, sql) {
                    Ok(Some(migration)) => migrations.push(migration),
                    Ok(None) => {}
                    Err(problem) => problems.push(problem),
                },
                Err(e) => problems.push(FileProblem::NotUtf8 {
                    script: file.path.clone(),
                    byte_offset: e.valid_up_to(),
                }),
            },
            Err(kind) => problems.push(kind.at(&file.path)),
        }
    }

    for (script, setting) in configs {
        match migrations.iter_mut().find(|m| m.script == script) {
            Some(migration) => migration.execute_in_transaction = setting,
            None => notes.push(Note {
                script: format!("{script}.conf"),
                message: "script configuration without a migration beside it".to_string(),
            }),
        }
    }

    problems.extend(duplicates(&migrations));
    if !problems.is_empty() {
        return Err(DiscoveryError::Invalid(problems));
    }
    migrations.sort_by(|a, b| match (&a.version, &b.version) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.description.cmp(&b.description),
    });
    notes.sort_by(|a, b| a.script.cmp(&b.script));
    Ok(Discovery { migrations, notes })
}

fn duplicates(migrations: &[Migration]) -> Vec<FileProblem> {
    let mut by_version: BTreeMap<&Version, Vec<String>> = BTreeMap::new();
    let mut by_description: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for m in migrations {
        match &m.version {
            Some(v) => by_version.entry(v).or_default().push(m.script.clone()),
            None => by_description
                .entry(&m.description)
                .or_default()
                .push(m.script.clone()),
        }
    }
    let versions = by_version
        .into_iter()
        .filter(|(_, scripts)| scripts.len() > 1)
        .map(|(version, scripts)| FileProblem::DuplicateVersion {
            version: version.clone(),
            scripts,
        });
    let repeatables = by_description
        .into_iter()
        .filter(|(_, scripts)| scripts.len() > 1)
        .map(|(description, scripts)| FileProblem::DuplicateRepeatable {
            description: description.to_string(),
            scripts,
        });
    versions.chain(repeatables).collect()
}

/// Reads a Flyway script configuration file; only `executeInTransaction`
/// matters to Baton, other keys are Flyway's business and pass untouched.
fn read_config(path: &str, contents: &[u8]) -> Result<Option<bool>, FileProblem> {
    let text = std::str::from_utf8(contents).map_err(|e| FileProblem::NotUtf8 {
        script: path.to_string(),
        byte_offset: e.valid_up_to(),
    })?;
    let mut setting = None;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(FileProblem::BadScriptConfig {
                script: path.to_string(),
                line: index + 1,
                message: format!("expected `key=value`, found `{line}`"),
            });
        };
        if key.trim() == "executeInTransaction" {
            setting = match value.trim() {
                "true" => Some(true),
                "false" => Some(false),
                other => {
                    return Err(FileProblem::BadScriptConfig {
                        script: path.to_string(),
                        line: index + 1,
                        message: format!(
                            "executeInTransaction must be `true` or `false`, found `{other}`"
                        ),
                    })
                }
            };
        }
    }
    Ok(setting)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versioned(name: &str) -> (String, String) {
        match parse_name(name) {
            Ok(ScriptName::Versioned {
                version,
                description,
            }) => (version.to_string(), description),
            other => panic!("{name}: expected versioned, got {other:?}"),
        }
    }

    #[test]
    fn versioned_names() {
        assert_eq!(versioned("V1__init.sql"), ("1".into(), "init".into()));
        assert_eq!(
            versioned("V1_2__add_users.sql"),
            ("1.2".into(), "add users".into())
        );
        assert_eq!(versioned("V1.2.3__x.sql"), ("1.2.3".into(), "x".into()));
        assert_eq!(versioned("V2__a__b.sql"), ("2".into(), "a  b".into()));
        assert_eq!(versioned("V3__.sql"), ("3".into(), "".into()));
    }

    #[test]
    fn repeatable_and_skipped_names() {
        assert_eq!(
            parse_name("R__refresh_views.sql"),
            Ok(ScriptName::Repeatable {
                description: "refresh views".into()
            })
        );
        assert!(matches!(
            parse_name("U1__undo.sql"),
            Ok(ScriptName::Skipped(_))
        ));
        assert!(matches!(
            parse_name("B5__base.sql"),
            Ok(ScriptName::Skipped(_))
        ));
        assert!(matches!(
            parse_name("afterMigrate.sql"),
            Ok(ScriptName::Skipped(_))
        ));
        assert!(matches!(parse_name("seed.sql"), Ok(ScriptName::Skipped(_))));
        assert_eq!(parse_name("README.md"), Ok(ScriptName::NotSql));
        assert_eq!(parse_name("V1__x.SQL"), Ok(ScriptName::NotSql));
    }

    #[test]
    fn malformed_names() {
        assert_eq!(
            parse_name("V1_init.sql"),
            Err(NameProblem::MissingSeparator)
        );
        assert_eq!(parse_name("V__init.sql"), Err(NameProblem::MissingVersion));
        assert_eq!(
            parse_name("V1.x__init.sql"),
            Err(NameProblem::BadVersion("1.x".into()))
        );
        assert_eq!(
            parse_name("R1__view.sql"),
            Err(NameProblem::VersionInRepeatable)
        );
        assert_eq!(
            parse_name("v1__init.sql"),
            Err(NameProblem::LowercasePrefix)
        );
        assert_eq!(parse_name("r__view.sql"), Err(NameProblem::LowercasePrefix));
    }
}
