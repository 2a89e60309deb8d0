//! The run log: one row per run (per step of a plan run), written on a connection of its own
//! so that a failed run's record survives the rollback of its load, and read back by the one
//! reader below (`pg-load --status`, `count-check --lint`).
//!
//! Where it lives (`--runs-table T`, default `_migration_runs`):
//! - T does not exist: pgferry creates T with its own columns ([`COLUMNS`]).
//! - T has pgferry's columns: pgferry's record is T.
//! - T has the user's columns (`script_name, ran_at, source_rows, dest_rows, success`, as the
//!   BellSystems seed's Alembic migration makes it): T gets one row per finished run by the
//!   mapping in [`USER_COLUMNS`], is never altered, and pgferry's record lives beside it in
//!   `_pgferry_runs` (same schema).
//! - anything else: refused, nothing created.
//!
//! Truth rules: a run records its transaction id before it loads anything, so a run that
//! ended without finishing (kill -9, a lost connection) is resolved later by asking the server
//! about that transaction (`success`, `interrupted` or `unknown`), never by guessing.

use crate::commit::{self, Resolved};
use crate::error::{Error, Result};
use crate::pg::{pg_cause, pg_error, quote_ident, Target};
use postgres::Client;
use std::time::Duration;

/// The columns pgferry writes; an existing table of pgferry's must have them (older
/// pgferry tables get the new ones added: they are pgferry's own).
pub const COLUMNS: &[(&str, &str)] = &[
    ("id", "bigserial PRIMARY KEY"),
    ("tool", "text NOT NULL"),
    ("target", "text NOT NULL"),
    ("source", "text"),
    ("mode", "text"),
    ("started_at", "timestamptz NOT NULL DEFAULT now()"),
    ("finished_at", "timestamptz"),
    ("source_rows", "bigint"),
    ("inserted_rows", "bigint"),
    ("present_rows", "bigint"),
    ("dest_rows", "bigint"),
    ("outcome", "text NOT NULL"),
    ("error", "text"),
    ("backend_pid", "integer"),
    ("tls", "boolean"),
    ("client_host", "text"),
    ("version", "text"),
    // A plan's step name, and the id of the first row of the run that loaded it (one batch =
    // one pg-load process, one transaction).
    ("step", "text"),
    ("batch", "bigint"),
    // The load's transaction id (txid_current()), recorded before any row is loaded.
    ("xid", "bigint"),
    // This row's run records its xid before loading: without one it never loaded a row.
    ("records_xid", "boolean"),
    // Values PostgreSQL changed on the way in, per column: {"col": {"rounded": n}}.
    ("changes", "jsonb"),
    // How an orphaned run was resolved, or what else the operator should know.
    ("note", "text"),
];

/// The user's run log (BellSystems seed): the columns pgferry fills and from what.
pub const USER_COLUMNS: &[(&str, &str)] = &[
    ("script_name", "the plan step's name, else 'pg-load TARGET'"),
    ("ran_at", "when the run started"),
    ("source_rows", "rows in the stream"),
    ("dest_rows", "rows of the stream present in the table after the load"),
    ("success", "true when the run committed and its count check held"),
];

/// Where pgferry's own record lives beside a user's run log.
pub const BESIDE: &str = "_pgferry_runs";

/// What a finished run reports.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub source: Option<String>,
    pub source_rows: Option<i64>,
    pub inserted_rows: Option<i64>,
    pub present_rows: Option<i64>,
    pub dest_rows: Option<i64>,
    /// Silent changes PostgreSQL made, per column: (column, kind, count).
    pub changes: Vec<(String, String, u64)>,
    /// A merge's counts of the rows already there, for mirror and upsert (pg-load --report;
    /// not columns of the run log).
    pub merged: Option<MergeCounts>,
}

/// What a mirror or upsert load did to the table's rows.
#[derive(Debug, Default, Clone, Copy)]
pub struct MergeCounts {
    pub updated: i64,
    pub deleted: i64,
    pub unchanged: i64,
}

/// A run's row in the log.
pub type RunId = i64;

/// The tables of one run log, resolved by name as SQL resolves it.
#[derive(Debug, Clone)]
pub struct Layout {
    /// pgferry's record, quoted and qualified.
    pub ours: String,
    /// The user's table, quoted and qualified, when T has the user's columns.
    pub user: Option<String>,
    /// The name as given, for messages.
    pub given: String,
}

impl Layout {
    /// Finds (read-only) what `name` is. `None`: no run log exists under that name.
    pub fn find(c: &mut impl postgres::GenericClient, name: &str) -> Result<Option<Layout>> {
        let (schema, table) = parse_name(c, name)?;
        let cols = columns_of(c, &schema, &table, name)?;
        if cols.is_empty() {
            return Ok(None);
        }
        Layout::classify(c, &schema, &table, name, &cols).map(Some)
    }

    fn classify(
        c: &mut impl postgres::GenericClient,
        schema: &Option<String>,
        table: &str,
        given: &str,
        cols: &[String],
    ) -> Result<Layout> {
        let has = |n: &str| cols.iter().any(|h| h == n);
        let q = qualify(schema, table);
        if ["tool", "target", "outcome"].iter().all(|n| has(n)) {
            return Ok(Layout { ours: q, user: None, given: given.into() });
        }
        if USER_COLUMNS.iter().all(|(n, _)| has(n)) {
            let beside = qualify(schema, BESIDE);
            return Ok(Layout { ours: beside, user: Some(q), given: given.into() });
        }
        let _ = c;
        Err(Error::Usage(format!(
            "the run log table '{given}' exists with other columns (neither pgferry's: tool, target, outcome, …; \
             nor the user's: {}); pass --runs-table NAME to use another table",
            USER_COLUMNS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )))
    }
}

/// The run log a loading process writes.
pub struct RunLog {
    target: Target,
    client: Option<Client>,
    layout: Layout,
    batch: Option<i64>,
    /// Runs of this process: (id, script_name for the user's table, started_at text).
    runs: Vec<(RunId, String)>,
}

/// One run to record.
pub struct Begin<'a> {
    pub tool: &'a str,
    pub step: Option<&'a str>,
    pub target: &'a str,
    pub mode: &'a str,
    pub backend_pid: i32,
}

impl RunLog {
    /// Opens the run log `name` on a connection of its own (TCP keepalives on; reconnected
    /// when the server or a pooler dropped it), creating pgferry's table where needed, and
    /// resolves runs that ended without finishing.
    pub fn open(target: &Target, name: &str) -> Result<RunLog> {
        let mut target = target.clone();
        keepalive(&mut target);
        let mut client = target.connect()?;
        let (schema, table) = parse_name(&mut client, name)?;
        let cols = columns_of(&mut client, &schema, &table, name)?;
        let layout = if cols.is_empty() {
            Layout { ours: qualify(&schema, &table), user: None, given: name.into() }
        } else {
            Layout::classify(&mut client, &schema, &table, name, &cols)?
        };
        let mut log = RunLog { target, client: Some(client), layout, batch: None, runs: vec![] };
        log.ensure_ours()?;
        log.resolve_orphans()?;
        Ok(log)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Where pgferry's record is, for messages ("run 12 in _migration_runs").
    pub fn name(&self) -> String {
        match &self.layout.user {
            None => self.layout.given.clone(),
            Some(_) => format!("{} (pgferry's record: {BESIDE})", self.layout.given),
        }
    }

    fn ensure_ours(&mut self) -> Result<()> {
        let ours = self.layout.ours.clone();
        let cols: Vec<String> = COLUMNS.iter().map(|(n, t)| format!("{n} {t}")).collect();
        let create = format!("CREATE TABLE IF NOT EXISTS {ours} ({})", cols.join(", "));
        self.with("create the run log", |c| c.batch_execute(&create))?;
        let have: Vec<String> = self
            .with("inspect the run log", |c| {
                c.query(
                    "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
                    &[&ours],
                )
            })?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (n, t) in COLUMNS.iter().filter(|(n, _)| !have.iter().any(|h| h == n)) {
            // Written by an older pgferry: add what this version records.
            let sql = format!("ALTER TABLE {ours} ADD COLUMN IF NOT EXISTS {n} {}", t.replace(" NOT NULL", ""));
            self.with("upgrade the run log", |c| c.batch_execute(&sql))?;
        }
        Ok(())
    }

    /// Runs `f` on the log's connection; a connection that broke (server restart, idle
    /// timeout, pooler) is made again and `f` retried once, so every `f` must be safe to run
    /// twice. Errors are worded as "`what` 'T': cause".
    fn with<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let given = self.layout.given.clone();
        if let Some(c) = self.client.as_mut().filter(|c| !c.is_closed()) {
            match f(c) {
                Ok(v) => return Ok(v),
                // The server answered: not a connection problem (57: it is shutting the session down).
                Err(e) if e.as_db_error().is_some_and(|d| !d.code().code().starts_with("57")) => {
                    return Err(pg_error(format!("{what} '{given}'"), e))
                }
                Err(_) => {}
            }
        }
        self.client = None;
        let mut c = self.target.connect().map_err(|e| e.context(format!("{what} '{given}': reconnect")))?;
        let v = f(&mut c).map_err(|e| pg_error(format!("{what} '{given}'"), e));
        self.client = Some(c);
        v
    }

    /// The log's connection, made again if it broke.
    fn live(&mut self) -> Result<&mut Client> {
        if self.client.as_mut().is_none_or(|c| c.is_closed() || c.is_valid(Duration::from_secs(5)).is_err()) {
            let given = &self.layout.given;
            self.client =
                Some(self.target.connect().map_err(|e| e.context(format!("the run log '{given}': reconnect")))?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Records a run as `running`; the first run of this process names the batch.
    pub fn begin(&mut self, b: &Begin) -> Result<RunId> {
        let ours = self.layout.ours.clone();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        let sql = format!(
            "INSERT INTO {ours} (tool, target, step, mode, outcome, backend_pid, client_host, version, tls, batch, records_xid) \
             VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, (SELECT ssl FROM pg_stat_ssl WHERE pid = $5), $8, true) \
             RETURNING id"
        );
        let batch = self.batch;
        // Not retried: an INSERT whose reply was lost may have happened.
        let c = self.live()?;
        let row = c
            .query_one(
                &sql,
                &[&b.tool, &b.target, &b.step, &b.mode, &b.backend_pid, &host, &env!("CARGO_PKG_VERSION"), &batch],
            )
            .map_err(|e| pg_error(format!("write the run log '{}'", self.layout.given), e))?;
        let id: i64 = row.get(0);
        if self.batch.is_none() {
            self.batch = Some(id);
            let sql = format!("UPDATE {ours} SET batch = id WHERE id = $1");
            self.with("write the run log", |c| c.execute(&sql, &[&id]))?;
        }
        let script = b.step.map(str::to_string).unwrap_or_else(|| format!("{} {}", b.tool, b.target));
        self.runs.push((id, script));
        Ok(id)
    }

    /// Records the load's transaction id on every run of this process. Must succeed before
    /// the load writes a row: it is what lets a later run learn this one's outcome.
    pub fn attach(&mut self, xid: i64) -> Result<()> {
        let ours = self.layout.ours.clone();
        let batch = self.batch;
        let sql = format!("UPDATE {ours} SET xid = $1 WHERE batch = $2");
        self.with("write the run log", |c| c.execute(&sql, &[&xid, &batch]))?;
        Ok(())
    }

    /// Records the end of run `id`: `success`, `dry-run`, `failed` (with its error),
    /// `interrupted`, or `unknown` (commit outcome unknown).
    pub fn finish(&mut self, id: RunId, outcome: &str, o: &Outcome, error: Option<&str>) -> Result<()> {
        let ours = self.layout.ours.clone();
        let changes = changes_json(&o.changes);
        let sql = format!(
            "UPDATE {ours} SET outcome = $2, finished_at = now(), source = coalesce($3, source), source_rows = $4, \
             inserted_rows = $5, present_rows = $6, dest_rows = $7, error = $8, changes = $9::text::jsonb WHERE id = $1 RETURNING started_at"
        );
        let rows = self.with("write the run log", |c| {
            c.query(
                &sql,
                &[
                    &id,
                    &outcome,
                    &o.source,
                    &o.source_rows,
                    &o.inserted_rows,
                    &o.present_rows,
                    &o.dest_rows,
                    &error,
                    &changes,
                ],
            )
        })?;
        // A dry run loaded nothing; an unknown outcome is written there once it is known.
        if outcome == "dry-run" || outcome == "unknown" {
            return Ok(());
        }
        let Some(user) = self.layout.user.clone() else { return Ok(()) };
        let script = self.runs.iter().find(|(r, _)| *r == id).map(|(_, s)| s.clone()).unwrap_or_default();
        let started: Option<std::time::SystemTime> = rows.first().map(|r| r.get(0));
        let (src, dst) =
            (o.source_rows.and_then(|n| i32::try_from(n).ok()), o.dest_rows.and_then(|n| i32::try_from(n).ok()));
        let success = outcome == "success";
        let sql = format!(
            "INSERT INTO {user} (script_name, ran_at, source_rows, dest_rows, success) VALUES ($1, $2, $3, $4, $5)"
        );
        // The user's row is written once: a retried INSERT after a lost reply could double it.
        let c = self.live()?;
        c.execute(&sql, &[&script, &started, &src, &dst, &success])
            .map_err(|e| pg_error(format!("write the run log '{}'", self.layout.given), e))?;
        Ok(())
    }

    /// Runs still `running` whose load is over are settled by asking the server about their
    /// transaction. Runs still in progress are left alone.
    fn resolve_orphans(&mut self) -> Result<()> {
        let ours = self.layout.ours.clone();
        let sql = format!(
            "SELECT id, xid, coalesce(records_xid, false), backend_pid IN (SELECT pid FROM pg_stat_activity), \
             coalesce(step, tool || ' ' || target), started_at FROM {ours} \
             WHERE outcome = 'running' OR (outcome = 'unknown' AND xid IS NOT NULL) ORDER BY id"
        );
        let rows = self.with("read the run log", |c| c.query(&sql, &[]))?;
        for r in rows {
            let (id, xid, records, alive): (i64, Option<i64>, bool, Option<bool>) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            let (script, started): (String, std::time::SystemTime) = (r.get(4), r.get(5));
            let client = self.live()?;
            let (outcome, note) = match orphan_outcome(client, xid, records, alive.unwrap_or(false))? {
                Some(v) => v,
                None => continue,
            };
            let sql = format!(
                "UPDATE {ours} SET outcome = $2, note = $3, error = CASE WHEN $2 = 'success' THEN error ELSE coalesce(error, $3) END \
                 WHERE id = $1 AND outcome IN ('running', 'unknown') AND outcome <> $2"
            );
            let n = self.with("update the run log", |c| c.execute(&sql, &[&id, &outcome, &note]))?;
            if let (Some(user), 1) = (self.layout.user.clone(), n) {
                if outcome != "unknown" {
                    let sql = format!("INSERT INTO {user} (script_name, ran_at, success) VALUES ($1, $2, $3)");
                    let success = outcome == "success";
                    let c = self.live()?;
                    c.execute(&sql, &[&script, &started, &success])
                        .map_err(|e| pg_error(format!("write the run log '{}'", self.layout.given), e))?;
                }
            }
        }
        Ok(())
    }
}

/// Records the end of run `id` from outside its `RunLog` (the stall watcher's thread), on a
/// connection of its own.
pub fn mark(target: &Target, name: &str, id: RunId, outcome: &str, error: &str) -> Result<()> {
    let mut c = target.connect()?;
    let Some(layout) = Layout::find(&mut c, name)? else { return Ok(()) };
    c.execute(
        &format!("UPDATE {} SET outcome = $2, finished_at = now(), error = $3 WHERE id = $1", layout.ours),
        &[&id, &outcome, &error],
    )
    .map_err(|e| pg_error(format!("write the run log '{name}'"), e))?;
    if let (Some(user), true) = (layout.user, outcome != "unknown") {
        let sql = format!(
            "INSERT INTO {user} (script_name, ran_at, success) SELECT coalesce(step, tool || ' ' || target), started_at, $2 \
             FROM {} WHERE id = $1",
            layout.ours
        );
        c.execute(&sql, &[&id, &(outcome == "success")])
            .map_err(|e| pg_error(format!("write the run log '{name}'"), e))?;
    }
    Ok(())
}

/// What an orphaned `running` row's run came to; `None` while it may still be running.
fn orphan_outcome(
    c: &mut impl postgres::GenericClient,
    xid: Option<i64>,
    records_xid: bool,
    backend_alive: bool,
) -> Result<Option<(&'static str, String)>> {
    let Some(xid) = xid else {
        if backend_alive {
            return Ok(None);
        }
        return Ok(Some(if records_xid {
            (
                "interrupted",
                "the run ended before it loaded anything (no transaction id was recorded): nothing was committed"
                    .into(),
            )
        } else {
            (
                "unknown",
                "the run ended without finishing and recorded no transaction id (an older pgferry): \
                 whether its load committed cannot be known from the log; compare the table with its source"
                    .into(),
            )
        }));
    };
    Ok(match commit::status_of(c, xid)? {
        Resolved::InProgress => None,
        Resolved::Committed => Some((
            "success",
            format!("the run ended before recording its end; the server reports its transaction {xid} committed (counts not recorded)"),
        )),
        Resolved::Aborted => Some((
            "interrupted",
            format!("the run ended without finishing; the server reports its transaction {xid} aborted: nothing it loaded was committed"),
        )),
        Resolved::Unknown(why) => Some(("unknown", format!("the run ended without finishing; its outcome is unknown: {why}"))),
    })
}

fn changes_json(changes: &[(String, String, u64)]) -> Option<String> {
    if changes.is_empty() {
        return None;
    }
    let mut m = serde_json::Map::new();
    for (col, kind, n) in changes {
        let e = m.entry(col.clone()).or_insert_with(|| serde_json::json!({}));
        e[kind] = serde_json::json!(n);
    }
    Some(serde_json::Value::Object(m).to_string())
}

/// TCP keepalives for a connection that sits idle for a whole load (a NAT or firewall drops
/// quiet connections). An explicit `keepalives_idle` in the connection string is kept.
pub fn keepalive(target: &mut Target) {
    let c = &mut target.config;
    c.keepalives(true);
    if c.get_keepalives_idle() >= Duration::from_secs(7200) {
        c.keepalives_idle(Duration::from_secs(30));
        c.keepalives_interval(Duration::from_secs(10));
        c.keepalives_retries(6);
    }
}

/// Splits `name` as SQL does (`a.b`, `"MyRuns"`; unquoted parts fold to lower case).
fn parse_name(c: &mut impl postgres::GenericClient, name: &str) -> Result<(Option<String>, String)> {
    let parts: Vec<String> = c
        .query_one("SELECT parse_ident($1)", &[&name])
        .map_err(|e| match e.as_db_error() {
            Some(_) => Error::Usage(format!("--runs-table '{name}' is not a table name: {}", pg_cause(&e))),
            None => pg_error("read the run log's name", e),
        })?
        .get(0);
    match parts.as_slice() {
        [t] => Ok((None, t.clone())),
        [s, t] => Ok((Some(s.clone()), t.clone())),
        _ => Err(Error::Usage(format!("--runs-table '{name}' must be TABLE or SCHEMA.TABLE"))),
    }
}

fn qualify(schema: &Option<String>, table: &str) -> String {
    match schema {
        Some(s) => format!("{}.{}", quote_ident(s), quote_ident(table)),
        None => quote_ident(table),
    }
}

fn columns_of(
    c: &mut impl postgres::GenericClient,
    schema: &Option<String>,
    table: &str,
    given: &str,
) -> Result<Vec<String>> {
    let rows = c
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&qualify(schema, table)],
        )
        .map_err(|e| pg_error(format!("inspect the run log '{given}'"), e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

// ---------------------------------------------------------------- the one reader

/// A run as the log holds it, with an orphan's outcome resolved from the server.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: i64,
    pub tool: String,
    pub step: Option<String>,
    pub target: String,
    pub source: Option<String>,
    pub mode: Option<String>,
    pub outcome: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub source_rows: Option<i64>,
    pub inserted_rows: Option<i64>,
    pub present_rows: Option<i64>,
    pub dest_rows: Option<i64>,
    pub error: Option<String>,
    pub note: Option<String>,
    pub xid: Option<i64>,
    pub changes: Option<serde_json::Value>,
}

impl Run {
    /// One NDJSON object (contract 5: step, target, source, outcome, finished_at, counts).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "step": self.step, "target": self.target, "source": self.source, "outcome": self.outcome,
            "run": self.id, "started_at": self.started_at, "finished_at": self.finished_at,
            "source_rows": self.source_rows, "inserted_rows": self.inserted_rows,
            "present_rows": self.present_rows, "dest_rows": self.dest_rows,
            "error": self.error, "note": self.note, "xid": self.xid, "changes": self.changes,
        })
    }
}

/// Reads pgferry's record of the run log `name`; `Ok(None)` when there is none yet.
pub struct Reader {
    pub layout: Layout,
}

impl Reader {
    pub fn open(c: &mut impl postgres::GenericClient, name: &str) -> Result<Option<Reader>> {
        let Some(layout) = Layout::find(c, name)? else { return Ok(None) };
        let exists: bool = c
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&layout.ours])
            .map_err(|e| pg_error("look up the run log", e))?
            .get(0);
        Ok(exists.then_some(Reader { layout }))
    }

    fn select(&self) -> String {
        format!(
            "SELECT id, tool, step, target, source, mode, outcome, started_at::text, finished_at::text, source_rows, \
             inserted_rows, present_rows, dest_rows, error, note, xid, changes::text, coalesce(records_xid, false), \
             backend_pid IN (SELECT pid FROM pg_stat_activity) FROM {} r",
            self.layout.ours
        )
    }

    fn runs(
        &self,
        c: &mut impl postgres::GenericClient,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Run>> {
        let rows =
            c.query(sql, params).map_err(|e| pg_error(format!("read the run log '{}'", self.layout.given), e))?;
        let mut out = vec![];
        for r in rows {
            let mut run = Run {
                id: r.get(0),
                tool: r.get(1),
                step: r.get(2),
                target: r.get(3),
                source: r.get(4),
                mode: r.get(5),
                outcome: r.get(6),
                started_at: r.get(7),
                finished_at: r.get(8),
                source_rows: r.get(9),
                inserted_rows: r.get(10),
                present_rows: r.get(11),
                dest_rows: r.get(12),
                error: r.get(13),
                note: r.get(14),
                xid: r.get(15),
                changes: r.get::<_, Option<String>>(16).and_then(|t| serde_json::from_str(&t).ok()),
            };
            if run.outcome == "running" || (run.outcome == "unknown" && run.xid.is_some()) {
                let (records, alive): (bool, Option<bool>) = (r.get(17), r.get(18));
                if let Some((o, note)) = orphan_outcome(c, run.xid, records, alive.unwrap_or(false))? {
                    if o != run.outcome {
                        run.outcome = o.into();
                        run.note = Some(note);
                    }
                }
            }
            out.push(run);
        }
        Ok(out)
    }

    /// The latest run of a plan step: a run of its target under its name, or one that named no
    /// step (a plan edited since may give the name to another table).
    pub fn latest(
        &self,
        c: &mut impl postgres::GenericClient,
        step: Option<&str>,
        target: &str,
    ) -> Result<Option<Run>> {
        let sql = format!(
            "{} WHERE r.target = $2 AND (r.step = $1 OR r.step IS NULL) AND r.outcome <> 'dry-run' ORDER BY r.id DESC LIMIT 1",
            self.select()
        );
        Ok(self.runs(c, &sql, &[&step, &target])?.pop())
    }

    /// Runs of any of `targets` that did not succeed and were not followed by a success.
    pub fn unresolved_failures(&self, c: &mut impl postgres::GenericClient, targets: &[String]) -> Result<Vec<Run>> {
        let sql = format!(
            "{} WHERE r.target = ANY($1) AND r.outcome NOT IN ('success', 'dry-run') \
             AND NOT EXISTS (SELECT 1 FROM {} s WHERE s.target = r.target AND s.outcome = 'success' AND s.id > r.id) \
             ORDER BY r.id",
            self.select(),
            self.layout.ours
        );
        let runs = self.runs(c, &sql, &[&targets])?;
        // An orphan the server reports committed is a success, and one still running is not a failure.
        Ok(runs.into_iter().filter(|r| r.outcome != "success" && r.outcome != "running").collect())
    }
}

/// `pg-load --status`: the latest run of each (step, target), as NDJSON lines, and whether
/// every one of them succeeded.
pub fn status(
    target: &Target,
    name: &str,
    steps: &[(Option<String>, String)],
) -> Result<(Vec<serde_json::Value>, bool)> {
    let mut c = target.connect()?;
    let reader = Reader::open(&mut c, name)?;
    let mut lines = vec![];
    let mut all_ok = true;
    for (step, tgt) in steps {
        let run = match &reader {
            Some(r) => r.latest(&mut c, step.as_deref(), tgt)?,
            None => None,
        };
        match run {
            Some(run) => {
                all_ok &= run.outcome == "success";
                let mut j = run.to_json();
                if run.step.is_none() {
                    j["step"] = serde_json::json!(step);
                }
                lines.push(j);
            }
            None => {
                all_ok = false;
                lines.push(serde_json::json!({"step": step, "target": tgt, "outcome": "never-run"}));
            }
        }
    }
    Ok((lines, all_ok))
}
