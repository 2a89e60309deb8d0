//! What a load does around its rows: the primary key, partitions the rows need, foreign keys
//! set aside for --defer-fks, and sequences moved past the loaded ids.

use crate::rows::{Columns, Signature};
use pgferry::pg::{pg_error, quote_ident, Table};
use pgferry::Result;
use postgres::Transaction;

pub fn primary_key(tx: &mut Transaction, oid: u32) -> Result<Vec<String>> {
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

/// Creates the partitions the staged rows need (pg-partition's code path and lock).
pub fn ensure_partitions(
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

/// Moves serial/identity sequences past the highest loaded id, never backwards.
pub fn advance_sequences(tx: &mut Transaction, qt: &str, plan: &Columns, segments: &[Signature]) -> Result<()> {
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

pub struct ForeignKey {
    name: String,
    definition: String,
}

pub fn drop_foreign_keys(tx: &mut Transaction, table: &Table) -> Result<Vec<ForeignKey>> {
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

pub fn restore_foreign_keys(tx: &mut Transaction, table: &Table, fks: &[ForeignKey]) -> Result<String> {
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
