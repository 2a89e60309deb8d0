//! pg-load: NDJSON on stdin into one PostgreSQL table, in one transaction.

mod copy;
mod merge;
mod preflight;
mod rows;
mod schema;

use copy::CopySink;
use pgferry::catalog::{self, ColumnInfo};
use pgferry::cli::{self, Status};
use pgferry::convert::Options;
use pgferry::pg::{self, pg_cause, pg_error, Table};
use pgferry::runlog::{Outcome, RunLog};
use pgferry::stream::{EndRecord, RowReader};
use pgferry::{note, Error, Result};
use postgres::Transaction;
use rows::Columns;
use serde_json::Value;
use std::time::Instant;

pub const TOOL: &str = "pg-load";

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
  pg-load --plan PLAN --preflight [--app-env FILE] [--app-url-var VAR] [--require-rls TABLES]

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
  --vacuum              VACUUM (ANALYZE) the table after the commit instead of ANALYZE
                        (outside the load's transaction, as VACUUM must be).
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
                        and use its sequences (the app after cutover). With
                        --require-rls TABLES, also that these tables have
                        row-level security enabled. SQLite tables no step
                        copies are listed as 'note' lines.
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
    vacuum: bool,
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
    let opts = Options::from_args(args, Options::default())?;
    let lock_timeout = match cli::opt(args, "--lock-timeout")? {
        Some(s) => s.parse().map_err(|_| Error::Usage(format!("--lock-timeout takes seconds, not '{s}'")))?,
        None => 10,
    };
    let a = Args {
        db: cli::opt(args, "--db")?,
        mode,
        key: cli::list(args, "--key")?,
        opts,
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
        vacuum: args.contains("--vacuum"),
        source: cli::opt(args, "--source")?,
        runs_table: cli::opt(args, "--runs-table")?.unwrap_or_else(|| "_migration_runs".into()),
        lock_timeout,
        table: cli::positional(args, "TABLE")?,
    };
    Ok(a)
}

fn run(a: Args) -> Result<Status> {
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
                return Err(Error::CheckFailed(format!(
                    "{}: {}; rolled back, nothing was committed",
                    a.table, report.mismatch
                )));
            }
            if (a.analyze || a.vacuum) && !a.dry_run {
                // After the commit, on the load's own connection (no transaction is open).
                let sql = if a.vacuum { "VACUUM (ANALYZE)" } else { "ANALYZE" };
                match client.batch_execute(&format!("{sql} {}", report.qualified)) {
                    Ok(()) if a.vacuum => note!(TOOL, "{}: {sql} done", a.table),
                    Ok(()) => {}
                    Err(e) => note!(TOOL, "warning: {sql} {}: {}", a.table, pg_cause(&e)),
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
    let columns = catalog::table_columns(&mut tx, table.oid, &qt)?;
    let key = match a.key.is_empty() {
        true => schema::primary_key(&mut tx, table.oid)?,
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
    let deferred = if a.defer_fks { schema::drop_foreign_keys(&mut tx, &table)? } else { vec![] };

    let loadable: Vec<ColumnInfo> = columns.iter().filter(|c| !c.generated).cloned().collect();
    let plan = Columns { binary: loadable.iter().all(|c| c.kind.has_binary()), columns: loadable };
    let generated: Vec<&str> = columns.iter().filter(|c| c.generated).map(|c| c.name.as_str()).collect();

    let stdin = std::io::stdin();
    let mut reader = RowReader::new(std::io::BufReader::with_capacity(1 << 17, stdin.lock()), a.require_end);
    let mut sink = CopySink::new(&plan, &table);
    let stage = if staged { Some(merge::create_stage(&mut tx, &qt)?) } else { None };
    // Recorded even when the load fails: the run log says what was attempted and how far it got.
    outcome.source = a.source.clone();
    let segments = match rows::stream_rows(&mut tx, &mut reader, &plan, &generated, a, &mut sink, stage.as_deref()) {
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
        notes.extend(schema::ensure_partitions(&mut tx, &table, stage, interval, a.lock_timeout)?);
    }
    let (inserted, present, dest) = match &stage {
        None => {
            let after = count(&mut tx, &qt)?;
            (after - rows_before, 0, after - rows_before)
        }
        Some(stage) => merge::merge_stage(&mut tx, &qt, stage, &plan, &segments, &key, a.mode, source_rows)?,
    };
    outcome.inserted_rows = Some(inserted);
    outcome.present_rows = Some(present);
    outcome.dest_rows = Some(dest);

    schema::advance_sequences(&mut tx, &qt, &plan, &segments)?;
    if !deferred.is_empty() {
        notes.push(schema::restore_foreign_keys(&mut tx, &table, &deferred)?);
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

fn main() {
    // The plan's own commands (docs/plan.md): resolved steps, and preflight's checks.
    if std::env::args().any(|a| a == "--resolve") {
        cli::main(TOOL, USAGE, pgferry::plan::parse_resolve, pgferry::plan::resolve);
    }
    if std::env::args().any(|a| a == "--preflight") {
        cli::main(TOOL, USAGE, preflight::parse, preflight::run);
    }
    cli::main(TOOL, USAGE, parse, run)
}
