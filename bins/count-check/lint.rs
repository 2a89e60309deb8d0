//! `--lint`: the seeds' end-of-phase checklist on one PostgreSQL table.

use crate::side::{connect, Ctx};
use pgferry::catalog;
use pgferry::convert::Kind;
use pgferry::pg::{pg_error, quote_ident, quote_literal, Table};
use pgferry::Result;
use serde_json::{json, Value};

/// What looks like a timestamp: ISO 8601 date, optional time, optional zone.
const TIMESTAMP_RE: &str =
    r"^\s*\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}([.,]\d+)?)?)?\s*([Zz]|[+-]\d{2}(:?\d{2})?|UTC|GMT)?\s*$";

/// One problem found.
pub struct Finding {
    pub rule: &'static str,
    pub column: Option<String>,
    pub count: i64,
    pub message: String,
    pub examples: Vec<Value>,
}

impl Finding {
    pub fn json(&self) -> Value {
        json!({"rule": self.rule, "column": self.column, "count": self.count, "message": self.message, "examples": self.examples})
    }
}

pub fn lint(ctx: &Ctx, table: &str, runs_table: &str) -> Result<Vec<Finding>> {
    let mut c = connect(ctx)?;
    let mut tx = c.transaction().map_err(|e| pg_error("begin a read-only transaction", e))?;
    tx.batch_execute("SET TRANSACTION READ ONLY").map_err(|e| pg_error("begin a read-only transaction", e))?;
    let t = Table::resolve(&mut tx, table)?;
    let qt = t.qualified();
    let cols = catalog::table_columns(&mut tx, t.oid, &qt)?;
    let mut findings = Vec::new();

    // Text columns that hold only timestamps, JSON columns with nulls among arrays: one scan.
    let mut select = Vec::new();
    enum Probe {
        Text(String),
        Json(String),
    }
    let mut probes = Vec::new();
    for col in &cols {
        let q = quote_ident(&col.name);
        match &col.kind {
            Kind::Text => {
                select.push(format!("count({q})"));
                select.push(format!("count(*) FILTER (WHERE {q} ~ {})", quote_literal(TIMESTAMP_RE)));
                select.push(format!("min({q})"));
                probes.push(Probe::Text(col.name.clone()));
            }
            Kind::Json | Kind::Jsonb => {
                select.push(format!("count(*) FILTER (WHERE jsonb_typeof({q}::jsonb) = 'array')"));
                select.push(format!("count(*) FILTER (WHERE {q} IS NULL)"));
                select.push(format!("count(*) FILTER (WHERE jsonb_typeof({q}::jsonb) = 'null')"));
                select.push(format!("count(*) FILTER (WHERE jsonb_typeof({q}::jsonb) <> 'null')"));
                probes.push(Probe::Json(col.name.clone()));
            }
            _ => {}
        }
    }
    if !select.is_empty() {
        let row = tx
            .query_one(&format!("SELECT {} FROM {qt}", select.join(", ")), &[])
            .map_err(|e| pg_error(format!("scan table '{table}'"), e))?;
        let mut i = 0;
        for p in probes {
            match p {
                Probe::Text(name) => {
                    let (n, ts): (i64, i64) = (row.get(i), row.get(i + 1));
                    let sample: Option<String> = row.get(i + 2);
                    i += 3;
                    if n > 0 && ts == n {
                        findings.push(Finding {
                            rule: "text-timestamps",
                            column: Some(name.clone()),
                            count: n,
                            message: format!(
                                "column '{name}' is text, but all {n} values look like timestamps (e.g. {}): store them as timestamptz \
                                 (ALTER TABLE {qt} ALTER COLUMN {} TYPE timestamptz USING {}::timestamptz)",
                                sample.as_deref().map(|s| format!("{s:?}")).unwrap_or_default(),
                                quote_ident(&name),
                                quote_ident(&name)
                            ),
                            examples: sample.into_iter().map(Value::String).collect(),
                        });
                    }
                }
                Probe::Json(name) => {
                    let (arrays, sql_null, json_null, values): (i64, i64, i64, i64) =
                        (row.get(i), row.get(i + 1), row.get(i + 2), row.get(i + 3));
                    i += 4;
                    // Every other value is an array: the nulls are arrays that were never set.
                    if arrays > 0 && arrays == values && sql_null + json_null > 0 {
                        findings.push(Finding {
                            rule: "json-null-among-arrays",
                            column: Some(name.clone()),
                            count: sql_null + json_null,
                            message: format!(
                                "column '{name}': {} rows hold null ({sql_null} SQL NULL, {json_null} JSON null) where the other {arrays} \
                                 hold arrays: set them to '[]' (UPDATE {qt} SET {q} = '[]' WHERE {q} IS NULL OR {q}::jsonb = 'null')",
                                sql_null + json_null,
                                q = quote_ident(&name)
                            ),
                            examples: vec![],
                        });
                    }
                }
            }
        }
    }

    // Foreign keys pointing nowhere (loads that deferred or suppressed FK checks).
    let fks = catalog::foreign_keys(&mut tx, t.oid).map_err(|e| e.context(format!("table '{table}'")))?;
    for fk in fks {
        let catalog::ForeignKey { name, parent, validated, columns: child_cols, parent_columns: parent_cols, .. } = fk;
        let not_null: Vec<String> = child_cols.iter().map(|c| format!("c.{} IS NOT NULL", quote_ident(c))).collect();
        let join: Vec<String> = child_cols
            .iter()
            .zip(&parent_cols)
            .map(|(c, p)| format!("p.{} = c.{}", quote_ident(p), quote_ident(c)))
            .collect();
        let obj: Vec<String> =
            child_cols.iter().map(|c| format!("{}, c.{}", quote_literal(c), quote_ident(c))).collect();
        let sql = format!(
            "SELECT count(*) OVER (), json_build_object({})::text FROM {qt} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {}) LIMIT 5",
            obj.join(", "),
            not_null.join(" AND "),
            join.join(" AND ")
        );
        let rows = tx.query(&sql, &[]).map_err(|e| pg_error(format!("check foreign key '{name}' of '{table}'"), e))?;
        if let Some(first) = rows.first() {
            let n: i64 = first.get(0);
            let examples: Vec<Value> =
                rows.iter().filter_map(|r| serde_json::from_str(&r.get::<_, String>(1)).ok()).collect();
            findings.push(Finding {
                rule: "foreign-key-orphans",
                column: Some(child_cols.join(",")),
                count: n,
                message: format!(
                    "foreign key '{name}' ({}) → {parent}: {n} rows point nowhere, e.g. {}{}",
                    child_cols.join(", "),
                    examples.first().map(|v| v.to_string()).unwrap_or_default(),
                    if validated {
                        ""
                    } else {
                        " (the constraint is NOT VALID: load the parents, then VALIDATE CONSTRAINT)"
                    }
                ),
                examples,
            });
        }
    }

    // Loads that failed and were never followed by a success.
    // Through the one run-log reader: the user's own table or pgferry's, orphans settled from the server.
    if let Some(reader) = pgferry::runlog::Reader::open(&mut tx, runs_table)? {
        let names = vec![table.to_string(), t.display(), format!("{}.{}", t.schema, t.name)];
        let runs = reader.unresolved_failures(&mut tx, &names)?;
        if !runs.is_empty() {
            let examples: Vec<Value> = runs
                .iter()
                .map(|r| json!({"id": r.id, "outcome": r.outcome, "started_at": r.started_at, "error": r.error.clone().or(r.note.clone()).unwrap_or_default()}))
                .collect();
            let last = &examples[examples.len() - 1];
            findings.push(Finding {
                rule: "failed-runs",
                column: None,
                count: runs.len() as i64,
                message: format!(
                    "{runs_table}: {} run(s) of '{table}' ended {} and no successful run followed (last: id {}, {}{})",
                    runs.len(),
                    last["outcome"].as_str().unwrap_or("failed"),
                    last["id"],
                    last["started_at"].as_str().unwrap_or(""),
                    match last["error"].as_str() {
                        Some(e) if !e.is_empty() => format!(": {e}"),
                        _ => String::new(),
                    }
                ),
                examples,
            });
        }
    }
    tx.rollback().map_err(|e| pg_error("end the read-only transaction", e))?;
    Ok(findings)
}
