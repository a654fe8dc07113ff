//! Migrations inside deploys, against a real PostgreSQL server: a column
//! renamed with the generated expand/contract pair while the old release
//! keeps writing, a rollback in between, the contract half only once the old
//! release is gone, and an unsafe expand migration stopping a deploy.

mod common;

#[path = "../../baton-db/tests/support/postgres.rs"]
mod postgres;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use postgres::psql_url;
use serde_json::Value;

const HOST: &str = "users.localhost";

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/users");
    let out = Command::new("cp")
        .arg("-r")
        .arg(from.join("."))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    dir
}

fn set(app: &Path, from: &str, to: &str) {
    let path = app.join("baton.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "baton.toml has no {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

fn columns(url: &str) -> String {
    psql_url(
        url,
        "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'users'",
    )
}

fn events(server: &Server, kind: &str) -> Vec<Value> {
    server
        .json(&["events", "users", "--limit", "500"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// Writers and readers through the proxy: each client inserts a row, then
/// reads it back and checks it got the same value.
struct Writers {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    clients: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Writers {
    fn start(proxy: SocketAddr, clients: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let clients = (0..clients)
            .map(|n| {
                let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
                tokio::spawn(async move {
                    let client = reqwest::Client::builder().no_proxy().build().unwrap();
                    let base = format!("http://{proxy}");
                    let mut failures = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let value = format!("c{n}-{i}");
                        let result = async {
                            let r = client
                                .post(format!("{base}/users"))
                                .header("host", HOST)
                                .body(value.clone())
                                .send()
                                .await
                                .map_err(|e| e.to_string())?;
                            let (status, body) = (r.status(), r.text().await.unwrap_or_default());
                            if status != 200 {
                                return Err(format!("POST: {status} {body}"));
                            }
                            let id = body.lines().next().unwrap_or("").to_string();
                            let r = client
                                .get(format!("{base}/users/{id}"))
                                .header("host", HOST)
                                .send()
                                .await
                                .map_err(|e| e.to_string())?;
                            let (status, body) = (r.status(), r.text().await.unwrap_or_default());
                            if status != 200 || body.lines().next() != Some(value.as_str()) {
                                return Err(format!("GET {id}: {status} {body:?}, wrote {value}"));
                            }
                            Ok(())
                        }
                        .await;
                        match result {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.push(e),
                        }
                    }
                    failures
                })
            })
            .collect();
        Writers { stop, ok, clients }
    }

    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for client in self.clients {
            failures.extend(client.await.unwrap());
        }
        (self.ok.load(Ordering::Relaxed), failures)
    }

    /// Waits until `more` further round trips succeeded.
    async fn wait_for(&self, more: u64) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        let started = Instant::now();
        while self.ok.load(Ordering::Relaxed) < target {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the writers stalled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_column_renamed_by_expand_and_contract_under_writes_with_a_rollback_in_between() {
    let url = postgres::server().database();
    let server = Server::start();
    let v1 = fixture();
    set(
        v1.path(),
        "[env]\n",
        &format!("[env]\nDATABASE_URL = \"{url}\"\n"),
    );
    let first = server.deploy(v1.path());
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(first["steps"][0]["step"], "migrate");
    assert_eq!(columns(&url), "id,name");

    // v2: the generated pair, and code that uses the new column.
    let v2 = fixture();
    set(
        v2.path(),
        "[env]\n",
        &format!("[env]\nDATABASE_URL = \"{url}\"\n"),
    );
    set(v2.path(), "COLUMN = \"name\"", "COLUMN = \"full_name\"");
    let out = Command::new(BIN)
        .args([
            "db",
            "new",
            "rename-column",
            "users",
            "name",
            "full_name",
            "--type",
            "text",
            "--batch",
            "50",
            "--dir",
        ])
        .arg(v2.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut contract_script = String::new();
    for entry in std::fs::read_dir(v2.path().join("db/migrations")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with("V3__") {
            contract_script = name;
        }
    }
    assert!(contract_script.contains("contract"), "{contract_script}");

    {
        let writers = Writers::start(server.proxy, 4);
        writers.wait_for(20).await;

        // Deploy v2: the expand half runs first, the contract waits.
        let second = server.deploy(v2.path());
        assert_eq!(second["state"], "succeeded", "{second}");
        let migrate = &second["steps"][0];
        assert_eq!(migrate["step"], "migrate");
        let detail = migrate["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("applied V2__") && detail.contains(&contract_script),
            "{detail}"
        );
        assert_eq!(columns(&url), "id,name,full_name");
        writers.wait_for(20).await;

        // Roll back while v1 is warm: instant, and v1 keeps writing `name`.
        let back = server.rollback("users");
        assert_eq!(back["state"], "succeeded", "{back}");
        assert!(!back["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "migrate"));
        writers.wait_for(20).await;
        assert_eq!(columns(&url), "id,name,full_name");

        // Forward again: nothing left to expand; v1 goes warm.
        let third = server.deploy(v2.path());
        assert_eq!(third["state"], "succeeded", "{third}");
        assert_eq!(
            third["steps"][0]["detail"]
                .as_str()
                .unwrap()
                .split(';')
                .next(),
            Some("no expand migration to apply")
        );
        writers.wait_for(20).await;
        // Both columns are still there and agree on every row, whichever
        // release wrote it.
        assert_eq!(columns(&url), "id,name,full_name");
        assert!(events(&server, "contract_applied").is_empty());
        assert_eq!(
            psql_url(
                &url,
                "SELECT count(*) FROM users WHERE name IS DISTINCT FROM full_name"
            ),
            "0"
        );

        // The contract half once v1's warm target is gone.
        let started = Instant::now();
        let applied = loop {
            if let Some(event) = events(&server, "contract_applied").pop() {
                break event;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no contract applied:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            applied["message"]
                .as_str()
                .unwrap()
                .contains(&contract_script),
            "{applied}"
        );
        let v1_gone = events(&server, "target_stopped")
            .into_iter()
            .filter(|e| {
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("keep-warm time is over")
            })
            .map(|e| e["at"].as_i64().unwrap())
            .max()
            .expect("v1's warm target was stopped");
        assert!(v1_gone <= applied["at"].as_i64().unwrap());
        assert_eq!(columns(&url), "id,full_name");
        writers.wait_for(20).await;

        let (ok, failures) = writers.stop().await;
        eprintln!(
            "{ok} write-and-read-back round trips, {} failed",
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "{} failed of {}: {:?}",
            failures.len(),
            ok + failures.len() as u64,
            &failures[..failures.len().min(5)]
        );
        assert!(ok >= 100, "only {ok} round trips");
        assert_eq!(
            psql_url(
                &url,
                "SELECT count(*) FILTER (WHERE full_name IS NULL) || '|' || count(*) FROM users"
            ),
            format!("0|{ok}")
        );
    }

    // v1 predates the contract: rolling back to it now is refused.
    let out = server.baton(&[
        "rollback",
        "users",
        "--to",
        &short(first["release_id"].as_str().unwrap()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("predates contract migration"),
        "{err}"
    );

    // An unsafe expand migration stops the deploy before anything is applied.
    let v3 = fixture();
    std::fs::remove_dir_all(v3.path().join("db")).unwrap();
    Command::new("cp")
        .arg("-r")
        .arg(v2.path().join("db"))
        .arg(v3.path())
        .status()
        .unwrap();
    set(
        v3.path(),
        "[env]\n",
        &format!("[env]\nDATABASE_URL = \"{url}\"\n"),
    );
    set(v3.path(), "COLUMN = \"name\"", "COLUMN = \"full_name\"");
    std::fs::write(
        v3.path().join("db/migrations/V4__fine.sql"),
        "CREATE TABLE fine (id int);\n",
    )
    .unwrap();
    std::fs::write(
        v3.path().join("db/migrations/V5__drop.sql"),
        "ALTER TABLE users DROP COLUMN full_name;\n",
    )
    .unwrap();
    let out = server.baton(&["deploy", v3.path().to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("V5__drop.sql:1")
            && text.contains("ban-drop-column")
            && text.contains("nothing was applied"),
        "{text}"
    );
    assert_eq!(
        psql_url(
            &url,
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'fine'"
        ),
        "0"
    );
    assert_eq!(server.live()["release_id"], third_release(&server));
}

fn third_release(server: &Server) -> Value {
    let deployments = server.json(&["deployments", "users"]);
    deployments
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["state"] == "succeeded")
        .map(|d| d["release_id"].clone())
        .unwrap()
}

#[test]
fn a_deploy_whose_database_is_missing_or_unreachable_fails_before_starting_anything() {
    let server = Server::start();
    let app = fixture();
    // No DATABASE_URL at all: the manifest field is named.
    let out = server.baton(&["deploy", app.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        text.contains(
            "field `database.url_env`: DATABASE_URL is not set for environment production"
        ),
        "{text}"
    );
    // A database nobody answers for: the URL (without its password) is named.
    set(
        app.path(),
        "[env]\n",
        "[env]\nDATABASE_URL = \"postgres://app:secret@127.0.0.1:1/app\"\n",
    );
    let out = server.baton(&["deploy", app.path().to_str().unwrap(), "--json"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        text.contains("cannot connect to postgres://app:***@127.0.0.1:1/app")
            && !text.contains("secret"),
        "{text}"
    );
    let deployments = server.json(&["deployments", "users"]);
    let last = &deployments[0];
    assert_eq!(last["state"], "failed");
    let steps: Vec<&str> = last["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["migrate"],
        "nothing started after the failed migrate step"
    );
    assert!(server
        .json(&["status"])
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["live"].is_null()));
}

/// v1, then v2 with the rename pair, both in staging, v1 kept warm long
/// enough for the test to act while it is.
fn staging_with_v1_warm(
    server: &Server,
    url: &str,
) -> (tempfile::TempDir, tempfile::TempDir, Value) {
    let v1 = fixture();
    set(
        v1.path(),
        "[env]\n",
        &format!("[env]\nDATABASE_URL = \"{url}\"\n"),
    );
    set(v1.path(), "keep_warm = \"8s\"", "keep_warm = \"10m\"");
    let first: Value = serde_json::from_str(&server.baton_ok(&[
        "deploy",
        v1.path().to_str().unwrap(),
        "-e",
        "staging",
        "--json",
    ]))
    .unwrap();
    assert_eq!(first["state"], "succeeded", "{first}");
    let v2 = fixture();
    set(
        v2.path(),
        "[env]\n",
        &format!("[env]\nDATABASE_URL = \"{url}\"\n"),
    );
    set(v2.path(), "keep_warm = \"8s\"", "keep_warm = \"10m\"");
    set(v2.path(), "COLUMN = \"name\"", "COLUMN = \"full_name\"");
    let dir = v2.path().to_str().unwrap();
    server.baton_ok(&[
        "db",
        "new",
        "rename-column",
        "users",
        "name",
        "full_name",
        "--type",
        "text",
        "--dir",
        dir,
    ]);
    let second: Value =
        serde_json::from_str(&server.baton_ok(&["deploy", dir, "-e", "staging", "--json"]))
            .unwrap();
    assert_eq!(second["state"], "succeeded", "{second}");
    assert_eq!(columns(url), "id,name,full_name");
    (v1, v2, first)
}

fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_applied_by_hand_while_the_old_release_is_warm_is_refused_and_once_forced_blocks_the_rollback(
) {
    let url = postgres::server().database();
    let server = Server::start();
    let (_v1, v2, first) = staging_with_v1_warm(&server, &url);
    let dir = v2.path().to_str().unwrap();

    // The contract half by hand while v1 is warm: refused, nothing applied
    // (with `all`, not even the expand half before it).
    for phase in ["contract", "all"] {
        let out = server.baton(&["db", "migrate", dir, "-e", "staging", "--phase", phase]);
        let text = output(&out);
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains("refused")
                && text.contains("still warm")
                && text.contains("--force")
                && text.contains("nothing was applied"),
            "{text}"
        );
        assert_eq!(columns(&url), "id,name,full_name");
    }
    assert!(events(&server, "contract_applied").is_empty());

    // Forced: applied, and the server knows who did it and why it waited.
    let out = server.baton(&[
        "db", "migrate", dir, "-e", "staging", "--phase", "contract", "--force",
    ]);
    let text = output(&out);
    assert!(out.status.success(), "{text}\n{}", server.log());
    assert!(
        text.contains("--force although release") && text.contains("still warm"),
        "{text}"
    );
    assert_eq!(columns(&url), "id,full_name");
    let applied = events(&server, "contract_applied");
    assert!(
        applied.len() == 1 && applied[0]["message"].as_str().unwrap().contains("by hand"),
        "{applied:?}"
    );
    let audit: Value = server
        .http()
        .get(format!("{}/api/v1/audit", server.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "contract.apply_by_hand")
        .unwrap_or_else(|| panic!("no audit entry: {audit}"));
    assert_eq!(entry["environment"], "staging");
    assert_eq!(entry["detail"]["forced"], true, "{entry}");
    assert!(!entry["actor"].as_str().unwrap().is_empty());

    // v1 lacks the contract: rolling back to it (still warm) is refused now,
    // as it is for contracts the server applied.
    let out = server.baton(&["rollback", "users", "-e", "staging"]);
    let text = output(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("predates contract migration") && text.contains("by hand"),
        "{text}"
    );
    let out = server.baton(&[
        "rollback",
        "users",
        "-e",
        "staging",
        "--to",
        &short(first["release_id"].as_str().unwrap()),
    ]);
    assert!(!out.status.success(), "{}", output(&out));
}

#[test]
fn a_contract_by_hand_names_its_environment_and_needs_the_server() {
    let url = postgres::server().database();
    let app = fixture();
    set(
        app.path(),
        "[env]\n",
        &format!("[env]\nDATABASE_URL = \"{url}\"\n"),
    );
    std::fs::write(
        app.path().join("db/migrations/V2__drop_name.sql"),
        "-- baton:contract\nALTER TABLE users DROP COLUMN name;\n",
    )
    .unwrap();
    let dir = app.path().to_str().unwrap();
    let run = |args: &[&str], api: &str| {
        let out = Command::new(BIN)
            .args(["db", "migrate", dir])
            .args(args)
            .env("BATON_API", api)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (out.status.success(), output(&out))
    };
    // Nobody answers for the environment: nothing is applied, forced or not.
    for force in [&[][..], &["--force"][..]] {
        let (ok, text) = run(
            &[&["-e", "staging"][..], force].concat(),
            "http://127.0.0.1:1",
        );
        assert!(!ok, "{text}");
        assert!(
            text.contains("cannot reach the Baton server")
                && text.contains("must record contract migrations applied by hand")
                && text.contains("nothing was applied"),
            "{text}"
        );
    }
    // --url without -e: which environment's database is it?
    let (ok, text) = run(&["--url", &url], "http://127.0.0.1:1");
    assert!(!ok && text.contains("add -e ENV"), "{text}");
    assert_eq!(
        psql_url(
            &url,
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'users'"
        ),
        "0"
    );
    // The expand half alone needs no server.
    let (ok, text) = run(
        &["-e", "staging", "--phase", "expand"],
        "http://127.0.0.1:1",
    );
    assert!(ok, "{text}");
    assert!(text.contains("1 migration applied"), "{text}");
}
