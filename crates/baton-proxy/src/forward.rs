//! Forwarding one request: find the route, wait out a hold, pick the target,
//! send the request upstream and stream the response back while counting it
//! as in flight on that target.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::hold::Waited;
use crate::pool::{connect, ConnectError, Sender};
use crate::route::normalise_host;
use crate::server::Proxy;
use crate::target::{InFlight, Target};
use crate::PREVIEW_HEADER;

/// What the proxy answers with: the target's response, or its own message.
pub(crate) enum DownBody {
    Upstream(Tracked),
    Message(Option<Bytes>),
}

impl Body for DownBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            DownBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            DownBody::Message(text) => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownBody::Upstream(body) => body.is_end_stream(),
            DownBody::Message(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownBody::Upstream(body) => body.size_hint(),
            DownBody::Message(text) => {
                SizeHint::with_exact(text.as_ref().map(|t| t.len() as u64).unwrap_or(0))
            }
        }
    }
}

static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const PREVIEW: HeaderName = HeaderName::from_static(PREVIEW_HEADER);

impl Proxy {
    /// Forwards one request from the client at `client_ip`.
    pub(crate) async fn forward(
        self: Arc<Self>,
        req: Request<Incoming>,
        client_ip: HeaderValue,
    ) -> Response<DownBody> {
        // Held apart from the request, whose headers move on upstream.
        let host_header = req.headers().get(header::HOST).cloned();
        let uri_host = host_header
            .is_none()
            .then(|| req.uri().host().map(str::to_string))
            .flatten();
        let host = host_header
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .or(uri_host.as_deref())
            .map(normalise_host)
            .unwrap_or_default();
        let wants_preview = req.headers().contains_key(PREVIEW);

        // One table lookup on the common path; a second only after a hold,
        // since the route has switched meanwhile.
        let held = match self.pick(&host, wants_preview, true) {
            Ok(Picked::Target(target)) => Ok(target),
            Ok(Picked::Held(gate, hold_timeout)) => Err((gate, hold_timeout)),
            Err(miss) => return miss.response(&host),
        };
        let target = match held {
            Ok(target) => target,
            Err((gate, hold_timeout)) => {
                let waited = gate.wait(hold_timeout).await;
                if waited != Waited::Released {
                    tracing::warn!(host = %host, ?waited, "request went on without waiting for the switch");
                }
                match self.pick_now(&host, wants_preview) {
                    Ok(target) => target,
                    Err(miss) => return miss.response(&host),
                }
            }
        };
        let (parts, body) = req.into_parts();
        let upstream = upstream_request(parts, body, client_ip, host_header.clone());
        let mut outcome = send(target.begin(), upstream).await;
        // A request that never left can go to the new target, if the route
        // switched while the old one refused the connection.
        if let Err(Failure {
            error: UpstreamError::Connect(_),
            unsent: Some(_),
            ..
        }) = &outcome
        {
            if let Ok(next) = self.pick_now(&host, wants_preview) {
                if next.id != target.id {
                    tracing::info!(host = %host, from = target.id, to = next.id, "retrying on the new target");
                    if let Err(Failure {
                        unsent: Some(request),
                        ..
                    }) = outcome
                    {
                        outcome = send(next.begin(), request).await;
                    }
                }
            }
        }
        match outcome {
            Ok((response, sender, in_flight)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let body = Tracked {
                    inner: body,
                    sender: Some(sender),
                    in_flight,
                };
                Response::from_parts(parts, DownBody::Upstream(body))
            }
            Err(Failure {
                error, in_flight, ..
            }) => {
                let target = in_flight.target();
                target.record_failure();
                tracing::warn!(host = %host, target = target.id, addr = %target.addr, error = %error, "upstream request failed");
                plain(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "baton: target {} (release {}) at {} did not answer: {error}\n",
                        target.id, target.release, target.addr
                    ),
                )
            }
        }
    }

    /// The target for a request, or, if `wait_for_hold` and the route is
    /// held, the hold to wait out first.
    fn pick(&self, host: &str, wants_preview: bool, wait_for_hold: bool) -> Result<Picked, Miss> {
        let table = self.current();
        let Some((route, preview_host)) = table.resolve(host) else {
            return Err(Miss::UnknownHost);
        };
        if wait_for_hold && route.gate.is_held() {
            return Ok(Picked::Held(
                Arc::clone(&route.gate),
                route.spec.hold_timeout,
            ));
        }
        match route.pick(wants_preview || preview_host) {
            Some(target) => Ok(Picked::Target(Arc::clone(target))),
            None => Err(Miss::NoLiveTarget(route.spec.key.to_string())),
        }
    }

    /// The target for a request, held or not: after a hold, or for a retry.
    fn pick_now(&self, host: &str, wants_preview: bool) -> Result<Arc<Target>, Miss> {
        match self.pick(host, wants_preview, false)? {
            Picked::Target(target) => Ok(target),
            Picked::Held(..) => unreachable!("a hold is only reported when asked for"),
        }
    }
}

enum Picked {
    Target(Arc<Target>),
    Held(Arc<crate::hold::Gate>, std::time::Duration),
}

/// Why no target could be picked for a request.
enum Miss {
    UnknownHost,
    NoLiveTarget(String),
}

impl Miss {
    fn response(&self, host: &str) -> Response<DownBody> {
        match self {
            Miss::UnknownHost => plain(
                StatusCode::NOT_FOUND,
                format!("baton: no app answers for host {host:?}\n"),
            ),
            Miss::NoLiveTarget(route) => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("baton: {route} has no live release yet\n"),
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

struct Failure {
    error: UpstreamError,
    in_flight: InFlight,
    /// The request, when it never left this proxy and can go elsewhere.
    unsent: Option<Request<Incoming>>,
}

type Sent = (Response<Incoming>, Sender, InFlight);

/// Sends a request to the target `in_flight` counts it on: on a pooled
/// connection if one is idle, else on a new one.
async fn send(in_flight: InFlight, request: Request<Incoming>) -> Result<Sent, Failure> {
    let target = Arc::clone(in_flight.target());
    let mut request = request;
    if let Some(mut sender) = target.pool().take().await {
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, sender, in_flight)),
            Err(mut e) => match e.take_message() {
                // The target closed this idle connection as we picked it,
                // before the request went out: use a new connection.
                Some(unsent) => request = unsent,
                None => {
                    return Err(Failure {
                        error: e.into_error().into(),
                        in_flight,
                        unsent: None,
                    })
                }
            },
        }
    }
    let mut sender = match connect(target.addr).await {
        Ok(sender) => sender,
        Err(e) => {
            return Err(Failure {
                error: e.into(),
                in_flight,
                unsent: Some(request),
            })
        }
    };
    match sender.send_request(request).await {
        Ok(response) => Ok((response, sender, in_flight)),
        Err(e) => Err(Failure {
            error: e.into(),
            in_flight,
            unsent: None,
        }),
    }
}

/// The request as sent upstream: origin-form URI, hop-by-hop headers
/// removed, X-Forwarded-* added.
fn upstream_request(
    parts: http::request::Parts,
    body: Incoming,
    client_ip: HeaderValue,
    host_header: Option<HeaderValue>,
) -> Request<Incoming> {
    let uri = match parts.uri.path_and_query() {
        Some(path) => Uri::from(path.clone()),
        None => Uri::from_static("/"),
    };
    let mut req = Request::new(body);
    *req.method_mut() = parts.method;
    *req.uri_mut() = uri;
    *req.headers_mut() = parts.headers;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => client_ip
            .to_str()
            .ok()
            .and_then(|ip| HeaderValue::from_str(&format!("{prior}, {ip}")).ok())
            .unwrap_or(client_ip),
        None => client_ip,
    };
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static("http"));
    if let Some(host) = host_header {
        headers.entry(X_FORWARDED_HOST).or_insert(host);
    }
    req
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them, or only `Connection: keep-alive`.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // Other headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| {
            !token.eq_ignore_ascii_case("keep-alive") && !token.eq_ignore_ascii_case("close")
        })
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

pub(crate) fn plain(status: StatusCode, message: String) -> Response<DownBody> {
    let mut response = Response::new(DownBody::Message(Some(Bytes::from(message))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response body that keeps its request counted as in flight on the
/// target until the last byte has gone (or the client went away), and gives
/// the upstream connection back to the pool once the body was read whole.
pub(crate) struct Tracked {
    inner: Incoming,
    sender: Option<Sender>,
    in_flight: InFlight,
}

impl Tracked {
    fn recycle(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.in_flight.target().pool().put(sender);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // A body never polled because it was empty still ended cleanly.
        if self.inner.is_end_stream() {
            self.recycle();
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.recycle();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
