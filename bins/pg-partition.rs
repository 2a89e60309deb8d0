//! pg-partition: time partitions of a PostgreSQL table created ahead and retired on schedule.

use pgferry::cli::{self, Status};
use pgferry::commit::TxId;
use pgferry::partition::{self as part, Date, EnsureOptions, Interval, Partition, Partitioned};
use pgferry::pg::{pg_error, Table, Target};
use pgferry::{note, timefmt, Error, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[path = "pg-partition/archive.rs"]
mod archive;

const USAGE: &str = "\
pg-partition: create time partitions ahead and retire old ones, safely from cron.

Manages a table declared PARTITION BY RANGE on one timestamptz, timestamp or date
column, without any extension in the database. Periods start at UTC midnight; a
monthly partition of device_logs is device_logs_2025_01, FOR VALUES FROM
('2025-01-01 00:00:00+00') TO ('2025-02-01 00:00:00+00'). Each run changes one
table in one transaction: all of it happens, or none (kill -9 included). Runs on
the same table never overlap: a second run waits --wait seconds for the first,
then exits 75 having changed nothing.

Usage:
  pg-partition ensure TABLE [--from PERIOD] [--ahead N | --to PERIOD] [options]
  pg-partition retain TABLE --keep N (--drop | --detach) [--archive DIR] [options]
  pg-partition list TABLE [options]

Subcommands:
  ensure   Create every missing partition from --from (default: the current
           period) through N periods ahead (or through --to). Existing ones are
           left alone (idempotent). Rows of the DEFAULT partition that belong in a
           partition being created are moved into it in the same transaction, and
           counted on stderr.
  retain   Retire the partitions whose whole range ends at or before the start of
           the current period minus N periods (bounds read from the catalog, never
           from names). --drop drops them; --detach detaches them, leaving plain
           tables. Never the DEFAULT partition, never the last partition left.
  list     One NDJSON line per partition: name, bounds, estimated rows, size; the
           DEFAULT partition flagged, with its exact row count.

Options:
  --db URL              PostgreSQL to use [default: $DATABASE_URL, then PG* variables].
  --interval I          daily, monthly or yearly [default: monthly].
  --from PERIOD         ensure: first period, YYYY-MM (YYYY-MM-DD daily, YYYY
                        yearly; a longer date is cut to its period) [default: current].
  --ahead N             ensure: periods after the later of --from and the current
                        one [default: 1, i.e. the current and the next].
  --to PERIOD           ensure: last period, instead of --ahead.
  --limit N             ensure: refuse to create more than N partitions [default: 1000].
  --keep N              retain: keep the current period and the N before it.
  --drop                retain: drop the retired partitions.
  --detach              retain: detach them instead (they stay as tables).
  --archive DIR         retain: first write each one's rows to DIR (which must exist)
                        as NAME.ndjson.gz, a gzipped pgferry stream with its end
                        record, plus NAME.manifest.json (sha256, row count, bounds)
                        and NAME.ndjson.gz.sha256; re-read and verify them, and only
                        then drop. Files are mode 0600 and never overwritten (a
                        second archive of a name gets NAME.1...). Reload with
                        gunzip -c NAME.ndjson.gz | pg-load TABLE.
  --now TIMESTAMP       Take this RFC 3339 instant as now (previews, tests)
                        [default: the current time].
  --dry-run             Change nothing; print the exact SQL the run would execute.
  --wait SECS           How long to wait for another run's lock [default: 5].
  --lock-timeout SECS   How long to wait for table locks held by queries [default: 30].
  -v, --verbose         Say what was done (otherwise silent on success, for cron).
  -q, --quiet           No progress line and no informational notes on stderr
                        (errors, warnings, rows moved out of the DEFAULT
                        partition and the data on stdout stay).
  -h, --help            Show this help.
  -V, --version         Show the version.

Output:
  list: NDJSON on stdout. --dry-run: a SQL script on stdout. Otherwise nothing on
  success; --verbose reports on stderr. Rows moved out of the DEFAULT partition,
  and a partition kept because it is the last one, are always reported on stderr
  (--quiet too). On a terminal, --archive shows each partition's rows as they are
  written.

Exit status:
  0 done; 1 an archive did not verify (nothing was dropped); 64 usage error;
  65 the table is not range-partitioned on a time column, or a partition to create
  overlaps one that exists (nothing was changed); 66 table or archive directory
  missing; 69 PostgreSQL unavailable (also: the connection broke during COMMIT
  and the server reports the transaction aborted); 74 I/O error; 75 another run
  holds the table's lock, or a lock timeout: retry later; 76 the connection
  broke during COMMIT and the server could not be asked: run the printed query.

Examples:
  pg-partition ensure device_logs --ahead 2
  pg-partition ensure device_logs --from 2023-08 --to 2025-09
  pg-partition retain device_logs --keep 6 --drop --archive /srv/archive/device_logs
  pg-partition list device_logs | jq -r '[.name, .from, .estimated_rows] | @tsv'
";

const TOOL: &str = "pg-partition";

/// The text forms an archive holds do not depend on the role's or PGOPTIONS' settings: intervals
/// in the default style (read back the same under every IntervalStyle), floats inside arrays
/// exact, bytea inside arrays as hex.
const ARCHIVE_SETTINGS: &str =
    "SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 1; SET LOCAL bytea_output = 'hex'";

/// A role's or database's statement and idle timeouts would cut a long archive short (the
/// client compresses between fetches): off for this transaction, as pg_dump does; --lock-timeout
/// bounds the waits that matter. (transaction_timeout exists from PostgreSQL 17.)
const NO_TIMEOUTS: &str = "SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0; \
    SELECT set_config('transaction_timeout', '0', true) WHERE current_setting('server_version_num')::int >= 170000";

/// The most periods `--ahead` and `--keep` take.
const MAX_PERIODS: i64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    Ensure,
    Retain,
    List,
}

struct Args {
    sub: Sub,
    table: String,
    db: Option<String>,
    interval: Interval,
    from: Option<Date>,
    to: Option<Date>,
    ahead: i64,
    limit: usize,
    keep: i64,
    detach: bool,
    archive: Option<PathBuf>,
    now: i64,
    dry_run: bool,
    verbose: bool,
    wait: Duration,
    lock_timeout: u64,
}

fn period(v: Option<String>, key: &str) -> Result<Option<Date>> {
    v.map(|s| {
        part::parse_date_arg(&s)
            .ok_or_else(|| Error::Usage(format!("{key} '{s}' is not a period (YYYY-MM, YYYY-MM-DD or YYYY)")))
    })
    .transpose()
}

fn parse(args: &mut pico_args::Arguments) -> Result<Args> {
    let sub = match args.subcommand().map_err(cli::usage_err)?.as_deref() {
        Some("ensure") => Sub::Ensure,
        Some("retain") => Sub::Retain,
        Some("list") => Sub::List,
        Some(other) => return Err(Error::Usage(format!("unknown subcommand '{other}' (ensure, retain or list)"))),
        None => return Err(Error::Usage("missing subcommand: ensure, retain or list".into())),
    };
    let db = cli::opt(args, "--db")?;
    let interval = match cli::opt(args, "--interval")? {
        Some(s) => Interval::parse(&s)?,
        None => Interval::Monthly,
    };
    let now = match cli::opt(args, "--now")? {
        Some(s) => timefmt::parse_timestamp(&s)
            .ok_or_else(|| Error::Usage(format!("--now '{s}' is not a timestamp (RFC 3339)")))?
            .utc_micros(0),
        None => timefmt::now_micros(),
    };
    let dry_run = args.contains("--dry-run");
    let verbose = args.contains(["-v", "--verbose"]);
    let wait = cli::seconds(args, "--wait")?.unwrap_or(Duration::from_secs(5));
    // PostgreSQL's lock_timeout is at most INT_MAX milliseconds.
    let lock_timeout =
        cli::number(args, "--lock-timeout", "whole seconds, 0 to 2147483", |n: &u64| *n <= 2_147_483)?.unwrap_or(30);
    // Options of the other subcommands are usage errors, not silently ignored.
    let only = |ok: bool, key: &str| -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(Error::Usage(format!("{key} does not apply to this subcommand")))
        }
    };
    let from = period(cli::opt(args, "--from")?, "--from")?;
    let to = period(cli::opt(args, "--to")?, "--to")?;
    // Bounded so that period arithmetic cannot overflow (100000 years is past any calendar we write).
    let periods = |n: &i64| (0..=MAX_PERIODS).contains(n);
    let ahead_opt = cli::number(args, "--ahead", "a number of periods, 0 to 100000", periods)?;
    let limit_opt = cli::number(args, "--limit", "a number of partitions", |_: &usize| true)?;
    let keep_opt = cli::number(args, "--keep", "a number of periods, 0 to 100000", periods)?;
    let drop = args.contains("--drop");
    let detach = args.contains("--detach");
    let archive = cli::opt(args, "--archive")?.map(PathBuf::from);
    let is = |s: Sub| sub == s;
    if from.is_some() {
        only(is(Sub::Ensure), "--from")?;
    }
    if to.is_some() {
        only(is(Sub::Ensure), "--to")?;
    }
    if ahead_opt.is_some() {
        only(is(Sub::Ensure), "--ahead")?;
    }
    if limit_opt.is_some() {
        only(is(Sub::Ensure), "--limit")?;
    }
    if keep_opt.is_some() {
        only(is(Sub::Retain), "--keep")?;
    }
    if drop {
        only(is(Sub::Retain), "--drop")?;
    }
    if detach {
        only(is(Sub::Retain), "--detach")?;
    }
    if archive.is_some() {
        only(is(Sub::Retain), "--archive")?;
    }
    if dry_run {
        only(!is(Sub::List), "--dry-run")?;
    }
    if to.is_some() && ahead_opt.is_some() {
        return Err(Error::Usage("give --ahead or --to, not both".into()));
    }
    if is(Sub::Retain) {
        if keep_opt.is_none() {
            return Err(Error::Usage("retain needs --keep N".into()));
        }
        if drop == detach {
            return Err(Error::Usage("retain needs exactly one of --drop and --detach".into()));
        }
    }
    let table = cli::positional(args, "TABLE")?;
    Ok(Args {
        sub,
        table,
        db,
        interval,
        from,
        to,
        ahead: ahead_opt.unwrap_or(1),
        limit: limit_opt.unwrap_or(1000),
        keep: keep_opt.unwrap_or(0),
        detach,
        archive,
        now,
        dry_run,
        verbose,
        wait,
        lock_timeout,
    })
}

fn run(a: Args) -> Result<Status> {
    if let Some(dir) = &a.archive {
        if !dir.is_dir() {
            return Err(Error::NoInput(format!(
                "archive directory '{}' does not exist (pg-partition does not create it: a missing mount should fail)",
                dir.display()
            )));
        }
    }
    let target = Target::resolve(a.db.as_deref())?;
    let mut client = target.connect()?;
    let mut tx = client.transaction().map_err(|e| pg_error("begin a transaction", e))?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}s'; SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; \
         {ARCHIVE_SETTINGS}; {NO_TIMEOUTS}",
        a.lock_timeout
    ))
    .map_err(|e| pg_error("set up the session", e))?;
    let table = Table::resolve(&mut tx, &a.table)?;
    match a.sub {
        Sub::List => list(tx, &table),
        Sub::Ensure => ensure(tx, &table, &a, &target),
        Sub::Retain => retain(tx, &table, &a, &target),
    }
}

/// Commits the change as pg-load commits a load (src/commit.rs): a COMMIT whose reply is lost
/// with the connection is settled from the server, never guessed. `before`: how an error
/// before COMMIT was sent is said (nothing changed).
fn commit(mut tx: postgres::Transaction, target: &Target, before: impl Fn(Error) -> Error) -> Result<()> {
    let id = TxId::of(&mut tx).map_err(&before)?;
    if let Some(said) = pgferry::commit::commit(tx, id, target)?.note(id.xid) {
        note!(TOOL, "{said}");
    }
    Ok(())
}

fn write_out(out: &mut impl Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes()).map_err(|e| Error::io("write to stdout", e))
}

fn list(mut tx: postgres::Transaction, table: &Table) -> Result<Status> {
    let info = part::inspect(&mut tx, table)?;
    let mut out = std::io::stdout().lock();
    let all = info.partitions.iter().chain(info.default.iter());
    for p in all {
        let stats = tx
            .query_one(
                "SELECT sum(pg_total_relation_size(t.relid))::int8, \
                 sum(c.reltuples) FILTER (WHERE t.isleaf)::int8, \
                 coalesce(bool_or(c.reltuples < 0 AND t.isleaf), false) \
                 FROM pg_partition_tree($1::oid) t JOIN pg_class c ON c.oid = t.relid",
                &[&p.oid],
            )
            .map_err(|e| pg_error(format!("read the size of '{}'", p.name), e))?;
        let size: Option<i64> = stats.get(0);
        let unknown: bool = stats.get(2);
        let estimated: Option<i64> = if unknown { None } else { stats.get(1) };
        let mut line = json!({
            "name": p.name,
            "schema": p.schema,
            "from": if p.is_default { None } else { info.key_type.show(p.from) },
            "to": if p.is_default { None } else { info.key_type.show(p.to) },
            "bound": p.bound_sql,
            "estimated_rows": estimated,
            "size_bytes": size.unwrap_or(0),
            "default": p.is_default,
        });
        if p.is_default {
            let n: i64 = tx
                .query_one(&format!("SELECT count(*) FROM {}", p.qualified()), &[])
                .map_err(|e| pg_error(format!("count the rows of '{}'", p.name), e))?
                .get(0);
            line["rows"] = Value::from(n);
        }
        write_out(&mut out, &format!("{line}\n"))?;
    }
    out.flush().map_err(|e| Error::io("write to stdout", e))?;
    tx.rollback().map_err(|e| pg_error("end the transaction", e))?;
    Ok(Status::Ok)
}

fn script_header(out: &mut impl Write, what: &str, a: &Args, table: &Table) -> Result<()> {
    write_out(
        out,
        &format!(
            "-- pg-partition {what} {}: dry run, nothing was changed.\n-- Runs under \
             pg_try_advisory_xact_lock({}, {}), the lock of this table.\nBEGIN;\n\
             SET LOCAL lock_timeout = '{}s';\nSET LOCAL TimeZone = 'UTC';\nSET LOCAL DateStyle = 'ISO, YMD';\n",
            table.display(),
            part::LOCK_NAMESPACE,
            table.oid as i32,
            a.lock_timeout
        ),
    )
}

fn ensure(mut tx: postgres::Transaction, table: &Table, a: &Args, target: &Target) -> Result<Status> {
    let iv = a.interval;
    part::lock(&mut tx, table, a.wait)?;
    let current = iv.of_micros(a.now);
    let first = a.from.map(|d| iv.align(d)).unwrap_or(current);
    let last = match a.to {
        Some(t) => iv.align(t),
        None => iv.add(first.max(current), a.ahead),
    };
    let opts = EnsureOptions { interval: iv, dry_run: a.dry_run, limit: a.limit };
    // Nothing is committed before the end: whatever fails here, the transaction rolls back.
    let unchanged = |e: Error| match e {
        Error::Usage(_) => e,
        e => e.append("; nothing was changed"),
    };
    let report = part::ensure(&mut tx, table, first, last, &opts).map_err(unchanged)?;
    let shown = table.display();
    if a.dry_run {
        tx.rollback().map_err(|e| pg_error("end the transaction", e))?;
        let mut out = std::io::stdout().lock();
        script_header(&mut out, "ensure", a, table)?;
        for s in &report.sql {
            write_out(&mut out, &format!("{s};\n"))?;
        }
        write_out(&mut out, "COMMIT;\n")?;
        for c in report.created.iter().filter(|c| c.moved > 0) {
            eprintln!("{TOOL}: {shown}: would move {} rows out of the default partition into '{}'", c.moved, c.name);
        }
        return Ok(Status::Ok);
    }
    commit(tx, target, unchanged)?;
    for c in report.created.iter().filter(|c| c.moved > 0) {
        eprintln!("{TOOL}: {shown}: moved {} rows out of the default partition into '{}'", c.moved, c.name);
    }
    if a.verbose {
        for c in &report.created {
            note!(TOOL, "{shown}: created '{}' for {} (to {})", c.name, iv.label(c.from), iv.label(c.to));
        }
        note!(
            TOOL,
            "{shown}: {} to {}: {} created, {} already present",
            iv.label(first),
            iv.label(last),
            report.created.len(),
            report.present
        );
    }
    Ok(Status::Ok)
}

fn retain(mut tx: postgres::Transaction, table: &Table, a: &Args, target: &Target) -> Result<Status> {
    let iv = a.interval;
    let shown = table.display();
    part::lock(&mut tx, table, a.wait)?;
    let info = part::inspect(&mut tx, table)?;
    let cut_date = iv.add(iv.of_micros(a.now), -a.keep);
    let cutoff = part::date_micros(cut_date);
    let mut retire: Vec<&Partition> = info.partitions.iter().filter(|p| p.to <= cutoff).collect();
    let mut warnings = vec![];
    if !retire.is_empty() && retire.len() == info.partitions.len() {
        let kept = retire.pop().expect("not empty");
        warnings.push(format!(
            "{shown}: keeping '{}' although it ends before the cut-off {}: it is the last partition",
            kept.name,
            iv.label(cut_date)
        ));
    }
    let action = |p: &Partition| {
        if a.detach {
            format!("ALTER TABLE {} DETACH PARTITION {}", table.qualified(), p.qualified())
        } else {
            format!("DROP TABLE {}", p.qualified())
        }
    };
    let lock_sql = |p: &Partition| format!("LOCK TABLE {} IN SHARE MODE", p.qualified());

    if a.dry_run {
        tx.rollback().map_err(|e| pg_error("end the transaction", e))?;
        let mut out = std::io::stdout().lock();
        script_header(&mut out, "retain", a, table)?;
        write_out(&mut out, &format!("-- cut-off {} (partitions ending at or before it)\n", iv.label(cut_date)))?;
        if let Some(dir) = &a.archive {
            for p in &retire {
                write_out(&mut out, &format!("{};\n", lock_sql(p)))?;
                write_out(
                    &mut out,
                    &format!(
                        "-- archive {} to {}, verify it\n",
                        p.qualified(),
                        dir.join(format!("{}.ndjson.gz", archive::file_stem(p))).display()
                    ),
                )?;
            }
        }
        for p in &retire {
            write_out(&mut out, &format!("{};\n", action(p)))?;
        }
        write_out(&mut out, "COMMIT;\n")?;
        for w in &warnings {
            pgferry::warn!(TOOL, "{w}");
        }
        return Ok(Status::Ok);
    }

    let mut archived: Vec<archive::Archived> = vec![];
    // Nothing is committed before the end: whatever fails, the transaction rolls back.
    let unchanged = |e: Error, archived: &[archive::Archived]| {
        let e = e.append("; nothing was dropped");
        let e = if a.detach { e.map_message(|m| m.replace("nothing was dropped", "nothing was detached")) } else { e };
        match archived.len() {
            0 => e,
            n => e.append(&format!(" ({n} verified archive(s) already written stay; a later run writes new copies)")),
        }
    };
    if let Some(dir) = &a.archive {
        for p in &retire {
            tx.batch_execute(&lock_sql(p))
                .map_err(|e| unchanged(pg_error(format!("lock partition '{}'", p.name), e), &archived))?;
            let x = archive::write(&mut tx, &info, p, dir).map_err(|e| unchanged(e, &archived))?;
            archived.push(x);
        }
    }
    for p in &retire {
        let verb = if a.detach { "detach" } else { "drop" };
        tx.batch_execute(&action(p))
            .map_err(|e| unchanged(pg_error(format!("{verb} partition '{}'", p.name), e), &archived))?;
    }
    commit(tx, target, |e| unchanged(e, &archived))?;
    for w in &warnings {
        pgferry::warn!(TOOL, "{w}");
    }
    if a.verbose {
        report_retain(&info, &retire, &archived, a, &shown, iv.label(cut_date));
    }
    Ok(Status::Ok)
}

fn report_retain(
    info: &Partitioned,
    retire: &[&Partition],
    archived: &[archive::Archived],
    a: &Args,
    shown: &str,
    cut: String,
) {
    let verb = if a.detach { "detached" } else { "dropped" };
    for (i, p) in retire.iter().enumerate() {
        let range = format!(
            "{} to {}",
            info.key_type.show(p.from).unwrap_or_else(|| "MINVALUE".into()),
            info.key_type.show(p.to).unwrap_or_else(|| "MAXVALUE".into())
        );
        match archived.get(i) {
            Some(x) => note!(
                TOOL,
                "{shown}: {verb} '{}' ({range}) after archiving {} rows to '{}' (sha256 {})",
                p.name,
                x.rows,
                x.file.display(),
                x.sha256
            ),
            None => note!(TOOL, "{shown}: {verb} '{}' ({range})", p.name),
        }
    }
    note!(TOOL, "{shown}: cut-off {cut}: {} {verb}, {} kept", retire.len(), info.partitions.len() - retire.len());
}

fn main() {
    cli::main(TOOL, USAGE, parse, run)
}
