# shellcheck shell=bash
# Google's Cloud Firestore emulator on loopback, started directly with java (the shipped
# wrapper does not exec, so killing it would orphan java). Sourced after common.sh.

FIRESTORE_EMULATOR_JAR="${FIRESTORE_EMULATOR_JAR:-/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar}"

# firestore_emulator_start: sets and exports FIRESTORE_EMULATOR_HOST; stops it at exit.
firestore_emulator_start() {
  local port log i
  need_cmd java curl
  [[ -f "${FIRESTORE_EMULATOR_JAR}" ]] ||
    die 69 "Firestore emulator not found at ${FIRESTORE_EMULATOR_JAR} (apt-get install -y google-cloud-cli-firestore-emulator)"
  port="$(free_port)"
  log="$(mktemp /tmp/pgferry-firestore.XXXXXX.log)"
  java -cp "${FIRESTORE_EMULATOR_JAR}" com.google.cloud.datastore.emulator.firestore.CloudFirestore \
    start --host=127.0.0.1 --port="${port}" >"${log}" 2>&1 &
  FIRESTORE_EMULATOR_PID=$!
  trap_add "kill ${FIRESTORE_EMULATOR_PID} 2>/dev/null || true; rm -f '${log}'"
  for i in $(seq 1 120); do
    if [[ "$(curl -s "http://127.0.0.1:${port}/" 2>/dev/null || true)" == Ok* ]]; then
      export FIRESTORE_EMULATOR_HOST="127.0.0.1:${port}"
      log "Firestore emulator on ${FIRESTORE_EMULATOR_HOST}"
      return 0
    fi
    kill -0 "${FIRESTORE_EMULATOR_PID}" 2>/dev/null || break
    sleep 0.5
  done
  cat "${log}" >&2
  die 69 "the Firestore emulator did not become ready (after ${i} tries)"
}
