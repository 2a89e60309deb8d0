//! backup-verify against real SQLite files: live WAL databases, damaged backups, restores.

use crate::harness::*;
use pgferry::digest::{content_digest, sha256_hex};
use rusqlite::Connection;
use serde_json::{Map, Value};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Runs `create` and returns its summary line.
fn create(db: &Path, out: &Path) -> Value {
    let r = cmd("backup-verify").arg("create").arg(db).arg("--out").arg(out).ok();
    r.json_lines().pop().expect("create prints its summary")
}

fn manifest_of(summary: &Value) -> PathBuf {
    PathBuf::from(summary["manifest"].as_str().unwrap())
}

fn data_of(summary: &Value) -> PathBuf {
    PathBuf::from(summary["backup"].as_str().unwrap())
}

fn read_manifest(p: &Path) -> Map<String, Value> {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Rewrites a manifest with its own checksum recomputed, as a careful forger (or a buggy
/// tool) would, so that only the checks on the data can catch what is wrong.
fn write_manifest_resummed(p: &Path, mut m: Map<String, Value>) {
    m.remove("manifest_sha256");
    let sum = sha256_hex(&serde_json::to_vec(&Value::Object(m.clone())).unwrap());
    m.insert("manifest_sha256".into(), sum.into());
    std::fs::write(p, serde_json::to_string_pretty(&Value::Object(m)).unwrap()).unwrap();
}

/// The checks that failed, from check's last line.
fn failed(r: &Run) -> Vec<String> {
    let last = r.json_lines().pop().unwrap();
    assert_eq!(last["ok"], false, "{}", r.describe());
    last["failed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn digest_of(db: &Path) -> String {
    let c = Connection::open(db).unwrap();
    content_digest(&c).unwrap().sha256
}

fn gunzip(p: &Path) -> Vec<u8> {
    let mut out = vec![];
    flate2::read::MultiGzDecoder::new(std::fs::File::open(p).unwrap()).read_to_end(&mut out).unwrap();
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(vec![], flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file in `dir` with its bytes, for "nothing was changed" assertions.
fn snapshot_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

/// A small database with a few tables, an index and a WITHOUT ROWID table.
fn small_db(path: &Path) {
    sqlite_db(
        path,
        "PRAGMA journal_mode = WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, score REAL, avatar BLOB);
         WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 300) INSERT INTO users SELECT value, 'u' || value || '@example.com', value * 1.5, randomblob(value % 7) FROM s;
         CREATE TABLE tags (name TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID;
         INSERT INTO tags VALUES ('a', 1), ('b', 2);
         CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, msg TEXT);
         WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 200) INSERT INTO log (msg) SELECT 'message ' || value FROM s;",
    );
}

#[test]
fn live_wal_database_backup_holds_the_wal_and_one_consistent_state() {
    let t = TempDir::new();
    let db = t.path("live.db");
    // Writes that are only in the WAL: autocheckpoint off, the writer's connection kept open.
    let w = Connection::open(&db).unwrap();
    w.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER);
         CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER);
         BEGIN;
         WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 2000) INSERT INTO orders SELECT value, value FROM s;
         WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 2000) INSERT INTO ledger SELECT value, value FROM s;
         COMMIT;",
    )
    .unwrap();
    assert!(std::fs::metadata(t.path("live.db-wal")).unwrap().len() > 0);
    // What `cp` of the main file alone would give: none of those rows.
    std::fs::copy(&db, t.path("cp-copy.db")).unwrap();
    let cp_rows: rusqlite::Result<i64> =
        Connection::open(t.path("cp-copy.db")).unwrap().query_row("SELECT count(*) FROM orders", [], |r| r.get(0));
    assert!(cp_rows.map(|n| n < 2000).unwrap_or(true), "the main file alone should lack the WAL's rows");

    // A writer keeps committing pairs of rows (one per table, same id) during create.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let db = db.clone();
        std::thread::spawn(move || {
            let c = Connection::open(&db).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            let mut id = 2001i64;
            while !stop.load(Ordering::SeqCst) {
                c.execute_batch(&format!(
                    "BEGIN IMMEDIATE; INSERT INTO orders VALUES ({id}, {id}); INSERT INTO ledger VALUES ({id}, {id}); COMMIT;"
                ))
                .unwrap();
                id += 1;
            }
            id - 2001
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let out = t.path("backups");
    let s = create(&db, &out);
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(written > 0, "the writer ran");
    drop(w);

    assert_eq!(s["integrity"], "ok");
    let m = read_manifest(&manifest_of(&s));
    let rows = |name: &str| {
        m["tables"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()["rows"].as_u64().unwrap()
    };
    assert!(rows("orders") >= 2000, "the WAL's rows are in the backup");
    assert_eq!(rows("orders"), rows("ledger"), "one consistent state: every pair whole");
    assert_eq!(m["database"]["journal_mode"], "wal");
    assert_eq!(m["integrity_check"], serde_json::json!(["ok"]));
    assert!(m["sqlite_version"].as_str().unwrap().starts_with('3'));
    assert!(m["source"]["path"].as_str().unwrap().ends_with("live.db"));
    cmd("backup-verify").arg("check").arg(manifest_of(&s)).ok().stderr_has(&["OK"]);

    // The backup's rows are exactly the pairs 1..=N.
    let raw = gunzip(&data_of(&s));
    std::fs::write(t.path("unpacked.db"), &raw).unwrap();
    let c = Connection::open(t.path("unpacked.db")).unwrap();
    let (n, max, sum_diff): (i64, i64, i64) = c
        .query_row(
            "SELECT count(*), max(o.id), sum(o.amount - l.amount) FROM orders o JOIN ledger l USING (id)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((n as u64, max as u64, sum_diff), (rows("orders"), rows("orders"), 0));
    assert_eq!(sha256_hex(&raw), m["database"]["sha256"].as_str().unwrap());
}

#[test]
fn every_single_byte_flip_truncation_and_swap_of_the_compressed_file_is_caught() {
    let t = TempDir::new();
    let db = t.path("app.db");
    small_db(&db);
    let s = create(&db, &t.path("b"));
    let data = data_of(&s);
    let manifest = manifest_of(&s);
    let good = std::fs::read(&data).unwrap();
    let n = good.len();
    // Every position in the gzip header and trailer, and a spread through the body.
    let mut positions: Vec<usize> = (0..12.min(n)).chain(n.saturating_sub(12)..n).collect();
    positions.extend((0..60).map(|i| 12 + i * (n - 24) / 60));
    for (i, &pos) in positions.iter().enumerate() {
        let mut bad = good.clone();
        bad[pos] ^= if i % 2 == 0 { 0xff } else { 1 << (i % 8) };
        std::fs::write(&data, &bad).unwrap();
        let r = cmd("backup-verify").arg("check").arg(&manifest).expect(1);
        assert!(failed(&r).contains(&"compressed_sha256".to_string()), "flip at {pos}\n{}", r.describe());
    }
    for len in [0, 10, n / 2, n - 1] {
        std::fs::write(&data, &good[..len]).unwrap();
        let r = cmd("backup-verify").arg("check").arg(&manifest).expect(1);
        let f = failed(&r);
        assert!(f.contains(&"compressed_sha256".to_string()) && f.contains(&"decompress".to_string()), "{len}: {f:?}");
    }
    // Bytes appended after a complete gzip stream.
    let mut longer = good.clone();
    longer.extend_from_slice(b"\0\0junk");
    std::fs::write(&data, &longer).unwrap();
    cmd("backup-verify").arg("check").arg(&manifest).expect(1);

    // Another backup's file (same database, a moment later) swapped in under this name.
    std::fs::write(&data, &good).unwrap();
    sqlite_db(&db, "INSERT INTO tags VALUES ('c', 3);");
    let s2 = create(&db, &t.path("b"));
    assert_ne!(s2["backup"], s["backup"]);
    std::fs::copy(data_of(&s2), &data).unwrap();
    let r = cmd("backup-verify").arg("check").arg(&manifest).expect(1);
    assert!(failed(&r).contains(&"compressed_sha256".to_string()));
    assert!(r.stderr().contains("FAILED"), "{}", r.describe());
    // Put back, it passes again.
    std::fs::write(&data, &good).unwrap();
    cmd("backup-verify").arg("check").arg(&data).ok();
}

#[test]
fn edited_manifests_are_caught() {
    let t = TempDir::new();
    let db = t.path("app.db");
    small_db(&db);
    let s = create(&db, &t.path("b"));
    let mp = manifest_of(&s);
    let original = std::fs::read_to_string(&mp).unwrap();

    // A hand edit: the manifest's own checksum no longer matches.
    std::fs::write(&mp, original.replace("\"rows\": 300", "\"rows\": 301")).unwrap();
    let r = cmd("backup-verify").arg("check").arg(&mp).expect(1);
    assert_eq!(failed(&r), ["manifest"]);
    r.stderr_has(&["changed after it was written"]);
    std::fs::write(&mp, "{ not json").unwrap();
    assert_eq!(failed(&cmd("backup-verify").arg("check").arg(&mp).expect(1)), ["manifest"]);

    // Edits with the checksum recomputed are still caught by the data checks.
    let good: Map<String, Value> = serde_json::from_str(&original).unwrap();
    type Edit = Box<dyn Fn(&mut Map<String, Value>)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("rows", Box::new(|m| m["tables"][0]["rows"] = 999.into())),
        ("compressed_sha256", Box::new(|m| m["compressed"]["sha256"] = sha256_hex(b"x").into())),
        ("database_sha256", Box::new(|m| m["database"]["sha256"] = sha256_hex(b"x").into())),
        ("database_bytes", Box::new(|m| m["database"]["bytes"] = 4096.into())),
        ("compressed_bytes", Box::new(|m| m["compressed"]["bytes"] = 1.into())),
        ("rows", Box::new(|m| m["tables"].as_array_mut().unwrap().pop().map(|_| ()).unwrap())),
    ];
    for (check, edit) in cases {
        let mut m = good.clone();
        edit(&mut m);
        write_manifest_resummed(&mp, m);
        let r = cmd("backup-verify").arg("check").arg(&mp).expect(1);
        assert!(failed(&r).contains(&check.to_string()), "{check}\n{}", r.describe());
    }
    std::fs::write(&mp, &original).unwrap();
    cmd("backup-verify").arg("check").arg(&mp).ok();
}

/// Overwrites page `page` (1-based), its b-tree header included, with garbage.
fn corrupt_page(bytes: &mut [u8], page_size: usize, page: usize) {
    let start = (page - 1) * page_size;
    for (i, b) in bytes[start..start + page_size].iter_mut().enumerate() {
        *b = (i * 37 % 251) as u8;
    }
}

#[test]
fn corrupt_pages_inside_a_valid_gzip_are_caught() {
    let t = TempDir::new();
    let db = t.path("app.db");
    small_db(&db);
    sqlite_db(&db, "PRAGMA wal_checkpoint(TRUNCATE);");
    let s = create(&db, &t.path("b"));
    let mp = manifest_of(&s);
    let m = read_manifest(&mp);
    let page_size = m["database"]["page_size"].as_u64().unwrap() as usize;

    // A backup whose gzip and checksums are all consistent, around a damaged database.
    let mut raw = gunzip(&data_of(&s));
    corrupt_page(&mut raw, page_size, 3);
    let gz = gzip(&raw);
    std::fs::write(data_of(&s), &gz).unwrap();
    let mut forged = m.clone();
    forged["compressed"]["sha256"] = sha256_hex(&gz).into();
    forged["compressed"]["bytes"] = gz.len().into();
    forged["database"]["sha256"] = sha256_hex(&raw).into();
    write_manifest_resummed(&mp, forged);
    let r = cmd("backup-verify").arg("check").arg(&mp).expect(1);
    let f = failed(&r);
    assert!(f.contains(&"integrity_check".to_string()), "{f:?}\n{}", r.describe());
    assert!(!f.contains(&"compressed_sha256".to_string()) && !f.contains(&"database_sha256".to_string()));

    // A live database that is itself damaged: the backup is written (it may be all there is),
    // its manifest says so, create exits 1, and check fails it.
    let mut live = std::fs::read(&db).unwrap();
    corrupt_page(&mut live, page_size, 3);
    std::fs::write(&db, &live).unwrap();
    let r = cmd("backup-verify").arg("create").arg(&db).arg("--out").arg(t.path("b2")).expect(1);
    r.stderr_has(&["FAILS its integrity check"]);
    let s2 = r.json_lines().pop().unwrap();
    assert_eq!(s2["integrity"], "FAILED");
    let m2 = read_manifest(&manifest_of(&s2));
    assert_ne!(m2["integrity_check"], serde_json::json!(["ok"]));
    let r = cmd("backup-verify").arg("check").arg(manifest_of(&s2)).expect(1);
    assert!(failed(&r).contains(&"integrity_check".to_string()));
}

#[test]
fn restore_round_trip_keeps_the_previous_database_restorable() {
    let t = TempDir::new();
    let db = t.path("app.db");
    small_db(&db);
    let v1 = digest_of(&db);
    let s = create(&db, &t.path("b"));
    assert_eq!(read_manifest(&manifest_of(&s))["content_sha256"], v1.as_str());

    // Later: more writes, some of them only in a WAL that nobody has checkpointed (a crash).
    {
        let w = Connection::open(&db).unwrap();
        w.execute_batch(
            "PRAGMA wal_autocheckpoint = 0; DELETE FROM users WHERE id > 100; INSERT INTO tags VALUES ('later', 9);",
        )
        .unwrap();
        std::fs::copy(&db, t.path("app2.db")).unwrap();
        std::fs::copy(t.path("app.db-wal"), t.path("app2.db-wal")).unwrap();
    }
    let target = t.path("app2.db");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    let v2 = digest_of(&db);
    assert_ne!(v1, v2);

    let r = cmd("backup-verify").arg("restore").arg(manifest_of(&s)).arg("--to").arg(&target).ok();
    let last = r.json_lines().pop().unwrap();
    assert_eq!(last["ok"], true);
    assert_eq!(last["content_sha256"], v1.as_str());
    assert_eq!(digest_of(&target), v1, "the restored database holds the backup's content");
    assert_eq!(mode(&target), 0o640, "the restored file keeps the replaced file's permissions");
    assert!(!t.path("app2.db-wal").exists() || std::fs::metadata(t.path("app2.db-wal")).unwrap().len() == 0);

    // The replaced database, with its WAL, is kept aside and is itself restorable.
    let previous = PathBuf::from(last["previous"].as_str().unwrap());
    assert!(previous.file_name().unwrap().to_string_lossy().starts_with("app2.db.before-restore-"));
    assert_eq!(digest_of(&previous), v2, "the kept copy has everything, the WAL's writes included");
    let s_prev = create(&previous, &t.path("b"));
    cmd("backup-verify").arg("restore").arg(manifest_of(&s_prev)).arg("--to").arg(&target).ok();
    assert_eq!(digest_of(&target), v2);

    // Restoring to a path where no database exists yet works too.
    let fresh = t.path("fresh.db");
    cmd("backup-verify").arg("restore").arg(data_of(&s)).arg("--to").arg(&fresh).ok();
    assert_eq!(digest_of(&fresh), v1);
    assert_eq!(mode(&fresh), 0o600);
}

#[test]
fn refused_restores_touch_nothing() {
    let t = TempDir::new();
    let db = t.path("app.db");
    small_db(&db);
    let s = create(&db, &t.path("b"));
    let live = t.0.join("live");
    std::fs::create_dir(&live).unwrap();
    let target = live.join("app.db");
    sqlite_db(&target, "PRAGMA journal_mode = WAL; CREATE TABLE current (x); INSERT INTO current VALUES (1);");

    // A corrupt backup: refused, exit 1, not a byte changed, no temp file left.
    let data = data_of(&s);
    let good = std::fs::read(&data).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    std::fs::write(&data, &bad).unwrap();
    let before = snapshot_dir(&live);
    let r = cmd("backup-verify").arg("restore").arg(manifest_of(&s)).arg("--to").arg(&target).expect(1);
    r.stderr_has(&["refusing to restore", "nothing was changed"]);
    assert!(failed(&r).contains(&"compressed_sha256".to_string()));
    assert_eq!(snapshot_dir(&live), before);
    std::fs::write(&data, &good).unwrap();

    // A process with the database open: refused (75) naming it, unless --force.
    let app = Connection::open(&target).unwrap();
    app.query_row("SELECT count(*) FROM current", [], |r| r.get::<_, i64>(0)).unwrap();
    let before = snapshot_dir(&live);
    let r = cmd("backup-verify").arg("restore").arg(manifest_of(&s)).arg("--to").arg(&target).expect(75);
    r.stderr_has(&["in use", &format!("pid {}", std::process::id()), "--force", "nothing was changed"]);
    assert_eq!(snapshot_dir(&live), before);
    // A rollback-journal connection holds no lock while idle; it is still seen (an open file).
    drop(app);
    sqlite_db(&target, "PRAGMA journal_mode = DELETE;");
    let idle = Connection::open(&target).unwrap();
    idle.query_row("SELECT count(*) FROM current", [], |r| r.get::<_, i64>(0)).unwrap();
    cmd("backup-verify").arg("restore").arg(manifest_of(&s)).arg("--to").arg(&target).expect(75);
    cmd("backup-verify")
        .arg("restore")
        .arg(manifest_of(&s))
        .arg("--to")
        .arg(&target)
        .arg("--force")
        .ok()
        .stderr_has(&["--force"]);
    drop(idle);
    assert_eq!(digest_of(&target), read_manifest(&manifest_of(&s))["content_sha256"].as_str().unwrap());

    // Missing things are exit 66, and change nothing either.
    cmd("backup-verify").arg("restore").arg(t.path("b/nope")).arg("--to").arg(&target).expect(66);
    cmd("backup-verify").arg("restore").arg(manifest_of(&s)).arg("--to").arg(t.path("no/such/dir/app.db")).expect(66);
}

#[test]
fn created_files_are_owner_only_whatever_the_umask() {
    let t = TempDir::new();
    let db = t.path("app.db");
    small_db(&db);
    let out = t.path("new/nested/backups");
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(bin("backup-verify"))
        .arg("create")
        .arg(&db)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mode(&out), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(&out).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 2, "the backup and its manifest, no leftovers: {files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    // check's decompressed copy is owner-only too, and gone afterwards.
    cmd("backup-verify").arg("check").arg(&files[0]).ok();
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2);
}

#[test]
fn names_never_collide_list_is_newest_first_and_keep_rotates() {
    let t = TempDir::new();
    let db = t.path("app.db");
    small_db(&db);
    let out = t.path("b");
    let names: Vec<String> = (0..4).map(|_| create(&db, &out)["backup"].as_str().unwrap().to_string()).collect();
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{names:?}");
    let list = cmd("backup-verify").arg("list").arg(&out).ok().json_lines();
    assert_eq!(list.len(), 4);
    let listed: Vec<&str> = list.iter().map(|l| l["file"].as_str().unwrap()).collect();
    let expected: Vec<String> =
        names.iter().rev().map(|n| Path::new(n).file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(listed, expected);
    assert!(list.iter().all(|l| l["integrity"] == "ok" && l["rows"] == 503 && l["tables"] == 4));

    // A data file without its manifest (an interrupted create) is not listed, only warned about.
    std::fs::write(out.join("app-20000101T000000Z.sqlite.gz"), b"partial").unwrap();
    let r = cmd("backup-verify").arg("list").arg(&out).ok();
    assert_eq!(r.json_lines().len(), 4);
    r.stderr_has(&["'app-20000101T000000Z.sqlite.gz' has no manifest"]);
    std::fs::remove_file(out.join("app-20000101T000000Z.sqlite.gz")).unwrap();

    // Another source's backups in the same directory are never rotated away.
    let other = t.path("other.db");
    sqlite_db(&other, "CREATE TABLE x (a);");
    create(&other, &out);
    let r = cmd("backup-verify").arg("create").arg(&db).arg("--out").arg(&out).args(["--keep", "2"]).ok();
    assert_eq!(r.json_lines()[0]["removed"].as_array().unwrap().len(), 3);
    let list = cmd("backup-verify").arg("list").arg(&out).ok().json_lines();
    assert_eq!(list.len(), 3, "2 of app.db, 1 of other.db");
    assert_eq!(list.iter().filter(|l| l["source"].as_str().unwrap().ends_with("/app.db")).count(), 2);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 6, "data and manifest of each, nothing orphaned");
    // The newest survive: the one just created and the last of the first four.
    assert!(list.iter().any(|l| names[3].ends_with(l["file"].as_str().unwrap())));
}

#[test]
fn usage_and_missing_inputs() {
    let t = TempDir::new();
    cmd("backup-verify").expect(64).stderr_has(&["missing command", "Try 'backup-verify --help'"]);
    cmd("backup-verify").arg("frobnicate").expect(64);
    cmd("backup-verify").args(["create", "x.db"]).expect(64).stderr_has(&["--out"]);
    cmd("backup-verify").args(["create", "x.db", "--out", "d", "--level", "0"]).expect(64);
    cmd("backup-verify").args(["restore", "x"]).expect(64).stderr_has(&["--to"]);
    cmd("backup-verify").arg("create").arg(t.path("missing.db")).arg("--out").arg(t.path("o")).expect(66);
    cmd("backup-verify").arg("check").arg(t.path("missing")).expect(66);
    cmd("backup-verify").arg("list").arg(t.path("missing")).expect(66);
    let help = cmd("backup-verify").arg("--help").ok().stdout();
    for s in ["Usage:", "Options for create:", "Exit status:", "--keep-daily", "--force"] {
        assert!(help.contains(s), "{s}");
    }
}

#[test]
fn pg_dumps_get_the_same_manifest_and_check_and_never_show_the_password() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE events (id int PRIMARY KEY, body text);
         INSERT INTO events SELECT g, repeat('event body ' || g, 20) FROM generate_series(1, 5000) g;
         CREATE SCHEMA app; CREATE TABLE app.\"Users\" (id int); INSERT INTO app.\"Users\" VALUES (1), (2);",
    );
    let t = TempDir::new();
    let out = t.path("dumps");
    let r = cmd("backup-verify").arg("pg-create").arg("--db").arg(&pg.url).arg("--out").arg(&out).ok();
    let s = r.json_lines().pop().unwrap();
    assert_eq!((s["tables"].as_u64(), s["rows"].as_u64(), s["integrity"].as_str()), (Some(2), Some(5002), Some("ok")));
    let mp = manifest_of(&s);
    let m = read_manifest(&mp);
    assert_eq!(m["format"], "pgferry-pg-dump/1");
    assert_eq!(m["tables"][0], serde_json::json!({"name": "app.\"Users\"", "rows": 2}));
    assert_eq!(mode(&data_of(&s)), 0o600);
    assert_eq!(mode(&mp), 0o600);
    // The password is in the URL we passed, and nowhere in what the tool wrote or printed.
    let password =
        pg.url.split_once("://").unwrap().1.split_once('@').unwrap().0.split_once(':').unwrap().1.to_string();
    assert!(password.len() >= 4, "the test cluster's URL has a password");
    for text in [std::fs::read_to_string(&mp).unwrap(), r.stdout(), r.stderr()] {
        assert!(!text.contains(&password), "password leaked: {text}");
    }

    cmd("backup-verify").arg("check").arg(data_of(&s)).ok().stderr_has(&["OK", "pg_restore reads every entry"]);
    let list = cmd("backup-verify").arg("list").arg(&out).ok().json_lines();
    assert_eq!(list[0]["kind"], "pg_dump");

    // A flipped byte inside the data: the checksum catches it, and with the manifest's checksum
    // recomputed, pg_restore reading every block does.
    let good = std::fs::read(data_of(&s)).unwrap();
    let mut bad = good.clone();
    let pos = bad.len() * 3 / 4;
    bad[pos] ^= 0x55;
    std::fs::write(data_of(&s), &bad).unwrap();
    let r = cmd("backup-verify").arg("check").arg(&mp).expect(1);
    assert!(failed(&r).contains(&"dump_sha256".to_string()));
    let mut forged = m.clone();
    forged["dump"]["sha256"] = sha256_hex(&bad).into();
    write_manifest_resummed(&mp, forged);
    let r = cmd("backup-verify").arg("check").arg(&mp).expect(1);
    assert_eq!(failed(&r), ["pg_restore_read"], "{}", r.describe());
    // Truncated.
    std::fs::write(data_of(&s), &good[..good.len() / 2]).unwrap();
    cmd("backup-verify").arg("check").arg(&mp).expect(1);
    // restore is for SQLite; a dump is restored with pg_restore.
    cmd("backup-verify").arg("restore").arg(&mp).arg("--to").arg(t.path("x.db")).expect(64).stderr_has(&["pg_restore"]);
    // A database that does not exist is exit 66, and leaves no file behind.
    let dead = replace_db(&pg.url, "no_such_database_here");
    cmd("backup-verify").arg("pg-create").arg("--db").arg(dead).arg("--out").arg(&out).expect(66);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2);
}

#[test]
fn an_interrupted_create_leaves_no_files() {
    let t = TempDir::new();
    let db = t.path("big.db");
    sqlite_db(
        &db,
        "PRAGMA journal_mode = WAL; CREATE TABLE b (x);
         WITH RECURSIVE s(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM s WHERE v < 8000) INSERT INTO b SELECT randomblob(1000) FROM s;",
    );
    let out = t.path("b");
    let child = std::process::Command::new(bin("backup-verify"))
        .arg("create")
        .arg(&db)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until the snapshot exists: then the run is well under way.
    let started = std::time::Instant::now();
    while !std::fs::read_dir(&out)
        .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".snapshot")))
        .unwrap_or(false)
    {
        assert!(started.elapsed().as_secs() < 20, "create never started its snapshot");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let left: Vec<String> =
        std::fs::read_dir(&out).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(left.is_empty(), "{left:?}");
}
