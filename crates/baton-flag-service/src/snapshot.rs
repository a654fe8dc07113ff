//! The snapshot: everything an evaluation needs, built once per change and
//! never modified after. It must never be built from anything but the
//! store's records, so a restarted server serves exactly what it served.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use baton_flags::{FlagSet, FlagSpec};
use baton_store::{ApiKeyRecord, FlagRecord};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The flags of one app in one environment, ready to serve.
pub struct EnvironmentFlags {
    pub app: String,
    pub environment: String,
    pub specs: BTreeMap<String, FlagSpec>,
    pub flags: FlagSet,
    /// The Unleash client-features document, serialised once.
    pub unleash_document: Bytes,
    /// A strong validator of the document: same flags, same tag, across
    /// restarts too.
    pub etag: String,
    /// When the newest flag changed, in seconds since the epoch.
    pub last_modified: i64,
}

/// What an API key may read (one app in one environment), from which web
/// origins, or that it was revoked.
#[derive(Clone)]
pub struct KeyScope {
    pub flags: Arc<EnvironmentFlags>,
    pub revoked: bool,
    /// Web origins whose pages may use the key (CORS).
    pub origins: Vec<String>,
}

impl KeyScope {
    /// Whether a page from `origin` may read this key's answers.
    pub fn allows_origin(&self, origin: &str) -> bool {
        !self.revoked && self.origins.iter().any(|o| o == origin)
    }
}

#[derive(Default)]
pub struct Snapshot {
    environments: HashMap<(String, String), Arc<EnvironmentFlags>>,
    keys: HashMap<String, KeyScope>,
    /// Every origin some active key allows: a CORS preflight carries no key,
    /// so it is answered for these, and each real request then checks its
    /// own key's origins.
    origins: HashSet<String>,
}

impl Snapshot {
    pub(crate) fn build(flags: Vec<FlagRecord>, keys: Vec<ApiKeyRecord>) -> Snapshot {
        let mut grouped: BTreeMap<(String, String), Vec<FlagRecord>> = BTreeMap::new();
        for flag in flags {
            grouped
                .entry((flag.app.clone(), flag.environment.clone()))
                .or_default()
                .push(flag);
        }
        // Keys may exist for an environment without flags yet: it serves an
        // empty document rather than refusing the key.
        for key in &keys {
            grouped
                .entry((key.app.clone(), key.environment.clone()))
                .or_default();
        }
        let environments: HashMap<(String, String), Arc<EnvironmentFlags>> = grouped
            .into_iter()
            .map(|((app, environment), records)| {
                let last_modified = records.iter().map(|r| r.updated_at).max().unwrap_or(0) / 1000;
                let specs: BTreeMap<String, FlagSpec> = records
                    .into_iter()
                    .map(|r| {
                        let spec = serde_json::from_value(r.spec).unwrap_or_else(|e| {
                            tracing::warn!(app, environment, flag = r.name, error = %e, "unreadable flag record; serving it as off");
                            FlagSpec::default()
                        });
                        (r.name, spec)
                    })
                    .collect();
                let document = baton_flags::model::document(specs.iter().map(|(n, s)| (n.as_str(), s)));
                let flags = FlagSet::compile(&document);
                for warning in flags.warnings() {
                    tracing::warn!(app, environment, %warning, "flag rule read as off");
                }
                let json = serde_json::to_vec(&document).unwrap_or_default();
                let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&json))[..32]);
                let entry = EnvironmentFlags {
                    app: app.clone(),
                    environment: environment.clone(),
                    specs,
                    flags,
                    unleash_document: Bytes::from(json),
                    etag,
                    last_modified,
                };
                ((app, environment), Arc::new(entry))
            })
            .collect();
        let origins = keys
            .iter()
            .filter(|k| k.revoked_at.is_none())
            .flat_map(|k| k.origins.iter().cloned())
            .collect();
        let keys = keys
            .into_iter()
            .filter_map(|k| {
                let flags = environments.get(&(k.app, k.environment))?;
                let scope = KeyScope {
                    flags: Arc::clone(flags),
                    revoked: k.revoked_at.is_some(),
                    origins: k.origins,
                };
                Some((k.hash, scope))
            })
            .collect();
        Snapshot {
            environments,
            keys,
            origins,
        }
    }

    /// Whether some active key allows pages from `origin`.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.origins.contains(origin)
    }

    /// The scope of a key, by the key itself.
    pub fn key(&self, key: &str) -> Option<&KeyScope> {
        self.keys.get(&crate::hash_key(key))
    }

    pub fn environment(&self, app: &str, environment: &str) -> Option<&Arc<EnvironmentFlags>> {
        self.environments
            .get(&(app.to_string(), environment.to_string()))
    }
}
