//! Spike: Baton's proxy request path on Cloudflare's pingora, to measure it
//! beside baton-proxy (hyper), nginx and HAProxy in `bench/proxy.py` and to
//! try pingora's graceful upgrade (listening sockets handed to a new process).
//! Not part of Baton's workspace or CI; see bench/RESULTS.md.
//!
//! ```text
//! pingora-spike --routes routes.json [--listen 127.0.0.1:18483] [--threads N] [--no-work-stealing]
//!               [--h2c] [--upgrade|-u] [--upgrade-sock PATH]
//!               [--grace-period SECS] [--linger-ms MS] [--hold-timeout-ms MS]
//! ```
//!
//! The routes file is `{"routes": {"HOST": "IP:PORT", ...}, "held": ["HOST", ...]}`,
//! read again when it changes or on SIGHUP; a held host's requests wait
//! (`--hold-timeout-ms` at most) until a version of the file releases it.
//! `curl -H 'Host: spike.status' http://LISTEN/` shows the requests in flight
//! per target and the held hosts.
//!
//! Upgrade: start a second process with the same `--upgrade-sock` and `-u`,
//! then send SIGQUIT to the first; it hands over its listening sockets, keeps
//! accepting for pingora's fixed 5 s, then stops accepting, lets requests in
//! flight finish for `--grace-period` seconds and exits. `--linger-ms` delays
//! its closing of idle connections (see `linger`); 0 is pingora's own
//! behaviour.

mod linger;
mod proxy;
mod reload;
mod routes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerOptions;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;

use crate::routes::{RouteFile, State};

/// The same allocator as `baton` itself, so the comparison is of engines.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    listen: String,
    routes: PathBuf,
    threads: usize,
    work_stealing: bool,
    h2c: bool,
    upgrade: bool,
    upgrade_sock: String,
    grace_period: u64,
    linger: Duration,
    hold_timeout: Duration,
}

const USAGE: &str = "usage: pingora-spike --routes FILE [--listen ADDR] [--threads N] [--no-work-stealing] [--h2c] \
[--upgrade|-u] [--upgrade-sock PATH] [--grace-period SECS] [--linger-ms MS] [--hold-timeout-ms MS]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:18483".into(),
        routes: PathBuf::new(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        work_stealing: true,
        h2c: false,
        upgrade: false,
        upgrade_sock: "/tmp/pingora-spike-upgrade.sock".into(),
        grace_period: 5,
        linger: Duration::ZERO,
        hold_timeout: Duration::from_secs(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        let number = |name: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {v}"))
        };
        match flag.as_str() {
            "--listen" => args.listen = value("--listen")?,
            "--routes" => args.routes = value("--routes")?.into(),
            "--threads" => args.threads = number("--threads", value("--threads")?)? as usize,
            "--no-work-stealing" => args.work_stealing = false,
            "--h2c" => args.h2c = true,
            "--upgrade" | "-u" => args.upgrade = true,
            "--upgrade-sock" => args.upgrade_sock = value("--upgrade-sock")?,
            "--grace-period" => {
                args.grace_period = number("--grace-period", value("--grace-period")?)?
            }
            "--linger-ms" => {
                args.linger = Duration::from_millis(number("--linger-ms", value("--linger-ms")?)?)
            }
            "--hold-timeout-ms" => {
                args.hold_timeout =
                    Duration::from_millis(number("--hold-timeout-ms", value("--hold-timeout-ms")?)?)
            }
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if args.routes.as_os_str().is_empty() {
        return Err(format!("--routes is required\n{USAGE}"));
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let state = Arc::new(State::default());
    let first = std::fs::read_to_string(&args.routes)
        .map_err(|e| e.to_string())
        .and_then(|t| RouteFile::parse(&t).map_err(|e| e.to_string()));
    match first {
        Ok(file) => {
            state.apply(&file);
        }
        Err(e) => {
            eprintln!("pingora-spike: {}: {e}", args.routes.display());
            std::process::exit(1);
        }
    }

    let conf = ServerConf {
        threads: args.threads,
        work_stealing: args.work_stealing,
        upgrade_sock: args.upgrade_sock.clone(),
        grace_period_seconds: Some(args.grace_period),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: args.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);

    // Say when the hand-over happens, for the upgrade test's log.
    let mut phases = server.watch_execution_phase();
    let pid = std::process::id();
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        while let Ok(phase) = phases.blocking_recv() {
            eprintln!(
                "pingora-spike[{pid}] +{} ms: {phase:?}",
                started.elapsed().as_millis()
            );
        }
    });
    // With -u this blocks until the old process hands over its sockets.
    server.bootstrap();

    let spike = proxy::Spike {
        state: Arc::clone(&state),
        hold_timeout: args.hold_timeout,
    };
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, spike);
    if args.h2c {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        proxy.server_options = Some(options);
    }
    let app = linger::Lingering {
        inner: Arc::new(proxy),
        linger: args.linger,
    };
    let mut service = Service::new("pingora spike".into(), app);
    service.add_tcp(&args.listen);
    server.add_service(service);
    server.add_service(background_service(
        "routes file",
        reload::Reloader {
            path: args.routes.clone(),
            state,
            drain_timeout: Duration::from_secs(30),
        },
    ));
    println!(
        "pingora-spike listening on http://{} (pid {pid}, {} threads)",
        args.listen, args.threads
    );
    server.run_forever();
}
