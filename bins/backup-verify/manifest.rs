//! The manifest: a JSON file beside each compressed backup, describing it and checksumming it.
//! `NAME.sqlite.gz` is the backup, `NAME.manifest.json` its manifest; a backup exists once its
//! manifest does (the manifest is written last, atomically).

use crate::files::show;
use pgferry::digest::sha256_hex;
use pgferry::{Error, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "pgferry-sqlite-backup/1";
pub const DATA_SUFFIX: &str = ".sqlite.gz";
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// The field holding the manifest's own checksum (over the manifest without it).
pub const SELF_SUM: &str = "manifest_sha256";

/// The checksum a manifest carries of itself: sha256 of its compact JSON without `SELF_SUM`.
/// It catches edits and damage, not forgery (anyone can recompute it).
pub fn self_sum(m: &Map<String, Value>) -> String {
    let mut m = m.clone();
    m.remove(SELF_SUM);
    sha256_hex(&serde_json::to_vec(&Value::Object(m)).expect("JSON values serialize"))
}

/// Which manifest BACKUP names: the manifest itself, its `.sqlite.gz`, or their common NAME.
pub fn manifest_path(backup: &str) -> PathBuf {
    if backup.ends_with(MANIFEST_SUFFIX) {
        PathBuf::from(backup)
    } else if let Some(base) =
        backup.strip_suffix(DATA_SUFFIX).or_else(|| backup.strip_suffix(crate::pgdump::DATA_SUFFIX))
    {
        PathBuf::from(format!("{base}{MANIFEST_SUFFIX}"))
    } else {
        PathBuf::from(format!("{backup}{MANIFEST_SUFFIX}"))
    }
}

/// The backup's NAME, from its manifest's file name.
pub fn base_name(manifest: &Path) -> String {
    let f = manifest.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    f.strip_suffix(MANIFEST_SUFFIX).unwrap_or(&f).to_string()
}

/// Reads a manifest's text. A missing manifest is exit 66; an unreadable one 74.
pub fn read_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    crate::files::open_regular(path, "manifest")?
        .read_to_string(&mut text)
        .map_err(|e| Error::io(format!("read manifest '{}'", show(path)), e))?;
    Ok(text)
}

/// A manifest's text as a JSON object. A key written twice is refused: readers differ on
/// which one counts, so an edit could show one reader a row count and another reader another.
pub fn object(text: &str) -> std::result::Result<Map<String, Value>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    if let Some(k) = pgferry::stream::first_repeated_key(text) {
        return Err(format!("has the key '{k}' twice"));
    }
    let Value::Object(m) = v else { return Err("not a JSON object".into()) };
    Ok(m)
}

/// Parses a manifest and checks its form and its own checksum; `Err` says what is wrong
/// (a check failure, not an I/O error).
pub fn parse(text: &str) -> std::result::Result<Map<String, Value>, String> {
    let m = object(text)?;
    match m.get("format").and_then(Value::as_str) {
        Some(FORMAT) | Some(crate::pgdump::FORMAT) | Some(crate::tree::FORMAT) => {}
        Some(other) => return Err(format!("format '{other}' is not {FORMAT}")),
        None => return Err("has no 'format'".into()),
    }
    let Some(recorded) = m.get(SELF_SUM).and_then(Value::as_str) else {
        return Err(format!("has no '{SELF_SUM}'"));
    };
    let actual = self_sum(&m);
    if recorded != actual {
        return Err(format!(
            "was changed after it was written ({SELF_SUM} is {recorded}, its content hashes to {actual})"
        ));
    }
    Ok(m)
}

/// The file a manifest describes, beside it: `file`, or a tree backup's `archive.file`.
pub fn data_file(m: &Map<String, Value>) -> Option<&str> {
    lookup(m, "/file").or_else(|| lookup(m, "/archive/file")).and_then(Value::as_str)
}

/// A string field by JSON pointer (`/compressed/sha256`), or a check failure naming it.
pub fn str_at<'a>(m: &'a Map<String, Value>, pointer: &str) -> std::result::Result<&'a str, String> {
    lookup(m, pointer).and_then(Value::as_str).ok_or_else(|| format!("manifest lacks '{pointer}'"))
}

pub fn u64_at(m: &Map<String, Value>, pointer: &str) -> std::result::Result<u64, String> {
    lookup(m, pointer).and_then(Value::as_u64).ok_or_else(|| format!("manifest lacks '{pointer}'"))
}

pub fn lookup<'a>(m: &'a Map<String, Value>, pointer: &str) -> Option<&'a Value> {
    let mut parts = pointer.trim_start_matches('/').split('/');
    let mut cur = m.get(parts.next()?)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

/// The tables and row counts a manifest records.
pub fn tables(m: &Map<String, Value>) -> std::result::Result<Vec<(String, u64)>, String> {
    let Some(Value::Array(items)) = m.get("tables") else { return Err("manifest lacks 'tables'".into()) };
    items
        .iter()
        .map(|t| match (t.get("name").and_then(Value::as_str), t.get("rows").and_then(Value::as_u64)) {
            (Some(n), Some(r)) => Ok((n.to_string(), r)),
            _ => Err("manifest has a table entry without 'name' and 'rows'".to_string()),
        })
        .collect()
}

/// Writes the manifest beside its backup: checksummed, owner-only, atomically.
pub fn write(dir: &Path, base: &str, mut m: Map<String, Value>) -> Result<PathBuf> {
    let sum = self_sum(&m);
    m.insert(SELF_SUM.into(), Value::from(sum));
    let mut text = serde_json::to_string_pretty(&Value::Object(m)).expect("JSON values serialize");
    text.push('\n');
    pgferry::files::write_atomic(dir, &format!("{base}{MANIFEST_SUFFIX}"), text.as_bytes())
        .map_err(|e| e.context("write manifest"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_the_manifest() {
        assert_eq!(manifest_path("d/app-1.manifest.json"), PathBuf::from("d/app-1.manifest.json"));
        assert_eq!(manifest_path("d/app-1.sqlite.gz"), PathBuf::from("d/app-1.manifest.json"));
        assert_eq!(manifest_path("d/app-1"), PathBuf::from("d/app-1.manifest.json"));
        assert_eq!(base_name(Path::new("d/app-1.manifest.json")), "app-1");
    }

    #[test]
    fn self_checksum_catches_any_edit() {
        let mut m = Map::new();
        m.insert("format".into(), FORMAT.into());
        m.insert("tables".into(), serde_json::json!([{"name": "t", "rows": 3}]));
        let sum = self_sum(&m);
        m.insert(SELF_SUM.into(), sum.into());
        let text = serde_json::to_string_pretty(&Value::Object(m)).unwrap();
        assert!(parse(&text).is_ok());
        let edited = text.replace("3", "4");
        assert!(parse(&edited).unwrap_err().contains("changed after it was written"));
        assert!(parse("{").unwrap_err().contains("not valid JSON"));
        let twice = text.replacen('{', "{\"tables\": [], ", 1);
        assert_eq!(parse(&twice).unwrap_err(), "has the key 'tables' twice");
        assert_eq!(tables(&parse(&text).unwrap()).unwrap(), vec![("t".to_string(), 3)]);
    }
}
