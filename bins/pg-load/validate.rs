//! `pg-load --plan PLAN --validate-fks`: the end of a migrate. A `--defer-fks` step leaves its
//! table's foreign keys NOT VALID where its parents come later: in a per-step run (each step
//! its own transaction), or in an earlier domain's plan (BellSystems' phase 1 loads the
//! quotations, phase 2 their customers). Once the plan is in, every NOT VALID key of its
//! `--defer-fks` steps whose parent table a step loads, and every NOT VALID key into one of
//! its tables, is validated, as an atomic run validates its own before COMMIT. Keys into
//! tables no step loads stay NOT VALID, and say so.

use pgferry::cli::{self, Status};
use pgferry::pg::{self, pg_error, quote_ident};
use pgferry::{note, plan, warn, Error, Result};

const TOOL: &str = "pg-load";

pub struct Args {
    plan: String,
    db: Option<String>,
}

pub fn parse(args: &mut pico_args::Arguments) -> Result<Args> {
    args.contains("--validate-fks");
    Ok(Args {
        plan: cli::opt(args, "--plan")?.ok_or_else(|| Error::Usage("--validate-fks needs --plan PLAN".into()))?,
        db: cli::opt(args, "--db")?,
    })
}

pub fn run(a: Args) -> Result<Status> {
    let steps = plan::read(&a.plan)?;
    let target = pg::Target::resolve(a.db.as_deref())?;
    let mut c = target.connect()?;
    // Each step's table (a missing one is the load's business, not this check's).
    let mut tables: Vec<(u32, &plan::Step)> = vec![];
    for s in &steps {
        let r = c
            .query_one("SELECT to_regclass($1::text)::oid", &[&s.target])
            .map_err(|e| pg_error(format!("look up table '{}'", s.target), e))?;
        if let Some(oid) = r.get::<_, Option<u32>>(0) {
            tables.push((oid, s));
        }
    }
    let loaded: Vec<u32> = tables.iter().map(|(o, _)| *o).collect();
    let deferring: Vec<u32> =
        tables.iter().filter(|(_, s)| s.load.iter().any(|l| l == "--defer-fks")).map(|(o, _)| *o).collect();
    let keys = c
        .query(
            "SELECT conname::text, conrelid, confrelid, conrelid::regclass::text, confrelid::regclass::text \
             FROM pg_constraint WHERE contype = 'f' AND conparentid = 0 AND NOT convalidated \
             AND (conrelid = ANY($1) OR confrelid = ANY($2)) ORDER BY conrelid::regclass::text, conname",
            &[&deferring, &loaded],
        )
        .map_err(|e| pg_error("read the foreign keys left NOT VALID", e))?;
    for k in keys {
        let (name, child, parent, table, parent_name): (String, u32, u32, String, String) =
            (k.get(0), k.get(1), k.get(2), k.get(3), k.get(4));
        // A step of this plan deferred it, or it points into this plan's tables from elsewhere.
        let ours = tables.iter().find(|(o, s)| *o == child && s.load.iter().any(|l| l == "--defer-fks"));
        let what = match ours {
            Some((_, s)) => format!("step '{}' ({})", s.step, s.target),
            None => format!("table {table}"),
        };
        let sql = format!("ALTER TABLE {table} VALIDATE CONSTRAINT {};", quote_ident(&name));
        if !loaded.contains(&parent) {
            note!(
                TOOL,
                "{what}: foreign key {name} stays NOT VALID: no step of the plan loads {parent_name}; \
                 once it is loaded, run: {sql}"
            );
            continue;
        }
        match c.batch_execute(&sql) {
            Ok(()) => note!(TOOL, "{what}: foreign key {name} validated"),
            Err(e) => {
                let Some(db) = e.as_db_error().filter(|db| db.code().code() == "23503") else {
                    return Err(pg_error(format!("{what}: validate foreign key {name}"), e));
                };
                let detail = db.detail().unwrap_or(db.message()).trim_end_matches('.').to_string();
                // This plan's own deferred key must hold; another table's NOT VALID key may be so
                // on purpose (rows kept without their parent): it is said, and left.
                if ours.is_none() {
                    warn!(TOOL, "{what}: foreign key {name} stays NOT VALID: {detail}");
                    continue;
                }
                return Err(Error::CheckFailed(format!(
                    "{what}: validate foreign key {name}: {detail}; every step is committed, the key stays NOT VALID \
                     (count-check --lint lists the rows)"
                )));
            }
        }
    }
    Ok(Status::Ok)
}
