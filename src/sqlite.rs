//! Reading SQLite files without ever writing to them: open read-only, pin one snapshot,
//! describe tables.

use crate::error::{Error, Result};
use rusqlite::types::ValueRef;
use rusqlite::{ffi, Connection, OpenFlags};
use std::marker::PhantomData;
use std::os::raw::c_int;
use std::path::Path;
use std::ptr::NonNull;

/// Opens `path` read-only. A file that is missing is exit 66; one this user may not read, 77;
/// one that is not a database, 65.
pub fn open_read_only(path: &str) -> Result<Connection> {
    let p = Path::new(path);
    // SQLite says only "unable to open database file"; the file system says why.
    match std::fs::metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoInput(format!("open '{path}': no such file")))
        }
        Err(e) => return Err(Error::io(format!("open '{path}'"), e)),
        Ok(m) if m.is_dir() => {
            return Err(Error::Usage(format!("open '{path}': is a directory, not a SQLite file")));
        }
        // A FIFO would block the open for ever; a device is no database either.
        Ok(m) if !m.is_file() => {
            return Err(Error::Data(format!("open '{path}': is a FIFO, socket or device, not a SQLite file")));
        }
        Ok(_) => {}
    }
    std::fs::File::open(p).map_err(|e| Error::io(format!("open '{path}'"), e))?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let uri = format!("{}?mode=ro", file_uri(path));
    let conn = Connection::open_with_flags(&uri, flags).map_err(|e| open_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| open_error(path, e))?;
    match check_readable(&conn) {
        Ok(()) => Ok(conn),
        Err(e) if needs_recovery(&e) => Err(recovery_error(path, &e)),
        Err(e) if is_read_only_problem(&e) && !dir_writable(p) => {
            // A WAL database in a directory we may not write: SQLite cannot create the -shm
            // file. Reading it as immutable is safe only when no connection has it open (no
            // -shm) and no log holds changes the main file lacks: immutable ignores both.
            drop(conn);
            immutable_is_safe(path, e)?;
            let uri = format!("{}?mode=ro&immutable=1", file_uri(path));
            let conn = Connection::open_with_flags(&uri, flags).map_err(|e| open_error(path, e))?;
            check_readable(&conn).map_err(|e| open_error(path, e))?;
            Ok(conn)
        }
        Err(e) => Err(open_error(path, e)),
    }
}

/// How long a read waits for another connection's lock (a writer's commit) to go.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn check_readable(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
}

fn is_read_only_problem(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::CannotOpen) | Some(rusqlite::ErrorCode::ReadOnly))
}

/// SQLite must repair the file before anyone reads it (a hot journal to roll back, a WAL
/// index to rebuild), which a read-only connection may not do.
fn needs_recovery(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error().map(|f| f.extended_code),
        Some(ffi::SQLITE_READONLY_ROLLBACK | ffi::SQLITE_READONLY_RECOVERY | READONLY_CANTINIT)
    )
}

/// SQLITE_READONLY_CANTINIT (not in every binding): a read-only WAL index not yet set up.
const READONLY_CANTINIT: c_int = ffi::SQLITE_READONLY | (5 << 8);

fn recovery_error(path: &str, e: &rusqlite::Error) -> Error {
    let what = match e.sqlite_error().map(|f| f.extended_code) {
        Some(ffi::SQLITE_READONLY_ROLLBACK) => {
            format!("'{path}-journal' is a hot journal (a write was cut off) that must be rolled back")
        }
        _ => format!("its write-ahead log must be recovered into '{path}-shm'"),
    };
    Error::TempFail(format!(
        "open '{path}': {what} before the database can be read, and pgferry only reads: open it once \
         with the application (or 'sqlite3 {path} \"PRAGMA quick_check\"' as its owner), then run again"
    ))
}

/// Refuses the immutable fallback when it would read something else than the database holds.
fn immutable_is_safe(path: &str, cause: rusqlite::Error) -> Result<()> {
    let shm = format!("{path}-shm");
    if Path::new(&shm).exists() {
        // Another connection has the database open (or had, and crashed): its log may be
        // being written, so we must read through its index, which we cannot.
        return Err(match std::fs::File::open(&shm) {
            Err(e) => Error::io(format!("open '{path}': read its WAL index '{shm}'"), e),
            Ok(_) => open_error(path, cause),
        });
    }
    // A log longer than its 32-byte header holds commits the main file may lack.
    let wal = format!("{path}-wal");
    if let Ok(m) = std::fs::metadata(&wal) {
        if m.len() > 32 {
            return Err(Error::NoPermission(format!(
                "open '{path}': its write-ahead log '{wal}' holds {} bytes of changes that may not be in the \
                 database file yet, and SQLite needs to create '{shm}' to read them, in a directory this user \
                 may not write: run as a user who may (the application's), or let the application checkpoint \
                 it first (PRAGMA wal_checkpoint(TRUNCATE))",
                m.len()
            )));
        }
    }
    // A journal that starts with its magic is hot: the main file holds half a transaction.
    let journal = format!("{path}-journal");
    let mut magic = [0u8; 8];
    let hot = std::fs::File::open(&journal).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
        && magic == [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
    if hot {
        return Err(Error::TempFail(format!(
            "open '{path}': '{journal}' is a hot journal (a write was cut off) that must be rolled back before \
             the database can be read, which needs a user who may write its directory: open it once with the \
             application, then run again"
        )));
    }
    Ok(())
}

fn dir_writable(p: &Path) -> bool {
    let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let probe = dir.join(format!(".pgferry-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(_) => false,
    }
}

/// `path` as a `file:` URI. An absolute path gets an empty authority (`file:///srv/app.db`),
/// so that `//srv/app.db`, a valid path, is not read as the host `srv`.
fn file_uri(path: &str) -> String {
    match path.starts_with('/') {
        true => format!("file://{}", uri_escape(path)),
        false => format!("file:{}", uri_escape(path)),
    }
}

fn uri_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            _ => out.push(c),
        }
    }
    out
}

fn open_error(path: &str, e: rusqlite::Error) -> Error {
    sqlite_error(format!("open '{path}'"), e)
}

/// A rusqlite error in one line without Debug noise.
pub fn sqlite_cause(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode::*;
    match e {
        // The backup API reports a full disk with the other connection's message ("not an error").
        rusqlite::Error::SqliteFailure(f, _) if f.code == DiskFull => {
            "the disk is full (no space left to write; SQLite's SQLITE_FULL)".to_string()
        }
        rusqlite::Error::SqliteFailure(f, m) if matches!(f.code, DatabaseBusy | DatabaseLocked) => format!(
            "{}: another connection holds a lock on it (waited {} s; retry once it is released, or stop the \
             application's writers first)",
            m.as_deref().unwrap_or("database is locked"),
            BUSY_TIMEOUT.as_secs()
        ),
        rusqlite::Error::SqliteFailure(_, Some(m)) if missing_module(e) => {
            format!("{m} (a virtual table of a SQLite extension that pgferry does not include)")
        }
        // A failed write (EFBIG, EIO) through the backup API has that message too: the code is all there is.
        rusqlite::Error::SqliteFailure(f, Some(m)) if m == "not an error" => code_name(f.code).to_string(),
        // The code's name only where SQLite's message does not already say it.
        rusqlite::Error::SqliteFailure(f, Some(m)) if m == code_name(f.code) || f.code == Unknown => m.clone(),
        rusqlite::Error::SqliteFailure(f, Some(m)) => format!("{m} ({})", code_name(f.code)),
        rusqlite::Error::SqliteFailure(f, None) => code_name(f.code).to_string(),
        other => other.to_string(),
    }
}

fn code_name(c: rusqlite::ErrorCode) -> &'static str {
    use rusqlite::ErrorCode::*;
    match c {
        NotADatabase => "file is not a database",
        DatabaseCorrupt => "database disk image is malformed",
        DatabaseBusy => "database is busy",
        DatabaseLocked => "database is locked",
        ReadOnly => "read-only",
        DiskFull => "the disk is full",
        PermissionDenied => "permission denied",
        CannotOpen => "cannot open",
        SystemIoFailure => "disk I/O error",
        _ => "SQLite error",
    }
}

/// The table is a virtual table whose module (a SQLite extension) this build does not have.
fn missing_module(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(_, Some(m)) if m.starts_with("no such module"))
}

/// A SQLite error while doing `what`.
pub fn sqlite_error(what: impl std::fmt::Display, e: rusqlite::Error) -> Error {
    let msg = format!("{what}: {}", sqlite_cause(&e));
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt) | Some(rusqlite::ErrorCode::NotADatabase) => Error::Data(msg),
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => Error::TempFail(msg),
        Some(rusqlite::ErrorCode::PermissionDenied) => Error::NoPermission(msg),
        // A table we cannot read at all: data this build cannot take, not an I/O failure.
        _ if missing_module(&e) => Error::Data(msg),
        _ => Error::Io(msg),
    }
}

/// Starts one read transaction and pins its snapshot (the first read does that in WAL mode),
/// so everything read until the connection is dropped sees one consistent state.
pub fn begin_snapshot(conn: &Connection) -> Result<()> {
    conn.execute_batch("BEGIN DEFERRED").map_err(|e| sqlite_error("begin a read transaction", e))?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())).map_err(|e| sqlite_error("read the schema", e))
}

/// The user tables, in name order: ordinary and virtual tables, without SQLite's internal
/// `sqlite_*` tables and without the shadow tables where virtual tables keep their data
/// (an FTS5 table `docs` has `docs_data`, `docs_idx`, ...: its rows are read through `docs`).
pub fn list_tables(conn: &Connection) -> Result<Vec<String>> {
    names(
        conn,
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type IN ('table', 'virtual') \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )
}

/// The names of the tables in `sqlite_master` that meet `condition` (SQL over its columns),
/// in name order.
pub fn tables_where(conn: &Connection, condition: &str) -> Result<Vec<String>> {
    names(conn, &format!("SELECT name FROM sqlite_master WHERE type = 'table' AND ({condition}) ORDER BY name"))
}

/// The table names a query returns, in its order.
fn names(conn: &Connection, sql: &str) -> Result<Vec<String>> {
    let mut st = conn.prepare(sql).map_err(|e| sqlite_error("list tables", e))?;
    st.query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| sqlite_error("list tables", e))
}

/// Quotes an identifier for SQLite.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One column as `PRAGMA table_xinfo` describes it.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub decl_type: String,
    pub not_null: bool,
    pub default: Option<String>,
    /// 1-based position in the primary key, 0 if not part of it.
    pub pk: i32,
    /// Generated (virtual or stored) column: readable but never loaded.
    pub generated: bool,
}

/// A table's columns and shape.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    pub columns: Vec<Column>,
    pub has_rowid: bool,
    /// The primary key has an index of its own, so it is not the rowid (which an `INTEGER
    /// PRIMARY KEY` is, except when declared `DESC` on the column: SQLite's documented quirk).
    pub pk_index: bool,
}

impl TableInfo {
    /// Primary key columns in key order.
    pub fn primary_key(&self) -> Vec<&Column> {
        let mut pk: Vec<&Column> = self.columns.iter().filter(|c| c.pk > 0).collect();
        pk.sort_by_key(|c| c.pk);
        pk
    }

    /// The column that is an alias of the rowid (`INTEGER PRIMARY KEY`), if any.
    pub fn rowid_alias(&self) -> Option<&Column> {
        let pk = self.primary_key();
        if self.has_rowid && !self.pk_index && pk.len() == 1 && pk[0].decl_type.eq_ignore_ascii_case("INTEGER") {
            Some(pk[0])
        } else {
            None
        }
    }
}

/// Describes `table`, found as SQLite finds names (ASCII letters in any case: `users` is the
/// table `Users`); `TableInfo::name` is its name as stored. A missing table is exit 66.
pub fn table_info(conn: &Connection, table: &str) -> Result<TableInfo> {
    let found: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE \
             ORDER BY name = ?1 DESC LIMIT 1",
            [table],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| if matches!(e, rusqlite::Error::QueryReturnedNoRows) { Ok(None) } else { Err(e) })
        .map_err(|e| sqlite_error(format!("look up table '{table}'"), e))?;
    let Some(name) = found else {
        return Err(missing_table(conn, table));
    };
    let table = name.as_str();
    let mut st = conn
        .prepare(&format!("PRAGMA table_xinfo({})", quote_ident(table)))
        .map_err(|e| sqlite_error(format!("describe table '{table}'"), e))?;
    let columns = st
        .query_map([], |r| {
            let hidden: i64 = r.get(6)?;
            Ok((
                Column {
                    name: r.get(1)?,
                    decl_type: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    not_null: r.get::<_, i64>(3)? != 0,
                    default: r.get(4)?,
                    pk: r.get::<_, i64>(5)? as i32,
                    generated: hidden == 2 || hidden == 3,
                },
                hidden,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| sqlite_error(format!("describe table '{table}'"), e))?
        .into_iter()
        .filter(|(_, hidden)| *hidden != 1) // hidden columns of virtual tables
        .map(|(c, _)| c)
        .collect();
    // SQLite's own answer: the words in the CREATE statement could be a name or a default.
    let has_rowid = conn
        .query_row("SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1", [table], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| sqlite_error(format!("describe table '{table}'"), e))?
        == 0;
    let pk_index = conn
        .prepare(&format!("PRAGMA index_list({})", quote_ident(table)))
        .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(3))?.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| sqlite_error(format!("describe table '{table}'"), e))?
        .iter()
        .any(|origin| origin == "pk");
    Ok(TableInfo { name, columns, has_rowid, pk_index })
}

/// Exit 66 for a table that is not there, saying what is (a view of that name, the tables).
fn missing_table(conn: &Connection, table: &str) -> Error {
    let db = conn.path().filter(|p| !p.is_empty()).map(|p| format!(" in '{p}'")).unwrap_or_default();
    let kind: Option<String> = conn
        .query_row("SELECT type FROM sqlite_master WHERE name = ?1 COLLATE NOCASE LIMIT 1", [table], |r| r.get(0))
        .ok();
    if let Some(kind) = kind {
        return Error::NoInput(format!(
            "table '{table}' does not exist{db}: '{table}' is {} {kind}, not a table (dump the tables it reads)",
            if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
        ));
    }
    let have = list_tables(conn).unwrap_or_default();
    let shown: Vec<&str> = have.iter().take(12).map(String::as_str).collect();
    let more = if have.len() > shown.len() { format!(", … ({} in all)", have.len()) } else { String::new() };
    Error::NoInput(match have.is_empty() {
        true if conn.path().and_then(|p| std::fs::metadata(p).ok()).is_some_and(|m| m.len() == 0) => {
            format!("table '{table}' does not exist{db}: the file is empty (0 bytes; the wrong path?)")
        }
        true => format!("table '{table}' does not exist{db}: the database has no tables"),
        false => format!("table '{table}' does not exist{db} (it has: {}{more})", shown.join(", ")),
    })
}

/// `count(*)` of a table.
pub fn count_rows(conn: &Connection, table: &str) -> Result<u64> {
    count_listed(conn, table)?.map_err(|why| Error::Data(format!("count rows of '{table}': {why}")))
}

/// `count(*)` of a table for a listing: `Ok(Err(why))` when the table is a virtual table of an
/// extension this build does not include (a property of that table, which the listing shows;
/// the other tables are still listed), any other failure an error.
pub fn count_listed(conn: &Connection, table: &str) -> Result<std::result::Result<u64, String>> {
    match conn.query_row(&format!("SELECT count(*) FROM {}", quote_ident(table)), [], |r| r.get::<_, i64>(0)) {
        Ok(n) => Ok(Ok(n as u64)),
        Err(e) if missing_module(&e) => Ok(Err(sqlite_cause(&e))),
        Err(e) => Err(sqlite_error(format!("count rows of '{table}'"), e)),
    }
}

/// A query read through SQLite's C interface: per value one call into the statement
/// (`sqlite3_column_value`) and the value's own accessors, where rusqlite makes three or four
/// calls into the statement (bounds, type, pointer, length), each taking and releasing the
/// connection's mutex. That was a quarter of sqlite-dump's time per row.
pub struct Scan<'c> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    db: *mut ffi::sqlite3,
    columns: usize,
    /// Past the last row (stepping again would start the query over).
    done: bool,
    _conn: PhantomData<&'c Connection>,
}

impl<'c> Scan<'c> {
    /// Prepares `sql`, failing as rusqlite's `prepare` does (with the error's offset in `sql`).
    pub fn prepare(conn: &'c Connection, sql: &str) -> rusqlite::Result<Scan<'c>> {
        let len = c_int::try_from(sql.len())
            .map_err(|_| rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_TOOBIG), None))?;
        let mut stmt = std::ptr::null_mut();
        let mut tail: *const std::os::raw::c_char = std::ptr::null();
        // SAFETY: the handle stays valid while `conn` is borrowed, which 'c holds; `sql` is
        // read up to `len` bytes (no terminator needed); `tail` points into `sql`.
        let (db, rc) = unsafe {
            let db = conn.handle();
            (db, ffi::sqlite3_prepare_v2(db, sql.as_ptr().cast(), len, &mut stmt, &mut tail))
        };
        if rc != ffi::SQLITE_OK {
            // SAFETY: `db` is the live connection that just failed.
            return Err(unsafe { last_error(db, rc, Some(sql)) });
        }
        // SQLite compiles the first statement only: more after it would be silently ignored.
        let used = if tail.is_null() { sql.len() } else { (tail as usize).saturating_sub(sql.as_ptr() as usize) };
        if !sql.get(used..).unwrap_or("").trim_matches(|c: char| c.is_whitespace() || c == ';').is_empty() {
            if let Some(s) = NonNull::new(stmt) {
                // SAFETY: `s` was just prepared and is not used again.
                unsafe { ffi::sqlite3_finalize(s.as_ptr()) };
            }
            return Err(rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_ERROR),
                Some(format!("more than one SQL statement in: {sql}")),
            ));
        }
        let Some(stmt) = NonNull::new(stmt) else {
            return Err(rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_MISUSE),
                Some("the query is empty".into()),
            ));
        };
        // SAFETY: `stmt` was just prepared.
        let columns = unsafe { ffi::sqlite3_column_count(stmt.as_ptr()) } as usize;
        Ok(Scan { stmt, db, columns, done: false, _conn: PhantomData })
    }

    /// Moves to the next row; `false` after the last one.
    pub fn step(&mut self) -> rusqlite::Result<bool> {
        if self.done {
            return Ok(false);
        }
        // SAFETY: `stmt` is prepared and not finalized; no value of the last row outlives this
        // (they borrow `self`).
        match unsafe { ffi::sqlite3_step(self.stmt.as_ptr()) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => {
                self.done = true;
                Ok(false)
            }
            // SAFETY: `db` is the connection `stmt` belongs to.
            rc => Err(unsafe { last_error(self.db, rc, None) }),
        }
    }

    /// Column `i` of the current row (call after `step` returned `true`), as stored.
    pub fn get(&self, i: usize) -> rusqlite::Result<ValueRef<'_>> {
        assert!(i < self.columns, "column {i} of a query of {} columns", self.columns);
        assert!(!self.done, "no row after the last");
        let out_of_memory = || rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_NOMEM), None);
        // SAFETY: `i` is in range and the statement is on a row. The value is read at once and
        // the text or blob borrowed until the next `step` (which needs `&mut self`); reading it
        // through the value's accessors is what the interface allows for a connection used by
        // one thread. Pointer first, then length, as SQLite's documentation asks.
        unsafe {
            let v = ffi::sqlite3_column_value(self.stmt.as_ptr(), i as c_int);
            Ok(match ffi::sqlite3_value_type(v) {
                ffi::SQLITE_INTEGER => ValueRef::Integer(ffi::sqlite3_value_int64(v)),
                ffi::SQLITE_FLOAT => ValueRef::Real(ffi::sqlite3_value_double(v)),
                ffi::SQLITE_TEXT => {
                    let p = ffi::sqlite3_value_text(v);
                    if p.is_null() {
                        return Err(out_of_memory());
                    }
                    ValueRef::Text(std::slice::from_raw_parts(p, ffi::sqlite3_value_bytes(v) as usize))
                }
                ffi::SQLITE_BLOB => {
                    let p = ffi::sqlite3_value_blob(v);
                    let n = ffi::sqlite3_value_bytes(v) as usize;
                    match (p.is_null(), n) {
                        (_, 0) => ValueRef::Blob(&[]),
                        (true, _) => return Err(out_of_memory()),
                        (false, n) => ValueRef::Blob(std::slice::from_raw_parts(p.cast(), n)),
                    }
                }
                _ => ValueRef::Null,
            })
        }
    }
}

impl Drop for Scan<'_> {
    fn drop(&mut self) {
        // SAFETY: finalized once, here; nothing borrows the statement any more.
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
    }
}

/// The connection's last error as rusqlite reports it (a syntax error with its offset in `sql`).
///
/// # Safety
/// `db` must be a live connection.
unsafe fn last_error(db: *mut ffi::sqlite3, rc: c_int, sql: Option<&str>) -> rusqlite::Error {
    let msg = std::ffi::CStr::from_ptr(ffi::sqlite3_errmsg(db)).to_string_lossy().into_owned();
    let error = ffi::Error::new(rc);
    if let Some(sql) = sql {
        let offset = ffi::sqlite3_error_offset(db);
        if error.code == rusqlite::ErrorCode::Unknown && offset >= 0 {
            return rusqlite::Error::SqlInputError { error, msg, sql: sql.to_owned(), offset };
        }
    }
    rusqlite::Error::SqliteFailure(error, Some(msg))
}

#[cfg(test)]
mod tests {
    use super::Scan;
    use rusqlite::types::ValueRef;

    #[test]
    fn scan_reads_every_storage_class_and_fails_as_rusqlite_does() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE t (v); INSERT INTO t VALUES (NULL), (-7), (2.5), (CAST(x'c3a90078' AS TEXT)), (x''), (x'00ff');",
        )
        .unwrap();
        let mut scan = Scan::prepare(&c, "SELECT v, typeof(v) FROM t ORDER BY rowid").unwrap();
        let mut got = vec![];
        while scan.step().unwrap() {
            got.push(format!("{:?}", scan.get(0).unwrap()));
            assert!(matches!(scan.get(1).unwrap(), ValueRef::Text(_)));
        }
        assert_eq!(got, ["Null", "Integer(-7)", "Real(2.5)", "Text([195, 169, 0, 120])", "Blob([])", "Blob([0, 255])"]);
        assert!(!scan.step().unwrap(), "stays at the end");
        // The errors rusqlite's prepare gives: a syntax error with its offset; a runtime error.
        let sql = "SELECT v FROM t WHERE nonsense = ORDER BY v";
        let e = Scan::prepare(&c, sql).err().unwrap();
        assert_eq!(e.to_string(), c.prepare(sql).err().unwrap().to_string());
        assert!(matches!(e, rusqlite::Error::SqlInputError { offset: 33, .. }), "{e:?}");
        assert!(Scan::prepare(&c, "-- nothing").is_err());
        let mut scan = Scan::prepare(&c, "SELECT abs(-9223372036854775808)").unwrap();
        assert_eq!(scan.step().unwrap_err().to_string(), "integer overflow");
    }

    #[test]
    fn a_full_disk_says_what_happened() {
        // What the backup API returns on SQLITE_FULL: the code, and another connection's message.
        let e = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(13), Some("not an error".into()));
        let err = super::sqlite_error("snapshot 'app.db'", e);
        assert_eq!(err.exit_code(), 74);
        assert_eq!(err.message(), "snapshot 'app.db': the disk is full (no space left to write; SQLite's SQLITE_FULL)");
    }
}
