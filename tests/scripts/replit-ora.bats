#!/usr/bin/env bats
# The Replit seed (002) end to end: ora.db shaped like the seed's (fixtures/replit-ora: '' in
# INTEGER columns, text timestamps in two spellings, 0/1 flags), five Python workflows that
# must really stop, runbook/plans/replit-ora.ndjson as written; then the seed's failure
# stories: rollback when the workflows are already stopped (pkill finds nothing), from a
# dirty git checkout with commits made after the freeze (--git).

load helpers

FIXTURE="${BATS_TEST_DIRNAME}/../../fixtures/replit-ora"
PLAN="${BATS_TEST_DIRNAME}/../../runbook/plans/replit-ora.ndjson"
WORKFLOWS=(dashboard_server orders_cleanup shipstation_upload unified_shipstation_sync scheduled_xml_import)

# The app: ora.db, five workflows (python3 ORA/NAME.py; two of them write), a git checkout
# holding the code and ora.db (Replit keeps the database in the repl), and the configuration
# lines the plan's header gives, with /home/runner/ora replaced by the test's directory.
ora() {
  ORA="${W}/ora"
  APPDB="${ORA}/ora.db"
  mkdir -p "${ORA}/migration"
  sqlite3 "${APPDB}" <"${FIXTURE}/sqlite.sql" >/dev/null
  app_target "${FIXTURE}/postgres.sql"
  local w
  for w in "${WORKFLOWS[@]}"; do
    cat >"${ORA}/${w}.py" <<PY
import os, sqlite3, subprocess, time
env = dict(l.strip().split('=', 1) for l in open('${ORA}/.env') if '=' in l and not l.startswith('#'))
time.sleep(1)
while True:
    if '${w}' in ('dashboard_server', 'scheduled_xml_import'):
        if env.get('DB_BACKEND') == 'postgres':
            subprocess.run(['psql', '-X', '-q', '--no-password', '-d', os.environ['DATABASE_URL'], '-c',
                            'INSERT INTO app_writes DEFAULT VALUES'], capture_output=True)
        else:
            c = sqlite3.connect('${APPDB}', timeout=2)
            c.execute("UPDATE settings SET value = ?, updated_at = datetime('now') WHERE key = 'last_full_sync'", (str(time.time()),))
            c.commit()
            c.close()
    time.sleep(0.2)
PY
  done
  cat >"${ORA}/start_workflows.sh" <<SH
#!/usr/bin/env bash
for w in ${WORKFLOWS[*]}; do python3 ${ORA}/\${w}.py >/dev/null 2>&1 3>&- & done
SH
  chmod +x "${ORA}/start_workflows.sh"
  printf 'DB_BACKEND=sqlite\nSHIPSTATION_API_KEY=k-123\n' >"${ORA}/.env"
  printf 'DB_BACKEND=postgres\n' >"${W}/cutover.env"
  printf 'migration/\n' >"${ORA}/.gitignore"
  git -C "${ORA}" init -q
  git -C "${ORA}" add -A
  git -C "${ORA}" -c user.email=t@t -c user.name=t commit -qm "ora"
  sed "s|/home/runner/ora/|${ORA}/|g" "${PLAN}" >"${ORA}/migration/plan.ndjson"
  local re="python3? ${ORA}/(dashboard_server|orders_cleanup|shipstation_upload|unified_shipstation_sync|scheduled_xml_import)\\.py"
  {
    echo "PGFERRY_PLAN=${ORA}/migration/plan.ndjson"
    echo "PGFERRY_STATE_DIR=${ORA}/migration/state"
    echo "PGFERRY_BACKUP_DIR=${ORA}/migration/backups"
    echo "PGFERRY_QUIET_SECONDS=2"
    echo "PGFERRY_STOP_TIMEOUT=10"
    echo "PGFERRY_WRITERS_STOP='pkill -TERM -f \"${re}\"'"
    echo "PGFERRY_WRITERS_CHECK='pgrep -f \"${re}\"'"
    echo "PGFERRY_WRITERS_START='cd ${ORA} && ./start_workflows.sh'"
    echo "PGFERRY_APP_ENV=${ORA}/.env"
    echo "PGFERRY_CUTOVER_ENV=${W}/cutover.env"
    echo "PGFERRY_APP_GIT=${ORA}"
    echo "PGFERRY_APP_URL_FILE=env"
    echo "PGFERRY_MIGRATE=atomic"
  } >"${PGFERRY_CONFIG}"
  chmod 600 "${PGFERRY_CONFIG}"
  RE="${re}"
}

workflows() { pgrep -f "${RE}" | wc -l; }

teardown() {
  [[ -z "${RE:-}" ]] || pkill -KILL -f "${RE}" || true
  psql -X -q --no-password "${PGFERRY_TEST_PG_URL}" -c "DROP DATABASE IF EXISTS ${DBNAME} WITH (FORCE)" || true
}

# same SQLITE_SQL PG_SQL: both sides list the same lines.
same() {
  diff <(sqlite3 -batch "${APPDB}" "$1") <(pg -c "$2")
}

@test "Replit ora: the plan as written migrates ora.db ('' as NULL, text timestamps); verify --full GO; values match" {
  ora
  run -0 "${SCRIPTS}/preflight"
  (cd "${ORA}" && ./start_workflows.sh)
  sleep 1.5
  [[ "$(workflows)" == 5 ]]
  run -0 "${SCRIPTS}/freeze" --execute
  [[ "$(workflows)" == 0 ]]
  run -0 "${SCRIPTS}/backup"
  run -0 "${SCRIPTS}/migrate" --execute
  [[ "${output}" == *"step '1' (orders): Source: 240 rows → Postgres: 240 rows ✓"* ]]
  run -0 --separate-stderr "${SCRIPTS}/verify" --full
  [[ "${lines[-1]}" == "GO: every step ran, 6 step(s) match their sources (--full), lint clean; next: scripts/cutover" ]]

  # Independently of count-check: '' and NULL both NULL, integers kept, text timestamps as instants.
  same "SELECT id, CASE WHEN shipstation_order_id = '' THEN '' ELSE shipstation_order_id END FROM orders ORDER BY id" \
    "SELECT id || '|' || coalesce(shipstation_order_id::text, '') FROM orders ORDER BY id"
  same "SELECT id, strftime('%Y-%m-%d %H:%M:%f', created_at), coalesce(strftime('%Y-%m-%d %H:%M:%f', updated_at), '') FROM orders ORDER BY id" \
    "SELECT id || '|' || to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') || '|'
       || coalesce(to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), '') FROM orders ORDER BY id"
  same "SELECT printf('%.2f', sum(total)), count(*) FROM orders" "SELECT sum(total) || '|' || count(*) FROM orders"
  same "SELECT id, coalesce(nullif(status_code, ''), '') FROM shipstation_sync_log ORDER BY id" \
    "SELECT id || '|' || coalesce(status_code::text, '') FROM shipstation_sync_log ORDER BY id"
  same "SELECT key, strftime('%Y-%m-%d %H:%M:%f', updated_at) FROM settings ORDER BY key" \
    "SELECT key || '|' || to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') FROM settings ORDER BY key COLLATE \"C\""
  same "SELECT workflow_name, enabled FROM workflow_controls ORDER BY workflow_name" \
    "SELECT workflow_name || '|' || enabled::int FROM workflow_controls ORDER BY workflow_name COLLATE \"C\""

  run -0 "${SCRIPTS}/cutover" --execute
  grep -qx "DB_BACKEND=postgres" "${ORA}/.env"
  sleep 2.5
  [[ "$(workflows)" == 5 ]]
  sleep 1.5
  (($(pg -c "SELECT count(*) FROM app_writes") > 0))
}

@test "Replit ora: an integer column holding '' is refused without --empty-as-null, naming line, column and value" {
  ora
  run -65 --separate-stderr bash -c "sqlite-dump '${APPDB}' orders | pg-load orders"
  # shellcheck disable=SC2154 # run --separate-stderr sets it
  [[ "${stderr}" == *"line 1, column 'shipstation_order_id'"*'""'* ]]
  [[ "$(pg -c 'SELECT count(*) FROM orders')" == 0 ]]
}

@test "Replit ora: rollback when the workflows are already stopped, from a dirty checkout with a commit since the freeze" {
  ora
  (cd "${ORA}" && ./start_workflows.sh)
  sleep 1.5
  run -0 "${SCRIPTS}/freeze" --execute
  local frozen frozen_head
  frozen="$(content "${APPDB}")"
  frozen_head="$(git -C "${ORA}" rev-parse HEAD)"
  to_cutover
  sleep 2.5
  # After cutover: a hotfix committed, an edit not committed, a new file, a write to ora.db
  # that should not have happened; then someone stops the workflows by hand.
  echo "# hotfix" >>"${ORA}/orders_cleanup.py"
  git -C "${ORA}" -c user.email=t@t -c user.name=t commit -qam "hotfix after cutover"
  echo "# work in progress" >>"${ORA}/dashboard_server.py"
  echo "notes" >"${ORA}/NOTES.md"
  sqlite3 "${APPDB}" "DELETE FROM order_items WHERE id < 10"
  pkill -TERM -f "${RE}"
  sleep 0.5
  [[ "$(workflows)" == 0 ]]

  run -0 "${SCRIPTS}/rollback" --execute --git
  [[ "${output}" == *"the stop command exited 1 (nothing left to stop?); checking that no writer runs"* ]]
  [[ "${output}" == *"returned ${ORA} to ${frozen_head:0:12}; the commits since are on branch pgferry/before-rollback-"* ]]
  [[ "${output}" == *"rolled back: the application runs on SQLite (${APPDB}), its env files as before cutover again"* ]]
  [[ "$(git -C "${ORA}" rev-parse HEAD)" == "${frozen_head}" ]]
  [[ "$(content "${APPDB}")" == "${frozen}" ]]
  grep -qx "DB_BACKEND=sqlite" "${ORA}/.env"
  # Nothing of the work after the freeze is lost: the commit on a branch, the edit and the
  # new file in the stash; the runbook's own files are where they were.
  git -C "${ORA}" log --format=%s "$(git -C "${ORA}" branch --list 'pgferry/before-rollback-*' --format='%(refname)')" | grep -qx "hotfix after cutover"
  git -C "${ORA}" stash list | grep -q "pgferry rollback"
  git -C "${ORA}" show --stat 'stash@{0}' | grep -q dashboard_server.py
  git -C "${ORA}" show --name-only 'stash@{0}^3' | grep -qx NOTES.md
  [[ ! -e "${ORA}/NOTES.md" ]] && ! grep -q "work in progress" "${ORA}/dashboard_server.py"
  compgen -G "${ORA}/migration/state/rolled-back-*/backups.tsv"
  sleep 2.5
  [[ "$(workflows)" == 5 ]]
}
