//! WebSockets through deploys: an open socket stays on the release it was
//! opened on, loses no message, is closed only once its drain time is
//! over; new sockets reach the new release. Server-sent events arrive as
//! they are sent.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const WS_HOST: &str = "ws.localhost";
/// WebSockets open through every deploy.
const SOCKETS: usize = 50;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ws-echo")
}

/// The WebSocket echo app, at a version of its own (a different release).
fn ws_app(version: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["app.py", "baton.toml"] {
        std::fs::copy(fixture().join(file), dir.path().join(file)).unwrap();
    }
    let manifest = dir.path().join("baton.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("VERSION = \"1\"", &format!("VERSION = \"{version}\"")),
    )
    .unwrap();
    dir
}

struct Socket {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    release: String,
}

/// Opens a WebSocket through the proxy and learns which release answers.
async fn open(proxy: std::net::SocketAddr) -> Socket {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (read, mut writer) = stream.into_split();
    let mut reader = BufReader::new(read);
    let request = format!(
        "GET /socket HTTP/1.1\r\nHost: {WS_HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    writer.write_all(request.as_bytes()).await.unwrap();
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    writer.write_all(b"hello\n").await.unwrap();
    let mut echo = String::new();
    reader.read_line(&mut echo).await.unwrap();
    let release = echo.split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(echo.trim_end(), format!("{release} hello"));
    Socket {
        reader,
        writer,
        release,
    }
}

/// What one socket saw until the proxy closed it.
struct Talk {
    echoed: usize,
    /// Messages sent and never echoed (at most the one in flight when the
    /// connection was closed).
    unanswered: usize,
    wrong_release: usize,
    closed_ms: i64,
}

/// Sends a numbered line every 20 ms and checks each echo, until closed.
async fn talk(mut socket: Socket) -> Talk {
    let mut talk = Talk {
        echoed: 0,
        unanswered: 0,
        wrong_release: 0,
        closed_ms: 0,
    };
    for n in 0.. {
        if socket
            .writer
            .write_all(format!("m{n}\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
        let mut echo = String::new();
        match socket.reader.read_line(&mut echo).await {
            Ok(0) | Err(_) => {
                talk.unanswered += 1;
                break;
            }
            Ok(_) => {
                talk.echoed += 1;
                if echo.trim_end() != format!("{} m{n}", socket.release) {
                    talk.wrong_release += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    talk.closed_ms = now_ms();
    talk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_websockets_stay_on_their_release_until_the_drain_time_then_reconnect_to_the_new_one()
{
    let server = Server::start();
    let first = ws_app(1);
    server.deploy(first.path());
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        sockets.push(open(server.proxy).await);
    }
    let mut release = sockets[0].release.clone();
    for version in 2..=11 {
        assert!(sockets.iter().all(|s| s.release == release));
        let talking: Vec<_> = sockets.drain(..).map(|s| tokio::spawn(talk(s))).collect();
        let next = ws_app(version);
        let deployment = server.deploy(next.path());
        let (_, switched) = switch_window(&deployment);
        let drain = deployment["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == "drain")
            .unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            drain.contains(&format!("{SOCKETS} WebSockets and event streams closed")),
            "{drain}"
        );
        for talked in talking {
            let talked = talked.await.unwrap();
            assert!(talked.echoed > 0);
            assert_eq!(talked.wrong_release, 0, "a socket changed release");
            // Every message answered, but the one on its way when the
            // connection was closed at the end of the drain.
            assert!(
                talked.unanswered <= 1,
                "{} messages lost",
                talked.unanswered
            );
            // Never closed before its drain time (2 s) after the switch.
            assert!(
                talked.closed_ms >= switched + 2_000,
                "closed {} ms after the switch",
                talked.closed_ms - switched
            );
        }
        // New sockets reach the new release.
        for _ in 0..SOCKETS {
            sockets.push(open(server.proxy).await);
        }
        assert_ne!(sockets[0].release, release);
        release = sockets[0].release.clone();
    }
    let status = server.json(&["status"]);
    let ws = status
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["app"] == "ws")
        .unwrap();
    assert_eq!(ws["live"]["long_lived"], SOCKETS, "{ws}");
    let text = server.baton_ok(&["status"]);
    assert!(
        text.contains(&format!("({SOCKETS} open WebSockets/streams)")),
        "{text}"
    );
    let events = server.json(&["events", "ws"]);
    let closed = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "long_lived_closed")
        .count();
    assert_eq!(closed, 10, "one event per deploy: {events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_as_they_are_sent() {
    let server = Server::start();
    let app = ws_app(1);
    server.deploy(app.path());
    let stream = TcpStream::connect(server.proxy).await.unwrap();
    let (read, mut writer) = stream.into_split();
    writer
        .write_all(
            format!("GET /events HTTP/1.1\r\nHost: {WS_HOST}\r\nAccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut reader = BufReader::new(read);
    let mut delays = Vec::new();
    let mut line = String::new();
    while delays.len() < 20 {
        line.clear();
        assert!(
            reader.read_line(&mut line).await.unwrap() > 0,
            "the stream ended early"
        );
        if let Some(sent) = line.trim_end().strip_prefix("data: ") {
            let sent: f64 = sent.parse().unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
                * 1000.0;
            delays.push(now - sent);
        }
    }
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!(
        "server-sent events through the proxy: delay median {:.1} ms, max {:.1} ms (events 200 ms apart)",
        delays[10], delays[19]
    );
    // A proxy that buffered would hold events back until the stream ends
    // (3.8 s after the first) or a buffer fills: each arrives before the
    // next one is sent.
    assert!(delays[19] < 200.0, "delays {delays:?}");
}
