//! Deploys, rollbacks, previews, bad releases and bad input, through the
//! real CLI against a real server.

mod common;

use std::time::Duration;

use common::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_deploy_change_and_roll_back() {
    let server = Server::start();
    let example = example_dir();
    let first = server.deploy(&example);
    assert_eq!(first["state"], "succeeded");
    let first_release = first["release_id"].as_str().unwrap().to_string();
    let (status, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("Hello from Baton's example app!"), "{body}");
    assert_eq!(release_of(&body).unwrap(), short(&first_release));

    let changed = AppCopy::new("Hello from a changed copy!");
    let second = server.deploy(changed.path());
    assert_ne!(second["release_id"], first["release_id"]);
    let (_, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert!(body.contains("changed copy"), "{body}");

    let back = server.rollback("hello");
    assert_eq!(back["kind"], "rollback");
    assert_eq!(back["release_id"], first_release.as_str());
    let steps: Vec<&str> = back["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "health_check",
            "hold",
            "switch",
            "release",
            "drain",
            "keep_warm"
        ],
        "a warm rollback starts nothing"
    );
    let (_, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(release_of(&body).unwrap(), short(&first_release));

    // Packing the same content again gives the same release, which is
    // live already: nothing to do, and no deployment recorded.
    let again = server.json(&["deploy", example.to_str().unwrap()]);
    assert_eq!(again["already_live"], true);
    let releases = server.json(&["releases", "hello"]);
    assert_eq!(releases.as_array().unwrap().len(), 2);
    let deployments = server.json(&["deployments", "hello"]);
    assert_eq!(deployments.as_array().unwrap().len(), 3);
    assert_eq!(deployments[0]["kind"], "rollback");

    let logs = server.baton_ok(&["logs", "hello"]);
    assert!(logs.contains("listening on 127.0.0.1:"), "{logs}");
    let text = server.baton_ok(&["status"]);
    assert!(
        text.contains("hello") && text.contains("production") && text.contains(HOST),
        "{text}"
    );

    // The OpenAPI document is served.
    let doc: serde_json::Value = reqwest::get(format!("{}/api/v1/openapi.json", server.api_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_failing_its_health_check_never_receives_traffic() {
    let server = Server::start();
    let good = AppCopy::new("good");
    let good_release = short(server.deploy(good.path())["release_id"].as_str().unwrap());

    let bad = AppCopy::new("bad");
    bad.set_env("FAIL_HEALTH", "1");
    bad.set_deploy("timeout", "2s");
    let proxy = server.proxy;
    let load = tokio::spawn(async move {
        let mut answers = Vec::new();
        let end = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < end {
            answers.push(get_fresh(proxy, HOST, "/").await);
        }
        answers
    });
    let out = server.baton(&["deploy", bad.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(
        error.contains("did not answer 200 on /health within 2s"),
        "{error}"
    );
    assert!(
        error.contains("503"),
        "the last check responses are quoted: {error}"
    );
    assert!(error.contains("unhealthy on purpose"), "{error}");
    assert!(
        error.contains("listening on 127.0.0.1"),
        "the target's last output is quoted: {error}"
    );

    for answer in load.await.unwrap() {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            release_of(&body).unwrap(),
            good_release,
            "the bad release got traffic"
        );
    }
    let live = server.live();
    assert_eq!(short(live["release_id"].as_str().unwrap()), good_release);
    let deployments = server.json(&["deployments", "hello"]);
    assert_eq!(deployments[0]["state"], "failed");
    let failed_target = deployments[0]["target_id"].as_i64().unwrap();
    let status = server.json(&["status"]);
    let targets = status[0]["targets"].as_array().unwrap();
    assert!(
        targets
            .iter()
            .all(|t| t["id"].as_i64() != Some(failed_target)),
        "the failed target is still listed as active: {targets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_exits_at_start_fails_the_deploy_at_once_with_its_exit_code() {
    let server = Server::start();
    let broken = AppCopy::new("broken");
    broken.edit(
        "baton.toml",
        "command = \"python3 -u app.py\"",
        "command = \"echo missing config >&2; exit 3\"",
    );
    let started = std::time::Instant::now();
    let out = server.baton(&["deploy", broken.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(
        error.contains("exited with code 3 before it became healthy"),
        "{error}"
    );
    assert!(error.contains("missing config"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it waited for the deploy timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_target_that_dies_is_restarted_and_the_event_recorded() {
    let server = Server::start();
    server.deploy(&example_dir());
    let handle = server.live()["handle"].as_str().unwrap().to_string();
    let pid: i32 = handle.split('@').next().unwrap().parse().unwrap();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = eventually(
        Duration::from_secs(20),
        "the target to be restarted",
        || {
            let live = server.live();
            (live["restarts"].as_i64() == Some(1) && live["running"] == true).then_some(live)
        },
    )
    .await;
    assert_ne!(restarted["handle"].as_str().unwrap(), handle);
    let events = server.json(&["events", "hello"]);
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"target_exited"), "{kinds:?}");
    assert!(kinds.contains(&"target_restarted"), "{kinds:?}");
    let exited = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "target_exited")
        .unwrap();
    assert!(
        exited["message"]
            .as_str()
            .unwrap()
            .contains("killed by signal 9"),
        "{exited}"
    );
    let (status, _) = eventually(Duration::from_secs(10), "the app to answer again", || {
        block_on(get_fresh(server.proxy, HOST, "/"))
            .ok()
            .filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deployment_per_app_and_environment_at_a_time() {
    let server = Server::start();
    let slow = AppCopy::new("slow");
    slow.set_env("STARTUP_DELAY_MS", "1500");
    server.baton_ok(&["deploy", slow.path().to_str().unwrap(), "--no-wait"]);
    let out = server.baton(&["deploy", example_dir().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is still running"),
        "{}",
        stderr(&out)
    );
    // Another environment is not blocked.
    server.baton_ok(&[
        "deploy",
        example_dir().to_str().unwrap(),
        "--environment",
        "staging",
    ]);
    let (_, body) = get_fresh(server.proxy, "staging.hello.localhost", "/")
        .await
        .unwrap();
    assert!(release_of(&body).is_some(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_reaches_the_new_release_only_with_the_header_or_preview_host() {
    let server = Server::start();
    let live = short(
        server.deploy(&example_dir())["release_id"]
            .as_str()
            .unwrap(),
    );
    let next = AppCopy::new("next");
    let paused: serde_json::Value = serde_json::from_str(&server.baton_ok(&[
        "deploy",
        next.path().to_str().unwrap(),
        "--preview",
        "--json",
    ]))
    .unwrap();
    assert_eq!(paused["state"], "previewing");
    let next_release = short(paused["release_id"].as_str().unwrap());
    let (_, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(release_of(&body).unwrap(), live);
    let (_, body) = get_fresh(server.proxy, "next.hello.localhost", "/")
        .await
        .unwrap();
    assert_eq!(release_of(&body).unwrap(), next_release);
    let with_header = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/", server.proxy))
        .header("host", HOST)
        .header("x-baton-preview", "1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(release_of(&with_header).unwrap(), next_release);

    let id = paused["id"].as_i64().unwrap().to_string();
    server.baton_ok(&["continue", &id]);
    let (_, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(release_of(&body).unwrap(), next_release);

    // An aborted preview leaves the live release alone.
    let third = AppCopy::new("third");
    let paused: serde_json::Value = serde_json::from_str(&server.baton_ok(&[
        "deploy",
        third.path().to_str().unwrap(),
        "--preview",
        "--json",
    ]))
    .unwrap();
    // Aborting is what was asked for: it succeeds, and says so.
    let out = server.baton(&["abort", &paused["id"].as_i64().unwrap().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("the live release in production is unchanged"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (_, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(release_of(&body).unwrap(), next_release);
    let (_, body) = get_fresh(server.proxy, "next.hello.localhost", "/")
        .await
        .unwrap();
    assert_eq!(
        release_of(&body).unwrap(),
        next_release,
        "the preview host falls back to live"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_of_a_release_no_longer_warm_deploys_it_again() {
    let server = Server::start();
    let first = AppCopy::new("first");
    first.set_deploy("keep_warm", "0s");
    let first_release = server.deploy(first.path())["release_id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = AppCopy::new("second");
    second.set_deploy("keep_warm", "0s");
    server.deploy(second.path());
    let back = server.rollback("hello");
    assert_eq!(back["release_id"], first_release.as_str());
    assert_eq!(back["steps"][0]["step"], "start_target", "{back}");
    let (_, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(release_of(&body).unwrap(), short(&first_release));
    // --to names any recorded release by prefix.
    let out = server.baton(&["rollback", "hello", "--to", "zzzz"]);
    assert!(
        stderr(&out).contains("has no release \"zzzz\""),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_manifest_is_refused_naming_file_line_and_field() {
    let server = Server::start();
    let app = AppCopy::new("x");
    app.edit("baton.toml", "[health]\n", "[health]\nintervall = \"1s\"\n");
    let out = server.baton(&["deploy", app.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(error.contains("baton.toml:"), "{error}");
    assert!(error.contains("intervall"), "{error}");
    assert!(error.contains("unknown field"), "{error}");
    assert!(
        server
            .json(&["releases", "hello"])
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_api_requests_get_json_errors_that_name_the_problem() {
    let server = Server::start();
    let http = server.http();
    let api = server.api_url();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.post(format!("{api}/api/v1/apps/hello/deployments"))
                .body("{not json"),
            400,
            "not valid",
        ),
        (
            http.post(format!("{api}/api/v1/apps/hello/deployments"))
                .body(r#"{"release": "abc", "enviroment": "x"}"#),
            400,
            "enviroment",
        ),
        (
            http.post(format!("{api}/api/v1/apps/hello/deployments"))
                .body(r#"{"release": "abc"}"#),
            404,
            "no release",
        ),
        (
            http.post(format!("{api}/api/v1/apps/Hello!/deployments"))
                .body(r#"{"release": "abc"}"#),
            400,
            "not a valid app name",
        ),
        (
            http.post(format!("{api}/api/v1/apps/hello/releases"))
                .body("garbage that is no tar"),
            400,
            "damaged",
        ),
        (
            http.get(format!("{api}/api/v1/deployments/x")),
            400,
            "not a deployment id",
        ),
        (
            http.get(format!("{api}/api/v1/deployments/99")),
            404,
            "no deployment 99",
        ),
        (
            http.post(format!("{api}/api/v1/apps/hello/rollback")),
            400,
            "no earlier release",
        ),
        (
            http.get(format!("{api}/api/v1/apps/hello/logs")),
            404,
            "no live target",
        ),
        (http.get(format!("{api}/api/v1/nope")), 404, "openapi.json"),
    ];
    for (request, status, needle) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        let body: serde_json::Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} does not mention {needle:?}"
        );
    }
    // Unknown hosts and apps without a live release are told apart.
    let (status, body) = get_fresh(server.proxy, "nobody.localhost", "/")
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert!(
        body.contains("no app answers for host \"nobody.localhost\""),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_folder_is_refused() {
    let server = Server::start();
    let out = std::process::Command::new(BIN)
        .args(["server", "--data"])
        .arg(server.data())
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already using"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_moves_on_to_the_next_live_target() {
    use std::io::{BufRead, BufReader};
    let server = Server::start();
    server.deploy(&example_dir());
    let mut follower = std::process::Command::new(BIN)
        .args(["logs", "hello", "-f"])
        .env("BATON_API", server.api_url())
        .env("BATON_DATA", server.data())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    };
    wait_for("listening on 127.0.0.1");
    let next = AppCopy::new("next");
    let release = short(server.deploy(next.path())["release_id"].as_str().unwrap());
    let note = wait_for("[baton] now following target");
    assert!(note.contains(&release), "{note}");
    let line = wait_for("listening on 127.0.0.1");
    assert!(line.contains(&release), "{line}");
    follower.kill().unwrap();
    follower.wait().unwrap();

    // --json gives one object per line.
    let json = server.baton_ok(&["logs", "hello", "--json", "-n", "1"]);
    let line: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(line["app"], "hello");
    assert!(
        line["line"].as_str().unwrap().contains("listening on"),
        "{line}"
    );
}
