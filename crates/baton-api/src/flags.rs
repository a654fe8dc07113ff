//! The flag endpoints of `/api/v1`: flags per app and environment (the
//! environment is the `environment` query parameter, `production` by
//! default), `flags.toml` diff and apply, API keys, and the audit log. Each
//! change names its actor (the authenticated principal) and is recorded
//! with the client's address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use axum::Json;
use baton_auth::Principal;
use baton_flag_service::{Actor, FlagService};
use baton_flags::FlagSpec;
use baton_manifest::flags::FlagsFile;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::routes::Routes;
use crate::{body, check_app, ApiError, ApiResult, Environment, Limit};

type Flags = Arc<FlagService>;

pub(crate) fn routes() -> Routes<Flags> {
    Routes::new()
        .get("/api/v1/apps/{app}/flags", list)
        .post("/api/v1/apps/{app}/flags", create)
        .get("/api/v1/apps/{app}/flags/{flag}", show)
        .patch("/api/v1/apps/{app}/flags/{flag}", update)
        .delete("/api/v1/apps/{app}/flags/{flag}", remove)
        .post("/api/v1/apps/{app}/flags-file", file)
        .get("/api/v1/apps/{app}/keys", keys)
        .post("/api/v1/apps/{app}/keys", create_key)
        .delete("/api/v1/apps/{app}/keys/{id}", revoke_key)
        .get("/api/v1/audit", audit)
}

/// The actor of a change (always the authenticated principal) and the
/// client's address.
pub(crate) struct Who(Actor, Principal);

impl Who {
    /// Refuses a change to an app or environment the caller was not granted.
    fn may_change(&self, app: &str, environment: &str) -> ApiResult<()> {
        crate::auth::may_change(&self.1, app, environment)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Who, ApiError> {
        // `auth::require` put it there; without it nothing may change.
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "log in first: `baton login`")
            })?;
        let name = principal.actor();
        let remote_address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        Ok(Who(
            Actor {
                name,
                remote_address,
            },
            principal,
        ))
    }
}

async fn list(
    State(flags): State<Flags>,
    Path(app): Path<String>,
    Query(env): Query<Environment>,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    Ok(Json(flags.list(&app, &env.checked()?).await?))
}

async fn show(
    State(flags): State<Flags>,
    Path((app, flag)): Path<(String, String)>,
    Query(env): Query<Environment>,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    Ok(Json(flags.get(&app, &env.checked()?, &flag).await?))
}

/// The request body read as a flag, naming the field at fault.
fn spec_from(value: Value) -> Result<FlagSpec, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        format!(
            "request body is not valid: field `{field}`: {}",
            e.into_inner()
        )
    })
}

async fn create(
    State(flags): State<Flags>,
    Path(app): Path<String>,
    Query(env): Query<Environment>,
    who: Who,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let environment = env.checked()?;
    who.may_change(&app, &environment)?;
    let actor = who.0;
    let mut value: Value = body(&raw)?;
    let name = value
        .as_object_mut()
        .and_then(|o| o.remove("name"))
        .and_then(|n| n.as_str().map(str::to_string))
        .ok_or_else(|| ApiError::bad_request("field `name`: the flag's name is required"))?;
    let spec = spec_from(value).map_err(ApiError::bad_request)?;
    let flag = flags
        .create(&actor, &app, &environment, &name, spec)
        .await?;
    Ok((StatusCode::CREATED, Json(flag)))
}

/// A JSON merge patch (RFC 7386) of the flag's settings: fields given
/// replace the current ones, `null` clears one.
async fn update(
    State(flags): State<Flags>,
    Path((app, flag)): Path<(String, String)>,
    Query(env): Query<Environment>,
    who: Who,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let environment = env.checked()?;
    who.may_change(&app, &environment)?;
    let actor = who.0;
    let patch: Value = body(&raw)?;
    let Value::Object(patch) = patch else {
        return Err(ApiError::bad_request(
            "request body must be a JSON object of the settings to change",
        ));
    };
    let action = match (patch.len(), patch.get("enabled")) {
        (1, Some(Value::Bool(true))) => "flag.enable",
        (1, Some(Value::Bool(false))) => "flag.disable",
        _ => "flag.update",
    };
    let updated = flags
        .update(&actor, &app, &environment, &flag, action, |before| {
            let mut merged = serde_json::to_value(before).unwrap_or_default();
            if let Value::Object(fields) = &mut merged {
                for (key, value) in patch {
                    if value.is_null() {
                        fields.remove(&key);
                    } else {
                        fields.insert(key, value);
                    }
                }
            }
            spec_from(merged)
        })
        .await?;
    Ok(Json(updated))
}

async fn remove(
    State(flags): State<Flags>,
    Path((app, flag)): Path<(String, String)>,
    Query(env): Query<Environment>,
    who: Who,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let environment = env.checked()?;
    who.may_change(&app, &environment)?;
    let actor = who.0;
    flags.delete(&actor, &app, &environment, &flag).await?;
    Ok(Json(
        json!({"app": app, "environment": environment, "name": flag, "deleted": true}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBody {
    #[serde(default = "crate::production")]
    environment: String,
    /// The file's text.
    text: String,
    /// Where the file is, for messages.
    #[serde(default = "flags_toml")]
    path: String,
    #[serde(default)]
    prune: bool,
    /// Only say what would change.
    #[serde(default)]
    dry_run: bool,
}

fn flags_toml() -> String {
    baton_manifest::flags::FILE_NAME.to_string()
}

/// `flags.toml` against the server: the differences, applied unless `dry_run`.
async fn file(
    State(flags): State<Flags>,
    Path(app): Path<String>,
    who: Who,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let b: FileBody = body(&raw)?;
    let environment = Environment {
        environment: b.environment,
    }
    .checked()?;
    who.may_change(&app, &environment)?;
    let actor = who.0;
    let file =
        FlagsFile::parse(&b.text, &b.path).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let changes = if b.dry_run {
        flags.diff(&app, &environment, &file, b.prune).await?
    } else {
        flags
            .apply(&actor, &app, &environment, &file, b.prune, &b.path)
            .await?
    };
    Ok(Json(json!({
        "app": app, "environment": environment, "applied": !b.dry_run, "changes": changes,
    })))
}

async fn keys(State(flags): State<Flags>, Path(app): Path<String>) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    Ok(Json(flags.keys(&app).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    name: String,
    #[serde(default = "crate::production")]
    environment: String,
    /// Web origins whose pages may use the key (CORS), e.g.
    /// `https://shop.example`.
    #[serde(default)]
    origins: Vec<String>,
}

async fn create_key(
    State(flags): State<Flags>,
    Path(app): Path<String>,
    who: Who,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    check_app(&app)?;
    let b: KeyBody = body(&raw)?;
    let environment = Environment {
        environment: b.environment,
    }
    .checked()?;
    who.may_change(&app, &environment)?;
    let actor = who.0;
    let key = flags
        .create_key(&actor, &app, &environment, &b.name, &b.origins)
        .await?;
    Ok((StatusCode::CREATED, Json(key)))
}

async fn revoke_key(
    State(flags): State<Flags>,
    Path((app, id)): Path<(String, String)>,
    who: Who,
) -> ApiResult<impl IntoResponse> {
    let actor = who.0;
    check_app(&app)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{id:?} is not an API key id (a number)")))?;
    Ok(Json(flags.revoke_key(&actor, &app, id).await?))
}

#[derive(Deserialize)]
struct AuditQuery {
    app: Option<String>,
    limit: Option<i64>,
    /// `flags`: only changes to the app's flags and API keys.
    kind: Option<String>,
}

async fn audit(
    State(flags): State<Flags>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    if let Some(app) = &q.app {
        check_app(app)?;
    }
    let limit = Limit { limit: q.limit }.get();
    match (q.kind.as_deref(), q.app.as_deref()) {
        (None, app) => Ok(Json(flags.audit(app, limit).await?)),
        (Some("flags"), Some(app)) => Ok(Json(flags.flag_audit(app, limit).await?)),
        (Some("flags"), None) => Err(ApiError::bad_request(
            "`kind=flags` lists one app's flag and key changes: give `app` too",
        )),
        (Some(other), _) => Err(ApiError::bad_request(format!(
            "unknown audit kind {other:?}; use `kind=flags`, or leave it out for every entry"
        ))),
    }
}
