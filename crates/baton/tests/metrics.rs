//! `/metrics`: the proxy's figures per app, environment, release and
//! target, and the control plane's, in Prometheus' text format, scraped
//! by Debian's Prometheus.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};

use common::*;

/// Prometheus started for the test, scraping `api` every second with the
/// data folder's admin token; stopped (by pid) when dropped.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(api: std::net::SocketAddr, token: &str) -> Prometheus {
        Prometheus::start_on(free_port(), api, token)
    }

    fn start_on(port: u16, api: std::net::SocketAddr, token: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), token).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: baton\n    authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: ['{api}']\n",
            dir.path().join("token").display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let mut child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prometheus runs (Debian's prometheus; scripts/test installs it)");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Server is ready to receive web requests") => break,
                Some(Ok(_)) => {}
                other => panic!("prometheus exited before it was ready: {other:?}"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The value of an instant PromQL query, if it has one.
    async fn query(&self, promql: &str) -> Option<f64> {
        let answer: serde_json::Value = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", promql)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_proxy_figures_per_release() {
    let server = Server::start();
    let app = AppCopy::new("Hello, measured");
    app.set_env("FAIL_PERCENT", "10");
    let deployment = server.deploy(app.path());
    let release = &deployment["release_id"].as_str().unwrap()[..12];
    for _ in 0..100 {
        get_fresh(server.proxy, HOST, "/").await.unwrap();
    }

    // The text itself: needs a token like every other route.
    let anonymous = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/metrics", server.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let response = server
        .http()
        .get(format!("{}/metrics", server.api_url()))
        .send()
        .await
        .unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let labels = format!("app=\"hello\",environment=\"production\",release=\"{release}\"");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains(&labels))
            .unwrap_or_else(|| panic!("no {name} for {labels} in:\n{text}"))
            .to_string()
    };
    // 100 requests, 10 of them answered 500 by the app (health checks go
    // straight to the target, not through the proxy).
    assert!(
        line("baton_proxy_requests_total{").ends_with(" 100"),
        "{text}"
    );
    assert!(line("baton_proxy_responses_total{").contains("code=\"1xx\""));
    let fives = text
        .lines()
        .find(|l| {
            l.starts_with("baton_proxy_responses_total{")
                && l.contains(&labels)
                && l.contains("code=\"5xx\"")
        })
        .unwrap();
    assert!(fives.ends_with(" 10"), "{fives}");
    assert!(
        line("baton_proxy_response_seconds_bucket{").contains("le="),
        "{text}"
    );
    assert!(
        line("baton_proxy_response_seconds_count{").ends_with(" 100"),
        "{text}"
    );
    assert!(text.contains("baton_deployments_total{app=\"hello\",environment=\"production\",kind=\"deploy\",state=\"succeeded\"} 1"), "{text}");
    assert!(
        text.contains("# TYPE baton_proxy_response_seconds histogram"),
        "{text}"
    );

    // Prometheus scrapes it, and PromQL answers over it.
    let token = server.admin_token();
    let prometheus = Prometheus::start(server.api, &token);
    let rate = eventually(std::time::Duration::from_secs(30), "Prometheus has scraped Baton", || {
        block_on(prometheus.query(&format!(
            "sum(baton_proxy_responses_total{{app=\"hello\",code=\"5xx\",release=\"{release}\"}}) / sum(baton_proxy_requests_total{{app=\"hello\",release=\"{release}\"}})"
        )))
    })
    .await;
    assert!((rate - 0.1).abs() < 1e-9, "5xx share by PromQL: {rate}");
    let up = prometheus.query("up{job=\"baton\"}").await;
    assert_eq!(up, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promql_query_against_prometheus_aborts_a_canary() {
    let port = free_port();
    let prometheus_url = format!("http://127.0.0.1:{port}");
    let server = Server::start_with(&[("BATON_PROMETHEUS", &prometheus_url)]);
    let first = server.deploy(&example_dir());
    let old = first["release_id"].as_str().unwrap()[..12].to_string();
    let _prometheus = Prometheus::start_on(port, server.api, &server.admin_token());
    let load = Load::start(server.proxy, HOST, 16);
    load.wait_for_more(100);
    let bad = AppCopy::new("Hello, judged by Prometheus");
    bad.set_env("FAIL_PERCENT", "20");
    // The proxy's own analysis would let it through (100 %): the query
    // decides.
    bad.edit(
        "baton.toml",
        "[deploy]\n",
        "[deploy]\nstrategy = \"canary\"\nsteps = [\"50%\", \"pause 5m\", \"100%\"]\nmax_error_rate = \"100%\"\nquery = 'sum(baton_proxy_responses_total{app=\"{{app}}\",release=\"{{release}}\",code=\"5xx\"}) / sum(baton_proxy_requests_total{app=\"{{app}}\",release=\"{{release}}\"})'\nquery_max = 0.05\n",
    );
    let out = server.baton(&["deploy", bad.path().to_str().unwrap()]);
    assert!(!out.status.success(), "the canary is aborted");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("Prometheus answered") && said.contains("above query_max 0.05"),
        "{said}"
    );
    load.wait_for_more(200);
    let outcomes = load.stop().await;
    let deployments = server.json(&["deployments", "hello"]);
    let aborted_at = deployments[0]["finished_at"].as_i64().unwrap();
    assert!(outcomes
        .iter()
        .filter(|o| o.started > aborted_at)
        .all(|o| o.result.as_deref() == Ok(old.as_str())));
}
