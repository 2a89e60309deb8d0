#!/usr/bin/env bash
# Benchmark: sqlite-dump | pg-load against the pipes users would otherwise use, in one run.
#
# Usage: bench/load.sh [ROWS [ROUNDS]]     (defaults 2000000 and 3)
# Generates a device_logs-style SQLite table (id, serial, level, 40-120 char message, epoch
# integer, text timestamp into timestamptz, primary key on id), starts a throwaway
# PostgreSQL, and loads the same rows four ways into an empty table:
#   pgferry   sqlite-dump | pg-load (one transaction, verified, idempotent)
#   naive     sqlite3 -csv | psql '\copy … csv' (no guarantees)
#   pgloader  Debian's pgloader, data only into the same table
#   server    COPY … FROM 'file.csv' run by the server itself (the limit to approach)
# ROUNDS times, in turn, then pgferry again at ROWS/10 to show its memory is flat. Prints the
# median seconds of each, rows/s, peak RSS and the ratios (medians resist a busy neighbour
# on a shared machine). Not a test: run it on demand.
# Exit status: 0 when every run completed and loaded every row.
set -Eeuo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/../scripts/lib/common.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$(dirname "$0")/../scripts/lib/throwaway-pg.sh"
# shellcheck source=bench/device-logs.sh
source "$(dirname "$0")/device-logs.sh"

ROWS="${1:-2000000}"
ROUNDS="${2:-3}"
WORK=""
BIN=""

reset_table() {
  pg_psql -q "${THROWAWAY_PG_URL}" <<'SQL'
DROP TABLE IF EXISTS device_logs;
CREATE TABLE device_logs (id bigint PRIMARY KEY, device_serial text NOT NULL, level text NOT NULL,
  message text NOT NULL, device_timestamp bigint, received_at timestamptz NOT NULL);
CHECKPOINT;
SQL
}

check_count() {
  local n
  n="$(pg_psql -tA "${THROWAWAY_PG_URL}" -c 'SELECT count(*) FROM device_logs')"
  [[ "${n}" == "$1" ]] || die 1 "$2 loaded ${n} rows, expected $1"
}

# timed NAME CMD: runs CMD under bash, prints elapsed seconds into WORK/NAME.secs.
timed() {
  local name="$1" start end
  shift
  start="$(date +%s.%N)"
  bash -c "set -o pipefail; $*"
  end="$(date +%s.%N)"
  python3 -c "print(f'{${end} - ${start}:.2f}')" >>"${WORK}/${name}.secs"
}

# peak_kb FILE: the max RSS a /usr/bin/time -v report recorded.
peak_kb() {
  awk -F': ' '/Maximum resident set size/ {print $2}' "$1"
}

main() {
  need_cmd sqlite3 psql pgloader python3 /usr/bin/time cargo
  cd "$(repo_root)"
  log "building release binaries"
  cargo build --release --quiet --bin sqlite-dump --bin pg-load
  BIN="$(pwd)/target/release"
  WORK="$(mktemp -d /tmp/pgferry-bench.XXXXXX)"
  chmod 755 "${WORK}"
  trap_add "rm -rf '${WORK}'"
  throwaway_pg_start "-c shared_buffers=256MB -c max_wal_size=4GB"
  local db="${WORK}/logs.sqlite" small="${WORK}/small.sqlite" small_rows=$((ROWS / 10))
  log "generating ${ROWS} rows"
  gen_sqlite "${db}" "${ROWS}"
  gen_sqlite "${small}" "${small_rows}"
  local cols="id, device_serial, level, message, device_timestamp, received_at"

  local round
  sqlite3 -csv "${db}" "SELECT ${cols} FROM device_logs" >"${WORK}/logs.csv"
  chmod 644 "${WORK}/logs.csv"
  cat >"${WORK}/load.pgl" <<PGL
LOAD DATABASE FROM sqlite://${db} INTO ${THROWAWAY_PG_URL}
WITH data only, create no tables, create no indexes, reset no sequences
INCLUDING ONLY TABLE NAMES LIKE 'device_logs';
PGL
  for round in $(seq 1 "${ROUNDS}"); do
    log "round ${round} of ${ROUNDS}"
    reset_table
    log "pgferry: sqlite-dump | pg-load"
    timed pgferry "/usr/bin/time -v -o '${WORK}/dump.time' '${BIN}/sqlite-dump' '${db}' device_logs 2>/dev/null |
      /usr/bin/time -v -o '${WORK}/load.time' '${BIN}/pg-load' --db '${THROWAWAY_PG_URL}' --no-analyze device_logs"
    check_count "${ROWS}" pgferry

    reset_table
    log "naive: sqlite3 -csv | psql \\copy"
    timed naive "sqlite3 -csv '${db}' 'SELECT ${cols} FROM device_logs' |
      psql -X -q '${THROWAWAY_PG_URL}' -c '\\copy device_logs (${cols}) from stdin csv'"
    check_count "${ROWS}" naive

    reset_table
    log "pgloader"
    timed pgloader "/usr/bin/time -v -o '${WORK}/pgloader.time' pgloader --quiet '${WORK}/load.pgl' >'${WORK}/pgloader.log' 2>&1"
    check_count "${ROWS}" pgloader

    reset_table
    log "server: COPY FROM 'file.csv'"
    timed server "psql -X -q '${THROWAWAY_PG_URL}' -c \"COPY device_logs (${cols}) FROM '${WORK}/logs.csv' CSV\""
    check_count "${ROWS}" server

  done

  reset_table
  log "pgferry at ${small_rows} rows (memory flatness)"
  timed small "/usr/bin/time -v -o '${WORK}/sdump.time' '${BIN}/sqlite-dump' '${small}' device_logs 2>/dev/null |
    /usr/bin/time -v -o '${WORK}/sload.time' '${BIN}/pg-load' --db '${THROWAWAY_PG_URL}' --no-analyze device_logs 2>/dev/null"
  check_count "${small_rows}" "pgferry small"

  python3 - "${WORK}" "${ROWS}" "$(peak_kb "${WORK}/dump.time")" "$(peak_kb "${WORK}/load.time")" \
    "$(peak_kb "${WORK}/pgloader.time")" "$(peak_kb "${WORK}/sdump.time")" "$(peak_kb "${WORK}/sload.time")" "${small_rows}" <<'PY'
import sys
work, rows = sys.argv[1], int(sys.argv[2])
dump_kb, load_kb, pgl_kb, sdump_kb, sload_kb, small = map(int, sys.argv[3:9])
import statistics
runs = {n: [float(x) for x in open(f"{work}/{n}.secs").read().split()] for n in ["pgferry", "naive", "pgloader", "server"]}
t = {n: statistics.median(v) for n, v in runs.items()}
print(f"\n{rows} rows, device_logs, median of {len(runs['pgferry'])} rounds")
for n, v in runs.items():
    print(f"  {n}: " + ", ".join(f"{x:.2f}" for x in v))
print(f"{'pipe':<10} {'seconds':>8} {'rows/s':>10}  pgferry speed-up")
for n in ["pgferry", "naive", "pgloader", "server"]:
    print(f"{n:<10} {t[n]:>8.2f} {rows / t[n]:>10.0f}  {t[n] / t['pgferry']:.2f}x")
print(f"\ntargets: >= 1.1x naive: {t['naive'] / t['pgferry']:.2f}x; >= 3x pgloader: {t['pgloader'] / t['pgferry']:.2f}x; "
      f"server COPY is {t['pgferry'] / t['server']:.2f}x faster than pgferry")
print(f"peak RSS: sqlite-dump {dump_kb / 1024:.1f} MB, pg-load {load_kb / 1024:.1f} MB, pgloader {pgl_kb / 1024:.1f} MB (target < 64 MB)")
print(f"at {small} rows: sqlite-dump {sdump_kb / 1024:.1f} MB, pg-load {sload_kb / 1024:.1f} MB (flat if close to the above)")
PY
}

main "$@"
