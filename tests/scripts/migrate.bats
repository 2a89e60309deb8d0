#!/usr/bin/env bats
# scripts/migrate: a small plan, a re-run, a failing step and its resumption, status.

load helpers

@test "migrate without --execute prints the pipes and loads nothing" {
  app_db
  config
  run -0 "${SCRIPTS}/migrate" --per-step
  [[ "${output}" == *"1: sqlite-dump ${APPDB} customers | pg-load --step 1 --source sqlite:${APPDB}:customers customers"* ]]
  [[ "${output}" == *"2: sqlite-dump ${APPDB} notes | pg-load"*"dry run: nothing was done"* ]]
  [[ "$(pg -c 'SELECT count(*) FROM customers')" == 0 ]]
  [[ "$(pg -c "SELECT to_regclass('_migration_runs') IS NULL")" == t ]]
}

@test "migrate loads every step, a re-run changes nothing, status shows both" {
  app_db
  config
  run -0 "${SCRIPTS}/migrate" --per-step --execute
  [[ "${output}" == *"customers: Source: 20 rows → Postgres: 20 rows ✓"* ]]
  [[ "${output}" == *"notes: Source: 50 rows → Postgres: 50 rows ✓"*"migrated: every step loaded"* ]]
  [[ "$(pg -c 'SELECT count(*) FROM notes')" == 50 ]]
  [[ -s "${W}/state/migrated_at" ]]
  run -0 "${SCRIPTS}/migrate" status
  [[ "${output}" =~ 1\ +customers\ +success\ +[0-9T:-]+Z\ +20/20/0 ]]
  [[ "${output}" =~ 2\ +notes\ +success\ +[0-9T:-]+Z\ +50/50/0 ]]
  # Each step's run is recorded under its step's name, as an atomic run records it.
  [[ "$(pg -c "SELECT string_agg(step || '=' || target, ' ' ORDER BY id) FROM _migration_runs")" == "1=customers 2=notes" ]]

  local before
  before="$(pg -c 'SELECT md5(array_agg(n ORDER BY id)::text) FROM notes n')"
  run -0 "${SCRIPTS}/migrate" --per-step --execute
  [[ "${output}" == *"notes: 0 rows inserted, 50 already present"* ]]
  [[ "$(pg -c 'SELECT md5(array_agg(n ORDER BY id)::text) FROM notes n')" == "${before}" ]]
  run -0 "${SCRIPTS}/migrate" status
  [[ "${output}" =~ 2\ +notes\ +success\ +[0-9T:-]+Z\ +50/0/50 ]]
}

@test "migrate stops at the failing step, names it, and resumes with --from" {
  app_db
  config
  sqlite3 "${APPDB}" "UPDATE notes SET tick = 'soon' WHERE id = 7"
  run -65 "${SCRIPTS}/migrate" --per-step --execute
  [[ "${output}" == *"error: step 2 failed (sqlite-dump exited 0, pg-load exited 65); nothing of this step was committed"* ]]
  [[ "${output}" == *"resume with: ${SCRIPTS}/migrate --execute --per-step --from 2 ${W}/plan.ndjson"* ]]
  [[ "$(pg -c 'SELECT count(*) FROM customers')" == 20 ]]
  [[ "$(pg -c 'SELECT count(*) FROM notes')" == 0 ]]
  [[ ! -e "${W}/state/migrated_at" ]]
  run -1 "${SCRIPTS}/migrate" status
  [[ "${output}" =~ 1\ +customers\ +success ]]
  [[ "${output}" =~ 2\ +notes\ +failed ]]
  # Under the failed step, why: pg-load's own message.
  [[ "${output}" == *$'\n'"         line 7, column 'tick': value \"soon\": cannot read this as an integer"*"nothing was committed"* ]]
  # Each per-step run is recorded under its step's name, as a plan run's are.
  [[ "$(pg -c "SELECT string_agg(step || ':' || target || ':' || outcome, ',' ORDER BY id) FROM _migration_runs")" == \
    1:customers:success,2:notes:failed ]]

  sqlite3 "${APPDB}" "UPDATE notes SET tick = 7 WHERE id = 7"
  run -0 "${SCRIPTS}/migrate" --per-step --execute --from 2
  [[ "${output}" == *"Per-step plan (${W}/plan.ndjson, 1 of 2 steps)"* ]]
  [[ "${output}" != *"customers: Source"* ]]
  [[ "${output}" == *"notes: Source: 50 rows → Postgres: 50 rows ✓"* ]]
  [[ "$(pg -c 'SELECT tick FROM notes WHERE id = 7')" == 7 ]]
  run -0 "${SCRIPTS}/migrate" status

  # Atomic, the same failure from empty tables: both steps failed, customers' rows rolled back
  # with notes' (status shows no rows inserted for them, and why).
  pg -c 'TRUNCATE customers CASCADE'
  sqlite3 "${APPDB}" "UPDATE notes SET tick = 'soon' WHERE id = 7"
  run -65 "${SCRIPTS}/migrate" --atomic --execute
  run -1 "${SCRIPTS}/migrate" status
  [[ "${output}" =~ 1\ +customers\ +failed\ +[0-9T:-]+Z\ +20/-/-$'\n'\ +not\ committed:\ step\ \'2\'\ failed ]]
  [[ "$(pg -c 'SELECT count(*) FROM customers')" == 0 ]]
}

@test "a killed load fails its step with 75 and nothing committed; --from resumes it" {
  app_db
  config
  # A producer that stalls after a few rows, so pg-load can be killed mid-stream.
  {
    echo '{"step": "1", "source": "sqlite:'"${APPDB}"':customers", "target": "customers"}'
    echo '{"step": "2", "source": "ndjson:'"${W}"'/fifo", "target": "notes"}'
  } >"${W}/plan.ndjson"
  mkfifo "${W}/fifo"
  ({ sqlite-dump "${APPDB}" notes | head -n 10; sleep 30; } >"${W}/fifo") 3>&- &
  local feeder=$!
  "${SCRIPTS}/migrate" --per-step --execute >"${W}/out" 2>&1 3>&- &
  local migrate=$!
  local pid=''
  for _ in $(seq 1 100); do
    pid="$(pg -c "SELECT backend_pid FROM _migration_runs WHERE target = 'notes' AND outcome = 'running'" 2>/dev/null || true)"
    [[ -z "${pid}" ]] || break
    sleep 0.1
  done
  [[ -n "${pid}" ]]
  sleep 0.5
  kill -KILL "$(pgrep -P "${migrate}" -x pg-load)"
  local rc=0
  wait "${migrate}" || rc=$?
  ((rc == 75))
  kill "${feeder}" 2>/dev/null || true
  # A killed pg-load says nothing: migrate asks the server what became of the step.
  grep -q "step 2 failed (cat exited .*, pg-load exited 137); the server reports this step rolled back: nothing of it was committed" "${W}/out"
  grep -q -- "--from 2" "${W}/out"
  [[ "$(pg -c 'SELECT count(*) FROM notes')" == 0 ]]

  sed -i "s|ndjson:${W}/fifo|sqlite:${APPDB}:notes|" "${W}/plan.ndjson"
  run -0 "${SCRIPTS}/migrate" --per-step --execute --from 2
  [[ "$(pg -c 'SELECT count(*) FROM notes')" == 50 ]]
  [[ "$(pg -c "SELECT string_agg(outcome, ',' ORDER BY id) FROM _migration_runs WHERE target = 'notes'")" == interrupted,success ]]
}

@test "a pg-load killed after its commit: migrate asks the server, which says the step or the run committed" {
  app_db
  config
  # pg-load, killed (by WRAP_SIG, KILL unless told) once a load is done, as a kill during its
  # ANALYZE after the commit would be, or as pg-load ends itself by a signal that came after
  # its COMMIT (its other uses, --resolve, --status, --validate-fks, left alone). The signal
  # is sent by a process that dies of it for sure: bash sending itself SIGINT may still run
  # its next command (exit 0) before it acts on it.
  mkdir -p "${W}/bin"
  cat >"${W}/bin/pg-load" <<WRAPPER
#!/usr/bin/env bash
"$(command -v pg-load)" "\$@"; rc=\$?
case " \$* " in *" --resolve "* | *" --status "* | *" --validate-fks "*) exit "\$rc" ;; esac
exec python3 -c 'import os, signal, sys
s = getattr(signal, "SIG" + sys.argv[1])
if s != signal.SIGKILL:
    signal.signal(s, signal.SIG_DFL)
os.kill(os.getpid(), s)
signal.pause()' "\${WRAP_SIG:-KILL}"
WRAPPER
  chmod +x "${W}/bin/pg-load"
  PATH="${W}/bin:${PATH}" run -75 "${SCRIPTS}/migrate" --per-step --execute
  [[ "${output}" == *"error: step 1 failed (sqlite-dump exited 0, pg-load exited 137); the server reports this step committed (scripts/migrate status shows it)"* ]]
  [[ "$(pg -c 'SELECT count(*) FROM customers')" == 20 ]]
  [[ "$(pg -c 'SELECT count(*) FROM notes')" == 0 ]]
  pg -c 'TRUNCATE customers CASCADE'
  PATH="${W}/bin:${PATH}" run -75 "${SCRIPTS}/migrate" --atomic --execute
  [[ "${output}" == *"error: the atomic run failed (producers exited 0, pg-load exited 137); the server reports the run committed"* ]]
  # SIGINT's 130 is also pg-load's own "interrupted, rolled back": the server is asked then too.
  pg -c 'TRUNCATE customers CASCADE'
  WRAP_SIG=INT PATH="${W}/bin:${PATH}" run -130 "${SCRIPTS}/migrate" --atomic --execute
  [[ "${output}" == *"error: the atomic run failed (producers exited 0, pg-load exited 130); the server reports the run committed"* ]]
  [[ "$(pg -c 'SELECT count(*) FROM notes')" == 50 ]]
}

@test "migrate refuses a bad plan and an unknown --from step" {
  app_db
  config
  run -64 "${SCRIPTS}/migrate" --per-step --execute --from 9
  [[ "${output}" == *"the plan has no step '9'"* ]]
  echo '{"step": "1", "source": "sqlite:x:y", "target": "z", "lod": []}' >"${W}/bad.ndjson"
  run -65 "${SCRIPTS}/migrate" "${W}/bad.ndjson"
  [[ "${output}" == *"pg-load: plan '${W}/bad.ndjson': line 1: unknown member 'lod'"* ]]
  run -66 "${SCRIPTS}/migrate" "${W}/none.ndjson"
}

@test "migrate ensures the partitions of a partitioned target first" {
  sqlite3 "${APPDB}" >/dev/null <<'SQL'
CREATE TABLE device_logs (id INTEGER PRIMARY KEY, message TEXT NOT NULL, received_at TEXT NOT NULL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300)
INSERT INTO device_logs SELECT x, 'log ' || x, strftime('%Y-%m-%d %H:%M:%S', 1704067200 + x * 86400, 'unixepoch') FROM c;
SQL
  pg -c 'CREATE TABLE device_logs (id bigint, message text NOT NULL, received_at timestamptz NOT NULL,
          PRIMARY KEY (id, received_at)) PARTITION BY RANGE (received_at)'
  echo '{"step": "1.12", "source": "sqlite:'"${APPDB}"':device_logs", "target": "device_logs", "partitioned": {"from": "2024-01", "ahead": 1, "keep": 6}}' >"${W}/plan.ndjson"
  config
  run -0 "${SCRIPTS}/migrate" --per-step --execute
  [[ "${output}" == *"1.12: sqlite-dump "*"(before: pg-partition ensure device_logs --from 2024-01 --ahead 1)"* ]]
  [[ "$(pg -c 'SELECT count(*) FROM device_logs')" == 300 ]]
  [[ "$(pg -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'device_logs'::regclass")" -ge 11 ]]
}

@test "migrate status and verify read the run log PGFERRY_RUNS_TABLE names" {
  app_db
  config "PGFERRY_RUNS_TABLE=ops_runs"
  run -0 "${SCRIPTS}/migrate" --execute
  [[ "$(pg -c "SELECT to_regclass('_migration_runs') IS NULL")" == t ]]
  run -0 "${SCRIPTS}/migrate" status
  [[ "${output}" =~ 2\ +notes\ +success\ +[0-9T:-]+Z\ +50/50/0 ]]
  run -0 --separate-stderr "${SCRIPTS}/verify"
  [[ "${lines[-1]}" == "GO: "* ]]
}

@test "migrate --report writes one line per step, atomic and per-step, also for a failed step" {
  app_db
  config
  run -0 "${SCRIPTS}/migrate" --execute --report "${W}/report.ndjson"
  [[ "$(jq -sc 'map([.step, .table, .source_rows, .inserted, .outcome, .committed])' "${W}/report.ndjson")" == \
    '[["1","customers",20,20,"success",true],["2","notes",50,50,"success",true]]' ]]
  pg -c 'TRUNCATE customers, notes'
  sqlite3 "${APPDB}" "UPDATE notes SET tick = 'soon' WHERE id = 7"
  run -65 "${SCRIPTS}/migrate" --per-step --execute --report "${W}/report.ndjson"
  [[ "$(jq -sc 'map([.step, .table, .source_rows, .outcome, .committed])' "${W}/report.ndjson")" == \
    '[["1","customers",20,"success",true],["2","notes",7,"failed",false]]' ]]
  [[ "$(jq -r 'select(.table == "notes") | .error' "${W}/report.ndjson")" == *"line 7"* ]]
}
