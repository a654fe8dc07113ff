//! Nobody gets in who should not: tried as a hostile local user, a hostile
//! app and a hostile API client would. No one is trusted by address; apps
//! never run as root; secrets are an admin's to read; the data folder is
//! private; every upload and archive is bounded.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Runs a command as the unprivileged user `nobody`.
fn as_nobody(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "nobody", "--", "env", "NO_COLOR=1", "HOME=/tmp"])
        .arg(format!("BATON_API={}", server.api_url()))
        .arg(format!("BATON_DATA={}", server.data().display()))
        .args(args)
        .output()
        .unwrap()
}

/// `VmRSS` and `VmHWM` (peak) of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn server_pid(server: &Server) -> u32 {
    server.child.as_ref().unwrap().id()
}

/// A release archive made by hand, as an attacker with curl would.
fn archive(extra: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for file in ["baton.toml", "app.py"] {
        let bytes = std::fs::read(example_dir().join(file)).unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, file, &bytes[..]).unwrap();
    }
    extra(&mut builder);
    builder.into_inner().unwrap()
}

async fn upload(server: &Server, token: &str, body: Vec<u8>, environment: &str) -> (u16, Value) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!(
            "{}/api/v1/apps/hello/releases?environment={environment}",
            server.api_url()
        ))
        .bearer_auth(token)
        .header("content-type", "application/x-tar")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[test]
fn an_unprivileged_local_user_cannot_deploy_roll_back_or_create_users() {
    let server = Server::start();
    server.deploy(&example_dir());
    // The way to the data folder is open (the test's folder is 0755), so
    // only the data folder's own permissions stand in the way.
    let app = AppCopy::new("from nobody");
    let out = as_nobody(&server, &[BIN, "deploy", app.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("log in first"), "{}", text(&out));
    let out = as_nobody(&server, &[BIN, "rollback", "hello"]);
    assert!(text(&out).contains("log in first"), "{}", text(&out));
    let out = as_nobody(
        &server,
        &["cat", server.data().join("admin.token").to_str().unwrap()],
    );
    assert!(!out.status.success(), "nobody read admin.token");
    let out = as_nobody(
        &server,
        &[
            BIN,
            "users",
            "add",
            "eve",
            "--admin",
            "--password-stdin",
            "--data",
            server.data().to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let out = as_nobody(
        &server,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"name":"eve","password":"eve's long password","role":"admin"}"#,
            &format!("{}/api/v1/users", server.api_url()),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    // Nothing changed: one release, one deployment, no account.
    assert_eq!(
        server
            .json(&["deployments", "hello"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let users = server.json(&["users", "list"]);
    assert_eq!(users, json!([]));
}

#[test]
fn a_deployed_app_runs_unprivileged_and_cannot_take_over_baton() {
    // A variable of the server's own environment never reaches an app.
    let server = Server::start_with(&[("SERVER_ONLY_SECRET", "leaked")]);
    let app = AppCopy::new("hostile");
    std::fs::write(
        app.path().join("attack.py"),
        r#"
import json, os, urllib.request, urllib.error
print("uid", os.getuid(), "groups", os.getgroups(), flush=True)
data = os.environ["SPY_DATA_DIR"]
for what, attempt in [
    ("token", lambda: open(data + "/admin.token").read()),
    ("store", lambda: open(data + "/baton.db", "rb").read(1)),
    ("data", lambda: os.listdir(data)),
    ("release", lambda: open("written-by-the-app", "w")),
]:
    try:
        attempt()
        print(what + ": DONE", flush=True)
    except Exception as e:
        print(what + ": " + type(e).__name__, flush=True)
request = urllib.request.Request(
    os.environ["SPY_API_URL"] + "/api/v1/users",
    data=json.dumps({"name": "mallory", "password": "mallory's password", "role": "admin"}).encode(),
    headers={"content-type": "application/json"},
    method="POST",
)
try:
    urllib.request.urlopen(request)
    print("users: CREATED", flush=True)
except urllib.error.HTTPError as e:
    print("users:", e.code, flush=True)
print("path", os.environ.get("PATH"), flush=True)
print("inherited", os.environ.get("SERVER_ONLY_SECRET", "none"), flush=True)
"#,
    )
    .unwrap();
    app.edit(
        "baton.toml",
        "command = \"python3 -u app.py\"",
        "command = \"python3 -u attack.py && exec python3 -u app.py\"",
    );
    app.set_env("SPY_API_URL", &server.api_url());
    app.set_env("SPY_DATA_DIR", server.data().to_str().unwrap());
    server.deploy(app.path());
    let log = server.baton_ok(&["logs", "hello", "-n", "50"]);
    let uid: u32 = log
        .lines()
        .find_map(|l| l.split("uid ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no uid in {log}"));
    assert_ne!(uid, 0, "{log}");
    assert!(!log.contains("groups [0") && !log.contains(", 0]"), "{log}");
    for refused in [
        "token: PermissionError",
        "store: PermissionError",
        "data: PermissionError",
        "release: PermissionError",
        "users: 401",
        "path /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "inherited none",
    ] {
        assert!(log.contains(refused), "{refused:?} not in {log}");
    }
    assert_eq!(server.json(&["users", "list"]), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_host_and_origin_pair_is_refused_whatever_the_credential() {
    let server = Server::start_with(&[("BATON_API_HOSTS", "baton.example.com")]);
    let first = server.deploy(&example_dir());
    let second = server.deploy(AppCopy::new("second").path());
    let http = server.http();
    let port = server.api.port();
    // A page on evil.example whose name now resolves to this machine.
    let forged = http
        .post(format!("{}/api/v1/apps/hello/rollback", server.api_url()))
        .header("host", format!("evil.example:{port}"))
        .header("origin", format!("http://evil.example:{port}"))
        .json(&json!({"environment": "production"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 421);
    let body: Value = forged.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--api-host"),
        "{body}"
    );
    let page = http
        .get(format!("{}/", server.api_url()))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 421, "the dashboard is guarded too");
    assert_eq!(server.live()["release_id"], second["release_id"]);
    // Two Host headers are one too many.
    let mut raw = tokio::net::TcpStream::connect(server.api).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // The server's own configured name works.
    let named = http
        .post(format!("{}/api/v1/apps/hello/rollback", server.api_url()))
        .header("host", format!("baton.example.com:{port}"))
        .json(&json!({"environment": "production"}))
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), 202);
    // Accepted, then carried out: the named request rolled back.
    eventually(
        Duration::from_secs(30),
        "the rollback by the named request",
        || (server.live()["release_id"] == first["release_id"]).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setuid_file_in_a_release_loses_its_bit() {
    let server = Server::start();
    let body = archive(|b| {
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o4755);
        header.set_cksum();
        b.append_data(&mut header, "tool", &b"#!/x"[..]).unwrap();
    });
    let (status, answer) = upload(&server, &server.admin_token(), body, "production").await;
    assert_eq!(status, 201, "{answer}");
    let id = answer["release"]["id"].as_str().unwrap();
    let tool = server.data().join("releases").join(id).join("tool");
    assert_eq!(mode(&tool), 0o555, "setuid and write bits dropped");
    assert_eq!(std::fs::metadata(&tool).unwrap().uid(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_and_staging_deployers_see_no_production_secret() {
    let server = Server::start();
    let app = AppCopy::new("with secrets");
    std::fs::write(
        app.path().join("baton.toml"),
        std::fs::read_to_string(app.path().join("baton.toml")).unwrap()
            + "\n[environments.production.env]\nDATABASE_URL = \"postgres://shop:hunter2@db/shop\"\n",
    )
    .unwrap();
    server.deploy(app.path());
    let viewer = server.user_token("vic", &["--role", "viewer"]);
    let stager = server.user_token("dee", &["--role", "deployer", "--env", "staging"]);
    let admin = server.user_token("ada", &["--admin"]);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let releases = |token: String| {
        let request = http
            .get(format!("{}/api/v1/apps/hello/releases", server.api_url()))
            .bearer_auth(token);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    for (who, token) in [("viewer", viewer.clone()), ("staging deployer", stager)] {
        let body = releases(token).await;
        assert!(!body.contains("hunter2"), "{who} sees {body}");
        assert!(
            body.contains("DATABASE_URL") && body.contains("(redacted)"),
            "{body}"
        );
    }
    assert!(releases(admin).await.contains("hunter2"));
    // The CLI's --json is the API's answer.
    let out = Command::new(BIN)
        .args(["releases", "hello", "--json"])
        .env("BATON_API", server.api_url())
        .env("BATON_TOKEN", &viewer)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("hunter2"));
}

#[test]
fn a_deployer_uploads_releases_only_for_granted_apps_and_environments() {
    let server = Server::start();
    let shop_only = server.user_token("sam", &["--role", "deployer", "--app", "shop"]);
    let stager = server.user_token("dee", &["--role", "deployer", "--env", "staging"]);
    let deploy = |token: &str, environment: &str| {
        Command::new(BIN)
            .args(["deploy", example_dir().to_str().unwrap(), "-e", environment])
            .env("BATON_API", server.api_url())
            .env("BATON_TOKEN", token)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let out = deploy(&shop_only, "production");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("may not change hello in production"),
        "{}",
        text(&out)
    );
    let out = deploy(&stager, "production");
    assert!(!out.status.success());
    assert!(text(&out).contains("--env production"), "{}", text(&out));
    // Refused at the upload: not even a release was recorded.
    assert_eq!(server.json(&["releases", "hello"]), json!([]));
    let out = deploy(&stager, "staging");
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn the_data_folder_is_private_and_tightened_at_start() {
    let mut server = Server::start();
    server.deploy(&example_dir());
    let data = server.data();
    let app_group = std::fs::metadata(data.join("releases")).unwrap().gid();
    assert_eq!(mode(&data), 0o710, "the apps' group may pass, not list");
    assert_eq!(std::fs::metadata(&data).unwrap().gid(), app_group);
    assert_ne!(app_group, 0);
    for private in ["baton.db", "session.key", "admin.token", "server.lock"] {
        assert_eq!(mode(&data.join(private)), 0o600, "{private}");
    }
    assert_eq!(mode(&data.join("logs")), 0o700);
    for log in std::fs::read_dir(data.join("logs")).unwrap() {
        assert_eq!(mode(&log.unwrap().path()), 0o600);
    }
    // Loosened by hand: the next start tightens it again and says so.
    server.kill9();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        data.join("baton.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    server.restart();
    assert_eq!(mode(&data), 0o710);
    assert_eq!(mode(&data.join("baton.db")), 0o600);
    assert!(
        server.log().contains("readable by others") && server.log().contains("baton.db was 644"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_600_mb_upload_against_a_100_mb_limit_gets_413_and_memory_stays_flat() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start_with(&[("BATON_MAX_UPLOAD", "100M")]);
    let pid = server_pid(&server);
    let (before, _) = memory(pid);
    let token = server.admin_token();
    const MB: usize = 1024 * 1024;

    // Declared up front, as curl and the CLI do: refused before the body.
    let mut raw = tokio::net::TcpStream::connect(server.api).await.unwrap();
    raw.write_all(
        format!(
            "POST /api/v1/apps/hello/releases HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
            600 * MB
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0; 4096];
    let n = raw.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("--max-upload"), "{head}");
    drop(raw);

    // Streamed without a length: cut as soon as it passes the limit.
    let chunks = futures_util::stream::iter(
        (0..600).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; MB]))),
    );
    let sent = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/api/v1/apps/hello/releases", server.api_url()))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    match sent {
        Ok(response) => assert_eq!(response.status(), 413),
        // The server may close the connection before reading the rest;
        // either way nothing was accepted.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    let (_, peak) = memory(pid);
    eprintln!(
        "measured: 600 MB uploads against a 100 MB limit: RSS {} MB before, peak {} MB",
        before / MB as u64,
        peak / MB as u64
    );
    assert!(
        peak < before + 100 * MB as u64,
        "the server grew from {} MB to a peak of {} MB",
        before / MB as u64,
        peak / MB as u64
    );
    assert_eq!(
        std::fs::read_dir(server.data().join("uploads"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(server.json(&["releases", "hello"]), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_or_100k_file_archive_is_refused_and_leaves_nothing() {
    let server = Server::start();
    let token = server.admin_token();
    let many = archive(|b| {
        for i in 0..100_000 {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_mode(0o644);
            header.set_cksum();
            b.append_data(&mut header, format!("f/{i}"), &[][..])
                .unwrap();
        }
    });
    let (status, answer) = upload(&server, &token, many, "production").await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("20000") || message.contains("20,000"),
        "{message}"
    );

    let sparse = archive(|b| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNUSparse);
        header.set_size(512);
        header.set_mode(0o644);
        let gnu = header.as_gnu_mut().unwrap();
        gnu.set_real_size(50 << 30);
        gnu.sparse[0].set_offset((50 << 30) - 512);
        gnu.sparse[0].set_length(512);
        header.set_cksum();
        b.append_data(&mut header, "disk.img", &[1u8; 512][..])
            .unwrap();
    });
    assert!(sparse.len() < 20_000);
    let (status, answer) = upload(&server, &token, sparse, "production").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sparse"),
        "{answer}"
    );
    assert_eq!(server.json(&["releases", "hello"]), json!([]));
    let left: Vec<_> = std::fs::read_dir(server.data().join("releases"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flags_file_linked_to_a_fifo_is_refused_without_stalling_the_api() {
    let server = Server::start();
    let fifo_dir = tempfile::tempdir().unwrap();
    let fifo = fifo_dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let app = AppCopy::new("fifo flags");
    std::os::unix::fs::symlink(&fifo, app.path().join("flags.toml")).unwrap();
    let started = Instant::now();
    let out = server.baton(&["deploy", app.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("flags.toml is not a regular file"),
        "{}",
        text(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let health = server
        .http()
        .get(format!("{}/api/v1/health", server.api_url()))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_bad_logins_keep_memory_bounded_and_the_api_healthy() {
    let server = Server::start();
    server.user_token("ada", &["--admin"]);
    let pid = server_pid(&server);
    let (before, _) = memory(pid);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let login_url = format!("{}/api/v1/login", server.api_url());
    let mut logins = Vec::new();
    for i in 0..200 {
        let (http, url) = (http.clone(), login_url.clone());
        logins.push(tokio::spawn(async move {
            let answer = http
                .post(url)
                .json(&json!({"user": format!("guess{i}"), "password": "wrong password!"}))
                .send()
                .await
                .unwrap();
            let retry = answer.headers().get("retry-after").is_some();
            (answer.status().as_u16(), retry)
        }));
    }
    // The API answers meanwhile.
    let probe = Instant::now();
    let health = http
        .get(format!("{}/api/v1/health", server.api_url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let probe = probe.elapsed();
    let mut busy = 0;
    for login in logins {
        match login.await.unwrap() {
            (401, _) => {}
            (429, true) => busy += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(busy > 0, "200 logins at once were all hashed");
    let (_, peak) = memory(pid);
    eprintln!(
        "measured: 200 concurrent bad logins: RSS {} MB before, peak {} MB, {busy} answered 429, health answered in {probe:?}",
        before >> 20,
        peak >> 20
    );
    assert!(
        peak < before + 300 * 1024 * 1024,
        "from {} MB to a peak of {} MB",
        before >> 20,
        peak >> 20
    );
    assert!(probe < Duration::from_secs(5));
    // A good login still works once the flood is over.
    let token = login(&server.api_url(), "ada", "ada's long password");
    assert!(token["token"].as_str().unwrap().starts_with("baton_"));
}

#[test]
fn a_host_both_live_and_preview_is_refused_at_deploy() {
    let server = Server::start();
    let app = AppCopy::new("clash");
    app.edit(
        "baton.toml",
        "preview_hosts = [\"next.hello.localhost\"]",
        "preview_hosts = [\"hello.localhost\"]",
    );
    let out = server.baton(&["deploy", app.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let message = text(&out);
    assert!(message.contains("deploy.preview_hosts[0]"), "{message}");
    assert!(message.contains("also listed in `hosts`"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_others_failures_do_not_slow_down_a_good_login() {
    let server = Server::start_with(&[("BATON_TRUSTED_PROXIES", "127.0.0.1/32")]);
    server.user_token("ada", &["--admin"]);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let login_from = |client: &'static str, user: &'static str, password: &'static str| {
        http.post(format!("{}/api/v1/login", server.api_url()))
            .header("x-forwarded-for", client)
            .json(&json!({"user": user, "password": password}))
            .send()
    };
    // Someone else, behind the same proxy, fails eight times (one after
    // the other, so each is counted).
    for i in 0..8 {
        let user = ["eve", "mallory"][i % 2];
        let answer = login_from("203.0.113.66", user, "not the password")
            .await
            .unwrap();
        assert_eq!(answer.status(), 401);
    }
    let started = Instant::now();
    let answer = login_from("203.0.113.7", "ada", "ada's long password")
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "ada waited {:?} for others' failures",
        started.elapsed()
    );
    // The attacker's own address is slowed down.
    let started = Instant::now();
    let answer = login_from("203.0.113.66", "trudy", "not the password")
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    // The audit log names the real client, not the proxy.
    let audit: Value = server
        .http()
        .get(format!("{}/api/v1/audit", server.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"].as_str().unwrap().starts_with("ada")
                && e["remote_address"] == "203.0.113.7"),
        "{audit}"
    );
}
