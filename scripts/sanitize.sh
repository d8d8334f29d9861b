#!/usr/bin/env bash
# Runs the test suites under sanitizers, each in a build of its own (g++):
#   asan  ASan + UBSan (-DKVSERVE_SANITIZE=ON, -O1 -g) into build-asan/: every test binary,
#         then ctest -L 'unit|integration'.
#   tsan  ThreadSanitizer (-fsanitize=thread, -O1 -g) into build-tsan/: only the queue,
#         scheduler and streaming tests (request_queue, generation_stream, engine_loop) and
#         the integration tests, which are where threads meet.
#
#   scripts/sanitize.sh            # both stages
#   scripts/sanitize.sh asan       # or tsan
#
# Any sanitizer report fails the test that triggered it (UBSan halts, ASan/LSan/TSan exit
# non-zero), so the ctest run fails. A test binary that does not build fails the stage too
# (SANITIZE_SKIP_UNBUILDABLE=1 runs what built instead, while other modules are half-written).
# Suppressions (generated into the build directory; see docs/TESTING.md) cover only code we
# cannot instrument: libgomp (OpenMP) and oneDNN, whose thread synchronisation TSan cannot
# see. Environment: JOBS (2) build jobs, TEST_JOBS (1) ctest jobs, ASAN_BUILD_DIR,
# TSAN_BUILD_DIR. Prints the time each step took.
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE=${1:-all}
case "$STAGE" in asan | tsan | all) ;; *) echo "usage: $0 [asan|tsan|all]" >&2; exit 2 ;; esac
JOBS=${JOBS:-2}
TEST_JOBS=${TEST_JOBS:-1}
ASAN_DIR=${ASAN_BUILD_DIR:-build-asan}
TSAN_DIR=${TSAN_BUILD_DIR:-build-tsan}
# The queue/scheduler/streaming test binaries, by name, plus every integration test binary.
TSAN_TEST_REGEX=${TSAN_TEST_REGEX:-request_queue|generation_stream|engine_loop|integration}

timings=()
failures=()
# CHILD_CPU := CPU seconds used so far by finished child processes (compilers, tests); with
# the wall time it shows how much a step was slowed by other load on the machine. `times`
# must run in this shell (a $(...) subshell starts from zero), so it writes to a file.
CPU_FILE=$(mktemp)
trap 'rm -f "$CPU_FILE"' EXIT
read_child_cpu() {
  times >"$CPU_FILE"
  CHILD_CPU=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%d", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$CPU_FILE")
}
step() {  # step NAME COMMAND...: runs and times one step; a failure is recorded, not fatal.
  local name=$1
  shift
  local t0=$SECONDS c0
  read_child_cpu
  c0=$CHILD_CPU
  echo "== $name"
  local result=ok rc=0
  "$@" || rc=$?
  [[ $rc -eq 0 ]] || { result=FAILED; failures+=("$name"); }
  read_child_cpu
  timings+=("$(printf '%-28s %6d s wall %6d s cpu  %s' "$name" $((SECONDS - t0)) $((CHILD_CPU - c0)) "$result")")
  return $rc
}

# build DIR TARGET...: builds (all targets when none are given), going on past failures so
# everything that can be tested is; fails if anything did not build, unless told to skip.
build() {
  local dir=$1
  shift
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  if cmake --build "$dir" -j "$JOBS" "${targets[@]}" -- -k 0; then return 0; fi
  if [[ "${SANITIZE_SKIP_UNBUILDABLE:-0}" == 1 ]]; then
    echo "sanitize.sh: some targets did not build; testing what did (SANITIZE_SKIP_UNBUILDABLE=1)" >&2
    return 0
  fi
  return 1
}

quiet() { "$@" >/dev/null; }  # Runs a command without its stdout (errors still show).

write_suppressions() {  # write_suppressions DIR
  local dir=$1
  # libgomp and oneDNN are not built with TSan: it cannot see the happens-before of OpenMP's
  # barriers and thread pool, so memory handed between OpenMP threads (our parallel loops
  # included) looks racy. Any race with a libgomp or oneDNN frame on either stack is theirs
  # to order; races purely among our own threads are still reported.
  cat >"$dir/tsan.supp" <<'SUPP'
race:libgomp.so
race:libdnnl.so
called_from_lib:libgomp.so
called_from_lib:libdnnl.so
deadlock:libgomp.so
SUPP
  # Leaks at exit inside libraries we do not own (thread pools and singletons kept alive on
  # purpose). None is needed yet: leaks in our code or in what we allocate must fail.
  cat >"$dir/lsan.supp" <<'SUPP'
leak:libgomp.so
SUPP
}

asan_stage() {
  local t0=$SECONDS
  step "asan: configure" quiet cmake -S . -B "$ASAN_DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" -DKVSERVE_SANITIZE=ON \
    -DCMAKE_CXX_FLAGS="-fno-sanitize-recover=undefined" || return 0
  write_suppressions "$ASAN_DIR"
  # Only the unit and integration test binaries (and what they depend on): no benchmarks,
  # no e2e-only tools.
  local targets
  mapfile -t targets < <(labelled_tests unit integration)
  echo "asan: ${#targets[@]} test binaries"
  step "asan: build" build "$ASAN_DIR" "${targets[@]}" || true
  ASAN_OPTIONS="detect_leaks=1:detect_stack_use_after_return=1:strict_init_order=1" \
  LSAN_OPTIONS="suppressions=$PWD/$ASAN_DIR/lsan.supp:print_suppressions=0" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
    step "asan: ctest unit|integration" \
    ctest --test-dir "$ASAN_DIR" -L 'unit|integration' --output-on-failure -j "$TEST_JOBS" \
    || true
  timings+=("$(printf '%-28s %6d s wall' "asan: total" $((SECONDS - t0)))")
}

# labelled_tests LABEL...: the kvserve_cc_test targets under tests/ with any of the labels
# (read from the CMakeLists, as the binaries that would tell ctest are not built yet).
labelled_tests() {
  local want=" $* "
  find tests -name CMakeLists.txt -print0 | xargs -0 cat | awk -v want="$want" '
    BEGIN { RS = "kvserve_cc_test[(]" }
    NR > 1 {
      split($0, body, ")"); b = body[1]; gsub(/[ \t\r\n]+/, " ", b)
      n = split(b, w, " "); in_labels = 0
      for (i = 2; i <= n; i++) {
        if (w[i] == "LABELS") { in_labels = 1; continue }
        if (w[i] ~ /^[A-Z_]+$/) in_labels = 0
        if (in_labels && index(want, " " w[i] " ")) print w[1]
      }
    }' | sort -u
}

tsan_stage() {
  local t0=$SECONDS
  step "tsan: configure" quiet cmake -S . -B "$TSAN_DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
    -DCMAKE_CXX_FLAGS="-fsanitize=thread" || return 0
  write_suppressions "$TSAN_DIR"
  # Only the selected test binaries are built; ctest -L below then runs exactly those
  # (a binary that is not built shows up only as an unlabelled <target>_NOT_BUILT test).
  local all targets=()
  all=$(ninja -C "$TSAN_DIR" -t targets all 2>/dev/null | sed -n 's/^\([A-Za-z0-9_-]*\): .*/\1/p' | sort -u)
  mapfile -t targets < <({ grep -E "^[A-Za-z0-9_]*($TSAN_TEST_REGEX)[A-Za-z0-9_]*_test$" <<<"$all"
                           labelled_tests integration; } | sort -u)
  if [[ ${#targets[@]} -eq 0 ]]; then
    echo "sanitize.sh: no test target matches '$TSAN_TEST_REGEX'" >&2
    failures+=("tsan: no targets")
    return 0
  fi
  # The integration tests also start the kvserve binary.
  if grep -qx kvserve <<<"$all"; then targets+=(kvserve); fi
  echo "tsan targets: ${targets[*]}"
  step "tsan: build" build "$TSAN_DIR" "${targets[@]}" || true
  # OMP_NUM_THREADS=1: OpenMP regions without an explicit thread count stay on one thread.
  OMP_NUM_THREADS=1 \
  TSAN_OPTIONS="suppressions=$PWD/$TSAN_DIR/tsan.supp:halt_on_error=1:second_deadlock_stack=1" \
    step "tsan: ctest" \
    ctest --test-dir "$TSAN_DIR" -L 'unit|integration' --output-on-failure -j "$TEST_JOBS" \
    || true
  timings+=("$(printf '%-28s %6d s wall' "tsan: total" $((SECONDS - t0)))")
}

total0=$SECONDS
if [[ "$STAGE" == asan || "$STAGE" == all ]]; then asan_stage; fi
if [[ "$STAGE" == tsan || "$STAGE" == all ]]; then tsan_stage; fi

echo "== sanitizer summary (total $((SECONDS - total0)) s)"
printf '%s\n' "${timings[@]}"
if [[ ${#failures[@]} -gt 0 ]]; then
  printf 'FAILED: %s\n' "${failures[@]}" >&2
  exit 1
fi
