//! The real flag clients from PyPI against a running `baton server`:
//! OpenFeature's Python SDK with its OFREP provider, and Unleash's Python
//! SDK. Each must see a flag on for a listed user only, a 30 % rollout
//! keep the same users across a server restart, and a change without being
//! restarted. The clients are installed (pinned) into a virtual environment
//! under Cargo's target folder on first use; a failed install fails the test.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use common::*;
use serde_json::Value;

/// The clients under test, pinned.
const REQUIREMENTS: &[&str] = &[
    "openfeature-sdk==0.10.0",
    "openfeature-provider-ofrep==0.3.0",
    "UnleashClient==6.9.1",
];

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/flag_clients/driver.py");

static INSTALL: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The virtual environment's python, installing the clients the first time.
fn python() -> PathBuf {
    let mut installed = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(python) = installed.as_ref() {
        return python.clone();
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("flag-clients-venv");
    let python = venv.join("bin/python");
    let marker = venv.join("installed.txt");
    let wanted = REQUIREMENTS.join("\n");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(REQUIREMENTS));
        std::fs::write(&marker, &wanted).unwrap();
    }
    *installed = Some(python.clone());
    python
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}; python3 (with venv) is needed"));
    assert!(
        out.status.success(),
        "installing the flag clients failed: {command:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One running client process, answering commands.
struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    mode: &'static str,
}

impl Client {
    fn start(mode: &'static str, server: &Server, key: &str) -> Client {
        let mut child = Command::new(python())
            .arg(DRIVER)
            .args([mode, &server.api_url(), key])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut client = Client {
            child,
            stdin,
            stdout,
            mode,
        };
        assert_eq!(
            client.answer()["ready"],
            mode,
            "{mode} client did not start"
        );
        client
    }

    fn answer(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("{} client answered {line:?}", self.mode))
    }

    fn ask(&mut self, command: &str) -> Value {
        writeln!(self.stdin, "{command}").unwrap();
        self.answer()
    }

    fn on(&mut self, flag: &str, user: &str) -> bool {
        self.ask(&format!("on {flag} {user}"))["on"]
            .as_bool()
            .unwrap()
    }

    fn who(&mut self, flag: &str, n: usize) -> Vec<String> {
        serde_json::from_value(self.ask(&format!("who {flag} {n}"))["users"].clone()).unwrap()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn key(server: &Server) -> String {
    let key = server.json(&["flags", "keys", "create", "shop", "test-clients"]);
    key["key"].as_str().unwrap().to_string()
}

#[test]
fn ofrep_and_unleash_clients_see_targeting_sticky_rollouts_and_changes() {
    let _ = python();
    let mut server = Server::start();
    let key = key(&server);
    server.baton_ok(&[
        "flags",
        "create",
        "shop",
        "beta",
        "--enabled",
        "true",
        "--users",
        "alice",
    ]);
    server.baton_ok(&[
        "flags",
        "create",
        "shop",
        "gradual",
        "--enabled",
        "true",
        "--rollout",
        "30",
    ]);
    server.baton_ok(&["flags", "create", "shop", "switch"]);

    let mut before = vec![];
    for mode in ["ofrep", "unleash"] {
        let mut client = Client::start(mode, &server, &key);
        assert!(client.on("beta", "alice"), "{mode}: listed user");
        assert!(!client.on("beta", "bob"), "{mode}: user not listed");
        let users = client.who("gradual", 300);
        assert!(
            (60..=120).contains(&users.len()),
            "{mode}: {} of 300 users in a 30 % rollout",
            users.len()
        );
        before.push(users);
    }
    assert_eq!(before[0], before[1], "OFREP and Unleash agree on who is in");

    server.kill9();
    server.restart();
    for (mode, users) in ["ofrep", "unleash"].into_iter().zip(&before) {
        let mut client = Client::start(mode, &server, &key);
        assert_eq!(
            &client.who("gradual", 300),
            users,
            "{mode}: same users after a restart"
        );
    }

    // Long-lived clients pick up a change without being restarted.
    let mut clients: Vec<Client> = ["ofrep", "unleash"]
        .into_iter()
        .map(|mode| Client::start(mode, &server, &key))
        .collect();
    for client in &mut clients {
        assert!(!client.on("switch", "carol"));
    }
    server.baton_ok(&["flags", "enable", "shop", "switch"]);
    for client in &mut clients {
        let answer = client.ask("wait switch carol true 15");
        assert_eq!(
            answer["on"], true,
            "{} client still sees the flag off after {}s",
            client.mode, answer["seconds"]
        );
    }
}
