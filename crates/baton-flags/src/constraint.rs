//! Constraints: one condition on one context field, with every operator of
//! the Unleash specification. This module owns reading a constraint's
//! configured values once (numbers, dates, versions, regexes, CIDRs) and
//! testing a context against them. It must never panic or allocate on the
//! common path during evaluation, and never let an unreadable configured
//! value match: such a constraint is "never", even when inverted.
//!
//! A context value that cannot be read (a version that is not semver, a date
//! that is not RFC 3339) makes the operator false *before* `inverted` applies,
//! exactly as Unleash's SDKs do.
//!
//! Context values are read as Unleash's engine (yggdrasil, inside
//! UnleashClient for Python and the other SDKs) reads them: a number or a
//! version is parsed as it is, never trimmed (`" 31"` is not a number), a
//! number may be `inf` or `1e3` (Rust's `f64` syntax, which yggdrasil uses),
//! and `NUM_EQ` allows a difference below `f64::EPSILON`. Configured values
//! (the flag's own) are trimmed, as yggdrasil's rule grammar does.

use std::cmp::Ordering;
use std::collections::HashSet;

use regex::{Regex, RegexBuilder};
use semver::Version;

use crate::address::{self, IpRange};
use crate::context::{Context, ContextField};
use crate::time::{self, Instant};
use crate::unleash::{Constraint, Operator};
use crate::DefinitionWarning;

/// Regexes come from whoever edits flags; cap what one may cost to compile
/// and hold in memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Lists longer than this are looked up through a hash set.
const LINEAR_SEARCH_LIMIT: usize = 16;

/// A set of strings, searched linearly while small (faster than hashing the
/// context value) and through a hash set when large (user-id lists).
#[derive(Debug)]
pub(crate) enum ValueSet {
    Few(Vec<String>),
    Many(HashSet<String>),
}

impl ValueSet {
    pub(crate) fn new(values: impl IntoIterator<Item = String>) -> ValueSet {
        let values: Vec<String> = values.into_iter().collect();
        if values.len() > LINEAR_SEARCH_LIMIT {
            ValueSet::Many(values.into_iter().collect())
        } else {
            ValueSet::Few(values)
        }
    }

    pub(crate) fn contains(&self, value: &str) -> bool {
        match self {
            ValueSet::Few(values) => values.iter().any(|candidate| candidate == value),
            ValueSet::Many(values) => values.contains(value),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Comparison {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Comparison {
    /// Whether `context <op> configured` for numbers: as yggdrasil, equal
    /// means closer than `f64::EPSILON`, and `NaN` compares false.
    fn holds_for_numbers(self, context: f64, configured: f64) -> bool {
        match self {
            Comparison::Eq => (context - configured).abs() < f64::EPSILON,
            _ => context
                .partial_cmp(&configured)
                .is_some_and(|ordering| self.holds(ordering)),
        }
    }

    /// Whether `context <op> configured`, given how the two compare.
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Comparison::Eq => ordering == Ordering::Equal,
            Comparison::Gt => ordering == Ordering::Greater,
            Comparison::Gte => ordering != Ordering::Less,
            Comparison::Lt => ordering == Ordering::Less,
            Comparison::Lte => ordering != Ordering::Greater,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum TextOperator {
    StartsWith,
    EndsWith,
    Contains,
}

impl TextOperator {
    fn test(self, haystack: &str, needle: &str) -> bool {
        match self {
            TextOperator::StartsWith => haystack.starts_with(needle),
            TextOperator::EndsWith => haystack.ends_with(needle),
            TextOperator::Contains => haystack.contains(needle),
        }
    }

    /// Case-insensitive test of an ASCII haystack against a lower-cased
    /// needle, without lower-casing the haystack into a new string.
    fn test_ascii_ignore_case(self, haystack: &str, needle: &str) -> bool {
        // A needle that is still non-ASCII after lower-casing cannot occur in
        // an ASCII haystack.
        if !needle.is_ascii() {
            return false;
        }
        let (haystack, needle) = (haystack.as_bytes(), needle.as_bytes());
        if needle.len() > haystack.len() {
            return false;
        }
        match self {
            TextOperator::StartsWith => haystack[..needle.len()].eq_ignore_ascii_case(needle),
            TextOperator::EndsWith => {
                haystack[haystack.len() - needle.len()..].eq_ignore_ascii_case(needle)
            }
            TextOperator::Contains => {
                needle.is_empty()
                    || haystack
                        .windows(needle.len())
                        .any(|window| window.eq_ignore_ascii_case(needle))
            }
        }
    }
}

#[derive(Debug)]
enum Check {
    In(ValueSet),
    NotIn(ValueSet),
    Text {
        operator: TextOperator,
        /// Already lower-cased when `ignore_case`.
        values: Vec<String>,
        ignore_case: bool,
    },
    Number(Comparison, f64),
    Date(Comparison, Instant),
    Semver(Comparison, Version),
    Regex(Regex),
    InCidr(Vec<IpRange>),
    /// An unknown operator or an unreadable configured value.
    Never,
}

/// A constraint ready to evaluate.
#[derive(Debug)]
pub(crate) struct CompiledConstraint {
    field: ContextField,
    inverted: bool,
    check: Check,
}

impl CompiledConstraint {
    /// Reads a constraint; problems become warnings and a "never" check.
    pub(crate) fn compile(
        constraint: &Constraint,
        flag: &str,
        warnings: &mut Vec<DefinitionWarning>,
    ) -> CompiledConstraint {
        let mut invalid = |value: &str, expected: String| {
            warnings.push(DefinitionWarning::InvalidConstraintValue {
                flag: flag.to_owned(),
                context_name: constraint.context_name.clone(),
                operator: constraint.operator.to_string(),
                value: value.to_owned(),
                expected,
            });
            Check::Never
        };
        let single = constraint.value.as_deref();

        let check = match &constraint.operator {
            Operator::In => Check::In(ValueSet::new(constraint.values.iter().cloned())),
            Operator::NotIn => Check::NotIn(ValueSet::new(constraint.values.iter().cloned())),
            Operator::StrStartsWith => text_check(TextOperator::StartsWith, constraint),
            Operator::StrEndsWith => text_check(TextOperator::EndsWith, constraint),
            Operator::StrContains => text_check(TextOperator::Contains, constraint),
            Operator::NumEq
            | Operator::NumGt
            | Operator::NumGte
            | Operator::NumLt
            | Operator::NumLte => match single.and_then(parse_configured_number) {
                Some(number) => Check::Number(comparison(&constraint.operator), number),
                None => invalid(single.unwrap_or(""), "a number".into()),
            },
            Operator::DateAfter | Operator::DateBefore => {
                match single.and_then(time::parse_rfc3339) {
                    Some(instant) => Check::Date(comparison(&constraint.operator), instant),
                    None => invalid(single.unwrap_or(""), "an RFC 3339 date-time".into()),
                }
            }
            Operator::SemverEq
            | Operator::SemverGt
            | Operator::SemverGte
            | Operator::SemverLt
            | Operator::SemverLte => match single.and_then(|text| parse_semver(text.trim())) {
                Some(version) => Check::Semver(comparison(&constraint.operator), version),
                None => invalid(
                    single.unwrap_or(""),
                    "a semantic version (like 1.2.3 or 2.0.0-rc.1, no leading v)".into(),
                ),
            },
            Operator::Regex => match single {
                Some(pattern) => match RegexBuilder::new(pattern)
                    .case_insensitive(constraint.case_insensitive)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                {
                    Ok(regex) => Check::Regex(regex),
                    Err(error) => invalid(
                        pattern,
                        format!("a regular expression Baton supports ({error})"),
                    ),
                },
                None => invalid("", "a regular expression".into()),
            },
            Operator::InCidr => {
                let mut ranges = Vec::with_capacity(constraint.values.len());
                for entry in &constraint.values {
                    match IpRange::parse(entry) {
                        Some(range) => ranges.push(range),
                        // The other entries still count, as in Unleash.
                        None => {
                            invalid(entry, "an IP address or CIDR range".into());
                        }
                    }
                }
                Check::InCidr(ranges)
            }
            Operator::Unknown(name) => {
                warnings.push(DefinitionWarning::UnknownOperator {
                    flag: flag.to_owned(),
                    context_name: constraint.context_name.clone(),
                    operator: name.clone(),
                });
                Check::Never
            }
        };

        CompiledConstraint {
            field: ContextField::from_name(&constraint.context_name),
            inverted: constraint.inverted,
            check,
        }
    }

    /// Whether the context satisfies the constraint.
    pub(crate) fn matches(&self, context: &Context) -> bool {
        let value = self.field.get(context);
        let outcome = match &self.check {
            Check::Never => return false,
            Check::In(values) => value.is_some_and(|value| values.contains(value)),
            // An absent field is "not in" any list.
            Check::NotIn(values) => value.is_none_or(|value| !values.contains(value)),
            Check::Text {
                operator,
                values,
                ignore_case,
            } => value.is_some_and(|value| text_matches(*operator, value, values, *ignore_case)),
            Check::Number(comparison, configured) => value
                .and_then(parse_number)
                .is_some_and(|number| comparison.holds_for_numbers(number, *configured)),
            Check::Date(comparison, configured) => {
                let instant = match value {
                    Some(text) => time::parse_rfc3339(text),
                    // Without a currentTime, "now" is what a date rule means.
                    None if self.field == ContextField::CurrentTime => Some(time::now()),
                    None => None,
                };
                instant.is_some_and(|instant| comparison.holds(instant.cmp(configured)))
            }
            Check::Semver(comparison, configured) => value
                .and_then(parse_semver)
                .is_some_and(|version| comparison.holds(version.cmp_precedence(configured))),
            Check::Regex(regex) => value.is_some_and(|value| regex.is_match(value)),
            Check::InCidr(ranges) => value.is_some_and(|value| address::in_any(ranges, value)),
        };
        outcome != self.inverted
    }
}

fn comparison(operator: &Operator) -> Comparison {
    match operator {
        Operator::NumGt | Operator::SemverGt | Operator::DateAfter => Comparison::Gt,
        Operator::NumGte | Operator::SemverGte => Comparison::Gte,
        Operator::NumLt | Operator::SemverLt | Operator::DateBefore => Comparison::Lt,
        Operator::NumLte | Operator::SemverLte => Comparison::Lte,
        _ => Comparison::Eq,
    }
}

fn text_check(operator: TextOperator, constraint: &Constraint) -> Check {
    let ignore_case = constraint.case_insensitive;
    let values = constraint
        .values
        .iter()
        .map(|value| {
            if ignore_case {
                value.to_lowercase()
            } else {
                value.clone()
            }
        })
        .collect();
    Check::Text {
        operator,
        values,
        ignore_case,
    }
}

fn text_matches(
    operator: TextOperator,
    value: &str,
    needles: &[String],
    ignore_case: bool,
) -> bool {
    if !ignore_case {
        return needles.iter().any(|needle| operator.test(value, needle));
    }
    if value.is_ascii() {
        return needles
            .iter()
            .any(|needle| operator.test_ascii_ignore_case(value, needle));
    }
    // Full Unicode lower-casing needs a new string; only non-ASCII input pays.
    let lowered = value.to_lowercase();
    needles.iter().any(|needle| operator.test(&lowered, needle))
}

/// A context value as Unleash's `NUM_*` operators read it: Rust's `f64`
/// syntax, untrimmed (yggdrasil's `context_value.parse::<f64>()`).
fn parse_number(text: &str) -> Option<f64> {
    text.parse::<f64>().ok()
}

/// A flag's own number: trimmed, and finite, so that a typo such as `inf`
/// in a rule is reported rather than compared against.
fn parse_configured_number(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
}

/// A strict semantic version, untrimmed: `v1.2.3`, `1.2` or ` 1.2.3` are
/// not versions (yggdrasil's `Version::parse`).
fn parse_semver(text: &str) -> Option<Version> {
    Version::parse(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constraint(context_name: &str, operator: &str) -> Constraint {
        Constraint {
            context_name: context_name.into(),
            operator: Operator::from_name(operator),
            values: vec![],
            value: None,
            inverted: false,
            case_insensitive: false,
        }
    }

    fn with_value(mut constraint: Constraint, value: &str) -> Constraint {
        constraint.value = Some(value.into());
        constraint
    }

    fn with_values(mut constraint: Constraint, values: &[&str]) -> Constraint {
        constraint.values = values.iter().map(|value| value.to_string()).collect();
        constraint
    }

    fn compile(constraint: &Constraint) -> (CompiledConstraint, Vec<DefinitionWarning>) {
        let mut warnings = vec![];
        let compiled = CompiledConstraint::compile(constraint, "flag", &mut warnings);
        (compiled, warnings)
    }

    fn matches(constraint: &Constraint, property: Option<&str>) -> bool {
        let (compiled, _) = compile(constraint);
        let mut context = Context::default();
        if let Some(value) = property {
            context = context.with_property(constraint.context_name.clone(), value);
        }
        compiled.matches(&context)
    }

    #[test]
    fn in_and_not_in_treat_an_absent_field_as_outside_the_list() {
        let is_in = with_values(constraint("plan", "IN"), &["pro", "team"]);
        let not_in = with_values(constraint("plan", "NOT_IN"), &["pro", "team"]);
        assert!(matches(&is_in, Some("pro")));
        assert!(!matches(&is_in, Some("Pro")), "IN is case-sensitive");
        assert!(!matches(&is_in, None));
        assert!(!matches(&not_in, Some("team")));
        assert!(matches(&not_in, Some("free")));
        assert!(matches(&not_in, None));
    }

    #[test]
    fn large_lists_use_the_same_rules() {
        let ids: Vec<String> = (0..100).map(|id| id.to_string()).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let list = with_values(constraint("userId", "IN"), &refs);
        let (compiled, _) = compile(&list);
        let user = |id: &str| Context {
            user_id: Some(id.into()),
            ..Context::default()
        };
        assert!(compiled.matches(&user("42")));
        assert!(!compiled.matches(&user("420")));
    }

    #[test]
    fn string_operators_with_and_without_case() {
        let mut starts = with_values(constraint("email", "STR_STARTS_WITH"), &["ADMIN"]);
        assert!(!matches(&starts, Some("admin@x.io")));
        starts.case_insensitive = true;
        assert!(matches(&starts, Some("Admin@x.io")));
        assert!(matches(&starts, Some("ADMIN")));
        assert!(!matches(&starts, Some("adm")));

        let mut ends = with_values(constraint("email", "STR_ENDS_WITH"), &["@Baton.dev"]);
        ends.case_insensitive = true;
        assert!(matches(&ends, Some("ops@baton.DEV")));
        assert!(!matches(&ends, Some("ops@baton.dev.evil")));

        let mut contains = with_values(constraint("name", "STR_CONTAINS"), &["ÅSE"]);
        contains.case_insensitive = true;
        assert!(
            matches(&contains, Some("Tøve åse Berg")),
            "non-ASCII folds too"
        );
        assert!(!matches(&contains, Some("ase")));
        let empty_needle = with_values(constraint("name", "STR_CONTAINS"), &[""]);
        assert!(matches(&empty_needle, Some("anything")));
        assert!(!matches(&empty_needle, None));
    }

    #[test]
    fn numbers_compare_as_numbers() {
        let gte = with_value(constraint("age", "NUM_GTE"), "18");
        assert!(matches(&gte, Some("18")));
        assert!(matches(&gte, Some("18.5")));
        assert!(matches(&gte, Some("1e3")));
        assert!(!matches(&gte, Some("9")));
        let eq = with_value(constraint("age", "NUM_EQ"), "12.0");
        assert!(matches(&eq, Some("12")));
        assert!(matches(&eq, Some("1.2e1")));
    }

    #[test]
    fn unreadable_numbers_are_false_and_never_panic() {
        let lt = with_value(constraint("age", "NUM_LT"), "18");
        for junk in ["", "twelve", "NaN", "inf", "1,5", "0x10", "1_0"] {
            assert!(!matches(&lt, Some(junk)), "{junk:?}");
        }
        let mut inverted = lt.clone();
        inverted.inverted = true;
        assert!(
            matches(&inverted, Some("twelve")),
            "inverted after the operator, as Unleash"
        );

        let (compiled, warnings) = compile(&with_value(constraint("age", "NUM_LT"), "eighteen"));
        assert!(!compiled.matches(&Context::default().with_property("age", "1")));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].to_string().contains("eighteen"));
        let mut never = with_value(constraint("age", "NUM_LT"), "eighteen");
        never.inverted = true;
        assert!(
            !matches(&never, Some("1")),
            "a broken rule never matches, even inverted"
        );
        let (_, warnings) = compile(&constraint("age", "NUM_LT"));
        assert_eq!(warnings.len(), 1, "a missing value is reported");
    }

    // Each case checked against UnleashClient 6.9.1 (yggdrasil-engine 2.0.0),
    // which differs from what a person might expect.
    #[test]
    fn context_numbers_and_versions_are_read_untrimmed_as_unleash_reads_them() {
        let gt = with_value(constraint("age", "NUM_GT"), "30");
        assert!(matches(&gt, Some("31")));
        for padded in [" 31", "31 ", "\t31"] {
            assert!(!matches(&gt, Some(padded)), "{padded:?} is not a number");
        }
        assert!(
            matches(&gt, Some("inf")) && matches(&gt, Some("Infinity")),
            "Rust's float syntax"
        );
        assert!(matches(&gt, Some("+31")) && matches(&gt, Some("3.1e1")));
        assert!(matches(
            &with_value(constraint("age", "NUM_LT"), "18"),
            Some("-inf")
        ));
        assert!(
            matches(&with_value(constraint("age", "NUM_GT"), " 30 "), Some("31")),
            "the flag's own value is trimmed"
        );
        let zero = with_value(constraint("age", "NUM_EQ"), "0");
        assert!(matches(&zero, Some("1e-17")), "equal within f64::EPSILON");
        assert!(matches(&zero, Some("-0")));
        assert!(!matches(&zero, Some("1e-15")));
        let mut inverted = gt.clone();
        inverted.inverted = true;
        assert!(matches(&inverted, Some(" 31")), "unreadable, then inverted");

        let semver = with_value(constraint("version", "SEMVER_GTE"), "2.0.0");
        assert!(matches(&semver, Some("2.0.0")));
        assert!(!matches(&semver, Some(" 2.0.0")));
        assert!(!matches(&semver, Some("2.0.0 ")));
        assert!(
            matches(
                &with_value(constraint("version", "SEMVER_GTE"), " 2.0.0"),
                Some("2.0.0")
            ),
            "the flag's own version is trimmed"
        );

        let cidr = with_values(constraint("remoteAddress", "IN_CIDR"), &["10.0.0.0/8"]);
        let from = |address: &str| {
            let (compiled, _) = compile(&cidr);
            compiled.matches(&Context {
                remote_address: Some(address.into()),
                ..Context::default()
            })
        };
        assert!(from("10.1.2.3"));
        assert!(!from(" 10.1.2.3"));
        assert!(!from("::ffff:10.1.2.3"));
        let (padded, warnings) = compile(&with_values(
            constraint("remoteAddress", "IN_CIDR"),
            &[" 10.0.0.0/8"],
        ));
        assert!(!padded.matches(&Context {
            remote_address: Some("10.1.2.3".into()),
            ..Context::default()
        }));
        assert_eq!(warnings.len(), 1, "an unreadable range is reported");
    }

    #[test]
    fn dates_are_exclusive_and_respect_offsets() {
        let after = with_value(
            constraint("currentTime", "DATE_AFTER"),
            "2022-01-29T13:00:00.000Z",
        );
        let (compiled, _) = compile(&after);
        let at = |time: &str| Context {
            current_time: Some(time.into()),
            ..Context::default()
        };
        assert!(compiled.matches(&at("2022-01-29T13:00:00.001Z")));
        assert!(!compiled.matches(&at("2022-01-29T13:00:00Z")));
        assert!(compiled.matches(&at("2022-01-29T14:00:01+01:00")));
        assert!(!compiled.matches(&at("not a date")));
        assert!(
            compiled.matches(&Context::default()),
            "absent currentTime means now"
        );

        let before_property =
            with_value(constraint("signup", "DATE_BEFORE"), "2030-01-01T00:00:00Z");
        assert!(
            !matches(&before_property, None),
            "only currentTime defaults to now"
        );
        assert!(matches(&before_property, Some("2020-01-01T00:00:00Z")));

        let (compiled, warnings) =
            compile(&with_value(constraint("currentTime", "DATE_AFTER"), "soon"));
        assert!(!compiled.matches(&Context::default()));
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn semver_follows_precedence_and_rejects_loose_versions() {
        let gt = with_value(constraint("version", "SEMVER_GT"), "2.0.0-rc.1");
        assert!(matches(&gt, Some("2.0.0")));
        assert!(matches(&gt, Some("2.0.0-rc.2")));
        assert!(!matches(&gt, Some("2.0.0-beta.9")));
        assert!(!matches(&gt, Some("v2.0.0")));
        assert!(!matches(&gt, Some("2.0")));
        assert!(!matches(&gt, Some("")));
        let eq = with_value(constraint("version", "SEMVER_EQ"), "1.2.3+build.1");
        assert!(
            matches(&eq, Some("1.2.3+build.2")),
            "build metadata has no precedence"
        );
        let lte = with_value(constraint("version", "SEMVER_LTE"), "1.2.3");
        assert!(matches(&lte, Some("1.2.3")));
        assert!(matches(&lte, Some("1.2.3-alpha")));
        assert!(!matches(&lte, Some("1.2.4")));

        let (compiled, warnings) =
            compile(&with_value(constraint("version", "SEMVER_EQ"), "v1.0.0"));
        assert!(!compiled.matches(&Context::default().with_property("version", "1.0.0")));
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn regex_searches_and_rejects_what_it_cannot_run() {
        let word = with_value(constraint("pet", "REGEX"), r"\bcat\b");
        assert!(matches(&word, Some("a cat b")));
        assert!(!matches(&word, Some("concatenate")));
        assert!(!matches(&word, None));
        let mut ignore_case = with_value(constraint("pet", "REGEX"), "^abc$");
        ignore_case.case_insensitive = true;
        assert!(matches(&ignore_case, Some("AbC")));

        for broken in ["(regex", "^(?=a)b$", r"^(a)\1$", "[z-a]"] {
            let (compiled, warnings) = compile(&with_value(constraint("userId", "REGEX"), broken));
            let context = Context {
                user_id: Some("ab".into()),
                ..Context::default()
            };
            assert!(!compiled.matches(&context), "{broken}");
            assert_eq!(warnings.len(), 1, "{broken}");
        }
        let (_, warnings) = compile(&with_value(
            constraint("userId", "REGEX"),
            &"a{1000}".repeat(200),
        ));
        assert_eq!(
            warnings.len(),
            1,
            "an oversized regex is refused, not compiled"
        );
    }

    #[test]
    fn cidr_keeps_the_valid_entries() {
        let cidr = with_values(
            constraint("remoteAddress", "IN_CIDR"),
            &["127.invalid", "10.0.0.0/8"],
        );
        let (compiled, warnings) = compile(&cidr);
        assert_eq!(warnings.len(), 1);
        let from = |address: &str| Context {
            remote_address: Some(address.into()),
            ..Context::default()
        };
        assert!(compiled.matches(&from("10.9.8.7")));
        assert!(!compiled.matches(&from("11.0.0.1")));
        assert!(!compiled.matches(&from("127.invalid")));
    }

    #[test]
    fn unknown_operators_never_match() {
        let mut unknown = with_value(constraint("x", "SOUNDS_LIKE"), "y");
        let (_, warnings) = compile(&unknown);
        assert_eq!(
            warnings,
            vec![DefinitionWarning::UnknownOperator {
                flag: "flag".into(),
                context_name: "x".into(),
                operator: "SOUNDS_LIKE".into()
            }]
        );
        assert!(!matches(&unknown, Some("y")));
        unknown.inverted = true;
        assert!(!matches(&unknown, Some("y")));
        assert!(!matches(&unknown, None));
    }
}
