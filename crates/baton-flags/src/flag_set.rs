//! The evaluator: a whole flag document compiled once and asked many times.
//! This module owns looking flags up by name, combining a flag's switch, its
//! dependencies and its strategies into "on or off", and choosing between
//! strategy and flag variants. It must never mutate itself while answering
//! (a `FlagSet` is shared across threads as is) and never allocate per
//! evaluation; a new document means a new `FlagSet`.

use std::collections::HashMap;

use crate::context::{Context, ContextField};
use crate::strategy::{CompiledStrategy, Outcome};
use crate::unleash::{ClientFeatures, Feature, Payload};
use crate::variant::{Variant, VariantGroup, DISABLED_VARIANT};
use crate::{DefinitionWarning, FlagsError};

/// A parent flag and the state it must be in.
#[derive(Debug)]
struct CompiledDependency {
    /// Index of the parent, or `None` when it cannot be used (absent, or
    /// itself dependent: Unleash evaluates one level only).
    parent: Option<usize>,
    parent_enabled: bool,
    parent_variants: Vec<String>,
}

#[derive(Debug)]
struct CompiledFlag {
    name: String,
    enabled: bool,
    strategies: Vec<CompiledStrategy>,
    variants: VariantGroup,
    dependencies: Vec<CompiledDependency>,
}

/// The outcome of the on/off decision, remembering which strategy decided
/// so the variant can come from it, and, when off, the sticky field whose
/// absence was all that kept a rollout from deciding.
#[derive(Clone, Copy)]
struct Decision<'f> {
    enabled: bool,
    strategy: Option<&'f CompiledStrategy>,
    missing: Option<&'f ContextField>,
}

const OFF: Decision<'static> = Decision {
    enabled: false,
    strategy: None,
    missing: None,
};

/// A whole answer for one flag and one context: the variant (which says
/// whether the flag is on) and why the answer may not be the one the caller
/// wanted. Borrowed from the [`FlagSet`], so it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation<'a> {
    /// The variant; `feature_enabled` is whether the flag is on.
    pub variant: Variant<'a>,
    /// When the flag is off: the context field (as Unleash names it, e.g.
    /// `userId`) that a sticky rollout needed and did not find, after the
    /// context passed that rollout's constraints. Unleash's SDKs answer
    /// "off" then, as Baton does; a protocol that can say "give me that
    /// field" (OFREP's `TARGETING_KEY_MISSING`) uses this to say so.
    /// `None` when the flag is on, or off whatever that field held.
    pub missing_sticky_field: Option<&'a str>,
}

impl Evaluation<'_> {
    /// Whether the flag is on for the context.
    pub fn is_on(&self) -> bool {
        self.variant.feature_enabled
    }
}

/// Every flag of a document, ready to evaluate. Cheap to share (`Send +
/// Sync`); build a new one when the document changes.
#[derive(Debug)]
pub struct FlagSet {
    flags: Vec<CompiledFlag>,
    by_name: HashMap<String, usize>,
    warnings: Vec<DefinitionWarning>,
}

impl FlagSet {
    /// Parses and compiles an Unleash client-features JSON document.
    pub fn from_json(json: &str) -> Result<FlagSet, FlagsError> {
        Ok(FlagSet::compile(&ClientFeatures::from_json(json)?))
    }

    /// Compiles a parsed document. Never fails: what cannot be read is
    /// reported in [`FlagSet::warnings`] and evaluates to off.
    pub fn compile(document: &ClientFeatures) -> FlagSet {
        let mut warnings = vec![];
        let segments = document
            .segments
            .iter()
            .map(|segment| (segment.id, segment))
            .collect::<HashMap<_, _>>();

        // Unleash keeps the last definition of a repeated name.
        let mut latest: HashMap<&str, &Feature> = HashMap::new();
        let mut order: Vec<&Feature> = vec![];
        for feature in &document.features {
            if latest.insert(feature.name.as_str(), feature).is_some() {
                warnings.push(DefinitionWarning::DuplicateFlag {
                    flag: feature.name.clone(),
                });
            } else {
                order.push(feature);
            }
        }
        let features: Vec<&Feature> = order
            .iter()
            .filter_map(|feature| latest.get(feature.name.as_str()).copied())
            .collect();
        let by_name: HashMap<String, usize> = features
            .iter()
            .enumerate()
            .map(|(index, feature)| (feature.name.clone(), index))
            .collect();

        let flags = features
            .iter()
            .map(|feature| {
                let strategies = feature
                    .strategies
                    .iter()
                    .map(|strategy| {
                        CompiledStrategy::compile(strategy, &feature.name, &segments, &mut warnings)
                    })
                    .collect();
                let dependencies = feature
                    .dependencies
                    .iter()
                    .map(|dependency| {
                        let parent = by_name.get(&dependency.feature).copied();
                        let unusable = match parent.map(|index| features[index]) {
                            None => Some("is not in the document"),
                            Some(parent) if !parent.dependencies.is_empty() => {
                                Some("has dependencies of its own (only one level is allowed)")
                            }
                            Some(_) => None,
                        };
                        if let Some(reason) = unusable {
                            warnings.push(DefinitionWarning::UnusableDependency {
                                flag: feature.name.clone(),
                                parent: dependency.feature.clone(),
                                reason: reason.to_owned(),
                            });
                        }
                        CompiledDependency {
                            parent: parent.filter(|_| unusable.is_none()),
                            parent_enabled: dependency.enabled.unwrap_or(true),
                            parent_variants: dependency.variants.clone(),
                        }
                    })
                    .collect();
                CompiledFlag {
                    name: feature.name.clone(),
                    enabled: feature.enabled,
                    strategies,
                    variants: VariantGroup::compile(&feature.variants, &feature.name, None),
                    dependencies,
                }
            })
            .collect();

        FlagSet {
            flags,
            by_name,
            warnings,
        }
    }

    /// Whether the flag is on for `context`; an unknown flag is off.
    pub fn is_enabled(&self, flag: &str, context: &Context) -> bool {
        match self.by_name.get(flag) {
            Some(&index) => self.decide(index, context).enabled,
            None => false,
        }
    }

    /// The variant `context` gets. A flag that is unknown or off gives
    /// `disabled` with `feature_enabled: false`; a flag that is on but has
    /// no variant to give gives `disabled` with `feature_enabled: true`.
    pub fn get_variant(&self, flag: &str, context: &Context) -> Variant<'_> {
        self.evaluate(flag, context).variant
    }

    /// On or off, the variant, and what a missing sticky field did, in one
    /// decision (so a random rollout or variant is drawn once, not once
    /// for "on?" and again for "which variant?"). An unknown flag is off.
    pub fn evaluate(&self, flag: &str, context: &Context) -> Evaluation<'_> {
        let Some(&index) = self.by_name.get(flag) else {
            return Evaluation {
                variant: Variant::disabled(false),
                missing_sticky_field: None,
            };
        };
        let decision = self.decide(index, context);
        if !decision.enabled {
            return Evaluation {
                variant: Variant::disabled(false),
                missing_sticky_field: decision.missing.map(ContextField::name),
            };
        }
        let variant = match self.pick_variant(index, decision, context) {
            Some((name, payload)) => Variant {
                name,
                payload,
                enabled: true,
                feature_enabled: true,
            },
            None => Variant::disabled(true),
        };
        Evaluation {
            variant,
            missing_sticky_field: None,
        }
    }

    /// Whether the document defines `flag`.
    pub fn contains(&self, flag: &str) -> bool {
        self.by_name.contains_key(flag)
    }

    /// The names of all flags, in document order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.flags.iter().map(|flag| flag.name.as_str())
    }

    /// The number of flags.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// Whether the document has no flags.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Parts of the document that Baton read as "off", for showing to
    /// whoever edits the flags.
    pub fn warnings(&self) -> &[DefinitionWarning] {
        &self.warnings
    }

    fn decide(&self, index: usize, context: &Context) -> Decision<'_> {
        let flag = &self.flags[index];
        if !flag.enabled {
            return OFF;
        }
        let dependencies_met = flag
            .dependencies
            .iter()
            .all(|dependency| self.dependency_met(dependency, context));
        if !dependencies_met {
            return OFF;
        }
        if flag.strategies.is_empty() {
            return Decision {
                enabled: true,
                strategy: None,
                missing: None,
            };
        }
        // The first strategy that is on decides, and lends its variants.
        let mut missing = None;
        for strategy in &flag.strategies {
            match strategy.outcome(context) {
                Outcome::On => {
                    return Decision {
                        enabled: true,
                        strategy: Some(strategy),
                        missing: None,
                    }
                }
                Outcome::NoStickyValue(field) => missing = missing.or(Some(field)),
                Outcome::Off => {}
            }
        }
        Decision { missing, ..OFF }
    }

    fn dependency_met(&self, dependency: &CompiledDependency, context: &Context) -> bool {
        let Some(parent) = dependency.parent else {
            return false;
        };
        // Parents have no dependencies (checked at compile time), so this
        // recursion is one level deep at most.
        let decision = self.decide(parent, context);
        if !dependency.parent_enabled {
            return !decision.enabled;
        }
        if !decision.enabled {
            return false;
        }
        if dependency.parent_variants.is_empty() {
            return true;
        }
        let variant = self
            .pick_variant(parent, decision, context)
            .map_or(DISABLED_VARIANT, |(name, _)| name);
        dependency
            .parent_variants
            .iter()
            .any(|name| name == variant)
    }

    fn pick_variant<'f>(
        &'f self,
        index: usize,
        decision: Decision<'f>,
        context: &Context,
    ) -> Option<(&'f str, Option<&'f Payload>)> {
        let from_strategy = decision
            .strategy
            .filter(|strategy| !strategy.variants.is_empty())
            .and_then(|strategy| strategy.variants.select(context));
        from_strategy.or_else(|| self.flags[index].variants.select(context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(json: &str) -> FlagSet {
        match FlagSet::from_json(json) {
            Ok(flags) => flags,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn the_last_of_two_same_named_flags_wins() {
        let set = flags(
            r#"{"features": [
                {"name": "f", "enabled": false, "strategies": []},
                {"name": "g", "enabled": true, "strategies": []},
                {"name": "f", "enabled": true, "strategies": []}
            ]}"#,
        );
        assert!(set.is_enabled("f", &Context::default()));
        assert_eq!(set.names().collect::<Vec<_>>(), vec!["f", "g"]);
        assert_eq!(set.len(), 2);
        assert!(matches!(
            set.warnings(),
            [DefinitionWarning::DuplicateFlag { .. }]
        ));
    }

    #[test]
    fn unknown_flags_are_off_with_the_disabled_variant() {
        let set = flags(r#"{"features": []}"#);
        assert!(set.is_empty());
        assert!(!set.contains("nope"));
        assert!(!set.is_enabled("nope", &Context::default()));
        assert_eq!(
            set.get_variant("nope", &Context::default()),
            Variant::disabled(false)
        );
    }

    #[test]
    fn dependency_problems_are_reported_once_compiled() {
        let set = flags(
            r#"{"features": [
                {"name": "a", "enabled": true, "dependencies": [{"feature": "b"}]},
                {"name": "b", "enabled": true, "dependencies": [{"feature": "a"}]},
                {"name": "c", "enabled": true, "dependencies": [{"feature": "ghost"}]}
            ]}"#,
        );
        for name in ["a", "b", "c"] {
            assert!(!set.is_enabled(name, &Context::default()), "{name}");
        }
        assert_eq!(set.warnings().len(), 3);
        assert!(set.warnings()[2].to_string().contains("ghost"));
    }

    #[test]
    fn a_missing_sticky_field_is_named_only_when_it_alone_kept_the_flag_off() {
        let set = flags(
            r#"{"features": [
                {"name": "f", "enabled": true, "strategies": [
                    {"name": "default", "constraints": [
                        {"contextName": "group", "operator": "IN", "values": ["staff"]}]},
                    {"name": "flexibleRollout", "parameters":
                        {"rollout": "30", "stickiness": "userId", "groupId": "f"},
                     "constraints": [
                        {"contextName": "country", "operator": "IN", "values": ["FR"]}]}
                ]},
                {"name": "everyone", "enabled": true, "strategies": [], "variants": [
                    {"name": "a", "weight": 1, "stickiness": "userId"},
                    {"name": "b", "weight": 1, "stickiness": "userId"}]}
            ]}"#,
        );
        let staff = Context::default().with_property("group", "staff");
        let evaluation = set.evaluate("f", &staff);
        assert!(evaluation.is_on(), "a listed group needs no user id");
        assert_eq!(evaluation.missing_sticky_field, None);

        let french = Context::default().with_property("country", "FR");
        let evaluation = set.evaluate("f", &french);
        assert!(!evaluation.is_on());
        assert_eq!(evaluation.missing_sticky_field, Some("userId"));

        let german = Context::default().with_property("country", "DE");
        assert_eq!(
            set.evaluate("f", &german).missing_sticky_field,
            None,
            "off whatever the user id: outside the rollout's constraints"
        );

        // Variants sticky to a missing field fall back to chance, as
        // Unleash's engine does: always a variant, never a missing field.
        let evaluation = set.evaluate("everyone", &Context::default());
        assert!(evaluation.variant.enabled, "{evaluation:?}");
        assert_eq!(evaluation.missing_sticky_field, None);
        assert_eq!(
            set.evaluate("nope", &Context::default())
                .missing_sticky_field,
            None
        );
    }

    #[test]
    fn a_flag_set_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FlagSet>();
    }
}
