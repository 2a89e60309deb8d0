//! `create`: a consistent snapshot of a live database through SQLite's online backup API
//! (WAL content included), compressed and checksummed in one pass while a second thread checks
//! the snapshot's integrity and hashes its content; then the manifest, then rotation.

use crate::files::{self, show, TempPath};
use crate::manifest;
use pgferry::digest::{self, Sha256Hex};
use pgferry::files::HashingWriter;
use pgferry::progress::{Progress, Unit};
use pgferry::sqlite::{self as sq, sqlite_error};
use pgferry::timefmt;
use pgferry::{Error, Result};
use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub struct Options {
    pub db: String,
    pub out: PathBuf,
    pub name: Option<String>,
    pub level: u32,
}

pub struct Created {
    pub manifest: PathBuf,
    pub data: PathBuf,
    pub summary: Map<String, Value>,
    pub integrity_ok: bool,
}

/// What the checking thread learns from the snapshot.
struct Inspection {
    integrity: Vec<String>,
    fk_violations: u64,
    fk_first: Vec<Value>,
    digest: Option<digest::ContentDigest>,
    digest_error: Option<String>,
    page_size: i64,
    page_count: i64,
    user_version: i64,
    journal_mode: &'static str,
}

/// What the compressing thread produced.
struct Compressed {
    raw_sha: String,
    raw_bytes: u64,
    gz_sha: String,
    gz_bytes: u64,
}

pub fn create(o: &Options) -> Result<Created> {
    let src = sq::open_read_only(&o.db)?;
    let source_path = std::fs::canonicalize(&o.db).map(|p| show(&p)).unwrap_or_else(|_| o.db.clone());
    files::make_private_dir(&o.out)?;
    let stem = match &o.name {
        Some(n) => n.clone(),
        None => files::default_stem(Path::new(&o.db), "db"),
    };
    let now = timefmt::now_micros();
    let (base, data_path, data_file) = reserve_name(&o.out, &stem, now)?;
    let data_guard = TempPath::new(data_path.clone());

    // 1. The snapshot: one backup step copies every page under one read transaction, so the
    //    copy is the database as of one instant, WAL frames included; writers go on meanwhile.
    let snap_path = o.out.join(format!(".{base}.snapshot"));
    let snap_file = pgferry::files::create_private(&snap_path)
        .map_err(|e| Error::io(format!("create '{}'", show(&snap_path)), e))?;
    drop(snap_file);
    let snap_guard = TempPath::new(snap_path.clone());
    snapshot(&src, &snap_path, &o.db)?;
    files::check_interrupt("create")?;
    let sqlite_version: String = src
        .query_row("SELECT sqlite_version()", [], |r| r.get(0))
        .map_err(|e| sqlite_error("read sqlite_version()", e))?;
    drop(src);

    // 2. Compress + checksum (this thread) while another thread checks the snapshot.
    let (compressed, inspection) = std::thread::scope(|s| {
        let inspector = s.spawn(|| inspect(&snap_path));
        let c = compress(&snap_path, data_file, &data_path, o.level);
        let i = inspector.join().unwrap_or_else(|_| Err(Error::Io("the checking thread panicked".into())));
        (c, i)
    });
    files::check_interrupt("create")?;
    let compressed = compressed?;
    let inspection = inspection?;
    drop(snap_guard);
    pgferry::files::fsync_dir(&o.out)?;

    let integrity_ok = inspection.integrity == ["ok"] && inspection.digest.is_some();
    let journal_mode = inspection.journal_mode;
    let tables: Vec<Value> = match &inspection.digest {
        Some(d) => d.tables.iter().map(|(t, n)| json!({"name": t, "rows": n})).collect(),
        None => vec![],
    };
    let total_rows: u64 = inspection.digest.as_ref().map(|d| d.tables.iter().map(|t| t.1).sum()).unwrap_or(0);
    let mut m = Map::new();
    m.insert("format".into(), manifest::FORMAT.into());
    m.insert("file".into(), format!("{base}{}", manifest::DATA_SUFFIX).into());
    m.insert("created_at".into(), timefmt::format_rfc3339_micros(now).into());
    m.insert("source".into(), json!({"path": source_path}));
    m.insert("tool".into(), format!("backup-verify {}", env!("CARGO_PKG_VERSION")).into());
    m.insert("sqlite_version".into(), sqlite_version.into());
    m.insert(
        "compressed".into(),
        json!({"format": "gzip", "level": o.level, "bytes": compressed.gz_bytes, "sha256": compressed.gz_sha}),
    );
    m.insert(
        "database".into(),
        json!({
            "bytes": compressed.raw_bytes,
            "sha256": compressed.raw_sha,
            "page_size": inspection.page_size,
            "page_count": inspection.page_count,
            "journal_mode": journal_mode,
            "user_version": inspection.user_version,
        }),
    );
    m.insert(
        "content_sha256".into(),
        match &inspection.digest {
            Some(d) => Value::from(d.sha256.clone()),
            None => Value::Null,
        },
    );
    if let Some(e) = &inspection.digest_error {
        m.insert("content_error".into(), e.clone().into());
    }
    m.insert("integrity_check".into(), json!(inspection.integrity));
    m.insert("foreign_key_check".into(), json!({"violations": inspection.fk_violations, "first": inspection.fk_first}));
    m.insert("tables".into(), Value::Array(tables.clone()));
    let manifest_path = manifest::write(&o.out, &base, m)?;
    let data_path = data_guard.keep();

    let mut summary = Map::new();
    summary.insert("backup".into(), show(&data_path).into());
    summary.insert("manifest".into(), show(&manifest_path).into());
    summary.insert("created_at".into(), timefmt::format_rfc3339_micros(now).into());
    summary.insert("bytes".into(), compressed.raw_bytes.into());
    summary.insert("compressed_bytes".into(), compressed.gz_bytes.into());
    summary.insert("tables".into(), tables.len().into());
    summary.insert("rows".into(), total_rows.into());
    summary.insert("integrity".into(), json!(if integrity_ok { "ok" } else { "FAILED" }));
    summary.insert("foreign_key_violations".into(), inspection.fk_violations.into());
    if !integrity_ok {
        let mut problems = inspection.integrity.clone();
        problems.extend(inspection.digest_error.clone());
        summary.insert("problems".into(), json!(problems.into_iter().take(10).collect::<Vec<_>>()));
    }
    Ok(Created { manifest: manifest_path, data: data_path, summary, integrity_ok })
}

/// Picks `STEM-YYYYMMDDTHHMMSSZ` (then `-2`, `-3`… if taken) and creates its data file
/// exclusively, so two backups never share a name, even within one second.
fn reserve_name(dir: &Path, stem: &str, now: i64) -> Result<(String, PathBuf, File)> {
    let ts: String = timefmt::format_rfc3339_micros(now / 1_000_000 * 1_000_000)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let stem: String = stem.chars().map(|c| if c == '/' || c == '\0' { '_' } else { c }).collect();
    for n in 1..1000 {
        let base = if n == 1 { format!("{stem}-{ts}") } else { format!("{stem}-{ts}-{n}") };
        let data = dir.join(format!("{base}{}", manifest::DATA_SUFFIX));
        if dir.join(format!("{base}{}", manifest::MANIFEST_SUFFIX)).exists() {
            continue;
        }
        match pgferry::files::create_private(&data) {
            Ok(f) => return Ok((base, data, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("create '{}'", show(&data)), e)),
        }
    }
    Err(Error::Io(format!("create a backup in '{}': 999 backups named '{stem}-{ts}' already exist", show(dir))))
}

/// Copies every page of `src` into the file at `dest` in one backup step.
fn snapshot(src: &rusqlite::Connection, dest: &Path, db: &str) -> Result<()> {
    let what = format!("snapshot '{db}'");
    let mut dst = rusqlite::Connection::open(dest).map_err(|e| sqlite_error(&what, e))?;
    // The snapshot is a scratch file: no rollback journal, no fsync.
    dst.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;").map_err(|e| sqlite_error(&what, e))?;
    let started = std::time::Instant::now();
    {
        let b = rusqlite::backup::Backup::new(src, &mut dst).map_err(|e| sqlite_error(&what, e))?;
        // A failed write is the snapshot's, in --out (the source is only read).
        let write_err = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::SystemIoFailure) | Some(rusqlite::ErrorCode::DiskFull) => {
                sqlite_error(format!("{what}: write '{}'", show(dest)), e).append(" (is the disk full?)")
            }
            _ => sqlite_error(&what, e),
        };
        loop {
            match b.step(-1).map_err(write_err)? {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => continue,
                // Busy or locked: a writer holds what we need for a moment (rollback journal mode).
                _ if started.elapsed() < std::time::Duration::from_secs(30) => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                _ => return Err(Error::TempFail(format!("{what}: the database stayed locked for 30 s; try again"))),
            }
        }
    }
    drop(dst);
    Ok(())
}

/// Size of the pieces compressed side by side (pigz's idea): each becomes one gzip member;
/// members concatenated are one valid gzip file (RFC 1952), which `gunzip` reads as well.
const BLOCK: usize = 4 << 20;

/// Reads the snapshot once: sha256 of its bytes, gzip into `out` (two blocks at a time, one
/// on a helper thread), sha256 of the gzip bytes.
fn compress(snap: &Path, out: File, out_path: &Path, level: u32) -> Result<Compressed> {
    let what_r = |e| Error::io(format!("read '{}'", show(snap)), e);
    let what_w = |e| Error::io(format!("write '{}'", show(out_path)), e);
    let mut input = File::open(snap).map_err(what_r)?;
    let mut sink = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, out));
    let mut raw = Sha256Hex::new();
    let mut raw_bytes = 0u64;
    let (mut a, mut b) = (Vec::with_capacity(BLOCK), Vec::with_capacity(BLOCK));
    let mut members = 0u64;
    let total = input.metadata().ok().map(|m| m.len());
    let mut progress = Progress::new(crate::TOOL, "compress", Unit::Bytes, total, pgferry::progress::terminal());
    loop {
        progress.update(raw_bytes);
        files::check_interrupt("create")?;
        fill(&mut input, &mut a).map_err(what_r)?;
        fill(&mut input, &mut b).map_err(what_r)?;
        if a.is_empty() && members > 0 {
            break;
        }
        raw.update(&a);
        raw.update(&b);
        raw_bytes += (a.len() + b.len()) as u64;
        let (ma, mb) = std::thread::scope(|s| {
            let hb = (!b.is_empty()).then(|| s.spawn(|| gz_member(&b, level)));
            let ma = gz_member(&a, level);
            let mb = hb.map(|h| h.join().expect("compression thread")).transpose();
            (ma, mb)
        });
        sink.write_all(&ma.map_err(what_w)?).map_err(what_w)?;
        members += 1;
        if let Some(mb) = mb.map_err(what_w)? {
            sink.write_all(&mb).map_err(what_w)?;
            members += 1;
        }
        if b.len() < BLOCK {
            break;
        }
    }
    sink.flush().map_err(what_w)?;
    let HashingWriter { inner, sha, bytes } = sink;
    let file = inner.into_inner().map_err(|e| what_w(e.into_error()))?;
    file.sync_all().map_err(what_w)?;
    Ok(Compressed { raw_sha: raw.finish(), raw_bytes, gz_sha: sha.finish(), gz_bytes: bytes })
}

/// Reads up to BLOCK bytes into `buf` (fewer only at the end of the file).
fn fill(input: &mut File, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    Read::take(&mut *input, BLOCK as u64).read_to_end(buf)?;
    Ok(())
}

fn gz_member(data: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    let mut e =
        flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2 + 1024), flate2::Compression::new(level));
    e.write_all(data)?;
    e.finish()
}

/// integrity_check, foreign_key_check and the content digest (with row counts) of the snapshot.
/// A damaged database is a finding to record, not an error that stops the backup.
fn inspect(snap: &Path) -> Result<Inspection> {
    let c = files::open_immutable(snap)?;
    let _watch = files::interruptible(&c);
    let pragma_i64 = |p: &str| -> Result<i64> {
        c.query_row(&format!("PRAGMA {p}"), [], |r| r.get(0)).map_err(|e| sqlite_error(format!("read PRAGMA {p}"), e))
    };
    let page_size = pragma_i64("page_size")?;
    let page_count = pragma_i64("page_count")?;
    let user_version = pragma_i64("user_version")?;
    let integrity = integrity_check(&c);
    let (fk_violations, fk_first) = foreign_key_check(&c);
    let (digest, digest_error) = match digest::content_digest(&c) {
        Ok(d) => (Some(d), None),
        Err(e) => (None, Some(e.message().to_string())),
    };
    let journal_mode = journal_mode_of(snap);
    Ok(Inspection {
        integrity,
        fk_violations,
        fk_first,
        digest,
        digest_error,
        page_size,
        page_count,
        user_version,
        journal_mode,
    })
}

/// `PRAGMA integrity_check`'s lines (`["ok"]` when sound); an error running it is a finding too.
pub fn integrity_check(c: &rusqlite::Connection) -> Vec<String> {
    let run = || -> rusqlite::Result<Vec<String>> {
        let mut st = c.prepare("PRAGMA integrity_check(100)")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    };
    match run() {
        Ok(lines) => lines,
        Err(e) => vec![format!("integrity_check could not run: {}", sq::sqlite_cause(&e))],
    }
}

fn foreign_key_check(c: &rusqlite::Connection) -> (u64, Vec<Value>) {
    let run = || -> rusqlite::Result<(u64, Vec<Value>)> {
        let mut st = c.prepare("PRAGMA foreign_key_check")?;
        let mut rows = st.query([])?;
        let (mut n, mut first) = (0u64, vec![]);
        while let Some(r) = rows.next()? {
            n += 1;
            if first.len() < 20 {
                first.push(json!({
                    "table": r.get::<_, String>(0)?,
                    "rowid": r.get::<_, Option<i64>>(1)?,
                    "parent": r.get::<_, String>(2)?,
                    "fkid": r.get::<_, i64>(3)?,
                }));
            }
        }
        Ok((n, first))
    };
    // A failure here shows in integrity_check as well; do not count it twice.
    run().unwrap_or((0, vec![]))
}

/// "wal" when the file header says WAL (write/read versions, bytes 18-19, are 2), else "rollback".
fn journal_mode_of(snap: &Path) -> &'static str {
    let mut header = [0u8; 20];
    match File::open(snap).and_then(|mut f| f.read_exact(&mut header)) {
        Ok(()) if header[18] == 2 => "wal",
        _ => "rollback",
    }
}
