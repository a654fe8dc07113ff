//! `baton destroy`: an app deployed to two environments, with a flag, an
//! API key and maintenance, is removed whole — no process, route, file or
//! store row of it is left but its audit entries — while another app on
//! the same server goes on serving. Only an admin may, and only when the
//! app is named again.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// A copy of the example app named `shop`, with hosts of its own.
fn shop(message: &str) -> AppCopy {
    let app = AppCopy::new(message);
    app.edit("baton.toml", "name = \"hello\"", "name = \"shop\"");
    app.edit(
        "baton.toml",
        "hosts = [\"hello.localhost\"]",
        "hosts = [\"shop.localhost\"]",
    );
    app.edit(
        "baton.toml",
        "preview_hosts = [\"next.hello.localhost\"]",
        "preview_hosts = [\"next.shop.localhost\"]",
    );
    app.edit(
        "baton.toml",
        "hosts = [\"staging.hello.localhost\"]",
        "hosts = [\"staging.shop.localhost\"]",
    );
    // Each deployment keeps its release command's output.
    app.set_deploy("release_command", "echo getting ready");
    // A cron run keeps its row and its output.
    app.append("[cron.tidy]\nschedule = \"@yearly\"\ncommand = \"echo tidy\"\n");
    app
}

/// Whether any process of the group `pgid` (a target's) is still alive.
fn group_alive(pgid: i32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp …; comm may hold spaces.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

/// The CLI as someone holding `token`, with standard input not a terminal.
fn baton_as(server: &Server, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("BATON_API", server.api_url())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    match token {
        Some(token) => command.env("BATON_TOKEN", token),
        None => command.env("BATON_DATA", server.data()),
    };
    command.output().unwrap()
}

/// Every row naming `app` in a table with an `app` column, but the audit
/// log's, read from the store file opened read-only.
fn rows_of(data: &Path, app: &str) -> String {
    let script = r#"
import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
for table in tables:
    columns = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
    if "app" not in columns or table == "audit_log":
        continue
    n = db.execute(f"SELECT COUNT(*) FROM {table} WHERE app = ?", (sys.argv[2],)).fetchone()[0]
    if n:
        print(f"{table}: {n}")
print("audit:", db.execute("SELECT COUNT(*) FROM audit_log WHERE app = ? AND action = 'app.destroy'", (sys.argv[2],)).fetchone()[0])
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(data.join("baton.db"))
        .arg(app)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn targets_of(status: &Value, app: &str) -> Vec<(i64, String, i32)> {
    status
        .as_array()
        .unwrap()
        .iter()
        .filter(|env| env["app"] == app)
        .flat_map(|env| env["targets"].as_array().unwrap().clone())
        .map(|t| {
            let handle = t["handle"].as_str().unwrap().to_string();
            let pid = handle.split('@').next().unwrap().parse().unwrap();
            (
                t["id"].as_i64().unwrap(),
                t["release_id"].as_str().unwrap().to_string(),
                pid,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_leaves_no_process_route_file_or_row_of_the_app_and_spares_the_others() {
    let server = Server::start();
    let hello = server.deploy(&example_dir());
    assert_eq!(hello["state"], "succeeded", "{hello}");

    // shop: two releases in production (one live, one warm), one in
    // staging, flags, an API key, a config value, staging in maintenance.
    let first = shop("shop v1");
    server.deploy(first.path());
    let second = shop("shop v2");
    server.deploy(second.path());
    server.baton_ok(&["deploy", first.path().to_str().unwrap(), "-e", "staging"]);
    server.baton_ok(&["flags", "create", "shop", "new-checkout"]);
    server.baton_ok(&["flags", "create", "shop", "beta", "-e", "staging"]);
    let key = server.json(&["flags", "keys", "create", "shop", "web"]);
    let key = key["key"].as_str().unwrap().to_string();
    let evaluate = || async {
        reqwest::Client::new()
            .post(format!(
                "{}/ofrep/v1/evaluate/flags/new-checkout",
                server.api_url()
            ))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(r#"{"context": {"targetingKey": "alice"}}"#)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // A config change deploys staging's release again: the old target
    // stays warm.
    server.baton_ok(&["config", "set", "shop", "SECRET=s3cret", "-e", "staging"]);
    server.baton_ok(&["maintenance", "on", "shop", "-e", "staging"]);
    assert_eq!(server.baton_ok(&["cron", "run", "shop", "tidy"]), "tidy\n");

    let apps = server.json(&["apps"]);
    let names: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["app"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello", "shop"], "{apps}");
    let shop_envs = &apps[1]["environments"];
    let state_of = |env: &str| {
        shop_envs
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["environment"] == env)
            .map(|e| e["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state_of("production").as_deref(), Some("live"), "{apps}");
    assert_eq!(
        state_of("staging").as_deref(),
        Some("maintenance"),
        "{apps}"
    );

    let text = server.baton_ok(&["apps"]);
    let staging_line = text
        .lines()
        .find(|l| l.starts_with("shop") && l.contains("staging"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        staging_line.contains("maintenance") && staging_line.contains("staging.shop.localhost"),
        "{text}"
    );

    let before: Vec<String> = std::fs::read_dir(server.data().join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        before.iter().any(|f| f.starts_with("release-command-")),
        "{before:?}"
    );
    assert!(before.iter().any(|f| f.starts_with("cron-")), "{before:?}");

    let status = server.json(&["status"]);
    let shop_targets = targets_of(&status, "shop");
    assert_eq!(shop_targets.len(), 4, "live and warm in each: {status}");
    let hello_targets = targets_of(&status, "hello");
    assert!(status
        .as_array()
        .unwrap()
        .iter()
        .all(|env| env["disk"]["releases"].as_u64().unwrap() > 0));
    let (status_code, _) = get_fresh(server.proxy, "shop.localhost", "/")
        .await
        .unwrap();
    assert_eq!(status_code, 200);
    assert_eq!(evaluate().await, 200, "the flag answers with the app's key");

    // Refused: without --yes off a terminal, to a viewer and a deployer,
    // and through the API without the name again.
    let out = baton_as(&server, None, &["destroy", "shop"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("not a terminal") && said.contains("--yes"),
        "{said}"
    );
    for (name, role, refusal) in [
        ("vera", "viewer", "viewers cannot change anything"),
        ("dan", "deployer", "only an admin"),
    ] {
        let token = server.user_token(name, &["--role", role]);
        let out = baton_as(&server, Some(&token), &["destroy", "shop", "--yes"]);
        assert!(!out.status.success(), "{role} destroyed shop");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(refusal), "{role}: {said}");
    }
    let answer = server
        .http()
        .delete(format!(
            "{}/api/v1/apps/shop?confirm=shoe",
            server.api_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "confirmation_required", "{body}");
    // Nothing of it was touched.
    let (status_code, _) = get_fresh(server.proxy, "shop.localhost", "/")
        .await
        .unwrap();
    assert_eq!(status_code, 200);

    let destroyed = server.json(&["destroy", "shop", "--yes"]);
    assert_eq!(
        destroyed["environments"],
        serde_json::json!(["production", "staging"]),
        "{destroyed}"
    );

    // No process: every target's process group is gone (stop waits for it).
    for (id, _, pid) in &shop_targets {
        assert!(!group_alive(*pid), "target {id} (pid {pid}) still runs");
    }
    // No route: the proxy answers its hosts 404.
    for host in [
        "shop.localhost",
        "staging.shop.localhost",
        "next.shop.localhost",
    ] {
        let (code, _) = get_fresh(server.proxy, host, "/").await.unwrap();
        assert_eq!(code, 404, "{host}");
    }
    // No file: release folders and output.
    let data = server.data();
    for (id, release, _) in &shop_targets {
        assert!(
            !data.join("releases").join(release).exists(),
            "release {release}"
        );
        assert!(
            !data.join("logs").join(format!("{id}.log")).exists(),
            "output of {id}"
        );
    }
    let hello_logs: Vec<String> = hello_targets
        .iter()
        .map(|(id, _, _)| format!("{id}.log"))
        .collect();
    let other_logs: Vec<String> = std::fs::read_dir(data.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|name| !name.starts_with("access.log") && !hello_logs.contains(name))
        .collect();
    assert!(
        other_logs.is_empty(),
        "{other_logs:?} are left in DATA/logs"
    );
    let mut left: Vec<String> = std::fs::read_dir(data.join("releases"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    left.sort();
    let mut hello_releases: Vec<String> = hello_targets.iter().map(|t| t.1.clone()).collect();
    hello_releases.dedup();
    assert_eq!(left, hello_releases, "only hello's release folders remain");
    // The flag service forgot the app: its key opens nothing.
    assert_eq!(evaluate().await, 401, "the destroyed app's key still works");
    // No row but the audit log's, which has the destroy.
    assert_eq!(rows_of(&data, "shop"), "audit: 1\n");
    let apps = server.json(&["apps"]);
    assert_eq!(apps.as_array().unwrap().len(), 1, "{apps}");
    assert_eq!(apps[0]["app"], "hello");

    // The other app is untouched and still serves.
    for (_, _, pid) in &hello_targets {
        assert!(group_alive(*pid), "hello's target {pid} was stopped");
    }
    let (code, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Hello from Baton's example app!"), "{body}");

    // Again: there is nothing left to destroy.
    let out = baton_as(&server, None, &["destroy", "shop", "--yes"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("nothing of app shop"), "{said}");
    // A name can be used again at once.
    let again = server.deploy(first.path());
    assert_eq!(again["state"], "succeeded", "{again}");
    let (code, body) = get_fresh(server.proxy, "shop.localhost", "/")
        .await
        .unwrap();
    assert_eq!((code, body.contains("shop v1")), (200, true), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn destroying_one_environment_keeps_the_others() {
    let server = Server::start();
    let app = shop("shop v1");
    server.deploy(app.path());
    server.baton_ok(&["deploy", app.path().to_str().unwrap(), "-e", "staging"]);
    server.baton_ok(&["flags", "create", "shop", "beta", "-e", "staging"]);
    let status = server.json(&["status"]);
    let staging: Vec<_> = targets_of(&status, "shop")
        .into_iter()
        .filter(|(id, _, _)| {
            status.as_array().unwrap().iter().any(|env| {
                env["environment"] == "staging"
                    && env["targets"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|t| t["id"] == *id)
            })
        })
        .collect();
    assert_eq!(staging.len(), 1, "{status}");

    server.baton_ok(&["destroy", "shop", "-e", "staging", "--yes"]);
    assert!(!group_alive(staging[0].2), "staging's target still runs");
    let (code, _) = get_fresh(server.proxy, "staging.shop.localhost", "/")
        .await
        .unwrap();
    assert_eq!(code, 404);
    // Production serves on, from the same release folder.
    let (code, body) = get_fresh(server.proxy, "shop.localhost", "/")
        .await
        .unwrap();
    assert_eq!((code, body.contains("shop v1")), (200, true), "{body}");
    assert!(server.data().join("releases").join(&staging[0].1).exists());
    let flags = server.json(&["flags", "list", "shop", "-e", "staging"]);
    assert_eq!(flags.as_array().map(Vec::len), Some(0), "{flags}");
}

#[tokio::test(flavor = "multi_thread")]
async fn destroying_a_docker_app_removes_its_containers_and_images() {
    let app = DockerApp::new("destroy", "version 1");
    let server = Server::start();
    let first = server.deploy(app.path());
    assert_eq!(first["state"], "succeeded", "{first}");
    let second = DockerApp::named(app.name, "version 2");
    server.deploy(second.path());
    assert_eq!(app.images().len(), 2);
    assert_eq!(app.containers().len(), 2, "live and warm");

    server.baton_ok(&["destroy", app.name, "--yes"]);
    assert!(app.containers().is_empty(), "{:?}", app.containers());
    assert!(app.images().is_empty(), "{:?}", app.images());
    let (code, _) = get_fresh(server.proxy, app.host, "/").await.unwrap();
    assert_eq!(code, 404);
    assert_eq!(rows_of(&server.data(), app.name), "audit: 1\n");
}
