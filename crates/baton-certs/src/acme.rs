//! Issuing a certificate over ACME: the account (created once per CA and
//! kept in the store), an order for the hosts, each host proved by the
//! challenge the app chose (answered by the proxy), then the key and CSR
//! made here and the chain fetched.

use std::sync::Arc;
use std::time::Duration;

use baton_proxy::{AcmeChallenge, Challenge, ProxyClient};
use baton_store::Store;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use crate::AcmeSettings;

pub(crate) struct Acme {
    settings: AcmeSettings,
    store: Store,
    proxy: Arc<ProxyClient>,
    account: tokio::sync::Mutex<Option<Account>>,
}

impl Acme {
    pub fn new(settings: AcmeSettings, store: Store, proxy: Arc<ProxyClient>) -> Acme {
        Acme {
            settings,
            store,
            proxy,
            account: tokio::sync::Mutex::new(None),
        }
    }

    /// A certificate for `hosts`: its chain and its new private key, PEM;
    /// or why the CA would not issue it.
    pub async fn issue(
        &self,
        hosts: &[String],
        challenge: AcmeChallenge,
    ) -> Result<(String, String), String> {
        let account = self.account().await?;
        match self.order(&account, hosts, challenge).await {
            Err(e) if e.contains("accountDoesNotExist") => {
                // The CA forgot the account (a test CA restarted): a new one.
                tracing::warn!(
                    directory = self.settings.directory,
                    "the CA does not know Baton's account; registering again"
                );
                *self.account.lock().await = None;
                let account = self.register().await?;
                self.order(&account, hosts, challenge).await
            }
            other => other,
        }
    }

    /// Stops answering every challenge.
    pub async fn clear_challenges(&self) {
        if let Err(e) = self.proxy.set_challenges(Vec::new()).await {
            tracing::warn!(error = %e, "cannot clear the ACME challenges from the proxy");
        }
    }

    async fn order(
        &self,
        account: &Account,
        hosts: &[String],
        kind: AcmeChallenge,
    ) -> Result<(String, String), String> {
        let ca = &self.settings.directory;
        let identifiers: Vec<Identifier> =
            hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("the CA at {ca} refused the order: {e}"))?;
        let mut answered: Vec<Challenge> = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization =
                authorization.map_err(|e| format!("cannot read the CA's authorization: {e}"))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(format!(
                        "the CA's authorization for {} is {other:?}",
                        authorization.identifier()
                    ))
                }
            }
            let host = authorization.identifier().to_string();
            let wanted = match kind {
                AcmeChallenge::Http01 => ChallengeType::Http01,
                AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut challenge = authorization.challenge(wanted.clone()).ok_or_else(|| {
                format!("the CA offers no {wanted:?} challenge for {host}; choose another `challenge` in [tls]")
            })?;
            let key_authorization = challenge.key_authorization();
            answered.push(match kind {
                AcmeChallenge::Http01 => Challenge::Http {
                    token: challenge.token.clone(),
                    key_authorization: key_authorization.as_str().to_string(),
                },
                AcmeChallenge::TlsAlpn01 => {
                    let (cert_pem, key_pem) =
                        alpn_certificate(&host, key_authorization.digest().as_ref())?;
                    Challenge::TlsAlpn {
                        host: host.clone(),
                        cert_pem,
                        key_pem,
                    }
                }
            });
            self.proxy
                .set_challenges(answered.clone())
                .await
                .map_err(|e| format!("cannot answer the challenge for {host}: {e}"))?;
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("the CA would not check {host}: {e}"))?;
        }
        let polling = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(90));
        let status = order
            .poll_ready(&polling)
            .await
            .map_err(|e| format!("the CA did not validate {}: {e}", hosts.join(", ")))?;
        if status != OrderStatus::Ready {
            return Err(self.why_invalid(&mut order, hosts).await);
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| format!("the CA refused the certificate request: {e}"))?;
        let chain = order
            .poll_certificate(&polling)
            .await
            .map_err(|e| format!("the CA did not deliver the certificate: {e}"))?;
        Ok((chain, key_pem))
    }

    /// What the CA said of each host it could not validate.
    async fn why_invalid(&self, order: &mut instant_acme::Order, hosts: &[String]) -> String {
        let mut reasons = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authorization)) = authorizations.next().await {
            let host = authorization.identifier().to_string();
            let Ok(state) = authorization.refresh().await else {
                continue;
            };
            for challenge in &state.challenges {
                if let Some(problem) = &challenge.error {
                    reasons.push(format!(
                        "{host}: {}",
                        problem.detail.as_deref().unwrap_or("refused")
                    ));
                }
            }
        }
        if reasons.is_empty() {
            format!("the CA did not validate {}", hosts.join(", "))
        } else {
            format!(
                "the CA could not validate {} (does the host's DNS point at this server, and is the proxy reachable on port 80/443?)",
                reasons.join("; ")
            )
        }
    }

    /// The account at the CA: the stored one, or a new one registered.
    async fn account(&self) -> Result<Account, String> {
        let mut cached = self.account.lock().await;
        if let Some(account) = cached.as_ref() {
            return Ok(account.clone());
        }
        let directory = &self.settings.directory;
        let saved = self
            .store
            .acme_account(directory)
            .await
            .map_err(|e| e.to_string())?;
        let account = match saved {
            Some(credentials) => {
                let credentials: AccountCredentials = serde_json::from_str(&credentials)
                    .map_err(|e| format!("the stored ACME account is unreadable: {e}"))?;
                self.builder()?
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| format!("cannot reach the CA at {directory}: {e}"))?
            }
            None => {
                drop(cached);
                let account = self.register().await?;
                cached = self.account.lock().await;
                account
            }
        };
        *cached = Some(account.clone());
        Ok(account)
    }

    /// Registers a new account with the CA and keeps its credentials.
    async fn register(&self) -> Result<Account, String> {
        let directory = &self.settings.directory;
        let contact = self
            .settings
            .contact
            .as_ref()
            .map(|c| format!("mailto:{c}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.clone(),
                None,
            )
            .await
            .map_err(|e| format!("cannot register with the CA at {directory}: {e}"))?;
        let credentials = serde_json::to_string(&credentials).map_err(|e| e.to_string())?;
        self.store
            .put_acme_account(directory, &credentials)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(directory, "registered an ACME account");
        *self.account.lock().await = Some(account.clone());
        Ok(account)
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, String> {
        match &self.settings.ca_file {
            Some(path) => Account::builder_with_root(path)
                .map_err(|e| format!("cannot trust the CA root in {}: {e}", path.display())),
            None => Account::builder().map_err(|e| format!("cannot set up HTTPS to the CA: {e}")),
        }
    }
}

/// The self-signed certificate a TLS-ALPN-01 challenge is answered with:
/// the host's name and the key authorization's digest in its
/// `acmeIdentifier` extension (RFC 8737 §3).
fn alpn_certificate(host: &str, digest: &[u8]) -> Result<(String, String), String> {
    let fail = |e: rcgen::Error| format!("cannot make the TLS-ALPN-01 certificate for {host}: {e}");
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).map_err(fail)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok((cert.pem(), key.serialize_pem()))
}
