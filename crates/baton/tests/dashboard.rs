//! The dashboard in a real browser: headless Chromium driven through
//! chromedriver by Python's selenium (installed from PyPI into a venv under
//! the target folder). The browser script (`dashboard/browser.py`) logs in,
//! deploys and watches, watches a bad release fail, continues a paused
//! preview, flips a flag, rolls back, filters the audit log, and checks a
//! viewer and a forged form; this test then checks the server's side of it.
//! Screenshots land in `docs/screenshots/`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

fn add_user(server: &Server, name: &str, role: &str, password: &str) {
    let mut child = Command::new(BIN)
        .args([
            "users",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            "--data",
        ])
        .arg(server.data())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_person_deploys_watches_flips_a_flag_and_rolls_back_in_the_browser() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: run ./scripts/test (it installs chromium and chromium-driver)"
        );
    }
    let python = selenium_python();
    let server = Server::start();
    // Two releases: v1 boots slowly in staging, so its deployment there is
    // still running when its page opens.
    let v1 = AppCopy::new("Hello, version one!");
    let manifest = v1.path().join("baton.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        format!("{text}env = {{ STARTUP_DELAY_MS = \"3000\" }}\n"),
    )
    .unwrap();
    let first = server.deploy(v1.path());
    let v2 = AppCopy::new("Hello, version two!");
    let second = server.deploy(v2.path());
    assert_eq!(second["state"], "succeeded");
    server.baton_ok(&[
        "flags",
        "create",
        "hello",
        "new-checkout",
        "--description",
        "The new checkout",
    ]);
    // A whole rule, for the flags page to show whole (and the audit log
    // to show as a change).
    let http = server.http();
    let api = server.api_url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime.block_on(async {
        http.patch(format!("{api}/api/v1/apps/hello/flags/new-checkout"))
            .json(&json!({
                "users": ["alice", "bob"],
                "constraints": [{"field": "country", "operator": "IN", "values": ["de", "fr"]}],
                "rollout": 30,
                "variants": [{"name": "blue", "weight": 1}, {"name": "green", "weight": 3}],
            }))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(answer.status(), 200);
    // A release that fails its health check, uploaded but never deployed:
    // the browser deploys it and watches it fail.
    let bad = AppCopy::new("Hello, broken version!");
    bad.set_env("FAIL_HEALTH", "1");
    bad.set_deploy("timeout", "2s");
    let package = baton_package::pack(bad.path()).unwrap();
    let answer = runtime.block_on(async {
        http.post(format!("{api}/api/v1/apps/hello/releases"))
            .header("content-type", "application/x-tar")
            .body(package.archive)
            .send()
            .await
            .unwrap()
    });
    assert_eq!(answer.status(), 201);

    add_user(&server, "ada", "admin", "ada's long password");
    add_user(&server, "vic", "viewer", "vic's long password");

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let config = json!({
        "base": server.api_url(),
        "ada": "ada's long password",
        "vic": "vic's long password",
        "v1": short(first["release_id"].as_str().unwrap()),
        "v2": short(second["release_id"].as_str().unwrap()),
        "bad": short(&package.id),
        "screenshots": shots,
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/browser.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(config.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["viewer_api"], 403);

    // The server's side: what the browser did happened, by ada.
    let http_token = {
        let out = Command::new(BIN)
            .args(["login", "ada", "--password-stdin"])
            .env("BATON_API", server.api_url())
            .env("HOME", server.data())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(b"ada's long password\n")?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        server.data()
    };
    let as_ada = |args: &[&str]| -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = Command::new(BIN)
            .args(&all)
            .env("BATON_API", server.api_url())
            .env("HOME", &http_token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let status = as_ada(&["status"]);
    let live = |environment: &str| {
        status
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["environment"] == environment)
            .map(|s| s["live"]["release_id"].clone())
            .unwrap()
    };
    assert_eq!(
        live("production"),
        first["release_id"],
        "the rollback put v1 back"
    );
    assert_eq!(
        live("staging"),
        second["release_id"],
        "v1 was deployed to staging, then v2 after its preview"
    );
    let deployments = as_ada(&["deployments", "hello"]);
    let by_ada: Vec<&Value> = deployments
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["actor"] == "ada")
        .collect();
    assert_eq!(
        by_ada.len(),
        4,
        "v1, the bad release and v2 to staging, the rollback: {deployments}"
    );
    let failed = deployments
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["release_id"] == package.id.as_str())
        .unwrap();
    assert_eq!(failed["state"], "failed", "{failed}");
    let flag = as_ada(&["flags", "get", "hello", "new-checkout"]);
    assert_eq!(flag["enabled"], true);
    for name in [
        "overview",
        "app",
        "deployment",
        "flags",
        "audit",
        "app-phone",
    ] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name}.png is not a PNG");
    }
}
