#!/usr/bin/env bash
# Benchmark, the producer alone: sqlite-dump writing device_logs as NDJSON, beside the
# sqlite3 shell writing the same rows as JSON and as CSV, in one run, rounds in turn.
#
# Usage: bench/sqlite-dump.sh [--rows N] [--rounds R] [--work DIR] [--baseline BIN]
#   --rows N        device_logs rows [default: 2000000]
#   --rounds R      rounds [default: 5]
#   --work DIR      where the generated SQLite file is kept [default: /tmp/pgferry-bench]
#   --baseline BIN  also time another sqlite-dump binary (an older build) and check that it
#                   writes the same bytes
# Each side writes into a pipe read by cat (as into pg-load), and /usr/bin/time records its
# CPU seconds; the table gives median wall and CPU seconds and CPU ratios. CPU is what the
# producer takes from pg-load and the server on a two-core machine.
# Exit status: 0 when every run completed (and the baseline wrote the same bytes); 64 usage.
set -Eeuo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/../scripts/lib/common.sh"
# shellcheck source=bench/device-logs.sh
source "$(dirname "$0")/device-logs.sh"
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# side NAME CMD: one timed run of CMD (its stdout into a pipe), CPU into WORK/run/NAME.time.
side() {
  timed "$1" "$(rss "$1") $2 | cat >/dev/null"
}

main() {
  local rows=2000000 rounds=5 work=/tmp/pgferry-bench baseline=""
  bench_options "$0" rows=--rows rounds=--rounds work=--work baseline=--baseline -- "$@"
  [[ "${rows}${rounds}" =~ ^[0-9]+$ ]] || die 64 "--rows and --rounds take numbers"
  apt_install sqlite3 time
  need_cmd sqlite3 /usr/bin/time cargo python3
  BENCH_WORK="${work}"
  mkdir -p "${work}"
  (cd "$(repo_root)" && cargo build --release --quiet --bin sqlite-dump)
  local bin db="${work}/device_logs-${rows}.sqlite" cols="id, device_serial, level, message, device_timestamp, received_at"
  bin="$(repo_root)/target/release/sqlite-dump"
  if [[ ! -s "${db}" ]]; then
    log "generating ${rows} device_logs rows"
    gen_sqlite "${db}.partial" "${rows}" && mv "${db}.partial" "${db}"
  fi
  rm -rf "${work}/run" && mkdir -m 755 "${work}/run"
  if [[ -n "${baseline}" ]]; then
    cmp <("${baseline}" "${db}" device_logs 2>/dev/null) <("${bin}" "${db}" device_logs 2>/dev/null) ||
      die 1 "${baseline} and ${bin} write different streams"
    log "the baseline writes the same bytes"
  fi
  local round
  for round in $(seq 1 "${rounds}"); do
    log "round ${round} of ${rounds}"
    side sqlite-dump "'${bin}' '${db}' device_logs"
    [[ -z "${baseline}" ]] || side baseline "'${baseline}' '${db}' device_logs"
    side json "sqlite3 -json '${db}' 'SELECT ${cols} FROM device_logs ORDER BY id'"
    side csv "sqlite3 -csv '${db}' 'SELECT ${cols} FROM device_logs ORDER BY id'"
  done
  python3 - "${work}/run" "${rows}" <<'PY'
import os, statistics, sys
run, rows = sys.argv[1], int(sys.argv[2])
names = {"sqlite-dump": "sqlite-dump (NDJSON, typed, end record)", "baseline": "baseline sqlite-dump",
         "json": "sqlite3 -json", "csv": "sqlite3 -csv"}
cpu = {}
print(f"\nsqlite-dump alone: {rows} device_logs rows into a pipe (medians)")
print(f"{'side':<40} {'wall s':>7} {'user s':>7} {'sys s':>6} {'CPU s':>6}  CPU vs sqlite-dump")
for n, label in names.items():
    if not os.path.exists(f"{run}/{n}.ms"):
        continue
    wall = statistics.median(int(x) / 1000 for x in open(f"{run}/{n}.ms").read().split())
    lines = [l.split() for l in open(f"{run}/{n}.time") if l.split() and l.split()[0].isdigit()]
    user = statistics.median(float(l[1]) for l in lines)
    sys_ = statistics.median(float(l[2]) for l in lines)
    cpu[n] = statistics.median(float(l[1]) + float(l[2]) for l in lines)
    print(f"{label:<40} {wall:>7.2f} {user:>7.2f} {sys_:>6.2f} {cpu[n]:>6.2f}  {cpu[n] / cpu['sqlite-dump']:.2f}x")
PY
}

main "$@"
