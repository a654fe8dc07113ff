//! `baton users`, `baton login`, `baton tokens`, `baton whoami`.
//!
//! `users add` works on the server's host, on its data folder directly: it
//! is how the first admin comes to be. Everything else goes through the
//! API. `login` trades a password for an API token kept in
//! `~/.config/baton/tokens.json` (readable by its owner only), one per
//! server address; `BATON_TOKEN` overrides it.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use baton_auth::{Auth, Role};
use serde_json::{json, Value};

use crate::client::Api;
use crate::output::{green, table};
use crate::Common;

#[derive(clap::Subcommand)]
pub enum UsersCommand {
    /// Create an account (run on the server's host). Reads the password from
    /// the terminal, or from stdin with --password-stdin.
    Add {
        /// The account's name (letters, digits, . _ - @).
        name: String,
        /// Make it an admin (the same as --role admin).
        #[arg(long)]
        admin: bool,
        /// viewer, deployer or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// For a deployer: an environment they may change (repeat it);
        /// all when none is given.
        #[arg(long = "env")]
        environments: Vec<String>,
        /// For a deployer: an app they may upload releases of and change
        /// (repeat it); all when none is given.
        #[arg(long = "app")]
        apps: Vec<String>,
        /// Read the password from standard input (for scripts) instead of
        /// asking on the terminal.
        #[arg(long)]
        password_stdin: bool,
        /// The server's data folder.
        #[arg(long, env = "BATON_DATA")]
        data: Option<PathBuf>,
    },
    /// List the accounts (admins only).
    List {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Subcommand)]
pub enum TokensCommand {
    /// Make an API token for yourself (shown once).
    Create {
        /// What uses the token, e.g. `ci` or the machine's name.
        name: String,
        /// At most your own role.
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Your tokens (an admin sees everyone's).
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Revoke a token; it stops working with its next request.
    Revoke {
        /// The token's number (see `baton tokens list`).
        id: i64,
        #[command(flatten)]
        common: Common,
    },
}

fn read_password(from_stdin: bool, prompt: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if from_stdin || !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    tcsetattr(&stdin, SetArg::TCSANOW, &saved)?;
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn users(command: UsersCommand) -> Result<ExitCode> {
    match command {
        UsersCommand::Add {
            name,
            admin,
            role,
            environments,
            apps,
            password_stdin,
            data,
        } => {
            let role = if admin {
                Role::Admin
            } else {
                Role::parse(&role)
                    .ok_or_else(|| anyhow!("--role {role:?}: use viewer, deployer or admin"))?
            };
            let data = data.unwrap_or_else(crate::server::default_data_dir);
            let store_path = data.join("baton.db");
            if !store_path.exists() {
                return Err(anyhow!(
                    "{} does not exist: run this on the server's host, with --data set to the server's data folder",
                    store_path.display()
                ));
            }
            let password = read_password(password_stdin, &format!("Password for {name}: "))?;
            let store = baton_store::Store::open(&store_path).await?;
            let auth = Auth::open(store, &data).map_err(|e| anyhow!("{e}"))?;
            let environments = (!environments.is_empty()).then_some(environments);
            let apps = (!apps.is_empty()).then_some(apps);
            auth.add_user(&name, &password, role, environments, apps)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            println!("{} {name} can now log in as {role}", green("✓"));
            Ok(ExitCode::SUCCESS)
        }
        UsersCommand::List { common } => {
            let users: Vec<Value> = Api::new(&common.api).get("/users").await?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&users)?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut rows = vec![vec![
                "USER".to_string(),
                "ROLE".into(),
                "ENVIRONMENTS".into(),
            ]];
            for u in &users {
                rows.push(vec![
                    u["name"].as_str().unwrap_or("").into(),
                    u["role"].as_str().unwrap_or("").into(),
                    match u["environments"].as_array() {
                        Some(e) => e
                            .iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        None => "all".into(),
                    },
                ]);
            }
            table(&rows);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn tokens_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("baton/tokens.json"))
}

/// The token `baton login` saved for this server address, if any.
/// The data folder's `admin.token`, when the server at `api` is on this
/// host (never sent anywhere else) and this user may read the file: the
/// file's permissions decide, as a Unix socket's do.
pub fn admin_token(api: &str) -> Option<String> {
    let url = reqwest::Url::parse(api).ok()?;
    let host = url.host_str()?;
    let local = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !local {
        return None;
    }
    let data = std::env::var_os("BATON_DATA")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(crate::server::default_data_dir);
    let text = std::fs::read_to_string(data.join(baton_auth::ADMIN_TOKEN_FILE)).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

pub fn saved_token(api: &str) -> Option<String> {
    let text = std::fs::read_to_string(tokens_file()?).ok()?;
    let tokens: BTreeMap<String, String> = serde_json::from_str(&text).ok()?;
    tokens.get(api.trim_end_matches('/')).cloned()
}

fn save_token(api: &str, token: &str) -> Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = tokens_file()
        .ok_or_else(|| anyhow!("no HOME to keep the token in; set BATON_TOKEN instead"))?;
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let mut tokens: BTreeMap<String, String> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    tokens.insert(api.trim_end_matches('/').to_string(), token.to_string());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(serde_json::to_string_pretty(&tokens)?.as_bytes())?;
    Ok(path)
}

pub async fn login(common: &Common, user: &str, password_stdin: bool) -> Result<ExitCode> {
    let password = read_password(password_stdin, &format!("Password for {user}: "))?;
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "cli".into());
    let answer: Value = Api::new(&common.api)
        .post_json(
            "/login",
            &json!({"user": user, "password": password, "token_name": format!("cli on {host}")}),
        )
        .await?;
    let token = answer["token"]
        .as_str()
        .ok_or_else(|| anyhow!("the server sent no token"))?;
    let path = save_token(&common.api, token)?;
    println!(
        "{} logged in as {user}; token kept in {}",
        green("✓"),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn tokens(command: TokensCommand) -> Result<ExitCode> {
    match command {
        TokensCommand::Create { name, role, common } => {
            let mut body = json!({"name": name});
            if let Some(role) = role {
                body["role"] = json!(role);
            }
            let answer: Value = Api::new(&common.api).post_json("/tokens", &body).await?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("{}", answer["token"].as_str().unwrap_or(""));
                eprintln!(
                    "token {} ({}, {}): shown once; keep it in a secret store",
                    answer["record"]["id"],
                    name,
                    answer["record"]["role"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::List { common } => {
            let tokens: Vec<Value> = Api::new(&common.api).get("/tokens").await?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut rows = vec![vec![
                "ID".to_string(),
                "NAME".into(),
                "USER".into(),
                "ROLE".into(),
                "STARTS".into(),
                "STATE".into(),
            ]];
            for t in &tokens {
                rows.push(vec![
                    t["id"].to_string(),
                    t["name"].as_str().unwrap_or("").into(),
                    t["user"].as_str().unwrap_or("").into(),
                    t["role"].as_str().unwrap_or("").into(),
                    t["prefix"].as_str().unwrap_or("").into(),
                    if t["revoked_at"].is_null() {
                        "active".into()
                    } else {
                        "revoked".into()
                    },
                ]);
            }
            table(&rows);
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::Revoke { id, common } => {
            let api = Api::new(&common.api);
            let token: Value = api.delete(&format!("/tokens/{id}")).await?;
            println!(
                "{} token {id} ({}) revoked",
                green("✓"),
                token["name"].as_str().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn whoami(common: &Common) -> Result<ExitCode> {
    let me: Value = Api::new(&common.api).get("/whoami").await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&me)?);
    } else {
        println!(
            "{} ({}{})",
            me["name"].as_str().unwrap_or(""),
            me["role"].as_str().unwrap_or(""),
            match me["environments"].as_array() {
                Some(e) => format!(
                    " in {}",
                    e.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => String::new(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
