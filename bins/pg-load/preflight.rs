//! `pg-load --plan PLAN --preflight [--app-env FILE]`: before anything is stopped, checks that
//! the plan can load as the migration role (through the same connection code as the load), and
//! that the application's post-cutover role can use what was loaded. One line per check on
//! stdout, `ok` or `MISSING`, for scripts/preflight; reads only.

use pgferry::cli::Status;
use pgferry::pg::{self, Table};
use pgferry::plan::{Source, Step};
use pgferry::{Error, Result};
use postgres::Client;

/// The options of a preflight run.
pub struct Args {
    pub plan: String,
    pub db: Option<String>,
    pub runs_table: String,
    /// Where the application's post-cutover URL is: an env file (or, with `None`, this
    /// process's environment), and the variable that holds it.
    pub app: Option<(Option<String>, String)>,
    /// `--require-rls TABLES`: tables that must have row-level security enabled (the
    /// Supabase seed's required step for tables holding secrets).
    pub require_rls: Vec<String>,
}

pub fn parse(args: &mut pico_args::Arguments) -> Result<Args> {
    args.contains("--preflight");
    let plan =
        pgferry::cli::opt(args, "--plan")?.ok_or_else(|| Error::Usage("--preflight needs --plan PLAN".into()))?;
    let file = pgferry::cli::opt(args, "--app-env")?;
    let var = pgferry::cli::opt(args, "--app-url-var")?;
    let app = match (file, var) {
        (None, None) => None,
        (f, v) => Some((f, v.unwrap_or_else(|| "DATABASE_URL".into()))),
    };
    Ok(Args {
        plan,
        db: pgferry::cli::opt(args, "--db")?,
        runs_table: pgferry::cli::opt(args, "--runs-table")?.unwrap_or_else(|| "_migration_runs".into()),
        app,
        require_rls: pgferry::cli::list(args, "--require-rls")?,
    })
}

/// Prints the checks; a check failed (exit 1) when any is missing.
pub fn run(a: Args) -> Result<Status> {
    let steps = pgferry::plan::read(&a.plan)?;
    let mut out = Report::default();
    for s in &steps {
        source_check(&mut out, s);
    }
    uncovered_tables(&steps);
    match pg::Target::resolve(a.db.as_deref()).and_then(|t| t.connect().map(|c| (t, c))) {
        Err(e) => out.missing(format!("PostgreSQL reachable (DATABASE_URL or PG* variables): {}", e.message())),
        Ok((_, mut c)) => {
            let who = describe(&mut c)?;
            out.ok(format!("PostgreSQL {who}"));
            runs_table_check(&mut out, &mut c, &a.runs_table)?;
            for s in &steps {
                table_checks(&mut out, &mut c, s, Role::Migration)?;
                json_rows_check(&mut out, &mut c, s)?;
            }
            for t in &a.require_rls {
                rls_check(&mut out, &mut c, t)?;
            }
        }
    }
    if let Some((file, var)) = &a.app {
        let what = match file {
            Some(f) => format!("the app's {var} in {f}"),
            None => format!("the app's {var} (environment)"),
        };
        // A malformed string's parse error may quote it, password and all: say only that.
        let target = app_url(file, var).and_then(|u| {
            pg::Target::resolve(Some(&u))
                .map_err(|_| Error::Usage("not a PostgreSQL connection string (postgres://… or key=value)".into()))
        });
        match target.and_then(|t| t.connect()) {
            Err(e) => out.missing(format!("{what} connects: {}", e.message())),
            Ok(mut c) => {
                out.ok(format!("{what} connects: {}", describe(&mut c)?));
                for s in &steps {
                    table_checks(&mut out, &mut c, s, Role::App)?;
                }
            }
        }
    }
    match out.missing {
        0 => Ok(Status::Ok),
        n => Err(Error::CheckFailed(format!("preflight: {n} check(s) missing"))),
    }
}

#[derive(Default)]
struct Report {
    missing: usize,
}

impl Report {
    fn ok(&mut self, what: String) {
        println!("ok       {what}");
    }
    fn missing(&mut self, what: String) {
        println!("MISSING  {what}");
        self.missing += 1;
    }
    fn check(&mut self, held: bool, what: String) {
        if held {
            self.ok(what)
        } else {
            self.missing(what)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The role that runs pg-load: what the step's mode needs.
    Migration,
    /// The application's role after cutover: read, write, and its sequences.
    App,
}

fn describe(c: &mut Client) -> Result<String> {
    let r = c
        .query_one(
            "SELECT current_setting('server_version'), current_user::text, current_database()::text, \
             coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
            &[],
        )
        .map_err(|e| pg::pg_error("ask the server who we are", e))?;
    let tls = if r.get::<_, bool>(3) { "on" } else { "off" };
    Ok(format!(
        "{} reachable as {} on database {}, TLS {tls}",
        r.get::<_, String>(0),
        r.get::<_, String>(1),
        r.get::<_, String>(2)
    ))
}

/// The source exists (SQLite table, ndjson file); Firestore is read for real by the dry run.
fn source_check(out: &mut Report, s: &Step) {
    let step = &s.step;
    match &s.src {
        // Opened and described as sqlite-dump will: a view, a hot journal, a log it cannot
        // read through, an unreadable file are named as sqlite-dump would name them.
        Source::Sqlite { db, table } => {
            match pgferry::sqlite::open_read_only(db).and_then(|c| pgferry::sqlite::table_info(&c, table)) {
                Ok(_) => out.ok(format!("step {step}: table {table} in {db}")),
                Err(e) => out.missing(format!("step {step}: table {table} in {db}: {}", e.message())),
            }
        }
        Source::Ndjson(f) => out.check(std::fs::File::open(f).is_ok(), format!("step {step}: file {f}")),
        Source::Json(p) => match pgferry::jsonsrc::files(p) {
            Ok(f) => out.ok(format!("step {step}: json {p} ({} file{})", f.len(), if f.len() == 1 { "" } else { "s" })),
            Err(e) => out.missing(format!("step {step}: json {p}: {}", e.message())),
        },
        _ => {}
    }
}

/// Lists the tables of the plan's SQLite databases that no step copies (Prisma's join tables,
/// a workflow's control table, a migration runner's own table): a `note` line each, not a
/// failure, since leaving one out may be the plan's intent.
fn uncovered_tables(steps: &[Step]) {
    let mut dbs: Vec<&str> = steps.iter().filter_map(|s| s.sqlite()).collect();
    dbs.dedup();
    for db in dbs.iter().copied().collect::<std::collections::BTreeSet<_>>() {
        let Ok(tables) = pgferry::sqlite::open_read_only(db).and_then(|c| pgferry::sqlite::list_tables(&c)) else {
            continue; // reported by source_check
        };
        for t in tables {
            let covered = steps.iter().any(
                |s| matches!(&s.src, Source::Sqlite { db: d, table } if d == db && table.eq_ignore_ascii_case(&t)),
            );
            if !covered {
                println!("note     table {t} in {db}: no step of the plan copies it");
            }
        }
    }
}

/// Row-level security is enabled on `table` (`--require-rls`).
fn rls_check(out: &mut Report, c: &mut Client, table: &str) -> Result<()> {
    let t = match Table::resolve(c, table) {
        Ok(t) => t,
        Err(Error::NoInput(_)) => {
            out.missing(format!("table {table} exists (--require-rls)"));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let on: bool = c
        .query_one("SELECT relrowsecurity FROM pg_class WHERE oid = $1", &[&t.oid])
        .map_err(|e| pg::pg_error(format!("read the row-level security of '{table}'"), e))?
        .get(0);
    out.check(
        on,
        format!(
            "row-level security enabled on {table}{}",
            if on { "" } else { &" (ALTER TABLE … ENABLE ROW LEVEL SECURITY before the schema is exposed)" }
        ),
    );
    Ok(())
}

/// How many of a json: source's first rows preflight converts for their target.
const JSON_SAMPLE: usize = 50;

/// A json: step's program runs on the app's files (it compiles, and does not fail on the
/// first files), and its first rows convert for the target's columns with the step's load
/// options (keys that match no column, a US date without --date-format, '' in an integer).
fn json_rows_check(out: &mut Report, c: &mut Client, s: &Step) -> Result<()> {
    let (step, tn) = (&s.step, &s.target);
    if pgferry::jsonsrc::files(match &s.src {
        Source::Json(p) => p,
        _ => return Ok(()),
    })
    .is_err()
    {
        return Ok(()); // already reported missing
    }
    let argv = s.producer();
    let mut child = match std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(ch) => ch,
        Err(e) => {
            out.missing(format!("step {step}: run jq for its json source: {e}"));
            return Ok(());
        }
    };
    let mut rows: Vec<serde_json::Map<String, serde_json::Value>> = Vec::new();
    let reader = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut ended = false;
    for line in std::io::BufRead::lines(reader) {
        let Ok(line) = line else { break };
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(m)) if m.contains_key("$end") => ended = true,
            Ok(serde_json::Value::Object(m)) if rows.len() < JSON_SAMPLE => rows.push(m),
            Ok(serde_json::Value::Object(_)) => break,
            _ => {
                out.missing(format!("step {step}: its jq program yields something other than an object: {line:.80}"));
                let _ = child.kill();
                let _ = child.wait();
                return Ok(());
            }
        }
    }
    let _ = child.kill();
    let status = child.wait().ok();
    if !ended && rows.len() < JSON_SAMPLE {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let why = err.lines().next().unwrap_or("").trim().to_string();
        let code = status.and_then(|s| s.code()).map(|c| format!(" (jq exited {c})")).unwrap_or_default();
        out.missing(format!("step {step}: its jq program fails on the files{code}: {why}"));
        return Ok(());
    }
    let t = match Table::resolve(c, tn) {
        Ok(t) => t,
        Err(_) => return Ok(()), // reported by table_checks
    };
    let cols = pgferry::catalog::table_columns(c, t.oid, &t.qualified())?;
    let mut load = pico_args::Arguments::from_vec(s.load_args().iter().map(Into::into).collect());
    let opts = pgferry::convert::Options::from_args(&mut load, Default::default())?;
    let ignore_unknown = s.load_args().iter().any(|a| a == "--ignore-unknown");
    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    for (i, row) in rows.iter().enumerate() {
        let unknown: Vec<&String> = row
            .keys()
            .filter(|k| !ignore_unknown && !names.contains(&opts.renamed(k)))
            .filter(|k| !opts.copy_key.iter().any(|(src, _)| src == *k))
            .collect();
        if !unknown.is_empty() {
            let likely: Vec<String> = unknown
                .iter()
                .map(|k| format!("{k}={}", crate::rows::likely_column(k, &names).unwrap_or("COLUMN")))
                .collect();
            let keys: Vec<&str> = unknown.iter().map(|k| k.as_str()).collect();
            out.missing(format!(
                "step {step}: row {} of its jq program: keys that match no column of {tn}: {} (pass --rename {} in its load)",
                i + 1,
                keys.join(", "),
                likely.join(",")
            ));
            return Ok(());
        }
        for (k, v) in row {
            let name = opts.renamed(k);
            let Some(col) = cols.iter().find(|c| c.name == name) else { continue };
            if let Err(cause) = pgferry::convert::convert(v, &col.kind, &opts.for_column(&col.name)) {
                out.missing(format!(
                    "step {step}: row {} of its jq program, column '{}': {}: {cause} (column type {})",
                    i + 1,
                    col.name,
                    pgferry::stream::value_snippet(v),
                    col.type_name
                ));
                return Ok(());
            }
        }
    }
    out.ok(format!("step {step}: its jq program runs; the first {} row(s) convert for {tn}", rows.len()));
    Ok(())
}

fn runs_table_check(out: &mut Report, c: &mut Client, runs: &str) -> Result<()> {
    let r = c
        .query_one(
            "SELECT CASE WHEN to_regclass($1) IS NULL THEN has_schema_privilege(current_schema(), 'CREATE') \
             ELSE has_table_privilege(to_regclass($1), 'INSERT') AND has_table_privilege(to_regclass($1), 'UPDATE') END",
            &[&runs],
        )
        .map_err(|e| pg::pg_error(format!("look at the run log '{runs}'"), e))?;
    out.check(r.get::<_, Option<bool>>(0).unwrap_or(false), format!("run log {runs} writable (or creatable)"));
    Ok(())
}

/// The mode a step's load runs in, from its `load` arguments.
fn mode(s: &Step) -> String {
    let l = s.load_args();
    let pos = l.iter().position(|a| a == "--mode");
    let eq = l.iter().find_map(|a| a.strip_prefix("--mode=").map(str::to_string));
    eq.or_else(|| pos.and_then(|i| l.get(i + 1).cloned())).unwrap_or_else(|| "insert".into())
}

fn table_checks(out: &mut Report, c: &mut Client, s: &Step, role: Role) -> Result<()> {
    let step = &s.step;
    let t = match Table::resolve(c, &s.target) {
        Ok(t) => t,
        Err(Error::NoInput(_)) => {
            out.missing(format!("step {step}: table {} exists{}", s.target, for_app(role)));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let r = c
        .query_one(
            "SELECT current_user::text, \
               has_schema_privilege(c.relnamespace, 'USAGE'), has_schema_privilege(c.relnamespace, 'CREATE'), \
               pg_has_role(c.relowner, 'USAGE'), \
               has_table_privilege(c.oid, 'SELECT'), has_table_privilege(c.oid, 'INSERT'), \
               has_table_privilege(c.oid, 'UPDATE'), has_table_privilege(c.oid, 'DELETE'), \
               has_table_privilege(c.oid, 'TRUNCATE'), \
               c.relrowsecurity AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE')) \
                 AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user), \
               EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid), \
               has_database_privilege(current_database(), 'TEMPORARY') \
             FROM pg_class c WHERE c.oid = $1",
            &[&t.oid],
        )
        .map_err(|e| pg::pg_error(format!("read the privileges on '{}'", s.target), e))?;
    let b = |i: usize| r.get::<_, bool>(i);
    let (user, usage, create, owner) = (r.get::<_, String>(0), b(1), b(2), b(3));
    let (select, insert, update, delete, truncate, rls, policies, temp) =
        (b(4), b(5), b(6), b(7), b(8), b(9), b(10), b(11));
    let tn = &s.target;
    let on = |what: &str| format!("step {step}: {what} on {tn} as {user}");
    match role {
        Role::Migration => {
            out.check(usage && select && insert, on("SELECT and INSERT (COPY)"));
            out.check(update || delete || truncate || owner, on("LOCK (needs UPDATE, DELETE or TRUNCATE)"));
            match mode(s).as_str() {
                "upsert" => out.check(update, on("UPDATE (--mode upsert)")),
                "mirror" => out.check(update && delete, on("UPDATE and DELETE (--mode mirror)")),
                "replace" => out.check(truncate, on("TRUNCATE (--mode replace)")),
                _ => {}
            }
            out.check(temp, format!("step {step}: TEMPORARY on the database as {user} (a re-run stages rows)"));
            if rls {
                out.missing(format!(
                    "step {step}: {tn} has row-level security enabled, which COPY cannot load as {user} \
                     (load as its owner or a BYPASSRLS role, or enable RLS after the migration)"
                ));
            }
            if s.partitioned.is_some() {
                out.check(owner && create, format!("step {step}: create partitions of {tn} (owner, CREATE on schema)"));
            }
            if s.load_args().iter().any(|a| a == "--defer-fks") {
                out.check(owner, format!("step {step}: drop and re-add foreign keys of {tn} (owner)"));
            }
        }
        Role::App => {
            out.check(
                usage && select && insert && update && delete,
                on("SELECT, INSERT, UPDATE and DELETE for the app"),
            );
            if rls && !policies {
                out.missing(format!(
                    "step {step}: {tn} has row-level security enabled and no policy: the app's role {user} sees no rows"
                ));
            }
        }
    }
    sequence_checks(out, c, s, &t, role, &user)
}

/// The sequences behind the table's serial/identity columns: pg-load moves them (UPDATE),
/// the app draws from them (USAGE).
fn sequence_checks(out: &mut Report, c: &mut Client, s: &Step, t: &Table, role: Role, user: &str) -> Result<()> {
    let rows = c
        .query(
            // The list form is true when any one is held: what nextval needs (USAGE or UPDATE);
            // pg-load's setval reads the sequence too (SELECT and UPDATE).
            "SELECT q.seq, CASE WHEN $2 THEN has_sequence_privilege(q.seq, 'USAGE, UPDATE') \
               ELSE has_sequence_privilege(q.seq, 'SELECT') AND has_sequence_privilege(q.seq, 'UPDATE') END FROM ( \
               SELECT pg_get_serial_sequence($1, a.attname) AS seq FROM pg_attribute a \
               WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped) q \
             WHERE q.seq IS NOT NULL ORDER BY 1",
            &[&t.qualified(), &(role == Role::App)],
        )
        .map_err(|e| pg::pg_error(format!("read the sequences of '{}'", s.target), e))?;
    for r in rows {
        let (seq, held) = (r.get::<_, String>(0), r.get::<_, bool>(1));
        let what = match role {
            Role::Migration => "SELECT and UPDATE (pg-load moves it past the loaded ids)",
            Role::App => "USAGE (the app draws new ids)",
        };
        out.check(held, format!("step {}: {what} on sequence {seq} as {user}", s.step));
    }
    Ok(())
}

fn for_app(role: Role) -> &'static str {
    match role {
        Role::App => " for the app",
        Role::Migration => "",
    }
}

/// The value of `var` in a KEY=VALUE env file (`export` and quotes allowed), or in the
/// environment; never printed.
fn app_url(file: &Option<String>, var: &str) -> Result<String> {
    let Some(file) = file else {
        return std::env::var(var).map_err(|_| Error::NoInput(format!("{var} is not set")));
    };
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(format!("read '{file}'"), e))?;
    env_value(&text, var).ok_or_else(|| Error::NoInput(format!("no {var}= line in '{file}'")))
}

fn env_value(text: &str, var: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let l = l.trim();
        let l = l.strip_prefix("export ").map(str::trim_start).unwrap_or(l);
        let v = l.strip_prefix(var)?.strip_prefix('=')?.trim();
        let unq = |q: char| v.strip_prefix(q).and_then(|x| x.strip_suffix(q));
        Some(unq('\'').or_else(|| unq('"')).unwrap_or(v).to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_as_cutover_writes_them() {
        let text = "# app\nAPP_STORE=postgres\nexport DATABASE_URL='postgres://a:b@h/d'\nDATABASE_URL_RO=x\n";
        assert_eq!(env_value(text, "DATABASE_URL").as_deref(), Some("postgres://a:b@h/d"));
        assert_eq!(env_value("DATABASE_URL=\"x y\"", "DATABASE_URL").as_deref(), Some("x y"));
        assert_eq!(env_value("A=1\nA=2", "A").as_deref(), Some("2"));
        assert_eq!(env_value("DATABASE_URL_RO=x", "DATABASE_URL"), None);
    }
}
