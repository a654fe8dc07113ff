//! How the CLI talks to people: colour only on a terminal (and never with
//! NO_COLOR), ages and sizes in human units, simple aligned tables.

use std::io::IsTerminal;

use baton_store::now_ms;

fn colour(stream_is_tty: bool) -> bool {
    stream_is_tty && std::env::var_os("NO_COLOR").is_none()
}

pub fn paint(code: &str, text: &str) -> String {
    if colour(std::io::stdout().is_terminal()) {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

pub fn green(text: &str) -> String {
    paint("32", text)
}

pub fn red(text: &str) -> String {
    paint("31", text)
}

pub fn dim(text: &str) -> String {
    paint("2", text)
}

pub fn bold(text: &str) -> String {
    paint("1", text)
}

pub fn error(message: &str) {
    let prefix = if colour(std::io::stderr().is_terminal()) {
        "\x1b[1;31merror\x1b[0m"
    } else {
        "error"
    };
    eprintln!("{prefix}: {message}");
}

pub fn ago(ms: i64) -> String {
    let seconds = ((now_ms() - ms) / 1000).max(0);
    match seconds {
        0..=59 => format!("{seconds}s ago"),
        60..=3599 => format!("{}m ago", seconds / 60),
        3600..=86399 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

pub fn millis(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.2} s", ms as f64 / 1000.0)
    }
}

/// `n` and the noun, plural unless one: "1 migration", "2 warnings".
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

pub fn size(bytes: i64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

/// Prints rows as aligned columns, the first row being the header.
pub fn table(rows: &[Vec<String>]) {
    let Some(first) = rows.first() else { return };
    let widths: Vec<usize> = (0..first.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map(|c| visible_len(c)).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (n, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let cell = if n == 0 { bold(cell) } else { cell.clone() };
            line.push_str(&cell);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(widths[i] - visible_len(&cell) + 2));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// Length without ANSI colour codes.
fn visible_len(text: &str) -> usize {
    let mut len = 0;
    let mut escape = false;
    for c in text.chars() {
        match (escape, c) {
            (false, '\x1b') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, _) => len += 1,
        }
    }
    len
}

/// Says on a terminal's stderr that something is still going on (`… what
/// 3s`), once a second, until dropped; says nothing when stderr is not a
/// terminal or the work ends within a second.
pub struct Progress {
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Progress {
    pub fn start(what: &str) -> Progress {
        let (done, mut stop) = tokio::sync::oneshot::channel::<()>();
        if !std::io::stderr().is_terminal() {
            return Progress { done: None };
        }
        let what = what.to_string();
        tokio::spawn(async move {
            use std::io::Write;
            let started = std::time::Instant::now();
            let mut shown = false;
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                        eprint!("\r\x1b[K  … {what} {}s", started.elapsed().as_secs());
                        let _ = std::io::stderr().flush();
                        shown = true;
                    }
                }
            }
            if shown {
                eprint!("\r\x1b[K");
            }
        });
        Progress { done: Some(done) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(millis(12), "12 ms");
        assert_eq!(millis(1234), "1.23 s");
        assert_eq!(size(10), "10 B");
        assert_eq!(size(2048), "2.0 KiB");
        assert_eq!(visible_len("\x1b[32mok\x1b[0m"), 2);
        assert_eq!(ago(now_ms() - 5_000), "5s ago");
        assert_eq!(ago(now_ms() - 600_000), "10m ago");
    }

    #[test]
    fn one_of_a_thing_is_singular() {
        assert_eq!(count(1, "migration"), "1 migration");
        assert_eq!(count(0, "warning"), "0 warnings");
        assert_eq!(count(2, "error"), "2 errors");
    }
}
