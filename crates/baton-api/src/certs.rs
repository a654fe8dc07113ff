//! HTTPS certificates: what each app's hosts are served with (any
//! principal may read; never a key), and a renewal asked for now (a
//! deployer of that environment). Handlers parse and shape; `baton_certs`
//! decides.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use baton_auth::Principal;
use baton_certs::{CertificateView, Certs};
use serde::Deserialize;

use crate::auth;
use crate::routes::Routes;
use crate::{body, check_app, ApiError, ApiResult};

pub(crate) fn routes() -> Routes<Arc<Certs>> {
    Routes::new()
        .get("/api/v1/certs", list)
        .post("/api/v1/apps/{app}/certs/renew", renew)
}

fn certs_error(e: baton_certs::CertsError) -> ApiError {
    ApiError::of(e.fault(), e.to_string())
}

/// `baton certs`: every app's certificate, newest problems included.
async fn list(State(certs): State<Arc<Certs>>) -> ApiResult<Json<Vec<CertificateView>>> {
    Ok(Json(certs.list().await.map_err(certs_error)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    #[serde(default = "crate::production")]
    environment: String,
}

/// `baton certs renew APP`: a new certificate now (ACME), or the files
/// read again; answers once it is served, or why it is not.
async fn renew(
    State(certs): State<Arc<Certs>>,
    Extension(principal): Extension<Principal>,
    Path(app): Path<String>,
    raw: Bytes,
) -> ApiResult<Json<CertificateView>> {
    check_app(&app)?;
    let b: RenewBody = body(&raw)?;
    auth::may_change(&principal, &app, &b.environment)?;
    let key = baton_proxy::RouteKey::new(&app, &b.environment);
    Ok(Json(certs.renew(&key).await.map_err(certs_error)?))
}
