//! The dashboard's server-rendered pages over plain HTTP, against the real
//! server and CLI: what a page says and offers, and what a form sent anyway
//! gets. Pages are read with a bearer token (the dashboard accepts one);
//! forms are sent from a logged-in session with its CSRF token, as a
//! browser would. The browser itself is `dashboard.rs`.

mod common;

use std::time::Duration;

use common::*;
use reqwest::header;
use reqwest::redirect::Policy;
use serde_json::{json, Value};

/// A person logged in through the login form: a session cookie, and the
/// CSRF token its pages carry.
struct Session {
    client: reqwest::Client,
    base: String,
    cookie: String,
}

fn cookie_from(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// The value of the first hidden `csrf` input of a page.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF token in the page:\n{page}"));
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Session {
    /// Makes an account (`baton users add NAME EXTRA…`) and logs in as it
    /// through the dashboard's login form.
    async fn new(server: &Server, name: &str, extra: &[&str]) -> Session {
        server.user_token(name, extra);
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(Policy::none())
            .build()
            .unwrap();
        let base = server.api_url();
        let form = client.get(format!("{base}/login")).send().await.unwrap();
        let login_cookie = cookie_from(&form, "baton_login").expect("the login form sets a cookie");
        let csrf = csrf_of(&form.text().await.unwrap());
        let password = format!("{name}'s long password");
        let answer = client
            .post(format!("{base}/login"))
            .header(header::COOKIE, login_cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form_body(&[
                ("user", name),
                ("password", &password),
                ("csrf", &csrf),
            ]))
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_redirection(),
            "login of {name}: {}",
            answer.status()
        );
        let cookie = cookie_from(&answer, baton_auth::COOKIE).expect("a session cookie");
        Session {
            client,
            base,
            cookie,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Sends a form; returns the status, the page and where it redirects.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String, Option<String>) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form_body(fields))
            .send()
            .await
            .unwrap();
        let location = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (r.status().as_u16(), r.text().await.unwrap(), location)
    }
}

/// GET with a bearer token (the admin token unless another client is given).
async fn page(client: &reqwest::Client, server: &Server, path: &str) -> (u16, String, String) {
    let r = client
        .get(format!("{}{path}", server.api_url()))
        .send()
        .await
        .unwrap();
    let kind = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (r.status().as_u16(), kind, r.text().await.unwrap())
}

fn bearer(token: &str) -> reqwest::Client {
    let mut headers = header::HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// What is inside `<main>`: the page without its header (who is logged in).
fn main_of(page: &str) -> &str {
    let start = page.find("<main").expect("a <main>");
    let end = page.find("</main>").expect("a </main>");
    &page[start..end]
}

fn unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// The table row of a release in the app page's release history.
fn release_row<'a>(page: &'a str, release: &str) -> &'a str {
    let marker = format!(">{}</code>", short(release));
    page.split("<tr>")
        .find(|row| row.contains(&marker) && row.contains("KiB"))
        .unwrap_or_else(|| panic!("release {} is not in the history:\n{page}", short(release)))
}

async fn deployment(server: &Server, id: i64) -> Value {
    server
        .http()
        .get(format!("{}/api/v1/deployments/{id}", server.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_finished(server: &Server, id: i64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = deployment(server, id).await;
        if d["state"] == "succeeded" || d["state"] == "failed" {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deployment {id} never ended: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn failing_release() -> AppCopy {
    let bad = AppCopy::new("bad");
    bad.set_env("FAIL_HEALTH", "1");
    bad.set_deploy("timeout", "2s");
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_dashboard_paths_answer_a_page_and_unknown_api_paths_json() {
    let server = Server::start();
    let admin = server.http();
    let anonymous = reqwest::Client::builder()
        .no_proxy()
        .redirect(Policy::none())
        .build()
        .unwrap();
    for (client, paths) in [
        (
            &admin,
            &[
                "/builds",
                "/users",
                "/apps/hello/nosuch",
                "/deployments/abc",
            ][..],
        ),
        // Someone not logged in: not sent to log in for a page that does not exist.
        (&anonymous, &["/builds", "/users", "/apps/hello/nosuch"][..]),
    ] {
        for path in paths {
            let (status, kind, body) = page(client, &server, path).await;
            assert_eq!(status, 404, "{path}: {body}");
            assert!(
                kind.starts_with("text/html"),
                "{path} answered {kind}: {body}"
            );
            assert!(body.contains("<h1>Not found</h1>"), "{path}: {body}");
            assert!(body.contains("Back to the apps"), "{path}: {body}");
        }
    }
    let (_, _, body) = page(&admin, &server, "/builds").await;
    assert!(body.contains("There is no page at /builds."), "{body}");
    let (status, kind, body) = page(&admin, &server, "/api/v1/nosuch").await;
    assert_eq!(status, 404);
    assert!(kind.starts_with("application/json"), "{kind}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "not_found", "{body}");
    // The API and the flag clients' paths are still theirs.
    let (status, _, _) = page(&admin, &server, "/api/v1/status").await;
    assert_eq!(status, 200);
    let (status, _, body) = page(&anonymous, &server, "/api/client/features").await;
    assert_ne!(status, 404, "{body}");
    assert!(!body.contains("<h1>Not found</h1>"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_that_cannot_go_live_are_marked_not_offered_and_refused() {
    let server = Server::start();
    let gone = server.deploy(AppCopy::new("files gone").path())["release_id"]
        .as_str()
        .unwrap()
        .to_string();
    let good = server.deploy(AppCopy::new("good").path())["release_id"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = failing_release();
    let out = server.baton(&["deploy", bad.path().to_str().unwrap()]);
    assert!(!out.status.success(), "the bad release went live");
    let history = server.json(&["deployments", "hello"]);
    let failed = history[0]["id"].as_i64().unwrap();
    let bad = history[0]["release_id"].as_str().unwrap().to_string();
    // Its folder goes, as when the review app it ran in is closed.
    std::fs::remove_dir_all(server.data().join("releases").join(&gone)).unwrap();

    let ada = Session::new(&server, "ada", &["--role", "admin"]).await;
    let (status, app) = ada.get("/apps/hello").await;
    assert_eq!(status, 200, "{app}");
    let row = release_row(&app, &gone);
    assert!(row.contains("files removed"), "{row}");
    assert!(
        !row.contains("<button"),
        "a release without files is offered: {row}"
    );
    let row = release_row(&app, &bad);
    assert!(
        row.contains(&format!(
            "never went live: failed its health check in deployment {failed}"
        )),
        "{row}"
    );
    assert!(
        !row.contains("<button"),
        "a release that failed is offered: {row}"
    );
    let row = release_row(&app, &good);
    assert!(row.contains(">Deploy</button>"), "{row}");

    // The forms, sent anyway.
    let csrf = csrf_of(&app);
    for (release, why) in [
        (&gone, "its files were removed"),
        (&bad, "never went live: it failed its health check"),
    ] {
        let (status, page, _) = ada
            .post(
                "/apps/hello/deploy",
                &[
                    ("csrf", &csrf),
                    ("release", release),
                    ("environment", "staging"),
                ],
            )
            .await;
        assert_eq!(status, 409, "{page}");
        let said = unescape(&page);
        assert!(said.contains("Nothing was deployed: release "), "{said}");
        assert!(said.contains(why), "{said}");
    }
    let after = server.json(&["deployments", "hello"]);
    assert_eq!(
        after.as_array().unwrap().len(),
        history.as_array().unwrap().len()
    );

    // What went live is still offered, and deploys.
    let (status, _, location) = ada
        .post(
            "/apps/hello/deploy",
            &[
                ("csrf", &csrf),
                ("release", &good),
                ("environment", "staging"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    let id: i64 = location
        .unwrap()
        .trim_start_matches("/deployments/")
        .parse()
        .unwrap();
    assert_eq!(wait_finished(&server, id).await["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deployments_error_is_shown_once_as_written() {
    let server = Server::start();
    server.deploy(AppCopy::new("good").path());
    let out = server.baton(&["deploy", failing_release().path().to_str().unwrap()]);
    assert!(!out.status.success());
    let failed = &server.json(&["deployments", "hello"])[0];
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains('\n'), "the error spans lines: {error:?}");
    let (status, _, body) = page(
        &server.http(),
        &server,
        &format!("/deployments/{}", failed["id"]),
    )
    .await;
    assert_eq!(status, 200);
    let main = unescape(main_of(&body));
    let start = main
        .find("<pre id=\"error\"")
        .expect("the error in a <pre>");
    let shown = &main[start..];
    let shown = &shown[shown.find('>').unwrap() + 1..shown.find("</pre>").unwrap()];
    assert_eq!(shown, error, "the error is shown as written, lines and all");
    assert_eq!(
        main.matches("unhealthy on purpose").count(),
        1,
        "the error is shown once:\n{main}"
    );
    assert!(
        main.contains("health_check — failed</li>"),
        "the failed step says so without repeating the error:\n{main}"
    );
    assert!(main.contains(">failed</strong>"), "{main}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_deployment_names_who_started_it_not_who_opened_it() {
    let server = Server::start();
    server.deploy(AppCopy::new("first").path());
    let paused = server.json(&[
        "deploy",
        AppCopy::new("second").path().to_str().unwrap(),
        "--preview",
    ]);
    assert_eq!(paused["state"], "previewing");
    let started_by = paused["actor"].as_str().unwrap().to_string();
    let vic = bearer(&server.user_token("vic", &["--role", "viewer"]));
    let (status, _, body) = page(&vic, &server, &format!("/deployments/{}", paused["id"])).await;
    assert_eq!(status, 200);
    let main = unescape(main_of(&body));
    assert!(
        main.contains(&format!("started by {started_by},")),
        "the page names who started it:\n{main}"
    );
    assert!(!main.contains("vic"), "the page names its viewer:\n{main}");
    assert!(
        !main.contains("class=\"notice\""),
        "opening a page announces nothing, as if it had just been done:\n{main}"
    );
    assert!(
        !main.contains("/continue") && !main.contains("/abort"),
        "a viewer is offered to answer the preview:\n{main}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_preview_is_continued_or_aborted_from_its_page() {
    let server = Server::start();
    server.deploy(AppCopy::new("first").path());
    let preview = |message: &str| {
        server.json(&[
            "deploy",
            AppCopy::new(message).path().to_str().unwrap(),
            "--preview",
        ])
    };
    let second = preview("second");
    let id = second["id"].as_i64().unwrap();
    let ada = Session::new(&server, "ada", &["--role", "deployer"]).await;
    let (status, body) = ada.get(&format!("/deployments/{id}")).await;
    assert_eq!(status, 200);
    assert!(body.contains("Paused in preview"), "{body}");
    assert!(body.contains(">Continue</button>"), "{body}");
    assert!(body.contains(">Abort</button>"), "{body}");
    let csrf = csrf_of(&body);

    // A form without the session's token does nothing.
    let (status, page, _) = ada
        .post(
            &format!("/deployments/{id}/continue"),
            &[("csrf", "forged")],
        )
        .await;
    assert_eq!(status, 403, "{page}");
    assert_eq!(deployment(&server, id).await["state"], "previewing");

    let (status, _, location) = ada
        .post(&format!("/deployments/{id}/continue"), &[("csrf", &csrf)])
        .await;
    assert_eq!(status, 303);
    assert_eq!(
        location.as_deref(),
        Some(format!("/deployments/{id}").as_str())
    );
    assert_eq!(wait_finished(&server, id).await["state"], "succeeded");
    assert_eq!(server.live()["release_id"], second["release_id"]);
    // Answered once; a second answer is refused, saying why.
    let (status, page, _) = ada
        .post(&format!("/deployments/{id}/abort"), &[("csrf", &csrf)])
        .await;
    assert_eq!(status, 409);
    assert!(page.contains("is not waiting in preview"), "{page}");

    let third = preview("third");
    let aborted = third["id"].as_i64().unwrap();
    let (status, _, _) = ada
        .post(&format!("/deployments/{aborted}/abort"), &[("csrf", &csrf)])
        .await;
    assert_eq!(status, 303);
    let end = wait_finished(&server, aborted).await;
    assert_eq!(end["state"], "failed");
    assert!(
        end["error"]
            .as_str()
            .unwrap()
            .contains("aborted during preview"),
        "{end}"
    );
    assert_eq!(
        server.live()["release_id"],
        second["release_id"],
        "the live release stayed"
    );

    // Audited as the API audits them, by ada.
    let audit: Value = server
        .http()
        .get(format!("{}/api/v1/audit?app=hello", server.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (action, subject) in [
        ("deployment.continue", format!("deployment {id}")),
        ("deployment.abort", format!("deployment {aborted}")),
    ] {
        let entries: Vec<&Value> = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .collect();
        assert_eq!(entries.len(), 1, "{action}: {audit}");
        assert_eq!(entries[0]["actor"], "ada", "{audit}");
        assert_eq!(entries[0]["subject"], subject.as_str());
        assert_eq!(entries[0]["environment"], "production");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flags_page_shows_the_whole_rule() {
    let server = Server::start();
    server.deploy(&example_dir());
    let created = server
        .http()
        .post(format!("{}/api/v1/apps/hello/flags", server.api_url()))
        .json(&json!({
            "name": "new-checkout",
            "enabled": true,
            "users": ["alice", "bob"],
            "groups": ["staff"],
            "constraints": [
                {"field": "country", "operator": "IN", "values": ["de", "fr"]},
                {"field": "age", "operator": "NUM_GT", "value": "30", "inverted": true}
            ],
            "rollout": 30,
            "stickiness": "sessionId",
            "variants": [
                {"name": "blue", "weight": 1, "payload": {"type": "string", "value": "sky"}},
                {"name": "green", "weight": 3}
            ]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let (status, _, body) = page(&server.http(), &server, "/flags").await;
    assert_eq!(status, 200);
    let main = unescape(main_of(&body));
    for words in [
        "Users:</span> alice, bob",
        "Groups:</span> staff",
        "Everyone else:</span> when country IN [de, fr]; and age NOT NUM_GT 30; and 30 % of them, sticky on sessionId",
        "<code>blue</code> weight 1 (25 %), string payload sky, sticky on sessionId",
        "<code>green</code> weight 3 (75 %), sticky on sessionId",
    ] {
        assert!(main.contains(words), "{words:?} is not on the page:\n{main}");
    }
}

/// The rows of the audit page's table.
fn audit_rows(page: &str) -> Vec<&str> {
    let Some(body) = page.split("<tbody>").nth(1) else {
        return Vec::new();
    };
    body.split("</tbody>")
        .next()
        .unwrap()
        .split("<tr>")
        .skip(1)
        .collect()
}

fn link(page: &str, text: &str) -> String {
    let end = page
        .find(&format!("\">{text}</a>"))
        .unwrap_or_else(|| panic!("no {text:?} link:\n{page}"));
    let start = page[..end].rfind("href=\"").unwrap() + "href=\"".len();
    unescape(&page[start..end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_reads_as_words_filters_and_pages() {
    let server = Server::start();
    server.deploy(&example_dir());
    server.baton_ok(&["flags", "create", "hello", "f"]);
    let http = server.http();
    let vic = bearer(&server.user_token("vic", &["--role", "admin"]));
    for n in 0..60 {
        let who = if n % 10 == 0 { &vic } else { &http };
        let answer = who
            .patch(format!("{}/api/v1/apps/hello/flags/f", server.api_url()))
            .json(&json!({"enabled": n % 2 == 0}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let all: Value = http
        .get(format!("{}/api/v1/audit?limit=1000", server.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total = all.as_array().unwrap().len();
    assert!(total > 60, "{total}");

    let (status, _, first) = page(&http, &server, "/audit").await;
    assert_eq!(status, 200);
    let rows = audit_rows(&first);
    assert_eq!(rows.len(), 50, "50 entries a page");
    assert!(
        rows[0].contains("flag.disable") && rows[0].contains("enabled:</span> true → false"),
        "the newest entry, as a change:\n{}",
        rows[0]
    );
    assert!(
        !first.contains("&#34;after&#34;") && !first.contains("\"after\""),
        "raw JSON on the page"
    );
    assert!(
        !first.contains("← Newer"),
        "the newest page has nothing newer"
    );
    let older = link(&first, "Older →");
    let (_, _, second) = page(&http, &server, &older).await;
    assert_eq!(audit_rows(&second).len(), total - 50);
    assert!(
        !second.contains("Older →"),
        "the last page has nothing older"
    );
    let newer = link(&second, "← Newer");
    let (_, _, again) = page(&http, &server, &newer).await;
    assert_eq!(audit_rows(&again), rows, "back to the same first page");

    // Filters, each kept by the pages they lead to.
    let (_, _, enabled) = page(&http, &server, "/audit?action=flag.enable").await;
    let rows = audit_rows(&enabled);
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|r| r.contains("flag.enable")));
    let (_, _, flags) = page(&http, &server, "/audit?action=flag&app=hello").await;
    assert_eq!(audit_rows(&flags).len(), 50);
    let older = link(&flags, "Older →");
    assert!(
        older.contains("action=flag") && older.contains("app=hello"),
        "{older}"
    );
    let (_, _, rest) = page(&http, &server, &older).await;
    let flag_entries = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("flag."))
        .count();
    assert!(flag_entries > 60, "60 changes and the creation: {all}");
    assert_eq!(audit_rows(&rest).len(), flag_entries - 50, "{older}");
    let (_, _, by_vic) = page(&http, &server, "/audit?actor=vic%20(token%20cli)").await;
    let rows = audit_rows(&by_vic);
    assert_eq!(rows.len(), 6, "{by_vic}");
    assert!(
        by_vic.contains("<option value=\"vic (token cli)\" selected>"),
        "{by_vic}"
    );
    let (_, _, none) = page(&http, &server, "/audit?environment=staging").await;
    assert!(audit_rows(&none).is_empty());
    assert!(none.contains("No entries match these filters."), "{none}");
    let (status, _, wrong) = page(&http, &server, "/audit?before=yesterday").await;
    assert_eq!(status, 400);
    assert!(
        unescape(&wrong).contains("before=\"yesterday\" is not an audit entry id"),
        "{wrong}"
    );
}
