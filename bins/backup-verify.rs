//! backup-verify: SQLite backups with a manifest, proven good before anyone relies on them.

use pgferry::cli::{self, Status};
use pgferry::{Error, Result};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;

#[path = "backup-verify/check.rs"]
mod check;
#[path = "backup-verify/create.rs"]
mod create;
#[path = "backup-verify/files.rs"]
mod files;
#[path = "backup-verify/manifest.rs"]
mod manifest;
#[path = "backup-verify/pgdump.rs"]
mod pgdump;
#[path = "backup-verify/restore.rs"]
mod restore;
#[path = "backup-verify/rotate.rs"]
mod rotate;
#[path = "backup-verify/tree.rs"]
mod tree;

const USAGE: &str = "\
backup-verify: SQLite backups with a manifest, checked before anyone relies on them.

create takes a consistent snapshot of a live database with SQLite's online backup
API (what is still only in the WAL included; writers go on meanwhile), gzips it and
writes a manifest beside it: sha256 of the compressed file and of the database,
sizes, SQLite version, page size, source path, time, integrity_check and
foreign_key_check results, every table's row count and a content digest.
check proves a backup good; restore puts one back only after check passes.
pg-create does the same for PostgreSQL: pg_dump -Fc from one exported snapshot, with
every table's row count in that snapshot, sha256, and pg_restore as its check.
See docs/backup-verify.md.

Usage:
  backup-verify create DB --out DIR [options]
  backup-verify check BACKUP [--tmp DIR]
  backup-verify restore BACKUP --to DB [--force]
  backup-verify list DIR
  backup-verify pg-create --out DIR [--db URL] [--name STEM]

Options for create:
  --out DIR             Directory for the backups; created owner-only (0700) if missing.
  --name STEM           Backup names are STEM-YYYYMMDDTHHMMSSZ[-N] [default: DB's file
                        name without its extension].
  --level N             gzip level, 1 (fastest) to 9 (smallest) [default: 6].
  --keep N              After a good backup, remove this source's backups in DIR
                        except the newest N (and those the rules below keep).
  --keep-daily N        Keep the newest backup of each of the last N days (UTC).
  --keep-weekly N       ... of each of the last N ISO weeks.
  --keep-monthly N      ... of each of the last N months.
Options for pg-create (a PostgreSQL dump with the same manifest; check verifies it):
  --db URL              PostgreSQL connection [default: DATABASE_URL, else the libpq
                        variables PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE].
                        pg_dump gets it through its environment, never its command line.
  --out DIR, --name STEM  As for create (STEM defaults to the database's name).
Options for check:
  --tmp DIR             Where to decompress the database [default: the backup's directory].
Options for restore:
  --to DB               The database file to replace (or create).
  --force               Restore even though another process has DB open (its writes
                        after the restore go to the kept-aside copy, and are lost to DB).
  -q, --quiet           No progress line and no informational notes on stderr
                        (errors, warnings and the data on stdout stay).
  -h, --help            Show this help.
  -V, --version         Show the version.

Input:
  DB is a SQLite file, opened read-only by create. BACKUP is NAME.manifest.json,
  NAME.sqlite.gz (NAME.pgdump) or NAME (the pair must be side by side).

Output:
  Files: NAME.sqlite.gz (pg-create: NAME.pgdump) and NAME.manifest.json, both
  owner-only (0600); a backup
  exists once its manifest does. restore keeps the replaced database, with its -wal
  and -shm, as DB.before-restore-YYYYMMDDTHHMMSSZ.
  stdout (NDJSON): create, one line describing the backup; check, one line per check
  ({\"check\":...,\"ok\":...}) then {\"backup\":...,\"ok\":...,\"failed\":[...]};
  restore, check's lines then {\"restored\":...,\"previous\":...,\"ok\":...};
  list, one line per backup, newest first. stderr: a human summary; on a terminal,
  create's compression and check's decompression show a progress line (bytes,
  bytes/s, share done and ETA), cleared at the end.

Exit status:
  0 done, every check held; 1 a check failed (checksum, size, decompression,
  integrity_check, row count, content digest; for create, the database itself fails
  integrity_check, and the backup is still written; for pg-create, pg_restore cannot
  read the dump); 64 usage error; 65 a file tree holds what a restore could not put
  back (a symlink, device or FIFO, a name that is not UTF-8), or the source, a manifest
  or a backup file is a FIFO or device; 66 a database, manifest or backup file does not exist; 69 PostgreSQL
  unavailable or pg_dump missing or failing; 74 I/O error (a full disk included);
  75 restore refused because the database is in use, the source stayed locked, or a
  tree's file changed while it was backed up; 77 permission denied; 130 interrupted.
  restore changes nothing unless check passes.

Examples:
  backup-verify create /srv/app/app.sqlite --out /var/backups/app --keep-daily 7 --keep-weekly 4 --keep-monthly 6
  backup-verify check /var/backups/app/app-20250101T020000Z.sqlite.gz
  backup-verify restore /var/backups/app/app-20250101T020000Z --to /srv/app/app.sqlite
  backup-verify list /var/backups/app | jq -r '[.created_at, .backup, .integrity] | @tsv'
";

const TOOL: &str = "backup-verify";

/// One command line, parsed.
enum Command {
    Create { o: create::Options, keep: rotate::Keep },
    Check { backup: String, tmp: Option<PathBuf> },
    Restore(restore::Options),
    List { dir: String },
    PgCreate(pgdump::Options),
}

const COMMANDS: &str = "create, check, restore, list or pg-create";

fn parse(args: &mut pico_args::Arguments) -> Result<Command> {
    let sub = args.subcommand().map_err(cli::usage_err)?;
    let needs = |what: &str| Error::Usage(format!("{} needs {what}", sub.as_deref().unwrap_or_default()));
    Ok(match sub.as_deref() {
        Some("create") => {
            let out = cli::opt(args, "--out")?;
            let name = name_opt(args)?;
            let level = cli::number(args, "--level", "1 to 9", |n| (1..=9).contains(n))?.unwrap_or(6);
            let count = |args: &mut pico_args::Arguments, key| cli::number(args, key, "a positive number", |n| *n > 0);
            let keep = rotate::Keep {
                last: count(args, "--keep")?,
                daily: count(args, "--keep-daily")?,
                weekly: count(args, "--keep-weekly")?,
                monthly: count(args, "--keep-monthly")?,
            };
            let db = cli::positional(args, "DB")?;
            let out = PathBuf::from(out.ok_or_else(|| needs("--out DIR"))?);
            Command::Create { o: create::Options { db, out, name, level }, keep }
        }
        Some("check") => {
            let tmp = cli::opt(args, "--tmp")?.map(PathBuf::from);
            Command::Check { backup: cli::positional(args, "BACKUP")?, tmp }
        }
        Some("restore") => {
            let to = cli::opt(args, "--to")?;
            let force = args.contains("--force");
            let backup = cli::positional(args, "BACKUP")?;
            let to = PathBuf::from(to.ok_or_else(|| needs("--to DB"))?);
            Command::Restore(restore::Options { backup, to, force })
        }
        Some("list") => Command::List { dir: cli::positional(args, "DIR")? },
        Some("pg-create") => {
            let out = cli::opt(args, "--out")?;
            let db = cli::opt(args, "--db")?;
            let name = name_opt(args)?;
            let out = PathBuf::from(out.ok_or_else(|| needs("--out DIR"))?);
            Command::PgCreate(pgdump::Options { db, out, name })
        }
        Some(other) => return Err(Error::Usage(format!("unknown command '{other}' ({COMMANDS})"))),
        None => return Err(Error::Usage(format!("missing command ({COMMANDS})"))),
    })
}

/// `--name STEM`: a plain file name, so a backup cannot land outside its directory.
fn name_opt(args: &mut pico_args::Arguments) -> Result<Option<String>> {
    let name = cli::opt(args, "--name")?;
    if name.as_deref().is_some_and(|n| n.is_empty() || n.contains('/') || n.starts_with('.')) {
        return Err(Error::Usage("--name must be a plain file name that does not start with '.'".into()));
    }
    Ok(name)
}

fn print_line(out: &mut impl Write, v: &Value) -> Result<()> {
    writeln!(out, "{v}").map_err(|e| Error::io("write to stdout", e))
}

fn run(c: Command) -> Result<Status> {
    files::catch_interrupts();
    match c {
        Command::Create { o, keep } => run_create(o, keep),
        Command::Check { backup, tmp } => run_check(&backup, tmp.as_deref()),
        Command::Restore(o) => run_restore(o),
        Command::List { dir } => run_list(&dir),
        Command::PgCreate(o) => run_pg_create(o),
    }
}

fn run_create(o: create::Options, keep: rotate::Keep) -> Result<Status> {
    let started = std::time::Instant::now();
    refuse_special_file(&o.db)?;
    if tree::is_tree(&o.db) {
        let mut s = tree::create(&o.db, &o.out, o.name.as_deref(), o.level)?;
        if keep.any() {
            let source = s["source"].as_str().unwrap_or_default().to_string();
            let base = manifest::base_name(std::path::Path::new(s["manifest"].as_str().unwrap_or_default()));
            let removed = rotate::rotate(&o.out, &source, &base, keep)?;
            for r in &removed {
                pgferry::note!(TOOL, "removed old backup '{r}'");
            }
            s.insert("removed".into(), removed.into());
        }
        print_line(&mut std::io::stdout().lock(), &Value::Object(s.clone()))?;
        pgferry::note!(
            TOOL,
            "created {} ({} files, {} -> {}) in {:.1} s",
            s["backup"].as_str().unwrap_or(""),
            s["files"],
            files::human_bytes(s["bytes"].as_u64().unwrap_or(0)),
            files::human_bytes(s["compressed_bytes"].as_u64().unwrap_or(0)),
            started.elapsed().as_secs_f64()
        );
        return Ok(Status::Ok);
    }
    let c = create::create(&o)?;
    let mut summary = c.summary;
    let base = manifest::base_name(&c.manifest);
    if c.integrity_ok && keep.any() {
        let source = std::fs::canonicalize(&o.db).map(|p| files::show(&p)).unwrap_or_else(|_| o.db.clone());
        let removed = rotate::rotate(&o.out, &source, &base, keep)?;
        for r in &removed {
            pgferry::note!(TOOL, "removed old backup '{r}'");
        }
        summary.insert("removed".into(), removed.into());
    }
    print_line(&mut std::io::stdout().lock(), &Value::Object(summary.clone()))?;
    let human = format!(
        "{} ({} -> {}, {} tables, {} rows) in {:.1} s",
        files::show(&c.data),
        files::human_bytes(summary["bytes"].as_u64().unwrap_or(0)),
        files::human_bytes(summary["compressed_bytes"].as_u64().unwrap_or(0)),
        summary["tables"],
        summary["rows"],
        started.elapsed().as_secs_f64()
    );
    if !c.integrity_ok {
        let problems = summary.get("problems").map(|p| p.to_string()).unwrap_or_default();
        return Err(Error::CheckFailed(format!(
            "backup written, but the database '{}' FAILS its integrity check: {problems}; backup {human}",
            o.db
        )));
    }
    let fk = summary["foreign_key_violations"].as_u64().unwrap_or(0);
    if fk > 0 {
        pgferry::warn!(TOOL, "the database has {fk} foreign key violations (recorded in the manifest)");
    }
    pgferry::note!(TOOL, "created {human}; integrity ok");
    Ok(Status::Ok)
}

/// A FIFO, socket or device is neither a database nor a tree (and opening a FIFO would wait
/// for a writer forever).
fn refuse_special_file(source: &str) -> Result<()> {
    match std::fs::metadata(source) {
        Ok(m) if !m.is_file() && !m.is_dir() => Err(Error::Data(format!(
            "back up '{source}': is a FIFO, socket or device, not a SQLite file or a directory"
        ))),
        _ => Ok(()),
    }
}

fn run_check(backup: &str, tmp: Option<&std::path::Path>) -> Result<Status> {
    let is_tree = tree::is_tree_backup(backup);
    let report = if is_tree { tree::verify(backup, None)? } else { check::verify(backup, tmp, false)? };
    let mut out = std::io::stdout().lock();
    for l in &report.lines {
        print_line(&mut out, l)?;
    }
    print_line(&mut out, &report.summary_line())?;
    let human = if is_tree { tree::human(&report) } else { report.human() };
    if !report.ok() {
        return Err(Error::CheckFailed(human));
    }
    pgferry::note!(TOOL, "{}", human);
    Ok(Status::Ok)
}

fn run_restore(o: restore::Options) -> Result<Status> {
    let (backup, to) = (&o.backup, o.to.display());
    if tree::is_tree_backup(backup) {
        return restore_tree(backup, &o.to);
    }
    let mpath = manifest::manifest_path(backup);
    if mpath.exists() && manifest::read_text(&mpath)?.contains(pgdump::FORMAT) {
        return Err(Error::Usage(format!(
            "'{backup}' is a PostgreSQL dump; check it with 'backup-verify check', restore it with pg_restore"
        )));
    }
    let mut out = std::io::stdout().lock();
    match restore::restore(&o, TOOL)? {
        restore::Outcome::Refused(report) => {
            for l in &report.lines {
                print_line(&mut out, l)?;
            }
            print_line(&mut out, &report.summary_line())?;
            pgferry::note!(TOOL, "{}", report.human());
            Err(Error::CheckFailed(format!(
                "refusing to restore '{}' to '{to}': the backup failed its check; nothing was changed",
                report.base
            )))
        }
        restore::Outcome::Done(r) => {
            for l in &r.check.lines {
                print_line(&mut out, l)?;
            }
            print_line(&mut out, &Value::Object(r.summary.clone()))?;
            let kept = match &r.previous {
                Some(p) => format!("; the previous database is kept as '{}'", files::show(p)),
                None => String::new(),
            };
            if !r.content_ok {
                return Err(Error::CheckFailed(format!(
                    "restored '{to}' from '{}', but its content digest differs from the manifest's{kept}",
                    r.check.base
                )));
            }
            pgferry::note!(TOOL, "{}", r.check.human());
            pgferry::note!(TOOL, "restored '{to}' from '{}'; content digest matches the manifest{kept}", r.check.base);
            Ok(Status::Ok)
        }
    }
}

fn restore_tree(backup: &str, to: &std::path::Path) -> Result<Status> {
    let r = tree::restore(backup, to)?;
    let mut out = std::io::stdout().lock();
    for l in &r.report.lines {
        print_line(&mut out, l)?;
    }
    let to = to.display();
    if !r.report.ok() {
        print_line(&mut out, &r.report.summary_line())?;
        pgferry::note!(TOOL, "{}", tree::human(&r.report));
        return Err(Error::CheckFailed(format!(
            "refusing to restore '{}' to '{to}': the backup failed its check; nothing was changed",
            r.report.base
        )));
    }
    let previous = r.previous.as_deref().map(files::show);
    let line =
        serde_json::json!({"restored": to.to_string(), "backup": r.report.base, "previous": previous, "ok": true});
    print_line(&mut out, &line)?;
    let kept = previous.map(|p| format!("; the previous one is kept as '{p}'")).unwrap_or_default();
    let (base, n) = (&r.report.base, r.report.tables);
    pgferry::note!(TOOL, "restored '{to}' from '{base}': {n} files, every sha256 as in the manifest{kept}");
    Ok(Status::Ok)
}

fn run_pg_create(o: pgdump::Options) -> Result<Status> {
    let started = std::time::Instant::now();
    let (mpath, summary) = pgdump::create(&o)?;
    print_line(&mut std::io::stdout().lock(), &Value::Object(summary.clone()))?;
    let human = format!(
        "{} ({}, {} tables, {} rows) in {:.1} s",
        summary["backup"].as_str().unwrap_or(""),
        files::human_bytes(summary["bytes"].as_u64().unwrap_or(0)),
        summary["tables"],
        summary["rows"],
        started.elapsed().as_secs_f64()
    );
    if summary["integrity"] != "ok" {
        return Err(Error::CheckFailed(format!(
            "dumped {human}, but pg_restore cannot read it back: see '{}'",
            files::show(&mpath)
        )));
    }
    pgferry::note!(TOOL, "dumped {human}; pg_restore reads it back");
    Ok(Status::Ok)
}

fn run_list(dir: &str) -> Result<Status> {
    let p = PathBuf::from(dir);
    if !p.is_dir() {
        return Err(Error::NoInput(format!("list '{dir}': no such directory")));
    }
    let entries = rotate::scan(&p)?;
    let mut out = std::io::stdout().lock();
    for e in &entries {
        print_line(&mut out, &e.summary())?;
    }
    // Leftovers of runs that were killed: a data file without its manifest is no backup.
    for ent in std::fs::read_dir(&p).map_err(|e| Error::io(format!("list '{dir}'"), e))?.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        let orphan = [manifest::DATA_SUFFIX, tree::DATA_SUFFIX, pgdump::DATA_SUFFIX].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|base| {
                !name.starts_with('.') && !p.join(format!("{base}{}", manifest::MANIFEST_SUFFIX)).exists()
            })
        });
        let scratch = name.starts_with('.')
            && (name.ends_with(".snapshot") || name.ends_with(".partial") || name.contains(".check-"));
        if orphan || scratch {
            pgferry::note!(
                TOOL,
                "warning: '{name}' has no manifest: not a backup (a create that was interrupted, or is still running)"
            );
        }
    }
    pgferry::note!(TOOL, "{} backups in '{dir}'", entries.len());
    Ok(Status::Ok)
}

fn main() {
    cli::main(TOOL, USAGE, parse, run)
}
