//! The app manifest, `baton.toml`: what an app is, how it starts, how its
//! health is checked and how its deploys are paced. This crate only reads and
//! validates text; it never touches the file system beyond [`Manifest::load`]
//! and knows nothing of servers, stores or processes. Every error names the
//! file, the field and the reason, so a user can fix the manifest without
//! reading Baton's code.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

mod build;
pub mod cron;
pub mod flags;
pub use build::BuildSection;
mod retention;
pub use retention::RetentionSection;

/// The file name Baton looks for at the root of an app's folder.
pub const FILE_NAME: &str = "baton.toml";

/// What replaces a variable's value for people who may not read secrets.
pub const REDACTED: &str = "(redacted)";

/// The environment used when none is named.
pub const DEFAULT_ENVIRONMENT: &str = "production";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("{file}: cannot read: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{file}:{line}:{column}: field `{field}`: {reason}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        field: String,
        reason: String,
    },
    #[error("{file}: field `{field}`: {reason}")]
    Invalid {
        file: String,
        field: String,
        reason: String,
    },
}

/// How targets of an app are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    #[default]
    Process,
    Docker,
}

impl RuntimeKind {
    /// The name used in `baton.toml` and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Docker => "docker",
        }
    }

    pub fn from_name(name: &str) -> Option<RuntimeKind> {
        [RuntimeKind::Process, RuntimeKind::Docker]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The app's name: lower-case letters, digits and dashes.
    pub name: String,
    /// Host names the proxy answers for in every environment that does not
    /// name its own.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub runtime: RuntimeKind,
    #[serde(default)]
    pub web: Web,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub deploy: DeployPolicy,
    /// How the proxy treats this app's requests.
    #[serde(default)]
    pub proxy: ProxySection,
    /// HTTPS for the app's hosts; plain HTTP only without it.
    pub tls: Option<TlsSection>,
    /// Variables given to every target, in every environment. Numbers and
    /// booleans are taken as their text (`WORKERS = 4` is `"4"`).
    #[serde(default, deserialize_with = "env_values::deserialize")]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentSection>,
    /// Settings of the Docker runtime; only with `runtime = "docker"`.
    pub docker: Option<DockerSection>,
    /// The app's database migrations.
    pub database: Option<DatabaseSection>,
    /// What the pipeline does with a pushed commit or a pull request.
    pub pipeline: Option<PipelineSection>,
    /// Processes besides the web one (queue workers, consumers), by name:
    /// started for each deployment once its web release is live.
    #[serde(default)]
    pub processes: BTreeMap<String, ProcessSection>,
    /// The command a process release runs once, when it is created.
    pub build: Option<BuildSection>,
    /// How many releases and how much target output the server keeps.
    pub retention: Option<RetentionSection>,
    /// Scheduled jobs, by name (`[cron.NAME]`), run in the live release.
    #[serde(default)]
    pub cron: BTreeMap<String, cron::CronJob>,
}

/// `[processes.NAME]`: a process with no port, run beside the web one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    /// Run with `sh -c` in the release's folder (for Docker apps, in its
    /// image).
    pub command: String,
    /// How many run at once (`baton scale` overrides it).
    #[serde(default = "defaults::instances")]
    pub instances: u32,
    /// How long a replaced worker has, after SIGTERM, to finish its
    /// current job before it is killed.
    #[serde(default = "defaults::worker_stop_timeout", with = "duration")]
    pub stop_timeout: Duration,
}

/// The most instances of one process Baton runs.
pub const MAX_INSTANCES: u32 = 64;

/// `[pipeline]`: the build and test steps a pushed commit must pass, and
/// where a passing build goes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Pushes to this branch are built, deployed to `staging` and promoted.
    #[serde(default = "defaults::pipeline_branch")]
    pub branch: String,
    /// Shell commands run in order in the checked-out commit, before `test`.
    #[serde(default)]
    pub build: Vec<String>,
    /// Shell commands that must all exit 0 for the release to be made.
    #[serde(default)]
    pub test: Vec<String>,
    /// Longest a whole build (every step) may take.
    #[serde(default = "defaults::pipeline_timeout", with = "duration")]
    pub timeout: Duration,
    /// `"auto"`: a release live in staging goes on to production by itself;
    /// `"manual"`: it waits for `baton promote`.
    #[serde(default)]
    pub promote: Promote,
    /// Review apps: each open pull request runs in environment `review-N`
    /// on host `<app>-pr-N.<review_domain>`. Absent: no review apps.
    pub review_domain: Option<String>,
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            branch: defaults::pipeline_branch(),
            build: Vec::new(),
            test: Vec::new(),
            timeout: defaults::pipeline_timeout(),
            promote: Promote::default(),
            review_domain: None,
        }
    }
}

/// How a release reaches production after staging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Promote {
    Auto,
    #[default]
    Manual,
}

/// The review environment of pull request `number`.
pub fn review_environment(number: u64) -> String {
    format!("review-{number}")
}

/// The pull request number of a review environment (`review-42` → 42).
pub fn review_number(environment: &str) -> Option<u64> {
    let digits = environment.strip_prefix("review-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// The folder of Flyway-style migrations (`V1__create_users.sql`, …),
    /// relative to the app folder.
    pub migrations: String,
    /// The variable of the environment's `env` that holds the database URL
    /// (`postgres://…`, `sqlite://…`, `mysql://…`); the app reads the same one.
    #[serde(default = "defaults::database_url_env")]
    pub url_env: String,
    /// Flyway's `outOfOrder`: apply versions below the highest applied one.
    #[serde(default)]
    pub out_of_order: bool,
    /// How long a migration statement may wait for a lock before failing
    /// (PostgreSQL's `lock_timeout`, MySQL's `lock_wait_timeout`, SQLite's
    /// busy timeout). Zero waits for ever.
    #[serde(default = "defaults::lock_timeout", with = "duration")]
    pub lock_timeout: Duration,
    /// Flyway's `baselineOnMigrate`: a database holding tables but no history
    /// is first baselined at this version.
    pub baseline_on_migrate: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSection {
    /// The port the app listens on inside its container (also given as `PORT`).
    #[serde(default = "defaults::container_port")]
    pub port: u16,
    /// The Dockerfile inside the app folder, when the image is built.
    #[serde(default = "defaults::dockerfile")]
    pub dockerfile: String,
    /// Run this existing image (name or `sha256:` id) instead of building one.
    pub image: Option<String>,
    /// Memory limit, e.g. "256m" or "1g".
    pub memory: Option<String>,
    /// CPU limit, in cores (0.5 = half a core).
    pub cpus: Option<f64>,
    /// Docker's restart policy: "no" (Baton restarts live targets itself),
    /// "on-failure", "unless-stopped" or "always".
    #[serde(default = "defaults::restart")]
    pub restart: String,
    /// How many releases' images to keep beside the running ones, for rollback.
    #[serde(default = "defaults::keep_images")]
    pub keep_images: usize,
}

impl Default for DockerSection {
    fn default() -> Self {
        DockerSection {
            port: defaults::container_port(),
            dockerfile: defaults::dockerfile(),
            image: None,
            memory: None,
            cpus: None,
            restart: defaults::restart(),
            keep_images: defaults::keep_images(),
        }
    }
}

impl DockerSection {
    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> Option<i64> {
        self.memory.as_deref().and_then(parse_size)
    }

    /// The CPU limit in billionths of a core, as the Docker API wants it.
    pub fn nano_cpus(&self) -> Option<i64> {
        self.cpus.map(|c| (c * 1e9) as i64)
    }
}

/// "512k", "256m", "1g" or a plain number of bytes (powers of 1024; a
/// trailing `b` or `ib` is allowed): the one size syntax of manifests and
/// server flags.
pub fn parse_size(text: &str) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    let (number, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => text.split_at(i),
        None => (text.as_str(), ""),
    };
    let number: f64 = number.trim().parse().ok()?;
    let factor = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    (number > 0.0).then_some((number * factor) as i64)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Web {
    /// Shell command that starts the web process. It receives its port in
    /// `PORT`. Required for the process runtime; containers run their image's
    /// own command.
    #[serde(default)]
    pub command: String,
    /// How long a target has to exit after SIGTERM before it is killed.
    #[serde(default = "defaults::stop_timeout", with = "duration")]
    pub stop_timeout: Duration,
    /// How many targets of each release serve at once; the proxy spreads
    /// requests over them (`baton scale APP web=N` overrides it).
    #[serde(default = "defaults::instances")]
    pub instances: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default = "defaults::health_path")]
    pub path: String,
    #[serde(default = "defaults::health_interval", with = "duration")]
    pub interval: Duration,
    #[serde(default = "defaults::health_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "defaults::health_status")]
    pub status: u16,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            command: String::new(),
            stop_timeout: defaults::stop_timeout(),
            instances: defaults::instances(),
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: defaults::health_path(),
            interval: defaults::health_interval(),
            timeout: defaults::health_timeout(),
            status: defaults::health_status(),
        }
    }
}

/// `[proxy]`: how long the proxy waits on the app, and how much it takes
/// from a client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// To open a connection to a target; 502 after.
    #[serde(default = "defaults::connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// From a request sent to the response's head; 504 after.
    #[serde(default = "defaults::response_timeout", with = "duration")]
    pub response_timeout: Duration,
    /// Largest request body, e.g. "10M"; 413 beyond. None by default.
    #[serde(default)]
    pub max_body: Option<String>,
    /// The proxy answers `/_baton/events` (server-sent events naming the
    /// release that serves the visitor) and `/_baton/live.js` (a script
    /// that shows "a new version is available") on the app's hosts.
    #[serde(default)]
    pub live_updates: bool,
}

impl Default for ProxySection {
    fn default() -> ProxySection {
        ProxySection {
            connect_timeout: defaults::connect_timeout(),
            response_timeout: defaults::response_timeout(),
            max_body: None,
            live_updates: false,
        }
    }
}

impl ProxySection {
    /// `max_body` in bytes (validated when the manifest is read).
    pub fn max_body_bytes(&self) -> Option<u64> {
        self.max_body
            .as_deref()
            .and_then(parse_size)
            .map(|n| n as u64)
    }
}

/// `[tls]`: HTTPS for the app's hosts, with a certificate issued over ACME
/// (`acme = true`) or read from files on the server (`cert` and `key`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Certificates issued and renewed over ACME, by the CA the server is
    /// set up with (`--acme-directory`), for every host.
    #[serde(default)]
    pub acme: bool,
    /// A PEM certificate chain on the server, leaf first (absolute path).
    pub cert: Option<std::path::PathBuf>,
    /// Its PEM private key (absolute path).
    pub key: Option<std::path::PathBuf>,
    /// How the CA checks the hosts: "http-01" (plain HTTP, port 80; the
    /// default) or "tls-alpn-01" (HTTPS, port 443).
    #[serde(default = "defaults::acme_challenge")]
    pub challenge: String,
    /// Plain-HTTP requests are redirected to HTTPS once a certificate is
    /// served for their host.
    #[serde(default = "defaults::yes")]
    pub redirect: bool,
    /// `Strict-Transport-Security` max-age, e.g. "365d"; none by default
    /// (browsers then refuse plain HTTP for that long: set it once HTTPS
    /// works).
    pub hsts: Option<String>,
}

impl TlsSection {
    /// `hsts` as a duration (validated when the manifest is read).
    pub fn hsts_max_age(&self) -> Option<Duration> {
        self.hsts
            .as_deref()
            .and_then(|text| humantime::parse_duration(text).ok())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeployPolicy {
    /// How long a new target has to become healthy.
    #[serde(default = "defaults::deploy_timeout", with = "duration")]
    pub timeout: Duration,
    /// How long in-flight requests on the old target may take to finish.
    #[serde(default = "defaults::drain_timeout", with = "duration")]
    pub drain_timeout: Duration,
    /// How long the previous release stays running for an instant rollback.
    #[serde(default = "defaults::keep_warm", with = "duration")]
    pub keep_warm: Duration,
    /// How long a request may be held while the route switches.
    #[serde(default = "defaults::hold_timeout", with = "duration")]
    pub hold_timeout: Duration,
    /// Extra host names that reach the release being previewed.
    #[serde(default)]
    pub preview_hosts: Vec<String>,
    /// "blue-green" (all traffic at once, the default) or "canary" (a
    /// growing share of the clients, by `steps`, watched as it goes).
    #[serde(default = "defaults::strategy")]
    pub strategy: String,
    /// A canary's steps: shares ("5%") and pauses ("pause 2m"; "pause"
    /// alone waits for `baton canary promote`); 100 % at the end.
    #[serde(default)]
    pub steps: Vec<String>,
    /// A canary whose 5xx rate is above this (and above the old release's)
    /// is aborted, e.g. "1%".
    #[serde(default = "defaults::max_error_rate")]
    pub max_error_rate: String,
    /// Requests the canary must have answered before its rate is judged.
    #[serde(default = "defaults::min_requests")]
    pub min_requests: u64,
    /// A canary (or a watched release) whose 99th-percentile response time
    /// is above this (and above the old release's) is aborted, e.g.
    /// "500ms". None by default.
    #[serde(default)]
    pub max_p99: Option<String>,
    /// A PromQL query asked of the server's Prometheus (`--prometheus`) at
    /// every look at a canary (`{{release}}`, `{{app}}` and
    /// `{{environment}}` are filled in): above `query_max`, the canary is
    /// aborted.
    #[serde(default)]
    pub query: Option<String>,
    /// The highest value `query` may give.
    #[serde(default)]
    pub query_max: Option<f64>,
    /// After the switch, the new release is watched this long (e.g. "5m"):
    /// above `max_error_rate` it is rolled back by itself, to the release
    /// kept warm. None by default.
    #[serde(default)]
    pub watch: Option<String>,
    /// Run once per deploy in the new release's folder and environment
    /// (after the expand migrations, before its targets start), like
    /// Heroku's release phase: e.g. "python manage.py collectstatic". A
    /// failure (non-zero exit) fails the deploy; the live release stays.
    #[serde(default)]
    pub release_command: Option<String>,
    /// How long the release command may run before it is stopped and the
    /// deploy fails.
    #[serde(default = "defaults::release_timeout", with = "duration")]
    pub release_timeout: Duration,
}

/// One step of a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryStep {
    /// This share of the clients (percent) reaches the new release.
    Share(u8),
    /// Watch this long; `None`: until `baton canary promote`.
    Pause(Option<Duration>),
}

impl CanaryStep {
    pub fn parse(text: &str) -> Result<CanaryStep, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("pause") {
            let rest = rest.trim();
            if rest.is_empty() {
                return Ok(CanaryStep::Pause(None));
            }
            return humantime::parse_duration(rest)
                .map(|d| CanaryStep::Pause(Some(d)))
                .map_err(|e| format!("{text:?}: {e}; write a pause like \"pause 2m\", or \"pause\" to wait for `baton canary promote`"));
        }
        match text.strip_suffix('%').and_then(|n| n.trim().parse::<u8>().ok()) {
            Some(n) if (1..=100).contains(&n) => Ok(CanaryStep::Share(n)),
            _ => Err(format!(
                "{text:?} is not a step: write a share like \"5%\" (1 to 100) or a pause like \"pause 2m\""
            )),
        }
    }
}

impl DeployPolicy {
    pub fn is_canary(&self) -> bool {
        self.strategy == "canary"
    }

    /// The canary's steps (validated when the manifest is read).
    pub fn canary_steps(&self) -> Vec<CanaryStep> {
        self.steps
            .iter()
            .filter_map(|s| CanaryStep::parse(s).ok())
            .collect()
    }

    /// The watch window after the switch (validated when read).
    pub fn watch_window(&self) -> Option<Duration> {
        self.watch
            .as_deref()
            .and_then(|text| humantime::parse_duration(text).ok())
            .filter(|d| !d.is_zero())
    }

    /// `max_p99` as a duration (validated when read).
    pub fn max_p99_time(&self) -> Option<Duration> {
        self.max_p99
            .as_deref()
            .and_then(|text| humantime::parse_duration(text).ok())
    }

    /// `max_error_rate` as a fraction (validated when read).
    pub fn max_error_fraction(&self) -> f64 {
        parse_percent(&self.max_error_rate).unwrap_or(0.01)
    }
}

fn parse_percent(text: &str) -> Option<f64> {
    let n: f64 = text.trim().strip_suffix('%')?.trim().parse().ok()?;
    (0.0..=100.0).contains(&n).then_some(n / 100.0)
}

impl Default for DeployPolicy {
    fn default() -> Self {
        DeployPolicy {
            timeout: defaults::deploy_timeout(),
            drain_timeout: defaults::drain_timeout(),
            keep_warm: defaults::keep_warm(),
            hold_timeout: defaults::hold_timeout(),
            preview_hosts: Vec::new(),
            strategy: defaults::strategy(),
            steps: Vec::new(),
            max_error_rate: defaults::max_error_rate(),
            min_requests: defaults::min_requests(),
            max_p99: None,
            query: None,
            query_max: None,
            watch: None,
            release_command: None,
            release_timeout: defaults::release_timeout(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSection {
    /// Replaces the top-level `hosts` in this environment.
    pub hosts: Option<Vec<String>>,
    /// Added to (and overriding) the top-level `env`.
    #[serde(default, deserialize_with = "env_values::deserialize")]
    pub env: BTreeMap<String, String>,
    /// Host names reaching a release in preview in this environment;
    /// `[deploy] preview_hosts` are production's.
    pub preview_hosts: Option<Vec<String>>,
}

/// What a manifest means for one environment, with defaults and overrides
/// applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvironmentConfig {
    pub environment: String,
    pub hosts: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// `[environments.X] preview_hosts`, else for the default environment
    /// `[deploy] preview_hosts`, else none: preview host names are unique
    /// to one environment.
    pub preview_hosts: Vec<String>,
}

mod defaults {
    pub fn instances() -> u32 {
        1
    }
    pub fn worker_stop_timeout() -> std::time::Duration {
        std::time::Duration::from_secs(30)
    }
    pub fn release_timeout() -> std::time::Duration {
        std::time::Duration::from_secs(10 * 60)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn acme_challenge() -> String {
        "http-01".into()
    }
    pub fn strategy() -> String {
        "blue-green".into()
    }
    pub fn max_error_rate() -> String {
        "1%".into()
    }
    pub fn min_requests() -> u64 {
        20
    }
    pub fn database_url_env() -> String {
        "DATABASE_URL".into()
    }
    pub fn lock_timeout() -> std::time::Duration {
        std::time::Duration::from_secs(5)
    }
    use std::time::Duration;
    pub fn stop_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn health_path() -> String {
        "/health".into()
    }
    pub fn health_interval() -> Duration {
        Duration::from_millis(200)
    }
    pub fn health_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn health_status() -> u16 {
        200
    }
    pub fn deploy_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn keep_warm() -> Duration {
        Duration::from_secs(600)
    }
    pub fn hold_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn container_port() -> u16 {
        8080
    }
    pub fn dockerfile() -> String {
        "Dockerfile".into()
    }
    pub fn restart() -> String {
        "no".into()
    }
    pub fn keep_images() -> usize {
        3
    }
    pub fn pipeline_branch() -> String {
        "main".into()
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn response_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn pipeline_timeout() -> Duration {
        Duration::from_secs(600)
    }
}

/// `[env]` values: strings, or numbers and booleans taken as their text, as
/// a shell or a `.env` file would have them.
mod env_values {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        let raw = BTreeMap::<String, toml::Value>::deserialize(d)?;
        raw.into_iter()
            .map(|(key, value)| {
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Float(n) => n.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Datetime(t) => t.to_string(),
                    toml::Value::Array(_) | toml::Value::Table(_) => {
                        return Err(serde::de::Error::custom(format!(
                            "{key}: a variable is a string, a number or a boolean, not a list or a table"
                        )))
                    }
                };
                Ok((key, text))
            })
            .collect()
    }
}

/// Durations are written the way people say them: `"500ms"`, `"30s"`, `"10m"`.
pub(crate) mod duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as \"500ms\", \"30s\" or \"10m\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
                humantime::parse_duration(text).map_err(|e| {
                    E::custom(format!(
                        "invalid duration {text:?} ({e}); write it like \"500ms\", \"30s\" or \"10m\""
                    ))
                })
            }
            // `stop_timeout = 5`: a number has no unit; say how to write it.
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{n} has no unit: write it as a string with one, e.g. \"{n}s\" or \"{n}ms\""
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
                self.visit_i64(n as i64)
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{n} has no unit: write it as a string with one, e.g. \"{n}s\""
                )))
            }
        }
        d.deserialize_any(Visitor)
    }

    pub fn serialize<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }
}

impl Manifest {
    /// `[retention]`, or its defaults.
    pub fn retention(&self) -> RetentionSection {
        self.retention.clone().unwrap_or_default()
    }

    /// Reads `baton.toml` from an app folder.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(FILE_NAME);
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError::Unreadable {
            file: file.clone(),
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{} has no {FILE_NAME}: is it the app's folder? An app needs at least `name`, `hosts` and `[web] command` (see examples/hello/{FILE_NAME})",
                    dir.display()
                )
            } else {
                e.to_string()
            },
        })?;
        Manifest::parse(&text, &file)
    }

    /// Parses and validates manifest text; `file` is only used in errors.
    pub fn parse(text: &str, file: &str) -> Result<Manifest, ManifestError> {
        let deserializer = toml::Deserializer::new(text);
        let manifest: Manifest = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| syntax_error(text, file, e))?;
        manifest.validate(file, text)?;
        Ok(manifest)
    }

    fn validate(&self, file: &str, text: &str) -> Result<(), ManifestError> {
        // The file's name with the line and column of the field, when found.
        let invalid = |field: &str, reason: String| ManifestError::Invalid {
            file: match locate(text, field) {
                Some((line, column)) => format!("{file}:{line}:{column}"),
                None => file.to_string(),
            },
            field: field.to_string(),
            reason,
        };
        check_name("app", &self.name).map_err(|reason| invalid("name", reason))?;
        if let Some(retention) = &self.retention {
            retention
                .check()
                .map_err(|(field, reason)| invalid(field, reason))?;
        }
        if let Some(text) = &self.proxy.max_body {
            if parse_size(text).is_none() {
                return Err(invalid(
                    "proxy.max_body",
                    format!("{text:?} is not a size: write it like \"512k\", \"10M\" or \"1G\""),
                ));
            }
        }
        for (field, value) in [
            ("proxy.connect_timeout", self.proxy.connect_timeout),
            ("proxy.response_timeout", self.proxy.response_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must be longer than zero".into()));
            }
        }
        for (i, host) in self.hosts.iter().enumerate() {
            check_host(host).map_err(|r| invalid(&format!("hosts[{i}]"), r))?;
        }
        if !(1..=MAX_INSTANCES).contains(&self.web.instances) {
            return Err(invalid(
                "web.instances",
                format!("must be 1 to {MAX_INSTANCES}, not {}", self.web.instances),
            ));
        }
        for (name, process) in &self.processes {
            let field = format!("processes.{name}");
            check_name("process", name).map_err(|reason| invalid(&field, reason))?;
            if name == "web" {
                return Err(invalid(
                    &field,
                    "`web` is the process [web] describes; name this one after what it does, like [processes.worker]".into(),
                ));
            }
            if process.command.trim().is_empty() {
                return Err(invalid(
                    &format!("{field}.command"),
                    "is empty: give the command that runs this process".into(),
                ));
            }
            if process.instances > MAX_INSTANCES {
                return Err(invalid(
                    &format!("{field}.instances"),
                    format!("{} is more than {MAX_INSTANCES}", process.instances),
                ));
            }
        }
        if let Some(command) = &self.deploy.release_command {
            if command.trim().is_empty() {
                return Err(invalid(
                    "deploy.release_command",
                    "is empty: give the command to run before each release starts, or remove the line".into(),
                ));
            }
            if self.runtime == RuntimeKind::Docker {
                return Err(invalid(
                    "deploy.release_command",
                    "runs in a release's folder, which Docker apps do not have: run it in the image's entrypoint, or use the process runtime".into(),
                ));
            }
        }
        if self.deploy.release_timeout.is_zero() {
            return Err(invalid(
                "deploy.release_timeout",
                "must be longer than zero".into(),
            ));
        }
        match self.deploy.strategy.as_str() {
            "blue-green" if !self.deploy.steps.is_empty() => {
                return Err(invalid(
                    "deploy.steps",
                    "steps are a canary's: add strategy = \"canary\"".into(),
                ))
            }
            "blue-green" => {}
            "canary" => {
                if self.deploy.steps.is_empty() {
                    return Err(invalid(
                        "deploy.steps",
                        "a canary needs steps, like [\"5%\", \"pause 2m\", \"25%\", \"pause\", \"100%\"]".into(),
                    ));
                }
                let mut last = 0;
                for (i, step) in self.deploy.steps.iter().enumerate() {
                    match CanaryStep::parse(step) {
                        Ok(CanaryStep::Share(n)) if n <= last => {
                            return Err(invalid(
                                &format!("deploy.steps[{i}]"),
                                format!(
                                "{n}% after {last}%: each share must be larger than the one before"
                            ),
                            ))
                        }
                        Ok(CanaryStep::Share(n)) => last = n,
                        Ok(CanaryStep::Pause(_)) => {}
                        Err(reason) => return Err(invalid(&format!("deploy.steps[{i}]"), reason)),
                    }
                }
            }
            other => {
                return Err(invalid(
                    "deploy.strategy",
                    format!("{other:?} is not a strategy: use \"blue-green\" or \"canary\""),
                ))
            }
        }
        if let Some(text) = &self.deploy.watch {
            match humantime::parse_duration(text) {
                Err(_) => {
                    return Err(invalid(
                        "deploy.watch",
                        format!("{text:?} is not a duration: write it like \"5m\""),
                    ))
                }
                Ok(watch) if watch > self.deploy.keep_warm => {
                    return Err(invalid(
                        "deploy.watch",
                        format!(
                            "a watch of {text} needs the old release kept warm as long, to roll back to: set keep_warm to at least {text}"
                        ),
                    ))
                }
                Ok(_) => {}
            }
        }
        if let Some(text) = &self.deploy.max_p99 {
            if humantime::parse_duration(text).is_err() {
                return Err(invalid(
                    "deploy.max_p99",
                    format!("{text:?} is not a duration: write it like \"500ms\""),
                ));
            }
        }
        match (&self.deploy.query, self.deploy.query_max) {
            (Some(_), None) => {
                return Err(invalid(
                    "deploy.query_max",
                    "a query needs the highest value it may give, e.g. query_max = 0.01".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "deploy.query_max",
                    "goes with `query`, the PromQL it bounds".into(),
                ))
            }
            (Some(_), Some(max)) if !max.is_finite() => {
                return Err(invalid("deploy.query_max", "must be a number".into()))
            }
            _ => {}
        }
        if parse_percent(&self.deploy.max_error_rate).is_none() {
            return Err(invalid(
                "deploy.max_error_rate",
                format!(
                    "{:?} is not a percentage: write it like \"1%\" or \"0.5%\"",
                    self.deploy.max_error_rate
                ),
            ));
        }
        if let Some(tls) = &self.tls {
            match (tls.acme, &tls.cert, &tls.key) {
                (true, None, None) => {}
                (true, _, _) => {
                    return Err(invalid(
                        "tls.acme",
                        "choose one: `acme = true` (issued automatically) or `cert` and `key` (files), not both".into(),
                    ))
                }
                (false, Some(_), Some(_)) => {}
                (false, Some(_), None) => {
                    return Err(invalid("tls.cert", "needs `key`, the certificate's private key".into()))
                }
                (false, None, Some(_)) => {
                    return Err(invalid("tls.key", "needs `cert`, the certificate chain it belongs to".into()))
                }
                (false, None, None) => {
                    return Err(invalid(
                        "tls",
                        "say where the certificate comes from: `acme = true`, or `cert` and `key` (PEM files on the server)".into(),
                    ))
                }
            }
            for (field, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                if path.as_ref().is_some_and(|p| !p.is_absolute()) {
                    return Err(invalid(
                        field,
                        "must be an absolute path on the server, like \"/etc/baton/tls/example.pem\"".into(),
                    ));
                }
            }
            if !["http-01", "tls-alpn-01"].contains(&tls.challenge.as_str()) {
                return Err(invalid(
                    "tls.challenge",
                    format!(
                        "{:?} is not a challenge Baton answers: use \"http-01\" or \"tls-alpn-01\"",
                        tls.challenge
                    ),
                ));
            }
            if let Some(text) = &tls.hsts {
                if humantime::parse_duration(text).is_err() {
                    return Err(invalid(
                        "tls.hsts",
                        format!("{text:?} is not a duration: write it like \"365d\" or \"1h\""),
                    ));
                }
            }
        }
        for (i, host) in self.deploy.preview_hosts.iter().enumerate() {
            check_host(host).map_err(|r| invalid(&format!("deploy.preview_hosts[{i}]"), r))?;
        }
        if self.runtime == RuntimeKind::Process && self.web.command.trim().is_empty() {
            return Err(invalid(
                "web.command",
                "the process runtime needs the command that starts the app, e.g. command = \"python3 app.py\"".into(),
            ));
        }
        if !self.health.path.starts_with('/') {
            return Err(invalid(
                "health.path",
                format!("{:?} must start with '/'", self.health.path),
            ));
        }
        if !(100..=599).contains(&self.health.status) {
            return Err(invalid(
                "health.status",
                format!(
                    "{} is not an HTTP status code (100 to 599)",
                    self.health.status
                ),
            ));
        }
        for (field, value) in [
            ("health.interval", self.health.interval),
            ("health.timeout", self.health.timeout),
            ("deploy.timeout", self.deploy.timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must be longer than zero".into()));
            }
        }
        for key in self.env.keys() {
            check_env_key(key).map_err(|r| invalid(&format!("env.{key}"), r))?;
        }
        if let Some(database) = &self.database {
            let path = std::path::Path::new(&database.migrations);
            if database.migrations.trim().is_empty()
                || path.is_absolute()
                || path.components().any(|c| c.as_os_str() == "..")
            {
                return Err(invalid(
                    "database.migrations",
                    format!(
                        "{:?} must be a folder inside the app folder, like \"db/migrations\"",
                        database.migrations
                    ),
                ));
            }
            check_env_key(&database.url_env).map_err(|r| invalid("database.url_env", r))?;
        }
        match (&self.docker, self.runtime) {
            (Some(_), RuntimeKind::Process) => {
                return Err(invalid(
                    "docker",
                    "a [docker] section needs runtime = \"docker\"".into(),
                ))
            }
            (Some(docker), RuntimeKind::Docker) => {
                if docker.port == 0 {
                    return Err(invalid(
                        "docker.port",
                        "must be a port number from 1 to 65535".into(),
                    ));
                }
                if let Some(memory) = &docker.memory {
                    if parse_size(memory).is_none() {
                        return Err(invalid(
                            "docker.memory",
                            format!("{memory:?} is not a size; write it like \"256m\" or \"1g\""),
                        ));
                    }
                }
                if docker.cpus.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
                    return Err(invalid(
                        "docker.cpus",
                        "must be a number of cores above 0, like 0.5".into(),
                    ));
                }
                if !["no", "on-failure", "unless-stopped", "always"]
                    .contains(&docker.restart.as_str())
                {
                    return Err(invalid(
                        "docker.restart",
                        format!(
                            "{:?} is not a restart policy: use \"no\", \"on-failure\", \"unless-stopped\" or \"always\"",
                            docker.restart
                        ),
                    ));
                }
            }
            _ => {}
        }
        if let Some(pipeline) = &self.pipeline {
            if pipeline.branch.trim().is_empty() {
                return Err(invalid(
                    "pipeline.branch",
                    "must name a branch, like \"main\"".into(),
                ));
            }
            if pipeline.timeout.is_zero() {
                return Err(invalid(
                    "pipeline.timeout",
                    "must be longer than zero".into(),
                ));
            }
            for (field, steps) in [
                ("pipeline.build", &pipeline.build),
                ("pipeline.test", &pipeline.test),
            ] {
                if let Some(i) = steps.iter().position(|s| s.trim().is_empty()) {
                    return Err(invalid(
                        &format!("{field}[{i}]"),
                        "is an empty command".into(),
                    ));
                }
            }
            if let Some(domain) = &pipeline.review_domain {
                check_host(domain).map_err(|r| invalid("pipeline.review_domain", r))?;
            }
        }
        for (name, section) in &self.environments {
            check_name("environment", name)
                .map_err(|reason| invalid(&format!("environments.{name}"), reason))?;
            for (i, host) in section.hosts.iter().flatten().enumerate() {
                check_host(host)
                    .map_err(|r| invalid(&format!("environments.{name}.hosts[{i}]"), r))?;
            }
            for (i, host) in section.preview_hosts.iter().flatten().enumerate() {
                check_host(host)
                    .map_err(|r| invalid(&format!("environments.{name}.preview_hosts[{i}]"), r))?;
            }
            for key in section.env.keys() {
                check_env_key(key)
                    .map_err(|r| invalid(&format!("environments.{name}.env.{key}"), r))?;
            }
        }
        if let Some(build) = &self.build {
            build::check(build, self.runtime).map_err(|(field, reason)| invalid(&field, reason))?;
        }
        for (name, job) in &self.cron {
            check_name("cron job", name)
                .map_err(|reason| invalid(&format!("cron.{name}"), reason))?;
            if self.runtime == RuntimeKind::Docker {
                return Err(invalid(
                    &format!("cron.{name}"),
                    "runs in a release's folder, which Docker apps do not have: run the schedule inside the image, or use the process runtime".into(),
                ));
            }
            job.check()
                .map_err(|(field, reason)| invalid(&format!("cron.{name}.{field}"), reason))?;
        }
        self.check_preview_hosts_are_not_live()
            .map_err(|(field, reason)| invalid(&field, reason))
    }

    /// A preview host serves a release nobody approved yet: it may never
    /// also be a host that serves the live release, in any environment.
    fn check_preview_hosts_are_not_live(&self) -> Result<(), (String, String)> {
        let mut live: Vec<(&str, String)> = self
            .hosts
            .iter()
            .map(|h| (h.as_str(), "hosts".to_string()))
            .collect();
        for (name, section) in &self.environments {
            for host in section.hosts.iter().flatten() {
                live.push((host, format!("environments.{name}.hosts")));
            }
        }
        let mut preview: Vec<(&str, String)> = self
            .deploy
            .preview_hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.as_str(), format!("deploy.preview_hosts[{i}]")))
            .collect();
        for (name, section) in &self.environments {
            for (i, host) in section.preview_hosts.iter().flatten().enumerate() {
                preview.push((host, format!("environments.{name}.preview_hosts[{i}]")));
            }
        }
        for (host, field) in preview {
            if let Some((_, live_field)) = live.iter().find(|(h, _)| *h == host) {
                return Err((
                    field,
                    format!("{host:?} is also listed in `{live_field}`: a preview host would send live traffic to a release nobody approved; give previews a host of their own"),
                ));
            }
        }
        Ok(())
    }

    /// The manifest's text with every variable's value (`[env]` and
    /// `[environments.X.env]`) replaced by `(redacted)`, for people who may
    /// not read secrets. A manifest that does not parse is withheld whole.
    pub fn redact_env(text: &str) -> String {
        let Ok(mut doc) = text.parse::<toml::Table>() else {
            return "# (withheld: the manifest could not be read to hide its variables)\n".into();
        };
        fn hide(table: Option<&mut toml::Value>) {
            if let Some(toml::Value::Table(env)) = table {
                for (_, value) in env.iter_mut() {
                    *value = toml::Value::String(REDACTED.into());
                }
            }
        }
        hide(doc.get_mut("env"));
        if let Some(toml::Value::Table(environments)) = doc.get_mut("environments") {
            for (_, section) in environments.iter_mut() {
                if let toml::Value::Table(section) = section {
                    hide(section.get_mut("env"));
                }
            }
        }
        toml::to_string(&doc).unwrap_or_default()
    }

    /// The Docker settings, with defaults when the section is absent.
    pub fn docker(&self) -> DockerSection {
        self.docker.clone().unwrap_or_default()
    }

    /// A review environment's own host, `<app>-pr-N.<review_domain>`, when
    /// the pipeline has review apps.
    fn review_hosts(&self, environment: &str) -> Option<Vec<String>> {
        let number = review_number(environment)?;
        let domain = self.pipeline.as_ref()?.review_domain.as_ref()?;
        Some(vec![format!("{}-pr-{number}.{domain}", self.name)])
    }

    /// The configuration for one environment: its hosts and variables.
    pub fn environment(&self, environment: &str) -> EnvironmentConfig {
        let section = self.environments.get(environment);
        let hosts = section
            .and_then(|s| s.hosts.clone())
            .or_else(|| self.review_hosts(environment))
            .unwrap_or_else(|| self.hosts.clone());
        let mut env = self.env.clone();
        if let Some(section) = section {
            env.extend(section.env.clone());
        }
        let preview_hosts = match section.and_then(|s| s.preview_hosts.clone()) {
            Some(hosts) => hosts,
            None if environment == DEFAULT_ENVIRONMENT => self.deploy.preview_hosts.clone(),
            None => Vec::new(),
        };
        EnvironmentConfig {
            environment: environment.to_string(),
            hosts,
            env,
            preview_hosts,
        }
    }
}

/// Reads a small text file that someone else may have made: `None` when it
/// does not exist; an error (saying why and what to do) when it is a
/// symbolic link, not a regular file, larger than `max` bytes, or not
/// UTF-8. Opening never follows a link and never waits on a FIFO.
pub fn read_regular_file(path: &Path, max: u64) -> Result<Option<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("is a symbolic link; Baton reads it only as a regular file: replace the link with the file".into())
        }
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(
            "is not a regular file (a FIFO, device or folder); replace it with a regular file"
                .into(),
        );
    }
    if meta.len() > max {
        return Err(format!(
            "is {} bytes, more than the {max} read at most; make it smaller",
            meta.len()
        ));
    }
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot be read as UTF-8 text: {e}"))?;
    Ok(Some(text))
}

/// Checks an app or environment name (`what`), saying what is wrong.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if is_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid {what} name: use 1 to 63 lower-case letters, digits and dashes, starting with a letter"
        ))
    }
}

/// App and environment names: DNS-label-like so they can appear in host
/// names, paths and file names unescaped.
pub fn is_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

fn check_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a valid host name: use lower-case labels of letters, digits and dashes separated by dots, without a port"
        ))
    }
}

/// The one rule for an app's variable names, in `[env]` and `baton
/// config` alike: shell-safe, bounded, never one Baton sets itself.
pub fn check_env_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && !key.as_bytes()[0].is_ascii_digit()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(format!(
            "{key:?} is not a valid variable name: use letters, digits and '_', not starting with a digit, at most 128 characters"
        ));
    }
    if key == "PORT" || key.starts_with("BATON_") {
        return Err(format!("{key} is set by Baton and cannot be overridden"));
    }
    Ok(())
}

/// A TOML error with the path of the field it happened in, as a
/// [`ManifestError::Syntax`] naming the file, line, column and field.
pub(crate) fn syntax_error(
    text: &str,
    file: &str,
    e: serde_path_to_error::Error<toml::de::Error>,
) -> ManifestError {
    let field = e.path().to_string();
    let inner = e.into_inner();
    let (mut line, mut column) = inner
        .span()
        .map(|span| line_column(text, span.start))
        .unwrap_or((1, 1));
    let mut reason = inner.message().trim().replace('\n', "; ");
    // The parser notices an unclosed array where the next line starts; the
    // mistake is on the line that opened it.
    if reason.contains("expected `]`") {
        if let Some(open) = unclosed_bracket_before(text, line) {
            (line, column) = open;
            reason = "this array is not closed: add `]` at the end of its last value".into();
        }
    }
    ManifestError::Syntax {
        file: file.to_string(),
        line,
        column,
        field: if field == "." {
            "(syntax)".into()
        } else {
            field
        },
        reason,
    }
}

/// The line and column of the last `[` before `line` that no `]` closes,
/// outside strings and comments.
fn unclosed_bracket_before(text: &str, line: usize) -> Option<(usize, usize)> {
    let mut open: Vec<(usize, usize)> = Vec::new();
    for (n, content) in text.lines().enumerate().take(line.saturating_sub(1)) {
        let mut in_string = false;
        for (i, c) in content.char_indices() {
            match c {
                '"' => in_string = !in_string,
                '#' if !in_string => break,
                '[' if !in_string => open.push((n + 1, i + 1)),
                ']' if !in_string => {
                    open.pop();
                }
                _ => {}
            }
        }
    }
    open.pop()
}

/// The line and column where `field` (as validation names it: `name`,
/// `deploy.preview_hosts[0]`, `environments.qa.env.X`) is written, if it
/// can be found: its key, or its table's header.
fn locate(text: &str, field: &str) -> Option<(usize, usize)> {
    let path: Vec<&str> = field
        .split('.')
        .map(|part| part.split('[').next().unwrap_or(part))
        .collect();
    let (key, tables) = path.split_last()?;
    let mut table: Vec<String> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        let indent = raw.len() - line.len();
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            let name = header.split(']').next().unwrap_or("").trim();
            table = name
                .split('.')
                .map(|p| p.trim().trim_matches('"').to_string())
                .collect();
            if table.iter().map(String::as_str).eq(path.iter().copied()) {
                return Some((n + 1, indent + 1));
            }
            continue;
        }
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim().trim_matches('"');
        // `a.b = …` inside `[t]` is the key `t.a.b`.
        let mut full: Vec<&str> = table.iter().map(String::as_str).collect();
        full.extend(name.split('.').map(|p| p.trim().trim_matches('"')));
        let mut wanted: Vec<&str> = tables.to_vec();
        wanted.push(key);
        if full == wanted {
            return Some((n + 1, indent + 1));
        }
    }
    None
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "hello"
hosts = ["hello.localhost"]
[web]
command = "python3 app.py"
"#;

    #[test]
    fn cron_jobs_are_read_and_their_mistakes_named_by_line() {
        let ok = format!(
            "{MINIMAL}[cron.backup]\nschedule = \"*/5 * * * *\"\ntimezone = \"Europe/Paris\"\ncommand = \"./backup.sh\"\novrlap = 1\n"
        );
        let e = Manifest::parse(&ok, "baton.toml").unwrap_err().to_string();
        assert!(e.contains("ovrlap"), "{e}");
        let ok = ok.replace("ovrlap = 1\n", "overlap = \"queue\"\n");
        let m = Manifest::parse(&ok, "baton.toml").unwrap();
        let job = &m.cron["backup"];
        assert_eq!(job.overlap, cron::Overlap::Queue);
        assert_eq!(job.missed, cron::Missed::RunOnce);
        assert_eq!(job.timeout, Duration::from_secs(600));
        for (from, to, field) in [
            ("*/5 * * * *", "*/5 * * *", "cron.backup.schedule"),
            ("Europe/Paris", "Europe/Pariss", "cron.backup.timezone"),
            ("./backup.sh", " ", "cron.backup.command"),
            ("[cron.backup]", "[cron.Backup]", "cron.Backup"),
        ] {
            let e = Manifest::parse(&ok.replace(from, to), "baton.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("field `{field}`")), "{e}");
            let line = ok.lines().position(|l| l.contains(from)).unwrap() + 1;
            assert!(e.starts_with(&format!("baton.toml:{line}:")), "{e}");
        }
    }

    #[test]
    fn minimal_manifest_gets_documented_defaults() {
        let m = Manifest::parse(MINIMAL, "baton.toml").unwrap();
        assert_eq!(m.name, "hello");
        assert_eq!(m.runtime, RuntimeKind::Process);
        assert_eq!(m.health.path, "/health");
        assert_eq!(m.health.status, 200);
        assert_eq!(m.deploy.keep_warm, Duration::from_secs(600));
        assert_eq!(m.web.stop_timeout, Duration::from_secs(10));
    }

    #[test]
    fn full_manifest_parses_durations_and_environments() {
        let text = r#"
name = "shop"
hosts = ["shop.example.com"]
[web]
command = "./server"
stop_timeout = "3s"
[health]
path = "/up"
interval = "250ms"
timeout = "1s"
status = 204
[deploy]
timeout = "2m"
drain_timeout = "15s"
keep_warm = "1h"
hold_timeout = "1s"
preview_hosts = ["next.shop.example.com"]
[env]
GREETING = "hi"
LEVEL = "info"
[environments.staging]
hosts = ["staging.shop.example.com"]
env = { LEVEL = "debug" }
"#;
        let m = Manifest::parse(text, "baton.toml").unwrap();
        assert_eq!(m.health.interval, Duration::from_millis(250));
        assert_eq!(m.deploy.timeout, Duration::from_secs(120));
        assert_eq!(m.deploy.keep_warm, Duration::from_secs(3600));
        let staging = m.environment("staging");
        assert_eq!(staging.hosts, vec!["staging.shop.example.com"]);
        assert_eq!(staging.env["LEVEL"], "debug");
        assert_eq!(staging.env["GREETING"], "hi");
        let production = m.environment("production");
        assert_eq!(production.hosts, vec!["shop.example.com"]);
        assert_eq!(production.env["LEVEL"], "info");
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let text = "name = \"hello\"\n[web]\ncommand = \"x\"\ncomand = \"y\"\n";
        let err = Manifest::parse(text, "app/baton.toml").unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("app/baton.toml:4:"), "{message}");
        assert!(message.contains("comand"), "{message}");
        assert!(message.contains("unknown field"), "{message}");
    }

    #[test]
    fn bad_duration_names_the_field() {
        let text = "name = \"hello\"\n[web]\ncommand = \"x\"\n[health]\ninterval = \"5 parsecs\"\n";
        let err = Manifest::parse(text, "baton.toml").unwrap_err();
        match &err {
            ManifestError::Syntax { field, line, .. } => {
                assert_eq!(field, "health.interval");
                assert_eq!(*line, 5);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("invalid duration"));
    }

    #[test]
    fn missing_command_is_reported_for_processes_only() {
        let err = Manifest::parse("name = \"hello\"\n[web]\n", "baton.toml").unwrap_err();
        assert!(err.to_string().contains("command"), "{err}");
        let m = Manifest::parse("name = \"hello\"\nruntime = \"docker\"\n", "baton.toml").unwrap();
        assert_eq!(m.docker().port, 8080);
    }

    fn message(text: &str) -> String {
        Manifest::parse(text, "baton.toml").unwrap_err().to_string()
    }

    #[test]
    fn a_duration_without_a_unit_says_how_to_write_one() {
        let err = message(
            "name = \"a\"\nhosts = [\"a.localhost\"]\n[web]\ncommand = \"x\"\nstop_timeout = 5\n",
        );
        assert!(err.starts_with("baton.toml:5:"), "{err}");
        assert!(err.contains("field `web.stop_timeout`"), "{err}");
        assert!(
            err.contains("write it as a string with one, e.g. \"5s\""),
            "{err}"
        );
    }

    #[test]
    fn numbers_and_booleans_in_env_are_taken_as_text() {
        let m = Manifest::parse(
            "name = \"a\"\nhosts = [\"a.localhost\"]\n[web]\ncommand = \"x\"\n[env]\nWORKERS = 4\nDEBUG = false\nRATIO = 0.5\n[environments.staging.env]\nWORKERS = 2\n",
            "baton.toml",
        )
        .unwrap();
        assert_eq!(m.env["WORKERS"], "4");
        assert_eq!(m.env["DEBUG"], "false");
        assert_eq!(m.env["RATIO"], "0.5");
        assert_eq!(m.environment("staging").env["WORKERS"], "2");
        let err = message("name = \"a\"\n[web]\ncommand = \"x\"\n[env]\nLIST = [1]\n");
        assert!(
            err.contains("LIST: a variable is a string, a number or a boolean"),
            "{err}"
        );
    }

    #[test]
    fn an_unclosed_array_is_reported_where_it_opens() {
        let err =
            message("name = \"hello\"\nhosts = [\"hello.localhost\"\n\n[web]\ncommand = \"x\"\n");
        assert!(err.starts_with("baton.toml:2:9:"), "{err}");
        assert!(err.contains("not closed: add `]`"), "{err}");
        assert!(!err.contains("(top level)"), "{err}");
    }

    #[test]
    fn an_invalid_value_is_reported_with_its_line() {
        let err = message("# an app\nname = \"Hello\"\n[web]\ncommand = \"x\"\n");
        assert!(err.starts_with("baton.toml:2:1: field `name`"), "{err}");
        let err = message(
            "name = \"a\"\n[web]\ncommand = \"x\"\n[environments.staging]\nhosts = [\"Bad Host\"]\n",
        );
        assert!(
            err.starts_with("baton.toml:5:1: field `environments.staging.hosts[0]`"),
            "{err}"
        );
    }

    #[test]
    fn a_folder_without_a_manifest_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("has no baton.toml: is it the app's folder?"),
            "{err}"
        );
        assert!(!err.contains("os error"), "{err}");
    }

    #[test]
    fn redacted_manifests_keep_the_names_and_hide_every_value() {
        let text = "name = \"shop\"\n[web]\ncommand = \"x\"\n[env]\nWORKERS = \"4\"\n[environments.production.env]\nDATABASE_URL = \"postgres://u:hunter2@db/shop\"\n";
        let shown = Manifest::redact_env(text);
        assert!(
            !shown.contains("hunter2") && !shown.contains("\"4\""),
            "{shown}"
        );
        assert!(
            shown.contains("DATABASE_URL") && shown.contains(REDACTED),
            "{shown}"
        );
        assert!(shown.contains("command = \"x\""), "{shown}");
        assert!(!Manifest::redact_env("name = [").contains('['));
    }

    #[test]
    fn invalid_values_are_rejected_with_field_and_reason() {
        let cases = [
            ("name = \"Hello\"\n[web]\ncommand = \"x\"\n", "name"),
            (
                "name = \"a\"\nhosts = [\"a:80\"]\n[web]\ncommand = \"x\"\n",
                "hosts[0]",
            ),
            ("name = \"a\"\n[web]\ncommand = \"  \"\n", "web.command"),
            (
                "name = \"a\"\n[web]\ncommand = \"x\"\n[health]\npath = \"up\"\n",
                "health.path",
            ),
            (
                "name = \"a\"\n[web]\ncommand = \"x\"\n[health]\nstatus = 42\n",
                "health.status",
            ),
            (
                "name = \"a\"\n[web]\ncommand = \"x\"\n[env]\nPORT = \"1\"\n",
                "env.PORT",
            ),
            (
                "name = \"a\"\n[web]\ncommand = \"x\"\n[deploy]\ntimeout = \"0s\"\n",
                "deploy.timeout",
            ),
            (
                "name = \"a\"\n[web]\ncommand = \"x\"\n[environments.Prod]\n",
                "environments.Prod",
            ),
            (
                "name = \"a\"\nhosts = [\"a.example\"]\n[web]\ncommand = \"x\"\n[deploy]\npreview_hosts = [\"a.example\"]\n",
                "deploy.preview_hosts[0]",
            ),
            (
                "name = \"a\"\n[web]\ncommand = \"x\"\n[environments.production]\nhosts = [\"a.example\"]\n[environments.staging]\npreview_hosts = [\"a.example\"]\n",
                "environments.staging.preview_hosts[0]",
            ),
        ];
        for (text, expected_field) in cases {
            match Manifest::parse(text, "baton.toml") {
                Err(ManifestError::Invalid { field, .. }) => assert_eq!(field, expected_field),
                other => panic!("{text:?}: expected invalid {expected_field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn docker_section_parses_limits_and_is_refused_without_the_docker_runtime() {
        let text = "name = \"a\"\nruntime = \"docker\"\n[web]\ncommand = \"-\"\n[docker]\nport = 3000\nmemory = \"256m\"\ncpus = 0.5\nrestart = \"on-failure\"\n";
        let m = Manifest::parse(text, "baton.toml").unwrap();
        let d = m.docker();
        assert_eq!(d.port, 3000);
        assert_eq!(d.memory_bytes(), Some(256 * 1024 * 1024));
        assert_eq!(d.nano_cpus(), Some(500_000_000));
        assert_eq!(d.keep_images, 3);
        let process = text.replace("runtime = \"docker\"\n", "");
        match Manifest::parse(&process, "baton.toml") {
            Err(ManifestError::Invalid { field, .. }) => assert_eq!(field, "docker"),
            other => panic!("{other:?}"),
        }
        for (bad, field) in [
            ("memory = \"lots\"", "docker.memory"),
            ("cpus = -1.0", "docker.cpus"),
            ("restart = \"sometimes\"", "docker.restart"),
        ] {
            let text = format!(
                "name = \"a\"\nruntime = \"docker\"\n[web]\ncommand = \"-\"\n[docker]\n{bad}\n"
            );
            match Manifest::parse(&text, "baton.toml") {
                Err(ManifestError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_migrations_folder_stays_inside_the_app() {
        let ok =
            "name = \"a\"\n[web]\ncommand = \"x\"\n[database]\nmigrations = \"db/migrations\"\n";
        assert_eq!(
            Manifest::parse(ok, "baton.toml")
                .unwrap()
                .database
                .unwrap()
                .migrations,
            "db/migrations"
        );
        for bad in ["/etc", "../other", ""] {
            let text = format!(
                "name = \"a\"\n[web]\ncommand = \"x\"\n[database]\nmigrations = \"{bad}\"\n"
            );
            match Manifest::parse(&text, "baton.toml") {
                Err(ManifestError::Invalid { field, .. }) => {
                    assert_eq!(field, "database.migrations")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn names_follow_dns_label_rules() {
        assert!(is_name("hello-2"));
        assert!(!is_name("2hello"));
        assert!(!is_name("hello-"));
        assert!(!is_name(""));
        assert!(!is_name("a_b"));
    }

    #[test]
    fn pipeline_section_gives_steps_promotion_and_review_hosts() {
        let text = format!(
            "{MINIMAL}\n[pipeline]\nbuild = [\"make\"]\ntest = [\"make test\"]\npromote = \"auto\"\nreview_domain = \"review.localhost\"\n"
        );
        let m = Manifest::parse(&text, "baton.toml").unwrap();
        let p = m.pipeline.clone().unwrap();
        assert_eq!(p.branch, "main");
        assert_eq!(p.promote, Promote::Auto);
        assert_eq!(p.timeout, Duration::from_secs(600));
        assert_eq!(
            m.environment("review-42").hosts,
            vec!["hello-pr-42.review.localhost"]
        );
        assert_eq!(m.environment("review-x").hosts, vec!["hello.localhost"]);
        assert_eq!(m.environment("staging").hosts, vec!["hello.localhost"]);
        assert_eq!(review_number("review-7"), Some(7));
        assert_eq!(review_number("review-"), None);
        assert_eq!(review_environment(7), "review-7");

        let err = Manifest::parse(
            &format!("{MINIMAL}\n[pipeline]\npromote = \"sometimes\"\n"),
            "baton.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pipeline.promote"), "{err}");
        let err = Manifest::parse(
            &format!("{MINIMAL}\n[pipeline]\ntest = [\"ok\", \" \"]\n"),
            "baton.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pipeline.test[1]"), "{err}");
    }

    #[test]
    fn preview_hosts_belong_to_one_environment() {
        let manifest = Manifest::parse(
            "name = \"a\"\nhosts = [\"a.localhost\"]\n[web]\ncommand = \"x\"\n[deploy]\npreview_hosts = [\"next.a.localhost\"]\n[environments.staging]\nhosts = [\"s.a.localhost\"]\n[environments.qa]\npreview_hosts = [\"next.qa.a.localhost\"]\n",
            "baton.toml",
        )
        .unwrap();
        assert_eq!(
            manifest.environment("production").preview_hosts,
            ["next.a.localhost"]
        );
        assert!(manifest.environment("staging").preview_hosts.is_empty());
        assert_eq!(
            manifest.environment("qa").preview_hosts,
            ["next.qa.a.localhost"]
        );
    }
}
