//! The migration plan file (docs/plan.md): NDJSON, one step per line, `#` comments.
//! `scripts/migrate`, `scripts/verify`, `scripts/partition-cron` and `count-check --plan`
//! read the same file through this parser.

use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::io::Write;

/// The `partitioned` member: the target is partitioned by month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioned {
    /// First month, `YYYY-MM`.
    pub from: String,
    /// Months to create ahead.
    pub ahead: Option<u32>,
    /// Months to keep (retention).
    pub keep: Option<u32>,
}

/// Where a step's rows come from: the `source` member, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `sqlite:PATH:TABLE` (the table after the last ':').
    Sqlite { db: String, table: String },
    /// `firestore:COLLECTION_PATH`.
    Collection(String),
    /// `firestore-group:ID`: every collection with that id (a collection group).
    Group(String),
    /// `firestore-doc:DOCUMENT_PATH`: one document as one row.
    Document(String),
    /// `ndjson:FILE`: a stream already on disk.
    Ndjson(String),
    /// `json:PATH` with the step's `jq` program: the app's own JSON files (a file, or a
    /// pattern with `*`), turned into rows by jq (src/jsonsrc.rs).
    Json(String),
}

impl Source {
    /// Parses a `source` member; the message says what the syntax is.
    pub fn parse(s: &str) -> std::result::Result<Source, String> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let segments = |p: &str| p.trim_matches('/').split('/').filter(|x| !x.is_empty()).count();
        let src = match kind {
            "sqlite" => match rest.rsplit_once(':') {
                Some((db, table)) if !db.is_empty() && !table.is_empty() => {
                    Source::Sqlite { db: db.into(), table: table.into() }
                }
                _ => return Err(format!("source '{s}': a SQLite source is sqlite:PATH:TABLE")),
            },
            "firestore" if segments(rest) % 2 == 1 => Source::Collection(rest.trim_matches('/').into()),
            "firestore" => {
                return Err(format!(
                    "source '{s}': a collection path has an odd number of segments (firestore-doc: for a document)"
                ))
            }
            "firestore-doc" if segments(rest) >= 2 && segments(rest) % 2 == 0 => {
                Source::Document(rest.trim_matches('/').into())
            }
            "firestore-doc" => {
                return Err(format!(
                    "source '{s}': a document path has an even number of segments (collection/document)"
                ))
            }
            "firestore-group" if !rest.is_empty() && !rest.contains('/') => Source::Group(rest.into()),
            "firestore-group" => return Err(format!("source '{s}': a collection group is one collection id, no '/'")),
            "ndjson" if !rest.is_empty() => Source::Ndjson(rest.into()),
            "json" if !rest.is_empty() => Source::Json(rest.into()),
            _ => return Err(format!("source '{s}' must be one of {}", SOURCE_SYNTAX.join(", "))),
        };
        Ok(src)
    }

    /// The kind's name in resolved steps: the source's prefix.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Sqlite { .. } => "sqlite",
            Source::Collection(_) => "firestore",
            Source::Group(_) => "firestore-group",
            Source::Document(_) => "firestore-doc",
            Source::Ndjson(_) => "ndjson",
            Source::Json(_) => "json",
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The line of the plan file it came from (1-based), for messages.
    pub line: u64,
    pub step: String,
    /// The `source` member as written (what `_migration_runs.source` records).
    pub source: String,
    pub src: Source,
    pub target: String,
    pub dump: Vec<String>,
    pub export: Vec<String>,
    /// The `load` member as written; [`Step::load_args`] is what pg-load runs with.
    pub load: Vec<String>,
    pub check: Vec<String>,
    pub partitioned: Option<Partitioned>,
    /// The `jq` member: a json: source's program (each file's document is `.`).
    pub jq: Option<String>,
}

impl Step {
    /// The producer's argv: the command whose stdout is this step's stream.
    pub fn producer(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        match &self.src {
            Source::Sqlite { db, table } => {
                v.push("sqlite-dump".into());
                v.extend(self.dump.iter().cloned());
                v.extend([db.clone(), table.clone()]);
            }
            Source::Collection(p) | Source::Document(p) => {
                v.push("fs-export".into());
                v.extend(self.export.iter().cloned());
                v.push(p.clone());
            }
            Source::Group(id) => {
                v.push("fs-export".into());
                v.extend(self.export.iter().cloned());
                v.extend(["--group".into(), id.clone()]);
            }
            Source::Ndjson(f) => v.extend(["cat".into(), "--".into(), f.clone()]),
            // No file matching yet: jq is given the pattern itself, fails on it, and writes
            // no end record (preflight reports the missing file first).
            Source::Json(p) => {
                let prog = self.jq.as_deref().unwrap_or(".");
                v = crate::jsonsrc::producer(p, prog).unwrap_or_else(|_| {
                    vec!["jq".into(), "-n".into(), "-c".into(), crate::jsonsrc::wrap(prog), p.clone()]
                });
            }
        }
        v
    }

    /// pg-load's arguments for this step: the plan's `load`, plus `--ensure-partitions` on a
    /// partitioned target, so that the load creates the partitions its rows need inside its
    /// own transaction (an atomic run or a dry run leaves nothing behind when it rolls back).
    pub fn load_args(&self) -> Vec<String> {
        let mut v = self.load.clone();
        if self.partitioned.is_some() && !v.iter().any(|a| a == "--ensure-partitions") {
            v.push("--ensure-partitions".into());
        }
        v
    }

    /// A cheap command that fails unless the source can be read, for preflight: Firestore's
    /// count aggregation. (SQLite tables and ndjson files are checked by `pg-load --preflight`.)
    pub fn probe(&self) -> Vec<String> {
        let v = |rest: &[&str]| ["fs-export", "--count"].iter().chain(rest).map(|s| s.to_string()).collect();
        match &self.src {
            Source::Collection(p) | Source::Document(p) => v(&[p]),
            Source::Group(id) => v(&["--group", id]),
            Source::Sqlite { .. } | Source::Ndjson(_) | Source::Json(_) => vec![],
        }
    }

    /// The whole pg-load command of a per-step run; the run log records the step's name.
    pub fn consumer(&self) -> Vec<String> {
        let mut v = vec!["pg-load".to_string()];
        v.extend(self.load_args());
        v.extend(["--step".into(), self.step.clone(), "--source".into(), self.source.clone(), self.target.clone()]);
        v
    }

    /// The table record that starts this step's segment of a plan stream (docs/stream.md §7).
    pub fn marker(&self) -> String {
        marker(&self.step, &self.target)
    }

    /// The SQLite database this step reads, if any.
    pub fn sqlite(&self) -> Option<&str> {
        match &self.src {
            Source::Sqlite { db, .. } => Some(db),
            _ => None,
        }
    }

    /// The files freeze watches for this step: the SQLite database (freeze adds its -wal),
    /// or a json: source's file or the directory above its first wildcard (what backup keeps).
    /// An ndjson: file is a stream made elsewhere, so it is not watched.
    pub fn watch(&self) -> Vec<String> {
        match &self.src {
            Source::Json(p) => vec![crate::jsonsrc::root(p)],
            _ => self.sqlite().map(|d| vec![d.to_string()]).unwrap_or_default(),
        }
    }

    /// `pg-partition ensure` for the migration: from the first month to AHEAD months ahead.
    pub fn ensure(&self) -> Vec<String> {
        let Some(p) = &self.partitioned else { return vec![] };
        let mut v: Vec<String> = vec!["pg-partition".into(), "ensure".into(), self.target.clone()];
        v.extend(["--from".into(), p.from.clone()]);
        if let Some(a) = p.ahead {
            v.extend(["--ahead".into(), a.to_string()]);
        }
        v
    }

    /// `pg-partition ensure` for cron: the current month and AHEAD more [default: 1].
    pub fn cron_ensure(&self) -> Vec<String> {
        let Some(p) = &self.partitioned else { return vec![] };
        let ahead = p.ahead.unwrap_or(1).to_string();
        vec!["pg-partition".into(), "ensure".into(), self.target.clone(), "--ahead".into(), ahead]
    }

    /// `pg-partition retain` for cron, when the step says how many months to keep; the
    /// script adds --detach or --drop (the operator's configuration).
    pub fn retain(&self) -> Vec<String> {
        match self.partitioned.as_ref().and_then(|p| p.keep) {
            Some(k) => {
                vec!["pg-partition".into(), "retain".into(), self.target.clone(), "--keep".into(), k.to_string()]
            }
            None => vec![],
        }
    }

    /// The resolved step (docs/plan.md "Resolved steps"): what the scripts run, as JSON.
    pub fn resolved(&self) -> Value {
        json!({
            "step": self.step,
            "line": self.line,
            "source": self.source,
            "target": self.target,
            "kind": self.src.kind(),
            "producer": self.producer(),
            "marker": self.marker(),
            "load": self.load_args(),
            "consumer": self.consumer(),
            "check": self.check,
            "probe": self.probe(),
            "sqlite": self.sqlite(),
            "watch": self.watch(),
            "ensure": self.ensure(),
            "cron_ensure": self.cron_ensure(),
            "retain": self.retain(),
        })
    }
}

/// The table record `{"$table": {"step": STEP, "target": TARGET}}`, one compact line.
pub fn marker(step: &str, target: &str) -> String {
    json!({"$table": {"step": step, "target": target}}).to_string()
}

/// The source syntax, for messages.
pub const SOURCE_SYNTAX: &[&str] = &[
    "sqlite:PATH:TABLE",
    "firestore:COLLECTION_PATH",
    "firestore-group:ID",
    "firestore-doc:DOCUMENT_PATH",
    "ndjson:FILE",
    "json:PATH (with \"jq\")",
];

const MEMBERS: &[&str] = &["step", "source", "target", "dump", "export", "load", "check", "partitioned", "jq"];

/// Reads a plan file; a missing file is exit 66, a malformed one 65 naming the line.
pub fn read(path: &str) -> Result<Vec<Step>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("read the plan '{path}'"), e))?;
    let steps = parse(&text).map_err(|e| e.context(format!("plan '{path}'")))?;
    if steps.is_empty() {
        return Err(Error::Data(format!("plan '{path}': no steps")));
    }
    Ok(steps)
}

/// The steps a run selects: all, those from `from` on, or the named ones (in plan order).
/// A name the plan does not have is a usage error.
pub fn select(steps: Vec<Step>, from: Option<&str>, only: &[String]) -> Result<Vec<Step>> {
    if from.is_some() && !only.is_empty() {
        return Err(Error::Usage("give --from or --steps, not both".into()));
    }
    for name in from.into_iter().chain(only.iter().map(String::as_str)) {
        if !steps.iter().any(|s| s.step == name) {
            return Err(Error::Usage(format!("the plan has no step '{name}'")));
        }
    }
    Ok(match from {
        Some(f) => steps.into_iter().skip_while(|s| s.step != f).collect(),
        None => steps.into_iter().filter(|s| only.is_empty() || only.contains(&s.step)).collect(),
    })
}

/// Gives every step whose `load` names no `--mode` the mode `mode` (a run-level `--mode`, as
/// `scripts/migrate --mode mirror` asks after a rollback); a step's own mode stays.
pub fn default_mode(steps: &mut [Step], mode: &str) {
    for s in steps {
        if !s.load.iter().any(|a| a == "--mode" || a.starts_with("--mode=")) {
            s.load.extend(["--mode".to_string(), mode.to_string()]);
        }
    }
}

/// Prints the selected steps of a plan, resolved, one JSON object per line (`pg-load --resolve`).
pub fn print_resolved(a: &ResolveArgs, out: &mut impl Write) -> Result<()> {
    let mut steps = select(read(&a.plan)?, a.from.as_deref(), &a.only)?;
    if let Some(m) = &a.mode {
        default_mode(&mut steps, m);
    }
    for s in steps {
        writeln!(out, "{}", s.resolved()).map_err(|e| Error::io("write the resolved plan", e))?;
    }
    out.flush().map_err(|e| Error::io("write the resolved plan", e))
}

/// What `pg-load --plan PLAN --resolve [--from STEP | --steps A,B]` asks for.
pub struct ResolveArgs {
    pub plan: String,
    pub from: Option<String>,
    pub only: Vec<String>,
    /// The mode of steps that do not name one.
    pub mode: Option<String>,
}

/// Parses `--resolve` and its options (pg-load hands them over; its own options do not apply).
pub fn parse_resolve(args: &mut pico_args::Arguments) -> Result<ResolveArgs> {
    args.contains("--resolve");
    Ok(ResolveArgs {
        plan: crate::cli::opt(args, "--plan")?.ok_or_else(|| Error::Usage("--resolve needs --plan PLAN".into()))?,
        from: crate::cli::opt(args, "--from")?,
        only: crate::cli::list(args, "--steps")?,
        mode: crate::cli::opt(args, "--mode")?,
    })
}

/// Prints the resolved steps on stdout.
pub fn resolve(a: ResolveArgs) -> Result<crate::cli::Status> {
    print_resolved(&a, &mut std::io::stdout().lock())?;
    Ok(crate::cli::Status::Ok)
}

/// Parses a plan's text. Steps come back in file order; step names must be unique.
pub fn parse(text: &str) -> Result<Vec<Step>> {
    let mut steps: Vec<Step> = Vec::new();
    // A byte order mark (Windows editors write one) is not part of the first step.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        let line = i as u64 + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let bad = |m: String| Error::Data(format!("line {line}: {m}"));
        let obj: Map<String, Value> = match serde_json::from_str::<Value>(t) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(bad("a step must be a JSON object".into())),
            Err(e) => return Err(bad(format!("malformed JSON: {}", first_part(&e.to_string())))),
        };
        // serde keeps the last of a repeated member without a word; a plan that says two
        // things about one step is refused instead of half-obeyed.
        if let Some(k) = crate::stream::first_repeated_key(t) {
            return Err(bad(format!("member '{k}' appears twice")));
        }
        for k in obj.keys() {
            if !MEMBERS.contains(&k.as_str()) {
                return Err(bad(format!("unknown member '{k}' (members: {})", MEMBERS.join(", "))));
            }
        }
        let string = |k: &str| -> Result<String> {
            match obj.get(k) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                Some(Value::Number(n)) if k == "step" => Ok(n.to_string()),
                Some(_) => Err(bad(format!("'{k}' must be a non-empty string"))),
                None => Err(bad(format!("missing '{k}'"))),
            }
        };
        let args = |k: &str| -> Result<Vec<String>> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(vec![]),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_string).ok_or_else(|| bad(format!("'{k}' must be an array of strings")))
                    })
                    .collect(),
                Some(_) => Err(bad(format!("'{k}' must be an array of strings"))),
            }
        };
        let step = string("step")?;
        let source = string("source")?;
        let src = Source::parse(&source).map_err(bad)?;
        let partitioned = match obj.get("partitioned") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) => {
                if let Some(k) = p.keys().find(|k| !["from", "ahead", "keep"].contains(&k.as_str())) {
                    return Err(bad(format!("unknown member 'partitioned.{k}' (members: from, ahead, keep)")));
                }
                let from = p
                    .get("from")
                    .and_then(Value::as_str)
                    .filter(|s| is_month(s))
                    .ok_or_else(|| bad("'partitioned.from' must be a month YYYY-MM".into()))?
                    .to_string();
                let num = |k: &str| -> Result<Option<u32>> {
                    match p.get(k) {
                        None | Some(Value::Null) => Ok(None),
                        Some(v) => v
                            .as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .map(Some)
                            .ok_or_else(|| bad(format!("'partitioned.{k}' must be a whole number of months"))),
                    }
                };
                Some(Partitioned { from, ahead: num("ahead")?, keep: num("keep")? })
            }
            Some(_) => return Err(bad("'partitioned' must be an object".into())),
        };
        if let Some(prev) = steps.iter().find(|s| s.step == step) {
            return Err(bad(format!("step '{step}' is already used on line {}", prev.line)));
        }
        let (dump, export) = (args("dump")?, args("export")?);
        if !dump.is_empty() && src.kind() != "sqlite" {
            return Err(bad(format!("'dump' is for sqlite: sources; this step reads {}", src.kind())));
        }
        if !export.is_empty() && !src.kind().starts_with("firestore") {
            return Err(bad(format!("'export' is for firestore sources; this step reads {}", src.kind())));
        }
        let jq = match obj.get("jq") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) if !p.trim().is_empty() => Some(p.clone()),
            Some(_) => return Err(bad("'jq' must be a non-empty string (a jq program)".into())),
        };
        match (&src, &jq) {
            (Source::Json(_), None) => {
                return Err(bad("a json: source needs 'jq': the program that turns each file into rows".into()))
            }
            (Source::Json(_), Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(bad(format!("'jq' is for json: sources; this step reads {}", src.kind()))),
        }
        steps.push(Step {
            jq,
            line,
            step,
            source,
            src,
            target: string("target")?,
            dump,
            export,
            load: args("load")?,
            check: args("check")?,
            partitioned,
        });
    }
    Ok(steps)
}

fn is_month(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit)
        && matches!(s[5..].parse::<u32>(), Ok(1..=12))
}

fn first_part(s: &str) -> String {
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"# BellSystems phase 1 and 2 (abridged)
{"step": "1.1", "source": "sqlite:/srv/app/data/app.sqlite:melody_drafts", "target": "melody_drafts"}
{"step": "1.6", "source": "sqlite:/srv/app/data/app.sqlite:crm_quotations", "target": "crm_quotations", "load": ["--defer-fks"]}

{"step": "1.12", "source": "sqlite:/srv/app/data/app.sqlite:device_logs", "target": "device_logs", "partitioned": {"from": "2024-01", "ahead": 2, "keep": 6}}
{"step": "2.1", "source": "firestore-doc:settings/console", "target": "console_settings"}
{"step": "2.5", "source": "firestore-group:orders", "target": "crm_orders", "export": ["--parent-field", "customer_id"], "check": ["--key", "id"]}
"#;

    #[test]
    fn the_documented_example_parses() {
        let steps = parse(EXAMPLE).unwrap();
        assert_eq!(steps.len(), 5);
        assert_eq!(steps[0].step, "1.1");
        assert_eq!(steps[0].line, 2);
        assert_eq!(steps[1].load, vec!["--defer-fks"]);
        assert_eq!(steps[2].partitioned, Some(Partitioned { from: "2024-01".into(), ahead: Some(2), keep: Some(6) }));
        assert_eq!(steps[4].check, vec!["--key", "id"]);
        assert_eq!(steps[4].export, vec!["--parent-field", "customer_id"]);
        assert_eq!(steps[3].line, 6);
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_not_mistakes() {
        let text = "\u{feff}{\"step\": \"1\", \"source\": \"ndjson:x\", \"target\": \"t\"}\r\n\r\n# c\r\n";
        let steps = parse(text).unwrap();
        assert_eq!((steps.len(), steps[0].step.as_str(), steps[0].line), (1, "1", 1));
    }

    #[test]
    fn mistakes_name_their_line() {
        let cases = [
            (r#"{"step": "1", "target": "t"}"#, "line 1: missing 'source'"),
            (r#"{"step": "1", "source": "mysql:x", "target": "t"}"#, "must be one of sqlite:PATH:TABLE"),
            (r#"{"step": "1", "source": "sqlite:app.db", "target": "t"}"#, "sqlite:PATH:TABLE"),
            (r#"{"step": "1", "source": "firestore:a/b", "target": "t"}"#, "odd number of segments"),
            (r#"{"step": "1", "source": "firestore-doc:settings", "target": "t"}"#, "even number of segments"),
            (r#"{"step": "1", "source": "firestore-group:a/b", "target": "t"}"#, "one collection id"),
            (r#"{"step": "1", "source": "ndjson:x", "target": "t", "dump": ["--x"]}"#, "'dump' is for sqlite:"),
            (r#"{"step": "1", "source": "sqlite:a:b", "target": "t", "export": ["--x"]}"#, "'export' is for firestore"),
            (
                r#"{"step": "1", "source": "sqlite:a:b", "target": "t", "partitioned": {"from": "2024-01", "kep": 2}}"#,
                "'partitioned.kep'",
            ),
            (r#"{"step": "1", "source": "sqlite:a:b", "target": "t", "laod": []}"#, "unknown member 'laod'"),
            (r#"{"step": "1", "source": "sqlite:a:b", "target": "t", "check": "--key id"}"#, "array of strings"),
            ("[1]", "must be a JSON object"),
            ("{nope", "malformed JSON"),
            (r#"{"step": "1", "source": "sqlite:a:b", "target": "t", "partitioned": {"from": "2024-13"}}"#, "YYYY-MM"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.exit_code(), 65);
            assert!(e.message().contains(want), "{text}: {}", e.message());
        }
        for (text, want) in [
            (
                r#"{"step": "1", "source": "sqlite:a:b", "target": "t", "step": "2"}"#,
                "line 1: member 'step' appears twice",
            ),
            (
                r#"{"step": "1", "source": "sqlite:a:b", "target": "t", "partitioned": {"from": "2024-01", "keep": 2, "keep": 6}}"#,
                "line 1: member 'partitioned.keep' appears twice",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.exit_code(), 65);
            assert_eq!(e.message(), want);
        }
        let dup = "{\"step\":\"a\",\"source\":\"ndjson:x\",\"target\":\"t\"}\n{\"step\":\"a\",\"source\":\"ndjson:y\",\"target\":\"u\"}";
        assert!(parse(dup).unwrap_err().message().contains("line 2: step 'a' is already used on line 1"));
    }

    #[test]
    fn steps_resolve_to_the_commands_the_scripts_run() {
        let steps = parse(EXAMPLE).unwrap();
        let r: Vec<Value> = steps.iter().map(Step::resolved).collect();
        assert_eq!(r[0]["producer"], json!(["sqlite-dump", "/srv/app/data/app.sqlite", "melody_drafts"]));
        assert_eq!(r[0]["marker"], r#"{"$table":{"step":"1.1","target":"melody_drafts"}}"#);
        assert_eq!(r[0]["sqlite"], "/srv/app/data/app.sqlite");
        assert_eq!(r[0]["watch"], json!(["/srv/app/data/app.sqlite"]));
        assert_eq!(r[0]["ensure"], json!([]));
        assert_eq!(
            r[1]["consumer"],
            json!(["pg-load", "--defer-fks", "--step", "1.6", "--source", steps[1].source, "crm_quotations"])
        );
        assert_eq!(r[2]["load"], json!(["--ensure-partitions"]));
        assert_eq!(
            r[2]["ensure"],
            json!(["pg-partition", "ensure", "device_logs", "--from", "2024-01", "--ahead", "2"])
        );
        assert_eq!(r[2]["cron_ensure"], json!(["pg-partition", "ensure", "device_logs", "--ahead", "2"]));
        assert_eq!(r[2]["retain"], json!(["pg-partition", "retain", "device_logs", "--keep", "6"]));
        assert_eq!(r[3]["kind"], "firestore-doc");
        assert_eq!(r[3]["producer"], json!(["fs-export", "settings/console"]));
        assert_eq!(r[3]["sqlite"], Value::Null);
        assert_eq!(r[4]["producer"], json!(["fs-export", "--parent-field", "customer_id", "--group", "orders"]));
        assert_eq!(r[4]["check"], json!(["--key", "id"]));
        assert_eq!(r[4]["probe"], json!(["fs-export", "--count", "--group", "orders"]));
        assert_eq!(r[3]["probe"], json!(["fs-export", "--count", "settings/console"]));
        assert_eq!(r[0]["probe"], json!([]));
        assert_eq!(r[4]["line"], 7);
        let nd = parse(r#"{"step": "x", "source": "ndjson:/tmp/a b.ndjson", "target": "t"}"#).unwrap();
        assert_eq!(nd[0].producer(), vec!["cat", "--", "/tmp/a b.ndjson"]);
        assert!(nd[0].watch().is_empty());
    }

    #[test]
    fn json_sources_need_their_program_and_watch_the_app_files() {
        let steps = parse(
            r#"{"step": "v1.6", "source": "json:/srv/fw/data/users/*/activity_log.json", "jq": ".[] | {user_id: $dir} + .", "target": "user_activities"}"#,
        )
        .unwrap();
        let r = steps[0].resolved();
        assert_eq!(r["kind"], "json");
        assert_eq!(r["watch"], json!(["/srv/fw/data/users"]));
        assert_eq!(r["sqlite"], Value::Null);
        assert_eq!(r["producer"][0], "jq");
        assert!(r["producer"][3].as_str().unwrap().contains("{user_id: $dir} + ."), "{}", r["producer"]);
        for (text, want) in [
            (r#"{"step": "1", "source": "json:/a.json", "target": "t"}"#, "a json: source needs 'jq'"),
            (r#"{"step": "1", "source": "sqlite:a:b", "target": "t", "jq": "."}"#, "'jq' is for json: sources"),
            (r#"{"step": "1", "source": "json:/a.json", "target": "t", "jq": 3}"#, "'jq' must be a non-empty string"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message().contains(want), "{text}: {}", e.message());
        }
    }

    #[test]
    fn a_run_level_mode_applies_where_a_step_names_none() {
        let mut steps = parse(EXAMPLE).unwrap();
        steps[1].load = vec!["--mode=upsert".into()];
        default_mode(&mut steps, "mirror");
        assert_eq!(steps[0].consumer()[1..3], ["--mode", "mirror"]);
        assert_eq!(steps[1].load, ["--mode=upsert"]);
        assert_eq!(steps[2].load_args(), ["--mode", "mirror", "--ensure-partitions"]);
    }

    #[test]
    fn a_marker_is_one_line_whatever_the_names() {
        let m = marker("a \"b\"\n", "crm.\"Orders\"");
        assert!(!m.contains('\n'));
        let v: Value = serde_json::from_str(&m).unwrap();
        assert_eq!(v["$table"]["step"], "a \"b\"\n");
        assert_eq!(v["$table"]["target"], "crm.\"Orders\"");
    }

    #[test]
    fn select_takes_from_or_named_steps_in_plan_order() {
        let names = |v: Vec<Step>| v.into_iter().map(|s| s.step).collect::<Vec<_>>();
        let all = parse(EXAMPLE).unwrap();
        assert_eq!(names(select(all.clone(), Some("1.12"), &[]).unwrap()), ["1.12", "2.1", "2.5"]);
        assert_eq!(names(select(all.clone(), None, &["2.5".into(), "1.1".into()]).unwrap()), ["1.1", "2.5"]);
        assert_eq!(select(all.clone(), None, &[]).unwrap().len(), 5);
        let e = select(all.clone(), Some("9"), &[]).unwrap_err();
        assert_eq!((e.exit_code(), e.message()), (64, "the plan has no step '9'"));
        assert_eq!(select(all, Some("1.1"), &["2.1".into()]).unwrap_err().exit_code(), 64);
    }
}
