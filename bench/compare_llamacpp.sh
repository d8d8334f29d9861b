#!/usr/bin/env bash
# kvserve vs llama.cpp on the same TinyLlama-1.1B-shaped GGUF files and the same cores, in
# ONE run, plus the memory-bandwidth roofline. See bench/README.md.
#
#   bench/compare_llamacpp.sh [--build DIR] [--threads 2] [--reps 3] [--pp 512] [--tg 64]
#                             [--seqs 1,16] [--dtypes "f16 q8_0"] [--work /tmp/kvserve-bench]
#
# Needs: a kvserve build with kvserve-make-model and kvserve-engine-bench (cmake --build DIR
# --target kvserve-make-model kvserve-engine-bench), node + npm (for the llama.cpp peer), c++.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$REPO/build
THREADS=2
REPS=3
PP=512
TG=64
SEQS=1,16
DTYPES="f16 q8_0"
WORK=/tmp/kvserve-bench
PEER_DIR=${PEER_DIR:-$(cd "$REPO/.." && pwd)/shared/peer}
export PEER_NPM=${PEER_NPM:-/tmp/peer-npm}

while [ $# -gt 0 ]; do
  case $1 in
    --build) BUILD=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --pp) PP=$2; shift 2 ;;
    --tg) TG=$2; shift 2 ;;
    --seqs) SEQS=$2; shift 2 ;;
    --dtypes) DTYPES=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$WORK"
RESULTS=$WORK/results.jsonl
: > "$RESULTS"

find_binary() {  # The lead's build puts tools at the top of the build dir, or under tools/.
  for f in "$BUILD/$1" "$BUILD/tools/$1" "$BUILD/bench/$1" "$BUILD/tests/engine/compute/$1"; do
    if [ -x "$f" ]; then echo "$f"; return; fi
  done
  echo "missing $1 in $BUILD (cmake --build $BUILD --target $1)" >&2
  exit 1
}
MAKE_MODEL=$(find_binary kvserve-make-model)
ENGINE_BENCH=$(find_binary kvserve-engine-bench)

log() { echo "[compare] $*" >&2; }
record() { echo "$1" >> "$RESULTS"; }

# 1. The llama.cpp peer.
if [ ! -d "$PEER_NPM/node_modules/node-llama-cpp" ]; then
  log "installing the llama.cpp peer into $PEER_NPM"
  sh "$PEER_DIR/install.sh" >&2
fi

# 2. The models (cached: same preset and dtype give an identical file).
for dt in $DTYPES; do
  f=$WORK/tinyllama-$dt.gguf
  if [ ! -s "$f" ]; then
    log "writing $f"
    "$MAKE_MODEL" --preset tinyllama-1.1b --dtype "$dt" --out "$f.tmp" >&2
    mv "$f.tmp" "$f"
  fi
done

# 3. Memory bandwidth (STREAM-like triad, THREADS threads, 3 x 1 GiB arrays).
c++ -O3 -march=native -fopenmp "$REPO/bench/stream_triad.cc" -o "$WORK/stream_triad"
log "load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
record "{\"kind\": \"machine\", \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\", \"cores\": $(nproc), \"loadavg_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
log "memory bandwidth"
record "{\"kind\": \"bandwidth\", \"result\": $(OMP_NUM_THREADS=$THREADS "$WORK/stream_triad" 1024 5)}"

# 4. Both engines on each file, interleaved so that they see the same machine state.
for dt in $DTYPES; do
  f=$WORK/tinyllama-$dt.gguf
  log "llama.cpp bench $dt"
  record "{\"kind\": \"llama_bench\", \"dtype\": \"$dt\", \"result\": $(node "$PEER_DIR/llama_peer.mjs" bench "$f" --pp "$PP" --tg "$TG" --reps "$REPS" --threads "$THREADS" | tr -d '\n')}"
  log "kvserve $dt (auto weight type)"
  record "{\"kind\": \"kvserve\", \"dtype\": \"$dt\", \"result\": $("$ENGINE_BENCH" --model "$f" --weight-type auto --prompt-tokens "$PP" --max-tokens "$TG" --concurrency "$SEQS" --threads "$THREADS" --reps "$REPS" --json 2>/dev/null | grep '^{' | tail -n 1)}"
  log "llama.cpp batch $dt"
  record "{\"kind\": \"llama_batch\", \"dtype\": \"$dt\", \"result\": $(node "$PEER_DIR/llama_peer.mjs" batch "$f" --seqs "$SEQS" --tg "$TG" --reps "$REPS" --threads "$THREADS" | tr -d '\n')}"
done
record "{\"kind\": \"end\", \"loadavg_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"

# 5. The table.
/usr/bin/python3 "$REPO/bench/compare_table.py" "$RESULTS"
