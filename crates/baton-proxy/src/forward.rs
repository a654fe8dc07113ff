//! Serving one request, as steps each in its own module: the edge checks it
//! and says who the client is (`edge`), the route and target are looked up
//! (`lookup`), a switch is waited out (`hold`), the request goes upstream
//! with its body bounded (`inbound`) and its answer awaited at most the
//! route's response timeout, the response streams back while counted as in
//! flight on its target, and whatever went wrong is answered in one place
//! (`rescue`). Every request ends as one access-log line.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::access_log::Entry;
use crate::edge::{self, Client, X_REQUEST_ID};
use crate::hold::Waited;
use crate::inbound::{self, Inbound, InboundError};
use crate::lookup::Picked;
use crate::pool::{connect, connect_for_upgrade, ConnectError, Sender};
use crate::rescue::{self, Refusal};
use crate::route::{normalise_host, RouteLimits, RouteTls};
use crate::server::Proxy;
use crate::target::{InFlight, LongLived, Target};
use crate::PREVIEW_HEADER;

/// What the proxy answers with: the target's response, or its own message.
// The upstream body is the common case: boxing it would cost an
// allocation per request to save a copy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub(crate) enum DownBody {
    Upstream(Tracked),
    Message(Option<Bytes>),
    /// A live-update stream (`/_baton/events`).
    Events(crate::live::Events),
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
            DownBody::Events(events) => Pin::new(events).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownBody::Upstream(body) => body.is_end_stream(),
            DownBody::Message(text) => text.is_none(),
            DownBody::Events(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownBody::Upstream(body) => body.size_hint(),
            DownBody::Message(text) => {
                SizeHint::with_exact(text.as_ref().map(|t| t.len() as u64).unwrap_or(0))
            }
            DownBody::Events(events) => events.size_hint(),
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
const PREVIEW: HeaderName = HeaderName::from_static(PREVIEW_HEADER);
/// Where a CA looks for an HTTP-01 challenge's answer (RFC 8555 §8.3).
const ACME_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

impl Proxy {
    /// Serves one request from `client`: checked at the edge, routed,
    /// held during a switch, forwarded, or answered by the proxy itself.
    pub(crate) async fn handle(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        client: Arc<Client>,
    ) -> Response<DownBody> {
        // HTTP/2 names the host in `:authority`; the app, spoken to in
        // HTTP/1.1, gets it as `Host` (and X-Forwarded-Host from it).
        if req.version() == http::Version::HTTP_2 && !req.headers().contains_key(header::HOST) {
            if let Some(host) = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        let request_id = edge::request_id(req.headers());
        // Only shared handles here: the line is formatted off the data path.
        let mut entry = Entry {
            started: Instant::now(),
            at: std::time::SystemTime::now(),
            host: req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .into(),
            method: req.method().clone(),
            path: req.uri().path().into(),
            request_id: request_id.clone(),
            client: Arc::clone(&client),
            route: None,
            target: None,
        };
        let accept = req.headers().get(header::ACCEPT).cloned();
        match self
            .route_and_forward(req, &client, &request_id, &mut entry)
            .await
        {
            Ok(response) => response,
            Err(refusal) => {
                if let Some(target) = &entry.target {
                    if matches!(
                        refusal,
                        Refusal::GatewayTimeout { .. } | Refusal::BadGateway { .. }
                    ) {
                        target.record_failure(matches!(refusal, Refusal::GatewayTimeout { .. }));
                    }
                }
                let mut asked = HeaderMap::new();
                if let Some(accept) = accept {
                    asked.insert(header::ACCEPT, accept);
                }
                let response = rescue::respond(&refusal, &asked, &request_id);
                self.log(&entry, response.status().as_u16(), 0, Some(refusal.code()));
                response
            }
        }
    }

    async fn route_and_forward(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        client: &Client,
        request_id: &HeaderValue,
        entry: &mut Entry,
    ) -> Result<Response<DownBody>, Refusal> {
        edge::check(req.version(), req.headers())
            .map_err(|m| Refusal::Malformed { reason: m.reason() })?;
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
        // A CA checking an HTTP-01 challenge, whatever the host's route.
        if client.scheme == "http" {
            if let Some(answer) = req
                .uri()
                .path()
                .strip_prefix(ACME_CHALLENGE_PATH)
                .and_then(|token| self.certificates().token(token))
            {
                self.log(entry, 200, answer.len() as u64, None);
                let mut response = Response::new(DownBody::Message(Some(Bytes::from(answer))));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                return Ok(response);
            }
        }

        // One table lookup on the common path; a second only after a hold,
        // since the route has switched meanwhile.
        let (side, new_bucket) = crate::canary::side(req.headers());
        let (target, route) = match self.pick(&host, wants_preview, side, true)? {
            Picked::Target(target, route) => (target, route),
            Picked::Held(gate, hold_timeout) => {
                let waited = gate.wait(hold_timeout).await;
                if waited != Waited::Released {
                    tracing::warn!(host = %host, ?waited, "request went on without waiting for the switch");
                }
                self.pick_now(&host, wants_preview, side)?
            }
        };
        entry.target = Some(Arc::clone(&target));
        let limits = route.spec.limits;
        // A client new to a canary keeps its bucket from now on.
        let keep_bucket = (new_bucket && route.canary.is_some())
            .then(|| crate::canary::cookie(side))
            .flatten();
        let hsts = match &route.spec.tls {
            Some(tls) if client.scheme == "http" => {
                if let Some(location) = self.https_location(tls, &host, &req, client) {
                    entry.route = Some(route);
                    self.log(entry, 308, 0, None);
                    let mut response = Response::new(DownBody::Message(None));
                    *response.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
                    response.headers_mut().insert(header::LOCATION, location);
                    response
                        .headers_mut()
                        .insert(X_REQUEST_ID, request_id.clone());
                    return Ok(response);
                }
                None
            }
            Some(tls) => tls.hsts_header(),
            None => None,
        };
        if route.spec.live_updates {
            let path = req.uri().path();
            if path == crate::live::EVENTS_PATH || path == crate::live::SCRIPT_PATH {
                let response = if path == crate::live::SCRIPT_PATH {
                    self.live_script()
                } else {
                    self.live_events(host.to_string(), side)
                };
                entry.route = Some(route);
                self.log(entry, 200, 0, None);
                return Ok(response);
            }
        }
        entry.route = Some(route);
        // A declared length over the limit is refused before anything is read.
        if let Some(max) = limits.max_body {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                return Err(Refusal::BodyTooLarge { limit: max });
            }
        }
        // A protocol switch (WebSocket) goes on a connection of its own.
        let upgrade = crate::upgrade::requested(req.version(), req.headers());
        let client_side = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let body = Inbound::new(body, limits.max_body, self.edge().body_timeout);
        let mut upstream = upstream_request(parts, body, client, host_header.as_ref(), request_id);
        if let Some(protocol) = &upgrade {
            crate::upgrade::ask_upstream(upstream.headers_mut(), protocol.clone());
        }
        let fresh = upgrade.is_some();
        let mut outcome = send(target.begin(), upstream, &limits, fresh).await;
        // A request that never left can go to the new target, if the route
        // switched while the old one refused the connection.
        if let Err(Failure {
            error: UpstreamError::Connect(_),
            unsent: Some(_),
            ..
        }) = &outcome
        {
            if let Ok((next, next_route)) = self.pick_now(&host, wants_preview, side) {
                if next.id != target.id {
                    tracing::info!(host = %host, from = target.id, to = next.id, "retrying on the new target");
                    if let Err(Failure {
                        unsent: Some(request),
                        ..
                    }) = outcome
                    {
                        entry.target = Some(Arc::clone(&next));
                        let next_limits = next_route.spec.limits;
                        entry.route = Some(next_route);
                        outcome = send(next.begin(), request, &next_limits, fresh).await;
                    }
                }
            }
        }
        match outcome {
            Ok((mut response, _, in_flight))
                if response.status() == http::StatusCode::SWITCHING_PROTOCOLS
                    && client_side.is_some() =>
            {
                in_flight.target().record_answer();
                let upstream_side = hyper::upgrade::on(&mut response);
                let (mut parts, _) = response.into_parts();
                parts
                    .headers
                    .entry(X_REQUEST_ID)
                    .or_insert_with(|| request_id.clone());
                if let Some(client_side) = client_side {
                    crate::upgrade::tunnel(
                        client_side,
                        upstream_side,
                        in_flight,
                        crate::server::hold_open(),
                    );
                }
                self.log(entry, 101, 0, None);
                Ok(Response::from_parts(parts, DownBody::Message(None)))
            }
            Ok((response, sender, in_flight)) => {
                in_flight
                    .target()
                    .record_status(response.status(), entry.started.elapsed());
                let (mut parts, body) = response.into_parts();
                if let Some(cookie) = keep_bucket {
                    parts.headers.append(header::SET_COOKIE, cookie);
                }
                strip_hop_by_hop(&mut parts.headers);
                parts
                    .headers
                    .entry(X_REQUEST_ID)
                    .or_insert_with(|| request_id.clone());
                if let Some(hsts) = hsts {
                    parts
                        .headers
                        .entry(header::STRICT_TRANSPORT_SECURITY)
                        .or_insert(hsts);
                }
                let status = parts.status.as_u16();
                // An event stream is long-lived: counted, and closed when its
                // target's drain time is over.
                let events = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
                let stream = events.then(|| {
                    let (counted, mut cut) = in_flight.target().long_lived();
                    let cut: CutSignal = Box::pin(async move {
                        let _ = cut.wait_for(|cut| *cut).await;
                    });
                    (counted, cut)
                });
                let body = Tracked {
                    inner: body,
                    sender: Some(sender),
                    in_flight,
                    sent: 0,
                    log: Some((Arc::clone(self), entry.clone(), status)),
                    stream,
                };
                Ok(Response::from_parts(parts, DownBody::Upstream(body)))
            }
            Err(Failure {
                error, in_flight, ..
            }) => {
                let target = in_flight.target();
                let name = format!(
                    "target {} (release {}) at {}",
                    target.id,
                    short(&target.release),
                    target.addr
                );
                tracing::warn!(host = %host, target = target.id, addr = %target.addr, error = %error, "upstream request failed");
                Err(match error {
                    UpstreamError::Timeout(after) => Refusal::GatewayTimeout {
                        target: name,
                        after,
                    },
                    UpstreamError::Http(e) => match inbound::cause(&e) {
                        Some(InboundError::TooLarge(limit)) => {
                            Refusal::BodyTooLarge { limit: *limit }
                        }
                        Some(InboundError::Stalled(_)) => Refusal::BodyStalled,
                        _ => Refusal::BadGateway {
                            target: name,
                            why: e.to_string(),
                        },
                    },
                    e => Refusal::BadGateway {
                        target: name,
                        why: e.to_string(),
                    },
                })
            }
        }
    }

    /// Where a plain-HTTP request should go instead, if its route
    /// redirects to HTTPS and a certificate is served for its host (until
    /// one is, the app stays served over HTTP). A request a trusted proxy
    /// says came over HTTPS is not redirected: it would loop.
    fn https_location(
        &self,
        tls: &RouteTls,
        host: &str,
        req: &Request<Incoming>,
        client: &Client,
    ) -> Option<HeaderValue> {
        if !tls.redirect || !self.certificates().serves(host) {
            return None;
        }
        let port = self.https_port()?;
        let forwarded_https = client.trusted
            && req
                .headers()
                .get(edge::X_FORWARDED_PROTO)
                .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
        if forwarded_https {
            return None;
        }
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let location = if port == 443 {
            format!("https://{host}{path}")
        } else {
            format!("https://{host}:{port}{path}")
        };
        HeaderValue::from_str(&location).ok()
    }

    /// Writes the request's access-log line, if the proxy keeps one.
    pub(crate) fn log(&self, entry: &Entry, status: u16, bytes: u64, error: Option<&'static str>) {
        if let Some(log) = self.access_log() {
            log.record(entry.clone(), status, bytes, error);
        }
    }
}

fn short(release: &str) -> &str {
    &release[..release.len().min(12)]
}

#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("no response within {0:?}")]
    Timeout(std::time::Duration),
}

struct Failure {
    error: UpstreamError,
    in_flight: InFlight,
    /// The request, when it never left this proxy and can go elsewhere.
    unsent: Option<Request<Inbound>>,
}

type Sent = (Response<Incoming>, Sender, InFlight);

/// Sends a request to the target `in_flight` counts it on: on a pooled
/// connection if one is idle, else on a new one (always a new one when
/// `fresh`: an upgrade); waits for the response's head at most the route's
/// response timeout.
async fn send(
    in_flight: InFlight,
    request: Request<Inbound>,
    limits: &RouteLimits,
    fresh: bool,
) -> Result<Sent, Failure> {
    let target = Arc::clone(in_flight.target());
    let timeout = limits.response_timeout;
    match tokio::time::timeout(timeout, send_now(&target, request, limits, fresh)).await {
        Ok(Ok((response, sender))) => Ok((response, sender, in_flight)),
        Ok(Err((error, unsent))) => Err(Failure {
            error,
            in_flight,
            unsent,
        }),
        Err(_) => Err(Failure {
            error: UpstreamError::Timeout(timeout),
            in_flight,
            unsent: None,
        }),
    }
}

type Unsent = (UpstreamError, Option<Request<Inbound>>);

async fn send_now(
    target: &Target,
    request: Request<Inbound>,
    limits: &RouteLimits,
    fresh: bool,
) -> Result<(Response<Incoming>, Sender), Unsent> {
    let mut request = request;
    if fresh {
        let mut sender = match connect_for_upgrade(target.addr, limits.connect_timeout).await {
            Ok(sender) => sender,
            Err(e) => return Err((e.into(), Some(request))),
        };
        return match sender.send_request(request).await {
            Ok(response) => Ok((response, sender)),
            Err(e) => Err((e.into(), None)),
        };
    }
    if let Some(mut sender) = target.pool().take().await {
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, sender)),
            Err(mut e) => match e.take_message() {
                // The target closed this idle connection as we picked it,
                // before the request went out: use a new connection.
                Some(unsent) => request = unsent,
                None => return Err((e.into_error().into(), None)),
            },
        }
    }
    let mut sender = match connect(target.addr, limits.connect_timeout).await {
        Ok(sender) => sender,
        Err(e) => return Err((e.into(), Some(request))),
    };
    match sender.send_request(request).await {
        Ok(response) => Ok((response, sender)),
        Err(e) => Err((e.into(), None)),
    }
}

/// The request as sent upstream: origin-form URI, hop-by-hop headers
/// removed, the forwarded headers and the request id set (see `edge`).
fn upstream_request(
    parts: http::request::Parts,
    body: Inbound,
    client: &Client,
    host_header: Option<&HeaderValue>,
    request_id: &HeaderValue,
) -> Request<Inbound> {
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
    edge::forwarded_headers(headers, client, host_header, request_id);
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

/// A response body that keeps its request counted as in flight on the
/// target until the last byte has gone (or the client went away), and gives
/// the upstream connection back to the pool once the body was read whole.
pub(crate) struct Tracked {
    inner: Incoming,
    sender: Option<Sender>,
    in_flight: InFlight,
    /// Body bytes passed on so far, for the access log.
    sent: u64,
    /// Written when the body ends (or the client goes): the proxy, the
    /// request and its status.
    log: Option<(Arc<Proxy>, Entry, u16)>,
    /// For an event stream: counted as long-lived, and ended early when
    /// its target's drain time is over.
    stream: Option<(LongLived, CutSignal)>,
}

type CutSignal = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

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
        self.in_flight.target().add_bytes(self.sent);
        if let Some((proxy, entry, status)) = self.log.take() {
            proxy.log(&entry, status, self.sent, None);
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
        if let Some((_, cut)) = &mut self.stream {
            if cut.as_mut().poll(cx).is_ready() {
                // Ended here: the client (EventSource) reconnects, to the
                // release live now.
                self.stream = None;
                return Poll::Ready(None);
            }
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.recycle(),
            Poll::Ready(Some(Ok(frame))) => {
                self.sent += frame.data_ref().map(|d| d.len() as u64).unwrap_or(0);
            }
            _ => {}
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
