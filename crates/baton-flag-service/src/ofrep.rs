//! OFREP, the OpenFeature Remote Evaluation Protocol: single and bulk flag
//! evaluation under `/ofrep/v1`, ETag and 304 on bulk, the protocol's error
//! shapes (`{key, errorCode, errorDetails}`), and its change-event stream
//! (server-sent `refetchEvaluation` events, announced in bulk answers as
//! `eventStreams`). This module maps protocol to snapshot and back; it must
//! never touch the store, so an evaluation never waits on it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use baton_flags::model::PayloadKind;
use baton_flags::{Context, FlagSpec};
use futures_util::Stream;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::snapshot::{EnvironmentFlags, KeyScope};
use crate::FlagService;

type Service = Arc<FlagService>;

pub(crate) fn router() -> Router<Service> {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate))
        .route("/ofrep/v1/evaluate/flags", post(evaluate_all))
        .route("/ofrep/v1/events", get(events))
}

/// The API key a client sent: `Authorization: Bearer KEY` (OFREP),
/// `Authorization: KEY` (Unleash) or `X-API-Key: KEY`.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(value.trim());
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let key = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or(value)
        .trim();
    (!key.is_empty()).then_some(key)
}

/// Why a key was refused: 401 without a valid key, 403 for a revoked one.
pub(crate) enum Refused {
    Missing,
    Unknown,
    Revoked,
}

impl Refused {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refused::Revoked => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    pub(crate) fn message(&self) -> &'static str {
        match self {
            Refused::Missing => "no API key: send `Authorization: Bearer KEY` (or `X-API-Key: KEY`); create a key with `baton flags keys create APP NAME -e ENV`",
            Refused::Unknown => "this API key is not known to this server; create one with `baton flags keys create APP NAME -e ENV`",
            Refused::Revoked => "this API key was revoked; create a new one with `baton flags keys create APP NAME -e ENV`",
        }
    }
}

/// The environment a request's key gives access to.
pub(crate) fn authorize(
    service: &FlagService,
    headers: &HeaderMap,
) -> Result<Arc<EnvironmentFlags>, Refused> {
    let key = presented_key(headers).ok_or(Refused::Missing)?;
    let snapshot = service.snapshot();
    match snapshot.key(key) {
        None => Err(Refused::Unknown),
        Some(KeyScope { revoked: true, .. }) => Err(Refused::Revoked),
        Some(scope) => Ok(Arc::clone(&scope.flags)),
    }
}

fn refused(refusal: Refused) -> Response {
    (
        refusal.status(),
        Json(json!({"errorDetails": refusal.message()})),
    )
        .into_response()
}

fn failure(status: StatusCode, key: Option<&str>, code: &str, details: String) -> Response {
    let mut body = Map::new();
    if let Some(key) = key {
        body.insert("key".into(), Value::from(key));
    }
    body.insert("errorCode".into(), Value::from(code));
    body.insert("errorDetails".into(), Value::from(details));
    (status, Json(Value::Object(body))).into_response()
}

/// A request's evaluation context, read from `{"context": {...}}`.
struct RequestContext {
    context: Context,
    has_targeting_key: bool,
}

enum ContextError {
    Parse(String),
    Invalid(String),
}

fn read_context(body: &[u8]) -> Result<RequestContext, ContextError> {
    let empty = RequestContext {
        context: Context::default(),
        has_targeting_key: false,
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(empty);
    }
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| ContextError::Parse(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(mut request) = request else {
        return Err(ContextError::Invalid(
            "the request body must be a JSON object like {\"context\": {\"targetingKey\": \"user-1\"}}".into(),
        ));
    };
    let context = match request.remove("context") {
        None | Some(Value::Null) => return Ok(empty),
        Some(Value::Object(context)) => context,
        Some(_) => {
            return Err(ContextError::Invalid(
                "`context` must be a JSON object of attributes".into(),
            ))
        }
    };
    let mut out = Context::default();
    let mut has_targeting_key = false;
    for (name, value) in context {
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(ContextError::Invalid(format!(
                    "context attribute `{name}` is a list or an object; Baton's rules compare strings, numbers and booleans"
                )))
            }
        };
        match name.as_str() {
            "targetingKey" => {
                has_targeting_key = !text.is_empty();
                out.user_id = Some(text);
            }
            "userId" => {
                if out.user_id.is_none() {
                    out.user_id = Some(text);
                }
            }
            "sessionId" => out.session_id = Some(text),
            "remoteAddress" => out.remote_address = Some(text),
            "environment" => out.environment = Some(text),
            "appName" => out.app_name = Some(text),
            "currentTime" => out.current_time = Some(text),
            _ => {
                out.properties.insert(name, text);
            }
        }
    }
    Ok(RequestContext {
        context: out,
        has_targeting_key,
    })
}

/// One flag evaluated, as OFREP's `evaluationSuccess`.
fn resolve(flags: &EnvironmentFlags, name: &str, spec: &FlagSpec, context: &Context) -> Value {
    let on = flags.flags.is_enabled(name, context);
    let mut out = Map::new();
    out.insert("key".into(), Value::from(name));
    let reason = if !spec.enabled {
        "DISABLED"
    } else if !on {
        "DEFAULT"
    } else if listed(spec, context) {
        "TARGETING_MATCH"
    } else if spec.variants.len() > 1 || spec.rollout.is_some_and(|r| r < 100) {
        "SPLIT"
    } else if spec.is_targeted() {
        "TARGETING_MATCH"
    } else {
        "STATIC"
    };
    if spec.variants.is_empty() {
        out.insert("value".into(), Value::Bool(on));
        out.insert("variant".into(), Value::from(if on { "on" } else { "off" }));
    } else {
        let variant = flags.flags.get_variant(name, context);
        out.insert("variant".into(), Value::from(variant.name));
        // Off, or no variant to give: no value, so the caller's default applies.
        if variant.enabled {
            let kind = spec
                .variants
                .iter()
                .find(|v| v.name == variant.name)
                .and_then(|v| v.payload.as_ref())
                .map(|p| p.kind);
            let value = match (kind, variant.payload) {
                (Some(PayloadKind::Json), Some(p)) => {
                    serde_json::from_str(&p.value).unwrap_or(Value::Null)
                }
                (Some(PayloadKind::Number), Some(p)) => number(&p.value),
                (_, Some(p)) => Value::from(p.value.as_str()),
                (_, None) => Value::from(variant.name),
            };
            out.insert("value".into(), value);
        }
    }
    out.insert("reason".into(), Value::from(reason));
    out.insert("metadata".into(), Value::Object(Map::new()));
    Value::Object(out)
}

/// Whether the context is one of the flag's listed users or groups.
fn listed(spec: &FlagSpec, context: &Context) -> bool {
    let user = context.user_id.as_deref();
    let group = context.value(baton_flags::model::GROUP_FIELD);
    user.is_some_and(|u| spec.users.iter().any(|x| x == u))
        || group.is_some_and(|g| spec.groups.iter().any(|x| x == g))
}

fn number(text: &str) -> Value {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Value::from(n);
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn targeting_key_missing(name: &str) -> String {
    format!(
        "flag `{name}` targets users or sticks to the user id: give `targetingKey` in the context"
    )
}

async fn evaluate(
    State(service): State<Service>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let flags = match authorize(&service, &headers) {
        Ok(flags) => flags,
        Err(refusal) => return refused(refusal),
    };
    let request = match read_context(&body) {
        Ok(request) => request,
        Err(ContextError::Parse(details)) => {
            return failure(StatusCode::BAD_REQUEST, Some(&key), "PARSE_ERROR", details)
        }
        Err(ContextError::Invalid(details)) => {
            return failure(
                StatusCode::BAD_REQUEST,
                Some(&key),
                "INVALID_CONTEXT",
                details,
            )
        }
    };
    let Some(spec) = flags.specs.get(&key) else {
        let details = format!(
            "no flag `{key}` in {} {}; `baton flags list {} -e {}` lists them",
            flags.app, flags.environment, flags.app, flags.environment
        );
        return failure(StatusCode::NOT_FOUND, Some(&key), "FLAG_NOT_FOUND", details);
    };
    if spec.needs_user_id() && !request.has_targeting_key {
        return failure(
            StatusCode::BAD_REQUEST,
            Some(&key),
            "TARGETING_KEY_MISSING",
            targeting_key_missing(&key),
        );
    }
    Json(resolve(&flags, &key, spec, &request.context)).into_response()
}

async fn evaluate_all(State(service): State<Service>, headers: HeaderMap, body: Bytes) -> Response {
    let flags = match authorize(&service, &headers) {
        Ok(flags) => flags,
        Err(refusal) => return refused(refusal),
    };
    let request = match read_context(&body) {
        Ok(request) => request,
        Err(ContextError::Parse(details)) => {
            return failure(StatusCode::BAD_REQUEST, None, "PARSE_ERROR", details)
        }
        Err(ContextError::Invalid(details)) => {
            return failure(StatusCode::BAD_REQUEST, None, "INVALID_CONTEXT", details)
        }
    };
    // The answer depends on the flags and on the context: the tag covers both.
    let mut hasher = Sha256::new();
    hasher.update(flags.etag.as_bytes());
    hasher.update(&body);
    let etag = format!("\"{}\"", &crate::hex(&hasher.finalize())[..32]);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag || t.trim() == "*")
        });
    let tag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    let results: Vec<Value> = flags
        .specs
        .iter()
        .map(|(name, spec)| {
            if spec.needs_user_id() && !request.has_targeting_key {
                json!({"key": name, "errorCode": "TARGETING_KEY_MISSING",
                       "errorDetails": targeting_key_missing(name)})
            } else {
                resolve(&flags, name, spec, &request.context)
            }
        })
        .collect();
    let mut answer = json!({"flags": results});
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        answer["eventStreams"] =
            json!([{"type": "sse", "url": format!("http://{host}/ofrep/v1/events")}]);
    }
    ([(header::ETAG, tag)], Json(answer)).into_response()
}

/// Server-sent events: one `refetchEvaluation` event each time the key's
/// environment changes (and one on connecting, so a client that missed
/// changes while away re-fetches).
async fn events(State(service): State<Service>, headers: HeaderMap) -> Response {
    let flags = match authorize(&service, &headers) {
        Ok(flags) => flags,
        Err(refusal) => return refused(refusal),
    };
    let stream = change_events(service, flags);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn change_events(
    service: Service,
    first: Arc<EnvironmentFlags>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let (app, environment) = (first.app.clone(), first.environment.clone());
    let changes = service.changes();
    let stopping = service.stopping();
    futures_util::stream::unfold(
        (service, changes, stopping, None::<String>, app, environment),
        |(service, mut changes, mut stopping, mut last, app, environment)| async move {
            loop {
                let current = service
                    .snapshot()
                    .environment(&app, &environment)
                    .map(|f| (f.etag.clone(), f.last_modified));
                let (etag, modified) = current.unwrap_or_else(|| ("\"\"".into(), 0));
                if last.as_deref() != Some(etag.as_str()) {
                    last = Some(etag.clone());
                    let data = json!({"type": "refetchEvaluation", "etag": etag, "lastModified": modified});
                    let event = Event::default()
                        .event("message")
                        .id(etag.trim_matches('"'))
                        .data(data.to_string());
                    let state = (service, changes, stopping, last, app, environment);
                    return Some((Ok(event), state));
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return None },
                    _ = stopping.wait_for(|stop| *stop) => return None,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(flags: &[(&str, Value)]) -> Arc<EnvironmentFlags> {
        let records = flags
            .iter()
            .map(|(name, spec)| baton_store::FlagRecord {
                app: "shop".into(),
                environment: "production".into(),
                name: name.to_string(),
                spec: spec.clone(),
                created_at: 0,
                updated_at: 0,
            })
            .collect();
        let snapshot = crate::Snapshot::build(records, vec![]);
        Arc::clone(snapshot.environment("shop", "production").unwrap())
    }

    fn evaluate(flags: &EnvironmentFlags, name: &str, user: &str) -> Value {
        let context = Context {
            user_id: Some(user.into()),
            ..Context::default()
        };
        resolve(flags, name, &flags.specs[name], &context)
    }

    #[test]
    fn values_variants_and_reasons_follow_the_flag() {
        let flags = environment(&[
            ("off", json!({"users": ["a"]})),
            ("all", json!({"enabled": true})),
            (
                "listed",
                json!({"enabled": true, "users": ["a"], "rollout": 50}),
            ),
            (
                "json",
                json!({"enabled": true, "variants": [
                {"name": "cfg", "payload": {"type": "json", "value": "{\"max\": 3}"}}]}),
            ),
            (
                "number",
                json!({"enabled": true, "variants": [
                {"name": "n", "payload": {"type": "number", "value": "2.5"}}]}),
            ),
            (
                "named",
                json!({"enabled": true, "users": ["a"], "variants": [{"name": "blue"}]}),
            ),
        ]);
        let off = evaluate(&flags, "off", "a");
        assert_eq!(
            (&off["value"], &off["variant"], &off["reason"]),
            (&json!(false), &json!("off"), &json!("DISABLED"))
        );
        let all = evaluate(&flags, "all", "z");
        assert_eq!(
            (&all["value"], &all["reason"]),
            (&json!(true), &json!("STATIC"))
        );
        assert_eq!(evaluate(&flags, "listed", "a")["reason"], "TARGETING_MATCH");
        let split: Vec<Value> = (0..50)
            .map(|i| evaluate(&flags, "listed", &format!("u{i}")))
            .collect();
        assert!(split
            .iter()
            .any(|v| v["value"] == true && v["reason"] == "SPLIT"));
        assert!(split
            .iter()
            .any(|v| v["value"] == false && v["reason"] == "DEFAULT"));
        assert_eq!(evaluate(&flags, "json", "z")["value"], json!({"max": 3}));
        assert_eq!(evaluate(&flags, "number", "z")["value"], json!(2.5));
        let named = evaluate(&flags, "named", "a");
        assert_eq!(
            (&named["value"], &named["variant"]),
            (&json!("blue"), &json!("blue"))
        );
        // Off for this context: no value, so the caller's default applies.
        let default = evaluate(&flags, "named", "b");
        assert_eq!(default.get("value"), None);
        assert_eq!(
            (&default["variant"], &default["reason"]),
            (&json!("disabled"), &json!("DEFAULT"))
        );
    }

    #[test]
    fn keys_are_read_from_bearer_plain_and_x_api_key_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented_key(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("abc"));
        assert_eq!(presented_key(&headers), Some("abc"));
        headers.insert("x-api-key", HeaderValue::from_static("xyz"));
        assert_eq!(presented_key(&headers), Some("xyz"));
    }

    #[test]
    fn contexts_map_targeting_key_to_user_id_and_refuse_nested_values() {
        let read = |body: &str| read_context(body.as_bytes());
        let ok = read(r#"{"context": {"targetingKey": "u1", "country": "FR", "age": 30, "beta": true, "gone": null}}"#)
            .ok()
            .unwrap();
        assert!(ok.has_targeting_key);
        assert_eq!(ok.context.user_id.as_deref(), Some("u1"));
        assert_eq!(ok.context.value("country"), Some("FR"));
        assert_eq!(ok.context.value("age"), Some("30"));
        assert_eq!(ok.context.value("beta"), Some("true"));
        assert_eq!(ok.context.value("gone"), None);
        assert!(!read("").ok().unwrap().has_targeting_key);
        assert!(matches!(read("{nope"), Err(ContextError::Parse(_))));
        assert!(matches!(read("[1]"), Err(ContextError::Invalid(_))));
        assert!(matches!(
            read(r#"{"context": {"tags": ["a"]}}"#),
            Err(ContextError::Invalid(m)) if m.contains("`tags`")
        ));
    }
}
