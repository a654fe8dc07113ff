//! The record types, as the API shows them. Times are milliseconds since the
//! Unix epoch (`*_at` fields).

use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

macro_rules! string_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(DeploymentKind { Deploy => "deploy", Rollback => "rollback", Restart => "restart" });
string_enum!(DeploymentState {
    Running => "running",
    Previewing => "previewing",
    Succeeded => "succeeded",
    Failed => "failed",
});
string_enum!(StepKind {
    Migrate => "migrate",
    ReleaseCommand => "release_command",
    Processes => "processes",
    StartTarget => "start_target",
    HealthCheck => "health_check",
    Preview => "preview",
    Canary => "canary",
    Hold => "hold",
    Switch => "switch",
    Release => "release",
    Drain => "drain",
    KeepWarm => "keep_warm",
    Watch => "watch",
    Recover => "recover",
});
string_enum!(ContractState {
    Pending => "pending",
    Applied => "applied",
    Failed => "failed",
    Dropped => "dropped",
});
string_enum!(StepState {
    Running => "running",
    Done => "done",
    Failed => "failed",
});
string_enum!(TargetState {
    Starting => "starting",
    Healthy => "healthy",
    Live => "live",
    Draining => "draining",
    Warm => "warm",
    Stopping => "stopping",
    Stopped => "stopped",
    Failed => "failed",
});

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub id: String,
    pub app: String,
    pub created_at: i64,
    pub size: i64,
    pub files: i64,
    /// The release's `baton.toml`, as packed.
    pub manifest: String,
    /// For the Docker runtime: the id of the release's image.
    pub image: Option<String>,
}

impl Release {
    pub(crate) fn from_row(r: &SqliteRow) -> Release {
        Release {
            id: r.get("id"),
            app: r.get("app"),
            created_at: r.get("created_at"),
            size: r.get("size"),
            files: r.get("files"),
            manifest: r.get("manifest"),
            image: r.get("image"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub id: i64,
    pub app: String,
    pub environment: String,
    pub release_id: String,
    pub kind: DeploymentKind,
    pub state: DeploymentState,
    pub error: Option<String>,
    pub previous_release: Option<String>,
    /// The target this deployment puts live, once chosen.
    pub target_id: Option<i64>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Who asked for it: a user, a token, the pipeline.
    pub actor: Option<String>,
    /// The version of the environment's config (`baton config`) its
    /// target runs with; none before the first `config set`.
    #[serde(default)]
    pub config_version: Option<i64>,
    pub steps: Vec<Step>,
}

impl Deployment {
    pub(crate) fn from_row(r: &SqliteRow) -> Deployment {
        Deployment {
            id: r.get("id"),
            app: r.get("app"),
            environment: r.get("environment"),
            release_id: r.get("release_id"),
            kind: DeploymentKind::parse(r.get("kind")).unwrap_or(DeploymentKind::Deploy),
            state: DeploymentState::parse(r.get("state")).unwrap_or(DeploymentState::Failed),
            error: r.get("error"),
            previous_release: r.get("previous_release"),
            target_id: r.get("target_id"),
            created_at: r.get("created_at"),
            finished_at: r.get("finished_at"),
            actor: r.get("actor"),
            config_version: r.get("config_version"),
            steps: Vec::new(),
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self.state,
            DeploymentState::Succeeded | DeploymentState::Failed
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub seq: i64,
    pub step: StepKind,
    pub state: StepState,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub detail: Option<String>,
}

impl Step {
    pub(crate) fn from_row(r: &SqliteRow) -> Step {
        Step {
            seq: r.get("seq"),
            step: StepKind::parse(r.get("step")).unwrap_or(StepKind::Recover),
            state: StepState::parse(r.get("state")).unwrap_or(StepState::Failed),
            started_at: r.get("started_at"),
            finished_at: r.get("finished_at"),
            detail: r.get("detail"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetRecord {
    pub id: i64,
    pub app: String,
    pub environment: String,
    pub release_id: String,
    pub deployment_id: Option<i64>,
    pub port: u16,
    /// `process` or `docker`.
    pub runtime: String,
    /// `web`, or the name of a worker (`[processes.NAME]`).
    #[serde(default = "web")]
    pub process: String,
    pub handle: Option<String>,
    pub state: TargetState,
    pub restarts: i64,
    pub warm_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TargetRecord {
    pub(crate) fn from_row(r: &SqliteRow) -> TargetRecord {
        TargetRecord {
            id: r.get("id"),
            app: r.get("app"),
            environment: r.get("environment"),
            release_id: r.get("release_id"),
            deployment_id: r.get("deployment_id"),
            port: r.get::<i64, _>("port") as u16,
            runtime: r.get("runtime"),
            process: r.get("process"),
            handle: r.get("handle"),
            state: TargetState::parse(r.get("state")).unwrap_or(TargetState::Failed),
            restarts: r.get("restarts"),
            warm_until: r.get("warm_until"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRecord {
    pub app: String,
    pub environment: String,
    pub hosts: Vec<String>,
    pub preview_hosts: Vec<String>,
    pub hold_timeout_ms: i64,
    pub live_target: Option<i64>,
    pub preview_target: Option<i64>,
}

impl RouteRecord {
    pub(crate) fn from_row(r: &SqliteRow) -> RouteRecord {
        let list =
            |column: &str| serde_json::from_str::<Vec<String>>(r.get(column)).unwrap_or_default();
        RouteRecord {
            app: r.get("app"),
            environment: r.get("environment"),
            hosts: list("hosts"),
            preview_hosts: list("preview_hosts"),
            hold_timeout_ms: r.get("hold_timeout_ms"),
            live_target: r.get("live_target"),
            preview_target: r.get("preview_target"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub at: i64,
    pub app: String,
    pub environment: String,
    pub kind: String,
    pub message: String,
}

// What happened to an app, one kind per event: the one list that the
// orchestrator and the pipeline record and that notifications and the CLI
// read. Stored (and shown) as its snake_case name.
string_enum!(EventKind {
    Deployed => "deployed",
    RolledBack => "rolled_back",
    DeploymentFailed => "deployment_failed",
    BuildFailed => "build_failed",
    FlagsApplied => "flags_applied",
    FlagsFailed => "flags_failed",
    ImagesPruned => "images_pruned",
    ImageBuildFailed => "image_build_failed",
    TargetExited => "target_exited",
    TargetRestarted => "target_restarted",
    TargetRestartFailed => "target_restart_failed",
    TargetStopped => "target_stopped",
    ContractApplied => "contract_applied",
    ContractFailed => "contract_failed",
    EnvironmentRemoved => "environment_removed",
    MaintenanceOn => "maintenance_on",
    MaintenanceOff => "maintenance_off",
    LongLivedClosed => "long_lived_closed",
    CertificateIssued => "certificate_issued",
    CertificateFailed => "certificate_failed",
    CanaryStep => "canary_step",
    ConfigChanged => "config_changed",
    ReleaseCommandFailed => "release_command_failed",
    Scaled => "scaled",
    EnvironmentStopped => "environment_stopped",
    ReleaseBuildFailed => "release_build_failed",
    ReleasesPruned => "releases_pruned",
    CronFailed => "cron_failed",
});

// A cron run: recorded before its command starts (`running`, or `queued`
// behind the run still going), never twice for one tick.
string_enum!(CronState {
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    TimedOut => "timed_out",
    Skipped => "skipped",
    Interrupted => "interrupted",
});

impl Event {
    /// Its kind, when it is one this version of Baton knows.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::parse(&self.kind)
    }

    pub(crate) fn from_row(r: &SqliteRow) -> Event {
        Event {
            id: r.get("id"),
            at: r.get("at"),
            app: r.get("app"),
            environment: r.get("environment"),
            kind: r.get("kind"),
            message: r.get("message"),
        }
    }
}

/// The contract half of a deployment's migrations: pending until no target
/// of an older release is live or warm, then applied (or failed); dropped
/// when another release went live first. Contracts applied by hand
/// (`baton db migrate`) are recorded applied, with who applied them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    pub id: i64,
    pub app: String,
    pub environment: String,
    /// The release whose contract half it is; for one applied by hand, the
    /// release live then (none when nothing was).
    pub release_id: Option<String>,
    pub deployment_id: Option<i64>,
    /// The migration scripts, relative to the migrations folder.
    pub scripts: Vec<String>,
    pub state: ContractState,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub detail: Option<String>,
    /// Who applied it by hand; `None` when the server did.
    pub actor: Option<String>,
}

impl Contract {
    pub(crate) fn from_row(r: &SqliteRow) -> Contract {
        Contract {
            id: r.get("id"),
            app: r.get("app"),
            environment: r.get("environment"),
            release_id: r.get("release_id"),
            deployment_id: r.get("deployment_id"),
            scripts: serde_json::from_str(r.get::<&str, _>("scripts")).unwrap_or_default(),
            state: ContractState::parse(r.get("state")).unwrap_or(ContractState::Failed),
            created_at: r.get("created_at"),
            finished_at: r.get("finished_at"),
            detail: r.get("detail"),
            actor: r.get("actor"),
        }
    }
}

fn web() -> String {
    "web".to_string()
}
