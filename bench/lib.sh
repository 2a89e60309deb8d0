# shellcheck shell=bash
# shellcheck disable=SC2034 # BENCH_* are read by the scripts that source this file
# Shared by bench/load.sh and bench/whole-db.sh: installing the peers, a throwaway
# PostgreSQL reached through the environment (no password on any command line), timing
# with peak RSS, and the report. Sourced after scripts/lib/common.sh, never executed.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DUCKDB_VERSION=1.5.5
BENCH_WORK=""
BENCH_BIN=""
BENCH_PY=""

# bench_setup WORK: installs what the benchmark needs on a fresh Debian machine, builds the
# release binaries, and makes a DuckDB venv under WORK (kept between runs).
bench_setup() {
  BENCH_WORK="$1"
  mkdir -p "${BENCH_WORK}"
  chmod 755 "${BENCH_WORK}"
  apt_install sqlite3 postgresql postgresql-client pgloader python3 python3-venv time openssl
  need_cmd sqlite3 psql pgloader python3 /usr/bin/time cargo
  log "building release binaries"
  (cd "$(repo_root)" && cargo build --release --quiet --bin sqlite-dump --bin pg-load --bin pg-partition)
  BENCH_BIN="$(repo_root)/target/release"
  local venv="${BENCH_WORK}/duckdb-${DUCKDB_VERSION}"
  if [[ ! -x "${venv}/bin/python" ]] || ! "${venv}/bin/python" -c 'import duckdb' 2>/dev/null; then
    log "installing DuckDB ${DUCKDB_VERSION} into ${venv}"
    rm -rf "${venv}"
    python3 -m venv "${venv}"
    "${venv}/bin/pip" install --quiet "duckdb==${DUCKDB_VERSION}" \
      "duckdb-extension-sqlite-scanner==${DUCKDB_VERSION}" "duckdb-extension-postgres-scanner==${DUCKDB_VERSION}"
  fi
  BENCH_PY="${venv}/bin/python"
}

# bench_pg_start: a throwaway cluster tuned like a bulk-load server, its database 'bench',
# and the libpq variables every side connects with (see bench_pg_env).
bench_pg_start() {
  throwaway_pg_start "-c shared_buffers=256MB -c max_wal_size=4GB -c checkpoint_timeout=30min"
  bench_pg_env
  pg_psql -q -d postgres -c 'CREATE DATABASE bench'
  export PGDATABASE=bench
}

# bench_pg_env: the throwaway cluster as libpq variables (psql, pg-load, pgloader and DuckDB
# read them), the password in PGPASSWORD and never on a command line; THROWAWAY_PG_URL, which
# holds it, is unset. TLS is off for all sides alike: the benchmarks measure loaders, not ciphers.
bench_pg_env() {
  local rest="${THROWAWAY_PG_URL#postgres://}"
  export PGUSER="${rest%%:*}"
  rest="${rest#*:}"
  export PGPASSWORD="${rest%%@*}"
  export PGHOST=127.0.0.1 PGPORT="${THROWAWAY_PG_PORT}" PGDATABASE=postgres PGSSLMODE=disable
  unset DATABASE_URL THROWAWAY_PG_URL
}

# timed NAME CMD: runs the shell text CMD with pipefail and appends its wall seconds to
# WORK/run/NAME.ms (its stderr into NAME.err). In CMD, "$(rss NAME)" before a program records its peak RSS and CPU.
timed() {
  local name="$1" start end rc=0 err="${BENCH_WORK}/run/$1.err"
  shift
  start="$(date +%s%N)"
  bash -c "set -o pipefail; $*" 2>>"${err}" || rc=$?
  end="$(date +%s%N)"
  if ((rc != 0)); then
    tail -n 20 "${err}" >&2
    die "${rc}" "${name} failed with status ${rc}: $*"
  fi
  echo "$(((end - start) / 1000000))" >>"${BENCH_WORK}/run/${name}.ms"
}

# rss NAME: the /usr/bin/time prefix that writes NAME's peak RSS into WORK/run/NAME.time.
rss() {
  printf "/usr/bin/time -f '%%M %%U %%S' -o '%s/run/%s.time' -a" "${BENCH_WORK}" "$1"
}

# bench_report TITLE ROWS ANCHOR TARGETS...: the table of medians and ratios (bench/report.py).
bench_report() {
  python3 "${BENCH_DIR}/report.py" "${BENCH_WORK}/run" "$@"
}
