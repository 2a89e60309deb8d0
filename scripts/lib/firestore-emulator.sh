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

# firestore_seed FILE PROJECT: writes the documents of FILE (NDJSON lines
# {"path": "coll/doc[/sub/doc]", "fields": {plain JSON}}) into the emulator's PROJECT.
# Plain values map to Firestore's: strings like 2025-01-02T03:04:05Z are timestamps,
# whole numbers integers, other numbers doubles, {"$geo": [lat, lng]} a GeoPoint.
firestore_seed() {
  local root="projects/$2/databases/(default)/documents" body
  need_cmd jq curl
  # shellcheck disable=SC2016
  jq -c --arg root "${root}" '
    def fv: if type == "string" then
              (if test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$") then {timestampValue: .} else {stringValue: .} end)
            elif type == "number" then
              (if tostring | test("^-?[0-9]+$") then {integerValue: tostring} else {doubleValue: .} end)
            elif type == "boolean" then {booleanValue: .}
            elif type == "null" then {nullValue: null}
            elif type == "array" then {arrayValue: {values: map(fv)}}
            elif has("$geo") then {geoPointValue: {latitude: .["$geo"][0], longitude: .["$geo"][1]}}
            else {mapValue: {fields: map_values(fv)}} end;
    {update: {name: "\($root)/\(.path)", fields: (.fields | map_values(fv))}}' "$1" |
    jq -sc '_nwise(400) | {writes: .}' |
    while IFS= read -r body; do
      curl -fsS -g -X POST -H 'Content-Type: application/json' -H 'Authorization: Bearer owner' \
        --data-binary @- "http://${FIRESTORE_EMULATOR_HOST}/v1/${root}:commit" <<<"${body}" >/dev/null ||
        die 69 "could not write the documents of '$1' to the Firestore emulator"
    done
}
