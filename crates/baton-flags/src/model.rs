//! Baton's own flag model, the one people write: per environment a flag is
//! on or off; when on it may be limited to listed users, to listed groups,
//! to contexts matching constraints and to a sticky percentage of users, and
//! it may hand out weighted variants. This module owns that model, its
//! validation, and its compilation into the Unleash feature document that
//! [`crate::FlagSet`] evaluates and that Unleash SDKs download, so both read
//! one representation. It must never evaluate anything itself.
//!
//! How the parts combine, when the flag is enabled:
//! - listed `users` (by `userId`) and members of listed `groups` (the
//!   context's `group` field) always get it;
//! - everyone else gets it when they match every constraint and fall in the
//!   `rollout` percentage (sticky on `stickiness`, `userId` by default);
//! - with users or groups but neither constraints nor rollout, only those
//!   listed get it; with no limit at all, everyone does.
//!
//! A context without the sticky field (no `userId`, say) is outside a
//! partial rollout, and gets a variant by chance: exactly what Unleash's
//! SDKs answer for the compiled document (see [`crate::Evaluation`] for how
//! a caller learns that the field was missing).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::unleash::{ClientFeatures, Constraint, Feature, Operator, Payload, Strategy};

/// The context field that `groups` match against.
pub const GROUP_FIELD: &str = "group";

/// The stickiness of a rollout when none is given.
pub const DEFAULT_STICKINESS: &str = "userId";

/// One flag in one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagSpec {
    /// Off means off for everyone, whatever the rest says.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// User ids (the context's `userId`, OFREP's `targetingKey`) that always get the flag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Values of the context's `group` field that always get the flag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Conditions every other context must meet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<ConstraintSpec>,
    /// Percentage (0 to 100) of the other contexts that get the flag.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "percentage"
    )]
    pub rollout: Option<u8>,
    /// The context field the rollout and the variants stick to.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "field_name"
    )]
    pub stickiness: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantSpec>,
}

/// A condition on one context field, with Unleash's operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstraintSpec {
    /// A context field: `userId`, `sessionId`, `remoteAddress`,
    /// `environment`, `appName`, `currentTime` or any custom one.
    #[serde(deserialize_with = "field_name")]
    pub field: String,
    #[serde(deserialize_with = "known_operator")]
    pub operator: Operator,
    /// For the list operators (`IN`, `NOT_IN`, `STR_*`, `IN_CIDR`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// For the single-value ones (`NUM_*`, `DATE_*`, `SEMVER_*`, `REGEX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub inverted: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub case_insensitive: bool,
}

/// A variant: a name, a relative weight, and what it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    #[serde(deserialize_with = "flag_name")]
    pub name: String,
    /// Relative to the other variants' weights.
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<PayloadSpec>,
}

/// What a variant carries to the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadSpec {
    #[serde(rename = "type")]
    pub kind: PayloadKind,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    String,
    Json,
    Number,
    Csv,
}

impl PayloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::String => "string",
            PayloadKind::Json => "json",
            PayloadKind::Number => "number",
            PayloadKind::Csv => "csv",
        }
    }
}

fn one() -> u32 {
    1
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl FlagSpec {
    /// Checks what the field types alone cannot: payloads that must parse,
    /// weights that must leave a variant to pick. Names the field at fault.
    pub fn check(&self) -> Result<(), String> {
        for (i, variant) in self.variants.iter().enumerate() {
            if let Some(payload) = &variant.payload {
                let valid = match payload.kind {
                    PayloadKind::Json => {
                        serde_json::from_str::<serde_json::Value>(&payload.value).is_ok()
                    }
                    PayloadKind::Number => payload.value.trim().parse::<f64>().is_ok(),
                    PayloadKind::String | PayloadKind::Csv => true,
                };
                if !valid {
                    return Err(format!(
                        "variants[{i}].payload.value: {:?} is not {}",
                        payload.value,
                        if payload.kind == PayloadKind::Json {
                            "valid JSON"
                        } else {
                            "a number"
                        }
                    ));
                }
            }
            if self.variants[..i].iter().any(|v| v.name == variant.name) {
                return Err(format!(
                    "variants[{i}].name: variant {:?} is listed twice",
                    variant.name
                ));
            }
        }
        if !self.variants.is_empty() && self.variants.iter().all(|v| v.weight == 0) {
            return Err("variants: every weight is 0, so no variant could be chosen".into());
        }
        for (i, constraint) in self.constraints.iter().enumerate() {
            let single = matches!(
                constraint.operator,
                Operator::NumEq
                    | Operator::NumGt
                    | Operator::NumGte
                    | Operator::NumLt
                    | Operator::NumLte
                    | Operator::DateAfter
                    | Operator::DateBefore
                    | Operator::SemverEq
                    | Operator::SemverGt
                    | Operator::SemverGte
                    | Operator::SemverLt
                    | Operator::SemverLte
                    | Operator::Regex
            );
            if single && constraint.value.is_none() {
                return Err(format!(
                    "constraints[{i}].value: {} compares against one value; give `value`",
                    constraint.operator
                ));
            }
            if !single && constraint.values.is_empty() {
                return Err(format!(
                    "constraints[{i}].values: {} needs a list of values; give `values`",
                    constraint.operator
                ));
            }
        }
        Ok(())
    }

    /// The field the rollout and the variants stick to.
    pub fn stickiness(&self) -> &str {
        self.stickiness.as_deref().unwrap_or(DEFAULT_STICKINESS)
    }

    /// Whether the flag is on for some contexts and off for others.
    pub fn is_targeted(&self) -> bool {
        !self.users.is_empty()
            || !self.groups.is_empty()
            || !self.constraints.is_empty()
            || self.rollout.is_some_and(|r| r < 100)
    }

    /// The Unleash feature this flag compiles to.
    pub fn to_feature(&self, name: &str) -> Feature {
        // A whole rollout is Unleash's `default` strategy: a flexible one
        // at 100 % would still leave out contexts without the sticky field.
        let rollout = |percent: u8, constraints: Vec<Constraint>| match percent {
            100 => Strategy {
                name: "default".into(),
                constraints,
                ..Strategy::default()
            },
            _ => Strategy {
                name: "flexibleRollout".into(),
                parameters: BTreeMap::from([
                    ("rollout".to_string(), percent.to_string()),
                    ("stickiness".to_string(), self.stickiness().to_string()),
                    ("groupId".to_string(), name.to_string()),
                ]),
                constraints,
                ..Strategy::default()
            },
        };
        let listed = |field: &str, values: &[String]| {
            rollout(
                100,
                vec![Constraint {
                    context_name: field.into(),
                    operator: Operator::In,
                    values: values.to_vec(),
                    value: None,
                    inverted: false,
                    case_insensitive: false,
                }],
            )
        };
        let mut strategies = vec![];
        if !self.users.is_empty() {
            strategies.push(listed("userId", &self.users));
        }
        if !self.groups.is_empty() {
            strategies.push(listed(GROUP_FIELD, &self.groups));
        }
        let only_listed =
            !strategies.is_empty() && self.constraints.is_empty() && self.rollout.is_none();
        if !only_listed {
            let constraints = self
                .constraints
                .iter()
                .map(|c| Constraint {
                    context_name: c.field.clone(),
                    operator: c.operator.clone(),
                    values: c.values.clone(),
                    value: c.value.clone(),
                    inverted: c.inverted,
                    case_insensitive: c.case_insensitive,
                })
                .collect();
            strategies.push(rollout(self.rollout.unwrap_or(100), constraints));
        }
        Feature {
            name: name.to_string(),
            enabled: self.enabled,
            strategies,
            variants: self
                .variants
                .iter()
                .map(|v| crate::unleash::VariantDefinition {
                    name: v.name.clone(),
                    weight: i64::from(v.weight),
                    weight_type: Some("variable".into()),
                    stickiness: Some(self.stickiness().to_string()),
                    payload: v.payload.as_ref().map(|p| Payload {
                        payload_type: p.kind.as_str().into(),
                        value: p.value.clone(),
                    }),
                    overrides: vec![],
                })
                .collect(),
            dependencies: vec![],
            description: (!self.description.is_empty()).then(|| self.description.clone()),
            feature_type: Some("release".into()),
            project: Some("default".into()),
            stale: Some(false),
            impression_data: Some(false),
        }
    }
}

/// The Unleash client-features document of a set of flags (one app in one
/// environment), in name order.
pub fn document<'a>(flags: impl IntoIterator<Item = (&'a str, &'a FlagSpec)>) -> ClientFeatures {
    ClientFeatures {
        version: 2,
        features: flags
            .into_iter()
            .map(|(name, spec)| spec.to_feature(name))
            .collect(),
        segments: vec![],
    }
}

/// Whether `name` can name a flag or a variant: 1 to 100 letters, digits,
/// `-`, `_` or `.`, so it is safe in a URL path and in Unleash.
pub fn is_flag_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The message for a name that [`is_flag_name`] refuses.
pub fn flag_name_error(name: &str) -> String {
    format!("{name:?} is not a flag name: use 1 to 100 letters, digits, '-', '_' or '.'")
}

fn flag_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    if is_flag_name(&name) {
        Ok(name)
    } else {
        Err(serde::de::Error::custom(flag_name_error(&name)))
    }
}

/// Validating deserializers for the model's fields, for other formats that
/// embed them (`flags.toml`).
pub mod de {
    pub use super::{field_name, percentage};
}

#[doc(hidden)]
pub fn field_name<'de, D: Deserializer<'de>, T: From<String>>(
    deserializer: D,
) -> Result<T, D::Error> {
    let name = String::deserialize(deserializer)?;
    if name.trim().is_empty() || name.trim() != name {
        return Err(serde::de::Error::custom(format!(
            "{name:?} is not a context field name (e.g. \"userId\", \"country\")"
        )));
    }
    Ok(T::from(name))
}

#[doc(hidden)]
pub fn percentage<'de, D: Deserializer<'de>, T: From<u8>>(deserializer: D) -> Result<T, D::Error> {
    let value = i64::deserialize(deserializer)?;
    match u8::try_from(value) {
        Ok(percent) if percent <= 100 => Ok(T::from(percent)),
        _ => Err(serde::de::Error::custom(format!(
            "{value} is not a percentage: give a whole number from 0 to 100"
        ))),
    }
}

fn known_operator<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Operator, D::Error> {
    let name = String::deserialize(deserializer)?;
    match Operator::from_name(&name) {
        Operator::Unknown(name) => Err(serde::de::Error::custom(format!(
            "unknown operator {name:?}; use one of IN, NOT_IN, STR_STARTS_WITH, STR_ENDS_WITH, \
             STR_CONTAINS, NUM_EQ, NUM_GT, NUM_GTE, NUM_LT, NUM_LTE, DATE_AFTER, DATE_BEFORE, \
             SEMVER_EQ, SEMVER_GT, SEMVER_GTE, SEMVER_LT, SEMVER_LTE, REGEX, IN_CIDR"
        ))),
        known => Ok(known),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Context, FlagSet};

    fn flag_set(spec: &FlagSpec) -> FlagSet {
        FlagSet::compile(&document([("f", spec)]))
    }

    fn user(id: &str) -> Context {
        Context {
            user_id: Some(id.into()),
            ..Context::default()
        }
    }

    fn on_for(flags: &FlagSet, context: &Context) -> bool {
        flags.is_enabled("f", context)
    }

    #[test]
    fn off_is_off_for_everyone_and_on_without_limits_is_on_for_everyone() {
        let mut spec = FlagSpec {
            users: vec!["alice".into()],
            ..FlagSpec::default()
        };
        assert!(!on_for(&flag_set(&spec), &user("alice")));
        spec = FlagSpec {
            enabled: true,
            ..FlagSpec::default()
        };
        let flags = flag_set(&spec);
        assert!(on_for(&flags, &user("anyone")));
        assert!(on_for(&flags, &Context::default()));
        assert!(flags.warnings().is_empty(), "{:?}", flags.warnings());
    }

    #[test]
    fn listed_users_and_groups_only_when_nothing_else_is_said() {
        let flags = flag_set(&FlagSpec {
            enabled: true,
            users: vec!["alice".into()],
            groups: vec!["staff".into()],
            ..FlagSpec::default()
        });
        assert!(on_for(&flags, &user("alice")));
        assert!(!on_for(&flags, &user("bob")));
        assert!(on_for(
            &flags,
            &user("carol").with_property(GROUP_FIELD, "staff")
        ));
        assert!(!on_for(
            &flags,
            &user("dave").with_property(GROUP_FIELD, "guests")
        ));
    }

    #[test]
    fn a_rollout_is_sticky_near_its_percentage_and_listed_users_always_get_it() {
        let spec = FlagSpec {
            enabled: true,
            users: vec!["alice".into()],
            rollout: Some(30),
            ..FlagSpec::default()
        };
        let flags = flag_set(&spec);
        let on: Vec<bool> = (0..2000)
            .map(|i| on_for(&flags, &user(&format!("user-{i}"))))
            .collect();
        let share = on.iter().filter(|x| **x).count();
        assert!((500..=700).contains(&share), "{share} of 2000 for 30 %");
        let again = flag_set(&spec);
        for (i, was_on) in on.iter().enumerate() {
            assert_eq!(on_for(&again, &user(&format!("user-{i}"))), *was_on);
        }
        assert!(on_for(&flags, &user("alice")));
        assert!(
            !on_for(&flags, &Context::default()),
            "no user id, nothing to stick to"
        );
        assert_eq!(
            flags
                .evaluate("f", &Context::default())
                .missing_sticky_field,
            Some("userId")
        );
    }

    #[test]
    fn constraints_limit_everyone_but_the_listed_users() {
        let flags = flag_set(&FlagSpec {
            enabled: true,
            users: vec!["alice".into()],
            constraints: vec![ConstraintSpec {
                field: "country".into(),
                operator: Operator::In,
                values: vec!["FR".into(), "BE".into()],
                value: None,
                inverted: false,
                case_insensitive: false,
            }],
            ..FlagSpec::default()
        });
        assert!(on_for(&flags, &user("bob").with_property("country", "FR")));
        assert!(!on_for(&flags, &user("bob").with_property("country", "DE")));
        assert!(on_for(
            &flags,
            &user("alice").with_property("country", "DE")
        ));
    }

    #[test]
    fn stickiness_on_another_field_buckets_by_that_field() {
        let flags = flag_set(&FlagSpec {
            enabled: true,
            rollout: Some(50),
            stickiness: Some("tenant".into()),
            ..FlagSpec::default()
        });
        for tenant in 0..50 {
            let tenant = tenant.to_string();
            let first = on_for(&flags, &user("u1").with_property("tenant", &tenant));
            for u in ["u2", "u3", "u4"] {
                assert_eq!(
                    on_for(&flags, &user(u).with_property("tenant", &tenant)),
                    first
                );
            }
        }
    }

    #[test]
    fn variants_are_weighted_and_carry_payloads() {
        let spec = FlagSpec {
            enabled: true,
            variants: vec![
                VariantSpec {
                    name: "blue".into(),
                    weight: 1,
                    payload: Some(PayloadSpec {
                        kind: PayloadKind::String,
                        value: "#00f".into(),
                    }),
                },
                VariantSpec {
                    name: "red".into(),
                    weight: 3,
                    payload: None,
                },
            ],
            ..FlagSpec::default()
        };
        spec.check().expect("valid");
        let flags = flag_set(&spec);
        let mut blue = 0;
        for i in 0..2000 {
            let variant = flags.get_variant("f", &user(&i.to_string()));
            assert!(variant.enabled);
            if variant.name == "blue" {
                blue += 1;
                assert_eq!(variant.payload.map(|p| p.value.as_str()), Some("#00f"));
            }
        }
        assert!((400..=600).contains(&blue), "{blue} of 2000 for a quarter");
    }

    #[test]
    fn checks_name_the_field_at_fault() {
        let mut spec = FlagSpec {
            variants: vec![VariantSpec {
                name: "a".into(),
                weight: 1,
                payload: Some(PayloadSpec {
                    kind: PayloadKind::Json,
                    value: "{nope".into(),
                }),
            }],
            ..FlagSpec::default()
        };
        assert!(spec
            .check()
            .unwrap_err()
            .starts_with("variants[0].payload.value"));
        spec.variants[0].payload = None;
        spec.constraints.push(ConstraintSpec {
            field: "version".into(),
            operator: Operator::SemverGt,
            values: vec![],
            value: None,
            inverted: false,
            case_insensitive: false,
        });
        assert!(spec
            .check()
            .unwrap_err()
            .starts_with("constraints[0].value"));

        let error = serde_json::from_str::<FlagSpec>(r#"{"rollout": 130}"#).unwrap_err();
        assert!(error.to_string().contains("0 to 100"), "{error}");
        let error = serde_json::from_str::<FlagSpec>(
            r#"{"constraints": [{"field": "x", "operator": "LIKE", "values": ["a"]}]}"#,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown operator \"LIKE\""),
            "{error}"
        );
        let error = serde_json::from_str::<FlagSpec>(r#"{"enabeld": true}"#).unwrap_err();
        assert!(error.to_string().contains("enabeld"), "{error}");
    }

    #[test]
    fn flag_names_are_url_safe() {
        assert!(is_flag_name("new-checkout_v2.1"));
        for bad in ["", "a b", "a/b", "é", &"x".repeat(101)] {
            assert!(!is_flag_name(bad), "{bad:?}");
        }
    }
}
