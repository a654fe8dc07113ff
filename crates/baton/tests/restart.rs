//! kill -9 of the server: the apps keep running, a restart adopts them and
//! restores routing without restarting them, and deployments cut short are
//! finished or undone.

mod common;

use std::time::Duration;

use common::*;

fn proc_start(pid: &str) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_bring_routing_back_without_restarting_the_app() {
    let mut server = Server::start();
    let old = AppCopy::new("old");
    server.deploy(old.path());
    let new = AppCopy::new("new");
    let release = short(server.deploy(new.path())["release_id"].as_str().unwrap());
    let live = server.live();
    let handle = live["handle"].as_str().unwrap().to_string();
    let pid = handle.split('@').next().unwrap().to_string();
    let started = proc_start(&pid);

    server.kill9();
    // The proxy runs on its own: it serves while the server is down.
    let (status, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!((status, release_of(&body).unwrap()), (200, release.clone()));
    // The app itself kept running meanwhile.
    assert_eq!(proc_start(&pid), started);

    server.restart();
    let (status, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(release_of(&body).unwrap(), release);
    let live = server.live();
    assert_eq!(
        live["handle"].as_str().unwrap(),
        handle,
        "the target was restarted"
    );
    assert_eq!(live["restarts"], 0);
    assert_eq!(proc_start(&pid), started);
    // The warm previous release was adopted too: rollback is still a switch.
    let back = server.rollback("hello");
    assert_eq!(back["steps"][0]["step"], "health_check", "{back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_cut_short_before_its_switch_is_undone_on_restart() {
    let mut server = Server::start();
    let live_release = short(
        server.deploy(&example_dir())["release_id"]
            .as_str()
            .unwrap(),
    );
    let slow = AppCopy::new("slow");
    slow.set_env("STARTUP_DELAY_MS", "30000");
    let started: serde_json::Value = serde_json::from_str(&server.baton_ok(&[
        "deploy",
        slow.path().to_str().unwrap(),
        "--no-wait",
        "--json",
    ]))
    .unwrap();
    let id = started["id"].as_i64().unwrap();
    // Wait until its target is started, then pull the plug.
    eventually(Duration::from_secs(10), "the new target to start", || {
        let d = server.json(&["deployments", "hello"]);
        (d[0]["steps"].as_array().map(|s| s.len()) >= Some(2)).then_some(())
    })
    .await;
    server.kill9();
    server.restart();
    let deployments = server.json(&["deployments", "hello"]);
    let cut = deployments
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap();
    assert_eq!(cut["state"], "failed");
    assert!(
        cut["error"]
            .as_str()
            .unwrap()
            .contains("interrupted by a server restart"),
        "{cut}"
    );
    let (_, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(release_of(&body).unwrap(), live_release);
    // Its half-started target is gone, and a new deploy is not blocked.
    let status = server.json(&["status"]);
    assert_eq!(
        status[0]["targets"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    server.deploy(AppCopy::new("after").path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_target_that_died_while_the_server_was_down_is_started_again() {
    let mut server = Server::start();
    let release = short(
        server.deploy(&example_dir())["release_id"]
            .as_str()
            .unwrap(),
    );
    let pid: i32 = server.live()["handle"]
        .as_str()
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    server.kill9();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    server.restart();
    let live = eventually(
        Duration::from_secs(20),
        "the live target to answer again",
        || {
            block_on(get_fresh(server.proxy, HOST, "/"))
                .ok()
                .filter(|(status, _)| *status == 200)
        },
    )
    .await;
    assert_eq!(release_of(&live.1).unwrap(), release);
    assert_eq!(server.live()["restarts"], 1);
    let events = server.json(&["events", "hello"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "target_restarted"
                && e["message"]
                    .as_str()
                    .unwrap()
                    .contains("was not running when the server started")),
        "{events}"
    );
}

#[test]
fn sigterm_stops_the_server_within_seconds_even_with_a_log_stream_open() {
    let mut server = Server::start();
    server.deploy(&example_dir());
    // A client following the logs keeps its stream open indefinitely.
    let mut follower = std::process::Command::new(BIN)
        .args(["logs", "hello", "-f"])
        .env("BATON_API", server.api_url())
        .env("BATON_DATA", server.data())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(follower.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(!first.is_empty(), "the stream is open");
    let mut child = server.child.take().unwrap();
    let started = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the server did not stop: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        started.elapsed()
    );
    assert!(server.log().contains("stopped"), "{}", server.log());
    // The app itself keeps running for the next start to adopt.
    let pid: i32 = server.live_pid_from_store();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let _ = follower.kill();
    let _ = follower.wait();
}
