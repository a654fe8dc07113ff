//! The `baton` command. `baton server` runs the control plane and starts
//! the proxy (`baton proxy`) in a process of its own; `baton upgrade`
//! replaces both with the binary on disk. Every other subcommand is a thin
//! client of the server's HTTP API, found through `BATON_API`. Nothing
//! here decides anything about deployments.

mod accounts;
mod api_listener;
mod app_config;
mod client;
mod commands;
mod cron;
mod data_folder;
mod data_plane;
mod db;
mod flags;
mod init;
mod lifecycle;
mod output;
mod pipeline;
mod proxy_process;
mod server;
mod upgrade;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The proxy allocates for every request; mimalloc keeps that cheap and
/// thread-local.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Where the client looks for the server when BATON_API is not set.
pub const DEFAULT_API: &str = "http://127.0.0.1:7070";

/// The commands by what people do with them (clap lists subcommands in one
/// block; a test checks that this names every one).
const COMMANDS: &str = "\
Deploy:
  deploy         Pack an app folder into a release and deploy it
  rollback       Go back to the previous release (or --to one)
  continue       Let a deployment paused in preview go on to the switch
  abort          Abandon a deployment paused in preview
  promote        Promote a release that passed staging to another environment
  maintenance    Answer an app's visitors with 503 and a message (on|off)
  canary         A canary deployment: its step and figures, promote or abort it
  restart        Deploy the live release again, with zero downtime
  stop           Stop an app in an environment (visitors get 503)
  start          Start a stopped app again
  config         An app's variables outside its code: set, unset, list
  run            Run a one-off command in the live release's environment
  scale          Set how many instances of the web process or a worker run
  cron           An app's scheduled jobs: list, history, run one now
  init           Write a first baton.toml for an app folder, guessed from its files
  destroy        Remove an app (or one environment of it) and everything it owns

Inspect:
  status         Every app and environment: live release, targets, hosts
  apps           Every app the server knows: environments, live release, state
  releases       An app's releases, newest first, with where each is live
  deployments    An app's deployments, newest first
  logs           Output of an app's live target, or its requests (--requests)
  events         What happened to an app's targets and deployments
  certs          HTTPS certificates: hosts, issuer, expiry, last error (renew)

Flags:
  flags          Feature flags: per app and environment, flags.toml, API keys, audit

Database:
  db             Database migrations: lint, plan, migrate, info, validate, repair, …

Pipeline:
  builds         Pipeline builds and their output
  review-apps    Running review apps (one per open pull request)
  notifications  Notifications sent, and how their delivery went

Access:
  login          Trade your password for an API token that the CLI keeps
  whoami         Who the server takes you for, and your role
  tokens         API tokens for automation
  users          Accounts (`users add` runs on the server's host)

Server:
  server         Run the control plane (HTTP API); it starts the proxy
  upgrade        Replace the running server and proxy with the binary on disk
  proxy          The proxy process: status, stop
  help           Print this message or the help of the given command
";

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Zero-downtime deploys, instant rollbacks, one binary.",
    help_template = "{about-with-newline}\n{usage-heading} {usage}\n\n{before-help}Options:\n{options}\n\nEvery command takes --help; client commands take --json for scripts.\n",
    before_help = COMMANDS,
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane (HTTP API); it starts the proxy.
    Server(server::ServerArgs),
    /// Replace the running server and proxy with the binary on disk (after
    /// installing a new one), without refusing a connection: run it on the
    /// server's host, as its user.
    Upgrade {
        /// The server's data folder [default: as `baton server`].
        #[arg(long, env = "BATON_DATA")]
        data: Option<PathBuf>,
        /// How long to wait for the new server, e.g. 60s.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The proxy process (started and watched by `baton server`).
    Proxy(proxy_process::ProxyArgs),
    /// Pack an app folder into a release and deploy it.
    Deploy {
        /// The app's folder, holding baton.toml.
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        env: EnvArg,
        /// Stop after the health check with the new release reachable only
        /// through the preview header or hosts; then `baton continue ID`.
        #[arg(long)]
        preview: bool,
        /// Return once the deployment has started instead of following it.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Write a first baton.toml for an app folder, guessed from what it
    /// holds (Dockerfile, requirements.txt or pyproject.toml, package.json,
    /// Gemfile, go.mod, Cargo.toml, Procfile), each guess explained in a
    /// comment.
    Init {
        /// The app's folder; `-` prints the current folder's manifest.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Replace an existing baton.toml.
        #[arg(long)]
        force: bool,
        /// Print the manifest instead of writing it.
        #[arg(long)]
        print: bool,
    },
    /// Go back to the previous release (or the one named with --to).
    Rollback {
        /// The app's name (as in its baton.toml).
        app: String,
        /// The release to go back to (an id or unambiguous prefix) that was
        /// live in this environment before [default: the previous one].
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        env: EnvArg,
        /// Return once the rollback has started instead of following it.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Answer an app's visitors with 503, Retry-After and a message while
    /// it keeps running (`on`), or serve it again (`off`).
    Maintenance {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// The app's name (as in its baton.toml).
        app: String,
        #[command(flatten)]
        env: EnvArg,
        /// What visitors are told [default: down for maintenance; back soon].
        #[arg(long)]
        message: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// A canary deployment (`strategy = "canary"`): `status` shows its
    /// steps and figures, `promote` sends every client to the new release
    /// now, `abort` sends them all back to the old one.
    Canary {
        /// `status`, `promote` or `abort`.
        #[arg(value_parser = ["status", "promote", "abort"])]
        action: String,
        /// The app's name (as in its baton.toml).
        app: String,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// Deploy the live release again (new target, health check, switch,
    /// drain: zero downtime), with the newest config.
    Restart {
        /// The app's name (as in its baton.toml).
        app: String,
        #[command(flatten)]
        env: EnvArg,
        /// Return once the restart has started.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Stop an app in an environment: visitors get 503, its targets and
    /// workers stop, and it stays so across server restarts.
    Stop {
        /// The app's name (as in its baton.toml).
        app: String,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// Start an app stopped with `baton stop`: the release that was
    /// live, deployed again with the newest config.
    Start {
        /// The app's name (as in its baton.toml).
        app: String,
        #[command(flatten)]
        env: EnvArg,
        /// Return once the start has begun.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        common: Common,
    },
    /// An app's variables outside its code (secrets included), per
    /// environment, stored encrypted; a change deploys the live release
    /// again with it.
    Config {
        #[command(subcommand)]
        command: app_config::ConfigCommand,
    },
    /// Set how many instances of the web process or a worker run (`web=3
    /// worker=2`), over the manifest's `instances`, at once and for the
    /// next deploys.
    Scale {
        /// The app's name (as in its baton.toml).
        app: String,
        /// PROCESS=COUNT pairs, like `web=3` or `worker=2`.
        #[arg(required = true, value_name = "PROCESS=COUNT")]
        counts: Vec<String>,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// Scheduled jobs (`[cron.NAME]` in baton.toml): list them, see a
    /// job's runs, run one now.
    Cron {
        #[command(subcommand)]
        command: cron::CronCommand,
    },
    /// Run a one-off command in the live release's folder, with its
    /// environment and config (`baton run shop -- python manage.py
    /// migrate`); its output streams back and its exit code is ours.
    /// Interrupting it (Ctrl-C) kills it.
    Run {
        /// The app's name (as in its baton.toml).
        app: String,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
        /// The command and its arguments, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// HTTPS certificates: each app's hosts, issuer, expiry, last renewal
    /// and last error; `renew` gets a new one now.
    Certs {
        #[command(subcommand)]
        action: Option<CertsAction>,
        #[command(flatten)]
        common: Common,
    },
    /// Let a deployment paused in preview go on to the switch.
    Continue {
        /// The deployment's number (shown by `baton deploy --preview`).
        deployment: i64,
        #[command(flatten)]
        common: Common,
    },
    /// Abandon a deployment paused in preview.
    Abort {
        /// The deployment's number (shown by `baton deploy --preview`).
        deployment: i64,
        #[command(flatten)]
        common: Common,
    },
    /// Every app and environment: live release, targets, hosts.
    Status {
        #[command(flatten)]
        common: Common,
    },
    /// An app's releases, newest first, with where each is live.
    Releases {
        /// The app's name (as in its baton.toml).
        app: String,
        #[command(flatten)]
        common: Common,
    },
    /// An app's deployments, newest first.
    Deployments {
        /// The app's name (as in its baton.toml).
        app: String,
        /// How many to list.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        common: Common,
    },
    /// Output of an app's live target, each line with the time Baton
    /// received it. With --json: one JSON object per line (JSON Lines), not
    /// an array, so that -f can stream; `at` holds the line's time and
    /// `line` the rest. With --requests: the app's requests instead, from
    /// the proxy's access log.
    Logs {
        /// The app's name (as in its baton.toml).
        app: String,
        #[command(flatten)]
        env: EnvArg,
        /// Keep following new output (and the next live target after a
        /// switch; with --requests, new requests).
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines to show first.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Show the app's requests (the proxy's access log): time, status,
        /// method, host and path, duration, bytes, release, request id; with
        /// --json, the access log's own JSON lines.
        #[arg(long, conflicts_with = "process")]
        requests: bool,
        /// A worker's output (`[processes.NAME]`, its first instance)
        /// instead of the web process's.
        #[arg(long, value_name = "NAME")]
        process: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Feature flags: per app and environment, flags.toml, API keys, audit.
    Flags {
        #[command(subcommand)]
        command: flags::FlagsCommand,
    },
    /// Accounts (admins; `users add` runs on the server's host).
    Users {
        #[command(subcommand)]
        command: accounts::UsersCommand,
    },
    /// Trade your password for an API token that the CLI keeps and uses.
    Login {
        /// Your user name.
        user: String,
        /// Read the password from standard input (for scripts) instead of
        /// asking on the terminal.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        common: Common,
    },
    /// API tokens for automation: create (shown once), list, revoke.
    Tokens {
        #[command(subcommand)]
        command: accounts::TokensCommand,
    },
    /// Who the server takes you for, and your role.
    Whoami {
        #[command(flatten)]
        common: Common,
    },
    /// Database migrations.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Pipeline builds and their output.
    Builds {
        #[command(subcommand)]
        command: pipeline::BuildsCommand,
    },
    /// Promote a release that passed staging to another environment.
    Promote {
        /// The app's name (as in its baton.toml).
        app: String,
        /// Release id or unambiguous prefix.
        release: String,
        /// The environment to promote to.
        #[arg(long, default_value = baton_manifest::DEFAULT_ENVIRONMENT)]
        to: String,
        /// Promote without waiting for the release's announcement; the
        /// reason and who gave it are recorded.
        #[arg(long, value_name = "REASON")]
        override_announcement: Option<String>,
        /// Return once the promotion has started instead of following it.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Running review apps (one per open pull request).
    ReviewApps {
        #[command(flatten)]
        common: Common,
    },
    /// Notifications sent, and how their delivery went.
    Notifications {
        /// How many to list.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        common: Common,
    },
    /// What happened to an app's targets and deployments, newest first.
    Events {
        /// The app's name (as in its baton.toml).
        app: String,
        /// How many to list.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        common: Common,
    },
    /// Every app the server knows, with each environment's live release,
    /// state and hosts.
    Apps {
        #[command(flatten)]
        common: Common,
    },
    /// Remove an app, or one environment of it (-e), and everything it
    /// owns: routes, running targets, releases (folders and images), logs,
    /// flags, API keys, config, maintenance, certificates, review apps, pipeline
    /// records and events. The audit log keeps its entries. Admins only.
    Destroy {
        /// The app's name (as in its baton.toml).
        app: String,
        /// Only this environment [default: every one].
        #[arg(short, long)]
        environment: Option<String>,
        /// Do not ask for the app's name (for scripts; needed when
        /// standard input is not a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Run a program and write its output to standard output, each line
    /// behind the time it was written; end as the program ends. The server
    /// starts targets through it (their process is `baton log-stamp -- sh
    /// -c COMMAND`); not meant to be run by hand.
    #[command(hide = true)]
    LogStamp {
        /// A variable set for the stamper alone, taken out of the
        /// program's environment (repeatable).
        #[arg(long, value_name = "NAME")]
        unset: Vec<OsString>,
        /// The program to run and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Check the app's migrations for changes that would break the release
    /// still running or lock a busy table, as a deploy judges them: only
    /// those not yet applied when the environment's database answers (all
    /// of them otherwise); exits 1 on an error finding.
    Lint {
        #[command(flatten)]
        db: db::DbArgs,
    },
    /// Apply pending migrations (Flyway's `migrate`), each in its own
    /// transaction, under the database's migration lock. Contract
    /// migrations are first checked and recorded by the Baton server of the
    /// environment: refused while an older release is live or warm.
    Migrate {
        #[command(flatten)]
        db: db::DbArgs,
        /// Apply only this half: `expand` (safe while the old release runs)
        /// or `contract` (once it is gone); both by default.
        #[arg(long, value_parser = ["all", "expand", "contract"], default_value = "all")]
        phase: String,
        /// Apply even when the linter finds a change that breaks the
        /// running release.
        #[arg(long)]
        allow_unsafe: bool,
        /// Apply contract migrations even while an older release is live or
        /// warm; the server records who did (audit log) and refuses
        /// rollbacks to releases without them.
        #[arg(long)]
        force: bool,
        /// The Baton server's API address, which checks and records
        /// contract migrations.
        #[arg(long, env = "BATON_API", default_value = DEFAULT_API, hide_env_values = true)]
        api: String,
    },
    /// Files and history side by side, with each migration's state
    /// (Flyway's `info`).
    Info {
        #[command(flatten)]
        db: db::DbArgs,
    },
    /// Check the history against the files; exits 1 on any problem
    /// (Flyway's `validate`).
    Validate {
        #[command(flatten)]
        db: db::DbArgs,
    },
    /// Remove failed rows, mark deleted files, realign checksums and
    /// descriptions (Flyway's `repair`).
    Repair {
        #[command(flatten)]
        db: db::DbArgs,
    },
    /// Record that the database already holds everything up to VERSION
    /// (Flyway's `baseline`).
    Baseline {
        #[command(flatten)]
        db: db::DbArgs,
        /// The baseline version.
        #[arg(long, default_value = "1")]
        version: String,
        /// The baseline row's description.
        #[arg(long)]
        description: Option<String>,
    },
    /// What a deploy of this folder will apply, and when: expand migrations
    /// before the new release starts, contract ones once the old is gone.
    Plan {
        #[command(flatten)]
        db: db::DbArgs,
    },
    /// Take over from `sqlx migrate`: copy sqlx's files under Flyway names
    /// (with --from) and record what sqlx applied in flyway_schema_history.
    ImportSqlx {
        #[command(flatten)]
        db: db::DbArgs,
        /// sqlx's migrations folder, whose `<version>_<name>.sql` files are
        /// copied into the app's as `V<version>__<name>.sql`.
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Write migrations from a recipe.
    New {
        #[command(subcommand)]
        recipe: db::Recipe,
    },
}

#[derive(clap::Args, Clone)]
pub struct EnvArg {
    /// The environment.
    #[arg(short, long, default_value = baton_manifest::DEFAULT_ENVIRONMENT)]
    pub environment: String,
}

#[derive(Subcommand)]
enum CertsAction {
    /// Get a new certificate now (ACME), or read the cert and key files
    /// again, and serve it without a restart.
    Renew {
        /// The app's name (as in its baton.toml).
        app: String,
        #[command(flatten)]
        env: EnvArg,
    },
}

#[derive(clap::Args, Clone)]
pub struct Common {
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The Baton server's API address.
    #[arg(long, env = "BATON_API", default_value = DEFAULT_API, hide_env_values = true)]
    pub api: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::LogStamp { unset, command } = cli.command {
        // Before any runtime or thread: it runs beside every target.
        baton_runtime::stamp::main(command, unset);
    }
    let serves = match &cli.command {
        Command::Server(_) => true,
        Command::Proxy(args) => args.serves(),
        _ => false,
    };
    if !serves {
        // A client command piped into `head` ends quietly when the reader
        // goes, as `cat` and `grep` do, instead of panicking on a failed
        // print. Rust ignores SIGPIPE by default; sockets are unaffected
        // (they are written with MSG_NOSIGNAL). The server keeps ignoring it.
        // SAFETY: set before any thread starts, with no handler of ours.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Upgrade {
                data,
                timeout,
                json,
            } => upgrade::upgrade(data, json, timeout).await,
            Command::Proxy(args) => proxy_process::run(args).await,
            Command::Deploy {
                dir,
                env,
                preview,
                no_wait,
                common,
            } => commands::deploy(&common, &dir, &env.environment, preview, no_wait).await,
            Command::Init { dir, force, print } => init::run(&dir, force, print),
            Command::Rollback {
                app,
                to,
                env,
                no_wait,
                common,
            } => commands::rollback(&common, &app, &env.environment, to.as_deref(), no_wait).await,
            Command::Maintenance {
                state,
                app,
                env,
                message,
                common,
            } => {
                commands::maintenance(&common, &app, &env.environment, state == "on", message).await
            }
            Command::Canary {
                action,
                app,
                env,
                common,
            } => commands::canary(&common, &action, &app, &env.environment).await,
            Command::Restart {
                app,
                env,
                no_wait,
                common,
            } => app_config::redeploy(&common, "restart", &app, &env.environment, no_wait).await,
            Command::Config { command } => app_config::config(command).await,
            Command::Stop { app, env, common } => {
                app_config::stop(&common, &app, &env.environment).await
            }
            Command::Start {
                app,
                env,
                no_wait,
                common,
            } => app_config::redeploy(&common, "start", &app, &env.environment, no_wait).await,
            Command::Scale {
                app,
                counts,
                env,
                common,
            } => app_config::scale(&common, &app, &env.environment, &counts).await,
            Command::Cron { command } => cron::cron(command).await,
            Command::Run {
                app,
                env,
                common,
                command,
            } => app_config::run(&common, &app, &env.environment, &command).await,
            Command::Certs { action, common } => match action {
                None => commands::certs(&common).await,
                Some(CertsAction::Renew { app, env }) => {
                    commands::renew_certificate(&common, &app, &env.environment).await
                }
            },
            Command::Continue { deployment, common } => {
                commands::answer_preview(&common, deployment, "continue").await
            }
            Command::Abort { deployment, common } => {
                commands::answer_preview(&common, deployment, "abort").await
            }
            Command::Status { common } => commands::status(&common).await,
            Command::Releases { app, common } => commands::releases(&common, &app).await,
            Command::Deployments { app, limit, common } => {
                commands::deployments(&common, &app, limit).await
            }
            Command::Logs {
                app,
                env,
                follow,
                lines,
                requests,
                process,
                common,
            } => {
                let environment = &env.environment;
                if requests {
                    commands::requests(&common, &app, environment, follow, lines).await
                } else {
                    let process = process.as_deref();
                    commands::logs(&common, &app, environment, process, follow, lines).await
                }
            }
            Command::Events { app, limit, common } => commands::events(&common, &app, limit).await,
            Command::Apps { common } => lifecycle::apps(&common).await,
            Command::Destroy {
                app,
                environment,
                yes,
                common,
            } => lifecycle::destroy(&common, &app, environment.as_deref(), yes).await,
            Command::LogStamp { .. } => unreachable!("log-stamp ran before the runtime started"),
            Command::Flags { command } => flags::run(command).await,
            Command::Users { command } => accounts::users(command).await,
            Command::Login {
                user,
                password_stdin,
                common,
            } => accounts::login(&common, &user, password_stdin).await,
            Command::Tokens { command } => accounts::tokens(command).await,
            Command::Whoami { common } => accounts::whoami(&common).await,
            Command::Builds { command } => pipeline::builds(command).await,
            Command::Promote {
                app,
                release,
                to,
                override_announcement,
                no_wait,
                common,
            } => {
                pipeline::promote(
                    &common,
                    &app,
                    &release,
                    &to,
                    override_announcement.as_deref(),
                    no_wait,
                )
                .await
            }
            Command::ReviewApps { common } => pipeline::review_apps(&common).await,
            Command::Notifications { limit, common } => {
                pipeline::notifications(&common, limit).await
            }
            Command::Db { command } => match command {
                DbCommand::Lint { db } => db::lint(&db).await,
                DbCommand::Migrate {
                    db,
                    phase,
                    allow_unsafe,
                    force,
                    api,
                } => db::migrate(&db, &phase, allow_unsafe, force, &api).await,
                DbCommand::Info { db } => db::info(&db).await,
                DbCommand::Validate { db } => db::validate(&db).await,
                DbCommand::Repair { db } => db::repair(&db).await,
                DbCommand::Baseline {
                    db,
                    version,
                    description,
                } => db::baseline(&db, &version, description.as_deref()).await,
                DbCommand::Plan { db } => db::plan(&db).await,
                DbCommand::ImportSqlx { db, from } => db::import_sqlx(&db, from.as_deref()).await,
                DbCommand::New { recipe } => db::new(recipe),
            },
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            output::error(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command is in the grouped list, and every argument of every
    /// command says what it is.
    #[test]
    fn help_lists_every_command_and_describes_every_argument() {
        let cli = super::Cli::command();
        for command in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
            let name = command.get_name();
            assert!(
                super::COMMANDS.contains(&format!("\n  {name} ")),
                "`baton {name}` is missing from the grouped command list"
            );
        }
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} <{id}>"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&cli, "baton", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without a description: {missing:#?}"
        );
    }
}
