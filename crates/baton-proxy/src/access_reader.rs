//! Reading the access log back, one app in one environment at a time: its
//! last lines (from the end of `access.log`, then of `access.log.1`, … as far
//! as needed), then the lines appended after them, following the file when
//! the writer rotates it. Memory stays bounded whatever the files' size:
//! files are read backwards in chunks, only the lines asked for are kept, and
//! a line longer than [`MAX_LINE`] is skipped. It never writes, and it is
//! never on the data path: the API reads, the proxy's writer thread writes.

use std::borrow::Cow;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;

use serde::Deserialize;

use crate::access_log::rotated;

/// Bytes read at a time.
const CHUNK: usize = 64 * 1024;
/// Longest line kept; the writer's lines are far shorter (a request's host
/// and path fit in the request head the proxy reads, hyper's buffer of
/// about 400 KiB).
const MAX_LINE: usize = 1024 * 1024;
/// Matching bytes [`AccessReader::read`] gathers before it returns them.
const BATCH: usize = 256 * 1024;

/// The lines of one app in one environment, read from the access log at
/// `path`: [`AccessReader::open`] gives the last ones, [`AccessReader::read`]
/// those appended since.
pub struct AccessReader {
    path: PathBuf,
    filter: Filter,
    /// The file being followed (`None` while there is no log yet).
    current: Option<Followed>,
    pending: Pending,
}

struct Followed {
    file: File,
    id: FileId,
    /// Where the unread part begins.
    offset: u64,
    /// Another file took its name: once this one is read to its end, the
    /// new one is next.
    replaced: bool,
}

/// A file's identity, which a rename keeps: the writer's rotation renames
/// `access.log` and makes a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    fn of(metadata: &std::fs::Metadata) -> FileId {
        FileId(metadata.dev(), metadata.ino())
    }
}

impl AccessReader {
    /// A reader of `app` in `environment`, and the last `lines` of its lines
    /// (oldest first): raw JSON lines, as the proxy wrote them, without
    /// their newline. A log that does not exist yet has no lines.
    pub fn open(
        path: PathBuf,
        app: &str,
        environment: &str,
        lines: usize,
    ) -> std::io::Result<(AccessReader, Vec<String>)> {
        let filter = Filter {
            app: app.to_string(),
            environment: environment.to_string(),
        };
        let mut last = Vec::new();
        let mut seen = Vec::new();
        let mut current = None;
        if let Some(file) = open(&path)? {
            let metadata = file.metadata()?;
            let id = FileId::of(&metadata);
            let mut backwards = Backwards::new(&file, metadata.len());
            // The text after the last newline is a line still being
            // written: following starts at its beginning, so it is read
            // whole once its end arrives.
            let offset = match backwards.next()? {
                Some(unfinished) => unfinished.start,
                None => 0,
            };
            filter.collect(&mut backwards, lines, &mut last)?;
            current = Some(Followed {
                file,
                id,
                offset,
                replaced: false,
            });
            seen.push(id);
        }
        // Older lines from the rotated files, newest first, until enough.
        // A file seen already was renamed while this looked (a rotation).
        let mut n = 1;
        while last.len() < lines {
            let Some(file) = open(&rotated(&path, n))? else {
                break;
            };
            let metadata = file.metadata()?;
            let id = FileId::of(&metadata);
            if !seen.contains(&id) {
                seen.push(id);
                let mut backwards = Backwards::new(&file, metadata.len());
                filter.collect(&mut backwards, lines, &mut last)?;
            }
            n += 1;
        }
        last.reverse();
        let reader = AccessReader {
            path,
            filter,
            current,
            pending: Pending::default(),
        };
        Ok((reader, last))
    }

    /// The app's whole lines appended since the last call (or since those
    /// [`open`](AccessReader::open) gave), oldest first; none when nothing
    /// new was written. When the writer has rotated the log, the rest of
    /// the old file is read and then the new one from its start.
    pub fn read(&mut self) -> std::io::Result<Vec<String>> {
        let mut found = Vec::new();
        let mut kept = 0;
        let mut chunk = vec![0; CHUNK];
        while kept < BATCH {
            let Some(current) = &mut self.current else {
                match open(&self.path)? {
                    Some(file) => self.follow(file)?,
                    None => break,
                }
                continue;
            };
            let n = current.file.read_at(&mut chunk, current.offset)?;
            if n > 0 {
                current.offset += n as u64;
                kept += self.pending.take(&chunk[..n], &self.filter, &mut found);
                continue;
            }
            if current.replaced {
                match open(&self.path)? {
                    Some(file) => self.follow(file)?,
                    None => break,
                }
                continue;
            }
            // At the end of the file: is another one in its place now?
            let now = match std::fs::metadata(&self.path) {
                Ok(metadata) => metadata,
                // Between the rename and the new file.
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            };
            if FileId::of(&now) != current.id {
                // Rotated. The writer renamed this file before making the
                // new one, so all it wrote here is here now: read to the
                // end once more, then move on.
                current.replaced = true;
                continue;
            }
            if now.len() < current.offset {
                // Cut short by someone: start again from its start.
                current.offset = 0;
                self.pending = Pending::default();
                continue;
            }
            break;
        }
        Ok(found)
    }

    /// Follows `file` from its start; a line the old file left unfinished
    /// never ends.
    fn follow(&mut self, file: File) -> std::io::Result<()> {
        let id = FileId::of(&file.metadata()?);
        self.current = Some(Followed {
            file,
            id,
            offset: 0,
            replaced: false,
        });
        self.pending = Pending::default();
        Ok(())
    }
}

/// Which lines a reader keeps.
struct Filter {
    app: String,
    environment: String,
}

impl Filter {
    /// The line as text, if it is a whole record of the app in the
    /// environment (a line torn by a crash is no record).
    fn keep(&self, line: &[u8]) -> Option<String> {
        /// The fields that choose a line; the rest is checked as JSON only.
        #[derive(Deserialize)]
        struct Key<'a> {
            #[serde(borrow)]
            app: Option<Cow<'a, str>>,
            #[serde(borrow)]
            environment: Option<Cow<'a, str>>,
        }
        let key: Key = serde_json::from_slice(line).ok()?;
        let ours = key.app.as_deref() == Some(self.app.as_str())
            && key.environment.as_deref() == Some(self.environment.as_str());
        // JSON that parsed is UTF-8.
        ours.then(|| String::from_utf8_lossy(line).into_owned())
    }

    /// Goes on backwards until `lines` lines are in `found` (newest first).
    fn collect(
        &self,
        backwards: &mut Backwards<'_>,
        lines: usize,
        found: &mut Vec<String>,
    ) -> std::io::Result<()> {
        while found.len() < lines {
            let Some(line) = backwards.next()? else {
                break;
            };
            found.extend(line.text.and_then(|text| self.keep(&text)));
        }
        Ok(())
    }
}

/// What a forward read left unfinished.
#[derive(Default)]
struct Pending {
    /// The start of a line whose end is not read yet.
    partial: Vec<u8>,
    /// Inside a line longer than [`MAX_LINE`], dropped up to its end.
    skipping: bool,
}

impl Pending {
    /// Keeps the lines of `bytes` (read forwards) that `filter` keeps in
    /// `found`; the unfinished end waits. Returns the bytes kept.
    fn take(&mut self, mut bytes: &[u8], filter: &Filter, found: &mut Vec<String>) -> usize {
        let mut kept = 0;
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            let line: Cow<[u8]> = if self.partial.is_empty() {
                Cow::Borrowed(&bytes[..end])
            } else {
                self.partial.extend_from_slice(&bytes[..end]);
                Cow::Owned(std::mem::take(&mut self.partial))
            };
            bytes = &bytes[end + 1..];
            if std::mem::take(&mut self.skipping) {
                continue;
            }
            if let Some(line) = filter.keep(&line) {
                kept += line.len();
                found.push(line);
            }
        }
        if !self.skipping {
            self.partial.extend_from_slice(bytes);
            if self.partial.len() > MAX_LINE {
                self.partial = Vec::new();
                self.skipping = true;
            }
        }
        kept
    }
}

/// Opens a file to read, or `None` if there is none.
fn open(path: &std::path::Path) -> std::io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The lines of a file before `end`, last first, read in chunks from the
/// end. The first one given is the text after the last newline (empty when
/// the file ends with one).
struct Backwards<'a> {
    file: &'a File,
    /// Where the bytes in `buf` begin in the file.
    start: u64,
    /// The bytes read and not given yet, up to the end of what is left.
    buf: Vec<u8>,
    /// The end of what is left is inside a line too long to keep.
    too_long: bool,
    done: bool,
}

/// A line read backwards.
struct Line {
    /// Where it begins in the file.
    start: u64,
    /// Its text; `None` if it is longer than [`MAX_LINE`].
    text: Option<Vec<u8>>,
}

impl<'a> Backwards<'a> {
    fn new(file: &'a File, end: u64) -> Backwards<'a> {
        Backwards {
            file,
            start: end,
            buf: Vec::new(),
            too_long: false,
            done: false,
        }
    }

    fn next(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            if let Some(newline) = self.buf.iter().rposition(|b| *b == b'\n') {
                let text = self.buf.split_off(newline + 1);
                self.buf.truncate(newline);
                return Ok(Some(Line {
                    start: self.start + newline as u64 + 1,
                    text: (!std::mem::take(&mut self.too_long)).then_some(text),
                }));
            }
            if self.start == 0 {
                // The file's first line.
                if self.done {
                    return Ok(None);
                }
                self.done = true;
                let text = std::mem::take(&mut self.buf);
                return Ok(Some(Line {
                    start: 0,
                    text: (!self.too_long).then_some(text),
                }));
            }
            let n = CHUNK.min(self.start as usize);
            self.start -= n as u64;
            let mut chunk = vec![0; n];
            self.file.read_exact_at(&mut chunk, self.start)?;
            chunk.extend_from_slice(&self.buf);
            self.buf = chunk;
            if self.buf.len() > MAX_LINE {
                // No newline in all that: a line too long to keep. Only
                // where it begins is still to find.
                self.buf.clear();
                self.too_long = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccessRecord;
    use std::io::Write;

    fn line(app: Option<&str>, environment: &str, path: &str) -> String {
        let record = AccessRecord {
            time: "2026-11-27T16:30:37.123Z".into(),
            app: app.map(str::to_string),
            environment: app.map(|_| environment.to_string()),
            host: "shop.example".into(),
            method: "GET".into(),
            path: path.into(),
            status: 200,
            bytes: 12,
            duration_ms: 1.5,
            release: Some("abc".into()),
            target: Some(1),
            request_id: format!("id{path}"),
            client: "127.0.0.1".into(),
            error: None,
        };
        serde_json::to_string(&record).unwrap() + "\n"
    }

    fn append(path: &std::path::Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn paths(lines: &[String]) -> Vec<String> {
        lines
            .iter()
            .map(|l| serde_json::from_str::<AccessRecord>(l).unwrap().path)
            .collect()
    }

    /// The writer's rotation: the current file becomes `.1`, a new one
    /// starts empty.
    fn rotate(path: &std::path::Path) {
        crate::access_log::rotate(path, 3).unwrap();
        append(path, "");
    }

    #[test]
    fn the_last_lines_of_an_app_come_from_the_rotated_files_too() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        // Enough other traffic that the reader goes back over many chunks.
        let noise: String = (0..2_000)
            .map(|n| line(Some("other"), "production", &format!("/o{n}")))
            .collect();
        append(&log, &line(Some("shop"), "production", "/1"));
        append(&log, &noise);
        append(&log, &line(Some("shop"), "production", "/2"));
        rotate(&log);
        append(&log, &line(Some("shop"), "production", "/3"));
        append(&log, &line(None, "", "/unknown-host"));
        append(&log, &line(Some("shop"), "staging", "/staging"));
        rotate(&log);
        append(&log, &line(Some("shop"), "production", "/4"));
        append(&log, &noise);
        // A line the writer has not finished: not one yet.
        append(&log, &line(Some("shop"), "production", "/5")[..40]);

        let last = |n| {
            let (_, lines) = AccessReader::open(log.clone(), "shop", "production", n).unwrap();
            paths(&lines)
        };
        assert_eq!(last(2), ["/3", "/4"]);
        assert_eq!(last(1), ["/4"]);
        assert_eq!(last(100), ["/1", "/2", "/3", "/4"]);
        assert!(last(0).is_empty());
        let (_, staging) = AccessReader::open(log.clone(), "shop", "staging", 10).unwrap();
        assert_eq!(paths(&staging), ["/staging"]);
        let (_, none) =
            AccessReader::open(dir.path().join("nothing.log"), "shop", "production", 10).unwrap();
        assert!(none.is_empty(), "no log yet is no lines");
    }

    #[test]
    fn following_goes_on_in_the_new_file_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let (mut reader, last) = AccessReader::open(log.clone(), "shop", "production", 10).unwrap();
        assert!(last.is_empty());
        assert!(reader.read().unwrap().is_empty(), "no log yet");

        append(&log, &line(Some("shop"), "production", "/1"));
        append(&log, &line(Some("other"), "production", "/other"));
        assert_eq!(paths(&reader.read().unwrap()), ["/1"]);
        assert!(reader.read().unwrap().is_empty(), "nothing new");

        // Half a line, its end, then the rotation right after a last line.
        let two = line(Some("shop"), "production", "/2");
        append(&log, &two[..20]);
        assert!(reader.read().unwrap().is_empty());
        append(&log, &two[20..]);
        append(&log, &line(Some("shop"), "production", "/3"));
        rotate(&log);
        append(&log, &line(Some("shop"), "production", "/4"));
        assert_eq!(paths(&reader.read().unwrap()), ["/2", "/3", "/4"]);

        rotate(&log);
        append(&log, &line(Some("shop"), "production", "/5"));
        assert_eq!(paths(&reader.read().unwrap()), ["/5"]);

        // A reader opened now starts after the lines it was given.
        let (mut late, last) = AccessReader::open(log.clone(), "shop", "production", 2).unwrap();
        assert_eq!(paths(&last), ["/4", "/5"]);
        assert!(late.read().unwrap().is_empty());
    }

    #[test]
    fn a_line_too_long_to_keep_is_skipped_not_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let (mut reader, _) = AccessReader::open(log.clone(), "shop", "production", 10).unwrap();
        let long = "x".repeat(MAX_LINE + 10);
        append(&log, &line(Some("shop"), "production", "/1"));
        append(&log, &line(Some("shop"), "production", &format!("/{long}")));
        append(&log, &line(Some("shop"), "production", "/2"));
        let mut followed = Vec::new();
        loop {
            let more = reader.read().unwrap();
            if more.is_empty() {
                break;
            }
            followed.extend(more);
        }
        assert_eq!(paths(&followed), ["/1", "/2"]);
        let (_, last) = AccessReader::open(log, "shop", "production", 10).unwrap();
        assert_eq!(paths(&last), ["/1", "/2"]);
    }
}
