//! The Unleash client-API document (`/api/client/features`) as plain data.
//!
//! This module owns the wire shape only: field names, which fields may be
//! absent or `null`, and how values are written back. It must never evaluate
//! anything (that is [`crate::FlagSet`]'s job) and must never reject a field
//! it does not know, because Unleash keeps adding fields and an older Baton
//! has to keep reading newer documents.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::FlagsError;

/// A whole client-features document: every flag, plus the segments that
/// strategies refer to by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientFeatures {
    #[serde(default)]
    pub version: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub features: Vec<Feature>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub segments: Vec<Segment>,
}

impl ClientFeatures {
    /// Reads a document from its JSON text.
    pub fn from_json(json: &str) -> Result<Self, FlagsError> {
        Ok(serde_json::from_str(json)?)
    }
}

/// One flag ("feature toggle" in Unleash's words).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Feature {
    pub name: String,
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub strategies: Vec<Strategy>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub variants: Vec<VariantDefinition>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dependencies: Vec<Dependency>,
    // Descriptive fields: not used for evaluation, kept so a document read
    // and written back by Baton still carries them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub feature_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impression_data: Option<bool>,
}

/// One activation strategy of a flag. A flag is on when any of its
/// strategies is (or when it has none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    pub name: String,
    #[serde(default, deserialize_with = "scalar_map")]
    pub parameters: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub constraints: Vec<Constraint>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub segments: Vec<i64>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub variants: Vec<VariantDefinition>,
    /// Unleash can send a strategy that was switched off in its admin UI;
    /// such a strategy never turns the flag on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// A condition on one context field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Constraint {
    pub context_name: String,
    pub operator: Operator,
    /// Used by the list operators (`IN`, `NOT_IN`, `STR_*`, `IN_CIDR`).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub values: Vec<String>,
    /// Used by the single-value operators (`NUM_*`, `DATE_*`, `SEMVER_*`, `REGEX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub inverted: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub case_insensitive: bool,
}

/// A constraint operator. Names Baton does not know are kept as
/// [`Operator::Unknown`] so the document still loads; such a constraint never
/// matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operator {
    In,
    NotIn,
    StrStartsWith,
    StrEndsWith,
    StrContains,
    NumEq,
    NumGt,
    NumGte,
    NumLt,
    NumLte,
    DateAfter,
    DateBefore,
    SemverEq,
    SemverGt,
    SemverGte,
    SemverLt,
    SemverLte,
    Regex,
    InCidr,
    Unknown(String),
}

impl Operator {
    /// The operator's name as Unleash writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Operator::In => "IN",
            Operator::NotIn => "NOT_IN",
            Operator::StrStartsWith => "STR_STARTS_WITH",
            Operator::StrEndsWith => "STR_ENDS_WITH",
            Operator::StrContains => "STR_CONTAINS",
            Operator::NumEq => "NUM_EQ",
            Operator::NumGt => "NUM_GT",
            Operator::NumGte => "NUM_GTE",
            Operator::NumLt => "NUM_LT",
            Operator::NumLte => "NUM_LTE",
            Operator::DateAfter => "DATE_AFTER",
            Operator::DateBefore => "DATE_BEFORE",
            Operator::SemverEq => "SEMVER_EQ",
            Operator::SemverGt => "SEMVER_GT",
            Operator::SemverGte => "SEMVER_GTE",
            Operator::SemverLt => "SEMVER_LT",
            Operator::SemverLte => "SEMVER_LTE",
            Operator::Regex => "REGEX",
            Operator::InCidr => "IN_CIDR",
            Operator::Unknown(name) => name,
        }
    }

    /// Reads an operator name; never fails.
    pub fn from_name(name: &str) -> Operator {
        match name {
            "IN" => Operator::In,
            "NOT_IN" => Operator::NotIn,
            "STR_STARTS_WITH" => Operator::StrStartsWith,
            "STR_ENDS_WITH" => Operator::StrEndsWith,
            "STR_CONTAINS" => Operator::StrContains,
            "NUM_EQ" => Operator::NumEq,
            "NUM_GT" => Operator::NumGt,
            "NUM_GTE" => Operator::NumGte,
            "NUM_LT" => Operator::NumLt,
            "NUM_LTE" => Operator::NumLte,
            "DATE_AFTER" => Operator::DateAfter,
            "DATE_BEFORE" => Operator::DateBefore,
            "SEMVER_EQ" => Operator::SemverEq,
            "SEMVER_GT" => Operator::SemverGt,
            "SEMVER_GTE" => Operator::SemverGte,
            "SEMVER_LT" => Operator::SemverLt,
            "SEMVER_LTE" => Operator::SemverLte,
            "REGEX" => Operator::Regex,
            "IN_CIDR" => Operator::InCidr,
            other => Operator::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Operator {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Operator {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(Operator::from_name(&name))
    }
}

/// A named, reusable list of constraints, shared by strategies through its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub constraints: Vec<Constraint>,
}

/// A variant a flag (or a strategy) can hand out, with its share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantDefinition {
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub weight: i64,
    /// `fix` or `variable`; the server has already turned it into `weight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub overrides: Vec<Override>,
}

/// The data a variant carries to the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// `string`, `json`, `csv` or `number`.
    #[serde(rename = "type")]
    pub payload_type: String,
    pub value: String,
}

/// Hands a variant to every context whose field holds one of `values`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Override {
    pub context_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub values: Vec<String>,
}

/// A flag that must be in a given state for the dependent flag to be on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    pub feature: String,
    /// Absent means "the parent must be on".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// When not empty, the parent's variant must be one of these.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub variants: Vec<String>,
}

/// Unleash writes `null` where it means "none"; read it as the empty value.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A JSON scalar read as the string Unleash compares it as.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
    // Lists or objects (a custom strategy's parameter, say) are kept as
    // their JSON text rather than failing the whole document.
    Other(serde_json::Value),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Text(text) => text,
            Scalar::Number(number) => number.to_string(),
            Scalar::Bool(flag) => flag.to_string(),
            Scalar::Other(value) => value.to_string(),
        }
    }
}

/// A string-to-string map where values may be written as numbers or
/// booleans (older Unleash servers and hand-written documents do), and where
/// a `null` value means the key is absent.
pub(crate) fn scalar_map<'de, D, M>(deserializer: D) -> Result<M, D::Error>
where
    D: Deserializer<'de>,
    M: Default + FromIterator<(String, String)>,
{
    let raw: Option<BTreeMap<String, Option<Scalar>>> = Option::deserialize(deserializer)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, value)| value.map(|value| (key, value.into_string())))
        .collect())
}

/// An optional string that may be written as a number or boolean.
pub(crate) fn optional_scalar<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<Scalar>::deserialize(deserializer)?.map(Scalar::into_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_nulls_are_tolerated() {
        let json = r#"{
            "version": 2, "query": {"project": ["default"]}, "meta": {"etag": "x"},
            "features": [{
                "name": "f", "enabled": true, "description": null, "stale": false,
                "createdAt": "2024-01-01T00:00:00Z", "strategies": [{
                    "name": "flexibleRollout", "id": "abc", "sortOrder": 1, "title": null,
                    "parameters": {"rollout": 50, "groupId": "f", "extra": null, "list": ["a", 1]},
                    "constraints": null, "segments": null, "variants": null
                }],
                "variants": null, "dependencies": null
            }],
            "segments": null
        }"#;
        let document = ClientFeatures::from_json(json).expect("tolerant parse");
        let strategy = &document.features[0].strategies[0];
        assert_eq!(
            strategy.parameters.get("rollout").map(String::as_str),
            Some("50")
        );
        assert!(!strategy.parameters.contains_key("extra"));
        assert_eq!(
            strategy.parameters.get("list").map(String::as_str),
            Some(r#"["a",1]"#)
        );
        assert!(document.segments.is_empty());
    }

    #[test]
    fn unknown_operator_survives_a_round_trip() {
        let json = r#"{"contextName": "x", "operator": "SOMETHING_NEW", "value": "1"}"#;
        let constraint: Constraint = serde_json::from_str(json).expect("parse");
        assert_eq!(
            constraint.operator,
            Operator::Unknown("SOMETHING_NEW".into())
        );
        let written = serde_json::to_string(&constraint).expect("write");
        assert!(written.contains("\"operator\":\"SOMETHING_NEW\""));
    }

    #[test]
    fn a_broken_document_names_where_it_broke() {
        let error = ClientFeatures::from_json("{\"features\": [ {\"enabled\": true} ]}")
            .expect_err("a feature needs a name");
        let message = error.to_string();
        assert!(message.contains("line 1"), "{message}");
        assert!(message.contains("name"), "{message}");
    }
}
