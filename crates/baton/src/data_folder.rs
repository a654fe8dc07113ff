//! The data folder's permissions. It holds the store (password hashes,
//! session CSRF values), the session key, the admin token, uploads and the
//! apps' output: only the server's user may read it. The one exception is
//! the way down to the unpacked releases (and build workspaces), which the
//! apps' user must reach: when apps run as another user, the folder is
//! 0710 with that user's group, so the group may pass through but not list,
//! and everything else inside stays 0600/0700.
//!
//! Checked at every start: anything looser is tightened and said so, as
//! PostgreSQL and OpenSSH insist on private keys and data.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Folders the apps' user passes through to reach what is theirs.
const PASSED_THROUGH: &[&str] = &["releases", "builds", "bin"];

/// Creates the data folder if needed and makes its permissions private;
/// `apps_group` is the group of the apps' user when it is not the server's.
/// Returns what had to be tightened, for the log.
pub fn secure(data: &Path, apps_group: Option<u32>) -> Result<Vec<String>> {
    fs::create_dir_all(data)
        .with_context(|| format!("cannot create the data folder {}", data.display()))?;
    let mut tightened = Vec::new();
    let folder_mode = if apps_group.is_some() { 0o710 } else { 0o700 };
    set(data, folder_mode, apps_group, &mut tightened)?;
    for name in PASSED_THROUGH {
        let dir = data.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        set(&dir, folder_mode, apps_group, &mut tightened)?;
    }
    for entry in fs::read_dir(data).with_context(|| format!("cannot list {}", data.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if PASSED_THROUGH.iter().any(|n| name == *n) {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            set(&entry.path(), 0o700, None, &mut tightened)?;
            // Logs and uploads: one level of files.
            for file in fs::read_dir(entry.path())?.flatten() {
                if file.file_type().is_ok_and(|k| k.is_file()) {
                    set(&file.path(), 0o600, None, &mut tightened)?;
                }
            }
        } else if kind.is_file() {
            set(&entry.path(), 0o600, None, &mut tightened)?;
        }
    }
    // Build logs sit beside the workspaces, in a folder apps pass through.
    for file in fs::read_dir(data.join("builds"))?.flatten() {
        if file.file_type().is_ok_and(|k| k.is_file()) {
            set(&file.path(), 0o600, None, &mut tightened)?;
        }
    }
    Ok(tightened)
}

/// Apps run as `user` must pass through every folder above the data folder
/// to reach their releases; a private home on the way (root's `/root`, a
/// user's 0700 home) would make every start fail, so say so at once.
pub fn reachable_by(data: &Path, user: &baton_runtime::AppUser) -> Result<()> {
    let blocked = user
        .blocked_above(data)
        .with_context(|| format!("cannot read the folders above {}", data.display()))?;
    if let Some((folder, mode)) = blocked {
        anyhow::bail!(
            "apps run as {} but cannot pass through {} (mode {mode:o}) to reach their releases in {}; choose a data folder outside it (--data /var/lib/baton) or let others pass (chmod o+x {})",
            user.name,
            folder.display(),
            data.display(),
            folder.display()
        );
    }
    Ok(())
}

/// `DATA/bin/baton`: this very executable, where the apps' user can run it
/// (a hard link when the file system allows, else a copy), replaced at
/// every start so it is always the running version.
pub fn executable_for_apps(data: &Path, exe: &Path) -> Result<std::path::PathBuf> {
    let dir = data.join("bin");
    fs::create_dir_all(&dir)?;
    let path = dir.join("baton");
    let staged = dir.join(".baton.new");
    let _ = fs::remove_file(&staged);
    if fs::hard_link(exe, &staged).is_err() {
        fs::copy(exe, &staged)
            .with_context(|| format!("cannot copy {} into {}", exe.display(), dir.display()))?;
    }
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o755))?;
    fs::rename(&staged, &path)?;
    Ok(path)
}

/// Sets `path` to `mode` (and `group`), noting it when it was looser.
fn set(path: &Path, mode: u32, group: Option<u32>, tightened: &mut Vec<String>) -> Result<()> {
    let meta =
        fs::symlink_metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let old = meta.permissions().mode() & 0o7777;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("cannot give {} to group {gid}", path.display()))?;
    }
    if old != mode {
        if old & !mode != 0 {
            tightened.push(format!("{} was {old:o}, now {mode:o}", path.display()));
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
    }
    Ok(())
}

/// Writes `value` as JSON to `path` whole or not at all: beside it, synced,
/// then renamed into place, so a crash never leaves half a file.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let partial = path.with_extension("json.partial");
    let written = (|| -> std::io::Result<()> {
        // Owner-only whatever the umask: some of these hold keys.
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)?
        };
        std::io::Write::write_all(
            &mut file,
            &serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?,
        )?;
        file.sync_all()?;
        fs::rename(&partial, path)
    })();
    written.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_loose_data_folder_is_made_private_and_said_so() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        fs::create_dir_all(data.join("logs")).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(data.join("baton.db"), "x").unwrap();
        fs::set_permissions(data.join("baton.db"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(data.join("logs/1.log"), "x").unwrap();
        fs::set_permissions(data.join("logs/1.log"), fs::Permissions::from_mode(0o644)).unwrap();
        let tightened = secure(&data, None).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("baton.db")), 0o600);
        assert_eq!(mode(&data.join("logs/1.log")), 0o600);
        assert_eq!(mode(&data.join("releases")), 0o700);
        assert!(
            tightened.iter().any(|t| t.contains("baton.db was 644")),
            "{tightened:?}"
        );
        // Already private: nothing to say.
        assert!(secure(&data, None).unwrap().is_empty());
    }

    #[test]
    fn apps_of_another_user_may_pass_through_to_releases_only() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let gid = std::os::unix::fs::MetadataExt::gid(&fs::metadata(root.path()).unwrap());
        secure(&data, Some(gid)).unwrap();
        assert_eq!(mode(&data), 0o710);
        assert_eq!(mode(&data.join("releases")), 0o710);
        fs::create_dir_all(data.join("logs")).unwrap();
        secure(&data, Some(gid)).unwrap();
        assert_eq!(mode(&data.join("logs")), 0o700);
    }
}
