#!/usr/bin/env bash
# Benchmark, a whole database: every SQLite table of the BellSystems fixture into its
# PostgreSQL schema, the way the runbook loads it, against DuckDB and pgloader, in one run,
# several rounds in turn, medians and ratios printed.
#
# Usage: bench/whole-db.sh [--rows N] [--rounds R] [--work DIR] [--baseline DIR]
#   --rows N    device_logs rows [default: 1000000]; the eleven small tables are the
#               fixture's (3 to 20,000 rows)
#   --rounds R  rounds; each runs every side once, in turn [default: 3]
#   --work DIR  where the DuckDB venv and the generated SQLite file are kept between runs
#               [default: /tmp/pgferry-bench]
#   --baseline DIR  also time the plan load with the sqlite-dump and pg-load in DIR (say, a
#               release build of the commit before a change), in the same rounds: what a
#               change buys, measured in one run
# The SQLite file is fixtures/bellsystems/sqlite.sql with device_logs at N rows over the
# same 14 months; the target is fixtures/bellsystems/postgres.sql (device_logs in monthly
# partitions made by pg-partition, primary key (id, received_at), index (device_serial,
# received_at DESC), foreign keys checked), with the 30 crm_customers rows the CRM tables
# reference already there (phase 2's table, loaded from Firestore). Every side starts
# from that empty schema:
#   pgferry-steps  one sqlite-dump | pg-load per table, as scripts/migrate runs a plan
#   pgferry-plan   pg-load --plan: every table in one transaction, the plan as
#                  runbook/plans/bellsystems-phase1.ndjson has it (device_logs a `partitioned`
#                  step: --ensure-partitions, each row checked against the partitions), ANALYZE
#                  of the twelve tables after the commit included (pg-load's default)
#   pgferry-plan-noanalyze  the same plan with --no-analyze in every step's load: the load alone,
#                  as the peers do it (they leave no statistics)
#   duckdb         DuckDB: BEGIN; twelve INSERT ... SELECT (bench/whole-db-duckdb.sql); COMMIT
#                  (timed from ATTACH to COMMIT)
#   pgloader       Debian's pgloader, WITH data only (it loads tables in parallel)
#   ... then ANALYZE  DuckDB's and pgloader's load, then `ANALYZE` of the twelve tables in one
#                  psql statement, as their users get statistics: the plan's end state (no target)
#   server         COPY device_logs FROM 'file' (FORMAT binary) into the indexed partitions
#   server-bare    the same into bare partitions, then the key and index built, one transaction
# Each round starts with the machine's load average (uptime), printed after the report:
# on a shared machine, a ratio means little without it.
# Connections go through the libpq variables (PGPASSWORD in the environment), never a
# password on a command line. Not a test: run it on demand, on a quiet machine.
# Exit status: 0 when every run completed and loaded every row (targets are reported, not
# enforced); 64 usage; other codes when a side failed.
set -Eeuo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/../scripts/lib/common.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$(dirname "$0")/../scripts/lib/throwaway-pg.sh"
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# In plan order: parents before children.
TABLES=(melody_drafts built_melodies mfg_audit_log device_alerts crm_sync_state crm_quotations
  crm_quotation_items crm_media crm_comms_log commands heartbeats device_logs)
FIXTURE="$(repo_root)/fixtures/bellsystems"

# sqlite_file N: the fixture with N device_logs rows, one every 36000000/N seconds from
# 2024-01-01 (the fixture's 200,000 rows every 180 s), made once per work dir.
sqlite_file() {
  local f="${BENCH_WORK}/bellsystems-$1.sqlite" step=$((36000000 / $1))
  if [[ ! -s "${f}" ]]; then
    log "generating the BellSystems database with $1 device_logs rows"
    rm -f "${f}.partial"
    sed "/^-- 2024-01-01 to about/,\$ { s/x < 200000/x < $1/; s/x \\* 180/x * ${step}/g }" "${FIXTURE}/sqlite.sql" |
      sqlite3 "${f}.partial" >/dev/null
    [[ "$(sqlite3 "${f}.partial" 'SELECT count(*) FROM device_logs')" == "$1" ]] ||
      die 1 "the fixture's device_logs generator changed: update bench/whole-db.sh"
    mv "${f}.partial" "${f}"
  fi
  printf '%s\n' "${f}"
}

# reset_db [bare]: the empty target schema (bare: device_logs without its key and index).
reset_db() {
  local schema="${FIXTURE}/postgres.sql"
  if [[ "${1:-}" == bare ]]; then
    schema="${BENCH_WORK}/run/postgres-bare.sql"
    sed -e 's/, PRIMARY KEY (id, received_at)$//' -e '/^CREATE INDEX idx_device_logs_serial_time/d' \
      "${FIXTURE}/postgres.sql" >"${schema}"
    ! grep -q 'PRIMARY KEY (id, received_at)\|idx_device_logs_serial_time' "${schema}" ||
      die 1 "the fixture's device_logs DDL changed: update bench/whole-db.sh"
  fi
  pg_psql -q -c 'SET client_min_messages = warning' -c 'DROP SCHEMA public CASCADE' -c 'CREATE SCHEMA public' \
    -f "${schema}" -c "INSERT INTO crm_customers (id, name, folder_id, created_at, updated_at)
      SELECT format('c%s', lpad(g::text, 2, '0')), 'Customer ' || g, 'folder-' || g, now(), now()
      FROM generate_series(1, 30) g"
  "${BENCH_BIN}/pg-partition" ensure device_logs --from 2024-01 --to 2025-03 2>>"${BENCH_WORK}/run/pg-partition.log"
  pg_psql -q -c CHECKPOINT
}

# counts_of DB: "table|rows" per table, as SQLite has them.
counts_of() {
  local t sql=()
  for t in "${TABLES[@]}"; do sql+=("SELECT '${t}', count(*) FROM ${t}"); done
  local IFS=$'\n'
  sqlite3 "$1" "$(printf '%s UNION ALL ' "${sql[@]}") SELECT 'end', 0"
}

# check_counts EXPECTED SIDE [TABLE]: PostgreSQL holds the rows SQLite has (all tables, or one).
check_counts() {
  local t sql=() want="$1"
  for t in "${TABLES[@]}"; do sql+=("SELECT '${t}', count(*) FROM ${t}"); done
  local have
  have="$(pg_psql -tA -c "$(printf '%s UNION ALL ' "${sql[@]}") SELECT 'end', 0")"
  if [[ -n "${3:-}" ]]; then
    want="$(grep "^$3|" <<<"${want}")" have="$(grep "^$3|" <<<"${have}")"
  fi
  [[ "${have}" == "${want}" ]] || die 1 "$2 loaded other counts than SQLite has: $(diff <(echo "${want}") <(echo "${have}") | tr '\n' ' ')"
}

main() {
  local rows=1000000 rounds=3 work=/tmp/pgferry-bench baseline=""
  bench_options "$0" rows=--rows rounds=--rounds work=--work baseline=--baseline -- "$@"
  [[ "${rows}${rounds}" =~ ^[0-9]+$ ]] || die 64 "--rows and --rounds take numbers"
  if [[ -n "${baseline}" ]]; then
    [[ -x "${baseline}/sqlite-dump" && -x "${baseline}/pg-load" ]] ||
      die 64 "--baseline ${baseline}: no sqlite-dump and pg-load there"
    baseline="$(cd "${baseline}" && pwd)"
  fi
  bench_setup "${work}"
  bench_pg_start
  local db want run="${BENCH_WORK}/run" t
  db="$(sqlite_file "${rows}")"
  want="$(counts_of "${db}")"
  rm -rf "${run}" && mkdir -m 755 "${run}"

  # The server's own input: device_logs as a binary COPY file, written once.
  reset_db
  "${BENCH_BIN}/sqlite-dump" "${db}" device_logs 2>/dev/null | "${BENCH_BIN}/pg-load" --no-analyze device_logs 2>/dev/null
  pg_psql -q -c "\\copy (SELECT * FROM device_logs) to '${run}/logs.bin' (format binary)"
  chmod 644 "${run}/logs.bin"

  # The runbook's way today: one process pair and one transaction per table.
  local steps="set -e"
  for t in "${TABLES[@]}"; do
    steps+="; $(rss steps-dump) '${BENCH_BIN}/sqlite-dump' '${db}' ${t} | $(rss steps-load) '${BENCH_BIN}/pg-load' --source 'sqlite:${db}:${t}' ${t}"
  done
  # The atomic plan load (contracts 2 and 3 of the brief): one stream, a $table record per step.
  local plan="" plan_na="" stream="" has_plan=0 part
  printf '{"step": "probe", "source": "sqlite:%s:crm_sync_state", "target": "crm_sync_state"}\n' "${db}" >"${run}/probe.ndjson"
  # shellcheck disable=SC2016 # a literal $table record
  if { printf '%s\n' '{"$table":{"step":"probe","target":"crm_sync_state"}}' && "${BENCH_BIN}/sqlite-dump" "${db}" crm_sync_state; } 2>/dev/null |
    "${BENCH_BIN}/pg-load" --plan "${run}/probe.ndjson" --dry-run >/dev/null 2>&1; then
    has_plan=1
    plan="${run}/plan.ndjson" plan_na="${run}/plan-noanalyze.ndjson"
    for t in "${TABLES[@]}"; do
      # As the runbook's plan has it (the partitions themselves are made by reset_db, as
      # scripts/migrate makes them with the step's pg-partition ensure before the load).
      part=""
      [[ "${t}" == device_logs ]] && part=', "partitioned": {"from": "2024-01", "ahead": 2, "keep": 6}'
      printf '{"step": "%s", "source": "sqlite:%s:%s", "target": "%s"%s}\n' "${t}" "${db}" "${t}" "${t}" "${part}" >>"${plan}"
      printf '{"step": "%s", "source": "sqlite:%s:%s", "target": "%s"%s, "load": ["--no-analyze"]}\n' \
        "${t}" "${db}" "${t}" "${t}" "${part}" >>"${plan_na}"
      stream+="printf '%s\\n' '{\"\$table\":{\"step\":\"${t}\",\"target\":\"${t}\"}}'; $(rss plan-dump) '${BENCH_BIN}/sqlite-dump' '${db}' ${t}; "
    done
  else
    warn "pg-load cannot load a plan yet (a one-step --plan --dry-run failed): the atomic plan load is not measured"
  fi
  bench_pgloader_file "${db}" "WITH data only, create no tables, create no indexes, reset no sequences;"

  local round copy="COPY device_logs FROM '${run}/logs.bin' (FORMAT binary)"
  # The plan's end state has statistics: what a user of the other tools runs after them.
  local analyze list
  list="$(IFS=, && echo "${TABLES[*]}")"
  analyze="${BENCH_PSQL} -c 'ANALYZE ${list}'"
  for round in $(seq 1 "${rounds}"); do
    printf 'round %s: load average %s\n' "${round}" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"${run}/load.txt"
    log "round ${round} of ${rounds}: pgferry, one pipe per table"
    reset_db && timed pgferry-steps "${steps}" && check_counts "${want}" pgferry-steps
    if ((has_plan)); then
      log "round ${round} of ${rounds}: pgferry, pg-load --plan"
      reset_db
      timed pgferry-plan "{ ${stream}} | $(rss plan-load) '${BENCH_BIN}/pg-load' --plan '${plan}'"
      check_counts "${want}" pgferry-plan
      if [[ -n "${baseline}" ]]; then
        log "round ${round} of ${rounds}: pgferry, pg-load --plan, the baseline's binaries"
        reset_db
        local old="${stream//plan-dump/plan-dump-baseline}"
        timed pgferry-plan-baseline "{ ${old//"${BENCH_BIN}"/${baseline}}} | '${baseline}/pg-load' --plan '${plan}'"
        check_counts "${want}" pgferry-plan-baseline
      fi
      log "round ${round} of ${rounds}: pgferry, pg-load --plan, steps --no-analyze"
      reset_db
      timed pgferry-plan-noanalyze "{ ${stream//plan-dump/plan-dump-na}} | $(rss plan-load-na) '${BENCH_BIN}/pg-load' --plan '${plan_na}'"
      check_counts "${want}" pgferry-plan-noanalyze
    fi
    log "round ${round} of ${rounds}: duckdb"
    reset_db
    bench_duckdb "${db}" "${BENCH_DIR}/whole-db-duckdb.sql"
    check_counts "${want}" duckdb
    timed analyze-after-duckdb "${analyze}"
    log "round ${round} of ${rounds}: pgloader"
    reset_db
    bench_pgloader
    check_counts "${want}" pgloader
    timed analyze-after-pgloader "${analyze}"
    log "round ${round} of ${rounds}: server COPY of device_logs"
    reset_db
    timed server "${BENCH_PSQL} -c \"${copy}\""
    check_counts "${want}" server device_logs
    reset_db bare
    timed server-bare "${BENCH_PSQL} -1 -c \"${copy}\" \
      -c 'ALTER TABLE device_logs ADD PRIMARY KEY (id, received_at)' \
      -c 'CREATE INDEX idx_device_logs_serial_time ON device_logs (device_serial, received_at DESC)'"
    check_counts "${want}" server-bare device_logs
  done

  local baseline_side=()
  [[ -n "${baseline}" ]] && baseline_side=(--side "pgferry-plan-baseline=pgferry pg-load --plan, binaries of ${baseline}")
  bench_report --title "Whole database, BellSystems' 12 SQLite tables (device_logs partitioned)" \
    --rows "$(awk -F'|' '{n += $2} END {print n}' <<<"${want}")" --anchor "$( ((has_plan)) && echo pgferry-plan || echo pgferry-steps)" \
    --side "pgferry-plan=pgferry pg-load --plan (the runbook's plan)" \
    "${baseline_side[@]}" \
    --side "pgferry-plan-noanalyze=pgferry pg-load --plan, --no-analyze" \
    --side "pgferry-steps=pgferry, one sqlite-dump | pg-load per table" \
    --side "duckdb=DuckDB ${DUCKDB_VERSION}, 12 INSERT ... SELECT, one transaction=1.5" \
    --side "duckdb-process=DuckDB, the whole python process" \
    --side "pgloader=pgloader, WITH data only=3" \
    --side "duckdb+analyze-after-duckdb=DuckDB, then ANALYZE of the tables (psql)" \
    --side "pgloader+analyze-after-pgloader=pgloader, then ANALYZE of the tables" \
    --side "server=server COPY of device_logs, indexed partitions==${rows}" \
    --side "server-bare=server COPY, bare partitions, then key and index==${rows}" \
    --rss "plan-dump=sqlite-dump (plan, 12 runs)=12" --rss "plan-load=pg-load --plan" \
    --rss "plan-load-na=pg-load --plan, --no-analyze" \
    --rss "steps-dump=sqlite-dump (per table, 12 runs)=12" --rss "steps-load=pg-load (per table, 12 runs)=12" \
    --rss "duckdb=DuckDB (python)" --rss "pgloader=pgloader"
  cat "${run}/load.txt"
}

main "$@"
