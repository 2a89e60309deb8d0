//! Progress of a long operation on the terminal, and `--quiet`.
//!
//! One line on stderr, redrawn in place (`\r` + clear to end of line) at most about four times a
//! second: what is being done, how much (rows, documents or bytes), the rate, and with a known
//! total the share done and an ETA. When the operation ends the line is cleared (the tool's own
//! summary follows) or replaced by a final line. Nothing is drawn when stderr is not a terminal
//! or with `--quiet`, so logs and pipes see only the usual lines.
//!
//! Cost on the hot path: [`Progress::update`] is one integer compare; the clock is read only
//! every `stride` units, a stride that adapts so the clock is read about 20 times a second.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static QUIET: AtomicBool = AtomicBool::new(false);

/// `--quiet`: no progress, no informational notes (errors and warnings stay).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Whether progress may be drawn at all: stderr is a terminal and the run is not quiet.
pub fn terminal() -> bool {
    !quiet() && std::io::stderr().is_terminal()
}

/// Whether a producer (a tool whose data goes to stdout) may draw: as [`terminal`], and its
/// stdout is neither the terminal (the progress line would land between the rows) nor a pipe.
/// In `sqlite-dump … | pg-load …` both stderrs are the same terminal: the consumer draws, so
/// the two lines do not overwrite each other.
pub fn terminal_for_producer() -> bool {
    terminal() && !std::io::stdout().is_terminal() && !stdout_is_pipe()
}

fn stdout_is_pipe() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() else { return false };
    std::fs::File::from(fd).metadata().map(|m| m.file_type().is_fifo()).unwrap_or(false)
}

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Whole things, named by the word: "rows", "documents".
    Count(&'static str),
    Bytes,
}

/// Redraws at most this often, and waits this long before the first draw unless
/// `PGFERRY_PROGRESS_DELAY` says otherwise.
const DRAW_EVERY: Duration = Duration::from_millis(250);
/// Seconds before the first draw (like git's `GIT_PROGRESS_DELAY`), so that an operation that
/// ends at once shows nothing.
const DELAY_VAR: &str = "PGFERRY_PROGRESS_DELAY";
/// The clock is read about this often (the stride adapts to the rate).
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// One operation's progress line. Dropping it clears the line (an error then prints on a
/// clean line).
pub struct Progress {
    /// The next count at which to read the clock; `u64::MAX` when silent.
    next: u64,
    live: Option<Box<Live>>,
}

struct Live {
    tool: &'static str,
    label: String,
    unit: Unit,
    total: Option<u64>,
    started: Instant,
    last_check: Instant,
    last_draw: Option<Instant>,
    first_after: Duration,
    stride: u64,
    /// The line on screen, if any (its width, for terminals without clear-to-end-of-line).
    shown: Option<usize>,
    dumb: bool,
}

impl Progress {
    /// Progress of `label` (a table, a file) in `unit`, drawn when `draw` (see [`terminal`]
    /// and [`terminal_for_producer`]). `total`: how many units there will be, if known.
    pub fn new(tool: &'static str, label: impl Into<String>, unit: Unit, total: Option<u64>, draw: bool) -> Progress {
        if !draw {
            return Progress::silent();
        }
        let now = Instant::now();
        Progress {
            next: 1,
            live: Some(Box::new(Live {
                tool,
                label: label.into(),
                unit,
                total,
                started: now,
                last_check: now,
                last_draw: None,
                first_after: first_draw_delay(tool),
                stride: 1,
                shown: None,
                dumb: std::env::var_os("TERM").is_some_and(|t| t == "dumb"),
            })),
        }
    }

    /// Progress that is never drawn.
    pub fn silent() -> Progress {
        Progress { next: u64::MAX, live: None }
    }

    pub fn is_drawn(&self) -> bool {
        self.live.is_some()
    }

    /// `done` units so far (monotonic). One compare unless the clock is due.
    #[inline]
    pub fn update(&mut self, done: u64) {
        if done >= self.next {
            self.check(done);
        }
    }

    #[cold]
    #[inline(never)]
    fn check(&mut self, done: u64) {
        let Some(live) = self.live.as_mut() else { return };
        let now = Instant::now();
        // Aim for a clock read about every CHECK_EVERY whatever the rate.
        let since = now - live.last_check;
        if since < CHECK_EVERY / 2 {
            live.stride = (live.stride * 2).min(1 << 20);
        } else if since > CHECK_EVERY * 2 {
            live.stride = (live.stride / 2).max(1);
        }
        live.last_check = now;
        self.next = done.saturating_add(live.stride);
        // The first draw waits too: an operation that ends at once shows nothing.
        let due = match live.last_draw {
            None => now - live.started >= live.first_after,
            Some(t) => now - t >= DRAW_EVERY,
        };
        if due {
            live.last_draw = Some(now);
            let text = line(&live.label, live.unit, done, live.total, now - live.started);
            live.draw(&text);
        }
    }

    /// Clears the line, e.g. before a note is printed mid-operation; the next update redraws.
    pub fn clear(&mut self) {
        if let Some(live) = self.live.as_mut() {
            live.erase();
        }
    }

    /// Ends the operation with a final line (`done` units, elapsed time, rate), where it was drawn.
    pub fn finish(mut self, done: u64) {
        if let Some(live) = self.live.as_mut() {
            if live.shown.is_some() {
                let text = final_line(&live.label, live.unit, done, live.started.elapsed());
                live.draw(&text);
                eprintln!();
                live.shown = None;
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Live {
    fn draw(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        let full = format!("{}: {text}", self.tool);
        let _ = if self.dumb {
            let pad = self.shown.unwrap_or(0).saturating_sub(full.chars().count());
            write!(err, "\r{full}{:pad$}", "")
        } else {
            write!(err, "\r{full}\x1b[K")
        };
        let _ = err.flush();
        self.shown = Some(full.chars().count());
    }

    fn erase(&mut self) {
        if let Some(width) = self.shown.take() {
            let mut err = std::io::stderr().lock();
            let _ = if self.dumb { write!(err, "\r{:width$}\r", "") } else { write!(err, "\r\x1b[K") };
            let _ = err.flush();
        }
    }
}

/// The wait before the first draw: `PGFERRY_PROGRESS_DELAY` seconds (fractions allowed), or
/// DRAW_EVERY. A value that is not a number of seconds is said once and the default kept.
fn first_draw_delay(tool: &str) -> Duration {
    static DELAY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| read_delay(tool))
}

fn read_delay(tool: &str) -> Duration {
    let Some(raw) = std::env::var_os(DELAY_VAR) else { return DRAW_EVERY };
    let text = raw.to_string_lossy();
    // Set but empty is unset, as for the other variables the tools read.
    if text.is_empty() {
        return DRAW_EVERY;
    }
    match parse_delay(&text) {
        Some(d) => d,
        None => {
            crate::warn!(tool, "{DELAY_VAR}={text:?} is not a number of seconds; waiting 0.25 s before progress");
            DRAW_EVERY
        }
    }
}

fn parse_delay(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().parse().ok()?;
    (0.0..=86_400.0).contains(&secs).then(|| Duration::from_secs_f64(secs))
}

/// The progress line (after the tool's name): `orders: 1,200,000 / 5,000,000 rows (24%),
/// 250,000 rows/s, ETA 0:15`.
pub fn line(label: &str, unit: Unit, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = done as f64 / secs;
    let mut s = format!("{label}: {}", amount(unit, done));
    if let Some(total) = total.filter(|t| *t > 0) {
        // A total that turns out low (rows added since it was taken) shows no share or ETA.
        if done <= total {
            s = format!("{label}: {} / {} ({}%)", number(unit, done), amount(unit, total), done * 100 / total);
        }
    }
    s.push_str(&format!(", {}", per_second(unit, rate)));
    if let Some(total) = total.filter(|t| done <= *t && *t > 0) {
        if rate > 0.0 {
            s.push_str(&format!(", ETA {}", clock((total - done) as f64 / rate)));
        }
    }
    s
}

/// The line left when the operation ends: `orders: 5,000,000 rows in 20.1 s, 248,756 rows/s`.
pub fn final_line(label: &str, unit: Unit, done: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    format!("{label}: {} in {secs:.1} s, {}", amount(unit, done), per_second(unit, done as f64 / secs.max(1e-3)))
}

/// The amount without its word: "1,200,000", "1.5 GB".
fn number(unit: Unit, n: u64) -> String {
    match unit {
        Unit::Count(_) => grouped(n),
        Unit::Bytes => bytes(n),
    }
}

fn amount(unit: Unit, n: u64) -> String {
    match unit {
        Unit::Count(word) => format!("{} {word}", grouped(n)),
        Unit::Bytes => bytes(n),
    }
}

fn per_second(unit: Unit, rate: f64) -> String {
    match unit {
        Unit::Count(word) => format!("{} {word}/s", grouped(rate.round() as u64)),
        Unit::Bytes => format!("{}/s", bytes(rate.round() as u64)),
    }
}

/// 1234567 → "1,234,567".
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in decimal units: "512 B", "1.5 MB" (as `ls -h --si` and the backup manifests say).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds as "0:07", "12:34" or "1:02:03".
fn clock(secs: f64) -> String {
    let s = secs.round().min(1e9) as u64;
    match s / 3600 {
        0 => format!("{}:{:02}", s / 60, s % 60),
        h => format!("{h}:{:02}:{:02}", s / 60 % 60, s % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_is_seconds_and_nothing_else() {
        assert_eq!(parse_delay("0"), Some(Duration::ZERO));
        assert_eq!(parse_delay(" 1.5 "), Some(Duration::from_millis(1500)));
        for bad in ["", "-1", "soon", "NaN", "inf", "1e9", "2s"] {
            assert_eq!(parse_delay(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lines_say_how_much_how_fast_and_how_long() {
        let rows = Unit::Count("rows");
        assert_eq!(
            line("orders", rows, 1_200_000, None, Duration::from_secs(4)),
            "orders: 1,200,000 rows, 300,000 rows/s"
        );
        assert_eq!(
            line("orders", rows, 1_200_000, Some(5_000_000), Duration::from_secs(4)),
            "orders: 1,200,000 / 5,000,000 rows (24%), 300,000 rows/s, ETA 0:13"
        );
        // A total exceeded shows no share and no ETA rather than a wrong one.
        assert_eq!(line("t", rows, 12, Some(10), Duration::from_secs(1)), "t: 12 rows, 12 rows/s");
        assert_eq!(
            line("app.db", Unit::Bytes, 1_500_000_000, Some(4_000_000_000), Duration::from_secs(10)),
            "app.db: 1.5 GB / 4.0 GB (37%), 150.0 MB/s, ETA 0:17"
        );
        assert_eq!(
            final_line("orders", rows, 5_000_000, Duration::from_millis(20_100)),
            "orders: 5,000,000 rows in 20.1 s, 248,756 rows/s"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(12_345_678), "12,345,678");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1_500_000), "1.5 MB");
        assert_eq!(clock(7.0), "0:07");
        assert_eq!(clock(754.0), "12:34");
        assert_eq!(clock(3723.0), "1:02:03");
    }

    #[test]
    fn silent_progress_costs_a_compare_and_never_draws() {
        let mut p = Progress::new("t", "x", Unit::Count("rows"), None, false);
        for i in 0..10_000 {
            p.update(i);
        }
        assert!(!p.is_drawn());
        assert_eq!(p.next, u64::MAX);
    }

    #[test]
    fn the_clock_is_read_less_often_as_rows_come_faster() {
        let mut p = Progress::new("t", "x", Unit::Count("rows"), None, true);
        for i in 0..1_000_000 {
            p.update(i);
        }
        let stride = p.live.as_ref().unwrap().stride;
        assert!(stride >= 1024, "stride {stride}");
        // Within DRAW_EVERY of the start nothing was drawn.
        assert!(p.live.as_ref().unwrap().shown.is_none());
    }
}
