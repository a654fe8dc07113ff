//! The client subcommands. Each one is a few API calls and some printing.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use baton_certs::CertificateView;
use baton_orchestrator::EnvironmentStatus;
use baton_store::{Deployment, DeploymentState, Event, Release, Step, StepState};
use futures_util::StreamExt;
use serde_json::json;

use crate::client::Api;
use crate::output::{ago, bold, dim, green, millis, red, size, table};
use crate::Common;

pub async fn deploy(
    common: &Common,
    dir: &Path,
    environment: &str,
    preview: bool,
    no_wait: bool,
) -> Result<ExitCode> {
    let manifest = baton_manifest::Manifest::load(dir)?;
    let api = Api::new(&common.api);
    let dir_owned = dir.to_path_buf();
    let package = tokio::task::spawn_blocking(move || baton_package::pack(&dir_owned))
        .await
        .context("packing the app folder")??;
    if !common.json {
        println!(
            "{} {} from {}: {} files, {}, release {}",
            bold("Packed"),
            manifest.name,
            dir.display(),
            package.files,
            size(package.archive.len() as i64),
            baton_package::short_id(&package.id)
        );
        if manifest.runtime == baton_manifest::RuntimeKind::Docker {
            // The server builds the image while this request waits.
            println!(
                "{}",
                dim("Uploading; the server builds the release's image (once per release)…")
            );
        }
        if let Some(build) = built(&manifest) {
            println!(
                "{}",
                dim(&format!(
                    "Uploading; the server runs the release's build, {:?} (once per release)…",
                    build.command
                ))
            );
        }
    }
    let started = std::time::Instant::now();
    let docker = manifest.runtime == baton_manifest::RuntimeKind::Docker && !common.json;
    let upload_path = format!("/apps/{}/releases?environment={environment}", manifest.name);
    let upload =
        api.post_bytes::<serde_json::Value>(&upload_path, package.archive, "application/x-tar");
    // A Docker release's image is built while the upload waits: show the
    // engine's output as it comes (the release id is known here already).
    // A process release's [build] likewise, through its own log.
    let building = built(&manifest).is_some() && !common.json;
    let created = if docker {
        let path = format!("/apps/{}/releases/{}/image-log", manifest.name, package.id);
        follow_image_build(&api, &path, upload).await?
    } else if building {
        let path = format!("/apps/{}/releases/{}/build-log", manifest.name, package.id);
        follow_image_build(&api, &path, upload).await?
    } else {
        upload.await?
    };
    if docker || building {
        println!(
            "{} in {}",
            dim(if docker {
                "Release recorded, image built"
            } else {
                "Release recorded, built"
            }),
            millis(started.elapsed().as_millis() as i64)
        );
    }
    let release: Release = serde_json::from_value(created["release"].clone())?;
    if release.id != package.id {
        return Err(anyhow!(
            "the server recorded release {} but the package hashes to {}; the upload was altered on the way",
            release.id,
            package.id
        ));
    }
    let started: Result<Deployment> = api
        .post_json(
            &format!("/apps/{}/deployments", manifest.name),
            &json!({"release": release.id, "environment": environment, "preview": preview}),
        )
        .await;
    match started {
        Ok(deployment) => finish(&api, common, deployment, no_wait).await,
        // Nothing to do is not a failure: the folder is what runs.
        Err(e) if crate::client::failure_code(&e) == Some("already_live") => {
            already_live(common, &manifest.name, environment, &release.id)
        }
        Err(e) => Err(e),
    }
}

/// A process app's `[build]`, which the server runs when it records the
/// release.
fn built(manifest: &baton_manifest::Manifest) -> Option<&baton_manifest::BuildSection> {
    manifest
        .build
        .as_ref()
        .filter(|_| manifest.runtime == baton_manifest::RuntimeKind::Process)
}

/// Runs `upload` while printing the build's output (the image's, or a
/// process release's `[build]`) as it grows.
async fn follow_image_build(
    api: &Api,
    path: &str,
    upload: impl std::future::Future<Output = Result<serde_json::Value>>,
) -> Result<serde_json::Value> {
    tokio::pin!(upload);
    let mut offset = 0usize;
    let show = |bytes: &[u8]| {
        for line in String::from_utf8_lossy(bytes).lines() {
            println!("  {} {}", dim("│"), line);
        }
    };
    loop {
        tokio::select! {
            answer = &mut upload => {
                // What arrived after the last look.
                if let Ok(rest) = api.get_bytes(&format!("{path}?offset={offset}")).await {
                    show(&rest);
                }
                return answer;
            }
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                // Nothing yet (404) is normal before the build starts.
                if let Ok(more) = api.get_bytes(&format!("{path}?offset={offset}")).await {
                    // Whole lines only; the rest waits for its end.
                    let upto = more.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
                    show(&more[..upto]);
                    offset += upto;
                }
            }
        }
    }
}

/// Says that what was asked for runs already (exit 0).
pub fn already_live(
    common: &Common,
    app: &str,
    environment: &str,
    release: &str,
) -> Result<ExitCode> {
    if common.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "app": app,
                "environment": environment,
                "release_id": release,
                "already_live": true,
            }))?
        );
    } else {
        println!(
            "{} {app} {} is already live in {environment}; nothing to do",
            green("Done:"),
            baton_package::short_id(release)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rollback(
    common: &Common,
    app: &str,
    environment: &str,
    to: Option<&str>,
    no_wait: bool,
) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let deployment: Deployment = api
        .post_json(
            &format!("/apps/{app}/rollback"),
            &json!({"environment": environment, "to": to}),
        )
        .await?;
    finish(&api, common, deployment, no_wait).await
}

pub async fn maintenance(
    common: &Common,
    app: &str,
    environment: &str,
    on: bool,
    message: Option<String>,
) -> Result<ExitCode> {
    if !on && message.is_some() {
        anyhow::bail!("--message goes with `baton maintenance on`");
    }
    let api = Api::new(&common.api);
    let answer: serde_json::Value = api
        .post_json(
            &format!("/apps/{app}/maintenance"),
            &json!({"environment": environment, "on": on, "message": message}),
        )
        .await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if let Some(shown) = answer["maintenance"].as_str() {
        println!("{app} in {environment} is in maintenance: its visitors get 503 and {shown:?}; the app keeps running (`baton maintenance off {app}` to serve it again)");
    } else {
        println!("{app} in {environment} is served again");
    }
    Ok(ExitCode::SUCCESS)
}

/// `baton canary status|promote|abort APP`: the app's running canary.
pub async fn canary(
    common: &Common,
    action: &str,
    app: &str,
    environment: &str,
) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let deployments: Vec<Deployment> = api
        .get(&format!("/apps/{app}/deployments?limit=20"))
        .await?;
    let running = deployments.into_iter().find(|d| {
        d.environment == environment
            && d.state == DeploymentState::Running
            && d.steps
                .iter()
                .any(|s| s.step == baton_store::StepKind::Canary)
    });
    let Some(deployment) = running else {
        anyhow::bail!(
            "{app} has no canary running in {environment}; deploy a release whose baton.toml has [deploy] strategy = \"canary\""
        );
    };
    match action {
        "promote" => answer_preview(common, deployment.id, "continue").await,
        "abort" => answer_preview(common, deployment.id, "abort").await,
        _ => {
            let events: Vec<Event> = api.get(&format!("/apps/{app}/events?limit=50")).await?;
            let steps: Vec<&Event> = events
                .iter()
                .filter(|e| {
                    e.environment == environment
                        && e.kind == "canary_step"
                        && e.at >= deployment.created_at
                })
                .collect();
            // The figures now, while the canary still has its share.
            let view: Option<serde_json::Value> = api
                .get(&format!("/apps/{app}/canary?environment={environment}"))
                .await
                .ok();
            if common.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"deployment": deployment, "steps": steps, "figures": view})
                    )?
                );
            } else {
                println!(
                    "deployment {} of {} in {}: canary of release {}",
                    deployment.id,
                    app,
                    environment,
                    baton_package::short_id(&deployment.release_id)
                );
                for e in steps.iter().rev() {
                    println!("  {} {}", dim(&ago(e.at)), e.message);
                }
                if let Some(view) = &view {
                    for (name, side) in [("canary", &view["canary"]), ("live", &view["stable"])] {
                        let requests = side["requests"].as_u64().unwrap_or(0);
                        let errors = side["errors"].as_u64().unwrap_or(0);
                        println!(
                            "  {name:6} {}  {requests} requests, {:.1}% 5xx, p99 {}",
                            side["release"]
                                .as_str()
                                .map(baton_package::short_id)
                                .unwrap_or("?"),
                            errors as f64 * 100.0 / requests.max(1) as f64,
                            side["p99_ms"]
                                .as_f64()
                                .map(|ms| format!("≤ {ms:.0} ms"))
                                .unwrap_or_else(|| "–".into())
                        );
                    }
                }
                println!("`baton canary promote {app}` to send everyone to it, `baton canary abort {app}` to go back");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `baton certs`: one line per app and environment with HTTPS.
pub async fn certs(common: &Common) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let all: Vec<CertificateView> = api.get("/certs").await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!(
            "no app serves HTTPS: give one a [tls] section in its baton.toml (see README, HTTPS)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "APP".to_string(),
        "ENV".into(),
        "HOSTS".into(),
        "SOURCE".into(),
        "ISSUER".into(),
        "EXPIRES".into(),
        "RENEWED".into(),
        "STATUS".into(),
    ]];
    let mut errors = Vec::new();
    for c in &all {
        let status = match (&c.last_error, c.served) {
            (None, true) => green("served"),
            (None, false) => dim("pending"),
            (Some(_), true) => red("served; renewal failed"),
            (Some(_), false) => red("failed; plain HTTP only"),
        };
        if let Some(e) = &c.last_error {
            errors.push(format!("{} in {}: {e}", c.app, c.environment));
        }
        rows.push(vec![
            c.app.clone(),
            c.environment.clone(),
            c.hosts.join(","),
            c.source.clone(),
            c.issuer.clone().unwrap_or_else(|| "-".into()),
            c.not_after.map(when).unwrap_or_else(|| "-".into()),
            c.renewed_at.map(ago).unwrap_or_else(|| "-".into()),
            status,
        ]);
    }
    table(&rows);
    for e in errors {
        println!("{} {e}", red("last error:"));
    }
    Ok(ExitCode::SUCCESS)
}

/// `baton certs renew APP`: waits for the new certificate, or says why not.
pub async fn renew_certificate(common: &Common, app: &str, environment: &str) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let c: CertificateView = api
        .post_json(
            &format!("/apps/{app}/certs/renew"),
            &json!({"environment": environment}),
        )
        .await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        println!(
            "{app} in {environment}: certificate for {} from {}, valid until {}, served now",
            c.hosts.join(", "),
            c.issuer.as_deref().unwrap_or("?"),
            c.not_after.map(when).unwrap_or_else(|| "?".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A moment relative to now: "in 89d", or "3h ago".
fn when(ms: i64) -> String {
    let ahead = (ms - baton_store::now_ms()) / 1000;
    match ahead {
        ..=0 => ago(ms),
        1..=3599 => format!("in {}m", ahead / 60),
        3600..=172_799 => format!("in {}h", ahead / 3600),
        _ => format!("in {}d", ahead / 86400),
    }
}

pub async fn answer_preview(common: &Common, deployment: i64, verb: &str) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let _: serde_json::Value = api
        .post_json(&format!("/deployments/{deployment}/{verb}"), &json!({}))
        .await?;
    let current: Deployment = api.get(&format!("/deployments/{deployment}")).await?;
    if verb == "abort" {
        // Aborting ends the deployment as failed on purpose: success here.
        let done = follow(&api, common, current.id, false).await?;
        if common.json {
            println!("{}", serde_json::to_string_pretty(&done)?);
        } else {
            println!(
                "{} deployment {} of {} {}: the live release in {} is unchanged",
                green("Aborted:"),
                done.id,
                done.app,
                baton_package::short_id(&done.release_id),
                done.environment
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Answered: the preview is over even if the record still says so.
    finish_after(&api, common, current, false, false, false).await
}

async fn finish(
    api: &Api,
    common: &Common,
    deployment: Deployment,
    no_wait: bool,
) -> Result<ExitCode> {
    finish_after(api, common, deployment, no_wait, true, false).await
}

/// Follows a deployment another command started (a promotion's) like
/// `baton deploy` does; `silent` prints nothing (the caller prints its own
/// record as JSON).
pub async fn follow_started(
    api: &Api,
    common: &Common,
    deployment: Deployment,
    no_wait: bool,
    silent: bool,
) -> Result<ExitCode> {
    finish_after(api, common, deployment, no_wait, true, silent).await
}

async fn finish_after(
    api: &Api,
    common: &Common,
    deployment: Deployment,
    no_wait: bool,
    stop_at_preview: bool,
    silent: bool,
) -> Result<ExitCode> {
    if !common.json && !silent {
        println!(
            "{} {} {} to {} {}",
            bold(match deployment.kind {
                baton_store::DeploymentKind::Rollback => "Rolling back",
                baton_store::DeploymentKind::Restart => "Restarting",
                baton_store::DeploymentKind::Deploy => "Deploying",
            }),
            deployment.app,
            baton_package::short_id(&deployment.release_id),
            deployment.environment,
            dim(&format!("(deployment {})", deployment.id))
        );
    }
    if no_wait {
        if common.json && !silent {
            println!("{}", serde_json::to_string_pretty(&deployment)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let done = follow(api, common, deployment.id, stop_at_preview).await?;
    if common.json && !silent {
        println!("{}", serde_json::to_string_pretty(&done)?);
    }
    match done.state {
        DeploymentState::Succeeded => {
            if !common.json && !silent {
                // A deploy that applied the release's flags.toml says so.
                crate::flags::print_deploy_flags(api, &done).await?;
                let took = done.finished_at.unwrap_or(done.created_at) - done.created_at;
                println!(
                    "{} {} {} is live in {} ({})",
                    green("Done:"),
                    done.app,
                    baton_package::short_id(&done.release_id),
                    done.environment,
                    millis(took)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DeploymentState::Previewing => {
            if !common.json && !silent {
                println!(
                    "In preview: requests with the header `X-Baton-Preview: 1` (or to the preview hosts) reach the new release.\nNext: `baton continue {}` to switch, or `baton abort {}` to drop it.",
                    done.id, done.id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            let error = done.error.unwrap_or_else(|| "the deployment failed".into());
            Err(anyhow!("deployment {} failed: {error}", done.id))
        }
    }
}

/// Polls a deployment, printing each step as it ends, until it finishes (or
/// pauses in preview, when `stop_at_preview`).
async fn follow(api: &Api, common: &Common, id: i64, stop_at_preview: bool) -> Result<Deployment> {
    let tty = std::io::stdout().is_terminal();
    let mut printed = 0;
    let mut announced_running: Option<i64> = None;
    loop {
        let deployment: Deployment = api.get(&format!("/deployments/{id}")).await?;
        while printed < deployment.steps.len()
            && deployment.steps[printed].state != StepState::Running
        {
            if !common.json {
                if tty && announced_running.is_some() {
                    print!("\r\x1b[K");
                }
                print_step(&deployment.steps[printed]);
            }
            announced_running = None;
            printed += 1;
        }
        if let Some(running) = deployment.steps.get(printed) {
            let seconds = (baton_store::now_ms() - running.started_at) / 1000;
            if tty && !common.json && seconds >= 1 && announced_running != Some(seconds) {
                print!("\r\x1b[K  … {:<13} {seconds}s", running.step.as_str());
                let _ = std::io::stdout().flush();
                announced_running = Some(seconds);
            }
        }
        if deployment.is_finished()
            || (stop_at_preview && deployment.state == DeploymentState::Previewing)
        {
            return Ok(deployment);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn print_step(step: &Step) {
    let took = step.finished_at.map(|f| f - step.started_at).unwrap_or(0);
    let mark = match step.state {
        StepState::Done => green("✓"),
        StepState::Failed => red("✗"),
        StepState::Running => dim("…"),
    };
    let detail = step
        .detail
        .as_deref()
        .filter(|_| step.state != StepState::Failed)
        .map(|d| dim(d.lines().next().unwrap_or("")))
        .unwrap_or_default();
    println!(
        "  {mark} {:<13} {:>9}  {detail}",
        step.step.as_str(),
        millis(took)
    );
}

pub async fn status(common: &Common) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let status: Vec<EnvironmentStatus> = api.get("/status").await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    if status.is_empty() {
        println!("Nothing deployed yet. Deploy an app with `baton deploy DIR`.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "APP".into(),
        "ENVIRONMENT".into(),
        "LIVE".into(),
        "SINCE".into(),
        "TARGETS".into(),
        "HOSTS".into(),
        "DISK".into(),
    ]];
    let mut disk_shown = Vec::new();
    for env in &status {
        let live = env
            .live
            .as_ref()
            .map(|t| {
                let id = baton_package::short_id(&t.record.release_id).to_string();
                if env.maintenance.is_some() {
                    red(&format!("{id} (maintenance)"))
                } else if !t.running {
                    red(&format!("{id} (down)"))
                } else if !t.responding {
                    red(&format!("{id} (not responding)"))
                } else {
                    green(&id)
                }
            })
            .unwrap_or_else(|| dim("none"));
        let since = env
            .live
            .as_ref()
            .map(|t| ago(t.record.updated_at))
            .unwrap_or_default();
        let targets = env
            .targets
            .iter()
            .map(|t| {
                let open = match t.long_lived {
                    0 => String::new(),
                    n => format!(" ({n} open WebSockets/streams)"),
                };
                // Workers are named; web targets are the default.
                let process = match t.record.process.as_str() {
                    "web" => String::new(),
                    name => format!("{name} "),
                };
                format!(
                    "#{} {process}{} {}{open}",
                    t.record.id,
                    t.record.state,
                    baton_package::short_id(&t.record.release_id)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        rows.push(vec![
            env.app.clone(),
            env.environment.clone(),
            live,
            since,
            targets,
            env.hosts.join(", "),
            // The whole app's, once: release folders and output.
            match env.disk {
                Some(disk) if !disk_shown.contains(&env.app) => {
                    disk_shown.push(env.app.clone());
                    size(disk.total() as i64)
                }
                _ => String::new(),
            },
        ]);
    }
    table(&rows);
    Ok(ExitCode::SUCCESS)
}

pub async fn releases(common: &Common, app: &str) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let releases: Vec<Release> = api.get(&format!("/apps/{app}/releases")).await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&releases)?);
        return Ok(ExitCode::SUCCESS);
    }
    if releases.is_empty() {
        println!("{app} has no releases yet. Make one with `baton deploy DIR`.");
        return Ok(ExitCode::SUCCESS);
    }
    let status: Vec<EnvironmentStatus> = api.get("/status").await?;
    let deployments: Vec<Deployment> = api
        .get(&format!("/apps/{app}/deployments?limit=1000"))
        .await?;
    let mut rows = vec![vec![
        "RELEASE".into(),
        "CREATED".into(),
        "FILES".into(),
        "SIZE".into(),
        "STATE".into(),
    ]];
    for r in &releases {
        rows.push(vec![
            baton_package::short_id(&r.id).to_string(),
            ago(r.created_at),
            r.files.to_string(),
            size(r.size),
            release_state(app, &r.id, &status, &deployments),
        ]);
    }
    table(&rows);
    Ok(ExitCode::SUCCESS)
}

/// Where a release stands: live (and where), warm, was live, failed, or
/// never deployed.
fn release_state(
    app: &str,
    release: &str,
    status: &[EnvironmentStatus],
    deployments: &[Deployment],
) -> String {
    let ours = status.iter().filter(|e| e.app == app);
    let live: Vec<&str> = ours
        .clone()
        .filter(|e| {
            e.live
                .as_ref()
                .is_some_and(|t| t.record.release_id == release)
        })
        .map(|e| e.environment.as_str())
        .collect();
    if !live.is_empty() {
        return green(&format!("live in {}", live.join(", ")));
    }
    let warm: Vec<&str> = ours
        .filter(|e| {
            e.targets.iter().any(|t| {
                t.record.release_id == release && t.record.state == baton_store::TargetState::Warm
            })
        })
        .map(|e| e.environment.as_str())
        .collect();
    if !warm.is_empty() {
        return format!("warm in {}", warm.join(", "));
    }
    let mine = deployments.iter().filter(|d| d.release_id == release);
    if mine.clone().any(|d| d.state == DeploymentState::Succeeded) {
        "was live".into()
    } else if mine.clone().any(|d| d.state == DeploymentState::Failed) {
        red("failed")
    } else if mine.clone().next().is_some() {
        "deploying".into()
    } else {
        dim("never deployed")
    }
}

pub async fn deployments(common: &Common, app: &str, limit: i64) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let deployments: Vec<Deployment> = api
        .get(&format!("/apps/{app}/deployments?limit={limit}"))
        .await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&deployments)?);
        return Ok(ExitCode::SUCCESS);
    }
    if deployments.is_empty() {
        println!("{app} has no deployments yet.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "ID".into(),
        "ENVIRONMENT".into(),
        "KIND".into(),
        "RELEASE".into(),
        "STATE".into(),
        "STARTED".into(),
        "TOOK".into(),
        "ERROR".into(),
    ]];
    for d in &deployments {
        let state = match d.state {
            DeploymentState::Succeeded => green(d.state.as_str()),
            DeploymentState::Failed => red(d.state.as_str()),
            _ => d.state.as_str().to_string(),
        };
        rows.push(vec![
            d.id.to_string(),
            d.environment.clone(),
            d.kind.to_string(),
            baton_package::short_id(&d.release_id).to_string(),
            state,
            ago(d.created_at),
            d.finished_at
                .map(|f| millis(f - d.created_at))
                .unwrap_or_default(),
            d.error
                .as_deref()
                .and_then(|e| e.lines().next())
                .unwrap_or("")
                .to_string(),
        ]);
    }
    table(&rows);
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(
    common: &Common,
    app: &str,
    environment: &str,
    process: Option<&str>,
    follow: bool,
    lines: usize,
) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let process = process
        .map(|name| format!("&process={name}"))
        .unwrap_or_default();
    let response = api
        .stream(&format!(
            "/apps/{app}/logs?environment={environment}&lines={lines}&follow={follow}{process}"
        ))
        .await?;
    let mut stdout = std::io::stdout();
    if !common.json {
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            stdout.write_all(&chunk.map_err(broke_off)?)?;
            stdout.flush()?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    each_line(response, |line| {
        let text = String::from_utf8_lossy(line);
        // `at` is the line's stamp (null on lines written without one).
        let (at, text) = match baton_runtime::stamp::split(&text) {
            Some((at, rest)) => (Some(at), rest),
            None => (None, &*text),
        };
        writeln!(
            stdout,
            "{}",
            json!({"app": app, "environment": environment, "at": at, "line": text})
        )
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// `baton logs APP --requests`: the app's requests from the proxy's access
/// log, a line each; with --json the log's own JSON lines, as they are.
pub async fn requests(
    common: &Common,
    app: &str,
    environment: &str,
    follow: bool,
    lines: usize,
) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let response = api
        .stream(&format!(
            "/apps/{app}/requests?environment={environment}&lines={lines}&follow={follow}"
        ))
        .await?;
    let mut stdout = std::io::stdout();
    each_line(response, |line| {
        let record = if common.json {
            None
        } else {
            serde_json::from_slice::<baton_proxy::AccessRecord>(line).ok()
        };
        match record {
            Some(record) => writeln!(stdout, "{}", request_line(&record)),
            // JSON asked for, or a record this CLI cannot read: as it is.
            None => {
                stdout.write_all(line)?;
                stdout.write_all(b"\n")
            }
        }
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// One request for people: time, status, method, host and path, duration,
/// bytes, release, request id (and why the proxy answered itself, if it did).
fn request_line(r: &baton_proxy::AccessRecord) -> String {
    let status = match r.status {
        500.. => red(&r.status.to_string()),
        400.. => r.status.to_string(),
        _ => green(&r.status.to_string()),
    };
    let error = r
        .error
        .as_deref()
        .map(|e| format!(" {}", red(e)))
        .unwrap_or_default();
    format!(
        "{} {status} {} {}{} {:.1} ms {} {} {}{error}",
        dim(&r.time),
        r.method,
        r.host,
        r.path,
        r.duration_ms,
        size(r.bytes as i64),
        r.release.as_deref().map_or("-", baton_package::short_id),
        dim(&r.request_id),
    )
}

/// Calls `each` with every line of a streamed answer (without its newline)
/// as soon as it is whole, flushing stdout after each chunk so that a
/// follower sees lines as they come.
async fn each_line(
    response: reqwest::Response,
    mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<()> {
    let mut body = response.bytes_stream();
    let mut pending = Vec::new();
    while let Some(chunk) = body.next().await {
        pending.extend_from_slice(&chunk.map_err(broke_off)?);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
            each(&pending[start..start + end])?;
            start += end + 1;
        }
        pending.drain(..start);
        std::io::stdout().flush()?;
    }
    Ok(())
}

fn broke_off(e: reqwest::Error) -> anyhow::Error {
    anyhow!("the log stream broke off: {e}")
}

pub async fn events(common: &Common, app: &str, limit: i64) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let events: Vec<Event> = api
        .get(&format!("/apps/{app}/events?limit={limit}"))
        .await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(ExitCode::SUCCESS);
    }
    // Newest first, as every other list.
    for e in &events {
        println!(
            "{} {} {} {}",
            dim(&ago(e.at)),
            e.environment,
            bold(&e.kind),
            e.message
        );
    }
    Ok(ExitCode::SUCCESS)
}
