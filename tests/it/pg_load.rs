//! pg-load against a real PostgreSQL.

use crate::harness::*;
use serde_json::json;

/// A stream of `rows` (JSON object texts) with its end record.
fn stream(rows: &[&str]) -> String {
    let mut s = String::new();
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s.push_str(&format!("{{\"$end\":{{\"rows\":{},\"source\":\"test\"}}}}\n", rows.len()));
    s
}

fn load(pg: &Pg, table: &str, input: impl Into<Vec<u8>>, extra: &[&str]) -> crate::harness::Cmd {
    cmd("pg-load").args(["--db", &pg.url, table]).args(extra).stdin(input)
}

fn last_run(pg: &Pg) -> String {
    pg.one("SELECT outcome || '|' || coalesce(source_rows::text, '-') || '|' || coalesce(dest_rows::text, '-') || '|' || coalesce(error, '') FROM _migration_runs ORDER BY id DESC LIMIT 1")
}

const ALL_TYPES: &str = "CREATE TYPE mood AS ENUM ('calm', 'loud');
    CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
    CREATE TABLE everything (
      id bigint PRIMARY KEY, t text, vc varchar(10), i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
      num numeric(12,2), numfree numeric, b boolean, ts timestamptz, tsn timestamp, d date, tm time, j json, jb jsonb,
      by bytea, u uuid, tags text[], nums integer[], m mood, p posint, jarr jsonb[] %EXTRA%)";

fn check_all_types(extra_col: &str, extra_val: &str) {
    let pg = Pg::new();
    pg.exec(&ALL_TYPES.replace("%EXTRA%", extra_col));
    let rows = [
        format!(r#"{{"id":1,"t":"héllo\ttab\nline \\ back","vc":"short","i2":-32768,"i4":2147483647,"i8":9223372036854775807,
            "f4":1.5,"f8":0.1,"num":"1234.5","numfree":123456789012345678901234567890.123456789,"b":1,"ts":"2024-01-05T10:00:00.123456Z",
            "tsn":"2024-01-05 10:00:00","d":"2024-02-29","tm":"23:59:59.5","j":{{"k":[1,2]}},"jb":"{{\"z\":1,\"a\":[true,null]}}",
            "by":{{"$base64":true,"encoded":"AP8Q"}},"u":"{{8F14E45F-CEEA-467F-A0E6-8A1A3B7C9D20}}","tags":["a","b,c","d\"e",null],
            "nums":"[1,2,3]","m":"loud","p":7,"jarr":[{{"x":1}},[1]]{extra_val}}}"#),
        r#"{"id":2,"t":12,"b":"f","f8":{"$float":"NaN"},"f4":{"$float":"-Infinity"},"numfree":{"$float":"Infinity"},"ts":"2024-01-05 12:00:00+02:00","tsn":"2024-01-05T10:00:00+02:00","tags":[],"jb":[],"i8":"-9223372036854775808","num":-0.5,"by":"\\x0102"}"#.to_string(),
        r#"{"id":3,"ts":"1969-07-20T20:17:40Z","d":"0044-03-15","f8":-0.0,"jb":{"deep":{"deeper":{"deepest":"ü"}}}}"#.to_string(),
        r#"{"id":4,"ts":1704448800,"tsn":1704448800.25}"#.to_string(),
    ];
    let refs: Vec<&str> = rows.iter().map(|s| s.as_str()).collect();
    let input = stream(&refs).replace("\n            ", "");
    let r = load(&pg, "everything", input, &["--epoch-unit", "s"]).ok();
    r.stderr_has(&["Source: 4 rows → Postgres: 4 rows ✓"]);
    let q = |sql: &str| pg.one(sql);
    assert_eq!(q("SELECT t FROM everything WHERE id=1"), "héllo\ttab\nline \\ back");
    assert_eq!(q("SELECT i2||','||i4||','||i8 FROM everything WHERE id=1"), "-32768,2147483647,9223372036854775807");
    assert_eq!(q("SELECT f4::text||','||f8::text FROM everything WHERE id=1"), "1.5,0.1");
    assert_eq!(
        q("SELECT num::text||','||numfree::text FROM everything WHERE id=1"),
        "1234.50,123456789012345678901234567890.123456789"
    );
    assert_eq!(q("SELECT b::text FROM everything WHERE id=1"), "true");
    assert_eq!(q("SELECT ts::text FROM everything WHERE id=1"), "2024-01-05 10:00:00.123456+00");
    assert_eq!(
        q("SELECT tsn::text||','||d::text||','||tm::text FROM everything WHERE id=1"),
        "2024-01-05 10:00:00,2024-02-29,23:59:59.5"
    );
    assert_eq!(
        q("SELECT j::text||','||jb::text FROM everything WHERE id=1"),
        r#"{"k":[1,2]},{"a": [true, null], "z": 1}"#
    );
    assert_eq!(
        q("SELECT encode(by, 'hex')||','||u::text FROM everything WHERE id=1"),
        "00ff10,8f14e45f-ceea-467f-a0e6-8a1a3b7c9d20"
    );
    assert_eq!(
        q("SELECT tags::text||','||array_length(tags,1)||','||nums::text FROM everything WHERE id=1"),
        r#"{a,"b,c","d\"e",NULL},4,{1,2,3}"#
    );
    assert_eq!(
        q("SELECT m::text||','||p::text||','||jarr::text FROM everything WHERE id=1"),
        r#"loud,7,{"{\"x\": 1}",[1]}"#
    );
    assert_eq!(
        q("SELECT t||','||b::text||','||f8::text||','||f4::text||','||numfree::text FROM everything WHERE id=2"),
        "12,false,NaN,-Infinity,Infinity"
    );
    assert_eq!(
        q("SELECT ts::text||','||tsn::text FROM everything WHERE id=2"),
        "2024-01-05 10:00:00+00,2024-01-05 08:00:00"
    );
    assert_eq!(q("SELECT cardinality(tags)::text||','||jb::text||','||i8::text||','||num::text||','||encode(by,'hex') FROM everything WHERE id=2"), "0,[],-9223372036854775808,-0.50,0102");
    assert_eq!(q("SELECT ts::text||','||d::text||','||(f8::text)||','||(jb->'deep'->'deeper'->>'deepest') FROM everything WHERE id=3"), "1969-07-20 20:17:40+00,0044-03-15,-0,ü");
    assert_eq!(
        q("SELECT ts::text||','||tsn::text FROM everything WHERE id=4"),
        "2024-01-05 10:00:00+00,2024-01-05 10:00:00.25"
    );
    assert_eq!(q("SELECT count(*) FROM everything WHERE id=2 AND t IS NOT NULL AND vc IS NULL AND u IS NULL"), "1");
}

#[test]
fn every_encoding_into_every_type_binary_copy() {
    check_all_types("", "");
}

#[test]
fn every_encoding_into_every_type_text_copy() {
    // An interval column has no binary encoder here, so the whole load uses COPY's text format.
    check_all_types(", iv interval", r#","iv":"1 day 02:00:00""#);
}

/// Keys in any order, defaulted columns left out (their own COPY), other columns left out
/// (NULL), escaped keys and values, an ignored key: every value lands in its own column, in
/// both COPY formats.
fn check_key_order(extra_col: &str, extra_val: &str) {
    let pg = Pg::new();
    pg.exec(&format!(
        "CREATE TABLE shuffled (id bigint PRIMARY KEY, t text DEFAULT 'dflt', n integer, ts timestamptz, \
         u text NOT NULL DEFAULT 'u-dflt'{extra_col})"
    ));
    let rows = [
        format!(r#"{{"id":1,"t":"a","n":1,"ts":"2024-01-05T10:00:00Z","u":"x"{extra_val}}}"#),
        format!(r#"{{"u":"y","ts":"2024-01-06T10:00:00Z","n":2,"t":"b","id":2{extra_val}}}"#),
        r#"{"n":3,"id":3}"#.to_string(),
        r#"{"i\u0064":4,"t":"tab\there","\u0075":"\u00fc"}"#.to_string(),
        r#"{"id":5,"t":null,"n":null,"ts":null,"u":"z"}"#.to_string(),
        r#"{"ts":"2024-01-07 12:00:00+02:00","id":6}"#.to_string(),
    ];
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    load(&pg, "shuffled", stream(&refs), &[]).ok().stderr_has(&["Source: 6 rows → Postgres: 6 rows ✓"]);
    let got = pg.rows(
        "SELECT id || '|' || coalesce(t, '∅') || '|' || coalesce(n::text, '∅') || '|' || coalesce(ts::text, '∅') \
         || '|' || u FROM shuffled ORDER BY id",
    );
    assert_eq!(
        got,
        [
            "1|a|1|2024-01-05 10:00:00+00|x",
            "2|b|2|2024-01-06 10:00:00+00|y",
            "3|dflt|3|∅|u-dflt",
            "4|tab\there|∅|∅|ü",
            "5|∅|∅|∅|z",
            "6|dflt|∅|2024-01-07 10:00:00+00|u-dflt",
        ]
    );
}

#[test]
fn keys_in_any_order_and_left_out_binary_copy() {
    check_key_order("", "");
}

#[test]
fn keys_in_any_order_and_left_out_text_copy() {
    check_key_order(", iv interval", r#","iv":"1 day""#);
}
fn small_table(pg: &Pg) {
    pg.exec(
        "CREATE TABLE logs (id bigint PRIMARY KEY, level text NOT NULL, received_at timestamptz NOT NULL, n integer);
             INSERT INTO logs VALUES (100, 'keep', '2020-01-01', 1);",
    );
}

#[test]
fn bad_input_is_refused_with_line_column_value_and_nothing_commits() {
    let pg = Pg::new();
    small_table(&pg);
    let good = r#"{"id":1,"level":"info","received_at":"2024-01-05T10:00:00Z","n":1}"#;
    let cases: Vec<(Vec<u8>, Vec<&str>, &[&str])> = vec![
        (
            stream(&[good, r#"{"id":2,"level":"info","received_at":"yesterday-ish","n":1}"#]).into_bytes(),
            vec!["line 2, column 'received_at'", "\"yesterday-ish\"", "timestamp", "nothing was committed"],
            &[],
        ),
        (
            stream(&[good, r#"{"id":2,"level":"x" "n":1}"#]).into_bytes(),
            vec!["line 2: malformed JSON", "nothing was committed"],
            &[],
        ),
        (
            format!("{good}\n{}\n", good.replace("\"id\":1", "\"id\":2")).into_bytes(),
            vec!["without its end record", "nothing was committed"],
            &[],
        ),
        (
            stream(&[good, r#"{"id":2,"level":"info","received_at":"2024-01-05","n":99999999999}"#]).into_bytes(),
            vec!["line 2, column 'n'", "99999999999", "out of range for integer"],
            &[],
        ),
        (
            stream(&[good, "{\"id\":2,\"level\":\"a\\u0000b\",\"received_at\":\"2024-01-05\"}"]).into_bytes(),
            vec!["line 2, column 'level'", "NUL", "--strip-nul"],
            &[],
        ),
        (
            {
                let mut v = stream(&[good]).into_bytes();
                v.splice(0..0, b"{\"id\":3,\"level\":\"\xff\",\"received_at\":\"2024-01-05\"}\n".iter().cloned());
                v
            },
            vec!["line 1: invalid UTF-8"],
            &[],
        ),
        (
            stream(&[good, r#"{"id":2,"level":"info","received_at":"2024-01-05","colour":"red","size":1}"#])
                .into_bytes(),
            vec!["line 2: keys that match no column of 'logs': colour, size", "--ignore-unknown"],
            &[],
        ),
        (
            stream(&[good, r#"{"id":2,"received_at":"2024-01-05"}"#]).into_bytes(),
            vec!["line 2, column 'level'", "NOT NULL column"],
            &[],
        ),
        (stream(&[good, good]).into_bytes(), vec!["line 2: key (id) = 1 repeats line 1"], &[]),
        (stream(&[good]).replace("\"rows\":1", "\"rows\":5").into_bytes(), vec!["end record says 5 rows but 1"], &[]),
        (stream(&[good, "[1,2]"]).into_bytes(), vec!["line 2: expected a JSON object"], &[]),
        (
            stream(&[r#"{"id":1,"level":"info","received_at":1704448800}"#]).into_bytes(),
            vec!["line 1, column 'received_at'", "--epoch-unit"],
            &[],
        ),
    ];
    for (input, fragments, extra) in cases {
        let r = load(&pg, "logs", input, extra).expect(65);
        r.stderr_has(&fragments);
        assert_eq!(r.stderr().lines().count(), 1, "one-line error\n{}", r.describe());
        assert_eq!(pg.rows("SELECT id FROM logs"), vec!["100"], "the table changed: {}", r.describe());
        assert!(last_run(&pg).starts_with("failed|"), "{}", last_run(&pg));
    }
    // The options the messages name do what they say.
    load(
        &pg,
        "logs",
        stream(&["{\"id\":5,\"level\":\"a\\u0000b\",\"received_at\":\"2024-01-05\",\"junk\":1}"]),
        &["--strip-nul", "--ignore-unknown"],
    )
    .ok();
    assert_eq!(pg.one("SELECT level FROM logs WHERE id = 5"), "ab");
    load(&pg, "logs", format!("{good}\n").replace("\"id\":1", "\"id\":6"), &["--no-end-record"]).ok();
    load(&pg, "nope", stream(&[good]), &[]).expect(66).stderr_has(&["table 'nope' does not exist"]);
    load(&pg, "logs", stream(&[good]), &["--mode", "sideways"])
        .expect(64)
        .stderr_has(&["--mode must be", "Try 'pg-load --help'"]);
    load(&pg, "logs", stream(&[good]), &["--step", ""]).expect(64).stderr_has(&["--step takes a plan step's name"]);
    load(&pg, "logs", stream(&[good]), &["--plan", "p.ndjson", "--step", "a"])
        .expect(64)
        .stderr_has(&["a plan run takes --steps"]);
}

#[test]
fn stream_rules_a_repeated_key_or_end_member_and_an_unknown_version_are_errors_naming_the_line() {
    let pg = Pg::new();
    small_table(&pg);
    let good = r#"{"id":1,"level":"info","received_at":"2024-01-05T10:00:00Z","n":1}"#;
    let cases: Vec<(String, Vec<&str>)> = vec![
        // docs/stream.md §2.3: the last value does not win, whichever parser reads the row.
        (
            stream(&[good, r#"{"id":2,"level":"info","received_at":"2024-01-05","n":1,"n":2}"#]),
            vec!["line 2: key \"n\" appears twice in the row"],
        ),
        (
            stream(&[good, r#"{"id":2,"l\u0065vel":"a","received_at":"2024-01-05","level":"b"}"#]),
            vec!["line 2: key \"level\" appears twice in the row"],
        ),
        (
            format!("{good}\n{{\"$end\":{{\"rows\":1,\"source\":\"test\",\"rows\":1}}}}\n"),
            vec!["line 2: key \"rows\" appears twice in the end record"],
        ),
        (
            format!("{good}\n{{\"$end\":{{\"rows\":1}},\"$end\":{{\"rows\":1}}}}\n"),
            vec!["line 2: key \"$end\" appears twice"],
        ),
        // §6.2: a version this reader does not know.
        (
            format!("{good}\n{{\"$end\":{{\"rows\":1,\"version\":2}}}}\n"),
            vec!["line 2: the stream says it is version 2", "knows version 1 only"],
        ),
        // A table record after rows: two tables' streams in a single-table load.
        (
            format!("{good}\n{{\"$table\":{{\"step\":\"b\",\"target\":\"logs\"}}}}\n{}", stream(&[good])),
            vec!["line 2: a table record (step 'b') after this table's rows", "--plan"],
        ),
    ];
    for (input, fragments) in cases {
        let r = load(&pg, "logs", input, &[]).expect(65);
        r.stderr_has(&fragments);
        assert_eq!(r.stderr().lines().count(), 1, "one-line error\n{}", r.describe());
        assert_eq!(pg.rows("SELECT id FROM logs"), vec!["100"], "the table changed: {}", r.describe());
    }
    // Version 1 said explicitly, an escaped key, and a leading table record are fine.
    let input = format!(
        "{{\"$table\":{{\"step\":\"logs\",\"target\":\"logs\"}}}}\n{}\n{{\"$end\":{{\"rows\":1,\"version\":1}}}}\n",
        r#"{"id":3,"l\u0065vel":"esc","received_at":"2024-01-05T10:00:00Z"}"#
    );
    load(&pg, "logs", input, &[]).ok().stderr_has(&["Source: 1 rows → Postgres: 1 rows ✓"]);
    assert_eq!(pg.one("SELECT level FROM logs WHERE id = 3"), "esc");
}

#[test]
fn running_the_same_load_twice_reports_rows_already_present() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE t (id integer PRIMARY KEY, v text)");
    let input = stream(&[r#"{"id":1,"v":"a"}"#, r#"{"id":2,"v":"b"}"#, r#"{"id":3,"v":"c"}"#]);
    load(&pg, "t", input.clone(), &[])
        .ok()
        .stderr_has(&["Source: 3 rows → Postgres: 3 rows ✓", "3 rows inserted, 0 already present"]);
    let before = pg.rows("SELECT * FROM t ORDER BY id");
    load(&pg, "t", input.clone(), &[])
        .ok()
        .stderr_has(&["Source: 3 rows → Postgres: 3 rows ✓", "0 rows inserted, 3 already present"]);
    assert_eq!(pg.rows("SELECT * FROM t ORDER BY id"), before);
    assert_eq!(
        pg.rows("SELECT outcome, source_rows, inserted_rows, present_rows FROM _migration_runs ORDER BY id"),
        vec!["success|3|3|0", "success|3|0|3"]
    );
    // A partial earlier load: the rest is added, nothing duplicated.
    pg.exec("DELETE FROM t WHERE id = 2");
    load(&pg, "t", input.clone(), &[]).ok().stderr_has(&["1 rows inserted, 2 already present"]);
    // upsert updates, replace starts over, append refuses duplicates.
    load(&pg, "t", stream(&[r#"{"id":1,"v":"A"}"#]), &["--mode", "upsert"]).ok();
    assert_eq!(pg.one("SELECT v FROM t WHERE id = 1"), "A");
    load(&pg, "t", stream(&[r#"{"id":9,"v":"z"}"#]), &["--mode", "replace"]).ok();
    assert_eq!(pg.rows("SELECT id FROM t"), vec!["9"]);
    load(&pg, "t", stream(&[r#"{"id":9,"v":"z"}"#]), &["--mode", "append"]).expect(65).stderr_has(&["duplicate key"]);
    // Duplicate keys inside one stream are bad data, whichever path.
    load(&pg, "t", stream(&[r#"{"id":7,"v":"z"}"#, r#"{"id":7,"v":"y"}"#]), &[])
        .expect(65)
        .stderr_has(&["line 2: key (id) = 7 repeats line 1"]);
}

#[test]
fn missing_keys_take_defaults_null_is_null_and_sequences_move_past_loaded_ids() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE c (id bigserial PRIMARY KEY, name text NOT NULL, status text NOT NULL DEFAULT 'lead',
             tags text[] NOT NULL DEFAULT '{}', note text DEFAULT 'n', created_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE g (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text, twice bigint GENERATED ALWAYS AS (id * 2) STORED)");
    let input = stream(&[
        r#"{"id":10,"name":"a"}"#,
        r#"{"id":11,"name":"b","status":"won","note":null}"#,
        r#"{"id":12,"name":"c"}"#,
    ]);
    load(&pg, "c", input, &[]).ok();
    assert_eq!(
        pg.rows("SELECT id, status, tags, coalesce(note, 'NULL') FROM c ORDER BY id"),
        vec!["10|lead|{}|n", "11|won|{}|NULL", "12|lead|{}|n"]
    );
    pg.exec("INSERT INTO c (name) VALUES ('first insert after the load')");
    assert_eq!(pg.one("SELECT max(id) FROM c"), "13");
    load(&pg, "g", stream(&[r#"{"id":5,"v":"x"}"#]), &[]).ok();
    pg.exec("INSERT INTO g (v) VALUES ('y')");
    assert_eq!(pg.rows("SELECT id, twice FROM g ORDER BY id"), vec!["5|10", "6|12"]);
    // A generated column's key is skipped: PostgreSQL computes the column.
    load(&pg, "g", stream(&[r#"{"id":8,"v":"x","twice":99}"#]), &["--mode", "append"]).ok();
    assert_eq!(pg.one("SELECT twice FROM g WHERE id = 8"), "16");
    // The staged path (table not empty) applies defaults per row too.
    load(&pg, "c", stream(&[r#"{"id":20,"name":"d"}"#, r#"{"id":21,"name":"e","status":"lost"}"#]), &[]).ok();
    assert_eq!(pg.rows("SELECT id, status FROM c WHERE id >= 20 ORDER BY id"), vec!["20|lead", "21|lost"]);
}

#[test]
fn schema_qualified_names_dry_run_and_a_check_that_fails() {
    let pg = Pg::new();
    pg.exec("CREATE SCHEMA crm; CREATE TABLE crm.\"Orders\" (id text PRIMARY KEY, total numeric(12,2));");
    let input = stream(&[r#"{"id":"o1","total":19.99}"#, r#"{"id":"o2","total":"5"}"#]);
    load(&pg, "crm.\"Orders\"", input.clone(), &["--dry-run"])
        .ok()
        .stderr_has(&["Source: 2 rows → Postgres: 2 rows ✓", "dry run"]);
    assert_eq!(pg.count("crm.\"Orders\""), 0);
    assert!(last_run(&pg).starts_with("dry-run|2|2"));
    // A trigger that swallows rows: COPY accepts them, the count does not hold, nothing commits.
    pg.exec("CREATE FUNCTION swallow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.id = 'o2' THEN RETURN NULL; END IF; RETURN NEW; END $$;
             CREATE TRIGGER swallow BEFORE INSERT ON crm.\"Orders\" FOR EACH ROW EXECUTE FUNCTION swallow();");
    let r = load(&pg, "crm.\"Orders\"", input.clone(), &[]).expect(1);
    r.stderr_has(&["Source: 2 rows → Postgres: 1 rows ✗", "rolled back"]);
    assert_eq!(pg.count("crm.\"Orders\""), 0);
    assert!(last_run(&pg).starts_with("failed|2|1|count mismatch"), "{}", last_run(&pg));
}

#[test]
fn a_trigger_that_removes_rows_after_copy_fails_the_count_of_an_empty_table() {
    // Into an empty table without triggers the count is COPY's own tag; a trigger (on the table
    // or on one partition only) can remove stored rows, so then the table itself is counted.
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE t (id text PRIMARY KEY);
         CREATE FUNCTION drop_o2() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM t WHERE id = 'o2'; RETURN NULL; END $$;
         CREATE TRIGGER drop_o2 AFTER INSERT ON t FOR EACH STATEMENT EXECUTE FUNCTION drop_o2();
         CREATE TABLE ev (id bigint, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
         CREATE TABLE ev_2026 PARTITION OF ev FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         CREATE FUNCTION drop_ev() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM ev_2026 WHERE id = NEW.id; RETURN NULL; END $$;
         CREATE TRIGGER drop_ev AFTER INSERT ON ev_2026 FOR EACH ROW EXECUTE FUNCTION drop_ev();",
    );
    let input = stream(&[r#"{"id":"o1"}"#, r#"{"id":"o2"}"#]);
    load(&pg, "t", input, &[]).expect(1).stderr_has(&["Source: 2 rows → Postgres: 1 rows ✗", "rolled back"]);
    assert_eq!(pg.count("t"), 0);
    let input = stream(&[r#"{"id":1,"at":"2025-06-01"}"#, r#"{"id":2,"at":"2026-06-01"}"#]);
    load(&pg, "ev", input.clone(), &[]).expect(1).stderr_has(&["Source: 2 rows → Postgres: 1 rows ✗", "rolled back"]);
    assert_eq!(pg.count("ev"), 0);
    // Without the triggers both load, counted ✓ (from COPY's tag).
    pg.exec("DROP TRIGGER drop_o2 ON t; DROP TRIGGER drop_ev ON ev_2026");
    load(&pg, "ev", input, &[]).ok().stderr_has(&["Source: 2 rows → Postgres: 2 rows ✓"]);
    assert_eq!(pg.count("ev"), 2);
}

#[test]
fn a_small_empty_table_keeps_its_indexes_and_its_repeats_are_still_named_by_two_lines() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE teams (id int PRIMARY KEY); INSERT INTO teams VALUES (1);
         CREATE TABLE t (id bigint CONSTRAINT t_pk PRIMARY KEY, email text CONSTRAINT t_email UNIQUE,
             team int CONSTRAINT t_team REFERENCES teams(id));",
    );
    let oids =
        "SELECT string_agg(indexrelid::text, ',' ORDER BY indexrelid) FROM pg_index WHERE indrelid = 't'::regclass";
    let before = pg.one(oids);
    let row = |id: u32, email: &str, team: u32| format!(r#"{{"id":{id},"email":"{email}","team":{team}}}"#);
    let rows = |r: &[String]| stream(&r.iter().map(String::as_str).collect::<Vec<_>>());
    // The rows are tried into the indexed table; what fails there is loaded the way a longer
    // stream is, so the errors are that path's: a repeat named by its two lines.
    let r = load(&pg, "t", rows(&[row(1, "a@x", 1), row(2, "b@x", 1), row(3, "c@x", 1), row(1, "d@x", 1)]), &[]);
    r.expect(65).stderr_has(&["line 4: key (id) = 1 repeats line 1", "nothing was committed"]);
    let r = load(&pg, "t", rows(&[row(1, "a@x", 1), row(2, "b@x", 1), row(3, "a@x", 1)]), &[]);
    r.expect(65).stderr_has(&["line 3: key (email) = a@x repeats line 1"]);
    let r = load(&pg, "t", rows(&[row(1, "a@x", 1), row(2, "b@x", 9)]), &[]);
    r.expect(65).stderr_has(&["(team)=(9) is not present in table \"teams\"", "--defer-fks"]);
    assert_eq!(pg.count("t"), 0);
    assert_eq!(pg.one(oids), before, "a failed load changed the indexes");
    // A good small load: into the indexed table, the indexes as they were (not built again).
    let good: Vec<String> = (1..=100).map(|i| row(i, &format!("p{i}@x"), 1)).collect();
    load(&pg, "t", rows(&good), &[]).ok().stderr_has(&["Source: 100 rows → Postgres: 100 rows ✓"]);
    assert_eq!(pg.one(oids), before, "a small table's indexes were built again");
    assert_eq!(pg.count("t"), 100);
    // From --rebuild-indexes-from (here 1kB, the 100 rows are ~4 kB of COPY data; 0: always)
    // they are set aside and built after COPY, under the same names.
    for from in ["1kB", "0"] {
        pg.exec("TRUNCATE t");
        let before = pg.one(oids);
        load(&pg, "t", rows(&good), &["--rebuild-indexes-from", from]).ok();
        assert_ne!(pg.one(oids), before, "--rebuild-indexes-from {from}: the indexes were kept");
        assert_eq!(
            pg.one(
                "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE conrelid = 't'::regclass"
            ),
            "t_email,t_pk,t_team"
        );
    }
    pg.exec("TRUNCATE t");
    let r = load(&pg, "t", rows(&[row(1, "a@x", 1), row(1, "b@x", 1)]), &["--rebuild-indexes-from", "0"]);
    r.expect(65).stderr_has(&["line 2: key (id) = 1 repeats line 1"]);
    for bad in ["4XB", "MB", "-1", "1.5MB"] {
        load(&pg, "t", rows(&good), &["--rebuild-indexes-from", bad])
            .expect(64)
            .stderr_has(&["--rebuild-indexes-from takes a size"]);
    }
}

#[test]
fn children_before_parents_with_defer_fks() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE customers (id text PRIMARY KEY);
             CREATE TABLE quotations (id text PRIMARY KEY, customer_id text CONSTRAINT q_customer REFERENCES customers(id));");
    let input = stream(&[r#"{"id":"q1","customer_id":"c1"}"#]);
    load(&pg, "quotations", input.clone(), &[]).expect(65).stderr_has(&[
        "(customer_id)=(c1)",
        "is not present in table \"customers\"",
        "--defer-fks",
    ]);
    load(&pg, "quotations", input, &["--defer-fks"])
        .ok()
        .stderr_has(&["NOT VALID", "VALIDATE CONSTRAINT \"q_customer\""]);
    assert_eq!(pg.one("SELECT convalidated::text FROM pg_constraint WHERE conname = 'q_customer'"), "false");
    load(&pg, "customers", stream(&[r#"{"id":"c1"}"#]), &[]).ok();
    pg.exec("ALTER TABLE quotations VALIDATE CONSTRAINT q_customer");
}

#[test]
fn defer_fks_into_a_partition_sets_aside_its_own_keys_not_the_ones_it_inherits() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE customers (id text PRIMARY KEY);
         CREATE TABLE ev (id bigint, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE ev_2026 PARTITION OF ev FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         INSERT INTO ev VALUES (1, '2026-05-01');
         CREATE TABLE kid (id bigint, at date, customer text, CONSTRAINT kid_ev FOREIGN KEY (id, at) REFERENCES ev)
             PARTITION BY RANGE (at);
         CREATE TABLE kid_2026 PARTITION OF kid FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         ALTER TABLE kid_2026 ADD CONSTRAINT kid_customer FOREIGN KEY (customer) REFERENCES customers ON DELETE CASCADE;",
    );
    let defs = "SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint \
                WHERE contype = 'f' ORDER BY 1";
    let before = pg.rows(defs);
    // The customer is not there yet; the inherited kid_ev (and its rows per partition of ev) stays and holds.
    load(&pg, "kid_2026", stream(&[r#"{"id":1,"at":"2026-05-01","customer":"c1"}"#]), &["--defer-fks"])
        .ok()
        .stderr_has(&["NOT VALID", "VALIDATE CONSTRAINT \"kid_customer\";"]);
    assert_eq!(pg.one("SELECT convalidated::text FROM pg_constraint WHERE conname = 'kid_customer'"), "false");
    assert_eq!(pg.rows(defs), before.iter().map(|d| d.replace("CASCADE", "CASCADE NOT VALID")).collect::<Vec<_>>());
    load(
        &pg,
        "kid_2026",
        stream(&[r#"{"id":2,"at":"2026-05-01","customer":"c1"}"#]),
        &["--defer-fks", "--mode", "append"],
    )
    .expect(65)
    .stderr_has(&["(id, at)=(2, 2026-05-01)"]);
    assert_eq!(pg.count("kid"), 1);
}

#[test]
fn a_missing_partition_is_named_nothing_commits_and_ensure_partitions_creates_it() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE device_logs (id bigint, received_at timestamptz NOT NULL, PRIMARY KEY (id, received_at)) PARTITION BY RANGE (received_at);
             CREATE TABLE device_logs_2024_01 PARTITION OF device_logs FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');");
    let input = stream(&[
        r#"{"id":1,"received_at":"2024-01-05T00:00:00Z"}"#,
        r#"{"id":2,"received_at":"2024-03-05T00:00:00Z"}"#,
    ]);
    let r = load(&pg, "device_logs", input.clone(), &[]).expect(65);
    r.stderr_has(&[
        "line 2",
        "no partition of 'device_logs'",
        "2024-03",
        "pg-partition ensure device_logs --from 2024-03",
    ]);
    assert_eq!(pg.count("device_logs"), 0);
    // The staged path (the table has rows) names the month too.
    pg.exec("INSERT INTO device_logs VALUES (100, '2024-01-02')");
    load(&pg, "device_logs", input.clone(), &[])
        .expect(65)
        .stderr_has(&["2024-03", "pg-partition ensure device_logs --from 2024-03"]);
    assert_eq!(pg.count("device_logs"), 1);
    // --ensure-partitions creates what the rows need, with pg-partition's names, in the load's transaction.
    let more = stream(&[
        r#"{"id":1,"received_at":"2024-01-05T00:00:00Z"}"#,
        r#"{"id":2,"received_at":"2024-03-05T00:00:00Z"}"#,
        r#"{"id":3,"received_at":"2023-12-31T23:59:59.999999Z"}"#,
    ]);
    load(&pg, "device_logs", more.clone(), &["--ensure-partitions"]).ok().stderr_has(&[
        "Source: 3 rows → Postgres: 3 rows ✓",
        "created partitions device_logs_2023_12, device_logs_2024_02, device_logs_2024_03",
    ]);
    assert_eq!(
        pg.rows("SELECT tableoid::regclass::text, id FROM device_logs ORDER BY id"),
        vec!["device_logs_2024_01|1", "device_logs_2024_03|2", "device_logs_2023_12|3", "device_logs_2024_01|100"]
    );
    load(&pg, "device_logs", more, &["--ensure-partitions"]).ok().stderr_has(&["0 rows inserted, 3 already present"]);
    // A dry run creates nothing.
    load(
        &pg,
        "device_logs",
        stream(&[r#"{"id":9,"received_at":"2025-06-01T00:00:00Z"}"#]),
        &["--ensure-partitions", "--dry-run"],
    )
    .ok();
    assert_eq!(pg.one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'device_logs'::regclass"), "4");
}

/// Rows routed as they stream (no staging table): the partitions created are the ones the
/// staged path created, gaps between the earliest and the latest key included.
#[test]
fn ensure_partitions_on_the_direct_path_fills_gaps_moves_default_rows_and_follows_the_key_default() {
    let pg = Pg::new();
    let parts = "SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_inherits i \
                 JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'logs'::regclass";
    pg.exec(
        "CREATE TABLE logs (id bigint, at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE logs_2024_01 PARTITION OF logs FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00');
         CREATE TABLE logs_2024_03 PARTITION OF logs FOR VALUES FROM ('2024-03-01 00:00:00+00') TO ('2024-04-01 00:00:00+00');",
    );
    // Every row has a partition, but February, between them, has none: created as before.
    let rows = stream(&[r#"{"id":1,"at":"2024-01-05T00:00:00Z"}"#, r#"{"id":2,"at":"2024-03-05T00:00:00Z"}"#]);
    load(&pg, "logs", rows.clone(), &["--ensure-partitions", "--dry-run"]).ok();
    assert_eq!(pg.one(parts), "logs_2024_01,logs_2024_03");
    load(&pg, "logs", rows, &["--ensure-partitions"]).ok().stderr_has(&["created partitions logs_2024_02"]);
    assert_eq!(pg.one(parts), "logs_2024_01,logs_2024_02,logs_2024_03");

    // A row that leaves the key out gets the default (now(), the transaction's time): its
    // month's partition is made for it.
    let month = pg.one("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')");
    load(&pg, "logs", stream(&[r#"{"id":3}"#]), &["--ensure-partitions", "--mode", "append"]).ok();
    assert_eq!(pg.one("SELECT tableoid::regclass::text FROM logs WHERE id = 3"), format!("logs_{month}"));

    // A key in no period: only a DEFAULT partition could take it.
    load(&pg, "logs", stream(&[r#"{"id":4,"at":"infinity"}"#]), &["--ensure-partitions", "--mode", "append"])
        .expect(65)
        .stderr_has(&["line 1", "accepts at = infinity: it is in no period, so only a DEFAULT partition"]);

    // Rows of the DEFAULT partition move into the partitions created for the stream, twice in
    // one load (a row for June, then one for August, each ending a COPY).
    pg.exec(
        "CREATE TABLE logs_default PARTITION OF logs DEFAULT;
         INSERT INTO logs VALUES (10, '2024-06-10'), (11, '2024-08-10');",
    );
    let r = load(
        &pg,
        "logs",
        stream(&[
            r#"{"id":20,"at":"2024-06-01T00:00:00Z"}"#,
            r#"{"id":21,"at":"2024-06-02T00:00:00Z"}"#,
            r#"{"id":22,"at":"2024-08-01T00:00:00Z"}"#,
        ]),
        &["--ensure-partitions", "--mode", "append"],
    )
    .ok();
    r.stderr_has(&["Source: 3 rows → Postgres: 3 rows ✓", "(2 rows moved out of the default partition)"]);
    assert_eq!(
        pg.rows("SELECT tableoid::regclass::text, id FROM logs WHERE id >= 10 ORDER BY id"),
        vec!["logs_2024_06|10", "logs_2024_08|11", "logs_2024_06|20", "logs_2024_06|21", "logs_2024_08|22"]
    );
    assert_eq!(pg.one("SELECT count(*) FROM logs_default"), "0");
}

#[test]
fn connections_by_env_libpq_variables_and_tls() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE t (id int PRIMARY KEY)");
    let input = stream(&[r#"{"id":1}"#]);
    cmd("pg-load").arg("t").env("DATABASE_URL", &pg.url).stdin(input.clone()).ok();
    // libpq variables, taken apart from the URL.
    let rest = pg.url.strip_prefix("postgres://").unwrap();
    let (userpass, hostdb) = rest.split_once('@').unwrap();
    let (user, pass) = userpass.split_once(':').unwrap();
    let (hostport, db) = hostdb.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let libpq =
        |c: crate::harness::Cmd| c.env("PGHOST", host).env("PGPORT", port).env("PGUSER", user).env("PGDATABASE", db);
    libpq(cmd("pg-load").arg("t")).env("PGPASSWORD", pass).stdin(input.clone()).ok().stderr_has(&["already present"]);
    // TLS: require encrypts; verify-full checks the certificate and the host name.
    let ca = std::env::var("PGFERRY_TEST_PG_CA").expect("tests/run exports PGFERRY_TEST_PG_CA");
    let tls_url =
        |mode: &str, h: &str| format!("postgres://{user}:{pass}@{h}:{port}/{db}?sslmode={mode}&sslrootcert={ca}");
    cmd("pg-load").args(["--db", &tls_url("require", "127.0.0.1"), "t"]).stdin(input.clone()).ok();
    cmd("pg-load").args(["--db", &tls_url("verify-full", "localhost"), "t"]).stdin(input.clone()).ok();
    let r = cmd("pg-load").args(["--db", &tls_url("verify-full", "127.0.0.1"), "t"]).stdin(input.clone()).expect(69);
    assert!(!r.stderr().contains(pass), "password printed");
    r.stderr_has(&["server certificate: IP address mismatch"]);
    // verify-ca checks the chain, not the name; against another CA it fails.
    cmd("pg-load").args(["--db", &tls_url("verify-ca", "127.0.0.1"), "t"]).stdin(input.clone()).ok();
    let other_ca = std::path::Path::new(&ca).with_file_name("client-ca.crt");
    let url = tls_url("verify-ca", "127.0.0.1").replace(&ca, other_ca.to_str().unwrap());
    let r = cmd("pg-load").args(["--db", &url, "t"]).stdin(input.clone()).expect(69);
    r.stderr_has(&["server certificate: "]);
    // Under prefer a root file that does not verify the server fails too (libpq would retry
    // without TLS), saying why the file was used and what to do.
    let r = cmd("pg-load").args(["--db", &url.replace("verify-ca", "prefer"), "t"]).stdin(input.clone()).expect(69);
    r.stderr_has(&["because that file exists", "sslmode=disable"]);
    // SCRAM with channel binding: the server checks the hash of its certificate we send.
    let bound = format!("{}&channel_binding=require", tls_url("require", "127.0.0.1"));
    cmd("pg-load").args(["--db", &bound, "t"]).stdin(input.clone()).ok();
    cmd("pg-load").args(["--db", &tls_url("disable", "127.0.0.1"), "t"]).stdin(input.clone()).ok();
    // The run log records whether each load's connection was encrypted.
    assert_eq!(
        pg.rows("SELECT tls FROM _migration_runs WHERE outcome = 'success' ORDER BY id"),
        vec!["t", "t", "t", "t", "t", "t", "f"]
    );
    // Wrong password: unavailable, and neither password appears.
    let wrong = pg.url.replace(pass, "hunter2-wrong");
    let r = cmd("pg-load").args(["--db", &wrong, "t"]).stdin(input.clone()).expect(69);
    assert!(!r.stderr().contains("hunter2") && !r.stderr().contains(pass), "{}", r.describe());
    r.stderr_has(&["password authentication failed"]);
    // Nothing secret ever reaches the run log.
    assert_eq!(pg.one(&format!("SELECT count(*) FROM _migration_runs WHERE coalesce(error,'') LIKE '%{pass}%'")), "0");
    let _ = json!(null);
}

#[test]
fn kill_9_of_pg_load_mid_load_commits_nothing_and_a_rerun_completes() {
    let pg = Pg::new();
    pg.exec(LOGS_TABLE);
    let t = TempDir::new();
    let file = t.path("big.ndjson");
    write_log_stream(&file, "", 400_000, true);
    kill_9_pg_load_mid_copy(&pg, &file, 200_000, &["logs"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(pg.count("logs"), 0, "a killed load committed rows");
    assert_eq!(pg.one("SELECT outcome FROM _migration_runs"), "running");
    cmd("pg-load")
        .args(["--db", &pg.url, "logs"])
        .stdin_file(&file)
        .ok()
        .stderr_has(&["Source: 400000 rows → Postgres: 400000 rows ✓"]);
    assert_eq!(pg.rows("SELECT outcome FROM _migration_runs ORDER BY id"), vec!["interrupted", "success"]);
}

#[test]
fn kill_9_of_the_producer_mid_stream_is_a_truncated_stream() {
    let pg = Pg::new();
    pg.exec(LOGS_TABLE);
    let t = TempDir::new();
    let db = t.path("src.sqlite");
    sqlite_db(
        &db,
        "CREATE TABLE logs (id INTEGER PRIMARY KEY, level TEXT, received_at TEXT, n INTEGER);
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000)
        INSERT INTO logs SELECT x, 'info', '2024-01-05T10:00:00Z', x % 7 FROM c;",
    );
    // The producer is killed with SIGKILL after part of its output has reached pg-load.
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let mut producer = Command::new(bin("sqlite-dump"))
        .arg(db.display().to_string())
        .arg("logs")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut consumer = Command::new(bin("pg-load"))
        .args(["--db", &pg.url, "logs"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut from = producer.stdout.take().unwrap();
    let mut to = consumer.stdin.take().unwrap();
    let mut buf = vec![0u8; 100_000];
    let mut sent = 0;
    while sent < 3_000_000 {
        let n = from.read(&mut buf).unwrap();
        to.write_all(&buf[..n]).unwrap();
        sent += n;
    }
    Command::new("kill").args(["-9", &producer.id().to_string()]).status().unwrap();
    producer.wait().unwrap();
    // Whatever was still in the pipe arrives, then EOF.
    let mut rest = vec![];
    let _ = from.read_to_end(&mut rest);
    to.write_all(&rest).unwrap();
    drop(to);
    let out = consumer.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("middle of a line") || err.contains("without its end record"), "{err}");
    assert_eq!(pg.count("logs"), 0);
    assert!(last_run(&pg).starts_with("failed|"));
    // The run log says how far the stream got before it broke off.
    let got: i64 = pg.one("SELECT source_rows FROM _migration_runs ORDER BY id DESC LIMIT 1").parse().unwrap();
    assert!(got > 0 && got < 300_000, "{got}");
    // The re-run with a whole stream completes.
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' '{}' logs | '{}' --db '{}' logs",
            bin("sqlite-dump").display(),
            db.display(),
            bin("pg-load").display(),
            pg.url
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pg.count("logs"), 300000);
}

#[test]
fn into_an_empty_table_indexes_are_built_after_copy_and_restored_exactly() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE people (id bigint CONSTRAINT people_pk PRIMARY KEY, email text, team int, note text,
             CONSTRAINT people_email UNIQUE (email) DEFERRABLE INITIALLY DEFERRED);
         CREATE INDEX people_team ON people (team) INCLUDE (note) WHERE team > 0;
         CREATE INDEX people_lower ON people (lower(email) DESC NULLS LAST) WITH (fillfactor = 70);",
    );
    let shape = "SELECT string_agg(d, '; ' ORDER BY d) FROM (
        SELECT pg_get_indexdef(indexrelid) AS d FROM pg_index WHERE indrelid = 'people'::regclass
        UNION ALL SELECT conname || ' ' || pg_get_constraintdef(oid) || ' ' || condeferrable || condeferred
          FROM pg_constraint WHERE conrelid = 'people'::regclass) x";
    let before = pg.one(shape);
    let row = |id: u32, email: &str| format!(r#"{{"id":{id},"email":"{email}","team":{},"note":"n"}}"#, id % 3);
    // A repeated primary key and a repeated unique value: both named by their two lines.
    let rows = [row(1, "a@x"), row(2, "b@x"), row(3, "c@x"), row(1, "d@x")];
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    let r = load(&pg, "people", stream(&refs), &[]).expect(65);
    r.stderr_has(&["line 4: key (id) = 1 repeats line 1", "nothing was committed"]);
    let rows = [row(1, "a@x"), row(2, "b@x"), row(3, "a@x")];
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    let mut input = stream(&refs);
    input.insert(0, '\n'); // a blank first line still counts
    load(&pg, "people", input, &[]).expect(65).stderr_has(&["line 4: key (email) = a@x repeats line 2"]);
    assert_eq!(pg.count("people"), 0);
    assert_eq!(pg.one(shape), before, "a failed load changed the indexes");
    // A good load: every index and constraint as it was, the rows there, the key enforced.
    let rows: Vec<String> = (1..=500).map(|i| row(i, &format!("p{i}@x"))).collect();
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    load(&pg, "people", stream(&refs), &[]).ok().stderr_has(&["Source: 500 rows → Postgres: 500 rows ✓"]);
    assert_eq!(pg.one(shape), before);
    assert_eq!(pg.one("SELECT count(*) FROM pg_index WHERE indrelid = 'people'::regclass AND indisvalid"), "4");
    load(&pg, "people", stream(&[&row(7, "new@x")]), &["--mode", "append"]).expect(65).stderr_has(&["duplicate key"]);
    // A table that a foreign key references keeps its indexes (the key needs them) and loads as before.
    pg.exec("CREATE TABLE teams (id int PRIMARY KEY); CREATE TABLE members (team int REFERENCES teams(id));");
    load(&pg, "teams", stream(&[r#"{"id":1}"#, r#"{"id":1}"#]), &[]).expect(65).stderr_has(&[
        "line 2",
        "duplicate key",
        "Key (id)=(1)",
    ]);
    load(&pg, "teams", stream(&[r#"{"id":1}"#, r#"{"id":2}"#]), &[]).ok();
    // A table whose key into teams is checked at COMMIT (initially deferred) keeps its indexes:
    // its COPY leaves trigger events pending, and ALTER TABLE refuses to run with those.
    pg.exec("CREATE TABLE later (id int PRIMARY KEY, team int REFERENCES teams(id) DEFERRABLE INITIALLY DEFERRED);");
    load(&pg, "later", stream(&[r#"{"id":1,"team":1}"#, r#"{"id":2,"team":2}"#]), &[]).ok();
    assert_eq!(pg.count("later"), 2);
}

/// How many COPY statements into `public.table` the server logged (a database whose sessions
/// log their statements: `log_statement = 'all'`).
fn copies_into(table: &str) -> usize {
    let needle = format!(": COPY \"public\".\"{table}\" (");
    server_log().lines().filter(|l| l.contains(&needle)).count()
}

/// With --ensure-partitions, runs of rows go straight into their partition (one COPY each)
/// where that stores what the parent's routing would; otherwise, and once runs are short,
/// through the parent.
#[test]
fn rows_go_straight_into_their_partitions_only_where_that_stores_what_routing_would() {
    let pg = Pg::new();
    // The server logs this database's statements: which table each COPY went into. Table names
    // carry the database's, since other tests' statements share the log.
    pg.exec(&format!("ALTER DATABASE {} SET log_statement = 'all'", pg.name));
    let make = |t: &str| {
        pg.exec(&format!(
            "CREATE TABLE {t} (id bigint, at timestamptz NOT NULL, note text DEFAULT 'parent', PRIMARY KEY (id, at))
               PARTITION BY RANGE (at);
             CREATE TABLE {t}_2024_01 PARTITION OF {t} FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00');
             CREATE TABLE {t}_2024_02 PARTITION OF {t} FOR VALUES FROM ('2024-02-01 00:00:00+00') TO ('2024-03-01 00:00:00+00');"
        ))
    };
    // Rows in time order over January, February and March 2024 (no partition yet: created),
    // one every 864 s; `note` left out of every thousandth row.
    let at = |s: i64| {
        let d = s / 86_400;
        let (m, day) = if d < 31 {
            (1, d + 1)
        } else if d < 60 {
            (2, d - 30)
        } else {
            (3, d - 59)
        };
        format!("2024-{m:02}-{day:02}T{:02}:{:02}:{:02}Z", s % 86_400 / 3600, s % 3600 / 60, s % 60)
    };
    let rows = |n: usize, order: &dyn Fn(usize) -> usize| -> Vec<String> {
        (0..n)
            .map(order)
            .map(|i| match i % 1000 {
                0 => format!(r#"{{"id":{i},"at":"{}"}}"#, at(i as i64 * 864)),
                _ => format!(r#"{{"id":{i},"at":"{}","note":"n"}}"#, at(i as i64 * 864)),
            })
            .collect()
    };
    let feed = |v: &[String]| stream(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let placed = |t: &str| {
        pg.rows(&format!(
            "SELECT tableoid::regclass::text || ':' || count(*) || ':' || count(*) FILTER (WHERE note = 'parent') \
             FROM {t} GROUP BY tableoid ORDER BY 1"
        ))
    };
    let a = format!("{}_a", pg.name);
    make(&a);
    let sorted = rows(9_000, &|i| i);
    load(&pg, &a, feed(&sorted), &["--ensure-partitions", "--no-analyze"])
        .ok()
        .stderr_has(&["Source: 9000 rows → Postgres: 9000 rows ✓", &format!("created partitions {a}_2024_03")]);
    assert_eq!(
        placed(&a),
        vec![format!("{a}_2024_01:3100:4"), format!("{a}_2024_02:2900:2"), format!("{a}_2024_03:3000:3")]
    );
    // A COPY per run of rows with the same columns in the same partition (the created one too).
    for (p, runs) in [("2024_01", 8), ("2024_02", 5), ("2024_03", 6)] {
        assert_eq!(copies_into(&format!("{a}_{p}")), runs, "{p}");
    }
    assert_eq!(copies_into(&a), 0);

    // A partition with a default of its own: its rows go through the parent, which fills the
    // parent's default; a statement trigger on the parent: every row through the parent.
    let b = format!("{}_b", pg.name);
    make(&b);
    pg.exec(&format!("ALTER TABLE {b}_2024_02 ALTER note SET DEFAULT 'own'"));
    load(&pg, &b, feed(&sorted), &["--ensure-partitions", "--no-analyze"]).ok();
    assert_eq!(placed(&b), placed(&a).iter().map(|r| r.replace(&a, &b)).collect::<Vec<_>>());
    assert_eq!(copies_into(&format!("{b}_2024_02")), 0);
    assert!(copies_into(&format!("{b}_2024_01")) > 0 && copies_into(&b) > 0);
    let c = format!("{}_c", pg.name);
    make(&c);
    pg.exec(&format!(
        "CREATE TABLE {c}_fired (n int); CREATE FUNCTION {c}_count() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN INSERT INTO {c}_fired VALUES (1); RETURN NULL; END$$;
         CREATE TRIGGER counted AFTER INSERT ON {c} FOR EACH STATEMENT EXECUTE FUNCTION {c}_count();"
    ));
    load(&pg, &c, feed(&sorted), &["--ensure-partitions", "--no-analyze"]).ok();
    assert_eq!(pg.count(&c), 9000);
    assert_eq!(copies_into(&format!("{c}_2024_01")) + copies_into(&format!("{c}_2024_02")), 0);
    assert_eq!(pg.one(&format!("SELECT count(*) > 0 FROM {c}_fired")), "t");

    // Rows alternating between months: a few COPYs into partitions, then the parent.
    let d = format!("{}_d", pg.name);
    make(&d);
    let alternating = rows(9_000, &|i| if i % 2 == 0 { i / 2 } else { 4_500 + i / 2 });
    load(&pg, &d, feed(&alternating), &["--ensure-partitions", "--no-analyze"]).ok();
    assert_eq!(placed(&d), placed(&a).iter().map(|r| r.replace(&a, &d)).collect::<Vec<_>>());
    let direct: usize = ["2024_01", "2024_02", "2024_03"].iter().map(|p| copies_into(&format!("{d}_{p}"))).sum();
    assert!((1..=20).contains(&direct), "{direct} COPYs into partitions");
    assert!(copies_into(&d) >= 1);

    // A partition made apart and attached, its columns in another order with a dropped one
    // between them and the parent's defaults: rows go straight in, each value in its column.
    let f = format!("{}_f", pg.name);
    make(&f);
    pg.exec(&format!(
        "DROP TABLE {f}_2024_02;
         CREATE TABLE {f}_2024_02 (note text DEFAULT 'parent', gone int, at timestamptz NOT NULL, id bigint NOT NULL);
         ALTER TABLE {f}_2024_02 DROP COLUMN gone;
         ALTER TABLE {f} ATTACH PARTITION {f}_2024_02 FOR VALUES FROM ('2024-02-01 00:00:00+00') TO ('2024-03-01 00:00:00+00');"
    ));
    load(&pg, &f, feed(&sorted), &["--ensure-partitions", "--no-analyze"]).ok();
    assert_eq!(placed(&f), placed(&a).iter().map(|r| r.replace(&a, &f)).collect::<Vec<_>>());
    assert_eq!(copies_into(&format!("{f}_2024_02")), 5);
    assert_eq!(
        pg.one(&format!("SELECT id || ' ' || at || ' ' || note FROM {f} WHERE id = 4000")),
        "4000 2024-02-10 00:00:00+00 parent"
    );

    // A key repeated across the stream is still named by its two lines (indexes built after COPY).
    let e = format!("{}_e", pg.name);
    make(&e);
    let mut repeated = sorted.clone();
    repeated.push(sorted[5_000].clone());
    load(&pg, &e, feed(&repeated), &["--ensure-partitions", "--no-analyze"])
        .expect(65)
        .stderr_has(&["line 9001: key (id, at) = (5000,", "repeats line 5001"]);
    assert_eq!(pg.count(&e), 0);
}

/// Rows going straight into partitions land where the server's routing puts them, at the
/// edges of a period, for each key type pg-partition manages and bounds written in another
/// time zone.
#[test]
fn rows_straight_into_partitions_land_where_routing_would_at_the_edges_for_every_key_type() {
    let pg = Pg::new();
    pg.exec(&format!("ALTER DATABASE {} SET log_statement = 'all'", pg.name));
    // (The timestamptz bounds are UTC months, as pg-partition makes them, written at +01.)
    for (key, jan, feb, mar, last_of_jan, first_of_feb) in [
        (
            "timestamptz",
            "'2024-01-01 01:00:00+01'",
            "'2024-02-01 01:00:00+01'",
            "'2024-03-01 01:00:00+01'",
            "2024-02-01T00:59:59.999999+01:00",
            "2024-02-01T01:00:00+01:00",
        ),
        (
            "timestamp",
            "'2024-01-01 00:00:00'",
            "'2024-02-01 00:00:00'",
            "'2024-03-01 00:00:00'",
            "2024-01-31 23:59:59.999999",
            "2024-02-01 00:00:00",
        ),
        ("date", "'2024-01-01'", "'2024-02-01'", "'2024-03-01'", "2024-01-31", "2024-02-01"),
    ] {
        let t = format!("{}_{}", pg.name, key);
        pg.exec(&format!(
            "SET TimeZone = 'Europe/Paris';
             CREATE TABLE {t} (id int, at {key} NOT NULL) PARTITION BY RANGE (at);
             CREATE TABLE {t}_jan PARTITION OF {t} FOR VALUES FROM ({jan}) TO ({feb});
             CREATE TABLE {t}_feb PARTITION OF {t} FOR VALUES FROM ({feb}) TO ({mar});"
        ));
        let mut rows: Vec<String> = vec![];
        for i in 0..3 {
            rows.push(format!(r#"{{"id":{},"at":"{last_of_jan}"}}"#, 2 * i));
            rows.push(format!(r#"{{"id":{},"at":"{first_of_feb}"}}"#, 2 * i + 1));
        }
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        load(&pg, &t, stream(&refs), &["--ensure-partitions", "--no-analyze"]).ok();
        assert_eq!(
            pg.one(&format!("SELECT string_agg(id || ':' || tableoid::regclass::text, ',' ORDER BY id) FROM {t}")),
            (0..6).map(|i| format!("{i}:{t}_{}", if i % 2 == 0 { "jan" } else { "feb" })).collect::<Vec<_>>().join(","),
            "{key}"
        );
        assert!(copies_into(&format!("{t}_jan")) >= 1 && copies_into(&format!("{t}_feb")) >= 1, "{key}");
    }
}

/// Upsert rewrites a present row only where a value differs as its text shows it: a
/// converging re-run writes nothing and is not analyzed again.
#[test]
fn upsert_rewrites_only_the_rows_whose_values_differ() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE t (id int PRIMARY KEY, v text, n numeric, j jsonb, extra text DEFAULT 'd')");
    let first = stream(&[
        r#"{"id":1,"v":"a","n":1.5,"j":{"x":1}}"#,
        r#"{"id":2,"v":"b","n":2,"j":null}"#,
        r#"{"id":3,"v":"c","n":1.0,"j":[1]}"#,
    ]);
    load(&pg, "t", first, &["--mode", "upsert"]).ok();
    pg.exec("UPDATE t SET extra = 'kept' WHERE id = 1");
    let versions = || pg.rows("SELECT id || ':' || xmin FROM t ORDER BY id");
    let before = versions();
    // id 1 as it was (the column the stream leaves out is not compared), id 2's v changed,
    // id 3's n 1.0 -> 1.00 (equal by =, not as text), id 4 new.
    let second = stream(&[
        r#"{"id":1,"v":"a","n":1.5,"j":{"x":1}}"#,
        r#"{"id":2,"v":"B","n":2,"j":null}"#,
        r#"{"id":3,"v":"c","n":1.00,"j":[1]}"#,
        r#"{"id":4,"v":"d","n":4,"j":{}}"#,
    ]);
    load(&pg, "t", second.clone(), &["--mode", "upsert"])
        .ok()
        .stderr_has(&["1 rows inserted, 3 already present (2 updated, 1 unchanged)"]);
    let after = versions();
    assert_eq!(after[0], before[0], "the unchanged row was rewritten");
    assert_ne!(after[1], before[1]);
    assert_ne!(after[2], before[2]);
    assert_eq!(
        pg.rows(
            "SELECT id || ' ' || v || ' ' || n || ' ' || coalesce(j::text, '-') || ' ' || extra FROM t ORDER BY id"
        ),
        vec!["1 a 1.5 {\"x\": 1} kept", "2 B 2 - d", "3 c 1.00 [1] d", "4 d 4 {} d"]
    );
    let again = versions();
    load(&pg, "t", second, &["--mode", "upsert"]).ok().stderr_has(&[
        "0 rows inserted, 4 already present (0 updated, 4 unchanged)",
        "no row changed, its statistics stand: not analyzed again",
    ]);
    assert_eq!(versions(), again);
}

#[test]
fn a_100_mb_value_is_held_about_twice_by_pg_load_not_five_times() {
    let pg = Pg::new();
    let dir = TempDir::new();
    pg.exec("CREATE TABLE blobs (id int PRIMARY KEY, t text, n int, b bytea)");
    // The line and its encoded row; the COPY buffers, the writer's and the connection's no more
    // (before: 496 MB for this row, the value copied at each of them).
    let value = "a".repeat(100_000_000);
    let file = dir.path("big.ndjson");
    std::fs::write(&file, stream(&[&format!(r#"{{"id":1,"t":"{value}"}}"#), r#"{"id":2,"t":"b","n":2}"#])).unwrap();
    for mode in ["insert", "upsert", "mirror", "replace"] {
        let (run, kb) = load(&pg, "blobs", "", &["--mode", mode, "--no-analyze"]).run_measured(&file);
        assert_eq!(run.code(), 0, "{}", run.describe());
        assert!(kb < 250_000, "{mode}: pg-load peaked at {kb} kB for a 100 MB value");
    }
    assert_eq!(
        pg.one("SELECT string_agg(id || ':' || length(t) || ':' || (t = repeat('a', 100000000)), ',' ORDER BY id) FROM blobs"),
        "1:100000000:true,2:1:false"
    );
}

#[test]
fn index_builds_after_copy_use_parallel_workers_from_4_mb_unless_the_server_allows_more() {
    let pg = Pg::new();
    // The server says in its log (DEBUG1) how each index is built; this database's sessions log it.
    pg.exec(&format!("ALTER DATABASE {} SET log_min_messages = debug1", pg.name));
    let pad = "p".repeat(100);
    let rows: Vec<String> = (1..=45_000).map(|i| format!(r#"{{"id":{i},"pad":"{pad}"}}"#)).collect();
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    let few: Vec<String> = (1..=10).map(|i| format!(r#"{{"id":{i},"pad":"x"}}"#)).collect();
    let few: Vec<&str> = few.iter().map(String::as_str).collect();
    let built = |table: &str| {
        let line = format!("building index \"{table}_pkey\" on table \"{table}\" ");
        let log = server_log();
        let found = log.lines().filter_map(|l| l.split_once(&line)).map(|(_, how)| how.to_string()).next_back();
        found.unwrap_or_else(|| panic!("the server log has no build of {table}_pkey"))
    };
    for t in ["big", "few", "few_low"] {
        pg.exec(&format!("CREATE TABLE {t} (id bigint PRIMARY KEY, pad text)"));
    }
    // 45,000 rows of ~140 bytes: ~750 pages, under the server's 8 MB default, over pg-load's 4 MB.
    load(&pg, "big", stream(&refs), &["--no-analyze"]).ok();
    let pages: i64 = pg.one("SELECT relpages FROM pg_class WHERE relname = 'big'").parse().unwrap();
    assert!((512..1024).contains(&pages), "the table is {pages} pages: the test needs 512 to 1023");
    assert!(built("big").starts_with("with request for 1 parallel workers"), "{}", built("big"));
    // (Ten rows keep their indexes unless told otherwise.)
    let always = ["--no-analyze", "--rebuild-indexes-from", "0"];
    load(&pg, "few", stream(&few), &always).ok();
    assert!(built("few").starts_with("serially"), "{}", built("few"));
    // A server that allows parallel builds of smaller tables keeps its own setting.
    pg.exec(&format!("ALTER DATABASE {} SET min_parallel_table_scan_size = 0", pg.name));
    load(&pg, "few_low", stream(&few), &always).ok();
    assert!(built("few_low").starts_with("with request for"), "{}", built("few_low"));
}

#[test]
fn into_an_empty_partitioned_table_indexes_are_built_after_copy_under_their_names_and_repeats_named_by_line() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE logs (id bigint, at timestamptz NOT NULL, serial text, msg text,
             CONSTRAINT logs_pk PRIMARY KEY (id, at),
             CONSTRAINT logs_serial UNIQUE (serial, at) DEFERRABLE INITIALLY DEFERRED) PARTITION BY RANGE (at);
         CREATE INDEX logs_serial_time ON logs (serial, at DESC);
         CREATE TABLE logs_a PARTITION OF logs FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00');
         CREATE TABLE logs_b PARTITION OF logs FOR VALUES FROM ('2024-02-01 00:00:00+00') TO ('2024-03-01 00:00:00+00');
         CREATE TABLE logs_rest PARTITION OF logs DEFAULT;
         -- Partition index names that are not the generated ones, and an index of one partition's own.
         ALTER INDEX logs_a_pkey RENAME TO logs_a_named_by_hand;
         ALTER INDEX logs_b_serial_at_idx RENAME TO logs_b_serial_desc;
         CREATE INDEX logs_b_own ON logs_b (msg);
         -- A partition attached with an index it already had: its name stays.
         CREATE TABLE logs_c (LIKE logs INCLUDING DEFAULTS);
         CREATE INDEX logs_c_old_name ON logs_c (serial, at DESC);
         ALTER TABLE logs ATTACH PARTITION logs_c FOR VALUES FROM ('2024-03-01 00:00:00+00') TO ('2024-04-01 00:00:00+00');",
    );
    let before = pg.schema_dump();
    let oids =
        "SELECT string_agg(relname || '=' || oid, ' ' ORDER BY relname) FROM pg_class WHERE relkind IN ('i', 'I')
        AND relname LIKE 'logs%'";
    let oids_before = pg.one(oids);
    // Rows alternate between partitions and vary in size (pages fill through the free space
    // map, so physical order is not stream order): a repeat is still named by its lines.
    let row = |i: u32, month: u32| {
        let len = if i.is_multiple_of(5) { 1 } else { 300 + (i * 7919) % 1200 } as usize;
        format!(
            r#"{{"id":{i},"at":"2024-{month:02}-{:02}T10:00:00Z","serial":"s{i}","msg":"{}"}}"#,
            1 + i % 28,
            "x".repeat(len)
        )
    };
    let mut rows: Vec<String> = (1..=3000).map(|i| row(i, 1 + i % 5)).collect();
    rows.insert(2400, row(700, 1)); // month 1 + 700 % 5
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    let r = load(&pg, "logs", stream(&refs), &[]).expect(65);
    r.stderr_has(&[
        "line 2401: key (id, at) = (700,\"2024-01-01 10:00:00+00\") repeats line 700",
        "nothing was committed",
    ]);
    // The second unique key, its repeat in the default partition (months 4 and 5 are in none).
    let mut rows: Vec<String> = (1..=3000).map(|i| row(i, 1 + i % 5)).collect();
    rows.insert(1500, row(4, 5).replace("\"id\":4,", "\"id\":9999,"));
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    load(&pg, "logs", stream(&refs), &[]).expect(65).stderr_has(&["line 1501: key (serial, at) = ", "repeats line 4"]);
    assert_eq!(pg.count("logs"), 0);
    assert_eq!(pg.schema_dump(), before, "a failed load changed the schema");
    // A good load: the same schema as pg_dump shows it, every attached index built anew (new
    // oids), the partition's own index kept, every index valid.
    let rows: Vec<String> = (1..=3000).map(|i| row(i, 1 + i % 5)).collect();
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    load(&pg, "logs", stream(&refs), &[]).ok().stderr_has(&["Source: 3000 rows → Postgres: 3000 rows ✓"]);
    assert_eq!(pg.schema_dump(), before);
    let oids_after = pg.one(oids);
    let old: Vec<&str> = oids_before.split(' ').collect();
    for (name, new) in oids_after.split(' ').map(|p| p.split_once('=').unwrap()) {
        let kept = old.iter().any(|o| *o == format!("{name}={new}"));
        assert_eq!(kept, name == "logs_b_own", "{name}: before {oids_before}, after {oids_after}");
    }
    assert_eq!(pg.one("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE 'logs%' AND NOT indisvalid"), "0");
    assert_eq!(pg.count("logs_rest"), 1200);
    // Into the loaded table the indexes stay: a repeat is COPY's error, by its line.
    load(&pg, "logs", stream(&[&row(5, 1)]), &["--mode", "append"]).expect(65).stderr_has(&["line 1", "duplicate key"]);
}

#[test]
fn ensure_partitions_into_an_empty_table_builds_the_indexes_after_the_rows_and_names_a_repeat_by_line() {
    let schema = "CREATE TABLE logs (id bigint, at timestamptz NOT NULL, serial text,
             CONSTRAINT logs_pk PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE INDEX logs_serial_time ON logs (serial, at DESC);
         CREATE TABLE logs_2024_01 PARTITION OF logs FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00');
         ALTER INDEX logs_2024_01_pkey RENAME TO logs_jan_key;";
    let pg = Pg::new();
    pg.exec(schema);
    let row = |i: u32, month: u32| format!(r#"{{"id":{i},"at":"2024-{month:02}-05T10:00:00Z","serial":"s{i}"}}"#);
    let mut rows: Vec<String> = (1..=400).map(|i| row(i, 1 + i % 3)).collect();
    rows.insert(300, row(30, 1));
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    let r = load(&pg, "logs", stream(&refs), &["--ensure-partitions"]).expect(65);
    r.stderr_has(&[
        "line 301: key (id, at) = (30,\"2024-01-05 10:00:00+00\") repeats line 30",
        "nothing was committed",
    ]);
    // A repeat in a partition the load itself creates (its index is built when it is attached).
    let mut rows: Vec<String> = (1..=400).map(|i| row(i, 1 + i % 3)).collect();
    rows.push(row(31, 2));
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    load(&pg, "logs", stream(&refs), &["--ensure-partitions"])
        .expect(65)
        .stderr_has(&["line 401: key (id, at) = (31,\"2024-02-05 10:00:00+00\") repeats line 31"]);
    let oid = "SELECT 'logs_jan_key'::regclass::oid";
    let oid_before = pg.one(oid);
    let rows: Vec<String> = (1..=400).map(|i| row(i, 1 + i % 3)).collect();
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    let r = load(&pg, "logs", stream(&refs), &["--ensure-partitions"]).ok();
    r.stderr_has(&["Source: 400 rows → Postgres: 400 rows ✓", "created partitions logs_2024_02, logs_2024_03"]);
    assert_ne!(pg.one(oid), oid_before, "the indexes were not built after the rows");
    assert_eq!(pg.one("SELECT count(*) FROM pg_index WHERE NOT indisvalid"), "0");
    // The schema is what pg-partition alone makes of it: every index and name as it would be.
    let twin = Pg::new();
    twin.exec(schema);
    cmd("pg-partition").args(["ensure", "logs", "--from", "2024-02", "--to", "2024-03", "--db", &twin.url]).ok();
    assert_eq!(pg.schema_dump(), twin.schema_dump());
}

#[test]
fn into_a_table_with_rows_the_staged_merge_finds_repeats_and_nulls_by_line_and_converges() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'old');
         CREATE TABLE x (tx xid, v text); INSERT INTO x VALUES ('5', 'old');",
    );
    let rows: Vec<String> = (1..=300).map(|i| format!(r#"{{"id":{i},"v":"r{i}"}}"#)).collect();
    fn refs(r: &[String]) -> Vec<&str> {
        r.iter().map(String::as_str).collect()
    }
    // A key repeated within the stream (twice): named by its lines.
    let mut bad = rows.clone();
    bad.insert(200, r#"{"id":7,"v":"again"}"#.into());
    bad.push(r#"{"id":9,"v":"again"}"#.into());
    load(&pg, "t", stream(&refs(&bad)), &[]).expect(65).stderr_has(&[
        "line 201: key (id) = 7 repeats line 7 (2 rows of the stream repeat an earlier row's key)",
        "nothing was committed",
    ]);
    assert_eq!(pg.one("SELECT count(*) || ' ' || string_agg(v, ',') FROM t"), "1 old");
    // Loaded, then loaded again: the second run adds nothing and says so.
    load(&pg, "t", stream(&refs(&rows)), &[]).ok().stderr_has(&["299 rows inserted, 1 already present"]);
    load(&pg, "t", stream(&refs(&rows)), &[]).ok().stderr_has(&["0 rows inserted, 300 already present"]);
    assert_eq!(pg.one("SELECT count(*) || ' ' || min(v) FROM t WHERE id = 1"), "1 old");
    // A --key of a type no btree index holds (xid: hash equality only) is still merged by it.
    let xs: Vec<String> = (1..=20).map(|i| format!(r#"{{"tx":"{i}","v":"r{i}"}}"#)).collect();
    let mut bad = xs.clone();
    bad.push(r#"{"tx":"3","v":"again"}"#.into());
    load(&pg, "x", stream(&refs(&bad)), &["--key", "tx"])
        .expect(65)
        .stderr_has(&["line 21: key (tx) = 3 repeats line 3 (1 rows of the stream repeat an earlier row's key)"]);
    let mut bad = xs.clone();
    bad[11] = r#"{"v":"no tx"}"#.into();
    load(&pg, "x", stream(&refs(&bad)), &["--key", "tx"])
        .expect(65)
        .stderr_has(&["line 12: the row has no value for 'tx', a column of the key (tx)"]);
    load(&pg, "x", stream(&refs(&xs)), &["--key", "tx"]).ok().stderr_has(&["19 rows inserted, 1 already present"]);
    load(&pg, "x", stream(&refs(&xs)), &["--key", "tx"]).ok().stderr_has(&["0 rows inserted, 20 already present"]);
    assert_eq!(pg.one("SELECT count(*) FROM x"), "20");
    // Keys longer than a btree entry holds (incompressible text of 9,000 bytes) are merged by
    // them too, without the index.
    pg.exec("CREATE TABLE y (k text, v text); INSERT INTO y VALUES ('short', 'old')");
    let mut seed = 7u64;
    let long: Vec<String> = (0..4)
        .map(|_| {
            (0..9000)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    char::from(b'!' + (seed >> 58) as u8)
                })
                .collect()
        })
        .collect();
    let ys: Vec<String> = long.iter().map(|k| json!({"k": k, "v": "new"}).to_string()).collect();
    let mut bad = ys.clone();
    bad.push(ys[1].clone());
    load(&pg, "y", stream(&refs(&bad)), &["--key", "k"])
        .expect(65)
        .stderr_has(&["line 5: key (k) = ", "repeats line 2"]);
    load(&pg, "y", stream(&refs(&ys)), &["--key", "k"]).ok().stderr_has(&["4 rows inserted, 0 already present"]);
    load(&pg, "y", stream(&refs(&ys)), &["--key", "k"]).ok().stderr_has(&["0 rows inserted, 4 already present"]);
    assert_eq!(pg.one("SELECT count(*) FROM y"), "5");
}
