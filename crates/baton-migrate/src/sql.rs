//! A PostgreSQL tokenizer and statement splitter that knows line numbers.
//!
//! This module owns cutting a migration script into statements the way
//! PostgreSQL reads it: `--` and nested `/* */` comments, `'…'` strings (with
//! `''` escapes, `E'…'` backslash escapes, `B`/`X`/`N`/`U&` prefixes),
//! `"…"` identifiers, `$tag$…$tag$` dollar quotes, `$1` parameters, Flyway
//! `${placeholders}`, parentheses, and the `BEGIN ATOMIC … END` bodies of
//! SQL-standard functions, whose inner `;` do not end the statement. It must
//! never interpret statements: that is [`crate::lint`]'s job; the runner uses
//! [`split`] to send one statement at a time (needed where a statement may
//! `COMMIT`, as a batched backfill in a `DO` block does).
//!
//! Line breaks are LF, CRLF or a lone CR, as for Flyway's checksum. `COPY …
//! FROM STDIN` data blocks are not supported.

use serde::Serialize;

/// The kinds of token the linter needs to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A keyword or unquoted identifier (also a Flyway `${placeholder}`).
    Word,
    /// `"quoted identifier"`.
    QuotedIdent,
    /// `'string'`, with any prefix (`E'…'`, `B'…'`, …).
    String,
    /// `$tag$…$tag$`.
    DollarString,
    Number,
    /// `$1`.
    Param,
    /// Any other single character: `( ) , ; . : = …`.
    Punct,
}

/// One token with the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Token {
    pub kind: TokenKind,
    /// The token as written in the source.
    pub text: String,
    pub line: u32,
    #[serde(skip)]
    start: usize,
    #[serde(skip)]
    end: usize,
}

impl Token {
    /// Whether this is the keyword `word` (case-insensitive, unquoted).
    pub fn is_word(&self, word: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(word)
    }

    pub fn is_punct(&self, c: char) -> bool {
        self.kind == TokenKind::Punct && self.text.len() == c.len_utf8() && self.text.starts_with(c)
    }

    /// The identifier this token names, as PostgreSQL folds it: unquoted
    /// words in lower case, quoted ones as written.
    pub fn ident(&self) -> Option<String> {
        match self.kind {
            TokenKind::Word => Some(self.text.to_lowercase()),
            TokenKind::QuotedIdent => {
                let inner = self.text.strip_prefix("U&").unwrap_or(&self.text);
                let inner = inner.get(1..inner.len().saturating_sub(1)).unwrap_or("");
                Some(inner.replace("\"\"", "\""))
            }
            _ => None,
        }
    }

    /// The content of a plain `'…'` string literal (no prefix handling).
    pub fn string_value(&self) -> Option<String> {
        if self.kind != TokenKind::String {
            return None;
        }
        let inner = self.text.strip_prefix(['E', 'e']).unwrap_or(&self.text);
        let inner = inner.get(1..inner.len().saturating_sub(1))?;
        Some(inner.replace("''", "'"))
    }
}

/// A comment, its text without `--` or `/* */`, and where it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comment {
    pub text: String,
    pub line: u32,
    #[serde(skip)]
    start: usize,
}

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    /// Line of the statement's first token.
    pub line: u32,
    /// Line of its last token.
    pub end_line: u32,
    /// The source text, without the terminating `;`.
    pub text: String,
    pub tokens: Vec<Token>,
    /// Comments since the end of the previous statement, up to this one's end.
    pub comments: Vec<Comment>,
}

impl Statement {
    /// Comments written before the statement's first token.
    pub fn leading_comments(&self) -> impl Iterator<Item = &Comment> {
        let first = self.tokens.first().map_or(usize::MAX, |t| t.start);
        self.comments.iter().filter(move |c| c.start < first)
    }
}

/// A whole script: its statements and the comments after the last one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Script {
    pub statements: Vec<Statement>,
    pub trailing_comments: Vec<Comment>,
}

impl Script {
    /// Every comment of the script, in order.
    pub fn comments(&self) -> impl Iterator<Item = &Comment> {
        self.statements
            .iter()
            .flat_map(|s| s.comments.iter())
            .chain(self.trailing_comments.iter())
    }
}

/// Text PostgreSQL itself would refuse to read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum SqlError {
    #[error("line {line}: string literal is never closed")]
    UnterminatedString { line: u32 },
    #[error("line {line}: quoted identifier is never closed")]
    UnterminatedIdentifier { line: u32 },
    #[error("line {line}: block comment is never closed")]
    UnterminatedComment { line: u32 },
    #[error("line {line}: dollar-quoted text {tag} is never closed")]
    UnterminatedDollarQuote { line: u32, tag: String },
}

impl SqlError {
    pub fn line(&self) -> u32 {
        match self {
            SqlError::UnterminatedString { line }
            | SqlError::UnterminatedIdentifier { line }
            | SqlError::UnterminatedComment { line }
            | SqlError::UnterminatedDollarQuote { line, .. } => *line,
        }
    }
}

/// Splits a script into statements.
pub fn split(sql: &str) -> Result<Vec<Statement>, SqlError> {
    parse(sql).map(|script| script.statements)
}

/// Splits a script into statements, keeping its comments.
pub fn parse(sql: &str) -> Result<Script, SqlError> {
    let lines = LineIndex::new(sql);
    let (tokens, comments) = tokenize(sql, &lines)?;
    Ok(assemble(sql, tokens, comments))
}

/// Byte offsets where lines start, to turn offsets into 1-based lines.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(sql: &str) -> LineIndex {
        let bytes = sql.as_bytes();
        let mut starts = vec![0];
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    starts.push(i + 2);
                    i += 2;
                    continue;
                }
                b'\r' | b'\n' => starts.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> u32 {
        let index = self.starts.partition_point(|&start| start <= offset);
        u32::try_from(index).unwrap_or(u32::MAX)
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_ident_continue(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

fn tokenize(sql: &str, lines: &LineIndex) -> Result<(Vec<Token>, Vec<Comment>), SqlError> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut comments = Vec::new();
    let mut i = 0;
    while i < sql.len() {
        let rest = &sql[i..];
        let Some(c) = rest.chars().next() else { break };
        let start = i;
        let line = lines.line(start);
        let push = |tokens: &mut Vec<Token>, kind, end: usize| {
            tokens.push(Token {
                kind,
                text: sql[start..end].to_string(),
                line,
                start,
                end,
            });
            end
        };
        if c.is_whitespace() {
            i += c.len_utf8();
        } else if rest.starts_with("--") {
            let end = rest.find(['\n', '\r']).map_or(sql.len(), |n| i + n);
            comments.push(Comment {
                text: sql[i + 2..end].to_string(),
                line,
                start,
            });
            i = end;
        } else if rest.starts_with("/*") {
            let end = block_comment_end(bytes, i).ok_or(SqlError::UnterminatedComment { line })?;
            comments.push(Comment {
                text: sql[i + 2..end - 2].to_string(),
                line,
                start,
            });
            i = end;
        } else if c == '\'' {
            let end = quoted_end(bytes, i + 1, b'\'', false)
                .ok_or(SqlError::UnterminatedString { line })?;
            i = push(&mut tokens, TokenKind::String, end);
        } else if c == '"' {
            let end = quoted_end(bytes, i + 1, b'"', false)
                .ok_or(SqlError::UnterminatedIdentifier { line })?;
            i = push(&mut tokens, TokenKind::QuotedIdent, end);
        } else if c == '$' {
            let after = &rest[1..];
            if after.starts_with(|d: char| d.is_ascii_digit()) {
                let digits = after
                    .find(|d: char| !d.is_ascii_digit())
                    .unwrap_or(after.len());
                i = push(&mut tokens, TokenKind::Param, i + 1 + digits);
            } else if let Some(tag) = dollar_tag(rest) {
                let body = i + tag.len();
                let close =
                    sql[body..]
                        .find(tag)
                        .ok_or_else(|| SqlError::UnterminatedDollarQuote {
                            line,
                            tag: tag.to_string(),
                        })?;
                i = push(
                    &mut tokens,
                    TokenKind::DollarString,
                    body + close + tag.len(),
                );
            } else if after.starts_with('{') {
                // A Flyway placeholder, replaced before PostgreSQL sees it.
                let end = after.find('}').map_or(sql.len(), |n| i + 1 + n + 1);
                i = push(&mut tokens, TokenKind::Word, end);
            } else {
                i = push(&mut tokens, TokenKind::Punct, i + 1);
            }
        } else if is_ident_start(c) {
            let len = rest
                .find(|d: char| !is_ident_continue(d))
                .unwrap_or(rest.len());
            let word = &rest[..len];
            let next = rest[len..].chars().next();
            if next == Some('\'') && matches!(word, "E" | "e") {
                let end = quoted_end(bytes, i + len + 1, b'\'', true)
                    .ok_or(SqlError::UnterminatedString { line })?;
                i = push(&mut tokens, TokenKind::String, end);
            } else if next == Some('\'') && matches!(word, "B" | "b" | "X" | "x" | "N" | "n") {
                let end = quoted_end(bytes, i + len + 1, b'\'', false)
                    .ok_or(SqlError::UnterminatedString { line })?;
                i = push(&mut tokens, TokenKind::String, end);
            } else if matches!(word, "U" | "u") && rest[len..].starts_with("&'") {
                let end = quoted_end(bytes, i + len + 2, b'\'', false)
                    .ok_or(SqlError::UnterminatedString { line })?;
                i = push(&mut tokens, TokenKind::String, end);
            } else if matches!(word, "U" | "u") && rest[len..].starts_with("&\"") {
                let end = quoted_end(bytes, i + len + 2, b'"', false)
                    .ok_or(SqlError::UnterminatedIdentifier { line })?;
                i = push(&mut tokens, TokenKind::QuotedIdent, end);
            } else {
                i = push(&mut tokens, TokenKind::Word, i + len);
            }
        } else if c.is_ascii_digit()
            || (c == '.' && rest[1..].starts_with(|d: char| d.is_ascii_digit()))
        {
            let mut end = i;
            let mut previous = ' ';
            for d in rest.chars() {
                let exponent_sign = matches!(d, '+' | '-') && matches!(previous, 'e' | 'E');
                if !(d.is_ascii_alphanumeric() || d == '_' || d == '.' || exponent_sign) {
                    break;
                }
                end += d.len_utf8();
                previous = d;
            }
            i = push(&mut tokens, TokenKind::Number, end);
        } else {
            i = push(&mut tokens, TokenKind::Punct, i + c.len_utf8());
        }
    }
    Ok((tokens, comments))
}

/// End (exclusive) of a `/* */` comment starting at `start`; they nest.
fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// End (exclusive) of a quoted run whose body starts at `from`; a doubled
/// quote is an escaped quote, and with `backslash` a `\` escapes the next byte.
fn quoted_end(bytes: &[u8], from: usize, quote: u8, backslash: bool) -> Option<usize> {
    let mut i = from;
    while i < bytes.len() {
        let b = bytes[i];
        if backslash && b == b'\\' {
            i += 2;
        } else if b == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The opening `$tag$` at the start of `rest`, if it is one.
fn dollar_tag(rest: &str) -> Option<&str> {
    let body = &rest[1..];
    let len = body.find(|c: char| !(c.is_alphanumeric() || c == '_' || !c.is_ascii()))?;
    if body[..len].starts_with(|c: char| c.is_ascii_digit()) || !body[len..].starts_with('$') {
        return None;
    }
    Some(&rest[..len + 2])
}

fn assemble(sql: &str, tokens: Vec<Token>, comments: Vec<Comment>) -> Script {
    let mut script = Script::default();
    let mut comments = comments.into_iter().peekable();
    let mut current: Vec<Token> = Vec::new();
    let mut parens = 0usize;
    let mut atomic = 0usize;

    let finish =
        |current: &mut Vec<Token>,
         end: usize,
         script: &mut Script,
         comments: &mut std::iter::Peekable<std::vec::IntoIter<Comment>>| {
            if current.is_empty() {
                // An empty statement (`;;`, or the end of the script) leaves its
                // comments to whatever follows.
                return;
            }
            let mut own = Vec::new();
            while let Some(c) = comments.next_if(|c| c.start < end) {
                own.push(c);
            }
            if let (Some(first), Some(last)) = (current.first(), current.last()) {
                script.statements.push(Statement {
                    line: first.line,
                    end_line: last.line,
                    text: sql[first.start..last.end].to_string(),
                    tokens: std::mem::take(current),
                    comments: own,
                });
            }
        };

    for token in tokens {
        if token.is_punct(';') && parens == 0 && atomic == 0 {
            let end = token.end;
            finish(&mut current, end, &mut script, &mut comments);
            continue;
        }
        if token.is_punct('(') {
            parens += 1;
        } else if token.is_punct(')') {
            parens = parens.saturating_sub(1);
        } else if atomic > 0 && token.is_word("CASE") {
            atomic += 1;
        } else if atomic > 0 && token.is_word("END") {
            atomic -= 1;
        } else if token.is_word("ATOMIC")
            && current.last().is_some_and(|t| t.is_word("BEGIN"))
            && starts_routine(&current)
        {
            atomic = 1;
        }
        current.push(token);
    }
    finish(&mut current, sql.len(), &mut script, &mut comments);
    script.trailing_comments = comments.collect();
    script
}

/// `CREATE [OR REPLACE] FUNCTION|PROCEDURE`: only routines have atomic bodies.
fn starts_routine(tokens: &[Token]) -> bool {
    let mut words = tokens.iter();
    if !words.next().is_some_and(|t| t.is_word("CREATE")) {
        return false;
    }
    let mut next = words.next();
    if next.is_some_and(|t| t.is_word("OR")) {
        words.next();
        next = words.next();
    }
    next.is_some_and(|t| t.is_word("FUNCTION") || t.is_word("PROCEDURE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<String> {
        split(sql)
            .expect("valid sql")
            .into_iter()
            .map(|s| s.text)
            .collect()
    }

    #[test]
    fn splits_on_semicolons_and_keeps_line_numbers() {
        let statements = split("SELECT 1;\n\nSELECT\n  2;\r\nSELECT 3").expect("valid");
        let found: Vec<_> = statements
            .iter()
            .map(|s| (s.line, s.text.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![(1, "SELECT 1"), (3, "SELECT\n  2"), (5, "SELECT 3")]
        );
        assert_eq!(statements[1].end_line, 4);
    }

    #[test]
    fn lone_cr_counts_as_a_line_break() {
        let statements = split("SELECT 1;\rSELECT 2;").expect("valid");
        assert_eq!(statements[1].line, 2);
    }

    #[test]
    fn semicolons_inside_quotes_comments_and_dollar_quotes_do_not_split() {
        let sql = "INSERT INTO t VALUES ('a;b', E'c\\';d', \"odd;name\");\n\
                   -- a comment; still a comment\n\
                   /* block ; /* nested ; */ still */\n\
                   CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$;\n\
                   DO $$ BEGIN PERFORM 1; END $$;";
        let found = texts(sql);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[1].ends_with("$body$"));
        assert!(found[2].starts_with("DO $$"));
    }

    #[test]
    fn begin_atomic_bodies_keep_their_semicolons() {
        let sql = "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql BEGIN ATOMIC\n\
                   SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;\n\
                   SELECT 2;\nEND;\nSELECT 3;";
        let found = texts(sql);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].ends_with("END"));
    }

    #[test]
    fn comments_are_attached_to_the_statement_they_precede() {
        let script =
            parse("-- first\nSELECT 1;\n-- second\nSELECT 2; -- tail\n-- end").expect("valid");
        let leading: Vec<_> = script.statements[1]
            .leading_comments()
            .map(|c| c.text.trim().to_string())
            .collect();
        assert_eq!(leading, vec!["second"]);
        assert_eq!(script.trailing_comments.len(), 2);
    }

    #[test]
    fn unterminated_text_is_reported_with_its_line() {
        assert_eq!(
            split("SELECT 1;\nSELECT 'oops"),
            Err(SqlError::UnterminatedString { line: 2 })
        );
        assert_eq!(
            split("/* open"),
            Err(SqlError::UnterminatedComment { line: 1 })
        );
        assert!(matches!(
            split("DO $x$ BEGIN"),
            Err(SqlError::UnterminatedDollarQuote { line: 1, .. })
        ));
    }

    #[test]
    fn identifiers_fold_like_postgres() {
        let statements = split("ALTER TABLE \"Users\" ADD x int").expect("valid");
        let tokens = &statements[0].tokens;
        assert_eq!(tokens[2].ident().as_deref(), Some("Users"));
        assert_eq!(tokens[0].ident().as_deref(), Some("alter"));
    }

    #[test]
    fn parameters_placeholders_and_numbers() {
        let statements = split("SELECT $1, ${schema}.t, 1.5e-3, .5").expect("valid");
        let kinds: Vec<_> = statements[0].tokens.iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            vec![
                TokenKind::Word,
                TokenKind::Param,
                TokenKind::Punct,
                TokenKind::Word,
                TokenKind::Punct,
                TokenKind::Word,
                TokenKind::Punct,
                TokenKind::Number,
                TokenKind::Punct,
                TokenKind::Number
            ]
        );
    }
}
