//! "A new version is live": pages of an app with `[proxy] live_updates`
//! learn of a deploy from the proxy's `/_baton/events`, and its script
//! shows the banner, in two real browsers (headless Chromium).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn live_app(message: &str) -> AppCopy {
    let app = AppCopy::new(message);
    app.append("[proxy]\nlive_updates = true");
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_name_the_release_and_the_script_is_served() {
    let server = Server::start();
    let first = server.deploy(live_app("one").path());
    let (status, script) = get_fresh(server.proxy, HOST, "/_baton/live.js")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        script.contains("EventSource(\"/_baton/events\")"),
        "{script}"
    );
    let mut stream = tokio::net::TcpStream::connect(server.proxy).await.unwrap();
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    stream
        .write_all(format!("GET /_baton/events HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    // The release that serves this client, as the next `release` event says.
    async fn told(reader: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            if let Some(release) = line.trim_end().strip_prefix("data: ") {
                return release.to_string();
            }
        }
    }
    let before = told(&mut reader).await;
    // Connected and told: now a deploy.
    server.deploy(live_app("two").path());
    let after = told(&mut reader).await;
    assert_eq!(before, first["release_id"].as_str().unwrap());
    assert_ne!(after, before);
    // Without live_updates the paths are the app's own.
    let plain = AppCopy::new("three");
    server.deploy(plain.path());
    let (status, _) = get_fresh(server.proxy, HOST, "/_baton/live.js")
        .await
        .unwrap();
    assert_eq!(status, 200, "the example app answers every path");
    let (_, body) = get_fresh(server.proxy, HOST, "/_baton/live.js")
        .await
        .unwrap();
    assert!(body.contains("three"), "{body}");
}

#[test]
fn two_browsers_show_the_new_version_within_a_second_of_the_switch() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: run ./scripts/test"
        );
    }
    let python = selenium_python();
    let server = Server::start();
    server.deploy(live_app("Hello, version one").path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/live_browsers.py");
    let mut browsers = Command::new(&python)
        .arg(&script)
        .arg(format!(
            "http://hello.localhost:{}/page",
            server.proxy.port()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(browsers.stdout.take().unwrap()).lines();
    let ready = out.next().unwrap().unwrap();
    assert_eq!(ready, "ready", "{ready}");
    let deployment = server.deploy(live_app("Hello, version two").path());
    let (_, switched) = switch_window(&deployment);
    writeln!(browsers.stdin.take().unwrap(), "deployed").unwrap();
    let report: serde_json::Value = serde_json::from_str(&out.next().unwrap().unwrap()).unwrap();
    assert!(browsers.wait().unwrap().success(), "{report}");
    let release = deployment["release_id"].as_str().unwrap();
    for shown in report["shown"].as_array().unwrap() {
        let at = shown[0].as_f64().unwrap() as i64;
        assert_eq!(shown[1], release, "{report}");
        assert!(shown[2]
            .as_str()
            .unwrap()
            .contains("A new version is available"));
        eprintln!("banner shown {} ms after the switch", at - switched);
        assert!(
            at - switched < 1000,
            "shown {} ms after the switch: {report}",
            at - switched
        );
    }
}
