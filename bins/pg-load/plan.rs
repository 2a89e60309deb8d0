//! A plan run: every selected step's table loaded from one multi-table stream
//! (docs/stream.md §7) in ONE transaction, each with its own options, count check and run-log
//! record; every foreign key between the plan's tables valid before COMMIT (a `--defer-fks`
//! key into a table outside the run may stay NOT VALID, as asked); all tables or none.

use crate::{parse_load, report, schema, set_up, table, Args, Mode, RunOptions, Session, RUN_OPTIONS, TOOL};
use pgferry::cli::{self, Status};
use pgferry::commit::Committed;
use pgferry::pg::{pg_error, Table};
use pgferry::runlog::Outcome;
use pgferry::stream::RowReader;
use pgferry::{note, Error, Result};
use std::time::Instant;

pub struct PlanArgs {
    plan: String,
    from: Option<String>,
    only: Vec<String>,
    /// `--mode` on the command line: the mode of every step whose `load` names none.
    mode: Option<String>,
    run: RunOptions,
}

pub fn parse(args: &mut pico_args::Arguments, plan: String, run: RunOptions) -> Result<PlanArgs> {
    Ok(PlanArgs {
        plan,
        from: cli::opt(args, "--from")?,
        only: cli::list(args, "--steps")?,
        mode: cli::opt(args, "--mode")?,
        run,
    })
}

/// One selected step: its name and its table's load options.
struct Step {
    name: String,
    args: Args,
}

/// The selected steps of the plan, each step's `load` array parsed as pg-load's command line
/// would be (a run-level option there is a usage error naming the step).
fn steps(p: &PlanArgs) -> Result<Vec<Step>> {
    let ctx = |e: Error| e.context(format!("plan '{}'", p.plan));
    let mut selected = pgferry::plan::select(pgferry::plan::read(&p.plan)?, p.from.as_deref(), &p.only).map_err(ctx)?;
    if let Some(m) = &p.mode {
        pgferry::plan::default_mode(&mut selected, m);
    }
    selected
        .into_iter()
        .map(|s| {
            let ctx = |e: Error| e.context(format!("plan '{}', step '{}', load", p.plan, s.step));
            // A partitioned target gets the partitions its rows need inside the run's transaction.
            let load = s.load_args();
            if let Some(bad) = load.iter().find(|a| RUN_OPTIONS.contains(&a.split('=').next().unwrap_or(""))) {
                return Err(ctx(Error::Usage(format!("'{bad}' is an option of the whole run, not of a step"))));
            }
            let mut args = pico_args::Arguments::from_vec(load.iter().map(Into::into).collect());
            let mut a = parse_load(&mut args, s.target.clone(), &p.run).map_err(ctx)?;
            cli::finish(args).map_err(ctx)?;
            a.source = a.source.or(Some(s.source.clone()));
            Ok(Step { name: s.step, args: a })
        })
        .collect()
}

pub fn run(p: PlanArgs) -> Result<Status> {
    let report = p.run.report.as_deref().map(report::Report::at).transpose()?;
    let steps = steps(&p)?;
    let mut done = vec![report::Done::default(); steps.len()];
    let result = run_steps(&p, &steps, &mut done);
    let lines: Vec<report::Table> = steps
        .iter()
        .zip(&done)
        .map(|(s, d)| report::Table { step: Some(&s.name), table: &s.args.table, mode: s.args.mode, done: d })
        .collect();
    table::conclude(report.as_ref(), &lines, result)
}

fn run_steps(p: &PlanArgs, steps: &[Step], done: &mut [report::Done]) -> Result<table::Statistics> {
    let tables: Vec<(Option<&str>, &str, &str)> =
        steps.iter().map(|s| (Some(s.name.as_str()), s.args.table.as_str(), s.args.mode.name())).collect();
    let mut session = open_plan_session(p, &tables)?;
    let started = Instant::now();
    let mut outcomes = vec![Outcome::default(); steps.len()];
    let mut measured = vec![report::Measured::default(); steps.len()];
    let result = load(&mut session, p, steps, &mut outcomes, &mut measured);
    for (d, m) in done.iter_mut().zip(measured) {
        d.measured = m;
    }
    pgferry::stall::done();
    match result {
        Ok((tables, committed, xid)) => {
            let state = if p.run.dry_run { "dry-run" } else { "success" };
            let runs = session.runs.clone();
            for ((id, o), d) in runs.iter().zip(&outcomes).zip(done.iter_mut()) {
                session.record(*id, state, o, None);
                d.recorded(*id, state, o, None);
            }
            session.report_commit(&committed, xid);
            let mut rows = 0;
            for ((s, o), ((_, summary), id)) in steps.iter().zip(&outcomes).zip(tables.iter().zip(&runs)) {
                rows += o.source_rows.unwrap_or(0);
                note!(TOOL, "step '{}' ({}): {summary}; run {id} in {}", s.name, s.args.table, session.log.name());
            }
            let secs = started.elapsed().as_secs_f64();
            note!(
                TOOL,
                "plan '{}': {} steps, {rows} rows, {}; {secs:.1}s, {:.0} rows/s",
                p.plan,
                steps.len(),
                if p.run.dry_run { "dry run: rolled back" } else { "committed in one transaction" },
                rows as f64 / secs.max(1e-9)
            );
            if p.run.dry_run {
                return Ok(table::Statistics::default());
            }
            // One statement for every table that wants ANALYZE, one for VACUUM (ANALYZE).
            let [analyze, vacuum] = [false, true].map(|vacuum| {
                let mut these: Vec<table::Owed> = vec![];
                for ((s, (qt, _)), o) in steps.iter().zip(&tables).zip(&outcomes) {
                    let wanted = if vacuum { s.args.vacuum } else { s.args.analyze && !s.args.vacuum };
                    let changed = table::changed_rows(s.args.mode, o);
                    match these.iter_mut().find(|(q, _, _)| q == qt) {
                        // Two steps into one table: analyzed once, if either changed it.
                        Some(t) => t.2 |= changed,
                        None if wanted => these.push((qt.clone(), s.args.table.clone(), changed)),
                        None => {}
                    }
                }
                these
            });
            Ok(table::Statistics::owed(session, analyze, vacuum, p.run.lock_timeout))
        }
        Err((failed, e)) => {
            let (state, e) = session.failure(e);
            let e = match failed {
                Some(i) => e.context(format!("step '{}' ({})", steps[i].name, steps[i].args.table)),
                None => e.context(format!("plan '{}'", p.plan)),
            };
            let others = match failed {
                Some(i) => format!("not committed: step '{}' failed", steps[i].name),
                None => "not committed: the plan run failed".to_string(),
            };
            let runs = session.runs.clone();
            for (i, (id, o)) in runs.iter().zip(&outcomes).enumerate() {
                let msg = if failed == Some(i) || state == "unknown" { e.message() } else { others.as_str() };
                session.record(*id, state, o, Some(msg));
                done[i].recorded(*id, state, o, Some(msg));
            }
            Err(e)
        }
    }
}

fn open_plan_session(p: &PlanArgs, tables: &[(Option<&str>, &str, &str)]) -> Result<Session> {
    crate::open_session(p.run.db.as_deref(), &p.run.runs_table, p.run.stall_timeout, tables)
}

/// An error and the index of the step it belongs to (`None`: the run as a whole).
type StepError = (Option<usize>, Error);

/// Loads every step in one transaction; returns each step's qualified table. An error comes
/// with the index of the step it belongs to (`None`: the run as a whole).
#[allow(clippy::type_complexity)]
fn load(
    session: &mut Session,
    p: &PlanArgs,
    steps: &[Step],
    outcomes: &mut [Outcome],
    measured: &mut [report::Measured],
) -> std::result::Result<(Vec<(String, String)>, Option<Committed>, i64), StepError> {
    let whole = |e: Error| (None, e);
    let mut tx = session.client.transaction().map_err(|e| whole(pg_error("begin", e)))?;
    let id = crate::begin(&mut tx, &mut session.log).map_err(whole)?;
    set_up(&mut tx, p.run.lock_timeout).map_err(whole)?;
    // Every table is locked before any row is read, so a busy table fails the run at once.
    let mut tables: Vec<Table> = vec![];
    for (i, s) in steps.iter().enumerate() {
        tables.push(table::lock(&mut tx, &s.args.table, p.run.lock_timeout == 0).map_err(|e| (Some(i), e))?);
    }
    // Foreign keys between the plan's tables that the load order would trip over are set
    // aside before any row: a child loaded before its parent, and any key into a table that
    // is mirrored or replaced (its deletes would hit children the plan deletes later).
    let mut deferred = vec![];
    // One look for the tables that have keys into the plan's tables: only they are asked which.
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let children: Vec<u32> = tx
        .query_typed(
            "SELECT DISTINCT conrelid FROM pg_constraint WHERE contype = 'f' AND conparentid = 0 \
             AND conrelid = ANY($1) AND confrelid = ANY($1)",
            &[(&oids, postgres::types::Type::OID_ARRAY)],
        )
        .map_err(|e| whole(pg_error("look up foreign keys between the plan's tables", e)))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for i in 0..steps.len() {
        if tables[..i].iter().any(|t| t.oid == tables[i].oid) || !children.contains(&tables[i].oid) {
            continue;
        }
        let parents: Vec<u32> = steps
            .iter()
            .zip(&tables)
            .enumerate()
            .filter(|(j, (p, t))| {
                t.oid != tables[i].oid && (*j > i || matches!(p.args.mode, Mode::Mirror | Mode::Replace))
            })
            .map(|(_, (_, t))| t.oid)
            .collect();
        let fks = schema::drop_foreign_keys(&mut tx, &tables[i], false, &parents).map_err(|e| (Some(i), e))?;
        deferred.extend(fks.into_iter().map(|fk| (i, fk)));
    }
    let mut reader = RowReader::segmented(crate::input());
    let mut summaries = vec![];
    for (i, s) in steps.iter().enumerate() {
        let at = |e: Error| (Some(i), e);
        reader.begin_segment(&s.name, s.args.require_end);
        let measure = report::Measure::start();
        let loaded = table::prepare(&mut tx, &s.args, tables[i].clone(), &tables).and_then(|mut prepared| {
            table::load_rows(&mut tx, &mut prepared, &s.args, &mut reader, &mut outcomes[i]).map(|l| (prepared, l))
        });
        measured[i] = measure.end();
        let (prepared, loaded) = loaded.map_err(at)?;
        note!(TOOL, "step '{}' ({}): {}", s.name, s.args.table, loaded.count_line);
        for line in &loaded.notes {
            note!(TOOL, "step '{}' ({}): {line}", s.name, s.args.table);
        }
        if !loaded.verified {
            return Err((Some(i), Error::CheckFailed(format!("count mismatch: {}", loaded.count_line))));
        }
        deferred.extend(prepared.deferred.into_iter().map(|fk| (i, fk)));
        summaries.push(loaded.summary);
    }
    reader.finish().map_err(whole)?;
    // Every row of every table is in: deferred checks run now, and the keys set aside come
    // back, validated, before COMMIT.
    schema::check_deferred(&mut tx).map_err(whole)?;
    let mut not_valid = 0;
    for (i, fk) in &deferred {
        let s = &steps[*i];
        match restore_validated(&mut tx, fk, s.args.defer_fks, &oids).map_err(|e| (Some(*i), e))? {
            None => {}
            Some(line) => {
                not_valid += 1;
                note!(TOOL, "step '{}' ({}): {line}", s.name, s.args.table);
            }
        }
    }
    if deferred.len() > not_valid {
        note!(TOOL, "{} foreign keys set aside for the load are back and validated", deferred.len() - not_valid);
    }
    let committed = crate::end(tx, id, &session.target, p.run.dry_run).map_err(whole)?;
    Ok((tables.iter().map(Table::qualified).zip(summaries).collect(), committed, id.xid))
}

/// Puts a key set aside for the load back, validated. A `--defer-fks` step's key into a table
/// this run does not load, whose parents are not all there yet (BellSystems' phase 1 loads the
/// quotations, phase 2 their customers), comes back NOT VALID as a single-table `--defer-fks`
/// load leaves it: returns the note that says how to validate it later.
fn restore_validated(
    tx: &mut postgres::Transaction,
    fk: &schema::ForeignKey,
    defer_fks: bool,
    run_tables: &[u32],
) -> Result<Option<String>> {
    let one = std::slice::from_ref(fk);
    if !defer_fks {
        return schema::restore_foreign_keys_validated(tx, one).map(|()| None);
    }
    let parent: u32 = tx
        .query_one("SELECT $1::text::regclass::oid", &[&fk.key.parent])
        .map_err(|e| pg_error(format!("look up the table foreign key {} references", fk.key.name), e))?
        .get(0);
    if run_tables.contains(&parent) {
        return schema::restore_foreign_keys_validated(tx, one).map(|()| None);
    }
    // Validated if it can be, also when an earlier run of this step left it NOT VALID.
    let mut valid =
        schema::ForeignKey { table: fk.table.clone(), table_display: fk.table_display.clone(), key: fk.key.clone() };
    valid.key.validated = true;
    let mut sp = tx.savepoint("pgferry_fk").map_err(|e| pg_error("set a savepoint", e))?;
    match schema::restore_foreign_keys_validated(&mut sp, std::slice::from_ref(&valid)) {
        Ok(()) => sp.commit().map_err(|e| pg_error("release a savepoint", e)).map(|()| None),
        Err(Error::Data(_)) => {
            sp.rollback().map_err(|e| pg_error("roll back to a savepoint", e))?;
            schema::restore_foreign_keys(tx, one).map(Some)
        }
        Err(e) => Err(e),
    }
}
