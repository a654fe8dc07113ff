//! `GET /api/v1/apps/{app}/logs`: the live target's output, its last lines
//! or followed as it grows (`follow=true`), moving on to the next live
//! target when a deploy or rollback replaces it.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::{check_app, production, ApiError, ApiResult, AppState};

#[derive(Deserialize)]
pub(crate) struct LogsQuery {
    environment: Option<String>,
    lines: Option<usize>,
    #[serde(default)]
    follow: bool,
}

struct Follow {
    orchestrator: AppState,
    app: String,
    environment: String,
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
    let environment = q.environment.unwrap_or_else(production);
    let target = o.live_target(&app, &environment).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "{app} has no live target in {environment}; deploy it first with `baton deploy`"
        ))
    })?;
    let logs = o.logs().clone();
    let offset = logs.len(target.id);
    let mut text = logs
        .tail(target.id, q.lines.unwrap_or(100).min(100_000))
        .join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow {
        return Ok((content_type, text).into_response());
    }
    let state = Follow {
        orchestrator: o,
        app,
        environment,
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
            if let Ok(Some(live)) = s.orchestrator.live_target(&s.app, &s.environment).await {
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
            tokio::time::sleep(Duration::from_millis(200)).await;
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
    use std::io::{Read, Seek, SeekFrom};
    check_app(&app)?;
    // A release id is 64 hex digits: nothing else may name a file.
    if release.len() != 64 || !release.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "{release:?} is not a release id (64 hex digits)"
        )));
    }
    let path = o.image_log(&release);
    let text = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Vec<u8>>> {
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(q.offset))?;
        let mut bytes = Vec::new();
        // At most 1 MiB an answer; the client asks again from where it is.
        file.take(1024 * 1024).read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    })
    .await
    .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match text {
        Some(bytes) => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Bytes::from(bytes),
        )
            .into_response()),
        None => Err(ApiError::not_found(format!(
            "release {} of {app} has no image build output (not built yet, or a process app)",
            &release[..12]
        ))),
    }
}
