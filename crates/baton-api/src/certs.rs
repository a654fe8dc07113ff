//! HTTPS certificates: what each app's hosts are served with (any
//! principal may read; never a key), and a renewal asked for now (a
//! deployer of that environment). Handlers parse and shape; `baton_certs`
//! decides.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use baton_auth::Principal;
use baton_certs::Certs;
use baton_store::CertificateRecord;
use serde::{Deserialize, Serialize};

use crate::auth;
use crate::routes::Routes;
use crate::{body, check_app, ApiError, ApiResult};

pub(crate) fn routes() -> Routes<Arc<Certs>> {
    Routes::new()
        .get("/api/v1/certs", list)
        .post("/api/v1/apps/{app}/certs/renew", renew)
}

/// A certificate as the API shows it: everything but its key and chain.
#[derive(Serialize)]
struct Shown {
    app: String,
    environment: String,
    source: String,
    hosts: Vec<String>,
    /// Whether a certificate is served now.
    served: bool,
    issuer: Option<String>,
    not_before: Option<i64>,
    not_after: Option<i64>,
    renewed_at: Option<i64>,
    last_error: Option<String>,
    failed_at: Option<i64>,
    next_attempt: Option<i64>,
}

impl From<CertificateRecord> for Shown {
    fn from(c: CertificateRecord) -> Shown {
        Shown {
            served: c.chain_pem.is_some() && c.key_pem.is_some(),
            app: c.app,
            environment: c.environment,
            source: c.source,
            hosts: c.hosts,
            issuer: c.issuer,
            not_before: c.not_before,
            not_after: c.not_after,
            renewed_at: c.renewed_at,
            last_error: c.last_error,
            failed_at: c.failed_at,
            next_attempt: c.next_attempt,
        }
    }
}

fn certs_error(e: baton_certs::CertsError) -> ApiError {
    ApiError::of(e.fault(), e.to_string())
}

/// `baton certs`: every app's certificate, newest problems included.
async fn list(State(certs): State<Arc<Certs>>) -> ApiResult<Json<Vec<Shown>>> {
    let all = certs.list().await.map_err(certs_error)?;
    Ok(Json(all.into_iter().map(Shown::from).collect()))
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
) -> ApiResult<Json<Shown>> {
    check_app(&app)?;
    let b: RenewBody = body(&raw)?;
    auth::may_change(&principal, &app, &b.environment)?;
    let key = baton_proxy::RouteKey::new(&app, &b.environment);
    let record = certs.renew(&key).await.map_err(certs_error)?;
    Ok(Json(Shown::from(record)))
}
