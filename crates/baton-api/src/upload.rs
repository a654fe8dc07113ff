//! Release uploads, streamed to a private file as they arrive and cut at
//! the server's size limit: an upload never sits in
//! memory whole, and one larger than the limit is refused (413) as soon as
//! it says so (`Content-Length`) or as soon as it passes the limit.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::{ApiError, ApiResult, Uploads};

/// The longest pause between two pieces of an upload.
const STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// An upload received whole; its file is removed when this is dropped.
pub(crate) struct Upload {
    file: tempfile::NamedTempFile,
}

impl Upload {
    pub async fn read(&self) -> ApiResult<Vec<u8>> {
        tokio::fs::read(self.file.path())
            .await
            .map_err(|e| internal(format!("cannot read the upload back: {e}")))
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the release archive is larger than this server accepts ({} MiB); leave build output and data out of it with .batonignore, or raise the server's --max-upload",
            max / (1024 * 1024)
        ),
    )
}

fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

pub(crate) async fn receive(
    uploads: &Uploads,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Upload> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > uploads.max_bytes) {
        return Err(too_large(uploads.max_bytes));
    }
    std::fs::create_dir_all(&uploads.dir)
        .map_err(|e| internal(format!("cannot create {}: {e}", uploads.dir.display())))?;
    // Created 0600 by tempfile; removed on drop whatever happens below.
    let file = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(&uploads.dir)
        .map_err(|e| {
            internal(format!(
                "cannot create an upload file in {}: {e}",
                uploads.dir.display()
            ))
        })?;
    let mut out = tokio::fs::File::from_std(
        file.reopen()
            .map_err(|e| internal(format!("cannot open the upload file: {e}")))?,
    );
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    loop {
        // A client that stops sending does not hold the connection forever.
        let next = tokio::time::timeout(STALL, stream.next())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the upload stopped arriving for {}s; send it again",
                        STALL.as_secs()
                    ),
                )
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(format!("the upload was cut short: {e}; send it again"))
        })?;
        size += chunk.len() as u64;
        if size > uploads.max_bytes {
            return Err(too_large(uploads.max_bytes));
        }
        out.write_all(&chunk).await.map_err(|e| {
            internal(format!(
                "cannot write the upload to {}: {e} (is the disk full?)",
                uploads.dir.display()
            ))
        })?;
    }
    out.flush()
        .await
        .map_err(|e| internal(format!("cannot write the upload: {e}")))?;
    Ok(Upload { file })
}
