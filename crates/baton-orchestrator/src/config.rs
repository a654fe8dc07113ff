//! Config vars kept outside the code (`baton config set|unset|list`). A
//! config change is a new
//! version of the environment's set, sealed in the store with its audit
//! entry, then a deployment of the live release with it (blue-green, as
//! any deploy: zero downtime). Each deployment records the version its
//! target runs with, so a rollback brings back release and config
//! together. Values go into targets' environments and nowhere else: not
//! in events, audit entries, logs or answers (unless an admin asks to
//! see them, `reveal`).

use std::collections::BTreeMap;

use baton_proxy::RouteKey;
use baton_store::{ConfigVersion, Deployment, EventKind};
use serde::{Deserialize, Serialize};

use crate::{Actor, Error, Orchestrator, Result};

/// At most this many variables per environment, each name and value bounded.
const MAX_VARS: usize = 200;
const MAX_VALUE: usize = 32 * 1024;

/// What `baton config set|unset` asks for.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigChange {
    Set(BTreeMap<String, String>),
    Unset(Vec<String>),
}

/// Names only: the values are secrets.
impl std::fmt::Debug for ConfigChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigChange::Set(values) => f
                .debug_tuple("Set")
                .field(&values.keys().collect::<Vec<_>>())
                .finish(),
            ConfigChange::Unset(names) => f.debug_tuple("Unset").field(names).finish(),
        }
    }
}

impl ConfigChange {
    fn names(&self) -> Vec<String> {
        match self {
            ConfigChange::Set(values) => values.keys().cloned().collect(),
            ConfigChange::Unset(names) => names.clone(),
        }
    }
}

/// What a change did: the new version, and the deployment that applies it
/// (none when nothing runs in the environment yet).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigChanged {
    pub version: ConfigVersion,
    pub deployment: Option<Deployment>,
}

/// One variable an environment's targets get, and where it comes from.
#[derive(Clone, Serialize, Deserialize)]
pub struct ConfigVar {
    pub name: String,
    /// `config` (`baton config set`) or `baton.toml` (`[env]`).
    pub source: String,
    /// Set by both: the config's value wins.
    pub overrides_manifest: bool,
    /// Only when an admin asked to reveal the values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The value, when revealed, stays out of logs.
impl std::fmt::Debug for ConfigVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigVar")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("overrides_manifest", &self.overrides_manifest)
            .field("value", &self.value.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// `baton config list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigListing {
    pub app: String,
    pub environment: String,
    /// The newest config version (what the next deploy runs with).
    pub version: Option<i64>,
    /// The version the live target runs with.
    pub live_version: Option<i64>,
    pub vars: Vec<ConfigVar>,
}

fn check_change(change: &ConfigChange) -> Result<()> {
    let names = change.names();
    if names.is_empty() {
        return Err(Error::Invalid(
            "name at least one variable, like `baton config set APP KEY=VALUE`".into(),
        ));
    }
    for name in &names {
        baton_manifest::check_env_key(name).map_err(Error::Invalid)?;
    }
    if let ConfigChange::Set(values) = change {
        for (name, value) in values {
            if value.len() > MAX_VALUE {
                return Err(Error::Invalid(format!(
                    "the value of {name} is {} bytes; keep it under {MAX_VALUE} (put large files in the release)",
                    value.len()
                )));
            }
            if value.contains('\0') {
                return Err(Error::Invalid(format!(
                    "the value of {name} contains a NUL byte, which no environment variable can hold"
                )));
            }
        }
    }
    Ok(())
}

impl Orchestrator {
    /// Writes the next config version of `app` in `environment` and, when
    /// something is live there, deploys the live release again with it.
    pub async fn change_config(
        self: &std::sync::Arc<Self>,
        app: &str,
        environment: &str,
        change: ConfigChange,
        actor: &Actor,
    ) -> Result<ConfigChanged> {
        crate::check_environment(environment)?;
        check_change(&change)?;
        if self.store.releases(app).await?.is_empty() {
            return Err(Error::NotFound(format!(
                "no app {app}: deploy it once first (`baton deploy DIR`), then set its config"
            )));
        }
        let current = self.store.config_version(app, environment, None).await?;
        let set: Vec<String> = current.map(|v| v.keys).unwrap_or_default();
        if let ConfigChange::Unset(names) = &change {
            if let Some(missing) = names.iter().find(|n| !set.contains(n)) {
                return Err(Error::Invalid(format!(
                    "{missing} is not set for {app} in {environment} (`baton config list {app} -e {environment}` shows what is)"
                )));
            }
        }
        if let ConfigChange::Set(values) = &change {
            let total = set
                .iter()
                .chain(values.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            if total > MAX_VARS {
                return Err(Error::Invalid(format!(
                    "{app} in {environment} would have {total} config variables; at most {MAX_VARS}"
                )));
            }
        }
        let names = change.names();
        let action = match change {
            ConfigChange::Set(_) => "config.set",
            ConfigChange::Unset(_) => "config.unset",
        };
        let entry = actor.entry(
            action,
            format!("config of {app}/{environment}"),
            app,
            environment,
            serde_json::json!({ "keys": names }),
        );
        let version = self
            .store
            .change_config(
                &self.config_key,
                app,
                environment,
                |values| match change {
                    ConfigChange::Set(new) => values.extend(new),
                    ConfigChange::Unset(gone) => values.retain(|k, _| !gone.contains(k)),
                },
                None,
                &entry,
            )
            .await?;
        let verb = if action == "config.set" {
            "set"
        } else {
            "unset"
        };
        let key = RouteKey::new(app, environment);
        let message = format!(
            "config version {} by {}: {verb} {}",
            version.version,
            actor.name,
            names.join(", ")
        );
        self.event(&key, EventKind::ConfigChanged, &message).await;
        let deployment = match self.live_target(app, environment).await? {
            Some(_) => Some(
                self.restart(app, environment, actor)
                    .await
                    .map_err(|e| match e {
                        Error::Refused(why) => Error::Refused(format!(
                            "config version {} is saved, but not running yet: {why}; then `baton restart {app} -e {environment}` applies it",
                            version.version
                        )),
                        e => e,
                    })?,
            ),
            None => None,
        };
        Ok(ConfigChanged {
            version,
            deployment,
        })
    }

    /// The variables of `app` in `environment`: the manifest's `[env]` of
    /// the live release (or the newest) and the config's, with the values
    /// when `reveal` (the edge checks that the asker is an admin).
    pub async fn config_listing(
        &self,
        app: &str,
        environment: &str,
        reveal: bool,
    ) -> Result<ConfigListing> {
        crate::check_environment(environment)?;
        let releases = self.store.releases(app).await?;
        if releases.is_empty() {
            return Err(Error::NotFound(format!(
                "no app {app}: deploy it once first (`baton deploy DIR`)"
            )));
        }
        let live = self.live_target(app, environment).await?;
        let release = match &live {
            Some(target) => self.store.release(&target.release_id).await?,
            None => releases
                .into_iter()
                .max_by_key(|r| r.created_at)
                .ok_or_else(|| Error::NotFound(format!("no release of {app}")))?,
        };
        let manifest_env = baton_manifest::Manifest::parse(&release.manifest, "baton.toml")
            .map(|m| m.environment(environment).env)
            .unwrap_or_default();
        let newest = self.store.config_version(app, environment, None).await?;
        let config = match (&newest, reveal) {
            (Some(v), true) => {
                self.config_values(app, environment, Some(v.version))
                    .await?
            }
            (Some(v), false) => v.keys.iter().map(|k| (k.clone(), String::new())).collect(),
            (None, _) => BTreeMap::new(),
        };
        let mut vars: Vec<ConfigVar> = config
            .iter()
            .map(|(name, value)| ConfigVar {
                name: name.clone(),
                source: "config".into(),
                overrides_manifest: manifest_env.contains_key(name),
                value: reveal.then(|| value.clone()),
            })
            .collect();
        vars.extend(
            manifest_env
                .iter()
                .filter(|(name, _)| !config.contains_key(*name))
                .map(|(name, value)| ConfigVar {
                    name: name.clone(),
                    source: "baton.toml".into(),
                    overrides_manifest: false,
                    value: reveal.then(|| value.clone()),
                }),
        );
        vars.sort_by(|a, b| a.name.cmp(&b.name));
        let live_version = match live.and_then(|t| t.deployment_id) {
            Some(d) => self.store.deployment(d).await?.config_version,
            None => None,
        };
        Ok(ConfigListing {
            app: app.to_string(),
            environment: environment.to_string(),
            version: newest.map(|v| v.version),
            live_version,
            vars,
        })
    }

    /// The values of one config version (none: no config yet).
    pub(crate) async fn config_values(
        &self,
        app: &str,
        environment: &str,
        version: Option<i64>,
    ) -> Result<BTreeMap<String, String>> {
        match version {
            Some(version) => Ok(self
                .store
                .config_values(&self.config_key, app, environment, version)
                .await?),
            None => Ok(BTreeMap::new()),
        }
    }

    /// The config version a target runs with: its deployment's.
    pub(crate) async fn config_of_target(&self, deployment: Option<i64>) -> Result<Option<i64>> {
        match deployment {
            Some(id) => Ok(self.store.deployment(id).await?.config_version),
            None => Ok(None),
        }
    }

    /// After a rollback to a release running an older config: that config
    /// becomes the newest again, so the next deploy keeps it (as Heroku's
    /// rollbacks do).
    pub(crate) async fn restore_config(&self, deployment: &Deployment) {
        let (app, environment) = (&deployment.app, &deployment.environment);
        let newest = match self.store.config_version(app, environment, None).await {
            Ok(newest) => newest.map(|v| v.version),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the config after a rollback");
                return;
            }
        };
        if newest.is_none() || newest == deployment.config_version {
            return;
        }
        let restored = match self
            .config_values(app, environment, deployment.config_version)
            .await
        {
            Ok(values) => values,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the config a rollback went back to");
                return;
            }
        };
        let actor = Actor::system(
            deployment
                .actor
                .clone()
                .unwrap_or_else(|| "baton".to_string()),
        );
        let from = deployment
            .config_version
            .map(|v| format!("version {v}"))
            .unwrap_or_else(|| "no config".into());
        let entry = actor.entry(
            "config.restore",
            format!("config of {app}/{environment}"),
            app,
            environment,
            serde_json::json!({ "from": deployment.config_version, "deployment": deployment.id }),
        );
        let note = format!("restored {from} by rollback (deployment {})", deployment.id);
        let written = self
            .store
            .change_config(
                &self.config_key,
                app,
                environment,
                |values| *values = restored,
                Some(&note),
                &entry,
            )
            .await;
        match written {
            Ok(version) => {
                let message = format!("config version {}: {note}", version.version);
                self.event(
                    &RouteKey::new(app, environment),
                    EventKind::ConfigChanged,
                    &message,
                )
                .await;
            }
            Err(e) => tracing::error!(error = %e, "cannot restore the config after a rollback"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shell_safe_and_never_baton_s_own() {
        let set = |name: &str| ConfigChange::Set(BTreeMap::from([(name.to_string(), "v".into())]));
        for good in ["DATABASE_URL", "secret_key", "_X1"] {
            assert!(check_change(&set(good)).is_ok(), "{good}");
        }
        for bad in ["", "1X", "A-B", "A B", "A=B", "PORT", "BATON_RELEASE"] {
            assert!(check_change(&set(bad)).is_err(), "{bad:?}");
        }
        assert!(check_change(&set(&"A".repeat(129))).is_err());
    }

    #[test]
    fn a_change_names_something_and_values_are_bounded() {
        assert!(check_change(&ConfigChange::Set(BTreeMap::new())).is_err());
        let big = ConfigChange::Set(BTreeMap::from([(
            "BIG".to_string(),
            "x".repeat(MAX_VALUE + 1),
        )]));
        assert!(check_change(&big)
            .unwrap_err()
            .to_string()
            .contains("under"));
        let nul = ConfigChange::Set(BTreeMap::from([("A".to_string(), "a\0b".to_string())]));
        assert!(check_change(&nul).is_err());
    }
}
