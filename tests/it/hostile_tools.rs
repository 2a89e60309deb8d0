//! backup-verify and pg-partition against hostile inputs and conditions: forged manifests,
//! gzip bombs, awkward paths, trees with what cannot be restored, files that change or vanish,
//! writes that fail for want of space, read-only and busy targets, concurrent runs; hostile
//! table names, odd session settings, archives that cannot be written, locked partitions.
//! Real SQLite files, a real PostgreSQL, the real binaries.

use crate::harness::*;
use pgferry::digest::{content_digest, sha256_hex};
use rusqlite::Connection;
use serde_json::{Map, Value};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Runs one of our binaries with RLIMIT_FSIZE set to `bytes` and SIGXFSZ ignored, so that a
/// write past the limit fails with EFBIG as a full disk fails with ENOSPC: the error path of
/// every write, without root or a tiny filesystem.
fn run_with_file_limit(name: &str, args: &[&std::ffi::OsStr], bytes: u64) -> Run {
    let mut c = Command::new(bin(name));
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    pgferry::pg::clear_libpq_env(&mut c);
    c.env_remove("DATABASE_URL");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let display = format!(
        "{name} {} (RLIMIT_FSIZE {bytes})",
        args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    Run { display, out: c.output().unwrap() }
}

/// Runs `c`, killing it (and failing the test) if it has not ended after `secs`: a run that
/// would hang forever must fail, not stall the suite.
fn run_bounded(c: Cmd, secs: u64) -> Run {
    let child = c.spawn();
    let pid = child.id() as i32;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    let killer = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if d.load(std::sync::atomic::Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: signalling our own child, which has not been reaped (we wait below).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        true
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(!killer.join().unwrap(), "still running after {secs} s: killed");
    Run { display: "bounded run".into(), out }
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

fn expect_code(r: &Run, code: i32) {
    assert_eq!(r.code(), code, "{}", r.describe());
}

/// Every entry of `dir` (recursively) with its bytes; symlinks by target.
fn tree_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.push((format!("{rel}/"), vec![]));
                stack.push(p);
            } else if ft.is_symlink() {
                out.push((rel, std::fs::read_link(&p).unwrap().to_string_lossy().into_owned().into_bytes()));
            } else {
                out.push((rel, std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn digest_of(db: &Path) -> String {
    content_digest(&Connection::open(db).unwrap()).unwrap().sha256
}

fn read_json(p: &Path) -> Map<String, Value> {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Rewrites a manifest with its own checksum recomputed (a careful forger), so that only the
/// checks against the data can catch what is wrong.
fn write_resummed(p: &Path, mut m: Map<String, Value>) {
    m.remove("manifest_sha256");
    let sum = sha256_hex(&serde_json::to_vec(&Value::Object(m.clone())).unwrap());
    m.insert("manifest_sha256".into(), sum.into());
    std::fs::write(p, serde_json::to_string_pretty(&Value::Object(m)).unwrap()).unwrap();
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(vec![], flate2::Compression::new(1));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A WAL database of about `kb` KiB of incompressible rows.
fn random_db(path: &Path, kb: u32) {
    sqlite_db(
        path,
        &format!(
            "PRAGMA journal_mode = WAL; CREATE TABLE b (id INTEGER PRIMARY KEY, x BLOB);
             WITH RECURSIVE s(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM s WHERE v < {kb}) INSERT INTO b (x) SELECT randomblob(1000) FROM s;
             PRAGMA wal_checkpoint(TRUNCATE);"
        ),
    );
}

fn summary(r: &Run) -> Value {
    r.json_lines().pop().unwrap_or_else(|| panic!("no summary line\n{}", r.describe()))
}

fn failed(r: &Run) -> Vec<String> {
    let last = summary(r);
    assert_eq!(last["ok"], false, "{}", r.describe());
    last["failed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// backup-verify

#[test]
fn awkward_paths_round_trip_through_create_check_and_restore() {
    let t = TempDir::new();
    let dir = t.path("dir with space é 'q'");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("a b 'q' \"d\" é?#%41.db");
    random_db(&db, 40);
    let out = t.path("out \"x\" #%20?");
    let s = summary(&cmd("backup-verify").arg("create").arg(&db).arg("--out").arg(&out).ok());
    let m = PathBuf::from(s["manifest"].as_str().unwrap());
    assert!(m.file_name().unwrap().to_string_lossy().starts_with("a b 'q' \"d\" é?#%41-"), "{m:?}");
    assert_eq!(read_json(&m)["source"]["path"], db.canonicalize().unwrap().to_str().unwrap());
    cmd("backup-verify").arg("check").arg(&m).ok();
    let target = dir.join("restored é ?#%41.db");
    cmd("backup-verify").arg("restore").arg(&m).arg("--to").arg(&target).ok();
    assert_eq!(digest_of(&target), digest_of(&db));
    // A hidden file's backups are not hidden (list and rotation skip dot files).
    let hidden = dir.join(".app.db");
    std::fs::copy(&db, &hidden).unwrap();
    let hout = t.path("hidden-out");
    let s = summary(&cmd("backup-verify").arg("create").arg(&hidden).arg("--out").arg(&hout).ok());
    let name = Path::new(s["manifest"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("app-"), "{name}");
    assert_eq!(cmd("backup-verify").arg("list").arg(&hout).ok().json_lines().len(), 1);
}

#[test]
fn a_gzip_bomb_is_stopped_at_the_manifest_size_and_never_fills_disk_or_memory() {
    let t = TempDir::new();
    let db = t.path("app.db");
    sqlite_db(&db, "CREATE TABLE t (x); INSERT INTO t VALUES (1);");
    let out = t.path("b");
    let s = summary(&cmd("backup-verify").arg("create").arg(&db).arg("--out").arg(&out).ok());
    let mpath = PathBuf::from(s["manifest"].as_str().unwrap());
    let data = PathBuf::from(s["backup"].as_str().unwrap());
    // 16 MiB of zeros in about 16 KiB of gzip, under a manifest that (checksums recomputed)
    // describes it except for the database's size.
    let bomb = gzip(&vec![0u8; 16 << 20]);
    std::fs::write(&data, &bomb).unwrap();
    let mut m = read_json(&mpath);
    m["compressed"]["sha256"] = sha256_hex(&bomb).into();
    m["compressed"]["bytes"] = bomb.len().into();
    write_resummed(&mpath, m);
    // With writes capped at 1 MiB, an unbounded decompression would fail its write (74).
    let r = run_with_file_limit("backup-verify", &[os("check"), mpath.as_os_str()], 1 << 20);
    expect_code(&r, 1);
    assert_eq!(failed(&r), ["database_bytes"], "{}", r.describe());
    r.stderr_has(&["the database is larger than the manifest's", "decompression stopped there"]);
    assert_eq!(names_in(&out).len(), 2, "no decompressed copy left: {:?}", names_in(&out));
    // restore refuses the same way, changing nothing.
    let target = t.path("target.db");
    sqlite_db(&target, "CREATE TABLE keep (x);");
    let before = tree_of(&t.0.join("b"));
    let r = run_with_file_limit(
        "backup-verify",
        &[os("restore"), mpath.as_os_str(), os("--to"), target.as_os_str()],
        1 << 20,
    );
    expect_code(&r, 1);
    r.stderr_has(&["refusing to restore", "nothing was changed"]);
    assert_eq!(tree_of(&t.0.join("b")), before);
    assert_eq!(names_in(&t.0), ["app.db", "b", "target.db"]);

    // A tree archive that decompresses to one endless line: the header read is bounded.
    let tree = t.path("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("a.json"), "{}").unwrap();
    let s = summary(&cmd("backup-verify").arg("create").arg(&tree).arg("--out").arg(t.path("tb")).ok());
    let tm = PathBuf::from(s["manifest"].as_str().unwrap());
    let archive = PathBuf::from(s["backup"].as_str().unwrap());
    let endless = gzip(&vec![b'x'; 1 << 20]);
    std::fs::write(&archive, &endless).unwrap();
    let mut m = read_json(&tm);
    m["archive"]["sha256"] = sha256_hex(&endless).into();
    m["archive"]["bytes"] = endless.len().into();
    write_resummed(&tm, m);
    let r = cmd("backup-verify").arg("check").arg(&tm).expect(1);
    assert_eq!(failed(&r), ["files"]);
    r.stderr_has(&["entry 1: no header line within 65536 bytes"]);
}

#[test]
fn backup_files_that_are_devices_or_fifos_are_refused_unread() {
    use std::os::unix::ffi::OsStrExt;
    let t = TempDir::new();
    let mkfifo = |p: &Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a plain mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    };
    let db = t.path("app.db");
    sqlite_db(&db, "CREATE TABLE t (x); INSERT INTO t VALUES (1);");
    let s = summary(&cmd("backup-verify").arg("create").arg(&db).arg("--out").arg(t.path("b")).ok());
    let (mpath, data) = (s["manifest"].as_str().unwrap().to_string(), PathBuf::from(s["backup"].as_str().unwrap()));
    // The data file replaced by a symlink to an endless device, then by a FIFO nobody writes.
    std::fs::remove_file(&data).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &data).unwrap();
    let r = run_bounded(cmd("backup-verify").arg("check").arg(&mpath), 20);
    assert_eq!(r.code(), 65, "{}", r.describe());
    let r = run_bounded(cmd("backup-verify").arg("restore").arg(&mpath).arg("--to").arg(t.path("x.db")), 20);
    assert_eq!(r.code(), 65, "{}", r.describe());
    r.stderr_has(&["not a regular file", "refusing to read it"]);
    assert!(!t.path("x.db").exists());
    std::fs::remove_file(&data).unwrap();
    mkfifo(&data);
    let r = run_bounded(cmd("backup-verify").arg("check").arg(&mpath), 20);
    assert_eq!(r.code(), 65, "{}", r.describe());
    // A manifest that is a FIFO: check refuses it, list reports it and goes on.
    let fifo_manifest = t.path("b/fake.manifest.json");
    mkfifo(&fifo_manifest);
    assert_eq!(run_bounded(cmd("backup-verify").arg("check").arg(&fifo_manifest), 20).code(), 65);
    let r = run_bounded(cmd("backup-verify").arg("list").arg(t.path("b")), 20);
    assert_eq!(r.code(), 0, "{}", r.describe());
    let lines = r.json_lines();
    assert!(lines.iter().any(|l| l["error"].as_str().is_some_and(|e| e.contains("not a regular file"))), "{lines:?}");
    // A tree archive that is a FIFO.
    let (_, tm) = tree_backup(&t);
    let archive = PathBuf::from(tm.to_str().unwrap().replace(".manifest.json", ".tree.gz"));
    std::fs::remove_file(&archive).unwrap();
    mkfifo(&archive);
    assert_eq!(run_bounded(cmd("backup-verify").arg("check").arg(&tm), 20).code(), 65);
    // restore of a database onto a FIFO: refused, never opened.
    let target = t.path("target.fifo");
    mkfifo(&target);
    let sqlite_backup = t.path("b2");
    let s = summary(&cmd("backup-verify").arg("create").arg(&db).arg("--out").arg(&sqlite_backup).ok());
    let r = run_bounded(
        cmd("backup-verify").arg("restore").arg(s["manifest"].as_str().unwrap()).arg("--to").arg(&target),
        20,
    );
    assert_eq!(r.code(), 64, "{}", r.describe());
    r.stderr_has(&["is a FIFO, socket or device, not a database file"]);
}

/// A tree of three files, its backup, and the manifest's path.
fn tree_backup(t: &TempDir) -> (PathBuf, PathBuf) {
    let root = t.path("state");
    std::fs::create_dir_all(root.join("users")).unwrap();
    std::fs::write(root.join("config.json"), r#"{"v": 1}"#).unwrap();
    std::fs::write(root.join("users/a.json"), r#"{"name": "a"}"#).unwrap();
    std::fs::write(root.join("users/b.json"), r#"{"name": "b"}"#).unwrap();
    let s = summary(&cmd("backup-verify").arg("create").arg(&root).arg("--out").arg(t.path("tb")).ok());
    (root, PathBuf::from(s["manifest"].as_str().unwrap()))
}

#[test]
fn a_tree_manifest_that_names_missing_files_or_misses_some_fails_and_restores_nothing() {
    let t = TempDir::new();
    let (root, mpath) = tree_backup(&t);
    let good = read_json(&mpath);
    std::fs::write(root.join("config.json"), "changed").unwrap();
    let live = tree_of(&t.0.join("state"));

    // The manifest misses a file the archive holds.
    let mut m = good.clone();
    m["files"].as_array_mut().unwrap().remove(1);
    m["file_count"] = 2.into();
    write_resummed(&mpath, m);
    let r = cmd("backup-verify").arg("check").arg(&mpath).expect(1);
    assert_eq!(failed(&r), ["files"]);
    r.stderr_has(&["entry 2 is 'users/a.json'"]);
    cmd("backup-verify")
        .arg("restore")
        .arg(&mpath)
        .arg("--to")
        .arg(&root)
        .expect(1)
        .stderr_has(&["nothing was changed"]);
    assert_eq!(tree_of(&t.0.join("state")), live);

    // The manifest names a file the archive does not hold.
    let mut m = good.clone();
    let extra = serde_json::json!({"path": "users/c.json", "size": 2, "mode": 0o644, "sha256": sha256_hex(b"{}")});
    m["files"].as_array_mut().unwrap().push(extra);
    m["file_count"] = 4.into();
    write_resummed(&mpath, m);
    let r = cmd("backup-verify").arg("check").arg(&mpath).expect(1);
    let last = r.json_lines().into_iter().find(|l| l["check"] == "files").unwrap();
    assert_eq!((last["expected"].as_u64(), last["actual"].as_u64()), (Some(4), Some(3)), "{}", r.describe());
    cmd("backup-verify").arg("restore").arg(&mpath).arg("--to").arg(&root).expect(1);
    assert_eq!(tree_of(&t.0.join("state")), live);

    // A path that climbs out of the restore target.
    let mut m = good.clone();
    m["files"][0]["path"] = "../escaped.json".into();
    write_resummed(&mpath, m);
    cmd("backup-verify").arg("restore").arg(&mpath).arg("--to").arg(&root).expect(1);
    assert!(!t.path("escaped.json").exists());
    assert_eq!(names_in(&t.0), ["state", "tb"], "no staging directory or kept copy left");

    // An archive named outside the backup's directory is never opened.
    let mut m = good.clone();
    m["archive"]["file"] = "../state/config.json".into();
    write_resummed(&mpath, m);
    let r = cmd("backup-verify").arg("check").arg(&mpath).expect(1);
    assert_eq!(failed(&r), ["manifest"]);
    r.stderr_has(&["manifest names a file outside its directory"]);

    // The genuine manifest restores, through a symlink too: where the tree really lives.
    write_resummed(&mpath, good);
    let link = t.path("state-link");
    std::os::unix::fs::symlink(&root, &link).unwrap();
    cmd("backup-verify").arg("restore").arg(&mpath).arg("--to").arg(&link).ok();
    assert_eq!(std::fs::read_to_string(root.join("config.json")).unwrap(), r#"{"v": 1}"#);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
}

#[test]
fn trees_holding_what_a_restore_cannot_put_back_are_refused_and_leave_nothing() {
    use std::os::unix::ffi::OsStrExt;
    let t = TempDir::new();
    let root = t.path("state");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("a.json"), "{}").unwrap();
    let out = t.path("out");
    let create = |source: &Path| cmd("backup-verify").arg("create").arg(source).arg("--out").arg(&out);
    let fifo = |p: &Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a plain mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    };
    type Setup = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Setup, &[&str])> = vec![
        (
            "symlink out of the tree",
            Box::new(|r| std::os::unix::fs::symlink("/etc/passwd", r.join("passwd")).unwrap()),
            &["'passwd' is a symlink (to '/etc/passwd')", "a restore could not put it back"],
        ),
        (
            "symlink loop",
            Box::new(|r| {
                std::os::unix::fs::symlink("loop2", r.join("loop1")).unwrap();
                std::os::unix::fs::symlink("loop1", r.join("loop2")).unwrap();
            }),
            &["'loop1' is a symlink (to 'loop2')"],
        ),
        ("FIFO inside", Box::new(move |r| fifo(&r.join("pipe"))), &["'pipe' is a device, FIFO or socket"]),
        (
            "name that is not UTF-8",
            Box::new(|r| std::fs::write(r.join(std::ffi::OsStr::from_bytes(b"bad\xff.json")), "{}").unwrap()),
            &["is not UTF-8", "rename it"],
        ),
    ];
    for (what, setup, msg) in cases {
        let case = t.path(&format!("case-{}", what.replace(' ', "-")));
        std::fs::create_dir(&case).unwrap();
        std::fs::write(case.join("a.json"), "{}").unwrap();
        setup(&case);
        let r = create(&case).expect(65);
        r.stderr_has(msg);
        assert_eq!(r.stderr().lines().count(), 1, "{what}: one line\n{}", r.describe());
        assert!(names_in(&out).is_empty(), "{what}: nothing left in --out: {:?}", names_in(&out));
    }
    // A FIFO as the source: refused at once (opening it would wait for a writer forever).
    let pipe = t.path("source.fifo");
    fifo(&pipe);
    let started = Instant::now();
    create(&pipe).expect(65).stderr_has(&["is a FIFO, socket or device"]);
    assert!(started.elapsed() < Duration::from_secs(5));
    // --out inside the tree: the archive would read itself. Refused before --out is created.
    let inside = root.join("backups");
    cmd("backup-verify").arg("create").arg(&root).arg("--out").arg(&inside).expect(64).stderr_has(&["is inside it"]);
    assert!(!inside.exists());
}

#[test]
fn a_tree_file_that_changes_or_vanishes_during_the_backup_fails_it_with_75() {
    let t = TempDir::new();
    let root = t.path("state");
    std::fs::create_dir(&root).unwrap();
    // A big first file (read for a few seconds by the debug build; its archive is written as
    // it goes) and a small last one.
    let mut big = vec![0u8; 3 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(root.join("a-big.bin"), &big).unwrap();
    for (case, act) in [("vanishes", 0), ("changes", 1)] {
        std::fs::write(root.join("z-last.json"), "{}").unwrap();
        let out = t.path(&format!("out-{case}"));
        let child =
            cmd("backup-verify").arg("create").arg(&root).arg("--out").arg(&out).arg("--level").arg("1").spawn();
        // Once the archive has data, the walk is done and the big file is being read.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let grown = std::fs::read_dir(&out)
                .map(|rd| rd.flatten().any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false)))
                .unwrap_or(false);
            if grown {
                break;
            }
            assert!(Instant::now() < deadline, "create never started writing");
            std::thread::sleep(Duration::from_millis(2));
        }
        if act == 0 {
            std::fs::remove_file(root.join("z-last.json")).unwrap();
        } else {
            std::fs::OpenOptions::new().append(true).open(root.join("a-big.bin")).unwrap().write_all(b"more").unwrap();
        }
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(75), "{case}: {err}");
        let what = if act == 0 { "'z-last.json' disappeared" } else { "'a-big.bin' changed" };
        assert!(err.contains(what) && err.contains("freeze first") && err.contains("no backup was written"), "{err}");
        assert!(names_in(&out).is_empty(), "{case}: {:?}", names_in(&out));
        if act == 1 {
            std::fs::write(root.join("a-big.bin"), &big).unwrap();
        }
    }
}

#[test]
fn writes_that_fail_for_want_of_space_leave_no_backup_and_change_nothing() {
    let t = TempDir::new();
    let db = t.path("app.db");
    random_db(&db, 600); // ~620 KB
    let size = std::fs::metadata(&db).unwrap().len();
    let out = t.path("b");
    std::fs::create_dir(&out).unwrap();
    // The snapshot cannot be written (the gzip, smaller, is written after it: the tree case
    // below fails there).
    let r =
        run_with_file_limit("backup-verify", &[os("create"), db.as_os_str(), os("--out"), out.as_os_str()], size / 2);
    expect_code(&r, 74);
    r.stderr_has(&["write '", "disk I/O error (is the disk full?)"]);
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.describe());
    assert!(names_in(&out).is_empty(), "{:?}", names_in(&out));
    // restore: the verified copy cannot be written beside the target.
    let s = summary(&cmd("backup-verify").arg("create").arg(&db).arg("--out").arg(&out).ok());
    let m = s["manifest"].as_str().unwrap().to_string();
    let live = t.path("live");
    std::fs::create_dir(&live).unwrap();
    let target = live.join("app.db");
    sqlite_db(&target, "CREATE TABLE current (x); INSERT INTO current VALUES (1);");
    let before = tree_of(&live);
    let r = run_with_file_limit("backup-verify", &[os("restore"), os(&m), os("--to"), target.as_os_str()], size / 2);
    expect_code(&r, 74);
    r.stderr_has(&["nothing was changed"]);
    assert_eq!(tree_of(&live), before);
    // A tree backup: its archive cannot be written.
    let root = t.path("state");
    std::fs::create_dir(&root).unwrap();
    std::fs::copy(&db, root.join("blob.bin")).unwrap();
    let tout = t.path("tb");
    std::fs::create_dir(&tout).unwrap();
    let r = run_with_file_limit(
        "backup-verify",
        &[os("create"), root.as_os_str(), os("--out"), tout.as_os_str()],
        size / 2,
    );
    expect_code(&r, 74);
    r.stderr_has(&["File too large"]);
    assert!(names_in(&tout).is_empty(), "{:?}", names_in(&tout));
}

#[test]
fn restore_into_a_read_only_directory_changes_nothing() {
    let t = TempDir::new();
    let db = t.path("app.db");
    random_db(&db, 20);
    let s = summary(&cmd("backup-verify").arg("create").arg(&db).arg("--out").arg(t.path("b")).ok());
    let m = s["manifest"].as_str().unwrap().to_string();
    let ro = t.path("ro");
    std::fs::create_dir(&ro).unwrap();
    let target = ro.join("app.db");
    sqlite_db(&target, "CREATE TABLE current (x);");
    let before = tree_of(&ro);
    let bv = bin("backup-verify");
    // Root ignores permission bits: as root, restore runs as nobody (runuser), as the other
    // permission tests do (a mount namespace is not there in every container).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut c = if unsafe { libc::geteuid() } == 0 {
        // Backups are written private (0600 in a 0700 directory): nobody must read this one.
        assert!(Command::new("chmod").args(["-R", "a+rX"]).arg(t.path("b")).status().unwrap().success());
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(&bv);
        c
    } else {
        Command::new(&bv)
    };
    let o = c.arg("restore").arg(&m).arg("--to").arg(&target).output().expect("runuser (util-linux) runs");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(matches!(o.status.code(), Some(74) | Some(77)), "{:?}: {err}", o.status);
    assert!(err.contains("nothing was changed") && err.contains("the database's own directory"), "{err}");
    assert!(!err.contains("--tmp"), "restore has no --tmp: {err}");
    assert_eq!(tree_of(&ro), before);
}

#[test]
fn a_stale_wal_without_its_database_is_kept_aside_not_replayed_onto_the_restore() {
    let t = TempDir::new();
    let db = t.path("app.db");
    sqlite_db(&db, "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'backed up');");
    let s = summary(&cmd("backup-verify").arg("create").arg(&db).arg("--out").arg(t.path("b")).ok());
    // Another database's WAL, with commits in it, left where the restored file will go.
    let other = t.path("other.db");
    let w = Connection::open(&other).unwrap();
    w.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);",
    )
    .unwrap();
    sqlite_db(&other, "PRAGMA wal_checkpoint(TRUNCATE);");
    w.execute_batch("INSERT INTO t VALUES (2, 'stale wal')").unwrap();
    let live = t.path("live");
    std::fs::create_dir(&live).unwrap();
    std::fs::copy(t.path("other.db-wal"), live.join("app.db-wal")).unwrap();
    drop(w);
    let target = live.join("app.db");
    let r = cmd("backup-verify").arg("restore").arg(s["manifest"].as_str().unwrap()).arg("--to").arg(&target).ok();
    r.stderr_has(&["had a -wal, -shm or -journal but no database", "kept them aside"]);
    let rows: Vec<String> = first_column(&target, "SELECT v FROM t ORDER BY id");
    assert_eq!(rows, ["backed up"]);
    assert!(
        names_in(&live).iter().any(|n| n.starts_with("app.db.before-restore-") && n.ends_with("-wal")),
        "{:?}",
        names_in(&live)
    );
}

#[test]
fn concurrent_creates_into_one_directory_never_collide() {
    let t = TempDir::new();
    let db = t.path("app.db");
    random_db(&db, 200);
    let out = t.path("b");
    let children: Vec<_> =
        (0..4).map(|_| cmd("backup-verify").arg("create").arg(&db).arg("--out").arg(&out).spawn()).collect();
    let mut backups = vec![];
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let line: Value = serde_json::from_slice(o.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
        backups.push(line["manifest"].as_str().unwrap().to_string());
    }
    let mut unique = backups.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{backups:?}");
    assert_eq!(names_in(&out).len(), 8, "{:?}", names_in(&out));
    for m in &backups {
        cmd("backup-verify").arg("check").arg(m).ok();
    }
}

#[test]
fn a_writer_holding_an_open_transaction_neither_blocks_nor_leaks_into_the_backup() {
    let t = TempDir::new();
    let db = t.path("app.db");
    sqlite_db(
        &db,
        "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2);",
    );
    let w = Connection::open(&db).unwrap();
    w.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (3); DELETE FROM t WHERE id = 1;").unwrap();
    let started = Instant::now();
    let s = summary(&cmd("backup-verify").arg("create").arg(&db).arg("--out").arg(t.path("b")).ok());
    assert!(started.elapsed() < Duration::from_secs(8), "create waited for the writer");
    assert_eq!(s["rows"], 2);
    w.execute_batch("COMMIT").unwrap();
    // The backup is the committed state (1, 2), not the writer's.
    let target = t.path("restored.db");
    cmd("backup-verify").arg("restore").arg(s["manifest"].as_str().unwrap()).arg("--to").arg(&target).ok();
    let ids: Vec<i64> = first_column(&target, "SELECT id FROM t ORDER BY id");
    assert_eq!(ids, [1, 2]);
}

#[test]
fn tree_backups_are_listed_as_trees_and_rotated_by_keep() {
    let t = TempDir::new();
    let (root, first) = tree_backup(&t);
    let out = t.path("tb");
    let list = cmd("backup-verify").arg("list").arg(&out).ok().json_lines();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0]["kind"].as_str(), list[0]["files"].as_u64()), (Some("tree"), Some(3)), "{list:?}");
    assert!(list[0].get("error").is_none(), "{list:?}");
    assert_eq!(list[0]["source"], root.canonicalize().unwrap().to_str().unwrap());
    let r = cmd("backup-verify").arg("create").arg(&root).arg("--out").arg(&out).args(["--keep", "1"]).ok();
    let s = summary(&r);
    assert_eq!(s["removed"].as_array().unwrap().len(), 1, "{}", r.describe());
    assert!(!first.exists());
    assert_eq!(names_in(&out).len(), 2, "the new backup's archive and manifest only: {:?}", names_in(&out));
    // An archive without its manifest is warned about.
    std::fs::write(out.join("state-20000101T000000Z.tree.gz"), b"partial").unwrap();
    cmd("backup-verify").arg("list").arg(&out).ok().stderr_has(&["'state-20000101T000000Z.tree.gz' has no manifest"]);
}

// ---------------------------------------------------------------------------------------------
// pg-partition

const LOGS: &str = "(id bigint NOT NULL, at timestamptz NOT NULL, note text) PARTITION BY RANGE (at)";

fn pp(pg: &Pg, args: &[&str]) -> Cmd {
    cmd("pg-partition").args(args).args(["--db", &pg.url])
}

fn partitions(pg: &Pg, table: &str) -> Vec<String> {
    pg.rows(&format!(
        "SELECT n.nspname || '.' || c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = to_regclass('{}') ORDER BY c.relname",
        table.replace('\'', "''")
    ))
}

#[test]
fn hostile_table_names_get_safe_distinct_names_and_archives() {
    let pg = Pg::new();
    let quoted = r#""Sch'e""ma"."Ta'b""le""#;
    pg.exec(&format!("CREATE SCHEMA \"Sch'e\"\"ma\"; CREATE TABLE {quoted} {LOGS}"));
    pp(&pg, &["ensure", quoted, "--from", "2024-12", "--to", "2025-01"]).ok();
    assert_eq!(partitions(&pg, quoted), ["Sch'e\"ma.Ta'b\"le_2024_12", "Sch'e\"ma.Ta'b\"le_2025_01"]);
    // Unquoted names fold to lower case as in SQL; quoted upper case is another table.
    pg.exec(&format!("CREATE TABLE \"UPPER\" {LOGS}; CREATE TABLE upper {LOGS}"));
    pp(&pg, &["ensure", "UPPER", "--from", "2025-01", "--to", "2025-01"]).ok();
    pp(&pg, &["ensure", "\"UPPER\"", "--from", "2025-02", "--to", "2025-02"]).ok();
    assert_eq!(partitions(&pg, "upper"), ["public.upper_2025_01"]);
    assert_eq!(partitions(&pg, "\"UPPER\""), ["public.UPPER_2025_02"]);
    // 63 bytes of two-byte characters (the longest name PostgreSQL keeps): daily names across
    // a leap day are cut at a character boundary, hashed, distinct and stable.
    let long = format!("{}x", "é".repeat(31));
    assert_eq!(long.len(), 63);
    let t = format!("\"{long}\"");
    pg.exec(&format!("CREATE TABLE {t} {LOGS}"));
    let daily = ["ensure", &t, "--interval", "daily", "--from", "2024-02-28", "--to", "2024-03-01"];
    pp(&pg, &daily).ok();
    pp(&pg, &daily).ok();
    let got = partitions(&pg, &t);
    assert_eq!(got.len(), 3, "{got:?}");
    for (name, day) in got.iter().zip(["_2024_02_28", "_2024_02_29", "_2024_03_01"]) {
        let name = name.strip_prefix("public.").unwrap();
        assert!(name.len() <= 63 && name.ends_with(day) && name.starts_with("ééé"), "{name}");
    }
    // Hash partitioning is refused by name.
    pg.exec("CREATE TABLE hashed (id int NOT NULL, at timestamptz) PARTITION BY HASH (id)");
    pp(&pg, &["ensure", "hashed"]).expect(65).stderr_has(&["partitioned by HASH (id)", "range partitioning only"]);

    // Archives of the quoted table: the file name carries schema and name as they are.
    pg.exec(&format!("INSERT INTO {quoted} VALUES (1, '2024-12-31 23:59:59.999999+00', 'o''hare \"x\"')"));
    let dir = TempDir::new();
    pp(&pg, &["retain", quoted, "--keep", "0", "--drop", "--archive", &dir.str(""), "--now", "2025-01-05T00:00:00Z"])
        .ok();
    assert_eq!(partitions(&pg, quoted), ["Sch'e\"ma.Ta'b\"le_2025_01"]);
    let stem = "Sch'e\"ma.Ta'b\"le_2024_12";
    assert_eq!(
        names_in(&dir.0),
        [format!("{stem}.manifest.json"), format!("{stem}.ndjson.gz"), format!("{stem}.ndjson.gz.sha256")]
    );
    let m = read_json(&dir.path(&format!("{stem}.manifest.json")));
    assert_eq!(m["table"], "Sch'e\"ma.Ta'b\"le");
}

/// A table with every kind of value whose text form depends on session settings.
const SETTINGS_TABLE: &str = "CREATE TABLE ev (id int NOT NULL, at timestamptz NOT NULL, naive timestamp, day date, \
    span interval, f8 float8[], b bytea[], stamps timestamptz[]) PARTITION BY RANGE (at)";

const SETTINGS_ROWS: &str = "INSERT INTO ev VALUES
    (1, '2024-03-31 00:59:59.999999+00', '2024-03-31 02:30:00', '2024-02-29', '-1 days +02:03:04', '{0.1,0.30000000000000004}', '{\"\\\\x00ff\"}', '{\"2024-03-31 01:00:00+00\"}'),
    (2, '2024-03-31 01:00:00+00', '2024-10-27 02:30:00', '2024-03-31', '1 mon -1 days', '{1e-300}', NULL, NULL)";

/// The archive of ev_2024_03, rows sorted, the end record last.
fn archive_lines(pg: &Pg, env: &[(&str, &str)]) -> Vec<String> {
    let dir = TempDir::new();
    let mut c = pp(pg, &["ensure", "ev", "--from", "2024-03", "--to", "2024-11"]);
    for (k, v) in env {
        c = c.env(k, v);
    }
    c.ok();
    pg.exec(SETTINGS_ROWS);
    let mut c =
        pp(pg, &["retain", "ev", "--keep", "7", "--drop", "--archive", &dir.str(""), "--now", "2024-11-15T00:00:00Z"]);
    for (k, v) in env {
        c = c.env(k, v);
    }
    c.ok();
    let mut text = String::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(std::fs::File::open(dir.path("ev_2024_03.ndjson.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let end = lines.pop().unwrap();
    lines.sort();
    lines.push(end);
    lines
}

#[test]
fn odd_session_settings_change_neither_bounds_nor_archives() {
    // Reference: the cluster's defaults.
    let plain = Pg::new();
    plain.exec(SETTINGS_TABLE);
    let want = archive_lines(&plain, &[]);
    assert_eq!(
        want[0],
        r#"{"id":1,"at":"2024-03-31T00:59:59.999999Z","naive":"2024-03-31T02:30:00Z","day":"2024-02-29","span":"-1 days +02:03:04","f8":[0.1,0.30000000000000004],"b":["\\x00ff"],"stamps":["2024-03-31T01:00:00+00:00"]}"#
    );
    assert_eq!(want.len(), 3);

    // The database's settings (as a role's would be) and PGOPTIONS, all hostile.
    let odd = Pg::new();
    odd.exec(&format!(
        "ALTER DATABASE {} SET TimeZone = 'America/St_Johns'; ALTER DATABASE {0} SET DateStyle = 'SQL, DMY';
         ALTER DATABASE {0} SET IntervalStyle = 'sql_standard'; ALTER DATABASE {0} SET extra_float_digits = -15;
         ALTER DATABASE {0} SET bytea_output = 'escape';",
        odd.name
    ));
    odd.exec(SETTINGS_TABLE);
    let env = [("PGOPTIONS", "-c TimeZone=Pacific/Chatham -c DateStyle=German -c IntervalStyle=iso_8601")];
    let got = archive_lines(&odd, &env);
    assert_eq!(got, want);
    // Bounds are UTC midnights whatever the zones' DST changes (St John's and Chatham both
    // change their clocks within the range).
    let mut c = odd.client();
    c.batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'").unwrap();
    let bounds: Vec<String> = c
        .query(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'ev'::regclass ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(bounds.len(), 8);
    for b in &bounds {
        assert!(b.matches("-01 00:00:00+00").count() == 2, "{b}");
    }
    // date and timestamp keys under the same settings, daily across St John's and Chatham's
    // spring-forward days and a leap day: plain midnights, and rows land by their own value.
    odd.exec("CREATE TABLE d (day date NOT NULL) PARTITION BY RANGE (day); CREATE TABLE ts (at timestamp NOT NULL) PARTITION BY RANGE (at)");
    for t in ["d", "ts"] {
        let mut c = pp(&odd, &["ensure", t, "--interval", "daily", "--from", "2024-02-28", "--to", "2024-03-11"]);
        for (k, v) in env {
            c = c.env(k, v);
        }
        c.env("PGTZ", "Asia/Kathmandu").ok();
    }
    odd.exec("INSERT INTO d VALUES ('2024-02-29'), ('2024-03-10'); INSERT INTO ts VALUES ('2024-03-10 02:30:00'), ('2024-03-09 23:59:59.999999')");
    let placed = |sql: &str| {
        let mut c = odd.client();
        c.batch_execute("SET DateStyle = 'ISO'").unwrap();
        c.query(sql, &[]).unwrap().iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>()
    };
    assert_eq!(
        placed("SELECT tableoid::regclass::text || '|' || day::text FROM d ORDER BY day"),
        ["d_2024_02_29|2024-02-29", "d_2024_03_10|2024-03-10"]
    );
    assert_eq!(
        placed("SELECT tableoid::regclass::text || '|' || at::text FROM ts ORDER BY at"),
        ["ts_2024_03_09|2024-03-09 23:59:59.999999", "ts_2024_03_10|2024-03-10 02:30:00"]
    );
    let d_bounds = placed(
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'ts'::regclass AND c.relname = 'ts_2024_03_10'",
    );
    assert_eq!(d_bounds, ["FOR VALUES FROM ('2024-03-10 00:00:00') TO ('2024-03-11 00:00:00')"]);
}

#[test]
fn a_role_statement_timeout_does_not_cut_a_run_short() {
    let pg = Pg::new();
    pg.exec(&format!("CREATE TABLE logs {LOGS}"));
    // Every partition created takes 0.6 s, past the database's 300 ms statement timeout.
    pg.exec(
        "CREATE FUNCTION slow_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.6); END $$;
         CREATE EVENT TRIGGER slow_ddl ON ddl_command_end WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION slow_ddl();",
    );
    pg.exec(&format!(
        "ALTER DATABASE {0} SET statement_timeout = '300ms'; ALTER DATABASE {0} SET idle_in_transaction_session_timeout = '300ms'",
        pg.name
    ));
    pp(&pg, &["ensure", "logs", "--from", "2024-01", "--to", "2024-02"]).ok();
    assert_eq!(partitions(&pg, "logs").len(), 2);
}

#[test]
fn an_archive_that_cannot_be_written_drops_nothing_and_leaves_no_file() {
    let pg = Pg::new();
    pg.exec(&format!("CREATE TABLE logs {LOGS}"));
    pp(&pg, &["ensure", "logs", "--from", "2024-01", "--to", "2024-03"]).ok();
    pg.exec(
        "INSERT INTO logs SELECT g, '2024-01-01'::timestamptz + g * interval '1 second', md5(g::text) || md5((g * 7)::text)
         FROM generate_series(1, 20000) g",
    );
    let dir = TempDir::new();
    let archive = dir.str("");
    let args = ["retain", "logs", "--keep", "1", "--drop", "--archive", &archive, "--now", "2024-03-10T00:00:00Z"];
    let mut argv: Vec<&std::ffi::OsStr> = args.iter().map(os).collect();
    argv.extend([os("--db"), os(&pg.url)]);
    let r = run_with_file_limit("pg-partition", &argv, 64 << 10);
    expect_code(&r, 74);
    r.stderr_has(&["write archive", "logs_2024_01.ndjson.gz", "File too large", "nothing was dropped"]);
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.describe());
    assert!(names_in(&dir.0).is_empty(), "{:?}", names_in(&dir.0));
    assert_eq!(partitions(&pg, "logs").len(), 3);
    assert_eq!(pg.count("logs"), 20000);
}

#[test]
fn a_partition_locked_by_another_session_times_out_with_75_and_drops_nothing() {
    let pg = Pg::new();
    pg.exec(&format!("CREATE TABLE logs {LOGS}"));
    pp(&pg, &["ensure", "logs", "--from", "2024-01", "--to", "2024-04"]).ok();
    pg.exec("INSERT INTO logs SELECT g, '2024-01-01'::timestamptz + g * interval '1 day', 'n' FROM generate_series(0, 100) g");
    let retain = |dir: &TempDir| {
        pp(&pg, &["retain", "logs", "--keep", "1", "--drop", "--lock-timeout", "1", "--now", "2024-04-10T00:00:00Z"])
            .args(["--archive", &dir.str("")])
    };
    // A writer in an open transaction on the oldest partition: the archive's SHARE lock waits.
    let mut writer = pg.client();
    writer.batch_execute("BEGIN; INSERT INTO logs VALUES (999, '2024-01-15 00:00:00+00', 'open')").unwrap();
    let dir = TempDir::new();
    let started = Instant::now();
    let r = retain(&dir).expect(75);
    assert!(started.elapsed() < Duration::from_secs(15));
    r.stderr_has(&["lock partition 'logs_2024_01'", "lock timeout", "nothing was dropped"]);
    assert!(names_in(&dir.0).is_empty(), "{:?}", names_in(&dir.0));
    writer.batch_execute("ROLLBACK").unwrap();
    // ensure with rows to move out of a DEFAULT partition that a writer holds: the same.
    pg.exec("CREATE TABLE logs_default PARTITION OF logs DEFAULT; INSERT INTO logs VALUES (7, '2024-06-02 00:00:00+00', 'd')");
    let mut writer = pg.client();
    writer.batch_execute("BEGIN; INSERT INTO logs VALUES (8, '2030-01-01 00:00:00+00', 'open')").unwrap();
    pp(&pg, &["ensure", "logs", "--from", "2024-06", "--to", "2024-06", "--lock-timeout", "1"])
        .expect(75)
        .stderr_has(&["lock the default partition 'logs_default'", "lock timeout", "nothing was changed"]);
    writer.batch_execute("ROLLBACK").unwrap();
    assert_eq!(pg.count("logs_default"), 1);
    pg.exec("DROP TABLE logs_default");
    // A reader holding the second partition: both archives are written and verified, the drop
    // then times out; nothing is dropped, and the message says the archives stay.
    let mut reader = pg.client();
    reader.batch_execute("BEGIN; SELECT count(*) FROM logs_2024_02").unwrap();
    let dir = TempDir::new();
    let r = retain(&dir).expect(75);
    r.stderr_has(&["lock timeout", "nothing was dropped", "2 verified archive(s) already written stay"]);
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.describe());
    assert_eq!(names_in(&dir.0).len(), 6);
    reader.batch_execute("COMMIT").unwrap();
    assert_eq!(partitions(&pg, "logs").len(), 4);
    assert_eq!(pg.count("logs"), 101);
    // Once the lock is gone the run succeeds (a second copy of the archives, never overwriting).
    retain(&dir).ok();
    assert_eq!(partitions(&pg, "logs"), ["public.logs_2024_03", "public.logs_2024_04"]);
    assert_eq!(names_in(&dir.0).len(), 12);
}

#[test]
fn hostile_numbers_are_usage_errors_never_panics() {
    let pg = Pg::new();
    pg.exec(&format!("CREATE TABLE logs {LOGS}"));
    for args in [
        &["ensure", "logs", "--wait", "1e300"][..],
        &["ensure", "logs", "--wait", "NaN"],
        &["ensure", "logs", "--ahead", "9223372036854775807"],
        &["ensure", "logs", "--ahead", "-1"],
        &["retain", "logs", "--drop", "--keep", "9223372036854775807"],
        &["ensure", "logs", "--lock-timeout", "99999999999999"],
        &["ensure", "logs", "--now", "9999-12-31T00:00:00Z"],
        &["ensure", "logs", "--from", "9999-12"],
        &["ensure", "logs", "--now", "not a time"],
    ] {
        let r = pp(&pg, args).expect(64);
        assert_eq!(r.stderr().lines().count(), 2, "one line and the --help hint\n{}", r.describe());
    }
    assert!(partitions(&pg, "logs").is_empty());
    // The largest accepted values work (or say why not) without overflow.
    pp(&pg, &["retain", "logs", "--drop", "--keep", "100000", "--interval", "yearly"]).ok();
    pp(&pg, &["ensure", "logs", "--ahead", "100000", "--interval", "daily"]).expect(64).stderr_has(&["--limit"]);
}

/// The first column of every row `sql` returns from the SQLite file `db`.
fn first_column<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> Vec<T> {
    let c = Connection::open(db).unwrap();
    let mut st = c.prepare(sql).unwrap();
    let rows = st.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect();
    rows
}
