//! Normalized values: what both sides of a check are turned into before they are compared
//! (docs/count-check.md, "How values are compared").
//!
//! With a PostgreSQL side, every value is converted for the PostgreSQL column's type: the
//! other side's stream values through `convert::convert` (pg-load's own rules), PostgreSQL's
//! through its binary COPY output. Without one, stream values are compared as they are, with
//! the generic rules of `raw_eq`.

use pgferry::catalog::ColumnInfo;
use pgferry::convert::{self, Cell, Kind, Options};
use pgferry::stream::{as_bytes_form, as_float_form, float_value};
use pgferry::timefmt::{self, MICROS_PER_DAY};
use serde_json::Value;
use std::cmp::Ordering;

/// Relative tolerance for double precision: about 4 units in the last place.
pub const F64_TOLERANCE: f64 = 1e-15;
/// Relative tolerance for real (float4): about 8 units in the last place.
pub const F32_TOLERANCE: f32 = 1e-6;

/// A column type as the comparison needs it: the kind and what its type modifier changes.
#[derive(Debug, Clone)]
pub struct ColType {
    pub kind: Kind,
    /// `numeric(p,s)`: values are rounded to `s` digits, as PostgreSQL stores them.
    pub numeric_scale: Option<i64>,
    /// `timestamptz(p)`, `time(p)`: values are rounded to `p` fraction digits.
    pub time_precision: Option<u32>,
    /// `char(n)`: trailing blanks are not significant.
    pub bpchar: bool,
    /// For messages: `numeric(12,2)`.
    pub type_name: String,
    /// pg-load's options for this column, when some option names columns
    /// (`--empty-as-null`, `--date-format COL=FMT`); else the check's own.
    pub conv: Option<Options>,
}

impl ColType {
    pub fn of(c: &ColumnInfo) -> ColType {
        let t = c.type_name.as_str();
        let modifier = |prefix: &str| -> Option<Vec<i64>> {
            let rest = t.strip_prefix(prefix)?.strip_prefix('(')?;
            let inner = &rest[..rest.find(')')?];
            inner.split(',').map(|s| s.trim().parse().ok()).collect()
        };
        let numeric_scale = modifier("numeric").map(|m| m.get(1).copied().unwrap_or(0));
        let time_precision = ["timestamp", "time"]
            .iter()
            .find_map(|p| modifier(p))
            .and_then(|m| m.first().copied())
            .filter(|p| (0..6).contains(p))
            .map(|p| p as u32);
        ColType {
            kind: c.kind.clone(),
            numeric_scale,
            time_precision,
            bpchar: t.starts_with("character(") || t == "character" || t == "bpchar",
            type_name: c.type_name.clone(),
            conv: None,
        }
    }

    fn elem(&self) -> ColType {
        match &self.kind {
            Kind::Array { elem, .. } => ColType { kind: (**elem).clone(), ..self.clone() },
            _ => self.clone(),
        }
    }
}

/// A value ready for comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Norm {
    Null,
    Bool(bool),
    /// Every integer kind.
    Int(i64),
    Float(f64),
    Float4(f32),
    /// Decimal text without trailing fraction zeros (`12.5`, `-3`), or NaN/±Infinity.
    Numeric(String),
    Text(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since the Unix epoch (timestamptz in UTC; timestamp as written).
    Timestamp(i64),
    Json(Value),
    Uuid([u8; 16]),
    Array(Vec<Norm>),
    /// A stream value compared without a column type (neither side is PostgreSQL).
    Raw(Value),
    /// A value that does not fit the column type: the value and why.
    Bad(Value, String),
}

/// Converts a stream value for a column (pg-load's rules); a value that does not fit is `Bad`.
pub fn from_value(v: Value, ct: Option<&ColType>, opts: &Options) -> Norm {
    let Some(ct) = ct else {
        return if v.is_null() { Norm::Null } else { Norm::Raw(v) };
    };
    match convert::convert(&v, &ct.kind, ct.conv.as_ref().unwrap_or(opts)) {
        Ok(c) => from_cell(c, ct),
        Err(e) => Norm::Bad(v, format!("{e} (column type {})", ct.type_name)),
    }
}

/// A converted cell in comparable form, with the column's type modifier applied.
pub fn from_cell(c: Cell, ct: &ColType) -> Norm {
    match c {
        Cell::Null => Norm::Null,
        Cell::Bool(b) => Norm::Bool(b),
        Cell::Int2(v) => Norm::Int(v as i64),
        Cell::Int4(v) => Norm::Int(v as i64),
        Cell::Int8(v) => Norm::Int(v),
        Cell::Float4(v) => Norm::Float4(v),
        Cell::Float8(v) => Norm::Float(v),
        Cell::Numeric(s) => Norm::Numeric(numeric_canonical(&s, ct.numeric_scale)),
        Cell::Text(s) if ct.bpchar => Norm::Text(json_text_canonical(s.trim_end_matches(' ').to_string())),
        // hstore: in the form PostgreSQL writes it back (one pair a key, in its order, quoted).
        Cell::Text(s) if matches!(&ct.kind, Kind::Other(n) if convert::is_hstore(n)) => {
            Norm::Text(convert::hstore_canonical(&s).unwrap_or(s))
        }
        Cell::Text(s) => Norm::Text(json_text_canonical(s)),
        Cell::Bytes(b) => Norm::Bytes(b),
        Cell::Date(d) => Norm::Date(d),
        Cell::Time(t) => Norm::Time(round_micros(t, ct.time_precision)),
        Cell::Timestamp(t) | Cell::Timestamptz(t) => Norm::Timestamp(round_micros(t, ct.time_precision)),
        Cell::Json(s) | Cell::Jsonb(s) => match serde_json::from_str(&s) {
            Ok(v) => Norm::Json(v),
            Err(e) => Norm::Bad(Value::String(s), format!("not valid JSON: {e}")),
        },
        Cell::Uuid(u) => Norm::Uuid(u),
        Cell::Array(items, _) => {
            let ect = ct.elem();
            Norm::Array(items.into_iter().map(|c| from_cell(c, &ect)).collect())
        }
    }
}

/// Text that is a JSON number, object or array, as serde_json writes it: pg-load stores such a
/// value's text as the stream wrote it (`1e5`, `{"b":1,"a":2}`), which a stream read into
/// `Value`s no longer has (`1e+5`, keys sorted), so both sides compare in this one form.
/// (Numbers are written as they were read but for an exponent: only those and structures are
/// looked at.)
pub fn json_text_canonical(s: String) -> String {
    let number = s.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) && s.contains(['e', 'E']);
    if !(number || s.starts_with(['{', '['])) {
        return s;
    }
    match serde_json::from_str::<Value>(&s) {
        Ok(v) if !v.is_string() => v.to_string(),
        _ => s,
    }
}

/// PostgreSQL's rounding of timestamps to a declared precision (half away from zero).
fn round_micros(t: i64, precision: Option<u32>) -> i64 {
    let Some(p) = precision else { return t };
    if t == i64::MAX || t == i64::MIN {
        return t;
    }
    let scale = 10i64.pow(6 - p);
    let half = scale / 2;
    if t >= 0 {
        (t + half) / scale * scale
    } else {
        -((-t + half) / scale * scale)
    }
}

/// A decimal's text rounded to `scale` fraction digits (half away from zero, as numeric
/// does), then without trailing fraction zeros, so that `1.50` and `1.5` compare equal.
pub fn numeric_canonical(s: &str, scale: Option<i64>) -> String {
    if matches!(s, "NaN" | "Infinity" | "-Infinity") {
        return s.to_string();
    }
    let Some(mut d) = convert::parse_decimal(s) else { return s.to_string() };
    if let Some(sc) = scale {
        if d.scale > sc {
            let drop = (d.scale - sc) as usize;
            let mut digits: Vec<u8> = d.digits.bytes().collect();
            // The first dropped digit decides (a value shorter than the cut rounds to zero).
            let round_up = digits.len() >= drop && digits.get(digits.len() - drop).is_some_and(|c| *c >= b'5');
            digits.truncate(digits.len().saturating_sub(drop));
            if round_up {
                let mut i = digits.len();
                loop {
                    if i == 0 {
                        digits.insert(0, b'1');
                        break;
                    }
                    i -= 1;
                    if digits[i] == b'9' {
                        digits[i] = b'0';
                    } else {
                        digits[i] += 1;
                        break;
                    }
                }
            }
            let text = String::from_utf8(digits).expect("ascii digits");
            let text = text.trim_start_matches('0').to_string();
            d = convert::Decimal { negative: d.negative && !text.is_empty(), digits: text, scale: sc };
        }
    }
    // Drop trailing zeros of the fraction.
    while d.scale > 0 && d.digits.ends_with('0') {
        d.digits.pop();
        d.scale -= 1;
    }
    if d.digits.is_empty() {
        d.scale = 0;
        d.negative = false;
    }
    if d.scale < 0 {
        // Keep integers in plain notation.
        let zeros = "0".repeat((-d.scale) as usize);
        d.digits.push_str(&zeros);
        d.scale = 0;
    }
    d.to_string()
}

// ---------------------------------------------------------------- equality

/// Whether two normalized values are equal under the documented rules.
pub fn norm_eq(a: &Norm, b: &Norm) -> bool {
    match (a, b) {
        (Norm::Float(x), Norm::Float(y)) => f64_eq(*x, *y),
        (Norm::Float4(x), Norm::Float4(y)) => {
            x.to_bits() == y.to_bits()
                || (x.is_nan() && y.is_nan())
                || (x.is_finite() && y.is_finite() && (x - y).abs() <= F32_TOLERANCE * x.abs().max(y.abs()))
        }
        (Norm::Json(x), Norm::Json(y)) => json_eq(x, y),
        (Norm::Raw(x), Norm::Raw(y)) => raw_eq(x, y),
        (Norm::Array(x), Norm::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| norm_eq(p, q)),
        (Norm::Bad(..), _) | (_, Norm::Bad(..)) => false,
        _ => a == b,
    }
}

pub fn f64_eq(x: f64, y: f64) -> bool {
    x == y
        || (x.is_nan() && y.is_nan())
        || (x.is_finite() && y.is_finite() && (x - y).abs() <= F64_TOLERANCE * x.abs().max(y.abs()))
}

/// JSON structural equality: object key order ignored, numbers compared by value.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn number_eq(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    if let (Some(p), Some(q)) = (x.as_i64(), y.as_i64()) {
        return p == q;
    }
    let (xs, ys) = (x.to_string(), y.to_string());
    if numeric_canonical(&xs, None) == numeric_canonical(&ys, None) {
        return true;
    }
    // A float on either side: equal within double precision.
    let is_float = |s: &str| s.contains(['.', 'e', 'E']);
    if is_float(&xs) || is_float(&ys) {
        if let (Ok(p), Ok(q)) = (xs.parse::<f64>(), ys.parse::<f64>()) {
            return f64_eq(p, q);
        }
    }
    false
}

/// Stream values compared without a column type (neither side is PostgreSQL): numbers by
/// value, timestamps with an offset by instant, bytes by content, a boolean and 0/1 equal,
/// maps structurally.
pub fn raw_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        (Value::String(x), Value::String(y)) => x == y || same_instant(x, y),
        (Value::Bool(t), Value::Number(n)) | (Value::Number(n), Value::Bool(t)) => n.as_i64() == Some(*t as i64),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| raw_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            if let (Some(p), Some(q)) = (as_bytes_form(a), as_bytes_form(b)) {
                return p.ok() == q.ok();
            }
            if let (Some(Ok(p)), Some(Ok(q))) = (as_float_form(a), as_float_form(b)) {
                return f64_eq(p, q);
            }
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| raw_eq(v, w)))
        }
        _ => a == b,
    }
}

fn same_instant(x: &str, y: &str) -> bool {
    match (timefmt::parse_timestamp(x), timefmt::parse_timestamp(y)) {
        (Some(p), Some(q)) if !p.date_only && !q.date_only && p.offset.is_some() == q.offset.is_some() => {
            p.utc_micros(0) == q.utc_micros(0)
        }
        _ => false,
    }
}

// ---------------------------------------------------------------- order

/// The canonical key order both sides are read in: integers, numbers, times by value; text
/// and bytes by their bytes (PostgreSQL's `COLLATE "C"`, SQLite's `BINARY`); uuids by bytes.
#[cfg(test)]
pub fn cmp_key(a: &[Norm], b: &[Norm]) -> Ordering {
    cmp_key_iter(a.iter(), b.iter())
}

/// `cmp_key` over the parts of two keys, wherever they are stored.
pub fn cmp_key_iter<'a, 'b>(
    a: impl ExactSizeIterator<Item = &'a Norm>,
    b: impl ExactSizeIterator<Item = &'b Norm>,
) -> Ordering {
    let (la, lb) = (a.len(), b.len());
    for (x, y) in a.zip(b) {
        let o = cmp_norm(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    la.cmp(&lb)
}

/// The order of value kinds in comparisons (and in spool.rs's sort keys, which must agree).
pub fn rank(n: &Norm) -> u8 {
    match n {
        Norm::Null => 0,
        Norm::Bool(_) => 1,
        Norm::Int(_) | Norm::Float(_) | Norm::Float4(_) | Norm::Numeric(_) => 2,
        Norm::Date(_) | Norm::Time(_) | Norm::Timestamp(_) => 3,
        Norm::Text(_) | Norm::Uuid(_) => 4,
        Norm::Bytes(_) => 5,
        Norm::Raw(_) => 6,
        Norm::Json(_) | Norm::Array(_) => 7,
        Norm::Bad(..) => 8,
    }
}

pub fn cmp_norm(a: &Norm, b: &Norm) -> Ordering {
    match (a, b) {
        (Norm::Int(x), Norm::Int(y)) => x.cmp(y),
        (Norm::Text(x), Norm::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Norm::Uuid(x), Norm::Uuid(y)) => x.cmp(y),
        (Norm::Timestamp(x), Norm::Timestamp(y)) | (Norm::Time(x), Norm::Time(y)) => x.cmp(y),
        (Norm::Date(x), Norm::Date(y)) => x.cmp(y),
        (Norm::Bool(x), Norm::Bool(y)) => x.cmp(y),
        (Norm::Bytes(x), Norm::Bytes(y)) => x.cmp(y),
        (Norm::Float(x), Norm::Float(y)) => x.total_cmp(y),
        (Norm::Float4(x), Norm::Float4(y)) => x.total_cmp(y),
        (Norm::Numeric(x), Norm::Numeric(y)) => cmp_decimal_text(x, y),
        (Norm::Raw(x), Norm::Raw(y)) => cmp_raw(x, y),
        _ if rank(a) != rank(b) => rank(a).cmp(&rank(b)),
        _ => norm_json(a).to_string().cmp(&norm_json(b).to_string()),
    }
}

/// SQLite's order for its own values: numbers, then text by bytes, then blobs.
fn cmp_raw(a: &Value, b: &Value) -> Ordering {
    let r = |v: &Value| match v {
        Value::Null => 0,
        Value::Bool(_) | Value::Number(_) => 1,
        Value::String(_) => 2,
        _ => 3,
    };
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(p), Some(q)) => p.cmp(&q),
            _ => cmp_decimal_text(&x.to_string(), &y.to_string()),
        },
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        _ if r(a) != r(b) => r(a).cmp(&r(b)),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

fn cmp_decimal_text(x: &str, y: &str) -> Ordering {
    match (x.parse::<f64>(), y.parse::<f64>()) {
        (Ok(p), Ok(q)) if p != q => p.total_cmp(&q),
        _ => {
            // Same double: compare exactly by sign, integer length, then digits.
            let (px, py) = (convert::parse_decimal(x), convert::parse_decimal(y));
            match (px, py) {
                (Some(p), Some(q)) => {
                    let sign = |d: &convert::Decimal| {
                        if d.digits.is_empty() {
                            0
                        } else if d.negative {
                            -1
                        } else {
                            1
                        }
                    };
                    let (sp, sq) = (sign(&p), sign(&q));
                    if sp != sq {
                        return sp.cmp(&sq);
                    }
                    let mag = |d: &convert::Decimal| d.digits.len() as i64 - d.scale;
                    let o = mag(&p).cmp(&mag(&q)).then_with(|| p.digits.cmp(&q.digits));
                    if sp < 0 {
                        o.reverse()
                    } else {
                        o
                    }
                }
                _ => x.cmp(y),
            }
        }
    }
}

// ---------------------------------------------------------------- display

/// A normalized value as JSON for reports (the stream's encodings).
pub fn norm_json(n: &Norm) -> Value {
    match n {
        Norm::Null => Value::Null,
        Norm::Bool(b) => Value::Bool(*b),
        Norm::Int(i) => Value::from(*i),
        Norm::Float(f) => float_value(*f),
        Norm::Float4(f) => float_value(*f as f64),
        Norm::Numeric(s) => {
            serde_json::from_str::<Value>(s).ok().filter(Value::is_number).unwrap_or_else(|| Value::String(s.clone()))
        }
        Norm::Text(s) => Value::String(s.clone()),
        Norm::Bytes(b) => pgferry::stream::bytes_value(b),
        Norm::Date(d) => {
            let (y, m, dd) = timefmt::civil_from_days(*d as i64);
            Value::String(format!("{y:04}-{m:02}-{dd:02}"))
        }
        Norm::Time(t) => {
            let s = t / 1_000_000;
            let frac = t % 1_000_000;
            let mut out = format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
            if frac != 0 {
                out.push_str(format!(".{frac:06}").trim_end_matches('0'));
            }
            Value::String(out)
        }
        Norm::Timestamp(t) => Value::String(match *t {
            i64::MAX => "infinity".into(),
            i64::MIN => "-infinity".into(),
            t if t.div_euclid(MICROS_PER_DAY).abs() < 3_000_000 => timefmt::format_rfc3339_micros(t),
            t => t.to_string(),
        }),
        Norm::Json(v) | Norm::Raw(v) => v.clone(),
        Norm::Uuid(u) => {
            let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
            Value::String(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
        }
        Norm::Array(items) => Value::Array(items.iter().map(norm_json).collect()),
        Norm::Bad(v, _) => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ct(kind: Kind, type_name: &str) -> ColType {
        ColType::of(&ColumnInfo {
            name: "c".into(),
            type_name: type_name.into(),
            kind,
            not_null: false,
            has_default: false,
            generated: false,
            sequence: None,
            scale: None,
            numeric_precision: None,
            length: None,
            blank_padded: false,
            max_bytes: None,
            domain: false,
            interval_fields: None,
            precision: None,
        })
    }

    fn eq(a: Value, b: Value, t: &ColType) -> bool {
        let o = Options::default();
        norm_eq(&from_value(a, Some(t), &o), &from_value(b, Some(t), &o))
    }

    #[test]
    fn type_modifiers_are_read() {
        let n = ct(Kind::Numeric, "numeric(12,2)");
        assert_eq!(n.numeric_scale, Some(2));
        assert_eq!(ct(Kind::Timestamptz, "timestamp(3) with time zone").time_precision, Some(3));
        assert_eq!(ct(Kind::Timestamptz, "timestamp with time zone").time_precision, None);
        assert!(ct(Kind::Text, "character(5)").bpchar);
        assert!(!ct(Kind::Text, "character varying(5)").bpchar);
    }

    #[test]
    fn numerics_round_to_their_scale() {
        for (s, scale, want) in [
            ("1234.5", Some(2), "1234.5"),
            ("1234.50", None, "1234.5"),
            ("1.235", Some(2), "1.24"),
            ("-1.235", Some(2), "-1.24"),
            ("9.999", Some(2), "10"),
            ("0.004", Some(2), "0"),
            ("-0.004", Some(2), "0"),
            ("100", None, "100"),
            ("1e3", None, "1000"),
            ("0.00", None, "0"),
            ("NaN", Some(2), "NaN"),
            ("0.5", Some(0), "1"),
        ] {
            assert_eq!(numeric_canonical(s, scale), want, "{s} {scale:?}");
        }
    }

    #[test]
    fn rules() {
        let tz = ct(Kind::Timestamptz, "timestamp with time zone");
        assert!(eq(json!("2024-01-05T10:00:00Z"), json!("2024-01-05 12:00:00+02:00"), &tz));
        assert!(!eq(json!("2024-01-05T10:00:00Z"), json!("2024-01-05T10:00:00.000001Z"), &tz));
        assert!(eq(json!("2024-01-05T10:00:00.0000004Z"), json!("2024-01-05T10:00:00Z"), &tz));
        let jb = ct(Kind::Jsonb, "jsonb");
        assert!(eq(json!(r#"{"a":1,"b":[1,2]}"#), json!({"b": [1, 2], "a": 1}), &jb));
        assert!(eq(json!(r#"{"a":1.50}"#), json!({"a": 1.5}), &jb));
        assert!(!eq(json!(r#"{"a":1}"#), json!({"a": 2}), &jb));
        let f8 = ct(Kind::Float8, "double precision");
        assert!(eq(json!(0.30000000000000004), json!(0.3), &f8));
        assert!(!eq(json!(0.3001), json!(0.3), &f8));
        let b = ct(Kind::Bool, "boolean");
        assert!(eq(json!(1), json!(true), &b));
        assert!(!eq(json!(0), json!(true), &b));
        let by = ct(Kind::Bytea, "bytea");
        assert!(eq(json!({"$base64": true, "encoded": "AP8="}), json!("\\x00ff"), &by));
        let ch = ct(Kind::Text, "character(5)");
        assert!(eq(json!("ab"), json!("ab   "), &ch));
        let n = ct(Kind::Numeric, "numeric(12,2)");
        assert!(eq(json!(1.234), json!("1.23"), &n));
        let t3 = ct(Kind::Timestamptz, "timestamp(3) with time zone");
        assert!(eq(json!("2024-01-05T10:00:00.1234Z"), json!("2024-01-05T10:00:00.123Z"), &t3));
        let i = ct(Kind::Int8, "bigint");
        assert!(eq(json!(9007199254740993i64), json!("9007199254740993"), &i));
        assert!(!eq(json!(9007199254740993i64), json!(9007199254740992i64), &i));
        assert!(matches!(from_value(json!("x"), Some(&i), &Options::default()), Norm::Bad(..)));
    }

    #[test]
    fn untyped_rules() {
        assert!(raw_eq(&json!(1), &json!(true)));
        assert!(raw_eq(&json!("2024-01-05T10:00:00Z"), &json!("2024-01-05T12:00:00+02:00")));
        assert!(!raw_eq(&json!("2024-01-05T10:00:00Z"), &json!("2024-01-05T10:00:00")));
        assert!(raw_eq(&json!({"lat": 1.0, "lng": 2}), &json!({"lng": 2.0, "lat": 1})));
        assert!(raw_eq(&json!(0.1), &json!(0.10000000000000002)));
        assert!(!raw_eq(&json!(1), &json!("1")));
    }

    #[test]
    fn key_order_is_bytewise_for_text_and_numeric_for_numbers() {
        let k = |v: Norm| vec![v];
        assert_eq!(cmp_key(&k(Norm::Int(9)), &k(Norm::Int(10))), Ordering::Less);
        assert_eq!(cmp_key(&k(Norm::Text("9".into())), &k(Norm::Text("10".into()))), Ordering::Greater);
        assert_eq!(cmp_key(&k(Norm::Text("Z".into())), &k(Norm::Text("a".into()))), Ordering::Less);
        assert_eq!(cmp_key(&k(Norm::Raw(json!(10))), &k(Norm::Raw(json!("1")))), Ordering::Less);
        assert_eq!(cmp_norm(&Norm::Numeric("-2".into()), &Norm::Numeric("-10".into())), Ordering::Greater);
    }
}
