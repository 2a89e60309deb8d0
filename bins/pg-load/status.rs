//! `pg-load --plan PLAN --status`: the latest run of every step of the plan, from the run
//! log's one reader (src/runlog.rs), as NDJSON on stdout; exit 0 iff every step's latest run
//! succeeded.

use pgferry::cli::{self, Status};
use pgferry::{pg, plan, runlog, Error, Result};
use std::io::Write;

pub fn run(args: &mut pico_args::Arguments) -> Result<Status> {
    let plan_path = cli::opt(args, "--plan")?.ok_or_else(|| Error::Usage("--status needs --plan PLAN".into()))?;
    let db = cli::opt(args, "--db")?;
    let runs_table = cli::opt(args, "--runs-table")?.unwrap_or_else(|| "_migration_runs".into());
    cli::finish(std::mem::replace(args, pico_args::Arguments::from_vec(vec![])))?;
    let steps = plan::read(&plan_path)?;
    let target = pg::Target::resolve(db.as_deref())?;
    let wanted: Vec<(Option<String>, String)> =
        steps.iter().map(|s| (Some(s.step.clone()), s.target.clone())).collect();
    let (lines, all_ok) = runlog::status(&target, &runs_table, &wanted)?;
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}").map_err(|e| Error::io("write the status", e))?;
    }
    Ok(if all_ok { Status::Ok } else { Status::CheckFailed })
}
