//! ANALYZE after the commit, on two connections when there is enough work to share.
//!
//! In PostgreSQL (15) `ANALYZE parent` of a partitioned table analyzes every leaf partition
//! (find_all_inheritors), then the parent's inherited statistics, one after the other in one
//! backend: one core busy, the other idle once the load is done. Here the leaves and ordinary
//! tables are jobs in one queue, largest first, that two connections take from, each when it
//! is free. Only `ANALYZE parent` makes a parent's inherited statistics, and it would analyze
//! every leaf as well: so a second connection (B) first takes SHARE UPDATE EXCLUSIVE locks on
//! all the leaves in a transaction (ANALYZE's own lock level: it conflicts with another
//! ANALYZE, not with readers or writers), and the load's connection (A) runs
//! `ANALYZE (SKIP_LOCKED)` of the partitioned tables, which then makes their inherited
//! statistics alone, while B analyzes leaves in its transaction. When A is done, B commits,
//! and both take jobs until none is left, plainly (waiting for a lock another session holds).
//! SKIP_LOCKED also skips a parent another session holds: afterwards a parent without fresh
//! statistics, and any job B did not commit, is analyzed plainly on A. Any trouble with B
//! before it holds its locks (a leaf another session holds): A does everything plainly, as a
//! single connection would. Failures are warnings: the data is committed.
//!
//! A signal (src/signals.rs) cancels the statement each connection runs; no further one
//! starts, and the tables left without fresh statistics are named, from pg_stat_all_tables.

use pgferry::pg::{pg_cause, Target};
use pgferry::{note, signals, warn};
use postgres::types::Oid;
use postgres::Client;
use std::collections::VecDeque;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::TOOL;

/// Less than this many pages (16 MB) to analyze: not worth a second connection (measured here:
/// ~55 ms to analyze 1,000 pages; the catalog query, connecting without TLS and locking ~5 ms,
/// a TLS handshake more).
const SPLIT_PAGES: i64 = 2048;
/// ANALYZE reads at most this many blocks of a relation (300 × default_statistics_target).
const SAMPLE_BLOCKS: i64 = 30_000;
/// A relation's fixed cost, in pages (catalog work, the statistics' sorting).
const OVERHEAD: i64 = 20;
/// How long A waits for B to hold its locks before doing everything itself.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// ANALYZE (or VACUUM (ANALYZE)) of the loaded tables (`(qualified, name, changed)`) after the
/// commit, on the load's connection and, for ANALYZE with enough to split, a second one to
/// `target`. `pid`: the load connection's backend. A table the load did not change that has
/// statistics is not analyzed again: they stand (a re-run would pay for nothing). VACUUM, asked
/// for by name, always runs. A table another session holds is waited for `lock_wait` seconds
/// at most (the load's --lock-timeout, at least 1 s: the second connection may hold a
/// partition a moment longer), then left with a warning. Gives what a signal left undone
/// (nothing when none came).
pub fn after_commit(
    client: &mut Client,
    pid: i32,
    target: &Target,
    loaded: &[(&str, &str, bool)],
    vacuum: bool,
    lock_wait: u32,
) -> Undone {
    let mut tables: Vec<(&str, &str)> = loaded.iter().map(|&(qt, name, _)| (qt, name)).collect();
    let wait = lock_timeout_sql(lock_wait);
    let _ = client.batch_execute(&wait);
    // Before anything is analyzed: what was, after a signal, is what was analyzed since.
    let since: Option<String> = client.query_one("SELECT now()::text", &[]).ok().map(|r| r.get(0));
    let mut lost = vec![];
    if vacuum {
        // VACUUM cannot run in a transaction block, so the lock trick cannot keep it from
        // redoing leaves: one connection, as PostgreSQL recurses.
        plain(client, &tables, "VACUUM (ANALYZE)");
    } else {
        let unchanged: Vec<&str> = loaded.iter().filter(|t| !t.2).map(|t| t.0).collect();
        let standing = with_statistics(client, &unchanged);
        tables.retain(|(qt, name)| {
            let stands = standing.iter().any(|q| q == qt);
            if stands {
                note!(TOOL, "{name}: no row changed, its statistics stand: not analyzed again");
            }
            !stands
        });
        lost = match (relations(client, &tables), &since) {
            (Some((rels, version)), Some(since)) if splittable(&rels, version) => {
                split(client, pid, target, &tables, &rels, since, &wait)
            }
            _ => {
                plain(client, &tables, "ANALYZE");
                vec![]
            }
        };
    }
    match signals::received() {
        Some(_) => not_made(client, &tables, since.as_deref(), &lost),
        None => Undone::default(),
    }
}

/// What a signal left undone: the loaded tables (`(qualified, name)`) without fresh
/// statistics, or, when the server could not say (`sure` false), every one that may be.
#[derive(Default)]
pub struct Undone {
    pub tables: Vec<(String, String)>,
    pub sure: bool,
}

/// Of `tables`, those that themselves or a partition below were not analyzed since `since`
/// (pg_stat_all_tables; an autovacuum's ANALYZE counts), or is one of `lost` (analyzed in a
/// transaction that did not commit, which pg_stat does not know): what a signal left undone.
/// Every one when that cannot be read. A partitioned table before PostgreSQL 15 is judged by
/// its partitions (its own ANALYZE may not be recorded there).
fn not_made(client: &mut Client, tables: &[(&str, &str)], since: Option<&str>, lost: &[Oid]) -> Undone {
    let owned = |&(qt, name): &(&str, &str)| (qt.to_string(), name.to_string());
    let every = |sure| Undone { tables: tables.iter().map(owned).collect(), sure };
    let Some(since) = since else { return every(false) };
    let names: Vec<&str> = tables.iter().map(|(qt, _)| *qt).collect();
    let sql = "WITH RECURSIVE tree(i, relid) AS ( \
           SELECT n.i::int - 1, n.name::regclass::oid FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i) \
           UNION ALL SELECT t.i, h.inhrelid FROM tree t JOIN pg_inherits h ON h.inhparent = t.relid) \
         SELECT DISTINCT t.i FROM tree t JOIN pg_class c ON c.oid = t.relid \
         LEFT JOIN pg_stat_all_tables s ON s.relid = t.relid \
         WHERE (c.relkind IN ('r', 'm') OR (c.relkind = 'p' AND current_setting('server_version_num')::int >= 150000)) \
           AND NOT (coalesce(greatest(s.last_analyze, s.last_autoanalyze) >= $2::text::timestamptz, false) \
                    AND t.relid <> ALL($3)) \
         ORDER BY 1";
    // Twice: the signal's cancel may reach this query rather than the ANALYZE it was sent for.
    let query = |c: &mut Client| c.query(sql, &[&names, &since, &lost]);
    match query(client).or_else(|_| query(client)) {
        Ok(rows) => Undone {
            tables: rows.iter().filter_map(|r| tables.get(r.get::<_, i32>(0) as usize)).map(owned).collect(),
            sure: true,
        },
        Err(_) => every(false),
    }
}

/// The statement gave up waiting for a lock (lock_timeout).
fn lock_timed_out(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code() == "55P03")
}

/// The warning for `table` (`(qualified, name)`), which another session held past the lock timeout.
fn held_too_long(sql: &str, (qt, name): (&str, &str)) {
    warn!(TOOL, "{sql} {name}: another session held the table longer than --lock-timeout allows; run {sql} {qt} once it is free");
}

/// The session's bound on a lock wait after the commit (see `after_commit`).
fn lock_timeout_sql(secs: u32) -> String {
    format!("SET lock_timeout = '{}s'", secs.max(1))
}

/// A signal came: no further statement starts (src/signals.rs cancels the running ones).
fn stopped() -> bool {
    signals::received().is_some()
}

/// Which of `tables` (qualified names) have statistics: pg_stats shows rows for them (any user
/// who may read the table can see them there; pg_statistic needs a superuser). None of them when the
/// catalog cannot be read: those tables are analyzed, as if they had none.
fn with_statistics(client: &mut Client, tables: &[&str]) -> Vec<String> {
    if tables.is_empty() {
        return vec![];
    }
    client
        .query(
            "SELECT t FROM unnest($1::text[]) t JOIN pg_class c ON c.oid = t::regclass \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE EXISTS (SELECT 1 FROM pg_stats st WHERE st.schemaname = n.nspname AND st.tablename = c.relname)",
            &[&tables],
        )
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

/// `sql` (ANALYZE or VACUUM (ANALYZE)) of `tables` in one statement; if it fails, table by
/// table, so that each failure is its own warning, except when it gave up waiting for a lock
/// (see `around_held`).
fn plain(client: &mut Client, tables: &[(&str, &str)], sql: &str) {
    if tables.is_empty() || stopped() {
        return;
    }
    // Several tables: the server's time first, to tell afterwards which the statement did.
    let since: Option<String> = match tables.len() {
        1 => None,
        _ => client.query_one("SELECT now()::text", &[]).ok().map(|r| r.get(0)),
    };
    let list: Vec<&str> = tables.iter().map(|(qt, _)| *qt).collect();
    match client.batch_execute(&format!("{sql} {}", list.join(", "))) {
        Ok(()) => done(tables, sql),
        // Cancelled by a signal: the caller names what is left undone.
        Err(_) if stopped() => {}
        Err(e) if tables.len() == 1 && lock_timed_out(&e) => held_too_long(sql, tables[0]),
        Err(e) if tables.len() == 1 => warn!(TOOL, "{sql} {}: {}", tables[0].1, pg_cause(&e)),
        Err(e) if lock_timed_out(&e) && since.is_some() => around_held(client, tables, sql, since.as_deref()),
        Err(_) => each(client, tables, sql),
    }
}

/// `sql` of each of `tables` on its own.
fn each(client: &mut Client, tables: &[(&str, &str)], sql: &str) {
    for t in tables {
        plain(client, std::slice::from_ref(t), sql);
    }
}

/// The note for a VACUUM done (an ANALYZE done says nothing).
fn done(tables: &[(&str, &str)], sql: &str) {
    if sql != "ANALYZE" {
        for (_, name) in tables {
            note!(TOOL, "{name}: {sql} done");
        }
    }
}

/// One statement of `tables` waited --lock-timeout for a table another session holds and
/// gave up: the tables it did not get to are done without waiting again (SKIP_LOCKED), and
/// each one still held is named, so that the user waits one --lock-timeout, not one more per
/// table. Which are done is the server's word (pg_stat_all_tables since `since`); when it
/// cannot be read, table by table as for any other failure.
fn around_held(client: &mut Client, tables: &[(&str, &str)], sql: &str, since: Option<&str>) {
    let Some(left) = unanalyzed(client, tables, since) else { return each(client, tables, sql) };
    done(&without(tables, &left), sql);
    if left.is_empty() {
        return;
    }
    let skipping = match sql {
        "ANALYZE" => "ANALYZE (SKIP_LOCKED)",
        _ => "VACUUM (ANALYZE, SKIP_LOCKED)",
    };
    let list: Vec<&str> = left.iter().map(|(qt, _)| *qt).collect();
    // The server's own skip warning would say again what the warning below says.
    let quiet = client.batch_execute("SET client_min_messages = error").is_ok();
    let r = client.batch_execute(&format!("{skipping} {}", list.join(", ")));
    if quiet {
        let _ = client.batch_execute("RESET client_min_messages");
    }
    match r {
        Err(_) if stopped() => {}
        Err(_) => each(client, &left, sql),
        Ok(()) => {
            let Some(held) = unanalyzed(client, &left, since) else { return each(client, &left, sql) };
            done(&without(&left, &held), sql);
            for t in held {
                held_too_long(sql, t);
            }
        }
    }
}

/// Of `tables`, those not analyzed since `since` (see `not_made`); `None` when the server
/// could not say.
fn unanalyzed<'t>(
    client: &mut Client,
    tables: &[(&'t str, &'t str)],
    since: Option<&str>,
) -> Option<Vec<(&'t str, &'t str)>> {
    let u = not_made(client, tables, since, &[]);
    u.sure.then(|| tables.iter().filter(|(qt, _)| u.tables.iter().any(|(q, _)| q == qt)).copied().collect())
}

/// `all` but `some`.
fn without<'t>(all: &[(&'t str, &'t str)], some: &[(&str, &str)]) -> Vec<(&'t str, &'t str)> {
    all.iter().filter(|t| !some.contains(t)).copied().collect()
}

/// A relation that `ANALYZE` of a loaded table processes.
struct Rel {
    oid: Oid,
    qt: String,
    /// pg_class.relkind: 'r' ordinary, 'p' partitioned, 'f' foreign.
    kind: char,
    pages: i64,
    /// The loaded table it belongs to (index into `tables`), and whether it is that table.
    root: usize,
    is_root: bool,
    /// The current user may analyze it (owner, database owner or superuser).
    permitted: bool,
}

/// Every relation ANALYZE of `tables` processes: each table, and for a partitioned table every
/// partition below it. A table that is a partition of another loaded table is left to that
/// one (today's single statement would analyze it twice). `None`: the catalog could not be read.
/// Also the server's version (server_version_num).
fn relations(client: &mut Client, tables: &[(&str, &str)]) -> Option<(Vec<Rel>, i32)> {
    let names: Vec<&str> = tables.iter().map(|(qt, _)| *qt).collect();
    // pg_relation_size, not relpages: right after a load relpages is what the last VACUUM,
    // ANALYZE or CREATE INDEX saw, often nothing. Names quoted always, as the loaded tables'
    // are (pg::quote_ident), so that warnings name every relation alike.
    let rows = client
        .query(
            "WITH RECURSIVE tree(root, relid, depth) AS ( \
               SELECT n.i::int - 1, n.name::regclass::oid, 0 FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i) \
               UNION ALL \
               SELECT t.root, i.inhrelid, t.depth + 1 FROM tree t \
               JOIN pg_class p ON p.oid = t.relid AND p.relkind = 'p' JOIN pg_inherits i ON i.inhparent = t.relid) \
             SELECT c.oid, '\"' || replace(s.nspname, '\"', '\"\"') || '\".\"' || replace(c.relname, '\"', '\"\"') || '\"', \
               c.relkind::text, t.root, t.depth = 0, \
               pg_relation_size(c.oid) / current_setting('block_size')::bigint, \
               pg_has_role(c.relowner, 'USAGE') OR pg_has_role(d.datdba, 'USAGE') \
                 OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), \
               current_setting('server_version_num')::int \
             FROM tree t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace s ON s.oid = c.relnamespace \
             JOIN pg_database d ON d.datname = current_database() \
             ORDER BY t.root, t.depth",
            &[&names],
        )
        .ok()?;
    let version = rows.first().map_or(0, |r| r.get::<_, i32>(7));
    let mut rels: Vec<Rel> = rows
        .iter()
        .map(|r| Rel {
            oid: r.get(0),
            qt: r.get(1),
            kind: r.get::<_, String>(2).chars().next().unwrap_or('r'),
            root: r.get::<_, i32>(3) as usize,
            is_root: r.get(4),
            pages: r.get(5),
            permitted: r.get(6),
        })
        .collect();
    // A loaded table found below another loaded table (or loaded twice): the other's ANALYZE
    // covers it.
    let covered: Vec<usize> = rels
        .iter()
        .filter(|r| r.is_root)
        .filter(|r| rels.iter().any(|o| o.oid == r.oid && o.root != r.root && (!o.is_root || o.root < r.root)))
        .map(|r| r.root)
        .collect();
    rels.retain(|r| !covered.contains(&r.root));
    Some((rels, version))
}

/// A relation one connection can analyze on its own: an ordinary loaded table, or a leaf
/// (ordinary) partition of a loaded partitioned table.
fn unit(r: &Rel) -> bool {
    r.kind == 'r'
}

/// Worth a second connection: at least two relations to share, enough pages, and nothing the
/// user may not analyze (PostgreSQL's own skipping is then left as it is). A partitioned
/// table only from PostgreSQL 15: what A skipped is found in pg_stat_all_tables, which before
/// 15 may not record a partitioned table's ANALYZE (13 does not list partitioned tables).
fn splittable(rels: &[Rel], version: i32) -> bool {
    let units: Vec<&Rel> = rels.iter().filter(|r| unit(r)).collect();
    (version >= 150_000 || rels.iter().all(|r| r.kind != 'p'))
        && units.len() >= 2
        && units.iter().map(|r| r.pages).sum::<i64>() >= SPLIT_PAGES
        && rels.iter().all(|r| r.permitted)
}

/// The cost of analyzing `r`, in pages read (its sample reads at most SAMPLE_BLOCKS): the
/// order the jobs are taken in.
fn weight(r: &Rel) -> i64 {
    r.pages.min(SAMPLE_BLOCKS) + OVERHEAD
}

/// How warnings name `r`: a loaded table as the user named it, a partition by its qualified name.
fn name<'a>(r: &'a Rel, tables: &[(&'a str, &'a str)]) -> &'a str {
    if r.is_root {
        tables[r.root].1
    } else {
        &r.qt
    }
}

/// One relation to analyze on its own (see `unit`), as both connections take them.
struct Job {
    /// Index into the relations.
    rel: usize,
    qt: String,
    /// A leaf partition: B holds it while A makes the parents' statistics.
    leaf: bool,
}

/// The jobs not yet taken, largest first: each connection takes the next one when it is free,
/// so neither waits on a guess of how long a relation takes (a parent's inherited sample costs
/// about two leaves here, a small table's statistics far more than its pages say).
type Queue = Arc<Mutex<VecDeque<Job>>>;

/// The first job in `queue` (only a leaf when `leaves_only`).
fn take(queue: &Queue, leaves_only: bool) -> Option<Job> {
    let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
    let at = q.iter().position(|j| j.leaf || !leaves_only)?;
    q.remove(at)
}

/// `since`: the server's time before anything was analyzed. After a signal: the relations B
/// analyzed in a transaction that did not commit (else none).
fn split(
    client: &mut Client,
    pid: i32,
    target: &Target,
    tables: &[(&str, &str)],
    rels: &[Rel],
    since: &str,
    wait: &str,
) -> Vec<Oid> {
    let parents: Vec<&Rel> = rels.iter().filter(|r| r.is_root && r.kind == 'p').collect();
    let mut jobs: Vec<(usize, &Rel)> = rels.iter().enumerate().filter(|(_, r)| unit(r)).collect();
    jobs.sort_by_key(|(_, r)| std::cmp::Reverse(weight(r)));
    let join = |v: &[&Rel]| v.iter().map(|r| r.qt.as_str()).collect::<Vec<_>>().join(", ");
    // B locks every leaf: those are what A's `ANALYZE parent` must skip.
    let leaves: Vec<&Rel> = jobs.iter().map(|&(_, r)| r).filter(|r| !r.is_root).collect();
    let lock = match leaves.is_empty() {
        true => String::new(),
        false => format!("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE NOWAIT", join(&leaves)),
    };
    let queue: Queue =
        Arc::new(Mutex::new(jobs.iter().map(|&(rel, r)| Job { rel, qt: r.qt.clone(), leaf: !r.is_root }).collect()));

    let (locked_tx, locked_rx) = mpsc::sync_channel::<()>(0);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (target, b_queue, wait) = (target.clone(), Arc::clone(&queue), wait.to_string());
    let second = std::thread::spawn(move || second(&target, pid, &lock, &wait, &b_queue, locked_tx, done_rx));
    if locked_rx.recv_timeout(LOCK_WAIT).is_err() {
        // B could not connect or lock (or is slow at it): it gives up when it finds nobody
        // waiting; A does everything.
        drop((locked_rx, done_tx));
        plain(client, tables, "ANALYZE");
        return vec![];
    }
    drop(locked_rx);
    if !parents.is_empty() && !stopped() {
        // With every leaf held by B, `ANALYZE parent` makes the inherited statistics alone. The
        // skip warnings name what B holds: expected here.
        let quiet = client.batch_execute("SET client_min_messages = error").is_ok();
        let _ = client.batch_execute(&format!("ANALYZE (SKIP_LOCKED) {}", join(&parents)));
        if quiet {
            let _ = client.batch_execute("RESET client_min_messages");
        }
    }
    // B holds its locks until now, so that A's statement cannot reach B's leaves.
    drop(done_tx);
    let mut analyzed: Vec<usize> = vec![];
    while let Some(job) = take(&queue, false) {
        // Plainly: waits for a lock another session holds; a failure is its warning.
        let r = &rels[job.rel];
        plain(client, &[(r.qt.as_str(), name(r, tables))], "ANALYZE");
        analyzed.push(job.rel);
    }
    let b = second.join().unwrap_or_default();
    analyzed.extend(b.analyzed);
    // What B waited for in vain is not waited for again.
    for &i in &b.timed_out {
        held_too_long("ANALYZE", (&rels[i].qt, name(&rels[i], tables)));
        analyzed.push(i);
    }
    if stopped() {
        return b.lost.iter().map(|&i| rels[i].oid).collect();
    }

    // A parent (or a partitioned partition) that A's statement skipped (another session held
    // it) or failed on: PostgreSQL 15 records a partitioned table's ANALYZE in pg_stat too.
    let partitioned: Vec<Oid> = rels.iter().filter(|r| r.kind == 'p').map(|r| r.oid).collect();
    let made: Vec<Oid> = client
        .query(
            "SELECT relid FROM pg_stat_all_tables WHERE relid = ANY($1) \
               AND greatest(last_analyze, last_autoanalyze) >= $2::text::timestamptz",
            &[&partitioned, &since],
        )
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default();
    // And every job B took and did not commit.
    let mut missed: Vec<&Rel> = rels
        .iter()
        .enumerate()
        .filter(|&(i, r)| match r.kind {
            'p' => !made.contains(&r.oid),
            _ => unit(r) && !analyzed.contains(&i),
        })
        .map(|(_, r)| r)
        .collect();
    // A parent missed is `ANALYZE parent` again, which also does all its partitions.
    let redo: Vec<usize> = missed.iter().filter(|r| r.is_root && r.kind == 'p').map(|r| r.root).collect();
    missed.retain(|r| r.is_root || !redo.contains(&r.root));
    let names: Vec<(&str, &str)> = missed.iter().map(|r| (r.qt.as_str(), name(r, tables))).collect();
    plain(client, &names, "ANALYZE");
    vec![]
}

/// What B did: the jobs it analyzed and committed, those it analyzed in a transaction that did
/// not commit (their statistics are gone, though pg_stat counts them), and those whose lock
/// another session held past the lock timeout.
#[derive(Default)]
struct Done {
    analyzed: Vec<usize>,
    lost: Vec<usize>,
    timed_out: Vec<usize>,
}

/// Connection B: connect; if there are leaves, lock them all (NOWAIT: if another session holds
/// one, A does it all) in a transaction, tell A, and analyze leaves there until A's statement is
/// done (backend `a`), then commit; then take jobs like A until none is left.
fn second(
    target: &Target,
    a: i32,
    lock: &str,
    wait: &str,
    queue: &Queue,
    locked: mpsc::SyncSender<()>,
    done: mpsc::Receiver<()>,
) -> Done {
    let mut b = Done::default();
    let Ok(mut c) = target.connect() else { return b };
    // A signal cancels this backend's statement too (declared after the connection, so that
    // it is forgotten before the connection closes).
    let _cancel = match c.query_one("SELECT pg_backend_pid()", &[]) {
        Ok(r) => Cancelled::register(r.get(0)),
        Err(_) => return b,
    };
    if stopped() || c.batch_execute(wait).is_err() {
        return b;
    }
    let holding = !lock.is_empty();
    if holding && (c.batch_execute("BEGIN").is_err() || c.batch_execute(lock).is_err()) {
        return b;
    }
    // A stopped waiting: it analyzes everything; this session ends, which releases the locks.
    if locked.send(()).is_err() {
        return b;
    }
    if holding {
        let mut in_tx = vec![];
        // Holding the locks until A is done, unless A waits for a lock: a session queued behind
        // one of B's locks (a DROP or DETACH of a partition) can hold up A's reading of the
        // parent, and PostgreSQL cannot see that B waits for A. Committing early costs the
        // leaves still queued: A's statement may reach them, and they are analyzed again.
        let a_waits = |c: &mut Client| match c.query_one("SELECT cardinality(pg_blocking_pids($1)) > 0", &[&a]) {
            Ok(r) => r.get::<_, bool>(0),
            Err(_) => true,
        };
        loop {
            if stopped() || !matches!(done.try_recv(), Err(mpsc::TryRecvError::Empty)) || a_waits(&mut c) {
                break;
            }
            match take(queue, true) {
                // A failure aborts the transaction: its jobs are A's to redo.
                Some(job) if c.batch_execute(&format!("ANALYZE {}", job.qt)).is_err() => {
                    in_tx.push(job.rel);
                    b.lost = in_tx;
                    return b;
                }
                Some(job) => in_tx.push(job.rel),
                None => match done.recv_timeout(Duration::from_millis(50)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                },
            }
        }
        if c.batch_execute("COMMIT").is_err() {
            b.lost = in_tx;
            return b;
        }
        b.analyzed = in_tx;
    }
    while let Some(job) = (!stopped()).then(|| take(queue, false)).flatten() {
        match c.batch_execute(&format!("ANALYZE {}", job.qt)) {
            Ok(()) => b.analyzed.push(job.rel),
            Err(e) if lock_timed_out(&e) => b.timed_out.push(job.rel),
            // A's to redo, and to warn of if it fails there too.
            Err(_) => {}
        }
    }
    b
}

/// While alive: the second connection's backend is one a signal cancels the statement of.
struct Cancelled;

impl Cancelled {
    fn register(pid: i32) -> Cancelled {
        signals::also_cancel(pid);
        Cancelled
    }
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        signals::also_cancel(0);
    }
}
