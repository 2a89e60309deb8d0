//! `pg-load --plan`: many tables from one multi-table stream (docs/stream.md §7) in one
//! transaction, against a real PostgreSQL, real SQLite files and the Firestore emulator.

use crate::fs_export::Fs;
use crate::harness::*;
use serde_json::json;
use std::path::Path;

/// A step of a test plan: its name, source, target and extra `load` arguments.
#[derive(Clone)]
struct Step<'a> {
    name: &'a str,
    source: String,
    target: &'a str,
    load: &'a [&'a str],
}

/// Writes the plan file (docs/plan.md) for `steps`.
fn write_plan(path: &Path, steps: &[Step]) {
    let mut text = String::from("# test plan\n");
    for s in steps {
        text.push_str(&json!({"step": s.name, "source": s.source, "target": s.target, "load": s.load}).to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// The table record that opens a step's segment.
fn marker(step: &str, target: &str) -> String {
    format!("{}\n", json!({"$table": {"step": step, "target": target}}))
}

/// The producer's stream for a step's source: sqlite-dump or fs-export, as scripts/migrate runs them.
fn produce(source: &str, fs: Option<&Fs>) -> String {
    if let Some(rest) = source.strip_prefix("sqlite:") {
        let (db, table) = rest.rsplit_once(':').unwrap();
        return cmd("sqlite-dump").args([db, table]).ok().stdout();
    }
    let coll = source.strip_prefix("firestore:").expect("a sqlite: or firestore: source");
    fs.expect("an emulator project").export().arg(coll).ok().stdout()
}

/// The whole plan stream: each step's table record, then its producer's stream.
fn plan_stream(steps: &[Step], fs: Option<&Fs>) -> String {
    steps.iter().map(|s| marker(s.name, s.target) + &produce(&s.source, fs)).collect()
}

fn plan_load(pg: &Pg, plan: &Path, input: impl Into<Vec<u8>>, extra: &[&str]) -> Cmd {
    cmd("pg-load").args(["--db", &pg.url, "--plan", &plan.display().to_string()]).args(extra).stdin(input)
}

/// 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("needle in the stream") + 1
}

const APP_SQLITE: &str = "
    CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
    CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, total REAL, placed_at TEXT);
    CREATE TABLE order_items (id INTEGER PRIMARY KEY, order_id INTEGER, sku TEXT, qty INTEGER);
    CREATE TABLE products (sku TEXT PRIMARY KEY, title TEXT, price REAL);
    CREATE TABLE shipments (id INTEGER PRIMARY KEY, order_id INTEGER, shipped_at TEXT);
    CREATE TABLE sync_log (id INTEGER PRIMARY KEY, msg TEXT, at TEXT);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE xml_imports (id INTEGER PRIMARY KEY, file TEXT, rows INTEGER);
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50)
      INSERT INTO customers SELECT x, 'customer ' || x FROM c;
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 120)
      INSERT INTO orders SELECT x, 1 + x % 50, x * 1.5, '2024-01-05 10:00:00' FROM c;
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 250)
      INSERT INTO order_items SELECT x, 1 + x % 120, 'sku-' || (x % 10), x % 4 + 1 FROM c;
    WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < 9)
      INSERT INTO products SELECT 'sku-' || x, 'product ' || x, x + 0.99 FROM c;
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 80)
      INSERT INTO shipments SELECT x, x, '2024-01-06T08:00:00Z' FROM c;
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200)
      INSERT INTO sync_log SELECT x, 'synced ' || x, '2024-01-07T09:00:00Z' FROM c;
    UPDATE sync_log SET at = 'yesterday-ish' WHERE id = 117;
    INSERT INTO settings VALUES ('theme', 'dark'), ('currency', 'EUR'), ('tz', 'Europe/Athens');
    INSERT INTO xml_imports VALUES (1, 'a.xml', 10), (2, 'b.xml', 20);";

const APP_PG: &str = "
    CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL);
    CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL CONSTRAINT orders_customer_fk REFERENCES customers(id),
                         total numeric(10,2), placed_at timestamptz NOT NULL);
    CREATE TABLE products (sku text PRIMARY KEY, title text, price numeric(8,2));
    CREATE TABLE order_items (id bigint PRIMARY KEY,
                              order_id bigint NOT NULL CONSTRAINT items_order_fk REFERENCES orders(id) ON DELETE CASCADE,
                              sku text CONSTRAINT items_sku_fk REFERENCES products(sku) DEFERRABLE INITIALLY DEFERRED, qty integer);
    CREATE TABLE shipments (id bigint PRIMARY KEY, order_id bigint REFERENCES orders(id), shipped_at timestamptz);
    CREATE TABLE sync_log (id bigint PRIMARY KEY, msg text, at timestamptz NOT NULL);
    CREATE TABLE settings (key text PRIMARY KEY, value text);
    CREATE TABLE xml_imports (id bigint PRIMARY KEY, file text, rows integer);
    CREATE TABLE crm_customers (id text PRIMARY KEY, name text, since timestamptz, customer_id bigint REFERENCES customers(id));
    CREATE TABLE crm_notes (id text PRIMARY KEY, customer text NOT NULL REFERENCES crm_customers(id), body text);
    CREATE TABLE crm_tags (id text PRIMARY KEY, label text);";

const TABLES: &[&str] = &[
    "customers",
    "orders",
    "order_items",
    "products",
    "shipments",
    "sync_log",
    "settings",
    "xml_imports",
    "crm_notes",
    "crm_customers",
    "crm_tags",
];

fn seed_firestore(fs: &Fs) {
    let s = |v: &str| json!({"stringValue": v});
    let mut docs = vec![];
    for i in 1..=5 {
        docs.push((
            format!("crm_customers/c{i}"),
            json!({"name": s(&format!("crm {i}")), "since": {"timestampValue": "2023-05-01T00:00:00Z"},
                   "customer_id": {"integerValue": i.to_string()}}),
        ));
        docs.push((format!("crm_notes/n{i}"), json!({"customer": s(&format!("c{i}")), "body": s("called")})));
    }
    docs.push(("crm_tags/vip".into(), json!({"label": s("VIP")})));
    docs.push(("crm_tags/late".into(), json!({"label": s("pays late")})));
    fs.put(docs);
}

#[test]
fn a_plan_of_eleven_tables_from_sqlite_and_firestore_commits_all_or_nothing() {
    let pg = Pg::new();
    pg.exec(APP_PG);
    let fs = Fs::new();
    seed_firestore(&fs);
    let t = TempDir::new();
    let db = t.path("app.db");
    sqlite_db(&db, APP_SQLITE);
    let sqlite = |table: &str| format!("sqlite:{}:{table}", db.display());
    // crm_notes comes before crm_customers, and order_items before products: children first.
    let steps: Vec<Step> = TABLES
        .iter()
        .map(|&name| Step {
            name,
            source: if name.starts_with("crm_") { format!("firestore:{name}") } else { sqlite(name) },
            target: name,
            load: if name == "orders" { &["--mode", "insert"] } else { &[] },
        })
        .collect();
    let plan = t.path("plan.ndjson");
    write_plan(&plan, &steps);

    let input = plan_stream(&steps, Some(&fs));
    let bad_line = line_of(&input, "yesterday-ish");
    let r = plan_load(&pg, &plan, input, &[]).expect(65);
    r.stderr_has(&[
        &format!("step 'sync_log' (sync_log): line {bad_line}, column 'at'"),
        "\"yesterday-ish\"",
        "nothing was committed",
    ]);
    for table in TABLES {
        assert_eq!(pg.count(table), 0, "{table} kept rows of a failed plan run\n{}", r.describe());
    }
    // One record per step: the failing step names its line, the others say why they are not committed.
    let log = pg.rows("SELECT target || '|' || outcome || '|' || coalesce(error, '') FROM _migration_runs ORDER BY id");
    assert_eq!(log.len(), TABLES.len(), "{log:?}");
    for (row, table) in log.iter().zip(TABLES) {
        if *table == "sync_log" {
            assert!(row.starts_with("sync_log|failed|") && row.contains(&format!("line {bad_line}")), "{row}");
        } else {
            assert_eq!(row, &format!("{table}|failed|not committed: step 'sync_log' failed"));
        }
    }

    // The source fixed, the same plan commits every table, each count verified.
    sqlite_db(&db, "UPDATE sync_log SET at = '2024-01-07T09:30:00Z' WHERE id = 117");
    let r = plan_load(&pg, &plan, plan_stream(&steps, Some(&fs)), &[]).ok();
    r.stderr_has(&[
        "step 'customers' (customers): Source: 50 rows → Postgres: 50 rows ✓",
        "step 'order_items' (order_items): Source: 250 rows → Postgres: 250 rows ✓",
        "step 'sync_log' (sync_log): Source: 200 rows → Postgres: 200 rows ✓",
        "step 'crm_notes' (crm_notes): Source: 5 rows → Postgres: 5 rows ✓",
        "committed in one transaction",
    ]);
    let want = [50, 120, 250, 10, 80, 200, 3, 2, 5, 5, 2];
    for (table, n) in TABLES.iter().zip(want) {
        assert_eq!(pg.count(table), n, "{table}");
    }
    assert_eq!(pg.one("SELECT at::text FROM sync_log WHERE id = 117"), "2024-01-07 09:30:00+00");
    assert_eq!(pg.one("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated"), "0");
    assert_eq!(
        pg.one("SELECT count(*) FROM _migration_runs WHERE outcome = 'success'"),
        TABLES.len().to_string(),
        "one success record per step"
    );
}

#[test]
fn children_before_parents_end_with_every_foreign_key_validated_and_restored_exactly() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE regions (id text PRIMARY KEY);
         INSERT INTO regions VALUES ('eu');
         CREATE TABLE customers (id text PRIMARY KEY, region text CONSTRAINT c_region REFERENCES regions(id));
         CREATE TABLE quotations (id text PRIMARY KEY,
             customer_id text CONSTRAINT q_customer REFERENCES customers(id) ON DELETE CASCADE ON UPDATE RESTRICT,
             parent text CONSTRAINT q_parent REFERENCES quotations(id) DEFERRABLE INITIALLY DEFERRED,
             UNIQUE (id, customer_id));
         CREATE TABLE lines (id int PRIMARY KEY, quotation text, customer text,
             CONSTRAINT l_quot FOREIGN KEY (quotation, customer) REFERENCES quotations(id, customer_id) MATCH FULL DEFERRABLE);",
    );
    let defs = "SELECT conname || ' ' || pg_get_constraintdef(oid) || ' ' || convalidated FROM pg_constraint WHERE contype = 'f' ORDER BY conname";
    let before = pg.rows(defs);
    let t = TempDir::new();
    let plan = t.path("plan.ndjson");
    let ndjson = |n: &str| format!("ndjson:{}", t.str(n));
    let steps = [
        Step { name: "lines", source: ndjson("l"), target: "lines", load: &[] },
        Step { name: "quotations", source: ndjson("q"), target: "quotations", load: &[] },
        Step { name: "customers", source: ndjson("c"), target: "customers", load: &[] },
    ];
    write_plan(&plan, &steps);
    let stream = |customer: &str| {
        marker("lines", "lines")
            + "{\"id\":1,\"quotation\":\"q2\",\"customer\":\"c1\"}\n{\"$end\":{\"rows\":1}}\n"
            + &marker("quotations", "quotations")
            + "{\"id\":\"q2\",\"customer_id\":\"c1\",\"parent\":\"q1\"}\n"
            + &format!("{{\"id\":\"q1\",\"customer_id\":\"{customer}\"}}\n")
            + "{\"$end\":{\"rows\":2}}\n"
            + &marker("customers", "customers")
            + "{\"id\":\"c1\",\"region\":\"eu\"}\n{\"$end\":{\"rows\":1}}\n"
    };
    // A child whose parent is in no table of the plan: the key names itself, nothing commits.
    let r = plan_load(&pg, &plan, stream("c9"), &[]).expect(65);
    r.stderr_has(&["step 'quotations' (quotations): foreign key q_customer of 'quotations'", "(customer_id)=(c9)"]);
    r.stderr_has(&["nothing was committed"]);
    assert_eq!(pg.count("quotations") + pg.count("lines") + pg.count("customers"), 0);
    assert_eq!(pg.rows(defs), before, "a failed run changed the foreign keys");

    let r = plan_load(&pg, &plan, stream("c1"), &[]).ok();
    r.stderr_has(&["foreign keys set aside for the load are back and validated"]);
    assert_eq!(pg.count("lines") + pg.count("quotations") + pg.count("customers"), 4);
    // Same names, definitions (actions, MATCH, deferrability), all valid.
    assert_eq!(pg.rows(defs), before);
    assert_eq!(pg.one("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated"), "0");
    // c_region points outside the plan: it was never set aside (checked row by row as usual).
    assert!(!r.stderr().contains("c_region"), "{}", r.describe());
}

#[test]
fn plan_stream_and_options_errors_and_a_dry_run_that_leaves_nothing() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, at timestamptz);
         CREATE TABLE c (id int PRIMARY KEY);",
    );
    let t = TempDir::new();
    let plan = t.path("plan.ndjson");
    let steps = [
        Step { name: "a", source: "ndjson:/dev/null".into(), target: "a", load: &[] },
        Step { name: "b", source: "ndjson:/dev/null".into(), target: "b", load: &["--epoch-unit", "s"] },
        Step { name: "c", source: "ndjson:/dev/null".into(), target: "c", load: &["--no-end-record"] },
    ];
    write_plan(&plan, &steps);
    let seg_a = marker("a", "a") + "{\"id\":1,\"v\":\"x\"}\n{\"$end\":{\"rows\":1}}\n";
    let seg_b = "{\"id\":1,\"at\":1704448800}\n{\"$end\":{\"rows\":1}}\n".to_string();
    let seg_c = marker("c", "c") + "{\"id\":1}\n{\"id\":2}\n";
    let good = format!("{seg_a}{seg_b}{seg_c}");
    let cases: Vec<(String, Vec<&str>, &[&str], i32)> = vec![
        (
            format!("{seg_a}{}{seg_c}", marker("x", "b")),
            vec!["line 4: the table record names step 'x' where step 'b' was expected"],
            &[],
            65,
        ),
        (
            format!("{seg_a}{}{seg_b}{seg_c}", marker("b", "c")),
            vec!["line 4: the table record of step 'b' names table 'c'"],
            &[],
            65,
        ),
        (
            format!("{}{}{seg_b}{seg_c}", marker("a", "a") + "{\"id\":1,\"v\":\"x\"}\n", marker("b", "b")),
            vec!["step 'a' (a): line 3: step 'b' begins before this step's end record"],
            &[],
            65,
        ),
        (
            format!("{seg_a}{}{seg_c}", "{\"id\":1,\"at\":1704448800}\n"),
            vec!["step 'b' (b): line 5: step 'c' begins before this step's end record"],
            &[],
            65,
        ),
        (
            format!("{seg_a}{seg_b}{seg_c}").replace("\"v\":\"x\"", "\"v\":\"x\",\"v\":\"y\""),
            vec!["line 2: key \"v\" appears twice in the row"],
            &[],
            65,
        ),
        (good.clone(), vec!["the plan", "has no step 'zz'"], &["--from", "zz"], 64),
        (good.clone(), vec!["give --from or --steps, not both"], &["--from", "a", "--steps", "b"], 64),
    ];
    for (input, fragments, extra, code) in cases {
        let r = plan_load(&pg, &plan, input, extra).expect(code);
        r.stderr_has(&fragments);
        assert_eq!(pg.count("a") + pg.count("b") + pg.count("c"), 0, "{}", r.describe());
    }
    // A run-level option inside a step's load array.
    let bad = t.path("bad.ndjson");
    write_plan(&bad, &[Step { name: "a", source: "ndjson:/dev/null".into(), target: "a", load: &["--db=x"] }]);
    plan_load(&pg, &bad, seg_a.clone(), &[])
        .expect(64)
        .stderr_has(&["step 'a', load: '--db=x' is an option of the whole run, not of a step"]);

    // A dry run does everything, reports every count, and leaves nothing behind.
    let r = plan_load(&pg, &plan, good.clone(), &["--dry-run"]).ok();
    r.stderr_has(&["step 'c' (c): Source: 2 rows → Postgres: 2 rows ✓", "dry run: rolled back"]);
    assert_eq!(pg.count("a") + pg.count("b") + pg.count("c"), 0);
    assert_eq!(pg.rows("SELECT DISTINCT outcome FROM _migration_runs WHERE outcome <> 'failed'"), vec!["dry-run"]);
    // --steps selects a part of the plan; the stream holds only those steps' segments.
    plan_load(&pg, &plan, seg_c.clone(), &["--steps", "c"]).ok();
    assert_eq!(pg.count("c"), 2);
    // More segments than steps selected.
    plan_load(&pg, &plan, format!("{seg_b}{seg_a}"), &["--steps", "b"])
        .expect(65)
        .stderr_has(&["line 3: data after the last step's segment"]);
    plan_load(&pg, &plan, good, &[]).ok().stderr_has(&["committed in one transaction"]);
    assert_eq!(pg.one("SELECT at::text FROM b"), "2024-01-05 10:00:00+00");
}

#[test]
fn kill_9_of_a_plan_run_commits_nothing_and_leaves_no_transaction_behind() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE small (id int PRIMARY KEY, v text)");
    pg.exec(LOGS_TABLE);
    let t = TempDir::new();
    let plan = t.path("plan.ndjson");
    let steps = [
        Step { name: "small", source: "ndjson:/dev/null".into(), target: "small", load: &[] },
        Step { name: "logs", source: "ndjson:/dev/null".into(), target: "logs", load: &[] },
    ];
    write_plan(&plan, &steps);
    let file = t.path("stream.ndjson");
    let head = format!(
        "{}{{\"id\":1,\"v\":\"x\"}}\n{{\"$end\":{{\"rows\":1}}}}\n{}",
        marker("small", "small"),
        marker("logs", "logs")
    );
    write_log_stream(&file, &head, 300_000, true);
    kill_9_pg_load_mid_copy(&pg, &file, 150_000, &["--plan", &plan.display().to_string()]);
    // The server ends the killed client's session and rolls its transaction back.
    let mut left = String::new();
    for _ in 0..50 {
        left = pg.one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND (xact_start IS NOT NULL OR state LIKE 'idle in transaction%')",
        );
        if left == "0" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(left, "0", "a transaction outlived the killed pg-load");
    assert_eq!(pg.one("SELECT count(*) FROM pg_prepared_xacts"), "0");
    assert_eq!(pg.count("small") + pg.count("logs"), 0, "a killed plan run committed rows");
    assert_eq!(pg.rows("SELECT outcome FROM _migration_runs ORDER BY id"), vec!["running", "running"]);
    // The next run notices the dead one, records it, and completes.
    cmd("pg-load")
        .args(["--db", &pg.url, "--plan", &plan.display().to_string()])
        .stdin_file(&file)
        .ok()
        .stderr_has(&["step 'logs' (logs): Source: 300000 rows → Postgres: 300000 rows ✓"]);
    assert_eq!(
        pg.rows("SELECT outcome FROM _migration_runs ORDER BY id"),
        vec!["interrupted", "interrupted", "success", "success"]
    );
}

#[test]
fn mirror_makes_tables_equal_to_their_source_by_key_single_and_per_plan_step() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, tier text, prefs jsonb, note text DEFAULT 'kept');
         CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers(id), total numeric(10,2));
         -- Outside every plan: the application's own table, pointing at customers.
         CREATE TABLE invoices (id int PRIMARY KEY, customer_id bigint CONSTRAINT inv_customer REFERENCES customers(id));",
    );
    let t = TempDir::new();
    let db = t.path("app.db");
    sqlite_db(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, tier TEXT, prefs TEXT);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, total REAL);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5)
           INSERT INTO customers SELECT x, 'customer ' || x, 'basic', '{\"a\":1}' FROM c;
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 12)
           INSERT INTO orders SELECT x, 1 + x % 5, x * 2.5 FROM c;",
    );
    let side = |table: &str| format!("sqlite:{}:{table}", db.display());
    let dump = |table: &str| cmd("sqlite-dump").args([db.display().to_string().as_str(), table]).ok().stdout();
    let mirror = |table: &str| cmd("pg-load").args(["--db", &pg.url, "--mode", "mirror", table]).stdin(dump(table));
    let full_check = |table: &str| {
        cmd("count-check").args(["--db", &pg.url, "--full", &side(table), &format!("pg:{table}")]).ok();
    };
    // Into an empty table: every row inserted.
    mirror("customers").ok().stderr_has(&["customers: 5 inserted, 0 updated, 0 deleted, 0 unchanged"]);
    pg.exec("INSERT INTO invoices VALUES (1, 2)");
    // The source changes: one row updated, one deleted, one added.
    sqlite_db(
        &db,
        "UPDATE customers SET tier = 'gold' WHERE id = 3; DELETE FROM customers WHERE id = 4;
         INSERT INTO customers VALUES (6, 'customer 6', NULL, '[]'); UPDATE customers SET prefs = '{\"a\": 1}' WHERE id = 5;",
    );
    pg.exec("UPDATE customers SET note = 'set by the app' WHERE id = 1");
    mirror("customers").ok().stderr_has(&[
        "Source: 5 rows → Postgres: 5 rows ✓",
        // prefs '{\"a\": 1}' is the same jsonb as '{\"a\":1}': unchanged.
        "customers: 1 inserted, 1 updated, 1 deleted, 3 unchanged",
    ]);
    full_check("customers");
    assert_eq!(pg.rows("SELECT id FROM customers ORDER BY id"), vec!["1", "2", "3", "5", "6"]);
    // A column the stream does not carry keeps its value; the outside table is untouched.
    assert_eq!(pg.one("SELECT note FROM customers WHERE id = 1"), "set by the app");
    assert_eq!(pg.one("SELECT note FROM customers WHERE id = 6"), "kept");
    assert_eq!(pg.rows("SELECT id || '|' || customer_id FROM invoices"), vec!["1|2"]);
    // Unchanged source: a re-run changes nothing.
    mirror("customers").ok().stderr_has(&["customers: 0 inserted, 0 updated, 0 deleted, 5 unchanged"]);

    // A row still referenced from outside cannot go: a clear error naming the key, nothing changed.
    sqlite_db(&db, "DELETE FROM customers WHERE id = 2; UPDATE customers SET name = 'renamed' WHERE id = 1");
    let r = mirror("customers").expect(65);
    r.stderr_has(&["--mode mirror", "Key (id)=(2) is still referenced from table \"invoices\"", "inv_customer"]);
    assert_eq!(pg.one("SELECT name FROM customers WHERE id = 1"), "customer 1");
    assert_eq!(pg.count("customers"), 5);
    pg.exec("DELETE FROM invoices");
    // The source made consistent again: customer 2 back, customer 4's orders gone with it.
    sqlite_db(
        &db,
        "INSERT INTO customers VALUES (2, 'customer 2', 'basic', '{\"a\":1}'); DELETE FROM orders WHERE customer_id = 4",
    );

    // Per plan step: customers and orders mirrored in one transaction after more changes.
    let plan = t.path("plan.ndjson");
    let steps = [
        Step { name: "customers", source: side("customers"), target: "customers", load: &["--mode", "mirror"] },
        Step { name: "orders", source: side("orders"), target: "orders", load: &["--mode=mirror"] },
    ];
    write_plan(&plan, &steps);
    plan_load(&pg, &plan, plan_stream(&steps, None), &[])
        .ok()
        .stderr_has(&["step 'customers' (customers): 0 inserted, 1 updated, 0 deleted, 4 unchanged"]);
    full_check("customers");
    full_check("orders");
    sqlite_db(
        &db,
        "DELETE FROM orders WHERE customer_id = 3; DELETE FROM customers WHERE id = 3;
         UPDATE orders SET total = 99.5 WHERE id = 1; INSERT INTO orders VALUES (13, 6, 1.0), (14, 6, 2.0);",
    );
    let r = plan_load(&pg, &plan, plan_stream(&steps, None), &[]).ok();
    r.stderr_has(&[
        "step 'customers' (customers): 0 inserted, 0 updated, 1 deleted, 4 unchanged",
        "step 'orders' (orders): 2 inserted, 1 updated, 3 deleted, 6 unchanged",
    ]);
    full_check("customers");
    full_check("orders");
}

#[test]
fn a_parent_that_the_plans_tables_reference_gets_its_key_built_after_copy_and_every_constraint_back_exactly() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE teams (id int CONSTRAINT teams_pk PRIMARY KEY, code text CONSTRAINT teams_code UNIQUE,
             lead int CONSTRAINT teams_lead REFERENCES teams(id) DEFERRABLE INITIALLY DEFERRED,
             CONSTRAINT teams_pair UNIQUE (id, code) DEFERRABLE INITIALLY DEFERRED);
         CREATE TABLE members (id int PRIMARY KEY,
             team int CONSTRAINT m_team REFERENCES teams(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED, code text);
         ALTER TABLE members ADD CONSTRAINT m_code FOREIGN KEY (code) REFERENCES teams(code) MATCH FULL NOT VALID;",
    );
    let before = pg.schema_dump();
    let valid = "SELECT string_agg(conname || '=' || convalidated, ' ' ORDER BY conname) FROM pg_constraint WHERE contype = 'f'";
    let valid_before = pg.one(valid);
    let key_oid = "SELECT 'teams_pk'::regclass::oid";
    let oid_before = pg.one(key_oid);
    let t = TempDir::new();
    let plan = t.path("plan.ndjson");
    let steps = [
        Step { name: "teams", source: "ndjson:teams".into(), target: "teams", load: &[] },
        Step { name: "members", source: "ndjson:members".into(), target: "members", load: &[] },
    ];
    write_plan(&plan, &steps);
    let stream = |teams: &[&str]| {
        let mut s = marker("teams", "teams");
        for r in teams {
            s += r;
            s += "\n";
        }
        s + &format!("{{\"$end\":{{\"rows\":{}}}}}\n", teams.len())
            + &marker("members", "members")
            + "{\"id\":1,\"team\":2,\"code\":\"b\"}\n{\"id\":2,\"team\":1,\"code\":null}\n{\"$end\":{\"rows\":2}}\n"
    };
    let good = [r#"{"id":1,"code":"a","lead":2}"#, r#"{"id":2,"code":"b","lead":null}"#];
    // A repeated key of the parent: named by its two lines of the plan's stream, nothing commits.
    let r = plan_load(&pg, &plan, stream(&[good[0], good[1], r#"{"id":1,"code":"c"}"#]), &[]).expect(65);
    r.stderr_has(&["step 'teams' (teams): line 4: key (id) = 1 repeats line 2", "nothing was committed"]);
    assert_eq!(pg.schema_dump(), before, "a failed run changed the schema");
    // A child row without its parent: the key re-added before COMMIT names it.
    let r = plan_load(&pg, &plan, stream(&[good[0]]), &[]).expect(65);
    r.stderr_has(&["foreign key", "nothing was committed"]);
    assert_eq!(pg.schema_dump(), before);
    assert_eq!(pg.count("teams") + pg.count("members"), 0);

    let r = plan_load(&pg, &plan, stream(&good), &[]).ok();
    r.stderr_has(&["foreign keys set aside for the load are back and validated"]);
    assert_eq!(pg.count("teams") + pg.count("members"), 4);
    // The key was built after COPY (a new index), and every constraint is as it was: names,
    // definitions, deferrability, and m_code still NOT VALID.
    assert_ne!(pg.one(key_oid), oid_before, "the parent's key was not built after COPY");
    assert_eq!(pg.schema_dump(), before);
    assert_eq!(pg.one(valid), valid_before);
    assert_eq!(valid_before, "m_code=false m_team=true teams_lead=true");

    // A key from a table outside the plan: the parent keeps its indexes (and loads as before).
    pg.exec("TRUNCATE teams, members; CREATE TABLE audit (team int REFERENCES teams(id));");
    let oid_before = pg.one(key_oid);
    plan_load(&pg, &plan, stream(&good), &[]).ok();
    assert_eq!(pg.one(key_oid), oid_before);
}

#[test]
fn a_defer_fks_key_into_a_table_outside_the_plan_stays_not_valid_until_its_parents_are_loaded() {
    // BellSystems' phase-1 plan: quotations (--defer-fks) reference customers, which phase 2
    // loads; its items reference the quotations, inside the plan.
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE customers (id text PRIMARY KEY);
         CREATE TABLE quotations (id int PRIMARY KEY, customer_id text NOT NULL CONSTRAINT q_customer REFERENCES customers(id));
         CREATE TABLE items (id int PRIMARY KEY, quotation_id int NOT NULL CONSTRAINT i_quotation REFERENCES quotations(id));",
    );
    let t = TempDir::new();
    let plan = t.path("plan.ndjson");
    let steps = [
        // (Rebuilt however few its rows: the items' key into it is then set aside too.)
        Step {
            name: "1.6",
            source: "ndjson:q".into(),
            target: "quotations",
            load: &["--defer-fks", "--rebuild-indexes-from", "0"],
        },
        Step { name: "1.7", source: "ndjson:i".into(), target: "items", load: &[] },
    ];
    write_plan(&plan, &steps);
    let stream = |item_quotation: u32| {
        marker("1.6", "quotations")
            + "{\"id\":1,\"customer_id\":\"c1\"}\n{\"id\":2,\"customer_id\":\"c2\"}\n{\"$end\":{\"rows\":2}}\n"
            + &marker("1.7", "items")
            + &format!("{{\"id\":1,\"quotation_id\":{item_quotation}}}\n{{\"$end\":{{\"rows\":1}}}}\n")
    };
    let valid = "SELECT conname || ' ' || convalidated FROM pg_constraint WHERE contype = 'f' ORDER BY conname";
    let later = "ALTER TABLE \"public\".\"quotations\" VALIDATE CONSTRAINT \"q_customer\";";
    // The dry run (preflight's) goes through and leaves everything as it was.
    plan_load(&pg, &plan, stream(1), &["--dry-run"])
        .ok()
        .stderr_has(&["step '1.6' (quotations): foreign keys re-added NOT VALID", later]);
    assert_eq!(pg.count("quotations"), 0);
    assert_eq!(pg.rows(valid), ["i_quotation true", "q_customer true"]);
    // A key between the plan's own tables still refuses a missing parent.
    plan_load(&pg, &plan, stream(9), &[])
        .expect(65)
        .stderr_has(&["foreign key i_quotation of 'items'", "(quotation_id)=(9)"]);
    assert_eq!(pg.count("quotations"), 0);
    // With its indexes kept (two rows: the default), the items' COPY refuses it.
    let kept = t.path("kept.ndjson");
    write_plan(&kept, &[Step { load: &["--defer-fks"], ..steps[0].clone() }, steps[1].clone()]);
    plan_load(&pg, &kept, stream(9), &[])
        .expect(65)
        .stderr_has(&["step '1.7' (items): COPY: Key (quotation_id)=(9) is not present in table \"quotations\""]);
    assert_eq!(pg.count("quotations"), 0);
    let r = plan_load(&pg, &plan, stream(1), &[]).ok();
    r.stderr_has(&[later, "1 foreign keys set aside for the load are back and validated"]);
    assert_eq!(pg.rows(valid), ["i_quotation true", "q_customer false"]);
    // Phase 2 has loaded the customers: the next run of the plan validates the key.
    pg.exec("INSERT INTO customers VALUES ('c1'), ('c2')");
    let r = plan_load(&pg, &plan, stream(1), &[]).ok();
    assert!(!r.stderr().contains("NOT VALID"), "{}", r.describe());
    assert_eq!(pg.rows(valid), ["i_quotation true", "q_customer true"]);
}

#[test]
fn validate_fks_ends_a_per_step_run_with_the_keys_its_defer_fks_steps_left_not_valid() {
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE regions (id text PRIMARY KEY);
         CREATE TABLE customers (id text PRIMARY KEY);
         CREATE TABLE quotations (id int PRIMARY KEY,
             customer_id text NOT NULL CONSTRAINT q_customer REFERENCES customers(id),
             region text CONSTRAINT q_region REFERENCES regions(id));",
    );
    let t = TempDir::new();
    let plan = t.path("plan.ndjson");
    let steps = [
        Step { name: "1.6", source: "ndjson:q".into(), target: "quotations", load: &["--defer-fks"] },
        Step { name: "2.4", source: "ndjson:c".into(), target: "customers", load: &[] },
    ];
    write_plan(&plan, &steps);
    let valid = "SELECT conname || ' ' || convalidated FROM pg_constraint WHERE contype = 'f' ORDER BY conname";
    let validate = || cmd("pg-load").args(["--db", &pg.url, "--plan", &plan.display().to_string(), "--validate-fks"]);
    // Per step: the quotations first (their keys come back NOT VALID), then one customer of two.
    let quotations = "{\"id\":1,\"customer_id\":\"c1\",\"region\":\"eu\"}\n{\"id\":2,\"customer_id\":\"c2\"}\n{\"$end\":{\"rows\":2}}\n";
    cmd("pg-load").args(["--db", &pg.url, "--defer-fks", "--step", "1.6", "quotations"]).stdin(quotations).ok();
    cmd("pg-load").args(["--db", &pg.url, "customers"]).stdin("{\"id\":\"c1\"}\n{\"$end\":{\"rows\":1}}\n").ok();
    assert_eq!(pg.rows(valid), ["q_customer false", "q_region false"]);
    let r = validate().expect(1);
    r.stderr_has(&["step '1.6' (quotations): validate foreign key q_customer: Key (customer_id)=(c2) is not present"]);
    r.stderr_has(&["the key stays NOT VALID"]);
    assert_eq!(pg.rows(valid), ["q_customer false", "q_region false"]);
    pg.exec("INSERT INTO customers VALUES ('c2')");
    let r = validate().ok();
    r.stderr_has(&["step '1.6' (quotations): foreign key q_customer validated"]);
    // regions is no step's table: its key is left as it is, and the note says how to validate it.
    r.stderr_has(&[
        "foreign key q_region stays NOT VALID: no step of the plan loads regions",
        "VALIDATE CONSTRAINT \"q_region\"",
    ]);
    assert_eq!(pg.rows(valid), ["q_customer true", "q_region false"]);
}
