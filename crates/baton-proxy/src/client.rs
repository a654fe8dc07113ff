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
use crate::tls::{CertificateSpec, Challenge};

/// How long an ordinary control request may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

pub struct ProxyClient {
    socket: PathBuf,
    routes: Mutex<BTreeMap<RouteKey, RouteSpec>>,
    /// The certificates and challenges last given, for a proxy started
    /// afresh.
    certificates: Mutex<Vec<CertificateSpec>>,
    challenges: Mutex<Vec<Challenge>>,
    /// Told whenever the table changes (the certificates follow the hosts).
    changed: tokio::sync::Notify,
}

impl ProxyClient {
    pub fn new(socket: &Path) -> ProxyClient {
        ProxyClient {
            socket: socket.to_path_buf(),
            routes: Mutex::new(BTreeMap::new()),
            certificates: Mutex::new(Vec::new()),
            challenges: Mutex::new(Vec::new()),
            changed: tokio::sync::Notify::new(),
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
                self.changed.notify_waiters();
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
                self.changed.notify_waiters();
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
        {
            let mut mirror = self.mirror();
            mirror.clear();
            for spec in specs {
                if !refused.iter().any(|(key, _)| *key == spec.key) {
                    mirror.insert(spec.key.clone(), spec);
                }
            }
        }
        self.changed.notify_waiters();
        Ok(refused)
    }

    /// Gives a proxy started afresh the table, certificates and challenges
    /// this control plane set.
    pub async fn resend(&self) -> Result<(), ProxyError> {
        let specs: Vec<RouteSpec> = self.mirror().values().cloned().collect();
        let request = Request::ReplaceRoutes { routes: specs };
        match self.ask(&request, ANSWER_WITHIN).await? {
            Reply::Done | Reply::Refused { .. } => {}
            other => return Err(unexpected(other)),
        }
        let certificates = lock(&self.certificates).clone();
        let challenges = lock(&self.challenges).clone();
        for request in [
            Request::SetCertificates { certificates },
            Request::SetChallenges { challenges },
        ] {
            match self.ask(&request, ANSWER_WITHIN).await? {
                Reply::Done | Reply::NotServed { .. } => {}
                other => return Err(unexpected(other)),
            }
        }
        Ok(())
    }

    /// Serves exactly these certificates over HTTPS; returns those the
    /// proxy refused (by name, with why): the others are served.
    pub async fn set_certificates(
        &self,
        certificates: Vec<CertificateSpec>,
    ) -> Result<Vec<(String, String)>, ProxyError> {
        let request = Request::SetCertificates {
            certificates: certificates.clone(),
        };
        let refused = served(self.ask(&request, ANSWER_WITHIN).await?)?;
        *lock(&self.certificates) = certificates;
        Ok(refused)
    }

    /// Answers exactly these ACME challenges.
    pub async fn set_challenges(&self, challenges: Vec<Challenge>) -> Result<(), ProxyError> {
        let request = Request::SetChallenges {
            challenges: challenges.clone(),
        };
        let refused = served(self.ask(&request, ANSWER_WITHIN).await?)?;
        *lock(&self.challenges) = challenges;
        match refused.first() {
            None => Ok(()),
            Some((name, why)) => Err(ProxyError::Control(format!(
                "the proxy cannot answer the challenge for {name}: {why}"
            ))),
        }
    }

    /// Every route as this control plane last set it, in key order.
    pub fn routes(&self) -> Vec<RouteSpec> {
        self.mirror().values().cloned().collect()
    }

    /// Completes at the next change to the table (once enabled or polled).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the proxy refused of certificates or challenges it was given.
fn served(reply: Reply) -> Result<Vec<(String, String)>, ProxyError> {
    match reply {
        Reply::Done => Ok(Vec::new()),
        Reply::NotServed { refused } => Ok(refused),
        other => Err(unexpected(other)),
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
