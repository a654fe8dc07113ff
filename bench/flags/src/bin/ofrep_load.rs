//! OFREP single-flag evaluation under load against a running `baton server`:
//! first as fast as it answers (closed loop), then at a constant request
//! rate, wrk2-style: each connection sends on a fixed schedule and a
//! request's latency counts from when it was due, not from when it was
//! sent, so a slow answer also charges the requests queued behind it
//! (no coordinated omission). Standard library only: one blocking thread
//! per connection, paced with `thread::sleep` (sub-0.1 ms precision on
//! Linux, where Tokio's timer would add up to 1 ms).
//!
//! Usage: ofrep_load ADDR KEY FLAG RATE SECONDS CONNECTIONS

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// One request and what it takes to read its answer.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    fn open(addr: &str) -> Connection {
        let stream = TcpStream::connect(addr).expect("connect to baton server");
        stream.set_nodelay(true).expect("nodelay");
        Connection {
            stream,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// Sends one request and reads its whole answer; returns the status.
    fn exchange(&mut self, request: &[u8]) -> u16 {
        self.stream.write_all(request).expect("send");
        self.buffer.clear();
        let mut chunk = [0_u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "the server closed the connection");
            self.buffer.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buffer[..end]).expect("ASCII head");
                let status: u16 = head[9..12].parse().expect("status");
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .expect("content-length");
                while self.buffer.len() < end + 4 + length {
                    let n = self.stream.read(&mut chunk).expect("read body");
                    assert!(n > 0, "the server closed the connection");
                    self.buffer.extend_from_slice(&chunk[..n]);
                }
                return status;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The same 1,000 contexts as the in-process benchmark.
fn requests(addr: &str, key: &str, flag: &str) -> Vec<Vec<u8>> {
    let countries = ["fr", "de", "nl", "be", "us"];
    let plans = ["pro", "team", "free"];
    (0..1000)
        .map(|i| {
            let body = format!(
                r#"{{"context":{{"targetingKey":"user-{i}","country":"{}","plan":"{}","appVersion":"1.{}.{}"}}}}"#,
                countries[i % countries.len()],
                plans[i % plans.len()],
                i % 4,
                i % 7
            );
            format!(
                "POST /ofrep/v1/evaluate/flags/{flag} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .collect()
}

struct Outcome {
    latencies_us: Vec<u32>,
    failures: usize,
}

/// Runs `connections` threads for `seconds`; with a rate, each sends on
/// its share of the schedule, without one, as fast as answers come.
fn run(
    addr: &str,
    requests: &Arc<Vec<Vec<u8>>>,
    rate: Option<f64>,
    seconds: f64,
    connections: usize,
) -> (Outcome, Duration) {
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs_f64(seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let (addr, requests, stop) = (addr.to_string(), Arc::clone(requests), Arc::clone(&stop));
            thread::spawn(move || {
                let mut connection = Connection::open(&addr);
                let mut out = Outcome {
                    latencies_us: Vec::new(),
                    failures: 0,
                };
                // Connection c sends at start + (c + k * connections) / rate.
                let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
                let offset = rate.map(|r| Duration::from_secs_f64(c as f64 / r));
                let mut k = 0_u32;
                while !stop.load(Ordering::Relaxed) {
                    let due = match (interval, offset) {
                        (Some(interval), Some(offset)) => start + offset + interval * k,
                        _ => Instant::now().max(start),
                    };
                    if due >= end {
                        break;
                    }
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    let request = &requests[(c + k as usize * connections) % requests.len()];
                    let status = connection.exchange(request);
                    let took = Instant::now().duration_since(due);
                    out.latencies_us.push(took.as_micros().min(u32::MAX as u128) as u32);
                    if status != 200 {
                        out.failures += 1;
                    }
                    k += 1;
                }
                out
            })
        })
        .collect();
    let mut all = Outcome {
        latencies_us: Vec::new(),
        failures: 0,
    };
    for t in threads {
        let out = t.join().expect("load thread");
        all.latencies_us.extend(out.latencies_us);
        all.failures += out.failures;
    }
    stop.store(true, Ordering::Relaxed);
    let took = Instant::now().duration_since(start).min(end - start);
    all.latencies_us.sort_unstable();
    (all, took)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

fn report(label: &str, outcome: &Outcome, took: Duration) {
    let l = &outcome.latencies_us;
    println!(
        "  {label:<24} {:>8.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  p99.9 {:>6.3} ms  max {:>7.3} ms  ({} requests, {} not 200)",
        l.len() as f64 / took.as_secs_f64(),
        percentile(l, 0.50),
        percentile(l, 0.99),
        percentile(l, 0.999),
        percentile(l, 1.0),
        l.len(),
        outcome.failures
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, key, flag, rate, seconds, connections] = &args[..] else {
        eprintln!("usage: ofrep_load ADDR KEY FLAG RATE SECONDS CONNECTIONS");
        std::process::exit(2);
    };
    let rate: f64 = rate.parse().expect("RATE: requests per second");
    let seconds: f64 = seconds.parse().expect("SECONDS");
    let connections: usize = connections.parse().expect("CONNECTIONS");
    let requests = Arc::new(requests(addr, key, flag));

    // Every context must evaluate (a 200), before anything is timed.
    let mut check = Connection::open(addr);
    for request in requests.iter() {
        assert_eq!(check.exchange(request), 200, "OFREP refused a request");
    }
    drop(check);

    println!("OFREP single-flag evaluation, {connections} keep-alive connections:");
    let (warm, took) = run(addr, &requests, None, 2.0, connections);
    report("warm-up, closed loop", &warm, took);
    let (max, took) = run(addr, &requests, None, seconds, connections);
    report("closed loop (max)", &max, took);
    let (fixed, took) = run(addr, &requests, Some(rate), seconds, connections);
    report(&format!("constant {rate:.0} req/s"), &fixed, took);
    let p99 = percentile(&fixed.latencies_us, 0.99);
    println!(
        "  goal p99 < 2 ms at {rate:.0} req/s: {} (p99 {p99:.3} ms)",
        if p99 < 2.0 && fixed.failures == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
