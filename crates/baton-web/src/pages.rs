//! The pages and forms.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use baton_auth::{cookie_value, same_secret, Principal, COOKIE, SESSION_LIFETIME};
use baton_orchestrator::{DeployRequest, EnvironmentStatus};
use baton_store::{
    now_ms, AuditCursor, AuditFilter, Deployment, DeploymentState, Release, TargetState,
};
use serde::Deserialize;
use serde_json::json;

use crate::describe::{self, RuleLine};
use crate::{User, Web};

const LOGIN_COOKIE: &str = "baton_login";

/// What the layout shows on every page.
pub struct Page {
    pub user: Option<Principal>,
    pub csrf: Option<String>,
    pub notice: Option<String>,
    pub error: Option<String>,
}

impl Page {
    fn of(user: &Principal) -> Page {
        Page {
            user: Some(user.clone()),
            csrf: user.csrf().map(str::to_string),
            notice: None,
            error: None,
        }
    }
}

fn render(template: impl Template, status: StatusCode) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    page: Page,
    title: String,
}

/// A page that only says what went wrong.
fn refuse(user: Option<&Principal>, status: StatusCode, message: String) -> Response {
    let mut page = match user {
        Some(user) => Page::of(user),
        None => Page {
            user: None,
            csrf: None,
            notice: None,
            error: None,
        },
    };
    page.error = Some(message);
    let title = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Not now",
        StatusCode::BAD_REQUEST => "Cannot do that",
        _ => "Something went wrong",
    };
    render(
        MessagePage {
            page,
            title: title.into(),
        },
        status,
    )
}

/// Any path the dashboard and the API do not know: a page saying so, with
/// the way back, for anyone (it reveals nothing but the path asked for).
pub async fn not_found(State(web): State<Arc<Web>>, uri: Uri, headers: HeaderMap) -> Response {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let user = web
        .auth
        .authenticate(text(header::AUTHORIZATION), text(header::COOKIE))
        .await
        .ok()
        .flatten();
    let message = format!("There is no page at {}.", uri.path());
    refuse(user.as_ref(), StatusCode::NOT_FOUND, message)
}

fn store_error(user: &Principal, e: impl std::fmt::Display) -> Response {
    refuse(Some(user), StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Refuses a form that lacks the session's CSRF token or comes from another
/// site.
fn check_form(
    web: &Web,
    user: &Principal,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(), Response> {
    if !same_origin(headers) {
        return Err(refuse(
            Some(user),
            StatusCode::FORBIDDEN,
            "this form was sent from another site; nothing was done".into(),
        ));
    }
    if !web.auth.csrf_matches(user, csrf) {
        return Err(refuse(
            Some(user),
            StatusCode::FORBIDDEN,
            "this form has no valid CSRF token (it may be from an older page); reload the page and try again — nothing was done".into(),
        ));
    }
    Ok(())
}

/// A form that changes `environment`: a genuine form (see [`check_form`])
/// from someone granted that environment; `doing` names the change.
fn check_change(
    web: &Web,
    user: &Principal,
    headers: &HeaderMap,
    csrf: &str,
    app: &str,
    environment: &str,
    doing: &str,
) -> Result<(), Response> {
    check_form(web, user, headers, csrf)?;
    if !user.may_change(app, environment) {
        return Err(refuse(
            Some(user),
            StatusCode::FORBIDDEN,
            format!(
                "{} ({}) may not {doing} {environment} of {app}",
                user.name, user.role
            ),
        ));
    }
    Ok(())
}

/// An `Origin` header, when present, must name this very host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority == host)
}

/// An audit entry for a change made from the dashboard.
/// The one place the dashboard turns a domain error's fault into a status.
fn status_of(fault: baton_store::Fault) -> StatusCode {
    match fault {
        baton_store::Fault::Invalid => StatusCode::BAD_REQUEST,
        baton_store::Fault::NotFound => StatusCode::NOT_FOUND,
        baton_store::Fault::Refused => StatusCode::CONFLICT,
        baton_store::Fault::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Who a form's change is by, for the command that records it.
fn actor(user: &Principal, peer: SocketAddr) -> baton_orchestrator::Actor {
    baton_orchestrator::Actor::new(user.actor(), Some(peer.ip().to_string()))
}

fn ago(ms: i64) -> String {
    let secs = ((now_ms() - ms).max(0) / 1000) as u64;
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

fn short(id: &str) -> String {
    baton_package::short_id(id).to_string()
}

// ---- login ----

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    page: Page,
    csrf: String,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    out: bool,
}

pub async fn login_form(State(web): State<Arc<Web>>, Query(q): Query<LoginQuery>) -> Response {
    let token = web.auth.login_token();
    let page = Page {
        user: None,
        csrf: None,
        notice: q.out.then(|| "You are logged out.".to_string()),
        error: None,
    };
    let mut response = render(
        LoginPage {
            page,
            csrf: token.clone(),
        },
        StatusCode::OK,
    );
    set_cookie(
        &mut response,
        &format!("{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600"),
    );
    response
}

#[derive(Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

pub async fn login(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let cookies = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let expected = cookie_value(cookies, LOGIN_COOKIE).unwrap_or("");
    let again = |status, message: &str| {
        let token = web.auth.login_token();
        let page = Page {
            user: None,
            csrf: None,
            notice: None,
            error: Some(message.to_string()),
        };
        let mut response = render(
            LoginPage {
                page,
                csrf: token.clone(),
            },
            status,
        );
        set_cookie(
            &mut response,
            &format!(
                "{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600"
            ),
        );
        response
    };
    if !same_origin(&headers) || expected.is_empty() || !same_secret(expected, &form.csrf) {
        return again(
            StatusCode::FORBIDDEN,
            "The login form expired or came from another site; try again.",
        );
    }
    match web
        .auth
        .login(form.user.trim(), &form.password, peer.ip())
        .await
    {
        Ok((cookie, _)) => {
            let mut response = Redirect::to("/").into_response();
            set_cookie(
                &mut response,
                &format!(
                    "{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                    SESSION_LIFETIME.as_secs()
                ),
            );
            response
        }
        Err(baton_auth::AuthError::WrongCredentials) => {
            again(StatusCode::UNAUTHORIZED, "Wrong user name or password.")
        }
        Err(e) => again(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = value.parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    State(web): State<Arc<Web>>,
    User(user): User,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = check_form(&web, &user, &headers, &form.csrf) {
        return refused;
    }
    let cookies = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(cookie) = cookie_value(cookies, COOKIE) {
        let _ = web.auth.logout(cookie).await;
    }
    let mut response = Redirect::to("/login?out=true").into_response();
    set_cookie(
        &mut response,
        &format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

// ---- overview and app ----

pub struct EnvRow {
    pub name: String,
    pub release: Option<String>,
    pub since: String,
    pub by: Option<String>,
    pub healthy: bool,
    pub health: String,
    pub may_change: bool,
}

pub struct AppRow {
    pub name: String,
    pub environments: Vec<EnvRow>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    page: Page,
    apps: Vec<AppRow>,
}

/// The deployment that put the live release live, for "since" and "by".
fn live_since(status: &EnvironmentStatus, deployments: &[Deployment]) -> (String, Option<String>) {
    let Some(live) = &status.live else {
        return (String::new(), None);
    };
    deployments
        .iter()
        .find(|d| {
            d.environment == status.environment
                && d.state == DeploymentState::Succeeded
                && d.release_id == live.record.release_id
        })
        .map(|d| (ago(d.finished_at.unwrap_or(d.created_at)), d.actor.clone()))
        .unwrap_or_default()
}

async fn env_rows(
    web: &Web,
    user: &Principal,
    app: &str,
    statuses: &[EnvironmentStatus],
) -> Vec<EnvRow> {
    let deployments = web
        .orchestrator
        .store()
        .deployments(app, 200)
        .await
        .unwrap_or_default();
    statuses
        .iter()
        .filter(|s| s.app == app)
        .map(|s| {
            let (since, by) = live_since(s, &deployments);
            let (healthy, health) = match &s.live {
                _ if s.maintenance.is_some() => (
                    false,
                    format!(
                        "in maintenance: {}",
                        s.maintenance.as_deref().unwrap_or_default()
                    ),
                ),
                None => (false, "nothing live".to_string()),
                Some(t) if t.running && !t.responding => (false, "not responding".into()),
                Some(t) if t.running && t.record.state == TargetState::Live => {
                    (true, "healthy".into())
                }
                Some(t) if !t.running => (false, "down (restarting)".into()),
                Some(t) => (false, t.record.state.as_str().to_string()),
            };
            EnvRow {
                name: s.environment.clone(),
                release: s.live.as_ref().map(|t| short(&t.record.release_id)),
                since,
                by,
                healthy,
                health,
                may_change: user.may_change(app, &s.environment),
            }
        })
        .collect()
}

pub async fn overview(State(web): State<Arc<Web>>, User(user): User) -> Response {
    let statuses = match web.orchestrator.status().await {
        Ok(s) => s,
        Err(e) => return store_error(&user, e),
    };
    let names: BTreeSet<String> = statuses.iter().map(|s| s.app.clone()).collect();
    let mut apps = Vec::new();
    for name in names {
        let environments = env_rows(&web, &user, &name, &statuses).await;
        apps.push(AppRow { name, environments });
    }
    render(
        OverviewPage {
            page: Page::of(&user),
            apps,
        },
        StatusCode::OK,
    )
}

pub struct ReleaseRow {
    pub id: String,
    pub short: String,
    pub created: String,
    pub size: String,
    pub live_in: String,
    /// The commit a pipeline build made it from.
    pub commit: Option<String>,
    /// Release notes of an announced release.
    pub notes: Option<String>,
    /// Why it is no longer offered for a deploy (files removed, never
    /// went live), when it is not.
    pub mark: Option<String>,
}

pub struct DeploymentRow {
    pub id: i64,
    pub kind: String,
    pub environment: String,
    pub release: String,
    pub state: String,
    pub by: String,
    pub when: String,
}

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage {
    page: Page,
    app: String,
    csrf: String,
    environments: Vec<EnvRow>,
    traffic: Vec<TrafficRow>,
    releases: Vec<ReleaseRow>,
    deployable: Vec<String>,
    deployments: Vec<DeploymentRow>,
}

async fn app_page(
    web: &Web,
    user: &Principal,
    app: &str,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let store = web.orchestrator.store();
    let releases = match store.releases(app).await {
        Ok(r) => r,
        Err(e) => return store_error(user, e),
    };
    if releases.is_empty() {
        return refuse(
            Some(user),
            StatusCode::NOT_FOUND,
            format!("no app named {app}"),
        );
    }
    let statuses = web.orchestrator.status().await.unwrap_or_default();
    let environments = env_rows(web, user, app, &statuses).await;
    // Environments the newest release's manifest declares, and those live.
    let mut known: BTreeSet<String> = environments.iter().map(|e| e.name.clone()).collect();
    known.insert(baton_manifest::DEFAULT_ENVIRONMENT.to_string());
    if let Some(manifest) = releases
        .first()
        .and_then(|r| baton_manifest::Manifest::parse(&r.manifest, "baton.toml").ok())
    {
        known.extend(manifest.environments.keys().cloned());
    }
    let deployable: Vec<String> = known
        .into_iter()
        .filter(|e| user.may_change(app, e))
        .collect();
    let builds = store.builds(Some(app), 500).await.unwrap_or_default();
    let mut notes = std::collections::HashMap::new();
    for r in releases.iter().take(50) {
        if let Ok(Some(announcement)) = store.announcement(&r.id).await {
            notes.insert(r.id.clone(), announcement.notes);
        }
    }
    let history = store.deployments(app, HISTORY).await.unwrap_or_default();
    let release_rows = releases
        .iter()
        .map(|r| ReleaseRow {
            mark: standing(web, r, &history).mark(),
            commit: builds
                .iter()
                .find(|b| b.release_id.as_deref() == Some(r.id.as_str()))
                .map(|b| b.commit_sha.chars().take(10).collect()),
            notes: notes.get(&r.id).cloned(),
            id: r.id.clone(),
            short: short(&r.id),
            created: ago(r.created_at),
            size: format!("{:.1} KiB, {} files", r.size as f64 / 1024.0, r.files),
            live_in: statuses
                .iter()
                .filter(|s| {
                    s.app == app && s.live.as_ref().is_some_and(|t| t.record.release_id == r.id)
                })
                .map(|s| s.environment.clone())
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    let deployments = history
        .into_iter()
        .take(20)
        .map(|d| DeploymentRow {
            id: d.id,
            kind: d.kind.as_str().into(),
            environment: d.environment.clone(),
            release: short(&d.release_id),
            state: d.state.as_str().into(),
            by: d.actor.clone().unwrap_or_default(),
            when: ago(d.created_at),
        })
        .collect();
    let traffic = traffic_rows(web, app).await;
    let mut page = Page::of(user);
    page.error = error;
    let csrf = page.csrf.clone().unwrap_or_default();
    render(
        AppPage {
            page,
            app: app.to_string(),
            csrf,
            environments,
            traffic,
            releases: release_rows,
            deployable,
            deployments,
        },
        status,
    )
}

/// One release serving an app's environment: its share of the traffic
/// and how it answers, as the proxy counts them (since the target began),
/// with the bars of the page's chart (SVG, drawn on the server).
pub struct TrafficRow {
    pub environment: String,
    pub release: String,
    pub role: String,
    pub requests: u64,
    pub errors: String,
    pub p99: String,
    /// Bar lengths out of 200: the 5xx share (of 10 %), the p99 (of the
    /// slowest release's).
    pub error_bar: u32,
    pub p99_bar: u32,
    pub canary: bool,
}

/// The app's live and canary targets' figures, environment by environment.
async fn traffic_rows(web: &Web, app: &str) -> Vec<TrafficRow> {
    let mut rows = Vec::new();
    let mut slowest: f64 = 0.0;
    let mut p99s = Vec::new();
    for f in web.orchestrator.target_metrics().await {
        if f.key.app != app {
            continue;
        }
        let canary = web.orchestrator.canary_of(&f.key);
        let is_canary = canary.is_some_and(|(id, _)| id == f.target);
        let role = match (f.state, canary) {
            (baton_store::TargetState::Live, Some((_, share))) => {
                format!("live, {}% of the clients", 100 - share)
            }
            (baton_store::TargetState::Live, None) => "live".to_string(),
            (_, Some((_, share))) if is_canary => format!("canary, {share}% of the clients"),
            _ => continue,
        };
        let requests = f.stats.requests;
        let errors = f.stats.errors() as f64 / requests.max(1) as f64;
        let p99 = f.stats.metrics.percentile(0.99);
        slowest = slowest.max(p99.unwrap_or(0.0));
        p99s.push(p99);
        rows.push(TrafficRow {
            environment: f.key.environment.clone(),
            release: short(&f.release),
            role,
            requests,
            errors: format!("{:.1}%", errors * 100.0),
            p99: p99
                .map(|s| format!("≤ {} ms", (s * 1000.0).round()))
                .unwrap_or_else(|| "–".into()),
            // A 10 % 5xx share fills the bar.
            error_bar: ((errors / 0.10).min(1.0) * 200.0).round() as u32,
            p99_bar: 0,
            canary: is_canary,
        });
    }
    for (row, p99) in rows.iter_mut().zip(p99s) {
        if let (Some(p99), true) = (p99, slowest > 0.0) {
            row.p99_bar = ((p99 / slowest) * 200.0).round() as u32;
        }
    }
    rows.sort_by(|a, b| (&a.environment, a.canary).cmp(&(&b.environment, b.canary)));
    rows
}

/// How many of an app's deployments are read to judge its releases.
const HISTORY: i64 = 500;

fn standing(web: &Web, release: &Release, history: &[Deployment]) -> describe::Standing {
    describe::standing(
        &release.id,
        web.orchestrator.release_files_present(&release.id),
        history,
    )
}

pub async fn app(
    State(web): State<Arc<Web>>,
    User(user): User,
    Path(app): Path<String>,
) -> Response {
    app_page(&web, &user, &app, None, StatusCode::OK).await
}

// ---- actions ----

#[derive(Deserialize)]
pub struct DeployForm {
    csrf: String,
    release: String,
    environment: String,
}

pub async fn deploy(
    State(web): State<Arc<Web>>,
    User(user): User,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Form(form): Form<DeployForm>,
) -> Response {
    if let Err(refused) = check_change(
        &web,
        &user,
        &headers,
        &form.csrf,
        &app,
        &form.environment,
        "deploy to",
    ) {
        return refused;
    }
    // The form offers only releases that can go live; a form sent anyway
    // (an older page, a crafted request) is refused here, whatever it says.
    let store = web.orchestrator.store();
    let release = match store.find_release(&app, &form.release).await {
        Ok(release) => release,
        Err(e) => {
            let status = status_of(e.fault());
            let message = format!("Nothing was deployed: {e}");
            return app_page(&web, &user, &app, Some(message), status).await;
        }
    };
    let history = match store.deployments(&app, HISTORY).await {
        Ok(history) => history,
        Err(e) => return store_error(&user, e),
    };
    if let Some(why) = standing(&web, &release, &history).refusal(&app, &short(&release.id)) {
        let message = format!("Nothing was deployed: {why}");
        return app_page(&web, &user, &app, Some(message), StatusCode::CONFLICT).await;
    }
    let request = DeployRequest {
        app: app.clone(),
        environment: form.environment.clone(),
        release: release.id.clone(),
        preview: false,
        actor: actor(&user, peer),
    };
    let started = web.orchestrator.deploy(request).await;
    after_start(&web, &user, &app, started, "Nothing was deployed").await
}

/// After a form asked for a deployment (which the orchestrator audited):
/// opens its page, or shows the app's page saying why nothing happened.
async fn after_start(
    web: &Web,
    user: &Principal,
    app: &str,
    started: baton_orchestrator::Result<Deployment>,
    nothing: &str,
) -> Response {
    match started {
        Ok(d) => Redirect::to(&format!("/deployments/{}", d.id)).into_response(),
        Err(e) => {
            let status = status_of(e.fault());
            app_page(web, user, app, Some(format!("{nothing}: {e}")), status).await
        }
    }
}

#[derive(Deserialize)]
pub struct RollbackForm {
    csrf: String,
    environment: String,
}

pub async fn rollback(
    State(web): State<Arc<Web>>,
    User(user): User,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Form(form): Form<RollbackForm>,
) -> Response {
    if let Err(refused) = check_change(
        &web,
        &user,
        &headers,
        &form.csrf,
        &app,
        &form.environment,
        "roll back",
    ) {
        return refused;
    }
    let started = web
        .orchestrator
        .rollback(&app, &form.environment, None, &actor(&user, peer))
        .await;
    after_start(&web, &user, &app, started, "Nothing was rolled back").await
}

// ---- a deployment, live ----

pub struct StepRow {
    pub seq: i64,
    pub step: String,
    pub state: String,
    pub detail: Option<String>,
}

#[derive(Template)]
#[template(path = "deployment.html")]
struct DeploymentPage {
    page: Page,
    csrf: String,
    id: i64,
    kind: String,
    app: String,
    environment: String,
    release: String,
    /// The deployment record's actor: who started it, never who looks.
    by: String,
    when: String,
    state: String,
    error: Option<String>,
    finished: bool,
    /// Paused in preview, and the viewer may answer it.
    answerable: bool,
    steps: Vec<StepRow>,
}

/// A deployment id from a path; anything else is a page that does not exist.
fn deployment_id(user: &Principal, id: &str) -> Result<i64, Response> {
    id.parse().map_err(|_| {
        refuse(
            Some(user),
            StatusCode::NOT_FOUND,
            format!("{id:?} is not a deployment id (a number)"),
        )
    })
}

pub async fn deployment(
    State(web): State<Arc<Web>>,
    User(user): User,
    Path(id): Path<String>,
) -> Response {
    let id = match deployment_id(&user, &id) {
        Ok(id) => id,
        Err(refused) => return refused,
    };
    deployment_page(&web, &user, id).await
}

async fn deployment_page(web: &Web, user: &Principal, id: i64) -> Response {
    let d = match web.orchestrator.store().deployment(id).await {
        Ok(d) => d,
        Err(e) => return refuse(Some(user), StatusCode::NOT_FOUND, e.to_string()),
    };
    let page = Page::of(user);
    let csrf = page.csrf.clone().unwrap_or_default();
    let error = d.error.clone();
    render(
        DeploymentPage {
            page,
            csrf,
            id: d.id,
            kind: d.kind.as_str().into(),
            app: d.app.clone(),
            environment: d.environment.clone(),
            release: short(&d.release_id),
            by: d
                .actor
                .clone()
                .unwrap_or_else(|| "someone not recorded".into()),
            when: ago(d.created_at),
            state: d.state.as_str().into(),
            finished: d.is_finished(),
            answerable: d.state == DeploymentState::Previewing
                && user.may_change(&d.app, &d.environment),
            steps: d
                .steps
                .iter()
                .map(|s| StepRow {
                    seq: s.seq,
                    step: s.step.as_str().into(),
                    state: s.state.as_str().into(),
                    // The deployment's error is shown once, above.
                    detail: s
                        .detail
                        .clone()
                        .filter(|detail| Some(detail) != error.as_ref()),
                })
                .collect(),
            error,
        },
        StatusCode::OK,
    )
}

/// Continue: the previewed release goes live.
pub async fn continue_preview(
    State(web): State<Arc<Web>>,
    User(user): User,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    answer_preview(&web, &user, peer, &headers, &id, &form.csrf, true).await
}

/// Abort: the previewed release is dropped; the live one stays.
pub async fn abort_preview(
    State(web): State<Arc<Web>>,
    User(user): User,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    answer_preview(&web, &user, peer, &headers, &id, &form.csrf, false).await
}

/// Answers a paused preview as the API does (`deployment.continue` or
/// `deployment.abort` in the audit log), then shows the deployment.
async fn answer_preview(
    web: &Web,
    user: &Principal,
    peer: SocketAddr,
    headers: &HeaderMap,
    id: &str,
    csrf: &str,
    go_on: bool,
) -> Response {
    let id = match deployment_id(user, id) {
        Ok(id) => id,
        Err(refused) => return refused,
    };
    let d = match web.orchestrator.store().deployment(id).await {
        Ok(d) => d,
        Err(e) => return refuse(Some(user), StatusCode::NOT_FOUND, e.to_string()),
    };
    let doing = if go_on {
        "continue a preview in"
    } else {
        "abort a preview in"
    };
    if let Err(refused) = check_change(web, user, headers, csrf, &d.app, &d.environment, doing) {
        return refused;
    }
    if let Err(e) = web
        .orchestrator
        .answer_preview(id, go_on, &actor(user, peer))
        .await
    {
        return refuse(
            Some(user),
            StatusCode::CONFLICT,
            format!("Nothing was done: {e}"),
        );
    }
    // After a POST, a GET of the page: reloading it sends nothing again.
    Redirect::to(&format!("/deployments/{id}")).into_response()
}

/// Server-sent events: each step when it appears or changes, the
/// deployment's state when it changes (`state`), then `end`.
pub async fn stream(
    State(web): State<Arc<Web>>,
    User(_user): User,
    Path(id): Path<i64>,
) -> Response {
    let stream = futures_util::stream::unfold(
        (web, Vec::<(i64, String)>::new(), false),
        move |(web, mut sent, done)| async move {
            if done {
                return None;
            }
            let mut first = true;
            loop {
                if !first {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                first = false;
                let Ok(d) = web.orchestrator.store().deployment(id).await else {
                    let event = Event::default()
                        .event("end")
                        .data(json!({"state": "unknown"}).to_string());
                    return Some((vec![Ok::<_, Infallible>(event)], (web, sent, true)));
                };
                let mut events = Vec::new();
                for step in &d.steps {
                    let key = (step.seq, step.state.as_str().to_string());
                    if !sent.contains(&key) {
                        sent.push(key);
                        events.push(Ok(Event::default().event("step").data(
                            json!({"seq": step.seq, "step": step.step.as_str(), "state": step.state.as_str(), "detail": step.detail})
                                .to_string(),
                        )));
                    }
                }
                // The deployment's own state, keyed as step -1: a page
                // opened while running learns of a pause in preview.
                let key = (-1, d.state.as_str().to_string());
                if !d.is_finished() && !sent.contains(&key) {
                    sent.push(key);
                    events.push(Ok(Event::default()
                        .event("state")
                        .data(json!({"state": d.state.as_str()}).to_string())));
                }
                let finished = d.is_finished();
                if finished {
                    events.push(Ok(Event::default().event("end").data(
                        json!({"state": d.state.as_str(), "error": d.error}).to_string(),
                    )));
                }
                if !events.is_empty() {
                    return Some((events, (web, sent, finished)));
                }
            }
        },
    );
    let flat = futures_util::StreamExt::flat_map(stream, futures_util::stream::iter);
    Sse::new(flat)
        .keep_alive(KeepAlive::default())
        .into_response()
}

// ---- logs and audit ----

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsPage {
    page: Page,
    app: String,
    environment: String,
    lines: Vec<String>,
}

#[derive(Deserialize)]
pub struct EnvQuery {
    environment: Option<String>,
}

pub async fn logs(
    State(web): State<Arc<Web>>,
    User(user): User,
    Path(app): Path<String>,
    Query(q): Query<EnvQuery>,
) -> Response {
    let environment = q
        .environment
        .unwrap_or_else(|| baton_manifest::DEFAULT_ENVIRONMENT.to_string());
    let live = match web.orchestrator.live_target(&app, &environment).await {
        Ok(live) => live,
        Err(e) => return store_error(&user, e),
    };
    let lines = live
        .map(|t| web.orchestrator.logs().tail(t.id, 200))
        .unwrap_or_default();
    render(
        LogsPage {
            page: Page::of(&user),
            app,
            environment,
            lines,
        },
        StatusCode::OK,
    )
}

pub struct AuditRow {
    pub when: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub place: String,
    pub from: String,
    pub detail: Vec<RuleLine>,
}

/// A filter's select: its name, label, the values to choose from, and the
/// one chosen.
pub struct Choice {
    pub name: &'static str,
    pub label: &'static str,
    /// Each value, and how the select shows it.
    pub values: Vec<(String, String)>,
    pub chosen: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    page: Page,
    choices: Vec<Choice>,
    entries: Vec<AuditRow>,
    filtered: bool,
    /// The newest page, when this is another.
    newest: Option<String>,
    newer: Option<String>,
    older: Option<String>,
}

/// Entries on one page of the audit log.
const AUDIT_PAGE: usize = 50;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    app: Option<String>,
    environment: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    /// Older than this entry id.
    before: Option<String>,
    /// Newer than this entry id.
    after: Option<String>,
}

impl AuditQuery {
    fn filter(&self) -> AuditFilter {
        // An empty select ("any") filters nothing.
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        AuditFilter {
            app: given(&self.app),
            environment: given(&self.environment),
            actor: given(&self.actor),
            action: given(&self.action),
        }
    }

    fn cursor(&self) -> Result<AuditCursor, String> {
        let id = |name: &str, v: &str| {
            v.parse::<i64>().map_err(|_| {
                format!("{name}={v:?} is not an audit entry id (a number); the newest entries are at /audit")
            })
        };
        match (self.before.as_deref(), self.after.as_deref()) {
            (Some(before), _) if !before.is_empty() => {
                Ok(AuditCursor::Before(id("before", before)?))
            }
            (_, Some(after)) if !after.is_empty() => Ok(AuditCursor::After(id("after", after)?)),
            _ => Ok(AuditCursor::Newest),
        }
    }
}

/// A link to another page of the audit log with the same filter.
fn audit_link(filter: &AuditFilter, cursor: Option<(&str, i64)>) -> String {
    let mut query: Vec<String> = cursor
        .map(|(name, id)| format!("{name}={id}"))
        .into_iter()
        .collect();
    for (name, value) in [
        ("app", &filter.app),
        ("environment", &filter.environment),
        ("actor", &filter.actor),
        ("action", &filter.action),
    ] {
        if let Some(value) = value {
            query.push(format!("{name}={}", url_encode(value)));
        }
    }
    if query.is_empty() {
        "/audit".into()
    } else {
        format!("/audit?{}", query.join("&"))
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn audit_page(
    State(web): State<Arc<Web>>,
    User(user): User,
    Query(q): Query<AuditQuery>,
) -> Response {
    let store = web.orchestrator.store();
    let filter = q.filter();
    let cursor = match q.cursor() {
        Ok(cursor) => cursor,
        Err(message) => return refuse(Some(&user), StatusCode::BAD_REQUEST, message),
    };
    // One more than a page, to know whether there is another beyond it.
    let read = |cursor| store.audit_entries(&filter, cursor, AUDIT_PAGE as i64 + 1);
    let mut entries = match read(cursor).await {
        Ok(entries) => entries,
        Err(e) => return store_error(&user, e),
    };
    let (newer, mut older) = match cursor {
        AuditCursor::Newest => (false, entries.len() > AUDIT_PAGE),
        AuditCursor::Before(_) => (true, entries.len() > AUDIT_PAGE),
        AuditCursor::After(_) => (entries.len() > AUDIT_PAGE, true),
    };
    if matches!(cursor, AuditCursor::After(_)) && !newer {
        // Back at the top: the newest page, full.
        entries = match read(AuditCursor::Newest).await {
            Ok(entries) => entries,
            Err(e) => return store_error(&user, e),
        };
        older = entries.len() > AUDIT_PAGE;
    } else if matches!(cursor, AuditCursor::After(_)) {
        // Newest first: the extra one is the newest, beyond this page.
        entries.remove(0);
    }
    entries.truncate(AUDIT_PAGE);
    let values = match store.audit_values().await {
        Ok(values) => values,
        Err(e) => return store_error(&user, e),
    };
    let choice = |name, label, values: Vec<String>, chosen: &Option<String>| Choice {
        name,
        label,
        values: values.into_iter().map(|v| (v.clone(), v)).collect(),
        chosen: chosen.clone().unwrap_or_default(),
    };
    // Each family of actions (`flag` for `flag.enable`, …) first, then each action.
    let mut families: Vec<String> = values
        .actions
        .iter()
        .filter_map(|a| a.split_once('.').map(|(family, _)| family.to_string()))
        .collect();
    families.dedup();
    let mut actions = choice("action", "Action", values.actions, &filter.action);
    let families: Vec<(String, String)> = families
        .into_iter()
        .map(|f| (f.clone(), format!("{f}.* (all)")))
        .collect();
    actions.values.splice(0..0, families);
    let choices = vec![
        choice("app", "App", values.apps, &filter.app),
        choice(
            "environment",
            "Environment",
            values.environments,
            &filter.environment,
        ),
        choice("actor", "Who", values.actors, &filter.actor),
        actions,
    ];
    let newer = newer
        .then(|| {
            entries
                .first()
                .map(|e| audit_link(&filter, Some(("after", e.id))))
        })
        .flatten();
    let older = older
        .then(|| {
            entries
                .last()
                .map(|e| audit_link(&filter, Some(("before", e.id))))
        })
        .flatten();
    render(
        AuditPage {
            page: Page::of(&user),
            filtered: filter != AuditFilter::default(),
            newest: (cursor != AuditCursor::Newest).then(|| audit_link(&filter, None)),
            choices,
            newer,
            older,
            entries: entries
                .into_iter()
                .map(|e| AuditRow {
                    when: ago(e.at),
                    detail: describe::detail(&e.detail),
                    place: match (&e.app, &e.environment) {
                        (Some(app), Some(env)) => format!("{app} in {env}"),
                        (Some(app), None) => app.clone(),
                        (None, Some(env)) => env.clone(),
                        (None, None) => String::new(),
                    },
                    actor: e.actor,
                    action: e.action,
                    subject: e.subject,
                    from: e.remote_address.unwrap_or_default(),
                })
                .collect(),
        },
        StatusCode::OK,
    )
}

// ---- flags ----

pub struct FlagRow {
    pub name: String,
    pub description: String,
    pub enabled: bool,
    /// Who gets it when on: the whole rule.
    pub rule: Vec<RuleLine>,
    pub variants: Vec<RuleLine>,
}

pub struct FlagGroup {
    pub app: String,
    pub environment: String,
    pub may_change: bool,
    pub flags: Vec<FlagRow>,
}

#[derive(Template)]
#[template(path = "flags.html")]
struct FlagsPage {
    page: Page,
    csrf: String,
    groups: Vec<FlagGroup>,
}

async fn flags_page(
    web: &Web,
    user: &Principal,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let statuses = web.orchestrator.status().await.unwrap_or_default();
    let mut keys: BTreeSet<(String, String)> = statuses
        .iter()
        .map(|s| (s.app.clone(), s.environment.clone()))
        .collect();
    for (app, _) in keys.clone() {
        keys.insert((app, baton_manifest::DEFAULT_ENVIRONMENT.to_string()));
    }
    let mut groups = Vec::new();
    for (app, environment) in keys {
        let flags = match web.flags.list(&app, &environment).await {
            Ok(flags) => flags,
            Err(e) => return store_error(user, e),
        };
        if flags.is_empty() {
            continue;
        }
        groups.push(FlagGroup {
            may_change: user.may_change(&app, &environment),
            flags: flags
                .into_iter()
                .map(|f| FlagRow {
                    rule: describe::rule(&f.spec),
                    variants: describe::variants(&f.spec),
                    enabled: f.spec.enabled,
                    description: f.spec.description.clone(),
                    name: f.name,
                })
                .collect(),
            app,
            environment,
        });
    }
    let mut page = Page::of(user);
    page.notice = notice;
    page.error = error;
    let csrf = page.csrf.clone().unwrap_or_default();
    render(FlagsPage { page, csrf, groups }, status)
}

pub async fn flags(State(web): State<Arc<Web>>, User(user): User) -> Response {
    flags_page(&web, &user, None, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct ToggleForm {
    csrf: String,
    app: String,
    environment: String,
    flag: String,
    enabled: bool,
}

pub async fn toggle_flag(
    State(web): State<Arc<Web>>,
    User(user): User,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<ToggleForm>,
) -> Response {
    if let Err(refused) = check_change(
        &web,
        &user,
        &headers,
        &form.csrf,
        &form.app,
        &form.environment,
        "change flags in",
    ) {
        return refused;
    }
    let actor = actor(&user, peer);
    let action = if form.enabled {
        "flag.enable"
    } else {
        "flag.disable"
    };
    let enabled = form.enabled;
    let changed = web
        .flags
        .update(
            &actor,
            &form.app,
            &form.environment,
            &form.flag,
            action,
            |mut spec| {
                spec.enabled = enabled;
                Ok(spec)
            },
        )
        .await;
    let word = if enabled { "on" } else { "off" };
    match changed {
        Ok(_) => {
            flags_page(
                &web,
                &user,
                Some(format!(
                    "{} is now {word} for {} in {}.",
                    form.flag, form.app, form.environment
                )),
                None,
                StatusCode::OK,
            )
            .await
        }
        Err(e) => {
            flags_page(
                &web,
                &user,
                None,
                Some(format!("{} was not changed: {e}", form.flag)),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}
