//! pg-partition against a real PostgreSQL: one fresh database per test.

use crate::harness::{bin, cmd, Cmd, Pg, TempDir};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LOGS: &str = "(id BIGSERIAL, device_serial TEXT NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, \
    device_timestamp BIGINT, received_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (id, received_at)) \
    PARTITION BY RANGE (received_at)";

fn device_logs(pg: &Pg, table: &str) {
    pg.exec(&format!("CREATE TABLE {table} {LOGS}"));
}

/// `pg-partition SUB TABLE --db URL ARGS...`
fn pp(pg: &Pg, sub: &str, table: &str, args: &[&str]) -> Cmd {
    cmd("pg-partition").args([sub, table, "--db", &pg.url]).args(args)
}

/// The partitions of `table`, by name.
fn names(pg: &Pg, table: &str) -> Vec<String> {
    pg.rows(&format!(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = to_regclass('{}') ORDER BY c.relname",
        table.replace('\'', "''")
    ))
}

fn bound(from: &str, to: &str) -> String {
    format!("FOR VALUES FROM ('{from} 00:00:00+00') TO ('{to} 00:00:00+00')")
}

/// Bounds as the catalog deparses them in UTC (the test cluster's TimeZone may differ).
fn utc_bounds(pg: &Pg, table: &str) -> Vec<String> {
    let mut c = pg.client();
    c.batch_execute("SET TimeZone = 'UTC'").unwrap();
    c.query(
        "SELECT c.relname::text || '|' || pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1) ORDER BY c.relname",
        &[&table],
    )
    .unwrap()
    .iter()
    .map(|r| r.get::<_, String>(0))
    .collect()
}

#[test]
fn ensure_is_quiet_idempotent_and_crosses_the_year() {
    let pg = Pg::new();
    device_logs(&pg, "device_logs");
    let r = pp(&pg, "ensure", "device_logs", &["--from", "2024-11", "--to", "2025-02"]).ok();
    assert_eq!(r.stdout(), "", "{}", r.describe());
    assert_eq!(r.stderr(), "", "quiet on success, for cron mail\n{}", r.describe());
    assert_eq!(
        utc_bounds(&pg, "device_logs"),
        vec![
            format!("device_logs_2024_11|{}", bound("2024-11-01", "2024-12-01")),
            format!("device_logs_2024_12|{}", bound("2024-12-01", "2025-01-01")),
            format!("device_logs_2025_01|{}", bound("2025-01-01", "2025-02-01")),
            format!("device_logs_2025_02|{}", bound("2025-02-01", "2025-03-01")),
        ]
    );
    // Again, and overlapping: nothing new, nothing broken.
    let r = pp(&pg, "ensure", "device_logs", &["--from", "2024-12", "--to", "2025-03", "--verbose"]).ok();
    r.stderr_has(&["created 'device_logs_2025_03'", "1 created, 3 already present"]);
    pp(&pg, "ensure", "device_logs", &["--from", "2024-11", "--to", "2025-03"]).ok();
    assert_eq!(names(&pg, "device_logs").len(), 5);
    // New Year's Eve's last microsecond and New Year's first land on either side.
    pg.exec(
        "INSERT INTO device_logs (device_serial, level, message, received_at) VALUES \
         ('a', 'info', 'old', '2024-12-31 23:59:59.999999+00'), ('a', 'info', 'new', '2025-01-01 00:00:00+00')",
    );
    assert_eq!(pg.one("SELECT message FROM device_logs_2024_12"), "old");
    assert_eq!(pg.one("SELECT message FROM device_logs_2025_01"), "new");
}

#[test]
fn ensure_defaults_to_the_current_month_and_the_next() {
    let pg = Pg::new();
    device_logs(&pg, "device_logs");
    pp(&pg, "ensure", "device_logs", &["--now", "2024-12-31T23:30:00Z"]).ok();
    assert_eq!(names(&pg, "device_logs"), vec!["device_logs_2024_12", "device_logs_2025_01"]);
    pp(&pg, "ensure", "device_logs", &["--now", "2025-01-01T00:00:00Z", "--ahead", "2"]).ok();
    assert_eq!(
        names(&pg, "device_logs"),
        vec!["device_logs_2024_12", "device_logs_2025_01", "device_logs_2025_02", "device_logs_2025_03"]
    );
}

#[test]
fn leap_february_monthly_daily_and_yearly() {
    let pg = Pg::new();
    device_logs(&pg, "monthly");
    pp(&pg, "ensure", "monthly", &["--from", "2024-02", "--to", "2024-02"]).ok();
    assert_eq!(utc_bounds(&pg, "monthly"), vec![format!("monthly_2024_02|{}", bound("2024-02-01", "2024-03-01"))]);
    pg.exec("INSERT INTO monthly (device_serial, level, message, received_at) VALUES ('a','i','leap','2024-02-29 23:59:59+00')");
    assert_eq!(pg.one("SELECT message FROM monthly_2024_02"), "leap");

    device_logs(&pg, "daily");
    pp(&pg, "ensure", "daily", &["--interval", "daily", "--from", "2024-02-28", "--to", "2024-03-01"]).ok();
    assert_eq!(
        utc_bounds(&pg, "daily"),
        vec![
            format!("daily_2024_02_28|{}", bound("2024-02-28", "2024-02-29")),
            format!("daily_2024_02_29|{}", bound("2024-02-29", "2024-03-01")),
            format!("daily_2024_03_01|{}", bound("2024-03-01", "2024-03-02")),
        ]
    );
    // 2023 has no 29 February.
    pp(&pg, "ensure", "daily", &["--interval", "daily", "--from", "2023-02-28", "--to", "2023-03-01"]).ok();
    assert!(names(&pg, "daily").contains(&"daily_2023_03_01".to_string()));
    assert_eq!(names(&pg, "daily").len(), 5);
    pp(&pg, "ensure", "daily", &["--from", "2023-02-29"]).expect(64).stderr_has(&["not a period"]);

    device_logs(&pg, "yearly");
    pp(&pg, "ensure", "yearly", &["--interval", "yearly", "--from", "2024", "--to", "2025"]).ok();
    assert_eq!(
        utc_bounds(&pg, "yearly"),
        vec![
            format!("yearly_2024|{}", bound("2024-01-01", "2025-01-01")),
            format!("yearly_2025|{}", bound("2025-01-01", "2026-01-01")),
        ]
    );
    // Monthly periods inside yearly partitions are covered: nothing to do.
    pp(&pg, "ensure", "yearly", &["--from", "2024-03", "--to", "2024-05"]).ok();
    assert_eq!(names(&pg, "yearly").len(), 2);
}

#[test]
fn date_and_timestamp_keys() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE d (day date NOT NULL, v int) PARTITION BY RANGE (day)");
    pg.exec("CREATE TABLE t (at timestamp NOT NULL, v int) PARTITION BY RANGE (at)");
    pp(&pg, "ensure", "d", &["--from", "2025-01", "--to", "2025-01"]).ok();
    pp(&pg, "ensure", "t", &["--from", "2025-01", "--to", "2025-01"]).ok();
    assert_eq!(utc_bounds(&pg, "d"), vec!["d_2025_01|FOR VALUES FROM ('2025-01-01') TO ('2025-02-01')"]);
    assert_eq!(
        utc_bounds(&pg, "t"),
        vec!["t_2025_01|FOR VALUES FROM ('2025-01-01 00:00:00') TO ('2025-02-01 00:00:00')"]
    );
    let l = pp(&pg, "list", "d", &[]).ok().json_lines();
    assert_eq!(l[0]["from"], "2025-01-01");
    assert_eq!(l[0]["to"], "2025-02-01");
}

#[test]
fn tables_it_cannot_manage_are_refused_clearly() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE plain (id int, at timestamptz)");
    pg.exec("CREATE TABLE by_id (id bigint NOT NULL, at timestamptz) PARTITION BY RANGE (id)");
    pg.exec("CREATE TABLE by_list (kind text NOT NULL, at timestamptz) PARTITION BY LIST (kind)");
    pg.exec("CREATE TABLE by_expr (at timestamp NOT NULL) PARTITION BY RANGE ((at::date))");
    pg.exec("CREATE TABLE by_two (at timestamptz NOT NULL, n int NOT NULL) PARTITION BY RANGE (at, n)");
    device_logs(&pg, "device_logs");
    pp(&pg, "ensure", "device_logs", &["--from", "2025-01", "--to", "2025-01"]).ok();
    let cases: &[(&str, &[&str])] = &[
        ("plain", &["table 'plain' is not partitioned"]),
        ("by_id", &["partitioned by RANGE (id)", "column 'id' is bigint, not a time column"]),
        ("by_list", &["LIST (kind)", "range partitioning only"]),
        ("by_expr", &["the key is an expression"]),
        ("by_two", &["a key of one column only"]),
        ("device_logs_2025_01", &["is a partition of 'device_logs'; name the partitioned table"]),
    ];
    for (table, msg) in cases {
        for sub in ["ensure", "list"] {
            pp(&pg, sub, table, &[]).expect(65).stderr_has(msg);
        }
    }
    pp(&pg, "ensure", "nope", &[]).expect(66).stderr_has(&["table 'nope' does not exist"]);
    assert_eq!(names(&pg, "by_id").len(), 0);
}

#[test]
fn usage_errors() {
    let pg = Pg::new();
    device_logs(&pg, "device_logs");
    for (args, msg) in [
        (vec!["retain", "device_logs", "--keep", "3"], "exactly one of --drop and --detach"),
        (vec!["retain", "device_logs", "--drop", "--detach", "--keep", "3"], "exactly one of --drop and --detach"),
        (vec!["retain", "device_logs", "--drop"], "retain needs --keep N"),
        (vec!["ensure", "device_logs", "--keep", "3"], "--keep does not apply"),
        (vec!["ensure", "device_logs", "--ahead", "1", "--to", "2025-01"], "--ahead or --to, not both"),
        (vec!["ensure", "device_logs", "--interval", "weekly"], "not one of daily, monthly, yearly"),
        (vec!["ensure", "device_logs", "--from", "2025-03", "--to", "2025-01"], "--to is before --from"),
        (vec!["frobnicate", "device_logs"], "unknown subcommand"),
        (vec!["ensure"], "missing argument TABLE"),
    ] {
        cmd("pg-partition")
            .args(&args)
            .args(["--db", &pg.url])
            .expect(64)
            .stderr_has(&[msg, "Try 'pg-partition --help'"]);
    }
    // A typo guard: 24 000 monthly partitions is not what anyone meant.
    pp(&pg, "ensure", "device_logs", &["--from", "0025-01", "--to", "2025-01"]).expect(64).stderr_has(&["--limit"]);
    let dir = TempDir::new();
    pp(&pg, "retain", "device_logs", &["--keep", "1", "--drop", "--archive", &dir.str("missing")])
        .expect(66)
        .stderr_has(&["archive directory", "does not exist"]);
    assert!(names(&pg, "device_logs").is_empty());
}

#[test]
fn schema_qualified_awkward_and_long_names() {
    let pg = Pg::new();
    pg.exec("CREATE SCHEMA \"Ops Data\"");
    device_logs(&pg, "\"Ops Data\".\"Device Logs\"");
    let t = "\"Ops Data\".\"Device Logs\"";
    pp(&pg, "ensure", t, &["--from", "2025-01", "--to", "2025-02"]).ok();
    pp(&pg, "ensure", t, &["--from", "2025-01", "--to", "2025-02"]).ok();
    assert_eq!(
        pg.rows(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relispartition AND c.relkind = 'r' ORDER BY 2"
        ),
        vec!["Ops Data|Device Logs_2025_01", "Ops Data|Device Logs_2025_02"]
    );
    let l = pp(&pg, "list", t, &[]).ok().json_lines();
    assert_eq!(l[0]["schema"], "Ops Data");
    assert_eq!(l[0]["name"], "Device Logs_2025_01");

    // 60 bytes of name: TABLE_2025_01 would pass PostgreSQL's 63-byte limit (and be cut).
    let long = "l".repeat(60);
    device_logs(&pg, &long);
    pp(&pg, "ensure", &long, &["--from", "2025-01", "--to", "2025-02"]).ok();
    pp(&pg, "ensure", &long, &["--from", "2025-01", "--to", "2025-02"]).ok();
    let n = names(&pg, &long);
    assert_eq!(n.len(), 2, "{n:?}");
    for (name, suffix) in n.iter().zip(["_2025_01", "_2025_02"]) {
        assert_eq!(name.len(), 63, "{name}");
        assert!(name.ends_with(suffix) && name.starts_with("lllll"), "{name}");
    }
    // The same prefix, another table: other names, no collision.
    let long2 = format!("{}x", "l".repeat(59));
    device_logs(&pg, &long2);
    pp(&pg, "ensure", &long2, &["--from", "2025-01", "--to", "2025-01"]).ok();
    assert_ne!(names(&pg, &long2)[0], n[0]);
}

#[test]
fn rows_in_the_default_partition_move_into_the_new_partition() {
    let pg = Pg::new();
    device_logs(&pg, "device_logs");
    pg.exec("CREATE TABLE device_logs_default PARTITION OF device_logs DEFAULT");
    pg.exec(
        "INSERT INTO device_logs (device_serial, level, message, received_at) \
         SELECT 'd' || g, 'info', 'jan ' || g, '2025-01-01'::timestamptz + g * interval '1 hour' FROM generate_series(0, 743) g; \
         INSERT INTO device_logs (device_serial, level, message, received_at) VALUES \
         ('x', 'info', 'feb', '2025-02-01 00:00:00+00'), ('x', 'info', 'far future', '2031-06-01 00:00:00+00')",
    );
    let before = pg.rows("SELECT id, device_serial, message, received_at FROM device_logs ORDER BY id");
    assert_eq!(before.len(), 746);
    let r = pp(&pg, "ensure", "device_logs", &["--from", "2024-12", "--to", "2025-02"]).ok();
    r.stderr_has(&[
        "moved 744 rows out of the default partition into 'device_logs_2025_01'",
        "moved 1 rows out of the default partition into 'device_logs_2025_02'",
    ]);
    assert!(!r.stderr().contains("2024_12"), "{}", r.describe());
    assert_eq!(pg.rows("SELECT id, device_serial, message, received_at FROM device_logs ORDER BY id"), before);
    assert_eq!(pg.count("device_logs_2025_01"), 744);
    assert_eq!(pg.count("device_logs_2025_02"), 1);
    assert_eq!(pg.rows("SELECT message FROM device_logs_default"), vec!["far future"]);
    // The id sequence is untouched: new rows do not collide.
    pg.exec("INSERT INTO device_logs (device_serial, level, message, received_at) VALUES ('y','i','m','2025-01-05 00:00:00+00')");
    assert_eq!(pg.one("SELECT max(id) FROM device_logs_2025_01"), "747");
    let l = pp(&pg, "list", "device_logs", &[]).ok().json_lines();
    let def = l.iter().find(|p| p["default"] == true).unwrap();
    assert_eq!(def["rows"], 1);
    assert_eq!(def["name"], "device_logs_default");
}

#[test]
fn moving_rows_is_refused_when_a_foreign_key_references_the_table() {
    let pg = Pg::new();
    device_logs(&pg, "device_logs");
    pg.exec("CREATE TABLE device_logs_default PARTITION OF device_logs DEFAULT");
    pg.exec("CREATE TABLE notes (log_id bigint, at timestamptz, FOREIGN KEY (log_id, at) REFERENCES device_logs ON DELETE CASCADE)");
    pg.exec("INSERT INTO device_logs (device_serial, level, message, received_at) VALUES ('x','i','m','2025-01-05 00:00:00+00')");
    pg.exec("INSERT INTO notes SELECT id, received_at FROM device_logs");
    pp(&pg, "ensure", "device_logs", &["--from", "2025-01", "--to", "2025-02"]).expect(65).stderr_has(&[
        "holds 1 rows for 2025-01",
        "foreign key",
        "notes",
        "nothing was changed",
    ]);
    assert_eq!(names(&pg, "device_logs"), vec!["device_logs_default"]);
    assert_eq!(pg.count("notes"), 1);
    // Without rows to move, the foreign key is no obstacle.
    pp(&pg, "ensure", "device_logs", &["--from", "2025-03", "--to", "2025-03"]).ok();
}

#[test]
fn conflicts_are_refused_and_nothing_changes() {
    let pg = Pg::new();
    device_logs(&pg, "device_logs");
    pg.exec("CREATE TABLE device_logs_odd PARTITION OF device_logs FOR VALUES FROM ('2025-02-15 00:00:00+00') TO ('2025-03-15 00:00:00+00')");
    pp(&pg, "ensure", "device_logs", &["--from", "2025-01", "--to", "2025-03"]).expect(65).stderr_has(&[
        "period 2025-02 overlaps partition 'device_logs_odd'",
        "its bounds are not where pg-partition's monthly periods start, at 00:00 UTC",
        "nothing was changed",
    ]);
    assert_eq!(names(&pg, "device_logs"), vec!["device_logs_odd"]);
    // A detached partition keeps its name: say so rather than fail obscurely.
    pg.exec("CREATE TABLE device_logs_2025_05 (LIKE device_logs)");
    pp(&pg, "ensure", "device_logs", &["--from", "2025-04", "--to", "2025-05"]).expect(65).stderr_has(&[
        "'device_logs_2025_05'",
        "not a partition",
        "ATTACH PARTITION",
    ]);
    assert_eq!(names(&pg, "device_logs"), vec!["device_logs_odd"]);
}

#[test]
fn dry_run_prints_the_sql_and_changes_nothing() {
    let pg = Pg::new();
    device_logs(&pg, "device_logs");
    pg.exec("CREATE TABLE device_logs_default PARTITION OF device_logs DEFAULT");
    pg.exec("INSERT INTO device_logs (device_serial, level, message, received_at) VALUES ('x','i','m','2025-01-05 00:00:00+00')");
    let r = pp(&pg, "ensure", "device_logs", &["--from", "2025-01", "--to", "2025-02", "--dry-run"]).ok();
    let out = r.stdout();
    assert!(out.contains("BEGIN;\n") && out.ends_with("COMMIT;\n"), "{out}");
    assert!(out.contains(
        "CREATE TABLE \"public\".\"device_logs_2025_02\" PARTITION OF \"public\".\"device_logs\" \
         FOR VALUES FROM ('2025-02-01 00:00:00+00') TO ('2025-03-01 00:00:00+00');\n"
    ));
    assert!(out.contains("WITH moved AS (DELETE FROM \"public\".\"device_logs_default\""), "{out}");
    r.stderr_has(&["would move 1 rows"]);
    assert_eq!(names(&pg, "device_logs"), vec!["device_logs_default"]);
    // The printed script does what the tool would have done.
    let mut c = pg.client();
    c.batch_execute(&out).unwrap();
    assert_eq!(names(&pg, "device_logs").len(), 3);
    assert_eq!(pg.count("device_logs_2025_01"), 1);
}

/// device_logs with partitions whose names lie about their bounds, one straddling the
/// cut-off, and rows in each.
fn retention_table(pg: &Pg) {
    device_logs(pg, "device_logs");
    pg.exec(
        "CREATE TABLE device_logs_default PARTITION OF device_logs DEFAULT;
         CREATE TABLE device_logs_2024_10 PARTITION OF device_logs FOR VALUES FROM ('2024-10-01 00:00:00+00') TO ('2024-11-01 00:00:00+00');
         CREATE TABLE misnamed_2099_01 PARTITION OF device_logs FOR VALUES FROM ('2024-11-01 00:00:00+00') TO ('2024-12-01 00:00:00+00');
         CREATE TABLE straddles PARTITION OF device_logs FOR VALUES FROM ('2024-12-01 00:00:00+00') TO ('2025-01-15 00:00:00+00');
         CREATE TABLE device_logs_2000_01 PARTITION OF device_logs FOR VALUES FROM ('2025-01-15 00:00:00+00') TO ('2025-02-01 00:00:00+00');
         CREATE TABLE device_logs_2025_07 PARTITION OF device_logs FOR VALUES FROM ('2025-07-01 00:00:00+00') TO ('2025-08-01 00:00:00+00');
         INSERT INTO device_logs (device_serial, level, message, device_timestamp, received_at)
           SELECT 'd' || g, 'info', 'row ' || g, g * 1000, t
           FROM (VALUES ('2024-10-03 10:00:00+00'::timestamptz), ('2024-10-31 23:59:59.999999+00'), ('2024-11-11 11:11:11.5+00'),
                        ('2024-12-24 00:00:00+00'), ('2025-01-20 00:00:00+00'), ('2025-07-04 00:00:00+00'), ('2030-01-01 00:00:00+00')) v(t),
                generate_series(1, 3) g;",
    );
}

#[test]
fn retain_drops_exactly_the_partitions_wholly_older_than_the_cut_off() {
    let pg = Pg::new();
    retention_table(&pg);
    // Now is 2025-07-10, keep 6: the cut-off is 2025-01-01.
    let now = ["--now", "2025-07-10T12:00:00Z"];
    let dry = pp(&pg, "retain", "device_logs", &["--keep", "6", "--drop", "--dry-run"]).args(now).ok();
    assert!(
        dry.stdout()
            .contains("DROP TABLE \"public\".\"device_logs_2024_10\";\nDROP TABLE \"public\".\"misnamed_2099_01\";\n"),
        "{}",
        dry.describe()
    );
    assert_eq!(names(&pg, "device_logs").len(), 6);
    let r = pp(&pg, "retain", "device_logs", &["--keep", "6", "--drop"]).args(now).ok();
    assert_eq!(r.stderr(), "", "{}", r.describe());
    assert_eq!(
        names(&pg, "device_logs"),
        vec!["device_logs_2000_01", "device_logs_2025_07", "device_logs_default", "straddles"]
    );
    assert_eq!(
        pg.one("SELECT count(*) FROM pg_class WHERE relname IN ('device_logs_2024_10', 'misnamed_2099_01')"),
        "0"
    );
    assert_eq!(pg.count("device_logs"), 12);
    // Again: nothing more to do.
    pp(&pg, "retain", "device_logs", &["--keep", "6", "--drop"]).args(now).ok();
    assert_eq!(names(&pg, "device_logs").len(), 4);
    // Keep 0 a year later: everything ends before 2026-07-01 except the default, but the
    // last partition stays, with a warning that cron will mail.
    let r = pp(&pg, "retain", "device_logs", &["--keep", "0", "--drop", "--now", "2026-07-02T00:00:00Z", "-v"]).ok();
    r.stderr_has(&["keeping 'device_logs_2025_07'", "it is the last partition", "dropped 'straddles'"]);
    assert_eq!(names(&pg, "device_logs"), vec!["device_logs_2025_07", "device_logs_default"]);
    assert_eq!(pg.rows("SELECT received_at >= '2030-01-01' FROM device_logs_default"), vec!["t", "t", "t"]);
}

#[test]
fn retain_detach_leaves_the_tables_in_place() {
    let pg = Pg::new();
    retention_table(&pg);
    pp(&pg, "retain", "device_logs", &["--keep", "6", "--detach", "--now", "2025-07-10T12:00:00Z"]).ok();
    assert_eq!(names(&pg, "device_logs").len(), 4);
    assert_eq!(
        pg.rows("SELECT relname, relispartition FROM pg_class WHERE relname IN ('device_logs_2024_10', 'misnamed_2099_01') ORDER BY 1"),
        vec!["device_logs_2024_10|f", "misnamed_2099_01|f"]
    );
    assert_eq!(pg.count("device_logs_2024_10"), 6);
    assert_eq!(pg.count("misnamed_2099_01"), 3);
}

fn gunzip(path: &std::path::Path) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut s).unwrap();
    s
}

fn sha256_hex(path: &std::path::Path) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn retain_archives_verified_private_files_before_dropping() {
    use std::os::unix::fs::PermissionsExt;
    let pg = Pg::new();
    retention_table(&pg);
    let dir = TempDir::new();
    let archive = dir.str("");
    let r = pp(
        &pg,
        "retain",
        "device_logs",
        &["--keep", "6", "--drop", "--archive", &archive, "--now", "2025-07-10T12:00:00Z", "-v"],
    )
    .ok();
    r.stderr_has(&["dropped 'device_logs_2024_10'", "after archiving 6 rows", "sha256"]);
    assert_eq!(names(&pg, "device_logs").len(), 4);
    let mut files: Vec<String> =
        std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(
        files,
        vec![
            "device_logs_2024_10.manifest.json",
            "device_logs_2024_10.ndjson.gz",
            "device_logs_2024_10.ndjson.gz.sha256",
            "misnamed_2099_01.manifest.json",
            "misnamed_2099_01.ndjson.gz",
            "misnamed_2099_01.ndjson.gz.sha256",
        ]
    );
    for f in &files {
        let mode = std::fs::metadata(dir.path(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let gz = dir.path("device_logs_2024_10.ndjson.gz");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("device_logs_2024_10.manifest.json")).unwrap()).unwrap();
    assert_eq!(m["rows"], 6);
    assert_eq!(m["sha256"], sha256_hex(&gz));
    assert_eq!(m["from"], "2024-10-01T00:00:00Z");
    assert_eq!(m["to"], "2024-11-01T00:00:00Z");
    assert_eq!(m["partition"], "public.device_logs_2024_10");
    assert_eq!(
        std::fs::read_to_string(dir.path("device_logs_2024_10.ndjson.gz.sha256")).unwrap(),
        format!("{}  device_logs_2024_10.ndjson.gz\n", sha256_hex(&gz))
    );
    let text = gunzip(&gz);
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(lines[6]["$end"]["rows"], 6);
    let mut stamps: Vec<&str> = lines[..6].iter().map(|l| l["received_at"].as_str().unwrap()).collect();
    stamps.sort();
    assert_eq!(stamps[0], "2024-10-03T10:00:00Z");
    assert_eq!(stamps[5], "2024-10-31T23:59:59.999999Z");
    // A second archive of the same name never overwrites the first.
    pg.exec("CREATE TABLE device_logs_2024_10 PARTITION OF device_logs FOR VALUES FROM ('2024-10-01 00:00:00+00') TO ('2024-11-01 00:00:00+00')");
    pp(
        &pg,
        "retain",
        "device_logs",
        &["--keep", "6", "--drop", "--archive", &archive, "--now", "2025-07-10T12:00:00Z"],
    )
    .ok();
    assert!(dir.path("device_logs_2024_10.1.ndjson.gz").exists());
    assert_eq!(sha256_hex(&gz), m["sha256"].as_str().unwrap());
}

#[test]
fn archives_keep_every_type_exactly() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TYPE mood AS ENUM ('ok', 'sad');
         CREATE TABLE t (id int8 NOT NULL, at timestamptz NOT NULL, naive timestamp, day date, i2 int2, i4 int4,
           f4 real, f8 float8, n numeric(30,10), b bytea, ok bool, doc jsonb, raw json, tags text[], nums int[],
           u uuid, ip inet, span interval, m mood, big int8 GENERATED ALWAYS AS (id * 2) STORED)
         PARTITION BY RANGE (at);
         CREATE TABLE t_2024_01 PARTITION OF t FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00');
         CREATE TABLE t_2025_01 PARTITION OF t FOR VALUES FROM ('2025-01-01 00:00:00+00') TO ('2025-02-01 00:00:00+00');
         INSERT INTO t (id, at, naive, day, i2, i4, f4, f8, n, b, ok, doc, raw, tags, nums, u, ip, span, m) VALUES
          (9007199254740993, '2024-01-05 10:00:00.000001+00', '2024-01-05 12:00:00', '2024-02-29', -32768, 2147483647,
           0.1, 0.30000000000000004, 12345678901234567890.0123456789, '\\x00ff10', true, '{\"a\": [1, 2.50, null], \"b\": {\"c\": \"é\"}}',
           '{\"x\":  1}', '{a,\"b c\",NULL}', '{1,2,3}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '10.0.0.1/8', '1 day 02:03:04', 'sad'),
          (-1, '2024-01-31 23:59:59.999999+00', 'infinity', NULL, NULL, NULL, 'NaN', '-Infinity', 'NaN', '', false, 'null', '\"s\"', '{}', NULL, NULL, NULL, NULL, NULL),
          (0, '2024-01-01 00:00:00+00', NULL, NULL, NULL, NULL, '-0', 1e300, -0.5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let dir = TempDir::new();
    pp(&pg, "retain", "t", &["--keep", "1", "--drop", "--archive", &dir.str(""), "--now", "2025-01-10T00:00:00Z"]).ok();
    assert_eq!(names(&pg, "t"), vec!["t_2025_01"]);
    let text = gunzip(&dir.path("t_2024_01.ndjson.gz"));
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.pop().unwrap(),
        r#"{"$end":{"rows":3,"source":"postgres","table":"public.t","partition":"public.t_2024_01"}}"#
    );
    lines.sort();
    assert_eq!(
        lines,
        vec![
            r#"{"id":-1,"at":"2024-01-31T23:59:59.999999Z","naive":"infinity","day":null,"i2":null,"i4":null,"f4":{"$float":"NaN"},"f8":{"$float":"-Infinity"},"n":{"$float":"NaN"},"b":{"$base64":true,"encoded":""},"ok":false,"doc":"null","raw":"\"s\"","tags":[],"nums":null,"u":null,"ip":null,"span":null,"m":null}"#,
            r#"{"id":0,"at":"2024-01-01T00:00:00Z","naive":null,"day":null,"i2":null,"i4":null,"f4":-0.0,"f8":1e300,"n":-0.5000000000,"b":null,"ok":null,"doc":null,"raw":null,"tags":null,"nums":null,"u":null,"ip":null,"span":null,"m":null}"#,
            r#"{"id":9007199254740993,"at":"2024-01-05T10:00:00.000001Z","naive":"2024-01-05T12:00:00Z","day":"2024-02-29","i2":-32768,"i4":2147483647,"f4":0.10000000149011612,"f8":0.30000000000000004,"n":12345678901234567890.0123456789,"b":{"$base64":true,"encoded":"AP8Q"},"ok":true,"doc":{"a":[1,2.50,null],"b":{"c":"é"}},"raw":{"x":1},"tags":["a","b c",null],"nums":[1,2,3],"u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","ip":"10.0.0.1/8","span":"1 day 02:03:04","m":"sad"}"#,
        ]
    );
}

/// Makes every CREATE TABLE of a partition of `table` after the first `after` sleep `secs`
/// seconds, so that a run can be caught in the middle of its transaction.
fn slow_ddl(pg: &Pg, table: &str, after: i32, secs: f64) {
    pg.exec(&format!(
        "CREATE FUNCTION slow_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF (SELECT count(*) FROM pg_inherits WHERE inhparent = '{table}'::regclass) > {after} THEN
             PERFORM pg_sleep({secs});
           END IF;
         END $$;
         CREATE EVENT TRIGGER slow_ddl ON ddl_command_end WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION slow_ddl();"
    ));
}

fn spawn(pg: &Pg, args: &[&str]) -> std::process::Child {
    Command::new(bin("pg-partition"))
        .args(args)
        .args(["--db", &pg.url])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until some backend of this database runs `pg_sleep` inside our DDL.
fn wait_for_sleeping_backend(pg: &Pg) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids = pg.rows(&format!(
            "SELECT pid FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'pg-partition' AND wait_event = 'PgSleep'",
            pg.name
        ));
        if let Some(p) = pids.first() {
            return p.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "pg-partition never reached the slow DDL");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_until_gone(pg: &Pg, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.one(&format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}")) != "0" {
        assert!(Instant::now() < deadline, "backend {pid} did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_9_mid_run_leaves_the_catalog_unchanged() {
    let pg = Pg::new();
    device_logs(&pg, "device_logs");
    pg.exec("CREATE TABLE device_logs_default PARTITION OF device_logs DEFAULT");
    pg.exec("INSERT INTO device_logs (device_serial, level, message, received_at) VALUES ('x','i','m','2024-03-05 00:00:00+00')");
    // The 4th partition created sleeps: by then three exist inside the transaction, and the
    // default partition's row for 2024-03 has been moved.
    slow_ddl(&pg, "device_logs", 4, 3.0);
    let mut child = spawn(&pg, &["ensure", "device_logs", "--from", "2024-01", "--to", "2024-12"]);
    let backend = wait_for_sleeping_backend(&pg);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    wait_until_gone(&pg, backend);
    assert_eq!(names(&pg, "device_logs"), vec!["device_logs_default"]);
    assert_eq!(pg.count("device_logs_default"), 1);
    // The lock died with the connection: the next run succeeds.
    pg.exec("DROP EVENT TRIGGER slow_ddl");
    pp(&pg, "ensure", "device_logs", &["--from", "2024-01", "--to", "2024-12"]).ok();
    assert_eq!(names(&pg, "device_logs").len(), 13);
    assert_eq!(pg.count("device_logs_2024_03"), 1);
}

#[test]
fn kill_9_mid_retain_drops_nothing() {
    let pg = Pg::new();
    retention_table(&pg);
    pg.exec(
        "CREATE FUNCTION slow_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3); END $$;
         CREATE EVENT TRIGGER slow_drop ON sql_drop EXECUTE FUNCTION slow_drop();",
    );
    let dir = TempDir::new();
    let archive = dir.str("");
    let mut child = spawn(
        &pg,
        &["retain", "device_logs", "--keep", "6", "--drop", "--archive", &archive, "--now", "2025-07-10T12:00:00Z"],
    );
    let backend = wait_for_sleeping_backend(&pg);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until_gone(&pg, backend);
    assert_eq!(names(&pg, "device_logs").len(), 6);
    assert_eq!(pg.count("device_logs"), 21);
}

#[test]
fn a_second_run_waits_then_exits_75_having_changed_nothing() {
    let pg = Pg::new();
    device_logs(&pg, "device_logs");
    // Another run holds the lock (the same key pg-partition uses).
    let mut holder = pg.client();
    holder
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(1885824626, 'device_logs'::regclass::oid::int8::int4)")
        .unwrap();
    let t = Instant::now();
    let r = pp(&pg, "ensure", "device_logs", &["--wait", "1"]).expect(75);
    assert!(t.elapsed() >= Duration::from_millis(900), "it waited");
    r.stderr_has(&["lock 'device_logs': another pg-partition", "holds it (server pid", "changed nothing"]);
    pp(&pg, "retain", "device_logs", &["--wait", "0", "--keep", "1", "--drop"]).expect(75);
    assert!(names(&pg, "device_logs").is_empty());
    holder.batch_execute("COMMIT").unwrap();
    pp(&pg, "ensure", "device_logs", &["--wait", "1"]).ok();
    assert_eq!(names(&pg, "device_logs").len(), 2);
}

#[test]
fn two_concurrent_runs_never_both_change() {
    let pg = Pg::new();
    device_logs(&pg, "device_logs");
    // Long enough that the impatient run still finds the lock held on a loaded machine.
    slow_ddl(&pg, "device_logs", 0, 2.0);
    let args = ["ensure", "device_logs", "--from", "2025-01", "--to", "2025-03", "--verbose"];
    let first = spawn(&pg, &args);
    wait_for_sleeping_backend(&pg);
    // One gives up quickly, one waits long enough for the first to finish.
    let impatient = spawn(&pg, &[&args[..], &["--wait", "0.2"]].concat());
    let patient = spawn(&pg, &[&args[..], &["--wait", "30"]].concat());
    let out = |c: std::process::Child| {
        let o = c.wait_with_output().unwrap();
        (o.status.code().unwrap(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (c1, e1) = out(first);
    let (c2, e2) = out(impatient);
    let (c3, e3) = out(patient);
    assert_eq!((c1, c2, c3), (0, 75, 0), "{e1}\n{e2}\n{e3}");
    assert!(e1.contains("3 created, 0 already present"), "{e1}");
    assert!(e2.contains("another pg-partition"), "{e2}");
    assert!(e3.contains("0 created, 3 already present"), "{e3}");
    assert_eq!(names(&pg, "device_logs").len(), 3);
}

#[test]
fn list_reports_bounds_sizes_and_the_default() {
    let pg = Pg::new();
    retention_table(&pg);
    pg.exec("ANALYZE device_logs");
    let l = pp(&pg, "list", "device_logs", &[]).ok().json_lines();
    let got: Vec<(String, String, String)> =
        l.iter().map(|p| (p["name"].as_str().unwrap().into(), p["from"].to_string(), p["to"].to_string())).collect();
    assert_eq!(
        got[0],
        ("device_logs_2024_10".into(), "\"2024-10-01T00:00:00Z\"".into(), "\"2024-11-01T00:00:00Z\"".into())
    );
    assert_eq!(got[2], ("straddles".into(), "\"2024-12-01T00:00:00Z\"".into(), "\"2025-01-15T00:00:00Z\"".into()));
    assert_eq!(got[5], ("device_logs_default".into(), "null".into(), "null".into()));
    assert_eq!(l[0]["estimated_rows"], 6);
    assert_eq!(l[0]["default"], false);
    assert!(l[0]["size_bytes"].as_i64().unwrap() > 0);
    assert_eq!(l[5]["default"], true);
    assert_eq!(l[5]["rows"], 3);
}

#[test]
fn archives_reload_with_pg_load_into_an_empty_copy() {
    let pg = Pg::new();
    retention_table(&pg);
    pg.exec("ALTER TABLE device_logs ADD COLUMN payload bytea, ADD COLUMN score float8, ADD COLUMN meta jsonb, ADD COLUMN tags text[]");
    pg.exec("UPDATE device_logs SET payload = '\\x00ff', score = 'NaN', meta = '{\"a\": [1, 2.5]}', tags = '{x,y}' WHERE device_serial = 'd1'");
    pg.exec("UPDATE device_logs SET score = 0.1, meta = 'null', tags = '{}' WHERE device_serial = 'd2'");
    let cols = "id, device_serial, level, message, device_timestamp, received_at, payload, score, meta, tags";
    let want = pg.rows(&format!("SELECT {cols} FROM device_logs WHERE received_at < '2024-12-01' ORDER BY id"));
    assert_eq!(want.len(), 9);
    let dir = TempDir::new();
    pp(
        &pg,
        "retain",
        "device_logs",
        &["--keep", "6", "--drop", "--archive", &dir.str(""), "--now", "2025-07-10T12:00:00Z"],
    )
    .ok();
    // LIKE copies no key, so several archives go into one table with --mode append.
    pg.exec("CREATE TABLE restored (LIKE device_logs)");
    for f in ["device_logs_2024_10.ndjson.gz", "misnamed_2099_01.ndjson.gz"] {
        cmd("pg-load").args(["restored", "--mode", "append", "--db", &pg.url]).stdin(gunzip(&dir.path(f))).ok();
    }
    assert_eq!(pg.rows(&format!("SELECT {cols} FROM restored ORDER BY id")), want);
}

#[test]
fn a_commit_whose_reply_is_lost_is_settled_from_the_server_never_guessed() {
    use crate::pg_proxy::{Fault, PgProxy};
    let pg = Pg::new();
    device_logs(&pg, "device_logs");
    // The reply cut: the server committed, and says so when asked.
    let proxy = PgProxy::start(&pg.url, Fault::CutCommitReply(0));
    let r = cmd("pg-partition")
        .args(["ensure", "device_logs", "--db", &proxy.url(&pg.url), "--from", "2024-01", "--to", "2024-02"])
        .run();
    assert!(proxy.fired(), "the proxy saw no COMMIT");
    assert_eq!(r.code(), 0, "{}", r.describe());
    r.stderr_has(&["the connection broke during COMMIT", "the server reports transaction", "committed"]);
    assert_eq!(names(&pg, "device_logs"), ["device_logs_2024_01", "device_logs_2024_02"]);
    // The COMMIT never reaches the server, which aborts: nothing was dropped, and it says so.
    let proxy = PgProxy::start(&pg.url, Fault::DropCommit);
    let r = cmd("pg-partition")
        .args(["retain", "device_logs", "--db", &proxy.url(&pg.url), "--keep", "0", "--drop"])
        .args(["--now", "2024-06-10T00:00:00Z"])
        .run();
    assert!(proxy.fired(), "the proxy saw no COMMIT");
    assert_eq!(r.code(), 69, "{}", r.describe());
    r.stderr_has(&["aborted: nothing was committed"]);
    assert!(!r.stderr().contains("dropped '"), "{}", r.describe());
    assert_eq!(names(&pg, "device_logs"), ["device_logs_2024_01", "device_logs_2024_02"]);
}
