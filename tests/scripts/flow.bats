#!/usr/bin/env bats
# The whole runbook on a small app: backup, verify's go/no-go, cutover, rollback.

load helpers

# frozen_and_migrated: the app runs, then freeze (FROZEN: the content hash), backup, migrate.
frozen_and_migrated() {
  [[ -e "${APPDB}" ]] || app_db
  pg -c 'CREATE TABLE IF NOT EXISTS app_writes (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())'
  config "$(writers_start 3)" "$@"
  freeze_app
  run -0 "${SCRIPTS}/backup"
  [[ "${output}" == *"backed up 1 database(s); every backup checked"* ]]
  run -0 "${SCRIPTS}/migrate" --execute
}

@test "backup refuses without a freeze; --unfrozen backs up without recording a rollback point" {
  app_db
  config
  run -1 "${SCRIPTS}/backup"
  [[ "${output}" == *"no freeze is in force"* ]]
  run -0 "${SCRIPTS}/backup" --unfrozen
  compgen -G "${W}/backups/app-*.manifest.json"
  [[ ! -e "${W}/state/backups.tsv" ]]
}

@test "verify says GO when every step matches, NO-GO when PostgreSQL lost a row" {
  frozen_and_migrated
  run -0 --separate-stderr "${SCRIPTS}/verify"
  [[ "${lines[-1]}" == "GO: every step ran, 2 step(s) match their sources (counts), lint clean; next: scripts/cutover" ]]
  [[ "$(cat "${W}/state/verified")" == "GO "*" counts" ]]
  run -0 "${SCRIPTS}/verify" --full
  [[ "${lines[-1]}" == "GO: "*"(--full)"* ]]
  run -0 "${SCRIPTS}/verify" --sample 5 --no-lint
  [[ "${lines[-1]}" == "GO: "*"(--sample 5); next: scripts/cutover" ]]
  run -64 "${SCRIPTS}/verify" --sample 5 --full

  pg -c "DELETE FROM notes WHERE id = 9"
  run -1 --separate-stderr "${SCRIPTS}/verify"
  [[ "${lines[-1]}" == "NO-GO: failed: count-check; do not cut over"* ]]
  [[ ! -e "${W}/state/verified" ]]
}

@test "cutover refuses without a freeze, a backup and a GO; prints its plan without --execute" {
  app_db
  config
  local env_before
  env_before="$(cat "${W}/app/.env")"
  run -1 "${SCRIPTS}/cutover" --execute
  [[ "${output}" == *"Refused: no freeze is in force"*"Refused: no GO from scripts/verify"* ]]
  [[ "$(cat "${W}/app/.env")" == "${env_before}" ]]

  frozen_and_migrated
  run -1 "${SCRIPTS}/cutover" --execute
  [[ "${output}" == *"Refused: no GO from scripts/verify"* ]]
  run -0 "${SCRIPTS}/verify"
  run -0 "${SCRIPTS}/cutover"
  [[ "${output}" == *"set in ${W}/app/.env: DATABASE_URL APP_STORE"*"dry run: nothing was done"* ]]
  [[ "$(cat "${W}/app/.env")" == "${env_before}" ]]
  run ! writer_running
}

@test "cutover switches the env files and starts the app on PostgreSQL; rollback from a dirty tree restores SQLite and the env" {
  frozen_and_migrated "PGFERRY_APP_ENV='${W}/app/.env ${W}/app/frontend.env'"
  local env_before kept
  env_before="$(cat "${W}/app/.env")"
  kept="${W}/state/env-kept/$(echo "${W}/app/.env" | tr / %)"
  run -0 "${SCRIPTS}/verify"
  run -0 "${SCRIPTS}/cutover" --execute
  [[ "${output}" == *"cut over at "* ]]
  local pw="${DATABASE_URL#*://*:}"
  [[ "${output}" != *"${pw%%@*}"* ]]
  [[ "$(cat "${kept}")" == "${env_before}" ]]
  [[ -e "${W}/state/env-kept/$(echo "${W}/app/frontend.env" | tr / %).absent" ]]
  [[ "$(cat "${W}/app/frontend.env")" == "$(cat "${W}/cutover.env")" ]]
  run -0 cat "${W}/app/.env"
  [[ "${lines[0]}" == "# the app" && "${lines[1]}" == "APP_STORE=postgres" && "${lines[2]}" == "SECRET_KEY=s3cret" ]]
  [[ "${lines[3]}" == "DATABASE_URL=${DATABASE_URL}" && ${#lines[@]} == 4 ]]
  [[ "$(stat -c %a "${W}/app/.env")" == "$(stat -c %a "${kept}")" ]]
  sleep 4
  writer_running
  (($(pg -c 'SELECT count(*) FROM app_writes') > 0))
  [[ "$(content "${APPDB}")" == "${FROZEN}" ]]
  # A migrate now would load the sources' old rows into the live database: refused.
  pg -c "DELETE FROM notes WHERE id = 1"
  run -1 "${SCRIPTS}/migrate" --execute
  [[ "${output}" == *"refused: cut over at "*"Nothing was loaded"*"--after-cutover"* ]]
  [[ "$(pg -c 'SELECT count(*) FROM notes WHERE id = 1')" == 0 ]]
  run -0 "${SCRIPTS}/migrate" --execute --after-cutover
  [[ "$(pg -c 'SELECT count(*) FROM notes WHERE id = 1')" == 1 ]]
  # Something touches SQLite after cutover, and the app's directory is a dirty git tree.
  sqlite3 "${APPDB}" "DELETE FROM customers WHERE id = 'c3'"
  git -C "${W}/app" init -q && git -C "${W}/app" add -A && git -C "${W}/app" -c user.email=t@t -c user.name=t commit -qm app
  echo 'uncommitted' >>"${W}/app/writer.sh"
  echo 'untracked' >"${W}/app/new-file"
  cd "${W}/app"

  run -0 "${SCRIPTS}/rollback"
  [[ "${output}" == *"restore ${APPDB} from ${W}/backups/app-"*"put back ${W}/app/.env from ${kept}"*"remove ${W}/app/frontend.env, which cutover created"*"dry run"* ]]
  run -0 "${SCRIPTS}/rollback" --execute
  [[ "$(content "${APPDB}")" == "${FROZEN}" ]]
  [[ "$(cat "${W}/app/.env")" == "${env_before}" ]]
  compgen -G "${APPDB}.before-restore-*"
  compgen -G "${W}/state/rolled-back-*/backups.tsv"
  [[ ! -e "${W}/state/frozen_at" && ! -e "${kept}" && ! -e "${W}/app/frontend.env" ]]
  # The app came back, on SQLite.
  sleep 4
  writer_running
  [[ "$(content "${APPDB}")" != "${FROZEN}" ]]
  # PostgreSQL is left for inspection.
  [[ "$(pg -c 'SELECT count(*) FROM customers')" == 20 ]]
  # A second rollback has nothing left to restore, and says so.
  run -0 "${SCRIPTS}/rollback" --execute
  [[ "${output}" == *"no backup is recorded"*"no cutover kept them aside"* ]]
}

@test "rollback after a NO-GO restores the freeze's content; --truncate-targets empties PostgreSQL" {
  frozen_and_migrated
  pg -c "UPDATE customers SET name = 'changed' WHERE id = 'c2'; DELETE FROM notes WHERE id = 1"
  run -1 "${SCRIPTS}/verify"
  run -1 "${SCRIPTS}/cutover" --execute
  # A stray write reached SQLite while frozen (a cron job nobody knew of).
  sqlite3 "${APPDB}" "INSERT INTO notes (customer_id, body) VALUES ('c1', 'stray')"
  local env_before
  env_before="$(cat "${W}/app/.env")"
  run -0 "${SCRIPTS}/rollback" --execute --truncate-targets "${W}/plan.ndjson"
  [[ "$(content "${APPDB}")" == "${FROZEN}" ]]
  [[ "$(cat "${W}/app/.env")" == "${env_before}" ]]
  [[ "$(pg -c 'SELECT count(*) FROM customers') $(pg -c 'SELECT count(*) FROM notes')" == "0 0" ]]
  sleep 1
  writer_running
}

@test "rollback leaves a database the app wrote to after a thaw, unless --force-restore" {
  frozen_and_migrated
  run -0 "${SCRIPTS}/thaw" --execute
  sleep 4
  run -0 "${SCRIPTS}/rollback"
  [[ "${output}" == *"leave ${APPDB}: it changed after the freeze"* ]]
  run -0 "${SCRIPTS}/rollback" --execute --force-restore
  [[ "${output}" == *"restored ${APPDB} from"* ]]
  [[ "$(content "${APPDB}")" == "${FROZEN}" ]]
  compgen -G "${APPDB}.before-restore-*"
}

@test "rollback after a thaw leaves the newer database as it is" {
  frozen_and_migrated
  run -0 "${SCRIPTS}/thaw" --execute
  sleep 4
  run -0 "${SCRIPTS}/rollback" --execute
  [[ "${output}" != *"restored ${APPDB}"* ]]
  [[ "$(content "${APPDB}")" != "${FROZEN}" ]]
  run ! compgen -G "${APPDB}.before-restore-*"
}

@test "rollback changes nothing when a backup fails its check" {
  frozen_and_migrated
  local gz
  gz="$(compgen -G "${W}/backups/app-*.sqlite.gz")"
  printf 'x' | dd of="${gz}" bs=1 seek=100 conv=notrunc 2>/dev/null
  sqlite3 "${APPDB}" "INSERT INTO notes (customer_id, body) VALUES ('c1', 'after')"
  local now
  now="$(content "${APPDB}")"
  run -1 "${SCRIPTS}/rollback" --execute
  [[ "${output}" == *"failed its check; nothing was changed"* ]]
  [[ "$(content "${APPDB}")" == "${now}" ]]
  [[ -e "${W}/state/frozen_at" ]]
}

@test "rollback with no runbook state just restarts the writers" {
  app_db
  config
  run -0 "${SCRIPTS}/rollback" --execute
  [[ "${output}" == *"no backup is recorded"*"rolled back"* ]]
  sleep 0.5
  writer_running
}

@test "an app with JSON state: jq into NDJSON with its end record, migrated and verified" {
  mkdir -p "${W}/app/data" "${W}/json"
  cat >"${W}/app/data/app-state.json" <<'JSON'
{"users": [{"id": 1, "email": "a@example.org", "created_at": "2025-05-01T10:00:00Z", "roles": ["admin"]},
           {"id": 2, "email": "b@example.org", "created_at": 1748772000, "roles": []}],
 "sessions": [{"token": "t1", "user_id": 1, "expires_at": "2025-06-01 00:00:00"}]}
JSON
  pg <<'SQL'
CREATE SCHEMA identity;
CREATE TABLE identity.users (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, created_at timestamptz NOT NULL, roles text[] NOT NULL);
CREATE TABLE identity.sessions (token text PRIMARY KEY, user_id bigint NOT NULL REFERENCES identity.users(id), expires_at timestamptz NOT NULL);
SQL
  cat >"${W}/plan.ndjson" <<PLAN
{"step": "1.1", "source": "ndjson:${W}/json/users.ndjson", "target": "identity.users", "load": ["--epoch-unit", "s"], "check": ["--epoch-unit", "s"]}
{"step": "1.2", "source": "ndjson:${W}/json/sessions.ndjson", "target": "identity.sessions"}
PLAN
  config "PGFERRY_WATCH_FILES=${W}/app/data" "PGFERRY_WRITERS_STOP=true"
  run -0 "${SCRIPTS}/freeze" --execute
  local t
  for t in users sessions; do
    jq -c --arg t "${t}" '.[$t] as $r | ($r[]), {"$end": {rows: ($r | length), source: "json"}}' \
      "${W}/app/data/app-state.json" >"${W}/json/${t}.ndjson"
  done
  run -0 "${SCRIPTS}/migrate" --execute
  run -0 "${SCRIPTS}/verify" --full
  [[ "${lines[-1]}" == "GO: "* ]]
  [[ "$(pg -c "SELECT nextval('identity.users_id_seq')")" == 3 ]]
}
