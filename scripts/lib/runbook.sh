# shellcheck shell=bash
# Shared by the runbook scripts: options, the operator's configuration, the plan
# (docs/plan.md), the state directory, the writers and the --execute gate.
# Sourced after common.sh, never executed.

# rb_usage: the script's header comment, which is its --help.
rb_usage() {
  sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p;}}' "$0"
}

rb_usage_error() {
  log "error: $*"
  printf "Try '%s --help'\n" "$(basename "$0")" >&2
  exit 64
}

# rb_parse SPEC -- ARGS...: the options in SPEC ('name' a flag, 'name:' one with a value)
# plus --config FILE and -h/--help. Sets OPT_<name> (dashes as underscores); the
# operands go to the array ARGS.
rb_parse() {
  local spec=" $1 config: " a name
  shift 2
  ARGS=()
  while (($#)); do
    a="$1"
    shift
    case "${a}" in
      -h | --help) rb_usage && exit 0 ;;
      --) ARGS+=("$@") && break ;;
      --*=*)
        name="${a%%=*}" && name="${name#--}"
        [[ "${spec}" == *" ${name}: "* ]] || rb_usage_error "unknown option '${a%%=*}'"
        printf -v "OPT_${name//-/_}" '%s' "${a#*=}"
        ;;
      --*)
        name="${a#--}"
        if [[ "${spec}" == *" ${name}: "* ]]; then
          (($#)) || rb_usage_error "${a} needs a value"
          printf -v "OPT_${name//-/_}" '%s' "$1"
          shift
        elif [[ "${spec}" == *" ${name} "* ]]; then
          printf -v "OPT_${name//-/_}" 1
        else
          rb_usage_error "unknown option '${a}'"
        fi
        ;;
      -?*) rb_usage_error "unknown option '${a}'" ;;
      *) ARGS+=("${a}") ;;
    esac
  done
}

# rb_load_config: sources the operator's configuration (--config, else $PGFERRY_CONFIG,
# else /etc/pgferry/pgferry.conf) with its variables exported, and applies the defaults.
rb_load_config() {
  RB_CONFIG="${OPT_config:-${PGFERRY_CONFIG:-/etc/pgferry/pgferry.conf}}"
  [[ -f "${RB_CONFIG}" ]] ||
    die 66 "no configuration at '${RB_CONFIG}' (copy runbook/pgferry.conf.example; pass --config FILE or set PGFERRY_CONFIG)"
  set -a
  # shellcheck source=/dev/null
  source "${RB_CONFIG}"
  set +a
  [[ -n "${PGFERRY_STATE_DIR:-}" ]] || die 64 "${RB_CONFIG}: PGFERRY_STATE_DIR is not set"
  : "${PGFERRY_QUIET_SECONDS:=30}" "${PGFERRY_STOP_TIMEOUT:=60}"
  : "${PGFERRY_BACKUP_DIR:=${PGFERRY_STATE_DIR}/backups}" "${PGFERRY_RETAIN:=detach}"
  [[ "${PGFERRY_QUIET_SECONDS}" =~ ^[0-9]+$ && "${PGFERRY_STOP_TIMEOUT}" =~ ^[0-9]+$ ]] ||
    die 64 "${RB_CONFIG}: PGFERRY_QUIET_SECONDS and PGFERRY_STOP_TIMEOUT are whole seconds"
}

# rb_tunnel: when PGFERRY_SSH_TUNNEL is set (ssh's options, then the destination, e.g.
# '-i /etc/pgferry/migration-ssh-key visionsuit-migrator@db.internal'), opens
# ssh -N -L PGFERRY_SSH_FORWARD (LOCAL_PORT:HOST:PORT) in the background under a control
# socket, once the forward is up, and closes it when the script exits (however it exits).
# DATABASE_URL then points at 127.0.0.1:LOCAL_PORT.
rb_tunnel() {
  [[ -n "${PGFERRY_SSH_TUNNEL:-}" ]] || return 0
  [[ "${PGFERRY_SSH_FORWARD:-}" =~ ^([0-9]+):[^:]+:[0-9]+$ ]] ||
    die 64 "${RB_CONFIG}: PGFERRY_SSH_TUNNEL needs PGFERRY_SSH_FORWARD=LOCAL_PORT:HOST:PORT"
  need_cmd ssh
  local opts=() dir
  read -r -a opts <<<"${PGFERRY_SSH_TUNNEL}"
  # A script run by another (verify runs migrate status) uses its parent's tunnel.
  if [[ -n "${PGFERRY_TUNNEL_SOCKET:-}" ]] && ssh -S "${PGFERRY_TUNNEL_SOCKET}" -O check "${opts[-1]}" 2>/dev/null; then
    return 0
  fi
  dir="$(mktemp -d /tmp/pgferry-ssh.XXXXXX)"
  RB_TUNNEL_SOCKET="${dir}/control"
  export PGFERRY_TUNNEL_SOCKET="${RB_TUNNEL_SOCKET}"
  # -f returns once the forward listens (ExitOnForwardFailure); BatchMode: never a prompt.
  ssh -f -N -M -S "${RB_TUNNEL_SOCKET}" -o ExitOnForwardFailure=yes -o BatchMode=yes -o ConnectTimeout=15 \
    -o ServerAliveInterval=15 -L "${PGFERRY_SSH_FORWARD}" "${opts[@]}" </dev/null ||
    { rm -rf "${dir}"; die 69 "the SSH tunnel did not open: ssh -L ${PGFERRY_SSH_FORWARD} ${PGFERRY_SSH_TUNNEL}"; }
  trap_add "ssh -S '${RB_TUNNEL_SOCKET}' -O exit '${opts[-1]}' >/dev/null 2>&1; rm -rf '${dir}'"
  log "SSH tunnel open: 127.0.0.1:${PGFERRY_SSH_FORWARD%%:*} to ${PGFERRY_SSH_FORWARD#*:} through ${opts[-1]}"
}

# rb_state_init: creates the state directory (owner-only) if missing.
rb_state_init() {
  [[ -d "${PGFERRY_STATE_DIR}" ]] || mkdir -m 700 "${PGFERRY_STATE_DIR}" ||
    die 74 "cannot create the state directory '${PGFERRY_STATE_DIR}'"
}

# rb_plan_arg: the plan to use: the operand if given, else PGFERRY_PLAN ("" if neither).
rb_plan_arg() {
  ((${#ARGS[@]} <= 1)) || rb_usage_error "one plan at most, got: ${ARGS[*]}"
  printf '%s\n' "${ARGS[0]:-${PGFERRY_PLAN:-}}"
}

# rb_read_plan PLAN [--from STEP | --steps A,B]: puts the plan's (selected) steps, resolved
# by pg-load --plan PLAN --resolve (docs/plan.md: the one plan reader, which names the line
# of a mistake), one compact JSON object each, in the array RB_STEPS.
rb_read_plan() {
  local plan="$1" out rc=0
  shift
  [[ -n "${plan}" ]] || rb_usage_error "no plan: give PLAN or set PGFERRY_PLAN in the configuration"
  need_cmd pg-load jq
  out="$(pg-load --plan "${plan}" --resolve "$@")" || rc=$?
  ((rc == 0)) || die "${rc}" "plan '${plan}': not usable (pg-load's message above)"
  mapfile -t RB_STEPS <<<"${out}"
}

# rb_field JSON NAME: a member of a resolved step as text ("" when null).
rb_field() {
  jq -r --arg f "$2" '.[$f] // "" | tostring' <<<"$1"
}

# rb_args JSON NAME ARRAY: an argv member of a resolved step into the bash array ARRAY.
rb_args() {
  mapfile -d '' -t "$3" < <(jq -j --arg f "$2" '(.[$f] // [])[] | (., "\u0000")' <<<"$1")
}

# rb_sqlite_dbs: the SQLite files to freeze and back up: PGFERRY_SQLITE_DBS, else the
# resolved steps' sqlite members (needs RB_STEPS), one per line, in plan order.
rb_sqlite_dbs() {
  if [[ -n "${PGFERRY_SQLITE_DBS:-}" ]]; then
    local dbs=()
    read -r -a dbs <<<"${PGFERRY_SQLITE_DBS}"
    printf '%s\n' "${dbs[@]}"
  elif ((${#RB_STEPS[@]})); then
    printf '%s\n' "${RB_STEPS[@]}" | jq -r '.sqlite // empty' | awk '!seen[$0]++'
  fi
}

# rb_json_roots: what freeze watches and backup keeps for the plan's json: sources (needs
# RB_STEPS, resolved): each one's file, or the directory above its first wildcard.
rb_json_roots() {
  ((${#RB_STEPS[@]})) || return 0
  # A root inside another (users.json in data/users/) is kept by the outer one.
  printf '%s\n' "${RB_STEPS[@]}" | jq -r 'select(.kind == "json") | .watch[]?' | sort -u |
    awk '{ for (r in kept) if (index($0, r "/") == 1) next; kept[$0] = 1; print }'
}

# State: one small file per fact in PGFERRY_STATE_DIR.
rb_state() { printf '%s/%s\n' "${PGFERRY_STATE_DIR}" "$1"; }
rb_state_get() { cat "$(rb_state "$1")" 2>/dev/null || true; }
rb_state_set() {
  local f
  f="$(rb_state "$1")"
  printf '%s\n' "$2" >"${f}.tmp" && mv -f "${f}.tmp" "${f}"
}
rb_event() {
  printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${PGFERRY_SCRIPT}" "$*" >>"$(rb_state history.log)"
}

# rb_fingerprint PATH: size and mtime of a SQLite file and its -wal (an empty -wal, which
# merely opening the database creates, counts as none), or of every file under a directory.
rb_fingerprint() {
  local f
  if [[ -d "$1" ]]; then
    find "$1" -type f -printf '%p %s %T@\n' | sort
  else
    for f in "$1" "$1-wal"; do
      [[ ! -s "${f}" ]] || stat -c '%n %s %.9Y' "${f}"
    done
  fi
}

# rb_env_kept ENV_FILE: where cutover keeps ENV_FILE's previous content (its path, with
# every '/' as '%', under PGFERRY_STATE_DIR/env-kept); ".absent" marks a file it created.
rb_env_kept() {
  printf '%s/env-kept/%s\n' "${PGFERRY_STATE_DIR}" "${1//\//%}"
}

# rb_psql ARGS...: psql on the target: DATABASE_URL if set, else the PG* variables; the
# password never on psql's command line (pg_psql in common.sh).
rb_psql() {
  pg_psql "$@"
}

# rb_writers_running: true when a writer still runs (the check command, or the PID file).
rb_writers_running() {
  if [[ -n "${PGFERRY_WRITERS_CHECK:-}" ]] && bash -c "${PGFERRY_WRITERS_CHECK}" >/dev/null 2>&1; then
    return 0
  fi
  [[ -n "${PGFERRY_WRITERS_PIDFILE:-}" && -s "${PGFERRY_WRITERS_PIDFILE}" ]] &&
    kill -0 "$(<"${PGFERRY_WRITERS_PIDFILE}")" 2>/dev/null
}

# rb_writers_stop: the stop command, then TERM to the PID file's process; dies unless
# every writer is gone within PGFERRY_STOP_TIMEOUT seconds.
rb_writers_stop() {
  local rc=0
  if [[ -n "${PGFERRY_WRITERS_STOP:-}" ]]; then
    log "stopping the writers: ${PGFERRY_WRITERS_STOP}"
    bash -c "${PGFERRY_WRITERS_STOP}" || rc=$?
    # pkill, kill $(cat pid) and the like fail when there is nothing left to stop: what
    # counts is whether a writer still runs, which only the check or the PID file can tell.
    if ((rc != 0)); then
      [[ -n "${PGFERRY_WRITERS_CHECK:-}${PGFERRY_WRITERS_PIDFILE:-}" ]] ||
        die 1 "the stop command failed (status ${rc}) and nothing tells whether a writer still runs (set PGFERRY_WRITERS_CHECK): ${PGFERRY_WRITERS_STOP}"
      log "the stop command exited ${rc} (nothing left to stop?); checking that no writer runs"
    fi
  fi
  if [[ -n "${PGFERRY_WRITERS_PIDFILE:-}" && -s "${PGFERRY_WRITERS_PIDFILE}" ]]; then
    kill -TERM "$(<"${PGFERRY_WRITERS_PIDFILE}")" 2>/dev/null || true
  fi
  local waited=0
  while rb_writers_running; do
    ((waited < PGFERRY_STOP_TIMEOUT)) ||
      die 1 "the writers are still running ${PGFERRY_STOP_TIMEOUT}s after being stopped (PGFERRY_WRITERS_CHECK / PGFERRY_WRITERS_PIDFILE)"
    sleep 1
    waited=$((waited + 1))
  done
}

rb_writers_start() {
  [[ -n "${PGFERRY_WRITERS_START:-}" ]] || die 64 "${RB_CONFIG}: PGFERRY_WRITERS_START is not set"
  log "starting the writers: ${PGFERRY_WRITERS_START}"
  bash -c "${PGFERRY_WRITERS_START}" || die 1 "the start command failed (status $?): ${PGFERRY_WRITERS_START}"
}

# rb_gate: after the plan is printed: without --execute, stop here having changed nothing.
rb_gate() {
  if [[ -z "${OPT_execute:-}" ]]; then
    log "dry run: nothing was done; run again with --execute to do the above"
    exit 0
  fi
}
