#!/usr/bin/env bash
# Issue 3's serving benchmarks in one run, printed as markdown on stdout (progress on stderr):
#   (a) bundled model (models/stories260K.gguf): output tokens/s at concurrency 1/4/16/32,
#       in-process (kvserve-bench --model) and through a real kvserve over loopback gRPC;
#   (b) synthetic TinyLlama-1.1B-shaped model, in-process, --threads 2, bf16 and f32 weights;
#   (c) prefix caching: TTFT p50 with and without a 256-token prompt prefix shared by every
#       request (bundled model in-process and through the server; TinyLlama bf16 in-process);
#   (d) bundled model through the server at concurrency 64 for 1000 requests: nothing lost;
#   (e) LazyLLM: TTFT p50 of a 2,000-token prompt on the TinyLlama shape, in-process,
#       --threads 2, bf16, full cache vs the default lazyllm spec (one prefill step each).
#
# Usage: scripts/bench_serving.sh [--build-dir DIR] [--work-dir DIR] [--quick] [--sections abcde]
#   --build-dir  where kvserve, kvserve-bench and kvserve-make-model are (default: build)
#   --work-dir   cache for the synthetic model, JSON reports and logs (default /tmp/kvserve-bench)
#   --quick      a fraction of the requests, to check the script itself (numbers are noisy);
#                (e) then runs on the bundled model with 400-token prompts (context 512)
#   --sections   which tables to produce (default abcde)
# Environment: OMP_WAIT_POLICY defaults to PASSIVE here (see client/README.md: on a shared or
# oversubscribed machine, spinning OpenMP threads stall engine steps by a scheduler slice).
# Takes about 10-15 minutes on 2 cores; the TinyLlama model (2.2 GB) is generated once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="$ROOT/build"
WORK="/tmp/kvserve-bench"
QUICK=0
SECTIONS="abcde"
B_WAVES="${B_WAVES:-1}"  # (b): waves of C requests per concurrency level.
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) BUILD_DIR="$(cd "$2" && pwd)"; shift 2 ;;
    --work-dir) WORK="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --sections) SECTIONS="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

BENCH="$BUILD_DIR/kvserve-bench"
SERVER="$BUILD_DIR/kvserve"
MAKE_MODEL="$BUILD_DIR/kvserve-make-model"
[[ -x "$MAKE_MODEL" ]] || MAKE_MODEL="$BUILD_DIR/tools/kvserve-make-model"
SMALL_MODEL="$ROOT/models/stories260K.gguf"
TINYLLAMA="$WORK/tinyllama-f16.gguf"
PYTHON=/usr/bin/python3
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

mkdir -p "$WORK/reports" "$WORK/logs"
log() { echo "[bench_serving $(date +%T)] $*" >&2; }
need() { [[ -x "$1" ]] || { echo "missing $1: build it first (cmake --build $BUILD_DIR --target $(basename "$1"))" >&2; exit 2; }; }
has() { [[ "$SECTIONS" == *"$1"* ]]; }
need "$BENCH"
if has a || has c || has d; then need "$SERVER"; fi

# Scales a request count down in --quick mode (never below the concurrency).
n_requests() {  # n_requests FULL CONCURRENCY
  local n="$1"
  if [[ $QUICK == 1 ]]; then n=$(( n / 4 )); fi
  (( n < $2 )) && n="$2"
  echo "$n"
}

# run_bench NAME ARGS...: runs kvserve-bench --json, keeps the report in $WORK/reports/NAME.json.
run_bench() {
  local name="$1"; shift
  log "kvserve-bench $*"
  local rc=0
  "$BENCH" "$@" --json > "$WORK/reports/$name.json" 2> "$WORK/logs/$name.log" || rc=$?
  if [[ $rc -ne 0 && $rc -ne 1 ]]; then  # 1 = a request was lost: still a report.
    echo "kvserve-bench failed (exit $rc); see $WORK/logs/$name.log:" >&2
    tail -5 "$WORK/logs/$name.log" >&2
    exit 1
  fi
}

# field NAME EXPR [FORMAT]: a value from report NAME, e.g. field a-c1 'r["output_tokens_per_s"]';
# floats are printed with FORMAT (default .1f).
field() {
  "$PYTHON" - "$WORK/reports/$1.json" "$2" "${3:-.1f}" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
v = eval(sys.argv[2], {}, {"r": r})
print(format(v, sys.argv[3]) if isinstance(v, float) else v)
EOF
}
ratio() { "$PYTHON" -c "import sys; a, b = map(float, sys.argv[1:]); print(f'{a / b:.2f}' if b else 'n/a')" "$1" "$2"; }
ms() { field "$1" "($2) * 1000"; }  # ms NAME EXPR: a value in seconds, shown in ms.

# Server lifecycle: one kvserve on 127.0.0.1:0 at a time, stopped on exit.
SERVER_PID=""
SERVER_ADDR=""
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT
start_server() {  # start_server MODEL [FLAGS...]
  local model="$1"; shift
  local out="$WORK/logs/server.out"
  : > "$out"
  "$SERVER" --model "$model" --listen 127.0.0.1:0 "$@" > "$out" 2> "$WORK/logs/server.err" &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    SERVER_ADDR="$(sed -n 's/^kvserve listening on //p' "$out" | head -1)"
    [[ -n "$SERVER_ADDR" ]] && { log "kvserve $* serving $model on $SERVER_ADDR"; return 0; }
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "kvserve did not start; see $WORK/logs/server.err:" >&2
  tail -5 "$WORK/logs/server.err" >&2
  exit 1
}

CONCURRENCIES=(1 4 16 32)
START_LOAD="$(uptime)"
START_TIME=$SECONDS

echo "# kvserve serving benchmarks"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
echo "- machine: $(nproc) CPUs, $("$PYTHON" -c "import platform; print(platform.processor() or platform.machine())") ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(free -g | awk '/^Mem:/{print $2}') GiB RAM"
echo "- OMP_WAIT_POLICY=$OMP_WAIT_POLICY; binaries from $BUILD_DIR$([[ $QUICK == 1 ]] && echo '; QUICK MODE (few requests)')"
echo "- uptime at start: \`$START_LOAD\`"
echo

# --- (a) bundled model, in-process and over gRPC -------------------------------------------------
if has a; then
  A_FLAGS=(--prompt-tokens 32 --max-tokens 64 --seed 1)
  for c in "${CONCURRENCIES[@]}"; do
    n=$(n_requests $(( c < 4 ? 64 : 16 * c )) "$c")
    run_bench "a-inproc-c$c" --model "$SMALL_MODEL" --threads 2 --concurrency "$c" \
      --requests "$n" --warmup "$c" "${A_FLAGS[@]}"
  done
  start_server "$SMALL_MODEL" --threads 2
  for c in "${CONCURRENCIES[@]}"; do
    n=$(n_requests $(( c < 4 ? 64 : 16 * c )) "$c")
    run_bench "a-grpc-c$c" --server "$SERVER_ADDR" --concurrency "$c" \
      --requests "$n" --warmup "$c" "${A_FLAGS[@]}"
  done
  stop_server

  echo "## (a) Bundled model (stories260K), output tokens/s by concurrency"
  echo
  echo "Closed loop, prompt 32 random tokens, max_tokens 64, greedy, 2 engine threads;"
  echo "max(64, 16 x C) measured requests after C warmup requests. In-process = \`kvserve-bench --model\`"
  echo "(engine + queue + engine loop, no gRPC); server = \`kvserve\` on 127.0.0.1 driven over gRPC."
  echo
  echo "| concurrency | in-process tok/s | vs C=1 | in-process TTFT p50 ms | server tok/s | vs C=1 | server TTFT p50 ms | server / in-process |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
  base_in="$(field a-inproc-c1 'r["output_tokens_per_s"]')"
  base_rpc="$(field a-grpc-c1 'r["output_tokens_per_s"]')"
  for c in "${CONCURRENCIES[@]}"; do
    tin="$(field "a-inproc-c$c" 'r["output_tokens_per_s"]')"
    trpc="$(field "a-grpc-c$c" 'r["output_tokens_per_s"]')"
    echo "| $c | $tin | $(ratio "$tin" "$base_in")x | $(ms "a-inproc-c$c" 'r["ttft_s"]["p50"]') | $trpc | $(ratio "$trpc" "$base_rpc")x | $(ms "a-grpc-c$c" 'r["ttft_s"]["p50"]') | $(ratio "$trpc" "$tin") |"
  done
  echo
fi

# --- (b) synthetic TinyLlama-1.1B shape, in-process ---------------------------------------------
ensure_tinyllama() {
  if [[ ! -s "$TINYLLAMA" ]]; then
    need "$MAKE_MODEL"
    log "writing $TINYLLAMA (random weights, TinyLlama-1.1B shape)"
    "$MAKE_MODEL" --preset tinyllama-1.1b --dtype f16 --out "$TINYLLAMA.tmp" >&2
    mv "$TINYLLAMA.tmp" "$TINYLLAMA"
  fi
}
if has b; then
  ensure_tinyllama
  B_FLAGS=(--model "$TINYLLAMA" --threads 2 --prompt-tokens 64 --max-tokens 32 --seed 1
           --timeout 1800)
  for wt in bf16 f32; do
    for c in "${CONCURRENCIES[@]}"; do
      # B_WAVES x C requests (2 at C = 1). In a closed loop of equal-length requests the C
      # streams stay in step (each wave prefills together, then decodes together), so one
      # wave already measures the steady state; more waves only cost time.
      n=$(n_requests $(( c == 1 ? 2 : B_WAVES * c )) "$c")
      run_bench "b-$wt-c$c" "${B_FLAGS[@]}" --weight-type "$wt" --concurrency "$c" --requests "$n"
    done
  done

  echo "## (b) Synthetic TinyLlama-1.1B shape (random f16 weights), in-process, output tokens/s"
  echo
  echo "dim 2048, 22 layers, 32 heads / 4 KV heads, FFN 5632, vocab 32000; \`kvserve-bench --model"
  echo "tinyllama-f16.gguf --threads 2 --weight-type bf16|f32\`, closed loop, prompt 64 random tokens,"
  echo "max_tokens 32 (random weights rarely produce EOS), 2 requests at C=1, $B_WAVES x C requests otherwise."
  echo
  echo "| concurrency | bf16 tok/s | bf16 vs C=1 | bf16 TTFT p50 s | bf16 ITL p50 ms | f32 tok/s | f32 vs C=1 | f32 TTFT p50 s | f32 ITL p50 ms |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  base_bf="$(field b-bf16-c1 'r["output_tokens_per_s"]')"
  base_f32="$(field b-f32-c1 'r["output_tokens_per_s"]')"
  for c in "${CONCURRENCIES[@]}"; do
    tbf="$(field "b-bf16-c$c" 'r["output_tokens_per_s"]')"
    tf="$(field "b-f32-c$c" 'r["output_tokens_per_s"]')"
    echo "| $c | $tbf | $(ratio "$tbf" "$base_bf")x | $(field "b-bf16-c$c" 'r["ttft_s"]["p50"]' .2f) | $(ms "b-bf16-c$c" 'r["itl_s"]["p50"]') | $tf | $(ratio "$tf" "$base_f32")x | $(field "b-f32-c$c" 'r["ttft_s"]["p50"]' .2f) | $(ms "b-f32-c$c" 'r["itl_s"]["p50"]') |"
  done
  echo

  # The same with longer answers (max_tokens 256): how batching pays once decode, not the
  # prompts' prefill, is most of the work. bf16 only.
  for c in 1 16; do
    n=$(n_requests $(( c == 1 ? 2 : B_WAVES * c )) "$c")
    run_bench "b-long-c$c" --model "$TINYLLAMA" --threads 2 --prompt-tokens 64 --max-tokens 256 \
      --seed 1 --timeout 1800 --weight-type bf16 --concurrency "$c" --requests "$n"
  done
  echo "Longer answers (same model and flags, bf16, max_tokens 256):"
  echo
  echo "| concurrency | tok/s | vs C=1 | TTFT p50 s | ITL p50 ms |"
  echo "|---:|---:|---:|---:|---:|"
  base_long="$(field b-long-c1 'r["output_tokens_per_s"]')"
  for c in 1 16; do
    t="$(field "b-long-c$c" 'r["output_tokens_per_s"]')"
    echo "| $c | $t | $(ratio "$t" "$base_long")x | $(field "b-long-c$c" 'r["ttft_s"]["p50"]' .2f) | $(ms "b-long-c$c" 'r["itl_s"]["p50"]') |"
  done
  echo
fi

# --- (c) prefix caching: TTFT with and without a shared 256-token prefix ------------------------
if has c; then
  # Concurrency 1 so TTFT is the request's own prefill; one warmup request (same prefix) fills
  # the prefix cache before measuring, in both runs alike.
  C_FLAGS=(--prompt-tokens 288 --max-tokens 4 --concurrency 1 --warmup 1 --seed 3)
  n_small=$(n_requests 32 1)
  run_bench c-small-inproc-cold --model "$SMALL_MODEL" --threads 2 --requests "$n_small" "${C_FLAGS[@]}"
  run_bench c-small-inproc-warm --model "$SMALL_MODEL" --threads 2 --requests "$n_small" "${C_FLAGS[@]}" \
    --shared-prefix-tokens 256
  start_server "$SMALL_MODEL" --threads 2
  run_bench c-small-grpc-cold --server "$SERVER_ADDR" --requests "$n_small" "${C_FLAGS[@]}"
  run_bench c-small-grpc-warm --server "$SERVER_ADDR" --requests "$n_small" "${C_FLAGS[@]}" \
    --shared-prefix-tokens 256
  stop_server
  ensure_tinyllama
  n_big=$(n_requests 3 1)
  run_bench c-tiny-inproc-cold --model "$TINYLLAMA" --threads 2 --weight-type bf16 --timeout 1800 \
    --requests "$n_big" "${C_FLAGS[@]}"
  run_bench c-tiny-inproc-warm --model "$TINYLLAMA" --threads 2 --weight-type bf16 --timeout 1800 \
    --requests "$n_big" "${C_FLAGS[@]}" --shared-prefix-tokens 256

  echo "## (c) Prefix caching: time to first token, 288-token prompts"
  echo
  echo "Concurrency 1, max_tokens 4, one warmup request first. \"Shared\": every prompt starts with"
  echo "the same 256 tokens (\`--shared-prefix-tokens 256\`), then 32 random ones; \"unshared\": 288"
  echo "random tokens. With the prefix cached only the last 32 tokens are prefilled."
  echo
  echo "| model | target | requests | TTFT p50 unshared ms | TTFT p50 shared ms | gain |"
  echo "|---|---|---:|---:|---:|---:|"
  for row in "stories260K|in-process|c-small-inproc|$n_small" "stories260K|server (gRPC)|c-small-grpc|$n_small" \
             "TinyLlama-1.1B shape, bf16|in-process|c-tiny-inproc|$n_big"; do
    IFS='|' read -r model target name n <<< "$row"
    cold="$(ms "$name-cold" 'r["ttft_s"]["p50"]')"
    warm="$(ms "$name-warm" 'r["ttft_s"]["p50"]')"
    echo "| $model | $target | $n | $cold | $warm | $(ratio "$cold" "$warm")x |"
  done
  echo
fi

# --- (d) 1000 requests at concurrency 64 through the server -------------------------------------
if has d; then
  n=$(n_requests 1000 64)
  start_server "$SMALL_MODEL" --threads 2
  run_bench d-grpc-c64 --server "$SERVER_ADDR" --concurrency 64 --requests "$n" \
    --prompt-tokens 32 --max-tokens 64 --seed 4
  stop_server
  echo "## (d) Bundled model through the server, concurrency 64, $n requests"
  echo
  echo "\`kvserve-bench --server 127.0.0.1:PORT --concurrency 64 --requests $n --prompt-tokens 32 --max-tokens 64\`"
  echo
  echo "| issued | completed | errors | lost | output tok/s | TTFT p50 / p99 ms | e2e p50 / p99 ms |"
  echo "|---:|---:|---|---:|---:|---:|---:|"
  errors="$(field d-grpc-c64 '", ".join(f"{k}={v}" for k, v in r["errors"].items()) or "none"')"
  echo "| $(field d-grpc-c64 'r["issued"]') | $(field d-grpc-c64 'r["completed"]') | $errors | $(field d-grpc-c64 'r["lost"]') | $(field d-grpc-c64 'r["output_tokens_per_s"]') | $(ms d-grpc-c64 'r["ttft_s"]["p50"]') / $(ms d-grpc-c64 'r["ttft_s"]["p99"]') | $(ms d-grpc-c64 'r["e2e_s"]["p50"]') / $(ms d-grpc-c64 'r["e2e_s"]["p99"]') |"
  echo
  lost="$(field d-grpc-c64 'r["lost"]')"
  verdict="every request completed or ended with a defined status"
  [[ "$lost" != 0 ]] && verdict="REQUESTS WERE LOST"
  echo "completed $(field d-grpc-c64 'r["completed"]') / errors $(field d-grpc-c64 'r["errored"]') ($errors) / lost $lost: $verdict."
  echo
fi

# --- (e) LazyLLM: TTFT of a long prompt, full cache vs lazyllm ----------------------------------
if has e; then
  # Concurrency 1, so TTFT is the request's own prefill; --max-batch-tokens 2048 puts the whole
  # prompt in one step (LazyLLM prunes per prefill step: chunks would each be pruned alone).
  if [[ $QUICK == 1 ]]; then
    E_MODEL="$SMALL_MODEL"; E_NAME="stories260K"; E_PROMPT=400; E_EXTRA=()
  else
    ensure_tinyllama
    E_MODEL="$TINYLLAMA"; E_NAME="TinyLlama-1.1B shape, bf16"; E_PROMPT=2000
    E_EXTRA=(--weight-type bf16 --timeout 1800)
  fi
  E_FLAGS=(--model "$E_MODEL" --threads 2 --prompt-tokens "$E_PROMPT" --max-tokens 2
           --concurrency 1 --warmup 1 --seed 5 --max-batch-tokens 2048 "${E_EXTRA[@]}")
  n=$(n_requests 5 1)
  [[ $QUICK == 1 ]] && n=3
  run_bench e-full "${E_FLAGS[@]}" --requests "$n" --kv-policy full
  run_bench e-lazy "${E_FLAGS[@]}" --requests "$n" --kv-policy lazyllm

  echo "## (e) LazyLLM: time to first token, $E_PROMPT-token prompt"
  echo
  echo "$E_NAME, in-process, \`--threads 2\`, concurrency 1, one warmup request, $n measured"
  echo "requests, the whole prompt in one prefill step (\`--max-batch-tokens 2048\`). \`lazyllm\` ="
  echo "\`lazyllm:stages=3,first=0.7,keep=0.3\` (prompt rows kept 70% / 50% / 30% after 1/4, 1/2, 3/4"
  echo "of the layers)."
  echo
  echo "| model | KV policy | TTFT p50 ms | TTFT min ms | full / lazyllm |"
  echo "|---|---|---:|---:|---:|"
  full="$(ms e-full 'r["ttft_s"]["p50"]')"
  lazy="$(ms e-lazy 'r["ttft_s"]["p50"]')"
  echo "| $E_NAME | full | $full | $(ms e-full 'r["ttft_s"]["min"]') | |"
  echo "| $E_NAME | $(field e-lazy 'r["kv_policy"]') | $lazy | $(ms e-lazy 'r["ttft_s"]["min"]') | $(ratio "$full" "$lazy")x |"
  echo
fi

echo "- uptime at end: \`$(uptime)\`; total $(( SECONDS - START_TIME )) s"
echo "- JSON reports: $WORK/reports/"
