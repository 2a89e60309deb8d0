//! What a load does around its rows: partitions the rows need, foreign keys
//! set aside for --defer-fks or a plan run, and sequences moved past the loaded ids.

use crate::rows::{Columns, Signature};
use pgferry::catalog;
use pgferry::pg::{pg_error, quote_ident, quote_literal, Table};
use pgferry::{Error, Result};
use postgres::Transaction;

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
    let report = ensure_range(tx, table, interval, min, max, lock_timeout)?;
    let names: Vec<&str> = report.created.iter().map(|c| c.name.as_str()).collect();
    Ok(created_note(&names, report.moved()))
}

/// Creates the missing partitions for the periods of `min`..=`max` (Unix microseconds), under
/// pg-partition's lock.
pub fn ensure_range(
    tx: &mut Transaction,
    table: &Table,
    interval: pgferry::partition::Interval,
    min: i64,
    max: i64,
    lock_timeout: u32,
) -> Result<pgferry::partition::EnsureReport> {
    use pgferry::partition;
    partition::lock(tx, table, std::time::Duration::from_secs(lock_timeout as u64))?;
    let opts = partition::EnsureOptions { interval, dry_run: false, limit: 1000 };
    partition::ensure(tx, table, interval.of_micros(min), interval.of_micros(max), &opts)
}

/// `created partitions a, b (n rows moved out of the default partition)`; `None` for none.
pub fn created_note(names: &[&str], moved: u64) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    Some(format!(
        "created partitions {}{}",
        names.join(", "),
        match moved {
            0 => String::new(),
            n => format!(" ({n} rows moved out of the default partition)"),
        }
    ))
}

/// Moves serial/identity sequences past the highest loaded id, never backwards. A sequence is
/// not transactional (a rollback does not undo setval), so a dry run only proves it could:
/// it reads the sequence and fails as setval would without UPDATE on it.
pub fn advance_sequences(
    tx: &mut Transaction,
    qt: &str,
    plan: &Columns,
    segments: &[Signature],
    dry_run: bool,
) -> Result<()> {
    for (i, c) in plan.columns.iter().enumerate() {
        let Some(seq) = &c.sequence else { continue };
        // Only columns the stream supplied: where the sequence itself filled them, it is right.
        if segments.iter().all(|sig| sig.contains(&i)) {
            continue;
        }
        if dry_run {
            let lit = quote_literal(seq);
            let sql = format!(
                "DO $pgferry$ BEGIN PERFORM last_value FROM {seq}; \
                 IF NOT has_sequence_privilege({lit}, 'UPDATE') THEN RAISE EXCEPTION USING \
                 ERRCODE = 'insufficient_privilege', MESSAGE = 'permission denied for sequence ' || {lit}; \
                 END IF; END $pgferry$"
            );
            tx.batch_execute(&sql).map_err(|e| pg_error(format!("advance sequence {seq}"), e))?;
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

/// A foreign key set aside for a load, with what it takes to put it back exactly (the
/// catalog's definition: columns, referenced table, actions, MATCH, deferrability).
pub struct ForeignKey {
    /// The table it belongs to (the child), quoted.
    pub table: String,
    pub table_display: String,
    pub key: catalog::ForeignKey,
}

/// Drops the table's foreign keys for the load: all of them (`all`, --defer-fks), else those
/// that reference one of `referencing` (a plan's parents loaded after this child). Clones on
/// partitions go with their parent key.
pub fn drop_foreign_keys(
    tx: &mut Transaction,
    table: &Table,
    all: bool,
    referencing: &[u32],
) -> Result<Vec<ForeignKey>> {
    let keys = catalog::declared_foreign_keys(tx, table.oid, (!all).then_some(referencing))?;
    let fks: Vec<ForeignKey> = keys
        .into_iter()
        .map(|key| ForeignKey { table: table.qualified(), table_display: table.display(), key })
        .collect();
    for fk in &fks {
        tx.batch_execute(&format!("ALTER TABLE {} DROP CONSTRAINT {}", fk.table, quote_ident(&fk.key.name)))
            .map_err(|e| pg_error(format!("drop foreign key {} for the load", fk.key.name), e))?;
    }
    Ok(fks)
}

/// --defer-fks of a single-table load: the keys come back NOT VALID (the parents may not be
/// loaded yet); returns the line that says how to validate them.
pub fn restore_foreign_keys(tx: &mut Transaction, fks: &[ForeignKey]) -> Result<String> {
    let mut later = vec![];
    for fk in fks {
        tx.batch_execute(&format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
            fk.table,
            quote_ident(&fk.key.name),
            fk.key.definition
        ))
        .map_err(|e| pg_error(format!("re-add foreign key {} NOT VALID", fk.key.name), e))?;
        later.push(format!("ALTER TABLE {} VALIDATE CONSTRAINT {};", fk.table, quote_ident(&fk.key.name)));
    }
    Ok(format!("foreign keys re-added NOT VALID; once the parents are loaded, run: {}", later.join(" ")))
}

/// Runs the checks of deferred constraints now rather than at COMMIT, so that a violation is
/// reported as bad data before anything is committed, and ALTER TABLE (putting keys back)
/// finds no pending trigger events.
pub fn check_deferred(tx: &mut Transaction) -> Result<()> {
    tx.batch_execute("SET CONSTRAINTS ALL IMMEDIATE").map_err(|e| match e.as_db_error() {
        Some(db) if db.code().code().starts_with("23") => {
            Error::Data(format!("{}: {}", db.message(), db.detail().unwrap_or("")))
        }
        _ => pg_error("check deferred constraints", e),
    })
}

/// A plan run, every table loaded: the keys come back as they were, validated (one scan per
/// key, inside the transaction), so the run commits with every foreign key VALID.
pub fn restore_foreign_keys_validated(tx: &mut Transaction, fks: &[ForeignKey]) -> Result<()> {
    for fk in fks {
        let sql = format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {}{}",
            fk.table,
            quote_ident(&fk.key.name),
            fk.key.definition,
            if fk.key.validated { "" } else { " NOT VALID" }
        );
        tx.batch_execute(&sql).map_err(|e| match e.as_db_error() {
            Some(db) if db.code().code() == "23503" => Error::Data(format!(
                "foreign key {} of '{}': {} (a row's parent is in no table of the plan)",
                fk.key.name,
                fk.table_display,
                db.detail().unwrap_or(db.message()).trim_end_matches('.')
            )),
            _ => pg_error(format!("validate foreign key {} of '{}'", fk.key.name, fk.table_display), e),
        })?;
    }
    Ok(())
}
