//! count-check: prove the destination matches the source: counts, samples, full comparisons,
//! and the seeds' lint checklist on a PostgreSQL table.

use pgferry::cli::{self, Status};
use pgferry::convert::Options;
use pgferry::{note, Error, Result};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

#[path = "count-check/fs.rs"]
mod fs;
#[path = "count-check/lint.rs"]
mod lint;
#[path = "count-check/norm.rs"]
mod norm;
#[path = "count-check/pgbin.rs"]
mod pgbin;
#[path = "count-check/side.rs"]
mod side;
#[path = "count-check/spool.rs"]
mod spool;

use norm::{ColType, Norm};
use side::{Ctx, Feed, Job, Rec, Spec};

/// --full hands millions of small records from two reader threads to the merge; mimalloc's
/// thread-local free lists make that about a third cheaper than glibc's arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOOL: &str = "count-check";

const USAGE: &str = "\
count-check: prove the destination matches the source: counts, samples, every record.

Compares SOURCE with DEST. By default it compares their counts, the seeds' line
  Source: N rows → Postgres: N rows ✓
--sample N compares N records picked at random from the source field by field
with the destination's record of the same key; --full compares every record,
reading both sides in key order at once (memory does not grow with the table).
Values are compared the way a migration changes them: converted for the
PostgreSQL column's type by pg-load's rules, timestamps as instants, JSON
structurally, floats within their precision (see docs/count-check.md).

Usage:
  count-check [options] SOURCE DEST
  count-check [options] --plan PLAN
  count-check --lint [options] pg:TABLE...
  count-check --lint [options] --plan PLAN

Sides:
  sqlite:PATH:TABLE          a SQLite table (opened read-only)
  pg:TABLE                   a PostgreSQL table (schema.table allowed)
  ndjson:FILE                a stream file as our tools write it ('-': stdin)
  firestore:COLLECTION_PATH  a Firestore collection (fs-export's conversion)
  firestore-group:ID         every collection with this id
  firestore-doc:PATH         one document

Options:
  --full                Compare every record by key: missing, extra, changed.
  --sample N            Compare N records picked at random from the source.
  --seed N              Seed of the --sample pick, to repeat a run [default: random,
                        printed in the report].
  --key COLS            The key that pairs records [default: DEST's primary key,
                        else SOURCE's].
  --map SRC=DST         A field named SRC in the source is DST in the destination
                        (repeat, or separate with commas).
  --ignore COLS         Source fields not to compare (dropped on purpose).
  --strict-columns      Destination columns the source lacks are differences too
                        [default: ignored, they are the destination's additions].
  --examples N          Differences of each kind shown in full [default: 5].
  --epoch-unit UNIT     As pg-load: numbers in timestamp columns are epochs in UNIT.
  --assume-tz OFFSET    As pg-load: zone of timestamps without an offset [default: UTC].
  --strip-nul           As pg-load: NUL characters were removed from text.
  --no-end-record       Accept NDJSON streams without the end record.
  --db URL              PostgreSQL connection URL or 'key=value' string
                        [default: $DATABASE_URL, else the PG* variables].
  --plan PLAN           Check every step of a plan file (docs/plan.md): its source
                        against pg:TARGET, with the step's 'check' arguments (and
                        pg-load's conversion options from its 'load' arguments).
  --step STEPS          With --plan: only these steps (comma-separated).
  --lint                Lint PostgreSQL tables: text columns holding only
                        timestamps, JSON nulls among arrays, foreign keys pointing
                        nowhere, failed loads never followed by a success.
  --runs-table NAME     Run log table for --lint [default: _migration_runs].

Firestore sides (as fs-export; rows are shaped as fs-export writes them):
  --id-field NAME       Key of the document's id in a record [default: id].
  --parent-field NAME   Add the parent document's id under NAME.
  --path-field NAME     Add the document's path under NAME.
  --ref-paths           References as paths instead of ids.
  --project ID          Google Cloud project [default: $GOOGLE_CLOUD_PROJECT, …].
  --database ID         Firestore database [default: (default)].
  --token-command CMD   Command that prints an access token.
  --token-env VAR       Environment variable holding an access token.
  --credentials FILE    Service-account key file.
  --endpoint URL        API endpoint. FIRESTORE_EMULATOR_HOST selects the emulator.
  --retries N           Attempts per request before giving up [default: 6].
  --backoff MS          First retry delay, doubled per attempt [default: 500].
  -h, --help            Show this help.
  -V, --version         Show the version.

Output:
  stdout: one JSON object per check (NDJSON, no end record): the sides, counts,
  differences with the first --examples of each kind, and \"ok\".
  stderr: the count lines, the differences, and a table of all checks.

Exit status:
  0 every check held; 1 a check found a difference; 64 usage error;
  65 bad input data (a malformed stream, records out of key order);
  66 a file or table does not exist; 69 PostgreSQL or Firestore unavailable;
  74 I/O error. A check that could not run is not a difference: its own code.

Examples:
  count-check sqlite:/srv/app/data/app.sqlite:melody_drafts pg:melody_drafts
  count-check --full --map legacy_id=firestore_id firestore:crm_customers pg:crm_customers
  count-check --sample 10 --seed 7 ndjson:orders.ndjson pg:crm.orders
  count-check --plan runbook/plan.ndjson --full
  count-check --lint pg:crm_orders
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Count,
    Sample(usize),
    Full,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Count => "count",
            Mode::Sample(_) => "sample",
            Mode::Full => "full",
        }
    }
}

/// What shapes one check (global options, or a plan step's 'check' arguments over them).
#[derive(Debug, Clone)]
struct CheckOpts {
    mode: Mode,
    seed: Option<u64>,
    key: Vec<String>,
    map: Vec<(String, String)>,
    ignore: Vec<String>,
    strict: bool,
    examples: usize,
    conv: Options,
}

impl Default for CheckOpts {
    fn default() -> Self {
        CheckOpts {
            mode: Mode::Count,
            seed: None,
            key: vec![],
            map: vec![],
            ignore: vec![],
            strict: false,
            examples: 5,
            conv: Options::default(),
        }
    }
}

/// Reads the options that shape a check, on top of `base`.
fn parse_check_opts(args: &mut pico_args::Arguments, base: &CheckOpts) -> Result<CheckOpts> {
    let mut o = base.clone();
    let full = args.contains("--full");
    let sample = cli::number(args, "--sample", "a positive count", |n: &usize| *n > 0)?;
    if full && sample.is_some() {
        return Err(Error::Usage("--full and --sample are different modes; give one".into()));
    }
    if full {
        o.mode = Mode::Full;
    }
    if let Some(n) = sample {
        o.mode = Mode::Sample(n);
    }
    if let Some(seed) = cli::number(args, "--seed", "a whole number", |_| true)? {
        o.seed = Some(seed);
    }
    let key = cli::list(args, "--key")?;
    if !key.is_empty() {
        o.key = key;
    }
    for m in cli::list(args, "--map")? {
        let (s, d) = m
            .split_once('=')
            .filter(|(s, d)| !s.is_empty() && !d.is_empty())
            .ok_or_else(|| Error::Usage(format!("--map takes SRC=DST, not '{m}'")))?;
        o.map.push((s.trim().to_string(), d.trim().to_string()));
    }
    o.ignore.extend(cli::list(args, "--ignore")?);
    if args.contains("--strict-columns") {
        o.strict = true;
    }
    if let Some(n) = cli::number(args, "--examples", "a count", |_| true)? {
        o.examples = n;
    }
    o.conv = Options::from_args(args, o.conv)?;
    // pg-load's --rename is this check's --map: the key was loaded into that column.
    o.map.append(&mut o.conv.rename);
    Ok(o)
}

struct Args {
    opts: CheckOpts,
    ctx: Ctx,
    plan: Option<String>,
    steps: Vec<String>,
    lint: bool,
    runs_table: String,
    sides: Vec<String>,
}

fn parse(args: &mut pico_args::Arguments) -> Result<Args> {
    let opts = parse_check_opts(args, &CheckOpts::default())?;
    let fs_opts = fs::parse_args(args)?;
    let ctx = Ctx {
        db: cli::opt(args, "--db")?,
        require_end: !args.contains("--no-end-record"),
        opts: opts.conv.clone(),
        fs: fs_opts,
    };
    let a = Args {
        plan: cli::opt(args, "--plan")?,
        steps: cli::list(args, "--step")?,
        lint: args.contains("--lint"),
        runs_table: cli::opt(args, "--runs-table")?.unwrap_or_else(|| "_migration_runs".into()),
        opts,
        ctx,
        sides: {
            let mut v = vec![];
            while let Some(s) = args.opt_free_from_str::<String>().map_err(cli::usage_err)? {
                v.push(s);
            }
            v
        },
    };
    if a.plan.is_some() && !a.sides.is_empty() {
        return Err(Error::Usage("--plan takes its sides from the plan; give no SOURCE or DEST".into()));
    }
    if !a.steps.is_empty() && a.plan.is_none() {
        return Err(Error::Usage("--step needs --plan".into()));
    }
    if a.lint {
        if a.opts.mode != Mode::Count {
            return Err(Error::Usage("--lint is a mode of its own; it takes no --full or --sample".into()));
        }
        if a.plan.is_none() && a.sides.is_empty() {
            return Err(Error::Usage("--lint needs pg:TABLE arguments or --plan".into()));
        }
    } else if a.plan.is_none() && a.sides.len() != 2 {
        return Err(Error::Usage(match a.sides.len() {
            0 => "missing arguments SOURCE and DEST".into(),
            1 => "missing argument DEST".into(),
            _ => format!("unexpected argument '{}'", a.sides[2]),
        }));
    }
    Ok(a)
}

/// One check to run.
struct Check {
    step: Option<String>,
    /// A source the text cannot describe alone (a json: step's files with its jq program).
    source_spec: Option<Spec>,
    source_text: String,
    dest_text: String,
    opts: CheckOpts,
    ctx: Ctx,
}

fn run(a: Args) -> Result<Status> {
    let mut reports: Vec<Report> = Vec::new();
    if a.lint {
        let tables: Vec<(Option<String>, String)> = match &a.plan {
            Some(p) => plan_steps(p, &a.steps)?.into_iter().map(|s| (Some(s.step), s.target)).collect(),
            None => a
                .sides
                .iter()
                .map(|s| match Spec::parse(s)? {
                    Spec::Pg { table } => Ok((None, table)),
                    _ => Err(Error::Usage(format!("--lint checks PostgreSQL tables: '{s}' is not pg:TABLE"))),
                })
                .collect::<Result<_>>()?,
        };
        for (step, table) in tables {
            let started = Instant::now();
            let r = lint::lint(&a.ctx, &table, &a.runs_table);
            reports.push(Report::from_lint(step, &table, r, started));
            emit(reports.last().expect("just pushed"))?;
        }
        return finish(&reports);
    }
    let checks: Vec<Check> = match &a.plan {
        None => vec![Check {
            step: None,
            source_spec: None,
            source_text: a.sides[0].clone(),
            dest_text: a.sides[1].clone(),
            opts: a.opts.clone(),
            ctx: a.ctx.clone(),
        }],
        Some(p) => {
            let mut out = vec![];
            for s in plan_steps(p, &a.steps)? {
                let bad = |e: Error| e.context(format!("plan step '{}' (line {})", s.step, s.line));
                // pg-load's conversion options and key, then the step's own check arguments.
                let mut base = a.opts.clone();
                let mut load = pico_args::Arguments::from_vec(s.load.iter().map(Into::into).collect());
                base.conv = Options::from_args(&mut load, base.conv).map_err(bad)?;
                let load_key = cli::list(&mut load, "--key").map_err(bad)?;
                if base.key.is_empty() {
                    base.key = load_key;
                }
                let mut check = pico_args::Arguments::from_vec(s.check.iter().map(Into::into).collect());
                let mut opts = parse_check_opts(&mut check, &base).map_err(bad)?;
                let mut ctx = a.ctx.clone();
                ctx.opts = opts.conv.clone();
                fs::step_args(&s.export, &mut ctx.fs, &mut opts.ignore).map_err(bad)?;
                cli::finish(check).map_err(bad)?;
                let source_spec = match (&s.src, &s.jq) {
                    (pgferry::plan::Source::Json(p), Some(program)) => {
                        Some(Spec::Json { pattern: p.clone(), program: program.clone() })
                    }
                    _ => None,
                };
                out.push(Check {
                    step: Some(s.step.clone()),
                    source_spec,
                    source_text: s.source.clone(),
                    dest_text: format!("pg:{}", s.target),
                    opts,
                    ctx,
                });
            }
            out
        }
    };
    for c in &checks {
        let started = Instant::now();
        let r = run_check(c);
        let report = Report::from_check(c, r, started);
        emit(&report)?;
        reports.push(report);
    }
    finish(&reports)
}

fn plan_steps(path: &str, only: &[String]) -> Result<Vec<pgferry::plan::Step>> {
    pgferry::plan::select(pgferry::plan::read(path)?, None, only).map_err(|e| e.context(format!("plan '{path}'")))
}

// ---------------------------------------------------------------- checks

/// What a comparison found.
#[derive(Default)]
struct Found {
    source_rows: u64,
    dest_rows: u64,
    compared: u64,
    same: u64,
    missing: u64,
    extra: u64,
    changed: u64,
    missing_keys: Vec<Value>,
    extra_keys: Vec<Value>,
    changed_records: Vec<Value>,
    /// Source fields with no destination column (the destination lost them).
    unmatched: BTreeSet<String>,
    /// Destination columns the source lacks (reported; a difference with --strict-columns).
    dest_only: BTreeSet<String>,
    seed: Option<u64>,
    sampled: Option<u64>,
}

fn run_check(c: &Check) -> Result<Found> {
    let source = match &c.source_spec {
        Some(s) => s.clone(),
        None => Spec::parse(&c.source_text)?,
    };
    let dest = Spec::parse(&c.dest_text)?;
    if matches!((&source, &dest), (Spec::Ndjson { file: a }, Spec::Ndjson { file: b }) if a == "-" && b == "-") {
        return Err(Error::Usage("only one side can read stdin".into()));
    }
    match c.opts.mode {
        Mode::Count => {
            let (s, d) = std::thread::scope(|sc| {
                let ctx = &c.ctx;
                let src = &source;
                let h = sc.spawn(move || side::count(src, ctx));
                let d = side::count(&dest, ctx);
                (h.join().expect("count thread"), d)
            });
            let (s, d) = (s.map_err(|e| e.context(&c.source_text))?, d.map_err(|e| e.context(&c.dest_text))?);
            Ok(Found { source_rows: s, dest_rows: d, ..Found::default() })
        }
        Mode::Full | Mode::Sample(_) => {
            let r = compare(c, source, dest);
            side::close_idle();
            r
        }
    }
}

fn compare(c: &Check, source: Spec, dest: Spec) -> Result<Found> {
    let o = &c.opts;
    let smeta = side::meta(&source, &c.ctx).map_err(|e| e.context(&c.source_text))?;
    let dmeta = side::meta(&dest, &c.ctx).map_err(|e| e.context(&c.dest_text))?;
    let rename: HashMap<String, String> = o.map.iter().cloned().collect();
    let to_dest = |n: &str| rename.get(n).cloned().unwrap_or_else(|| n.to_string());
    let ignore: HashSet<String> = o.ignore.iter().cloned().collect();
    // Column types come from the PostgreSQL side: the destination's, else the source's.
    let mut types: HashMap<String, ColType> = HashMap::new();
    if let Some(cols) = &dmeta.pg_columns {
        types.extend(cols.iter().map(|c| (c.name.clone(), ColType::of(c))));
    } else if let Some(cols) = &smeta.pg_columns {
        types.extend(cols.iter().filter(|c| !ignore.contains(&c.name)).map(|c| (to_dest(&c.name), ColType::of(c))));
    }
    if c.ctx.opts.has_column_rules() {
        for (name, ct) in types.iter_mut() {
            ct.conv = Some(c.ctx.opts.for_column(name));
        }
    }
    let key: Vec<String> = if !o.key.is_empty() {
        o.key.clone()
    } else if !dmeta.key.is_empty() {
        dmeta.key.clone()
    } else if !smeta.key.is_empty() {
        smeta.key.iter().map(|k| to_dest(k)).collect()
    } else {
        return Err(Error::Usage(format!(
            "no key to pair records of '{}' and '{}': neither has a primary key; pass --key COLS",
            c.source_text, c.dest_text
        )));
    };
    if key.len() > side::MAX_KEY {
        return Err(Error::Usage(format!(
            "a key of {} columns is more than count-check pairs by ({})",
            key.len(),
            side::MAX_KEY
        )));
    }
    let mut found = Found::default();
    let mut dest_cols: Option<HashSet<String>> = None;
    if let Some(dc) = &dmeta.columns {
        let set: HashSet<String> = dc.iter().cloned().collect();
        for k in &key {
            if !set.contains(k) {
                return Err(Error::Usage(format!("{}: no key column '{k}'", c.dest_text)));
            }
        }
        if let Some(sc) = &smeta.columns {
            let mapped: HashSet<String> = sc.iter().filter(|n| !ignore.contains(*n)).map(|n| to_dest(n)).collect();
            for k in &key {
                if !mapped.contains(k) {
                    return Err(Error::Usage(format!("{}: no key column '{k}' (use --map SRC={k})", c.source_text)));
                }
            }
            found.unmatched = mapped.iter().filter(|n| !set.contains(*n)).cloned().collect();
            found.dest_only = dc.iter().filter(|n| !mapped.contains(*n)).cloned().collect();
        }
        dest_cols = Some(set);
    }
    let types = Arc::new(types);
    let mut sjob = Job {
        spec: source.clone(),
        ctx: c.ctx.clone(),
        meta: smeta,
        rename: rename.clone(),
        ignore,
        key: key.clone(),
        types: types.clone(),
        only: None,
        sort: false,
        unsorted: Default::default(),
    };
    let mut djob = Job {
        spec: dest.clone(),
        ctx: c.ctx.clone(),
        meta: dmeta,
        rename: HashMap::new(),
        ignore: HashSet::new(),
        key: key.clone(),
        types,
        only: None,
        sort: false,
        unsorted: Default::default(),
    };
    let cmp = Compare { key: &key, strict: o.strict, dest_cols: dest_cols.as_ref(), examples: o.examples };
    loop {
        let mut f =
            Found { unmatched: found.unmatched.clone(), dest_only: found.dest_only.clone(), ..Found::default() };
        sjob.unsorted = Default::default();
        djob.unsorted = Default::default();
        let e = match attempt(c, &sjob, &djob, &cmp, &mut f) {
            Ok(()) => return Ok(f),
            Err(e) => e,
        };
        // A stream or Firestore side out of key order is sorted in a temporary file, once.
        let mut again = false;
        for (job, text) in [(&mut sjob, &c.source_text), (&mut djob, &c.dest_text)] {
            let sortable = match &job.spec {
                Spec::Ndjson { file } => file != "-",
                Spec::Json { .. } => true,
                Spec::Firestore { .. } => true,
                _ => false,
            };
            if sortable && !job.sort && job.unsorted.load(std::sync::atomic::Ordering::SeqCst) {
                note!(TOOL, "{text}: not in key order; sorting it in a temporary file and comparing again");
                job.sort = true;
                again = true;
            }
        }
        if !again {
            return Err(e);
        }
    }
}

/// One comparison run of the mode's kind.
fn attempt(c: &Check, sjob: &Job, djob: &Job, cmp: &Compare, found: &mut Found) -> Result<()> {
    let o = &c.opts;
    match o.mode {
        Mode::Full => {
            let mut s = side::spawn(sjob.clone(), c.source_text.clone());
            let mut d = side::spawn(djob.clone(), c.dest_text.clone());
            merge(&mut s, &mut d, cmp, found, true)?;
            found.source_rows = s.rows;
            found.dest_rows = d.rows;
        }
        Mode::Sample(n) => {
            let seed = o.seed.unwrap_or_else(|| pgferry::timefmt::now_micros() as u64 % 1_000_000_000);
            found.seed = Some(seed);
            let mut s = side::spawn(sjob.clone(), c.source_text.clone());
            let mut rng = SplitMix(seed);
            let mut pick: Vec<Rec> = Vec::with_capacity(n);
            let mut seen: u64 = 0;
            while let Some(r) = s.next()? {
                seen += 1;
                if pick.len() < n {
                    pick.push(r);
                } else {
                    let j = rng.below(seen);
                    if (j as usize) < n {
                        pick[j as usize] = r;
                    }
                }
            }
            pick.sort_by(side::cmp_recs);
            found.source_rows = seen;
            found.sampled = Some(pick.len() as u64);
            let keys: Vec<Vec<Norm>> = pick.iter().map(Rec::key_vec).collect();
            let djob = Job { only: Some(Arc::new(keys)), ..djob.clone() };
            let mut d = side::spawn(djob, c.dest_text.clone());
            let mut s = side::feed_of(pick, c.source_text.clone());
            merge(&mut s, &mut d, cmp, found, false)?;
            found.dest_rows = d.rows;
        }
        Mode::Count => unreachable!("counts do not compare records"),
    }
    Ok(())
}

struct Compare<'a> {
    key: &'a [String],
    strict: bool,
    dest_cols: Option<&'a HashSet<String>>,
    examples: usize,
}

/// Sort-merge of two key-ordered feeds.
fn merge(s: &mut Feed, d: &mut Feed, cmp: &Compare, f: &mut Found, extras: bool) -> Result<()> {
    let mut cache = FieldCache::default();
    let mut a = s.next()?;
    let mut b = d.next()?;
    loop {
        match (a.take(), b.take()) {
            (None, None) => return Ok(()),
            (Some(x), None) => {
                f.missing += 1;
                if f.missing_keys.len() < cmp.examples {
                    f.missing_keys.push(key_json(cmp.key, x.key()));
                }
                s.recycle(x);
                a = s.next()?;
            }
            (None, Some(y)) => {
                if extras {
                    f.extra += 1;
                    if f.extra_keys.len() < cmp.examples {
                        f.extra_keys.push(key_json(cmp.key, y.key()));
                    }
                }
                d.recycle(y);
                b = d.next()?;
            }
            (Some(x), Some(y)) => match side::cmp_recs(&x, &y) {
                std::cmp::Ordering::Less => {
                    b = Some(y);
                    f.missing += 1;
                    if f.missing_keys.len() < cmp.examples {
                        f.missing_keys.push(key_json(cmp.key, x.key()));
                    }
                    s.recycle(x);
                    a = s.next()?;
                }
                std::cmp::Ordering::Greater => {
                    if extras {
                        f.extra += 1;
                        if f.extra_keys.len() < cmp.examples {
                            f.extra_keys.push(key_json(cmp.key, y.key()));
                        }
                    }
                    a = Some(x);
                    d.recycle(y);
                    b = d.next()?;
                }
                std::cmp::Ordering::Equal => {
                    f.compared += 1;
                    let diffs = compare_fields(&x, &y, cmp, &mut cache, &mut f.unmatched);
                    if diffs.is_empty() {
                        f.same += 1;
                    } else {
                        f.changed += 1;
                        if f.changed_records.len() < cmp.examples {
                            f.changed_records.push(json!({"key": key_json(cmp.key, x.key()), "fields": diffs}));
                        }
                    }
                    s.recycle(x);
                    d.recycle(y);
                    a = s.next()?;
                    b = d.next()?;
                }
            },
        }
    }
}

fn key_json<'a>(names: &[String], key: impl Iterator<Item = &'a Norm>) -> Value {
    let mut m = Map::new();
    for (n, v) in names.iter().zip(key) {
        m.insert(n.clone(), norm::norm_json(v));
    }
    Value::Object(m)
}

/// Where the destination record holds each source field, learned from the records before:
/// both sides name fields with shared strings, so a hit costs two pointer comparisons.
#[derive(Default)]
struct FieldCache(Vec<Option<CachedField>>);

/// A source field's name and, if the destination has it, its name there and position.
type CachedField = (Arc<str>, Option<(Arc<str>, usize)>);

impl FieldCache {
    /// The destination field index of source field `i` (named `name`), if any.
    fn find(&mut self, i: usize, name: &Arc<str>, d: &Rec) -> Option<usize> {
        if let Some(Some((src, dst))) = self.0.get(i) {
            if Arc::ptr_eq(src, name) {
                if let Some((dn, j)) = dst {
                    if d.fields.get(*j).is_some_and(|(n, _)| Arc::ptr_eq(n, dn)) {
                        return Some(*j);
                    }
                }
            }
        }
        let found = d.fields.iter().position(|(n, _)| n == name);
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        self.0[i] = Some((name.clone(), found.map(|j| (d.fields[j].0.clone(), j))));
        found
    }
}

/// The fields that differ, each with both values.
fn compare_fields(
    s: &Rec,
    d: &Rec,
    cmp: &Compare,
    cache: &mut FieldCache,
    unmatched: &mut BTreeSet<String>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, (name, sv)) in s.fields.iter().enumerate() {
        match cache.find(i, name, d) {
            Some(j) => {
                let dv = &d.fields[j].1;
                if !norm::norm_eq(sv, dv) {
                    out.push(field_diff(name, Some(sv), Some(dv)));
                }
            }
            None => match cmp.dest_cols {
                // The destination has no such column: reported once for the check.
                Some(cols) if !cols.contains(&**name) => {
                    if !unmatched.contains(&**name) {
                        unmatched.insert(name.to_string());
                    }
                }
                _ if *sv == Norm::Null => {}
                _ => out.push(field_diff(name, Some(sv), None)),
            },
        }
    }
    if cmp.strict {
        for (name, dv) in &d.fields {
            if !s.fields.iter().any(|(n, _)| n == name) {
                out.push(field_diff(name, None, Some(dv)));
            }
        }
    }
    out
}

fn field_diff(name: &str, s: Option<&Norm>, d: Option<&Norm>) -> Value {
    let mut m = Map::new();
    m.insert("field".into(), Value::String(name.to_string()));
    for (label, v) in [("source", s), ("dest", d)] {
        match v {
            Some(v) => {
                m.insert(label.into(), norm::norm_json(v));
                if let Norm::Bad(_, cause) = v {
                    m.insert(format!("{label}_error"), Value::String(cause.clone()));
                }
            }
            None => {
                m.insert(format!("{label}_absent"), Value::Bool(true));
            }
        }
    }
    Value::Object(m)
}

/// splitmix64: a small, seedable generator (the pick must repeat with its seed).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

// ---------------------------------------------------------------- reports

struct Report {
    line: Value,
    ok: bool,
    error: Option<Error>,
    human: Vec<String>,
    row: [String; 10],
}

impl Report {
    fn from_check(c: &Check, r: Result<Found>, started: Instant) -> Report {
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
                line.insert("ok".into(), json!(false));
                line.insert("error".into(), json!(e.message()));
                line.insert("exit".into(), json!(e.exit_code()));
                line.insert("seconds".into(), json!(secs(started)));
                human.push(format!("{title}: could not check: {}", e.message()));
                let row = [
                    step,
                    c.opts.mode.name().into(),
                    c.source_text.clone(),
                    c.dest_text.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("error ({})", e.exit_code()),
                ];
                return Report { line: Value::Object(line), ok: false, error: Some(e), human, row };
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

    fn from_lint(step: Option<String>, table: &str, r: Result<Vec<lint::Finding>>, started: Instant) -> Report {
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
                line.insert("ok".into(), json!(false));
                line.insert("error".into(), json!(e.message()));
                line.insert("exit".into(), json!(e.exit_code()));
                line.insert("seconds".into(), json!(secs(started)));
                human.push(format!("lint pg:{table}: could not check: {}", e.message()));
                let row = row("-".into(), format!("error ({})", e.exit_code()));
                Report { line: Value::Object(line), ok: false, error: Some(e), human, row }
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
fn emit(r: &Report) -> Result<()> {
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
fn finish(reports: &[Report]) -> Result<Status> {
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
    eprintln!();
    eprintln!("{}", fmt(head.to_vec()));
    for r in reports {
        eprintln!("{}", fmt(r.row.iter().map(String::as_str).collect()));
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
        Error::CheckFailed(_) => Error::CheckFailed(m),
        Error::Interrupted(_) => Error::Interrupted(m),
        Error::BrokenPipe => Error::BrokenPipe,
    }
}

fn main() {
    cli::main(TOOL, USAGE, parse, run)
}

/// ✓ when a check held, ✗ when it did not.
fn mark(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}
