//! One-off commands the orchestrator runs in a release's environment: the
//! release command of a deployment (`[deploy] release_command`) and
//! `baton run`. Both get what a target of that release gets (its folder,
//! the manifest's and the config's variables, the app user).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_runtime::{CommandSpec, Exit, OneOff};
use baton_store::{EventKind, Release};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::deploy::Job;
use crate::{Error, Orchestrator, Result};

/// How much of a failed command's output its error quotes.
const TAIL: usize = 2_000;

/// The most of a command's output its log keeps; the rest is read and
/// dropped, so a chatty command neither fills the disk nor blocks.
const MAX_LOG: u64 = 16 * 1024 * 1024;

/// How a command run to a log file ended.
pub(crate) struct Ran {
    /// `None`: stopped at its time limit.
    pub exit: Option<Exit>,
    pub took: Duration,
    /// The end of its output.
    pub tail: String,
}

/// Runs `spec` to its end or `timeout`, its output appended to `log`.
pub(crate) async fn run_to_log(
    spec: &CommandSpec,
    user: Option<&baton_runtime::AppUser>,
    log: &Path,
    timeout: Duration,
) -> std::result::Result<Ran, String> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .await
        .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    let started = Instant::now();
    let mut run = OneOff::start(spec, user).map_err(|e| e.to_string())?;
    let mut output = std::mem::replace(&mut run.output, Box::pin(tokio::io::empty()));
    // The output is read apart from the wait: a background child holding
    // the pipe open must not keep the command from ending.
    let copy = tokio::spawn(async move {
        let mut tail: Vec<u8> = Vec::new();
        let mut buffer = vec![0u8; 16 * 1024];
        let mut written = 0u64;
        while let Ok(n) = output.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            if written < MAX_LOG {
                let keep = n.min((MAX_LOG - written) as usize);
                let _ = file.write_all(&buffer[..keep]).await;
                written += keep as u64;
                if written == MAX_LOG {
                    let _ = file
                        .write_all(b"\n[baton: output cut here, at 16 MiB; the rest was dropped]\n")
                        .await;
                }
            }
            tail.extend_from_slice(&buffer[..n]);
            if tail.len() > 2 * TAIL {
                tail.drain(..tail.len() - TAIL);
            }
        }
        let _ = file.flush().await;
        tail
    });
    let exit = match tokio::time::timeout(timeout, run.wait()).await {
        Ok(exit) => Some(exit),
        Err(_) => {
            run.stop(Duration::from_secs(5)).await;
            None
        }
    };
    let took = started.elapsed();
    // Its group goes now (background children included); then the pipe
    // closes and the copy ends.
    drop(run);
    let tail = match tokio::time::timeout(Duration::from_secs(2), copy).await {
        Ok(Ok(tail)) => tail,
        _ => Vec::new(),
    };
    let start = tail.len().saturating_sub(TAIL);
    Ok(Ran {
        exit,
        took,
        tail: String::from_utf8_lossy(&tail[start..])
            .trim_end()
            .to_string(),
    })
}

impl Orchestrator {
    /// What a one-off command of `release` in `environment` runs with, as
    /// its targets would (config version `config`).
    pub(crate) async fn command_spec(
        &self,
        release: &Release,
        environment: &str,
        config: Option<i64>,
        command: &str,
    ) -> Result<CommandSpec> {
        let manifest = baton_manifest::Manifest::parse(&release.manifest, "baton.toml")
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let values = self
            .config_values(&release.app, environment, config)
            .await?;
        Ok(CommandSpec {
            app: release.app.clone(),
            environment: environment.to_string(),
            release: release.id.clone(),
            dir: self.release_dir(&release.id),
            command: command.to_string(),
            env: crate::variables(&manifest, environment, values),
        })
    }

    /// Where a deployment's release command writes its output.
    pub fn release_command_log(&self, deployment: i64) -> PathBuf {
        self.logs
            .dir()
            .join(format!("release-command-{deployment}.log"))
    }

    /// The deployment's `release_command` step: run once, before any of
    /// its targets start; anything but exit code 0 fails the deployment.
    pub(crate) async fn release_command(
        &self,
        job: &Job,
    ) -> std::result::Result<((), Option<String>), String> {
        let Some(command) = &job.manifest.deploy.release_command else {
            return Ok(((), None));
        };
        let spec = self
            .command_spec(
                &job.release,
                &job.key.environment,
                job.deployment.config_version,
                command,
            )
            .await
            .map_err(|e| e.to_string())?;
        let log = self.release_command_log(job.deployment.id);
        let timeout = job.manifest.deploy.release_timeout;
        let ran = run_to_log(&spec, self.runtimes.app_user.as_ref(), &log, timeout).await?;
        let tail = if ran.tail.is_empty() {
            "(no output)".to_string()
        } else {
            ran.tail
        };
        let failure = match ran.exit {
            Some(Exit::Code(0)) => {
                return Ok((
                    (),
                    Some(format!(
                        "`{command}` exited with code 0 in {:.1} s; its output is in {}",
                        ran.took.as_secs_f64(),
                        log.display()
                    )),
                ))
            }
            Some(exit) => format!("the release command `{command}` {exit}"),
            None => format!(
                "the release command `{command}` ran longer than its release_timeout ({}) and was stopped",
                humantime::format_duration(timeout)
            ),
        };
        let message = format!(
            "{failure}; the live release is unchanged. Its output ended with:\n{tail}\n(all of it: {})",
            log.display()
        );
        self.event(&job.key, EventKind::ReleaseCommandFailed, &failure)
            .await;
        Err(message)
    }
}

impl Orchestrator {
    /// `baton run`: starts `command` in the live release of `app` in
    /// `environment`, with the config its live target runs with; audited
    /// before it starts. The caller streams its output and drops it to
    /// kill it (with its whole process group).
    pub async fn run_command(
        &self,
        app: &str,
        environment: &str,
        command: &str,
        actor: &crate::Actor,
    ) -> Result<OneOff> {
        crate::check_environment(environment)?;
        if command.trim().is_empty() {
            return Err(Error::Invalid(
                "no command: `baton run APP -- COMMAND ARGS…`".into(),
            ));
        }
        if command.len() > 64 * 1024 {
            return Err(Error::Invalid(format!(
                "the command is {} bytes; keep it under 64 KiB (put scripts in the release)",
                command.len()
            )));
        }
        let Some(live) = self.live_target(app, environment).await? else {
            return Err(Error::NotFound(format!(
                "{app} is not running in {environment}: deploy it there first (`baton deploy DIR -e {environment}`)"
            )));
        };
        let release = self.store.release(&live.release_id).await?;
        if baton_manifest::Manifest::parse(&release.manifest, "baton.toml")
            .is_ok_and(|m| m.runtime == baton_manifest::RuntimeKind::Docker)
        {
            return Err(Error::Invalid(format!(
                "{app} runs in Docker containers, which have no release folder to run a command in; use `docker exec` on its container (`baton status` names it)"
            )));
        }
        let config = self.config_of_target(live.deployment_id).await?;
        let spec = self
            .command_spec(&release, environment, config, command)
            .await?;
        let entry = actor.entry(
            "command.run",
            format!("command in {app}/{environment}"),
            app,
            environment,
            serde_json::json!({
                "command": command,
                "release": release.id,
            }),
        );
        self.store.record_audit(&entry).await?;
        OneOff::start(&spec, self.runtimes.app_user.as_ref())
            .map_err(|e| Error::Internal(format!("cannot start `{command}`: {e}")))
    }
}
