#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang-14 + ASan + UBSan into build-fuzz/ and
# runs each one on a fresh copy of its checked-in seed corpus for SECONDS_PER_TARGET seconds
# (default 30; 0 only replays the seeds). Fails if any target crashes, leaks, trips a
# sanitizer or an invariant, or does not build. Prints the executions reached per target.
#
#   scripts/fuzz.sh            # 30 s per target (CI uses a shorter budget)
#   scripts/fuzz.sh 3600       # an hour per target
#   FUZZ_TARGETS="tokenizer_fuzzer" scripts/fuzz.sh 600
#
# Environment: FUZZ_BUILD_DIR (build-fuzz), FUZZ_CXX (clang++-14), JOBS (2),
# FUZZ_TARGETS (all four), FUZZ_SKIP_UNBUILDABLE=1 to skip instead of fail a target that
# does not build (useful while other modules are half-written).
# Crash inputs are kept in $FUZZ_BUILD_DIR/fuzz-artifacts/<target>/; reproduce one with
#   build-fuzz/tests/fuzz/<target> <crash file>
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-30}
if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 [SECONDS_PER_TARGET]" >&2
  exit 2
fi
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
CXX_COMPILER=${FUZZ_CXX:-clang++-14}
JOBS=${JOBS:-2}
read -r -a TARGETS <<< "${FUZZ_TARGETS:-gguf_reader_fuzzer llama2c_reader_fuzzer tokenizer_fuzzer request_fuzzer}"

if ! command -v "$CXX_COMPILER" >/dev/null; then
  echo "fuzz.sh: $CXX_COMPILER not found (apt-get install clang-14 libclang-rt-14-dev)" >&2
  exit 1
fi

# Coverage instrumentation (fuzzer-no-link) everywhere so the libraries under test guide the
# fuzzer; UBSan findings abort instead of printing and going on. -Wno-unknown-warning-option:
# sources may silence GCC-only warnings with pragmas clang does not know.
FLAGS="-fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined -Wno-unknown-warning-option"
start=$SECONDS
mkdir -p "$BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -G Ninja \
  -DCMAKE_CXX_COMPILER="$CXX_COMPILER" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKVSERVE_SANITIZE=ON \
  -DKVSERVE_FUZZ=ON \
  -DCMAKE_CXX_FLAGS="$FLAGS" >"$BUILD_DIR/configure.log" 2>&1 ||
  { cat "$BUILD_DIR/configure.log" >&2; echo "fuzz.sh: configure failed" >&2; exit 1; }

failed=()
built=()
# All targets in one build (the libraries they share compile in parallel); only if that
# fails, one at a time to find which.
echo "== building ${TARGETS[*]}"
build_args=()
for target in "${TARGETS[@]}"; do build_args+=(--target "$target"); done
if cmake --build "$BUILD_DIR" -j "$JOBS" "${build_args[@]}"; then
  built=("${TARGETS[@]}")
else for target in "${TARGETS[@]}"; do
  echo "== building $target"
  if cmake --build "$BUILD_DIR" -j "$JOBS" --target "$target"; then
    built+=("$target")
  elif [[ "${FUZZ_SKIP_UNBUILDABLE:-0}" == 1 ]]; then
    echo "fuzz.sh: $target does not build; skipped (FUZZ_SKIP_UNBUILDABLE=1)" >&2
  else
    failed+=("$target (build)")
  fi
done; fi
# CPU seconds of finished children (see scripts/sanitize.sh): wall time alone hides load.
times >"$BUILD_DIR/times.txt"
build_cpu=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%d", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$BUILD_DIR/times.txt")
echo "== fuzz build: $((SECONDS - start)) s wall, $build_cpu s cpu"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

summary=()
passed=0
for target in "${built[@]}"; do
  seeds="tests/fuzz/corpus/$target"
  work="$BUILD_DIR/fuzz-corpus/$target"
  artifacts="$BUILD_DIR/fuzz-artifacts/$target"
  log="$BUILD_DIR/fuzz-logs/$target.log"
  rm -rf "$work"
  mkdir -p "$work" "$artifacts" "$(dirname "$log")"
  if [[ -d "$seeds" ]]; then cp "$seeds"/* "$work"/; fi
  if [[ "$SECONDS_PER_TARGET" == 0 ]]; then
    run_args=(-runs=0)
  else
    run_args=(-max_total_time="$SECONDS_PER_TARGET")
  fi
  echo "== running $target (${SECONDS_PER_TARGET} s, seeds: $(ls "$work" | wc -l))"
  t0=$SECONDS
  rc=0
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: runaway allocation.
  "$BUILD_DIR/tests/fuzz/$target" "${run_args[@]}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  execs=${execs:-?}
  secs=$((SECONDS - t0))
  corpus=$(ls "$work" | wc -l)
  if [[ $rc -ne 0 ]]; then
    failed+=("$target (exit $rc)")
    echo "!! $target FAILED (exit $rc); log $log; last lines:" >&2
    grep -v '^#[0-9]' "$log" | tail -60 >&2
    ls -1 "$artifacts" >&2 || true
    summary+=("$(printf '%-24s %12s execs  %5s s  corpus %5s  FAILED' "$target" "$execs" "$secs" "$corpus")")
  else
    passed=$((passed + 1))
    summary+=("$(printf '%-24s %12s execs  %5s s  corpus %5s  ok' "$target" "$execs" "$secs" "$corpus")")
  fi
done

echo "== fuzz summary (${SECONDS_PER_TARGET} s per target; build $build_cpu s cpu; total $((SECONDS - start)) s wall)"
printf '%s\n' "${summary[@]}"
echo "fuzz: $passed passed, ${#failed[@]} failed"
if [[ ${#failed[@]} -gt 0 ]]; then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
