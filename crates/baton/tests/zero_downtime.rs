//! Under continuous load from 32 clients, 20 deploys and rollbacks lose no
//! request, and once a switch is done no request reaches the old release.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

#[derive(Debug, Clone)]
struct Outcome {
    client: usize,
    started: i64,
    ended: i64,
    result: Result<String, String>,
}

const CLIENTS: usize = 32;
const OPERATIONS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_deploys_and_rollbacks_under_load_drop_nothing() {
    let server = Arc::new(Server::start());
    let first = AppCopy::new("version 0");
    let mut deployments = vec![server.deploy(first.path())];

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let (stop, outcomes, proxy) = (Arc::clone(&stop), Arc::clone(&outcomes), server.proxy);
        clients.push(tokio::spawn(async move {
            // Half the clients keep their connection alive, half open a new
            // one for every request.
            let keep_alive = reqwest::Client::builder().no_proxy().build().unwrap();
            let url = format!("http://{proxy}/");
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = now_ms();
                let result = if n % 2 == 0 {
                    match keep_alive.get(&url).header("host", HOST).send().await {
                        Ok(r) if r.status() == 200 => r.text().await.map_err(|e| e.to_string()),
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    }
                } else {
                    match get_fresh(proxy, HOST, "/").await {
                        Ok((200, body)) => Ok(body),
                        Ok((status, body)) => Err(format!("status {status}: {body}")),
                        Err(e) => Err(e),
                    }
                };
                mine.push(Outcome {
                    client: n,
                    started,
                    ended: now_ms(),
                    result: result.map(|body| {
                        release_of(&body).unwrap_or_else(|| format!("no release in {body:?}"))
                    }),
                });
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            outcomes.lock().unwrap().extend(mine);
        }));
    }

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
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failed.len(),
        outcomes.len(),
        failed.first()
    );
    assert!(
        outcomes.len() > 1000,
        "too little load to prove anything: {} requests",
        outcomes.len()
    );

    // A request that starts after switch i is done must be answered by
    // release i, or by a later release whose switch began before it ended.
    let switches: Vec<(i64, i64, String)> = deployments
        .iter()
        .map(|d| {
            let (start, end) = switch_window(d);
            (start, end, short(d["release_id"].as_str().unwrap()))
        })
        .collect();
    let mut checked = 0;
    for o in &outcomes {
        let answered = o.result.as_ref().unwrap();
        let Some(i) = switches.iter().rposition(|(_, done, _)| *done < o.started) else {
            continue;
        };
        let allowed: Vec<&String> = std::iter::once(&switches[i].2)
            .chain(
                switches[i + 1..]
                    .iter()
                    .filter(|(start, _, _)| *start <= o.ended)
                    .map(|s| &s.2),
            )
            .collect();
        assert!(
            allowed.contains(&answered),
            "request {o:?} of client {} started {} ms after switch {i} was done and reached {answered}, not one of {allowed:?}; switches: {switches:?}",
            o.client,
            o.started - switches[i].1
        );
        if allowed.len() == 1 {
            checked += 1;
        }
    }
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
