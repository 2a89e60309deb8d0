//! count-check: prove the destination matches the source: counts, samples, full comparisons,
//! and the seeds' lint checklist on a PostgreSQL table.

use pgferry::cli::{self, Status};
use pgferry::convert::Options;
use pgferry::{Error, Result};
use std::time::Instant;

#[path = "count-check/compare.rs"]
mod compare;
#[path = "count-check/fs.rs"]
mod fs;
#[path = "count-check/lint.rs"]
mod lint;
#[path = "count-check/norm.rs"]
mod norm;
#[path = "count-check/pgbin.rs"]
mod pgbin;
#[path = "count-check/report.rs"]
mod report;
#[path = "count-check/side.rs"]
mod side;
#[path = "count-check/spool.rs"]
mod spool;

use compare::run_check;
use report::{emit, finish, Report};
use side::{Ctx, Spec};

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
  --copy-key SRC=DST    As pg-load: the source field SRC is compared with the
                        column DST too (repeat, or separate with commas).
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
                        pg-load's conversion options, --key, --rename and
                        --copy-key from its 'load' arguments).
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
  --project ID          Google Cloud project [default: $GOOGLE_CLOUD_PROJECT, ...].
  --database ID         Firestore database [default: (default)].
  --token-command CMD   Command that prints an access token.
  --token-env VAR       Environment variable holding an access token.
  --credentials FILE    Service-account key file.
  --endpoint URL        API endpoint. FIRESTORE_EMULATOR_HOST selects the emulator.
  --retries N           Attempts per request before giving up [default: 6].
  --backoff MS          First retry delay, doubled per attempt [default: 500].
  -q, --quiet           No progress line, no per-check lines and no table on
                        stderr: the verdict line, errors, warnings and the
                        stdout records stay.
  -h, --help            Show this help.
  -V, --version         Show the version.

Output:
  stdout: one JSON object per check (NDJSON, no end record): the sides, counts,
  differences with the first --examples of each kind, and \"ok\".
  stderr: the count lines, the differences, a table of all checks and the verdict
  line; with --full on a terminal, a progress line (source records compared,
  records/s; no total: counting first would read each side twice).

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

fn main() {
    cli::main(TOOL, USAGE, parse, run)
}
