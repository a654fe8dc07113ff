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
