//! `pg-load --plan PLAN --validate-fks`: the end of a per-step migrate. Each step's load is
//! its own transaction, so a `--defer-fks` step leaves its table's foreign keys NOT VALID
//! (its parents come later); once every step is in, the keys whose parent table a step of
//! the plan loads are validated, as an atomic run validates them before its COMMIT. Keys into
//! tables no step loads (a later domain's plan) stay NOT VALID, and say so.

use pgferry::cli::{self, Status};
use pgferry::pg::{self, pg_error, quote_ident};
use pgferry::{note, plan, Error, Result};

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
    let deferring: Vec<&plan::Step> = steps.iter().filter(|s| s.load.iter().any(|l| l == "--defer-fks")).collect();
    if deferring.is_empty() {
        return Ok(Status::Ok);
    }
    let target = pg::Target::resolve(a.db.as_deref())?;
    let mut c = target.connect()?;
    let oid = |c: &mut postgres::Client, table: &str| -> Result<Option<u32>> {
        let r = c
            .query_one("SELECT to_regclass($1::text)::oid", &[&table])
            .map_err(|e| pg_error(format!("look up table '{table}'"), e))?;
        Ok(r.get(0))
    };
    let mut loaded = vec![];
    for s in &steps {
        loaded.extend(oid(&mut c, &s.target)?);
    }
    for s in deferring {
        let Some(child) = oid(&mut c, &s.target)? else {
            return Err(Error::NoInput(format!("step '{}': table '{}' does not exist", s.step, s.target)));
        };
        let keys = c
            .query(
                "SELECT conname::text, confrelid, conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint \
                 WHERE contype = 'f' AND conrelid = $1 AND conparentid = 0 AND NOT convalidated ORDER BY conname",
                &[&child],
            )
            .map_err(|e| pg_error(format!("read the foreign keys of '{}'", s.target), e))?;
        for k in keys {
            let (name, parent, table, parent_name): (String, u32, String, String) =
                (k.get(0), k.get(1), k.get(2), k.get(3));
            let sql = format!("ALTER TABLE {table} VALIDATE CONSTRAINT {};", quote_ident(&name));
            if !loaded.contains(&parent) {
                note!(
                    TOOL,
                    "step '{}' ({}): foreign key {name} stays NOT VALID: no step of the plan loads {parent_name}; \
                     once it is loaded, run: {sql}",
                    s.step,
                    s.target
                );
                continue;
            }
            c.batch_execute(&sql).map_err(|e| match e.as_db_error() {
                Some(db) if db.code().code() == "23503" => Error::CheckFailed(format!(
                    "step '{}' ({}): validate foreign key {name}: {}; every step is committed, the key stays NOT VALID \
                     (count-check --lint lists the rows)",
                    s.step,
                    s.target,
                    db.detail().unwrap_or(db.message()).trim_end_matches('.')
                )),
                _ => pg_error(format!("step '{}' ({}): validate foreign key {name}", s.step, s.target), e),
            })?;
            note!(TOOL, "step '{}' ({}): foreign key {name} validated", s.step, s.target);
        }
    }
    Ok(Status::Ok)
}
