//! `--copy-key SRC=DST`: one stream key loaded into its own column and into a second one (the
//! seeds' `firestore_id`, "same value as id during transition"), in every mode and in a plan
//! step, converging on re-runs; and count-check comparing the copy, not reporting it.

use crate::harness::*;

fn stream(rows: &[&str]) -> String {
    let mut s: String = rows.iter().map(|r| format!("{r}\n")).collect();
    s.push_str(&format!("{{\"$end\":{{\"rows\":{},\"source\":\"test\"}}}}\n", rows.len()));
    s
}

/// `id` bigint copied into text, `at` text copied into timestamptz: each by its own type.
const CUSTOMERS: &str = "CREATE TABLE customers (id bigint PRIMARY KEY, firestore_id text UNIQUE, name text NOT NULL, \
     at text, at_ts timestamptz, n integer NOT NULL DEFAULT 0)";

fn load(pg: &Pg, extra: &[&str], input: &str) -> Run {
    cmd("pg-load")
        .args(["--db", &pg.url, "customers", "--copy-key", "id=firestore_id,at=at_ts"])
        .args(extra)
        .stdin(input.to_string())
        .ok()
}

fn table(pg: &Pg) -> Vec<String> {
    pg.rows(
        "SELECT id, coalesce(firestore_id, 'NULL'), name, coalesce(at_ts AT TIME ZONE 'UTC' || '', 'NULL') \
         FROM customers ORDER BY id",
    )
}

#[test]
fn the_copy_is_made_in_every_mode_and_a_rerun_converges() {
    let pg = Pg::new();
    pg.exec(CUSTOMERS);
    let rows = [
        r#"{"id":1,"name":"Ann","at":"2024-01-05T12:00:00+02:00"}"#,
        r#"{"id":2,"name":"Bob","at":null}"#,
        r#"{"name":"Cy","id":3}"#,
    ];
    let input = stream(&rows);
    // Into the empty table (the direct COPY, indexes built after it).
    load(&pg, &[], &input).stderr_has(&["3 rows inserted, 0 already present"]);
    let want = ["1|1|Ann|2024-01-05 10:00:00", "2|2|Bob|NULL", "3|3|Cy|NULL"];
    assert_eq!(table(&pg), want);
    // The source text stays as written in its own column; the copy is a timestamptz.
    assert_eq!(pg.one("SELECT at FROM customers WHERE id = 1"), "2024-01-05T12:00:00+02:00");
    // insert re-run (staged merge): nothing changes.
    load(&pg, &[], &input).stderr_has(&["0 rows inserted, 3 already present"]);
    assert_eq!(table(&pg), want);
    // A table loaded before --copy-key existed (the hand UPDATE never ran): upsert fills the copy.
    pg.exec("UPDATE customers SET firestore_id = NULL, at_ts = NULL");
    load(&pg, &["--mode", "upsert"], &input);
    assert_eq!(table(&pg), want);
    // mirror: unchanged rows stay unchanged; a copy someone altered is put back.
    load(&pg, &["--mode", "mirror"], &input).stderr_has(&["0 inserted, 0 updated, 0 deleted, 3 unchanged"]);
    pg.exec("UPDATE customers SET firestore_id = 'stale' WHERE id = 2");
    load(&pg, &["--mode", "mirror"], &input).stderr_has(&["0 inserted, 1 updated, 0 deleted, 2 unchanged"]);
    assert_eq!(table(&pg), want);
    // replace (TRUNCATE, then the direct COPY) and append (COPY into a table with rows).
    load(&pg, &["--mode", "replace"], &stream(&rows[..2]));
    assert_eq!(table(&pg), want[..2]);
    load(&pg, &["--mode", "append"], &stream(&rows[2..]));
    assert_eq!(table(&pg), want);
    assert_eq!(pg.one("SELECT count(*) FROM _migration_runs WHERE outcome = 'success'"), "7");
}

#[test]
fn a_key_missing_from_a_row_leaves_its_copy_to_the_column_rule() {
    let pg = Pg::new();
    pg.exec(CUSTOMERS);
    // No "at": at_ts is left out as a missing key is (no default: NULL).
    load(&pg, &[], &stream(&[r#"{"id":1,"name":"Ann"}"#]));
    assert_eq!(table(&pg), ["1|1|Ann|NULL"]);
    // A key no row has (misspelt?) is said: its column got no copy at all.
    pg.exec("TRUNCATE customers");
    cmd("pg-load")
        .args(["--db", &pg.url, "customers", "--copy-key", "idd=firestore_id"])
        .stdin(stream(&[r#"{"id":1,"name":"Ann"}"#]))
        .ok()
        .stderr_has(&[
            "pg-load: warning: customers: --copy-key idd=firestore_id: no row of the stream has the key 'idd', \
             so no row got a copy",
        ]);
    assert_eq!(pg.one("SELECT coalesce(firestore_id, 'NULL') FROM customers"), "NULL");
    // A copy into a column with a default takes the default where the row lacks the key.
    pg.exec("CREATE TABLE d (id bigint PRIMARY KEY, k integer, k2 integer NOT NULL DEFAULT 7)");
    cmd("pg-load")
        .args(["--db", &pg.url, "d", "--copy-key", "k=k2"])
        .stdin(stream(&[r#"{"id":1,"k":3}"#, r#"{"id":2}"#]))
        .ok();
    assert_eq!(pg.rows("SELECT id, coalesce(k::text, 'NULL'), k2 FROM d ORDER BY id"), ["1|3|3", "2|NULL|7"]);
    // NOT NULL without a default: the error names the line, the column and the key it lacks.
    pg.exec("CREATE TABLE nn (id bigint PRIMARY KEY, k text, k2 text NOT NULL)");
    let r = cmd("pg-load")
        .args(["--db", &pg.url, "nn", "--copy-key", "k=k2"])
        .stdin(stream(&[r#"{"id":1,"k":"a"}"#, r#"{"id":2}"#]))
        .expect(65);
    r.stderr_has(&[
        "line 2, column 'k2': null (or missing) in a NOT NULL column (the row has no 'k' for --copy-key k=k2 to copy)",
        "nothing was committed",
    ]);
    assert_eq!(pg.count("nn"), 0);
}

#[test]
fn the_key_is_named_as_in_the_stream_and_renamed_alongside() {
    let pg = Pg::new();
    pg.exec(CUSTOMERS);
    // The stream's docId is renamed to id and copied into firestore_id.
    let input = stream(&[r#"{"docId":5,"name":"Ann"}"#]);
    cmd("pg-load")
        .args(["--db", &pg.url, "customers", "--rename", "docId=id", "--copy-key", "docId=firestore_id"])
        .stdin(input.clone())
        .ok();
    assert_eq!(table(&pg), ["5|5|Ann|NULL"]);
    // A key without a column of its own loads into its copy only (it is not unknown).
    pg.exec("TRUNCATE customers");
    let only_copy = stream(&[r#"{"id":6,"docId":"d6","name":"Cy"}"#]);
    cmd("pg-load")
        .args(["--db", &pg.url, "customers", "--copy-key", "docId=firestore_id"])
        .stdin(only_copy.clone())
        .ok();
    assert_eq!(table(&pg), ["6|d6|Cy|NULL"]);
    // count-check alike: the field is compared with its copy, and is no unmatched field.
    let dir = TempDir::new();
    std::fs::write(dir.path("c.ndjson"), only_copy).unwrap();
    let sides = [format!("ndjson:{}", dir.str("c.ndjson")), "pg:customers".to_string()];
    cmd("count-check").args(["--db", &pg.url, "--full", "--copy-key", "docId=firestore_id"]).args(&sides).ok();
    pg.exec("UPDATE customers SET firestore_id = 'x'");
    let r =
        cmd("count-check").args(["--db", &pg.url, "--full", "--copy-key", "docId=firestore_id"]).args(&sides).expect(1);
    assert_eq!(r.json_lines()[0]["changed_records"][0]["fields"][0]["field"], "firestore_id", "{}", r.describe());
    // The column's name instead of the stream key's is refused, naming the right spelling.
    let r = cmd("pg-load")
        .args(["--db", &pg.url, "customers", "--rename", "docId=id", "--copy-key", "id=firestore_id"])
        .stdin(input)
        .expect(64);
    r.stderr_has(&["--copy-key id=firestore_id: 'id' is the column --rename docId=id loads; name the stream key: --copy-key docId=firestore_id"]);
}

#[test]
fn option_and_data_errors_name_the_column_and_line_and_commit_nothing() {
    let pg = Pg::new();
    pg.exec(CUSTOMERS);
    pg.exec("ALTER TABLE customers ADD COLUMN twice bigint GENERATED ALWAYS AS (id * 2) STORED");
    let input = stream(&[r#"{"id":1,"name":"Ann"}"#]);
    let usage = [
        (
            vec!["--copy-key", "id=firestore_idx"],
            "--copy-key id=firestore_idx: 'firestore_idx' is no column of 'customers'",
        ),
        (
            vec!["--copy-key", "id=nope"],
            "'nope' is no column of 'customers' (the table has: id, firestore_id, name, at, at_ts, n)",
        ),
        (vec!["--copy-key", "id=twice"], "--copy-key id=twice: 'twice' is a generated column (PostgreSQL computes it)"),
        (vec!["--copy-key", "id=id"], "--copy-key id=id: 'id' already loads into column 'id'"),
        (
            vec!["--copy-key", "id"],
            "--copy-key takes SRC=DST (a stream key, then the second column it loads into), not 'id'",
        ),
        (vec!["--copy-key", "id=firestore_id,name=firestore_id"], "column 'firestore_id' already takes a copy of 'id'"),
        (
            vec!["--rename", "fid=firestore_id", "--copy-key", "id=firestore_id"],
            "column 'firestore_id' already takes the key 'fid' (--rename fid=firestore_id)",
        ),
    ];
    for (args, message) in usage {
        cmd("pg-load")
            .args(["--db", &pg.url, "customers"])
            .args(&args)
            .stdin(input.clone())
            .expect(64)
            .stderr_has(&[message]);
    }
    // The row has a value of its own for the copy's column: before or after the key.
    for row in [r#"{"id":2,"name":"Bob","firestore_id":"x"}"#, r#"{"firestore_id":"x","id":2,"name":"Bob"}"#] {
        let r = cmd("pg-load")
            .args(["--db", &pg.url, "customers", "--copy-key", "id=firestore_id"])
            .stdin(stream(&[r#"{"id":1,"name":"Ann"}"#, row]))
            .expect(65);
        r.stderr_has(&[
            "line 2, column 'firestore_id': two values, the row's own key for it and the copy of 'id' that \
             --copy-key id=firestore_id makes",
            "nothing was committed",
        ]);
    }
    // A value that does not fit the copy's type is named by the copy's column.
    let r = cmd("pg-load")
        .args(["--db", &pg.url, "customers", "--copy-key", "name=n"])
        .stdin(stream(&[r#"{"id":1,"name":"Ann"}"#]))
        .expect(65);
    r.stderr_has(&["line 1, column 'n': value \"Ann\"", "(column type integer)"]);
    assert_eq!(pg.count("customers"), 0);
}

/// A plan of two steps, each with its copy (the BellSystems shape): loaded in one run, re-run
/// in mirror mode, and checked by count-check (counts and --full), which compares the copies.
#[test]
fn plan_steps_copy_and_count_check_compares_the_copies() {
    let pg = Pg::new();
    let dir = TempDir::new();
    let db = dir.path("app.db");
    sqlite_db(
        &db,
        "CREATE TABLE staff (id TEXT PRIMARY KEY, email TEXT NOT NULL); \
         INSERT INTO staff VALUES ('u1', 'a@x'), ('u2', 'b@x'), ('u3', 'c@x');",
    );
    pg.exec(
        "CREATE TABLE staff (id text PRIMARY KEY, firestore_id text UNIQUE, email text UNIQUE NOT NULL); \
         CREATE TABLE customers (id text PRIMARY KEY, firestore_id text UNIQUE, name text NOT NULL, \
           created_at timestamptz NOT NULL)",
    );
    let cust = stream(&[
        r#"{"id":"c01","name":"Ann","created_at":"2024-01-05T10:00:00Z"}"#,
        r#"{"id":"c02","name":"Bob","created_at":"2024-01-06T10:00:00Z"}"#,
    ]);
    std::fs::write(dir.path("customers.ndjson"), &cust).unwrap();
    let plan = dir.path("plan.ndjson");
    let steps = [
        serde_json::json!({"step": "2.4", "source": format!("ndjson:{}", dir.str("customers.ndjson")),
            "target": "customers", "load": ["--copy-key", "id=firestore_id"]}),
        serde_json::json!({"step": "3.1", "source": format!("sqlite:{}:staff", db.display()),
            "target": "staff", "load": ["--copy-key=id=firestore_id"]}),
    ];
    std::fs::write(&plan, steps.iter().map(|s| format!("{s}\n")).collect::<String>()).unwrap();
    let staff = cmd("sqlite-dump").args([db.to_str().unwrap(), "staff"]).ok().stdout();
    let input = format!(
        "{{\"$table\":{{\"step\":\"2.4\",\"target\":\"customers\"}}}}\n{cust}\
         {{\"$table\":{{\"step\":\"3.1\",\"target\":\"staff\"}}}}\n{staff}"
    );
    let plan_s = plan.to_str().unwrap();
    cmd("pg-load").args(["--db", &pg.url, "--plan", plan_s]).stdin(input.clone()).ok();
    let same = "SELECT count(*) FILTER (WHERE firestore_id = id) || '/' || count(*) FROM ";
    assert_eq!(pg.one(&format!("{same} customers")), "2/2");
    assert_eq!(pg.one(&format!("{same} staff")), "3/3");
    // A mirror re-run of the whole plan converges: nothing to update.
    cmd("pg-load")
        .args(["--db", &pg.url, "--plan", plan_s, "--mode", "mirror"])
        .stdin(input)
        .ok()
        .stderr_has(&["step '2.4' (customers): 0 inserted, 0 updated, 0 deleted, 2 unchanged"]);

    let check = |extra: &[&str]| cmd("count-check").args(["--db", &pg.url, "--plan", plan_s]).args(extra.to_vec());
    check(&[]).ok();
    let r = check(&["--full"]).ok();
    for line in r.json_lines() {
        assert_eq!(line["ok"], true, "{line}");
        // The copy is compared, not a destination-only column.
        assert!(!line["dest_only_columns"].to_string().contains("firestore_id"), "{line}");
    }
    // Every column accounted for: the copy counts as the source's.
    check(&["--full", "--step", "3.1"]).ok();
    cmd("count-check")
        .args(["--db", &pg.url, "--full", "--strict-columns", "--copy-key", "id=firestore_id"])
        .arg(format!("sqlite:{}:staff", db.display()))
        .arg("pg:staff")
        .ok();
    // A copy that differs from its source fails the full check, naming the column.
    pg.exec("UPDATE staff SET firestore_id = 'other' WHERE id = 'u2'; UPDATE customers SET firestore_id = NULL WHERE id = 'c01'");
    check(&[]).ok();
    let r = check(&["--full"]).expect(1);
    let lines = r.json_lines();
    assert_eq!(lines.len(), 2, "{}", r.describe());
    for (line, (key, dest)) in lines.iter().zip([("c01", serde_json::Value::Null), ("u2", "other".into())]) {
        assert_eq!((line["ok"].as_bool(), line["changed"].as_u64()), (Some(false), Some(1)), "{line}");
        let changed = &line["changed_records"][0];
        assert_eq!(changed["key"]["id"], key, "{line}");
        assert_eq!(changed["fields"], serde_json::json!([{"field": "firestore_id", "source": key, "dest": dest}]));
    }
}
