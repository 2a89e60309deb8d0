//! Rows from the stream into COPY: each row's keys matched to columns, values converted by
//! column type, rows grouped by the defaulted columns they leave out.

use crate::copy::{CopySink, EncodedRow};
use crate::route::Router;
use crate::{Args, TOOL};
use pgferry::catalog::ColumnInfo;
use pgferry::convert::{self, Cell, Kind, Options};
use pgferry::jsonscan::{self, RawKind};
use pgferry::pg::pg_error;
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
    set_aside_later: Option<&mut SetAsideLater>,
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
        copies: copies(plan, generated, a)?,
    };
    // Dropped at the end (or on an error): the line is cleared; the summary follows.
    let mut progress = Progress::new(TOOL, &a.table, Unit::Count("rows"), None, progress::terminal());
    // The row read but not yet sent: it opens the next COPY.
    let mut pending = rows.next(reader, plan, generated, a)?;
    let mut s = Streaming { reader, plan, generated, a, sink, rows: &mut rows, progress: &mut progress };
    if let (Some(later), Some((line, seg))) = (set_aside_later, pending) {
        pending = s.hold_first(tx, later, line, seg)?;
    }
    while let Some((first_line, seg)) = pending.take() {
        // Direct path: one COPY per run of rows with the same defaulted columns left out.
        // Staged path: one COPY of every column plus the segment id.
        // A row that needs a partition opens the COPY after it is created (none is open now),
        // into its partition where rows may go straight there.
        if let Some(r) = route.as_deref_mut() {
            r.prepare(tx, &s.rows.row, s.rows.segments[seg].contains(&r.key_column()))?;
        }
        let w = match stage {
            None => {
                let cols: Vec<usize> = (0..n).filter(|i| !s.rows.segments[seg].contains(i)).collect();
                let target = s.sink.target_sql(route.as_deref().and_then(Router::copy_into), &cols);
                s.sink.begin(tx, &target, cols)?
            }
            Some(stage) => s.sink.begin_stage(tx, stage, (0..n).collect())?,
        };
        let (w, next) = s.pump(w, first_line, seg, stage.is_some(), route.as_deref_mut())?;
        pending = next;
        s.sink.finish(w)?;
    }
    if let Some(r) = route {
        r.finish(tx)?;
    }
    // A --copy-key whose key no row has is likely misspelt: its column got no copy at all.
    for c in rows.copies.iter().filter(|c| !c.made && reader.rows() > 0) {
        pgferry::warn!(
            TOOL,
            "{}: --copy-key {}={}: no row of the stream has the key '{}', so no row got a copy",
            a.table,
            c.src,
            plan.columns[c.dst].name,
            c.src
        );
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
    /// `--copy-key`: the columns that take a second copy of a key's value.
    copies: Vec<KeyCopy>,
}

/// One `--copy-key SRC=DST`, resolved: the stream key, the column it is copied into, and
/// whether the current row's copy is made.
struct KeyCopy {
    src: String,
    dst: usize,
    done: bool,
    /// Some row had the key.
    made: bool,
}

impl KeyCopy {
    /// The row gives DST a value of its own as well as the copy.
    fn twice(&self, line: u64, plan: &Columns) -> Error {
        let dst = &plan.columns[self.dst].name;
        Error::Data(format!(
            "line {line}, column '{dst}': two values, the row's own key for it and the copy of '{}' that \
             --copy-key {}={dst} makes; drop that key from the stream, or the --copy-key",
            self.src, self.src
        ))
    }
}

/// The `--copy-key` pairs, their columns found (a column that is not there, or is generated, is
/// a usage error before any row is read).
fn copies(plan: &Columns, generated: &[&str], a: &Args) -> Result<Vec<KeyCopy>> {
    let mut out = Vec::with_capacity(a.opts.copy_key.len());
    for (src, dst) in &a.opts.copy_key {
        let Some(i) = plan.find(dst, 0) else {
            let why = if generated.contains(&dst.as_str()) {
                "a generated column (PostgreSQL computes it)".to_string()
            } else {
                let cols: Vec<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
                match likely_column(dst, &cols) {
                    Some(c) => format!("no column of '{}'; did you mean '{c}'?", a.table),
                    None => format!("no column of '{}' (the table has: {})", a.table, cols.join(", ")),
                }
            };
            return Err(Error::Usage(format!("--copy-key {src}={dst}: '{dst}' is {why}")));
        };
        out.push(KeyCopy { src: src.clone(), dst: i, done: false, made: false });
    }
    Ok(out)
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
        for c in &mut self.copies {
            c.done = false;
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
            match plan.find(name, hint) {
                None => {
                    // Ignored keys are checked for repeats too (docs/stream.md §2.3).
                    // (A set: a hostile row can hold 100,000 keys.)
                    if !self.ignored.insert(key.to_string()) {
                        return Err(stream::repeated_key(line, &key));
                    }
                    // A generated column's key (sqlite-dump --include-generated, or another
                    // producer): PostgreSQL computes the column; the stream's value is not loaded.
                    // A --copy-key key without a column of its own is loaded, into its copy.
                    if !generated.contains(&name) && !self.copies.iter().any(|c| c.src == *key) {
                        self.note_unknown(&key, a);
                    }
                }
                Some(i) => {
                    // A key repeats exactly when its column is already filled (or its column
                    // took a --copy-key copy).
                    if self.row.has(i) {
                        return Err(match self.copies.iter().position(|c| c.dst == i && c.done) {
                            Some(c) => self.copies[c].twice(line, plan),
                            None => stream::repeated_key(line, &key),
                        });
                    }
                    hint = i + 1;
                    self.put(i, m.kind, &text[m.value.clone()], plan, a, line)?;
                }
            }
            // The key's value into its --copy-key columns too, each converted for its own type.
            for c in 0..self.copies.len() {
                if self.copies[c].src != *key {
                    continue;
                }
                let dst = self.copies[c].dst;
                if self.row.has(dst) {
                    return Err(self.copies[c].twice(line, plan));
                }
                self.copies[c].done = true;
                self.copies[c].made = true;
                self.put(dst, m.kind, &text[m.value.clone()], plan, a, line)?;
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
                // A copy's column is missing where the row lacks the key it copies.
                let copied = match self.copies.iter().find(|c| c.dst == i && !c.done) {
                    Some(c) => format!(" (the row has no '{}' for --copy-key {}={} to copy)", c.src, c.src, col.name),
                    None => String::new(),
                };
                return Err(Error::Data(format!(
                    "line {line}, column '{}': null (or missing) in a NOT NULL column{copied}",
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

    /// Converts the JSON text `raw` for column `i` into the row.
    #[inline]
    fn put(&mut self, i: usize, kind: RawKind, raw: &str, plan: &Columns, a: &Args, line: u64) -> Result<()> {
        let col = &plan.columns[i];
        let opts = self.col_opts.get(i).unwrap_or(&a.opts);
        // Values are converted from their JSON text; only what that cannot read is parsed.
        let cell = if kind == (RawKind::Str { escaped: false })
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
        Ok(())
    }

    fn note_unknown(&mut self, key: &str, a: &Args) {
        if !a.ignore_unknown {
            self.unknown.push(key.to_string());
        }
    }
}

/// Sets an empty ordinary table's indexes aside once its stream is known to be more than a few
/// rows (indexes::set_aside, with what the load keeps of it); true when COPY may FREEZE.
pub type SetAsideLater<'f> = dyn FnMut(&mut Transaction) -> Result<bool> + 'f;

/// What streaming rows into COPY reads from and writes to.
struct Streaming<'s, R: std::io::BufRead> {
    reader: &'s mut RowReader<R>,
    plan: &'s Columns,
    generated: &'s [&'s str],
    a: &'s Args,
    sink: &'s mut CopySink,
    rows: &'s mut RowSource,
    progress: &'s mut Progress,
}

impl<R: std::io::BufRead> Streaming<'_, R> {
    fn next(&mut self) -> Result<Option<(u64, usize)>> {
        self.rows.next(self.reader, self.plan, self.generated, self.a)
    }

    /// Sends the row read (`line`, of segment `seg`) and those after it into the open COPY
    /// `w`, up to a row of another segment (direct path) or one that needs a partition not
    /// there yet or goes into another partition (route.rs); returns the COPY and that row, if any.
    fn pump<'w>(
        &mut self,
        mut w: postgres::CopyInWriter<'w>,
        mut line: u64,
        seg: usize,
        staged: bool,
        mut route: Option<&mut Router>,
    ) -> Result<(postgres::CopyInWriter<'w>, Option<(u64, usize)>)> {
        let mut cur = seg;
        loop {
            if let Err(e) = self.sink.send_row(&self.rows.row, line, staged.then_some(cur as i32), &mut w) {
                return Err(self.sink.server_error(e, Some(w)));
            }
            self.progress.update(self.reader.rows());
            match self.next()? {
                Some((l, s))
                    if (staged || s == seg)
                        && !route.as_deref_mut().is_some_and(|r| r.needs_new_copy(&self.rows.row)) =>
                {
                    line = l;
                    cur = s;
                }
                next => return Ok((w, next)),
            }
        }
    }

    /// An empty ordinary table's first rows (from `line`, of segment `seg`) are held, converted
    /// but not sent, up to --rebuild-indexes-from bytes. A stream that ends within them goes
    /// into the table as it is, indexes and all: setting them aside and building them again
    /// costs more than keeping them for so few rows (~15 ms a table). That COPY runs in a
    /// savepoint; should it fail, it is rolled back and the rows go in the way a longer stream's
    /// do, so the error is the one that path gives (a repeated key named by its two lines).
    /// Otherwise the indexes are set aside now and the COPY opens with the held rows.
    /// Returns the row that opens the next COPY, if any.
    fn hold_first(
        &mut self,
        tx: &mut Transaction,
        later: &mut SetAsideLater,
        line: u64,
        seg: usize,
    ) -> Result<Option<(u64, usize)>> {
        let n = self.plan.columns.len();
        let cols: Vec<usize> = (0..n).filter(|i| !self.rows.segments[seg].contains(i)).collect();
        let target = self.sink.target_sql(None, &cols);
        self.sink.hold(cols);
        let mut next = Some((line, seg));
        while let Some((l, s)) = next {
            if s != seg || !self.sink.hold_row(&self.rows.row, l, self.a.rebuild_indexes_from) {
                break;
            }
            self.progress.update(self.reader.rows());
            // No statement runs on the server for a signal to cancel: the loop looks itself.
            pgferry::signals::check()?;
            next = self.next()?;
        }
        let Some((l, s)) = next else {
            let mut sp = tx.savepoint("pgferry_held").map_err(|e| pg_error("set a savepoint", e))?;
            // A COPY the server refuses to start ends the load as it would have (the connection
            // is then in no state for a second try); row-level security is refused before this,
            // in table::prepare.
            let w = self.sink.start(&mut sp, &target)?;
            if self.sink.send_held(w).is_ok() {
                return sp.commit().map(|()| None).map_err(|e| pg_error("release the savepoint", e));
            }
            sp.rollback().map_err(|e| pg_error("roll back to the savepoint", e))?;
            self.sink.freeze = later(tx)?;
            let w = self.sink.start(tx, &target)?;
            return self.sink.send_held(w).map(|_| None);
        };
        self.sink.freeze = later(tx)?;
        let w = self.sink.open_held(tx, &target)?;
        let (w, next) = match s == seg {
            true => self.pump(w, l, seg, false, None)?,
            false => (w, Some((l, s))),
        };
        self.sink.finish(w)?;
        Ok(next)
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
