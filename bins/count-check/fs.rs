//! Firestore sides, through fs-export's client and value conversion (`pgferry::firestore`):
//! documents read in name order at one read time, each turned into the row fs-export writes
//! (the id under `--id-field`, then `--parent-field`/`--path-field`, then the fields).

use crate::side::{Ctx, FsKind, Job, Out, RowNorm, Spec, Stop};
use pgferry::cli;
use pgferry::firestore::{Client, ConnectOptions, Doc, QueryOptions, QueryState, RowShape, Scope, Sink};
use pgferry::{Error, Result};
use serde_json::Value;

/// How Firestore documents become records, and how to reach them: fs-export's options.
#[derive(Debug, Clone, Default)]
pub struct FsOptions {
    pub shape: RowShape,
    pub connect: ConnectOptions,
}

/// The Firestore options of the command line (as fs-export's).
pub fn parse_args(args: &mut pico_args::Arguments) -> Result<FsOptions> {
    Ok(FsOptions { shape: RowShape::from_args(args, RowShape::default())?, connect: ConnectOptions::from_args(args)? })
}

/// A plan step's fs-export arguments that shape its rows; `--drop` fields are left out as
/// fs-export leaves them out, and not compared.
pub fn step_args(export: &[String], o: &mut FsOptions, ignore: &mut Vec<String>) -> Result<()> {
    let mut args = pico_args::Arguments::from_vec(export.iter().map(Into::into).collect());
    o.shape = RowShape::from_args(&mut args, o.shape.clone())?;
    let drop = cli::list(&mut args, "--drop")?;
    o.shape.drop.extend(drop.iter().cloned());
    ignore.extend(drop);
    // The rest (--page-size, --retries, --fields …) does not change what a row holds, or
    // cannot be mirrored here; it is left alone.
    Ok(())
}

fn scope(spec: &Spec) -> Result<Scope> {
    let Spec::Firestore { scope, kind } = spec else { unreachable!("a Firestore side") };
    Ok(match kind {
        FsKind::Group if !scope.is_empty() && !scope.contains('/') => Scope::Group(scope.clone()),
        FsKind::Group => return Err(Error::Usage(format!("firestore-group:{scope}: a group is a collection id"))),
        FsKind::Collection => match Scope::from_path(scope)? {
            s @ Scope::Collection(_) => s,
            _ => return Err(Error::Usage(format!("firestore:{scope} is a document path; use firestore-doc:{scope}"))),
        },
        FsKind::Document => match Scope::from_path(scope)? {
            s @ Scope::Document(_) => s,
            _ => {
                return Err(Error::Usage(format!("firestore-doc:{scope} is a collection path; use firestore:{scope}")))
            }
        },
    })
}

/// The number of documents, by a count aggregation.
pub fn count(spec: &Spec, ctx: &Ctx) -> Result<u64> {
    let scope = scope(spec)?;
    let mut client = Client::connect(&ctx.fs.connect)?;
    let (n, _) =
        client.count(&scope, None).map_err(|e| e.context(format!("count {} '{}'", scope.kind(), scope.name())))?;
    if let (Scope::Document(p), 0) = (&scope, n) {
        return Err(Error::NoInput(format!("document '{p}' does not exist")));
    }
    Ok(n)
}

/// Reads every document in name order, as records.
pub fn read(job: &Job, out: &mut Out) -> std::result::Result<(), Stop> {
    let scope = match scope(&job.spec) {
        Ok(s) => s,
        Err(e) => return Err(out.fail(e)),
    };
    let mut client = match Client::connect(&job.ctx.fs.connect) {
        Ok(c) => c,
        Err(e) => return Err(out.fail(e)),
    };
    let q = QueryOptions { page_size: 1000, read_time: None, start_after: None, fields: None };
    let mut st = QueryState::default();
    let spool = if job.sort {
        match crate::spool::Spool::new() {
            Ok(s) => Some(s),
            Err(e) => return Err(out.fail(e)),
        }
    } else {
        None
    };
    let mut sink = Docs { job, out, rows: RowNorm::default(), stopped: false, spool };
    let r = client.export(&scope, &q, &mut st, &mut sink);
    let stopped = sink.stopped;
    let spool = sink.spool.take();
    match r {
        Ok(()) if matches!(scope, Scope::Document(_)) && st.documents == 0 => {
            let p = scope.name().to_string();
            Err(out.fail(Error::NoInput(format!("document '{p}' does not exist"))))
        }
        Ok(()) => match spool {
            Some(sp) => {
                crate::side::drain_spool(job, out, sp, &format!("{} '{}' (sorted)", scope.kind(), scope.name()))
            }
            None => Ok(()),
        },
        Err(_) if stopped => Err(Stop),
        Err(e) => Err(out.fail(e.context(format!("read {} '{}'", scope.kind(), scope.name())))),
    }
}

struct Docs<'a, 'b> {
    job: &'a Job,
    out: &'b mut Out,
    rows: RowNorm,
    /// The feed stopped (its error is sent, or the merge ended): end the export.
    stopped: bool,
    spool: Option<crate::spool::Spool>,
}

impl Sink for Docs<'_, '_> {
    fn document(&mut self, d: &Doc) -> Result<()> {
        let mut row = Vec::with_capacity(d.fields.len() + 3);
        self.job.ctx.fs.shape.row(d, &mut row)?;
        let text = self.spool.as_ref().map(|_| Value::Object(row.iter().cloned().collect()).to_string());
        let rec = self.rows.rec(self.job, row, || format!("document '{}'", d.path))?;
        if let (Some(sp), Some(text)) = (self.spool.as_mut(), text) {
            return sp.add(rec.key(), &text);
        }
        if self.job.only.is_some() && !self.job.wanted(&rec) {
            return Ok(());
        }
        if self.out.push(rec).is_err() {
            self.stopped = true;
            return Err(Error::Io("stopped".into()));
        }
        Ok(())
    }
}
