//! `[build]` for process apps: the build command runs once when the release
//! is created, in its folder, as the app user, with network access; what it
//! leaves is the release, sealed read-only. A failing build fails the
//! deploy with its output and leaves nothing behind.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const HOST: &str = "built.localhost";

/// A Python app that needs `six` from PyPI, installed by its `[build]`
/// into `.deps`, which `PYTHONPATH` names.
fn python_app(dir: &Path) {
    std::fs::write(dir.join("requirements.txt"), "six==1.16.0\n").unwrap();
    std::fs::write(
        dir.join("app.py"),
        r#"import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import six


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"six {six.__version__} from {six.__file__}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("baton.toml"),
        format!(
            r#"name = "built"
hosts = ["{HOST}"]

[web]
command = "python3 -u app.py"

[health]
path = "/"
interval = "100ms"

[build]
command = "python3 -m pip install --disable-pip-version-check --no-cache-dir -r requirements.txt --target .deps"
timeout = "5m"

[env]
PYTHONPATH = ".deps"
"#
        ),
    )
    .unwrap();
}

/// Files and folders directly in the data folder's `releases`.
fn release_folders(server: &Server) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(server.data().join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_app_gets_its_requirements_from_pypi_built_once_into_a_sealed_release() {
    let app = tempfile::tempdir().unwrap();
    python_app(app.path());
    let server = Server::start();
    let out = server.baton(&["deploy", app.path().to_str().unwrap()]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shown}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    // pip's own output, streamed while the upload waited.
    assert!(
        shown.contains("│ Successfully installed six-1.16.0"),
        "{shown}"
    );
    assert!(shown.contains("Release recorded, built in"), "{shown}");

    let release = server.json(&["releases", "built"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let folder = server.data().join("releases").join(&release);
    let (status, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("six 1.16.0 from "), "{body}");
    assert!(
        body.contains(&format!("{}/.deps/six.py", folder.display())),
        "the module came from the release's own folder: {body}"
    );

    // Sealed as any release: read-only, the server's, nothing left beside.
    let meta = |path: &Path| std::fs::symlink_metadata(path).unwrap();
    assert_eq!(meta(&folder).mode() & 0o7777, 0o555);
    assert_eq!(meta(&folder.join(".deps")).mode() & 0o7777, 0o555);
    assert_eq!(meta(&folder.join(".deps/six.py")).mode() & 0o7777, 0o444);
    assert_eq!(
        meta(&folder.join(".deps/six.py")).uid(),
        nix::unistd::geteuid().as_raw()
    );
    assert_eq!(release_folders(&server), [release.as_str()]);

    // The output is kept with the release.
    let kept = server
        .http()
        .get(format!(
            "{}/api/v1/apps/built/releases/{release}/build-log",
            server.api_url()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(kept.contains("Successfully installed six-1.16.0"), "{kept}");

    // The same folder again is the same release: not built a second time.
    let again = server.baton(&["deploy", app.path().to_str().unwrap()]);
    let shown = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.status.success(), "{shown}");
    assert!(shown.contains("already live"), "{shown}");
    let log =
        std::fs::read_to_string(server.data().join(format!("logs/build-{release}.log"))).unwrap();
    assert_eq!(log.matches("[baton] building release").count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_build_fails_the_deploy_with_its_output_and_leaves_the_live_release_alone() {
    let server = Server::start();
    let good = AppCopy::new("built and live");
    good.append("[build]\ncommand = \"echo compiled > assets.txt\"");
    let live = server.deploy(good.path());
    assert_eq!(live["state"], "succeeded", "{live}");
    let live_release = live["release_id"].as_str().unwrap().to_string();
    let assets = server
        .data()
        .join("releases")
        .join(&live_release)
        .join("assets.txt");
    assert_eq!(std::fs::read_to_string(&assets).unwrap(), "compiled\n");

    let broken = AppCopy::new("never built");
    broken.append(
        "[build]\ncommand = \"echo compiling the assets; echo 'error: no module named frobnicate' >&2; exit 3\"",
    );
    let out = server.baton(&["deploy", broken.path().to_str().unwrap()]);
    let (shown, error) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!out.status.success(), "{shown}");
    // Streamed while it ran, and the tail again in the error.
    assert!(shown.contains("│ compiling the assets"), "{shown}");
    assert!(error.contains("exited with code 3"), "{error}");
    assert!(
        error.contains("error: no module named frobnicate"),
        "{error}"
    );
    assert!(error.contains("nothing was recorded"), "{error}");

    // Nothing of it was recorded or left; the live release still serves.
    let releases = server.json(&["releases", "hello"]);
    assert_eq!(releases.as_array().unwrap().len(), 1, "{releases}");
    assert_eq!(release_folders(&server), [live_release.as_str()]);
    let (status, body) = get_fresh(server.proxy, common::HOST, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("built and live"), "{body}");
    assert_eq!(server.live()["release_id"], live_release.as_str());
    let events = server.baton_ok(&["events", "hello"]);
    assert!(
        events.contains("release_build_failed") && events.contains("exited with code 3"),
        "{events}"
    );

    // A build that outlives its time limit is killed, with the same care.
    let stuck = AppCopy::new("stuck");
    stuck.append("[build]\ncommand = \"echo waiting; sleep 60\"\ntimeout = \"1s\"");
    let started = Instant::now();
    let out = server.baton(&["deploy", stuck.path().to_str().unwrap()]);
    let error = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(error.contains("ran out of time after 1s"), "{error}");
    assert!(error.contains("waiting"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(release_folders(&server), [live_release.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_archive_sent_twice_at_once_is_built_once() {
    let server = Server::start();
    let app = AppCopy::new("built once");
    app.append("[build]\ncommand = \"sleep 1; echo built > built.txt\"");
    let package = baton_package::pack(app.path()).unwrap();
    let url = format!(
        "{}/api/v1/apps/hello/releases?environment=production",
        server.api_url()
    );
    let upload = || {
        server
            .http()
            .post(&url)
            .header("Content-Type", "application/x-tar")
            .body(package.archive.clone())
            .send()
    };
    let (first, second) = tokio::join!(upload(), upload());
    let mut created = Vec::new();
    for answer in [first.unwrap(), second.unwrap()] {
        assert!(answer.status().is_success(), "{}", answer.status());
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["release"]["id"], package.id.as_str(), "{body}");
        created.push(body["created"].as_bool().unwrap());
    }
    created.sort();
    assert_eq!(created, [false, true], "one upload recorded it");
    let log = std::fs::read_to_string(server.data().join(format!("logs/build-{}.log", package.id)))
        .unwrap();
    assert_eq!(log.matches("[baton] building release").count(), 1, "{log}");
    assert_eq!(release_folders(&server), [package.id.as_str()]);
}
