//! The control plane's handle on the proxy process: every change to the
//! table goes over the control socket, and a copy of what was asked is
//! kept here, so that a proxy started afresh (after a crash of its own)
//! can be given the whole table again, and so that reading a route never
//! waits on another process.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::UnixStream;

use crate::control::{ask, Line, ProxyInfo, Reply, Request};
use crate::route::{RouteKey, RouteSpec};
use crate::server::ProxyError;
use crate::target::TargetStats;

/// How long an ordinary control request may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

pub struct ProxyClient {
    socket: PathBuf,
    routes: Mutex<BTreeMap<RouteKey, RouteSpec>>,
}

impl ProxyClient {
    pub fn new(socket: &Path) -> ProxyClient {
        ProxyClient {
            socket: socket.to_path_buf(),
            routes: Mutex::new(BTreeMap::new()),
        }
    }

    fn unreachable(&self, e: std::io::Error) -> ProxyError {
        ProxyError::Control(format!(
            "the proxy does not answer on {} ({e}); the server starts it again, try again in a moment",
            self.socket.display()
        ))
    }

    async fn ask(&self, request: &Request, within: Duration) -> Result<Reply, ProxyError> {
        match ask(&self.socket, request, within).await {
            Ok(Reply::Error { message }) => {
                Err(ProxyError::Control(format!("the proxy: {message}")))
            }
            Ok(reply) => Ok(reply),
            Err(e) => Err(self.unreachable(e)),
        }
    }

    fn mirror(&self) -> std::sync::MutexGuard<'_, BTreeMap<RouteKey, RouteSpec>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn hello(&self) -> Result<ProxyInfo, ProxyError> {
        match self.ask(&Request::Hello, ANSWER_WITHIN).await? {
            Reply::Hello { info } => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Adds or replaces the route of `spec.key`, atomically for all its hosts.
    pub async fn set_route(&self, spec: RouteSpec) -> Result<(), ProxyError> {
        let request = Request::SetRoute {
            spec: Box::new(spec.clone()),
        };
        match self.ask(&request, ANSWER_WITHIN).await? {
            Reply::Done => {
                self.mirror().insert(spec.key.clone(), spec);
                Ok(())
            }
            Reply::Refused { refused } => Err(ProxyError::Control(
                refused
                    .into_iter()
                    .map(|(_, why)| why)
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
            other => Err(unexpected(other)),
        }
    }

    pub async fn remove_route(&self, key: &RouteKey) -> Result<(), ProxyError> {
        let request = Request::RemoveRoute { key: key.clone() };
        match self.ask(&request, ANSWER_WITHIN).await? {
            Reply::Done => {
                self.mirror().remove(key);
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }

    /// Replaces the proxy's whole table; returns the routes it refused
    /// (a host another route has), with why.
    pub async fn replace_routes(
        &self,
        specs: Vec<RouteSpec>,
    ) -> Result<Vec<(RouteKey, String)>, ProxyError> {
        let request = Request::ReplaceRoutes {
            routes: specs.clone(),
        };
        let refused = match self.ask(&request, ANSWER_WITHIN).await? {
            Reply::Done => Vec::new(),
            Reply::Refused { refused } => refused,
            other => return Err(unexpected(other)),
        };
        let mut mirror = self.mirror();
        mirror.clear();
        for spec in specs {
            if !refused.iter().any(|(key, _)| *key == spec.key) {
                mirror.insert(spec.key.clone(), spec);
            }
        }
        Ok(refused)
    }

    /// Gives a proxy started afresh the table this control plane set.
    pub async fn resend(&self) -> Result<(), ProxyError> {
        let specs: Vec<RouteSpec> = self.mirror().values().cloned().collect();
        let request = Request::ReplaceRoutes { routes: specs };
        match self.ask(&request, ANSWER_WITHIN).await? {
            Reply::Done | Reply::Refused { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Makes new requests for `key` wait until the hold is released or
    /// dropped (or this process dies: the proxy then releases it).
    pub async fn hold(&self, key: &RouteKey) -> Result<Hold, ProxyError> {
        let held = async {
            let mut line = Line::new(UnixStream::connect(&self.socket).await?);
            line.send(&Request::Hold { key: key.clone() }).await?;
            match line.receive::<Reply>().await? {
                Some(Reply::Held) => Ok(Ok(Hold { line })),
                other => Ok(Err(unexpected_reply(other))),
            }
        };
        match tokio::time::timeout(ANSWER_WITHIN, held).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Err(self.unreachable(e)),
            Err(_) => Err(self.unreachable(std::io::ErrorKind::TimedOut.into())),
        }
    }

    /// The counters of these targets the proxy knows; none if it cannot
    /// be asked (status must not fail because the proxy is restarting).
    pub async fn stats(&self, targets: &[i64]) -> HashMap<i64, TargetStats> {
        let request = Request::Stats {
            targets: targets.to_vec(),
        };
        match self.ask(&request, ANSWER_WITHIN).await {
            Ok(Reply::Stats { stats }) => stats.into_iter().collect(),
            _ => HashMap::new(),
        }
    }

    /// Waits until no request is in flight on `target`, or `timeout`
    /// passes. Returns the number still in flight (0 when drained).
    pub async fn drain(&self, target: i64, timeout: Duration) -> Result<usize, ProxyError> {
        let request = Request::Drain {
            target,
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.ask(&request, timeout + ANSWER_WITHIN).await? {
            Reply::Drained { left } => Ok(left),
            other => Err(unexpected(other)),
        }
    }

    /// Closes the WebSockets and event streams still open on `target`;
    /// returns how many were open.
    pub async fn cut_long_lived(&self, target: i64) -> Result<usize, ProxyError> {
        match self.ask(&Request::Cut { target }, ANSWER_WITHIN).await? {
            Reply::Cut { closed } => Ok(closed),
            other => Err(unexpected(other)),
        }
    }

    /// The route of `key` as this control plane last set it.
    pub fn route(&self, key: &RouteKey) -> Option<RouteSpec> {
        self.mirror().get(key).cloned()
    }

    /// Which route answers for `host`, if any.
    pub fn owner(&self, host: &str) -> Option<RouteKey> {
        self.mirror()
            .values()
            .find(|spec| {
                spec.hosts
                    .iter()
                    .chain(&spec.preview_hosts)
                    .any(|h| h == host)
            })
            .map(|spec| spec.key.clone())
    }
}

/// A route held by the proxy for as long as this lives.
pub struct Hold {
    line: Line,
}

impl Hold {
    /// Releases the route; returns how many requests were waiting on it.
    pub async fn release(mut self) -> usize {
        let released = async {
            self.line.send(&Request::Release).await.ok()?;
            match self.line.receive::<Reply>().await.ok()? {
                Some(Reply::Released { waiting }) => Some(waiting),
                _ => None,
            }
        };
        // Whatever happens, dropping the connection releases the hold too.
        tokio::time::timeout(ANSWER_WITHIN, released)
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

fn unexpected(reply: Reply) -> ProxyError {
    ProxyError::Control(format!(
        "the proxy answered something unexpected: {reply:?}"
    ))
}

fn unexpected_reply(reply: Option<Reply>) -> ProxyError {
    match reply {
        Some(Reply::Error { message }) => ProxyError::Control(format!("the proxy: {message}")),
        Some(other) => unexpected(other),
        None => ProxyError::Control("the proxy closed the connection without answering".into()),
    }
}
