#!/usr/bin/env bats
# scripts/migrate --atomic and --dry-run: the whole plan in one transaction, all or nothing.

load helpers

TARGETS=(melody_drafts built_melodies mfg_audit_log device_alerts crm_sync_state crm_quotations
  crm_quotation_items crm_media crm_comms_log commands heartbeats device_logs console_settings
  public_features crm_products crm_customers crm_orders staff)

# no_transaction_left: no session of this database is in a transaction, none prepared.
no_transaction_left() {
  [[ "$(pg -c "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                 AND pid <> pg_backend_pid() AND xact_start IS NOT NULL")" == 0 ]]
  [[ "$(pg -c "SELECT count(*) FROM pg_prepared_xacts")" == 0 ]]
}

zeros() { printf '%s=0 ' "${TARGETS[@]}" | sed 's/ $//'; }

# count_lines: the "TABLE: Source: N rows → Postgres: N rows ✓" lines of the output, sorted.
count_lines() { grep -o '[^ ]*: Source: [0-9]* rows → Postgres: [0-9]* rows ✓' <<<"$1" | sort; }

@test "atomic BellSystems: a bad value in a middle step commits nothing in any of the 18 tables; fixed, it commits all" {
  bellsystems_app "PGFERRY_MIGRATE=atomic"
  sqlite3 "${APPDB}" "UPDATE crm_quotation_items SET qty = 'many' WHERE id = 5"
  run -65 "${SCRIPTS}/migrate" --execute
  [[ "${output}" == *"Atomic plan (${W}/plan.ndjson, 18 of 18 steps)"* ]]
  [[ "${output}" == *"step '1.7'"*"column 'qty'"*"nothing was committed"* ]]
  [[ "${output}" == *"error: the atomic run failed (producers exited "*", pg-load exited 65)"* ]]
  [[ "$(counts "${TARGETS[@]}")" == "$(zeros)" ]]
  no_transaction_left
  [[ ! -e "${W}/state/migrated_at" ]]
  # The run log says which step failed, on which line.
  [[ "$(pg -c "SELECT count(*) FROM _migration_runs WHERE target = 'crm_quotation_items' AND outcome = 'failed'
                 AND error LIKE '%line %qty%'")" == 1 ]]

  sqlite3 "${APPDB}" "UPDATE crm_quotation_items SET qty = 2 WHERE id = 5"
  run -0 "${SCRIPTS}/migrate" --execute
  [[ "${output}" == *"committed in one transaction"*"migrated: every step loaded and count-verified (atomic)"* ]]
  [[ "$(pg -c 'SELECT count(*) FROM device_logs')" == 200000 && "$(pg -c 'SELECT count(*) FROM crm_orders')" == 60 ]]
  # The plan's --copy-key steps in the one transaction: firestore_id is the id in every row.
  [[ "$(pg -c "SELECT count(*) FROM crm_customers WHERE firestore_id = id")" == 30 ]]
  [[ "$(pg -c "SELECT count(*) FROM staff WHERE firestore_id = id")" == 5 ]]
  # Children came before their parents (crm_quotations before crm_customers): every key valid.
  [[ "$(pg -c "SELECT bool_and(convalidated) FROM pg_constraint WHERE contype = 'f'")" == t ]]
  # pg-partition ensure ran after the commit: the months ahead exist.
  [[ "$(pg -c "SELECT to_regclass('device_logs_$(date -u -d '+2 months' +%Y_%m)') IS NOT NULL")" == t ]]
  run -0 --separate-stderr "${SCRIPTS}/verify" --full
  [[ "${lines[-1]}" == "GO: "* ]]
}

@test "atomic: a producer killed mid-stream, then pg-load killed: nothing committed, no transaction left; the next run completes" {
  app_db
  config "PGFERRY_MIGRATE=atomic"
  cp "${W}/plan.ndjson" "${W}/good.ndjson"
  sed -i "s|sqlite:${APPDB}:notes|ndjson:${W}/fifo|" "${W}/plan.ndjson"
  local who
  for who in producer pg-load; do
    rm -f "${W}/fifo" && mkfifo "${W}/fifo"
    ({ sqlite-dump "${APPDB}" notes | head -n 10; sleep 8; } >"${W}/fifo") 3>&- &
    local feeder=$!
    "${SCRIPTS}/migrate" --execute >"${W}/out" 2>&1 3>&- &
    local migrate=$! pid=''
    for _ in $(seq 1 100); do
      pid="$(pgrep -f -- "^cat -- ${W}/fifo$" || true)"
      [[ -z "${pid}" ]] || break
      sleep 0.1
    done
    [[ -n "${pid}" ]]
    sleep 0.5
    [[ "${who}" == producer ]] || pid="$(pgrep -P "${migrate}" -x pg-load)"
    kill -KILL "${pid}"
    local rc=0
    wait "${migrate}" || rc=$?
    kill "${feeder}" 2>/dev/null || true
    cat "${W}/out"
    ((rc != 0))
    [[ "$(counts customers notes)" == "customers=0 notes=0" ]]
    no_transaction_left
  done
  grep -q "pg-load exited 137" "${W}/out"
  cp "${W}/good.ndjson" "${W}/plan.ndjson"
  run -0 "${SCRIPTS}/migrate" --execute
  [[ "$(counts customers notes)" == "customers=20 notes=50" ]]
  # The run log: the cut stream failed; the last run succeeded.
  local runs
  runs="$(pg -c "SELECT string_agg(outcome, ',' ORDER BY id) FROM _migration_runs WHERE target = 'notes'")"
  [[ "${runs}" == failed,*success ]]
}

@test "migrate --dry-run of the BellSystems fixture leaves pg_dump as it was and reports the real run's counts" {
  bellsystems_app
  # The run log records the dry run (as it records every run): left out of the comparison.
  local dump=(pg_dump --no-password --restrict-key=pgferry -d "${DATABASE_URL}" -T '_migration_runs*')
  "${dump[@]}" >"${W}/before.sql"
  run -0 "${SCRIPTS}/migrate" --dry-run
  local dry="${output}"
  [[ "${dry}" == *"dry run: every step loaded and count-verified, then rolled back"* ]]
  "${dump[@]}" >"${W}/after.sql"
  diff "${W}/before.sql" "${W}/after.sql"
  [[ "$(count_lines "${dry}" | wc -l)" == 18 ]]

  run -0 "${SCRIPTS}/migrate" --execute --atomic
  [[ "$(count_lines "${output}")" == "$(count_lines "${dry}")" ]]
}

@test "after a rollback, migrate --mode mirror converges on the changed source; a table outside the plan is untouched" {
  app_db
  config "PGFERRY_MIGRATE=atomic"
  run -0 "${SCRIPTS}/migrate" --execute
  pg -c "CREATE TABLE invoices (id int PRIMARY KEY, customer_id text NOT NULL REFERENCES customers(id));
         INSERT INTO invoices VALUES (1, 'c1')"
  # The app ran on SQLite again: a customer renamed, a note deleted, two added, a customer
  # deleted with its notes (children of a deleted parent, in the same atomic run).
  sqlite3 "${APPDB}" "UPDATE customers SET name = 'Renamed' WHERE id = 'c2'; DELETE FROM notes WHERE id = 3;
    INSERT INTO notes (id, customer_id, body) VALUES (51, 'c1', 'new'), (52, 'c2', 'new');
    DELETE FROM notes WHERE customer_id = 'c20'; DELETE FROM customers WHERE id = 'c20'"
  # Insert mode only adds: PostgreSQL is a superset, and verify says so.
  run -0 "${SCRIPTS}/migrate" --execute
  run -1 --separate-stderr "${SCRIPTS}/verify" --full
  # Per step, the parent's step cannot delete c20 before the notes' step has run.
  run "${SCRIPTS}/migrate" --execute --per-step --mode mirror
  ((status != 0))
  [[ "${output}" == *"step 1 failed"*"nothing of this step was committed"* && "${output}" == *notes_customer_id_fkey* ]]
  [[ "$(pg -c "SELECT name FROM customers WHERE id = 'c2'")" == "Customer 2" ]]
  run -0 "${SCRIPTS}/migrate" --execute --mode mirror
  [[ "${output}" == *"0 inserted"*"1 updated"*"1 deleted"*"18 unchanged"* ]]
  [[ "${output}" == *"0 inserted"*"0 updated"*"3 deleted"*"49 unchanged"* ]]
  run -0 --separate-stderr "${SCRIPTS}/verify" --full
  [[ "${lines[-1]}" == "GO: "* ]]
  [[ "$(pg -c 'SELECT customer_id FROM invoices')" == c1 ]]
  # A deleted row that a table outside the plan still references stops the load, naming the key.
  sqlite3 "${APPDB}" "DELETE FROM notes WHERE customer_id = 'c1'; DELETE FROM customers WHERE id = 'c1'"
  run "${SCRIPTS}/migrate" --execute --mode mirror
  ((status != 0))
  [[ "${output}" == *invoices_customer_id_fkey* ]]
  [[ "$(counts customers notes invoices)" == "customers=19 notes=49 invoices=1" ]]
}
