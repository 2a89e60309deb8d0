//! The COPY sink: rows encoded in PostgreSQL's binary (or text) COPY format, sent in large
//! writes, and the server's COPY errors turned back into stream lines and columns.

use crate::rows::Columns;
use pgferry::convert::{self, Cell};
use pgferry::pg::{pg_error, quote_ident, Table};
use pgferry::{Error, Result};
use postgres::Transaction;
use std::io::Write;

/// Encodes rows into COPY data and sends it; maps server errors back to input lines.
/// The stream line of every row sent, in order, kept as the runs of consecutive lines (one
/// entry per blank line or record between rows), so memory stays small.
#[derive(Default)]
pub struct LineMap {
    rows: u64,
    marks: Vec<(u64, u64)>,
}

/// Beyond this many runs (a stream with blank lines everywhere) lines are no longer tracked.
const MAX_MARKS: usize = 1 << 20;

impl LineMap {
    fn push(&mut self, line: u64) {
        let continues = self.marks.last().is_some_and(|&(r, l)| l + (self.rows - r) == line);
        if !continues && self.marks.len() < MAX_MARKS {
            self.marks.push((self.rows, line));
        }
        self.rows += 1;
    }

    /// The line of the `row`-th row sent (0-based).
    pub fn line(&self, row: u64) -> Option<u64> {
        if row >= self.rows {
            return None;
        }
        let i = self.marks.partition_point(|&(r, _)| r <= row);
        let (r, l) = *self.marks.get(i.checked_sub(1)?)?;
        // Past the last tracked run only if tracking stopped: then unknown.
        if i == self.marks.len() && self.marks.len() == MAX_MARKS {
            return None;
        }
        Some(l + (row - r))
    }
}

/// One row's values, each already encoded as its COPY field (binary: length word and
/// bytes; text: the field's text), by column of the load.
pub struct EncodedRow {
    binary: bool,
    bytes: Vec<u8>,
    /// Per column: where its field lies in `bytes`; `None` while the row has no value for it.
    slots: Vec<Option<std::ops::Range<u32>>>,
    /// Per column: the value given is NULL.
    nulls: Vec<bool>,
    /// Every column filled so far was filled after the previous one, in column order.
    in_order: bool,
    last: Option<usize>,
}

impl EncodedRow {
    pub fn new(columns: usize, binary: bool) -> EncodedRow {
        EncodedRow {
            binary,
            bytes: Vec::with_capacity(1024),
            slots: vec![None; columns],
            nulls: vec![false; columns],
            in_order: true,
            last: None,
        }
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.slots.iter_mut().for_each(|s| *s = None);
        self.nulls.iter_mut().for_each(|n| *n = false);
        self.in_order = true;
        self.last = None;
    }

    /// Every column filled, in column order: `bytes` is the row's fields as COPY wants them.
    fn complete_in_order(&self) -> bool {
        self.in_order && self.last == Some(self.slots.len().wrapping_sub(1))
    }

    /// Column `i`'s field as encoded (`None`: the row leaves the column out).
    pub fn field(&self, i: usize) -> Option<&[u8]> {
        self.slots[i].as_ref().map(|r| &self.bytes[r.start as usize..r.end as usize])
    }

    /// Whether the row already has a value for column `i`.
    pub fn has(&self, i: usize) -> bool {
        self.slots[i].is_some()
    }

    /// Whether the row gives NULL for column `i` (`None`: the row leaves the column out).
    pub fn is_null(&self, i: usize) -> Option<bool> {
        self.slots[i].as_ref().map(|_| self.nulls[i])
    }

    /// Column `i`'s value, converted.
    pub fn put_cell(&mut self, i: usize, cell: &Cell) {
        let start = self.bytes.len();
        match self.binary {
            true => convert::encode_binary(cell, &mut self.bytes),
            false => convert::encode_text(cell, &mut self.bytes),
        }
        self.nulls[i] = *cell == Cell::Null;
        self.fill(i, start);
    }

    /// Column `i`'s value: text needing no escape in either COPY format (a JSON string
    /// without escapes has no backslash and no control character).
    pub fn put_plain_text(&mut self, i: usize, text: &str) {
        let start = self.bytes.len();
        if self.binary {
            self.bytes.extend_from_slice(&(text.len() as i32).to_be_bytes());
        }
        self.bytes.extend_from_slice(text.as_bytes());
        self.fill(i, start);
    }

    #[inline]
    fn fill(&mut self, i: usize, start: usize) {
        self.slots[i] = Some(start as u32..self.bytes.len() as u32);
        if self.last.is_some_and(|l| l + 1 != i) || (self.last.is_none() && i != 0) {
            self.in_order = false;
        }
        self.last = Some(i);
    }
}

pub struct CopySink {
    buf: Vec<u8>,
    binary: bool,
    table: Table,
    /// Columns of the current COPY, by index into the plan.
    cols: Vec<usize>,
    col_names: Vec<String>,
    /// Input line of each of the last rows sent, for the server's "COPY t, line N".
    recent_lines: std::collections::VecDeque<u64>,
    /// The columns whose values the server reads and may refuse without naming them (a
    /// domain's CHECK, a type pg-load sends as text: `bit(5)`, `inet`), as (plan index, kind,
    /// type), and their fields in each of the last rows sent (beside `recent_lines`), so the
    /// error shows the value.
    kept_cols: Vec<(usize, convert::Kind, String)>,
    recent_kept: std::collections::VecDeque<Vec<Vec<u8>>>,
    rows_in_copy: u64,
    /// Rows the server reported stored by this sink's finished COPY statements (their tags).
    pub stored: u64,
    staged: bool,
    /// COPY … FREEZE (the table was emptied by TRUNCATE in this transaction).
    pub freeze: bool,
    /// Lines of every row sent to this table.
    pub lines: LineMap,
    /// Each row's unique keys, for a partitioned table whose indexes are built after COPY.
    pub trail: Option<crate::indexes::Trail>,
}

const RECENT: usize = 1 << 16;
/// The bytes of a field kept to show in an error.
const KEPT: usize = 128;
/// Rows are sent in writes of this size (256 kB).
const FLUSH_AT: usize = 1 << 18;

impl CopySink {
    pub fn new(plan: &Columns, table: &Table) -> CopySink {
        CopySink {
            buf: Vec::with_capacity(FLUSH_AT * 2),
            binary: plan.binary,
            table: table.clone(),
            cols: vec![],
            col_names: plan.columns.iter().map(|c| c.name.clone()).collect(),
            recent_lines: std::collections::VecDeque::with_capacity(RECENT),
            kept_cols: plan
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.domain || !c.kind.has_binary())
                .map(|(i, c)| (i, c.kind.clone(), c.type_name.clone()))
                .collect(),
            recent_kept: std::collections::VecDeque::new(),
            rows_in_copy: 0,
            stored: 0,
            staged: false,
            freeze: false,
            lines: LineMap::default(),
            trail: None,
        }
    }

    /// `table (columns…)` for COPY; `into`: a partition of the table to copy into instead.
    pub fn target_sql(&self, into: Option<&str>, cols: &[usize]) -> String {
        let list: Vec<String> = cols.iter().map(|&i| quote_ident(&self.col_names[i])).collect();
        format!("{} ({})", into.map_or_else(|| self.table.qualified(), str::to_string), list.join(", "))
    }

    pub fn begin<'a>(
        &mut self,
        tx: &'a mut Transaction,
        target: &str,
        cols: Vec<usize>,
    ) -> Result<postgres::CopyInWriter<'a>> {
        self.cols = cols;
        self.staged = false;
        self.open(tx, target)
    }

    pub fn begin_stage<'a>(
        &mut self,
        tx: &'a mut Transaction,
        stage: &str,
        cols: Vec<usize>,
    ) -> Result<postgres::CopyInWriter<'a>> {
        // The stage table has every loadable column in order, then _pgferry_seg.
        let list: Vec<String> = cols.iter().map(|&i| quote_ident(&self.col_names[i])).collect();
        let target = format!("{stage} ({}, _pgferry_seg, _pgferry_line)", list.join(", "));
        self.cols = cols;
        self.staged = true;
        self.open(tx, &target)
    }

    fn open<'a>(&mut self, tx: &'a mut Transaction, target: &str) -> Result<postgres::CopyInWriter<'a>> {
        let w = self.start(tx, target)?;
        self.reset();
        Ok(w)
    }

    /// The COPY statement, started (its rows: `send_held`, or `open` and `send_row`).
    pub fn start<'a>(&self, tx: &'a mut Transaction, target: &str) -> Result<postgres::CopyInWriter<'a>> {
        let fmt = match (self.binary, self.freeze) {
            (true, false) => "(FORMAT binary)",
            (true, true) => "(FORMAT binary, FREEZE)",
            (false, false) => "(FORMAT text)",
            (false, true) => "(FORMAT text, FREEZE)",
        };
        tx.copy_in(&format!("COPY {target} FROM STDIN {fmt}")).map_err(|e| pg_error("start COPY", e))
    }

    /// A new COPY's data: its header, no rows.
    fn reset(&mut self) {
        self.buf.clear();
        self.recent_lines.clear();
        self.recent_kept.clear();
        self.rows_in_copy = 0;
        if self.binary {
            self.buf.extend_from_slice(convert::BINARY_HEADER);
        }
    }

    /// Starts holding rows for a COPY into the table's `cols` that is not open yet
    /// (`hold_row`; then `open_held` or `copy_held`).
    pub fn hold(&mut self, cols: Vec<usize>) {
        self.cols = cols;
        self.staged = false;
        self.reset();
    }

    /// Holds one row, unless the held COPY data would then reach `limit` bytes (false: the row
    /// is not held).
    pub fn hold_row(&mut self, row: &EncodedRow, line: u64, limit: usize) -> bool {
        if self.buf.len() + row.bytes.len() + 4 * self.cols.len() + 2 >= limit {
            return false;
        }
        // Without a writer nothing is written out.
        let _ = self.encode_row(row, line, None, None);
        true
    }

    /// Opens the COPY of the held rows and sends them.
    pub fn open_held<'a>(&mut self, tx: &'a mut Transaction, target: &str) -> Result<postgres::CopyInWriter<'a>> {
        let mut w = self.start(tx, target)?;
        if let Err(e) = write_pieces(&self.buf, &mut w) {
            return Err(self.server_error(e, Some(w)));
        }
        self.buf.clear();
        Ok(w)
    }

    /// Sends the held rows, whole, into the COPY `w` and ends it; they stay held, to be sent
    /// again if it fails.
    pub fn send_held(&mut self, mut w: postgres::CopyInWriter) -> Result<u64> {
        let trailer: &[u8] = if self.binary { convert::BINARY_TRAILER } else { b"" };
        if let Err(e) = write_pieces(&self.buf, &mut w).and_then(|()| w.write_all(trailer)) {
            return Err(self.server_error(e, Some(w)));
        }
        let n = w.finish().map_err(|e| self.copy_error(e))?;
        self.stored += n;
        Ok(n)
    }

    /// Sends one row (through the buffer, written out from FLUSH_AT): its fields in the order
    /// of this COPY's columns (a column the row leaves out is NULL), then for the staged path
    /// the segment id and the line.
    pub fn send_row(
        &mut self,
        row: &EncodedRow,
        line: u64,
        seg: Option<i32>,
        w: &mut postgres::CopyInWriter,
    ) -> std::io::Result<()> {
        self.encode_row(row, line, seg, Some(&mut *w))?;
        if self.buf.len() >= FLUSH_AT {
            write_out(&mut self.buf, w)?;
        }
        Ok(())
    }

    /// One row into the buffer (a huge field written straight to `w` when there is one).
    fn encode_row(
        &mut self,
        row: &EncodedRow,
        line: u64,
        seg: Option<i32>,
        mut w: Option<&mut postgres::CopyInWriter>,
    ) -> std::io::Result<()> {
        if let Some(t) = &mut self.trail {
            t.push(row, &self.cols);
        }
        let nfields = self.cols.len() + 2 * seg.is_some() as usize;
        if self.binary {
            self.buf.extend_from_slice(&(nfields as i16).to_be_bytes());
            // Fields usually arrive in column order, every one given: then the row is one copy.
            if row.complete_in_order() && self.cols.len() == row.slots.len() {
                put(&mut self.buf, &row.bytes, w.as_deref_mut())?;
            } else {
                for &i in &self.cols {
                    match &row.slots[i] {
                        Some(r) => put(&mut self.buf, &row.bytes[r.start as usize..r.end as usize], w.as_deref_mut())?,
                        None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
                    }
                }
            }
        } else {
            for (pos, &i) in self.cols.iter().enumerate() {
                if pos > 0 {
                    self.buf.push(b'\t');
                }
                match &row.slots[i] {
                    Some(r) => put(&mut self.buf, &row.bytes[r.start as usize..r.end as usize], w.as_deref_mut())?,
                    None => self.buf.extend_from_slice(b"\\N"),
                }
            }
        }
        if let Some(s) = seg {
            if self.binary {
                convert::encode_binary(&Cell::Int4(s), &mut self.buf);
                convert::encode_binary(&Cell::Int8(line as i64), &mut self.buf);
            } else {
                let _ = write!(self.buf, "\t{s}\t{line}");
            }
        }
        if !self.binary {
            self.buf.push(b'\n');
        }
        if self.recent_lines.len() == RECENT {
            self.recent_lines.pop_front();
            self.recent_kept.pop_front();
        }
        self.recent_lines.push_back(line);
        if !self.kept_cols.is_empty() {
            let null: &[u8] = if self.binary { &[0xff; 4] } else { b"\\N" };
            // Enough to show (a message shows 60 characters); a long binary field is not kept.
            let keep = |f: &[u8]| match (self.binary, f.len() > KEPT) {
                (true, true) => vec![],
                _ => f[..f.len().min(KEPT)].to_vec(),
            };
            let fields = self.kept_cols.iter().map(|(i, ..)| keep(row.field(*i).unwrap_or(null))).collect();
            self.recent_kept.push_back(fields);
        }
        self.rows_in_copy += 1;
        self.lines.push(line);
        Ok(())
    }

    pub fn finish(&mut self, mut w: postgres::CopyInWriter) -> Result<u64> {
        if self.binary {
            self.buf.extend_from_slice(convert::BINARY_TRAILER);
        }
        if let Err(e) = write_out(&mut self.buf, &mut w) {
            return Err(self.server_error(e, Some(w)));
        }
        let n = w.finish().map_err(|e| self.copy_error(e))?;
        self.stored += n;
        Ok(n)
    }

    /// A write failed: the server reported an error; `finish` returns it.
    pub fn server_error(&mut self, e: std::io::Error, w: Option<postgres::CopyInWriter>) -> Error {
        match w {
            Some(w) => match w.finish() {
                Err(pe) => self.copy_error(pe),
                Ok(_) => Error::io("send COPY data", e),
            },
            None => Error::io("send COPY data", e),
        }
    }

    /// Turns the server's COPY error into one naming the input line and column.
    fn copy_error(&self, e: postgres::Error) -> Error {
        let Some(db) = e.as_db_error() else { return pg_error("COPY", e) };
        let (copy_line, column) = parse_copy_context(db.where_().unwrap_or(""));
        // Rows back from the last sent, in the recent rows kept.
        let back = copy_line.and_then(|n| {
            let back = self.rows_in_copy.checked_sub(n)? as usize;
            (back < self.recent_lines.len()).then_some(back)
        });
        let line = back.map(|b| self.recent_lines[self.recent_lines.len() - 1 - b]);
        let at = match (line, &column) {
            (Some(l), Some(c)) => format!("line {l}, column '{c}'"),
            (Some(l), None) => format!("line {l}"),
            (None, _) => "COPY".to_string(),
        };
        let code = db.code().code();
        let msg = db.message();
        let detail = db.detail().unwrap_or("");
        let table = self.table.display();
        match code {
            // The value a domain's CHECK or the type's input refused, as sent (the server
            // names none, or not always). Some input functions call bad text a syntax error
            // (tsquery's 42601): during COPY, with a line, that too is the row's value.
            _ if (code == "23514" && msg.starts_with("value for domain")
                || code.starts_with("22")
                || code == "42601")
                && line.is_some() =>
            {
                let d = self.kept_cols.iter().position(|(i, ..)| Some(&self.col_names[*i]) == column.as_ref());
                let shown = d.and_then(|d| {
                    let at = self.recent_kept.len().checked_sub(1 + back?)?;
                    let (_, kind, type_name) = &self.kept_cols[d];
                    let field = &self.recent_kept.get(at)?[d];
                    (!field.is_empty()).then(|| (convert::field_display(kind, self.binary, field), type_name))
                });
                let cause = pgferry::pg::pg_cause(&e);
                match shown {
                    Some((v, t)) => Error::Data(format!("{at}: value {v}: {cause} (column type {t})")),
                    None => Error::Data(format!("{at}: {cause}")),
                }
            }
            "23514" if msg.starts_with("no partition of relation") => {
                Error::Data(format!("{at}: {}", no_partition(&table, detail)))
            }
            "23505" => {
                Error::Data(format!("{at}: duplicate key: {detail} (the stream or the table already holds this key)"))
            }
            "23502" => Error::Data(format!("{at}: null value in NOT NULL column '{}'", db.column().unwrap_or("?"))),
            "23503" => Error::Data(format!(
                "{at}: {detail}; load the parent table first, or pass --defer-fks to load children before parents"
            )),
            _ if self.staged && code.starts_with("23") => Error::Data(format!("{msg} ({detail})")),
            _ => pg_error(at, e),
        }
    }
}

/// Appends `bytes` to `buf`; a huge field (or row) is written straight from where it was
/// encoded instead, after what `buf` holds, in pieces: the writer copies what it is given into
/// a buffer of its own, and the connection again into its message, so a 100 MB value written
/// whole would be held three times more.
fn put(buf: &mut Vec<u8>, bytes: &[u8], w: Option<&mut postgres::CopyInWriter>) -> std::io::Result<()> {
    let Some(w) = w.filter(|_| bytes.len() >= FLUSH_AT) else {
        buf.extend_from_slice(bytes);
        return Ok(());
    };
    write_out(buf, w)?;
    write_pieces(bytes, w)
}

/// `bytes` in FLUSH_AT pieces: the writer and the connection copy each piece they are given, so
/// held rows written whole would be held three times over.
fn write_pieces(bytes: &[u8], w: &mut postgres::CopyInWriter) -> std::io::Result<()> {
    bytes.chunks(FLUSH_AT).try_for_each(|piece| w.write_all(piece))
}

fn write_out(buf: &mut Vec<u8>, w: &mut postgres::CopyInWriter) -> std::io::Result<()> {
    w.write_all(buf)?;
    buf.clear();
    Ok(())
}

/// A row no partition accepts (from the server's detail): which month to create, or, for a
/// key in no month (NULL, ±infinity), that only a DEFAULT partition takes it.
pub fn no_partition(table: &str, detail: &str) -> String {
    let (col, value) = parse_partition_detail(detail);
    let month = value
        .get(..7)
        .filter(|m| m.len() == 7 && m.as_bytes()[4] == b'-' && m[..4].bytes().all(|b| b.is_ascii_digit()));
    match month {
        Some(month) => format!(
            "no partition of '{table}' accepts {col} = {value} (the month {month} has no partition); \
             create it with: pg-partition ensure {table} --from {month}, or load with --ensure-partitions"
        ),
        None => format!(
            "no partition of '{table}' accepts {col} = {value}: it is in no period, so only a DEFAULT \
             partition could hold it (CREATE TABLE … PARTITION OF {table} DEFAULT), or fix the value"
        ),
    }
}

/// "COPY device_logs, line 3, column received_at: ..." → (3, "received_at").
fn parse_copy_context(w: &str) -> (Option<u64>, Option<String>) {
    let first = w.lines().find(|l| l.starts_with("COPY ")).unwrap_or("");
    let line = first.split(", line ").nth(1).and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
    let column = first.split(", column ").nth(1).map(|s| s.split(':').next().unwrap_or("").to_string());
    (line, column)
}

/// "Partition key of the failing row contains (received_at) = (2024-01-05 00:00:00+00)."
pub fn parse_partition_detail(d: &str) -> (String, String) {
    let inner = |s: &str| s.trim().trim_start_matches('(').trim_end_matches('.').trim_end_matches(')').to_string();
    match d.split_once(") = (") {
        Some((l, r)) => (inner(l.rsplit('(').next().unwrap_or(l)), inner(r)),
        None => ("the partition key".into(), d.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_map_names_the_line_of_every_row_sent() {
        let mut m = LineMap::default();
        for l in [2, 3, 4, 7, 8, 10] {
            m.push(l);
        }
        assert_eq!(m.marks.len(), 3);
        let got: Vec<Option<u64>> = (0..7).map(|r| m.line(r)).collect();
        assert_eq!(got, [Some(2), Some(3), Some(4), Some(7), Some(8), Some(10), None]);
    }

    #[test]
    fn copy_context_and_partition_detail() {
        assert_eq!(
            parse_copy_context("COPY device_logs, line 3, column received_at: \"x\""),
            (Some(3), Some("received_at".into()))
        );
        assert_eq!(parse_copy_context("COPY t, line 12"), (Some(12), None));
        assert_eq!(
            parse_partition_detail(
                "Partition key of the failing row contains (received_at) = (2024-01-05 00:00:00+00)."
            ),
            ("received_at".into(), "2024-01-05 00:00:00+00".into())
        );
    }
}
