//! OFREP, the OpenFeature Remote Evaluation Protocol: single and bulk flag
//! evaluation under `/ofrep/v1`, ETag and 304 on bulk, the protocol's error
//! shapes (`{key, errorCode, errorDetails}`), and its change-event stream
//! (server-sent `refetchEvaluation` events, announced in bulk answers as
//! `eventStreams`). This module maps protocol to snapshot and back; it must
//! never touch the store, so an evaluation never waits on it.
//!
//! Answers are Unleash's: the OFREP context is read into an Unleash context
//! (`targetingKey` is `userId`) and evaluated exactly as an Unleash SDK
//! evaluates the `/api/client/features` document. The one addition is
//! `TARGETING_KEY_MISSING`, given only where the answer truly depends on the
//! missing key: a partial rollout sticky to `userId` that the context
//! reached (it passed the rollout's rules) and that nothing else decided.
//! A listed group, a constraint, or variants (which fall back to chance, as
//! Unleash's do) never need it.

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
use baton_flags::{Context, Evaluation, FlagSpec};
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

/// The Unleash context field OFREP's `targetingKey` fills.
const TARGETING_FIELD: &str = "userId";

fn failure(status: StatusCode, key: Option<&str>, code: &str, details: String) -> Response {
    let mut body = Map::new();
    if let Some(key) = key {
        body.insert("key".into(), Value::from(key));
    }
    body.insert("errorCode".into(), Value::from(code));
    body.insert("errorDetails".into(), Value::from(details));
    (status, Json(Value::Object(body))).into_response()
}

enum ContextError {
    Parse(String),
    Invalid(String),
}

/// A request's evaluation context, read from `{"context": {...}}`.
fn read_context(body: &[u8]) -> Result<Context, ContextError> {
    let empty = Context::default();
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
    for (name, value) in context {
        // OpenFeature's targeting key is a string; guessing how a number or
        // a boolean was meant would give some user another user's bucket.
        if name == "targetingKey" {
            match value {
                Value::Null => {}
                Value::String(key) => out.user_id = Some(key),
                other => {
                    return Err(ContextError::Invalid(format!(
                        "`targetingKey` must be a string (the OpenFeature targeting key), not {}; \
                         send the id as a string, e.g. \"targetingKey\": \"{}\"",
                        json_kind(&other),
                        other.to_string().trim_matches('"')
                    )))
                }
            }
            continue;
        }
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
            // The targeting key wins over a `userId` attribute.
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
    Ok(out)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// One flag evaluated: OFREP's `evaluationSuccess`, or the
/// `TARGETING_KEY_MISSING` failure (with its details) when the answer
/// depends on the missing key.
fn evaluate_flag(
    flags: &EnvironmentFlags,
    name: &str,
    spec: &FlagSpec,
    context: &Context,
) -> Result<Value, String> {
    let evaluation = flags.flags.evaluate(name, context);
    if evaluation.missing_sticky_field == Some(TARGETING_FIELD) {
        return Err(format!(
            "flag `{name}` is on for a sticky share of users by `{TARGETING_FIELD}`, and this \
             context meets its other rules: give `targetingKey` in the context"
        ));
    }
    Ok(resolve(name, spec, context, &evaluation))
}

/// One flag's answer, as OFREP's `evaluationSuccess`.
fn resolve(name: &str, spec: &FlagSpec, context: &Context, evaluation: &Evaluation) -> Value {
    let on = evaluation.is_on();
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
        let variant = evaluation.variant;
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
    let context = match read_context(&body) {
        Ok(context) => context,
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
    match evaluate_flag(&flags, &key, spec, &context) {
        Ok(answer) => Json(answer).into_response(),
        Err(details) => failure(
            StatusCode::BAD_REQUEST,
            Some(&key),
            "TARGETING_KEY_MISSING",
            details,
        ),
    }
}

/// Whether `If-None-Match` holds a tag matching `etag` (weak comparison,
/// RFC 9110 §13.1.2), or `*`. OFREP answers a matching bulk request with
/// 304 although it is a POST (RFC 9110 would say 412 for a POST): the
/// protocol treats the bulk evaluation as a read of the evaluated result,
/// and a bulk answer always has a current representation, so `*` matches.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|tags| tags.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

async fn evaluate_all(State(service): State<Service>, headers: HeaderMap, body: Bytes) -> Response {
    let flags = match authorize(&service, &headers) {
        Ok(flags) => flags,
        Err(refusal) => return refused(refusal),
    };
    let context = match read_context(&body) {
        Ok(context) => context,
        Err(ContextError::Parse(details)) => {
            return failure(StatusCode::BAD_REQUEST, None, "PARSE_ERROR", details)
        }
        Err(ContextError::Invalid(details)) => {
            return failure(StatusCode::BAD_REQUEST, None, "INVALID_CONTEXT", details)
        }
    };
    let results: Vec<Value> = flags
        .specs
        .iter()
        .map(
            |(name, spec)| match evaluate_flag(&flags, name, spec, &context) {
                Ok(answer) => answer,
                Err(details) => json!({"key": name, "errorCode": "TARGETING_KEY_MISSING",
                                       "errorDetails": details}),
            },
        )
        .collect();
    let mut answer = json!({"flags": results});
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        answer["eventStreams"] =
            json!([{"type": "sse", "url": format!("http://{host}/ofrep/v1/events")}]);
    }
    // The tag is the answer's own: the same answer (whatever the order of
    // the context's keys, whatever changed in the flags that does not show
    // in it, such as a description) is the same tag.
    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&bytes))[..32]);
    let tag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if none_match(&headers, &etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    (
        [
            (header::ETAG, tag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        bytes,
    )
        .into_response()
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
        evaluate_flag(flags, name, &flags.specs[name], &context).unwrap()
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
        assert_eq!(ok.user_id.as_deref(), Some("u1"));
        assert_eq!(ok.value("country"), Some("FR"));
        assert_eq!(ok.value("age"), Some("30"));
        assert_eq!(ok.value("beta"), Some("true"));
        assert_eq!(ok.value("gone"), None);
        assert_eq!(read("").ok().unwrap().user_id, None);
        let key_wins = read(r#"{"context": {"targetingKey": "k", "userId": "u"}}"#)
            .ok()
            .unwrap();
        assert_eq!(key_wins.user_id.as_deref(), Some("k"));
        let user_only = read(r#"{"context": {"userId": "u", "targetingKey": null}}"#)
            .ok()
            .unwrap();
        assert_eq!(user_only.user_id.as_deref(), Some("u"));
        assert!(matches!(read("{nope"), Err(ContextError::Parse(_))));
        assert!(matches!(read("[1]"), Err(ContextError::Invalid(_))));
        assert!(matches!(
            read(r#"{"context": {"tags": ["a"]}}"#),
            Err(ContextError::Invalid(m)) if m.contains("`tags`")
        ));
    }

    #[test]
    fn if_none_match_compares_weakly_and_star_matches_any_answer() {
        let mut headers = HeaderMap::new();
        assert!(!none_match(&headers, "\"abc\""));
        for value in ["\"abc\"", "W/\"abc\"", "\"x\", \"abc\"", "*"] {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            assert!(none_match(&headers, "\"abc\""), "{value}");
        }
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"abd\", abc"),
        );
        assert!(!none_match(&headers, "\"abc\""));
    }

    #[test]
    fn a_targeting_key_that_is_not_a_string_is_an_invalid_context() {
        for (body, kind) in [
            (r#"{"context": {"targetingKey": 42}}"#, "a number"),
            (r#"{"context": {"targetingKey": true}}"#, "a boolean"),
            (r#"{"context": {"targetingKey": {"id": 1}}}"#, "an object"),
            (r#"{"context": {"targetingKey": ["a"]}}"#, "a list"),
        ] {
            match read_context(body.as_bytes()) {
                Err(ContextError::Invalid(m)) => {
                    assert!(m.contains("`targetingKey` must be a string"), "{m}");
                    assert!(m.contains(kind), "{m}");
                }
                _ => panic!("{body} was accepted"),
            }
        }
        let Err(ContextError::Invalid(m)) = read_context(br#"{"context": {"targetingKey": 42}}"#)
        else {
            panic!("accepted")
        };
        assert!(m.contains(r#""targetingKey": "42""#), "{m}");
    }

    #[test]
    fn the_targeting_key_is_missing_only_where_the_answer_depends_on_it() {
        let flags = environment(&[
            (
                "listed",
                json!({"enabled": true, "users": ["alice"], "groups": ["staff"]}),
            ),
            (
                "gradual",
                json!({"enabled": true, "groups": ["staff"], "rollout": 30}),
            ),
            (
                "split",
                json!({"enabled": true, "variants": [{"name": "a"}, {"name": "b"}]}),
            ),
            (
                "french",
                json!({"enabled": true, "rollout": 30, "constraints": [
                    {"field": "country", "operator": "IN", "values": ["FR"]}]}),
            ),
        ]);
        let answer = |name: &str, context: Value| {
            let context = read_context(json!({ "context": context }).to_string().as_bytes())
                .ok()
                .unwrap();
            evaluate_flag(&flags, name, &flags.specs[name], &context)
        };
        let staff = answer("listed", json!({"group": "staff"})).unwrap();
        assert_eq!(
            (&staff["value"], &staff["reason"]),
            (&json!(true), &json!("TARGETING_MATCH"))
        );
        let nobody = answer("listed", json!({"group": "guests"})).unwrap();
        assert_eq!(nobody["value"], false, "not listed, whoever it is");
        assert_eq!(
            answer("gradual", json!({"group": "staff"})).unwrap()["value"],
            true
        );
        let missing = answer("gradual", json!({"group": "guests"})).unwrap_err();
        assert!(missing.contains("targetingKey"), "{missing}");
        assert!(
            answer("gradual", json!({"group": "guests", "userId": "u1"})).is_ok(),
            "an Unleash userId attribute is the targeting key too"
        );
        let split = answer("split", json!({})).unwrap();
        assert!(
            ["a", "b"].contains(&split["value"].as_str().unwrap()),
            "{split}"
        );
        assert_eq!(
            answer("french", json!({"country": "DE"})).unwrap()["value"],
            false
        );
        assert!(answer("french", json!({"country": "FR"})).is_err());
    }
}
