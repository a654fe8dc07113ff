//! The request path on pingora: route by `Host` through the current table,
//! wait while the host is held, count the request in flight on its target
//! until pingora drops the context, and add the forwarding headers Baton's
//! proxy adds. It never changes the table; `reload` does.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

use crate::routes::{normalise_host, InFlight, State};

/// Requests with this Host get the spike's counters as JSON instead of a route.
pub const STATUS_HOST: &str = "spike.status";

pub struct Spike {
    pub state: Arc<State>,
    pub hold_timeout: Duration,
}

#[derive(Default)]
pub struct Ctx {
    in_flight: Option<InFlight>,
}

fn request_host(session: &Session) -> Option<&str> {
    let req = session.req_header();
    // HTTP/2 carries the host in :authority (the URI), HTTP/1.1 in Host.
    match req.headers.get(http::header::HOST) {
        Some(v) => v.to_str().ok(),
        None => req.uri.host(),
    }
}

async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: String,
) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(2))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(true)
}

#[async_trait]
impl ProxyHttp for Spike {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let Some(host) = request_host(session).map(|h| normalise_host(h).into_owned()) else {
            return respond(session, 400, "text/plain", "no Host header\n".into()).await;
        };
        if host == STATUS_HOST {
            let body = self.state.status_json() + "\n";
            return respond(session, 200, "application/json", body).await;
        }
        let mut waited = false;
        loop {
            let table = self.state.table.load();
            let Some(route) = table.resolve(&host) else {
                return respond(
                    session,
                    404,
                    "text/plain",
                    format!("no app answers for {host}\n"),
                )
                .await;
            };
            if route.gate.is_held() && !waited {
                let gate = Arc::clone(&route.gate);
                drop(table);
                gate.wait(self.hold_timeout).await;
                // Read the table again: the release is usually a new target.
                waited = true;
                continue;
            }
            ctx.in_flight = Some(route.target.begin());
            return Ok(false);
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let target = ctx
            .in_flight
            .as_ref()
            .map(|f| f.target())
            .ok_or_else(|| Error::explain(InternalError, "upstream_peer without a route"))?;
        Ok(Box::new(target.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            let value = match upstream
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip.to_string(),
            };
            upstream.insert_header("x-forwarded-for", value)?;
        }
        if !upstream.headers.contains_key("x-forwarded-proto") {
            upstream.insert_header("x-forwarded-proto", "http")?;
        }
        if !upstream.headers.contains_key("x-forwarded-host") {
            if let Some(host) = upstream.headers.get(http::header::HOST).cloned() {
                upstream.insert_header("x-forwarded-host", host)?;
            }
        }
        Ok(())
    }
}
