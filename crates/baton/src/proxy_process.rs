//! `baton proxy`: the data plane in a process of its own. `baton server`
//! starts it (`baton proxy run`) and drives it over its control socket; it
//! keeps serving its last route table whatever happens to the control
//! plane (stopped, killed, hung, upgraded). A new proxy takes the listening
//! sockets over from the running one (`--take-over`): neither a connection
//! in the accept queue nor a request in flight is lost.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use baton_proxy::control::{
    self, Control, FileId, ProxyFiles, ProxyInfo, ProxySettings, Reply, Request,
};
use baton_proxy::{Listeners, Proxy};
use tokio::sync::watch;

#[derive(clap::Args)]
pub struct ProxyArgs {
    /// The server's data folder [default: as `baton server`].
    #[arg(long, env = "BATON_DATA", global = true)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: ProxyCommand,
}

#[derive(clap::Subcommand)]
enum ProxyCommand {
    /// Who serves app traffic: the proxy process's pid, binary, address.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop the proxy: it stops accepting, finishes requests in flight and
    /// exits. App traffic is refused until `baton server` starts one again.
    Stop,
    /// Serve app traffic (started by `baton server`, which writes the
    /// settings to the data folder; not run by hand).
    #[command(hide = true)]
    Run {
        /// Take the listening sockets over from the proxy running on this
        /// data folder, which then finishes and exits.
        #[arg(long)]
        take_over: bool,
        /// A listening socket inherited from the server (which kept it
        /// while the previous proxy died), by descriptor number.
        #[arg(long = "listening-fd", value_name = "FD")]
        listening_fds: Vec<i32>,
    },
}

impl ProxyArgs {
    /// Whether this is the proxy process itself (a server, which must
    /// ignore SIGPIPE), not a command talking to it.
    pub fn serves(&self) -> bool {
        matches!(self.command, ProxyCommand::Run { .. })
    }
}

pub async fn run(args: ProxyArgs) -> Result<ExitCode> {
    let data = args.data.unwrap_or_else(crate::server::default_data_dir);
    let files = ProxyFiles::in_data(&data);
    match args.command {
        ProxyCommand::Run {
            take_over,
            listening_fds,
        } => {
            crate::server::init_logging();
            // The proxy works from inside the data folder: an absolute path
            // stays right after that.
            let data = std::fs::canonicalize(&data)
                .with_context(|| format!("no data folder at {}", data.display()))?;
            let files = ProxyFiles::in_data(&data);
            match serve(&data, &files, take_over, &listening_fds).await {
                Ok(code) => Ok(code),
                Err(e) => {
                    // The server waiting for this proxy reads why it failed.
                    println!("error: {e:#}");
                    Err(e)
                }
            }
        }
        ProxyCommand::Status { json } => {
            let info = hello(&files).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!(
                    "proxy pid {} (baton {}) serving on {}, since {}",
                    info.pid,
                    info.version,
                    info.listening,
                    crate::output::ago(info.started_ms)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ProxyCommand::Stop => {
            let info = hello(&files).await?;
            control::ask(&files.socket(), &Request::Stop, Duration::from_secs(10))
                .await
                .context("the proxy did not answer")?;
            println!("proxy pid {} is stopping", info.pid);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn hello(files: &ProxyFiles) -> Result<ProxyInfo> {
    match control::ask(&files.socket(), &Request::Hello, Duration::from_secs(5)).await {
        Ok(Reply::Hello { info }) => Ok(info),
        Ok(other) => bail!("the proxy answered something unexpected: {other:?}"),
        Err(e) => Err(anyhow!(
            "no proxy answers on {} ({e}); `baton server` starts one",
            files.socket().display()
        )),
    }
}

async fn serve(
    data: &Path,
    files: &ProxyFiles,
    take_over: bool,
    listening_fds: &[i32],
) -> Result<ExitCode> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // Holding no other folder; a test or operator finds it by its data.
    std::env::set_current_dir(data)
        .with_context(|| format!("cannot enter the data folder {}", data.display()))?;
    let text = std::fs::read_to_string(files.settings()).with_context(|| {
        format!(
            "cannot read the proxy's settings in {}; `baton server` writes them before starting the proxy",
            files.settings().display()
        )
    })?;
    let settings: ProxySettings = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid", files.settings().display()))?;
    crate::api_listener::raise_open_files_limit();

    let mut predecessor = None;
    let (listeners, routes, certificates) = if take_over {
        let taken =
            tokio::time::timeout(Duration::from_secs(10), control::take_over(&files.socket()))
                .await
                .map_err(|_| {
                    anyhow!("the running proxy did not hand its sockets over within 10 s")
                })?
                .context("cannot take over from the running proxy")?;
        // A proxy gives its plain socket first, then its HTTPS one: told
        // apart by place, as two "port 0" addresses look alike.
        let mut plain = None;
        let mut https = None;
        for (n, (socket, addr)) in taken.sockets.iter().enumerate() {
            if n == 0 && settings.listens_on(*addr) {
                plain = Some(socket.try_clone()?);
            } else if n == 1 && settings.serves_https_on(*addr) {
                https = Some(socket.try_clone()?);
            }
        }
        // An address that changed is bound afresh; the old one closes
        // with its proxy.
        let listeners = listen(&settings, plain, https)?;
        let routes = taken.routes.clone();
        let certificates = taken.certificates.clone();
        predecessor = Some(taken);
        (listeners, routes, certificates)
    } else {
        if let Ok(Reply::Hello { info }) =
            control::ask(&files.socket(), &Request::Hello, Duration::from_secs(2)).await
        {
            bail!(
                "a proxy (pid {}) already serves this data folder on {}; stop it with `baton proxy stop`, or let `baton server` take it over",
                info.pid,
                info.listening
            );
        }
        let (plain, https) = inherited(listening_fds, &settings)?;
        let listeners = listen(&settings, plain, https)?;
        (
            listeners,
            saved(&files.routes(), "routes"),
            saved(&files.certificates(), "certificates"),
        )
    };

    let access_log =
        baton_proxy::AccessLog::open(data.join("logs").join(baton_proxy::ACCESS_LOG), 64 << 20, 3)
            .with_context(|| format!("cannot write the access log in {}", data.display()))?;
    let proxy = Proxy::with(
        baton_proxy::EdgeConfig {
            trusted_proxies: settings.trusted_proxies.clone(),
            proxy_protocol: settings.proxy_protocol.clone(),
            max_connections: settings.max_connections,
            ..Default::default()
        },
        Some(access_log),
    );
    for (key, e) in proxy.replace_routes(routes) {
        tracing::error!(route = %key, error = %e, "route not restored");
    }
    for (name, e) in proxy.set_certificates(&certificates) {
        tracing::error!(certificate = name, error = e, "certificate not restored");
    }
    let (stop, stopped) = watch::channel(false);
    let listening = listeners.local_addr();
    let control = Arc::new(Control {
        proxy: Arc::clone(&proxy),
        info: ProxyInfo {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            exe: FileId::of_this_process()?,
            listening,
            https: listeners.tls_addr(),
            settings: settings.clone(),
            started_ms: baton_store::now_ms(),
        },
        listening: std::sync::Mutex::new(listeners.sockets()?),
        stop,
        changed: tokio::sync::Notify::new(),
    });

    // Bound beside and renamed over: clients reach either the old proxy or
    // this one, never nothing.
    let bound = files
        .dir
        .join(format!("control.{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&bound);
    let unix = tokio::net::UnixListener::bind(&bound)
        .with_context(|| format!("cannot listen on {}", bound.display()))?;
    std::fs::rename(&bound, files.socket())
        .with_context(|| format!("cannot place {}", files.socket().display()))?;
    let socket_id = FileId::of(&files.socket())?;

    let serving =
        tokio::spawn(Arc::clone(&proxy).serve(listeners, stopped.clone(), settings.stop_timeout));
    tokio::spawn(control::serve_control(Arc::clone(&control), unix));
    let persisting = tokio::spawn(persist(Arc::clone(&control), files.clone()));

    let mut signals = crate::server::Signals::listen()?;
    tracing::info!(pid = std::process::id(), %listening, take_over, "proxy serving");
    println!("ready {listening}");
    let _ = std::io::stdout().flush();
    // Nothing else is written there: the server reading it may be gone.
    if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
    }
    if let Some(predecessor) = predecessor {
        match predecessor.serving().await {
            Ok(()) => tracing::info!("the previous proxy stops accepting; it finishes what it has"),
            Err(e) => tracing::warn!(error = %e, "the previous proxy did not confirm it stops"),
        }
    }

    let mut stopped_rx = stopped.clone();
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                crate::server::Signal::Stop => {
                    tracing::info!("stopping: finishing requests in flight");
                    control.stop_alone();
                    break;
                }
                // The server upgrades the proxy (it starts a successor).
                crate::server::Signal::Upgrade => {
                    tracing::info!("SIGUSR2 ignored: `baton upgrade` replaces the proxy through the server");
                }
            },
            _ = control::until_true(&mut stopped_rx) => break,
        }
    }
    let _ = serving.await;
    persisting.abort();
    // The socket is this proxy's to remove only if no successor replaced it.
    if FileId::of(&files.socket()).ok() == Some(socket_id) {
        let _ = std::fs::remove_file(files.socket());
    }
    tracing::info!("proxy stopped");
    Ok(ExitCode::SUCCESS)
}

/// The proxy's listening sockets: those inherited, else bound afresh for
/// the settings' addresses.
fn listen(
    settings: &ProxySettings,
    plain: Option<std::net::TcpListener>,
    https: Option<std::net::TcpListener>,
) -> Result<Listeners> {
    let plain = match plain {
        Some(socket) => socket,
        None => baton_proxy::listen_on(&settings.listen).map_err(|e| {
            anyhow!("{e}; is another server using it? choose another address with --proxy-listen")
        })?,
    };
    let listeners = Listeners::from_socket(plain, settings.workers)?;
    let Some(wanted) = &settings.https_listen else {
        return Ok(listeners);
    };
    let https = match https {
        Some(socket) => socket,
        None => baton_proxy::listen_on(wanted).map_err(|e| {
            anyhow!("{e}; is another server using it? choose another address with --https-listen")
        })?,
    };
    Ok(listeners.with_tls(https, settings.workers)?)
}

/// The inherited listening sockets that serve these settings, plain and
/// HTTPS, if any (the others are closed).
fn inherited(
    fds: &[i32],
    settings: &ProxySettings,
) -> Result<(Option<std::net::TcpListener>, Option<std::net::TcpListener>)> {
    use std::os::fd::FromRawFd;
    let mut plain = None;
    let mut https = None;
    // In the order the proxy gave them: plain first, then HTTPS.
    for (n, &fd) in fds.iter().enumerate() {
        if fd <= 2 || nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            bail!("--listening-fd {fd} is not an open descriptor of this process");
        }
        // SAFETY: the server opened this descriptor for this process and
        // named it; nothing else here owns it.
        let socket = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        match socket.local_addr() {
            Ok(addr) if n == 0 && settings.listens_on(addr) => plain = Some(socket),
            Ok(addr) if n == 1 && settings.serves_https_on(addr) => https = Some(socket),
            _ => drop(socket),
        }
    }
    Ok((plain, https))
}

/// What a previous proxy left (its table, its certificates), so a proxy
/// started afresh (after a crash of its own) serves at once, before the
/// control plane says more.
fn saved<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Vec<T> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "saved {what} unreadable; starting with none until the server sends them");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

/// Writes the table and the certificates after every change (the latest,
/// each written whole and renamed into place), until the proxy stops.
async fn persist(control: Arc<Control>, files: ProxyFiles) {
    let mut stopped = control.stop.subscribe();
    loop {
        tokio::select! {
            _ = control.changed.notified() => {}
            _ = control::until_true(&mut stopped) => return,
        }
        let specs = control.proxy.table().specs();
        let certificates = control.proxy.certificate_specs();
        let files = files.clone();
        let written = tokio::task::spawn_blocking(move || {
            crate::data_folder::write_json(&files.routes(), &specs)?;
            crate::data_folder::write_json(&files.certificates(), &certificates)
        })
        .await;
        if let Ok(Err(e)) = written {
            tracing::warn!(error = %format!("{e:#}"), "cannot save the route table or the certificates");
        }
    }
}
