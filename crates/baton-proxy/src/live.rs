//! "A new version is live", told to the pages a client has open. On every
//! host of an app with `[proxy] live_updates = true`, the proxy itself
//! answers two paths:
//!
//! - `/_baton/events`: server-sent events. A `release` event names the
//!   release this client is served by now, once when it connects and again
//!   whenever that changes (a switch, a rollback, a canary step that moves
//!   it); a comment every 25 s keeps the connection open through idle
//!   timeouts.
//! - `/_baton/live.js`: a small script a page includes; it listens to the
//!   events and, when the release changes, shows a banner: "a new version
//!   is available — reload".
//!
//! Whether a client's release changed is worked out again after every
//! change to the route table (a version counter the table bumps).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

use crate::forward::DownBody;
use crate::route::Side;
use crate::server::Proxy;

pub(crate) const EVENTS_PATH: &str = "/_baton/events";
pub(crate) const SCRIPT_PATH: &str = "/_baton/live.js";
/// A comment this often keeps the stream open through idle timeouts.
const KEEP_ALIVE: Duration = Duration::from_secs(25);

const SCRIPT: &str = include_str!("live.js");

/// The events of one client: read by its response body, written by a task
/// that follows the route table.
pub(crate) struct Events(mpsc::Receiver<Bytes>);

impl Body for Events {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|event| event.map(|e| Ok(Frame::data(e))))
    }
}

impl Proxy {
    /// The script pages include.
    pub(crate) fn live_script(&self) -> Response<DownBody> {
        let mut response = Response::new(DownBody::Message(Some(Bytes::from_static(
            SCRIPT.as_bytes(),
        ))));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        response
    }

    /// A client's event stream: the release it is served by now, then
    /// each change, until it goes away or the proxy stops.
    pub(crate) fn live_events(self: &Arc<Self>, host: String, side: Side) -> Response<DownBody> {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let proxy = Arc::clone(self);
        let mut changes = self.table_versions();
        tokio::spawn(async move {
            let mut told: Option<String> = None;
            loop {
                if proxy.stopping() {
                    return;
                }
                let now = proxy
                    .pick_now(&host, false, side)
                    .ok()
                    .map(|(target, _)| target.release.clone());
                if let Some(release) = now.filter(|r| told.as_ref() != Some(r)) {
                    let event = format!("event: release\ndata: {release}\n\n");
                    if tx.send(Bytes::from(event)).await.is_err() {
                        return;
                    }
                    told = Some(release);
                }
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = tokio::time::sleep(KEEP_ALIVE) => {
                        if tx.send(Bytes::from_static(b": still here\n\n")).await.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        let mut response = Response::new(DownBody::Events(Events(rx)));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
