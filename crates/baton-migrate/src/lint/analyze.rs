//! What one statement does to the schema, read from its tokens.
//!
//! This module owns turning a [`Statement`] into [`Action`]s: the table and
//! column it touches, whether it builds an index concurrently, whether a
//! constraint is `NOT VALID`, and so on. It must never judge safety; the
//! rules in [`super::check`] do that. Statements it does not recognise
//! become [`Op::Other`], which no rule flags: the linter may miss a danger in
//! an unusual statement, but it never refuses one it cannot read.

use crate::sql::{Statement, Token, TokenKind};

/// A possibly schema-qualified name, folded as PostgreSQL folds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    pub schema: Option<String>,
    pub name: String,
}

impl Name {
    /// Same object, when one side may omit the schema.
    pub fn matches(&self, other: &Name) -> bool {
        self.name == other.name
            && match (&self.schema, &other.schema) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConstraintKind {
    Check,
    ForeignKey,
    Unique,
    PrimaryKey,
    Exclude,
}

/// Kinds of object a `CREATE` or `DROP` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    Table,
    View,
    MaterializedView,
    Function,
    Type,
    Sequence,
    Schema,
    Extension,
    Database,
    Other,
}

/// A column's type as written, folded: its words in lower case, without a
/// schema or modifiers (`character varying`, `timestamp with time zone`),
/// and whether a length or precision modifier follows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SqlType {
    pub words: Vec<String>,
    pub modifier: bool,
}

impl SqlType {
    pub fn is(&self, words: &[&str]) -> bool {
        self.words.len() == words.len() && self.words.iter().zip(words).all(|(a, b)| a == b)
    }
}

impl std::fmt::Display for SqlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.words.join(" "))?;
        if self.modifier {
            f.write_str("(…)")?;
        }
        Ok(())
    }
}

/// How a column being added is defined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ColumnDef {
    pub type_name: String,
    pub sql_type: SqlType,
    pub not_null: bool,
    /// Tokens of the `DEFAULT` expression.
    pub default: Option<Vec<Token>>,
    pub identity: bool,
    pub generated_stored: bool,
    pub references: Option<Name>,
    pub check: bool,
    pub unique: bool,
    pub primary_key: bool,
}

/// A column of a `CREATE TABLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColumnSpec {
    pub name: String,
    pub def: ColumnDef,
    pub line: u32,
}

impl ColumnDef {
    pub fn is_serial(&self) -> bool {
        matches!(
            self.type_name.as_str(),
            "serial" | "serial2" | "serial4" | "serial8" | "bigserial" | "smallserial"
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    CreateTable {
        table: Name,
        references: Vec<Name>,
        columns: Vec<ColumnSpec>,
    },
    CreateIndex {
        table: Name,
        name: Option<Name>,
        concurrently: bool,
    },
    DropIndex {
        names: Vec<Name>,
        concurrently: bool,
    },
    Reindex {
        concurrently: bool,
    },
    AddColumn {
        table: Name,
        column: String,
        def: ColumnDef,
    },
    DropColumn {
        table: Name,
        column: String,
    },
    RenameColumn {
        table: Name,
        from: String,
        to: String,
    },
    RenameTable {
        table: Name,
        to: String,
    },
    AlterColumnType {
        table: Name,
        column: String,
        sql_type: SqlType,
    },
    SetNotNull {
        table: Name,
        column: String,
    },
    DropNotNull {
        table: Name,
        column: String,
    },
    SetDefault {
        table: Name,
    },
    DropDefault {
        table: Name,
        column: String,
    },
    AddConstraint {
        table: Name,
        name: Option<String>,
        kind: ConstraintKind,
        not_valid: bool,
        using_index: bool,
        references: Option<Name>,
    },
    ValidateConstraint {
        table: Name,
        name: String,
    },
    DropConstraint {
        table: Name,
        name: Option<String>,
    },
    DetachPartition {
        table: Name,
        concurrently: bool,
    },
    /// Any other `ALTER TABLE` action: takes a lock, changes nothing the
    /// running release depends on.
    OtherAlterTable {
        table: Name,
    },
    Create {
        kind: ObjectKind,
        name: Name,
    },
    Drop {
        kind: ObjectKind,
        names: Vec<Name>,
    },
    CreateTrigger {
        name: String,
        table: Name,
    },
    /// `CREATE DOMAIN`; `constrained` when it has a CHECK or NOT NULL.
    CreateDomain {
        name: Name,
        constrained: bool,
    },
    /// `ALTER DOMAIN … ADD CONSTRAINT` (`validate: false`) or
    /// `… VALIDATE CONSTRAINT`.
    DomainConstraint {
        domain: Name,
        validate: bool,
    },
    /// `ALTER TYPE … ADD VALUE`; `positioned` with BEFORE or AFTER.
    AddEnumValue {
        type_name: Name,
        positioned: bool,
    },
    DropTrigger {
        name: String,
        table: Name,
    },
    /// `ALTER FUNCTION|TYPE … RENAME`, `ALTER TYPE … RENAME VALUE`.
    RenameOther {
        what: String,
    },
    /// `SET [LOCAL] lock_timeout`, `RESET lock_timeout`, `set_config(…)`.
    LockTimeout {
        local: bool,
        enabled: bool,
    },
    /// The same forms for `statement_timeout`.
    StatementTimeout {
        local: bool,
        enabled: bool,
    },
    VacuumFull,
    Cluster,
    Lock {
        tables: Vec<Name>,
        strong: bool,
    },
    Truncate {
        tables: Vec<Name>,
        cascade: bool,
    },
    Begin,
    End,
    Other,
}

/// One action with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Action {
    pub op: Op,
    pub line: u32,
    /// Written with `IF [NOT] EXISTS` or `OR REPLACE`, so running it again
    /// after a partial failure does not fail.
    pub guarded: bool,
}

/// A statement's actions, and whether PostgreSQL refuses to run it inside a
/// transaction block (Flyway's list, plus `DETACH PARTITION … CONCURRENTLY`
/// and `REINDEX … CONCURRENTLY`).
pub(crate) struct Analysis {
    pub actions: Vec<Action>,
    pub non_transactional: Option<String>,
}

/// A cursor over top-level tokens.
struct Cursor<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(tokens: &'a [Token]) -> Self {
        Cursor { tokens, at: 0 }
    }

    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.at)
    }

    fn peek_word(&self, word: &str) -> bool {
        self.peek().is_some_and(|t| t.is_word(word))
    }

    fn next(&mut self) -> Option<&'a Token> {
        let token = self.tokens.get(self.at);
        self.at += 1;
        token
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.peek_word(word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// Eats the whole sequence or nothing.
    fn eat_all(&mut self, words: &[&str]) -> bool {
        let matches = words
            .iter()
            .enumerate()
            .all(|(k, w)| self.tokens.get(self.at + k).is_some_and(|t| t.is_word(w)));
        if matches {
            self.at += words.len();
        }
        matches
    }

    fn ident(&mut self) -> Option<String> {
        let token = self.peek()?;
        if matches!(token.kind, TokenKind::Word | TokenKind::QuotedIdent) {
            self.at += 1;
            token.ident()
        } else {
            None
        }
    }

    fn name(&mut self) -> Option<Name> {
        let mut parts = vec![self.ident()?];
        while self.peek().is_some_and(|t| t.is_punct('.')) {
            self.at += 1;
            parts.push(self.ident()?);
        }
        let name = parts.pop()?;
        Some(Name {
            schema: parts.pop(),
            name,
        })
    }

    fn rest(&self) -> &'a [Token] {
        self.tokens.get(self.at..).unwrap_or(&[])
    }
}

/// Splits tokens on commas outside parentheses.
fn split_top_level(tokens: &[Token]) -> Vec<&[Token]> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        if t.is_punct('(') || t.is_punct('[') {
            depth += 1;
        } else if t.is_punct(')') || t.is_punct(']') {
            depth = depth.saturating_sub(1);
        } else if t.is_punct(',') && depth == 0 {
            parts.push(&tokens[start..i]);
            start = i + 1;
        }
    }
    parts.push(&tokens[start..]);
    parts
}

/// Whether `words` appear consecutively outside parentheses.
fn has_sequence(tokens: &[Token], words: &[&str]) -> bool {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate() {
        if t.is_punct('(') {
            depth += 1;
        } else if t.is_punct(')') {
            depth = depth.saturating_sub(1);
        } else if depth == 0
            && words
                .iter()
                .enumerate()
                .all(|(k, w)| tokens.get(i + k).is_some_and(|t| t.is_word(w)))
        {
            return true;
        }
    }
    false
}

pub(crate) fn analyze(statement: &Statement) -> Analysis {
    let tokens = &statement.tokens;
    let line = statement.line;
    let one = |op| {
        vec![Action {
            op,
            line,
            guarded: false,
        }]
    };
    let mut c = Cursor::new(tokens);
    let non_transactional = non_transactional(tokens);
    let is_alter_table = tokens.first().is_some_and(|t| t.is_word("ALTER"))
        && tokens.get(1).is_some_and(|t| t.is_word("TABLE"));
    let mut actions = match c.next() {
        Some(t) if t.is_word("ALTER") => alter(&mut c, line),
        Some(t) if t.is_word("CREATE") => one(create(&mut c)),
        Some(t) if t.is_word("DROP") => one(drop(&mut c)),
        Some(t) if t.is_word("SET") => one(set(&mut c)),
        Some(t) if t.is_word("RESET") => {
            let reset = |op: fn(bool, bool) -> Op| Action {
                op: op(false, false),
                line,
                guarded: false,
            };
            if c.peek_word("ALL") {
                vec![reset(lock_timeout), reset(statement_timeout)]
            } else if c.peek_word("lock_timeout") {
                vec![reset(lock_timeout)]
            } else if c.peek_word("statement_timeout") {
                vec![reset(statement_timeout)]
            } else {
                one(Op::Other)
            }
        }
        Some(t) if t.is_word("SELECT") => one(select_set_config(c.rest())),
        Some(t) if t.is_word("VACUUM") => {
            let full = c.peek_word("FULL")
                || c.peek().is_some_and(|t| t.is_punct('('))
                    && c.rest()
                        .iter()
                        .take_while(|t| !t.is_punct(')'))
                        .any(|t| t.is_word("FULL"));
            one(if full { Op::VacuumFull } else { Op::Other })
        }
        Some(t) if t.is_word("CLUSTER") => one(Op::Cluster),
        Some(t) if t.is_word("REINDEX") => one(Op::Reindex {
            concurrently: has_sequence(tokens, &["CONCURRENTLY"])
                || tokens.iter().any(|t| t.is_word("CONCURRENTLY")),
        }),
        Some(t) if t.is_word("LOCK") => one(lock(&mut c)),
        Some(t) if t.is_word("TRUNCATE") => {
            c.eat("TABLE");
            c.eat("ONLY");
            let rest = c.rest();
            let end = rest
                .iter()
                .position(|t| {
                    ["RESTART", "CONTINUE", "CASCADE", "RESTRICT"]
                        .iter()
                        .any(|w| t.is_word(w))
                })
                .unwrap_or(rest.len());
            one(Op::Truncate {
                tables: names_list(&rest[..end]),
                cascade: rest[end..].iter().any(|t| t.is_word("CASCADE")),
            })
        }
        Some(t) if t.is_word("BEGIN") || t.is_word("START") => one(Op::Begin),
        Some(t)
            if t.is_word("COMMIT")
                || t.is_word("END")
                || t.is_word("ROLLBACK")
                || t.is_word("ABORT") =>
        {
            // `ROLLBACK TO SAVEPOINT` stays inside the transaction.
            if c.peek_word("TO") {
                one(Op::Other)
            } else {
                one(Op::End)
            }
        }
        _ => one(Op::Other),
    };
    if !is_alter_table {
        let guarded = statement_guarded(tokens);
        for action in &mut actions {
            action.guarded = guarded;
        }
    }
    Analysis {
        actions,
        non_transactional,
    }
}

fn lock_timeout(local: bool, enabled: bool) -> Op {
    Op::LockTimeout { local, enabled }
}

fn statement_timeout(local: bool, enabled: bool) -> Op {
    Op::StatementTimeout { local, enabled }
}

/// Whether the statement's head says `IF [NOT] EXISTS` or `OR REPLACE`.
fn statement_guarded(tokens: &[Token]) -> bool {
    let head = &tokens[..tokens.len().min(8)];
    has_sequence(head, &["IF", "NOT", "EXISTS"])
        || has_sequence(head, &["IF", "EXISTS"])
        || has_sequence(head, &["OR", "REPLACE"])
}

/// The statement's leading words when PostgreSQL refuses it in a transaction.
fn non_transactional(tokens: &[Token]) -> Option<String> {
    let words: Vec<String> = tokens
        .iter()
        .take(8)
        .take_while(|t| t.kind == TokenKind::Word)
        .map(|t| t.text.to_uppercase())
        .collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let refused = matches!(
        w.as_slice(),
        ["CREATE", "INDEX", "CONCURRENTLY", ..]
            | ["CREATE", "UNIQUE", "INDEX", "CONCURRENTLY", ..]
            | ["DROP", "INDEX", "CONCURRENTLY", ..]
            | ["VACUUM", ..]
            | ["ALTER", "SYSTEM", ..]
            | [
                "CREATE" | "DROP",
                "DATABASE" | "TABLESPACE" | "SUBSCRIPTION",
                ..
            ]
            | ["DISCARD", "ALL", ..]
            | ["REINDEX", "SCHEMA" | "DATABASE" | "SYSTEM", ..]
            | ["REINDEX", "VERBOSE", "SCHEMA" | "DATABASE" | "SYSTEM", ..]
    ) || (w.first() == Some(&"REINDEX")
        && tokens.iter().any(|t| t.is_word("CONCURRENTLY")))
        || (w.starts_with(&["ALTER", "TYPE"]) && has_sequence(tokens, &["ADD", "VALUE"]))
        || (w.starts_with(&["ALTER", "TABLE"])
            && has_sequence(tokens, &["DETACH", "PARTITION"])
            && tokens
                .last()
                .is_some_and(|t| t.is_word("CONCURRENTLY") || t.is_word("FINALIZE")));
    refused.then(|| {
        let shown: Vec<&str> = tokens.iter().take(4).map(|t| t.text.as_str()).collect();
        shown.join(" ")
    })
}

fn names_list(tokens: &[Token]) -> Vec<Name> {
    split_top_level(tokens)
        .into_iter()
        .filter_map(|part| {
            let mut c = Cursor::new(part);
            c.eat("ONLY");
            c.name()
        })
        .collect()
}

fn alter(c: &mut Cursor, line: u32) -> Vec<Action> {
    let one = |op| {
        vec![Action {
            op,
            line,
            guarded: false,
        }]
    };
    if c.eat("TABLE") {
        return alter_table(c, line);
    }
    if c.eat("DOMAIN") {
        return match c.name() {
            Some(domain) if c.eat("ADD") => one(Op::DomainConstraint {
                domain,
                validate: false,
            }),
            Some(domain) if c.eat_all(&["VALIDATE", "CONSTRAINT"]) => one(Op::DomainConstraint {
                domain,
                validate: true,
            }),
            _ => one(Op::Other),
        };
    }
    if c.peek_word("TYPE") && has_sequence(c.rest(), &["ADD", "VALUE"]) {
        c.eat("TYPE");
        let Some(type_name) = c.name() else {
            return one(Op::Other);
        };
        let rest = c.rest();
        let positioned = rest
            .iter()
            .any(|t| t.is_word("BEFORE") || t.is_word("AFTER"));
        return one(Op::AddEnumValue {
            type_name,
            positioned,
        });
    }
    let relation = c.eat("VIEW") || c.eat_all(&["MATERIALIZED", "VIEW"]) || c.eat("SCHEMA");
    if relation {
        c.eat_all(&["IF", "EXISTS"]);
        let Some(table) = c.name() else {
            return one(Op::Other);
        };
        if c.eat("RENAME") {
            if c.eat("TO") {
                let to = c.ident().unwrap_or_default();
                return one(Op::RenameTable { table, to });
            }
            c.eat("COLUMN");
            let from = c.ident().unwrap_or_default();
            c.eat("TO");
            let to = c.ident().unwrap_or_default();
            return one(Op::RenameColumn { table, from, to });
        }
        if c.eat_all(&["SET", "SCHEMA"]) {
            let to = c.ident().unwrap_or_default();
            return one(Op::RenameTable { table, to });
        }
        return one(Op::Other);
    }
    let routine = c.eat("FUNCTION") || c.eat("PROCEDURE") || c.eat("ROUTINE") || c.eat("TYPE");
    if routine
        && (has_sequence(c.rest(), &["RENAME"]) || has_sequence(c.rest(), &["SET", "SCHEMA"]))
    {
        let what: Vec<&str> = c.rest().iter().take(3).map(|t| t.text.as_str()).collect();
        return one(Op::RenameOther {
            what: what.join(" "),
        });
    }
    one(Op::Other)
}

fn alter_table(c: &mut Cursor, line: u32) -> Vec<Action> {
    c.eat_all(&["IF", "EXISTS"]);
    c.eat("ONLY");
    let Some(table) = c.name() else {
        return vec![Action {
            op: Op::Other,
            line,
            guarded: false,
        }];
    };
    if c.peek().is_some_and(|t| t.is_punct('*')) {
        c.next();
    }
    split_top_level(c.rest())
        .into_iter()
        .filter(|part| !part.is_empty())
        .map(|part| Action {
            line: part.first().map_or(line, |t| t.line),
            op: alter_table_action(part, &table),
            guarded: statement_guarded(&part[..part.len().min(5)]),
        })
        .collect()
}

fn alter_table_action(tokens: &[Token], table: &Name) -> Op {
    let mut c = Cursor::new(tokens);
    let table = table.clone();
    let other = |table: Name| Op::OtherAlterTable { table };
    if c.eat("ADD") {
        if c.eat("CONSTRAINT") {
            let name = c.ident();
            return add_constraint(&mut c, table, name);
        }
        if ["CHECK", "FOREIGN", "UNIQUE", "PRIMARY", "EXCLUDE"]
            .iter()
            .any(|w| c.peek_word(w))
        {
            return add_constraint(&mut c, table, None);
        }
        c.eat("COLUMN");
        c.eat_all(&["IF", "NOT", "EXISTS"]);
        let Some(column) = c.ident() else {
            return other(table);
        };
        return Op::AddColumn {
            table,
            column,
            def: column_def(c.rest()),
        };
    }
    if c.eat("DROP") {
        if c.eat("CONSTRAINT") {
            c.eat_all(&["IF", "EXISTS"]);
            let name = c.ident();
            return Op::DropConstraint { table, name };
        }
        c.eat("COLUMN");
        c.eat_all(&["IF", "EXISTS"]);
        return match c.ident() {
            Some(column) => Op::DropColumn { table, column },
            None => other(table),
        };
    }
    if c.eat("ALTER") {
        if c.peek_word("CONSTRAINT") {
            return other(table);
        }
        c.eat("COLUMN");
        let Some(column) = c.ident() else {
            return other(table);
        };
        if c.eat("TYPE") || c.eat_all(&["SET", "DATA", "TYPE"]) {
            return Op::AlterColumnType {
                table,
                column,
                sql_type: sql_type(c.rest()),
            };
        }
        if c.eat_all(&["SET", "NOT", "NULL"]) {
            return Op::SetNotNull { table, column };
        }
        if c.eat_all(&["DROP", "NOT", "NULL"]) {
            return Op::DropNotNull { table, column };
        }
        if c.eat_all(&["SET", "DEFAULT"]) {
            return Op::SetDefault { table };
        }
        if c.eat_all(&["DROP", "DEFAULT"]) {
            return Op::DropDefault { table, column };
        }
        return other(table);
    }
    if c.eat("RENAME") {
        if c.eat("TO") {
            let to = c.ident().unwrap_or_default();
            return Op::RenameTable { table, to };
        }
        if c.peek_word("CONSTRAINT") {
            return other(table);
        }
        c.eat("COLUMN");
        let from = c.ident().unwrap_or_default();
        c.eat("TO");
        let to = c.ident().unwrap_or_default();
        return Op::RenameColumn { table, from, to };
    }
    if c.eat_all(&["SET", "SCHEMA"]) {
        let to = c.ident().unwrap_or_default();
        return Op::RenameTable { table, to };
    }
    if c.eat_all(&["DETACH", "PARTITION"]) {
        let concurrently = c.rest().iter().any(|t| t.is_word("CONCURRENTLY"));
        return Op::DetachPartition {
            table,
            concurrently,
        };
    }
    if c.eat_all(&["VALIDATE", "CONSTRAINT"]) {
        return match c.ident() {
            Some(name) => Op::ValidateConstraint { table, name },
            None => other(table),
        };
    }
    other(table)
}

fn add_constraint(c: &mut Cursor, table: Name, name: Option<String>) -> Op {
    let kind = if c.eat("CHECK") {
        ConstraintKind::Check
    } else if c.eat_all(&["FOREIGN", "KEY"]) {
        ConstraintKind::ForeignKey
    } else if c.eat("UNIQUE") {
        ConstraintKind::Unique
    } else if c.eat_all(&["PRIMARY", "KEY"]) {
        ConstraintKind::PrimaryKey
    } else if c.eat("EXCLUDE") {
        ConstraintKind::Exclude
    } else {
        return Op::OtherAlterTable { table };
    };
    let rest = c.rest();
    let using_index = rest.iter().enumerate().any(|(i, t)| {
        t.is_word("USING")
            && rest.get(i + 1).is_some_and(|t| t.is_word("INDEX"))
            && !rest.get(i + 2).is_some_and(|t| t.is_word("TABLESPACE"))
    });
    let references = rest
        .iter()
        .position(|t| t.is_word("REFERENCES"))
        .and_then(|i| Cursor::new(&rest[i + 1..]).name());
    Op::AddConstraint {
        table,
        name,
        kind,
        not_valid: has_sequence(rest, &["NOT", "VALID"]),
        using_index,
        references,
    }
}

/// Words that end a column's type or `DEFAULT` expression.
const COLUMN_CONSTRAINT_WORDS: &[&str] = &[
    "CONSTRAINT",
    "NOT",
    "NULL",
    "DEFAULT",
    "CHECK",
    "UNIQUE",
    "PRIMARY",
    "REFERENCES",
    "GENERATED",
    "COLLATE",
    "DEFERRABLE",
    "INITIALLY",
];

fn is_constraint_word(t: &Token) -> bool {
    COLUMN_CONSTRAINT_WORDS.iter().any(|w| t.is_word(w))
}

fn column_def(tokens: &[Token]) -> ColumnDef {
    let mut def = ColumnDef {
        type_name: tokens.first().and_then(Token::ident).unwrap_or_default(),
        sql_type: sql_type(tokens),
        ..ColumnDef::default()
    };
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        if t.is_punct('(') {
            depth += 1;
        } else if t.is_punct(')') {
            depth = depth.saturating_sub(1);
        } else if depth == 0 {
            let next = tokens.get(i + 1);
            if t.is_word("NOT") && next.is_some_and(|n| n.is_word("NULL")) {
                def.not_null = true;
            } else if t.is_word("DEFAULT") {
                // The first token always belongs to the expression (`DEFAULT NULL`).
                let mut end = i + 2;
                let mut d = usize::from(next.is_some_and(|n| n.is_punct('(')));
                while end < tokens.len() {
                    let u = &tokens[end];
                    if u.is_punct('(') {
                        d += 1;
                    } else if u.is_punct(')') {
                        d = d.saturating_sub(1);
                    } else if d == 0 && is_constraint_word(u) {
                        break;
                    }
                    end += 1;
                }
                def.default = Some(tokens[i + 1..end.min(tokens.len())].to_vec());
                i = end;
                continue;
            } else if t.is_word("GENERATED") {
                let rest = &tokens[i..];
                if has_sequence(rest, &["AS", "IDENTITY"]) {
                    def.identity = true;
                } else if rest.iter().any(|u| u.is_word("STORED")) {
                    def.generated_stored = true;
                }
            } else if t.is_word("REFERENCES") {
                def.references = Cursor::new(&tokens[i + 1..]).name();
            } else if t.is_word("CHECK") {
                def.check = true;
            } else if t.is_word("UNIQUE") {
                def.unique = true;
            } else if t.is_word("PRIMARY") && next.is_some_and(|n| n.is_word("KEY")) {
                def.primary_key = true;
            }
        }
        i += 1;
    }
    def
}

/// Reads a column type up to its constraints (or an `ALTER … TYPE`'s USING).
fn sql_type(tokens: &[Token]) -> SqlType {
    let mut found = SqlType::default();
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate() {
        if t.is_punct('(') {
            if depth == 0 {
                found.modifier = true;
            }
            depth += 1;
        } else if t.is_punct(')') {
            depth = depth.saturating_sub(1);
        } else if depth > 0 {
            continue;
        } else if is_constraint_word(t) || t.is_word("USING") {
            break;
        } else if matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent) {
            let qualifies = tokens.get(i + 1).is_some_and(|n| n.is_punct('.'));
            if let (false, Some(word)) = (qualifies, t.ident()) {
                found.words.push(word);
            }
        }
    }
    found
}

/// The column definitions of `CREATE TABLE name ( … )`.
fn table_columns(tokens: &[Token]) -> Vec<ColumnSpec> {
    if !tokens.first().is_some_and(|t| t.is_punct('(')) {
        return Vec::new();
    }
    let mut depth = 0usize;
    let close = tokens
        .iter()
        .position(|t| {
            if t.is_punct('(') {
                depth += 1;
            } else if t.is_punct(')') {
                depth -= 1;
            }
            depth == 0
        })
        .unwrap_or(tokens.len());
    const TABLE_CONSTRAINTS: &[&str] = &[
        "CONSTRAINT",
        "PRIMARY",
        "UNIQUE",
        "CHECK",
        "FOREIGN",
        "EXCLUDE",
        "LIKE",
    ];
    split_top_level(&tokens[1..close])
        .into_iter()
        .filter(|part| {
            part.first()
                .is_some_and(|t| !TABLE_CONSTRAINTS.iter().any(|w| t.is_word(w)))
        })
        .filter_map(|part| {
            let mut c = Cursor::new(part);
            let line = part.first()?.line;
            let name = c.ident()?;
            Some(ColumnSpec {
                name,
                def: column_def(c.rest()),
                line,
            })
        })
        .collect()
}

fn create(c: &mut Cursor) -> Op {
    c.eat_all(&["OR", "REPLACE"]);
    let unique = c.eat("UNIQUE");
    if c.eat("INDEX") {
        let concurrently = c.eat("CONCURRENTLY");
        c.eat_all(&["IF", "NOT", "EXISTS"]);
        let name = if c.peek_word("ON") { None } else { c.name() };
        if !c.eat("ON") {
            return Op::Other;
        }
        c.eat("ONLY");
        return match c.name() {
            Some(table) => Op::CreateIndex {
                table,
                name,
                concurrently,
            },
            None => Op::Other,
        };
    }
    if unique {
        return Op::Other;
    }
    while [
        "TEMP",
        "TEMPORARY",
        "UNLOGGED",
        "GLOBAL",
        "LOCAL",
        "RECURSIVE",
        "CONSTRAINT",
    ]
    .iter()
    .any(|w| c.eat(w))
    {}
    let kind = if c.eat("TABLE") {
        ObjectKind::Table
    } else if c.eat("VIEW") {
        ObjectKind::View
    } else if c.eat_all(&["MATERIALIZED", "VIEW"]) {
        ObjectKind::MaterializedView
    } else if c.eat("FUNCTION") || c.eat("PROCEDURE") {
        ObjectKind::Function
    } else if c.eat("TRIGGER") {
        let Some(name) = c.ident() else {
            return Op::Other;
        };
        let rest = c.rest();
        return match rest.iter().position(|t| t.is_word("ON")) {
            Some(on) => match Cursor::new(&rest[on + 1..]).name() {
                Some(table) => Op::CreateTrigger { name, table },
                None => Op::Other,
            },
            None => Op::Other,
        };
    } else if c.eat("DOMAIN") {
        let Some(name) = c.name() else {
            return Op::Other;
        };
        let rest = c.rest();
        let constrained = has_sequence(rest, &["CHECK"]) || has_sequence(rest, &["NOT", "NULL"]);
        return Op::CreateDomain { name, constrained };
    } else if c.eat("TYPE") {
        ObjectKind::Type
    } else if c.eat("SEQUENCE") {
        ObjectKind::Sequence
    } else if c.eat("SCHEMA") {
        ObjectKind::Schema
    } else if c.eat("EXTENSION") {
        ObjectKind::Extension
    } else {
        return Op::Other;
    };
    c.eat_all(&["IF", "NOT", "EXISTS"]);
    let Some(name) = c.name() else {
        return Op::Other;
    };
    if kind == ObjectKind::Table {
        let rest = c.rest();
        let references = rest
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_word("REFERENCES"))
            .filter_map(|(i, _)| Cursor::new(&rest[i + 1..]).name())
            .collect();
        return Op::CreateTable {
            table: name,
            references,
            columns: table_columns(rest),
        };
    }
    Op::Create { kind, name }
}

fn drop(c: &mut Cursor) -> Op {
    let kind = if c.eat("TABLE") {
        ObjectKind::Table
    } else if c.eat("INDEX") {
        let concurrently = c.eat("CONCURRENTLY");
        c.eat_all(&["IF", "EXISTS"]);
        return Op::DropIndex {
            names: names_list(c.rest()),
            concurrently,
        };
    } else if c.eat("VIEW") {
        ObjectKind::View
    } else if c.eat_all(&["MATERIALIZED", "VIEW"]) {
        ObjectKind::MaterializedView
    } else if c.eat("FUNCTION") || c.eat("PROCEDURE") || c.eat("ROUTINE") {
        ObjectKind::Function
    } else if c.eat("TRIGGER") {
        c.eat_all(&["IF", "EXISTS"]);
        let Some(name) = c.ident() else {
            return Op::Other;
        };
        if !c.eat("ON") {
            return Op::Other;
        }
        return match c.name() {
            Some(table) => Op::DropTrigger { name, table },
            None => Op::Other,
        };
    } else if c.eat("TYPE") || c.eat("DOMAIN") {
        ObjectKind::Type
    } else if c.eat("SEQUENCE") {
        ObjectKind::Sequence
    } else if c.eat("SCHEMA") {
        ObjectKind::Schema
    } else if c.eat("EXTENSION") {
        ObjectKind::Extension
    } else if c.eat("DATABASE") {
        ObjectKind::Database
    } else {
        ObjectKind::Other
    };
    c.eat_all(&["IF", "EXISTS"]);
    let names = split_top_level(c.rest())
        .into_iter()
        .filter_map(|part| Cursor::new(part).name())
        .collect();
    Op::Drop { kind, names }
}

fn set(c: &mut Cursor) -> Op {
    let local = c.eat("LOCAL");
    c.eat("SESSION");
    let op: fn(bool, bool) -> Op = if c.eat("lock_timeout") {
        lock_timeout
    } else if c.eat("statement_timeout") {
        statement_timeout
    } else {
        return Op::Other;
    };
    if !(c.eat("TO") || c.peek().is_some_and(|t| t.is_punct('=')) && c.next().is_some()) {
        return Op::Other;
    }
    op(local, timeout_enabled(c.peek()))
}

/// A lock timeout of zero, or `DEFAULT` (whatever the server says), does
/// not protect the release still running.
fn timeout_enabled(value: Option<&Token>) -> bool {
    let Some(value) = value else { return false };
    let text = match value.kind {
        TokenKind::String => value.string_value().unwrap_or_default(),
        TokenKind::Number => value.text.clone(),
        _ => return false,
    };
    let digits: String = text
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse::<u64>().is_ok_and(|n| n > 0)
}

/// `SELECT set_config('lock_timeout', '5s', is_local)`, or `statement_timeout`.
fn select_set_config(tokens: &[Token]) -> Op {
    let is_call = tokens.first().is_some_and(|t| t.is_word("set_config"))
        && tokens.get(1).is_some_and(|t| t.is_punct('('));
    if !is_call {
        return Op::Other;
    }
    let Some(close) = tokens.iter().position(|t| t.is_punct(')')) else {
        return Op::Other;
    };
    let args = split_top_level(&tokens[2..close]);
    let setting = args
        .first()
        .and_then(|a| a.first())
        .and_then(Token::string_value);
    let op: fn(bool, bool) -> Op = match setting.as_deref() {
        Some("lock_timeout") => lock_timeout,
        Some("statement_timeout") => statement_timeout,
        _ => return Op::Other,
    };
    op(
        args.get(2)
            .and_then(|a| a.first())
            .is_some_and(|t| t.is_word("true")),
        timeout_enabled(args.get(1).and_then(|a| a.first())),
    )
}

fn lock(c: &mut Cursor) -> Op {
    c.eat("TABLE");
    let rest = c.rest();
    let end = rest
        .iter()
        .position(|t| t.is_word("IN"))
        .unwrap_or(rest.len());
    let tables = names_list(&rest[..end]);
    let mode = &rest[end..];
    // Modes that let ordinary reads and writes through.
    let weak = has_sequence(mode, &["ACCESS", "SHARE"])
        || has_sequence(mode, &["ROW", "SHARE"])
        || has_sequence(mode, &["ROW", "EXCLUSIVE"])
        || has_sequence(mode, &["SHARE", "UPDATE", "EXCLUSIVE"]);
    Op::Lock {
        tables,
        strong: !weak,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::split;

    fn ops(sql: &str) -> Vec<Op> {
        split(sql)
            .expect("valid")
            .iter()
            .flat_map(|s| analyze(s).actions)
            .map(|a| a.op)
            .collect()
    }

    fn n(name: &str) -> Name {
        Name {
            schema: None,
            name: name.into(),
        }
    }

    #[test]
    fn alter_table_with_several_actions() {
        let found = ops("ALTER TABLE IF EXISTS ONLY users ADD COLUMN IF NOT EXISTS a int NOT NULL DEFAULT 0, DROP COLUMN b, RENAME COLUMN c TO d");
        assert_eq!(found.len(), 3, "{found:?}");
        let found = ops("ALTER TABLE users ADD a int NOT NULL DEFAULT 0, DROP b, ALTER c TYPE bigint, ALTER COLUMN d SET NOT NULL");
        assert!(
            matches!(&found[0], Op::AddColumn { column, def, .. } if column == "a" && def.not_null && def.default.is_some())
        );
        assert_eq!(
            found[1],
            Op::DropColumn {
                table: n("users"),
                column: "b".into()
            }
        );
        assert_eq!(
            found[2],
            Op::AlterColumnType {
                table: n("users"),
                column: "c".into(),
                sql_type: SqlType {
                    words: vec!["bigint".into()],
                    modifier: false
                }
            }
        );
        assert_eq!(
            found[3],
            Op::SetNotNull {
                table: n("users"),
                column: "d".into()
            }
        );
    }

    #[test]
    fn constraints() {
        let found = ops("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES public.users (id) NOT VALID");
        assert!(
            matches!(&found[0], Op::AddConstraint { kind: ConstraintKind::ForeignKey, not_valid: true, references: Some(r), .. } if r.name == "users")
        );
        let found = ops("ALTER TABLE t ADD CONSTRAINT u UNIQUE USING INDEX t_a_idx");
        assert!(matches!(
            &found[0],
            Op::AddConstraint {
                kind: ConstraintKind::Unique,
                using_index: true,
                ..
            }
        ));
        let found = ops("ALTER TABLE t ADD UNIQUE (a) USING INDEX TABLESPACE fast");
        assert!(matches!(
            &found[0],
            Op::AddConstraint {
                kind: ConstraintKind::Unique,
                using_index: false,
                ..
            }
        ));
    }

    #[test]
    fn default_expression_stops_at_the_next_constraint() {
        let found = ops("ALTER TABLE t ADD COLUMN id uuid DEFAULT gen_random_uuid() NOT NULL");
        let Op::AddColumn { def, .. } = &found[0] else {
            panic!("{found:?}")
        };
        let default: Vec<_> = def
            .default
            .iter()
            .flatten()
            .map(|t| t.text.as_str())
            .collect();
        assert_eq!(default, vec!["gen_random_uuid", "(", ")"]);
        assert!(def.not_null);
    }

    #[test]
    fn lock_timeout_forms() {
        assert_eq!(
            ops("SET lock_timeout = '2s'"),
            vec![Op::LockTimeout {
                local: false,
                enabled: true
            }]
        );
        assert_eq!(
            ops("SET LOCAL lock_timeout TO 5000"),
            vec![Op::LockTimeout {
                local: true,
                enabled: true
            }]
        );
        assert_eq!(
            ops("SET lock_timeout = 0"),
            vec![Op::LockTimeout {
                local: false,
                enabled: false
            }]
        );
        assert_eq!(
            ops("SET lock_timeout TO DEFAULT"),
            vec![Op::LockTimeout {
                local: false,
                enabled: false
            }]
        );
        assert_eq!(
            ops("SELECT set_config('lock_timeout', '3s', true)"),
            vec![Op::LockTimeout {
                local: true,
                enabled: true
            }]
        );
    }

    #[test]
    fn statements_postgres_refuses_in_a_transaction() {
        for sql in [
            "CREATE INDEX CONCURRENTLY i ON t (a)",
            "create unique index concurrently i on t (a)",
            "DROP INDEX CONCURRENTLY IF EXISTS i",
            "REINDEX INDEX CONCURRENTLY i",
            "VACUUM t",
            "ALTER TYPE mood ADD VALUE 'meh'",
            "ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY",
        ] {
            let statement = &split(sql).expect("valid")[0];
            assert!(analyze(statement).non_transactional.is_some(), "{sql}");
        }
        let statement = &split("CREATE INDEX i ON t (a)").expect("valid")[0];
        assert!(analyze(statement).non_transactional.is_none());
    }

    #[test]
    fn column_types_are_read_without_schema_modifiers_or_constraints() {
        let found = ops("CREATE TABLE IF NOT EXISTS t (\n  a character varying(20) NOT NULL,\n  b timestamp(3) without time zone DEFAULT now(),\n  c text[] COLLATE \"C\",\n  d pg_catalog.int4,\n  PRIMARY KEY (a)\n)");
        let Op::CreateTable { columns, .. } = &found[0] else {
            panic!("{found:?}")
        };
        let types: Vec<(String, u32, String)> = columns
            .iter()
            .map(|c| (c.name.clone(), c.line, c.def.sql_type.to_string()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("a".into(), 2, "character varying(…)".into()),
                ("b".into(), 3, "timestamp without time zone(…)".into()),
                ("c".into(), 4, "text".into()),
                ("d".into(), 5, "int4".into()),
            ]
        );
        let statement = &split("CREATE TABLE IF NOT EXISTS t (a text)").expect("valid")[0];
        assert!(analyze(statement).actions[0].guarded);
        let statement = &split("ALTER TABLE IF EXISTS t ADD COLUMN a text").expect("valid")[0];
        assert!(
            !analyze(statement).actions[0].guarded,
            "IF EXISTS of the table"
        );
    }

    #[test]
    fn triggers_and_drops() {
        assert_eq!(
            ops("CREATE OR REPLACE TRIGGER trg BEFORE UPDATE OF a, b ON app.users FOR EACH ROW EXECUTE FUNCTION f()"),
            vec![Op::CreateTrigger { name: "trg".into(), table: Name { schema: Some("app".into()), name: "users".into() } }]
        );
        assert_eq!(
            ops("DROP TRIGGER IF EXISTS trg ON users"),
            vec![Op::DropTrigger {
                name: "trg".into(),
                table: n("users")
            }]
        );
        assert_eq!(
            ops("DROP FUNCTION IF EXISTS f(int), g()"),
            vec![Op::Drop {
                kind: ObjectKind::Function,
                names: vec![n("f"), n("g")]
            }]
        );
    }
}
