//! The data plane outlives the control plane: the proxy runs in a process
//! of its own, serves through every way `baton server` can end or be
//! replaced, and hands its sockets to a new proxy at an upgrade, under load
//! and without a failed request.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::*;

/// Installs a fresh copy of baton where the server's binary is, as a
/// package manager does: written beside it, renamed over it.
fn install_fresh_binary(bin: &std::path::Path) -> u64 {
    let fresh = bin.with_extension("new");
    std::fs::copy(BIN, &fresh).unwrap();
    std::fs::rename(&fresh, bin).unwrap();
    std::fs::metadata(bin).unwrap().ino()
}

/// Proxy processes (`baton proxy run`) serving this server's data folder.
fn proxy_processes(server: &Server) -> Vec<i32> {
    let data = server.data();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_proxy = args.windows(2).any(|w| w == [&b"proxy"[..], &b"run"[..]]);
            // A zombie has no working folder left; only live ones count.
            (is_proxy && cwd.starts_with(&data)).then_some(pid)
        })
        .collect()
}

/// Children of `parent` that exited and were never waited for.
fn zombie_children(parent: u32) -> Vec<u32> {
    baton_runtime::children_of(parent)
        .into_iter()
        .filter(|pid| baton_runtime::proc_stat(*pid).is_some_and(|s| s.zombie))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_ends_and_upgrades_of_the_control_plane_under_load_fail_no_request() {
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = bin_dir.path().join("baton");
    std::fs::copy(BIN, &bin).unwrap();
    let mut server = Server::start_from(&bin, &[]);
    server.deploy(&example_dir());
    let first_proxy = server.proxy_info();

    let load = Load::start(server.proxy, HOST, 32);
    // Each end and start under load: requests complete between them.
    for _ in 0..10 {
        load.wait_for_more(200);
        server.kill9();
        server.restart();
    }
    for _ in 0..10 {
        load.wait_for_more(200);
        server.terminate();
        server.restart();
    }
    assert_eq!(
        server.proxy_info()["pid"],
        first_proxy["pid"],
        "restarts of the control plane adopt the running proxy"
    );
    let server_pid = server.child.as_ref().unwrap().id();
    let mut proxies = vec![first_proxy["pid"].as_u64().unwrap()];
    for _ in 0..10 {
        load.wait_for_more(200);
        let inode = install_fresh_binary(&bin);
        let answer: serde_json::Value =
            serde_json::from_str(&server.baton_ok(&["upgrade", "--json"])).unwrap();
        assert_eq!(
            answer["after"]["pid"], server_pid,
            "the server keeps its pid"
        );
        assert_eq!(answer["after"]["exe_id"]["ino"], inode, "{answer}");
        let proxy = server.proxy_info();
        assert_eq!(proxy["exe"]["ino"], inode, "the proxy runs the new binary");
        let pid = proxy["pid"].as_u64().unwrap();
        assert!(
            !proxies.contains(&pid),
            "a new proxy took over: {proxies:?} {pid}"
        );
        proxies.push(pid);
    }
    let outcomes = load.stop().await;
    assert_no_failures(&outcomes, 6_000);

    // Every old proxy finished and exited; one serves.
    let only = eventually(Duration::from_secs(10), "the old proxies to exit", || {
        let running = proxy_processes(&server);
        (running.len() == 1).then_some(running)
    })
    .await;
    assert_eq!(only[0] as u64, *proxies.last().unwrap());
    // … and none of them is left a zombie of the server, whose earlier
    // images started them.
    eventually(
        Duration::from_secs(10),
        "the old proxies to be reaped",
        || zombie_children(server_pid).is_empty().then_some(()),
    )
    .await;
    // The app itself was never restarted.
    assert_eq!(server.live()["restarts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_serves_while_the_control_plane_is_down_and_comes_back_if_killed() {
    let mut server = Server::start();
    server.deploy(&example_dir());
    server.kill9();
    let (status, _) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(status, 200, "the proxy serves with no control plane");
    server.restart();

    // The proxy itself killed under load: the server starts another with
    // the socket it kept open, so clients wait in its queue, never refused.
    let load = Load::start(server.proxy, HOST, 16);
    load.wait_for_more(200);
    let pid = server.proxy_info()["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let next = eventually(Duration::from_secs(10), "a new proxy", || {
        let out = server.baton(&["proxy", "status", "--json"]);
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (info["pid"].as_i64()? != pid).then_some(info)
    })
    .await;
    load.wait_for_more(200);
    let outcomes = load.stop().await;
    // Requests in flight in the killed process are lost with it; none is
    // refused.
    let refused: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| {
            o.result
                .as_ref()
                .is_err_and(|e| e.contains("refused") || e.contains("os error 111"))
        })
        .collect();
    assert!(
        refused.is_empty(),
        "{} refused, first: {:?}",
        refused.len(),
        refused.first()
    );
    let (status, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(server
        .log()
        .contains("the proxy is gone; starting it again"));
    assert_eq!(next["listening"], server.proxy.to_string());
}

#[test]
fn an_upgrade_to_a_binary_that_cannot_run_is_refused_and_changes_nothing() {
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = bin_dir.path().join("baton");
    std::fs::copy(BIN, &bin).unwrap();
    let server = Server::start_from(&bin, &[]);
    let proxy = server.proxy_info();
    // A truncated copy, as an interrupted download leaves.
    let broken = bin.with_extension("new");
    std::fs::write(&broken, b"\x7fELF truncated").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&broken, &bin).unwrap();
    let out = server.baton(&["upgrade"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the upgrade failed; the server serves on unchanged"),
        "{err}"
    );
    assert_eq!(server.proxy_info()["pid"], proxy["pid"]);
    server.baton_ok(&["status"]);
}

#[test]
fn upgrade_without_a_running_server_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["upgrade"])
        .env("BATON_DATA", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("start one with `baton server`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_app_gets_504_at_its_response_timeout_and_shows_as_not_responding() {
    let server = Server::start();
    let app = AppCopy::new("soon hung");
    let manifest = app.path().join("baton.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("\n[proxy]\nresponse_timeout = \"1s\"\n");
    std::fs::write(&manifest, text).unwrap();
    server.deploy(app.path());
    assert_eq!(server.live()["responding"], true);
    // The whole target (its process group) stopped: it accepts, never answers.
    let group = nix::unistd::Pid::from_raw(server.live_pid_from_store());
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let (status, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("did not answer within 1s"), "{body}");
    let live = server.live();
    assert_eq!(live["running"], true, "{live}");
    assert_eq!(live["responding"], false, "{live}");
    assert_eq!(live["timeouts"], 1, "{live}");
    let text = server.baton_ok(&["status"]);
    assert!(text.contains("(not responding)"), "{text}");
    // Answering again clears it.
    let (status, _) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(server.live()["responding"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_api_connections_under_a_1024_open_files_limit_leave_the_proxy_serving() {
    // This test's own connections need more than the usual soft limit.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let server = Server::start_with_open_files(1024);
    server.deploy(&example_dir());
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..1_100 {
        let api = server.api;
        connecting.spawn(async move {
            // Past the API's cap, connections wait in the kernel's queue.
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(api))
                .await
                .ok()
                .and_then(|c| c.ok())
        });
    }
    let mut idle = Vec::new();
    while let Some(done) = connecting.join_next().await {
        idle.extend(done.unwrap());
    }
    // The API holds a quarter of the open files (256) and its accept queue
    // up to 1,024 more (fewer where net.core.somaxconn is lower); beyond,
    // connecting clients wait for the kernel.
    let queue = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(128)
        .min(1_024);
    assert!(
        idle.len() > 256 + queue.min(1_100 - 256) / 2,
        "only {} connections opened",
        idle.len()
    );
    for _ in 0..20 {
        let (status, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        !server.log().contains("proxy accept failed"),
        "{}",
        server.log()
    );
    drop(idle);
}

#[test]
fn a_relative_data_folder_works_for_the_proxy_process_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = std::process::Command::new(BIN)
        .args(["server", "--data", "relative-data"])
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    let data = dir.path().join("relative-data");
    let status = std::process::Command::new(BIN)
        .args(["proxy", "status", "--json"])
        .env("BATON_DATA", &data)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    kill_processes_under(&data);
    assert!(ready.starts_with("baton server ready"), "{ready:?}");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}
