//! The zero-downtime linter, rule by rule, on migrations a team would write.

mod common;

use baton_migrate::lint::StatementReport;
use baton_migrate::{lint_migration, lint_sql, LintOptions, LintReport, Phase, Rule, Severity};
use common::migration;

const TIMEOUT: &str = "SET lock_timeout = '5s'; SET statement_timeout = '1min';\n";

fn lint(sql: &str) -> LintReport {
    lint_sql("V9__test.sql", sql, &LintOptions::default())
}

/// Ids of error findings, after a `SET lock_timeout` so only the rule under
/// test speaks.
fn errors(sql: &str) -> Vec<&'static str> {
    lint(&format!("{TIMEOUT}{sql}"))
        .errors()
        .map(|f| f.rule.id())
        .collect()
}

fn phases(report: &LintReport) -> Vec<Phase> {
    report
        .statements
        .iter()
        .map(|s: &StatementReport| s.phase)
        .collect()
}

#[test]
fn dropping_a_column_is_contract_and_needs_the_marker() {
    let report = lint(&format!(
        "{TIMEOUT}ALTER TABLE users DROP COLUMN legacy_name;"
    ));
    assert_eq!(report.phase, Phase::Contract);
    let finding = report.errors().next().expect("a finding");
    assert_eq!(finding.rule, Rule::BanDropColumn);
    assert!(finding.message.contains("legacy_name") && finding.message.contains("users"));
    assert!(!finding.why.is_empty() && finding.recipe.contains("baton:contract"));

    let marked = lint(&format!(
        "-- baton:contract\n{TIMEOUT}ALTER TABLE users DROP COLUMN legacy_name;"
    ));
    assert_eq!(marked.phase, Phase::Contract);
    assert!(marked.findings.is_empty(), "{:?}", marked.findings);
}

#[test]
fn dropping_a_table_is_contract_unless_the_script_made_it() {
    assert_eq!(
        errors("DROP TABLE IF EXISTS carts;"),
        vec!["ban-drop-table"]
    );
    let own = lint("CREATE TABLE tmp_import (id bigint);\nDROP TABLE tmp_import;");
    assert_eq!(own.phase, Phase::Expand);
    assert!(own.findings.is_empty(), "{:?}", own.findings);
    // Dropped, then created again: the rows are gone, so it is still contract.
    let recreated = lint(&format!(
        "{TIMEOUT}DROP TABLE carts;\nCREATE TABLE carts (id int);"
    ));
    assert_eq!(recreated.phase, Phase::Contract);
}

#[test]
fn renames_are_refused_even_in_a_contract_migration() {
    assert_eq!(
        errors("ALTER TABLE users RENAME COLUMN name TO full_name;"),
        vec!["renaming-column"]
    );
    assert_eq!(
        errors("ALTER TABLE users RENAME TO customers;"),
        vec!["renaming-table"]
    );
    assert_eq!(
        errors("ALTER TABLE users SET SCHEMA archive;"),
        vec!["renaming-table"]
    );
    let marked = lint(&format!(
        "-- baton:contract\n{TIMEOUT}ALTER TABLE users RENAME name TO full_name;"
    ));
    assert_eq!(
        marked.errors().map(|f| f.rule).collect::<Vec<_>>(),
        vec![Rule::RenamingColumn]
    );
    assert!(marked
        .errors()
        .next()
        .is_some_and(|f| f.recipe.contains("rename-column")));
}

#[test]
fn a_required_column_needs_a_default() {
    assert_eq!(
        errors("ALTER TABLE users ADD COLUMN plan text NOT NULL;"),
        vec!["adding-required-field"]
    );
    assert!(errors("ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT 'free';").is_empty());
    assert!(errors("ALTER TABLE users ADD COLUMN plan text;").is_empty());
    assert!(lint(
        "CREATE TABLE plans (id bigint);\nALTER TABLE plans ADD COLUMN name text NOT NULL;"
    )
    .findings
    .is_empty());
}

#[test]
fn volatile_defaults_rewrite_the_table_but_now_does_not() {
    assert!(
        errors("ALTER TABLE users ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();")
            .is_empty()
    );
    assert!(errors("ALTER TABLE users ADD COLUMN n int DEFAULT 0;").is_empty());
    assert!(errors("ALTER TABLE users ADD COLUMN meta jsonb DEFAULT '{}'::jsonb;").is_empty());
    assert!(
        errors("ALTER TABLE users ADD COLUMN at timestamptz DEFAULT CURRENT_TIMESTAMP;").is_empty()
    );
    assert_eq!(
        errors("ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();"),
        vec!["adding-field-with-default"]
    );
    assert_eq!(
        errors("ALTER TABLE users ADD COLUMN r float8 DEFAULT random();"),
        vec!["adding-field-with-default"]
    );
    assert_eq!(
        errors("ALTER TABLE users ADD COLUMN seq bigserial;"),
        vec!["adding-field-with-default"]
    );
    assert_eq!(
        errors("ALTER TABLE users ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY;"),
        vec!["adding-field-with-default"]
    );

    let unknown = lint(&format!(
        "{TIMEOUT}ALTER TABLE users ADD COLUMN code text DEFAULT make_code();"
    ));
    let finding = unknown.findings.first().expect("a warning");
    assert_eq!(
        (finding.rule, finding.severity),
        (Rule::AddingFieldWithDefault, Severity::Warning)
    );
    assert!(!unknown.has_errors());

    let old_postgres = lint_sql(
        "V1__x.sql",
        &format!("{TIMEOUT}ALTER TABLE users ADD COLUMN n int DEFAULT 0;"),
        &LintOptions {
            postgres_major: 10,
            ..LintOptions::default()
        },
    );
    assert!(old_postgres
        .errors()
        .any(|f| f.rule == Rule::AddingFieldWithDefault));
}

#[test]
fn changing_a_type_is_refused_and_contract() {
    let report = lint(&format!(
        "{TIMEOUT}ALTER TABLE orders ALTER COLUMN total TYPE numeric(12,2);"
    ));
    assert_eq!(
        report.errors().map(|f| f.rule.id()).collect::<Vec<_>>(),
        vec!["changing-column-type"]
    );
    assert_eq!(report.phase, Phase::Contract);
}

#[test]
fn indexes_must_be_built_and_dropped_concurrently() {
    assert_eq!(
        errors("CREATE INDEX orders_user_idx ON orders (user_id);"),
        vec!["require-concurrent-index-creation"]
    );
    assert_eq!(
        errors("DROP INDEX orders_user_idx;"),
        vec!["require-concurrent-index-deletion"]
    );
    assert_eq!(
        errors("REINDEX TABLE orders;"),
        vec!["require-concurrent-reindex"]
    );
    assert!(
        lint("CREATE TABLE t (a bigint);\nCREATE INDEX t_a ON t (a);")
            .findings
            .is_empty()
    );

    let alone = lint("CREATE INDEX CONCURRENTLY orders_user_idx ON orders (user_id);");
    assert!(!alone.has_errors(), "{:?}", alone.findings);
    assert!(
        !alone.execute_in_transaction,
        "runs outside a transaction, as Flyway decides"
    );

    let marked = lint(&format!(
        "-- baton:no-transaction\n{TIMEOUT}DROP INDEX CONCURRENTLY IF EXISTS orders_user_idx;\nCREATE INDEX CONCURRENTLY orders_user_idx ON orders (user_id);"
    ));
    assert!(marked.findings.is_empty(), "{:?}", marked.findings);
}

#[test]
fn concurrent_builds_inside_a_transaction_are_refused() {
    // Mixed with another statement and unmarked: Flyway refuses such a script.
    let mixed = lint(&format!(
        "{TIMEOUT}CREATE INDEX CONCURRENTLY i ON orders (user_id);"
    ));
    let finding = mixed.errors().next().expect("a finding");
    assert_eq!(finding.rule, Rule::BanConcurrentIndexCreationInTransaction);
    assert_eq!(finding.line, 2);

    let block = lint("-- baton:no-transaction\nBEGIN;\nCREATE INDEX CONCURRENTLY i ON orders (user_id);\nCOMMIT;");
    assert!(block
        .errors()
        .any(|f| f.rule == Rule::BanConcurrentIndexCreationInTransaction && f.line == 3));

    let mut configured = migration(
        "V3__index.sql",
        "CREATE INDEX CONCURRENTLY i ON orders (user_id);",
    );
    configured.execute_in_transaction = Some(true);
    let report = lint_migration(&configured, &LintOptions::default());
    assert!(report.execute_in_transaction);
    assert!(report
        .errors()
        .any(|f| f.rule == Rule::BanConcurrentIndexCreationInTransaction));

    configured.sql = format!(
        "{TIMEOUT}DROP INDEX CONCURRENTLY IF EXISTS i;\nCREATE INDEX CONCURRENTLY i ON orders (user_id);"
    );
    configured.execute_in_transaction = Some(false);
    let report = lint_migration(&configured, &LintOptions::default());
    assert!(!report.execute_in_transaction);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

#[test]
fn foreign_keys_and_checks_need_not_valid_and_a_separate_validation() {
    assert_eq!(
        errors("ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id);"),
        vec!["adding-foreign-key-constraint"]
    );
    assert_eq!(
        errors("ALTER TABLE orders ADD COLUMN coupon_id bigint REFERENCES coupons (id);"),
        vec!["adding-foreign-key-constraint"]
    );
    assert_eq!(
        errors("ALTER TABLE orders ADD CONSTRAINT positive CHECK (total > 0);"),
        vec!["constraint-missing-not-valid"]
    );
    assert!(
        errors("ALTER TABLE orders ADD CONSTRAINT positive CHECK (total > 0) NOT VALID;")
            .is_empty()
    );

    let same_transaction = errors(
        "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\n\
         ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;",
    );
    assert_eq!(same_transaction, vec!["constraint-missing-not-valid"]);

    let separate = lint(&format!(
        "-- baton:no-transaction\n{TIMEOUT}\
         ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_user_fk;\n\
         ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\n\
         ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;"
    ));
    assert!(separate.findings.is_empty(), "{:?}", separate.findings);
}

#[test]
fn unique_constraints_need_an_index_built_concurrently() {
    assert_eq!(
        errors("ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);"),
        vec!["disallowed-unique-constraint"]
    );
    assert_eq!(
        errors("ALTER TABLE users ADD PRIMARY KEY (id);"),
        vec!["adding-serial-primary-key-field"]
    );
    assert!(errors(
        "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_idx;"
    )
    .is_empty());
}

#[test]
fn set_not_null_is_refused_unless_allowed_after_a_validated_check() {
    let report = lint(&format!(
        "{TIMEOUT}ALTER TABLE users ALTER COLUMN email SET NOT NULL;"
    ));
    assert_eq!(
        report.errors().map(|f| f.rule).collect::<Vec<_>>(),
        vec![Rule::AddingNotNullableField]
    );
    assert_eq!(report.phase, Phase::Expand);

    let allowed = lint(&format!(
        "{TIMEOUT}-- the check was validated in V8\n-- baton:allow adding-not-nullable-field\nALTER TABLE users ALTER COLUMN email SET NOT NULL;"
    ));
    assert!(allowed.findings.is_empty(), "{:?}", allowed.findings);
    assert_eq!(allowed.allowed.len(), 1);

    let validated_first = lint(&format!(
        "-- baton:no-transaction\n{TIMEOUT}ALTER TABLE users VALIDATE CONSTRAINT users_email_not_null;\nALTER TABLE users ALTER COLUMN email SET NOT NULL;"
    ));
    assert!(
        validated_first.findings.is_empty(),
        "{:?}",
        validated_first.findings
    );
}

#[test]
fn strong_locks_need_a_lock_timeout_set_before_them() {
    let missing =
        lint("ALTER TABLE users ADD COLUMN nickname text;\nALTER TABLE users ADD COLUMN bio text;");
    let found: Vec<_> = missing.errors().map(|f| (f.rule, f.line)).collect();
    assert_eq!(
        found,
        vec![(Rule::RequireLockTimeout, 1)],
        "reported once, at the first lock"
    );
    assert!(missing.findings[0].message.contains("users"));

    assert!(
        !lint("SET lock_timeout = '2s';\nALTER TABLE users ADD COLUMN nickname text;").has_errors()
    );
    assert!(
        !lint("SET LOCAL lock_timeout = '2s';\nALTER TABLE users ADD COLUMN nickname text;")
            .has_errors()
    );
    assert!(lint(
        "SELECT set_config('lock_timeout', '2s', false);\nALTER TABLE users ADD COLUMN x text;"
    )
    .findings
    .iter()
    .all(|f| f.rule == Rule::RequireStatementTimeout));

    let too_late = lint("ALTER TABLE users ADD COLUMN nickname text;\nSET lock_timeout = '2s';");
    assert!(too_late
        .errors()
        .any(|f| f.rule == Rule::RequireLockTimeout));
    let zero = lint("SET lock_timeout = 0;\nALTER TABLE users ADD COLUMN nickname text;");
    assert!(zero.errors().any(|f| f.rule == Rule::RequireLockTimeout));

    // SET LOCAL ends with its transaction: in a no-transaction script it does not cover the next statement.
    let local = lint("-- baton:no-transaction\nSET LOCAL lock_timeout = '2s';\nALTER TABLE users ADD COLUMN x text;");
    assert!(local
        .errors()
        .any(|f| f.rule == Rule::RequireLockTimeout && f.line == 3));

    // Reads and writes are not blocked by these, so no timeout is needed.
    assert!(lint("INSERT INTO users (id) VALUES (1);\nCREATE TABLE t (id int);\nCREATE INDEX CONCURRENTLY i ON users (id);")
        .errors()
        .all(|f| f.rule != Rule::RequireLockTimeout));
}

#[test]
fn table_rewrites_for_maintenance_are_refused() {
    assert_eq!(
        errors("VACUUM FULL orders;"),
        vec![
            "ban-concurrent-index-creation-in-transaction",
            "prefer-repack"
        ]
    );
    assert_eq!(
        errors("CLUSTER orders USING orders_pkey;"),
        vec!["prefer-repack"]
    );
}

#[test]
fn begin_and_commit_inside_a_transactional_migration_are_refused() {
    let report = lint(&format!(
        "BEGIN;\n{TIMEOUT}ALTER TABLE users ADD COLUMN x text;\nCOMMIT;"
    ));
    let lines: Vec<_> = report
        .errors()
        .filter(|f| f.rule == Rule::TransactionNesting)
        .map(|f| f.line)
        .collect();
    assert_eq!(lines, vec![1, 4]);
}

#[test]
fn dropping_what_the_running_release_may_call_is_contract() {
    for sql in [
        "DROP FUNCTION IF EXISTS order_total(bigint);",
        "DROP VIEW active_users;",
        "DROP TRIGGER audit ON users;",
        "ALTER TABLE users ALTER COLUMN plan DROP DEFAULT;",
        "ALTER FUNCTION order_total(bigint) RENAME TO total_of;",
    ] {
        let report = lint(&format!("{TIMEOUT}{sql}"));
        assert_eq!(report.phase, Phase::Contract, "{sql}");
        assert_eq!(
            report.errors().map(|f| f.rule.id()).collect::<Vec<_>>(),
            vec!["contract-without-marker"],
            "{sql}"
        );
        let marked = lint(&format!("-- baton:contract\n{TIMEOUT}{sql}"));
        assert!(marked.findings.is_empty(), "{sql}: {:?}", marked.findings);
    }
    // Replacing a function or trigger in the same script keeps it expand.
    let replaced = lint(&format!(
        "{TIMEOUT}DROP TRIGGER IF EXISTS audit ON users;\nCREATE TRIGGER audit AFTER UPDATE ON users FOR EACH ROW EXECUTE FUNCTION audit();"
    ));
    assert_eq!(replaced.phase, Phase::Expand);
    assert!(replaced.findings.is_empty(), "{:?}", replaced.findings);
}

#[test]
fn additive_migrations_are_expand_statement_by_statement() {
    let report = lint(
        "-- Add a profile table and backfill.\n\
         SET lock_timeout = '5s'; SET statement_timeout = '1min';\n\
         CREATE TABLE profiles (\n  id bigint PRIMARY KEY,\n  user_id bigint NOT NULL REFERENCES profiles (id)\n);\n\
         CREATE INDEX profiles_user_idx ON profiles (user_id);\n\
         ALTER TABLE users ADD COLUMN bio text;\n\
         INSERT INTO profiles SELECT id, id FROM users;\n\
         CREATE OR REPLACE FUNCTION greet() RETURNS text LANGUAGE sql AS $$ SELECT 'hi; there' $$;\n\
         COMMENT ON COLUMN users.bio IS 'free text; shown on the profile';",
    );
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.phase, Phase::Expand);
    assert_eq!(phases(&report), vec![Phase::Expand; 8]);
    let lines: Vec<_> = report.statements.iter().map(|s| s.line).collect();
    assert_eq!(lines, vec![2, 2, 3, 7, 8, 9, 10, 11]);
    assert_eq!(report.statements[4].summary, "ALTER TABLE users ADD COLUMN");
}

#[test]
fn findings_point_at_the_line_of_the_offending_action() {
    let report = lint(
        "SET lock_timeout = '5s'; SET statement_timeout = '1min';\n\n\
         ALTER TABLE users\n  ADD COLUMN a text,\n  DROP COLUMN b,\n  ALTER COLUMN c TYPE bigint;",
    );
    let found: Vec<_> = report.errors().map(|f| (f.rule.id(), f.line)).collect();
    assert_eq!(
        found,
        vec![("ban-drop-column", 5), ("changing-column-type", 6)]
    );
    assert_eq!(report.findings[0].script, "V9__test.sql");
    let shown = report.findings[0].to_string();
    assert!(
        shown.starts_with("V9__test.sql:5: error [ban-drop-column]"),
        "{shown}"
    );
}

#[test]
fn misspelt_directives_and_unknown_rules_are_warned_about() {
    let report = lint("-- baton:no-transation\n-- baton:allow no-such-rule\nSELECT 1;");
    let found: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.rule, f.severity, f.line))
        .collect();
    assert_eq!(
        found,
        vec![
            (Rule::UnknownDirective, Severity::Warning, 1),
            (Rule::UnknownDirective, Severity::Warning, 2)
        ]
    );
    assert!(
        report.execute_in_transaction,
        "the misspelt marker is not obeyed"
    );
    // Ordinary prose mentioning Baton is not a directive.
    assert!(
        lint("-- Baton: generated file\n-- see baton docs\nSELECT 1;")
            .findings
            .is_empty()
    );
}

#[test]
fn unreadable_sql_is_a_syntax_error_with_its_line() {
    let report = lint("SELECT 1;\nINSERT INTO t VALUES ('unclosed);\n");
    let finding = report.findings.first().expect("a finding");
    assert_eq!((finding.rule, finding.line), (Rule::SyntaxError, 2));
    assert!(report.has_errors());
}

#[test]
fn the_rule_catalogue_is_complete() {
    let mut ids: Vec<_> = Rule::ALL.iter().map(|r| r.id()).collect();
    for rule in Rule::ALL {
        assert_eq!(Rule::from_id(rule.id()), Some(*rule));
        assert!(rule.why().len() > 40 && rule.recipe().len() > 20, "{rule}");
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), Rule::ALL.len());
}

// The rules squawk has beyond the ones above: what each catches, with its
// line and severity, and the safe form that passes.

/// Every finding as (rule id, line, severity).
fn found(report: &LintReport) -> Vec<(&'static str, u32, Severity)> {
    report
        .findings
        .iter()
        .map(|f| (f.rule.id(), f.line, f.severity))
        .collect()
}

/// Findings after a `SET lock_timeout … statement_timeout` on line 1.
fn found_after_timeouts(sql: &str) -> Vec<(&'static str, u32, Severity)> {
    found(&lint(&format!("{TIMEOUT}{sql}")))
}

use Severity::{Error, Warning};

#[test]
fn a_primary_key_on_a_live_table_is_built_from_a_concurrent_index() {
    assert_eq!(
        found_after_timeouts("ALTER TABLE users ADD PRIMARY KEY (id);"),
        vec![("adding-serial-primary-key-field", 2, Error)]
    );
    assert_eq!(
        found_after_timeouts("ALTER TABLE users ADD COLUMN id bigserial PRIMARY KEY;"),
        vec![
            ("prefer-identity", 2, Warning),
            ("adding-field-with-default", 2, Error),
            ("adding-serial-primary-key-field", 2, Error),
        ]
    );
    assert!(found_after_timeouts(
        "ALTER TABLE users ADD CONSTRAINT users_pkey PRIMARY KEY USING INDEX users_id_idx;"
    )
    .is_empty());
    assert!(found(&lint("CREATE TABLE t (id bigint PRIMARY KEY);")).is_empty());
    // Written before primary keys had their own rule, the old allowance still holds.
    let allowed = lint(&format!(
        "{TIMEOUT}-- baton:allow disallowed-unique-constraint\nALTER TABLE small ADD PRIMARY KEY (id);"
    ));
    assert!(allowed.findings.is_empty(), "{:?}", allowed.findings);
    assert_eq!(allowed.allowed.len(), 1);
}

#[test]
fn column_types_that_age_badly_are_warned_about_even_in_new_tables() {
    let report = lint(
        "CREATE TABLE events (\n\
         \x20 id serial PRIMARY KEY,\n\
         \x20 kind smallint NOT NULL,\n\
         \x20 title varchar(200),\n\
         \x20 happened_at timestamp,\n\
         \x20 code char(3),\n\
         \x20 CONSTRAINT events_kind_check CHECK (kind > 0)\n\
         );",
    );
    assert_eq!(
        found(&report),
        vec![
            ("prefer-bigint-over-int", 2, Warning),
            ("prefer-identity", 2, Warning),
            ("prefer-bigint-over-smallint", 3, Warning),
            ("prefer-text-field", 4, Warning),
            ("prefer-timestamptz", 5, Warning),
            ("ban-char-field", 6, Warning),
        ]
    );
    assert!(!report.has_errors(), "advice never stops a deploy");
    assert!(report.findings[3].message.contains("events.title"));

    let safe = lint(
        "CREATE TABLE events (\n\
         \x20 id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n\
         \x20 kind bigint NOT NULL,\n\
         \x20 title text,\n\
         \x20 slug varchar,\n\
         \x20 code character varying,\n\
         \x20 happened_at timestamptz,\n\
         \x20 ended_at timestamp (3) with time zone,\n\
         \x20 data pg_catalog.jsonb\n\
         );",
    );
    assert!(safe.findings.is_empty(), "{:?}", safe.findings);

    assert_eq!(
        found_after_timeouts("ALTER TABLE users ADD COLUMN age integer;"),
        vec![("prefer-bigint-over-int", 2, Warning)]
    );
    assert_eq!(
        found_after_timeouts(
            "ALTER TABLE users ALTER COLUMN seen_at TYPE timestamp without time zone USING seen_at::timestamp;"
        ),
        vec![
            ("prefer-timestamptz", 2, Warning),
            ("changing-column-type", 2, Error)
        ]
    );
}

#[test]
fn dropping_not_null_is_expand_but_warned_about() {
    let report = lint(&format!(
        "{TIMEOUT}ALTER TABLE users ALTER COLUMN nickname DROP NOT NULL;"
    ));
    assert_eq!(found(&report), vec![("ban-drop-not-null", 2, Warning)]);
    assert_eq!(report.phase, Phase::Expand);
    assert!(found(&lint(
        "CREATE TABLE t (a text NOT NULL);\nALTER TABLE t ALTER COLUMN a DROP NOT NULL;"
    ))
    .is_empty());
    let allowed = lint(&format!(
        "{TIMEOUT}-- baton:allow ban-drop-not-null\nALTER TABLE users ALTER COLUMN nickname DROP NOT NULL;"
    ));
    assert!(allowed.findings.is_empty(), "{:?}", allowed.findings);
}

#[test]
fn dropping_a_database_is_refused_even_in_a_contract_migration() {
    let report = lint("-- baton:contract\nDROP DATABASE old_app;");
    assert_eq!(found(&report), vec![("ban-drop-database", 2, Error)]);
    assert_eq!(phases(&report), vec![Phase::Contract]);
    let unmarked = lint("DROP DATABASE IF EXISTS old_app;");
    assert_eq!(unmarked.phase, Phase::Contract);
    assert_eq!(found(&unmarked), vec![("ban-drop-database", 1, Error)]);
    // Other drops in a contract migration are not this rule's business.
    assert!(found(&lint(&format!(
        "-- baton:contract\n{TIMEOUT}DROP SCHEMA IF EXISTS old_reports;"
    )))
    .is_empty());
}

#[test]
fn truncate_cascade_is_refused_but_naming_the_tables_is_not() {
    assert_eq!(
        found_after_timeouts("TRUNCATE orders CASCADE;"),
        vec![("ban-truncate-cascade", 2, Error)]
    );
    assert_eq!(
        found_after_timeouts("TRUNCATE TABLE ONLY orders RESTART IDENTITY CASCADE;"),
        vec![("ban-truncate-cascade", 2, Error)]
    );
    assert!(found_after_timeouts("TRUNCATE orders, order_items RESTART IDENTITY;").is_empty());
    assert!(found(&lint(
        "CREATE TABLE tmp (id bigint);\nTRUNCATE tmp CASCADE;"
    ))
    .is_empty());
}

#[test]
fn domain_constraints_are_refused_on_live_domains_and_advised_against_on_new_ones() {
    assert_eq!(
        found(&lint(
            "CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');"
        )),
        vec![("ban-create-domain-with-constraint", 1, Warning)]
    );
    assert_eq!(
        found(&lint("CREATE DOMAIN code AS text NOT NULL;")),
        vec![("ban-create-domain-with-constraint", 1, Warning)]
    );
    assert!(found(&lint("CREATE DOMAIN email AS text;")).is_empty());

    assert_eq!(
        found_after_timeouts(
            "ALTER DOMAIN email ADD CONSTRAINT email_at CHECK (VALUE LIKE '%@%') NOT VALID;"
        ),
        vec![("ban-alter-domain-with-add-constraint", 2, Error)]
    );
    assert_eq!(
        found_after_timeouts("ALTER DOMAIN email VALIDATE CONSTRAINT email_at;"),
        vec![("ban-alter-domain-with-add-constraint", 2, Error)]
    );
    // The same rule on the column instead, in the safe two steps.
    assert!(found_after_timeouts(
        "ALTER TABLE users ADD CONSTRAINT users_email_at CHECK (email LIKE '%@%') NOT VALID;"
    )
    .is_empty());
    // A domain made by the same migration is used by no table yet.
    assert_eq!(
        found(&lint(
            "CREATE DOMAIN email AS text;\nALTER DOMAIN email ADD CONSTRAINT email_at CHECK (VALUE LIKE '%@%');"
        )),
        vec![]
    );
}

#[test]
fn statements_outside_a_transaction_should_survive_a_second_run() {
    let fragile = lint(&format!(
        "-- baton:no-transaction\n{TIMEOUT}\
         ALTER TABLE users ADD COLUMN bio text;\n\
         CREATE INDEX CONCURRENTLY users_bio_idx ON users (bio);"
    ));
    assert_eq!(
        found(&fragile),
        vec![
            ("prefer-robust-stmts", 3, Warning),
            ("prefer-robust-stmts", 4, Warning)
        ]
    );
    assert!(!fragile.has_errors());

    let robust = lint(&format!(
        "-- baton:no-transaction\n{TIMEOUT}\
         ALTER TABLE users ADD COLUMN IF NOT EXISTS bio text;\n\
         DROP INDEX CONCURRENTLY IF EXISTS users_bio_idx;\n\
         CREATE INDEX CONCURRENTLY users_bio_idx ON users (bio);\n\
         ALTER TABLE users DROP CONSTRAINT IF EXISTS users_bio_len;\n\
         ALTER TABLE users ADD CONSTRAINT users_bio_len CHECK (length(bio) < 5000) NOT VALID;\n\
         CREATE TABLE IF NOT EXISTS notes (id bigint);\n\
         CREATE OR REPLACE VIEW active_users AS SELECT * FROM users;"
    ));
    assert!(robust.findings.is_empty(), "{:?}", robust.findings);

    // IF NOT EXISTS would keep the INVALID index a failed concurrent build leaves.
    assert_eq!(
        found(&lint(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_bio_idx ON users (bio);"
        )),
        vec![("prefer-robust-stmts", 1, Warning)]
    );
    // In a transaction a failure undoes everything, so the same SQL is fine.
    assert!(found_after_timeouts(
        "ALTER TABLE users ADD COLUMN bio text;\nCREATE TABLE notes (id bigint);"
    )
    .is_empty());
    // So is a BEGIN … COMMIT block of a no-transaction migration.
    assert!(found(&lint(&format!(
        "-- baton:no-transaction\n{TIMEOUT}BEGIN;\nALTER TABLE users ADD COLUMN bio text;\nCOMMIT;\nVACUUM users;"
    )))
    .is_empty());
}

#[test]
fn a_lock_taken_with_no_statement_timeout_is_warned_about_once() {
    let report =
        lint("SET lock_timeout = '5s';\nALTER TABLE users ADD COLUMN a text;\nALTER TABLE users ADD COLUMN b text;");
    assert_eq!(
        found(&report),
        vec![("require-statement-timeout", 2, Warning)]
    );
    assert!(!report.has_errors());
    // With lock_timeout missing too, both are reported at the first lock.
    assert_eq!(
        found(&lint("ALTER TABLE users ADD COLUMN a text;")),
        vec![
            ("require-statement-timeout", 1, Warning),
            ("require-lock-timeout", 1, Error)
        ]
    );
    for set in [
        "SET statement_timeout = '30s';",
        "SET statement_timeout TO 30000;",
        "SET LOCAL statement_timeout = '30s';",
        "SELECT set_config('statement_timeout', '30s', false);",
    ] {
        let report = lint(&format!(
            "SET lock_timeout = '5s';\n{set}\nALTER TABLE users ADD COLUMN a text;"
        ));
        assert!(report.findings.is_empty(), "{set}: {:?}", report.findings);
    }
    let zero = lint(
        "SET lock_timeout = '5s'; SET statement_timeout = 0;\nALTER TABLE users ADD COLUMN a text;",
    );
    assert_eq!(
        found(&zero),
        vec![("require-statement-timeout", 2, Warning)]
    );
    // The runner's lock_timeout is not a statement_timeout.
    let options = LintOptions {
        runner_lock_timeout: true,
        ..LintOptions::default()
    };
    let report = lint_sql(
        "V9__test.sql",
        "ALTER TABLE users ADD COLUMN a text;",
        &options,
    );
    assert_eq!(
        found(&report),
        vec![("require-statement-timeout", 1, Warning)]
    );
}

#[test]
fn a_begin_without_commit_in_a_no_transaction_migration_is_refused() {
    let report = lint(&format!(
        "-- baton:no-transaction\n{TIMEOUT}BEGIN;\nALTER TABLE users ADD COLUMN bio text;"
    ));
    assert_eq!(
        found(&report),
        vec![("ban-uncommitted-transaction", 3, Error)]
    );
    let committed = lint(&format!(
        "-- baton:no-transaction\n{TIMEOUT}BEGIN;\nALTER TABLE users ADD COLUMN bio text;\nCOMMIT;"
    ));
    assert!(committed.findings.is_empty(), "{:?}", committed.findings);
}

#[test]
fn enum_values_say_where_they_go() {
    assert_eq!(
        found(&lint("ALTER TYPE mood ADD VALUE 'meh';")),
        vec![("require-enum-value-ordering", 1, Warning)]
    );
    assert!(found(&lint(
        "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'meh' AFTER 'ok';"
    ))
    .is_empty());
    assert!(found(&lint("ALTER TYPE mood ADD VALUE 'meh' BEFORE 'sad';")).is_empty());
}

#[test]
fn partitions_are_detached_concurrently() {
    assert_eq!(
        found_after_timeouts("ALTER TABLE measurements DETACH PARTITION measurements_2020;"),
        vec![("require-concurrent-partition-detach", 2, Error)]
    );
    let concurrent = lint(&format!(
        "-- baton:no-transaction\n{TIMEOUT}ALTER TABLE measurements DETACH PARTITION measurements_2020 CONCURRENTLY;"
    ));
    assert!(concurrent.findings.is_empty(), "{:?}", concurrent.findings);
}

#[test]
fn names_postgres_would_cut_are_warned_about() {
    let long = "orders_customer_id_created_at_status_shipping_country_partial_idx";
    assert!(long.len() > 63);
    let report = lint(&format!(
        "CREATE TABLE t (a bigint);\nCREATE INDEX {long} ON t (a);"
    ));
    assert_eq!(found(&report), vec![("identifier-too-long", 2, Warning)]);
    assert!(report.findings[0]
        .message
        .contains("orders_customer_id_created_at_status_shipping_country_partial_i`"));
    assert!(found(&lint(
        "CREATE TABLE t (a bigint);\nCREATE INDEX orders_customer_created_idx ON t (a);"
    ))
    .is_empty());
}

fn on(dialect: baton_migrate::Dialect, sql: &str) -> Vec<(&'static str, u32, Severity)> {
    let options = LintOptions {
        dialect,
        ..LintOptions::default()
    };
    found(&lint_sql("V9__test.sql", sql, &options))
}

#[test]
fn sqlite_and_mysql_are_never_asked_for_postgres_only_statements() {
    use baton_migrate::Dialect::{MySql, Postgres, Sqlite};
    let index = "CREATE INDEX users_email ON users (email);";
    assert_eq!(
        on(Postgres, index),
        vec![
            ("require-concurrent-index-creation", 1, Error),
            ("require-statement-timeout", 1, Warning),
            ("require-lock-timeout", 1, Error),
        ]
    );
    // SQLite has no CONCURRENTLY, no lock_timeout, no NOT VALID; MySQL
    // builds indexes online its own way.
    for dialect in [Sqlite, MySql] {
        assert!(on(dialect, index).is_empty(), "{dialect}");
        assert!(
            on(dialect, "DROP INDEX users_email;").is_empty(),
            "{dialect}"
        );
        assert!(
            on(
                dialect,
                "ALTER TABLE users ADD CONSTRAINT positive CHECK (n > 0);"
            )
            .is_empty(),
            "{dialect}"
        );
        assert!(
            on(dialect, "ALTER TABLE users ADD COLUMN born timestamp;").is_empty(),
            "{dialect}"
        );
    }
    // What breaks the release still running does so on every database.
    for dialect in [Postgres, Sqlite, MySql] {
        assert!(
            on(dialect, "ALTER TABLE users DROP COLUMN name;").contains(&(
                "ban-drop-column",
                1,
                Error
            )),
            "{dialect}"
        );
        assert!(
            on(dialect, "ALTER TABLE users ADD COLUMN tier text NOT NULL;").contains(&(
                "adding-required-field",
                1,
                Error
            )),
            "{dialect}"
        );
    }
    // A 32-bit integer is one on MySQL, not on SQLite (INTEGER is 64-bit).
    let int = "CREATE TABLE counters (hits int);";
    assert_eq!(on(MySql, int), vec![("prefer-bigint-over-int", 1, Warning)]);
    assert!(on(Sqlite, int).is_empty());
}

#[test]
fn an_index_on_a_table_created_earlier_in_the_same_pending_batch_is_no_locking_risk() {
    let create = migration(
        "V2__orders.sql",
        "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric);\n",
    );
    let index = migration(
        "V3__orders_total.sql",
        "CREATE INDEX orders_total ON orders (total);\n",
    );
    let options = LintOptions::default();
    let batch = baton_migrate::lint_batch([&create, &index], &options);
    assert_eq!(batch.len(), 2);
    assert!(batch[1].findings.is_empty(), "{:?}", batch[1].findings);
    // Alone (the table already exists and is in use), it is a risk.
    let alone = baton_migrate::lint_batch([&index], &options);
    assert!(alone[0]
        .findings
        .iter()
        .any(|f| f.rule == Rule::RequireConcurrentIndexCreation));
    // A table made by a contract migration is not carried: an expand
    // migration after it in the batch runs first.
    let contract = migration(
        "V2__swap.sql",
        "-- baton:contract\nCREATE TABLE orders (id bigint);\nDROP TABLE carts;\n",
    );
    let after = baton_migrate::lint_batch([&contract, &index], &options);
    assert!(after[1]
        .findings
        .iter()
        .any(|f| f.rule == Rule::RequireConcurrentIndexCreation));
}
