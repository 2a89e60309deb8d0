//! Progress lines on a real terminal (a pseudo-terminal from util-linux `script`), their
//! absence off a terminal and under --quiet, and `pg-load --report` against a real PostgreSQL.

use crate::harness::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// Runs `shell` (bash) with stdin, stdout and stderr on a pseudo-terminal; returns everything
/// the terminal received, as bytes (`script` turns `\n` into `\r\n`).
fn on_terminal(shell: &str, env: &[(&str, &str)]) -> (i32, String) {
    let mut c = Command::new("script");
    c.args(["-qfec", shell, "/dev/null"]);
    for k in pgferry::pg::libpq_env_vars().chain(["DATABASE_URL"]) {
        c.env_remove(k);
    }
    // Draw from the first row: how fast the machine is must not decide whether a line appears.
    c.env("HOME", "/nonexistent/pgferry-test-home").env("TERM", "xterm").env("PGFERRY_PROGRESS_DELAY", "0");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap_or_else(|e| panic!("run script (util-linux): {e}"));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sh(path: &Path) -> String {
    cli_word(&path.display().to_string())
}

fn cli_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A stream of `n` rows `{"id":i,"v":"…"}` with its end record.
fn rows_stream(n: u64) -> String {
    let mut s = String::with_capacity(n as usize * 40);
    for i in 1..=n {
        s.push_str(&format!("{{\"id\":{i},\"v\":\"value number {i}\"}}\n"));
    }
    s.push_str(&format!("{{\"$end\":{{\"rows\":{n},\"source\":\"test\"}}}}\n"));
    s
}

/// Enough rows that a debug-build pg-load or sqlite-dump runs for well over a second.
const MANY: u64 = 300_000;

#[test]
fn pg_load_on_a_terminal_shows_rows_and_rate_then_clears_the_line_and_quiet_silences_it() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE t (id bigint PRIMARY KEY, v text)");
    let dir = TempDir::new();
    let input = dir.path("in.ndjson");
    std::fs::write(&input, rows_stream(MANY)).unwrap();
    let pg_load = sh(&bin("pg-load"));
    let env = [("DATABASE_URL", pg.url.as_str())];

    let (code, term) = on_terminal(&format!("{pg_load} t < {}", sh(&input)), &env);
    assert_eq!(code, 0, "{term}");
    // At least one progress line, drawn in place: `\r`, the line, clear to end of line.
    assert!(term.contains("\rpg-load: t: ") && term.contains(" rows/s\x1b[K"), "no progress line:\n{term:?}");
    let first = term.find("\rpg-load: t: ").unwrap();
    let drawn = &term[first + 1..];
    let n: String = drawn["pg-load: t: ".len()..].chars().take_while(|c| c.is_ascii_digit() || *c == ',').collect();
    assert!(!n.is_empty() && n != "0", "no row count in {drawn:?}");
    // Cleared before the count line, which starts on a clean line.
    assert!(
        term.contains("\r\x1b[Kpg-load: t: Source: 300000 rows → Postgres: 300000 rows ✓"),
        "the progress line was not cleared before the count line:\n{term:?}"
    );
    assert!(term.contains("300000 rows inserted"), "{term:?}");

    // --quiet: nothing at all on the terminal (the load still happens).
    pg.exec("TRUNCATE t");
    let (code, term) = on_terminal(&format!("{pg_load} --quiet t < {}", sh(&input)), &env);
    assert_eq!(code, 0, "{term}");
    assert_eq!(term, "", "--quiet wrote to the terminal");
    assert_eq!(pg.one("SELECT count(*) FROM t"), "300000");
    // -q keeps errors: a missing table is still said.
    let (code, term) = on_terminal(&format!("{pg_load} -q nosuch < {}", sh(&input)), &env);
    assert_eq!(code, 66, "{term}");
    assert!(term.contains("pg-load: ") && term.contains("nosuch"), "{term:?}");
}

#[test]
fn off_a_terminal_no_progress_is_drawn_and_quiet_leaves_only_errors() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE t (id bigint PRIMARY KEY, v text)");
    let r = cmd("pg-load").args(["--db", &pg.url, "t"]).stdin(rows_stream(MANY)).ok();
    let err = r.stderr();
    assert!(!err.contains('\r') && !err.contains('\x1b'), "progress off a terminal:\n{err:?}");
    assert_eq!(err.lines().count(), 2, "the count line and the summary only:\n{err}");
    r.stderr_has(&["t: Source: 300000 rows → Postgres: 300000 rows ✓", "300000 rows inserted, 0 already present"]);

    let r = cmd("pg-load").args(["--db", &pg.url, "-q", "t"]).stdin(rows_stream(3)).ok();
    assert_eq!(r.stderr(), "");
    let r = cmd("pg-load").args(["--db", &pg.url, "-q", "t"]).stdin("{\"id\":\"x\"}\n").expect(65);
    r.stderr_has(&["pg-load: ", "line 1"]);

    // Every tool takes --quiet: notes go, data stays.
    let dir = TempDir::new();
    let db = dir.path("app.db");
    sqlite_db(&db, "CREATE TABLE a (id INTEGER PRIMARY KEY); INSERT INTO a VALUES (1), (2);");
    let d = cmd("sqlite-dump").args([db.display().to_string().as_str(), "a"]).ok();
    d.stderr_has(&["sqlite-dump: a: 2 rows"]);
    let q = cmd("sqlite-dump").args(["--quiet", db.display().to_string().as_str(), "a"]).ok();
    assert_eq!(q.stderr(), "");
    assert_eq!(q.stdout(), d.stdout());
    // count-check: the verdict is its output and stays; the table goes.
    let side = format!("sqlite:{}:a", db.display());
    pg.exec("CREATE TABLE a (id bigint PRIMARY KEY); INSERT INTO a VALUES (1), (2);");
    let c = cmd("count-check").args(["--db", &pg.url, "-q", &side, "pg:a"]).ok();
    assert_eq!(c.stderr(), "1 check(s): 1 held, 0 found differences, 0 could not run\n");
    assert_eq!(c.json_lines().len(), 1);
    let c = cmd("count-check").args(["--db", &pg.url, &side, "pg:a"]).ok();
    c.stderr_has(&["RESULT", "1 check(s): 1 held"]);
    for tool in ["fs-export", "pg-partition", "backup-verify"] {
        let h = cmd(tool).arg("--help").ok();
        assert!(h.stdout().contains("  -q, --quiet "), "{tool} --help does not document --quiet");
    }
}

#[test]
fn sqlite_dump_into_a_file_shows_a_total_and_eta_but_into_a_pipe_leaves_the_terminal_to_the_consumer() {
    let dir = TempDir::new();
    let db = dir.path("big.db");
    sqlite_db(
        &db,
        &format!(
            "CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {MANY})
               INSERT INTO big SELECT x, 'value number ' || x FROM c;"
        ),
    );
    let dump = sh(&bin("sqlite-dump"));
    let out = dir.path("big.ndjson");
    let (code, term) = on_terminal(&format!("{dump} {} big > {}", sh(&db), sh(&out)), &[]);
    assert_eq!(code, 0, "{term}");
    assert!(term.contains(" / 300,000 rows ("), "no total in the progress line:\n{term:?}");
    assert!(term.contains(", ETA "), "no ETA:\n{term:?}");
    assert!(term.contains("\r\x1b[Ksqlite-dump: big: 300000 rows"), "not cleared before the summary:\n{term:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count() as u64, MANY + 1);

    // PGFERRY_PROGRESS_DELAY holds the first draw back; nonsense in it is said and ignored.
    let (code, term) =
        on_terminal(&format!("{dump} {} big > {}", sh(&db), sh(&out)), &[("PGFERRY_PROGRESS_DELAY", "3600")]);
    assert_eq!(code, 0, "{term}");
    assert!(!term.contains('\x1b'), "drawn before the delay:\n{term:?}");
    let (code, term) =
        on_terminal(&format!("{dump} {} big > {}", sh(&db), sh(&out)), &[("PGFERRY_PROGRESS_DELAY", "soon")]);
    assert_eq!(code, 0, "{term}");
    assert_eq!(
        term.matches("sqlite-dump: warning: PGFERRY_PROGRESS_DELAY=\"soon\" is not a number of seconds").count(),
        1,
        "{term:?}"
    );

    // Into a pipe: only the summary.
    let (code, term) = on_terminal(&format!("{dump} {} big | wc -l", sh(&db)), &[]);
    assert_eq!(code, 0, "{term}");
    assert!(!term.contains('\x1b'), "a producer into a pipe drew progress:\n{term:?}");
    assert!(term.contains("sqlite-dump: big: 300000 rows") && term.contains("300001"), "{term:?}");
}

/// The report's lines, parsed.
fn report(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The fields a test can predict (seconds vary; run ids are checked apart).
fn fixed(v: &Value) -> Value {
    let mut v = v.clone();
    let m = v.as_object_mut().unwrap();
    assert!(m.remove("seconds").unwrap().as_f64().unwrap() >= 0.0);
    m.remove("run");
    m.remove("error");
    v
}

#[test]
fn report_says_per_table_what_was_loaded_and_how_it_ended() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE t (id bigint PRIMARY KEY, v text)");
    let dir = TempDir::new();
    let file = dir.path("report.ndjson");
    let rep = file.display().to_string();
    let load = |input: &str, extra: &[&str]| {
        cmd("pg-load").args(["--db", &pg.url, "--report", &rep]).args(extra).arg("t").stdin(input.to_string())
    };
    let three = rows_stream(3);
    let bytes = three.len() as u64;
    load(&three, &[]).ok();
    let r = report(&file);
    assert_eq!(r.len(), 1);
    assert_eq!(
        fixed(&r[0]),
        json!({"table": "t", "mode": "insert", "source": "test", "source_rows": 3, "inserted": 3, "present": 0,
               "updated": 0, "deleted": 0, "unchanged": 0, "rejected": 0, "dest_rows": 3, "bytes": bytes,
               "outcome": "success", "committed": true})
    );
    assert_eq!(r[0]["run"].to_string(), pg.one("SELECT max(id) FROM _migration_runs"));
    assert!(r[0].get("error").is_none());

    // The same load again: rows already present, left unchanged; the file is replaced.
    load(&three, &[]).ok();
    let r = report(&file);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0]["inserted"].clone(), r[0]["present"].clone(), r[0]["unchanged"].clone()),
        (json!(0), json!(3), json!(3))
    );

    // Mirror: one row changed, one gone, one new.
    let changed = "{\"id\":1,\"v\":\"value number 1\"}\n{\"id\":2,\"v\":\"changed\"}\n{\"id\":4,\"v\":\"new\"}\n\
                   {\"$end\":{\"rows\":3,\"source\":\"test\"}}\n";
    load(changed, &["--mode", "mirror"]).ok();
    let r = report(&file);
    assert_eq!(
        fixed(&r[0]),
        json!({"table": "t", "mode": "mirror", "source": "test", "source_rows": 3, "inserted": 1, "present": 2,
               "updated": 1, "deleted": 1, "unchanged": 1, "rejected": 0, "dest_rows": 3, "bytes": changed.len(),
               "outcome": "success", "committed": true})
    );

    // A dry run: what it did, and that nothing stayed.
    load(&rows_stream(5), &["--dry-run"]).ok();
    let r = report(&file);
    assert_eq!((r[0]["outcome"].clone(), r[0]["committed"].clone()), (json!("dry-run"), json!(false)));
    assert_eq!((r[0]["source_rows"].clone(), r[0]["inserted"].clone()), (json!(5), json!(2)));
    assert_eq!(pg.one("SELECT count(*) FROM t"), "3");

    // A bad value: failed, not committed, the error named; the counts reached so far.
    let bad = "{\"id\":10,\"v\":\"a\"}\n{\"id\":\"eleven\",\"v\":\"b\"}\n{\"$end\":{\"rows\":2}}\n";
    let e = load(bad, &[]).expect(65);
    let r = report(&file);
    assert_eq!((r[0]["outcome"].clone(), r[0]["committed"].clone()), (json!("failed"), json!(false)));
    assert_eq!(r[0]["inserted"], Value::Null);
    assert!(r[0]["error"].as_str().unwrap().contains("line 2"), "{}", r[0]);
    assert!(e.stderr().contains("line 2"));

    // No server: the report still says the run failed, with the error.
    let e = cmd("pg-load")
        .args(["--db", "postgresql://127.0.0.1:1/x?connect_timeout=2", "--report", &rep, "t"])
        .stdin(three.clone())
        .expect(69);
    let r = report(&file);
    assert_eq!(
        (r[0]["outcome"].clone(), r[0]["committed"].clone(), r[0]["run"].clone()),
        (json!("failed"), json!(false), Value::Null)
    );
    assert!(e.stderr().contains(r[0]["error"].as_str().unwrap()), "{}\n{}", r[0], e.describe());

    // A run that never gets to its end (kill -9) leaves no report, not the earlier one.
    assert!(file.exists());
    let mut child = std::process::Command::new(bin("pg-load"))
        .args(["--db", &pg.url, "--report", &rep, "t"])
        .env("HOME", "/nonexistent/pgferry-test-home")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        !file.exists()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(gone, "the earlier report is still there while the run is under way");
    assert!(!file.exists());

    // A report that cannot be written is found before anything is loaded.
    let runs = pg.one("SELECT count(*) FROM _migration_runs");
    let e =
        cmd("pg-load").args(["--db", &pg.url, "--report", "/nonexistent/dir/r.ndjson", "t"]).stdin(three).expect(66);
    e.stderr_has(&["--report '/nonexistent/dir/r.ndjson'"]);
    assert_eq!(pg.one("SELECT count(*) FROM _migration_runs"), runs);
    // --report belongs to the whole run, not to a plan step's load array.
}

#[test]
fn plan_report_has_a_line_per_step_with_its_own_bytes_and_a_failed_plan_says_so_for_every_step() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE a (id bigint PRIMARY KEY, v text); CREATE TABLE b (id bigint PRIMARY KEY, v text);");
    let dir = TempDir::new();
    let plan = dir.path("plan.ndjson");
    std::fs::write(
        &plan,
        "{\"step\":\"one\",\"source\":\"sqlite:x.db:a\",\"target\":\"a\"}\n\
         {\"step\":\"two\",\"source\":\"sqlite:x.db:b\",\"target\":\"b\",\"load\":[\"--mode\",\"upsert\"]}\n",
    )
    .unwrap();
    let file = dir.path("plan-report.ndjson");
    let rep = file.display().to_string();
    let seg = |step: &str, target: &str, body: String| {
        format!("{}\n{body}", json!({"$table": {"step": step, "target": target}}))
    };
    let (one, two) = (seg("one", "a", rows_stream(4)), seg("two", "b", rows_stream(2)));
    let run = |input: String, code: i32| {
        cmd("pg-load")
            .args(["--db", &pg.url, "--plan", &plan.display().to_string(), "--report", &rep])
            .stdin(input)
            .expect(code)
    };
    run(one.clone() + &two, 0);
    let r = report(&file);
    assert_eq!(r.len(), 2);
    assert_eq!(
        fixed(&r[0]),
        json!({"step": "one", "table": "a", "mode": "insert", "source": "sqlite:x.db:a", "source_rows": 4,
               "inserted": 4, "present": 0, "updated": 0, "deleted": 0, "unchanged": 0, "rejected": 0,
               "dest_rows": 4, "bytes": one.len(), "outcome": "success", "committed": true})
    );
    assert_eq!((r[1]["step"].clone(), r[1]["bytes"].clone()), (json!("two"), json!(two.len())));
    assert_ne!(r[0]["run"], r[1]["run"]);

    // Again, with step two's rows present and as they were: upsert leaves them alone.
    run(one.clone() + &two, 0);
    let r = report(&file);
    assert_eq!(
        (r[1]["mode"].clone(), r[1]["present"].clone(), r[1]["updated"].clone(), r[1]["unchanged"].clone()),
        (json!("upsert"), json!(2), json!(0), json!(2))
    );
    // One of them changed in the table: upsert sets it back, and counts it.
    pg.exec("UPDATE b SET v = 'changed' WHERE id = 1");
    run(one.clone() + &two, 0);
    let r = report(&file);
    assert_eq!((r[1]["updated"].clone(), r[1]["unchanged"].clone()), (json!(1), json!(1)));

    // Step two's stream is cut short: both steps failed, neither committed.
    pg.exec("TRUNCATE a, b");
    let cut = seg("two", "b", rows_stream(2).lines().take(2).map(|l| format!("{l}\n")).collect());
    run(one + &cut, 65);
    let r = report(&file);
    for (line, step) in r.iter().zip(["one", "two"]) {
        assert_eq!(line["step"], json!(step));
        assert_eq!((line["outcome"].clone(), line["committed"].clone()), (json!("failed"), json!(false)), "{line}");
    }
    assert!(r[0]["error"].as_str().unwrap().contains("not committed: step 'two' failed"), "{}", r[0]);
    assert!(r[1]["error"].as_str().unwrap().contains("without its end record"), "{}", r[1]);
    assert_eq!(pg.one("SELECT count(*) FROM a"), "0");
}
