#!/usr/bin/env bash
# Benchmarks fs-export against its anchor: the raw runQuery paging rate of the same calls
# (same page size, same read time, cursors on __name__) made with curl in a loop.
#
# Usage: bench/fs-export.sh [DOCS]          (default: 20000 documents of ~1.5 KB)
# Uses the emulator at FIRESTORE_EMULATOR_HOST, or starts one. Builds fs-export --release.
# After one warm-up pass (the emulator's JIT), runs 5 pairs (curl paging, fs-export; the
# order alternates) and prints both rates (best of 5), the median of the pairs' ratios, and
# fs-export's peak resident memory and CPU time.
#
# Exit status: 0 when fs-export reaches 90% of the raw rate and stays under 64 MB;
# 1 when it does not; other codes when the benchmark could not run.
set -Eeuo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/../scripts/lib/common.sh"
# shellcheck source=scripts/lib/firestore-emulator.sh
source "$(dirname "$0")/../scripts/lib/firestore-emulator.sh"

PAGE_SIZE=1000
COLLECTION=bench_customers

# seed PROJECT DOCS: customers shaped like the BellSystems plan's, 500 per commit.
seed() {
  local project="$1" docs="$2" base
  base="http://${FIRESTORE_EMULATOR_HOST}/v1/projects/${project}/databases/(default)/documents"
  for ((start = 0; start < docs; start += 500)); do
    jq -cn --arg root "projects/${project}/databases/(default)/documents/${COLLECTION}" \
      --argjson start "${start}" --argjson n "$((docs - start < 500 ? docs - start : 500))" '
      def s: {stringValue: .};
      def ts($i): {timestampValue: ("2024-0\(1 + $i % 9)-1\($i % 10)T0\($i % 10):1\($i % 6):2\($i % 10).\(100000 + $i)Z")};
      {writes: [range($start; $start + $n) as $i | {update: {
        name: ("\($root)/cust-\($i | tostring | ("000000" + .)[-6:])"),
        fields: {
          name: ("Name \($i)" | s), surname: ("Surname-\($i * 7919 % 100000)" | s),
          organization: ("Church of St. \($i % 97) and Holy Bells Parish" | s),
          language: ("el" | s), folder_id: ("folder-\($i)" | s), relationship_status: ("lead" | s),
          contacts: {arrayValue: {values: [range(3) as $c | {mapValue: {fields: {
            type: (["email", "phone", "whatsapp"][$c] | s), value: ("contact\($c)-\($i)@example.org" | s),
            primary: {booleanValue: ($c == 0)}}}}]}},
          notes: {arrayValue: {values: [range(2) as $k | {mapValue: {fields: {
            text: ("Called about the bell tower controller; firmware \($k).\($i % 13) installed, follow up next month. " * 2 | s),
            by: ("staff-\($k)" | s), at: ts($i + $k)}}}]}},
          location: {mapValue: {fields: {city: ("Athens" | s), country: ("GR" | s),
            geo: {geoPointValue: {latitude: (37.98 + ($i % 100) / 1000), longitude: (23.72 - ($i % 50) / 1000)}}}}},
          tags: {arrayValue: {values: (["church", "bells", "vip", "north"][0:($i % 4 + 1)] | map(s))}},
          n_orders: {integerValue: ($i * 31 % 1000 | tostring)}, balance: {doubleValue: ($i * 1.25)},
          avatar: {bytesValue: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="},
          created_at: ts($i), updated_at: ts($i + 1)}}}]}' |
      curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -H 'Authorization: Bearer owner' \
        --data-binary @- "${base}:commit"
  done
}

# now_s: seconds since the epoch, with nanoseconds.
now_s() {
  date +%s.%N
}

# raw_paging PROJECT READ_TIME OUT_DIR: pages through the collection with curl; prints docs/s.
raw_paging() {
  local project="$1" read_time="$2" dir="$3" base last="" got total=0 start end body cursor
  base="http://${FIRESTORE_EMULATOR_HOST}/v1/projects/${project}/databases/(default)/documents"
  start="$(now_s)"
  while :; do
    cursor=""
    [[ -n "${last}" ]] && cursor=",\"startAt\":{\"values\":[{\"referenceValue\":\"${last}\"}],\"before\":false}"
    body="{\"structuredQuery\":{\"from\":[{\"collectionId\":\"${COLLECTION}\"}],\"orderBy\":[{\"field\":{\"fieldPath\":\"__name__\"},\"direction\":\"ASCENDING\"}],\"limit\":${PAGE_SIZE}${cursor}},\"readTime\":\"${read_time}\"}"
    curl -fsS -o "${dir}/page.json" -X POST -H 'Content-Type: application/json' \
      -H 'Authorization: Bearer owner' -d "${body}" "${base}:runQuery"
    got="$(grep -c '"document": {' "${dir}/page.json" || true)"
    total=$((total + got))
    ((got < PAGE_SIZE)) && break
    last="$(grep -o '"name": "projects/[^"]*"' "${dir}/page.json" | tail -n 1 | cut -d '"' -f 4)"
  done
  end="$(now_s)"
  echo "${total} $(echo "${total} / (${end} - ${start})" | bc -l)"
}

# fs_export_run PROJECT READ_TIME OUT_DIR: prints "docs docs/s peak_kb cpu_seconds".
fs_export_run() {
  local project="$1" read_time="$2" dir="$3" start end docs peak cpu
  start="$(now_s)"
  /usr/bin/time -v -o "${dir}/time.txt" "${FS_EXPORT}" --project "${project}" "${COLLECTION}" \
    --page-size "${PAGE_SIZE}" --read-time "${read_time}" >"${dir}/out.ndjson" 2>"${dir}/err.txt"
  end="$(now_s)"
  docs="$(tail -n 1 "${dir}/out.ndjson" | jq '."$end".rows')"
  peak="$(awk -F': ' '/Maximum resident set size/ {print $2}' "${dir}/time.txt")"
  cpu="$(awk -F': ' '/(User|System) time \(seconds\)/ {s += $2} END {print s}' "${dir}/time.txt")"
  echo "${docs} $(echo "${docs} / (${end} - ${start})" | bc -l) ${peak} ${cpu}"
}

main() {
  local docs="${1:-20000}" project dir read_time i raw fse kb cpu raw_best=0 fse_best=0 peak=0 n m ratio ratios=()
  need_cmd cargo curl jq bc awk /usr/bin/time
  cd "$(repo_root)"
  [[ -n "${FIRESTORE_EMULATOR_HOST:-}" ]] || firestore_emulator_start
  log "building fs-export (release)"
  cargo build --release --quiet --bin fs-export
  FS_EXPORT="$(pwd)/target/release/fs-export"
  dir="$(mktemp -d /tmp/pgferry-bench.XXXXXX)"
  trap_add "rm -rf '${dir}'"
  project="bench-$$-$(date +%s)"
  log "seeding ${docs} documents into ${COLLECTION} (project ${project})"
  seed "${project}" "${docs}"
  read_time="$(curl -fsS -X POST -H 'Content-Type: application/json' -H 'Authorization: Bearer owner' \
    -d "{\"structuredQuery\":{\"from\":[{\"collectionId\":\"${COLLECTION}\"}],\"limit\":1}}" \
    "http://${FIRESTORE_EMULATOR_HOST}/v1/projects/${project}/databases/(default)/documents:runQuery" |
    jq -r '.[0].readTime')"
  log "size of one document as fs-export writes it: $("${FS_EXPORT}" --project "${project}" \
    "${COLLECTION}/cust-000001" 2>/dev/null | head -n 1 | wc -c) bytes"
  raw_paging "${project}" "${read_time}" "${dir}" >/dev/null
  for i in 1 2 3 4 5; do
    if ((i % 2)); then
      read -r n raw <<<"$(raw_paging "${project}" "${read_time}" "${dir}")"
      read -r m fse kb cpu <<<"$(fs_export_run "${project}" "${read_time}" "${dir}")"
    else
      read -r m fse kb cpu <<<"$(fs_export_run "${project}" "${read_time}" "${dir}")"
      read -r n raw <<<"$(raw_paging "${project}" "${read_time}" "${dir}")"
    fi
    ((n == docs)) || die 1 "raw paging saw ${n} documents, expected ${docs}"
    ((m == docs)) || die 1 "fs-export wrote ${m} documents, expected ${docs}"
    log "pair ${i}: raw curl paging $(printf '%.0f' "${raw}") docs/s, fs-export $(printf '%.0f' "${fse}") docs/s" \
      "(ratio $(printf '%.3f' "$(echo "${fse} / ${raw}" | bc -l)")), peak ${kb} KB, fs-export CPU ${cpu} s"
    ratios+=("$(echo "${fse} / ${raw}" | bc -l)")
    (($(echo "${raw} > ${raw_best}" | bc -l))) && raw_best="${raw}"
    (($(echo "${fse} > ${fse_best}" | bc -l))) && fse_best="${fse}"
    ((kb > peak)) && peak="${kb}"
  done
  ratio="$(printf '%s\n' "${ratios[@]}" | sort -g | sed -n 3p)"
  printf 'documents:            %d\n' "${docs}"
  printf 'raw runQuery paging:  %.0f docs/s (curl, page size %d)\n' "${raw_best}" "${PAGE_SIZE}"
  printf 'fs-export:            %.0f docs/s\n' "${fse_best}"
  printf 'ratio:                %.3f (median of the pairs; target >= 0.90)\n' "${ratio}"
  printf 'fs-export peak RSS:   %.1f MB (target < 64)\n' "$(echo "${peak} / 1024" | bc -l)"
  if (($(echo "${ratio} >= 0.90" | bc -l))) && ((peak < 65536)); then
    log "targets met"
  else
    die 1 "targets NOT met"
  fi
}

main "$@"
