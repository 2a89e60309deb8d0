#!/usr/bin/env bats
# scripts/freeze and scripts/thaw against a live SQLite writer.

load helpers

@test "freeze without --execute prints its plan and stops nothing" {
  app_db
  config
  start_writer
  run -0 "${SCRIPTS}/freeze"
  [[ "${output}" == *"Plan:"*"stop the writers"*"dry run: nothing was done"* ]]
  writer_running
  [[ ! -e "${W}/state/frozen_at" ]]
}

@test "freeze refuses while a writer keeps writing" {
  app_db
  # The stop command stops nothing, and nothing tells freeze a writer still runs:
  # only the data can show it.
  config "PGFERRY_WRITERS_STOP=true" "PGFERRY_WRITERS_CHECK="
  start_writer
  run -1 "${SCRIPTS}/freeze" --execute
  [[ "${output}" == *"NOT frozen: data changed during 2s: ${APPDB}"* ]]
  [[ ! -e "${W}/state/frozen_at" ]]
  grep -q 'freeze refused' "${W}/state/history.log"
}

@test "freeze refuses when the writers do not stop" {
  app_db
  config "PGFERRY_WRITERS_STOP=true" "PGFERRY_STOP_TIMEOUT=1"
  start_writer
  run -1 "${SCRIPTS}/freeze" --execute
  [[ "${output}" == *"the writers are still running 1s after being stopped"* ]]
  [[ ! -e "${W}/state/frozen_at" ]]
}

@test "freeze stops the writer, proves quiet, records time and counts; thaw restarts it" {
  app_db
  config
  start_writer
  run -0 "${SCRIPTS}/freeze" --execute
  [[ "${output}" == *"frozen at "*": no change in 2s"* ]]
  run ! writer_running
  [[ -s "${W}/state/frozen_at" ]]
  [[ "$(cat "${W}/state/databases")" == "${APPDB}" ]]
  local notes
  notes="$(sqlite3 "${APPDB}" 'SELECT count(*) FROM notes')"
  ((notes > 50))
  jq -se --arg n "${notes}" 'map(select(.table == "notes"))[0].rows == ($n | tonumber)' "${W}/state/counts.ndjson"
  jq -se 'map(select(.table == "customers"))[0].rows == 20' "${W}/state/counts.ndjson"

  run -0 "${SCRIPTS}/thaw"
  [[ "${output}" == *"dry run"* ]]
  run ! writer_running
  run -0 "${SCRIPTS}/thaw" --execute
  sleep 0.5
  writer_running
  [[ -s "${W}/state/thawed_at" ]]
}

@test "freeze watches JSON state files too" {
  mkdir -p "${W}/app/data"
  echo '{"users": []}' >"${W}/app/data/users.json"
  echo '{"step": "1", "source": "ndjson:'"${W}"'/users.ndjson", "target": "users"}' >"${W}/plan.ndjson"
  config "PGFERRY_WRITERS_STOP=true" "PGFERRY_WATCH_FILES=${W}/app/data"
  (for i in 1 2 3 4 5 6 7 8 9 10; do echo "{\"n\": ${i}}" >"${W}/app/data/users.json"; sleep 0.3; done) 3>&- &
  run -1 "${SCRIPTS}/freeze" --execute
  [[ "${output}" == *"NOT frozen"*"users.json"* ]]
  wait
  run -0 "${SCRIPTS}/freeze" --execute
}

@test "freeze --help shows the header, unknown options are usage errors" {
  run -0 "${SCRIPTS}/freeze" --help
  [[ "${output}" == *"Usage: scripts/freeze"*"Exit status:"* ]]
  run -64 "${SCRIPTS}/freeze" --bogus
  [[ "${output}" == *"unknown option '--bogus'"*"Try 'freeze --help'"* ]]
}
