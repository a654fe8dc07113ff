//! The proxy against real upstream servers on loopback: what it forwards,
//! what it adds and strips, how it holds, and how it survives upstreams that
//! close their connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton_proxy::{AccessLog, EdgeConfig, Proxy, RouteKey, RouteLimits, RouteSpec, TargetRef};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

const HOST: &str = "app.test";

/// An upstream that answers with its name and what it received. With
/// `close_after_each`, it closes every connection after one response.
async fn upstream(name: &'static str, close_after_each: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    let header = |name: &str| {
                        parts
                            .headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string()
                    };
                    let text = format!(
                        "upstream={name}\nmethod={}\nuri={}\nbody={}\nxff={}\nproto={}\nxhost={}\nsecret={}\nkeepalive={}\n",
                        parts.method,
                        parts.uri,
                        String::from_utf8_lossy(&body),
                        header("x-forwarded-for"),
                        header("x-forwarded-proto"),
                        header("x-forwarded-host"),
                        header("x-secret"),
                        header("keep-alive"),
                    );
                    let mut response = Response::new(Full::new(Bytes::from(text)));
                    if close_after_each {
                        response
                            .headers_mut()
                            .insert("connection", "close".parse().unwrap());
                    }
                    Ok::<_, Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, connections)
}

struct Running {
    proxy: Arc<Proxy>,
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

async fn proxy() -> Running {
    proxy_with(EdgeConfig::default(), None).await
}

async fn proxy_with(edge: EdgeConfig, log: Option<AccessLog>) -> Running {
    let proxy = Proxy::with(edge, log);
    let listeners = Proxy::bind("127.0.0.1:0", 2).unwrap();
    let addr = listeners.local_addr();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(Arc::clone(&proxy).serve(listeners, stopped, Duration::from_secs(1)));
    Running {
        proxy,
        addr,
        _stop: stop,
    }
}

fn route(live: Option<TargetRef>) -> RouteSpec {
    RouteSpec {
        key: RouteKey::new("app", "production"),
        hosts: vec![HOST.into()],
        preview_hosts: vec![],
        live,
        live_instances: Vec::new(),
        preview: None,
        hold_timeout: Duration::from_secs(10),
        limits: Default::default(),
        maintenance: None,
        tls: None,
        canary: None,
        live_updates: false,
    }
}

/// One request on a fresh connection; returns status and body.
async fn request(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_method_path_and_body_adds_forwarded_headers_and_strips_hop_by_hop_ones() {
    let (up, _) = upstream("a", false).await;
    let p = proxy().await;
    p.proxy
        .set_route(route(Some(TargetRef::new(1, up, "r1"))))
        .unwrap();
    let raw = "POST /orders?id=7 HTTP/1.1\r\nHost: App.Test:8080\r\nContent-Length: 5\r\nConnection: close, x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\r\nhello";
    let (status, body) = request(p.addr, raw).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("upstream=a"), "{body}");
    assert!(body.contains("method=POST"), "{body}");
    assert!(body.contains("uri=/orders?id=7"), "{body}");
    assert!(body.contains("body=hello"), "{body}");
    assert!(body.contains("xff=127.0.0.1"), "{body}");
    assert!(body.contains("proto=http"), "{body}");
    assert!(
        body.contains("xhost=App.Test:8080"),
        "the original Host: {body}"
    );
    assert!(
        body.contains("secret=-"),
        "a header named in Connection went upstream: {body}"
    );
    assert!(
        body.contains("keepalive=-"),
        "Keep-Alive went upstream: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_and_routes_without_a_live_target_are_told_apart() {
    let p = proxy().await;
    p.proxy.set_route(route(None)).unwrap();
    let (status, body) = request(p.addr, &get("/", "other.test")).await;
    assert_eq!(status, 404);
    assert!(
        body.contains("no app answers for host \"other.test\""),
        "{body}"
    );
    let (status, body) = request(p.addr, &get("/", HOST)).await;
    assert_eq!(status, 503);
    assert!(
        body.contains("app in production has no live release"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_is_a_502_naming_it() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = proxy().await;
    p.proxy
        .set_route(route(Some(TargetRef::new(9, closed, "deadbeef"))))
        .unwrap();
    let (status, body) = request(p.addr, &get("/", HOST)).await;
    assert_eq!(status, 502);
    assert!(body.contains("target 9 (release deadbeef)"), "{body}");
    assert_eq!(p.proxy.stats(9).unwrap().failures, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_waits_and_then_reaches_the_target_switched_to() {
    let (old, _) = upstream("old", false).await;
    let (new, _) = upstream("new", false).await;
    let p = proxy().await;
    p.proxy
        .set_route(route(Some(TargetRef::new(1, old, "r1"))))
        .unwrap();
    let hold = p.proxy.hold(&RouteKey::new("app", "production"));
    let addr = p.addr;
    let waiting = tokio::spawn(async move { request(addr, &get("/", HOST)).await });
    while hold.waiting() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(!waiting.is_finished());
    p.proxy
        .set_route(route(Some(TargetRef::new(2, new, "r2"))))
        .unwrap();
    drop(hold);
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("upstream=new"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_clients_are_served_over_pooled_connections() {
    let (up, connections) = upstream("a", false).await;
    let p = proxy().await;
    p.proxy
        .set_route(route(Some(TargetRef::new(1, up, "r1"))))
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    for _ in 0..50 {
        stream
            .write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        // The answer is small; read until its body has arrived.
        while !String::from_utf8_lossy(&got).contains("keepalive=") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the proxy closed a keep-alive connection");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    }
    assert!(
        connections.load(Ordering::Relaxed) <= 2,
        "{} upstream connections for 50 sequential requests",
        connections.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_every_connection_loses_no_request() {
    let (up, connections) = upstream("a", true).await;
    let p = proxy().await;
    p.proxy
        .set_route(route(Some(TargetRef::new(1, up, "r1"))))
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let (status, body) = request(addr, &get("/", HOST)).await;
                assert_eq!(status, 200, "{body}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        connections.load(Ordering::Relaxed),
        200,
        "closed connections were reused"
    );
}

/// An upstream that accepts connections and never answers: a hung app.
async fn hung_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

fn limited(live: TargetRef, limits: RouteLimits) -> RouteSpec {
    RouteSpec {
        limits,
        ..route(Some(live))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_target_gets_504_at_its_timeout_and_shows_unresponsive() {
    let p = proxy().await;
    let target = TargetRef::new(4, hung_upstream().await, "hung");
    p.proxy
        .set_route(limited(
            target,
            RouteLimits {
                response_timeout: Duration::from_millis(300),
                ..Default::default()
            },
        ))
        .unwrap();
    let started = std::time::Instant::now();
    let (status, body) = request(p.addr, &get("/", HOST)).await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("did not answer within 300ms"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let stats = p.proxy.stats(4).unwrap();
    assert!(stats.unresponsive && stats.timeouts == 1, "{stats:?}");
    assert_eq!(
        stats.in_flight, 0,
        "the timed-out request is not left in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_cut_at_the_body_timeout() {
    let (up, _) = upstream("a", false).await;
    let edge = EdgeConfig {
        body_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let p = proxy_with(edge, None).await;
    p.proxy
        .set_route(route(Some(TargetRef::new(1, up, "r1"))))
        .unwrap();
    let started = std::time::Instant::now();
    // One byte of ten, then nothing.
    let (status, _) = request(
        p.addr,
        &format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n\r\nx"),
    )
    .await;
    assert_eq!(status, 408);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413_declared_or_streamed() {
    let (up, connections) = upstream("a", false).await;
    let p = proxy().await;
    p.proxy
        .set_route(limited(
            TargetRef::new(1, up, "r1"),
            RouteLimits {
                max_body: Some(100),
                ..Default::default()
            },
        ))
        .unwrap();
    let big = "x".repeat(1000);
    let declared = format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1000\r\n\r\n{big}");
    let (status, _) = request(p.addr, &declared).await;
    assert_eq!(status, 413);
    assert_eq!(
        connections.load(Ordering::Relaxed),
        0,
        "refused before the app"
    );
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n{big}\r\n0\r\n\r\n"
    );
    let (status, _) = request(p.addr, &chunked).await;
    assert_eq!(status, 413);
    let small = format!(
        "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    let (status, body) = request(p.addr, &small).await;
    assert_eq!((status, body.contains("body=hello")), (200, true), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_get_400_and_a_body_framed_two_ways_reaches_the_app_framed_once() {
    let (up, connections) = upstream("a", false).await;
    let p = proxy().await;
    p.proxy
        .set_route(route(Some(TargetRef::new(1, up, "r1"))))
        .unwrap();
    let two_hosts = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: evil.test\r\n\r\n");
    let (status, body) = request(p.addr, &two_hosts).await;
    assert_eq!(status, 400);
    assert!(body.contains("more than one Host"), "{body}");
    let (status, _) = request(p.addr, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 400, "HTTP/1.1 without Host");
    assert_eq!(
        connections.load(Ordering::Relaxed),
        0,
        "neither reached the app"
    );
    // Content-Length and chunked at once, the smuggling shape: the chunks
    // win, the length is dropped, and the connection closes after the
    // answer, so a second request hidden in the body is never read.
    let smuggled = format!(
        "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    stream.write_all(smuggled.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert_eq!(out.matches("HTTP/1.1 200").count(), 1, "{out}");
    assert!(out.contains("body=hello\n"), "{out}");
    assert!(!out.contains("uri=/admin"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_believed_only_from_trusted_proxies_and_proxy_protocol() {
    let (up, _) = upstream("a", false).await;
    let forged = format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: bank.test\r\nConnection: close\r\n\r\n"
    );
    // Nobody trusted: the client's claims are replaced.
    let p = proxy().await;
    p.proxy
        .set_route(route(Some(TargetRef::new(1, up, "r1"))))
        .unwrap();
    let (_, body) = request(p.addr, &forged).await;
    assert!(body.contains("xff=127.0.0.1\n"), "{body}");
    assert!(
        body.contains("proto=http\n") && body.contains(&format!("xhost={HOST}\n")),
        "{body}"
    );
    // Loopback is a trusted proxy: its hops are kept and appended to.
    let trusting = EdgeConfig {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..Default::default()
    };
    let p = proxy_with(trusting, None).await;
    p.proxy
        .set_route(route(Some(TargetRef::new(1, up, "r1"))))
        .unwrap();
    let (_, body) = request(p.addr, &forged).await;
    assert!(body.contains("xff=6.6.6.6, 127.0.0.1\n"), "{body}");
    assert!(
        body.contains("proto=https\n") && body.contains("xhost=bank.test\n"),
        "{body}"
    );
    // A load balancer speaking the PROXY protocol names the real client.
    let behind_lb = EdgeConfig {
        proxy_protocol: vec!["127.0.0.1/32".parse().unwrap()],
        ..Default::default()
    };
    let p = proxy_with(behind_lb, None).await;
    p.proxy
        .set_route(route(Some(TargetRef::new(1, up, "r1"))))
        .unwrap();
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[
        0x21, 0x11, 0x00, 0x0c, 203, 0, 113, 9, 127, 0, 0, 1, 0x30, 0x39, 0x1f, 0x90,
    ]);
    let mut stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    stream.write_all(&header).await.unwrap();
    stream.write_all(get("/", HOST).as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(out.contains("xff=203.0.113.9\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_one_access_log_line_with_its_request_id() {
    let (up, _) = upstream("a", false).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::open(path.clone(), 1 << 20, 2).unwrap();
    let p = proxy_with(EdgeConfig::default(), Some(log)).await;
    p.proxy
        .set_route(route(Some(TargetRef::new(7, up, "r7"))))
        .unwrap();
    let raw = format!("GET /orders?x=1 HTTP/1.1\r\nHost: {HOST}\r\nX-Request-Id: trace-42\r\nConnection: close\r\n\r\n");
    let (status, _) = request(p.addr, &raw).await;
    assert_eq!(status, 200);
    let (status, _) = request(p.addr, &get("/", "nobody.test")).await;
    assert_eq!(status, 404);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 2 || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ok = records
        .iter()
        .find(|r| r["request_id"] == "trace-42")
        .expect("the forwarded request");
    assert_eq!(ok["app"], "app");
    assert_eq!(ok["environment"], "production");
    assert_eq!(ok["path"], "/orders");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["target"], 7);
    assert!(ok["bytes"].as_u64().unwrap() > 0);
    let refused = records
        .iter()
        .find(|r| r["status"] == 404)
        .expect("the unknown host");
    assert_eq!(refused["error"], "unknown_host");
    assert_eq!(refused["host"], "nobody.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_reaches_the_app_over_http_1_1() {
    let (up, _) = upstream("h2", false).await;
    let p = proxy().await;
    p.proxy
        .set_route(route(Some(TargetRef::new(1, up, "r1"))))
        .unwrap();
    let stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // Streams side by side on the one connection.
    let asked: Vec<_> = (0..5)
        .map(|n| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let request = Request::builder()
                    .uri(format!("http://{HOST}/n{n}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                let version = response.version();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (
                    n,
                    version,
                    status,
                    String::from_utf8_lossy(&body).to_string(),
                )
            })
        })
        .collect();
    for answer in asked {
        let (n, version, status, body) = answer.await.unwrap();
        assert_eq!(version, hyper::Version::HTTP_2);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("uri=/n{n}\n")), "{body}");
        assert!(body.contains(&format!("xhost={HOST}")), "{body}");
        assert!(body.contains("proto=http"), "{body}");
    }
}
