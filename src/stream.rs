//! The NDJSON stream every tool reads and writes (see docs/stream.md).
//!
//! Writing is hand-rolled for speed (a row is written field by field, never built as a
//! `serde_json::Value`); reading parses one line at a time into a `serde_json::Map`.

use crate::error::{Error, Result};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::io::{BufRead, Write};

/// The key of the end record: `{"$end": {"rows": N, ...}}`.
pub const END_KEY: &str = "$end";

// ---------------------------------------------------------------- writing

/// Bytes a [`RowWriter`] hands its output at once: few system calls, and a consumer at the
/// other end of a pipe woken a few times per megabyte rather than once per 64 KiB.
const BLOCK: usize = 1 << 18;

/// A [`RowWriter`]'s buffer: a block plus room for the row that crosses it.
const BUF_LEN: usize = BLOCK + BLOCK / 4;

/// Writes rows as NDJSON, then the end record. Counts the rows it wrote.
pub struct RowWriter<W: Write> {
    out: W,
    buf: Buf,
    first_field: bool,
    rows: u64,
    /// Where the rows go, for a failed write's message: "stdout", "'DIR/t.ndjson'".
    dest: String,
}

impl<W: Write> RowWriter<W> {
    /// Rows to stdout.
    pub fn new(out: W) -> Self {
        Self::to(out, "stdout")
    }

    /// Rows to `dest` (named in the error when a write fails: the disk is full, ...).
    pub fn to(out: W, dest: impl Into<String>) -> Self {
        RowWriter { out, buf: Buf { bytes: vec![0; BUF_LEN], pos: 0 }, first_field: true, rows: 0, dest: dest.into() }
    }

    fn write_error(&self, e: std::io::Error) -> Error {
        Error::io(format!("write to {}", self.dest), e)
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    #[inline]
    pub fn begin_row(&mut self) {
        self.buf.put(b"{");
        self.first_field = true;
    }

    #[inline]
    fn separate(&mut self) {
        if !self.first_field {
            self.buf.put(b",");
        }
        self.first_field = false;
    }

    /// Starts a field: writes the key and the colon; the caller writes the value next.
    pub fn key(&mut self, key: &str) {
        self.separate();
        self.buf.string(key.as_bytes());
        self.buf.put(b":");
    }

    /// Starts a field whose key was encoded once with [`encode_key`] (hot loops).
    #[inline]
    pub fn encoded_key(&mut self, key: &EncodedKey) {
        self.separate();
        self.buf.key(key);
    }

    #[inline]
    pub fn null(&mut self) {
        self.buf.put(b"null");
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.put(if v { b"true" } else { b"false" });
    }

    #[inline]
    pub fn int(&mut self, v: i64) {
        self.buf.int(v);
    }

    pub fn float(&mut self, v: f64) {
        self.buf.float(v);
    }

    pub fn str(&mut self, v: &str) {
        self.buf.string(v.as_bytes());
    }

    /// Text not yet known to be UTF-8 (SQLite's): written as a string when it is, else
    /// nothing is written and the error says where it stops being UTF-8. One pass for ASCII.
    #[inline]
    pub fn text(&mut self, v: &[u8]) -> std::result::Result<(), std::str::Utf8Error> {
        let start = self.buf.pos;
        if self.buf.string(v) {
            if let Err(e) = std::str::from_utf8(v) {
                self.buf.pos = start;
                return Err(e);
            }
        }
        Ok(())
    }

    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.bytes_form(v);
    }

    /// A value that is already JSON (a nested map or array built by the caller).
    pub fn value(&mut self, v: &Value) {
        self.buf.value(v);
    }

    #[inline]
    pub fn end_row(&mut self) -> Result<()> {
        self.buf.put(b"}\n");
        self.rows += 1;
        if self.buf.pos >= BLOCK {
            self.flush_buf()?;
        }
        Ok(())
    }

    /// Writes out the complete rows buffered so far (before reporting a failure, so the
    /// output holds every row up to the last one received). Call between rows only.
    pub fn flush(&mut self) -> Result<()> {
        self.flush_buf()?;
        self.out.flush().map_err(|e| self.write_error(e))
    }

    fn flush_buf(&mut self) -> Result<()> {
        if let Err(e) = self.out.write_all(&self.buf.bytes[..self.buf.pos]) {
            return Err(self.write_error(e));
        }
        self.buf.pos = 0;
        if self.buf.bytes.len() > 4 * BUF_LEN {
            // A huge row grew the buffer: give the memory back.
            self.buf.bytes = vec![0; BUF_LEN];
        }
        Ok(())
    }

    /// Writes the end record (`rows` first, then `extra` members in order) and flushes.
    pub fn finish(mut self, extra: &[(&str, Value)]) -> Result<W> {
        let _ = write!(self.buf, "{{\"{END_KEY}\":{{\"rows\":{}", self.rows);
        for (k, v) in extra {
            self.buf.put(b",");
            self.buf.string(k.as_bytes());
            self.buf.put(b":");
            self.buf.value(v);
        }
        self.buf.put(b"}}\n");
        self.flush_buf()?;
        if let Err(e) = self.out.flush() {
            return Err(self.write_error(e));
        }
        Ok(self.out)
    }
}

/// Asks for a 1 MiB pipe when stdout is a pipe (Linux's default is 64 KiB), so that producer
/// and consumer each wake up once per [`BLOCK`] or more, not per 64 KiB. Best effort: where
/// it is refused (stdout not a pipe, a user over the pipe quota) the output is the same.
pub fn widen_stdout_pipe() {
    #[cfg(target_os = "linux")]
    // SAFETY: fcntl on a descriptor number has no memory effects; a bad one is an error return.
    unsafe {
        libc::fcntl(libc::STDOUT_FILENO, libc::F_SETPIPE_SZ, 1 << 20);
    }
}

/// A key encoded once for a hot loop ([`RowWriter::encoded_key`]): its JSON text and colon,
/// the first 32 bytes zero-padded and copied whole, the rest (of a long key) after them.
pub struct EncodedKey {
    head: [u8; 32],
    rest: Vec<u8>,
    len: usize,
}

/// A key as JSON text followed by its colon, for [`RowWriter::encoded_key`].
pub fn encode_key(key: &str) -> EncodedKey {
    let mut text = Vec::with_capacity(key.len() + 3);
    write_json_str(&mut text, key);
    text.push(b':');
    let mut head = [0u8; 32];
    let n = text.len().min(32);
    head[..n].copy_from_slice(&text[..n]);
    EncodedKey { head, rest: text[n..].to_vec(), len: text.len() }
}

/// Output bytes kept zero-filled to their full length, `pos` marking where the bytes written
/// end. Each write first makes room, so a copy of fixed size (a word of text, a key's 16-byte
/// chunks) may store past what it means to keep: cheaper than a copy of exact, varying length.
struct Buf {
    bytes: Vec<u8>,
    pos: usize,
}

/// "00" to "99": an integer is written two digits per division.
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

impl Buf {
    /// Runs `f` appending to `v` (the free functions' `Vec` interface).
    fn append_to(v: &mut Vec<u8>, f: impl FnOnce(&mut Buf)) {
        let mut b = Buf { pos: v.len(), bytes: std::mem::take(v) };
        f(&mut b);
        b.bytes.truncate(b.pos);
        *v = b.bytes;
    }

    #[inline]
    fn room(&mut self, n: usize) {
        self.room_at(self.pos, n);
    }

    /// Makes `n` bytes of room from `at` on (the buffer holds a whole row, however long).
    #[inline]
    fn room_at(&mut self, at: usize, n: usize) {
        if self.bytes.len() - at < n {
            self.grow(at + n);
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, len: usize) {
        self.bytes.resize(len, 0);
    }

    #[inline]
    fn put(&mut self, s: &[u8]) {
        self.room(s.len());
        self.bytes[self.pos..self.pos + s.len()].copy_from_slice(s);
        self.pos += s.len();
    }

    #[inline]
    fn key(&mut self, k: &EncodedKey) {
        self.room(32 + k.rest.len());
        self.bytes[self.pos..self.pos + 32].copy_from_slice(&k.head);
        if !k.rest.is_empty() {
            self.bytes[self.pos + 32..self.pos + 32 + k.rest.len()].copy_from_slice(&k.rest);
        }
        self.pos += k.len;
    }

    /// Decimal digits without going through `fmt`: the length first, then stored in place from
    /// the last digit, eight at a time (four pairs that do not wait on each other), then pairs.
    #[inline]
    fn int(&mut self, v: i64) {
        let mut n = v.unsigned_abs();
        let len = (v < 0) as usize + n.checked_ilog10().map_or(1, |d| d as usize + 1);
        self.room(len);
        let out = &mut self.bytes[self.pos..self.pos + len];
        out[0] = b'-'; // a digit overwrites it when `v` is not negative
        let mut i = len;
        while n >= 100_000_000 {
            let r = (n % 100_000_000) as u32;
            n /= 100_000_000;
            let (hi, lo) = (r / 10_000, r % 10_000);
            for (k, p) in [lo % 100, lo / 100, hi % 100, hi / 100].into_iter().enumerate() {
                let d = p as usize * 2;
                out[i - 2 * k - 2..i - 2 * k].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
            }
            i -= 8;
        }
        let mut n = n as u32;
        while n >= 100 {
            let d = (n % 100) as usize * 2;
            n /= 100;
            i -= 2;
            out[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
        }
        if n >= 10 {
            let d = n as usize * 2;
            out[i - 2..i].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
        } else {
            out[i - 1] = b'0' + n as u8;
        }
        self.pos += len;
    }

    /// A float as the shortest text that reads back to the same bits; non-finite values tagged.
    fn float(&mut self, v: f64) {
        if v.is_nan() {
            self.put(br#"{"$float":"NaN"}"#);
        } else if v.is_infinite() {
            self.put(if v > 0.0 { br#"{"$float":"Infinity"}"# } else { br#"{"$float":"-Infinity"}"# });
        } else {
            // Rust's Display for f64 is the shortest round-trip form but never uses an
            // exponent; Debug uses one when it is shorter (1e300) and always keeps a ".0".
            let _ = write!(self, "{v:?}");
        }
    }

    /// `s` as a JSON string with the escapes JSON requires (and nothing else escaped); returns
    /// whether any byte was not ASCII (so a caller holding unchecked text knows to validate it).
    #[inline]
    fn string(&mut self, s: &[u8]) -> bool {
        // Room for `s` unescaped and its quotes; escape_byte makes more as it needs.
        self.room(s.len() + 2);
        self.bytes[self.pos] = b'"';
        let (at, seen) = self.string_body(self.pos + 1, s);
        self.bytes[at] = b'"';
        self.pos = at + 1;
        seen & HIGH_BITS != 0
    }

    /// Stores `s` escaped at `at`; returns the next position and every byte ORed (its high
    /// bit says "not ASCII"). Whole words at a time where none needs an escape: below 16
    /// bytes, two words that overlap; above, 16 bytes a time and the last 16 overlapping what
    /// went before (when none of those needs an escape, the overlap went out verbatim just
    /// before `at`, so storing it again is exact).
    #[inline]
    fn string_body(&mut self, at: usize, s: &[u8]) -> (usize, u64) {
        let n = s.len();
        if n < 4 {
            return (self.escape_run(at, s, n), s.iter().fold(0, |seen, &c| seen | c as u64));
        }
        if n < 8 {
            let (a, b) = (half(&s[..4]), half(&s[n - 4..]));
            let w = a as u64 | (b as u64) << 32;
            if hits(w) != 0 {
                return (self.escape_run(at, s, n), w);
            }
            self.bytes[at..at + 4].copy_from_slice(&s[..4]);
            self.bytes[at + n - 4..at + n].copy_from_slice(&s[n - 4..]);
            return (at + n, w);
        }
        if n < 16 {
            let (a, b) = (word(&s[..8]), word(&s[n - 8..]));
            if hits(a) | hits(b) != 0 {
                return (self.escape_run(at, s, n), a | b);
            }
            self.bytes[at..at + 8].copy_from_slice(&s[..8]);
            self.bytes[at + n - 8..at + n].copy_from_slice(&s[n - 8..]);
            return (at + n, a | b);
        }
        let mut at = at;
        let mut seen = 0;
        let mut chunks = s.chunks_exact(16);
        for (k, chunk) in chunks.by_ref().enumerate() {
            let (a, b) = (word(&chunk[..8]), word(&chunk[8..]));
            seen |= a | b;
            if hits(a) | hits(b) != 0 {
                at = self.escape_run(at, chunk, n - 16 * k);
            } else {
                self.bytes[at..at + 16].copy_from_slice(chunk);
                at += 16;
            }
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let last = &s[n - 16..];
            let (a, b) = (word(&last[..8]), word(&last[8..]));
            seen |= a | b;
            if hits(a) | hits(b) != 0 {
                at = self.escape_run(at, rest, rest.len());
            } else {
                let back = 16 - rest.len();
                self.bytes[at - back..at - back + 16].copy_from_slice(last);
                at += rest.len();
            }
        }
        (at, seen)
    }

    /// Stores `run` byte by byte, escaping what JSON requires; `left` (at least the bytes of
    /// the string still to come, from the run's start) keeps room for them and the quote.
    #[inline(never)]
    fn escape_run(&mut self, mut at: usize, run: &[u8], left: usize) -> usize {
        for (j, &c) in run.iter().enumerate() {
            at = self.escape_byte(at, c, left - j);
        }
        at
    }

    /// Stores byte `c` at `at`, escaped if JSON requires; `left` counts it and the bytes after
    /// it. Returns the next position.
    #[inline]
    fn escape_byte(&mut self, at: usize, c: u8, left: usize) -> usize {
        match ESCAPE[c as usize] {
            0 => {
                self.bytes[at] = c;
                at + 1
            }
            e => {
                self.room_at(at, left + 6);
                if e == b'u' {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    let esc = [b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]];
                    self.bytes[at..at + 6].copy_from_slice(&esc);
                    at + 6
                } else {
                    self.bytes[at..at + 2].copy_from_slice(&[b'\\', e]);
                    at + 2
                }
            }
        }
    }

    /// The bytes form: `{"$base64":true,"encoded":"..."}`.
    fn bytes_form(&mut self, v: &[u8]) {
        self.put(br#"{"$base64":true,"encoded":""#);
        self.base64(v);
        self.put(b"\"}");
    }

    /// Standard base64 with padding (RFC 4648 section 4), the alphabet sqlite-utils uses.
    fn base64(&mut self, v: &[u8]) {
        use base64::Engine;
        let n = base64::encoded_len(v.len(), true).expect("a length that fits in memory");
        self.room(n);
        base64::engine::general_purpose::STANDARD
            .encode_slice(v, &mut self.bytes[self.pos..self.pos + n])
            .expect("sized for it");
        self.pos += n;
    }

    fn value(&mut self, v: &Value) {
        serde_json::to_writer(&mut *self, v).expect("writing JSON to memory cannot fail");
    }
}

impl Write for Buf {
    fn write(&mut self, s: &[u8]) -> std::io::Result<usize> {
        self.put(s);
        Ok(s.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decimal digits of an integer without going through `fmt`.
pub fn write_i64(buf: &mut Vec<u8>, v: i64) {
    Buf::append_to(buf, |b| b.int(v));
}

/// A JSON string with the escapes JSON requires (and nothing else escaped).
pub fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    Buf::append_to(buf, |b| {
        b.string(s.as_bytes());
    });
}

/// What a byte becomes inside a JSON string: 0 itself, b'u' `\u00XX`, else `\` and this byte.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

// The bytes a JSON string must escape, as the reader finds them (one definition for both halves).
use crate::jsonscan::{special_bytes as hits, HIGH_BITS};

#[inline]
fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("eight bytes"))
}

#[inline]
fn half(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("four bytes"))
}

/// A float as the shortest text that reads back to the same bits; non-finite values tagged.
pub fn write_json_f64(buf: &mut Vec<u8>, v: f64) {
    Buf::append_to(buf, |b| b.float(v));
}

/// The bytes form: `{"$base64":true,"encoded":"..."}`.
pub fn write_bytes_form(buf: &mut Vec<u8>, v: &[u8]) {
    Buf::append_to(buf, |b| b.bytes_form(v));
}

/// The bytes form as a `Value` (for producers that build nested values).
pub fn bytes_value(v: &[u8]) -> Value {
    let mut m = Map::new();
    m.insert("$base64".into(), Value::Bool(true));
    m.insert("encoded".into(), Value::String(base64_encode(v)));
    Value::Object(m)
}

/// A float as a `Value`: a number when finite, the `$float` tag otherwise.
pub fn float_value(v: f64) -> Value {
    if v.is_finite() {
        let mut s = Vec::new();
        write_json_f64(&mut s, v);
        serde_json::from_slice(&s).expect("a finite float is a JSON number")
    } else {
        let tag = if v.is_nan() {
            "NaN"
        } else if v > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        };
        let mut m = Map::new();
        m.insert("$float".into(), Value::String(tag.into()));
        Value::Object(m)
    }
}

// ---------------------------------------------------------------- tagged forms

/// If `v` is the bytes form, its decoded bytes. `Err` when it is the form but malformed.
pub fn as_bytes_form(v: &Value) -> Option<std::result::Result<Vec<u8>, String>> {
    let m = v.as_object()?;
    if m.len() != 2 || m.get("$base64") != Some(&Value::Bool(true)) {
        return None;
    }
    let enc = m.get("encoded")?.as_str()?;
    Some(base64_decode(enc))
}

/// If `v` is the non-finite float form, its value.
pub fn as_float_form(v: &Value) -> Option<std::result::Result<f64, String>> {
    let m = v.as_object()?;
    if m.len() != 1 {
        return None;
    }
    let tag = m.get("$float")?;
    Some(match tag.as_str() {
        Some("NaN") => Ok(f64::NAN),
        Some("Infinity") => Ok(f64::INFINITY),
        Some("-Infinity") => Ok(f64::NEG_INFINITY),
        _ => Err(format!("unknown $float tag {tag}")),
    })
}

/// Standard base64 with padding (RFC 4648 section 4), the alphabet sqlite-utils uses.
pub fn base64_encode_into(out: &mut Vec<u8>, data: &[u8]) {
    Buf::append_to(out, |b| b.base64(data));
}

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = Vec::new();
    base64_encode_into(&mut out, data);
    String::from_utf8(out).expect("base64 is ascii")
}

/// Decodes standard base64; padding optional, but when present exactly what RFC 4648 puts
/// there; whitespace, other alphabets and nonzero bits after the last byte (text no encoder
/// writes: two such texts would decode to the same bytes) refused.
pub fn base64_decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
    use base64::{DecodeError, Engine};
    const DECODER: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let data = s.trim_end_matches('=');
    let pad = s.len() - data.len();
    if pad > 0 && (pad > 2 || !s.len().is_multiple_of(4)) {
        return Err(format!(
            "bad padding: {pad} '=' after {} characters (base64 pads to a multiple of 4 characters)",
            data.len()
        ));
    }
    DECODER.decode(data).map_err(|e| match e {
        DecodeError::InvalidByte(i, c) => format!("invalid base64 character {:?} at offset {i}", c as char),
        DecodeError::InvalidLength(_) => "truncated base64".to_string(),
        DecodeError::InvalidLastSymbol(i, c) => format!(
            "the character {:?} at offset {i} leaves nonzero bits after the last byte: not base64 an encoder \
             writes (a damaged value?)",
            c as char
        ),
        other => format!("invalid base64: {other}"),
    })
}

// ---------------------------------------------------------------- reading

/// The key of a table record: `{"$table": {"step": …, "target": …}}` (docs/stream.md §7).
pub const TABLE_KEY: &str = "$table";

/// The stream versions this reader knows (docs/stream.md §6.2).
pub const VERSION: u64 = 1;

/// The end record a producer wrote.
#[derive(Debug, Clone)]
pub struct EndRecord {
    pub rows: u64,
    pub fields: Map<String, Value>,
}

/// The record that opens one table's segment of a multi-table stream (docs/stream.md §7).
#[derive(Debug, Clone)]
pub struct TableRecord {
    pub line: u64,
    pub step: String,
    pub target: Option<String>,
}

/// One row read from the stream, with the line it came from (1-based).
pub struct Row {
    pub line: u64,
    pub fields: Map<String, Value>,
}

/// A row's keys (unescaped; borrowed unless they had escapes) and raw JSON values, borrowed
/// from its line.
pub type Fields<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// Reads a stream line by line, enforcing docs/stream.md: one object per line, blank lines
/// skipped, the end record last, its count equal to the rows read.
///
/// A segmented reader ([`RowReader::segmented`]) reads the multi-table stream of §7: one
/// segment per table, each opened by [`RowReader::begin_segment`] and ended by its end record
/// (or, for a foreign stream, by the next table record or EOF); line numbers run across the
/// whole stream.
pub struct RowReader<R: BufRead> {
    input: R,
    line: u64,
    rows: u64,
    buf: Vec<u8>,
    end: Option<EndRecord>,
    require_end: bool,
    /// EOF was reached.
    eof: bool,
    /// The current segment is over (its end record, or the next table record, was read).
    seg_done: bool,
    /// `buf` holds a line already counted but not yet consumed (the next segment's table record).
    held: bool,
    segmented: bool,
    table: Option<TableRecord>,
    expect_step: Option<String>,
}

/// `read_until(b'\n')` into `buf` until it holds `limit` bytes; the bytes read. The newline is
/// looked for with the memchr crate's vector search: std's word-at-a-time search was 8% of
/// pg-load's CPU on 220-byte lines.
fn read_until_newline<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, limit: usize) -> std::io::Result<usize> {
    let mut read = 0;
    while buf.len() < limit {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            break;
        }
        let chunk = &avail[..avail.len().min(limit - buf.len())];
        let (used, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        buf.extend_from_slice(&chunk[..used]);
        r.consume(used);
        read += used;
        if done {
            break;
        }
    }
    Ok(read)
}

impl<R: BufRead> RowReader<R> {
    /// `require_end: false` accepts foreign streams that have no end record.
    pub fn new(input: R, require_end: bool) -> Self {
        RowReader {
            input,
            line: 0,
            rows: 0,
            buf: Vec::with_capacity(4096),
            end: None,
            require_end,
            eof: false,
            seg_done: false,
            held: false,
            segmented: false,
            table: None,
            expect_step: None,
        }
    }

    /// A reader of several tables' segments; call [`begin_segment`](Self::begin_segment) before each.
    pub fn segmented(input: R) -> Self {
        let mut r = RowReader::new(input, true);
        r.segmented = true;
        r.seg_done = true;
        r
    }

    /// Starts the next segment, expected to belong to `step`: a table record naming another
    /// step is an error. `require_end: false` for a foreign stream without end record.
    pub fn begin_segment(&mut self, step: &str, require_end: bool) {
        self.rows = 0;
        self.end = None;
        self.table = None;
        self.require_end = require_end;
        self.seg_done = false;
        self.expect_step = Some(step.to_string());
    }

    /// After the last segment: only blank lines may be left.
    pub fn finish(&mut self) -> Result<()> {
        loop {
            if !self.held && (self.eof || !self.read_line()?) {
                return Ok(());
            }
            self.held = false;
            if !self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                return Err(Error::Data(format!(
                    "line {}: data after the last step's segment (the stream holds more tables than the steps selected)",
                    self.line
                )));
            }
        }
    }

    /// Rows read so far (in this segment).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The current line number (the line of the last row or record read).
    pub fn line(&self) -> u64 {
        self.line
    }

    pub fn end_record(&self) -> Option<&EndRecord> {
        self.end.as_ref()
    }

    /// The table record that opened this segment, if it had one.
    pub fn table_record(&self) -> Option<&TableRecord> {
        self.table.as_ref()
    }

    /// The next row; `Ok(None)` after a valid end (the end record, or EOF when not required).
    pub fn next_row(&mut self) -> Result<Option<Row>> {
        match self.next_raw()? {
            None => Ok(None),
            Some((line, text)) => Ok(Some(Row { line, fields: parse_row(text, line)? })),
        }
    }

    /// Reads one line into `buf`; false at EOF. A line is at most [`MAX_LINE`] bytes, and one
    /// whose first 64 KiB do not start an object is refused then (`/dev/zero`, a binary file
    /// piped by mistake), so input that is not lines cannot take all memory first.
    fn read_line(&mut self) -> Result<bool> {
        self.buf.clear();
        let line = self.line + 1;
        let read = |r: &mut R, buf: &mut Vec<u8>, limit: usize| {
            read_until_newline(r, buf, limit).map_err(|e| Error::io(format!("line {line}: read stdin"), e))
        };
        let mut n = read(&mut self.input, &mut self.buf, PEEK_LINE)?;
        if self.buf.len() == PEEK_LINE && self.buf.last() != Some(&b'\n') {
            if let Some(&c) = self.buf.iter().find(|c| !c.is_ascii_whitespace()) {
                if c != b'{' {
                    return Err(not_lines(line, &self.buf));
                }
            }
            n += read(&mut self.input, &mut self.buf, MAX_LINE)?;
            if self.buf.len() == MAX_LINE && self.buf.last() != Some(&b'\n') {
                return Err(Error::Data(format!(
                    "line {line} is longer than {} GiB, more than PostgreSQL stores in one row: is the input a \
                     stream of lines?",
                    MAX_LINE >> 30
                )));
            }
        }
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.line = line;
        // A byte order mark (which Windows tools write) before the first line is not data
        // (docs/stream.md §1.7).
        if line == 1 && self.buf.starts_with(BOM) {
            self.buf.drain(..BOM.len());
        }
        Ok(true)
    }

    /// The next row as its line's text (UTF-8 checked, JSON not yet parsed), with every stream
    /// rule but the row's own JSON checked: truncation, blank lines, the end record and its count.
    pub fn next_raw(&mut self) -> Result<Option<(u64, &str)>> {
        if self.seg_done || (self.eof && !self.held) {
            return Ok(None);
        }
        loop {
            if !self.held && !self.read_line()? {
                self.seg_done = true;
                return self.at_eof().map(|_| None);
            }
            self.held = false;
            if self.buf.last() != Some(&b'\n') && self.end.is_none() && self.require_end {
                // A last line without its newline: the producer was cut off mid-line.
                return Err(Error::Data(format!(
                    "line {}: the stream ends in the middle of a line (truncated after {} rows)",
                    self.line, self.rows
                )));
            }
            if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            if self.buf.starts_with(BOM) {
                return Err(Error::Data(format!(
                    "line {}: starts with a UTF-8 byte order mark (EF BB BF), which only the stream's first line may \
                     have: files concatenated?",
                    self.line
                )));
            }
            if self.end.is_some() {
                return Err(Error::Data(format!(
                    "line {}: data after the end record (two streams concatenated?)",
                    self.line
                )));
            }
            match may_be_record(&self.buf) {
                Some(Record::End) => {
                    let text = std::str::from_utf8(&self.buf).map_err(|e| invalid_utf8(self.line, &self.buf, &e))?;
                    if let Some(end) = end_record(text, self.line)? {
                        if end.rows != self.rows {
                            return Err(Error::Data(format!(
                                "line {}: the end record says {} rows but {} were read",
                                self.line, end.rows, self.rows
                            )));
                        }
                        self.end = Some(end);
                        if self.segmented {
                            self.seg_done = true;
                            return Ok(None);
                        }
                        continue; // only blank lines may follow
                    }
                }
                Some(Record::Table) => {
                    let text = std::str::from_utf8(&self.buf).map_err(|e| invalid_utf8(self.line, &self.buf, &e))?;
                    if let Some(t) = table_record(text, self.line)? {
                        if self.rows == 0 && self.table.is_none() {
                            if let Some(want) = self.expect_step.as_deref().filter(|w| *w != t.step) {
                                return Err(Error::Data(format!(
                                    "line {}: the table record names step '{}' where step '{want}' was expected \
                                     (the stream's tables are not in the plan's order, or a step is missing)",
                                    self.line, t.step
                                )));
                            }
                            self.table = Some(t);
                            continue;
                        }
                        if !self.segmented {
                            return Err(Error::Data(format!(
                                "line {}: a table record (step '{}') after this table's rows: several tables' \
                                 streams concatenated? (load them with pg-load --plan)",
                                self.line, t.step
                            )));
                        }
                        if self.require_end {
                            return Err(Error::Data(format!(
                                "line {}: step '{}' begins before this step's end record: its producer stopped \
                                 early (truncated after {} rows)",
                                self.line, t.step, self.rows
                            )));
                        }
                        // A foreign stream ends at the next table record, which opens the next segment.
                        self.held = true;
                        self.seg_done = true;
                        return Ok(None);
                    }
                }
                None => {}
            }
            break;
        }
        // Checked once here, after the loop, so the text can be lent out.
        let text = std::str::from_utf8(&self.buf).map_err(|e| invalid_utf8(self.line, &self.buf, &e))?;
        self.rows += 1;
        Ok(Some((self.line, text)))
    }

    fn at_eof(&mut self) -> Result<()> {
        if self.end.is_none() && self.require_end {
            return Err(Error::Data(format!(
                "the stream ended after {} rows without its end record: the producer stopped early \
                 (killed or failed); use --no-end-record only for foreign streams that never have one",
                self.rows
            )));
        }
        Ok(())
    }
}

/// The longest line read: PostgreSQL stores no value, and no row, of 1 GB or more.
const MAX_LINE: usize = 1 << 30;
/// What is read of a line before its first byte must have shown it to be an object.
const PEEK_LINE: usize = 1 << 16;
/// UTF-8's byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The error for a long line that does not start an object.
fn not_lines(line: u64, buf: &[u8]) -> Error {
    let start = buf.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(0);
    let hex: Vec<String> = buf[start..].iter().take(8).map(|b| format!("{b:02x}")).collect();
    Error::Data(format!(
        "line {line}: not a JSON object (its first bytes are {}) and no line end in {} KiB: is the input an NDJSON \
         stream?",
        hex.join(" "),
        PEEK_LINE >> 10
    ))
}

enum Record {
    End,
    Table,
}

/// Whether a line could be the end record or a table record: `{` then `"$end"` or `"$table"`
/// after optional whitespace.
fn may_be_record(line: &[u8]) -> Option<Record> {
    let mut i = 0;
    while i < line.len() && line[i].is_ascii_whitespace() {
        i += 1;
    }
    if line.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    while i < line.len() && line[i].is_ascii_whitespace() {
        i += 1;
    }
    if line[i..].starts_with(b"\"$end\"") {
        Some(Record::End)
    } else if line[i..].starts_with(b"\"$table\"") {
        Some(Record::Table)
    } else {
        None
    }
}

/// Parses one line as a JSON object, with a line-numbered error.
pub fn parse_object(line: &[u8], line_no: u64) -> Result<Map<String, Value>> {
    match std::str::from_utf8(line) {
        Ok(text) => parse_row(text, line_no),
        Err(e) => Err(invalid_utf8(line_no, line, &e)),
    }
}

/// The error for a line that is not UTF-8, naming the bytes and the key whose value (or the
/// key) holds them, when the line reads as an object with them replaced.
fn invalid_utf8(line_no: u64, line: &[u8], e: &std::str::Utf8Error) -> Error {
    let at = e.valid_up_to();
    let bad = &line[at..at + e.error_len().unwrap_or(line.len() - at).min(4)];
    let hex: Vec<String> = bad.iter().map(|b| format!("{b:02x}")).collect();
    // The text before `at` is valid and kept as is, so offsets below `at` agree.
    let lossy = String::from_utf8_lossy(line);
    let mut members = vec![];
    let place = match crate::jsonscan::scan_object(&lossy, &mut members) {
        Ok(()) => members.iter().find_map(|m| {
            let key = || lossy[m.key.clone()].to_string();
            if m.value.contains(&at) {
                Some(format!(", in the value of column '{}'", key()))
            } else if (m.key.start..m.key.end + 1).contains(&at) {
                Some(format!(", in the key {}", snippet(&key(), 40)))
            } else {
                None
            }
        }),
        Err(_) => None,
    };
    Error::Data(format!(
        "line {line_no}: invalid UTF-8 at byte {} of the line (bytes {}){}: the stream must be UTF-8 (a source in \
         another encoding, such as Latin-1, needs converting first)",
        at + 1,
        hex.join(" "),
        place.unwrap_or_default()
    ))
}

/// A key that repeats within a row: always an error (docs/stream.md §2.3), never "the last
/// one wins".
pub fn repeated_key(line: u64, key: &str) -> Error {
    duplicate_key(line, key, "the row")
}

fn duplicate_key(line: u64, key: &str, what: &str) -> Error {
    let mut k = Vec::new();
    write_json_str(&mut k, key);
    Error::Data(format!(
        "line {line}: key {} appears twice in {what} (docs/stream.md §2.3: a key must not repeat)",
        String::from_utf8_lossy(&k)
    ))
}

/// The first key that appears twice within one object anywhere in `text` (a JSON value),
/// as its path from the top (`partitioned.keep`); `None` when no key repeats or the text is
/// not JSON (its parser says why). serde_json's `Value` silently keeps the last of a
/// repeated key: files people write by hand (plans) are checked with this first.
pub fn first_repeated_key(text: &str) -> Option<String> {
    struct Walk<'p>(&'p str);
    impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_> {
        type Value = Option<String>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> serde::de::Visitor<'de> for Walk<'_> {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> std::result::Result<Self::Value, M::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut found = None;
            while let Some(k) = m.next_key::<String>()? {
                let path = if self.0.is_empty() { k.clone() } else { format!("{}.{k}", self.0) };
                let inner = m.next_value_seed(Walk(&path))?;
                if found.is_none() {
                    found = if seen.contains(&k) { Some(path) } else { inner };
                }
                seen.insert(k);
            }
            Ok(found)
        }
        fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut s: S) -> std::result::Result<Self::Value, S::Error> {
            let mut found = None;
            while let Some(inner) = s.next_element_seed(Walk(self.0))? {
                found = found.or(inner);
            }
            Ok(found)
        }
        fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde::de::DeserializeSeed::deserialize(Walk(""), &mut de).ok().flatten()
}

/// A key as `Cow`: borrowed from the line unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A line's keys and raw JSON values, borrowed from it (`what`: the row, the record). A key
/// that repeats is an error naming the line; so is anything but an object.
fn parse_fields_of<'a>(text: &'a str, line: u64, what: &str) -> Result<Fields<'a>> {
    let pairs = parse_pairs(text, line)?;
    // A set, not pairwise: a hostile line can hold 100,000 keys.
    let mut seen = std::collections::HashSet::with_capacity(pairs.len());
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !seen.insert(k.as_ref())) {
        return Err(duplicate_key(line, k, what));
    }
    Ok(pairs)
}

/// A line's keys and raw values, repeats not checked.
fn parse_pairs<'a>(text: &'a str, line: u64) -> Result<Fields<'a>> {
    struct Pairs;
    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = Fields<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> std::result::Result<Self::Value, M::Error> {
            let mut out = Vec::with_capacity(16);
            while let Some(Key(k)) = m.next_key::<Key<'de>>()? {
                out.push((k, m.next_value::<&'de RawValue>()?));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = serde::Deserializer::deserialize_map(&mut de, Pairs).and_then(|p| de.end().map(|_| p));
    match parsed {
        Ok(p) => Ok(p),
        // The general parser words the error (malformed JSON at column …, not an object).
        Err(_) => Err(malformed(text, line)),
    }
}

/// The error for a line a fast reader refused: the general parser words it (malformed JSON at
/// column …, not an object).
pub fn malformed(text: &str, line: u64) -> Error {
    match parse_row(text, line) {
        Err(e) => e,
        Ok(_) => Error::Data(format!("line {line}: malformed JSON; the line starts {}", snippet(text, 40))),
    }
}

/// Parses one line's text as a JSON object, with a line-numbered error; a key that repeats
/// is an error.
pub fn parse_row(line: &str, line_no: u64) -> Result<Map<String, Value>> {
    parse_map(line, line_no, "the row")
}

fn parse_map(line: &str, line_no: u64, what: &str) -> Result<Map<String, Value>> {
    struct Obj<'a>(&'a mut Option<String>);
    impl<'de> serde::de::Visitor<'de> for Obj<'_> {
        type Value = Map<String, Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> std::result::Result<Self::Value, M::Error> {
            let mut out = Map::new();
            while let Some(k) = m.next_key::<String>()? {
                let v: Value = m.next_value()?;
                match out.entry(k) {
                    serde_json::map::Entry::Vacant(e) => {
                        e.insert(v);
                    }
                    serde_json::map::Entry::Occupied(e) => {
                        *self.0 = Some(e.key().clone());
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                }
            }
            Ok(out)
        }
    }
    let mut dup = None;
    let mut de = serde_json::Deserializer::from_str(line);
    let parsed = serde::Deserializer::deserialize_map(&mut de, Obj(&mut dup)).and_then(|m| de.end().map(|_| m));
    match parsed {
        Ok(m) => Ok(m),
        Err(_) if dup.is_some() => Err(duplicate_key(line_no, dup.as_deref().unwrap_or(""), what)),
        Err(_) => match serde_json::from_str::<Value>(line) {
            Ok(other) => {
                Err(Error::Data(format!("line {line_no}: expected a JSON object, found {}", kind_name(&other))))
            }
            Err(e) => Err(Error::Data(format!(
                "line {line_no}: malformed JSON {}: {}; the line starts {}",
                // The text handed in may end with its newline: serde then places an error
                // past the line's end on "line 2, column 0".
                if e.is_eof() || e.line() > 1 {
                    "at the end of the line".to_string()
                } else {
                    format!("at column {}", e.column())
                },
                json_err_cause(&e),
                snippet(line, 40)
            ))),
        },
    }
}

fn json_err_cause(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The one member of a line that may be a record (`{"$end": …}`, `{"$table": …}`); `None`
/// when the line has other keys too (it is then a row).
fn only_member<'a>(text: &'a str, line: u64, key: &str) -> Result<Option<&'a RawValue>> {
    let fields = parse_fields_of(text, line, "the record")?;
    Ok(match fields.as_slice() {
        [(k, v)] if k == key => Some(*v),
        _ => None,
    })
}

/// If the line is an end record, parses it (a repeated member and an unknown version are errors).
fn end_record(text: &str, line: u64) -> Result<Option<EndRecord>> {
    let Some(raw) = only_member(text, line, END_KEY)? else { return Ok(None) };
    if !raw.get().trim_start().starts_with('{') {
        return Err(Error::Data(format!("line {line}: the end record's \"$end\" is not an object")));
    }
    let m = parse_map(raw.get(), line, "the end record")?;
    if let Some(v) = m.get("version") {
        if v.as_u64() != Some(VERSION) {
            return Err(Error::Data(format!(
                "line {line}: the stream says it is version {v}; this reader knows version {VERSION} only \
                 (docs/stream.md §6.2): use a pgferry that reads it"
            )));
        }
    }
    let Some(rows) = m.get("rows").and_then(Value::as_u64) else {
        return Err(Error::Data(format!("line {line}: the end record has no \"rows\" count")));
    };
    Ok(Some(EndRecord { rows, fields: m }))
}

/// If the line is a table record, parses it.
fn table_record(text: &str, line: u64) -> Result<Option<TableRecord>> {
    let Some(raw) = only_member(text, line, TABLE_KEY)? else { return Ok(None) };
    if !raw.get().trim_start().starts_with('{') {
        return Err(Error::Data(format!("line {line}: the table record's \"$table\" is not an object")));
    }
    let m = parse_map(raw.get(), line, "the table record")?;
    let Some(step) = m.get("step").and_then(Value::as_str) else {
        return Err(Error::Data(format!("line {line}: the table record has no \"step\" name")));
    };
    let target = m.get("target").and_then(Value::as_str).map(str::to_string);
    Ok(Some(TableRecord { line, step: step.to_string(), target }))
}

/// "a string", "an array" ... for messages.
pub fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value shortened for an error message, as JSON.
pub fn snippet(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    let mut buf = Vec::new();
    write_json_str(&mut buf, &out);
    String::from_utf8(buf).expect("utf-8 in, utf-8 out")
}

/// A JSON value shortened for an error message.
pub fn value_snippet(v: &Value) -> String {
    match v {
        Value::String(s) => snippet(s, 60),
        other => json_snippet(other.to_string()),
    }
}

/// JSON text for a message: its first 60 characters, then `…`.
pub fn json_snippet(t: String) -> String {
    if t.chars().count() > 60 {
        let cut: String = t.chars().take(60).collect();
        format!("{cut}…")
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: impl AsRef<[u8]>, require_end: bool) -> Result<Vec<u64>> {
        let mut r = RowReader::new(input.as_ref(), require_end);
        let mut lines = vec![];
        while let Some(row) = r.next_row()? {
            lines.push(row.line);
        }
        Ok(lines)
    }

    #[test]
    fn malformed_json_past_the_line_end_says_so() {
        for text in ["{\"a\":1\n", "{\"a\":\n", "{\n", "{\"a\":\"x\n", "{\"a\":1"] {
            let e = parse_row(text, 3).unwrap_err().message().to_string();
            assert!(
                e.starts_with("line 3: malformed JSON at the end of the line: EOF")
                    || e.starts_with("line 3: malformed JSON at the end of the line: control"),
                "{text:?}: {e}"
            );
        }
        let e = parse_row("{\"a\":1,}\n", 3).unwrap_err().message().to_string();
        assert!(e.starts_with("line 3: malformed JSON at column 8: trailing comma"), "{e}");
    }

    #[test]
    fn a_repeated_key_is_found_at_any_depth_with_its_path() {
        assert_eq!(first_repeated_key(r#"{"a":1,"b":2}"#), None);
        assert_eq!(first_repeated_key(r#"{"a":1,"b":2,"a":3}"#).as_deref(), Some("a"));
        assert_eq!(first_repeated_key(r#"{"p":{"k":1,"k":2},"a":1,"a":2}"#).as_deref(), Some("p.k"));
        assert_eq!(first_repeated_key(r#"{"a":[{"x":1},{"x":2,"x":3}]}"#).as_deref(), Some("a.x"));
        assert_eq!(first_repeated_key(r#"{"a":{"x":1},"b":{"x":2}}"#), None);
        assert_eq!(first_repeated_key("{nope"), None);
    }

    #[test]
    fn base64_round_trips_every_length() {
        for len in 0..70 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let enc = base64_encode(&data);
            assert_eq!(enc.len() % 4, 0);
            assert_eq!(base64_decode(&enc).unwrap(), data);
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert!(base64_decode("aGV$").is_err());
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let mut b = Vec::new();
        write_json_str(&mut b, "a\"b\\c\n\u{1}é\u{7f}");
        assert_eq!(String::from_utf8(b).unwrap(), "\"a\\\"b\\\\c\\n\\u0001é\u{7f}\"");
        for s in ["", "tab\tcr\r", "\u{0}", "💥", "\u{2028}"] {
            let mut b = Vec::new();
            write_json_str(&mut b, s);
            let back: String = serde_json::from_slice(&b).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn strings_escape_exactly_as_serde_json_at_every_offset() {
        // Every ASCII byte at every position of strings up to five words long (each length
        // class: bytes, overlapping halves, overlapping words, 16-byte chunks and the
        // overlapping last chunk), and non-ASCII text around escapes.
        for len in 1..=40 {
            for at in 0..len {
                for b in 0u8..0x80 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    let s = String::from_utf8(s).unwrap();
                    let mut out = Vec::new();
                    write_json_str(&mut out, &s);
                    assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
        // Strings of mixed escapes, ASCII and multi-byte characters, of random lengths.
        let pool = ['a', 'b', '"', '\\', '\n', '\u{1}', '\u{1f}', ' ', '~', '\u{7f}', 'é', '€', '🙂', '\u{2028}'];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = next() % 70;
            // Mostly plain text, so that long clean runs meet escapes at every distance.
            let s: String = (0..len)
                .map(|_| if next() % 4 == 0 { pool[(next() % pool.len() as u64) as usize] } else { 'x' })
                .collect();
            let mut out = Vec::new();
            write_json_str(&mut out, &s);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
        }
        for s in ["é\"🙂\u{7f}\n", "\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}", "ab\\cdefgh\"ijklmnop\u{1}"] {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn rows_larger_than_the_buffer_are_written_whole() {
        // Every byte escaped six-fold, a row several times the writer's buffer, then a small
        // row: the buffer grows for the row and the output is exactly serde_json's.
        let big: String = (0..BUF_LEN).map(|i| char::from((i % 32) as u8)).collect();
        let mut w = RowWriter::new(Vec::new());
        for v in [big.as_str(), "after"] {
            w.begin_row();
            w.key("k\u{1}");
            w.str(v);
            w.key("n");
            w.int(-1);
            w.end_row().unwrap();
        }
        let out = w.finish(&[]).unwrap();
        let want = [big.as_str(), "after"]
            .iter()
            .map(|v| format!("{{\"k\\u0001\":{},\"n\":-1}}\n", serde_json::to_string(v).unwrap()))
            .collect::<String>()
            + "{\"$end\":{\"rows\":2}}\n";
        assert!(out == want.as_bytes(), "output differs from serde_json's");
    }

    #[test]
    fn encoded_keys_of_every_length() {
        for len in 0..80 {
            let key: String = (0..len).map(|i| if i % 7 == 3 { '"' } else { 'k' }).collect();
            let mut w = RowWriter::new(Vec::new());
            w.begin_row();
            w.encoded_key(&encode_key(&key));
            w.null();
            w.encoded_key(&encode_key("b"));
            w.bool(true);
            w.end_row().unwrap();
            let out = String::from_utf8(w.finish(&[]).unwrap()).unwrap();
            let want =
                format!("{{{}:null,\"b\":true}}\n{{\"$end\":{{\"rows\":1}}}}\n", serde_json::to_string(&key).unwrap());
            assert_eq!(out, want);
        }
    }

    #[test]
    fn text_is_checked_for_utf8_and_nothing_written_when_it_is_not() {
        let mut w = RowWriter::new(Vec::new());
        w.begin_row();
        w.key("a");
        w.text("plain ascii, longer than a word".as_bytes()).unwrap();
        w.key("b");
        w.text("é in the middle of a long-enough string".as_bytes()).unwrap();
        w.key("c");
        let bad = b"sixteen bytes ok\xc3\x28 and then more";
        let e = w.text(bad).unwrap_err();
        assert_eq!(e.valid_up_to(), 16);
        let e = w.text(b"\xff").unwrap_err();
        assert_eq!(e.valid_up_to(), 0);
        w.bytes(bad);
        w.end_row().unwrap();
        let out = String::from_utf8(w.finish(&[]).unwrap()).unwrap();
        assert_eq!(
            out,
            "{\"a\":\"plain ascii, longer than a word\",\"b\":\"é in the middle of a long-enough string\",\
             \"c\":{\"$base64\":true,\"encoded\":\"c2l4dGVlbiBieXRlcyBva8MoIGFuZCB0aGVuIG1vcmU=\"}}\n\
             {\"$end\":{\"rows\":1}}\n"
        );
    }

    #[test]
    fn integers_without_fmt() {
        let mut edges = vec![0, 7, -7, 10, i64::MAX, i64::MIN, i64::MIN + 1, 1234567890];
        for k in 1..19 {
            let p = 10i64.pow(k);
            edges.extend([p - 1, p, p + 1, -p + 1, -p, -p - 1]);
        }
        edges.extend(-1000..=1000);
        // Digits of every kind in every position (the eight-digit groups and the pairs).
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            edges.push((x >> (x % 64)) as i64);
        }
        for v in edges {
            let mut b = Vec::new();
            write_i64(&mut b, v);
            assert_eq!(String::from_utf8(b).unwrap(), v.to_string());
        }
    }

    #[test]
    fn floats_are_exact_and_non_finite_tagged() {
        let check = |v: f64, want: &str| {
            let mut b = Vec::new();
            write_json_f64(&mut b, v);
            assert_eq!(String::from_utf8(b).unwrap(), want);
        };
        check(0.1, "0.1");
        check(3.0, "3.0");
        check(-0.0, "-0.0");
        check(1e300, "1e300");
        check(f64::NAN, r#"{"$float":"NaN"}"#);
        check(f64::NEG_INFINITY, r#"{"$float":"-Infinity"}"#);
        for v in [0.1 + 0.2, f64::MIN_POSITIVE, f64::MAX, -1.5e-300, 123456789.123] {
            let mut b = Vec::new();
            write_json_f64(&mut b, v);
            let back: f64 = std::str::from_utf8(&b).unwrap().parse().unwrap();
            assert_eq!(back.to_bits(), v.to_bits());
        }
    }

    #[test]
    fn writer_then_reader_round_trip() {
        let mut w = RowWriter::new(Vec::new());
        w.begin_row();
        w.key("id");
        w.int(i64::MIN);
        w.key("b");
        w.bytes(&[0, 255]);
        w.end_row().unwrap();
        let out = w.finish(&[("table", Value::from("t"))]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "{\"id\":-9223372036854775808,\"b\":{\"$base64\":true,\"encoded\":\"AP8=\"}}\n{\"$end\":{\"rows\":1,\"table\":\"t\"}}\n"
        );
        let mut r = RowReader::new(text.as_bytes(), true);
        let row = r.next_row().unwrap().unwrap();
        assert_eq!(row.fields["id"].as_i64(), Some(i64::MIN));
        assert_eq!(as_bytes_form(&row.fields["b"]).unwrap().unwrap(), vec![0, 255]);
        assert!(r.next_row().unwrap().is_none());
        assert_eq!(r.end_record().unwrap().rows, 1);
    }

    #[test]
    fn repeated_keys_and_unknown_versions_are_errors() {
        let err = |s: &str| read_all(s, true).unwrap_err().message().to_string();
        assert_eq!(
            err("{\"a\":1,\"a\":2}\n{\"$end\":{\"rows\":1}}\n"),
            "line 1: key \"a\" appears twice in the row (docs/stream.md §2.3: a key must not repeat)"
        );
        assert!(err("{\"$end\":{\"rows\":0,\"rows\":0}}\n")
            .starts_with("line 1: key \"rows\" appears twice in the end record"));
        assert!(err("{\"$end\":{\"rows\":0,\"version\":2}}\n").contains("version 2; this reader knows version 1 only"));
        assert!(err("{\"$end\":{\"rows\":0,\"version\":\"1\"}}\n").contains("version \"1\""));
        assert_eq!(read_all("{\"$end\":{\"rows\":0,\"version\":1}}\n", true).unwrap(), Vec::<u64>::new());
        // The borrowed parser: escaped keys unescaped, a repeat found through escapes.
        let f = parse_fields_of(r#"{"a\u0062":1,"c":"x"}"#, 3, "the row").unwrap();
        assert_eq!(f.iter().map(|(k, v)| format!("{k}={}", v.get())).collect::<Vec<_>>(), ["ab=1", "c=\"x\""]);
        assert!(matches!(f[0].0, Cow::Owned(_)) && matches!(f[1].0, Cow::Borrowed(_)));
        let e = parse_fields_of(r#"{"ab":1,"a\u0062":2}"#, 3, "the row").unwrap_err();
        assert!(e.message().starts_with("line 3: key \"ab\" appears twice"), "{}", e.message());
        assert!(parse_fields_of("[1]", 4, "the row")
            .unwrap_err()
            .message()
            .contains("line 4: expected a JSON object, found an array"));
        assert!(parse_fields_of("{\"a\" 1}", 5, "the row")
            .unwrap_err()
            .message()
            .starts_with("line 5: malformed JSON at column"));
    }

    #[test]
    fn segments_of_a_multi_table_stream() {
        let text = "{\"$table\":{\"step\":\"a\",\"target\":\"t1\"}}\n{\"x\":1}\n{\"$end\":{\"rows\":1}}\n\n\
                    {\"y\":1}\n{\"y\":2}\n{\"$end\":{\"rows\":2}}\n\
                    {\"$table\":{\"step\":\"c\"}}\n{\"z\":1}\n\
                    {\"$table\":{\"step\":\"d\"}}\n{\"w\":1}\n";
        let mut r = RowReader::segmented(text.as_bytes());
        let seg = |r: &mut RowReader<&[u8]>, step: &str, end: bool| {
            r.begin_segment(step, end);
            let mut lines = vec![];
            while let Some(row) = r.next_row().unwrap() {
                lines.push(row.line);
            }
            (r.table_record().map(|t| (t.step.clone(), t.target.clone())), lines)
        };
        assert_eq!(seg(&mut r, "a", true), (Some(("a".into(), Some("t1".into()))), vec![2]));
        assert_eq!(seg(&mut r, "b", true), (None, vec![5, 6]));
        assert_eq!(seg(&mut r, "c", false), (Some(("c".into(), None)), vec![9]));
        assert_eq!(seg(&mut r, "d", false), (Some(("d".into(), None)), vec![11]));
        r.finish().unwrap();
        // A table record naming another step, one that cuts a segment short, and data after the last step.
        let err = |text: &str, steps: &[(&str, bool)]| {
            let mut r = RowReader::segmented(text.as_bytes());
            for (step, end) in steps {
                r.begin_segment(step, *end);
                loop {
                    match r.next_row() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => return e.message().to_string(),
                    }
                }
            }
            r.finish().map(|_| String::new()).unwrap_or_else(|e| e.message().to_string())
        };
        assert!(err("{\"$table\":{\"step\":\"b\"}}\n", &[("a", true)])
            .starts_with("line 1: the table record names step 'b' where step 'a' was expected"));
        assert!(err("{\"x\":1}\n{\"$table\":{\"step\":\"b\"}}\n", &[("a", true)])
            .starts_with("line 2: step 'b' begins before this step's end record"));
        assert!(err("{\"$end\":{\"rows\":0}}\n{\"x\":1}\n", &[("a", true)])
            .starts_with("line 2: data after the last step's segment"));
        assert!(err("{\"x\":1}\n", &[("a", true)]).contains("without its end record"));
    }

    #[test]
    fn reader_enforces_the_spec() {
        assert_eq!(read_all("{\"a\":1}\n\n{\"a\":2}\n{\"$end\":{\"rows\":2}}\n\n", true).unwrap(), vec![1, 3]);
        let err = |s: &[u8]| read_all(s, true).unwrap_err().message().to_string();
        assert!(err(b"{\"a\":1}\n").contains("without its end record"));
        assert!(err(b"{\"a\":1}\n{\"a\":").contains("middle of a line"));
        assert!(err(b"{\"a\":1}\n{\"$end\":{\"rows\":2}}\n").contains("says 2 rows but 1"));
        assert!(err(b"{\"$end\":{\"rows\":0}}\n{\"a\":1}\n").contains("data after the end record"));
        assert!(err(b"[1]\n").contains("line 1: expected a JSON object, found an array"));
        assert!(err(b"{\"a\":1}\n{\"a\" 1}\n").starts_with("line 2: malformed JSON at column"));
        assert!(err(b"{\"a\":\"\xff\"}\n").contains("invalid UTF-8"));
        // Foreign streams without an end record are accepted on request.
        assert_eq!(read_all("{\"a\":1}\n{\"a\":2}", false).unwrap(), vec![1, 2]);
        // CRLF line ends are accepted (JSON whitespace).
        assert_eq!(read_all("{\"a\":1}\r\n{\"$end\":{\"rows\":1}}\r\n", true).unwrap(), vec![1]);
    }
}
