//! Into an empty table, build the indexes after COPY instead of maintaining them row by row
//! (issue 13: COPY into the indexed table costs ~1.45× COPY then ADD PRIMARY KEY), inside the
//! load's transaction, and COPY with FREEZE.
//!
//! Taken only where every piece can be put back exactly and a duplicate key can still be
//! named by its two stream lines: an ordinary table (not partitioned, not a partition), that
//! no foreign key references, whose indexes have no comment, no tablespace of their own and
//! are neither the replica identity nor the clustered index, and that the role may TRUNCATE
//! (the table is emptied by TRUNCATE in the transaction, so new pages are only appended: the
//! n-th row of the table in physical order is the n-th row sent, which names a duplicate's
//! lines; and COPY FREEZE is allowed).

use crate::copy::LineMap;
use pgferry::pg::{pg_error, quote_ident, Table};
use pgferry::{Error, Result};
use postgres::Transaction;

/// One index dropped for the load: what re-creates it.
struct Dropped {
    name: String,
    /// `ALTER TABLE … ADD CONSTRAINT name …` for a constraint's index, else `CREATE INDEX …`.
    sql: String,
    /// For a unique index or constraint on plain columns: the columns, to find a duplicate.
    unique_columns: Option<Vec<String>>,
}

/// The indexes set aside for a load into an empty table.
pub struct SetAside {
    table: String,
    dropped: Vec<Dropped>,
}

/// Whether the fast path applies; if so, TRUNCATEs the (empty) table and drops its indexes
/// and index-backed constraints (primary key, unique, exclusion), remembering their exact
/// definitions. `None`: the load keeps the indexes.
pub fn set_aside(tx: &mut Transaction, table: &Table) -> Result<Option<SetAside>> {
    if table.kind != 'r' {
        return Ok(None);
    }
    let ok = tx
        .query_one(
            "SELECT NOT c.relispartition AND has_table_privilege(c.oid, 'TRUNCATE') \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.confrelid = c.oid) \
               AND NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
                   WHERE i.indrelid = c.oid AND (i.indisreplident OR i.indisclustered OR NOT i.indisvalid \
                     OR ic.reltablespace <> 0 OR obj_description(i.indexrelid, 'pg_class') IS NOT NULL \
                     OR EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = c.oid \
                                AND (k.contype NOT IN ('p', 'u', 'x') OR obj_description(k.oid, 'pg_constraint') IS NOT NULL)))) \
               AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid) \
             FROM pg_class c WHERE c.oid = $1",
            &[&table.oid],
        )
        .map_err(|e| pg_error("look at the table's indexes", e))?
        .get::<_, bool>(0);
    if !ok {
        return Ok(None);
    }
    let qt = table.qualified();
    let rows = tx
        .query(
            "SELECT ic.relname::text, k.conname::text, \
                    CASE WHEN k.oid IS NOT NULL THEN pg_get_constraintdef(k.oid) ELSE pg_get_indexdef(i.indexrelid) END, \
                    i.indisunique AND i.indexprs IS NULL AND i.indpred IS NULL, \
                    array(SELECT a.attname::text FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY u(n, o) \
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.n ORDER BY u.o) \
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
             LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid \
             WHERE i.indrelid = $1 ORDER BY i.indisprimary DESC, ic.relname",
            &[&table.oid],
        )
        .map_err(|e| pg_error("read the table's indexes", e))?;
    let mut dropped = vec![];
    for r in &rows {
        let index: String = r.get(0);
        let constraint: Option<String> = r.get(1);
        let def: String = r.get(2);
        let unique: bool = r.get(3);
        let cols: Vec<String> = r.get(4);
        let (name, sql) = match &constraint {
            Some(c) => (c.clone(), format!("ALTER TABLE {qt} ADD CONSTRAINT {} {def}", quote_ident(c))),
            None => (index.clone(), def),
        };
        dropped.push(Dropped { name, sql, unique_columns: unique.then_some(cols) });
    }
    // The table is empty and locked: TRUNCATE gives it a new file, so COPY may FREEZE and
    // only appends pages.
    tx.batch_execute(&format!("TRUNCATE {qt}")).map_err(|e| pg_error("truncate the empty table", e))?;
    for (r, d) in rows.iter().zip(&dropped) {
        let constraint: Option<String> = r.get(1);
        let sql = match constraint {
            Some(c) => format!("ALTER TABLE {qt} DROP CONSTRAINT {}", quote_ident(&c)),
            None => format!("DROP INDEX {}.{}", quote_ident(&table.schema), quote_ident(&d.name)),
        };
        tx.batch_execute(&sql).map_err(|e| pg_error(format!("drop index {} for the load", d.name), e))?;
    }
    Ok(Some(SetAside { table: qt, dropped }))
}

impl SetAside {
    /// Re-creates every index and constraint as it was. A duplicate key is reported with the
    /// two stream lines that hold it (`lines`: the rows sent, in order).
    pub fn restore(&self, tx: &mut Transaction, lines: &LineMap) -> Result<()> {
        tx.batch_execute("SAVEPOINT pgferry_indexes").map_err(|e| pg_error("savepoint", e))?;
        for d in &self.dropped {
            if let Err(e) = tx.batch_execute(&d.sql) {
                let dup = e.as_db_error().is_some_and(|db| db.code().code() == "23505");
                let cause = pg_error(format!("re-create index {}", d.name), e);
                return Err(match (&d.unique_columns, dup) {
                    (Some(cols), true) => self.duplicate(tx, cols, lines).unwrap_or(cause),
                    _ => cause,
                });
            }
        }
        tx.batch_execute("RELEASE SAVEPOINT pgferry_indexes").map_err(|e| pg_error("release savepoint", e))
    }

    /// The first key that repeats, by the lines of its rows.
    fn duplicate(&self, tx: &mut Transaction, cols: &[String], lines: &LineMap) -> Option<Error> {
        tx.batch_execute("ROLLBACK TO SAVEPOINT pgferry_indexes").ok()?;
        let list = cols.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
        let not_null = cols.iter().map(|c| format!("{} IS NOT NULL", quote_ident(c))).collect::<Vec<_>>().join(" AND ");
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
}
