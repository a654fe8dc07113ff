//! Finding migrations in a folder, as a user lays them out.

mod common;

use baton_migrate::discovery::{FileProblem, SourceFile};
use baton_migrate::{discover, resolve, DiscoveryError};
use common::{v, Scratch};

#[test]
fn a_typical_folder_is_ordered_by_version_then_repeatables() {
    let scratch = Scratch::new("discover");
    scratch.write("V1__init.sql", "CREATE TABLE a (id int);");
    scratch.write("V1_10__later.sql", "SELECT 110;");
    scratch.write("V1.9__earlier.sql", "SELECT 19;");
    scratch.write("nested/V2__in_sub_folder.sql", "SELECT 2;");
    scratch.write("R__refresh_views.sql", "SELECT 'r';");
    scratch.write("R__a_first.sql", "SELECT 'a';");
    scratch.write("U2__undo.sql", "SELECT 'undo';");
    scratch.write("afterMigrate.sql", "SELECT 'callback';");
    scratch.write("README.md", "# not sql");
    scratch.write("V3__index.sql", "CREATE INDEX CONCURRENTLY i ON a (id);");
    scratch.write(
        "V3__index.sql.conf",
        "# Flyway script config\nexecuteInTransaction=false\n",
    );

    let found = discover(scratch.dir()).expect("valid folder");
    let listed: Vec<(Option<String>, &str, &str)> = found
        .migrations
        .iter()
        .map(|m| {
            (
                m.version.as_ref().map(|v| v.to_string()),
                m.description.as_str(),
                m.script.as_str(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (Some("1".into()), "init", "V1__init.sql"),
            (Some("1.9".into()), "earlier", "V1.9__earlier.sql"),
            (Some("1.10".into()), "later", "V1_10__later.sql"),
            (
                Some("2".into()),
                "in sub folder",
                "nested/V2__in_sub_folder.sql"
            ),
            (Some("3".into()), "index", "V3__index.sql"),
            (None, "a first", "R__a_first.sql"),
            (None, "refresh views", "R__refresh_views.sql"),
        ]
    );
    let index = &found.migrations[4];
    assert_eq!(index.execute_in_transaction, Some(false));
    assert_eq!(found.migrations[0].execute_in_transaction, None);

    let notes: Vec<&str> = found.notes.iter().map(|n| n.script.as_str()).collect();
    assert_eq!(notes, vec!["U2__undo.sql", "afterMigrate.sql"]);
    assert!(found.notes[0].message.contains("undo"));
}

#[test]
fn every_malformed_name_is_reported_by_file() {
    let scratch = Scratch::new("bad-names");
    scratch.write("V1_init.sql", "");
    scratch.write("Vx__bad_version.sql", "");
    scratch.write("V__no_version.sql", "");
    scratch.write("R1__versioned_repeatable.sql", "");
    scratch.write("v2__lowercase.sql", "");
    scratch.write("V5__fine.sql", "");
    let error = discover(scratch.dir()).expect_err("malformed names");
    let DiscoveryError::Invalid(problems) = &error else {
        panic!("{error}")
    };
    assert_eq!(problems.len(), 5, "{error}");
    let message = error.to_string();
    for file in [
        "V1_init.sql",
        "Vx__bad_version.sql",
        "V__no_version.sql",
        "R1__versioned_repeatable.sql",
        "v2__lowercase.sql",
    ] {
        assert!(message.contains(file), "{file} missing from:\n{message}");
    }
    assert!(!message.contains("V5__fine.sql"));
    assert!(problems.contains(&FileProblem::BadVersion {
        script: "Vx__bad_version.sql".into(),
        version: "x".into()
    }));
}

#[test]
fn duplicate_versions_name_both_files() {
    let scratch = Scratch::new("dupes");
    scratch.write("V1__first.sql", "SELECT 1;");
    scratch.write("V1.0__second.sql", "SELECT 2;");
    scratch.write("R__same.sql", "SELECT 3;");
    scratch.write("other/R__same.sql", "SELECT 4;");
    let error = discover(scratch.dir()).expect_err("duplicates");
    let DiscoveryError::Invalid(problems) = &error else {
        panic!("{error}")
    };
    assert_eq!(
        problems,
        &vec![
            FileProblem::DuplicateVersion {
                version: v("1"),
                scripts: vec!["V1.0__second.sql".into(), "V1__first.sql".into()]
            },
            FileProblem::DuplicateRepeatable {
                description: "same".into(),
                scripts: vec!["R__same.sql".into(), "other/R__same.sql".into()]
            },
        ]
    );
    let message = error.to_string();
    assert!(
        message.contains("V1.0__second.sql") && message.contains("V1__first.sql"),
        "{message}"
    );
}

#[test]
fn files_that_are_not_utf8_are_refused_by_name() {
    let error = resolve(vec![SourceFile {
        path: "V1__latin1.sql".into(),
        contents: b"SELECT 'caf\xe9';".to_vec(),
    }])
    .expect_err("not utf-8");
    assert!(error.to_string().contains("V1__latin1.sql"), "{error}");
}

#[test]
fn a_bad_script_config_names_the_file_and_line() {
    let error = resolve(vec![
        SourceFile {
            path: "V1__a.sql".into(),
            contents: b"SELECT 1;".to_vec(),
        },
        SourceFile {
            path: "V1__a.sql.conf".into(),
            contents: b"# ok\nexecuteInTransaction=maybe\n".to_vec(),
        },
    ])
    .expect_err("bad config");
    assert!(error.to_string().contains("V1__a.sql.conf:2"), "{error}");
}

#[test]
fn a_missing_folder_names_the_path() {
    let scratch = Scratch::new("missing");
    let folder = scratch.dir().join("does-not-exist");
    let error = discover(&folder).expect_err("no folder");
    assert!(matches!(error, DiscoveryError::Io { .. }));
    assert!(error.to_string().contains("does-not-exist"), "{error}");
}
