#!/usr/bin/env bats
# scripts/preflight: every check held, and each kind of missing thing reported.

load helpers

# The roles a test makes are the cluster's: drop them after the test's database.
eval "helpers_$(declare -f teardown)"
teardown() {
  helpers_teardown
  local r
  for r in mig weak app; do
    psql -X -q --no-password "${PGFERRY_TEST_PG_URL}" -c "DROP ROLE IF EXISTS ${DBNAME}_${r}" || true
  done
}

@test "preflight passes when everything is in place, and writes nothing" {
  app_db
  config
  run -0 --separate-stderr "${SCRIPTS}/preflight"
  [[ "${output}" != *MISSING* ]]
  [[ "${output}" == *"ok       plan ${W}/plan.ndjson: 2 steps"* ]]
  [[ "${output}" =~ ok\ +PostgreSQL\ [0-9]+.*\ reachable\ as\ .*TLS\ (on|off) ]]
  [[ "${output}" == *"ok       step 2: SELECT and INSERT (COPY) on notes"* ]]
  [[ "${output}" == *"ok       dry run of the whole plan: every step loaded and count-verified, then rolled back"* ]]
  [[ "${output}" == *"preflight: every check held"* ]]
  [[ ! -e "${W}/state" && ! -e "${W}/backups" ]]
  # The dry run loaded both tables and rolled back; only the run log remembers it.
  [[ "$(counts customers notes)" == "customers=0 notes=0" ]]
  [[ "$(pg -c "SELECT string_agg(DISTINCT outcome, ',') FROM _migration_runs")" == dry-run ]]
}

@test "preflight's dry run finds what no privilege check can: a value that does not fit, before freeze" {
  app_db
  config
  sqlite3 "${APPDB}" "UPDATE notes SET tick = 'soon' WHERE id = 7"
  run -1 "${SCRIPTS}/preflight"
  [[ "${output}" == *"ok       step 2: SELECT and INSERT (COPY) on notes"* ]]
  [[ "${output}" == *"step '2' (notes): line "*", column 'tick': value \"soon\""* ]]
  [[ "${output}" == *"MISSING  dry run of the whole plan (scripts/migrate --dry-run): exit 65"* ]]
  [[ "${output}" == *"preflight: 1 check(s) failed: NO-GO"* ]]
  [[ "$(counts customers notes)" == "customers=0 notes=0" ]]
  run -0 "${SCRIPTS}/preflight" --no-dry-run
  [[ "${output}" != *"dry run of the whole plan"* ]]
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
  DATABASE_URL="${DATABASE_URL/\/\/*@/\/\/${DBNAME}_ro:pw@}" run -1 "${SCRIPTS}/preflight"
  [[ "${output}" == *"MISSING  step 1: SELECT and INSERT (COPY) on customers"* ]]
  [[ "${output}" == *"MISSING  run log _migration_runs writable (or creatable)"* ]]
  [[ "${output}" != *"pw@"* ]]
  pg -c "DROP OWNED BY ${DBNAME}_ro; DROP ROLE ${DBNAME}_ro"

  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  DATABASE_URL="postgres://nobody:secretpw@127.0.0.1:${port}/x" run -1 "${SCRIPTS}/preflight"
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

# role NAME GRANT-SQL: a login role with password 'pw-NAME' and the given grants; sets URL to
# connect as it.
role() {
  pg -c "CREATE ROLE ${DBNAME}_$1 LOGIN PASSWORD 'pw-$1'; $2"
  URL="${DATABASE_URL/\/\/*@/\/\/${DBNAME}_$1:pw-$1@}"
}

# A role with what an insert-mode load needs: SELECT, INSERT, UPDATE (for the LOCK), the
# sequence, and CREATE on the schema for the run log.
WORKS="GRANT SELECT, INSERT, UPDATE ON customers, notes TO @; GRANT SELECT, UPDATE ON SEQUENCE notes_id_seq TO @;
  GRANT CREATE ON SCHEMA public TO @"

serial_notes() {
  pg -c "CREATE SEQUENCE notes_id_seq OWNED BY notes.id; ALTER TABLE notes ALTER id SET DEFAULT nextval('notes_id_seq')"
}

@test "preflight GO for a role that has what the load needs, and migrate then works as that role" {
  app_db
  serial_notes
  config
  role mig "${WORKS//@/${DBNAME}_mig}"
  DATABASE_URL="${URL}" run -0 "${SCRIPTS}/preflight"
  [[ "${output}" == *"ok       step 2: SELECT and UPDATE (pg-load moves it past the loaded ids) on sequence public.notes_id_seq as ${DBNAME}_mig"* ]]
  [[ "${output}" == *"ok       step 2: LOCK (needs UPDATE, DELETE or TRUNCATE) on notes as ${DBNAME}_mig"* ]]
  [[ "${output}" == *"preflight: every check held"* && "${output}" != *pw-mig* ]]
  DATABASE_URL="${URL}" run -0 "${SCRIPTS}/migrate" --per-step --execute
  [[ "$(pg -c 'SELECT count(*) FROM notes')" == 50 ]]
}

@test "preflight NO-GO before freeze: no privilege for the lock, RLS on a COPY target, a sequence the role cannot update" {
  app_db
  serial_notes
  config
  pg -c "ALTER TABLE customers ENABLE ROW LEVEL SECURITY"
  role weak "GRANT SELECT, INSERT ON customers, notes TO ${DBNAME}_weak; GRANT UPDATE ON customers TO ${DBNAME}_weak;
    GRANT USAGE ON SEQUENCE notes_id_seq TO ${DBNAME}_weak; GRANT CREATE ON SCHEMA public TO ${DBNAME}_weak"
  DATABASE_URL="${URL}" run -1 "${SCRIPTS}/preflight"
  [[ "${output}" == *"ok       step 1: LOCK (needs UPDATE, DELETE or TRUNCATE) on customers"* ]]
  [[ "${output}" == *"MISSING  step 1: customers has row-level security enabled, which COPY cannot load as ${DBNAME}_weak"* ]]
  [[ "${output}" == *"MISSING  step 2: LOCK (needs UPDATE, DELETE or TRUNCATE) on notes as ${DBNAME}_weak"* ]]
  [[ "${output}" == *"MISSING  step 2: SELECT and UPDATE (pg-load moves it past the loaded ids) on sequence public.notes_id_seq"* ]]
  [[ "${output}" == *"preflight: 3 check(s) failed: NO-GO"* && "${output}" != *pw-weak* ]]
  [[ ! -e "${W}/state/frozen_at" ]]
  # What preflight refused is what the load meets: each fails in pg-load as said.
  pg -c "GRANT UPDATE ON notes TO ${DBNAME}_weak"
  DATABASE_URL="${URL}" run "${SCRIPTS}/migrate" --per-step --execute
  ((status != 0))
  [[ "${output}" == *"row-level security"* ]]
}

@test "preflight NO-GO for a cutover URL whose role cannot write a migrated table or use its sequence" {
  app_db
  serial_notes
  config
  role app "GRANT SELECT, INSERT, UPDATE, DELETE ON customers TO ${DBNAME}_app; GRANT SELECT ON notes TO ${DBNAME}_app"
  printf 'APP_STORE=postgres\nexport DATABASE_URL="%s"\n' "${URL}" >"${W}/cutover.env"
  run -1 "${SCRIPTS}/preflight"
  [[ "${output}" == *"ok       the app's DATABASE_URL in ${W}/cutover.env connects: "*" as ${DBNAME}_app "* ]]
  [[ "${output}" == *"ok       step 1: SELECT, INSERT, UPDATE and DELETE for the app on customers as ${DBNAME}_app"* ]]
  [[ "${output}" == *"MISSING  step 2: SELECT, INSERT, UPDATE and DELETE for the app on notes as ${DBNAME}_app"* ]]
  [[ "${output}" == *"MISSING  step 2: USAGE (the app draws new ids) on sequence public.notes_id_seq as ${DBNAME}_app"* ]]
  [[ "${output}" == *"preflight: 2 check(s) failed: NO-GO"* && "${output}" != *pw-app* ]]
  pg -c "GRANT INSERT, UPDATE, DELETE ON notes TO ${DBNAME}_app; GRANT USAGE ON SEQUENCE notes_id_seq TO ${DBNAME}_app"
  run -0 "${SCRIPTS}/preflight"
  # A URL that is not one is refused without being shown.
  printf 'DATABASE_URL=postgres:/%s:pw-app@x\n' "${DBNAME}_app" >"${W}/cutover.env"
  run -1 "${SCRIPTS}/preflight"
  [[ "${output}" == *"MISSING  the app's DATABASE_URL in ${W}/cutover.env connects: not a PostgreSQL connection string"* ]]
  [[ "${output}" != *pw-app* ]]
}
