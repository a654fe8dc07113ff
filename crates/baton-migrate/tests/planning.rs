//! `info`, `validate`, `migrate`, `repair` and `baseline` over files and
//! history rows, in the situations a team meets.

mod common;

use baton_migrate::history::BASELINE_DESCRIPTION;
use baton_migrate::plan::{BaselineError, IgnoreStates, MigrateError, Subject};
use baton_migrate::{
    info, plan_baseline, plan_migrate, plan_repair, validate, HistoryRow, Migration, MigrationType,
    Settings, State, ValidationError,
};
use common::{applied, baseline, failed, migration, v};

fn files() -> Vec<Migration> {
    vec![
        migration(
            "V1__init.sql",
            "CREATE TABLE users (id bigint PRIMARY KEY);",
        ),
        migration("V1.9__nine.sql", "SELECT 19;"),
        migration("V1.10__ten.sql", "SELECT 110;"),
        migration(
            "V2__add_email.sql",
            "ALTER TABLE users ADD COLUMN email text;",
        ),
        migration("R__b_views.sql", "CREATE OR REPLACE VIEW b AS SELECT 1;"),
        migration("R__a_views.sql", "CREATE OR REPLACE VIEW a AS SELECT 1;"),
    ]
}

fn states(
    migrations: &[Migration],
    history: &[HistoryRow],
    settings: &Settings,
) -> Vec<(String, State)> {
    info(migrations, history, settings)
        .entries
        .iter()
        .map(|e| (e.script.clone(), e.state))
        .collect()
}

/// Turns a plan's steps into the history rows the runner would write.
fn run(plan: &baton_migrate::MigratePlan) -> Vec<HistoryRow> {
    plan.steps
        .iter()
        .map(|step| {
            let row = step.history_row("deploy", 5, true);
            HistoryRow {
                installed_rank: row.installed_rank,
                version: row.version,
                description: row.description,
                kind: row.kind,
                script: row.script,
                checksum: row.checksum,
                installed_by: row.installed_by,
                installed_on: "now".into(),
                execution_time: row.execution_time,
                success: row.success,
            }
        })
        .collect()
}

#[test]
fn a_fresh_database_gets_every_migration_versioned_first_then_repeatables() {
    let files = files();
    let plan = plan_migrate(&files, &[], &Settings::default(), "deploy").expect("plan");
    let order: Vec<(&str, i32)> = plan
        .steps
        .iter()
        .map(|s| (s.migration.script.as_str(), s.installed_rank))
        .collect();
    assert_eq!(
        order,
        vec![
            ("V1__init.sql", 1),
            ("V1.9__nine.sql", 2),
            ("V1.10__ten.sql", 3),
            ("V2__add_email.sql", 4),
            ("R__a_views.sql", 5),
            ("R__b_views.sql", 6),
        ]
    );
    assert!(plan.steps.iter().all(|s| !s.out_of_order && !s.rerun));
    assert_eq!(plan.current, None);

    let problems = validate(&files, &[], &Settings::default(), false);
    assert_eq!(
        problems.len(),
        6,
        "validate (unlike migrate) reports pending work"
    );
    assert!(
        problems[0].to_string().contains("V1__init.sql"),
        "{}",
        problems[0]
    );

    let history = run(&plan);
    assert!(validate(&files, &history, &Settings::default(), false).is_empty());
    let after = info(&files, &history, &Settings::default());
    assert_eq!(after.current, Some(v("2")));
    assert!(after.entries.iter().all(|e| e.state == State::Success));
    assert!(
        plan_migrate(&files, &history, &Settings::default(), "deploy")
            .expect("plan")
            .steps
            .is_empty()
    );
}

#[test]
fn history_rows_written_by_a_step_carry_flyways_columns() {
    let files = files();
    let plan = plan_migrate(&files, &[], &Settings::default(), "deploy").expect("plan");
    let row = plan.steps[3].history_row("alice", 42, false);
    assert_eq!(row.installed_rank, 4);
    assert_eq!(row.version, Some(v("2")));
    assert_eq!(row.description, "add email");
    assert_eq!(row.kind, MigrationType::Sql);
    assert_eq!(row.script, "V2__add_email.sql");
    assert_eq!(row.checksum, Some(files[3].checksum));
    assert_eq!(
        (row.installed_by.as_str(), row.execution_time, row.success),
        ("alice", 42, false)
    );
}

#[test]
fn an_edited_applied_migration_is_a_checksum_mismatch_that_repair_accepts() {
    let original = files();
    let history: Vec<_> = original[..4]
        .iter()
        .enumerate()
        .map(|(i, m)| applied(i as i32 + 1, m))
        .collect();
    let mut edited = original.clone();
    edited[3] = migration(
        "V2__add_email.sql",
        "ALTER TABLE users ADD COLUMN email varchar(200);",
    );

    let problems = validate(&edited, &history, &Settings::default(), true);
    assert_eq!(
        problems,
        vec![ValidationError::ChecksumMismatch {
            subject: Subject::Version(v("2")),
            script: "V2__add_email.sql".into(),
            applied: Some(original[3].checksum),
            resolved: edited[3].checksum,
        }]
    );
    let message = problems[0].to_string();
    assert!(
        message.contains("version 2") && message.contains("V2__add_email.sql"),
        "{message}"
    );

    // The way out names the database as the user did; unknown, it says
    // `-e ENV` rather than a command that would run against production.
    assert!(
        problems[0]
            .explain(Some("-e staging"))
            .contains("`baton db repair -e staging`"),
        "{}",
        problems[0].explain(Some("-e staging"))
    );
    assert!(message.contains("`baton db repair -e ENV`"), "{message}");

    let refused =
        plan_migrate(&edited, &history, &Settings::default(), "deploy").expect_err("refused");
    assert!(matches!(refused, MigrateError::Invalid { .. }));
    assert!(refused.to_string().contains("V2__add_email.sql"));
    let staging = Settings {
        command_args: Some("-e staging".into()),
        ..Settings::default()
    };
    let refused = plan_migrate(&edited, &history, &staging, "deploy").expect_err("refused");
    assert!(
        refused.to_string().contains("`baton db repair -e staging`"),
        "{refused}"
    );

    let repair = plan_repair(&edited, &history, &Settings::default(), "deploy");
    assert_eq!(repair.realign.len(), 1);
    assert_eq!(repair.realign[0].before.installed_rank, 4);
    assert_eq!(repair.realign[0].checksum, edited[3].checksum);
    assert!(repair.remove_failed.is_empty() && repair.mark_deleted.is_empty());

    let mut repaired = history.clone();
    repaired[3].checksum = Some(repair.realign[0].checksum);
    assert!(validate(&edited, &repaired, &Settings::default(), true).is_empty());
    assert!(plan_repair(&edited, &repaired, &Settings::default(), "deploy").is_empty());
}

#[test]
fn a_renamed_file_is_a_description_mismatch_that_repair_realigns() {
    let files = files();
    let history = vec![applied(1, &files[0])];
    let renamed = vec![migration("V1__create_users.sql", &files[0].sql)];
    let problems = validate(&renamed, &history, &Settings::default(), true);
    assert!(
        matches!(&problems[..], [ValidationError::DescriptionMismatch { applied, resolved, .. }] if applied == "init" && resolved == "create users")
    );
    let repair = plan_repair(&renamed, &history, &Settings::default(), "deploy");
    assert_eq!(repair.realign[0].description, "create users");
}

#[test]
fn a_failed_migration_blocks_migrate_until_repair_removes_it() {
    let files = files();
    let history = vec![
        applied(1, &files[0]),
        applied(2, &files[1]),
        failed(3, &files[2]),
    ];
    let entries = states(&files, &history, &Settings::default());
    assert_eq!(entries[2], ("V1.10__ten.sql".into(), State::Failed));

    let problems = validate(&files, &history, &Settings::default(), true);
    assert!(
        matches!(&problems[..], [ValidationError::Failed { script, .. }] if script == "V1.10__ten.sql")
    );
    assert!(problems[0].to_string().contains("baton db repair"));
    let refused = plan_migrate(
        &files,
        &history,
        &Settings {
            skip_validate_on_migrate: true,
            ..Settings::default()
        },
        "deploy",
    )
    .expect_err("failed row");
    assert!(
        matches!(refused, MigrateError::FailedMigration { .. }),
        "{refused}"
    );

    let repair = plan_repair(&files, &history, &Settings::default(), "deploy");
    assert_eq!(repair.remove_failed, vec![history[2].clone()]);
    let repaired = &history[..2];
    let plan = plan_migrate(&files, repaired, &Settings::default(), "deploy").expect("plan");
    assert_eq!(plan.steps[0].migration.script, "V1.10__ten.sql");
    assert_eq!(plan.steps[0].installed_rank, 3);
}

#[test]
fn a_deleted_file_is_missing_until_repair_marks_it_deleted() {
    let files = files();
    let history: Vec<_> = files[..4]
        .iter()
        .enumerate()
        .map(|(i, m)| applied(i as i32 + 1, m))
        .collect();
    let mut remaining = files.clone();
    remaining.remove(1); // V1.9 deleted from the repository

    let entries = states(&remaining, &history, &Settings::default());
    assert_eq!(entries[1], ("V1.9__nine.sql".into(), State::Missing));
    let problems = validate(&remaining, &history, &Settings::default(), true);
    assert!(
        matches!(&problems[..], [ValidationError::Missing { script, .. }] if script == "V1.9__nine.sql")
    );
    let ignoring = Settings {
        ignore: IgnoreStates {
            missing: true,
            ..IgnoreStates::default()
        },
        ..Settings::default()
    };
    assert!(validate(&remaining, &history, &ignoring, true).is_empty());

    let repair = plan_repair(&remaining, &history, &Settings::default(), "deploy");
    assert_eq!(repair.mark_deleted.len(), 1);
    let marker = &repair.mark_deleted[0];
    assert_eq!(
        (
            marker.kind.clone(),
            marker.version.clone(),
            marker.installed_rank
        ),
        (MigrationType::Delete, Some(v("1.9")), 5)
    );

    let mut repaired = history.clone();
    repaired.push(HistoryRow {
        installed_rank: marker.installed_rank,
        version: marker.version.clone(),
        description: marker.description.clone(),
        kind: marker.kind.clone(),
        script: marker.script.clone(),
        checksum: marker.checksum,
        installed_by: marker.installed_by.clone(),
        installed_on: "now".into(),
        execution_time: 0,
        success: true,
    });
    let entries = states(&remaining, &repaired, &Settings::default());
    assert_eq!(entries[1], ("V1.9__nine.sql".into(), State::Deleted));
    assert!(validate(&remaining, &repaired, &Settings::default(), true).is_empty());
    // Restoring the file after it was marked deleted makes it runnable again (out of order).
    let restored = info(
        &files,
        &repaired,
        &Settings {
            out_of_order: true,
            ..Settings::default()
        },
    );
    assert!(restored.pending().any(|e| e.script == "V1.9__nine.sql"));
}

#[test]
fn after_a_rollback_the_newer_releases_migrations_are_future_and_left_alone() {
    let files = files();
    let newer = migration("V3__from_newer_release.sql", "SELECT 3;");
    let history: Vec<_> = files[..4]
        .iter()
        .chain(std::iter::once(&newer))
        .enumerate()
        .map(|(i, m)| applied(i as i32 + 1, m))
        .collect();
    let old_release = &files[..4];
    let entries = states(old_release, &history, &Settings::default());
    assert_eq!(
        entries[4],
        ("V3__from_newer_release.sql".into(), State::Future)
    );
    assert!(validate(old_release, &history, &Settings::default(), true).is_empty());

    let plan = plan_migrate(old_release, &history, &Settings::default(), "deploy").expect("plan");
    assert!(plan.steps.is_empty());
    assert!(plan.warnings[0].contains("newer"), "{:?}", plan.warnings);
    assert!(plan_repair(old_release, &history, &Settings::default(), "deploy").is_empty());

    let strict = Settings {
        ignore: IgnoreStates {
            future: false,
            ..IgnoreStates::default()
        },
        ..Settings::default()
    };
    assert!(matches!(
        &validate(old_release, &history, &strict, true)[..],
        [ValidationError::Future { .. }]
    ));
}

#[test]
fn a_late_merged_lower_version_is_ignored_unless_out_of_order_is_on() {
    let v1 = migration("V1__init.sql", "SELECT 1;");
    let v2 = migration("V2__late_branch.sql", "SELECT 2;");
    let v3 = migration("V3__main.sql", "SELECT 3;");
    let v4 = migration("V4__next.sql", "SELECT 4;");
    let files = vec![v1.clone(), v2.clone(), v3.clone(), v4.clone()];
    let history = vec![applied(1, &v1), applied(2, &v3)];

    let entries = states(&files, &history, &Settings::default());
    assert_eq!(
        entries,
        vec![
            ("V1__init.sql".into(), State::Success),
            ("V2__late_branch.sql".into(), State::Ignored),
            ("V3__main.sql".into(), State::Success),
            ("V4__next.sql".into(), State::Pending),
        ]
    );
    let refused =
        plan_migrate(&files, &history, &Settings::default(), "deploy").expect_err("ignored");
    let message = refused.to_string();
    assert!(
        message.contains("V2__late_branch.sql") && message.contains("out-of-order"),
        "{message}"
    );

    let ooo = Settings {
        out_of_order: true,
        ..Settings::default()
    };
    let plan = plan_migrate(&files, &history, &ooo, "deploy").expect("plan");
    let steps: Vec<(&str, bool)> = plan
        .steps
        .iter()
        .map(|s| (s.migration.script.as_str(), s.out_of_order))
        .collect();
    assert_eq!(
        steps,
        vec![("V2__late_branch.sql", true), ("V4__next.sql", false)]
    );

    let mut after = history.clone();
    after.extend(run(&plan));
    let entries = states(&files, &after, &ooo);
    assert_eq!(
        entries[2],
        ("V2__late_branch.sql".into(), State::OutOfOrder)
    );
    assert!(validate(&files, &after, &Settings::default(), false).is_empty());
}

#[test]
fn a_baselined_database_skips_migrations_at_or_below_the_baseline() {
    let files: Vec<_> = (1..=7)
        .map(|n| migration(&format!("V{n}__step_{n}.sql"), &format!("SELECT {n};")))
        .collect();
    let history = vec![baseline(1, "5")];
    let entries = states(&files, &history, &Settings::default());
    let expected: Vec<(String, State)> = vec![
        ("V1__step_1.sql".into(), State::BelowBaseline),
        ("V2__step_2.sql".into(), State::BelowBaseline),
        ("V3__step_3.sql".into(), State::BelowBaseline),
        ("V4__step_4.sql".into(), State::BelowBaseline),
        ("V5__step_5.sql".into(), State::BaselineIgnored),
        (BASELINE_DESCRIPTION.into(), State::Baseline),
        ("V6__step_6.sql".into(), State::Pending),
        ("V7__step_7.sql".into(), State::Pending),
    ];
    assert_eq!(entries, expected);
    let plan = plan_migrate(&files, &history, &Settings::default(), "deploy").expect("plan");
    let scripts: Vec<_> = plan
        .steps
        .iter()
        .map(|s| s.migration.script.as_str())
        .collect();
    assert_eq!(scripts, vec!["V6__step_6.sql", "V7__step_7.sql"]);
    assert_eq!(plan.current, Some(v("5")));
    assert_eq!(State::BaselineIgnored.name(), "Ignored (Baseline)");
}

#[test]
fn baseline_on_migrate_writes_the_marker_first_on_an_empty_history() {
    let files: Vec<_> = (1..=4)
        .map(|n| migration(&format!("V{n}__s.sql"), &format!("SELECT {n};")))
        .collect();
    let settings = Settings {
        baseline_on_migrate: Some(v("2")),
        ..Settings::default()
    };
    let plan = plan_migrate(&files, &[], &settings, "deploy").expect("plan");
    let marker = plan.baseline.expect("baseline row");
    assert_eq!(
        (marker.installed_rank, marker.version, marker.kind),
        (1, Some(v("2")), MigrationType::Baseline)
    );
    let steps: Vec<_> = plan
        .steps
        .iter()
        .map(|s| (s.migration.script.as_str(), s.installed_rank))
        .collect();
    assert_eq!(steps, vec![("V3__s.sql", 2), ("V4__s.sql", 3)]);

    let already = vec![applied(1, &files[0])];
    assert!(plan_migrate(&files, &already, &settings, "deploy")
        .expect("plan")
        .baseline
        .is_none());
}

#[test]
fn baseline_command() {
    let row = plan_baseline(&[], &v("3"), None, "deploy")
        .expect("ok")
        .expect("a row");
    assert_eq!(row.description, BASELINE_DESCRIPTION);
    assert_eq!(row.script, BASELINE_DESCRIPTION);
    assert_eq!(
        (row.checksum, row.success, row.installed_rank),
        (None, true, 1)
    );

    assert_eq!(
        plan_baseline(&[baseline(1, "3")], &v("3.0"), None, "deploy"),
        Ok(None)
    );
    assert_eq!(
        plan_baseline(&[baseline(1, "3")], &v("4"), None, "deploy"),
        Err(BaselineError::AlreadyBaselined {
            existing: v("3"),
            requested: v("4")
        })
    );
    let m = migration("V1__a.sql", "SELECT 1;");
    let refused = plan_baseline(&[applied(1, &m)], &v("1"), None, "deploy").expect_err("not empty");
    assert_eq!(refused, BaselineError::NotEmpty { applied: 1 });
}

#[test]
fn a_changed_repeatable_is_outdated_and_runs_again() {
    let first = migration("R__views.sql", "CREATE OR REPLACE VIEW v AS SELECT 1;");
    let second = migration("R__views.sql", "CREATE OR REPLACE VIEW v AS SELECT 2;");
    let third = migration("R__views.sql", "CREATE OR REPLACE VIEW v AS SELECT 3;");
    let history = vec![applied(1, &first), applied(2, &second)];
    let files = vec![third.clone()];

    let entries = states(&files, &history, &Settings::default());
    assert_eq!(
        entries,
        vec![
            ("R__views.sql".into(), State::Superseded),
            ("R__views.sql".into(), State::Outdated),
            ("R__views.sql".into(), State::Pending),
        ]
    );
    let plan = plan_migrate(&files, &history, &Settings::default(), "deploy").expect("plan");
    assert_eq!(plan.steps.len(), 1);
    assert!(plan.steps[0].rerun);
    assert_eq!(plan.steps[0].installed_rank, 3);
    assert!(validate(&files, &history, &Settings::default(), true).is_empty());
    let strict = validate(&files, &history, &Settings::default(), false);
    assert!(
        strict
            .iter()
            .any(|p| matches!(p, ValidationError::Outdated { .. })),
        "{strict:?}"
    );

    // An unchanged repeatable is not run again, and repair never realigns repeatables.
    let current = vec![second.clone()];
    assert!(
        plan_migrate(&current, &history, &Settings::default(), "deploy")
            .expect("plan")
            .steps
            .is_empty()
    );
    assert!(
        plan_repair(&files, &history, &Settings::default(), "deploy")
            .realign
            .is_empty()
    );
}

#[test]
fn migrations_above_the_target_wait() {
    let files = files();
    let settings = Settings {
        target: Some(v("1.9")),
        ..Settings::default()
    };
    let plan = plan_migrate(&files, &[], &settings, "deploy").expect("plan");
    let scripts: Vec<_> = plan
        .steps
        .iter()
        .map(|s| s.migration.script.as_str())
        .collect();
    assert_eq!(
        scripts,
        vec![
            "V1__init.sql",
            "V1.9__nine.sql",
            "R__a_views.sql",
            "R__b_views.sql"
        ]
    );
    let entries = states(&files, &[], &settings);
    assert!(entries.contains(&("V2__add_email.sql".into(), State::AboveTarget)));
}

#[test]
fn info_shows_who_applied_what_and_the_files_checksum() {
    let files = files();
    let report = info(&files, &[applied(1, &files[0])], &Settings::default());
    let first = &report.entries[0];
    assert_eq!(first.installed_rank, Some(1));
    assert_eq!(first.installed_by.as_deref(), Some("deploy"));
    assert_eq!(first.file_checksum, Some(files[0].checksum));
    assert_eq!(State::OutOfOrder.to_string(), "Out of Order");
}

#[test]
fn a_contract_half_pending_on_purpose_is_not_a_validation_problem() {
    let files = vec![
        migration("V1__init.sql", "CREATE TABLE users (id bigint, name text);"),
        migration(
            "V2__expand.sql",
            "ALTER TABLE users ADD COLUMN full_name text;",
        ),
        migration(
            "V3__contract.sql",
            "-- baton:contract\nALTER TABLE users DROP COLUMN name;",
        ),
    ];
    let history = vec![applied(1, &files[0]), applied(2, &files[1])];
    let settings = Settings {
        deferred: ["V3__contract.sql".to_string()].into(),
        ..Settings::default()
    };
    assert_eq!(validate(&files, &history, &settings, false), vec![]);
    // An expand migration still pending is one.
    let problems = validate(&files, &history[..1], &settings, false);
    assert!(
        matches!(&problems[..], [ValidationError::Pending { script, .. }] if script == "V2__expand.sql"),
        "{problems:?}"
    );
}
