//! The app's database in a deployment: the expand half of its pending
//! migrations before the new release starts, the contract half once no
//! target of an older release is live or warm ([`plan::contract_may_run`],
//! also asked by `baton db migrate` before it applies a contract by hand,
//! which is then recorded like one the server applied), and the deploys
//! and rollbacks that a contract already applied makes unsafe.

use std::path::PathBuf;
use std::sync::Arc;

use baton_db::{Database, Options, Phases};
use baton_manifest::{DatabaseSection, Manifest};
use baton_migrate::{Migration, Version};
use baton_proxy::RouteKey;
use baton_store::Actor;
use baton_store::EventKind;
use baton_store::{Contract, ContractState, DeploymentKind, Release};

use crate::deploy::Job;
use crate::plan::{self, ContractWait};
use crate::{Error, Orchestrator, Result};

/// Contract migrations applied by hand (`baton db migrate`), as the server
/// recorded them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContractByHand {
    pub contract: Contract,
    /// Why the contract rule said to wait, when `force` overrode it.
    pub forced_past: Option<String>,
}

/// How the runner migrates (and the linter judges) an app's database, from
/// its manifest's `[database]` section: the one translation the deploy and
/// `baton db` share, so that both count the same findings.
pub fn database_options(database: &DatabaseSection) -> std::result::Result<Options, String> {
    let mut options = Options {
        lock_timeout: database.lock_timeout,
        installed_by: None,
        ..Options::default()
    };
    options.settings.out_of_order = database.out_of_order;
    if let Some(version) = &database.baseline_on_migrate {
        options.settings.baseline_on_migrate = Some(Version::parse(version).map_err(|e| {
            format!("baton.toml: field `database.baseline_on_migrate`: {version:?}: {e}")
        })?);
    }
    Ok(options)
}

/// What a release needs to migrate its database in one environment.
struct Target {
    files: Vec<Migration>,
    url: String,
    options: Options,
}

impl Orchestrator {
    fn migrations_of(
        &self,
        release: &Release,
        manifest: &Manifest,
    ) -> std::result::Result<Option<(DatabaseSection, Vec<Migration>)>, String> {
        let Some(database) = manifest.database.clone() else {
            return Ok(None);
        };
        let folder: PathBuf = self.release_dir(&release.id).join(&database.migrations);
        let files = baton_migrate::discover(&folder)
            .map_err(|e| format!("{}: {e}", database.migrations))?
            .migrations;
        Ok(Some((database, files)))
    }

    fn database_target(
        &self,
        release: &Release,
        manifest: &Manifest,
        environment: &str,
    ) -> std::result::Result<Option<Target>, String> {
        let Some((database, files)) = self.migrations_of(release, manifest)? else {
            return Ok(None);
        };
        let url = manifest
            .environment(environment)
            .env
            .get(&database.url_env)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "baton.toml: field `database.url_env`: {var} is not set for environment {environment}; set it in [environments.{environment}.env] (or [env]) so Baton and the app reach the same database",
                    var = database.url_env
                )
            })?;
        let mut options = database_options(&database)?;
        options.refuse_unsafe = true;
        options.settings.command_args = Some(format!("-e {environment}"));
        Ok(Some(Target {
            files,
            url,
            options,
        }))
    }

    /// The `migrate` step: refuses a release older than a contract already
    /// applied, refuses any pending migration the linter finds unsafe (before
    /// applying anything), applies the expand half, and returns the contract
    /// half left for later.
    pub(crate) async fn migrate_expand(
        &self,
        job: &Job,
    ) -> std::result::Result<(Vec<String>, Option<String>), String> {
        let Some(target) =
            self.database_target(&job.release, &job.manifest, &job.key.environment)?
        else {
            return Ok((Vec::new(), Some("no database".into())));
        };
        self.check_not_older_than_contracts(&job.key, &job.release, &target.files)
            .await
            .map_err(|e| e.to_string())?;
        let mut db = Database::connect(&target.url)
            .await
            .map_err(|e| e.to_string())?;
        let result =
            baton_db::migrate(&mut db, &target.files, &target.options, Phases::Expand).await;
        db.close().await;
        let report = result.map_err(|e| e.to_string())?;
        let applied: Vec<&str> = report.applied.iter().map(|a| a.script.as_str()).collect();
        let mut detail = if applied.is_empty() {
            "no expand migration to apply".to_string()
        } else {
            format!("applied {}", applied.join(", "))
        };
        if !report.left.is_empty() {
            detail.push_str(&format!(
                "; left for once no older release runs (contract): {}",
                report.left.join(", ")
            ));
        }
        Ok((report.left, Some(detail)))
    }

    /// After a successful deployment: a deploy leaves its contract half
    /// pending (replacing any older one); a rollback drops the pending one,
    /// whose release is no longer live.
    pub(crate) async fn record_contracts(&self, job: &Job, contracts: &[String]) {
        let (app, environment) = (&job.key.app, &job.key.environment);
        let recorded = if contracts.is_empty() || job.deployment.kind == DeploymentKind::Rollback {
            self.store
                .drop_pending_contracts(
                    app,
                    environment,
                    &format!("deployment {} went live first", job.deployment.id),
                )
                .await
                .map(|_| ())
        } else {
            self.store
                .put_contract(
                    app,
                    environment,
                    &job.release.id,
                    job.deployment.id,
                    contracts,
                )
                .await
                .map(|_| ())
        };
        if let Err(e) = recorded {
            tracing::error!(app, environment, error = %e, "cannot record the contract migrations");
        }
    }

    /// Applies each pending contract whose release is the only one left
    /// live or warm in its environment. Called by the reaper loop.
    pub(crate) async fn apply_due_contracts(self: &Arc<Self>) {
        let Ok(pending) = self.store.pending_contracts().await else {
            return;
        };
        for contract in pending {
            match self.contract_due(&contract).await {
                Ok(true) => self.apply_contract(&contract).await,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(contract = contract.id, error = %e, "cannot check a pending contract")
                }
            }
        }
    }

    async fn contract_due(&self, contract: &Contract) -> Result<bool> {
        let (live, running) = self
            .running_in(&contract.app, &contract.environment)
            .await?;
        Ok(plan::contract_may_run(
            contract.release_id.as_deref(),
            &[],
            live.as_deref(),
            &running,
        )
        .is_ok())
    }

    /// The live release of an environment and every target still running
    /// there: what the contract rule looks at.
    async fn running_in(
        &self,
        app: &str,
        environment: &str,
    ) -> Result<(Option<String>, Vec<baton_store::TargetRecord>)> {
        let targets = self.store.targets_of(app, environment).await?;
        let live = self.live_target(app, environment).await?;
        Ok((live.map(|t| t.release_id), targets))
    }

    /// Contract migrations about to be applied by hand (`baton db migrate`):
    /// refused while the contract rule says to wait, unless `force`; then
    /// recorded as applied for the live release, before they run, with the
    /// audit entry (the principal as actor) in the same transaction, so
    /// that no deploy or rollback goes back past them.
    pub async fn record_contract_by_hand(
        &self,
        app: &str,
        environment: &str,
        scripts: &[String],
        force: bool,
        actor: &Actor,
    ) -> Result<ContractByHand> {
        baton_manifest::check_name("environment", environment).map_err(Error::Invalid)?;
        if scripts.is_empty() {
            return Err(Error::Invalid(
                "field `scripts`: name the contract migrations to apply".into(),
            ));
        }
        let key = RouteKey::new(app, environment);
        let (live, running) = self.running_in(app, environment).await?;
        let live_release = match &live {
            Some(id) => Some(self.store.release(id).await?),
            None => None,
        };
        let missing: Vec<String> = match &live_release {
            Some(release) => {
                let files = self.files_of(release)?;
                scripts
                    .iter()
                    .filter(|s| !files.iter().any(|m| &m.script == *s))
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        let wait: Option<ContractWait> =
            plan::contract_may_run(live.as_deref(), &missing, live.as_deref(), &running).err();
        if let (Some(wait), false) = (&wait, force) {
            return Err(Error::Refused(format!(
                "not yet in {environment}: {wait}; Baton applies a deployment's contract half by itself once no older release is live or warm there"
            )));
        }
        let deployment = match &live {
            Some(release) => self
                .store
                .deployments(app, 200)
                .await?
                .into_iter()
                .find(|d| {
                    d.environment == environment
                        && &d.release_id == release
                        && d.state == baton_store::DeploymentState::Succeeded
                })
                .map(|d| d.id),
            None => None,
        };
        let forced_past = wait.as_ref().map(|w| w.to_string());
        let detail = match &forced_past {
            Some(why) => format!(
                "applied by hand by {} with --force although {why}",
                actor.name
            ),
            None => format!("applied by hand by {}", actor.name),
        };
        let audit = actor.entry(
            "contract.apply_by_hand",
            format!("contract migrations of {app} in {environment}"),
            app,
            environment,
            serde_json::json!({
                "scripts": scripts,
                "release": live,
                "forced": forced_past.is_some(),
                "waited_for": forced_past,
            }),
        );
        let contract = self
            .store
            .record_contract_by_hand(
                app,
                environment,
                live.as_deref(),
                deployment,
                scripts,
                &detail,
                &audit,
            )
            .await?;
        self.event(
            &key,
            EventKind::ContractApplied,
            &format!(
                "{} {}: {detail}",
                if scripts.len() == 1 {
                    "contract migration"
                } else {
                    "contract migrations"
                },
                scripts.join(", ")
            ),
        )
        .await;
        Ok(ContractByHand {
            contract,
            forced_past,
        })
    }

    async fn apply_contract(&self, contract: &Contract) {
        let key = RouteKey::new(&contract.app, &contract.environment);
        let outcome = async {
            let Some(release_id) = &contract.release_id else {
                return Err("the contract names no release".to_string());
            };
            let release = self
                .store
                .release(release_id)
                .await
                .map_err(|e| e.to_string())?;
            let manifest =
                Manifest::parse(&release.manifest, "baton.toml").map_err(|e| e.to_string())?;
            let Some(mut target) =
                self.database_target(&release, &manifest, &contract.environment)?
            else {
                return Err("the release no longer has a [database] section".to_string());
            };
            // The gate ran when the deployment applied the expand half.
            target.options.refuse_unsafe = false;
            let mut db = Database::connect(&target.url)
                .await
                .map_err(|e| e.to_string())?;
            let result =
                baton_db::migrate(&mut db, &target.files, &target.options, Phases::Contract).await;
            db.close().await;
            let report = result.map_err(|e| e.to_string())?;
            let applied: Vec<&str> = report.applied.iter().map(|a| a.script.as_str()).collect();
            Ok(if applied.is_empty() {
                "nothing left to apply".to_string()
            } else {
                format!("applied {}", applied.join(", "))
            })
        }
        .await;
        let short = contract
            .release_id
            .as_deref()
            .map_or("?", baton_package::short_id)
            .to_string();
        let (state, kind, message) = match &outcome {
            Ok(detail) => (
                ContractState::Applied,
                EventKind::ContractApplied,
                format!(
                    "contract migrations of release {short} (deployment {}): {detail}",
                    contract.deployment_id.unwrap_or_default()
                ),
            ),
            Err(e) => (
                ContractState::Failed,
                EventKind::ContractFailed,
                format!(
                    "contract migrations of release {short} (deployment {}) failed: {e}; fix and run `baton db migrate -e {} --phase contract`",
                    contract.deployment_id.unwrap_or_default(),
                    contract.environment
                ),
            ),
        };
        let detail = outcome.unwrap_or_else(|e| e);
        match self
            .store
            .finish_contract(contract.id, state, &detail)
            .await
        {
            Ok(true) => self.event(&key, kind, &message).await,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(contract = contract.id, error = %e, "cannot record a contract's end")
            }
        }
    }

    /// Refuses a release that lacks a contract migration already applied in
    /// this environment (by the server or by hand): its code may use what
    /// that migration removed.
    pub(crate) async fn check_not_older_than_contracts(
        &self,
        key: &RouteKey,
        release: &Release,
        files: &[Migration],
    ) -> Result<()> {
        let contracts = self.store.contracts(&key.app, &key.environment).await?;
        for contract in contracts
            .iter()
            .filter(|c| c.state == ContractState::Applied)
        {
            for script in &contract.scripts {
                if !files.iter().any(|m| &m.script == script) {
                    let by = match (&contract.actor, &contract.release_id) {
                        (Some(actor), _) => format!("by hand by {actor}"),
                        (None, Some(owner)) => {
                            format!("by release {}", baton_package::short_id(owner))
                        }
                        (None, None) => "earlier".to_string(),
                    };
                    return Err(Error::Refused(format!(
                        "release {} predates contract migration {script}, applied in {} {by}: its code may use what that migration removed; deploy a newer release instead",
                        baton_package::short_id(&release.id),
                        key.environment,
                    )));
                }
            }
        }
        Ok(())
    }

    /// The migration files a release ships (none without `[database]`).
    fn files_of(&self, release: &Release) -> Result<Vec<Migration>> {
        let manifest = Manifest::parse(&release.manifest, "baton.toml")
            .map_err(|e| Error::Invalid(e.to_string()))?;
        match self.migrations_of(release, &manifest) {
            Ok(Some((_, files))) => Ok(files),
            Ok(None) => Ok(Vec::new()),
            Err(e) => Err(Error::Invalid(e)),
        }
    }

    /// The rollback check, warm release or not: a contract applied by hand
    /// may have run while the release was warm.
    pub(crate) async fn check_rollback_schema(
        &self,
        key: &RouteKey,
        release: &Release,
    ) -> Result<()> {
        let files = self.files_of(release)?;
        self.check_not_older_than_contracts(key, release, &files)
            .await
    }
}
