//! Timestamps on target output, one per line, the way daemontools'
//! `multilog` adds them. Targets outlive the server and their output never
//! passes through it, so the stamper is part of the target: the process
//! runtime starts `baton log-stamp -- sh -c COMMAND` as the target's
//! process, in the target's process group, with the log file as its output.
//! The stamper runs the app with its output on a pipe and writes each line
//! to the log file behind the time it was read
//! (`2026-11-27T16:30:37.123Z hello`, RFC 3339, UTC, milliseconds).
//!
//! This module owns that line format (writing it, and reading it back for
//! `logs --json`), the pure line splitting ([`Lines`]) and the stamper's own
//! run loop ([`main`]). The stamper must be invisible to whoever runs or
//! stops the target: it never signals the app itself (a stop signals the
//! whole group, which reaches the app directly); it outlives the app only
//! to drain its output (and, while its group is being stopped, until
//! whatever the app's shell started has finished with it); it ends as the app ended, with its exit code or
//! killed by the same signal; the app starts with the signal dispositions
//! of a freshly started program, and is killed if the stamper is. It never
//! holds a line in memory beyond [`MAX_LINE`] bytes.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// A line longer than this is written in pieces of this size, each stamped.
pub const MAX_LINE: usize = 64 * 1024;
/// A line still without its end this long after its first byte is written
/// as it is (a prompt, a progress bar), so that `logs -f` shows it.
pub const PARTIAL_AFTER: Duration = Duration::from_secs(1);
/// How long output is still read after the app exited, when something it
/// started holds the pipe open: long enough to read what is buffered, short
/// enough that the target's exit is seen when the app's is.
pub const LINGER: Duration = Duration::from_millis(200);
/// Length of a stamp without the space after it.
const STAMP_LEN: usize = "2026-11-27T16:30:37.123Z".len();

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The stamp for a moment (milliseconds since the Unix epoch), with the
/// space that separates it from the line: `2026-11-27T16:30:37.123Z `.
pub fn stamp(unix_ms: i64) -> String {
    let at = UNIX_EPOCH + std::time::Duration::from_millis(unix_ms.max(0) as u64);
    format!("{} ", humantime::format_rfc3339_millis(at))
}

/// A stored line's stamp and the rest of it, when it starts with one in
/// exactly the format [`stamp`] writes; `None` for lines without (written
/// before stamps existed, or by a server that could not run the stamper).
pub fn split(line: &str) -> Option<(&str, &str)> {
    let b = line.as_bytes();
    if b.len() <= STAMP_LEN || b[STAMP_LEN] != b' ' {
        return None;
    }
    let shape = b"0000-00-00T00:00:00.000Z";
    let fits = shape.iter().zip(b).all(|(want, got)| match want {
        b'0' => got.is_ascii_digit(),
        _ => want == got,
    });
    fits.then(|| (&line[..STAMP_LEN], &line[STAMP_LEN + 1..]))
}

/// Milliseconds since the Unix epoch of an RFC 3339 time
/// (`2026-11-27T16:30:37.123456789Z`, `…+01:00`), as the Docker Engine
/// writes them; fractions beyond milliseconds are dropped.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let punctuation = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if punctuation.iter().any(|&(i, c)| b.get(i) != Some(&c))
        || !matches!(b.get(10), Some(b'T' | b't'))
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Leap seconds (:60) count as the last millisecond of their minute.
    let second = second.min(60);
    let mut i = 19;
    let mut milli = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                milli = milli * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        milli *= 10_i64.pow(3u32.saturating_sub((i - start) as u32));
    }
    let offset_minutes = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let minutes = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let local = ((days * 24 + hour) * 60 + minute) * 60 + second;
    let ms = (local - offset_minutes * 60) * 1000 + milli;
    Some(if second == 60 { ms - 1 } else { ms })
}

/// One frame of a container's output as the Docker Engine sends it with
/// `timestamps` (`2026-11-27T16:30:37.123456789Z line\n`), its stamp
/// rewritten to Baton's, and ended with a newline if the engine cut a long
/// line. A frame without a stamp is kept as it is.
pub fn restamp(frame: &[u8]) -> Vec<u8> {
    let space = frame.iter().take(40).position(|b| *b == b' ');
    let parsed = space.and_then(|at| {
        let text = std::str::from_utf8(&frame[..at]).ok()?;
        Some((at, parse_rfc3339(text)?))
    });
    let Some((at, ms)) = parsed else {
        return frame.to_vec();
    };
    let mut out = stamp(ms).into_bytes();
    out.extend_from_slice(&frame[at + 1..]);
    if out.last() != Some(&b'\n') {
        out.push(b'\n');
    }
    out
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`); parsing needs it for the offsets Docker may write,
/// which `humantime` does not read.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Cuts output into stamped lines. Pure: the caller says when bytes were
/// read and when a partial line has waited long enough.
#[derive(Debug)]
pub struct Lines {
    pending: Vec<u8>,
    /// When the first byte of the pending line was read.
    since: Option<i64>,
    max: usize,
}

impl Lines {
    /// Lines longer than `max` bytes are cut into pieces of at most `max`.
    pub fn new(max: usize) -> Lines {
        Lines {
            pending: Vec::new(),
            since: None,
            max: max.max(4),
        }
    }

    /// Adds `bytes` read at `now_ms`, appending every line they complete to
    /// `out`, stamped with the time its first byte was read.
    pub fn push(&mut self, mut bytes: &[u8], now_ms: i64, out: &mut Vec<u8>) {
        while !bytes.is_empty() {
            let since = *self.since.get_or_insert(now_ms);
            let room = self.max - self.pending.len();
            // A newline right after a line of exactly `max` bytes ends it.
            let window = &bytes[..bytes.len().min(room + 1)];
            if let Some(end) = window.iter().position(|b| *b == b'\n') {
                self.pending.extend_from_slice(&bytes[..end]);
                bytes = &bytes[end + 1..];
                self.emit(since, out);
                continue;
            }
            if bytes.len() <= room {
                self.pending.extend_from_slice(bytes);
                return;
            }
            self.pending.extend_from_slice(&bytes[..room]);
            bytes = &bytes[room..];
            // Cut before a character split in two, so both pieces stay UTF-8.
            let keep = utf8_cut(&self.pending);
            let carry = self.pending.split_off(keep);
            self.emit(since, out);
            self.pending = carry;
            if !self.pending.is_empty() {
                self.since = Some(now_ms);
            }
        }
    }

    /// When the first byte of a line still without its end was read.
    pub fn pending_since(&self) -> Option<i64> {
        self.since.filter(|_| !self.pending.is_empty())
    }

    /// Appends the pending partial line, if any, to `out` as a line.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if let Some(since) = self.pending_since() {
            self.emit(since, out);
        }
    }

    fn emit(&mut self, since: i64, out: &mut Vec<u8>) {
        out.extend_from_slice(stamp(since).as_bytes());
        out.append(&mut self.pending);
        out.push(b'\n');
        self.since = None;
    }
}

/// Where to cut `bytes` so that no UTF-8 character is split: before a
/// character whose last bytes are missing, else at the end. Bytes that are
/// not UTF-8 are cut anywhere.
fn utf8_cut(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(4) {
        let byte = bytes[len - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back
        }
        let width = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if width > back && back < len {
            len - back
        } else {
            len
        };
    }
    len
}

/// Runs `command` (a program and its arguments) with its standard output
/// and error on one pipe, so that their lines keep the order they were
/// written in, and writes its output to `out` in stamped lines until the
/// program has exited and its output is drained. Returns how it exited.
/// The variables named in `unset` were set for the stamper alone and are
/// not passed on.
///
/// `stopping` turns true when the target's whole group was signalled (a
/// stop): then a shell that dies of it, while the app it started is still
/// finishing, does not end the target before the app does.
pub async fn run(
    command: &[OsString],
    unset: &[OsString],
    out: &mut impl Write,
    stopping: &AtomicBool,
) -> std::io::Result<ExitStatus> {
    let (program, args) = command.split_first().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command to run")
    })?;
    let (writer, mut reader) = tokio::net::unix::pipe::pipe()?;
    // The app gets a blocking pipe, as a file or a terminal would be.
    let writer = writer.into_blocking_fd()?;
    let mut spawn = tokio::process::Command::new(program);
    for name in unset {
        spawn.env_remove(name);
    }
    spawn
        .args(args)
        .stdout(Stdio::from(writer.try_clone()?))
        .stderr(Stdio::from(writer))
        .kill_on_drop(false);
    // The app starts with every signal at its default, whatever the
    // server inherited (`nohup` ignores SIGHUP) and whatever the C
    // library's posix_spawn left ignored (its internal signals 32 and 33,
    // when the stamper itself was started that way).
    // And it dies with the stamper: killed alone (by hand, or by the
    // out-of-memory killer), the stamper is reported as the target's end,
    // and an app outliving it would hold the port its restart needs.
    let stamper = std::process::id() as libc::pid_t;
    let last = libc::SIGRTMAX();
    // SAFETY: between fork and exec only async-signal-safe system calls
    // (sigaction, prctl, getppid), which touch nothing of the parent's.
    unsafe {
        spawn.pre_exec(move || {
            for number in 1..=last {
                if number != libc::SIGKILL
                    && number != libc::SIGSTOP
                    && libc::signal(number, libc::SIG_DFL) == libc::SIG_ERR
                {
                    default_internal(number);
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Gone already, before the line above could take effect.
            if libc::getppid() != stamper {
                libc::_exit(127);
            }
            Ok(())
        });
    }
    let mut child = spawn.spawn()?;
    // Our copies of the pipe's writing end must go, or it never ends.
    drop(spawn);

    let mut lines = Lines::new(MAX_LINE);
    let mut buf = vec![0; MAX_LINE];
    let mut stamped = Vec::new();
    let mut status = None;
    let mut eof = false;
    let mut linger_until = None;
    while !(eof && status.is_some()) {
        let partial_at = lines.pending_since().map(|since| {
            let waited = Duration::from_millis(now_ms().saturating_sub(since).max(0) as u64);
            Instant::now() + PARTIAL_AFTER.saturating_sub(waited)
        });
        tokio::select! {
            read = reader.read(&mut buf), if !eof => match read {
                Ok(0) => eof = true,
                Ok(n) => lines.push(&buf[..n], now_ms(), &mut stamped),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => eof = true,
            },
            exit = child.wait(), if status.is_none() => {
                status = Some(exit?);
                linger_until = Some(Instant::now() + LINGER);
            }
            _ = tokio::time::sleep_until(partial_at.unwrap_or_else(Instant::now)),
                if partial_at.is_some() => lines.flush(&mut stamped),
            // Something the app started in the background still holds its
            // output open. Unless the whole group is being stopped: a
            // shell killed by the stop signal (`sh -c` does not always
            // exec its command) leaves the app finishing its work, and the
            // target lasts until it has (the runtime kills the group after
            // the grace period anyway).
            _ = tokio::time::sleep_until(linger_until.unwrap_or_else(Instant::now)),
                if linger_until.is_some() && !eof => {
                if !stopping.load(Ordering::SeqCst) {
                    break;
                }
                linger_until = None;
            }
        }
        if !stamped.is_empty() {
            // A full disk loses lines but must not stop the app.
            let _ = out.write_all(&stamped);
            stamped.clear();
        }
    }
    lines.flush(&mut stamped);
    let _ = out.write_all(&stamped);
    let _ = out.flush();
    match status {
        Some(status) => Ok(status),
        None => child.wait().await,
    }
}

/// Sets a signal the C library keeps to itself (and refuses to `signal`)
/// to its default, with the system call: an all-zero action is SIG_DFL
/// with no flags and an empty mask whatever the architecture's layout.
fn default_internal(number: libc::c_int) {
    // The kernel's signal set: 64 signals, 128 on MIPS.
    #[cfg(any(target_arch = "mips", target_arch = "mips64"))]
    const SIGSET_BYTES: usize = 16;
    #[cfg(not(any(target_arch = "mips", target_arch = "mips64")))]
    const SIGSET_BYTES: usize = 8;
    // Larger than the kernel's `struct sigaction` on every architecture.
    let action = [0u64; 8];
    // SAFETY: the kernel reads at most its `struct sigaction` from
    // `action`, which is larger; no old action is asked for.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            number,
            action.as_ptr(),
            std::ptr::null_mut::<libc::c_void>(),
            SIGSET_BYTES,
        );
    }
}

/// `baton log-stamp [--unset NAME]… -- PROGRAM ARGS…`: runs the program
/// with its output stamped onto this process's standard output, then ends
/// as it ended. Never returns.
pub fn main(command: Vec<OsString>, unset: Vec<OsString>) -> ! {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => fail(&command, &e),
    };
    let result = runtime.block_on(async {
        // The signals a target's group may be sent (stopping, reloading,
        // a terminal's) reach the app directly; the stamper outlives the
        // app to drain its output. Handlers rather than "ignore": exec
        // resets handled signals to their defaults for the app, but would
        // keep ignored ones ignored.
        use tokio::signal::unix::{signal, SignalKind};
        let mut kept = Vec::new();
        for kind in [
            SignalKind::interrupt(),
            SignalKind::hangup(),
            SignalKind::quit(),
            SignalKind::user_defined1(),
            SignalKind::user_defined2(),
            SignalKind::alarm(),
        ] {
            kept.push(signal(kind)?);
        }
        // SIGTERM is how a runtime stops a target (a reload or a
        // terminal's signal is not a stop).
        let mut terminate = signal(SignalKind::terminate())?;
        let stopping = std::sync::Arc::new(AtomicBool::new(false));
        let noticed = std::sync::Arc::clone(&stopping);
        tokio::spawn(async move {
            terminate.recv().await;
            noticed.store(true, Ordering::SeqCst);
        });
        let mut out = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
        run(&command, &unset, &mut out, &stopping).await
    });
    drop(runtime);
    match result {
        Ok(status) => exit_as(status),
        Err(e) => fail(&command, &e),
    }
}

/// Says on the log why the app could not be run, and exits as a shell
/// does for a command it cannot run.
fn fail(command: &[OsString], error: &std::io::Error) -> ! {
    let program = command
        .first()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = writeln!(
        std::io::stdout(),
        "{}[baton] cannot run {program}: {error}",
        stamp(now_ms())
    );
    let code = match error.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    };
    std::process::exit(code)
}

/// Ends this process as `status` says the app ended: the same exit code,
/// or killed by the same signal, so that whoever waits for the target
/// learns how the app ended.
pub fn exit_as(status: ExitStatus) -> ! {
    if let Some(code) = status.code() {
        std::process::exit(code);
    }
    let number = status.signal().unwrap_or(0);
    if let Ok(signal) = nix::sys::signal::Signal::try_from(number) {
        // Killed by SIGSEGV or SIGABRT, the app may have left a core dump;
        // the stamper must not add one of its own.
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain system calls on this process; no memory is shared.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            let _ = nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl);
        }
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(signal);
        let _ = set.thread_unblock();
        let _ = nix::sys::signal::raise(signal);
    }
    // A signal whose default is not to end a process: say it as a shell would.
    std::process::exit(128 + number)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_795_797_037_123; // 2026-11-27T16:30:37.123Z

    fn lines_of(out: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(out)
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_stamp_is_rfc3339_utc_with_milliseconds() {
        assert_eq!(stamp(T), "2026-11-27T16:30:37.123Z ");
        assert_eq!(stamp(0), "1970-01-01T00:00:00.000Z ");
        assert_eq!(stamp(951_782_400_000), "2000-02-29T00:00:00.000Z ");
        assert_eq!(stamp(4_107_542_399_999), "2100-02-28T23:59:59.999Z ");
        for ms in [0, T, 951_782_400_000, 4_107_542_399_999, 1_709_251_199_001] {
            let text = stamp(ms);
            assert_eq!(parse_rfc3339(text.trim_end()), Some(ms), "{text}");
        }
    }

    #[test]
    fn a_stored_line_splits_into_its_stamp_and_text() {
        assert_eq!(
            split("2026-11-27T16:30:37.123Z listening on 127.0.0.1:8000"),
            Some(("2026-11-27T16:30:37.123Z", "listening on 127.0.0.1:8000"))
        );
        assert_eq!(
            split("2026-11-27T16:30:37.123Z "),
            Some(("2026-11-27T16:30:37.123Z", ""))
        );
        for unstamped in [
            "listening on 127.0.0.1:8000",
            "2026-11-27T16:30:37Z listening",
            "2026-11-27T16:30:37.123Zlistening",
            "2026-11-27 16:30:37.123Z listening",
            "2026-11-27T16:30:37.123Z",
            "",
            "é026-11-27T16:30:37.123Z x",
        ] {
            assert_eq!(split(unstamped), None, "{unstamped:?}");
        }
    }

    #[test]
    fn docker_times_become_baton_stamps() {
        assert_eq!(
            parse_rfc3339("2026-11-27T16:30:37.123456789Z"),
            Some(T),
            "fractions beyond milliseconds are dropped"
        );
        assert_eq!(parse_rfc3339("2026-11-27T16:30:37.1Z"), Some(T - 23));
        assert_eq!(parse_rfc3339("2026-11-27T16:30:37Z"), Some(T - 123));
        assert_eq!(parse_rfc3339("2026-11-27T17:30:37.123+01:00"), Some(T));
        assert_eq!(parse_rfc3339("2026-11-27T16:00:37.123-00:30"), Some(T));
        for bad in [
            "2026-11-27",
            "2026-13-27T16:30:37Z",
            "2026-11-27T16:30:37.Z",
            "2026-11-27T16:30:37",
            "2026-11-27T16:30:37Zjunk",
            "hello world",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(
            restamp(b"2026-11-27T16:30:37.123456789Z hello\n"),
            b"2026-11-27T16:30:37.123Z hello\n"
        );
        assert_eq!(
            restamp(b"2026-11-27T16:30:37.123456789Z cut by the engine"),
            b"2026-11-27T16:30:37.123Z cut by the engine\n"
        );
        assert_eq!(restamp(b"no stamp here\n"), b"no stamp here\n");
    }

    #[test]
    fn each_line_is_stamped_with_when_its_first_byte_was_read() {
        let mut lines = Lines::new(MAX_LINE);
        let mut out = Vec::new();
        lines.push(b"one\ntw", T, &mut out);
        assert_eq!(lines_of(&out), ["2026-11-27T16:30:37.123Z one"]);
        assert_eq!(lines.pending_since(), Some(T));
        lines.push(b"o\n\nthree\n", T + 1000, &mut out);
        assert_eq!(
            lines_of(&out),
            [
                "2026-11-27T16:30:37.123Z one",
                "2026-11-27T16:30:37.123Z two",
                "2026-11-27T16:30:38.123Z ",
                "2026-11-27T16:30:38.123Z three",
            ]
        );
        assert_eq!(lines.pending_since(), None);
        let before = out.len();
        lines.flush(&mut out);
        assert_eq!(out.len(), before, "nothing pending, nothing written");
    }

    #[test]
    fn a_partial_line_is_written_when_flushed_and_the_rest_is_a_new_line() {
        let mut lines = Lines::new(MAX_LINE);
        let mut out = Vec::new();
        lines.push(b"Password: ", T, &mut out);
        assert!(out.is_empty());
        lines.flush(&mut out);
        lines.push(b"ok\n", T + 5000, &mut out);
        assert_eq!(
            lines_of(&out),
            [
                "2026-11-27T16:30:37.123Z Password: ",
                "2026-11-27T16:30:42.123Z ok"
            ]
        );
    }

    #[test]
    fn a_long_line_is_cut_into_stamped_pieces_of_bounded_size() {
        let mut lines = Lines::new(10);
        let mut out = Vec::new();
        lines.push(b"0123456789abcdefghij", T, &mut out);
        assert_eq!(lines_of(&out), ["2026-11-27T16:30:37.123Z 0123456789"]);
        // The second piece may yet get its newline: it waits, full.
        assert_eq!(lines.pending_since(), Some(T));
        lines.flush(&mut out);
        assert_eq!(
            lines_of(&out),
            [
                "2026-11-27T16:30:37.123Z 0123456789",
                "2026-11-27T16:30:37.123Z abcdefghij"
            ]
        );
        // Exactly `max` bytes then the newline: one line, no empty one.
        lines.push(b"0123456789\nxy", T, &mut out);
        assert_eq!(lines_of(&out).len(), 3);
        assert!(lines.pending.len() <= 10);

        // A character is never cut in two.
        let mut lines = Lines::new(10);
        let mut out = Vec::new();
        lines.push("12345678é\n".as_bytes(), T, &mut out);
        lines.push("123456789é\n".as_bytes(), T, &mut out);
        let text = String::from_utf8(out).expect("still UTF-8");
        let texts: Vec<&str> = text.lines().map(|l| split(l).unwrap().1).collect();
        assert_eq!(texts, ["12345678é", "123456789", "é"]);

        // Memory stays bounded however long the line.
        let mut lines = Lines::new(MAX_LINE);
        let mut out = Vec::new();
        for _ in 0..100 {
            lines.push(&[b'x'; 10_000], T, &mut out);
            assert!(lines.pending.len() <= MAX_LINE);
        }
        assert_eq!(lines_of(&out).len(), 1_000_000 / MAX_LINE);
    }

    #[test]
    fn utf8_cuts_fall_between_characters() {
        assert_eq!(utf8_cut(b"abc"), 3);
        assert_eq!(utf8_cut("abé".as_bytes()), 4);
        assert_eq!(utf8_cut(&"abé".as_bytes()[..3]), 2);
        assert_eq!(utf8_cut(&"a€".as_bytes()[..3]), 1);
        assert_eq!(utf8_cut(&"a😀".as_bytes()[..4]), 1);
        assert_eq!(utf8_cut(&[0xff, 0xfe]), 2);
        assert_eq!(utf8_cut(&[0xE2, 0x82]), 2, "nothing before it to keep");
    }

    #[tokio::test]
    async fn the_app_runs_with_its_output_stamped_and_its_exit_is_returned() {
        let mut out = Vec::new();
        let started = now_ms();
        let command = [
            "sh",
            "-c",
            "echo out; echo err >&2; printf 'no end'; sleep 1.5; printf ' then end\\n'; \
             printf tail; exit 3",
        ]
        .map(OsString::from);
        let status = run(&command, &[], &mut out, &AtomicBool::new(false))
            .await
            .unwrap();
        assert_eq!(status.code(), Some(3));
        let text = String::from_utf8(out).unwrap();
        let parsed: Vec<(i64, &str)> = text
            .lines()
            .map(|l| {
                let (at, rest) = split(l).unwrap_or_else(|| panic!("unstamped {l:?}"));
                (parse_rfc3339(at).unwrap(), rest)
            })
            .collect();
        let texts: Vec<&str> = parsed.iter().map(|(_, t)| *t).collect();
        assert_eq!(
            texts,
            ["out", "err", "no end", " then end", "tail"],
            "{text}"
        );
        for (at, _) in &parsed {
            assert!(*at >= started - 5 && *at <= now_ms() + 5, "{text}");
        }
        // The partial line went out before the rest of it arrived.
        assert!(parsed[3].0 - parsed[2].0 >= 1000, "{text}");
    }

    #[tokio::test]
    async fn variables_for_the_stamper_alone_do_not_reach_the_app() {
        let mut out = Vec::new();
        let command = ["sh", "-c", "echo ${HOME:-none} ${PATH:+path}"].map(OsString::from);
        let status = run(
            &command,
            &[OsString::from("HOME")],
            &mut out,
            &AtomicBool::new(false),
        )
        .await
        .unwrap();
        assert!(status.success());
        assert!(String::from_utf8(out).unwrap().ends_with("Z none path\n"));
    }

    #[tokio::test]
    async fn an_app_killed_by_a_signal_is_reported_so() {
        let mut out = Vec::new();
        let command = ["sh", "-c", "echo bye; kill -USR1 $$"].map(OsString::from);
        let status = run(&command, &[], &mut out, &AtomicBool::new(false))
            .await
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGUSR1));
        assert!(String::from_utf8(out).unwrap().ends_with("Z bye\n"));
    }

    #[tokio::test]
    async fn an_app_that_leaves_a_process_holding_its_output_is_still_seen_to_exit() {
        let mut out = Vec::new();
        let started = std::time::Instant::now();
        let command = ["sh", "-c", "sleep 5 & echo started; exit 0"].map(OsString::from);
        let status = run(&command, &[], &mut out, &AtomicBool::new(false))
            .await
            .unwrap();
        assert_eq!(status.code(), Some(0));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(String::from_utf8(out).unwrap().ends_with("Z started\n"));
    }
}
