//! Releases with a build command: the archive unpacked into a folder its
//! build may write ([`unpack_for_build`]), then, once built, copied whole
//! into a folder made exactly as [`crate::unpack`] makes one and renamed
//! into place ([`seal_built`]). The release id names the archive; the
//! sealed folder is what was built from it, once.
//!
//! The built folder belonged to the app user while its build ran, and
//! something the build started may still be changing it, so nothing in it
//! is trusted: it is read through file descriptors, one folder at a time,
//! never following a symbolic link, within [`Limits`]. Only regular files,
//! folders and links that stay inside the folder are kept; sockets, FIFOs
//! and devices are dropped; hard links become copies; every mode is set
//! here (0555/0444, never setuid, setgid or writable) and every entry
//! belongs to the server's user, so the app user cannot make its release
//! writable again.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::{file_mode, io_at, make_writable, seal, unpack_into, Limits, PackageError, Unpacked};
use crate::{GIB, KIB};

/// Links followed at most while checking where one leads (Linux's own
/// limit); past it the link resolves nowhere, as for the kernel.
const MAX_HOPS: usize = 40;

impl Limits {
    /// For a folder once its build has run: dependencies are many small
    /// files, some deep in folders.
    pub fn built() -> Limits {
        Limits {
            max_bytes: 4 * GIB,
            max_entries: 200_000,
            max_depth: 64,
            max_path_len: 4 * KIB as usize,
        }
    }
}

/// Unpacks an archive into `dir` (replacing whatever is there) for its
/// build: folders 0700 and files 0600 (0700 if executable), all given to
/// `owner` (uid, gid) when it is not the server's own user. Refused
/// archives leave nothing behind, as for [`crate::unpack`].
pub fn unpack_for_build(
    archive: impl Read,
    dir: &Path,
    owner: Option<(u32, u32)>,
    limits: &Limits,
) -> Result<Unpacked, PackageError> {
    remove_built(dir)?;
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(io_at(dir))?;
    let unpacked = unpack_into(archive, dir, limits).and_then(|(files, bytes)| {
        // Nobody else can reach the folder yet: paths are safe to follow.
        give(dir, owner).map_err(io_at(dir))?;
        Ok(Unpacked {
            dir: dir.to_path_buf(),
            files,
            bytes,
        })
    });
    if unpacked.is_err() {
        let _ = remove_built(dir);
    }
    unpacked
}

/// Makes every entry under `dir` (and `dir`) writable by its owner and
/// gives it to `owner`.
fn give(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    fn walk(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&path, owner)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
            } else if kind.is_file() {
                let mode = fs::symlink_metadata(&path)?.permissions().mode();
                let mode = if mode & 0o111 != 0 { 0o700 } else { 0o600 };
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            }
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
            }
        }
        Ok(())
    }
    walk(dir, owner)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Copies the built folder `built` into `root/<id>`, read-only as
/// [`crate::unpack`] leaves a release, then removes `built` (which may be
/// `root/<id>` itself). The release appears whole: it is copied beside its
/// place and renamed. Refused (and nothing left behind but `built`) when
/// the folder goes past `limits` or holds a link leading outside it.
pub fn seal_built(
    built: &Path,
    root: &Path,
    id: &str,
    limits: &Limits,
) -> Result<Unpacked, PackageError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let staging = root.join(format!(
        ".sealing-{id}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io_at(&staging))?;
    let sealed = copy_and_seal(built, &staging, limits);
    let (files, bytes) = match sealed {
        Ok(counts) => counts,
        Err(e) => {
            let _ = remove_built(&staging);
            return Err(e);
        }
    };
    let dest = root.join(id);
    let placed = remove_built(built)
        .and_then(|()| remove_built(&dest))
        .and_then(|()| fs::rename(&staging, &dest).map_err(io_at(&dest)));
    if let Err(e) = placed {
        let _ = remove_built(&staging);
        return Err(e);
    }
    Ok(Unpacked {
        dir: dest,
        files,
        bytes,
    })
}

fn copy_and_seal(
    built: &Path,
    staging: &Path,
    limits: &Limits,
) -> Result<(usize, u64), PackageError> {
    let top = rustix::fs::open(
        built,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_at(built)(e.into()))?;
    let mut tally = Tally::default();
    copy_tree(top, staging, Path::new(""), &mut tally, limits)?;
    // Checked once everything is in place: a link may lead through others.
    for (link, target) in &tally.links {
        if escapes(staging, link).map_err(io_at(&staging.join(link)))? {
            return Err(PackageError::LinkEscapes {
                link: link.display().to_string(),
                target: target.display().to_string(),
            });
        }
    }
    seal(staging)?;
    Ok((tally.files, tally.bytes))
}

#[derive(Default)]
struct Tally {
    entries: usize,
    files: usize,
    bytes: u64,
    /// Every link copied, by its path in the folder, with its target.
    links: Vec<(PathBuf, PathBuf)>,
}

/// Copies the folder open as `dir` (at `rel` in the built folder) into
/// `to`, an owner-only folder only the server's user can reach. Each entry
/// is looked at without following links and opened with `O_NOFOLLOW`
/// relative to its folder, so an entry replaced meanwhile by a link is
/// never followed, only refused.
fn copy_tree(
    dir: OwnedFd,
    to: &Path,
    rel: &Path,
    tally: &mut Tally,
    limits: &Limits,
) -> Result<(), PackageError> {
    let changed = |path: &Path| {
        let shown = path.display().to_string();
        move |e: rustix::io::Errno| PackageError::Io {
            path: shown,
            source: io::Error::from(e),
        }
    };
    let listing = rustix::fs::Dir::read_from(&dir).map_err(changed(rel))?;
    let mut names: Vec<OsString> = Vec::new();
    for entry in listing {
        let entry = entry.map_err(changed(rel))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort();
    for name in names {
        let path = rel.join(&name);
        tally.entries += 1;
        if tally.entries > limits.max_entries {
            return Err(PackageError::TooLarge {
                what: format!("the built release's entry {}", path.display()),
                limit: format!("{} entries", limits.max_entries),
            });
        }
        let len = path.as_os_str().len();
        if len > limits.max_path_len {
            return Err(PackageError::TooLarge {
                what: format!("{} has a {len}-byte path", path.display()),
                limit: format!("{} bytes per path", limits.max_path_len),
            });
        }
        let depth = path.components().count();
        if depth > limits.max_depth {
            return Err(PackageError::TooLarge {
                what: format!("{} is {depth} components deep", path.display()),
                limit: format!("{} components per path", limits.max_depth),
            });
        }
        let dst = to.join(&name);
        let stat = rustix::fs::statat(&dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(changed(&path))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                let child = rustix::fs::openat(
                    &dir,
                    name.as_os_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(changed(&path))?;
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dst)
                    .map_err(io_at(&dst))?;
                copy_tree(child, &dst, &path, tally, limits)?;
            }
            FileType::RegularFile => {
                let fd = rustix::fs::openat(
                    &dir,
                    name.as_os_str(),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                    Mode::empty(),
                )
                .map_err(changed(&path))?;
                let opened = rustix::fs::fstat(fd.as_fd()).map_err(changed(&path))?;
                if FileType::from_raw_mode(opened.st_mode) != FileType::RegularFile {
                    return Err(PackageError::Io {
                        path: path.display().to_string(),
                        source: io::Error::other("changed while the release was sealed"),
                    });
                }
                let room = limits.max_bytes - tally.bytes;
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&dst)
                    .map_err(io_at(&dst))?;
                let copied = io::copy(&mut fs::File::from(fd).take(room + 1), &mut out)
                    .map_err(io_at(&path))?;
                if copied > room {
                    return Err(PackageError::TooLarge {
                        what: format!("the built release, at {}", path.display()),
                        limit: format!("{} of files", crate::human(limits.max_bytes)),
                    });
                }
                tally.bytes += copied;
                tally.files += 1;
                let executable = opened.st_mode & 0o111 != 0;
                fs::set_permissions(&dst, fs::Permissions::from_mode(file_mode(executable)))
                    .map_err(io_at(&dst))?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(&dir, name.as_os_str(), Vec::new())
                    .map_err(changed(&path))?;
                let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                if target.as_os_str().len() > limits.max_path_len {
                    return Err(PackageError::TooLarge {
                        what: format!(
                            "symbolic link {} has a {}-byte target",
                            path.display(),
                            target.as_os_str().len()
                        ),
                        limit: format!("{} bytes per path", limits.max_path_len),
                    });
                }
                std::os::unix::fs::symlink(&target, &dst).map_err(io_at(&dst))?;
                tally.links.push((path, target));
            }
            // Sockets, FIFOs and devices a build left have no place in a
            // release.
            _ => {}
        }
    }
    Ok(())
}

/// Whether following the link at `link` (a path inside `root`) leads
/// outside `root`, resolved as the kernel would: links met on the way are
/// followed, an absolute target or a `..` above the root escapes. A target
/// that does not exist, or a loop, leads nowhere: it does not escape.
/// Conservative where the kernel would stop first (`file/..`).
fn escapes(root: &Path, link: &Path) -> io::Result<bool> {
    enum Part {
        Root,
        Up,
        Name(OsString),
    }
    fn parts(path: &Path) -> Vec<Part> {
        path.components()
            .filter_map(|c| match c {
                Component::RootDir | Component::Prefix(_) => Some(Part::Root),
                Component::ParentDir => Some(Part::Up),
                Component::Normal(name) => Some(Part::Name(name.to_os_string())),
                Component::CurDir => None,
            })
            .collect()
    }
    let mut at: Vec<OsString> = parts(link.parent().unwrap_or(Path::new("")))
        .into_iter()
        .filter_map(|p| match p {
            Part::Name(name) => Some(name),
            _ => None,
        })
        .collect();
    let mut todo: VecDeque<Part> = parts(&fs::read_link(root.join(link))?).into();
    let mut hops = 0;
    while let Some(part) = todo.pop_front() {
        match part {
            Part::Root => return Ok(true),
            Part::Up => {
                if at.pop().is_none() {
                    return Ok(true);
                }
            }
            Part::Name(name) => {
                at.push(name);
                let here: PathBuf = root.join(at.iter().collect::<PathBuf>());
                match fs::symlink_metadata(&here) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        hops += 1;
                        if hops > MAX_HOPS {
                            return Ok(false);
                        }
                        at.pop();
                        for part in parts(&fs::read_link(&here)?).into_iter().rev() {
                            todo.push_front(part);
                        }
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(false)
}

/// Removes a folder a build wrote (or a sealed one), if it exists. The
/// standard library's removal never follows a link. A server that is not
/// root built as itself and may meet folders the build made read-only:
/// those are opened up first (nobody else could have made them).
pub fn remove_built(dir: &Path) -> Result<(), PackageError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if rustix::process::geteuid().is_root() => Err(io_at(dir)(e)),
        Err(_) => {
            make_writable(dir)?;
            fs::remove_dir_all(dir).map_err(io_at(dir))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn archive_of(files: &[(&str, &str, u32)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content, mode) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(*mode);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            builder
                .append_data(&mut header, path, content.as_bytes())
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// A built folder as a build leaves it: the archive's files, then what
    /// the build wrote.
    fn built(root: &Path) -> PathBuf {
        let dir = root.join("abc");
        let archive = archive_of(&[
            ("app.py", "print(1)\n", 0o644),
            ("bin/run", "#!/bin/sh\n", 0o755),
        ]);
        unpack_for_build(archive.as_slice(), &dir, None, &Limits::built()).unwrap();
        dir
    }

    #[test]
    fn a_folder_unpacked_for_its_build_is_writable_by_its_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = built(tmp.path());
        assert_eq!(mode_of(&dir), 0o700);
        assert_eq!(mode_of(&dir.join("app.py")), 0o600);
        assert_eq!(mode_of(&dir.join("bin/run")), 0o700);
        assert_eq!(mode_of(&dir.join("bin")), 0o700);
        fs::write(dir.join(".deps"), "written by the build").unwrap();
    }

    #[test]
    fn a_sealed_build_is_read_only_whole_and_keeps_what_the_build_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = built(tmp.path());
        fs::create_dir_all(dir.join(".deps/six")).unwrap();
        fs::write(dir.join(".deps/six/__init__.py"), "x = 1\n").unwrap();
        fs::set_permissions(
            dir.join(".deps/six/__init__.py"),
            fs::Permissions::from_mode(0o6777),
        )
        .unwrap();
        fs::hard_link(dir.join("app.py"), dir.join("copy.py")).unwrap();
        symlink("six/__init__.py", dir.join(".deps/link.py")).unwrap();
        let fifo = dir.join("queue");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let sealed = seal_built(&dir, tmp.path(), "abc", &Limits::built()).unwrap();
        assert_eq!(sealed.dir, dir);
        assert_eq!(sealed.files, 4);
        assert_eq!(mode_of(&dir), 0o555);
        assert_eq!(mode_of(&dir.join(".deps/six")), 0o555);
        assert_eq!(mode_of(&dir.join(".deps/six/__init__.py")), 0o555);
        assert_eq!(mode_of(&dir.join("app.py")), 0o444);
        assert_eq!(mode_of(&dir.join("bin/run")), 0o555);
        assert_eq!(
            fs::read_to_string(dir.join(".deps/link.py")).unwrap(),
            "x = 1\n"
        );
        // A hard link became a file of its own; the FIFO is gone.
        assert_eq!(fs::metadata(dir.join("copy.py")).unwrap().nlink(), 1);
        assert!(fs::symlink_metadata(dir.join("queue")).is_err());
        // Nothing of the sealing is left beside it.
        let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn the_build_user_owns_its_folder_but_not_the_sealed_release() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("note: not root, so folders cannot be given away; skipped");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("abc");
        let archive = archive_of(&[("app.py", "print(1)\n", 0o644)]);
        unpack_for_build(
            archive.as_slice(),
            &dir,
            Some((65534, 65534)),
            &Limits::built(),
        )
        .unwrap();
        for path in [&dir, &dir.join("app.py")] {
            let meta = fs::metadata(path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{path:?}");
        }
        seal_built(&dir, tmp.path(), "abc", &Limits::built()).unwrap();
        for path in [&dir, &dir.join("app.py")] {
            assert_eq!(fs::metadata(path).unwrap().uid(), 0, "{path:?}");
        }
    }

    #[test]
    fn a_link_leading_outside_the_release_is_refused_even_through_other_links() {
        for (name, target, extra) in [
            ("abs", "/etc/passwd", None),
            ("up", "../../etc", None),
            // Each link alone stays inside; `s/..` climbs out through `s`.
            ("through", "s/..", Some(("s", "a/.."))),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = built(tmp.path());
            if let Some((link, to)) = extra {
                fs::create_dir(dir.join("a")).unwrap();
                symlink(to, dir.join(link)).unwrap();
            }
            // `through` needs the link above the root: put it one level down.
            let at = if extra.is_some() {
                dir.join(name)
            } else {
                dir.join("bin").join(name)
            };
            symlink(target, &at).unwrap();
            let err = seal_built(&dir, tmp.path(), "abc", &Limits::built()).unwrap_err();
            assert!(
                matches!(err, PackageError::LinkEscapes { .. }),
                "{name}: {err}"
            );
            assert!(err.to_string().contains(target), "{err}");
            // The built folder stays for the caller to remove; no sealed one.
            assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
        }
    }

    #[test]
    fn a_build_past_the_limits_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = built(tmp.path());
        fs::write(dir.join("big"), vec![0u8; 4096]).unwrap();
        let limits = Limits {
            max_bytes: 1024,
            ..Limits::built()
        };
        let err = seal_built(&dir, tmp.path(), "abc", &limits).unwrap_err();
        assert!(matches!(err, PackageError::TooLarge { .. }), "{err}");
        let limits = Limits {
            max_entries: 2,
            ..Limits::built()
        };
        let err = seal_built(&dir, tmp.path(), "abc", &limits).unwrap_err();
        assert!(err.to_string().contains("entries"), "{err}");
    }
}
