//! pg-load against hostile streams: values that cannot be stored as written are refused
//! (one line naming table, line, column and value; exit 65; nothing committed) or counted as
//! the changes PostgreSQL makes; none is changed silently. Real PostgreSQL throughout.

use crate::harness::*;
use serde_json::json;

/// A stream of `rows` with its end record.
fn stream(rows: &[&str]) -> String {
    let mut s: String = rows.iter().map(|r| format!("{r}\n")).collect();
    s.push_str(&format!("{{\"$end\":{{\"rows\":{}}}}}\n", rows.len()));
    s
}

/// `text` with its '_' written as Latin-1's é (0xE9), which is not UTF-8.
fn latin1(text: &str) -> Vec<u8> {
    text.bytes().map(|b| if b == b'_' { 0xe9 } else { b }).collect()
}

/// A fresh table `t` with these columns.
fn table(pg: &Pg, cols: &str) {
    pg.exec(&format!("DROP TABLE IF EXISTS t; CREATE TABLE t ({cols})"));
}

fn load(pg: &Pg, input: impl Into<Vec<u8>>, extra: &[&str]) -> Cmd {
    cmd("pg-load").args(["--db", &pg.url, "t"]).args(extra).stdin(input)
}

/// Loading `value` into column `a` of a fresh `t (a COLTYPE)` fails with exit 65, one line
/// naming the table, line 1, column 'a' and every fragment; the table stays empty and the run
/// log says failed.
fn refused(pg: &Pg, coltype: &str, value: &str, extra: &[&str], fragments: &[&str]) {
    table(pg, &format!("a {coltype}"));
    let r = load(pg, stream(&[&format!("{{\"a\":{value}}}")]), extra).expect(65);
    r.stderr_has(&["pg-load: t: line 1, column 'a': ", "nothing was committed"]).stderr_has(fragments);
    assert_eq!(r.stderr().lines().count(), 1, "one line\n{}", r.describe());
    assert_eq!(pg.count("t"), 0, "{}", r.describe());
    assert_eq!(pg.one("SELECT outcome FROM _migration_runs ORDER BY id DESC LIMIT 1"), "failed");
}

/// Loading `value` into `a` of a fresh `t (a COLTYPE)` succeeds; `a::text` as stored.
fn stored(pg: &Pg, coltype: &str, value: &str, extra: &[&str]) -> String {
    table(pg, &format!("a {coltype}"));
    load(pg, stream(&[&format!("{{\"a\":{value}}}")]), extra).ok();
    pg.one("SELECT a::text FROM t")
}

#[test]
fn numbers_past_what_numeric_holds_are_refused_not_cut() {
    let pg = Pg::new();
    // numeric's binary form holds 16383 fraction digits: 1e-70000 was sent with its scale cut to
    // 70000 mod 65536, and PostgreSQL stored 0.
    refused(&pg, "numeric", "1e-70000", &[], &["value 1e-70000", "70000 digits after the decimal point", "16383"]);
    refused(&pg, "numeric", "\"1e-16384\"", &[], &["16384 digits after the decimal point"]);
    refused(&pg, "numeric(5,2)", "1e-20000", &[], &["20000 digits after the decimal point"]);
    assert_eq!(stored(&pg, "numeric", "1e-16383", &[]).len(), 16385, "the smallest that fits");
    // Integers: out of range is out of range, never wrapped or through a double.
    refused(&pg, "bigint", "9223372036854775808", &[], &["9223372036854775808", "out of range for bigint"]);
    refused(&pg, "integer", "2147483648", &[], &["out of range for integer"]);
    refused(&pg, "smallint", "\"-32769\"", &[], &["out of range for smallint"]);
    refused(&pg, "integer", "1.5", &[], &["has a fractional part"]);
    refused(&pg, "integer", "1e400", &[], &["value 1e400:", "out of range for integer"]);
    refused(&pg, "double precision", "1E400", &[], &["value 1E400:", "out of range for double precision"]);
    refused(&pg, "real", "1e39", &[], &["out of range for real"]);
    assert_eq!(stored(&pg, "integer", "1.0", &[]), "1", "an integral decimal is the integer");
    assert_eq!(stored(&pg, "bigint", "-9223372036854775808", &[]), "-9223372036854775808");
    assert_eq!(stored(&pg, "double precision", "-0", &[]), "-0");
    assert_eq!(stored(&pg, "numeric", "-0.0", &[]), "0.0");
    assert_eq!(stored(&pg, "real", "\"NaN\"", &[]), "NaN");
    assert_eq!(stored(&pg, "double precision", "{\"$float\":\"-Infinity\"}", &[]), "-Infinity");
    // Leading zeros are not JSON.
    table(&pg, "a int");
    load(&pg, stream(&["{\"a\":007}"]), &[]).expect(65).stderr_has(&["line 1: malformed JSON", "invalid number"]);
}

#[test]
fn uuids_and_hex_are_read_as_postgresql_reads_them() {
    let pg = Pg::new();
    // A sign is no hex digit: "+0eebc99-…" was read as 00eebc99-….
    refused(&pg, "uuid", "\"+0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"", &[], &["cannot read this text as a UUID"]);
    for odd in ["{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "--a0eebc999c0b4ef8bb6d6bb9bd380a11", "a0e-ebc99-9c0b-4ef8"] {
        refused(&pg, "uuid", &json!(odd).to_string(), &[], &["UUID"]);
    }
    for ok in [
        "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
    ] {
        assert_eq!(stored(&pg, "uuid", &json!(ok).to_string(), &[]), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "{ok}");
    }
    refused(&pg, "bytea", r#""\\x+0ff""#, &[], &["bad \\x hex text"]);
    refused(&pg, "bytea", r#""\\x0""#, &[], &["bad \\x hex text"]);
    assert_eq!(stored(&pg, "bytea", r#""\\x00fF""#, &[]), "\\x00ff");
}

#[test]
fn base64_with_bad_padding_or_stray_bits_is_refused() {
    let pg = Pg::new();
    let bytes = |enc: &str| json!({"$base64": true, "encoded": enc}).to_string();
    refused(&pg, "bytea", &bytes("AP8=="), &[], &["bad padding: 2 '=' after 3 characters"]);
    refused(&pg, "bytea", &bytes("AP="), &[], &["bad padding"]);
    // "AP9=" is not what any encoder writes for 00 ff: its last bit would be dropped.
    refused(&pg, "bytea", &bytes("AP9="), &[], &["nonzero bits after the last byte"]);
    refused(&pg, "bytea", &bytes("A"), &[], &["truncated base64"]);
    refused(&pg, "bytea", &bytes("AP-_"), &[], &["invalid base64 character '-'"]);
    assert_eq!(stored(&pg, "bytea", &bytes("AP8="), &[]), "\\x00ff");
    assert_eq!(stored(&pg, "bytea", &bytes("AP8"), &[]), "\\x00ff", "padding may be left out");
    assert_eq!(stored(&pg, "bytea", &bytes(""), &[]), "\\x");
}

#[test]
fn text_longer_than_varchar_n_is_refused_even_when_postgresql_would_cut_spaces() {
    let pg = Pg::new();
    // PostgreSQL cuts trailing spaces past n without an error: "abc   " was stored as "abc".
    refused(&pg, "varchar(3)", "\"abc   \"", &[], &["value \"abc   \"", "is 6 characters", "trailing spaces"]);
    refused(&pg, "varchar(3)", "\"abcd\"", &[], &["is 4 characters, more than the 3", "character varying(3)"]);
    refused(&pg, "varchar(3)", "12345", &[], &["value 12345", "is 5 characters"]);
    refused(&pg, "char(3)", "\"abcd\"", &[], &["is 4 characters", "character(3)"]);
    refused(&pg, "varchar(2)[]", "[\"ab\",\"ab  \"]", &[], &["element 1: is 4 characters"]);
    pg.exec("CREATE DOMAIN short AS varchar(3)");
    refused(&pg, "short", "\"abc \"", &[], &["is 4 characters", "(column type short)"]);
    // Characters, not bytes; char(n) pads, and its trailing spaces are padding.
    assert_eq!(stored(&pg, "varchar(3)", "\"ééé\"", &[]), "ééé");
    assert_eq!(stored(&pg, "char(3)", "\"ab\"", &[]), "ab");
    assert_eq!(pg.one("SELECT octet_length(a) FROM t"), "3", "padded to 3");
    assert_eq!(stored(&pg, "char(3)", "\"abc  \"", &[]), "abc");
}

#[test]
fn times_rounded_to_a_columns_precision_are_counted_or_refused() {
    let pg = Pg::new();
    table(&pg, "id int PRIMARY KEY, a timestamptz(0), b time(2), c timestamp(3)[], d numeric(4,1)[], e real[]");
    let rows = [
        r#"{"id":1,"a":"2024-01-05T10:00:00.5Z","b":"10:00:00.555","c":["2024-01-05T10:00:00.1234"],"d":[1.25],"e":[3.14159265]}"#,
        r#"{"id":2,"a":"2024-01-05T10:00:00Z","b":"10:00:00.55","c":["2024-01-05T10:00:00.123"],"d":[1.2],"e":[0.5]}"#,
    ];
    let r = load(&pg, stream(&rows), &[]).ok();
    r.stderr_has(&[
        "column 'a': 1 rounded-to-precision",
        "column 'b': 1 rounded-to-precision",
        "column 'c': 1 rounded-to-precision",
        "column 'd': 1 rounded-to-scale",
        "column 'e': 1 rounded-to-real",
    ]);
    assert_eq!(pg.one("SELECT a::text FROM t WHERE id = 1"), "2024-01-05 10:00:01+00");
    let changes = pg.one("SELECT changes->'a'->>'rounded-to-precision' FROM _migration_runs ORDER BY id DESC LIMIT 1");
    assert_eq!(changes, "1");
    refused(&pg, "timestamptz(0)", "\"2024-01-05T10:00:00.5Z\"", &["--strict"], &["round it to 0 fraction digits"]);
    refused(&pg, "timestamptz(3)", "1704448800.0005", &["--strict", "--epoch-unit", "s"], &["3 fraction digits"]);
    refused(&pg, "timestamptz[]", "[\"2024-01-05T10:00:00.1234567Z\"]", &["--strict"], &["microseconds"]);
    assert_eq!(stored(&pg, "timestamptz(0)", "\"infinity\"", &["--strict"]), "infinity");
}

#[test]
fn epochs_in_the_wrong_unit_are_refused_with_the_likely_one() {
    let pg = Pg::new();
    // Milliseconds read as seconds were the year 55,980.
    refused(
        &pg,
        "timestamptz",
        "1704412800000",
        &["--epoch-unit", "s"],
        &["after the year 9999", "wrong --epoch-unit?", "in ms it is 2024-01-05T00:00:00Z"],
    );
    refused(&pg, "date", "1704412800000", &["--epoch-unit", "s"], &["after the year 9999"]);
    refused(&pg, "timestamptz", "1704448800", &[], &["needs its epoch unit: pass --epoch-unit"]);
    assert_eq!(stored(&pg, "timestamptz", "253402300799", &["--epoch-unit", "s"]), "9999-12-31 23:59:59+00");
    assert_eq!(stored(&pg, "timestamptz", "1704448800123", &["--epoch-unit", "ms"]), "2024-01-05 10:00:00.123+00");
}

#[test]
fn json_keeps_its_text_as_written_and_jsonb_counts_what_it_collapses() {
    let pg = Pg::new();
    // json keeps key order, spacing and repeated keys (they were sorted and collapsed).
    assert_eq!(stored(&pg, "json", r#"{"b":1,"a":2,"a":3}"#, &[]), r#"{"b":1,"a":2,"a":3}"#);
    assert_eq!(stored(&pg, "json", r#""{\"b\":  [1E5]}""#, &[]), r#"{"b":  [1E5]}"#);
    table(&pg, "a jsonb");
    load(&pg, stream(&[r#"{"a":{"k":1,"k":2}}"#]), &[]).ok().stderr_has(&["column 'a': 1 duplicate-keys-collapsed"]);
    refused(&pg, "json", r#"{"x":"\u0000"}"#, &[], &["\\u0000", "--strip-nul"]);
    refused(&pg, "jsonb", r#""not json""#, &[], &["text is not valid JSON"]);
    // Deeper than the reader goes: an error naming the column, never a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    refused(&pg, "jsonb", &deep, &[], &["nests deeper than 128 levels"]);
    refused(&pg, "int[]", &deep, &[], &["nests deeper than 128 levels"]);
    // Bytes and non-finite floats have no JSON form: stored in their stream form, nested too.
    let bytes = r#"{"$base64":true,"encoded":"AP8="}"#;
    assert_eq!(stored(&pg, "json", bytes, &[]), bytes);
    assert_eq!(stored(&pg, "jsonb", bytes, &[]), r#"{"$base64": true, "encoded": "AP8="}"#);
    assert_eq!(stored(&pg, "json", r#"{"$float":"-Infinity"}"#, &[]), r#"{"$float":"-Infinity"}"#);
    assert_eq!(stored(&pg, "jsonb", r#"{"x":[{"$float":"NaN"}]}"#, &[]), r#"{"x": [{"$float": "NaN"}]}"#);
}

#[test]
fn hstore_takes_objects_and_counts_the_keys_it_collapses() {
    let pg = Pg::new();
    // Where Supabase puts extensions: off the search path, the type is ext.hstore.
    pg.exec("CREATE SCHEMA ext; CREATE EXTENSION hstore SCHEMA ext");
    let h = "ext.hstore";
    // An object: each value as text, null as NULL; quotes and backslashes kept.
    assert_eq!(
        stored(&pg, h, r#"{"a":"1","b":null,"c":2.50,"d":true,"q\"x":"back\\slash"}"#, &[]),
        r#""a"=>"1", "b"=>NULL, "c"=>"2.50", "d"=>"true", "q\"x"=>"back\\slash""#
    );
    assert_eq!(stored(&pg, h, "{}", &[]), "");
    // hstore[]: each element as hstore is.
    assert_eq!(
        stored(&pg, "ext.hstore[]", r#"[{"a":"1"},"b=>2",null]"#, &[]),
        r#"{"\"a\"=>\"1\"","\"b\"=>\"2\"",NULL}"#
    );
    // hstore text goes in as written.
    assert_eq!(stored(&pg, h, r#""a=>1, \"b c\"=>NULL""#, &[]), r#""a"=>"1", "b c"=>NULL"#);
    refused(&pg, h, r#"{"a":{"n":1}}"#, &[], &["key 'a' holds an object", "use a jsonb column"]);
    refused(&pg, h, r#"{"a":[1]}"#, &[], &["key 'a' holds an array"]);
    refused(&pg, h, r#"{"a":"x\u0000"}"#, &[], &["NUL", "--strip-nul"]);
    // A repeated key keeps one value (the object's last; of hstore text's, the server keeps the
    // first for so short a list, though it does not promise which): counted, refused under --strict.
    for (value, kept) in [(r#"{"k":"1","k":"2"}"#, r#""k"=>"2""#), (r#""k=>1, \"k\" => 2""#, r#""k"=>"1""#)] {
        table(&pg, &format!("a {h}"));
        load(&pg, stream(&[&format!("{{\"a\":{value}}}")]), &[])
            .ok()
            .stderr_has(&["column 'a': 1 duplicate-keys-collapsed"]);
        assert_eq!(pg.one("SELECT a::text FROM t"), kept);
        refused(&pg, h, value, &["--strict"], &["repeats a key", "hstore text one it does not say"]);
    }
    // The value refused is shown as written, its repeated key with it.
    refused(&pg, h, r#"{"k":"1","k":"2"}"#, &["--strict"], &[r#"value {"k":"1","k":"2"}: the object repeats a key"#]);
    assert!(!load(&pg, stream(&[r#"{"a":"k=>1, j=>2"}"#]), &[]).ok().stderr().contains("collapsed"));
}

#[test]
fn strings_json_cannot_hold_or_postgresql_cannot_store_are_refused() {
    let pg = Pg::new();
    refused(&pg, "text", r#""x\u0000y""#, &[], &["NUL", "--strip-nul"]);
    refused(&pg, "text", r#""x\ud800y""#, &[], &["value \"x\\ud800y\"", "surrogate"]);
    refused(&pg, "text", r#""\udc00""#, &[], &["surrogate"]);
    assert_eq!(stored(&pg, "text", r#""\ud83d\ude00""#, &[]), "😀");
    assert_eq!(stored(&pg, "text", r#"{"x":[1,null]}"#, &[]), r#"{"x":[1,null]}"#);
}

#[test]
fn hostile_streams_are_refused_naming_the_line_and_nothing_commits() {
    let pg = Pg::new();
    let cols = "id int PRIMARY KEY, a text NOT NULL, n int";
    let good = r#"{"id":1,"a":"x","n":1}"#;
    let two = r#"{"id":2,"a":"y","n":2}"#;
    let cases: Vec<(Vec<u8>, &[&str], &[&str])> = vec![
        // A byte order mark is only allowed before the first line.
        (
            format!("{good}\n\u{feff}{two}\n{{\"$end\":{{\"rows\":2}}}}\n").into(),
            &["line 2: starts with a UTF-8 byte order mark"],
            &[],
        ),
        (
            format!("{good}\n{{\"$end\":{{\"rows\":1}}}}").into(),
            &["line 2: the stream ends in the middle of a line"],
            &[],
        ),
        (
            format!("{good}\n{{\"id\":2,\"a\":\"y").into(),
            &["line 2: the stream ends in the middle of a line (truncated after 1 rows)"],
            &[],
        ),
        (format!("{good}\n{two}\n").into(), &["ended after 2 rows without its end record"], &[]),
        (
            format!("{good}\n{{\"$end\":{{\"rows\":3}}}}\n").into(),
            &["line 2: the end record says 3 rows but 1 were read"],
            &[],
        ),
        (format!("{good}\n{{\"$end\":{{\"rows\":1}}}}\n{two}\n").into(), &["line 3: data after the end record"], &[]),
        (stream(&[r#"{"id":1,"a":"x","\u0061":"y"}"#]).into(), &["line 1: key \"a\" appears twice in the row"], &[]),
        (
            stream(&[r#"{"id":1,"a":"x","zz":1,"zz":2}"#]).into(),
            &["line 1: key \"zz\" appears twice"],
            &["--ignore-unknown"],
        ),
        (
            stream(&[good, r#"{"id":2,"a":"y","n":{"v":1}}"#]).into(),
            &["line 2, column 'n': value {\"v\":1}: cannot read an object as an integer"],
            &[],
        ),
        (
            stream(&[r#"{"ID":1,"a":"x"}"#]).into(),
            &["line 1: keys that match no column of 't': ID", "--rename ID=id"],
            &[],
        ),
        (stream(&[r#"{"id":1}"#]).into(), &["line 1, column 'a': null (or missing) in a NOT NULL column"], &[]),
        (stream(&[good, two, r#"{"id":1,"a":"z"}"#]).into(), &["line 3: key (id) = 1 repeats line 1"], &[]),
        (
            latin1(&stream(&[good, r#"{"id":2,"a":"caf_"}"#])),
            &["line 2: invalid UTF-8 at byte 17 of the line (bytes e9)", "in the value of column 'a'"],
            &[],
        ),
        // Not lines at all: refused after 64 KiB, not after reading all of it.
        (vec![0u8; 1 << 20], &["line 1: not a JSON object (its first bytes are 00 00", "NDJSON"], &[]),
    ];
    for (input, fragments, extra) in cases {
        table(&pg, cols);
        let r = load(&pg, input, extra).expect(65);
        r.stderr_has(&["pg-load: t: ", "nothing was committed"]).stderr_has(fragments);
        assert_eq!(r.stderr().lines().count(), 1, "one line\n{}", r.describe());
        assert_eq!(pg.count("t"), 0, "{}", r.describe());
    }
    // What the stream spec allows: a byte order mark before line 1, CRLF, blank and
    // whitespace-only lines, and (with --no-end-record) a last line without its newline.
    table(&pg, cols);
    let ok = format!("\u{feff}{good}\r\n\r\n \t \n{two}\r\n{{\"$end\":{{\"rows\":2}}}}\r\n\n");
    load(&pg, ok, &[]).ok().stderr_has(&["Source: 2 rows → Postgres: 2 rows ✓"]);
    assert_eq!(pg.rows("SELECT a FROM t ORDER BY id"), ["x", "y"]);
    table(&pg, cols);
    load(&pg, format!("{good}\n{two}"), &["--no-end-record"]).ok();
    assert_eq!(pg.count("t"), 2);
}

#[test]
fn a_plan_whose_second_step_fails_after_the_first_loaded_commits_nothing_and_the_run_log_says_so() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, amount numeric(5,2))");
    let t = TempDir::new();
    let plan = t.path("plan.ndjson");
    let step = |name: &str| json!({"step": name, "source": "ndjson:/dev/null", "target": name, "load": []}).to_string();
    std::fs::write(&plan, format!("{}\n{}\n", step("a"), step("b"))).unwrap();
    let marker = |s: &str| json!({"$table": {"step": s, "target": s}}).to_string();
    let seg_a =
        format!("{}\n{{\"id\":1,\"v\":\"x\"}}\n{{\"id\":2,\"v\":\"y\"}}\n{{\"$end\":{{\"rows\":2}}}}\n", marker("a"));
    let run = |seg_b: &str| {
        cmd("pg-load")
            .args(["--db", &pg.url, "--plan", &plan.display().to_string()])
            .stdin(format!("{seg_a}{}\n{seg_b}", marker("b")))
    };
    // Lines count across the whole stream: step b's rows are lines 6 on.
    let cases: [(&str, &[&str]); 4] = [
        (
            "{\"id\":1,\"amount\":1}\n{\"id\":2,\"amount\":1e-20000}\n{\"$end\":{\"rows\":2}}\n",
            &["step 'b' (b): line 7, column 'amount'", "20000 digits after the decimal point"],
        ),
        (
            "{\"id\":1,\"amount\":1}\n{\"id\":1,\"amount\":2}\n{\"$end\":{\"rows\":2}}\n",
            &["step 'b' (b): line 7: key (id) = 1 repeats line 6"],
        ),
        (
            "{\"id\":1,\"amount\":1000}\n{\"$end\":{\"rows\":1}}\n",
            &["step 'b' (b): line 6, column 'amount'", "numeric field overflow"],
        ),
        ("{\"id\":1,\"amount\":1}\n", &["step 'b' (b)", "without its end record"]),
    ];
    for (seg_b, fragments) in cases {
        let r = run(seg_b).expect(65);
        r.stderr_has(fragments).stderr_has(&["nothing was committed"]);
        assert_eq!(pg.count("a") + pg.count("b"), 0, "{}", r.describe());
        let log = pg.rows(
            "SELECT step, outcome, error FROM _migration_runs WHERE batch = (SELECT max(batch) FROM _migration_runs) ORDER BY id",
        );
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[0], "a|failed|not committed: step 'b' failed", "{log:?}");
        assert!(log[1].starts_with("b|failed|") && log[1].contains(fragments[fragments.len() - 1]), "{log:?}");
    }
}

#[test]
fn dates_take_infinity_as_timestamps_do() {
    let pg = Pg::new();
    table(&pg, "id int PRIMARY KEY, d date, ds date[]");
    let rows = [r#"{"id":1,"d":"infinity","ds":["-infinity","2024-01-05"]}"#, r#"{"id":2,"d":"-Infinity"}"#];
    load(&pg, stream(&rows), &[]).ok();
    assert_eq!(pg.rows("SELECT d, ds FROM t ORDER BY id"), ["infinity|{-infinity,2024-01-05}", "-infinity|NULL"]);
    refused(&pg, "date", "\"2024-01-05 24:00:00\"", &[], &["is it this day or the next?"]);
    refused(&pg, "date", "\"2023-02-29\"", &[], &["cannot read this text as a date"]);
}

#[test]
fn timestamps_are_read_as_written_or_refused_saying_why() {
    let pg = Pg::new();
    let col = "timestamptz";
    for (value, why) in [
        ("2024-12-31T23:59:60Z", "leap second"),
        ("0000-01-01T00:00:00Z", "no year 0000"),
        ("10000-01-01T00:00:00Z", "more than four digits"),
        ("2023-02-29T10:00:00Z", "2023-02 has 28 days, not 29"),
        ("2024-01-05T10:00:00 Europe/Paris", "the zone name 'Europe/Paris' is not read"),
        ("2024-01-05T10:00:00+16:00", "beyond ±15:59"),
        ("2024-01-05T24:00:01Z", "no time 24:00:01"),
    ] {
        refused(&pg, col, &json!(value).to_string(), &[], &[&format!("value {}", json!(value)), why]);
    }
    refused(&pg, "time", "\"23:59:60\"", &[], &["leap second"]);
    refused(&pg, "date", "\"2023-02-29\"", &[], &["not a leap year"]);
    // What is read, and as what (the session's zone is UTC; no offset means --assume-tz, UTC by default).
    table(&pg, "id int PRIMARY KEY, a timestamptz, b timestamp");
    let rows = [
        r#"{"id":1,"a":"2024-01-05T10:00:00Z","b":"2024-01-05T10:00:00+05:30"}"#,
        r#"{"id":2,"a":"2024-01-05T10:00:00+05:30","b":"2024-01-05 10:00:00"}"#,
        r#"{"id":3,"a":"2024-01-05T10:00:00-00:00","b":"2024-01-05T24:00:00"}"#,
        r#"{"id":4,"a":"2024-01-05 10:00:00","b":"-0001-03-01T00:00:00"}"#,
        r#"{"id":5,"a":"2024-01-05T10:00:00.1234567Z","b":"2024-01-05T10:00:00,5"}"#,
    ];
    load(&pg, stream(&rows), &[]).ok().stderr_has(&["column 'a': 1 rounded-to-microseconds"]);
    assert_eq!(
        pg.rows("SELECT a, b FROM t ORDER BY id"),
        [
            "2024-01-05 10:00:00+00|2024-01-05 04:30:00",
            "2024-01-05 04:30:00+00|2024-01-05 10:00:00",
            "2024-01-05 10:00:00+00|2024-01-06 00:00:00",
            "2024-01-05 10:00:00+00|0002-03-01 00:00:00 BC",
            "2024-01-05 10:00:00.123457+00|2024-01-05 10:00:00.5",
        ]
    );
    table(&pg, "id int PRIMARY KEY, a timestamptz");
    load(&pg, stream(&[r#"{"id":1,"a":"2024-07-01 12:00:00"}"#]), &["--assume-tz", "Europe/Athens"]).ok();
    assert_eq!(pg.one("SELECT a::text FROM t"), "2024-07-01 09:00:00+00");
}

#[test]
fn numeric_p_s_overflow_is_named_with_its_value_exactly_where_postgresql_refuses() {
    let pg = Pg::new();
    let cases: [(&str, &[&str]); 3] = [
        ("numeric(5,2)", &["999.994", "999.995", "-999.995", "1e3", "0.005", "99999e-2", "-0.001"]),
        ("numeric(2,5)", &["0.00099", "0.000995", "0.001", "1e-20"]),
        ("numeric(4,-2)", &["999949", "999950", "-12345", "49"]),
    ];
    let mut c = pg.client();
    for (coltype, values) in cases {
        // PostgreSQL is the oracle: does its own input take the value?
        let (fit, over): (Vec<&str>, Vec<&str>) =
            values.iter().partition(|v| c.query_one(&format!("SELECT '{v}'::{coltype}::text"), &[]).is_ok());
        assert!(!fit.is_empty() && !over.is_empty(), "{coltype}: {fit:?} {over:?}");
        table(&pg, &format!("id int PRIMARY KEY, a {coltype}"));
        let rows: Vec<String> = fit.iter().enumerate().map(|(i, v)| format!("{{\"id\":{i},\"a\":{v}}}")).collect();
        load(&pg, stream(&rows.iter().map(String::as_str).collect::<Vec<_>>()), &[]).ok();
        for v in over {
            refused(&pg, coltype, v, &[], &[&format!("value {v}: does not fit {coltype}")]);
        }
    }
    refused(&pg, "numeric(5,2)", "\"Infinity\"", &[], &["cannot hold an infinite value"]);
    assert_eq!(stored(&pg, "numeric(5,2)", "\"NaN\"", &[]), "NaN");
    refused(&pg, "numeric(3,1)[]", "[1.5, 99.95]", &[], &["element 1: does not fit numeric(3,1)"]);
}

#[test]
fn a_row_or_object_with_100000_keys_takes_linear_time() {
    let pg = Pg::new();
    let keys: String = (0..100_000).map(|i| format!("\"k{i}\":1,")).collect();
    table(&pg, "id int PRIMARY KEY, doc jsonb");
    // Unknown keys are checked for repeats with a set (pairwise, this took minutes).
    let started = std::time::Instant::now();
    let row = format!("{{{keys}\"id\":1,\"doc\":{{{keys}\"k0\":2}}}}");
    let r = load(&pg, stream(&[&row]), &["--ignore-unknown"]).ok();
    r.stderr_has(&["column 'doc': 1 duplicate-keys-collapsed"]);
    assert_eq!(pg.one("SELECT doc->>'k0' FROM t"), "2");
    table(&pg, "id int PRIMARY KEY, doc jsonb");
    load(&pg, stream(&[&format!("{{{keys}\"id\":1}}")]), &[])
        .expect(65)
        .stderr_has(&["keys that match no column of 't': k0, k1, k2, k3, k4, k5, k6, k7, k8, k9 and 99990 more"]);
    let repeat = format!("{{{keys}\"id\":1,\"k99999\":1}}");
    load(&pg, stream(&[&repeat]), &["--ignore-unknown"]).expect(65).stderr_has(&["key \"k99999\" appears twice"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
}

#[test]
fn numbers_and_json_into_text_are_stored_as_the_stream_wrote_them() {
    let pg = Pg::new();
    // serde_json wrote 1e5 as 1e+5 (and 1E-5 as 1e-5), sorted an object's keys and kept the
    // last of a repeated key's values.
    for v in ["1e5", "1E-5", "1.50", "-0", "123456789012345678901234567890", "1e400"] {
        assert_eq!(stored(&pg, "text", v, &[]), v);
    }
    assert_eq!(stored(&pg, "text", r#"{"b":1, "a":2,"a":3}"#, &[]), r#"{"b":1, "a":2,"a":3}"#);
    assert_eq!(
        stored(&pg, "text[]", r#"[1E5, "x\"y", {"b":1,"a":2}, null, true]"#, &[]),
        r#"{1E5,"x\"y","{\"b\":1,\"a\":2}",NULL,true}"#
    );
    // varchar(n) counts the text as written: 1e5 fits 3 (1e+5 did not), 1.500 does not fit 4.
    assert_eq!(stored(&pg, "varchar(3)", "1e5", &[]), "1e5");
    refused(&pg, "varchar(4)", "1.500", &[], &["value 1.500", "is 5 characters"]);
    // --strip-nul removes the NUL escapes only (an escaped backslash before u0000 is none).
    assert_eq!(
        stored(&pg, "text", r#"{"b":"x\u0000y", "a":"\\u0000"}"#, &["--strip-nul"]),
        r#"{"b":"xy", "a":"\\u0000"}"#
    );
    refused(&pg, "text", r#"{"b":"x\u0000y"}"#, &[], &["\\u0000", "--strip-nul"]);
    // count-check compares the source with what was stored: the same.
    let t = TempDir::new();
    let file = t.path("s.ndjson");
    std::fs::write(&file, stream(&[r#"{"id":1,"a":1E5,"b":{"b":1,"a":[2.50]}}"#])).unwrap();
    table(&pg, "id int PRIMARY KEY, a text, b text");
    cmd("pg-load").args(["--db", &pg.url, "t"]).stdin_file(&file).ok();
    assert_eq!(pg.rows("SELECT a, b FROM t"), [r#"1E5|{"b":1,"a":[2.50]}"#]);
    cmd("count-check")
        .args(["--db", &pg.url, "--full", &format!("ndjson:{}", file.display()), "pg:t"])
        .ok()
        .stderr_has(&["0 changed ✓"]);
}

#[test]
fn a_name_longer_than_63_bytes_is_refused_not_cut() {
    let pg = Pg::new();
    // Bytes, not characters: 32 × 'é' is 64 bytes.
    let long = json!("é".repeat(32)).to_string();
    refused(&pg, "name", &long, &[], &["is 64 bytes (32 characters) in UTF-8, more than the 63", "(column type name)"]);
    refused(&pg, "name[]", &format!("[{long}]"), &[], &["element 0: is 64 bytes"]);
    // COPY's text format (an interval column makes it text): name_in cut it to 63 bytes.
    table(&pg, "a name, b interval");
    let row = format!(r#"{{"a":"{}","b":"1 s"}}"#, "a".repeat(64));
    load(&pg, stream(&[&row]), &[]).expect(65).stderr_has(&[
        "line 1, column 'a'",
        "is 64 bytes",
        "nothing was committed",
    ]);
    assert_eq!(pg.count("t"), 0);
    let fits = format!("{}a", "é".repeat(31));
    assert_eq!(stored(&pg, "name", &json!(fits).to_string(), &[]), fits);
    // "char" kept the first byte of "abc" (of "é", half a character).
    refused(&pg, "\"char\"", "\"abc\"", &[], &["is 3 bytes (3 characters) in UTF-8, more than the 1"]);
    refused(&pg, "\"char\"", "\"é\"", &[], &["is 2 bytes (1 characters)"]);
    assert_eq!(stored(&pg, "\"char\"", "\"a\"", &[]), "a");
}

#[test]
fn a_value_a_domains_check_refuses_is_named_with_its_line_column_and_value() {
    let pg = Pg::new();
    pg.exec("CREATE DOMAIN pos AS numeric CHECK (VALUE > 0); CREATE DOMAIN code AS text CHECK (VALUE ~ '^[a-z]+$')");
    // Binary COPY, and text COPY (an interval column); into an empty table (COPY straight in),
    // a table with rows (staged, then merged) and --mode mirror.
    for cols in ["id int PRIMARY KEY, a pos, c code", "id int PRIMARY KEY, a pos, c code, i interval"] {
        let bad_a = [r#"{"id":5,"a":1,"c":"ok"}"#, r#"{"id":6,"a":-3.50,"c":"ok"}"#];
        let bad_c = [r#"{"id":5,"a":1,"c":"ok"}"#, r#"{"id":6,"a":2,"c":"X y"}"#];
        for (present, extra) in [(false, &[][..]), (true, &[][..]), (true, &["--mode", "mirror"][..])] {
            for (rows, want) in [
                (
                    bad_a,
                    r#"line 2, column 'a': value -3.50: value for domain pos violates check constraint "pos_check" (column type pos)"#,
                ),
                (
                    bad_c,
                    r#"line 2, column 'c': value "X y": value for domain code violates check constraint "code_check" (column type code)"#,
                ),
            ] {
                table(&pg, cols);
                if present {
                    pg.exec("INSERT INTO t (id, a, c) VALUES (1, 1, 'a')");
                }
                let r = load(&pg, stream(&rows), extra).expect(65);
                r.stderr_has(&[want, "nothing was committed"]);
                assert_eq!(pg.count("t"), present as i64, "{}", r.describe());
            }
        }
    }
}

#[test]
fn intervals_postgresql_rounds_are_counted_and_those_it_cuts_are_refused() {
    let pg = Pg::new();
    // PostgreSQL stored 0.0000001 seconds as 00:00:00, 0.1 years as 1 mon (1.2 months),
    // 1.234 s in an interval(2) as 1.23 s, all without an error.
    table(&pg, "id int PRIMARY KEY, a interval, b interval(2), c interval[]");
    let rows = [
        r#"{"id":1,"a":"0.0000001 seconds","b":"1.234 s","c":["1.5 microseconds"]}"#,
        r#"{"id":2,"a":"0.1 years","b":"1.23 s","c":["1 day"]}"#,
        r#"{"id":3,"a":"1 day 02:03:04.5","b":"P1DT2H","c":["PT0.0000001S", "1:02:03.0000005"]}"#,
        r#"{"id":4,"a":"@ 3 mins ago","b":"0.5 years","c":[]}"#,
    ];
    load(&pg, stream(&rows), &[]).ok().stderr_has(&[
        "column 'a': 1 rounded-to-microseconds, column 'a': 1 rounded-to-months",
        "column 'b': 1 rounded-to-precision",
        "column 'c': 2 rounded-to-microseconds",
    ]);
    assert_eq!(
        pg.rows("SELECT a, b FROM t ORDER BY id"),
        ["00:00:00|00:00:01.23", "1 mon|00:00:01.23", "1 day 02:03:04.5|1 day 02:00:00", "-00:03:00|6 mons"]
    );
    refused(&pg, "interval", "\"1.5 microseconds\"", &["--strict"], &["would round it to microseconds"]);
    refused(&pg, "interval", "\"1.01 years\"", &["--strict"], &["no whole number of months"]);
    refused(&pg, "interval second(0)", "\"1.5 seconds\"", &["--strict"], &["round it to 0 fraction digits"]);
    // Fields the column does not keep are dropped whole: refused.
    for (coltype, value, keeps) in [
        ("interval year", "3 years 5 months", "keeps whole years only"),
        ("interval year to month", "1 year 2 days", "keeps years and months only"),
        ("interval day", "36 hours", "keeps no time of day"),
        ("interval hour", "1 day 02:30", "keeps whole hours only"),
        ("interval hour to minute", "1 day 3:04:05", "keeps whole minutes only"),
        ("interval month[]", "[\"1 mon\", \"1 mon 2 days\"]", "element 1: the column keeps years and months only"),
    ] {
        let v = if value.starts_with('[') { value.to_string() } else { json!(value).to_string() };
        refused(
            &pg,
            coltype,
            &v,
            &[],
            &[keeps, "would drop the rest of this value", &format!("(column type {coltype})")],
        );
    }
    // What they keep whole, read by the column's fields as PostgreSQL reads it.
    assert_eq!(stored(&pg, "interval year", "\"36 months\"", &["--strict"]), "3 years");
    assert_eq!(stored(&pg, "interval hour", "5", &["--strict"]), "05:00:00");
    assert_eq!(stored(&pg, "interval hour to minute", "\"1 day 3:04\"", &["--strict"]), "1 day 03:04:00");
    assert_eq!(stored(&pg, "interval minute to second", "\"1:30\"", &["--strict"]), "00:01:30");
    assert_eq!(stored(&pg, "interval day", "\"1 day\"", &["--strict"]), "1 day");
}

#[test]
fn json_numbers_money_and_timetz_are_kept_or_their_rounding_counted() {
    let pg = Pg::new();
    // json keeps a number and an array's elements as written (1E5 was 1e+5, keys sorted).
    assert_eq!(stored(&pg, "json", "1E5", &[]), "1E5");
    assert_eq!(
        stored(&pg, "json[]", r#"[{"b":1,"a":2,"a":3}, 1E5, "[1,  2]", [{"b":1,"a":2}], null]"#, &[]),
        r#"{"{\"b\":1,\"a\":2,\"a\":3}",1E5,"[1,  2]","[{\"b\":1,\"a\":2}]",NULL}"#
    );
    // money rounds to lc_monetary's fraction digits (2 here): 12.345 was stored as $12.35.
    table(&pg, "id int PRIMARY KEY, m money, z timetz, z0 timetz(0)");
    let rows = [
        r#"{"id":1,"m":12.345,"z":"10:00:00.1234567+02","z0":"10:00:00.5+02"}"#,
        r#"{"id":2,"m":"$1,234.567","z":"10:00:00.123456+02","z0":"10:00:00.0+02"}"#,
        r#"{"id":3,"m":"12.34","z":"10:00:00+05:30","z0":"10:00:00"}"#,
    ];
    load(&pg, stream(&rows), &[]).ok().stderr_has(&[
        "column 'm': 2 rounded-to-scale",
        "column 'z': 1 rounded-to-microseconds",
        "column 'z0': 1 rounded-to-precision",
    ]);
    assert_eq!(
        pg.rows("SELECT m, z, z0 FROM t ORDER BY id"),
        [
            "$12.35|10:00:00.123457+02|10:00:01+02",
            "$1,234.57|10:00:00.123456+02|10:00:00+02",
            "$12.34|10:00:00+05:30|10:00:00+00"
        ]
    );
    refused(
        &pg,
        "money",
        "12.345",
        &["--strict"],
        &["value 12.345", "round it to 2 fraction digits", "(column type money)"],
    );
    refused(&pg, "timetz", "\"10:00:00.1234567+02\"", &["--strict"], &["round it to microseconds"]);
}

#[test]
fn a_value_the_server_refuses_is_named_with_its_value() {
    let pg = Pg::new();
    // Types pg-load sends as text: the server's message named no value ("bit string length 3
    // does not match type bit(5)").
    for present in [false, true] {
        table(&pg, "id int PRIMARY KEY, b bit(5), n inet");
        if present {
            pg.exec("INSERT INTO t VALUES (1, B'10101', '10.0.0.1')");
        }
        let rows = [r#"{"id":2,"b":"10101","n":"10.0.0.2"}"#, r#"{"id":3,"b":"101","n":"10.0.0.3"}"#];
        load(&pg, stream(&rows), &[]).expect(65).stderr_has(&[
            "line 2, column 'b': value \"101\": bit string length 3 does not match type bit(5) (column type bit(5))",
            "nothing was committed",
        ]);
        assert_eq!(pg.count("t"), present as i64);
    }
    refused(
        &pg,
        "varbit(3)",
        "\"10101\"",
        &[],
        &["value \"10101\": bit string too long", "(column type bit varying(3))"],
    );
    // A cidr with host bits set is refused (an inet keeps them); an enum's labels are case-sensitive.
    refused(&pg, "cidr", "\"192.168.1.5/24\"", &[], &["value \"192.168.1.5/24\"", "bits set to right of mask"]);
    assert_eq!(stored(&pg, "inet", "\"192.168.1.5/24\"", &["--strict"]), "192.168.1.5/24");
    pg.exec("CREATE TYPE status AS ENUM ('active')");
    refused(&pg, "status", "\"Active\"", &[], &["invalid input value for enum status: \"Active\""]);
    // tsquery's input calls bad text a syntax error (42601): still the row's value, exit 65.
    refused(
        &pg,
        "tsquery",
        "\"a & & b\"",
        &[],
        &["value \"a & & b\": syntax error in tsquery", "(column type tsquery)"],
    );
    // real holds about 7 digits: 16777217 (2^24 + 1) is stored as 16777216, counted.
    table(&pg, "a real");
    load(&pg, stream(&[r#"{"a":16777217}"#]), &[]).ok().stderr_has(&["column 'a': 1 rounded-to-real"]);
    refused(&pg, "real", "\"16777217\"", &["--strict"], &["real would round it"]);
}

#[test]
fn a_date_from_a_timestamp_a_fraction_of_a_microsecond_past_midnight_is_counted() {
    let pg = Pg::new();
    table(&pg, "a date");
    load(&pg, stream(&[r#"{"a":"2024-01-05T00:00:00.0000001Z"}"#]), &[])
        .ok()
        .stderr_has(&["column 'a': 1 rounded-to-microseconds"]);
    assert_eq!(pg.one("SELECT a::text FROM t"), "2024-01-05");
    refused(&pg, "date", "\"2024-01-05T00:00:00.0000001Z\"", &["--strict"], &["round it to microseconds"]);
    assert_eq!(stored(&pg, "date", "\"2024-01-05T00:00:00.000000Z\"", &["--strict"]), "2024-01-05");
}
