//! Canary deployments: the proxy splits the clients by a sticky bucket,
//! the orchestrator walks the steps while comparing the two releases' 5xx
//! rates from the proxy's counters, and aborts a failing canary by itself.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

/// The example app as a canary with these steps.
fn canary_app(message: &str, steps: &str) -> AppCopy {
    let app = AppCopy::new(message);
    app.edit(
        "baton.toml",
        "[deploy]\n",
        &format!("[deploy]\nstrategy = \"canary\"\nsteps = {steps}\n"),
    );
    app
}

/// A client that keeps the proxy's bucket cookie, as a browser does:
/// the releases it was answered by, in order.
async fn sticky_client(proxy: std::net::SocketAddr, stop: Arc<AtomicBool>) -> Vec<String> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut cookie: Option<String> = None;
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut request = client.get(format!("http://{proxy}/")).header("host", HOST);
        if let Some(c) = &cookie {
            request = request.header("cookie", c.as_str());
        }
        let response = request.send().await.unwrap();
        if let Some(set) = response.headers().get("set-cookie") {
            let set = set.to_str().unwrap();
            assert!(cookie.is_none(), "a kept bucket is never replaced: {set}");
            cookie = Some(set.split(';').next().unwrap().to_string());
        }
        let body = response.text().await.unwrap();
        seen.push(release_of(&body).unwrap_or_default());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_walks_its_steps_with_no_failed_request_and_clients_stay_put() {
    let server = Server::start();
    let first = server.deploy(&example_dir());
    let old = first["release_id"].as_str().unwrap().to_string();
    let load = Load::start(server.proxy, HOST, 32);
    let stop = Arc::new(AtomicBool::new(false));
    let sticky: Vec<_> = (0..8)
        .map(|_| tokio::spawn(sticky_client(server.proxy, Arc::clone(&stop))))
        .collect();
    load.wait_for_more(200);
    let app = canary_app(
        "Hello from the canary",
        r#"["5%", "pause 1s", "25%", "pause 1s", "50%", "pause 1s", "100%"]"#,
    );
    let deployment = server.deploy(app.path());
    let new = deployment["release_id"].as_str().unwrap().to_string();
    let canary = deployment["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "canary")
        .expect("a canary step");
    assert!(
        canary["detail"]
            .as_str()
            .unwrap()
            .starts_with("canary passed at 50%"),
        "{canary}"
    );
    load.wait_for_more(200);
    stop.store(true, Ordering::Relaxed);
    let outcomes = load.stop().await;
    assert_no_failures(&outcomes, 500);
    // Each client sees the old release until its step moves it, then the
    // new one: never back.
    for client in sticky {
        let seen = client.await.unwrap();
        let short = |r: &str| r[..12].to_string();
        let first_new = seen
            .iter()
            .position(|r| *r == short(&new))
            .unwrap_or(seen.len());
        assert!(
            seen[..first_new].iter().all(|r| *r == short(&old)),
            "{seen:?}"
        );
        assert!(
            seen[first_new..].iter().all(|r| *r == short(&new)),
            "a client went back to the old release: {seen:?}"
        );
    }
    let events = server.baton_ok(&["events", "hello"]);
    for share in ["5%", "25%", "50%"] {
        assert!(
            events.contains(&format!("at {share} of the clients")),
            "{events}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_aborted_by_itself_and_everyone_is_back_on_the_old_release() {
    let server = Server::start();
    let first = server.deploy(&example_dir());
    let old = first["release_id"].as_str().unwrap()[..12].to_string();
    let load = Load::start(server.proxy, HOST, 32);
    load.wait_for_more(200);
    let bad = canary_app("Hello from a bad canary", r#"["5%", "pause 5m", "100%"]"#);
    bad.set_env("FAIL_PERCENT", "20");
    let out = server.baton(&["deploy", bad.path().to_str().unwrap()]);
    assert!(!out.status.success(), "the deploy fails");
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("aborted by itself"), "{said}");
    assert!(
        said.contains("every client is back on the old release"),
        "{said}"
    );
    let deployments = server.json(&["deployments", "hello"]);
    let failed = &deployments[0];
    assert_eq!(failed["state"], "failed");
    let canary = failed["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "canary")
        .unwrap();
    let aborted_at = canary["finished_at"].as_i64().unwrap();
    load.wait_for_more(500);
    let outcomes = load.stop().await;
    // Every request after the abort reached the old release.
    let late: Vec<&Outcome> = outcomes.iter().filter(|o| o.started > aborted_at).collect();
    assert!(late.len() > 100);
    assert!(
        late.iter().all(|o| o.result.as_deref() == Ok(old.as_str())),
        "after the abort: {:?}",
        late.iter()
            .find(|o| o.result.as_deref() != Ok(old.as_str()))
    );
    // The users who were on the canary are back within a second.
    let last_on_canary = outcomes
        .iter()
        .filter(|o| o.result.as_deref() != Ok(old.as_str()))
        .map(|o| o.ended)
        .max()
        .unwrap_or(aborted_at);
    assert!(
        last_on_canary <= aborted_at + 1000,
        "{} ms after the abort",
        last_on_canary - aborted_at
    );
    let failed_requests = outcomes.iter().filter(|o| o.result.is_err()).count();
    eprintln!(
        "failing canary: {failed_requests} failed user requests of {}, aborted {} ms after the deploy began",
        outcomes.len(),
        aborted_at - failed["created_at"].as_i64().unwrap()
    );
    assert!(failed_requests > 0, "the canary's 500s reached some users");
    assert!(failed_requests < 60, "{failed_requests} failed requests");
    let events = server.baton_ok(&["events", "hello"]);
    assert!(events.contains("deployment_failed"), "{events}");
}

#[test]
fn canary_steps_are_checked_when_the_manifest_is_read() {
    let server = Server::start();
    let app = canary_app("x", r#"["25%", "5%"]"#);
    let out = server.baton(&["deploy", app.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("deploy.steps[1]") && said.contains("larger than"),
        "{said}"
    );
    let none = AppCopy::new("y");
    none.edit(
        "baton.toml",
        "[deploy]\n",
        "[deploy]\nstrategy = \"canary\"\n",
    );
    let out = server.baton(&["deploy", none.path().to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("a canary needs steps"), "{said}");
    let said = server.baton(&["canary", "promote", "hello"]);
    assert!(!said.status.success());
    assert!(String::from_utf8_lossy(&said.stderr).contains("no canary running"));
}

/// A Slack-compatible channel of the test's own: each notification's
/// text arrives on the receiver.
async fn slack_receiver() -> (String, tokio::sync::mpsc::Receiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(8);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(axum::routing::post(move |body: axum::body::Bytes| {
        let tx = tx.clone();
        async move {
            let message: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let _ = tx
                .send(message["text"].as_str().unwrap_or("").to_string())
                .await;
            "ok"
        }
    }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_with_a_watch_rolls_back_a_release_that_starts_failing_after_the_switch() {
    let (hook, mut notified) = slack_receiver().await;
    let config = tempfile::tempdir().unwrap();
    let pipeline = config.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            "[[channels]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"{hook}\"\nevents = [\"deployment_failed\"]\n"
        ),
    )
    .unwrap();
    let server = Server::start_with(&[("BATON_PIPELINE", pipeline.to_str().unwrap())]);
    let first = server.deploy(&example_dir());
    let old = first["release_id"].as_str().unwrap()[..12].to_string();
    let load = Load::start(server.proxy, HOST, 16);
    load.wait_for_more(100);
    let app = AppCopy::new("Hello, failing later");
    app.edit("baton.toml", "[deploy]\n", "[deploy]\nwatch = \"1m\"\n");
    app.set_env("FAIL_PERCENT", "50");
    // Healthy at the switch; failing half its requests 30 s later.
    app.set_env("FAIL_AFTER_MS", "30000");
    let out = server.baton(&["deploy", app.path().to_str().unwrap()]);
    assert!(!out.status.success(), "the deploy fails once rolled back");
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(said.contains("rolled back by itself"), "{said}");
    let deployments = server.json(&["deployments", "hello"]);
    let failed = &deployments[0];
    let watch = failed["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "watch")
        .unwrap();
    let rolled_back_at = watch["finished_at"].as_i64().unwrap();
    let switched = failed["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "switch")
        .unwrap()["finished_at"]
        .as_i64()
        .unwrap();
    let after = rolled_back_at - switched;
    eprintln!("rolled back {after} ms after the switch");
    assert!(
        (29_000..60_000).contains(&after),
        "once it failed, within the watch: {after} ms after the switch"
    );
    load.wait_for_more(300);
    let outcomes = load.stop().await;
    let late: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.started > rolled_back_at)
        .collect();
    assert!(
        late.iter().all(|o| o.result.as_deref() == Ok(old.as_str())),
        "after the roll back, the old release answers: {:?}",
        late.iter()
            .find(|o| o.result.as_deref() != Ok(old.as_str()))
    );
    assert_eq!(server.live()["release_id"].as_str().unwrap()[..12], old);
    // The event (what the notification channels send) carries the figures.
    let events = server.json(&["events", "hello"]);
    let failure = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "deployment_failed")
        .unwrap();
    let message = failure["message"].as_str().unwrap();
    assert!(
        message.contains("% 5xx (") && message.contains("rolled back by itself"),
        "{message}"
    );
    // The deployment channels are told: the cause, the figures, the action.
    let text = tokio::time::timeout(std::time::Duration::from_secs(30), notified.recv())
        .await
        .expect("a notification within 30 s")
        .unwrap();
    assert!(
        text.contains("% 5xx (") && text.contains("rolled back by itself"),
        "{text}"
    );
    // … and /metrics counts that notification.
    let metrics = eventually(std::time::Duration::from_secs(10), "the notification counted", || {
        let text = block_on(async {
            server
                .http()
                .get(format!("{}/metrics", server.api_url()))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        text.contains("baton_notifications_total{channel=\"ops\",event=\"deployment_failed\",state=\"delivered\"} 1")
            .then_some(text)
    })
    .await;
    assert!(metrics.contains("baton_deployments_total{app=\"hello\",environment=\"production\",kind=\"deploy\",state=\"failed\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_canary_shows_in_the_dashboard_and_is_promoted_by_hand() {
    let server = Server::start();
    server.deploy(&example_dir());
    let app = canary_app("Hello from a paused canary", r#"["25%", "pause", "100%"]"#);
    let started = server.baton_ok(&["deploy", "--no-wait", app.path().to_str().unwrap()]);
    let status = eventually(
        std::time::Duration::from_secs(30),
        "the canary at 25%",
        || {
            let out = server.baton(&["canary", "status", "hello"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains("at 25% of the clients").then_some(text)
        },
    )
    .await;
    assert!(
        status.contains("baton canary promote hello"),
        "{status}\n{started}"
    );
    for _ in 0..200 {
        get_fresh(server.proxy, HOST, "/").await.unwrap();
    }
    // Both releases' figures, now.
    let status = server.baton_ok(&["canary", "status", "hello"]);
    assert!(
        status.contains("canary ") && status.contains("live ") && status.contains("% 5xx, p99 ≤"),
        "{status}"
    );
    let api: serde_json::Value = server
        .http()
        .get(format!("{}/api/v1/apps/hello/canary", server.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["share"], 25);
    let json = server.json(&["canary", "status", "hello"]);
    assert_eq!(json["figures"]["share"], 25, "{json}");
    let canary = api["canary"]["requests"].as_u64().unwrap();
    let stable = api["stable"]["requests"].as_u64().unwrap();
    assert!(canary > 0 && canary + stable >= 200, "{api}");
    let page = server
        .http()
        .get(format!("{}/apps/hello", server.api_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Traffic by release"), "{page}");
    assert!(page.contains("canary, 25% of the clients"), "{page}");
    assert!(page.contains("live, 75% of the clients"), "{page}");
    assert!(page.contains("<svg"), "{page}");
    let promoted = server.baton_ok(&["canary", "promote", "hello"]);
    assert!(promoted.contains("is live"), "{promoted}");
    let (_, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert!(body.contains("Hello from a paused canary"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_canary_is_aborted_on_its_p99() {
    let server = Server::start();
    let first = server.deploy(&example_dir());
    let old = first["release_id"].as_str().unwrap()[..12].to_string();
    let load = Load::start(server.proxy, HOST, 16);
    load.wait_for_more(100);
    let slow = canary_app("Hello, slowly", r#"["20%", "pause 5m", "100%"]"#);
    slow.edit(
        "baton.toml",
        "strategy = \"canary\"\n",
        "strategy = \"canary\"\nmax_p99 = \"100ms\"\n",
    );
    slow.set_env("DELAY_MS", "300");
    let out = server.baton(&["deploy", slow.path().to_str().unwrap()]);
    assert!(!out.status.success(), "the slow canary is aborted");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("slower than max_p99 100ms") && said.contains("p99 ≤ 500 ms"),
        "{said}"
    );
    let outcomes = load.stop().await;
    let aborted_at = server.json(&["deployments", "hello"])[0]["finished_at"]
        .as_i64()
        .unwrap();
    assert!(outcomes
        .iter()
        .filter(|o| o.started > aborted_at)
        .all(|o| o.result.as_deref() == Ok(old.as_str())));
    assert_no_failures(&outcomes, 100);
}
