#!/usr/bin/env bash
# Runs the test suites under sanitizers, each in a build of its own (g++):
#   asan  ASan + UBSan (-DKVSERVE_SANITIZE=ON, -O1 -g1) into build-asan/: every test binary
#         labelled unit or integration, then ctest -L 'unit|integration'.
#   tsan  ThreadSanitizer (-fsanitize=thread, -O1 -g1) into build-tsan/: the queue, scheduler
#         and streaming tests (request_queue, generation_stream, engine_loop), where our
#         threads meet. TSAN_WITH_INTEGRATION=1 adds the integration tests (gRPC), which
#         today only show false reports from inside Debian's uninstrumented gRPC.
#
#   scripts/sanitize.sh            # both stages
#   scripts/sanitize.sh asan       # or tsan
#
# Any sanitizer report fails the test that triggered it (UBSan halts, ASan/LSan/TSan exit
# non-zero), so the ctest run fails. A test binary that does not build fails the stage too
# (SANITIZE_SKIP_UNBUILDABLE=1 runs what built instead, while other modules are half-written).
# Nothing Debian ships is built with TSan; the TSan build therefore links a small generated
# shim that tells TSan about absl::Mutex / Notification / Status synchronisation, and
# suppressions (generated into the build directory; see docs/TESTING.md) cover races inside
# code we cannot instrument (Abseil, gRPC, libgomp, oneDNN). Environment: JOBS (2) build jobs, TEST_JOBS (2) ASan ctest jobs,
# TSAN_TEST_JOBS (1), ASAN_BUILD_DIR, TSAN_BUILD_DIR, ASAN_SKIP_DIRS (below). Prints the time each step took.
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE=${1:-all}
case "$STAGE" in asan | tsan | all) ;; *) echo "usage: $0 [asan|tsan|all]" >&2; exit 2 ;; esac
JOBS=${JOBS:-2}
TEST_JOBS=${TEST_JOBS:-2}
TSAN_TEST_JOBS=${TSAN_TEST_JOBS:-1}
# Test directories the ASan stage leaves to the plain stage, to keep CI on 2 cores well under
# its budget (the ASan build is its longest step): the load-generator / CLI front end, the
# offline tools and the deploy-file checks run no server or engine code that the engine,
# server and integration tests do not run under ASan too.
ASAN_SKIP_DIRS=${ASAN_SKIP_DIRS-tests/client tests/tools tests/deploy}
ASAN_DIR=${ASAN_BUILD_DIR:-build-asan}
TSAN_DIR=${TSAN_BUILD_DIR:-build-tsan}
# The queue/scheduler/streaming test binaries, by target name.
TSAN_TEST_REGEX=${TSAN_TEST_REGEX:-request_queue|generation_stream|engine_loop}

# GCC 12 with sanitizers at -O1 reports false -Wmaybe-uninitialized inside libstdc++'s
# <regex> (std::function in _StateT); keep the warning but not as an error here (the normal
# build still makes it one).
GCC_SANITIZER_WARNINGS="-Wno-error=maybe-uninitialized"
# -g1 (line tables only) is all a sanitizer report needs for file:line stack frames, and
# builds faster than -g (no type or variable debug info for gRPC's and protobuf's
# templates): the ASan build is the longest step of CI.
SANITIZER_DEBUG_FLAGS="-g1 -O1"

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
  # Nothing from Debian is built with TSan, so synchronisation inside those libraries is
  # invisible to it. Suppressed, narrowly:
  # - race_top:<lib>: races whose racing access is inside Abseil's or gRPC's own code (their
  #   internal state is ordered by their own uninstrumented locks). Races in our code are
  #   still reported even when gRPC or Abseil called it.
  # - race:libabsl_synchronization: an absl::Condition evaluated inside Mutex::Await, which
  #   the absl shim (below) shows TSan as unlocked while it waits.
  # - called_from_lib:libabsl_graphcycles_internal: Abseil's deadlock detector copying its
  #   tables (memmove) under Abseil's own spin lock.
  # - libgomp / oneDNN (race:, anywhere on a stack): OpenMP's barriers and thread pool order
  #   the memory handed between the threads of a parallel loop, ours included.
  cat >"$dir/tsan.supp" <<'SUPP'
race:libabsl_synchronization.so
race_top:libabsl_
called_from_lib:libabsl_graphcycles_internal.so
race_top:libgrpc.so
race_top:libgrpc++.so
race_top:libgpr.so
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

# Debian's Abseil is not built with TSan, so absl::Mutex and absl::Notification, which all our
# threads synchronise with (and absl::Status's shared reference count), are invisible to it and every lock-protected access looks like a
# race. write_absl_tsan_shim DIR compiles DIR/absl_tsan_shim.o and prints the linker flags
# that route our calls to those methods (references from our objects, not from inside
# libabsl) through wrappers telling TSan about each lock, unlock and notification
# (-Wl,--wrap; the real methods still do the work).
write_absl_tsan_shim() {
  local dir=$1
  local lib
  lib=$(ls /usr/lib/x86_64-linux-gnu/libabsl_synchronization.so.* 2>/dev/null | head -1)
  [[ -n "$lib" ]] || { echo "sanitize.sh: libabsl_synchronization not found" >&2; return 1; }
  # Abseil's inline namespace (debian3 in Debian 12) is part of the mangled names; inside
  # the argument lists it is the substitution S0_.
  local ns
  ns=$(nm -D --defined-only "$lib" | grep -o '_ZN4absl[0-9]*[A-Za-z0-9_]*5Mutex4LockEv' | head -1 |
       sed 's/^_ZN4absl//; s/5Mutex4LockEv$//')
  [[ -n "$ns" ]] || { echo "sanitize.sh: no absl::Mutex::Lock in $lib" >&2; return 1; }
  cat >"$dir/absl_tsan_shim.cc" <<SHIM
// Generated by scripts/sanitize.sh: TSan annotations around Debian's uninstrumented Abseil.
#include <sanitizer/tsan_interface.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

using absl::Condition;
using absl::Duration;
using absl::Mutex;
using absl::Notification;
using absl::Time;

// The real methods; weak so that a binary not using them still links.
#define REAL(ret, sym, ...) extern "C" ret __real_##sym(__VA_ARGS__) __attribute__((weak))
REAL(void, _ZN4absl${ns}5Mutex4LockEv, Mutex*);
REAL(void, _ZN4absl${ns}5Mutex6UnlockEv, Mutex*);
REAL(bool, _ZN4absl${ns}5Mutex7TryLockEv, Mutex*);
REAL(void, _ZN4absl${ns}5Mutex10ReaderLockEv, Mutex*);
REAL(void, _ZN4absl${ns}5Mutex12ReaderUnlockEv, Mutex*);
REAL(void, _ZN4absl${ns}5MutexD1Ev, Mutex*);
REAL(void, _ZN4absl${ns}5Mutex5AwaitERKNS0_9ConditionE, Mutex*, const Condition&);
REAL(bool, _ZN4absl${ns}5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE, Mutex*, const Condition&, Duration);
REAL(bool, _ZN4absl${ns}5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE, Mutex*, const Condition&, Time);
REAL(void, _ZN4absl${ns}5Mutex8LockWhenERKNS0_9ConditionE, Mutex*, const Condition&);
REAL(void, _ZN4absl${ns}12Notification6NotifyEv, Notification*);
REAL(void, _ZNK4absl${ns}12Notification19WaitForNotificationEv, const Notification*);
REAL(bool, _ZNK4absl${ns}12Notification30WaitForNotificationWithTimeoutENS0_8DurationE, const Notification*, Duration);
REAL(void, _ZN4absl${ns}6Status15UnrefNonInlinedEm, uintptr_t);

namespace {
void Locked(void* m, unsigned flags) { __tsan_mutex_pre_lock(m, flags); __tsan_mutex_post_lock(m, flags, 0); }
void Unlocking(void* m, unsigned flags) { __tsan_mutex_pre_unlock(m, flags); __tsan_mutex_post_unlock(m, flags); }
}  // namespace

extern "C" {
void __wrap__ZN4absl${ns}5Mutex4LockEv(Mutex* m) { __real__ZN4absl${ns}5Mutex4LockEv(m); Locked(m, 0); }
void __wrap__ZN4absl${ns}5Mutex6UnlockEv(Mutex* m) { Unlocking(m, 0); __real__ZN4absl${ns}5Mutex6UnlockEv(m); }
bool __wrap__ZN4absl${ns}5Mutex7TryLockEv(Mutex* m) {
  const bool ok = __real__ZN4absl${ns}5Mutex7TryLockEv(m);
  if (ok) Locked(m, __tsan_mutex_try_lock);
  return ok;
}
void __wrap__ZN4absl${ns}5Mutex10ReaderLockEv(Mutex* m) { __real__ZN4absl${ns}5Mutex10ReaderLockEv(m); Locked(m, __tsan_mutex_read_lock); }
void __wrap__ZN4absl${ns}5Mutex12ReaderUnlockEv(Mutex* m) { Unlocking(m, __tsan_mutex_read_lock); __real__ZN4absl${ns}5Mutex12ReaderUnlockEv(m); }
void __wrap__ZN4absl${ns}5MutexD1Ev(Mutex* m) { __tsan_mutex_destroy(m, 0); __real__ZN4absl${ns}5MutexD1Ev(m); }
// Await releases the lock while it waits and holds it again on return: tell TSan so. The
// Condition runs inside libabsl meanwhile (see race:libabsl_synchronization in tsan.supp).
void __wrap__ZN4absl${ns}5Mutex5AwaitERKNS0_9ConditionE(Mutex* m, const Condition& c) {
  Unlocking(m, 0); __real__ZN4absl${ns}5Mutex5AwaitERKNS0_9ConditionE(m, c); Locked(m, 0);
}
bool __wrap__ZN4absl${ns}5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(Mutex* m, const Condition& c, Duration d) {
  Unlocking(m, 0);
  const bool ok = __real__ZN4absl${ns}5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(m, c, d);
  Locked(m, 0);
  return ok;
}
bool __wrap__ZN4absl${ns}5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(Mutex* m, const Condition& c, Time t) {
  Unlocking(m, 0);
  const bool ok = __real__ZN4absl${ns}5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(m, c, t);
  Locked(m, 0);
  return ok;
}
void __wrap__ZN4absl${ns}5Mutex8LockWhenERKNS0_9ConditionE(Mutex* m, const Condition& c) {
  __real__ZN4absl${ns}5Mutex8LockWhenERKNS0_9ConditionE(m, c); Locked(m, 0);
}
void __wrap__ZN4absl${ns}12Notification6NotifyEv(Notification* n) {
  __tsan_release(n); __real__ZN4absl${ns}12Notification6NotifyEv(n);
}
void __wrap__ZNK4absl${ns}12Notification19WaitForNotificationEv(const Notification* n) {
  __real__ZNK4absl${ns}12Notification19WaitForNotificationEv(n); __tsan_acquire(const_cast<Notification*>(n));
}
bool __wrap__ZNK4absl${ns}12Notification30WaitForNotificationWithTimeoutENS0_8DurationE(const Notification* n, Duration d) {
  const bool ok = __real__ZNK4absl${ns}12Notification30WaitForNotificationWithTimeoutENS0_8DurationE(n, d);
  if (ok) __tsan_acquire(const_cast<Notification*>(n));
  return ok;
}
// absl::Status shares its heap rep between copies with a reference count changed inside
// libabsl: each release orders what the thread did before the last owner frees it.
void __wrap__ZN4absl${ns}6Status15UnrefNonInlinedEm(uintptr_t rep) {
  void* p = reinterpret_cast<void*>(rep);
  __tsan_release(p);
  __tsan_acquire(p);
  __real__ZN4absl${ns}6Status15UnrefNonInlinedEm(rep);
}
}  // extern "C"
SHIM
  g++ -std=c++20 -O1 -g -fsanitize=thread -Wno-return-type-c-linkage -c "$dir/absl_tsan_shim.cc" \
    -o "$dir/absl_tsan_shim.o" || return 1
  local flags="$PWD/$dir/absl_tsan_shim.o"
  for sym in 5Mutex4LockEv 5Mutex6UnlockEv 5Mutex7TryLockEv 5Mutex10ReaderLockEv \
             5Mutex12ReaderUnlockEv 5MutexD1Ev "5Mutex5AwaitERKNS0_9ConditionE" \
             "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE" \
             "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE" \
             "5Mutex8LockWhenERKNS0_9ConditionE" 12Notification6NotifyEv \
             6Status15UnrefNonInlinedEm; do
    flags+=" -Wl,--wrap=_ZN4absl${ns}${sym}"
  done
  for sym in 12Notification19WaitForNotificationEv \
             "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE"; do
    flags+=" -Wl,--wrap=_ZNK4absl${ns}${sym}"
  done
  echo "$flags"
}

asan_stage() {
  local t0=$SECONDS
  step "asan: configure" quiet cmake -S . -B "$ASAN_DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="$SANITIZER_DEBUG_FLAGS" -DKVSERVE_SANITIZE=ON \
    -DCMAKE_CXX_FLAGS="-fno-sanitize-recover=undefined $GCC_SANITIZER_WARNINGS" || return 0
  write_suppressions "$ASAN_DIR"
  # Only the unit and integration test binaries (and what they depend on): no benchmarks,
  # no e2e-only tools.
  local targets
  mapfile -t targets < <(labelled_tests unit integration -- $ASAN_SKIP_DIRS)
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

# labelled_tests LABEL... [-- SKIP_DIR...]: the kvserve_cc_test targets under tests/ with any
# of the labels, outside the SKIP_DIRs (read from the CMakeLists, as the binaries that would
# tell ctest are not built yet).
labelled_tests() {
  local labels=() skip=()
  while [[ $# -gt 0 && "$1" != -- ]]; do labels+=("$1"); shift; done
  [[ $# -gt 0 ]] && shift
  skip=("$@")
  local want=" ${labels[*]} "
  local files=()
  mapfile -t files < <(find tests -name CMakeLists.txt | sort)
  local f d keep
  for f in "${files[@]}"; do
    keep=1
    for d in "${skip[@]}"; do [[ "$f" == "$d"/* ]] && keep=0; done
    [[ $keep == 1 ]] && printf '%s\0' "$f"
  done | xargs -0 cat | awk -v want="$want" '
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
  mkdir -p "$TSAN_DIR"
  local shim_flags
  shim_flags=$(write_absl_tsan_shim "$TSAN_DIR") || { failures+=("tsan: absl shim"); return 0; }
  step "tsan: configure" quiet cmake -S . -B "$TSAN_DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="$SANITIZER_DEBUG_FLAGS" \
    -DCMAKE_CXX_FLAGS="-fsanitize=thread $GCC_SANITIZER_WARNINGS" \
    -DCMAKE_EXE_LINKER_FLAGS="$shim_flags" || return 0
  write_suppressions "$TSAN_DIR"
  # Only the selected test binaries are built; ctest -L below then runs exactly those
  # (a binary that is not built shows up only as an unlabelled <target>_NOT_BUILT test).
  local all targets=()
  all=$(ninja -C "$TSAN_DIR" -t targets all 2>/dev/null | sed -n 's/^\([A-Za-z0-9_-]*\): .*/\1/p' | sort -u)
  mapfile -t targets < <({ grep -E "^[A-Za-z0-9_]*($TSAN_TEST_REGEX)[A-Za-z0-9_]*_test$" <<<"$all" |
                             grep -v '^cmake_'  # CMake's object-order pseudo-targets.
                           if [[ "${TSAN_WITH_INTEGRATION:-0}" == 1 ]]; then
                             labelled_tests integration
                           fi; } | sort -u)
  if [[ ${#targets[@]} -eq 0 ]]; then
    echo "sanitize.sh: no test target matches '$TSAN_TEST_REGEX'" >&2
    failures+=("tsan: no targets")
    return 0
  fi
  # The integration tests also start the kvserve binary.
  if [[ "${TSAN_WITH_INTEGRATION:-0}" == 1 ]] && grep -qx kvserve <<<"$all"; then
    targets+=(kvserve)
  fi
  echo "tsan targets: ${targets[*]}"
  step "tsan: build" build "$TSAN_DIR" "${targets[@]}" || true
  local labels=unit
  if [[ "${TSAN_WITH_INTEGRATION:-0}" == 1 ]]; then labels='unit|integration'; fi
  # OMP_THREAD_LIMIT=1: the engine computes on the engine thread alone. This stage checks our
  # threads (queue, engine loop, streams); OpenMP's workers are ordered by libgomp barriers
  # TSan cannot see, and on long tests their stacks grow too old to restore, so the libgomp
  # suppressions cannot match and false reports fail tests (seen on 2026-12-02 in
  # EngineLoopTest.PreemptionLosesNothingAndChangesNoToken). SetComputeThreads respects the
  # limit (EngineReferenceTest.Under_OMP_THREAD_LIMIT proves the output is unchanged).
  # history_size=7: enough memory to restore old stacks for the reports that remain.
  OMP_THREAD_LIMIT=1 TSAN_OPTIONS="suppressions=$PWD/$TSAN_DIR/tsan.supp:halt_on_error=1:second_deadlock_stack=1:history_size=7" \
    step "tsan: ctest" \
    ctest --test-dir "$TSAN_DIR" -L "$labels" --output-on-failure -j "$TSAN_TEST_JOBS" \
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
