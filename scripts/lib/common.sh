# shellcheck shell=bash
# Shared by every pgferry script: logging, the ERR trap, EXIT-trap composition, tool checks.
# Sourced, never executed.

PGFERRY_SCRIPT="${PGFERRY_SCRIPT:-$(basename "${0}")}"

# log MESSAGE...: a timestamped line on stderr.
log() {
  printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${PGFERRY_SCRIPT}" "$*" >&2
}

warn() {
  log "warning: $*"
}

# die [CODE] MESSAGE...: log and exit (default code 1).
die() {
  local code=1
  if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    code="$1"
    shift
  fi
  log "error: $*"
  exit "${code}"
}

# On an unexpected failure: where it happened, what ran, and its status.
pgferry::errexit() {
  local status=$?
  log "failed: ${BASH_SOURCE[1]:-?}:${BASH_LINENO[0]:-?}: '${BASH_COMMAND}' exited with status ${status}"
  exit "${status}"
}
trap pgferry::errexit ERR
set -o errtrace

# trap_add COMMAND: run COMMAND at exit, after (LIFO) whatever was registered later.
PGFERRY_EXIT_HOOKS=()
pgferry::on_exit() {
  local i
  for ((i = ${#PGFERRY_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
    eval "${PGFERRY_EXIT_HOOKS[i]}" || true
  done
}
trap_add() {
  PGFERRY_EXIT_HOOKS+=("$1")
  trap pgferry::on_exit EXIT
}

# Scripts run from a checkout find its release build without it on PATH (cron's PATH is
# /usr/bin:/bin: RUNBOOK section 8's crontab line), after whatever PATH already has.
pgferry::checkout_tools() {
  local bin
  bin="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." 2>/dev/null && pwd)/target/release" || return 0
  if [[ -x "${bin}/pg-load" && ":${PATH}:" != *":${bin}:"* ]]; then PATH="${PATH}:${bin}"; fi
}
pgferry::checkout_tools

# need_cmd NAME...: die with 69 if a tool is missing.
need_cmd() {
  local c
  for c in "$@"; do
    command -v "${c}" >/dev/null 2>&1 || die 69 "needs '${c}', which is not installed"
  done
}

# pg_psql ARGS...: the one way scripts call psql, on DATABASE_URL if set, else on the PG*
# variables (psql's libpq then reads ~/.pgpass, service files and client certificates as
# every pgferry tool does, docs/connections.md). A password in DATABASE_URL is taken out of
# the connection string and handed to psql as PGPASSWORD in its environment, which only its
# owner can read, never on its command line, which `ps` shows every user of the machine.
pg_psql() {
  local conn="${DATABASE_URL:-}" pw="${PGPASSWORD:-}"
  if [[ -z "${conn}" ]]; then
    psql -X -v ON_ERROR_STOP=1 --no-password "$@"
    return
  fi
  pgferry::split_password
  PGPASSWORD="${pw}" psql -X -v ON_ERROR_STOP=1 --no-password -d "${conn}" "$@"
}

# pgferry::split_password: moves the password out of the caller's ${conn} (a URL, or a
# key=value string) into its ${pw}, decoded, as libpq would read it.
pgferry::split_password() {
  local user_re='^(postgres(ql)?://)([^@/]*)@(.*)$'
  local kv_re="(^|[[:space:]])password[[:space:]]*=[[:space:]]*('([^'\\\\]|\\\\.)*'|([^[:space:]'\\\\]|\\\\.)+)"
  local info raw out c i
  if [[ "${conn}" =~ ${user_re} ]]; then
    info="${BASH_REMATCH[3]}"
    [[ "${info}" == *:* ]] || return 0
    raw="${info#*:}"
    conn="${BASH_REMATCH[1]}${info%%:*}@${BASH_REMATCH[4]}"
    raw="${raw//\\/\\\\}"
    printf -v pw '%b' "${raw//%/\\x}"
  elif [[ "${conn}" =~ ${kv_re} ]]; then
    raw="${BASH_REMATCH[2]}"
    conn="${conn/"${BASH_REMATCH[0]}"/${BASH_REMATCH[1]}}"
    [[ "${raw}" == \'*\' ]] && raw="${raw:1:${#raw}-2}"
    out=""
    for ((i = 0; i < ${#raw}; i++)); do
      c="${raw:i:1}"
      [[ "${c}" == \\ ]] && ((i += 1)) && c="${raw:i:1}"
      out+="${c}"
    done
    pw="${out}"
  fi
}

# repo_root: the checkout this script belongs to.
repo_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd
}

# apt_install PKG...: install the Debian packages that are missing (root or sudo).
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q 'install ok installed' || missing+=("${p}")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]}"
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y "${missing[@]}" >/dev/null ||
    { DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update >/dev/null &&
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y "${missing[@]}" >/dev/null; }
}

# free_port: a TCP port nobody listens on right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
