//! What count-check reports: one NDJSON line and a human summary per check, then the table
//! of every check and the verdict.

use crate::compare::Found;
use crate::lint;
use crate::side::Spec;
use crate::{Check, Mode, TOOL};
use pgferry::cli::Status;
use pgferry::{note, Error, Result};
use serde_json::{json, Map, Value};
use std::time::Instant;

pub struct Report {
    line: Value,
    ok: bool,
    error: Option<Error>,
    human: Vec<String>,
    row: [String; 10],
}

impl Report {
    /// A check that could not run: its line gives the error and its exit code, its row the
    /// code as the result (`row`'s last column is replaced).
    fn could_not_check(
        mut line: Map<String, Value>,
        title: &str,
        mut row: [String; 10],
        e: Error,
        started: Instant,
    ) -> Report {
        line.insert("ok".into(), json!(false));
        line.insert("error".into(), json!(e.message()));
        line.insert("exit".into(), json!(e.exit_code()));
        line.insert("seconds".into(), json!(secs(started)));
        let human = vec![format!("{title}: could not check: {}", e.message())];
        row[9] = format!("error ({})", e.exit_code());
        Report { line: Value::Object(line), ok: false, error: Some(e), human, row }
    }

    pub fn from_check(c: &Check, r: Result<Found>, started: Instant) -> Report {
        let mut line = Map::new();
        if let Some(s) = &c.step {
            line.insert("step".into(), json!(s));
        }
        line.insert("check".into(), json!(c.opts.mode.name()));
        line.insert("source".into(), json!(c.source_text));
        line.insert("dest".into(), json!(c.dest_text));
        let source = c.source_spec.clone().map(Ok).unwrap_or_else(|| Spec::parse(&c.source_text));
        let (snoun, sunit, dnoun, dunit) = match (source, Spec::parse(&c.dest_text)) {
            (Ok(s), Ok(d)) => (s.noun(), s.unit(), d.noun(), d.unit()),
            _ => ("Source", "rows", "Dest", "rows"),
        };
        let title = format!(
            "{}{} → {}",
            c.step.as_ref().map(|s| format!("step {s}: ")).unwrap_or_default(),
            c.source_text,
            c.dest_text
        );
        let mut human = vec![];
        let step = c.step.clone().unwrap_or_else(|| "-".into());
        let f = match r {
            Err(e) => {
                let dash = || "-".to_string();
                let row = [
                    step,
                    c.opts.mode.name().into(),
                    c.source_text.clone(),
                    c.dest_text.clone(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                ];
                return Report::could_not_check(line, &title, row, e, started);
            }
            Ok(f) => f,
        };
        let counts_ok = f.source_rows == f.dest_rows;
        let diffs = f.missing + f.extra + f.changed;
        let columns_bad = !f.unmatched.is_empty() || (c.opts.strict && !f.dest_only.is_empty());
        let ok = match c.opts.mode {
            Mode::Count => counts_ok,
            Mode::Full => counts_ok && diffs == 0 && !columns_bad,
            Mode::Sample(_) => diffs == 0 && !columns_bad,
        };
        line.insert("ok".into(), json!(ok));
        line.insert("source_rows".into(), json!(f.source_rows));
        line.insert("dest_rows".into(), json!(f.dest_rows));
        if c.opts.mode != Mode::Count {
            if let Some(seed) = f.seed {
                line.insert("seed".into(), json!(seed));
                line.insert("sampled".into(), json!(f.sampled.unwrap_or(0)));
            }
            line.insert("compared".into(), json!(f.compared));
            line.insert("same".into(), json!(f.same));
            line.insert("missing".into(), json!(f.missing));
            if c.opts.mode == Mode::Full {
                line.insert("extra".into(), json!(f.extra));
            }
            line.insert("changed".into(), json!(f.changed));
            line.insert("missing_keys".into(), json!(f.missing_keys));
            if c.opts.mode == Mode::Full {
                line.insert("extra_keys".into(), json!(f.extra_keys));
            }
            line.insert("changed_records".into(), json!(f.changed_records));
            line.insert("unmatched_columns".into(), json!(f.unmatched));
            line.insert("dest_only_columns".into(), json!(f.dest_only));
        }
        line.insert("seconds".into(), json!(secs(started)));
        if matches!(c.opts.mode, Mode::Sample(_)) {
            human.push(format!("{title}: {} {sunit} read from the {snoun} side", f.source_rows));
        } else {
            human.push(format!(
                "{title}: Source: {} {sunit} → {dnoun}: {} {dunit} {}",
                f.source_rows,
                f.dest_rows,
                mark(counts_ok)
            ));
        }
        match c.opts.mode {
            Mode::Count => {}
            Mode::Full => human.push(format!(
                "  full: {} compared, {} same, {} missing, {} extra, {} changed {}",
                f.compared,
                f.same,
                f.missing,
                f.extra,
                f.changed,
                mark(ok)
            )),
            Mode::Sample(_) => human.push(format!(
                "  sample of {} (seed {}): {} same, {} missing, {} changed {}",
                f.sampled.unwrap_or(0),
                f.seed.unwrap_or(0),
                f.same,
                f.missing,
                f.changed,
                mark(ok)
            )),
        }
        for k in &f.missing_keys {
            human.push(format!("  missing in the destination: {k}"));
        }
        for k in &f.extra_keys {
            human.push(format!("  extra in the destination: {k}"));
        }
        for r in &f.changed_records {
            let parts: Vec<String> = r["fields"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|d| {
                            let show = |side: &str| {
                                if d.get(format!("{side}_absent")).is_some() {
                                    "(absent)".to_string()
                                } else {
                                    d[side].to_string()
                                }
                            };
                            format!("{}: {} → {}", d["field"].as_str().unwrap_or("?"), show("source"), show("dest"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            human.push(format!("  changed {}: {}", r["key"], parts.join("; ")));
        }
        if !f.unmatched.is_empty() {
            human.push(format!(
                "  source fields with no destination column: {} (--map SRC=DST if renamed, --ignore if dropped on purpose)",
                f.unmatched.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if c.opts.strict && !f.dest_only.is_empty() {
            human.push(format!(
                "  destination columns the source lacks: {}",
                f.dest_only.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let n = |v: u64| if c.opts.mode == Mode::Count { "-".to_string() } else { v.to_string() };
        let row = [
            step,
            c.opts.mode.name().into(),
            c.source_text.clone(),
            c.dest_text.clone(),
            f.source_rows.to_string(),
            f.dest_rows.to_string(),
            n(f.missing),
            if c.opts.mode == Mode::Full { f.extra.to_string() } else { "-".into() },
            n(f.changed),
            mark(ok).into(),
        ];
        Report { line: Value::Object(line), ok, error: None, human, row }
    }

    pub fn from_lint(step: Option<String>, table: &str, r: Result<Vec<lint::Finding>>, started: Instant) -> Report {
        let mut line = Map::new();
        if let Some(s) = &step {
            line.insert("step".into(), json!(s));
        }
        line.insert("check".into(), json!("lint"));
        line.insert("dest".into(), json!(format!("pg:{table}")));
        let step_col = step.unwrap_or_else(|| "-".into());
        // The human table's row: only the CHANGED and RESULT columns differ between outcomes.
        let row = |changed: String, result: String| {
            let dash = || "-".to_string();
            [
                step_col.clone(),
                "lint".into(),
                dash(),
                format!("pg:{table}"),
                dash(),
                dash(),
                dash(),
                dash(),
                changed,
                result,
            ]
        };
        let mut human = vec![];
        match r {
            Err(e) => {
                Report::could_not_check(line, &format!("lint pg:{table}"), row("-".into(), "-".into()), e, started)
            }
            Ok(findings) => {
                let ok = findings.is_empty();
                line.insert("ok".into(), json!(ok));
                line.insert("findings".into(), Value::Array(findings.iter().map(|f| f.json()).collect()));
                line.insert("seconds".into(), json!(secs(started)));
                human.push(format!("lint pg:{table}: {} finding(s) {}", findings.len(), mark(ok)));
                for f in &findings {
                    human.push(format!("  {}", f.message));
                }
                let row = row(findings.len().to_string(), mark(ok).into());
                Report { line: Value::Object(line), ok, error: None, human, row }
            }
        }
    }
}

fn secs(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

/// Writes a report's NDJSON line (stdout) and its human lines (stderr) as soon as it is done.
pub fn emit(r: &Report) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", r.line).and_then(|_| out.flush()).map_err(|e| Error::io("write to stdout", e))?;
    for h in &r.human {
        note!(TOOL, "{h}");
    }
    Ok(())
}

/// The table of every check, and the exit status: an error that kept a check from running
/// wins over a difference (the comparison is not known).
pub fn finish(reports: &[Report]) -> Result<Status> {
    let head = ["STEP", "CHECK", "SOURCE", "DEST", "SOURCE N", "DEST N", "MISSING", "EXTRA", "CHANGED", "RESULT"];
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in reports {
        for (i, c) in r.row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let fmt = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        s
    };
    // --quiet leaves the verdict (the stdout records hold every check's detail).
    if !pgferry::progress::quiet() {
        eprintln!();
        eprintln!("{}", fmt(head.to_vec()));
        for r in reports {
            eprintln!("{}", fmt(r.row.iter().map(String::as_str).collect()));
        }
    }
    let failed = reports.iter().filter(|r| !r.ok && r.error.is_none()).count();
    let errors: Vec<&Error> = reports.iter().filter_map(|r| r.error.as_ref()).collect();
    let verdict = format!(
        "{} check(s): {} held, {} found differences, {} could not run",
        reports.len(),
        reports.iter().filter(|r| r.ok).count(),
        failed,
        errors.len()
    );
    if let Some(e) = errors.first() {
        let msg = if reports.len() == 1 {
            e.message().to_string()
        } else {
            format!("{} of {} checks could not run; the first: {}", errors.len(), reports.len(), e.message())
        };
        eprintln!("{verdict}");
        return Err(same_kind(e, msg));
    }
    if failed > 0 {
        return Err(Error::CheckFailed(verdict));
    }
    eprintln!("{verdict}");
    Ok(Status::Ok)
}

fn same_kind(e: &Error, m: String) -> Error {
    match e {
        Error::Usage(_) => Error::Usage(m),
        Error::Data(_) => Error::Data(m),
        Error::NoInput(_) => Error::NoInput(m),
        Error::Unavailable(_) => Error::Unavailable(m),
        Error::Io(_) => Error::Io(m),
        Error::TempFail(_) => Error::TempFail(m),
        Error::CommitUnknown(_) => Error::CommitUnknown(m),
        Error::NoPermission(_) => Error::NoPermission(m),
        Error::CheckFailed(_) => Error::CheckFailed(m),
        Error::Interrupted(_) => Error::Interrupted(m),
        Error::BrokenPipe => Error::BrokenPipe,
    }
}

/// ✓ when a check held, ✗ when it did not.
fn mark(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}
