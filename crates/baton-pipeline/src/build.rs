//! Running a build's commands: the `git` checkout of the exact commit into a
//! fresh workspace, then each build and test step with `sh -c`, in their own
//! process group, as the app user, with the fixed environment of
//! [`baton_runtime::user`] (plus `CI=true` and the build's own variables),
//! output appended to the build's log file, and killed (the whole group) at
//! the deadline. `git` runs as the app user too: the workspace is given to
//! that user before anything is fetched, so the server never runs git over
//! a repository's content, and the steps can write their workspace.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use baton_runtime::{app_command, AppUser, RuntimeError};
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

/// Runs `program args` in `dir` as `user`, with the base environment,
/// `CI=true` and the variables in `env`, output to `log`, killed with its
/// process group at `deadline`. `user` is `None` only on a server that is
/// not root.
pub(crate) async fn run(
    program: &str,
    args: &[&str],
    dir: &Path,
    env: &[(&str, &str)],
    user: Option<&AppUser>,
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
    let mut command = app_command(program, user).map_err(|e| e.to_string())?;
    command
        .args(args)
        .current_dir(dir)
        .env("CI", "true")
        .envs(env.iter().copied())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| RuntimeError::spawn(program, dir, user, e).to_string())?;
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
/// repository, which `user` must be able to read) into a new repository at
/// `ws.src`, owned by `user`, and checks it out as `user`.
pub(crate) async fn checkout(
    ws: &Workspace,
    url: &str,
    commit: &str,
    user: Option<&AppUser>,
    deadline: Instant,
) -> Result<(), String> {
    // From nothing: a folder left by an earlier server could hold what the
    // app user put there, and root is about to write in it.
    ws.remove();
    for dir in [&ws.src, &ws.home] {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the workspace: {e}"))?;
    }
    // git refuses a local repository that another user owns ("dubious
    // ownership"), and a local bare repository or `file://` URL is a
    // supported source. Trusting every repository gives nothing away: git
    // runs as the app user, whom the build's steps run as anyway, with the
    // repository's own commands. Written before the home is given away, so
    // nothing of the app user's can stand in the file's place.
    std::fs::write(ws.home.join(".gitconfig"), "[safe]\n\tdirectory = *\n")
        .map_err(|e| format!("cannot create the workspace: {e}"))?;
    // The server's umask (0077) made these private to it. The build's own
    // folder stays the server's, and the app user passes through it (never
    // lists it) to the two folders that are its own; it reads .gitconfig.
    if let Some(build_dir) = ws.src.parent() {
        use std::os::unix::fs::PermissionsExt;
        let open = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("cannot open the workspace to the app user: {e}"))
        };
        open(build_dir, 0o711)?;
        open(&ws.home.join(".gitconfig"), 0o644)?;
    }
    for dir in [&ws.src, &ws.home] {
        // Empty folders, given away before git writes anything: no
        // recursive chown over content a repository controls.
        if let Some(user) = user {
            std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)).map_err(|e| {
                format!(
                    "cannot give the workspace {} to the app user {}: {e}",
                    dir.display(),
                    user.name
                )
            })?;
        }
    }
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
            match run("git", &refs, &ws.src, &env, user, &ws.log, deadline).await? {
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

    use nix::unistd::geteuid;

    /// Who builds run as in these tests: `nobody` when they run as root
    /// (as on CI), else the tests' own user.
    fn app_user() -> Option<AppUser> {
        geteuid()
            .is_root()
            .then(|| AppUser::resolve("nobody").unwrap())
    }

    /// A folder the app user may write in, as a build's workspace is.
    fn workdir(user: Option<&AppUser>) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        if let Some(user) = user {
            std::os::unix::fs::chown(tmp.path(), Some(user.uid), Some(user.gid)).unwrap();
        }
        tmp
    }

    /// A bare repository at `dir/origin.git` with two commits on `main`;
    /// returns the first commit's id.
    fn origin_with_two_commits(dir: &Path) -> String {
        git(dir, &["init", "--quiet", "--bare", "origin.git"]);
        let work = dir.join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "--quiet"]);
        std::fs::write(work.join("v.txt"), "1").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "--quiet", "-m", "one"]);
        let first = git(&work, &["rev-parse", "HEAD"]);
        std::fs::write(work.join("v.txt"), "2").unwrap();
        git(&work, &["commit", "--quiet", "-am", "two"]);
        let origin = dir.join("origin.git");
        git(
            &work,
            &[
                "push",
                "--quiet",
                origin.to_str().unwrap(),
                "HEAD:refs/heads/main",
            ],
        );
        first
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            // The workspace belongs to the app user, not to the tests.
            .args(["-c", "safe.directory=*"])
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
        let user = app_user();
        let first = origin_with_two_commits(tmp.path());
        let origin = tmp.path().join("origin.git");

        let ws = Workspace::new(&tmp.path().join("builds"), 1);
        let deadline = Instant::now() + Duration::from_secs(60);
        // A plain path, as for a local bare repository.
        checkout(
            &ws,
            origin.to_str().unwrap(),
            &first,
            user.as_ref(),
            deadline,
        )
        .await
        .unwrap();
        assert_eq!(git(&ws.src, &["rev-parse", "HEAD"]), first);
        assert_eq!(std::fs::read_to_string(ws.src.join("v.txt")).unwrap(), "1");

        let ws = Workspace::new(&tmp.path().join("builds"), 2);
        let url = format!("file://{}", origin.display());
        let err = checkout(&ws, &url, &"f".repeat(40), user.as_ref(), deadline)
            .await
            .unwrap_err();
        assert!(err.contains("is not in"), "{err}");
    }

    #[tokio::test]
    async fn a_step_past_its_deadline_is_killed_with_its_children() {
        let user = app_user();
        let tmp = workdir(user.as_ref());
        let log = tmp.path().join("build.log");
        let started = std::time::Instant::now();
        let outcome = run(
            "sh",
            &["-c", "sleep 30 & echo $! > child.pid; echo started; wait"],
            tmp.path(),
            &[],
            user.as_ref(),
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
        let user = app_user();
        let tmp = workdir(user.as_ref());
        let log = tmp.path().join("build.log");
        std::env::set_var("BATON_TEST_LEAK", "secret");
        let outcome = run(
            "sh",
            &[
                "-c",
                "echo \"leak=[$BATON_TEST_LEAK] ci=$CI app=$BATON_APP path=$PATH\"; exit 4",
            ],
            tmp.path(),
            &[("BATON_APP", "shop")],
            user.as_ref(),
            &log,
            Instant::now() + Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert!(matches!(outcome, Outcome::Exited(4)));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains(&format!(
                "leak=[] ci=true app=shop path={}",
                baton_runtime::user::PATH
            )),
            "{text}"
        );
    }

    #[tokio::test]
    async fn build_steps_run_unprivileged_in_a_workspace_they_can_write() {
        let Some(user) = app_user() else {
            eprintln!("note: not root, so builds cannot switch users; skipped");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let first = origin_with_two_commits(tmp.path());
        let ws = Workspace::new(&tmp.path().join("builds"), 1);
        let deadline = Instant::now() + Duration::from_secs(60);
        let origin = tmp.path().join("origin.git");
        checkout(&ws, origin.to_str().unwrap(), &first, Some(&user), deadline)
            .await
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        let checked_out = std::fs::metadata(ws.src.join("v.txt")).unwrap();
        assert_eq!(checked_out.uid(), user.uid, "git ran as the app user");

        let home = ws.home.to_string_lossy().to_string();
        let outcome = run(
            "sh",
            &[
                "-c",
                "echo \"uid=$(id -u) groups=$(id -G) home=$HOME\"; echo built > out.txt; touch \"$HOME/cache\"",
            ],
            &ws.src,
            &[("HOME", home.as_str())],
            Some(&user),
            &ws.log,
            deadline,
        )
        .await
        .unwrap();
        let text = std::fs::read_to_string(&ws.log).unwrap();
        assert!(matches!(outcome, Outcome::Exited(0)), "{text}");
        let line = text.lines().find(|l| l.starts_with("uid=")).unwrap();
        assert!(
            line.starts_with(&format!("uid={} groups=", user.uid)),
            "{text}"
        );
        let groups = line["uid=".len()..].split(" home=").next().unwrap();
        assert!(
            groups.split_whitespace().skip(1).all(|g| g != "0"),
            "the step kept root's group: {text}"
        );
        assert!(line.ends_with(&format!("home={home}")), "{text}");
        assert_eq!(
            std::fs::read_to_string(ws.src.join("out.txt")).unwrap(),
            "built\n"
        );
        assert!(ws.home.join("cache").exists());
    }

    #[tokio::test]
    async fn a_root_server_runs_no_step_without_an_app_user() {
        if !geteuid().is_root() {
            eprintln!("note: not root; skipped");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let err = run(
            "sh",
            &["-c", "touch ran"],
            tmp.path(),
            &[],
            None,
            &tmp.path().join("build.log"),
            Instant::now() + Duration::from_secs(10),
        )
        .await
        .err()
        .unwrap();
        assert!(err.contains("root"), "{err}");
        assert!(!tmp.path().join("ran").exists());
    }
}
