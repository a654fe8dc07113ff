//! Unleash's client API, so existing Unleash SDKs can point at Baton:
//! `GET /api/client/features` (the environment's compiled document, with an
//! ETag and 304 as Unleash servers answer), and `POST /api/client/register`
//! and `/api/client/metrics`, which are read and acknowledged. The API key
//! in `Authorization` chooses the app and environment. Like OFREP, this
//! module only reads the snapshot, never the store.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::ofrep::{authorize, Refused};
use crate::FlagService;

type Service = Arc<FlagService>;

pub(crate) fn router() -> Router<Service> {
    Router::new()
        .route("/api/client/features", get(features))
        .route("/api/client/register", post(register))
        .route("/api/client/metrics", post(metrics))
}

fn refused(refusal: Refused) -> Response {
    let name = match refusal {
        Refused::Revoked => "NoAccessError",
        _ => "AuthenticationRequired",
    };
    (
        refusal.status(),
        Json(json!({"name": name, "message": refusal.message()})),
    )
        .into_response()
}

async fn features(State(service): State<Service>, headers: HeaderMap) -> Response {
    let flags = match authorize(&service, &headers) {
        Ok(flags) => flags,
        Err(refusal) => return refused(refusal),
    };
    let etag = HeaderValue::from_str(&flags.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == flags.etag)
        });
    if unchanged {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::ETAG, etag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        flags.unleash_document.clone(),
    )
        .into_response()
}

/// Reads a JSON object body, as Unleash does, refusing anything else.
fn acknowledge(service: &FlagService, headers: &HeaderMap, body: &[u8], what: &str) -> Response {
    if let Err(refusal) = authorize(service, headers) {
        return refused(refusal);
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(_)) => StatusCode::ACCEPTED.into_response(),
        Ok(_) => bad_request(format!("the {what} body must be a JSON object")),
        Err(e) => bad_request(format!("the {what} body is not valid JSON: {e}")),
    }
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"name": "BadDataError", "message": message})),
    )
        .into_response()
}

async fn register(State(service): State<Service>, headers: HeaderMap, body: Bytes) -> Response {
    acknowledge(&service, &headers, &body, "registration")
}

async fn metrics(State(service): State<Service>, headers: HeaderMap, body: Bytes) -> Response {
    acknowledge(&service, &headers, &body, "metrics")
}
