#!/usr/bin/env bats
# The FossaWork seed (003) end to end: V1's data directory (fixtures/fossawork/make-v1:
# users.json an object keyed by id, five files per user, US dates) and V2's SQLite database,
# with runbook/plans/fossawork.ndjson as written: the six mappings as json: steps and three
# SQLite steps; a re-run loads nothing twice (natural keys on the serial-keyed tables).

load helpers

FIXTURE="${BATS_TEST_DIRNAME}/../../fixtures/fossawork"
PLAN="${BATS_TEST_DIRNAME}/../../runbook/plans/fossawork.ndjson"

fossawork() {
  DATA="${W}/srv/fossawork/data"
  APPDB="${W}/srv/fossawork/backend/fossawork_v2.db"
  "${FIXTURE}/make-v1" "${DATA}"
  mkdir -p "$(dirname "${APPDB}")"
  sqlite3 "${APPDB}" <"${FIXTURE}/sqlite.sql" >/dev/null
  app_target "${FIXTURE}/postgres.sql"
  sed "s|/srv/fossawork/|${W}/srv/fossawork/|g" "${PLAN}" >"${W}/plan.ndjson"
  WRITER_SQL="INSERT INTO audit_trail (table_name, action, created_at) VALUES ('users', 'UPDATE', datetime('now'))"
  config "$(writers_start 2 "${WRITER_SQL}")"
}

@test "FossaWork: the six V1 mappings and V2's tables as written; verify --full GO; values match jq and sqlite3" {
  fossawork
  run -0 "${SCRIPTS}/preflight"
  [[ "${output}" == *"note     table schema_migrations in ${APPDB}: no step of the plan copies it"* ]]
  [[ "${output}" == *"ok       step v1.3: its jq program runs; the first 4 row(s) convert for user_credentials"* ]]
  start_writer
  run -0 "${SCRIPTS}/freeze" --execute
  run -0 "${SCRIPTS}/backup"
  [[ "${output}" == *"backed up 1 database(s) and 1 JSON tree(s); every backup checked"* ]]
  run -0 "${SCRIPTS}/migrate" --execute
  [[ "${output}" == *"step 'v1.1' (users): Source: 4 rows → Postgres: 4 rows ✓"* ]]
  [[ "${output}" == *"step 'v1.3' (user_credentials): Source: 4 rows → Postgres: 4 rows ✓"* ]]
  [[ "${output}" == *"step 'v1.5' (user_dispenser_data): Source: 21 rows → Postgres: 21 rows ✓"* ]]
  run -0 --separate-stderr "${SCRIPTS}/verify" --full
  [[ "${lines[-1]}" == "GO: every step ran, 9 step(s) match their sources (--full), lint clean; next: scripts/cutover" ]]

  # Independently of count-check.
  local u="${DATA}/users"
  diff <(jq -r 'to_entries[] | [.key, .value.username, .value.password_hash] | join("|")' "${u}/users.json" | sort) \
    <(pg -c "SELECT id || '|' || username || '|' || password_hash FROM users" | sort)
  diff <(for f in "${u}"/*/scraped_content.json; do
    jq -r --arg u "$(basename "$(dirname "${f}")")" '.workOrders[] | [.id, $u, (.scheduled_date | strptime("%m/%d/%Y") | strftime("%Y-%m-%d"))] | join("|")' "${f}"
  done | sort) <(pg -c "SELECT id || '|' || user_id || '|' || scheduled_date FROM work_orders" | sort)
  diff <(for f in "${u}"/*/work_fossa_credentials.json; do
    jq -r --arg u "$(basename "$(dirname "${f}")")" '[$u, .password, (.last_verified | strptime("%m/%d/%Y") | strftime("%Y-%m-%d"))] | join("|")' "${f}"
  done | sort) <(pg -c "SELECT user_id || '|' || password || '|' || last_verified FROM user_credentials" | sort)
  diff <(for f in "${u}"/*/dispenser_store.json; do
    jq -r --arg u "$(basename "$(dirname "${f}")")" '.dispenserData | to_entries[] | [$u, .key, (.value.dispensers | length)] | join("|")' "${f}"
  done | sort) <(pg -c "SELECT user_id || '|' || work_order_id || '|' || jsonb_array_length(dispensers) FROM user_dispenser_data" | sort)
  [[ "$(pg -c 'SELECT count(*) FROM user_activities')" == "$(jq -s 'map(length) | add' "${u}"/*/activity_log.json)" ]]
  [[ "$(pg -c "SELECT settings->>'digest_frequency' FROM user_preferences WHERE user_id = 'a90f3b6d22'")" == weekly ]]
  diff <(sqlite3 -batch "${APPDB}" "SELECT id, status, coalesce(error, '') FROM automation_jobs ORDER BY id") \
    <(pg -c "SELECT id || '|' || status || '|' || coalesce(error, '') FROM automation_jobs ORDER BY id::text COLLATE \"C\"")
  [[ "$(pg -c 'SELECT count(*) FROM schema_migrations')" == 0 ]]

  # Its runner's "migrate" again: nothing loaded twice, no crash on the serial-keyed tables.
  run -0 "${SCRIPTS}/migrate" --execute
  [[ "${output}" == *"step 'v1.6' (user_activities): 0 rows inserted, 30 already present"* ]]
  [[ "${output}" != *"panicked"* ]]
  run -0 "${SCRIPTS}/migrate" status
  run -0 "${SCRIPTS}/verify" --full
  run -0 "${SCRIPTS}/cutover" --execute
  sleep 4
  (($(pg -c 'SELECT count(*) FROM app_writes') > 0))
}

@test "FossaWork: rollback restores the V1 files and the V2 database as they were at the freeze" {
  fossawork
  start_writer
  run -0 "${SCRIPTS}/freeze" --execute
  local files db
  files="$(cd "${DATA}" && find . -type f -exec sha256sum {} + | sort)"
  db="$(content "${APPDB}")"
  to_cutover
  # Something edits V1's files after cutover.
  echo '[]' >"${DATA}/users/7bd2a4e0c1/activity_log.json"
  rm "${DATA}/users/a90f3b6d22/email_settings.json"
  run -0 "${SCRIPTS}/rollback" --execute
  [[ "${output}" == *"rolled back: the application runs on SQLite (${APPDB}), its JSON files (${DATA}/users), its env files as before cutover again"* ]]
  [[ "$(cd "${DATA}" && find . -type f -not -path './users.before-restore-*' -exec sha256sum {} + | sort)" == "${files}" ]]
  compgen -G "${DATA}/users.before-restore-*/7bd2a4e0c1/activity_log.json"
  [[ "$(content "${APPDB}")" == "${db}" ]]
}
