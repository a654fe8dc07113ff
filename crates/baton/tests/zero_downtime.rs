//! Under continuous load from 32 clients, 20 deploys and rollbacks lose no
//! request, and once a switch is done no request reaches the old release.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

const CLIENTS: usize = 32;
const OPERATIONS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_deploys_and_rollbacks_under_load_drop_nothing() {
    let server = Arc::new(Server::start());
    let first = AppCopy::new("version 0");
    let mut deployments = vec![server.deploy(first.path())];
    let load = Load::start(server.proxy, HOST, CLIENTS);

    // Alternate: deploy a new version, roll back, deploy another...
    let mut copies = vec![first];
    for op in 0..OPERATIONS {
        let server = Arc::clone(&server);
        let deployment = if op % 3 == 2 {
            tokio::task::spawn_blocking(move || server.rollback("hello"))
                .await
                .unwrap()
        } else {
            let copy = AppCopy::new(&format!("version {}", op + 1));
            let path = copy.path().to_path_buf();
            copies.push(copy);
            tokio::task::spawn_blocking(move || server.deploy(&path))
                .await
                .unwrap()
        };
        assert_eq!(deployment["state"], "succeeded", "{deployment}");
        deployments.push(deployment);
    }
    let outcomes = load.stop().await;
    assert_no_failures(&outcomes, 1000);
    let checked = assert_served_by_switched_releases(&outcomes, &deployments);
    assert!(
        checked > 500,
        "only {checked} requests fell between switches"
    );
    println!(
        "{} requests, 0 failed, {} deploys and rollbacks",
        outcomes.len(),
        OPERATIONS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_in_flight_at_the_switch_complete_on_the_old_release() {
    let server = Arc::new(Server::start());
    let old = AppCopy::new("old");
    let old_release = short(server.deploy(old.path())["release_id"].as_str().unwrap());

    let mut slow = Vec::new();
    for _ in 0..4 {
        let proxy = server.proxy;
        slow.push(tokio::spawn(async move {
            get_fresh(proxy, HOST, "/slow?ms=2000").await
        }));
    }
    // Wait until the proxy counts them in flight on the live target.
    let s = Arc::clone(&server);
    eventually(Duration::from_secs(10), "4 requests in flight", move || {
        (s.live()["in_flight"].as_u64() == Some(4)).then_some(())
    })
    .await;

    let new = AppCopy::new("new");
    let s = Arc::clone(&server);
    let path = new.path().to_path_buf();
    let deployment = tokio::task::spawn_blocking(move || s.deploy(&path))
        .await
        .unwrap();
    let drain = deployment["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "drain")
        .unwrap()
        .clone();
    assert_eq!(drain["state"], "done");
    assert!(
        drain["detail"]
            .as_str()
            .unwrap()
            .contains("no request left"),
        "{drain}"
    );
    // The drain waited for the slow requests rather than cutting them off.
    let drained_for =
        drain["finished_at"].as_i64().unwrap() - drain["started_at"].as_i64().unwrap();
    assert!(drained_for > 500, "drain took only {drained_for} ms");
    for request in slow {
        let (status, body) = request.await.unwrap().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(release_of(&body).unwrap(), old_release);
    }
    let (_, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(
        release_of(&body).unwrap(),
        short(deployment["release_id"].as_str().unwrap())
    );
}
