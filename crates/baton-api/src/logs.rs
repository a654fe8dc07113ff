//! `GET /api/v1/apps/{app}/logs`: the live target's output, its last lines
//! or followed as it grows (`follow=true`), moving on to the next live
//! target when a deploy or rollback replaces it. `GET
//! /api/v1/apps/{app}/requests`: the app's lines of the proxy's access log,
//! likewise.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use baton_proxy::AccessReader;
use serde::Deserialize;

use crate::{check_app, production, ApiError, ApiResult, AppState};

/// How often a followed log is looked at for more.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

#[derive(Deserialize)]
pub(crate) struct LogsQuery {
    environment: Option<String>,
    lines: Option<usize>,
    #[serde(default)]
    follow: bool,
    /// A worker's output (`[processes.NAME]`) instead of the web one's.
    process: Option<String>,
}

impl LogsQuery {
    fn environment(&self) -> String {
        self.environment.clone().unwrap_or_else(production)
    }

    /// How many of the last lines come first: 100 unless asked, at most
    /// 100 000.
    fn lines(&self) -> usize {
        self.lines.unwrap_or(100).min(100_000)
    }
}

/// Lines as one text, each ended by a newline.
fn text_of(lines: Vec<String>) -> String {
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

/// Runs file reading off the async threads; a failure is the server's.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))
}

struct Follow {
    orchestrator: AppState,
    app: String,
    environment: String,
    process: Option<String>,
    target: i64,
    offset: u64,
    first: Option<String>,
}

pub(crate) async fn logs(
    State(o): State<AppState>,
    Path(app): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    check_app(&app)?;
    let environment = q.environment();
    let process = q.process.clone().filter(|p| p != "web");
    let target = o
        .output_target(&app, &environment, process.as_deref())
        .await?
        .ok_or_else(|| match &process {
            None => ApiError::not_found(format!(
                "{app} has no live target in {environment}; deploy it first with `baton deploy`"
            )),
            Some(name) => ApiError::not_found(format!(
                "{app} runs no {name} process in {environment}; its live release's baton.toml needs [processes.{name}]"
            )),
        })?;
    let logs = o.logs().clone();
    let offset = logs.len(target.id);
    let text = text_of(logs.tail(target.id, q.lines()));
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow {
        return Ok((content_type, text).into_response());
    }
    let state = Follow {
        orchestrator: o,
        app,
        environment,
        process,
        target: target.id,
        offset,
        first: Some(text),
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if let Some(first) = s.first.take() {
            return Some((Ok::<_, std::io::Error>(Bytes::from(first)), s));
        }
        loop {
            let chunk = s.orchestrator.logs().read(s.target, s.offset, 64 * 1024);
            if !chunk.is_empty() {
                s.offset += chunk.len() as u64;
                return Some((Ok(Bytes::from(chunk)), s));
            }
            if let Ok(Some(live)) = s
                .orchestrator
                .output_target(&s.app, &s.environment, s.process.as_deref())
                .await
            {
                if live.id != s.target {
                    s.target = live.id;
                    s.offset = 0;
                    let note = format!(
                        "[baton] now following target {} (release {})\n",
                        live.id,
                        &live.release_id[..live.release_id.len().min(12)]
                    );
                    return Some((Ok(Bytes::from(note)), s));
                }
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    });
    Ok((content_type, Body::from_stream(stream)).into_response())
}

/// The app's requests in the environment, one JSON line each as the proxy
/// wrote it (`baton_proxy::AccessRecord`), oldest first: the last ones,
/// then with `follow=true` each one logged after, across the log's
/// rotations. No log yet is no requests.
pub(crate) async fn requests(
    State(o): State<AppState>,
    Path(app): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    check_app(&app)?;
    let environment = q.environment();
    if o.store().route(&app, &environment).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "{app} has no route in {environment}, so no request can have reached it; `baton status` lists the apps and their environments"
        )));
    }
    // Where `baton server` has the proxy write it.
    let path = o.logs().dir().join(baton_proxy::ACCESS_LOG);
    let lines = q.lines();
    let (reader, last) =
        blocking(move || AccessReader::open(path, &app, &environment, lines)).await?;
    let content_type = [(header::CONTENT_TYPE, "application/x-ndjson")];
    if !q.follow {
        return Ok((content_type, text_of(last)).into_response());
    }
    // The reader goes to a blocking thread for each look and comes back;
    // after an error there is none and the stream ends.
    let state = (Some(reader), Some(text_of(last)));
    let stream = futures_util::stream::unfold(state, |(reader, first)| async move {
        if let Some(first) = first {
            return Some((Ok(Bytes::from(first)), (reader, None)));
        }
        let mut reader = reader?;
        loop {
            let looked = tokio::task::spawn_blocking(move || {
                let more = reader.read();
                (reader, more)
            })
            .await;
            let more = match looked {
                Ok((back, Ok(more))) => {
                    reader = back;
                    more
                }
                Ok((_, Err(e))) => return Some((Err(e), (None, None))),
                Err(e) => return Some((Err(std::io::Error::other(e)), (None, None))),
            };
            if !more.is_empty() {
                return Some((Ok(Bytes::from(text_of(more))), (Some(reader), None)));
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    });
    Ok((content_type, Body::from_stream(stream)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImageLogQuery {
    #[serde(default)]
    offset: u64,
}

/// `GET /api/v1/apps/{app}/releases/{release}/image-log?offset=N`: the
/// output of a release's image build from byte `offset` on, while it runs
/// (the CLI shows it during `baton deploy`) and after (it is kept).
pub(crate) async fn image_log(
    State(o): State<AppState>,
    Path((app, release)): Path<(String, String)>,
    Query(q): Query<ImageLogQuery>,
) -> ApiResult<Response> {
    release_log(
        &app,
        &release,
        q.offset,
        |release| o.image_log(release),
        "image build",
    )
    .await
}

/// `GET /api/v1/apps/{app}/releases/{release}/build-log?offset=N`: the
/// output of a process release's `[build]`, as `image-log` is a Docker
/// release's.
pub(crate) async fn build_log(
    State(o): State<AppState>,
    Path((app, release)): Path<(String, String)>,
    Query(q): Query<ImageLogQuery>,
) -> ApiResult<Response> {
    release_log(
        &app,
        &release,
        q.offset,
        |release| o.build_log(release),
        "build",
    )
    .await
}

/// A release's build output (`what`) kept at `path_of(release)`, from byte
/// `offset` on, at most 1 MiB an answer.
async fn release_log(
    app: &str,
    release: &str,
    offset: u64,
    path_of: impl FnOnce(&str) -> std::path::PathBuf,
    what: &str,
) -> ApiResult<Response> {
    use std::io::{Read, Seek, SeekFrom};
    check_app(app)?;
    // A release id is 64 hex digits: nothing else may name a file.
    if release.len() != 64 || !release.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "{release:?} is not a release id (64 hex digits)"
        )));
    }
    let path = path_of(release);
    let text = blocking(move || -> std::io::Result<Option<Vec<u8>>> {
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        // At most 1 MiB an answer; the client asks again from where it is.
        file.take(1024 * 1024).read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    })
    .await?;
    match text {
        Some(bytes) => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Bytes::from(bytes),
        )
            .into_response()),
        None => Err(ApiError::not_found(format!(
            "release {} of {app} has no {what} output (not built yet, or built another way)",
            &release[..12]
        ))),
    }
}
