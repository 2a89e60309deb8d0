//! Time-range partitions of a PostgreSQL table: the partition key, the partitions that exist
//! with their real bounds (read from the catalog, never from names), and `ensure`, which
//! creates the missing ones inside the caller's transaction, moving rows out of the DEFAULT
//! partition when they belong in a partition being created.
//!
//! Shared by `pg-partition` and `pg-load --ensure-partitions`, so both take the same lock and
//! create the same partitions with the same names and bounds.
//!
//! Conventions (docs/pg-partition.md):
//! - periods start at UTC midnight (day, first of month, first of January); bounds are written
//!   as explicit literals, `'2025-01-01 00:00:00+00'` for timestamptz keys, `'2025-01-01
//!   00:00:00'` for timestamp keys and `'2025-01-01'` for date keys;
//! - names are `TABLE_YYYY_MM` (`TABLE_YYYY_MM_DD` daily, `TABLE_YYYY` yearly), shortened
//!   with a hash of the table name when they would pass PostgreSQL's 63-byte limit;
//! - one transaction-scoped advisory lock per table ([`lock`]) keeps two runs apart.

use crate::catalog::{self, ColumnInfo};
use crate::convert::Kind;
use crate::error::{Error, Result};
use crate::pg::{pg_error, quote_ident, Table};
use crate::timefmt::{self, civil_from_days, days_from_civil, days_in_month, MICROS_PER_DAY};
use postgres::types::Oid;
use postgres::Transaction;
use std::time::{Duration, Instant};

/// First key of pgferry's two-key advisory locks ("pgfr"); the second is the table's oid.
pub const LOCK_NAMESPACE: i32 = 0x7067_6672;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
pub const MAX_IDENT_BYTES: usize = 63;

/// A civil date `(year, month, day)`, proleptic Gregorian.
pub type Date = (i64, u32, u32);

/// How long each partition's range is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Daily,
    Monthly,
    Yearly,
}

impl Interval {
    pub fn parse(s: &str) -> Result<Interval> {
        match s {
            "daily" | "day" => Ok(Interval::Daily),
            "monthly" | "month" => Ok(Interval::Monthly),
            "yearly" | "year" => Ok(Interval::Yearly),
            _ => Err(Error::Usage(format!("--interval '{s}' is not one of daily, monthly, yearly"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Interval::Daily => "daily",
            Interval::Monthly => "monthly",
            Interval::Yearly => "yearly",
        }
    }

    /// The start of the period holding `d`.
    pub fn align(self, d: Date) -> Date {
        match self {
            Interval::Daily => d,
            Interval::Monthly => (d.0, d.1, 1),
            Interval::Yearly => (d.0, 1, 1),
        }
    }

    /// The start of the period `n` periods after the one holding `d` (n may be negative).
    pub fn add(self, d: Date, n: i64) -> Date {
        let d = self.align(d);
        match self {
            Interval::Daily => civil_from_days(days_from_civil(d.0, d.1, d.2) + n),
            Interval::Monthly => {
                let m0 = d.0 * 12 + (d.1 as i64 - 1) + n;
                (m0.div_euclid(12), (m0.rem_euclid(12) + 1) as u32, 1)
            }
            Interval::Yearly => (d.0 + n, 1, 1),
        }
    }

    /// The period holding an instant (microseconds since the Unix epoch, UTC).
    pub fn of_micros(self, micros: i64) -> Date {
        self.align(civil_from_days(micros.div_euclid(MICROS_PER_DAY)))
    }

    /// The name suffix: `2025_01`, `2025_01_31`, `2025`.
    pub fn suffix(self, d: Date) -> String {
        match self {
            Interval::Daily => format!("{:04}_{:02}_{:02}", d.0, d.1, d.2),
            Interval::Monthly => format!("{:04}_{:02}", d.0, d.1),
            Interval::Yearly => format!("{:04}", d.0),
        }
    }

    /// The period as `--from`/`--to` take it: `2025-01`, `2025-01-31`, `2025`.
    pub fn label(self, d: Date) -> String {
        match self {
            Interval::Daily => format!("{:04}-{:02}-{:02}", d.0, d.1, d.2),
            Interval::Monthly => format!("{:04}-{:02}", d.0, d.1),
            Interval::Yearly => format!("{:04}", d.0),
        }
    }
}

/// Reads `YYYY`, `YYYY-MM` or `YYYY-MM-DD` (years 1..9999); the missing parts are 1.
pub fn parse_date_arg(s: &str) -> Option<Date> {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.is_empty() || parts.len() > 3 || parts[0].len() != 4 {
        return None;
    }
    let num = |p: &str, len: usize| -> Option<u32> {
        if p.len() == len && p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse().ok()
        } else {
            None
        }
    };
    let y = num(parts[0], 4)? as i64;
    let m = match parts.get(1) {
        Some(p) => num(p, 2)?,
        None => 1,
    };
    let d = match parts.get(2) {
        Some(p) => num(p, 2)?,
        None => 1,
    };
    if y < 1 || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some((y, m, d))
}

/// Microseconds since the Unix epoch of a date's UTC midnight.
pub fn date_micros(d: Date) -> i64 {
    days_from_civil(d.0, d.1, d.2) * MICROS_PER_DAY
}

/// The partition key's type: the three time types pg-partition manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    TimestampTz,
    Timestamp,
    Date,
}

impl KeyType {
    /// The SQL literal of a period start, unambiguous whatever the session's settings.
    pub fn literal(self, d: Date) -> String {
        match self {
            KeyType::TimestampTz => format!("'{:04}-{:02}-{:02} 00:00:00+00'", d.0, d.1, d.2),
            KeyType::Timestamp => format!("'{:04}-{:02}-{:02} 00:00:00'", d.0, d.1, d.2),
            KeyType::Date => format!("'{:04}-{:02}-{:02}'", d.0, d.1, d.2),
        }
    }

    /// `FOR VALUES FROM (…) TO (…)` of the period `from`..`to`.
    pub fn bound(self, from: Date, to: Date) -> String {
        format!("FOR VALUES FROM ({}) TO ({})", self.literal(from), self.literal(to))
    }

    /// The key's SQL type.
    pub fn sql_type(self) -> &'static str {
        match self {
            KeyType::TimestampTz => "timestamptz",
            KeyType::Timestamp => "timestamp",
            KeyType::Date => "date",
        }
    }

    /// A bound for reports: RFC 3339 UTC, or `YYYY-MM-DD` for date keys; `None` when unbounded.
    pub fn show(self, micros: i64) -> Option<String> {
        if micros == i64::MIN || micros == i64::MAX {
            return None;
        }
        Some(match self {
            KeyType::Date => {
                let (y, m, d) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
                format!("{y:04}-{m:02}-{d:02}")
            }
            _ => timefmt::format_rfc3339_micros(micros),
        })
    }
}

/// One partition of a partitioned table.
#[derive(Debug, Clone)]
pub struct Partition {
    pub oid: Oid,
    pub schema: String,
    pub name: String,
    pub is_default: bool,
    /// Is itself partitioned (sub-partitions).
    pub is_partitioned: bool,
    /// Lower bound, inclusive, in microseconds since the Unix epoch (UTC; timestamp and date
    /// keys read as UTC). `i64::MIN` for MINVALUE and '-infinity'. Unused for the default.
    pub from: i64,
    /// Upper bound, exclusive. `i64::MAX` for MAXVALUE and 'infinity'.
    pub to: i64,
    /// The bound as the catalog deparses it (`FOR VALUES FROM (...) TO (...)`, `DEFAULT`).
    pub bound_sql: String,
}

impl Partition {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// A table partitioned by range on one time column, as the catalog says now.
#[derive(Debug, Clone)]
pub struct Partitioned {
    pub table: Table,
    pub key: String,
    pub key_type: KeyType,
    /// The non-default partitions, ordered by lower bound.
    pub partitions: Vec<Partition>,
    pub default: Option<Partition>,
    pub columns: Vec<ColumnInfo>,
}

impl Partitioned {
    /// The non-default partition whose range holds `micros`, if any.
    pub fn partition_for(&self, micros: i64) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.from <= micros && micros < p.to)
    }

    /// The periods of `first..=last` that no single partition covers (what `ensure` would create).
    pub fn missing(&self, first: Date, last: Date, interval: Interval) -> Vec<Date> {
        let mut out = vec![];
        let mut d = interval.align(first);
        while d <= interval.align(last) {
            let next = interval.add(d, 1);
            let (s, e) = (date_micros(d), date_micros(next));
            if !self.partitions.iter().any(|p| p.from <= s && p.to >= e) {
                out.push(d);
            }
            d = next;
        }
        out
    }

    /// The columns a copy of the rows must write (not generated), quoted and comma-separated.
    pub fn column_list(&self) -> String {
        self.columns.iter().filter(|c| !c.generated).map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ")
    }
}

/// The session settings `utc_session` replaced, to put back.
pub struct Saved {
    time_zone: String,
    date_style: String,
}

/// Sets TimeZone to UTC and DateStyle to ISO for the rest of the transaction (bounds are
/// deparsed in these); returns the previous values for [`restore_session`].
pub fn utc_session(tx: &mut Transaction) -> Result<Saved> {
    let row = tx
        .query_one(
            "SELECT current_setting('TimeZone'), current_setting('DateStyle'), \
             set_config('TimeZone', 'UTC', true), set_config('DateStyle', 'ISO, YMD', true)",
            &[],
        )
        .map_err(|e| pg_error("set the session time zone to UTC", e))?;
    Ok(Saved { time_zone: row.get(0), date_style: row.get(1) })
}

/// Puts back what [`utc_session`] changed (for callers such as pg-load whose transaction goes on).
pub fn restore_session(tx: &mut Transaction, saved: Saved) -> Result<()> {
    tx.query_one(
        "SELECT set_config('TimeZone', $1, true), set_config('DateStyle', $2, true)",
        &[&saved.time_zone, &saved.date_style],
    )
    .map_err(|e| pg_error("restore the session time zone", e))?;
    Ok(())
}

/// Takes pgferry's transaction-scoped advisory lock on `table`, retrying for `wait`; then
/// fails with exit 75 naming the holder. Released at commit or rollback (or when the
/// connection dies, e.g. kill -9), so it can never be left behind.
pub fn lock(tx: &mut Transaction, table: &Table, wait: Duration) -> Result<()> {
    let deadline = Instant::now() + wait;
    let key2 = table.oid as i32;
    loop {
        let got: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1, $2)", &[&LOCK_NAMESPACE, &key2])
            .map_err(|e| pg_error(format!("lock '{}'", table.display()), e))?
            .get(0);
        if got {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let holder = tx
                .query_opt(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
                     AND classid = $1 AND objid = $2 AND objsubid = 2 AND database = \
                     (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
                    &[&(LOCK_NAMESPACE as u32), &table.oid],
                )
                .ok()
                .flatten()
                .map(|r| format!(" (server pid {})", r.get::<_, i32>(0)))
                .unwrap_or_default();
            return Err(Error::TempFail(format!(
                "lock '{}': another pg-partition (or pg-load --ensure-partitions) run holds it{holder}; \
                 waited {}s and changed nothing; run again later",
                table.display(),
                wait.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads the partition key, the partitions and the columns of `table`. Refuses, as bad
/// input (65), a table that is not range-partitioned on one timestamptz, timestamp or date
/// column. Sets TimeZone and DateStyle for the bounds and puts them back.
pub fn inspect(tx: &mut Transaction, table: &Table) -> Result<Partitioned> {
    let saved = utc_session(tx)?;
    let info = inspect_utc(tx, table)?;
    restore_session(tx, saved)?;
    Ok(info)
}

fn inspect_utc(tx: &mut Transaction, table: &Table) -> Result<Partitioned> {
    let shown = table.display();
    let q = |e| pg_error(format!("read the partitions of '{shown}'"), e);
    if table.kind != 'p' {
        let parent = tx
            .query_opt(
                "SELECT i.inhparent::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhrelid = $1 AND c.relispartition",
                &[&table.oid],
            )
            .map_err(q)?;
        return Err(match parent {
            Some(p) => Error::Data(format!(
                "table '{shown}' is a partition of '{}'; name the partitioned table",
                p.get::<_, String>(0)
            )),
            None => Error::Data(format!(
                "table '{shown}' is not partitioned; pg-partition manages tables declared \
                 PARTITION BY RANGE on one timestamptz, timestamp or date column"
            )),
        });
    }
    let key = tx
        .query_one(
            "SELECT pt.partstrat::text, pt.partnatts::int4, pt.partattrs[0]::int4, \
             pg_get_partkeydef(pt.partrelid), a.attname::text, a.atttypid, format_type(a.atttypid, a.atttypmod) \
             FROM pg_partitioned_table pt \
             LEFT JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0] \
             WHERE pt.partrelid = $1",
            &[&table.oid],
        )
        .map_err(q)?;
    let strategy: String = key.get(0);
    let natts: i32 = key.get(1);
    let attnum: i32 = key.get(2);
    let keydef: String = key.get(3);
    let refuse = |why: String| Error::Data(format!("table '{shown}' is partitioned by {keydef}: {why}"));
    if strategy != "r" {
        return Err(refuse("pg-partition manages range partitioning only".into()));
    }
    if natts != 1 {
        return Err(refuse("pg-partition manages a key of one column only".into()));
    }
    if attnum == 0 {
        return Err(refuse("the key is an expression; pg-partition needs a plain column".into()));
    }
    let key_name: String = key.get(4);
    let key_type = match catalog::builtin_kind(key.get::<_, Oid>(5)) {
        Some(Kind::Timestamptz) => KeyType::TimestampTz,
        Some(Kind::Timestamp) => KeyType::Timestamp,
        Some(Kind::Date) => KeyType::Date,
        _ => {
            let ty: String = key.get(6);
            return Err(refuse(format!(
                "column '{key_name}' is {ty}, not a time column (timestamptz, timestamp or date)"
            )));
        }
    };

    let rows = tx
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, \
             coalesce(pg_get_expr(c.relpartbound, c.oid), '') \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE i.inhparent = $1",
            &[&table.oid],
        )
        .map_err(q)?;
    let mut partitions = vec![];
    let mut default = None;
    for r in rows {
        let bound_sql: String = r.get(4);
        let mut p = Partition {
            oid: r.get(0),
            schema: r.get(1),
            name: r.get(2),
            is_default: bound_sql == "DEFAULT",
            is_partitioned: r.get::<_, String>(3) == "p",
            from: i64::MIN,
            to: i64::MAX,
            bound_sql,
        };
        if p.is_default {
            default = Some(p);
            continue;
        }
        let (from, to) = parse_range_bound(&p.bound_sql)
            .ok_or_else(|| Error::Data(format!("partition '{}': cannot read its bound {:?}", p.name, p.bound_sql)))?;
        p.from = from;
        p.to = to;
        partitions.push(p);
    }
    partitions.sort_by_key(|p| (p.from, p.to));

    let columns = catalog::table_columns(tx, table.oid, &table.qualified())?;
    Ok(Partitioned { table: table.clone(), key: key_name, key_type, partitions, default, columns })
}

/// Reads `FOR VALUES FROM (x) TO (y)` as deparsed with TimeZone UTC and DateStyle ISO.
pub fn parse_range_bound(s: &str) -> Option<(i64, i64)> {
    let rest = s.strip_prefix("FOR VALUES FROM (")?.strip_suffix(')')?;
    let (from, to) = rest.split_once(") TO (")?;
    Some((parse_bound_value(from)?, parse_bound_value(to)?))
}

fn parse_bound_value(v: &str) -> Option<i64> {
    match v {
        "MINVALUE" => return Some(i64::MIN),
        "MAXVALUE" => return Some(i64::MAX),
        _ => {}
    }
    let lit = v.strip_prefix('\'')?.strip_suffix('\'')?;
    match lit {
        "-infinity" => Some(i64::MIN),
        "infinity" => Some(i64::MAX),
        _ => timefmt::parse_timestamp(lit).map(|p| p.utc_micros(0)),
    }
}

/// A partition's name: `TABLE_SUFFIX`. When that passes 63 bytes, the table name is cut (at a
/// character boundary) and followed by 8 hex digits of its sha256, so distinct long names
/// stay distinct and the same table always gets the same name.
pub fn partition_name(table: &str, suffix: &str) -> String {
    let full = format!("{table}_{suffix}");
    if full.len() <= MAX_IDENT_BYTES {
        return full;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(table.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let room = MAX_IDENT_BYTES - suffix.len() - hash.len() - 2;
    let mut cut = room.min(table.len());
    while !table.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}_{suffix}", &table[..cut])
}

/// A table name as SQL (and `pg-partition`'s TABLE argument) takes it: parts quoted only when needed.
pub fn sql_name(table: &Table) -> String {
    let part = |s: &str| {
        let plain = s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
        if plain {
            s.to_string()
        } else {
            quote_ident(s)
        }
    };
    if table.schema == "public" {
        part(&table.name)
    } else {
        format!("{}.{}", part(&table.schema), part(&table.name))
    }
}

/// The exact command that creates the partitions for `first..=last` (for pg-load's message).
pub fn ensure_command(table: &Table, first: Date, last: Date, interval: Interval) -> String {
    let mut s = format!(
        "pg-partition ensure {} --from {} --to {}",
        crate::cli::shell_word(&sql_name(table)),
        interval.label(interval.align(first)),
        interval.label(interval.align(last))
    );
    if interval != Interval::Monthly {
        s.push_str(" --interval ");
        s.push_str(interval.name());
    }
    s
}

/// What `ensure` should do.
#[derive(Debug, Clone, Copy)]
pub struct EnsureOptions {
    pub interval: Interval,
    /// Plan and return the SQL without changing anything.
    pub dry_run: bool,
    /// Refuse to create more than this many partitions in one run (a typo guard).
    pub limit: usize,
}

/// One partition `ensure` created (or would create).
#[derive(Debug, Clone)]
pub struct Created {
    pub name: String,
    pub from: Date,
    pub to: Date,
    /// Rows moved into it out of the DEFAULT partition.
    pub moved: u64,
}

/// What `ensure` did.
#[derive(Debug, Clone, Default)]
pub struct EnsureReport {
    pub created: Vec<Created>,
    /// Periods that already had a partition covering them.
    pub present: usize,
    /// Every changing statement, in order, as run (or, with dry_run, as it would be run).
    pub sql: Vec<String>,
}

impl EnsureReport {
    pub fn moved(&self) -> u64 {
        self.created.iter().map(|c| c.moved).sum()
    }
}

/// Creates every missing partition for the periods `first..=last` of `table`, in the
/// caller's transaction (all or nothing: the caller commits). Rows of the DEFAULT partition
/// that belong in a partition being created are moved into it, counted, and checked.
/// Periods already covered by one partition are left alone; a period that an existing
/// partition only partly covers, or whose name is taken by another table, is an error (65)
/// and nothing is changed. The caller should hold [`lock`] first.
pub fn ensure(
    tx: &mut Transaction,
    table: &Table,
    first: Date,
    last: Date,
    opts: &EnsureOptions,
) -> Result<EnsureReport> {
    let saved = utc_session(tx)?;
    let report = ensure_utc(tx, table, first, last, opts)?;
    restore_session(tx, saved)?;
    Ok(report)
}

struct Plan {
    name: String,
    from: Date,
    to: Date,
    in_default: u64,
}

fn ensure_utc(
    tx: &mut Transaction,
    table: &Table,
    first: Date,
    last: Date,
    opts: &EnsureOptions,
) -> Result<EnsureReport> {
    let iv = opts.interval;
    let info = inspect_utc(tx, table)?;
    let shown = table.display();
    let (first, last) = (iv.align(first), iv.align(last));
    if first > last {
        return Err(Error::Usage(format!(
            "the range {} to {} is empty: --to is before --from",
            iv.label(first),
            iv.label(last)
        )));
    }
    if last.0 > 9998 {
        return Err(Error::Usage(format!("period {} is past year 9998", iv.label(last))));
    }

    let mut report = EnsureReport::default();
    let mut plans: Vec<Plan> = vec![];
    let mut d = first;
    while d <= last {
        let next = iv.add(d, 1);
        let (s, e) = (date_micros(d), date_micros(next));
        if info.partitions.iter().any(|p| p.from <= s && p.to >= e) {
            report.present += 1;
        } else if let Some(p) = info.partitions.iter().find(|p| p.from < e && p.to > s) {
            // The same length as the period asked for: its bounds are elsewhere.
            let why = match guess_interval(&p.from, &p.to) {
                g if g == iv.name() => {
                    format!("its bounds are not where pg-partition's {g} periods start, at 00:00 UTC")
                }
                g => format!("is the table partitioned {g} rather than {}?", iv.name()),
            };
            return Err(Error::Data(format!(
                "table '{shown}': period {} overlaps partition '{}' ({}) without being covered by it; \
                 pg-partition does not create overlapping partitions ({why}); nothing was changed",
                iv.label(d),
                p.name,
                p.bound_sql,
            )));
        } else {
            let name = partition_name(&table.name, &iv.suffix(d));
            plans.push(Plan { name, from: d, to: next, in_default: 0 });
            if plans.len() > opts.limit {
                return Err(Error::Usage(format!(
                    "table '{shown}': {} to {} needs more than {} new partitions; check --from/--to, \
                     or raise --limit",
                    iv.label(first),
                    iv.label(last),
                    opts.limit
                )));
            }
        }
        d = next;
    }
    if plans.is_empty() {
        return Ok(report);
    }

    // A name already taken (a partition with other bounds, or a table detached earlier).
    for p in &plans {
        let taken = tx
            .query_opt(
                "SELECT c.relkind::text, c.relispartition FROM pg_class c \
                 WHERE c.relname = $1 AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = $2)",
                &[&p.name, &table.oid],
            )
            .map_err(|e| pg_error(format!("look up '{}'", p.name), e))?;
        if let Some(r) = taken {
            let what = if r.get::<_, bool>(1) {
                "it is a partition with other bounds, or of another table".to_string()
            } else {
                "it is not a partition (detached earlier by 'pg-partition retain --detach'?); \
                 attach it with ALTER TABLE ... ATTACH PARTITION, or rename it"
                    .to_string()
            };
            return Err(Error::Data(format!(
                "table '{shown}': cannot create partition '{}' for {}: a relation of that name exists and {what}; \
                 nothing was changed",
                p.name,
                iv.label(p.from)
            )));
        }
    }

    let key = quote_ident(&info.key);
    let kt = info.key_type;
    let parent = table.qualified();
    let range = |from: Date, to: Date| format!("{key} >= {} AND {key} < {}", kt.literal(from), kt.literal(to));
    let mut sql: Vec<String> = vec![];
    let mut moved_rows_table = false;

    if let Some(def) = &info.default {
        let dq = def.qualified();
        // Writers to the default partition wait until we commit, so the rows we count are
        // the rows we move. (Creating a partition takes a stronger lock on it anyway.)
        sql.push(format!("LOCK TABLE {dq} IN SHARE ROW EXCLUSIVE MODE"));
        if !opts.dry_run {
            exec(tx, &sql[sql.len() - 1], &format!("lock the default partition '{}'", def.name))?;
        }
        let span = range(plans[0].from, plans[plans.len() - 1].to);
        let total = count(tx, &format!("SELECT count(*) FROM {dq} WHERE {span}"), &def.name)?;
        if total > 0 {
            for p in plans.iter_mut() {
                p.in_default =
                    count(tx, &format!("SELECT count(*) FROM {dq} WHERE {}", range(p.from, p.to)), &def.name)?;
            }
            refuse_if_referenced(tx, &info, def, &plans, iv)?;
            sql.push(format!(
                "CREATE TEMP TABLE pgferry_moved_rows ON COMMIT DROP AS SELECT {} FROM {parent} WITH NO DATA",
                info.column_list()
            ));
            if !opts.dry_run {
                exec(tx, &sql[sql.len() - 1], "create a temporary table for the moved rows")?;
                moved_rows_table = true;
            }
        }
    }

    let cols = info.column_list();
    for p in &plans {
        let create = format!(
            "CREATE TABLE {}.{} PARTITION OF {parent} {}",
            quote_ident(&table.schema),
            quote_ident(&p.name),
            kt.bound(p.from, p.to)
        );
        let mut moved = 0;
        if p.in_default > 0 {
            let def = info.default.as_ref().expect("rows in the default partition");
            let take = format!(
                "WITH moved AS (DELETE FROM {} WHERE {} RETURNING {cols}) INSERT INTO pgferry_moved_rows SELECT {cols} FROM moved",
                def.qualified(),
                range(p.from, p.to)
            );
            let put = format!(
                "INSERT INTO {}.{} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM pgferry_moved_rows",
                quote_ident(&table.schema),
                quote_ident(&p.name)
            );
            let clear = "TRUNCATE pgferry_moved_rows".to_string();
            if !opts.dry_run {
                let what = format!("move rows for {} out of the default partition '{}'", iv.label(p.from), def.name);
                let taken = exec(tx, &take, &what)?;
                exec(tx, &create, &format!("create partition '{}'", p.name))?;
                let put_back = exec(tx, &put, &what)?;
                exec(tx, &clear, &what)?;
                if taken != p.in_default || put_back != taken {
                    return Err(Error::CheckFailed(format!(
                        "{what}: counted {}, took {taken}, put back {put_back}; nothing was changed",
                        p.in_default
                    )));
                }
            }
            moved = p.in_default;
            sql.extend([take, create, put, clear]);
        } else {
            if !opts.dry_run {
                exec(tx, &create, &format!("create partition '{}'", p.name))?;
            }
            sql.push(create);
        }
        report.created.push(Created { name: p.name.clone(), from: p.from, to: p.to, moved });
    }
    // Dropped now, not at COMMIT: pg-load may ensure again in the same transaction.
    if moved_rows_table {
        exec(tx, "DROP TABLE pgferry_moved_rows", "drop the temporary table for the moved rows")?;
    }
    report.sql = sql;
    Ok(report)
}

fn guess_interval(from: &i64, to: &i64) -> &'static str {
    let days = (to.saturating_sub(*from)) / MICROS_PER_DAY;
    match days {
        1 => "daily",
        28..=31 => "monthly",
        365 | 366 => "yearly",
        _ => "by another range",
    }
}

/// Moving rows deletes them from the default partition: a foreign key referencing the table
/// would see them vanish (its ON DELETE action, CASCADE included, would fire). Refuse.
fn refuse_if_referenced(
    tx: &mut Transaction,
    info: &Partitioned,
    def: &Partition,
    plans: &[Plan],
    iv: Interval,
) -> Result<()> {
    if let Some(fk) = catalog::referencing_keys(tx, info.table.oid)?.first() {
        let p = plans.iter().find(|p| p.in_default > 0).expect("rows to move");
        return Err(Error::Data(format!(
            "table '{}': the default partition '{}' holds {} rows for {}, and foreign key '{}' on '{}' \
             references the table, so moving them (delete, then insert) would fire its ON DELETE action; \
             move them by hand; nothing was changed",
            info.table.display(),
            def.name,
            p.in_default,
            iv.label(p.from),
            fk.name,
            fk.table
        )));
    }
    Ok(())
}

fn exec(tx: &mut Transaction, sql: &str, what: &str) -> Result<u64> {
    tx.execute(sql, &[]).map_err(|e| pg_error(what, e))
}

fn count(tx: &mut Transaction, sql: &str, name: &str) -> Result<u64> {
    let n: i64 = tx.query_one(sql, &[]).map_err(|e| pg_error(format!("count the rows of '{name}'"), e))?.get(0);
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let m = Interval::Monthly;
        assert_eq!(m.add((2024, 12, 15), 1), (2025, 1, 1));
        assert_eq!(m.add((2025, 1, 1), -1), (2024, 12, 1));
        assert_eq!(m.add((2025, 3, 31), -13), (2024, 2, 1));
        assert_eq!(Interval::Daily.add((2024, 2, 28), 1), (2024, 2, 29));
        assert_eq!(Interval::Daily.add((2023, 2, 28), 1), (2023, 3, 1));
        assert_eq!(Interval::Yearly.add((2024, 7, 4), 1), (2025, 1, 1));
        assert_eq!(m.of_micros(date_micros((2025, 2, 1)) - 1), (2025, 1, 1));
        assert_eq!(m.suffix((2025, 1, 1)), "2025_01");
        assert_eq!(Interval::Daily.suffix((2025, 1, 9)), "2025_01_09");
        assert_eq!(Interval::Yearly.label((2025, 1, 1)), "2025");
    }

    #[test]
    fn date_arguments() {
        assert_eq!(parse_date_arg("2025-01"), Some((2025, 1, 1)));
        assert_eq!(parse_date_arg("2024-02-29"), Some((2024, 2, 29)));
        assert_eq!(parse_date_arg("2025"), Some((2025, 1, 1)));
        for bad in ["2023-02-29", "2025-13", "25-01", "2025-1", "0000", "2025-01-01T00:00", ""] {
            assert_eq!(parse_date_arg(bad), None, "{bad}");
        }
    }

    #[test]
    fn bounds_from_the_catalog() {
        let jan = date_micros((2025, 1, 1));
        let feb = date_micros((2025, 2, 1));
        assert_eq!(
            parse_range_bound("FOR VALUES FROM ('2025-01-01 00:00:00+00') TO ('2025-02-01 00:00:00+00')"),
            Some((jan, feb))
        );
        assert_eq!(parse_range_bound("FOR VALUES FROM ('2025-01-01') TO ('2025-02-01')"), Some((jan, feb)));
        assert_eq!(
            parse_range_bound("FOR VALUES FROM (MINVALUE) TO ('2025-01-15 12:30:00.5+00')"),
            Some((i64::MIN, jan + 14 * MICROS_PER_DAY + 45_000_500_000))
        );
        assert_eq!(parse_range_bound("FOR VALUES FROM ('-infinity') TO (MAXVALUE)"), Some((i64::MIN, i64::MAX)));
        assert_eq!(parse_range_bound("FOR VALUES IN (1)"), None);
        assert_eq!(parse_range_bound("FOR VALUES FROM ('01.01.2025') TO ('01.02.2025')"), None);
    }

    #[test]
    fn names_fit_postgres() {
        assert_eq!(partition_name("device_logs", "2025_01"), "device_logs_2025_01");
        let long = "a".repeat(60);
        let n = partition_name(&long, "2025_01_31");
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("_2025_01_31"));
        assert_ne!(n, partition_name(&format!("{}b", "a".repeat(59)), "2025_01_31"));
        assert_eq!(n, partition_name(&long, "2025_01_31"));
        let multibyte = "é".repeat(40); // 80 bytes
        let n = partition_name(&multibyte, "2025_01");
        assert!(n.len() <= 63 && n.ends_with("_2025_01"), "{n}");
    }

    #[test]
    fn coverage() {
        let t = Table { oid: 1, schema: "public".into(), name: "t".into(), kind: 'p' };
        let p = |name: &str, from: Date, to: Date| Partition {
            oid: 2,
            schema: "public".into(),
            name: name.into(),
            is_default: false,
            is_partitioned: false,
            from: date_micros(from),
            to: date_micros(to),
            bound_sql: String::new(),
        };
        let info = Partitioned {
            table: t,
            key: "at".into(),
            key_type: KeyType::TimestampTz,
            partitions: vec![p("t_2025_01", (2025, 1, 1), (2025, 2, 1)), p("t_q2", (2025, 4, 1), (2025, 7, 1))],
            default: None,
            columns: vec![],
        };
        assert_eq!(info.partition_for(date_micros((2025, 2, 1)) - 1).unwrap().name, "t_2025_01");
        assert!(info.partition_for(date_micros((2025, 2, 1))).is_none());
        assert_eq!(
            info.missing((2024, 12, 5), (2025, 7, 1), Interval::Monthly),
            vec![(2024, 12, 1), (2025, 2, 1), (2025, 3, 1), (2025, 7, 1)]
        );
    }

    #[test]
    fn literals_and_commands() {
        assert_eq!(KeyType::TimestampTz.literal((2025, 1, 1)), "'2025-01-01 00:00:00+00'");
        assert_eq!(KeyType::Date.literal((2024, 2, 29)), "'2024-02-29'");
        let t = Table { oid: 1, schema: "Ops Data".into(), name: "Device Logs".into(), kind: 'p' };
        assert_eq!(sql_name(&t), "\"Ops Data\".\"Device Logs\"");
        assert_eq!(
            ensure_command(&t, (2023, 8, 14), (2025, 9, 1), Interval::Monthly),
            "pg-partition ensure '\"Ops Data\".\"Device Logs\"' --from 2023-08 --to 2025-09"
        );
        let t = Table { oid: 1, schema: "public".into(), name: "device_logs".into(), kind: 'p' };
        assert_eq!(
            ensure_command(&t, (2025, 1, 1), (2025, 1, 3), Interval::Daily),
            "pg-partition ensure device_logs --from 2025-01-01 --to 2025-01-03 --interval daily"
        );
    }
}
