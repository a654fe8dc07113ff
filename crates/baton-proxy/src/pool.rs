//! Upstream connections, pooled per target. An HTTP/1 connection carries one
//! request at a time, so a connection goes back to its target's pool only
//! once the response body has been read to the end; a connection whose
//! response was cut short is closed instead. Dropping a target drops its
//! idle connections with it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

/// Idle connections kept per target; more are closed when returned.
const MAX_IDLE: usize = 1024;
/// A connection idle longer than this is not reused. Apps close idle
/// keep-alive connections after a timeout of their own (gunicorn: 2 s, Node:
/// 5 s); reusing one just as the app closes it would fail a request that had
/// already been sent. Staying well under those timeouts avoids the race.
const MAX_IDLE_TIME: Duration = Duration::from_secs(1);
pub(crate) type Sender = SendRequest<crate::inbound::Inbound>;

#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle_count())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("cannot connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

impl Pool {
    /// An idle connection that is still open, if there is one.
    pub async fn take(&self) -> Option<Sender> {
        loop {
            let (mut sender, since) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if sender.is_closed() || since.elapsed() > MAX_IDLE_TIME {
                continue;
            }
            if sender.is_ready() {
                return Some(sender);
            }
            // A connection comes back as soon as its last response ended; its
            // task may need a moment to notice.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    pub fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // The stack's bottom is its oldest entry: when that one is stale,
        // sweep out every stale one (closing those connections).
        if idle
            .first()
            .is_some_and(|(_, since)| now.duration_since(*since) > MAX_IDLE_TIME)
        {
            idle.retain(|(_, since)| now.duration_since(*since) <= MAX_IDLE_TIME);
        }
        if idle.len() < MAX_IDLE {
            idle.push((sender, now));
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Opens a new connection to `addr`, waiting at most `timeout`.
pub(crate) async fn connect(
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Result<Sender, ConnectError> {
    let (sender, connection) = handshake(addr, timeout).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// Opens a connection for one request that may switch protocols (a
/// WebSocket): never pooled, and handed over whole on a 101.
pub(crate) async fn connect_for_upgrade(
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Result<Sender, ConnectError> {
    let (sender, connection) = handshake(addr, timeout).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

type Connection = http1::Connection<TokioIo<tokio::net::TcpStream>, crate::inbound::Inbound>;

async fn handshake(
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Result<(Sender, Connection), ConnectError> {
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))??;
    stream.set_nodelay(true)?;
    Ok(http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?)
}
