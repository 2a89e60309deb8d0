//! Rows from the stream into COPY: each row's keys matched to columns, values converted by
//! column type, rows grouped by the defaulted columns they leave out.

use crate::copy::{CopySink, EncodedRow};
use crate::route::Router;
use crate::{Args, TOOL};
use pgferry::catalog::ColumnInfo;
use pgferry::convert::{self, Cell, Kind, Options};
use pgferry::jsonscan::{self, RawKind};
use pgferry::progress::{self, Progress, Unit};
use pgferry::stream::{self, RowReader};
use pgferry::{Error, Result};
use postgres::Transaction;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;

/// Which columns a COPY carries, and whether each has a binary encoder.
pub struct Columns {
    pub columns: Vec<ColumnInfo>,
    pub binary: bool,
}

impl Columns {
    /// The column named `key`, looking first where the previous key's successor is: streams
    /// usually list keys in column order, so this is one comparison per key.
    fn find(&self, key: &str, hint: usize) -> Option<usize> {
        if self.columns.get(hint).is_some_and(|c| c.name == key) {
            return Some(hint);
        }
        self.columns.iter().position(|c| c.name == key)
    }
}

/// The set of defaulted columns a row leaves out: rows with the same set share a COPY
/// (direct path) or a merge statement (staged path).
pub type Signature = Vec<usize>;

/// Streams rows into COPY. Returns the distinct signatures seen, indexed by segment id;
/// counts into `changes` the values PostgreSQL will change silently (refused with --strict).
#[allow(clippy::too_many_arguments)]
pub fn stream_rows<R: std::io::BufRead>(
    tx: &mut Transaction,
    reader: &mut RowReader<R>,
    plan: &Columns,
    generated: &[&str],
    a: &Args,
    sink: &mut CopySink,
    stage: Option<&str>,
    mut route: Option<&mut Router>,
    changes: &mut convert::Changes,
) -> Result<Vec<Signature>> {
    let n = plan.columns.len();
    let mut rows = RowSource {
        watch: plan.columns.iter().map(convert::may_change).collect(),
        changes: std::mem::take(changes),
        col_opts: match a.opts.has_column_rules() {
            true => plan.columns.iter().map(|c| a.opts.for_column(&c.name)).collect(),
            false => vec![],
        },
        segments: vec![],
        seg_ids: HashMap::new(),
        row: EncodedRow::new(n, plan.binary),
        members: Vec::with_capacity(n + 4),
        unknown: vec![],
        ignored: std::collections::HashSet::new(),
        sig: vec![],
        last_seg: None,
    };
    // Dropped at the end (or on an error): the line is cleared; the summary follows.
    let mut progress = Progress::new(TOOL, &a.table, Unit::Count("rows"), None, progress::terminal());
    // The row read but not yet sent: it opens the next COPY.
    let mut pending = rows.next(reader, plan, generated, a)?;
    while let Some((first_line, seg)) = pending.take() {
        // Direct path: one COPY per run of rows with the same defaulted columns left out.
        // Staged path: one COPY of every column plus the segment id.
        // A row that needs a partition opens the COPY after it is created (none is open now).
        if let Some(r) = route.as_deref_mut() {
            r.prepare(tx, &rows.row, rows.segments[seg].contains(&r.key_column()))?;
        }
        let mut w = match stage {
            None => {
                let cols: Vec<usize> = (0..n).filter(|i| !rows.segments[seg].contains(i)).collect();
                let target = sink.target_sql(&cols);
                sink.begin(tx, &target, cols)?
            }
            Some(stage) => sink.begin_stage(tx, stage, (0..n).collect())?,
        };
        let mut line = first_line;
        let mut cur = seg;
        loop {
            if let Err(e) = sink.send_row(&rows.row, line, stage.map(|_| cur as i32), &mut w) {
                return Err(sink.server_error(e, Some(w)));
            }
            progress.update(reader.rows());
            match rows.next(reader, plan, generated, a) {
                Ok(Some((l, s)))
                    if (stage.is_some() || s == seg)
                        && !route.as_deref_mut().is_some_and(|r| r.needs_partition(&rows.row)) =>
                {
                    line = l;
                    cur = s;
                }
                Ok(Some(next)) => {
                    pending = Some(next);
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    drop(w);
                    return Err(e);
                }
            }
        }
        sink.finish(w)?;
    }
    if let Some(r) = route {
        r.finish(tx)?;
    }
    *changes = rows.changes;
    Ok(rows.segments)
}

/// Reads rows from the stream and converts them into `cells` (one slot per loadable column;
/// `None` = key missing).
struct RowSource {
    /// Per column: whether its type can change values silently; and the changes counted.
    watch: Vec<bool>,
    changes: convert::Changes,
    /// Each column's conversion options, when some option names columns (else `a.opts`).
    col_opts: Vec<Options>,
    segments: Vec<Signature>,
    seg_ids: HashMap<Signature, usize>,
    /// The current row, encoded for COPY.
    row: EncodedRow,
    /// The current line's members (reused).
    members: Vec<jsonscan::Member>,
    unknown: Vec<String>,
    /// The current row's keys that match no column (to find a repeat among them).
    ignored: std::collections::HashSet<String>,
    /// The current row's signature (reused buffer) and the previous row's segment.
    sig: Signature,
    last_seg: Option<usize>,
}

impl RowSource {
    /// The next row's line and segment id, its values converted into `self.cells`.
    fn next<R: std::io::BufRead>(
        &mut self,
        reader: &mut RowReader<R>,
        plan: &Columns,
        generated: &[&str],
        a: &Args,
    ) -> Result<Option<(u64, usize)>> {
        let Some((line, text)) = reader.next_raw()? else { return Ok(None) };
        if jsonscan::scan_object(text, &mut self.members).is_err() {
            return Err(stream::malformed(text, line));
        }
        self.row.clear();
        if !self.ignored.is_empty() {
            self.ignored.clear();
        }
        let mut hint = 0;
        // Taken for the loop (put back after it; an error ends the load anyway).
        let members = std::mem::take(&mut self.members);
        for m in &members {
            let key: Cow<str> = match m.key_escaped {
                false => Cow::Borrowed(&text[m.key.clone()]),
                true => Cow::Owned(unescape_key(text, m, line)?),
            };
            let name = if a.opts.rename.is_empty() { &*key } else { a.opts.renamed(&key) };
            let Some(i) = plan.find(name, hint) else {
                // Ignored keys are checked for repeats too (docs/stream.md §2.3).
                // (A set: a hostile row can hold 100,000 keys.)
                if !self.ignored.insert(key.to_string()) {
                    return Err(stream::repeated_key(line, &key));
                }
                // A generated column's key (sqlite-dump --include-generated, or another
                // producer): PostgreSQL computes the column; the stream's value is not loaded.
                if !generated.contains(&name) {
                    self.note_unknown(&key, a);
                }
                continue;
            };
            // A key repeats exactly when its column is already filled.
            if self.row.has(i) {
                return Err(stream::repeated_key(line, &key));
            }
            hint = i + 1;
            let col = &plan.columns[i];
            let opts = self.col_opts.get(i).unwrap_or(&a.opts);
            let raw = &text[m.value.clone()];
            // Values are converted from their JSON text; only what that cannot read is parsed.
            let cell = if m.kind == (RawKind::Str { escaped: false })
                && matches!(col.kind, Kind::Text | Kind::Enum | Kind::Other(_))
                && !(opts.empty_null && raw.len() == 2)
            {
                // A string without escapes into a text column is its own text.
                let text = &raw[1..raw.len() - 1];
                convert::check_length(text, col).map_err(|cause| value_error(line, col, raw, &cause))?;
                self.row.put_plain_text(i, text);
                Cell::Null
            } else {
                let cell = match convert::convert_raw(raw, &col.kind, opts) {
                    Some(c) => c,
                    None => {
                        let v: Value = serde_json::from_str(raw).map_err(|e| unreadable(line, col, raw, &e))?;
                        convert_value(&v, raw, col, opts, line)?
                    }
                };
                if convert::has_limit(col) {
                    convert::check_fits(&cell, col).map_err(|cause| value_error(line, col, raw, &cause))?;
                }
                self.row.put_cell(i, &cell);
                cell
            };
            if self.watch[i] {
                if let Some(change) = convert::silent_change(raw, &cell, col, &a.opts) {
                    if a.opts.strict {
                        return Err(convert::strict_error(line, col, raw, change));
                    }
                    self.changes.record(i, change);
                }
            }
        }
        self.members = members;
        if !self.unknown.is_empty() {
            let cols: Vec<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
            let likely: Vec<String> =
                self.unknown.iter().filter_map(|k| likely_column(k, &cols).map(|c| format!("{k}={c}"))).collect();
            let advice = if likely.is_empty() {
                "pass --rename KEY=COLUMN to load a key into a column, or --ignore-unknown to drop them \
                 (their values are then not loaded)"
                    .to_string()
            } else {
                format!(
                    "the names differ only in case or underscores: pass --rename {} to load them \
                     (--ignore-unknown would drop their values)",
                    likely.join(",")
                )
            };
            return Err(Error::Data(format!(
                "line {line}: keys that match no column of '{}': {} (the table has: {}); {advice}",
                a.table,
                listed(&self.unknown),
                cols.join(", ")
            )));
        }
        for (i, col) in plan.columns.iter().enumerate() {
            // Checked here so the staged path, where the server sees NULLs only at the merge,
            // still names the line. A missing key with a default is not a NULL.
            let null_given = self.row.is_null(i).unwrap_or(!col.has_default);
            if null_given && col.not_null {
                return Err(Error::Data(format!(
                    "line {line}, column '{}': null (or missing) in a NOT NULL column",
                    col.name
                )));
            }
        }
        // Consecutive rows almost always leave out the same columns: compare with the last
        // row's signature before hashing.
        self.sig.clear();
        self.sig.extend((0..plan.columns.len()).filter(|&i| !self.row.has(i) && plan.columns[i].has_default));
        // (Compared by hand: slice equality calls memcmp even for empty signatures.)
        let same = |a: &[usize], b: &[usize]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y);
        let seg = match self.last_seg.filter(|&s| same(&self.segments[s], &self.sig)) {
            Some(s) => s,
            None => match self.seg_ids.get(&self.sig) {
                Some(&s) => s,
                None => {
                    self.segments.push(self.sig.clone());
                    self.seg_ids.insert(self.sig.clone(), self.segments.len() - 1);
                    self.segments.len() - 1
                }
            },
        };
        self.last_seg = Some(seg);
        Ok(Some((line, seg)))
    }

    fn note_unknown(&mut self, key: &str, a: &Args) {
        if !a.ignore_unknown {
            self.unknown.push(key.to_string());
        }
    }
}

/// Keys for a message: the first ten, then how many more.
fn listed(keys: &[String]) -> String {
    match keys.len() {
        n if n <= 10 => keys.join(", "),
        n => format!("{} and {} more", keys[..10].join(", "), n - 10),
    }
}

/// The column a key that matches none probably means: the same name but for case and
/// underscores (`passwordHash` for `password_hash`, `userid` for an unquoted `userId`).
pub fn likely_column<'a>(key: &str, cols: &[&'a str]) -> Option<&'a str> {
    let fold = |s: &str| s.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect::<String>();
    let k = fold(key);
    let mut found = cols.iter().filter(|c| fold(c) == k);
    match (found.next(), found.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// A key with escapes, unescaped (a bad escape is malformed JSON).
fn unescape_key(text: &str, m: &jsonscan::Member, line: u64) -> Result<String> {
    let quoted = &text[m.key.start - 1..m.key.end + 1];
    serde_json::from_str(quoted).map_err(|e| Error::Data(format!("line {line}: malformed JSON: {e}")))
}

/// A value that does not fit its column, with its JSON text `raw`.
fn value_error(line: u64, col: &ColumnInfo, raw: &str, cause: &str) -> Error {
    let v: Value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    value_error_of(line, col, &v, raw, cause)
}

/// The error for value `v` (JSON text `raw`) in `col`: a number shown as the stream wrote it
/// (serde_json writes 1e400 as 1e+400).
fn value_error_of(line: u64, col: &ColumnInfo, v: &Value, raw: &str, cause: &str) -> Error {
    let cause = format!("{cause} (column type {})", col.type_name);
    match v {
        Value::Number(_) if raw.len() <= 60 => {
            Error::Data(format!("line {line}, column '{}': value {raw}: {cause}", col.name))
        }
        _ => convert::conversion_error(line, &col.name, v, &cause),
    }
}

/// A value the scanner took for JSON that serde_json cannot read (a lone UTF-16 surrogate
/// escape, nesting deeper than 128): named with its column and its text.
fn unreadable(line: u64, col: &ColumnInfo, raw: &str, e: &serde_json::Error) -> Error {
    let cause = e.to_string();
    let cause = cause.split(" at line ").next().unwrap_or(&cause);
    let why = match cause {
        c if c.contains("surrogate") || c.contains("hex escape") => {
            "a \\u escape of half a UTF-16 surrogate pair (\\ud800 to \\udfff) without the other half, which is no \
             character"
                .to_string()
        }
        c if c.contains("recursion limit") => "nests deeper than 128 levels, more than pg-load reads".to_string(),
        c => format!("not valid JSON: {c}"),
    };
    // The value's own JSON text, shortened.
    let shown = match raw.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &raw[..cut]),
        None => raw.to_string(),
    };
    Error::Data(format!("line {line}, column '{}': value {shown}: {why} (column type {})", col.name, col.type_name))
}

fn convert_value(v: &Value, raw: &str, col: &ColumnInfo, opts: &Options, line: u64) -> Result<Cell> {
    convert::convert(v, &col.kind, opts).map_err(|cause| value_error_of(line, col, v, raw, &cause))
}
