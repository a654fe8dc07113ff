//! Protocol upgrades (WebSocket, and any other `101 Switching Protocols`):
//! the request goes to the target on a connection of its own, its
//! `Upgrade` header kept; on a 101 the client's connection and the
//! target's are joined byte for byte for as long as either keeps it open.
//! A tunnel counts as a request in flight on its target, so a deploy's
//! drain waits for it (up to the drain timeout), and as an open connection
//! of its worker, so a stopping proxy lets it run (up to its stop timeout).

use http::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::server::OpenGuard;
use crate::target::InFlight;

/// The protocol a request asks to switch to: its `Upgrade` header, when its
/// `Connection` header lists `upgrade` (HTTP/1.1 only).
pub(crate) fn requested(version: http::Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != http::Version::HTTP_11 {
        return None;
    }
    let upgrade = headers.get(header::UPGRADE)?;
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        .then(|| upgrade.clone())
}

/// Puts back the two headers an upgrade needs, which hop-by-hop stripping
/// took out (they are meant for this hop and the next alike).
pub(crate) fn ask_upstream(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Joins the client and the target once both sides have switched.
pub(crate) fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    in_flight: InFlight,
    open: Option<OpenGuard>,
) {
    let (long_lived, mut cut) = in_flight.target().long_lived();
    tokio::spawn(async move {
        let _counted = (in_flight, open, long_lived);
        match tokio::try_join!(client, upstream) {
            Ok((client, upstream)) => {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                tokio::select! {
                    copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                        if let Err(e) = copied {
                            tracing::debug!(error = %e, "upgraded connection ended with an error");
                        }
                    }
                    // The target's drain time is over: both sides close.
                    _ = cut.wait_for(|cut| *cut) => {}
                }
            }
            Err(e) => tracing::debug!(error = %e, "a side of an upgrade never switched"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_needs_both_headers_and_http_1_1() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(requested(http::Version::HTTP_11, &h), None);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            requested(http::Version::HTTP_11, &h),
            Some(HeaderValue::from_static("websocket"))
        );
        assert_eq!(requested(http::Version::HTTP_10, &h), None);
    }
}
