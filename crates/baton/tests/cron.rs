//! Cron jobs (`[cron.NAME]`) on a real server: every tick runs exactly
//! once through deploys, rollbacks and a kill -9 of the server, as the
//! job's own output shows; overlaps are skipped and recorded; failures are
//! recorded and notified; `baton cron run`; wrong schedules refused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A folder the app user (not us, when the server runs as root) can write.
fn shared_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn history(server: &Server, job: &str) -> Vec<Value> {
    let runs = server.json(&["cron", "history", "hello", job, "--limit", "1000"]);
    runs.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_tick_runs_exactly_once_through_deploys_rollbacks_and_a_kill_9() {
    let mut server = Server::start();
    let out = shared_folder();
    let ticks = out.path().join("ticks");
    let app = AppCopy::new("cron v0");
    app.append(&format!(
        "[cron.tick]\nschedule = \"*/2 * * * * *\"\ncommand = \"echo $BATON_CRON_TICK $BATON_RELEASE >> {}\"\n",
        ticks.display()
    ));
    let mut releases = BTreeSet::new();
    let first = server.deploy(app.path());
    releases.insert(first["release_id"].as_str().unwrap().to_string());
    let lines = |n: usize| {
        let ticks = ticks.clone();
        move || {
            let text = std::fs::read_to_string(&ticks).unwrap_or_default();
            (text.lines().count() >= n).then_some(())
        }
    };
    eventually(Duration::from_secs(10), "the first tick", lines(1)).await;

    // 10 deploys and 3 rollbacks, a tick at least between each two.
    let written = || {
        std::fs::read_to_string(&ticks)
            .unwrap_or_default()
            .lines()
            .count()
    };
    for n in 1..=10 {
        app.append(&format!("# deploy {n}"));
        let deployment = server.deploy(app.path());
        releases.insert(deployment["release_id"].as_str().unwrap().to_string());
        eventually(
            Duration::from_secs(10),
            "a tick after a deploy",
            lines(written() + 1),
        )
        .await;
        if n % 3 == 0 {
            server.rollback("hello");
            eventually(
                Duration::from_secs(10),
                "a tick after a rollback",
                lines(written() + 1),
            )
            .await;
        }
    }
    // kill -9 for long enough that ticks come while no server runs.
    let killed_at = now_ms();
    server.kill9();
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.restart();
    let restarted_at = now_ms();
    let before = std::fs::read_to_string(&ticks).unwrap().lines().count();
    eventually(
        Duration::from_secs(15),
        "ticks after the restart",
        lines(before + 3),
    )
    .await;

    let text = std::fs::read_to_string(&ticks).unwrap();
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        let (tick, release) = line.split_once(' ').expect("a tick and a release");
        assert!(
            releases.contains(release),
            "ran in an unknown release: {line}"
        );
        *ran.entry(tick.to_string()).or_default() += 1;
    }
    let twice: Vec<_> = ran.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ticks run more than once: {twice:?}");

    // Every tick from the first to the last is recorded once, 2 s apart:
    // none fell between the scheduler's passes, deploys or the restart.
    let runs: Vec<Value> = history(&server, "tick")
        .into_iter()
        .filter(|r| r["manual"] == false)
        .collect();
    let mut at: Vec<i64> = runs
        .iter()
        .map(|r| r["scheduled_at"].as_i64().unwrap())
        .collect();
    at.sort();
    assert!(
        at.windows(2).all(|w| w[1] - w[0] == 2000),
        "ticks missing from the record: {at:?}"
    );
    // What the record says is what the job's output shows.
    let mut missed = 0;
    for run in &runs {
        let tick = run["scheduled_at"].as_i64().unwrap();
        let text = jiff_like(tick);
        let in_output = ran.get(&text).copied().unwrap_or(0);
        match run["state"].as_str().unwrap() {
            "succeeded" => assert_eq!(in_output, 1, "{run}"),
            "skipped" => {
                assert_eq!(in_output, 0, "a skipped tick ran: {run}");
                assert!(
                    (killed_at - 2000..=restarted_at).contains(&tick),
                    "a tick missed while the server ran: {run}"
                );
                assert!(run["detail"].as_str().unwrap().contains("missed"), "{run}");
                missed += 1;
            }
            // A run the killed server left unfinished: not run again.
            "interrupted" | "running" => assert!(in_output <= 1, "{run}"),
            other => panic!("tick {text} {other}: {run}"),
        }
    }
    // 5 s down, every 2 s: ticks were missed while no server ran.
    assert!(
        missed >= 1,
        "no tick was missed while the server was down: {runs:?}"
    );
    // The tick after the last missed one ran: the latest missed tick,
    // run once at the restart (missed = "run_once").
    let mut by_tick: Vec<&Value> = runs.iter().collect();
    by_tick.sort_by_key(|r| r["scheduled_at"].as_i64());
    let last_missed = by_tick
        .iter()
        .rposition(|r| r["state"] == "skipped")
        .unwrap();
    assert_eq!(
        by_tick[last_missed + 1]["state"],
        "succeeded",
        "the latest missed tick did not run once: {by_tick:?}"
    );
    let used: BTreeSet<&str> = text.lines().filter_map(|l| l.split(' ').nth(1)).collect();
    assert!(
        used.len() >= 8,
        "the ticks ran in {} releases only",
        used.len()
    );
    eprintln!(
        "{} ticks recorded, {} ran, {missed} missed while the server was down, in {} releases",
        runs.len(),
        ran.len(),
        used.len()
    );
    for run in &runs {
        if run["state"] == "succeeded" {
            assert!(ran.contains_key(&jiff_like(run["scheduled_at"].as_i64().unwrap())));
        }
    }
    // `baton cron list` names the job, its next run and its last result.
    let list = server.json(&["cron", "list", "hello"]);
    assert_eq!(list[0]["name"], "tick");
    assert!(list[0]["next_run"].as_i64().unwrap() > now_ms() - 2000);
    assert!(list[0]["last_run"]["state"].is_string(), "{list}");
}

/// A tick as the job sees it (`BATON_CRON_TICK`): RFC 3339 in UTC.
fn jiff_like(ms: i64) -> String {
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", ms / 1000),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlaps_are_skipped_failures_recorded_and_notified_and_jobs_run_by_hand() {
    let server = Server::start();
    let app = AppCopy::new("cron jobs");
    app.append(
        "[cron.slow]\nschedule = \"* * * * * *\"\ncommand = \"sleep 2.5\"\noverlap = \"skip\"\n\n\
         [cron.fails]\nschedule = \"0 0 1 1 *\"\ncommand = \"echo failing-output; exit 3\"\n\n\
         [cron.stuck]\nschedule = \"@yearly\"\ncommand = \"sleep 30\"\ntimeout = \"1s\"\n\n\
         [cron.queued]\nschedule = \"* * * * * *\"\ncommand = \"sleep 1.5\"\noverlap = \"queue\"\n\n\
         [cron.hello]\nschedule = \"@yearly\"\ntimezone = \"Europe/Paris\"\ncommand = \"echo hi from $BATON_CRON_JOB\"\n",
    );
    server.deploy(app.path());

    // By hand: output followed, exit code ours, recorded as manual.
    let out = server.baton(&["cron", "run", "hello", "hello"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi from hello\n");
    let out = server.baton(&["cron", "run", "hello", "fails"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("failing-output"));
    let failed = &history(&server, "fails")[0];
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["exit_code"], 3);
    assert_eq!(failed["manual"], true);
    // A failure is an event, which notification channels receive.
    let events: Value = server
        .http()
        .get(format!("{}/api/v1/apps/hello/events", server.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "cron_failed" && e["message"].as_str().unwrap().contains("fails")),
        "{events}"
    );
    // Past its timeout a run is stopped and recorded so.
    let out = server.baton(&["cron", "run", "hello", "stuck"]);
    assert!(!out.status.success());
    let stuck = &history(&server, "stuck")[0];
    assert_eq!(stuck["state"], "timed_out", "{stuck}");
    assert!(
        stuck["finished_at"].as_i64().unwrap() - stuck["started_at"].as_i64().unwrap() < 10_000
    );
    // An unknown job is named with the ones there are.
    let out = server.baton(&["cron", "run", "hello", "nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fails, hello, queued, slow, stuck"),
        "{out:?}"
    );

    // overlap = "skip": a 2.5 s job every second skips the ticks it overlaps.
    let s = &server;
    eventually(
        Duration::from_secs(20),
        "skipped and finished slow runs",
        || {
            let runs = history(s, "slow");
            let skipped = runs.iter().any(|r| {
                r["state"] == "skipped" && r["detail"].as_str().unwrap().contains("still running")
            });
            let done = runs.iter().filter(|r| r["state"] == "succeeded").count();
            (skipped && done >= 2).then_some(())
        },
    )
    .await;
    let runs = history(&server, "slow");
    let mut running: Vec<(i64, i64)> = runs
        .iter()
        .filter(|r| r["state"] == "succeeded")
        .map(|r| {
            (
                r["started_at"].as_i64().unwrap(),
                r["finished_at"].as_i64().unwrap(),
            )
        })
        .collect();
    running.sort();
    assert!(
        running.windows(2).all(|w| w[1].0 >= w[0].1),
        "runs overlapped: {running:?}"
    );

    // overlap = "queue": ticks wait their turn, none skipped, none at once.
    let queued = history(&server, "queued");
    assert!(queued.iter().all(|r| r["state"] != "skipped"), "{queued:?}");
    let mut spans: Vec<(i64, i64)> = queued
        .iter()
        .filter(|r| r["state"] == "succeeded")
        .map(|r| {
            (
                r["started_at"].as_i64().unwrap(),
                r["finished_at"].as_i64().unwrap(),
            )
        })
        .collect();
    spans.sort();
    assert!(spans.len() >= 2, "{queued:?}");
    assert!(
        spans.windows(2).all(|w| w[1].0 >= w[0].1),
        "queued runs overlapped: {spans:?}"
    );
    assert!(
        queued
            .iter()
            .any(|r| r["started_at"].as_i64().unwrap_or(i64::MAX)
                - r["created_at"].as_i64().unwrap()
                > 500),
        "no tick waited in the queue: {queued:?}"
    );

    // A wrong schedule is refused before anything is sent, with its line.
    let bad = AppCopy::new("bad cron");
    bad.append("[cron.broken]\nschedule = \"*/5 * * *\"\ncommand = \"true\"\n");
    let out = server.baton(&["deploy", bad.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(bad.path().join("baton.toml")).unwrap();
    let line = text.lines().position(|l| l.contains("*/5 * * *")).unwrap() + 1;
    assert!(
        stderr.contains(&format!("baton.toml:{line}:")) && stderr.contains("cron.broken.schedule"),
        "{stderr}"
    );
}
