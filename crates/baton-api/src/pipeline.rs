//! The pipeline's routes: the Git webhook (public: its HMAC signature is its
//! authentication), builds and their logs, promotion (a deployer of the
//! target environment, audited), review apps, notifications and
//! announcements. Handlers parse and shape; `baton_pipeline` decides.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use axum::{Extension, Json};
use baton_auth::Principal;
use baton_pipeline::event::{self, Action};
use baton_pipeline::{signature, Pipeline, PromoteRequest};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, Peer};
use crate::routes::Routes;
use crate::{body, check_app, ApiError, ApiResult};

/// The webhook's path, open to anyone: a delivery proves itself by its signature.
pub(crate) const WEBHOOK: &str = "/api/v1/webhooks/git";

fn store_error(e: baton_store::StoreError) -> ApiError {
    e.into()
}

pub(crate) fn routes() -> Routes<Arc<Pipeline>> {
    Routes::new()
        .post(WEBHOOK, webhook)
        .get("/api/v1/builds", builds)
        .get("/api/v1/builds/{id}", build)
        .get("/api/v1/builds/{id}/logs", build_logs)
        .post("/api/v1/apps/{app}/promote", promote)
        .get("/api/v1/apps/{app}/promotions", promotions)
        .get("/api/v1/apps/{app}/announcements/{release}", announcement)
        .get("/api/v1/review-apps", review_apps)
        .get("/api/v1/notifications", notifications)
}

/// `POST /api/v1/webhooks/git`: GitHub, Gitea and Forgejo deliveries. The
/// checks run in an order that changes nothing until the delivery is known
/// to be genuine, well-formed and new.
async fn webhook(
    State(p): State<Arc<Pipeline>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let limit = p.config().max_payload_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the delivery is larger than {limit} bytes (max_payload_bytes in the pipeline configuration)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let raw: Bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {content_type:?} is not accepted; set the webhook's content type to application/json"),
        ));
    }
    let h = event::headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
        .map_err(ApiError::bad_request)?;
    let Some(secret) = p.config().webhook_secret.as_deref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks are off: set webhook_secret in the pipeline configuration (baton server --pipeline FILE)",
        ));
    };
    let signed = h
        .signature
        .as_deref()
        .is_some_and(|s| signature::verify(secret.as_bytes(), &raw, s));
    if !signed {
        tracing::warn!(
            source = h.source.as_str(),
            event = h.event,
            delivery = h.delivery,
            signature_present = h.signature.is_some(),
            "webhook refused: bad signature"
        );
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the delivery's signature does not match the body under the configured secret",
        ));
    }
    let payload: serde_json::Value = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::bad_request(format!("the delivery is not valid JSON: {e}")))?;
    let action = event::action(&h.event, &payload)
        .map_err(|e| ApiError::bad_request(format!("{} event: {e}", h.event)))?;
    let new = p
        .store()
        .record_webhook_delivery(&h.delivery, h.source.as_str(), &h.event)
        .await
        .map_err(store_error)?;
    if !new {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "delivery {} was already received; a replay changes nothing",
                h.delivery
            ),
        ));
    }
    tracing::info!(
        source = h.source.as_str(),
        event = h.event,
        delivery = h.delivery,
        "webhook accepted"
    );
    match action {
        Action::Build(request) => {
            let build = p.queue_build(&request).await?;
            Ok((StatusCode::ACCEPTED, Json(json!({"build": build}))).into_response())
        }
        Action::Closed(pr) => {
            let number = pr.number;
            p.pull_request_closed(pr).await?;
            Ok((StatusCode::ACCEPTED, Json(json!({"closed": number}))).into_response())
        }
        Action::Ignore(reason) => {
            Ok((StatusCode::OK, Json(json!({"ignored": reason}))).into_response())
        }
    }
}

#[derive(Deserialize)]
struct BuildsQuery {
    app: Option<String>,
    limit: Option<i64>,
}

async fn builds(
    State(p): State<Arc<Pipeline>>,
    Query(q): Query<BuildsQuery>,
) -> ApiResult<impl IntoResponse> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(
        p.store()
            .builds(q.app.as_deref(), limit)
            .await
            .map_err(store_error)?,
    ))
}

fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("{id:?} is not a build id (a number)")))
}

async fn build(
    State(p): State<Arc<Pipeline>>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        p.store().build(parse_id(&id)?).await.map_err(store_error)?,
    ))
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
}

/// A build's output; with `follow=true`, streamed until the build ends.
async fn build_logs(
    State(p): State<Arc<Pipeline>>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    p.store().build(id).await.map_err(store_error)?;
    let path = p.log_path(id);
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow {
        let text = std::fs::read(&path).unwrap_or_default();
        return Ok((content_type, text).into_response());
    }
    let stream = futures_util::stream::unfold((p, 0u64, false), move |(p, offset, done)| {
        let path = path.clone();
        async move {
            if done {
                return None;
            }
            loop {
                let chunk = read_from(&path, offset);
                if !chunk.is_empty() {
                    let next = offset + chunk.len() as u64;
                    return Some((
                        Ok::<_, std::io::Error>(Bytes::from(chunk)),
                        (p, next, false),
                    ));
                }
                let finished = p
                    .store()
                    .build(id)
                    .await
                    .map(|b| !matches!(b.state.as_str(), "queued" | "running"))
                    .unwrap_or(true);
                if finished {
                    // Whatever was written between the read and the check.
                    let rest = read_from(&path, offset);
                    return Some((Ok(Bytes::from(rest)), (p, offset, true)));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    Ok((content_type, Body::from_stream(stream)).into_response())
}

fn read_from(path: &std::path::Path, offset: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(offset)).is_ok() {
        let _ = f.take(64 * 1024).read_to_end(&mut buf);
    }
    buf
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    release: String,
    #[serde(default = "crate::production")]
    to: String,
    /// Promote without waiting for the announcement; recorded with who asked.
    override_announcement: Option<String>,
}

async fn promote(
    State(p): State<Arc<Pipeline>>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(app): Path<String>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let b: PromoteBody = body(&raw)?;
    baton_manifest::check_name("environment", &b.to).map_err(ApiError::bad_request)?;
    auth::may_change(&principal, &app, &b.to)?;
    if b.override_announcement
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        return Err(ApiError::bad_request(
            "override_announcement must give a reason",
        ));
    }
    let promotion = p
        .promote(PromoteRequest {
            app: app.clone(),
            release: b.release,
            environment: b.to,
            actor: principal.actor(),
            override_announcement: b.override_announcement.clone(),
        })
        .await?;
    auth::record(
p.store(),
auth::entry(&principal, &peer, "promotion.create", format!("promotion {}", promotion.id))
.about(Some(&app), Some(&promotion.environment))
.with(json!({"release": promotion.release_id, "state": promotion.state, "override_announcement": b.override_announcement})),
)
    .await;
    Ok((StatusCode::ACCEPTED, Json(promotion)))
}

async fn promotions(
    State(p): State<Arc<Pipeline>>,
    Path(app): Path<String>,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    Ok(Json(
        p.store().promotions(&app, 100).await.map_err(store_error)?,
    ))
}

async fn announcement(
    State(p): State<Arc<Pipeline>>,
    Path((app, release)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let release = p
        .store()
        .find_release(&app, &release)
        .await
        .map_err(store_error)?;
    let announcement = p
        .store()
        .announcement(&release.id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::not_found(format!("release {} carries no release notes", release.id))
        })?;
    let waiting = p.production_waits_for(&release.id).await?;
    Ok(Json(
        json!({"announcement": announcement, "production_waits_for": waiting}),
    ))
}

async fn review_apps(State(p): State<Arc<Pipeline>>) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        p.store().live_review_apps().await.map_err(store_error)?,
    ))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<i64>,
}

async fn notifications(
    State(p): State<Arc<Pipeline>>,
    Query(q): Query<Limit>,
) -> ApiResult<impl IntoResponse> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(
        p.store().notifications(limit).await.map_err(store_error)?,
    ))
}
