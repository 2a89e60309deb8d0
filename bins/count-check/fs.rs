//! Firestore sides, through fs-export's client and value conversion (`pgferry::firestore`):
//! documents read in name order at one read time, each turned into the row fs-export writes
//! (the id under `--id-field`, then `--parent-field`/`--path-field`, then the fields).

use crate::side::{Ctx, FsKind, Job, Out, RowNorm, Spec, Stop};
use pgferry::cli;
use pgferry::firestore::{
    self as fsx, Client, ConnectOptions, Doc, QueryOptions, QueryState, Scope, Sink, ValueOptions,
};
use pgferry::{Error, Result};
use serde_json::Value;

/// How Firestore documents become records: fs-export's options that shape a row.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// The key under which a document's id appears in a row [default: id].
    pub id_field: String,
    pub parent_field: Option<String>,
    pub path_field: Option<String>,
    pub ref_paths: bool,
    pub connect: ConnectOptions,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            id_field: "id".into(),
            parent_field: None,
            path_field: None,
            ref_paths: false,
            connect: ConnectOptions::default(),
        }
    }
}

/// The Firestore connection options of the command line (as fs-export's).
pub fn parse_args(args: &mut pico_args::Arguments, o: &mut FsOptions) -> Result<()> {
    o.connect = ConnectOptions::from_args(args)?;
    o.parent_field = cli::opt(args, "--parent-field")?;
    o.path_field = cli::opt(args, "--path-field")?;
    o.ref_paths = args.contains("--ref-paths");
    Ok(())
}

/// A plan step's fs-export arguments that shape its rows; `--drop` fields are not compared.
pub fn step_args(export: &[String], o: &mut FsOptions, ignore: &mut Vec<String>) -> Result<()> {
    let mut args = pico_args::Arguments::from_vec(export.iter().map(Into::into).collect());
    if let Some(f) = cli::opt(&mut args, "--id-field")? {
        o.id_field = f;
    }
    if let Some(f) = cli::opt(&mut args, "--parent-field")? {
        o.parent_field = Some(f);
    }
    if let Some(f) = cli::opt(&mut args, "--path-field")? {
        o.path_field = Some(f);
    }
    if args.contains("--ref-paths") {
        o.ref_paths = true;
    }
    ignore.extend(cli::list(&mut args, "--drop")?);
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
        let o = &self.job.ctx.fs;
        let segs: Vec<&str> = d.path.split('/').collect();
        let mut row: Vec<(String, Value)> = Vec::with_capacity(d.fields.len() + 3);
        row.push((o.id_field.clone(), Value::from(segs[segs.len() - 1])));
        if let Some(k) = &o.parent_field {
            row.push((k.clone(), if segs.len() >= 4 { Value::from(segs[segs.len() - 3]) } else { Value::Null }));
        }
        if let Some(k) = &o.path_field {
            row.push((k.clone(), Value::from(d.path)));
        }
        let meta = row.len();
        for (k, v) in d.fields {
            if row[..meta].iter().any(|(m, _)| m == k) {
                continue; // fs-export refuses a field that disagrees with its key; the key wins here
            }
            let conv = fsx::stream_value(v, ValueOptions { ref_paths: o.ref_paths })
                .map_err(|e| Error::Data(format!("document '{}', field '{k}': {e}", d.path)))?;
            row.push((k.clone(), conv));
        }
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
