//! The edge of the API listener, in front of the API, the dashboard and the
//! flag clients alike: which host names it answers to, and who the client
//! really is.
//!
//! - A request whose `Host` is not one of the server's names is refused
//!   (421), so a web page on a name that resolves to this machine (DNS
//!   rebinding) cannot use a browser to talk to the API. IP literals and
//!   `localhost` (and `*.localhost`) are always the server's names: no other
//!   site can own them. A request with two `Host` headers is refused (400).
//! - The client's address is the connection's peer, unless that peer is a
//!   configured trusted proxy: then it is the last address in
//!   `X-Forwarded-For` that is not itself a trusted proxy. The
//!   `ConnectInfo` every handler reads is replaced with it, so the audit
//!   log and the login throttle see the real client.
//!
//! It never authenticates anyone: that is `auth::require`'s job.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// How the API listener is reached.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    /// Host names the server answers to besides IP literals and localhost
    /// (lower case, without port).
    pub hosts: Vec<String>,
    /// Proxies (address or CIDR) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Edge {
    /// Whether `host` (a `Host` header value, maybe with a port) names
    /// this server.
    pub fn answers_to(&self, host: &str) -> bool {
        let name = strip_port(host).to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        name == "localhost"
            || name.ends_with(".localhost")
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`: `peer` itself unless it is a trusted
    /// proxy, else the nearest untrusted hop of `X-Forwarded-For`.
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops = forwarded_for
            .iter()
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(ip) = strip_port(hop).parse::<IpAddr>() else {
                // A hop we cannot read: stop at the last one we trust.
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// `host:port`, `[v6]:port`, `[v6]` or `host` → the host part.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // One colon: a port. More: a bare IPv6 address.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

pub async fn guard(State(edge): State<Arc<Edge>>, mut request: Request, next: Next) -> Response {
    let hosts: Vec<_> = request.headers().get_all(header::HOST).iter().collect();
    if hosts.len() > 1 {
        return ApiError::bad_request("the request has more than one Host header").into_response();
    }
    let host = hosts
        .first()
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_string();
    if !edge.answers_to(&host) {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this Baton server does not answer to the host name {:?}; if it is one of its names, start the server with --api-host {}",
                host,
                strip_port(&host)
            ),
        )
        .into_response();
    }
    if let Some(ConnectInfo(peer)) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
    {
        let forwarded: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let client = edge.client(peer.ip(), &forwarded);
        if client != peer.ip() {
            request
                .extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(client, 0)));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge() -> Edge {
        Edge {
            hosts: vec!["baton.example.com".into()],
            trusted_proxies: vec![
                "127.0.0.1/32".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn only_the_servers_own_names_are_answered() {
        let edge = edge();
        for ok in [
            "127.0.0.1:7070",
            "[::1]:7070",
            "localhost",
            "LOCALHOST:7070",
            "app.localhost:7070",
            "baton.example.com",
            "Baton.Example.com.:443",
            "192.0.2.7",
        ] {
            assert!(edge.answers_to(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:7070",
            "localhost.evil.example",
            "",
            "baton.example.com.evil",
        ] {
            assert!(!edge.answers_to(refused), "{refused}");
        }
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_hop() {
        let edge = edge();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Not from a trusted proxy: its own claim is ignored.
        assert_eq!(
            edge.client(ip("192.0.2.1"), &["203.0.113.9"]),
            ip("192.0.2.1")
        );
        // From a trusted proxy: the hop it saw.
        assert_eq!(
            edge.client(ip("127.0.0.1"), &["203.0.113.9"]),
            ip("203.0.113.9")
        );
        // A client's forged first hop does not win over what the proxies saw.
        assert_eq!(
            edge.client(ip("127.0.0.1"), &["6.6.6.6, 203.0.113.9", "10.1.1.1"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            edge.client(ip("::ffff:127.0.0.1"), &["203.0.113.9"]),
            ip("203.0.113.9")
        );
        // No header: the proxy itself.
        assert_eq!(edge.client(ip("127.0.0.1"), &[]), ip("127.0.0.1"));
    }
}
