//! Checksums: sha256 in hex, and a content digest of a SQLite database in the spirit of
//! SQLite's `dbhash` tool: it hashes what the database holds (schema and rows), not the
//! file's bytes, so a restored, vacuumed or re-paged copy with the same rows has the same digest.

use crate::error::Result;
use crate::sqlite::{self as sq, sqlite_error};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// The sha256 of `data`, in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// A running sha256 that can be finished into hex.
#[derive(Default, Clone)]
pub struct Sha256Hex(Sha256);

impl Sha256Hex {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

/// What `content_digest` found: the digest and each hashed table's row count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDigest {
    /// sha256 in hex over the schema and every table's rows (see `content_digest`).
    pub sha256: String,
    /// Every hashed table with its row count, in name order.
    pub tables: Vec<(String, u64)>,
}

/// The tables whose rows `content_digest` hashes: every ordinary table, `sqlite_sequence`
/// (AUTOINCREMENT state) included, SQLite's other internal tables and virtual tables left out
/// (a virtual table's rows live in its shadow tables, which are ordinary tables).
pub fn content_tables(conn: &Connection) -> Result<Vec<String>> {
    sq::tables_where(
        conn,
        "(name NOT LIKE 'sqlite\\_%' ESCAPE '\\' OR name = 'sqlite_sequence') \
         AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL%'",
    )
}

/// A dbhash-like digest of everything the database holds, read in one pass.
///
/// sha256 over, in this order:
/// 1. the schema: every `sqlite_master` row except `sqlite_stat*` (type, name, tbl_name, sql;
///    not rootpage, which changes when pages move), ordered by type and name;
/// 2. for each table of `content_tables`, in name order: its name, its column count, then
///    each row (ordered by rowid, or by primary key for WITHOUT ROWID tables) as its values.
///
/// Values are typed and length-prefixed, so no two different contents encode alike:
/// NULL `n`; INTEGER `i` + 8 bytes big-endian; REAL `f` + the 8 bytes of its IEEE bits;
/// TEXT `t` / BLOB `b` + 8-byte length + the bytes. Strings in the schema are TEXT/NULL
/// encoded the same way. The caller should read inside one transaction (`begin_snapshot`)
/// when others may be writing.
pub fn content_digest(conn: &Connection) -> Result<ContentDigest> {
    let mut h = BufferedSha::default();
    h.put(b"pgferry-content-digest/1");
    {
        let mut st = conn
            .prepare(
                "SELECT type, name, tbl_name, sql FROM sqlite_master \
                 WHERE name NOT LIKE 'sqlite\\_stat%' ESCAPE '\\' ORDER BY type, name",
            )
            .map_err(|e| sqlite_error("read the schema", e))?;
        let mut rows = st.query([]).map_err(|e| sqlite_error("read the schema", e))?;
        while let Some(r) = rows.next().map_err(|e| sqlite_error("read the schema", e))? {
            h.put(b"S");
            for i in 0..4 {
                h.value(r.get_ref(i).expect("four columns"));
            }
        }
    }
    let mut tables = Vec::new();
    for t in content_tables(conn)? {
        let info = sq::table_info(conn, &t)?;
        let order = if info.has_rowid {
            "rowid".to_string()
        } else {
            info.primary_key().iter().map(|c| sq::quote_ident(&c.name)).collect::<Vec<_>>().join(", ")
        };
        let sql = format!("SELECT * FROM {} ORDER BY {order}", sq::quote_ident(&t));
        let what = format!("read table '{t}'");
        let mut st = conn.prepare(&sql).map_err(|e| sqlite_error(&what, e))?;
        let ncol = st.column_count();
        h.put(b"T");
        h.value(ValueRef::Text(t.as_bytes()));
        h.put(&(ncol as u64).to_be_bytes());
        let mut rows = st.query([]).map_err(|e| sqlite_error(&what, e))?;
        let mut n = 0u64;
        while let Some(r) = rows.next().map_err(|e| sqlite_error(&what, e))? {
            h.put(b"R");
            for i in 0..ncol {
                h.value(r.get_ref(i).expect("column index in range"));
            }
            n += 1;
        }
        h.put(b"E");
        h.put(&n.to_be_bytes());
        tables.push((t, n));
    }
    Ok(ContentDigest { sha256: h.finish(), tables })
}

/// sha256 fed in 64 KiB blocks: many tiny `update` calls cost more than the hashing.
#[derive(Default)]
struct BufferedSha {
    sha: Sha256,
    buf: Vec<u8>,
}

impl BufferedSha {
    fn put(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 1 << 16 {
            self.sha.update(&self.buf);
            self.buf.clear();
        }
    }
    fn value(&mut self, v: ValueRef<'_>) {
        match v {
            ValueRef::Null => self.put(b"n"),
            ValueRef::Integer(i) => {
                self.put(b"i");
                self.put(&i.to_be_bytes());
            }
            ValueRef::Real(f) => {
                self.put(b"f");
                self.put(&f.to_bits().to_be_bytes());
            }
            ValueRef::Text(t) => {
                self.put(b"t");
                self.put(&(t.len() as u64).to_be_bytes());
                self.put(t);
            }
            ValueRef::Blob(b) => {
                self.put(b"b");
                self.put(&(b.len() as u64).to_be_bytes());
                self.put(b);
            }
        }
    }
    fn finish(mut self) -> String {
        self.sha.update(&self.buf);
        hex(&self.sha.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(sql: &str) -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(sql).unwrap();
        c
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let mut h = Sha256Hex::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), sha256_hex(b"abc"));
    }

    #[test]
    fn same_content_same_digest_whatever_the_insert_order_or_pages() {
        let a = db("CREATE TABLE t (id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1, 'x'), (2, 2.5), (3, x'00');
                    CREATE TABLE w (k TEXT PRIMARY KEY, v) WITHOUT ROWID; INSERT INTO w VALUES ('b', 1), ('a', 2);");
        let b = db("PRAGMA page_size = 1024; CREATE TABLE t (id INTEGER PRIMARY KEY, v);
                    CREATE TABLE w (k TEXT PRIMARY KEY, v) WITHOUT ROWID; INSERT INTO w VALUES ('a', 2), ('b', 1);
                    INSERT INTO t VALUES (3, x'00'), (2, 2.5), (1, 'x');");
        let da = content_digest(&a).unwrap();
        assert_eq!(da, content_digest(&b).unwrap());
        assert_eq!(da.tables, vec![("t".to_string(), 3), ("w".to_string(), 2)]);
    }

    #[test]
    fn any_difference_changes_the_digest() {
        let base = "CREATE TABLE t (id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1, 'x'), (2, NULL);";
        let d0 = content_digest(&db(base)).unwrap().sha256;
        for other in [
            // a value's type, not only its text
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1, x'78'), (2, NULL);",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1, 'x'), (2, '');",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1, 'x');",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1, 'x'), (3, NULL);",
            // the schema alone
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'x'), (2, NULL);",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1, 'x'), (2, NULL); CREATE INDEX i ON t(v);",
        ] {
            assert_ne!(content_digest(&db(other)).unwrap().sha256, d0, "{other}");
        }
    }

    #[test]
    fn autoincrement_state_counts_and_stat_tables_do_not() {
        let a = db("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v); INSERT INTO t (v) VALUES (1);");
        let b = db("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v); INSERT INTO t (v) VALUES (1);");
        assert_eq!(content_digest(&a).unwrap(), content_digest(&b).unwrap());
        b.execute_batch("ANALYZE;").unwrap();
        assert_eq!(content_digest(&a).unwrap().sha256, content_digest(&b).unwrap().sha256);
        b.execute_batch("INSERT INTO t (v) VALUES (2); DELETE FROM t WHERE v = 2;").unwrap();
        assert_ne!(content_digest(&a).unwrap().sha256, content_digest(&b).unwrap().sha256);
    }
}
