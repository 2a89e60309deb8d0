//! `--report FILE`: one NDJSON line per table of the run (docs/loading.md, "The report"),
//! written at the end, whether the load committed, was rolled back or failed.

use crate::{Mode, TOOL};
use pgferry::cli::Status;
use pgferry::runlog::Outcome;
use pgferry::{Error, Result};
use serde_json::{json, Map, Value};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Stream bytes the row reader has consumed. One writer (the loading thread), so a plain
/// load and store: no locked instruction per line.
static CONSUMED: AtomicU64 = AtomicU64::new(0);

fn consumed() -> u64 {
    CONSUMED.load(Ordering::Relaxed)
}

fn count(n: usize) {
    CONSUMED.store(consumed() + n as u64, Ordering::Relaxed);
}

/// The input, counting the bytes taken from it.
pub struct Counted<B>(pub B);

impl<B: BufRead> Read for Counted<B> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        count(n);
        Ok(n)
    }
}

impl<B: BufRead> BufRead for Counted<B> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.0.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        count(amt);
        self.0.consume(amt)
    }
}

/// One table's time and stream bytes, from its start to [`Measure::end`].
pub struct Measure {
    started: Instant,
    bytes: u64,
}

/// What the report says of one table besides its run-log outcome.
#[derive(Debug, Default, Clone, Copy)]
pub struct Measured {
    pub seconds: f64,
    pub bytes: u64,
}

impl Measure {
    pub fn start() -> Measure {
        Measure { started: Instant::now(), bytes: consumed() }
    }

    pub fn end(&self) -> Measured {
        Measured { seconds: self.started.elapsed().as_secs_f64(), bytes: consumed() - self.bytes }
    }
}

/// Where the report goes, checked before the load starts (a report that cannot be written is
/// found before any row is loaded, not after the commit).
pub struct Report {
    dir: PathBuf,
    name: String,
    shown: String,
}

impl Report {
    pub fn at(path: &str) -> Result<Report> {
        let p = Path::new(path);
        let name = match p.file_name() {
            Some(n) if !p.is_dir() => n.to_string_lossy().into_owned(),
            _ => return Err(Error::Usage(format!("--report '{path}': give a file name, not a directory"))),
        };
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(Error::NoInput(format!("--report '{path}': directory '{}' does not exist", dir.display())));
        }
        // A report left from an earlier run goes now: one that a run which never got to its end
        // (kill -9) did not replace must not pass for that run's.
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(format!("--report '{path}': remove the earlier report"), e))
            }
            _ => {}
        }
        Ok(Report { dir, name, shown: path.to_string() })
    }

    /// Writes every table's line at once (all or nothing: a reader never sees half a report).
    fn write(&self, tables: &[Table], run_error: Option<&str>) -> Result<()> {
        let mut text = String::new();
        for t in tables {
            text.push_str(&t.line(run_error).to_string());
            text.push('\n');
        }
        pgferry::files::write_atomic(&self.dir, &self.name, text.as_bytes())
            .map(|_| ())
            .map_err(|e| e.context(format!("write the report '{}'", self.shown)))
    }
}

/// What became of one table of the run, gathered as the run goes.
#[derive(Debug, Clone)]
pub struct Done {
    pub outcome: Outcome,
    pub measured: Measured,
    /// The run log's state: success, failed, dry-run, interrupted, unknown. A run that ends
    /// before its run-log rows are written (no connection) has begun nothing: failed.
    pub state: &'static str,
    pub run: Option<i64>,
    /// The run log's error for this table.
    pub error: Option<String>,
}

impl Default for Done {
    fn default() -> Done {
        Done { outcome: Outcome::default(), measured: Measured::default(), state: "failed", run: None, error: None }
    }
}

impl Done {
    /// Notes what the run log is told of this table.
    pub fn recorded(&mut self, run: i64, state: &'static str, o: &Outcome, error: Option<&str>) {
        self.run = Some(run);
        self.state = state;
        self.outcome = o.clone();
        self.error = error.map(str::to_string);
    }
}

/// One table of the run, as the report says it.
pub struct Table<'a> {
    pub step: Option<&'a str>,
    pub table: &'a str,
    pub mode: Mode,
    pub done: &'a Done,
}

/// Writes the report (when asked for) and gives the run's result. A report that cannot be
/// written after a load that went well is an I/O error saying what the load did; after a
/// load that failed, a warning beside the load's own error.
pub fn finish(report: Option<&Report>, tables: &[Table], result: Result<Status>) -> Result<Status> {
    let Some(r) = report else { return result };
    // Tables the run never reached (no connection) carry the run's error.
    let run_error = result.as_ref().err().map(Error::message);
    match (r.write(tables, run_error), result) {
        (Ok(()), result) => result,
        (Err(e), Ok(_)) => {
            let what = if tables.iter().all(|t| t.done.state == "success") {
                "the load itself committed"
            } else {
                "the load itself was a dry run and rolled back"
            };
            Err(e.append(&format!("; {what}")))
        }
        (Err(e), Err(load)) => {
            pgferry::warn!(TOOL, "{}", e.message());
            Err(load)
        }
    }
}

impl Table<'_> {
    fn line(&self, run_error: Option<&str>) -> Value {
        let (o, d) = (&self.done.outcome, self.done);
        let mut m = Map::new();
        if let Some(step) = self.step {
            m.insert("step".into(), json!(step));
        }
        m.insert("table".into(), json!(self.table));
        m.insert("mode".into(), json!(self.mode.name()));
        m.insert("source".into(), json!(o.source));
        m.insert("source_rows".into(), json!(o.source_rows));
        m.insert("inserted".into(), json!(o.inserted_rows));
        m.insert("present".into(), json!(o.present_rows));
        // Counted only once the table's rows were all in; per mode as docs/loading.md says.
        let (updated, deleted, unchanged) = match (o.inserted_rows.and(o.present_rows), self.mode, o.merged) {
            (None, _, _) => (None, None, None),
            (Some(_), Mode::Mirror, Some(c)) => (Some(c.updated), Some(c.deleted), Some(c.unchanged)),
            (Some(_), Mode::Mirror, None) => (None, None, None),
            (Some(p), Mode::Insert, _) => (Some(0), Some(0), Some(p)),
            (Some(_), Mode::Upsert, Some(c)) => (Some(c.updated), Some(0), Some(c.unchanged)),
            // Into an empty table (nothing present): no merge.
            (Some(p), Mode::Upsert, None) => (Some(0), Some(0), Some(p)),
            (Some(_), Mode::Append, _) => (Some(0), Some(0), Some(0)),
            // TRUNCATE empties the table without counting what it removed.
            (Some(_), Mode::Replace, _) => (Some(0), None, Some(0)),
        };
        m.insert("updated".into(), json!(updated));
        m.insert("deleted".into(), json!(deleted));
        m.insert("unchanged".into(), json!(unchanged));
        // All or nothing: a row that cannot load fails the load; none is set aside.
        m.insert("rejected".into(), json!(0));
        m.insert("dest_rows".into(), json!(o.dest_rows));
        m.insert("seconds".into(), json!((d.measured.seconds * 1000.0).round() / 1000.0));
        m.insert("bytes".into(), json!(d.measured.bytes));
        m.insert("outcome".into(), json!(d.state));
        let committed = match d.state {
            "success" => Some(true),
            "unknown" => None,
            _ => Some(false),
        };
        m.insert("committed".into(), json!(committed));
        m.insert("run".into(), json!(d.run));
        if let Some(e) = d.error.as_deref().or(run_error) {
            m.insert("error".into(), json!(e));
        }
        Value::Object(m)
    }
}
