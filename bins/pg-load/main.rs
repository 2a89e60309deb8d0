//! pg-load: NDJSON on stdin into one PostgreSQL table, in one transaction.

mod copy;
mod indexes;
mod merge;
mod plan;
mod preflight;
mod rows;
mod schema;
mod table;

use pgferry::cli::{self, Status};
use pgferry::convert::Options;
use pgferry::pg::{self, pg_error};
use pgferry::runlog::{Outcome, RunLog};
use pgferry::stream::RowReader;
use pgferry::{note, Error, Result};
use std::time::Instant;

pub const TOOL: &str = "pg-load";

const USAGE: &str = "\
pg-load: load an NDJSON stream into PostgreSQL tables, all rows or none.

Reads the stream (docs/stream.md) on stdin and loads it into the existing table
TABLE in one transaction, converting each value by its column's type (see
docs/loading.md). Before committing it verifies the count:
  Source: N rows → Postgres: N rows ✓
Fewer rows in PostgreSQL than in the source rolls everything back. Every run,
success or failure, is recorded in _migration_runs. Re-running the same load
changes nothing: rows already present are reported as such.

With --plan, stdin is the concatenation of the selected steps' streams in plan
order (docs/stream.md §7: each may start with its table record), and every
step's table is loaded in ONE transaction with the step's own `load` options:
each table's count is verified, foreign keys between the plan's tables may be
loaded children first (they are set aside and validated before COMMIT), and
all tables commit or none do. One run-log record per step.

Usage:
  pg-load [options] TABLE
  pg-load --plan PLAN [--from STEP | --steps A,B] [run options]
  pg-load --plan PLAN --resolve [--from STEP | --steps A,B] [--mode MODE]
  pg-load --plan PLAN --preflight [--app-env FILE] [--app-url-var VAR] [--require-rls TABLES]

Run options:
  --db URL              PostgreSQL connection URL or 'key=value' string
                        [default: $DATABASE_URL, else the PG* variables].
  --dry-run             Do everything (conversions, count checks, foreign key
                        validation, privileges), report, then roll back.
  --runs-table NAME     Run log table [default: _migration_runs].
  --lock-timeout SECS   Wait this long for each table's lock [default: 10].
  --plan PLAN           Load the plan's steps (docs/plan.md) from one stream.
  --from STEP           With --plan: start at this step.
  --steps A,B           With --plan: only these steps (in plan order).
  --mode MODE           With --plan: the mode of every step whose \"load\" names
                        none (mirror, for a re-run after a rollback).
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

Table options (on the command line, or in a plan step's \"load\" array):
  --mode MODE           insert: skip rows whose key is already present
                        (ON CONFLICT DO NOTHING); upsert: update them;
                        append: plain COPY, duplicates are errors;
                        replace: empty the table first (TRUNCATE);
                        mirror: make the table equal to the stream by key
                        (insert new, update changed, delete rows the stream
                        lacks; never TRUNCATE) [default: insert].
  --key COLS            Key that identifies a row [default: the primary key].
  --epoch-unit UNIT     Numbers in timestamp/date columns are Unix epochs in
                        UNIT: s, ms, us or ns [default: numbers are refused].
  --assume-tz ZONE      Zone of timestamps without an offset going into
                        timestamptz: UTC, ±HH:MM, or an IANA name such as
                        Europe/Athens (daylight-saving rules from the system's
                        zone database; docs/loading.md) [default: UTC].
  --ignore-unknown      Drop keys that match no column instead of failing.
  --strip-nul           Remove NUL characters from text (PostgreSQL cannot store
                        them) instead of failing.
  --defer-fks           Load rows whose parents are not loaded yet: the table's
                        foreign keys are dropped for the load and re-added NOT
                        VALID; validate them later (the command is printed).
                        In a plan run they are re-added and validated before
                        COMMIT.
  --ensure-partitions   The target is range-partitioned by time: create the
                        partitions the rows need (as pg-partition ensure does,
                        same names, same lock) in the load's transaction.
  --partition-interval I  daily, monthly or yearly [default: monthly].
  --no-end-record       Accept a foreign stream without the end record (in a
                        plan, its segment ends at the next table record).
  --no-analyze          Skip ANALYZE after the load.
  --vacuum              VACUUM (ANALYZE) the table after the commit instead of ANALYZE
                        (outside the load's transaction, as VACUUM must be).
  --source NAME         What to record as the source [default: from the stream;
                        in a plan run, the step's source].
  -h, --help            Show this help.
  -V, --version         Show the version.

Input:
  stdin: the stream. TABLE may be schema-qualified (crm.orders); quote mixed
  case as in SQL ('\"Orders\"').

Output:
  stderr: the count line (one per step) and a summary. Nothing on stdout.

Exit status:
  0 loaded and verified; 1 count verification failed (rolled back);
  64 usage error; 65 bad input data (nothing committed); 66 table missing;
  69 PostgreSQL unavailable; 74 I/O error; 75 temporary failure (lock
  timeout, serialization failure): retrying may succeed.

Examples:
  sqlite-dump app.sqlite melody_drafts | pg-load melody_drafts
  fs-export --group orders --parent-field customer_id | pg-load crm_orders
  { echo '{\"$table\":{\"step\":\"1\",\"target\":\"orders\"}}'; sqlite-dump app.db orders;
    echo '{\"$table\":{\"step\":\"2\",\"target\":\"items\"}}'; sqlite-dump app.db items; } |
    pg-load --plan plan.ndjson
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Insert,
    Upsert,
    Append,
    Replace,
    Mirror,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Insert => "insert",
            Mode::Upsert => "upsert",
            Mode::Append => "append",
            Mode::Replace => "replace",
            Mode::Mirror => "mirror",
        }
    }
}

/// How one table is loaded: a single-table run's command line, or a plan step's `load` array
/// plus the run's own options.
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

/// The options of a whole run (one table or a plan), not of one table.
struct RunOptions {
    db: Option<String>,
    dry_run: bool,
    runs_table: String,
    lock_timeout: u32,
}

/// The run-level options, which a plan step's `load` array may not give.
const RUN_OPTIONS: &[&str] = &["--db", "--dry-run", "--runs-table", "--lock-timeout", "--plan", "--from", "--steps"];

enum Command {
    Table(Args),
    Plan(plan::PlanArgs),
}

fn parse(args: &mut pico_args::Arguments) -> Result<Command> {
    let run = parse_run_options(args)?;
    if let Some(path) = cli::opt(args, "--plan")? {
        return plan::parse(args, path, run).map(Command::Plan);
    }
    let mut a = parse_load(args, String::new(), &run)?;
    a.table = cli::positional(args, "TABLE")?;
    Ok(Command::Table(a))
}

fn parse_run_options(args: &mut pico_args::Arguments) -> Result<RunOptions> {
    let lock_timeout = match cli::opt(args, "--lock-timeout")? {
        Some(s) => s.parse().map_err(|_| Error::Usage(format!("--lock-timeout takes seconds, not '{s}'")))?,
        None => 10,
    };
    Ok(RunOptions {
        db: cli::opt(args, "--db")?,
        dry_run: args.contains("--dry-run"),
        runs_table: cli::opt(args, "--runs-table")?.unwrap_or_else(|| "_migration_runs".into()),
        lock_timeout,
    })
}

/// One table's load options, the same for the command line and a plan step's `load`.
fn parse_load(args: &mut pico_args::Arguments, table: String, run: &RunOptions) -> Result<Args> {
    let mode = match cli::opt(args, "--mode")?.as_deref().unwrap_or("insert") {
        "insert" => Mode::Insert,
        "upsert" => Mode::Upsert,
        "append" => Mode::Append,
        "replace" => Mode::Replace,
        "mirror" => Mode::Mirror,
        other => {
            return Err(Error::Usage(format!(
                "--mode must be insert, upsert, append, replace or mirror, not '{other}'"
            )))
        }
    };
    let opts = Options::from_args(args, Options::default())?;
    let a = Args {
        db: run.db.clone(),
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
        dry_run: run.dry_run,
        analyze: !args.contains("--no-analyze"),
        vacuum: args.contains("--vacuum"),
        source: cli::opt(args, "--source")?,
        runs_table: run.runs_table.clone(),
        lock_timeout: run.lock_timeout,
        table,
    };
    Ok(a)
}

fn run(c: Command) -> Result<Status> {
    match c {
        Command::Table(a) => run_table(a),
        Command::Plan(p) => plan::run(p),
    }
}

fn run_table(a: Args) -> Result<Status> {
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
                table::analyze(&mut client, &report.qualified, &a.table, a.vacuum);
            }
            let secs = started.elapsed().as_secs_f64();
            let rate = outcome.source_rows.unwrap_or(0) as f64 / secs.max(1e-9);
            note!(
                TOOL,
                "{}{}: {}; {:.1}s, {:.0} rows/s; run {} in {}",
                a.table,
                if a.dry_run { " (dry run: rolled back)" } else { "" },
                report.summary,
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
    summary: String,
}

/// A single-table run: one transaction around one table's load.
fn load(client: &mut postgres::Client, a: &Args, outcome: &mut Outcome) -> Result<Report> {
    let mut tx = client.transaction().map_err(|e| pg_error("begin", e))?;
    set_up(&mut tx, a.lock_timeout)?;
    let table = table::lock(&mut tx, &a.table)?;
    let p = table::prepare(&mut tx, a, table)?;
    let stdin = std::io::stdin();
    let mut reader = RowReader::new(std::io::BufReader::with_capacity(1 << 17, stdin.lock()), a.require_end);
    let loaded = table::load_rows(&mut tx, &p, a, &mut reader, outcome)?;
    let mut notes = loaded.notes;
    if !p.deferred.is_empty() {
        notes.push(schema::restore_foreign_keys(&mut tx, &p.deferred)?);
    }
    note!(TOOL, "{}: {}", a.table, loaded.count_line);
    let mismatch = if loaded.verified { String::new() } else { format!("count mismatch: {}", loaded.count_line) };
    if a.dry_run || !loaded.verified {
        tx.rollback().map_err(|e| pg_error("roll back", e))?;
    } else {
        tx.commit().map_err(|e| pg_error("commit", e))?;
    }
    Ok(Report { qualified: p.qt, verified: loaded.verified, mismatch, notes, summary: loaded.summary })
}

/// The load transaction's settings: how long to wait for a lock; timestamps read in UTC.
fn set_up(tx: &mut postgres::Transaction, lock_timeout: u32) -> Result<()> {
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{lock_timeout}s'; SET LOCAL TimeZone = 'UTC'"))
        .map_err(|e| pg_error("set up the session", e))
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
