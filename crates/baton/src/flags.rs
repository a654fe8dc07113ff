//! `baton flags …`: feature flags per app and environment, flags.toml
//! applied or compared, API keys for OFREP and Unleash clients, and the
//! audit log. Every subcommand is a few calls to the API; nothing is
//! decided here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use baton_flags::FlagSpec;
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::client::Api;
use crate::output::{ago, bold, dim, green, red, table};
use crate::{Common, EnvArg};

#[derive(Subcommand)]
pub enum FlagsCommand {
    /// An app's flags in an environment.
    List {
        /// The app's name (as in its baton.toml).
        app: String,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// One flag with all its settings.
    Get {
        /// The app's name (as in its baton.toml).
        app: String,
        /// The flag's name.
        flag: String,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// Create a flag (off unless --enabled true).
    Create {
        /// The app's name (as in its baton.toml).
        app: String,
        /// The flag's name.
        flag: String,
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// Change some of a flag's settings; the others stay as they are.
    Set {
        /// The app's name (as in its baton.toml).
        app: String,
        /// The flag's name.
        flag: String,
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// Turn a flag on (for whom its rules say).
    Enable {
        /// The app's name (as in its baton.toml).
        app: String,
        /// The flag's name.
        flag: String,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// Turn a flag off for everyone.
    Disable {
        /// The app's name (as in its baton.toml).
        app: String,
        /// The flag's name.
        flag: String,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a flag from an environment.
    Delete {
        /// The app's name (as in its baton.toml).
        app: String,
        /// The flag's name.
        flag: String,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// Make the server's flags match the app's flags.toml.
    Apply {
        /// The app's folder, holding baton.toml and flags.toml.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Also delete flags that are on the server but not in the file.
        #[arg(long)]
        prune: bool,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// Show how the server's flags differ from flags.toml, one line per
    /// flag and field (server → file); exits 1 if `apply` (with the same
    /// --prune) would change anything. --json prints the raw differences.
    Diff {
        /// The app's folder, holding baton.toml and flags.toml.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Count flags only on the server as differences to delete.
        #[arg(long)]
        prune: bool,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// API keys for OFREP and Unleash clients, one app and environment each.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Who changed what, newest first. With APP: only changes to that
    /// app's flags and API keys, each with what it was before and after.
    Audit {
        /// Only this app's flag and key changes.
        app: Option<String>,
        /// How many entries to list.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is shown this once.
    Create {
        /// The app's name (as in its baton.toml).
        app: String,
        /// What uses the key, e.g. "web" or "checkout-service".
        name: String,
        /// A web origin whose pages may use the key from the browser
        /// (CORS), e.g. https://shop.example; repeat for more.
        #[arg(long = "origin", value_name = "ORIGIN")]
        origins: Vec<String>,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// An app's keys (never the keys themselves).
    List {
        /// The app's name (as in its baton.toml).
        app: String,
        #[command(flatten)]
        common: Common,
    },
    /// Revoke a key: clients using it get 403 from then on.
    Revoke {
        /// The app's name (as in its baton.toml).
        app: String,
        /// The key's number (see `baton flags keys list APP`).
        id: i64,
        #[command(flatten)]
        common: Common,
    },
}

/// A flag's settings on the command line; what is not given is not changed.
#[derive(Args, Default)]
pub struct Settings {
    /// On (for whom the rules say) or off (for everyone).
    #[arg(long)]
    enabled: Option<bool>,
    /// What the flag is for, shown in lists and the dashboard.
    #[arg(long)]
    description: Option<String>,
    /// User ids that always get the flag, comma-separated ("" for none).
    #[arg(long)]
    users: Option<String>,
    /// Values of the context's `group` field that always get the flag.
    #[arg(long)]
    groups: Option<String>,
    /// Percentage (0-100) of everyone else who gets the flag.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    rollout: Option<u8>,
    /// Remove the rollout limit (everyone matching the constraints).
    #[arg(long, conflicts_with = "rollout")]
    no_rollout: bool,
    /// The context field the rollout sticks to [default: userId].
    #[arg(long)]
    stickiness: Option<String>,
    /// "FIELD OPERATOR VALUE[,VALUE…]", e.g. "country IN FR,BE" or
    /// "version SEMVER_GTE 2.0.0"; repeat for more (replaces the list).
    #[arg(long = "constraint")]
    constraints: Vec<String>,
    /// Remove every constraint.
    #[arg(long, conflicts_with = "constraints")]
    no_constraints: bool,
    /// "NAME[:WEIGHT[:TYPE=VALUE]]", e.g. "blue:50:string=#00f"; repeat for
    /// more (replaces the list).
    #[arg(long = "variant")]
    variants: Vec<String>,
    /// Remove every variant (the flag answers on/off).
    #[arg(long, conflicts_with = "variants")]
    no_variants: bool,
}

impl Settings {
    /// The settings as a JSON merge patch (`null` clears a field).
    fn patch(&self) -> Result<Map<String, Value>> {
        let mut patch = Map::new();
        let list = |text: &str| -> Value {
            let items: Vec<&str> = text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            json!(items)
        };
        if let Some(enabled) = self.enabled {
            patch.insert("enabled".into(), json!(enabled));
        }
        if let Some(description) = &self.description {
            patch.insert("description".into(), json!(description));
        }
        if let Some(users) = &self.users {
            patch.insert("users".into(), list(users));
        }
        if let Some(groups) = &self.groups {
            patch.insert("groups".into(), list(groups));
        }
        if let Some(rollout) = self.rollout {
            patch.insert("rollout".into(), json!(rollout));
        }
        if self.no_rollout {
            patch.insert("rollout".into(), Value::Null);
        }
        if let Some(stickiness) = &self.stickiness {
            patch.insert("stickiness".into(), json!(stickiness));
        }
        if !self.constraints.is_empty() {
            let parsed = self
                .constraints
                .iter()
                .map(|c| constraint(c))
                .collect::<Result<Vec<_>>>()?;
            patch.insert("constraints".into(), json!(parsed));
        }
        if self.no_constraints {
            patch.insert("constraints".into(), json!([]));
        }
        if !self.variants.is_empty() {
            let parsed = self
                .variants
                .iter()
                .map(|v| variant(v))
                .collect::<Result<Vec<_>>>()?;
            patch.insert("variants".into(), json!(parsed));
        }
        if self.no_variants {
            patch.insert("variants".into(), json!([]));
        }
        Ok(patch)
    }
}

fn constraint(text: &str) -> Result<Value> {
    let mut parts = text.trim().splitn(3, char::is_whitespace);
    let (Some(field), Some(operator), Some(rest)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(anyhow!(
            "--constraint {text:?}: write it as \"FIELD OPERATOR VALUE[,VALUE…]\", e.g. \"country IN FR,BE\""
        ));
    };
    let operator = operator.to_ascii_uppercase();
    let single = ["NUM_", "DATE_", "SEMVER_"]
        .iter()
        .any(|p| operator.starts_with(p))
        || operator == "REGEX";
    Ok(if single {
        json!({"field": field, "operator": operator, "value": rest.trim()})
    } else {
        let values: Vec<&str> = rest.split(',').map(str::trim).collect();
        json!({"field": field, "operator": operator, "values": values})
    })
}

fn variant(text: &str) -> Result<Value> {
    let mut parts = text.splitn(3, ':');
    let name = parts.next().unwrap_or_default();
    let mut out = json!({"name": name});
    if let Some(weight) = parts.next() {
        let weight: u32 = weight.trim().parse().map_err(|_| {
            anyhow!("--variant {text:?}: the weight {weight:?} is not a whole number")
        })?;
        out["weight"] = json!(weight);
    }
    if let Some(payload) = parts.next() {
        let (kind, value) = payload.split_once('=').ok_or_else(|| {
            anyhow!("--variant {text:?}: write the payload as TYPE=VALUE, e.g. string=#00f")
        })?;
        out["payload"] = json!({"type": kind, "value": value});
    }
    Ok(out)
}

/// A flag as the API returns it.
#[derive(Deserialize, serde::Serialize)]
struct Flag {
    /// The app's name (as in its baton.toml).
    app: String,
    environment: String,
    name: String,
    #[serde(flatten)]
    spec: FlagSpec,
    updated_at: i64,
}

fn path(app: &str, flag: Option<&str>, environment: &str) -> String {
    match flag {
        Some(flag) => format!("/apps/{app}/flags/{flag}?environment={environment}"),
        None => format!("/apps/{app}/flags?environment={environment}"),
    }
}

/// One line saying who gets the flag.
fn rules(spec: &FlagSpec) -> String {
    let mut parts = vec![];
    if !spec.users.is_empty() {
        parts.push(format!("users {}", spec.users.join(",")));
    }
    if !spec.groups.is_empty() {
        parts.push(format!("groups {}", spec.groups.join(",")));
    }
    for c in &spec.constraints {
        parts.push(constraint_text(c));
    }
    if let Some(rollout) = spec.rollout {
        parts.push(format!("{rollout} % by {}", spec.stickiness()));
    }
    if !spec.variants.is_empty() {
        let variants: Vec<String> = spec
            .variants
            .iter()
            .map(|v| format!("{} {}", v.name, v.weight))
            .collect();
        parts.push(format!("variants {}", variants.join(", ")));
    }
    if parts.is_empty() {
        "everyone".into()
    } else {
        parts.join("; ")
    }
}

fn state(spec: &FlagSpec) -> String {
    if spec.enabled {
        green("on")
    } else {
        red("off")
    }
}

fn print_flag(common: &Common, flag: &Flag, verb: &str) -> Result<ExitCode> {
    if common.json {
        println!("{}", serde_json::to_string_pretty(flag)?);
    } else {
        println!(
            "{verb} {}/{}/{}: {}, {}",
            flag.app,
            flag.environment,
            bold(&flag.name),
            state(&flag.spec),
            if flag.spec.enabled {
                rules(&flag.spec)
            } else {
                dim(&format!("when on: {}", rules(&flag.spec)))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(command: FlagsCommand) -> Result<ExitCode> {
    match command {
        FlagsCommand::List { app, env, common } => {
            let api = Api::new(&common.api);
            let flags: Vec<Flag> = api.get(&path(&app, None, &env.environment)).await?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&flags)?);
                return Ok(ExitCode::SUCCESS);
            }
            if flags.is_empty() {
                println!(
                    "{app} has no flags in {}. Create one with `baton flags create {app} NAME`, or add a flags.toml.",
                    env.environment
                );
                return Ok(ExitCode::SUCCESS);
            }
            let mut rows = vec![vec![
                "FLAG".into(),
                "STATE".into(),
                "WHO GETS IT WHEN ON".into(),
                "CHANGED".into(),
            ]];
            for f in &flags {
                rows.push(vec![
                    f.name.clone(),
                    state(&f.spec),
                    rules(&f.spec),
                    ago(f.updated_at),
                ]);
            }
            table(&rows);
            Ok(ExitCode::SUCCESS)
        }
        FlagsCommand::Get {
            app,
            flag,
            env,
            common,
        } => {
            let api = Api::new(&common.api);
            let flag: Flag = api.get(&path(&app, Some(&flag), &env.environment)).await?;
            print_flag(&common, &flag, "Flag")
        }
        FlagsCommand::Create {
            app,
            flag,
            settings,
            env,
            common,
        } => {
            let api = Api::new(&common.api);
            let mut body = settings.patch()?;
            body.retain(|_, v| !v.is_null());
            body.insert("name".into(), json!(flag));
            let created: Flag = api
                .post_json(&path(&app, None, &env.environment), &Value::Object(body))
                .await?;
            print_flag(&common, &created, "Created")
        }
        FlagsCommand::Set {
            app,
            flag,
            settings,
            env,
            common,
        } => {
            let patch = settings.patch()?;
            if patch.is_empty() {
                return Err(anyhow!(
                    "nothing to change: give settings such as --rollout 30 or --users alice,bob (see `baton flags set --help`)"
                ));
            }
            let api = Api::new(&common.api);
            let changed: Flag = api
                .patch_json(
                    &path(&app, Some(&flag), &env.environment),
                    &Value::Object(patch),
                )
                .await?;
            print_flag(&common, &changed, "Changed")
        }
        FlagsCommand::Enable {
            app,
            flag,
            env,
            common,
        } => switch(&app, &flag, &env.environment, &common, true).await,
        FlagsCommand::Disable {
            app,
            flag,
            env,
            common,
        } => switch(&app, &flag, &env.environment, &common, false).await,
        FlagsCommand::Delete {
            app,
            flag,
            env,
            common,
        } => {
            let api = Api::new(&common.api);
            let answer: Value = api
                .delete(&path(&app, Some(&flag), &env.environment))
                .await?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("Deleted {app}/{}/{flag}", env.environment);
            }
            Ok(ExitCode::SUCCESS)
        }
        FlagsCommand::Apply {
            dir,
            prune,
            env,
            common,
        } => file(&dir, &env.environment, &common, prune, false).await,
        FlagsCommand::Diff {
            dir,
            prune,
            env,
            common,
        } => file(&dir, &env.environment, &common, prune, true).await,
        FlagsCommand::Keys { command } => keys(command).await,
        FlagsCommand::Audit { app, limit, common } => audit(app.as_deref(), limit, &common).await,
    }
}

async fn switch(
    app: &str,
    flag: &str,
    environment: &str,
    common: &Common,
    on: bool,
) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let changed: Flag = api
        .patch_json(&path(app, Some(flag), environment), &json!({"enabled": on}))
        .await?;
    print_flag(common, &changed, if on { "Enabled" } else { "Disabled" })
}

/// `apply` and `diff`: the file is parsed by the server, which names the
/// file, line and field of any error.
async fn file(
    dir: &Path,
    environment: &str,
    common: &Common,
    prune: bool,
    dry_run: bool,
) -> Result<ExitCode> {
    let manifest = baton_manifest::Manifest::load(dir)?;
    let path = dir.join(baton_manifest::flags::FILE_NAME);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}; flags as code live in flags.toml beside baton.toml",
            path.display()
        )
    })?;
    let api = Api::new(&common.api);
    let app = &manifest.name;
    let answer: Value = api
        .post_json(
            &format!("/apps/{app}/flags-file"),
            &json!({"environment": environment, "text": text, "path": path.display().to_string(),
                    "prune": prune, "dry_run": dry_run}),
        )
        .await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    let changes: Vec<FlagDiff> = serde_json::from_value(answer["changes"].clone())
        .context("the server's list of flag differences")?;
    let drift = changes.iter().any(|c| c.change != "only_on_server");
    if !common.json {
        if changes.is_empty() {
            println!("{app} in {environment} matches {}", path.display());
        } else if dry_run {
            println!("{app} in {environment}: the server → {}", path.display());
        }
        for change in &changes {
            for line in diff_lines(change, dry_run) {
                println!("{line}");
            }
        }
    }
    Ok(if dry_run && drift {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One flag's difference between the server and flags.toml, as the API
/// returns it.
#[derive(Deserialize)]
struct FlagDiff {
    name: String,
    change: String,
    server: Option<FlagSpec>,
    file: Option<FlagSpec>,
}

/// The lines for one flag's difference: one per field that differs, each
/// `FLAG  FIELD: SERVER → FILE`.
fn diff_lines(diff: &FlagDiff, dry_run: bool) -> Vec<String> {
    let name = bold(&diff.name);
    let whole = |spec: &Option<FlagSpec>| spec.as_ref().map(summary).unwrap_or_default();
    match (diff.change.as_str(), dry_run) {
        ("create", true) => vec![format!(
            "{} {name}  only in the file: {}",
            green("+"),
            whole(&diff.file)
        )],
        ("create", false) => vec![format!(
            "{} {name}  created: {}",
            green("+"),
            whole(&diff.file)
        )],
        ("update", _) => {
            let empty = FlagSpec::default();
            let (server, file) = (
                diff.server.as_ref().unwrap_or(&empty),
                diff.file.as_ref().unwrap_or(&empty),
            );
            let done = if dry_run { "" } else { " (updated)" };
            field_changes(server, file)
                .into_iter()
                .map(|(field, before, after)| {
                    format!("{} {name}  {field}: {before} → {after}{done}", bold("~"))
                })
                .collect()
        }
        ("delete", true) => vec![format!(
            "{} {name}  only on the server: {}",
            red("-"),
            whole(&diff.server)
        )],
        ("delete", false) => vec![format!(
            "{} {name}  deleted: {}",
            red("-"),
            whole(&diff.server)
        )],
        _ => vec![format!(
            "{} {name}  only on the server: {} {}",
            dim("?"),
            whole(&diff.server),
            dim("(kept; --prune deletes it)")
        )],
    }
}

/// A whole flag in a few words: "on, users alice; 30 % by userId".
fn summary(spec: &FlagSpec) -> String {
    let state = if spec.enabled { "on" } else { "off" };
    format!("{state}, {}", rules(spec))
}

/// The fields that differ between two settings of a flag, each as
/// (field, before, after) in words rather than JSON.
fn field_changes(before: &FlagSpec, after: &FlagSpec) -> Vec<(&'static str, String, String)> {
    let mut out = vec![];
    let mut field = |name: &'static str, differs: bool, show: &dyn Fn(&FlagSpec) -> String| {
        if differs {
            out.push((name, show(before), show(after)));
        }
    };
    let none = || "(none)".to_string();
    let list = |items: &[String]| {
        if items.is_empty() {
            none()
        } else {
            items.join(", ")
        }
    };
    field("enabled", before.enabled != after.enabled, &|s| {
        if s.enabled { "on" } else { "off" }.to_string()
    });
    field(
        "description",
        before.description != after.description,
        &|s| {
            if s.description.is_empty() {
                none()
            } else {
                format!("{:?}", s.description)
            }
        },
    );
    field("users", before.users != after.users, &|s| list(&s.users));
    field("groups", before.groups != after.groups, &|s| {
        list(&s.groups)
    });
    field(
        "constraints",
        before.constraints != after.constraints,
        &|s| {
            if s.constraints.is_empty() {
                none()
            } else {
                s.constraints
                    .iter()
                    .map(constraint_text)
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        },
    );
    field("rollout", before.rollout != after.rollout, &|s| {
        s.rollout.map_or_else(none, |r| format!("{r} %"))
    });
    field("stickiness", before.stickiness != after.stickiness, &|s| {
        s.stickiness
            .clone()
            .unwrap_or_else(|| format!("(default: {})", s.stickiness()))
    });
    field("variants", before.variants != after.variants, &|s| {
        if s.variants.is_empty() {
            none()
        } else {
            s.variants
                .iter()
                .map(|v| match &v.payload {
                    Some(p) => format!("{} {} ({} {})", v.name, v.weight, p.kind.as_str(), p.value),
                    None => format!("{} {}", v.name, v.weight),
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
    });
    out
}

/// "country IN FR,BE", "version not SEMVER_GTE 2.0.0 (any case)".
fn constraint_text(c: &baton_flags::model::ConstraintSpec) -> String {
    let value = c.value.clone().unwrap_or_else(|| c.values.join(","));
    format!(
        "{} {}{} {value}{}",
        c.field,
        if c.inverted { "not " } else { "" },
        c.operator,
        if c.case_insensitive {
            " (any case)"
        } else {
            ""
        }
    )
}

async fn keys(command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Create {
            app,
            name,
            origins,
            env,
            common,
        } => {
            let api = Api::new(&common.api);
            let key: Value = api
                .post_json(
                    &format!("/apps/{app}/keys"),
                    &json!({"name": name, "environment": env.environment, "origins": origins}),
                )
                .await?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&key)?);
            } else {
                println!(
                    "Created API key {} ({name}) for {app} in {}. It is shown this once:\n\n  {}\n\nOFREP: Authorization: Bearer KEY; Unleash: Authorization: KEY.",
                    key["id"], env.environment, key["key"].as_str().unwrap_or_default()
                );
                let allowed = strings(&key["origins"]);
                if allowed.is_empty() {
                    println!(
                        "Browsers: no web origin may use it (add one with --origin https://…)."
                    );
                } else {
                    println!("Browsers: pages of {} may use it.", allowed.join(", "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { app, common } => {
            let api = Api::new(&common.api);
            let keys: Vec<Value> = api.get(&format!("/apps/{app}/keys")).await?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut rows = vec![vec![
                "ID".into(),
                "NAME".into(),
                "ENVIRONMENT".into(),
                "KEY".into(),
                "WEB ORIGINS".into(),
                "CREATED".into(),
                "STATE".into(),
            ]];
            for k in &keys {
                let origins = strings(&k["origins"]);
                rows.push(vec![
                    k["id"].to_string(),
                    k["name"].as_str().unwrap_or_default().into(),
                    k["environment"].as_str().unwrap_or_default().into(),
                    format!("{}…", k["prefix"].as_str().unwrap_or_default()),
                    if origins.is_empty() {
                        "-".into()
                    } else {
                        origins.join(", ")
                    },
                    ago(k["created_at"].as_i64().unwrap_or_default()),
                    if k["revoked_at"].is_null() {
                        green("active")
                    } else {
                        red("revoked")
                    },
                ]);
            }
            table(&rows);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { app, id, common } => {
            let api = Api::new(&common.api);
            let key: Value = api.delete(&format!("/apps/{app}/keys/{id}")).await?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&key)?);
            } else {
                println!("Revoked API key {id} of {app}; its clients get 403 from now on.");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A JSON list of strings as a `Vec` (anything else as empty).
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn audit(app: Option<&str>, limit: i64, common: &Common) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let query = match app {
        Some(app) => format!("/audit?app={app}&kind=flags&limit={limit}"),
        None => format!("/audit?limit={limit}"),
    };
    let entries: Vec<Value> = api.get(&query).await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        match app {
            Some(app) => println!("No changes to {app}'s flags or API keys yet."),
            None => println!("The audit log is empty."),
        }
    }
    for e in &entries {
        println!(
            "{} {} {} {} {}",
            dim(&ago(e["at"].as_i64().unwrap_or_default())),
            bold(e["actor"].as_str().unwrap_or_default()),
            e["action"].as_str().unwrap_or_default(),
            e["subject"].as_str().unwrap_or_default(),
            dim(&format!(
                "from {}",
                e["remote_address"].as_str().unwrap_or("the server")
            ))
        );
        for line in audit_detail(e) {
            println!("    {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What an audit entry changed, in words: a flag's fields before → after,
/// a key's name and origins.
fn audit_detail(entry: &Value) -> Vec<String> {
    let detail = &entry["detail"];
    let spec = |v: &Value| serde_json::from_value::<FlagSpec>(v.clone()).ok();
    let mut lines = match entry["action"].as_str().unwrap_or_default() {
        action if action.starts_with("flag.") => {
            match (spec(&detail["before"]), spec(&detail["after"])) {
                (Some(before), Some(after)) => field_changes(&before, &after)
                    .into_iter()
                    .map(|(field, was, is)| format!("{field}: {was} → {is}"))
                    .collect(),
                (None, Some(after)) => vec![format!("created: {}", summary(&after))],
                (Some(before), None) => vec![format!("was: {}", summary(&before))],
                (None, None) => vec![],
            }
        }
        action if action.starts_with("api_key.") => {
            let mut line = format!(
                "key {} ({}…)",
                detail["name"].as_str().unwrap_or_default(),
                detail["prefix"].as_str().unwrap_or_default()
            );
            let origins = strings(&detail["origins"]);
            if !origins.is_empty() {
                line.push_str(&format!(", web origins {}", origins.join(", ")));
            }
            vec![line]
        }
        _ => vec![],
    };
    if let Some(source) = detail["source"].as_str() {
        lines.push(dim(&format!("from {source}")));
    }
    lines
}

/// After a deploy: the line saying what it did to the flags, when the
/// release carried a flags.toml (its `flags_applied` or `flags_failed`
/// event, recorded before the deployment ended).
pub async fn print_deploy_flags(api: &Api, deployment: &baton_store::Deployment) -> Result<()> {
    let events: Vec<baton_store::Event> = api
        .get(&format!("/apps/{}/events?limit=50", deployment.app))
        .await?;
    let found = events.iter().find(|e| {
        e.environment == deployment.environment
            && e.at >= deployment.created_at
            && matches!(
                e.kind(),
                Some(baton_store::EventKind::FlagsApplied | baton_store::EventKind::FlagsFailed)
            )
    });
    match found {
        // Laid out like the deployment's steps above it.
        Some(e) if e.kind() == Some(baton_store::EventKind::FlagsApplied) => {
            println!("  {} {:<13} {:>9}  {}", green("✓"), "flags", "", e.message)
        }
        Some(e) => println!(
            "  {} {:<13} {:>9}  not applied: {} (fix flags.toml, then `baton flags apply DIR -e {}`)",
            red("✗"),
            "flags",
            "",
            e.message,
            deployment.environment
        ),
        None => {}
    }
    Ok(())
}
