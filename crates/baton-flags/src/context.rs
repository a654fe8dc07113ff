//! What a flag is evaluated against: who is asking, from where, in which
//! environment, plus free-form properties. This module owns the context's
//! fields and the mapping from Unleash's context names (`userId`, `appName`,
//! a custom property...) to those fields. It must never fill anything in by
//! itself (no clock read, no host lookup): a missing field stays missing.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::unleash::{optional_scalar, scalar_map};

/// The Unleash context, with its JSON names (`userId`, `sessionId`, ...).
///
/// An absent field never matches `IN` and always matches `NOT_IN`. When
/// `current_time` is absent, date constraints compare against the clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    #[serde(
        default,
        deserialize_with = "optional_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "optional_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub session_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "optional_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub remote_address: Option<String>,
    #[serde(
        default,
        deserialize_with = "optional_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub environment: Option<String>,
    #[serde(
        default,
        deserialize_with = "optional_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub app_name: Option<String>,
    /// An RFC 3339 timestamp, e.g. `2022-01-29T13:00:00.000Z`.
    #[serde(
        default,
        deserialize_with = "optional_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub current_time: Option<String>,
    /// Custom fields; a `null` in JSON means the property is absent.
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "HashMap::is_empty"
    )]
    pub properties: HashMap<String, String>,
}

impl Context {
    /// Adds a custom property, for building a context in code.
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// The value of a field by its Unleash context name: a standard field
    /// for `userId`, `sessionId`, `remoteAddress`, `environment`, `appName`
    /// and `currentTime`, a custom property for any other name.
    pub fn value(&self, context_name: &str) -> Option<&str> {
        ContextField::from_name(context_name).get(self)
    }
}

/// A context name resolved once, when a flag is compiled, so evaluation does
/// not compare field names again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContextField {
    UserId,
    SessionId,
    RemoteAddress,
    Environment,
    AppName,
    CurrentTime,
    Property(String),
}

impl ContextField {
    pub(crate) fn from_name(name: &str) -> ContextField {
        match name {
            "userId" => ContextField::UserId,
            "sessionId" => ContextField::SessionId,
            "remoteAddress" => ContextField::RemoteAddress,
            "environment" => ContextField::Environment,
            "appName" => ContextField::AppName,
            "currentTime" => ContextField::CurrentTime,
            other => ContextField::Property(other.to_owned()),
        }
    }

    /// The name Unleash gives the field (`userId`, or a property's name).
    pub(crate) fn name(&self) -> &str {
        match self {
            ContextField::UserId => "userId",
            ContextField::SessionId => "sessionId",
            ContextField::RemoteAddress => "remoteAddress",
            ContextField::Environment => "environment",
            ContextField::AppName => "appName",
            ContextField::CurrentTime => "currentTime",
            ContextField::Property(name) => name,
        }
    }

    pub(crate) fn get<'c>(&self, context: &'c Context) -> Option<&'c str> {
        match self {
            ContextField::UserId => context.user_id.as_deref(),
            ContextField::SessionId => context.session_id.as_deref(),
            ContextField::RemoteAddress => context.remote_address.as_deref(),
            ContextField::Environment => context.environment.as_deref(),
            ContextField::AppName => context.app_name.as_deref(),
            ContextField::CurrentTime => context.current_time.as_deref(),
            ContextField::Property(name) => context.properties.get(name).map(String::as_str),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_names_read_fields_and_others_read_properties() {
        let context = Context {
            user_id: Some("7".into()),
            app_name: Some("shop".into()),
            ..Context::default()
        }
        .with_property("tenant", "acme");
        assert_eq!(context.value("userId"), Some("7"));
        assert_eq!(context.value("appName"), Some("shop"));
        assert_eq!(context.value("tenant"), Some("acme"));
        assert_eq!(context.value("sessionId"), None);
        assert_eq!(context.value("missing"), None);
        for name in [
            "userId",
            "sessionId",
            "remoteAddress",
            "environment",
            "appName",
            "currentTime",
            "tenant",
        ] {
            assert_eq!(ContextField::from_name(name).name(), name);
        }
    }

    #[test]
    fn json_nulls_and_numbers_are_read_as_unleash_does() {
        let json = r#"{"userId": 123, "sessionId": null,
                       "properties": {"gone": null, "count": 4, "beta": true}}"#;
        let context: Context = serde_json::from_str(json).expect("context");
        assert_eq!(context.user_id.as_deref(), Some("123"));
        assert_eq!(context.session_id, None);
        assert_eq!(context.value("gone"), None);
        assert_eq!(context.value("count"), Some("4"));
        assert_eq!(context.value("beta"), Some("true"));
    }
}
