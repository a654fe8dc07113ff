//! Flags through the real server and CLI: changes audited with who made
//! them, flags only for apps Baton knows, flags.toml applied on deploy and
//! by `baton flags apply`, drift shown by `baton flags diff`, every kind of
//! bad input answered with the status and body its protocol specifies
//! (OFREP, Unleash) or a message naming the file and field, the OFREP bulk
//! ETag, and CORS for browser clients of allowed origins.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// The CLI as `actor`, an account (made on first use) with its own token.
fn baton_as(server: &Server, actor: &str, args: &[&str]) -> std::process::Output {
    let tokens = server.dir.path().join(format!("token-{actor}"));
    let token = std::fs::read_to_string(&tokens).unwrap_or_else(|_| {
        let token = server.user_token(actor, &["--role", "deployer"]);
        std::fs::write(&tokens, &token).unwrap();
        token
    });
    Command::new(BIN)
        .args(args)
        .env("BATON_API", server.api_url())
        .env("BATON_TOKEN", token)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deploys the example app, so the server knows `hello` (flags belong to
/// an app with a release).
fn with_hello(server: &Server) -> &'static str {
    assert_eq!(server.deploy(&example_dir())["state"], "succeeded");
    "hello"
}

#[test]
fn flags_of_an_app_baton_does_not_know_are_refused() {
    let server = Server::start();
    let out = server.baton(&["flags", "create", "nosuchapp", "x"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let message = stderr(&out);
    assert!(message.contains("no app \"nosuchapp\""), "{message}");
    assert!(message.contains("baton deploy"), "{message}");
    let out = server.baton(&["flags", "keys", "create", "nosuchapp", "web"]);
    assert!(!out.status.success(), "{}", stdout(&out));

    let app = with_hello(&server);
    let out = server.baton(&["flags", "create", "helo", "x"]);
    assert!(
        stderr(&out).contains("known apps: hello"),
        "{}",
        stderr(&out)
    );
    server.baton_ok(&["flags", "create", app, "x"]);
    assert_eq!(
        server.json(&["flags", "audit", "nosuchapp"]),
        json!([]),
        "nothing was recorded for the refused app"
    );
}

#[test]
fn cli_changes_are_audited_with_actor_and_address() {
    let server = Server::start();
    with_hello(&server);
    let out = baton_as(
        &server,
        "alice",
        &[
            "flags",
            "create",
            "hello",
            "checkout",
            "--rollout",
            "30",
            "--users",
            "bob,carol",
            "-e",
            "staging",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hello/staging/checkout: off"), "{text}");
    assert!(text.contains("users bob,carol; 30 % by userId"), "{text}");

    assert!(baton_as(
        &server,
        "dave",
        &["flags", "enable", "hello", "checkout", "-e", "staging"]
    )
    .status
    .success());
    let out = baton_as(
        &server,
        "dave",
        &[
            "flags",
            "set",
            "hello",
            "checkout",
            "-e",
            "staging",
            "--constraint",
            "country IN FR,BE",
            "--no-rollout",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let flag = server.json(&["flags", "get", "hello", "checkout", "-e", "staging"]);
    assert_eq!(flag["enabled"], true);
    assert_eq!(flag["users"], json!(["bob", "carol"]));
    assert_eq!(flag["rollout"], Value::Null);
    assert_eq!(
        flag["constraints"],
        json!([{"field": "country", "operator": "IN", "values": ["FR", "BE"]}])
    );
    let list = server.json(&["flags", "list", "hello", "-e", "staging"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        server.json(&["flags", "list", "hello"]),
        json!([]),
        "production is separate"
    );

    // Refusals name what is wrong and change nothing.
    let out = server.baton(&["flags", "create", "hello", "checkout", "-e", "staging"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already has flag \"checkout\""),
        "{}",
        stderr(&out)
    );
    let out = server.baton(&[
        "flags",
        "set",
        "hello",
        "checkout",
        "-e",
        "staging",
        "--constraint",
        "version SEMVER_GT",
    ]);
    assert!(
        stderr(&out).contains("FIELD OPERATOR VALUE"),
        "{}",
        stderr(&out)
    );
    let out = server.baton(&[
        "flags",
        "set",
        "hello",
        "checkout",
        "-e",
        "staging",
        "--constraint",
        "age LIKE 3",
    ]);
    assert!(
        stderr(&out).contains("unknown operator \"LIKE\""),
        "{}",
        stderr(&out)
    );
    let out = server.baton(&["flags", "enable", "hello", "nope"]);
    assert!(
        stderr(&out).contains("no flag \"nope\""),
        "{}",
        stderr(&out)
    );

    assert!(baton_as(
        &server,
        "erin",
        &["flags", "delete", "hello", "checkout", "-e", "staging"]
    )
    .status
    .success());
    let log = server.json(&["flags", "audit", "hello"]);
    let entries: Vec<(&str, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        entries,
        [
            ("erin (token cli)", "flag.delete"),
            ("dave (token cli)", "flag.update"),
            ("dave (token cli)", "flag.enable"),
            ("alice (token cli)", "flag.create")
        ]
    );
    assert_eq!(log[0]["remote_address"], "127.0.0.1");
    assert_eq!(log[0]["subject"], "flag hello/staging/checkout");
    assert_eq!(log[1]["detail"]["before"]["rollout"], 30);
    assert_eq!(log[1]["detail"]["after"]["rollout"], Value::Null);

    // The deploy and the tokens made above are not flag changes; a key is.
    server.baton_ok(&[
        "flags",
        "keys",
        "create",
        "hello",
        "web",
        "--origin",
        "https://shop.example",
    ]);
    let text = server.baton_ok(&["flags", "audit", "hello"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("api_key.create"), "{text}");
    assert!(
        lines[1].contains("key web (baton_")
            && lines[1].contains("web origins https://shop.example"),
        "{text}"
    );
    assert!(
        !text.contains("deploy") && !text.contains("token."),
        "{text}"
    );
    assert!(
        text.contains("flag.update flag hello/staging/checkout"),
        "{text}"
    );
    assert!(text.contains("    rollout: 30 % → (none)"), "{text}");
    assert!(
        text.contains("    constraints: (none) → country IN FR,BE"),
        "{text}"
    );
    assert!(text.contains("    enabled: off → on"), "{text}");
    assert!(
        text.contains("    created: off, users bob,carol; 30 % by userId"),
        "{text}"
    );
    assert!(
        text.contains("    was: on, users bob,carol; country IN FR,BE"),
        "{text}"
    );
    let newest_first: Vec<usize> = ["flag.delete", "flag.update", "flag.enable", "flag.create"]
        .iter()
        .map(|action| text.find(action).unwrap())
        .collect();
    assert!(newest_first.windows(2).all(|w| w[0] < w[1]), "{text}");
}

fn app_with_flags(flags: &str) -> AppCopy {
    let app = AppCopy::new("flags");
    std::fs::write(app.path().join("flags.toml"), flags).unwrap();
    app
}

const FLAGS: &str = r#"
[flags.new-checkout]
description = "One-page checkout"
enabled = true
users = ["alice"]
rollout = 10

[flags.new-checkout.environments.production]
rollout = 5

[flags.dark-mode]
enabled = false
"#;

#[test]
fn flags_toml_is_applied_on_deploy_and_by_apply_and_diff_shows_drift() {
    let server = Server::start();
    let app = app_with_flags(FLAGS);
    let dir = app.path().to_str().unwrap();
    let output = server.baton_ok(&["deploy", dir]);
    assert!(
        output.lines().any(|line| line.starts_with("  ✓ flags ")
            && line
                .ends_with("flags.toml: 2 created, 0 updated, 0 only on the server (left alone)")),
        "the deploy says what it did to the flags:\n{output}"
    );
    assert!(
        output.find("flags.toml:").unwrap() < output.find("Done:").unwrap(),
        "{output}"
    );
    let flag = server.json(&["flags", "get", "hello", "new-checkout"]);
    assert_eq!(flag["rollout"], 5, "production's override");
    assert_eq!(flag["users"], json!(["alice"]));
    let events = server.json(&["events", "hello"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "flags_applied"
                && e["message"].as_str().unwrap().contains("2 created")),
        "{events}"
    );
    let log = server.json(&["flags", "audit", "hello"]);
    assert_eq!(log[0]["actor"], "baton deploy");
    // A deploy of the same flags changes none, and says so too.
    let again = AppCopy::new("Same flags, new code");
    std::fs::write(again.path().join("flags.toml"), FLAGS).unwrap();
    let output = server.baton_ok(&["deploy", again.path().to_str().unwrap()]);
    assert!(
        output.contains("flags.toml: 0 created, 0 updated"),
        "{output}"
    );
    // A release without flags.toml leaves the flags alone and says nothing.
    let output = server.baton_ok(&["deploy", example_dir().to_str().unwrap()]);
    assert!(!output.contains("flags.toml"), "{output}");

    let out = server.baton(&["flags", "diff", dir]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Drift: a change by hand, and a flag only on the server.
    server.baton_ok(&[
        "flags",
        "set",
        "hello",
        "new-checkout",
        "--rollout",
        "50",
        "--users",
        "alice,bob",
        "--constraint",
        "country IN FR,BE",
    ]);
    server.baton_ok(&["flags", "create", "hello", "by-hand"]);
    let out = server.baton(&["flags", "diff", dir]);
    assert_eq!(out.status.code(), Some(1), "drift makes diff exit 1");
    let text = String::from_utf8_lossy(&out.stdout);
    // One line per flag and field, server → file, in words, not JSON.
    assert!(
        text.contains("~ new-checkout  rollout: 50 % → 5 %"),
        "{text}"
    );
    assert!(
        text.contains("~ new-checkout  users: alice, bob → alice"),
        "{text}"
    );
    assert!(
        text.contains("~ new-checkout  constraints: country IN FR,BE → (none)"),
        "{text}"
    );
    assert!(
        text.contains("? by-hand  only on the server: off, everyone"),
        "{text}"
    );
    assert!(
        !text.contains('{') && !text.contains('['),
        "no JSON: {text}"
    );
    let raw: Value =
        serde_json::from_slice(&server.baton(&["flags", "diff", dir, "--json"]).stdout).unwrap();
    assert_eq!(raw["changes"][0]["server"]["rollout"], 50, "{raw}");

    server.baton_ok(&["flags", "apply", dir]);
    assert_eq!(
        server.json(&["flags", "get", "hello", "new-checkout"])["rollout"],
        5
    );
    assert_eq!(server.baton(&["flags", "diff", dir]).status.code(), Some(0));
    server.baton_ok(&["flags", "apply", dir, "--prune"]);
    let names: Vec<Value> = server
        .json(&["flags", "list", "hello"])
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].clone())
        .collect();
    assert_eq!(names, [json!("dark-mode"), json!("new-checkout")]);

    // Staging gets the shared settings.
    server.baton_ok(&["flags", "apply", dir, "-e", "staging"]);
    assert_eq!(
        server.json(&["flags", "get", "hello", "new-checkout", "-e", "staging"])["rollout"],
        10
    );
}

#[test]
fn an_invalid_flags_toml_is_refused_naming_file_line_and_field() {
    let server = Server::start();
    let app = app_with_flags("[flags.a]\nenabled = true\nrollout = 130\n");
    let dir = app.path().to_str().unwrap();
    let out = server.baton(&["flags", "apply", dir]);
    assert!(!out.status.success());
    let file = app.path().join("flags.toml");
    let expected = format!("{}:3:11: field `flags.a.rollout`", file.display());
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    assert!(stderr(&out).contains("0 to 100"), "{}", stderr(&out));

    // A release carrying it is refused before it is recorded or deployed.
    let out = server.baton(&["deploy", dir]);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains("flags.toml (release "), "{message}");
    assert!(
        message.contains(":3:11: field `flags.a.rollout`"),
        "{message}"
    );
    assert_eq!(server.json(&["releases", "hello"]), json!([]));
}

struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    fn new(server: &Server) -> Http {
        Http {
            base: server.api_url(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body.to_string());
        if let Some(key) = key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_status_and_body_the_protocol_specifies() {
    let server = Server::start();
    with_hello(&server);
    server.baton_ok(&[
        "flags",
        "create",
        "hello",
        "beta",
        "--enabled",
        "true",
        "--users",
        "alice",
    ]);
    server.baton_ok(&[
        "flags",
        "create",
        "hello",
        "gradual",
        "--enabled",
        "true",
        "--rollout",
        "30",
    ]);
    let key = server.json(&["flags", "keys", "create", "hello", "web"]);
    let key = key["key"].as_str().unwrap().to_string();
    let other = server.json(&["flags", "keys", "create", "hello", "old"]);
    let http = Http::new(&server);
    let single = "/ofrep/v1/evaluate/flags/beta";
    let bulk = "/ofrep/v1/evaluate/flags";

    let (status, body, _) = http
        .post(
            single,
            Some(&key),
            r#"{"context": {"targetingKey": "alice"}}"#,
        )
        .await;
    assert_eq!(
        (status, &body["value"], &body["reason"]),
        (200, &json!(true), &json!("TARGETING_MATCH"))
    );

    let (status, body, _) = http
        .post(
            "/ofrep/v1/evaluate/flags/nope",
            Some(&key),
            r#"{"context": {"targetingKey": "a"}}"#,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["key"], "nope");
    assert_eq!(body["errorCode"], "FLAG_NOT_FOUND");
    assert!(body["errorDetails"].as_str().unwrap().contains("nope"));

    // Without a targeting key: a listed user cannot be this context, so
    // the answer is "off", as Unleash's SDK says; a sticky 30 % depends on
    // the key, so that is the error.
    let (status, body, _) = http
        .post(single, Some(&key), r#"{"context": {"country": "FR"}}"#)
        .await;
    assert_eq!(
        (status, &body["value"], &body["reason"]),
        (200, &json!(false), &json!("DEFAULT"))
    );
    let (status, body, _) = http
        .post(
            "/ofrep/v1/evaluate/flags/gradual",
            Some(&key),
            r#"{"context": {"country": "FR"}}"#,
        )
        .await;
    assert_eq!(
        (status, &body["errorCode"], &body["key"]),
        (400, &json!("TARGETING_KEY_MISSING"), &json!("gradual"))
    );
    assert!(body["errorDetails"]
        .as_str()
        .unwrap()
        .contains("targetingKey"));
    // A targeting key that is not a string is refused, not coerced.
    for context in [
        r#"{"context": {"targetingKey": 42}}"#,
        r#"{"context": {"targetingKey": true}}"#,
    ] {
        let (status, body, _) = http.post(single, Some(&key), context).await;
        assert_eq!(
            (status, &body["errorCode"], &body["key"]),
            (400, &json!("INVALID_CONTEXT"), &json!("beta")),
            "{context}"
        );
        assert!(body["errorDetails"]
            .as_str()
            .unwrap()
            .contains("`targetingKey` must be a string"));
        let (status, body, _) = http.post(bulk, Some(&key), context).await;
        assert_eq!(
            (status, &body["errorCode"]),
            (400, &json!("INVALID_CONTEXT"))
        );
    }

    let (status, body, _) = http.post(single, Some(&key), r#"{"context": {"#).await;
    assert_eq!((status, &body["errorCode"]), (400, &json!("PARSE_ERROR")));
    let (status, body, _) = http.post(bulk, Some(&key), "not json").await;
    assert_eq!((status, &body["errorCode"]), (400, &json!("PARSE_ERROR")));
    assert_eq!(body.get("key"), None, "bulk failures carry no key");

    let (status, body, _) = http
        .post(
            single,
            Some(&key),
            r#"{"context": {"targetingKey": "a", "roles": ["x"]}}"#,
        )
        .await;
    assert_eq!(
        (status, &body["errorCode"]),
        (400, &json!("INVALID_CONTEXT"))
    );
    assert!(body["errorDetails"].as_str().unwrap().contains("`roles`"));

    let (status, body, _) = http.post(single, None, "{}").await;
    assert_eq!(status, 401);
    assert!(body["errorDetails"]
        .as_str()
        .unwrap()
        .contains("no API key"));
    let (status, _, _) = http.post(single, Some("baton_wrong"), "{}").await;
    assert_eq!(status, 401);
    server.baton_ok(&["flags", "keys", "revoke", "hello", &other["id"].to_string()]);
    let (status, body, _) = http
        .post(single, Some(other["key"].as_str().unwrap()), "{}")
        .await;
    assert_eq!(status, 403);
    assert!(body["errorDetails"].as_str().unwrap().contains("revoked"));

    // Bulk: per-flag errors inside a 200, then 304 while nothing changes.
    let (status, body, headers) = http.post(bulk, Some(&key), r#"{"context": {}}"#).await;
    assert_eq!(status, 200);
    assert_eq!(body["flags"][0]["value"], false, "beta: {body}");
    assert_eq!(body["flags"][1]["errorCode"], "TARGETING_KEY_MISSING");
    let context = r#"{"context": {"targetingKey": "alice", "country": "FR"}}"#;
    let (_, body, headers_alice) = http.post(bulk, Some(&key), context).await;
    assert_eq!(body["flags"][0]["value"], true);
    assert_eq!(body["eventStreams"][0]["type"], "sse");
    let etag = headers_alice["etag"].to_str().unwrap().to_string();
    assert_ne!(headers["etag"], etag, "another answer, another tag");
    let conditional = |tag: &str, context: &'static str| {
        http.client
            .post(format!("{}{bulk}", http.base))
            .header("Authorization", format!("Bearer {key}"))
            .header("If-None-Match", tag)
            .body(context)
            .send()
    };
    let status = |response: reqwest::Response| response.status().as_u16();
    assert_eq!(status(conditional(&etag, context).await.unwrap()), 304);
    // The tag is the answer's: the same context written in another order,
    // or with an attribute no rule reads, gives the same answer.
    let reordered = r#"{"context": {"country": "FR", "targetingKey": "alice"}}"#;
    assert_eq!(status(conditional(&etag, reordered).await.unwrap()), 304);
    let other_attribute = r#"{"context": {"targetingKey": "alice", "plan": "pro"}}"#;
    assert_eq!(
        status(conditional(&etag, other_attribute).await.unwrap()),
        304
    );
    assert_eq!(
        status(conditional(&format!("W/{etag}"), context).await.unwrap()),
        304
    );
    assert_eq!(
        status(conditional("\"other\", *", context).await.unwrap()),
        304
    );
    let response = conditional("*", context).await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        304,
        "* matches a current answer"
    );
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    // A change that does not show in the answer keeps the tag.
    server.baton_ok(&[
        "flags",
        "set",
        "hello",
        "beta",
        "--description",
        "Beta programme",
    ]);
    assert_eq!(status(conditional(&etag, context).await.unwrap()), 304);
    server.baton_ok(&["flags", "disable", "hello", "beta"]);
    let response = conditional(&etag, context).await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "a change makes a new tag");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (&body["flags"][0]["value"], &body["flags"][0]["reason"]),
        (&json!(false), &json!("DISABLED"))
    );

    // Unleash's client API.
    let features = format!("{}/api/client/features", http.base);
    let response = http.client.get(&features).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = http
        .client
        .get(&features)
        .header("Authorization", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let tag = response.headers()["etag"].clone();
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["features"][0]["name"], "beta");
    assert_eq!(document["features"][0]["description"], "Beta programme");
    let response = http
        .client
        .get(&features)
        .header("Authorization", &key)
        .header("If-None-Match", tag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 304);
    let metrics = format!("{}/api/client/metrics", http.base);
    let response = http
        .client
        .post(&metrics)
        .header("Authorization", &key)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("not valid JSON"));
    let response = http
        .client
        .post(format!("{}/api/client/register", http.base))
        .header("Authorization", &key)
        .json(&json!({"appName": "x", "instanceId": "y", "strategies": ["default"], "started": "2026-01-01T00:00:00Z", "interval": 15000}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);

    // The admin API answers its own error shape.
    let response = http
        .client
        .post(format!("{}/api/v1/apps/hello/flags", http.base))
        .bearer_auth(server.admin_token())
        .body(r#"{"name": "x", "rollout": "lots"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("field `rollout`"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_stream_announces_each_change() {
    let server = Server::start();
    with_hello(&server);
    server.baton_ok(&["flags", "create", "hello", "beta"]);
    let key = server.json(&["flags", "keys", "create", "hello", "web"]);
    let key = key["key"].as_str().unwrap().to_string();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let stream = client
        .get(format!("{}/ofrep/v1/events", server.api_url()))
        .header("Authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    let mut stream = stream;
    if stream.status().as_u16() != 200 {
        let status = stream.status();
        let text = stream.text().await.unwrap();
        panic!("{status}: {text}");
    }
    let mut seen = String::new();
    let first = next_event(&mut stream, &mut seen).await;
    assert_eq!(first["type"], "refetchEvaluation", "one on connecting");
    server.baton_ok(&["flags", "enable", "hello", "beta"]);
    let second = next_event(&mut stream, &mut seen).await;
    assert_eq!(second["type"], "refetchEvaluation");
    assert_ne!(first["etag"], second["etag"]);

    // An open stream does not hold up a graceful stop.
    let mut server = server;
    let mut child = server.child.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not stop within 10 s of SIGTERM");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), stream.chunk()).await;
    assert!(
        matches!(ended, Ok(Ok(None)) | Ok(Err(_))),
        "the stream ended"
    );
}

/// The data of the next server-sent event, as JSON.
async fn next_event(stream: &mut reqwest::Response, seen: &mut String) -> Value {
    loop {
        if let Some(end) = seen.find("\n\n") {
            let event: String = seen.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) {
                return serde_json::from_str(data.trim()).unwrap();
            }
            continue;
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Every value of a response header, joined.
fn header_values(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_pages_of_a_keys_origins_may_call_ofrep_and_no_other_page_may() {
    let server = Server::start();
    with_hello(&server);
    server.baton_ok(&["flags", "create", "hello", "beta", "--enabled", "true"]);
    let shop = server.json(&[
        "flags",
        "keys",
        "create",
        "hello",
        "web",
        "--origin",
        "https://Shop.example:443",
        "--origin",
        "http://localhost:3000",
    ]);
    assert_eq!(
        shop["origins"],
        json!(["https://shop.example", "http://localhost:3000"]),
        "stored as browsers send them"
    );
    let shop_key = shop["key"].as_str().unwrap().to_string();
    let backend = server.json(&["flags", "keys", "create", "hello", "backend"]);
    let backend_key = backend["key"].as_str().unwrap().to_string();
    let list = server.baton_ok(&["flags", "keys", "list", "hello"]);
    assert!(
        list.contains("https://shop.example, http://localhost:3000"),
        "{list}"
    );
    let out = server.baton(&[
        "flags",
        "keys",
        "create",
        "hello",
        "x",
        "--origin",
        "shop.example/app",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`origins[0]`") && stderr(&out).contains("https://shop.example"),
        "{}",
        stderr(&out)
    );

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let bulk = format!("{}/ofrep/v1/evaluate/flags", server.api_url());
    let single = format!("{}/ofrep/v1/evaluate/flags/beta", server.api_url());
    let preflight = |url: &str, origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type,if-none-match",
            )
            .send()
    };
    for url in [&bulk, &single] {
        let response = preflight(url, "https://shop.example").await.unwrap();
        assert_eq!(response.status().as_u16(), 204, "{url}");
        assert_eq!(
            header_values(&response, "access-control-allow-origin"),
            "https://shop.example"
        );
        assert!(header_values(&response, "access-control-allow-methods").contains("POST"));
        let allowed = header_values(&response, "access-control-allow-headers");
        for needed in ["Authorization", "Content-Type", "If-None-Match"] {
            assert!(allowed.contains(needed), "{allowed}");
        }
        assert!(!header_values(&response, "access-control-max-age").is_empty());
        assert!(header_values(&response, "vary").contains("Origin"));
    }
    let refused = preflight(&bulk, "https://evil.example").await.unwrap();
    assert_eq!(
        header_values(&refused, "access-control-allow-origin"),
        "",
        "an origin no key allows gets no CORS header"
    );
    assert_ne!(refused.status().as_u16(), 204);

    let post = |key: &str, origin: &str, etag: Option<&str>| {
        let mut request = client
            .post(&bulk)
            .header("Authorization", format!("Bearer {key}"))
            .header("Origin", origin)
            .header("Content-Type", "application/json")
            .body(r#"{"context": {"targetingKey": "u1"}}"#);
        if let Some(etag) = etag {
            request = request.header("If-None-Match", etag);
        }
        request.send()
    };
    let response = post(&shop_key, "http://localhost:3000", None)
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        header_values(&response, "access-control-allow-origin"),
        "http://localhost:3000"
    );
    assert_eq!(
        header_values(&response, "access-control-expose-headers"),
        "ETag"
    );
    assert!(header_values(&response, "vary").contains("Origin"));
    let etag = header_values(&response, "etag");
    let unchanged = post(&shop_key, "http://localhost:3000", Some(&etag))
        .await
        .unwrap();
    assert_eq!(unchanged.status().as_u16(), 304);
    assert_eq!(
        header_values(&unchanged, "access-control-allow-origin"),
        "http://localhost:3000",
        "a 304 is readable too"
    );
    // Another page with the same key, or the same page with a key that does
    // not list it: the answer is sent, but the browser withholds it.
    for (key, origin) in [
        (&shop_key, "https://evil.example"),
        (&backend_key, "https://shop.example"),
    ] {
        let response = post(key, origin, None).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            header_values(&response, "access-control-allow-origin"),
            "",
            "{origin}"
        );
    }
    // A revoked key's origins are no longer allowed.
    server.baton_ok(&["flags", "keys", "revoke", "hello", &shop["id"].to_string()]);
    let response = preflight(&bulk, "https://shop.example").await.unwrap();
    assert_eq!(header_values(&response, "access-control-allow-origin"), "");
}
