//! A thin wrapper around pingora's `HttpProxy` that changes one thing at
//! shutdown. Stock pingora, once a process stops accepting (after a graceful
//! upgrade hands its sockets over, or on SIGTERM), at once drops every
//! connection parked waiting for its next request: idle keep-alive
//! connections, and freshly accepted ones whose request has not been read
//! yet. A client that had just sent a request on one gets a reset. Here the
//! drop waits `linger`: in that time each connection that sends a request is
//! served with `Connection: close` (pingora does that once shutdown is
//! signalled) and the client reconnects to the new process. `linger` must
//! stay below the grace period, or the runtime ends first.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::http::ServerSession;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use crate::proxy::Spike;

pub struct Lingering {
    pub inner: Arc<HttpProxy<Spike>>,
    pub linger: Duration,
}

#[async_trait]
impl HttpServerApp for Lingering {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.inner.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        tokio::time::sleep(self.linger).await;
        self.inner.http_cleanup().await;
    }
}
