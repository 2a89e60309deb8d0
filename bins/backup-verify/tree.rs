//! Backups of a file tree (an app's JSON state: a directory, or one file) with the same
//! guarantees as a SQLite backup: one gzip archive, a manifest with every file's size, mode
//! and sha256, `check` that re-reads the archive against it, and `restore` that puts the
//! tree back only after the check passes, keeping the current one aside.
//!
//! The archive `NAME.tree.gz` is, decompressed, one entry per regular file in path order:
//! a JSON header line `{"path": REL, "size": N, "mode": M}` then exactly N bytes. REL is
//! relative to the tree's root (the file's own name when the root is one file).

use crate::check::Report;
use crate::files::{self, show, TempPath};
use crate::manifest;
use pgferry::digest::Sha256Hex;
use pgferry::files::{HashingReader, HashingWriter};
use pgferry::timefmt;
use pgferry::{Error, Result};
use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "pgferry-tree-backup/1";
pub const DATA_SUFFIX: &str = ".tree.gz";

/// A tree backup's source: a directory, or a file that is not a SQLite database.
pub fn is_tree(source: &str) -> bool {
    let p = Path::new(source);
    if p.is_dir() {
        return true;
    }
    if !p.is_file() {
        // Missing, or a FIFO or device (opening a FIFO would wait forever): create says which.
        return false;
    }
    let mut head = [0u8; 16];
    match File::open(p).and_then(|mut f| f.read_exact(&mut head)) {
        Ok(()) => &head != b"SQLite format 3\0",
        // Shorter than a SQLite header (or empty): certainly not a database.
        Err(e) => e.kind() == std::io::ErrorKind::UnexpectedEof,
    }
}

/// Whether the manifest BACKUP names (its path, NAME.tree.gz or NAME) is a tree backup's.
pub fn is_tree_backup(backup: &str) -> bool {
    let m = manifest_path(backup);
    let format = |t: &str| serde_json::from_str::<Value>(t).ok().and_then(|v| v.get("format").cloned());
    manifest::read_text(&m).is_ok_and(|t| format(&t) == Some(Value::from(FORMAT)))
}

pub fn manifest_path(backup: &str) -> PathBuf {
    match backup.strip_suffix(DATA_SUFFIX) {
        Some(base) => PathBuf::from(format!("{base}{}", manifest::MANIFEST_SUFFIX)),
        None => manifest::manifest_path(backup),
    }
}

/// One regular file of the tree.
struct Entry {
    rel: String,
    path: PathBuf,
}

/// Every regular file under `root` (or `root` itself), in path order; symlinks and other
/// special files are refused, since a restore could not put them back as they were.
fn walk(root: &Path) -> Result<Vec<Entry>> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| Error::io(format!("read '{}'", show(root)), e))?;
    if meta.is_file() {
        let rel =
            root.file_name().unwrap_or_default().to_os_string().into_string().map_err(|raw| not_utf8(root, &raw))?;
        return Ok(vec![Entry { rel, path: root.to_path_buf() }]);
    }
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound if !prefix.is_empty() => changed(root, &prefix, "disappeared"),
            _ => Error::io(format!("list '{}'", show(&dir)), e),
        })?;
        for e in rd {
            let e = e.map_err(|e| Error::io(format!("list '{}'", show(&dir)), e))?;
            let name = e.file_name().into_string().map_err(|raw| not_utf8(&e.path(), &raw))?;
            let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let ft = e.file_type().map_err(|err| Error::io(format!("read '{}'", show(&e.path())), err))?;
            if ft.is_dir() {
                stack.push((e.path(), rel));
            } else if ft.is_file() {
                out.push(Entry { rel, path: e.path() });
            } else {
                let what = if ft.is_symlink() {
                    let to = std::fs::read_link(e.path()).map(|t| show(&t)).unwrap_or_default();
                    format!("a symlink (to '{to}')")
                } else {
                    "a device, FIFO or socket".to_string()
                };
                return Err(Error::Data(format!(
                    "back up '{}': '{rel}' is {what}, not a regular file or directory; \
                     a restore could not put it back as it was",
                    show(root)
                )));
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// `create` for a tree: the archive, then the manifest (the backup exists once it does).
/// Prints nothing; returns the summary line.
pub fn create(source: &str, out: &Path, name: Option<&str>, level: u32) -> Result<Map<String, Value>> {
    let root = std::fs::canonicalize(source).map_err(|e| Error::io(format!("read '{source}'"), e))?;
    let is_dir = root.is_dir();
    if is_dir && real_path(out).starts_with(&root) {
        // The archive being written would be read into itself (and old backups with it).
        return Err(Error::Usage(format!(
            "back up '{}': the output directory '{}' is inside it; put the backups elsewhere",
            show(&root),
            show(out)
        )));
    }
    files::make_private_dir(out)?;
    let stem = match name {
        Some(n) => n.to_string(),
        None => files::default_stem(&root, "tree"),
    };
    let ts: String = timefmt::format_rfc3339_micros(timefmt::now_micros() / 1_000_000 * 1_000_000)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let (base, data_path, data_file) = reserve(out, &stem, &ts)?;
    let guard = TempPath::new(data_path.clone());
    let entries = walk(&root)?;
    let what_w = |e| Error::io(format!("write '{}'", show(&data_path)), e);
    let sink = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, data_file));
    let mut gz = flate2::write::GzEncoder::new(sink, flate2::Compression::new(level));
    let mut listed = Vec::with_capacity(entries.len());
    let mut total = 0u64;
    for e in &entries {
        files::check_interrupt("create")?;
        let what_r = |err: std::io::Error| match err.kind() {
            std::io::ErrorKind::NotFound => changed(&root, &e.rel, "disappeared"),
            _ => Error::io(format!("read '{}'", show(&e.path)), err),
        };
        let mut f = File::open(&e.path).map_err(what_r)?;
        let before = f.metadata().map_err(what_r)?;
        let mode = before.permissions().mode() & 0o7777;
        let size = before.len();
        writeln!(gz, "{}", json!({"path": e.rel, "size": size, "mode": mode})).map_err(what_w)?;
        let mut r = HashingReader::new(Read::take(&mut f, size));
        let copied = std::io::copy(&mut r, &mut gz).map_err(what_w)?;
        let after = std::fs::metadata(&e.path).map_err(what_r)?;
        if copied != size || after.len() != size || after.modified().ok() != before.modified().ok() {
            return Err(changed(&root, &e.rel, "changed"));
        }
        total += size;
        listed.push(json!({"path": e.rel, "size": size, "mode": mode, "sha256": r.sha.finish()}));
    }
    let sink = gz.finish().map_err(what_w)?;
    let HashingWriter { inner, sha, bytes } = sink;
    inner.into_inner().map_err(|e| what_w(e.into_error()))?.sync_all().map_err(what_w)?;
    let mut m = Map::new();
    m.insert("format".into(), FORMAT.into());
    m.insert("source".into(), show(&root).into());
    m.insert("kind".into(), if is_dir { "directory" } else { "file" }.into());
    m.insert("created_at".into(), timefmt::format_rfc3339_micros(timefmt::now_micros()).into());
    m.insert("archive".into(), json!({"file": format!("{base}{DATA_SUFFIX}"), "bytes": bytes, "sha256": sha.finish()}));
    m.insert("file_count".into(), listed.len().into());
    m.insert("bytes".into(), total.into());
    m.insert("files".into(), Value::Array(listed));
    let mpath = manifest::write(out, &base, m)?;
    guard.keep();
    let mut summary = Map::new();
    summary.insert("backup".into(), show(&data_path).into());
    summary.insert("manifest".into(), show(&mpath).into());
    summary.insert("source".into(), show(&root).into());
    summary.insert("kind".into(), "tree".into());
    summary.insert("files".into(), entries.len().into());
    summary.insert("bytes".into(), total.into());
    summary.insert("compressed_bytes".into(), bytes.into());
    Ok(summary)
}

/// `p` with its symlinks resolved as far as it exists (`--out` may not exist yet).
fn real_path(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut missing = vec![];
    let mut cur = abs.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(cur) {
            return missing.iter().rev().fold(real, |acc: PathBuf, part| acc.join(part));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

/// A file name JSON cannot carry exactly (a restore would write another name).
fn not_utf8(path: &Path, raw: &std::ffi::OsStr) -> Error {
    Error::Data(format!(
        "back up '{}': the file name {raw:?} is not UTF-8, which the manifest (JSON) cannot record \
         exactly; rename it",
        show(pgferry::files::parent_dir(path).as_path())
    ))
}

/// A file of the tree changed (or vanished) while the backup ran: exit 75, freeze first.
fn changed(root: &Path, rel: &str, how: &str) -> Error {
    Error::TempFail(format!(
        "back up '{}': '{rel}' {how} while the backup ran (is the app still writing? freeze first); \
         no backup was written",
        show(root)
    ))
}

fn reserve(dir: &Path, stem: &str, ts: &str) -> Result<(String, PathBuf, File)> {
    for n in 1..1000 {
        let base = if n == 1 { format!("{stem}-{ts}") } else { format!("{stem}-{ts}-{n}") };
        if dir.join(format!("{base}{}", manifest::MANIFEST_SUFFIX)).exists() {
            continue;
        }
        let data = dir.join(format!("{base}{DATA_SUFFIX}"));
        match pgferry::files::create_private(&data) {
            Ok(f) => return Ok((base, data, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("create '{}'", show(&data)), e)),
        }
    }
    Err(Error::Io(format!("create a backup in '{}': 999 backups named '{stem}-{ts}' already exist", show(dir))))
}

/// `check` for a tree: the manifest's own checksum, the archive's size and sha256, then every
/// entry decompressed and hashed against the manifest's list. With `extract_to`, the files
/// are also written under that directory (restore's staging copy).
pub fn verify(backup: &str, extract_to: Option<&Path>) -> Result<Report> {
    let mpath = manifest_path(backup);
    let mut r = Report::new(&mpath);
    let text = manifest::read_text(&mpath)?;
    let m = match parse(&text) {
        Ok(m) => m,
        Err(e) => {
            r.fail("manifest", e);
            return Ok(r);
        }
    };
    r.record("manifest", true, Map::new());
    let dir = pgferry::files::parent_dir(&mpath);
    let (archive, want_bytes, want_sha) = match (
        manifest::str_at(&m, "/archive/file"),
        manifest::u64_at(&m, "/archive/bytes"),
        manifest::str_at(&m, "/archive/sha256"),
    ) {
        (Ok(f), _, _) if f.contains('/') || f.starts_with('.') => {
            r.fail("manifest", format!("manifest names a file outside its directory: '{f}'"));
            return Ok(r);
        }
        (Ok(f), Ok(b), Ok(s)) => (dir.join(f), b, s.to_string()),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            r.fail("manifest", e);
            return Ok(r);
        }
    };
    let want: Vec<Value> = m.get("files").and_then(Value::as_array).cloned().unwrap_or_default();
    r.manifest = Some(m);
    let f = files::open_regular(&archive, "archive")?;
    let mut hashed = HashingReader::new(BufReader::with_capacity(1 << 20, f));
    let found = read_entries(&mut hashed, &want, extract_to);
    // Read what the decoder left (a damaged tail) so the checksum covers the whole file.
    let _ = std::io::copy(&mut hashed, &mut std::io::sink());
    let HashingReader { sha, bytes, .. } = hashed;
    r.compare("archive_bytes", want_bytes.into(), bytes.into());
    r.compare("archive_sha256", want_sha.into(), sha.finish().into());
    match found {
        Ok((n, total)) => {
            r.compare("files", want.len().into(), n.into());
            r.raw_bytes = total;
            r.tables = n;
        }
        Err(e) => r.fail("files", e),
    }
    Ok(r)
}

/// The longest entry header read: a path of PATH_MAX bytes, every one JSON-escaped, fits.
const MAX_HEADER: u64 = 64 << 10;

/// Decompresses the archive entry by entry, comparing each with the manifest's list.
fn read_entries(
    input: &mut impl Read,
    want: &[Value],
    extract_to: Option<&Path>,
) -> std::result::Result<(usize, u64), String> {
    let mut gz = BufReader::new(flate2::read::MultiGzDecoder::new(input));
    let mut total = 0u64;
    let mut n = 0usize;
    let mut header = String::new();
    loop {
        header.clear();
        let got = (&mut gz)
            .take(MAX_HEADER)
            .read_line(&mut header)
            .map_err(|e| format!("decompress the archive: {}", pgferry::error::io_cause(&e)))?;
        if got == 0 {
            break;
        }
        if !header.ends_with('\n') {
            // A damaged or hostile archive (a gzip bomb without newlines) must not fill memory.
            return Err(format!("entry {}: no header line within {MAX_HEADER} bytes", n + 1));
        }
        let h: Value = serde_json::from_str(header.trim_end()).map_err(|_| format!("entry {}: bad header", n + 1))?;
        let rel = h["path"].as_str().ok_or_else(|| format!("entry {}: no path", n + 1))?.to_string();
        let size = h["size"].as_u64().ok_or_else(|| format!("entry '{rel}': no size"))?;
        let w = want.get(n).ok_or_else(|| format!("'{rel}' is in the archive but not in the manifest"))?;
        if w["path"].as_str() != Some(rel.as_str()) || w["size"].as_u64() != Some(size) {
            return Err(format!("entry {} is '{rel}' ({size} bytes); the manifest lists {w}", n + 1));
        }
        if rel.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            return Err(format!("entry '{rel}' has an unsafe path"));
        }
        let mut out: Box<dyn Write> = match extract_to {
            Some(d) => {
                let p = d.join(&rel);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| format!("create '{}': {e}", show(parent)))?;
                }
                Box::new(File::create(&p).map_err(|e| format!("write '{}': {e}", show(&p)))?)
            }
            None => Box::new(std::io::sink()),
        };
        let mut sha = Sha256Hex::new();
        let mut left = size;
        let mut buf = vec![0u8; 1 << 16];
        while left > 0 {
            let k = gz.read(&mut buf[..left.min(1 << 16) as usize]).map_err(|e| format!("decompress '{rel}': {e}"))?;
            if k == 0 {
                return Err(format!("'{rel}' is cut short in the archive"));
            }
            sha.update(&buf[..k]);
            out.write_all(&buf[..k]).map_err(|e| format!("write '{rel}': {e}"))?;
            left -= k as u64;
        }
        let got = sha.finish();
        if w["sha256"].as_str() != Some(got.as_str()) {
            return Err(format!("'{rel}': sha256 {got}, the manifest says {}", w["sha256"]));
        }
        if let (Some(d), Some(mode)) = (extract_to, h["mode"].as_u64()) {
            let _ = std::fs::set_permissions(d.join(&rel), std::fs::Permissions::from_mode(mode as u32));
        }
        total += size;
        n += 1;
    }
    Ok((n, total))
}

fn parse(text: &str) -> std::result::Result<Map<String, Value>, String> {
    let m = manifest::object(text)?;
    if m.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(format!("format is not {FORMAT}"));
    }
    let recorded = m.get(manifest::SELF_SUM).and_then(Value::as_str).unwrap_or("");
    let actual = manifest::self_sum(&m);
    if recorded != actual {
        return Err(format!(
            "was changed after it was written ({} is {recorded}, its content hashes to {actual})",
            manifest::SELF_SUM
        ));
    }
    Ok(m)
}

/// check's one-line summary for a tree backup.
pub fn human(r: &Report) -> String {
    if r.ok() {
        return format!(
            "check '{}': OK: archive checksum matches, {} files as recorded ({})",
            r.base,
            r.tables,
            files::human_bytes(r.raw_bytes)
        );
    }
    let why: Vec<String> = r
        .lines
        .iter()
        .filter(|l| l["ok"] == false)
        .map(|l| {
            let name = l["check"].as_str().unwrap_or("?");
            match (l.get("error"), l.get("expected"), l.get("actual")) {
                (Some(e), _, _) => format!("{name}: {}", e.as_str().unwrap_or("")),
                (None, Some(e), Some(a)) => format!("{name}: manifest {e}, backup {a}"),
                _ => name.to_string(),
            }
        })
        .collect();
    format!("check '{}': FAILED: {}", r.base, why.join("; "))
}

/// What `restore` did.
pub struct Restored {
    pub report: Report,
    pub previous: Option<PathBuf>,
}

/// `restore` for a tree: extracts into a staging copy beside `to` while checking, and only
/// when every check held moves the current tree aside (`TO.before-restore-TIME`) and the
/// staging copy into place. A failed check changes nothing (`previous` is then `None` and
/// the report says why).
pub fn restore(backup: &str, to: &Path) -> Result<Restored> {
    // A symlinked tree is replaced where it really lives (the app may use either path).
    let to = &match std::fs::canonicalize(to) {
        Ok(real) if to.exists() => real,
        _ => to.to_path_buf(),
    };
    let parent = pgferry::files::parent_dir(to);
    let leaf = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "tree".into());
    let staging = parent.join(format!(".{leaf}.pgferry-restore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).map_err(|e| {
        Error::io(format!("create '{}'", show(&staging)), e)
            .append(" (restore extracts beside the target, to rename it into place); nothing was changed")
    })?;
    let cleanup = StagingDir(staging.clone());
    let report = verify(backup, Some(&staging))?;
    if !report.ok() {
        return Ok(Restored { report, previous: None });
    }
    let kind = report.manifest.as_ref().and_then(|m| m.get("kind")).and_then(Value::as_str).unwrap_or("directory");
    let ts: String = timefmt::format_rfc3339_micros(timefmt::now_micros() / 1_000_000 * 1_000_000)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut aside = parent.join(format!("{leaf}.before-restore-{ts}"));
    let mut n = 2;
    while aside.exists() {
        aside = parent.join(format!("{leaf}.before-restore-{ts}-{n}"));
        n += 1;
    }
    let previous = if to.exists() {
        std::fs::rename(to, &aside).map_err(|e| Error::io(format!("keep '{}' as '{}'", show(to), show(&aside)), e))?;
        Some(aside)
    } else {
        None
    };
    let new = if kind == "file" {
        let only =
            report.manifest.as_ref().and_then(|m| m["files"][0]["path"].as_str()).unwrap_or_default().to_string();
        staging.join(only)
    } else {
        staging.clone()
    };
    if let Err(e) = std::fs::rename(&new, to) {
        // The current tree goes back where it was: a failed restore changes nothing.
        let back = previous.as_ref().map(|aside| std::fs::rename(aside, to));
        let how = match back {
            None | Some(Ok(())) => "nothing was changed".to_string(),
            Some(Err(_)) => format!("the current tree is kept as '{}'", show(previous.as_deref().unwrap_or(to))),
        };
        return Err(Error::io(format!("put '{}' in place", show(to)), e).append(&format!("; {how}")));
    }
    pgferry::files::fsync_dir(&parent)?;
    drop(cleanup);
    Ok(Restored { report, previous })
}

/// The staging directory, removed however restore ends.
struct StagingDir(PathBuf);
impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
