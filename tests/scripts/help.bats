#!/usr/bin/env bats
# Every runbook script: --help is its header; bad options and missing configuration are
# their own exit codes.

load helpers

RUNBOOK_SCRIPTS=(preflight freeze thaw backup migrate verify cutover rollback partition-cron)

@test "every script has --help with usage, options and exit status" {
  local s
  for s in "${RUNBOOK_SCRIPTS[@]}"; do
    run -0 "${SCRIPTS}/${s}" --help
    [[ "${output}" == *"Usage: scripts/${s}"*"--config FILE"*"Exit status: 0 "* ]]
  done
}

@test "every script: unknown options exit 64, a missing configuration 66" {
  local s
  for s in "${RUNBOOK_SCRIPTS[@]}"; do
    run -64 "${SCRIPTS}/${s}" --no-such-option
    [[ "${output}" == *"unknown option '--no-such-option'"*"Try '${s} --help'"* ]]
    run -66 "${SCRIPTS}/${s}" --config "${W}/none.conf"
    [[ "${output}" == *"no configuration at '${W}/none.conf'"* ]]
  done
}
