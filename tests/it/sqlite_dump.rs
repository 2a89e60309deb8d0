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
