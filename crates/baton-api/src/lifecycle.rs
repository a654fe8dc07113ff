//! An app as a whole: `DELETE /api/v1/apps/{app}` (`baton destroy`), by an
//! admin, naming the app again in `?confirm=` so that no stray request
//! removes one. The orchestrator removes and audits; this module gathers
//! the files other parts keep for the app (the pipeline's build logs) and
//! has the flag service forget the app's flags and keys.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use baton_auth::Principal;
use baton_flag_service::FlagService;
use baton_orchestrator::{Destroyed, Orchestrator};
use baton_pipeline::Pipeline;
use serde::Deserialize;

use crate::auth::{self, Peer};
use crate::routes::Routes;
use crate::{check_app, ApiError, ApiResult};

#[derive(Clone)]
pub(crate) struct Lifecycle {
    pub orchestrator: Arc<Orchestrator>,
    pub flags: Arc<FlagService>,
    pub pipeline: Arc<Pipeline>,
}

pub(crate) fn routes() -> Routes<Lifecycle> {
    Routes::new().delete("/api/v1/apps/{app}", destroy)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestroyQuery {
    /// Only this environment; every one when left out.
    environment: Option<String>,
    /// The app's name again.
    #[serde(default)]
    confirm: String,
}

async fn destroy(
    State(l): State<Lifecycle>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(app): Path<String>,
    Query(q): Query<DestroyQuery>,
) -> ApiResult<Json<Destroyed>> {
    check_app(&app)?;
    auth::admin(&principal)?;
    if let Some(environment) = &q.environment {
        baton_manifest::check_name("environment", environment).map_err(ApiError::bad_request)?;
    }
    if q.confirm != app {
        return Err(ApiError::bad_request(format!(
            "destroying {app} needs its name again: add ?confirm={app}"
        ))
        .with_code("confirmation_required"));
    }
    let environment = q.environment.as_deref();
    let build_logs: Vec<_> = l
        .orchestrator
        .store()
        .build_ids_of(&app, environment)
        .await?
        .into_iter()
        .map(|id| l.pipeline.log_path(id))
        .collect();
    let destroyed = l
        .orchestrator
        .destroy(
            &app,
            environment,
            &auth::actor(&principal, &peer),
            &build_logs,
        )
        .await?;
    if let Err(e) = l.flags.reload().await {
        tracing::error!(app, error = %e, "cannot rebuild the flag snapshot after destroying an app");
    }
    Ok(Json(destroyed))
}
