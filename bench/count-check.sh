#!/usr/bin/env bash
# Benchmark: count-check --full, SQLite against PostgreSQL, next to the time both sides
# take just to be read, in one run.
#
# Usage: bench/count-check.sh [ROWS]        (default 2000000)
# Generates a device_logs-style SQLite table (id, serial, level, message, epoch integer,
# text timestamp), loads it into a throwaway PostgreSQL with sqlite-dump | pg-load, then
# times:
#   sqlite    sqlite-dump DB device_logs > /dev/null
#   pg        psql -c "\copy (SELECT … ORDER BY id) to /dev/null"
#   reads     both of the above at the same time (what count-check does)
#   full      count-check --full sqlite:DB:device_logs pg:device_logs
# and count-check again at ROWS/10 to show its memory is flat. Prints seconds, rows/s,
# peak RSS and the ratios. Target: full within 1.5x of the reads, memory under 64 MB.
# Not a test: run it on demand.
# Exit status: 0 when every run completed and count-check found the tables equal.
set -Eeuo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/../scripts/lib/common.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$(dirname "$0")/../scripts/lib/throwaway-pg.sh"
# shellcheck source=bench/device-logs.sh
source "$(dirname "$0")/device-logs.sh"
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

ROWS="${1:-2000000}"
WORK=""
BIN=""

# load TABLE DB: a fresh PostgreSQL table loaded from the SQLite one.
load() {
  pg_psql -q <<SQL
DROP TABLE IF EXISTS $1;
CREATE TABLE $1 (id bigint PRIMARY KEY, device_serial text NOT NULL, level text NOT NULL,
  message text NOT NULL, device_timestamp bigint, received_at timestamptz NOT NULL);
SQL
  "${BIN}/sqlite-dump" "$2" device_logs 2>/dev/null | "${BIN}/pg-load" "$1" 2>/dev/null
  pg_psql -q -c "VACUUM ANALYZE $1" -c "CHECKPOINT"
}

# timed NAME CMD: runs CMD under bash, prints elapsed seconds into WORK/NAME.secs.
timed() {
  local name="$1" start end
  shift
  start="$(date +%s.%N)"
  bash -c "set -o pipefail; $*"
  end="$(date +%s.%N)"
  python3 -c "print(f'{${end} - ${start}:.2f}')" >"${WORK}/${name}.secs"
}

# peak_kb FILE: the max RSS a /usr/bin/time -v report recorded.
peak_kb() {
  awk -F': ' '/Maximum resident set size/ {print $2}' "$1"
}

main() {
  need_cmd sqlite3 psql python3 /usr/bin/time cargo
  cd "$(repo_root)"
  log "building release binaries"
  cargo build --release --quiet --bin sqlite-dump --bin pg-load --bin count-check
  BIN="$(pwd)/target/release"
  WORK="$(mktemp -d /tmp/pgferry-bench.XXXXXX)"
  chmod 755 "${WORK}"
  trap_add "rm -rf '${WORK}'"
  throwaway_pg_start "-c shared_buffers=256MB -c max_wal_size=4GB"
  bench_pg_env
  local db="${WORK}/logs.sqlite" small="${WORK}/small.sqlite" small_rows=$((ROWS / 10))
  log "generating and loading ${ROWS} rows"
  gen_sqlite "${db}" "${ROWS}"
  gen_sqlite "${small}" "${small_rows}"
  load device_logs "${db}"
  load small_logs "${small}"
  local copy="\\copy (SELECT * FROM device_logs ORDER BY id) to /dev/null"

  log "reading SQLite: sqlite-dump > /dev/null"
  timed sqlite "'${BIN}/sqlite-dump' '${db}' device_logs >/dev/null 2>&1"
  log "reading PostgreSQL: psql \\copy (… ORDER BY id) to /dev/null"
  timed pg "psql -X -q --no-password -c '${copy}'"
  log "reading both at once"
  timed reads "'${BIN}/sqlite-dump' '${db}' device_logs >/dev/null 2>&1 & psql -X -q --no-password -c '${copy}'; wait"
  log "count-check --full"
  timed full "/usr/bin/time -v -o '${WORK}/full.time' '${BIN}/count-check' --full \
    'sqlite:${db}:device_logs' pg:device_logs >'${WORK}/full.json' 2>'${WORK}/full.err'" ||
    die 1 "count-check --full failed: $(tail -n 3 "${WORK}/full.err")"
  log "count-check --full at ${small_rows} rows (memory flatness)"
  /usr/bin/time -v -o "${WORK}/small.time" "${BIN}/count-check" --full \
    "sqlite:${small}:device_logs" pg:small_logs >/dev/null 2>&1 ||
    die 1 "count-check --full at ${small_rows} rows failed"

  python3 - "${WORK}" "${ROWS}" "$(peak_kb "${WORK}/full.time")" "$(peak_kb "${WORK}/small.time")" "${small_rows}" <<'PY'
import sys
work, rows = sys.argv[1], int(sys.argv[2])
full_kb, small_kb, small = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
t = {n: float(open(f"{work}/{n}.secs").read()) for n in ["sqlite", "pg", "reads", "full"]}
print(f"\n{rows} rows, device_logs, SQLite against PostgreSQL")
print(f"{'run':<32} {'seconds':>8} {'rows/s':>10}")
names = {"sqlite": "sqlite-dump > /dev/null", "pg": "psql \\copy (… ORDER BY id)", "reads": "both reads at once", "full": "count-check --full"}
for n in ["sqlite", "pg", "reads", "full"]:
    print(f"{names[n]:<32} {t[n]:>8.2f} {rows / t[n]:>10.0f}")
print(f"\ncount-check --full / both reads at once: {t['full'] / t['reads']:.2f}x (target <= 1.5x)")
print(f"count-check --full / the two reads one after the other: {t['full'] / (t['sqlite'] + t['pg']):.2f}x")
print(f"peak RSS: {full_kb / 1024:.1f} MB at {rows} rows, {small_kb / 1024:.1f} MB at {small} rows (target < 64 MB, flat)")
PY
}

main "$@"
