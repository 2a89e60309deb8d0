//! backup-verify's own file helpers: owner-only directories, temp files that clean up after
//! themselves, immutable SQLite opens, sizes, interrupts (the shared ones are `pgferry::files`).

use pgferry::{Error, Result};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub fn show(p: &Path) -> String {
    p.display().to_string()
}

/// Creates `dir` (and missing parents) owner-only (0700) if it does not exist yet.
pub fn make_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Error::io(format!("create directory '{}'", show(dir)), e))
}

/// The default backup name stem of a source path: its file stem without leading dots (a
/// backup named `.app-…` would be hidden from `list` and rotation, like our scratch files).
pub fn default_stem(source: &Path, fallback: &str) -> String {
    let stem = source.file_stem().map(|s| s.to_string_lossy().trim_start_matches('.').to_string()).unwrap_or_default();
    if stem.is_empty() {
        fallback.to_string()
    } else {
        stem
    }
}

/// Opens a backup's file for reading, refusing (65) anything but a regular file: a FIFO would
/// block the open forever and a device (a symlink to /dev/zero) would never end.
pub fn open_regular(path: &Path, kind: &str) -> Result<std::fs::File> {
    let what = |e| Error::io(format!("read {kind} '{}'", show(path)), e);
    let meta = std::fs::metadata(path).map_err(what)?;
    if !meta.is_file() {
        return Err(Error::Data(format!(
            "read {kind} '{}': not a regular file (a directory, device or FIFO); refusing to read it",
            show(path)
        )));
    }
    std::fs::File::open(path).map_err(what)
}

/// A file removed when dropped, unless `keep` was called.
pub struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    pub fn new(path: PathBuf) -> TempPath {
        TempPath { path, keep: false }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Stops the removal and hands the path over.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
            // A SQLite connection on the file may have left these behind.
            for suffix in ["-wal", "-shm", "-journal"] {
                let mut side = self.path.clone().into_os_string();
                side.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(side));
            }
        }
    }
}

/// Opens a SQLite file that nothing else touches (our own snapshot or decompressed copy)
/// read-only and immutable: no -wal or -shm is created beside it, whatever its journal mode.
pub fn open_immutable(path: &Path) -> Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let mut escaped = String::new();
    for c in show(path).chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '?' => escaped.push_str("%3f"),
            '#' => escaped.push_str("%23"),
            _ => escaped.push(c),
        }
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    rusqlite::Connection::open_with_flags(format!("file:{escaped}?mode=ro&immutable=1"), flags)
        .map_err(|e| pgferry::sqlite::sqlite_error(format!("open '{}'", show(path)), e))
}

/// "1.2 GB", "340 kB": sizes for the human summaries.
pub fn human_bytes(n: u64) -> String {
    pgferry::progress::bytes(n)
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
    // A second Ctrl-C ends the process the usual way.
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// SIGINT and SIGTERM set a flag that the long loops and SQLite's progress handler watch, so
/// the run stops and its temporary files (a snapshot may be gigabytes) are removed.
pub fn catch_interrupts() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: installing a handler that only stores to an atomic and resets itself.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// `Err(Interrupted)` once a signal came.
pub fn check_interrupt(what: &str) -> Result<()> {
    if interrupted() {
        return Err(Error::Interrupted(format!("{what}: interrupted; temporary files removed, nothing else changed")));
    }
    Ok(())
}

/// Makes long SQLite statements on `c` (integrity_check, the digest) stop on a signal, for as
/// long as the returned guard lives: a watcher thread calls `sqlite3_interrupt`.
pub fn interruptible(c: &rusqlite::Connection) -> Watcher {
    let handle = c.get_interrupt_handle();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        while !d.load(std::sync::atomic::Ordering::SeqCst) {
            if interrupted() {
                handle.interrupt();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
    Watcher(done)
}

pub struct Watcher(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
