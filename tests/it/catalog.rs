//! src/catalog.rs against a real PostgreSQL: what every tool learns about a table.

use crate::harness::Pg;
use pgferry::catalog::{self, ColumnInfo};
use pgferry::convert::Kind;

fn oid(c: &mut postgres::Client, table: &str) -> u32 {
    c.query_one("SELECT to_regclass($1)::oid", &[&table]).unwrap().get(0)
}

fn column<'a>(cols: &'a [ColumnInfo], name: &str) -> &'a ColumnInfo {
    cols.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no column {name}"))
}

#[test]
fn columns_keys_and_foreign_keys() {
    let pg = Pg::new();
    pg.exec(
        "CREATE DOMAIN posint AS int CHECK (VALUE > 0);
         CREATE TYPE mood AS ENUM ('ok', 'bad');
         CREATE TABLE parent (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, code text UNIQUE);
         CREATE TABLE child (a int NOT NULL, b serial, p bigint, n posint, m mood, tags text[], ips inet[],
             doubled int GENERATED ALWAYS AS (a * 2) STORED, note interval, PRIMARY KEY (b, a), UNIQUE (n, m));
         ALTER TABLE child ADD CONSTRAINT child_p FOREIGN KEY (p) REFERENCES parent (id) NOT VALID;
         CREATE UNIQUE INDEX child_expr ON child ((a + 1));
         CREATE UNIQUE INDEX child_partial ON child (a) WHERE a > 0;",
    );
    let mut c = pg.client();
    let (child, parent) = (oid(&mut c, "child"), oid(&mut c, "parent"));

    let cols = catalog::table_columns(&mut c, child, "public.child").unwrap();
    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "p", "n", "m", "tags", "ips", "doubled", "note"]);
    let a = column(&cols, "a");
    assert_eq!((a.kind.clone(), a.not_null, a.has_default, a.generated), (Kind::Int4, true, false, false));
    let b = column(&cols, "b");
    assert_eq!((b.kind.clone(), b.has_default, b.sequence.as_deref()), (Kind::Int4, true, Some("public.child_b_seq")));
    assert_eq!(column(&cols, "n").kind, Kind::Int4, "a domain is its base type");
    assert_eq!(column(&cols, "n").type_name, "posint");
    assert_eq!(column(&cols, "m").kind, Kind::Enum);
    assert_eq!(column(&cols, "tags").kind, Kind::Array { elem: Box::new(Kind::Text), elem_oid: 25 });
    assert_eq!(column(&cols, "ips").kind, Kind::Array { elem: Box::new(Kind::Other("inet".into())), elem_oid: 869 });
    assert!(column(&cols, "doubled").generated);
    assert_eq!(column(&cols, "note").kind, Kind::Other("interval".into()));
    let pcols = catalog::table_columns(&mut c, parent, "public.parent").unwrap();
    let id = column(&pcols, "id");
    assert_eq!((id.has_default, id.sequence.as_deref()), (true, Some("public.parent_id_seq")), "identity");

    assert_eq!(catalog::primary_key(&mut c, child).unwrap(), ["b", "a"]);
    assert_eq!(catalog::unique_keys(&mut c, child).unwrap(), [vec!["b", "a"], vec!["n", "m"]]);
    assert!(catalog::has_unique_key(&mut c, child, &["a".into(), "b".into()]).unwrap());
    assert!(!catalog::has_unique_key(&mut c, child, &["a".into()]).unwrap(), "a partial index is no key");
    let am = oid(&mut c, "pg_catalog.pg_am");
    assert!(catalog::unique_keys(&mut c, am)
        .unwrap()
        .iter()
        .all(|k| k.len() == 1 && k[0] == "oid" || k[0] == "amname"));

    let out = catalog::foreign_keys(&mut c, child).unwrap();
    assert_eq!(out.len(), 1);
    let fk = &out[0];
    assert_eq!((fk.name.as_str(), fk.table.as_str(), fk.parent.as_str()), ("child_p", "child", "parent"));
    assert_eq!(
        (fk.columns.clone(), fk.parent_columns.clone(), fk.validated),
        (vec!["p".into()], vec!["id".into()], false)
    );
    assert_eq!(fk.definition, "FOREIGN KEY (p) REFERENCES parent(id)");
    let into: Vec<String> = catalog::referencing_keys(&mut c, parent).unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(into, ["child_p"]);
    assert!(catalog::foreign_keys(&mut c, parent).unwrap().is_empty());
    assert!(catalog::referencing_keys(&mut c, child).unwrap().is_empty());
}

#[test]
fn a_key_referencing_a_partitioned_table_is_listed_once() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE ev (id bigint, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE ev_2026 PARTITION OF ev FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         CREATE TABLE ev_2027 PARTITION OF ev FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
         CREATE TABLE seen (id bigint, at date, CONSTRAINT seen_ev FOREIGN KEY (id, at) REFERENCES ev);
         CREATE TABLE nokey (x int);",
    );
    let mut c = pg.client();
    let ev = oid(&mut c, "ev");
    let into: Vec<(String, String)> =
        catalog::referencing_keys(&mut c, ev).unwrap().into_iter().map(|k| (k.name, k.table)).collect();
    assert_eq!(into, [("seen_ev".to_string(), "seen".to_string())]);
    // Out, too: the server's per-partition rows of the key (conrelid seen, confrelid ev_2026…)
    // are not keys of their own; checked against one partition, rows of the others are orphans.
    let seen = oid(&mut c, "seen");
    let out: Vec<(String, String)> =
        catalog::foreign_keys(&mut c, seen).unwrap().into_iter().map(|k| (k.name, k.parent)).collect();
    assert_eq!(out, [("seen_ev".to_string(), "ev".to_string())]);
    let nokey = oid(&mut c, "nokey");
    assert!(catalog::primary_key(&mut c, nokey).unwrap().is_empty());
    let part = oid(&mut c, "ev_2026");
    assert_eq!(
        catalog::referencing_keys(&mut c, part).unwrap().len(),
        0,
        "the clone on a partition is not a key of its own"
    );
}

#[test]
fn the_keys_a_load_sets_aside_are_declared_on_the_table_and_filtered_by_parent() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE a (id int PRIMARY KEY);
         CREATE TABLE b (id int, x int, PRIMARY KEY (id, x));
         CREATE TABLE ev (id bigint, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE ev_2026 PARTITION OF ev FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         CREATE TABLE kid (id int, at date, a int CONSTRAINT kid_a REFERENCES a DEFERRABLE INITIALLY DEFERRED,
             b int, x int, CONSTRAINT kid_b FOREIGN KEY (b, x) REFERENCES b (id, x) MATCH FULL ON DELETE CASCADE,
             CONSTRAINT kid_ev FOREIGN KEY (id, at) REFERENCES ev) PARTITION BY RANGE (at);
         CREATE TABLE kid_2026 PARTITION OF kid FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         ALTER TABLE kid_2026 ADD CONSTRAINT kid_2026_a FOREIGN KEY (a) REFERENCES a ON UPDATE RESTRICT NOT VALID;",
    );
    let mut c = pg.client();
    let (a, b, ev, kid, part) =
        (oid(&mut c, "a"), oid(&mut c, "b"), oid(&mut c, "ev"), oid(&mut c, "kid"), oid(&mut c, "kid_2026"));
    let keys = |c: &mut postgres::Client, table: u32, parents: Option<&[u32]>| -> Vec<(String, String, bool)> {
        catalog::declared_foreign_keys(c, table, parents)
            .unwrap()
            .into_iter()
            .map(|k| (k.name, k.definition, k.validated))
            .collect()
    };
    let kid_a =
        ("kid_a".to_string(), "FOREIGN KEY (a) REFERENCES a(id) DEFERRABLE INITIALLY DEFERRED".to_string(), true);
    let kid_b =
        ("kid_b".to_string(), "FOREIGN KEY (b, x) REFERENCES b(id, x) MATCH FULL ON DELETE CASCADE".to_string(), true);
    let kid_ev = ("kid_ev".to_string(), "FOREIGN KEY (id, at) REFERENCES ev(id, at)".to_string(), true);
    // Exactly what re-adds each one, once each (not once per partition of ev).
    assert_eq!(keys(&mut c, kid, None), [kid_a.clone(), kid_b.clone(), kid_ev.clone()]);
    assert_eq!(keys(&mut c, kid, Some(&[b])), [kid_b]);
    assert_eq!(keys(&mut c, kid, Some(&[ev, a])), [kid_a, kid_ev]);
    assert!(keys(&mut c, kid, Some(&[])).is_empty());
    assert!(keys(&mut c, kid, Some(&[part])).is_empty());
    // The partition's clones of kid's keys go with kid's; its own key comes back NOT VALID.
    let own = ("kid_2026_a".to_string(), "FOREIGN KEY (a) REFERENCES a(id) ON UPDATE RESTRICT".to_string(), false);
    assert_eq!(keys(&mut c, part, None), std::slice::from_ref(&own));
    assert_eq!(keys(&mut c, part, Some(&[a])), [own]);
    // What constrains the partition's rows (count-check's lint): the clones too.
    let names: Vec<String> = catalog::foreign_keys(&mut c, part).unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(names, ["kid_2026_a", "kid_a", "kid_b", "kid_ev"]);
}
