//! sqlite-dump: SQLite tables to NDJSON, from one consistent snapshot, read-only.

use pgferry::cli::{self, Status};
use pgferry::progress::{self, Progress, Unit};
use pgferry::sqlite::{self as sq, TableInfo};
use pgferry::stream::RowWriter;
use pgferry::{Error, Result};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde_json::{json, Value};
use std::io::Write;

#[path = "sqlite-dump/ddl.rs"]
mod ddl;

const USAGE: &str = "\
sqlite-dump: write SQLite tables as NDJSON, from one consistent snapshot, read-only.

Reads inside one read transaction, so a database that the application is still
writing (WAL mode) is dumped as it was at one instant. Never writes to the file.
In rollback-journal mode the application's writers wait for the dump instead (its
read lock), and the dump waits up to 10 s for a writer's commit to finish.
Values are written as stored, per value (SQLite's dynamic typing): integers
exactly, BLOBs in the bytes form, non-finite floats tagged (see docs/stream.md).

Usage:
  sqlite-dump [options] DB TABLE
  sqlite-dump --list DB
  sqlite-dump --all --out-dir DIR DB
  sqlite-dump --ddl DB [TABLE...]

Options:
  --columns A,B         Dump only these columns, in this order.
  --include-generated   Also dump generated columns (GENERATED ALWAYS AS ...),
                        which are left out by default as .dump does.
  --where EXPR          SQL condition on the rows (SQLite syntax).
  --order-by EXPR       Row order [default: the primary key, else rowid].
  --invalid-text MODE   Text that is not valid UTF-8: 'error' names table, rowid
                        and column and stops; 'bytes' writes it in the bytes
                        form instead [default: error].
  --list                Print each table with its row count, one NDJSON line each; a
                        virtual table of an extension pgferry does not include is
                        listed with \"rows\": null and its \"error\" (and a warning).
  --all                 Dump every table into DIR/TABLE.ndjson (needs --out-dir; '/',
                        '\\' and '%' in a name are written %2F, %5C, %25).
  --out-dir DIR         Directory for --all; files appear complete or not at all.
  --ddl                 Print PostgreSQL CREATE TABLE statements for the tables
                        (all of them when none are named); see docs/ddl.md.
  -q, --quiet           No progress line and no informational notes on stderr
                        (errors, warnings and the data on stdout stay).
  -h, --help            Show this help.
  -V, --version         Show the version.

Input:
  DB is a SQLite file; it is opened read-only (a read-only file or directory works,
  unless its write-ahead log holds changes or a hot journal needs rolling back: those
  need a user who may write the directory, and are refused rather than read past).
  TABLE and --columns are found as SQLite finds names (users is the table Users).
  --list and --all leave out views and the shadow tables of virtual tables (an FTS5
  table's docs_data ...: its rows are dumped through the virtual table itself).

Output:
  stdout: one JSON object per row, keys in column order, then the end record
  {\"$end\":{\"rows\":N,\"source\":\"sqlite\",\"table\":...}}. With --list and --all,
  one line per table. stderr: errors, and a summary line per table; when stderr
  is a terminal and stdout a file (not a pipe: in `sqlite-dump ... | pg-load ...`
  pg-load shows progress), a progress line with the table's row count (counted
  first, unless --where) and an ETA, cleared at the end.

Exit status:
  0 done; 64 usage error; 65 bad data (invalid UTF-8 text, corrupt file, a virtual
  table of an extension not included); 66 the database or table does not exist;
  74 I/O error; 75 locked by another connection for over 10 s, or a hot journal to
  roll back first; 77 permission denied (the file, or a log it needs).

Examples:
  sqlite-dump app.sqlite melody_drafts | pg-load melody_drafts
  sqlite-dump --where \"received_at >= '2025-01-01'\" app.sqlite device_logs > logs.ndjson
";

const TOOL: &str = "sqlite-dump";

struct Args {
    db: String,
    tables: Vec<String>,
    columns: Vec<String>,
    where_clause: Option<String>,
    order_by: Option<String>,
    invalid_text_as_bytes: bool,
    list: bool,
    all: bool,
    out_dir: Option<String>,
    ddl: bool,
    include_generated: bool,
}

fn parse(args: &mut pico_args::Arguments) -> Result<Args> {
    let invalid = cli::opt(args, "--invalid-text")?.unwrap_or_else(|| "error".into());
    let invalid_text_as_bytes = match invalid.as_str() {
        "error" => false,
        "bytes" => true,
        other => return Err(Error::Usage(format!("--invalid-text must be 'error' or 'bytes', not '{other}'"))),
    };
    let mut a = Args {
        columns: cli::list(args, "--columns")?,
        where_clause: cli::opt(args, "--where")?,
        order_by: cli::opt(args, "--order-by")?,
        invalid_text_as_bytes,
        list: args.contains("--list"),
        all: args.contains("--all"),
        out_dir: cli::opt(args, "--out-dir")?,
        ddl: args.contains("--ddl"),
        include_generated: args.contains("--include-generated"),
        db: String::new(),
        tables: vec![],
    };
    a.db = cli::positional(args, "DB")?;
    while let Some(t) = args.opt_free_from_str::<String>().map_err(cli::usage_err)? {
        a.tables.push(t);
    }
    let modes = [a.list, a.all, a.ddl].iter().filter(|m| **m).count();
    if modes > 1 {
        return Err(Error::Usage("--list, --all and --ddl are different modes; give one".into()));
    }
    if a.all && a.out_dir.is_none() {
        return Err(Error::Usage("--all needs --out-dir DIR".into()));
    }
    if (a.list || a.all) && !a.tables.is_empty() {
        return Err(Error::Usage("--list and --all take no TABLE".into()));
    }
    if modes == 0 && a.tables.len() != 1 {
        return Err(Error::Usage(if a.tables.is_empty() {
            "missing argument TABLE".into()
        } else {
            "give one TABLE (or --all)".into()
        }));
    }
    Ok(a)
}

fn run(a: Args) -> Result<Status> {
    let conn = sq::open_read_only(&a.db)?;
    sq::begin_snapshot(&conn)?;
    if a.ddl {
        let tables = if a.tables.is_empty() { sq::list_tables(&conn)? } else { a.tables.clone() };
        let infos = tables.iter().map(|t| sq::table_info(&conn, t)).collect::<Result<Vec<_>>>()?;
        let sql = ddl::postgres_ddl(&conn, &infos)?;
        let mut out = std::io::stdout().lock();
        out.write_all(sql.as_bytes()).map_err(|e| Error::io("write to stdout", e))?;
        return Ok(Status::Ok);
    }
    if a.list {
        let mut out = std::io::stdout().lock();
        for t in sq::list_tables(&conn)? {
            let line = match sq::count_listed(&conn, &t)? {
                Ok(n) => json!({"table": t, "rows": n}),
                Err(why) => {
                    pgferry::warn!(TOOL, "{t}: cannot be read, so not counted: {why}");
                    json!({"table": t, "rows": null, "error": why})
                }
            };
            writeln!(out, "{line}").map_err(|e| Error::io("write to stdout", e))?;
        }
        return Ok(Status::Ok);
    }
    if a.all {
        return dump_all(&conn, &a);
    }
    let info = sq::table_info(&conn, &a.tables[0])?;
    pgferry::stream::widen_stdout_pipe();
    let rows = dump_table(&conn, &info, &a, RowWriter::new(std::io::stdout().lock()), &a.db)?;
    pgferry::note!(TOOL, "{}: {} rows", info.name, rows);
    Ok(Status::Ok)
}

/// Every table into DIR/TABLE.ndjson, written to a temporary name and renamed when complete.
fn dump_all(conn: &Connection, a: &Args) -> Result<Status> {
    let dir = std::path::Path::new(a.out_dir.as_deref().expect("checked in parse"));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create '{}'", dir.display()), e))?;
    let mut stdout = std::io::stdout().lock();
    for t in sq::list_tables(conn)? {
        let info = sq::table_info(conn, &t)?;
        let file_name = format!("{}.ndjson", file_stem(&t));
        let final_path = dir.join(&file_name);
        let tmp_path = dir.join(format!(".{file_name}.partial"));
        let file =
            std::fs::File::create(&tmp_path).map_err(|e| Error::io(format!("create '{}'", tmp_path.display()), e))?;
        let rows = match dump_table(conn, &info, a, RowWriter::to(file, format!("'{}'", final_path.display())), &a.db) {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp_path);
                return Err(e);
            }
        };
        std::fs::rename(&tmp_path, &final_path)
            .map_err(|e| Error::io(format!("rename to '{}'", final_path.display()), e))?;
        writeln!(stdout, "{}", json!({"table": t, "rows": rows, "file": final_path.display().to_string()}))
            .map_err(|e| Error::io("write to stdout", e))?;
    }
    Ok(Status::Ok)
}

/// A table's name as a file name: `/`, `\\` and `%` percent-encoded, so that two tables
/// never share a file (`a/b` and `a_b` are `a%2Fb.ndjson` and `a_b.ndjson`).
fn file_stem(table: &str) -> String {
    let mut s = String::with_capacity(table.len());
    for c in table.chars() {
        match c {
            '/' | '\\' | '%' | '\0' => s.push_str(&format!("%{:02X}", c as u32)),
            c => s.push(c),
        }
    }
    s
}

/// Writes one table's rows and the end record; returns the row count.
fn dump_table<W: Write>(conn: &Connection, info: &TableInfo, a: &Args, mut w: RowWriter<W>, db: &str) -> Result<u64> {
    let table = &info.name;
    let columns: Vec<String> = if a.columns.is_empty() {
        // Generated columns are derived data, left out as SQLite's own .dump does.
        info.columns.iter().filter(|c| a.include_generated || !c.generated).map(|c| c.name.clone()).collect()
    } else {
        // As SQLite finds them: an exact name first, else one that differs in ASCII case.
        let find = |c: &String| {
            info.columns
                .iter()
                .find(|k| &k.name == c)
                .or_else(|| info.columns.iter().find(|k| k.name.eq_ignore_ascii_case(c)))
        };
        let mut named = Vec::with_capacity(a.columns.len());
        for c in &a.columns {
            let Some(k) = find(c) else {
                let have: Vec<&str> = info.columns.iter().map(|c| c.name.as_str()).collect();
                return Err(Error::Usage(format!("table '{table}' has no column '{c}' (it has: {})", have.join(", "))));
            };
            // A key twice in a row breaks the stream (docs/stream.md 2.3).
            if named.contains(&k.name) {
                return Err(Error::Usage(format!("--columns names column '{}' twice", k.name)));
            }
            named.push(k.name.clone());
        }
        named
    };
    // A row whose only key is `$end` or `$table` would read as a record, not a row.
    if let [only] = columns.as_slice() {
        if [pgferry::stream::END_KEY, pgferry::stream::TABLE_KEY].contains(&only.as_str()) {
            let why =
                format!("a row whose only key is '{only}' is a record of the stream, not a row (docs/stream.md 2.5)");
            return Err(if a.columns.is_empty() {
                Error::Data(format!(
                    "table '{table}': its only column is '{only}', and {why}: rename the column in a copy of the database"
                ))
            } else {
                Error::Usage(format!("--columns {only}: {why}; dump another column with it"))
            });
        }
    }
    // The row's identity for error messages: rowid when there is one, else the key. A rowid
    // alias among the columns is the rowid: no column of its own (a few percent of the time).
    let alias = info.rowid_alias().and_then(|k| columns.iter().position(|c| *c == k.name));
    let (ident, first) = match alias {
        Some(k) => (k, 0),
        None => (0, 1),
    };
    let mut sql = format!(
        "SELECT {}{} FROM {}",
        match (alias, info.has_rowid) {
            (Some(_), _) => String::new(),
            (None, true) => "rowid, ".to_string(),
            (None, false) => format!("{}, ", key_expr(info)),
        },
        columns.iter().map(|c| sq::quote_ident(c)).collect::<Vec<_>>().join(", "),
        sq::quote_ident(table)
    );
    // The user's SQL in parentheses and on lines of its own: a `--` comment in it cannot
    // swallow the ORDER BY, and a `;` cannot end the statement early.
    if let Some(w) = &a.where_clause {
        sql.push_str(&format!(" WHERE (\n{w}\n)"));
    }
    let order = match &a.order_by {
        Some(o) => o.clone(),
        None => {
            let pk = info.primary_key();
            if !pk.is_empty() {
                pk.iter().map(|c| sq::quote_ident(&c.name)).collect::<Vec<_>>().join(", ")
            } else if info.has_rowid {
                "rowid".into()
            } else {
                String::new()
            }
        }
    };
    if !order.is_empty() {
        sql.push_str(&format!(" ORDER BY {order}\n"));
    }
    let mut scan = sq::Scan::prepare(conn, &sql).map_err(|e| query_error(table, a, e))?;
    let keys: Vec<_> = columns.iter().map(|c| pgferry::stream::encode_key(c)).collect();
    // With --all the rows go to files; otherwise stdout must be a file for the line to show.
    let draw = if a.all { progress::terminal() } else { progress::terminal_for_producer() };
    // The total for the ETA: SQLite counts a table's rows from its smallest b-tree, a fraction
    // of the dump's own reading, and only when the line is drawn (not under --where).
    let total = match draw && a.where_clause.is_none() {
        true => Some(sq::count_rows(conn, table)?),
        false => None,
    };
    let mut progress = Progress::new(TOOL, table.as_str(), Unit::Count("rows"), total, draw);
    let read_error = |e| sq::sqlite_error(format!("read table '{table}'"), e);
    loop {
        match scan.step() {
            Ok(true) => {}
            Ok(false) => break,
            // Where it stopped (a corrupt page): the rows before it were read.
            Err(e) => return Err(sq::sqlite_error(format!("read table '{table}' after {} rows", w.rows()), e)),
        }
        w.begin_row();
        for (i, col) in columns.iter().enumerate() {
            w.encoded_key(&keys[i]);
            match scan.get(first + i).map_err(read_error)? {
                ValueRef::Null => w.null(),
                ValueRef::Integer(n) => w.int(n),
                ValueRef::Real(f) => w.float(f),
                ValueRef::Blob(b) => w.bytes(b),
                ValueRef::Text(t) => match w.text(t) {
                    Ok(()) => {}
                    Err(_) if a.invalid_text_as_bytes => w.bytes(t),
                    Err(e) => {
                        let ident = match scan.get(ident).map_err(read_error)? {
                            ValueRef::Integer(n) => format!("rowid {n}"),
                            ValueRef::Text(k) => format!("key {}", String::from_utf8_lossy(k)),
                            ValueRef::Real(f) => format!("key {f}"),
                            _ => "a row whose key is a BLOB or NULL".to_string(),
                        };
                        return Err(Error::Data(format!(
                            "table '{table}', {ident}, column '{col}': text is not valid UTF-8 (byte 0x{:02x} at offset {}); \
                             pass --invalid-text bytes to dump it in the bytes form",
                            t[e.valid_up_to()],
                            e.valid_up_to()
                        )));
                    }
                },
            }
        }
        w.end_row()?;
        progress.update(w.rows());
    }
    let n = w.rows();
    let file = std::path::Path::new(db).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    w.finish(&[
        ("source", Value::from("sqlite")),
        ("database", Value::from(file)),
        ("table", Value::from(table.as_str())),
    ])?;
    Ok(n)
}

fn key_expr(info: &TableInfo) -> String {
    let pk = info.primary_key();
    let parts: Vec<String> = pk.iter().map(|c| format!("quote({})", sq::quote_ident(&c.name))).collect();
    parts.join(" || ',' || ")
}

fn query_error(table: &str, a: &Args, e: rusqlite::Error) -> Error {
    let e = sq::sqlite_error(format!("query table '{table}'"), e);
    // A bad --where or --order-by is the user's SQL: a usage error, not an I/O one.
    if a.where_clause.is_some() || a.order_by.is_some() {
        Error::Usage(e.message().to_string())
    } else {
        e
    }
}

fn main() {
    cli::main(TOOL, USAGE, parse, run)
}
