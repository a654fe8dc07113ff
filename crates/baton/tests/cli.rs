//! The CLI as a new user meets it: piped into `head`, asked to do what is
//! done already, aborting a preview, rolling "back" to something that was
//! never live, reading events and releases.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_instead_of_panicking() {
    let server = Server::start();
    server.deploy(&example_dir());
    // A pipe whose reader is gone before the first write: as `| head` is
    // once it has read its lines.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = Command::new(BIN)
        .args(["status", "--json"])
        .env("BATON_API", server.api_url())
        .env("BATON_DATA", server.data())
        .stdout(Stdio::from(std::fs::File::from(write)))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc_sigpipe()),
        "{:?}",
        out.status
    );
}

fn libc_sigpipe() -> i32 {
    nix::sys::signal::Signal::SIGPIPE as i32
}

#[test]
fn deploying_what_is_live_does_nothing_and_says_so() {
    let server = Server::start();
    let first = server.deploy(&example_dir());
    let out = server.baton(&["deploy", example_dir().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("is already live in production; nothing to do"),
        "{}",
        text(&out)
    );
    let json = server.json(&["deploy", example_dir().to_str().unwrap()]);
    assert_eq!(json["already_live"], true);
    assert_eq!(json["release_id"], first["release_id"]);
    // No deployment was started, so `status` cannot show the release twice.
    assert_eq!(
        server
            .json(&["deployments", "hello"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A rollback to it is the same rule.
    let out = server.baton(&[
        "rollback",
        "hello",
        "--to",
        first["release_id"].as_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("already live"), "{}", text(&out));
}

#[test]
fn aborting_a_preview_succeeds_and_a_deploy_meanwhile_names_continue_and_abort() {
    let server = Server::start();
    server.deploy(&example_dir());
    let next = AppCopy::new("next");
    let previewing = server.json(&["deploy", next.path().to_str().unwrap(), "--preview"]);
    assert_eq!(previewing["state"], "previewing");
    let id = previewing["id"].to_string();
    let other = AppCopy::new("other");
    let out = server.baton(&["deploy", other.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let message = text(&out);
    assert!(
        message.contains(&format!("`baton continue {id}`"))
            && message.contains(&format!("`baton abort {id}`")),
        "{message}"
    );
    let out = server.baton(&["abort", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Aborted"), "{}", text(&out));
    assert!(!text(&out).contains("error"), "{}", text(&out));
    // The release that was only ever previewed was never live: going to it
    // is a deploy, not a rollback.
    let out = server.baton(&[
        "rollback",
        "hello",
        "--to",
        previewing["release_id"].as_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("was never live for hello in production"),
        "{}",
        text(&out)
    );
}

#[test]
fn events_are_newest_first_and_name_who_and_releases_say_where_they_stand() {
    let server = Server::start();
    let first = server.deploy(&example_dir());
    let broken = AppCopy::new("broken");
    broken.set_env("FAIL_HEALTH", "1");
    broken.edit("baton.toml", "timeout = \"30s\"", "timeout = \"2s\"");
    let out = server.baton(&["deploy", broken.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let events = server.baton_ok(&["events", "hello"]);
    let lines: Vec<&str> = events.lines().collect();
    assert!(lines[0].contains("deployment_failed"), "{events}");
    assert!(
        events.contains("is live (by local-admin (admin.token))"),
        "{events}"
    );
    let releases = server.baton_ok(&["releases", "hello"]);
    let live = &first["release_id"].as_str().unwrap()[..12];
    let row = |id: &str| {
        releases
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not in {releases}"))
            .to_string()
    };
    assert!(row(live).contains("live in production"), "{releases}");
    let failed: Vec<Value> = server
        .json(&["releases", "hello"])
        .as_array()
        .unwrap()
        .clone();
    let broken_id = failed
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .find(|id| !id.starts_with(live))
        .unwrap();
    assert!(row(&broken_id[..12]).contains("failed"), "{releases}");
}

#[test]
fn a_host_taken_by_another_environment_names_the_section_to_write() {
    let server = Server::start();
    server.deploy(&example_dir());
    let out = server.baton(&["deploy", example_dir().to_str().unwrap(), "-e", "qa"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("[environments.qa] hosts = ["),
        "{}",
        text(&out)
    );
}
