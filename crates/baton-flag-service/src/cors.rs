//! CORS for the flag client endpoints, so a browser OpenFeature provider
//! (the web SDK with OFREP) on a page of an allowed origin can call them.
//! Which origins are allowed is a property of each API key, set when it is
//! created. This module owns reading an origin, answering preflights and
//! adding the CORS headers to answers; it must never let an origin read an
//! answer its key does not allow (such an answer carries no CORS header, so
//! the browser withholds it), and never decides anything else about a
//! request.
//!
//! A preflight (`OPTIONS` with `Access-Control-Request-Method`) carries no
//! `Authorization`, so it is answered for any origin that some active key
//! allows; the request that follows is then checked against its own key.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::ofrep::presented_key;
use crate::FlagService;

/// What a browser may send: the key, the JSON body and the bulk ETag.
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, If-None-Match, X-API-Key";
const ALLOWED_METHODS: &str = "GET, POST, OPTIONS";
/// How long a browser may reuse a preflight's answer, in seconds; each
/// real request is still checked against its key.
const MAX_AGE: &str = "600";

/// Reads a web origin as a browser sends it in `Origin`: `http` or `https`,
/// a host, an optional port; no path. Gives it back in the browser's form
/// (lower case, without the scheme's default port), so it can be compared
/// with `Origin` byte for byte. The error says what to write instead.
pub fn web_origin(text: &str) -> Result<String, String> {
    let example =
        "write it as a browser sends it, e.g. https://shop.example or http://localhost:3000";
    let trimmed = text.trim();
    let (scheme, rest) = trimmed
        .split_once("://")
        .ok_or_else(|| format!("{text:?} is not a web origin: {example}"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => {
            return Err(format!(
                "{text:?} is not a web origin: the scheme must be http or https; {example}"
            ))
        }
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{text:?} has a path, query or user: an origin is only scheme, host and port; {example}"
        ));
    }
    // `[::1]:8080`, `[::1]`, `host:8080` or `host`.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let host = host.to_ascii_lowercase();
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if !host_ok {
        return Err(format!("{text:?} does not name a host; {example}"));
    }
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(n) if n > 0 && port.bytes().all(|b| b.is_ascii_digit()) => {
                (n != default_port).then(|| n.to_string())
            }
            _ => return Err(format!("{text:?} has no valid port; {example}")),
        },
    };
    Ok(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

fn origin_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// Adds `Vary: Origin` (and more) without dropping what is there.
fn vary(headers: &mut HeaderMap, on: &'static str) {
    headers.append(header::VARY, HeaderValue::from_static(on));
}

/// The middleware: answers preflights, and marks answers readable by the
/// origin when the request's key allows it.
pub(crate) async fn cors(
    State(service): State<Arc<FlagService>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = origin_of(request.headers()).map(str::to_owned);
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        return answer_preflight(&service, origin.as_deref());
    }
    let allowed = origin.as_deref().is_some_and(|origin| {
        presented_key(request.headers())
            .and_then(|key| {
                service
                    .snapshot()
                    .key(key)
                    .map(|scope| scope.allows_origin(origin))
            })
            .unwrap_or(false)
    });
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    vary(headers, "Origin");
    if let (true, Some(origin)) = (allowed, origin) {
        if let Ok(value) = HeaderValue::from_str(&origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("ETag"),
            );
        }
    }
    response
}

fn answer_preflight(service: &FlagService, origin: Option<&str>) -> Response {
    let allowed = origin
        .filter(|origin| service.snapshot().allows_origin(origin))
        .and_then(|origin| HeaderValue::from_str(origin).ok());
    let mut response = match allowed {
        Some(origin) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOWED_METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOWED_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE),
            );
            response
        }
        // No CORS header: the browser refuses the page's request. The body
        // says why, for whoever reads the network panel.
        None => (
            StatusCode::FORBIDDEN,
            Json(json!({"errorDetails": format!(
                "origin {} may not use this server's flag endpoints: create an API key for it with \
                 `baton flags keys create APP NAME --origin ORIGIN`",
                origin.unwrap_or("(none)")
            )})),
        )
            .into_response(),
    };
    let headers = response.headers_mut();
    vary(headers, "Origin");
    vary(headers, "Access-Control-Request-Method");
    vary(headers, "Access-Control-Request-Headers");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_read_in_the_form_browsers_send() {
        let ok = |text: &str| web_origin(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok("https://shop.example"), "https://shop.example");
        assert_eq!(ok(" HTTPS://Shop.Example/ "), "https://shop.example");
        assert_eq!(ok("https://shop.example:443"), "https://shop.example");
        assert_eq!(ok("http://shop.example:80"), "http://shop.example");
        assert_eq!(ok("https://shop.example:8443"), "https://shop.example:8443");
        assert_eq!(ok("https://shop.example:0443"), "https://shop.example");
        assert_eq!(ok("http://localhost:3000"), "http://localhost:3000");
        assert_eq!(ok("http://127.0.0.1:3000"), "http://127.0.0.1:3000");
        assert_eq!(ok("http://[::1]:3000"), "http://[::1]:3000");
        assert_eq!(ok("http://[::1]"), "http://[::1]");
    }

    #[test]
    fn what_is_not_an_origin_is_refused_with_the_way_to_write_one() {
        for (bad, says) in [
            ("shop.example", "https://shop.example"),
            ("ftp://shop.example", "http or https"),
            ("https://shop.example/app", "path"),
            ("https://user@shop.example", "path, query or user"),
            ("https://", "host"),
            ("https://shop..example", "host"),
            ("https://shop.example:0", "port"),
            ("https://shop.example:99999", "port"),
            ("https://shop.example:+80", "port"),
            ("https://[nope]:80", "host"),
            ("*", "https://shop.example"),
        ] {
            let error = web_origin(bad).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
