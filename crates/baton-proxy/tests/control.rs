//! The control socket end to end, in one process: a proxy's control server
//! on a Unix socket, driven by the control plane's `ProxyClient`, and a
//! successor taking the listening socket and the table over.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton_proxy::control::{self, Control, FileId, ProxyInfo, ProxySettings};
use baton_proxy::{Proxy, ProxyClient, RouteKey, RouteSpec, TargetRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const HOST: &str = "app.test";

struct Running {
    control: Arc<Control>,
    client: ProxyClient,
    addr: SocketAddr,
    stopped: watch::Receiver<bool>,
}

async fn start(dir: &Path) -> Running {
    let proxy = Proxy::new();
    let listeners = Proxy::bind("127.0.0.1:0", 1).unwrap();
    let addr = listeners.local_addr();
    let (stop, stopped) = watch::channel(false);
    let control = Arc::new(Control {
        proxy: Arc::clone(&proxy),
        info: ProxyInfo {
            pid: std::process::id(),
            version: "test".into(),
            exe: FileId::of_this_process().unwrap(),
            listening: addr,
            https: None,
            settings: ProxySettings {
                listen: "127.0.0.1:0".into(),
                https_listen: None,
                workers: 1,
                trusted_proxies: vec![],
                proxy_protocol: vec![],
                max_connections: 64,
                stop_timeout: Duration::from_secs(5),
            },
            started_ms: 0,
        },
        listening: std::sync::Mutex::new(listeners.sockets().unwrap()),
        stop,
        changed: tokio::sync::Notify::new(),
    });
    let socket = dir.join("control.sock");
    let unix = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(control::serve_control(Arc::clone(&control), unix));
    tokio::spawn(proxy.serve(listeners, stopped.clone(), Duration::from_secs(5)));
    Running {
        control,
        client: ProxyClient::new(&socket),
        addr,
        stopped,
    }
}

/// An upstream answering every request with 200 and its path.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                    )
                    .await;
            });
        }
    });
    addr
}

fn route(live: TargetRef) -> RouteSpec {
    RouteSpec {
        key: RouteKey::new("app", "production"),
        hosts: vec![HOST.into()],
        preview_hosts: vec![],
        live: Some(live),
        live_instances: Vec::new(),
        preview: None,
        hold_timeout: Duration::from_secs(30),
        limits: Default::default(),
        maintenance: None,
        tls: None,
        canary: None,
        live_updates: false,
    }
}

async fn get(addr: SocketAddr) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_set_through_the_socket_serve_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path()).await;
    let up = upstream().await;
    p.client
        .set_route(route(TargetRef::new(7, up, "r7")))
        .await
        .unwrap();
    assert_eq!(get(p.addr).await, 200);
    let stats = p.client.stats(&[7, 8]).await;
    assert_eq!(stats[&7].requests, 1);
    assert!(!stats.contains_key(&8), "an unknown target has no counters");
    assert_eq!(p.client.drain(7, Duration::from_secs(1)).await.unwrap(), 0);
    // A host another route has is refused, with the owner named.
    let mut other = route(TargetRef::new(8, up, "r8"));
    other.key = RouteKey::new("other", "production");
    let refused = p.client.set_route(other).await.unwrap_err().to_string();
    assert!(
        refused.contains("already served by app in production"),
        "{refused}"
    );
    assert_eq!(
        p.client.owner(HOST),
        Some(RouteKey::new("app", "production"))
    );
    p.client
        .remove_route(&RouteKey::new("app", "production"))
        .await
        .unwrap();
    assert_eq!(get(p.addr).await, 404);
    assert_eq!(p.client.owner(HOST), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_ends_with_its_release_or_with_the_connection_that_asked_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path()).await;
    let up = upstream().await;
    let key = RouteKey::new("app", "production");
    p.client
        .set_route(route(TargetRef::new(1, up, "r1")))
        .await
        .unwrap();

    // Released: the request that waited is counted, then served.
    let hold = p.client.hold(&key).await.unwrap();
    let waiting = tokio::spawn(get(p.addr));
    held(&p, &key, 1).await;
    assert_eq!(hold.release().await, 1);
    assert_eq!(waiting.await.unwrap(), 200);

    // The control plane dies holding the route: its connection closes, and
    // the proxy lets the request through.
    let hold = p.client.hold(&key).await.unwrap();
    let waiting = tokio::spawn(get(p.addr));
    held(&p, &key, 1).await;
    drop(hold);
    assert_eq!(waiting.await.unwrap(), 200);
    assert_eq!(p.control.proxy.held_requests(&key), 0);
}

/// Waits until `n` requests wait at the route's hold.
async fn held(p: &Running, key: &RouteKey, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while p.control.proxy.held_requests(key) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request waited at the hold"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_takes_the_listening_socket_and_the_table_and_the_old_proxy_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(dir.path()).await;
    let up = upstream().await;
    let spec = route(TargetRef::new(3, up, "r3"));
    p.client.set_route(spec.clone()).await.unwrap();

    let taken = control::take_over(&dir.path().join("control.sock"))
        .await
        .unwrap();
    assert_eq!(taken.routes, vec![spec]);
    assert_eq!(taken.sockets.len(), 1);
    let (socket, addr) = &taken.sockets[0];
    assert_eq!(*addr, p.addr);
    assert_eq!(socket.local_addr().unwrap(), p.addr);
    assert!(!*p.stopped.borrow(), "the old proxy serves until told");
    taken.serving().await.unwrap();
    control::until_true(&mut p.stopped).await;
}
