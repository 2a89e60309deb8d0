# shellcheck shell=bash
# The benchmarks' source table: a device_logs-style SQLite table (id, serial, level, 40-120
# char message, epoch integer, text timestamp). Sourced by bench/load.sh and bench/count-check.sh.

# gen_sqlite FILE N: N rows of device_logs in a new SQLite file.
gen_sqlite() {
  sqlite3 "$1" >/dev/null <<SQL
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
CREATE TABLE device_logs (id INTEGER PRIMARY KEY, device_serial TEXT NOT NULL, level TEXT NOT NULL,
  message TEXT NOT NULL, device_timestamp INTEGER, received_at TEXT NOT NULL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $2)
INSERT INTO device_logs
SELECT x, printf('SN-%05d', abs(random()) % 5000),
       CASE abs(random()) % 4 WHEN 0 THEN 'debug' WHEN 1 THEN 'info' WHEN 2 THEN 'warn' ELSE 'error' END,
       substr('heartbeat ok; relay state changed; bell strike scheduled; melody played to end; ' ||
              'temperature nominal; firmware check done; mqtt reconnect after timeout; queue drained', 1 + abs(random()) % 40, 40 + abs(random()) % 81),
       1700000000 + x * 13,
       strftime('%Y-%m-%d %H:%M:%f', 1700000000 + x * 13, 'unixepoch')
FROM c;
SQL
}
