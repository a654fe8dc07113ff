//! One-off commands in a release's environment: a release command before a
//! deployment's targets start, `baton run`, a cron job. The command runs
//! like a target (the app user, a cleared environment with the app's
//! variables, its own process group), with its output read back in order
//! (stdout and stderr through one pipe) rather than written to a file.
//! Dropped before it ends, it is killed with its whole group: a caller
//! that goes away takes its command with it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncRead;
use tokio::sync::watch;

use crate::{app_command, AppUser, Exit, RuntimeError};

/// What to run, where, with what.
#[derive(Clone)]
pub struct CommandSpec {
    pub app: String,
    pub environment: String,
    pub release: String,
    /// The release's folder: the command's working directory.
    pub dir: PathBuf,
    /// Run by `sh -c`.
    pub command: String,
    /// The app's variables (manifest and config), Baton's added after.
    pub env: BTreeMap<String, String>,
}

/// Its variables' values may be secrets: shown by name.
impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSpec")
            .field("app", &self.app)
            .field("environment", &self.environment)
            .field("release", &self.release)
            .field("dir", &self.dir)
            .field("command", &self.command)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A running one-off command.
pub struct OneOff {
    /// Its output, stdout and stderr interleaved as written.
    pub output: Pin<Box<dyn AsyncRead + Send>>,
    exit: watch::Receiver<Option<Exit>>,
    group: i32,
}

impl OneOff {
    /// Starts `spec` as `user` (see [`app_command`]).
    pub fn start(spec: &CommandSpec, user: Option<&AppUser>) -> Result<OneOff, RuntimeError> {
        let spawn_error = |source| RuntimeError::spawn(&spec.command, &spec.dir, user, source);
        let (reader, writer) = std::io::pipe().map_err(spawn_error)?;
        let mut command = app_command("sh", user)?;
        command
            .arg("-c")
            .arg(&spec.command)
            .current_dir(&spec.dir)
            .envs(&spec.env)
            .env("BATON_APP", &spec.app)
            .env("BATON_ENVIRONMENT", &spec.environment)
            .env("BATON_RELEASE", &spec.release)
            .stdout(Stdio::from(writer.try_clone().map_err(spawn_error)?))
            .stderr(Stdio::from(writer))
            .kill_on_drop(false);
        let mut child = command.spawn().map_err(spawn_error)?;
        // The parent's ends of the pipe's writing side went with `command`:
        // the output ends when the command and its children close theirs.
        drop(command);
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .unwrap_or(0);
        let output =
            tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into()).map_err(spawn_error)?;
        let (tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => crate::process::exit_of(status),
                Err(_) => Exit::Vanished,
            };
            let _ = tx.send(Some(status));
        });
        Ok(OneOff {
            output: Box::pin(output),
            exit,
            group,
        })
    }

    /// Resolves when the command's process has ended.
    pub async fn wait(&mut self) -> Exit {
        match self.exit.wait_for(Option::is_some).await {
            Ok(exit) => exit.unwrap_or(Exit::Vanished),
            Err(_) => Exit::Vanished,
        }
    }

    /// Whether it has ended.
    pub fn ended(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// SIGTERM to the whole group, SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        if self.ended() {
            return self.wait().await;
        }
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                self.signal(Signal::SIGKILL);
                self.wait().await
            }
        }
    }

    fn signal(&self, signal: Signal) {
        if self.group > 1 {
            let _ = killpg(Pid::from_raw(self.group), signal);
        }
    }
}

impl Drop for OneOff {
    fn drop(&mut self) {
        // Whatever it left running in its group goes too: a one-off never
        // outlives whoever waits for it.
        self.signal(Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn spec(command: &str) -> CommandSpec {
        CommandSpec {
            app: "shop".into(),
            environment: "production".into(),
            release: "abc".into(),
            dir: std::env::temp_dir(),
            command: command.into(),
            env: BTreeMap::from([("GREETING".into(), "hello".into())]),
        }
    }

    fn user() -> Option<AppUser> {
        AppUser::for_server(None).unwrap()
    }

    #[tokio::test]
    async fn output_and_exit_code_come_back_in_order() {
        let mut run = OneOff::start(
            &spec("echo $GREETING $BATON_APP; echo oops >&2; exit 3"),
            user().as_ref(),
        )
        .unwrap();
        let mut output = String::new();
        run.output.read_to_string(&mut output).await.unwrap();
        assert_eq!(output, "hello shop\noops\n");
        assert_eq!(run.wait().await, Exit::Code(3));
    }

    #[tokio::test]
    async fn dropping_it_kills_the_whole_group() {
        let mut run = OneOff::start(&spec("sleep 300 & echo $!; wait"), user().as_ref()).unwrap();
        let mut first = [0u8; 32];
        let n = run.output.read(&mut first).await.unwrap();
        let child: i32 = std::str::from_utf8(&first[..n])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        drop(run);
        // The grandchild (`sleep`) is gone too, once reaped by init.
        let gone = async {
            while crate::proc_stat(child as u32).is_some_and(|s| !s.zombie) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), gone)
            .await
            .expect("the command's child outlived it");
    }
}
