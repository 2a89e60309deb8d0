//! `check`: the manifest's own checksum, the compressed file's sha256 and size, a full
//! decompression into a temporary file (the database's sha256 and size), `integrity_check`,
//! and every table recounted against the manifest. Each finding is one NDJSON line.

use crate::files::{self, show, TempPath};
use crate::manifest;
use pgferry::digest;
use pgferry::files::{HashingReader, HashingWriter};
use pgferry::progress::{Progress, Unit};
use pgferry::{Error, Result};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// What `verify` found.
pub struct Report {
    /// The backup's NAME.
    pub base: String,
    pub manifest_path: PathBuf,
    pub manifest: Option<Map<String, Value>>,
    /// One JSON object per check, in the order they ran.
    pub lines: Vec<Value>,
    /// The names of the checks that failed.
    pub failed: Vec<String>,
    /// The decompressed database when decompression succeeded; removed when dropped.
    pub database: Option<TempPath>,
    pub tables: usize,
    pub rows: u64,
    pub raw_bytes: u64,
}

impl Report {
    /// An empty report for the backup whose manifest is `mpath`.
    pub fn new(mpath: &std::path::Path) -> Report {
        Report {
            base: manifest::base_name(mpath),
            manifest_path: mpath.to_path_buf(),
            manifest: None,
            lines: vec![],
            failed: vec![],
            database: None,
            tables: 0,
            rows: 0,
            raw_bytes: 0,
        }
    }
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    pub fn record(&mut self, check: &str, ok: bool, mut fields: Map<String, Value>) {
        let mut line = Map::new();
        line.insert("check".into(), check.into());
        line.insert("ok".into(), ok.into());
        line.append(&mut fields);
        self.lines.push(Value::Object(line));
        if !ok {
            self.failed.push(check.to_string());
        }
    }

    pub fn compare(&mut self, check: &str, expected: Value, actual: Value) {
        let ok = expected == actual;
        let mut f = Map::new();
        f.insert("expected".into(), expected);
        f.insert("actual".into(), actual);
        self.record(check, ok, f);
    }

    pub fn fail(&mut self, check: &str, error: String) {
        let mut f = Map::new();
        f.insert("error".into(), error.into());
        self.record(check, false, f);
    }

    /// The final NDJSON line.
    pub fn summary_line(&self) -> Value {
        json!({"backup": self.base, "manifest": show(&self.manifest_path), "ok": self.ok(), "failed": self.failed})
    }

    /// The one-line human summary for stderr.
    pub fn human(&self) -> String {
        let pg =
            self.manifest.as_ref().and_then(|m| m.get("format")).and_then(Value::as_str) == Some(crate::pgdump::FORMAT);
        if self.ok() && pg {
            format!(
                "check '{}': OK: checksum matches, pg_restore reads every entry ({}; {} tables, {} rows at dump time)",
                self.base,
                files::human_bytes(self.raw_bytes),
                self.tables,
                self.rows
            )
        } else if self.ok() {
            format!(
                "check '{}': OK: checksums match, integrity ok, {} tables and {} rows as recorded ({})",
                self.base,
                self.tables,
                self.rows,
                files::human_bytes(self.raw_bytes)
            )
        } else {
            let mut why = vec![];
            for l in &self.lines {
                if l["ok"] == false {
                    let name = l["check"].as_str().unwrap_or("?");
                    let detail = match (l.get("error"), l.get("table"), l.get("expected"), l.get("actual")) {
                        (Some(e), _, _, _) => format!("{name}: {}", e.as_str().unwrap_or("")),
                        (None, Some(t), Some(e), Some(a)) => {
                            format!("{name} of '{}': manifest {e}, backup {a}", t.as_str().unwrap_or(""))
                        }
                        (None, None, Some(e), Some(a)) => format!("{name}: manifest {e}, backup {a}"),
                        _ => match l.get("result") {
                            Some(r) => format!("{name}: {}", r[0].as_str().unwrap_or("")),
                            None => name.to_string(),
                        },
                    };
                    why.push(detail);
                }
            }
            let more = if why.len() > 3 { format!(" (and {} more)", why.len() - 3) } else { String::new() };
            why.truncate(3);
            format!("check '{}': FAILED: {}{more}", self.base, why.join("; "))
        }
    }
}

/// Runs every check of BACKUP. The database is decompressed into `tmp_dir` (default: beside
/// the backup); `durable` fsyncs it (restore renames it into place). Missing files are errors
/// (exit 66); everything wrong with their content is a failed check in the report.
pub fn verify(backup: &str, tmp_dir: Option<&Path>, durable: bool) -> Result<Report> {
    let mpath = manifest::manifest_path(backup);
    let mut r = Report::new(&mpath);
    if !mpath.exists() {
        return Err(Error::NoInput(format!("check '{backup}': no manifest '{}'", show(&mpath))));
    }
    let text = manifest::read_text(&mpath)?;
    let m = match manifest::parse(&text) {
        Ok(m) => m,
        Err(e) => {
            r.fail("manifest", format!("manifest '{}' {e}", show(&mpath)));
            return Ok(r);
        }
    };
    r.record("manifest", true, Map::new());
    if m.get("format").and_then(Value::as_str) == Some(crate::pgdump::FORMAT) {
        crate::pgdump::verify(&mut r, &m)?;
        r.manifest = Some(m);
        return Ok(r);
    }
    let fields = (|| -> std::result::Result<_, String> {
        let file = manifest::str_at(&m, "/file")?.to_string();
        if file.contains('/') || file.starts_with('.') {
            return Err(format!("manifest names a file outside its directory: '{file}'"));
        }
        Ok((
            file,
            manifest::str_at(&m, "/compressed/sha256")?.to_string(),
            manifest::u64_at(&m, "/compressed/bytes")?,
            manifest::str_at(&m, "/database/sha256")?.to_string(),
            manifest::u64_at(&m, "/database/bytes")?,
            manifest::tables(&m)?,
        ))
    })();
    let (file, gz_sha, gz_bytes, db_sha, db_bytes, tables) = match fields {
        Ok(f) => f,
        Err(e) => {
            r.fail("manifest", e);
            r.manifest = Some(m);
            return Ok(r);
        }
    };
    r.manifest = Some(m);
    let dir = pgferry::files::parent_dir(&mpath);
    let data = dir.join(&file);
    if !data.exists() {
        return Err(Error::NoInput(format!("check '{}': the backup file '{}' is missing", r.base, show(&data))));
    }

    // Decompress, hashing both sides.
    let tmp_dir = tmp_dir.map(Path::to_path_buf).unwrap_or(dir);
    let tmp = TempPath::new(tmp_dir.join(format!(".{}.check-{}", r.base, std::process::id())));
    let decoded = decompress(&data, tmp.path(), durable, db_bytes)?;
    r.compare("compressed_sha256", gz_sha.into(), decoded.gz_sha.into());
    r.compare("compressed_bytes", gz_bytes.into(), decoded.gz_bytes.into());
    if decoded.oversize {
        r.fail(
            "database_bytes",
            format!("the database is larger than the manifest's {db_bytes} bytes; decompression stopped there"),
        );
        return Ok(r);
    }
    if let Some(e) = decoded.error {
        r.fail("decompress", e);
        return Ok(r);
    }
    r.record("decompress", true, Map::new());
    r.compare("database_sha256", db_sha.into(), decoded.raw_sha.into());
    r.compare("database_bytes", db_bytes.into(), decoded.raw_bytes.into());
    r.raw_bytes = decoded.raw_bytes;

    // integrity_check and the recount run side by side: each reads the whole file.
    let path = tmp.path().to_path_buf();
    let (integrity, counts) = std::thread::scope(|s| {
        let counter = s.spawn(|| recount(&path));
        let integrity = files::open_immutable(&path).map(|c| {
            let _watch = files::interruptible(&c);
            crate::create::integrity_check(&c)
        });
        (integrity, counter.join().unwrap_or_else(|_| Err("the counting thread panicked".into())))
    });
    files::check_interrupt("check")?;
    let integrity = integrity?;
    let ok = integrity == ["ok"];
    let mut f = Map::new();
    f.insert("result".into(), json!(integrity));
    r.record("integrity_check", ok, f);
    match counts {
        Err(e) => r.fail("rows", e),
        Ok(actual) => {
            for (t, n) in &tables {
                let a = actual.iter().find(|(k, _)| k == t).map(|(_, n)| Value::from(*n)).unwrap_or(Value::Null);
                let ok = a == *n;
                r.record("rows", ok, obj(json!({"table": t, "expected": n, "actual": a})));
            }
            for (t, n) in &actual {
                if !tables.iter().any(|(k, _)| k == t) {
                    r.record("rows", false, obj(json!({"table": t, "expected": null, "actual": n})));
                }
            }
            r.tables = actual.len();
            r.rows = actual.iter().map(|t| t.1).sum();
        }
    }
    r.database = Some(tmp);
    Ok(r)
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("json! object"),
    }
}

/// Every table's `count(*)` in the backup; an error (a damaged table) is a failed check.
fn recount(path: &Path) -> std::result::Result<Vec<(String, u64)>, String> {
    let c = files::open_immutable(path).map_err(|e| e.message().to_string())?;
    let _watch = files::interruptible(&c);
    let tables = digest::content_tables(&c).map_err(|e| e.message().to_string())?;
    tables
        .into_iter()
        .map(|t| pgferry::sqlite::count_rows(&c, &t).map(|n| (t, n)).map_err(|e| e.message().to_string()))
        .collect()
}

struct Decoded {
    gz_sha: String,
    gz_bytes: u64,
    raw_sha: String,
    raw_bytes: u64,
    /// Why the gzip stream could not be read to its end.
    error: Option<String>,
    /// The stream holds more than the manifest's database size (decompression stopped there).
    oversize: bool,
}

/// gunzip `data` into a new owner-only file at `out`. The compressed side is hashed to the
/// file's last byte even when the stream is damaged or has trailing bytes. Decompression stops
/// one byte past `expect_bytes` (the manifest's database size): a gzip bomb, or a backup that is
/// not this manifest's, cannot fill the disk.
fn decompress(data: &Path, out: &Path, durable: bool, expect_bytes: u64) -> Result<Decoded> {
    let what_r = |e| Error::io(format!("read '{}'", show(data)), e);
    let unchanged = if durable { "; nothing was changed" } else { "" };
    let what_w = |e| Error::io(format!("write '{}'", show(out)), e).append(unchanged);
    let input = files::open_regular(data, "backup")?;
    let reader = BufReader::with_capacity(1 << 20, HashingReader::new(input));
    let mut gz = flate2::bufread::MultiGzDecoder::new(reader);
    let file = pgferry::files::create_private(out).map_err(|e| {
        Error::io(format!("write '{}'", show(out)), e).append(if durable {
            // restore decompresses beside the database: the final rename stays on one filesystem.
            " (restore writes the verified copy in the database's own directory); nothing was changed"
        } else {
            " (check decompresses the database there; pass --tmp DIR to use another directory)"
        })
    })?;
    let mut w = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let mut buf = vec![0u8; 1 << 20];
    let mut error = None;
    let mut oversize = false;
    let draw = pgferry::progress::terminal();
    let mut progress = Progress::new(crate::TOOL, "decompress", Unit::Bytes, Some(expect_bytes), draw);
    loop {
        progress.update(w.bytes);
        files::check_interrupt("check")?;
        if w.bytes > expect_bytes {
            oversize = true;
            break;
        }
        let room = (expect_bytes - w.bytes + 1).min(buf.len() as u64) as usize;
        match gz.read(&mut buf[..room]) {
            Ok(0) => break,
            Ok(n) => w.write_all(&buf[..n]).map_err(what_w)?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                error = Some(match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => "the gzip stream ends early (truncated file)".to_string(),
                    _ => format!("the gzip stream is damaged ({})", pgferry::error::io_cause(&e)),
                });
                break;
            }
        }
    }
    if error.is_none() && gz.header().is_none() {
        error = Some("not a gzip file".into());
    }
    // Whatever the decoder left unread still belongs to the compressed file's checksum.
    let mut rest = gz.into_inner();
    loop {
        let n = rest.fill_buf().map_err(what_r)?.len();
        if n == 0 {
            break;
        }
        rest.consume(n);
    }
    let hr = rest.into_inner();
    w.flush().map_err(what_w)?;
    let HashingWriter { inner, sha, bytes } = w;
    let file = inner.into_inner().map_err(|e| what_w(e.into_error()))?;
    if durable {
        file.sync_all().map_err(what_w)?;
    }
    Ok(Decoded {
        gz_sha: hr.sha.finish(),
        gz_bytes: hr.bytes,
        raw_sha: sha.finish(),
        raw_bytes: bytes,
        error,
        oversize,
    })
}
