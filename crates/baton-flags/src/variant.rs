//! Variants: which of a flag's (or a strategy's) weighted variants a context
//! gets. This module owns overrides, stickiness and the weighted pick, using
//! Unleash's variant normalisation (seed 86028157). It must never decide
//! whether the flag is on; it is asked only once the flag is.

use serde::Serialize;

use crate::constraint::ValueSet;
use crate::context::{Context, ContextField};
use crate::hash::{self, VARIANT_SEED};
use crate::unleash::{Payload, VariantDefinition};

/// The name of the variant returned when there is none to give.
pub const DISABLED_VARIANT: &str = "disabled";

/// The answer to "which variant?", borrowed from the [`crate::FlagSet`] so
/// evaluating it allocates nothing. Serialises as the Unleash specification
/// writes it (`feature_enabled` included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Variant<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a Payload>,
    /// Whether a real variant was chosen (false for `disabled`).
    pub enabled: bool,
    /// Whether the flag itself is on for the context.
    pub feature_enabled: bool,
}

impl Variant<'static> {
    /// The `disabled` variant, for a flag that is off or has no variants.
    pub const fn disabled(feature_enabled: bool) -> Variant<'static> {
        Variant {
            name: DISABLED_VARIANT,
            payload: None,
            enabled: false,
            feature_enabled,
        }
    }
}

/// What a context sticks to when bucketing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stickiness {
    /// `userId`, else `sessionId`, else random.
    Default,
    Random,
    /// One context field; what happens when it is absent depends on the user.
    Field(ContextField),
}

impl Stickiness {
    pub(crate) fn from_name(name: Option<&str>) -> Stickiness {
        match name {
            None | Some("") | Some("default") => Stickiness::Default,
            Some("random") => Stickiness::Random,
            Some(field) => Stickiness::Field(ContextField::from_name(field)),
        }
    }

    /// The value to hash, or `None` when the context has nothing to stick to.
    pub(crate) fn identifier<'c>(&self, context: &'c Context) -> Option<&'c str> {
        match self {
            Stickiness::Default => context.user_id.as_deref().or(context.session_id.as_deref()),
            Stickiness::Random => None,
            Stickiness::Field(field) => field.get(context),
        }
    }
}

#[derive(Debug)]
pub(crate) struct CompiledVariant {
    name: String,
    weight: u32,
    payload: Option<Payload>,
    overrides: Vec<(ContextField, ValueSet)>,
}

/// A list of variants with everything needed to pick one.
#[derive(Debug)]
pub(crate) struct VariantGroup {
    variants: Vec<CompiledVariant>,
    total_weight: u32,
    group_id: String,
    stickiness: Stickiness,
}

impl VariantGroup {
    /// `stickiness` is the strategy's when the variants belong to one;
    /// otherwise the first variant's, as Unleash stores it on each variant.
    pub(crate) fn compile(
        definitions: &[VariantDefinition],
        group_id: &str,
        stickiness: Option<&str>,
    ) -> VariantGroup {
        let variants: Vec<CompiledVariant> = definitions
            .iter()
            .map(|definition| CompiledVariant {
                name: definition.name.clone(),
                // Negative weights are nonsense; read them as "never chosen".
                weight: u32::try_from(definition.weight.max(0)).unwrap_or(u32::MAX),
                payload: definition.payload.clone(),
                overrides: definition
                    .overrides
                    .iter()
                    .map(|o| {
                        (
                            ContextField::from_name(&o.context_name),
                            ValueSet::new(o.values.iter().cloned()),
                        )
                    })
                    .collect(),
            })
            .collect();
        let total_weight = variants
            .iter()
            .fold(0_u32, |total, variant| total.saturating_add(variant.weight));
        let stickiness = stickiness.or_else(|| {
            definitions
                .first()
                .and_then(|first| first.stickiness.as_deref())
        });
        VariantGroup {
            variants,
            total_weight,
            group_id: group_id.to_owned(),
            stickiness: Stickiness::from_name(stickiness),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.variants.is_empty()
    }

    /// The variant for `context`, or `None` when there is none to give
    /// (no variants, or all weights zero).
    pub(crate) fn select(&self, context: &Context) -> Option<(&str, Option<&Payload>)> {
        if self.total_weight == 0 {
            return None;
        }
        let overridden = self.variants.iter().find(|variant| {
            variant.overrides.iter().any(|(field, values)| {
                field
                    .get(context)
                    .is_some_and(|value| values.contains(value))
            })
        });
        let chosen = overridden.or_else(|| {
            let target = match self.stickiness.identifier(context) {
                Some(identifier) => hash::normalized_hash(
                    &self.group_id,
                    identifier,
                    self.total_weight,
                    VARIANT_SEED,
                ),
                // Nothing to stick to: any variant, in proportion to weight.
                None => hash::random_bucket(self.total_weight),
            };
            let mut cumulative = 0_u32;
            self.variants.iter().find(|variant| {
                cumulative = cumulative.saturating_add(variant.weight);
                variant.weight > 0 && cumulative >= target
            })
        })?;
        Some((chosen.name.as_str(), chosen.payload.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unleash::Override;

    fn definition(name: &str, weight: i64) -> VariantDefinition {
        VariantDefinition {
            name: name.into(),
            weight,
            ..VariantDefinition::default()
        }
    }

    fn user(id: &str) -> Context {
        Context {
            user_id: Some(id.into()),
            ..Context::default()
        }
    }

    #[test]
    fn weights_split_users_as_unleash_does() {
        let group = VariantGroup::compile(
            &[
                definition("variant1", 33),
                definition("variant2", 33),
                definition("variant3", 33),
            ],
            "Feature.Variants.C",
            None,
        );
        let pick = |id| group.select(&user(id)).map(|(name, _)| name);
        assert_eq!(pick("232"), Some("variant1"));
        assert_eq!(pick("607"), Some("variant2"));
        assert_eq!(pick("656"), Some("variant3"));
    }

    #[test]
    fn zero_weights_are_never_chosen_and_all_zero_gives_none() {
        let group = VariantGroup::compile(
            &[
                definition("never", 0),
                definition("always", 10),
                definition("negative", -5),
            ],
            "g",
            None,
        );
        for id in 0..200 {
            assert_eq!(
                group.select(&user(&id.to_string())).map(|(n, _)| n),
                Some("always")
            );
        }
        assert_eq!(
            group.select(&Context::default()).map(|(n, _)| n),
            Some("always")
        );

        let nothing = VariantGroup::compile(&[definition("a", 0)], "g", None);
        assert_eq!(nothing.select(&user("1")), None);
        assert!(VariantGroup::compile(&[], "g", None)
            .select(&user("1"))
            .is_none());
    }

    #[test]
    fn overrides_win_over_weights() {
        let mut pinned = definition("pinned", 1);
        pinned.overrides = vec![Override {
            context_name: "tenant".into(),
            values: vec!["acme".into()],
        }];
        let group = VariantGroup::compile(&[definition("heavy", 1000), pinned], "g", None);
        let acme = Context::default().with_property("tenant", "acme");
        assert_eq!(group.select(&acme).map(|(n, _)| n), Some("pinned"));
        assert_eq!(group.select(&user("1")).map(|(n, _)| n), Some("heavy"));
    }

    #[test]
    fn stickiness_comes_from_the_strategy_then_the_first_variant() {
        let mut sticky = definition("a", 1);
        sticky.stickiness = Some("tenant".into());
        let group = VariantGroup::compile(&[sticky.clone(), definition("b", 1)], "g", None);
        assert_eq!(
            group.stickiness,
            Stickiness::Field(ContextField::Property("tenant".into()))
        );
        let group = VariantGroup::compile(&[sticky, definition("b", 1)], "g", Some("userId"));
        assert_eq!(group.stickiness, Stickiness::Field(ContextField::UserId));
        assert_eq!(Stickiness::from_name(Some("random")), Stickiness::Random);
        assert_eq!(Stickiness::from_name(Some("default")), Stickiness::Default);
    }

    #[test]
    fn disabled_variant_serialises_like_the_specification() {
        let json = serde_json::to_value(Variant::disabled(true)).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"name": "disabled", "enabled": false, "feature_enabled": true})
        );
    }
}
