# shellcheck shell=bash
# Shared by the runbook script tests: a temp dir, a fresh PostgreSQL database, a SQLite
# application database, a fake application writer, and the runbook configuration.
# Needs the tools on PATH (tests/run puts target/debug there) and PGFERRY_TEST_PG_URL.

bats_require_minimum_version 1.5.0

SCRIPTS="$(cd "${BATS_TEST_DIRNAME}/../../scripts" && pwd)"
export SCRIPTS

setup() {
  [[ -n "${PGFERRY_TEST_PG_URL:-}" ]] || {
    echo "PGFERRY_TEST_PG_URL is not set: source /tmp/devenv.sh or run tests/run" >&2
    return 1
  }
  W="${BATS_TEST_TMPDIR}"
  DBNAME="rb_$(date +%s%N | tail -c 10)_${RANDOM}"
  psql -X -q -v ON_ERROR_STOP=1 --no-password "${PGFERRY_TEST_PG_URL}" -c "CREATE DATABASE ${DBNAME}"
  export DATABASE_URL="${PGFERRY_TEST_PG_URL%/*}/${DBNAME}"
  export PGFERRY_CONFIG="${W}/pgferry.conf"
  mkdir -p "${W}/app"
  APPDB="${W}/app/app.sqlite"
}

teardown() {
  stop_writer
  psql -X -q --no-password "${PGFERRY_TEST_PG_URL}" -c "DROP DATABASE IF EXISTS ${DBNAME} WITH (FORCE)" || true
}

# shellcheck disable=SC2120
pg() { psql -X -q -At -v ON_ERROR_STOP=1 --no-password -d "${DATABASE_URL}" "$@"; }

# app_db: a small WAL-mode application database with two tables, its PostgreSQL schema,
# and a plan for it.
app_db() {
  sqlite3 "${APPDB}" >/dev/null <<'SQL'
PRAGMA journal_mode = WAL;
CREATE TABLE customers (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE notes (id INTEGER PRIMARY KEY, customer_id TEXT NOT NULL, body TEXT, tick INTEGER);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20)
INSERT INTO customers SELECT 'c' || x, 'Customer ' || x, strftime('%Y-%m-%dT%H:%M:%SZ', 1700000000 + x * 86400, 'unixepoch') FROM c;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50)
INSERT INTO notes (id, customer_id, body) SELECT x, 'c' || (1 + x % 20), 'note ' || x FROM c;
SQL
  # shellcheck disable=SC2119
  pg <<'SQL'
CREATE TABLE customers (id text PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE notes (id bigint PRIMARY KEY, customer_id text NOT NULL REFERENCES customers(id), body text, tick bigint);
SQL
  cat >"${W}/plan.ndjson" <<PLAN
# the test application: customers before their notes
{"step": "1", "source": "sqlite:${APPDB}:customers", "target": "customers"}
{"step": "2", "source": "sqlite:${APPDB}:notes", "target": "notes"}
PLAN
}

# content DB: a hash of a SQLite database's content.
content() { sqlite3 "$1" .dump | sha256sum | cut -d' ' -f1; }

# The fake application: reads its env file at start, then writes a row every 0.2 s until
# stopped (TERM ends it after the write in progress, like a service manager), into SQLite, or into PostgreSQL's app_writes when APP_STORE=postgres. With
# WRITER_DELAY it boots that many seconds first. Its PID is in app/writer.pid.
write_writer() {
  cat >"${W}/app/writer.sh" <<WRITER
echo \$\$ >"${W}/app/writer.pid"
trap 'exit 0' TERM
set -a; . "${W}/app/.env"; set +a
sleep "\${WRITER_DELAY:-0}"
while :; do
  if [ "\${APP_STORE:-sqlite}" = postgres ]; then
    psql -X -q --no-password -d "\${DATABASE_URL}" -c "INSERT INTO app_writes DEFAULT VALUES" >/dev/null 2>&1 || true
  else
    sqlite3 "${APPDB}" "PRAGMA busy_timeout = 2000; ${WRITER_SQL:-INSERT INTO notes (customer_id, body) VALUES ('c1', 'live write')}" >/dev/null 2>&1 || true
  fi
  sleep 0.2
done
WRITER
}

start_writer() {
  write_writer
  bash "${W}/app/writer.sh" >/dev/null 2>&1 3>&- &
  sleep 0.5
}

writer_running() { [[ -s "${W}/app/writer.pid" ]] && kill -0 "$(<"${W}/app/writer.pid")" 2>/dev/null; }

stop_writer() {
  if [[ -s "${W}/app/writer.pid" ]]; then
    kill "$(<"${W}/app/writer.pid")" 2>/dev/null || true
    rm -f "${W}/app/writer.pid"
  fi
}

# app_target SCHEMA: the app's PostgreSQL schema (an SQL file), and app_writes, the table the
# fake writer fills once the app runs on PostgreSQL.
app_target() {
  pg -f "$1"
  pg -c 'CREATE TABLE IF NOT EXISTS app_writes (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())'
}

# writers_start DELAY [SQL]: the configuration line that starts the fake writer after DELAY
# seconds (its boot), writing SQL into SQLite (its own insert when none).
writers_start() {
  local sql=""
  [[ -z "${2:-}" ]] || sql=" WRITER_SQL=\"${2//\"/\\\"}\""
  echo "PGFERRY_WRITERS_START='WRITER_DELAY=$1${sql} bash ${W}/app/writer.sh >/dev/null 2>&1 3>&- &'"
}

# freeze_app: the app runs (the fake writer), then the freeze; FROZEN is the hash of the
# frozen database's content.
freeze_app() {
  start_writer
  run -0 "${SCRIPTS}/freeze" --execute
  # shellcheck disable=SC2034 # read by the tests
  FROZEN="$(content "${APPDB}")"
}

# to_cutover: backup, migrate, verify and cutover of a frozen app, each required to succeed.
to_cutover() {
  run -0 "${SCRIPTS}/backup"
  run -0 "${SCRIPTS}/migrate" --execute
  run -0 "${SCRIPTS}/verify"
  run -0 "${SCRIPTS}/cutover" --execute
}

# config [LINE...]: the runbook configuration for this test, plus extra lines.
config() {
  write_writer
  printf 'DATABASE_URL=%s\nAPP_STORE=postgres\n' "${DATABASE_URL}" >"${W}/cutover.env"
  printf '# the app\nAPP_STORE=sqlite\nSECRET_KEY=s3cret\nexport DATABASE_URL=sqlite:///%s\n' "${APPDB}" >"${W}/app/.env"
  {
    echo "PGFERRY_STATE_DIR=${W}/state"
    echo "PGFERRY_PLAN=${W}/plan.ndjson"
    echo "PGFERRY_BACKUP_DIR=${W}/backups"
    echo "PGFERRY_QUIET_SECONDS=2"
    echo "PGFERRY_STOP_TIMEOUT=5"
    echo "PGFERRY_WRITERS_STOP='if [ -s ${W}/app/writer.pid ]; then p=\$(cat ${W}/app/writer.pid); kill \$p;" \
      "while kill -0 \$p 2>/dev/null; do sleep 0.1; done; rm -f ${W}/app/writer.pid; fi'"
    echo "PGFERRY_WRITERS_START='bash ${W}/app/writer.sh >/dev/null 2>&1 3>&- &'"
    echo "PGFERRY_WRITERS_CHECK='test -s ${W}/app/writer.pid && kill -0 \$(cat ${W}/app/writer.pid)'"
    echo "PGFERRY_APP_ENV=${W}/app/.env"
    echo "PGFERRY_CUTOVER_ENV=${W}/cutover.env"
    printf '%s\n' "$@"
  } >"${PGFERRY_CONFIG}"
  chmod 600 "${PGFERRY_CONFIG}"
}

# bellsystems_app: the BellSystems seed's fixture (twelve SQLite tables, device_logs into a
# monthly-partitioned table, six Firestore sources in the emulator under a project of its
# own), its schema in PostgreSQL, runbook/plans/bellsystems.ndjson pointed at it, and the
# configuration. Sets APPDB and WRITER_SQL.
bellsystems_app() {
  [[ -n "${FIRESTORE_EMULATOR_HOST:-}" ]] || {
    echo "FIRESTORE_EMULATOR_HOST is not set: source /tmp/devenv.sh or run tests/run" >&2
    return 1
  }
  local fixture="${BATS_TEST_DIRNAME}/../../fixtures/bellsystems" project
  APPDB="${W}/app/database.db"
  WRITER_SQL="INSERT INTO heartbeats (device_serial, uptime_s, received_at) VALUES ('SN-0001', 1, datetime('now'))"
  sqlite3 "${APPDB}" <"${fixture}/sqlite.sql" >/dev/null
  app_target "${fixture}/postgres.sql"
  project="bs-$(date +%s%N | tail -c 12)-${RANDOM}"
  (
    # shellcheck source=/dev/null
    source "${SCRIPTS}/lib/common.sh"
    # shellcheck source=/dev/null
    source "${SCRIPTS}/lib/firestore-emulator.sh"
    firestore_seed "${fixture}/firestore.ndjson" "${project}"
  )
  sed "s|/srv/bellsystems/data/database.db|${APPDB}|" "${BATS_TEST_DIRNAME}/../../runbook/plans/bellsystems.ndjson" >"${W}/plan.ndjson"
  config "GOOGLE_CLOUD_PROJECT=${project}" "PGFERRY_QUIET_SECONDS=3" "$(writers_start 3 "${WRITER_SQL}")" "$@"
}

# counts TABLE...: "table=rows" for each table, space-separated.
counts() {
  local t out=()
  for t in "$@"; do out+=("${t}=$(pg -c "SELECT count(*) FROM ${t}")"); done
  echo "${out[*]}"
}
