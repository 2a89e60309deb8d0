//! `restore`: check the backup (decompressing it beside the target), refuse while another
//! process has the target open, keep the current database (with its -wal and -shm) aside,
//! rename the verified copy into place, and compare the result's content digest with the manifest's.

use crate::check;
use crate::files::show;
use pgferry::digest;
use pgferry::timefmt;
use pgferry::{Error, Result};
use serde_json::{json, Map, Value};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub struct Options {
    pub backup: String,
    pub to: PathBuf,
    pub force: bool,
}

pub struct Restored {
    pub check: check::Report,
    /// Where the previous database was kept, if there was one.
    pub previous: Option<PathBuf>,
    pub summary: Map<String, Value>,
    pub content_ok: bool,
}

/// What `restore` did, or why it refused.
pub enum Outcome {
    Refused(check::Report),
    Done(Restored),
}

/// The files SQLite keeps beside a database.
const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

fn side(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn restore(o: &Options, tool: &str) -> Result<Outcome> {
    // A symlinked database is replaced where it really lives.
    let target = &match std::fs::canonicalize(&o.to) {
        Ok(real) if o.to.exists() => real,
        _ => o.to.clone(),
    };
    if target.is_dir() {
        return Err(Error::Usage(format!(
            "restore to '{}': is a directory; give the database file's path",
            show(target)
        )));
    }
    if target.exists() && !target.is_file() {
        // A FIFO or device: not a database to keep aside (and opening a FIFO would block).
        return Err(Error::Usage(format!(
            "restore to '{}': is a FIFO, socket or device, not a database file",
            show(target)
        )));
    }
    let dir = pgferry::files::parent_dir(target);
    if !dir.is_dir() {
        return Err(Error::NoInput(format!(
            "restore to '{}': directory '{}' does not exist",
            show(target),
            show(&dir)
        )));
    }
    refuse_if_open(target, o.force, tool)?;

    let report = check::verify(&o.backup, Some(&dir), true)?;
    if !report.ok() {
        return Ok(Outcome::Refused(report));
    }
    let m = report.manifest.clone().expect("a passing check has its manifest");
    let expected = m.get("content_sha256").and_then(Value::as_str).map(str::to_string);
    // The application may have started while we checked.
    refuse_if_open(target, o.force, tool)?;

    let mut report = report;
    let tmp = report.database.take().expect("a passing check has its database");
    let previous = if target.exists() {
        let meta = std::fs::metadata(target).map_err(|e| Error::io(format!("stat '{}'", show(target)), e))?;
        adopt_owner_and_mode(tmp.path(), &meta, tool);
        Some(keep_aside(target)?)
    } else {
        // A -wal (or -journal) left without its database would be replayed onto the restored
        // one by the next open: keep it aside too.
        if SIDECARS.iter().any(|s| side(target, s).exists()) {
            let aside = keep_aside(target)?;
            pgferry::warn!(
                tool,
                "'{}' had a -wal, -shm or -journal but no database; kept them aside as '{}-*' so that \
                 they cannot be replayed onto the restored database",
                show(target),
                show(&aside)
            );
        }
        None
    };
    // The -wal and -shm are gone (kept aside with the old file), so nothing of the old
    // database can be replayed onto the new one; this rename is the switch.
    if let Err(e) = std::fs::rename(tmp.path(), target) {
        // Give the current database its -wal and -shm back: it must stay as it was.
        if let Some(aside) = &previous {
            for suffix in SIDECARS {
                let kept = side(aside, suffix);
                if kept.exists() {
                    let _ = std::fs::hard_link(&kept, side(target, suffix));
                }
            }
        }
        return Err(Error::io(format!("rename into '{}'", show(target)), e));
    }
    tmp.keep();
    pgferry::files::fsync_dir(&dir)?;

    // The result's content, read back from the target path, must be the backup's.
    let actual = content_of(target)?;
    let content_ok = Some(&actual.sha256) == expected.as_ref();
    let mut summary = Map::new();
    summary.insert("restored".into(), show(target).into());
    summary.insert("from".into(), report.base.clone().into());
    summary.insert("previous".into(), previous.as_ref().map(|p| Value::from(show(p))).unwrap_or(Value::Null));
    summary.insert("content_sha256".into(), actual.sha256.clone().into());
    summary.insert("expected_content_sha256".into(), json!(expected));
    summary.insert("ok".into(), content_ok.into());
    summary.insert("tables".into(), actual.tables.len().into());
    summary.insert("rows".into(), actual.tables.iter().map(|t| t.1).sum::<u64>().into());
    Ok(Outcome::Done(Restored { check: report, previous, summary, content_ok }))
}

fn content_of(target: &Path) -> Result<digest::ContentDigest> {
    use rusqlite::OpenFlags;
    // Read-write (without create) so a WAL-mode file opens like the application opens it;
    // query_only makes sure we write nothing.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let what = format!("read back '{}'", show(target));
    let c =
        rusqlite::Connection::open_with_flags(target, flags).map_err(|e| pgferry::sqlite::sqlite_error(&what, e))?;
    c.execute_batch("PRAGMA query_only = 1").map_err(|e| pgferry::sqlite::sqlite_error(&what, e))?;
    pgferry::sqlite::begin_snapshot(&c)?;
    digest::content_digest(&c)
}

/// Gives the new file the old one's permission bits and, when we may, its owner: the
/// application that opens it must still be able to.
fn adopt_owner_and_mode(new: &Path, old: &std::fs::Metadata, tool: &str) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(new, std::fs::Permissions::from_mode(old.mode() & 0o7777));
    let me = std::fs::metadata(new);
    if let Ok(me) = me {
        if me.uid() != old.uid() || me.gid() != old.gid() {
            if let Err(e) = std::os::unix::fs::chown(new, Some(old.uid()), Some(old.gid())) {
                pgferry::note!(
                    tool,
                    "warning: could not give '{}' the previous owner {}:{} ({}); check that the application can open it",
                    show(new),
                    old.uid(),
                    old.gid(),
                    pgferry::error::io_cause(&e)
                );
            }
        }
    }
}

/// Moves DB, DB-wal and DB-shm to `DB.before-restore-TIMESTAMP` (and its -wal, -shm): the
/// kept copy is a complete database, openable and restorable as it is.
fn keep_aside(target: &Path) -> Result<PathBuf> {
    let ts: String = timefmt::format_rfc3339_micros(timefmt::now_micros() / 1_000_000 * 1_000_000)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut aside = side(target, &format!(".before-restore-{ts}"));
    let mut n = 2;
    while aside.exists() || side(&aside, "-wal").exists() {
        aside = side(target, &format!(".before-restore-{ts}-{n}"));
        n += 1;
    }
    // Keep the database file first (a hard link: the target path still works meanwhile),
    // then move its WAL and shared memory, then drop the old name of the database.
    let link_or_rename = |from: &Path, to: &Path| -> Result<()> {
        std::fs::hard_link(from, to)
            .and_then(|_| std::fs::remove_file(from))
            .or_else(|_| std::fs::rename(from, to))
            .map_err(|e| Error::io(format!("keep '{}' as '{}'", show(from), show(to)), e))
    };
    if target.exists() {
        std::fs::hard_link(target, &aside)
            .or_else(|_| std::fs::rename(target, &aside))
            .map_err(|e| Error::io(format!("keep '{}' as '{}'", show(target), show(&aside)), e))?;
    }
    for suffix in SIDECARS {
        let from = side(target, suffix);
        if from.exists() {
            link_or_rename(&from, &side(&aside, suffix))?;
        }
    }
    // The old name (when linked) is replaced by the rename that follows.
    pgferry::files::fsync_dir(&pgferry::files::parent_dir(target))?;
    Ok(aside)
}

/// Who has `path` (or its -wal/-shm) open: processes holding SQLite's POSIX locks on it
/// (an open WAL-mode connection always does; a rollback-mode one while in a transaction),
/// and processes with the file open as seen in /proc (those we are allowed to see).
pub fn holders(path: &Path) -> Vec<String> {
    let mut found: Vec<(i32, &'static str)> = vec![];
    for p in [path.to_path_buf(), side(path, "-shm"), side(path, "-wal")] {
        if let Some(pid) = lock_holder(&p) {
            found.push((pid, "holds a SQLite lock"));
        }
    }
    let me = std::process::id() as i32;
    let wanted: Vec<PathBuf> = [path.to_path_buf(), side(path, "-wal"), side(path, "-shm")]
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
            if pid == me {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
            if fds.flatten().any(|fd| std::fs::read_link(fd.path()).map(|l| wanted.contains(&l)).unwrap_or(false)) {
                found.push((pid, "has it open"));
            }
        }
    }
    found.sort();
    found.dedup_by_key(|f| f.0);
    found
        .into_iter()
        .map(|(pid, how)| {
            let comm =
                std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim().to_string()).unwrap_or_default();
            if comm.is_empty() {
                format!("pid {pid} {how}")
            } else {
                format!("pid {pid} ({comm}) {how}")
            }
        })
        .collect()
}

/// The pid of a process holding any POSIX lock on `path` that would conflict with a write
/// lock (fcntl F_GETLK), or None. Opening and closing the file changes nothing.
fn lock_holder(path: &Path) -> Option<i32> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::File::open(path).ok()?;
    // SAFETY: F_GETLK only reads and fills the flock struct we own.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = 0;
    fl.l_len = 0; // to the end of the file and beyond (SQLite locks bytes past 1 GiB)
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    if rc == 0 && fl.l_type as i32 != libc::F_UNLCK {
        Some(fl.l_pid)
    } else {
        None
    }
}

fn refuse_if_open(target: &Path, force: bool, tool: &str) -> Result<()> {
    if !target.exists() {
        return Ok(());
    }
    let who = holders(target);
    if who.is_empty() {
        return Ok(());
    }
    let t = show(target);
    if force {
        pgferry::warn!(tool, "'{t}' is in use ({}); restoring anyway (--force)", who.join(", "));
        return Ok(());
    }
    Err(Error::TempFail(format!(
        "restore to '{t}': the database is in use ({}); stop the application first (see `fuser -v {t}` or \
         `lsof {t}`), or pass --force; nothing was changed",
        who.join(", ")
    )))
}
