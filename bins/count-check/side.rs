//! The two sides of a check: what they are (`sqlite:PATH:TABLE`, `pg:TABLE`, `ndjson:FILE`,
//! Firestore), their counts, their schema, and their records streamed in key order by a
//! reader thread (so memory stays bounded and both sides are read at the same time).

use crate::norm::{self, ColType, Norm};
use crate::pgbin;
use pgferry::catalog::{self, ColumnInfo};
use pgferry::convert::{Kind, Options};
use pgferry::pg::{self, pg_error, quote_ident, quote_literal, Table};
use pgferry::sqlite::{self as sq, TableInfo};
use pgferry::stream::{bytes_value, float_value, RowReader};
use pgferry::{Error, Result};
use rusqlite::types::ValueRef;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

/// One side as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    Sqlite {
        path: String,
        table: String,
    },
    Pg {
        table: String,
    },
    Ndjson {
        file: String,
    },
    /// A plan's `json:` source: the app's JSON files through the step's jq program.
    Json {
        pattern: String,
        program: String,
    },
    Firestore {
        scope: String,
        kind: FsKind,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FsKind {
    Collection,
    Group,
    Document,
}

impl Spec {
    pub fn parse(s: &str) -> Result<Spec> {
        let usage = || {
            Error::Usage(format!(
                "'{s}' is not a side: use sqlite:PATH:TABLE, pg:TABLE, ndjson:FILE, firestore:COLLECTION_PATH, firestore-group:ID or firestore-doc:PATH"
            ))
        };
        let (kind, rest) = s.split_once(':').ok_or_else(usage)?;
        if rest.is_empty() {
            return Err(usage());
        }
        Ok(match kind {
            "sqlite" => {
                let (path, table) = rest.rsplit_once(':').ok_or_else(|| {
                    Error::Usage(format!("'{s}': a SQLite side is sqlite:PATH:TABLE (the table after the last ':')"))
                })?;
                if path.is_empty() || table.is_empty() {
                    return Err(usage());
                }
                Spec::Sqlite { path: path.into(), table: table.into() }
            }
            "pg" | "postgres" | "postgresql" => Spec::Pg { table: rest.into() },
            "ndjson" => Spec::Ndjson { file: rest.into() },
            "json" => {
                return Err(Error::Usage(format!(
                    "'{s}': a json: source needs its jq program, so it is checked through its plan (--plan)"
                )))
            }
            "firestore" => Spec::Firestore { scope: rest.trim_matches('/').into(), kind: FsKind::Collection },
            "firestore-group" => Spec::Firestore { scope: rest.into(), kind: FsKind::Group },
            "firestore-doc" => Spec::Firestore { scope: rest.trim_matches('/').into(), kind: FsKind::Document },
            _ => return Err(usage()),
        })
    }

    /// "Postgres", "SQLite" ... for the count line.
    pub fn noun(&self) -> &'static str {
        match self {
            Spec::Sqlite { .. } => "SQLite",
            Spec::Pg { .. } => "Postgres",
            Spec::Ndjson { .. } => "NDJSON",
            Spec::Json { .. } => "JSON",
            Spec::Firestore { .. } => "Firestore",
        }
    }

    /// "rows" or "docs".
    pub fn unit(&self) -> &'static str {
        match self {
            Spec::Firestore { .. } => "docs",
            _ => "rows",
        }
    }
}

/// What every side needs to be read: connection, stream and conversion options.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub db: Option<String>,
    pub require_end: bool,
    pub opts: Options,
    pub fs: crate::fs::FsOptions,
}

/// A side's schema, when it has one.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Column names (generated columns included); `None` for streams and Firestore.
    pub columns: Option<Vec<String>>,
    /// PostgreSQL only: the columns as the catalog describes them.
    pub pg_columns: Option<Vec<ColumnInfo>>,
    /// The primary key, in key order; empty when none is known.
    pub key: Vec<String>,
    pub sqlite: Option<TableInfo>,
    pub pg_table: Option<Table>,
}

/// Idle connections kept for the next `connect` to the same target: a connection costs a
/// TLS setup and a SCRAM exchange, which is a good part of a small check's time.
static IDLE: std::sync::Mutex<Vec<(Option<String>, postgres::Client)>> = std::sync::Mutex::new(Vec::new());

pub fn connect(ctx: &Ctx) -> Result<postgres::Client> {
    {
        let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(i) = idle.iter().position(|(db, _)| *db == ctx.db) {
            let (_, c) = idle.swap_remove(i);
            if !c.is_closed() {
                return Ok(c);
            }
        }
    }
    pg::Target::resolve(ctx.db.as_deref())?.connect()
}

/// Keeps a connection with no transaction open for the next `connect` (the side's reader).
pub fn keep(ctx: &Ctx, c: postgres::Client) {
    if !c.is_closed() {
        IDLE.lock().unwrap_or_else(|e| e.into_inner()).push((ctx.db.clone(), c));
    }
}

/// Closes the connections kept and not taken.
pub fn close_idle() {
    let idle = std::mem::take(&mut *IDLE.lock().unwrap_or_else(|e| e.into_inner()));
    drop(idle);
}

fn pg_table(client: &mut postgres::Client, name: &str) -> Result<Table> {
    let t = Table::resolve(client, name)?;
    Ok(t)
}

/// Counts a side quickly: `count(*)`, a Firestore count aggregation, or a read of the stream.
pub fn count(spec: &Spec, ctx: &Ctx) -> Result<u64> {
    match spec {
        Spec::Sqlite { path, table } => {
            let conn = sq::open_read_only(path)?;
            sq::begin_snapshot(&conn)?;
            sq::table_info(&conn, table)?;
            sq::count_rows(&conn, table)
        }
        Spec::Pg { table } => {
            let mut c = connect(ctx)?;
            let t = pg_table(&mut c, table)?;
            let n: i64 = c
                .query_one(&format!("SELECT count(*) FROM {}", t.qualified()), &[])
                .map_err(|e| pg_error(format!("count rows of '{table}'"), e))?
                .get(0);
            Ok(n as u64)
        }
        Spec::Ndjson { file } => {
            let mut r = RowReader::new(open_stream(file)?, ctx.require_end);
            while r.next_row().map_err(|e| e.context(format!("ndjson '{file}'")))?.is_some() {}
            Ok(r.rows())
        }
        Spec::Json { pattern, program } => {
            let mut r = RowReader::new(json_stream(pattern, program)?, ctx.require_end);
            while r.next_row().map_err(|e| e.context(format!("json '{pattern}'")))?.is_some() {}
            Ok(r.rows())
        }
        Spec::Firestore { .. } => crate::fs::count(spec, ctx),
    }
}

/// The stream of a `json:` source: jq's stdout (src/jsonsrc.rs), read as it is written.
fn json_stream(pattern: &str, program: &str) -> Result<Box<dyn BufRead + Send>> {
    let argv = pgferry::jsonsrc::producer(pattern, program)?;
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Unavailable(format!("run jq for the json source '{pattern}': {e}")))?;
    let out = child.stdout.take().expect("piped");
    Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, Producer { child, out })))
}

/// A producer's stdout; the process is reaped (killed first if unread) when dropped.
struct Producer {
    child: std::process::Child,
    out: std::process::ChildStdout,
}

impl std::io::Read for Producer {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.out.read(buf)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_stream(file: &str) -> Result<Box<dyn BufRead + Send>> {
    if file == "-" {
        return Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, std::io::stdin())));
    }
    let f = std::fs::File::open(file).map_err(|e| Error::io(format!("open '{file}'"), e))?;
    Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, f)))
}

/// Reads a side's schema (nothing for streams and Firestore).
pub fn meta(spec: &Spec, ctx: &Ctx) -> Result<Meta> {
    match spec {
        Spec::Sqlite { path, table } => {
            let conn = sq::open_read_only(path)?;
            let info = sq::table_info(&conn, table)?;
            Ok(Meta {
                // Generated columns included: --full compares what each side computes.
                columns: Some(info.columns.iter().map(|c| c.name.clone()).collect()),
                key: info.primary_key().iter().map(|c| c.name.clone()).collect(),
                sqlite: Some(info),
                ..Meta::default()
            })
        }
        Spec::Pg { table } => {
            let mut c = connect(ctx)?;
            let t = pg_table(&mut c, table)?;
            let cols = catalog::table_columns(&mut c, t.oid, &t.qualified())?;
            let key = catalog::primary_key(&mut c, t.oid).map_err(|e| e.context(format!("table '{table}'")))?;
            keep(ctx, c);
            Ok(Meta {
                columns: Some(cols.iter().map(|c| c.name.clone()).collect()),
                pg_columns: Some(cols),
                key,
                pg_table: Some(t),
                ..Meta::default()
            })
        }
        Spec::Ndjson { .. } | Spec::Json { .. } => Ok(Meta::default()),
        Spec::Firestore { .. } => Ok(Meta { key: vec![ctx.fs.shape.id_field.clone()], ..Meta::default() }),
    }
}

// ---------------------------------------------------------------- records

/// Keys of more columns than this are refused.
pub const MAX_KEY: usize = 8;

/// One record: its fields, named as the destination names them, normalized, and where
/// its key's parts are among them.
#[derive(Debug, Clone)]
pub struct Rec {
    pub fields: Vec<(Arc<str>, Norm)>,
    key_at: [u16; MAX_KEY],
    key_len: u8,
}

impl Rec {
    /// The key's parts, in key order.
    pub fn key(&self) -> impl ExactSizeIterator<Item = &Norm> + Clone {
        self.key_at[..self.key_len as usize].iter().map(move |i| &self.fields[*i as usize].1)
    }
    pub fn key_vec(&self) -> Vec<Norm> {
        self.key().cloned().collect()
    }
}

/// The canonical order of two records' keys.
pub fn cmp_recs(a: &Rec, b: &Rec) -> std::cmp::Ordering {
    norm::cmp_key_iter(a.key(), b.key())
}

/// How one side is read for a comparison.
#[derive(Clone)]
pub struct Job {
    pub spec: Spec,
    pub ctx: Ctx,
    pub meta: Meta,
    /// Own field name → destination name (`--map`, source side only).
    pub rename: HashMap<String, String>,
    /// Own field names left out (`--ignore`).
    pub ignore: HashSet<String>,
    /// pg-load's `--copy-key SRC=DST` (source side only): own field SRC is also the
    /// destination's column DST, its value converted for DST's type.
    pub copies: Vec<(String, Arc<str>)>,
    /// The key, in destination names.
    pub key: Vec<String>,
    /// Column types by destination name (from the PostgreSQL side), empty without one.
    pub types: Arc<HashMap<String, ColType>>,
    /// Read only these keys (sample look-ups); `None` reads everything.
    pub only: Option<Arc<Vec<Vec<Norm>>>>,
    /// Sort the rows in a temporary file first (a stream or Firestore side found out of order).
    pub sort: bool,
    /// Set by the reader when a record came out of key order.
    pub unsorted: Arc<std::sync::atomic::AtomicBool>,
}

impl Job {
    pub fn dest_name(&self, own: &str) -> Option<String> {
        if self.ignore.contains(own) {
            return None;
        }
        Some(self.rename.get(own).cloned().unwrap_or_else(|| own.to_string()))
    }

    /// The destination columns that hold a copy of own field `own` (`--copy-key`).
    pub fn copies_of<'a>(&'a self, own: &'a str) -> impl Iterator<Item = &'a Arc<str>> + 'a {
        self.copies.iter().filter(move |(src, _)| src == own).map(|(_, dst)| dst)
    }

    fn own_name(&self, dest: &str) -> String {
        self.rename.iter().find(|(_, d)| d.as_str() == dest).map(|(o, _)| o.clone()).unwrap_or_else(|| dest.to_string())
    }

    /// Finds the key's parts among the fields: a record without its key, or with a null
    /// or unreadable key, cannot be paired (bad data).
    pub fn key_of(&self, fields: Vec<(Arc<str>, Norm)>, at: impl Fn() -> String) -> Result<Rec> {
        let mut key_at = [0u16; MAX_KEY];
        for (j, k) in self.key.iter().enumerate() {
            match fields.iter().position(|(n, _)| &**n == k.as_str()) {
                Some(i) => match &fields[i].1 {
                    Norm::Null => return Err(Error::Data(format!("{}: the key field '{k}' is null", at()))),
                    Norm::Bad(v, cause) => {
                        return Err(Error::Data(format!("{}: the key field '{k}' holds {v}, which {cause}", at())))
                    }
                    _ => key_at[j] = i as u16,
                },
                None => return Err(Error::Data(format!("{}: the record has no key field '{k}'", at()))),
            }
        }
        Ok(Rec { fields, key_at, key_len: self.key.len() as u8 })
    }

    pub fn wanted(&self, r: &Rec) -> bool {
        match &self.only {
            None => true,
            Some(keys) => keys.iter().any(|k| norm::cmp_key_iter(k.iter(), r.key()) == std::cmp::Ordering::Equal),
        }
    }
}

const BATCH: usize = 1024;

/// Records of one side, in key order, from its reader thread; checks the order as it goes.
pub struct Feed {
    rx: Receiver<Result<Vec<Rec>>>,
    /// Records done with go back to the reader thread to be freed there: memory freed in
    /// the thread that allocated it avoids contention on the allocator's arenas.
    back: Option<Sender<Vec<Rec>>>,
    trash: Vec<Rec>,
    batch: std::vec::IntoIter<Rec>,
    pub rows: u64,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Feed {
    /// Hands a record that is done with back for freeing.
    pub fn recycle(&mut self, r: Rec) {
        self.trash.push(r);
        if self.trash.len() >= BATCH {
            let t = std::mem::replace(&mut self.trash, Vec::with_capacity(BATCH));
            if let Some(back) = &self.back {
                let _ = back.send(t);
            }
        }
    }

    pub fn next(&mut self) -> Result<Option<Rec>> {
        loop {
            if let Some(r) = self.batch.next() {
                self.rows += 1;
                return Ok(Some(r));
            }
            match self.rx.recv() {
                Ok(Ok(b)) => self.batch = b.into_iter(),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    if let Some(h) = self.handle.take() {
                        let _ = h.join();
                    }
                    return Ok(None);
                }
            }
        }
    }
}

/// A feed over records already in memory (a sample, sorted by key).
pub fn feed_of(recs: Vec<Rec>, label: String) -> Feed {
    let (tx, rx) = sync_channel(1);
    let _ = tx.send(Ok(recs));
    let _ = label;
    Feed { rx, back: None, trash: Vec::new(), batch: Vec::new().into_iter(), rows: 0, handle: None }
}

pub fn key_text<'a>(key: impl Iterator<Item = &'a Norm>) -> String {
    let parts: Vec<String> = key.map(|k| norm::norm_json(k).to_string()).collect();
    parts.join(",")
}

/// Starts reading `job` in a thread.
pub fn spawn(job: Job, label: String) -> Feed {
    let (tx, rx) = sync_channel::<Result<Vec<Rec>>>(8);
    let (back, trash) = channel::<Vec<Rec>>();
    let handle = std::thread::spawn(move || {
        let unsorted = job.unsorted.clone();
        let mut out = Out { tx, batch: Vec::with_capacity(BATCH), trash, last: None, label, unsorted };
        let r = match &job.spec {
            Spec::Sqlite { .. } => read_sqlite(&job, &mut out),
            Spec::Pg { .. } => read_pg(&job, &mut out),
            Spec::Ndjson { .. } | Spec::Json { .. } => read_ndjson(&job, &mut out),
            Spec::Firestore { .. } => crate::fs::read(&job, &mut out),
        };
        if r.is_ok() {
            let _ = out.flush();
        }
    });
    Feed { rx, back: Some(back), trash: Vec::new(), batch: Vec::new().into_iter(), rows: 0, handle: Some(handle) }
}

/// The reader stopped: its error was sent, or the receiver went away.
pub struct Stop;

pub struct Out {
    tx: SyncSender<Result<Vec<Rec>>>,
    batch: Vec<Rec>,
    trash: Receiver<Vec<Rec>>,
    /// The key of the last record of the previous batch, for the order check.
    last: Option<Vec<Norm>>,
    label: String,
    unsorted: Arc<std::sync::atomic::AtomicBool>,
}

impl Out {
    /// Queues a record, checking that it comes after the one before (the merge needs the
    /// canonical key order; a duplicate key cannot be paired).
    pub fn push(&mut self, r: Rec) -> std::result::Result<(), Stop> {
        let order = match (self.batch.last(), &self.last) {
            (Some(p), _) => Some(cmp_recs(p, &r)),
            (None, Some(last)) => Some(norm::cmp_key_iter(last.iter(), r.key())),
            (None, None) => None,
        };
        if let Some(order) = order {
            let last = || match self.batch.last() {
                Some(p) => key_text(p.key()),
                None => key_text(self.last.iter().flatten()),
            };
            match order {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    let e = Error::Data(format!("{}: the key {} appears twice", self.label, key_text(r.key())));
                    return Err(self.fail(e));
                }
                std::cmp::Ordering::Greater => {
                    self.unsorted.store(true, std::sync::atomic::Ordering::SeqCst);
                    let e = Error::Data(format!(
                        "{}: records are not in key order ({} comes after {}); count-check reads both sides sorted by \
                         the key (numbers by value, text by bytes): sort the stream by its key, or check that the \
                         key's values have one type",
                        self.label,
                        key_text(r.key()),
                        last()
                    ));
                    return Err(self.fail(e));
                }
            }
        }
        self.batch.push(r);
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> std::result::Result<(), Stop> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.last = self.batch.last().map(Rec::key_vec);
        let b = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        while let Ok(done) = self.trash.try_recv() {
            drop(done);
        }
        self.tx.send(Ok(b)).map_err(|_| Stop)
    }
    pub fn fail(&mut self, e: Error) -> Stop {
        let _ = self.tx.send(Err(e));
        Stop
    }
}

/// Runs `f`, sending its error to the feed.
fn guard<T>(out: &mut Out, r: Result<T>) -> std::result::Result<T, Stop> {
    r.map_err(|e| out.fail(e))
}

// ---------------------------------------------------------------- SQLite

/// SQLite's type affinity of a declared type (the rules of its documentation, section 3.1).
fn affinity(decl: &str) -> &'static str {
    let d = decl.to_ascii_uppercase();
    if d.contains("INT") {
        "integer"
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        "text"
    } else if d.contains("BLOB") || d.is_empty() {
        "blob"
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        "real"
    } else {
        "numeric"
    }
}

/// The ORDER BY term that makes SQLite return this key column in the canonical order.
fn sqlite_order(col: &str, decl: &str, kind: Option<&Kind>) -> String {
    let q = sq::quote_ident(col);
    let aff = affinity(decl);
    let numeric_aff = matches!(aff, "integer" | "real" | "numeric");
    match kind {
        Some(Kind::Int2 | Kind::Int4 | Kind::Int8 | Kind::Float4 | Kind::Float8 | Kind::Numeric) => {
            if numeric_aff {
                q
            } else {
                format!("CAST({q} AS NUMERIC)")
            }
        }
        Some(Kind::Timestamp | Kind::Timestamptz | Kind::Date | Kind::Time | Kind::Bool) if numeric_aff => q,
        Some(Kind::Bytea) => q,
        Some(_) if aff == "text" || aff == "blob" => format!("{q} COLLATE BINARY"),
        Some(_) => format!("CAST({q} AS TEXT) COLLATE BINARY"),
        None => format!("{q} COLLATE BINARY"),
    }
}

fn read_sqlite(job: &Job, out: &mut Out) -> std::result::Result<(), Stop> {
    let Spec::Sqlite { path, table } = &job.spec else { unreachable!() };
    let conn = guard(out, sq::open_read_only(path))?;
    guard(out, sq::begin_snapshot(&conn))?;
    let info = job.meta.sqlite.as_ref().expect("meta read");
    let cols: Vec<&sq::Column> = info.columns.iter().collect();
    let names: Vec<Option<Arc<str>>> = cols.iter().map(|c| job.dest_name(&c.name).map(Arc::from)).collect();
    let cts: Vec<Option<ColType>> =
        names.iter().map(|n| n.as_ref().and_then(|n| job.types.get(&**n).cloned())).collect();
    // (column index, copy's name, the copy's column type)
    let copies: Vec<(usize, Arc<str>, Option<ColType>)> = cols
        .iter()
        .enumerate()
        .flat_map(|(i, c)| job.copies_of(&c.name).map(move |d| (i, d.clone(), job.types.get(&**d).cloned())))
        .collect();
    let mut order = Vec::new();
    for k in &job.key {
        let own = job.own_name(k);
        let Some(c) = cols.iter().find(|c| c.name == own) else {
            return Err(out.fail(Error::Usage(format!("table '{table}' has no key column '{own}'"))));
        };
        order.push(sqlite_order(&c.name, &c.decl_type, job.types.get(k).map(|t| &t.kind)));
    }
    let mut sql = format!(
        "SELECT {} FROM {}",
        cols.iter().map(|c| sq::quote_ident(&c.name)).collect::<Vec<_>>().join(", "),
        sq::quote_ident(table)
    );
    // Look-ups by literal only for integer and text keys, which SQLite's affinity matches
    // whatever the stored form; other keys (a uuid in another case, a timestamp in another
    // notation) are found by reading the table and comparing normalized keys.
    let literal_keys = job.only.as_ref().filter(|keys| {
        keys.iter()
            .flatten()
            .all(|v| matches!(v, Norm::Int(_) | Norm::Text(_) | Norm::Raw(Value::Number(_) | Value::String(_))))
    });
    if let Some(keys) = literal_keys {
        let conds: Vec<String> = keys
            .iter()
            .map(|k| {
                let parts: Vec<String> = job
                    .key
                    .iter()
                    .zip(k)
                    .map(|(name, v)| format!("{} = {}", sq::quote_ident(&job.own_name(name)), sqlite_literal(v)))
                    .collect();
                format!("({})", parts.join(" AND "))
            })
            .collect();
        sql.push_str(&format!(" WHERE {}", if conds.is_empty() { "false".into() } else { conds.join(" OR ") }));
    }
    if !order.is_empty() {
        sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    }
    let what = format!("read table '{table}'");
    let mut st = guard(out, conn.prepare(&sql).map_err(|e| sq::sqlite_error(&what, e)))?;
    let mut rows = guard(out, st.query([]).map_err(|e| sq::sqlite_error(&what, e)))?;
    let opts = &job.ctx.opts;
    loop {
        let row = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => return Err(out.fail(sq::sqlite_error(&what, e))),
        };
        let mut fields = Vec::with_capacity(cols.len());
        for (i, name) in names.iter().enumerate() {
            let Some(name) = name else { continue };
            let v = row.get_ref(i).expect("column index in range");
            fields.push((name.clone(), sqlite_norm(v, cts[i].as_ref(), opts)));
        }
        for (i, name, ct) in &copies {
            let v = row.get_ref(*i).expect("column index in range");
            fields.push((name.clone(), sqlite_norm(v, ct.as_ref(), opts)));
        }
        let rec = guard(out, job.key_of(fields, || format!("sqlite table '{table}'")))?;
        if job.only.is_some() && !job.wanted(&rec) {
            continue;
        }
        out.push(rec)?;
    }
    Ok(())
}

fn sqlite_literal(v: &Norm) -> String {
    match v {
        Norm::Int(i) => i.to_string(),
        Norm::Raw(Value::Number(n)) => n.to_string(),
        Norm::Text(s) | Norm::Raw(Value::String(s)) => sq_quote(s),
        other => sq_quote(&text_of(other)),
    }
}

fn sq_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A key value as text (for look-ups).
fn text_of(v: &Norm) -> String {
    match norm::norm_json(v) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// A SQLite value normalized for its column: the common cases directly, the rest through
/// the stream value sqlite-dump would write and pg-load's conversion.
fn sqlite_norm(v: ValueRef, ct: Option<&ColType>, opts: &Options) -> Norm {
    let opts = ct.and_then(|c| c.conv.as_ref()).unwrap_or(opts);
    match (v, ct.map(|c| &c.kind)) {
        (ValueRef::Null, _) => Norm::Null,
        (ValueRef::Integer(i), Some(Kind::Int8)) => Norm::Int(i),
        (ValueRef::Integer(i), Some(Kind::Int4)) if i32::try_from(i).is_ok() => Norm::Int(i),
        (ValueRef::Integer(i), Some(Kind::Int2)) if i16::try_from(i).is_ok() => Norm::Int(i),
        (ValueRef::Real(f), Some(Kind::Float8)) => Norm::Float(f),
        (ValueRef::Text(t), Some(Kind::Text)) if !ct.is_some_and(|c| c.bpchar) && !t.contains(&0) => {
            match std::str::from_utf8(t) {
                Ok(s) => Norm::Text(norm::json_text_canonical(s.to_string())),
                Err(_) => Norm::Bad(bytes_value(t), "text is not valid UTF-8".into()),
            }
        }
        (ValueRef::Text(t), Some(k @ (Kind::Timestamptz | Kind::Timestamp))) if std::str::from_utf8(t).is_ok() => {
            let s = std::str::from_utf8(t).expect("checked");
            match pgferry::convert::text_to_timestamp(s, opts, *k == Kind::Timestamptz) {
                Ok(m) => {
                    norm::from_cell(pgferry::convert::Cell::Timestamptz(m), ct.expect("a kind comes with its type"))
                }
                Err(e) => Norm::Bad(Value::String(s.to_string()), e),
            }
        }
        (ValueRef::Integer(i), None) => Norm::Raw(Value::from(i)),
        (ValueRef::Text(t), None) => match std::str::from_utf8(t) {
            Ok(s) => Norm::Raw(Value::String(s.to_string())),
            Err(_) => Norm::Raw(bytes_value(t)),
        },
        (v, None) => norm::from_value(sqlite_value(v), None, opts),
        (v, Some(kind)) => {
            let value = sqlite_value(v);
            match pgferry::convert::convert(&value, kind, opts) {
                Ok(c) => norm::from_cell(c, ct.expect("a kind comes with its type")),
                Err(e) => {
                    Norm::Bad(value, format!("{e} (column type {})", ct.map(|c| c.type_name.as_str()).unwrap_or("?")))
                }
            }
        }
    }
}

/// The stream value sqlite-dump writes for a SQLite value.
fn sqlite_value(v: ValueRef) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => float_value(f),
        ValueRef::Blob(b) => bytes_value(b),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => bytes_value(t),
        },
    }
}

// ---------------------------------------------------------------- PostgreSQL

/// The ORDER BY term that makes PostgreSQL return this key column in the canonical order.
fn pg_order(quoted: &str, kind: &Kind) -> String {
    match kind {
        Kind::Text => format!("{quoted} COLLATE \"C\""),
        Kind::Enum | Kind::Other(_) | Kind::Json | Kind::Jsonb | Kind::Array { .. } => {
            format!("{quoted}::text COLLATE \"C\"")
        }
        _ => quoted.to_string(),
    }
}

fn read_pg(job: &Job, out: &mut Out) -> std::result::Result<(), Stop> {
    let Spec::Pg { table } = &job.spec else { unreachable!() };
    let mut client = guard(out, connect(&job.ctx))?;
    let t = job.meta.pg_table.as_ref().expect("meta read");
    let cols = job.meta.pg_columns.as_ref().expect("meta read");
    let names: Vec<Option<Arc<str>>> = cols.iter().map(|c| job.dest_name(&c.name).map(Arc::from)).collect();
    let cts: Vec<ColType> = cols.iter().map(ColType::of).collect();
    let kinds: Vec<Kind> = cols.iter().map(|c| pgbin::decode_kind(&c.kind)).collect();
    let mut order = Vec::new();
    for k in &job.key {
        let own = job.own_name(k);
        let Some(c) = cols.iter().find(|c| c.name == own) else {
            return Err(out.fail(Error::Usage(format!("table '{table}' has no key column '{own}'"))));
        };
        order.push(pg_order(&quote_ident(&c.name), &c.kind));
    }
    let mut sql = format!(
        "SELECT {} FROM {}",
        cols.iter().map(|c| pgbin::select_expr(&quote_ident(&c.name), &c.kind)).collect::<Vec<_>>().join(", "),
        t.qualified()
    );
    if let Some(keys) = &job.only {
        let cols_sql: Vec<String> = job.key.iter().map(|k| quote_ident(&job.own_name(k))).collect();
        let tuples: Vec<String> = keys
            .iter()
            .map(|k| format!("({})", k.iter().map(|v| quote_literal(&text_of(v))).collect::<Vec<_>>().join(", ")))
            .collect();
        if tuples.is_empty() {
            sql.push_str(" WHERE false");
        } else {
            sql.push_str(&format!(" WHERE ({}) IN ({})", cols_sql.join(", "), tuples.join(", ")));
        }
    }
    if !order.is_empty() {
        sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    }
    let what = format!("read table '{table}'");
    // One snapshot for the whole read; COPY streams rows as the server produces them.
    guard(
        out,
        client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").map_err(|e| pg_error(&what, e)),
    )?;
    let reader = guard(
        out,
        client.copy_out(&format!("COPY ({sql}) TO STDOUT (FORMAT binary)")).map_err(|e| pg_error(&what, e)),
    )?;
    let mut r = pgbin::Reader::new(reader);
    let mut cells = Vec::with_capacity(cols.len());
    loop {
        match r.next(&kinds, &mut cells) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(out.fail(e.context(&what))),
        }
        let mut fields = Vec::with_capacity(cols.len());
        for (i, cell) in cells.drain(..).enumerate() {
            let Some(name) = &names[i] else { continue };
            fields.push((name.clone(), norm::from_cell(cell, &cts[i])));
            // A PostgreSQL source's copy: its value as read (not converted again).
            for dst in job.copies_of(&cols[i].name) {
                let v = fields.last().expect("just pushed").1.clone();
                fields.push((dst.clone(), v));
            }
        }
        let rec = guard(out, job.key_of(fields, || format!("table '{table}'")))?;
        out.push(rec)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- NDJSON

/// Stream rows (field name → stream value) into records, names interned once.
#[derive(Default)]
pub struct RowNorm {
    interned: HashMap<String, Option<Arc<str>>>,
}

impl RowNorm {
    pub fn rec(
        &mut self,
        job: &Job,
        row: impl IntoIterator<Item = (String, Value)>,
        at: impl Fn() -> String,
    ) -> Result<Rec> {
        let row = row.into_iter();
        let mut fields = Vec::with_capacity(row.size_hint().0);
        for (k, v) in row {
            for dst in job.copies_of(&k) {
                fields.push((dst.clone(), norm::from_value(v.clone(), job.types.get(&**dst), &job.ctx.opts)));
            }
            let name = match self.interned.get(&k) {
                Some(n) => n.clone(),
                None => {
                    let n = job.dest_name(&k).map(Arc::<str>::from);
                    self.interned.insert(k, n.clone());
                    n
                }
            };
            let Some(name) = name else { continue };
            let ct = job.types.get(&*name);
            fields.push((name, norm::from_value(v, ct, &job.ctx.opts)));
        }
        job.key_of(fields, at)
    }
}

/// Rows that were spooled for sorting, read back in key order into the feed.
pub fn drain_spool(job: &Job, out: &mut Out, spool: crate::spool::Spool, what: &str) -> std::result::Result<(), Stop> {
    let mut rn = RowNorm::default();
    let mut stopped = false;
    let r = spool.drain(|line| {
        let row: serde_json::Map<String, Value> =
            serde_json::from_str(&line).map_err(|e| Error::Io(format!("read the temporary sort file: {e}")))?;
        let rec = rn.rec(job, row, || what.to_string())?;
        if job.only.is_some() && !job.wanted(&rec) {
            return Ok(true);
        }
        if out.push(rec).is_err() {
            stopped = true;
            return Ok(false);
        }
        Ok(true)
    });
    match r {
        Ok(()) if stopped => Err(Stop),
        Ok(()) => Ok(()),
        Err(e) => Err(out.fail(e)),
    }
}

fn read_ndjson(job: &Job, out: &mut Out) -> std::result::Result<(), Stop> {
    let (input, file) = match &job.spec {
        Spec::Ndjson { file } => (guard(out, open_stream(file))?, file.clone()),
        Spec::Json { pattern, program } => (guard(out, json_stream(pattern, program))?, pattern.clone()),
        _ => unreachable!(),
    };
    let file = &file;
    let mut r = RowReader::new(input, job.ctx.require_end);
    let mut rn = RowNorm::default();
    let mut spool = if job.sort { Some(guard(out, crate::spool::Spool::new())?) } else { None };
    loop {
        let row = match r.next_row() {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => return Err(out.fail(e.context(format!("ndjson '{file}'")))),
        };
        let line = row.line;
        let text = spool.as_ref().map(|_| Value::Object(row.fields.clone()).to_string());
        let rec = guard(out, rn.rec(job, row.fields, || format!("ndjson '{file}', line {line}")))?;
        if let (Some(sp), Some(text)) = (spool.as_mut(), text) {
            guard(out, sp.add(rec.key(), &text))?;
            continue;
        }
        if job.only.is_some() && !job.wanted(&rec) {
            continue;
        }
        out.push(rec)?;
    }
    match spool {
        Some(sp) => drain_spool(job, out, sp, &format!("ndjson '{file}' (sorted)")),
        None => Ok(()),
    }
}
