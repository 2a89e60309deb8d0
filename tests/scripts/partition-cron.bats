#!/usr/bin/env bats
# scripts/partition-cron: pg-partition ensure and retain for the plan's partitioned targets.

load helpers

partitioned_plan() {
  pg <<'SQL'
CREATE TABLE device_logs (id bigint, message text NOT NULL, received_at timestamptz NOT NULL,
  PRIMARY KEY (id, received_at)) PARTITION BY RANGE (received_at);
CREATE TABLE device_logs_2024_01 PARTITION OF device_logs FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00');
CREATE TABLE device_logs_2024_02 PARTITION OF device_logs FOR VALUES FROM ('2024-02-01 00:00:00+00') TO ('2024-03-01 00:00:00+00');
INSERT INTO device_logs VALUES (1, 'old', '2024-01-15Z'), (2, 'old', '2024-02-15Z');
CREATE TABLE plain (id bigint PRIMARY KEY);
SQL
  cat >"${W}/plan.ndjson" <<PLAN
{"step": "1", "source": "sqlite:${APPDB}:plain", "target": "plain"}
{"step": "2", "source": "sqlite:${APPDB}:device_logs", "target": "device_logs", "partitioned": {"from": "2024-01", "ahead": 2, "keep": 6}}
PLAN
}

partitions() { pg -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'device_logs'::regclass"; }

@test "partition-cron without --execute prints the SQL and changes nothing" {
  partitioned_plan
  config
  run -0 "${SCRIPTS}/partition-cron"
  [[ "${output}" == *"CREATE TABLE"*"device_logs_$(date -u +%Y_%m)"* ]]
  [[ "${output}" == *"DETACH PARTITION"*"device_logs_2024_01"* ]]
  [[ "$(partitions)" == 2 ]]
}

@test "partition-cron creates the coming partitions and detaches the old ones, silently" {
  partitioned_plan
  config
  run -0 --separate-stderr "${SCRIPTS}/partition-cron" --execute
  [[ -z "${output}" && -z "${stderr}" ]]
  [[ "$(pg -c "SELECT to_regclass('device_logs_$(date -u +%Y_%m)') IS NOT NULL")" == t ]]
  [[ "$(partitions)" == 3 ]]
  [[ "$(pg -c 'SELECT count(*) FROM device_logs_2024_01')" == 1 ]]
  run -0 "${SCRIPTS}/partition-cron" --execute
  [[ "$(partitions)" == 3 ]]
}

@test "partition-cron drops with PGFERRY_RETAIN=drop, and leaves old ones with off" {
  partitioned_plan
  config "PGFERRY_RETAIN=off"
  run -0 "${SCRIPTS}/partition-cron" --execute
  [[ "$(partitions)" == 5 ]]
  config "PGFERRY_RETAIN=drop"
  run -0 "${SCRIPTS}/partition-cron" --execute
  [[ "$(partitions)" == 3 ]]
  [[ "$(pg -c "SELECT to_regclass('device_logs_2024_01') IS NULL")" == t ]]
  config "PGFERRY_RETAIN=sometimes"
  run -64 "${SCRIPTS}/partition-cron" --execute
}

@test "the RUNBOOK's crontab line works from a checkout under cron's environment (PATH=/usr/bin:/bin, nothing exported)" {
  partitioned_plan
  mkdir -p "${W}/arch"
  config "DATABASE_URL=${DATABASE_URL}" "PGFERRY_RETAIN=drop" "PGFERRY_PARTITION_ARCHIVE=${W}/arch"
  # The checkout of RUNBOOK section 0 (/opt/pgferry, its release build in target/release).
  mkdir -p "${W}/opt/pgferry/target"
  ln -s "${SCRIPTS}" "${W}/opt/pgferry/scripts"
  ln -s "$(dirname "$(command -v pg-partition)")" "${W}/opt/pgferry/target/release"
  local line
  line="$(grep -o '[0-9*]* [0-9*]* \* \* \* /opt/pgferry/scripts/partition-cron [^`]*' "${BATS_TEST_DIRNAME}/../../runbook/RUNBOOK.md")"
  line="$(cut -d' ' -f6- <<<"${line}")"
  line="${line//\/opt\/pgferry/${W}/opt/pgferry}"
  line="${line//\/etc\/pgferry\/pgferry.conf/${PGFERRY_CONFIG}}"
  run -0 --separate-stderr env -i HOME="${W}" LOGNAME="$(id -un)" SHELL=/bin/sh PATH=/usr/bin:/bin /bin/sh -c "${line}"
  [[ -z "${output}" && -z "${stderr}" ]]
  # Six months kept (the seed's retention): 2024's partitions archived, then dropped.
  [[ "$(pg -c "SELECT to_regclass('device_logs_$(date -u +%Y_%m)') IS NOT NULL AND to_regclass('device_logs_2024_01') IS NULL")" == t ]]
  [[ "$(gunzip -c "${W}/arch/device_logs_2024_01.ndjson.gz" | jq -sc 'map(.id // .["$end"].rows)')" == '[1,1]' ]]
}
