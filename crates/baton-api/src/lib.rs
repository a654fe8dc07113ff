//! The control plane's HTTP JSON API, under `/api/v1`, described by the
//! OpenAPI document it serves at `/api/v1/openapi.json`. Handlers only parse
//! requests, call the orchestrator or the store, and shape answers; every
//! decision lives in the orchestrator. Errors are JSON objects
//! `{"error": {"code", "message"}}` whose message names what was wrong.

mod auth;
mod certs;
mod config;
mod cron;
pub mod edge;
mod flags;
mod lifecycle;
mod logs;
mod metrics;
mod pipeline;
mod routes;
mod upload;

use std::sync::Arc;

use auth::Peer;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Extension, Json, Router};
use baton_auth::{Auth, Principal};
use baton_flag_service::FlagService;
use baton_orchestrator::{DeployRequest, Error, Orchestrator};
use routes::Routes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

/// The OpenAPI document, kept by hand beside the routes it describes.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Largest release archive accepted unless the server says otherwise.
pub const DEFAULT_MAX_UPLOAD: u64 = 512 * 1024 * 1024;

pub type AppState = Arc<Orchestrator>;

/// How the API takes uploads.
#[derive(Debug, Clone)]
pub struct Uploads {
    /// Largest release archive accepted (413 beyond).
    pub max_bytes: u64,
    /// Where an upload is written while it arrives (private to the server).
    pub dir: std::path::PathBuf,
}

/// The API, with the flag endpoints of `/api/v1` served by `flags`. The
/// OFREP and Unleash client endpoints are [`FlagService::client_router`]'s.
///
/// Every route but the health check, the OpenAPI document and `login` sits
/// behind [`auth::require`] (see there).
pub fn router(
    orchestrator: Arc<Orchestrator>,
    flags: Arc<FlagService>,
    auth: Arc<Auth>,
    pipeline: Arc<baton_pipeline::Pipeline>,
    certs: Arc<baton_certs::Certs>,
    uploads: Uploads,
) -> Router {
    served_routes()
        .merge(flags::routes().with_state(Arc::clone(&flags)))
        .merge(pipeline::routes().with_state(Arc::clone(&pipeline)))
        .merge(certs::routes().with_state(certs))
        .merge(lifecycle::routes().with_state(lifecycle::Lifecycle {
            orchestrator: Arc::clone(&orchestrator),
            flags: Arc::clone(&flags),
            pipeline: Arc::clone(&pipeline),
        }))
        .into_router()
        // Only API paths answer JSON; every other unknown path is the
        // dashboard's, which answers a page.
        .route("/api/{*rest}", any(not_found))
        .with_state(orchestrator)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&auth),
            auth::require,
        ))
        .layer(Extension(auth))
        .layer(Extension(Arc::new(uploads)))
}

/// The API's own routes (flags' and the pipeline's are theirs).
fn served_routes() -> Routes<AppState> {
    Routes::new()
        .get("/api/v1/openapi.json", openapi)
        .get("/api/v1/health", health)
        .get(metrics::PATH, metrics::metrics)
        .get("/api/v1/status", status)
        .get("/api/v1/apps", apps)
        .get("/api/v1/apps/{app}/releases", releases)
        // Bounded by `Uploads::max_bytes` as it streams to disk.
        .route(
            "post",
            "/api/v1/apps/{app}/releases",
            post(create_release).layer(DefaultBodyLimit::disable()),
        )
        .get("/api/v1/apps/{app}/deployments", deployments)
        .post("/api/v1/apps/{app}/deployments", deploy)
        .post("/api/v1/apps/{app}/rollback", rollback)
        .post("/api/v1/apps/{app}/contracts", contract_by_hand)
        .post("/api/v1/apps/{app}/maintenance", maintenance)
        .get("/api/v1/apps/{app}/canary", canary)
        .get("/api/v1/apps/{app}/logs", logs::logs)
        .get("/api/v1/apps/{app}/requests", logs::requests)
        .get(
            "/api/v1/apps/{app}/releases/{release}/image-log",
            logs::image_log,
        )
        .get("/api/v1/apps/{app}/events", events)
        .get("/api/v1/deployments/{id}", deployment)
        .post("/api/v1/deployments/{id}/continue", continue_preview)
        .post("/api/v1/deployments/{id}/abort", abort_preview)
        .get("/api/v1/whoami", auth::whoami)
        .post("/api/v1/login", auth::login)
        .get("/api/v1/tokens", auth::tokens)
        .post("/api/v1/tokens", auth::create_token)
        .delete("/api/v1/tokens/{id}", auth::revoke_token)
        .get("/api/v1/users", auth::users)
        .post("/api/v1/users", auth::create_user)
        .merge(config::routes())
        .get(
            "/api/v1/apps/{app}/releases/{release}/build-log",
            logs::build_log,
        )
        .merge(cron::routes())
}

/// An API error: an HTTP status, a machine-readable code (by default the
/// status's) and a message for a person.
#[derive(Debug)]
pub struct ApiError(StatusCode, String, Option<&'static str>);

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError(status, message.into(), None)
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    /// A code more precise than the status's, for clients to act on.
    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.2 = Some(code);
        self
    }
}

impl ApiError {
    /// The one place a domain error becomes an HTTP answer: by its fault,
    /// whichever crate raised it; its message (with the way out) as is.
    pub(crate) fn of(fault: baton_store::Fault, message: String) -> ApiError {
        use baton_store::Fault;
        let status = match fault {
            Fault::Invalid => StatusCode::BAD_REQUEST,
            Fault::NotFound => StatusCode::NOT_FOUND,
            Fault::Refused => StatusCode::CONFLICT,
            Fault::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let code = matches!(e, Error::AlreadyLive { .. }).then_some("already_live");
        let answer = ApiError::of(e.fault(), e.to_string());
        match code {
            Some(code) => answer.with_code(code),
            None => answer,
        }
    }
}

impl From<baton_store::StoreError> for ApiError {
    fn from(e: baton_store::StoreError) -> ApiError {
        ApiError::of(e.fault(), e.to_string())
    }
}

impl From<baton_pipeline::Error> for ApiError {
    fn from(e: baton_pipeline::Error) -> ApiError {
        match e {
            baton_pipeline::Error::Orchestrator(e) => e.into(),
            e => ApiError::of(e.fault(), e.to_string()),
        }
    }
}

impl From<baton_flag_service::FlagError> for ApiError {
    fn from(e: baton_flag_service::FlagError) -> ApiError {
        ApiError::of(e.fault(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.2.unwrap_or(match self.0 {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::TOO_MANY_REQUESTS => "busy",
            StatusCode::REQUEST_TIMEOUT => "timeout",
            StatusCode::MISDIRECTED_REQUEST => "unknown_host",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        });
        if self.0.is_server_error() {
            tracing::error!(message = self.1, "API request failed");
        }
        let mut response = (
            self.0,
            Json(json!({"error": {"code": code, "message": self.1}})),
        )
            .into_response();
        if self.0 == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Parses a JSON body, naming the field at fault. An empty body is `{}`.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let bytes = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        b"{}" as &[u8]
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid: {e}")))
}

fn check_app(app: &str) -> ApiResult<()> {
    baton_manifest::check_name("app", app).map_err(ApiError::bad_request)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such API path; see /api/v1/openapi.json")
}

async fn status(State(o): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(o.status().await?))
}

/// `baton apps`: every app, with each environment's live release, state
/// and hosts.
async fn apps(State(o): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(o.apps().await?))
}

async fn releases(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(app): Path<String>,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let releases = o.store().releases(&app).await?;
    Ok(Json(
        releases
            .into_iter()
            .map(|r| shown_to(&principal, r))
            .collect::<Vec<_>>(),
    ))
}

/// A release as `principal` may see it: the manifest's variables (database
/// URLs, keys) are an admin's to read.
fn shown_to(principal: &Principal, mut release: baton_store::Release) -> baton_store::Release {
    if !principal.may_read_secrets() {
        release.manifest = baton_manifest::Manifest::redact_env(&release.manifest);
    }
    release
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// The environment the release is uploaded for (a deployer must be
    /// granted it).
    #[serde(default = "production")]
    environment: String,
}

async fn create_release(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(uploads): Extension<Arc<Uploads>>,
    Path(app): Path<String>,
    Query(q): Query<UploadQuery>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    baton_manifest::check_name("environment", &q.environment).map_err(ApiError::bad_request)?;
    auth::may_change(&principal, &app, &q.environment)?;
    let upload = upload::receive(&uploads, &headers, body).await?;
    let archive = upload.read().await?;
    if archive.is_empty() {
        return Err(ApiError::bad_request(
            "the request body must be the release archive (a tar file)",
        ));
    }
    let (release, created) = o.create_release(&app, archive).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"release": shown_to(&principal, release), "created": created})),
    ))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<i64>,
}

impl Limit {
    /// How many records to list: 50 unless asked, at most 1000.
    fn get(&self) -> i64 {
        self.limit.unwrap_or(50).clamp(1, 1000)
    }
}

async fn deployments(
    State(o): State<AppState>,
    Path(app): Path<String>,
    Query(q): Query<Limit>,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    Ok(Json(o.store().deployments(&app, q.get()).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    release: String,
    #[serde(default = "production")]
    environment: String,
    #[serde(default)]
    preview: bool,
}

pub(crate) fn production() -> String {
    baton_manifest::DEFAULT_ENVIRONMENT.to_string()
}

async fn deploy(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(app): Path<String>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let b: DeployBody = body(&raw)?;
    auth::may_change(&principal, &app, &b.environment)?;
    let deployment = o
        .deploy(DeployRequest {
            app: app.clone(),
            environment: b.environment,
            release: b.release,
            preview: b.preview,
            actor: auth::actor(&principal, &peer),
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(deployment)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    #[serde(default = "production")]
    environment: String,
    to: Option<String>,
}

async fn rollback(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(app): Path<String>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let b: RollbackBody = body(&raw)?;
    auth::may_change(&principal, &app, &b.environment)?;
    let deployment = o
        .rollback(
            &app,
            &b.environment,
            b.to.as_deref(),
            &auth::actor(&principal, &peer),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(deployment)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    #[serde(default = "production")]
    environment: String,
    on: bool,
    message: Option<String>,
}

/// `baton maintenance on|off`: the proxy answers 503 with the message while
/// the app keeps running; audited.
async fn maintenance(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(app): Path<String>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let b: MaintenanceBody = body(&raw)?;
    auth::may_change(&principal, &app, &b.environment)?;
    let message = b.on.then(|| b.message.unwrap_or_default());
    let shown = o
        .set_maintenance(
            &app,
            &b.environment,
            message,
            &auth::actor(&principal, &peer),
        )
        .await?;
    Ok(Json(serde_json::json!({
        "app": app,
        "environment": b.environment,
        "maintenance": shown,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContractBody {
    environment: String,
    scripts: Vec<String>,
    #[serde(default)]
    force: bool,
}

/// `baton db migrate` about to apply contract migrations by hand: the
/// orchestrator checks the contract rule (409 while an older release is
/// live or warm, unless `force`) and records them, audited, before the CLI
/// runs them.
async fn contract_by_hand(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(app): Path<String>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let b: ContractBody = body(&raw)?;
    auth::may_change(&principal, &app, &b.environment)?;
    let recorded = o
        .record_contract_by_hand(
            &app,
            &b.environment,
            &b.scripts,
            b.force,
            &auth::actor(&principal, &peer),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(recorded)))
}

async fn deployment(
    State(o): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(&id)?;
    Ok(Json(o.store().deployment(id).await?))
}

fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("{id:?} is not a deployment id (a number)")))
}

async fn continue_preview(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    answer_preview(&o, &principal, &peer, &id, true).await
}

async fn abort_preview(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    answer_preview(&o, &principal, &peer, &id, false).await
}

async fn answer_preview(
    o: &Orchestrator,
    principal: &Principal,
    peer: &Peer,
    id: &str,
    go_on: bool,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(id)?;
    let deployment = o.store().deployment(id).await?;
    auth::may_change(principal, &deployment.app, &deployment.environment)?;
    o.answer_preview(id, go_on, &auth::actor(principal, peer))
        .await?;
    let answer = if go_on { "continued" } else { "aborted" };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"deployment": id, answer: true})),
    ))
}

/// `?environment=` (production when left out), checked as a name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Environment {
    #[serde(default = "production")]
    environment: String,
}

impl Environment {
    pub(crate) fn checked(self) -> ApiResult<String> {
        baton_manifest::check_name("environment", &self.environment)
            .map_err(ApiError::bad_request)?;
        Ok(self.environment)
    }
}

/// `baton canary status`: the share and both releases' figures.
async fn canary(
    State(o): State<AppState>,
    Path(app): Path<String>,
    Query(environment): Query<Environment>,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let environment = environment.checked()?;
    let key = baton_proxy::RouteKey::new(&app, &environment);
    match o.canary_view(&key).await {
        Some(view) => Ok(Json(view)),
        None => Err(ApiError::not_found(format!(
            "{app} has no canary running in {environment}; deploy a release whose baton.toml has [deploy] strategy = \"canary\""
        ))),
    }
}

async fn events(
    State(o): State<AppState>,
    Path(app): Path<String>,
    Query(q): Query<Limit>,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    Ok(Json(o.store().events(&app, q.get()).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_served_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        // The very calls that build the router: a route added there and
        // not documented fails here.
        let mut served: Vec<(String, String)> = served_routes()
            .served()
            .iter()
            .chain(flags::routes().served())
            .chain(pipeline::routes().served())
            .chain(certs::routes().served())
            .chain(lifecycle::routes().served())
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }

    #[test]
    fn request_bodies_name_the_field_at_fault() {
        let err = body::<DeployBody>(br#"{"release": "abc", "enviroment": "x"}"#)
            .err()
            .unwrap();
        assert_eq!(err.0, StatusCode::BAD_REQUEST);
        assert!(err.1.contains("enviroment"), "{}", err.1);
        let err = body::<DeployBody>(b"{not json").err().unwrap();
        assert!(err.1.contains("line 1"), "{}", err.1);
        let ok: RollbackBody = body(b"").unwrap();
        assert_eq!(ok.environment, "production");
    }
}
