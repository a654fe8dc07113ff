//! Long-lived traffic through the proxy: WebSocket (any 101) upgrades
//! tunnelled both ways, server-sent events passed on as they come, and a
//! stopping proxy that lets an open tunnel run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_proxy::{Proxy, RouteKey, RouteSpec, TargetRef};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

const HOST: &str = "app.test";

/// Reads until `needle` has arrived (or fails after 10 s: the bound of a
/// broken test, not a measurement).
async fn read_until(stream: &mut (impl AsyncRead + Unpin), needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let reading = async {
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {needle:?}: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&seen)));
    String::from_utf8_lossy(&seen).to_string()
}

/// An app that switches to an echo protocol on `Upgrade: websocket`.
async fn websocket_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let head = read_until(&mut stream, "\r\n\r\n")
                    .await
                    .to_ascii_lowercase();
                assert!(head.contains("upgrade: websocket"), "{head}");
                assert!(head.contains("connection: upgrade"), "{head}");
                stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let mut echo = b"echo:".to_vec();
                    echo.extend_from_slice(&buf[..n]);
                    if stream.write_all(&echo).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

struct Running {
    proxy: Arc<Proxy>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    served: tokio::task::JoinHandle<()>,
}

async fn proxy_to(upstream: SocketAddr, id: i64) -> Running {
    let proxy = Proxy::new();
    let listeners = Proxy::bind("127.0.0.1:0", 1).unwrap();
    let addr = listeners.local_addr();
    let (stop, stopped) = watch::channel(false);
    let served =
        tokio::spawn(Arc::clone(&proxy).serve(listeners, stopped, Duration::from_secs(20)));
    proxy
        .set_route(RouteSpec {
            key: RouteKey::new("app", "production"),
            hosts: vec![HOST.into()],
            preview_hosts: vec![],
            live: Some(TargetRef::new(id, upstream, "r1")),
            live_instances: Vec::new(),
            preview: None,
            hold_timeout: Duration::from_secs(5),
            limits: Default::default(),
            maintenance: None,
            tls: None,
            canary: None,
            live_updates: false,
        })
        .unwrap();
    Running {
        proxy,
        addr,
        stop,
        served,
    }
}

async fn open_websocket(addr: SocketAddr) -> (TcpStream, String) {
    let mut client = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /cable HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let head = read_until(&mut client, "\r\n\r\n").await;
    (client, head)
}

async fn until_in_flight(proxy: &Proxy, id: i64, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy.stats(id).map(|s| s.in_flight) != Some(n) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "in flight never {n}: {:?}",
            proxy.stats(id)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_is_tunnelled_both_ways_and_in_flight_until_it_closes() {
    let p = proxy_to(websocket_app().await, 1).await;
    let (mut client, head) = open_websocket(p.addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(lower.contains("x-request-id: "), "{head}");
    client.write_all(b"ping").await.unwrap();
    read_until(&mut client, "echo:ping").await;
    // A deploy's drain waits for it; `baton status` counts it.
    until_in_flight(&p.proxy, 1, 1).await;
    assert_eq!(p.proxy.stats(1).unwrap().long_lived, 1);
    drop(client);
    until_in_flight(&p.proxy, 1, 0).await;
    assert_eq!(p.proxy.stats(1).unwrap().long_lived, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_drain_time_is_over_websockets_and_event_streams_are_closed() {
    let p = proxy_to(websocket_app().await, 4).await;
    let (mut socket, head) = open_websocket(p.addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    until_in_flight(&p.proxy, 4, 1).await;
    assert_eq!(p.proxy.cut_long_lived(4), 1);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut rest))
        .await
        .expect("the WebSocket is closed")
        .unwrap();
    until_in_flight(&p.proxy, 4, 0).await;

    // An event stream that never ends on its own is ended cleanly.
    let (app, _never) = event_stream_app().await;
    let p = proxy_to(app, 5).await;
    let mut client = open_events(p.addr).await;
    read_until(&mut client, "data: one").await;
    assert_eq!(p.proxy.stats(5).unwrap().long_lived, 1);
    assert_eq!(p.proxy.cut_long_lived(5), 1);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest))
        .await
        .expect("the event stream is ended")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&rest).ends_with("0\r\n\r\n"),
        "ended as a whole chunked body: {rest:?}"
    );
    until_in_flight(&p.proxy, 5, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_proxy_lets_an_open_tunnel_run() {
    let p = proxy_to(websocket_app().await, 2).await;
    let (mut client, head) = open_websocket(p.addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    p.stop.send(true).unwrap();
    // New connections are no longer accepted…
    let refused = async {
        loop {
            match TcpStream::connect(p.addr).await {
                Err(_) => return,
                Ok(mut other) => {
                    // Accepted by the kernel only: never answered.
                    let mut buf = [0u8; 1];
                    let _ = other
                        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
                        .await;
                    if tokio::time::timeout(Duration::from_millis(200), other.read(&mut buf))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("the stopped proxy still answers new connections");
    // …while the open tunnel carries on until it closes.
    client.write_all(b"after").await.unwrap();
    read_until(&mut client, "echo:after").await;
    assert!(!p.served.is_finished());
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), p.served)
        .await
        .expect("the proxy stops once the tunnel closed")
        .unwrap();
}

/// An app answering one event stream: a first event, then a second (and
/// the end) only once told.
async fn event_stream_app() -> (SocketAddr, Arc<Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let next = Arc::new(Notify::new());
    let told = Arc::clone(&next);
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_until(&mut stream, "\r\n\r\n").await;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nb\r\ndata: one\n\n\r\n")
            .await
            .unwrap();
        told.notified().await;
        stream
            .write_all(b"b\r\ndata: two\n\n\r\n0\r\n\r\n")
            .await
            .unwrap();
    });
    (app, next)
}

async fn open_events(proxy: SocketAddr) -> TcpStream {
    let mut client = TcpStream::connect(proxy).await.unwrap();
    let request = format!("GET /events HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_are_passed_on_as_they_come() {
    // The second event only once the client has the first: a proxy that
    // buffered would never deliver it.
    let (app, next) = event_stream_app().await;
    let p = proxy_to(app, 3).await;
    let mut client = open_events(p.addr).await;
    let first = read_until(&mut client, "data: one").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(!first.contains("data: two"));
    next.notify_one();
    read_until(&mut client, "data: two").await;
}
