//! `baton logs APP --requests`: an app's requests as the proxy logged them,
//! its own only, the last few or followed as they come.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A request through the proxy to `host`, with `request_id` as its
/// X-Request-Id when given; returns the status.
async fn request(server: &Server, host: &str, path: &str, request_id: Option<&str>) -> u16 {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = http
        .get(format!("http://{}{path}", server.proxy))
        .header("host", host);
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    request.send().await.unwrap().status().as_u16()
}

/// `baton logs hello --requests --json` with `extra` arguments, as records.
fn requests(server: &Server, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["logs", "hello", "--requests", "--json"];
    args.extend_from_slice(extra);
    server
        .baton_ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_requests_are_shown_its_own_only_and_followed_as_they_come() {
    let server = Server::start();
    let release = server.deploy(&example_dir())["release_id"].clone();
    let other = AppCopy::new("Hello from the other app!");
    other.edit("baton.toml", "name = \"hello\"", "name = \"other\"");
    other.edit("baton.toml", "\"hello.localhost\"", "\"other.localhost\"");
    other.edit("baton.toml", "next.hello.localhost", "next.other.localhost");
    other.edit(
        "baton.toml",
        "staging.hello.localhost",
        "staging.other.localhost",
    );
    server.deploy(other.path());
    server.baton_ok(&["deploy", example_dir().to_str().unwrap(), "-e", "staging"]);

    // Deployed, and no request yet: nothing to show, and no error.
    assert_eq!(server.baton_ok(&["logs", "hello", "--requests"]), "");

    assert_eq!(request(&server, HOST, "/", Some("reqlog-first")).await, 200);
    assert_eq!(request(&server, HOST, "/second?q=1", None).await, 200);
    assert_eq!(
        request(&server, "other.localhost", "/other", None).await,
        200
    );
    assert_eq!(
        request(&server, "nobody.localhost", "/unknown", None).await,
        404
    );
    let staging = request(&server, "staging.hello.localhost", "/staging", None).await;
    assert_eq!(staging, 200);

    // The writer gathers lines for a moment before writing them.
    let shown = eventually(Duration::from_secs(10), "hello's two requests", || {
        let shown = requests(&server, &[]);
        (shown.len() >= 2).then_some(shown)
    })
    .await;
    let paths: Vec<&str> = shown.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/", "/second"], "{shown:#?}");
    for record in &shown {
        assert_eq!(record["app"], "hello");
        assert_eq!(record["environment"], "production");
        assert_eq!(record["host"], HOST);
        assert_eq!(record["status"], 200);
        assert_eq!(record["method"], "GET");
    }
    assert_eq!(shown[0]["request_id"], "reqlog-first");
    assert_eq!(shown[0]["release"], release);

    // The other environment is its own.
    let staged = eventually(Duration::from_secs(10), "the staging request", || {
        let staged = requests(&server, &["-e", "staging"]);
        (!staged.is_empty()).then_some(staged)
    })
    .await;
    assert_eq!(staged.len(), 1, "{staged:#?}");
    assert_eq!(staged[0]["path"], "/staging");

    // -n bounds it to the last ones.
    let last = requests(&server, &["-n", "1"]);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0]["path"], "/second");

    // For people: one line a request.
    let text = server.baton_ok(&["logs", "hello", "--requests"]);
    let first = text.lines().next().unwrap();
    for part in [
        " 200 GET hello.localhost/ ",
        " ms ",
        &short(release.as_str().unwrap()),
        "reqlog-first",
    ] {
        assert!(first.contains(part), "{part:?} not in {first:?}");
    }
    assert_eq!(text.lines().count(), 2, "{text}");

    // An app the proxy has no route for.
    let out = server.baton(&["logs", "nope", "--requests"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nope has no route in production"),
        "{stderr}"
    );

    // Into a pipe whose reader is gone (`| head` after its lines): quietly.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = Command::new(BIN)
        .args(["logs", "hello", "--requests", "--json"])
        .env("BATON_API", server.api_url())
        .env("BATON_DATA", server.data())
        .stdout(Stdio::from(std::fs::File::from(write)))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(nix::sys::signal::Signal::SIGPIPE as i32),
        "{:?} {stderr}",
        out.status
    );

    // -f: the last request, then one made after it started.
    let mut follower = Command::new(BIN)
        .args(["logs", "hello", "--requests", "--json", "-f", "-n", "1"])
        .env("BATON_API", server.api_url())
        .env("BATON_DATA", server.data())
        .stdout(Stdio::piped())
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
    let next = |what: &str| {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no line for {what}"));
        serde_json::from_str::<Value>(&line).unwrap()
    };
    assert_eq!(next("the last request")["path"], "/second");
    request(&server, "other.localhost", "/not-shown", None).await;
    assert_eq!(
        request(&server, HOST, "/later", Some("reqlog-followed")).await,
        200
    );
    let later = next("the request made while following");
    assert_eq!(later["path"], "/later");
    assert_eq!(later["request_id"], "reqlog-followed");
    follower.kill().unwrap();
    follower.wait().unwrap();
}
