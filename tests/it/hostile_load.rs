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
    refused(&pg, "integer", "1e400", &[], &["value 1e+400", "out of range"]);
    refused(&pg, "double precision", "1e400", &[], &["out of range for double precision"]);
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
