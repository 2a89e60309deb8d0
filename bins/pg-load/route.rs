//! `--ensure-partitions` without a staging table: each row's partition key is read from its
//! binary COPY field and checked against the partitions' bounds (one comparison for a row in
//! the same partition as the one before). A row that no partition holds ends the COPY; the
//! partitions it needs are created (pg-partition's code and lock, in the load's transaction)
//! and the next COPY starts with that row.
//!
//! What gets created is what the staged path created: every missing period between the
//! earliest and the latest key of the stream (NULL and ±infinity left out), checked once more
//! when the stream ends, so a gap between existing partitions is filled as before.
//!
//! Rows also go straight into their partition where that stores exactly what the parent would:
//! one COPY per run of rows in the same partition, instead of one COPY into the parent, which
//! routes each row (measured here, 1M rows into 14 monthly partitions, server-side COPY: 1.62 s
//! through the parent, 1.26 s into the partitions). A partition qualifies when the parent and
//! it have no triggers of the user's (statement triggers fire for the table named in COPY), its
//! columns have the parent's defaults, identity and generation (a row that leaves a column out
//! gets the parent's default when routed), and the role may insert into it with no row-level
//! security in the way. Rows with no key, or a key in no partition that qualifies, go through
//! the parent; so does the rest of a stream whose runs turn out short (a COPY per few rows
//! costs more than routing).

use crate::copy::EncodedRow;
use pgferry::partition::{self, date_micros, Interval, KeyType, Partition, Partitioned};
use pgferry::pg::{pg_error, Table};
use pgferry::timefmt::{MICROS_PER_DAY, PG_EPOCH_DAYS, PG_EPOCH_MICROS};
use pgferry::Result;
use postgres::Transaction;

/// A partition created during the load.
pub struct NewPartition {
    pub name: String,
    /// Its lower bound (Unix microseconds): the partitions are kept in this order.
    from: i64,
    /// `"schema"."name"`.
    pub qualified: String,
    /// `FOR VALUES FROM (…) TO (…)`, as ATTACH PARTITION takes it.
    pub bound: String,
}

/// Routes one table's rows to partitions that exist, creating the missing ones.
pub struct Router {
    info: Partitioned,
    interval: Interval,
    /// The key column's position among the load's columns.
    col: usize,
    /// The key's default expression (rows that leave the key out get it).
    default_sql: Option<String>,
    /// `[from, to)` of the partition that held the last row checked.
    last: (i64, i64),
    /// Earliest and latest key seen.
    seen: Option<(i64, i64)>,
    lock_timeout: u32,
    pub created: Vec<NewPartition>,
    /// Rows moved out of the DEFAULT partition into created partitions.
    pub moved: u64,
    /// The partitions rows may go straight into (qualified names).
    direct: Vec<String>,
    /// The partition the open COPY is into (qualified); `None`: the parent.
    open: Option<String>,
    /// The rows of `last` go into the open COPY.
    last_fits: bool,
    /// Rows looked at, and COPYs ended to go into another partition (or the parent).
    checked: u64,
    switches: u64,
    /// The runs were short: the rest of the stream goes through the parent.
    parent_only: bool,
}

/// Up to this many COPYs ended to go into another partition, then while runs average at least
/// MIN_RUN rows; after that the rest of the stream goes through the parent.
const FREE_SWITCHES: u64 = 16;
const MIN_RUN: u64 = 4096;

enum Key {
    /// The row leaves the key column out: the server fills its default.
    Absent,
    /// NULL or ±infinity: no period (the DEFAULT partition takes it, or the server refuses it).
    None,
    At(i64),
}

impl Router {
    /// For a direct load into `table`, partitioned by range on a time column; `None` when the
    /// key cannot be read from the rows (not loaded in binary, or not a column of the load).
    pub fn new(
        tx: &mut Transaction,
        table: &Table,
        columns: &crate::rows::Columns,
        interval: Interval,
        lock_timeout: u32,
    ) -> Result<Option<Router>> {
        let info = partition::inspect(tx, table)?;
        let Some(col) = columns.columns.iter().position(|c| c.name == info.key) else { return Ok(None) };
        if !columns.binary {
            return Ok(None);
        }
        let default_sql = match columns.columns[col].has_default {
            false => None,
            true => tx
                .query_opt(
                    "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a \
                     ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = $1 AND a.attname = $2",
                    &[&table.oid, &info.key],
                )
                .map_err(|e| pg_error("read the partition key's default", e))?
                .map(|r| r.get(0)),
        };
        // (direct_partitions keeps the ordinary tables only: no sub-partitioned one.)
        let partitions: Vec<String> = info.partitions.iter().map(Partition::qualified).collect();
        let direct = direct_partitions(tx, table, &partitions)?;
        Ok(Some(Router {
            info,
            interval,
            col,
            default_sql,
            last: (0, 0),
            seen: None,
            lock_timeout,
            created: vec![],
            moved: 0,
            direct,
            open: None,
            last_fits: false,
            checked: 0,
            switches: 0,
            parent_only: false,
        }))
    }

    fn key(&self, row: &EncodedRow) -> Key {
        // A binary field: its length word, then the value; length -1 is NULL.
        let Some(f) = row.field(self.col) else { return Key::Absent };
        let v = &f[4.min(f.len())..];
        match self.info.key_type {
            KeyType::TimestampTz | KeyType::Timestamp if v.len() == 8 => {
                match i64::from_be_bytes(v.try_into().expect("8 bytes")) {
                    i64::MIN | i64::MAX => Key::None,
                    t => Key::At(t.saturating_add(PG_EPOCH_MICROS)),
                }
            }
            KeyType::Date if v.len() == 4 => match i32::from_be_bytes(v.try_into().expect("4 bytes")) {
                i32::MIN | i32::MAX => Key::None,
                d => Key::At((d as i64 + PG_EPOCH_DAYS) * MICROS_PER_DAY),
            },
            _ => Key::None,
        }
    }

    /// Whether the row cannot go into the open COPY: it needs a partition that does not exist
    /// yet, or belongs in another partition (or the parent) than the open COPY's. Rows that
    /// leave the key out are looked at when their COPY opens ([`Router::prepare`]).
    #[inline]
    pub fn needs_new_copy(&mut self, row: &EncodedRow) -> bool {
        self.checked += 1;
        let Key::At(k) = self.key(row) else { return self.open.is_some() && self.switch() };
        self.see(k);
        if self.last.0 <= k && k < self.last.1 {
            return !self.last_fits && self.switch();
        }
        let Some(p) = self.info.partition_for(k) else { return true };
        self.last = (p.from, p.to);
        let into = self.direct_into(p);
        self.last_fits = into == self.open;
        !self.last_fits && self.switch()
    }

    /// Where rows of partition `p` go: into it, or (`None`) through the parent.
    fn direct_into(&self, p: &Partition) -> Option<String> {
        let q = p.qualified();
        (!self.parent_only && self.direct.contains(&q)).then_some(q)
    }

    /// Counts a COPY ended to go elsewhere; past the free ones, when runs are short, the rest
    /// of the stream goes through the parent. Always true.
    fn switch(&mut self) -> bool {
        self.switches += 1;
        if self.switches > FREE_SWITCHES && self.switches * MIN_RUN > self.checked {
            self.parent_only = true;
        }
        true
    }

    /// The partition the COPY opened after [`Router::prepare`] goes into (qualified), or `None`
    /// for the parent.
    pub fn copy_into(&self) -> Option<&str> {
        self.open.as_deref()
    }

    fn see(&mut self, k: i64) {
        self.seen = Some(match self.seen {
            None => (k, k),
            Some((lo, hi)) => (lo.min(k), hi.max(k)),
        });
    }

    /// Before a COPY opens with `row`: creates the partitions it needs. `omits_key`: the COPY
    /// leaves the key column to its default, which is evaluated here (a default such as
    /// `now()` is the transaction's time, the same for every row).
    pub fn prepare(&mut self, tx: &mut Transaction, row: &EncodedRow, omits_key: bool) -> Result<()> {
        let key = match (omits_key, &self.default_sql) {
            (true, Some(expr)) => {
                let sql = format!(
                    "SELECT (extract(epoch FROM ({expr})::{}) * 1000000)::bigint",
                    self.info.key_type.sql_type()
                );
                let v: Option<i64> =
                    tx.query_one(&sql, &[]).map_err(|e| pg_error("evaluate the partition key's default", e))?.get(0);
                match v {
                    Some(k) => Key::At(k),
                    None => Key::None,
                }
            }
            (true, None) => Key::None,
            (false, _) => self.key(row),
        };
        // A row that leaves the key out goes through the parent: a volatile default evaluated
        // by the server might not fall in the partition evaluated here.
        self.open = None;
        self.last = (0, 0);
        let Key::At(k) = key else { return Ok(()) };
        self.see(k);
        if self.info.partition_for(k).is_none() {
            self.ensure_seen(tx)?;
        }
        if let (false, Some(p)) = (omits_key, self.info.partition_for(k)) {
            self.open = self.direct_into(p);
            self.last = (p.from, p.to);
            self.last_fits = true;
        }
        Ok(())
    }

    /// After the stream: the periods between the earliest and the latest key that still have
    /// no partition (the staged path created those too).
    pub fn finish(&mut self, tx: &mut Transaction) -> Result<()> {
        let Some((lo, hi)) = self.seen else { return Ok(()) };
        let iv = self.interval;
        if !self.info.missing(iv.of_micros(lo), iv.of_micros(hi), iv).is_empty() {
            self.ensure_seen(tx)?;
        }
        Ok(())
    }

    fn ensure_seen(&mut self, tx: &mut Transaction) -> Result<()> {
        let Some((lo, hi)) = self.seen else { return Ok(()) };
        let table = self.info.table.clone();
        let report = crate::schema::ensure_range(tx, &table, self.interval, lo, hi, self.lock_timeout)?;
        let kt = self.info.key_type;
        let mut made = vec![];
        for c in report.created {
            let bound = kt.bound(c.from, c.to);
            let p = Partition {
                oid: 0,
                schema: table.schema.clone(),
                name: c.name,
                is_default: false,
                is_partitioned: false,
                from: date_micros(c.from),
                to: date_micros(c.to),
                bound_sql: bound.clone(),
            };
            self.moved += c.moved;
            made.push(p.qualified());
            self.created.push(NewPartition { name: p.name.clone(), from: p.from, qualified: p.qualified(), bound });
            self.info.partitions.push(p);
        }
        if !self.parent_only {
            let direct = direct_partitions(tx, &table, &made)?;
            self.direct.extend(direct);
        }
        self.info.partitions.sort_by_key(|p| (p.from, p.to));
        self.created.sort_by_key(|c| c.from);
        self.last = (0, 0);
        Ok(())
    }

    /// The key column's position among the load's columns.
    pub fn key_column(&self) -> usize {
        self.col
    }

    /// `created partitions a, b (n rows moved out of the default partition)`, if any.
    pub fn note(&self) -> Option<String> {
        let names: Vec<&str> = self.created.iter().map(|c| c.name.as_str()).collect();
        crate::schema::created_note(&names, self.moved)
    }
}

/// Which of `partitions` (qualified names, ordinary tables of `table`) rows may be copied into
/// directly, storing what the parent's routing would (see the module's comment).
fn direct_partitions(tx: &mut Transaction, table: &Table, partitions: &[String]) -> Result<Vec<String>> {
    if partitions.is_empty() {
        return Ok(vec![]);
    }
    let rows = tx
        .query(
            "SELECT p.name FROM unnest($2::text[]) AS p(name) JOIN pg_class l ON l.oid = p.name::regclass \
             WHERE l.relkind = 'r' AND has_table_privilege(l.oid, 'INSERT') AND NOT row_security_active(l.oid) \
               AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid IN (l.oid, $1) AND NOT t.tgisinternal) \
               AND NOT EXISTS (SELECT 1 FROM pg_attribute pa \
                 JOIN pg_attribute la ON la.attrelid = l.oid AND la.attname = pa.attname AND NOT la.attisdropped \
                 LEFT JOIN pg_attrdef pd ON pd.adrelid = pa.attrelid AND pd.adnum = pa.attnum \
                 LEFT JOIN pg_attrdef ld ON ld.adrelid = la.attrelid AND ld.adnum = la.attnum \
                 WHERE pa.attrelid = $1 AND pa.attnum > 0 AND NOT pa.attisdropped \
                   AND (pa.attidentity <> la.attidentity OR pa.attgenerated <> la.attgenerated \
                     OR pg_get_expr(pd.adbin, pd.adrelid) IS DISTINCT FROM pg_get_expr(ld.adbin, ld.adrelid)))",
            &[&table.oid, &partitions],
        )
        .map_err(|e| pg_error(format!("look at the partitions of '{}'", table.display()), e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
