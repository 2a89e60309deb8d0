//! The test harness: real PostgreSQL (one throwaway database per test, on the cluster
//! `tests/run` started), real SQLite files in a temp dir per test, the real binaries.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
    format!("{prefix}_{}_{n}_{t}", std::process::id())
}

/// A temp dir removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(unique("pgferry-test"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server URL `tests/run` exported. Missing is a failure, never a skip.
pub fn server_url() -> String {
    std::env::var("PGFERRY_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("PGFERRY_TEST_PG_URL is not set: run the tests with tests/run, which starts a throwaway PostgreSQL")
    })
}

/// The test cluster's server log (`tests/run` exports its path): what the server decided that
/// no client sees, such as an index build's parallel workers. Missing is a failure, never a skip.
pub fn server_log() -> String {
    let path = std::env::var("PGFERRY_TEST_PG_LOG").unwrap_or_else(|_| {
        panic!("PGFERRY_TEST_PG_LOG is not set: run the tests with tests/run, which starts a throwaway PostgreSQL")
    });
    String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_else(|e| panic!("read the server log {path}: {e}")))
        .into_owned()
}

/// A fresh database on the test cluster, dropped at the end of the test.
pub struct Pg {
    pub url: String,
    pub name: String,
    admin_url: String,
}

impl Pg {
    pub fn new() -> Pg {
        let admin_url = server_url();
        let name = unique("t").to_lowercase();
        let mut c = postgres::Client::connect(&admin_url, postgres::NoTls).expect("connect to the test cluster");
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let url = replace_db(&admin_url, &name);
        Pg { url, name, admin_url }
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test database")
    }

    pub fn exec(&self, sql: &str) {
        self.client().batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The first column of the first row, as text (NULL as "NULL").
    pub fn one(&self, sql: &str) -> String {
        let rows = self.client().simple_query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        for m in rows {
            if let postgres::SimpleQueryMessage::Row(r) = m {
                return r.get(0).unwrap_or("NULL").to_string();
            }
        }
        panic!("{sql}: no rows")
    }

    /// Every row, columns joined by '|', as text.
    pub fn rows(&self, sql: &str) -> Vec<String> {
        let rows = self.client().simple_query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_string()).collect::<Vec<_>>().join("|"))
                }
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, table: &str) -> i64 {
        self.one(&format!("SELECT count(*) FROM {table}")).parse().unwrap()
    }

    /// `pg_dump --schema-only` of the database without the run log (the password through
    /// PGPASSWORD, never on the command line), for before/after comparisons.
    pub fn schema_dump(&self) -> String {
        let rest = self.url.strip_prefix("postgres://").expect("a postgres:// URL");
        let (userinfo, host) = rest.split_once('@').expect("user:password@host");
        let (user, password) = userinfo.split_once(':').expect("user:password");
        let out = Command::new("pg_dump")
            .args(["--schema-only", "--no-owner", "-T", "_migration_runs*"])
            .arg(format!("postgres://{user}@{host}"))
            .env("PGPASSWORD", password)
            .output()
            .expect("run pg_dump");
        assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
        // pg_dump 15.14+ brackets the dump with a random \restrict key.
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// `url` with its database name replaced.
pub fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let slash = base.rfind('/').expect("URL has a path");
    let mut out = format!("{}/{db}", &base[..slash]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// One of our binaries, built by cargo for this test run.
pub fn bin(name: &str) -> PathBuf {
    let p = match name {
        "sqlite-dump" => env!("CARGO_BIN_EXE_sqlite-dump"),
        "pg-load" => env!("CARGO_BIN_EXE_pg-load"),
        "count-check" => env!("CARGO_BIN_EXE_count-check"),
        "pg-partition" => env!("CARGO_BIN_EXE_pg-partition"),
        "fs-export" => env!("CARGO_BIN_EXE_fs-export"),
        "backup-verify" => env!("CARGO_BIN_EXE_backup-verify"),
        other => panic!("unknown binary {other}"),
    };
    PathBuf::from(p)
}

/// A command under test: our binary with arguments, env and stdin.
pub struct Cmd {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    display: String,
}

pub fn cmd(name: &str) -> Cmd {
    let mut c = Command::new(bin(name));
    // Tests never inherit the developer's connection settings.
    for k in pgferry::pg::libpq_env_vars().chain(["DATABASE_URL"]) {
        c.env_remove(k);
    }
    // Nor the files libpq finds in a home directory (~/.pgpass, ~/.postgresql/…): a test that
    // wants them gives its own HOME.
    c.env("HOME", "/nonexistent/pgferry-test-home");
    // Nor their Google credentials or project (FIRESTORE_EMULATOR_HOST is the test's own).
    for k in [
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_OAUTH_ACCESS_TOKEN",
        "GOOGLE_CLOUD_PROJECT",
        "GCLOUD_PROJECT",
        "CLOUDSDK_CORE_PROJECT",
        "CLOUDSDK_CONFIG",
        "GCE_METADATA_HOST",
        "GOOGLE_CLOUD_QUOTA_PROJECT",
    ] {
        c.env_remove(k);
    }
    Cmd { cmd: c, stdin: None, display: name.to_string() }
}

impl Cmd {
    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Cmd {
        self.display.push(' ');
        self.display.push_str(&a.as_ref().to_string_lossy());
        self.cmd.arg(a);
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Cmd {
        for a in args {
            self = self.arg(a);
        }
        self
    }
    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Cmd {
        self.cmd.env(k, v);
        self
    }
    pub fn env_remove(mut self, k: &str) -> Cmd {
        self.cmd.env_remove(k);
        self
    }
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(data.into());
        self
    }
    pub fn stdin_file(mut self, path: &Path) -> Cmd {
        self.cmd.stdin(std::fs::File::open(path).unwrap());
        self
    }

    pub fn run(mut self) -> Run {
        if self.stdin.is_some() {
            self.cmd.stdin(Stdio::piped());
        }
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", self.display));
        // Stdin from a thread so a large input cannot deadlock against a full stdout pipe.
        let writer = self.stdin.take().map(|data| {
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            })
        });
        let out = child.wait_with_output().unwrap();
        if let Some(w) = writer {
            w.join().unwrap();
        }
        Run { display: self.display, out }
    }

    /// Runs it with stdin from `path` and returns its peak resident memory in kB with the run:
    /// its VmHWM, read every few milliseconds while it runs (the kernel's ru_maxrss would also
    /// count the test process it was spawned from).
    pub fn run_measured(mut self, path: &Path) -> (Run, i64) {
        use std::io::Read;
        self.cmd.stdin(std::fs::File::open(path).unwrap()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", self.display));
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out = drain(Box::new(child.stdout.take().unwrap()));
        let err = drain(Box::new(child.stderr.take().unwrap()));
        let status_file = format!("/proc/{}/status", child.id());
        let mut peak = 0;
        let status = loop {
            let hwm = std::fs::read_to_string(&status_file).ok().and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok())
            });
            peak = peak.max(hwm.unwrap_or(0));
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let out = Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() };
        (Run { display: self.display, out }, peak)
    }

    /// Starts it with stdin, stdout and stderr piped, for a test that feeds stdin as it goes.
    pub fn spawn(mut self) -> std::process::Child {
        self.cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        self.cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", self.display))
    }

    /// Runs and asserts the exit code, printing everything on failure.
    pub fn expect(self, code: i32) -> Run {
        let r = self.run();
        if r.code() != code {
            panic!("expected exit {code}, got {:?}\n{}", r.out.status, r.describe());
        }
        r
    }

    pub fn ok(self) -> Run {
        self.expect(0)
    }
}

pub struct Run {
    pub display: String,
    pub out: Output,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn describe(&self) -> String {
        let out = self.stdout();
        let shown: String = out.chars().take(4000).collect();
        format!(
            "command: {}\nstatus: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.display,
            self.out.status,
            shown,
            self.stderr()
        )
    }
    /// Asserts stderr contains every fragment.
    pub fn stderr_has(&self, fragments: &[&str]) -> &Run {
        let err = self.stderr();
        for f in fragments {
            assert!(err.contains(f), "stderr lacks {f:?}\n{}", self.describe());
        }
        self
    }
    /// Parses stdout as NDJSON lines.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout().lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// Creates a SQLite file from SQL with the sqlite3 CLI-free rusqlite API.
pub fn sqlite_db(path: &Path, sql: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The table of the large-stream tests (crash mid-load, plan runs).
pub const LOGS_TABLE: &str =
    "CREATE TABLE logs (id bigint PRIMARY KEY, level text NOT NULL, received_at timestamptz NOT NULL, n integer)";

/// Writes `head` (a plan's earlier steps) then `n` rows of [`LOGS_TABLE`], with the end
/// record when `end`.
pub fn write_log_stream(path: &Path, head: &str, n: u64, end: bool) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(head.as_bytes()).unwrap();
    for i in 1..=n {
        writeln!(f, r#"{{"id":{i},"level":"info","received_at":"2024-01-05T10:00:00Z","n":{}}}"#, i % 1000).unwrap();
    }
    if end {
        writeln!(f, r#"{{"$end":{{"rows":{n}}}}}"#).unwrap();
    }
}

/// `pg-load --db URL ARGS` fed the first `lines` lines of `file`, then nothing for 30 s, so
/// that it is surely mid-load; once its COPY into `logs` runs and has had data, pg-load
/// itself (not its feeder) is killed with SIGKILL.
pub fn kill_9_pg_load_mid_copy(pg: &Pg, file: &Path, lines: u64, args: &[&str]) {
    let feeder = format!("head -n {lines} '{}'; sleep 30", file.display());
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("({feeder}) | exec '{}' --db '{}' {}", bin("pg-load").display(), pg.url, quoted.join(" ")))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pid = None;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if pg
            .one("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY%logs%'")
            == "1"
        {
            let out = Command::new("pgrep")
                .args(["-f", &format!("pg-load --db {} {}", pg.url, args.join(" "))])
                .output()
                .unwrap();
            pid = String::from_utf8_lossy(&out.stdout).lines().next().map(|s| s.to_string());
            if pid.is_some() {
                break;
            }
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = pid.expect("pg-load started its COPY into logs");
    Command::new("kill").args(["-9", &pid]).status().unwrap();
    let _ = child.kill();
    let _ = child.wait();
}
