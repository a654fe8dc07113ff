//! The catalogue of lint rules: identifiers, severities, and the two texts
//! every finding carries (why it hurts, and the safe recipe).
//!
//! This module owns the words a user reads; it must never inspect SQL.
//! Rule identifiers follow squawk's where squawk has the same rule, so
//! people who know squawk recognise them.

use serde::Serialize;

use crate::dialect::Dialect;

/// How a finding affects a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Reported; the deploy goes on.
    Warning,
    /// The deploy is refused.
    Error,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

macro_rules! rules {
    ($($variant:ident = $id:literal, $severity:ident, $why:literal, $recipe:literal;)+) => {
        /// A zero-downtime rule.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(into = "&'static str")]
        pub enum Rule { $($variant,)+ }

        impl Rule {
            /// Every rule, in catalogue order.
            pub const ALL: &'static [Rule] = &[$(Rule::$variant,)+];

            /// The identifier used in reports and in `-- baton:allow <id>`.
            pub fn id(self) -> &'static str {
                match self { $(Rule::$variant => $id,)+ }
            }

            /// The severity of the rule's findings, unless a finding says otherwise.
            pub fn severity(self) -> Severity {
                match self { $(Rule::$variant => Severity::$severity,)+ }
            }

            /// Why it breaks the release still running or blocks a busy table.
            pub fn why(self) -> &'static str {
                match self { $(Rule::$variant => $why,)+ }
            }

            /// The safe way to get the same result.
            pub fn recipe(self) -> &'static str {
                match self { $(Rule::$variant => $recipe,)+ }
            }

            pub fn from_id(id: &str) -> Option<Rule> {
                Rule::ALL.iter().copied().find(|rule| rule.id() == id)
            }
        }
    };
}

rules! {
    BanDropColumn = "ban-drop-column", Error,
        "The release still running selects, inserts or maps this column; once it is gone, each of those queries fails until that release is drained.",
        "First ship a release that no longer uses the column. Then drop it in a later migration marked `-- baton:contract`, which runs only once no release using the column is left.";
    BanDropTable = "ban-drop-table", Error,
        "The release still running reads or writes this table; once it is gone, each of those queries fails until that release is drained.",
        "First ship a release that no longer uses the table. Then drop it in a later migration marked `-- baton:contract`.";
    RenamingColumn = "renaming-column", Error,
        "The release still running uses the old name and fails as soon as the rename commits, while a release using the new name would fail before it: no order of deploy and migration works.",
        "Expand/contract: add the new column, keep both in step with a trigger and backfill it (`baton db new rename-column` writes both migrations), switch the code to the new column, then drop the old one in a `-- baton:contract` migration.";
    RenamingTable = "renaming-table", Error,
        "The release still running uses the old name (or schema) and fails as soon as the rename commits.",
        "Rename the table and, in the same migration, create a view with the old name (`CREATE VIEW old_name AS SELECT * FROM new_name`; simple views accept writes) so the running release keeps working; drop the view in a `-- baton:contract` migration once no release uses the old name.";
    AddingRequiredField = "adding-required-field", Error,
        "Rows the running release inserts do not set the new column, so they fail with a NOT NULL violation; on a table with rows the ALTER itself fails.",
        "Add the column nullable (or with a constant DEFAULT), backfill it in batches, add `CHECK (col IS NOT NULL) NOT VALID`, validate it in another transaction, then SET NOT NULL (PostgreSQL 12+ then skips the scan).";
    AddingFieldWithDefault = "adding-field-with-default", Error,
        "A volatile default (random(), gen_random_uuid(), clock_timestamp(), a serial's nextval()) or an identity or stored generated column makes PostgreSQL rewrite the whole table under an ACCESS EXCLUSIVE lock, blocking every read and write until it is done. A constant or stable default such as now() is only recorded in the catalog on PostgreSQL 11+.",
        "Add the column without the default, then `ALTER COLUMN … SET DEFAULT …` (it applies to new rows only), and backfill existing rows in batches.";
    ChangingColumnType = "changing-column-type", Error,
        "Changing a column's type rewrites the table and its indexes under an ACCESS EXCLUSIVE lock, and the release still running reads and writes values of the old type.",
        "Add a column of the new type, keep it in step with a trigger (casting), backfill in batches, switch the code, then drop the old column in a `-- baton:contract` migration: the rename recipe of `baton db new rename-column`.";
    RequireConcurrentIndexCreation = "require-concurrent-index-creation", Error,
        "CREATE INDEX without CONCURRENTLY holds a SHARE lock for the whole build, blocking every insert, update and delete on the table.",
        "`CREATE INDEX CONCURRENTLY …` in its own migration marked `-- baton:no-transaction`. A failed concurrent build leaves an INVALID index: drop it with `DROP INDEX CONCURRENTLY IF EXISTS` and retry.";
    RequireConcurrentIndexDeletion = "require-concurrent-index-deletion", Error,
        "DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the table, blocking reads and writes while it waits for running queries.",
        "`DROP INDEX CONCURRENTLY IF EXISTS …` in a migration marked `-- baton:no-transaction`.";
    RequireConcurrentReindex = "require-concurrent-reindex", Error,
        "REINDEX without CONCURRENTLY blocks writes to the table, and reads that use the index, for the whole rebuild.",
        "`REINDEX … CONCURRENTLY` (PostgreSQL 12+) in a migration marked `-- baton:no-transaction`.";
    AddingForeignKeyConstraint = "adding-foreign-key-constraint", Error,
        "Adding a foreign key checks every existing row while holding a SHARE ROW EXCLUSIVE lock on both tables, blocking writes to both for the whole scan.",
        "Add it with `NOT VALID` (new rows are checked at once and the lock is brief), then `ALTER TABLE … VALIDATE CONSTRAINT …` in another transaction; validation does not block reads or writes.";
    ConstraintMissingNotValid = "constraint-missing-not-valid", Error,
        "Adding a CHECK constraint scans every row under an ACCESS EXCLUSIVE lock, blocking reads and writes; validating a NOT VALID constraint in the transaction that added it keeps that lock for the whole scan.",
        "`ADD CONSTRAINT … NOT VALID`, then `VALIDATE CONSTRAINT` in another transaction: a later migration, or a separate statement of a `-- baton:no-transaction` migration.";
    DisallowedUniqueConstraint = "disallowed-unique-constraint", Error,
        "Adding a UNIQUE, PRIMARY KEY or EXCLUDE constraint builds its index under an ACCESS EXCLUSIVE lock, blocking reads and writes for the whole build.",
        "`CREATE UNIQUE INDEX CONCURRENTLY` first (in a `-- baton:no-transaction` migration), then `ALTER TABLE … ADD CONSTRAINT name UNIQUE USING INDEX index_name` (or `PRIMARY KEY USING INDEX`), which is instant.";
    AddingNotNullableField = "adding-not-nullable-field", Error,
        "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock, blocking reads and writes, and then rejects rows the running release inserts without the column.",
        "Add `CHECK (col IS NOT NULL) NOT VALID`, validate it in another transaction, then SET NOT NULL (PostgreSQL 12+ uses the valid check and skips the scan) and drop the check; write `-- baton:allow adding-not-nullable-field` above the SET NOT NULL once the check is validated.";
    RequireLockTimeout = "require-lock-timeout", Error,
        "A statement that needs a strong lock waits behind any long query on the table, and while it waits every other query on that table queues behind it: a busy table stops answering until the migration gets its lock.",
        "Start the migration with `SET lock_timeout = '5s';` so it fails fast instead of stalling the running release, and deploy again later if it times out.";
    PreferRepack = "prefer-repack", Error,
        "VACUUM FULL and CLUSTER rewrite the table under an ACCESS EXCLUSIVE lock, blocking reads and writes for the whole rewrite.",
        "Do not run them from a migration: rebuild the table online with pg_repack or pg_squeeze from a maintenance job.";
    BanConcurrentIndexCreationInTransaction = "ban-concurrent-index-creation-in-transaction", Error,
        "PostgreSQL refuses CREATE/DROP INDEX CONCURRENTLY (and VACUUM, REINDEX CONCURRENTLY, ALTER TYPE … ADD VALUE on old versions) inside a transaction block, so the deploy fails; Flyway also refuses a script that mixes such statements with others unless told how to run it.",
        "Put the statement in a migration marked `-- baton:no-transaction` (Flyway: a `<script>.conf` with `executeInTransaction=false`), with no BEGIN/COMMIT around it.";
    TransactionNesting = "transaction-nesting", Error,
        "The migration already runs in a transaction: COMMIT or ROLLBACK inside it ends that transaction early, so a later failure leaves the schema half-migrated and the history wrong.",
        "Remove BEGIN/COMMIT; to manage transactions yourself, mark the migration `-- baton:no-transaction`.";
    ContractWithoutMarker = "contract-without-marker", Error,
        "This removes or renames something the release still running may use (a function, view, type, trigger or default), so it belongs to the contract half, which must run only once that release is gone.",
        "Move it to a later migration marked `-- baton:contract`, shipped after the release that stops using it.";
    AddingSerialPrimaryKeyField = "adding-serial-primary-key-field", Error,
        "Adding a primary key to an existing table builds its unique index under an ACCESS EXCLUSIVE lock, blocking reads and writes for the whole build; a serial or identity column added with it first rewrites every row.",
        "`CREATE UNIQUE INDEX CONCURRENTLY` on the key columns (in a `-- baton:no-transaction` migration), make them NOT NULL (see adding-not-nullable-field), then `ALTER TABLE … ADD CONSTRAINT name PRIMARY KEY USING INDEX index_name`, which is instant. For a new id column: add it nullable, fill it in batches, then the same steps.";
    RequireConcurrentPartitionDetach = "require-concurrent-partition-detach", Error,
        "DETACH PARTITION without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the partitioned table, blocking reads and writes of every partition while it waits and runs.",
        "`ALTER TABLE … DETACH PARTITION … CONCURRENTLY` (PostgreSQL 14+) in a migration marked `-- baton:no-transaction`; if it is interrupted, finish it with `ALTER TABLE … DETACH PARTITION … FINALIZE`.";
    BanTruncateCascade = "ban-truncate-cascade", Error,
        "TRUNCATE … CASCADE also empties every table that has a foreign key to the ones named, recursively, under an ACCESS EXCLUSIVE lock on each: it deletes rows the running release relies on in tables the migration never names, and blocks them all.",
        "Name every table to empty, without CASCADE (PostgreSQL then refuses if a referencing table was forgotten), or delete the rows in batches with `DELETE … WHERE …`.";
    BanAlterDomainWithAddConstraint = "ban-alter-domain-with-add-constraint", Error,
        "ALTER DOMAIN … ADD CONSTRAINT checks every column of every table that uses the domain under a SHARE lock, blocking writes to those tables for the whole scan; NOT VALID only defers the same scan, under the same lock, to ALTER DOMAIN … VALIDATE CONSTRAINT.",
        "Put the rule on the table columns instead: `ALTER TABLE … ADD CONSTRAINT … CHECK (…) NOT VALID`, then `ALTER TABLE … VALIDATE CONSTRAINT …` in another transaction, table by table.";
    BanDropDatabase = "ban-drop-database", Error,
        "DROP DATABASE deletes every table the release still running uses, irrecoverably; it has no place in an application's migrations (PostgreSQL also refuses it inside a transaction).",
        "Drop databases by hand, outside the migrations, after a backup and once nothing connects to them.";
    BanUncommittedTransaction = "ban-uncommitted-transaction", Error,
        "A BEGIN with no COMMIT after it leaves the transaction open when the script ends: what the runner does next runs inside it, the changes are rolled back when the connection closes, and the locks they took stay held until then.",
        "End the block with `COMMIT;`, or remove BEGIN and let each statement commit on its own.";
    BanDropNotNull = "ban-drop-not-null", Warning,
        "Once the column accepts NULL, rows written without it reach the release still running (and any release a rollback returns to), which may assume the column is always set and fail reading them.",
        "Drop NOT NULL only to retire the column, once every live release reads it as optional: drop NOT NULL, ship the code that stops writing it, then drop the column in a `-- baton:contract` migration. Accept the finding with `-- baton:allow ban-drop-not-null`.";
    BanCreateDomainWithConstraint = "ban-create-domain-with-constraint", Warning,
        "A CHECK or NOT NULL on a domain is checked against every column of every table using it whenever it changes, under locks that block writes, so the rule can never be changed online (see ban-alter-domain-with-add-constraint).",
        "Create the domain without constraints and put them on the table columns, where `ADD CONSTRAINT … NOT VALID` and `VALIDATE CONSTRAINT` let them change online.";
    BanCharField = "ban-char-field", Warning,
        "char(n) pads every value with spaces to n characters and ignores trailing spaces when comparing, so what the application reads back differs from what it wrote; it is no faster than text.",
        "Use `text` (or `varchar` without a limit), with `CHECK (char_length(col) <= n)` if the length is a business rule.";
    PreferBigintOverInt = "prefer-bigint-over-int", Warning,
        "A 32-bit integer overflows at 2,147,483,647; for an id or a counter that day comes, and widening the column then is a type change that rewrites the table under an ACCESS EXCLUSIVE lock (changing-column-type).",
        "Use `bigint` (`bigint GENERATED BY DEFAULT AS IDENTITY` for ids); it costs 4 bytes more per row.";
    PreferBigintOverSmallint = "prefer-bigint-over-smallint", Warning,
        "A 16-bit integer overflows at 32,767, and widening the column then is a type change that rewrites the table under an ACCESS EXCLUSIVE lock (changing-column-type).",
        "Use `bigint` (or `integer` at the very least); the bytes saved rarely survive alignment padding anyway.";
    PreferIdentity = "prefer-identity", Warning,
        "serial columns get their default from a separate sequence with its own owner, permissions and dependencies, which grants, dumps and later ALTERs handle awkwardly; identity columns are the SQL-standard replacement.",
        "`bigint GENERATED BY DEFAULT AS IDENTITY` (or `GENERATED ALWAYS AS IDENTITY` to refuse explicit values).";
    PreferTextField = "prefer-text-field", Warning,
        "A varchar(n) limit is no faster than text, and changing it later is an ALTER COLUMN TYPE under an ACCESS EXCLUSIVE lock (a full rewrite or scan when it shrinks), which changing-column-type refuses on a live table.",
        "Use `text` with `CHECK (char_length(col) <= n)`; a check can be replaced online (add the new one NOT VALID, validate it, drop the old one).";
    PreferTimestamptz = "prefer-timestamptz", Warning,
        "timestamp without time zone stores a wall-clock reading with no zone: values written by sessions in different time zones cannot be compared, and daylight-saving changes make some of them ambiguous.",
        "Use `timestamptz` (timestamp with time zone): it stores an instant, in the same 8 bytes, and shows it in the session's zone.";
    PreferRobustStmts = "prefer-robust-stmts", Warning,
        "This statement runs outside a transaction, so when a later statement fails it stays applied (and a failed concurrent index build leaves an INVALID index behind); running the migration again then fails here, because its work already exists or is already gone.",
        "Make it safe to run twice: `CREATE … IF NOT EXISTS`, `CREATE OR REPLACE`, `DROP … IF EXISTS`, `ADD COLUMN IF NOT EXISTS`, `DROP COLUMN IF EXISTS`, `DROP CONSTRAINT IF EXISTS` just before `ADD CONSTRAINT`; before `CREATE INDEX CONCURRENTLY`, `DROP INDEX CONCURRENTLY IF EXISTS` of the same name, since `IF NOT EXISTS` would keep an INVALID index. Or move the statements that can run in a transaction to a migration of their own.";
    RequireStatementTimeout = "require-statement-timeout", Warning,
        "lock_timeout only bounds the wait for a lock: once a statement holds it, a step slower than expected (a rewrite, a scan) blocks the table for as long as it runs.",
        "Add `SET statement_timeout = '…';` at the top of the migration, long enough for the work and short enough to bound an outage; for deliberately long work, write `-- baton:allow require-statement-timeout` above it.";
    RequireEnumValueOrdering = "require-enum-value-ordering", Warning,
        "ALTER TYPE … ADD VALUE without BEFORE or AFTER appends the value last; enum values compare by position, so `<`, `>` and ORDER BY on the type put it where its author may not expect.",
        "Say where it goes: `ALTER TYPE … ADD VALUE 'new' BEFORE 'existing'` (or `AFTER`); if last is right, write `-- baton:allow require-enum-value-ordering` above it.";
    IdentifierTooLong = "identifier-too-long", Warning,
        "PostgreSQL silently cuts names longer than 63 bytes, so the object gets a name other than the one written: two long names with the same first 63 bytes collide, and tools or code that compare the full name do not find it.",
        "Use a name of at most 63 bytes (shorten the table or column part of an index or constraint name).";
    UnknownDirective = "unknown-directive", Warning,
        "A misspelt `-- baton:` directive is ignored, so the migration would run in a way its author did not ask for.",
        "Use `-- baton:no-transaction`, `-- baton:contract` or `-- baton:allow <rule-id>[, <rule-id>…]` with a rule id from `baton db lint --rules`.";
    SyntaxError = "syntax-error", Error,
        "The script cannot be read (an unclosed string, identifier, comment or dollar quote), so PostgreSQL would refuse it too.",
        "Close the quote or comment that starts at the line shown.";
}

impl Rule {
    /// Whether the rule holds on that database. The rules about PostgreSQL's
    /// locks and online DDL (`CONCURRENTLY`, `NOT VALID`, `lock_timeout`,
    /// `statement_timeout`, table rewrites), its domains and enums, its types
    /// and its 63-byte names are PostgreSQL's alone: SQLite has none of those
    /// statements, and MySQL's online DDL works otherwise. What breaks the
    /// release still running (a dropped, renamed or required column) and
    /// what breaks the script (transactions, syntax, directives) holds on
    /// every database; a 32-bit integer is one on MySQL too, not on SQLite.
    pub fn applies_to(self, dialect: Dialect) -> bool {
        use Rule::*;
        let postgres_only = matches!(
            self,
            RequireConcurrentIndexCreation
                | RequireConcurrentIndexDeletion
                | RequireConcurrentReindex
                | RequireConcurrentPartitionDetach
                | RequireLockTimeout
                | RequireStatementTimeout
                | AddingForeignKeyConstraint
                | ConstraintMissingNotValid
                | DisallowedUniqueConstraint
                | AddingNotNullableField
                | AddingFieldWithDefault
                | AddingSerialPrimaryKeyField
                | PreferRepack
                | BanConcurrentIndexCreationInTransaction
                | BanAlterDomainWithAddConstraint
                | BanCreateDomainWithConstraint
                | RequireEnumValueOrdering
                | BanTruncateCascade
                | IdentifierTooLong
                | PreferTextField
                | BanCharField
                | PreferTimestamptz
                | PreferIdentity
        );
        match dialect {
            Dialect::Postgres => true,
            Dialect::MySql => !postgres_only,
            Dialect::Sqlite => {
                !postgres_only && !matches!(self, PreferBigintOverInt | PreferBigintOverSmallint)
            }
        }
    }
}

impl From<Rule> for &'static str {
    fn from(rule: Rule) -> &'static str {
        rule.id()
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}
