//! Running a build's commands: the `git` checkout of the exact commit into a
//! fresh workspace, then each build and test step with `sh -c`, in their own
//! process group, with a scrubbed environment, output appended to the
//! build's log file, and killed (the whole group) at the deadline.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

/// A build's folder: `DIR/<id>/src` is the workspace, `DIR/<id>.log` its output.
pub(crate) struct Workspace {
    pub src: PathBuf,
    pub home: PathBuf,
    pub log: PathBuf,
}

impl Workspace {
    pub fn new(builds_dir: &Path, id: i64) -> Workspace {
        Workspace {
            src: builds_dir.join(id.to_string()).join("src"),
            home: builds_dir.join(id.to_string()).join("home"),
            log: log_path(builds_dir, id),
        }
    }

    /// Everything but the log.
    pub fn remove(&self) {
        if let Some(parent) = self.src.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

pub(crate) fn log_path(builds_dir: &Path, id: i64) -> PathBuf {
    builds_dir.join(format!("{id}.log"))
}

/// Appends a line of Baton's own to the build log.
pub(crate) fn note(log: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "[baton] {line}");
    }
}

/// How a command ended.
pub(crate) enum Outcome {
    Exited(i32),
    TimedOut,
}

/// Runs `program args` in `dir` with only the variables in `env` (and PATH),
/// output to `log`, killed with its process group at `deadline`.
pub(crate) async fn run(
    program: &str,
    args: &[&str],
    dir: &Path,
    env: &[(&str, &str)],
    log: &Path,
    deadline: Instant,
) -> Result<Outcome, String> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open the build log {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot open the build log: {e}"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("LANG", "C.UTF-8")
        .env("CI", "true")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let pid = child.id();
    match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => Ok(Outcome::Exited(status.code().unwrap_or(-1))),
        Ok(Err(e)) => Err(format!("waiting for {program} failed: {e}")),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1) {
                // The whole group: a step's own children die with it.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            Ok(Outcome::TimedOut)
        }
    }
}

/// Fetches exactly `commit` from `url` (a URL, or the path of a local
/// repository) into a new repository at `ws.src`, and checks it out.
pub(crate) async fn checkout(
    ws: &Workspace,
    url: &str,
    commit: &str,
    deadline: Instant,
) -> Result<(), String> {
    std::fs::create_dir_all(&ws.src).map_err(|e| format!("cannot create the workspace: {e}"))?;
    std::fs::create_dir_all(&ws.home).map_err(|e| format!("cannot create the workspace: {e}"))?;
    let home = ws.home.to_string_lossy().to_string();
    let env = [
        ("HOME", home.as_str()),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_CONFIG_NOSYSTEM", "1"),
    ];
    let git = |args: Vec<&str>| {
        let args: Vec<String> = args.into_iter().map(str::to_string).collect();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            match run("git", &refs, &ws.src, &env, &ws.log, deadline).await? {
                Outcome::Exited(0) => Ok(()),
                Outcome::Exited(code) => Err(format!("git {} exited with {code}", args[0])),
                Outcome::TimedOut => Err(format!("git {} ran out of time", args[0])),
            }
        }
    };
    git(vec!["init", "--quiet"]).await?;
    // Most servers let a client fetch a commit by its id; otherwise every
    // branch and pull-request head is fetched, and the commit found there.
    let by_id = git(vec![
        "fetch",
        "--quiet",
        "--no-tags",
        "--depth=1",
        url,
        commit,
    ])
    .await;
    if by_id.is_err() {
        note(
            &ws.log,
            "fetching the commit by id failed; fetching every branch",
        );
        git(vec![
            "fetch",
            "--quiet",
            "--no-tags",
            url,
            "+refs/heads/*:refs/remotes/source/*",
            "+refs/pull/*:refs/remotes/pull/*",
        ])
        .await?;
    }
    git(vec![
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "--quiet",
        "--detach",
        commit,
    ])
    .await
    .map_err(|e| format!("commit {commit} is not in {url}: {e}"))?;
    Ok(())
}

/// What is left of a deadline, for messages.
pub(crate) fn describe(timeout: Duration) -> String {
    humantime::format_duration(timeout).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git is installed");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[tokio::test]
    async fn checkout_takes_the_exact_commit_not_the_branch_tip() {
        let tmp = tempfile::tempdir().unwrap();
        let origin = tmp.path().join("origin.git");
        git(tmp.path(), &["init", "--quiet", "--bare", "origin.git"]);
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "--quiet"]);
        std::fs::write(work.join("v.txt"), "1").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "--quiet", "-m", "one"]);
        let first = git(&work, &["rev-parse", "HEAD"]);
        std::fs::write(work.join("v.txt"), "2").unwrap();
        git(&work, &["commit", "--quiet", "-am", "two"]);
        git(
            &work,
            &[
                "push",
                "--quiet",
                origin.to_str().unwrap(),
                "HEAD:refs/heads/main",
            ],
        );

        let ws = Workspace::new(&tmp.path().join("builds"), 1);
        let deadline = Instant::now() + Duration::from_secs(60);
        // A plain path, as for a local bare repository.
        checkout(&ws, origin.to_str().unwrap(), &first, deadline)
            .await
            .unwrap();
        assert_eq!(git(&ws.src, &["rev-parse", "HEAD"]), first);
        assert_eq!(std::fs::read_to_string(ws.src.join("v.txt")).unwrap(), "1");

        let ws = Workspace::new(&tmp.path().join("builds"), 2);
        let url = format!("file://{}", origin.display());
        let err = checkout(&ws, &url, &"f".repeat(40), deadline)
            .await
            .unwrap_err();
        assert!(err.contains("is not in"), "{err}");
    }

    #[tokio::test]
    async fn a_step_past_its_deadline_is_killed_with_its_children() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("build.log");
        let started = std::time::Instant::now();
        let outcome = run(
            "sh",
            &["-c", "sleep 30 & echo $! > child.pid; echo started; wait"],
            tmp.path(),
            &[],
            &log,
            Instant::now() + Duration::from_millis(500),
        )
        .await
        .unwrap();
        assert!(matches!(outcome, Outcome::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(std::fs::read_to_string(&log).unwrap().contains("started"));
        let pid = std::fs::read_to_string(tmp.path().join("child.pid")).unwrap();
        let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
        // SIGKILL went to the whole group; the kernel ends the child when it
        // next runs, which on a busy machine can be a moment later. Dead (gone
        // or a zombie) soon, never still sleeping.
        let alive = || {
            std::fs::read_to_string(proc.join("stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
        };
        let killed_at = std::time::Instant::now();
        while alive() && killed_at.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!alive(), "the step's child outlived the deadline by 5 s");
    }

    #[tokio::test]
    async fn steps_see_a_scrubbed_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("build.log");
        std::env::set_var("BATON_TEST_LEAK", "secret");
        let outcome = run(
            "sh",
            &[
                "-c",
                "echo \"leak=[$BATON_TEST_LEAK] ci=$CI app=$BATON_APP\"; exit 4",
            ],
            tmp.path(),
            &[("BATON_APP", "shop")],
            &log,
            Instant::now() + Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert!(matches!(outcome, Outcome::Exited(4)));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("leak=[] ci=true app=shop"), "{text}");
    }
}
