//! `_migration_runs`: one row per run, written on a connection of its own so that a failed
//! run's record survives the rollback of its load.

use crate::error::{Error, Result};
use crate::pg::{pg_error, quote_ident};
use postgres::Client;

/// The columns pgferry writes; an existing table must have them.
const COLUMNS: &[(&str, &str)] = &[
    ("id", "bigserial PRIMARY KEY"),
    ("tool", "text NOT NULL"),
    ("target", "text NOT NULL"),
    ("source", "text"),
    ("mode", "text"),
    ("started_at", "timestamptz NOT NULL DEFAULT now()"),
    ("finished_at", "timestamptz"),
    ("source_rows", "bigint"),
    ("inserted_rows", "bigint"),
    ("present_rows", "bigint"),
    ("dest_rows", "bigint"),
    ("outcome", "text NOT NULL"),
    ("error", "text"),
    ("backend_pid", "integer"),
    ("tls", "boolean"),
    ("client_host", "text"),
    ("version", "text"),
];

/// What a finished run reports.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub source: Option<String>,
    pub source_rows: Option<i64>,
    pub inserted_rows: Option<i64>,
    pub present_rows: Option<i64>,
    pub dest_rows: Option<i64>,
}

pub struct RunLog {
    client: Client,
    table: String,
    id: i64,
}

impl RunLog {
    /// Creates the table if needed, marks runs of `target` that died without finishing
    /// (their backend is gone) as `interrupted`, and records this run as `running`.
    pub fn start(
        mut client: Client,
        table: &str,
        tool: &str,
        target: &str,
        mode: &str,
        backend_pid: i32,
    ) -> Result<RunLog> {
        let qt = quote_table(table);
        let cols: Vec<String> = COLUMNS.iter().map(|(n, t)| format!("{n} {t}")).collect();
        client
            .batch_execute(&format!("CREATE TABLE IF NOT EXISTS {qt} ({})", cols.join(", ")))
            .map_err(|e| pg_error(format!("create the run log '{table}'"), e))?;
        let have: Vec<String> = client
            .query(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
                &[&table],
            )
            .map_err(|e| pg_error(format!("inspect the run log '{table}'"), e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let missing: Vec<&(&str, &str)> = COLUMNS.iter().filter(|(n, _)| !have.iter().any(|h| h == n)).collect();
        let ours = ["tool", "target", "outcome"].iter().all(|c| have.iter().any(|h| h == c));
        if !missing.is_empty() && ours {
            // Written by an older pgferry: add what this version records.
            for (n, t) in &missing {
                client
                    .batch_execute(&format!(
                        "ALTER TABLE {qt} ADD COLUMN IF NOT EXISTS {n} {}",
                        t.replace(" NOT NULL", "")
                    ))
                    .map_err(|e| pg_error(format!("upgrade the run log '{table}'"), e))?;
            }
        } else if !missing.is_empty() {
            let missing: Vec<&str> = missing.iter().map(|(n, _)| *n).collect();
            return Err(Error::Usage(format!(
                "the run log table '{table}' exists with other columns (missing: {}); pass --runs-table NAME to use another table",
                missing.join(", ")
            )));
        }
        client
            .execute(
                &format!(
                    "UPDATE {qt} SET outcome = 'interrupted', finished_at = now(), \
                     error = coalesce(error, 'the run ended without finishing (killed, or its connection was lost); nothing it loaded was committed') \
                     WHERE outcome = 'running' AND target = $1 \
                     AND (backend_pid IS NULL OR backend_pid NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL))"
                ),
                &[&target],
            )
            .map_err(|e| pg_error(format!("update the run log '{table}'"), e))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO {qt} (tool, target, mode, outcome, backend_pid, client_host, version, tls) \
                     VALUES ($1, $2, $3, 'running', $4, $5, $6, (SELECT ssl FROM pg_stat_ssl WHERE pid = $4)) RETURNING id"
                ),
                &[&tool, &target, &mode, &backend_pid, &host, &env!("CARGO_PKG_VERSION")],
            )
            .map_err(|e| pg_error(format!("write the run log '{table}'"), e))?;
        Ok(RunLog { client, table: table.to_string(), id: row.get(0) })
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// Records the end of the run: `success`, `dry-run` or `failed` with its error.
    pub fn finish(&mut self, outcome: &str, o: &Outcome, error: Option<&str>) -> Result<()> {
        let qt = quote_table(&self.table);
        self.client
            .execute(
                &format!(
                    "UPDATE {qt} SET outcome = $2, finished_at = now(), source = coalesce($3, source), source_rows = $4, \
                     inserted_rows = $5, present_rows = $6, dest_rows = $7, error = $8 WHERE id = $1"
                ),
                &[&self.id, &outcome, &o.source, &o.source_rows, &o.inserted_rows, &o.present_rows, &o.dest_rows, &error],
            )
            .map_err(|e| pg_error(format!("write the run log '{}'", self.table), e))?;
        Ok(())
    }
}

fn quote_table(name: &str) -> String {
    match name.split_once('.') {
        Some((s, t)) => format!("{}.{}", quote_ident(s), quote_ident(t)),
        None => quote_ident(name),
    }
}
