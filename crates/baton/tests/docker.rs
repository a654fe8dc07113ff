//! The Docker runtime against the machine's real Docker Engine: images built
//! once per release, containers started beside the old ones with no request
//! lost, unhealthy releases kept away from traffic, containers adopted after
//! kill -9 of the server, old images pruned.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

const CLIENTS: usize = 16;
const OPERATIONS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_container_deploys_and_rollbacks_under_load_drop_nothing() {
    // Apps before the server: dropped after it, so that no server is left
    // to restart their containers while they are cleaned up.
    let first = DockerApp::new("load", "version 0");
    let server = Arc::new(Server::start());
    let mut deployments = vec![server.deploy(first.path())];
    let load = Load::start(server.proxy, first.host, CLIENTS);
    let mut latest = None;
    for op in 0..OPERATIONS {
        let server = Arc::clone(&server);
        let deployment = if op % 3 == 2 {
            let name = first.name;
            tokio::task::spawn_blocking(move || server.rollback(name))
                .await
                .unwrap()
        } else {
            let copy = Arc::new(DockerApp::named(first.name, &format!("version {}", op + 1)));
            latest = Some(Arc::clone(&copy));
            tokio::task::spawn_blocking(move || server.deploy(copy.path()))
                .await
                .unwrap()
        };
        assert_eq!(deployment["state"], "succeeded", "{deployment}");
        deployments.push(deployment);
    }
    let outcomes = load.stop().await;
    assert_no_failures(&outcomes, 300);
    let checked = assert_served_by_switched_releases(&outcomes, &deployments);
    assert!(
        checked > 100,
        "only {checked} requests fell between switches"
    );
    // Promoting the same release elsewhere reuses its image: no new build.
    let images = first.images().len();
    let latest = latest.unwrap();
    let release = deployments.last().unwrap()["release_id"]
        .as_str()
        .unwrap()
        .to_string();
    let staged = server.baton(&[
        "deploy",
        latest.path().to_str().unwrap(),
        "-e",
        "staging",
        "--json",
    ]);
    assert!(
        staged.status.success(),
        "{}",
        String::from_utf8_lossy(&staged.stderr)
    );
    let staged: serde_json::Value = serde_json::from_slice(&staged.stdout).unwrap();
    assert_eq!(staged["release_id"], release.as_str());
    assert_eq!(first.images().len(), images);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_failing_its_health_check_never_receives_traffic() {
    let good = DockerApp::new("health", "good");
    let server = Server::start();
    let live = short(server.deploy(good.path())["release_id"].as_str().unwrap());
    let bad = DockerApp::named(good.name, "bad");
    bad.add_to("env", "FAIL_HEALTH = \"1\"");
    bad.add_to("deploy", "timeout = \"2s\"");
    // The [deploy] section now has timeout twice: keep the new one only.
    let manifest = std::fs::read_to_string(bad.path().join("baton.toml")).unwrap();
    std::fs::write(
        bad.path().join("baton.toml"),
        manifest.replace("timeout = \"30s\"\n", ""),
    )
    .unwrap();
    let load = Load::start(server.proxy, good.host, 4);
    let out = server.baton(&["deploy", bad.path().to_str().unwrap()]);
    let outcomes = load.stop().await;
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("unhealthy on purpose"), "{error}");
    assert!(
        error.contains("listening on 0.0.0.0:8080"),
        "the container's output is quoted: {error}"
    );
    assert_no_failures(&outcomes, 20);
    assert!(
        outcomes
            .iter()
            .all(|o| o.result.as_deref() == Ok(live.as_str())),
        "the bad release got traffic"
    );
    // Its container is gone; only the good one runs.
    assert_eq!(good.containers().len(), 1, "{:?}", good.containers());

    // A container that exits at start fails the deploy at once, with its exit code.
    let broken = DockerApp::named(good.name, "broken");
    broken.add_to("env", "EXIT_CODE = \"3\"");
    let started = std::time::Instant::now();
    let out = server.baton(&["deploy", broken.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("exited with code 3"), "{error}");
    assert!(error.contains("exiting at start on purpose"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_and_restart_adopt_running_containers_without_restarting_them() {
    let app = DockerApp::new("adopt", "one");
    let mut server = Server::start();
    server.deploy(app.path());
    let two = DockerApp::named(app.name, "two");
    let release = short(server.deploy(two.path())["release_id"].as_str().unwrap());
    let started_at = |id: &str| docker(&["inspect", "-f", "{{.State.StartedAt}}", id]);
    let containers = app.containers();
    assert_eq!(containers.len(), 2, "live and warm");
    let before: Vec<Vec<String>> = containers.iter().map(|c| started_at(c)).collect();

    server.kill9();
    server.restart();
    let (status, body) = get_fresh(server.proxy, app.host, "/").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(release_of(&body).unwrap(), release);
    assert_eq!(app.containers(), containers, "containers were replaced");
    let after: Vec<Vec<String>> = containers.iter().map(|c| started_at(c)).collect();
    assert_eq!(before, after, "containers were restarted");
    let status = server.json(&["status"]);
    let env = status
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["app"] == app.name)
        .unwrap();
    assert_eq!(env["live"]["running"], true);
    assert_eq!(env["live"]["restarts"], 0);
    // The warm container was adopted too: rolling back is a switch.
    let back = server.rollback(app.name);
    assert_eq!(back["steps"][0]["step"], "health_check", "{back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pruning_keeps_exactly_the_configured_number_of_old_releases() {
    let first = DockerApp::new("prune", "v0");
    let server = Server::start();
    let configure = |app: &DockerApp| {
        let path = app.path().join("baton.toml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("keep_images = 3", "keep_images = 2")
            .replace("keep_warm = \"10m\"", "keep_warm = \"0s\"");
        std::fs::write(path, text).unwrap();
    };
    configure(&first);
    server.deploy(first.path());
    for v in 1..5 {
        let next = DockerApp::named(first.name, &format!("v{v}"));
        configure(&next);
        server.deploy(next.path());
        let expected = (v + 1).min(3);
        assert_eq!(first.images().len(), expected, "after {} releases", v + 1);
    }
    let events = server.json(&["events", first.name]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "images_pruned"),
        "{events}"
    );
    assert_eq!(first.containers().len(), 1, "old containers are removed");
    // The first release's image is gone; sending its folder again builds it
    // again rather than failing.
    let again = server.deploy(first.path());
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(first.images().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_and_a_missing_image_are_named() {
    let app = DockerApp::new("noengine", "v0");
    let server = Server::start_with(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let out = server.baton(&["deploy", app.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("Docker Engine") && error.contains("/nonexistent/docker.sock"),
        "{error}"
    );
    // The process runtime is unaffected.
    server.deploy(&example_dir());

    let server = Server::start();
    let missing = DockerApp::named(app.name, "v1");
    missing.add_to("docker", "image = \"baton-test/never-built:1\"");
    let out = server.baton(&["deploy", missing.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("baton-test/never-built:1 is not in the Docker Engine"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_the_engine_leaves_container_records_alone() {
    let app = DockerApp::new("noengine-restart", "one");
    let mut server = Server::start();
    server.deploy(app.path());
    server.deploy(DockerApp::named(app.name, "two").path());
    let states = |server: &Server| -> Vec<String> {
        let status = server.json(&["status"]);
        let env = status
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["app"] == app.name)
            .unwrap()
            .clone();
        env["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["state"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(states(&server), ["warm", "live"]);

    server.kill9();
    server.set_env(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    server.restart();
    assert_eq!(
        states(&server),
        ["warm", "live"],
        "records were changed while the engine was unreachable"
    );

    server.kill9();
    server.set_env(&[]);
    server.restart();
    let (status, _) = get_fresh(server.proxy, app.host, "/").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(app.containers().len(), 2, "both containers were adopted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_build_is_shown_while_it_runs_and_kept_with_the_release_even_when_it_fails() {
    let app = DockerApp::new("buildlog", "v1");
    let server = Server::start();
    let out = server.baton(&["deploy", app.path().to_str().unwrap()]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The engine's own output, streamed while the upload waited.
    assert!(shown.contains("│ Step 1/"), "{shown}");
    assert!(
        shown.contains("Release recorded, image built in"),
        "{shown}"
    );
    let release = server.json(&["releases", app.name])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let kept = server
        .http()
        .get(format!(
            "{}/api/v1/apps/{}/releases/{release}/image-log",
            server.api_url(),
            app.name
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        kept.contains("Step 1/") && kept.contains("FROM scratch"),
        "{kept}"
    );

    // A build that fails is in the app's history, with why.
    let broken = DockerApp::named(app.name, "broken");
    let dockerfile = broken.path().join("Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    std::fs::write(&dockerfile, format!("{text}COPY no-such-file /x\n")).unwrap();
    let out = server.baton(&["deploy", broken.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let events = server.baton_ok(&["events", app.name]);
    assert!(
        events.contains("image_build_failed") && events.contains("no-such-file"),
        "{events}"
    );
}
