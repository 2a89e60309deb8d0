//! The migration plan file (docs/plan.md): NDJSON, one step per line, `#` comments.
//! `scripts/migrate`, `scripts/verify`, `scripts/partition-cron` and `count-check --plan`
//! read the same file through this parser.

use crate::error::{Error, Result};
use serde_json::{Map, Value};

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

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The line of the plan file it came from (1-based), for messages.
    pub line: u64,
    pub step: String,
    pub source: String,
    pub target: String,
    pub dump: Vec<String>,
    pub export: Vec<String>,
    pub load: Vec<String>,
    pub check: Vec<String>,
    pub partitioned: Option<Partitioned>,
}

/// The source kinds a plan may name (the same syntax as `count-check`).
pub const SOURCE_KINDS: &[&str] = &["sqlite:", "firestore:", "firestore-group:", "firestore-doc:", "ndjson:"];

const MEMBERS: &[&str] = &["step", "source", "target", "dump", "export", "load", "check", "partitioned"];

/// Reads a plan file; a missing file is exit 66, a malformed one 65 naming the line.
pub fn read(path: &str) -> Result<Vec<Step>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("read the plan '{path}'"), e))?;
    parse(&text).map_err(|e| e.context(format!("plan '{path}'")))
}

/// Parses a plan's text. Steps come back in file order; step names must be unique.
pub fn parse(text: &str) -> Result<Vec<Step>> {
    let mut steps: Vec<Step> = Vec::new();
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
        if !SOURCE_KINDS.iter().any(|p| source.starts_with(p)) {
            return Err(bad(format!("source '{source}' must start with one of {}", SOURCE_KINDS.join(" "))));
        }
        let partitioned = match obj.get("partitioned") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) => {
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
        steps.push(Step {
            line,
            step,
            source,
            target: string("target")?,
            dump: args("dump")?,
            export: args("export")?,
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
    fn mistakes_name_their_line() {
        let cases = [
            (r#"{"step": "1", "target": "t"}"#, "line 1: missing 'source'"),
            (r#"{"step": "1", "source": "mysql:x", "target": "t"}"#, "must start with one of"),
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
        let dup = "{\"step\":\"a\",\"source\":\"ndjson:x\",\"target\":\"t\"}\n{\"step\":\"a\",\"source\":\"ndjson:y\",\"target\":\"u\"}";
        assert!(parse(dup).unwrap_err().message().contains("line 2: step 'a' is already used on line 1"));
    }
}
