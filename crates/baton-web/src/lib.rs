//! The dashboard, served by `baton server` beside the API: server-rendered
//! pages (askama templates compiled into the binary) and one small script
//! for confirmations and live deployment steps.
//!
//! This crate owns pages and forms. Every page and every form checks who
//! asks ([`baton_auth::Auth::authenticate`]) and what they may do before it
//! reads or changes anything; a form also carries the session's CSRF token,
//! and a cross-site `Origin` is refused. Actions call the orchestrator, are
//! written to the audit log, and the next page says plainly what happened.
//! Every path the API does not claim (`/api/…`) is the dashboard's, so an
//! unknown one answers a page, never JSON.

mod describe;
mod pages;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use baton_auth::{Auth, Principal};
use baton_flag_service::FlagService;
use baton_orchestrator::Orchestrator;

/// What the dashboard needs.
pub struct Web {
    pub orchestrator: Arc<Orchestrator>,
    pub auth: Arc<Auth>,
    pub flags: Arc<FlagService>,
}

pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/apps/{app}", get(pages::app))
        .route("/apps/{app}/deploy", post(pages::deploy))
        .route("/apps/{app}/rollback", post(pages::rollback))
        .route("/apps/{app}/logs", get(pages::logs))
        .route("/deployments/{id}", get(pages::deployment))
        .route("/deployments/{id}/stream", get(pages::stream))
        .route("/deployments/{id}/continue", post(pages::continue_preview))
        .route("/deployments/{id}/abort", post(pages::abort_preview))
        .route("/audit", get(pages::audit_page))
        .route("/flags", get(pages::flags))
        .route("/flags/toggle", post(pages::toggle_flag))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        // Any other path, API paths aside (the API answers those in JSON).
        .fallback(pages::not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(web)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/app.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../static/app.js"),
    )
}

/// The signed-in person; pages that need one send everyone else to the
/// login page.
pub struct User(pub Principal);

impl FromRequestParts<Arc<Web>> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<User, Response> {
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let found = web
            .auth
            .authenticate(header(header::AUTHORIZATION), header(header::COOKIE))
            .await;
        match found {
            Ok(Some(principal)) => Ok(User(principal)),
            Ok(None) => Err(Redirect::to("/login").into_response()),
            Err(e) => {
                tracing::error!(error = %e, "cannot check credentials");
                Err((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot check credentials",
                )
                    .into_response())
            }
        }
    }
}
