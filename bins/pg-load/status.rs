//! `pg-load --plan PLAN --status`: the latest run of every selected step of the plan, from the
//! run log's one reader (src/runlog.rs, which settles a dead load's run from the server), as
//! NDJSON on stdout; exit 0 iff every one succeeded. `--settle SECS` first waits, up to SECS,
//! while one is still `running`: after a load was killed, its transaction ends when the server
//! notices (at once mid-COPY, within `client_connection_check_interval` otherwise), and only
//! then is its outcome known.

use pgferry::cli::{self, Status};
use pgferry::{pg, plan, runlog, Error, Result};
use std::io::Write;
use std::time::{Duration, Instant};

pub struct Args {
    plan: String,
    db: Option<String>,
    runs_table: String,
    from: Option<String>,
    only: Vec<String>,
    settle: Duration,
}

pub fn parse(args: &mut pico_args::Arguments) -> Result<Args> {
    args.contains("--status");
    let settle = match cli::opt(args, "--settle")? {
        None => 0,
        Some(s) => s.parse().map_err(|_| Error::Usage(format!("--settle takes whole seconds, not '{s}'")))?,
    };
    Ok(Args {
        plan: cli::opt(args, "--plan")?.ok_or_else(|| Error::Usage("--status needs --plan PLAN".into()))?,
        db: cli::opt(args, "--db")?,
        runs_table: cli::opt(args, "--runs-table")?.unwrap_or_else(|| "_migration_runs".into()),
        from: cli::opt(args, "--from")?,
        only: cli::list(args, "--steps")?,
        settle: Duration::from_secs(settle),
    })
}

pub fn run(a: Args) -> Result<Status> {
    let (plan_path, runs_table) = (a.plan, a.runs_table);
    let steps = plan::select(plan::read(&plan_path)?, a.from.as_deref(), &a.only)?;
    let target = pg::Target::resolve(a.db.as_deref())?;
    let wanted: Vec<(Option<String>, String)> =
        steps.iter().map(|s| (Some(s.step.clone()), s.target.clone())).collect();
    let until = Instant::now() + a.settle;
    let (lines, all_ok) = loop {
        let (lines, all_ok) = runlog::status(&target, &runs_table, &wanted)?;
        if Instant::now() >= until || !lines.iter().any(|l| l["outcome"] == "running") {
            break (lines, all_ok);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
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
