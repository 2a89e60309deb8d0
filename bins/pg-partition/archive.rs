//! `retain --archive`: a partition's rows as a gzipped pgferry stream, with a manifest,
//! written, fsynced, re-read and verified before the caller may drop the partition.
//!
//! Values are read per column type (never through `to_jsonb` of the row, which is not exact
//! for bytea, timestamps and floats) and written as docs/stream.md says, so that
//! `gunzip -c FILE | pg-load TABLE` puts the same rows back:
//! - smallint/integer/bigint/oid: exact integers; real/double: floats (non-finite tagged);
//! - numeric: a JSON number with the column's exact digits (NaN, ±Infinity tagged `$float`);
//! - timestamptz and timestamp: RFC 3339 UTC strings with microseconds, read in binary
//!   (timestamp without time zone is written as if it were UTC); ±infinity as "infinity";
//! - date: "YYYY-MM-DD"; bytea: the bytes form; boolean: true/false;
//! - json/jsonb: the nested JSON value when it is an object or array, else a string holding
//!   its JSON text (`"null"`, `"42"`, `"\"hi\""`), as pg-load reads json columns; arrays: JSON arrays as PostgreSQL's to_jsonb gives
//!   them (their elements are numbers, strings, booleans, nested arrays);
//! - everything else (text, uuid, inet, interval, enums...): PostgreSQL's text form.
//!
//! Generated columns are left out: PostgreSQL computes them again on reload.

use pgferry::catalog::ColumnInfo;
use pgferry::convert::Kind as ColKind;
use pgferry::files::{self, HashingReader, HashingWriter};
use pgferry::partition::{Partition, Partitioned};
use pgferry::pg::{pg_error, quote_ident};
use pgferry::progress::{Progress, Unit};
use pgferry::stream::{RowReader, RowWriter};
use pgferry::{timefmt, Error, Result};
use postgres::types::{FromSql, Type};
use postgres::Transaction;
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

/// An archive written and verified.
pub struct Archived {
    pub file: PathBuf,
    pub rows: u64,
    pub sha256: String,
}

/// The file name stem of a partition's archive: its name (`schema.name` outside public),
/// with `/` replaced.
pub fn file_stem(p: &Partition) -> String {
    let s = if p.schema == "public" { p.name.clone() } else { format!("{}.{}", p.schema, p.name) };
    s.replace(['/', '\0'], "_")
}

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Float,
    Bool,
    Numeric,
    Bytea,
    Time,
    Text,
    Json,
    Array,
}

/// The select expression and the reading of one column.
fn column_plan(c: &ColumnInfo) -> (String, Kind) {
    let q = quote_ident(&c.name);
    match &c.kind {
        ColKind::Int2 | ColKind::Int4 | ColKind::Int8 => (format!("{q}::int8"), Kind::Int),
        // The catalog has no kind of its own for `oid`: a 32-bit unsigned integer.
        ColKind::Other(name) if name == "oid" => (format!("{q}::int8"), Kind::Int),
        ColKind::Float4 | ColKind::Float8 => (format!("{q}::float8"), Kind::Float),
        ColKind::Bool => (format!("{q}::bool"), Kind::Bool),
        ColKind::Numeric => (format!("{q}::text"), Kind::Numeric),
        ColKind::Bytea => (format!("{q}::bytea"), Kind::Bytea),
        ColKind::Timestamptz => (format!("{q}::timestamptz"), Kind::Time),
        ColKind::Timestamp => (format!("{q}::timestamp"), Kind::Time),
        ColKind::Json | ColKind::Jsonb => (format!("{q}::text"), Kind::Json),
        ColKind::Array { .. } => (format!("to_jsonb({q})::text"), Kind::Array),
        _ => (format!("{q}::text"), Kind::Text),
    }
}

/// A timestamp in PostgreSQL's binary form: microseconds since 2000-01-01 (UTC for
/// timestamptz), with i64::MAX/MIN for ±infinity.
struct PgMicros(i64);

impl<'a> FromSql<'a> for PgMicros {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let b: [u8; 8] = raw.try_into().map_err(|_| "a timestamp is 8 bytes")?;
        Ok(PgMicros(i64::from_be_bytes(b)))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ || *ty == Type::TIMESTAMP
    }
}

/// A name in `dir` not yet used by an archive: `stem`, else `stem.1`, `stem.2`...
fn free_stem(dir: &Path, stem: &str) -> String {
    (0..)
        .map(|i| if i == 0 { stem.to_string() } else { format!("{stem}.{i}") })
        .find(|s| !dir.join(format!("{s}.ndjson.gz")).exists() && !dir.join(format!("{s}.manifest.json")).exists())
        .expect("some suffix is free")
}

fn create_private(path: &Path) -> Result<File> {
    let _ = std::fs::remove_file(path); // a leftover of a killed run
    files::create_private(path).map_err(|e| Error::io(format!("create '{}'", path.display()), e))
}

fn write_failed(path: &Path, e: Error) -> Error {
    match e {
        Error::Io(m) => Error::Io(format!(
            "write archive '{}': {}; nothing was dropped",
            path.display(),
            m.trim_start_matches("write to stdout: ")
        )),
        other => other.append("; nothing was dropped"),
    }
}

/// Writes `p`'s rows to DIR, verifies the file, and puts it in place with its manifest.
/// The caller holds a SHARE lock on `p`, so its rows cannot change meanwhile.
pub fn write(tx: &mut Transaction, info: &Partitioned, p: &Partition, dir: &Path) -> Result<Archived> {
    let stem = free_stem(dir, &file_stem(p));
    let final_path = dir.join(format!("{stem}.ndjson.gz"));
    let tmp_path = dir.join(format!(".{stem}.ndjson.gz.partial"));
    let result = write_verified(tx, info, p, &tmp_path, &final_path);
    let (rows, file_sha, bytes) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e);
        }
    };
    let file_name = format!("{stem}.ndjson.gz");
    let shown = |v: i64| info.key_type.show(v);
    let manifest = json!({
        "file": file_name,
        "sha256": file_sha,
        "bytes": bytes,
        "rows": rows,
        "table": format!("{}.{}", info.table.schema, info.table.name),
        "partition": format!("{}.{}", p.schema, p.name),
        "key": info.key,
        "from": shown(p.from),
        "to": shown(p.to),
        "bound": p.bound_sql,
        "columns": info.columns.iter().filter(|c| !c.generated)
            .map(|c| json!({"name": c.name, "type": c.type_name})).collect::<Vec<_>>(),
        "archived_at": timefmt::format_rfc3339_micros(timefmt::now_micros()),
        "format": "pgferry stream version 1 (docs/stream.md), gzip",
        "reload": format!("gunzip -c {} | pg-load {}", file_name, part_sql_name(info)),
    });
    std::fs::rename(&tmp_path, &final_path)
        .map_err(|e| Error::io(format!("rename to '{}'", final_path.display()), e))?;
    // Each write fsyncs the directory, the archive's rename above included.
    files::write_atomic(dir, &format!("{stem}.manifest.json"), format!("{:#}\n", manifest).as_bytes())?;
    files::write_atomic(dir, &format!("{stem}.ndjson.gz.sha256"), format!("{file_sha}  {file_name}\n").as_bytes())?;
    Ok(Archived { file: final_path, rows, sha256: file_sha })
}

fn part_sql_name(info: &Partitioned) -> String {
    pgferry::cli::shell_word(&pgferry::partition::sql_name(&info.table))
}

/// Writes, fsyncs and verifies; returns (rows, sha256 of the file, its size).
fn write_verified(
    tx: &mut Transaction,
    info: &Partitioned,
    p: &Partition,
    tmp: &Path,
    final_path: &Path,
) -> Result<(u64, String, u64)> {
    let cols: Vec<&ColumnInfo> = info.columns.iter().filter(|c| !c.generated).collect();
    let plans: Vec<(String, Kind)> = cols.iter().map(|c| column_plan(c)).collect();
    let sql = format!(
        "SELECT {} FROM {}",
        plans.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>().join(", "),
        p.qualified()
    );
    let what = format!("read partition '{}'", p.name);
    let file = create_private(tmp)?;
    let gz = flate2::write::GzEncoder::new(HashingWriter::new(file), flate2::Compression::default());
    let mut w = RowWriter::to(HashingWriter::new(gz), format!("the archive '{}'", final_path.display()));
    let portal = tx.bind(sql.as_str(), &[]).map_err(|e| pg_error(&what, e))?;
    let draw = pgferry::progress::terminal();
    let mut progress = Progress::new(crate::TOOL, format!("archive {}", p.name), Unit::Count("rows"), None, draw);
    loop {
        progress.update(w.rows());
        let rows = tx.query_portal(&portal, 2000).map_err(|e| pg_error(&what, e))?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            w.begin_row();
            for (i, (c, (_, kind))) in cols.iter().zip(&plans).enumerate() {
                w.key(&c.name);
                let bad = |e: postgres::Error| Error::Data(format!("{what}, column '{}': {e}", c.name));
                match kind {
                    Kind::Int => opt(&mut w, row.try_get::<_, Option<i64>>(i).map_err(bad)?, |w, v| w.int(v)),
                    Kind::Float => opt(&mut w, row.try_get::<_, Option<f64>>(i).map_err(bad)?, |w, v| w.float(v)),
                    Kind::Bool => opt(&mut w, row.try_get::<_, Option<bool>>(i).map_err(bad)?, |w, v| w.bool(v)),
                    Kind::Bytea => opt(&mut w, row.try_get::<_, Option<Vec<u8>>>(i).map_err(bad)?, |w, v| w.bytes(&v)),
                    Kind::Text => opt(&mut w, row.try_get::<_, Option<String>>(i).map_err(bad)?, |w, v| w.str(&v)),
                    Kind::Time => opt(&mut w, row.try_get::<_, Option<PgMicros>>(i).map_err(bad)?, |w, v| match v.0 {
                        i64::MAX => w.str("infinity"),
                        i64::MIN => w.str("-infinity"),
                        m => w.str(&timefmt::format_rfc3339_micros(m + timefmt::PG_EPOCH_MICROS)),
                    }),
                    Kind::Numeric => {
                        let v: Option<String> = row.try_get(i).map_err(bad)?;
                        match v.as_deref() {
                            None => w.null(),
                            Some("NaN") => w.float(f64::NAN),
                            Some("Infinity") => w.float(f64::INFINITY),
                            Some("-Infinity") => w.float(f64::NEG_INFINITY),
                            Some(n) => {
                                let num: serde_json::Number = n
                                    .parse()
                                    .map_err(|_| Error::Data(format!("{what}, column '{}': numeric {n:?}", c.name)))?;
                                w.value(&Value::Number(num));
                            }
                        }
                    }
                    Kind::Json | Kind::Array => {
                        let v: Option<String> = row.try_get(i).map_err(bad)?;
                        match v {
                            None => w.null(),
                            Some(t) => {
                                let j: Value = serde_json::from_str(&t)
                                    .map_err(|e| Error::Data(format!("{what}, column '{}': {e}", c.name)))?;
                                match j {
                                    Value::Object(_) | Value::Array(_) => w.value(&j),
                                    // A json scalar goes as a string holding its JSON text, as
                                    // pg-load reads json columns: the JSON null stays distinct
                                    // from SQL NULL, and "42" from 42.
                                    scalar => w.str(&scalar.to_string()),
                                }
                            }
                        }
                    }
                }
            }
            w.end_row().map_err(|e| write_failed(final_path, e))?;
        }
    }
    let rows = w.rows();
    let end = [
        ("source", Value::from("postgres")),
        ("table", Value::from(format!("{}.{}", info.table.schema, info.table.name))),
        ("partition", Value::from(format!("{}.{}", p.schema, p.name))),
    ];
    let content = w.finish(&end).map_err(|e| write_failed(final_path, e))?;
    let content_sha = content.sha.finish();
    let file = content.inner.finish().map_err(|e| Error::io(format!("write archive '{}'", tmp.display()), e))?;
    let file_sha = file.sha.finish();
    let bytes = file.bytes;
    file.inner.sync_all().map_err(|e| Error::io(format!("sync archive '{}'", tmp.display()), e))?;
    drop(file.inner);

    // The partition's own count, under the caller's SHARE lock.
    let counted: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {}", p.qualified()), &[])
        .map_err(|e| pg_error(format!("count the rows of '{}'", p.name), e))?
        .get(0);
    let fail = |why: String| {
        Error::CheckFailed(format!("archive of '{}' does not verify: {why}; nothing was dropped", p.name))
    };
    if counted as u64 != rows {
        return Err(fail(format!("wrote {rows} rows but the partition has {counted}")));
    }
    verify(tmp, rows, &file_sha, bytes, &content_sha).map_err(fail)?;
    Ok((rows, file_sha, bytes))
}

/// A value or null.
fn opt<W: Write, T>(w: &mut RowWriter<W>, v: Option<T>, f: impl FnOnce(&mut RowWriter<W>, T)) {
    match v {
        Some(v) => f(w, v),
        None => w.null(),
    }
}

/// Re-reads the file from disk: its sha256 and size, and the stream inside it (strictly,
/// end record included), its row count and its content hash.
fn verify(path: &Path, rows: u64, file_sha: &str, bytes: u64, content_sha: &str) -> std::result::Result<(), String> {
    let open = || File::open(path).map_err(|e| format!("reopen '{}': {e}", path.display()));
    let mut raw = HashingReader::new(open()?);
    std::io::copy(&mut raw, &mut std::io::sink()).map_err(|e| format!("read '{}': {e}", path.display()))?;
    if raw.bytes != bytes || raw.sha.finish() != file_sha {
        return Err("the file on disk differs from what was written (sha256)".into());
    }
    let mut content = HashingReader::new(flate2::read::GzDecoder::new(BufReader::new(open()?)));
    let mut reader = RowReader::new(BufReader::new(&mut content), true);
    loop {
        match reader.next_row() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return Err(format!("re-reading it: {}", e.message())),
        }
    }
    if reader.rows() != rows {
        return Err(format!("it reads back as {} rows, not {rows}", reader.rows()));
    }
    drop(reader);
    std::io::copy(&mut content, &mut std::io::sink()).map_err(|e| format!("read '{}': {e}", path.display()))?;
    if content.sha.finish() != content_sha {
        return Err("its decompressed content differs from what was written (sha256)".into());
    }
    Ok(())
}
