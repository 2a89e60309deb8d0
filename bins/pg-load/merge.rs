//! The staged path: rows COPYed into a temporary table, then merged into the target by key
//! (insert skips keys already present, upsert updates those whose values differ).

use crate::copy::no_partition;
use crate::rows::{Columns, Signature};
use crate::Mode;
use pgferry::pg::{pg_error, quote_ident};
use pgferry::{Error, Result};
use postgres::Transaction;

pub fn create_stage(tx: &mut Transaction, qt: &str) -> Result<String> {
    let stage = "pg_temp.pgferry_stage".to_string();
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE pgferry_stage ON COMMIT DROP AS SELECT * FROM {qt} WITH NO DATA; \
         ALTER TABLE {stage} ADD COLUMN _pgferry_seg integer NOT NULL, ADD COLUMN _pgferry_line bigint NOT NULL"
    ))
    .map_err(|e| pg_error("create the staging table", e))?;
    Ok(stage)
}

/// Drops the staging table once merged, so the next table of a plan run can stage its own.
pub fn drop_stage(tx: &mut Transaction, stage: &str) -> Result<()> {
    tx.batch_execute(&format!("DROP TABLE {stage}")).map_err(|e| pg_error("drop the staging table", e))
}

/// What a merge of staged rows did.
#[derive(Debug, Default)]
pub struct Merged {
    pub inserted: i64,
    /// Rows of the stream whose key was already there.
    pub present: i64,
    /// Of those, the rows upsert rewrote (their values differed).
    pub updated: i64,
    /// Rows of the stream whose key is in the table after the merge.
    pub present_after: i64,
}

/// Moves staged rows into the table by key.
#[allow(clippy::too_many_arguments)]
pub fn merge_stage(
    tx: &mut Transaction,
    qt: &str,
    stage: &str,
    plan: &Columns,
    segments: &[Signature],
    key: &[String],
    mode: Mode,
    source_rows: i64,
) -> Result<Merged> {
    if key.is_empty() {
        // Staged only to learn the partitions the rows need, into a table with no key:
        // a plain insert (the table was empty, or --mode append).
        let mut inserted = 0i64;
        for (seg, sig) in segments.iter().enumerate() {
            let cols: Vec<String> = (0..plan.columns.len())
                .filter(|i| !sig.contains(i))
                .map(|i| quote_ident(&plan.columns[i].name))
                .collect();
            let list = cols.join(", ");
            inserted += tx
                .execute(
                    &format!("INSERT INTO {qt} ({list}) SELECT {list} FROM {stage} WHERE _pgferry_seg = {seg}"),
                    &[],
                )
                .map_err(|e| merge_error(qt, e))? as i64;
        }
        return Ok(Merged { inserted, present_after: inserted, ..Merged::default() });
    }
    let key_list: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    let key_sql = key_list.join(", ");
    // A serial id the source does not carry: its rows cannot be told from those loaded.
    refuse_null_keys(
        tx,
        stage,
        key,
        " that tells its rows from those already in the table; pass --key with columns the stream has \
         (a UNIQUE constraint's), or --mode append",
    )?;
    index_stage_key(tx, stage, key, source_rows)?;
    let oid = tx
        .query_one(&format!("SELECT '{}'::regclass::oid", qt.replace('\'', "''")), &[])
        .map_err(|e| pg_error("look up the table", e))?
        .get::<_, u32>(0);
    let on_conflict = pgferry::catalog::has_unique_key(tx, oid, key)?;
    let join = key.iter().map(|k| format!("t.{0} = s.{0}", quote_ident(k))).collect::<Vec<_>>().join(" AND ");
    let mut m = Merged::default();
    for (seg, sig) in segments.iter().enumerate() {
        let cols: Vec<String> =
            (0..plan.columns.len()).filter(|i| !sig.contains(i)).map(|i| quote_ident(&plan.columns[i].name)).collect();
        let list = cols.join(", ");
        let select = format!(
            "SELECT {} FROM {stage} s WHERE s._pgferry_seg = {seg}",
            cols.iter().map(|c| format!("s.{c}")).collect::<Vec<_>>().join(", ")
        );
        let sql = match (mode, on_conflict) {
            (Mode::Upsert, true) => {
                // A row whose values are all as they were is left alone: a converging re-run
                // rewrites nothing (no new row version, no index entries, no WAL).
                let values: Vec<&String> = cols.iter().filter(|c| !key_list.contains(c)).collect();
                let action = if values.is_empty() {
                    "DO NOTHING".to_string()
                } else {
                    let sets: Vec<String> = values.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
                    format!("DO UPDATE SET {} WHERE {}", sets.join(", "), differs(&values, "t", "EXCLUDED"))
                };
                format!(
                    "INSERT INTO {qt} AS t ({list}) {select} ON CONFLICT ({key_sql}) {action} RETURNING (t.xmax = 0)"
                )
            }
            (Mode::Upsert, false) => {
                return Err(Error::Usage(format!("--mode upsert needs a unique index on ({})", key.join(", "))));
            }
            // The anti-join passes over the keys already there (a re-run's rows, all of them)
            // by a merge join; ON CONFLICT still settles a key that arrives meanwhile.
            (_, true) => format!(
                "INSERT INTO {qt} ({list}) {select} AND NOT EXISTS (SELECT 1 FROM {qt} t WHERE {join}) \
                 ON CONFLICT ({key_sql}) DO NOTHING RETURNING true"
            ),
            (_, false) => format!(
                "INSERT INTO {qt} ({list}) {select} AND NOT EXISTS (SELECT 1 FROM {qt} t WHERE {join}) RETURNING true"
            ),
        };
        // Inserted rows come back true, updated ones false (upsert); left alone: not at all.
        let counted = format!(
            "WITH ins AS ({sql}) SELECT count(*) FILTER (WHERE ins.x), count(*) FILTER (WHERE NOT ins.x) \
             FROM ins AS ins(x)"
        );
        let row = tx.query_one(&counted, &[]).map_err(|e| merge_error(qt, e))?;
        m.inserted += row.get::<_, i64>(0);
        m.updated += row.get::<_, i64>(1);
    }
    let present_after: i64 = tx
        .query_one(
            // The stage's keys are distinct (index_stage_key).
            &format!("SELECT count(*) FROM {stage} s WHERE EXISTS (SELECT 1 FROM {qt} t WHERE {join})"),
            &[],
        )
        .map_err(|e| pg_error("verify the loaded keys", e))?
        .get(0);
    m.present = source_rows - m.inserted;
    m.present_after = present_after;
    Ok(m)
}

/// `old.c::text IS DISTINCT FROM new.c::text OR …` for the columns `values`: whether a row's
/// values differ as their text shows them (1.0 and 1.00, or -0 and 0, differ: equal by `=`).
fn differs(values: &[&String], old: &str, new: &str) -> String {
    values.iter().map(|c| format!("{old}.{c}::text IS DISTINCT FROM {new}.{c}::text")).collect::<Vec<_>>().join(" OR ")
}

fn merge_error(table: &str, e: postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else { return pg_error("merge staged rows", e) };
    let detail = db.detail().unwrap_or("");
    match db.code().code() {
        "23503" => Error::Data(format!("{detail}; load the parent table first, or pass --defer-fks")),
        "23502" => Error::Data(format!("null value in NOT NULL column '{}'", db.column().unwrap_or("?"))),
        "23505" => Error::Data(format!("duplicate key on another unique constraint: {detail}")),
        "23514" if db.message().starts_with("no partition") => {
            Error::Data(no_partition(&table.replace("\"public\".", "").replace('"', ""), detail))
        }
        _ => pg_error("merge staged rows", e),
    }
}

/// Refuses a staged row without a value for a column of the key, by its line (the merge by key,
/// or the key's NOT NULL, would refuse it without one). `advice` follows the message.
pub fn refuse_null_keys(tx: &mut Transaction, stage: &str, key: &[String], advice: &str) -> Result<()> {
    if key.is_empty() {
        return Ok(());
    }
    let firsts = key.iter().map(|k| format!("min(_pgferry_line) FILTER (WHERE {} IS NULL)", quote_ident(k)));
    let rows = tx
        .query_typed(&format!("SELECT {} FROM {stage}", firsts.collect::<Vec<_>>().join(", ")), &[])
        .map_err(|e| pg_error("check the stream's keys", e))?;
    for (i, k) in key.iter().enumerate() {
        if let Some(line) = rows[0].get::<_, Option<i64>>(i) {
            return Err(Error::Data(format!(
                "line {line}: the row has no value for '{k}', a column of the key ({}){advice}",
                key.join(", ")
            )));
        }
    }
    Ok(())
}

/// A key that repeats within the stream is bad data, named by its two lines. The check builds
/// a unique index on the stage's key and ANALYZEs the stage: the merge's joins can then run
/// as merge joins of two indexes. (Measured, 2M staged rows in key order: a DISTINCT of the
/// keys took 2.8 s at the default work_mem, the unique index takes 1.0-1.3 s; the re-run's
/// insert and its check of the keys went from 5.3 s and 8.1 s to 0.75 s and 0.9 s.)
fn index_stage_key(tx: &mut Transaction, stage: &str, key: &[String], source_rows: i64) -> Result<()> {
    let key_sql = key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
    let run =
        |tx: &mut Transaction, sql: &str| tx.batch_execute(sql).map_err(|e| pg_error("index the stream's keys", e));
    run(tx, "SAVEPOINT pgferry_stage_key")?;
    // The stream's distinct keys, counted only when the index was not made: to learn whether
    // a key it could not hold repeats, or how many rows repeat one.
    let distinct = match tx.batch_execute(&format!("CREATE UNIQUE INDEX ON {stage} ({key_sql})")) {
        Ok(()) => None,
        Err(e) => {
            let code = e.as_db_error().map(|db| db.code().code().to_string());
            // A key no btree index holds: a --key column of a type without a btree operator
            // class (42704), values past an index entry's size (54000), more than 32 columns
            // (54011); the merge then joins without the index. Anything else but a repeat
            // (a cancel, a timeout, a full disk) ends the load.
            let unindexable = matches!(code.as_deref(), Some("42704" | "54000" | "54011"));
            if code.as_deref() != Some("23505") && !unindexable {
                return Err(pg_error("index the stream's keys", e));
            }
            run(tx, "ROLLBACK TO SAVEPOINT pgferry_stage_key")?;
            let sql = format!("SELECT count(*) FROM (SELECT DISTINCT {key_sql} FROM {stage}) d");
            Some(tx.query_one(&sql, &[]).map_err(|e| pg_error("count the stream's keys", e))?.get::<_, i64>(0))
        }
    };
    run(tx, "RELEASE SAVEPOINT pgferry_stage_key")?;
    if let Some(distinct) = distinct.filter(|&d| d < source_rows) {
        let first = tx
            .query_one(
                &format!(
                    "SELECT min(_pgferry_line), max(_pgferry_line), ({key_sql})::text FROM {stage} \
                     GROUP BY {key_sql} HAVING count(*) > 1 ORDER BY 2 LIMIT 1"
                ),
                &[],
            )
            .map_err(|e| pg_error("find the repeated key", e))?;
        return Err(Error::Data(format!(
            "line {}: key ({}) = {} repeats line {} ({} rows of the stream repeat an earlier row's key)",
            first.get::<_, i64>(1),
            key.join(", "),
            first.get::<_, Option<String>>(2).unwrap_or_else(|| "NULL".into()),
            first.get::<_, i64>(0),
            source_rows - distinct
        )));
    }
    tx.batch_execute(&format!("ANALYZE {stage}")).map_err(|e| pg_error("analyze the staging table", e))
}

/// What a mirror merge did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mirrored {
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    pub unchanged: i64,
    /// Keys of the stream present in the table afterwards, and the table's rows.
    pub present: i64,
    pub rows_after: i64,
}

/// `--mode mirror`: makes the table equal to the staged stream by key. Rows whose key the
/// stream lacks are deleted (a foreign key from another table that forbids it is an error
/// naming the key), rows whose values differ are updated (only those: a column's value is
/// compared by its text form, so types without an equality operator, json, compare too; a
/// column the stream's row leaves out is left as it is), new keys are inserted.
pub fn merge_mirror(
    tx: &mut Transaction,
    qt: &str,
    stage: &str,
    plan: &Columns,
    segments: &[Signature],
    key: &[String],
    source_rows: i64,
) -> Result<Mirrored> {
    if key.is_empty() {
        return Err(Error::Usage("--mode mirror needs a primary key or --key".into()));
    }
    let key_list: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    let nulls = key_list.iter().map(|k| format!("{k} IS NULL")).collect::<Vec<_>>().join(" OR ");
    if let Some(r) = tx
        .query_opt(&format!("SELECT min(_pgferry_line) FROM {stage} WHERE {nulls} HAVING count(*) > 0"), &[])
        .map_err(|e| pg_error("look for rows without a key", e))?
    {
        return Err(Error::Data(format!(
            "line {}: the key ({}) is null: --mode mirror needs every row's key",
            r.get::<_, i64>(0),
            key.join(", ")
        )));
    }
    index_stage_key(tx, stage, key, source_rows)?;
    let join = key_list.iter().map(|k| format!("t.{k} = s.{k}")).collect::<Vec<_>>().join(" AND ");
    // Deleted first, so that an update or insert cannot collide with a row about to go.
    let deleted = tx
        .execute(&format!("DELETE FROM {qt} t WHERE NOT EXISTS (SELECT 1 FROM {stage} s WHERE {join})"), &[])
        .map_err(|e| mirror_delete_error(qt, e))? as i64;
    let mut m = Mirrored { deleted, ..Mirrored::default() };
    for (seg, sig) in segments.iter().enumerate() {
        let cols: Vec<String> =
            (0..plan.columns.len()).filter(|i| !sig.contains(i)).map(|i| quote_ident(&plan.columns[i].name)).collect();
        let values: Vec<&String> = cols.iter().filter(|c| !key_list.contains(c)).collect();
        if !values.is_empty() {
            let sets = values.iter().map(|c| format!("{c} = s.{c}")).collect::<Vec<_>>().join(", ");
            let differs = differs(&values, "t", "s");
            m.updated += tx
                .execute(
                    &format!(
                        "UPDATE {qt} t SET {sets} FROM {stage} s WHERE s._pgferry_seg = {seg} AND {join} AND ({differs})"
                    ),
                    &[],
                )
                .map_err(|e| merge_error(qt, e))? as i64;
        }
        let list = cols.join(", ");
        let select = cols.iter().map(|c| format!("s.{c}")).collect::<Vec<_>>().join(", ");
        m.inserted += tx
            .execute(
                &format!(
                    "INSERT INTO {qt} ({list}) SELECT {select} FROM {stage} s WHERE s._pgferry_seg = {seg} \
                     AND NOT EXISTS (SELECT 1 FROM {qt} t WHERE {join})"
                ),
                &[],
            )
            .map_err(|e| merge_error(qt, e))? as i64;
    }
    m.unchanged = source_rows - m.inserted - m.updated;
    let row = tx
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {stage} s WHERE EXISTS (SELECT 1 FROM {qt} t WHERE {join})), \
                 (SELECT count(*) FROM {qt})"
            ),
            &[],
        )
        .map_err(|e| pg_error("verify the mirrored keys", e))?;
    m.present = row.get(0);
    m.rows_after = row.get(1);
    Ok(m)
}

/// A row the stream no longer has is still referenced from another table.
fn mirror_delete_error(table: &str, e: postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) if db.code().code() == "23503" => Error::Data(format!(
            "--mode mirror: a row of {table} that the stream no longer has cannot be deleted: {} \
             (foreign key {} of {}); nothing outside the load is changed: delete or re-point the referencing \
             rows first, or keep the row in the source",
            db.detail().unwrap_or(db.message()),
            db.constraint().unwrap_or("?"),
            db.table().unwrap_or("another table")
        )),
        _ => merge_error(table, e),
    }
}
