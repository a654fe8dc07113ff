//! A release package for the process runtime: an app folder packed into a
//! deterministic tar archive whose SHA-256 is the release id. Same content,
//! same bytes, same id, whoever packs it and whenever. This crate reads and
//! writes files only; it knows nothing of servers or stores. Any API user can
//! upload an archive, so unpacking trusts nothing in it: it stays within
//! [`Limits`] (bytes, entries, path depth and length), refuses sparse files and
//! hard links before writing them, drops device files and FIFOs, and sets every
//! mode itself (0555 or 0444, never setuid, setgid, sticky or writable). It
//! never changes an unpacked release once it is in place.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

mod built;
pub use built::{remove_built, seal_built, unpack_for_build};

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
    /// The archive would unpack past one of the [`Limits`].
    #[error("{what}: over the limit of {limit}; list large or generated files and folders in .batonignore to leave them out of the release")]
    TooLarge { what: String, limit: String },
    /// A sparse entry declares a size it does not carry (a 10 KB archive can
    /// declare a 50 GB file), so none is accepted.
    #[error("{entry}: is a sparse file, which a release may not hold; pack the app with `baton deploy`, which stores every file whole")]
    Sparse { entry: String },
    #[error("{entry}: is a hard link to {target}, which a release may not hold; pack the app with `baton deploy`, which stores each file as a copy")]
    HardLink { entry: String, target: String },
    #[error("{name}: is {size} bytes, over the limit of {limit} bytes for a settings file at the release root; make it smaller")]
    TextTooLarge { name: String, size: u64, limit: u64 },
    #[error("{name} is not a regular file in the release (a link or something else); Baton reads it only as a regular file: replace it with the file itself")]
    NotAFile { name: String },
    /// A build left a symbolic link that leads outside the release.
    #[error("{link}: is a symbolic link to {target}, outside the release folder; a release holds what it runs: make the link relative and inside the folder, or copy what it points to (for a Python virtualenv, `python3 -m venv --copies`)")]
    LinkEscapes { link: String, target: String },
}

/// How far one archive may go when unpacked. Archives come from any API
/// user, so these bound the disk space and inodes one upload can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of all files, as declared by the archive.
    pub max_bytes: u64,
    /// Entries of any kind: files, folders, links and dropped entries.
    pub max_entries: usize,
    /// Components of one path (`src/app.py` has 2).
    pub max_depth: usize,
    /// Bytes of one path or symbolic link target.
    pub max_path_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 2 * GIB,
            max_entries: 20_000,
            max_depth: 32,
            max_path_len: 1024,
        }
    }
}

/// An unpacked release: its folder and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub dir: PathBuf,
    /// Regular files (folders and symbolic links are not counted).
    pub files: usize,
    /// Bytes of those files.
    pub bytes: u64,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// The largest file [`read_text`] reads: settings files are a few KiB, and
/// the text is held in memory.
const MAX_TEXT: u64 = MIB;

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

/// Unpacks an archive into `root/<id>`, read-only, and returns that folder
/// with what it holds. The folder appears whole or not at all: it is unpacked
/// beside it and renamed into place, and a refused archive leaves nothing
/// behind. An existing folder for the id is kept as it is.
///
/// Only regular files, folders and symbolic links are unpacked; device files,
/// FIFOs and unknown entries are dropped. Sparse files, hard links, paths
/// leading outside the folder and archives past `limits` are refused, each
/// before anything is written for it. Folders and executable files get mode
/// 0555, other files 0444, whatever the archive and the umask say.
pub fn unpack(
    archive: impl Read,
    root: &Path,
    id: &str,
    limits: &Limits,
) -> Result<Unpacked, PackageError> {
    let dest = root.join(id);
    if dest.is_dir() {
        return tally(dest);
    }
    fs::create_dir_all(root).map_err(io_at(root))?;
    // Unique per call, not only per process: two uploads of the same archive
    // may be unpacked at once by two threads.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let staging = root.join(format!(
        ".unpacking-{id}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    if staging.exists() {
        make_writable(&staging)?;
        fs::remove_dir_all(&staging).map_err(io_at(&staging))?;
    }
    // Private until sealed, so no other user sees a half-written release.
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io_at(&staging))?;
    let (files, bytes) = match unpack_into(archive, &staging, limits).and_then(|counts| {
        seal(&staging)?;
        Ok(counts)
    }) {
        Ok(counts) => counts,
        Err(e) => {
            let _ = make_writable(&staging)
                .and_then(|()| fs::remove_dir_all(&staging).map_err(io_at(&staging)));
            return Err(e);
        }
    };
    match fs::rename(&staging, &dest) {
        Ok(()) => Ok(Unpacked {
            dir: dest,
            files,
            bytes,
        }),
        // Another unpack of the same id won the race: same content, keep it.
        Err(_) if dest.is_dir() => {
            make_writable(&staging)?;
            fs::remove_dir_all(&staging).map_err(io_at(&staging))?;
            Ok(Unpacked {
                dir: dest,
                files,
                bytes,
            })
        }
        Err(e) => Err(io_at(&dest)(e)),
    }
}

/// Unpacks each entry into `staging` once it has passed every check, and
/// returns the count and bytes of regular files written.
fn unpack_into(
    archive: impl Read,
    staging: &Path,
    limits: &Limits,
) -> Result<(usize, u64), PackageError> {
    let damaged = |e: io::Error| PackageError::Damaged(e.to_string());
    let mut tar = tar::Archive::new(archive);
    // Owners, setuid bits and the like are never taken from the archive;
    // `settle` and `seal` set every mode. Until then the mask keeps what is
    // written private.
    tar.set_preserve_permissions(false);
    tar.set_preserve_ownerships(false);
    tar.set_unpack_xattrs(false);
    tar.set_mask(0o077);
    tar.set_overwrite(false);
    let (mut entries, mut files, mut bytes) = (0usize, 0usize, 0u64);
    for entry in tar.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        entries += 1;
        let name = shown(&entry.path_bytes());
        if entries > limits.max_entries {
            return Err(PackageError::TooLarge {
                what: format!("entry {entries} ({name})"),
                limit: format!("{} entries", limits.max_entries),
            });
        }
        let kind = entry.header().entry_type();
        if kind.is_gnu_sparse() {
            return Err(PackageError::Sparse { entry: name });
        }
        if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| shown(&t))
                .unwrap_or_default();
            return Err(PackageError::HardLink {
                entry: name,
                target,
            });
        }
        // Contiguous files are regular files by the tar standard.
        let regular = kind.is_file() || kind.is_contiguous();
        if !(regular || kind.is_dir() || kind.is_symlink()) {
            // Devices and FIFOs have no place in a release; PAX global headers
            // and unknown kinds carry nothing to unpack.
            continue;
        }
        if has_sparse_extensions(&mut entry)? {
            return Err(PackageError::Sparse { entry: name });
        }
        let path = entry.path().map_err(damaged)?;
        let dst = staged_path(staging, &path, &name, entry.path_bytes().len(), limits)?;
        if let Some(target) = entry.link_name_bytes().filter(|_| kind.is_symlink()) {
            if target.len() > limits.max_path_len {
                return Err(PackageError::TooLarge {
                    what: format!("symbolic link {name} has a {}-byte target", target.len()),
                    limit: format!("{} bytes per path", limits.max_path_len),
                });
            }
        }
        let mut total = bytes;
        if regular {
            // Checked before a byte is written: the declared size is what the
            // tar reader will write, whatever the archive's real length.
            let size = entry.size();
            total = bytes
                .checked_add(size)
                .filter(|total| *total <= limits.max_bytes)
                .ok_or_else(|| PackageError::TooLarge {
                    what: format!(
                        "entry {name} declares {}, bringing the release to {}",
                        human(size),
                        human(bytes.saturating_add(size))
                    ),
                    limit: format!("{} of files", human(limits.max_bytes)),
                })?;
        }
        let executable = entry
            .header()
            .mode()
            .map(|mode| mode & 0o111 != 0)
            .unwrap_or(false);
        // unpack_in refuses paths that would land outside the folder, through
        // `..` or through a symbolic link unpacked before.
        let inside = entry.unpack_in(staging).map_err(damaged)?;
        if !inside {
            return Err(PackageError::Damaged(format!(
                "entry {name} points outside the release folder"
            )));
        }
        // Counted by what landed: an old-style entry can be a folder.
        if settle(&dst, executable)? && regular {
            files += 1;
            bytes = total;
        }
    }
    Ok((files, bytes))
}

/// Whether PAX headers describe the entry as sparse (`GNU.sparse.*` keys,
/// formats 0.0 to 1.0), which the tar reader does not expand but which no
/// packer of ours writes either.
fn has_sparse_extensions<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<bool, PackageError> {
    let damaged = |e: io::Error| PackageError::Damaged(e.to_string());
    let Some(extensions) = entry.pax_extensions().map_err(damaged)? else {
        return Ok(false);
    };
    for extension in extensions {
        let extension = extension.map_err(damaged)?;
        if extension.key_bytes().starts_with(b"GNU.sparse.") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Where an entry lands in `staging`, found the way the tar reader finds it,
/// once its path is known to be short and shallow enough.
fn staged_path(
    staging: &Path,
    path: &Path,
    name: &str,
    len: usize,
    limits: &Limits,
) -> Result<PathBuf, PackageError> {
    if len > limits.max_path_len {
        return Err(PackageError::TooLarge {
            what: format!("entry {name} has a {len}-byte path"),
            limit: format!("{} bytes per path", limits.max_path_len),
        });
    }
    let mut dst = staging.to_path_buf();
    let mut depth = 0;
    for part in path.components() {
        match part {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(PackageError::Damaged(format!(
                    "entry {name} points outside the release folder"
                )))
            }
            Component::Normal(part) => {
                depth += 1;
                dst.push(part);
            }
        }
    }
    if depth > limits.max_depth {
        return Err(PackageError::TooLarge {
            what: format!("entry {name} is {depth} components deep"),
            limit: format!("{} components per path", limits.max_depth),
        });
    }
    Ok(dst)
}

/// Gives a just-unpacked entry its mode, and says whether it is a regular
/// file: files get their final mode, folders stay owner-only until `seal`
/// since entries are still to be written in them. Symbolic links are left
/// alone (changing their mode would follow them).
fn settle(path: &Path, executable: bool) -> Result<bool, PackageError> {
    let kind = fs::symlink_metadata(path).map_err(io_at(path))?.file_type();
    let mode = if kind.is_dir() {
        0o700
    } else if kind.is_file() {
        file_mode(executable)
    } else {
        return Ok(false);
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_at(path))?;
    Ok(kind.is_file())
}

/// Readable and never writable by anyone; executable if any x bit was set.
fn file_mode(executable: bool) -> u32 {
    if executable {
        0o555
    } else {
        0o444
    }
}

/// Makes every folder of an unpacked release 0555, deepest first, so the
/// release can no longer change.
fn seal(dir: &Path) -> Result<(), PackageError> {
    let read_only = || fs::Permissions::from_mode(0o555);
    walk_dirs_last(dir, &mut |path, is_dir| {
        if is_dir {
            fs::set_permissions(path, read_only())?;
        }
        Ok(())
    })
    .map_err(io_at(dir))?;
    fs::set_permissions(dir, read_only()).map_err(io_at(dir))
}

/// What an existing release folder holds, for an unpack that finds it in
/// place.
fn tally(dir: PathBuf) -> Result<Unpacked, PackageError> {
    let (mut files, mut bytes) = (0, 0);
    walk_dirs_last(&dir, &mut |path, is_dir| {
        if !is_dir {
            files += 1;
            bytes += fs::symlink_metadata(path)?.len();
        }
        Ok(())
    })
    .map_err(io_at(&dir))?;
    Ok(Unpacked { dir, files, bytes })
}

/// An entry name fit for an error message: quoted, escaped and cut short,
/// since it comes from the archive.
fn shown(name: &[u8]) -> String {
    const MAX_CHARS: usize = 100;
    let name = String::from_utf8_lossy(name);
    if name.chars().count() > MAX_CHARS {
        let cut: String = name.chars().take(MAX_CHARS).collect();
        format!("{cut:?}…")
    } else {
        format!("{name:?}")
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b < KIB => format!("{b} bytes"),
        b if b < MIB => format!("{:.1} KiB", b as f64 / KIB as f64),
        b if b < GIB => format!("{:.1} MiB", b as f64 / MIB as f64),
        b => format!("{:.1} GiB", b as f64 / GIB as f64),
    }
}

/// The text of the file `name` at the root of an archive, if it holds one.
/// Files over 1 MiB are refused rather than read into memory.
pub fn read_text(archive: impl Read, name: &str) -> Result<Option<String>, PackageError> {
    let damaged = |e: io::Error| PackageError::Damaged(e.to_string());
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().map_err(damaged)? {
        let entry = entry.map_err(damaged)?;
        let path = entry.path().map_err(damaged)?;
        if path == Path::new(name) || path == Path::new(".").join(name) {
            if !entry.header().entry_type().is_file() {
                return Err(PackageError::NotAFile {
                    name: name.to_string(),
                });
            }
            let size = entry.size();
            if size > MAX_TEXT {
                return Err(PackageError::TextTooLarge {
                    name: name.to_string(),
                    size,
                    limit: MAX_TEXT,
                });
            }
            let mut text = String::new();
            entry
                .take(MAX_TEXT)
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
            read_text(archive.as_slice(), "baton.toml")
                .unwrap()
                .as_deref(),
            Some("name = \"a\"\n")
        );
        assert_eq!(read_text(archive.as_slice(), "flags.toml").unwrap(), None);
        assert_eq!(
            read_text(archive.as_slice(), "app.py").unwrap(),
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
        let unpacked =
            unpack(p.archive.as_slice(), root.path(), &p.id, &Limits::default()).unwrap();
        let dir = unpacked.dir.clone();
        assert_eq!(
            fs::read_to_string(dir.join("src/app.py")).unwrap(),
            "print('hi')\n"
        );
        assert_eq!(
            fs::read_to_string(dir.join("link.py")).unwrap(),
            "print('hi')\n"
        );
        assert_eq!(mode_of(&dir.join("src/app.py")), 0o444);
        assert_eq!(mode_of(&dir.join("src")), 0o555);
        assert_eq!(mode_of(&dir), 0o555);
        // A second unpack keeps the first one, and counts what it holds.
        assert_eq!(
            unpack(p.archive.as_slice(), root.path(), &p.id, &Limits::default()).unwrap(),
            unpacked
        );
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
        let err = unpack(cut, root.path(), &p.id, &Limits::default()).unwrap_err();
        assert!(matches!(err, PackageError::Damaged(_)), "{err}");
        assert!(!root.path().join(&p.id).exists());
        assert_eq!(leftovers(root.path()), Vec::<String>::new());
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Names left in a release root: none after a refused archive.
    fn leftovers(root: &Path) -> Vec<String> {
        fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(0);
        header
    }

    /// An archive built entry by entry, as a hostile client could send it.
    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn add(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, mode: u32) {
        let mut h = header(kind, mode, 0);
        b.append_data(&mut h, path, io::empty()).unwrap();
    }

    fn refused(archive: &[u8], limits: &Limits) -> (PackageError, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        let err = unpack(archive, root.path(), "r1", limits).unwrap_err();
        assert_eq!(
            leftovers(root.path()),
            Vec::<String>::new(),
            "left behind after: {err}"
        );
        (err, root)
    }

    #[test]
    fn a_packed_app_folder_round_trips_with_the_same_release_id() {
        let a = tempfile::tempdir().unwrap();
        app(a.path());
        fs::write(a.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(a.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("src/app.py", a.path().join("link.py")).unwrap();
        let p = pack(a.path()).unwrap();
        // From a file on disk, as the server unpacks an upload.
        let on_disk = tempfile::tempdir().unwrap();
        let path = on_disk.path().join("release.tar");
        fs::write(&path, &p.archive).unwrap();
        let root = tempfile::tempdir().unwrap();
        let file = fs::File::open(&path).unwrap();
        let unpacked = unpack(file, root.path(), &p.id, &Limits::default()).unwrap();
        assert_eq!(unpacked.dir, root.path().join(&p.id));
        assert_eq!(unpacked.files, p.files);
        let expected_bytes: u64 = ["baton.toml", "src/app.py", ".gitignore", "run.sh"]
            .iter()
            .map(|f| fs::metadata(a.path().join(f)).unwrap().len())
            .sum();
        assert_eq!(unpacked.bytes, expected_bytes);
        assert_eq!(mode_of(&unpacked.dir.join("run.sh")), 0o555);
        assert_eq!(pack(&unpacked.dir).unwrap().id, p.id);
    }

    #[test]
    fn a_setuid_file_loses_its_bit() {
        let bytes = archive(|b| {
            add(b, tar::EntryType::Directory, "shared", 0o2777);
            add(b, tar::EntryType::Directory, "tmp", 0o1777);
            add_file(b, "shared/run", 0o4755, b"#!/bin/sh\n");
            add_file(b, "shared/group-run", 0o2775, b"#!/bin/sh\n");
            add_file(b, "open.txt", 0o666, b"anyone");
            add_file(b, "others-may-run", 0o601, b"x");
            add_file(b, "locked.txt", 0o000, b"x");
        });
        let root = tempfile::tempdir().unwrap();
        let dir = unpack(bytes.as_slice(), root.path(), "r1", &Limits::default())
            .unwrap()
            .dir;
        for (path, mode) in [
            ("shared", 0o555),
            ("tmp", 0o555),
            ("shared/run", 0o555),
            ("shared/group-run", 0o555),
            ("open.txt", 0o444),
            ("others-may-run", 0o555),
            ("locked.txt", 0o444),
            ("", 0o555),
        ] {
            assert_eq!(mode_of(&dir.join(path)), mode, "{path}");
        }
    }

    /// A GNU sparse header for a 50 GiB file carrying 512 bytes of data.
    fn sparse_header(size: u64) -> tar::Header {
        let mut h = header(tar::EntryType::GNUSparse, 0o644, 512);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(size);
        gnu.sparse[0].set_offset(size - 512);
        gnu.sparse[0].set_length(512);
        h
    }

    #[test]
    fn a_sparse_archive_is_refused_before_anything_is_written() {
        let bytes = archive(|b| {
            let mut h = sparse_header(50 * GIB);
            b.append_data(&mut h, "disk.img", &[1u8; 512][..]).unwrap();
            add_file(b, "after.txt", 0o644, b"after");
        });
        assert!(bytes.len() < 10_000, "{} bytes", bytes.len());
        let (err, _root) = refused(&bytes, &Limits::default());
        assert!(matches!(err, PackageError::Sparse { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("\"disk.img\": is a sparse file"), "{text}");
        assert!(text.contains("baton deploy"), "{text}");
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        // The length counts the whole record, its own digits included.
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len += 1;
        }
        format!("{len}{body}").into_bytes()
    }

    #[test]
    fn a_pax_sparse_entry_is_refused() {
        let bytes = archive(|b| {
            let records: Vec<u8> = [
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.name", "disk.img"),
                ("GNU.sparse.realsize", "53687091200"),
            ]
            .iter()
            .flat_map(|(k, v)| pax_record(k, v))
            .collect();
            let mut h = header(tar::EntryType::XHeader, 0o644, records.len() as u64);
            b.append_data(&mut h, "PaxHeaders/disk.img", records.as_slice())
                .unwrap();
            add_file(b, "GNUSparseFile.0/disk.img", 0o644, b"1\n0\n512\n");
        });
        let (err, _root) = refused(&bytes, &Limits::default());
        assert!(
            err.to_string()
                .contains("\"GNUSparseFile.0/disk.img\": is a sparse file"),
            "{err}"
        );
    }

    #[test]
    fn a_header_declaring_50_gb_is_refused_without_writing() {
        // The header alone: the 50 GiB it declares never follow.
        let bytes = archive(|b| {
            let mut h = header(tar::EntryType::Regular, 0o644, 50 * GIB);
            h.set_path("huge.bin").unwrap();
            h.set_cksum();
            b.append(&h, io::empty()).unwrap();
        });
        let (err, _root) = refused(&bytes, &Limits::default());
        assert!(matches!(err, PackageError::TooLarge { .. }), "{err}");
        let text = err.to_string();
        for part in [
            "\"huge.bin\" declares 50.0 GiB",
            "2.0 GiB of files",
            ".batonignore",
        ] {
            assert!(text.contains(part), "{part:?} missing from: {text}");
        }
    }

    #[test]
    fn files_past_the_byte_limit_in_total_are_refused_at_the_first_one_over() {
        let bytes = archive(|b| {
            add_file(b, "a.bin", 0o644, &[0u8; 600]);
            add_file(b, "b.bin", 0o644, &[0u8; 600]);
        });
        let limits = Limits {
            max_bytes: 1000,
            ..Limits::default()
        };
        let (err, _root) = refused(&bytes, &limits);
        let text = err.to_string();
        assert!(
            text.contains("\"b.bin\" declares 600 bytes, bringing the release to 1.2 KiB"),
            "{text}"
        );
        assert!(text.contains("1000 bytes of files"), "{text}");
    }

    fn tiny_files(count: usize) -> Vec<u8> {
        archive(|b| {
            for i in 0..count {
                add(b, tar::EntryType::Regular, &format!("f{i}"), 0o644);
            }
        })
    }

    #[test]
    fn an_archive_of_100k_files_is_refused_at_the_entry_limit() {
        let limits = Limits {
            max_entries: 1000,
            ..Limits::default()
        };
        let (err, _root) = refused(&tiny_files(100_000), &limits);
        let text = err.to_string();
        assert!(
            text.contains("entry 1001 (\"f1000\"): over the limit of 1000 entries"),
            "{text}"
        );
        // Up to the limit is fine.
        let root = tempfile::tempdir().unwrap();
        let unpacked = unpack(tiny_files(1000).as_slice(), root.path(), "r1", &limits).unwrap();
        assert_eq!(unpacked.files, 1000);
    }

    #[test]
    fn an_archive_of_20_001_entries_is_refused_at_the_default_limit() {
        // FIFOs are dropped, so nothing is written and the test stays fast
        // (20,000 real files take seconds on a busy disk), yet each one
        // counts: reading entries costs time even when none is kept.
        let bytes = archive(|b| {
            for i in 0..20_001 {
                add(b, tar::EntryType::Fifo, &format!("p{i}"), 0o644);
            }
        });
        let (err, _root) = refused(&bytes, &Limits::default());
        assert!(
            err.to_string()
                .contains("entry 20001 (\"p20000\"): over the limit of 20000 entries"),
            "{err}"
        );
    }

    #[test]
    fn device_files_and_fifos_are_dropped() {
        let bytes = archive(|b| {
            add(b, tar::EntryType::Char, "dev/tty0", 0o666);
            add(b, tar::EntryType::Block, "dev/sda", 0o660);
            add(b, tar::EntryType::Fifo, "pipe", 0o644);
            add(b, tar::EntryType::new(b'Z'), "unknown-kind", 0o644);
            add_file(b, "kept.txt", 0o644, b"kept");
        });
        let root = tempfile::tempdir().unwrap();
        let unpacked = unpack(bytes.as_slice(), root.path(), "r1", &Limits::default()).unwrap();
        assert_eq!(unpacked.files, 1);
        assert_eq!(
            fs::read_to_string(unpacked.dir.join("kept.txt")).unwrap(),
            "kept"
        );
        for dropped in ["dev", "dev/tty0", "dev/sda", "pipe", "unknown-kind"] {
            assert!(
                fs::symlink_metadata(unpacked.dir.join(dropped)).is_err(),
                "{dropped} was created"
            );
        }
    }

    #[test]
    fn hard_links_are_refused() {
        let bytes = archive(|b| {
            add_file(b, "a.txt", 0o644, b"a");
            let mut h = header(tar::EntryType::Link, 0o644, 0);
            b.append_link(&mut h, "b.txt", "a.txt").unwrap();
        });
        let (err, _root) = refused(&bytes, &Limits::default());
        assert!(
            err.to_string()
                .starts_with("\"b.txt\": is a hard link to \"a.txt\""),
            "{err}"
        );
    }

    #[test]
    fn deep_paths_are_refused() {
        let deep = |depth: usize| format!("{}f", "d/".repeat(depth - 1));
        let bytes = archive(|b| add_file(b, &deep(33), 0o644, b"deep"));
        let (err, _root) = refused(&bytes, &Limits::default());
        let text = err.to_string();
        assert!(
            text.contains("is 33 components deep: over the limit of 32 components per path"),
            "{text}"
        );
        let bytes = archive(|b| add_file(b, &deep(32), 0o644, b"deep"));
        let root = tempfile::tempdir().unwrap();
        let dir = unpack(bytes.as_slice(), root.path(), "r1", &Limits::default())
            .unwrap()
            .dir;
        assert_eq!(fs::read_to_string(dir.join(deep(32))).unwrap(), "deep");
    }

    #[test]
    fn long_paths_and_link_targets_are_refused() {
        let long = "a".repeat(1025);
        let bytes = archive(|b| add_file(b, &long, 0o644, b"x"));
        let (err, _root) = refused(&bytes, &Limits::default());
        let text = err.to_string();
        assert!(
            text.contains("has a 1025-byte path: over the limit of 1024 bytes per path"),
            "{text}"
        );
        assert!(text.contains("…"), "the name is cut short: {text}");
        assert!(text.len() < 400, "{text}");

        let bytes = archive(|b| {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, "link", &long).unwrap();
        });
        let (err, _root) = refused(&bytes, &Limits::default());
        assert!(
            err.to_string()
                .contains("symbolic link \"link\" has a 1025-byte target"),
            "{err}"
        );
    }

    #[test]
    fn an_entry_pointing_outside_the_release_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("releases");
        fs::create_dir(&root).unwrap();
        let bytes = archive(|b| {
            // The builder refuses `..`; a hostile client writes the name itself.
            let mut h = header(tar::EntryType::Regular, 0o644, 4);
            h.as_old_mut().name[..14].copy_from_slice(b"../escaped.txt");
            h.set_cksum();
            b.append(&h, &b"evil"[..]).unwrap();
        });
        let err = unpack(bytes.as_slice(), &root, "r1", &Limits::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"../escaped.txt\" points outside the release folder"),
            "{err}"
        );
        assert!(!top.path().join("escaped.txt").exists());
        assert_eq!(leftovers(&root), Vec::<String>::new());
    }

    #[test]
    fn symlinks_are_kept_as_they_are_but_never_written_through() {
        let outside = tempfile::tempdir().unwrap();
        let bytes = archive(|b| {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, "passwd", "/etc/passwd").unwrap();
        });
        let root = tempfile::tempdir().unwrap();
        let dir = unpack(bytes.as_slice(), root.path(), "r1", &Limits::default())
            .unwrap()
            .dir;
        assert_eq!(
            fs::read_link(dir.join("passwd")).unwrap(),
            Path::new("/etc/passwd")
        );

        let bytes = archive(|b| {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, "out", outside.path()).unwrap();
            add_file(b, "out/planted.txt", 0o644, b"evil");
        });
        let (err, _root) = refused(&bytes, &Limits::default());
        assert!(matches!(err, PackageError::Damaged(_)), "{err}");
        assert!(!outside.path().join("planted.txt").exists());
    }

    #[test]
    fn a_huge_settings_file_is_refused_unread() {
        let bytes = archive(|b| add_file(b, "flags.toml", 0o644, &vec![b'#'; MIB as usize + 1]));
        let err = read_text(bytes.as_slice(), "flags.toml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("flags.toml: is 1048577 bytes, over the limit of 1048576 bytes"),
            "{err}"
        );
    }
}
