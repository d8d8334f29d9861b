#!/usr/bin/env bash
# Installs what is missing, builds kvserve and runs the whole test suite (unit, integration
# over real gRPC on loopback, end-to-end with the CLI), then the sanitizer and fuzzing stages:
#   1. build/ + ctest (every test)                      ~8 min on an idle 2-core machine
#   2. scripts/sanitize.sh asan: unit + integration under ASan + UBSan
#   3. scripts/sanitize.sh tsan: queue / scheduler / streaming tests under TSan
#   4. scripts/fuzz.sh: each libFuzzer target from its seed corpus (the seeds are replayed
#      first), KVSERVE_CI_FUZZ_SECONDS (20) per target
# CI (.ci/run) runs all of it; docs/TESTING.md has each stage's measured time.
#
# Environment: KVSERVE_CI_SANITIZERS=0 skips stages 2-3 and KVSERVE_CI_FUZZ=0 stage 4 (for a
# quick local run); BUILD_DIR (build), TEST_JOBS (2: every test passes two at a time, and on
# 2 cores that halves the stage), KVSERVE_CI_FUZZ_SECONDS (20). Extra arguments go to the
# stage-1 ctest.
# Every stage runs even if an earlier one failed; the exit code is non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh

# Nothing here may spin on the (small, shared) CI machine: oneDNN's OpenMP threads wait
# passively between steps, and tests run one at a time.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

failed=()
times=()
stage() {  # stage NAME COMMAND...: runs one stage, timing it; a failure is recorded.
  local name=$1 t0=$SECONDS rc=0
  shift
  echo "==== stage: $name ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$@" || rc=$?
  times+=("$(printf '%-10s %5d s  %s' "$name" $((SECONDS - t0)) "$([[ $rc -eq 0 ]] && echo ok || echo FAILED)")")
  [[ $rc -eq 0 ]] || failed+=("$name")
}

BUILD_DIR=${BUILD_DIR:-build}
plain() {
  scripts/build.sh || return 1
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${TEST_JOBS:-2}" "$@"
}
stage plain plain "$@"
if [[ "${KVSERVE_CI_SANITIZERS:-1}" != 0 ]]; then
  stage asan scripts/sanitize.sh asan
  stage tsan scripts/sanitize.sh tsan
fi
if [[ "${KVSERVE_CI_FUZZ:-1}" != 0 ]]; then
  stage fuzz scripts/fuzz.sh "${KVSERVE_CI_FUZZ_SECONDS:-20}"
fi

echo "==== test.sh summary"
printf '%s\n' "${times[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "FAILED stages: ${failed[*]}" >&2
  exit 1
fi
