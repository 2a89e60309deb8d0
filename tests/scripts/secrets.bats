#!/usr/bin/env bats
# No secret on any command line: every process's /proc/PID/cmdline is watched while
# preflight, migrate and verify run with a password in DATABASE_URL.

load helpers

# watch_start FILE: records every command line holding ${SECRET} into FILE (and the names
# of all the programs it saw into FILE.seen) until watch_stop.
watch_start() {
  WATCH_OUT="$1"
  SECRET="${SECRET}" python3 - "${WATCH_OUT}" 3>&- <<'PY' &
import os, sys, time
secret = os.environ["SECRET"].encode()
out, seen, found = sys.argv[1], set(), set()
stop = out + ".stop"
with open(out, "w") as f:
    while not os.path.exists(stop):
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as c:
                    cmd = c.read()
            except OSError:
                continue
            if cmd:
                seen.add(os.path.basename(cmd.split(b"\0")[0]).decode(errors="replace"))
            if secret in cmd and (pid, cmd) not in found:
                found.add((pid, cmd))
                f.write(cmd.replace(b"\0", b" ").replace(secret, b"<SECRET>").decode(errors="replace") + "\n")
                f.flush()
        if not os.path.exists(out + ".ready"):
            open(out + ".ready", "w").close()
        time.sleep(0.001)
with open(out + ".seen", "w") as s:
    s.write("\n".join(sorted(seen)) + "\n")
PY
  WATCH_PID=$!
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -e "${WATCH_OUT}.ready" ]] && return 0
    sleep 0.1
  done
  false
}

watch_stop() {
  touch "${WATCH_OUT}.stop"
  wait "${WATCH_PID}"
}

@test "the whole runbook puts no password on any command line, in any output, file it writes or the run log" {
  app_db
  # A role of this test's own, with a password no other process knows; URL-encoded '@' and ':'.
  SECRET="s3cr3t-$(openssl rand -hex 8)"
  pg -c "CREATE ROLE ${DBNAME}_w LOGIN SUPERUSER PASSWORD 'p@ss:${SECRET}'"
  export DATABASE_URL="${DATABASE_URL/\/\/*@/\/\/${DBNAME}_w:p%40ss%3A${SECRET}@}"
  config
  watch_start "${W}/leaks"
  # The watcher sees a secret on a command line: the check can fail.
  bash -c 'sleep 0.3; :' "control-${SECRET}"
  run -0 "${SCRIPTS}/preflight"
  [[ "${output}" == *"preflight: every check held"* ]]
  run -0 "${SCRIPTS}/migrate" --execute
  [[ "${output}" == *"Source: 50 rows → Postgres: 50 rows ✓"*"migrated: every step loaded"* ]]
  run -0 "${SCRIPTS}/verify"
  [[ "${output}" != *"${SECRET}"* ]]
  # The rest of the runbook, up to a rollback that empties the targets (psql) and cron's run.
  local all="${W}/all.out"
  # The app itself gets the URL (the test's fake app keeps writing SQLite: its psql is no
  # part of pgferry).
  printf 'DATABASE_URL=%s\n' "${DATABASE_URL}" >"${W}/cutover.env"
  {
    start_writer
    "${SCRIPTS}/freeze" --execute
    "${SCRIPTS}/backup"
    "${SCRIPTS}/migrate" --execute --report "${W}/report.ndjson"
    "${SCRIPTS}/migrate" status
    "${SCRIPTS}/verify" --full
    "${SCRIPTS}/cutover" --execute
    "${SCRIPTS}/partition-cron" --execute
    "${SCRIPTS}/rollback" --execute --truncate-targets "${W}/plan.ndjson"
  } >"${all}" 2>&1
  grep -q "the targets in PostgreSQL are empty" "${all}"
  watch_stop
  run ! grep -F -- "${SECRET}" "${all}"
  # Only the app's own env files hold it (cutover.env, and the app's env as cutover left it,
  # kept by rollback in the state directory, owner-only).
  run grep -rlF --exclude=cutover.env --exclude='*.env.after-cutover' --exclude='leaks*' -- "${SECRET}" "${W}"
  [[ -z "${output}" ]] || { printf 'in a file: %s\n' "${lines[@]}" >&3; false; }
  [[ "$(stat -c %a "${W}/state")" == 700 ]]
  [[ "$(pg -c "SELECT count(*) FROM _migration_runs r WHERE r::text LIKE '%${SECRET}%'")" == 0 ]]
  # The control (bash and its forked child, before exec) and nothing else.
  run grep -c "control-<SECRET>" "${W}/leaks"
  ((output >= 1))
  run grep -v "control-<SECRET>" "${W}/leaks"
  [[ -z "${output}" ]] || { printf 'on a command line: %s\n' "${lines[@]}" >&3; false; }
  # It saw the short-lived programs the scripts ran (psql is no longer among them: preflight,
  # migrate and verify connect through pgferry's own code).
  grep -qx pg-load "${W}/leaks.seen"
  grep -qx count-check "${W}/leaks.seen"
}
