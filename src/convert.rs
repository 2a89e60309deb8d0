//! Conversion of stream values by the target column's type (docs/loading.md), and their
//! encoding for COPY: PostgreSQL's binary format when every column has a binary encoder
//! here (the server then parses almost nothing), its text format otherwise.

use crate::catalog::ColumnInfo;
use crate::error::{Error, Result};
use crate::stream::{as_bytes_form, as_float_form, kind_name, value_snippet};
use crate::timefmt::{self, MICROS_PER_DAY, PG_EPOCH_DAYS, PG_EPOCH_MICROS};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::Write as _;

/// What pg-load knows how to produce for a column, by its (domain-resolved) base type.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    /// text, varchar, bpchar, name, citext: strings.
    Text,
    /// An enum: its label, binary-sendable as text.
    Enum,
    Bytea,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Json,
    Jsonb,
    Uuid,
    /// A one-dimensional array of `elem`, whose element type has oid `elem_oid`.
    Array {
        elem: Box<Kind>,
        elem_oid: u32,
    },
    /// Any other type (interval, inet, money, ...): its text form, parsed by the server.
    Other(String),
}

impl Kind {
    /// Whether this pgferry has a binary COPY encoder for the kind.
    pub fn has_binary(&self) -> bool {
        match self {
            Kind::Other(_) => false,
            Kind::Array { elem, .. } => elem.has_binary() && !matches!(**elem, Kind::Array { .. }),
            _ => true,
        }
    }

    pub fn is_timestamp(&self) -> bool {
        matches!(self, Kind::Timestamp | Kind::Timestamptz | Kind::Date)
    }
}

/// Unit of Unix epoch numbers loaded into timestamp columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochUnit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl EpochUnit {
    pub fn parse(s: &str) -> Option<EpochUnit> {
        Some(match s {
            "s" | "sec" | "seconds" => EpochUnit::Seconds,
            "ms" | "millis" | "milliseconds" => EpochUnit::Millis,
            "us" | "micros" | "microseconds" => EpochUnit::Micros,
            "ns" | "nanos" | "nanoseconds" => EpochUnit::Nanos,
            _ => return None,
        })
    }
    /// The unit as `--epoch-unit` spells it.
    pub fn name(self) -> &'static str {
        match self {
            EpochUnit::Seconds => "s",
            EpochUnit::Millis => "ms",
            EpochUnit::Micros => "us",
            EpochUnit::Nanos => "ns",
        }
    }
    fn per_second(self) -> i128 {
        match self {
            EpochUnit::Seconds => 1,
            EpochUnit::Millis => 1_000,
            EpochUnit::Micros => 1_000_000,
            EpochUnit::Nanos => 1_000_000_000,
        }
    }
}

/// Per-column conversion options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Zone assumed for timestamps without an offset going into timestamptz.
    pub assume_tz: timefmt::Zone,
    /// Unit for epoch numbers; `None` refuses numbers in timestamp columns.
    pub epoch: Option<EpochUnit>,
    /// Remove NUL characters from text instead of refusing them.
    pub strip_nul: bool,
    /// Refuse values PostgreSQL would change without an error (see [`Change`]) instead of
    /// counting them.
    pub strict: bool,
    /// `--empty-as-null COLS`: the columns ("*": every column) whose empty strings are NULL
    /// (an app that wrote '' where it had no value). `empty_null` is the answer for the one
    /// column these options were resolved for (`for_column`).
    pub empty_null_cols: Vec<String>,
    pub empty_null: bool,
    /// `--date-format [COL=]FMT` (repeatable): how text that is not ISO 8601 reads in a date
    /// or timestamp column (`%m/%d/%Y` for 01/16/2025); `date_format` is the resolved one.
    pub date_formats: Vec<(Option<String>, String)>,
    pub date_format: Option<String>,
    /// `--rename SRC=DST` (repeatable, or comma-separated): stream keys renamed to columns
    /// before they are matched (count-check pairs them the same way, as its `--map`).
    pub rename: Vec<(String, String)>,
    /// `--copy-key SRC=DST` (repeatable, or comma-separated): the stream key SRC (its name in
    /// the stream, before `--rename`) loads into its own column and into the column DST too
    /// (a `firestore_id` that holds the id during a transition).
    pub copy_key: Vec<(String, String)>,
}

impl Options {
    /// pg-load's conversion options (`--epoch-unit`, `--assume-tz`, `--strip-nul`) on top of
    /// `base`: count-check reads them again to convert values exactly as they were loaded.
    pub fn from_args(args: &mut pico_args::Arguments, base: Options) -> Result<Options> {
        let mut o = base;
        if let Some(u) = crate::cli::opt(args, "--epoch-unit")? {
            o.epoch = Some(
                EpochUnit::parse(&u)
                    .ok_or_else(|| Error::Usage(format!("--epoch-unit must be s, ms, us or ns, not '{u}'")))?,
            );
        }
        if let Some(z) = crate::cli::opt(args, "--assume-tz")? {
            o.assume_tz = timefmt::Zone::parse(&z).map_err(|e| Error::Usage(format!("--assume-tz: {e}")))?;
        }
        if args.contains("--strip-nul") {
            o.strip_nul = true;
        }
        if args.contains("--strict") {
            o.strict = true;
        }
        for cols in args.values_from_str::<_, String>("--empty-as-null").map_err(crate::cli::usage_err)? {
            o.empty_null_cols.extend(cols.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()));
        }
        for f in args.values_from_str::<_, String>("--date-format").map_err(crate::cli::usage_err)? {
            // COL=FMT, or FMT alone for every date and timestamp column (a format has no '=').
            let (col, fmt) = match f.split_once('=') {
                Some((c, f)) => (Some(c.trim().to_string()), f.to_string()),
                None => (None, f),
            };
            check_format(&fmt).map_err(|e| Error::Usage(format!("--date-format '{fmt}': {e}")))?;
            o.date_formats.push((col, fmt));
        }
        o.rename.extend(pairs(args, "--rename", "a stream key, then its column")?);
        o.copy_key.extend(pairs(args, "--copy-key", "a stream key, then the second column it loads into")?);
        o.check_copy_keys()?;
        Ok(o)
    }

    /// Whether some option depends on the column (`for_column` gives a different answer).
    pub fn has_column_rules(&self) -> bool {
        !self.empty_null_cols.is_empty() || !self.date_formats.is_empty()
    }

    /// These options for the column `name`: `empty_null` and `date_format` resolved.
    pub fn for_column(&self, name: &str) -> Options {
        let mut o = self.clone();
        o.empty_null = self.empty_null_cols.iter().any(|c| c == "*" || c == name);
        o.date_format = self
            .date_formats
            .iter()
            .rev()
            .find(|(c, _)| c.as_deref() == Some(name))
            .or_else(|| self.date_formats.iter().rev().find(|(c, _)| c.is_none()))
            .map(|(_, f)| f.clone());
        o
    }

    /// `--copy-key` pairs that cannot load as written: two values for one column.
    fn check_copy_keys(&self) -> Result<()> {
        for (n, (src, dst)) in self.copy_key.iter().enumerate() {
            let bad = |why: String| Err(Error::Usage(format!("--copy-key {src}={dst}: {why}")));
            if let Some((from, _)) = self.rename.iter().find(|(_, to)| to == src) {
                if !self.rename.iter().any(|(f, _)| f == src) {
                    return bad(format!(
                        "'{src}' is the column --rename {from}={src} loads; name the stream key: --copy-key {from}={dst}"
                    ));
                }
            }
            if self.renamed(src) == dst {
                return bad(format!("'{src}' already loads into column '{dst}'"));
            }
            if let Some((from, _)) = self.rename.iter().find(|(_, to)| to == dst) {
                return bad(format!("column '{dst}' already takes the key '{from}' (--rename {from}={dst})"));
            }
            if let Some((other, _)) = self.copy_key[..n].iter().find(|(_, d)| d == dst) {
                return bad(format!("column '{dst}' already takes a copy of '{other}'"));
            }
        }
        Ok(())
    }

    /// The column a stream key names after `--rename`.
    pub fn renamed<'a>(&'a self, key: &'a str) -> &'a str {
        self.rename.iter().find(|(from, _)| from == key).map_or(key, |(_, to)| to.as_str())
    }
}

/// The `SRC=DST` pairs of a repeatable, comma-separated option (`--rename`, `--copy-key`).
fn pairs(args: &mut pico_args::Arguments, flag: &'static str, what: &str) -> Result<Vec<(String, String)>> {
    let mut out = vec![];
    for list in args.values_from_str::<_, String>(flag).map_err(crate::cli::usage_err)? {
        for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
            let (from, to) = pair
                .split_once('=')
                .filter(|(a, b)| !a.trim().is_empty() && !b.trim().is_empty())
                .ok_or_else(|| Error::Usage(format!("{flag} takes SRC=DST ({what}), not '{pair}'")))?;
            out.push((from.trim().to_string(), to.trim().to_string()));
        }
    }
    Ok(out)
}

/// A date format's mistakes, before any value is read.
fn check_format(fmt: &str) -> std::result::Result<(), String> {
    let mut f = fmt.chars();
    let mut year = false;
    while let Some(c) = f.next() {
        if c == '%' {
            match f.next() {
                Some('Y') => year = true,
                Some('m' | 'd' | 'H' | 'I' | 'M' | 'S' | 'f' | 'p' | '%') => {}
                Some(o) => return Err(format!("'%{o}' is not supported (%Y %m %d %H %I %M %S %f %p %%)")),
                None => return Err("ends with a lone '%'".into()),
            }
        }
    }
    if year {
        Ok(())
    } else {
        Err("needs %Y (the year)".into())
    }
}

/// Reads `s` with a strftime-style format: `%Y` `%m` `%d` `%H` `%M` `%S` (one or two digits
/// where padding is optional, four for the year), `%f` (a fraction), `%p` (AM/PM with `%I`),
/// `%%`; every other character stands for itself. The wall time in microseconds since the
/// epoch, without a zone.
pub fn parse_with_format(s: &str, fmt: &str) -> std::result::Result<i64, String> {
    let (mut y, mut mo, mut d, mut h, mut mi, mut sec, mut frac) = (None, 1u32, 1u32, 0u32, 0u32, 0u32, 0i64);
    let mut pm: Option<bool> = None;
    let b = s.as_bytes();
    let mut i = 0usize;
    let digits = |i: &mut usize, max: usize| -> Option<u32> {
        let start = *i;
        while *i < b.len() && *i - start < max && b[*i].is_ascii_digit() {
            *i += 1;
        }
        (start < *i).then(|| s[start..*i].parse().ok()).flatten()
    };
    let mut f = fmt.chars();
    let mut seen = false;
    while let Some(c) = f.next() {
        if c != '%' {
            if !s[i..].starts_with(c) {
                return Err(format!("does not match the date format '{fmt}'"));
            }
            i += c.len_utf8();
            continue;
        }
        seen = true;
        let bad = || format!("does not match the date format '{fmt}'");
        match f.next() {
            Some('Y') => y = Some(digits(&mut i, 4).ok_or_else(bad)? as i64),
            Some('m') => mo = digits(&mut i, 2).ok_or_else(bad)?,
            Some('d') => d = digits(&mut i, 2).ok_or_else(bad)?,
            Some('H') | Some('I') => h = digits(&mut i, 2).ok_or_else(bad)?,
            Some('M') => mi = digits(&mut i, 2).ok_or_else(bad)?,
            Some('S') => sec = digits(&mut i, 2).ok_or_else(bad)?,
            Some('f') => {
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let t = &s[start..i];
                if t.is_empty() || t.len() > 9 {
                    return Err(bad());
                }
                frac = format!("{t:0<6}")[..6].parse().map_err(|_| bad())?;
            }
            Some('p') => {
                let t = s.get(i..i + 2).map(str::to_ascii_uppercase);
                pm = match t.as_deref() {
                    Some("AM") => Some(false),
                    Some("PM") => Some(true),
                    _ => return Err(bad()),
                };
                i += 2;
            }
            Some('%') if s[i..].starts_with('%') => i += 1,
            _ => return Err(check_format(fmt).err().unwrap_or_else(bad)),
        }
    }
    if !seen || y.is_none() {
        return Err(check_format(fmt).err().unwrap_or_else(|| format!("does not match the date format '{fmt}'")));
    }
    if i != s.len() {
        return Err(format!("does not match the date format '{fmt}' (text left over)"));
    }
    if let Some(pm) = pm {
        if !(1..=12).contains(&h) {
            return Err("hour out of range for %I".into());
        }
        h = h % 12 + if pm { 12 } else { 0 };
    }
    let y = y.expect("checked");
    if !(1..=12).contains(&mo) || d == 0 || d > timefmt::days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59 {
        return Err(format!("is not a valid date or time (read with '{fmt}')"));
    }
    let days = timefmt::days_from_civil(y, mo, d);
    Ok(days * MICROS_PER_DAY + ((h as i64 * 60 + mi as i64) * 60 + sec as i64) * 1_000_000 + frac)
}

/// A value converted for its column: what the COPY encoders write.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int2(i16),
    Int4(i32),
    Int8(i64),
    Float4(f32),
    Float8(f64),
    /// Canonical decimal text (`-12.50`), or `NaN`, `Infinity`, `-Infinity`.
    Numeric(String),
    Text(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01; i32::MAX/MIN are ±infinity.
    Date(i32),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since the Unix epoch (UTC for timestamptz); i64::MAX/MIN are ±infinity.
    Timestamp(i64),
    Timestamptz(i64),
    Json(String),
    Jsonb(String),
    Uuid([u8; 16]),
    Array(Vec<Cell>, u32),
}

/// Converts one stream value for a column of `kind`. The error text says what could not be
/// read as what; the caller adds line, column and value.
pub fn convert(v: &Value, kind: &Kind, opts: &Options) -> std::result::Result<Cell, String> {
    if v.is_null() || (opts.empty_null && v.as_str() == Some("")) {
        return Ok(Cell::Null);
    }
    match kind {
        Kind::Other(name) if is_hstore(name) && v.is_object() => to_hstore(v, opts).map(Cell::Text),
        Kind::Text | Kind::Enum | Kind::Other(_) => to_text(v, opts).map(Cell::Text),
        Kind::Bool => to_bool(v).map(Cell::Bool),
        Kind::Int2 => {
            int_in(v, "smallint").and_then(|n| i16::try_from(n).map(Cell::Int2).map_err(|_| out_of("smallint")))
        }
        Kind::Int4 => {
            int_in(v, "integer").and_then(|n| i32::try_from(n).map(Cell::Int4).map_err(|_| out_of("integer")))
        }
        Kind::Int8 => to_int(v).map(Cell::Int8),
        Kind::Float8 => to_float(v).map(Cell::Float8),
        Kind::Float4 => to_float(v).and_then(|f| {
            let g = f as f32;
            // As PostgreSQL's float4in: overflow and underflow to zero are errors, denormals are not.
            if (f.is_finite() && !g.is_finite()) || (f != 0.0 && g == 0.0) {
                Err("out of range for real".into())
            } else {
                Ok(Cell::Float4(g))
            }
        }),
        Kind::Numeric => to_numeric(v).map(Cell::Numeric),
        Kind::Bytea => to_bytes(v).map(Cell::Bytes),
        Kind::Uuid => to_uuid(v).map(Cell::Uuid),
        Kind::Json | Kind::Jsonb => {
            let text = to_json_text(v, opts, *kind == Kind::Json)?;
            Ok(if *kind == Kind::Json { Cell::Json(text) } else { Cell::Jsonb(text) })
        }
        Kind::Timestamptz => to_timestamp(v, opts, true).map(Cell::Timestamptz),
        Kind::Timestamp => to_timestamp(v, opts, false).map(Cell::Timestamp),
        Kind::Date => to_date(v, opts).map(Cell::Date),
        Kind::Time => to_time(v).map(Cell::Time),
        Kind::Array { elem, elem_oid } => {
            let parsed;
            let items = match v {
                Value::Array(a) => a,
                Value::String(s) => match serde_json::from_str::<Value>(s) {
                    Ok(Value::Array(a)) => {
                        parsed = a;
                        &parsed
                    }
                    _ => return Err("expected a JSON array (or a string holding one)".into()),
                },
                other => return Err(format!("expected a JSON array, found {}", kind_name(other))),
            };
            let mut cells = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                if matches!(item, Value::Array(_)) && !matches!(**elem, Kind::Json | Kind::Jsonb) {
                    return Err("nested arrays are not supported; use a jsonb column".into());
                }
                cells.push(convert(item, elem, opts).map_err(|e| format!("element {i}: {e}"))?);
            }
            Ok(Cell::Array(cells, *elem_oid))
        }
    }
}

/// The common cases straight from a value's JSON text, without building a `Value`:
/// `None` means "take the general path" (which also produces the error messages).
pub fn convert_raw(raw: &str, kind: &Kind, opts: &Options) -> Option<Cell> {
    let b = raw.as_bytes();
    if raw == "null" || (opts.empty_null && raw == "\"\"") {
        return Some(Cell::Null);
    }
    if opts.date_format.is_some() && matches!(kind, Kind::Date | Kind::Timestamp | Kind::Timestamptz) {
        return None;
    }
    // A string without escapes is its own text.
    let plain_str = || (b.len() >= 2 && b[0] == b'"' && !b.contains(&b'\\')).then(|| &raw[1..raw.len() - 1]);
    match kind {
        // An object for hstore: built from the parsed JSON (convert).
        Kind::Other(name) if is_hstore(name) && raw.starts_with('{') => None,
        Kind::Text | Kind::Enum | Kind::Other(_) => match plain_str() {
            Some(s) => Some(Cell::Text(s.to_string())),
            None => raw_text(raw, opts).map(Cell::Text),
        },
        Kind::Array { elem, elem_oid } if matches!(**elem, Kind::Text | Kind::Enum | Kind::Other(_) | Kind::Json) => {
            text_array_raw(raw, elem, *elem_oid, opts)
        }
        Kind::Int8 => raw.parse::<i64>().ok().map(Cell::Int8),
        Kind::Int4 => raw.parse::<i32>().ok().map(Cell::Int4),
        Kind::Int2 => raw.parse::<i16>().ok().map(Cell::Int2),
        Kind::Bool => match raw {
            "true" => Some(Cell::Bool(true)),
            "false" => Some(Cell::Bool(false)),
            _ => None,
        },
        Kind::Float8 if b.first().is_some_and(|c| c.is_ascii_digit() || *c == b'-') => {
            // Zero may be an underflow: the general path decides.
            raw.parse::<f64>().ok().filter(|f| f.is_finite() && (*f != 0.0 || is_zero_text(raw))).map(Cell::Float8)
        }
        // json keeps its text as written: key order, spacing, repeated keys (the scanner checked
        // the value is JSON). A \u0000 takes the general path (refused, or --strip-nul).
        Kind::Json if matches!(b.first(), Some(b'{' | b'[')) && !raw.contains("\\u0000") => {
            Some(Cell::Json(raw.to_string()))
        }
        // A number as written (`1E5`, which serde_json writes 1e+5); a string holding JSON text
        // is that text, as written.
        Kind::Json => match b.first()? {
            b'-' | b'0'..=b'9' | b't' | b'f' => Some(Cell::Json(raw.to_string())),
            b'"' => serde_json::from_str::<String>(raw)
                .ok()
                .filter(|s| !s.contains("\\u0000") && serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok())
                .map(Cell::Json),
            _ => None,
        },
        Kind::Timestamptz | Kind::Timestamp => {
            let p = timefmt::parse_timestamp(plain_str()?)?;
            let tz = *kind == Kind::Timestamptz;
            let micros = if tz { p.utc_micros_in(&opts.assume_tz)? } else { p.utc_micros(0) };
            Some(if tz { Cell::Timestamptz(micros) } else { Cell::Timestamp(micros) })
        }
        _ => None,
    }
}

/// A value's text for a text column, from its JSON text as the stream wrote it: a number as
/// written (`1e5`, `1.50`, `-0`; serde_json would write `1e+5`), an object or array as its JSON
/// text (key order, spacing, repeated keys kept). `None`: the general path decides (the tagged
/// forms, NUL characters, what is refused).
fn raw_text(raw: &str, opts: &Options) -> Option<String> {
    match raw.as_bytes().first()? {
        b'"' => check_nul(&serde_json::from_str::<String>(raw).ok()?, opts).ok(),
        b'-' | b'0'..=b'9' | b't' | b'f' => Some(raw.to_string()),
        b'{' if raw.contains("\"$base64\"") || raw.contains("\"$float\"") => None,
        b'{' | b'[' => match json_has_nul_escape(raw) {
            false => Some(raw.to_string()),
            true if opts.strip_nul => Some(strip_json_nul_escapes(raw)),
            true => None,
        },
        _ => None,
    }
}

/// A `text[]` (varchar, enum, json, other element types) from a JSON array, or a string holding
/// one, each element's text as written. `None`: the general path (nested arrays, errors).
fn text_array_raw(raw: &str, elem: &Kind, elem_oid: u32, opts: &Options) -> Option<Cell> {
    let owned;
    let text = match raw.starts_with('"') {
        true => {
            owned = serde_json::from_str::<String>(raw).ok()?;
            owned.as_str()
        }
        false => raw,
    };
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(text).ok()?;
    let mut cells = Vec::with_capacity(items.len());
    for item in items {
        let r = item.get();
        if r.starts_with('[') && *elem != Kind::Json {
            return None; // nested: refused by the general path
        }
        cells.push(convert_raw(r, elem, opts)?);
    }
    Some(Cell::Array(cells, elem_oid))
}

/// Whether JSON text holds a `\u0000` escape (an escaped backslash before `u0000` is not one).
fn json_has_nul_escape(s: &str) -> bool {
    s.contains("\\u0000") && strip_json_nul_escapes(s).len() != s.len()
}

/// JSON text without its `\u0000` escapes (`--strip-nul`), everything else as written.
fn strip_json_nul_escapes(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let (mut i, mut from) = (0, 0);
    // Backslashes occur only in strings, each starting an escape of two bytes (or \uXXXX).
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if b[i + 1..].starts_with(b"u0000") {
            out.push_str(&s[from..i]);
            i += 6;
            from = i;
        } else {
            i += 2;
        }
    }
    out.push_str(&s[from..]);
    out
}

fn check_nul(s: &str, opts: &Options) -> std::result::Result<String, String> {
    if !s.contains('\0') {
        return Ok(s.to_string());
    }
    if opts.strip_nul {
        Ok(s.replace('\0', ""))
    } else {
        Err("text contains a NUL character (\\u0000), which PostgreSQL cannot store; pass --strip-nul to remove NULs"
            .into())
    }
}

fn to_text(v: &Value, opts: &Options) -> std::result::Result<String, String> {
    match v {
        Value::String(s) => check_nul(s, opts),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Object(_) if as_bytes_form(v).is_some() => {
            Err("a bytes value cannot go into a text column; use a bytea column".into())
        }
        Value::Object(_) if as_float_form(v).is_some() => match as_float_form(v) {
            Some(Ok(f)) => Ok(float_text(f)),
            _ => Err("unknown $float tag".into()),
        },
        other => {
            let s = if opts.strip_nul {
                let mut copy = other.clone();
                strip_nul_deep(&mut copy);
                copy.to_string()
            } else {
                other.to_string()
            };
            check_nul_json(&s).map(|_| s)
        }
    }
}

/// The hstore extension's type (`hstore`, or schema-qualified where its schema is not on the
/// search path, as Supabase's `extensions.hstore`).
pub fn is_hstore(type_name: &str) -> bool {
    type_name == "hstore" || type_name.ends_with(".hstore")
}

/// A JSON object as hstore text: each key and value quoted (`"k"=>"v"`), `null` as NULL, a
/// number or boolean as its JSON text. hstore values are text, so a nested array or object
/// is refused rather than stored as its JSON text. (A key the object repeats was collapsed to
/// its last value when the JSON was read, as jsonb does; the change is counted.)
fn to_hstore(v: &Value, opts: &Options) -> std::result::Result<String, String> {
    let Value::Object(map) = v else { return to_text(v, opts) };
    let mut pairs = Vec::with_capacity(map.len());
    for (k, val) in map {
        let value = match val {
            Value::Null => None,
            Value::String(t) => Some(check_nul(t, opts)?),
            Value::Number(_) | Value::Bool(_) => Some(val.to_string()),
            Value::Array(_) | Value::Object(_) => {
                let what = if val.is_array() { "an array" } else { "an object" };
                return Err(format!(
                    "key '{k}' holds {what}, and hstore values are text; use a jsonb column for nested values"
                ));
            }
        };
        pairs.push((check_nul(k, opts)?, value));
    }
    Ok(hstore_text(&pairs))
}

/// Pairs as hstore text: `"k"=>"v", "k2"=>NULL`, `"` and `\` in a key or value escaped.
fn hstore_text(pairs: &[(String, Option<String>)]) -> String {
    let quote = |out: &mut String, s: &str| {
        out.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    };
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push_str(", ");
        }
        quote(&mut out, k);
        out.push_str("=>");
        match v {
            Some(v) => quote(&mut out, v),
            None => out.push_str("NULL"),
        }
    }
    out
}

/// hstore text's pairs as PostgreSQL's hstore reads them: keys and values quoted or bare (a
/// bare key ends at a space or `=`, a bare value at a space or `,`), backslash escapes taken,
/// a bare `NULL` value NULL. `None` where the text is not read here (the server reads it, or
/// refuses it).
pub fn hstore_pairs(text: &str) -> Option<Vec<(String, Option<String>)>> {
    let b = text.as_bytes();
    let mut i = 0;
    let skip_space = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    // One key or value; with whether it was quoted.
    let token = |i: &mut usize, end: u8| -> Option<(String, bool)> {
        let mut out = vec![];
        let quoted = b.get(*i) == Some(&b'"');
        if quoted {
            *i += 1;
        }
        loop {
            let c = *b.get(*i)?;
            match c {
                b'\\' => {
                    out.push(*b.get(*i + 1)?);
                    *i += 2;
                    if !quoted && *i == b.len() {
                        break;
                    }
                    continue;
                }
                b'"' if quoted => {
                    *i += 1;
                    break;
                }
                b'"' => return None,
                _ if !quoted && (c.is_ascii_whitespace() || c == end) => {
                    if out.is_empty() {
                        return None;
                    }
                    break;
                }
                _ => out.push(c),
            }
            *i += 1;
            if !quoted && *i == b.len() {
                break;
            }
        }
        // Split only at ASCII bytes, so still UTF-8 (an escape of half a character aside).
        Some((String::from_utf8(out).ok()?, quoted))
    };
    let mut pairs = vec![];
    skip_space(&mut i);
    while i < b.len() {
        let (key, _) = token(&mut i, b'=')?;
        skip_space(&mut i);
        if b.get(i..i + 2)? != b"=>" {
            return None;
        }
        i += 2;
        skip_space(&mut i);
        let (value, quoted) = token(&mut i, b',')?;
        pairs.push((key, (quoted || !value.eq_ignore_ascii_case("null")).then_some(value)));
        skip_space(&mut i);
        match b.get(i) {
            None => break,
            Some(b',') => {
                i += 1;
                skip_space(&mut i);
            }
            Some(_) => return None,
        }
    }
    Some(pairs)
}

/// Whether hstore text repeats a key (PostgreSQL's hstore then keeps one of the values, which
/// one undefined). `None` where the text is not read here.
fn hstore_repeats_a_key(text: &str) -> Option<bool> {
    let pairs = hstore_pairs(text)?;
    let mut keys = std::collections::HashSet::with_capacity(pairs.len());
    Some(!pairs.iter().all(|(k, _)| keys.insert(k.as_str())))
}

/// hstore text as PostgreSQL writes it back: one pair per key (a repeated key's first, as the
/// server keeps it for short lists), ordered by key length then bytes, each key and value
/// quoted. `None` where the text is not read here.
pub fn hstore_canonical(text: &str) -> Option<String> {
    let mut pairs = hstore_pairs(text)?;
    let mut seen = std::collections::HashSet::with_capacity(pairs.len());
    pairs.retain(|(k, _)| seen.insert(k.clone()));
    pairs.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes())));
    Some(hstore_text(&pairs))
}

fn check_nul_json(s: &str) -> std::result::Result<(), String> {
    if s.contains("\\u0000") {
        Err("JSON text contains \\u0000, which PostgreSQL cannot store; pass --strip-nul to remove NULs".into())
    } else {
        Ok(())
    }
}

fn strip_nul_deep(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', ""),
        Value::Array(a) => a.iter_mut().for_each(strip_nul_deep),
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().filter(|k| k.contains('\0')).cloned().collect();
            for k in keys {
                if let Some(val) = m.remove(&k) {
                    m.insert(k.replace('\0', ""), val);
                }
            }
            m.values_mut().for_each(strip_nul_deep)
        }
        _ => {}
    }
}

fn to_bool(v: &Value) -> std::result::Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err("cannot read this number as a boolean (only 0 and 1)".into()),
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "y" | "yes" | "on" | "1" => Ok(true),
            "f" | "false" | "n" | "no" | "off" | "0" => Ok(false),
            _ => Err("cannot read this text as a boolean".into()),
        },
        other => Err(format!("cannot read {} as a boolean", kind_name(other))),
    }
}

fn out_of(type_name: &str) -> String {
    format!("out of range for {type_name}")
}

/// [`to_int`] for a column of a narrower type: beyond 64 bits is out of its range too.
fn int_in(v: &Value, type_name: &str) -> std::result::Result<i64, String> {
    to_int(v).map_err(|e| if e.starts_with("out of range") { out_of(type_name) } else { e })
}

fn to_int(v: &Value) -> std::result::Result<i64, String> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            int_from_text(&n.to_string())
        }
        Value::String(s) => int_from_text(s.trim()),
        other => Err(format!("cannot read {} as an integer", kind_name(other))),
    }
}

/// An integer from text, also `3.0` or `1e3` when the value is exactly integral.
fn int_from_text(s: &str) -> std::result::Result<i64, String> {
    if let Ok(i) = s.parse::<i64>() {
        return Ok(i);
    }
    match parse_decimal(s) {
        Some(d) if d.is_integral() => d.to_i64().ok_or_else(|| "out of range for bigint".into()),
        Some(_) => Err("has a fractional part; an integer column would drop it".into()),
        None => Err("cannot read this as an integer".into()),
    }
}

fn to_float(v: &Value) -> std::result::Result<f64, String> {
    match v {
        Value::Number(n) => {
            let text = n.to_string();
            let f: f64 = text.parse().map_err(|_| "cannot read this number as a float".to_string())?;
            if f.is_infinite() || (f == 0.0 && !is_zero_text(&text)) {
                return Err("out of range for double precision".into());
            }
            Ok(f)
        }
        Value::String(s) => {
            let t = s.trim();
            match t.to_ascii_lowercase().as_str() {
                "nan" => return Ok(f64::NAN),
                "infinity" | "+infinity" | "inf" => return Ok(f64::INFINITY),
                "-infinity" | "-inf" => return Ok(f64::NEG_INFINITY),
                _ => {}
            }
            if parse_decimal(t).is_none() {
                return Err("cannot read this text as a number".into());
            }
            let f = t.parse::<f64>().map_err(|_| "cannot read this text as a number".to_string())?;
            if f.is_infinite() || (f == 0.0 && !is_zero_text(t)) {
                return Err("out of range for double precision".into());
            }
            Ok(f)
        }
        Value::Object(_) => match as_float_form(v) {
            Some(Ok(f)) => Ok(f),
            _ => Err("cannot read an object as a number".into()),
        },
        other => Err(format!("cannot read {} as a number", kind_name(other))),
    }
}

fn to_numeric(v: &Value) -> std::result::Result<String, String> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let t = s.trim();
            match t.to_ascii_lowercase().as_str() {
                "nan" => return Ok("NaN".into()),
                "infinity" | "+infinity" => return Ok("Infinity".into()),
                "-infinity" => return Ok("-Infinity".into()),
                _ => t.to_string(),
            }
        }
        Value::Object(_) => {
            return match as_float_form(v) {
                Some(Ok(f)) => Ok(float_text(f)),
                _ => Err("cannot read an object as a number".into()),
            }
        }
        other => return Err(format!("cannot read {} as a number", kind_name(other))),
    };
    let d = parse_decimal(&text).ok_or_else(|| "cannot read this as a decimal number".to_string())?;
    check_numeric_range(&d)?;
    Ok(d.to_string())
}

/// The most fraction digits a numeric value has (NUMERIC_DSCALE_MAX): its binary form has 14
/// bits for them, and PostgreSQL cuts the digits past a larger scale it was sent.
const NUMERIC_MAX_SCALE: i64 = 0x3FFF;
/// The most digits before the point (a weight of 32767 groups of four).
const NUMERIC_MAX_INT_DIGITS: i64 = 131_072;

/// A decimal PostgreSQL's numeric can hold exactly (its own input refuses the others with
/// "value overflows numeric format").
fn check_numeric_range(d: &Decimal) -> std::result::Result<(), String> {
    if d.scale > NUMERIC_MAX_SCALE {
        return Err(format!(
            "has {} digits after the decimal point; PostgreSQL's numeric holds at most {NUMERIC_MAX_SCALE}",
            d.scale
        ));
    }
    if d.digits.len() as i64 - d.scale > NUMERIC_MAX_INT_DIGITS {
        return Err(format!(
            "has {} digits before the decimal point; PostgreSQL's numeric holds at most {NUMERIC_MAX_INT_DIGITS}",
            d.digits.len() as i64 - d.scale
        ));
    }
    Ok(())
}

/// Whether a number's text is zero (so that a zero result is not an underflow).
fn is_zero_text(t: &str) -> bool {
    parse_decimal(t).is_some_and(|d| d.digits.is_empty())
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "Infinity".into()
    } else if f == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        format!("{f:?}")
    }
}

fn to_bytes(v: &Value) -> std::result::Result<Vec<u8>, String> {
    if let Some(b) = as_bytes_form(v) {
        return b.map_err(|e| format!("bad bytes form: {e}"));
    }
    if let Value::String(s) = v {
        // PostgreSQL's own hex form, as psql and pg_dump print bytea.
        if let Some(hex) = s.strip_prefix("\\x") {
            return decode_hex(hex).ok_or_else(|| "bad \\x hex text".into());
        }
        return Err("expected the bytes form {\"$base64\": true, \"encoded\": …} (or \\x hex text)".into());
    }
    Err(format!("expected the bytes form, found {}", kind_name(v)))
}

/// Hex digit pairs, nothing else (no sign: `u8::from_str_radix` would read "+f" as 15).
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2).map(|p| Some(hex_digit(p[0])? << 4 | hex_digit(p[1])?)).collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn to_uuid(v: &Value) -> std::result::Result<[u8; 16], String> {
    let Value::String(s) = v else { return Err(format!("expected a UUID string, found {}", kind_name(v))) };
    parse_uuid(s.trim()).ok_or_else(|| {
        "cannot read this text as a UUID (32 hex digits, a hyphen allowed after each group of four, \
         optionally in braces)"
            .to_string()
    })
}

/// A UUID as PostgreSQL's `uuid_in` reads it: 32 hex digits, optionally in braces, with a
/// hyphen allowed after any group of four digits but the last.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    let b = match b.strip_prefix(b"{") {
        Some(inner) => inner.strip_suffix(b"}")?,
        None => b,
    };
    let mut out = [0u8; 16];
    let mut i = 0;
    for (k, byte) in out.iter_mut().enumerate() {
        *byte = hex_digit(*b.get(i)?)? << 4 | hex_digit(*b.get(i + 1)?)?;
        i += 2;
        if k % 2 == 1 && k < 15 && b.get(i) == Some(&b'-') {
            i += 1;
        }
    }
    (i == b.len()).then_some(out)
}

/// `verbatim` (json): a string holding JSON is kept as written.
fn to_json_text(v: &Value, opts: &Options, verbatim: bool) -> std::result::Result<String, String> {
    if let Value::String(s) = v {
        if verbatim && !s.contains("\\u0000") && serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok() {
            return Ok(s.clone());
        }
    }
    let parsed;
    let value = match v {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(p) => {
                parsed = p;
                &parsed
            }
            Err(e) => {
                return Err(format!(
                    "text is not valid JSON ({e}); a json column takes an object, an array, or a string holding JSON"
                ))
            }
        },
        other => other,
    };
    let s = if opts.strip_nul {
        let mut copy = value.clone();
        strip_nul_deep(&mut copy);
        copy.to_string()
    } else {
        value.to_string()
    };
    check_nul_json(&s)?;
    Ok(s)
}

/// Text for a timestamptz (`tz`) or timestamp column, as microseconds since the epoch
/// (`convert` of a string; count-check calls it without building a `Value`).
pub fn text_to_timestamp(s: &str, opts: &Options, tz: bool) -> std::result::Result<i64, String> {
    let t = s.trim();
    if t.len() <= 9 {
        match t.to_ascii_lowercase().as_str() {
            "infinity" | "+infinity" => return Ok(i64::MAX),
            "-infinity" => return Ok(i64::MIN),
            _ => {}
        }
    }
    let Some(p) = timefmt::parse_timestamp(t) else {
        return match &opts.date_format {
            // The format's wall time is in the assumed zone (timestamptz) or as written.
            Some(f) => {
                let m = parse_with_format(t, f)
                    .map_err(|e| format!("cannot read this text as a timestamp: it is not ISO 8601 and {e}"))?;
                if !tz {
                    return Ok(m);
                }
                opts.assume_tz.to_utc(m).ok_or_else(|| {
                    format!("this time is outside the years the rules of zone {} cover", opts.assume_tz.name())
                })
            }
            None => Err(match timefmt::diagnose(t) {
                Some(why) => format!("cannot read this text as a timestamp: {why}"),
                None => "cannot read this text as a timestamp (ISO 8601; --date-format FMT reads others)".to_string(),
            }),
        };
    };
    // timestamptz: no offset means the assumed zone. timestamp: a written offset is
    // converted to UTC; no offset is stored as written.
    if !tz {
        return Ok(p.utc_micros(0));
    }
    p.utc_micros_in(&opts.assume_tz)
        .ok_or_else(|| format!("this time is outside the years the rules of zone {} cover", opts.assume_tz.name()))
}

fn to_timestamp(v: &Value, opts: &Options, tz: bool) -> std::result::Result<i64, String> {
    match v {
        Value::String(s) => text_to_timestamp(s, opts, tz),
        Value::Number(n) => {
            let unit = opts.epoch.ok_or_else(|| {
                "a number in a timestamp column needs its epoch unit: pass --epoch-unit s|ms|us|ns".to_string()
            })?;
            epoch_to_micros(&n.to_string(), unit)
        }
        other => Err(format!("cannot read {} as a timestamp", kind_name(other))),
    }
}

/// Exact conversion of an epoch number's text (integer or decimal) to microseconds.
fn epoch_to_micros(text: &str, unit: EpochUnit) -> std::result::Result<i64, String> {
    let d = parse_decimal(text).ok_or_else(|| "cannot read this number as an epoch".to_string())?;
    // value = digits * 10^-scale units; micros = value * 1e6 / per_second, rounded half away from zero.
    let num = d.mantissa_i128().ok_or_else(|| "epoch out of range".to_string())?;
    let mut den: i128 = unit.per_second();
    let mut num = num.checked_mul(1_000_000).ok_or_else(|| "epoch out of range".to_string())?;
    for _ in 0..d.scale.max(0) {
        den = den.checked_mul(10).ok_or_else(|| "epoch has too many digits".to_string())?;
    }
    for _ in 0..(-d.scale).max(0) {
        num = num.checked_mul(10).ok_or_else(|| "epoch out of range".to_string())?;
    }
    let q = num / den;
    let r = num % den;
    let q = if 2 * r.abs() >= den { q + num.signum() } else { q };
    let micros = i64::try_from(q).map_err(|_| "epoch out of range".to_string())?;
    // PostgreSQL's range starts in 4714 BC. At the other end the stream's timestamps (RFC 3339)
    // stop at the year 9999: an epoch beyond is a finer unit read as a coarser one (1.7e12 ms
    // read as seconds is the year 55,980), never guessed.
    if micros < -210_866_803_200_000_000 {
        return Err("epoch out of range for a timestamp (before 4714 BC; wrong --epoch-unit?)".into());
    }
    if micros >= YEAR_10000_MICROS {
        let finer = [EpochUnit::Millis, EpochUnit::Micros, EpochUnit::Nanos]
            .into_iter()
            .filter(|u| u.per_second() > unit.per_second())
            .find_map(|u| epoch_to_micros(text, u).ok().filter(|m| *m >= 0).map(|m| (u, m)));
        let hint = match finer {
            Some((u, m)) => format!("; in {} it is {}", u.name(), timefmt::format_rfc3339_micros(m)),
            None => String::new(),
        };
        return Err(format!("as an epoch in {} this is after the year 9999 (wrong --epoch-unit?{hint})", unit.name()));
    }
    Ok(micros)
}

/// 10000-01-01T00:00:00Z in microseconds since the Unix epoch.
const YEAR_10000_MICROS: i64 = 253_402_300_800_000_000;

fn to_date(v: &Value, opts: &Options) -> std::result::Result<i32, String> {
    // ±infinity are PostgreSQL's largest and smallest day numbers, as in its binary form.
    if let Some(s) = v.as_str().map(str::trim).filter(|s| s.len() <= 9) {
        match s.to_ascii_lowercase().as_str() {
            "infinity" | "+infinity" => return Ok(i32::MAX),
            "-infinity" => return Ok(i32::MIN),
            _ => {}
        }
    }
    let micros = match v {
        Value::String(s) => match (timefmt::parse_timestamp(s.trim()), &opts.date_format) {
            (Some(p), _) if p.date_only => p.micros,
            // PostgreSQL reads '2024-01-05 24:00:00' as the date 2024-01-05, the timestamp as
            // 2024-01-06: which day is meant cannot be known.
            (Some(p), _) if p.end_of_day => {
                return Err("24:00:00 into a date column: is it this day or the next? write the date".into())
            }
            (Some(p), _) => p.utc_micros_in(&opts.assume_tz).ok_or_else(|| {
                format!("this time is outside the years the rules of zone {} cover", opts.assume_tz.name())
            })?,
            (None, Some(f)) => parse_with_format(s.trim(), f)
                .map_err(|e| format!("cannot read this text as a date: it is not ISO 8601 and {e}"))?,
            (None, None) => {
                return Err(match timefmt::diagnose(s) {
                    Some(why) => format!("cannot read this text as a date: {why}"),
                    None => "cannot read this text as a date (ISO 8601; --date-format FMT reads others)".into(),
                })
            }
        },
        Value::Number(_) => to_timestamp(v, opts, true)?,
        other => return Err(format!("cannot read {} as a date", kind_name(other))),
    };
    if micros.rem_euclid(MICROS_PER_DAY) != 0 {
        return Err("has a time of day; a date column would drop it (use timestamptz)".into());
    }
    Ok(micros.div_euclid(MICROS_PER_DAY) as i32)
}

fn to_time(v: &Value) -> std::result::Result<i64, String> {
    let Value::String(s) = v else { return Err(format!("cannot read {} as a time of day", kind_name(v))) };
    let text = format!("1970-01-01T{}", s.trim());
    let p = timefmt::parse_timestamp(&text).filter(|p| p.offset.is_none()).ok_or_else(|| {
        match timefmt::diagnose(&text).filter(|_| s.trim().as_bytes().get(2) == Some(&b':')) {
            Some(why) => format!("cannot read this text as a time of day: {why}"),
            None => "cannot read this text as a time of day (HH:MM[:SS[.ffffff]])".to_string(),
        }
    })?;
    Ok(p.micros)
}

// ---------------------------------------------------------------- silent changes

/// A change PostgreSQL makes to a value on the way in without an error. pg-load counts each
/// per column (summary, run log) or, with `--strict`, refuses the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// More fraction digits than a `numeric(p,s)` column's scale: rounded to s.
    Scale,
    /// More than 6 fraction digits of a second (text or epoch): rounded to microseconds.
    Microseconds,
    /// More precision than `real` (float4) holds: rounded.
    Real,
    /// More precision than `double precision` holds: rounded.
    Double,
    /// A JSON object repeats a key: PostgreSQL's jsonb keeps the last value (json keeps the
    /// text as written, unless `--strip-nul` had to rebuild it); hstore text that repeats a
    /// key keeps one of its values, which one undefined.
    DuplicateKeys,
    /// More fraction digits of a second than a `timestamp(p)`/`time(p)`/`interval(p)` column keeps.
    Precision,
    /// An interval's fraction of a year that is no whole number of months: rounded to months.
    Months,
}

impl Change {
    pub const ALL: [Change; 7] = [
        Change::Scale,
        Change::Microseconds,
        Change::Real,
        Change::Double,
        Change::DuplicateKeys,
        Change::Precision,
        Change::Months,
    ];

    /// The key in the run log's `changes` and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Change::Scale => "rounded-to-scale",
            Change::Microseconds => "rounded-to-microseconds",
            Change::Real => "rounded-to-real",
            Change::Double => "rounded-to-double",
            Change::DuplicateKeys => "duplicate-keys-collapsed",
            Change::Precision => "rounded-to-precision",
            Change::Months => "rounded-to-months",
        }
    }

    pub fn describe(self, col: &ColumnInfo) -> String {
        match self {
            Change::Scale => format!("PostgreSQL would round it to {} fraction digits", col.scale.unwrap_or(0)),
            Change::Microseconds => "PostgreSQL would round it to microseconds".into(),
            Change::Real => "real would round it (about 7 significant digits)".into(),
            Change::Double => "double precision would round it (about 16 significant digits)".into(),
            Change::DuplicateKeys => {
                "the object repeats a key: PostgreSQL keeps one of its values (jsonb the last, hstore text one it \
                 does not say)"
                    .into()
            }
            Change::Precision => {
                format!("PostgreSQL would round it to {} fraction digits of a second", col.precision.unwrap_or(6))
            }
            Change::Months => {
                "a fraction of a year that is no whole number of months: PostgreSQL would round it to months".into()
            }
        }
    }
}

/// Types read by the server whose rounding pg-load looks for (their `format_type` names).
const TIMETZ: &str = "time with time zone";
const MONEY: &str = "money";

/// Whether `col`'s type can change values silently (so values are looked at).
pub fn may_change(col: &ColumnInfo) -> bool {
    let kind = match &col.kind {
        Kind::Array { elem, .. } => &**elem,
        k => k,
    };
    match kind {
        Kind::Numeric => col.scale.is_some(),
        Kind::Timestamp
        | Kind::Timestamptz
        | Kind::Date
        | Kind::Time
        | Kind::Float4
        | Kind::Float8
        | Kind::Json
        | Kind::Jsonb => true,
        Kind::Other(name) => col.interval_fields.is_some() || name == TIMETZ || name == MONEY || is_hstore(name),
        _ => false,
    }
}

/// The silent change the value with JSON text `raw`, converted to `cell`, undergoes going
/// into `col`, if any (an array's: its first element's). Only asked of values that converted.
pub fn silent_change(raw: &str, cell: &Cell, col: &ColumnInfo, opts: &Options) -> Option<Change> {
    change_of(raw, &col.kind, col, opts).or_else(|| precision_change(cell, col))
}

/// A time PostgreSQL rounds to the column's declared precision (`timestamp(0)`): seen on the
/// converted microseconds, however the text was written (ISO, a date format, an epoch).
fn precision_change(cell: &Cell, col: &ColumnInfo) -> Option<Change> {
    let unit = 10i64.pow(6 - col.precision?.min(6));
    match cell {
        Cell::Timestamp(t) | Cell::Timestamptz(t) if *t == i64::MAX || *t == i64::MIN => None,
        Cell::Timestamp(t) | Cell::Timestamptz(t) | Cell::Time(t) => (t % unit != 0).then_some(Change::Precision),
        Cell::Array(items, _) => items.iter().find_map(|c| precision_change(c, col)),
        _ => None,
    }
}

/// What the text alone tells: `kind` is the column's, or an array's element kind.
fn change_of(raw: &str, kind: &Kind, col: &ColumnInfo, opts: &Options) -> Option<Change> {
    let string =
        || -> Option<String> { raw.starts_with('"').then(|| serde_json::from_str::<String>(raw).ok()).flatten() };
    let number_text = || -> Option<String> {
        if raw.starts_with('"') {
            string().map(|s| s.trim().to_string())
        } else {
            raw.bytes().next().filter(|c| c.is_ascii_digit() || *c == b'-').map(|_| raw.to_string())
        }
    };
    match kind {
        Kind::Array { elem, .. } => {
            // A JSON array, or a string holding one; each element as its element kind.
            let owned;
            let text = match raw.starts_with('"') {
                true => {
                    owned = string()?;
                    owned.as_str()
                }
                false => raw,
            };
            let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(text).ok()?;
            items.iter().find_map(|v| change_of(v.get(), elem, col, opts))
        }
        Kind::Numeric => {
            let d = parse_decimal(&number_text()?)?;
            (excess_digits_nonzero(&d, col.scale? as i64)).then_some(Change::Scale)
        }
        // (A date from a timestamp at midnight: a fraction of a microsecond past it is lost too.)
        Kind::Timestamp | Kind::Timestamptz | Kind::Date | Kind::Time => {
            if raw.starts_with('"') {
                // A string without escapes is its own text: looked at in place.
                let owned;
                let s = match raw.contains('\\') {
                    false => &raw[1..raw.len() - 1],
                    true => {
                        owned = string()?;
                        owned.as_str()
                    }
                };
                let frac = s.split_once(['.', ','])?.1.as_bytes();
                let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
                (digits > 6 && frac[6..digits].iter().any(|&c| c != b'0')).then_some(Change::Microseconds)
            } else {
                // An epoch: its unit leaves this many fraction digits of microseconds.
                let allowed = match opts.epoch? {
                    EpochUnit::Seconds => 6,
                    EpochUnit::Millis => 3,
                    EpochUnit::Micros => 0,
                    EpochUnit::Nanos => -3,
                };
                (excess_digits_nonzero(&parse_decimal(raw)?, allowed)).then_some(Change::Microseconds)
            }
        }
        Kind::Float4 => {
            let t = number_text()?;
            let input = parse_decimal(&t)?;
            let stored = t.parse::<f64>().ok()? as f32;
            (stored.is_finite() && !same_decimal(&input, &format!("{stored:e}"))).then_some(Change::Real)
        }
        Kind::Float8 => {
            let t = number_text()?;
            let input = parse_decimal(&t)?;
            let stored = t.parse::<f64>().ok()?;
            (stored.is_finite() && !same_decimal(&input, &format!("{stored:e}"))).then_some(Change::Double)
        }
        // timetz: its text's fraction of a second, as time's (the offset follows it).
        Kind::Other(name) if name == TIMETZ => {
            let s = string()?;
            let frac = s.split_once('.')?.1.as_bytes();
            let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            let beyond = |keep: usize| digits > keep && frac[keep..digits].iter().any(|&c| c != b'0');
            match () {
                _ if beyond(6) => Some(Change::Microseconds),
                _ if col.precision.is_some_and(|p| beyond(p as usize)) => Some(Change::Precision),
                _ => None,
            }
        }
        // money: rounded to its fraction digits (lc_monetary's; the catalog read them as `scale`).
        Kind::Other(name) if name == MONEY => {
            let t = number_text()?;
            let t: String = t.chars().filter(|c| c.is_ascii_digit() || matches!(c, '.' | '-')).collect();
            excess_digits_nonzero(&parse_decimal(&t)?, col.scale? as i64).then_some(Change::Scale)
        }
        // hstore: a JSON object's repeated key (collapsed to its last value as it was read), or
        // hstore text that repeats one (the server keeps one of them).
        Kind::Other(name) if is_hstore(name) => {
            let repeats = match raw.starts_with('{') {
                true => json_repeats_a_key(raw),
                false => hstore_repeats_a_key(&string()?)?,
            };
            repeats.then_some(Change::DuplicateKeys)
        }
        Kind::Other(_) => {
            let iv = timefmt::read_interval(&number_text()?, col.interval_fields?)?;
            let unit = 10i128.pow(6 - col.precision.unwrap_or(6).min(6));
            match () {
                _ if iv.fract_months => Some(Change::Months),
                _ if iv.sub_micro => Some(Change::Microseconds),
                _ if iv.micros % unit != 0 => Some(Change::Precision),
                _ => None,
            }
        }
        // json keeps its text as written (keys repeated and all) unless --strip-nul rebuilt it.
        Kind::Json if !(opts.strip_nul && raw.contains("\\u0000")) => None,
        Kind::Json | Kind::Jsonb => {
            let has = match string() {
                Some(s) => json_repeats_a_key(&s),
                None => json_repeats_a_key(raw),
            };
            has.then_some(Change::DuplicateKeys)
        }
        _ => None,
    }
}

/// A `varchar(n)` or `char(n)` value longer than n characters: PostgreSQL refuses it, except
/// that it cuts trailing spaces past n without an error, which for `varchar` loses them (for
/// `char(n)` they are padding, not part of the value). Both are refused here, naming the value.
/// A `name` longer than 63 bytes (a `"char"` than 1), which their input cuts without an error, too.
pub fn check_length(text: &str, col: &ColumnInfo) -> std::result::Result<(), String> {
    if let Some(max) = col.max_bytes.map(|n| n as usize).filter(|max| text.len() > *max) {
        return Err(format!(
            "is {} bytes ({} characters) in UTF-8, more than the {max} the type holds: PostgreSQL would cut it \
             without an error",
            text.len(),
            text.chars().count()
        ));
    }
    if let Some(why) = col.interval_fields.and_then(|r| interval_drops(text, r)) {
        return Err(format!("{why}: PostgreSQL would drop the rest of this value without an error"));
    }
    let Some(n) = col.length.map(|n| n as usize) else { return Ok(()) };
    if text.len() <= n {
        return Ok(()); // no more bytes than n, so no more characters
    }
    let Some((cut, _)) = text.char_indices().nth(n) else { return Ok(()) };
    let chars = n + text[cut..].chars().count();
    let spaces = text[cut..].bytes().all(|b| b == b' ');
    match (spaces, col.blank_padded) {
        (true, true) => Ok(()),
        (true, false) => Err(format!(
            "is {chars} characters, more than the {n} the column holds: PostgreSQL would cut its trailing \
             spaces without an error"
        )),
        (false, _) => Err(format!("is {chars} characters, more than the {n} the column holds")),
    }
}

/// An interval the column's fields cannot hold whole (`1 day 02:30` into `interval hour`):
/// what the column keeps, when the value has more.
fn interval_drops(text: &str, range: u32) -> Option<&'static str> {
    let field = timefmt::finest_field(range)?;
    let iv = timefmt::read_interval(text, range)?;
    let (hour, minute) = (3_600_000_000i128, 60_000_000i128);
    let (keeps, dropped) = match field {
        "year" => ("the column keeps whole years only", iv.months % 12 != 0 || iv.days != 0 || iv.micros != 0),
        "month" => ("the column keeps years and months only", iv.days != 0 || iv.micros != 0),
        "day" => ("the column keeps no time of day", iv.micros != 0),
        "hour" => ("the column keeps whole hours only", iv.micros % hour != 0),
        _ => ("the column keeps whole minutes only", iv.micros % minute != 0),
    };
    dropped.then_some(keeps)
}

/// Whether `col` has a size [`check_fits`] checks (`varchar(n)`, `name`, `numeric(p,s)`), or
/// fields (`interval hour`).
pub fn has_limit(col: &ColumnInfo) -> bool {
    col.length.is_some()
        || col.max_bytes.is_some()
        || col.numeric_precision.is_some()
        || col.interval_fields.is_some_and(|r| r != timefmt::IV_FULL)
}

/// A converted cell against its column's declared size: text by [`check_length`], a numeric
/// by [`check_numeric_fits`] (an array's elements too), so the error names the value.
pub fn check_fits(cell: &Cell, col: &ColumnInfo) -> std::result::Result<(), String> {
    match cell {
        Cell::Text(t) => check_length(t, col),
        Cell::Numeric(n) => check_numeric_fits(n, col),
        Cell::Array(items, _) => {
            for (i, c) in items.iter().enumerate() {
                check_fits(c, col).map_err(|e| format!("element {i}: {e}"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A numeric that `numeric(p,s)` cannot hold (PostgreSQL's "numeric field overflow"): after
/// rounding to s fraction digits its first nonzero digit is more than p - s places before the
/// point; or it is infinite.
pub fn check_numeric_fits(text: &str, col: &ColumnInfo) -> std::result::Result<(), String> {
    let (Some(p), Some(s)) = (col.numeric_precision, col.scale) else { return Ok(()) };
    let (p, s) = (p as i64, s as i64);
    if text.ends_with("Infinity") {
        return Err(format!("numeric({p},{s}) cannot hold an infinite value"));
    }
    let Some(d) = parse_decimal(text) else { return Ok(()) }; // NaN
    let n = d.digits.len() as i64;
    // Places before the point of the first nonzero digit once rounded to s (half away from zero).
    let places = if d.scale <= s {
        if n == 0 {
            return Ok(());
        }
        n - d.scale
    } else {
        let keep = n - (d.scale - s);
        let up = keep >= 0 && d.digits.as_bytes().get(keep as usize).is_some_and(|c| *c >= b'5');
        match keep {
            k if k < 0 || (k == 0 && !up) => return Ok(()), // rounds to zero
            k if up && d.digits.as_bytes()[..k as usize].iter().all(|c| *c == b'9') => k + 1 - s,
            k => k - s,
        }
    };
    if places > p - s {
        return Err(format!(
            "does not fit numeric({p},{s}): rounded to {s} fraction digits it must be less than 10^{} in absolute \
             value (PostgreSQL: numeric field overflow)",
            p - s
        ));
    }
    Ok(())
}

/// Whether `d` has nonzero digits beyond `keep` fraction digits.
fn excess_digits_nonzero(d: &Decimal, keep: i64) -> bool {
    let excess = d.scale - keep;
    if excess <= 0 {
        return false;
    }
    let n = d.digits.len();
    let from = n.saturating_sub(excess as usize);
    d.digits[from..].bytes().any(|c| c != b'0')
}

/// Whether decimal `a` equals the number written `b` (trailing zeros aside).
fn same_decimal(a: &Decimal, b: &str) -> bool {
    let Some(b) = parse_decimal(b) else { return false };
    let norm = |d: &Decimal| {
        let t = d.digits.trim_end_matches('0');
        let scale = d.scale - (d.digits.len() - t.len()) as i64;
        (d.negative && !t.is_empty(), t.to_string(), if t.is_empty() { 0 } else { scale })
    };
    norm(a) == norm(&b)
}

/// Whether any object in the JSON text `s` repeats a key (at any depth).
pub fn json_repeats_a_key(s: &str) -> bool {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct V<'a>(&'a mut bool);
    impl<'de> Visitor<'de> for V<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> std::result::Result<(), M::Error> {
            // A list for the usual few keys; a set past them (a hostile object has 100,000).
            let mut few: Vec<String> = vec![];
            let mut many: Option<std::collections::HashSet<String>> = None;
            while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                let repeated = match &mut many {
                    Some(set) => !set.insert(k.into_owned()),
                    None if few.len() < 32 => {
                        let r = few.iter().any(|x| *x == *k);
                        few.push(k.into_owned());
                        r
                    }
                    None => {
                        let mut set: std::collections::HashSet<String> = few.drain(..).collect();
                        let r = !set.insert(k.into_owned());
                        many = Some(set);
                        r
                    }
                };
                if repeated {
                    *self.0 = true;
                }
                m.next_value_seed(Seed(self.0))?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> std::result::Result<(), A::Error> {
            while a.next_element_seed(Seed(self.0))?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> std::result::Result<(), E> {
            Ok(())
        }
    }
    struct Seed<'a>(&'a mut bool);
    impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
            d.deserialize_any(V(self.0))
        }
    }
    let _ = IgnoredAny;
    let mut found = false;
    let mut de = serde_json::Deserializer::from_str(s);
    let _ = serde::de::DeserializeSeed::deserialize(Seed(&mut found), &mut de);
    found
}

/// The silent changes of one load, per column.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    counts: Vec<[u64; Change::ALL.len()]>,
}

impl Changes {
    pub fn record(&mut self, column: usize, c: Change) {
        if self.counts.len() <= column {
            self.counts.resize(column + 1, [0; Change::ALL.len()]);
        }
        self.counts[column][c as usize] += 1;
    }

    /// (column name, change name, count), in column order.
    pub fn list(&self, columns: &[ColumnInfo]) -> Vec<(String, String, u64)> {
        let mut out = vec![];
        for (i, counts) in self.counts.iter().enumerate() {
            for c in Change::ALL {
                if counts[c as usize] > 0 {
                    out.push((columns[i].name.clone(), c.name().to_string(), counts[c as usize]));
                }
            }
        }
        out
    }
}

/// `--strict`: the error for a value PostgreSQL would change.
pub fn strict_error(line: u64, col: &ColumnInfo, raw: &str, c: Change) -> Error {
    let cause =
        format!("{} (column type {}); --strict refuses values PostgreSQL would change", c.describe(col), col.type_name);
    // An object or array as the stream wrote it: read back, its repeated key would be gone.
    if raw.starts_with(['{', '[']) {
        let shown = crate::stream::json_snippet(raw.to_string());
        return Error::Data(format!("line {line}, column '{}': value {shown}: {cause}", col.name));
    }
    let v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    conversion_error(line, &col.name, &v, &cause)
}

// ---------------------------------------------------------------- decimals

/// A decimal number: `digits` × 10^(-scale), with a sign.
#[derive(Debug, Clone, PartialEq)]
pub struct Decimal {
    pub negative: bool,
    /// Significant digits without leading zeros ("" for zero).
    pub digits: String,
    /// Number of digits after the decimal point (negative: trailing zeros implied).
    pub scale: i64,
}

/// Parses `[-+]digits[.digits][e[-+]digits]`.
pub fn parse_decimal(s: &str) -> Option<Decimal> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        negative = b[i] == b'-';
        i += 1;
    }
    let mut digits = String::new();
    let mut scale: i64 = 0;
    let mut seen = false;
    while i < b.len() && b[i].is_ascii_digit() {
        digits.push(b[i] as char);
        seen = true;
        i += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            digits.push(b[i] as char);
            scale += 1;
            seen = true;
            i += 1;
        }
    }
    if !seen {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        let exp: i64 = std::str::from_utf8(&b[i..]).ok()?.parse().ok()?;
        if exp.abs() > 100_000 {
            return None;
        }
        scale -= exp;
        i = b.len();
    }
    if i != b.len() {
        return None;
    }
    let digits = digits.trim_start_matches('0').to_string();
    Some(Decimal { negative: negative && !digits.is_empty(), digits, scale })
}

impl Decimal {
    pub fn is_integral(&self) -> bool {
        if self.scale <= 0 {
            return true;
        }
        let s = self.scale as usize;
        let frac = if self.digits.len() >= s { &self.digits[self.digits.len() - s..] } else { &self.digits[..] };
        frac.bytes().all(|c| c == b'0')
    }

    pub fn to_i64(&self) -> Option<i64> {
        let m = self.mantissa_i128()?;
        let mut v = m;
        if self.scale > 0 {
            for _ in 0..self.scale {
                v /= 10;
            }
        } else {
            for _ in 0..(-self.scale) {
                v = v.checked_mul(10)?;
            }
        }
        i64::try_from(v).ok()
    }

    /// The signed digits as an integer (scale not applied).
    pub fn mantissa_i128(&self) -> Option<i128> {
        if self.digits.is_empty() {
            return Some(0);
        }
        if self.digits.len() > 36 {
            return None;
        }
        let v: i128 = self.digits.parse().ok()?;
        Some(if self.negative { -v } else { v })
    }
}

impl std::fmt::Display for Decimal {
    /// Plain notation (`-0.0012`, `1500`), keeping the written scale, as PostgreSQL prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        if self.negative {
            s.push('-');
        }
        if self.scale <= 0 {
            if self.digits.is_empty() {
                s.push('0');
            } else {
                s.push_str(&self.digits);
                for _ in 0..(-self.scale) {
                    s.push('0');
                }
            }
        } else {
            let sc = self.scale as usize;
            let padded = if self.digits.len() <= sc {
                format!("{}{}", "0".repeat(sc + 1 - self.digits.len()), self.digits)
            } else {
                self.digits.clone()
            };
            let (int, frac) = padded.split_at(padded.len() - sc);
            s.push_str(int);
            s.push('.');
            s.push_str(frac);
        }
        f.write_str(&s)
    }
}

// ---------------------------------------------------------------- binary COPY

/// The header of PostgreSQL's binary COPY format.
pub const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The trailer: a field count of -1.
pub const BINARY_TRAILER: &[u8] = &[0xff, 0xff];

/// Appends one field (length word and bytes) in binary COPY format.
pub fn encode_binary(cell: &Cell, out: &mut Vec<u8>) {
    if let Cell::Null = cell {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return;
    }
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    encode_binary_body(cell, out);
    let len = (out.len() - len_at - 4) as i32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

fn encode_binary_body(cell: &Cell, out: &mut Vec<u8>) {
    match cell {
        Cell::Null => unreachable!("handled by encode_binary"),
        Cell::Bool(b) => out.push(*b as u8),
        Cell::Int2(v) => out.extend_from_slice(&v.to_be_bytes()),
        Cell::Int4(v) => out.extend_from_slice(&v.to_be_bytes()),
        Cell::Int8(v) => out.extend_from_slice(&v.to_be_bytes()),
        Cell::Float4(v) => out.extend_from_slice(&v.to_bits().to_be_bytes()),
        Cell::Float8(v) => out.extend_from_slice(&v.to_bits().to_be_bytes()),
        Cell::Numeric(s) => encode_numeric(s, out),
        Cell::Text(s) | Cell::Json(s) => out.extend_from_slice(s.as_bytes()),
        Cell::Jsonb(s) => {
            out.push(1); // jsonb binary format version
            out.extend_from_slice(s.as_bytes());
        }
        Cell::Bytes(b) => out.extend_from_slice(b),
        Cell::Date(d @ (i32::MAX | i32::MIN)) => out.extend_from_slice(&d.to_be_bytes()),
        Cell::Date(d) => out.extend_from_slice(&((*d as i64 - PG_EPOCH_DAYS) as i32).to_be_bytes()),
        Cell::Time(t) => out.extend_from_slice(&t.to_be_bytes()),
        Cell::Timestamp(t) | Cell::Timestamptz(t) => {
            let pg = match *t {
                i64::MAX | i64::MIN => *t,
                t => t - PG_EPOCH_MICROS,
            };
            out.extend_from_slice(&pg.to_be_bytes());
        }
        Cell::Uuid(u) => out.extend_from_slice(u),
        Cell::Array(items, elem_oid) => {
            let has_null = items.iter().any(|c| matches!(c, Cell::Null));
            let ndim: i32 = if items.is_empty() { 0 } else { 1 };
            out.extend_from_slice(&ndim.to_be_bytes());
            out.extend_from_slice(&(has_null as i32).to_be_bytes());
            out.extend_from_slice(&elem_oid.to_be_bytes());
            if ndim == 1 {
                out.extend_from_slice(&(items.len() as i32).to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes());
                for c in items {
                    encode_binary(c, out);
                }
            }
        }
    }
}

/// numeric's binary form: ndigits, weight, sign, dscale, then base-10000 digits.
fn encode_numeric(s: &str, out: &mut Vec<u8>) {
    let special = match s {
        "NaN" => Some(0xC000u16),
        "Infinity" => Some(0xD000),
        "-Infinity" => Some(0xF000),
        _ => None,
    };
    if let Some(sign) = special {
        for v in [0u16, 0, sign, 0] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        return;
    }
    let d = parse_decimal(s).expect("numeric cells hold canonical decimals");
    let dscale = d.scale.max(0) as u16;
    // Digits of the integer part and fraction, with the point at `int_len`.
    let int_len = d.digits.len() as i64 - d.scale;
    // Pad so the integer part is a multiple of 4 digits and the fraction too.
    let int_digits = int_len.max(0);
    let lead_pad = (4 - int_digits % 4) % 4;
    let mut all = "0".repeat(lead_pad as usize);
    if int_len < 0 {
        all.push_str(&"0".repeat((-int_len) as usize));
    }
    all.push_str(&d.digits);
    if d.scale < 0 {
        all.push_str(&"0".repeat((-d.scale) as usize));
    }
    while !all.len().is_multiple_of(4) {
        all.push('0');
    }
    let groups: Vec<i16> = all.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap().parse().unwrap()).collect();
    // Weight of the first group: number of integer groups - 1.
    let int_groups = (int_digits + lead_pad) / 4;
    let mut weight = int_groups - 1;
    let mut first = 0;
    while first < groups.len() && groups[first] == 0 {
        first += 1;
        weight -= 1;
    }
    let mut last = groups.len();
    while last > first && groups[last - 1] == 0 {
        last -= 1;
    }
    let digits = &groups[first..last];
    if digits.is_empty() {
        weight = 0;
    }
    let sign: u16 = if d.negative && !digits.is_empty() { 0x4000 } else { 0 };
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in digits {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

// ---------------------------------------------------------------- text COPY

/// Appends one field in COPY's text format (no delimiter).
pub fn encode_text(cell: &Cell, out: &mut Vec<u8>) {
    let mut s = String::new();
    match cell {
        Cell::Null => {
            out.extend_from_slice(b"\\N");
        }
        Cell::Text(t) | Cell::Json(t) | Cell::Jsonb(t) => {
            escape_copy_text(t, out);
        }
        Cell::Array(items, _) => {
            s.push('{');
            for (i, c) in items.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                if let Cell::Null = c {
                    s.push_str("NULL");
                    continue;
                }
                let mut inner = Vec::new();
                encode_text_plain(c, &mut inner);
                s.push('"');
                for ch in String::from_utf8(inner).expect("utf-8").chars() {
                    if ch == '"' || ch == '\\' {
                        s.push('\\');
                    }
                    s.push(ch);
                }
                s.push('"');
            }
            s.push('}');
            escape_copy_text(&s, out);
        }
        other => {
            let mut plain = Vec::new();
            encode_text_plain(other, &mut plain);
            escape_copy_text(std::str::from_utf8(&plain).expect("utf-8"), out);
        }
    }
}

/// The value's text input form, unescaped.
fn encode_text_plain(cell: &Cell, out: &mut Vec<u8>) {
    let _ = match cell {
        Cell::Null => write!(out, "NULL"),
        Cell::Bool(b) => write!(out, "{}", if *b { "t" } else { "f" }),
        Cell::Int2(v) => write!(out, "{v}"),
        Cell::Int4(v) => write!(out, "{v}"),
        Cell::Int8(v) => write!(out, "{v}"),
        Cell::Float4(v) => write!(out, "{}", float_text(*v as f64).replace(".0e", "e")),
        Cell::Float8(v) => write!(out, "{}", float_text(*v)),
        Cell::Numeric(s) | Cell::Text(s) | Cell::Json(s) | Cell::Jsonb(s) => write!(out, "{s}"),
        Cell::Bytes(b) => {
            let mut h = String::with_capacity(2 + b.len() * 2);
            h.push_str("\\x");
            for x in b {
                let _ = write!(h, "{x:02x}");
            }
            write!(out, "{h}")
        }
        Cell::Date(d) => write!(out, "{}", date_text(*d as i64)),
        Cell::Time(t) => write!(out, "{}", time_text(*t)),
        Cell::Timestamp(t) | Cell::Timestamptz(t) => {
            let tz = matches!(cell, Cell::Timestamptz(_));
            match *t {
                i64::MAX => write!(out, "infinity"),
                i64::MIN => write!(out, "-infinity"),
                t => {
                    let days = t.div_euclid(MICROS_PER_DAY);
                    let (y, m, d) = timefmt::civil_from_days(days);
                    let (year, bc) = if y <= 0 { (1 - y, " BC") } else { (y, "") };
                    write!(
                        out,
                        "{year:04}-{m:02}-{d:02} {}{}{bc}",
                        time_text(t.rem_euclid(MICROS_PER_DAY)),
                        if tz { "+00" } else { "" }
                    )
                }
            }
        }
        Cell::Uuid(u) => {
            let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
            write!(out, "{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
        }
        Cell::Array(..) => {
            let mut tmp = Vec::new();
            encode_text(cell, &mut tmp);
            out.extend_from_slice(&tmp);
            Ok(())
        }
    };
}

fn date_text(days: i64) -> String {
    match days {
        d if d == i32::MAX as i64 => return "infinity".into(),
        d if d == i32::MIN as i64 => return "-infinity".into(),
        _ => {}
    }
    let (y, m, d) = timefmt::civil_from_days(days);
    if y <= 0 {
        format!("{:04}-{m:02}-{d:02} BC", 1 - y)
    } else {
        format!("{y:04}-{m:02}-{d:02}")
    }
}

fn time_text(micros: i64) -> String {
    let secs = micros / 1_000_000;
    format!("{:02}:{:02}:{:02}.{:06}", secs / 3600, secs / 60 % 60, secs % 60, micros % 1_000_000)
}

fn escape_copy_text(s: &str, out: &mut Vec<u8>) {
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
}

/// A COPY field as pg-load encoded it (binary: length word and bytes; text: COPY's text form),
/// shown as a value in a message (`-3`, `"abc"`, `null`): the server names no value when a
/// domain's CHECK refuses one, so pg-load shows what it sent.
pub fn field_display(kind: &Kind, binary: bool, field: &[u8]) -> String {
    let snippet = |s: String| match kind {
        Kind::Int2 | Kind::Int4 | Kind::Int8 | Kind::Float4 | Kind::Float8 | Kind::Numeric | Kind::Bool => s,
        _ => value_snippet(&Value::String(s)),
    };
    if !binary {
        if field == b"\\N" {
            return "null".into();
        }
        let mut out = Vec::with_capacity(field.len());
        let mut it = field.iter();
        while let Some(&c) = it.next() {
            out.push(match (c, it.clone().next()) {
                (b'\\', Some(&e)) => {
                    it.next();
                    match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    }
                }
                _ => c,
            });
        }
        return match kind {
            Kind::Bool => (if out == b"t" { "true" } else { "false" }).into(),
            _ => snippet(String::from_utf8_lossy(&out).into_owned()),
        };
    }
    let Some((len, b)) = field.split_first_chunk::<4>() else { return "(unknown)".into() };
    if i32::from_be_bytes(*len) < 0 {
        return "null".into();
    }
    let cell = match kind {
        Kind::Bool => return (if b == [1] { "true" } else { "false" }).into(),
        Kind::Array { .. } => return "(an array)".into(),
        _ => match decode_binary(kind, b) {
            Ok(cell) => cell,
            Err(_) => return "(unknown)".into(),
        },
    };
    let mut out = Vec::new();
    encode_text_plain(&cell, &mut out);
    snippet(String::from_utf8_lossy(&out).into_owned())
}

fn bad(what: &str) -> Error {
    Error::Io(format!("cannot decode a {what} value from COPY output"))
}

fn be<const N: usize>(b: &[u8], what: &str) -> Result<[u8; N]> {
    b.get(..N).and_then(|s| s.try_into().ok()).ok_or_else(|| bad(what))
}

/// One field's binary COPY form (its bytes, without the length word) as a `Cell`: the inverse
/// of [`encode_binary`]. count-check reads PostgreSQL's COPY output with it; pg-load shows
/// what it sent ([`field_display`]).
pub fn decode_binary(k: &Kind, b: &[u8]) -> Result<Cell> {
    Ok(match k {
        Kind::Bool => Cell::Bool(b.first().copied().ok_or_else(|| bad("boolean"))? != 0),
        Kind::Int2 => Cell::Int2(i16::from_be_bytes(be(b, "smallint")?)),
        Kind::Int4 => Cell::Int4(i32::from_be_bytes(be(b, "integer")?)),
        Kind::Int8 => Cell::Int8(i64::from_be_bytes(be(b, "bigint")?)),
        Kind::Float4 => Cell::Float4(f32::from_bits(u32::from_be_bytes(be(b, "real")?))),
        Kind::Float8 => Cell::Float8(f64::from_bits(u64::from_be_bytes(be(b, "double")?))),
        Kind::Numeric => Cell::Numeric(numeric_text(b).ok_or_else(|| bad("numeric"))?),
        // json arrives as its text.
        Kind::Json => Cell::Json(utf8(b)?),
        Kind::Text | Kind::Enum | Kind::Other(_) => Cell::Text(utf8(b)?),
        Kind::Jsonb => {
            let s = utf8(b.get(1..).ok_or_else(|| bad("jsonb"))?)?;
            return Ok(Cell::Jsonb(s));
        }
        Kind::Bytea => Cell::Bytes(b.to_vec()),
        Kind::Uuid => Cell::Uuid(be(b, "uuid")?),
        Kind::Date => {
            let d = i32::from_be_bytes(be(b, "date")?);
            Cell::Date(match d {
                i32::MAX | i32::MIN => d,
                d => (d as i64 + PG_EPOCH_DAYS) as i32,
            })
        }
        Kind::Time => Cell::Time(i64::from_be_bytes(be(b, "time")?)),
        Kind::Timestamp | Kind::Timestamptz => {
            let t = i64::from_be_bytes(be(b, "timestamp")?);
            let t = match t {
                i64::MAX | i64::MIN => t,
                t => t + PG_EPOCH_MICROS,
            };
            if *k == Kind::Timestamp {
                Cell::Timestamp(t)
            } else {
                Cell::Timestamptz(t)
            }
        }
        Kind::Array { elem, elem_oid } => {
            let ndim = i32::from_be_bytes(be(b, "array")?);
            let mut at = 12;
            let mut count: i64 = if ndim == 0 { 0 } else { 1 };
            for _ in 0..ndim {
                let len = i32::from_be_bytes(be(b.get(at..).ok_or_else(|| bad("array"))?, "array")?);
                count *= len as i64;
                at += 8;
            }
            let mut items = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let len = i32::from_be_bytes(be(b.get(at..).ok_or_else(|| bad("array"))?, "array")?);
                at += 4;
                if len < 0 {
                    items.push(Cell::Null);
                    continue;
                }
                let body = b.get(at..at + len as usize).ok_or_else(|| bad("array"))?;
                items.push(decode_binary(elem, body)?);
                at += len as usize;
            }
            Cell::Array(items, *elem_oid)
        }
    })
}

fn utf8(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec())
        .map_err(|_| Error::Io("COPY output holds text that is not UTF-8 (is the database encoding UTF8?)".into()))
}

/// numeric's binary form as decimal text: ndigits, weight, sign, dscale, base-10000 digits.
fn numeric_text(b: &[u8]) -> Option<String> {
    let w = |i: usize| -> Option<u16> { Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?)) };
    let ndigits = w(0)? as usize;
    let weight = w(2)? as i16 as i64;
    let sign = w(4)?;
    let dscale = w(6)? as i64;
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => {}
    }
    let mut digits = String::with_capacity(ndigits * 4);
    for i in 0..ndigits {
        digits.push_str(&format!("{:04}", w(8 + 2 * i)?));
    }
    // Value = 0.digits × 10000^(weight + 1); place the point after 4 × (weight + 1) digits.
    let point = 4 * (weight + 1);
    let (mut int, mut frac) = if point <= 0 {
        (String::new(), format!("{}{}", "0".repeat((-point) as usize), digits))
    } else if point as usize >= digits.len() {
        (format!("{}{}", digits, "0".repeat(point as usize - digits.len())), String::new())
    } else {
        (digits[..point as usize].to_string(), digits[point as usize..].to_string())
    };
    let int_trim = int.trim_start_matches('0').to_string();
    int = if int_trim.is_empty() { "0".into() } else { int_trim };
    if (frac.len() as i64) > dscale {
        frac.truncate(dscale as usize);
    }
    while (frac.len() as i64) < dscale {
        frac.push('0');
    }
    let neg = sign == 0x4000 && (int != "0" || frac.bytes().any(|c| c != b'0'));
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    s.push_str(&int);
    if !frac.is_empty() {
        s.push('.');
        s.push_str(&frac);
    }
    Some(s)
}

/// "line 12, column 'received_at': cannot read "yesterday-ish" as …" (pg-load adds the rest).
pub fn conversion_error(line: u64, column: &str, value: &Value, cause: &str) -> Error {
    Error::Data(format!("line {line}, column '{column}': value {}: {cause}", value_snippet(value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(v: Value, k: Kind) -> std::result::Result<Cell, String> {
        convert(&v, &k, &Options { epoch: Some(EpochUnit::Seconds), ..Default::default() })
    }

    #[test]
    fn per_column_options_empty_strings_and_date_formats() {
        let mut args = pico_args::Arguments::from_vec(
            [
                "--empty-as-null",
                "shipstation_order_id,qty",
                "--date-format",
                "%m/%d/%Y",
                "--date-format",
                "seen_at=%m/%d/%Y %I:%M %p",
                "--rename",
                "passwordHash=password_hash,userId=user_id",
            ]
            .iter()
            .map(Into::into)
            .collect(),
        );
        let o = Options::from_args(&mut args, Options::default()).unwrap();
        assert!(o.has_column_rules());
        assert_eq!(o.renamed("passwordHash"), "password_hash");
        assert_eq!(o.renamed("email"), "email");
        let ship = o.for_column("shipstation_order_id");
        assert_eq!(convert(&json!(""), &Kind::Int8, &ship), Ok(Cell::Null));
        assert_eq!(convert_raw("\"\"", &Kind::Text, &ship), Some(Cell::Null));
        assert_eq!(convert(&json!(7), &Kind::Int8, &ship), Ok(Cell::Int8(7)));
        // Elsewhere '' is still refused in an integer column, and kept in a text one.
        let other = o.for_column("status");
        assert!(convert(&json!(""), &Kind::Int8, &other).is_err());
        assert_eq!(convert(&json!(""), &Kind::Text, &other), Ok(Cell::Text(String::new())));
        // A US date; ISO text still reads; the column's own format wins over the table's.
        let day = timefmt::days_from_civil(2025, 1, 16) as i32;
        assert_eq!(convert(&json!("01/16/2025"), &Kind::Date, &other), Ok(Cell::Date(day)));
        assert_eq!(convert(&json!("1/6/2025"), &Kind::Date, &other), Ok(Cell::Date(day - 10)));
        assert_eq!(convert(&json!("2025-01-16"), &Kind::Date, &other), Ok(Cell::Date(day)));
        assert_eq!(convert_raw("\"01/16/2025\"", &Kind::Date, &other), None);
        let seen = o.for_column("seen_at");
        let at = day as i64 * MICROS_PER_DAY + (13 * 60 + 5) * 60_000_000;
        assert_eq!(convert(&json!("01/16/2025 01:05 PM"), &Kind::Timestamptz, &seen), Ok(Cell::Timestamptz(at)));
        let e = convert(&json!("16.01.2025"), &Kind::Date, &other).unwrap_err();
        assert!(e.contains("not ISO 8601") && e.contains("'%m/%d/%Y'"), "{e}");
        assert!(convert(&json!("02/30/2025"), &Kind::Date, &other).unwrap_err().contains("not a valid date"));
        for bad in [["--date-format", "%d.%m"], ["--date-format", "%Y-%q"], ["--rename", "nope"]] {
            let mut args = pico_args::Arguments::from_vec(bad.iter().map(Into::into).collect());
            assert_eq!(Options::from_args(&mut args, Options::default()).unwrap_err().exit_code(), 64, "{bad:?}");
        }
    }

    #[test]
    fn integers_are_exact_and_range_checked() {
        assert_eq!(conv(json!(9007199254740993i64), Kind::Int8), Ok(Cell::Int8(9007199254740993)));
        assert_eq!(conv(json!("42"), Kind::Int4), Ok(Cell::Int4(42)));
        assert_eq!(conv(serde_json::from_str("3.0").unwrap(), Kind::Int8), Ok(Cell::Int8(3)));
        assert!(conv(json!(3.5), Kind::Int8).unwrap_err().contains("fractional"));
        assert!(conv(json!(70000), Kind::Int2).unwrap_err().contains("out of range"));
        assert!(conv(json!("12abc"), Kind::Int8).is_err());
        assert!(conv(json!(true), Kind::Int8).is_err());
    }

    #[test]
    fn booleans_from_what_sources_hold() {
        for (v, b) in
            [(json!(1), true), (json!(0), false), (json!("t"), true), (json!("FALSE"), false), (json!("yes"), true)]
        {
            assert_eq!(conv(v, Kind::Bool), Ok(Cell::Bool(b)));
        }
        assert!(conv(json!(2), Kind::Bool).is_err());
        assert!(conv(json!("maybe"), Kind::Bool).is_err());
    }

    #[test]
    fn timestamps_from_text_and_epochs() {
        let base = 1_704_448_800_000_000i64;
        assert_eq!(conv(json!("2024-01-05T10:00:00Z"), Kind::Timestamptz), Ok(Cell::Timestamptz(base)));
        assert_eq!(conv(json!("2024-01-05 12:00:00+02:00"), Kind::Timestamptz), Ok(Cell::Timestamptz(base)));
        assert_eq!(conv(json!(1704448800), Kind::Timestamptz), Ok(Cell::Timestamptz(base)));
        let ms = Options { epoch: Some(EpochUnit::Millis), ..Default::default() };
        assert_eq!(convert(&json!(1704448800123i64), &Kind::Timestamptz, &ms), Ok(Cell::Timestamptz(base + 123_000)));
        assert_eq!(
            conv(serde_json::from_str("1704448800.5").unwrap(), Kind::Timestamptz),
            Ok(Cell::Timestamptz(base + 500_000))
        );
        assert!(convert(&json!(1704448800), &Kind::Timestamptz, &Options::default())
            .unwrap_err()
            .contains("--epoch-unit"));
        let athens = Options { assume_tz: timefmt::Zone::Fixed(7200), ..Default::default() };
        assert_eq!(convert(&json!("2024-01-05 12:00:00"), &Kind::Timestamptz, &athens), Ok(Cell::Timestamptz(base)));
        // timestamp without time zone keeps zoneless text as written
        assert_eq!(convert(&json!("2024-01-05 10:00:00"), &Kind::Timestamp, &athens), Ok(Cell::Timestamp(base)));
        assert!(conv(json!("yesterday-ish"), Kind::Timestamptz).unwrap_err().contains("as a timestamp"));
        assert_eq!(conv(json!("2024-01-05"), Kind::Date), Ok(Cell::Date(19727)));
        assert!(conv(json!("2024-01-05T10:00:00Z"), Kind::Date).is_err());
        assert_eq!(conv(json!("infinity"), Kind::Timestamptz), Ok(Cell::Timestamptz(i64::MAX)));
    }

    #[test]
    fn json_text_and_structures() {
        assert_eq!(conv(json!({"a": [1, 2]}), Kind::Jsonb), Ok(Cell::Jsonb("{\"a\":[1,2]}".into())));
        assert_eq!(conv(json!("[1, 2]"), Kind::Jsonb), Ok(Cell::Jsonb("[1,2]".into())));
        assert!(conv(json!("not json"), Kind::Jsonb).is_err());
        assert!(conv(json!({"a": "x\u{0}y"}), Kind::Jsonb).unwrap_err().contains("--strip-nul"));
        let strip = Options { strip_nul: true, ..Default::default() };
        assert_eq!(convert(&json!({"a": "x\u{0}y"}), &Kind::Jsonb, &strip), Ok(Cell::Jsonb("{\"a\":\"xy\"}".into())));
    }

    #[test]
    fn text_refuses_nul_and_bytes() {
        assert!(conv(json!("a\u{0}b"), Kind::Text).unwrap_err().contains("NUL"));
        assert!(conv(json!({"$base64": true, "encoded": "AA=="}), Kind::Text).is_err());
        assert_eq!(conv(json!(12), Kind::Text), Ok(Cell::Text("12".into())));
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_one() {
        let opts = Options { assume_tz: timefmt::Zone::parse("Europe/Paris").unwrap(), ..Default::default() };
        let cases = [
            ("\"plain\"", Kind::Text),
            ("\"2024-01-05 10:00:00\"", Kind::Timestamptz),
            ("\"2024-01-05T10:00:00.5+02:00\"", Kind::Timestamp),
            ("-9223372036854775808", Kind::Int8),
            ("32767", Kind::Int2),
            ("0.1", Kind::Float8),
            ("-0.0", Kind::Float8),
            ("true", Kind::Bool),
            ("null", Kind::Jsonb),
        ];
        for (raw, kind) in cases {
            let v: Value = serde_json::from_str(raw).unwrap();
            assert_eq!(convert_raw(raw, &kind, &opts), Some(convert(&v, &kind, &opts).unwrap()), "{raw}");
        }
        // Text takes the value's JSON text as written (serde_json writes 1e+5, sorts keys).
        for (raw, want) in
            [("\"esc\\n\"", "esc\n"), ("1E5", "1E5"), ("-0", "-0"), ("{\"b\":1, \"a\":2}", "{\"b\":1, \"a\":2}")]
        {
            assert_eq!(convert_raw(raw, &Kind::Text, &opts), Some(Cell::Text(want.into())), "{raw}");
        }
        // What the fast path leaves to the general one.
        for (raw, kind) in [
            ("\"nul\\u0000\"", Kind::Text),
            ("{\"$float\":\"NaN\"}", Kind::Text),
            ("70000", Kind::Int2),
            ("\"yesterday\"", Kind::Timestamptz),
            ("1", Kind::Bool),
        ] {
            assert_eq!(convert_raw(raw, &kind, &opts), None, "{raw}");
        }
    }

    fn col(kind: Kind, scale: Option<i32>) -> ColumnInfo {
        ColumnInfo {
            name: "c".into(),
            type_name: "t".into(),
            kind,
            not_null: false,
            has_default: false,
            generated: false,
            sequence: None,
            scale,
            numeric_precision: None,
            length: None,
            blank_padded: false,
            max_bytes: None,
            domain: false,
            interval_fields: None,
            precision: None,
        }
    }

    #[test]
    fn silent_changes_by_kind() {
        let o = Options::default();
        let num = col(Kind::Numeric, Some(2));
        let hstore = col(Kind::Other("extensions.hstore".into()), None);
        let table: &[(&str, &ColumnInfo, Option<Change>)] = &[
            ("1.234", &num, Some(Change::Scale)),
            ("\"1.230\"", &num, None),
            ("12", &num, None),
            ("1.2e-3", &num, Some(Change::Scale)),
            ("\"2024-01-05T10:00:00.1234567Z\"", &col(Kind::Timestamptz, None), Some(Change::Microseconds)),
            ("\"2024-01-05T10:00:00.1234560Z\"", &col(Kind::Timestamptz, None), None),
            ("3.14159265", &col(Kind::Float4, None), Some(Change::Real)),
            ("0.1", &col(Kind::Float4, None), None),
            ("-0.0", &col(Kind::Float4, None), None),
            ("0.1", &col(Kind::Float8, None), None),
            ("3.141592653589793238", &col(Kind::Float8, None), Some(Change::Double)),
            ("\"NaN\"", &col(Kind::Float8, None), None),
            (r#"{"a":1,"b":{"a":2}}"#, &col(Kind::Jsonb, None), None),
            (r#"[{"a":1,"a":2}]"#, &col(Kind::Jsonb, None), Some(Change::DuplicateKeys)),
            (r#""{\"k\":1,\"k\":1}""#, &col(Kind::Jsonb, None), Some(Change::DuplicateKeys)),
            // json keeps the text as written, repeated keys and all.
            (r#""{\"k\":1,\"k\":1}""#, &col(Kind::Json, None), None),
            (r#"{"k":1,"k":1}"#, &col(Kind::Json, None), None),
            // hstore text, read as the server reads it: quoted or bare, escapes taken.
            (r#""a=>1, b=>2""#, &hstore, None),
            (r#""a=>1,a=>NULL""#, &hstore, Some(Change::DuplicateKeys)),
            (r#""\"a\"=>1, a => 2""#, &hstore, Some(Change::DuplicateKeys)),
            (r#""\"a\\\"b\"=>1, \"a\\\"c\"=>2""#, &hstore, None),
            (r#""a\\ b=>1, \"a b\"=>2""#, &hstore, Some(Change::DuplicateKeys)),
            (r#""a=>1,, a=>2""#, &hstore, None),
            // Bare keys end at '=' only, bare values at ',' only, as in PostgreSQL's reader.
            (r#""a,b=>1, b=>x=y, b=>z""#, &hstore, Some(Change::DuplicateKeys)),
            (r#""a>b=>1, a=>2""#, &hstore, None),
            (r#"{"a":"1","a":"2"}"#, &hstore, Some(Change::DuplicateKeys)),
            (r#"{"a":"1","b":"2"}"#, &hstore, None),
        ];
        for (raw, c, want) in table {
            assert_eq!(silent_change(raw, &Cell::Null, c, &o), *want, "{raw}");
        }
        let ms = Options { epoch: Some(EpochUnit::Millis), ..Options::default() };
        let at = col(Kind::Timestamptz, None);
        assert_eq!(silent_change("1704448800123.0004", &Cell::Null, &at, &ms), Some(Change::Microseconds));
        assert_eq!(silent_change("1704448800123.001", &Cell::Null, &at, &ms), None);
    }

    #[test]
    fn underflow_is_refused_as_postgresql_does() {
        assert!(conv(json!(1e-50), Kind::Float4).is_err());
        assert!(conv(json!("1e-400"), Kind::Float8).is_err());
        assert_eq!(conv(json!(0.0), Kind::Float4), Ok(Cell::Float4(0.0)));
        assert_eq!(conv(json!("0e5"), Kind::Float8), Ok(Cell::Float8(0.0)));
        assert!(conv(json!("0000-01-01"), Kind::Date).is_err());
    }

    #[test]
    fn decimals() {
        for (s, want) in
            [("12.50", "12.50"), ("-0.0012", "-0.0012"), ("1.5e3", "1500"), ("1e-2", "0.01"), ("007", "7"), ("-0", "0")]
        {
            assert_eq!(parse_decimal(s).unwrap().to_string(), want, "{s}");
        }
        assert!(parse_decimal("1.2.3").is_none());
        assert!(parse_decimal("abc").is_none());
    }

    fn numeric_bytes(s: &str) -> Vec<i16> {
        let mut out = vec![];
        encode_numeric(s, &mut out);
        out.chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn numeric_binary_form() {
        // ndigits, weight, sign, dscale, digits...
        assert_eq!(numeric_bytes("12.50"), vec![2, 0, 0, 2, 12, 5000]);
        assert_eq!(numeric_bytes("10000"), vec![1, 1, 0, 0, 1]);
        assert_eq!(numeric_bytes("0.0001"), vec![1, -1, 0, 4, 1]);
        assert_eq!(numeric_bytes("-123456.789"), vec![3, 1, 0x4000, 3, 12, 3456, 7890]);
        assert_eq!(numeric_bytes("0"), vec![0, 0, 0, 0]);
        assert_eq!(numeric_bytes("0.00"), vec![0, 0, 0, 2]);
    }

    fn numeric_enc(s: &str) -> Vec<u8> {
        let mut out = vec![];
        encode_binary(&Cell::Numeric(s.into()), &mut out);
        out[4..].to_vec()
    }

    #[test]
    fn numerics_round_trip_through_the_binary_form() {
        for s in [
            "12.50",
            "10000",
            "0.0001",
            "-123456.789",
            "0",
            "0.00",
            "123456789012345678901234567890.123456789",
            "NaN",
            "-Infinity",
            "7",
        ] {
            assert_eq!(numeric_text(&numeric_enc(s)).as_deref(), Some(s), "{s}");
        }
    }

    #[test]
    fn fields_shown_as_values() {
        let shown = |cell: Cell, kind: Kind| {
            let (mut bin, mut text) = (vec![], vec![]);
            encode_binary(&cell, &mut bin);
            encode_text(&cell, &mut text);
            let b = field_display(&kind, true, &bin);
            assert_eq!(b, field_display(&kind, false, &text), "{cell:?}");
            b
        };
        assert_eq!(shown(Cell::Int4(-3), Kind::Int4), "-3");
        assert_eq!(shown(Cell::Text("a\tb".into()), Kind::Text), "\"a\\tb\"");
        assert_eq!(shown(Cell::Null, Kind::Int8), "null");
        assert_eq!(shown(Cell::Bool(true), Kind::Bool), "true");
        for n in ["-123456.789", "0.0001", "12.50", "10000", "0", "0.00", "NaN"] {
            assert_eq!(shown(Cell::Numeric(n.into()), Kind::Numeric), n);
        }
        assert_eq!(shown(Cell::Date(19727), Kind::Date), "\"2024-01-05\"");
    }

    #[test]
    fn text_form() {
        let mut out = vec![];
        encode_text(
            &Cell::Array(vec![Cell::Text("a\"b".into()), Cell::Null, Cell::Text("c\\d\ne".into())], 25),
            &mut out,
        );
        assert_eq!(String::from_utf8(out).unwrap(), "{\"a\\\\\"b\",NULL,\"c\\\\\\\\d\\ne\"}");
        let mut out = vec![];
        encode_text(&Cell::Timestamptz(-1), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "1969-12-31 23:59:59.999999+00");
    }
}
