//! The fallback for a stream or Firestore side that is not in key order: its rows go into
//! a temporary SQLite database (a file, deleted when closed) with a sort key whose byte
//! order is the canonical key order, and come back sorted. SQLite's sorter spills to temp
//! files, so memory stays bounded (its page cache is capped at 16 MB).

use crate::norm::Norm;
use pgferry::sqlite::sqlite_error;
use pgferry::Result;
use serde_json::Value;

pub struct Spool {
    conn: rusqlite::Connection,
    seq: i64,
    key: Vec<u8>,
}

impl Spool {
    pub fn new() -> Result<Spool> {
        // An empty path is a private temporary database on disk, removed when closed.
        let conn = rusqlite::Connection::open("").map_err(|e| sqlite_error("create a temporary sort file", e))?;
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -16384; PRAGMA temp_store = FILE;
             CREATE TABLE spool (k BLOB NOT NULL, seq INTEGER NOT NULL, line TEXT NOT NULL); BEGIN;",
        )
        .map_err(|e| sqlite_error("create a temporary sort file", e))?;
        Ok(Spool { conn, seq: 0, key: Vec::with_capacity(64) })
    }

    /// Adds one row (its text) under its key.
    pub fn add<'a>(&mut self, key: impl Iterator<Item = &'a Norm>, line: &str) -> Result<()> {
        self.key.clear();
        for part in key {
            encode(part, &mut self.key);
        }
        self.seq += 1;
        let mut st = self
            .conn
            .prepare_cached("INSERT INTO spool VALUES (?1, ?2, ?3)")
            .map_err(|e| sqlite_error("write the temporary sort file", e))?;
        st.execute(rusqlite::params![&self.key, self.seq, line])
            .map_err(|e| sqlite_error("write the temporary sort file", e))?;
        Ok(())
    }

    /// Calls `f` with every row's text, in key order (rows of equal keys in arrival order).
    pub fn drain(self, mut f: impl FnMut(String) -> Result<bool>) -> Result<()> {
        self.conn.execute_batch("COMMIT").map_err(|e| sqlite_error("write the temporary sort file", e))?;
        let mut st = self
            .conn
            .prepare("SELECT line FROM spool ORDER BY k, seq")
            .map_err(|e| sqlite_error("sort the temporary file", e))?;
        let mut rows = st.query([]).map_err(|e| sqlite_error("sort the temporary file", e))?;
        while let Some(r) = rows.next().map_err(|e| sqlite_error("read the temporary sort file", e))? {
            let line: String = r.get(0).map_err(|e| sqlite_error("read the temporary sort file", e))?;
            if !f(line)? {
                break;
            }
        }
        Ok(())
    }
}

/// Appends a key part so that `memcmp` of two encodings orders like `norm::cmp_norm`.
fn encode(n: &Norm, out: &mut Vec<u8>) {
    let int = |i: i64, out: &mut Vec<u8>| out.extend_from_slice(&((i as u64) ^ (1 << 63)).to_be_bytes());
    let float = |f: f64, out: &mut Vec<u8>| {
        let b = f.to_bits();
        let b = if b >> 63 == 1 { !b } else { b | (1 << 63) };
        out.extend_from_slice(&b.to_be_bytes());
    };
    let bytes = |b: &[u8], out: &mut Vec<u8>| {
        for &c in b {
            out.push(c);
            if c == 0 {
                out.push(0xff);
            }
        }
        out.extend_from_slice(&[0, 0]);
    };
    out.push(crate::norm::rank(n));
    match n {
        Norm::Null => {}
        Norm::Bool(b) => out.push(*b as u8),
        Norm::Int(i) | Norm::Timestamp(i) | Norm::Time(i) => int(*i, out),
        Norm::Date(d) => int(*d as i64, out),
        Norm::Float(f) => float(*f, out),
        Norm::Float4(f) => float(*f as f64, out),
        Norm::Numeric(s) => float(s.parse().unwrap_or(f64::NAN), out),
        Norm::Text(s) => bytes(s.as_bytes(), out),
        Norm::Uuid(u) => bytes(u, out),
        Norm::Bytes(b) => bytes(b, out),
        Norm::Raw(v) => match v {
            Value::Null => out.push(0),
            Value::Bool(b) => {
                out.push(1);
                float(*b as u8 as f64, out);
            }
            Value::Number(x) => {
                out.push(1);
                float(x.to_string().parse().unwrap_or(f64::NAN), out);
            }
            Value::String(s) => {
                out.push(2);
                bytes(s.as_bytes(), out);
            }
            other => {
                out.push(3);
                bytes(other.to_string().as_bytes(), out);
            }
        },
        other => bytes(crate::norm::norm_json(other).to_string().as_bytes(), out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc(n: &Norm) -> Vec<u8> {
        let mut v = vec![];
        encode(n, &mut v);
        v
    }

    #[test]
    fn byte_order_is_the_key_order() {
        let ordered = [
            vec![Norm::Int(-5), Norm::Int(0), Norm::Int(9), Norm::Int(10), Norm::Int(i64::MAX)],
            vec![
                Norm::Text("".into()),
                Norm::Text("\0".into()),
                Norm::Text("10".into()),
                Norm::Text("9".into()),
                Norm::Text("B".into()),
                Norm::Text("a".into()),
                Norm::Text("ab".into()),
                Norm::Text("é".into()),
            ],
            vec![Norm::Float(-1.5), Norm::Float(-0.0), Norm::Float(0.5), Norm::Float(1e300)],
            vec![
                Norm::Raw(json!(-1)),
                Norm::Raw(json!(2)),
                Norm::Raw(json!(10)),
                Norm::Raw(json!("1")),
                Norm::Raw(json!("a")),
            ],
        ];
        for list in ordered {
            for w in list.windows(2) {
                assert!(enc(&w[0]) < enc(&w[1]), "{:?} < {:?}", w[0], w[1]);
                assert_eq!(crate::norm::cmp_norm(&w[0], &w[1]), std::cmp::Ordering::Less, "{:?} < {:?}", w[0], w[1]);
            }
        }
    }

    #[test]
    fn rows_come_back_sorted() {
        let mut s = Spool::new().unwrap();
        for (k, line) in [(3, "c"), (1, "a"), (2, "b"), (1, "a2")] {
            s.add([Norm::Int(k)].iter(), line).unwrap();
        }
        let mut got = vec![];
        s.drain(|l| {
            got.push(l);
            Ok(true)
        })
        .unwrap();
        assert_eq!(got, vec!["a", "a2", "b", "c"]);
    }
}
