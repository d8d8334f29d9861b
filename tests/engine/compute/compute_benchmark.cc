// Micro-benchmarks of kvserve_compute: Linear (oneDNN matmul) at TinyLlama-1.1B shapes and the
// non-matmul ops at realistic sizes. Not a test; run by hand:
//   OMP_NUM_THREADS=2 build/tests/engine/compute/compute_benchmark
// On a shared machine add --benchmark_repetitions=5 and read the best repetition: with OpenMP's
// spinning threads any other runnable process stretches 2-thread calls by up to a time slice.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "engine/compute/amx_gemm.h"
#include "engine/compute/device.h"
#include "engine/compute/linear.h"
#include "engine/compute/ops.h"
#include "engine/model/tensor_data.h"
#include "engine/runtime/kv_cache.h"
#include "engine/runtime/paged_attention.h"

namespace kvserve::engine {
namespace {

// Deterministic, cheap filler in [-1, 1) (mt19937 is slow for 65M values).
std::vector<float> Fill(int64_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t s = seed * 2654435761u + 1;
  for (float& x : v) {
    s = s * 1664525u + 1013904223u;
    x = static_cast<float>(s >> 8) / static_cast<float>(1 << 23) - 1.0f;
  }
  return v;
}

Device& TheDevice() {
  static const std::unique_ptr<Device> device = [] {
    absl::StatusOr<std::unique_ptr<Device>> d = Device::Create(DeviceKind::kCpu);
    if (!d.ok()) std::abort();
    return std::move(*d);
  }();
  return *device;
}

// One packed Linear per (type, N, K, copy), shared by the M variants. (The device is made
// first so that it is destroyed after the Linears.)
Linear& GetLinear(WeightType type, int64_t n, int64_t k, int copy = 0) {
  Device& device = TheDevice();
  static std::map<std::tuple<int, int64_t, int64_t, int>, std::unique_ptr<Linear>> cache;
  auto key = std::make_tuple(static_cast<int>(type), n, k, copy);
  auto it = cache.find(key);
  if (it == cache.end()) {
    const std::vector<float> w = Fill(n * k, static_cast<uint32_t>(n + k + copy));
    TensorData t;
    t.name = "bench.weight";
    t.type = TensorType::kF32;
    t.shape = {n, k};
    t.data = reinterpret_cast<const uint8_t*>(w.data());
    t.size_bytes = w.size() * sizeof(float);
    absl::StatusOr<std::unique_ptr<Linear>> linear = Linear::Create(device, t, type);
    if (!linear.ok()) std::abort();
    it = cache.emplace(key, std::move(*linear)).first;
  }
  return *it->second;
}

WeightType TypeArg(int64_t arg) {
  return arg == 0 ? WeightType::kF32 : arg == 1 ? WeightType::kBf16 : WeightType::kInt8;
}

double BytesPerWeight(WeightType type) {
  return type == WeightType::kF32 ? 4 : type == WeightType::kBf16 ? 2 : 1;
}

// Args: {type (0 f32, 1 bf16, 2 int8), N (out), K (in), M (rows), copies}. With copies > 1
// the calls cycle through that many distinct weight matrices of the shape, so (for enough
// copies) every call streams its weights from DRAM, as a decode step does.
void BM_Linear(benchmark::State& state) {
  const WeightType type = TypeArg(state.range(0));
  const int64_t n = state.range(1), k = state.range(2), m = state.range(3);
  const int copies = static_cast<int>(state.range(4));
  std::vector<Linear*> linears;
  for (int c = 0; c < copies; ++c) linears.push_back(&GetLinear(type, n, k, c));
  const std::vector<float> x = Fill(m * k, 7);
  std::vector<float> y(m * n);
  for (Linear* linear : linears) {
    if (!linear->Forward(x.data(), m, y.data()).ok()) state.SkipWithError("Forward failed");
  }
  size_t i = 0;
  for (auto _ : state) {
    Linear& linear = *linears[i++ % linears.size()];
    if (!linear.Forward(x.data(), m, y.data()).ok()) state.SkipWithError("Forward failed");
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * static_cast<double>(m) * n * k;
  state.counters["GFLOPS"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  const double weight_bytes = static_cast<double>(n) * k * BytesPerWeight(type);
  state.counters["weightGBps"] =
      benchmark::Counter(weight_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(WeightTypeName(type)) + " " + linears[0]->ImplName(m));
}

void LinearArgs(benchmark::internal::Benchmark* b) {
  // TinyLlama-1.1B: wo {2048, 2048}, fused QKV {2560, 2048}, fused gate+up {11264, 2048},
  // down {2048, 5632}, vocabulary {32000, 2048}.
  const int64_t shapes[][2] = {{2048, 2048}, {2560, 2048}, {11264, 2048}, {2048, 5632},
                               {32000, 2048}};
  for (int type : {0, 1, 2}) {
    for (const auto& s : shapes) {
      for (int64_t m : {1, 16, 128, 512}) b->Args({type, s[0], s[1], m, 1});
    }
  }
  b->ArgNames({"type", "N", "K", "M", "copies"});
}
BENCHMARK(BM_Linear)->Apply(LinearArgs)->UseRealTime()->MinTime(0.2);

// Decode-like: weights from DRAM (8 copies of gate+up: 185 MB in bf16, 92 MB in int8).
void LinearDramArgs(benchmark::internal::Benchmark* b) {
  for (int type : {1, 2}) {
    for (int64_t m : {1, 16}) b->Args({type, 11264, 2048, m, 8});
  }
  b->ArgNames({"type", "N", "K", "M", "copies"});
}
BENCHMARK(BM_Linear)->Name("BM_LinearDram")->Apply(LinearDramArgs)->UseRealTime()->MinTime(0.5);

// Decode at TinyLlama-1.1B shapes, weights streamed from DRAM (enough distinct copies of the
// matrix for >= 640 MB per cycle, more than the L3 of any machine seen: up to 480 MB): the Bf16Gemv / Int8Gemv kernel against
// oneDNN's brgemm on the same packed weights, to place Linear::DefaultGemvMaxRows.
// weightGBps is the figure to hold against the machine's read bandwidth (bench/stream_triad.cc).
// Args: {path (0 oneDNN, 1 kernel, 2 bf16 kernel with FMAs: Bf16GemvFma, 3 AMX:
// AmxBf16Gemm / AmxInt8Gemm), N (out), K (in), M (rows), type (1 bf16, 2 int8)}.
void BM_GemvDecode(benchmark::State& state) {
  const bool kernel = state.range(0) >= 1;
  const int64_t n = state.range(1), k = state.range(2), m = state.range(3);
  const WeightType type = TypeArg(state.range(4));
  const double weight_bytes = BytesPerWeight(type) * static_cast<double>(n) * k;
  const int copies = std::max(1, static_cast<int>(std::ceil(640e6 / weight_bytes)));
  std::vector<Linear*> linears;
  Bf16GemvMethod created_method = Bf16GemvMethod::kDot;
  int64_t created_amx_min_rows = 0;
  for (int c = 0; c < copies; ++c) {
    Linear& linear = GetLinear(type, n, k, c);
    created_method = linear.bf16_gemv_method();  // The same for every copy.
    created_amx_min_rows = linear.int8_amx_min_rows();
    if (kernel && linear.gemv_max_rows() == 0) {
      state.SkipWithError("no decode kernel for this type on this CPU");
      return;
    }
    linear.SetGemvMaxRows(kernel ? m : 0);
    if (state.range(0) == 3) {
      if (type == WeightType::kBf16 ? !AmxBf16Available()
                                    : linear.int8_amx_min_rows() > Linear::kMaxBucketRows) {
        state.SkipWithError("no AMX on this CPU");
        return;
      }
      linear.SetBf16GemvMethod(Bf16GemvMethod::kAmx);
      linear.SetInt8AmxMinRows(1);
    } else {
      linear.SetInt8AmxMinRows(Linear::kMaxBucketRows + 1);  // Int8Gemv / oneDNN only.
    }
    if (state.range(0) == 2) linear.SetBf16GemvMethod(Bf16GemvMethod::kFma);
    if (state.range(0) == 1) linear.SetBf16GemvMethod(Bf16GemvMethod::kDot);
    linears.push_back(&linear);
  }
  const std::vector<float> x = Fill(m * k, 7);
  std::vector<float> y(m * n);
  for (Linear* linear : linears) {
    if (!linear->Forward(x.data(), m, y.data()).ok()) state.SkipWithError("Forward failed");
  }
  size_t i = 0;
  for (auto _ : state) {
    Linear& linear = *linears[i++ % linears.size()];
    if (!linear.Forward(x.data(), m, y.data()).ok()) state.SkipWithError("Forward failed");
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["weightGBps"] =
      benchmark::Counter(weight_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(linears[0]->ImplName(m));
  // Leave the shared Linears as Create made them for the other benchmarks.
  for (Linear* linear : linears) {
    linear->SetBf16GemvMethod(created_method);
    linear->SetInt8AmxMinRows(created_amx_min_rows);
    linear->SetGemvMaxRows(linear->default_gemv_max_rows());
  }
}

void GemvDecodeArgs(benchmark::internal::Benchmark* b, int type) {
  // Fused QKV {2560, 2048}, fused gate+up {11264, 2048}, down {2048, 5632}, output
  // {32000, 2048}.
  const int64_t shapes[][2] = {{2560, 2048}, {11264, 2048}, {2048, 5632}, {32000, 2048}};
  for (const auto& s : shapes) {
    for (int64_t m : {1, 2, 3, 4, 6, 8, 12, 16, 64, 256}) {
      for (int path : {0, 1, 2, 3}) {
        if (path != 2 || type == 1) b->Args({path, s[0], s[1], m, type});
      }
    }
  }
  b->ArgNames({"kernel", "N", "K", "M", "type"});
}
BENCHMARK(BM_GemvDecode)
    ->Name("BM_Bf16Decode")
    ->Apply([](benchmark::internal::Benchmark* b) { GemvDecodeArgs(b, 1); })
    ->UseRealTime()
    ->MinTime(0.3);
BENCHMARK(BM_GemvDecode)
    ->Name("BM_Int8Decode")
    ->Apply([](benchmark::internal::Benchmark* b) { GemvDecodeArgs(b, 2); })
    ->UseRealTime()
    ->MinTime(0.3);

void BM_RmsNormRows(benchmark::State& state) {
  const int64_t rows = state.range(0), n = state.range(1);
  const std::vector<float> x = Fill(rows * n, 1), w = Fill(n, 2);
  std::vector<float> out(rows * n);
  for (auto _ : state) {
    RmsNormRows(x.data(), w.data(), rows, n, 1e-5f, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * n * 8);
}
BENCHMARK(BM_RmsNormRows)->Args({1, 2048})->Args({128, 2048});

void BM_ApplyRope(benchmark::State& state) {
  const int64_t heads = state.range(0), head_dim = state.range(1);
  std::vector<float> v = Fill(heads * head_dim, 3);
  for (auto _ : state) {
    ApplyRope(v.data(), heads, head_dim, head_dim, 1000, 10000.0f);
    benchmark::DoNotOptimize(v.data());
  }
}
BENCHMARK(BM_ApplyRope)->Args({32, 64})->Args({4, 64});

void BM_SiluMul(benchmark::State& state) {
  const int64_t n = state.range(0);
  const std::vector<float> g = Fill(n, 4), u = Fill(n, 5);
  std::vector<float> out(n);
  for (auto _ : state) {
    SiluMul(g.data(), u.data(), n, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_SiluMul)->Arg(5632)->Arg(128 * 5632);

void BM_Softmax(benchmark::State& state) {
  const int64_t n = state.range(0);
  const std::vector<float> src = Fill(n, 6);
  std::vector<float> x = src;
  for (auto _ : state) {
    // Softmax is idempotent enough for timing (inputs stay in [0, 1]); no refill needed.
    Softmax(x.data(), n);
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_Softmax)->Arg(2048)->Arg(32000);

void BM_DotAxpy(benchmark::State& state) {
  // One attention head at one context position: a q.k dot and a p*v accumulate.
  const int64_t n = state.range(0);
  const std::vector<float> a = Fill(n, 8), b = Fill(n, 9);
  std::vector<float> y(n);
  for (auto _ : state) {
    const float d = Dot(a.data(), b.data(), n);
    Axpy(d * 1e-3f, a.data(), y.data(), n);
    benchmark::DoNotOptimize(y.data());
  }
}
BENCHMARK(BM_DotAxpy)->Arg(64)->Arg(2048);

// Paged attention at TinyLlama's geometry (32 query heads, 4 KV heads, head_dim 64, blocks
// of 16). Args: {sequences, queries per sequence, context}: decode is {S, 1, ctx} (each
// sequence's query at position ctx - 1), a prefill chunk is {1, ctx, ctx} (positions 0..ctx-1).
void BM_PagedAttention(benchmark::State& state) {
  const int64_t seqs = state.range(0), per_seq = state.range(1), context = state.range(2);
  constexpr int64_t kHeads = 32, kKvHeads = 4, kHeadDim = 64;
  constexpr int32_t kBlock = 16;
  const int64_t blocks_per_seq = (context + kBlock - 1) / kBlock;
  absl::StatusOr<std::unique_ptr<KvCache>> cache = KvCache::Create(
      {.kv_dim = kKvHeads * kHeadDim, .block_size = kBlock,
       .num_blocks = seqs * blocks_per_seq});
  if (!cache.ok()) std::abort();
  std::vector<std::vector<BlockId>> tables(seqs);
  const std::vector<float> kv = Fill(kKvHeads * kHeadDim, 11);
  for (auto& table : tables) {
    for (int64_t b = 0; b < blocks_per_seq; ++b) table.push_back(*(*cache)->Allocate());
    for (int64_t p = 0; p < context; ++p) {
      std::copy(kv.begin(), kv.end(), (*cache)->Key(table[p / kBlock], p % kBlock));
      std::copy(kv.begin(), kv.end(), (*cache)->Value(table[p / kBlock], p % kBlock));
    }
  }
  std::vector<AttentionQuery> queries;
  for (int64_t s = 0; s < seqs; ++s) {
    for (int64_t i = 0; i < per_seq; ++i) {
      queries.push_back({.blocks = &tables[s],
                         .position = static_cast<int32_t>(context - per_seq + i)});
    }
  }
  const std::vector<float> q = Fill(queries.size() * kHeads * kHeadDim, 12);
  std::vector<float> out(q.size());
  PagedAttention attention(
      {.n_heads = kHeads, .n_kv_heads = kKvHeads, .head_dim = kHeadDim, .max_context = context});
  int64_t pairs = 0;  // (query, position) pairs attended.
  for (const AttentionQuery& query : queries) pairs += query.position + 1;
  for (auto _ : state) {
    attention.Forward(**cache, 0, queries, q.data(), out.data());
    benchmark::DoNotOptimize(out.data());
  }
  // q.k and p.v: 2 * 2 * head_dim flops per head per pair.
  state.counters["GFLOPS"] = benchmark::Counter(pairs * kHeads * kHeadDim * 4 * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_PagedAttention)
    ->Args({1, 1, 512})
    ->Args({1, 1, 2048})
    ->Args({16, 1, 512})
    ->Args({1, 512, 512})
    ->ArgNames({"seqs", "per_seq", "context"})
    ->UseRealTime();

}  // namespace
}  // namespace kvserve::engine

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("device", kvserve::engine::TheDevice().Describe());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
