//! A release package for the process runtime: an app folder packed into a
//! deterministic tar archive whose SHA-256 is the release id. Same content,
//! same bytes, same id, whoever packs it and whenever. This crate reads and
//! writes files only; it knows nothing of servers or stores, and it never
//! changes an unpacked release once it is in place (it is made read-only).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Files named like this, in any folder of the app, list paths to leave out
/// of the package in `.gitignore` syntax, in addition to `.gitignore` itself.
pub const IGNORE_FILE: &str = ".batonignore";

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{dir}: cannot list the app folder: {reason}")]
    Walk { dir: String, reason: String },
    #[error("{path}: is neither a file, a folder nor a symbolic link; remove it or list it in .batonignore")]
    Unsupported { path: String },
    #[error("the release archive is damaged: {0}")]
    Damaged(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A packed release: the archive bytes and their content hash.
pub struct Package {
    pub id: String,
    pub archive: Vec<u8>,
    pub files: usize,
}

/// The release id of archive bytes: lower-case hex SHA-256.
pub fn release_id(archive: &[u8]) -> String {
    format!("{:x}", Sha256::digest(archive))
}

/// The short form of a release id shown to people, like a short Git hash.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Packs `dir`, honouring `.gitignore` and `.batonignore` files and leaving
/// out `.git`. Entries are sorted and stripped of owners and times so the
/// archive depends on content and executable bits only.
pub fn pack(dir: &Path) -> Result<Package, PackageError> {
    let mut paths = Vec::new();
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(true)
        .require_git(false)
        .parents(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .filter_entry(|entry| entry.file_name() != ".git")
        .build();
    for entry in walker {
        let entry = entry.map_err(|e| PackageError::Walk {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        if entry.depth() == 0 {
            continue;
        }
        paths.push(entry.into_path());
    }
    paths.sort();

    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    let mut files = 0;
    for path in &paths {
        let relative = path.strip_prefix(dir).expect("walked paths are below dir");
        let meta = fs::symlink_metadata(path).map_err(io_at(path))?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if meta.file_type().is_symlink() {
            let target = fs::read_link(path).map_err(io_at(path))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder
                .append_link(&mut header, relative, &target)
                .map_err(io_at(path))?;
        } else if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, relative, io::empty())
                .map_err(io_at(path))?;
        } else if meta.is_file() {
            let executable = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            let file = fs::File::open(path).map_err(io_at(path))?;
            builder
                .append_data(&mut header, relative, file.take(meta.len()))
                .map_err(io_at(path))?;
            files += 1;
        } else {
            return Err(PackageError::Unsupported {
                path: path.display().to_string(),
            });
        }
    }
    let archive = builder.into_inner().map_err(io_at(dir))?;
    Ok(Package {
        id: release_id(&archive),
        archive,
        files,
    })
}

/// Unpacks an archive into `root/<id>`, read-only, and returns that folder.
/// The folder appears whole or not at all: it is unpacked beside it and
/// renamed into place. An existing folder for the id is kept as it is.
pub fn unpack(archive: &[u8], root: &Path, id: &str) -> Result<PathBuf, PackageError> {
    let dest = root.join(id);
    if dest.is_dir() {
        return Ok(dest);
    }
    fs::create_dir_all(root).map_err(io_at(root))?;
    let staging = root.join(format!(".unpacking-{id}-{}", std::process::id()));
    if staging.exists() {
        make_writable(&staging)?;
        fs::remove_dir_all(&staging).map_err(io_at(&staging))?;
    }
    fs::create_dir(&staging).map_err(io_at(&staging))?;
    if let Err(e) = unpack_into(archive, &staging) {
        let _ = make_writable(&staging)
            .and_then(|()| fs::remove_dir_all(&staging).map_err(io_at(&staging)));
        return Err(e);
    }
    make_read_only(&staging)?;
    match fs::rename(&staging, &dest) {
        Ok(()) => Ok(dest),
        // Another unpack of the same id won the race: same content, keep it.
        Err(_) if dest.is_dir() => {
            make_writable(&staging)?;
            fs::remove_dir_all(&staging).map_err(io_at(&staging))?;
            Ok(dest)
        }
        Err(e) => Err(io_at(&dest)(e)),
    }
}

fn unpack_into(archive: &[u8], staging: &Path) -> Result<(), PackageError> {
    let mut tar = tar::Archive::new(archive);
    tar.set_preserve_permissions(true);
    tar.set_overwrite(false);
    for entry in tar
        .entries()
        .map_err(|e| PackageError::Damaged(e.to_string()))?
    {
        let mut entry = entry.map_err(|e| PackageError::Damaged(e.to_string()))?;
        // unpack_in refuses paths that would land outside the folder.
        let inside = entry
            .unpack_in(staging)
            .map_err(|e| PackageError::Damaged(e.to_string()))?;
        if !inside {
            return Err(PackageError::Damaged(format!(
                "entry {:?} points outside the release folder",
                entry
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// The text of the file `name` at the root of an archive, if it holds one.
pub fn read_text(archive: &[u8], name: &str) -> Result<Option<String>, PackageError> {
    let damaged = |e: io::Error| PackageError::Damaged(e.to_string());
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let path = entry.path().map_err(damaged)?;
        if path == Path::new(name) || path == Path::new(".").join(name) {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| PackageError::Damaged(format!("{name} is not UTF-8 text: {e}")))?;
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// Deletes an unpacked release folder (used when releases are pruned).
pub fn remove(root: &Path, id: &str) -> Result<(), PackageError> {
    let dir = root.join(id);
    if !dir.exists() {
        return Ok(());
    }
    make_writable(&dir)?;
    fs::remove_dir_all(&dir).map_err(io_at(&dir))
}

fn walk_dirs_last(dir: &Path, f: &mut dyn FnMut(&Path, bool) -> io::Result<()>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk_dirs_last(&entry.path(), f)?;
            f(&entry.path(), true)?;
        } else if kind.is_file() {
            f(&entry.path(), false)?;
        }
    }
    Ok(())
}

fn make_read_only(dir: &Path) -> Result<(), PackageError> {
    walk_dirs_last(dir, &mut |path, _| {
        let mut perms = fs::metadata(path)?.permissions();
        perms.set_mode(perms.mode() & !0o222);
        fs::set_permissions(path, perms)
    })
    .map_err(io_at(dir))?;
    let mut perms = fs::metadata(dir).map_err(io_at(dir))?.permissions();
    perms.set_mode(perms.mode() & !0o222);
    fs::set_permissions(dir, perms).map_err(io_at(dir))
}

fn make_writable(dir: &Path) -> Result<(), PackageError> {
    let mut perms = fs::metadata(dir).map_err(io_at(dir))?.permissions();
    perms.set_mode(perms.mode() | 0o700);
    fs::set_permissions(dir, perms).map_err(io_at(dir))?;
    // Parents first, so their entries can be listed and changed.
    fn inner(dir: &Path) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                let mut perms = fs::metadata(&path)?.permissions();
                perms.set_mode(perms.mode() | 0o700);
                fs::set_permissions(&path, perms)?;
                inner(&path)?;
            }
        }
        Ok(())
    }
    inner(dir).map_err(io_at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn app(dir: &Path) {
        fs::write(dir.join("baton.toml"), "name = \"a\"\n").unwrap();
        fs::create_dir(dir.join("src")).unwrap();
        fs::write(dir.join("src/app.py"), "print('hi')\n").unwrap();
        fs::write(dir.join(".gitignore"), "*.log\nbuild/\n").unwrap();
        fs::write(dir.join("debug.log"), "noise").unwrap();
        fs::create_dir(dir.join("build")).unwrap();
        fs::write(dir.join("build/out"), "artefact").unwrap();
        fs::create_dir(dir.join(".git")).unwrap();
        fs::write(dir.join(".git/HEAD"), "ref").unwrap();
    }

    fn names(archive: &[u8]) -> Vec<String> {
        let mut tar = tar::Archive::new(archive);
        tar.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn same_content_gives_same_id_whatever_the_times() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        app(a.path());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        app(b.path());
        let pa = pack(a.path()).unwrap();
        let pb = pack(b.path()).unwrap();
        assert_eq!(pa.id, pb.id);
        assert_eq!(pa.id, release_id(&pa.archive));
        assert_eq!(pa.id.len(), 64);
    }

    #[test]
    fn a_root_file_is_read_from_the_archive() {
        let a = tempfile::tempdir().unwrap();
        app(a.path());
        let archive = pack(a.path()).unwrap().archive;
        assert_eq!(
            read_text(&archive, "baton.toml").unwrap().as_deref(),
            Some("name = \"a\"\n")
        );
        assert_eq!(read_text(&archive, "flags.toml").unwrap(), None);
        assert_eq!(
            read_text(&archive, "app.py").unwrap(),
            None,
            "only at the root"
        );
    }

    #[test]
    fn changed_content_or_exec_bit_changes_the_id() {
        let a = tempfile::tempdir().unwrap();
        app(a.path());
        let first = pack(a.path()).unwrap().id;
        fs::write(a.path().join("src/app.py"), "print('bye')\n").unwrap();
        let second = pack(a.path()).unwrap().id;
        assert_ne!(first, second);
        fs::set_permissions(
            a.path().join("src/app.py"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_ne!(second, pack(a.path()).unwrap().id);
    }

    #[test]
    fn gitignore_batonignore_and_git_folder_are_left_out() {
        let a = tempfile::tempdir().unwrap();
        app(a.path());
        fs::write(a.path().join(IGNORE_FILE), "secret.txt\n").unwrap();
        fs::write(a.path().join("secret.txt"), "pw").unwrap();
        let p = pack(a.path()).unwrap();
        let names = names(&p.archive);
        assert!(names.contains(&"src/app.py".to_string()), "{names:?}");
        assert!(names.contains(&"baton.toml".to_string()));
        for absent in ["debug.log", "build/out", ".git/HEAD", "secret.txt"] {
            assert!(
                !names.iter().any(|n| n == absent),
                "{absent} packed: {names:?}"
            );
        }
        let ignored_ids = p.id;
        fs::write(a.path().join("other.log"), "more noise").unwrap();
        assert_eq!(ignored_ids, pack(a.path()).unwrap().id);
    }

    #[test]
    fn unpacked_release_is_read_only_and_complete() {
        let a = tempfile::tempdir().unwrap();
        app(a.path());
        symlink("src/app.py", a.path().join("link.py")).unwrap();
        let p = pack(a.path()).unwrap();
        let root = tempfile::tempdir().unwrap();
        let dir = unpack(&p.archive, root.path(), &p.id).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("src/app.py")).unwrap(),
            "print('hi')\n"
        );
        assert_eq!(
            fs::read_to_string(dir.join("link.py")).unwrap(),
            "print('hi')\n"
        );
        let mode = fs::metadata(dir.join("src/app.py"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o222, 0, "file is writable: {mode:o}");
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o222, 0, "folder is writable: {mode:o}");
        // A second unpack keeps the first one.
        assert_eq!(unpack(&p.archive, root.path(), &p.id).unwrap(), dir);
        remove(root.path(), &p.id).unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn truncated_archive_is_refused_and_leaves_no_release_folder() {
        let a = tempfile::tempdir().unwrap();
        app(a.path());
        fs::write(a.path().join("big.bin"), vec![7u8; 20_000]).unwrap();
        let p = pack(a.path()).unwrap();
        let root = tempfile::tempdir().unwrap();
        let cut = &p.archive[..p.archive.len() / 2];
        let err = unpack(cut, root.path(), &p.id).unwrap_err();
        assert!(matches!(err, PackageError::Damaged(_)), "{err}");
        assert!(!root.path().join(&p.id).exists());
        assert_eq!(
            fs::read_dir(root.path()).unwrap().count(),
            0,
            "staging folder left behind"
        );
    }
}
