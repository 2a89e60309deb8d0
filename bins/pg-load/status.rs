//! `pg-load --plan PLAN --status`: the latest run of every step of the plan, from the run
//! log's one reader (src/runlog.rs), as NDJSON on stdout; exit 0 iff every step's latest run
//! succeeded.

use pgferry::cli::{self, Status};
use pgferry::{pg, plan, runlog, Error, Result};
use std::io::Write;

pub struct Args {
    plan: String,
    db: Option<String>,
    runs_table: String,
}

pub fn parse(args: &mut pico_args::Arguments) -> Result<Args> {
    args.contains("--status");
    Ok(Args {
        plan: cli::opt(args, "--plan")?.ok_or_else(|| Error::Usage("--status needs --plan PLAN".into()))?,
        db: cli::opt(args, "--db")?,
        runs_table: cli::opt(args, "--runs-table")?.unwrap_or_else(|| "_migration_runs".into()),
    })
}

pub fn run(a: Args) -> Result<Status> {
    let (plan_path, runs_table) = (a.plan, a.runs_table);
    let steps = plan::read(&plan_path)?;
    let target = pg::Target::resolve(a.db.as_deref())?;
    let wanted: Vec<(Option<String>, String)> =
        steps.iter().map(|s| (Some(s.step.clone()), s.target.clone())).collect();
    let (lines, all_ok) = runlog::status(&target, &runs_table, &wanted)?;
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}").map_err(|e| Error::io("write the status", e))?;
    }
    if !all_ok {
        return Err(Error::CheckFailed(format!(
            "status: not every step of '{plan_path}' has a successful latest run in '{runs_table}'"
        )));
    }
    Ok(Status::Ok)
}
