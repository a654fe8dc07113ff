//! The pipeline end to end: real Git repositories on disk (a bare "origin"
//! reached by a file URL), signed webhook deliveries over HTTP, the real
//! server and CLI, a real HTTP receiver for webhook and Slack-style
//! notifications and a real SMTP server (Python's aiosmtpd, installed into a
//! venv under the target folder).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use baton_pipeline::signature;
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "pipeline test secret";
const HOOK_SECRET: &str = "receiver secret";

// ---------------------------------------------------------------- git

/// A repository with a bare `origin.git` beside its work tree.
struct Repo {
    dir: tempfile::TempDir,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const MANIFEST: &str = r#"
name = "shop"
hosts = ["shop.localhost"]

[web]
command = "python3 -u app.py"
stop_timeout = "2s"

[health]
interval = "50ms"
timeout = "1s"

[deploy]
timeout = "20s"
drain_timeout = "2s"
keep_warm = "0s"

[environments.staging]
hosts = ["staging.shop.localhost"]

[pipeline]
build = ["echo \"$BATON_COMMIT\" > built.txt"]
test = ["echo running the tests", "test -s built.txt"]
promote = "PROMOTE"
review_domain = "review.localhost"
timeout = "60s"
"#;

impl Repo {
    fn new(promote: &str) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "--quiet", "--bare", "origin.git"]);
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "--quiet"]);
        git(&work, &["remote", "add", "origin", "../origin.git"]);
        std::fs::copy(example_dir().join("app.py"), work.join("app.py")).unwrap();
        std::fs::write(
            work.join("baton.toml"),
            MANIFEST.replace("PROMOTE", promote),
        )
        .unwrap();
        Repo { dir }
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.path().join("origin.git").display())
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.work().join(file), text).unwrap();
    }

    /// Commits everything on `branch` and pushes it; returns the commit id.
    fn commit(&self, branch: &str, message: &str) -> String {
        let work = self.work();
        git(&work, &["checkout", "--quiet", "-B", branch]);
        git(&work, &["add", "-A"]);
        git(
            &work,
            &["commit", "--quiet", "--allow-empty", "-m", message],
        );
        git(&work, &["push", "--quiet", "--force", "origin", branch]);
        git(&work, &["rev-parse", "HEAD"])
    }

    fn push_payload(&self, branch: &str, sha: &str, message: &str) -> Value {
        json!({
            "ref": format!("refs/heads/{branch}"),
            "before": "0000000000000000000000000000000000000000",
            "after": sha,
            "deleted": false,
            "head_commit": {"id": sha, "message": message},
            "repository": {"full_name": "acme/shop", "clone_url": self.url()},
        })
    }

    fn pr_payload(&self, action: &str, number: u64, sha: &str, labels: &[&str]) -> Value {
        json!({
            "action": action,
            "number": number,
            "pull_request": {
                "number": number,
                "title": format!("Pull request {number}"),
                "body": format!("What #{number} changes, for the support team."),
                "merged": action == "closed",
                "labels": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
                "head": {"sha": sha, "ref": format!("pr-{number}"), "repo": {"clone_url": self.url()}},
            },
            "repository": {"full_name": "acme/shop", "clone_url": self.url()},
        })
    }
}

// ---------------------------------------------------------------- webhooks

/// Sends a delivery; returns the status and the JSON answer.
async fn post(server: &Server, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let mut request = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/api/v1/webhooks/git", server.api_url()))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

static DELIVERY: AtomicUsize = AtomicUsize::new(0);

/// A GitHub delivery of `event`, signed with `secret`.
async fn github(server: &Server, event: &str, payload: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let id = format!(
        "gh-{}-{}",
        std::process::id(),
        DELIVERY.fetch_add(1, Ordering::SeqCst)
    );
    post(server, &github_headers(event, &id, &body), body).await
}

fn github_headers(event: &str, delivery: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("x-github-event", event.into()),
        ("x-github-delivery", delivery.into()),
        (
            "x-hub-signature-256",
            signature::sign(SECRET.as_bytes(), body),
        ),
    ]
}

/// Waits for a build to end by following its log with the CLI; returns the
/// log and the build record.
fn finish_build(server: &Server, answer: &Value) -> (String, Value) {
    let id = answer["build"]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no build in {answer}"))
        .to_string();
    let followed = server.baton(&["builds", "logs", &id, "-f"]);
    let log = String::from_utf8_lossy(&followed.stdout).into_owned();
    let build = server.json(&["builds", "show", &id]);
    // Its exit code is the build's outcome.
    let failed = build["state"] == "failed";
    assert_eq!(followed.status.success(), !failed, "{log}");
    (log, build)
}

/// Waits until no deployment of shop is running: a route switches before
/// its deployment ends (drain, keep warm), and one runs at a time.
async fn settled(server: &Server) {
    eventually(
        Duration::from_secs(30),
        "shop's deployments to finish",
        || {
            let deployments = server.json(&["deployments", "shop"]);
            let running = deployments
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["state"] == "running");
            (!running).then_some(())
        },
    )
    .await;
}

fn live_release(server: &Server, environment: &str) -> Option<String> {
    server
        .json(&["status"])
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["app"] == "shop" && e["environment"] == environment)
        .and_then(|e| e["live"]["release_id"].as_str().map(str::to_string))
}

fn config(server_dir: &Path, text: &str) -> PathBuf {
    let path = server_dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(text: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), text);
    let server = Server::start_with(&[("BATON_PIPELINE", path.to_str().unwrap())]);
    (dir, server)
}

// ---------------------------------------------------------------- receivers

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone, Default)]
struct Inbox {
    got: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<tokio::sync::Notify>,
    /// While set, `/announce` answers 503 (and counts the attempt).
    refuse_announcements: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

/// A real HTTP server on loopback that records every POST.
struct Receiver {
    addr: SocketAddr,
    inbox: Inbox,
}

async fn receive(
    State(inbox): State<Inbox>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    if uri.path() == "/announce" && inbox.refuse_announcements.load(Ordering::SeqCst) {
        inbox.refused.fetch_add(1, Ordering::SeqCst);
        inbox.arrived.notify_waiters();
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    inbox.got.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
    });
    inbox.arrived.notify_waiters();
    StatusCode::OK
}

impl Receiver {
    async fn start() -> Receiver {
        let inbox = Inbox::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(inbox.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, inbox }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits (on arrivals, not on a clock) for a request matching `pred`.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let arrived = self.inbox.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(r) = self.inbox.got.lock().unwrap().iter().find(|r| pred(r)) {
                return r.clone();
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "timed out waiting for {what}; received: {:?}",
                    self.all()
                        .iter()
                        .map(|r| (r.path.clone(), String::from_utf8_lossy(&r.body).to_string()))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    fn all(&self) -> Vec<Received> {
        self.inbox.got.lock().unwrap().clone()
    }

    async fn wait_refused(&self, at_least: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let arrived = self.inbox.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.inbox.refused.load(Ordering::SeqCst) >= at_least {
                return;
            }
            tokio::time::timeout_at(deadline, arrived)
                .await
                .expect("the announcement was never attempted");
        }
    }
}

/// A real SMTP server: aiosmtpd from PyPI, in a venv under the target folder.
struct Smtp {
    child: Child,
    port: u16,
    messages: mpsc::Receiver<Value>,
}

const SMTP_SERVER: &str = r#"
import asyncio, json, os, sys, threading
from aiosmtpd.smtp import SMTP

class Handler:
    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                          "data": envelope.content.decode("utf-8", "replace")}), flush=True)
        return "250 Message accepted"

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Handler(), hostname="localhost"), "127.0.0.1", 0)
    print("READY", server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

# Stops by itself when the test closes its stdin (or dies).
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
asyncio.run(main())
"#;

fn python_with_aiosmtpd() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aiosmtpd-venv");
    let python = venv.join("bin/python");
    let marker = venv.join("installed.txt");
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        let run = |command: &mut Command| {
            let out = command.output().unwrap_or_else(|e| {
                panic!("cannot run {command:?}: {e}; python3 with venv is needed")
            });
            assert!(
                out.status.success(),
                "installing aiosmtpd failed ({command:?}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "aiosmtpd==1.4.6",
        ]));
        std::fs::write(&marker, "aiosmtpd==1.4.6\n").unwrap();
    }
    python
}

impl Smtp {
    fn start() -> Smtp {
        let python = python_with_aiosmtpd();
        let mut child = Command::new(python)
            .args(["-c", SMTP_SERVER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().expect("the SMTP server exited").unwrap();
        let port = ready
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("unexpected SMTP server line {ready:?}"))
            .parse()
            .unwrap();
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Smtp {
            child,
            port,
            messages,
        }
    }

    fn next_message(&self) -> Value {
        tokio::task::block_in_place(|| self.messages.recv_timeout(Duration::from_secs(30)))
            .expect("no e-mail arrived within 30 s")
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_passing_push_reaches_production_as_the_same_release_and_a_failing_one_notifies() {
    let receiver = Receiver::start().await;
    let smtp = Smtp::start();
    let (_cfg, server) = start(&format!(
        r#"
webhook_secret = "{SECRET}"
notify_backoff = "100ms"
[[channels]]
name = "ops"
kind = "webhook"
url = "{ops}"
secret = "{HOOK_SECRET}"
[[channels]]
name = "chat"
kind = "slack"
url = "{chat}"
events = ["build_failed", "deployment_failed"]
[[channels]]
name = "mail"
kind = "email"
smtp = "127.0.0.1:{port}"
from = "baton@example.com"
to = ["oncall@example.com"]
events = ["build_failed"]
"#,
        ops = receiver.url("/ops"),
        chat = receiver.url("/chat"),
        port = smtp.port,
    ));
    let repo = Repo::new("auto");
    let sha = repo.commit("main", "First version");

    let payload = repo.push_payload("main", &sha, "First version");
    let body = serde_json::to_vec(&payload).unwrap();
    let headers = github_headers("push", "first-push", &body);
    let (status, answer) = post(&server, &headers, body.clone()).await;
    assert_eq!(status, 202, "{answer}");
    let (log, build) = finish_build(&server, &answer);
    assert_eq!(build["state"], "passed", "{build}\n{log}");
    assert!(
        log.contains("running the tests"),
        "the test step's output is kept: {log}"
    );
    let steps: Vec<&str> = build["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["checkout", "build", "test", "test", "package", "deploy"]
    );
    let release = build["release_id"].as_str().unwrap().to_string();

    // The build's own output is in the release: packed from the workspace.
    let built = std::fs::read_to_string(
        server
            .data()
            .join("releases")
            .join(&release)
            .join("built.txt"),
    )
    .unwrap();
    assert_eq!(built.trim(), sha);
    assert_eq!(
        live_release(&server, "staging").as_deref(),
        Some(release.as_str())
    );
    let production = eventually(Duration::from_secs(30), "production to go live", || {
        live_release(&server, "production")
    })
    .await;
    assert_eq!(
        production, release,
        "production runs the very release staging ran"
    );
    let (code, answer_body) = get_fresh(server.proxy, "shop.localhost", "/")
        .await
        .unwrap();
    assert_eq!(
        (code, release_of(&answer_body)),
        (200, Some(short(&release)))
    );
    // The dashboard's release history names the commit.
    let page = server
        .http()
        .get(format!("{}/apps/shop", server.api_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("commit <code>{}</code>", &sha[..10])),
        "{page}"
    );
    // The pipeline's deploy and promotion are in the audit log, by the build.
    settled(&server).await;
    let audit: Value = server
        .http()
        .get(format!("{}/api/v1/audit?limit=100", server.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_build = format!("pipeline (build {})", build["id"]);
    for environment in ["staging", "production"] {
        assert!(
            audit
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "deployment.create"
                    && e["environment"] == environment
                    && e["actor"] == by_build.as_str()
                    && e["detail"]["release"] == release.as_str()),
            "no deployment.create in {environment} by {by_build}: {audit}"
        );
    }

    // A replayed delivery changes nothing.
    let builds_before = server.json(&["builds", "list"]).as_array().unwrap().len();
    let (status, answer) = post(&server, &headers, body).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "conflict");
    assert_eq!(
        server.json(&["builds", "list"]).as_array().unwrap().len(),
        builds_before
    );

    // Both deploys notified the signed webhook.
    for environment in ["staging", "production"] {
        let got = receiver
            .wait_for(&format!("the {environment} deploy notification"), |r| {
                r.path == "/ops"
                    && r.json()["event"] == "deployed"
                    && r.json()["environment"] == environment
            })
            .await;
        let sig = &got.headers["x-baton-signature-256"];
        assert!(
            signature::verify(HOOK_SECRET.as_bytes(), &got.body, sig),
            "bad signature {sig}"
        );
    }

    // A failing test: no release, staging and production untouched, everyone told.
    repo.write(
        "baton.toml",
        &std::fs::read_to_string(repo.work().join("baton.toml"))
            .unwrap()
            .replace("test -s built.txt", "echo 2 tests failed >&2; exit 3"),
    );
    let bad = repo.commit("main", "Break the tests");
    let (status, answer) = github(
        &server,
        "push",
        &repo.push_payload("main", &bad, "Break the tests"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let (log, build) = finish_build(&server, &answer);
    assert_eq!(build["state"], "failed", "{build}");
    assert!(log.contains("2 tests failed"), "{log}");
    assert!(
        build["error"].as_str().unwrap().contains("exited with 3"),
        "{build}"
    );
    assert!(build["release_id"].is_null());
    let last = build["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["name"].as_str(), last["state"].as_str()),
        (Some("test"), Some("failed")),
        "nothing runs after a failed step"
    );
    assert_eq!(
        server.json(&["releases", "shop"]).as_array().unwrap().len(),
        1
    );
    assert_eq!(
        live_release(&server, "staging").as_deref(),
        Some(release.as_str())
    );
    assert_eq!(
        live_release(&server, "production").as_deref(),
        Some(release.as_str())
    );

    let hook = receiver
        .wait_for("the build failure webhook", |r| {
            r.path == "/ops" && r.json()["event"] == "build_failed"
        })
        .await;
    assert!(hook.json()["message"]
        .as_str()
        .unwrap()
        .contains(&bad[..12]));
    let chat = receiver
        .wait_for("the Slack message", |r| r.path == "/chat")
        .await;
    let text = chat.json()["text"].as_str().unwrap().to_string();
    assert!(
        text.contains("build failed") && text.contains("exited with 3"),
        "{text}"
    );
    let mail = smtp.next_message();
    assert_eq!(mail["to"], json!(["oncall@example.com"]));
    let data = mail["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [baton] shop staging: build failed"),
        "{data}"
    );
    assert!(data.contains("exited with 3"), "{data}");

    // Each delivery is recorded.
    let delivered = eventually(Duration::from_secs(10), "delivery records", || {
        let list = server.json(&["notifications"]);
        let list = list.as_array().unwrap().clone();
        let mail = list
            .iter()
            .find(|n| n["channel"] == "mail" && n["state"] == "delivered")?
            .clone();
        Some(mail)
    })
    .await;
    assert_eq!(delivered["attempts"], 1);
    assert_eq!(delivered["event_kind"], "build_failed");

    // A flags.toml that does not read: no release, whichever way it came.
    repo.write(
        "baton.toml",
        &std::fs::read_to_string(repo.work().join("baton.toml"))
            .unwrap()
            .replace("echo 2 tests failed >&2; exit 3", "test -s built.txt"),
    );
    repo.write("flags.toml", "[flags.new-checkout]\nrollout = \"lots\"\n");
    let broken = repo.commit("main", "Broken flags");
    let (status, answer) = github(
        &server,
        "push",
        &repo.push_payload("main", &broken, "Broken flags"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let (_, build) = finish_build(&server, &answer);
    assert_eq!(build["state"], "failed", "{build}");
    let error = build["error"].as_str().unwrap();
    assert!(
        error.contains("flags.toml (release") && error.contains("rollout"),
        "{error}"
    );
    let last = build["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["name"], "package", "{build}");
    assert_eq!(
        server.json(&["releases", "shop"]).as_array().unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_deliveries_are_refused_with_their_status_and_change_nothing() {
    let (_cfg, server) = start(&format!(
        "webhook_secret = \"{SECRET}\"\nmax_payload_bytes = 65536\n"
    ));
    let repo = Repo::new("manual");
    let sha = repo.commit("main", "v1");
    let payload = serde_json::to_vec(&repo.push_payload("main", &sha, "v1")).unwrap();

    // Wrong signature: 401, and the server says so in its log.
    let mut headers = github_headers("push", "wrong-sig", &payload);
    headers[3].1 = signature::sign(b"not the secret", &payload);
    let (status, answer) = post(&server, &headers, payload.clone()).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert!(server.log().contains("bad signature"), "{}", server.log());
    // No signature at all.
    let mut unsigned = github_headers("push", "unsigned", &payload);
    unsigned.pop();
    assert_eq!(post(&server, &unsigned, payload.clone()).await.0, 401);

    // Too large: 413 before anything is read further.
    let big = format!("{{\"padding\": \"{}\"}}", "x".repeat(70_000)).into_bytes();
    let (status, answer) = post(&server, &github_headers("push", "big", &big), big).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("too_large"))
    );

    // Not JSON: form-encoded is 415, a broken body 400, a push without its commit 400.
    let form = b"payload=%7B%7D".to_vec();
    let mut form_headers = github_headers("push", "form", &form);
    form_headers[0].1 = "application/x-www-form-urlencoded".into();
    assert_eq!(post(&server, &form_headers, form).await.0, 415);
    let broken = b"{\"ref\": ".to_vec();
    let (status, answer) = post(&server, &github_headers("push", "broken", &broken), broken).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = github(&server, "push", &json!({"ref": "refs/heads/main", "repository": {"full_name": "a/b", "clone_url": repo.url()}})).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("after"),
        "{answer}"
    );

    // A refused delivery's id is not spent: the genuine one is then accepted once.
    let (status, answer) = post(
        &server,
        &github_headers("push", "wrong-sig", &payload),
        payload.clone(),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let (_, build) = finish_build(&server, &answer);
    assert_eq!(build["state"], "passed", "{build}");

    // Skips: [skip ci], a deleted branch, a ping.
    let skip = repo.commit("main", "Docs [skip ci]");
    let (status, answer) = github(
        &server,
        "push",
        &repo.push_payload("main", &skip, "Docs [skip ci]"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        answer["ignored"].as_str().unwrap().contains("[skip ci]"),
        "{answer}"
    );
    let mut deleted = repo.push_payload("feature", "0000000000000000000000000000000000000000", "");
    deleted["deleted"] = json!(true);
    let (status, answer) = github(&server, "push", &deleted).await;
    assert_eq!(status, 200);
    assert!(
        answer["ignored"].as_str().unwrap().contains("deleted"),
        "{answer}"
    );

    // Only the one genuine build exists; nothing else reached staging.
    let builds = server.json(&["builds", "list"]);
    assert_eq!(builds.as_array().unwrap().len(), 1, "{builds}");
    let deployments = server.json(&["deployments", "shop"]);
    assert_eq!(deployments.as_array().unwrap().len(), 1, "{deployments}");
    // Manual promotion: production waits for `baton promote`.
    assert_eq!(live_release(&server, "production"), None);
    let release = build["release_id"].as_str().unwrap();
    server.baton_ok(&["promote", "shop", &release[..12], "--to", "production"]);
    let live = eventually(Duration::from_secs(30), "the promoted release", || {
        live_release(&server, "production")
    })
    .await;
    assert_eq!(live, release);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_request_gets_a_review_app_and_closing_it_removes_app_route_and_files() {
    let (_cfg, server) = start(&format!("webhook_secret = \"{SECRET}\"\n"));
    let repo = Repo::new("manual");
    repo.commit("main", "base");
    repo.write("feature.txt", "one");
    let head = repo.commit("pr-7", "Feature, first try");
    let (status, answer) = github(
        &server,
        "pull_request",
        &repo.pr_payload("opened", 7, &head, &[]),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let (_, build) = finish_build(&server, &answer);
    assert_eq!(
        (build["state"].as_str(), build["environment"].as_str()),
        (Some("passed"), Some("review-7")),
        "{build}"
    );
    let first = build["release_id"].as_str().unwrap().to_string();
    let host = "shop-pr-7.review.localhost";
    let (code, body) = get_fresh(server.proxy, host, "/").await.unwrap();
    assert_eq!((code, release_of(&body)), (200, Some(short(&first))));
    // Where it answers is said where review apps are listed.
    let listed = server.baton_ok(&["review-apps"]);
    assert!(listed.contains(host), "{listed}");

    // Gitea says `synchronized`, signs with bare hex, names its own headers.
    repo.write("feature.txt", "two");
    let head = repo.commit("pr-7", "Feature, second try");
    let body = serde_json::to_vec(&repo.pr_payload("synchronized", 7, &head, &[])).unwrap();
    let sig = signature::sign(SECRET.as_bytes(), &body)["sha256=".len()..].to_string();
    let headers = vec![
        ("content-type", "application/json".to_string()),
        ("x-gitea-event", "pull_request".into()),
        ("x-gitea-delivery", "gitea-1".into()),
        ("x-gitea-signature", sig),
    ];
    let (status, answer) = post(&server, &headers, body).await;
    assert_eq!(status, 202, "{answer}");
    let (_, build) = finish_build(&server, &answer);
    let second = build["release_id"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let (code, body) = get_fresh(server.proxy, host, "/").await.unwrap();
    assert_eq!((code, release_of(&body)), (200, Some(short(&second))));
    let review = server.json(&["review-apps"]);
    assert_eq!(review[0]["environment"], "review-7", "{review}");
    let status = server.json(&["status"]);
    let env = status
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["environment"] == "review-7")
        .unwrap()
        .clone();
    let target = env["live"]["id"].as_i64().unwrap();
    let log_file = server.data().join("logs").join(format!("{target}.log"));
    assert!(log_file.exists());

    // Closed: app, route and files gone.
    let (status, _) = github(
        &server,
        "pull_request",
        &repo.pr_payload("closed", 7, &head, &[]),
    )
    .await;
    assert_eq!(status, 202);
    eventually(
        Duration::from_secs(20),
        "the review app to be removed",
        || {
            server
                .json(&["review-apps"])
                .as_array()
                .unwrap()
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let (code, _) = get_fresh(server.proxy, host, "/").await.unwrap();
    assert_eq!(code, 404, "the host no longer routes");
    let status = server.json(&["status"]);
    assert!(
        !status
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["environment"] == "review-7"),
        "{status}"
    );
    assert!(!log_file.exists(), "the target's output file is removed");
    assert!(
        !server.data().join("releases").join(&second).exists(),
        "the release folder is removed"
    );
    let events = server.json(&["events", "shop"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "environment_removed"),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweep_removes_review_apps_that_outlive_their_ttl() {
    let (_cfg, server) = start(&format!(
        "webhook_secret = \"{SECRET}\"\nreview_ttl = \"3s\"\nsweep_interval = \"100ms\"\n"
    ));
    let repo = Repo::new("manual");
    let head = repo.commit("pr-9", "Forgotten feature");
    let (_, answer) = github(
        &server,
        "pull_request",
        &repo.pr_payload("opened", 9, &head, &[]),
    )
    .await;
    let (_, build) = finish_build(&server, &answer);
    assert_eq!(build["state"], "passed", "{build}");
    let host = "shop-pr-9.review.localhost";
    assert_eq!(get_fresh(server.proxy, host, "/").await.unwrap().0, 200);
    let removed_after = eventually(Duration::from_secs(15), "the sweep", || {
        server
            .json(&["review-apps"])
            .as_array()
            .unwrap()
            .is_empty()
            .then(now_ms)
    })
    .await;
    let created = build["finished_at"].as_i64().unwrap();
    assert!(
        removed_after - created >= 2_500,
        "removed too early: {} ms",
        removed_after - created
    );
    assert_eq!(get_fresh(server.proxy, host, "/").await.unwrap().0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_announcement_labelled_pull_request_holds_production_until_its_notes_were_delivered() {
    let receiver = Receiver::start().await;
    receiver
        .inbox
        .refuse_announcements
        .store(true, Ordering::SeqCst);
    let (_cfg, server) = start(&format!(
        r#"
webhook_secret = "{SECRET}"
notify_attempts = 50
notify_backoff = "50ms"
[announcements]
channel = "subscribers"
notice = "1s"
[[channels]]
name = "subscribers"
kind = "webhook"
url = "{url}"
events = []
"#,
        url = receiver.url("/announce"),
    ));
    let repo = Repo::new("auto");
    let head = repo.commit("pr-5", "Search");
    // Merged with the label: its title and body become release notes.
    let (status, _) = github(
        &server,
        "pull_request",
        &repo.pr_payload("closed", 5, &head, &["needs-announcement", "feature"]),
    )
    .await;
    assert_eq!(status, 202);
    let merged = repo.commit("main", "Merge pull request #5");
    let (_, answer) = github(
        &server,
        "push",
        &repo.push_payload("main", &merged, "Merge pull request #5"),
    )
    .await;
    let (_, build) = finish_build(&server, &answer);
    assert_eq!(build["state"], "passed", "{build}");
    let release = build["release_id"].as_str().unwrap().to_string();
    assert_eq!(
        live_release(&server, "staging").as_deref(),
        Some(release.as_str())
    );

    // The subscribers' receiver refuses: production waits, however long.
    receiver.wait_refused(3).await;
    let promotions = server.json(&["deployments", "shop"]);
    assert!(
        !promotions
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["environment"] == "production"),
        "production deployed before the announcement went out: {promotions}"
    );
    assert_eq!(live_release(&server, "production"), None);

    // Delivered: production follows once the notice period has passed.
    receiver
        .inbox
        .refuse_announcements
        .store(false, Ordering::SeqCst);
    let note = receiver
        .wait_for("the announcement", |r| r.path == "/announce")
        .await;
    let message = note.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("## feature") && message.contains("- Pull request 5 (#5)"),
        "{message}"
    );
    assert!(message.contains("What #5 changes"), "{message}");
    let live = eventually(
        Duration::from_secs(30),
        "production after the notice",
        || live_release(&server, "production"),
    )
    .await;
    assert_eq!(live, release);
    let delivered_at = server
        .json(&["notifications"])
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["event_kind"] == "announcement")
        .unwrap()["delivered_at"]
        .as_i64()
        .unwrap();
    let deployments = server.json(&["deployments", "shop"]);
    let production = deployments
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["environment"] == "production")
        .unwrap()
        .clone();
    assert!(
        production["created_at"].as_i64().unwrap() >= delivered_at + 1000,
        "the notice period was not kept"
    );
    settled(&server).await;

    // An override lets the next one through without its announcement, on the record.
    receiver
        .inbox
        .refuse_announcements
        .store(true, Ordering::SeqCst);
    let head = repo.commit("pr-6", "Prices");
    github(
        &server,
        "pull_request",
        &repo.pr_payload("closed", 6, &head, &["needs-announcement"]),
    )
    .await;
    repo.write("prices.txt", "cheaper");
    let merged = repo.commit("main", "Merge pull request #6");
    let (_, answer) = github(
        &server,
        "push",
        &repo.push_payload("main", &merged, "Merge pull request #6"),
    )
    .await;
    let (_, build) = finish_build(&server, &answer);
    let next = build["release_id"].as_str().unwrap().to_string();
    assert_eq!(
        live_release(&server, "production").as_deref(),
        Some(release.as_str()),
        "held"
    );
    // No other way into production either: a plain deploy is refused too.
    let refused = server
        .http()
        .post(format!("{}/api/v1/apps/shop/deployments", server.api_url()))
        .json(&serde_json::json!({"release": next, "environment": "production"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("waits before production"),
        "{body}"
    );
    // The CLI on the server's host acts with the data folder's admin token.
    let promotion = server.json(&[
        "promote",
        "shop",
        &next,
        "--to",
        "production",
        "--override-announcement",
        "security fix",
    ]);
    assert_eq!(
        promotion["actor"], "local-admin (admin.token)",
        "{promotion}"
    );
    let live = eventually(Duration::from_secs(30), "the overridden promotion", || {
        live_release(&server, "production").filter(|r| *r == next)
    })
    .await;
    assert_eq!(live, next);
    let api = server.http();
    let record: Value = api
        .get(format!(
            "{}/api/v1/apps/shop/announcements/{next}",
            server.api_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        record["announcement"]["override_by"], "local-admin (admin.token)",
        "{record}"
    );
    assert_eq!(record["announcement"]["override_reason"], "security fix");
    let page = api
        .get(format!("{}/apps/shop", server.api_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<summary>Release notes</summary>")
            && page.contains("What #6 changes, for the support team."),
        "{page}"
    );
    assert!(record["production_waits_for"].is_null());
    let _ = std::io::stdout().flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_promotion_and_its_undelivered_announcement_survive_a_kill_9() {
    let receiver = Receiver::start().await;
    receiver
        .inbox
        .refuse_announcements
        .store(true, Ordering::SeqCst);
    let (_cfg, mut server) = start(&format!(
        r#"
webhook_secret = "{SECRET}"
notify_attempts = 1000
notify_backoff = "50ms"
[announcements]
channel = "subscribers"
[[channels]]
name = "subscribers"
kind = "webhook"
url = "{url}"
events = []
"#,
        url = receiver.url("/announce"),
    ));
    let repo = Repo::new("auto");
    let head = repo.commit("pr-3", "Checkout");
    github(
        &server,
        "pull_request",
        &repo.pr_payload("closed", 3, &head, &["needs-announcement"]),
    )
    .await;
    let merged = repo.commit("main", "Merge pull request #3");
    let (_, answer) = github(
        &server,
        "push",
        &repo.push_payload("main", &merged, "Merge"),
    )
    .await;
    let (_, build) = finish_build(&server, &answer);
    let release = build["release_id"].as_str().unwrap().to_string();
    receiver.wait_refused(2).await;

    server.kill9();
    receiver
        .inbox
        .refuse_announcements
        .store(false, Ordering::SeqCst);
    server.restart();
    receiver
        .wait_for("the announcement after the restart", |r| {
            r.path == "/announce"
        })
        .await;
    let live = eventually(
        Duration::from_secs(30),
        "production after the restart",
        || live_release(&server, "production"),
    )
    .await;
    assert_eq!(live, release);
    let record = server.json(&["notifications"]);
    let announcement = record
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["event_kind"] == "announcement")
        .unwrap()
        .clone();
    assert_eq!(announcement["state"], "delivered");
    assert!(
        announcement["attempts"].as_i64().unwrap() >= 3,
        "{announcement}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_failing_in_staging_never_reaches_production_and_every_deploy_outcome_notifies() {
    let receiver = Receiver::start().await;
    let (_cfg, server) = start(&format!(
        r#"
webhook_secret = "{SECRET}"
[[channels]]
name = "ops"
kind = "webhook"
url = "{ops}"
[[channels]]
name = "chat"
kind = "slack"
url = "{chat}"
events = ["deployment_failed", "rolled_back"]
"#,
        ops = receiver.url("/ops"),
        chat = receiver.url("/chat"),
    ));
    let repo = Repo::new("auto");
    let push = |sha: String| {
        let payload = repo.push_payload("main", &sha, "change");
        let server = &server;
        async move {
            let (_, answer) = github(server, "push", &payload).await;
            finish_build(server, &answer).1
        }
    };
    let good = push(repo.commit("main", "good")).await;
    let first = good["release_id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(30), "production", || {
        live_release(&server, "production").filter(|r| *r == first)
    })
    .await;

    // Healthy in its tests, unhealthy once started: the deploy step fails.
    let manifest = std::fs::read_to_string(repo.work().join("baton.toml")).unwrap();
    repo.write(
        "baton.toml",
        &(manifest.replace("timeout = \"20s\"", "timeout = \"2s\"")
            + "\n[env]\nFAIL_HEALTH = \"1\"\n"),
    );
    let bad = push(repo.commit("main", "unhealthy")).await;
    assert_eq!(bad["state"], "failed", "{bad}");
    let last = bad["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["name"].as_str(), last["state"].as_str()),
        (Some("deploy"), Some("failed")),
        "{bad}"
    );
    let chat = receiver
        .wait_for("the failed deploy on chat", |r| {
            r.path == "/chat"
                && r.json()["text"]
                    .as_str()
                    .unwrap_or("")
                    .contains("deployment failed")
        })
        .await;
    assert!(chat.json()["text"].as_str().unwrap().contains("staging"));
    assert_eq!(
        live_release(&server, "staging").as_deref(),
        Some(first.as_str())
    );
    assert_eq!(
        live_release(&server, "production").as_deref(),
        Some(first.as_str())
    );
    let promotions: Value = server
        .http()
        .get(format!("{}/api/v1/apps/shop/promotions", server.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        promotions.as_array().unwrap().len(),
        1,
        "only the good release was promoted: {promotions}"
    );

    // The next good one goes through; a rollback of production notifies.
    repo.write(
        "baton.toml",
        &manifest.replace("echo running the tests", "echo running the tests again"),
    );
    let third = push(repo.commit("main", "fixed")).await;
    let third = third["release_id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(30), "production on the fix", || {
        live_release(&server, "production").filter(|r| *r == third)
    })
    .await;
    settled(&server).await;
    server.baton_ok(&["rollback", "shop", "--to", &first[..12]]);
    let rolled = receiver
        .wait_for("the rollback notification", |r| {
            r.path == "/ops" && r.json()["event"] == "rolled_back"
        })
        .await;
    assert_eq!(rolled.json()["environment"], "production");
    assert!(
        !rolled.headers.contains_key("x-baton-signature-256"),
        "no secret, no signature"
    );
    receiver
        .wait_for("the rollback on chat", |r| {
            r.path == "/chat"
                && r.json()["text"]
                    .as_str()
                    .unwrap_or("")
                    .contains("rolled back")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn once_accounts_exist_the_webhook_needs_only_its_signature_and_promotion_needs_a_grant() {
    let (_cfg, server) = start(&format!("webhook_secret = \"{SECRET}\"\n"));
    let repo = Repo::new("manual");
    let mut add = Command::new(BIN)
        .args([
            "users",
            "add",
            "stager",
            "--role",
            "deployer",
            "--env",
            "staging",
            "--password-stdin",
            "--data",
        ])
        .arg(server.data())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    assert!(add.wait().unwrap().success());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let api = |path: &str| format!("{}/api/v1{path}", server.api_url());

    // No token: the webhook still works; reading builds does not.
    let sha = repo.commit("main", "v1");
    let (status, answer) = github(&server, "push", &repo.push_payload("main", &sha, "v1")).await;
    assert_eq!(status, 202, "{answer}");
    let anonymous = http.get(api("/builds")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    let login: Value = http
        .post(api("/login"))
        .json(&json!({"user": "stager", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{login}"))
        .to_string();
    let id = answer["build"]["id"].as_i64().unwrap();
    let build = eventually(Duration::from_secs(30), "the build", || {
        let b: Value = block_on(async {
            http.get(api(&format!("/builds/{id}")))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        (b["state"] != "queued" && b["state"] != "running").then_some(b)
    })
    .await;
    assert_eq!(build["state"], "passed", "{build}");

    // A deployer of staging only may not promote to production.
    let refused = http
        .post(api("/apps/shop/promote"))
        .bearer_auth(&token)
        .json(&json!({"release": build["release_id"], "to": "production"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    assert_eq!(
        live_release_with(&http, &api("/status"), &token, "production").await,
        None
    );
}

async fn live_release_with(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    environment: &str,
) -> Option<String> {
    let status: Value = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["environment"] == environment)
        .and_then(|e| e["live"]["release_id"].as_str().map(str::to_string))
}
