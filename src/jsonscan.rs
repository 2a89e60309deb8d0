//! One pass over a stream line's JSON object: where each key and value lies, what kind of
//! value it is, and whether a string holds escapes, without building anything.
//!
//! pg-load reads every row this way (issue 13: a serde parse followed by a second scan of
//! every value was a third of its CPU). It accepts exactly what serde_json accepts for an
//! object of scalars; nested objects and arrays are handed to serde_json itself, so their
//! rules (depth, escapes) are serde's. A line it refuses is re-read by the general parser,
//! which words the error.

use std::ops::Range;

/// What a value is, as far as its first bytes and its string escapes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawKind {
    /// A string; `escaped` when it holds a backslash (its text is not its raw bytes).
    Str {
        escaped: bool,
    },
    Number,
    True,
    False,
    Null,
    /// An object or an array (validated by serde_json).
    Composite,
}

/// One member of the object: byte ranges into the line.
#[derive(Debug, Clone)]
pub struct Member {
    /// The key's text between its quotes (raw: unescape it when `key_escaped`).
    pub key: Range<usize>,
    pub key_escaped: bool,
    /// The value's JSON text (a string with its quotes).
    pub value: Range<usize>,
    pub kind: RawKind,
}

/// Not a JSON object of the accepted shape; the general parser says why.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// Scans `text` (one line, trailing newline allowed) as a JSON object into `out` (cleared
/// first), members in order, repeated keys included.
pub fn scan_object(text: &str, out: &mut Vec<Member>) -> Result<(), Malformed> {
    out.clear();
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err(Malformed);
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return end(b, i + 1);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Err(Malformed);
        }
        let (key_end, key_escaped) = string_end(b, i + 1)?;
        let key = i + 1..key_end;
        i = skip_ws(b, key_end + 1);
        if b.get(i) != Some(&b':') {
            return Err(Malformed);
        }
        i = skip_ws(b, i + 1);
        let (value_end, kind) = value(text, i)?;
        out.push(Member { key, key_escaped, value: i..value_end, kind });
        i = skip_ws(b, value_end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return end(b, i + 1),
            _ => return Err(Malformed),
        }
    }
}

/// Only whitespace may follow the object.
fn end(b: &[u8], i: usize) -> Result<(), Malformed> {
    match skip_ws(b, i) == b.len() {
        true => Ok(()),
        false => Err(Malformed),
    }
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The value starting at `i`: its end and kind.
#[inline]
fn value(text: &str, i: usize) -> Result<(usize, RawKind), Malformed> {
    let b = text.as_bytes();
    match b.get(i) {
        Some(b'"') => {
            let (e, escaped) = string_end(b, i + 1)?;
            Ok((e + 1, RawKind::Str { escaped }))
        }
        Some(b'-' | b'0'..=b'9') => Ok((number_end(b, i)?, RawKind::Number)),
        Some(b't') => literal(b, i, b"true", RawKind::True),
        Some(b'f') => literal(b, i, b"false", RawKind::False),
        Some(b'n') => literal(b, i, b"null", RawKind::Null),
        Some(b'{' | b'[') => {
            // Rare in rows: serde_json reads one value and says where it ended.
            let mut values = serde_json::Deserializer::from_str(&text[i..]).into_iter::<&serde_json::value::RawValue>();
            match values.next() {
                Some(Ok(_)) => Ok((i + values.byte_offset(), RawKind::Composite)),
                _ => Err(Malformed),
            }
        }
        _ => Err(Malformed),
    }
}

fn literal(b: &[u8], i: usize, word: &[u8], kind: RawKind) -> Result<(usize, RawKind), Malformed> {
    match b[i..].starts_with(word) {
        true => Ok((i + word.len(), kind)),
        false => Err(Malformed),
    }
}

/// JSON's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number_end(b: &[u8], mut i: usize) -> Result<usize, Malformed> {
    let digits = |b: &[u8], mut i: usize| {
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        (i, i - s)
    };
    if b[i] == b'-' {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i).0,
        _ => return Err(Malformed),
    }
    if b.get(i) == Some(&b'.') {
        let (e, n) = digits(b, i + 1);
        if n == 0 {
            return Err(Malformed);
        }
        i = e;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let (e, n) = digits(b, i);
        if n == 0 {
            return Err(Malformed);
        }
        i = e;
    }
    Ok(i)
}

const LANES: u64 = 0x0101_0101_0101_0101;
pub(crate) const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The bytes of eight that end a run of plain string bytes: below 0x20, `"` or `\` (exact
/// "has a byte less than / equal to" tests, as in Bit Twiddling Hacks), as a high-bit mask.
#[inline]
pub fn special_bytes(w: u64) -> u64 {
    let quote = w ^ (LANES * b'"' as u64);
    let backslash = w ^ (LANES * b'\\' as u64);
    ((w.wrapping_sub(LANES * 0x20) & !w)
        | (quote.wrapping_sub(LANES) & !quote)
        | (backslash.wrapping_sub(LANES) & !backslash))
        & HIGH_BITS
}

/// From `i`: the index of the next special byte (below 0x20, `"` or `\\`), or one of the
/// last seven bytes if none comes before them (the caller reads on byte by byte).
#[inline]
fn plain_run_end(b: &[u8], mut i: usize) -> usize {
    // Sixteen bytes at a time with SSE2 (part of every x86_64): string_end was 8% of pg-load's
    // CPU eight bytes at a time.
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is always there on x86_64; each load reads b[i..i + 16], inside `b`.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let control_max = _mm_set1_epi8(0x1f);
            let zero = _mm_setzero_si128();
            while i + 16 <= b.len() {
                let x = _mm_loadu_si128(b.as_ptr().add(i).cast());
                // x <= 0x1f exactly when x - 0x1f, saturating at 0, is 0.
                let control = _mm_cmpeq_epi8(_mm_subs_epu8(x, control_max), zero);
                let hits = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)), control);
                let mask = _mm_movemask_epi8(hits) as u32;
                if mask != 0 {
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
    }
    // Eight bytes at a time (the rest, or another architecture).
    while i + 8 <= b.len() {
        let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("eight bytes"));
        let hits = special_bytes(w);
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i
}

/// From just after an opening quote: the index of the closing quote, and whether an escape
/// came before it. A control character, a bad escape or no closing quote is malformed
/// (`\u` escapes are checked for four hex digits only, as serde_json does for raw values).
#[inline]
fn string_end(b: &[u8], mut i: usize) -> Result<(usize, bool), Malformed> {
    let mut escaped = false;
    loop {
        i = plain_run_end(b, i);
        match b.get(i) {
            Some(b'"') => return Ok((i, escaped)),
            Some(b'\\') => {
                escaped = true;
                match b.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') if b.len() >= i + 6 && b[i + 2..i + 6].iter().all(u8::is_ascii_hexdigit) => i += 6,
                    _ => return Err(Malformed),
                }
            }
            Some(c) if *c < 0x20 => return Err(Malformed),
            Some(_) => i += 1,
            None => return Err(Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(t: &str) -> Result<Vec<(String, String, RawKind)>, Malformed> {
        let mut out = vec![];
        scan_object(t, &mut out)?;
        Ok(out.into_iter().map(|m| (t[m.key].to_string(), t[m.value].to_string(), m.kind)).collect())
    }

    #[test]
    fn members_with_their_kinds() {
        let got = scan(
            "{\"a\":1, \"b\" : \"x\\\"y\", \"c\":[1,{\"d\":2}],\"e\":null,\"f\":true,\"g\":false,\"h\":-0.5e+3,\
             \"k\\u00e9\":\"plain text of some length\"}\n",
        )
        .unwrap();
        let want = [
            ("a", "1", RawKind::Number),
            ("b", "\"x\\\"y\"", RawKind::Str { escaped: true }),
            ("c", "[1,{\"d\":2}]", RawKind::Composite),
            ("e", "null", RawKind::Null),
            ("f", "true", RawKind::True),
            ("g", "false", RawKind::False),
            ("h", "-0.5e+3", RawKind::Number),
            ("k\\u00e9", "\"plain text of some length\"", RawKind::Str { escaped: false }),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1.as_str(), g.2), w);
        }
        assert_eq!(scan(" { } \r\n").unwrap().len(), 0);
    }

    /// A quote, a backslash or a control character at every place in long strings (each
    /// lane of the 16- and 8-byte searches and the bytes after them) is found there.
    #[test]
    fn special_bytes_at_every_offset() {
        for len in [0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 47, 70] {
            let plain = "x".repeat(len);
            assert_eq!(scan(&format!("{{\"a\":\"{plain}\"}}")).unwrap()[0].1, format!("\"{plain}\""));
            for at in 0..len {
                let mut escaped = plain.clone();
                escaped.replace_range(at..at + 1, "\\n");
                let got = scan(&format!("{{\"a\":\"{escaped}\"}}")).unwrap();
                assert_eq!((got[0].1.clone(), got[0].2), (format!("\"{escaped}\""), RawKind::Str { escaped: true }));
                for bad in ["\u{1}", "\u{1f}", "\n", "\t"] {
                    let mut s = plain.clone();
                    s.replace_range(at..at + 1, bad);
                    assert!(scan(&format!("{{\"a\":\"{s}\"}}")).is_err(), "{len} {at} {bad:?}");
                }
                let mut s = plain.clone();
                s.replace_range(at..at + 1, "\u{20}\u{7f}\u{ff}");
                assert!(scan(&format!("{{\"a\":\"{s}\"}}")).is_ok(), "{len} {at}");
            }
        }
    }

    /// Every line serde_json refuses as an object is refused; every one it takes is taken.
    #[test]
    fn agrees_with_serde_json() {
        let lines = [
            "{\"a\":1}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":-}",
            "{\"a\":1e}",
            "{\"a\":1E+9}",
            "{\"a\":+1}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"nul\u{0}\"}",
            "{\"a\":\"bad \\x escape\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"\\u12g4\"}",
            "{\"a\":\"unterminated}",
            "{\"a\":1,}",
            "{,\"a\":1}",
            "{\"a\" 1}",
            "{\"a\":1} x",
            "{\"a\":1}}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":[1,2}",
            "{\"a\":{\"b\":}}",
            "{a:1}",
            "[1]",
            "",
            "{\"a\":1 \"b\":2}",
            "{\"a\":\"x\",\"a\":\"y\"}",
            "{\"é\":\"ü€😀\"}",
            "{\"a\":\"12345678\\\"12345678\"}",
            "{\"a\":\"1234567\\u0041bcdefghijk\"}",
            "{\"a\":\"0123456789abcdef0123456789abcdef\"}",
            "{\"a\":\"0123456789abcde\u{1f}0123456789abcdef\"}",
            "{\"a\":\"0123456789abcdef0\u{7f}\u{80}é23456789abcdef\"}",
        ];
        for l in lines {
            let serde_ok = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(l).is_ok()
                || l == "{\"a\":\"x\",\"a\":\"y\"}";
            assert_eq!(scan(l).is_ok(), serde_ok, "{l:?}");
        }
    }
}
