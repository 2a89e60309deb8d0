#!/usr/bin/env bash
# Benchmark, one table: sqlite-dump | pg-load against the tools users would otherwise use,
# all in one run, several rounds in turn, medians and ratios printed.
#
# Usage: bench/load.sh [--rows N] [--rounds R] [--small-rows N] [--work DIR]
#   --rows N        device_logs rows [default: 2000000]
#   --rounds R      rounds; each runs every side once, in turn [default: 3]
#   --small-rows N  pgferry again at N rows, to show its memory is flat [default: 200000]
#   --work DIR      where the DuckDB venv and the generated SQLite files are kept between
#                   runs [default: /tmp/pgferry-bench]
# Installs what it needs (Debian packages, DuckDB from PyPI), builds --release, starts a
# throwaway PostgreSQL, and loads N device_logs rows (bench/device-logs.sh: id, serial,
# level, 40-120 char message, epoch integer, text timestamp into timestamptz) into an empty
# table with its primary key, each side from the same SQLite file:
#   pgferry      sqlite-dump | pg-load --no-analyze (one transaction, count-checked, idempotent)
#   duckdb       DuckDB, sqlite_scanner + postgres_scanner: BEGIN; INSERT ... SELECT; COMMIT
#                (timed from ATTACH to COMMIT; duckdb-process is the whole python process)
#   naive        sqlite3 -csv | psql -c '\copy ... csv'
#   pgloader     Debian's pgloader, data only into the same table
#   server       COPY ... FROM 'file' (FORMAT binary) run by the server: the limit
#   server-nopk  the same into the table without its primary key
#   server-pk    the same, then ADD PRIMARY KEY, in one transaction
# Connections go through the libpq variables (PGPASSWORD in the environment), never a
# password on a command line. Not a test: run it on demand, on a quiet machine.
# Exit status: 0 when every run completed and loaded every row (targets are reported, not
# enforced); 64 usage; other codes when a side failed.
set -Eeuo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/../scripts/lib/common.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$(dirname "$0")/../scripts/lib/throwaway-pg.sh"
# shellcheck source=bench/device-logs.sh
source "$(dirname "$0")/device-logs.sh"
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

COLS="id, device_serial, level, message, device_timestamp, received_at"

# reset_table [nopk]: an empty device_logs, with its primary key unless told otherwise.
reset_table() {
  local pk="PRIMARY KEY"
  [[ "${1:-}" == nopk ]] && pk=""
  pg_psql -q <<SQL
SET client_min_messages = warning;
DROP TABLE IF EXISTS device_logs;
CREATE TABLE device_logs (id bigint ${pk} NOT NULL, device_serial text NOT NULL, level text NOT NULL,
  message text NOT NULL, device_timestamp bigint, received_at timestamptz NOT NULL);
CHECKPOINT;
SQL
}

# check_count N SIDE: the side loaded exactly N rows.
check_count() {
  local n
  n="$(pg_psql -tA -c 'SELECT count(*) FROM device_logs')"
  [[ "${n}" == "$1" ]] || die 1 "$2 loaded ${n} rows, expected $1"
}

# sqlite_file N: the generated SQLite file of N rows, made once per work dir.
sqlite_file() {
  local f="${BENCH_WORK}/device_logs-$1.sqlite"
  if [[ ! -s "${f}" ]]; then
    log "generating $1 device_logs rows"
    rm -f "${f}.partial"
    gen_sqlite "${f}.partial" "$1"
    mv "${f}.partial" "${f}"
  fi
  printf '%s\n' "${f}"
}

# pgferry NAME DB: sqlite-dump | pg-load, each process's peak RSS under NAME-dump / NAME-load.
pgferry() {
  timed "$1" "$(rss "$1-dump") '${BENCH_BIN}/sqlite-dump' '$2' device_logs |
    $(rss "$1-load") '${BENCH_BIN}/pg-load' --no-analyze device_logs"
}

main() {
  local rows=2000000 rounds=3 small=200000 work=/tmp/pgferry-bench
  bench_options "$0" rows=--rows rounds=--rounds small=--small-rows work=--work -- "$@"
  [[ "${rows}${rounds}${small}" =~ ^[0-9]+$ ]] || die 64 "--rows, --rounds and --small-rows take numbers"
  bench_setup "${work}"
  bench_pg_start
  local db small_db
  db="$(sqlite_file "${rows}")"
  small_db="$(sqlite_file "${small}")"
  rm -rf "${BENCH_WORK}/run" && mkdir -m 755 "${BENCH_WORK}/run"
  local run="${BENCH_WORK}/run"

  # The server's own input: the same rows as a binary COPY file, written once.
  reset_table nopk
  sqlite3 -csv "${db}" "SELECT ${COLS} FROM device_logs" | pg_psql -q -c "\\copy device_logs (${COLS}) from stdin csv"
  pg_psql -q -c "\\copy device_logs to '${run}/logs.bin' (format binary)"
  chmod 644 "${run}/logs.bin"
  printf 'INSERT INTO pg.public.device_logs SELECT id, device_serial, level, message, device_timestamp,
  received_at::TIMESTAMPTZ FROM s.device_logs;\n' >"${run}/duckdb.sql"
  bench_pgloader_file "${db}" "WITH data only, create no tables, create no indexes, reset no sequences" \
    "INCLUDING ONLY TABLE NAMES LIKE 'device_logs';"

  local round
  for round in $(seq 1 "${rounds}"); do
    log "round ${round} of ${rounds}: pgferry"
    reset_table && pgferry pgferry "${db}" && check_count "${rows}" pgferry
    log "round ${round} of ${rounds}: duckdb"
    reset_table
    bench_duckdb "${db}" "${run}/duckdb.sql"
    check_count "${rows}" duckdb
    log "round ${round} of ${rounds}: naive"
    reset_table
    timed naive "sqlite3 -csv '${db}' 'SELECT ${COLS} FROM device_logs' |
      ${BENCH_PSQL} -c '\\copy device_logs (${COLS}) from stdin csv'"
    check_count "${rows}" naive
    log "round ${round} of ${rounds}: pgloader"
    reset_table
    bench_pgloader
    check_count "${rows}" pgloader
    log "round ${round} of ${rounds}: server COPY"
    reset_table
    timed server "${BENCH_PSQL} -c \"COPY device_logs FROM '${run}/logs.bin' (FORMAT binary)\""
    check_count "${rows}" server
    reset_table nopk
    timed server-nopk "${BENCH_PSQL} -c \"COPY device_logs FROM '${run}/logs.bin' (FORMAT binary)\""
    check_count "${rows}" server-nopk
    reset_table nopk
    timed server-pk "${BENCH_PSQL} -1 -c \"COPY device_logs FROM '${run}/logs.bin' (FORMAT binary)\" \
      -c 'ALTER TABLE device_logs ADD PRIMARY KEY (id)'"
    check_count "${rows}" server-pk
  done
  log "pgferry at ${small} rows (memory flatness)"
  reset_table && pgferry small "${small_db}" && check_count "${small}" "pgferry at ${small} rows"

  bench_report --title "One table, device_logs into an empty table with its primary key" --rows "${rows}" \
    --anchor pgferry \
    --side "pgferry=pgferry sqlite-dump | pg-load" \
    --side "duckdb=DuckDB ${DUCKDB_VERSION} INSERT ... SELECT, ATTACH to COMMIT=1.25" \
    --side "duckdb-process=DuckDB, the whole python process" \
    --side "naive=naive sqlite3 -csv | psql \\copy=1.4" \
    --side "pgloader=pgloader, data only=4" \
    --side "server=server COPY binary file, with the key" \
    --side "server-nopk=server COPY binary file, no key" \
    --side "server-pk=server COPY, then ADD PRIMARY KEY" \
    --rss "pgferry-dump=sqlite-dump, ${rows} rows" --rss "pgferry-load=pg-load, ${rows} rows" \
    --rss "small-dump=sqlite-dump, ${small} rows" --rss "small-load=pg-load, ${small} rows" \
    --rss "duckdb=DuckDB (python), ${rows} rows" --rss "pgloader=pgloader, ${rows} rows"
}

main "$@"
