//! pg-load: NDJSON on stdin into one PostgreSQL table, in one transaction.

mod analyze;
mod copy;
mod indexes;
mod merge;
mod plan;
mod preflight;
mod report;
mod route;
mod rows;
mod schema;
mod status;
mod table;
mod validate;

use pgferry::cli::{self, Status};
use pgferry::commit::{self, Committed, TxId};
use pgferry::convert::Options;
use pgferry::pg::{self, pg_error};
use pgferry::runlog::{Begin, Outcome, RunId, RunLog};
use pgferry::stream::RowReader;
use pgferry::{note, signals, stall, Error, Result};
use std::time::{Duration, Instant};

pub const TOOL: &str = "pg-load";
/// The largest `--lock-timeout` PostgreSQL can express (INT_MAX ms), in seconds.
const MAX_LOCK_TIMEOUT: u32 = 2_147_483;

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
order (each may start with its table record: docs/stream.md), and every
step's table is loaded in ONE transaction with the step's own `load` options:
each table's count is verified, foreign keys between the plan's tables may be
loaded children first (they are set aside and validated before COMMIT), and
all tables commit or none do. One run-log record per step.

Usage:
  pg-load [options] TABLE
  pg-load --plan PLAN [--from STEP | --steps A,B] [run options]
  pg-load --plan PLAN --resolve [--from STEP | --steps A,B] [--mode MODE]
  pg-load --plan PLAN --preflight [--app-env FILE] [--app-url-var VAR] [--require-rls TABLES]
  pg-load --plan PLAN --status [--from STEP | --steps A,B] [--settle SECS]
          [--db URL] [--runs-table NAME]
  pg-load --plan PLAN --validate-fks [--db URL]

Run options:
  --db URL              PostgreSQL connection URL or 'key=value' string
                        [default: $DATABASE_URL, else the PG* variables].
  --dry-run             Do everything (conversions, count checks, foreign key
                        validation, privileges), report, then roll back.
  --runs-table NAME     Run log table [default: _migration_runs].
  --lock-timeout SECS   Wait this long for each table's lock; 0: do not wait
                        (NOWAIT) [default: 10]. The ANALYZE after the commit
                        waits as long (at least 1 s), then leaves a table with
                        a warning.
  --stall-timeout SECS  End the load when its connection carries nothing for
                        this long while the server waits for pg-load (the
                        session is ended on the server, so its locks go)
                        [default: 60].
  --report FILE         At the end, write FILE (atomically): one JSON object per
                        table with its counts, seconds, stream bytes and outcome
                        (docs/loading.md, \"The report\"); written also when the
                        load fails or is a dry run.
  -q, --quiet           No progress line, count lines or summary on stderr:
                        errors and warnings only (the exit status, the run log
                        and --report say how it went).
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
  --status              With --plan: print each (selected) step's latest run
                        (NDJSON on stdout: step, target, source, outcome,
                        finished_at, counts); exit 0 iff every one succeeded,
                        else 1. A run whose pg-load died is settled from the
                        server (committed: success; rolled back: interrupted).
  --settle SECS         With --status: first wait up to SECS while a run is
                        still 'running' (a killed load's transaction ends when
                        the server notices).
  --validate-fks        With --plan: validate the foreign keys that its
                        --defer-fks steps left NOT VALID where a step of the
                        plan loads the parent, and NOT VALID keys into its
                        tables (an earlier plan's); what scripts/migrate runs
                        last. Exit 1 if this plan's rows lack their parent
                        (the key stays NOT VALID). Keys into other tables are
                        named and left.

Table options (on the command line, or in a plan step's \"load\" array):
  --mode MODE           insert: skip rows whose key is already present
                        (ON CONFLICT DO NOTHING); upsert: update those
                        whose values differ;
                        append: plain COPY, duplicates are errors;
                        replace: empty the table first (TRUNCATE);
                        mirror: make the table equal to the stream by key
                        (insert new, update changed, delete rows the stream
                        lacks; never TRUNCATE) [default: insert].
  --key COLS            Key that identifies a row [default: the primary key].
  --epoch-unit UNIT     Numbers in timestamp/date columns are Unix epochs in
                        UNIT: s, ms, us or ns [default: numbers are refused].
  --assume-tz ZONE      Zone of timestamps without an offset going into
                        timestamptz: UTC, an offset (+05:30), or an IANA
                        name such as Europe/Athens (daylight-saving rules from
                        the system's zone database; docs/loading.md)
                        [default: UTC].
  --rename KEY=COL      Load the stream key KEY into the column COL (repeat, or
                        separate with commas).
  --copy-key KEY=COL    Load the stream key KEY into its own column and into the
                        column COL too, converted for COL's type (repeat, or
                        separate with commas): a firestore_id that holds the id.
                        KEY is the stream's name (before --rename). A row
                        without KEY leaves COL out (its default, else NULL); a
                        row with its own value for COL is an error.
  --empty-as-null COLS  In these columns (* for all) an empty string is NULL.
  --date-format [COL=]FMT  Read dates that are not ISO 8601 with FMT (%m/%d/%Y);
                        with COL= for that column only (repeatable).
  --ignore-unknown      Drop keys that match no column instead of failing.
  --strip-nul           Remove NUL characters from text (PostgreSQL cannot store
                        them) instead of failing.
  --strict              Refuse values PostgreSQL would change without an error
                        (rounded to a numeric scale, to microseconds, to real or
                        double precision; JSON objects repeating a key) instead
                        of counting them in the summary and the run log.
  --defer-fks           Load rows whose parents are not loaded yet: the table's
                        foreign keys are dropped for the load and re-added NOT
                        VALID; validate them later (the command is printed).
                        In a plan run they are re-added and validated before
                        COMMIT (a key into a table no step of the run loads
                        comes back NOT VALID while its parents are missing).
  --ensure-partitions   The target is range-partitioned by time: create the
                        partitions the rows need (as pg-partition ensure does,
                        same names, same lock) in the load's transaction.
  --partition-interval I  daily, monthly or yearly [default: monthly].
  --no-end-record       Accept a foreign stream without the end record (in a
                        plan, its segment ends at the next table record).
  --rebuild-indexes-from SIZE  Into an empty table, drop its indexes (and the
                        constraints that own one) and build them again after COPY
                        once its rows reach SIZE of COPY data; a smaller table is
                        loaded with its indexes kept [default: 4MB; 0: always;
                        units kB, MB, GB].
  --no-analyze          Skip ANALYZE after the load.
  --vacuum              VACUUM (ANALYZE) the table after the commit instead of ANALYZE
                        (outside the load's transaction, as VACUUM must be).
  --source NAME         What to record as the source [default: from the stream;
                        in a plan run, the step's source].
  --step NAME           The plan step this load is (a per-step migrate): the run
                        log and the report name it, as a plan run does.
  -h, --help            Show this help.
  -V, --version         Show the version.

Input:
  stdin: the stream. TABLE may be schema-qualified (crm.orders); quote mixed
  case as in SQL ('\"Orders\"').

Output:
  stderr: the count line (one per step) and a summary; on a terminal, a progress
  line (rows, rows/s) while rows stream in, cleared at the end. Nothing on stdout.

Exit status:
  0 loaded and verified; 1 count verification failed (rolled back);
  64 usage error; 65 bad input data (nothing committed); 66 table missing;
  69 PostgreSQL unavailable; 74 I/O error (also: the server's disk is
  full); 75 temporary failure (lock timeout, serialization failure):
  retrying may succeed; 76 commit outcome unknown (the connection broke
  during COMMIT and the server could not be asked): run the printed query
  before retrying; 77 permission denied; 130 interrupted (SIGINT, SIGTERM,
  SIGHUP: rolled back). A signal once COMMIT was sent: the outcome is said,
  the ANALYZE after it stopped (a warning names the tables left without
  statistics), then pg-load ends by the signal. See docs/loading.md,
  \"What pg-load reports\".

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
    stall_timeout: u64,
    /// Into an empty table, its indexes are built after COPY once its rows reach this many
    /// bytes of COPY data (fewer are loaded with the indexes kept).
    rebuild_indexes_from: usize,
}

/// The options of a whole run (one table or a plan), not of one table.
struct RunOptions {
    db: Option<String>,
    dry_run: bool,
    runs_table: String,
    lock_timeout: u32,
    stall_timeout: u64,
    /// `--report FILE`.
    report: Option<String>,
    /// `--step NAME`: the plan step a single-table load is (a per-step migrate run).
    step: Option<String>,
}

/// --rebuild-indexes-from's default: below it, keeping the indexes costs less than dropping
/// and building them (measured here: ~15 ms a table for that; maintaining a bigint key during
/// COPY ~0.3 µs a row more than building it after, so even at ~50,000 rows of ~90 bytes).
const REBUILD_INDEXES_FROM: usize = 4 << 20;

/// A size as PostgreSQL writes them: a number of bytes, or with kB, MB or GB (powers of 1024).
fn parse_size(v: &str) -> Option<usize> {
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let unit: usize = match &v[digits..] {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    v[..digits].parse::<usize>().ok()?.checked_mul(unit)
}

/// The run-level options, which a plan step's `load` array may not give.
const RUN_OPTIONS: &[&str] = &[
    "--db",
    "--dry-run",
    "--runs-table",
    "--lock-timeout",
    "--stall-timeout",
    "--report",
    "--plan",
    "--from",
    "--steps",
    "--step",
    "-q",
    "--quiet",
];

enum Command {
    /// One table's load, the `--report` file and the `--step` name.
    Table(Args, Option<String>, Option<String>),
    Plan(plan::PlanArgs),
}

fn parse(args: &mut pico_args::Arguments) -> Result<Command> {
    let run = parse_run_options(args)?;
    if let Some(path) = cli::opt(args, "--plan")? {
        if run.step.is_some() {
            return Err(Error::Usage("--step names the step of a single-table load; a plan run takes --steps".into()));
        }
        return plan::parse(args, path, run).map(Command::Plan);
    }
    let mut a = parse_load(args, String::new(), &run)?;
    a.table = cli::positional(args, "TABLE")?;
    Ok(Command::Table(a, run.report, run.step))
}

fn parse_run_options(args: &mut pico_args::Arguments) -> Result<RunOptions> {
    let lock_timeout = match cli::opt(args, "--lock-timeout")? {
        // PostgreSQL's lock_timeout holds at most INT_MAX milliseconds.
        Some(s) => match s.parse::<u32>() {
            Ok(n) if n <= MAX_LOCK_TIMEOUT => n,
            _ => {
                return Err(Error::Usage(format!(
                    "--lock-timeout takes whole seconds from 0 (do not wait) to {MAX_LOCK_TIMEOUT}, not '{s}'"
                )))
            }
        },
        None => 10,
    };
    let stall_timeout = match cli::opt(args, "--stall-timeout")? {
        Some(s) => match s.parse::<u64>() {
            Ok(n) if (1..=86_400).contains(&n) => n,
            _ => return Err(Error::Usage(format!("--stall-timeout takes whole seconds from 1 to 86400, not '{s}'"))),
        },
        None => 60,
    };
    Ok(RunOptions {
        db: cli::opt(args, "--db")?,
        dry_run: args.contains("--dry-run"),
        runs_table: cli::opt(args, "--runs-table")?.unwrap_or_else(|| "_migration_runs".into()),
        lock_timeout,
        stall_timeout,
        report: cli::opt(args, "--report")?,
        step: cli::opt(args, "--step")?.map(step_name).transpose()?,
    })
}

/// A `--step` value: a step name as a plan has them (one line, not empty).
fn step_name(s: String) -> Result<String> {
    if s.is_empty() || s.chars().any(char::is_control) {
        return Err(Error::Usage(format!("--step takes a plan step's name, not {s:?}")));
    }
    Ok(s)
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
        stall_timeout: run.stall_timeout,
        rebuild_indexes_from: match cli::opt(args, "--rebuild-indexes-from")? {
            Some(v) => parse_size(&v).ok_or_else(|| {
                Error::Usage(format!("--rebuild-indexes-from takes a size (0, 512kB, 4MB, 1GB), not '{v}'"))
            })?,
            None => REBUILD_INDEXES_FROM,
        },
        table,
    };
    Ok(a)
}

fn run(c: Command) -> Result<Status> {
    match c {
        Command::Table(a, report, step) => run_table(a, report, step),
        Command::Plan(p) => plan::run(p),
    }
}

/// What every load run holds besides its transaction: the run log (its rows, one per table),
/// the load's connection and backend, and the watchers for signals and stalls.
pub struct Session {
    pub target: pg::Target,
    /// How the load connected (keepalives, its TCP timeout): ANALYZE's second connection too.
    pub load_target: pg::Target,
    pub client: postgres::Client,
    pub pid: i32,
    pub log: RunLog,
    pub runs: Vec<RunId>,
}

/// Opens the run log (first: the load's connection then idles only for the INSERTs before
/// BEGIN, where an idle_session_timeout or a pooler might end it), connects the load with
/// keepalives, records one `running` row per (step, table, mode), and starts the watchers.
pub fn open_session(
    db: Option<&str>,
    runs_table: &str,
    stall_timeout: u64,
    tables: &[(Option<&str>, &str, &str)],
) -> Result<Session> {
    signals::install();
    let target = pg::Target::resolve(db)?;
    let mut log = RunLog::open(&target, runs_table)?;
    let mut load_target = target.clone();
    pgferry::runlog::keepalive(&mut load_target);
    // Data the server does not acknowledge for longer ends the connection (the kernel); the
    // stall watcher, which can also end the session on the server, comes first.
    let stall = Duration::from_secs(stall_timeout);
    load_target.config.tcp_user_timeout(stall + Duration::from_secs(30));
    let mut client = load_target.connect()?;
    let pid: i32 =
        client.query_one("SELECT pg_backend_pid()", &[]).map_err(|e| pg_error("ask the server for its pid", e))?.get(0);
    let mut runs = vec![];
    for (step, table, mode) in tables {
        runs.push(log.begin(&Begin { tool: TOOL, step: *step, target: table, mode, backend_pid: pid })?);
    }
    signals::watch(TOOL, &target, pid);
    let (t, name, ids) = (target.clone(), runs_table.to_string(), runs.clone());
    let finish: stall::Finish = Box::new(move |state, message, _code| {
        for id in &ids {
            if let Err(e) = pgferry::runlog::mark(&t, &name, *id, state, message) {
                pgferry::warn!(TOOL, "{}", e.message());
                break;
            }
        }
        // The load's end, as an error would be said: --quiet keeps it.
        eprintln!("{TOOL}: {message}");
    });
    stall::watch(&target, pid, stall, finish);
    Ok(Session { target, load_target, client, pid, log, runs })
}

impl Session {
    /// Records run `id`'s end; a run-log failure is a warning (the load's own outcome is what
    /// the operator must learn, and the next run settles the row from the server).
    pub fn record(&mut self, id: RunId, state: &str, o: &Outcome, err: Option<&str>) {
        if let Err(e) = self.log.finish(id, state, o, err) {
            pgferry::warn!(
                TOOL,
                "{}; run {id} stays 'running' there until the next run resolves it from the server",
                e.message()
            );
        }
    }

    /// A load that failed: its run-log state and its error, saying only what is known
    /// ("nothing was committed" only when COMMIT was not sent or the server said so).
    pub fn failure(&self, e: Error) -> (&'static str, Error) {
        let (state, e) = match (e.commit_outcome_unknown(), signals::received()) {
            (true, _) => ("unknown", e),
            (false, Some(sig)) => ("interrupted", signals::interrupted(sig)),
            (false, _) => (
                "failed",
                match e {
                    Error::CheckFailed(m) => Error::CheckFailed(format!("{m}; rolled back, nothing was committed")),
                    e => e.append("; nothing was committed"),
                },
            ),
        };
        // A connection that broke may have left the session open on the server (a stalled
        // proxy holds it): end it there, so that its locks go now.
        let e = match &e {
            Error::Unavailable(_) if !signals::commit_was_sent() && commit::end_session(&self.target, self.pid) => {
                e.append("; the load's session was still open on the server and was ended there (locks released)")
            }
            _ => e,
        };
        (state, e)
    }

    /// Notes a COMMIT that needed a second connection to learn its outcome, or a signal that
    /// came after COMMIT was sent (during it, or just after, while the run log was written:
    /// end() checks for signals before sending it).
    pub fn report_commit(&self, committed: &Option<Committed>, xid: i64) {
        if let Some(said) = committed.as_ref().and_then(|c| c.note(xid)) {
            note!(TOOL, "{said}");
        }
        if let (Some(sig), Some(_)) = (signals::received(), committed) {
            note!(TOOL, "{} arrived once COMMIT had been sent; the load had committed", signals::name(sig));
        }
    }
}

/// The start of a load's transaction: its id noted (in the run log, before any row) so that
/// its outcome can be learnt whatever happens to this process.
pub fn begin(tx: &mut postgres::Transaction, log: &mut RunLog) -> Result<TxId> {
    signals::check()?;
    let id = TxId::of(tx)?;
    stall::set_xid(id.xid);
    log.attach(id.xid)?;
    Ok(id)
}

/// Ends a load's transaction: rolls back (`None`), or commits and learns the outcome even
/// across a broken connection.
pub fn end(tx: postgres::Transaction, id: TxId, target: &pg::Target, roll_back: bool) -> Result<Option<Committed>> {
    signals::check()?;
    if roll_back {
        tx.rollback().map_err(|e| pg_error("roll back", e))?;
        return Ok(None);
    }
    signals::commit_sent();
    commit::commit(tx, id, target).map(Some)
}

/// The load's input: stdin, read so that waiting for a slow producer is not taken for a stall.
/// Its bytes are counted for the report.
pub fn input() -> report::Counted<std::io::BufReader<stall::Watched<std::io::StdinLock<'static>>>> {
    report::Counted(std::io::BufReader::with_capacity(1 << 17, stall::Watched(std::io::stdin().lock())))
}

fn run_table(a: Args, report: Option<String>, step: Option<String>) -> Result<Status> {
    let report = report.as_deref().map(report::Report::at).transpose()?;
    let mut done = report::Done::default();
    let result = load_table(&a, step.as_deref(), &mut done);
    let table = report::Table { step: step.as_deref(), table: &a.table, mode: a.mode, done: &done };
    table::conclude(report.as_ref(), &[table], result)
}

fn load_table(a: &Args, step: Option<&str>, done: &mut report::Done) -> Result<table::Statistics> {
    let mut s =
        open_session(a.db.as_deref(), &a.runs_table, a.stall_timeout, &[(step, a.table.as_str(), a.mode.name())])?;
    let run_id = s.runs[0];
    let started = Instant::now();
    let mut outcome = Outcome::default();
    let result = load(&mut s, a, &mut outcome, &mut done.measured);
    stall::done();
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
            s.record(run_id, state, &outcome, err.as_deref());
            done.recorded(run_id, state, &outcome, err.as_deref());
            if !report.verified {
                return Err(Error::CheckFailed(format!(
                    "{}: {}; rolled back, nothing was committed",
                    a.table, report.mismatch
                )));
            }
            s.report_commit(&report.committed, report.xid);
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
                run_id,
                s.log.name()
            );
            for line in &report.notes {
                note!(TOOL, "{}: {line}", a.table);
            }
            if a.dry_run || !(a.analyze || a.vacuum) {
                return Ok(table::Statistics::default());
            }
            let owed = vec![(report.qualified, a.table.clone(), table::changed_rows(a.mode, &outcome))];
            Ok(match a.vacuum {
                true => table::Statistics::owed(s, vec![], owed, a.lock_timeout),
                false => table::Statistics::owed(s, owed, vec![], a.lock_timeout),
            })
        }
        Err(e) => {
            let (state, e) = s.failure(e);
            s.record(run_id, state, &outcome, Some(e.message()));
            done.recorded(run_id, state, &outcome, Some(e.message()));
            Err(e.context(&a.table))
        }
    }
}

struct Report {
    qualified: String,
    /// The COMMIT's outcome (`None`: rolled back) and the transaction's id.
    committed: Option<Committed>,
    xid: i64,
    verified: bool,
    mismatch: String,
    /// Further lines for the operator (partitions created, foreign keys to validate).
    notes: Vec<String>,
    summary: String,
}

/// A single-table run: one transaction around one table's load.
fn load(s: &mut Session, a: &Args, outcome: &mut Outcome, measured: &mut report::Measured) -> Result<Report> {
    let mut tx = s.client.transaction().map_err(|e| pg_error("begin", e))?;
    let id = begin(&mut tx, &mut s.log)?;
    set_up(&mut tx, a.lock_timeout)?;
    let measure = report::Measure::start();
    let table = table::lock(&mut tx, &a.table, a.lock_timeout == 0)?;
    let mut p = table::prepare(&mut tx, a, table, &[])?;
    let mut reader = RowReader::new(input(), a.require_end);
    let loaded = table::load_rows(&mut tx, &mut p, a, &mut reader, outcome);
    *measured = measure.end();
    let loaded = loaded?;
    let mut notes = loaded.notes;
    if !p.deferred.is_empty() {
        notes.push(schema::restore_foreign_keys(&mut tx, &p.deferred)?);
    }
    note!(TOOL, "{}: {}", a.table, loaded.count_line);
    let mismatch = if loaded.verified { String::new() } else { format!("count mismatch: {}", loaded.count_line) };
    let committed = end(tx, id, &s.target, a.dry_run || !loaded.verified)?;
    Ok(Report {
        qualified: p.qt,
        committed,
        xid: id.xid,
        verified: loaded.verified,
        mismatch,
        notes,
        summary: loaded.summary,
    })
}

/// The load transaction's settings: how long to wait for a lock (0: the table locks are taken
/// NOWAIT, since PostgreSQL reads lock_timeout = 0 as "no limit"; other locks wait 1 ms);
/// timestamps read in UTC; the server's side of a dead client (its keepalives, and a check
/// during long statements) ends the session, which rolls back and releases the locks. The
/// transaction waits on its producer by design (a table's first rows are held before its COPY
/// opens, a plan's next step may be slow to start), so a server's
/// idle_in_transaction_session_timeout does not apply to it: --stall-timeout bounds that wait.
fn set_up(tx: &mut postgres::Transaction, lock_timeout: u32) -> Result<()> {
    let lock_wait = if lock_timeout == 0 { "1ms".to_string() } else { format!("{lock_timeout}s") };
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{lock_wait}'; SET LOCAL TimeZone = 'UTC'; SET LOCAL tcp_keepalives_idle = 30; \
         SET LOCAL tcp_keepalives_interval = 10; SET LOCAL tcp_keepalives_count = 6; \
         SET LOCAL client_connection_check_interval = '10s'; SET LOCAL idle_in_transaction_session_timeout = 0"
    ))
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
    if std::env::args().any(|a| a == "--status") {
        cli::main(TOOL, USAGE, status::parse, status::run);
    }
    if std::env::args().any(|a| a == "--validate-fks") {
        cli::main(TOOL, USAGE, validate::parse, validate::run);
    }
    cli::main(TOOL, USAGE, parse, run)
}
