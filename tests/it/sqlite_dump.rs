//! sqlite-dump against real SQLite files.

use crate::harness::*;
use serde_json::{json, Value};

fn dump(db: &str, table: &str) -> Vec<Value> {
    cmd("sqlite-dump").args([db, table]).ok().json_lines()
}

#[test]
fn values_are_written_as_stored_per_value() {
    let t = TempDir::new();
    let db = t.str("app.sqlite");
    sqlite_db(
        t.path("app.sqlite").as_path(),
        "CREATE TABLE v (id INTEGER PRIMARY KEY, n INTEGER, r REAL, s TEXT, b BLOB, x);
         INSERT INTO v VALUES (1, 9223372036854775807, 0.1, 'héllo \"q\" \n', x'00ff10', NULL);
         INSERT INTO v VALUES (2, -9223372036854775808, -0.0, '', x'', 'text in untyped');
         INSERT INTO v VALUES (3, 'not a number', 1e308 * 10, '💥', NULL, 3.5);
         INSERT INTO v VALUES (4, 42, -1e308 * 10, NULL, NULL, 12);",
    );
    let rows = dump(&db, "v");
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[0],
        json!({"id": 1, "n": 9223372036854775807i64, "r": 0.1, "s": "héllo \"q\" \n", "b": {"$base64": true, "encoded": "AP8Q"}, "x": null})
    );
    assert_eq!(rows[1]["n"].as_i64(), Some(i64::MIN));
    // SQLite stores an integral REAL compactly and drops the sign of zero; it reads back 0.0.
    assert_eq!(rows[1]["r"].to_string(), "0.0");
    assert_eq!(rows[1]["b"], json!({"$base64": true, "encoded": ""}));
    // SQLite's dynamic typing: text stored in an INTEGER column stays text.
    assert_eq!(rows[2]["n"], json!("not a number"));
    assert_eq!(rows[2]["r"], json!({"$float": "Infinity"}));
    assert_eq!(rows[3]["r"], json!({"$float": "-Infinity"}));
    assert_eq!(rows[3]["x"], json!(12));
    assert_eq!(rows[4], json!({"$end": {"rows": 4, "source": "sqlite", "database": "app.sqlite", "table": "v"}}));
    // Keys appear in column order.
    let first = cmd("sqlite-dump").args([&db, "v"]).ok().stdout();
    assert!(first.starts_with("{\"id\":1,\"n\":"), "{first}");
}

/// Pins sqlite-dump's exact bytes for hostile values (docs/stream.md §3): every control
/// character, NUL inside text, U+2028/U+2029/BOM left raw, quotes and backslashes in keys and
/// values, the integer limits and digit-count boundaries, float extremes (SQLite turns NaN into
/// NULL and -0.0 into 0.0), the shortest round-trip float forms, blobs of every padding, text
/// that is not UTF-8 (a lone surrogate, 0xff) in the bytes form, a WITHOUT ROWID table.
#[test]
fn hostile_values_are_written_byte_for_byte() {
    let t = TempDir::new();
    let db = t.str("g.sqlite");
    sqlite_db(
        &t.path("g.sqlite"),
        "CREATE TABLE \"odd \"\"name\"\" é\" (id INTEGER PRIMARY KEY, \"we\"\"ird\" TEXT, \"tab\tkey\" INTEGER,
           \"é💥\" REAL, b BLOB, u);
         INSERT INTO \"odd \"\"name\"\" é\" VALUES
         (1, CAST(x'000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f7f' AS TEXT), 0, 0.0, x'', NULL),
         (2, 'quote \" backslash \\ slash / end', -1, -0.0, x'00', 'untyped text'),
         (3, CAST(x'61006200' AS TEXT), 9223372036854775807, 1e300, x'00ff', 42),
         (4, 'héllo 💥 ' || char(8232) || char(8233) || char(65279), -9223372036854775808, -1e300, x'000102', 1.5),
         (5, '', 9, 5e-324, x'fffefd', x'deadbeef'),
         (6, '12345678', 10, 2.2250738585072014e-308, x'00010203', 1e308 * 10),
         (7, '1234567\"', 99, 0.1, x'cecece', -1e308 * 10),
         (8, '\"2345678\\', 100, 1.0, zeroblob(5), 0.30000000000000004),
         (9, 'abcdefgh' || char(10) || 'ijklmnopq' || char(13) || char(9), 999999999999999999, 1e16, NULL,
             123456789012345680000.0),
         (10, NULL, 1000000000000000000, 1e15, NULL, -123456789),
         (11, 'x', NULL, 123.456, NULL, 1e-7),
         (12, CAST(x'c3a9e282acf09f92a5' AS TEXT), -10, NULL, NULL, 100.0),
         (13, 'nan→null', 7, 0.0/0.0, NULL, -0.5),
         (14, CAST(x'eda080' AS TEXT), 1, 1.0, NULL, CAST(x'41ff42' AS TEXT));
         CREATE TABLE nokey (a, b TEXT);
         INSERT INTO nokey VALUES (1, 'a'), (2.5, NULL), ('t', 'b'), (x'01', 'c');
         CREATE TABLE wr (k TEXT, j INTEGER, v, PRIMARY KEY (k, j)) WITHOUT ROWID;
         INSERT INTO wr VALUES ('b', 2, 'two'), ('a', 1, 'one'), ('a', -3, CAST(x'ff' AS TEXT));
         CREATE TABLE q (id INTEGER PRIMARY KEY DESC, t TEXT);
         INSERT INTO q VALUES (5, 'fine'), (9, CAST(x'ff' AS TEXT));",
    );
    let mut got = String::new();
    for table in ["odd \"name\" é", "nokey", "wr"] {
        got += &cmd("sqlite-dump").args(["--invalid-text", "bytes", &db, table]).ok().stdout();
    }
    let want = [
        concat!(
            r#"{"id":1,"we\"ird":"\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r\u000e\u000f\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f"#,
            "\u{7f}",
            r#"","tab\tkey":0,"é💥":0.0,"b":{"$base64":true,"encoded":""},"u":null}"#
        ),
        r#"{"id":2,"we\"ird":"quote \" backslash \\ slash / end","tab\tkey":-1,"é💥":0.0,"b":{"$base64":true,"encoded":"AA=="},"u":"untyped text"}"#,
        r#"{"id":3,"we\"ird":"a\u0000b\u0000","tab\tkey":9223372036854775807,"é💥":1e300,"b":{"$base64":true,"encoded":"AP8="},"u":42}"#,
        concat!(
            r#"{"id":4,"we\"ird":"héllo 💥 "#,
            "\u{2028}",
            "\u{2029}",
            "\u{feff}",
            r#"","tab\tkey":-9223372036854775808,"é💥":-1e300,"b":{"$base64":true,"encoded":"AAEC"},"u":1.5}"#
        ),
        r#"{"id":5,"we\"ird":"","tab\tkey":9,"é💥":5e-324,"b":{"$base64":true,"encoded":"//79"},"u":{"$base64":true,"encoded":"3q2+7w=="}}"#,
        r#"{"id":6,"we\"ird":"12345678","tab\tkey":10,"é💥":2.2250738585072014e-308,"b":{"$base64":true,"encoded":"AAECAw=="},"u":{"$float":"Infinity"}}"#,
        r#"{"id":7,"we\"ird":"1234567\"","tab\tkey":99,"é💥":0.1,"b":{"$base64":true,"encoded":"zs7O"},"u":{"$float":"-Infinity"}}"#,
        r#"{"id":8,"we\"ird":"\"2345678\\","tab\tkey":100,"é💥":1.0,"b":{"$base64":true,"encoded":"AAAAAAA="},"u":0.30000000000000004}"#,
        r#"{"id":9,"we\"ird":"abcdefgh\nijklmnopq\r\t","tab\tkey":999999999999999999,"é💥":1e16,"b":null,"u":1.2345678901234568e20}"#,
        r#"{"id":10,"we\"ird":null,"tab\tkey":1000000000000000000,"é💥":1000000000000000.0,"b":null,"u":-123456789}"#,
        r#"{"id":11,"we\"ird":"x","tab\tkey":null,"é💥":123.456,"b":null,"u":1e-7}"#,
        r#"{"id":12,"we\"ird":"é€💥","tab\tkey":-10,"é💥":null,"b":null,"u":100.0}"#,
        r#"{"id":13,"we\"ird":"nan→null","tab\tkey":7,"é💥":null,"b":null,"u":-0.5}"#,
        r#"{"id":14,"we\"ird":{"$base64":true,"encoded":"7aCA"},"tab\tkey":1,"é💥":1.0,"b":null,"u":{"$base64":true,"encoded":"Qf9C"}}"#,
        r#"{"$end":{"rows":14,"source":"sqlite","database":"g.sqlite","table":"odd \"name\" é"}}"#,
        r#"{"a":1,"b":"a"}"#,
        r#"{"a":2.5,"b":null}"#,
        r#"{"a":"t","b":"b"}"#,
        r#"{"a":{"$base64":true,"encoded":"AQ=="},"b":"c"}"#,
        r#"{"$end":{"rows":4,"source":"sqlite","database":"g.sqlite","table":"nokey"}}"#,
        r#"{"k":"a","j":-3,"v":{"$base64":true,"encoded":"/w=="}}"#,
        r#"{"k":"a","j":1,"v":"one"}"#,
        r#"{"k":"b","j":2,"v":"two"}"#,
        r#"{"$end":{"rows":3,"source":"sqlite","database":"g.sqlite","table":"wr"}}"#,
    ];
    let got: Vec<&str> = got.split_inclusive('\n').collect();
    let want: Vec<String> = want.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(got, want);
    // Without --invalid-text bytes, the lone surrogate (CESU-8, not UTF-8) is refused.
    cmd("sqlite-dump").args([&db, "odd \"name\" é"]).expect(65).stderr_has(&[
        "table 'odd \"name\" é', rowid 14, column 'we\"ird': text is not valid UTF-8 (byte 0xed at offset 0)",
    ]);
    // The row named by its key where there is no rowid, by its rowid where there is one (an
    // INTEGER PRIMARY KEY DESC is not the rowid: SQLite's quirk).
    cmd("sqlite-dump").args([&db, "wr"]).expect(65).stderr_has(&["table 'wr', key 'a',-3, column 'v'"]);
    cmd("sqlite-dump").args([&db, "q"]).expect(65).stderr_has(&["table 'q', rowid 2, column 't'"]);
    cmd("sqlite-dump").args([&db, "q", "--columns", "t"]).expect(65).stderr_has(&["table 'q', rowid 2, column 't'"]);
}

#[test]
fn invalid_utf8_names_table_rowid_and_column() {
    let t = TempDir::new();
    let db = t.str("bad.sqlite");
    sqlite_db(
        &t.path("bad.sqlite"),
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
        INSERT INTO notes VALUES (1, 'fine'), (7, CAST(x'41ff42' AS TEXT));",
    );
    let r = cmd("sqlite-dump").args([&db, "notes"]).expect(65);
    r.stderr_has(&["table 'notes', rowid 7, column 'body'", "not valid UTF-8", "--invalid-text bytes"]);
    let rows = cmd("sqlite-dump").args([&db, "notes", "--invalid-text", "bytes"]).ok().json_lines();
    assert_eq!(rows[1]["body"], json!({"$base64": true, "encoded": "Qf9C"}));
}

#[test]
fn list_where_columns_order_and_all() {
    let t = TempDir::new();
    let db = t.str("a.sqlite");
    sqlite_db(
        &t.path("a.sqlite"),
        "CREATE TABLE b (k TEXT PRIMARY KEY, v INT) WITHOUT ROWID;
        INSERT INTO b VALUES ('z', 1), ('a', 2), ('m', 3);
        CREATE TABLE a (x INT); INSERT INTO a VALUES (3), (1);",
    );
    let list = cmd("sqlite-dump").args(["--list", &db]).ok().json_lines();
    assert_eq!(list, vec![json!({"table": "a", "rows": 2}), json!({"table": "b", "rows": 3})]);
    // Default order: the primary key (here a WITHOUT ROWID text key).
    let keys: Vec<Value> = dump(&db, "b").iter().filter_map(|r| r.get("k").cloned()).collect();
    assert_eq!(keys, vec![json!("a"), json!("m"), json!("z")]);
    let rows =
        cmd("sqlite-dump").args([&db, "b", "--where", "v >= 2", "--columns", "v,k", "--order-by", "v DESC"]).ok();
    assert!(
        rows.stdout().starts_with("{\"v\":3,\"k\":\"m\"}\n{\"v\":2,\"k\":\"a\"}\n{\"$end\":{\"rows\":2"),
        "{}",
        rows.stdout()
    );
    cmd("sqlite-dump").args([&db, "b", "--where", "nonsense ="]).expect(64);
    // The user's condition cannot end the statement or comment out the order (here SQLite
    // would read through the index on v, in v's order, without the ORDER BY).
    let c = t.str("c.sqlite");
    sqlite_db(
        &t.path("c.sqlite"),
        "CREATE TABLE c (id INTEGER PRIMARY KEY, v INT); CREATE INDEX c_v ON c (v);
         INSERT INTO c VALUES (1, 3), (2, 1), (3, 2);",
    );
    let ids = |r: Run| -> Vec<Value> { r.json_lines().iter().filter_map(|r| r.get("id").cloned()).collect() };
    assert_eq!(ids(cmd("sqlite-dump").args([&c, "c", "--where", "v >= 1 -- all of them"]).ok()), [1, 2, 3]);
    cmd("sqlite-dump").args([&db, "b", "--where", "v >= 2; SELECT 1"]).expect(64);
    cmd("sqlite-dump")
        .args([&db, "b", "--order-by", "v; SELECT 1"])
        .expect(64)
        .stderr_has(&["more than one SQL statement"]);
    cmd("sqlite-dump").args([&db, "b", "--columns", "nope"]).expect(64).stderr_has(&["no column 'nope'"]);
    cmd("sqlite-dump").args([&db, "missing"]).expect(66).stderr_has(&["table 'missing' does not exist"]);
    cmd("sqlite-dump").args([&t.str("nope.sqlite"), "a"]).expect(66);
    cmd("sqlite-dump").args([&db]).expect(64).stderr_has(&["missing argument TABLE", "Try 'sqlite-dump --help'"]);
    let out = t.str("out");
    let all = cmd("sqlite-dump").args(["--all", "--out-dir", &out, &db]).ok().json_lines();
    assert_eq!(all.len(), 2);
    let b = std::fs::read_to_string(t.path("out/b.ndjson")).unwrap();
    assert_eq!(b.lines().count(), 4);
    assert!(b.ends_with("\"table\":\"b\"}}\n"));
}

#[test]
fn a_closed_pipe_is_a_normal_end() {
    let t = TempDir::new();
    let db = t.str("big.sqlite");
    sqlite_db(&t.path("big.sqlite"), "CREATE TABLE n (i INTEGER PRIMARY KEY);
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) INSERT INTO n SELECT x FROM c;");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; '{}' '{db}' n | head -n 1", bin("sqlite-dump").display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_full_disk_is_exit_74_naming_where_and_leaves_no_partial_file() {
    let t = TempDir::new();
    let db = t.str("d.sqlite");
    sqlite_db(&t.path("d.sqlite"), "CREATE TABLE a (i INTEGER PRIMARY KEY); INSERT INTO a VALUES (1), (2);
        CREATE TABLE b (i INTEGER PRIMARY KEY, v TEXT);
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000) INSERT INTO b SELECT x, 'row ' || x FROM c;");
    // stdout on a full device (/dev/full answers every write with ENOSPC).
    for args in [vec![db.as_str(), "b"], vec!["--list", db.as_str()]] {
        let out = std::process::Command::new(bin("sqlite-dump"))
            .args(&args)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(74), "{args:?}: {err}");
        assert!(err.contains("write to stdout: the disk is full"), "{args:?}: {err}");
    }
    // --all: the table being written when the disk fills is named by its file, and no file of
    // it is left (its partial file here is a link to the full device); the table before stays whole.
    let dir = t.path("out");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.join(".b.ndjson.partial")).unwrap();
    let run = cmd("sqlite-dump").args(["--all", "--out-dir", &t.str("out"), &db]).expect(74);
    run.stderr_has(&[&format!("write to '{}': the disk is full", dir.join("b.ndjson").display())]);
    let mut files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["a.ndjson"]);
    assert_eq!(std::fs::read_to_string(dir.join("a.ndjson")).unwrap().lines().count(), 3);
}

#[test]
fn wal_database_being_written_is_dumped_as_one_snapshot() {
    let t = TempDir::new();
    let path = t.path("live.sqlite");
    let db = path.display().to_string();
    sqlite_db(
        &path,
        "PRAGMA journal_mode=WAL; CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL);
        CREATE TABLE total (id INTEGER PRIMARY KEY, sum INTEGER NOT NULL); INSERT INTO total VALUES (1, 0);",
    );
    // A writer that keeps the invariant sum(ledger.amount) == total.sum in every transaction.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            let mut n = 0i64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                c.execute_batch(&format!(
                    "BEGIN IMMEDIATE; INSERT INTO ledger (amount) SELECT {n} FROM (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3);
                     UPDATE total SET sum = sum + 3 * {n}; COMMIT;"
                ))
                .unwrap();
            }
            n
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    for checked in 0..15 {
        // Both tables from one snapshot: dump-all reads them inside one read transaction.
        let out = t.str(&format!("snap{checked}"));
        cmd("sqlite-dump").args(["--all", "--out-dir", &out, &db]).ok();
        let ledger = std::fs::read_to_string(t.path(&format!("snap{checked}/ledger.ndjson"))).unwrap();
        let total = std::fs::read_to_string(t.path(&format!("snap{checked}/total.ndjson"))).unwrap();
        let sum: i64 =
            ledger.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()?.get("amount")?.as_i64()).sum();
        let recorded: i64 =
            serde_json::from_str::<Value>(total.lines().next().unwrap()).unwrap()["sum"].as_i64().unwrap();
        assert_eq!(sum, recorded, "dump mixed two states of the database");
        assert_eq!(ledger.lines().count() % 3, 1, "a transaction's three rows were split");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(writer.join().unwrap() > 10, "the writer made progress during the dumps");
}

#[test]
fn never_writes_and_reads_read_only_files() {
    let t = TempDir::new();
    let dir = t.path("ro");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("app.sqlite");
    sqlite_db(
        &path,
        "PRAGMA journal_mode=WAL; CREATE TABLE x (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO x VALUES (1, 'a');
        PRAGMA wal_checkpoint(TRUNCATE);",
    );
    let _ = std::fs::remove_file(dir.join("app.sqlite-wal"));
    let _ = std::fs::remove_file(dir.join("app.sqlite-shm"));
    let before = std::fs::read(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(&t.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Root ignores permission bits: run as an unprivileged user when we are root.
    let is_root = unsafe_geteuid() == 0;
    let mut c =
        if is_root { std::process::Command::new("runuser") } else { std::process::Command::new(bin("sqlite-dump")) };
    if is_root {
        c.args(["-u", "nobody", "--"]).arg(bin("sqlite-dump"));
    }
    let out = c.arg(path.display().to_string()).arg("x").output().unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("{\"id\":1,\"v\":\"a\"}\n"));
    assert_eq!(std::fs::read(&path).unwrap(), before, "the database file changed");
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["app.sqlite".to_string()], "sqlite-dump left files behind");
}

fn unsafe_geteuid() -> u32 {
    // No libc dependency for one call: /proc tells the effective uid.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn ddl_creates_working_postgres_tables() {
    let t = TempDir::new();
    let db = t.str("s.sqlite");
    sqlite_db(&t.path("s.sqlite"), "
        CREATE TABLE customers (id INTEGER PRIMARY KEY, email VARCHAR(200) NOT NULL UNIQUE, vip BOOLEAN NOT NULL DEFAULT 0,
            created_at DATETIME DEFAULT CURRENT_TIMESTAMP, balance NUMERIC(12,2) DEFAULT 0, photo BLOB, meta JSON, status TEXT DEFAULT 'lead');
        CREATE TABLE quotations (id TEXT PRIMARY KEY, customer_id INTEGER REFERENCES customers(id) ON DELETE CASCADE, total REAL);
        CREATE INDEX idx_q_customer ON quotations(customer_id, total DESC);
        CREATE TABLE items (quotation_id TEXT, line INTEGER, qty INT, PRIMARY KEY (quotation_id, line),
            FOREIGN KEY (quotation_id) REFERENCES quotations);");
    let ddl = cmd("sqlite-dump").args(["--ddl", &db]).ok().stdout();
    assert!(ddl.contains("\"id\" bigint GENERATED BY DEFAULT AS IDENTITY"), "{ddl}");
    assert!(ddl.contains("\"vip\" boolean NOT NULL DEFAULT false"), "{ddl}");
    assert!(ddl.contains("\"created_at\" timestamptz DEFAULT now()"), "{ddl}");
    assert!(ddl.contains("\"balance\" numeric(12,2) DEFAULT 0"), "{ddl}");
    assert!(ddl.contains("ON DELETE CASCADE"), "{ddl}");
    let pg = Pg::new();
    pg.exec(&ddl);
    assert_eq!(pg.one("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'customers'::regclass AND attname = 'photo'"), "bytea");
    assert_eq!(pg.one("SELECT count(*) FROM pg_constraint WHERE contype = 'f'"), "2");
    assert_eq!(
        pg.one("SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_q_customer'"),
        "CREATE INDEX idx_q_customer ON public.quotations USING btree (customer_id, total DESC)"
    );
    assert_eq!(
        pg.one("SELECT count(*) FROM pg_constraint WHERE contype = 'u' AND conrelid = 'customers'::regclass"),
        "1"
    );
}

#[test]
fn files_sqlite_creates_beside_a_wal_database_keep_its_owner() {
    use std::os::unix::fs::MetadataExt;
    if unsafe_geteuid() != 0 {
        // Only root can create files owned by someone else; the case exists only for root.
        return;
    }
    let t = TempDir::new();
    let path = t.path("app.sqlite");
    sqlite_db(&path, "PRAGMA journal_mode=WAL; CREATE TABLE x (id INTEGER PRIMARY KEY); INSERT INTO x VALUES (1);");
    for f in ["app.sqlite-wal", "app.sqlite-shm"] {
        let _ = std::fs::remove_file(t.path(f));
    }
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    cmd("sqlite-dump").args([path.display().to_string().as_str(), "x"]).ok();
    // SQLite's unix VFS gives new -wal/-shm files the database's owner when run as root;
    // this guards that reading as root never locks the application out of its database.
    for f in ["app.sqlite-wal", "app.sqlite-shm"] {
        let m = std::fs::metadata(t.path(f)).unwrap_or_else(|_| panic!("{f} was not created"));
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{f} is owned by root, not the database's owner");
    }
}
