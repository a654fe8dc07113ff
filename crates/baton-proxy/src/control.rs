//! The proxy process's control socket: how `baton server` drives a proxy
//! that runs in a process of its own, and how a new proxy takes over from
//! an old one. A Unix socket in the data folder (only its owner may
//! connect); one JSON request per line, one JSON reply per line.
//!
//! A hold lives as long as the connection that asked for it: if the
//! control plane dies holding a route, the route is released at once.
//! A hand-over passes the listening sockets themselves (SCM_RIGHTS), so
//! connections waiting in the kernel's queue are never lost.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::route::{RouteKey, RouteSpec};
use crate::server::Proxy;
use crate::target::TargetStats;
use crate::tls::{CertificateSpec, Challenge};

/// The longest request or reply line (a whole route table fits).
const MAX_LINE: u64 = 32 << 20;

/// What a proxy process is asked.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who are you? (pid, binary, settings)
    Hello,
    SetRoute {
        spec: Box<RouteSpec>,
    },
    RemoveRoute {
        key: RouteKey,
    },
    /// Replace the whole table (the control plane's start-up).
    ReplaceRoutes {
        routes: Vec<RouteSpec>,
    },
    /// Hold a route until `Release` on this connection, or until it closes.
    Hold {
        key: RouteKey,
    },
    Release,
    Stats {
        targets: Vec<i64>,
    },
    Drain {
        target: i64,
        timeout_ms: u64,
    },
    /// Close the target's WebSockets and event streams.
    Cut {
        target: i64,
    },
    /// Serve exactly these certificates over HTTPS.
    SetCertificates {
        certificates: Vec<CertificateSpec>,
    },
    /// Answer exactly these ACME challenges.
    SetChallenges {
        challenges: Vec<Challenge>,
    },
    /// A successor asks for the listening sockets; answered with them, then
    /// with the table. The successor says `Serving` when it accepts.
    HandOver,
    /// The control plane asks for a handle on the listening sockets, to
    /// keep them open (and give them to a proxy it starts) should this
    /// proxy die: clients then wait in the accept queue, never refused.
    Sockets,
    Serving,
    /// Stop accepting, finish what is in flight, exit.
    Stop,
}

/// What a proxy process answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Hello {
        info: ProxyInfo,
    },
    Done,
    Refused {
        refused: Vec<(RouteKey, String)>,
    },
    Held,
    Released {
        waiting: usize,
    },
    Stats {
        stats: Vec<(i64, TargetStats)>,
    },
    Drained {
        left: usize,
    },
    Cut {
        closed: usize,
    },
    HandingOver {
        listening: Vec<SocketAddr>,
        routes: Vec<RouteSpec>,
        #[serde(default)]
        certificates: Vec<CertificateSpec>,
    },
    /// Certificates or challenges not taken (by name, with why); the
    /// others are served.
    NotServed {
        refused: Vec<(String, String)>,
    },
    Sockets {
        listening: Vec<SocketAddr>,
    },
    Stopping,
    Error {
        message: String,
    },
}

/// How a proxy process is set up; the server writes it to the data folder
/// before starting one, and starts a successor when it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxySettings {
    /// Address to serve app traffic on (port 0: any free port).
    pub listen: String,
    /// Address to serve HTTPS on, if any (port 0: any free port).
    #[serde(default)]
    pub https_listen: Option<String>,
    pub workers: usize,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub proxy_protocol: Vec<ipnet::IpNet>,
    pub max_connections: usize,
    /// How long a stopping proxy lets requests in flight finish.
    pub stop_timeout: Duration,
}

impl ProxySettings {
    /// Whether a proxy set up with `running` (and listening on
    /// `listening`) serves as these settings ask: a port 0 asked for is
    /// whichever port it got.
    pub fn served_by(&self, running: &ProxySettings, listening: SocketAddr) -> bool {
        let same_listen = self.listen == running.listen || self.listens_on(listening);
        same_listen
            && ProxySettings {
                listen: running.listen.clone(),
                ..self.clone()
            } == *running
    }

    /// Whether a proxy listening on `addr` serves what these settings ask.
    pub fn listens_on(&self, addr: SocketAddr) -> bool {
        address_is(&self.listen, addr)
    }

    /// Whether `addr` is the HTTPS address these settings ask for.
    pub fn serves_https_on(&self, addr: SocketAddr) -> bool {
        self.https_listen
            .as_deref()
            .is_some_and(|wanted| address_is(wanted, addr))
    }
}

/// Whether a socket bound to `addr` is the one `wanted` asks for: a port 0
/// asked for is whichever port it got, a name is compared by port.
fn address_is(wanted: &str, addr: SocketAddr) -> bool {
    match wanted.parse::<SocketAddr>() {
        Ok(wanted) if wanted.port() == 0 => wanted.ip() == addr.ip(),
        Ok(wanted) => wanted == addr,
        // A name: resolved by whoever binds it, so compare by port.
        Err(_) => {
            wanted
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                == Some(addr.port())
        }
    }
}

/// Which file a path is (device and inode), whatever its name: the binary a
/// process runs even after a package manager replaced it on disk, or the
/// control socket a proxy bound, told from a successor's at the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
        })?;
        Ok(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The executable this process runs.
    pub fn of_this_process() -> std::io::Result<FileId> {
        FileId::of(Path::new("/proc/self/exe"))
    }
}

/// A proxy process, as it describes itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyInfo {
    pub pid: u32,
    pub version: String,
    pub exe: FileId,
    pub listening: SocketAddr,
    /// Where it serves HTTPS, if it does.
    #[serde(default)]
    pub https: Option<SocketAddr>,
    pub settings: ProxySettings,
    /// Milliseconds since the Unix epoch.
    pub started_ms: i64,
}

/// Where a data folder's proxy keeps its socket, table and settings.
#[derive(Debug, Clone)]
pub struct ProxyFiles {
    pub dir: PathBuf,
}

impl ProxyFiles {
    pub fn in_data(data: &Path) -> ProxyFiles {
        ProxyFiles {
            dir: data.join("proxy"),
        }
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    pub fn routes(&self) -> PathBuf {
        self.dir.join("routes.json")
    }
    pub fn settings(&self) -> PathBuf {
        self.dir.join("settings.json")
    }
    /// The certificates served (keys included: owner-only, like the folder).
    pub fn certificates(&self) -> PathBuf {
        self.dir.join("certificates.json")
    }
}

/// A line-oriented connection to or from a proxy.
pub(crate) struct Line {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Line {
    pub fn new(stream: UnixStream) -> Line {
        let (read, write) = stream.into_split();
        Line {
            reader: BufReader::new(read),
            writer: write,
        }
    }

    pub async fn send<T: Serialize>(&mut self, message: &T) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.writer.write_all(&line).await
    }

    /// The next message; `None` when the other side closed.
    pub async fn receive<T: for<'de> Deserialize<'de>>(&mut self) -> std::io::Result<Option<T>> {
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if line.is_empty() {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "control message too long or cut short",
            ));
        }
        serde_json::from_slice(&line)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Nothing may have been read ahead: file descriptors arrive with the
    /// first byte of their message.
    pub async fn receive_fds(&mut self, max: usize) -> std::io::Result<Vec<OwnedFd>> {
        if !self.reader.buffer().is_empty() {
            return Err(std::io::Error::other(
                "control stream read ahead of its sockets",
            ));
        }
        crate::handover::receive_fds(self.reader.get_ref().as_ref(), max).await
    }

    pub async fn send_fds(&mut self, fds: &[std::os::fd::BorrowedFd<'_>]) -> std::io::Result<()> {
        crate::handover::send_fds(self.writer.as_ref(), fds).await
    }
}

/// What the control server needs besides the proxy.
pub struct Control {
    pub proxy: Arc<Proxy>,
    pub info: ProxyInfo,
    /// The listening sockets, to give a successor; emptied when the proxy
    /// stops on its own, so that the socket closes with its last handle.
    pub listening: std::sync::Mutex<Vec<std::net::TcpListener>>,
    /// Turned true to stop the proxy (a `Stop`, or a successor serving).
    pub stop: watch::Sender<bool>,
    /// Told after every change to the table, to persist it.
    pub changed: tokio::sync::Notify,
}

/// Answers control connections until the proxy stops.
pub async fn serve_control(control: Arc<Control>, listener: UnixListener) {
    let mut stopped = control.stop.subscribe();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = until_true(&mut stopped) => return,
        };
        // The socket's folder already keeps others out; the peer's uid
        // says so again.
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == nix::unistd::getuid().as_raw() || cred.uid() == 0 => {}
            _ => {
                tracing::warn!("control connection from another user refused");
                continue;
            }
        }
        let control = Arc::clone(&control);
        tokio::spawn(async move {
            if let Err(e) = control.connection(Line::new(stream)).await {
                tracing::debug!(error = %e, "control connection ended with an error");
            }
        });
    }
}

impl Control {
    /// Stops with no successor: the listening socket closes as soon as the
    /// accept loops let go of it, so new clients are refused at once rather
    /// than queued for nobody.
    pub fn stop_alone(&self) {
        self.listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let _ = self.stop.send(true);
    }

    async fn connection(&self, mut line: Line) -> std::io::Result<()> {
        while let Some(request) = line.receive::<Request>().await? {
            let reply = match request {
                Request::Hello => Reply::Hello {
                    info: self.info.clone(),
                },
                Request::SetRoute { spec } => {
                    let key = spec.key.clone();
                    match self.proxy.set_route(*spec) {
                        Ok(()) => {
                            self.changed.notify_one();
                            Reply::Done
                        }
                        Err(e) => Reply::Refused {
                            refused: vec![(key, e.to_string())],
                        },
                    }
                }
                Request::RemoveRoute { key } => {
                    self.proxy.remove_route(&key);
                    self.changed.notify_one();
                    Reply::Done
                }
                Request::ReplaceRoutes { routes } => {
                    let refused = self.proxy.replace_routes(routes);
                    self.changed.notify_one();
                    if refused.is_empty() {
                        Reply::Done
                    } else {
                        Reply::Refused {
                            refused: refused
                                .into_iter()
                                .map(|(key, e)| (key, e.to_string()))
                                .collect(),
                        }
                    }
                }
                Request::Hold { key } => {
                    let guard = self.proxy.hold(&key);
                    line.send(&Reply::Held).await?;
                    // Released by the next message, or by the connection's end.
                    let next = line.receive::<Request>().await;
                    let waiting = guard.waiting();
                    drop(guard);
                    match next? {
                        Some(Request::Release) => Reply::Released { waiting },
                        Some(_) => Reply::Error {
                            message: "a held connection takes only `release`".into(),
                        },
                        None => return Ok(()),
                    }
                }
                Request::Release => Reply::Error {
                    message: "nothing is held on this connection".into(),
                },
                Request::Stats { targets } => Reply::Stats {
                    stats: targets
                        .into_iter()
                        .filter_map(|id| self.proxy.stats(id).map(|s| (id, s)))
                        .collect(),
                },
                Request::Drain { target, timeout_ms } => Reply::Drained {
                    left: self
                        .proxy
                        .drain(target, Duration::from_millis(timeout_ms))
                        .await,
                },
                Request::Cut { target } => Reply::Cut {
                    closed: self.proxy.cut_long_lived(target),
                },
                Request::SetCertificates { certificates } => {
                    let refused = self.proxy.set_certificates(&certificates);
                    self.changed.notify_one();
                    not_served(refused)
                }
                Request::SetChallenges { challenges } => {
                    not_served(self.proxy.set_challenges(&challenges))
                }
                Request::HandOver => return self.hand_over(line).await,
                Request::Sockets => {
                    let listening = self.send_sockets(&mut line).await?;
                    if !listening.is_empty() {
                        Reply::Sockets { listening }
                    } else {
                        Reply::Error {
                            message: "this proxy is stopping and has no socket to give".into(),
                        }
                    }
                }
                Request::Serving => Reply::Error {
                    message: "`serving` only follows a hand-over".into(),
                },
                Request::Stop => {
                    tracing::info!("asked to stop");
                    self.stop_alone();
                    Reply::Stopping
                }
            };
            line.send(&reply).await?;
        }
        Ok(())
    }

    /// Gives a successor the listening sockets and the table; stops once
    /// it says it is serving. If it dies first, this proxy carries on.
    /// Sends handles on the listening sockets (none when stopping alone);
    /// returns their addresses, in the same order.
    async fn send_sockets(&self, line: &mut Line) -> std::io::Result<Vec<SocketAddr>> {
        let sockets: Vec<std::net::TcpListener> = self
            .listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| l.try_clone())
            .collect::<std::io::Result<_>>()?;
        let listening = sockets
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        let fds: Vec<_> = sockets.iter().map(|l| l.as_fd()).collect();
        line.send_fds(&fds).await?;
        Ok(listening)
    }

    /// Gives a successor the listening sockets and the table; stops once
    /// it says it is serving. If it dies first, this proxy carries on.
    async fn hand_over(&self, mut line: Line) -> std::io::Result<()> {
        let listening = self.send_sockets(&mut line).await?;
        if listening.is_empty() {
            return line
                .send(&Reply::Error {
                    message: "this proxy is stopping and has no socket to hand over".into(),
                })
                .await;
        }
        line.send(&Reply::HandingOver {
            listening,
            routes: self.proxy.table().specs(),
            certificates: self.proxy.certificate_specs(),
        })
        .await?;
        match line.receive::<Request>().await {
            Ok(Some(Request::Serving)) => {
                tracing::info!("the successor serves; stopping");
                let _ = self.stop.send(true);
                line.send(&Reply::Stopping).await
            }
            other => {
                tracing::warn!(
                    outcome = ?other.map(|o| o.is_some()),
                    "the successor did not take over; serving on"
                );
                Ok(())
            }
        }
    }
}

/// Handles on the listening sockets of the proxy at `socket`, with their
/// addresses.
pub async fn sockets(socket: &Path) -> std::io::Result<Vec<(std::net::TcpListener, SocketAddr)>> {
    let exchange = async {
        let mut line = Line::new(UnixStream::connect(socket).await?);
        line.send(&Request::Sockets).await?;
        let fds = line.receive_fds(16).await?;
        match line.receive::<Reply>().await? {
            Some(Reply::Sockets { listening }) if listening.len() == fds.len() => Ok(fds
                .into_iter()
                .map(std::net::TcpListener::from)
                .zip(listening)
                .collect()),
            other => Err(std::io::Error::other(format!(
                "the proxy did not give its sockets: {other:?}"
            ))),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "the proxy did not answer")
        })?
}

/// Returns once `flag` is true (or its sender is gone).
pub async fn until_true(flag: &mut watch::Receiver<bool>) {
    while !*flag.borrow_and_update() {
        if flag.changed().await.is_err() {
            return;
        }
    }
}

/// Asks the proxy at `socket` one thing and returns its answer.
pub async fn ask(socket: &Path, request: &Request, timeout: Duration) -> std::io::Result<Reply> {
    let exchange = async {
        let mut line = Line::new(UnixStream::connect(socket).await?);
        line.send(request).await?;
        line.receive::<Reply>().await?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the proxy closed the connection without answering",
            )
        })
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, "the proxy did not answer")
    })?
}

/// Takes the listening sockets and table over from the proxy at `socket`.
/// Returns the sockets, with their addresses, the table, and the
/// connection on which to say `Serving` once accepting.
pub async fn take_over(socket: &Path) -> std::io::Result<TakeOver> {
    let mut line = Line::new(UnixStream::connect(socket).await?);
    line.send(&Request::HandOver).await?;
    let fds = line.receive_fds(16).await?;
    match line.receive::<Reply>().await? {
        Some(Reply::HandingOver {
            listening,
            routes,
            certificates,
        }) if listening.len() == fds.len() => Ok(TakeOver {
            certificates,
            sockets: fds
                .into_iter()
                .map(std::net::TcpListener::from)
                .zip(listening)
                .collect(),
            routes,
            line,
        }),
        other => Err(std::io::Error::other(format!(
            "the running proxy did not hand its sockets over: {other:?}"
        ))),
    }
}

/// What a successor gets from the proxy it takes over from.
pub struct TakeOver {
    pub sockets: Vec<(std::net::TcpListener, SocketAddr)>,
    pub routes: Vec<RouteSpec>,
    pub certificates: Vec<CertificateSpec>,
    line: Line,
}

fn not_served(refused: Vec<(String, String)>) -> Reply {
    if refused.is_empty() {
        Reply::Done
    } else {
        Reply::NotServed { refused }
    }
}

impl TakeOver {
    /// Tells the old proxy this one accepts now; it stops accepting and
    /// finishes what it has.
    pub async fn serving(mut self) -> std::io::Result<()> {
        self.line.send(&Request::Serving).await?;
        match self.line.receive::<Reply>().await? {
            Some(Reply::Stopping) => Ok(()),
            other => Err(std::io::Error::other(format!(
                "the old proxy did not confirm it stops: {other:?}"
            ))),
        }
    }
}
