//! The generated expand/contract pair for a column rename is what the linter
//! accepts as expand and as contract, and can be dropped into the folder.

mod common;

use baton_migrate::discovery::{parse_name, ScriptName};
use baton_migrate::rename::RenameError;
use baton_migrate::{lint_sql, split, ColumnRename, LintOptions, Phase, Rule};
use common::v;

fn options() -> LintOptions {
    LintOptions::default()
}

#[test]
fn the_expand_half_is_clean_expand_and_runs_outside_a_transaction() {
    let pair = ColumnRename::new("users", "name", "full_name", "text")
        .generate()
        .expect("pair");
    let report = lint_sql("V10__expand.sql", &pair.expand, &options());
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(report.phase, Phase::Expand);
    assert!(!report.execute_in_transaction);

    let statements = split(&pair.expand).expect("readable");
    let starts: Vec<String> = statements
        .iter()
        .map(|s| {
            s.tokens
                .iter()
                .take(3)
                .map(|t| t.text.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        starts,
        vec![
            "SET lock_timeout =",
            "BEGIN",
            "SET LOCAL statement_timeout",
            "ALTER TABLE users",
            "CREATE OR REPLACE",
            "DROP TRIGGER IF",
            "CREATE TRIGGER baton_sync_users_name_full_name",
            "COMMIT",
            "DO $baton$\nDECLARE\n  copied bigint;\nBEGIN\n  LOOP\n    UPDATE users SET full_name = name\n     WHERE id IN (\n       SELECT id FROM users\n        WHERE full_name IS NULL AND name IS NOT NULL\n        LIMIT 1000);\n    GET DIAGNOSTICS copied = ROW_COUNT;\n    EXIT WHEN copied = 0;\n    COMMIT;\n  END LOOP;\nEND\n$baton$",
        ]
    );
    assert!(pair
        .expand
        .contains("ADD COLUMN IF NOT EXISTS full_name text"));
    assert!(
        pair.expand.contains("NEW.name := NEW.full_name")
            && pair.expand.contains("NEW.full_name := NEW.name")
    );
}

#[test]
fn the_contract_half_is_clean_contract_in_a_transaction() {
    let pair = ColumnRename::new("users", "name", "full_name", "text")
        .generate()
        .expect("pair");
    let report = lint_sql("V11__contract.sql", &pair.contract, &options());
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(report.phase, Phase::Contract);
    assert!(report.execute_in_transaction);
    assert!(pair.contract.contains("DROP COLUMN IF EXISTS name;"));
    assert!(pair
        .contract
        .contains("DROP FUNCTION IF EXISTS baton_sync_users_name_full_name();"));

    // Without its marker, the same SQL is refused: the marker is the author's promise.
    let unmarked = pair.contract.replace("-- baton:contract\n", "");
    let refused = lint_sql("V11__contract.sql", &unmarked, &options());
    let rules: Vec<_> = refused.errors().map(|f| f.rule).collect();
    assert!(
        rules.contains(&Rule::BanDropColumn) && rules.contains(&Rule::ContractWithoutMarker),
        "{rules:?}"
    );
}

#[test]
fn a_not_null_column_is_proved_in_expand_and_set_in_contract() {
    let mut rename = ColumnRename::new("accounts", "mail", "email", "varchar(320)");
    rename.not_null = true;
    rename.batch_size = 500;
    let pair = rename.generate().expect("pair");

    let expand = lint_sql("V1__e.sql", &pair.expand, &options());
    // Only the advice about the varchar(320) the rename keeps.
    assert!(
        expand
            .findings
            .iter()
            .all(|f| f.rule == Rule::PreferTextField && !expand.has_errors()),
        "{:#?}",
        expand.findings
    );
    assert_eq!(expand.phase, Phase::Expand);
    assert!(pair.expand.contains("CHECK (email IS NOT NULL) NOT VALID"));
    assert!(pair
        .expand
        .contains("VALIDATE CONSTRAINT accounts_email_not_null"));
    assert!(pair.expand.contains("LIMIT 500"));

    let contract = lint_sql("V2__c.sql", &pair.contract, &options());
    assert!(contract.findings.is_empty(), "{:#?}", contract.findings);
    assert_eq!(contract.phase, Phase::Contract);
    assert_eq!(
        contract.allowed.iter().map(|f| f.rule).collect::<Vec<_>>(),
        vec![Rule::AddingNotNullableField]
    );
}

#[test]
fn awkward_names_are_quoted_and_still_lint_clean() {
    let mut rename = ColumnRename::new("user", "Name", "display name", "text");
    rename.schema = Some("App".into());
    rename.key_column = "ID".into();
    let pair = rename.generate().expect("pair");
    assert!(
        pair.expand.contains(
            "ALTER TABLE \"App\".\"user\" ADD COLUMN IF NOT EXISTS \"display name\" text;"
        ),
        "{}",
        pair.expand
    );
    assert!(pair.expand.contains("WHERE \"ID\" IN"));
    for (sql, phase) in [
        (&pair.expand, Phase::Expand),
        (&pair.contract, Phase::Contract),
    ] {
        let report = lint_sql("V1__x.sql", sql, &options());
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
        assert_eq!(report.phase, phase);
    }
}

#[test]
fn file_names_are_valid_flyway_migrations() {
    let pair = ColumnRename::new("users", "name", "full_name", "text")
        .generate()
        .expect("pair");
    let expand = pair.expand_file_name(&v("20240105.1"));
    let contract = pair.contract_file_name(&v("20240201.1"));
    assert_eq!(
        expand,
        "V20240105.1__expand_rename_users_name_to_full_name.sql"
    );
    assert_eq!(
        contract,
        "V20240201.1__contract_rename_users_name_to_full_name.sql"
    );
    for name in [expand, contract] {
        assert!(
            matches!(parse_name(&name), Ok(ScriptName::Versioned { .. })),
            "{name}"
        );
    }
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let base = ColumnRename::new("users", "name", "full_name", "text");
    let cases: Vec<(ColumnRename, RenameError)> = vec![
        (
            ColumnRename {
                to: "name".into(),
                ..base.clone()
            },
            RenameError::SameName {
                name: "name".into(),
            },
        ),
        (
            ColumnRename {
                table: String::new(),
                ..base.clone()
            },
            RenameError::EmptyName { what: "table" },
        ),
        (
            ColumnRename {
                column_type: "text; DROP TABLE users".into(),
                ..base.clone()
            },
            RenameError::BadType {
                column_type: "text; DROP TABLE users".into(),
            },
        ),
        (
            ColumnRename {
                column_type: "text -- sneaky".into(),
                ..base.clone()
            },
            RenameError::BadType {
                column_type: "text -- sneaky".into(),
            },
        ),
        (
            ColumnRename {
                batch_size: 0,
                ..base.clone()
            },
            RenameError::ZeroBatch,
        ),
        (
            ColumnRename {
                lock_timeout: "5s'; DROP".into(),
                ..base.clone()
            },
            RenameError::BadLockTimeout {
                value: "5s'; DROP".into(),
            },
        ),
        (
            ColumnRename {
                to: "x".repeat(64),
                ..base.clone()
            },
            RenameError::NameTooLong {
                what: "new column",
                name: "x".repeat(64),
            },
        ),
    ];
    for (rename, expected) in cases {
        assert_eq!(rename.generate(), Err(expected));
    }
}
