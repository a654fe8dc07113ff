//! What the proxy answers itself when a request cannot reach an app: one
//! domain failure each ([`Refusal`]), turned into a response in one place.
//! Browsers (`Accept: text/html`) get a short HTML page, API clients
//! (`Accept: application/json`) a JSON object, and anything else (curl,
//! scripts) one line of text; all carry the request id, so a user's report
//! can be matched with the access log.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::edge::X_REQUEST_ID;
use crate::forward::DownBody;

/// Why the proxy answered instead of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No app answers for this host.
    UnknownHost { host: String },
    /// The app has no live release (never deployed, or stopped).
    NoLiveTarget { route: String },
    /// The request is malformed (two Host headers, …).
    Malformed { reason: &'static str },
    /// The request body is larger than the app accepts.
    BodyTooLarge { limit: u64 },
    /// The client stopped sending its body.
    BodyStalled,
    /// The target refused the connection or broke it.
    BadGateway { target: String, why: String },
    /// The target accepted but did not answer in time.
    GatewayTimeout {
        target: String,
        after: std::time::Duration,
    },
    /// The app is in maintenance (`baton maintenance on`), with its message.
    Maintenance { message: String },
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::UnknownHost { .. } => StatusCode::NOT_FOUND,
            Refusal::NoLiveTarget { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Malformed { .. } => StatusCode::BAD_REQUEST,
            Refusal::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyStalled => StatusCode::REQUEST_TIMEOUT,
            Refusal::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Refusal::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Maintenance { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable code for scripts and the access log.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownHost { .. } => "unknown_host",
            Refusal::NoLiveTarget { .. } => "no_live_release",
            Refusal::Malformed { .. } => "bad_request",
            Refusal::BodyTooLarge { .. } => "body_too_large",
            Refusal::BodyStalled => "body_timeout",
            Refusal::BadGateway { .. } => "bad_gateway",
            Refusal::GatewayTimeout { .. } => "gateway_timeout",
            Refusal::Maintenance { .. } => "maintenance",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::UnknownHost { host } => format!("no app answers for host {host:?}"),
            Refusal::NoLiveTarget { route } => {
                format!("{route} has no live release: it is stopped or not deployed yet")
            }
            Refusal::Malformed { reason } => format!("bad request: {reason}"),
            Refusal::BodyTooLarge { limit } => {
                format!("the request body is larger than this app accepts ({limit} bytes)")
            }
            Refusal::BodyStalled => "the request body stopped arriving".into(),
            Refusal::BadGateway { target, why } => format!("{target} did not answer: {why}"),
            Refusal::GatewayTimeout { target, after } => {
                format!("{target} did not answer within {after:?}")
            }
            Refusal::Maintenance { message } => message.clone(),
        }
    }

    /// Whether the connection should close after the answer (the rest of
    /// the request may still be on its way and cannot be trusted).
    pub fn closes(&self) -> bool {
        matches!(
            self,
            Refusal::Malformed { .. } | Refusal::BodyTooLarge { .. } | Refusal::BodyStalled
        )
    }
}

/// The proxy's answer for `refusal`, shaped for whoever asked.
pub(crate) fn respond(
    refusal: &Refusal,
    request: &HeaderMap,
    request_id: &HeaderValue,
) -> Response<DownBody> {
    let status = refusal.status();
    let message = refusal.message();
    let id = request_id.to_str().unwrap_or("-");
    let accept = request
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (content_type, body) = if accept.contains("text/html") {
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\n<body style=\"font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto; padding: 0 1rem\">\n<h1>{code} {reason}</h1>\n<p>{text}</p>\n<p style=\"color: #666\">Request id <code>{id}</code></p>\n</body></html>\n",
                code = status.as_u16(),
                reason = status.canonical_reason().unwrap_or(""),
                text = escape(&message),
                id = escape(id),
            ),
        )
    } else if accept.contains("json") {
        (
            "application/json",
            serde_json::json!({
                "error": {"code": refusal.code(), "message": message, "request_id": id}
            })
            .to_string()
                + "\n",
        )
    } else {
        (
            "text/plain; charset=utf-8",
            format!("baton: {message} (request id {id})\n"),
        )
    };
    let mut response = Response::new(DownBody::Message(Some(Bytes::from(body))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(X_REQUEST_ID, request_id.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if matches!(
        refusal,
        Refusal::NoLiveTarget { .. } | Refusal::Maintenance { .. }
    ) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    }
    if refusal.closes() {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(response: Response<DownBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn browsers_get_html_api_clients_json_and_scripts_text_all_with_the_request_id() {
        let refusal = Refusal::UnknownHost {
            host: "<nope>.example".into(),
        };
        let id = HeaderValue::from_static("req-1");
        let mut browser = HeaderMap::new();
        browser.insert(header::ACCEPT, HeaderValue::from_static("text/html,*/*"));
        let page = respond(&refusal, &browser, &id);
        assert_eq!(page.status(), 404);
        assert_eq!(page.headers()["x-request-id"], "req-1");
        let html = body(page).await;
        assert!(html.contains("<h1>404 Not Found</h1>"), "{html}");
        assert!(
            html.contains("&lt;nope&gt;") && html.contains("req-1"),
            "{html}"
        );

        let mut client = HeaderMap::new();
        client.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let api = respond(&refusal, &client, &id);
        assert_eq!(api.headers()["content-type"], "application/json");
        let json: serde_json::Value = serde_json::from_str(&body(api).await).unwrap();
        assert_eq!(json["error"]["code"], "unknown_host");
        assert_eq!(json["error"]["request_id"], "req-1");

        let curl = body(respond(&refusal, &HeaderMap::new(), &id)).await;
        assert_eq!(
            curl,
            "baton: no app answers for host \"<nope>.example\" (request id req-1)\n"
        );
    }

    #[test]
    fn each_refusal_has_its_status() {
        let target = || "target 3".to_string();
        let cases = [
            (Refusal::NoLiveTarget { route: "a".into() }, 503),
            (Refusal::Malformed { reason: "x" }, 400),
            (Refusal::BodyTooLarge { limit: 1 }, 413),
            (Refusal::BodyStalled, 408),
            (
                Refusal::BadGateway {
                    target: target(),
                    why: "refused".into(),
                },
                502,
            ),
            (
                Refusal::GatewayTimeout {
                    target: target(),
                    after: std::time::Duration::from_secs(1),
                },
                504,
            ),
        ];
        for (refusal, status) in cases {
            assert_eq!(refusal.status().as_u16(), status, "{refusal:?}");
        }
    }
}
