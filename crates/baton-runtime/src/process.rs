//! The process runtime: a target is a process group started with `sh -c`,
//! in the release's folder, its output appended to a log file. Processes are
//! put in their own process group so that stopping Baton (even with kill -9)
//! never stops them, and stopping a target stops everything it started.
//! A target runs as the app user with the fixed environment of
//! [`crate::user`] plus its own variables; the server (root, or that same
//! user) can still signal it, so stopping and adopting need nothing more.
//! Given a stamper (the server's own executable, see [`crate::stamp`]), the
//! target's process is `baton log-stamp -- sh -c COMMAND`, which stamps each
//! line with the time; it is the target for starting, waiting, stopping and
//! adopting alike, and ends as the app ends.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::user::{app_command, AppUser};
use crate::{Exit, LogFiles, Runtime, RuntimeError, TargetHandle, TargetSpec};

/// Set for the stamper alone (it takes it out of the app's environment):
/// Baton's allocator then takes memory as the stamper needs it instead of
/// committing a first arena whole, which on hosts with transparent huge
/// pages cost each target about 6 MB more.
const STAMPER_ONLY_ENV: (&str, &str) = ("MIMALLOC_ARENA_EAGER_COMMIT", "0");

pub struct ProcessRuntime {
    logs: LogFiles,
    /// Who targets run as; `None` only when the server is not root.
    user: Option<AppUser>,
    /// The program that stamps output lines (`PROGRAM log-stamp -- …`);
    /// `None` writes the app's output to the log as it is.
    stamper: Option<PathBuf>,
    /// Exit watchers for the processes this server started itself.
    children: Arc<Mutex<HashMap<u32, watch::Receiver<Option<Exit>>>>>,
}

impl ProcessRuntime {
    /// Target output goes to the target's file in `logs`; targets run as
    /// `user` (see [`AppUser::for_server`]), or as the server's own user
    /// when `None`, which a root server refuses at start.
    pub fn new(logs: LogFiles, user: Option<AppUser>) -> ProcessRuntime {
        ProcessRuntime {
            logs,
            user,
            stamper: None,
            children: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Stamps each line of targets' output with the time it was written,
    /// through `program log-stamp` (the server passes its own executable).
    /// When the app user cannot run `program`, output stays unstamped and
    /// a warning says how to fix it: a target that runs matters more than
    /// the time on its lines.
    pub fn with_stamper(mut self, program: PathBuf) -> ProcessRuntime {
        let runnable = match &self.user {
            Some(user) => user.can_run(&program),
            None => Ok(()),
        };
        match runnable {
            Ok(()) => self.stamper = Some(program),
            Err(e) => tracing::warn!("{e}"),
        }
        self
    }

    /// Whether targets' output lines get stamped.
    pub fn stamps(&self) -> bool {
        self.stamper.is_some()
    }

    fn running(&self, handle: &TargetHandle) -> bool {
        let Ok((pid, start)) = parse(handle) else {
            return false;
        };
        if let Some(rx) = self
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pid)
        {
            return rx.borrow().is_none();
        }
        matches!(proc_start(pid), Some((s, false)) if s == start)
    }
}

fn parse(handle: &TargetHandle) -> Result<(u32, u64), RuntimeError> {
    let bad = || RuntimeError::BadHandle(handle.reference.clone());
    let (pid, start) = handle.reference.split_once('@').ok_or_else(bad)?;
    let pid: u32 = pid.parse().map_err(|_| bad())?;
    // Never 0 or 1: signalling those would hit Baton's own group or init.
    if pid <= 1 {
        return Err(bad());
    }
    Ok((pid, start.parse().map_err(|_| bad())?))
}

/// What /proc says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Exited and not yet waited for by its parent.
    pub zombie: bool,
    pub parent: u32,
    /// Clock ticks since boot: a pid alone can be reused, pid plus start
    /// time cannot.
    pub start: u64,
}

/// `/proc/PID/stat`, read, if the process exists.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        zombie: *fields.first()? == "Z",
        parent: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// The pids of `parent`'s children (zombies included).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|s| s.parent == parent))
        .collect()
}

fn proc_start(pid: u32) -> Option<(u64, bool)> {
    proc_stat(pid).map(|s| (s.start, s.zombie))
}

/// Kills what is left of a target's process group once its leader is gone
/// (nothing, usually: then the kernel answers ESRCH).
fn end_group(leader: u32) {
    if let Ok(pid) = i32::try_from(leader) {
        if pid > 1 {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

pub(crate) fn exit_of(status: std::process::ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Vanished,
    }
}

impl Runtime for ProcessRuntime {
    fn start<'a>(
        &'a self,
        spec: &'a TargetSpec,
    ) -> BoxFuture<'a, Result<TargetHandle, RuntimeError>> {
        async move {
            let path = self.logs.path(spec.target_id);
            let log_error = |source| RuntimeError::Log {
                path: path.display().to_string(),
                source,
            };
            let mut log = self.logs.append(spec.target_id).map_err(log_error)?;
            let _ = writeln!(
                log,
                "{}[baton] starting target {} of {} release {} on port {}: {}",
                crate::stamp::stamp(crate::stamp::now_ms()),
                spec.target_id,
                spec.app,
                &spec.release[..spec.release.len().min(12)],
                spec.port,
                spec.command
            );
            let stderr = log.try_clone().map_err(log_error)?;
            let mut command = match &self.stamper {
                Some(stamper) => {
                    let mut command = app_command(stamper, self.user.as_ref())?;
                    command.arg("log-stamp");
                    let (name, value) = STAMPER_ONLY_ENV;
                    if !spec.env.contains_key(name) {
                        command.env(name, value).args(["--unset", name]);
                    }
                    command.args(["--", "sh", "-c"]);
                    command
                }
                None => {
                    let mut command = app_command("sh", self.user.as_ref())?;
                    command.arg("-c");
                    command
                }
            };
            command
                .arg(&spec.command)
                .current_dir(&spec.dir)
                .envs(&spec.env);
            if spec.is_web() {
                command.env("PORT", spec.port.to_string());
            }
            command
                .env("BATON_PROCESS", &spec.process)
                .env("BATON_APP", &spec.app)
                .env("BATON_ENVIRONMENT", &spec.environment)
                .env("BATON_RELEASE", &spec.release)
                .env("BATON_TARGET", spec.target_id.to_string())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(stderr))
                .kill_on_drop(false);
            let mut child = command.spawn().map_err(|source| {
                RuntimeError::spawn(&spec.command, &spec.dir, self.user.as_ref(), source)
            })?;
            let pid = child.id().unwrap_or(0);
            let start = proc_start(pid).map(|(start, _)| start).unwrap_or(0);
            let (tx, rx) = watch::channel(None);
            self.children
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pid, rx);
            let children = Arc::clone(&self.children);
            tokio::spawn(async move {
                let exit = match child.wait().await {
                    Ok(status) => exit_of(status),
                    Err(_) => Exit::Vanished,
                };
                // The target is its process group: whatever the leader left
                // behind (a child still holding the port) goes with it, so a
                // restart can listen again.
                end_group(pid);
                let _ = tx.send(Some(exit));
                // Keep the receiver around briefly so a late waiter still sees it.
                tokio::time::sleep(Duration::from_secs(60)).await;
                children
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&pid);
            });
            Ok(TargetHandle {
                target_id: spec.target_id,
                reference: format!("{pid}@{start}"),
            })
        }
        .boxed()
    }

    fn alive<'a>(&'a self, handle: &'a TargetHandle) -> BoxFuture<'a, bool> {
        let running = self.running(handle);
        Box::pin(async move { running })
    }

    fn wait<'a>(&'a self, handle: &'a TargetHandle) -> BoxFuture<'a, Exit> {
        async move {
            let Ok((pid, _)) = parse(handle) else {
                return Exit::Vanished;
            };
            let rx = self
                .children
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&pid)
                .cloned();
            match rx {
                Some(mut rx) => match rx.wait_for(|exit| exit.is_some()).await {
                    Ok(exit) => exit.unwrap_or(Exit::Vanished),
                    Err(_) => Exit::Vanished,
                },
                // Adopted after a restart: not our child, so poll for it.
                None => loop {
                    if !self.running(handle) {
                        end_group(pid);
                        return Exit::Vanished;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                },
            }
        }
        .boxed()
    }

    fn stop<'a>(
        &'a self,
        handle: &'a TargetHandle,
        grace: Duration,
    ) -> BoxFuture<'a, Result<Exit, RuntimeError>> {
        async move {
            let (pid, _) = parse(handle)?;
            if !self.running(handle) {
                return Ok(Exit::Vanished);
            }
            let group = Pid::from_raw(pid as i32);
            let signal = |sig| {
                killpg(group, sig).map_err(|e| RuntimeError::Signal {
                    target: handle.reference.clone(),
                    reason: e.to_string(),
                })
            };
            signal(Signal::SIGTERM)?;
            if let Ok(exit) = tokio::time::timeout(grace, self.wait(handle)).await {
                // The leader is gone; make sure nothing it started lingers.
                let _ = killpg(group, Signal::SIGKILL);
                return Ok(exit);
            }
            tracing::warn!(
                target = handle.target_id,
                "target ignored SIGTERM for {grace:?}; killing it"
            );
            let _ = signal(Signal::SIGKILL);
            Ok(self.wait(handle).await)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    use nix::unistd::geteuid;

    /// A folder for a target, and the user targets run as: `nobody` when
    /// the tests run as root (as on CI), who then owns the folder so the
    /// tests' targets can write there; else the tests' own user.
    fn workdir() -> (tempfile::TempDir, Option<AppUser>) {
        let dir = tempfile::tempdir().unwrap();
        if !geteuid().is_root() {
            return (dir, None);
        }
        let user = AppUser::resolve("nobody").unwrap();
        std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
        (dir, Some(user))
    }

    fn spec(dir: &std::path::Path, id: i64, command: &str) -> TargetSpec {
        TargetSpec {
            process: crate::WEB.to_string(),
            target_id: id,
            app: "t".into(),
            environment: "production".into(),
            release: "0123456789abcdef".into(),
            dir: dir.to_path_buf(),
            command: command.into(),
            env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
            port: 4321,
            container: None,
        }
    }

    #[tokio::test]
    async fn a_target_gets_its_port_and_variables_and_its_output_is_logged() {
        let (dir, user) = workdir();
        let rt = ProcessRuntime::new(LogFiles::new(dir.path().join("logs")), user);
        let h = rt
            .start(&spec(
                dir.path(),
                1,
                "echo \"$GREETING on $PORT for $BATON_APP\"; exit 3",
            ))
            .await
            .unwrap();
        assert_eq!(rt.wait(&h).await, Exit::Code(3));
        assert!(!rt.alive(&h).await);
        let tail = rt.logs.tail(1, 1);
        assert_eq!(tail, vec!["hello on 4321 for t".to_string()]);
    }

    #[tokio::test]
    async fn stop_terminates_the_whole_process_group() {
        let (dir, user) = workdir();
        let rt = ProcessRuntime::new(LogFiles::new(dir.path().join("logs")), user);
        // The shell starts a grandchild that would outlive a plain kill.
        let h = rt
            .start(&spec(
                dir.path(),
                2,
                "sleep 300 & echo $! > child.pid; wait",
            ))
            .await
            .unwrap();
        let pid_file = dir.path().join("child.pid");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !pid_file.exists() || fs::read_to_string(&pid_file).unwrap().trim().is_empty() {
            assert!(std::time::Instant::now() < deadline, "child never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let grandchild: u32 = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(rt.alive(&h).await);
        let exit = rt.stop(&h, Duration::from_secs(5)).await.unwrap();
        assert_ne!(exit, Exit::Vanished);
        assert!(!rt.alive(&h).await);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(proc_start(grandchild), Some((_, false))) {
            assert!(std::time::Instant::now() < deadline, "grandchild survived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_target_ignoring_sigterm_is_killed_after_the_grace_period() {
        let (dir, user) = workdir();
        let rt = ProcessRuntime::new(LogFiles::new(dir.path().join("logs")), user);
        let h = rt
            .start(&spec(
                dir.path(),
                3,
                "trap '' TERM; echo ready; while true; do sleep 0.05; done",
            ))
            .await
            .unwrap();
        while rt.logs.tail(3, 1) != vec!["ready".to_string()] {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = std::time::Instant::now();
        let exit = rt.stop(&h, Duration::from_millis(300)).await.unwrap();
        assert_eq!(exit, Exit::Signal(9));
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn another_runtime_instance_adopts_a_running_target() {
        let (dir, user) = workdir();
        let first = ProcessRuntime::new(LogFiles::new(dir.path().join("logs")), user.clone());
        let h = first
            .start(&spec(dir.path(), 4, "sleep 300"))
            .await
            .unwrap();
        // A new server process has a new runtime with no children of its own.
        let second = ProcessRuntime::new(LogFiles::new(dir.path().join("logs")), user);
        assert!(second.alive(&h).await);
        let forged = TargetHandle {
            target_id: 4,
            reference: format!("{}@1", h.reference.split('@').next().unwrap()),
        };
        assert!(
            !second.alive(&forged).await,
            "a reused pid must not pass for the target"
        );
        second.stop(&h, Duration::from_secs(5)).await.unwrap();
        assert!(!second.alive(&h).await);
        assert_eq!(first.wait(&h).await, Exit::Signal(15));
    }

    #[tokio::test]
    async fn a_target_runs_unprivileged_with_only_the_documented_environment() {
        if !geteuid().is_root() {
            eprintln!("note: not root, so targets cannot switch users; skipped");
            return;
        }
        let (dir, user) = workdir();
        let nobody = user.clone().unwrap();
        // The server's own environment must not reach the target.
        std::env::set_var("BATON_TEST_SERVER_ONLY_5E1D", "leaked");
        let rt = ProcessRuntime::new(LogFiles::new(dir.path().join("logs")), user);
        let h = rt
            .start(&spec(
                dir.path(),
                5,
                "id -u; id -G; echo \"$PATH\"; env; echo ready; exec sleep 300",
            ))
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rt.logs.tail(5, 1) != vec!["ready".to_string()] {
            assert!(
                std::time::Instant::now() < deadline,
                "the target never got ready"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid = h.reference.split('@').next().unwrap();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        rt.stop(&h, Duration::from_secs(5)).await.unwrap();
        let field = |name: &str| -> Vec<String> {
            let line = status
                .lines()
                .find(|l| l.starts_with(&format!("{name}:")))
                .unwrap_or_else(|| panic!("no {name} in {status}"));
            line[name.len() + 1..]
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        assert!(
            field("Uid").iter().all(|u| *u == nobody.uid.to_string()),
            "{status}"
        );
        assert!(
            field("Gid").iter().all(|g| *g == nobody.gid.to_string()),
            "{status}"
        );
        assert!(
            field("Groups").is_empty(),
            "supplementary groups kept: {status}"
        );

        let log = fs::read_to_string(rt.logs.path(5)).unwrap();
        let lines: Vec<&str> = log.lines().skip(1).collect();
        assert_eq!(lines[0], nobody.uid.to_string(), "{log}");
        assert!(lines[1].split_whitespace().all(|g| g != "0"), "{log}");
        assert_eq!(lines[2], crate::user::PATH, "{log}");
        let names: BTreeSet<&str> = lines[3..lines.len() - 1]
            .iter()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        assert!(!names.contains("BATON_TEST_SERVER_ONLY_5E1D"), "{log}");
        // What the module header documents, plus what the shell sets itself.
        let documented = [
            "PATH",
            "HOME",
            "USER",
            "LOGNAME",
            "LANG",
            "GREETING",
            "PORT",
            "BATON_PROCESS",
            "BATON_APP",
            "BATON_ENVIRONMENT",
            "BATON_RELEASE",
            "BATON_TARGET",
        ];
        let shell = ["PWD", "OLDPWD", "SHLVL", "_"];
        let extra: Vec<&&str> = names
            .iter()
            .filter(|n| !documented.contains(n) && !shell.contains(n))
            .collect();
        assert!(
            extra.is_empty(),
            "undocumented variables {extra:?} in {log}"
        );
        assert!(log.contains("USER=nobody\n"), "{log}");
        assert!(log.contains("LANG=C.UTF-8\n"), "{log}");
    }

    #[tokio::test]
    async fn a_stamper_the_app_user_cannot_run_leaves_output_unstamped_not_targets_unstarted() {
        let (dir, user) = workdir();
        let Some(user) = user else {
            eprintln!("note: not root; the server's own user runs its own executable; skipped");
            return;
        };
        use std::os::unix::fs::PermissionsExt;
        let private = tempfile::tempdir().unwrap();
        fs::set_permissions(private.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let stamper = private.path().join("baton");
        fs::write(&stamper, "#!/bin/sh\nexit 99\n").unwrap();
        fs::set_permissions(&stamper, fs::Permissions::from_mode(0o755)).unwrap();
        let rt = ProcessRuntime::new(LogFiles::new(dir.path().join("logs")), Some(user))
            .with_stamper(stamper);
        assert!(!rt.stamps());
        let h = rt
            .start(&spec(dir.path(), 8, "echo plain; exit 4"))
            .await
            .unwrap();
        assert_eq!(rt.wait(&h).await, Exit::Code(4));
        assert_eq!(rt.logs.tail(8, 1), vec!["plain".to_string()]);
    }

    #[tokio::test]
    async fn a_root_server_without_an_app_user_starts_nothing() {
        if !geteuid().is_root() {
            eprintln!("note: not root; skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let rt = ProcessRuntime::new(LogFiles::new(dir.path().join("logs")), None);
        let err = rt
            .start(&spec(dir.path(), 6, "touch ran"))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::WouldRunAsRoot), "{err}");
        assert!(!dir.path().join("ran").exists());
    }

    #[tokio::test]
    async fn a_folder_the_app_user_cannot_enter_is_named_with_a_way_out() {
        if !geteuid().is_root() {
            eprintln!("note: not root; skipped");
            return;
        }
        // A private folder of root's, as a data folder under /root would be.
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let user = AppUser::resolve("nobody").unwrap();
        let rt = ProcessRuntime::new(LogFiles::new(dir.path().join("logs")), Some(user));
        let err = rt.start(&spec(dir.path(), 7, "true")).await.unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, RuntimeError::AppUserDenied { .. }),
            "{message}"
        );
        assert!(message.contains("--data"), "{message}");
    }
}
