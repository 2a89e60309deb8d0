//! `list` and `--keep` rotation: backups are found through their manifests.

use crate::files::show;
use crate::manifest;
use pgferry::timefmt::{self, MICROS_PER_DAY};
use pgferry::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// How many backups of one source to keep; a backup stays when any rule keeps it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Keep {
    /// The newest N.
    pub last: Option<usize>,
    /// The newest backup of each of the last N days that have one (UTC days).
    pub daily: Option<usize>,
    /// ... of each of the last N ISO weeks (Monday to Sunday, UTC).
    pub weekly: Option<usize>,
    /// ... of each of the last N calendar months (UTC).
    pub monthly: Option<usize>,
}

impl Keep {
    pub fn any(&self) -> bool {
        self.last.is_some() || self.daily.is_some() || self.weekly.is_some() || self.monthly.is_some()
    }
}

/// One backup found in a directory.
pub struct Entry {
    pub manifest_path: PathBuf,
    pub base: String,
    /// None when the manifest does not parse or fails its own checksum.
    pub manifest: Option<Map<String, Value>>,
    pub error: Option<String>,
    pub created_micros: Option<i64>,
}

impl Entry {
    pub fn source(&self) -> Option<&str> {
        let m = self.manifest.as_ref()?;
        // A tree backup's manifest holds its source path as a plain string.
        manifest::lookup(m, "/source/path").or_else(|| m.get("source")).and_then(Value::as_str)
    }

    /// The `list` line: the manifest's summary.
    pub fn summary(&self) -> Value {
        let mut out = Map::new();
        out.insert("backup".into(), self.base.clone().into());
        out.insert("manifest".into(), show(&self.manifest_path).into());
        match &self.manifest {
            None => {
                out.insert("error".into(), self.error.clone().unwrap_or_default().into());
            }
            Some(m) => {
                let get = |p: &str| manifest::lookup(m, p).cloned().unwrap_or(Value::Null);
                let tables = manifest::tables(m).unwrap_or_default();
                out.insert("created_at".into(), get("/created_at"));
                out.insert("file".into(), manifest::data_file(m).into());
                out.insert("tables".into(), tables.len().into());
                out.insert("rows".into(), tables.iter().map(|t| t.1).sum::<u64>().into());
                if get("/format") == crate::pgdump::FORMAT {
                    out.insert("kind".into(), "pg_dump".into());
                    out.insert("source".into(), get("/source/database"));
                    out.insert("bytes".into(), get("/dump/bytes"));
                    out.insert(
                        "integrity".into(),
                        json!(if get("/pg_restore_check") == "ok" { "ok" } else { "FAILED" }),
                    );
                } else if get("/format") == crate::tree::FORMAT {
                    // Tree manifests list files, not tables: "tables" and "rows" stay 0.
                    out.insert("kind".into(), "tree".into());
                    out.insert("source".into(), get("/source"));
                    out.insert("files".into(), get("/file_count"));
                    out.insert("bytes".into(), get("/bytes"));
                    out.insert("compressed_bytes".into(), get("/archive/bytes"));
                } else {
                    out.insert("kind".into(), "sqlite".into());
                    out.insert("source".into(), get("/source/path"));
                    out.insert("bytes".into(), get("/database/bytes"));
                    out.insert("compressed_bytes".into(), get("/compressed/bytes"));
                    let ok = get("/integrity_check") == json!(["ok"]);
                    out.insert("integrity".into(), json!(if ok { "ok" } else { "FAILED" }));
                    out.insert("content_sha256".into(), get("/content_sha256"));
                }
            }
        }
        Value::Object(out)
    }
}

/// Every backup in `dir` (every `NAME.manifest.json`), newest first; unreadable manifests last.
pub fn scan(dir: &Path) -> Result<Vec<Entry>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(format!("list '{}'", show(dir)), e))?;
    let mut out = vec![];
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(format!("list '{}'", show(dir)), e))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(manifest::MANIFEST_SUFFIX) {
            continue;
        }
        let path = ent.path();
        let (m, error) =
            match manifest::read_text(&path).map_err(|e| e.message().to_string()).and_then(|t| manifest::parse(&t)) {
                Ok(m) => (Some(m), None),
                Err(e) => (None, Some(e)),
            };
        let created_micros = m
            .as_ref()
            .and_then(|m| m.get("created_at"))
            .and_then(Value::as_str)
            .and_then(timefmt::parse_timestamp)
            .map(|p| p.utc_micros(0));
        out.push(Entry { base: manifest::base_name(&path), manifest_path: path, manifest: m, error, created_micros });
    }
    out.sort_by(|a, b| b.created_micros.cmp(&a.created_micros).then_with(|| b.base.cmp(&a.base)));
    Ok(out)
}

/// Which of `times` (newest first) the rules keep.
pub fn kept(times: &[i64], keep: Keep) -> Vec<bool> {
    let mut keepers = vec![false; times.len()];
    if let Some(n) = keep.last {
        keepers.iter_mut().take(n).for_each(|k| *k = true);
    }
    let mut bucketed = |n: Option<usize>, bucket: &dyn Fn(i64) -> i64| {
        let Some(n) = n else { return };
        let mut seen = HashSet::new();
        for (i, t) in times.iter().enumerate() {
            let b = bucket(*t);
            if seen.len() < n && seen.insert(b) {
                keepers[i] = true;
            }
        }
    };
    let day = |t: i64| t.div_euclid(MICROS_PER_DAY);
    bucketed(keep.daily, &day);
    // 1970-01-01 was a Thursday: shifting by 3 days makes weeks start on Monday.
    bucketed(keep.weekly, &|t| (day(t) + 3).div_euclid(7));
    bucketed(keep.monthly, &|t| {
        let (y, m, _) = timefmt::civil_from_days(day(t));
        y * 12 + m as i64
    });
    keepers
}

/// Removes the backups of `source` in `dir` that `keep` does not keep (never `current`, never
/// one whose manifest cannot be read). Returns the removed backups' names.
pub fn rotate(dir: &Path, source: &str, current: &str, keep: Keep) -> Result<Vec<String>> {
    let entries: Vec<Entry> =
        scan(dir)?.into_iter().filter(|e| e.source() == Some(source) && e.created_micros.is_some()).collect();
    let times: Vec<i64> = entries.iter().map(|e| e.created_micros.expect("filtered")).collect();
    let keepers = kept(&times, keep);
    let mut removed = vec![];
    for (e, k) in entries.iter().zip(keepers) {
        if k || e.base == current {
            continue;
        }
        let file = e.manifest.as_ref().and_then(manifest::data_file).unwrap_or("");
        // The manifest first: from then on the backup no longer exists for list, check and restore.
        std::fs::remove_file(&e.manifest_path)
            .map_err(|err| Error::io(format!("remove '{}'", show(&e.manifest_path)), err))?;
        if !file.is_empty() && !file.contains('/') {
            let data = pgferry::files::parent_dir(&e.manifest_path).join(file);
            match std::fs::remove_file(&data) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(format!("remove '{}'", show(&data)), err)),
            }
        }
        removed.push(e.base.clone());
    }
    if !removed.is_empty() {
        pgferry::files::fsync_dir(dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        timefmt::parse_timestamp(s).unwrap().utc_micros(0)
    }

    #[test]
    fn daily_weekly_monthly_keep_the_newest_of_each_period() {
        // Newest first: two on Sun Nov 22, one each on Nov 21, Mon Nov 16, Sun Nov 15, Sat Oct 31.
        let times: Vec<i64> = [
            "2026-11-22T12:00:00Z",
            "2026-11-22T03:00:00Z",
            "2026-11-21T03:00:00Z",
            "2026-11-16T03:00:00Z",
            "2026-11-15T03:00:00Z",
            "2026-10-31T03:00:00Z",
        ]
        .iter()
        .map(|s| at(s))
        .collect();
        let k = |last, daily, weekly, monthly| kept(&times, Keep { last, daily, weekly, monthly });
        assert_eq!(k(Some(2), None, None, None), [true, true, false, false, false, false]);
        assert_eq!(k(None, Some(3), None, None), [true, false, true, true, false, false]);
        // Weeks: Nov 16-22 (Mon-Sun), Nov 9-15, Oct 26-Nov 1.
        assert_eq!(k(None, None, Some(2), None), [true, false, false, false, true, false]);
        assert_eq!(k(None, None, None, Some(2)), [true, false, false, false, false, true]);
        assert_eq!(k(Some(1), Some(1), Some(1), Some(1)), [true, false, false, false, false, false]);
        assert_eq!(k(None, None, None, None), [false; 6]);
    }
}
