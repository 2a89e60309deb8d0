#!/usr/bin/env bats
# The end-to-end proof on the BellSystems seed: its twelve SQLite tables (device_logs into a
# monthly-partitioned table) and its Firestore collections, with runbook/plans/bellsystems.ndjson,
# through preflight, freeze, backup, migrate, verify --full, cutover and rollback.

load helpers

bellsystems() { bellsystems_app "PGFERRY_MIGRATE=per-step"; }

# The seed's "firestore_id: same as id during transition", filled by the plan itself
# (--copy-key): rows whose firestore_id is their id, of all rows, per table.
same_ids() {
  pg -c "SELECT (SELECT count(*) FILTER (WHERE firestore_id = id) || '/' || count(*) FROM crm_customers) || ' ' ||
                (SELECT count(*) FILTER (WHERE firestore_id = id) || '/' || count(*) FROM staff)"
}

@test "BellSystems: preflight, freeze, backup, migrate, verify --full, cutover; then a NO-GO and a rollback to the freeze" {
  bellsystems
  run -0 "${SCRIPTS}/preflight"
  [[ "${output}" == *"ok       step 2.5: Firestore firestore-group:orders"* ]]
  [[ "${output}" == *"ok       step 1.12: create partitions of device_logs"*"preflight: every check held"* ]]
  freeze_app
  run -0 "${SCRIPTS}/backup"
  run -0 "${SCRIPTS}/migrate" --execute
  [[ "${output}" == *"device_logs: Source: 200000 rows → Postgres: 200000 rows ✓"* ]]
  [[ "${output}" == *"crm_orders: Source: 60 rows → Postgres: 60 rows ✓"* ]]
  [[ "${output}" == *"staff: Source: 5 rows → Postgres: 5 rows ✓"*"migrated: every step loaded"* ]]
  [[ "$(pg -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'device_logs'::regclass")" -ge 14 ]]
  [[ "$(pg -c 'SELECT count(*) FROM device_logs_2024_07')" -gt 0 ]]
  [[ "$(pg -c "SELECT location->>'lat' FROM crm_customers WHERE id = 'c01'")" == 37.91 ]]
  [[ "$(pg -c "SELECT customer_id FROM crm_orders WHERE id = 'o2-1'")" == c02 ]]
  [[ "$(same_ids)" == "30/30 5/5" ]]
  run -0 "${SCRIPTS}/migrate" status
  [[ "$(grep -c ' success ' <<<"${output}")" == 18 ]]

  run -0 --separate-stderr "${SCRIPTS}/verify" --full
  [[ "${lines[-1]}" == "GO: every step ran, 18 step(s) match their sources (--full), lint clean; next: scripts/cutover" ]]
  [[ "$(jq -s 'map(select(.ok == true)) | length' "${W}/state/verify.ndjson")" -ge 18 ]]
  # The full check compares each copy with the Firestore document's id: one that differs is
  # a changed record naming firestore_id.
  pg -c "UPDATE staff SET firestore_id = 'other' WHERE id = (SELECT min(id) FROM staff)"
  run -1 --separate-stderr count-check --full --plan "${W}/plan.ndjson" --step 3.1 \
    --project "$(sed -n 's/^GOOGLE_CLOUD_PROJECT=//p' "${PGFERRY_CONFIG}")"
  [[ "$(jq -c '[.changed, .changed_records[0].fields[0].field, .changed_records[0].fields[0].dest]' <<<"${output}")" == '[1,"firestore_id","other"]' ]]
  pg -c "UPDATE staff SET firestore_id = id"

  run -0 "${SCRIPTS}/cutover" --execute
  grep -q "^APP_STORE=postgres$" "${W}/app/.env"
  sleep 4
  (($(pg -c 'SELECT count(*) FROM app_writes') > 0))

  # Something is wrong after all: an order's total differs from Firestore's.
  pg -c "UPDATE crm_orders SET total_price = total_price + 1 WHERE id = 'o2-1'"
  run -1 --separate-stderr "${SCRIPTS}/verify" --full
  [[ "${lines[-1]}" == "NO-GO: failed: count-check --full; do not cut over"* ]]
  run -0 "${SCRIPTS}/rollback" --execute
  [[ "$(content "${APPDB}")" == "${FROZEN}" ]]
  grep -q "^APP_STORE=sqlite$" "${W}/app/.env"
  run ! grep -q "postgres" "${W}/app/.env"
  sleep 4
  writer_running
  # The writer is running again: wait out its lock as an app's reader would.
  (($(sqlite3 -cmd '.timeout 5000' "${APPDB}" 'SELECT count(*) FROM heartbeats') > 20000))
}

@test "BellSystems: pg-load killed in the middle of device_logs, resumed with --from 1.12, verified" {
  bellsystems
  run -0 "${SCRIPTS}/freeze" --execute
  run -0 "${SCRIPTS}/backup"
  "${SCRIPTS}/migrate" --execute >"${W}/out" 2>&1 3>&- &
  local migrate=$! pid='' rc=0
  for _ in $(seq 1 600); do
    if [[ "$(pg -c "SELECT count(*) FROM _migration_runs WHERE target = 'device_logs' AND outcome = 'running'" 2>/dev/null)" == 1 ]]; then
      pid="$(pgrep -P "${migrate}" -x pg-load || true)"
      [[ -z "${pid}" ]] || break
    fi
    sleep 0.05
  done
  [[ -n "${pid}" ]]
  sleep 0.3
  kill -KILL "${pid}"
  wait "${migrate}" || rc=$?
  ((rc == 75))
  grep -q "error: step 1.12 failed (sqlite-dump exited .*, pg-load exited 137); the server reports this step rolled back: nothing of it was committed" "${W}/out"
  grep -q "resume with: .*migrate --execute --from 1.12 ${W}/plan.ndjson" "${W}/out"
  [[ "$(pg -c 'SELECT count(*) FROM device_logs')" == 0 ]]
  [[ "$(pg -c 'SELECT count(*) FROM heartbeats')" == 20000 ]]
  [[ "$(pg -c 'SELECT count(*) FROM crm_customers')" == 0 ]]

  run -0 "${SCRIPTS}/migrate" --execute --from 1.12
  [[ "${output}" == *"(${W}/plan.ndjson, 7 of 18 steps)"* ]]
  [[ "$(same_ids)" == "30/30 5/5" ]]
  [[ "$(pg -c "SELECT string_agg(outcome, ',' ORDER BY id) FROM _migration_runs WHERE target = 'device_logs'")" == interrupted,success ]]
  run -0 --separate-stderr "${SCRIPTS}/verify" --full
  [[ "${lines[-1]}" == "GO: "* ]]
}

@test "BellSystems one domain at a time, its own Alembic _migration_runs: the phase-1 plan as written to cutover, then the phase-2 plan to cutover and back" {
  bellsystems
  # Fewer log rows than the fixture's: this test is about the order of domains, not volume.
  sqlite3 "${APPDB}" "DELETE FROM device_logs WHERE id % 50 <> 0; DELETE FROM heartbeats WHERE id > 2000"
  local plans="${BATS_TEST_DIRNAME}/../../runbook/plans" not_valid phase2="${W}/phase2.conf"
  sed "s|/srv/bellsystems/data/database.db|${APPDB}|" "${plans}/bellsystems-phase1.ndjson" >"${W}/phase1.ndjson"
  cp "${plans}/bellsystems-phase2.ndjson" "${W}/phase2.ndjson"
  not_valid="SELECT string_agg(conname, ' ' ORDER BY conname) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated"
  # Phase 0's run log, as the seed's Alembic revision creates it (pgferry writes it as it is).
  pg -c "CREATE TABLE _migration_runs (id serial PRIMARY KEY, script_name text NOT NULL, ran_at timestamptz NOT NULL DEFAULT now(),
           source_rows integer, dest_rows integer, success boolean NOT NULL DEFAULT false)"
  # Phase 1. Its dry run loads quotations whose customers phase 2 brings: their keys stay NOT VALID.
  run -0 "${SCRIPTS}/preflight" "${W}/phase1.ndjson"
  [[ "${output}" == *"step '1.6' (crm_quotations): foreign keys re-added NOT VALID"*"preflight: every check held"* ]]
  freeze_app
  run -0 "${SCRIPTS}/backup"
  run -0 "${SCRIPTS}/migrate" --execute "${W}/phase1.ndjson"
  [[ "${output}" == *"device_logs: Source: 4000 rows → Postgres: 4000 rows ✓"*"migrated: every step loaded and count-verified (per-step)"* ]]
  [[ "${output}" == *"step '1.9' (crm_comms_log): foreign key crm_comms_log_customer_id_fkey stays NOT VALID: no step of the plan loads crm_customers"* ]]
  [[ "$(pg -c "${not_valid}")" == "crm_comms_log_customer_id_fkey crm_media_customer_id_fkey crm_quotations_customer_id_fkey" ]]
  run -0 --separate-stderr "${SCRIPTS}/verify" --full --no-lint "${W}/phase1.ndjson"
  [[ "${lines[-1]}" == "GO: every step ran, 12 step(s) match their sources (--full); next: scripts/cutover" ]]
  # The seed's check of the run log: one row per step, under the step's name.
  [[ "$(pg -c "SELECT string_agg(script_name || ':' || source_rows || ':' || dest_rows || ':' || success, ' ' ORDER BY ran_at)
               FROM _migration_runs")" == "1.1:120:120:true 1.2:60:60:true"*" 1.10:3000:3000:true 1.11:"*":true 1.12:4000:4000:true" ]]
  run -0 "${SCRIPTS}/cutover" --execute
  grep -qx "APP_STORE=postgres" "${W}/app/.env"

  # Phase 2, a domain of its own (the plan's header): its own state and cutover.env.
  printf 'CRM_STORE=postgres\n' >"${W}/phase2-cutover.env"
  sed -e "s|^PGFERRY_STATE_DIR=.*|PGFERRY_STATE_DIR=${W}/phase2|" -e "s|^PGFERRY_PLAN=.*|PGFERRY_PLAN=${W}/phase2.ndjson|" \
    -e "s|^PGFERRY_CUTOVER_ENV=.*|PGFERRY_CUTOVER_ENV=${W}/phase2-cutover.env|" "${PGFERRY_CONFIG}" >"${phase2}"
  echo "PGFERRY_APP_URL_FILE=${W}/app/.env" >>"${phase2}"
  chmod 600 "${phase2}"
  run -0 "${SCRIPTS}/preflight" --config "${phase2}"
  # Nothing local to watch: the freeze is the writers stopped.
  run -0 "${SCRIPTS}/freeze" --config "${phase2}" --execute
  [[ "${output}" == *"the writers are stopped (nothing local to watch)"* ]]
  run ! writer_running
  run -0 "${SCRIPTS}/backup" --config "${phase2}"
  run -0 "${SCRIPTS}/migrate" --config "${phase2}" --execute
  [[ "${output}" == *"crm_orders: Source: 60 rows → Postgres: 60 rows ✓"*"table crm_quotations: foreign key crm_quotations_customer_id_fkey validated"* ]]
  [[ -z "$(pg -c "${not_valid}")" ]]
  [[ "$(same_ids)" == "30/30 5/5" ]]
  run -0 --separate-stderr "${SCRIPTS}/verify" --config "${phase2}" --full
  [[ "${lines[-1]}" == "GO: every step ran, 6 step(s) match their sources (--full), lint clean; next: scripts/cutover" ]]
  run -0 "${SCRIPTS}/cutover" --config "${phase2}" --execute
  grep -qx "APP_STORE=postgres" "${W}/app/.env" && grep -qx "CRM_STORE=postgres" "${W}/app/.env"
  [[ "$(pg -c "SELECT count(*) FILTER (WHERE success) || '/' || count(*) FROM _migration_runs")" == 18/18 ]]
  # Phase 2's rollback goes back to phase 1's cutover, not before it.
  run -0 "${SCRIPTS}/rollback" --config "${phase2}" --execute
  grep -qx "APP_STORE=postgres" "${W}/app/.env"
  run ! grep -q "CRM_STORE" "${W}/app/.env"
}
