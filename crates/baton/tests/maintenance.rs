//! Maintenance mode: visitors get 503 with the message while the app keeps
//! running, through deploys and restarts, until it is turned off; audited.

mod common;

use common::*;

async fn get(server: &Server, accept: &str) -> (u16, String, Option<String>) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/", server.proxy))
        .header("host", HOST)
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, response.text().await.unwrap(), retry)
}

fn audited_actions(server: &Server) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(' '.join(r[0] for r in c.execute(\"SELECT action FROM audit_log WHERE action LIKE 'maintenance.%' ORDER BY id\")))")
        .arg(server.data().join("baton.db"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_answers_503_with_the_message_through_deploys_and_restarts() {
    let mut server = Server::start();
    server.deploy(&example_dir());
    let said = server.baton_ok(&[
        "maintenance",
        "on",
        "hello",
        "--message",
        "Back at 5 <b>pm</b>",
    ]);
    assert!(said.contains("is in maintenance"), "{said}");

    let (status, page, retry) = get(&server, "text/html").await;
    assert_eq!(status, 503);
    assert!(retry.is_some(), "Retry-After is set");
    assert!(
        page.contains("Back at 5 &lt;b&gt;pm&lt;/b&gt;"),
        "escaped in the page: {page}"
    );
    let (status, json, _) = get(&server, "application/json").await;
    assert_eq!(status, 503);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["error"]["code"], "maintenance");
    assert_eq!(json["error"]["message"], "Back at 5 <b>pm</b>");
    // The app keeps running; status says so, and why visitors get 503.
    assert_eq!(server.live()["running"], true);
    let status = server.json(&["status"]);
    assert_eq!(status[0]["maintenance"], "Back at 5 <b>pm</b>");
    assert!(server.baton_ok(&["status"]).contains("(maintenance)"));
    let overview = server
        .http()
        .get(format!("{}/", server.api_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        overview.contains("in maintenance: Back at 5 &#60;b&#62;pm&#60;/b&#62;"),
        "the dashboard says so, escaped: {overview}"
    );

    // A deploy and a restart keep it in maintenance.
    server.deploy(AppCopy::new("during maintenance").path());
    assert_eq!(get(&server, "*/*").await.0, 503);
    server.kill9();
    server.restart();
    assert_eq!(get(&server, "*/*").await.0, 503);

    let said = server.baton_ok(&["maintenance", "off", "hello"]);
    assert!(said.contains("served again"), "{said}");
    let (status, body, _) = get(&server, "*/*").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("during maintenance"), "{body}");
    assert_eq!(audited_actions(&server), "maintenance.on maintenance.off");
    assert!(server.json(&["status"])[0]["maintenance"].is_null());
    let events = server.json(&["events", "hello"]);
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("maintenance"))
        .collect();
    assert_eq!(kinds, ["maintenance_off", "maintenance_on"], "newest first");

    // Wrong input says what to do.
    let out = server.baton(&["maintenance", "on", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope has no route in production"), "{err}");
    let out = server.baton(&["maintenance", "off", "hello", "--message", "x"]);
    assert!(!out.status.success());
    let out = server.baton(&["maintenance", "maybe", "hello"]);
    assert!(!out.status.success());
}
