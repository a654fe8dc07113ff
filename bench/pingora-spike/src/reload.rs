//! Keeps the route table in step with the routes file: reads it again on
//! SIGHUP or when its modification time changes (polled; a real data plane
//! would use inotify), swaps the table whole and sets the hold flags, and
//! reports when each retired target has drained. A bad file leaves the last
//! good table serving. Runs as a pingora background service and stops when
//! the server's shutdown watch fires.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::routes::{RouteFile, State};

pub struct Reloader {
    pub path: PathBuf,
    pub state: Arc<State>,
    pub drain_timeout: Duration,
}

impl Reloader {
    /// Reads and applies the file. Errors name the file and leave the table as it was.
    pub fn load(&self) -> Result<(), String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let file = RouteFile::parse(&text).map_err(|e| format!("{}: {e}", self.path.display()))?;
        for target in self.state.apply(&file) {
            let timeout = self.drain_timeout;
            tokio::spawn(async move {
                let started = Instant::now();
                let left = target.drain(timeout).await;
                eprintln!(
                    "pingora-spike: target {} drained in {} ms ({left} still in flight)",
                    target.addr,
                    started.elapsed().as_millis()
                );
            });
        }
        Ok(())
    }

    fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("pingora-spike: cannot watch SIGHUP ({e}); file changes only");
                return;
            }
        };
        let mut seen = self.modified();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup.recv() => {}
                _ = tick.tick() => {
                    let now = self.modified();
                    if now == seen {
                        continue;
                    }
                    seen = now;
                }
            }
            if let Err(e) = self.load() {
                eprintln!("pingora-spike: kept the last table: {e}");
            }
        }
    }
}
