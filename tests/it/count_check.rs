//! count-check against real SQLite files and a real PostgreSQL.

use crate::harness::*;
use serde_json::Value;

fn check(pg: &Pg, args: &[&str]) -> Cmd {
    cmd("count-check").args(["--db", &pg.url]).args(args)
}

/// The one report line of a single check.
fn report(r: &Run) -> Value {
    let lines = r.json_lines();
    assert_eq!(lines.len(), 1, "{}", r.describe());
    lines.into_iter().next().unwrap()
}

/// A SQLite table, loaded into PostgreSQL by the real tools (sqlite-dump | pg-load), and
/// the dump kept as an NDJSON file: the three sides of every pairing.
struct Trio {
    dir: TempDir,
    pg: Pg,
}

impl Trio {
    fn new(sqlite_sql: &str, pg_sql: &str, table: &str, load_args: &[&str]) -> Trio {
        let dir = TempDir::new();
        sqlite_db(&dir.path("app.db"), sqlite_sql);
        let pg = Pg::new();
        pg.exec(pg_sql);
        let dump = cmd("sqlite-dump").arg(dir.path("app.db")).arg(table).ok();
        std::fs::write(dir.path(&format!("{table}.ndjson")), &dump.out.stdout).unwrap();
        cmd("pg-load").args(["--db", &pg.url, table]).args(load_args).stdin(dump.out.stdout).ok();
        Trio { dir, pg }
    }
    fn sqlite(&self, table: &str) -> String {
        format!("sqlite:{}:{table}", self.dir.str("app.db"))
    }
    fn ndjson(&self, table: &str) -> String {
        format!("ndjson:{}", self.dir.str(&format!("{table}.ndjson")))
    }
}

const TYPED_SQLITE: &str = "CREATE TABLE things (
    id INTEGER PRIMARY KEY, name TEXT, active INTEGER, created TEXT, created_ms INTEGER, meta TEXT, tags TEXT,
    score REAL, price TEXT, pic BLOB, code TEXT, uid TEXT, plain TEXT);
  INSERT INTO things VALUES
    (1, 'héllo', 1, '2024-01-05T10:00:00Z', 1704448800123, '{\"b\":[1,2],\"a\":{\"x\":null}}', '[\"a\",\"b\"]',
     0.30000000000000004, '12.5', x'00ff10', 'ab', '8F14E45F-CEEA-467F-A0E6-8A1A3B7C9D20', 'as is'),
    (2, 'two', 0, '2024-01-05 12:00:00+02:00', 0, '[]', '[]', 1e300, '-0.004', NULL, 'abc', NULL, NULL),
    (3, NULL, NULL, '2024-01-05T10:00:00.1234567Z', NULL, NULL, NULL, NULL, NULL, x'', NULL, NULL, ''),
    (10, 'ten', 1, '1969-07-20 20:17:40', -1, '{\"deep\":{\"deeper\":[1.50, \"ü\"]}}', '[\"x,y\", \"q\\\"r\"]', -0.0, '7', x'41', 'x', NULL, 'z');";

const TYPED_PG: &str = "CREATE TABLE things (
    id bigint PRIMARY KEY, name text, active boolean, created timestamptz, created_ms timestamptz, meta jsonb, tags text[],
    score double precision, price numeric(10,2), pic bytea, code char(5), uid uuid, plain text,
    added_at timestamptz DEFAULT now())";

#[test]
fn equal_data_holds_in_every_pairing_and_mode() {
    let t = Trio::new(TYPED_SQLITE, TYPED_PG, "things", &["--epoch-unit", "ms"]);
    // The destination written differently from the source, as PostgreSQL stores it anyway:
    // jsonb reorders keys, the float is the nearest double to 0.3.
    t.pg.exec("UPDATE things SET score = 0.3 WHERE id = 1");
    let (sq, nd, pg) = (t.sqlite("things"), t.ndjson("things"), "pg:things".to_string());
    let pairs = [(&sq, &pg), (&nd, &pg), (&pg, &sq), (&pg, &nd), (&sq, &nd), (&nd, &sq), (&pg, &pg)];
    for (a, b) in pairs {
        for mode in [&[][..], &["--full"][..], &["--sample", "3", "--seed", "1"][..]] {
            // The destination's added column is a source column when PostgreSQL is the source.
            let ignore: &[&str] = if a == &pg && b != &pg { &["--ignore", "added_at"] } else { &[] };
            let r = check(&t.pg, &["--epoch-unit", "ms"]).args(mode).args(ignore).args([a.as_str(), b.as_str()]).run();
            assert_eq!(r.code(), 0, "{a} {b} {mode:?}\n{}", r.describe());
            let rep = report(&r);
            assert_eq!(rep["ok"], true);
            assert_eq!(rep["source_rows"], 4, "{}", r.describe());
        }
    }
    let r = check(&t.pg, &["--epoch-unit", "ms", "--full", &sq, &pg]).ok();
    r.stderr_has(&["Source: 4 rows → Postgres: 4 rows ✓", "4 same, 0 missing, 0 extra, 0 changed ✓"]);
    let rep = report(&r);
    assert_eq!(rep["same"], 4);
    assert_eq!(rep["dest_only_columns"], serde_json::json!(["added_at"]));
    // --strict-columns counts the destination's additions.
    let r = check(&t.pg, &["--epoch-unit", "ms", "--full", "--strict-columns", &sq, &pg]).expect(1);
    assert_eq!(report(&r)["changed"], 4);
    r.stderr_has(&["destination columns the source lacks: added_at"]);
    // Without pg-load's --epoch-unit, the epoch column cannot be read as pg-load read it.
    let r = check(&t.pg, &["--full", &sq, &pg]).expect(1);
    let rep = report(&r);
    assert_eq!(rep["changed_records"][0]["fields"][0]["field"], "created_ms");
    assert!(rep["changed_records"][0]["fields"][0]["source_error"].as_str().unwrap().contains("--epoch-unit"));
}

/// One value on each side, compared as a column of `pg_type`: equal or not.
fn pair_cases(cases: &[(&str, &str, &str, bool)]) {
    let dir = TempDir::new();
    let pg = Pg::new();
    // Sessions in a zone other than UTC, as a server may be set: what is read as text must
    // not depend on it (pg-load reads in UTC).
    pg.exec(&format!("ALTER DATABASE \"{}\" SET TimeZone = 'America/New_York'", pg.name));
    let mut sql = String::new();
    for (i, (pg_type, sqlite_value, pg_value, _)) in cases.iter().enumerate() {
        sql.push_str(&format!(
            "CREATE TABLE c{i} (id INTEGER PRIMARY KEY, v); INSERT INTO c{i} VALUES (1, {sqlite_value});"
        ));
        pg.exec(&format!(
            "CREATE TABLE c{i} (id int PRIMARY KEY, v {pg_type}); INSERT INTO c{i} VALUES (1, {pg_value});"
        ));
    }
    sqlite_db(&dir.path("c.db"), &sql);
    for (i, (pg_type, sqlite_value, pg_value, equal)) in cases.iter().enumerate() {
        let r = check(&pg, &["--full", &format!("sqlite:{}:c{i}", dir.str("c.db")), &format!("pg:c{i}")]).run();
        let want = if *equal { 0 } else { 1 };
        assert_eq!(r.code(), want, "{pg_type}: {sqlite_value} vs {pg_value}\n{}", r.describe());
        if !equal {
            let rep = report(&r);
            assert_eq!(rep["changed"], 1);
            assert_eq!(rep["changed_records"][0]["key"]["id"], 1);
            assert_eq!(rep["changed_records"][0]["fields"][0]["field"], "v");
        }
    }
}

#[test]
fn each_normalization_rule_and_each_kind_of_change() {
    pair_cases(&[
        // timestamps: the same instant in any notation; one microsecond apart is a change
        ("timestamptz", "'2024-01-05 12:00:00+02:00'", "'2024-01-05T10:00:00Z'", true),
        ("timestamptz", "'2024-01-05T10:00:00.000001Z'", "'2024-01-05T10:00:00Z'", false),
        ("timestamptz", "'2024-01-05T10:00:00.0000004Z'", "'2024-01-05T10:00:00Z'", true),
        ("timestamptz(3)", "'2024-01-05T10:00:00.1234Z'", "'2024-01-05T10:00:00.123Z'", true),
        ("timestamp", "'2024-01-05 10:00:00'", "'2024-01-05 10:00:00'", true),
        ("date", "'2024-02-29'", "'2024-02-29'", true),
        ("date", "'2024-02-29'", "'2024-02-28'", false),
        // JSON: key order is not a change, a value is
        ("jsonb", "'{\"a\":1,\"b\":[1,2]}'", "'{\"b\":[1,2],\"a\":1}'", true),
        ("json", "'{\"a\":1,\"b\":[1,2]}'", "'{\"b\": [1, 2], \"a\": 1}'", true),
        ("jsonb", "'{\"a\":1,\"b\":[1,2]}'", "'{\"a\":1,\"b\":[2,1]}'", false),
        ("jsonb", "'{\"a\":1.50}'", "'{\"a\":1.5}'", true),
        ("jsonb", "'[]'", "'null'", false),
        // numbers: integers exactly, floats within their precision, numeric by value at its scale
        ("bigint", "9007199254740993", "9007199254740993", true),
        ("bigint", "9007199254740993", "9007199254740992", false),
        ("bigint", "'42'", "42", true),
        ("double precision", "0.1 + 0.2", "0.3", true),
        ("double precision", "0.3001", "0.3", false),
        ("real", "0.1", "0.1", true),
        ("numeric(10,2)", "1.234", "1.23", true),
        ("numeric", "'1.50'", "1.5", true),
        ("numeric", "1.5", "1.51", false),
        // booleans from SQLite's 0/1
        ("boolean", "1", "true", true),
        ("boolean", "0", "true", false),
        // bytes form and bytea
        ("bytea", "x'00ff'", "'\\x00ff'", true),
        ("bytea", "x'00ff'", "'\\x00fe'", false),
        // text is text; char(n) pads
        ("text", "'a'", "'a '", false),
        ("char(4)", "'ab'", "'ab'", true),
        ("uuid", "'8F14E45F-CEEA-467F-A0E6-8A1A3B7C9D20'", "'8f14e45f-ceea-467f-a0e6-8a1a3b7c9d20'", true),
        ("text[]", "'[\"a\",\"b\"]'", "'{a,b}'", true),
        ("text[]", "'[\"a\",\"b\"]'", "'{b,a}'", false),
        // NULL is a value
        ("text", "NULL", "NULL", true),
        ("text", "NULL", "''", false),
        // a value that pg-load could not have loaded is a change, not a crash
        ("integer", "'twelve'", "12", false),
        // types without a binary decoder: compared as PostgreSQL's text
        ("inet", "'10.0.0.1'", "'10.0.0.1'", true),
        // … where NULL stays NULL, not the empty text
        ("inet", "NULL", "NULL", true),
        ("xml", "NULL", "NULL", true),
        ("xml", "''", "NULL", false),
        ("inet[]", "'[\"10.0.0.1\",null]'", "'{10.0.0.1,NULL}'", true),
        ("inet[]", "'[\"10.0.0.1\",null]'", "'{10.0.0.1,10.0.0.2}'", false),
        ("inet[]", "NULL", "NULL", true),
        // … read by the server where the texts differ: another style of the same value is
        // the same, another value or a text the type refuses is a change
        ("interval", "'1 day 2 hours'", "'1 day 02:00:00'", true),
        ("interval", "'1 day 2 hours'", "'1 day 03:00:00'", false),
        ("interval", "'soon'", "'1 day'", false),
        ("money", "'12.5'", "'12.50'", true),
        ("cidr", "'10.1/16'", "'10.1.0.0/16'", true),
        ("int4range", "'[1,5]'", "'[1,6)'", true),
        ("int4range", "'[1,5]'", "'[1,5)'", false),
        ("interval[]", "'[\"1 day 2 hours\",null]'", "'{\"1 day 02:00:00\",NULL}'", true),
        ("interval[]", "'[\"1 day 2 hours\"]'", "'{\"1 day\"}'", false),
        // … with the column's modifier, as COPY reads the value: '-3' is minutes here
        ("interval hour to minute", "'-3'", "'-00:03:00'", true),
        // … in UTC, as pg-load's COPY reads (the test server's zone is not UTC)
        ("timetz", "'12:00'", "'12:00+00'", true),
        ("tstzrange", "'[2024-01-01 10:00,)'", "'[2024-01-01 10:00+00,)'", true),
        ("interval(0)[]", "'[\"1.4 seconds\"]'", "'{00:00:01}'", true),
        // … and the text is quoted for the server whatever it holds
        ("interval", "'1 day''; SELECT 1; --\\'", "'1 day'", false),
    ]);
}

#[test]
fn full_finds_one_missing_one_extra_one_changed_in_a_million_rows() {
    let dir = TempDir::new();
    sqlite_db(
        &dir.path("big.db"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, n INTEGER, ts TEXT, f REAL);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000000)
         INSERT INTO t SELECT i, 'name' || i, i * 7 % 1000, strftime('%Y-%m-%dT%H:%M:%SZ', 1700000000 + i, 'unixepoch'), i / 8.0 FROM s;",
    );
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE t (id bigint PRIMARY KEY, name text, n int, ts timestamptz, f double precision);
         INSERT INTO t SELECT i, 'name' || i, i * 7 % 1000, to_timestamp(1700000000 + i), i / 8.0 FROM generate_series(1, 1000000) i;
         DELETE FROM t WHERE id = 500000;
         INSERT INTO t VALUES (1000001, 'extra', 1, now(), 1);
         UPDATE t SET ts = ts + interval '1 microsecond' WHERE id = 777777;",
    );
    let started = std::time::Instant::now();
    let r = check(&pg, &["--full", &format!("sqlite:{}:t", dir.str("big.db")), "pg:t"]).expect(1);
    let secs = started.elapsed().as_secs_f64();
    let rep = report(&r);
    assert_eq!((rep["source_rows"].as_u64(), rep["dest_rows"].as_u64()), (Some(1_000_000), Some(1_000_000)));
    assert_eq!((rep["missing"].as_u64(), rep["extra"].as_u64(), rep["changed"].as_u64()), (Some(1), Some(1), Some(1)));
    assert_eq!(rep["same"], 999_998);
    assert_eq!(rep["missing_keys"], serde_json::json!([{"id": 500000}]));
    assert_eq!(rep["extra_keys"], serde_json::json!([{"id": 1000001}]));
    assert_eq!(
        rep["changed_records"],
        serde_json::json!([{"key": {"id": 777777}, "fields": [{"field": "ts", "source": "2023-11-23T22:16:17Z", "dest": "2023-11-23T22:16:17.000001Z"}]}])
    );
    r.stderr_has(&[
        "missing in the destination: {\"id\":500000}",
        "extra in the destination: {\"id\":1000001}",
        "changed {\"id\":777777}: ts: \"2023-11-23T22:16:17Z\" → \"2023-11-23T22:16:17.000001Z\"",
    ]);
    eprintln!("--full of 1,000,000 rows: {secs:.1}s");
}

#[test]
fn counts_and_the_seeds_line() {
    let t = Trio::new(
        "CREATE TABLE d (id TEXT PRIMARY KEY, v INTEGER); INSERT INTO d VALUES ('a', 1), ('b', 2), ('c', 3);",
        "CREATE TABLE d (id text PRIMARY KEY, v int)",
        "d",
        &[],
    );
    let sq = t.sqlite("d");
    let r = check(&t.pg, &[&sq, "pg:d"]).ok();
    r.stderr_has(&["Source: 3 rows → Postgres: 3 rows ✓", "1 check(s): 1 held"]);
    assert_eq!(report(&r)["check"], "count");
    t.pg.exec("DELETE FROM d WHERE id = 'b'");
    let r = check(&t.pg, &[&sq, "pg:d"]).expect(1);
    r.stderr_has(&["Source: 3 rows → Postgres: 2 rows ✗"]);
    assert_eq!(report(&r)["ok"], false);
    let r = check(&t.pg, &["--full", &sq, "pg:d"]).expect(1);
    assert_eq!(report(&r)["missing_keys"], serde_json::json!([{"id": "b"}]));
    // NDJSON from stdin.
    let dump = std::fs::read(t.dir.path("d.ndjson")).unwrap();
    let r = check(&t.pg, &["ndjson:-", "pg:d"]).stdin(dump).expect(1);
    assert_eq!(report(&r)["source_rows"], 3);
}

#[test]
fn text_keys_compare_by_bytes_on_both_sides() {
    // Mixed case and digits: PostgreSQL's default collation would order these differently.
    let t = Trio::new(
        "CREATE TABLE k (id TEXT PRIMARY KEY, v TEXT);
         INSERT INTO k VALUES ('b', '1'), ('B', '2'), ('10', '3'), ('9', '4'), ('é', '5'), ('e', '6'), ('_x', '7');",
        "CREATE TABLE k (id text PRIMARY KEY, v text)",
        "k",
        &[],
    );
    check(&t.pg, &["--full", &t.sqlite("k"), "pg:k"]).ok();
    check(&t.pg, &["--full", "pg:k", &t.ndjson("k")]).ok();
    // An integer key in SQLite stored as text in PostgreSQL: ordered as text on both sides.
    let t2 = Trio::new(
        "CREATE TABLE n (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO n VALUES (9, 'a'), (10, 'b'), (100, 'c'), (2, 'd');",
        "CREATE TABLE n (id text PRIMARY KEY, v text)",
        "n",
        &[],
    );
    check(&t2.pg, &["--full", &t2.sqlite("n"), "pg:n"]).ok();
}

#[test]
fn renamed_ignored_and_unmatched_columns() {
    let t = Trio::new(
        "CREATE TABLE p (id INTEGER PRIMARY KEY, fullname TEXT, legacy TEXT); INSERT INTO p VALUES (1, 'Ann', 'x'), (2, 'Bob', 'y');",
        "CREATE TABLE p (id int PRIMARY KEY, name text)",
        "p",
        &["--ignore-unknown"],
    );
    t.pg.exec("UPDATE p SET name = CASE id WHEN 1 THEN 'Ann' ELSE 'Bob' END");
    let sq = t.sqlite("p");
    // A source column without a destination column is a difference.
    let r = check(&t.pg, &["--full", &sq, "pg:p"]).expect(1);
    assert_eq!(report(&r)["unmatched_columns"], serde_json::json!(["fullname", "legacy"]));
    r.stderr_has(&["source fields with no destination column: fullname, legacy"]);
    check(&t.pg, &["--full", "--map", "fullname=name", "--ignore", "legacy", &sq, "pg:p"]).ok();
    // From the stream too, where fields are found record by record.
    check(&t.pg, &["--full", "--map", "fullname=name", "--ignore", "legacy", &t.ndjson("p"), "pg:p"]).ok();
    let r = check(&t.pg, &["--full", "--map", "fullname=name", &t.ndjson("p"), "pg:p"]).expect(1);
    assert_eq!(report(&r)["unmatched_columns"], serde_json::json!(["legacy"]));
    // --key: pair by another column.
    t.pg.exec("ALTER TABLE p DROP CONSTRAINT p_pkey");
    check(&t.pg, &["--full", "--map", "fullname=name", "--ignore", "legacy", &t.ndjson("p"), "pg:p"])
        .expect(64)
        .stderr_has(&["pass --key COLS"]);
    check(
        &t.pg,
        &["--full", "--key", "name", "--map", "fullname=name", "--ignore", "legacy,id", &t.ndjson("p"), "pg:p"],
    )
    .ok();
}

#[test]
fn samples_repeat_with_their_seed() {
    let dir = TempDir::new();
    sqlite_db(
        &dir.path("s.db"),
        "CREATE TABLE s (id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE q(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM q WHERE i < 1000) INSERT INTO s SELECT i, 'v' || i FROM q;",
    );
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE s (id int PRIMARY KEY, v text); INSERT INTO s SELECT i, 'v' || i FROM generate_series(1, 1000) i;
             UPDATE s SET v = 'changed' WHERE id % 2 = 0",
    );
    let src = format!("sqlite:{}:s", dir.str("s.db"));
    let run = |seed: &str| {
        report(&check(&pg, &["--sample", "10", "--seed", seed, "--examples", "10", &src, "pg:s"]).expect(1))
    };
    let (a, b, c) = (run("42"), run("42"), run("43"));
    assert_eq!(a["sampled"], 10);
    assert_eq!(a["seed"], 42);
    assert_eq!(a["changed_records"], b["changed_records"]);
    assert_ne!(a["changed_records"], c["changed_records"]);
    assert_eq!(a["compared"], 10);
    let changed = a["changed"].as_u64().unwrap();
    assert!(changed > 0 && changed < 10, "{a}");
    // Keys the destination lacks are missing.
    pg.exec("DELETE FROM s WHERE id > 10");
    let r = report(&check(&pg, &["--sample", "5", "--seed", "1", &src, "pg:s"]).expect(1));
    assert!(r["missing"].as_u64().unwrap() >= 4, "{r}");
}

#[test]
fn exit_codes_a_missing_table_or_server_is_not_a_mismatch() {
    let t = Trio::new(
        "CREATE TABLE e (id INTEGER PRIMARY KEY); INSERT INTO e VALUES (1);",
        "CREATE TABLE e (id int PRIMARY KEY)",
        "e",
        &[],
    );
    let sq = t.sqlite("e");
    check(&t.pg, &[&sq, "pg:nope"]).expect(66).stderr_has(&["table 'nope' does not exist"]);
    check(&t.pg, &["--full", &sq, "pg:nope"]).expect(66);
    check(&t.pg, &[&format!("sqlite:{}:nope", t.dir.str("app.db")), "pg:e"]).expect(66);
    check(&t.pg, &[&format!("sqlite:{}:e", t.dir.str("missing.db")), "pg:e"]).expect(66);
    check(&t.pg, &[&format!("ndjson:{}", t.dir.str("missing.ndjson")), "pg:e"]).expect(66);
    let r = cmd("count-check").args(["--db", "postgres://nobody@127.0.0.1:1/x", &sq, "pg:e"]).expect(69);
    assert_eq!(report(&r)["exit"], 69);
    check(&t.pg, &["mysql:x", "pg:e"]).expect(64);
    check(&t.pg, &[&sq]).expect(64);
    check(&t.pg, &["--full", "--sample", "3", &sq, "pg:e"]).expect(64);
    // A truncated stream is bad data; so is a stream out of key order.
    std::fs::write(t.dir.path("cut.ndjson"), "{\"id\":1}\n").unwrap();
    check(&t.pg, &[&format!("ndjson:{}", t.dir.str("cut.ndjson")), "pg:e"])
        .expect(65)
        .stderr_has(&["without its end record"]);
    check(&t.pg, &["--no-end-record", &format!("ndjson:{}", t.dir.str("cut.ndjson")), "pg:e"]).ok();
    // A stream out of key order is sorted in a temporary file; from stdin it cannot be.
    let unsorted = "{\"id\":2}\n{\"id\":1}\n{\"$end\":{\"rows\":2}}\n";
    std::fs::write(t.dir.path("unsorted.ndjson"), unsorted).unwrap();
    t.pg.exec("INSERT INTO e VALUES (2)");
    check(&t.pg, &["--full", &format!("ndjson:{}", t.dir.str("unsorted.ndjson")), "pg:e"])
        .ok()
        .stderr_has(&["not in key order; sorting it in a temporary file"]);
    check(&t.pg, &["--sample", "1", &format!("ndjson:{}", t.dir.str("unsorted.ndjson")), "pg:e"]).ok();
    check(&t.pg, &["--full", "ndjson:-", "pg:e"])
        .stdin(unsorted)
        .expect(65)
        .stderr_has(&["not in key order (1 comes after 2)"]);
    // A key twice cannot be paired.
    std::fs::write(t.dir.path("twice.ndjson"), "{\"id\":1}\n{\"id\":1}\n{\"$end\":{\"rows\":2}}\n").unwrap();
    check(&t.pg, &["--full", &format!("ndjson:{}", t.dir.str("twice.ndjson")), "pg:e"])
        .expect(65)
        .stderr_has(&["the key 1 appears twice"]);
}

#[test]
fn a_plan_checks_every_step_one_line_each() {
    let t = Trio::new(
        "CREATE TABLE a (id INTEGER PRIMARY KEY, ts INTEGER); INSERT INTO a VALUES (1, 1704448800), (2, 1704448801);
         CREATE TABLE b (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO b VALUES (1, 'x');",
        "CREATE TABLE a (id int PRIMARY KEY, ts timestamptz); CREATE TABLE b (id int PRIMARY KEY, title text);",
        "a",
        &["--epoch-unit", "s"],
    );
    let dump = cmd("sqlite-dump").arg(t.dir.path("app.db")).arg("b").ok();
    cmd("pg-load").args(["--db", &t.pg.url, "b", "--ignore-unknown"]).stdin(dump.out.stdout).ok();
    t.pg.exec("UPDATE b SET title = 'x'");
    let db = t.dir.str("app.db");
    let plan = format!(
        "# test plan\n\
         {{\"step\": \"1\", \"source\": \"sqlite:{db}:a\", \"target\": \"a\", \"load\": [\"--epoch-unit\", \"s\"]}}\n\
         {{\"step\": \"2\", \"source\": \"sqlite:{db}:b\", \"target\": \"b\", \"check\": [\"--map\", \"name=title\"]}}\n"
    );
    std::fs::write(t.dir.path("plan.ndjson"), &plan).unwrap();
    let p = t.dir.str("plan.ndjson");
    let r = check(&t.pg, &["--plan", &p, "--full"]).ok();
    let lines = r.json_lines();
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0]["step"].as_str(), lines[1]["step"].as_str()), (Some("1"), Some("2")));
    assert!(lines.iter().all(|l| l["ok"] == true && l["check"] == "full"));
    r.stderr_has(&["STEP", "2 check(s): 2 held"]);
    t.pg.exec("UPDATE b SET title = 'y'");
    let r = check(&t.pg, &["--plan", &p, "--full"]).expect(1);
    assert_eq!(r.json_lines()[1]["changed"], 1);
    check(&t.pg, &["--plan", &p, "--full", "--step", "1"]).ok();
    let r = check(&t.pg, &["--lint", "--plan", &p]).ok();
    assert_eq!(
        r.json_lines().iter().map(|l| l["dest"].as_str().unwrap().to_string()).collect::<Vec<_>>(),
        vec!["pg:a", "pg:b"]
    );
    check(&t.pg, &["--plan", &p, "--step", "9"]).expect(64);
    // A step whose table is missing: its own line and code; the other steps still run.
    std::fs::write(
        t.dir.path("plan2.ndjson"),
        format!("{plan}{{\"step\": \"3\", \"source\": \"sqlite:{db}:a\", \"target\": \"gone\"}}\n"),
    )
    .unwrap();
    let r = check(&t.pg, &["--plan", &t.dir.str("plan2.ndjson")]).expect(66);
    let lines = r.json_lines();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["exit"], 66);
    r.stderr_has(&[
        "1 of 3 checks could not run",
        "step 3: ",
        " → pg:gone: could not check: pg:gone: table",
        "error (66)",
    ]);
    std::fs::write(t.dir.path("bad.ndjson"), "{\"step\": 1}\n").unwrap();
    check(&t.pg, &["--plan", &t.dir.str("bad.ndjson")]).expect(65).stderr_has(&["line 1: missing 'source'"]);
}

#[test]
fn lint_finds_the_seeds_checklist() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE customers (id text PRIMARY KEY);
         INSERT INTO customers VALUES ('c1');
         CREATE TABLE orders (id int PRIMARY KEY, customer_id text, placed text, note text, items jsonb, extra jsonb);
         INSERT INTO orders VALUES (1, 'c1', '2024-01-05T10:00:00Z', 'hello', '[1]', '{}'),
                                   (2, 'c2', '2024-01-05 12:00:00+02', '2024-01-05', NULL, NULL),
                                   (3, NULL, '2024-01-06', NULL, 'null', '[]');
         ALTER TABLE orders ADD CONSTRAINT orders_customer FOREIGN KEY (customer_id) REFERENCES customers(id) NOT VALID;
         CREATE TABLE clean (id int PRIMARY KEY, tags jsonb NOT NULL DEFAULT '[]', at timestamptz);
         INSERT INTO clean VALUES (1, '[]', now());",
    );
    // A failed load of 'orders' in the run log, never followed by a success; 'clean' failed, then succeeded.
    cmd("pg-load").args(["--db", &pg.url, "orders"]).stdin("{\"id\": \"x\"}\n{\"$end\":{\"rows\":1}}\n").expect(65);
    cmd("pg-load").args(["--db", &pg.url, "clean"]).stdin("{\"id\": \"x\"}\n{\"$end\":{\"rows\":1}}\n").expect(65);
    cmd("pg-load").args(["--db", &pg.url, "clean"]).stdin("{\"id\": 2}\n{\"$end\":{\"rows\":1}}\n").ok();
    let r = check(&pg, &["--lint", "pg:orders", "pg:clean"]).expect(1);
    let lines = r.json_lines();
    assert_eq!(lines.len(), 2);
    let rules: Vec<(String, Value)> = lines[0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["rule"].as_str().unwrap().to_string(), f["column"].clone()))
        .collect();
    assert_eq!(
        rules,
        vec![
            ("text-timestamps".to_string(), Value::from("placed")),
            ("json-null-among-arrays".to_string(), Value::from("items")),
            ("foreign-key-orphans".to_string(), Value::from("customer_id")),
            ("failed-runs".to_string(), Value::Null),
        ]
    );
    assert_eq!(lines[0]["findings"][1]["count"], 2);
    assert_eq!(lines[0]["findings"][2]["examples"], serde_json::json!([{"customer_id": "c2"}]));
    assert_eq!(lines[1]["ok"], true);
    r.stderr_has(&[
        "column 'placed' is text, but all 3 values look like timestamps",
        "foreign key 'orders_customer'",
        "NOT VALID",
    ]);
    check(&pg, &["--lint", "pg:clean"]).ok();
    check(&pg, &["--lint", "pg:missing"]).expect(66).stderr_has(&["lint pg:missing: could not check: ", "error (66)"]);
    check(&pg, &["--lint", "sqlite:x:y"]).expect(64);
}

#[test]
fn lint_checks_a_key_to_a_partitioned_table_against_the_whole_table() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE ev (id bigint, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE ev_2026 PARTITION OF ev FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         CREATE TABLE ev_2027 PARTITION OF ev FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
         INSERT INTO ev VALUES (1, '2026-05-01'), (2, '2027-05-01');
         CREATE TABLE seen (id bigint, at date, CONSTRAINT seen_ev FOREIGN KEY (id, at) REFERENCES ev);
         INSERT INTO seen VALUES (1, '2026-05-01'), (2, '2027-05-01');",
    );
    check(&pg, &["--lint", "pg:seen"]).ok();
    pg.exec(
        "ALTER TABLE seen DROP CONSTRAINT seen_ev; INSERT INTO seen VALUES (3, '2027-06-01');
             ALTER TABLE seen ADD CONSTRAINT seen_ev FOREIGN KEY (id, at) REFERENCES ev NOT VALID;",
    );
    let r = check(&pg, &["--lint", "pg:seen"]).expect(1);
    let findings = r.json_lines()[0]["findings"].clone();
    assert_eq!(findings.as_array().unwrap().len(), 1, "{findings}");
    assert_eq!(findings[0]["rule"], "foreign-key-orphans");
    assert_eq!(findings[0]["count"], 1);
    assert_eq!(findings[0]["examples"], serde_json::json!([{"id": 3, "at": "2027-06-01"}]));
}

// ---------------------------------------------------------------- Firestore (emulator)

use crate::fs_export::Fs;
use serde_json::json;

fn fs_s(v: &str) -> Value {
    json!({"stringValue": v})
}

/// Customers in the emulator, exported by fs-export and loaded by pg-load: the sides of
/// every Firestore pairing.
struct FsTrio {
    fs: Fs,
    pg: Pg,
    dir: TempDir,
}

impl FsTrio {
    fn new() -> FsTrio {
        let fs = Fs::new();
        let pg = Pg::new();
        let dir = TempDir::new();
        pg.exec(
            "CREATE TABLE customers (id text PRIMARY KEY, name text, n bigint, score double precision, active boolean,
               created_at timestamptz, location jsonb, tags text[], contacts jsonb, avatar bytea, price numeric(10,2),
               note text, added_at timestamptz DEFAULT now());
             CREATE TABLE orders (customer_id text, id text, total numeric(12,2), PRIMARY KEY (customer_id, id));",
        );
        let mut docs = vec![];
        // Ids whose byte order differs from other orders: upper case, digits, accents.
        for (i, id) in ["B", "a", "10", "9", "é", "e", "cust-1"].iter().enumerate() {
            docs.push((
                format!("customers/{id}"),
                json!({
                    "name": fs_s(&format!("Όνομα {i}")), "n": {"integerValue": (9007199254740993i64 + i as i64).to_string()},
                    "score": {"doubleValue": 0.1 + 0.2}, "active": {"booleanValue": i % 2 == 0},
                    "created_at": {"timestampValue": format!("2024-01-05T10:00:0{i}.123456789Z")},
                    "location": {"geoPointValue": {"latitude": 37.98, "longitude": 23.72}},
                    "tags": {"arrayValue": {"values": [fs_s("church"), fs_s("bells")]}},
                    "contacts": {"mapValue": {"fields": {"email": fs_s("a@example.org"), "primary": {"booleanValue": true}}}},
                    "avatar": {"bytesValue": "AP8Q"}, "price": {"doubleValue": 12.5}, "note": {"nullValue": null},
                    "legacy": {"booleanValue": true},
                }),
            ));
            docs.push((format!("customers/{id}/orders/o{i}"), json!({"total": {"doubleValue": 10.5 + i as f64}})));
        }
        fs.put(docs);
        let dump = fs.export().args(["customers", "--drop", "legacy"]).ok();
        std::fs::write(dir.path("customers.ndjson"), &dump.out.stdout).unwrap();
        cmd("pg-load").args(["--db", &pg.url, "customers"]).stdin(dump.out.stdout).ok();
        let orders = fs.export().args(["--group", "orders", "--parent-field", "customer_id"]).ok();
        cmd("pg-load").args(["--db", &pg.url, "orders"]).stdin(orders.out.stdout).ok();
        FsTrio { fs, pg, dir }
    }

    fn check(&self, args: &[&str]) -> Cmd {
        check(&self.pg, &["--project", &self.fs.project]).args(args)
    }
}

#[test]
fn firestore_sides_in_every_pairing() {
    let t = FsTrio::new();
    let nd = format!("ndjson:{}", t.dir.str("customers.ndjson"));
    let pairs: [(&str, &str); 4] = [
        ("firestore:customers", "pg:customers"),
        ("firestore:customers", &nd),
        (&nd, "firestore:customers"),
        ("firestore:customers", "firestore:customers"),
    ];
    for (a, b) in pairs {
        for mode in [&[][..], &["--full"][..], &["--sample", "3", "--seed", "5"][..]] {
            let r = t.check(&["--ignore", "legacy"]).args(mode).args([a, b]).run();
            assert_eq!(r.code(), 0, "{a} {b} {mode:?}\n{}", r.describe());
            assert_eq!(report(&r)["source_rows"], 7);
        }
    }
    let r = t.check(&["--full", "--ignore", "legacy", "firestore:customers", "pg:customers"]).ok();
    r.stderr_has(&["Source: 7 docs → Postgres: 7 rows ✓"]);
    // The dropped field is a difference unless ignored.
    let r = t.check(&["--full", "firestore:customers", "pg:customers"]).expect(1);
    assert_eq!(report(&r)["unmatched_columns"], json!(["legacy"]));
    // A collection group, keyed by parent and id; one document.
    t.check(&[
        "--full",
        "--parent-field",
        "customer_id",
        "--key",
        "customer_id,id",
        "firestore-group:orders",
        "pg:orders",
    ])
    .ok();
    // Keyed by the id alone, a group is not in key order (it comes by parent): it is sorted.
    t.check(&["--full", "--parent-field", "customer_id", "--key", "id", "firestore-group:orders", "pg:orders"])
        .ok()
        .stderr_has(&["firestore-group:orders: not in key order; sorting it"]);
    t.check(&["firestore-doc:customers/a", "ndjson:-"]).stdin("{\"id\":\"a\"}\n{\"$end\":{\"rows\":1}}\n").ok();
    t.check(&["firestore-doc:customers/zzz", "pg:customers"]).expect(66);
}

#[test]
fn firestore_differences_and_an_unreachable_emulator() {
    let t = FsTrio::new();
    t.pg.exec(
        "UPDATE customers SET created_at = created_at + interval '1 microsecond' WHERE id = 'B';
               UPDATE customers SET location = '{\"lng\": 23.72, \"lat\": 37.98}' WHERE id = 'a';
               DELETE FROM customers WHERE id = '9';",
    );
    let r = t.check(&["--full", "--ignore", "legacy", "firestore:customers", "pg:customers"]).expect(1);
    let rep = report(&r);
    assert_eq!((rep["missing"].as_u64(), rep["extra"].as_u64(), rep["changed"].as_u64()), (Some(1), Some(0), Some(1)));
    assert_eq!(rep["missing_keys"], json!([{"id": "9"}]));
    assert_eq!(rep["changed_records"][0]["key"], json!({"id": "B"}));
    assert_eq!(rep["changed_records"][0]["fields"][0]["field"], "created_at");
    // Firestore keeps microseconds (the emulator too): .123456789 is stored as .123456.
    assert_eq!(rep["changed_records"][0]["fields"][0]["source"], "2024-01-05T10:00:00.123456Z");
    assert_eq!(rep["changed_records"][0]["fields"][0]["dest"], "2024-01-05T10:00:00.123457Z");
    let r = cmd("count-check")
        .args(["--db", &t.pg.url, "--project", &t.fs.project, "--retries", "1", "firestore:customers", "pg:customers"])
        .env("FIRESTORE_EMULATOR_HOST", "127.0.0.1:1")
        .expect(69);
    assert_eq!(report(&r)["exit"], 69);
}

/// count-check's Firestore rows are fs-export's (`firestore::RowShape`): a field that
/// agrees with its key is compared once; one that disagrees is refused by both tools.
#[test]
fn firestore_a_field_clashing_with_its_key_is_refused_as_fs_export_refuses_it() {
    let fs = Fs::new();
    let pg = Pg::new();
    pg.exec("CREATE TABLE crm (id text PRIMARY KEY, name text); INSERT INTO crm VALUES ('c1', 'Ann'), ('c2', 'Bob');");
    fs.put1("crm/c1", json!({"name": fs_s("Ann"), "id": fs_s("c1")}));
    let cc = |args: &[&str]| check(&pg, &["--project", &fs.project, "--full"]).args(args);
    fs.put1("crm/c2", json!({"name": fs_s("Bob")}));
    cc(&["firestore:crm", "pg:crm"]).ok();
    fs.put1("crm/c2", json!({"name": fs_s("Bob"), "id": fs_s("other")}));
    let clash = ["document 'crm/c2': its field 'id' holds", "but the --id-field key 'id' is", "--drop id"];
    fs.export().arg("crm").expect(65).stderr_has(&clash);
    cc(&["firestore:crm", "pg:crm"]).expect(65).stderr_has(&clash);
    // Named otherwise, the field is a column of its own, compared like any other.
    pg.exec("ALTER TABLE crm RENAME COLUMN id TO doc_id; ALTER TABLE crm ADD COLUMN id text;");
    pg.exec("UPDATE crm SET id = CASE doc_id WHEN 'c1' THEN 'c1' ELSE 'other' END");
    cc(&["--id-field", "doc_id", "firestore:crm", "pg:crm"]).ok();
}

#[test]
fn hstore_compares_as_the_pairs_postgresql_keeps() {
    let pg = Pg::new();
    let dir = TempDir::new();
    pg.exec("CREATE EXTENSION hstore; CREATE TABLE h (id int PRIMARY KEY, tags hstore)");
    // An object, and hstore text in another order, spacing and quoting than PostgreSQL's.
    let stream = concat!(
        r#"{"id":1,"tags":{"b":"1","aa":null,"c":"x\"y"}}"#,
        "\n",
        r#"{"id":2,"tags":"x=>y, a=>NULL, bb=>\"q\\\\z\""}"#,
        "\n",
        r#"{"$end":{"rows":2}}"#,
        "\n"
    );
    std::fs::write(dir.path("h.ndjson"), stream).unwrap();
    let side = format!("ndjson:{}", dir.str("h.ndjson"));
    cmd("pg-load").args(["--db", &pg.url, "h"]).stdin(stream).ok();
    check(&pg, &["--full", &side, "pg:h"]).ok();
    // A value PostgreSQL holds differently is found.
    pg.exec("UPDATE h SET tags = tags || 'x=>z'::hstore WHERE id = 2");
    let r = check(&pg, &["--full", &side, "pg:h"]).expect(1);
    r.stderr_has(&["changed {\"id\":2}: tags:"]);
}
