//! An app's config vars (`baton config`), restarts, stops and starts,
//! workers' scale (`baton scale`) and one-off commands (`baton run`). Values are answered only to an admin
//! who asks for them (`reveal=true`); everyone else sees names and sources.

use std::collections::BTreeMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use baton_auth::Principal;
use baton_orchestrator::ConfigChange;
use baton_runtime::{Exit, OneOff};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::auth::{self, Peer};
use crate::routes::Routes;
use crate::{body, check_app, production, ApiError, ApiResult, AppState};

pub(crate) fn routes() -> Routes<AppState> {
    Routes::new()
        .get("/api/v1/apps/{app}/config", list)
        .post("/api/v1/apps/{app}/config", change)
        .post("/api/v1/apps/{app}/restart", restart)
        .post("/api/v1/apps/{app}/stop", stop)
        .post("/api/v1/apps/{app}/start", start)
        .post("/api/v1/apps/{app}/run", run)
        .post("/api/v1/apps/{app}/scale", scale)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    #[serde(default = "production")]
    environment: String,
    processes: BTreeMap<String, u32>,
}

/// `baton scale`: how many of each worker run, now and for later deploys.
async fn scale(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(app): Path<String>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let b: ScaleBody = body(&raw)?;
    auth::may_change(&principal, &app, &b.environment)?;
    if b.processes.is_empty() {
        return Err(ApiError::bad_request(
            "name at least one process and its count, like {\"worker\": 3}",
        ));
    }
    let done = o
        .scale(
            &app,
            &b.environment,
            b.processes.into_iter().collect(),
            &auth::actor(&principal, &peer),
        )
        .await?;
    Ok(Json(done))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default = "production")]
    environment: String,
    #[serde(default)]
    reveal: bool,
}

/// `baton config list`: names, where each comes from, and the values for
/// an admin who asks.
async fn list(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(app): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    if q.reveal && !principal.may_read_secrets() {
        return Err(auth::forbidden(format!(
            "{} is a {}: only an admin may see config values; without --reveal you get the names",
            principal.name, principal.role
        )));
    }
    Ok(Json(
        o.config_listing(&app, &q.environment, q.reveal).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    #[serde(default = "production")]
    environment: String,
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    unset: Vec<String>,
}

/// `baton config set|unset`: a new config version, and a deployment of the
/// live release with it. The answer names the keys, never a value.
async fn change(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(app): Path<String>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let b: ChangeBody = body(&raw)?;
    auth::may_change(&principal, &app, &b.environment)?;
    let change = match (b.set.is_empty(), b.unset.is_empty()) {
        (false, true) => ConfigChange::Set(b.set),
        (true, false) => ConfigChange::Unset(b.unset),
        _ => {
            return Err(ApiError::bad_request(
                "give either `set` (names and values) or `unset` (names), one of them",
            ))
        }
    };
    let changed = o
        .change_config(
            &app,
            &b.environment,
            change,
            &auth::actor(&principal, &peer),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(changed)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentBody {
    #[serde(default = "production")]
    environment: String,
}

/// The environment a restart, stop or start is for, once the caller may
/// change it, and who asks.
fn environment_change(
    app: &str,
    raw: &Bytes,
    principal: &Principal,
    peer: &Peer,
) -> ApiResult<(String, baton_store::Actor)> {
    check_app(app)?;
    let b: EnvironmentBody = body(raw)?;
    auth::may_change(principal, app, &b.environment)?;
    Ok((b.environment, auth::actor(principal, peer)))
}

/// `baton restart`: the live release deployed again (blue-green).
async fn restart(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(app): Path<String>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    let (environment, actor) = environment_change(&app, &raw, &principal, &peer)?;
    let deployment = o.restart(&app, &environment, &actor).await?;
    Ok((StatusCode::ACCEPTED, Json(deployment)))
}

/// `baton stop`: visitors get 503, every target and worker stops.
async fn stop(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(app): Path<String>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    let (environment, actor) = environment_change(&app, &raw, &principal, &peer)?;
    o.stop_environment(&app, &environment, &actor).await?;
    Ok(Json(serde_json::json!({
        "app": app,
        "environment": environment,
        "stopped": true,
    })))
}

/// `baton start`: the release that was live, with the newest config.
async fn start(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(app): Path<String>,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    let (environment, actor) = environment_change(&app, &raw, &principal, &peer)?;
    let deployment = o.start_environment(&app, &environment, &actor).await?;
    Ok((StatusCode::ACCEPTED, Json(deployment)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default = "production")]
    environment: String,
    command: String,
}

/// `baton run`: the command's output as it comes, then how it ended, as
/// JSON lines (`{"output": "…"}`…, then `{"exit_code": N}` or
/// `{"signal": N}`). A client that goes away kills the command.
async fn run(
    State(o): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(peer): Extension<Peer>,
    Path(app): Path<String>,
    raw: Bytes,
) -> ApiResult<Response> {
    check_app(&app)?;
    let b: RunBody = body(&raw)?;
    auth::may_change(&principal, &app, &b.environment)?;
    let running = o
        .run_command(
            &app,
            &b.environment,
            &b.command,
            &auth::actor(&principal, &peer),
        )
        .await?;
    let stream = futures_util::stream::unfold(Some(Streaming::new(running)), |state| async {
        let mut s = state?;
        let line = s.next().await;
        let more = (!s.ended).then_some(s);
        Some((Ok::<_, std::io::Error>(line), more))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A command's output turned into JSON lines; dropping it kills the
/// command.
struct Streaming {
    running: OneOff,
    buffer: Vec<u8>,
    /// Bytes of a character split across reads, kept for the next line.
    carry: Vec<u8>,
    ended: bool,
}

impl Streaming {
    fn new(running: OneOff) -> Streaming {
        Streaming {
            running,
            buffer: vec![0; 16 * 1024],
            carry: Vec::new(),
            ended: false,
        }
    }

    async fn next(&mut self) -> Bytes {
        let n = self
            .running
            .output
            .read(&mut self.buffer)
            .await
            .unwrap_or(0);
        if n > 0 {
            self.carry.extend_from_slice(&self.buffer[..n]);
            let valid = match std::str::from_utf8(&self.carry) {
                Ok(_) => self.carry.len(),
                // Up to three bytes of a character that is not whole yet.
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => self.carry.len(),
            };
            let text: Vec<u8> = self.carry.drain(..valid).collect();
            return line(&serde_json::json!({ "output": String::from_utf8_lossy(&text) }));
        }
        self.ended = true;
        let exit = match self.running.wait().await {
            Exit::Code(code) => serde_json::json!({ "exit_code": code }),
            Exit::Signal(signal) => serde_json::json!({ "signal": signal }),
            Exit::Vanished => serde_json::json!({ "error": "the command vanished" }),
        };
        line(&exit)
    }
}

fn line(value: &serde_json::Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}
