//! Activation strategies: the rules that turn a flag on for a context. This
//! module owns Unleash's built-in strategies (default, userWithId, the
//! gradual rollouts, flexibleRollout, remoteAddress), joining each with its
//! constraints and segments, and the strategy's own variants. It must never
//! look outside the context it is given (no host name, no clock, no
//! network), so `applicationHostname` and custom strategies are off.

use std::collections::HashMap;

use crate::address::{self, IpRange};
use crate::constraint::{CompiledConstraint, ValueSet};
use crate::context::{Context, ContextField};
use crate::hash;
use crate::unleash::{Segment, Strategy};
use crate::variant::{Stickiness, VariantGroup};
use crate::DefinitionWarning;

#[derive(Debug)]
enum Rule {
    /// `default`: on for everyone who passes the constraints.
    Always,
    /// `userWithId`.
    UserIds(ValueSet),
    /// The gradual rollouts and `flexibleRollout`.
    Rollout {
        percentage: f64,
        stickiness: Stickiness,
        group_id: String,
    },
    /// `remoteAddress`.
    RemoteAddress(Vec<IpRange>),
    /// Unsupported, switched off, or broken beyond use.
    Never,
}

/// What one strategy says of a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome<'s> {
    On,
    Off,
    /// Off only because the context passed the constraints of a rollout
    /// that sticks to this field, and has no value for it: Unleash has no
    /// fallback for a named field (yggdrasil's `sticky on user_id` is false
    /// without one), so the answer would depend on a value not given.
    NoStickyValue(&'s ContextField),
}

/// A strategy ready to evaluate.
#[derive(Debug)]
pub(crate) struct CompiledStrategy {
    rule: Rule,
    /// The strategy's constraints followed by its segments' constraints: all
    /// must hold.
    constraints: Vec<CompiledConstraint>,
    pub(crate) variants: VariantGroup,
}

impl CompiledStrategy {
    pub(crate) fn compile(
        strategy: &Strategy,
        flag: &str,
        segments: &HashMap<i64, &Segment>,
        warnings: &mut Vec<DefinitionWarning>,
    ) -> CompiledStrategy {
        let parameter = |name: &str| strategy.parameters.get(name).map(String::as_str);
        let group_id = parameter("groupId");
        let variants = VariantGroup::compile(
            &strategy.variants,
            group_id.unwrap_or(flag),
            parameter("stickiness"),
        );

        let mut constraints: Vec<CompiledConstraint> = strategy
            .constraints
            .iter()
            .map(|constraint| CompiledConstraint::compile(constraint, flag, warnings))
            .collect();
        let mut segments_found = true;
        for id in &strategy.segments {
            match segments.get(id) {
                Some(segment) => constraints.extend(
                    segment
                        .constraints
                        .iter()
                        .map(|constraint| CompiledConstraint::compile(constraint, flag, warnings)),
                ),
                None => {
                    warnings.push(DefinitionWarning::MissingSegment {
                        flag: flag.to_owned(),
                        strategy: strategy.name.clone(),
                        segment: *id,
                    });
                    segments_found = false;
                }
            }
        }

        let mut problem = |parameter: &str, value: Option<&str>, expected: &'static str| {
            warnings.push(DefinitionWarning::InvalidParameter {
                flag: flag.to_owned(),
                strategy: strategy.name.clone(),
                parameter: parameter.to_owned(),
                value: value.map(str::to_owned),
                expected,
                consequence: "the strategy evaluates to off",
            });
            Rule::Never
        };
        let mut rollout = |name: &str, stickiness: Stickiness, group_id: Option<&str>| {
            let raw = parameter(name);
            match (raw.and_then(parse_percentage), group_id) {
                (Some(percentage), Some(group_id)) => Rule::Rollout {
                    percentage,
                    stickiness,
                    group_id: group_id.to_owned(),
                },
                (None, _) => problem(name, raw, "a percentage from 0 to 100"),
                (Some(_), None) => problem("groupId", None, "a group id"),
            }
        };

        let rule = if strategy.disabled == Some(true) || !segments_found {
            Rule::Never
        } else {
            match strategy.name.as_str() {
                "default" => Rule::Always,
                "userWithId" => Rule::UserIds(ValueSet::new(
                    parameter("userIds")
                        .unwrap_or("")
                        .split(',')
                        .map(str::trim)
                        .filter(|id| !id.is_empty())
                        .map(str::to_owned),
                )),
                "gradualRolloutUserId" => rollout(
                    "percentage",
                    Stickiness::Field(ContextField::UserId),
                    group_id,
                ),
                "gradualRolloutSessionId" => rollout(
                    "percentage",
                    Stickiness::Field(ContextField::SessionId),
                    group_id,
                ),
                // Random buckets ignore the group, any value does.
                "gradualRolloutRandom" => rollout("percentage", Stickiness::Random, Some("")),
                "flexibleRollout" => rollout(
                    "rollout",
                    Stickiness::from_name(parameter("stickiness")),
                    Some(group_id.unwrap_or(flag)),
                ),
                "remoteAddress" => {
                    let mut ranges = vec![];
                    // Unleash trims each entry of this list (not those of
                    // an `IN_CIDR` constraint).
                    for entry in parameter("IPs").unwrap_or("").split(',') {
                        let entry = entry.trim();
                        match IpRange::parse(entry) {
                            Some(range) => ranges.push(range),
                            // One bad entry must not hide the good ones.
                            None if !entry.is_empty() => {
                                warnings.push(DefinitionWarning::InvalidParameter {
                                    flag: flag.to_owned(),
                                    strategy: strategy.name.clone(),
                                    parameter: "IPs".to_owned(),
                                    value: Some(entry.to_owned()),
                                    expected: "an IP address or CIDR range",
                                    consequence: "that entry is ignored",
                                });
                            }
                            None => {}
                        }
                    }
                    Rule::RemoteAddress(ranges)
                }
                // `applicationHostname` would need the host name, which a
                // pure library does not read; custom strategies need code
                // Baton does not have. Unleash evaluates unknown ones as off.
                other => {
                    warnings.push(DefinitionWarning::UnsupportedStrategy {
                        flag: flag.to_owned(),
                        strategy: other.to_owned(),
                    });
                    Rule::Never
                }
            }
        };

        CompiledStrategy {
            rule,
            constraints,
            variants,
        }
    }

    /// Whether this strategy turns the flag on for `context`.
    #[cfg(test)]
    pub(crate) fn is_on(&self, context: &Context) -> bool {
        self.outcome(context) == Outcome::On
    }

    /// Whether this strategy turns the flag on for `context`, and if not,
    /// whether only a missing sticky field kept it off.
    pub(crate) fn outcome(&self, context: &Context) -> Outcome<'_> {
        let on = |yes: bool| if yes { Outcome::On } else { Outcome::Off };
        if matches!(self.rule, Rule::Never) {
            return Outcome::Off;
        }
        if !self
            .constraints
            .iter()
            .all(|constraint| constraint.matches(context))
        {
            return Outcome::Off;
        }
        match &self.rule {
            Rule::Always => Outcome::On,
            Rule::UserIds(ids) => on(context
                .user_id
                .as_deref()
                .is_some_and(|id| ids.contains(id))),
            Rule::Rollout {
                percentage,
                stickiness,
                group_id,
            } => {
                if *percentage <= 0.0 {
                    return Outcome::Off;
                }
                let bucket = match (stickiness.identifier(context), stickiness) {
                    (Some(identifier), _) => hash::rollout_bucket(group_id, identifier),
                    // A named field that is absent keeps the context out;
                    // "default" and "random" fall back to chance.
                    (None, Stickiness::Field(field)) => return Outcome::NoStickyValue(field),
                    (None, _) => hash::random_bucket(100),
                };
                on(f64::from(bucket) <= *percentage)
            }
            Rule::RemoteAddress(ranges) => on(context
                .remote_address
                .as_deref()
                .is_some_and(|address| address::in_any(ranges, address))),
            Rule::Never => Outcome::Off,
        }
    }
}

/// Unleash sends percentages as strings ("50"); decimals are accepted.
fn parse_percentage(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|percentage| percentage.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn strategy(name: &str, parameters: &[(&str, &str)]) -> Strategy {
        Strategy {
            name: name.into(),
            parameters: parameters
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..Strategy::default()
        }
    }

    fn compile(strategy: &Strategy) -> (CompiledStrategy, Vec<DefinitionWarning>) {
        let mut warnings = vec![];
        let compiled = CompiledStrategy::compile(strategy, "flag", &HashMap::new(), &mut warnings);
        (compiled, warnings)
    }

    fn user(id: &str) -> Context {
        Context {
            user_id: Some(id.into()),
            ..Context::default()
        }
    }

    #[test]
    fn user_ids_are_trimmed_and_exact() {
        let (compiled, _) = compile(&strategy("userWithId", &[("userIds", "123, 222 ,88,")]));
        assert!(compiled.is_on(&user("222")));
        assert!(compiled.is_on(&user("88")));
        assert!(!compiled.is_on(&user("")));
        assert!(!compiled.is_on(&Context::default()));
    }

    #[test]
    fn rollouts_need_their_sticky_field() {
        let (compiled, _) = compile(&strategy(
            "flexibleRollout",
            &[("rollout", "100"), ("stickiness", "tenant")],
        ));
        assert!(!compiled.is_on(&user("1")), "no tenant, no rollout");
        assert!(matches!(
            compiled.outcome(&user("1")),
            Outcome::NoStickyValue(field) if field.name() == "tenant"
        ));
        assert!(compiled.is_on(&Context::default().with_property("tenant", "t")));

        let (everyone, _) = compile(&strategy("flexibleRollout", &[("rollout", "100")]));
        assert!(
            everyone.is_on(&Context::default()),
            "default stickiness falls back to random"
        );
        let (nobody, _) = compile(&strategy("flexibleRollout", &[("rollout", "0")]));
        assert!(!nobody.is_on(&user("1")));
        let (nobody, _) = compile(&strategy(
            "flexibleRollout",
            &[("rollout", "0"), ("stickiness", "userId")],
        ));
        assert_eq!(
            nobody.outcome(&Context::default()),
            Outcome::Off,
            "0 % is off whatever the user id"
        );
    }

    #[test]
    fn broken_parameters_turn_the_strategy_off_with_a_warning() {
        for broken in [
            strategy("flexibleRollout", &[("rollout", "half")]),
            strategy("gradualRolloutUserId", &[("percentage", "50")]),
            strategy("gradualRolloutRandom", &[]),
        ] {
            let (compiled, warnings) = compile(&broken);
            assert!(!compiled.is_on(&user("1")), "{}", broken.name);
            assert_eq!(warnings.len(), 1, "{}", broken.name);
        }
    }

    #[test]
    fn unsupported_and_switched_off_strategies_are_off() {
        let (hostname, warnings) = compile(&strategy("applicationHostname", &[("hostNames", "a")]));
        assert!(!hostname.is_on(&user("1")));
        assert_eq!(warnings.len(), 1);
        let mut switched_off = strategy("default", &[]);
        switched_off.disabled = Some(true);
        let (compiled, warnings) = compile(&switched_off);
        assert!(!compiled.is_on(&user("1")));
        assert!(warnings.is_empty());
    }

    #[test]
    fn a_missing_segment_turns_the_strategy_off() {
        let mut with_segment = strategy("default", &[]);
        with_segment.segments = vec![404];
        let (compiled, warnings) = compile(&with_segment);
        assert!(!compiled.is_on(&user("1")));
        assert!(matches!(
            warnings[..],
            [DefinitionWarning::MissingSegment { segment: 404, .. }]
        ));
    }

    #[test]
    fn remote_address_ignores_bad_entries() {
        let (compiled, warnings) = compile(&strategy(
            "remoteAddress",
            &[("IPs", "192.168.0.1, 192.invalid, 10.0.0.0/8")],
        ));
        assert_eq!(warnings.len(), 1);
        let from = |address: &str| Context {
            remote_address: Some(address.into()),
            ..Context::default()
        };
        assert!(compiled.is_on(&from("192.168.0.1")));
        assert!(compiled.is_on(&from("10.1.1.1")));
        assert!(!compiled.is_on(&from("192.168.0.2")));
        assert!(!compiled.is_on(&Context::default()));
    }
}
