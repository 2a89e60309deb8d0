//! PostgreSQL's binary COPY output decoded into `Cell`s: the exact values, with no text
//! parsing on either end (the inverse of `convert::encode_binary`).

use pgferry::convert::{Cell, Kind};
use pgferry::timefmt::{PG_EPOCH_DAYS, PG_EPOCH_MICROS};
use pgferry::{Error, Result};
use std::io::BufRead;

/// The kind a column is decoded as: types without a binary decoder here are selected as
/// text (`col::text`, `col::text[]`) and decoded as such.
pub fn decode_kind(k: &Kind) -> Kind {
    match k {
        _ if k.has_binary() => k.clone(),
        Kind::Array { .. } => Kind::Array { elem: Box::new(Kind::Text), elem_oid: pgferry::catalog::TEXT_OID },
        _ => Kind::Text,
    }
}

/// The select expression for a column of kind `k`: types without a decoder here come as
/// their output function's text (`format('%s', …)`; a cast to text would differ, e.g. inet's
/// `/32`), arrays of them element by element.
pub fn select_expr(quoted: &str, k: &Kind) -> String {
    match k {
        _ if k.has_binary() => quoted.to_string(),
        Kind::Array { .. } => format!(
            "CASE WHEN {quoted} IS NULL THEN NULL ELSE coalesce((SELECT array_agg(CASE WHEN e IS NULL THEN NULL ELSE format('%s', e) END ORDER BY o) \
             FROM unnest({quoted}) WITH ORDINALITY u(e, o)), '{{}}'::text[]) END"
        ),
        _ => format!("format('%s', {quoted})"),
    }
}

/// Reads tuples of a binary COPY stream: each tuple straight from the input's buffer when
/// it is there whole (the postgres crate hands over one CopyData message, a tuple, at a
/// time), else field by field through a buffer of its own.
pub struct Reader<R: BufRead> {
    input: R,
    buf: Vec<u8>,
    started: bool,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R) -> Self {
        Reader { input, buf: Vec::with_capacity(256), started: false }
    }

    fn read_exact(&mut self, n: usize) -> Result<()> {
        self.buf.resize(n, 0);
        self.input
            .read_exact(&mut self.buf[..n])
            .map_err(|e| Error::Unavailable(format!("read COPY output: {}", pgferry::error::io_cause(&e))))
    }

    fn i32(&mut self) -> Result<i32> {
        self.read_exact(4)?;
        Ok(i32::from_be_bytes(self.buf[..4].try_into().unwrap()))
    }

    /// The next tuple decoded by `kinds` into `out`; `false` at the end.
    pub fn next(&mut self, kinds: &[Kind], out: &mut Vec<Cell>) -> Result<bool> {
        if !self.started {
            self.read_exact(11 + 4)?;
            if &self.buf[..11] != pgferry::convert::BINARY_HEADER[..11].as_ref() {
                return Err(Error::Io("COPY output is not in binary format".into()));
            }
            let ext = self.i32()?;
            self.read_exact(ext.max(0) as usize)?;
            self.started = true;
        }
        let avail = self
            .input
            .fill_buf()
            .map_err(|e| Error::Unavailable(format!("read COPY output: {}", pgferry::error::io_cause(&e))))?;
        if let Some((used, more)) = tuple(avail, kinds, out)? {
            self.input.consume(used);
            return Ok(more);
        }
        self.read_exact(2)?;
        let n = i16::from_be_bytes([self.buf[0], self.buf[1]]);
        if n < 0 {
            return Ok(false);
        }
        if n as usize != kinds.len() {
            return Err(Error::Io(format!("COPY output has {n} fields, expected {}", kinds.len())));
        }
        out.clear();
        for k in kinds {
            let len = self.i32()?;
            if len < 0 {
                out.push(Cell::Null);
                continue;
            }
            self.read_exact(len as usize)?;
            out.push(decode(k, &self.buf[..len as usize])?);
        }
        Ok(true)
    }
}

/// One tuple decoded from `b` when `b` holds all of it: the bytes it took and whether it
/// was a tuple (not the end); `None` when `b` ends first. Errors as `Reader::next`'s.
fn tuple(b: &[u8], kinds: &[Kind], out: &mut Vec<Cell>) -> Result<Option<(usize, bool)>> {
    let Some(n) = b.get(..2) else { return Ok(None) };
    let n = i16::from_be_bytes([n[0], n[1]]);
    if n < 0 {
        return Ok(Some((2, false)));
    }
    if n as usize != kinds.len() {
        return Err(Error::Io(format!("COPY output has {n} fields, expected {}", kinds.len())));
    }
    out.clear();
    let mut at = 2;
    for k in kinds {
        let Some(len) = b.get(at..at + 4) else { return Ok(None) };
        let len = i32::from_be_bytes(len.try_into().expect("four bytes"));
        at += 4;
        if len < 0 {
            out.push(Cell::Null);
            continue;
        }
        let Some(body) = b.get(at..at + len as usize) else { return Ok(None) };
        out.push(decode(k, body)?);
        at += len as usize;
    }
    Ok(Some((at, true)))
}

fn bad(what: &str) -> Error {
    Error::Io(format!("cannot decode a {what} value from COPY output"))
}

fn be<const N: usize>(b: &[u8], what: &str) -> Result<[u8; N]> {
    b.get(..N).and_then(|s| s.try_into().ok()).ok_or_else(|| bad(what))
}

/// Decodes one field's binary form.
pub fn decode(k: &Kind, b: &[u8]) -> Result<Cell> {
    Ok(match k {
        Kind::Bool => Cell::Bool(b.first().copied().ok_or_else(|| bad("boolean"))? != 0),
        Kind::Int2 => Cell::Int2(i16::from_be_bytes(be(b, "smallint")?)),
        Kind::Int4 => Cell::Int4(i32::from_be_bytes(be(b, "integer")?)),
        Kind::Int8 => Cell::Int8(i64::from_be_bytes(be(b, "bigint")?)),
        Kind::Float4 => Cell::Float4(f32::from_bits(u32::from_be_bytes(be(b, "real")?))),
        Kind::Float8 => Cell::Float8(f64::from_bits(u64::from_be_bytes(be(b, "double")?))),
        Kind::Numeric => Cell::Numeric(numeric_text(b).ok_or_else(|| bad("numeric"))?),
        Kind::Text | Kind::Enum | Kind::Other(_) | Kind::Json => Cell::Text(utf8(b)?),
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
                items.push(decode(elem, body)?);
                at += len as usize;
            }
            Cell::Array(items, *elem_oid)
        }
    }
    .fix_json(k))
}

trait FixJson {
    fn fix_json(self, k: &Kind) -> Cell;
}

impl FixJson for Cell {
    /// json arrives as text; keep it as a JSON cell.
    fn fix_json(self, k: &Kind) -> Cell {
        match (self, k) {
            (Cell::Text(s), Kind::Json) => Cell::Json(s),
            (c, _) => c,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> Vec<u8> {
        let mut out = vec![];
        pgferry::convert::encode_binary(&Cell::Numeric(s.into()), &mut out);
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
            assert_eq!(numeric_text(&enc(s)).as_deref(), Some(s), "{s}");
        }
    }

    #[test]
    fn tuples_read_the_same_whole_or_in_pieces() {
        let kinds = [Kind::Int8, Kind::Text, Kind::Timestamptz];
        let rows = [
            vec![Cell::Int8(1), Cell::Text("héllo".into()), Cell::Timestamptz(1_704_448_800_000_000)],
            vec![Cell::Int8(2), Cell::Null, Cell::Null],
        ];
        let mut copy = pgferry::convert::BINARY_HEADER.to_vec();
        for r in &rows {
            copy.extend_from_slice(&(r.len() as i16).to_be_bytes());
            for c in r {
                pgferry::convert::encode_binary(c, &mut copy);
            }
        }
        copy.extend_from_slice(&(-1i16).to_be_bytes());
        for cap in [1, 3, 7, 19, 64, 1 << 16] {
            let mut r = Reader::new(std::io::BufReader::with_capacity(cap, &copy[..]));
            let mut out = vec![];
            for want in &rows {
                assert!(r.next(&kinds, &mut out).unwrap(), "{cap}");
                assert_eq!(&out, want, "{cap}");
            }
            assert!(!r.next(&kinds, &mut out).unwrap(), "{cap}");
        }
        let mut r = Reader::new(&copy[..copy.len() - 5]);
        let mut out = vec![];
        assert!(r.next(&kinds, &mut out).unwrap());
        assert!(r.next(&kinds, &mut out).is_err());
    }

    #[test]
    fn times_and_arrays() {
        let mut out = vec![];
        pgferry::convert::encode_binary(&Cell::Timestamptz(1_704_448_800_000_000), &mut out);
        assert_eq!(decode(&Kind::Timestamptz, &out[4..]).unwrap(), Cell::Timestamptz(1_704_448_800_000_000));
        let arr = Cell::Array(vec![Cell::Text("a".into()), Cell::Null], 25);
        let mut out = vec![];
        pgferry::convert::encode_binary(&arr, &mut out);
        let k = Kind::Array { elem: Box::new(Kind::Text), elem_oid: 25 };
        assert_eq!(decode(&k, &out[4..]).unwrap(), arr);
        let mut out = vec![];
        pgferry::convert::encode_binary(&Cell::Date(19727), &mut out);
        assert_eq!(decode(&Kind::Date, &out[4..]).unwrap(), Cell::Date(19727));
    }
}
