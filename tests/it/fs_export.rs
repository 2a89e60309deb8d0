//! fs-export against Google's Firestore emulator (FIRESTORE_EMULATOR_HOST, started by
//! tests/run), one project per test. Test data is written through the emulator's REST API
//! here; the tool itself only reads.

use crate::fs_proxy::{Fault, Proxy};
use crate::harness::*;
use serde_json::{json, Value};

/// One isolated emulator project.
pub struct Fs {
    pub project: String,
    host: String,
    http: reqwest::blocking::Client,
}

impl Fs {
    pub fn new() -> Fs {
        let host = std::env::var("FIRESTORE_EMULATOR_HOST")
            .expect("FIRESTORE_EMULATOR_HOST is not set: run the tests with tests/run, which starts the emulator");
        let project = unique("fs").replace('_', "-").to_lowercase();
        Fs { project, host, http: reqwest::blocking::Client::new() }
    }

    pub fn root(&self) -> String {
        format!("projects/{}/databases/(default)/documents", self.project)
    }

    /// Writes documents (path relative to the database, fields in Firestore's REST form).
    pub fn put(&self, docs: Vec<(String, Value)>) {
        for chunk in docs.chunks(500) {
            let writes: Vec<Value> = chunk
                .iter()
                .map(|(p, f)| json!({"update": {"name": format!("{}/{p}", self.root()), "fields": f}}))
                .collect();
            let url = format!("http://{}/v1/projects/{}/databases/(default)/documents:commit", self.host, self.project);
            let r = self
                .http
                .post(url)
                .header("Content-Type", "application/json")
                .header("Authorization", "Bearer owner")
                .body(json!({"writes": writes}).to_string())
                .send()
                .unwrap();
            let status = r.status();
            assert!(status.is_success(), "commit: {status}: {}", r.text().unwrap_or_default());
        }
    }

    pub fn put1(&self, path: &str, fields: Value) {
        self.put(vec![(path.to_string(), fields)]);
    }

    /// fs-export with this project.
    pub fn export(&self) -> Cmd {
        cmd("fs-export").args(["--project", &self.project])
    }
}

fn s(v: &str) -> Value {
    json!({"stringValue": v})
}
fn int(v: i64) -> Value {
    json!({"integerValue": v.to_string()})
}
fn ts(v: &str) -> Value {
    json!({"timestampValue": v})
}

/// The rows of a run (everything but the end record) and the end record.
fn split(rows: Vec<Value>) -> (Vec<Value>, Value) {
    let mut rows = rows;
    let end = rows.pop().expect("an end record");
    assert!(end.get("$end").is_some(), "last line is not the end record: {end}");
    (rows, end["$end"].clone())
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn every_value_kind_and_edge() {
    let fs = Fs::new();
    let mut nested = json!({"stringValue": "bottom"});
    for _ in 0..19 {
        nested = json!({"mapValue": {"fields": {"n": nested}}});
    }
    let r = |p: &str| json!({"referenceValue": format!("{}/{p}", fs.root())});
    fs.put1(
        "kinds/a",
        json!({
            "null": {"nullValue": null}, "t": {"booleanValue": true},
            "imax": int(i64::MAX), "imin": int(i64::MIN), "big": int(9007199254740993),
            "d": {"doubleValue": 0.1}, "d3": {"doubleValue": 3.0}, "dz": {"doubleValue": -0.0},
            "nan": {"doubleValue": "NaN"}, "inf": {"doubleValue": "Infinity"}, "ninf": {"doubleValue": "-Infinity"},
            "tiny": {"doubleValue": 5e-324}, "huge": {"doubleValue": 1.7976931348623157e308},
            "ts0": ts("2024-01-05T10:00:00Z"), "ts3": ts("2024-01-05T10:00:00.123Z"),
            "ts6": ts("2024-01-05T10:00:00.123456Z"), "ts9": ts("2024-01-05T10:00:00.123456789Z"),
            "moon": ts("1969-07-20T20:17:40.5Z"), "year1": ts("0001-01-01T00:00:00Z"),
            "s": s("héllo \"q\" \n\t💥\u{0}"), "empty": s(""),
            "bytes": {"bytesValue": "AP8Q"}, "nobytes": {"bytesValue": ""},
            "g0": {"geoPointValue": {"latitude": 0.0, "longitude": 0.0}},
            "gmax": {"geoPointValue": {"latitude": 90.0, "longitude": 180.0}},
            "gmin": {"geoPointValue": {"latitude": -90.0, "longitude": -180.0}},
            "ref": r("customers/c1"), "subref": r("customers/c1/orders/o9"),
            "m": {"mapValue": {}}, "arr": {"arrayValue": {}},
            "mix": {"arrayValue": {"values": [int(1), s("x"), {"nullValue": null},
                {"mapValue": {"fields": {"k": {"doubleValue": "NaN"}, "when": ts("2000-02-29T00:00:00.000001Z"),
                    "a": {"arrayValue": {}}}}}]}},
            "deep": nested,
            "vec": {"mapValue": {"fields": {"__type__": s("__vector__"),
                "value": {"arrayValue": {"values": [{"doubleValue": 0.5}, {"doubleValue": -1.0}]}}}}},
        }),
    );
    fs.put1("kinds/b", json!({}));
    // Odd characters in ids and field names.
    fs.put1(
        "kinds/ключ 🔑 #?&%2F",
        json!({"a.b": int(1), "`tick`": int(2), "ключ": int(3), "$end": int(4), " ": int(5)}),
    );
    let run = fs.export().arg("kinds").ok();
    let (rows, end) = split(run.json_lines());
    assert_eq!(rows.len(), 3);
    let a = &rows[0];
    let want = json!({
        "id": "a", "null": null, "t": true, "imax": i64::MAX, "imin": i64::MIN, "big": 9007199254740993i64,
        "d": 0.1, "nan": {"$float": "NaN"}, "inf": {"$float": "Infinity"}, "ninf": {"$float": "-Infinity"},
        "tiny": 5e-324, "huge": 1.7976931348623157e308,
        "ts0": "2024-01-05T10:00:00Z", "ts3": "2024-01-05T10:00:00.123Z", "ts6": "2024-01-05T10:00:00.123456Z",
        // Firestore keeps microseconds: the emulator (like production) truncates the 9 digits.
        "ts9": "2024-01-05T10:00:00.123456Z",
        "moon": "1969-07-20T20:17:40.5Z", "year1": "0001-01-01T00:00:00Z",
        "s": "héllo \"q\" \n\t💥\u{0}", "empty": "",
        "bytes": {"$base64": true, "encoded": "AP8Q"}, "nobytes": {"$base64": true, "encoded": ""},
        "g0": {"lat": 0.0, "lng": 0.0}, "gmax": {"lat": 90.0, "lng": 180.0}, "gmin": {"lat": -90.0, "lng": -180.0},
        "ref": "c1", "subref": "o9", "m": {}, "arr": [],
        "mix": [1, "x", null, {"a": [], "k": {"$float": "NaN"}, "when": "2000-02-29T00:00:00.000001Z"}],
        "deep": a["deep"].clone(), "vec": [0.5, -1.0],
        "d3": 3.0, "dz": a["dz"].clone(),
    });
    assert_eq!(a, &want);
    let text = run.stdout();
    let line = text.lines().next().unwrap();
    // Exact number texts: integers stay integers, floats keep ".0", int64 never via f64.
    for frag in [
        "\"d3\":3.0,",
        "\"imax\":9223372036854775807,",
        "\"imin\":-9223372036854775808,",
        "\"big\":9007199254740993,",
        "\"gmin\":{\"lat\":-90.0,\"lng\":-180.0}",
    ] {
        assert!(line.contains(frag), "{frag} not in {line}");
    }
    // The emulator stores -0.0 as 0.0 (the conversion of -0.0 itself is unit-tested).
    assert!(line.contains("\"dz\":0.0") || line.contains("\"dz\":-0.0"), "{line}");
    // 20 levels of maps, the string at the bottom.
    let mut d = &a["deep"];
    for _ in 0..19 {
        d = &d["n"];
    }
    assert_eq!(d, &json!("bottom"));
    // Keys: the id first, then fields sorted by name.
    assert!(line.starts_with("{\"id\":\"a\",\"arr\":[],\"big\":"), "{line}");
    assert_eq!(rows[1], json!({"id": "b"}));
    assert_eq!(rows[2], json!({"id": "ключ 🔑 #?&%2F", "a.b": 1, "`tick`": 2, "ключ": 3, "$end": 4, " ": 5}));
    assert_eq!(end["rows"], json!(3));
    assert_eq!(end["source"], json!("firestore"));
    assert_eq!(end["collection"], json!("kinds"));
    assert_eq!(end["project"], json!(fs.project));
    assert!(end["read_time"].as_str().unwrap().ends_with('Z'));
    run.stderr_has(&["at read time", "collection 'kinds': 3 documents"]);

    // References as paths on request; a document with an odd id by its path.
    let rows = fs.export().args(["kinds/a", "--ref-paths", "--fields", "ref,subref"]).ok().json_lines();
    assert_eq!(rows[0], json!({"id": "a", "ref": "customers/c1", "subref": "customers/c1/orders/o9"}));
    let rows = fs.export().args(["kinds/ключ 🔑 #?&%2F", "--fields", "a.b,`tick`"]).ok().json_lines();
    assert_eq!(rows[0], json!({"id": "ключ 🔑 #?&%2F", "a.b": 1, "`tick`": 2}));
    assert_eq!(rows[1]["$end"]["document"], json!("kinds/ключ 🔑 #?&%2F"));
}

#[test]
fn pages_join_without_gaps_or_duplicates() {
    let fs = Fs::new();
    let docs: Vec<(String, Value)> = (0..3000)
        .map(|i| (format!("big/d{i:05}"), json!({"n": int(i), "pad": s(&"x".repeat(i as usize % 50))})))
        .collect();
    fs.put(docs);
    let clean = fs.export().args(["big", "--page-size", "1000"]).ok().json_lines();
    let (rows, end) = split(clean.clone());
    assert_eq!(rows.len(), 3000);
    assert_eq!(end["rows"], json!(3000));
    let want: Vec<String> = (0..3000).map(|i| format!("d{i:05}")).collect();
    assert_eq!(ids(&rows), want);
    // Pages smaller than the collection, exact divisors (a full last page), and 1.
    for size in ["7", "300", "3000"] {
        let other =
            fs.export().args(["big", "--page-size", size, "--read-time", end["read_time"].as_str().unwrap()]).ok();
        assert_eq!(other.json_lines(), clean, "page size {size}");
    }
    let few = fs.export().args(["big", "--page-size", "1", "--fields", "n"]).env("X", "1").ok().json_lines();
    assert_eq!(few.len(), 3001);
    assert_eq!(few[2999], json!({"id": "d02999", "n": 2999}));
    let count = fs.export().args(["--count", "big"]).ok().json_lines();
    assert_eq!(count[0]["rows"], json!(3000));
    assert_eq!(count[0]["collection"], json!("big"));
}

#[test]
fn groups_across_parents_and_missing_parents() {
    let fs = Fs::new();
    let mut docs = vec![];
    for c in 0..40 {
        // Every other customer document is missing: its orders still exist.
        if c % 2 == 0 {
            docs.push((format!("customers/c{c:02}"), json!({"name": s(&format!("C{c}"))})));
        }
        for o in 0..3 {
            docs.push((format!("customers/c{c:02}/orders/o{o}"), json!({"total": int(c * 10 + o)})));
        }
    }
    docs.push(("orders/top".into(), json!({"total": int(-1)})));
    docs.push(("a/x/b/y/orders/deep".into(), json!({"total": int(-2)})));
    docs.push(("customers/c01/notes/n1".into(), json!({})));
    fs.put(docs);
    let run = fs.export().args(["--group", "orders", "--parent-field", "customer_id", "--page-size", "7"]).ok();
    let (rows, end) = split(run.json_lines());
    assert_eq!(rows.len(), 40 * 3 + 2);
    assert_eq!(end["group"], json!("orders"));
    // Name order: a/x/b/y/orders/deep, customers/..., orders/top.
    assert_eq!(rows[0], json!({"id": "deep", "customer_id": "y", "total": -2}));
    assert_eq!(rows[1], json!({"id": "o0", "customer_id": "c00", "total": 0}));
    assert_eq!(rows[5], json!({"id": "o1", "customer_id": "c01", "total": 11}));
    assert_eq!(rows[121], json!({"id": "top", "customer_id": null, "total": -1}));
    let with_path =
        fs.export().args(["--group", "orders", "--path-field", "path", "--fields", "total"]).ok().json_lines();
    assert_eq!(with_path[4], json!({"id": "o0", "path": "customers/c01/orders/o0", "total": 10}));
    // A subcollection under a missing parent, exported by path.
    let rows = fs.export().args(["customers/c03/orders", "--parent-field", "customer_id"]).ok().json_lines();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[2], json!({"id": "o2", "customer_id": "c03", "total": 32}));
    // Top-level collection: only the existing customer documents.
    let (rows, _) = split(fs.export().arg("customers").ok().json_lines());
    assert_eq!(rows.len(), 20);
    let count = fs.export().args(["--count", "--group", "orders"]).ok().json_lines();
    assert_eq!(count[0]["rows"], json!(122));
    fs.export().args(["customers", "--parent-field", "x"]).expect(64).stderr_has(&["top-level collection"]);
}

#[test]
fn one_snapshot_at_one_read_time() {
    let fs = Fs::new();
    fs.put((0..5).map(|i| (format!("snap/d{i}"), json!({"v": int(i)}))).collect());
    let first = fs.export().arg("snap").ok();
    let (_, end) = split(first.json_lines());
    let t = end["read_time"].as_str().unwrap().to_string();
    first.stderr_has(&[&format!("--read-time {t}")]);
    // Changes after the read time are invisible to an export at that read time.
    fs.put(vec![("snap/d1".into(), json!({"v": int(100)})), ("snap/d9".into(), json!({"v": int(9)}))]);
    let again = fs.export().args(["snap", "--read-time", &t, "--page-size", "2"]).ok().json_lines();
    assert_eq!(again, first.json_lines());
    let now = fs.export().arg("snap").ok().json_lines();
    assert_eq!(now.len(), 7);
    assert_eq!(now[1], json!({"id": "d1", "v": 100}));
    let count = fs.export().args(["--count", "snap", "--read-time", &t]).ok().json_lines();
    assert_eq!(count[0], json!({"collection": "snap", "rows": 5, "read_time": t}));
    // A read time Firestore no longer keeps: a clear error that says what to do.
    fs.export().args(["snap", "--read-time", "2001-01-01T00:00:00Z"]).expect(64).stderr_has(&[
        "read time 2001-01-01T00:00:00Z is too old",
        "one hour",
        "run without --read-time",
    ]);
    fs.export().args(["snap", "--read-time", "yesterday"]).expect(64).stderr_has(&["not an RFC 3339 timestamp"]);
}

#[test]
fn fields_drop_keys_and_documents() {
    let fs = Fs::new();
    fs.put1("crm/c1", json!({"name": s("Ann"), "negotiating": {"booleanValue": true}, "has_problem": {"booleanValue": false}, "id": s("c1")}));
    fs.put1("crm/c2", json!({"name": s("Bob"), "id": s("other")}));
    fs.put1("settings/console", json!({"theme": s("dark")}));
    // A field named like the id key that agrees with the id is written once.
    let rows = fs.export().args(["crm/c1", "--drop", "negotiating,has_problem"]).ok().json_lines();
    assert_eq!(rows[0], json!({"id": "c1", "name": "Ann"}));
    // One that disagrees is an error that names the way out.
    fs.export().arg("crm").expect(65).stderr_has(&["document 'crm/c2'", "field 'id'", "--drop id"]);
    let rows = fs.export().args(["crm", "--id-field", "doc_id", "--drop", "negotiating,has_problem"]).ok().json_lines();
    assert_eq!(rows[1], json!({"doc_id": "c2", "id": "other", "name": "Bob"}));
    let run = fs.export().args(["crm", "--drop", "id", "--fields", "name,id,missing"]).ok();
    assert!(
        run.stdout().starts_with("{\"id\":\"c1\",\"name\":\"Ann\"}\n{\"id\":\"c2\",\"name\":\"Bob\"}\n"),
        "{}",
        run.stdout()
    );
    // One document; a missing one; paths that are neither.
    let rows = fs.export().arg("settings/console").ok().json_lines();
    assert_eq!(rows[0], json!({"id": "console", "theme": "dark"}));
    fs.export().arg("settings/nope").expect(66).stderr_has(&["document 'settings/nope' does not exist"]);
    let run = fs.export().arg("no_such_collection").ok();
    assert_eq!(run.json_lines(), vec![json!({"$end": run.json_lines()[0]["$end"].clone()})]);
    run.stderr_has(&["warning: no documents in collection 'no_such_collection'"]);
    fs.export().arg("a//b").expect(64);
    fs.export().expect(64).stderr_has(&["missing argument PATH", "Try 'fs-export --help'"]);
    fs.export().args(["crm", "--group", "x"]).expect(64);
    fs.export().args(["crm", "--parent-field", "id"]).expect(64);
    fs.export().args(["crm", "--page-size", "0"]).expect(64);
    fs.export().args(["crm", "--bogus"]).expect(64).stderr_has(&["unknown option '--bogus'"]);
    cmd("fs-export").arg("crm").expect(64).stderr_has(&["no project"]);
    cmd("fs-export")
        .args(["--project", "p", "crm"])
        .env_remove("FIRESTORE_EMULATOR_HOST")
        .expect(64)
        .stderr_has(&["no Firestore credentials"]);
    let help = cmd("fs-export").arg("--help").ok().stdout();
    for opt in
        ["--group", "--parent-field", "--read-time", "--resume-after", "--count", "--token-command", "Exit status:"]
    {
        assert!(help.contains(opt), "--help lacks {opt}");
    }
}

/// A collection of 60 documents and its clean export at page size 7.
fn sixty(fs: &Fs) -> (Vec<Value>, String) {
    fs.put((0..60).map(|i| (format!("items/i{i:02}"), json!({"n": int(i), "s": s(&"y".repeat(200))}))).collect());
    let clean = fs.export().args(["items", "--page-size", "7"]).ok().json_lines();
    let t = clean.last().unwrap()["$end"]["read_time"].as_str().unwrap().to_string();
    (clean, t)
}

#[test]
fn retries_give_exactly_the_clean_rows() {
    let fs = Fs::new();
    let (clean, t) = sixty(&fs);
    // 503s, 429s, and bodies cut off at the start, mid-document and near the end.
    let plan = |n: usize| match n {
        0 => Fault::Status(503, "UNAVAILABLE"),
        1 => Fault::Cut(40),
        2 => Fault::Status(429, "RESOURCE_EXHAUSTED"),
        4 => Fault::Cut(2500),
        5 => Fault::Cut(3),
        7 => Fault::Status(500, "INTERNAL"),
        9 => Fault::Cut(4000),
        10 => Fault::Status(504, "DEADLINE_EXCEEDED"),
        _ => Fault::Pass,
    };
    let proxy = Proxy::start(plan);
    let run = fs
        .export()
        .args(["items", "--page-size", "7", "--backoff", "5", "--read-time", &t])
        .env("FIRESTORE_EMULATOR_HOST", &proxy.addr)
        .ok();
    assert_eq!(run.json_lines(), clean);
    run.stderr_has(&["503 UNAVAILABLE", "429 RESOURCE_EXHAUSTED", "the response", "retry 1 in", "8 retries"]);
    // Every retried page asked for the same read time and started after the last document received.
    for r in proxy.seen.lock().unwrap().iter() {
        assert!(r.line.starts_with("POST /v1/projects/") && r.line.contains("/documents:runQuery "), "{}", r.line);
        assert!(r.body.contains(&t), "{}", r.body);
    }
    // Without --read-time the first page's read time holds for the whole run, retries included.
    let proxy = Proxy::start(|n| if n % 3 == 1 { Fault::Cut(1500) } else { Fault::Pass });
    let run = fs
        .export()
        .args(["items", "--page-size", "7", "--backoff", "1"])
        .env("FIRESTORE_EMULATOR_HOST", &proxy.addr)
        .ok();
    let (rows, end) = split(run.json_lines());
    assert_eq!(rows, split(clean.clone()).0);
    let seen = proxy.seen.lock().unwrap();
    let rt = end["read_time"].as_str().unwrap();
    assert!(!seen[0].body.contains("readTime"));
    assert!(seen[1..].iter().all(|r| r.body.contains(rt)));
    assert!(seen.iter().all(|r| r.authorization == "Bearer owner"));
}

#[test]
fn bounded_attempts_and_the_resume_command() {
    let fs = Fs::new();
    let (clean, t) = sixty(&fs);
    let (clean_rows, _) = split(clean);
    // Two pages, then the service stays down.
    let proxy = Proxy::start(|n| if n < 2 { Fault::Pass } else { Fault::Status(503, "UNAVAILABLE") });
    let run = fs
        .export()
        .args(["items", "--page-size", "7", "--retries", "3", "--backoff", "1"])
        .env("FIRESTORE_EMULATOR_HOST", &proxy.addr)
        .expect(75);
    assert_eq!(proxy.requests(), 2 + 3);
    run.stderr_has(&["gave up after 3 attempts in a row: 503 UNAVAILABLE", "14 documents were written"]);
    let partial = run.json_lines();
    assert_eq!(partial, clean_rows[..14].to_vec(), "no end record, every row received written");
    // The printed command continues exactly after the last row, at the same read time.
    let err = run.stderr();
    let command = err.lines().find_map(|l| l.split_once("run: ").map(|x| x.1.to_string())).expect("a resume command");
    let announced = err.split("at read time ").nth(1).unwrap().split(' ').next().unwrap();
    assert!(command.ends_with(&format!("--read-time {announced} --resume-after items/i13")), "{command}");
    let bin_dir = bin("fs-export").parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = std::process::Command::new("sh").arg("-c").arg(&command).env("PATH", path).output().unwrap();
    assert!(out.status.success(), "{command}: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    let rest: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (rest_rows, end) = split(rest);
    let mut joined = partial.clone();
    joined.extend(rest_rows);
    assert_eq!(joined, clean_rows);
    assert_eq!(end["rows"], json!(46));
    assert_eq!(end["resumed_after"], json!("items/i13"));
    // --resume-after takes an id within a collection, too.
    let rows = fs.export().args(["items", "--resume-after", "i57", "--read-time", &t]).ok().json_lines();
    assert_eq!(ids(&rows[..2]), vec!["i58", "i59"]);
    fs.export()
        .args(["items", "--resume-after", "other/x"])
        .expect(64)
        .stderr_has(&["not a document of collection 'items'"]);
    // No retry on a refusal: one request, exit 69.
    let proxy = Proxy::start(|_| Fault::Status(403, "PERMISSION_DENIED"));
    fs.export()
        .arg("items")
        .env("FIRESTORE_EMULATOR_HOST", &proxy.addr)
        .expect(69)
        .stderr_has(&["403 PERMISSION_DENIED"]);
    assert_eq!(proxy.requests(), 1);
    let proxy = Proxy::start(|_| Fault::Status(404, "NOT_FOUND"));
    fs.export().arg("items").env("FIRESTORE_EMULATOR_HOST", &proxy.addr).expect(66);
    assert_eq!(proxy.requests(), 1);
    // Nothing listening: retried, then unavailable.
    fs.export()
        .args(["items", "--retries", "2", "--backoff", "1"])
        .env("FIRESTORE_EMULATOR_HOST", "127.0.0.1:1")
        .expect(69)
        .stderr_has(&["cannot reach http://127.0.0.1:1: gave up after 2 attempts"]);
}

#[test]
fn credentials_tokens_and_keys_never_printed() {
    use openssl::{hash::MessageDigest, pkey::PKey, rsa::Rsa, sign::Verifier};
    let fs = Fs::new();
    fs.put1("c/d", json!({"v": int(1)}));
    let t = TempDir::new();
    // A token from a command: sent as the bearer token, never shown.
    let proxy = Proxy::with_auth(|_| Fault::Pass, |h| (h == "Bearer s3cr3t-token").then(|| "Bearer owner".into()));
    let endpoint = format!("http://{}", proxy.addr);
    let run = fs.export().args(["c", "--endpoint", &endpoint, "--token-command", "echo s3cr3t-token"]).ok();
    assert_eq!(run.json_lines()[0], json!({"id": "d", "v": 1}));
    assert!(!run.stderr().contains("s3cr3t"));
    // A refused token from a command is renewed once by running the command again.
    let counter = t.str("calls");
    let script = format!("n=$(cat '{counter}' 2>/dev/null || echo 0); echo $((n+1)) > '{counter}'; if [ $n = 0 ]; then echo stale-s3cr3t; else echo s3cr3t-token; fi");
    let run = fs.export().args(["c", "--endpoint", &endpoint, "--token-command", &script]).ok();
    assert_eq!(run.json_lines().len(), 2);
    run.stderr_has(&["401 UNAUTHENTICATED", "renewing the token"]);
    assert!(!run.stderr().contains("s3cr3t"));
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "2");
    // From an environment variable; a wrong one is refused (401, renewed never: exit 69).
    let run = fs.export().args(["c", "--endpoint", &endpoint]).env("GOOGLE_OAUTH_ACCESS_TOKEN", "s3cr3t-token").ok();
    assert_eq!(run.json_lines().len(), 2);
    let run = fs
        .export()
        .args(["c", "--endpoint", &endpoint, "--token-env", "MY_TOKEN"])
        .env("MY_TOKEN", "wrong-s3cr3t")
        .expect(69);
    assert!(!run.stderr().contains("s3cr3t"), "{}", run.stderr());
    // A failing token command: its stderr explains, its stdout is never shown.
    let run = fs
        .export()
        .args(["c", "--endpoint", &endpoint, "--token-command", "echo s3cr3t; echo not logged in >&2; exit 3"])
        .expect(69);
    run.stderr_has(&["--token-command failed (exit status 3): not logged in"]);
    assert!(!run.stderr().contains("s3cr3t"));
    // A service-account key: a self-signed RS256 JWT the proxy verifies with the public key.
    let rsa = Rsa::generate(2048).unwrap();
    let pem = String::from_utf8(rsa.private_key_to_pem().unwrap()).unwrap();
    let key = json!({"type": "service_account", "project_id": fs.project, "private_key_id": "kid1",
        "private_key": pem, "client_email": "exporter@p.iam.gserviceaccount.com"});
    std::fs::write(t.path("key.json"), key.to_string()).unwrap();
    let public = PKey::from_rsa(Rsa::public_key_from_pem(&rsa.public_key_to_pem().unwrap()).unwrap()).unwrap();
    let proxy = Proxy::with_auth(
        |_| Fault::Pass,
        move |h| {
            let jwt = h.strip_prefix("Bearer ")?;
            let parts: Vec<&str> = jwt.split('.').collect();
            let dec = |s: &str| pgferry::firestore::base64_any_decode(s).ok();
            let claims: Value = serde_json::from_slice(&dec(parts.get(1)?)?).ok()?;
            let mut v = Verifier::new(MessageDigest::sha256(), &public).ok()?;
            v.update(format!("{}.{}", parts[0], parts[1]).as_bytes()).ok()?;
            let ok = v.verify(&dec(parts[2])?).ok()? && claims["iss"] == json!("exporter@p.iam.gserviceaccount.com");
            ok.then(|| "Bearer owner".to_string())
        },
    );
    let endpoint = format!("http://{}", proxy.addr);
    // The project comes from the key file.
    let run = cmd("fs-export")
        .args(["c", "--endpoint", &endpoint])
        .env("GOOGLE_APPLICATION_CREDENTIALS", t.path("key.json"))
        .ok();
    assert_eq!(run.json_lines()[0], json!({"id": "d", "v": 1}));
    assert!(!run.stderr().contains("PRIVATE KEY"));
    let jwt = proxy.seen.lock().unwrap()[0].authorization.clone();
    assert!(!run.stderr().contains(&jwt[7..]));
    let count = cmd("fs-export")
        .args(["--count", "c", "--endpoint", &endpoint, "--credentials", &t.str("key.json")])
        .ok()
        .json_lines();
    assert_eq!(count[0]["rows"], json!(1));
    // Plain http to another machine with credentials is refused; a user login is not a key.
    fs.export()
        .args(["c", "--endpoint", "http://example.com", "--token-command", "echo x"])
        .expect(64)
        .stderr_has(&["https only"]);
    // A user's login without its client: named, never echoed (src/gauth.rs; tests/it/adc.rs).
    std::fs::write(t.path("user.json"), r#"{"type": "authorized_user", "refresh_token": "s3cr3t"}"#).unwrap();
    let run = fs.export().args(["c", "--endpoint", &endpoint, "--credentials", &t.str("user.json")]).expect(65);
    run.stderr_has(&["user.json': no \"client_id\""]);
    assert!(!run.stderr().contains("s3cr3t"));
}

#[test]
fn a_closed_pipe_is_a_normal_end() {
    let fs = Fs::new();
    fs.put((0..3000).map(|i| (format!("p/d{i:05}"), json!({"s": s(&"z".repeat(100))}))).collect());
    let bin = bin("fs-export");
    let sh = format!("'{}' --project {} p | head -n 1", bin.display(), fs.project);
    let out = std::process::Command::new("bash").args(["-c", &format!("set -o pipefail; {sh}")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
}

/// The BellSystems plan, phase 2: customers and their orders (a subcollection) from
/// Firestore into the plan's PostgreSQL tables, through `fs-export … | pg-load …`.
#[test]
fn the_pipe_into_postgres() {
    let fs = Fs::new();
    let pg = Pg::new();
    pg.exec(
        "CREATE TABLE crm_customers (
            id TEXT PRIMARY KEY, firestore_id TEXT UNIQUE, title TEXT, name TEXT NOT NULL, surname TEXT,
            organization TEXT, language TEXT NOT NULL DEFAULT 'el', folder_id TEXT UNIQUE NOT NULL,
            relationship_status TEXT NOT NULL DEFAULT 'lead', contacts JSONB NOT NULL DEFAULT '[]',
            location JSONB, tags TEXT[] NOT NULL DEFAULT '{}', crm_summary JSONB,
            created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL);
         CREATE TABLE crm_orders (
            id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES crm_customers(id) ON DELETE CASCADE,
            order_number TEXT UNIQUE NOT NULL, status TEXT NOT NULL DEFAULT 'negotiating',
            items JSONB NOT NULL DEFAULT '[]', subtotal NUMERIC(12,2) NOT NULL DEFAULT 0,
            total_price NUMERIC(12,2) NOT NULL DEFAULT 0, currency TEXT NOT NULL DEFAULT 'EUR',
            payment_status JSONB NOT NULL DEFAULT '{}', created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL);",
    );
    let mut docs = vec![];
    for c in 0..3 {
        docs.push((
            format!("crm_customers/cust-{c}"),
            json!({
                "name": s(&format!("Όνομα {c}")), "surname": s("Papadopoulos"), "folder_id": s(&format!("f{c}")),
                "contacts": {"arrayValue": {"values": [{"mapValue": {"fields": {"type": s("email"),
                    "value": s(&format!("c{c}@example.org")), "primary": {"booleanValue": true}}}}]}},
                "location": {"mapValue": {"fields": {"city": s("Athens"), "geo": {"geoPointValue": {"latitude": 37.98, "longitude": 23.72}}}}},
                "tags": {"arrayValue": {"values": [s("church"), s("bells")]}},
                "crm_summary": {"mapValue": {}},
                "created_at": ts("2024-01-05T10:00:00.123456Z"), "updated_at": ts("1969-12-31T23:59:59Z"),
                // Legacy fields the plan strips.
                "negotiating": {"booleanValue": true}, "has_problem": {"booleanValue": false},
            }),
        ));
        for o in 0..2 {
            docs.push((
                format!("crm_customers/cust-{c}/orders/ord-{c}-{o}"),
                json!({
                    "order_number": s(&format!("N-{c}{o}")), "status": s("paid"),
                    "items": {"arrayValue": {"values": [{"mapValue": {"fields": {"sku": s("BELL-1"), "qty": int(2)}}}]}},
                    "subtotal": {"doubleValue": 1000.1}, "total_price": {"doubleValue": 1234.5},
                    "payment_status": {"mapValue": {"fields": {"paid": {"booleanValue": true}}}},
                    "created_at": ts("2025-03-01T08:30:00Z"), "updated_at": ts("2025-03-02T08:30:00.5Z"),
                }),
            ));
        }
    }
    fs.put(docs);
    let bin_dir = bin("fs-export").parent().unwrap().to_path_buf();
    let pipe = |script: &str| {
        let out = std::process::Command::new("bash")
            .args(["-c", &format!("set -o pipefail; {script}")])
            .env("PATH", format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default()))
            .env("PROJECT", &fs.project)
            .env("DB", &pg.url)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{script}: {:?}\n{err}", out.status);
        err
    };
    // firestore_id, "same value during transition": the document id into both columns.
    let err = pipe(
        r#"fs-export --project "$PROJECT" crm_customers --drop negotiating,has_problem |
           pg-load crm_customers --copy-key id=firestore_id --db "$DB""#,
    );
    assert!(err.contains("Source: 3 rows → Postgres: 3 rows ✓"), "{err}");
    assert_eq!(pg.one("SELECT count(*) FROM crm_customers WHERE firestore_id = id"), "3");
    let err = pipe(
        r#"fs-export --project "$PROJECT" --group orders --parent-field customer_id | pg-load crm_orders --db "$DB""#,
    );
    assert!(err.contains("Source: 6 rows → Postgres: 6 rows ✓"), "{err}");
    assert_eq!(
        pg.rows(
            "SELECT id, name, folder_id, language, relationship_status, tags::text, contacts->0->>'value',
                 location->'geo'->>'lat', crm_summary::text,
                 created_at = '2024-01-05T10:00:00.123456Z', updated_at = '1969-12-31T23:59:59Z'
                 FROM crm_customers ORDER BY id"
        ),
        (0..3)
            .map(|c| format!("cust-{c}|Όνομα {c}|f{c}|el|lead|{{church,bells}}|c{c}@example.org|37.98|{{}}|t|t"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        pg.rows(
            "SELECT id, customer_id, order_number, subtotal::text, total_price::text, items->0->>'qty',
                 payment_status::text, created_at = '2025-03-01T08:30:00Z', updated_at = '2025-03-02T08:30:00.5Z'
                 FROM crm_orders WHERE id = 'ord-2-1'"
        ),
        vec!["ord-2-1|cust-2|N-21|1000.10|1234.50|2|{\"paid\": true}|t|t".to_string()]
    );
    // The same pipe again is idempotent.
    let err = pipe(
        r#"fs-export --project "$PROJECT" --group orders --parent-field customer_id | pg-load crm_orders --db "$DB""#,
    );
    assert!(err.contains("Postgres: 6 rows"), "{err}");
    assert_eq!(pg.count("crm_orders"), 6);
}
