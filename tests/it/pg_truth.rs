//! What pg-load says is true: commit outcomes across a broken connection (through the
//! fault-injecting proxy), the run log (alive when needed, orphans resolved from the server,
//! the user's own table), signals, timeouts, exit classes.

use crate::harness::*;
use crate::pg_proxy::{Fault, PgProxy};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn rows_stream(n: u64) -> String {
    let mut s = String::new();
    for i in 1..=n {
        s.push_str(&format!("{{\"id\":{i},\"v\":\"row {i}\"}}\n"));
    }
    s.push_str(&format!("{{\"$end\":{{\"rows\":{n},\"source\":\"test\"}}}}\n"));
    s
}

fn table(pg: &Pg) {
    pg.exec("CREATE TABLE t (id bigint PRIMARY KEY, v text)");
}

/// Outcome and note of the latest run in pgferry's record `runs`.
fn last_run(pg: &Pg, runs: &str) -> (String, String) {
    let r = pg.rows(&format!("SELECT outcome, coalesce(note, error, '') FROM {runs} ORDER BY id DESC LIMIT 1"));
    let (o, n) = r[0].split_once('|').unwrap();
    (o.to_string(), n.to_string())
}

/// pg-load with stdin from a pipe the test writes into, at its own pace.
fn spawn_load(url: &str, args: &[&str]) -> Child {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(bin("pg-load"));
    // As a login shell starts it: SIGHUP at its default even when the tests run under nohup
    // (pg-load keeps an inherited ignore, which the SIGHUP test would take for a failure).
    // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
    c.args(["--db", url])
        .args(args)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The latest run in `_migration_runs` failed, its error saying `why`.
fn assert_failed_run(pg: &Pg, why: &str) {
    let (outcome, error) = last_run(pg, "_migration_runs");
    assert_eq!(outcome, "failed");
    assert!(error.contains(why), "{error}");
}

/// pg-load fed `input` with a 3 s pause before `at` (a producer that stops to think); its
/// exit code and stderr.
fn load_with_a_pause(url: &str, args: &[&str], input: &str, at: &str) -> (i32, String) {
    let mut child = spawn_load(url, args);
    let mut stdin = child.stdin.take().unwrap();
    let (head, tail) = input.split_at(input.find(at).unwrap());
    stdin.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    stdin.write_all(tail.as_bytes()).unwrap();
    drop(stdin);
    finish(child)
}

fn finish(mut child: Child) -> (i32, String) {
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_commit_whose_reply_is_lost_or_cut_is_reported_committed_and_the_log_agrees() {
    // 0: the whole reply lost; 1, 5, 11: cut inside CommandComplete; 12, 17: inside ReadyForQuery.
    for keep in [0usize, 1, 5, 11, 12, 17] {
        let pg = Pg::new();
        table(&pg);
        let proxy = PgProxy::start(&pg.url, Fault::CutCommitReply(keep));
        let r = cmd("pg-load").args(["--db", &proxy.url(&pg.url), "t"]).stdin(rows_stream(2000)).run();
        assert!(proxy.fired(), "the proxy saw no COMMIT");
        assert_eq!(r.code(), 0, "cut after {keep} bytes\n{}", r.describe());
        r.stderr_has(&["the connection broke during COMMIT", "committed"]);
        assert!(!r.stderr().contains("nothing was committed"), "{}", r.describe());
        assert_eq!(pg.count("t"), 2000);
        let (outcome, _) = last_run(&pg, "_migration_runs");
        assert_eq!(outcome, "success", "cut after {keep} bytes");
    }
}

#[test]
fn a_commit_that_never_arrives_is_reported_aborted_by_the_server() {
    let pg = Pg::new();
    table(&pg);
    let proxy = PgProxy::start(&pg.url, Fault::DropCommit);
    let r = cmd("pg-load").args(["--db", &proxy.url(&pg.url), "t"]).stdin(rows_stream(500)).expect(69);
    r.stderr_has(&["the server reports transaction", "aborted: nothing was committed"]);
    assert_eq!(pg.count("t"), 0);
    assert_failed_run(&pg, "aborted");
}

#[test]
fn an_unknowable_commit_outcome_says_so_with_the_query_and_exit_76() {
    let pg = Pg::new();
    table(&pg);
    let proxy = PgProxy::start(&pg.url, Fault::CutCommitReplyThenRefuse(0));
    let r = cmd("pg-load").args(["--db", &proxy.url(&pg.url), "t"]).stdin(rows_stream(500)).expect(76);
    r.stderr_has(&["commit outcome unknown", "SELECT txid_status("]);
    assert!(!r.stderr().contains("nothing was committed"), "{}", r.describe());
    // The printed query tells the truth: this COMMIT reached the server.
    let err = r.stderr();
    let q = err.split("with: ").nth(1).unwrap().split(" (").next().unwrap().to_string();
    assert_eq!(pg.one(&q), "committed");
    assert_eq!(pg.count("t"), 500);
    assert_eq!(last_run(&pg, "_migration_runs").0, "unknown");
    // The next run, which can reach the server, settles it from the server's answer.
    cmd("pg-load").args(["--db", &pg.url, "t"]).stdin(rows_stream(500)).ok();
    assert_eq!(pg.rows("SELECT outcome FROM _migration_runs ORDER BY id"), vec!["success", "success"]);
}

#[test]
fn the_run_log_survives_an_idle_session_timeout_and_the_loads_error_wins() {
    let pg = Pg::new();
    table(&pg);
    // Every session of this URL ends after 1 s idle: the run log's connection sits idle for
    // the whole load (3 s here), the load's never is.
    let url = format!("{}?options=-c%20idle_session_timeout%3D1000", pg.url);
    let (code, err) = load_with_a_pause(&url, &["t"], &rows_stream(1000), "{\"id\":501,");
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(pg.count("t"), 1000);
    assert_eq!(last_run(&pg, "_migration_runs").0, "success");
    assert_eq!(pg.one("SELECT count(*) FROM _migration_runs WHERE xid IS NOT NULL"), "1");

    // The same with a bad value after the pause: the load's own error is what is reported.
    pg.exec("TRUNCATE t");
    let input = "{\"id\":1,\"v\":\"a\"}\n{\"id\":\"two\",\"v\":\"b\"}\n{\"$end\":{\"rows\":2}}\n";
    let (code, err) = load_with_a_pause(&url, &["t"], input, "{\"id\":\"two\"");
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("line 2, column 'id'") && err.contains("nothing was committed"), "{err}");
    assert_failed_run(&pg, "line 2, column 'id'");
}

#[test]
fn kill_9_between_commit_and_the_log_update_is_resolved_by_the_next_run() {
    let pg = Pg::new();
    table(&pg);
    pg.exec("CREATE TABLE other (id bigint PRIMARY KEY)");
    // Everything stalls once the COMMIT's reply reached pg-load: it hangs in the run-log update.
    let proxy = PgProxy::start(&pg.url, Fault::StallAfterCommit);
    let mut child = spawn_load(&proxy.url(&pg.url), &["t"]);
    child.stdin.take().unwrap().write_all(rows_stream(300).as_bytes()).unwrap();
    wait_for("the COMMIT's reply", 30, || proxy.commit_answered());
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(pg.count("t"), 300, "the COMMIT went through");
    assert_eq!(last_run(&pg, "_migration_runs").0, "running");
    // The next run (of any table) asks the server about the orphan's transaction.
    cmd("pg-load").args(["--db", &pg.url, "other"]).stdin("{\"id\":1}\n{\"$end\":{\"rows\":1}}\n").ok();
    let r = pg.rows("SELECT outcome, note FROM _migration_runs WHERE target = 't'");
    assert_eq!(r.len(), 1);
    assert!(r[0].starts_with("success|"), "{r:?}");
    assert!(r[0].contains("committed"), "{r:?}");

    // And one killed before COMMIT is resolved as interrupted, by the same question.
    pg.exec("TRUNCATE t");
    let mut child = spawn_load(&pg.url, &["t"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"{\"id\":1,\"v\":\"a\"}\n").unwrap();
    wait_for("the load's transaction id", 30, || {
        pg.one("SELECT count(*) FROM _migration_runs WHERE outcome = 'running' AND xid IS NOT NULL") == "1"
    });
    child.kill().unwrap();
    let _ = child.wait();
    cmd("pg-load").args(["--db", &pg.url, "other"]).stdin("{\"id\":2}\n{\"$end\":{\"rows\":1}}\n").ok();
    let r = pg.one("SELECT outcome || '|' || note FROM _migration_runs WHERE target = 't' ORDER BY id DESC LIMIT 1");
    assert!(r.starts_with("interrupted|") && r.contains("aborted"), "{r}");
    assert_eq!(pg.count("t"), 0);
}

/// The load's backend is running `query` (a `LIKE` pattern) in `state`.
fn backend_is(pg: &Pg, state: &str, query: &str) -> bool {
    pg.one(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = '{state}' AND query LIKE '{query}'"
    )) == "1"
}

fn signal_mid_load(sig: &str) {
    signal_mid_load_at(sig, "0", "the COPY", &|pg| backend_is(pg, "active", "COPY%"));
}

/// A signal to a load under way, at the moment `at` says: during the COPY, or (with the default
/// --rebuild-indexes-from) while the first rows are held and no COPY is open yet.
fn signal_mid_load_at(sig: &str, rebuild_from: &str, what: &str, at: &dyn Fn(&Pg) -> bool) {
    let pg = Pg::new();
    table(&pg);
    let mut child = spawn_load(&pg.url, &["t", "--rebuild-indexes-from", rebuild_from]);
    let mut stdin = child.stdin.take().unwrap();
    let all = rows_stream(200_000);
    // Half the stream, then the signal while the producer keeps writing.
    let (head, tail) = all.split_at(all.len() / 2);
    stdin.write_all(head.as_bytes()).unwrap();
    wait_for(what, 30, || at(&pg));
    let started = Instant::now();
    Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap();
    let tail = tail.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(tail.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    assert!(err.contains(&format!("interrupted by SIG{sig}")) && err.contains("nothing was committed"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(pg.count("t"), 0);
    assert_eq!(last_run(&pg, "_migration_runs").0, "interrupted");
    assert_eq!(
        pg.one("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 't'"),
        "0"
    );
}

#[test]
fn sigint_mid_load_rolls_back_records_interrupted_and_exits_130() {
    signal_mid_load("INT");
}

#[test]
fn sigterm_mid_load_rolls_back_records_interrupted_and_exits_130() {
    signal_mid_load("TERM");
}

#[test]
fn sighup_mid_load_rolls_back_records_interrupted_and_exits_130() {
    // The terminal of an ssh session closing under a load.
    signal_mid_load("HUP");
}

#[test]
fn sigint_while_the_first_rows_are_held_rolls_back_records_interrupted_and_exits_130() {
    // Half of 200,000 rows is under 4 MB of COPY data: held, the transaction open, no COPY yet.
    // (Still idle in the transaction a moment later: reading the stream, not between statements.)
    let idle = |pg: &Pg| backend_is(pg, "idle in transaction", "%");
    let held = |pg: &Pg| {
        if !idle(pg) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(300));
        idle(pg)
    };
    signal_mid_load_at("INT", "4MB", "the rows held", &held);
}

#[test]
fn a_producer_that_pauses_while_rows_are_held_outlasts_the_servers_idle_in_transaction_timeout() {
    let pg = Pg::new();
    table(&pg);
    pg.exec(&format!("ALTER DATABASE {} SET idle_in_transaction_session_timeout = '1s'", pg.name));
    let t = TempDir::new();
    std::fs::write(t.path("rows.ndjson"), rows_stream(2000)).unwrap();
    // The first 1,000 rows are held (no COPY open, the transaction idle), then 2.5 s of nothing.
    let script = format!(
        "{{ head -n 1000 '{f}'; sleep 2.5; tail -n +1001 '{f}'; }} | '{bin}' --db \"$URL\" t",
        f = t.str("rows.ndjson"),
        bin = bin("pg-load").display()
    );
    let out = Command::new("bash").arg("-c").arg(&script).env("URL", &pg.url).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pg.count("t"), 2000);
}

#[test]
fn sigint_stops_a_background_job_of_a_script() {
    let pg = Pg::new();
    table(&pg);
    let t = TempDir::new();
    std::fs::write(t.path("rows.ndjson"), rows_stream(20_000)).unwrap();
    // bash starts background jobs of a script with SIGINT ignored; pg-load must still stop.
    // The script signals its job once the test says the load is under way (file 'go').
    let script = format!(
        "{{ head -n 1000 '{f}'; sleep 4; tail -n +1001 '{f}'; }} | '{bin}' --db \"$URL\" t --rebuild-indexes-from 0 2>'{e}' &\n\
         pid=$!\nuntil [ -e '{go}' ]; do sleep 0.05; done\nkill -INT \"$pid\"\nwait \"$pid\"\necho \"status $?\"",
        f = t.str("rows.ndjson"),
        bin = bin("pg-load").display(),
        e = t.str("err"),
        go = t.str("go")
    );
    let child = Command::new("bash").arg("-c").arg(&script).env("URL", &pg.url).stdout(Stdio::piped()).spawn().unwrap();
    wait_for("the COPY", 30, || {
        pg.one("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY%'") == "1"
    });
    std::fs::write(t.path("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = std::fs::read_to_string(t.path("err")).unwrap();
    assert_eq!(stdout.trim(), "status 130", "{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    assert_eq!(pg.count("t"), 0);
}

#[test]
fn the_users_run_log_gets_a_row_per_run_by_the_documented_mapping_and_is_never_altered() {
    let pg = Pg::new();
    table(&pg);
    // The BellSystems seed's Alembic table.
    pg.exec(
        "CREATE TABLE _migration_runs (id serial PRIMARY KEY, script_name text, ran_at timestamptz, \
         source_rows int, dest_rows int, success bool)",
    );
    let cols_before = pg.one("SELECT string_agg(attname || ':' || atttypid::regtype, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '_migration_runs'::regclass AND attnum > 0");
    cmd("pg-load").args(["--db", &pg.url, "t"]).stdin(rows_stream(30)).ok().stderr_has(&["_pgferry_runs"]);
    cmd("pg-load").args(["--db", &pg.url, "t", "--mode", "append"]).stdin(rows_stream(3)).expect(65);
    assert_eq!(
        pg.rows("SELECT script_name, source_rows, coalesce(dest_rows::text, '-'), success, ran_at IS NOT NULL FROM _migration_runs ORDER BY id"),
        vec!["pg-load t|30|30|t|t", "pg-load t|3|-|f|t"]
    );
    assert_eq!(pg.rows("SELECT outcome FROM _pgferry_runs ORDER BY id"), vec!["success", "failed"]);
    let cols_after = pg.one("SELECT string_agg(attname || ':' || atttypid::regtype, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '_migration_runs'::regclass AND attnum > 0");
    assert_eq!(cols_before, cols_after);
    // count-check --lint reads the same log through the one reader.
    let r = cmd("count-check").args(["--db", &pg.url, "--lint", "pg:t"]).expect(1);
    assert!(r.stdout().contains("failed-runs"), "{}", r.describe());
    cmd("pg-load").args(["--db", &pg.url, "t"]).stdin(rows_stream(3)).ok();
    let r = cmd("count-check").args(["--db", &pg.url, "--lint", "pg:t"]).run();
    assert!(!r.stdout().contains("failed-runs"), "{}", r.describe());
}

#[test]
fn runs_table_names_are_read_as_sql_and_a_foreign_table_is_refused_untouched() {
    let pg = Pg::new();
    table(&pg);
    cmd("pg-load").args(["--db", &pg.url, "t", "--runs-table", "MyRuns"]).stdin(rows_stream(2)).ok();
    assert_eq!(pg.one("SELECT outcome FROM myruns"), "success");
    cmd("pg-load").args(["--db", &pg.url, "t", "--runs-table", "\"MyRuns\""]).stdin(rows_stream(2)).ok();
    assert_eq!(pg.one("SELECT outcome FROM \"MyRuns\""), "success");
    pg.exec("CREATE TABLE notruns (a int)");
    cmd("pg-load")
        .args(["--db", &pg.url, "t", "--runs-table", "notruns"])
        .stdin(rows_stream(2))
        .expect(64)
        .stderr_has(&["'notruns' exists with other columns"]);
    assert_eq!(pg.one("SELECT count(*) FROM pg_attribute WHERE attrelid = 'notruns'::regclass AND attnum > 0"), "1");
    assert_eq!(pg.one("SELECT to_regclass('_pgferry_runs') IS NULL"), "t");
}

/// A new login role that may use and create in schema public (and nothing else yet), and
/// its URL. Dropped by the test: `DROP OWNED BY role; DROP ROLE role`.
fn login_role(pg: &Pg) -> (String, String) {
    let role = unique("r").to_lowercase();
    pg.exec(&format!("CREATE ROLE {role} LOGIN PASSWORD 'pw'; GRANT CREATE, USAGE ON SCHEMA public TO {role}"));
    let url = format!("postgres://{role}:pw@{}", pg.url.split_once('@').unwrap().1);
    (role, url)
}

#[test]
fn a_role_without_the_privilege_gets_exit_77() {
    let pg = Pg::new();
    table(&pg);
    let (role, url) = login_role(&pg);
    pg.exec(&format!("GRANT SELECT ON t TO {role}"));
    cmd("pg-load")
        .args(["--db", &url, "t"])
        .stdin(rows_stream(2))
        .expect(77)
        .stderr_has(&["permission denied", "nothing was committed"]);
    pg.exec(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

#[test]
fn row_level_security_that_applies_to_the_role_is_exit_77_before_any_copy() {
    let pg = Pg::new();
    table(&pg);
    let (role, url) = login_role(&pg);
    pg.exec(&format!(
        "GRANT ALL ON t TO {role}; ALTER TABLE t ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY everything ON t TO {role} USING (true) WITH CHECK (true)"
    ));
    // The run log's table is made by the owner first, so that the role only lacks the COPY.
    cmd("pg-load").args(["--db", &pg.url, "t", "--mode", "replace"]).stdin(rows_stream(0)).expect(0);
    pg.exec(&format!(
        "GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"
    ));
    // Both the small-table path (rows held) and the path that sets indexes aside.
    for extra in [&[][..], &["--rebuild-indexes-from", "0"][..]] {
        cmd("pg-load").args(["--db", &url, "t"]).args(extra).stdin(rows_stream(3)).expect(77).stderr_has(&[
            "row-level security applies to this role",
            "BYPASSRLS",
            "nothing was committed",
        ]);
    }
    assert_eq!(pg.rows("SELECT count(*) FROM t"), ["0"]);
    // The table's owner is not subject to its policies: the same load goes in.
    cmd("pg-load").args(["--db", &pg.url, "t"]).stdin(rows_stream(3)).expect(0);
    assert_eq!(pg.rows("SELECT count(*) FROM t"), ["3"]);
    pg.exec(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

#[test]
fn lock_timeout_zero_does_not_wait_and_out_of_range_values_are_usage_errors() {
    let pg = Pg::new();
    table(&pg);
    let mut holder = pg.client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE t IN SHARE ROW EXCLUSIVE MODE").unwrap();
    let started = Instant::now();
    cmd("pg-load")
        .args(["--db", &pg.url, "t", "--lock-timeout", "0"])
        .stdin(rows_stream(2))
        .expect(75)
        .stderr_has(&["another session holds the table", "nothing was committed"]);
    assert!(started.elapsed() < Duration::from_secs(3), "waited {:?}", started.elapsed());
    tx.rollback().unwrap();
    for bad in ["-1", "2147484", "99999999999", "1.5", "soon"] {
        cmd("pg-load")
            .args(["--db", &pg.url, "t", "--lock-timeout", bad])
            .stdin(rows_stream(2))
            .expect(64)
            .stderr_has(&["--lock-timeout takes whole seconds"]);
    }
    cmd("pg-load").args(["--db", &pg.url, "t", "--lock-timeout", "2147483"]).stdin(rows_stream(2)).ok();
}

#[test]
fn status_prints_each_steps_latest_run_from_either_run_log() {
    for users_table in [false, true] {
        let pg = Pg::new();
        table(&pg);
        pg.exec("CREATE TABLE u (id bigint PRIMARY KEY)");
        if users_table {
            pg.exec(
                "CREATE TABLE runs (id serial PRIMARY KEY, script_name text, ran_at timestamptz, \
                 source_rows int, dest_rows int, success bool)",
            );
        }
        let t = TempDir::new();
        std::fs::write(
            t.path("plan.ndjson"),
            "{\"step\": \"1.1\", \"source\": \"sqlite:/x.db:t\", \"target\": \"t\"}\n\
             {\"step\": \"1.2\", \"source\": \"sqlite:/x.db:u\", \"target\": \"u\"}\n",
        )
        .unwrap();
        let status = || {
            cmd("pg-load").args(["--db", &pg.url, "--plan", &t.str("plan.ndjson"), "--status", "--runs-table", "runs"])
        };
        let r = status().expect(1);
        let lines = r.json_lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["outcome"], "never-run");
        cmd("pg-load").args(["--db", &pg.url, "t", "--runs-table", "runs"]).stdin(rows_stream(4)).ok();
        cmd("pg-load")
            .args(["--db", &pg.url, "u", "--runs-table", "runs"])
            .stdin("{\"id\":\"x\"}\n{\"$end\":{\"rows\":1}}\n")
            .expect(65);
        let lines = status().expect(1).json_lines();
        assert_eq!((lines[0]["step"].as_str(), lines[0]["outcome"].as_str()), (Some("1.1"), Some("success")));
        assert_eq!((lines[0]["source_rows"].as_i64(), lines[0]["dest_rows"].as_i64()), (Some(4), Some(4)));
        assert_eq!((lines[1]["step"].as_str(), lines[1]["outcome"].as_str()), (Some("1.2"), Some("failed")));
        cmd("pg-load")
            .args(["--db", &pg.url, "u", "--runs-table", "runs"])
            .stdin("{\"id\":1}\n{\"$end\":{\"rows\":1}}\n")
            .ok();
        let lines = status().ok().json_lines();
        assert!(lines.iter().all(|l| l["outcome"] == "success" && l["finished_at"].is_string()), "{lines:?}");
    }
}

#[test]
fn a_connection_that_stalls_without_closing_ends_the_load_and_releases_the_lock() {
    let pg = Pg::new();
    table(&pg);
    let proxy = PgProxy::start(&pg.url, Fault::StallInCopy(100_000));
    let started = Instant::now();
    let r = cmd("pg-load")
        .args(["--db", &proxy.url(&pg.url), "t", "--stall-timeout", "2"])
        .stdin(rows_stream(50_000))
        .expect(69);
    assert!(proxy.fired(), "the proxy never stalled");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    r.stderr_has(&["stalled", "lock released", "nothing was committed"]);
    assert_eq!(pg.count("t"), 0);
    assert_eq!(
        pg.one("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 't'"),
        "0"
    );
    assert_failed_run(&pg, "stalled");

    // A producer that pauses longer than the timeout is not a stall.
    let (code, err) = load_with_a_pause(&pg.url, &["t", "--stall-timeout", "1"], &rows_stream(1000), "{\"id\":501,");
    assert_eq!(code, 0, "{err}");
    assert_eq!(pg.count("t"), 1000);
    for bad in ["0", "86401", "x"] {
        cmd("pg-load").args(["--db", &pg.url, "t", "--stall-timeout", bad]).stdin(rows_stream(1)).expect(64);
    }
}

#[test]
fn a_row_that_takes_longer_to_convert_than_the_stall_timeout_is_not_a_stall() {
    // The server waits for pg-load while pg-load works on one huge row (120 MB of escapes,
    // seconds of CPU in a debug build): pg-load is busy, not waiting, and must not give up.
    let pg = Pg::new();
    pg.exec("CREATE TABLE big (id int PRIMARY KEY, v text)");
    let mut row = String::with_capacity(120_000_100);
    row.push_str("{\"id\":1,\"v\":\"");
    for _ in 0..20_000_000 {
        row.push_str("\\u00e9");
    }
    row.push_str("\"}\n{\"$end\":{\"rows\":1,\"source\":\"test\"}}\n");
    let r = cmd("pg-load").args(["--db", &pg.url, "big", "--stall-timeout", "1"]).stdin(row).ok();
    r.stderr_has(&["big: Source: 1 rows → Postgres: 1 rows ✓"]);
    assert_eq!(pg.one("SELECT length(v) FROM big"), "20000000");
}

#[test]
fn conversions_match_postgresql_or_are_stricter() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE c (id int PRIMARY KEY, f4 real, f8 float8, d date, ts timestamp, tm time)");
    let refused: &[(&str, &str)] = &[
        (r#"{"id":1,"f4":1e-50}"#, "out of range for real"),
        (r#"{"id":1,"f4":"1e-50"}"#, "out of range for real"),
        (r#"{"id":1,"f8":1e-400}"#, "out of range for double precision"),
        (r#"{"id":1,"f8":"-1e-400"}"#, "out of range for double precision"),
        (r#"{"id":1,"d":"0000-01-01"}"#, "column 'd'"),
        (r#"{"id":1,"ts":"0000-06-01T10:00:00"}"#, "column 'ts'"),
        (r#"{"id":1,"d":"2024-01-05 24:00:00"}"#, "24:00:00 into a date column"),
    ];
    for (row, why) in refused {
        let input = format!("{row}\n{{\"$end\":{{\"rows\":1}}}}\n");
        cmd("pg-load").args(["--db", &pg.url, "c"]).stdin(input).expect(65).stderr_has(&["line 1", why]);
    }
    // What PostgreSQL itself accepts, stored as it stores it.
    let ok =
        "{\"id\":2,\"f4\":1e-40,\"f8\":0e10,\"ts\":\"9999-12-31T24:00:00\",\"tm\":\"24:00:00\",\"d\":\"0001-01-01\"}\n\
              {\"id\":3,\"f8\":\"-0.0\"}\n{\"$end\":{\"rows\":2}}\n";
    cmd("pg-load").args(["--db", &pg.url, "c"]).stdin(ok).ok();
    assert_eq!(
        pg.rows("SELECT f4 = '1e-40'::real, f8, ts, tm, d FROM c WHERE id = 2"),
        vec!["t|0|10000-01-01 00:00:00|24:00:00|0001-01-01"]
    );
    assert_eq!(pg.one("SELECT f8::text FROM c WHERE id = 3"), "-0");
}

#[test]
fn silent_changes_are_counted_per_column_or_refused_with_strict() {
    let pg = Pg::new();
    let ddl = "(id int PRIMARY KEY, amount numeric(12,2), at timestamptz, r real, d float8, doc jsonb, tm time)";
    pg.exec(&format!("CREATE TABLE s {ddl}; CREATE TABLE s2 {ddl}"));
    let input = concat!(
        r#"{"id":1,"amount":1.234,"at":"2024-01-05T10:00:00.1234567Z","r":3.14159265,"d":0.1,"doc":{"a":1},"tm":"10:00:00.0000001"}"#,
        "\n",
        r#"{"id":2,"amount":"1.50","at":"2024-01-05T10:00:00.1234560Z","r":1.5,"d":3.141592653589793238,"doc":"{\"a\":1,\"a\":2}"}"#,
        "\n",
        r#"{"id":3,"amount":"2.005","r":"0.1","d":"1e300"}"#,
        "\n{\"$end\":{\"rows\":3}}\n"
    );
    let r = cmd("pg-load").args(["--db", &pg.url, "s"]).stdin(input).ok();
    r.stderr_has(&[
        "column 'amount': 2 rounded-to-scale",
        "column 'at': 1 rounded-to-microseconds",
        "column 'r': 1 rounded-to-real",
        "column 'd': 1 rounded-to-double",
        "column 'doc': 1 duplicate-keys-collapsed",
        "column 'tm': 1 rounded-to-microseconds",
    ]);
    assert_eq!(
        pg.one("SELECT changes::text FROM _migration_runs ORDER BY id DESC LIMIT 1"),
        r#"{"d": {"rounded-to-double": 1}, "r": {"rounded-to-real": 1}, "at": {"rounded-to-microseconds": 1}, "tm": {"rounded-to-microseconds": 1}, "doc": {"duplicate-keys-collapsed": 1}, "amount": {"rounded-to-scale": 2}}"#
    );
    cmd("pg-load").args(["--db", &pg.url, "s2", "--strict"]).stdin(input).expect(65).stderr_has(&[
        "line 1, column 'amount'",
        "round it to 2 fraction digits",
        "--strict refuses",
    ]);
    assert_eq!(pg.count("s2"), 0);
    // Epochs: a fraction finer than a microsecond is rounded too.
    pg.exec("CREATE TABLE e (id int PRIMARY KEY, at timestamptz)");
    cmd("pg-load")
        .args(["--db", &pg.url, "e", "--epoch-unit", "s"])
        .stdin("{\"id\":1,\"at\":1704448800.0000005}\n{\"id\":2,\"at\":1704448800.25}\n{\"$end\":{\"rows\":2}}\n")
        .ok()
        .stderr_has(&["column 'at': 1 rounded-to-microseconds"]);
}

#[test]
fn generated_columns_load_without_flags() {
    let pg = Pg::new();
    let t = TempDir::new();
    let db = t.path("app.db");
    sqlite_db(
        &db,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, price REAL, qty INTEGER, \
           total REAL GENERATED ALWAYS AS (price * qty) STORED, label TEXT GENERATED ALWAYS AS ('#' || id) VIRTUAL);
         INSERT INTO items (id, price, qty) VALUES (1, 2.5, 4), (2, 1.0, 3);",
    );
    let dump = cmd("sqlite-dump").args([db.to_str().unwrap(), "items"]).ok().stdout();
    assert!(!dump.contains("total") && !dump.contains("label"), "{dump}");
    let with = cmd("sqlite-dump").args(["--include-generated", db.to_str().unwrap(), "items"]).ok().stdout();
    assert!(with.contains("\"total\":10.0") && with.contains("\"label\":\"#1\""), "{with}");
    pg.exec(
        "CREATE TABLE items (id bigint PRIMARY KEY, price float8, qty int, \
         total float8 GENERATED ALWAYS AS (price * qty) STORED, label text GENERATED ALWAYS AS ('#' || id) STORED)",
    );
    cmd("pg-load").args(["--db", &pg.url, "items"]).stdin(dump).ok();
    pg.exec("TRUNCATE items");
    // A stream that carries them (another producer, or --include-generated) loads too: PostgreSQL computes them.
    cmd("pg-load").args(["--db", &pg.url, "items"]).stdin(with).ok();
    assert_eq!(pg.rows("SELECT id, total, label FROM items ORDER BY id"), vec!["1|10|#1", "2|3|#2"]);
    // count-check --full compares what each side computes.
    let (sq, pgt) = (format!("sqlite:{}:items", db.display()), "pg:items".to_string());
    cmd("count-check").args(["--db", &pg.url, "--full", &sq, &pgt]).ok();
    pg.exec(
        "ALTER TABLE items DROP COLUMN total; \
         ALTER TABLE items ADD COLUMN total float8 GENERATED ALWAYS AS (price * qty + 1) STORED",
    );
    let r = cmd("count-check").args(["--db", &pg.url, "--full", &sq, &pgt]).expect(1);
    assert!(r.stdout().contains("total"), "{}", r.describe());
}

#[test]
fn a_plan_runs_lost_commit_reply_is_learnt_and_every_step_records_it() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE a (id bigint PRIMARY KEY); CREATE TABLE b (id bigint PRIMARY KEY)");
    let t = TempDir::new();
    std::fs::write(
        t.path("plan.ndjson"),
        "{\"step\": \"1\", \"source\": \"sqlite:/x.db:a\", \"target\": \"a\"}\n\
         {\"step\": \"2\", \"source\": \"sqlite:/x.db:b\", \"target\": \"b\"}\n",
    )
    .unwrap();
    let input = "{\"$table\":{\"step\":\"1\",\"target\":\"a\"}}\n{\"id\":1}\n{\"$end\":{\"rows\":1}}\n\
                 {\"$table\":{\"step\":\"2\",\"target\":\"b\"}}\n{\"id\":1}\n{\"id\":2}\n{\"$end\":{\"rows\":2}}\n";
    let proxy = PgProxy::start(&pg.url, Fault::CutCommitReply(0));
    cmd("pg-load")
        .args(["--db", &proxy.url(&pg.url), "--plan", &t.str("plan.ndjson")])
        .stdin(input)
        .ok()
        .stderr_has(&["the connection broke during COMMIT", "committed"]);
    assert_eq!((pg.count("a"), pg.count("b")), (1, 2));
    assert_eq!(
        pg.rows("SELECT step, outcome, xid = (SELECT min(xid) FROM _migration_runs) FROM _migration_runs ORDER BY id"),
        vec!["1|success|t", "2|success|t"]
    );
    let lines = cmd("pg-load").args(["--db", &pg.url, "--plan", &t.str("plan.ndjson"), "--status"]).ok().json_lines();
    assert!(lines.iter().all(|l| l["outcome"] == "success"), "{lines:?}");
    // A selection of the steps, settled (nothing is running: at once).
    let status = |extra: &[&str]| {
        cmd("pg-load").args(["--db", &pg.url, "--plan", &t.str("plan.ndjson"), "--status"]).args(extra)
    };
    let lines = status(&["--steps", "2", "--settle", "30"]).ok().json_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!((&lines[0]["step"], &lines[0]["outcome"]), (&serde_json::json!("2"), &serde_json::json!("success")));
    status(&["--settle", "soon"]).expect(64).stderr_has(&["--settle takes whole seconds, not 'soon'"]);
}

/// `program` as root: itself when the tests run as root (CI), else through `sudo -n` (the
/// README's "root, or a user with sudo").
fn as_root(program: &str) -> Command {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", program]);
        c
    }
}

/// A tmpfs of `size` mounted for the server's own user, and a tablespace there: a real disk
/// that fills (mount(8) needs root: see `as_root`). The tablespace, then the mount, go when it
/// is dropped.
struct SmallDisk<'a> {
    pg: &'a Pg,
    dir: std::path::PathBuf,
    name: String,
}

impl<'a> SmallDisk<'a> {
    fn new(pg: &'a Pg, size: &str) -> SmallDisk<'a> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let data = pg.one("SELECT current_setting('data_directory')");
        let owner = std::fs::metadata(&data).unwrap_or_else(|e| panic!("stat the server's {data}: {e}"));
        let name = unique("small_disk").to_lowercase();
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let opts = format!("size={size},mode=0700,uid={},gid={}", owner.uid(), owner.gid());
        let out = as_root("mount").args(["-t", "tmpfs", "-o", &opts, "tmpfs"]).arg(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "mount a {size} tmpfs for the disk-full test (needs root or sudo, as tests/run): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.exec(&format!("CREATE TABLESPACE {name} LOCATION '{}'", dir.display()));
        SmallDisk { pg, dir, name }
    }
}

impl Drop for SmallDisk<'_> {
    fn drop(&mut self) {
        let mut c = self.pg.client();
        let tables: Vec<String> = c
            .query(
                "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace \
                 WHERE t.spcname = $1 AND c.relkind = 'r'",
                &[&self.name],
            )
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default();
        for t in tables {
            let _ = c.batch_execute(&format!("DROP TABLE {t} CASCADE"));
        }
        // DROP TABLESPACE checkpoints for the files of dropped tables the server still keeps.
        let _ = c.batch_execute(&format!("DROP TABLESPACE {}", self.name));
        drop(c);
        let _ = as_root("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_server_disk_that_fills_mid_load_is_said_so_exits_74_and_commits_nothing() {
    let pg = Pg::new();
    let disk = SmallDisk::new(&pg, "1m");
    // No index: every row goes to the table's file, on the small disk (the run log is not).
    pg.exec(&format!("CREATE TABLE t (id bigint, v text) TABLESPACE {}", disk.name));
    let rows = rows_stream(100_000);
    let r = cmd("pg-load").args(["--db", &pg.url, "t"]).stdin(rows.clone()).run();
    assert_eq!(r.code(), 74, "{}", r.describe());
    r.stderr_has(&["No space left on device", "(the PostgreSQL server's disk is full)", "nothing was committed"]);
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.describe());
    assert_eq!(pg.count("t"), 0);
    let (outcome, error) = last_run(&pg, "_migration_runs");
    assert_eq!(outcome, "failed");
    assert!(error.contains("disk is full"), "{error}");
    // Space made (the table on the server's own disk): the same stream loads.
    pg.exec("ALTER TABLE t SET TABLESPACE pg_default");
    cmd("pg-load").args(["--db", &pg.url, "t"]).stdin(rows).ok();
    assert_eq!(pg.count("t"), 100_000);
}
