//! `baton init`: a first manifest guessed from an app folder, for each
//! stack; a sample folder of each stack deploys with the manifest as
//! written and answers on its host through the proxy. The samples use no
//! third-party package but Python's `six`: their toolchains come from the
//! system (Debian's `nodejs`/`npm`, `ruby`/`ruby-bundler`, `golang-go`,
//! `cargo`), as an app user with the fixed PATH finds them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use baton_manifest::{Manifest, RuntimeKind};
use common::*;

fn init(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("init")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn init_ok(dir: &Path) -> String {
    let out = init(&[dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A folder named `name` (the app's name to be) holding `files`.
fn sample(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(name);
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// A tiny Python server reading PORT, proving `six` came from its build.
const PYTHON_APP: &str = r#"import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import six


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"six {six.__version__}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[test]
fn every_stack_gets_a_manifest_that_parses_with_its_guesses_explained() {
    let root = tempfile::tempdir().unwrap();
    let stacks: Vec<(PathBuf, RuntimeKind, &str, Option<&str>)> = vec![
        (
            sample(
                root.path(),
                "py",
                &[
                    ("requirements.txt", "six==1.16.0\n"),
                    ("app.py", PYTHON_APP),
                ],
            ),
            RuntimeKind::Process,
            "python3 app.py",
            Some("--target .deps"),
        ),
        (
            sample(
                root.path(),
                "node",
                &[
                    (
                        "package.json",
                        r#"{"scripts": {"start": "node server.js"}}"#,
                    ),
                    ("package-lock.json", "{}"),
                ],
            ),
            RuntimeKind::Process,
            "npm start",
            Some("npm ci"),
        ),
        (
            sample(
                root.path(),
                "ruby",
                &[("Gemfile", "gem 'rack'\n"), ("config.ru", "run App\n")],
            ),
            RuntimeKind::Process,
            "bundle exec rackup --host 127.0.0.1 --port $PORT",
            Some("bundle install"),
        ),
        (
            sample(
                root.path(),
                "go",
                &[
                    ("go.mod", "module example.com/orders\n"),
                    ("main.go", "os.Getenv(\"PORT\")"),
                ],
            ),
            RuntimeKind::Process,
            "./bin/orders",
            Some("go build -o bin/orders ."),
        ),
        (
            sample(
                root.path(),
                "rust",
                &[
                    ("Cargo.toml", "[package]\nname = \"api\"\n"),
                    ("src/main.rs", "fn main() {}\n"),
                ],
            ),
            RuntimeKind::Process,
            "./bin/api",
            Some("cargo build --release"),
        ),
        (
            sample(
                root.path(),
                "image",
                &[("Dockerfile", "FROM scratch\nEXPOSE 8081\n")],
            ),
            RuntimeKind::Docker,
            "",
            None,
        ),
    ];
    for (dir, runtime, command, build) in stacks {
        let said = init_ok(&dir);
        assert!(said.contains("Wrote"), "{said}");
        let text = std::fs::read_to_string(dir.join("baton.toml")).unwrap();
        let manifest = Manifest::load(&dir).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert_eq!(manifest.name, name);
        assert_eq!(manifest.hosts, [format!("{name}.localhost")]);
        assert_eq!(manifest.runtime, runtime, "{text}");
        assert_eq!(manifest.web.command, command, "{text}");
        match build {
            Some(build) => assert!(
                manifest.build.as_ref().unwrap().command.contains(build),
                "{text}"
            ),
            None => assert!(manifest.build.is_none(), "{text}"),
        }
        // Each guess says why, in a comment.
        assert!(
            text.lines().filter(|l| l.starts_with("# ")).count() >= 4,
            "{text}"
        );
    }
}

#[test]
fn an_existing_manifest_is_kept_unless_forced_and_print_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = sample(root.path(), "kept", &[("requirements.txt", "six\n")]);
    let manifest = dir.join("baton.toml");
    std::fs::write(&manifest, "# mine\n").unwrap();

    let out = init(&[dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("exists already") && error.contains("--force"),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), "# mine\n");

    let out = init(&["--print", dir.to_str().unwrap()]);
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("name = \"kept\""), "{printed}");
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), "# mine\n");

    // `-` prints the current folder's.
    let out = Command::new(BIN)
        .args(["init", "-"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), printed);

    let out = init(&["--force", dir.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), printed);

    // A link in its place is replaced, never written through.
    let elsewhere = root.path().join("elsewhere.toml");
    std::fs::write(&elsewhere, "# not baton's\n").unwrap();
    std::fs::remove_file(&manifest).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &manifest).unwrap();
    let out = init(&["--force", dir.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(&elsewhere).unwrap(),
        "# not baton's\n"
    );
    assert!(std::fs::symlink_metadata(&manifest).unwrap().is_file());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        2,
        "no partial file left"
    );
}

/// Whether `program` is on the PATH apps and builds get (not a user's
/// ~/.cargo/bin or /usr/local/go/bin).
fn on_app_path(program: &str) -> bool {
    baton_runtime::user::PATH
        .split(':')
        .any(|dir| Path::new(dir).join(program).is_file())
}

/// `baton init` on `dir`, then a deploy of `dir` with the manifest it wrote
/// untouched: the manifest, and the app's answer to `/` on its host through
/// the proxy.
async fn deployed_as_written(dir: &Path, tools: &[(&str, &str)]) -> (Manifest, u16, String) {
    for (program, package) in tools {
        assert!(
            on_app_path(program),
            "{program} is not on the app user's PATH: install Debian's {package} (scripts/test does)"
        );
    }
    init_ok(dir);
    let text = std::fs::read_to_string(dir.join("baton.toml")).unwrap();
    let manifest = Manifest::load(dir).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let server = Server::start();
    let deployment = server.deploy(dir);
    assert_eq!(
        deployment["state"],
        "succeeded",
        "{deployment}\n{text}\n{}",
        server.log()
    );
    let (status, body) = get_fresh(server.proxy, &manifest.hosts[0], "/")
        .await
        .unwrap();
    (manifest, status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_folder_deploys_as_baton_init_wrote_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = sample(
        root.path(),
        "initpy",
        &[
            ("requirements.txt", "six==1.16.0\n"),
            ("app.py", PYTHON_APP),
        ],
    );
    let (_, status, body) = deployed_as_written(&dir, &[("python3", "python3")]).await;
    assert_eq!((status, body.as_str()), (200, "six 1.16.0\n"));
}

/// A Node server on `http` alone, started by package.json's start script.
const NODE_PACKAGE: &str = r#"{
  "name": "initnode",
  "version": "1.0.0",
  "private": true,
  "scripts": {"start": "node server.js"}
}
"#;
const NODE_APP: &str = r#"const http = require("http");

http
  .createServer((request, response) => {
    response.end(`node ${process.versions.node.split(".")[0]}\n`);
  })
  .listen(Number(process.env.PORT), "127.0.0.1");
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_folder_deploys_as_baton_init_wrote_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = sample(
        root.path(),
        "initnode",
        &[("package.json", NODE_PACKAGE), ("server.js", NODE_APP)],
    );
    let (manifest, status, body) =
        deployed_as_written(&dir, &[("node", "nodejs"), ("npm", "npm")]).await;
    assert_eq!(manifest.web.command, "npm start");
    // No dependencies: npm installs nothing and asks no registry.
    assert_eq!(manifest.build.unwrap().command, "npm install");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("node ") && body.ends_with('\n'),
        "{body:?}"
    );
}

/// A Ruby server on the standard library's `socket` (WEBrick is a gem
/// since Ruby 3.0, outside a Gemfile with no gems).
const RUBY_APP: &str = r#"require "socket"

server = TCPServer.new("127.0.0.1", Integer(ENV.fetch("PORT")))
loop do
  client = server.accept
  while (line = client.gets) && line != "\r\n"
  end
  body = "ruby #{RUBY_VERSION}\n"
  client.write("HTTP/1.1 200 OK\r\nContent-Length: #{body.bytesize}\r\nConnection: close\r\n\r\n#{body}")
  client.close
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ruby_folder_deploys_as_baton_init_wrote_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = sample(
        root.path(),
        "initruby",
        &[
            ("Gemfile", "source \"https://rubygems.org\"\n"),
            ("app.rb", RUBY_APP),
        ],
    );
    let (manifest, status, body) =
        deployed_as_written(&dir, &[("ruby", "ruby"), ("bundle", "ruby-bundler")]).await;
    assert_eq!(manifest.web.command, "bundle exec ruby app.rb");
    assert_eq!(manifest.build.unwrap().command, "bundle install");
    assert_eq!(manifest.env["BUNDLE_PATH"], "vendor/bundle");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("ruby ") && body.ends_with('\n'),
        "{body:?}"
    );
}

/// A Go server on `net/http`, in a module that requires nothing.
const GO_APP: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\n", runtime.Version())
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_folder_deploys_as_baton_init_wrote_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = sample(
        root.path(),
        "initgo",
        &[
            ("go.mod", "module example.com/initgo\n\ngo 1.19\n"),
            ("main.go", GO_APP),
        ],
    );
    let (manifest, status, body) = deployed_as_written(&dir, &[("go", "golang-go")]).await;
    assert_eq!(manifest.build.unwrap().command, "go build -o bin/initgo .");
    assert_eq!(manifest.web.command, "./bin/initgo");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("go1.") && body.ends_with('\n'), "{body:?}");
}

/// A Rust server on `std::net` alone, with its lock file committed.
const RUST_MANIFEST: &str =
    "[package]\nname = \"initrust\"\nversion = \"0.1.0\"\nedition = \"2021\"\n";
const RUST_LOCK: &str = "# This file is automatically @generated by Cargo.\n# It is not intended for manual editing.\nversion = 3\n\n[[package]]\nname = \"initrust\"\nversion = \"0.1.0\"\n";
const RUST_APP: &str = r#"use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn main() {
    let port: u16 = std::env::var("PORT").unwrap().parse().unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    for stream in listener.incoming().flatten() {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        // The request's head, up to its blank line.
        while reader.read_line(&mut line).map_or(false, |n| n > 2) {
            line.clear();
        }
        let body = format!("{} {}\n", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        let _ = reader.get_mut().write_all(format!("{head}{body}").as_bytes());
    }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_folder_deploys_as_baton_init_wrote_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = sample(
        root.path(),
        "initrust",
        &[
            ("Cargo.toml", RUST_MANIFEST),
            ("Cargo.lock", RUST_LOCK),
            ("src/main.rs", RUST_APP),
        ],
    );
    let (manifest, status, body) = deployed_as_written(&dir, &[("cargo", "cargo")]).await;
    assert_eq!(
        manifest.build.unwrap().command,
        "cargo build --release --locked && mkdir -p bin && mv target/release/initrust bin/ && rm -rf target"
    );
    assert_eq!(manifest.web.command, "./bin/initrust");
    assert_eq!((status, body.as_str()), (200, "initrust 0.1.0\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_folder_deploys_as_baton_init_wrote_it() {
    // The example's static binary and Dockerfile, in a folder named after
    // the app (which is cleaned up by its name).
    let example = DockerApp::new("init", "v1");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(example.name);
    std::fs::create_dir(&dir).unwrap();
    for file in ["hello", "Dockerfile"] {
        std::fs::copy(example.path().join(file), dir.join(file)).unwrap();
    }
    init_ok(&dir);
    let manifest = Manifest::load(&dir).unwrap();
    assert_eq!(manifest.runtime, RuntimeKind::Docker);
    assert_eq!(manifest.docker().port, 8080, "from the Dockerfile's EXPOSE");
    let server = Server::start();
    let deployment = server.deploy(&dir);
    assert_eq!(deployment["state"], "succeeded", "{deployment}");
    let (status, body) = get_fresh(server.proxy, example.host, "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Hello from Baton's Docker example!"),
        "{body}"
    );
}
