//! Workers (`[processes.NAME]`): started for each deployment once its web
//! release is live, replaced gracefully (a SIGTERMed worker finishes its
//! current job), scaled, supervised, adopted across a server restart.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A worker that takes one-second jobs and, told to stop, finishes the
/// one it is doing first.
const WORKER: &str = r#"
import os, signal, time
jobs = os.environ["JOBS"]
release = os.environ["BATON_RELEASE"][:12]
stopping = False
def stop(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, stop)
print("worker started", os.environ["BATON_PROCESS"], flush=True)
n = 0
while not stopping:
    n += 1
    with open(jobs, "a") as f:
        f.write(f"start {release} {os.getpgrp()} {n}\n")
    time.sleep(1.0)
    with open(jobs, "a") as f:
        f.write(f"done {release} {os.getpgrp()} {n}\n")
print("worker finished its job and exits", flush=True)
"#;

fn app_with_worker(message: &str, jobs: &std::path::Path) -> AppCopy {
    let app = AppCopy::new(message);
    std::fs::write(app.path().join("worker.py"), WORKER).unwrap();
    app.set_env("JOBS", jobs.to_str().unwrap());
    app.append(
        "[processes.worker]\ncommand = \"python3 -u worker.py\"\ninstances = 2\nstop_timeout = \"10s\"",
    );
    app
}

/// The live workers of hello in production: (target id, pid, release).
fn workers(server: &Server) -> Vec<(i64, u32, String)> {
    let status = server.json(&["status"]);
    status[0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["process"] == "worker" && t["state"] == "live")
        .map(|t| {
            let pid = t["handle"]
                .as_str()
                .and_then(|h| h.split('@').next())
                .and_then(|p| p.parse().ok())
                .unwrap();
            (
                t["id"].as_i64().unwrap(),
                pid,
                short(t["release_id"].as_str().unwrap()),
            )
        })
        .collect()
}

/// Every job line: ("start"|"done", release, process group, n); a
/// target's handle names its process group's leader.
fn jobs(path: &std::path::Path) -> Vec<(String, String, u32, u32)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Waits until `release` has `n` workers whose jobs have begun.
async fn working(server: &Server, path: &std::path::Path, release: &str, n: usize) {
    eventually(Duration::from_secs(20), "the workers to take jobs", || {
        let live: BTreeSet<u32> = workers(server)
            .into_iter()
            .filter(|w| w.2 == release)
            .map(|w| w.1)
            .collect();
        let started: BTreeSet<u32> = jobs(path)
            .into_iter()
            .filter(|j| j.0 == "start" && j.1 == release)
            .map(|j| j.2)
            .collect();
        (live.len() == n && live.is_subset(&started)).then_some(())
    })
    .await;
}

/// No job begun by a worker now gone was cut short (but those `killed`).
fn every_job_of_gone_workers_finished(path: &std::path::Path, when: &str, killed: &[u32]) {
    let mut open: BTreeMap<(u32, u32), bool> = BTreeMap::new();
    for (what, _, pid, n) in jobs(path) {
        open.insert((pid, n), what == "start");
    }
    let cut: Vec<_> = open
        .iter()
        .filter(|((pid, _), open)| **open && !alive(*pid) && !killed.contains(pid))
        .collect();
    assert!(
        cut.is_empty(),
        "{when}: jobs cut short: {cut:?}\n{}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_follow_the_live_release_finish_their_jobs_and_scale() {
    let mut server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let path = dir.path().join("jobs");
    let v1 = app_with_worker("version 1", &path);
    let first: Value = server.deploy(v1.path());
    let steps: Vec<&str> = first["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(steps.contains(&"processes"), "{steps:?}");
    let r1 = short(first["release_id"].as_str().unwrap());
    working(&server, &path, &r1, 2).await;
    let logs = server.baton_ok(&["logs", "hello", "--process", "worker"]);
    assert!(logs.contains("worker started worker"), "{logs}");

    // A deploy replaces them: the old ones finish the job they are doing.
    let old: Vec<u32> = workers(&server).iter().map(|w| w.1).collect();
    let v2 = app_with_worker("version 2", &path);
    let second = server.deploy(v2.path());
    assert_eq!(second["state"], "succeeded", "{second}");
    let r2 = short(second["release_id"].as_str().unwrap());
    for pid in &old {
        assert!(!alive(*pid), "old worker {pid} still runs");
    }
    every_job_of_gone_workers_finished(&path, "after a deploy", &[]);
    working(&server, &path, &r2, 2).await;
    let worker_log = server.baton_ok(&["logs", "hello", "--process", "worker", "-n", "1000"]);
    assert!(!worker_log.is_empty());

    // Scale up and down; the ones stopped finish their jobs.
    let up = server.json(&["scale", "hello", "worker=3"]);
    assert_eq!(up["started"].as_array().unwrap().len(), 1, "{up}");
    working(&server, &path, &r2, 3).await;
    let down = server.json(&["scale", "hello", "worker=1"]);
    assert_eq!(down["stopped"].as_array().unwrap().len(), 2, "{down}");
    assert_eq!(workers(&server).len(), 1);
    every_job_of_gone_workers_finished(&path, "after scaling down", &[]);
    let wrong = server.baton(&["scale", "hello", "mailer=2"]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("no process \"mailer\""));

    // A worker that dies is started again.
    let (id, pid, _) = workers(&server)[0].clone();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "the worker to be restarted",
        || {
            workers(&server)
                .into_iter()
                .find(|w| w.0 == id && w.1 != pid && alive(w.1))
        },
    )
    .await;

    // A server killed and started again adopts them: no second set.
    let before = workers(&server);
    server.kill9();
    server.restart();
    let after = workers(&server);
    assert_eq!(before, after);

    // A rollback brings the first release's workers back (the scale stays).
    let back = server.rollback("hello");
    assert_eq!(back["state"], "succeeded", "{back}");
    working(&server, &path, &r1, 1).await;
    assert!(workers(&server).iter().all(|w| w.2 == r1));
    // Except the one killed on purpose.
    every_job_of_gone_workers_finished(&path, "after a rollback", &[pid]);
}

#[test]
fn a_worker_without_a_command_is_refused_with_its_line() {
    let server = Server::start();
    let app = AppCopy::new("no command");
    app.append("[processes.worker]\ncommand = \"\"");
    let out = server.baton(&["deploy", app.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("processes.worker.command"), "{said}");
    assert!(said.contains("baton.toml:"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_app_runs_nothing_answers_503_stays_stopped_and_starts_again() {
    let mut server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let path = dir.path().join("jobs");
    let v1 = app_with_worker("version 1", &path);
    server.deploy(v1.path());
    let v2 = app_with_worker("version 2", &path);
    let live = server.deploy(v2.path());
    let r2 = short(live["release_id"].as_str().unwrap());
    working(&server, &path, &r2, 2).await;
    let groups: Vec<u32> = server.json(&["status"])[0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["handle"].as_str()?.split('@').next()?.parse().ok())
        .collect();
    assert_eq!(groups.len(), 4, "live, warm and two workers: {groups:?}");

    server.baton_ok(&["stop", "hello"]);
    for pid in &groups {
        assert!(!alive(*pid), "{pid} still runs after stop");
    }
    every_job_of_gone_workers_finished(&path, "after stop", &[]);
    let (status, _) = get_fresh(server.proxy, "hello.localhost", "/")
        .await
        .unwrap();
    assert_eq!(status, 503);
    let again = server.baton(&["stop", "hello"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("not running"));

    // Stopped it stays, across a server restart.
    server.kill9();
    server.restart();
    let (status, _) = get_fresh(server.proxy, "hello.localhost", "/")
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert!(workers(&server).is_empty());

    // Started again: the release that was live, its workers too.
    let started = server.json(&["start", "hello"]);
    assert_eq!(started["state"], "succeeded", "{started}");
    assert_eq!(short(started["release_id"].as_str().unwrap()), r2);
    let (status, body) = get_fresh(server.proxy, "hello.localhost", "/")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("version 2"), "{body}");
    working(&server, &path, &r2, 2).await;
    let twice = server.baton(&["start", "hello"]);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("running in production already"));
}
