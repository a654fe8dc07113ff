//! The pipeline's client commands: `baton builds`, `baton promote`,
//! `baton review-apps`, `baton notifications`. A few API calls and printing.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use baton_store::{Build, Notification, Promotion, ReviewApp};
use futures_util::StreamExt;
use serde_json::json;

use crate::client::Api;
use crate::output::{ago, bold, green, red, table};
use crate::Common;

#[derive(clap::Subcommand)]
pub enum BuildsCommand {
    /// Builds, newest first.
    List {
        /// Only this app's.
        #[arg(long)]
        app: Option<String>,
        /// How many to list.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        common: Common,
    },
    /// One build and its steps; exits 1 if it failed.
    Show {
        /// The build's number (see `baton builds list`).
        id: i64,
        #[command(flatten)]
        common: Common,
    },
    /// A build's output; exits 1 if the build failed.
    Logs {
        /// The build's number (see `baton builds list`).
        id: i64,
        /// Keep following the output until the build ends.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        common: Common,
    },
}

pub async fn builds(command: BuildsCommand) -> Result<ExitCode> {
    match command {
        BuildsCommand::List { app, limit, common } => {
            let api = Api::new(&common.api);
            let path = match &app {
                Some(app) => format!("/builds?app={app}&limit={limit}"),
                None => format!("/builds?limit={limit}"),
            };
            let builds: Vec<Build> = api.get(&path).await?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&builds)?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut rows = vec![["id", "app", "env", "commit", "state", "started", "error"]
                .map(String::from)
                .to_vec()];
            for b in builds {
                rows.push(vec![
                    b.id.to_string(),
                    b.app.unwrap_or_else(|| "-".into()),
                    b.environment.unwrap_or_else(|| "-".into()),
                    b.commit_sha.chars().take(12).collect(),
                    paint_state(&b.state),
                    ago(b.created_at),
                    b.error.unwrap_or_default(),
                ]);
            }
            table(&rows);
            Ok(ExitCode::SUCCESS)
        }
        BuildsCommand::Show { id, common } => {
            let api = Api::new(&common.api);
            let b: Build = api.get(&format!("/builds/{id}")).await?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&b)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{} {} of {} at {} ({})",
                bold("Build"),
                b.id,
                b.repository,
                b.commit_sha,
                paint_state(&b.state)
            );
            for s in &b.steps {
                let mark = if s.state == "done" {
                    green("✓")
                } else if s.state == "failed" {
                    red("✗")
                } else {
                    "…".into()
                };
                println!(
                    "  {mark} {:<9} {}  {}",
                    s.name,
                    s.command,
                    s.detail.clone().unwrap_or_default()
                );
            }
            if let Some(release) = &b.release_id {
                println!("Release {release}");
            }
            Ok(if b.state == "failed" {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        BuildsCommand::Logs { id, follow, common } => {
            let api = Api::new(&common.api);
            let response = api
                .stream(&format!("/builds/{id}/logs?follow={follow}"))
                .await?;
            let mut body = response.bytes_stream();
            let mut stdout = std::io::stdout();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| anyhow!("the log stream broke off: {e}"))?;
                stdout.write_all(&chunk)?;
                stdout.flush()?;
            }
            // The output ended: its exit code is the build's, as `builds show`.
            let build: Build = api.get(&format!("/builds/{id}")).await?;
            Ok(if build.state == "failed" {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn paint_state(state: &str) -> String {
    match state {
        "passed" | "delivered" | "started" => green(state),
        "failed" => red(state),
        other => other.to_string(),
    }
}

pub async fn promote(
    common: &Common,
    app: &str,
    release: &str,
    to: &str,
    override_announcement: Option<&str>,
    no_wait: bool,
) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let promotion: Promotion = api
        .post_json(
            &format!("/apps/{app}/promote"),
            &json!({"release": release, "to": to, "override_announcement": override_announcement}),
        )
        .await?;
    if promotion.state == "waiting" {
        if common.json {
            println!("{}", serde_json::to_string_pretty(&promotion)?);
        } else {
            println!(
                "Promotion {} of {} {} to {to} is waiting: {}",
                promotion.id,
                app,
                baton_package::short_id(&promotion.release_id),
                promotion.detail.unwrap_or_default()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(deployment) = promotion.deployment_id else {
        if common.json {
            println!("{}", serde_json::to_string_pretty(&promotion)?);
        }
        return Ok(ExitCode::SUCCESS);
    };
    // Followed like `baton deploy`; --json prints the promotion once its
    // deployment is done.
    let deployment: baton_store::Deployment =
        api.get(&format!("/deployments/{deployment}")).await?;
    let outcome =
        crate::commands::follow_started(&api, common, deployment, no_wait, common.json).await;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&promotion)?);
    }
    outcome
}

pub async fn review_apps(common: &Common) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let apps: Vec<ReviewApp> = api.get("/review-apps").await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&apps)?);
        return Ok(ExitCode::SUCCESS);
    }
    // Where each one answers: its route's hosts.
    let status: Vec<baton_orchestrator::EnvironmentStatus> = api.get("/status").await?;
    let mut rows = vec![[
        "app",
        "environment",
        "pull request",
        "host",
        "head",
        "since",
    ]
    .map(String::from)
    .to_vec()];
    for r in apps {
        let hosts = status
            .iter()
            .find(|e| e.app == r.app && e.environment == r.environment)
            .map(|e| e.hosts.join(", "))
            .unwrap_or_else(|| "(not deployed)".into());
        rows.push(vec![
            r.app,
            r.environment,
            format!("{}#{}", r.repository, r.number),
            hosts,
            r.head_sha.chars().take(12).collect(),
            ago(r.created_at),
        ]);
    }
    table(&rows);
    Ok(ExitCode::SUCCESS)
}

pub async fn notifications(common: &Common, limit: i64) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let list: Vec<Notification> = api.get(&format!("/notifications?limit={limit}")).await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![[
        "id", "channel", "event", "app", "state", "attempts", "error",
    ]
    .map(String::from)
    .to_vec()];
    for n in list {
        rows.push(vec![
            n.id.to_string(),
            n.channel,
            n.event_kind,
            n.app,
            paint_state(&n.state),
            n.attempts.to_string(),
            n.last_error.unwrap_or_default(),
        ]);
    }
    table(&rows);
    Ok(ExitCode::SUCCESS)
}
