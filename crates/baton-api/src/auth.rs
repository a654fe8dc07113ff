//! Who may call what. Every `/api/v1` request but the health check and the
//! OpenAPI document passes through [`require`]: it finds the principal (a
//! bearer token — an API token or the data folder's `admin.token` — or a
//! dashboard session cookie; never an address), refuses anonymous callers
//! with 401, and requires the `viewer` role to read and `deployer` to
//! change; handlers then check the app, the environment and admin-only
//! actions. The actor the audit log names is always the principal.
//! A cookie-authenticated change must carry the session's CSRF token in
//! `X-CSRF-Token`, so another site cannot make a browser act.
//! Also: users, tokens, login for the CLI, and the audit log.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use baton_auth::{Auth, AuthError, Principal, Role};
use baton_store::{AuditEntry, Store};
use serde::Deserialize;
use serde_json::json;

use crate::{body, ApiError, ApiResult, AppState};

/// Paths anyone may call.
/// The Git webhook is among them: its HMAC signature authenticates it.
const PUBLIC: &[&str] = &[
    "/api/v1/health",
    "/api/v1/openapi.json",
    "/api/v1/login",
    crate::pipeline::WEBHOOK,
];

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"baton\"")],
        Json(json!({"error": {"code": "unauthorized", "message": message}})),
    )
        .into_response()
}

pub(crate) fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message.into())
}

pub async fn require(
    State(auth): State<Arc<Auth>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    // The API, and the metrics beside it (Prometheus' usual path).
    let guarded = path.starts_with("/api/v1/") || path == crate::metrics::PATH;
    if PUBLIC.contains(&path) || !guarded {
        return next.run(request).await;
    }
    let headers = request.headers();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    let authorization = text(header::AUTHORIZATION);
    let found = auth.authenticate(authorization, text(header::COOKIE)).await;
    let principal = match found {
        Ok(Some(principal)) => principal,
        Ok(None) if authorization.is_some() => {
            return unauthorized("the API token is unknown or revoked; create one with `baton login` or `baton tokens create`")
        }
        Ok(None) => {
            return unauthorized("log in first: `baton login` (or set BATON_TOKEN to an API token)")
        }
        Err(e) => return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reading {
        let by_cookie =
            authorization.is_none() && matches!(principal.via, baton_auth::Via::Session { .. });
        let csrf = text(axum::http::HeaderName::from_static("x-csrf-token")).unwrap_or("");
        if by_cookie && !auth.csrf_matches(&principal, csrf) {
            return forbidden(
                "a change made with a session cookie needs the session's X-CSRF-Token header",
            )
            .into_response();
        }
        // Tokens manage themselves; everything else that changes needs a deployer.
        let own_tokens = path == "/api/v1/tokens" || path.starts_with("/api/v1/tokens/");
        if !own_tokens && !principal.has(Role::Deployer) {
            return forbidden(format!(
                "{} is a {}: viewers cannot change anything",
                principal.name, principal.role
            ))
            .into_response();
        }
    }
    request.extensions_mut().insert(principal);
    request.extensions_mut().insert(Peer(peer));
    next.run(request).await
}

/// The caller's address, for the audit log.
#[derive(Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Refuses a change to an app or environment the principal was not granted.
pub(crate) fn may_change(principal: &Principal, app: &str, environment: &str) -> ApiResult<()> {
    if principal.may_change(app, environment) {
        Ok(())
    } else {
        Err(forbidden(format!(
            "{} ({}) may not change {app} in {environment}; an admin can grant it (`baton users add NAME --role deployer --app {app} --env {environment}`)",
            principal.name, principal.role
        )))
    }
}

pub(crate) fn admin(principal: &Principal) -> ApiResult<()> {
    if principal.has(Role::Admin) {
        Ok(())
    } else {
        Err(forbidden(format!(
            "{} is a {}: only an admin may do this",
            principal.name, principal.role
        )))
    }
}

/// Who a change is by, for the commands that record it: the principal and
/// the client's address.
pub(crate) fn actor(principal: &Principal, peer: &Peer) -> baton_store::Actor {
    baton_store::Actor::new(principal.actor(), Some(peer.0.ip().to_string()))
}

/// An audit entry for a change by `principal` from `peer`.
pub(crate) fn entry(
    principal: &Principal,
    peer: &Peer,
    action: &str,
    subject: String,
) -> AuditEntry {
    AuditEntry::new(
        principal.actor(),
        Some(peer.0.ip().to_string()),
        action,
        subject,
    )
}

/// Appends to the audit log; a failure to write is logged, not fatal.
pub(crate) async fn record(store: &Store, entry: AuditEntry) {
    if let Err(e) = store.record_audit(&entry).await {
        tracing::error!(error = %e, action = entry.action, "cannot write the audit log");
    }
}

fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::WrongCredentials => ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()),
        AuthError::Busy => ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        AuthError::Invalid(m) => ApiError::bad_request(m),
        AuthError::Store(e) => e.into(),
        e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn whoami(Extension(principal): Extension<Principal>) -> Json<Principal> {
    Json(principal)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    user: String,
    password: String,
    /// What the token is for, e.g. the machine's name.
    #[serde(default = "cli")]
    token_name: String,
}

fn cli() -> String {
    "cli".into()
}

/// Trades a user name and password for an API token with the user's role.
pub async fn login(
    State(o): State<AppState>,
    Extension(auth): Extension<Arc<Auth>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    let b: LoginBody = body(&raw)?;
    let (_, principal) = auth
        .login(&b.user, &b.password, peer.ip())
        .await
        .map_err(auth_error)?;
    let (secret, token) = auth
        .create_token(&principal.name, &b.token_name, principal.role)
        .await
        .map_err(auth_error)?;
    record(
        o.store(),
        entry(
            &principal,
            &Peer(peer),
            "token.create",
            format!("token {} ({})", token.id, token.name),
        )
        .about(None, None)
        .with(json!({"role": token.role, "via": "login"})),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": secret, "record": token})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    role: Option<Role>,
    /// Admins may make a token for another user.
    user: Option<String>,
}

pub async fn create_token(
    State(o): State<AppState>,
    Extension(auth): Extension<Arc<Auth>>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    let b: TokenBody = body(&raw)?;
    let user = match b.user {
        Some(user) if user != principal.name => {
            admin(&principal)?;
            user
        }
        _ => principal.name.clone(),
    };
    if matches!(principal.via, baton_auth::Via::AdminToken) && user == principal.name {
        return Err(ApiError::bad_request(
            "admin.token belongs to no account: create one with `baton users add NAME --admin` on the server's host, then make tokens for it",
        ));
    }
    let role = b.role.unwrap_or(principal.role).min(principal.role);
    let (secret, token) = auth
        .create_token(&user, &b.name, role)
        .await
        .map_err(auth_error)?;
    record(
        o.store(),
        entry(
            &principal,
            &peer,
            "token.create",
            format!("token {} ({}) of {user}", token.id, token.name),
        )
        .about(None, None)
        .with(json!({"role": token.role})),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": secret, "record": token})),
    ))
}

pub async fn tokens(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<impl IntoResponse> {
    let user = (!principal.has(Role::Admin)).then_some(principal.name.as_str());
    Ok(Json(o.store().tokens(user).await?))
}

pub async fn revoke_token(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    let store = o.store();
    let token = store.token(id).await?;
    if token.user != principal.name {
        admin(&principal)?;
    }
    let token = store.revoke_token(id).await?;
    record(
        o.store(),
        entry(
            &principal,
            &peer,
            "token.revoke",
            format!("token {} ({}) of {}", token.id, token.name, token.user),
        )
        .about(None, None)
        .with(json!({})),
    )
    .await;
    Ok(Json(token))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    name: String,
    password: String,
    role: Role,
    environments: Option<Vec<String>>,
    apps: Option<Vec<String>>,
}

pub async fn create_user(
    State(o): State<AppState>,
    Extension(auth): Extension<Arc<Auth>>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    admin(&principal)?;
    let b: UserBody = body(&raw)?;
    auth.add_user(
        &b.name,
        &b.password,
        b.role,
        b.environments.clone(),
        b.apps.clone(),
    )
    .await
    .map_err(auth_error)?;
    record(
        o.store(),
        entry(&principal, &peer, "user.create", format!("user {}", b.name))
            .about(None, None)
            .with(json!({"role": b.role, "environments": b.environments, "apps": b.apps})),
    )
    .await;
    let user = o.store().user(&b.name).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

pub async fn users(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<impl IntoResponse> {
    admin(&principal)?;
    Ok(Json(o.store().users().await?))
}
