//! libpq's conventions in every tool's connection (src/pg.rs), against the real cluster:
//! the password file, service files, client certificates, connect_timeout, application_name.

use crate::harness::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn stream(ids: &[i64]) -> String {
    let mut s: String = ids.iter().map(|i| format!("{{\"id\":{i}}}\n")).collect();
    s.push_str(&format!("{{\"$end\":{{\"rows\":{}}}}}\n", ids.len()));
    s
}

/// The parts of the test database's URL: (user, password, host, port, db).
fn parts(url: &str) -> (String, String, String, String, String) {
    let rest = url.strip_prefix("postgres://").unwrap();
    let (userpass, hostdb) = rest.split_once('@').unwrap();
    let (user, pass) = userpass.split_once(':').unwrap();
    let (hostport, db) = hostdb.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    (user.into(), pass.into(), host.into(), port.into(), db.into())
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn table(pg: &Pg) {
    pg.exec("CREATE TABLE t (id int PRIMARY KEY)");
}

#[test]
fn a_password_only_in_the_password_file_and_refused_when_others_can_read_it() {
    let pg = Pg::new();
    table(&pg);
    let (user, pass, host, port, db) = parts(&pg.url);
    let home = TempDir::new();
    let pgpass = home.path(".pgpass");
    // A line for another database first: the first matching line counts.
    write_mode(&pgpass, &format!("# test\n{host}:{port}:other:{user}:wrong\n*:{port}:{db}:{user}:{pass}\n"), 0o600);
    let url = format!("postgres://{user}@{host}:{port}/{db}");
    cmd("pg-load").args(["--db", &url, "t"]).env("HOME", &home.0).stdin(stream(&[1])).ok();
    // PGPASSFILE names another file; ~/.pgpass is not read then.
    let other = home.path("elsewhere/pass");
    write_mode(&other, &format!("{host}:{port}:{db}:{user}:{pass}\n"), 0o600);
    write_mode(&pgpass, "", 0o600);
    cmd("pg-load").args(["--db", &url, "t"]).env("HOME", &home.0).env("PGPASSFILE", &other).stdin(stream(&[2])).ok();
    // Group-readable: refused with libpq's warning, and the failure names where it looked.
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = cmd("pg-load").args(["--db", &url, "t"]).env("PGPASSFILE", &other).stdin(stream(&[3])).expect(69);
    r.stderr_has(&[
        "has group or world access; permissions should be u=rw (0600) or less",
        "tried: --db, PGPASSFILE, password file",
        "not used: group or other can read it",
    ]);
    assert!(!r.stderr().contains(&pass), "{}", r.describe());
    // No matching line: said so.
    write_mode(&other, &format!("{host}:{port}:{db}:someone_else:{pass}\n"), 0o600);
    let r = cmd("pg-load").args(["--db", &url, "t"]).env("PGPASSFILE", &other).stdin(stream(&[3])).expect(69);
    r.stderr_has(&["no line of", "matched"]);
    assert!(!r.stderr().contains(&pass), "{}", r.describe());
    assert_eq!(pg.one("SELECT string_agg(id::text, ',' ORDER BY id) FROM t"), "1,2");
}

#[test]
fn a_service_file_from_pgservicefile_the_url_and_the_home_directory() {
    let pg = Pg::new();
    table(&pg);
    let (user, pass, host, port, db) = parts(&pg.url);
    let home = TempDir::new();
    let section = format!("[ferry]\nhost={host}\nport={port}\ndbname={db}\nuser={user}\n");
    write_mode(&home.path(".pg_service.conf"), &format!("# services\n[other]\nport=1\n\n{section}"), 0o644);
    write_mode(&home.path(".pgpass"), &format!("{host}:{port}:{db}:{user}:{pass}\n"), 0o600);
    // PGSERVICE alone, the file in the home directory, the password from ~/.pgpass.
    cmd("pg-load").arg("t").env("HOME", &home.0).env("PGSERVICE", "ferry").stdin(stream(&[1])).ok();
    // service= in a URL, from PGSERVICEFILE; the URL's own settings beat the service's.
    let file = home.path("svc.conf");
    write_mode(&file, &format!("{section}password={pass}\nport=1\n"), 0o644);
    let r = cmd("pg-load")
        .args(["--db", &format!("postgres://:{port}/?service=ferry"), "t"])
        .env("PGSERVICEFILE", &file)
        .stdin(stream(&[2]))
        .ok();
    assert!(!r.stderr().contains(&pass));
    // A service nobody defines is a usage error that names the files looked in.
    let r =
        cmd("pg-load").args(["--db", "service=nosuch", "t"]).env("PGSERVICEFILE", &file).stdin(stream(&[3])).expect(64);
    r.stderr_has(&["definition of service 'nosuch' not found", "svc.conf"]);
    assert_eq!(pg.one("SELECT string_agg(id::text, ',' ORDER BY id) FROM t"), "1,2");
}

/// The role pg_hba.conf admits by client certificate only (scripts/lib/throwaway-pg.sh).
const CERT_ROLE: &str = "pgferry_cert";

#[test]
fn a_client_certificate_required_by_pg_hba_from_home_and_from_pgsslcert() {
    let pg = Pg::new();
    table(&pg);
    pg.exec(&format!(
        "DO $$ BEGIN CREATE ROLE {CERT_ROLE} LOGIN SUPERUSER; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    ));
    let (_, pass, _, port, db) = parts(&pg.url);
    let ca = std::env::var("PGFERRY_TEST_PG_CA").expect("tests/run exports PGFERRY_TEST_PG_CA");
    let dir = Path::new(&ca).parent().unwrap();
    let (crt, key) = (
        std::fs::read_to_string(dir.join("client.crt")).unwrap(),
        std::fs::read_to_string(dir.join("client.key")).unwrap(),
    );
    let home = TempDir::new();
    // ~/.postgresql: root.crt makes verify-full work without sslrootcert; postgresql.crt/.key are sent.
    write_mode(&home.path(".postgresql/root.crt"), &std::fs::read_to_string(&ca).unwrap(), 0o644);
    write_mode(&home.path(".postgresql/postgresql.crt"), &crt, 0o644);
    write_mode(&home.path(".postgresql/postgresql.key"), &key, 0o600);
    let url = format!("postgres://{CERT_ROLE}@localhost:{port}/{db}?sslmode=verify-full");
    cmd("pg-load").args(["--db", &url, "t"]).env("HOME", &home.0).stdin(stream(&[1])).ok();
    // PGSSLCERT/PGSSLKEY elsewhere; no home directory files at all.
    let other = TempDir::new();
    write_mode(&other.path("me.crt"), &crt, 0o644);
    write_mode(&other.path("me.key"), &key, 0o600);
    let root = format!("&sslrootcert={ca}");
    cmd("pg-load")
        .args(["--db", &format!("{url}{root}"), "t"])
        .env("PGSSLCERT", other.path("me.crt"))
        .env("PGSSLKEY", other.path("me.key"))
        .stdin(stream(&[2]))
        .ok();
    // sslcert/sslkey in the URL.
    let with_files = format!("{url}{root}&sslcert={}&sslkey={}", other.str("me.crt"), other.str("me.key"));
    cmd("pg-load").args(["--db", &with_files, "t"]).stdin(stream(&[3])).ok();
    // Without a certificate the server refuses (pg_hba.conf: cert), and says so.
    let r = cmd("pg-load").args(["--db", &format!("{url}{root}"), "t"]).stdin(stream(&[4])).expect(69);
    r.stderr_has(&["connection requires a valid client certificate"]);
    // A key others can read is refused before connecting, as libpq does.
    std::fs::set_permissions(other.path("me.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = cmd("pg-load").args(["--db", &with_files, "t"]).stdin(stream(&[4])).expect(64);
    r.stderr_has(&["has group or world access"]);
    // Another key than the certificate's: refused before connecting, naming both files.
    write_mode(&other.path("wrong.key"), &std::fs::read_to_string(dir.join("server.key")).unwrap(), 0o600);
    let mismatched = format!("{url}{root}&sslcert={}&sslkey={}", other.str("me.crt"), other.str("wrong.key"));
    let r = cmd("pg-load").args(["--db", &mismatched, "t"]).stdin(stream(&[4])).expect(64);
    r.stderr_has(&["do not belong together", "wrong.key"]);
    // verify-full with no root certificate anywhere: libpq's refusal, not a silent fallback.
    let r = cmd("pg-load").args(["--db", &url, "t"]).stdin(stream(&[4])).expect(64);
    r.stderr_has(&["root certificate file '/nonexistent/pgferry-test-home/.postgresql/root.crt' does not exist"]);
    assert!(!r.stderr().contains(&pass));
    assert_eq!(pg.one("SELECT string_agg(id::text, ',' ORDER BY id) FROM t"), "1,2,3");
}

#[test]
fn connect_timeout_in_the_url_beats_pgconnect_timeout() {
    // A server that accepts and never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let url = format!("postgres://u:pw@127.0.0.1:{port}/d?connect_timeout=2");
    let start = std::time::Instant::now();
    let r = cmd("pg-load").args(["--db", &url, "t"]).env("PGCONNECT_TIMEOUT", "60").stdin(stream(&[1])).expect(69);
    let took = start.elapsed().as_secs_f64();
    assert!((1.5..8.0).contains(&took), "took {took}s\n{}", r.describe());
    r.stderr_has(&["timeout expired after 2s", "tried: --db, password from the connection string (--db))"]);
    // PGCONNECT_TIMEOUT applies when the URL sets none.
    let start = std::time::Instant::now();
    let url = format!("postgres://u:pw@127.0.0.1:{port}/d");
    let r = cmd("pg-load").args(["--db", &url, "t"]).env("PGCONNECT_TIMEOUT", "3").stdin(stream(&[1])).expect(69);
    r.stderr_has(&["timeout expired after 3s", "tried: --db, PGCONNECT_TIMEOUT"]);
    let took = start.elapsed().as_secs_f64();
    assert!((2.5..8.0).contains(&took), "took {took}s");
    drop(l);
}

#[test]
fn application_name_is_the_tool_unless_set() {
    let pg = Pg::new();
    table(&pg);
    let watch = |extra: Option<(&str, &str)>, want: &str| {
        let mut c = std::process::Command::new(bin("pg-load"));
        c.args(["--db", &pg.url, "t"]).env_remove("PGAPPNAME").env_remove("DATABASE_URL");
        if let Some((k, v)) = extra {
            c.env(k, v);
        }
        let mut child = c.stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        // pg-load connects before it reads its input: its session is visible while stdin is open.
        let sql = format!(
            "SELECT string_agg(DISTINCT application_name, ',') FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
            pg.name
        );
        let mut seen = String::new();
        for _ in 0..100 {
            seen = pg.one(&sql);
            if seen != "NULL" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stream(&[]).as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(seen, want);
    };
    watch(None, "pg-load");
    watch(Some(("PGAPPNAME", "nightly-migration")), "nightly-migration");
}
