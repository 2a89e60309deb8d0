//! `--ensure-partitions` without a staging table: each row's partition key is read from its
//! binary COPY field and checked against the partitions' bounds (one comparison for a row in
//! the same partition as the one before). A row that no partition holds ends the COPY; the
//! partitions it needs are created (pg-partition's code and lock, in the load's transaction)
//! and the next COPY starts with that row.
//!
//! What gets created is what the staged path created: every missing period between the
//! earliest and the latest key of the stream (NULL and ±infinity left out), checked once more
//! when the stream ends, so a gap between existing partitions is filled as before.

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
}

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

    /// Whether the row needs a partition that does not exist yet. Rows that leave the key
    /// out are looked at when their COPY opens ([`Router::prepare`]).
    #[inline]
    pub fn needs_partition(&mut self, row: &EncodedRow) -> bool {
        let Key::At(k) = self.key(row) else { return false };
        self.see(k);
        if self.last.0 <= k && k < self.last.1 {
            return false;
        }
        match self.info.partition_for(k) {
            Some(p) => {
                self.last = (p.from, p.to);
                false
            }
            None => true,
        }
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
        let Key::At(k) = key else { return Ok(()) };
        self.see(k);
        if self.info.partition_for(k).is_none() {
            self.ensure_seen(tx)?;
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
            self.created.push(NewPartition { name: p.name.clone(), from: p.from, qualified: p.qualified(), bound });
            self.info.partitions.push(p);
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
