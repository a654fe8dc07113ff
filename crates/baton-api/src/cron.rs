//! An app's cron jobs (`baton cron list|history|run`): the live release's
//! jobs with their next and last runs, a job's runs, one run with its
//! output from an offset (so a client follows it), and a run by hand.
//! The scheduler and its records are the orchestrator's.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use baton_auth::Principal;
use serde::Deserialize;

use crate::auth::{self, Peer};
use crate::routes::Routes;
use crate::{body, check_app, production, ApiError, ApiResult, AppState, Environment};

pub(crate) fn routes() -> Routes<AppState> {
    Routes::new()
        .get("/api/v1/apps/{app}/cron", list)
        .get("/api/v1/apps/{app}/cron/{job}/runs", history)
        .post("/api/v1/apps/{app}/cron/{job}/runs", run)
        .get("/api/v1/apps/{app}/cron/{job}/runs/{run}", one)
}

fn check_job(job: &str) -> ApiResult<()> {
    baton_manifest::check_name("cron job", job).map_err(ApiError::bad_request)
}

/// `baton cron list`.
async fn list(
    State(o): State<AppState>,
    Path(app): Path<String>,
    Query(environment): Query<Environment>,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let environment = environment.checked()?;
    Ok(Json(o.cron_jobs(&app, &environment).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    #[serde(default = "production")]
    environment: String,
    limit: Option<i64>,
}

/// `baton cron history`: newest first.
async fn history(
    State(o): State<AppState>,
    Path((app, job)): Path<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    check_job(&job)?;
    let environment = Environment {
        environment: q.environment,
    }
    .checked()?;
    let limit = q.limit.unwrap_or(20).clamp(1, 1000);
    Ok(Json(o.cron_history(&app, &environment, &job, limit).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default = "production")]
    environment: String,
}

/// `baton cron run`: started now (audited), answered at once; the client
/// follows the run with `one`.
async fn run(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path((app, job)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    check_job(&job)?;
    let b: RunBody = body(&raw)?;
    auth::may_change(&principal, &app, &b.environment)?;
    let run = o
        .run_cron_now(&app, &b.environment, &job, &auth::actor(&principal, &peer))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OneQuery {
    #[serde(default = "production")]
    environment: String,
    #[serde(default)]
    offset: u64,
}

/// One run, and its output from `offset` (64 KiB at most a call).
async fn one(
    State(o): State<AppState>,
    Path((app, job, run)): Path<(String, String, i64)>,
    Query(q): Query<OneQuery>,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    check_job(&job)?;
    let environment = Environment {
        environment: q.environment,
    }
    .checked()?;
    Ok(Json(
        o.cron_run_output(&app, &environment, &job, run, q.offset)
            .await?,
    ))
}
