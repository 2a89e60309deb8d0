//! The comparison engine: the two sides' counts, or their records merged in key order
//! (--full, --sample) into what is missing, extra or changed.

use crate::norm::{self, ColType, Norm};
use crate::side::{self, Feed, Job, Rec, Spec};
use crate::{Check, Mode, TOOL};
use pgferry::convert::{self, Kind};
use pgferry::progress::{Progress, Unit};
use pgferry::{note, Error, Result};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// What a comparison found.
#[derive(Default)]
pub struct Found {
    pub source_rows: u64,
    pub dest_rows: u64,
    pub compared: u64,
    pub same: u64,
    pub missing: u64,
    pub extra: u64,
    pub changed: u64,
    pub missing_keys: Vec<Value>,
    pub extra_keys: Vec<Value>,
    pub changed_records: Vec<Value>,
    /// Source fields with no destination column (the destination lost them).
    pub unmatched: BTreeSet<String>,
    /// Destination columns the source lacks (reported; a difference with --strict-columns).
    pub dest_only: BTreeSet<String>,
    pub seed: Option<u64>,
    pub sampled: Option<u64>,
}

pub fn run_check(c: &Check) -> Result<Found> {
    let source = match &c.source_spec {
        Some(s) => s.clone(),
        None => Spec::parse(&c.source_text)?,
    };
    let dest = Spec::parse(&c.dest_text)?;
    if matches!((&source, &dest), (Spec::Ndjson { file: a }, Spec::Ndjson { file: b }) if a == "-" && b == "-") {
        return Err(Error::Usage("only one side can read stdin".into()));
    }
    match c.opts.mode {
        Mode::Count => {
            let (s, d) = std::thread::scope(|sc| {
                let ctx = &c.ctx;
                let src = &source;
                let h = sc.spawn(move || side::count(src, ctx));
                let d = side::count(&dest, ctx);
                (h.join().expect("count thread"), d)
            });
            let (s, d) = (s.map_err(|e| e.context(&c.source_text))?, d.map_err(|e| e.context(&c.dest_text))?);
            Ok(Found { source_rows: s, dest_rows: d, ..Found::default() })
        }
        Mode::Full | Mode::Sample(_) => {
            let r = compare(c, source, dest);
            side::close_idle();
            r
        }
    }
}

fn compare(c: &Check, source: Spec, dest: Spec) -> Result<Found> {
    let o = &c.opts;
    let smeta = side::meta(&source, &c.ctx).map_err(|e| e.context(&c.source_text))?;
    let dmeta = side::meta(&dest, &c.ctx).map_err(|e| e.context(&c.dest_text))?;
    let rename: HashMap<String, String> = o.map.iter().cloned().collect();
    let to_dest = |n: &str| rename.get(n).cloned().unwrap_or_else(|| n.to_string());
    let mut ignore: HashSet<String> = o.ignore.iter().cloned().collect();
    // A SQLite generated column is compared where the destination has that column (each side
    // computes it); otherwise it is left out, as sqlite-dump leaves it out of the stream.
    if let Some(info) = &smeta.sqlite {
        for col in info.columns.iter().filter(|col| col.generated) {
            if !dmeta.columns.as_ref().is_some_and(|dc| dc.contains(&to_dest(&col.name))) {
                ignore.insert(col.name.clone());
            }
        }
    }
    // Column types come from the PostgreSQL side: the destination's, else the source's.
    let mut types: HashMap<String, ColType> = HashMap::new();
    if let Some(cols) = &dmeta.pg_columns {
        types.extend(cols.iter().map(|c| (c.name.clone(), ColType::of(c))));
    } else if let Some(cols) = &smeta.pg_columns {
        types.extend(cols.iter().filter(|c| !ignore.contains(&c.name)).map(|c| (to_dest(&c.name), ColType::of(c))));
    }
    if c.ctx.opts.has_column_rules() {
        for (name, ct) in types.iter_mut() {
            ct.conv = Some(c.ctx.opts.for_column(name));
        }
    }
    let key: Vec<String> = if !o.key.is_empty() {
        o.key.clone()
    } else if !dmeta.key.is_empty() {
        dmeta.key.clone()
    } else if !smeta.key.is_empty() {
        smeta.key.iter().map(|k| to_dest(k)).collect()
    } else {
        return Err(Error::Usage(format!(
            "no key to pair records of '{}' and '{}': neither has a primary key; pass --key COLS",
            c.source_text, c.dest_text
        )));
    };
    if key.len() > side::MAX_KEY {
        return Err(Error::Usage(format!(
            "a key of {} columns is more than count-check pairs by ({})",
            key.len(),
            side::MAX_KEY
        )));
    }
    // pg-load's --copy-key: the source's SRC is compared with the column DST too.
    let copies: Vec<(String, Arc<str>)> = c
        .opts
        .conv
        .copy_key
        .iter()
        .filter(|(_, dst)| !ignore.contains(dst))
        .map(|(src, dst)| (src.clone(), Arc::from(dst.as_str())))
        .collect();
    // A copied field needs no column of its own (pg-load loads it into its copy only).
    let copied: HashSet<String> = copies.iter().map(|(src, _)| to_dest(src)).collect();
    let mut found = Found::default();
    let mut dest_cols: Option<HashSet<String>> = None;
    if let Some(dc) = &dmeta.columns {
        let set: HashSet<String> = dc.iter().cloned().collect();
        for k in &key {
            if !set.contains(k) {
                return Err(Error::Usage(format!("{}: no key column '{k}'", c.dest_text)));
            }
        }
        if let Some(sc) = &smeta.columns {
            let mut mapped: HashSet<String> = sc.iter().filter(|n| !ignore.contains(*n)).map(|n| to_dest(n)).collect();
            mapped.extend(copies.iter().filter(|(src, _)| sc.contains(src)).map(|(_, dst)| dst.to_string()));
            for k in &key {
                if !mapped.contains(k) {
                    return Err(Error::Usage(format!("{}: no key column '{k}' (use --map SRC={k})", c.source_text)));
                }
            }
            found.unmatched = mapped.iter().filter(|n| !set.contains(*n) && !copied.contains(*n)).cloned().collect();
            found.dest_only = dc.iter().filter(|n| !mapped.contains(*n)).cloned().collect();
        }
        dest_cols = Some(set);
    }
    let types = Arc::new(types);
    let mut sjob = Job {
        spec: source.clone(),
        ctx: c.ctx.clone(),
        meta: smeta,
        rename: rename.clone(),
        ignore,
        copies,
        key: key.clone(),
        types: types.clone(),
        only: None,
        sort: false,
        unsorted: Default::default(),
    };
    let mut djob = Job {
        spec: dest.clone(),
        ctx: c.ctx.clone(),
        meta: dmeta,
        rename: HashMap::new(),
        ignore: HashSet::new(),
        copies: vec![],
        key: key.clone(),
        types: types.clone(),
        only: None,
        sort: false,
        unsorted: Default::default(),
    };
    let cmp = Compare {
        key: &key,
        strict: o.strict,
        dest_cols: dest_cols.as_ref(),
        copied: &copied,
        examples: o.examples,
        types: &types,
        ctx: &c.ctx,
    };
    loop {
        let mut f =
            Found { unmatched: found.unmatched.clone(), dest_only: found.dest_only.clone(), ..Found::default() };
        sjob.unsorted = Default::default();
        djob.unsorted = Default::default();
        let e = match attempt(c, &sjob, &djob, &cmp, &mut f) {
            Ok(()) => return Ok(f),
            Err(e) => e,
        };
        // A stream or Firestore side out of key order is sorted in a temporary file, once.
        let mut again = false;
        for (job, text) in [(&mut sjob, &c.source_text), (&mut djob, &c.dest_text)] {
            let sortable = match &job.spec {
                Spec::Ndjson { file } => file != "-",
                Spec::Json { .. } => true,
                Spec::Firestore { .. } => true,
                _ => false,
            };
            if sortable && !job.sort && job.unsorted.load(std::sync::atomic::Ordering::SeqCst) {
                note!(TOOL, "{text}: not in key order; sorting it in a temporary file and comparing again");
                job.sort = true;
                again = true;
            }
        }
        if !again {
            return Err(e);
        }
    }
}

/// One comparison run of the mode's kind.
fn attempt(c: &Check, sjob: &Job, djob: &Job, cmp: &Compare, found: &mut Found) -> Result<()> {
    let o = &c.opts;
    match o.mode {
        Mode::Full => {
            let mut s = side::spawn(sjob.clone(), c.source_text.clone());
            let mut d = side::spawn(djob.clone(), c.dest_text.clone());
            // No total: counting first would read each side twice.
            let draw = pgferry::progress::terminal();
            let mut progress = Progress::new(TOOL, c.source_text.as_str(), Unit::Count("records"), None, draw);
            merge(&mut s, &mut d, cmp, found, true, &mut progress)?;
            found.source_rows = s.rows;
            found.dest_rows = d.rows;
        }
        Mode::Sample(n) => {
            let seed = o.seed.unwrap_or_else(|| pgferry::timefmt::now_micros() as u64 % 1_000_000_000);
            found.seed = Some(seed);
            let mut s = side::spawn(sjob.clone(), c.source_text.clone());
            let mut rng = SplitMix(seed);
            let mut pick: Vec<Rec> = Vec::with_capacity(n);
            let mut seen: u64 = 0;
            while let Some(r) = s.next()? {
                seen += 1;
                if pick.len() < n {
                    pick.push(r);
                } else {
                    let j = rng.below(seen);
                    if (j as usize) < n {
                        pick[j as usize] = r;
                    }
                }
            }
            pick.sort_by(side::cmp_recs);
            found.source_rows = seen;
            found.sampled = Some(pick.len() as u64);
            let keys: Vec<Vec<Norm>> = pick.iter().map(Rec::key_vec).collect();
            let djob = Job { only: Some(Arc::new(keys)), ..djob.clone() };
            let mut d = side::spawn(djob, c.dest_text.clone());
            let mut s = side::feed_of(pick, c.source_text.clone());
            merge(&mut s, &mut d, cmp, found, false, &mut Progress::silent())?;
            found.dest_rows = d.rows;
        }
        Mode::Count => unreachable!("counts do not compare records"),
    }
    Ok(())
}

struct Compare<'a> {
    key: &'a [String],
    strict: bool,
    dest_cols: Option<&'a HashSet<String>>,
    /// Source fields that `--copy-key` copies (they need no column of their own).
    copied: &'a HashSet<String>,
    examples: usize,
    /// Column types by destination name (empty without a PostgreSQL side).
    types: &'a HashMap<String, ColType>,
    ctx: &'a side::Ctx,
}

/// Sort-merge of two key-ordered feeds.
fn merge(s: &mut Feed, d: &mut Feed, cmp: &Compare, f: &mut Found, extras: bool, p: &mut Progress) -> Result<()> {
    let mut cache = FieldCache::default();
    let mut server = ServerText::new(cmp.ctx);
    let mut a = s.next()?;
    let mut b = d.next()?;
    loop {
        p.update(s.rows);
        match (a.take(), b.take()) {
            (None, None) => return Ok(()),
            (Some(x), None) => {
                f.missing += 1;
                if f.missing_keys.len() < cmp.examples {
                    f.missing_keys.push(key_json(cmp.key, x.key()));
                }
                s.recycle(x);
                a = s.next()?;
            }
            (None, Some(y)) => {
                if extras {
                    f.extra += 1;
                    if f.extra_keys.len() < cmp.examples {
                        f.extra_keys.push(key_json(cmp.key, y.key()));
                    }
                }
                d.recycle(y);
                b = d.next()?;
            }
            (Some(x), Some(y)) => match side::cmp_recs(&x, &y) {
                std::cmp::Ordering::Less => {
                    b = Some(y);
                    f.missing += 1;
                    if f.missing_keys.len() < cmp.examples {
                        f.missing_keys.push(key_json(cmp.key, x.key()));
                    }
                    s.recycle(x);
                    a = s.next()?;
                }
                std::cmp::Ordering::Greater => {
                    if extras {
                        f.extra += 1;
                        if f.extra_keys.len() < cmp.examples {
                            f.extra_keys.push(key_json(cmp.key, y.key()));
                        }
                    }
                    a = Some(x);
                    d.recycle(y);
                    b = d.next()?;
                }
                std::cmp::Ordering::Equal => {
                    f.compared += 1;
                    let diffs = compare_fields(&x, &y, cmp, &mut cache, &mut server, &mut f.unmatched);
                    if diffs.is_empty() {
                        f.same += 1;
                    } else {
                        f.changed += 1;
                        if f.changed_records.len() < cmp.examples {
                            f.changed_records.push(json!({"key": key_json(cmp.key, x.key()), "fields": diffs}));
                        }
                    }
                    s.recycle(x);
                    d.recycle(y);
                    a = s.next()?;
                    b = d.next()?;
                }
            },
        }
    }
}

fn key_json<'a>(names: &[String], key: impl Iterator<Item = &'a Norm>) -> Value {
    let mut m = Map::new();
    for (n, v) in names.iter().zip(key) {
        m.insert(n.clone(), norm::norm_json(v));
    }
    Value::Object(m)
}

/// Where the destination record holds each source field, learned from the records before:
/// both sides name fields with shared strings, so a hit costs two pointer comparisons.
#[derive(Default)]
struct FieldCache(Vec<Option<CachedField>>);

/// A source field's name and, if the destination has it, its name there and position.
type CachedField = (Arc<str>, Option<(Arc<str>, usize)>);

impl FieldCache {
    /// The destination field index of source field `i` (named `name`), if any.
    fn find(&mut self, i: usize, name: &Arc<str>, d: &Rec) -> Option<usize> {
        if let Some(Some((src, dst))) = self.0.get(i) {
            if Arc::ptr_eq(src, name) {
                if let Some((dn, j)) = dst {
                    if d.fields.get(*j).is_some_and(|(n, _)| Arc::ptr_eq(n, dn)) {
                        return Some(*j);
                    }
                }
            }
        }
        let found = d.fields.iter().position(|(n, _)| n == name);
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        self.0[i] = Some((name.clone(), found.map(|j| (d.fields[j].0.clone(), j))));
        found
    }
}

/// The fields that differ, each with both values.
fn compare_fields(
    s: &Rec,
    d: &Rec,
    cmp: &Compare,
    cache: &mut FieldCache,
    server: &mut ServerText,
    unmatched: &mut BTreeSet<String>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, (name, sv)) in s.fields.iter().enumerate() {
        match cache.find(i, name, d) {
            Some(j) => {
                let dv = &d.fields[j].1;
                if !norm::norm_eq(sv, dv) && !server.same(cmp.types.get(&**name), sv, dv) {
                    out.push(field_diff(name, Some(sv), Some(dv)));
                }
            }
            None => match cmp.dest_cols {
                // The destination has no such column: reported once for the check.
                Some(cols) if !cols.contains(&**name) => {
                    if !unmatched.contains(&**name) && !cmp.copied.contains(&**name) {
                        unmatched.insert(name.to_string());
                    }
                }
                _ if *sv == Norm::Null => {}
                _ => out.push(field_diff(name, Some(sv), None)),
            },
        }
    }
    if cmp.strict {
        for (name, dv) in &d.fields {
            if !s.fields.iter().any(|(n, _)| n == name) {
                out.push(field_diff(name, None, Some(dv)));
            }
        }
    }
    out
}

fn field_diff(name: &str, s: Option<&Norm>, d: Option<&Norm>) -> Value {
    let mut m = Map::new();
    m.insert("field".into(), Value::String(name.to_string()));
    for (label, v) in [("source", s), ("dest", d)] {
        match v {
            Some(v) => {
                m.insert(label.into(), norm::norm_json(v));
                if let Norm::Bad(_, cause) = v {
                    m.insert(format!("{label}_error"), Value::String(cause.clone()));
                }
            }
            None => {
                m.insert(format!("{label}_absent"), Value::Bool(true));
            }
        }
    }
    Value::Object(m)
}

/// Texts of the types count-check does not read itself (interval, money, inet, ranges, …),
/// read by the server: `1 day 2 hours` and `1 day 02:00:00` are one interval, `12.5` and
/// `$12.50` one money. Asked only for texts that differ, once per distinct text (cached), on
/// a connection of its own opened when first needed. A text the server refuses, or no
/// server to ask, leaves the values different: sameness is never assumed.
struct ServerText<'a> {
    ctx: &'a side::Ctx,
    client: Option<postgres::Client>,
    unreachable: bool,
    /// (type, text) → the server's output text for it; `None`: refused.
    read: HashMap<(String, String), Option<String>>,
}

/// Distinct texts remembered; past this the cache starts again (memory stays bounded).
const SERVER_TEXT_CACHE: usize = 10_000;

impl<'a> ServerText<'a> {
    fn new(ctx: &'a side::Ctx) -> Self {
        ServerText { ctx, client: None, unreachable: false, read: HashMap::new() }
    }

    /// Whether `a` and `b`, which compared unequal as they are, are one value of the column's
    /// type as the server reads them.
    fn same(&mut self, ct: Option<&ColType>, a: &Norm, b: &Norm) -> bool {
        let Some(ct) = ct else { return false };
        match (&ct.kind, a, b) {
            (Kind::Other(n), Norm::Text(x), Norm::Text(y)) if !convert::is_hstore(n) => {
                self.same_text(&ct.type_name, x, y)
            }
            (Kind::Array { elem, .. }, Norm::Array(xs), Norm::Array(ys)) if xs.len() == ys.len() => match &**elem {
                Kind::Other(n) if !convert::is_hstore(n) => {
                    // The element type with the column's modifier (`interval(0)[]`).
                    let elem_sql = ct.type_name.strip_suffix("[]").unwrap_or(n);
                    xs.iter().zip(ys).all(|(x, y)| {
                        norm::norm_eq(x, y)
                            || matches!((x, y), (Norm::Text(x), Norm::Text(y)) if self.same_text(elem_sql, x, y))
                    })
                }
                _ => false,
            },
            _ => false,
        }
    }

    fn same_text(&mut self, type_sql: &str, a: &str, b: &str) -> bool {
        a == b
            || match (self.output_text(type_sql, a), self.output_text(type_sql, b)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
    }

    /// The server's output text for `text` read as `type_sql`; `None` when it refuses it or
    /// cannot be asked.
    fn output_text(&mut self, type_sql: &str, text: &str) -> Option<String> {
        let key = (type_sql.to_string(), text.to_string());
        if let Some(r) = self.read.get(&key) {
            return r.clone();
        }
        if self.client.is_none() && !self.unreachable {
            // Read in UTC, as pg-load's COPY reads (a timetz or tstzrange without an offset).
            self.client = side::connect(self.ctx).ok().and_then(|mut c| c.batch_execute(UTC).is_ok().then_some(c));
            self.unreachable = self.client.is_none();
        }
        let client = self.client.as_mut()?;
        // A literal, not a parameter: the type's input function then gets the column's
        // modifier, as COPY gives it (`'-3'::interval hour to minute` is 3 minutes; a text
        // cast would read 3 seconds, then truncate). type_sql is format_type's text.
        let sql = format!("SELECT format('%s', {}::{type_sql})", e_literal(text));
        let r = match client.simple_query(&sql) {
            Ok(msgs) => msgs.iter().find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            }),
            Err(e) if e.as_db_error().is_some() => None,
            Err(_) => {
                // The connection broke: the cache keeps what was learned, nothing more is asked.
                self.client = None;
                self.unreachable = true;
                return None;
            }
        };
        if self.read.len() >= SERVER_TEXT_CACHE {
            self.read.clear();
        }
        self.read.insert(key, r.clone());
        r
    }
}

/// `s` as an E'' literal, read alike whatever standard_conforming_strings says.
fn e_literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The session setting pg-load's transaction reads values under (bins/pg-load/main.rs).
const UTC: &str = "SET TimeZone = 'UTC'";

impl Drop for ServerText<'_> {
    fn drop(&mut self) {
        // Kept for the next reader as it came: with the server's own time zone.
        if let Some(mut c) = self.client.take() {
            if c.batch_execute("RESET TimeZone").is_ok() {
                side::keep(self.ctx, c);
            }
        }
    }
}

/// splitmix64: a small, seedable generator (the pick must repeat with its seed).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_literal_for_the_server_keeps_quotes_and_backslashes() {
        assert_eq!(super::e_literal(r"it's a \ b"), r"E'it''s a \\ b'");
    }
}
