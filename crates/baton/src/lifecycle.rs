//! `baton apps` (every app the server knows, where it runs and how) and
//! `baton destroy` (an app, or one environment of it, with everything it
//! owns). Destroying asks for the app's name on a terminal; a script says
//! `--yes`. The server checks the role, refuses while a deployment runs
//! and audits it.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use baton_orchestrator::{AppSummary, Destroyed, EnvironmentState};

use crate::client::Api;
use crate::output::{bold, count, dim, green, red, table};
use crate::Common;

pub async fn apps(common: &Common) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let apps: Vec<AppSummary> = api.get("/apps").await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&apps)?);
        return Ok(ExitCode::SUCCESS);
    }
    if apps.is_empty() {
        println!("No apps yet. Deploy one with `baton deploy DIR`.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "APP".into(),
        "ENVIRONMENT".into(),
        "LIVE".into(),
        "STATE".into(),
        "HOSTS".into(),
    ]];
    for app in &apps {
        if app.environments.is_empty() {
            rows.push(vec![
                app.app.clone(),
                dim("-"),
                dim("none"),
                dim(&format!(
                    "{}, never deployed",
                    count(app.releases, "release")
                )),
                String::new(),
            ]);
        }
        for env in &app.environments {
            let state = match env.state {
                EnvironmentState::Live => green(env.state.as_str()),
                EnvironmentState::Deploying | EnvironmentState::NotServed => {
                    dim(env.state.as_str())
                }
                EnvironmentState::Down | EnvironmentState::Maintenance => red(env.state.as_str()),
            };
            rows.push(vec![
                app.app.clone(),
                env.environment.clone(),
                env.live_release
                    .as_deref()
                    .map(|r| baton_package::short_id(r).to_string())
                    .unwrap_or_else(|| dim("none")),
                state,
                env.hosts.join(", "),
            ]);
        }
    }
    table(&rows);
    Ok(ExitCode::SUCCESS)
}

/// Longest answer read at the confirmation prompt.
const MOST_TYPED: u64 = 1024;

pub async fn destroy(
    common: &Common,
    app: &str,
    environment: Option<&str>,
    yes: bool,
) -> Result<ExitCode> {
    baton_manifest::check_name("app", app).map_err(|e| anyhow!(e))?;
    let what = match environment {
        Some(env) => format!("{app} in {env}"),
        None => format!("{app} in every environment"),
    };
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(anyhow!(
                "destroying {what} needs a confirmation and standard input is not a terminal: run it on a terminal, or add --yes in a script"
            ));
        }
        eprintln!(
            "This removes {what}: its routes, running targets, releases, logs, flags, API keys, config and history (the audit log keeps its entries)."
        );
        eprint!("Type the app's name ({}) to confirm: ", bold(app));
        std::io::stderr().flush()?;
        let mut typed = String::new();
        std::io::stdin()
            .lock()
            .take(MOST_TYPED)
            .read_line(&mut typed)?;
        if typed.trim() != app {
            return Err(anyhow!(
                "you typed {:?}, not {app:?}: nothing was destroyed",
                typed.trim()
            ));
        }
    }
    let api = Api::new(&common.api);
    let mut path = format!("/apps/{app}?confirm={app}");
    if let Some(env) = environment {
        path.push_str(&format!("&environment={env}"));
    }
    let destroyed: Destroyed = api.delete(&path).await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&destroyed)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} {what}: {}, {} and {} removed{}{}.",
        bold("Destroyed"),
        count(destroyed.removed.targets.len(), "target"),
        count(destroyed.removed.release_folders.len(), "release folder"),
        count(destroyed.files, "file"),
        match destroyed.images.len() {
            0 => String::new(),
            n => format!(", {}", count(n, "image")),
        },
        match destroyed.removed.hosts.is_empty() {
            true => String::new(),
            false => format!("; hosts {} are free", destroyed.removed.hosts.join(", ")),
        }
    );
    Ok(ExitCode::SUCCESS)
}
