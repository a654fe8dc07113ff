//! Accounts and access control through the CLI and the API: the first
//! admin made on the server's host, logins, roles, environment grants,
//! tokens revoked at once, wrong passwords that tell nothing and slow down,
//! and the audit log naming who did what.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The CLI with its own HOME (for the saved token) and optional token.
fn cli(
    server: &Server,
    home: &std::path::Path,
    token: Option<&str>,
    args: &[&str],
    stdin: &str,
) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("BATON_API", server.api_url())
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env("NO_COLOR", "1")
        // Not the server's data folder: this CLI has no admin token.
        .env("BATON_DATA", home.join("not-the-data-folder"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match token {
        Some(token) => command.env("BATON_TOKEN", token),
        None => command.env_remove("BATON_TOKEN"),
    };
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn add_user(server: &Server, name: &str, extra: &[&str], password: &str) {
    let mut args = vec!["users", "add", name, "--password-stdin", "--data"];
    let data = server.data();
    args.push(data.to_str().unwrap());
    args.extend_from_slice(extra);
    let home = tempfile::tempdir().unwrap();
    let out = cli(server, home.path(), None, &args, &format!("{password}\n"));
    assert!(out.status.success(), "{}", text(&out));
}

fn api(server: &Server) -> String {
    format!("{}/api/v1", server.api_url())
}

async fn login(
    http: &reqwest::Client,
    server: &Server,
    user: &str,
    password: &str,
) -> reqwest::Response {
    http.post(format!("{}/login", api(server)))
        .json(&json!({"user": user, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_tokens_and_logins_are_enforced_by_the_server() {
    let server = Server::start();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // No account yet, and still nobody is trusted by address: a caller
    // without a credential is refused, even from this host…
    let home = tempfile::tempdir().unwrap();
    let out = cli(
        &server,
        home.path(),
        None,
        &["deploy", example_dir().to_str().unwrap(), "--json"],
        "",
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("log in first"), "{}", text(&out));
    // …while the CLI that can read the data folder's admin.token (the
    // server's own user) works with no set-up, and is named for it whatever
    // it claims to be.
    let mut deploy = Command::new(BIN);
    deploy
        .args(["deploy", example_dir().to_str().unwrap(), "--json"])
        .env("BATON_API", server.api_url())
        .env("BATON_DATA", server.data())
        .env("HOME", home.path())
        .env_remove("BATON_TOKEN");
    let out = deploy.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["state"], "succeeded");
    assert_eq!(first["actor"], "local-admin (admin.token)");
    let claimed = http
        .post(format!("{}/apps/hello/flags", api(&server)))
        .bearer_auth(server.admin_token())
        .header("x-baton-actor", "mallory")
        .json(&json!({"name": "claimed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(claimed.status(), 201, "{}", claimed.text().await.unwrap());

    add_user(&server, "ada", &["--admin"], "ada's long password");
    add_user(&server, "vic", &["--role", "viewer"], "vic's long password");
    add_user(
        &server,
        "dee",
        &["--role", "deployer", "--env", "staging"],
        "dee's long password",
    );
    // Accounts exist: anonymous callers are still refused.
    let out = cli(&server, home.path(), None, &["status"], "");
    assert!(!out.status.success());
    assert!(text(&out).contains("log in first"), "{}", text(&out));
    let anonymous = http
        .get(format!("{}/status", api(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.json::<Value>().await.unwrap()["error"]["code"],
        "unauthorized"
    );
    assert_eq!(
        http.get(format!("{}/health", api(&server)))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Log in through the CLI: the token is kept and used.
    let out = cli(
        &server,
        home.path(),
        None,
        &["login", "ada", "--password-stdin"],
        "ada's long password\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&server, home.path(), None, &["whoami"], "");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ada (admin)");
    let saved = std::fs::metadata(home.path().join(".config/baton/tokens.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&saved.permissions()) & 0o777,
        0o600
    );

    // A token works until it is revoked, and not one request longer.
    let out = cli(
        &server,
        home.path(),
        None,
        &["tokens", "create", "ci", "--role", "deployer", "--json"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    let id = created["record"]["id"].to_string();
    let out = cli(&server, home.path(), Some(&token), &["whoami"], "");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ada (deployer)",
        "{}",
        text(&out)
    );
    let out = cli(&server, home.path(), None, &["tokens", "revoke", &id], "");
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&server, home.path(), Some(&token), &["status"], "");
    assert!(!out.status.success());
    assert!(text(&out).contains("unknown or revoked"), "{}", text(&out));

    // A viewer reads, and gets 403 for any change.
    let viewer = login(&http, &server, "vic", "vic's long password").await;
    assert_eq!(viewer.status(), 201);
    let viewer = viewer.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let status = http
        .get(format!("{}/status", api(&server)))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let refused = http
        .post(format!("{}/apps/hello/rollback", api(&server)))
        .bearer_auth(&viewer)
        .json(&json!({"environment": "production"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("viewers cannot change anything"));

    // A deployer granted staging may not touch production.
    let deployer = login(&http, &server, "dee", "dee's long password").await;
    let deployer = deployer.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let release = first["release_id"].as_str().unwrap();
    let refused = http
        .post(format!("{}/apps/hello/deployments", api(&server)))
        .bearer_auth(&deployer)
        .json(&json!({"release": release, "environment": "production"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let allowed = http
        .post(format!("{}/apps/hello/deployments", api(&server)))
        .bearer_auth(&deployer)
        .json(&json!({"release": release, "environment": "staging"}))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 202, "{}", allowed.text().await.unwrap());

    // Users are an admin's business.
    let refused = http
        .post(format!("{}/users", api(&server)))
        .bearer_auth(&deployer)
        .json(&json!({"name": "eve", "password": "eve's long password", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // The audit log names who did what, from where.
    let audit: Value = http
        .get(format!("{}/audit?limit=50", api(&server)))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = audit.as_array().unwrap();
    // X-Baton-Actor names nobody: the actor is the principal.
    assert!(entries.iter().all(|e| e["actor"] != "mallory"), "{audit}");
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "flag.create" && e["actor"] == "local-admin (admin.token)"),
        "{audit}"
    );
    assert!(entries.iter().any(|e| e["action"] == "deployment.create"
        && e["actor"] == "dee (token cli)"
        && e["environment"] == "staging"
        && e["remote_address"] == "127.0.0.1"));
    assert!(entries.iter().any(|e| e["action"] == "token.revoke"
        && e["actor"]
            .as_str()
            .unwrap()
            .starts_with("ada (token cli on ")));

    // A wrong password and an unknown user get the very same answer.
    let wrong = login(&http, &server, "ada", "not the password").await;
    let (wrong_status, wrong_body) = (wrong.status(), wrong.text().await.unwrap());
    let unknown = login(&http, &server, "nobody", "not the password").await;
    assert_eq!(
        (wrong_status, wrong_body.clone()),
        (unknown.status(), unknown.text().await.unwrap())
    );
    assert_eq!(wrong_status, 401);
    assert!(wrong_body.contains("wrong user name or password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenth_fast_wrong_password_is_slowed_down() {
    let server = Server::start();
    add_user(&server, "ada", &["--admin"], "ada's long password");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut took = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let answer = login(&http, &server, "ada", "guess, guess, guess").await;
        assert_eq!(answer.status(), 401);
        took.push(started.elapsed());
    }
    // Five failures are free; then each attempt waits 100 ms, doubling.
    assert!(took[9] >= Duration::from_millis(1600), "{took:?}");
    assert!(took[9] > took[0] * 2, "{took:?}");
    // The right password still works, after its wait.
    let answer = login(&http, &server, "ada", "ada's long password").await;
    assert_eq!(answer.status(), 201);
}
