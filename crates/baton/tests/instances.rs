//! Several web instances of a release (`[web] instances`): the proxy
//! spreads requests over them; deploys, `baton scale` up and down and
//! `baton restart` lose no request under load.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;

const HOST: &str = "hello.localhost";
const CLIENTS: usize = 32;

/// Test steps that block (the CLI, waiting for load), run off the runtime.
type Work = Box<dyn FnOnce(&Server, &Load) + Send>;

/// Requests answered so far by each live web instance of hello.
fn answered(server: &Server) -> BTreeMap<i64, u64> {
    let status = server.json(&["status"]);
    status[0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["process"] == "web" && t["state"] == "live")
        .map(|t| (t["id"].as_i64().unwrap(), t["requests"].as_u64().unwrap()))
        .collect()
}

/// Checks that the next `requests` of the load reached every live
/// instance about as often (within ±20 % of the mean).
fn assert_spread(server: &Server, load: &Load, requests: usize, instances: usize) {
    let before = answered(server);
    assert_eq!(before.len(), instances, "live instances: {before:?}");
    load.wait_for_more(requests);
    let after = answered(server);
    let got: Vec<u64> = after
        .iter()
        .map(|(id, n)| n - before.get(id).copied().unwrap_or(0))
        .collect();
    let mean = got.iter().sum::<u64>() as f64 / got.len() as f64;
    eprintln!("requests per instance: {got:?}");
    for n in &got {
        assert!(
            (*n as f64 - mean).abs() <= 0.2 * mean,
            "uneven spread over {instances} instances: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_the_load_through_deploys_scaling_and_restarts() {
    let server = Arc::new(Server::start());
    let v1 = AppCopy::new("version 1");
    v1.edit("baton.toml", "[web]\n", "[web]\ninstances = 3\n");
    let first = server.deploy(v1.path());
    assert_eq!(first["state"], "succeeded", "{first}");
    let load = Arc::new(Load::start(server.proxy, HOST, CLIENTS));
    let blocking = |work: Work| {
        let (s, l) = (Arc::clone(&server), Arc::clone(&load));
        tokio::task::spawn_blocking(move || work(&s, &l))
    };
    blocking(Box::new(|s, l| assert_spread(s, l, 3000, 3)))
        .await
        .unwrap();

    // A deploy starts three new instances beside the old ones.
    let v2 = AppCopy::new("version 2");
    v2.edit("baton.toml", "[web]\n", "[web]\ninstances = 3\n");
    let path = v2.path().to_path_buf();
    blocking(Box::new(move |s, l| {
        let second = s.deploy(&path);
        assert_eq!(second["state"], "succeeded", "{second}");
        assert_spread(s, l, 3000, 3);
    }))
    .await
    .unwrap();

    // Up to five, down to two, in place; then a restart replaces both and
    // keeps the scale.
    blocking(Box::new(|s, l| {
        let up = s.json(&["scale", "hello", "web=5"]);
        assert_eq!(up["started"].as_array().unwrap().len(), 2, "{up}");
        assert_spread(s, l, 3000, 5);
        let down = s.json(&["scale", "hello", "web=2"]);
        assert_eq!(down["stopped"].as_array().unwrap().len(), 3, "{down}");
        assert_spread(s, l, 2000, 2);
        let restarted = s.json(&["restart", "hello"]);
        assert_eq!(restarted["state"], "succeeded", "{restarted}");
        assert_spread(s, l, 2000, 2);
    }))
    .await
    .unwrap();

    let load = Arc::try_unwrap(load).ok().expect("the load is ours again");
    let outcomes = load.stop().await;
    assert_no_failures(&outcomes, 10_000);

    // A server restart finds the instances together again.
    let mut server = Arc::try_unwrap(server)
        .ok()
        .expect("the server is ours again");
    server.kill9();
    server.restart();
    assert_eq!(answered(&server).len(), 2);
    let served = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert!(served.1.contains("version 2"), "{served:?}");
}
