//! One table's load inside a transaction the caller owns: look at the table, stream its rows
//! into COPY, merge or count, move sequences. A single-table run and every step of a plan run
//! go through here.

use crate::copy::CopySink;
use crate::indexes::{self, Lines, SetAside};
use crate::report::{self, Report};
use crate::route::Router;
use crate::rows::{self, Columns};
use crate::schema::{self, ForeignKey};
use crate::{analyze, merge, Args, Mode, TOOL};
use pgferry::catalog::{self, ColumnInfo};
use pgferry::cli::Status;
use pgferry::pg::{pg_error, Table};
use pgferry::runlog::{MergeCounts, Outcome};
use pgferry::stream::{EndRecord, RowReader};
use pgferry::{signals, warn, Error, Result};
use postgres::types::Type;
use postgres::Transaction;
use serde_json::Value;

/// A table looked at and locked, ready for its rows.
pub struct Prepared {
    pub table: Table,
    pub qt: String,
    columns: Columns,
    generated: Vec<String>,
    key: Vec<String>,
    staged: bool,
    ensure: Option<pgferry::partition::Interval>,
    rows_before: i64,
    /// The table was empty before the load.
    empty: bool,
    /// Foreign keys of this table set aside for the load (--defer-fks, or a plan's children
    /// loaded before their parents); the caller puts them back.
    pub deferred: Vec<ForeignKey>,
    /// Into an empty table: its indexes, dropped for the COPY and built after it.
    indexes: Option<SetAside>,
    /// --ensure-partitions on the direct path: each row checked against the partitions.
    route: Option<Router>,
    /// An empty ordinary table: its indexes are set aside once the stream proves longer than
    /// --rebuild-indexes-from (rows::Streaming::hold_first); the plan's tables, for that.
    hold: Option<Vec<Table>>,
}

/// What one table's load did.
pub struct Loaded {
    pub verified: bool,
    /// `Source: N rows → Postgres: M rows ✓`
    pub count_line: String,
    /// Further lines for the operator (partitions created).
    pub notes: Vec<String>,
    /// What happened to the rows: `N rows inserted, M already present`, or mirror's four counts.
    pub summary: String,
}

/// Resolves TABLE as SQL does and takes its lock (SHARE ROW EXCLUSIVE: no other writer, readers
/// go on), waiting at most the transaction's lock_timeout, or not at all (`nowait`).
pub fn lock(tx: &mut Transaction, name: &str, nowait: bool) -> Result<Table> {
    let table = Table::resolve(tx, name)?;
    if table.kind != 'r' && table.kind != 'p' {
        return Err(Error::Usage(format!("'{name}' is not a table (pg-load loads ordinary and partitioned tables)")));
    }
    let qt = table.qualified();
    let nowait = if nowait { " NOWAIT" } else { "" };
    tx.batch_execute(&format!("LOCK TABLE {qt} IN SHARE ROW EXCLUSIVE MODE{nowait}")).map_err(|e| {
        match pg_error("lock", e) {
            Error::TempFail(m) => {
                Error::TempFail(format!("{m} (another session holds the table: another pg-load, or the application?)"))
            }
            other => other,
        }
    })?;
    Ok(table)
}

/// Looks at the table and decides the path (direct COPY or staged merge); sets its foreign
/// keys aside with --defer-fks. `plan`: a plan run's tables (foreign keys from them into this
/// table may be set aside so that its indexes can be built after COPY); empty otherwise.
pub fn prepare(tx: &mut Transaction, a: &Args, table: Table, plan: &[Table]) -> Result<Prepared> {
    let qt = table.qualified();
    let columns = catalog::table_columns(tx, table.oid, &qt)?;
    let key = match a.key.is_empty() {
        true => catalog::primary_key(tx, table.oid)?,
        false => {
            for k in &a.key {
                if !columns.iter().any(|c| &c.name == k) {
                    return Err(Error::Usage(format!("--key column '{k}' is not a column of '{}'", a.table)));
                }
            }
            a.key.clone()
        }
    };
    if a.mode == Mode::Replace {
        tx.batch_execute(&format!("TRUNCATE {qt}")).map_err(|e| pg_error("empty the table (--mode replace)", e))?;
    }
    // row_security_active: whether this role's statements on the table go through its
    // row-level security policies (not for its owner unless FORCEd, nor BYPASSRLS roles).
    let look = tx
        .query_typed(
            &format!("SELECT NOT EXISTS (SELECT 1 FROM {qt}), row_security_active($1::oid)"),
            &[(&table.oid, Type::OID)],
        )
        .map_err(|e| pg_error("look at the table", e))?;
    let (empty, row_security): (bool, bool) = (look[0].get(0), look[0].get(1));
    let ensure = a.ensure_partitions.filter(|_| table.kind == 'p');
    if a.ensure_partitions.is_some() && table.kind != 'p' {
        return Err(Error::Usage(format!("--ensure-partitions: '{}' is not a partitioned table", a.table)));
    }
    let loadable: Vec<ColumnInfo> = columns.iter().filter(|c| !c.generated).cloned().collect();
    let cols = Columns { binary: loadable.iter().all(|c| c.kind.has_binary()), columns: loadable };
    let merged = !empty && matches!(a.mode, Mode::Insert | Mode::Upsert | Mode::Mirror);
    // The partitions rows need are found row by row where each row's key can be read from its
    // binary field; otherwise only once every row is read, from a staging table.
    let route = match ensure {
        Some(interval) if !merged => Router::new(tx, &table, &cols, interval, a.lock_timeout)?,
        _ => None,
    };
    let ensure = ensure.filter(|_| route.is_none());
    let staged = ensure.is_some() || merged;
    if row_security && !staged {
        // PostgreSQL refuses COPY FROM through policies ("COPY FROM not supported with
        // row-level security"), and after that refusal the connection is out of step: say so
        // before any COPY starts.
        return Err(Error::NoPermission(
            "row-level security applies to this role on the table, and PostgreSQL's COPY cannot load through \
             it: load as the table's owner or a role with BYPASSRLS, or disable row-level security for the load"
                .into(),
        ));
    }
    if a.mode == Mode::Mirror && key.is_empty() {
        return Err(Error::Usage(format!(
            "--mode mirror needs a key to tell rows apart: '{}' has no primary key; pass --key COLS",
            a.table
        )));
    }
    if staged && key.is_empty() {
        return Err(Error::Usage(format!(
            "'{}' already has rows and no primary key, so a re-run could not tell loaded rows from new ones; \
             pass --key COLS, or --mode append or --mode replace",
            a.table
        )));
    }
    if a.mode == Mode::Upsert && key.is_empty() {
        return Err(Error::Usage("--mode upsert needs a primary key or --key".into()));
    }
    // Only the direct path into a table that has rows (--mode append) needs the count before.
    let rows_before: i64 = if empty || staged { 0 } else { count(tx, &qt)? };
    let mut deferred = schema::drop_foreign_keys(tx, &table, a.defer_fks, &[])?;
    let hold = (empty && !staged && table.kind == 'r' && !checks_keys_at_commit(tx, &table)?).then(|| plan.to_vec());
    let mut indexes =
        if empty && !staged && hold.is_none() { indexes::set_aside(tx, &table, plan, &cols)? } else { None };
    if let Some(s) = &mut indexes {
        deferred.append(&mut s.referencing);
    }
    let generated: Vec<String> = columns.iter().filter(|c| c.generated).map(|c| c.name.clone()).collect();
    Ok(Prepared {
        table,
        qt,
        columns: cols,
        generated,
        key,
        staged,
        ensure,
        rows_before,
        empty,
        deferred,
        indexes,
        route,
        hold,
    })
}

/// Streams the table's rows (up to its end record) and completes its load: partitions, merge
/// or count, sequences, the count line. Nothing is committed here.
pub fn load_rows<R: std::io::BufRead>(
    tx: &mut Transaction,
    p: &mut Prepared,
    a: &Args,
    reader: &mut RowReader<R>,
    outcome: &mut Outcome,
) -> Result<Loaded> {
    let mut sink = CopySink::new(&p.columns, &p.table);
    sink.freeze = p.indexes.as_ref().is_some_and(SetAside::freeze);
    let mut trail_error = None;
    match p.indexes.as_ref().and_then(|s| s.trail(&p.columns)) {
        Some(Ok(t)) => sink.trail = Some(t),
        Some(Err(e)) => trail_error = Some(e),
        None => {}
    }
    let stage = if p.staged { Some(merge::create_stage(tx, &p.qt)?) } else { None };
    let generated: Vec<&str> = p.generated.iter().map(String::as_str).collect();
    // Recorded even when the load fails: the run log says what was attempted and how far it got.
    outcome.source = a.source.clone();
    let mut changes = pgferry::convert::Changes::default();
    let hold = p.hold.take();
    let holding = hold.is_some();
    let mut set_aside_now = |tx: &mut Transaction| -> Result<bool> {
        let mut s = indexes::set_aside(tx, &p.table, hold.as_deref().unwrap_or(&[]), &p.columns)?;
        if let Some(s) = &mut s {
            p.deferred.append(&mut s.referencing);
        }
        let freeze = s.as_ref().is_some_and(SetAside::freeze);
        p.indexes = s;
        Ok(freeze)
    };
    let later: Option<&mut rows::SetAsideLater> = if holding { Some(&mut set_aside_now) } else { None };
    let streamed = rows::stream_rows(
        tx,
        reader,
        &p.columns,
        &generated,
        a,
        &mut sink,
        stage.as_deref(),
        p.route.as_mut(),
        &mut changes,
        later,
    );
    outcome.changes = changes.list(&p.columns.columns);
    let segments = match streamed {
        Ok(s) => s,
        Err(e) => {
            outcome.source_rows = Some(reader.rows() as i64);
            return Err(e);
        }
    };
    let source_rows = reader.rows() as i64;
    outcome.source_rows = Some(source_rows);
    outcome.source = a.source.clone().or_else(|| reader.end_record().map(describe_source));
    if let Some(t) = reader.table_record() {
        // A table record naming another table than this step's: the stream is not what the plan says.
        // The same name as the step's needs no look-up.
        if let Some(name) = t.target.as_ref().filter(|n| **n != a.table) {
            let named = Table::resolve(tx, name).map(|t| t.oid).unwrap_or(0);
            if named != p.table.oid {
                return Err(Error::Data(format!(
                    "line {}: the table record of step '{}' names table '{name}', but this load is into '{}'",
                    t.line,
                    t.step,
                    p.table.display()
                )));
            }
        }
    }

    if let Some(set_aside) = &p.indexes {
        let lines = match (sink.trail.take(), trail_error) {
            (Some(t), _) => Lines::Trail(&sink.lines, Ok(t)),
            (None, Some(e)) => Lines::Trail(&sink.lines, Err(e)),
            (None, None) => Lines::Physical(&sink.lines),
        };
        let created = p.route.as_ref().map_or(&[][..], |r| &r.created[..]);
        set_aside.restore(tx, lines, created)?;
    }
    let mut notes: Vec<String> = p.route.as_ref().and_then(Router::note).into_iter().collect();
    if !outcome.changes.is_empty() {
        let parts: Vec<String> =
            outcome.changes.iter().map(|(col, kind, n)| format!("column '{col}': {n} {kind}")).collect();
        notes.push(format!(
            "values PostgreSQL changes on the way in (counted in the run log; --strict refuses them): {}",
            parts.join(", ")
        ));
    }
    if let (Some(interval), Some(stage)) = (p.ensure, &stage) {
        notes.extend(schema::ensure_partitions(tx, &p.table, stage, interval, a.lock_timeout)?);
    }
    let mut summary = None;
    // Into an empty table, staged only to learn the partitions its rows need: the rows move in
    // with the indexes set aside (looked at now that every partition is there), and a repeat
    // is named by the stage's lines.
    let mut stage = stage;
    if let (Some(st), true, true) = (&stage, p.empty, a.mode != Mode::Mirror) {
        if let Some(set_aside) = indexes::set_aside(tx, &p.table, &[], &p.columns)? {
            merge::refuse_null_keys(tx, st, &p.key, "")?;
            merge::merge_stage(tx, &p.qt, st, &p.columns, &segments, &[], a.mode, source_rows)?;
            set_aside.restore(tx, Lines::Stage(st), &[])?;
            merge::drop_stage(tx, st)?;
            stage = None;
        }
    }
    let (inserted, present, dest, verified) = match &stage {
        None => {
            // (Rows moved in from a stage were not counted by a COPY into the table.)
            let n = match p.empty && !p.staged && copy_count_is_exact(tx, &p.table)? {
                true => sink.stored as i64,
                false => count(tx, &p.qt)? - p.rows_before,
            };
            if a.mode == Mode::Mirror {
                summary = Some(format!("{n} inserted, 0 updated, 0 deleted, 0 unchanged"));
                outcome.merged = Some(Default::default());
            }
            (n, 0, n, n >= source_rows)
        }
        Some(stage) if a.mode == Mode::Mirror => {
            let m = merge::merge_mirror(tx, &p.qt, stage, &p.columns, &segments, &p.key, source_rows)?;
            merge::drop_stage(tx, stage)?;
            summary = Some(format!(
                "{} inserted, {} updated, {} deleted, {} unchanged",
                m.inserted, m.updated, m.deleted, m.unchanged
            ));
            outcome.merged = Some(MergeCounts { updated: m.updated, deleted: m.deleted, unchanged: m.unchanged });
            // Equal to the stream: every key of it present, and nothing else in the table.
            let equal = m.present == source_rows && m.rows_after == source_rows;
            (m.inserted, m.updated + m.unchanged, if equal { source_rows } else { m.present.min(m.rows_after) }, equal)
        }
        Some(stage) => {
            let m = merge::merge_stage(tx, &p.qt, stage, &p.columns, &segments, &p.key, a.mode, source_rows)?;
            merge::drop_stage(tx, stage)?;
            if a.mode == Mode::Upsert {
                let unchanged = m.present - m.updated;
                summary = Some(format!(
                    "{} rows inserted, {} already present ({} updated, {unchanged} unchanged)",
                    m.inserted, m.present, m.updated
                ));
                outcome.merged = Some(MergeCounts { updated: m.updated, deleted: 0, unchanged });
            }
            (m.inserted, m.present, m.present_after, m.present_after >= source_rows)
        }
    };
    outcome.inserted_rows = Some(inserted);
    outcome.present_rows = Some(present);
    outcome.dest_rows = Some(dest);

    schema::advance_sequences(tx, &p.qt, &p.columns, &segments, a.dry_run)?;
    let count_line = format!("Source: {source_rows} rows → Postgres: {dest} rows {}", if verified { "✓" } else { "✗" });
    let summary = summary.unwrap_or_else(|| format!("{inserted} rows inserted, {present} already present"));
    Ok(Loaded { verified, count_line, notes, summary })
}

/// The run log's `source` from the end record: `sqlite:app.db:orders` and the like.
fn describe_source(end: &EndRecord) -> String {
    let f = |k: &str| end.fields.get(k).and_then(Value::as_str).map(str::to_string);
    let mut parts = vec![];
    for k in ["source", "database", "table", "collection", "group", "document"] {
        if let Some(v) = f(k) {
            parts.push(v);
        }
    }
    parts.join(":")
}

/// Whether a primary key, unique or exclusion constraint of `table` is checked at COMMIT
/// (INITIALLY DEFERRED): a repeat in its rows would fail the COMMIT, not the COPY, so they
/// cannot be tried into the indexed table first (rows::Streaming::hold_first).
fn checks_keys_at_commit(tx: &mut Transaction, table: &Table) -> Result<bool> {
    Ok(tx
        .query_typed(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1 AND contype IN ('p', 'u', 'x') AND condeferred)",
            &[(&table.oid, Type::OID)],
        )
        .map_err(|e| pg_error("look at the table's constraints", e))?[0]
        .get(0))
}

/// Whether, after COPY into `table` found empty under this transaction's lock (which no other
/// writer passes), the rows it holds are exactly the rows the server's COPY tags reported
/// stored: so when no trigger of its own or of a partition's could delete or add rows (a
/// BEFORE trigger's skipped row is not in the tag either; COPY applies no rules) and every
/// partition is an ordinary table (not a foreign one, whose server may do anything). Then the
/// count check needs no `count(*)`, which took 0.12 s of a 2.4 s load of 2M rows.
fn copy_count_is_exact(tx: &mut Transaction, table: &Table) -> Result<bool> {
    Ok(tx
        .query_typed(
            "WITH rels AS (SELECT $1::regclass::oid AS relid UNION SELECT relid FROM pg_partition_tree($1::regclass)) \
             SELECT NOT EXISTS (SELECT 1 FROM rels JOIN pg_class c ON c.oid = rels.relid \
               WHERE c.relkind NOT IN ('r', 'p') \
                  OR EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal))",
            &[(&table.oid, Type::OID)],
        )
        .map_err(|e| pg_error("look at the table's triggers", e))?[0]
        .get(0))
}

pub fn count(tx: &mut Transaction, qt: &str) -> Result<i64> {
    // One round trip (no statement to prepare first).
    Ok(tx.query_typed(&format!("SELECT count(*) FROM {qt}"), &[]).map_err(|e| pg_error("count rows", e))?[0].get(0))
}

/// Whether a load in `mode` with `outcome` may have changed the table's rows: a converging
/// re-run (every row already present in insert mode, an unchanged mirror or upsert) did not.
/// Replace emptied the table.
pub fn changed_rows(mode: Mode, outcome: &Outcome) -> bool {
    let inserted = outcome.inserted_rows != Some(0);
    match mode {
        Mode::Insert | Mode::Append => inserted,
        Mode::Mirror | Mode::Upsert => inserted || outcome.merged.is_none_or(|m| m.updated != 0 || m.deleted != 0),
        Mode::Replace => true,
    }
}

/// Writes the report (when asked for), then makes the statistics a committed load owes: the
/// outcome is told, on stderr and in the report, before ANALYZE, which cannot change it. A
/// signal once COMMIT was sent ends the process by that signal at the end, the outcome said.
pub fn conclude(report: Option<&Report>, tables: &[report::Table], result: Result<Statistics>) -> Result<Status> {
    match result {
        Ok(statistics) => {
            let status = report::finish(report, tables, Ok(Status::Ok));
            statistics.make();
            match (signals::received(), &status) {
                (Some(sig), Ok(_)) if signals::commit_was_sent() => signals::end_by(sig),
                _ => status,
            }
        }
        Err(e) => report::finish(report, tables, Err(e)),
    }
}

/// A loaded table owed statistics: its qualified name, its name as the user gave it, and
/// whether the load may have changed its rows (see `changed_rows`).
pub type Owed = (String, String, bool);

/// The statistics a committed load owes its tables: ANALYZE, or VACUUM (ANALYZE), made only
/// once the load's outcome is said and its report written, so that nothing that befalls
/// them (a signal, a kill, a failure: only warnings) keeps the commit from being told.
#[derive(Default)]
pub struct Statistics {
    session: Option<crate::Session>,
    analyze: Vec<Owed>,
    vacuum: Vec<Owed>,
    /// --lock-timeout: how long a table another session holds is waited for.
    lock_wait: u32,
}

impl Statistics {
    /// `session`'s committed load owes `analyze` an ANALYZE and `vacuum` a VACUUM (ANALYZE),
    /// waiting `lock_wait` seconds at most for a table another session holds.
    pub fn owed(session: crate::Session, analyze: Vec<Owed>, vacuum: Vec<Owed>, lock_wait: u32) -> Statistics {
        Statistics { session: Some(session), analyze, vacuum, lock_wait }
    }

    /// Makes them (analyze.rs). A signal stops that; a warning names what it left undone.
    pub fn make(self) {
        let Some(mut s) = self.session else { return };
        signals::after_commit();
        let mut undone: Vec<(&str, analyze::Undone)> = vec![];
        for (tables, vacuum) in [(&self.analyze, false), (&self.vacuum, true)] {
            if tables.is_empty() {
                continue;
            }
            let sql = if vacuum { "VACUUM (ANALYZE)" } else { "ANALYZE" };
            if signals::received().is_some() {
                let all = tables.iter().map(|(qt, name, _)| (qt.clone(), name.clone())).collect();
                undone.push((sql, analyze::Undone { tables: all, sure: true }));
            } else if s.client.is_closed() {
                let names: Vec<&str> = tables.iter().map(|t| t.1.as_str()).collect();
                warn!(TOOL, "{sql} {} skipped (the connection is gone): run it yourself", names.join(", "));
            } else {
                let these: Vec<(&str, &str, bool)> =
                    tables.iter().map(|(q, n, c)| (q.as_str(), n.as_str(), *c)).collect();
                let u = analyze::after_commit(&mut s.client, s.pid, &s.load_target, &these, vacuum, self.lock_wait);
                undone.push((sql, u));
            }
        }
        let Some(sig) = signals::received() else { return };
        for (sql, u) in undone.iter().filter(|(_, u)| !u.tables.is_empty()) {
            let names: Vec<&str> = u.tables.iter().map(|(_, n)| n.as_str()).collect();
            let qts: Vec<&str> = u.tables.iter().map(|(q, _)| q.as_str()).collect();
            let what = match u.sure {
                true => format!("no fresh statistics for {}", names.join(", ")),
                false => format!("{} may lack fresh statistics (the server could not be asked)", names.join(", ")),
            };
            warn!(
                TOOL,
                "{} stopped the {sql} after the commit (the data is committed): {what}; run {sql} {}",
                signals::name(sig),
                qts.join(", ")
            );
        }
    }
}
