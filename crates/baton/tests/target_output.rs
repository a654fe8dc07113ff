//! Targets' output in their log, each line behind the time it was written:
//! the stamper (`baton log-stamp`) on its own, the process runtime running
//! targets through it, and `baton logs` against a real server. The stamper
//! must not change how a target runs, stops, is adopted or is reported.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_runtime::stamp::{parse_rfc3339, split};
use baton_runtime::{AppUser, Exit, LogFiles, ProcessRuntime, Runtime, TargetHandle, TargetSpec};
use common::*;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{geteuid, Pid};

/// Each line's time (ms since the epoch) and text; panics on a line
/// without a stamp.
fn stamped(text: &str) -> Vec<(i64, String)> {
    text.lines()
        .map(|line| {
            let (at, rest) =
                split(line).unwrap_or_else(|| panic!("no stamp on {line:?} in\n{text}"));
            (parse_rfc3339(at).unwrap(), rest.to_string())
        })
        .collect()
}

fn stamp_command(script: &str) -> Command {
    let mut command = Command::new(BIN);
    command.args(["log-stamp", "--", "sh", "-c", script]);
    command
}

#[test]
fn log_stamp_stamps_every_line_and_exits_with_the_apps_code() {
    let before = now_ms();
    let out = stamp_command("echo out; echo err >&2; printf 'no newline'; exit 7")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let after = now_ms();
    assert_eq!(out.status.code(), Some(7));
    assert!(out.stderr.is_empty(), "the app's errors go to the same log");
    let lines = stamped(&String::from_utf8(out.stdout).unwrap());
    let texts: Vec<&str> = lines.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["out", "err", "no newline"]);
    for (at, _) in &lines {
        assert!(
            (before..=after).contains(at),
            "{at} not in {before}..={after}"
        );
    }
}

#[test]
fn log_stamp_dies_of_the_signal_that_killed_the_app() {
    for (signal, name) in [(Signal::SIGUSR1, "USR1"), (Signal::SIGTERM, "TERM")] {
        let out = stamp_command(&format!("echo last words; kill -{name} $$"))
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(signal as i32), "{:?}", out.status);
        assert!(String::from_utf8_lossy(&out.stdout).ends_with("Z last words\n"));
    }
}

#[test]
fn the_app_starts_with_every_signal_at_its_default() {
    // A server started under nohup, or by a shell that ignores signals for
    // its background jobs, passes those on; the app must not inherit them.
    let script = format!(
        "trap '' HUP TERM USR2 TSTP; exec {BIN} log-stamp -- grep -E '^Sig(Ign|Blk)' /proc/self/status"
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let lines = stamped(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (_, line) in &lines {
        assert!(line.ends_with("\t0000000000000000"), "{lines:?}");
    }
}

#[test]
fn sigterm_to_the_group_reaches_the_app_and_its_last_words_are_kept() {
    let mut child = stamp_command(
        "trap 'echo stopping; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
    )
    .stdout(Stdio::piped())
    .process_group(0)
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.ends_with("Z ready"), "{first}");
    killpg(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "the app's code, not the stamper's death"
    );
    // (The shell may first say that its `sleep` was terminated.)
    assert!(
        rest.last().is_some_and(|l| l.ends_with("Z stopping")),
        "{rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_does_not_outlive_its_stamper() {
    // Killed alone, the stamper is the target's end; an app left running
    // would keep the port its restart needs.
    let mut child = stamp_command("echo $$; exec sleep 300")
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let app: i32 = split(&first).unwrap().1.parse().unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    eventually(Duration::from_secs(5), "the app to be killed too", || {
        let stat = std::fs::read_to_string(format!("/proc/{app}/stat")).ok();
        stat.is_none_or(|s| s.contains(") Z ")).then_some(())
    })
    .await;
}

/// A folder for targets and the user they run as (as in the runtime's own
/// tests): `nobody`, owning the folder, when the tests run as root.
fn workdir() -> (tempfile::TempDir, Option<AppUser>) {
    let dir = tempfile::tempdir().unwrap();
    if !geteuid().is_root() {
        return (dir, None);
    }
    let user = AppUser::resolve("nobody").unwrap();
    std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
    (dir, Some(user))
}

fn spec(dir: &Path, id: i64, command: &str) -> TargetSpec {
    TargetSpec {
        process: baton_runtime::WEB.to_string(),
        target_id: id,
        app: "t".into(),
        environment: "production".into(),
        release: "0123456789abcdef".into(),
        dir: dir.to_path_buf(),
        command: command.into(),
        env: [("GREETING".to_string(), "hello".to_string())].into(),
        port: 4321,
        container: None,
    }
}

fn stamping_runtime(dir: &Path, user: Option<AppUser>) -> ProcessRuntime {
    let runtime =
        ProcessRuntime::new(LogFiles::new(dir.join("logs")), user).with_stamper(BIN.into());
    assert!(runtime.stamps(), "the app user cannot run {BIN}");
    runtime
}

fn pid_of(handle: &TargetHandle) -> i32 {
    handle.reference.split('@').next().unwrap().parse().unwrap()
}

async fn wait_for_line(logs: &LogFiles, id: i64, text: &str) {
    eventually(Duration::from_secs(10), text, || {
        let log = std::fs::read_to_string(logs.path(id)).unwrap_or_default();
        log.lines().any(|l| l.ends_with(text)).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stamped_target_keeps_its_variables_folder_and_exit_code() {
    let (dir, user) = workdir();
    let logs = LogFiles::new(dir.path().join("logs"));
    let runtime = stamping_runtime(dir.path(), user);
    let started = now_ms();
    let handle = runtime
        .start(&spec(
            dir.path(),
            1,
            "echo \"$GREETING on $PORT for $BATON_APP in $(pwd)\"; \
             echo \"stamper only: ${MIMALLOC_ARENA_EAGER_COMMIT:-not here}\"; exit 3",
        ))
        .await
        .unwrap();
    assert_eq!(runtime.wait(&handle).await, Exit::Code(3));
    let log = std::fs::read_to_string(logs.path(1)).unwrap();
    let lines = stamped(&log);
    assert!(lines[0].1.starts_with("[baton] starting target 1"), "{log}");
    assert_eq!(
        lines[1].1,
        format!("hello on 4321 for t in {}", dir.path().display())
    );
    assert_eq!(lines[2].1, "stamper only: not here", "{log}");

    // An app that sets the stamper's variable itself keeps its value.
    let mut own = spec(dir.path(), 9, "echo \"mine: $MIMALLOC_ARENA_EAGER_COMMIT\"");
    own.env
        .insert("MIMALLOC_ARENA_EAGER_COMMIT".into(), "1".into());
    let handle = runtime.start(&own).await.unwrap();
    assert_eq!(runtime.wait(&handle).await, Exit::Code(0));
    let log = std::fs::read_to_string(logs.path(9)).unwrap();
    assert_eq!(stamped(&log)[1].1, "mine: 1", "{log}");
    for (at, _) in &lines {
        assert!(*at >= started && *at <= now_ms(), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stamped_target_is_adopted_and_stopped_as_one_group() {
    let (dir, user) = workdir();
    let logs = LogFiles::new(dir.path().join("logs"));
    let first = stamping_runtime(dir.path(), user.clone());
    let handle = first
        .start(&spec(
            dir.path(),
            2,
            "sleep 300 & echo $! > child.pid; echo up; wait",
        ))
        .await
        .unwrap();
    wait_for_line(&logs, 2, "Z up").await;
    // The target's process is the stamper, in the release folder (where
    // the tests' clean-up looks for leftovers).
    let pid = pid_of(&handle);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("log-stamp"),
        "{cmdline:?}"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        dir.path()
    );
    let grandchild: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // A restarted server has a runtime of its own, with no children.
    let second = stamping_runtime(dir.path(), user);
    assert!(second.alive(&handle).await);
    let exit = second.stop(&handle, Duration::from_secs(5)).await.unwrap();
    assert_eq!(exit, Exit::Vanished, "not its child: it only saw it go");
    assert!(!second.alive(&handle).await);
    assert_eq!(
        first.wait(&handle).await,
        Exit::Signal(15),
        "the app's SIGTERM, mirrored by the stamper"
    );
    eventually(Duration::from_secs(5), "the grandchild to go", || {
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).ok();
        stat.is_none_or(|s| s.contains(") Z ")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stamped_target_ignoring_sigterm_is_killed_after_the_grace_period() {
    let (dir, user) = workdir();
    let logs = LogFiles::new(dir.path().join("logs"));
    let runtime = stamping_runtime(dir.path(), user);
    let handle = runtime
        .start(&spec(
            dir.path(),
            3,
            "trap '' TERM; echo ready; while true; do sleep 0.05; done",
        ))
        .await
        .unwrap();
    wait_for_line(&logs, 3, "Z ready").await;
    let started = std::time::Instant::now();
    let exit = runtime
        .stop(&handle, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(exit, Exit::Signal(9));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_lines_start_with_the_time_the_app_wrote_them() {
    let server = Server::start();
    let before = now_ms();
    server.deploy(&example_dir());
    let after = now_ms();
    let log = server.baton_ok(&["logs", "hello"]);
    let lines = stamped(&log);
    assert!(lines[0].1.starts_with("[baton] starting target"), "{log}");
    let listening = lines
        .iter()
        .find(|(_, text)| text.contains("listening on 127.0.0.1:"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        (before..=after).contains(&listening.0),
        "{} not within the deploy ({before}..={after})",
        listening.0
    );

    // --json: the time in `at`, the rest in `line`.
    let json = server.baton_ok(&["logs", "hello", "--json"]);
    let objects: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), lines.len(), "{json}");
    for (object, (at, text)) in objects.iter().zip(&lines) {
        assert_eq!(parse_rfc3339(object["at"].as_str().unwrap()), Some(*at));
        assert_eq!(object["line"], text.as_str());
    }
}

/// The processes whose parent is `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_killed_by_a_signal_is_reported_killed_by_that_signal() {
    let server = Server::start();
    server.deploy(&example_dir());
    let handle = server.live()["handle"].as_str().unwrap().to_string();
    let stamper: i32 = handle.split('@').next().unwrap().parse().unwrap();
    // The app alone, not its group: only the app dies of it.
    let app = children_of(stamper);
    assert_eq!(app.len(), 1, "the stamper runs one app: {app:?}");
    kill(Pid::from_raw(app[0]), Signal::SIGUSR1).unwrap();
    let exited = eventually(
        Duration::from_secs(20),
        "the target's exit to be recorded",
        || {
            let events = server.json(&["events", "hello"]);
            events
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["kind"] == "target_exited")
                .cloned()
        },
    )
    .await;
    let message = exited["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("killed by signal {}", Signal::SIGUSR1 as i32)),
        "{message}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let live = server.live();
        if live["restarts"].as_i64() == Some(1) && live["running"] == true {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the target was not restarted: {live}\nevents: {}\nserver log: {}",
            server.json(&["events", "hello"]),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containers_lines_carry_the_engines_time_in_the_same_format() {
    let app = DockerApp::new("stamps", "one");
    let server = Server::start();
    let before = now_ms();
    server.deploy(app.path());
    let after = now_ms();
    // The engine's output is copied in as it comes: wait for the line.
    let log = eventually(Duration::from_secs(20), "the container's output", || {
        let log = server.baton_ok(&["logs", app.name]);
        log.contains("listening on 0.0.0.0:").then_some(log)
    })
    .await;
    let lines = stamped(&log);
    assert!(lines[0].1.starts_with("[baton] starting target"), "{log}");
    let listening = lines
        .iter()
        .find(|(_, text)| text.contains("listening on 0.0.0.0:"))
        .unwrap();
    assert!(
        (before..=after).contains(&listening.0),
        "{} not within the deploy ({before}..={after})",
        listening.0
    );
}
