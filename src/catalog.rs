//! What the PostgreSQL catalog says about a table, asked one way for every tool: its
//! columns with their kinds (generated ones and the sequences behind serial/identity
//! columns included), its primary key and unique keys, and its foreign keys in and out.

use crate::convert::Kind;
use crate::error::Result;
use crate::pg::pg_error;
use postgres::types::ToSql;
use postgres::GenericClient;

/// `text`'s type oid: what a column without a binary decoder is read as.
pub const TEXT_OID: u32 = 25;
const VARCHAR_OID: u32 = 1043;
const BPCHAR_OID: u32 = 1042;
const NAME_OID: u32 = 19;
const INTERVAL_OID: u32 = 1186;
const TIMETZ_OID: u32 = 1266;
const MONEY_OID: u32 = 790;

/// A table's column.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    /// `format_type` text, for messages (`numeric(12,2)`, `text[]`).
    pub type_name: String,
    /// The type, domains resolved to their base.
    pub kind: Kind,
    pub not_null: bool,
    /// Has a default (or is an identity): a missing key means "use it".
    pub has_default: bool,
    /// A generated column: computed by the server, never written.
    pub generated: bool,
    /// The sequence behind a serial or identity column, to move past loaded ids.
    pub sequence: Option<String>,
    /// A numeric column's scale (`numeric(12,2)`: 2), where it has one (an array's: its elements');
    /// a money column's fraction digits.
    pub scale: Option<i32>,
    /// A `numeric(p,s)` column's precision p (or an array's elements').
    pub numeric_precision: Option<u32>,
    /// The declared length of a `varchar(n)` or `char(n)` column (or of an array's elements).
    pub length: Option<u32>,
    /// `char(n)`: blank-padded, so trailing spaces are not part of the value.
    pub blank_padded: bool,
    /// The most bytes a value holds: 63 for `name` (NAMEDATALEN - 1), whose text input cuts
    /// longer values without an error (or an array's elements).
    pub max_bytes: Option<u32>,
    /// The column's type is a domain (whose CHECK constraints the server applies).
    pub domain: bool,
    /// An `interval` column's field mask (`timefmt::IV_*`; `IV_FULL` when it names none), or
    /// an interval array's.
    pub interval_fields: Option<u32>,
    /// The fraction digits of a second a `timestamp(p)`, `timestamptz(p)` or `time(p)` column
    /// keeps, when fewer than 6 (or an array's elements).
    pub precision: Option<u32>,
}

/// The table's columns in order (`qualified` is its `"schema"."name"`).
pub fn table_columns(client: &mut impl GenericClient, oid: u32, qualified: &str) -> Result<Vec<ColumnInfo>> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid, a.attnotnull, \
                    (a.atthasdef OR a.attidentity <> ''), a.attgenerated <> '', \
                    pg_get_serial_sequence($2, a.attname), \
                    coalesce(nullif(a.atttypmod, -1), (SELECT t.typtypmod FROM pg_type t WHERE t.oid = a.atttypid)), \
                    coalesce((SELECT t.typbasetype FROM pg_type t WHERE t.oid = a.atttypid AND t.typtype = 'd'), a.atttypid) \
             FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid, &qualified],
        )
        .map_err(|e| pg_error("read the table's columns", e))?;
    let mut out = Vec::with_capacity(rows.len());
    let mut money_scale: Option<i32> = None;
    for r in rows {
        let type_oid: u32 = r.get(2);
        let kind = kind_of(client, type_oid)?;
        let typmod: i32 = r.get(7);
        // An array's type modifier is its elements'; a domain's is its base type's.
        let (base_kind, base_oid) = match &kind {
            Kind::Array { elem, elem_oid } => (&**elem, *elem_oid),
            k => (k, r.get::<_, u32>(8)),
        };
        // numeric's typmod: ((precision << 16) | scale) + 4, the scale in 11 signed bits.
        // money: the fraction digits of the server's lc_monetary, which its input rounds to.
        let scale = match base_oid {
            MONEY_OID => Some(match money_scale {
                Some(s) => s,
                None => *money_scale.insert(
                    client
                        .query_one("SELECT scale('0'::money::numeric)", &[])
                        .map_err(|e| pg_error("read money's fraction digits", e))?
                        .get(0),
                ),
            }),
            _ => (*base_kind == Kind::Numeric && typmod >= 4).then(|| (((typmod - 4) & 0x7ff) ^ 1024) - 1024),
        };
        let numeric_precision =
            (*base_kind == Kind::Numeric && typmod >= 4).then(|| ((typmod - 4) >> 16) as u32 & 0xffff);
        // varchar(n), char(n): n + 4. time(p), timestamp(p), timestamptz(p): p.
        let length = (matches!(base_oid, VARCHAR_OID | BPCHAR_OID) && typmod >= 4).then(|| (typmod - 4) as u32);
        let precision =
            (matches!(base_oid, 1083 | 1114 | 1184 | TIMETZ_OID) && (0..6).contains(&typmod)).then_some(typmod as u32);
        // interval's typmod: (field mask << 16) | precision (0xFFFF: full).
        let fields = if typmod < 0 { crate::timefmt::IV_FULL } else { (typmod as u32 >> 16) & 0x7FFF };
        let interval_fields = (base_oid == INTERVAL_OID).then_some(fields);
        let precision = precision
            .or(((base_oid == INTERVAL_OID && typmod >= 0) && (typmod & 0xFFFF) < 6)
                .then_some((typmod & 0xFFFF) as u32));
        out.push(ColumnInfo {
            name: r.get(0),
            type_name: r.get(1),
            kind,
            not_null: r.get(3),
            has_default: r.get(4),
            generated: r.get(5),
            sequence: r.get(6),
            scale,
            numeric_precision,
            length,
            blank_padded: base_oid == BPCHAR_OID,
            max_bytes: (base_oid == NAME_OID).then_some(63),
            domain: type_oid != r.get::<_, u32>(8),
            interval_fields,
            precision,
        });
    }
    Ok(out)
}

/// A built-in type by its oid; `None` for types that need a catalog look-up (enums,
/// domains, arrays, others).
pub fn builtin_kind(oid: u32) -> Option<Kind> {
    Some(match oid {
        16 => Kind::Bool,
        21 => Kind::Int2,
        23 => Kind::Int4,
        20 => Kind::Int8,
        700 => Kind::Float4,
        701 => Kind::Float8,
        1700 => Kind::Numeric,
        TEXT_OID | VARCHAR_OID | BPCHAR_OID | NAME_OID => Kind::Text,
        17 => Kind::Bytea,
        1082 => Kind::Date,
        1083 => Kind::Time,
        1114 => Kind::Timestamp,
        1184 => Kind::Timestamptz,
        114 => Kind::Json,
        3802 => Kind::Jsonb,
        2950 => Kind::Uuid,
        _ => return None,
    })
}

/// Resolves a type oid: built-ins directly, domains to their base, arrays by element, enums.
pub fn kind_of(client: &mut impl GenericClient, oid: u32) -> Result<Kind> {
    if let Some(k) = builtin_kind(oid) {
        return Ok(k);
    }
    let r = client
        .query_one(
            "SELECT typtype::text, typcategory::text, typelem, typbasetype, format_type(oid, NULL), typlen FROM pg_type WHERE oid = $1",
            &[&oid],
        )
        .map_err(|e| pg_error("read a column type", e))?;
    let typtype: String = r.get(0);
    let category: String = r.get(1);
    let elem: u32 = r.get(2);
    let base: u32 = r.get(3);
    let name: String = r.get(4);
    let typlen: i16 = r.get(5);
    Ok(match typtype.as_str() {
        "d" => kind_of(client, base)?,
        "e" => Kind::Enum,
        _ if category == "A" && elem != 0 && typlen == -1 => {
            Kind::Array { elem: Box::new(kind_of(client, elem)?), elem_oid: elem }
        }
        _ => Kind::Other(name),
    })
}

/// The primary key's columns in key order; empty when the table has none.
pub fn primary_key(client: &mut impl GenericClient, oid: u32) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .map_err(|e| pg_error("read the primary key", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The column sets of the unique indexes an `ON CONFLICT (cols)` can use (the primary key
/// included; partial and expression indexes not), each in index order.
pub fn unique_keys(client: &mut impl GenericClient, oid: u32) -> Result<Vec<Vec<String>>> {
    let rows = client
        .query(
            "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL \
             GROUP BY i.indexrelid ORDER BY i.indexrelid",
            &[&oid],
        )
        .map_err(|e| pg_error("read unique indexes", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether some unique key has exactly the columns `key` (in any order).
pub fn has_unique_key(client: &mut impl GenericClient, oid: u32, key: &[String]) -> Result<bool> {
    let mut want: Vec<&String> = key.iter().collect();
    want.sort();
    Ok(unique_keys(client, oid)?.iter().any(|k| {
        let mut have: Vec<&String> = k.iter().collect();
        have.sort();
        have == want
    }))
}

/// A foreign key constraint.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub name: String,
    /// The referencing table (`regclass` text: qualified only where the search path needs it).
    pub table: String,
    pub columns: Vec<String>,
    /// The referenced table (`regclass` text).
    pub parent: String,
    pub parent_columns: Vec<String>,
    /// False for a constraint added NOT VALID and not validated since.
    pub validated: bool,
    /// `pg_get_constraintdef` without a trailing " NOT VALID": what re-adds it.
    pub definition: String,
}

const FOREIGN_KEY_SELECT: &str = "SELECT c.conname::text, c.conrelid::regclass::text, \
       array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i) \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i), \
       c.confrelid::regclass::text, \
       array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i) \
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i), \
       c.convalidated, pg_get_constraintdef(c.oid) \
     FROM pg_constraint c";

fn foreign_keys_where(
    client: &mut impl GenericClient,
    cond: &str,
    params: &[&(dyn ToSql + Sync)],
    what: &str,
) -> Result<Vec<ForeignKey>> {
    let rows = client
        .query(&format!("{FOREIGN_KEY_SELECT} WHERE c.contype = 'f' AND {cond} ORDER BY c.conname"), params)
        .map_err(|e| pg_error(what, e))?;
    Ok(rows
        .iter()
        .map(|r| ForeignKey {
            name: r.get(0),
            table: r.get(1),
            columns: r.get(2),
            parent: r.get(3),
            parent_columns: r.get(4),
            validated: r.get(5),
            definition: r.get::<_, String>(6).trim_end_matches(" NOT VALID").to_string(),
        })
        .collect())
}

/// The foreign keys that constrain the table's rows (out), by name: a partition's clones of
/// its parent's keys included, each key once. The server's per-partition rows of a key to a
/// partitioned table (the referenced partitions as `confrelid`) are not keys of their own.
pub fn foreign_keys(client: &mut impl GenericClient, oid: u32) -> Result<Vec<ForeignKey>> {
    foreign_keys_where(
        client,
        "c.conrelid = $1 AND NOT EXISTS \
         (SELECT FROM pg_constraint p WHERE p.oid = c.conparentid AND p.confrelid <> c.confrelid)",
        &[&oid],
        "read foreign keys",
    )
}

/// The foreign keys declared on the table itself, which a load can drop and re-add: those
/// referencing one of `parents`, or all of them (`None`). By name. A partition's clones of
/// its parent's keys are left out (they go with the parent's key), as are the server's
/// per-partition rows of a key to a partitioned table.
pub fn declared_foreign_keys(
    client: &mut impl GenericClient,
    oid: u32,
    parents: Option<&[u32]>,
) -> Result<Vec<ForeignKey>> {
    match parents {
        Some([]) => Ok(vec![]),
        None => foreign_keys_where(client, "c.conrelid = $1 AND c.conparentid = 0", &[&oid], "read foreign keys"),
        Some(parents) => foreign_keys_where(
            client,
            "c.conrelid = $1 AND c.conparentid = 0 AND c.confrelid = ANY($2)",
            &[&oid, &parents],
            "read foreign keys",
        ),
    }
}

/// The foreign keys of other tables that reference this one or one of its partitions (in),
/// by name; a partitioned referencing table's key is listed once, not once per partition.
pub fn referencing_keys(client: &mut impl GenericClient, oid: u32) -> Result<Vec<ForeignKey>> {
    foreign_keys_where(
        client,
        "c.conparentid = 0 AND (c.confrelid = $1 OR c.confrelid IN (SELECT relid FROM pg_partition_tree($1::oid)))",
        &[&oid],
        "look up foreign keys",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_kinds_by_oid() {
        let table = [
            (16, Kind::Bool),
            (21, Kind::Int2),
            (23, Kind::Int4),
            (20, Kind::Int8),
            (700, Kind::Float4),
            (701, Kind::Float8),
            (1700, Kind::Numeric),
            (25, Kind::Text),
            (1043, Kind::Text),
            (1042, Kind::Text),
            (19, Kind::Text),
            (17, Kind::Bytea),
            (1082, Kind::Date),
            (1083, Kind::Time),
            (1114, Kind::Timestamp),
            (1184, Kind::Timestamptz),
            (114, Kind::Json),
            (3802, Kind::Jsonb),
            (2950, Kind::Uuid),
        ];
        for (oid, kind) in table {
            assert_eq!(builtin_kind(oid), Some(kind), "oid {oid}");
        }
        // interval, inet, oid: resolved through the catalog.
        for oid in [1186, 869, 26] {
            assert_eq!(builtin_kind(oid), None, "oid {oid}");
        }
    }
}
