//! The server's side of the proxy process: find the proxy serving this
//! data folder and adopt it, or start one; hand over to a new one when the
//! binary or the settings changed (an upgrade); start it again if it dies.
//! The proxy runs in a session of its own, so neither the server's end (a
//! stop, a crash, kill -9, an upgrade) nor a terminal's Ctrl-C reaches it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use baton_proxy::control::{FileId, ProxyFiles, ProxyInfo, ProxySettings};
use baton_proxy::ProxyClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

/// How long a starting proxy may take to say it serves.
const START_WITHIN: Duration = Duration::from_secs(30);

pub struct DataPlane {
    pub client: Arc<ProxyClient>,
    files: ProxyFiles,
    data: PathBuf,
    exe: PathBuf,
    /// Handles on the proxy's listening sockets: while the proxy is dead
    /// they stay open, so clients wait in the accept queue (never refused)
    /// for the proxy this server starts again with them.
    kept: std::sync::Mutex<Vec<std::net::TcpListener>>,
}

/// How a proxy process starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Binding its own socket.
    Fresh,
    /// Taking the sockets over from the proxy running now.
    TakeOver,
    /// With the sockets this server kept from a proxy that died.
    Inherit,
}

impl DataPlane {
    /// The proxy serving `data` with `settings`, adopted, taken over or
    /// started, and what it says of itself.
    pub async fn start(
        data: &Path,
        exe: &Path,
        settings: &ProxySettings,
    ) -> Result<(DataPlane, ProxyInfo)> {
        let files = ProxyFiles::in_data(data);
        std::fs::create_dir_all(&files.dir)
            .with_context(|| format!("cannot create {}", files.dir.display()))?;
        // The proxy runs from elsewhere: it gets the folder's absolute path.
        let data = &std::fs::canonicalize(data)
            .with_context(|| format!("cannot resolve {}", data.display()))?;
        crate::data_folder::write_json(&files.settings(), settings)?;
        let plane = DataPlane {
            client: Arc::new(ProxyClient::new(&files.socket())),
            files,
            data: data.to_path_buf(),
            exe: exe.to_path_buf(),
            kept: std::sync::Mutex::new(Vec::new()),
        };
        let info = match plane.client.hello().await {
            Ok(info) => {
                let own = FileId::of_this_process()?;
                if info.exe == own && settings.served_by(&info.settings, info.listening) {
                    tracing::info!(pid = info.pid, listening = %info.listening, "the proxy serves on; adopted");
                    info
                } else {
                    let why = if info.exe != own {
                        "it runs another baton binary"
                    } else {
                        "its settings changed"
                    };
                    tracing::info!(
                        pid = info.pid,
                        "a new proxy takes over from the running one: {why}"
                    );
                    plane.launch(Start::TakeOver).await?
                }
            }
            Err(_) => plane.launch(Start::Fresh).await?,
        };
        plane.keep_sockets().await;
        Ok((plane, info))
    }

    /// Takes handles on the running proxy's listening sockets.
    async fn keep_sockets(&self) {
        match baton_proxy::control::sockets(&self.files.socket()).await {
            Ok(sockets) => {
                *self.kept.lock().unwrap_or_else(|e| e.into_inner()) =
                    sockets.into_iter().map(|(socket, _)| socket).collect();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep the proxy's sockets; if it dies, clients are refused until it is back")
            }
        }
    }

    /// Starts a proxy process and waits until it serves.
    async fn launch(&self, start: Start) -> Result<ProxyInfo> {
        let mut command = tokio::process::Command::new(&self.exe);
        command
            .args(["proxy", "run", "--data"])
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(false);
        if start == Start::TakeOver {
            command.arg("--take-over");
        }
        let inherited: Vec<i32> = match start {
            Start::Inherit => self
                .kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(std::os::fd::AsRawFd::as_raw_fd)
                .collect(),
            _ => Vec::new(),
        };
        for fd in &inherited {
            command.arg("--listening-fd").arg(fd.to_string());
        }
        // SAFETY: setsid and fcntl are async-signal-safe and touch no
        // memory; the descriptors stay open in the parent, which keeps
        // them close-on-exec for everything else it starts.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                for fd in &inherited {
                    nix::fcntl::fcntl(
                        *fd,
                        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                    )
                    .map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start the proxy ({})", self.exe.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no proxy output"))?;
        let first = tokio::time::timeout(START_WITHIN, async {
            BufReader::new(stdout).lines().next_line().await
        })
        .await;
        // Reaped whenever it ends, so it never lingers as a zombie.
        let pid = child.id();
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) if status.success() => {
                    tracing::info!(pid, "proxy process ended")
                }
                Ok(status) => tracing::warn!(pid, %status, "proxy process ended"),
                Err(e) => tracing::warn!(pid, error = %e, "cannot wait for the proxy process"),
            }
        });
        match first {
            Ok(Ok(Some(line))) if line.starts_with("ready ") => {}
            Ok(Ok(Some(line))) => bail!(
                "the proxy did not start: {}",
                line.trim_start_matches("error: ")
            ),
            Ok(_) => bail!("the proxy exited before serving; its log is above"),
            Err(_) => bail!("the proxy did not start within {START_WITHIN:?}"),
        }
        self.client
            .hello()
            .await
            .map_err(|e| anyhow!("the proxy started but does not answer: {e}"))
    }

    /// Watches the proxy until `stop`: a successor that took over is
    /// watched in turn; a proxy that died is started again and given the
    /// whole table.
    pub async fn supervise(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.client.hello().await.is_ok() {
                tokio::select! {
                    _ = self.until_gone() => {}
                    _ = baton_proxy::control::until_true(&mut stop) => return,
                }
                if *stop.borrow() {
                    return;
                }
            }
            if self.client.hello().await.is_ok() {
                // A successor took over; watch it, and keep its sockets.
                self.keep_sockets().await;
                backoff = Duration::from_millis(100);
                continue;
            }
            tracing::error!("the proxy is gone; starting it again");
            match self.launch(Start::Inherit).await {
                Ok(info) => {
                    tracing::info!(pid = info.pid, "proxy started again");
                    if let Err(e) = self.client.resend().await {
                        tracing::error!(error = %e, "cannot give the new proxy its routes");
                    }
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the proxy; trying again in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = baton_proxy::control::until_true(&mut stop) => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Returns when the proxy answering now closes its control socket (it
    /// ended), by holding a connection it never answers.
    async fn until_gone(&self) {
        use tokio::io::AsyncReadExt;
        let Ok(mut stream) = tokio::net::UnixStream::connect(self.files.socket()).await else {
            return;
        };
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}
