//! `[retention]`: twenty deploys of an app that keeps three releases
//! leave three release folders and the output of their targets only, and
//! a rollback to the oldest one kept still works. `baton status` shows the
//! disk the app takes.

mod common;

use common::*;

fn log_files(server: &Server) -> Vec<String> {
    std::fs::read_dir(server.data().join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|name| !name.starts_with("access.log"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_deploys_keep_three_releases_and_their_output_and_roll_back_to_a_kept_one() {
    let server = Server::start();
    let app = AppCopy::new("version 0");
    app.append("[retention]\nreleases = 3\nlogs = \"14d\"");
    app.set_deploy("release_command", "echo getting ready");
    let mut releases = Vec::new();
    for n in 1..=20 {
        app.edit(
            "app.py",
            &format!("version {}", n - 1),
            &format!("version {n}"),
        );
        let deployment = server.deploy(app.path());
        assert_eq!(deployment["state"], "succeeded", "deploy {n}: {deployment}");
        releases.push(deployment["release_id"].as_str().unwrap().to_string());
    }

    let folders: Vec<String> = std::fs::read_dir(server.data().join("releases"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(folders.len(), 3, "{folders:?}");
    for kept in &releases[17..] {
        assert!(folders.contains(kept), "release {kept} was removed");
    }
    let listed = server.json(&["releases", "hello"]);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    // The live and warm targets' output, and that of the third release's
    // stopped target, and their deployments' release command output:
    // nothing of the seventeen others.
    let (commands, targets): (Vec<String>, Vec<String>) = log_files(&server)
        .into_iter()
        .partition(|name| name.starts_with("release-command-"));
    assert!(targets.len() <= 3, "{targets:?}");
    assert_eq!(commands.len(), 3, "{commands:?}");

    let status = server.json(&["status"]);
    let disk = &status[0]["disk"];
    assert!(disk["releases"].as_u64().unwrap() > 0, "{status}");
    assert!(disk["logs"].as_u64().unwrap() > 0, "{status}");
    let text = server.baton_ok(&["status"]);
    assert!(text.contains("DISK"), "{text}");

    // Back to the oldest release kept: not warm any more, so a deploy of
    // its folder, which is still there.
    let oldest = &releases[17];
    let rollback: serde_json::Value = serde_json::from_str(&server.baton_ok(&[
        "rollback",
        "hello",
        "--to",
        &short(oldest),
        "--json",
    ]))
    .unwrap();
    assert_eq!(rollback["state"], "succeeded", "{rollback}");
    let (code, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("version 18"), "{body}");
    assert_eq!(release_of(&body), Some(short(oldest)), "{body}");
}
