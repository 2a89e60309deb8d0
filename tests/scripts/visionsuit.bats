#!/usr/bin/env bats
# The VisionSuit seed (004) end to end: Prisma's SQLite file (fixtures/visionsuit: quoted
# PascalCase tables, cuid ids, epoch-millisecond DateTime, 0/1 Booleans, the implicit
# many-to-many table) with runbook/plans/visionsuit.ndjson as written, two systemd-style units
# with their own env files; then the rollback the seed's story broke: --truncate-targets with
# a table outside the plan that references the plan's tables.

load helpers

FIXTURE="${BATS_TEST_DIRNAME}/../../fixtures/visionsuit"
PLAN="${BATS_TEST_DIRNAME}/../../runbook/plans/visionsuit.ndjson"

visionsuit() {
  APPDB="${W}/srv/visionsuit/backend/prisma/dev.db"
  mkdir -p "$(dirname "${APPDB}")"
  sqlite3 "${APPDB}" <"${FIXTURE}/sqlite.sql" >/dev/null
  app_target "${FIXTURE}/postgres.sql"
  sed "s|/srv/visionsuit/|${W}/srv/visionsuit/|g" "${PLAN}" >"${W}/plan.ndjson"
  WRITER_SQL="INSERT INTO \"Tag\" (id, label, createdAt) VALUES ('w' || hex(randomblob(12)), hex(randomblob(8)), 1720000000000)"
  config "PGFERRY_APP_ENV='${W}/app/.env ${W}/app/frontend.env'" \
    "$(writers_start 2 "${WRITER_SQL}")"
  printf 'NEXT_PUBLIC_API=/api\nDATABASE_URL=file:./dev.db\n' >"${W}/app/frontend.env"
}

# same SQLITE_SQL PG_SQL: both sides list the same lines.
same() {
  diff <(sqlite3 -batch "${APPDB}" "$1") <(pg -c "$2")
}

@test "VisionSuit: the plan as written loads every Prisma table; values match the SQLite file; cutover sets both env files" {
  visionsuit
  run -0 "${SCRIPTS}/preflight"
  [[ "${output}" == *"note     table _prisma_migrations in ${APPDB}: no step of the plan copies it"* ]]
  [[ "${output}" == *"ok       the app's env file PGFERRY_APP_ENV '${W}/app/frontend.env'"* ]]
  freeze_app
  run -0 "${SCRIPTS}/backup"
  run -0 "${SCRIPTS}/migrate" --execute
  [[ "${output}" == *'"_ImageAssetToTag": Source: 150 rows → Postgres: 150 rows ✓'* || "${output}" == *'_ImageAssetToTag'*'150 rows ✓'* ]]
  run -0 --separate-stderr "${SCRIPTS}/verify" --full
  [[ "${lines[-1]}" == "GO: every step ran, 7 step(s) match their sources (--full), lint clean; next: scripts/cutover" ]]

  # Independently of count-check: epoch milliseconds as instants, 0/1 as booleans, JSON, m-n.
  same 'SELECT id, email, isActive, createdAt, updatedAt FROM "User" ORDER BY id' \
    "SELECT id || '|' || email || '|' || \"isActive\"::int || '|' || (extract(epoch FROM \"createdAt\") * 1000)::bigint
       || '|' || (extract(epoch FROM \"updatedAt\") * 1000)::bigint FROM \"User\" ORDER BY id"
  same "SELECT id, CASE typeof(createdAt) WHEN 'integer' THEN strftime('%Y-%m-%d %H:%M:%f', createdAt / 1000.0, 'unixepoch')
          ELSE createdAt || '.000' END FROM \"Tag\" ORDER BY id" \
    "SELECT id || '|' || to_char(\"createdAt\", 'YYYY-MM-DD HH24:MI:SS.MS') FROM \"Tag\" ORDER BY id"
  same "SELECT id, json_extract(metadata, '$.baseModel'), json_extract(metadata, '$.epochs') FROM \"ModelAsset\" ORDER BY id" \
    "SELECT id || '|' || coalesce(metadata->>'baseModel', '') || '|' || coalesce(metadata->>'epochs', '') FROM \"ModelAsset\" ORDER BY id"
  same 'SELECT A, B FROM "_ImageAssetToTag" ORDER BY A, B' \
    "SELECT \"A\" || '|' || \"B\" FROM \"_ImageAssetToTag\" ORDER BY \"A\" COLLATE \"C\", \"B\" COLLATE \"C\""
  same 'SELECT count(*), sum(cfgScale IS NULL), sum(isPublic) FROM "ImageAsset"' \
    "SELECT count(*) || '|' || count(*) FILTER (WHERE \"cfgScale\" IS NULL) || '|' || count(*) FILTER (WHERE \"isPublic\") FROM \"ImageAsset\""
  [[ "$(pg -c 'SELECT count(*) FROM _prisma_migrations')" == 0 ]]
  # The plan's --vacuum: every loaded table was vacuumed and analyzed after its commit.
  [[ "$(pg -c "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('User', 'Gallery', 'ModelAsset', 'ImageAsset',
    'Tag', 'GalleryEntry', '_ImageAssetToTag') AND last_vacuum IS NOT NULL AND last_analyze IS NOT NULL")" == 7 ]]

  run -0 "${SCRIPTS}/cutover" --execute
  grep -qx "APP_STORE=postgres" "${W}/app/.env"
  grep -qx "DATABASE_URL=${DATABASE_URL}" "${W}/app/frontend.env"
  grep -qx "NEXT_PUBLIC_API=/api" "${W}/app/frontend.env"
  sleep 4
  (($(pg -c 'SELECT count(*) FROM app_writes') > 0))
  [[ "$(content "${APPDB}")" == "${FROZEN}" ]]
}

@test "VisionSuit: rollback --truncate-targets empties the plan's tables although a table outside the plan references them" {
  visionsuit
  start_writer
  run -0 "${SCRIPTS}/freeze" --execute
  to_cutover
  # A later Prisma migration added a table the plan does not know, referencing "User".
  pg -c 'CREATE TABLE "Session" (id text PRIMARY KEY, "userId" text NOT NULL REFERENCES "User"(id))'
  run -0 "${SCRIPTS}/rollback" --execute --truncate-targets "${W}/plan.ndjson"
  [[ "${output}" == *"rolled back: the application runs on SQLite (${APPDB}), its env files as before cutover again; the targets in PostgreSQL are empty"* ]]
  [[ "$(pg -c 'SELECT count(*) FROM "User"') $(pg -c 'SELECT count(*) FROM "_ImageAssetToTag"')" == "0 0" ]]
  grep -qx "DATABASE_URL=file:./dev.db" "${W}/app/frontend.env"
  sleep 3
  writer_running

  # Again, with a row outside the plan pointing at a user: the app comes back all the same,
  # and the rollback says the targets were not emptied.
  run -0 "${SCRIPTS}/freeze" --execute
  run -0 "${SCRIPTS}/migrate" --execute
  pg -c "INSERT INTO \"Session\" VALUES ('s1', (SELECT min(id) FROM \"User\"))"
  run -1 "${SCRIPTS}/rollback" --execute --truncate-targets "${W}/plan.ndjson"
  [[ "${output}" == *'"Session"'* ]]
  [[ "${output}" == *"rolled back: the application runs on"*"but PostgreSQL's targets were NOT emptied"* ]]
  [[ "$(pg -c 'SELECT count(*) FROM "User"')" == 12 ]]
  sleep 3
  writer_running
}

# sshd_start: an sshd on loopback, on a free port, that lets this user in with a fresh key
# (Debian's openssh-server; tests/run installs it). Sets SSHD_PORT.
sshd_start() {
  [[ -x /usr/sbin/sshd ]] || {
    echo "/usr/sbin/sshd is missing: apt-get install openssh-server (tests/run does)" >&2
    return 1
  }
  mkdir -m 700 "${W}/ssh"
  ssh-keygen -q -t ed25519 -N '' -f "${W}/ssh/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "${W}/ssh/id"
  cp "${W}/ssh/id.pub" "${W}/ssh/authorized_keys"
  SSHD_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  cat >"${W}/ssh/sshd_config" <<CONF
Port ${SSHD_PORT}
ListenAddress 127.0.0.1
HostKey ${W}/ssh/host_key
AuthorizedKeysFile ${W}/ssh/authorized_keys
PidFile ${W}/ssh/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding local
CONF
  if ((EUID == 0)); then mkdir -p /run/sshd; fi
  /usr/sbin/sshd -f "${W}/ssh/sshd_config" -E "${W}/ssh/sshd.log"
  for _ in $(seq 50); do
    [[ -s "${W}/ssh/sshd.pid" ]] && (exec 3<>"/dev/tcp/127.0.0.1/${SSHD_PORT}") 2>/dev/null && return 0
    sleep 0.1
  done
  cat "${W}/ssh/sshd.log" >&2
  return 1
}

sshd_stop() {
  if [[ -s "${W}/ssh/sshd.pid" ]]; then
    kill "$(<"${W}/ssh/sshd.pid")" 2>/dev/null || true
    rm -f "${W}/ssh/sshd.pid"
  fi
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

@test "VisionSuit: preflight, migrate and verify reach PostgreSQL only through the SSH tunnel the configuration describes, closed on exit" {
  visionsuit
  sshd_start
  local lp pgport
  lp="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  pgport="$(sed -E 's|.*@[^:/]+:([0-9]+)/.*|\1|' <<<"${DATABASE_URL}")"
  {
    echo "DATABASE_URL='${DATABASE_URL/:${pgport}\//:${lp}/}'"
    echo "PGFERRY_SSH_TUNNEL='-p ${SSHD_PORT} -i ${W}/ssh/id -o StrictHostKeyChecking=no -o UserKnownHostsFile=${W}/ssh/known_hosts $(id -un)@127.0.0.1'"
    echo "PGFERRY_SSH_FORWARD=${lp}:127.0.0.1:${pgport}"
  } >>"${PGFERRY_CONFIG}"
  run ! listening "${lp}"
  run -0 "${SCRIPTS}/preflight"
  [[ "${output}" == *"SSH tunnel open: 127.0.0.1:${lp} to 127.0.0.1:${pgport} through $(id -un)@127.0.0.1"* ]]
  [[ "${output}" == *"preflight: every check held"* ]]
  # Closed on exit: nothing listens on the tunnel's port, no ssh process is left.
  run ! listening "${lp}"
  run ! pgrep -f -- "-L ${lp}:127.0.0.1"
  run -0 "${SCRIPTS}/freeze" --execute
  run -0 "${SCRIPTS}/backup"
  run -0 "${SCRIPTS}/migrate" --execute
  [[ "${output}" == *"SSH tunnel open: 127.0.0.1:${lp}"*"migrated: every step loaded"* ]]
  run -0 --separate-stderr "${SCRIPTS}/verify" --full
  [[ "${lines[-1]}" == "GO: "* ]]
  run ! pgrep -f -- "-L ${lp}:127.0.0.1"
  [[ "$(pg -c 'SELECT count(*) FROM "_ImageAssetToTag"')" == 150 ]]
  # The host is down: no tunnel, so preflight cannot reach PostgreSQL (69), and says why.
  sshd_stop
  run -69 "${SCRIPTS}/preflight"
  [[ "${output}" == *"the SSH tunnel did not open: ssh -L ${lp}:127.0.0.1:${pgport}"* ]]
}

teardown() {
  sshd_stop
  stop_writer
  psql -X -q --no-password "${PGFERRY_TEST_PG_URL}" -c "DROP DATABASE IF EXISTS ${DBNAME} WITH (FORCE)" || true
}
