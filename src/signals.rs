//! SIGINT, SIGTERM and SIGHUP during a load: the statement running on the server is
//! cancelled (from a watcher thread, on a connection of its own), the load's own thread sees
//! the flag, rolls back, records `interrupted` and exits 130 through `cli::main`. Once the
//! load's outcome is known and said, a signal cancels what runs after it (ANALYZE), on the
//! load's backend and on the one other backend working for it, and the load's thread stops
//! that work and says what it left undone.
//!
//! SIGINT is caught even when the process started with it ignored: bash starts a script's
//! background jobs (`pg-load … &`) that way, and such a job must still stop on `kill -INT`.
//! SIGHUP inherited as ignored (`nohup`) stays ignored.

use crate::error::Error;
use crate::pg::Target;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

static RECEIVED: AtomicI32 = AtomicI32::new(0);
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// Set once COMMIT is on its way: a signal then cancels nothing and leaves the outcome to the
/// load's thread, which alone can learn it.
static COMMIT_SENT: AtomicBool = AtomicBool::new(false);
/// Set once the load's outcome is known and said (see [`after_commit`]).
static AFTER_COMMIT: AtomicBool = AtomicBool::new(false);
/// Another backend working for the load after its commit (ANALYZE's second connection); 0: none.
static ALSO_CANCEL: AtomicI32 = AtomicI32::new(0);

/// If the load's thread has not ended this long after a signal (it may be blocked reading a
/// producer that writes nothing), the watcher ends the process itself.
pub const GRACE: Duration = Duration::from_secs(10);

extern "C" fn on_signal(sig: libc::c_int) {
    RECEIVED.store(sig, Ordering::SeqCst);
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = [sig as u8];
        // SAFETY: write(2) is async-signal-safe; the buffer lives for the call.
        unsafe {
            libc::write(fd, b.as_ptr().cast(), 1);
        }
    }
}

/// The signal that came, if one did.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// `Err(Interrupted)` once a signal came: for loops between rows.
pub fn check() -> crate::Result<()> {
    match received() {
        None => Ok(()),
        Some(s) => Err(interrupted(s)),
    }
}

/// The error a load interrupted by `sig` ends with (COMMIT was not sent).
pub fn interrupted(sig: i32) -> Error {
    Error::Interrupted(format!(
        "interrupted by {}: the load was cancelled on the server and rolled back; nothing was committed",
        name(sig)
    ))
}

/// Whether COMMIT was sent (see `COMMIT_SENT`).
pub fn commit_was_sent() -> bool {
    COMMIT_SENT.load(Ordering::SeqCst)
}

/// Called just before COMMIT is sent (see `COMMIT_SENT`).
pub fn commit_sent() {
    COMMIT_SENT.store(true, Ordering::SeqCst);
}

/// The load's outcome is known and said: from now on a signal cancels the statements of the
/// work after it (ANALYZE), which the load's thread then stops. Check [`received`] after
/// calling it: a signal that came before is the watcher's no more.
pub fn after_commit() {
    AFTER_COMMIT.store(true, Ordering::SeqCst);
}

/// Backend `pid` works for the load after its commit (0: no longer): a signal cancels its
/// statement too. Check [`received`] after calling it, as for [`after_commit`].
pub fn also_cancel(pid: i32) {
    ALSO_CANCEL.store(pid, Ordering::SeqCst);
}

/// Ends the process by `sig` itself, its default action restored: what a shell expects of a
/// program a signal interrupted (a script then stops too, where an exit 0 would let it go on
/// to its next command). For a load that committed and has said so.
pub fn end_by(sig: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stderr().flush();
    // SAFETY: restoring a default disposition and raising a signal at ourselves.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    std::process::exit(128 + sig)
}

/// `pg_cancel_backend` of each of `pids` (0s skipped), on a new connection to `target`.
fn cancel(target: &Target, pids: &[i32]) {
    if let Ok(mut c) = target.connect() {
        for &pid in pids.iter().filter(|&&p| p != 0) {
            let _ = c.execute("SELECT pg_cancel_backend($1)", &[&pid]);
        }
    }
}

fn install_one(sig: libc::c_int, keep_ignored: bool) {
    // SAFETY: sigaction with a handler that only stores an atomic and calls write(2).
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old);
        if keep_ignored && old.sa_sigaction == libc::SIG_IGN {
            return;
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

static PIPE_READ: AtomicI32 = AtomicI32::new(-1);

/// Catches the three signals from now on (a signal before [`watch`] is kept and acted on
/// when it starts). Call it first thing.
pub fn install() {
    if PIPE_READ.load(Ordering::SeqCst) >= 0 {
        return;
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe(2) fills two fds.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return;
    }
    PIPE_READ.store(fds[0], Ordering::SeqCst);
    PIPE_WRITE.store(fds[1], Ordering::SeqCst);
    install_one(libc::SIGINT, false);
    install_one(libc::SIGTERM, false);
    install_one(libc::SIGHUP, true);
}

/// Starts the watcher (installing the handlers if [`install`] was not called): on a signal, the query that backend
/// `pid` runs is cancelled (`pg_cancel_backend`, on a new connection to `target`); if the
/// process is still there after [`GRACE`] and COMMIT was not sent, it prints one line and
/// exits 130 (the server rolls back the cancelled transaction when the connection closes,
/// and the next run resolves the run log's row from the server).
pub fn watch(tool: &'static str, target: &Target, pid: i32) {
    install();
    let fd = PIPE_READ.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let target = target.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a live buffer.
        loop {
            let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
            if n == 1 {
                break;
            }
            if n == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return;
            }
        }
        let sig = received().unwrap_or(libc::SIGTERM);
        // After the commit: the load's thread stops its work and says what is left undone.
        if AFTER_COMMIT.load(Ordering::SeqCst) {
            return cancel(&target, &[pid, ALSO_CANCEL.load(Ordering::SeqCst)]);
        }
        if COMMIT_SENT.load(Ordering::SeqCst) {
            return;
        }
        cancel(&target, &[pid]);
        std::thread::sleep(GRACE);
        if COMMIT_SENT.load(Ordering::SeqCst) {
            return;
        }
        eprintln!(
            "{tool}: interrupted by {}: the load was cancelled on the server (its transaction rolls back as the connection closes); nothing was committed",
            name(sig)
        );
        std::process::exit(130);
    });
}
