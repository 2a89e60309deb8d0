//! What the seeds' data needs from pg-load and count-check (issue 14): empty strings as NULL,
//! non-ISO dates, renamed keys, the hint for a key whose case differs, a serial key the stream
//! lacks, VACUUM after the load; and backup-verify on a JSON file tree.

use crate::harness::*;

fn stream(rows: &[&str]) -> String {
    let mut s: String = rows.iter().map(|r| format!("{r}\n")).collect();
    s.push_str(&format!("{{\"$end\":{{\"rows\":{},\"source\":\"test\"}}}}\n", rows.len()));
    s
}

#[test]
fn empty_strings_dates_and_renamed_keys_load_and_verify_alike() {
    let pg = Pg::new();
    let dir = TempDir::new();
    pg.exec(
        "CREATE TABLE orders (id bigint PRIMARY KEY, ship_id bigint, note text, due date, seen_at timestamptz, password_hash text)",
    );
    let rows = [
        r#"{"id":1,"ship_id":"","note":"","due":"01/16/2025","seen_at":"2025-01-16T08:00:00Z","passwordHash":"h1"}"#,
        r#"{"id":2,"ship_id":42,"note":"x","due":"2025-01-17","seen_at":"01/17/2025 09:30 PM","passwordHash":null}"#,
    ];
    let input = stream(&rows);
    std::fs::write(dir.path("o.ndjson"), &input).unwrap();
    let args = [
        "--empty-as-null",
        "ship_id",
        "--date-format",
        "%m/%d/%Y",
        "--date-format",
        "seen_at=%m/%d/%Y %I:%M %p",
        "--rename",
        "passwordHash=password_hash",
    ];
    cmd("pg-load").args(["--db", &pg.url, "orders"]).args(args).stdin(input.clone()).ok();
    assert_eq!(
        pg.rows(
            "SELECT id || '|' || coalesce(ship_id::text, 'NULL') || '|' || note || '|' || due || '|' || \
                 (seen_at AT TIME ZONE 'UTC') || '|' || coalesce(password_hash, 'NULL') FROM orders ORDER BY id"
        ),
        ["1|NULL||2025-01-16|2025-01-16 08:00:00|h1", "2|42|x|2025-01-17|2025-01-17 21:30:00|NULL"]
    );
    // count-check reads the same options from the plan step's load arguments.
    let plan = dir.path("plan.ndjson");
    let step = serde_json::json!({"step": "1", "source": format!("ndjson:{}", dir.str("o.ndjson")), "target": "orders", "load": args});
    std::fs::write(&plan, format!("{step}\n")).unwrap();
    cmd("count-check").args(["--db", &pg.url, "--full", "--plan", plan.to_str().unwrap()]).ok();
    // Without the options, each refusal names line, column and value; nothing is committed.
    pg.exec("TRUNCATE orders");
    cmd("pg-load")
        .args(["--db", &pg.url, "orders", "--rename", "passwordHash=password_hash"])
        .stdin(input.clone())
        .expect(65)
        .stderr_has(&["line 1, column 'ship_id'", "\"\""]);
    let r = cmd("pg-load")
        .args(["--db", &pg.url, "orders", "--empty-as-null", "ship_id", "--rename", "passwordHash=password_hash"])
        .stdin(input)
        .expect(65);
    r.stderr_has(&["line 1, column 'due'", "01/16/2025", "--date-format"]);
    assert_eq!(pg.count("orders"), 0);
}

#[test]
fn a_key_that_differs_from_a_column_in_case_suggests_the_column() {
    let pg = Pg::new();
    pg.exec("CREATE SCHEMA identity; CREATE TABLE identity.users (id bigint PRIMARY KEY, password_hash text, createdat bigint)");
    let input = stream(&[r#"{"id":1,"passwordHash":"$2b$","createdAt":5}"#]);
    let r = cmd("pg-load").args(["--db", &pg.url, "identity.users"]).stdin(input).expect(65);
    r.stderr_has(&[
        "keys that match no column of 'identity.users': passwordHash, createdAt",
        "--rename passwordHash=password_hash,createdAt=createdat",
        "--ignore-unknown would drop their values",
    ]);
}

#[test]
fn a_rerun_on_a_serial_key_the_stream_lacks_names_the_column_and_a_natural_key_works() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE user_activities (id serial PRIMARY KEY, user_id text NOT NULL, kind text NOT NULL, \
         at timestamptz NOT NULL, UNIQUE (user_id, at, kind))",
    );
    let input = stream(&[
        r#"{"user_id":"u1","kind":"login","at":"2025-01-10T08:00:00Z"}"#,
        r#"{"user_id":"u1","kind":"scrape","at":"2025-01-10T08:05:00Z"}"#,
    ]);
    cmd("pg-load").args(["--db", &pg.url, "user_activities"]).stdin(input.clone()).ok();
    // Re-run: the rows have no id, the primary key the merge would match them by.
    let r = cmd("pg-load").args(["--db", &pg.url, "user_activities"]).stdin(input.clone()).expect(65);
    r.stderr_has(&["line 1: the row has no value for 'id', a column of the key (id)", "--key"]);
    assert!(!r.stderr().contains("panicked"), "{}", r.describe());
    assert_eq!(pg.one("SELECT outcome FROM _migration_runs ORDER BY id DESC LIMIT 1"), "failed");
    // With the natural key the seed's schema has, the re-run finds both rows present.
    let r = cmd("pg-load").args(["--db", &pg.url, "user_activities", "--key", "user_id,at,kind"]).stdin(input).ok();
    r.stderr_has(&["0 rows inserted, 2 already present"]);
    assert_eq!(pg.count("user_activities"), 2);
}

#[test]
fn vacuum_runs_after_the_commit() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE t (id bigint PRIMARY KEY)");
    let r = cmd("pg-load").args(["--db", &pg.url, "t", "--vacuum"]).stdin(stream(&[r#"{"id":1}"#, r#"{"id":2}"#])).ok();
    r.stderr_has(&["t: VACUUM (ANALYZE) done"]);
    assert_eq!(pg.one("SELECT (last_vacuum IS NOT NULL AND last_analyze IS NOT NULL)::text FROM pg_stat_user_tables WHERE relname = 't'"), "true");
    assert_eq!(pg.count("t"), 2);
}

#[test]
fn a_json_file_tree_is_backed_up_checked_and_restored() {
    let dir = TempDir::new();
    let root = dir.path("data/users");
    std::fs::create_dir_all(root.join("u1")).unwrap();
    std::fs::write(root.join("users.json"), r#"{"u1": {"name": "a"}}"#).unwrap();
    std::fs::write(root.join("u1/activity_log.json"), "[]").unwrap();
    let out = dir.str("backups");
    let r = cmd("backup-verify").args(["create", root.to_str().unwrap(), "--out", &out]).ok();
    let created = &r.json_lines()[0];
    assert_eq!((created["kind"].as_str(), created["files"].as_u64()), (Some("tree"), Some(2)));
    let manifest = created["manifest"].as_str().unwrap().to_string();
    cmd("backup-verify").args(["check", &manifest]).ok();
    // The app changed a file: restore puts the tree back and keeps the changed one aside.
    std::fs::write(root.join("u1/activity_log.json"), "[{\"x\": 1}]").unwrap();
    std::fs::write(root.join("stray.json"), "{}").unwrap();
    cmd("backup-verify").args(["restore", &manifest, "--to", root.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(root.join("u1/activity_log.json")).unwrap(), "[]");
    assert!(!root.join("stray.json").exists());
    let kept: Vec<_> = std::fs::read_dir(dir.path("data")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(kept.iter().any(|n| n.to_string_lossy().starts_with("users.before-restore-")), "{kept:?}");
    // A damaged archive fails its check, and restore then changes nothing.
    let gz = manifest.replace(".manifest.json", ".tree.gz");
    let mut bytes = std::fs::read(&gz).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&gz, bytes).unwrap();
    cmd("backup-verify").args(["check", &manifest]).expect(1).stderr_has(&["FAILED", "archive_sha256"]);
    std::fs::write(root.join("users.json"), "changed").unwrap();
    cmd("backup-verify")
        .args(["restore", &manifest, "--to", root.to_str().unwrap()])
        .expect(1)
        .stderr_has(&["nothing was changed"]);
    assert_eq!(std::fs::read_to_string(root.join("users.json")).unwrap(), "changed");
}
