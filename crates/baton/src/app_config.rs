//! `baton config`, `baton restart` and `baton run`: an app's variables
//! outside its code, a rolling restart, a one-off command in the live
//! release.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use baton_orchestrator::{ConfigChanged, ConfigListing};
use baton_store::Deployment;
use clap::Subcommand;
use serde_json::json;

use crate::client::Api;
use crate::output::{dim, green};
use crate::{Common, EnvArg};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Set variables (KEY=VALUE …); the live release is deployed again
    /// with them, with zero downtime.
    Set {
        /// The app's name (as in its baton.toml).
        app: String,
        /// NAME=VALUE pairs. A value of `-` is read from standard input
        /// (one variable at a time), so it stays out of the shell's history.
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        #[command(flatten)]
        env: EnvArg,
        /// Return once the change is saved, without following the
        /// deployment that applies it.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Remove variables; the live release is deployed again without them.
    Unset {
        /// The app's name (as in its baton.toml).
        app: String,
        /// The variables' names.
        #[arg(required = true, value_name = "KEY")]
        names: Vec<String>,
        #[command(flatten)]
        env: EnvArg,
        /// Return once the change is saved, without following the
        /// deployment that applies it.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        common: Common,
    },
    /// The variables the app's targets get and where each comes from
    /// (`config` or `baton.toml`); values only with --reveal (admins).
    List {
        /// The app's name (as in its baton.toml).
        app: String,
        #[command(flatten)]
        env: EnvArg,
        /// Show the values (admins only).
        #[arg(long)]
        reveal: bool,
        #[command(flatten)]
        common: Common,
    },
}

pub async fn config(command: ConfigCommand) -> Result<ExitCode> {
    match command {
        ConfigCommand::Set {
            app,
            pairs,
            env,
            no_wait,
            common,
        } => {
            let set = parse_pairs(&pairs, std::io::stdin().lock())?;
            let body = json!({ "environment": env.environment, "set": set });
            change(&common, &app, body, no_wait).await
        }
        ConfigCommand::Unset {
            app,
            names,
            env,
            no_wait,
            common,
        } => {
            let body = json!({ "environment": env.environment, "unset": names });
            change(&common, &app, body, no_wait).await
        }
        ConfigCommand::List {
            app,
            env,
            reveal,
            common,
        } => list(&common, &app, &env.environment, reveal).await,
    }
}

/// `KEY=VALUE` pairs; `KEY=-` takes the value from `input` (its trailing
/// newline dropped).
fn parse_pairs(
    pairs: &[String],
    mut input: impl std::io::Read,
) -> Result<BTreeMap<String, String>> {
    let mut set = BTreeMap::new();
    let mut read_input = false;
    for (n, pair) in pairs.iter().enumerate() {
        // Not echoed: a pair missing its `KEY=` may be the secret itself.
        let Some((name, value)) = pair.split_once('=') else {
            bail!(
                "argument {} is not KEY=VALUE (to read a value from standard input: KEY=-)",
                n + 1
            );
        };
        let value = if value == "-" {
            if read_input {
                bail!("only one value can come from standard input (`{name}=-`)");
            }
            read_input = true;
            let mut text = String::new();
            input
                .read_to_string(&mut text)
                .map_err(|e| anyhow!("cannot read the value of {name} from standard input: {e}"))?;
            text.strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_string()
        } else {
            value.to_string()
        };
        if set.insert(name.to_string(), value).is_some() {
            bail!("{name} is given twice");
        }
    }
    Ok(set)
}

async fn change(
    common: &Common,
    app: &str,
    body: serde_json::Value,
    no_wait: bool,
) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let changed: ConfigChanged = api.post_json(&format!("/apps/{app}/config"), &body).await?;
    let environment = &changed.version.environment;
    if common.json && (no_wait || changed.deployment.is_none()) {
        println!("{}", serde_json::to_string_pretty(&changed)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !common.json {
        println!(
            "{} config version {} of {app} in {environment}: {}",
            green("Saved"),
            changed.version.version,
            changed.version.keys.join(", ")
        );
    }
    match changed.deployment {
        Some(deployment) => {
            crate::commands::follow_started(&api, common, deployment, no_wait, false).await
        }
        None => {
            println!(
                "{}",
                dim(&format!(
                    "nothing runs in {environment} yet: the next deploy there gets it"
                ))
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn list(common: &Common, app: &str, environment: &str, reveal: bool) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let listing: ConfigListing = api
        .get(&format!(
            "/apps/{app}/config?environment={environment}&reveal={reveal}"
        ))
        .await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    let version = match (listing.version, listing.live_version) {
        (None, _) => "no config set yet".to_string(),
        (Some(v), Some(live)) if live == v => format!("config version {v}, live"),
        (Some(v), Some(live)) => format!("config version {v}; the live target runs version {live}"),
        (Some(v), None) => format!("config version {v}; nothing live"),
    };
    // A closed pipe (`| head`) ends the listing quietly.
    let _ = writeln!(out, "{app} in {environment}: {}", dim(&version));
    let width = listing.vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
    for var in &listing.vars {
        let source = if var.overrides_manifest {
            "config (over baton.toml)".to_string()
        } else {
            var.source.clone()
        };
        let value = match &var.value {
            Some(value) => value.clone(),
            None => "•••".to_string(),
        };
        if writeln!(out, "{:width$}  {value}  {}", var.name, dim(&source)).is_err() {
            break;
        }
    }
    if listing.vars.is_empty() {
        let _ = writeln!(
            out,
            "no variables: `baton config set {app} KEY=VALUE -e {environment}` adds one"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `baton restart` and `baton start`: the live (or, once stopped, the
/// last live) release deployed again, followed like a deploy.
pub async fn redeploy(
    common: &Common,
    verb: &str,
    app: &str,
    environment: &str,
    no_wait: bool,
) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let deployment: Deployment = api
        .post_json(
            &format!("/apps/{app}/{verb}"),
            &json!({ "environment": environment }),
        )
        .await?;
    crate::commands::follow_started(&api, common, deployment, no_wait, false).await
}

/// `baton scale APP web=3 worker=2`: how many of each process run.
pub async fn scale(
    common: &Common,
    app: &str,
    environment: &str,
    counts: &[String],
) -> Result<ExitCode> {
    let mut parsed = BTreeMap::new();
    for pair in counts {
        let (name, count) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("{pair:?} is not PROCESS=COUNT, like web=3 or worker=2"))?;
        let count: u32 = count
            .parse()
            .map_err(|_| anyhow!("{pair:?}: the count must be a whole number, like worker=3"))?;
        if parsed.insert(name.to_string(), count).is_some() {
            bail!("{name} is given twice");
        }
    }
    let api = Api::new(&common.api);
    let done: baton_orchestrator::Reconciled = api
        .post_json(
            &format!("/apps/{app}/scale"),
            &json!({ "environment": environment, "processes": parsed }),
        )
        .await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        println!(
            "{} {app} in {environment}: {}",
            green("Scaled"),
            done.describe()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `baton stop APP`: visitors get 503 and nothing of the app runs.
pub async fn stop(common: &Common, app: &str, environment: &str) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let answer: serde_json::Value = api
        .post_json(
            &format!("/apps/{app}/stop"),
            &json!({ "environment": environment }),
        )
        .await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "{} {app} in {environment}: its visitors get 503 and none of its targets or workers run (`baton start {app} -e {environment}` to serve it again)",
            green("Stopped")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `baton run APP -- CMD…`: the command's output as it comes; its exit
/// code is ours (128 + N when killed by signal N, as shells say).
pub async fn run(
    common: &Common,
    app: &str,
    environment: &str,
    words: &[String],
) -> Result<ExitCode> {
    let command = match words {
        [] => bail!("no command: `baton run {app} -- COMMAND ARGS…`"),
        // One word is taken as a shell command line: `baton run APP 'a | b'`.
        [line] => line.clone(),
        words => words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "),
    };
    let api = Api::new(&common.api);
    let mut response = api
        .post_stream(
            &format!("/apps/{app}/run"),
            &json!({ "environment": environment, "command": command }),
        )
        .await?;
    let mut pending = Vec::new();
    let mut stdout = std::io::stdout();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| anyhow!("the connection to the server broke off: {e}"))?
    {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let event: serde_json::Value = serde_json::from_slice(&line)
                .map_err(|e| anyhow!("the server sent something that is not a JSON line: {e}"))?;
            if common.json {
                println!("{event}");
            } else if let Some(output) = event["output"].as_str() {
                if stdout
                    .write_all(output.as_bytes())
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    // Our reader went away (`| head`): so does the command.
                    return Ok(ExitCode::from(141));
                }
            }
            if let Some(code) = event["exit_code"].as_i64() {
                return Ok(ExitCode::from(code.clamp(0, 255) as u8));
            }
            if let Some(signal) = event["signal"].as_i64() {
                if !common.json {
                    eprintln!(
                        "{}",
                        dim(&format!("the command was killed by signal {signal}"))
                    );
                }
                return Ok(ExitCode::from((128 + signal).clamp(0, 255) as u8));
            }
            if let Some(error) = event["error"].as_str() {
                bail!("{error}");
            }
        }
    }
    bail!("the server ended the answer before the command's exit code; see `baton events {app}`")
}

/// A word as `sh` reads it back unchanged.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_split_at_the_first_equals_and_one_value_may_come_from_stdin() {
        let pairs = ["A=1".to_string(), "B=x=y".to_string(), "C=-".to_string()];
        let set = parse_pairs(&pairs, "secret\n".as_bytes()).unwrap();
        assert_eq!(set["A"], "1");
        assert_eq!(set["B"], "x=y");
        assert_eq!(set["C"], "secret");
        assert!(parse_pairs(&["A".to_string()], "".as_bytes()).is_err());
        assert!(parse_pairs(&["A=-".into(), "B=-".into()], "x".as_bytes()).is_err());
        assert!(parse_pairs(&["A=1".into(), "A=2".into()], "".as_bytes()).is_err());
    }

    #[test]
    fn words_are_quoted_so_that_sh_reads_them_back() {
        assert_eq!(quote("manage.py"), "manage.py");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$HOME"), "'$HOME'");
    }
}
