//! A process release's `[build]`: its command runs once, when the release is
//! created, in the release's own folder, before the release is recorded.
//! The archive is unpacked writable for the app user, the command runs as
//! that user (`Runtimes::app_user`, through `baton_runtime::app_command`:
//! the fixed base environment plus the manifest's `[env]`, a home of its
//! own, network access) within its time limit, its output kept in `DATA/logs/build-<release>.log`, then the
//! folder is sealed read-only and renamed into place
//! (`baton_package::seal_built`). A release id is built at most once at a
//! time, and never again once recorded while its folder is there; a failed
//! build leaves no release folder and no release record, and an event
//! (`release_build_failed`) with the tail of its output.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_manifest::{BuildSection, Manifest};
use baton_runtime::AppUser;
use baton_store::EventKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Error, Orchestrator, Result};

/// Output kept from one build; the rest is counted, not written.
const MAX_LOG: u64 = 64 * 1024 * 1024;
/// Lines of output a failed build's error shows.
const TAIL_LINES: usize = 20;
/// How long a build's output may still arrive once its command has ended
/// (something it started may hold the pipe open).
const DRAIN: Duration = Duration::from_secs(2);

/// The builds under way (one per release id).
#[derive(Default)]
pub(crate) struct Builds {
    running: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Builds {
    /// Whether release `id` is being built now (its folder is not a
    /// release yet).
    pub(crate) fn running(&self, id: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }
}

/// How a build command ended, when it did not succeed.
enum Failure {
    Exited(String),
    TimedOut(Duration),
    /// Baton could not run it or keep its result (the reason).
    Baton(String),
}

impl Orchestrator {
    /// Where the output of a process release's `[build]` is kept.
    pub fn build_log(&self, release: &str) -> PathBuf {
        self.logs.dir().join(format!("build-{release}.log"))
    }

    /// Unpacks, builds and seals a process release into its folder; returns
    /// the count of regular files in it. Called by `create_release` before
    /// anything is recorded.
    pub(crate) async fn build_release(
        &self,
        app: &str,
        id: &str,
        archive: Vec<u8>,
        manifest: &Manifest,
        build: &BuildSection,
    ) -> Result<usize> {
        let lock = {
            let mut running = self
                .builds
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            Arc::clone(running.entry(id.to_string()).or_default())
        };
        let outcome = {
            let _building = lock.lock().await;
            // Built by another upload of the same archive meanwhile.
            match self.store.release(id).await {
                Ok(release) if self.release_dir(id).is_dir() => Ok(release.files as usize),
                _ => self.build_once(app, id, archive, manifest, build).await,
            }
        };
        {
            let mut running = self
                .builds
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Ours and the map's: nobody else waits on it.
            if Arc::strong_count(&lock) == 2 {
                running.remove(id);
            }
        }
        outcome
    }

    async fn build_once(
        &self,
        app: &str,
        id: &str,
        archive: Vec<u8>,
        manifest: &Manifest,
        build: &BuildSection,
    ) -> Result<usize> {
        let short = baton_package::short_id(id).to_string();
        // As one-off commands and targets run: never root.
        let user = self.runtimes.app_user.clone();
        let dir = self.release_dir(id);
        let home = self.releases_dir.join(format!(".home-{id}"));
        let log = self.build_log(id);
        let _ = std::fs::create_dir_all(self.logs.dir());
        let _ = std::fs::remove_file(&log);
        let started = Instant::now();
        let prepared = {
            let (dir, home) = (dir.clone(), home.clone());
            let owner = user.as_ref().map(|u| (u.uid, u.gid));
            blocking(move || -> std::result::Result<(), String> {
                baton_package::unpack_for_build(
                    archive.as_slice(),
                    &dir,
                    owner,
                    &baton_package::Limits::default(),
                )
                .map_err(|e| e.to_string())?;
                make_home(&home, owner)
            })
            .await
        };
        let ran = match prepared {
            Err(reason) => {
                // The archive itself was refused: not a build failure.
                self.clean_up(Some(&dir), &home).await;
                return Err(Error::Invalid(reason));
            }
            Ok(()) => {
                note(
                    &log,
                    &format!(
                        "building release {short} in {}: sh -c {:?} as {} (time limit {})",
                        dir.display(),
                        build.command,
                        user.as_ref()
                            .map(|u| u.name.as_str())
                            .unwrap_or("the server's user"),
                        humantime::format_duration(build.timeout)
                    ),
                )
                .await;
                self.run_build(app, id, &dir, &home, manifest, build, user.as_ref(), &log)
                    .await
            }
        };
        let sealed = match ran {
            Err(failure) => Err(failure),
            Ok(()) => {
                note(
                    &log,
                    &format!(
                        "the build succeeded in {}; sealing the release read-only",
                        seconds(started.elapsed())
                    ),
                )
                .await;
                let (dir, root, id) = (dir.clone(), self.releases_dir.clone(), id.to_string());
                blocking(move || {
                    baton_package::seal_built(&dir, &root, &id, &baton_package::Limits::built())
                        .map(|sealed| sealed.files)
                        .map_err(|e| Failure::Baton(e.to_string()))
                })
                .await
            }
        };
        match sealed {
            Ok(files) => {
                self.clean_up(None, &home).await;
                note(&log, &format!("release {short} built: {files} files")).await;
                Ok(files)
            }
            Err(failure) => {
                self.clean_up(Some(&dir), &home).await;
                let what = match &failure {
                    Failure::Exited(status) => {
                        format!("the build command {:?} {status}", build.command)
                    }
                    Failure::TimedOut(after) => format!(
                        "the build command {:?} ran out of time after {} (raise [build] timeout if it needs longer)",
                        build.command,
                        humantime::format_duration(*after)
                    ),
                    Failure::Baton(reason) => format!("the built release was refused: {reason}"),
                };
                let tail = tail(&log).await;
                note(&log, &what).await;
                crate::noted(
                    self.store
                        .record_event(
                            app,
                            "-",
                            EventKind::ReleaseBuildFailed,
                            &format!("release {short}: {what}"),
                        )
                        .await,
                    "record_event",
                );
                Err(Error::Invalid(format!(
                    "release {short}: {what}; nothing was recorded, and what runs is untouched. Its last output:\n{tail}\n(the whole output: GET /api/v1/apps/{app}/releases/{id}/build-log)"
                )))
            }
        }
    }

    /// Runs the build command to its end or its time limit; everything it
    /// started in its process group is killed after.
    #[allow(clippy::too_many_arguments)]
    async fn run_build(
        &self,
        app: &str,
        id: &str,
        dir: &Path,
        home: &Path,
        manifest: &Manifest,
        build: &BuildSection,
        user: Option<&AppUser>,
        log: &Path,
    ) -> std::result::Result<(), Failure> {
        let baton = |e: std::io::Error| Failure::Baton(e.to_string());
        let (sender, mut receiver) = tokio::net::unix::pipe::pipe().map_err(baton)?;
        let out = sender.into_blocking_fd().map_err(baton)?;
        let err = out.try_clone().map_err(baton)?;
        let mut child = {
            let mut command = baton_runtime::app_command("sh", user)
                .map_err(|e| Failure::Baton(e.to_string()))?;
            command
                .arg("-c")
                .arg(&build.command)
                .current_dir(dir)
                .env("HOME", home)
                .envs(&manifest.env)
                .env("BATON_APP", app)
                .env("BATON_RELEASE", id)
                .stdout(out)
                .stderr(err)
                .kill_on_drop(true);
            // The command (and its copies of the pipe) ends here, so the
            // output ends when the build's processes end.
            command.spawn().map_err(|e| {
                Failure::Baton(baton_runtime::RuntimeError::spawn("sh", dir, user, e).to_string())
            })?
        };
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .filter(|p| *p > 1);
        let kept = log.to_path_buf();
        let mut copying = tokio::spawn(async move {
            let Ok(mut file) = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&kept)
                .await
            else {
                return;
            };
            let (mut written, mut buf) = (0u64, vec![0u8; 64 * 1024]);
            loop {
                match receiver.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) if written < MAX_LOG => {
                        // Lost output costs a view, never the build.
                        let _ = file.write_all(&buf[..n]).await;
                        written += n as u64;
                        if written >= MAX_LOG {
                            let _ = file
                                .write_all(b"\n[baton] output past 64 MiB is not kept\n")
                                .await;
                        }
                    }
                    Ok(_) => {}
                }
            }
            let _ = file.flush().await;
        });
        let ended = tokio::time::timeout(build.timeout, child.wait()).await;
        if let Some(pid) = group {
            // Whatever the build left running in its group ends with it.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let status = match ended {
            Ok(status) => status.map_err(baton)?,
            Err(_) => {
                let _ = child.wait().await;
                let _ = tokio::time::timeout(DRAIN, &mut copying).await;
                copying.abort();
                return Err(Failure::TimedOut(build.timeout));
            }
        };
        if tokio::time::timeout(DRAIN, &mut copying).await.is_err() {
            copying.abort();
        }
        if status.success() {
            Ok(())
        } else {
            use std::os::unix::process::ExitStatusExt;
            Err(Failure::Exited(match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                _ => format!("ended: {status}"),
            }))
        }
    }

    /// Removes a failed build's folder (`dir`) and the build's home.
    async fn clean_up(&self, dir: Option<&Path>, home: &Path) {
        let (dir, home) = (dir.map(Path::to_path_buf), home.to_path_buf());
        let removed = blocking(move || {
            if let Some(dir) = dir {
                baton_package::remove_built(&dir)?;
            }
            baton_package::remove_built(&home)
        })
        .await;
        if let Err(e) = removed {
            tracing::error!(error = %e, "cannot remove what a release build left");
        }
    }
}

/// The build's own home (caches and the like, thrown away after): an
/// empty folder given to the app user.
fn make_home(home: &Path, owner: Option<(u32, u32)>) -> std::result::Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let cannot =
        |e: std::io::Error| format!("cannot make the build's home {}: {e}", home.display());
    baton_package::remove_built(home).map_err(|e| e.to_string())?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(home)
        .map_err(cannot)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(home, Some(uid), Some(gid)).map_err(cannot)?;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Appends a line of Baton's own to a build's log.
async fn note(log: &Path, line: &str) {
    if let Ok(mut file) = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .await
    {
        let _ = file.write_all(format!("[baton] {line}\n").as_bytes()).await;
    }
}

/// The last lines of a build's log, each cut to a readable length.
async fn tail(log: &Path) -> String {
    const LAST_BYTES: u64 = 16 * 1024;
    let log = log.to_path_buf();
    let bytes = blocking(move || -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(&log)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LAST_BYTES)))?;
        let mut bytes = Vec::new();
        file.take(LAST_BYTES).read_to_end(&mut bytes)?;
        Ok(bytes)
    })
    .await
    .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    // The command's own output: Baton's notes say nothing the error does not.
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with("[baton] "))
        .collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|line| {
            let cut: String = line.chars().take(300).collect();
            format!("  | {cut}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.1}s", elapsed.as_secs_f64())
}
