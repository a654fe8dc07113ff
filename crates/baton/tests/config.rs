//! Config and secrets outside the code (`baton config`), rolling restarts,
//! the release command and one-off commands (`baton run`), on a real
//! server with real targets.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;

const HOST: &str = "hello.localhost";
const FIRST: &str = "s3cret-value-one";
const SECOND: &str = "s3cret-value-two";

/// A variable of the live target's environment, read from /proc.
fn live_env(server: &Server, name: &str) -> Option<String> {
    let pid = server.live()["handle"]
        .as_str()
        .and_then(|h| h.split('@').next())
        .and_then(|p| p.parse::<u32>().ok())
        .expect("a live target with a pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix(&format!("{name}=")).map(str::to_string))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_reach_the_app_sealed_and_a_rollback_restores_them_with_zero_downtime() {
    let server = Arc::new(Server::start());
    let app = AppCopy::new("configured");
    app.set_env("GREETING", "from-manifest");
    server.deploy(app.path());
    let load = Load::start(server.proxy, HOST, 16);

    // Set: a new config version, applied by a restart deployment.
    let s = Arc::clone(&server);
    let set = tokio::task::spawn_blocking(move || {
        s.baton_ok(&[
            "config",
            "set",
            "hello",
            &format!("SECRET={FIRST}"),
            "GREETING=from-config",
        ])
    })
    .await
    .unwrap();
    assert!(set.contains("config version 1"), "{set}");
    assert!(!set.contains(FIRST), "the CLI printed the value: {set}");
    assert_eq!(live_env(&server, "SECRET").as_deref(), Some(FIRST));
    assert_eq!(
        live_env(&server, "GREETING").as_deref(),
        Some("from-config")
    );
    let first_target = server.live()["id"].as_i64().unwrap();

    // A second value, read from standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["config", "set", "hello", "SECRET=-", "--json"])
        .env("BATON_DATA", server.data())
        .env("BATON_API", server.api_url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{SECOND}").unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["kind"], "restart");
    assert_eq!(done["config_version"], 2);
    assert_eq!(live_env(&server, "SECRET").as_deref(), Some(SECOND));

    // Names and sources for everyone; values only for an admin who asks.
    let listing = server.json(&["config", "list", "hello"]);
    assert_eq!(listing["version"], 2);
    assert_eq!(listing["live_version"], 2);
    let vars = listing["vars"].as_array().unwrap();
    let greeting = vars.iter().find(|v| v["name"] == "GREETING").unwrap();
    assert_eq!(greeting["source"], "config");
    assert_eq!(greeting["overrides_manifest"], true);
    assert!(!listing.to_string().contains(SECOND), "{listing}");
    // `status` says where each variable comes from, never its value.
    let status = server.json(&["status"]);
    let secret = status[0]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "SECRET")
        .cloned()
        .unwrap_or_else(|| panic!("no SECRET in {status}"));
    assert_eq!(secret["source"], "config");
    assert!(secret.get("value").is_none(), "{secret}");
    assert_eq!(status[0]["config_version"], 2);
    let revealed = server.json(&["config", "list", "hello", "--reveal"]);
    assert!(revealed.to_string().contains(SECOND), "{revealed}");
    let viewer = server.user_token("vera", &["--role", "viewer"]);
    let refused = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/apps/hello/config?reveal=true",
            server.api_url()
        ))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let deployer = server.user_token("dora", &["--role", "deployer"]);
    let names = reqwest::Client::new()
        .get(format!("{}/api/v1/apps/hello/config", server.api_url()))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(names.status(), 200);
    assert!(!names.text().await.unwrap().contains(SECOND));
    let _ = deployer;

    // A rollback goes back to the warm target: release and config together,
    // and the restored config is the newest again.
    let s = Arc::clone(&server);
    let back = tokio::task::spawn_blocking(move || s.rollback("hello"))
        .await
        .unwrap();
    assert_eq!(back["state"], "succeeded", "{back}");
    assert_eq!(server.live()["id"].as_i64().unwrap(), first_target);
    assert_eq!(live_env(&server, "SECRET").as_deref(), Some(FIRST));
    let listing = server.json(&["config", "list", "hello", "--reveal"]);
    assert_eq!(listing["version"], 3, "{listing}");
    let secret = listing["vars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "SECRET")
        .unwrap();
    assert_eq!(secret["value"], FIRST);

    // A rolling restart: a new target of the same release and config.
    let s = Arc::clone(&server);
    let restarted = tokio::task::spawn_blocking(move || s.json(&["restart", "hello"]))
        .await
        .unwrap();
    assert_eq!(restarted["state"], "succeeded", "{restarted}");
    assert_ne!(server.live()["id"].as_i64().unwrap(), first_target);
    assert_eq!(live_env(&server, "SECRET").as_deref(), Some(FIRST));

    let outcomes = load.stop().await;
    assert_no_failures(&outcomes, 200);

    // Unset, with a wrong name refused first.
    let wrong = server.baton(&["config", "unset", "hello", "NOPE"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("NOPE is not set"));
    let bad = server.baton(&["config", "set", "hello", "BATON_RELEASE=x"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("set by Baton"));
    server.baton_ok(&["config", "unset", "hello", "GREETING"]);
    assert_eq!(
        live_env(&server, "GREETING").as_deref(),
        Some("from-manifest")
    );

    // Nowhere in clear: not in the store's files, the server's log, the
    // events, the audit log, the deployments or the status.
    for entry in std::fs::read_dir(server.data()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            for value in [FIRST, SECOND] {
                assert!(!contains(&bytes, value), "{value} in {}", path.display());
            }
        }
    }
    assert!(!server.log().contains("s3cret"));
    let http = server.http();
    for path in [
        "/api/v1/apps/hello/events",
        "/api/v1/apps/hello/deployments",
        "/api/v1/status",
        "/api/v1/audit?app=hello",
        "/api/v1/apps/hello/config",
    ] {
        let answer = http
            .get(format!("{}{path}", server.api_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!answer.contains("s3cret"), "{path}: {answer}");
    }
    let events = server.json(&["events", "hello"]);
    assert!(events.to_string().contains("config version 2"), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_command_runs_once_before_the_targets_and_a_failing_one_leaves_production() {
    let server = Server::start();
    let marks = tempfile::tempdir().unwrap();
    // The app user writes there.
    std::fs::set_permissions(
        marks.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let marker = marks.path().join("released");
    let app = AppCopy::new("with a release phase");
    app.set_env("MARKER", marker.to_str().unwrap());
    app.set_deploy(
        "release_command",
        "echo released $BATON_RELEASE >> $MARKER; echo to the log",
    );
    let deployment = server.deploy(app.path());
    assert_eq!(deployment["state"], "succeeded", "{deployment}");
    let steps: Vec<&str> = deployment["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps[..2], ["release_command", "start_target"], "{steps:?}");
    let release = deployment["release_id"].as_str().unwrap();
    let lines = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(lines, format!("released {release}\n"));
    let served = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert!(served.1.contains("with a release phase"));

    let failing = AppCopy::new("never served");
    failing.set_deploy("release_command", "echo about to fail; exit 3");
    let out = server.baton(&["deploy", failing.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("exited with code 3"), "{said}");
    assert!(said.contains("about to fail"), "{said}");
    assert!(said.contains("live release is unchanged"), "{said}");
    let served = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert!(served.1.contains("with a release phase"), "{served:?}");
    // It ran once, for the first release only.
    assert_eq!(std::fs::read_to_string(&marker).unwrap().lines().count(), 1);

    let broken = AppCopy::new("broken manifest");
    broken.set_deploy("release_command", " ");
    let out = server.baton(&["deploy", broken.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("deploy.release_command"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_run_streams_output_returns_the_exit_code_and_dies_with_its_client() {
    let server = Server::start();
    server.deploy(&example_dir());
    server.baton_ok(&["config", "set", "hello", "TOKEN=t0ken-for-run"]);

    let out = server.baton(&[
        "run",
        "hello",
        "--",
        "sh",
        "-c",
        "echo out $TOKEN; echo err >&2; pwd; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("out t0ken-for-run"), "{text}");
    assert!(text.contains("err"), "{text}");
    let release = server.live()["release_id"].as_str().unwrap().to_string();
    assert!(
        text.contains(&release),
        "not run in the release folder: {text}"
    );

    // Piped into head: the first lines, then a quiet end.
    let head = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} run hello -- seq 1 100000 | head -3",
            env!("CARGO_BIN_EXE_baton")
        ))
        .env("BATON_DATA", server.data())
        .env("BATON_API", server.api_url())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout), "1\n2\n3\n");

    // A client killed mid-command takes the command with it.
    let mut client = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "run",
            "hello",
            "--",
            "sh",
            "-c",
            "echo pid $$; exec sleep 300",
        ])
        .env("BATON_DATA", server.data())
        .env("BATON_API", server.api_url())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let pid: u32 = first
        .trim()
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{first:?}"));
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    client.kill().unwrap();
    client.wait().unwrap();
    eventually(Duration::from_secs(10), "the command to be killed", || {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        let gone = state.is_none_or(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        });
        gone.then_some(())
    })
    .await;

    // Wrong input says what to do; every run is audited.
    let none = server.baton(&["run", "nope", "--", "true"]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("not running"));
    let audit = server
        .http()
        .get(format!("{}/api/v1/audit?app=hello", server.api_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(audit.contains("command.run"), "{audit}");
    assert!(!audit.contains("t0ken-for-run"), "{audit}");
}
