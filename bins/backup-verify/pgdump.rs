//! The same manifest-and-verify for a PostgreSQL dump: `pg_dump -Fc` from an exported snapshot
//! (so the manifest's row counts are the dump's), sha256, and `pg_restore` as the check.

use crate::check::Report;
use crate::files::{self, show, TempPath};
use crate::manifest;
use pgferry::files::HashingReader;
use pgferry::pg::Target;
use pgferry::timefmt;
use pgferry::{Error, Result};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const FORMAT: &str = "pgferry-pg-dump/1";
pub const DATA_SUFFIX: &str = ".pgdump";

pub struct Options {
    pub db: Option<String>,
    pub out: PathBuf,
    pub name: Option<String>,
}

/// `pg_dump`/`pg_restore` with the connection in the environment, never on the command line
/// (where `ps` would show a password).
fn pg_command(prog: &str, target: Option<&Target>) -> Command {
    let mut c = Command::new(prog);
    match target {
        Some(t) => t.child_env(&mut c),
        None => pgferry::pg::clear_libpq_env(&mut c),
    }
    c
}

/// Runs a pg_* program; its first stderr line is the cause when it fails.
fn run(mut c: Command, what: &str) -> Result<Vec<u8>> {
    let prog = c.get_program().to_string_lossy().into_owned();
    let out = c.stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Unavailable(format!("{what}: needs '{prog}' (Debian package postgresql-client)"))
        } else {
            Error::io(format!("{what}: run '{prog}'"), e)
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("failed without a message").trim().to_string();
        return Err(Error::CheckFailed(format!("{what}: {line}")));
    }
    Ok(out.stdout)
}

/// `pg_restore --list` (the table of contents) and `pg_restore -f /dev/null` (every data block
/// read and decompressed). Returns the number of TOC entries.
fn restore_checks(dump: &Path) -> (std::result::Result<u64, String>, std::result::Result<(), String>) {
    let mut list = pg_command("pg_restore", None);
    list.arg("--list").arg(dump);
    let toc = run(list, "pg_restore --list").map(|out| {
        String::from_utf8_lossy(&out).lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()).count() as u64
    });
    let mut read = pg_command("pg_restore", None);
    read.arg("--file=/dev/null").arg(dump);
    let all = run(read, "pg_restore").map(|_| ());
    (toc.map_err(|e| e.message().to_string()), all.map_err(|e| e.message().to_string()))
}

fn sha256_file(p: &Path) -> Result<(String, u64)> {
    let mut r = HashingReader::new(crate::files::open_regular(p, "dump")?);
    std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| Error::io(format!("read '{}'", show(p)), e))?;
    Ok((r.sha.finish(), r.bytes))
}

pub fn create(o: &Options) -> Result<(PathBuf, Map<String, Value>)> {
    let target = Target::resolve(o.db.as_deref())?;
    let mut client = target.connect()?;
    let what = format!("dump {}", target.describe());
    let pg = |e| pgferry::pg::pg_error(&what, e);
    files::make_private_dir(&o.out)?;
    // One snapshot for our counts and for pg_dump: the manifest describes exactly the dump.
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(pg)?;
    let row = tx
        .query_one("SELECT pg_export_snapshot(), current_setting('server_version'), current_database()", &[])
        .map_err(pg)?;
    let (snapshot, server_version, dbname): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let tables = tx
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1",
            &[],
        )
        .map_err(pg)?;
    let mut counts = vec![];
    for t in tables {
        let name: String = t.get(0);
        let n: i64 = tx.query_one(&format!("SELECT count(*) FROM {name}"), &[]).map_err(pg)?.get(0);
        counts.push(json!({"name": name, "rows": n}));
    }

    let stem = o.name.clone().unwrap_or(dbname);
    let now = timefmt::now_micros();
    let (base, path) = reserve(&o.out, &stem, now)?;
    let guard = TempPath::new(path.clone());
    let mut dump = pg_command("pg_dump", Some(&target));
    dump.args(["--format=custom", "--no-password"]).arg(format!("--snapshot={snapshot}")).arg("--file").arg(&path);
    run(dump, &what).map_err(|e| Error::Unavailable(e.message().to_string()))?;
    tx.commit().map_err(pg)?;
    let mut v = pg_command("pg_dump", None);
    v.arg("--version");
    let version =
        run(v, "pg_dump --version").map(|v| String::from_utf8_lossy(&v).trim().to_string()).unwrap_or_default();
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("fsync '{}'", show(&path)), e))?;
    let (sha, bytes) = sha256_file(&path)?;
    let (toc, all) = restore_checks(&path);
    let restorable = toc.is_ok() && all.is_ok();

    let mut m = Map::new();
    m.insert("format".into(), FORMAT.into());
    m.insert("file".into(), format!("{base}{DATA_SUFFIX}").into());
    m.insert("created_at".into(), timefmt::format_rfc3339_micros(now).into());
    m.insert("source".into(), json!({"database": target.describe()}));
    m.insert("tool".into(), format!("backup-verify {}", env!("CARGO_PKG_VERSION")).into());
    m.insert("pg_dump_version".into(), version.into());
    m.insert("server_version".into(), server_version.into());
    m.insert("dump".into(), json!({"format": "custom", "bytes": bytes, "sha256": sha}));
    m.insert("toc_entries".into(), json!(toc.as_ref().ok()));
    let restore_check = match (&toc, &all) {
        (Ok(_), Ok(())) => "ok".to_string(),
        (Err(e), _) | (_, Err(e)) => e.clone(),
    };
    m.insert("pg_restore_check".into(), restore_check.into());
    m.insert("tables".into(), Value::Array(counts.clone()));
    let mpath = manifest::write(&o.out, &base, m)?;
    guard.keep();
    let rows: i64 = counts.iter().map(|c| c["rows"].as_i64().unwrap_or(0)).sum();
    let mut summary = Map::new();
    summary.insert("backup".into(), show(&path).into());
    summary.insert("manifest".into(), show(&mpath).into());
    summary.insert("created_at".into(), timefmt::format_rfc3339_micros(now).into());
    summary.insert("bytes".into(), bytes.into());
    summary.insert("tables".into(), counts.len().into());
    summary.insert("rows".into(), rows.into());
    summary.insert("integrity".into(), json!(if restorable { "ok" } else { "FAILED" }));
    Ok((mpath, summary))
}

fn reserve(dir: &Path, stem: &str, now: i64) -> Result<(String, PathBuf)> {
    let ts: String = timefmt::format_rfc3339_micros(now / 1_000_000 * 1_000_000)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    for n in 1..1000 {
        let base = if n == 1 { format!("{stem}-{ts}") } else { format!("{stem}-{ts}-{n}") };
        let data = dir.join(format!("{base}{DATA_SUFFIX}"));
        if dir.join(format!("{base}{}", manifest::MANIFEST_SUFFIX)).exists() {
            continue;
        }
        match pgferry::files::create_private(&data) {
            Ok(_) => return Ok((base, data)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("create '{}'", show(&data)), e)),
        }
    }
    Err(Error::Io(format!("create a dump in '{}': 999 dumps named '{stem}-{ts}' already exist", show(dir))))
}

/// check for a dump: its sha256 and size, `pg_restore --list` with the recorded number of
/// entries, and `pg_restore` reading every data block.
pub fn verify(r: &mut Report, m: &Map<String, Value>) -> Result<()> {
    let fields = (|| -> std::result::Result<_, String> {
        let file = manifest::str_at(m, "/file")?.to_string();
        if file.contains('/') || file.starts_with('.') {
            return Err(format!("manifest names a file outside its directory: '{file}'"));
        }
        Ok((file, manifest::str_at(m, "/dump/sha256")?.to_string(), manifest::u64_at(m, "/dump/bytes")?))
    })();
    let (file, sha, bytes) = match fields {
        Ok(f) => f,
        Err(e) => {
            r.fail("manifest", e);
            return Ok(());
        }
    };
    let data = pgferry::files::parent_dir(&r.manifest_path).join(&file);
    if !data.exists() {
        return Err(Error::NoInput(format!("check '{}': the dump file '{}' is missing", r.base, show(&data))));
    }
    let (actual_sha, actual_bytes) = sha256_file(&data)?;
    r.compare("dump_sha256", sha.into(), actual_sha.into());
    r.compare("dump_bytes", bytes.into(), actual_bytes.into());
    let (toc, all) = restore_checks(&data);
    match toc {
        Ok(n) => r.compare("pg_restore_list", m.get("toc_entries").cloned().unwrap_or(Value::Null), n.into()),
        Err(e) => r.fail("pg_restore_list", e),
    }
    match all {
        Ok(()) => r.record("pg_restore_read", true, Map::new()),
        Err(e) => r.fail("pg_restore_read", e),
    }
    r.raw_bytes = actual_bytes;
    let tables = manifest::tables(m).unwrap_or_default();
    r.tables = tables.len();
    r.rows = tables.iter().map(|t| t.1).sum();
    Ok(())
}
