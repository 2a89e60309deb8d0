//! PostgreSQL's binary COPY output decoded into `Cell`s: the exact values, with no text
//! parsing on either end (the inverse of `convert::encode_binary`).

use pgferry::convert::{self, Cell, Kind};
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
            "CASE WHEN {quoted} IS NULL THEN NULL ELSE coalesce((SELECT array_agg({} ORDER BY o) \
             FROM unnest({quoted}) WITH ORDINALITY u(e, o)), '{{}}'::text[]) END",
            text_of("e")
        ),
        _ => text_of(quoted),
    }
}

/// A value's output-function text, NULL kept NULL: `format('%s', NULL)` is '' (an empty
/// string is not a missing value), and `IS NULL` is true of a composite whose fields are all
/// NULL, which is a value.
fn text_of(expr: &str) -> String {
    format!("CASE WHEN {expr} IS NOT DISTINCT FROM NULL THEN NULL ELSE format('%s', {expr}) END")
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
            out.push(convert::decode_binary(k, &self.buf[..len as usize])?);
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
        out.push(convert::decode_binary(k, body)?);
        at += len as usize;
    }
    Ok(Some((at, true)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            convert::decode_binary(&Kind::Timestamptz, &out[4..]).unwrap(),
            Cell::Timestamptz(1_704_448_800_000_000)
        );
        let arr = Cell::Array(vec![Cell::Text("a".into()), Cell::Null], 25);
        let mut out = vec![];
        pgferry::convert::encode_binary(&arr, &mut out);
        let k = Kind::Array { elem: Box::new(Kind::Text), elem_oid: 25 };
        assert_eq!(convert::decode_binary(&k, &out[4..]).unwrap(), arr);
        let mut out = vec![];
        pgferry::convert::encode_binary(&Cell::Date(19727), &mut out);
        assert_eq!(convert::decode_binary(&Kind::Date, &out[4..]).unwrap(), Cell::Date(19727));
    }
}
