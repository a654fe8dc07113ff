//! An app's config vars per environment (`baton config set`): versioned,
//! each version the whole set, sealed with the data folder's key (AEAD,
//! ChaCha20-Poly1305) before it is written. Only the names are kept in
//! clear; a value never reaches the store's file, its backups or a log.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{flags, now_ms, AuditEntry, Result, Store, StoreError};

/// The key config values are sealed with: 32 random bytes in a file of
/// the data folder readable by its owner alone, made on first use.
pub struct ConfigKey {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for ConfigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigKey(hidden)")
    }
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or create the config key {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the config key {path} is {len} bytes, not 32; restore it from a backup (config values sealed with another key cannot be read)")]
    Length { path: String, len: usize },
    #[error("the config key {path} is readable by others (mode {mode:o}); `chmod 600 {path}`")]
    Exposed { path: String, mode: u32 },
}

impl ConfigKey {
    pub fn load_or_create(path: &Path) -> std::result::Result<ConfigKey, KeyError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let random = SystemRandom::new();
        if !path.exists() {
            let mut bytes = [0u8; 32];
            random
                .fill(&mut bytes)
                .map_err(|_| io(std::io::Error::other("no randomness from the system")))?;
            // Written beside, then renamed: a crash never leaves half a key.
            let partial = path.with_extension("partial");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)
                .map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
            std::fs::rename(&partial, path).map_err(io)?;
        }
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.display().to_string(),
                mode,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let length = || KeyError::Length {
            path: path.display().to_string(),
            len: bytes.len(),
        };
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| length())?;
        Ok(ConfigKey {
            key: LessSafeKey::new(unbound),
            random,
        })
    }

    /// Nonce, then ciphertext and tag. `context` (app, environment and
    /// version) is authenticated: a sealed set moved to another row does
    /// not open.
    fn seal(&self, values: &BTreeMap<String, String>, context: &str) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| StoreError::Sealed("no randomness from the system".into()))?;
        let mut data = serde_json::to_vec(values).unwrap_or_default();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| StoreError::Sealed("cannot seal the config".into()))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        Ok(sealed)
    }

    fn open(&self, sealed: &[u8], context: &str) -> Result<BTreeMap<String, String>> {
        let unreadable = || {
            StoreError::Sealed(format!(
                "the config of {context} does not open with this data folder's config.key; was the key replaced? Restore the key from a backup"
            ))
        };
        if sealed.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
        let mut data = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| unreadable())?;
        serde_json::from_slice(plain).map_err(|_| unreadable())
    }
}

fn context(app: &str, environment: &str, version: i64) -> String {
    format!("{app}/{environment} config version {version}")
}

/// One version of an environment's config: the names in clear, the values
/// only once opened with the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigVersion {
    pub app: String,
    pub environment: String,
    pub version: i64,
    pub keys: Vec<String>,
    pub created_at: i64,
    pub actor: Option<String>,
    /// Why it was made, when not by `config set`/`unset` (a rollback).
    pub note: Option<String>,
}

impl ConfigVersion {
    fn from_row(r: &SqliteRow) -> ConfigVersion {
        ConfigVersion {
            app: r.get("app"),
            environment: r.get("environment"),
            version: r.get("version"),
            keys: serde_json::from_str(r.get::<&str, _>("keys")).unwrap_or_default(),
            created_at: r.get("created_at"),
            actor: r.get("actor"),
            note: r.get("note"),
        }
    }
}

pub(crate) const CONFIG_SCHEMA: &str = "CREATE TABLE config_versions (
        app         TEXT NOT NULL,
        environment TEXT NOT NULL,
        version     INTEGER NOT NULL,
        keys        TEXT NOT NULL,
        sealed      BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        actor       TEXT,
        note        TEXT,
        PRIMARY KEY (app, environment, version)
    );
    ALTER TABLE deployments ADD COLUMN config_version INTEGER";

impl Store {
    /// Writes the next version of an environment's config, sealed, with its
    /// audit entry, in one transaction; `change` makes it from the newest
    /// version's values (none before the first).
    pub async fn change_config(
        &self,
        key: &ConfigKey,
        app: &str,
        environment: &str,
        change: impl FnOnce(&mut BTreeMap<String, String>),
        note: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<ConfigVersion> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let newest = sqlx::query(
            "SELECT version, sealed FROM config_versions WHERE app = ? AND environment = ?
             ORDER BY version DESC LIMIT 1",
        )
        .bind(app)
        .bind(environment)
        .fetch_optional(&mut *tx)
        .await?;
        let (mut values, version) = match &newest {
            Some(row) => {
                let version: i64 = row.get("version");
                let sealed: Vec<u8> = row.get("sealed");
                (
                    key.open(&sealed, &context(app, environment, version))?,
                    version + 1,
                )
            }
            None => (BTreeMap::new(), 1),
        };
        change(&mut values);
        let keys: Vec<&String> = values.keys().collect();
        let sealed = key.seal(&values, &context(app, environment, version))?;
        sqlx::query(
            "INSERT INTO config_versions (app, environment, version, keys, sealed, created_at, actor, note)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(app)
        .bind(environment)
        .bind(version)
        .bind(serde_json::to_string(&keys).unwrap_or_default())
        .bind(sealed)
        .bind(now_ms())
        .bind(&audit.actor)
        .bind(note)
        .execute(&mut *tx)
        .await?;
        let mut audit = audit.clone();
        if let serde_json::Value::Object(detail) = &mut audit.detail {
            detail.insert("version".into(), version.into());
        }
        flags::audit(&mut tx, &audit).await?;
        tx.commit().await?;
        self.config_version(app, environment, Some(version))
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no config version {version}")))
    }

    /// A version of an environment's config (the newest with `None`),
    /// without its values.
    pub async fn config_version(
        &self,
        app: &str,
        environment: &str,
        version: Option<i64>,
    ) -> Result<Option<ConfigVersion>> {
        let row = sqlx::query(
            "SELECT * FROM config_versions WHERE app = ? AND environment = ? AND (? IS NULL OR version = ?)
             ORDER BY version DESC LIMIT 1",
        )
        .bind(app)
        .bind(environment)
        .bind(version)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(ConfigVersion::from_row))
    }

    /// The values of one version, opened with the key.
    pub async fn config_values(
        &self,
        key: &ConfigKey,
        app: &str,
        environment: &str,
        version: i64,
    ) -> Result<BTreeMap<String, String>> {
        let sealed: Vec<u8> = sqlx::query_scalar(
            "SELECT sealed FROM config_versions WHERE app = ? AND environment = ? AND version = ?",
        )
        .bind(app)
        .bind(environment)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "{app} in {environment} has no config version {version}"
            ))
        })?;
        key.open(&sealed, &context(app, environment, version))
    }

    /// Whether any config was ever sealed (with the data folder's key).
    pub async fn has_sealed_config(&self) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM config_versions LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// An environment's config versions, newest first.
    pub async fn config_history(
        &self,
        app: &str,
        environment: &str,
        limit: i64,
    ) -> Result<Vec<ConfigVersion>> {
        let rows = sqlx::query(
            "SELECT * FROM config_versions WHERE app = ? AND environment = ? ORDER BY version DESC LIMIT ?",
        )
        .bind(app)
        .bind(environment)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(ConfigVersion::from_row).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Actor;

    fn audit(action: &str) -> AuditEntry {
        Actor::new("ada", None).entry(
            action,
            "config of shop/production".into(),
            "shop",
            "production",
            serde_json::json!({ "keys": ["SECRET"] }),
        )
    }

    #[tokio::test]
    async fn values_are_sealed_in_the_file_and_versions_build_on_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("baton.db")).await.unwrap();
        let key = ConfigKey::load_or_create(&dir.path().join("config.key")).unwrap();
        let set = |k: &'static str, v: &'static str| {
            move |values: &mut BTreeMap<String, String>| {
                values.insert(k.into(), v.into());
            }
        };
        let first = store
            .change_config(
                &key,
                "shop",
                "production",
                set("SECRET", "plaintext-value-1"),
                None,
                &audit("config.set"),
            )
            .await
            .unwrap();
        assert_eq!(
            (first.version, first.keys.clone()),
            (1, vec!["SECRET".into()])
        );
        let second = store
            .change_config(
                &key,
                "shop",
                "production",
                set("OTHER", "x"),
                None,
                &audit("config.set"),
            )
            .await
            .unwrap();
        assert_eq!(second.version, 2);
        let values = store
            .config_values(&key, "shop", "production", 2)
            .await
            .unwrap();
        assert_eq!(values["SECRET"], "plaintext-value-1");
        assert_eq!(values["OTHER"], "x");
        // Nothing in clear on disk, WAL included.
        drop(store);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes
                .windows(b"plaintext-value".len())
                .any(|w| w == b"plaintext-value"));
        }
        // The same key opens them after a restart; another key does not.
        let store = Store::open(&dir.path().join("baton.db")).await.unwrap();
        let again = ConfigKey::load_or_create(&dir.path().join("config.key")).unwrap();
        assert!(store
            .config_values(&again, "shop", "production", 1)
            .await
            .is_ok());
        let other = ConfigKey::load_or_create(&dir.path().join("other.key")).unwrap();
        let refused = store
            .config_values(&other, "shop", "production", 1)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("config.key"), "{refused}");
        // Audited with the version, never the value.
        let log = store.audit_log(Some("shop"), 10).await.unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].detail["version"], 2);
        assert!(!log[0].detail.to_string().contains("plaintext"));
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.key");
        ConfigKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = ConfigKey::load_or_create(&path).unwrap_err();
        assert!(refused.to_string().contains("chmod 600"), "{refused}");
    }
}
