//! `--assume-tz` with an IANA zone, into a real timestamptz column, on both sides of
//! daylight-saving changes: the same instants PostgreSQL itself gives those local times.

use crate::harness::*;

#[test]
fn europe_athens_across_both_dst_changes_agrees_with_postgresql() {
    let pg = Pg::new();
    pg.exec("CREATE TABLE readings (id int PRIMARY KEY, at timestamptz, day date)");
    // Written by a SQLite app with datetime('now', 'localtime') in Athens.
    let local = [
        "2024-03-31 02:59:59", // +02:00, the last second of winter time
        "2024-03-31 03:30:00", // skipped: clocks went from 03:00 to 04:00
        "2024-03-31 04:00:00", // +03:00
        "2024-07-15 12:00:00", // summer
        "2024-10-27 03:30:00", // twice: 03:30 +03:00, then 03:30 +02:00
        "2024-10-27 04:00:00", // +02:00
        "2024-01-05 10:00:00", // winter
    ];
    let mut input = String::new();
    for (i, t) in local.iter().enumerate() {
        input.push_str(&format!("{{\"id\":{i},\"at\":\"{t}\"}}\n"));
    }
    // A written offset is kept whatever the zone.
    input.push_str("{\"id\":100,\"at\":\"2024-07-15 12:00:00Z\"}\n");
    input.push_str(&format!("{{\"$end\":{{\"rows\":{}}}}}\n", local.len() + 1));
    cmd("pg-load").args(["--db", &pg.url, "readings", "--assume-tz", "Europe/Athens"]).stdin(input).ok();
    for (i, t) in local.iter().enumerate() {
        let ours = pg.one(&format!("SELECT at AT TIME ZONE 'UTC' FROM readings WHERE id = {i}"));
        let theirs = pg.one(&format!("SELECT ('{t}'::timestamp AT TIME ZONE 'Europe/Athens') AT TIME ZONE 'UTC'"));
        assert_eq!(ours, theirs, "{t}");
    }
    let utc = |id: i32| {
        pg.one(&format!("SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM readings WHERE id = {id}"))
    };
    assert_eq!(utc(0), "2024-03-31 00:59:59");
    assert_eq!(utc(2), "2024-03-31 01:00:00");
    assert_eq!(utc(3), "2024-07-15 09:00:00");
    assert_eq!(utc(6), "2024-01-05 08:00:00");
    assert_eq!(utc(100), "2024-07-15 12:00:00");
    // An unknown zone is a usage error naming it; nothing loads.
    let r = cmd("pg-load")
        .args(["--db", &pg.url, "readings", "--assume-tz", "Europe/Atlantis"])
        .stdin("{\"$end\":{\"rows\":0}}\n")
        .expect(64);
    r.stderr_has(&["--assume-tz: 'Europe/Atlantis' is neither UTC"]);
}
