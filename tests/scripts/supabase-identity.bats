#!/usr/bin/env bats
# The Supabase seed (001) end to end: the identity state as the app keeps it (fixtures/
# supabase-identity/make-state: one JSON object, camelCase keys, Date.now() milliseconds),
# runbook/plans/supabase-identity.ndjson as written (json: steps), a feature-flag cutover, and
# a rollback that puts the flag back and says what the app runs on.

load helpers

FIXTURE="${BATS_TEST_DIRNAME}/../../fixtures/supabase-identity"
PLAN="${BATS_TEST_DIRNAME}/../../runbook/plans/supabase-identity.ndjson"

# The app: a writer of the JSON state (it rewrites app-state.json while it runs), its env
# file with SOC_IDENTITY_STORE=supabase, and the plan with /srv/soc/ under the test dir.
supabase() {
  STATE="${W}/srv/soc/state/app-state.json"
  mkdir -p "$(dirname "${STATE}")"
  "${FIXTURE}/make-state" "${STATE}"
  app_target "${FIXTURE}/postgres.sql"
  sed "s|/srv/soc/|${W}/srv/soc/|g" "${PLAN}" >"${W}/plan.ndjson"
  cat >"${W}/app/soc.sh" <<SH
echo \$\$ >"${W}/app/writer.pid"
trap 'exit 0' TERM
set -a; . "${W}/app/.env"; set +a
sleep 1
while :; do
  if [ "\${SOC_IDENTITY_STORE}" = postgres ]; then
    psql -X -q --no-password -d "${DATABASE_URL}" -c "INSERT INTO app_writes DEFAULT VALUES" >/dev/null 2>&1 || true
  else
    jq -c '.updatedAt += 1' "${STATE}" >"${STATE}.tmp" && mv "${STATE}.tmp" "${STATE}"
  fi
  sleep 0.2
done
SH
  config "PGFERRY_WRITERS_START='bash ${W}/app/soc.sh >/dev/null 2>&1 3>&- &'" "PGFERRY_APP_URL_FILE=env"
  printf 'SOC_IDENTITY_STORE=supabase\nSUPABASE_URL=https://soc.supabase.example\n' >"${W}/app/.env"
  printf 'SOC_IDENTITY_STORE=postgres\n' >"${W}/cutover.env"
}

start_soc() {
  bash "${W}/app/soc.sh" >/dev/null 2>&1 3>&- &
  sleep 1.5
}

@test "Supabase identity: json: steps as written; freeze watches the app's state file; backup keeps it; values match jq" {
  supabase
  # The seed's required step: RLS on the tables that hold password hashes and sessions.
  echo "PGFERRY_RLS_TABLES='identity.users identity.sessions'" >>"${PGFERRY_CONFIG}"
  run -1 "${SCRIPTS}/preflight"
  [[ "${output}" == *"MISSING  row-level security enabled on identity.users (ALTER TABLE"* ]]
  pg -c 'ALTER TABLE identity.users ENABLE ROW LEVEL SECURITY; ALTER TABLE identity.sessions ENABLE ROW LEVEL SECURITY'
  run -0 "${SCRIPTS}/preflight"
  [[ "${output}" == *"ok       step 1.1: json ${STATE} (1 file)"* ]]
  [[ "${output}" == *"ok       step 1.2: its jq program runs; the first 45 row(s) convert for identity.sessions"* ]]
  [[ "${output}" == *"ok       row-level security enabled on identity.sessions"* ]]
  start_soc
  run -0 "${SCRIPTS}/freeze" --execute
  [[ "${output}" == *"watch for 2s: "*"${STATE}"* ]]
  local frozen
  frozen="$(sha256sum <"${STATE}")"
  # The state file is the rollback point: no cutover before it is backed up.
  run -1 "${SCRIPTS}/cutover" --execute
  [[ "${output}" == *"Refused: the freeze's backups were not made and checked (scripts/backup)"* ]]
  run -0 "${SCRIPTS}/backup"
  [[ "${output}" == *"1 files"*"backed up 0 database(s) and 1 JSON tree(s); every backup checked"* ]]
  run -0 "${SCRIPTS}/migrate" --execute
  [[ "${output}" == *"step '1.1' (identity.users): Source: 30 rows → Postgres: 30 rows ✓"* ]]
  [[ "${output}" == *"step '1.2' (identity.sessions): Source: 45 rows → Postgres: 45 rows ✓"* ]]
  run -0 --separate-stderr "${SCRIPTS}/verify" --full
  [[ "${lines[-1]}" == "GO: every step ran, 2 step(s) match their sources (--full), lint clean; next: scripts/cutover" ]]

  # Independently of count-check: jq over the state against psql.
  diff <(jq -r '.users[] | [.id, .username, .passwordHash // "", .emailKey // "", .createdAt, .emailVerifiedAt // ""] | join("|")' "${STATE}") \
    <(pg -c "SELECT id || '|' || username || '|' || coalesce(password_hash, '') || '|' || coalesce(email_key, '') || '|'
               || (extract(epoch FROM created_at) * 1000)::bigint || '|'
               || coalesce(((extract(epoch FROM email_verified_at) * 1000)::bigint)::text, '') FROM identity.users ORDER BY id")
  diff <(jq -r '.sessions[] | [.token, .userId, .expiresAt, .userAgent // ""] | join("|")' "${STATE}" | sort) \
    <(pg -c "SELECT token || '|' || user_id || '|' || (extract(epoch FROM expires_at) * 1000)::bigint || '|' || coalesce(user_agent, '')
             FROM identity.sessions" | sort)
  # The sequence is past the loaded ids: the adapter's first insert gets 31.
  [[ "$(pg -c "SELECT nextval('identity.users_id_seq')")" == 31 ]]

  run -0 "${SCRIPTS}/cutover" --execute
  grep -qx "SOC_IDENTITY_STORE=postgres" "${W}/app/.env"
  sleep 2
  (($(pg -c 'SELECT count(*) FROM app_writes') > 0))
  [[ "$(sha256sum <"${STATE}")" == "${frozen}" ]]

  run -0 "${SCRIPTS}/rollback" --execute
  [[ "${output}" == *"rolled back: the application runs on its JSON files (${STATE}), its env files as before cutover again"* ]]
  [[ "${output}" != *"SQLite"* ]]
  grep -qx "SOC_IDENTITY_STORE=supabase" "${W}/app/.env"
  sleep 2
  writer_running
}

@test "Supabase identity: freeze refuses while the app still rewrites its state file" {
  supabase
  start_soc
  # A stop command that stops nothing: the state file keeps changing.
  sed -i "s|^PGFERRY_WRITERS_STOP=.*|PGFERRY_WRITERS_STOP=true|; /^PGFERRY_WRITERS_CHECK=/d" "${PGFERRY_CONFIG}"
  run -1 "${SCRIPTS}/freeze" --execute
  [[ "${output}" == *"NOT frozen: data changed during 2s: ${STATE} (size or mtime changed)"* ]]
  run -1 "${SCRIPTS}/cutover" --execute
}

@test "Supabase identity: preflight converts the first rows: a plan without --rename is a NO-GO naming the key" {
  supabase
  sed -i 's/, "--rename", "[^"]*"//' "${W}/plan.ndjson"
  run -1 "${SCRIPTS}/preflight"
  [[ "${output}" == *"MISSING  step 1.1: row 1 of its jq program: keys that match no column of identity.users: createdAt, displayName, emailKey, emailVerifiedAt, oauthProvider, oauthSubject, passwordHash, updatedAt (pass --rename createdAt=created_at,displayName=display_name,emailKey=email_key,"* ]]
  [[ "${output}" == *"MISSING  step 1.2: row 1 of its jq program: keys that match no column of identity.sessions: createdAt, expiresAt, userAgent, userId"* ]]
}

@test "Supabase identity: without --rename, pg-load names the columns the camelCase keys meant" {
  supabase
  run -65 --separate-stderr bash -c "jq -c '.users[]' '${STATE}' | pg-load --no-end-record --epoch-unit ms identity.users"
  # shellcheck disable=SC2154 # run --separate-stderr sets it
  [[ "${stderr}" == *"passwordHash"*"--rename "*"passwordHash=password_hash"* ]]
  [[ "${stderr}" == *"--ignore-unknown would drop their values"* ]]
  [[ "$(pg -c 'SELECT count(*) FROM identity.users')" == 0 ]]
}
