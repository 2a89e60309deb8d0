# shellcheck shell=bash
# shellcheck disable=SC2034 # BENCH_* are read by the scripts that source this file
# Shared by bench/load.sh, bench/whole-db.sh and bench/sqlite-dump.sh: options, installing
# the peers, a throwaway PostgreSQL reached through the environment (no password on any
# command line), the peers' runs, timing with peak RSS, and the report. Sourced after
# scripts/lib/common.sh, never executed.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DUCKDB_VERSION=1.5.5
BENCH_WORK=""
BENCH_BIN=""
BENCH_PY=""
# psql as the timed sides run it (the connection from the libpq variables).
BENCH_PSQL="psql -X -q -v ON_ERROR_STOP=1 --no-password"

# bench_options SCRIPT VAR=--NAME... -- ARGS...: each `--NAME VALUE` of ARGS into the
# caller's variable VAR (which holds its default); -h/--help prints SCRIPT's header comment.
# Anything else is a usage error (64).
bench_options() {
  local _script="$1" _spec=() _s _var
  shift
  while [[ "$1" != -- ]]; do _spec+=("$1") && shift; done
  shift
  while (($#)); do
    if [[ "$1" == -h || "$1" == --help ]]; then
      sed -n '2,/^set /p' "${_script}" | sed '$d; s/^# \{0,1\}//'
      exit 0
    fi
    _var=""
    for _s in "${_spec[@]}"; do [[ "$1" == "${_s#*=}" ]] && _var="${_s%%=*}"; done
    [[ -n "${_var}" ]] || die 64 "unknown argument '$1' (see --help)"
    (($# >= 2)) || die 64 "$1 takes a value (see --help)"
    printf -v "${_var}" '%s' "$2"
    shift 2
  done
}

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

# bench_duckdb DB SQL: one timed DuckDB run of the SQL file's statements from the SQLite file
# DB (bench/duckdb-load.py): duckdb-process is the whole python process; the script itself
# appends its ATTACH-to-COMMIT time to duckdb.ms.
bench_duckdb() {
  timed duckdb-process "$(rss duckdb) '${BENCH_PY}' '${BENCH_DIR}/duckdb-load.py' '$1' '$2' '${BENCH_WORK}/run/duckdb.ms'"
}

# bench_pgloader_file DB CLAUSE...: run/load.pgl, pgloader's command loading the SQLite file
# DB into the bench database (user and host from the libpq variables; it reads PGPASSWORD),
# then the clauses, one a line.
bench_pgloader_file() {
  local db="$1"
  shift
  {
    echo "LOAD DATABASE FROM sqlite://${db} INTO postgresql://${PGUSER}@${PGHOST}:${PGPORT}/${PGDATABASE}?sslmode=disable"
    printf '%s\n' "$@"
  } >"${BENCH_WORK}/run/load.pgl"
}

# bench_pgloader: one timed pgloader run of run/load.pgl (its output into pgloader.log).
bench_pgloader() {
  timed pgloader "$(rss pgloader) pgloader --quiet '${BENCH_WORK}/run/load.pgl' >>'${BENCH_WORK}/run/pgloader.log' 2>&1"
}

# bench_report TITLE ROWS ANCHOR TARGETS...: the table of medians and ratios (bench/report.py).
bench_report() {
  python3 "${BENCH_DIR}/report.py" "${BENCH_WORK}/run" "$@"
}
