//! HTTPS certificates for the apps' hosts. An app's `[tls]` says where its
//! certificate comes from: PEM files on the server, read again whenever
//! they change, or a CA over ACME (RFC 8555), issued by HTTP-01 or
//! TLS-ALPN-01 and renewed once a third of its life is left, retried with
//! backoff when it fails. Certificates live in the store and are given to
//! the proxy, which serves them by SNI; the proxy answers the challenges
//! the CA checks. A failed attempt never takes anything away: the app stays
//! served on its previous certificate, or over plain HTTP, and the failure
//! is in `baton certs`, the app's events and its notifications.
//!
//! The route table (as the control plane last gave it to the proxy) says
//! which app wants what for which hosts: this module follows it, and never
//! decides routes itself.

mod acme;
mod describe;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_proxy::{CertificateSpec, ProxyClient, RouteKey, RouteSpec, TlsSource};
use baton_store::{now_ms, CertificateRecord, EventKind, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use describe::{covers, Described};

/// A certificate as the API and `baton certs` show it: everything but its
/// chain and its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateView {
    pub app: String,
    pub environment: String,
    /// `acme` or `files`.
    pub source: String,
    pub hosts: Vec<String>,
    /// Whether a certificate is served now.
    pub served: bool,
    pub issuer: Option<String>,
    /// Milliseconds since the epoch, as every time in the store.
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub renewed_at: Option<i64>,
    pub last_error: Option<String>,
    pub failed_at: Option<i64>,
    pub next_attempt: Option<i64>,
}

impl From<CertificateRecord> for CertificateView {
    fn from(c: CertificateRecord) -> CertificateView {
        CertificateView {
            served: c.chain_pem.is_some() && c.key_pem.is_some(),
            app: c.app,
            environment: c.environment,
            source: c.source,
            hosts: c.hosts,
            issuer: c.issuer,
            not_before: c.not_before,
            not_after: c.not_after,
            renewed_at: c.renewed_at,
            last_error: c.last_error,
            failed_at: c.failed_at,
            next_attempt: c.next_attempt,
        }
    }
}

/// Where certificates are issued over ACME.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The CA's directory URL (Let's Encrypt's, or any RFC 8555 CA's).
    pub directory: String,
    /// An address the CA may write to about expiring certificates.
    pub contact: Option<String>,
    /// A PEM root the CA's own HTTPS is trusted by, instead of the
    /// system's (a private or test CA).
    pub ca_file: Option<PathBuf>,
}

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How long one issuance may take, challenges and all.
const ISSUE_WITHIN: Duration = Duration::from_secs(180);
/// Files are looked at again this often (a renewed file is swapped in).
const FILES_EVERY: Duration = Duration::from_secs(30);
/// The first retry after a failure; doubled each time, up to `BACKOFF_MAX`.
const BACKOFF_FIRST: Duration = Duration::from_secs(60);
const BACKOFF_MAX: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
    #[error("the store failed: {0}")]
    Store(#[from] baton_store::StoreError),
}

impl CertsError {
    pub fn fault(&self) -> baton_store::Fault {
        match self {
            CertsError::NotFound(_) => baton_store::Fault::NotFound,
            CertsError::Failed(_) => baton_store::Fault::Refused,
            CertsError::Store(e) => e.fault(),
        }
    }
}

/// What one route asks for.
#[derive(Debug, Clone)]
struct Wanted {
    key: RouteKey,
    source: TlsSource,
    /// Its hosts and preview hosts, sorted.
    hosts: Vec<String>,
}

impl Wanted {
    fn of(spec: &RouteSpec) -> Option<Wanted> {
        let tls = spec.tls.as_ref()?;
        let mut hosts: Vec<String> = spec
            .hosts
            .iter()
            .chain(&spec.preview_hosts)
            .cloned()
            .collect();
        hosts.sort();
        hosts.dedup();
        Some(Wanted {
            key: spec.key.clone(),
            source: tls.source.clone(),
            hosts,
        })
    }

    fn source_name(&self) -> &'static str {
        match self.source {
            TlsSource::Acme { .. } => "acme",
            TlsSource::Files { .. } => "files",
        }
    }
}

pub struct Certs {
    store: Store,
    proxy: Arc<ProxyClient>,
    acme: Option<acme::Acme>,
    /// One pass at a time: the background loop, or a renewal asked for.
    working: tokio::sync::Mutex<()>,
    /// What the proxy was last given.
    pushed: Mutex<Option<Vec<CertificateSpec>>>,
}

impl Certs {
    pub fn new(store: Store, proxy: Arc<ProxyClient>, acme: Option<AcmeSettings>) -> Arc<Certs> {
        Arc::new(Certs {
            acme: acme.map(|settings| acme::Acme::new(settings, store.clone(), Arc::clone(&proxy))),
            store,
            proxy,
            working: tokio::sync::Mutex::new(()),
            pushed: Mutex::new(None),
        })
    }

    /// Keeps every route's certificate current until `stop`: after every
    /// change to the routes, and whenever one is due (renewal, a retry, a
    /// look at its files).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            // Subscribed before the pass, so a change during it is seen.
            let changed = self.proxy.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let due = self.pass(None).await;
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(due.clamp(Duration::from_secs(1), Duration::from_secs(3600))) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Every certificate: what `baton certs` shows.
    pub async fn list(&self) -> Result<Vec<CertificateView>, CertsError> {
        Ok(self
            .store
            .certificates()
            .await?
            .into_iter()
            .map(CertificateView::from)
            .collect())
    }

    /// Gets a new certificate for an app's environment now (ACME), or
    /// reads its files again; returns the record, or why it failed (the
    /// previous certificate, if any, is still served).
    pub async fn renew(&self, key: &RouteKey) -> Result<CertificateView, CertsError> {
        let started = now_ms();
        match self.proxy.route(key) {
            None => {
                return Err(CertsError::NotFound(format!(
                    "{} is not deployed in {}: `baton status` lists what is",
                    key.app, key.environment
                )))
            }
            Some(spec) if spec.tls.is_none() => {
                return Err(CertsError::NotFound(format!(
                    "{key} serves no HTTPS: add a [tls] section to its baton.toml and deploy it"
                )))
            }
            Some(_) => {}
        }
        self.pass(Some(key)).await;
        let record = self
            .store
            .certificates()
            .await?
            .into_iter()
            .find(|c| c.app == key.app && c.environment == key.environment)
            .ok_or_else(|| {
                CertsError::Failed(format!(
                    "no certificate was recorded for {key}: the store could not be written; the server's log says why"
                ))
            })?;
        match (&record.last_error, record.failed_at) {
            (Some(error), Some(at)) if at >= started => Err(CertsError::Failed(format!(
                "{key}: {error} (still served: {})",
                if record.chain_pem.is_some() {
                    "the previous certificate"
                } else {
                    "plain HTTP only"
                }
            ))),
            _ => Ok(record.into()),
        }
    }

    /// One pass over every route: each certificate brought up to date
    /// (`force`d for one route), records of routes gone dropped, the proxy
    /// given the result. Returns how long until the next thing is due.
    async fn pass(&self, force: Option<&RouteKey>) -> Duration {
        let _working = self.working.lock().await;
        let wanted: Vec<Wanted> = self.proxy.routes().iter().filter_map(Wanted::of).collect();
        let mut records: BTreeMap<(String, String), CertificateRecord> =
            match self.store.certificates().await {
                Ok(all) => all
                    .into_iter()
                    .map(|c| ((c.app.clone(), c.environment.clone()), c))
                    .collect(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the certificates from the store");
                    return Duration::from_secs(10);
                }
            };
        let mut due = Duration::from_secs(3600);
        let mut current = Vec::new();
        for want in &wanted {
            let id = (want.key.app.clone(), want.key.environment.clone());
            let before = records.remove(&id);
            let forced = force == Some(&want.key);
            let (record, next) = self.bring_up_to_date(want, before.clone(), forced).await;
            due = due.min(next);
            if before.as_ref() != Some(&record) {
                if let Err(e) = self.store.put_certificate(&record).await {
                    tracing::error!(route = %want.key, error = %e, "cannot record the certificate");
                }
            }
            current.push(record);
        }
        // A route that no longer asks for HTTPS (or is gone) keeps no
        // certificate.
        for (app, environment) in records.keys() {
            if let Err(e) = self.store.remove_certificate(app, environment).await {
                tracing::error!(app, environment, error = %e, "cannot forget a certificate");
            }
        }
        self.give_proxy(&current).await;
        due
    }

    /// The route's record after getting, reading or renewing its
    /// certificate as due; and how long until it is due again.
    async fn bring_up_to_date(
        &self,
        want: &Wanted,
        before: Option<CertificateRecord>,
        forced: bool,
    ) -> (CertificateRecord, Duration) {
        let now = now_ms();
        let mut record = before.unwrap_or_else(|| CertificateRecord {
            app: want.key.app.clone(),
            environment: want.key.environment.clone(),
            source: want.source_name().into(),
            hosts: want.hosts.clone(),
            chain_pem: None,
            key_pem: None,
            issuer: None,
            not_before: None,
            not_after: None,
            renewed_at: None,
            last_error: None,
            failed_at: None,
            attempts: 0,
            next_attempt: None,
        });
        let changed = record.source != want.source_name() || record.hosts != want.hosts;
        if changed {
            // New hosts or a new source: a new certificate is needed now;
            // the old one is served meanwhile.
            record.source = want.source_name().into();
            record.hosts = want.hosts.clone();
            record.attempts = 0;
            record.next_attempt = None;
        }
        match &want.source {
            TlsSource::Files { cert, key } => {
                self.read_files(want, cert, key, &mut record, now).await;
                (record, FILES_EVERY)
            }
            TlsSource::Acme { challenge } => {
                let due = self
                    .issue_over_acme(want, *challenge, &mut record, forced || changed, now)
                    .await;
                (record, due)
            }
        }
    }

    /// Reads the route's certificate files; a new pair is served, a problem
    /// (unreadable, not a pair, not covering a host, expired) is said.
    async fn read_files(
        &self,
        want: &Wanted,
        cert: &std::path::Path,
        key: &std::path::Path,
        record: &mut CertificateRecord,
        now: i64,
    ) {
        let read = describe::read_files(cert, key)
            .await
            .and_then(|(chain, key_pem)| with_description(chain, key_pem))
            .map_err(|problem| format!("{} and {}: {problem}", cert.display(), key.display()));
        let (chain, key_pem, described) = match read {
            Ok(read) => read,
            Err(problem) => return self.note(&want.key, record, Some(problem), now).await,
        };
        let uncovered: Vec<&str> = want
            .hosts
            .iter()
            .filter(|h| !covers(&described.names, h))
            .map(String::as_str)
            .collect();
        let problem = if !uncovered.is_empty() {
            Some(format!(
                "{} does not cover {} (it names {}); browsers will refuse it there: give a certificate for every host",
                cert.display(),
                uncovered.join(", "),
                described.names.join(", ")
            ))
        } else if described.not_after <= now {
            Some(format!("{} has expired; replace the file", cert.display()))
        } else {
            None
        };
        let fresh = record.chain_pem.as_deref() != Some(chain.as_str())
            || record.key_pem.as_deref() != Some(key_pem.as_str());
        if fresh {
            let said = format!(
                "certificate for {} read from {}, issued by {}, valid until {}",
                want.hosts.join(", "),
                cert.display(),
                described.issuer,
                describe::date(described.not_after)
            );
            self.event(&want.key, EventKind::CertificateIssued, &said)
                .await;
            serve(record, chain, key_pem, described, now);
        }
        self.note(&want.key, record, problem, now).await;
    }

    /// Issues the route's certificate over ACME if it is due (or `now`
    /// asked for); returns how long until it is due again.
    async fn issue_over_acme(
        &self,
        want: &Wanted,
        challenge: baton_proxy::AcmeChallenge,
        record: &mut CertificateRecord,
        at_once: bool,
        now: i64,
    ) -> Duration {
        let Some(acme) = &self.acme else {
            let problem = "the server has no ACME CA: start `baton server` with --acme-directory (and --acme-email), or give this app `cert` and `key` files".to_string();
            self.note(&want.key, record, Some(problem), now).await;
            return Duration::from_secs(3600);
        };
        let renew_at = describe::renew_at(record.not_before, record.not_after);
        let needed = at_once || record.chain_pem.is_none() || now >= renew_at.unwrap_or(0);
        if !needed {
            return millis(renew_at.unwrap_or(now) - now);
        }
        if let Some(next) = record.next_attempt.filter(|next| *next > now && !at_once) {
            return millis(next - now);
        }
        let issued = tokio::time::timeout(ISSUE_WITHIN, acme.issue(&want.hosts, challenge))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the CA did not finish within {}s",
                    ISSUE_WITHIN.as_secs()
                ))
            })
            .and_then(|(chain, key)| with_description(chain, key));
        // Whatever happened, no challenge is left answered.
        acme.clear_challenges().await;
        match issued {
            Ok((chain, key, described)) => {
                let said = format!(
                    "certificate for {} issued by {}, valid until {}",
                    want.hosts.join(", "),
                    described.issuer,
                    describe::date(described.not_after)
                );
                self.event(&want.key, EventKind::CertificateIssued, &said)
                    .await;
                serve(record, chain, key, described, now);
                record.attempts = 0;
                record.next_attempt = None;
                self.note(&want.key, record, None, now).await;
                let next = describe::renew_at(record.not_before, record.not_after).unwrap_or(now);
                millis(next - now)
            }
            Err(problem) => {
                record.attempts += 1;
                let wait = backoff(record.attempts);
                record.next_attempt = Some(now + wait.as_millis() as i64);
                let problem = format!("{problem}; trying again in {}", describe::span(wait));
                self.note(&want.key, record, Some(problem), now).await;
                wait
            }
        }
    }

    /// Records the route's current problem (or that it has none), with
    /// an event when it is new.
    async fn note(
        &self,
        key: &RouteKey,
        record: &mut CertificateRecord,
        problem: Option<String>,
        now: i64,
    ) {
        match problem {
            Some(problem) => {
                if record.last_error.as_deref() != Some(problem.as_str()) {
                    tracing::warn!(route = %key, problem, "certificate problem");
                    self.event(key, EventKind::CertificateFailed, &problem)
                        .await;
                }
                record.last_error = Some(problem);
                record.failed_at = Some(now);
            }
            None => {
                record.last_error = None;
                record.failed_at = None;
            }
        }
    }

    async fn event(&self, key: &RouteKey, kind: EventKind, message: &str) {
        if let Err(e) = self
            .store
            .record_event(&key.app, &key.environment, kind, message)
            .await
        {
            tracing::error!(route = %key, error = %e, "cannot record a certificate event");
        }
    }

    /// Gives the proxy every certificate there is, if that changed.
    async fn give_proxy(&self, records: &[CertificateRecord]) {
        let specs: Vec<CertificateSpec> = records
            .iter()
            .filter_map(|c| {
                Some(CertificateSpec {
                    name: format!("{} in {}", c.app, c.environment),
                    hosts: c.hosts.clone(),
                    chain_pem: c.chain_pem.clone()?,
                    key_pem: c.key_pem.clone()?,
                })
            })
            .collect();
        if self
            .pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(&specs)
        {
            return;
        }
        match self.proxy.set_certificates(specs.clone()).await {
            Ok(refused) => {
                for (name, why) in refused {
                    tracing::error!(certificate = name, why, "the proxy refused a certificate");
                }
                *self.pushed.lock().unwrap_or_else(|e| e.into_inner()) = Some(specs);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot give the proxy its certificates; trying again")
            }
        }
    }
}

/// A chain and key, with what the leaf says of itself (checked to be a
/// pair TLS can serve).
fn with_description(chain: String, key: String) -> Result<(String, String, Described), String> {
    let described = Described::of(&chain, &key)?;
    Ok((chain, key, described))
}

/// Makes the record serve this certificate, obtained `now`.
fn serve(
    record: &mut CertificateRecord,
    chain: String,
    key: String,
    described: Described,
    now: i64,
) {
    record.chain_pem = Some(chain);
    record.key_pem = Some(key);
    record.issuer = Some(described.issuer);
    record.not_before = Some(described.not_before);
    record.not_after = Some(described.not_after);
    record.renewed_at = Some(now);
}

fn backoff(attempts: i64) -> Duration {
    let doublings = (attempts.max(1) - 1).min(16) as u32;
    (BACKOFF_FIRST * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_six_hours() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(120));
        assert_eq!(backoff(5), Duration::from_secs(960));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
