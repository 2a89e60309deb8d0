//! Knowing what became of a COMMIT. A connection that breaks while COMMIT is on its way, or
//! while its reply is, leaves the client not knowing whether the transaction committed: the
//! server may have committed it and lost only the reply. So the transaction's id is noted
//! before COMMIT, and when the reply does not come, a new connection asks the server
//! (`txid_status`) instead of guessing.

use crate::error::{Error, Result};
use crate::pg::{pg_cause, pg_error, Target};
use postgres::Transaction;
use std::time::{Duration, Instant};

/// How long the outcome of a COMMIT whose reply was lost is sought before it is called
/// unknown (reconnecting, and waiting for the old session to finish).
pub const RESOLVE_WITHIN: Duration = Duration::from_secs(10);

/// A transaction's identity on the server: its id (64-bit, as `txid_current()` gives it)
/// and the backend serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxId {
    pub xid: i64,
    pub pid: i32,
}

impl TxId {
    /// Assigns the transaction its id now (it would get one at its first write anyway).
    pub fn of(tx: &mut Transaction) -> Result<TxId> {
        let row = tx
            .query_one("SELECT txid_current(), pg_backend_pid()", &[])
            .map_err(|e| pg_error("ask the server for the transaction id", e))?;
        Ok(TxId { xid: row.get(0), pid: row.get(1) })
    }

    /// The query that tells an operator what became of this transaction.
    pub fn status_sql(&self) -> String {
        format!("SELECT txid_status({})", self.xid)
    }
}

/// What the server says about a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Committed,
    Aborted,
    /// Still running: its session is alive and working (another load, not an orphan).
    InProgress,
    /// Not known, and why.
    Unknown(String),
}

/// How a COMMIT ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// The server answered COMMIT.
    Acknowledged,
    /// The reply was lost (the cause); a new connection learnt that the transaction committed.
    ConfirmedAfter(String),
}

impl Committed {
    /// What the operator is told of this COMMIT of transaction `xid`: nothing when the server
    /// answered it.
    pub fn note(&self, xid: i64) -> Option<String> {
        match self {
            Committed::Acknowledged => None,
            Committed::ConfirmedAfter(cause) => Some(format!(
                "the connection broke during COMMIT ({cause}); the server reports transaction {xid} committed"
            )),
        }
    }
}

/// Commits `tx`, whose id is `id`. Errors say only what is known: a COMMIT the server
/// refused, or one it reports aborted, "nothing was committed"; one whose outcome could not
/// be learnt within [`RESOLVE_WITHIN`] is `Error::CommitUnknown` with the query that finds out.
pub fn commit(tx: Transaction, id: TxId, target: &Target) -> Result<Committed> {
    let e = match tx.commit() {
        Ok(()) => return Ok(Committed::Acknowledged),
        Err(e) => e,
    };
    if e.as_db_error().is_some() {
        // The server answered: a refused COMMIT rolls the transaction back.
        return Err(pg_error("commit", e).append("; the server rolled the transaction back, nothing was committed"));
    }
    let cause = pg_cause(&e);
    match resolve(target, id, RESOLVE_WITHIN) {
        Resolved::Committed => Ok(Committed::ConfirmedAfter(cause)),
        Resolved::Aborted => Err(Error::Unavailable(format!(
            "commit: {cause}; the server reports transaction {} aborted: nothing was committed",
            id.xid
        ))),
        Resolved::InProgress => Err(unknown(&cause, id, "the transaction was still in progress")),
        Resolved::Unknown(why) => Err(unknown(&cause, id, &why)),
    }
}

fn unknown(cause: &str, id: TxId, why: &str) -> Error {
    Error::CommitUnknown(format!(
        "commit: {cause}; commit outcome unknown ({why}); find out before retrying with: {} \
         ('committed': the load is in; 'aborted': it is not)",
        id.status_sql()
    ))
}

/// Asks the server, on new connections, what became of `id`, for at most `within`. A
/// transaction whose session is gone is settled; one whose session still sits idle in its
/// transaction (a COMMIT that never arrived) is ended here, which makes it aborted.
pub fn resolve(target: &Target, id: TxId, within: Duration) -> Resolved {
    let deadline = Instant::now() + within;
    let mut last;
    loop {
        match target.connect() {
            Ok(mut c) => match ask(&mut c, id) {
                Ok(Some(r)) => return r,
                Ok(None) => last = "its session was still finishing".into(),
                Err(e) => last = format!("asking the server failed: {}", pg_cause(&e)),
            },
            Err(e) => last = format!("could not reconnect: {}", e.message()),
        }
        if Instant::now() >= deadline {
            return Resolved::Unknown(last);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One look. `None`: in progress in a session that is finishing (or working on COMMIT): ask again.
fn ask(c: &mut postgres::Client, id: TxId) -> std::result::Result<Option<Resolved>, postgres::Error> {
    let status: Option<String> = c.query_one("SELECT txid_status($1)", &[&id.xid])?.get(0);
    match status.as_deref() {
        Some("committed") => Ok(Some(Resolved::Committed)),
        Some("aborted") => Ok(Some(Resolved::Aborted)),
        Some(_) => {
            // In progress. Idle in its transaction means COMMIT never reached the server: end
            // the session (the transaction then aborts) and look again.
            // (The pid must still serve this transaction: pids are reused.)
            c.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE pid = $1 \
                 AND state LIKE 'idle in transaction%' AND backend_xid::text::bigint = $2 % 4294967296",
                &[&id.pid, &id.xid],
            )?;
            Ok(None)
        }
        None => {
            Ok(Some(Resolved::Unknown(format!("the server no longer knows transaction {} (it is too old)", id.xid))))
        }
    }
}

/// Ends backend `pid`'s session on the server (it rolls back; its locks go), from a new
/// connection; whether there was one to end. Only for a session whose COMMIT was not sent.
pub fn end_session(target: &Target, pid: i32) -> bool {
    let Ok(mut c) = target.connect() else { return false };
    c.query_one(
        "SELECT coalesce(bool_or(pg_terminate_backend(pid, 5000)), false) FROM pg_stat_activity WHERE pid = $1",
        &[&pid],
    )
    .map(|r| r.get::<_, bool>(0))
    .unwrap_or(false)
}

/// The run log's question about an orphaned run: what became of `xid`, asked on `c` once.
/// A transaction still in progress is reported as such; it is not ended from here.
pub fn status_of(c: &mut impl postgres::GenericClient, xid: i64) -> Result<Resolved> {
    let status: Option<String> = c
        .query_one("SELECT txid_status($1)", &[&xid])
        .map_err(|e| pg_error("ask the server about a transaction", e))?
        .get(0);
    Ok(match status.as_deref() {
        Some("committed") => Resolved::Committed,
        Some("aborted") => Resolved::Aborted,
        Some(_) => Resolved::InProgress,
        None => Resolved::Unknown(format!("the server no longer knows transaction {xid} (it is too old)")),
    })
}
