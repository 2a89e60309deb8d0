#!/usr/bin/env bats
# The Debian package (packaging/build-deb): installed with dpkg into a clean root, its
# tools, man pages and runbook scripts work with nothing but cron's default PATH besides.

load helpers

# The package tests/run built (PGFERRY_TEST_DEB), else built now.
deb() {
  if [[ -n "${PGFERRY_TEST_DEB:-}" ]]; then
    printf '%s\n' "${PGFERRY_TEST_DEB}"
  else
    "${BATS_TEST_DIRNAME}/../../packaging/build-deb" "${W}/deb"
  fi
}

@test "the package installs into a clean root; its tools, man pages and scripts work there" {
  local pkg root t
  pkg="$(deb)"
  run -0 dpkg-deb --field "${pkg}" Package Version Depends
  [[ "${output}" == *"Package: pgferry"* && "${output}" == *"Depends: libc6 (>= "*"postgresql-client"* ]]
  root="${W}/root"
  mkdir -p "${root}/var/lib/dpkg/info" "${root}/var/lib/dpkg/updates" "${root}/var/log"
  touch "${root}/var/lib/dpkg/status"
  # A root of its own: dpkg records the package there; the system's dependencies are not in it.
  run -0 dpkg --root="${root}" --force-depends --force-script-chrootless -i "${pkg}"
  run -0 dpkg --root="${root}" -s pgferry
  [[ "${output}" == *"Status: install ok installed"* ]]
  local cron_path="${root}/usr/bin:/usr/bin:/bin"
  for t in sqlite-dump fs-export pg-load count-check pg-partition backup-verify; do
    run -0 env PATH="${cron_path}" "${t}" --version
    [[ "${output}" == "${t} "* ]]
    [[ "$(command -v "${t}" || true)" != "${root}"* ]]
    run -0 env MANPAGER=cat MANWIDTH=100 man -l "${root}/usr/share/man/man1/${t}.1.gz"
    [[ "${output}" == *"${t}"* && "${output}" == *"Exit status"* ]]
  done
  run -0 env MANPAGER=cat man -l "${root}/usr/share/man/man1/pg-load.1.gz"
  [[ "${output}" == *"--assume-tz"* ]]
  run -0 env MANPAGER=cat man -l "${root}/usr/share/man/man1/pgferry-migrate.1.gz"
  [[ "${output}" == *"pgferry-migrate"* ]]
  [[ -f "${root}/usr/share/doc/pgferry/runbook/RUNBOOK.md" && -f "${root}/usr/share/doc/pgferry/docs/stream.md" ]]
  [[ -f "${root}/usr/share/doc/pgferry/runbook/pgferry.conf.example" ]]
  # The runbook scripts find their lib and the installed tools: a real migration.
  app_db
  config
  run -0 env PATH="${cron_path}" pgferry-migrate --execute
  [[ "${output}" == *"Source: 50 rows → Postgres: 50 rows ✓"*"migrated: every step loaded"* ]]
  run -0 env PATH="${cron_path}" pgferry-verify
  [[ "$(pg -c 'SELECT count(*) FROM notes')" == 50 ]]
}

@test "the README's quick start works pasted into a shell, with the installed tools" {
  local pkg root block
  pkg="$(deb)"
  root="${W}/root"
  mkdir -p "${root}"
  dpkg -x "${pkg}" "${root}"
  # The block after the marker, less its first line (the local server's one-time setup).
  block="$(sed -n '/<!-- quick start/,/^```$/p' "${BATS_TEST_DIRNAME}/../../README.md" | sed '1,2d;$d' | sed '1d')"
  [[ "${block}" == *"pg-load notes"* ]]
  # "A PostgreSQL that psql reaches": this test's database, through the libpq variables.
  local rest="${DATABASE_URL#postgres://}"
  export PGUSER="${rest%%:*}" PGPASSWORD="${rest#*:}" PGDATABASE="${rest##*/}"
  PGPASSWORD="${PGPASSWORD%%@*}"
  rest="${rest#*@}"
  export PGHOST="${rest%%:*}" PGPORT="${rest#*:}"
  PGPORT="${PGPORT%%/*}"
  unset DATABASE_URL
  run -0 --separate-stderr env PATH="${root}/usr/bin:/usr/bin:/bin" bash -euo pipefail -c "${block}"
  # shellcheck disable=SC2154 # set by run --separate-stderr
  [[ "${stderr}" == *"pg-load: notes: Source: 2 rows → Postgres: 2 rows ✓"* ]]
  [[ "${output}" == *"hello"*"world"*"(2 rows)"* ]]
}

@test "the package names its maintainer from DEBFULLNAME and DEBEMAIL, as Debian's tools read them" {
  local pkg
  pkg="$(DEBFULLNAME="Ada Lovelace" DEBEMAIL="ada@example.org" "${BATS_TEST_DIRNAME}/../../packaging/build-deb" "${W}/deb-m")"
  run -0 dpkg-deb --field "${pkg}" Maintainer
  [[ "${output}" == "Ada Lovelace <ada@example.org>" ]]
}
