//! The sources against hostile input: SQLite files that are empty, corrupt, locked by a log or
//! a hot journal, unreadable, with odd tables and names (sqlite-dump and count-check's sqlite:
//! side), and Firestore documents with odd collection ids, field names and sizes (fs-export,
//! on the emulator). Each bad input is a one-line error with its exit code, never rows read
//! past what the source holds.

use crate::fs_export::Fs;
use crate::harness::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// sqlite-dump ARGS as a user the permission bits apply to (nobody, when we are root).
fn dump_unprivileged(args: &[&str]) -> std::process::Output {
    let mut c = if euid() == 0 {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(bin("sqlite-dump"));
        c
    } else {
        std::process::Command::new(bin("sqlite-dump"))
    };
    c.args(args).output().unwrap()
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Copies `files` of `from` into `to` while `conn` is mid-write, as a crash or a backup
/// taken by `cp` would leave them.
fn copy_files(from: &Path, to: &Path, files: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for f in files {
        std::fs::copy(from.join(f), to.join(f)).unwrap_or_else(|e| panic!("copy {f}: {e}"));
    }
}

#[test]
fn files_that_are_not_databases_or_cannot_be_read() {
    let t = TempDir::new();
    chmod(&t.0, 0o755);
    std::fs::write(t.path("empty.db"), b"").unwrap();
    cmd("sqlite-dump")
        .args([&t.str("empty.db"), "t"])
        .expect(66)
        .stderr_has(&["table 't' does not exist in '", "the file is empty (0 bytes"]);
    std::fs::write(t.path("text.db"), b"hello, this is not SQLite at all\n".repeat(200)).unwrap();
    let r = cmd("sqlite-dump").args([&t.str("text.db"), "t"]).expect(65);
    assert_eq!(r.stderr(), format!("sqlite-dump: open '{}': file is not a database\n", t.str("text.db")));
    cmd("sqlite-dump").arg(t.str("")).arg("t").expect(64).stderr_has(&["is a directory"]);
    // A FIFO (which would block the open) or a device is refused unopened.
    assert!(std::process::Command::new("mkfifo").arg(t.path("fifo.db")).status().unwrap().success());
    std::os::unix::fs::symlink("/dev/zero", t.path("zero.db")).unwrap();
    for f in ["fifo.db", "zero.db"] {
        cmd("sqlite-dump").args([&t.str(f), "t"]).expect(65).stderr_has(&["is a FIFO, socket or device"]);
        cmd("count-check")
            .arg(format!("sqlite:{}:t", t.str(f)))
            .arg("ndjson:/dev/null")
            .expect(65)
            .stderr_has(&["is a FIFO, socket or device"]);
    }
    // A database cut short, and one with a page overwritten in the middle of a table: the
    // rows before the damage are not passed off as the table (no end record), and the
    // message says where reading stopped.
    let big = t.path("big.db");
    sqlite_db(
        &big,
        "CREATE TABLE n (i INTEGER PRIMARY KEY, s TEXT);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000)
         INSERT INTO n SELECT x, printf('%050d', x) FROM c;",
    );
    let bytes = std::fs::read(&big).unwrap();
    std::fs::write(t.path("cut.db"), &bytes[..bytes.len() / 3]).unwrap();
    cmd("sqlite-dump").args([&t.str("cut.db"), "n"]).expect(65).stderr_has(&["database disk image is malformed"]);
    let mut bad = bytes.clone();
    bad[4096 * 20..4096 * 20 + 64].fill(0xff);
    std::fs::write(t.path("bad.db"), &bad).unwrap();
    let r = cmd("sqlite-dump").args([&t.str("bad.db"), "n"]).expect(65);
    r.stderr_has(&["read table 'n' after ", " rows: database disk image is malformed"]);
    assert!(!r.stdout().contains("$end"), "a damaged table got an end record");
    // Odd characters in the path are the path, not URI syntax.
    let dir = t.path("dir with 'q' \"dq\" sp");
    std::fs::create_dir(&dir).unwrap();
    let odd = dir.join("a?b#c%d&mode=rw.db");
    std::fs::copy(&big, &odd).unwrap();
    let list = cmd("sqlite-dump").arg("--list").arg(&odd).ok().json_lines();
    assert_eq!(list, vec![json!({"table": "n", "rows": 20000})]);
    // `//tmp/x` is a path, not the URI authority `tmp`.
    let list = cmd("sqlite-dump").arg("--list").arg(format!("/{}", big.display())).ok().json_lines();
    assert_eq!(list, vec![json!({"table": "n", "rows": 20000})]);
    // No permission to read the file, or to enter its directory: 77, not "no such file".
    let locked = t.path("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::copy(&big, locked.join("app.db")).unwrap();
    chmod(&locked.join("app.db"), 0o600);
    if euid() != 0 {
        chmod(&locked.join("app.db"), 0o000);
    }
    let db = locked.join("app.db").display().to_string();
    let o = dump_unprivileged(&[&db, "n"]);
    assert_eq!(o.status.code(), Some(77), "{}", stderr_of(&o));
    assert_eq!(stderr_of(&o), format!("sqlite-dump: open '{db}': Permission denied\n"));
    chmod(&locked.join("app.db"), 0o644);
    chmod(&locked, 0o700);
    if euid() != 0 {
        chmod(&locked, 0o000);
    }
    let o = dump_unprivileged(&[&db, "n"]);
    chmod(&locked, 0o755);
    assert_eq!(o.status.code(), Some(77), "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("Permission denied"), "{}", stderr_of(&o));
}

#[test]
fn a_log_or_journal_is_never_read_past() {
    let t = TempDir::new();
    chmod(&t.0, 0o755);
    // A WAL database with a commit only in its log, copied while open (no -shm comes along).
    let live = t.path("live");
    std::fs::create_dir(&live).unwrap();
    let c = rusqlite::Connection::open(live.join("app.db")).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE x (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO x VALUES (1, 'in the file');
         PRAGMA wal_checkpoint(TRUNCATE); INSERT INTO x VALUES (2, 'only in the log');",
    )
    .unwrap();
    let ro = t.path("ro");
    copy_files(&live, &ro, &["app.db", "app.db-wal"]);
    drop(c);
    for f in std::fs::read_dir(&ro).unwrap() {
        chmod(&f.unwrap().path(), 0o644);
    }
    let db = ro.join("app.db").display().to_string();
    let before = std::fs::read(&db).unwrap();
    // Its directory cannot be written, so SQLite cannot build the log's index: reading the
    // file as immutable would silently lose row 2. Refused (77), nothing on stdout.
    chmod(&ro, 0o555);
    let o = dump_unprivileged(&[&db, "x"]);
    assert_eq!(o.status.code(), Some(77), "{}", stderr_of(&o));
    assert!(o.stdout.is_empty(), "{}", String::from_utf8_lossy(&o.stdout));
    let err = stderr_of(&o);
    assert!(err.contains(&format!("its write-ahead log '{db}-wal' holds 4152 bytes")), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Where the index can be made, both rows are read; the log itself is never folded in.
    chmod(&ro, 0o777);
    let o = dump_unprivileged(&[&db, "x"]);
    chmod(&ro, 0o755);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"v\":\"only in the log\""));
    assert_eq!(std::fs::read(&db).unwrap(), before, "the database file changed");

    // A rollback journal left by a write cut off midway ("hot"): the file holds half a
    // transaction until SQLite rolls it back, which a read-only reader may not do.
    let w = t.path("w");
    std::fs::create_dir(&w).unwrap();
    sqlite_db(
        &w.join("app.db"),
        "CREATE TABLE n (i INTEGER PRIMARY KEY, s TEXT);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000)
         INSERT INTO n SELECT x, printf('%050d', x) FROM c;",
    );
    // In a process of its own (SQLite's page cache is shared within one): a cache of 10
    // pages spills the update into the file before commit, and `cp` copies that moment.
    let hot = t.path("hot");
    std::fs::create_dir(&hot).unwrap();
    let (w_s, hot_s) = (w.display(), hot.display());
    let script = format!(
        "PRAGMA cache_size = 10;\nBEGIN;\nUPDATE n SET s = 'HALF';\n\
         .system cp {w_s}/app.db {w_s}/app.db-journal {hot_s}/\nROLLBACK;\n"
    );
    let mut child = std::process::Command::new("sqlite3")
        .arg(w.join("app.db"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run sqlite3 (tests/run installs it)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    for f in std::fs::read_dir(&hot).unwrap() {
        chmod(&f.unwrap().path(), 0o644);
    }
    let db = hot.join("app.db").display().to_string();
    let before = std::fs::read(&db).unwrap();
    assert!(
        String::from_utf8_lossy(&before).contains("HALF"),
        "the test needs a half-written file: {:?}",
        std::fs::read_dir(&hot)
            .unwrap()
            .map(|f| {
                let f = f.unwrap();
                (f.file_name(), f.metadata().unwrap().len())
            })
            .collect::<Vec<_>>()
    );
    let r = cmd("sqlite-dump").args([&db, "n"]).expect(75);
    r.stderr_has(&[&format!("'{db}-journal' is a hot journal"), "open it once with the application"]);
    assert!(r.stdout().is_empty());
    chmod(&hot, 0o555);
    let o = dump_unprivileged(&[&db, "n"]);
    chmod(&hot, 0o755);
    assert_eq!(o.status.code(), Some(75), "{}", stderr_of(&o));
    assert!(o.stdout.is_empty(), "half a transaction was dumped");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the database file changed");
    cmd("count-check").arg(format!("sqlite:{db}:n")).arg("ndjson:/dev/null").expect(75);
}

#[test]
fn tables_views_virtual_tables_and_names() {
    let t = TempDir::new();
    let db = t.str("k.db");
    sqlite_db(
        &t.path("k.db"),
        "CREATE TABLE Users (Id INTEGER PRIMARY KEY, Name TEXT); INSERT INTO Users VALUES (1, 'ann');
         CREATE VIEW active AS SELECT * FROM Users;
         CREATE VIRTUAL TABLE docs USING fts5(title, body); INSERT INTO docs VALUES ('t', 'b');
         CREATE TABLE \"a/b\" (x); INSERT INTO \"a/b\" VALUES (1);
         CREATE TABLE a_b (x); INSERT INTO a_b VALUES (2);
         CREATE TABLE \"a%2Fb\" (x); INSERT INTO \"a%2Fb\" VALUES (3);
         CREATE TABLE e (\"$end\"); INSERT INTO e VALUES (x'00');",
    );
    // FTS5 keeps its rows in shadow tables (docs_data, docs_idx ...): not tables of their own.
    let list = cmd("sqlite-dump").args(["--list", &db]).ok().json_lines();
    let names: Vec<&str> = list.iter().map(|l| l["table"].as_str().unwrap()).collect();
    assert_eq!(names, ["Users", "a%2Fb", "a/b", "a_b", "docs", "e"]);
    let rows = cmd("sqlite-dump").args([&db, "docs"]).ok().json_lines();
    assert_eq!(rows[0], json!({"title": "t", "body": "b"}));
    // SQLite's names are case-blind: as in SQL, `users` is the table Users.
    let rows = cmd("sqlite-dump").args([&db, "users", "--columns", "name,ID"]).ok().json_lines();
    assert_eq!(rows[0], json!({"Name": "ann", "Id": 1}));
    assert_eq!(rows[1]["$end"]["table"], json!("Users"));
    cmd("sqlite-dump").args([&db, "users", "--columns", "name,Name"]).expect(64).stderr_has(&["'Name' twice"]);
    cmd("sqlite-dump")
        .args([&db, "active"])
        .expect(66)
        .stderr_has(&["table 'active' does not exist in '", "'active' is a view, not a table"]);
    cmd("sqlite-dump").args([&db, "nope"]).expect(66).stderr_has(&["(it has: Users, a%2Fb, a/b, a_b, docs, e)"]);
    // A row of `$end` alone would read as the end record.
    cmd("sqlite-dump").args([&db, "e"]).expect(65).stderr_has(&["its only column is '$end'"]);
    cmd("sqlite-dump").args([&db, "Users", "--columns", "$table"]).expect(64);
    rusqlite::Connection::open(&db).unwrap().execute_batch("DROP TABLE e").unwrap();
    // --all: one file per table, names that differ only by '/' or '%' apart; no shadow tables.
    let out = t.str("out");
    let all = cmd("sqlite-dump").args(["--all", "--out-dir", &out, &db]).ok().json_lines();
    let files: Vec<&str> = all.iter().map(|l| l["file"].as_str().unwrap().rsplit('/').next().unwrap()).collect();
    assert_eq!(files, ["Users.ndjson", "a%252Fb.ndjson", "a%2Fb.ndjson", "a_b.ndjson", "docs.ndjson"]);
    for (file, x) in [("a%252Fb.ndjson", 3), ("a%2Fb.ndjson", 1), ("a_b.ndjson", 2)] {
        let text = std::fs::read_to_string(t.path(&format!("out/{file}"))).unwrap();
        assert!(text.starts_with(&format!("{{\"x\":{x}}}\n")), "{file}: {text}");
    }
    // Names PostgreSQL would cut short or refuse: --ddl writes them, and warns.
    let long = "é".repeat(40);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&format!("CREATE TABLE l (\"{long}\" TEXT, \"\" INT)"))
        .unwrap();
    cmd("sqlite-dump").args(["--ddl", &db, "l"]).ok().stderr_has(&[
        &format!(
            "warning: table 'l', column '{long}': 80 bytes, and PostgreSQL keeps 63: it would be '{}'",
            "é".repeat(31)
        ),
        "warning: table 'l', column '': PostgreSQL has no empty names",
    ]);
    // A virtual table of an extension this build lacks: named, 65.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA writable_schema = ON;
         INSERT INTO sqlite_master VALUES ('table', 'geo', 'geo', 0, 'CREATE VIRTUAL TABLE geo USING spatial(a)');",
    )
    .unwrap();
    drop(c);
    cmd("sqlite-dump")
        .args([&db, "geo"])
        .expect(65)
        .stderr_has(&["table 'geo': no such module: spatial (a virtual table of a SQLite extension"]);
    // --list still lists every table: that one without a count, saying why, and a warning.
    let listed = cmd("sqlite-dump").args(["--list", &db]).ok();
    listed.stderr_has(&["warning: geo: cannot be read, so not counted: no such module: spatial"]);
    let lines = listed.json_lines();
    let geo = lines.iter().find(|l| l["table"] == "geo").expect("geo listed");
    assert!(geo["rows"].is_null() && geo["error"].as_str().unwrap().contains("no such module: spatial"), "{geo}");
    let after: Vec<&str> = lines.iter().filter_map(|l| l["table"].as_str()).filter(|t| *t > "geo").collect();
    assert!(!after.is_empty() && lines.iter().filter(|l| l["table"] != "geo").all(|l| l["rows"].is_u64()), "{lines:?}");
}

#[test]
fn count_check_reads_hostile_sqlite_as_sqlite_dump_writes_it() {
    let t = TempDir::new();
    let db = t.str("v.db");
    sqlite_db(
        &t.path("v.db"),
        "CREATE TABLE \"we\"\"ird ü\" (\"k\"\"ey\" TEXT PRIMARY KEY, \"select\", \"a b\" BLOB) WITHOUT ROWID;
         INSERT INTO \"we\"\"ird ü\" VALUES ('a', 1, x'00'), ('b', 'text', NULL), ('c', 1.5, x''),
           ('d', CAST(x'ff41' AS TEXT), 'x'), ('e', 9223372036854775807, NULL), ('f', -9223372036854775808, NULL),
           ('g', 1e308 * 10, NULL), ('h', -0.0, NULL), ('i', CAST(x'610062' AS TEXT), zeroblob(70000)),
           ('j', 0.0 / 0.0, 'NaN is stored as NULL');",
    );
    let table = "we\"ird ü";
    let stream = cmd("sqlite-dump").args(["--invalid-text", "bytes", &db, table]).ok();
    let lines = stream.json_lines();
    assert_eq!(lines.len(), 11);
    assert_eq!(lines[3]["select"], json!({"$base64": true, "encoded": "/0E="}));
    assert_eq!(lines[7]["select"].to_string(), "-0.0");
    assert_eq!(lines[9]["select"], Value::Null);
    std::fs::write(t.path("v.ndjson"), stream.stdout()).unwrap();
    let side = format!("sqlite:{db}:{table}");
    let full = cmd("count-check").args(["--full", &side, &format!("ndjson:{}", t.str("v.ndjson"))]).ok();
    let report: Value = serde_json::from_str(full.stdout().lines().next().unwrap()).unwrap();
    assert_eq!((report["compared"].clone(), report["same"].clone()), (json!(10), json!(10)), "{report}");
    // One value changed in the stream is found, by its key.
    std::fs::write(t.path("w.ndjson"), stream.stdout().replace("\"select\":1.5", "\"select\":1.25")).unwrap();
    cmd("count-check")
        .args(["--full", &side, &format!("ndjson:{}", t.str("w.ndjson"))])
        .expect(1)
        .stderr_has(&["changed {\"k\\\"ey\":\"c\"}: select: 1.5 → 1.25"]);
    // The table named in another case, as SQLite finds it.
    cmd("count-check").arg(format!("sqlite:{db}:WE\"IRD ü")).arg(format!("ndjson:{}", t.str("v.ndjson"))).ok();
}

#[test]
fn count_check_compares_generated_columns_only_where_the_destination_has_them() {
    let t = TempDir::new();
    let db = t.str("g.db");
    sqlite_db(
        &t.path("g.db"),
        "CREATE TABLE g (id INTEGER PRIMARY KEY, v TEXT, shout TEXT AS (upper(v)) VIRTUAL,
           twice INTEGER GENERATED ALWAYS AS (id * 2) STORED);
         INSERT INTO g (id, v) VALUES (1, 'a'), (2, 'b');",
    );
    let side = format!("sqlite:{db}:g");
    // sqlite-dump leaves them out of the stream; count-check then leaves them out too.
    let dump = cmd("sqlite-dump").args([&db, "g"]).ok();
    std::fs::write(t.path("g.ndjson"), &dump.out.stdout).unwrap();
    cmd("count-check").args(["--full", &side, &format!("ndjson:{}", t.str("g.ndjson"))]).ok();
    // A table without them: the natural load, which holds.
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE g (id bigint PRIMARY KEY, v text); CREATE TABLE h (id bigint PRIMARY KEY, v text, shout text)",
    );
    cmd("pg-load").args(["--db", &pg.url, "g"]).stdin(dump.out.stdout.clone()).ok();
    cmd("count-check").args(["--db", &pg.url, "--full", &side, "pg:g"]).ok();
    // One that has a column of the name: compared, so a wrong value is found.
    let with = cmd("sqlite-dump").args(["--include-generated", "--columns", "id,v,shout", &db, "g"]).ok();
    cmd("pg-load").args(["--db", &pg.url, "h"]).stdin(with.out.stdout).ok();
    pg.exec("UPDATE h SET shout = 'wrong' WHERE id = 2");
    cmd("count-check")
        .args(["--db", &pg.url, "--full", &side, "pg:h"])
        .expect(1)
        .stderr_has(&["changed {\"id\":2}: shout: \"B\" → \"wrong\""]);
}

#[test]
fn firestore_odd_collections_fields_and_sizes() {
    let fs = Fs::new();
    let big = "é".repeat(250_000);
    let bytes = pgferry::stream::base64_encode(&vec![0xffu8; 500_000]);
    // Arrays and maps nested to Firestore's limit of 20, with int64 limits at the bottom.
    let mut deep = json!({"arrayValue": {"values": [{"integerValue": i64::MIN.to_string()},
        {"integerValue": i64::MAX.to_string()}, {"doubleValue": "-Infinity"}]}});
    for i in 0..19 {
        deep = if i % 2 == 0 {
            json!({"mapValue": {"fields": {"k.v": deep}}})
        } else {
            json!({"arrayValue": {"values": [deep]}})
        };
    }
    let mut docs = vec![];
    for c in ["c c", "ключ", "a.b", "x#?%", "(par)", "`t`"] {
        docs.push((format!("p/1/{c}/d 1"), json!({"v": {"stringValue": c}})));
    }
    docs.push((
        "big/b".into(),
        json!({"s": {"stringValue": big}, "b": {"bytesValue": bytes}, "deep": deep,
        "first": {"timestampValue": "0001-01-01T00:00:00Z"}, "last": {"timestampValue": "9999-12-31T23:59:59.999999Z"},
        "a\\b": {"integerValue": "1"}, "`": {"integerValue": "2"}, "1st": {"integerValue": "3"}}),
    ));
    fs.put(docs);
    for c in ["c c", "ключ", "a.b", "x#?%", "(par)", "`t`"] {
        let path = format!("p/1/{c}/d 1");
        let want = json!({"id": "d 1", "p": path, "v": c});
        let rows = fs.export().args([&format!("p/1/{c}"), "--path-field", "p"]).ok().json_lines();
        assert_eq!(rows[0], want, "collection {c}");
        let rows = fs.export().args(["--group", c, "--path-field", "p"]).ok().json_lines();
        assert_eq!(rows[0], want, "group {c}");
        let rows = fs.export().args([&path, "--path-field", "p"]).ok().json_lines();
        assert_eq!(rows[0], want, "document {c}");
    }
    let run = fs.export().arg("big").ok();
    let rows = run.json_lines();
    assert_eq!(rows[0]["s"].as_str().map(|s| s.chars().count()), Some(250_000));
    assert_eq!(rows[0]["b"], json!({"$base64": true, "encoded": bytes}));
    assert_eq!(rows[0]["first"], json!("0001-01-01T00:00:00Z"));
    assert_eq!(rows[0]["last"], json!("9999-12-31T23:59:59.999999Z"));
    let line = run.stdout();
    assert!(line.contains("[-9223372036854775808,9223372036854775807,{\"$float\":\"-Infinity\"}]"), "int64 exact");
    assert_eq!(line.matches("{\"k.v\":").count(), 10);
    // Field names that are not plain identifiers, selected by projection.
    let rows = fs.export().args(["big", "--fields", "a\\b,`,1st"]).ok().json_lines();
    assert_eq!(rows[0], json!({"id": "b", "a\\b": 1, "`": 2, "1st": 3}));
    // A key twice in a row, or the id alone under a record's key, would break the stream.
    fs.export().args(["big", "--fields", "s,s"]).expect(64).stderr_has(&["--fields names 's' twice"]);
    fs.export().args(["big", "--id-field", "$end"]).expect(64).stderr_has(&["a record of the stream"]);
}

#[test]
fn words_in_the_schema_are_not_the_schema() {
    // "WITHOUT ROWID" as a table's name or in a default is not the clause.
    let t = TempDir::new();
    let db = t.str("w.db");
    sqlite_db(
        &t.path("w.db"),
        "CREATE TABLE \"without rowid\" (x); INSERT INTO \"without rowid\" VALUES (1);
         CREATE TABLE d (a TEXT DEFAULT 'WITHOUT ROWID'); INSERT INTO d VALUES ('z');
         CREATE TABLE s (id INTEGER PRIMARY KEY, a ANY) STRICT; INSERT INTO s VALUES (2, 'x'), (1, 2.5);",
    );
    let rows = cmd("sqlite-dump").args([&db, "without rowid"]).ok().json_lines();
    assert_eq!(rows[0], json!({"x": 1}));
    let rows = cmd("sqlite-dump").args([&db, "d"]).ok().json_lines();
    assert_eq!(rows[0], json!({"a": "z"}));
    let rows = cmd("sqlite-dump").args([&db, "s"]).ok().json_lines();
    assert_eq!(rows[..2], [json!({"id": 1, "a": 2.5}), json!({"id": 2, "a": "x"})]);
    cmd("count-check").arg(format!("sqlite:{db}:d")).arg(format!("sqlite:{db}:d")).args(["--full", "--key", "a"]).ok();
    // A newline in a name, or in the SQL quoted back, stays inside the one line of the error.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE \"a\nb\" (x TEXT); INSERT INTO \"a\nb\" VALUES (CAST(x'ff' AS TEXT));")
        .unwrap();
    let r = cmd("sqlite-dump").args([&db, "a\nb"]).expect(65);
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.stderr());
    r.stderr_has(&["table 'a\\nb', rowid 1, column 'x': text is not valid UTF-8"]);
    let r = cmd("sqlite-dump").args([&db, "s", "--where", "id < 3) ORDER BY id LIMIT 1 --"]).expect(64);
    assert_eq!(r.stderr().lines().count(), 2, "the error and the --help hint: {}", r.stderr());
}

#[test]
fn a_writer_holding_a_lock_is_waited_for_then_named() {
    let t = TempDir::new();
    // WAL: a writer's open transaction does not stop a reader, nor is it read.
    let wal = t.path("wal.db");
    sqlite_db(&wal, "PRAGMA journal_mode=WAL; CREATE TABLE x (id INTEGER PRIMARY KEY); INSERT INTO x VALUES (1);");
    let w = rusqlite::Connection::open(&wal).unwrap();
    w.execute_batch("BEGIN IMMEDIATE; INSERT INTO x VALUES (2);").unwrap();
    let rows = cmd("sqlite-dump").arg(&wal).arg("x").ok().json_lines();
    assert_eq!(rows.len(), 2, "{rows:?}");
    drop(w);
    // A rollback journal's writer mid-commit holds the file: waited for (10 s), then 75.
    let db = t.path("j.db");
    sqlite_db(&db, "CREATE TABLE x (id INTEGER PRIMARY KEY); INSERT INTO x VALUES (1);");
    let w = rusqlite::Connection::open(&db).unwrap();
    w.execute_batch("BEGIN EXCLUSIVE; INSERT INTO x VALUES (2);").unwrap();
    let started = std::time::Instant::now();
    let r = cmd("sqlite-dump").arg(&db).arg("x").expect(75);
    assert!(started.elapsed() >= std::time::Duration::from_secs(9), "did not wait for the lock");
    r.stderr_has(&["database is locked: another connection holds a lock on it (waited 10 s"]);
    assert!(r.stdout().is_empty());
    w.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn hostile_names_through_ddl_dump_load_and_check() {
    let t = TempDir::new();
    let db = t.str("n.db");
    sqlite_db(
        &t.path("n.db"),
        "CREATE TABLE \"Sel\"\"ect\" (\"order\" INTEGER PRIMARY KEY, \"a b\" TEXT, \"ünï 💥\" REAL, \"from\" BLOB,
           \"Mixed\" INTEGER);
         -- A REAL column drops the sign of -0.0 (docs/stream.md 3.4).
         INSERT INTO \"Sel\"\"ect\" VALUES (1, 'it''s \"q\" \\ é', -0.0, x'00ff', 9223372036854775807),
           (2, '', 1e308 * 10, x'', -9223372036854775808), (3, NULL, 1e-300, NULL, NULL);
         CREATE TABLE \"table\" (\"select\" TEXT PRIMARY KEY, \"user\" INTEGER) WITHOUT ROWID;
         INSERT INTO \"table\" VALUES ('b', 2), ('a', 1), ('A', 3);",
    );
    let pg = Pg::new();
    pg.exec(&cmd("sqlite-dump").args(["--ddl", &db]).ok().stdout());
    // PostgreSQL's side names tables in SQL syntax (quoted for case and odd characters).
    for (table, pg_name) in [("Sel\"ect", "\"Sel\"\"ect\""), ("table", "\"table\"")] {
        let dump = cmd("sqlite-dump").args([&db, table]).ok();
        cmd("pg-load").args(["--db", &pg.url, pg_name]).stdin(dump.out.stdout).ok();
        let sqlite = format!("sqlite:{db}:{table}");
        cmd("count-check").args(["--db", &pg.url, "--full", &sqlite, &format!("pg:{pg_name}")]).ok();
    }
    assert_eq!(
        pg.rows("SELECT \"order\", \"a b\", \"ünï 💥\", \"from\", \"Mixed\" FROM \"Sel\"\"ect\" ORDER BY 1"),
        [
            "1|it's \"q\" \\ é|0|\\x00ff|9223372036854775807",
            "2||Infinity|\\x|-9223372036854775808",
            "3|NULL|1e-300|NULL|NULL"
        ]
    );
    assert_eq!(pg.rows("SELECT * FROM \"table\" ORDER BY \"select\" COLLATE \"C\""), ["A|3", "a|1", "b|2"]);
}

#[test]
fn preflight_names_sqlite_sources_as_sqlite_dump_would() {
    let t = TempDir::new();
    let db = t.str("app.db");
    sqlite_db(
        &t.path("app.db"),
        "CREATE TABLE Users (id INTEGER PRIMARY KEY); CREATE VIEW active AS SELECT * FROM Users;
         CREATE VIRTUAL TABLE docs USING fts5(body);",
    );
    std::fs::write(t.path("empty.db"), b"").unwrap();
    let plan = t.path("plan.ndjson");
    let steps = [("1", &db, "users"), ("2", &db, "active"), ("3", &t.str("empty.db"), "x"), ("4", &db, "docs")];
    let lines: Vec<String> = steps
        .iter()
        .map(|(s, d, tb)| json!({"step": s, "source": format!("sqlite:{d}:{tb}"), "target": tb}).to_string())
        .collect();
    std::fs::write(&plan, lines.join("\n") + "\n").unwrap();
    let pg = Pg::new();
    let out = cmd("pg-load").args(["--db", &pg.url, "--plan"]).arg(&plan).arg("--preflight").expect(1).stdout();
    for want in [
        format!("ok       step 1: table users in {db}"),
        format!("MISSING  step 2: table active in {db}: table 'active' does not exist in '{db}': 'active' is a view"),
        format!("MISSING  step 3: table x in {}: table 'x' does not exist in '", t.str("empty.db")),
        format!("ok       step 4: table docs in {db}"),
    ] {
        assert!(out.contains(&want), "{want}\n{out}");
    }
    // The FTS5 table's shadow tables are not tables the plan forgot.
    assert!(!out.contains("docs_data") && !out.contains("docs_idx"), "{out}");
}
