//! fs-export: Firestore collections, collection groups and documents as NDJSON, read-only.

use pgferry::cli::{self, Status};
use pgferry::firestore::{self as fs, Client, ConnectOptions, Doc, QueryOptions, QueryState, RowShape, Scope, Sink};
use pgferry::progress::{self, Progress, Unit};
use pgferry::stream::RowWriter;
use pgferry::{note, Error, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, Instant};

const USAGE: &str = "\
fs-export: write a Firestore collection, collection group or document as NDJSON, read-only.

Reads with runQuery in document-name order, page after page joined by cursors, every
page at one read time: the output is one consistent snapshot however long the export
runs, and memory stays constant whatever the collection's size. Values are converted
losslessly (docs/stream.md): int64 exactly, timestamps at Firestore's precision, bytes
in the bytes form, GeoPoints as {\"lat\",\"lng\"}, references as ids. Temporary failures
(429, 5xx, broken responses) are retried from the last document received, at the same
read time, without duplicating or skipping one. Only reads: never writes to Firestore.

Usage:
  fs-export [options] PATH
  fs-export [options] --group ID
  fs-export --count [options] (PATH | --group ID)

PATH is a collection (crm_customers, crm_customers/c1/orders) or, with an even number
of segments, one document (settings/console).

Options:
  --group ID            Export the collection group ID: every collection named ID, at
                        any depth (e.g. each customer's orders).
  --id-field NAME       Key of the document's id in each row [default: id].
  --parent-field NAME   Add the parent document's id under NAME (null for documents of
                        top-level collections in a group).
  --path-field NAME     Add the document's path (customers/c1/orders/o9) under NAME.
  --fields A,B          Only these top-level fields, in this order (read with a
                        projection; a document without one omits its key).
  --drop A,B            Leave out these fields (e.g. legacy ones).
  --ref-paths           Write references as paths (customers/c1) instead of ids.
  --read-time T         Read the snapshot at T (RFC 3339) [default: the read time of
                        the first page, printed on stderr]. Firestore keeps one hour
                        (7 days at whole minutes with point-in-time recovery).
  --resume-after P      Start after document P: its id (in a collection) or its path.
                        Use with the --read-time of the run being resumed.
  --count               Print the number of documents (a count aggregation) as one
                        JSON line instead of exporting them.
  --page-size N         Documents per runQuery page [default: 1000].
  --retries N           Attempts per request without progress before giving up
                        [default: 6].
  --backoff MS          First retry delay in milliseconds; doubled per attempt (at most
                        30 s) and jittered [default: 500].
  -q, --quiet           No progress line and no informational notes on stderr
                        (errors, warnings and the data on stdout stay).
  -h, --help            Show this help.
  -V, --version         Show the version.

Connection:
  --project ID          Google Cloud project [default: $GOOGLE_CLOUD_PROJECT, else
                        $GCLOUD_PROJECT, else $CLOUDSDK_CORE_PROJECT, else the key
                        file's project_id].
  --database ID         Firestore database [default: (default)].
  --token-command CMD   Run CMD with sh -c for an access token, e.g.
                        'gcloud auth print-access-token'; run again after 45 minutes
                        or when the token is refused.
  --token-env VAR       Read the access token from the environment variable VAR
                        [default: $GOOGLE_OAUTH_ACCESS_TOKEN when set].
  --credentials FILE    Service-account key file, which signs a short-lived JWT
                        locally (the key never leaves this machine), or a user's
                        login (authorized_user, refreshed at its token_uri)
                        [default: $GOOGLE_APPLICATION_CREDENTIALS, else gcloud's
                        application_default_credentials.json, else the metadata
                        server; docs/fs-export.md].
  --endpoint URL        API endpoint [default: https://firestore.googleapis.com];
                        plain http only to this machine.
  With FIRESTORE_EMULATOR_HOST=host:port set (and no --endpoint) the emulator is used
  over plain HTTP with its owner credentials. No token or key is ever printed.

Output:
  stdout: one JSON object per document: the id under --id-field, then --parent-field
  and --path-field when asked, then the fields (sorted by name, or in --fields order);
  then the end record {\"$end\":{\"rows\":N,\"source\":\"firestore\",\"project\":...,
  \"collection\"|\"group\"|\"document\":...,\"read_time\":...}}.
  stderr: the read time, a summary line; after a failure, the exact command that
  fetches the remaining documents (also with --quiet). When stderr is a terminal
  and stdout a file (not a pipe: in `fs-export ... | pg-load ...` pg-load shows
  progress), a progress line (documents, documents/s; no total), cleared at the end.

Exit status:
  0 done; 64 usage error (also: a --read-time Firestore no longer keeps); 65 a value
  that cannot be converted, or a field that clashes with the id key; 66 the document
  (or project/database) does not exist; 69 Firestore refused or is unreachable;
  74 I/O error; 75 gave up after retries (the message says how to resume).

Examples:
  fs-export crm_customers --drop negotiating,has_problem | pg-load crm_customers
  fs-export --group orders --parent-field customer_id | pg-load crm_orders
  fs-export settings/console | pg-load console_settings
  fs-export --count --group orders
";

const TOOL: &str = "fs-export";

struct Args {
    scope: Scope,
    shape: RowShape,
    read_time: Option<String>,
    resume_after: Option<String>,
    count: bool,
    page_size: u32,
    connect: ConnectOptions,
}

fn parse(args: &mut pico_args::Arguments) -> Result<Args> {
    let group = cli::opt(args, "--group")?;
    let connect = ConnectOptions::from_args(args)?;
    let read_time = match cli::opt(args, "--read-time")? {
        None => None,
        Some(t) => Some(fs::normalize_read_time(&t).ok_or_else(|| {
            Error::Usage(format!("--read-time '{t}' is not an RFC 3339 timestamp with a zone (2026-01-31T12:00:00Z)"))
        })?),
    };
    let mut a = Args {
        scope: Scope::Group(String::new()),
        shape: RowShape {
            fields: cli::list(args, "--fields")?,
            drop: cli::list(args, "--drop")?,
            ..RowShape::from_args(args, RowShape::default())?
        },
        read_time,
        resume_after: cli::opt(args, "--resume-after")?,
        count: args.contains("--count"),
        page_size: cli::number(args, "--page-size", "a page size from 1 to 10000", |n| (1..=10_000).contains(n))?
            .unwrap_or(1000),
        connect,
    };
    // A key twice in a row breaks the stream (docs/stream.md 2.3).
    let fields = &a.shape.fields;
    if let Some((_, f)) = fields.iter().enumerate().find(|(i, f)| fields[..*i].contains(f)) {
        return Err(Error::Usage(format!("--fields names '{f}' twice")));
    }
    let path = args.opt_free_from_str::<String>().map_err(cli::usage_err)?;
    a.scope = match (path, group) {
        (Some(p), None) => Scope::from_path(&p)?,
        (None, Some(g)) if !g.is_empty() && !g.contains('/') => Scope::Group(g),
        (None, Some(g)) => return Err(Error::Usage(format!("--group '{g}' is not a collection id"))),
        (Some(_), Some(_)) => return Err(Error::Usage("give PATH or --group ID, not both".into())),
        (None, None) => return Err(Error::Usage("missing argument PATH (or --group ID)".into())),
    };
    if a.shape.parent_field.is_some() {
        let top = match &a.scope {
            Scope::Collection(p) => !p.contains('/'),
            Scope::Document(p) => p.matches('/').count() == 1,
            Scope::Group(_) => false,
        };
        if top {
            return Err(Error::Usage(format!(
                "--parent-field: the documents of '{}' are in a top-level collection and have no parent",
                a.scope.name()
            )));
        }
    }
    if let Some(p) = &a.resume_after {
        a.resume_after = Some(a.scope.resume_path(p)?);
    }
    if a.count && a.resume_after.is_some() {
        return Err(Error::Usage("--count counts everything; it takes no --resume-after".into()));
    }
    Ok(a)
}

fn run(a: Args) -> Result<Status> {
    let mut client = Client::connect(&a.connect)?;
    if a.count {
        return count(&mut client, &a);
    }
    export(&mut client, &a)
}

fn count(client: &mut Client, a: &Args) -> Result<Status> {
    let (n, read_time) = client
        .count(&a.scope, a.read_time.as_deref())
        .map_err(|e| e.context(format!("count {} '{}'", a.scope.kind(), a.scope.name())))?;
    let line = json!({a.scope.kind(): a.scope.name(), "rows": n, "read_time": read_time});
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").map_err(|e| Error::io("write to stdout", e))?;
    Ok(Status::Ok)
}

/// Turns documents into rows; reports progress.
struct Rows<'a, W: Write> {
    a: &'a Args,
    w: RowWriter<W>,
    started: Instant,
    announced: bool,
    /// No total: counting first would cost a Firestore aggregation query per run.
    progress: Progress,
    row: Vec<(String, Value)>,
}

impl<W: Write> Rows<'_, W> {
    fn announce(&mut self, read_time: &str) {
        if !self.announced {
            self.announced = true;
            note!(
                TOOL,
                "reading {} '{}' at read time {read_time} (--read-time {read_time} reads this snapshot again)",
                self.a.scope.kind(),
                self.a.scope.name()
            );
        }
    }
}

impl<W: Write> Sink for Rows<'_, W> {
    fn document(&mut self, d: &Doc) -> Result<()> {
        self.announce(d.read_time);
        // Convert every value first, so a failure leaves no partial row behind.
        self.a.shape.row(d, &mut self.row)?;
        self.w.begin_row();
        for (k, v) in &self.row {
            self.w.key(k);
            self.w.value(v);
        }
        self.w.end_row()?;
        self.progress.update(self.w.rows());
        Ok(())
    }

    fn retrying(&mut self, cause: &str, attempt: u32, wait: Duration) {
        self.progress.clear();
        note!(TOOL, "{cause}; retry {attempt} in {:.1} s", wait.as_secs_f64());
    }
}

fn export(client: &mut Client, a: &Args) -> Result<Status> {
    let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut rows = Rows {
        a,
        w: RowWriter::new(out),
        started: Instant::now(),
        announced: false,
        progress: Progress::new(
            TOOL,
            a.scope.name(),
            Unit::Count("documents"),
            None,
            progress::terminal_for_producer(),
        ),
        row: Vec::new(),
    };
    let q = QueryOptions {
        page_size: a.page_size,
        read_time: a.read_time.clone(),
        start_after: a.resume_after.clone(),
        fields: if a.shape.fields.is_empty() { None } else { Some(a.shape.fields.clone()) },
    };
    let mut st = QueryState::default();
    let what = format!("export {} '{}'", a.scope.kind(), a.scope.name());
    if let Err(e) = client.export(&a.scope, &q, &mut st, &mut rows) {
        rows.progress.clear();
        // Every row received so far goes out, so the resume command continues exactly after it.
        let flushed = rows.w.flush();
        let e = e.context(&what);
        if matches!(e, Error::TempFail(_) | Error::Unavailable(_)) && flushed.is_ok() && !st.read_time_expired {
            if let Some(t) = &st.read_time {
                // Part of the error's report: --quiet keeps it.
                eprintln!(
                    "{TOOL}: {} documents were written; to fetch the rest of this snapshot, run: {}",
                    st.documents,
                    resume_command(t, st.last_path.as_deref())
                );
            }
        }
        return Err(e);
    }
    rows.progress.clear();
    let read_time = st.read_time.clone().unwrap_or_default();
    let n = rows.w.rows();
    if let Scope::Document(p) = &a.scope {
        if n == 0 {
            return Err(Error::NoInput(format!("document '{p}' does not exist (at read time {read_time})")));
        }
    }
    rows.announce(&read_time);
    let mut end: Vec<(&str, Value)> = vec![
        ("source", Value::from("firestore")),
        ("project", Value::from(client.project.as_str())),
        ("database", Value::from(client.database.as_str())),
        (a.scope.kind(), Value::from(a.scope.name())),
        ("read_time", Value::from(read_time.as_str())),
    ];
    if let Some(p) = &a.resume_after {
        end.push(("resumed_after", Value::from(p.as_str())));
    }
    let secs = rows.started.elapsed().as_secs_f64();
    rows.w.finish(&end)?;
    let retries = if st.retries > 0 { format!(", {} retries", st.retries) } else { String::new() };
    note!(
        TOOL,
        "{} '{}': {n} document{} in {secs:.1} s ({:.0}/s){retries}",
        a.scope.kind(),
        a.scope.name(),
        if n == 1 { "" } else { "s" },
        n as f64 / secs.max(1e-3)
    );
    if n == 0 && a.resume_after.is_none() {
        pgferry::warn!(
            TOOL,
            "no documents in {} '{}' of project '{}' (Firestore has no empty collections: check the name, --project and --database)",
            a.scope.kind(),
            a.scope.name(),
            client.project
        );
    }
    Ok(Status::Ok)
}

/// This run's command line with `--read-time T --resume-after LAST` in place of any earlier ones.
fn resume_command(read_time: &str, last: Option<&str>) -> String {
    let mut words = vec![TOOL.to_string()];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--read-time" || arg == "--resume-after" {
            args.next();
            continue;
        }
        if arg.starts_with("--read-time=") || arg.starts_with("--resume-after=") {
            continue;
        }
        words.push(cli::shell_word(&arg));
    }
    words.push(format!("--read-time {read_time}"));
    if let Some(p) = last {
        words.push(format!("--resume-after {}", cli::shell_word(p)));
    }
    words.join(" ")
}

fn main() {
    cli::main(TOOL, USAGE, parse, run)
}
