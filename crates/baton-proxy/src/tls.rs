//! TLS at the edge: the certificates the proxy serves, picked by the name a
//! client asks for (SNI), and the ACME challenges it answers while the
//! control plane proves to a CA that it serves a host (HTTP-01 tokens on
//! plain HTTP, TLS-ALPN-01 certificates on `acme-tls/1`). The control plane
//! gets and renews certificates; the proxy only serves what it is given,
//! swapped in whole, so a handshake sees the old set or the new one.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

/// The ALPN protocol of a TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A certificate as the control plane gives it: the hosts it is served
/// for, its chain and its private key, both PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateSpec {
    /// What the control plane calls it (an app and environment), for errors.
    pub name: String,
    pub hosts: Vec<String>,
    /// The leaf first, then the intermediates.
    pub chain_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertificateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateSpec")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("chain_pem", &format_args!("{} bytes", self.chain_pem.len()))
            .field("key_pem", &format_args!("(secret)"))
            .finish()
    }
}

/// What a CA checks to see that the one asking for a certificate serves
/// the host.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Challenge {
    /// `GET /.well-known/acme-challenge/{token}` on plain HTTP answers
    /// `key_authorization`.
    Http {
        token: String,
        key_authorization: String,
    },
    /// A handshake for `host` offering only `acme-tls/1` gets this
    /// self-signed certificate (carrying the key authorization's digest).
    TlsAlpn {
        host: String,
        cert_pem: String,
        key_pem: String,
    },
}

impl fmt::Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Challenge::Http { token, .. } => write!(f, "Http({token})"),
            Challenge::TlsAlpn { host, .. } => write!(f, "TlsAlpn({host})"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{name}: the chain holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the chain in PEM, leaf first")]
    NoCertificate { name: String },
    #[error("{name}: the chain is not valid PEM ({why}); give the chain in PEM, leaf first")]
    BadChain { name: String, why: String },
    #[error("{name}: the private key is not a PEM key ({why}); give it in PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC)")]
    BadKey { name: String, why: String },
    #[error("{name}: TLS cannot sign with this kind of private key ({why}); use an RSA, ECDSA P-256/P-384 or Ed25519 key")]
    Unsupported { name: String, why: String },
    #[error("{name}: the private key does not belong to the certificate; give the key the certificate was issued for")]
    Mismatch { name: String },
}

/// Parses a chain and its key into what rustls serves, checking that the
/// key is the certificate's.
pub fn certified_key(name: &str, chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, TlsError> {
    let certified = parse(name, chain_pem, key_pem)?;
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        // A key whose public half rustls cannot tell is let through.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(_) => Err(TlsError::Mismatch { name: name.into() }),
    }
}

/// Parses a chain and its key, unchecked: a TLS-ALPN-01 certificate
/// carries a critical extension (acmeIdentifier) that the check's X.509
/// parser refuses, though only the CA ever sees it.
fn parse(name: &str, chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadChain {
            name: name.into(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { name: name.into() });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::BadKey {
        name: name.into(),
        why: e.to_string(),
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        TlsError::Unsupported {
            name: name.into(),
            why: e.to_string(),
        }
    })?;
    Ok(CertifiedKey::new(chain, signing))
}

/// The certificates and challenges the proxy serves right now.
#[derive(Default)]
pub(crate) struct Certificates {
    /// host → certificate.
    served: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// For a client that names no host (no SNI): the first certificate
    /// given, as nginx serves its default server's.
    default: ArcSwap<Option<Arc<CertifiedKey>>>,
    /// What `served` was made from (what a successor or a restart gets).
    specs: ArcSwap<Vec<CertificateSpec>>,
    /// host → TLS-ALPN-01 challenge certificate.
    alpn: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 token → key authorization.
    tokens: ArcSwap<HashMap<String, String>>,
}

impl Certificates {
    /// Serves exactly `specs`; returns the ones refused, with why (the
    /// others are served).
    pub fn replace(&self, specs: &[CertificateSpec]) -> Vec<(String, String)> {
        let mut served = HashMap::new();
        let mut kept = Vec::new();
        let mut refused = Vec::new();
        for spec in specs {
            match certified_key(&spec.name, &spec.chain_pem, &spec.key_pem) {
                Ok(key) => {
                    let key = Arc::new(key);
                    for host in &spec.hosts {
                        served.insert(host.to_ascii_lowercase(), Arc::clone(&key));
                    }
                    kept.push(spec.clone());
                }
                Err(e) => refused.push((spec.name.clone(), e.to_string())),
            }
        }
        let default = kept
            .first()
            .and_then(|first| first.hosts.first())
            .and_then(|host| served.get(&host.to_ascii_lowercase()).cloned());
        self.default.store(Arc::new(default));
        self.served.store(Arc::new(served));
        self.specs.store(Arc::new(kept));
        refused
    }

    /// The certificates served, as given.
    pub fn specs(&self) -> Vec<CertificateSpec> {
        self.specs.load().as_ref().clone()
    }

    /// Answers exactly `challenges`; returns the ones refused, with why.
    pub fn set_challenges(&self, challenges: &[Challenge]) -> Vec<(String, String)> {
        let mut alpn = HashMap::new();
        let mut tokens = HashMap::new();
        let mut refused = Vec::new();
        for challenge in challenges {
            match challenge {
                Challenge::Http {
                    token,
                    key_authorization,
                } => {
                    tokens.insert(token.clone(), key_authorization.clone());
                }
                Challenge::TlsAlpn {
                    host,
                    cert_pem,
                    key_pem,
                } => match parse(host, cert_pem, key_pem) {
                    Ok(key) => {
                        alpn.insert(host.to_ascii_lowercase(), Arc::new(key));
                    }
                    Err(e) => refused.push((host.clone(), e.to_string())),
                },
            }
        }
        self.alpn.store(Arc::new(alpn));
        self.tokens.store(Arc::new(tokens));
        refused
    }

    /// Whether a certificate is served for `host`.
    pub fn serves(&self, host: &str) -> bool {
        self.served.load().contains_key(host)
    }

    /// The key authorization for an HTTP-01 token, if one is being asked.
    pub fn token(&self, token: &str) -> Option<String> {
        self.tokens.load().get(token).cloned()
    }
}

/// Picks the certificate by SNI: a challenge's when the client speaks
/// `acme-tls/1` (a CA validating), the host's otherwise.
#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("hosts", &self.served.load().len())
            .finish()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validating = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        let Some(host) = hello.server_name().map(str::to_ascii_lowercase) else {
            return if validating {
                None
            } else {
                self.0.default.load().as_ref().clone()
            };
        };
        if validating {
            self.0.alpn.load().get(&host).cloned()
        } else {
            self.0.served.load().get(&host).cloned()
        }
    }
}

/// The rustls configuration every HTTPS connection uses: certificates from
/// `certificates`, HTTP/2 or HTTP/1.1 by ALPN (and `acme-tls/1` for a CA).
pub(crate) fn server_config(certificates: Arc<Certificates>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(certificates)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Arc::new(config)
}
