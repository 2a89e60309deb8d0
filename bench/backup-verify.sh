#!/usr/bin/env bash
# Benchmarks backup-verify create and check against the hand-made pipeline they replace:
# `sqlite3 DB ".backup COPY"` + `gzip` + `sha256sum` (and for check: `sha256sum` +
# `gunzip` + `sqlite3 COPY "PRAGMA integrity_check"`), in one run, on one generated database.
#
# Usage: bench/backup-verify.sh [SIZE_MB] [WORK_DIR]
#   SIZE_MB   size of the generated WAL-mode database [default: 1024]
#   WORK_DIR  scratch directory; the generated database is kept there and reused by later
#             runs of the same size [default: target/bench-backup-verify]
#   LEVEL     environment: gzip level for both sides [default: 6]
# Prints wall time and peak memory (RSS) of each side and the ratios ours/hand.
# Targets: ratio <= 1.00 (no slower than by hand) and peak memory under 64 MB.
#
# Exit status: 0 when the benchmark ran (targets missed are reported, not failed); non-zero otherwise.
set -Eeuo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/../scripts/lib/common.sh"

# generate DB SIZE_MB: a WAL-mode database of about SIZE_MB with an app-like table and index.
generate() {
  local db="$1" size_mb="$2"
  log "generating a ${size_mb} MB database at ${db} (takes a while at 1 GB)"
  rm -f "${db}" "${db}-wal" "${db}-shm"
  sqlite3 "${db}" >/dev/null <<'SQL'
PRAGMA journal_mode = WAL;
CREATE TABLE events (
  id INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL,
  kind TEXT NOT NULL,
  payload TEXT,
  created_at TEXT NOT NULL
);
CREATE INDEX events_user ON events (user_id, created_at);
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT);
INSERT INTO users SELECT value, 'user' || value || '@example.com', 'User number ' || value FROM generate_series(1, 100000);
SQL
  local have=0 batch=0
  while ((have < size_mb)); do
    sqlite3 "${db}" >/dev/null <<SQL
PRAGMA journal_mode = WAL;
INSERT INTO events (user_id, kind, payload, created_at)
SELECT abs(random()) % 100000 + 1,
       CASE abs(random()) % 4 WHEN 0 THEN 'login' WHEN 1 THEN 'purchase' WHEN 2 THEN 'view' ELSE 'logout' END,
       printf('{"session":"%s","page":"/items/%d","agent":"Mozilla/5.0 (X11; Linux x86_64)","ok":true}',
              lower(hex(randomblob(12))), abs(random()) % 5000),
       strftime('%Y-%m-%dT%H:%M:%SZ', 1700000000 + ${batch} * 500000 + value, 'unixepoch')
FROM generate_series(1, 500000);
SQL
    batch=$((batch + 1))
    have=$(($(stat -c %s "${db}") / 1000000 + $(stat -c %s "${db}-wal" 2>/dev/null || echo 0) / 1000000))
  done
  echo "${size_mb}" >"${db}.size"
}

# wal_writes DB: commits rows that stay only in the WAL (no checkpoint), as a live app leaves them.
wal_writes() {
  python3 - "$1" <<'PY'
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA wal_autocheckpoint = 0")
n = c.execute("SELECT count(*) FROM users").fetchone()[0]
c.executemany("INSERT INTO users (email, name) VALUES (?, ?)", [(f"late{n + i}@example.com", "late") for i in range(20000)])
c.commit()
os._exit(0)  # no close, so no checkpoint
PY
}

# timed NAME COMMAND...: runs COMMAND under /usr/bin/time; appends "NAME SECONDS KB" to TIMES.
timed() {
  local name="$1" out
  shift
  out="$(mktemp)"
  /usr/bin/time -f '%e %M' -o "${out}" "$@"
  echo "${name} $(cat "${out}")" >>"${TIMES}"
  rm -f "${out}"
}

# sum NAME...: total seconds of the named steps.
sum() {
  local names="$*"
  awk -v names="${names}" 'BEGIN { split(names, n, " "); for (i in n) want[n[i]] = 1 }
    want[$1] { s += $2 } END { printf "%.2f", s }' "${TIMES}"
}

# peak NAME...: the largest peak RSS of the named steps, in MB.
peak() {
  local names="$*"
  awk -v names="${names}" 'BEGIN { split(names, n, " "); for (i in n) want[n[i]] = 1 }
    want[$1] && $3 > m { m = $3 } END { printf "%.1f", m / 1024 }' "${TIMES}"
}

main() {
  local size_mb="${1:-1024}" root
  root="$(repo_root)"
  local work="${2:-${root}/target/bench-backup-verify}"
  local level="${LEVEL:-6}"
  need_cmd sqlite3 gzip gunzip sha256sum python3 cargo awk
  [[ -x /usr/bin/time ]] || apt_install time
  mkdir -p "${work}"
  log "building backup-verify (release)"
  (cd "${root}" && cargo build --release --quiet --bin backup-verify)
  local bv="${root}/target/release/backup-verify" db="${work}/bench.db"
  if [[ ! -f "${db}" || "$(cat "${db}.size" 2>/dev/null)" != "${size_mb}" ]]; then
    generate "${db}" "${size_mb}"
  fi
  TIMES="${work}/times"
  : >"${TIMES}"
  rm -rf "${work}/hand" "${work}/ours"
  mkdir -p "${work}/hand" "${work}/ours"
  wal_writes "${db}"
  # Warm the page cache the same way for both sides.
  cat "${db}" "${db}-wal" >/dev/null
  log "WAL holds $(($(stat -c %s "${db}-wal") / 1000)) kB of commits"

  # Ours first: it only reads, so the hand pipeline sees the same WAL (sqlite3 checkpoints it on exit).
  log "ours: backup-verify create --level ${level}"
  timed ours_create "${bv}" create "${db}" --out "${work}/ours" --name bench --level "${level}" >/dev/null
  log "hand: sqlite3 .backup + gzip -${level} + sha256sum"
  timed hand_backup sqlite3 "${db}" ".backup '${work}/hand/copy.db'"
  timed hand_gzip gzip "-${level}" "${work}/hand/copy.db"
  timed hand_sha sh -c "sha256sum '${work}/hand/copy.db.gz' > '${work}/hand/copy.db.gz.sha256'"

  log "ours: backup-verify check"
  local backup
  backup="$(ls "${work}"/ours/bench-*.manifest.json)"
  timed ours_check "${bv}" check "${backup}" >/dev/null
  log "hand: sha256sum -c + gunzip + sqlite3 integrity_check"
  timed hand_csha sh -c "cd '${work}/hand' && sha256sum -c --quiet copy.db.gz.sha256"
  timed hand_gunzip sh -c "gunzip -c '${work}/hand/copy.db.gz' > '${work}/hand/check.db'"
  timed hand_integrity sqlite3 "${work}/hand/check.db" "PRAGMA integrity_check"

  local db_mb gz_hand gz_ours
  db_mb=$(($(stat -c %s "${work}/hand/check.db") / 1000000))
  gz_hand=$(($(stat -c %s "${work}/hand/copy.db.gz") / 1000000))
  gz_ours=$(($(stat -c %s "${backup%.manifest.json}.sqlite.gz") / 1000000))
  local hc oc hk ok
  hc="$(sum hand_backup hand_gzip hand_sha)"
  oc="$(sum ours_create)"
  hk="$(sum hand_csha hand_gunzip hand_integrity)"
  ok="$(sum ours_check)"
  echo
  echo "backup-verify bench: database ${db_mb} MB, gzip level ${level}; compressed: hand ${gz_hand} MB, ours ${gz_ours} MB"
  printf '%-8s %10s %10s %8s %14s %14s\n' step "hand s" "ours s" ratio "hand peak MB" "ours peak MB"
  printf '%-8s %10s %10s %8s %14s %14s\n' create "${hc}" "${oc}" "$(awk -v a="${oc}" -v b="${hc}" 'BEGIN{printf "%.2f", a/b}')" \
    "$(peak hand_backup hand_gzip hand_sha)" "$(peak ours_create)"
  printf '%-8s %10s %10s %8s %14s %14s\n' check "${hk}" "${ok}" "$(awk -v a="${ok}" -v b="${hk}" 'BEGIN{printf "%.2f", a/b}')" \
    "$(peak hand_csha hand_gunzip hand_integrity)" "$(peak ours_check)"
  echo "steps (s, peak KB):"
  sed 's/^/  /' "${TIMES}"
  echo "targets: ratio <= 1.00; ours peak < 64 MB. (create also runs integrity_check, foreign_key_check"
  echo "and the content digest; the hand pipeline does none of that.)"
  rm -rf "${work}/hand" "${work}/ours"
}

main "$@"
