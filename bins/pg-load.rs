//! pg-load: NDJSON on stdin into one PostgreSQL table, in one transaction.

use pgferry::cli::{self, Status};
use pgferry::convert::{self, Cell, ColumnInfo, EpochUnit, Options};
use pgferry::pg::{self, pg_cause, pg_error, quote_ident, Table};
use pgferry::runlog::{Outcome, RunLog};
use pgferry::stream::{EndRecord, RowReader};
use pgferry::{note, Error, Result};
use postgres::Transaction;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

#[path = "pg-load/preflight.rs"]
mod preflight;

const TOOL: &str = "pg-load";

const USAGE: &str = "\
pg-load: load an NDJSON stream into one PostgreSQL table, all rows or none.

Reads the stream (docs/stream.md) on stdin and loads it into the existing table
TABLE in one transaction, converting each value by its column's type (see
docs/loading.md). Before committing it verifies the count:
  Source: N rows → Postgres: N rows ✓
Fewer rows in PostgreSQL than in the source rolls everything back. Every run,
success or failure, is recorded in _migration_runs. Re-running the same load
changes nothing: rows already present are reported as such.

Usage:
  pg-load [options] TABLE
  pg-load --plan PLAN --resolve [--from STEP | --steps A,B]
  pg-load --plan PLAN --preflight [--app-env FILE] [--app-url-var VAR]

Options:
  --db URL              PostgreSQL connection URL or 'key=value' string
                        [default: $DATABASE_URL, else the PG* variables].
  --mode MODE           insert: skip rows whose key is already present
                        (ON CONFLICT DO NOTHING); upsert: update them;
                        append: plain COPY, duplicates are errors;
                        replace: empty the table first (TRUNCATE) [default: insert].
  --key COLS            Key that identifies a row [default: the primary key].
  --epoch-unit UNIT     Numbers in timestamp/date columns are Unix epochs in
                        UNIT: s, ms, us or ns [default: numbers are refused].
  --assume-tz OFFSET    Zone of timestamps without an offset going into
                        timestamptz: UTC or ±HH:MM [default: UTC].
  --ignore-unknown      Drop keys that match no column instead of failing.
  --strip-nul           Remove NUL characters from text (PostgreSQL cannot store
                        them) instead of failing.
  --defer-fks           Load rows whose parents are not loaded yet: the table's
                        foreign keys are dropped for the load and re-added NOT
                        VALID; validate them later (the command is printed).
  --ensure-partitions   The target is range-partitioned by time: create the
                        partitions the rows need (as pg-partition ensure does,
                        same names, same lock) in the load's transaction.
  --partition-interval I  daily, monthly or yearly [default: monthly].
  --no-end-record       Accept a foreign stream without the end record.
  --dry-run             Do everything, report, then roll back.
  --no-analyze          Skip ANALYZE after the load.
  --source NAME         What to record as the source [default: from the stream].
  --runs-table NAME     Run log table [default: _migration_runs].
  --lock-timeout SECS   Wait this long for the table lock [default: 10].
  --resolve             With --plan: print the plan's steps resolved (the commands
                        the runbook scripts run; docs/plan.md), one JSON object
                        per line, and load nothing.
  --preflight           With --plan: check, changing nothing, that every step can
                        load as this role (sources, tables, the privileges its
                        mode needs, RLS, sequences, partitions), one 'ok' or
                        'MISSING' line each; exit 1 if one is missing. With
                        --app-env FILE (a KEY=VALUE file) or --app-url-var VAR
                        alone (this environment), also that the role in VAR
                        [default: DATABASE_URL] can read and write every target
                        and use its sequences (the app after cutover).
  -h, --help            Show this help.
  -V, --version         Show the version.

Input:
  stdin: the stream. TABLE may be schema-qualified (crm.orders); quote mixed
  case as in SQL ('\"Orders\"').

Output:
  stderr: the count line and a summary. Nothing on stdout.

Exit status:
  0 loaded and verified; 1 count verification failed (rolled back);
  64 usage error; 65 bad input data (nothing committed); 66 table missing;
  69 PostgreSQL unavailable; 74 I/O error; 75 temporary failure (lock
  timeout, serialization failure): retrying may succeed.

Examples:
  sqlite-dump app.sqlite melody_drafts | pg-load melody_drafts
  fs-export --group orders --parent-field customer_id | pg-load crm_orders
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Insert,
    Upsert,
    Append,
    Replace,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Insert => "insert",
            Mode::Upsert => "upsert",
            Mode::Append => "append",
            Mode::Replace => "replace",
        }
    }
}

struct Args {
    table: String,
    db: Option<String>,
    mode: Mode,
    key: Vec<String>,
    opts: Options,
    ignore_unknown: bool,
    defer_fks: bool,
    ensure_partitions: Option<pgferry::partition::Interval>,
    require_end: bool,
    dry_run: bool,
    analyze: bool,
    source: Option<String>,
    runs_table: String,
    lock_timeout: u32,
}

fn parse(args: &mut pico_args::Arguments) -> Result<Args> {
    let mode = match cli::opt(args, "--mode")?.as_deref().unwrap_or("insert") {
        "insert" => Mode::Insert,
        "upsert" => Mode::Upsert,
        "append" => Mode::Append,
        "replace" => Mode::Replace,
        other => return Err(Error::Usage(format!("--mode must be insert, upsert, append or replace, not '{other}'"))),
    };
    let epoch = match cli::opt(args, "--epoch-unit")? {
        Some(u) => Some(
            EpochUnit::parse(&u)
                .ok_or_else(|| Error::Usage(format!("--epoch-unit must be s, ms, us or ns, not '{u}'")))?,
        ),
        None => None,
    };
    let assume_offset = match cli::opt(args, "--assume-tz")? {
        Some(z) => pgferry::timefmt::parse_offset(&z).ok_or_else(|| {
            Error::Usage(format!("--assume-tz takes UTC or a fixed offset such as +02:00, not '{z}'"))
        })?,
        None => 0,
    };
    let lock_timeout = match cli::opt(args, "--lock-timeout")? {
        Some(s) => s.parse().map_err(|_| Error::Usage(format!("--lock-timeout takes seconds, not '{s}'")))?,
        None => 10,
    };
    let a = Args {
        db: cli::opt(args, "--db")?,
        mode,
        key: cli::list(args, "--key")?,
        opts: Options { assume_offset, epoch, strip_nul: args.contains("--strip-nul") },
        ignore_unknown: args.contains("--ignore-unknown"),
        defer_fks: args.contains("--defer-fks"),
        ensure_partitions: {
            let interval = cli::opt(args, "--partition-interval")?;
            match (args.contains("--ensure-partitions"), interval) {
                (true, i) => Some(pgferry::partition::Interval::parse(i.as_deref().unwrap_or("monthly"))?),
                (false, Some(_)) => {
                    return Err(Error::Usage("--partition-interval goes with --ensure-partitions".into()))
                }
                (false, None) => None,
            }
        },
        require_end: !args.contains("--no-end-record"),
        dry_run: args.contains("--dry-run"),
        analyze: !args.contains("--no-analyze"),
        source: cli::opt(args, "--source")?,
        runs_table: cli::opt(args, "--runs-table")?.unwrap_or_else(|| "_migration_runs".into()),
        lock_timeout,
        table: cli::positional(args, "TABLE")?,
    };
    Ok(a)
}

fn run(args: &mut pico_args::Arguments) -> Result<Status> {
    if args.contains("--resolve") {
        return pgferry::plan::resolve_command(args);
    }
    if args.contains("--preflight") {
        let a = preflight::parse(args)?;
        cli::finish(std::mem::replace(args, pico_args::Arguments::from_vec(vec![])))?;
        return preflight::run(a);
    }
    let a = parse(args)?;
    cli::finish(std::mem::replace(args, pico_args::Arguments::from_vec(vec![])))?;
    let target = pg::Target::resolve(a.db.as_deref())?;
    let mut client = target.connect()?;
    let pid: i32 =
        client.query_one("SELECT pg_backend_pid()", &[]).map_err(|e| pg_error("ask the server for its pid", e))?.get(0);
    let mut log = RunLog::start(target.connect()?, &a.runs_table, TOOL, &a.table, a.mode.name(), pid)?;
    let started = Instant::now();
    let mut outcome = Outcome::default();
    let result = load(&mut client, &a, &mut outcome);
    match result {
        Ok(report) => {
            let state = if a.dry_run {
                "dry-run"
            } else if report.verified {
                "success"
            } else {
                "failed"
            };
            let err = (!report.verified).then(|| report.mismatch.clone());
            log.finish(state, &outcome, err.as_deref())?;
            if !report.verified {
                note!(TOOL, "{}: {}; rolled back, nothing was committed", a.table, report.mismatch);
                return Ok(Status::CheckFailed);
            }
            if a.analyze && !a.dry_run {
                if let Err(e) = client.batch_execute(&format!("ANALYZE {}", report.qualified)) {
                    note!(TOOL, "warning: ANALYZE {}: {}", a.table, pg_cause(&e));
                }
            }
            let secs = started.elapsed().as_secs_f64();
            let rate = outcome.source_rows.unwrap_or(0) as f64 / secs.max(1e-9);
            note!(
                TOOL,
                "{}{}: {} rows inserted, {} already present; {:.1}s, {:.0} rows/s; run {} in {}",
                a.table,
                if a.dry_run { " (dry run: rolled back)" } else { "" },
                outcome.inserted_rows.unwrap_or(0),
                outcome.present_rows.unwrap_or(0),
                secs,
                rate,
                log.id(),
                a.runs_table
            );
            for line in &report.notes {
                note!(TOOL, "{}: {line}", a.table);
            }
            Ok(Status::Ok)
        }
        Err(e) => {
            let e = e.append("; nothing was committed");
            log.finish("failed", &outcome, Some(e.message()))?;
            Err(e.context(&a.table))
        }
    }
}

struct Report {
    qualified: String,
    verified: bool,
    mismatch: String,
    /// Further lines for the operator (partitions created, foreign keys to validate).
    notes: Vec<String>,
}

/// Which columns a COPY carries, and whether each has a binary encoder.
struct Plan {
    columns: Vec<ColumnInfo>,
    binary: bool,
}

impl Plan {
    /// The column named `key`, looking first where the previous key's successor is: streams
    /// usually list keys in column order, so this is one comparison per key.
    fn find(&self, key: &str, hint: usize) -> Option<usize> {
        if self.columns.get(hint).is_some_and(|c| c.name == key) {
            return Some(hint);
        }
        self.columns.iter().position(|c| c.name == key)
    }
}

fn load(client: &mut postgres::Client, a: &Args, outcome: &mut Outcome) -> Result<Report> {
    let mut tx = client.transaction().map_err(|e| pg_error("begin", e))?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{}s'; SET LOCAL TimeZone = 'UTC'", a.lock_timeout))
        .map_err(|e| pg_error("set up the session", e))?;
    let table = Table::resolve(&mut tx, &a.table)?;
    if table.kind != 'r' && table.kind != 'p' {
        return Err(Error::Usage(format!(
            "'{}' is not a table (pg-load loads ordinary and partitioned tables)",
            a.table
        )));
    }
    let qt = table.qualified();
    tx.batch_execute(&format!("LOCK TABLE {qt} IN SHARE ROW EXCLUSIVE MODE")).map_err(|e| {
        match pg_error("lock", e) {
            Error::TempFail(m) => {
                Error::TempFail(format!("{m} (another session holds the table: another pg-load, or the application?)"))
            }
            other => other,
        }
    })?;
    let columns = convert::table_columns(&mut tx, table.oid, &qt)?;
    let key = match a.key.is_empty() {
        true => primary_key(&mut tx, table.oid)?,
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
    let empty = tx
        .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {qt})"), &[])
        .map_err(|e| pg_error("look at the table", e))?
        .get::<_, bool>(0);
    // Partitions the rows need are known only once every row is read: stage them first.
    let ensure = a.ensure_partitions.filter(|_| table.kind == 'p');
    if a.ensure_partitions.is_some() && table.kind != 'p' {
        return Err(Error::Usage(format!("--ensure-partitions: '{}' is not a partitioned table", a.table)));
    }
    let staged = ensure.is_some() || (!empty && matches!(a.mode, Mode::Insert | Mode::Upsert));
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
    let rows_before: i64 = if empty || staged { 0 } else { count(&mut tx, &qt)? };
    let deferred = if a.defer_fks { drop_foreign_keys(&mut tx, &table)? } else { vec![] };

    let loadable: Vec<ColumnInfo> = columns.iter().filter(|c| !c.generated).cloned().collect();
    let plan = Plan { binary: loadable.iter().all(|c| c.kind.has_binary()), columns: loadable };
    let generated: Vec<&str> = columns.iter().filter(|c| c.generated).map(|c| c.name.as_str()).collect();

    let stdin = std::io::stdin();
    let mut reader = RowReader::new(std::io::BufReader::with_capacity(1 << 17, stdin.lock()), a.require_end);
    let mut sink = CopySink::new(&plan, &table);
    let stage = if staged { Some(create_stage(&mut tx, &qt)?) } else { None };
    // Recorded even when the load fails: the run log says what was attempted and how far it got.
    outcome.source = a.source.clone();
    let segments = match stream_rows(&mut tx, &mut reader, &plan, &generated, a, &mut sink, stage.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            outcome.source_rows = Some(reader.rows() as i64);
            return Err(e);
        }
    };
    let source_rows = reader.rows() as i64;
    outcome.source_rows = Some(source_rows);
    outcome.source = a.source.clone().or_else(|| reader.end_record().map(describe_source));

    let mut notes = vec![];
    if let (Some(interval), Some(stage)) = (ensure, &stage) {
        notes.extend(ensure_partitions(&mut tx, &table, stage, interval, a.lock_timeout)?);
    }
    let (inserted, present, dest) = match &stage {
        None => {
            let after = count(&mut tx, &qt)?;
            (after - rows_before, 0, after - rows_before)
        }
        Some(stage) => merge_stage(&mut tx, &qt, stage, &plan, &segments, &key, a.mode, source_rows)?,
    };
    outcome.inserted_rows = Some(inserted);
    outcome.present_rows = Some(present);
    outcome.dest_rows = Some(dest);

    advance_sequences(&mut tx, &qt, &plan, &segments)?;
    if !deferred.is_empty() {
        notes.push(restore_foreign_keys(&mut tx, &table, &deferred)?);
    }
    let verified = dest >= source_rows;
    let line = format!("Source: {source_rows} rows → Postgres: {dest} rows {}", if verified { "✓" } else { "✗" });
    note!(TOOL, "{}: {line}", a.table);
    let mismatch = if verified { String::new() } else { format!("count mismatch: {line}") };
    if a.dry_run || !verified {
        tx.rollback().map_err(|e| pg_error("roll back", e))?;
    } else {
        tx.commit().map_err(|e| pg_error("commit", e))?;
    }
    Ok(Report { qualified: qt, verified, mismatch, notes })
}

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

fn count(tx: &mut Transaction, qt: &str) -> Result<i64> {
    Ok(tx.query_one(&format!("SELECT count(*) FROM {qt}"), &[]).map_err(|e| pg_error("count rows", e))?.get(0))
}

fn primary_key(tx: &mut Transaction, oid: u32) -> Result<Vec<String>> {
    let rows = tx
        .query(
            "SELECT a.attname::text FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .map_err(|e| pg_error("read the primary key", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A unique index (or constraint) on exactly these columns, usable by ON CONFLICT.
fn has_unique_index(tx: &mut Transaction, oid: u32, key: &[String]) -> Result<bool> {
    let rows = tx
        .query(
            "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) k(attnum) JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL GROUP BY i.indexrelid",
            &[&oid],
        )
        .map_err(|e| pg_error("read unique indexes", e))?;
    let mut want: Vec<String> = key.to_vec();
    want.sort();
    Ok(rows.iter().any(|r| r.get::<_, Vec<String>>(0) == want))
}

// ---------------------------------------------------------------- streaming

/// The set of defaulted columns a row leaves out: rows with the same set share a COPY
/// (direct path) or a merge statement (staged path).
type Signature = Vec<usize>;

/// Streams rows into COPY. Returns the distinct signatures seen, indexed by segment id.
fn stream_rows<R: std::io::BufRead>(
    tx: &mut Transaction,
    reader: &mut RowReader<R>,
    plan: &Plan,
    generated: &[&str],
    a: &Args,
    sink: &mut CopySink,
    stage: Option<&str>,
) -> Result<Vec<Signature>> {
    let n = plan.columns.len();
    let mut rows = RowSource {
        segments: vec![],
        seg_ids: HashMap::new(),
        cells: vec![None; n],
        unknown: vec![],
        sig: vec![],
        last_seg: None,
    };
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = Instant::now();
    // The row read but not yet sent: it opens the next COPY.
    let mut pending = rows.next(reader, plan, generated, a)?;
    while let Some((first_line, seg)) = pending.take() {
        // Direct path: one COPY per run of rows with the same defaulted columns left out.
        // Staged path: one COPY of every column plus the segment id.
        let mut w = match stage {
            None => {
                let cols: Vec<usize> = (0..n).filter(|i| !rows.segments[seg].contains(i)).collect();
                let target = sink.target_sql(&cols);
                sink.begin(tx, &target, cols)?
            }
            Some(stage) => sink.begin_stage(tx, stage, (0..n).collect())?,
        };
        let mut line = first_line;
        let mut cur = seg;
        loop {
            sink.encode_row(&mut rows.cells, line, stage.map(|_| cur as i32));
            if let Err(e) = sink.maybe_flush(&mut w) {
                return Err(sink.server_error(e, Some(w)));
            }
            if progress && reader.rows().is_multiple_of(100_000) {
                eprint!(
                    "\r{TOOL}: {} rows, {:.0} rows/s",
                    reader.rows(),
                    reader.rows() as f64 / started.elapsed().as_secs_f64()
                );
            }
            match rows.next(reader, plan, generated, a) {
                Ok(Some((l, s))) if stage.is_some() || s == seg => {
                    line = l;
                    cur = s;
                }
                Ok(Some(next)) => {
                    pending = Some(next);
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    drop(w);
                    return Err(e);
                }
            }
        }
        sink.finish(w)?;
    }
    if progress && reader.rows() >= 100_000 {
        eprintln!();
    }
    Ok(rows.segments)
}

/// Reads rows from the stream and converts them into `cells` (one slot per loadable column;
/// `None` = key missing).
struct RowSource {
    segments: Vec<Signature>,
    seg_ids: HashMap<Signature, usize>,
    cells: Vec<Option<Cell>>,
    unknown: Vec<String>,
    /// The current row's signature (reused buffer) and the previous row's segment.
    sig: Signature,
    last_seg: Option<usize>,
}

impl RowSource {
    /// The next row's line and segment id, its values converted into `self.cells`.
    fn next<R: std::io::BufRead>(
        &mut self,
        reader: &mut RowReader<R>,
        plan: &Plan,
        generated: &[&str],
        a: &Args,
    ) -> Result<Option<(u64, usize)>> {
        let Some((line, text)) = reader.next_raw()? else { return Ok(None) };
        for c in self.cells.iter_mut() {
            *c = None;
        }
        match parse_borrowed(text) {
            // The fast path: keys without escapes, values converted from their JSON text.
            Some(pairs) => {
                let mut hint = 0;
                for (k, raw) in pairs {
                    let Some(i) = plan.find(k, hint) else {
                        self.note_unknown(k, a);
                        continue;
                    };
                    hint = i + 1;
                    let col = &plan.columns[i];
                    let cell = match convert::convert_raw(raw.get(), &col.kind, &a.opts) {
                        Some(c) => c,
                        None => {
                            let v: Value = serde_json::from_str(raw.get())
                                .map_err(|e| Error::Data(format!("line {line}: malformed JSON: {e}")))?;
                            convert_value(&v, col, &a.opts, line)?
                        }
                    };
                    self.cells[i] = Some(cell);
                }
            }
            // Anything unusual (escaped keys, malformed JSON): the general parser and its messages.
            None => {
                let fields = pgferry::stream::parse_row(text, line)?;
                for (k, v) in &fields {
                    match plan.find(k, 0) {
                        Some(i) => self.cells[i] = Some(convert_value(v, &plan.columns[i], &a.opts, line)?),
                        None => self.note_unknown(k, a),
                    }
                }
            }
        }
        if !self.unknown.is_empty() {
            let gen: Vec<&String> = self.unknown.iter().filter(|k| generated.contains(&k.as_str())).collect();
            let msg = if !gen.is_empty() {
                format!("line {line}: key '{}' is a generated column, which cannot be loaded; drop it from the stream or pass --ignore-unknown", gen[0])
            } else {
                let cols: Vec<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "line {line}: keys that match no column of '{}': {} (the table has: {}); pass --ignore-unknown to drop them",
                    a.table,
                    self.unknown.join(", "),
                    cols.join(", ")
                )
            };
            return Err(Error::Data(msg));
        }
        for (i, col) in plan.columns.iter().enumerate() {
            // Checked here so the staged path, where the server sees NULLs only at the merge,
            // still names the line. A missing key with a default is not a NULL.
            let null_given = self.cells[i].as_ref().map_or(!col.has_default, |c| *c == Cell::Null);
            if null_given && col.not_null {
                return Err(Error::Data(format!(
                    "line {line}, column '{}': null (or missing) in a NOT NULL column",
                    col.name
                )));
            }
        }
        // Consecutive rows almost always leave out the same columns: compare with the last
        // row's signature before hashing.
        self.sig.clear();
        self.sig.extend((0..self.cells.len()).filter(|&i| self.cells[i].is_none() && plan.columns[i].has_default));
        let seg = match self.last_seg.filter(|&s| self.segments[s] == self.sig) {
            Some(s) => s,
            None => match self.seg_ids.get(&self.sig) {
                Some(&s) => s,
                None => {
                    self.segments.push(self.sig.clone());
                    self.seg_ids.insert(self.sig.clone(), self.segments.len() - 1);
                    self.segments.len() - 1
                }
            },
        };
        self.last_seg = Some(seg);
        Ok(Some((line, seg)))
    }

    fn note_unknown(&mut self, key: &str, a: &Args) {
        if !a.ignore_unknown {
            self.unknown.push(key.to_string());
        }
    }
}

fn convert_value(v: &Value, col: &ColumnInfo, opts: &Options, line: u64) -> Result<Cell> {
    convert::convert(v, &col.kind, opts).map_err(|cause| {
        convert::conversion_error(line, &col.name, v, &format!("{cause} (column type {})", col.type_name))
    })
}

/// A row's keys and raw values, borrowed from the line; `None` when a key has escapes, a key
/// repeats, or the line is not a JSON object (the general path then explains).
fn parse_borrowed(text: &str) -> Option<Vec<(&str, &serde_json::value::RawValue)>> {
    struct Pairs;
    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = Vec<(&'de str, &'de serde_json::value::RawValue)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> std::result::Result<Self::Value, M::Error> {
            let mut out = Vec::with_capacity(16);
            while let Some(k) = m.next_key::<&'de str>()? {
                out.push((k, m.next_value::<&'de serde_json::value::RawValue>()?));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let pairs = serde::Deserializer::deserialize_map(&mut de, Pairs).ok()?;
    de.end().ok()?;
    for (i, (k, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(k2, _)| k2 == k) {
            return None;
        }
    }
    Some(pairs)
}

/// Encodes rows into COPY data and sends it; maps server errors back to input lines.
struct CopySink {
    buf: Vec<u8>,
    binary: bool,
    table: Table,
    /// Columns of the current COPY, by index into the plan.
    cols: Vec<usize>,
    col_names: Vec<String>,
    /// Input line of each of the last rows sent, for the server's "COPY t, line N".
    recent_lines: std::collections::VecDeque<u64>,
    rows_in_copy: u64,
    staged: bool,
}

const RECENT: usize = 1 << 16;

impl CopySink {
    fn new(plan: &Plan, table: &Table) -> CopySink {
        CopySink {
            buf: Vec::with_capacity(1 << 18),
            binary: plan.binary,
            table: table.clone(),
            cols: vec![],
            col_names: plan.columns.iter().map(|c| c.name.clone()).collect(),
            recent_lines: std::collections::VecDeque::with_capacity(RECENT),
            rows_in_copy: 0,
            staged: false,
        }
    }

    fn target_sql(&self, cols: &[usize]) -> String {
        let list: Vec<String> = cols.iter().map(|&i| quote_ident(&self.col_names[i])).collect();
        format!("{} ({})", self.table.qualified(), list.join(", "))
    }

    fn begin<'a>(
        &mut self,
        tx: &'a mut Transaction,
        target: &str,
        cols: Vec<usize>,
    ) -> Result<postgres::CopyInWriter<'a>> {
        self.cols = cols;
        self.staged = false;
        self.open(tx, target)
    }

    fn begin_stage<'a>(
        &mut self,
        tx: &'a mut Transaction,
        stage: &str,
        cols: Vec<usize>,
    ) -> Result<postgres::CopyInWriter<'a>> {
        // The stage table has every loadable column in order, then _pgferry_seg.
        let list: Vec<String> = cols.iter().map(|&i| quote_ident(&self.col_names[i])).collect();
        let target = format!("{stage} ({}, _pgferry_seg, _pgferry_line)", list.join(", "));
        self.cols = cols;
        self.staged = true;
        self.open(tx, &target)
    }

    fn open<'a>(&mut self, tx: &'a mut Transaction, target: &str) -> Result<postgres::CopyInWriter<'a>> {
        let fmt = if self.binary { "(FORMAT binary)" } else { "(FORMAT text)" };
        let w = tx.copy_in(&format!("COPY {target} FROM STDIN {fmt}")).map_err(|e| pg_error("start COPY", e))?;
        self.buf.clear();
        self.recent_lines.clear();
        self.rows_in_copy = 0;
        if self.binary {
            self.buf.extend_from_slice(convert::BINARY_HEADER);
        }
        Ok(w)
    }

    fn encode_row(&mut self, cells: &mut [Option<Cell>], line: u64, seg: Option<i32>) {
        let nfields = self.cols.len() + 2 * seg.is_some() as usize;
        if self.binary {
            self.buf.extend_from_slice(&(nfields as i16).to_be_bytes());
        }
        for (pos, &i) in self.cols.iter().enumerate() {
            let cell = cells[i].take().unwrap_or(Cell::Null);
            if self.binary {
                convert::encode_binary(&cell, &mut self.buf);
            } else {
                if pos > 0 {
                    self.buf.push(b'\t');
                }
                convert::encode_text(&cell, &mut self.buf);
            }
        }
        if let Some(s) = seg {
            if self.binary {
                convert::encode_binary(&Cell::Int4(s), &mut self.buf);
                convert::encode_binary(&Cell::Int8(line as i64), &mut self.buf);
            } else {
                let _ = write!(self.buf, "\t{s}\t{line}");
            }
        }
        if !self.binary {
            self.buf.push(b'\n');
        }
        if self.recent_lines.len() == RECENT {
            self.recent_lines.pop_front();
        }
        self.recent_lines.push_back(line);
        self.rows_in_copy += 1;
    }

    fn maybe_flush(&mut self, w: &mut postgres::CopyInWriter) -> std::io::Result<()> {
        if self.buf.len() >= 1 << 18 {
            w.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(&mut self, mut w: postgres::CopyInWriter) -> Result<u64> {
        if self.binary {
            self.buf.extend_from_slice(convert::BINARY_TRAILER);
        }
        if let Err(e) = w.write_all(&self.buf) {
            return Err(self.server_error(e, Some(w)));
        }
        self.buf.clear();
        w.finish().map_err(|e| self.copy_error(e))
    }

    /// A write failed: the server reported an error; `finish` returns it.
    fn server_error(&mut self, e: std::io::Error, w: Option<postgres::CopyInWriter>) -> Error {
        match w {
            Some(w) => match w.finish() {
                Err(pe) => self.copy_error(pe),
                Ok(_) => Error::io("send COPY data", e),
            },
            None => Error::io("send COPY data", e),
        }
    }

    /// Turns the server's COPY error into one naming the input line and column.
    fn copy_error(&self, e: postgres::Error) -> Error {
        let Some(db) = e.as_db_error() else { return pg_error("COPY", e) };
        let (copy_line, column) = parse_copy_context(db.where_().unwrap_or(""));
        let line = copy_line.and_then(|n| {
            let back = self.rows_in_copy.checked_sub(n)? as usize;
            let len = self.recent_lines.len();
            (back < len).then(|| self.recent_lines[len - 1 - back])
        });
        let at = match (line, &column) {
            (Some(l), Some(c)) => format!("line {l}, column '{c}'"),
            (Some(l), None) => format!("line {l}"),
            (None, _) => "COPY".to_string(),
        };
        let code = db.code().code();
        let msg = db.message();
        let detail = db.detail().unwrap_or("");
        let table = self.table.display();
        match code {
            "23514" if msg.starts_with("no partition of relation") => {
                let (col, value) = parse_partition_detail(detail);
                let month = value.get(..7).unwrap_or("YYYY-MM");
                Error::Data(format!(
                    "{at}: no partition of '{table}' accepts {col} = {value} (the month {month} has no partition); \
                     create it with: pg-partition ensure {table} --from {month}, or load with --ensure-partitions"
                ))
            }
            "23505" => {
                Error::Data(format!("{at}: duplicate key: {detail} (the stream or the table already holds this key)"))
            }
            "23502" => Error::Data(format!("{at}: null value in NOT NULL column '{}'", db.column().unwrap_or("?"))),
            "23503" => Error::Data(format!(
                "{at}: {detail}; load the parent table first, or pass --defer-fks to load children before parents"
            )),
            _ if self.staged && code.starts_with("23") => Error::Data(format!("{msg} ({detail})")),
            _ => pg_error(at, e),
        }
    }
}

/// "COPY device_logs, line 3, column received_at: ..." → (3, "received_at").
fn parse_copy_context(w: &str) -> (Option<u64>, Option<String>) {
    let first = w.lines().find(|l| l.starts_with("COPY ")).unwrap_or("");
    let line = first.split(", line ").nth(1).and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
    let column = first.split(", column ").nth(1).map(|s| s.split(':').next().unwrap_or("").to_string());
    (line, column)
}

/// "Partition key of the failing row contains (received_at) = (2024-01-05 00:00:00+00)."
fn parse_partition_detail(d: &str) -> (String, String) {
    let inner = |s: &str| s.trim().trim_start_matches('(').trim_end_matches('.').trim_end_matches(')').to_string();
    match d.split_once(") = (") {
        Some((l, r)) => (inner(l.rsplit('(').next().unwrap_or(l)), inner(r)),
        None => ("the partition key".into(), d.to_string()),
    }
}

// ---------------------------------------------------------------- staged path

fn create_stage(tx: &mut Transaction, qt: &str) -> Result<String> {
    let stage = "pg_temp.pgferry_stage".to_string();
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE pgferry_stage ON COMMIT DROP AS SELECT * FROM {qt} WITH NO DATA; \
         ALTER TABLE {stage} ADD COLUMN _pgferry_seg integer NOT NULL, ADD COLUMN _pgferry_line bigint NOT NULL"
    ))
    .map_err(|e| pg_error("create the staging table", e))?;
    Ok(stage)
}

/// Moves staged rows into the table by key; returns (inserted, already present, present after).
#[allow(clippy::too_many_arguments)]
fn merge_stage(
    tx: &mut Transaction,
    qt: &str,
    stage: &str,
    plan: &Plan,
    segments: &[Signature],
    key: &[String],
    mode: Mode,
    source_rows: i64,
) -> Result<(i64, i64, i64)> {
    if key.is_empty() {
        // Staged only to learn the partitions the rows need, into a table with no key:
        // a plain insert (the table was empty, or --mode append).
        let mut inserted = 0i64;
        for (seg, sig) in segments.iter().enumerate() {
            let cols: Vec<String> = (0..plan.columns.len())
                .filter(|i| !sig.contains(i))
                .map(|i| quote_ident(&plan.columns[i].name))
                .collect();
            let list = cols.join(", ");
            inserted += tx
                .execute(
                    &format!("INSERT INTO {qt} ({list}) SELECT {list} FROM {stage} WHERE _pgferry_seg = {seg}"),
                    &[],
                )
                .map_err(|e| merge_error(qt, e))? as i64;
        }
        return Ok((inserted, 0, inserted));
    }
    let key_list: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    let key_sql = key_list.join(", ");
    let distinct: i64 = tx
        .query_one(&format!("SELECT count(*) FROM (SELECT DISTINCT {key_sql} FROM {stage}) d"), &[])
        .map_err(|e| pg_error("count the stream's keys", e))?
        .get(0);
    if distinct < source_rows {
        let first = tx
            .query_one(
                &format!(
                    "SELECT min(_pgferry_line), max(_pgferry_line), ({key_sql})::text FROM {stage} \
                     GROUP BY {key_sql} HAVING count(*) > 1 ORDER BY 2 LIMIT 1"
                ),
                &[],
            )
            .map_err(|e| pg_error("find the repeated key", e))?;
        return Err(Error::Data(format!(
            "line {}: key ({}) = {} repeats line {} ({} rows of the stream repeat an earlier row's key)",
            first.get::<_, i64>(1),
            key.join(", "),
            first.get::<_, String>(2),
            first.get::<_, i64>(0),
            source_rows - distinct
        )));
    }
    let oid = tx
        .query_one(&format!("SELECT '{}'::regclass::oid", qt.replace('\'', "''")), &[])
        .map_err(|e| pg_error("look up the table", e))?
        .get::<_, u32>(0);
    let on_conflict = has_unique_index(tx, oid, key)?;
    let join = key.iter().map(|k| format!("t.{0} = s.{0}", quote_ident(k))).collect::<Vec<_>>().join(" AND ");
    let mut inserted = 0i64;
    for (seg, sig) in segments.iter().enumerate() {
        let cols: Vec<String> =
            (0..plan.columns.len()).filter(|i| !sig.contains(i)).map(|i| quote_ident(&plan.columns[i].name)).collect();
        let list = cols.join(", ");
        let select = format!(
            "SELECT {} FROM {stage} s WHERE s._pgferry_seg = {seg}",
            cols.iter().map(|c| format!("s.{c}")).collect::<Vec<_>>().join(", ")
        );
        let sql = match (mode, on_conflict) {
            (Mode::Upsert, true) => {
                let sets: Vec<String> =
                    cols.iter().filter(|c| !key_list.contains(c)).map(|c| format!("{c} = EXCLUDED.{c}")).collect();
                let action = if sets.is_empty() {
                    "DO NOTHING".to_string()
                } else {
                    format!("DO UPDATE SET {}", sets.join(", "))
                };
                format!("INSERT INTO {qt} ({list}) {select} ON CONFLICT ({key_sql}) {action} RETURNING (xmax = 0)")
            }
            (Mode::Upsert, false) => {
                return Err(Error::Usage(format!("--mode upsert needs a unique index on ({})", key.join(", "))));
            }
            (_, true) => {
                format!("INSERT INTO {qt} ({list}) {select} ON CONFLICT ({key_sql}) DO NOTHING RETURNING true")
            }
            (_, false) => format!(
                "INSERT INTO {qt} ({list}) {select} AND NOT EXISTS (SELECT 1 FROM {qt} t WHERE {join}) RETURNING true"
            ),
        };
        let counted = format!("WITH ins AS ({sql}) SELECT count(*) FILTER (WHERE ins.x) FROM ins AS ins(x)");
        let n: i64 = tx.query_one(&counted, &[]).map_err(|e| merge_error(qt, e))?.get(0);
        inserted += n;
    }
    let present_after: i64 = tx
        .query_one(
            &format!("SELECT count(*) FROM (SELECT DISTINCT {key_sql} FROM {stage}) s WHERE EXISTS (SELECT 1 FROM {qt} t WHERE {join})"),
            &[],
        )
        .map_err(|e| pg_error("verify the loaded keys", e))?
        .get(0);
    Ok((inserted, source_rows - inserted, present_after))
}

fn merge_error(table: &str, e: postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else { return pg_error("merge staged rows", e) };
    let detail = db.detail().unwrap_or("");
    match db.code().code() {
        "23503" => Error::Data(format!("{detail}; load the parent table first, or pass --defer-fks")),
        "23502" => Error::Data(format!("null value in NOT NULL column '{}'", db.column().unwrap_or("?"))),
        "23505" => Error::Data(format!("duplicate key on another unique constraint: {detail}")),
        "23514" if db.message().starts_with("no partition") => {
            let (col, value) = parse_partition_detail(detail);
            let month = value.get(..7).unwrap_or("YYYY-MM");
            Error::Data(format!(
                "no partition of {table} accepts {col} = {value} (the month {month} has no partition); \
                 create it with: pg-partition ensure {} --from {month}, or load with --ensure-partitions",
                table.replace("\"public\".", "").replace('"', "")
            ))
        }
        _ => pg_error("merge staged rows", e),
    }
}

/// Creates the partitions the staged rows need (pg-partition's code path and lock).
fn ensure_partitions(
    tx: &mut Transaction,
    table: &Table,
    stage: &str,
    interval: pgferry::partition::Interval,
    lock_timeout: u32,
) -> Result<Option<String>> {
    use pgferry::partition;
    let info = partition::inspect(tx, table)?;
    let key = quote_ident(&info.key);
    let row = tx
        .query_one(
            &format!(
                "SELECT (extract(epoch FROM min({key})) * 1000000)::bigint, (extract(epoch FROM max({key})) * 1000000)::bigint \
                 FROM {stage} WHERE {key} IS NOT NULL AND {key} NOT IN ('infinity', '-infinity')"
            ),
            &[],
        )
        .map_err(|e| pg_error("find the range of the partition key", e))?;
    let (Some(min), Some(max)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) else {
        return Ok(None);
    };
    partition::lock(tx, table, std::time::Duration::from_secs(lock_timeout as u64))?;
    let opts = partition::EnsureOptions { interval, dry_run: false, limit: 1000 };
    let report = partition::ensure(tx, table, interval.of_micros(min), interval.of_micros(max), &opts)?;
    if report.created.is_empty() {
        return Ok(None);
    }
    let names: Vec<&str> = report.created.iter().map(|c| c.name.as_str()).collect();
    Ok(Some(format!(
        "created partitions {}{}",
        names.join(", "),
        match report.moved() {
            0 => String::new(),
            n => format!(" ({n} rows moved out of the default partition)"),
        }
    )))
}

// ---------------------------------------------------------------- after the load

/// Moves serial/identity sequences past the highest loaded id, never backwards.
fn advance_sequences(tx: &mut Transaction, qt: &str, plan: &Plan, segments: &[Signature]) -> Result<()> {
    for (i, c) in plan.columns.iter().enumerate() {
        let Some(seq) = &c.sequence else { continue };
        // Only columns the stream supplied: where the sequence itself filled them, it is right.
        if segments.iter().all(|sig| sig.contains(&i)) {
            continue;
        }
        let col = quote_ident(&c.name);
        let sql = format!(
            "SELECT setval($1::text::regclass, m) FROM (SELECT max({col})::bigint AS m FROM {qt}) mx, \
             (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS used FROM {seq}) s \
             WHERE m IS NOT NULL AND m > s.used"
        );
        tx.query(&sql, &[seq]).map_err(|e| pg_error(format!("advance sequence {seq}"), e))?;
    }
    Ok(())
}

struct ForeignKey {
    name: String,
    definition: String,
}

fn drop_foreign_keys(tx: &mut Transaction, table: &Table) -> Result<Vec<ForeignKey>> {
    let rows = tx
        .query("SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1 AND contype = 'f' ORDER BY conname", &[&table.oid])
        .map_err(|e| pg_error("read foreign keys", e))?;
    let fks: Vec<ForeignKey> = rows
        .iter()
        .map(|r| ForeignKey {
            name: r.get(0),
            definition: r.get::<_, String>(1).trim_end_matches(" NOT VALID").to_string(),
        })
        .collect();
    for fk in &fks {
        tx.batch_execute(&format!("ALTER TABLE {} DROP CONSTRAINT {}", table.qualified(), quote_ident(&fk.name)))
            .map_err(|e| pg_error(format!("drop foreign key {} (--defer-fks)", fk.name), e))?;
    }
    Ok(fks)
}

fn restore_foreign_keys(tx: &mut Transaction, table: &Table, fks: &[ForeignKey]) -> Result<String> {
    let mut later = vec![];
    for fk in fks {
        tx.batch_execute(&format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
            table.qualified(),
            quote_ident(&fk.name),
            fk.definition
        ))
        .map_err(|e| pg_error(format!("re-add foreign key {} NOT VALID", fk.name), e))?;
        later.push(format!("ALTER TABLE {} VALIDATE CONSTRAINT {};", table.qualified(), quote_ident(&fk.name)));
    }
    Ok(format!("foreign keys re-added NOT VALID; once the parents are loaded, run: {}", later.join(" ")))
}

fn main() {
    cli::main(TOOL, USAGE, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_context_and_partition_detail() {
        assert_eq!(
            parse_copy_context("COPY device_logs, line 3, column received_at: \"x\""),
            (Some(3), Some("received_at".into()))
        );
        assert_eq!(parse_copy_context("COPY t, line 12"), (Some(12), None));
        assert_eq!(
            parse_partition_detail(
                "Partition key of the failing row contains (received_at) = (2024-01-05 00:00:00+00)."
            ),
            ("received_at".into(), "2024-01-05 00:00:00+00".into())
        );
    }
}
