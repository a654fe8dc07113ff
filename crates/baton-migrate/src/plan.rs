//! What the history and the files say together: `info`, `validate`, and what
//! `migrate`, `repair` and `baseline` would write.
//!
//! This module owns Flyway's reconciliation of resolved migrations (the files,
//! from [`crate::discovery`]) with applied ones (the rows of
//! `flyway_schema_history`). It must never run SQL or read files: the runner
//! gives it rows and files, and carries out the plans it returns.
//!
//! Flyway's rules kept here:
//!
//! - **Pairing.** A versioned file pairs with the history rows of the same
//!   version; a repeatable file pairs with the rows of the same description.
//!   Marker rows (`BASELINE`, `SCHEMA`, `DELETE`) never pair with files.
//! - **Delete markers.** A successful `DELETE` row (written by `repair` for a
//!   migration whose file was removed) marks the latest earlier row of the
//!   same version (or, for repeatables, description) as *Deleted*: it no
//!   longer counts as applied, and a file of that version would be pending
//!   again.
//! - **Baseline.** The highest version among baseline rows. Files below it
//!   are *Below Baseline*, a file at exactly that version is
//!   *Ignored (Baseline)*; neither is ever run, and files at or below the
//!   baseline are not compared with history (no checksum checks).
//! - **Out of order.** Walking applied versioned rows by `installed_rank`, a
//!   row whose version is not above every version applied before it was
//!   applied *Out of Order*. A file not yet applied whose version is below
//!   the highest applied one is *Ignored* unless `outOfOrder` is on, in which
//!   case it is *Pending* and `migrate` applies it.
//! - **Target.** With a target version, files above it are *Above Target*:
//!   not applied, not validated.
//! - **Missing and Future.** An applied row with no file is *Future* when its
//!   version is at or above the highest version among the files (a newer
//!   release applied it: normal after a rollback), and *Missing* otherwise
//!   (a file was deleted). Failed variants exist for both.
//! - **Repeatables.** Only the latest run (highest rank) of a description
//!   matters: it is *Success* when its checksum equals the file's, *Outdated*
//!   otherwise, and every older run is *Superseded*. A repeatable is pending
//!   when it never ran or its latest run's checksum differs.
//! - **Validate** reports, one problem per migration: failed migrations;
//!   missing ones (unless ignored); future ones (ignored by default, as
//!   Flyway's default `ignoreMigrationPatterns=*:future`); ignored ones
//!   (unless ignored); pending and outdated ones (unless pending is allowed,
//!   as it is when validating before `migrate`); and, above the baseline, a
//!   type, checksum (versioned only) or description mismatch, in that order.
//! - **Migrate** validates first (pending allowed), refuses while any failed
//!   row remains, then applies pending versioned migrations by version and
//!   then pending repeatables by description, each getting the next
//!   `installed_rank`. With `baseline_on_migrate` and an empty history, it
//!   first writes the baseline marker.
//! - **Repair** removes failed rows, writes a `DELETE` marker for each
//!   *Missing* migration (never for *Future* ones, which belong to a newer
//!   release), and realigns the checksum, description and type of applied
//!   versioned rows to their files. It never touches repeatable checksums: a
//!   changed repeatable is re-run, not realigned.
//! - **Baseline** writes the `<< Flyway Baseline >>` marker into an empty
//!   history; it is a no-op when the same baseline exists and refused when
//!   another baseline or any applied migration exists.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::discovery::Migration;
use crate::history::{
    next_rank, stored_description, HistoryRow, MigrationType, NewHistoryRow, BASELINE_DESCRIPTION,
};
use crate::version::Version;

/// Flyway's `ignoreMigrationPatterns`, as the four states it can ignore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IgnoreStates {
    /// `*:missing` — applied migrations whose file is gone.
    pub missing: bool,
    /// `*:ignored` — files below the highest applied version.
    pub ignored: bool,
    /// `*:pending` — files not applied yet.
    pub pending: bool,
    /// `*:future` — applied migrations newer than every file (Flyway's default).
    pub future: bool,
}

impl Default for IgnoreStates {
    fn default() -> Self {
        IgnoreStates {
            missing: false,
            ignored: false,
            pending: false,
            future: true,
        }
    }
}

/// The Flyway settings that change planning.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Settings {
    /// Flyway's `outOfOrder`: apply files below the highest applied version.
    pub out_of_order: bool,
    /// Flyway's `target`: do not go above this version.
    pub target: Option<Version>,
    pub ignore: IgnoreStates,
    /// Flyway's `validateOnMigrate` is on by default; this turns it off.
    pub skip_validate_on_migrate: bool,
    /// Flyway's `baselineOnMigrate` with its `baselineVersion`: the runner
    /// sets it when the schema already holds tables, and an empty history is
    /// then baselined at this version before migrating.
    pub baseline_on_migrate: Option<Version>,
    /// Scripts allowed to run out of order whatever `out_of_order` says:
    /// Baton's contract migrations, which it defers by design until the
    /// release using what they remove is gone, while later expand migrations
    /// go ahead.
    pub deferred: std::collections::BTreeSet<String>,
    /// How the user names this database to `baton db` (`-e staging`,
    /// `-e staging --url URL`), repeated in the commands a message suggests;
    /// `None` writes `-e ENV`, so that no hint ever runs against the default
    /// environment, production, by accident.
    pub command_args: Option<String>,
}

/// A migration's state, with Flyway's meaning and display name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not applied yet; `migrate` will apply it.
    Pending,
    /// Not applied, above the configured target.
    AboveTarget,
    /// Not applied and never will be: below the baseline.
    BelowBaseline,
    /// Not applied and never will be: at exactly the baseline version.
    BaselineIgnored,
    /// The baseline marker row.
    Baseline,
    /// Not applied, below the highest applied version, and out-of-order is off.
    Ignored,
    /// Applied successfully, file gone.
    Missing,
    /// Applied and failed, file gone.
    MissingFailed,
    Success,
    Failed,
    /// Applied successfully after a higher version had been applied.
    OutOfOrder,
    /// Applied successfully by a newer release: no file here, version above every file.
    Future,
    /// As `Future`, but it failed.
    FutureFailed,
    /// A repeatable whose file changed since its latest run.
    Outdated,
    /// An older run of a repeatable.
    Superseded,
    /// Marked deleted by `repair`.
    Deleted,
}

impl State {
    /// Flyway's display name.
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "Pending",
            State::AboveTarget => "Above Target",
            State::BelowBaseline => "Below Baseline",
            State::BaselineIgnored => "Ignored (Baseline)",
            State::Baseline => "Baseline",
            State::Ignored => "Ignored",
            State::Missing => "Missing",
            State::MissingFailed => "Failed (Missing)",
            State::Success => "Success",
            State::Failed => "Failed",
            State::OutOfOrder => "Out of Order",
            State::Future => "Future",
            State::FutureFailed => "Failed (Future)",
            State::Outdated => "Outdated",
            State::Superseded => "Superseded",
            State::Deleted => "Deleted",
        }
    }

    /// Whether a history row stands behind this state.
    pub fn is_applied(self) -> bool {
        !matches!(
            self,
            State::Pending
                | State::AboveTarget
                | State::BelowBaseline
                | State::BaselineIgnored
                | State::Ignored
        )
    }

    pub fn is_failed(self) -> bool {
        matches!(
            self,
            State::Failed | State::MissingFailed | State::FutureFailed
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One line of `baton db info`: a file, a history row, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InfoEntry {
    pub version: Option<Version>,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: MigrationType,
    pub script: String,
    pub state: State,
    /// The history's checksum when applied, the file's otherwise.
    pub checksum: Option<i32>,
    /// The file's checksum, when there is a file.
    pub file_checksum: Option<i32>,
    pub installed_rank: Option<i32>,
    pub installed_on: Option<String>,
    pub installed_by: Option<String>,
    pub execution_time: Option<i32>,
    #[serde(skip)]
    file: Option<usize>,
    #[serde(skip)]
    row: Option<usize>,
}

/// The reconciled view of files and history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Info {
    /// Below-baseline files first, then history in `installed_rank` order
    /// (ignored files placed among them by version), then pending versioned
    /// files by version, then pending repeatables by description.
    pub entries: Vec<InfoEntry>,
    /// The highest applied version, as Flyway's "current version".
    pub current: Option<Version>,
    pub baseline: Option<Version>,
    /// The highest version applied in order (before out-of-order ones).
    #[serde(skip)]
    last_applied: Option<Version>,
    #[serde(skip)]
    last_resolved: Option<Version>,
}

impl Info {
    pub fn pending(&self) -> impl Iterator<Item = &InfoEntry> {
        self.entries.iter().filter(|e| e.state == State::Pending)
    }
}

/// Reconciles files with history rows (any order) under `settings`.
pub fn info(migrations: &[Migration], history: &[HistoryRow], settings: &Settings) -> Info {
    let mut order: Vec<usize> = (0..history.len()).collect();
    order.sort_by_key(|&i| history[i].installed_rank);

    let deleted = deleted_rows(history, &order);
    let baseline = history
        .iter()
        .filter(|row| row.kind.is_baseline())
        .filter_map(|row| row.version.clone())
        .max();
    let last_resolved = migrations.iter().filter_map(|m| m.version.clone()).max();

    let mut last_applied: Option<Version> = None;
    let mut out_of_order = vec![false; history.len()];
    for &i in &order {
        let row = &history[i];
        let Some(version) = &row.version else {
            continue;
        };
        if row.kind == MigrationType::Delete {
            continue;
        }
        if last_applied.as_ref().is_none_or(|last| version > last) {
            if !deleted[i] {
                last_applied = Some(version.clone());
            }
        } else {
            out_of_order[i] = true;
        }
    }

    let mut latest_run: HashMap<&str, i32> = HashMap::new();
    for row in history {
        if row.version.is_none() && row.kind != MigrationType::Delete && !row.kind.is_synthetic() {
            let rank = latest_run
                .entry(row.description.as_str())
                .or_insert(row.installed_rank);
            *rank = (*rank).max(row.installed_rank);
        }
    }

    let versioned: HashMap<&Version, usize> = migrations
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.version.as_ref().map(|v| (v, i)))
        .collect();
    let repeatable: HashMap<&str, usize> = migrations
        .iter()
        .enumerate()
        .filter(|(_, m)| m.is_repeatable())
        .map(|(i, m)| (m.description.as_str(), i))
        .collect();

    let mut applied = Vec::new();
    let mut file_applied = vec![false; migrations.len()];
    for &i in &order {
        let row = &history[i];
        if row.kind == MigrationType::Delete {
            continue;
        }
        let file = if row.kind.is_synthetic() {
            None
        } else {
            match &row.version {
                Some(v) => versioned.get(v).copied(),
                None => repeatable.get(row.description.as_str()).copied(),
            }
        };
        let state = if deleted[i] {
            State::Deleted
        } else if row.kind.is_baseline() {
            State::Baseline
        } else if row.kind == MigrationType::Schema {
            State::Success
        } else if file.is_none() {
            let missing = match &row.version {
                None => true,
                Some(v) => last_resolved.as_ref().is_some_and(|last| v < last),
            };
            match (missing, row.success) {
                (true, true) => State::Missing,
                (true, false) => State::MissingFailed,
                (false, true) => State::Future,
                (false, false) => State::FutureFailed,
            }
        } else if !row.success {
            State::Failed
        } else if row.version.is_none() {
            let latest = latest_run.get(row.description.as_str()) == Some(&row.installed_rank);
            let same = file.map(|f| migrations[f].checksum) == row.checksum;
            match (latest, same) {
                (true, true) => State::Success,
                (true, false) => State::Outdated,
                (false, _) => State::Superseded,
            }
        } else if out_of_order[i] {
            State::OutOfOrder
        } else {
            State::Success
        };
        if let Some(f) = file {
            if state != State::Deleted {
                let is_current_run = match &row.version {
                    Some(_) => true,
                    None => {
                        latest_run.get(row.description.as_str()) == Some(&row.installed_rank)
                            && row.checksum == Some(migrations[f].checksum)
                    }
                };
                if is_current_run {
                    file_applied[f] = true;
                }
            }
        }
        applied.push(entry_for_row(history, i, file, migrations, state));
    }

    let mut unapplied_versioned = Vec::new();
    let mut pending_repeatable = Vec::new();
    for (f, migration) in migrations.iter().enumerate() {
        if file_applied[f] {
            continue;
        }
        match &migration.version {
            Some(v) => {
                let state = if baseline.as_ref().is_some_and(|b| v < b) {
                    State::BelowBaseline
                } else if baseline.as_ref() == Some(v) {
                    State::BaselineIgnored
                } else if settings.target.as_ref().is_some_and(|t| v > t) {
                    State::AboveTarget
                } else if last_applied.as_ref().is_some_and(|last| v < last)
                    && !settings.out_of_order
                    && !settings.deferred.contains(&migration.script)
                {
                    State::Ignored
                } else {
                    State::Pending
                };
                unapplied_versioned.push(entry_for_file(migrations, f, state));
            }
            None => pending_repeatable.push(entry_for_file(migrations, f, State::Pending)),
        }
    }
    unapplied_versioned.sort_by(|a, b| a.version.cmp(&b.version));
    pending_repeatable.sort_by(|a, b| a.description.cmp(&b.description));

    let (below, rest): (Vec<_>, Vec<_>) = unapplied_versioned
        .into_iter()
        .partition(|e| matches!(e.state, State::BelowBaseline | State::BaselineIgnored));
    let (ignored, later): (Vec<_>, Vec<_>) =
        rest.into_iter().partition(|e| e.state == State::Ignored);

    let mut entries = below;
    let mut ignored = ignored.into_iter().peekable();
    for entry in applied {
        while let (Some(next), Some(v)) = (ignored.peek(), entry.version.as_ref()) {
            if next.version.as_ref().is_some_and(|nv| nv < v) {
                entries.extend(ignored.next());
            } else {
                break;
            }
        }
        entries.push(entry);
    }
    entries.extend(ignored);
    entries.extend(later);
    entries.extend(pending_repeatable);

    let current = entries
        .iter()
        .filter(|e| e.state.is_applied() && e.state != State::Deleted)
        .filter_map(|e| e.version.clone())
        .max();

    Info {
        entries,
        current,
        baseline,
        last_applied,
        last_resolved,
    }
}

/// Which rows a later `DELETE` marker cancels.
fn deleted_rows(history: &[HistoryRow], order: &[usize]) -> Vec<bool> {
    let mut deleted = vec![false; history.len()];
    for (position, &i) in order.iter().enumerate() {
        let marker = &history[i];
        if marker.kind != MigrationType::Delete || !marker.success {
            continue;
        }
        let target = order[..position].iter().rev().copied().find(|&j| {
            let row = &history[j];
            !row.kind.is_synthetic()
                && !deleted[j]
                && match &marker.version {
                    Some(v) => row.version.as_ref() == Some(v),
                    None => row.version.is_none() && row.description == marker.description,
                }
        });
        if let Some(j) = target {
            deleted[j] = true;
        }
    }
    deleted
}

fn entry_for_row(
    history: &[HistoryRow],
    i: usize,
    file: Option<usize>,
    migrations: &[Migration],
    state: State,
) -> InfoEntry {
    let row = &history[i];
    InfoEntry {
        version: row.version.clone(),
        description: row.description.clone(),
        kind: row.kind.clone(),
        script: row.script.clone(),
        state,
        checksum: row.checksum,
        file_checksum: file.map(|f| migrations[f].checksum),
        installed_rank: Some(row.installed_rank),
        installed_on: Some(row.installed_on.clone()),
        installed_by: Some(row.installed_by.clone()),
        execution_time: Some(row.execution_time),
        file,
        row: Some(i),
    }
}

fn entry_for_file(migrations: &[Migration], f: usize, state: State) -> InfoEntry {
    let m = &migrations[f];
    InfoEntry {
        version: m.version.clone(),
        description: m.description.clone(),
        kind: MigrationType::Sql,
        script: m.script.clone(),
        state,
        checksum: Some(m.checksum),
        file_checksum: Some(m.checksum),
        installed_rank: None,
        installed_on: None,
        installed_by: None,
        execution_time: None,
        file: Some(f),
        row: None,
    }
}

/// Which migration a message is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Version(Version),
    Repeatable(String),
}

impl Subject {
    fn of(version: &Option<Version>, description: &str) -> Subject {
        match version {
            Some(v) => Subject::Version(v.clone()),
            None => Subject::Repeatable(description.to_string()),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Version(v) => write!(f, "version {v}"),
            Subject::Repeatable(d) => write!(f, "repeatable migration \"{d}\""),
        }
    }
}

/// One reason the files and the history disagree. Each names the migration
/// and its script; its way out is [`ValidationError::explain`]ed with the
/// arguments that name the database (Display writes them `-e ENV`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ValidationError {
    Failed {
        subject: Subject,
        script: String,
    },
    Missing {
        subject: Subject,
        script: String,
    },
    Future {
        subject: Subject,
        script: String,
    },
    Pending {
        subject: Subject,
        script: String,
    },
    Ignored {
        subject: Subject,
        script: String,
        latest_applied: Version,
    },
    Outdated {
        subject: Subject,
        script: String,
    },
    ChecksumMismatch {
        subject: Subject,
        script: String,
        applied: Option<i32>,
        resolved: i32,
    },
    DescriptionMismatch {
        subject: Subject,
        script: String,
        applied: String,
        resolved: String,
    },
    TypeMismatch {
        subject: Subject,
        script: String,
        applied: MigrationType,
        resolved: MigrationType,
    },
}

/// `args` as a command line shows them: `-e ENV` when unknown.
fn shown_args(args: Option<&str>) -> String {
    match args.map(str::trim) {
        Some("") => String::new(),
        Some(args) => format!(" {args}"),
        None => " -e ENV".to_string(),
    }
}

/// A `baton db` command line naming the database as `args` do
/// ([`Settings::command_args`]): `baton db repair -e staging`.
pub fn db_command(subcommand: &str, args: Option<&str>) -> String {
    format!("baton db {subcommand}{}", shown_args(args))
}

impl ValidationError {
    /// The problem and its way out; a suggested `baton db` command names
    /// the database as `args` does (`-e staging`), `-e ENV` when `None`.
    pub fn explain(&self, args: Option<&str>) -> String {
        let args = shown_args(args);
        match self {
            ValidationError::Failed { subject, script } => format!("{subject} ({script}) failed when it was applied; undo whatever it half-did, then run `baton db repair{args}` to remove the failed row and migrate again"),
            ValidationError::Missing { subject, script } => format!("{subject} ({script}) was applied but its file is gone; restore the file, or run `baton db repair{args}` to mark it deleted if you removed it on purpose"),
            ValidationError::Future { subject, script } => format!("{subject} ({script}) was applied by a newer release and has no file here; deploy that release again, or ignore future migrations"),
            ValidationError::Pending { subject, script } => format!("{subject} ({script}) has not been applied; run `baton db migrate{args}`"),
            ValidationError::Ignored { subject, script, latest_applied } => format!("{subject} ({script}) is below version {latest_applied}, which is already applied, so it would never run; give it a version above {latest_applied}, or turn on out-of-order migrations"),
            ValidationError::Outdated { subject, script } => format!("{subject} ({script}) changed since it last ran and will be re-applied; run `baton db migrate{args}`"),
            ValidationError::ChecksumMismatch { subject, script, applied, resolved } => format!(
                "checksum mismatch for {subject} ({script}): the database recorded {}, the file now gives {resolved}; applied migrations must not change, so revert the edit (or run `baton db repair{args}` to accept the file as it is)",
                applied.map_or("none".to_string(), |c| c.to_string())
            ),
            ValidationError::DescriptionMismatch { subject, script, applied, resolved } => format!("description mismatch for {subject} ({script}): the database recorded \"{applied}\", the file name now says \"{resolved}\"; rename the file back, or run `baton db repair{args}` to record the new description"),
            ValidationError::TypeMismatch { subject, script, applied, resolved } => format!("type mismatch for {subject} ({script}): the database recorded {applied}, the file is {resolved}; a migration cannot change kind once applied"),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explain(None))
    }
}

impl std::error::Error for ValidationError {}

/// Checks files against history; an empty list means valid. `allow_pending`
/// is how `migrate` validates (pending work is the point); the `validate`
/// command passes `false`, as Flyway does, unless pending is ignored. A
/// pending `deferred` script (Baton's contract half, left on purpose until
/// the old release is gone) is never a problem.
pub fn validate(
    migrations: &[Migration],
    history: &[HistoryRow],
    settings: &Settings,
    allow_pending: bool,
) -> Vec<ValidationError> {
    let info = info(migrations, history, settings);
    validate_info(&info, migrations, history, settings, allow_pending)
}

fn validate_info(
    info: &Info,
    migrations: &[Migration],
    history: &[HistoryRow],
    settings: &Settings,
    allow_pending: bool,
) -> Vec<ValidationError> {
    let allow_pending = allow_pending || settings.ignore.pending;
    info.entries
        .iter()
        .filter_map(|entry| {
            validate_entry(entry, info, migrations, history, settings, allow_pending)
        })
        .collect()
}

fn validate_entry(
    entry: &InfoEntry,
    info: &Info,
    migrations: &[Migration],
    history: &[HistoryRow],
    settings: &Settings,
    allow_pending: bool,
) -> Option<ValidationError> {
    let subject = Subject::of(&entry.version, &entry.description);
    let script = entry.script.clone();
    match entry.state {
        State::AboveTarget | State::Deleted => return None,
        State::FutureFailed if settings.ignore.future => return None,
        state if state.is_failed() => return Some(ValidationError::Failed { subject, script }),
        State::Missing if !settings.ignore.missing && entry.version.is_some() => {
            return Some(ValidationError::Missing { subject, script })
        }
        State::Future if !settings.ignore.future => {
            return Some(ValidationError::Future { subject, script })
        }
        State::Pending if !allow_pending && !settings.deferred.contains(&entry.script) => {
            return Some(ValidationError::Pending { subject, script })
        }
        State::Ignored if !settings.ignore.ignored => {
            let latest_applied = info.last_applied.clone()?;
            return Some(ValidationError::Ignored {
                subject,
                script,
                latest_applied,
            });
        }
        State::Outdated if !allow_pending => {
            return Some(ValidationError::Outdated { subject, script })
        }
        _ => {}
    }
    let (file, row) = (entry.file?, entry.row?);
    let (file, row) = (&migrations[file], &history[row]);
    let above_baseline = match (&row.version, &info.baseline) {
        (Some(v), Some(b)) => v > b,
        _ => true,
    };
    if !above_baseline {
        return None;
    }
    let script = file.script.clone();
    if row.kind != MigrationType::Sql {
        return Some(ValidationError::TypeMismatch {
            subject,
            script,
            applied: row.kind.clone(),
            resolved: MigrationType::Sql,
        });
    }
    if row.version.is_some() && row.checksum != Some(file.checksum) {
        return Some(ValidationError::ChecksumMismatch {
            subject,
            script,
            applied: row.checksum,
            resolved: file.checksum,
        });
    }
    let resolved = stored_description(&file.description);
    if resolved != row.description {
        return Some(ValidationError::DescriptionMismatch {
            subject,
            script,
            applied: row.description.clone(),
            resolved,
        });
    }
    None
}

/// One migration `migrate` will run, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub migration: Migration,
    /// The rank its history row gets.
    pub installed_rank: i32,
    /// Applied below a higher version already applied (`outOfOrder` on).
    pub out_of_order: bool,
    /// A repeatable migration running again because its file changed.
    pub rerun: bool,
}

impl Step {
    /// The history row to write once the step has run.
    pub fn history_row(
        &self,
        installed_by: &str,
        execution_time: i32,
        success: bool,
    ) -> NewHistoryRow {
        NewHistoryRow {
            installed_rank: self.installed_rank,
            version: self.migration.version.clone(),
            description: stored_description(&self.migration.description),
            kind: MigrationType::Sql,
            script: self.migration.script.clone(),
            checksum: Some(self.migration.checksum),
            installed_by: installed_by.to_string(),
            execution_time,
            success,
        }
    }
}

/// What `migrate` would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigratePlan {
    /// Written first when `baseline_on_migrate` applies.
    pub baseline: Option<NewHistoryRow>,
    pub steps: Vec<Step>,
    /// The version the database is at before migrating.
    pub current: Option<Version>,
    /// Worth telling the user, not worth refusing (e.g. future migrations).
    pub warnings: Vec<String>,
}

/// Why `migrate` refuses to run. `args` name the database in the commands
/// suggested ([`Settings::command_args`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    #[error("validation failed, nothing was migrated:\n{}", render(.problems, .args.as_deref()))]
    Invalid {
        problems: Vec<ValidationError>,
        args: Option<String>,
    },
    #[error("{subject} ({script}) failed in an earlier run; undo whatever it half-did, then run `baton db repair{}` and migrate again", shown_args(.args.as_deref()))]
    FailedMigration {
        subject: Subject,
        script: String,
        args: Option<String>,
    },
}

fn render(problems: &[ValidationError], args: Option<&str>) -> String {
    problems
        .iter()
        .map(|p| format!("  - {}", p.explain(args)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Plans `migrate`: which files run, in which order, with which ranks.
pub fn plan_migrate(
    migrations: &[Migration],
    history: &[HistoryRow],
    settings: &Settings,
    installed_by: &str,
) -> Result<MigratePlan, MigrateError> {
    let mut rows = history.to_vec();
    let mut baseline = None;
    if let Some(version) = &settings.baseline_on_migrate {
        if history.iter().all(|row| row.kind == MigrationType::Schema) {
            let row = baseline_row(history, version, BASELINE_DESCRIPTION, installed_by);
            rows.push(HistoryRow {
                installed_rank: row.installed_rank,
                version: row.version.clone(),
                description: row.description.clone(),
                kind: row.kind.clone(),
                script: row.script.clone(),
                checksum: row.checksum,
                installed_by: row.installed_by.clone(),
                installed_on: String::new(),
                execution_time: row.execution_time,
                success: row.success,
            });
            baseline = Some(row);
        }
    }

    let info = info(migrations, &rows, settings);
    if !settings.skip_validate_on_migrate {
        let problems = validate_info(&info, migrations, &rows, settings, true);
        if !problems.is_empty() {
            return Err(MigrateError::Invalid {
                problems,
                args: settings.command_args.clone(),
            });
        }
    }

    let mut warnings = Vec::new();
    for entry in &info.entries {
        let subject = Subject::of(&entry.version, &entry.description);
        match entry.state {
            State::FutureFailed if settings.ignore.future => warnings.push(format!(
                "{subject} ({}) failed in a newer release; that release must repair it",
                entry.script
            )),
            state if state.is_failed() => {
                return Err(MigrateError::FailedMigration {
                    subject,
                    script: entry.script.clone(),
                    args: settings.command_args.clone(),
                })
            }
            _ => {}
        }
    }
    if let (Some(current), Some(newest)) = (&info.current, &info.last_resolved) {
        if current > newest {
            warnings.push(format!(
                "the database is at version {current}, newer than the newest migration here ({newest}): a newer release migrated it"
            ));
        }
    }

    let mut rank = next_rank(&rows);
    let mut steps = Vec::new();
    for entry in info.pending() {
        let Some(f) = entry.file else { continue };
        let migration = &migrations[f];
        let out_of_order = match (&migration.version, &info.last_applied) {
            (Some(v), Some(last)) => v < last,
            _ => false,
        };
        let rerun = migration.is_repeatable()
            && rows
                .iter()
                .any(|row| row.version.is_none() && row.description == migration.description);
        steps.push(Step {
            migration: migration.clone(),
            installed_rank: rank,
            out_of_order,
            rerun,
        });
        rank = rank.saturating_add(1);
    }

    Ok(MigratePlan {
        baseline,
        steps,
        current: info.current,
        warnings,
    })
}

/// A history row whose checksum, description or type `repair` rewrites to
/// match its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Realignment {
    pub before: HistoryRow,
    pub checksum: i32,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: MigrationType,
}

/// What `repair` would change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RepairPlan {
    /// Rows to delete (`success = false`).
    pub remove_failed: Vec<HistoryRow>,
    /// `DELETE` markers to insert for migrations whose files are gone.
    pub mark_deleted: Vec<NewHistoryRow>,
    /// Rows to update in place.
    pub realign: Vec<Realignment>,
}

impl RepairPlan {
    pub fn is_empty(&self) -> bool {
        self.remove_failed.is_empty() && self.mark_deleted.is_empty() && self.realign.is_empty()
    }
}

/// Plans `repair`.
pub fn plan_repair(
    migrations: &[Migration],
    history: &[HistoryRow],
    settings: &Settings,
    installed_by: &str,
) -> RepairPlan {
    let info = info(migrations, history, settings);
    let mut plan = RepairPlan {
        remove_failed: history.iter().filter(|r| !r.success).cloned().collect(),
        ..RepairPlan::default()
    };
    let mut rank = next_rank(history);
    for entry in &info.entries {
        let Some(row) = entry.row.map(|r| &history[r]) else {
            continue;
        };
        if entry.state == State::Missing {
            plan.mark_deleted.push(NewHistoryRow {
                installed_rank: rank,
                version: row.version.clone(),
                description: row.description.clone(),
                kind: MigrationType::Delete,
                script: row.script.clone(),
                checksum: row.checksum,
                installed_by: installed_by.to_string(),
                execution_time: 0,
                success: true,
            });
            rank = rank.saturating_add(1);
        }
        let Some(file) = entry.file.map(|f| &migrations[f]) else {
            continue;
        };
        let realignable = row.version.is_some()
            && row.success
            && !row.kind.is_synthetic()
            && !matches!(entry.state, State::Ignored | State::Deleted);
        let description = stored_description(&file.description);
        if realignable
            && (row.checksum != Some(file.checksum)
                || row.description != description
                || row.kind != MigrationType::Sql)
        {
            plan.realign.push(Realignment {
                before: row.clone(),
                checksum: file.checksum,
                description,
                kind: MigrationType::Sql,
            });
        }
    }
    plan
}

/// Why `baseline` refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaselineError {
    #[error("the history is already baselined at version {existing}; it cannot be baselined again at {requested}")]
    AlreadyBaselined {
        existing: Version,
        requested: Version,
    },
    #[error("the history already records {}; baseline only applies to a database Baton has never migrated", crate::count(*.applied, "migration"))]
    NotEmpty { applied: usize },
}

/// Plans `baseline`: the marker row to insert, or `None` when the same
/// baseline is already there.
pub fn plan_baseline(
    history: &[HistoryRow],
    version: &Version,
    description: Option<&str>,
    installed_by: &str,
) -> Result<Option<NewHistoryRow>, BaselineError> {
    if let Some(existing) = history
        .iter()
        .filter(|row| row.kind.is_baseline())
        .find_map(|row| row.version.clone())
    {
        if &existing == version {
            return Ok(None);
        }
        return Err(BaselineError::AlreadyBaselined {
            existing,
            requested: version.clone(),
        });
    }
    let applied = history
        .iter()
        .filter(|row| row.kind != MigrationType::Schema)
        .count();
    if applied > 0 {
        return Err(BaselineError::NotEmpty { applied });
    }
    Ok(Some(baseline_row(
        history,
        version,
        description.unwrap_or(BASELINE_DESCRIPTION),
        installed_by,
    )))
}

fn baseline_row(
    history: &[HistoryRow],
    version: &Version,
    description: &str,
    installed_by: &str,
) -> NewHistoryRow {
    NewHistoryRow {
        installed_rank: next_rank(history),
        version: Some(version.clone()),
        description: stored_description(description),
        kind: MigrationType::Baseline,
        script: stored_description(description),
        checksum: None,
        installed_by: installed_by.to_string(),
        execution_time: 0,
        success: true,
    }
}
