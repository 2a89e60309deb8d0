//! A load whose connection stalls (a proxy, a NAT or a half-dead link that neither delivers
//! nor closes) must end, release the table's lock, and say so. The kernel ends connections
//! whose data goes unacknowledged (`tcp_user_timeout`) or whose peer stopped answering
//! keepalives; this watcher ends the rest: a connection alive at the TCP level that carries
//! nothing.
//!
//! A stall is told from a slow producer or a long statement by asking the server, on a
//! connection of its own: when pg-load has neither read its input nor heard from the server
//! for the whole timeout, and the server says the load's session is waiting for the client
//! (`ClientRead`, or idle in its transaction), each side waits for the other. The watcher
//! then ends the session on the server (which rolls it back and releases its locks), learns
//! what became of the transaction, and ends the process. A pg-load busy on the CPU (one huge
//! row to convert) also leaves the server waiting, but is not waiting itself: the process's
//! own CPU time tells the two apart.

use crate::commit::{self, Resolved, TxId};
use crate::pg::Target;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

static IN_INPUT: AtomicBool = AtomicBool::new(false);
static PROGRESS: AtomicU64 = AtomicU64::new(0);
static XID: AtomicI64 = AtomicI64::new(0);
static DONE: AtomicBool = AtomicBool::new(false);

/// The load's input, read through this so that waiting for a slow producer is not a stall.
pub struct Watched<R>(pub R);

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        IN_INPUT.store(true, Ordering::SeqCst);
        let r = self.0.read(buf);
        IN_INPUT.store(false, Ordering::SeqCst);
        PROGRESS.fetch_add(1, Ordering::SeqCst);
        r
    }
}

/// The load's transaction id, once known (to learn its outcome after a stall).
pub fn set_xid(xid: i64) {
    XID.store(xid, Ordering::SeqCst);
}

/// The load is over (committed or rolled back): nothing more to watch.
pub fn done() {
    DONE.store(true, Ordering::SeqCst);
}

/// The CPU time this process has used (user and system, all threads).
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.clamp(0, 999_999) as u32) * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// What the watcher does once it has decided: `finish(message, exit code)` records the run
/// and prints; the process then exits with the code.
pub type Finish = Box<dyn FnOnce(&str, &str, i32) + Send>;

/// Watches backend `pid` of a load through `target`, giving up after `timeout` of stall.
pub fn watch(target: &Target, pid: i32, timeout: Duration, finish: Finish) {
    let mut probe_target = target.clone();
    probe_target.config.connect_timeout(timeout.clamp(Duration::from_secs(1), Duration::from_secs(10)));
    let tick = (timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    std::thread::spawn(move || {
        let mut last = PROGRESS.load(Ordering::SeqCst);
        let mut since = Instant::now();
        let mut cpu = cpu_time();
        loop {
            std::thread::sleep(tick);
            if DONE.load(Ordering::SeqCst) {
                return;
            }
            let now = PROGRESS.load(Ordering::SeqCst);
            let cpu_now = cpu_time();
            // Busy for a quarter of the tick or more: working, not waiting for the server.
            let busy = cpu_now.saturating_sub(cpu) >= tick / 4;
            cpu = cpu_now;
            if now != last || IN_INPUT.load(Ordering::SeqCst) || busy {
                last = now;
                since = Instant::now();
                continue;
            }
            let mut probe = probe_target.connect().ok();
            let waits_for_us = match probe.as_mut() {
                Some(c) => match c.query_opt(
                    "SELECT state LIKE 'idle in transaction%' OR wait_event = 'ClientRead' FROM pg_stat_activity WHERE pid = $1",
                    &[&pid],
                ) {
                    Ok(Some(r)) => r.get::<_, Option<bool>>(0).unwrap_or(false),
                    // The session is gone: the server ended it; the load's thread hears of it.
                    Ok(None) => false,
                    Err(_) => true,
                },
                // The server cannot be reached: from here that is a stall too.
                None => true,
            };
            if !waits_for_us {
                since = Instant::now();
                continue;
            }
            if since.elapsed() < timeout || DONE.load(Ordering::SeqCst) {
                continue;
            }
            let secs = timeout.as_secs();
            let (outcome, message, code) = match probe.as_mut() {
                Some(c) => {
                    let _ = c.execute("SELECT pg_terminate_backend($1, 5000)", &[&pid]);
                    let xid = XID.load(Ordering::SeqCst);
                    let state = if xid == 0 {
                        Resolved::Aborted
                    } else {
                        commit::resolve(&probe_target, TxId { xid, pid }, commit::RESOLVE_WITHIN)
                    };
                    match state {
                        Resolved::Committed => (
                            "success",
                            format!("the connection stalled after COMMIT; the server reports transaction {xid} committed"),
                            0,
                        ),
                        Resolved::Aborted => (
                            "failed",
                            format!(
                                "the connection to PostgreSQL stalled: for {secs}s the server waited for pg-load while \
                                 pg-load waited for the server; the load's session was ended on the server (its lock \
                                 released) and rolled back; nothing was committed"
                            ),
                            69,
                        ),
                        Resolved::InProgress | Resolved::Unknown(_) => (
                            "unknown",
                            format!(
                                "the connection to PostgreSQL stalled for {secs}s; commit outcome unknown; find out before \
                                 retrying with: SELECT txid_status({xid})"
                            ),
                            76,
                        ),
                    }
                }
                None if crate::signals::commit_was_sent() => (
                    "unknown",
                    format!(
                        "PostgreSQL has not answered for {secs}s, during COMMIT, and cannot be reached; commit outcome \
                         unknown; find out before retrying with: SELECT txid_status({})",
                        XID.load(Ordering::SeqCst)
                    ),
                    76,
                ),
                None => (
                    "failed",
                    format!(
                        "PostgreSQL has not answered for {secs}s and cannot be reached; giving up (COMMIT was not sent, \
                         nothing was committed; the server ends the session when its keepalives notice, and releases the \
                         table's lock then)"
                    ),
                    69,
                ),
            };
            finish(outcome, &message, code);
            std::process::exit(code);
        }
    });
}
