//! Who an app's code runs as, and what environment it gets: targets of the
//! process runtime and the pipeline's build steps both start through
//! [`app_command`], so the rule lives here once. It owns the choice of the
//! app user (never root) and the environment; it must never pass on
//! anything of the server's own environment, so that what an app sees does
//! not depend on who started the server or from which shell.
//!
//! The environment a target or a build step gets, and nothing else:
//!
//! - `PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`
//! - `HOME`: the app user's home from the user database (`/nonexistent`
//!   for `baton-app` and `nobody`); when apps run as the server's own
//!   (non-root) user, that user's home from the user database
//! - `USER` and `LOGNAME`: the app user's name (or the server's user's)
//! - `LANG=C.UTF-8`
//!
//! then, for a target, the manifest's variables and the config's, `PORT`
//! (web targets only), `BATON_PROCESS` (`web` or the worker's name),
//! `BATON_APP`, `BATON_ENVIRONMENT`, `BATON_RELEASE`, `BATON_TARGET`; for a
//! one-off command the same but `PORT`, `BATON_PROCESS` and `BATON_TARGET`;
//! for a build step,
//! `CI=true`, `HOME` set to the build's own home folder, `BATON_BUILD`,
//! `BATON_COMMIT` and `BATON_APP`. A later variable replaces an earlier one
//! of the same name. A Docker target gets its image's environment in place
//! of this base, then the same variables; it runs as the image's user.
//!
//! The app user: when the server runs as root, the one given with
//! `--app-user`, else `baton-app` (created as a system user with no home and
//! no login shell if missing), else `nobody`. When the server does not run
//! as root, apps run as the server's own user, since only root can switch.
//! Supplementary groups are dropped with the switch.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::unistd::{geteuid, User};

use crate::RuntimeError;

/// The user a root server runs apps as when none is configured.
pub const DEFAULT_APP_USER: &str = "baton-app";
/// The user taken when [`DEFAULT_APP_USER`] cannot be created.
const FALLBACK_APP_USER: &str = "nobody";
/// Apps' `PATH`, fixed rather than the server's, which differs between a
/// login shell, `sudo` and a service manager.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An unprivileged user from the user database; never uid 0 or gid 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl AppUser {
    /// The user `name` from the user database. Refuses root: apps never run
    /// as root, whatever the settings say.
    pub fn resolve(name: &str) -> Result<AppUser, RuntimeError> {
        let user = User::from_name(name)
            .map_err(|e| RuntimeError::UserLookup {
                name: name.to_string(),
                reason: e.to_string(),
            })?
            .ok_or_else(|| RuntimeError::UnknownAppUser {
                name: name.to_string(),
            })?;
        // Group 0 reads and often writes what root's group owns (logs,
        // configuration): as good as root for an app, so refused too.
        if user.uid.is_root() || user.gid.as_raw() == 0 {
            return Err(RuntimeError::RootAppUser {
                name: name.to_string(),
            });
        }
        Ok(AppUser {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
        })
    }

    /// The user a server runs apps as. As root: `configured`, else
    /// [`DEFAULT_APP_USER`] (created if missing), else `nobody`. Not as root:
    /// `None` (the server's own user), and an error when `configured` names
    /// another user, since only root can switch users.
    pub fn for_server(configured: Option<&str>) -> Result<Option<AppUser>, RuntimeError> {
        let euid = geteuid();
        if !euid.is_root() {
            return match configured {
                None => Ok(None),
                Some(name) => {
                    let user = AppUser::resolve(name)?;
                    if user.uid == euid.as_raw() {
                        Ok(None)
                    } else {
                        Err(RuntimeError::CannotSwitchUser {
                            configured: name.to_string(),
                            server: server_user()
                                .map(|u| u.name)
                                .unwrap_or_else(|| format!("uid {euid}")),
                        })
                    }
                }
            };
        }
        if let Some(name) = configured {
            return AppUser::resolve(name).map(Some);
        }
        match AppUser::resolve(DEFAULT_APP_USER) {
            Err(RuntimeError::UnknownAppUser { .. }) => {}
            found => return found.map(Some),
        }
        match create_default_user() {
            Ok(()) => tracing::info!(user = DEFAULT_APP_USER, "created the app user"),
            Err(reason) => tracing::warn!(
                user = DEFAULT_APP_USER,
                fallback = FALLBACK_APP_USER,
                "cannot create the app user ({reason}); apps run as {FALLBACK_APP_USER}, \
                 which other services may share: create {DEFAULT_APP_USER} or pass --app-user"
            ),
        }
        // Looked up again even after a failure: another server may have
        // created it meanwhile (useradd then fails with "already exists").
        match AppUser::resolve(DEFAULT_APP_USER) {
            Err(RuntimeError::UnknownAppUser { .. }) => {}
            found => return found.map(Some),
        }
        AppUser::resolve(FALLBACK_APP_USER)
            .map(Some)
            .map_err(|e| RuntimeError::NoAppUser {
                reason: e.to_string(),
            })
    }

    /// Makes `command` run as this user and its group, with no
    /// supplementary groups (the standard library drops them when root
    /// switches to another uid).
    pub fn apply(&self, command: &mut tokio::process::Command) {
        command.uid(self.uid).gid(self.gid);
    }

    /// Whether the permission bits let this user execute (`bit` 0o1) or
    /// read (0o4) a file or folder, with its primary group only, as apps
    /// run without supplementary groups.
    fn allows(&self, meta: &std::fs::Metadata, bit: u32) -> bool {
        let mode = meta.mode();
        if meta.uid() == self.uid {
            mode & (bit << 6) != 0
        } else if meta.gid() == self.gid {
            mode & (bit << 3) != 0
        } else {
            mode & bit != 0
        }
    }

    /// The first folder above `path` (resolved) that this user cannot pass
    /// through, with its mode; `None` when every one lets it through.
    pub fn blocked_above(&self, path: &Path) -> std::io::Result<Option<(PathBuf, u32)>> {
        let real = std::fs::canonicalize(path)?;
        for folder in real.ancestors().skip(1) {
            let meta = std::fs::metadata(folder)?;
            if !self.allows(&meta, 0o1) {
                return Ok(Some((folder.to_path_buf(), meta.mode() & 0o7777)));
            }
        }
        Ok(None)
    }

    /// Whether this user may run the program at `path`: pass through every
    /// folder above it and execute it.
    pub fn can_run(&self, path: &Path) -> Result<(), RuntimeError> {
        let denied = |reason: String| RuntimeError::CannotRunStamper {
            user: self.name.clone(),
            path: path.display().to_string(),
            reason,
        };
        let real = std::fs::canonicalize(path).map_err(|e| denied(e.to_string()))?;
        if let Some((folder, mode)) = self
            .blocked_above(&real)
            .map_err(|e| denied(e.to_string()))?
        {
            return Err(denied(format!(
                "it cannot pass through {} (mode {mode:o})",
                folder.display()
            )));
        }
        let meta = std::fs::metadata(&real).map_err(|e| denied(e.to_string()))?;
        if !meta.is_file() || !self.allows(&meta, 0o1) {
            return Err(denied(format!(
                "it may not execute {} (mode {:o})",
                real.display(),
                meta.mode() & 0o7777
            )));
        }
        Ok(())
    }
}

/// The server's own user from the user database.
fn server_user() -> Option<User> {
    User::from_uid(geteuid()).ok().flatten()
}

fn create_default_user() -> Result<(), String> {
    let output = std::process::Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            DEFAULT_APP_USER,
        ])
        // Found in sbin whatever the server's own PATH.
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => "useradd is not installed".to_string(),
            _ => format!("cannot run useradd: {e}"),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "useradd {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The environment every target and build step starts from (see the module
/// header); `None` is the server's own user.
pub fn base_env(user: Option<&AppUser>) -> Vec<(String, String)> {
    let (name, home) = match user {
        Some(user) => (user.name.clone(), user.home.display().to_string()),
        None => match server_user() {
            Some(user) => (user.name, user.dir.display().to_string()),
            // A uid with no entry (some containers): still nothing inherited.
            None => (geteuid().to_string(), "/".to_string()),
        },
    };
    vec![
        ("PATH".to_string(), PATH.to_string()),
        ("HOME".to_string(), home),
        ("USER".to_string(), name.clone()),
        ("LOGNAME".to_string(), name),
        ("LANG".to_string(), "C.UTF-8".to_string()),
    ]
}

/// A command for an app's code: the base environment only, `user`'s
/// identity, its own process group (so it outlives the server and is
/// stopped whole). Callers add their own variables after. Refuses to run
/// as root: a root server must be given an app user.
pub fn app_command(
    program: impl AsRef<OsStr>,
    user: Option<&AppUser>,
) -> Result<tokio::process::Command, RuntimeError> {
    let mut command = tokio::process::Command::new(program);
    match user {
        Some(user) => user.apply(&mut command),
        None if geteuid().is_root() => return Err(RuntimeError::WouldRunAsRoot),
        None => {}
    }
    command
        .env_clear()
        .envs(base_env(user))
        .stdin(Stdio::null())
        .process_group(0);
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        if geteuid().is_root() {
            return true;
        }
        eprintln!("note: not root, so apps cannot switch users; skipped");
        false
    }

    #[test]
    fn root_is_never_an_app_user() {
        let err = AppUser::resolve("root").unwrap_err();
        assert!(matches!(err, RuntimeError::RootAppUser { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("never run as root"), "{message}");
        assert!(message.contains("--app-user"), "{message}");
        if root() {
            let err = AppUser::for_server(Some("root")).unwrap_err();
            assert!(err.to_string().contains("--app-user"), "{err}");
        }
    }

    #[test]
    fn an_unknown_app_user_is_named_with_a_way_out() {
        let err = AppUser::resolve("no-such-baton-user").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("no-such-baton-user"), "{message}");
        assert!(message.contains("useradd"), "{message}");
    }

    #[test]
    fn a_root_server_runs_apps_as_an_unprivileged_user() {
        if !root() {
            assert_eq!(AppUser::for_server(None).unwrap(), None);
            return;
        }
        // May create baton-app on this machine, as a server would.
        let user = AppUser::for_server(None)
            .unwrap()
            .expect("a root server always has an app user");
        assert_ne!(user.uid, 0);
        assert_ne!(user.gid, 0);
        assert!(
            user.name == DEFAULT_APP_USER || user.name == FALLBACK_APP_USER,
            "{user:?}"
        );
    }

    #[test]
    fn the_base_environment_is_fixed_and_names_the_user() {
        let nobody = AppUser {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            home: "/nonexistent".into(),
        };
        assert_eq!(
            base_env(Some(&nobody)),
            [
                ("PATH", PATH),
                ("HOME", "/nonexistent"),
                ("USER", "nobody"),
                ("LOGNAME", "nobody"),
                ("LANG", "C.UTF-8"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let names: Vec<String> = base_env(None).into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["PATH", "HOME", "USER", "LOGNAME", "LANG"]);
    }

    #[test]
    fn a_program_behind_a_private_folder_cannot_be_run_by_the_app_user() {
        use std::os::unix::fs::PermissionsExt;
        let nobody = AppUser {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            home: "/nonexistent".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("baton");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        let mode = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        mode(&program, 0o755);
        mode(dir.path(), 0o700);
        let err = nobody.can_run(&program).unwrap_err().to_string();
        assert!(err.contains("cannot pass through"), "{err}");
        assert!(err.contains("/usr/local/bin"), "{err}");
        mode(dir.path(), 0o711);
        nobody.can_run(&program).unwrap();
        mode(&program, 0o744);
        let err = nobody.can_run(&program).unwrap_err().to_string();
        assert!(err.contains("may not execute"), "{err}");
    }

    #[test]
    fn a_root_server_cannot_start_an_app_without_an_app_user() {
        if !root() {
            return;
        }
        let err = app_command("sh", None).unwrap_err();
        assert!(matches!(err, RuntimeError::WouldRunAsRoot), "{err}");
    }
}
