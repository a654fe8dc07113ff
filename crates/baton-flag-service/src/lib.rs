//! Baton's flags, served. This crate owns the in-memory snapshot that every
//! evaluation reads (one compiled [`FlagSet`] and one Unleash document per
//! app and environment, plus the API keys), the changes to flags and keys
//! (each written to the store with its audit entry, then published as a new
//! snapshot), and the client-facing endpoints: OFREP (`/ofrep/v1`) and
//! Unleash's client API (`/api/client`), with CORS for the web origins each
//! key allows. Flags and keys belong to an app Baton knows (one with a
//! release): a typo in an app's name is refused, not stored unseen.
//!
//! Invariants: evaluation never waits on the store — it loads the current
//! snapshot (`arc-swap`) and works on it; a snapshot is immutable and swapped
//! whole, after the store has committed the change it reflects. The store is
//! the truth: a restarted server rebuilds the snapshot from it.

mod cors;
mod ofrep;
mod snapshot;
mod unleash;

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use baton_flags::FlagSpec;
use baton_manifest::flags::FlagsFile;
use baton_store::{
    ApiKeyRecord, AuditEntry, FlagChange, FlagExpectation, FlagRecord, Store, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Mutex};

pub use cors::web_origin;
pub use snapshot::{EnvironmentFlags, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// A flag, file or key request that cannot be acted on as it is.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Not now, as things stand (the flag exists already, …).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl FlagError {
    pub fn fault(&self) -> baton_store::Fault {
        use baton_store::Fault;
        match self {
            FlagError::Invalid(_) => Fault::Invalid,
            FlagError::NotFound(_) => Fault::NotFound,
            FlagError::Refused(_) => Fault::Refused,
            FlagError::Store(e) => e.fault(),
            FlagError::Internal(_) => Fault::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, FlagError>;

pub use baton_store::Actor;

/// A flag as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Flag {
    pub app: String,
    pub environment: String,
    pub name: String,
    #[serde(flatten)]
    pub spec: FlagSpec,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Flag {
    fn from_record(record: FlagRecord) -> Flag {
        Flag {
            spec: serde_json::from_value(record.spec).unwrap_or_default(),
            app: record.app,
            environment: record.environment,
            name: record.name,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// How one flag differs between a `flags.toml` and the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlagDiff {
    pub name: String,
    /// `create`, `update`, `delete` (with prune) or `only_on_server`.
    pub change: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<FlagSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FlagSpec>,
}

/// A new API key: the record, and the key itself, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewApiKey {
    #[serde(flatten)]
    pub record: ApiKeyRecord,
    pub key: String,
}

/// The flag service: the snapshot, and every change that replaces it.
pub struct FlagService {
    store: Store,
    snapshot: ArcSwap<Snapshot>,
    /// Changes are made one at a time, so no snapshot is built from a store
    /// state older than the one before it.
    writer: Mutex<()>,
    /// Bumped after every new snapshot; OFREP's event stream listens.
    revision: watch::Sender<u64>,
    /// Set when the server stops, to end the event streams (which would
    /// otherwise hold a graceful stop open forever).
    stopping: watch::Sender<bool>,
}

impl FlagService {
    /// Builds the first snapshot from the store.
    pub async fn load(store: Store) -> Result<Arc<FlagService>> {
        let snapshot = Snapshot::build(store.all_flags().await?, store.api_keys().await?);
        let (revision, _) = watch::channel(0);
        let (stopping, _) = watch::channel(false);
        Ok(Arc::new(FlagService {
            store,
            snapshot: ArcSwap::from_pointee(snapshot),
            writer: Mutex::new(()),
            revision,
            stopping,
        }))
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Waits for the next change, for event streams.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// Ends the event streams, so the server can stop.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves when the server stops.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Builds the snapshot again from the store, after an app's flags and
    /// keys were deleted with it (`baton destroy`).
    pub async fn reload(&self) -> Result<()> {
        let _writing = self.writer.lock().await;
        self.publish().await
    }

    async fn publish(&self) -> Result<()> {
        let snapshot = Snapshot::build(self.store.all_flags().await?, self.store.api_keys().await?);
        self.snapshot.store(Arc::new(snapshot));
        self.revision.send_modify(|r| *r += 1);
        Ok(())
    }

    pub async fn list(&self, app: &str, environment: &str) -> Result<Vec<Flag>> {
        Ok(self
            .store
            .flags(app, environment)
            .await?
            .into_iter()
            .map(Flag::from_record)
            .collect())
    }

    pub async fn get(&self, app: &str, environment: &str, name: &str) -> Result<Flag> {
        Ok(Flag::from_record(
            self.store.flag(app, environment, name).await?,
        ))
    }

    /// Refuses an app Baton has no release of: its flags would be served
    /// to nobody and shown nowhere.
    async fn require_app(&self, app: &str) -> Result<()> {
        let apps = self.store.apps().await?;
        if apps.iter().any(|a| a == app) {
            return Ok(());
        }
        let known = if apps.is_empty() {
            "no app has been deployed yet".to_string()
        } else {
            format!("known apps: {}", apps.join(", "))
        };
        Err(FlagError::NotFound(format!(
            "no app {app:?}: flags and keys belong to an app with at least one release \
             ({known}); deploy it first with `baton deploy DIR`"
        )))
    }

    pub async fn create(
        &self,
        actor: &Actor,
        app: &str,
        environment: &str,
        name: &str,
        spec: FlagSpec,
    ) -> Result<Flag> {
        check_flag(name, &spec)?;
        self.require_app(app).await?;
        let _writing = self.writer.lock().await;
        let change = FlagChange {
            name: name.into(),
            spec: Some(spec_json(&spec)),
            audit: actor.entry(
                "flag.create",
                subject(app, environment, name),
                app,
                environment,
                json!({"after": spec}),
            ),
        };
        self.store
            .change_flags(app, environment, &[change], FlagExpectation::Absent)
            .await?;
        self.publish().await?;
        self.get(app, environment, name).await
    }

    /// Replaces a flag's settings with `spec` (the API merges partial changes
    /// into the current settings before calling this).
    pub async fn update(
        &self,
        actor: &Actor,
        app: &str,
        environment: &str,
        name: &str,
        action: &str,
        change: impl FnOnce(FlagSpec) -> std::result::Result<FlagSpec, String>,
    ) -> Result<Flag> {
        let _writing = self.writer.lock().await;
        let before = self.get(app, environment, name).await?.spec;
        let after = change(before.clone()).map_err(FlagError::Invalid)?;
        check_flag(name, &after)?;
        let change = FlagChange {
            name: name.into(),
            spec: Some(spec_json(&after)),
            audit: actor.entry(
                action,
                subject(app, environment, name),
                app,
                environment,
                json!({"before": before, "after": after}),
            ),
        };
        self.store
            .change_flags(app, environment, &[change], FlagExpectation::Present)
            .await?;
        self.publish().await?;
        self.get(app, environment, name).await
    }

    pub async fn delete(
        &self,
        actor: &Actor,
        app: &str,
        environment: &str,
        name: &str,
    ) -> Result<()> {
        let _writing = self.writer.lock().await;
        let before = self.get(app, environment, name).await?.spec;
        let change = FlagChange {
            name: name.into(),
            spec: None,
            audit: actor.entry(
                "flag.delete",
                subject(app, environment, name),
                app,
                environment,
                json!({"before": before}),
            ),
        };
        self.store
            .change_flags(app, environment, &[change], FlagExpectation::Present)
            .await?;
        self.publish().await
    }

    /// Compares a `flags.toml` with the server's flags of one environment.
    pub async fn diff(
        &self,
        app: &str,
        environment: &str,
        file: &FlagsFile,
        prune: bool,
    ) -> Result<Vec<FlagDiff>> {
        let server: BTreeMap<String, FlagSpec> = self
            .list(app, environment)
            .await?
            .into_iter()
            .map(|f| (f.name, f.spec))
            .collect();
        Ok(diff(&server, &file.for_environment(environment), prune))
    }

    /// Makes the server's flags of one environment match a `flags.toml`
    /// (flags only on the server are deleted with `prune`, otherwise left
    /// alone), in one transaction; returns what changed.
    pub async fn apply(
        &self,
        actor: &Actor,
        app: &str,
        environment: &str,
        file: &FlagsFile,
        prune: bool,
        source: &str,
    ) -> Result<Vec<FlagDiff>> {
        self.require_app(app).await?;
        let _writing = self.writer.lock().await;
        let changes = self.diff(app, environment, file, prune).await?;
        let writes: Vec<FlagChange> = changes
            .iter()
            .filter(|d| d.change != "only_on_server")
            .map(|d| FlagChange {
                name: d.name.clone(),
                spec: d.file.as_ref().map(spec_json),
                audit: actor.entry(
                    &format!("flag.{}", d.change),
                    subject(app, environment, &d.name),
                    app,
                    environment,
                    json!({"before": d.server, "after": d.file, "source": source}),
                ),
            })
            .collect();
        if !writes.is_empty() {
            self.store
                .change_flags(app, environment, &writes, FlagExpectation::Any)
                .await?;
            self.publish().await?;
        }
        Ok(changes)
    }

    /// Creates an API key for one app and environment, usable from web
    /// pages of `origins` (each read by [`web_origin`]); the key is returned
    /// once and only its SHA-256 is kept.
    pub async fn create_key(
        &self,
        actor: &Actor,
        app: &str,
        environment: &str,
        name: &str,
        origins: &[String],
    ) -> Result<NewApiKey> {
        if name.trim().is_empty() || name.len() > 100 {
            return Err(FlagError::Invalid(
                "field `name`: give the key a name of 1 to 100 characters, e.g. the client that uses it".into(),
            ));
        }
        let mut allowed: Vec<String> = vec![];
        for (i, origin) in origins.iter().enumerate() {
            let origin = web_origin(origin)
                .map_err(|e| FlagError::Invalid(format!("field `origins[{i}]`: {e}")))?;
            if !allowed.contains(&origin) {
                allowed.push(origin);
            }
        }
        self.require_app(app).await?;
        let key = new_key()
            .map_err(|e| FlagError::Internal(format!("cannot read random bytes for a key: {e}")))?;
        let prefix = key[..12].to_string();
        let _writing = self.writer.lock().await;
        let entry = actor.entry(
            "api_key.create",
            String::new(),
            app,
            environment,
            json!({"name": name, "prefix": prefix, "origins": allowed}),
        );
        let record = self
            .store
            .create_api_key(
                app,
                environment,
                name,
                &hash_key(&key),
                &prefix,
                &allowed,
                &entry,
            )
            .await?;
        self.publish().await?;
        Ok(NewApiKey { record, key })
    }

    pub async fn keys(&self, app: &str) -> Result<Vec<ApiKeyRecord>> {
        Ok(self
            .store
            .api_keys()
            .await?
            .into_iter()
            .filter(|k| k.app == app)
            .collect())
    }

    pub async fn revoke_key(&self, actor: &Actor, app: &str, id: i64) -> Result<ApiKeyRecord> {
        let _writing = self.writer.lock().await;
        let key = self.store.api_key(id).await?;
        if key.app != app {
            return Err(FlagError::NotFound(format!(
                "app {app} has no API key {id}"
            )));
        }
        let entry = actor.entry(
            "api_key.revoke",
            format!("api_key {id}"),
            app,
            &key.environment,
            json!({"name": key.name, "prefix": key.prefix}),
        );
        let revoked = self.store.revoke_api_key(id, &entry).await?;
        self.publish().await?;
        Ok(revoked)
    }

    pub async fn audit(&self, app: Option<&str>, limit: i64) -> Result<Vec<AuditEntry>> {
        Ok(self.store.audit_log(app, limit).await?)
    }

    /// Changes to one app's flags and API keys only, newest first, each
    /// entry with its `before` and `after`.
    pub async fn flag_audit(&self, app: &str, limit: i64) -> Result<Vec<AuditEntry>> {
        Ok(self.store.flag_audit_log(app, limit).await?)
    }

    /// The OFREP and Unleash client endpoints, authenticated by API key,
    /// answering CORS for the origins each key allows.
    pub fn client_router<S: Clone + Send + Sync + 'static>(self: &Arc<Self>) -> axum::Router<S> {
        ofrep::router()
            .merge(unleash::router())
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(self),
                cors::cors,
            ))
            .with_state(Arc::clone(self))
    }
}

fn subject(app: &str, environment: &str, name: &str) -> String {
    format!("flag {app}/{environment}/{name}")
}

fn spec_json(spec: &FlagSpec) -> serde_json::Value {
    serde_json::to_value(spec).unwrap_or_default()
}

fn check_flag(name: &str, spec: &FlagSpec) -> Result<()> {
    if !baton_flags::model::is_flag_name(name) {
        return Err(FlagError::Invalid(baton_flags::model::flag_name_error(
            name,
        )));
    }
    spec.check().map_err(FlagError::Invalid)
}

/// What it takes to go from `server` to `file`.
pub fn diff(
    server: &BTreeMap<String, FlagSpec>,
    file: &BTreeMap<String, FlagSpec>,
    prune: bool,
) -> Vec<FlagDiff> {
    let mut out = vec![];
    for (name, wanted) in file {
        match server.get(name) {
            None => out.push(FlagDiff {
                name: name.clone(),
                change: "create".into(),
                server: None,
                file: Some(wanted.clone()),
            }),
            Some(current) if current != wanted => out.push(FlagDiff {
                name: name.clone(),
                change: "update".into(),
                server: Some(current.clone()),
                file: Some(wanted.clone()),
            }),
            Some(_) => {}
        }
    }
    for (name, current) in server {
        if !file.contains_key(name) {
            out.push(FlagDiff {
                name: name.clone(),
                change: if prune { "delete" } else { "only_on_server" }.into(),
                server: Some(current.clone()),
                file: None,
            });
        }
    }
    out
}

/// The SHA-256 of a key, as stored.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// `baton_` and 32 random bytes in hex, from the kernel's generator.
fn new_key() -> std::io::Result<String> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(format!("baton_{}", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> FlagSpec {
        FlagSpec {
            enabled: true,
            ..FlagSpec::default()
        }
    }

    #[test]
    fn a_diff_creates_updates_and_prunes_only_when_asked() {
        let server = BTreeMap::from([
            ("same".to_string(), on()),
            ("changed".to_string(), on()),
            ("extra".to_string(), on()),
        ]);
        let file = BTreeMap::from([
            ("same".to_string(), on()),
            ("changed".to_string(), FlagSpec::default()),
            ("new".to_string(), on()),
        ]);
        let changes = |prune| {
            diff(&server, &file, prune)
                .into_iter()
                .map(|d| (d.name, d.change))
                .collect::<Vec<_>>()
        };
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            changes(false),
            [
                s("changed", "update"),
                s("new", "create"),
                s("extra", "only_on_server")
            ]
        );
        assert_eq!(changes(true)[2], s("extra", "delete"));
    }

    async fn record_release(store: &Store, app: &str) {
        let release = baton_store::Release {
            id: format!("{app}-release"),
            app: app.into(),
            created_at: 0,
            size: 0,
            files: 0,
            manifest: String::new(),
            image: None,
        };
        store.put_release(&release).await.unwrap();
    }

    #[tokio::test]
    async fn flags_and_keys_of_an_app_without_a_release_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("baton.db")).await.unwrap();
        let service = FlagService::load(store.clone()).await.unwrap();
        let actor = Actor {
            name: "alice".into(),
            remote_address: None,
        };
        let refused = service
            .create(&actor, "nosuchapp", "production", "x", on())
            .await;
        assert!(
            matches!(&refused, Err(FlagError::NotFound(m)) if m.contains("no app \"nosuchapp\"")
                && m.contains("no app has been deployed yet") && m.contains("baton deploy")),
            "{refused:?}"
        );
        record_release(&store, "shop").await;
        let refused = service
            .create_key(&actor, "shpo", "production", "web", &[])
            .await;
        assert!(
            matches!(&refused, Err(FlagError::NotFound(m)) if m.contains("known apps: shop")),
            "{:?}",
            refused.map(|k| k.key)
        );
        let file = FlagsFile::parse("[flags.a]\nenabled = true\n", "flags.toml").unwrap();
        assert!(service
            .apply(&actor, "shpo", "production", &file, false, "flags.toml")
            .await
            .is_err());
        assert!(service.store.audit_log(None, 10).await.unwrap().is_empty());
        service
            .create(&actor, "shop", "production", "x", on())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn each_change_publishes_a_new_snapshot_after_the_store_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("baton.db")).await.unwrap();
        let service = FlagService::load(store.clone()).await.unwrap();
        let actor = Actor {
            name: "alice".into(),
            remote_address: None,
        };
        let changes = service.changes();
        record_release(&store, "shop").await;
        let key = service
            .create_key(&actor, "shop", "production", "web", &[])
            .await
            .unwrap();
        let flags = Arc::clone(&service.snapshot().key(&key.key).unwrap().flags);
        assert!(
            flags.specs.is_empty(),
            "a key's environment may have no flags yet"
        );
        let empty_etag = flags.etag.clone();

        service
            .create(&actor, "shop", "production", "beta", on())
            .await
            .unwrap();
        assert!(changes.has_changed().unwrap());
        let snapshot = service.snapshot();
        let scope = snapshot.key(&key.key).unwrap();
        assert!(scope
            .flags
            .flags
            .is_enabled("beta", &baton_flags::Context::default()));
        assert_ne!(scope.flags.etag, empty_etag);
        assert!(snapshot.environment("shop", "staging").is_none());

        // A restarted server rebuilds the same snapshot from the store.
        let again = FlagService::load(store).await.unwrap();
        assert_eq!(
            again.snapshot().key(&key.key).unwrap().flags.etag,
            scope.flags.etag
        );

        service
            .revoke_key(&actor, "shop", key.record.id)
            .await
            .unwrap();
        assert!(service.snapshot().key(&key.key).unwrap().revoked);
        assert!(service.snapshot().key("baton_unknown").is_none());
        let refused = service
            .update(
                &actor,
                "shop",
                "production",
                "beta",
                "flag.update",
                |mut s| {
                    s.rollout = Some(30);
                    s.variants = vec![baton_flags::model::VariantSpec {
                        name: "a".into(),
                        weight: 0,
                        payload: None,
                    }];
                    Ok(s)
                },
            )
            .await;
        assert!(matches!(refused, Err(FlagError::Invalid(m)) if m.contains("weight")));
        assert_eq!(
            service
                .get("shop", "production", "beta")
                .await
                .unwrap()
                .spec,
            on()
        );
    }

    #[test]
    fn keys_are_long_random_and_hashed() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("baton_") && a.len() == 70);
        assert_eq!(hash_key(&a).len(), 64);
        assert_ne!(hash_key(&a), a);
    }
}
