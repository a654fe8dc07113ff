//! The two kinds of trouble a flag document can cause. A [`FlagsError`] stops
//! a document from being used at all (it is not JSON of the right shape); a
//! [`DefinitionWarning`] names one part of an otherwise usable document that
//! Baton had to treat as "off". This module only describes problems: it must
//! never log, print or decide what the caller does about them.

use thiserror::Error;

/// A flag document that cannot be used.
#[derive(Debug, Error)]
pub enum FlagsError {
    /// The text is not JSON of the Unleash client-features shape.
    #[error(
        "the flag document is not a valid Unleash client-features document \
         (line {line}, column {column}): {source}; check it against /api/client/features"
    )]
    InvalidDocument {
        line: usize,
        column: usize,
        #[source]
        source: serde_json::Error,
    },
}

impl From<serde_json::Error> for FlagsError {
    fn from(source: serde_json::Error) -> Self {
        FlagsError::InvalidDocument {
            line: source.line(),
            column: source.column(),
            source,
        }
    }
}

/// A part of a flag that Baton read as "never matches", so that a typo in one
/// rule cannot turn a flag on for everyone. Each names the flag and the field
/// at fault, so an operator can fix the definition.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DefinitionWarning {
    /// A constraint uses an operator this version of Baton does not know.
    #[error(
        "flag `{flag}`: constraint on `{context_name}` uses unknown operator `{operator}`; \
         it never matches"
    )]
    UnknownOperator {
        flag: String,
        context_name: String,
        operator: String,
    },
    /// A constraint's configured value cannot be read for its operator.
    #[error(
        "flag `{flag}`: constraint on `{context_name}` ({operator}) has value `{value}` \
         that is not {expected}; that value never matches"
    )]
    InvalidConstraintValue {
        flag: String,
        context_name: String,
        operator: String,
        value: String,
        expected: String,
    },
    /// A strategy name this version of Baton does not evaluate.
    #[error("flag `{flag}`: strategy `{strategy}` is not supported by Baton; it evaluates to off")]
    UnsupportedStrategy { flag: String, strategy: String },
    /// A strategy parameter that is missing or unreadable.
    #[error(
        "flag `{flag}`: strategy `{strategy}` needs parameter `{parameter}` as {expected}, \
         got {value:?}; {consequence}"
    )]
    InvalidParameter {
        flag: String,
        strategy: String,
        parameter: String,
        value: Option<String>,
        expected: &'static str,
        consequence: &'static str,
    },
    /// A strategy refers to a segment id the document does not define.
    #[error(
        "flag `{flag}`: strategy `{strategy}` uses segment {segment}, which the document \
         does not define; the strategy evaluates to off"
    )]
    MissingSegment {
        flag: String,
        strategy: String,
        segment: i64,
    },
    /// A dependency on a flag that is absent, or that has dependencies itself
    /// (Unleash allows one level only).
    #[error("flag `{flag}`: depends on `{parent}`, which {reason}; the flag is always off")]
    UnusableDependency {
        flag: String,
        parent: String,
        reason: String,
    },
    /// The same flag name appears twice; the last definition is the one used.
    #[error("flag `{flag}` is defined more than once; the last definition wins")]
    DuplicateFlag { flag: String },
}
