# shellcheck shell=bash
# A throwaway PostgreSQL cluster in a temp dir on loopback, for tests, the demo and benchmarks.
# Sourced after common.sh. throwaway_pg_start sets THROWAWAY_PG_URL and THROWAWAY_PG_CA
# and registers its own cleanup on the EXIT trap. Beside THROWAWAY_PG_CA (server.crt) lie a
# client certificate for the role pgferry_cert (client.crt, client.key, signed by the test CA
# client-ca.crt): pg_hba.conf lets that role in over TLS by certificate only (`cert`).

# The server binaries of Debian's newest installed PostgreSQL.
throwaway_pg_bindir() {
  local d
  d="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "${d}" && -x "${d}/initdb" ]] || die 69 "no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install -y postgresql)"
  printf '%s\n' "${d}"
}

# throwaway_pg_start [EXTRA_SERVER_OPTIONS]: initdb, TLS cert, start; password auth on TCP.
throwaway_pg_start() {
  local extra="${1:-}" bindir dir port pass run_as=()
  need_cmd openssl python3
  bindir="$(throwaway_pg_bindir)"
  dir="$(mktemp -d /tmp/pgferry-pg.XXXXXX)"
  port="$(free_port)"
  pass="$(openssl rand -hex 16)"
  # initdb refuses root: run the server as Debian's postgres user (or nobody).
  if ((EUID == 0)); then
    local user=postgres
    id -u postgres >/dev/null 2>&1 || user=nobody
    chown "${user}" "${dir}"
    run_as=(runuser -u "${user}" --)
  fi
  printf '%s\n' "${pass}" >"${dir}/pwfile"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost" \
    -keyout "${dir}/server.key" -out "${dir}/server.crt" >/dev/null 2>&1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pgferry test client CA" \
    -keyout "${dir}/client-ca.key" -out "${dir}/client-ca.crt" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=pgferry_cert" \
    -keyout "${dir}/client.key" -out "${dir}/client.csr" >/dev/null 2>&1
  openssl x509 -req -in "${dir}/client.csr" -CA "${dir}/client-ca.crt" -CAkey "${dir}/client-ca.key" \
    -CAcreateserial -days 2 -out "${dir}/client.crt" >/dev/null 2>&1
  chmod 600 "${dir}/server.key" "${dir}/client.key" "${dir}/client-ca.key"
  chmod 644 "${dir}/server.crt" "${dir}/client-ca.crt" "${dir}/client.crt"
  if ((EUID == 0)); then chown "$(stat -c %U "${dir}")" "${dir}"/*; fi
  "${run_as[@]}" "${bindir}/initdb" -D "${dir}/data" -U pgferry --pwfile="${dir}/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"${dir}/initdb.log" 2>&1 ||
    die 69 "initdb failed: see ${dir}/initdb.log"
  rm -f "${dir}/pwfile"
  # The certificate-only role first: pg_hba.conf takes the first line that matches.
  printf 'hostssl all pgferry_cert %s cert\n' 127.0.0.1/32 ::1/128 >"${dir}/hba.head"
  cat "${dir}/hba.head" "${dir}/data/pg_hba.conf" >"${dir}/hba.new"
  "${run_as[@]}" cp "${dir}/hba.new" "${dir}/data/pg_hba.conf"
  "${run_as[@]}" "${bindir}/pg_ctl" -D "${dir}/data" -l "${dir}/server.log" -w -t 60 start \
    -o "-c listen_addresses=localhost -p ${port} -c unix_socket_directories=${dir} -c ssl=on \
        -c ssl_cert_file=${dir}/server.crt -c ssl_key_file=${dir}/server.key -c ssl_ca_file=${dir}/client-ca.crt \
        -c max_connections=200 ${extra}" >/dev/null ||
    die 69 "PostgreSQL did not start: see ${dir}/server.log"
  THROWAWAY_PG_DIR="${dir}"
  THROWAWAY_PG_URL="postgres://pgferry:${pass}@127.0.0.1:${port}/postgres"
  THROWAWAY_PG_CA="${dir}/server.crt"
  THROWAWAY_PG_PORT="${port}"
  export THROWAWAY_PG_DIR THROWAWAY_PG_URL THROWAWAY_PG_CA THROWAWAY_PG_PORT
  trap_add "throwaway_pg_stop"
  log "throwaway PostgreSQL on 127.0.0.1:${port} (data in ${dir})"
}

throwaway_pg_stop() {
  [[ -n "${THROWAWAY_PG_DIR:-}" && -d "${THROWAWAY_PG_DIR}" ]] || return 0
  local bindir run_as=()
  bindir="$(throwaway_pg_bindir)"
  ((EUID == 0)) && run_as=(runuser -u "$(stat -c %U "${THROWAWAY_PG_DIR}")" --)
  "${run_as[@]}" "${bindir}/pg_ctl" -D "${THROWAWAY_PG_DIR}/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "${THROWAWAY_PG_DIR}"
}
