//! ANALYZE after the commit (bins/pg-load/analyze.rs): a partitioned table's leaves and the
//! plan's ordinary tables split over two connections, the parent's inherited statistics made
//! once, every relation analyzed exactly once, also when another session holds one of them.

use crate::harness::*;
use serde_json::json;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// `ev` partitioned in four leaves, `ev_big` prefilled past the size worth a second connection
/// (600,000 rows, ~2,650 pages); `o1`, `o2` and `small` ordinary tables. Autovacuum is off on
/// all of them, so every ANALYZE counted is pg-load's.
const SCHEMA: &str = "
    CREATE TABLE ev (k int PRIMARY KEY, v int) PARTITION BY RANGE (k);
    CREATE TABLE ev_big PARTITION OF ev FOR VALUES FROM (0) TO (1000000);
    CREATE TABLE ev_s1 PARTITION OF ev FOR VALUES FROM (1000000) TO (2000000);
    CREATE TABLE ev_s2 PARTITION OF ev FOR VALUES FROM (2000000) TO (3000000);
    CREATE TABLE ev_s3 PARTITION OF ev FOR VALUES FROM (3000000) TO (4000000);
    CREATE TABLE o1 (id int PRIMARY KEY, name text);
    CREATE TABLE o2 (id int PRIMARY KEY, name text);
    CREATE TABLE small (id int PRIMARY KEY, name text);
    ALTER TABLE ev_big SET (autovacuum_enabled = false);
    ALTER TABLE ev_s1 SET (autovacuum_enabled = false);
    ALTER TABLE ev_s2 SET (autovacuum_enabled = false);
    ALTER TABLE ev_s3 SET (autovacuum_enabled = false);
    ALTER TABLE o1 SET (autovacuum_enabled = false);
    ALTER TABLE o2 SET (autovacuum_enabled = false);
    ALTER TABLE small SET (autovacuum_enabled = false);
    INSERT INTO ev_big SELECT g, g FROM generate_series(1, 600000) g;";

/// Every relation the plan's ANALYZE processes.
const RELATIONS: [&str; 7] = ["ev", "ev_big", "ev_s1", "ev_s2", "ev_s3", "o1", "o2"];

const SQLITE: &str = "
    CREATE TABLE ev (k INTEGER PRIMARY KEY, v INTEGER);
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400)
      INSERT INTO ev SELECT (x % 4) * 1000000 + 700000 + x, x FROM c;
    CREATE TABLE o1 (id INTEGER PRIMARY KEY, name TEXT);
    CREATE TABLE o2 (id INTEGER PRIMARY KEY, name TEXT);
    CREATE TABLE small (id INTEGER PRIMARY KEY, name TEXT);
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50)
      INSERT INTO o1 SELECT x, 'one ' || x FROM c;
    INSERT INTO o2 SELECT id, 'two ' || id FROM o1;
    INSERT INTO small VALUES (1, 'a'), (2, 'b'), (3, 'c');";

struct Fixture {
    pg: Pg,
    _dir: TempDir,
    db: String,
    plan: String,
}

fn fixture(load: &[&str]) -> Fixture {
    let pg = Pg::new();
    pg.exec(SCHEMA);
    let dir = TempDir::new();
    let db = dir.str("app.db");
    sqlite_db(Path::new(&db), SQLITE);
    let plan = dir.str("plan.ndjson");
    let text: String = ["ev", "o1", "o2"]
        .iter()
        .map(|t| json!({"step": t, "source": format!("sqlite:{db}:{t}"), "target": t, "load": load}).to_string() + "\n")
        .collect();
    std::fs::write(&plan, text).unwrap();
    Fixture { pg, _dir: dir, db, plan }
}

impl Fixture {
    /// The plan's stream: each step's table record, then sqlite-dump's stream.
    fn stream(&self) -> String {
        ["ev", "o1", "o2"]
            .iter()
            .map(|t| {
                format!("{}\n", json!({"$table": {"step": t, "target": t}}))
                    + &cmd("sqlite-dump").args([self.db.as_str(), t]).ok().stdout()
            })
            .collect()
    }

    fn load(&self) -> Cmd {
        cmd("pg-load").args(["--db", &self.pg.url, "--plan", &self.plan])
    }

    /// `relation|analyze_count|pg_statistic rows (stainherit as the relation's kind wants)`.
    fn stats(&self) -> Vec<String> {
        RELATIONS
            .iter()
            .map(|r| {
                self.pg.one(&format!(
                    "SELECT '{r}|' || s.analyze_count || '|' || (SELECT count(*) > 0 FROM pg_statistic \
                       WHERE starelid = s.relid AND stainherit = (c.relkind = 'p')) \
                     FROM pg_stat_all_tables s JOIN pg_class c ON c.oid = s.relid WHERE s.relid = '{r}'::regclass"
                ))
            })
            .collect()
    }
}

fn each(count: u32, stats: bool) -> Vec<String> {
    RELATIONS.iter().map(|r| format!("{r}|{count}|{stats}")).collect()
}

/// Sessions opened to the test's database by `run`, waiting for every other backend to end
/// first (a backend's counts reach pg_stat_database as it exits).
fn sessions_of(pg: &Pg, run: impl FnOnce()) -> i64 {
    let count = || {
        let mut c = pg.client();
        let started = Instant::now();
        loop {
            let others: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .unwrap()
                .get(0);
            if others == 0 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "backends of the test database did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        c.query_one("SELECT sessions FROM pg_stat_database WHERE datname = current_database()", &[])
            .unwrap()
            .get::<_, i64>(0)
    };
    let before = count();
    run();
    // The second count's own session is one more.
    count() - before - 1
}

#[test]
fn a_plan_load_analyzes_every_table_leaf_and_parent_once_over_two_connections() {
    let f = fixture(&["--no-analyze"]);
    // --no-analyze: nothing analyzed.
    f.load().stdin(f.stream()).ok();
    assert_eq!(f.stats(), each(0, false));

    // A single small table: analyzed on the load's own connection only.
    let small = sessions_of(&f.pg, || {
        let rows = cmd("sqlite-dump").args([f.db.as_str(), "small"]).ok().stdout();
        cmd("pg-load").args(["--db", &f.pg.url, "small"]).stdin(rows).ok();
    });
    assert_eq!(f.pg.one("SELECT analyze_count FROM pg_stat_all_tables WHERE relname = 'small'"), "1");
    assert_eq!(f.pg.one("SELECT count(*) > 0 FROM pg_statistic WHERE starelid = 'small'::regclass"), "t");

    // The plan: each relation analyzed once (B's leaf not again by A's `ANALYZE ev`), the parent's
    // inherited statistics made, on one connection more than the small table's load.
    let plan = std::fs::read_to_string(&f.plan).unwrap().replace(r#"["--no-analyze"]"#, "[]");
    std::fs::write(&f.plan, plan).unwrap();
    let plan = sessions_of(&f.pg, || {
        f.load().stdin(f.stream()).ok();
    });
    assert_eq!(f.stats(), each(1, true));
    assert_eq!(plan, small + 1, "ANALYZE's second connection");
    assert_eq!(
        f.pg.one("SELECT count(*) FROM pg_stat_all_tables WHERE relname ~ '^(ev|o1|o2)' AND last_analyze IS NULL"),
        "0"
    );

    // A re-run that changes no row: the statistics stand, nothing is analyzed again.
    let out = f.load().stdin(f.stream()).ok();
    assert_eq!(f.stats(), each(1, true));
    for t in ["ev", "o1", "o2"] {
        out.stderr_has(&[&format!("{t}: no row changed, its statistics stand: not analyzed again")]);
    }
    // One row of o1 gone: its re-run inserts it, and o1 alone is analyzed.
    f.pg.exec("DELETE FROM o1 WHERE id = 7");
    f.load().stdin(f.stream()).ok();
    let mut want = each(1, true);
    want[5] = "o1|2|true".into();
    assert_eq!(f.stats(), want);
}

/// Runs the plan with `relation` held by a third session from the load's COMMIT until pg-load
/// waits for it: the third session's SHARE UPDATE EXCLUSIVE request queues behind the load's
/// own lock on it, so it is granted at the COMMIT, before ANALYZE starts.
fn load_with_held(f: &Fixture, relation: &str) {
    let out = run_with_held(f, f.load(), &f.stream(), relation, Then::Release);
    assert!(out.status.success(), "pg-load failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// What the test does once pg-load waits for the held relation.
enum Then<'a> {
    /// Let it go.
    Release,
    /// Send pg-load this signal ("TERM"); it must end within 10 s, the relation still held.
    Signal(&'a str),
    /// Keep holding it; pg-load must end within this many seconds by itself.
    Hold(u64),
}

/// `load` fed `stream` with `relation` held as `load_with_held` says, and `then` once pg-load
/// waits for it.
fn run_with_held(f: &Fixture, load: Cmd, stream: &str, relation: &str, then: Then) -> std::process::Output {
    let (head, rest) = stream.split_at(stream.find('\n').unwrap() + 1);
    let mut child = load.spawn();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(head.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut watch = f.pg.client();
    let until = |watch: &mut postgres::Client, sql: &str| {
        let started = Instant::now();
        while !watch.query_one(sql, &[]).unwrap().get::<_, bool>(0) {
            assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for: {sql}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let lock = |mode: &str, granted: bool, not_pid: i32| {
        format!(
            "SELECT count(*) > 0 FROM pg_locks WHERE relation = '{relation}'::regclass AND mode = '{mode}' \
               AND granted = {granted} AND pid <> {not_pid}"
        )
    };
    until(&mut watch, &lock("ShareRowExclusiveLock", true, 0));
    let mut third = f.pg.client();
    let pid: i32 = third.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let (release, released) = std::sync::mpsc::channel::<()>();
    let sql = format!("BEGIN; LOCK TABLE {relation} IN SHARE UPDATE EXCLUSIVE MODE");
    let holder = std::thread::spawn(move || {
        third.batch_execute(&sql).unwrap();
        let _ = released.recv();
        third.batch_execute("COMMIT").unwrap();
    });
    until(&mut watch, &format!("SELECT count(*) > 0 FROM pg_locks WHERE pid = {pid} AND NOT granted"));
    stdin.write_all(rest.as_bytes()).unwrap();
    drop(stdin);
    // Held until pg-load waits for it (or is done without it).
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if watch.query_one(&lock("ShareUpdateExclusiveLock", false, pid), &[]).unwrap().get::<_, bool>(0) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "pg-load neither ended nor waited for {relation}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let bound = match then {
        Then::Release => None,
        Then::Signal(sig) => {
            std::process::Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap();
            Some(10)
        }
        Then::Hold(secs) => Some(secs),
    };
    if let Some(secs) = bound {
        let since = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(since.elapsed() < Duration::from_secs(secs), "pg-load did not end within {secs} s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    release.send(()).unwrap();
    holder.join().unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_relation_another_session_holds_is_still_analyzed_once() {
    let f = fixture(&[]);
    // o1 is a job either connection may take: whichever does waits for it, plainly.
    load_with_held(&f, "o1");
    assert_eq!(f.stats(), each(1, true));
    // The rows loaded go, so that the re-run changes every table (an unchanged one is not
    // analyzed again).
    let reset = "DELETE FROM ev WHERE k % 1000000 > 700000; DELETE FROM o1; DELETE FROM o2";
    f.pg.exec(reset);
    // A leaf: the second connection cannot lock it (NOWAIT), so the load's connection
    // analyzes everything plainly, waiting for it.
    load_with_held(&f, "ev_s1");
    assert_eq!(f.stats(), each(2, true));
    f.pg.exec(reset);
    load_with_held(&f, "ev_big");
    assert_eq!(f.stats(), each(3, true));
}

/// Loaded tables (of `ev`, `o1`, `o2`) without statistics: an ordinary table without
/// pg_statistic rows, a partitioned one without inherited ones or with a leaf that holds rows
/// and has none (pg_partition_tree lists no ordinary table, hence the UNION).
fn without_statistics(pg: &Pg) -> Vec<String> {
    pg.rows(
        "SELECT t FROM unnest(array['ev', 'o1', 'o2']) t WHERE EXISTS ( \
           SELECT 1 FROM (SELECT relid FROM pg_partition_tree(t::regclass) UNION SELECT t::regclass) p \
           JOIN pg_class c ON c.oid = p.relid \
           WHERE (c.relkind = 'p' OR pg_relation_size(c.oid) > 0) \
             AND NOT EXISTS (SELECT 1 FROM pg_statistic s WHERE s.starelid = c.oid AND s.stainherit = (c.relkind = 'p'))) \
         ORDER BY 1",
    )
}

/// The warning a signal during ANALYZE gives: the tables it names (sorted), or a panic.
fn named_without_statistics(err: &str) -> Vec<String> {
    let prefix =
        "warning: SIGTERM stopped the ANALYZE after the commit (the data is committed): no fresh statistics for ";
    let line = err.lines().find(|l| l.contains(prefix)).unwrap_or_else(|| panic!("no warning: {err}"));
    let names = line.split(prefix).nth(1).unwrap().split("; run ANALYZE ").next().unwrap();
    let mut v: Vec<String> = names.split(", ").map(String::from).collect();
    v.sort();
    v
}

#[test]
fn a_signal_during_analyze_stops_it_says_the_load_committed_and_names_what_lacks_statistics() {
    let f = fixture(&[]);
    let report = f._dir.str("report.ndjson");
    // o1 held: whichever connection takes it waits, and SIGTERM comes then.
    let out = run_with_held(&f, f.load().args(["--report", &report]), &f.stream(), "o1", Then::Signal("TERM"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    // The load committed: said before ANALYZE began, in the run log and the report; then
    // pg-load ends by the signal, as a shell expects of an interrupted program.
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{err}");
    let committed = err.find("committed in one transaction").unwrap_or_else(|| panic!("{err}"));
    let warning = err.find("warning: SIGTERM stopped the ANALYZE").unwrap_or_else(|| panic!("{err}"));
    assert!(committed < warning, "{err}");
    assert!(!err.contains("nothing was committed"), "{err}");
    assert_eq!(f.pg.count("o1"), 50);
    assert_eq!(f.pg.rows("SELECT DISTINCT outcome FROM _migration_runs"), ["success"]);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&report).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["committed"] == json!(true)), "{lines:?}");
    // What it names is exactly what lacks statistics: o1 (never analyzed) and whatever else
    // the signal left.
    let named = named_without_statistics(&err);
    assert!(named.contains(&"o1".to_string()), "{err}");
    assert_eq!(named, without_statistics(&f.pg), "{err}");
    // Neither connection's ANALYZE goes on once pg-load is gone.
    let analyzing = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND query LIKE 'ANALYZE%' AND state = 'active'";
    assert_eq!(f.pg.one(analyzing), "0");

    // One table on its own: ANALYZE on the load's connection alone, the same outcome.
    f.pg.exec("DELETE FROM o1");
    let rows = cmd("sqlite-dump").args([f.db.as_str(), "o1"]).ok().stdout();
    let load = cmd("pg-load").args(["--db", &f.pg.url, "o1"]);
    let out = run_with_held(&f, load, &rows, "o1", Then::Signal("TERM"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{err}");
    assert!(
        err.find("50 rows inserted").unwrap_or_else(|| panic!("{err}")) < err.find("warning: SIGTERM").unwrap(),
        "{err}"
    );
    assert_eq!(named_without_statistics(&err), ["o1"]);
    assert!(without_statistics(&f.pg).contains(&"o1".to_string()));
    assert_eq!(f.pg.count("o1"), 50);
    assert_eq!(f.pg.one(analyzing), "0");
}

#[test]
fn a_table_held_past_the_lock_timeout_after_the_commit_is_left_with_a_warning_not_waited_for_forever() {
    let f = fixture(&[]);
    // o1 held for good: ANALYZE waits --lock-timeout (1 s), then goes on without it.
    let out = run_with_held(&f, f.load().args(["--lock-timeout", "1"]), &f.stream(), "o1", Then::Hold(20));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    let warning = "warning: ANALYZE o1: another session held the table longer than --lock-timeout allows; \
                   run ANALYZE \"public\".\"o1\" once it is free";
    assert_eq!(err.matches(warning).count(), 1, "{err}");
    assert_eq!(without_statistics(&f.pg), ["o1"], "{err}");
    assert_eq!(f.pg.count("o1"), 50);
}

#[test]
fn on_one_connection_a_held_table_is_waited_for_once_and_the_others_are_analyzed() {
    let f = fixture(&[]);
    // Two small tables: too little for a second connection, one ANALYZE statement of both.
    let steps = ["o1", "o2"];
    let plan: String = steps
        .iter()
        .map(|t| json!({"step": t, "source": format!("sqlite:{}:{t}", f.db), "target": t}).to_string() + "\n")
        .collect();
    std::fs::write(&f.plan, plan).unwrap();
    let stream: String = steps
        .iter()
        .map(|t| {
            format!("{}\n", json!({"$table": {"step": t, "target": t}}))
                + &cmd("sqlite-dump").args([f.db.as_str(), t]).ok().stdout()
        })
        .collect();
    // o1 held for good, --lock-timeout 4: the statement waits 4 s and gives up; o2 is then
    // analyzed without waiting again, o1 named. Waiting again for o1 alone would take 8 s.
    let out = run_with_held(&f, f.load().args(["--lock-timeout", "4"]), &stream, "o1", Then::Hold(7));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    let warning = "warning: ANALYZE o1: another session held the table longer than --lock-timeout allows; \
                   run ANALYZE \"public\".\"o1\" once it is free";
    assert_eq!(err.matches(warning).count(), 1, "{err}");
    assert_eq!(err.matches("warning").count(), 1, "{err}");
    assert_eq!(without_statistics(&f.pg), ["ev", "o1"], "{err}");
    assert_eq!(f.pg.one("SELECT analyze_count FROM pg_stat_all_tables WHERE relid = 'o2'::regclass"), "1");
}
