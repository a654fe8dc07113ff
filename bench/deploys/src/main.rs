//! Deploys an app 50 times (then rolls back 10 times) while 32 keep-alive
//! clients load it through Baton's proxy, and reports: failed requests, p99
//! latency of requests in flight during a switch against the p99 of a quiet
//! baseline, the time from "new target healthy" to "traffic switched", and
//! the rollback time. Run it through `bench/deploys.sh`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

const CLIENTS: usize = 32;
const DEPLOYS: usize = 50;
const ROLLBACKS: usize = 10;
const BASELINE: Duration = Duration::from_secs(5);

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

struct Sample {
    start_us: i64,
    end_us: i64,
    ok: bool,
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[((values.len() - 1) as f64 * p).round() as usize]
}

fn step(deployment: &Value, name: &str, field: &str) -> i64 {
    deployment["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["step"] == name))
        .and_then(|s| s[field].as_i64())
        .unwrap_or_else(|| panic!("no {name}.{field} in {deployment}"))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (baton, app_a, app_b, data, host) =
        (&args[1], &args[2], &args[3], &args[4], args[5].clone());
    let mut server = Command::new(baton)
        .args([
            "server",
            "--data",
            data,
            "--api-listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start baton server");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    let words: Vec<&str> = ready.split_whitespace().collect();
    let (api, proxy) = (words[4].to_string(), words[6].to_string());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    let deploy_dir = {
        let (baton, api) = (baton.clone(), api.clone());
        move |dir: &str| {
            let out = Command::new(&baton)
                .args(["deploy", dir, "--json"])
                .env("BATON_API", &api)
                .output()
                .expect("run baton deploy");
            assert!(
                out.status.success(),
                "deploy failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        }
    };
    let app = deploy_dir(app_a)["app"].as_str().unwrap().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, samples, url, host) = (
            Arc::clone(&stop),
            Arc::clone(&samples),
            format!("{proxy}/"),
            host.clone(),
        );
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        clients.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start_us = now_us();
                let ok = match client.get(&url).header("host", &host).send().await {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                mine.push(Sample {
                    start_us,
                    end_us: now_us(),
                    ok,
                });
            }
            samples.lock().unwrap().extend(mine);
        }));
    }

    tokio::time::sleep(BASELINE).await;
    let baseline_end_us = now_us();
    let mut switches = Vec::new(); // (start_us, end_us) of each switch step
    let mut healthy_to_switched = Vec::new();
    for i in 0..DEPLOYS {
        let dir = if i % 2 == 0 {
            app_b.clone()
        } else {
            app_a.clone()
        };
        let d = tokio::task::spawn_blocking({
            let deploy_dir = deploy_dir.clone();
            move || deploy_dir(&dir)
        })
        .await
        .unwrap();
        assert_eq!(d["state"], "succeeded", "{d}");
        switches.push((
            step(&d, "switch", "started_at") * 1000,
            step(&d, "switch", "finished_at") * 1000,
        ));
        healthy_to_switched.push(
            (step(&d, "switch", "finished_at") - step(&d, "health_check", "finished_at")) as f64,
        );
    }
    let mut rollback_ms = Vec::new();
    let mut rollback_total_ms = Vec::new();
    for _ in 0..ROLLBACKS {
        let asked = Instant::now();
        let started: Value = http
            .post(format!("{api}/api/v1/apps/{app}/rollback"))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = started["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("rollback refused: {started}"));
        let done = loop {
            let d: Value = http
                .get(format!("{api}/api/v1/deployments/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if d["state"] != "running" {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let total = asked.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(done["state"], "succeeded", "{done}");
        let created = done["created_at"].as_i64().unwrap();
        rollback_ms.push((step(&done, "switch", "finished_at") - created) as f64);
        rollback_total_ms.push(total);
        switches.push((
            step(&done, "switch", "started_at") * 1000,
            step(&done, "switch", "finished_at") * 1000,
        ));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let _ = server.kill();
    let _ = server.wait();

    let samples = samples.lock().unwrap();
    let failed = samples.iter().filter(|s| !s.ok).count();
    let latency = |s: &Sample| (s.end_us - s.start_us) as f64 / 1000.0;
    let baseline: Vec<f64> = samples
        .iter()
        .filter(|s| s.end_us <= baseline_end_us)
        .map(latency)
        .collect();
    // In flight at some point of a switch step (with its 1 ms recording granularity).
    let during: Vec<f64> = samples
        .iter()
        .filter(|s| {
            switches
                .iter()
                .any(|(a, b)| s.start_us <= b + 1000 && s.end_us >= *a)
        })
        .map(latency)
        .collect();
    let (p99_base, p99_switch) = (
        percentile(baseline.clone(), 0.99),
        percentile(during.clone(), 0.99),
    );
    println!("{} requests from {CLIENTS} keep-alive clients; {DEPLOYS} deploys then {ROLLBACKS} rollbacks", samples.len());
    println!("failed requests:                         {failed}");
    println!(
        "p99 latency, quiet baseline:             {p99_base:.2} ms ({} requests)",
        baseline.len()
    );
    println!(
        "p99 latency, requests during a switch:   {p99_switch:.2} ms ({} requests)",
        during.len()
    );
    println!(
        "extra p99 latency during switches:       {:.2} ms",
        p99_switch - p99_base
    );
    println!(
        "new target healthy → traffic switched:   median {:.0} ms, max {:.0} ms (store timestamps, ms resolution)",
        percentile(healthy_to_switched.clone(), 0.5),
        percentile(healthy_to_switched, 1.0)
    );
    println!(
        "rollback, request → traffic switched:    median {:.0} ms, max {:.0} ms",
        percentile(rollback_ms.clone(), 0.5),
        percentile(rollback_ms, 1.0)
    );
    println!(
        "rollback, whole deployment as seen by the client (incl. drain, keep-warm): median {:.1} ms, max {:.1} ms",
        percentile(rollback_total_ms.clone(), 0.5),
        percentile(rollback_total_ms, 1.0)
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
