//! `baton server`: the control plane. Wires the store, the runtime, the
//! orchestrator and the API together, and drives the proxy, which runs in a
//! process of its own (`data_plane`). Stopping the server (even with kill
//! -9) stops neither the apps nor the proxy: the next start adopts them.
//! SIGUSR2 (or `baton upgrade`) re-executes the server from its binary on
//! disk, keeping its pid and its API socket; the new server hands the proxy
//! over to a proxy of the new binary.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use baton_flag_service::{Actor, FlagService};
use baton_orchestrator::{ApplyFlags, Orchestrator, Runtimes};
use baton_runtime::{DockerRuntime, LogFiles, ProcessRuntime};
use baton_store::Store;
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::watch;

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Where Baton keeps its store, releases and target logs [default:
    /// /var/lib/baton as root, else $XDG_DATA_HOME/baton or
    /// ~/.local/share/baton]
    #[arg(long, env = "BATON_DATA")]
    data: Option<PathBuf>,
    /// Address the proxy serves app traffic on.
    #[arg(long, env = "BATON_PROXY_LISTEN", default_value = "127.0.0.1:8080")]
    proxy_listen: String,
    /// Address the proxy serves HTTPS on (apps with a [tls] section), e.g.
    /// 0.0.0.0:443; without it, no HTTPS.
    #[arg(long, env = "BATON_HTTPS_LISTEN")]
    https_listen: Option<String>,
    /// The ACME CA's directory URL, for apps with `acme = true` in [tls]
    /// (Let's Encrypt's staging directory while trying things out).
    #[arg(long, env = "BATON_ACME_DIRECTORY", default_value = baton_certs::LETS_ENCRYPT)]
    acme_directory: String,
    /// The e-mail address the CA writes to about your certificates.
    #[arg(long, env = "BATON_ACME_EMAIL")]
    acme_email: Option<String>,
    /// A PEM root certificate the CA's own HTTPS is checked against,
    /// instead of the system's (a private or test CA).
    #[arg(long, env = "BATON_ACME_CA", value_name = "PEM")]
    acme_ca: Option<PathBuf>,
    /// Address the control-plane API listens on.
    #[arg(long, env = "BATON_API_LISTEN", default_value = "127.0.0.1:7070")]
    api_listen: String,
    /// A Prometheus (its base URL, e.g. http://127.0.0.1:9090) that
    /// canaries with a `query` in their [deploy] section ask.
    #[arg(long, env = "BATON_PROMETHEUS", value_name = "URL")]
    prometheus: Option<String>,
    /// Proxy worker threads [default: one per core].
    #[arg(long, env = "BATON_PROXY_WORKERS")]
    proxy_workers: Option<usize>,
    /// The pipeline's settings (webhook secret, notification channels,
    /// review apps, announcements); without it, webhooks are refused.
    #[arg(long, env = "BATON_PIPELINE")]
    pipeline: Option<PathBuf>,
    /// A host name the API and dashboard answer to (repeat it, or separate
    /// with commas); IP addresses and localhost always work. Requests for
    /// any other name are refused, so a web page cannot reach the API
    /// through a name of its own (DNS rebinding).
    #[arg(
        long = "api-host",
        env = "BATON_API_HOSTS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    api_hosts: Vec<String>,
    /// A reverse proxy (address or CIDR, repeatable or comma-separated)
    /// whose X-Forwarded-* headers are believed: by the API (the real
    /// client in the audit log and the login throttle) and by the proxy
    /// (kept and appended to for the apps). Nobody else's are.
    #[arg(
        long = "trusted-proxy",
        env = "BATON_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// The user apps and build steps run as when the server runs as root
    /// [default: baton-app, created if missing, else nobody]. Never root.
    #[arg(long, env = "BATON_APP_USER")]
    app_user: Option<String>,
    /// A load balancer (address or CIDR, repeatable or comma-separated)
    /// that opens each proxy connection with a PROXY protocol v2 header
    /// naming the client; nobody else may send one.
    #[arg(
        long = "proxy-protocol-from",
        env = "BATON_PROXY_PROTOCOL_FROM",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    proxy_protocol: Vec<ipnet::IpNet>,
    /// Largest release archive accepted, e.g. 100M or 1G.
    #[arg(long, env = "BATON_MAX_UPLOAD", default_value = "512M", value_parser = parse_size)]
    max_upload: u64,
}

/// A size as manifests write it (`100M`, `1G`, bytes).
fn parse_size(text: &str) -> std::result::Result<u64, String> {
    baton_manifest::parse_size(text)
        .map(|n| n as u64)
        .ok_or_else(|| format!("{text:?}: write a size such as 100M or 1G"))
}

pub fn default_data_dir() -> PathBuf {
    // A server run as root is a system service: its data is the system's,
    // and apps (another user) must be able to reach their releases, which
    // they cannot inside root's private home.
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/baton");
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("baton");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/baton"),
        None => PathBuf::from(".baton"),
    }
}

/// Logs to standard error, filtered by `BATON_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

pub async fn run(args: ServerArgs) -> Result<ExitCode> {
    init_logging();
    // Recorded now: once a package manager replaces the file, this
    // process's own link to it reads "(deleted)".
    let exe = std::env::current_exe().context("cannot find baton's own executable")?;
    // After an upgrade: the API socket the previous image left.
    let inherited_api = crate::upgrade::inherit();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Whatever the server creates (store, logs, uploads) is its own.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let data = args.data.unwrap_or_else(default_data_dir);
    let app_user = baton_runtime::AppUser::for_server(args.app_user.as_deref())?;
    if let Some(user) = &app_user {
        tracing::info!(
            user = user.name,
            uid = user.uid,
            "apps and build steps run as this user"
        );
    }
    for change in crate::data_folder::secure(&data, app_user.as_ref().map(|u| u.gid))? {
        tracing::warn!("the data folder was readable by others: {change}");
    }
    if let Some(user) = &app_user {
        crate::data_folder::reachable_by(&data, user)?;
    }
    let _lock = lock(&data)?;
    let pipeline_config = match &args.pipeline {
        Some(path) => baton_pipeline::Config::load(path).map_err(|e| anyhow!(e))?,
        None => baton_pipeline::Config::default(),
    };

    crate::api_listener::raise_open_files_limit();
    // The proxy takes most of the open files, the API a quarter: a flood on
    // one never leaves the other without.
    let open_files = crate::api_listener::open_files_limit();
    let store = Store::open(&data.join("baton.db")).await?;
    let workers = match args.proxy_workers {
        Some(n) => n.max(1),
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
    };
    let settings = baton_proxy::control::ProxySettings {
        listen: args.proxy_listen.clone(),
        https_listen: args.https_listen.clone(),
        workers,
        trusted_proxies: args.trusted_proxies.clone(),
        proxy_protocol: args.proxy_protocol.clone(),
        max_connections: (open_files * 3 / 4).max(256) as usize,
        stop_timeout: Duration::from_secs(30),
    };
    let (data_plane, proxy_info) =
        crate::data_plane::DataPlane::start(&data, &exe, &settings).await?;
    let data_plane = Arc::new(data_plane);
    let proxy = Arc::clone(&data_plane.client);
    let logs = LogFiles::new(data.join("logs"));
    let runtimes = Runtimes {
        process: Arc::new(process_runtime(logs.clone(), app_user.clone(), &data)),
        docker: Arc::new(DockerRuntime::new(logs.clone())),
        app_user: app_user.clone(),
    };
    let key_path = data.join("config.key");
    if !key_path.exists() && store.has_sealed_config().await? {
        return Err(anyhow!(
            "{} is missing, but the store holds config values sealed with it: restore the file from a backup (without it they cannot be read)",
            key_path.display()
        ));
    }
    let config_key = baton_store::ConfigKey::load_or_create(&key_path)?;
    let orchestrator = Orchestrator::new(
        store,
        Arc::clone(&proxy),
        runtimes,
        logs,
        data.join("releases"),
        config_key,
    );
    let flags = FlagService::load(orchestrator.store().clone())
        .await
        .map_err(|e| anyhow!("cannot load the flags from the store: {e}"))?;
    orchestrator.apply_flags_with(Arc::new(ReleaseFlags(Arc::clone(&flags))));
    if let Some(url) = &args.prometheus {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(anyhow!(
                "--prometheus {url:?}: give Prometheus' base URL, like http://127.0.0.1:9090"
            ));
        }
        orchestrator.query_prometheus_at(url.clone());
    }
    let report = orchestrator
        .recover()
        .await
        .map_err(|e| anyhow!("cannot restore state from the store: {e}"))?;
    tracing::info!(
        adopted = ?report.adopted,
        restarted = ?report.restarted,
        routes = report.routes,
        finished = ?report.finished_deployments,
        undone = ?report.undone_deployments,
        "state restored"
    );

    // Across an upgrade the API's socket is inherited, never closed.
    let api_socket = match inherited_api {
        Some(socket) => socket,
        None => baton_proxy::listen_on(&args.api_listen)
            .map_err(|e| anyhow!("{e} (for the API); choose another address with --api-listen"))?,
    };
    api_socket.set_nonblocking(true)?;
    let api_kept = api_socket.try_clone()?;
    let api_listener = tokio::net::TcpListener::from_std(api_socket)?;
    let proxy_addr = proxy_info.listening;
    let api_addr = api_listener.local_addr()?;

    // One stop signal for every background service, which each honours.
    let (stop_tx, stop_rx) = watch::channel(false);
    let pipeline = baton_pipeline::Pipeline::start(
        Arc::clone(&orchestrator),
        pipeline_config,
        &data,
        app_user,
        stop_rx.clone(),
    )
    .await
    .with_context(|| format!("cannot start the pipeline in {}", data.display()))?;
    orchestrator.gate_production_with(Arc::new(AnnouncementGate(Arc::clone(&pipeline))));

    if let Some(ca) = &args.acme_ca {
        if !ca.is_file() {
            return Err(anyhow!(
                "--acme-ca {}: no such file; give the PEM root the CA's HTTPS is signed by",
                ca.display()
            ));
        }
    }
    let certs = baton_certs::Certs::new(
        orchestrator.store().clone(),
        Arc::clone(&proxy),
        Some(baton_certs::AcmeSettings {
            directory: args.acme_directory.clone(),
            contact: args.acme_email.clone(),
            ca_file: args.acme_ca.clone(),
        }),
    );
    if proxy_info.https.is_none() {
        tracing::info!("no --https-listen: apps are served over plain HTTP only");
    }
    let certificates = tokio::spawn(Arc::clone(&certs).run(stop_rx.clone()));
    let reaper = tokio::spawn(Arc::clone(&orchestrator).reap_warm_targets(stop_rx.clone()));
    // The one cron scheduler (one server per data folder).
    let cron = tokio::spawn(Arc::clone(&orchestrator).run_cron(stop_rx.clone()));
    let supervisor = tokio::spawn(Arc::clone(&data_plane).supervise(stop_rx.clone()));
    // OFREP and Unleash clients use the API listener too: one port to open.
    let auth = Arc::new(
        baton_auth::Auth::open(orchestrator.store().clone(), &data).map_err(|e| anyhow!("{e}"))?,
    );
    let web = Arc::new(baton_web::Web {
        orchestrator: Arc::clone(&orchestrator),
        auth: Arc::clone(&auth),
        flags: Arc::clone(&flags),
    });
    // The dashboard is served beside the API, on the same port.
    let uploads = baton_api::Uploads {
        max_bytes: args.max_upload,
        dir: data.join("uploads"),
    };
    let edge = baton_api::edge::Edge {
        hosts: args
            .api_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
        trusted_proxies: args.trusted_proxies.clone(),
    };
    let app = baton_api::router(
        Arc::clone(&orchestrator),
        Arc::clone(&flags),
        auth,
        Arc::clone(&pipeline),
        Arc::clone(&certs),
        uploads,
    )
    .merge(baton_web::router(web))
    .merge(flags.client_router())
    .layer(axum::middleware::from_fn_with_state(
        Arc::new(edge),
        baton_api::edge::guard,
    ));
    // The API takes a share of the open files, never all: the proxy in
    // the same process keeps serving when the API is flooded.
    let api_limits = crate::api_listener::Limits {
        header_timeout: Duration::from_secs(30),
        max_connections: (open_files / 4).clamp(64, 4096) as usize,
        grace: Duration::from_secs(5),
    };
    let api_task = tokio::spawn(crate::api_listener::serve(
        api_listener,
        app,
        api_limits,
        stop_rx.clone(),
    ));

    tracing::info!(api = %api_addr, proxy = %proxy_addr, proxy_pid = proxy_info.pid, data = %data.display(), "baton server ready");
    let mut signals = Signals::listen()?;
    crate::upgrade::record_ready(&data, &exe, &proxy_info)?;
    // One line on stdout for scripts that wait for readiness.
    let https = proxy_info
        .https
        .map(|addr| format!(" https https://{addr}"))
        .unwrap_or_default();
    println!(
        "baton server ready: api http://{api_addr} proxy http://{proxy_addr}{https} data {}",
        data.display()
    );
    let _ = std::io::stdout().flush();

    let upgrading = loop {
        match signals.next().await {
            Signal::Stop => break false,
            Signal::Upgrade => match crate::upgrade::check_binary(&exe).await {
                Ok(version) => {
                    tracing::info!(exe = %exe.display(), version, "upgrading: the server re-executes itself; apps and the proxy serve on");
                    break true;
                }
                Err(e) => {
                    tracing::error!(error = %e, "upgrade refused; serving on");
                    crate::upgrade::record_failure(&data, &format!("{e:#}"));
                }
            },
        }
    };
    if !upgrading {
        tracing::info!("stopping: finishing requests in flight; apps and the proxy keep running");
    }
    let _ = stop_tx.send(true);
    // An issuance cut short is tried again by the next start; every
    // record it writes is written whole.
    certificates.abort();
    flags.stop();
    let services = async {
        let _ = reaper.await;
        let _ = cron.await;
        pipeline.stopped().await;
    };
    if tokio::time::timeout(Duration::from_secs(5), services)
        .await
        .is_err()
    {
        tracing::warn!("background services still busy after 5 s; stopping anyway");
    }
    let _ = api_task.await;
    let _ = supervisor.await;
    if upgrading {
        drop(_lock);
        let e = crate::upgrade::exec(&exe, &argv, api_kept);
        // Only reached when the new binary could not be run at all.
        crate::upgrade::record_failure(&data, &format!("{e:#}"));
        return Err(e);
    }
    drop(api_kept);
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Applies the `flags.toml` of a release that a deploy put live; the file
/// wins over the server for the flags it lists, and flags it does not list
/// are left alone.
struct ReleaseFlags(Arc<FlagService>);

impl ApplyFlags for ReleaseFlags {
    fn apply_release_flags<'a>(
        &'a self,
        app: &'a str,
        environment: &'a str,
        release_dir: &'a std::path::Path,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = std::result::Result<Option<String>, String>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            let dir = release_dir.to_path_buf();
            let file =
                tokio::task::spawn_blocking(move || baton_manifest::flags::FlagsFile::load(&dir))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            let Some(file) = file else { return Ok(None) };
            let actor = Actor::system("baton deploy");
            let name = baton_manifest::flags::FILE_NAME;
            let changes = self
                .0
                .apply(&actor, app, environment, &file, false, name)
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            let count = |kind: &str| changes.iter().filter(|c| c.change == kind).count();
            Ok(Some(format!(
                "{name}: {} created, {} updated, {} only on the server (left alone)",
                count("create"),
                count("update"),
                count("only_on_server")
            )))
        })
    }
}

/// The process runtime, stamping targets' output lines through this very
/// executable (`baton log-stamp`), so that nothing else needs installing.
/// When it cannot be found or the app user cannot run it, lines go
/// unstamped (with a warning) rather than targets not starting.
fn process_runtime(
    logs: LogFiles,
    app_user: Option<baton_runtime::AppUser>,
    data: &std::path::Path,
) -> ProcessRuntime {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::warn!(
                "target output lines get no timestamps: cannot find baton's own executable: {e}"
            );
            return ProcessRuntime::new(logs, app_user);
        }
    };
    // The stamper runs as the apps' user, which may not reach where baton
    // was installed (a build under /root): then it runs from the data
    // folder's `bin`, which that user passes through.
    let stamper = match &app_user {
        Some(user) if user.can_run(&exe).is_err() => {
            match crate::data_folder::executable_for_apps(data, &exe) {
                Ok(path) => path,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot place baton's executable where apps can run it; their output lines get no timestamps");
                    exe
                }
            }
        }
        _ => exe,
    };
    ProcessRuntime::new(logs, app_user).with_stamper(stamper)
}

/// One server per data folder: two would fight over the same targets.
fn lock(data: &std::path::Path) -> Result<Flock<std::fs::File>> {
    let path = data.join("server.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, _)| {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        anyhow!(
            "another baton server (pid {}) is already using {}; stop it first or pass another --data",
            holder.trim(),
            data.display()
        )
    })?;
    lock.set_len(0)?;
    write!(lock, "{}", std::process::id())?;
    Ok(lock)
}

/// The signals a server answers, listened to from before it says it is
/// ready: a signal must never find its default action (termination) in
/// place.
pub struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    upgrade: tokio::signal::unix::Signal,
}

pub enum Signal {
    /// SIGTERM or SIGINT (Ctrl-C).
    Stop,
    /// SIGUSR2.
    Upgrade,
}

impl Signals {
    pub fn listen() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            upgrade: signal(SignalKind::user_defined2())?,
        })
    }

    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.terminate.recv() => Signal::Stop,
            _ = self.interrupt.recv() => Signal::Stop,
            _ = self.upgrade.recv() => Signal::Upgrade,
        }
    }
}

/// The pipeline's announcement gate, applied to every deploy to production.
struct AnnouncementGate(Arc<baton_pipeline::Pipeline>);

impl baton_orchestrator::ProductionGate for AnnouncementGate {
    fn waits_for<'a>(
        &'a self,
        release: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + 'a>> {
        Box::pin(async move {
            match self.0.production_waits_for(release).await {
                Ok(reason) => reason,
                Err(e) => Some(format!("its announcement cannot be checked ({e})")),
            }
        })
    }
}
