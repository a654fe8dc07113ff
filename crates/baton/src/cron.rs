//! `baton cron list|history|run`: an app's scheduled jobs, their runs,
//! and a run by hand, followed to its end.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use baton_orchestrator::{CronJobView, CronRunOutput};
use baton_store::{CronRun, CronState};
use clap::Subcommand;
use serde_json::json;

use crate::client::Api;
use crate::output::{ago, dim, green, millis, red, table};
use crate::{Common, EnvArg};

#[derive(Subcommand)]
pub enum CronCommand {
    /// The live release's jobs: schedule, next run, last run and result.
    List {
        /// The app's name (as in its baton.toml).
        app: String,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// A job's runs, newest first: tick, state, exit code, duration.
    History {
        /// The app's name (as in its baton.toml).
        app: String,
        /// The job's name (`[cron.NAME]`).
        job: String,
        #[command(flatten)]
        env: EnvArg,
        /// How many runs to show.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        common: Common,
    },
    /// Run a job now in the live release (recorded as a manual run) and
    /// follow its output; our exit code is the job's.
    Run {
        /// The app's name (as in its baton.toml).
        app: String,
        /// The job's name (`[cron.NAME]`).
        job: String,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
}

pub async fn cron(command: CronCommand) -> Result<ExitCode> {
    match command {
        CronCommand::List { app, env, common } => list(&common, &app, &env.environment).await,
        CronCommand::History {
            app,
            job,
            env,
            limit,
            common,
        } => history(&common, &app, &job, &env.environment, limit).await,
        CronCommand::Run {
            app,
            job,
            env,
            common,
        } => run(&common, &app, &job, &env.environment).await,
    }
}

fn time(ms: i64) -> String {
    baton_orchestrator::cron::tick_text(ms)
}

fn outcome(run: &CronRun) -> String {
    let text = match (run.state, run.exit_code) {
        (CronState::Failed, Some(code)) => format!("failed (exit {code})"),
        (state, _) => state.as_str().replace('_', " "),
    };
    match run.state {
        CronState::Succeeded => green(&text),
        CronState::Failed | CronState::TimedOut | CronState::Interrupted => red(&text),
        _ => text,
    }
}

async fn list(common: &Common, app: &str, environment: &str) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let jobs: Vec<CronJobView> = api
        .get(&format!("/apps/{app}/cron?environment={environment}"))
        .await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if jobs.is_empty() {
        println!("{app}'s live release in {environment} has no [cron.NAME] jobs");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "JOB".to_string(),
        "SCHEDULE".into(),
        "NEXT RUN".into(),
        "LAST RUN".into(),
        "RESULT".into(),
    ]];
    for job in &jobs {
        let zone = if job.timezone == "UTC" {
            String::new()
        } else {
            format!(" ({})", job.timezone)
        };
        rows.push(vec![
            job.name.clone(),
            format!("{}{zone}", job.schedule),
            job.next_run.map(time).unwrap_or_else(|| "-".into()),
            job.last_run
                .as_ref()
                .map(|r| format!("{} ({})", time(r.scheduled_at), ago(r.scheduled_at)))
                .unwrap_or_else(|| "never".into()),
            job.last_run.as_ref().map(outcome).unwrap_or_default(),
        ]);
    }
    table(&rows);
    Ok(ExitCode::SUCCESS)
}

async fn history(
    common: &Common,
    app: &str,
    job: &str,
    environment: &str,
    limit: i64,
) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let runs: Vec<CronRun> = api
        .get(&format!(
            "/apps/{app}/cron/{job}/runs?environment={environment}&limit={limit}"
        ))
        .await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("{job} of {app} in {environment} has not run yet");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "RUN".to_string(),
        "TICK".into(),
        "RESULT".into(),
        "TOOK".into(),
        "DETAIL".into(),
    ]];
    for run in &runs {
        rows.push(vec![
            run.id.to_string(),
            format!(
                "{}{}",
                time(run.scheduled_at),
                if run.manual { " (by hand)" } else { "" }
            ),
            outcome(run),
            run.took_ms().map(millis).unwrap_or_default(),
            run.detail.clone().unwrap_or_default(),
        ]);
    }
    table(&rows);
    Ok(ExitCode::SUCCESS)
}

async fn run(common: &Common, app: &str, job: &str, environment: &str) -> Result<ExitCode> {
    let api = Api::new(&common.api);
    let started: CronRun = api
        .post_json(
            &format!("/apps/{app}/cron/{job}/runs"),
            &json!({ "environment": environment }),
        )
        .await?;
    if !common.json {
        eprintln!(
            "{}",
            dim(&format!("run {} of {job} in {environment}", started.id))
        );
    }
    let mut offset = 0;
    let run = loop {
        let part: CronRunOutput = api
            .get(&format!(
                "/apps/{app}/cron/{job}/runs/{}?environment={environment}&offset={offset}",
                started.id
            ))
            .await?;
        if !common.json && !part.output.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(part.output.as_bytes());
            let _ = out.flush();
        }
        let more = part.next_offset > offset;
        offset = part.next_offset;
        let ended = !matches!(part.run.state, CronState::Running | CronState::Queued);
        if ended && !more {
            break part.run;
        }
        if !more {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    if common.json {
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else {
        eprintln!(
            "{} {}",
            outcome(&run),
            run.took_ms().map(millis).unwrap_or_default()
        );
    }
    Ok(match (run.state, run.exit_code) {
        (CronState::Succeeded, _) => ExitCode::SUCCESS,
        (_, Some(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)),
        _ => ExitCode::FAILURE,
    })
}
