//! Forwarding one request: find the route, wait out a hold, pick the target,
//! send the request upstream and stream the response back while counting it
//! as in flight on that target.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::hold::Waited;
use crate::route::normalise_host;
use crate::server::{Peer, Proxy};
use crate::target::{InFlight, Target};
use crate::PREVIEW_HEADER;

pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

impl Proxy {
    pub(crate) async fn forward(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Response<ProxyBody> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .map(normalise_host)
            .unwrap_or_default();
        let wants_preview = req.headers().contains_key(PREVIEW_HEADER);

        let (gate, hold_timeout) = {
            let table = self.current();
            match table.resolve(&host) {
                Some((route, _)) => (Arc::clone(&route.gate), route.spec.hold_timeout),
                None => {
                    return plain(
                        StatusCode::NOT_FOUND,
                        format!("baton: no app answers for host {host:?}\n"),
                    )
                }
            }
        };
        if gate.is_held() {
            let waited = gate.wait(hold_timeout).await;
            if waited != Waited::Released {
                tracing::warn!(
                    host,
                    ?waited,
                    "request went on without waiting for the switch"
                );
            }
        }

        let target = match self.pick(&host, wants_preview) {
            Ok(target) => target,
            Err(miss) => return miss.response(&host),
        };

        let (parts, body) = req.into_parts();
        // A request without a body can be sent again if the target refused
        // the connection (it may have been replaced a moment ago).
        let replayable = body.size_hint().exact() == Some(0);
        let upstream = upstream_request(&parts, body.boxed(), &target, peer, &host);
        let mut in_flight = target.begin();
        let mut result = self.client.request(upstream).await;
        if let Err(e) = &result {
            if replayable && e.is_connect() {
                if let Ok(next) = self.pick(&host, wants_preview) {
                    if next.id != target.id {
                        tracing::info!(
                            host,
                            from = target.id,
                            to = next.id,
                            "retrying on the new target"
                        );
                        let empty = Empty::<Bytes>::new()
                            .map_err(|never| match never {})
                            .boxed();
                        in_flight = next.begin();
                        result = self
                            .client
                            .request(upstream_request(&parts, empty, &next, peer, &host))
                            .await;
                    }
                }
            }
        }
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let body = Tracked {
                    inner: body,
                    _in_flight: in_flight,
                };
                Response::from_parts(parts, body.boxed())
            }
            Err(e) => {
                target.record_failure();
                tracing::warn!(host, target = target.id, addr = %target.addr, error = %e, "upstream request failed");
                plain(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "baton: target {} (release {}) at {} did not answer: {e}\n",
                        target.id, target.release, target.addr
                    ),
                )
            }
        }
    }

    fn pick(&self, host: &str, wants_preview: bool) -> Result<Arc<Target>, Miss> {
        let table = self.current();
        let Some((route, preview_host)) = table.resolve(host) else {
            return Err(Miss::UnknownHost);
        };
        match route.pick(wants_preview || preview_host) {
            Some(target) => Ok(Arc::clone(target)),
            None => Err(Miss::NoLiveTarget(route.spec.key.to_string())),
        }
    }
}

/// Why no target could be picked for a request.
enum Miss {
    UnknownHost,
    NoLiveTarget(String),
}

impl Miss {
    fn response(&self, host: &str) -> Response<ProxyBody> {
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

fn upstream_request(
    parts: &http::request::Parts,
    body: ProxyBody,
    target: &Target,
    peer: Peer,
    host: &str,
) -> Request<ProxyBody> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = format!("http://{}{}", target.addr, path)
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = parts.headers.clone();
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", value);
    }
    headers
        .entry("x-forwarded-proto")
        .or_insert(HeaderValue::from_static("http"));
    if let Ok(value) = HeaderValue::from_str(host) {
        headers.entry("x-forwarded-host").or_insert(value);
    }
    req
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

pub(crate) fn plain(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(message))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response body that keeps its request counted as in flight on the
/// target until the last byte has gone (or the client went away).
struct Tracked {
    inner: Incoming,
    _in_flight: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
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
