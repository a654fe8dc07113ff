//! Runtimes start, watch and stop targets. A runtime knows how to run one
//! target of a release and nothing about routes, deployments or the store;
//! the orchestrator decides what to start and when. Targets outlive the
//! Baton server that started them: a runtime can find a target again from
//! its [`TargetHandle`] after a restart and adopt it without restarting it.
//! An app's code never runs as root: [`user`] picks the unprivileged user
//! and the fixed environment that targets and build steps get. Every line
//! of a target's output is stored behind the time it was written
//! ([`stamp`]), whatever the runtime.

mod docker;
mod logs;
mod one_off;
mod process;
pub mod stamp;
pub mod user;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;

pub use docker::DockerRuntime;
pub use logs::LogFiles;
pub use one_off::{CommandSpec, OneOff};

pub use process::{children_of, proc_stat, ProcStat, ProcessRuntime};
pub use user::{app_command, base_env, AppUser};

/// Everything needed to start one target.
#[derive(Clone)]
pub struct TargetSpec {
    pub target_id: i64,
    pub app: String,
    pub environment: String,
    pub release: String,
    /// Which of the app's processes it is: `web` (reached through the
    /// proxy, on `port`), or a worker's name (`[processes.NAME]`: no port).
    pub process: String,
    /// The release's unpacked, read-only folder.
    pub dir: PathBuf,
    pub command: String,
    pub env: BTreeMap<String, String>,
    /// The loopback port the proxy reaches a web target on (0 for workers).
    pub port: u16,
    /// Only for containers: what to run and with which limits.
    pub container: Option<ContainerSpec>,
}

/// What the Docker runtime needs beyond a process's needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Image id (`sha256:…`) of the release.
    pub image: String,
    /// The port the app listens on inside the container (given as `PORT`).
    pub port: u16,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    /// Docker's restart policy name: `no`, `on-failure`, `unless-stopped`, `always`.
    pub restart: String,
}

/// How a runtime finds a target again; stored with the target's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHandle {
    pub target_id: i64,
    /// Runtime-specific: for processes `pid@start-time`.
    pub reference: String,
}

/// How a target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// The target was adopted after a restart, so its exit status is not ours
    /// to read; we only saw it disappear.
    Vanished,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with code {code}"),
            Exit::Signal(signal) => write!(f, "was killed by signal {signal}"),
            Exit::Vanished => write!(f, "is no longer running"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start `{command}` in {dir}: {source}")]
    Spawn {
        command: String,
        dir: String,
        source: std::io::Error,
    },
    #[error("cannot open the target's log {path}: {source}")]
    Log {
        path: String,
        source: std::io::Error,
    },
    #[error("target handle {0:?} is not one this runtime made")]
    BadHandle(String),
    #[error("cannot signal target {target}: {reason}")]
    Signal { target: String, reason: String },
    #[error("{0}")]
    Docker(String),
    #[error(
        "cannot start `{command}` in {dir} as {user}: permission denied; {user} must be able to \
         enter {dir}, so every folder above it needs o+x: keep Baton's data folder out of a \
         private home (for example --data /var/lib/baton)"
    )]
    AppUserDenied {
        command: String,
        dir: String,
        user: String,
    },
    #[error(
        "apps never run as root: user {name} has uid 0 or group 0; choose an unprivileged user \
         with --app-user (by default a root server uses baton-app)"
    )]
    RootAppUser { name: String },
    #[error(
        "there is no user {name} on this machine (--app-user): create it \
         (useradd --system --user-group {name}) or name another"
    )]
    UnknownAppUser { name: String },
    #[error("cannot read the user database for {name}: {reason}")]
    UserLookup { name: String, reason: String },
    #[error(
        "cannot run apps as {configured}: the server runs as {server}, not root, and only root \
         can switch users; start the server as {configured}, or as root, or drop --app-user"
    )]
    CannotSwitchUser { configured: String, server: String },
    #[error(
        "the server runs as root but has no user to run apps as ({reason}); create an \
         unprivileged user and pass it with --app-user"
    )]
    NoAppUser { reason: String },
    #[error(
        "target output lines get no timestamps: the app user {user} cannot run {path} ({reason}); \
         install baton where every user may run it (for example /usr/local/bin/baton) and \
         start the server from there"
    )]
    CannotRunStamper {
        user: String,
        path: String,
        reason: String,
    },
    #[error(
        "refusing to run an app's command as root: a server running as root needs an app user \
         (AppUser::for_server)"
    )]
    WouldRunAsRoot,
}

impl RuntimeError {
    /// A command of an app that could not start; when it was to run as
    /// `user`, a refused permission is nearly always a folder the user
    /// cannot enter, which is worth saying.
    pub fn spawn(
        command: &str,
        dir: &std::path::Path,
        user: Option<&AppUser>,
        source: std::io::Error,
    ) -> RuntimeError {
        match user {
            Some(user) if source.kind() == std::io::ErrorKind::PermissionDenied => {
                RuntimeError::AppUserDenied {
                    command: command.to_string(),
                    dir: dir.display().to_string(),
                    user: user.name.clone(),
                }
            }
            _ => RuntimeError::Spawn {
                command: command.to_string(),
                dir: dir.display().to_string(),
                source,
            },
        }
    }
}

pub trait Runtime: Send + Sync + 'static {
    /// Whether the runtime can be used right now (for Docker: the engine
    /// answers), with the reason when it cannot.
    fn available<'a>(&'a self) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async { Ok(()) })
    }

    /// Starts a target and returns as soon as it is running (not yet healthy).
    fn start<'a>(
        &'a self,
        spec: &'a TargetSpec,
    ) -> BoxFuture<'a, Result<TargetHandle, RuntimeError>>;

    /// Whether the target is still running.
    fn alive<'a>(&'a self, handle: &'a TargetHandle) -> BoxFuture<'a, bool>;

    /// Resolves when the target ends, however it ends.
    fn wait<'a>(&'a self, handle: &'a TargetHandle) -> BoxFuture<'a, Exit>;

    /// Asks the target to stop, and kills it after `grace`.
    fn stop<'a>(
        &'a self,
        handle: &'a TargetHandle,
        grace: Duration,
    ) -> BoxFuture<'a, Result<Exit, RuntimeError>>;

    /// Takes up a target found running after a restart (for example, to go
    /// on copying its output to its log file).
    fn adopt<'a>(&'a self, _handle: &'a TargetHandle) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Its variables' values may be secrets (`baton config`): shown by name.
impl std::fmt::Debug for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetSpec")
            .field("target_id", &self.target_id)
            .field("app", &self.app)
            .field("environment", &self.environment)
            .field("release", &self.release)
            .field("process", &self.process)
            .field("dir", &self.dir)
            .field("command", &self.command)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("port", &self.port)
            .field("container", &self.container)
            .finish()
    }
}

/// The process name of web targets: the ones the proxy routes to.
pub const WEB: &str = "web";

impl TargetSpec {
    /// Whether the proxy reaches it (it listens on `PORT`).
    pub fn is_web(&self) -> bool {
        self.process == WEB
    }
}

/// A free TCP port on the loopback interface for a new target.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
