//! Walking a script's statements in order and applying the rules.
//!
//! This module owns the state that spans statements: which tables the
//! script created (no one else can be using them, so they are exempt), which
//! transaction each statement runs in, whether a `lock_timeout` and a
//! `statement_timeout` are in force, and which directives apply. It must
//! never decide what a single statement means; [`super::analyze`] does.

use super::analyze::{
    analyze, Action, Analysis, ColumnDef, ConstraintKind, Name, ObjectKind, Op, SqlType,
};
use super::rules::{Rule, Severity};
use super::{Finding, LintOptions, LintReport, Phase, StatementReport};
use crate::sql::{self, Comment, Token, TokenKind};

const NO_TRANSACTION: &str = "no-transaction";
/// PostgreSQL's NAMEDATALEN less its terminating byte.
const MAX_IDENTIFIER_BYTES: usize = 63;
const CONTRACT: &str = "contract";
const ALLOW: &str = "allow";

/// Functions that return a new value per row: as a column default on an
/// existing table they force a rewrite.
const VOLATILE: &[&str] = &[
    "random",
    "random_normal",
    "gen_random_uuid",
    "gen_random_bytes",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
    "clock_timestamp",
    "timeofday",
    "nextval",
    "setval",
];

/// Functions (and function-like keywords) that are immutable or stable, so
/// PostgreSQL 11+ evaluates the default once and stores it in the catalog.
const NON_VOLATILE: &[&str] = &[
    "now",
    "transaction_timestamp",
    "statement_timestamp",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "current_setting",
    "current_user",
    "session_user",
    "current_schema",
    "cast",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "array",
    "row",
    "lower",
    "upper",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "concat",
    "concat_ws",
    "length",
    "substring",
    "replace",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_number",
    "date_trunc",
    "date_part",
    "extract",
    "timezone",
    "make_interval",
    "make_date",
    "make_timestamp",
    "make_timestamptz",
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "to_json",
    "to_jsonb",
    "abs",
    "round",
    "floor",
    "ceil",
    "md5",
];

struct Directives {
    no_transaction: bool,
    contract: bool,
    /// Per statement: rule ids accepted by `-- baton:allow` just above it.
    allow: Vec<Vec<Rule>>,
    problems: Vec<(u32, String)>,
}

fn directive(comment: &Comment) -> Option<&str> {
    comment.text.trim().strip_prefix("baton:")
}

fn read_directives(script: &sql::Script) -> Directives {
    let mut directives = Directives {
        no_transaction: false,
        contract: false,
        allow: vec![Vec::new(); script.statements.len()],
        problems: Vec::new(),
    };
    for comment in script.comments() {
        let Some(text) = directive(comment) else {
            continue;
        };
        let mut words = text.split_whitespace();
        match words.next() {
            Some(NO_TRANSACTION) => directives.no_transaction = true,
            Some(CONTRACT) => directives.contract = true,
            Some(ALLOW) => {}
            other => directives.problems.push((
                comment.line,
                format!("unknown directive `baton:{}`", other.unwrap_or("")),
            )),
        }
    }
    for (index, statement) in script.statements.iter().enumerate() {
        for comment in statement.leading_comments() {
            let Some(rest) = directive(comment).and_then(|t| t.trim_start().strip_prefix(ALLOW))
            else {
                continue;
            };
            for id in rest.split([',', ' ', '\t']).filter(|id| !id.is_empty()) {
                match Rule::from_id(id) {
                    Some(rule) => directives.allow[index].push(rule),
                    None => directives.problems.push((
                        comment.line,
                        format!("`baton:allow` names unknown rule `{id}`"),
                    )),
                }
            }
        }
    }
    directives
}

/// Lints `sql`; `configured` is the `.conf` file's `executeInTransaction`;
/// `new_tables` were created earlier in the same batch. Returns the report
/// and the tables new after this script (those and its own).
pub(crate) fn lint(
    script_name: &str,
    sql: &str,
    configured: Option<bool>,
    options: &LintOptions,
    new_tables: &[Name],
) -> (LintReport, Vec<Name>) {
    let script = match sql::parse(sql) {
        Ok(script) => script,
        Err(error) => {
            let rule = Rule::SyntaxError;
            let report = LintReport {
                script: script_name.to_string(),
                phase: Phase::Expand,
                execute_in_transaction: configured.unwrap_or(true),
                statements: Vec::new(),
                findings: vec![Finding {
                    rule,
                    script: script_name.to_string(),
                    line: error.line(),
                    severity: rule.severity(),
                    message: error.to_string(),
                    why: rule.why(),
                    recipe: rule.recipe(),
                }],
                allowed: Vec::new(),
            };
            return (report, new_tables.to_vec());
        }
    };
    let directives = read_directives(&script);
    let analyses: Vec<Analysis> = script.statements.iter().map(analyze).collect();

    let explicit = if directives.no_transaction {
        Some(false)
    } else {
        configured
    };
    let refused_in_transaction = analyses
        .iter()
        .filter(|a| a.non_transactional.is_some())
        .count();
    let execute_in_transaction = explicit.unwrap_or(refused_in_transaction == 0);
    let mixed =
        explicit.is_none() && refused_in_transaction > 0 && refused_in_transaction < analyses.len();

    let mut walk = Walk {
        script: script_name,
        options,
        contract_marker: directives.contract,
        created_tables: new_tables.to_vec(),
        created_indexes: Vec::new(),
        made_objects: Vec::new(),
        made_triggers: Vec::new(),
        not_valid_added: Vec::new(),
        validated_tables: Vec::new(),
        session_timeout: options.runner_lock_timeout,
        local_timeout: None,
        timeout_reported: false,
        session_statement_timeout: false,
        local_statement_timeout: None,
        statement_timeout_reported: false,
        outside_transaction: false,
        more_follow: false,
        dropped_if_exists: Vec::new(),
        findings: Vec::new(),
    };
    for analysis in &analyses {
        for action in &analysis.actions {
            match &action.op {
                Op::Create { kind, name } => walk.made_objects.push((*kind, name.clone())),
                Op::CreateDomain { name, .. } => {
                    walk.made_objects.push((ObjectKind::Type, name.clone()))
                }
                Op::CreateTrigger { name, table } => {
                    walk.made_triggers.push((name.clone(), table.clone()))
                }
                _ => {}
            }
        }
    }

    let mut statements = Vec::new();
    let mut group = 0usize;
    let mut in_block = false;
    // The BEGIN of a no-transaction script's block, while it is open.
    let mut open_begin: Option<(usize, u32)> = None;
    for (index, (statement, analysis)) in script.statements.iter().zip(&analyses).enumerate() {
        let is_begin = analysis.actions.iter().any(|a| a.op == Op::Begin);
        let is_end = analysis.actions.iter().any(|a| a.op == Op::End);
        if !execute_in_transaction {
            if is_begin {
                in_block = true;
                group += 1;
            } else if in_block {
                in_block = !is_end;
            } else {
                group += 1;
            }
        }
        if let Some(what) = &analysis.non_transactional {
            let why = if execute_in_transaction && !mixed {
                Some(format!(
                    "`{what}` cannot run inside the migration's transaction"
                ))
            } else if in_block && !is_begin {
                Some(format!(
                    "`{what}` cannot run inside the BEGIN … COMMIT around it"
                ))
            } else if mixed {
                Some(format!(
                    "`{what}` cannot run in a transaction, and the script mixes it with other statements, so Flyway refuses it and Baton will not guess"
                ))
            } else {
                None
            };
            if let Some(message) = why {
                walk.report(
                    index,
                    Rule::BanConcurrentIndexCreationInTransaction,
                    statement.line,
                    message,
                );
            }
        }
        if execute_in_transaction && (is_begin || is_end) {
            let first = statement.tokens.first().map_or("", |t| t.text.as_str());
            walk.report(
                index,
                Rule::TransactionNesting,
                statement.line,
                format!("`{first}` inside a migration that already runs in a transaction"),
            );
        }
        if !execute_in_transaction {
            if is_begin {
                open_begin = Some((index, statement.line));
            } else if is_end {
                open_begin = None;
            }
        }
        walk.outside_transaction = !execute_in_transaction && !in_block;
        walk.more_follow = index + 1 < script.statements.len();
        let mut contract = false;
        for action in &analysis.actions {
            walk.robustness(index, action);
            walk.identifiers(index, action);
            contract |= walk.action(index, group, action);
        }
        statements.push(StatementReport {
            line: statement.line,
            summary: summary(&statement.tokens),
            phase: if contract {
                Phase::Contract
            } else {
                Phase::Expand
            },
        });
    }

    if let Some((index, line)) = open_begin {
        walk.report(
            index,
            Rule::BanUncommittedTransaction,
            line,
            "BEGIN with no COMMIT before the end of the script".to_string(),
        );
    }

    for (line, message) in directives.problems {
        let rule = Rule::UnknownDirective;
        walk.findings.push((
            usize::MAX,
            Finding {
                rule,
                script: script_name.to_string(),
                line,
                severity: rule.severity(),
                message,
                why: rule.why(),
                recipe: rule.recipe(),
            },
        ));
    }

    let mut findings = Vec::new();
    let mut allowed = Vec::new();
    for (index, finding) in walk.findings {
        // Primary keys were reported as disallowed-unique-constraint before
        // they had their own rule; allowing that still covers them.
        let accepted = directives.allow.get(index).is_some_and(|rules| {
            rules.contains(&finding.rule)
                || finding.rule == Rule::AddingSerialPrimaryKeyField
                    && rules.contains(&Rule::DisallowedUniqueConstraint)
        });
        if accepted {
            allowed.push(finding);
        } else {
            findings.push(finding);
        }
    }
    findings.sort_by_key(|f| f.line);

    let phase = if directives.contract || statements.iter().any(|s| s.phase == Phase::Contract) {
        Phase::Contract
    } else {
        Phase::Expand
    };
    let report = LintReport {
        script: script_name.to_string(),
        phase,
        execute_in_transaction,
        statements,
        findings,
        allowed,
    };
    (report, walk.created_tables)
}

fn summary(tokens: &[Token]) -> String {
    let words: Vec<&str> = tokens
        .iter()
        .take_while(|t| !t.is_punct('('))
        .take(5)
        .map(|t| t.text.as_str())
        .collect();
    words.join(" ")
}

struct Walk<'a> {
    script: &'a str,
    options: &'a LintOptions,
    contract_marker: bool,
    created_tables: Vec<Name>,
    created_indexes: Vec<Name>,
    /// Objects the script creates anywhere: dropping one is a replacement.
    made_objects: Vec<(ObjectKind, Name)>,
    made_triggers: Vec<(String, Name)>,
    /// (transaction, constraint name) of constraints added NOT VALID.
    not_valid_added: Vec<(usize, String)>,
    validated_tables: Vec<Name>,
    session_timeout: bool,
    /// The transaction in which `SET LOCAL lock_timeout` is in force.
    local_timeout: Option<usize>,
    timeout_reported: bool,
    session_statement_timeout: bool,
    local_statement_timeout: Option<usize>,
    statement_timeout_reported: bool,
    /// Whether the statement being walked commits on its own.
    outside_transaction: bool,
    /// Whether statements follow it, whose failure would leave it applied.
    more_follow: bool,
    /// Constraint and index names dropped `IF EXISTS` so far: adding them
    /// next can run again.
    dropped_if_exists: Vec<String>,
    findings: Vec<(usize, Finding)>,
}

impl Walk<'_> {
    fn report(&mut self, index: usize, rule: Rule, line: u32, message: String) {
        self.report_as(index, rule, rule.severity(), line, message);
    }

    fn report_as(
        &mut self,
        index: usize,
        rule: Rule,
        severity: Severity,
        line: u32,
        message: String,
    ) {
        // One walk for every database; what a rule means elsewhere is the
        // rule's business (a SQLite table has no CONCURRENTLY to ask for).
        if !rule.applies_to(self.options.dialect) {
            return;
        }
        self.findings.push((
            index,
            Finding {
                rule,
                script: self.script.to_string(),
                line,
                severity,
                message,
                why: rule.why(),
                recipe: rule.recipe(),
            },
        ));
    }

    fn is_new(&self, table: &Name) -> bool {
        self.created_tables.iter().any(|t| t.matches(table))
    }

    /// Records that a statement takes a lock that blocks reads or writes.
    fn strong_lock(&mut self, index: usize, group: usize, line: u32, what: String) {
        let bounded = self.session_statement_timeout || self.local_statement_timeout == Some(group);
        if !bounded && !self.statement_timeout_reported {
            self.statement_timeout_reported = true;
            self.report(
                index,
                Rule::RequireStatementTimeout,
                line,
                format!("{what} with no statement_timeout set before it"),
            );
        }
        let protected = self.session_timeout || self.local_timeout == Some(group);
        if protected || self.timeout_reported {
            return;
        }
        self.timeout_reported = true;
        self.report(
            index,
            Rule::RequireLockTimeout,
            line,
            format!("{what} with no lock_timeout set before it"),
        );
    }

    /// `prefer-robust-stmts`: outside a transaction, a statement that would
    /// fail when the migration runs again after a later failure. A statement
    /// that fails undoes itself, except a concurrent index build, which
    /// leaves an INVALID index that `IF NOT EXISTS` would then keep.
    fn robustness(&mut self, index: usize, action: &Action) {
        if !self.outside_transaction {
            return;
        }
        let guarded_earlier = |name: &str| self.dropped_if_exists.iter().any(|n| n == name);
        let mut guarded = action.guarded;
        let mut alone_matters = false;
        let what = match &action.op {
            Op::CreateTable { table, .. } => Some(format!("CREATE TABLE {table}")),
            Op::CreateIndex {
                name,
                table,
                concurrently,
            } => {
                if *concurrently {
                    alone_matters = true;
                    guarded = false;
                }
                match name {
                    Some(name) if guarded_earlier(&name.name) => None,
                    Some(name) if *concurrently => Some(format!(
                        "CREATE INDEX CONCURRENTLY {name} without a DROP INDEX CONCURRENTLY IF EXISTS {name} before it"
                    )),
                    Some(name) => Some(format!("CREATE INDEX {name}")),
                    None => Some(format!("unnamed index on {table}")),
                }
            }
            Op::DropIndex { names, .. } => {
                if action.guarded {
                    for name in names {
                        self.dropped_if_exists.push(name.name.clone());
                    }
                }
                Some("DROP INDEX".to_string())
            }
            Op::AddColumn { table, column, .. } => Some(format!("ADD COLUMN {column} to {table}")),
            Op::DropColumn { table, column } => Some(format!("DROP COLUMN {column} of {table}")),
            Op::DropConstraint { table, name } => {
                if let (true, Some(name)) = (action.guarded, name) {
                    self.dropped_if_exists.push(name.clone());
                }
                Some(format!("DROP CONSTRAINT on {table}"))
            }
            Op::AddConstraint { table, name, .. } => match name {
                Some(name) if guarded_earlier(name) => None,
                _ => Some(format!("ADD CONSTRAINT on {table}")),
            },
            Op::Create { kind, name } if *kind != ObjectKind::Type => {
                Some(format!("CREATE of {name}"))
            }
            Op::Drop { kind, names } if *kind != ObjectKind::Other => {
                let shown: Vec<String> = names.iter().map(Name::to_string).collect();
                Some(format!("DROP of {}", shown.join(", ")))
            }
            Op::CreateTrigger { name, .. } => Some(format!("CREATE TRIGGER {name}")),
            Op::DropTrigger { name, .. } => Some(format!("DROP TRIGGER {name}")),
            _ => None,
        };
        let exposed = self.more_follow || alone_matters;
        if let (true, false, Some(what)) = (exposed, guarded, what) {
            self.report(
                index,
                Rule::PreferRobustStmts,
                action.line,
                format!("{what}: outside a transaction, running the migration again after a failure fails here"),
            );
        }
    }

    /// `identifier-too-long`: names PostgreSQL would cut to 63 bytes.
    fn identifiers(&mut self, index: usize, action: &Action) {
        let mut names: Vec<(&str, u32)> = Vec::new();
        match &action.op {
            Op::CreateTable { table, columns, .. } => {
                names.push((&table.name, action.line));
                names.extend(columns.iter().map(|c| (c.name.as_str(), c.line)));
            }
            Op::CreateIndex {
                name: Some(name), ..
            }
            | Op::Create { name, .. }
            | Op::CreateDomain { name, .. } => names.push((&name.name, action.line)),
            Op::AddColumn { column, .. } => names.push((column, action.line)),
            Op::AddConstraint {
                name: Some(name), ..
            }
            | Op::CreateTrigger { name, .. } => names.push((name, action.line)),
            Op::RenameColumn { to, .. } | Op::RenameTable { to, .. } => {
                names.push((to, action.line))
            }
            _ => {}
        }
        for (name, line) in names {
            if name.len() > MAX_IDENTIFIER_BYTES {
                let kept: String = name
                    .char_indices()
                    .take_while(|(i, c)| i + c.len_utf8() <= MAX_IDENTIFIER_BYTES)
                    .map(|(_, c)| c)
                    .collect();
                self.report(
                    index,
                    Rule::IdentifierTooLong,
                    line,
                    format!(
                        "`{name}` is {} bytes; PostgreSQL keeps `{kept}`",
                        name.len()
                    ),
                );
            }
        }
    }

    /// The type-choice rules, for a column of any table, new or not.
    fn column_type(
        &mut self,
        index: usize,
        line: u32,
        table: &Name,
        column: &str,
        sql_type: &SqlType,
        serial: bool,
    ) {
        let t = sql_type;
        let one_of = |names: &[&str]| names.iter().any(|n| t.is(&[n]));
        let rule = if one_of(&["int", "integer", "int4", "serial", "serial4"]) {
            Some(Rule::PreferBigintOverInt)
        } else if one_of(&["smallint", "int2", "smallserial", "serial2"]) {
            Some(Rule::PreferBigintOverSmallint)
        } else if (t.is(&["varchar"]) || t.is(&["character", "varying"])) && t.modifier {
            Some(Rule::PreferTextField)
        } else if one_of(&["char", "character", "bpchar"]) {
            Some(Rule::BanCharField)
        } else if t.is(&["timestamp"]) || t.is(&["timestamp", "without", "time", "zone"]) {
            Some(Rule::PreferTimestamptz)
        } else {
            None
        };
        if let Some(rule) = rule {
            self.report(index, rule, line, format!("column {table}.{column} is {t}"));
        }
        if serial {
            self.report(
                index,
                Rule::PreferIdentity,
                line,
                format!("column {table}.{column} is {t}"),
            );
        }
    }

    /// Applies the rules to one action; returns whether it is contract.
    fn action(&mut self, index: usize, group: usize, action: &Action) -> bool {
        let line = action.line;
        let marker = self.contract_marker;
        match &action.op {
            Op::CreateTable {
                table,
                references,
                columns,
            } => {
                for spec in columns {
                    self.column_type(
                        index,
                        spec.line,
                        table,
                        &spec.name,
                        &spec.def.sql_type,
                        spec.def.is_serial(),
                    );
                }
                for referenced in references {
                    if !self.is_new(referenced) {
                        self.strong_lock(
                            index,
                            group,
                            line,
                            format!("CREATE TABLE {table} locks {referenced} (SHARE ROW EXCLUSIVE) for its foreign key"),
                        );
                    }
                }
                self.created_tables.push(table.clone());
                false
            }
            Op::CreateIndex {
                table,
                name,
                concurrently,
            } => {
                if let Some(name) = name {
                    self.created_indexes.push(name.clone());
                }
                if !concurrently && !self.is_new(table) {
                    self.report(
                        index,
                        Rule::RequireConcurrentIndexCreation,
                        line,
                        format!("index on {table} built without CONCURRENTLY"),
                    );
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("CREATE INDEX locks {table} (SHARE)"),
                    );
                }
                false
            }
            Op::DropIndex {
                names,
                concurrently,
            } => {
                let own = names
                    .iter()
                    .all(|n| self.created_indexes.iter().any(|c| c.matches(n)));
                if !concurrently && !own {
                    let shown = names
                        .iter()
                        .map(Name::to_string)
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.report(
                        index,
                        Rule::RequireConcurrentIndexDeletion,
                        line,
                        format!("index {shown} dropped without CONCURRENTLY"),
                    );
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("DROP INDEX {shown} locks its table (ACCESS EXCLUSIVE)"),
                    );
                }
                false
            }
            Op::Reindex { concurrently } => {
                if !concurrently {
                    self.report(
                        index,
                        Rule::RequireConcurrentReindex,
                        line,
                        "REINDEX without CONCURRENTLY".to_string(),
                    );
                    self.strong_lock(index, group, line, "REINDEX locks its table".to_string());
                }
                false
            }
            Op::AddColumn { table, column, def } => {
                self.column_type(index, line, table, column, &def.sql_type, def.is_serial());
                if !self.is_new(table) {
                    self.add_column(index, group, line, table, column, def);
                }
                false
            }
            Op::DropColumn { table, column } => {
                let contract = !self.is_new(table);
                if contract {
                    if !marker {
                        self.report(
                            index,
                            Rule::BanDropColumn,
                            line,
                            format!(
                                "column {column} dropped from {table} outside a contract migration"
                            ),
                        );
                    }
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("DROP COLUMN locks {table} (ACCESS EXCLUSIVE)"),
                    );
                }
                contract
            }
            Op::RenameColumn { table, from, to } => {
                let contract = !self.is_new(table);
                if contract {
                    self.report(
                        index,
                        Rule::RenamingColumn,
                        line,
                        format!("column {from} of {table} renamed to {to}"),
                    );
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("RENAME COLUMN locks {table} (ACCESS EXCLUSIVE)"),
                    );
                }
                contract
            }
            Op::RenameTable { table, to } => {
                let contract = !self.is_new(table);
                if contract {
                    self.report(
                        index,
                        Rule::RenamingTable,
                        line,
                        format!("{table} renamed or moved to {to}"),
                    );
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("renaming {table} locks it (ACCESS EXCLUSIVE)"),
                    );
                }
                contract
            }
            Op::AlterColumnType {
                table,
                column,
                sql_type,
            } => {
                self.column_type(index, line, table, column, sql_type, false);
                let contract = !self.is_new(table);
                if contract {
                    self.report(
                        index,
                        Rule::ChangingColumnType,
                        line,
                        format!("type of {table}.{column} changed in place"),
                    );
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("ALTER COLUMN TYPE locks {table} (ACCESS EXCLUSIVE)"),
                    );
                }
                contract
            }
            Op::SetNotNull { table, column } => {
                if !self.is_new(table) {
                    if !self.validated_tables.iter().any(|t| t.matches(table)) {
                        self.report(
                            index,
                            Rule::AddingNotNullableField,
                            line,
                            format!("SET NOT NULL on existing column {table}.{column}"),
                        );
                    }
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("SET NOT NULL locks {table} (ACCESS EXCLUSIVE)"),
                    );
                }
                false
            }
            Op::DropNotNull { table, column } => {
                if !self.is_new(table) {
                    self.report(
                        index,
                        Rule::BanDropNotNull,
                        line,
                        format!("NOT NULL dropped from {table}.{column}"),
                    );
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("DROP NOT NULL locks {table} (ACCESS EXCLUSIVE)"),
                    );
                }
                false
            }
            Op::SetDefault { table } => {
                if !self.is_new(table) {
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("ALTER TABLE {table} locks it (ACCESS EXCLUSIVE)"),
                    );
                }
                false
            }
            Op::DropDefault { table, column } => {
                let contract = !self.is_new(table);
                if contract {
                    if !marker {
                        self.report(
                            index,
                            Rule::ContractWithoutMarker,
                            line,
                            format!("default of {table}.{column} dropped; inserts of the running release may rely on it"),
                        );
                    }
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("ALTER TABLE {table} locks it (ACCESS EXCLUSIVE)"),
                    );
                }
                contract
            }
            Op::AddConstraint {
                table,
                name,
                kind,
                not_valid,
                using_index,
                references,
            } => {
                if let (true, Some(name)) = (*not_valid, name) {
                    self.not_valid_added.push((group, name.clone()));
                }
                if self.is_new(table) {
                    return false;
                }
                let label = name.as_deref().map_or(String::new(), |n| format!(" {n}"));
                match kind {
                    ConstraintKind::ForeignKey if !not_valid => self.report(
                        index,
                        Rule::AddingForeignKeyConstraint,
                        line,
                        format!("foreign key{label} added to {table} without NOT VALID"),
                    ),
                    ConstraintKind::Check if !not_valid => self.report(
                        index,
                        Rule::ConstraintMissingNotValid,
                        line,
                        format!("check constraint{label} added to {table} without NOT VALID"),
                    ),
                    ConstraintKind::PrimaryKey if !using_index => self.report(
                        index,
                        Rule::AddingSerialPrimaryKeyField,
                        line,
                        format!("primary key{label} added to {table}: its index is built under an ACCESS EXCLUSIVE lock"),
                    ),
                    ConstraintKind::Unique | ConstraintKind::Exclude if !using_index =>
                    {
                        self.report(
                            index,
                            Rule::DisallowedUniqueConstraint,
                            line,
                            format!("constraint{label} on {table} builds its index under an ACCESS EXCLUSIVE lock"),
                        )
                    }
                    _ => {}
                }
                let locked = match references {
                    Some(other) => format!(
                        "adding a foreign key locks {table} and {other} (SHARE ROW EXCLUSIVE)"
                    ),
                    None => format!("ADD CONSTRAINT locks {table} (ACCESS EXCLUSIVE)"),
                };
                self.strong_lock(index, group, line, locked);
                false
            }
            Op::ValidateConstraint { table, name } => {
                if self.not_valid_added.contains(&(group, name.clone())) {
                    self.report(
                        index,
                        Rule::ConstraintMissingNotValid,
                        line,
                        format!("constraint {name} on {table} validated in the same transaction that added it"),
                    );
                }
                self.validated_tables.push(table.clone());
                false
            }
            Op::DetachPartition {
                table,
                concurrently,
            } => {
                if !self.is_new(table) {
                    if !concurrently {
                        self.report(
                            index,
                            Rule::RequireConcurrentPartitionDetach,
                            line,
                            format!("partition detached from {table} without CONCURRENTLY"),
                        );
                    }
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("DETACH PARTITION locks {table}"),
                    );
                }
                false
            }
            Op::OtherAlterTable { table } | Op::DropConstraint { table, .. } => {
                if !self.is_new(table) {
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("ALTER TABLE {table} locks it (ACCESS EXCLUSIVE)"),
                    );
                }
                false
            }
            Op::Create { .. } => false,
            Op::CreateDomain { name, constrained } => {
                if *constrained {
                    self.report(
                        index,
                        Rule::BanCreateDomainWithConstraint,
                        line,
                        format!("domain {name} created with a constraint"),
                    );
                }
                false
            }
            Op::DomainConstraint { domain, validate } => {
                let own = self
                    .made_objects
                    .iter()
                    .any(|(k, made)| *k == ObjectKind::Type && made.matches(domain));
                if !own {
                    self.report(
                        index,
                        Rule::BanAlterDomainWithAddConstraint,
                        line,
                        if *validate {
                            format!("constraint of domain {domain} validated: the tables using it are scanned under a SHARE lock")
                        } else {
                            format!("constraint added to domain {domain}")
                        },
                    );
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("ALTER DOMAIN {domain} locks the tables using it (SHARE)"),
                    );
                }
                false
            }
            Op::AddEnumValue {
                type_name,
                positioned,
            } => {
                if !positioned {
                    self.report(
                        index,
                        Rule::RequireEnumValueOrdering,
                        line,
                        format!("value added to {type_name} without BEFORE or AFTER"),
                    );
                }
                false
            }
            Op::Drop { kind, names } => self.drop(index, group, line, *kind, names),
            Op::CreateTrigger { table, .. } => {
                if !self.is_new(table) {
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("CREATE TRIGGER locks {table} (SHARE ROW EXCLUSIVE)"),
                    );
                }
                false
            }
            Op::DropTrigger { name, table } => {
                if self.is_new(table) {
                    return false;
                }
                self.strong_lock(
                    index,
                    group,
                    line,
                    format!("DROP TRIGGER locks {table} (ACCESS EXCLUSIVE)"),
                );
                let replaced = self
                    .made_triggers
                    .iter()
                    .any(|(n, t)| n == name && t.matches(table));
                if !replaced && !marker {
                    self.report(
                        index,
                        Rule::ContractWithoutMarker,
                        line,
                        format!("trigger {name} on {table} dropped"),
                    );
                }
                !replaced
            }
            Op::RenameOther { what } => {
                if !marker {
                    self.report(
                        index,
                        Rule::ContractWithoutMarker,
                        line,
                        format!("{what} renamed or moved"),
                    );
                }
                true
            }
            Op::LockTimeout { local, enabled } => {
                if *local {
                    self.local_timeout = enabled.then_some(group);
                } else {
                    self.session_timeout = *enabled;
                    if !enabled {
                        self.local_timeout = None;
                    }
                }
                false
            }
            Op::StatementTimeout { local, enabled } => {
                if *local {
                    self.local_statement_timeout = enabled.then_some(group);
                } else {
                    self.session_statement_timeout = *enabled;
                    if !enabled {
                        self.local_statement_timeout = None;
                    }
                }
                false
            }
            Op::VacuumFull | Op::Cluster => {
                let what = if action.op == Op::Cluster {
                    "CLUSTER"
                } else {
                    "VACUUM FULL"
                };
                self.report(
                    index,
                    Rule::PreferRepack,
                    line,
                    format!("{what} in a migration"),
                );
                self.strong_lock(
                    index,
                    group,
                    line,
                    format!("{what} locks its table (ACCESS EXCLUSIVE)"),
                );
                false
            }
            Op::Lock { tables, strong } => {
                if *strong && tables.iter().any(|t| !self.is_new(t)) {
                    self.strong_lock(index, group, line, "LOCK TABLE".to_string());
                }
                false
            }
            Op::Truncate { tables, cascade } => {
                if tables.iter().any(|t| !self.is_new(t)) {
                    if *cascade {
                        let shown: Vec<String> = tables.iter().map(Name::to_string).collect();
                        self.report(
                            index,
                            Rule::BanTruncateCascade,
                            line,
                            format!("TRUNCATE {} CASCADE", shown.join(", ")),
                        );
                    }
                    self.strong_lock(
                        index,
                        group,
                        line,
                        "TRUNCATE takes an ACCESS EXCLUSIVE lock".to_string(),
                    );
                }
                false
            }
            Op::Begin | Op::End | Op::Other => false,
        }
    }

    fn add_column(
        &mut self,
        index: usize,
        group: usize,
        line: u32,
        table: &Name,
        column: &str,
        def: &ColumnDef,
    ) {
        self.strong_lock(
            index,
            group,
            line,
            format!("ADD COLUMN locks {table} (ACCESS EXCLUSIVE)"),
        );
        let fills_rows = def.identity || def.generated_stored || def.is_serial();
        if def.not_null && def.default.is_none() && !fills_rows {
            self.report(
                index,
                Rule::AddingRequiredField,
                line,
                format!("NOT NULL column {column} added to {table} without a default"),
            );
        }
        if fills_rows {
            let what = if def.is_serial() {
                format!("{} (a nextval() default)", def.type_name)
            } else if def.identity {
                "an identity column".to_string()
            } else {
                "a stored generated column".to_string()
            };
            self.report(
                index,
                Rule::AddingFieldWithDefault,
                line,
                format!("column {column} of {table} is {what}: every existing row is rewritten"),
            );
        } else if let Some(default) = &def.default {
            if self.options.postgres_major < 11 {
                self.report(
                    index,
                    Rule::AddingFieldWithDefault,
                    line,
                    format!(
                        "column {column} of {table} has a default: PostgreSQL {} rewrites the table for any default",
                        self.options.postgres_major
                    ),
                );
            } else {
                match volatility(default) {
                    Volatility::Stored => {}
                    Volatility::Volatile(function) => self.report(
                        index,
                        Rule::AddingFieldWithDefault,
                        line,
                        format!("column {column} of {table} defaults to volatile {function}(): every existing row is rewritten"),
                    ),
                    Volatility::Unknown(function) => self.report_as(
                        index,
                        Rule::AddingFieldWithDefault,
                        Severity::Warning,
                        line,
                        format!("column {column} of {table} defaults to {function}(); if it is VOLATILE, every existing row is rewritten"),
                    ),
                }
            }
        }
        if let Some(referenced) = &def.references {
            self.report(
                index,
                Rule::AddingForeignKeyConstraint,
                line,
                format!("column {column} of {table} references {referenced}: the foreign key is checked under lock"),
            );
        }
        if def.check {
            self.report(
                index,
                Rule::ConstraintMissingNotValid,
                line,
                format!("column {column} of {table} has a CHECK constraint, checked against every row under lock"),
            );
        }
        if def.unique {
            self.report(
                index,
                Rule::DisallowedUniqueConstraint,
                line,
                format!("column {column} of {table} is UNIQUE: its index is built under lock"),
            );
        }
        if def.primary_key {
            self.report(
                index,
                Rule::AddingSerialPrimaryKeyField,
                line,
                format!(
                    "column {column} of {table} is a PRIMARY KEY: its index is built under lock"
                ),
            );
        }
    }

    fn drop(
        &mut self,
        index: usize,
        group: usize,
        line: u32,
        kind: ObjectKind,
        names: &[Name],
    ) -> bool {
        let marker = self.contract_marker;
        let shown = names
            .iter()
            .map(Name::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match kind {
            ObjectKind::Table => {
                // A table dropped and created again loses its rows: only one
                // created earlier by this script is the script's own.
                let contract = names.iter().any(|n| !self.is_new(n));
                if contract {
                    if !marker {
                        self.report(
                            index,
                            Rule::BanDropTable,
                            line,
                            format!("table {shown} dropped outside a contract migration"),
                        );
                    }
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("DROP TABLE locks {shown} (ACCESS EXCLUSIVE)"),
                    );
                }
                contract
            }
            ObjectKind::View
            | ObjectKind::MaterializedView
            | ObjectKind::Function
            | ObjectKind::Type
            | ObjectKind::Sequence
            | ObjectKind::Schema
            | ObjectKind::Extension => {
                let contract = names.iter().any(|n| {
                    !self
                        .made_objects
                        .iter()
                        .any(|(k, made)| *k == kind && made.matches(n))
                });
                if contract && !marker {
                    self.report(
                        index,
                        Rule::ContractWithoutMarker,
                        line,
                        format!("{shown} dropped"),
                    );
                }
                if contract && matches!(kind, ObjectKind::View | ObjectKind::MaterializedView) {
                    self.strong_lock(
                        index,
                        group,
                        line,
                        format!("DROP VIEW locks {shown} (ACCESS EXCLUSIVE)"),
                    );
                }
                contract
            }
            ObjectKind::Database => {
                self.report(
                    index,
                    Rule::BanDropDatabase,
                    line,
                    format!("database {shown} dropped"),
                );
                true
            }
            ObjectKind::Other => false,
        }
    }
}

enum Volatility {
    /// Evaluated once and stored in the catalog (PostgreSQL 11+).
    Stored,
    Volatile(String),
    Unknown(String),
}

fn volatility(expression: &[Token]) -> Volatility {
    let mut unknown = None;
    for (i, token) in expression.iter().enumerate() {
        let called = expression.get(i + 1).is_some_and(|t| t.is_punct('('));
        if token.kind != TokenKind::Word || !called {
            continue;
        }
        // `::numeric(10,2)` and `AS numeric(10,2)` name types, not functions.
        let previous = i.checked_sub(1).and_then(|p| expression.get(p));
        if previous.is_some_and(|p| p.is_punct(':') || p.is_word("AS")) {
            continue;
        }
        let name = token.text.to_lowercase();
        let name = name.rsplit('.').next().unwrap_or(&name).to_string();
        if VOLATILE.contains(&name.as_str()) {
            return Volatility::Volatile(name);
        }
        if !NON_VOLATILE.contains(&name.as_str()) && unknown.is_none() {
            unknown = Some(name);
        }
    }
    unknown.map_or(Volatility::Stored, Volatility::Unknown)
}
