#!/usr/bin/env bats
# scripts/preflight: every check held, and each kind of missing thing reported.

load helpers

@test "preflight passes when everything is in place, and writes nothing" {
  app_db
  config
  run -0 --separate-stderr "${SCRIPTS}/preflight"
  [[ "${output}" != *MISSING* ]]
  [[ "${output}" == *"ok       plan ${W}/plan.ndjson: 2 steps"* ]]
  [[ "${output}" =~ ok\ +PostgreSQL\ [0-9]+.*\ reachable\ as\ .*TLS\ (on|off) ]]
  [[ "${output}" == *"ok       step 2: SELECT and INSERT (COPY) on notes"* ]]
  [[ "${output}" == *"preflight: every check held"* ]]
  [[ ! -e "${W}/state" && ! -e "${W}/backups" ]]
  [[ "$(pg -c "SELECT to_regclass('_migration_runs') IS NULL")" == t ]]
}

@test "preflight lists what is missing and exits 1" {
  app_db
  echo '{"step": "3", "source": "sqlite:'"${APPDB}"':nothere", "target": "nothere"}' >>"${W}/plan.ndjson"
  echo '{"step": "4", "source": "ndjson:'"${W}"'/none.ndjson", "target": "notes"}' >>"${W}/plan.ndjson"
  config "PGFERRY_WRITERS_START=" "PGFERRY_APP_ENV=${W}/app/missing.env"
  run -1 "${SCRIPTS}/preflight"
  [[ "${output}" == *"MISSING  writers' start command (PGFERRY_WRITERS_START)"* ]]
  [[ "${output}" == *"MISSING  the app's env file PGFERRY_APP_ENV '${W}/app/missing.env'"* ]]
  [[ "${output}" == *"MISSING  step 3: table nothere in ${APPDB}"* ]]
  [[ "${output}" == *"MISSING  step 4: file ${W}/none.ndjson"* ]]
  [[ "${output}" == *"MISSING  step 3: table nothere exists"* ]]
  [[ "${output}" == *"ok       step 2: SELECT and INSERT (COPY) on notes"* ]]
  [[ "${output}" == *"preflight: "*" check(s) failed: NO-GO"* ]]
}

@test "preflight reports an unreachable PostgreSQL and missing privileges" {
  app_db
  config
  pg -c "CREATE ROLE ${DBNAME}_ro LOGIN PASSWORD 'pw'; GRANT SELECT ON customers TO ${DBNAME}_ro"
  local url="${DATABASE_URL/\/\/*@/\/\/${DBNAME}_ro:pw@}"
  run -1 env DATABASE_URL="${url}" "${SCRIPTS}/preflight"
  [[ "${output}" == *"MISSING  step 1: SELECT and INSERT (COPY) on customers"* ]]
  [[ "${output}" == *"MISSING  _migration_runs writable (or creatable)"* ]]
  [[ "${output}" != *"pw@"* ]]
  pg -c "DROP OWNED BY ${DBNAME}_ro; DROP ROLE ${DBNAME}_ro"

  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  run -1 env DATABASE_URL="postgres://nobody:secretpw@127.0.0.1:${port}/x" "${SCRIPTS}/preflight"
  [[ "${output}" == *"MISSING  PostgreSQL reachable (DATABASE_URL or PG* variables)"* ]]
  [[ "${output}" != *secretpw* ]]
}

@test "preflight and migrate over TLS with sslmode=verify-full" {
  [[ -n "${PGFERRY_TEST_PG_CA:-}" ]]
  app_db
  config
  local url="${DATABASE_URL/@127.0.0.1:/@localhost:}?sslmode=verify-full&sslrootcert=${PGFERRY_TEST_PG_CA}"
  run -0 env DATABASE_URL="${url}" "${SCRIPTS}/preflight"
  [[ "${output}" =~ ok\ +PostgreSQL\ [0-9]+.*TLS\ on ]]
  run -0 env DATABASE_URL="${url}" "${SCRIPTS}/migrate" --execute
  [[ "$(pg -c "SELECT bool_and(tls) FROM _migration_runs")" == t ]]
}
