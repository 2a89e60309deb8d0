//! Into an empty table, build the indexes after COPY instead of maintaining them row by row
//! (issue 13: COPY into the indexed table costs ~1.45× COPY then ADD PRIMARY KEY), inside the
//! load's transaction.
//!
//! Taken only where every piece can be put back exactly and a duplicate key can still be
//! named by its two stream lines: the table is not a partition; its indexes (and, when it is
//! partitioned, its partitions' indexes) have no comment, no tablespace of their own and are
//! neither the replica identity nor the clustered index; the only constraints on them are
//! primary key, unique and exclusion constraints; no trigger of it is initially deferred (its
//! COPY would leave trigger events pending, and ALTER TABLE refuses to run with those) other
//! than those that go with the dropped pieces; and no foreign key references it, except,
//! in a plan run, keys of the plan's own tables, which are then set aside with it and come
//! back validated before COMMIT (an ordinary table only).
//!
//! An ordinary table is emptied by TRUNCATE in the transaction (the role must be allowed to),
//! so COPY may FREEZE and only appends pages: the n-th row of the table in physical order is
//! the n-th row sent, which names a duplicate's lines.
//!
//! A partitioned table (one level of ordinary partitions) is loaded through its parent, which
//! routes the rows; COPY FREEZE is refused there and the partitions' pages are filled through
//! the free space map, so physical order says nothing about stream order. Instead each row's
//! unique keys are hashed as they are sent into a trail file (8 bytes per key and row, in the
//! temp directory, unlinked at once); a duplicate found by the index build is looked up in
//! it. Unique keys must then be of types whose stored value the server gives back as it was
//! sent (integers, text, varchar, date, timestamps, uuid, boolean); otherwise the indexes stay.
//! Partition indexes attached to a dropped parent index come back under their own names, the
//! way pg_dump restores them (the parent ONLY, each partition's index, ATTACH PARTITION);
//! partition indexes of their own stay in place during the load.
//!
//! Rows moved in from a staging table (--ensure-partitions into an empty table) need no
//! trail: the stage holds each row's line.

use crate::copy::{EncodedRow, LineMap};
use crate::route::NewPartition;
use crate::rows::Columns;
use crate::schema::{self, ForeignKey};
use pgferry::convert::Kind;
use pgferry::pg::{pg_error, quote_ident, Table};
use pgferry::{Error, Result};
use postgres::types::Type;
use postgres::Transaction;
use std::collections::HashMap;
use std::io::{BufWriter, Read, Seek, Write};

/// The memory each index build may sort in (`SET LOCAL maintenance_work_mem` for the load's
/// transaction; a server set higher keeps its own). Bounded: the builds run one at a time.
const INDEX_BUILD_MEM_KB: i64 = 256 * 1024;
/// From this table size (in 8 kB pages, 4 MB) a build may use PostgreSQL's parallel workers
/// (`SET LOCAL min_parallel_table_scan_size`, whose default 8 MB leaves a month's partition of
/// a log table to one core; a server set lower keeps its own; the workers are still capped by
/// its `max_parallel_maintenance_workers`). Measured here (2 cores): the text index of 1M rows
/// in 14 partitions of 992 pages 0.94–1.09 s with a worker against 1.33–1.40 s without; 267
/// pages even, 67 pages slower by a worker's start.
const PARALLEL_BUILD_PAGES: i64 = 512;

/// One index dropped for the load: what re-creates it.
struct Dropped {
    /// The statements that re-create it, in order: `ALTER TABLE … ADD CONSTRAINT name …` for a
    /// constraint's index, else `CREATE INDEX …`; for a partitioned table, then each
    /// partition's index under its own name and its ATTACH PARTITION.
    sql: Vec<String>,
    /// For a unique index or constraint on plain columns: the columns, to find a duplicate.
    unique_columns: Option<Vec<String>>,
    /// For a partitioned table's unique key: its columns read back as the key trail hashed them.
    key_exprs: Vec<String>,
}

/// The indexes set aside for a load into an empty table.
pub struct SetAside {
    table: String,
    partitioned: bool,
    dropped: Vec<Dropped>,
    /// Foreign keys of the plan's tables that reference this one, dropped so that its key could
    /// be; the plan puts them back, validated, before COMMIT.
    pub referencing: Vec<ForeignKey>,
}

/// Whether the fast path applies; if so, drops the table's indexes and index-backed
/// constraints (primary key, unique, exclusion), remembering their exact definitions, after
/// TRUNCATE for an ordinary table. `plan`: in a plan run, its tables (whose foreign keys into
/// this table may be set aside). `columns`: what the load writes. `None`: the load keeps the
/// indexes.
pub fn set_aside(tx: &mut Transaction, table: &Table, plan: &[Table], columns: &Columns) -> Result<Option<SetAside>> {
    let partitioned = match table.kind {
        'r' => false,
        'p' => true,
        _ => return Ok(None),
    };
    let plan_oids: Vec<u32> = plan.iter().map(|t| t.oid).collect();
    // One round trip: whether it applies, then the indexes (parent's and attached partitions').
    let rows = tx
        .query_typed(
            "WITH rels AS (SELECT $1::oid AS oid UNION ALL SELECT inhrelid FROM pg_inherits WHERE inhparent = $1), \
             ok AS (SELECT NOT c.relispartition \
               AND (c.relkind = 'p' OR has_table_privilege(c.oid, 'TRUNCATE')) \
               AND NOT EXISTS (SELECT 1 FROM pg_inherits ih JOIN pg_class pc ON pc.oid = ih.inhrelid \
                   WHERE ih.inhparent = c.oid AND pc.relkind <> 'r') \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.confrelid IN (SELECT oid FROM rels) \
                   AND (c.relkind = 'p' OR (f.conparentid = 0 AND f.conrelid <> ALL($2)))) \
               AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid IN (SELECT oid FROM rels) AND g.tginitdeferred \
                   AND g.tgconstraint NOT IN (SELECT k.oid FROM pg_constraint k \
                       WHERE (k.conrelid IN (SELECT oid FROM rels) AND k.contype IN ('p', 'u', 'x')) \
                          OR (k.contype = 'f' AND k.confrelid = $1 AND k.conrelid = ANY($2)))) \
               AND NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
                   WHERE i.indrelid IN (SELECT oid FROM rels) AND (i.indisreplident OR i.indisclustered OR NOT i.indisvalid \
                     OR ic.reltablespace <> 0 OR obj_description(i.indexrelid, 'pg_class') IS NOT NULL \
                     OR EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid \
                                AND k.contype <> 'f' \
                                AND (k.contype NOT IN ('p', 'u', 'x') OR obj_description(k.oid, 'pg_constraint') IS NOT NULL)))) \
               AS ok, \
               array(SELECT DISTINCT f.conrelid FROM pg_constraint f \
                     WHERE f.contype = 'f' AND f.confrelid = $1 AND f.conparentid = 0) AS refs \
               FROM pg_class c WHERE c.oid = $1) \
             SELECT NULL::oid, ic.relname::text, k.conname::text, \
                    CASE WHEN k.oid IS NOT NULL THEN pg_get_constraintdef(k.oid) ELSE pg_get_indexdef(i.indexrelid) END, \
                    i.indisunique, \
                    array(SELECT a.attname::text FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY u(n, o) \
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.n ORDER BY u.o), \
                    i.indexrelid, NULL::text, i.indisprimary, i.indexprs IS NULL AND i.indpred IS NULL, ok.refs \
             FROM ok, pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
             LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x') \
             WHERE ok.ok AND i.indrelid = $1 \
             UNION ALL \
             SELECT ih.inhparent, ic.relname::text, k.conname::text, \
                    CASE WHEN k.oid IS NOT NULL THEN pg_get_constraintdef(k.oid) ELSE pg_get_indexdef(i.indexrelid) END, \
                    NULL, NULL, i.indexrelid, format('%I.%I', n.nspname, t.relname), NULL, NULL, NULL \
             FROM ok, pg_inherits ih JOIN pg_index i ON i.indexrelid = ih.inhrelid \
             JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x') \
             WHERE ok.ok AND ih.inhparent IN (SELECT indexrelid FROM pg_index WHERE indrelid = $1) \
             ORDER BY 1 NULLS FIRST, 9 DESC, 2",
            &[(&table.oid, Type::OID), (&plan_oids, Type::OID_ARRAY)],
        )
        .map_err(|e| pg_error("look at the table's indexes", e))?;
    let parents: Vec<_> = rows.iter().filter(|r| r.get::<_, Option<u32>>(0).is_none()).collect();
    if parents.is_empty() {
        return Ok(None);
    }
    let qt = table.qualified();
    let schema = quote_ident(&table.schema);
    let mut dropped = vec![];
    let mut drops = vec![];
    for r in &parents {
        let index: String = r.get(1);
        let constraint: Option<String> = r.get(2);
        let def: String = r.get(3);
        let unique: bool = r.get(4);
        let cols: Vec<String> = r.get(5);
        let oid: u32 = r.get(6);
        // A repeat in a unique index on expressions or on some rows could not be named by its
        // key columns' values: such a table keeps its indexes.
        if unique && !r.get::<_, bool>(9) {
            return Ok(None);
        }
        // A duplicate in a partitioned table is found through the key trail: only types it
        // can compare.
        let mut key_exprs = vec![];
        if partitioned && unique {
            // The trail hashes binary COPY fields.
            if !columns.binary {
                return Ok(None);
            }
            for c in &cols {
                match send_function(columns, c) {
                    Some(f) => key_exprs.push(format!("{f}({})", quote_ident(c))),
                    None => return Ok(None),
                }
            }
        }
        let only = if partitioned { "ONLY " } else { "" };
        let mut sql = match &constraint {
            Some(c) => vec![format!("ALTER TABLE {only}{qt} ADD CONSTRAINT {} {def}", quote_ident(c))],
            None => vec![def],
        };
        for child in rows.iter().filter(|c| c.get::<_, Option<u32>>(0) == Some(oid)) {
            let (cindex, ccon, cdef, part): (String, Option<String>, String, String) =
                (child.get(1), child.get(2), child.get(3), child.get(7));
            sql.push(match ccon {
                Some(c) => format!("ALTER TABLE ONLY {part} ADD CONSTRAINT {} {cdef}", quote_ident(&c)),
                None => cdef,
            });
            let cschema = part.split_once('.').map_or(schema.as_str(), |(s, _)| s);
            sql.push(format!(
                "ALTER INDEX {schema}.{} ATTACH PARTITION {cschema}.{}",
                quote_ident(&index),
                quote_ident(&cindex)
            ));
        }
        drops.push(match &constraint {
            Some(c) => format!("ALTER TABLE {qt} DROP CONSTRAINT {}", quote_ident(c)),
            None => format!("DROP INDEX {schema}.{}", quote_ident(&index)),
        });
        dropped.push(Dropped { sql, unique_columns: unique.then_some(cols), key_exprs });
    }
    // Keys of the plan's tables into this one go first (the primary key cannot go before them).
    let mut referencing = vec![];
    if !partitioned {
        let refs: Vec<u32> = parents[0].get(10);
        for (i, child) in plan.iter().enumerate() {
            if refs.contains(&child.oid) && !plan[..i].iter().any(|t| t.oid == child.oid) {
                referencing.extend(schema::drop_foreign_keys(tx, child, false, &[table.oid])?);
            }
        }
        // The table is empty and locked: TRUNCATE gives it a new file, so COPY may FREEZE and
        // only appends pages.
        drops.insert(0, format!("TRUNCATE {qt}"));
    }
    tx.batch_execute(&drops.join("; ")).map_err(|e| pg_error(format!("set aside the indexes of {qt}"), e))?;
    Ok(Some(SetAside { table: qt, partitioned, dropped, referencing }))
}

/// For column `name`, the function that gives back its stored value as binary COPY sent
/// it, for types whose stored value is exactly the value received (`None`: the key trail
/// cannot compare its values).
fn send_function(columns: &Columns, name: &str) -> Option<&'static str> {
    let c = columns.columns.iter().find(|c| c.name == name)?;
    Some(match &c.kind {
        Kind::Bool => "boolsend",
        Kind::Int2 => "int2send",
        Kind::Int4 => "int4send",
        Kind::Int8 => "int8send",
        Kind::Date => "date_send",
        Kind::Timestamp => "timestamp_send",
        Kind::Timestamptz => "timestamptz_send",
        Kind::Uuid => "uuid_send",
        Kind::Text if c.type_name == "text" => "textsend",
        Kind::Text if c.type_name.starts_with("character varying") => "varcharsend",
        _ => return None,
    })
}

impl SetAside {
    /// COPY … FREEZE applies (PostgreSQL refuses it on a partitioned table).
    pub fn freeze(&self) -> bool {
        !self.partitioned
    }

    /// The key trail a partitioned table's duplicates are found by (`None` for an ordinary
    /// table, or when no trail file can be made: a duplicate then cannot be named by lines).
    pub fn trail(&self, columns: &Columns) -> Option<std::result::Result<Trail, String>> {
        if !self.partitioned {
            return None;
        }
        let keys: Vec<Vec<usize>> = self
            .dropped
            .iter()
            .filter_map(|d| d.unique_columns.as_ref())
            .map(|cols| cols.iter().filter_map(|c| columns.columns.iter().position(|k| &k.name == c)).collect())
            .collect();
        if keys.is_empty() {
            return None;
        }
        Some(Trail::new(keys))
    }

    /// Re-creates every index and constraint as it was. A duplicate key is reported with the
    /// two stream lines that hold it (`lines`: the rows sent, in order; `trail`: their keys,
    /// for a partitioned table).
    /// `created`: partitions made during the load, while the indexes were set aside.
    pub fn restore(&self, tx: &mut Transaction, lines: Lines, created: &[NewPartition]) -> Result<()> {
        // One round trip: the builds' sort memory and parallel workers (unless the server
        // allows more), a savepoint to look for a duplicate from, every index and constraint.
        let mut sql = vec![
            format!(
                "SELECT set_config('maintenance_work_mem', '{INDEX_BUILD_MEM_KB}kB', true) FROM pg_settings \
                 WHERE name = 'maintenance_work_mem' AND setting::bigint < {INDEX_BUILD_MEM_KB}"
            ),
            format!(
                "SELECT set_config('min_parallel_table_scan_size', '{PARALLEL_BUILD_PAGES}', true) FROM pg_settings \
                 WHERE name = 'min_parallel_table_scan_size' AND setting::bigint > {PARALLEL_BUILD_PAGES}"
            ),
            "SAVEPOINT pgferry_indexes".to_string(),
        ];
        // Partitions made during the load are out while the parent's indexes come back (an
        // index is valid once every partition attached then has its own), then attached again,
        // which gives each the parent's indexes as PostgreSQL gives a new partition.
        let created = if self.partitioned { created } else { &[] };
        sql.extend(created.iter().map(|p| format!("ALTER TABLE {} DETACH PARTITION {}", self.table, p.qualified)));
        sql.extend(self.dropped.iter().flat_map(|d| d.sql.iter().cloned()));
        sql.extend(
            created.iter().map(|p| format!("ALTER TABLE {} ATTACH PARTITION {} {}", self.table, p.qualified, p.bound)),
        );
        sql.push("RELEASE SAVEPOINT pgferry_indexes".into());
        let Err(e) = tx.batch_execute(&sql.join(";\n")) else {
            return Ok(());
        };
        let dup = e.as_db_error().is_some_and(|db| db.code().code() == "23505");
        let cause = pg_error(format!("re-create the indexes of {}", self.table), e);
        if !dup || tx.batch_execute("ROLLBACK TO SAVEPOINT pgferry_indexes").is_err() {
            return Err(cause);
        }
        // The rows are in, without indexes: the first unique key (in re-creation order) that
        // repeats is the one that failed.
        let mut lines = lines;
        let mut key_no = 0;
        for d in &self.dropped {
            let Some(cols) = &d.unique_columns else { continue };
            let found = match &mut lines {
                Lines::Physical(map) => self.duplicate(tx, cols, map),
                Lines::Trail(map, t) => self.duplicate_by_trail(tx, cols, &d.key_exprs, key_no, map, t),
                Lines::Stage(stage) => duplicate_in_stage(tx, stage, cols),
            };
            if let Some(e) = found {
                return Err(e);
            }
            key_no += 1;
        }
        Err(cause)
    }

    /// The first key that repeats, by the lines of its rows (physical order is stream order).
    fn duplicate(&self, tx: &mut Transaction, cols: &[String], lines: &LineMap) -> Option<Error> {
        let (list, not_null) = key_sql(cols);
        let qt = &self.table;
        let r = tx
            .query_opt(
                &format!(
                    "SELECT min(n), max(n), ({list})::text FROM \
                     (SELECT row_number() OVER (ORDER BY ctid) - 1 AS n, {list} FROM {qt}) s \
                     WHERE {not_null} GROUP BY {list} HAVING count(*) > 1 ORDER BY 2 LIMIT 1"
                ),
                &[],
            )
            .ok()??;
        let (first, second): (i64, i64) = (r.get(0), r.get(1));
        Some(Error::Data(format!(
            "line {}: key ({}) = {} repeats line {}",
            lines.line(second as u64)?,
            cols.join(", "),
            r.get::<_, String>(2),
            lines.line(first as u64)?
        )))
    }

    /// A partitioned table's duplicate: up to 64 repeated keys read back from the table, hashed
    /// as the trail hashed them, and the one whose second row came first in the stream.
    fn duplicate_by_trail(
        &self,
        tx: &mut Transaction,
        cols: &[String],
        exprs: &[String],
        key_no: usize,
        lines: &LineMap,
        trail: &mut std::result::Result<Trail, String>,
    ) -> Option<Error> {
        let (list, not_null) = key_sql(cols);
        let qt = &self.table;
        let rows = tx
            .query(
                &format!(
                    "SELECT ({list})::text, {} FROM {qt} WHERE {not_null} GROUP BY {list} HAVING count(*) > 1 LIMIT 64",
                    exprs.join(", ")
                ),
                &[],
            )
            .ok()?;
        let first = rows.first()?;
        let unknown = |why: &str| {
            Some(Error::Data(format!(
                "key ({}) = {} is in the stream more than once (its lines are not known: {why})",
                cols.join(", "),
                first.get::<_, String>(0)
            )))
        };
        let t = match trail {
            Ok(t) => t,
            Err(why) => return unknown(why),
        };
        let mut wanted = HashMap::new();
        for (k, r) in rows.iter().enumerate() {
            let mut h = Fnv::new();
            for i in 0..cols.len() {
                match r.try_get::<_, Vec<u8>>(i + 1) {
                    Ok(b) => h.bytes(&b),
                    Err(_) => return unknown("a key value could not be read back"),
                }
            }
            wanted.insert(h.0, k);
        }
        match t.find(key_no, &wanted) {
            Ok(Some((a, b, k))) => Some(Error::Data(format!(
                "line {}: key ({}) = {} repeats line {}",
                lines.line(b)?,
                cols.join(", "),
                rows[k].get::<_, String>(0),
                lines.line(a)?
            ))),
            Ok(None) => unknown("the rows' keys differ from what the server stored"),
            Err(e) => unknown(&format!("reading the key trail: {e}")),
        }
    }
}

/// A key's columns as SQL: `a, b` and `a IS NOT NULL AND b IS NOT NULL` (a key with a NULL
/// in it repeats nothing).
fn key_sql(cols: &[String]) -> (String, String) {
    let list = cols.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
    let not_null = cols.iter().map(|c| format!("{} IS NOT NULL", quote_ident(c))).collect::<Vec<_>>().join(" AND ");
    (list, not_null)
}

/// A repeat among staged rows, by the stage's line column (its second row first in the stream).
fn duplicate_in_stage(tx: &mut Transaction, stage: &str, cols: &[String]) -> Option<Error> {
    let (list, not_null) = key_sql(cols);
    let r = tx
        .query_opt(
            &format!(
                "SELECT min(_pgferry_line), max(_pgferry_line), ({list})::text FROM {stage} \
                 WHERE {not_null} GROUP BY {list} HAVING count(*) > 1 ORDER BY 2 LIMIT 1"
            ),
            &[],
        )
        .ok()??;
    Some(Error::Data(format!(
        "line {}: key ({}) = {} repeats line {}",
        r.get::<_, i64>(1),
        cols.join(", "),
        r.get::<_, String>(2),
        r.get::<_, i64>(0)
    )))
}

/// Where a repeated key's lines come from.
pub enum Lines<'a> {
    /// An ordinary table filled by COPY FREEZE: physical order is stream order.
    Physical(&'a LineMap),
    /// A partitioned table: the key trail of the rows sent (or why there is none).
    Trail(&'a LineMap, std::result::Result<Trail, String>),
    /// Rows moved in from a staging table that holds each row's line.
    Stage(&'a str),
}

/// Each row's unique keys, hashed, in the order the rows were sent (8 bytes per key and row,
/// in a file unlinked as soon as it is made: memory stays flat however many rows).
pub struct Trail {
    /// Per unique key: its columns' positions in the COPY's plan.
    keys: Vec<Vec<usize>>,
    out: BufWriter<std::fs::File>,
    broken: Option<String>,
}

impl Trail {
    fn new(keys: Vec<Vec<usize>>) -> std::result::Result<Trail, String> {
        let path = std::env::temp_dir().join(format!(
            "pg-load-{}-{}.keys",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("cannot make a key trail file in {}: {e}", std::env::temp_dir().display()))?;
        let _ = std::fs::remove_file(&path);
        Ok(Trail { keys, out: BufWriter::with_capacity(1 << 16, file), broken: None })
    }

    /// One row sent: `row` its binary COPY fields by plan position, `copied` the positions
    /// this COPY carries (a key column it leaves out takes the server's default, which the
    /// trail cannot know).
    pub fn push(&mut self, row: &EncodedRow, copied: &[usize]) {
        for key in &self.keys {
            let mut h = Fnv::new();
            for &i in key {
                match row.field(i) {
                    _ if !copied.contains(&i) => h.byte(0xff),
                    // A field is its length word, then the bytes; -1: NULL.
                    Some(f) if f.len() >= 4 && f[..4] != [0xff; 4] => h.bytes(&f[4..]),
                    _ => h.byte(0),
                }
            }
            if let Err(e) = self.out.write_all(&h.0.to_le_bytes()) {
                self.broken.get_or_insert(e.to_string());
            }
        }
    }

    /// The first row (by position) that repeats one of `wanted`'s hashes of key `key_no`, with
    /// the earlier row it repeats and which wanted key it is.
    fn find(&mut self, key_no: usize, wanted: &HashMap<u64, usize>) -> std::io::Result<Option<(u64, u64, usize)>> {
        if let Some(b) = &self.broken {
            return Err(std::io::Error::other(b.clone()));
        }
        self.out.flush()?;
        let file = self.out.get_mut();
        file.rewind()?;
        let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
        let width = self.keys.len();
        let mut rec = vec![0u8; 8 * width];
        let mut first: HashMap<usize, u64> = HashMap::new();
        let mut n = 0u64;
        loop {
            match reader.read_exact(&mut rec) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            }
            let h = u64::from_le_bytes(rec[8 * key_no..8 * key_no + 8].try_into().expect("8 bytes"));
            if let Some(&k) = wanted.get(&h) {
                match first.get(&k) {
                    Some(&a) => return Ok(Some((a, n, k))),
                    None => {
                        first.insert(k, n);
                    }
                }
            }
            n += 1;
        }
    }
}

/// FNV-1a, 64 bits: the trail's hash (a repeated key hashes alike on both sides; 64 keys
/// against millions of rows make a false match vanishingly unlikely).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    fn bytes(&mut self, v: &[u8]) {
        self.byte(2);
        for b in (v.len() as u64).to_le_bytes() {
            self.byte(b);
        }
        for &b in v {
            self.byte(b);
        }
    }
}
