#include "engine/compute/bf16_gemv.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <type_traits>

#include "engine/compute/gemv_partition.h"

// GCC 12 reports false -W(maybe-)uninitialized errors inside its own AVX-512 intrinsic headers
// (the `_mm512_undefined_*()` pass-through operand of unmasked intrinsics) once inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace kvserve::engine {
namespace {

// Rows per register tile: kMaxTileRows x (n_block / 16) accumulators <= 24 of the 32 zmm
// registers, leaving room for the weight vectors and the broadcast activation pair.
constexpr int kMaxTileRows = 6;
constexpr int kMaxVectors = 4;  // n_block / 16.

}  // namespace

int64_t Bf16GemvChunkRows(int64_t k) {
  if (k <= 512) return (k + 1) / 2 * 2;
  return k <= 1024 ? 512 : 1024;
}

bool Bf16GemvSupportsLayout(const Bf16PackedLayout& l) {
  if (l.k <= 0 || l.n <= 0 || l.k_chunk <= 0 || l.k_chunk % 2 != 0) return false;
  if (l.n_block < 16 || l.n_block > 16 * kMaxVectors || l.n_block % 16 != 0) return false;
  // A column block holds at least ceil(k / 2) pairs of n_block * 2 values.
  const int64_t pairs = (l.k + 1) / 2;
  return l.n_block_stride >= pairs * l.n_block * 2;
}

#if defined(__AVX512F__) && defined(__AVX512BF16__)

namespace {

// The activation pair (x[2p], x[2p+1]) as one 32-bit lane value, for broadcasting.
inline uint32_t Pair(const uint16_t* x, int64_t p) {
  uint32_t v;
  std::memcpy(&v, x + 2 * p, sizeof(v));
  return v;
}

// K pairs of one column block that all row tiles run through before the next span: 64 pairs of
// up to 64 columns are 16 KiB of weights, which stay in L1 for the second and later tiles, so
// the weights come from DRAM once per call whatever the row count.
constexpr int64_t kSpanPairs = 64;

// The accumulators of one register tile, parked in memory between spans (storing and reloading
// an f32 changes no bit, so the sums are those of one unbroken register run): room for the
// largest tile, vector (r, v) at (r * NV + v) * 16.
struct TileSums {
  alignas(64) float v[kMaxTileRows * kMaxVectors * 16];
};

// One register tile, R rows x NV * 16 columns of one column block, over K pairs [p0, p1):
// sums continue from `sums` (or from zero when `fresh`) and are written back there.
// x is bf16 (uint16_t: one vdpbf16ps per pair) or bf16-valued f32 (float: FMAs, see
// Bf16GemvFma: per pair the odd K row's product is added first, then the even one's, each
// rounded once, which is what vdpbf16ps does, so both give the same bits).
template <typename X, int R, int NV>
void TileSpan(const uint16_t* wb, int64_t p0, int64_t p1, const X* x, int64_t x_stride,
              TileSums& sums, bool fresh, bool prefetch,
              int64_t prefetch_phase, int64_t prefetch_step) {
  constexpr int64_t kPairElems = NV * 32;  // n_block columns x 2 K rows.
  __m512 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      acc[r][v] = fresh ? _mm512_setzero_ps() : _mm512_load_ps(sums.v + (r * NV + v) * 16);
    }
  }
  for (int64_t p = p0; p < p1; ++p) {
    const uint16_t* wp = wb + p * kPairElems;
    if (prefetch && (p - p0) % prefetch_step == prefetch_phase) {
      // The next span's weights (one 64-byte line per 16 columns of a pair), asked for while
      // this span computes, every prefetch_step-th pair by each of the span's prefetch_step
      // tiles: spread over the whole span, the requests keep DRAM busy while the FMAs run
      // (measured: 16-row decode +22% over the first tile asking for all of them; the
      // hardware prefetcher alone leaves the first tile waiting on DRAM).
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        _mm_prefetch(reinterpret_cast<const char*>(wp + kSpanPairs * kPairElems + v * 32),
                     _MM_HINT_T0);
      }
    }
    if constexpr (std::is_same_v<X, uint16_t>) {
      __m512bh w[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        w[v] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wp + v * 32));
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512bh xb = reinterpret_cast<__m512bh>(
            _mm512_set1_epi32(static_cast<int>(Pair(x + r * x_stride, p))));
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], xb, w[v]);
      }
    } else {
      const __m512i high_half = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
      __m512 w[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        w[v] = _mm512_castsi512_ps(_mm512_and_si512(_mm512_loadu_si512(wp + v * 32), high_half));
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512 xo = _mm512_set1_ps(x[r * x_stride + 2 * p + 1]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(xo, w[v], acc[r][v]);
      }
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        w[v] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512(wp + v * 32), 16));
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512 xe = _mm512_set1_ps(x[r * x_stride + 2 * p]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(xe, w[v], acc[r][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm512_store_ps(sums.v + (r * NV + v) * 16, acc[r][v]);
  }
}

// Ends a K chunk of one tile: y = chunk sum (first chunk) or y + chunk sum, oneDNN's order.
// Only the `cols` <= NV * 16 real columns of the block are read and written.
template <int R, int NV>
void StoreTile(const TileSums& sums, bool first_chunk, float* y, int64_t y_stride,
               int64_t cols) {
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const int64_t live = std::clamp<int64_t>(cols - v * 16, 0, 16);
    const auto mask = static_cast<__mmask16>((1u << live) - 1);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      float* yr = y + r * y_stride + v * 16;
      __m512 sum = _mm512_load_ps(sums.v + (r * NV + v) * 16);
      if (!first_chunk) sum = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, yr), sum);
      _mm512_mask_storeu_ps(yr, mask, sum);
    }
  }
}

// Calls f.template operator()<R>() with R = rows (1..kMaxTileRows), the tile's row count as a
// template argument.
template <typename F>
void WithTileRows(int64_t rows, F&& f) {
  switch (rows) {
    case 1: f.template operator()<1>(); break;
    case 2: f.template operator()<2>(); break;
    case 3: f.template operator()<3>(); break;
    case 4: f.template operator()<4>(); break;
    case 5: f.template operator()<5>(); break;
    default: f.template operator()<6>(); break;
  }
}

// Row tiles one BlocksNv call keeps sums for (36 KiB of stack per thread); RunBlocks splits
// larger m into groups of kMaxTiles * kMaxTileRows rows, each streaming the weights again.
constexpr int64_t kMaxTiles = 24;

// Column blocks [b0, b1) of the layout for all m rows with NV vectors per block, m split into
// register tiles of at most kMaxTileRows rows (balanced); per K chunk, span by span, every
// tile runs the span before the next one starts.
template <typename X, int NV>
void BlocksNv(const Bf16PackedLayout& l, const uint16_t* w, const X* x, int64_t m,
              int64_t x_stride, float* y, int64_t y_stride, int64_t b0, int64_t b1) {
  const int64_t pairs = (l.k + 1) / 2;
  const int64_t chunk_pairs = l.k_chunk / 2;
  const int64_t tiles = (m + kMaxTileRows - 1) / kMaxTileRows;  // <= kMaxTiles (caller).
  TileSums sums[kMaxTiles];
  int64_t tile_rows[kMaxTiles], tile_row0[kMaxTiles];
  for (int64_t t = 0, row = 0; t < tiles; ++t) {
    tile_rows[t] = (m - row) / (tiles - t);  // Spread m over the tiles evenly.
    tile_row0[t] = row;
    row += tile_rows[t];
  }
  for (int64_t b = b0; b < b1; ++b) {
    const uint16_t* wb = w + b * l.n_block_stride;
    const int64_t col0 = b * l.n_block;
    const int64_t cols = std::min(l.n_block, l.n - col0);
    for (int64_t c0 = 0; c0 < pairs; c0 += chunk_pairs) {
      const int64_t c1 = std::min(pairs, c0 + chunk_pairs);
      for (int64_t s0 = c0; s0 < c1; s0 += kSpanPairs) {
        const int64_t s1 = std::min(c1, s0 + kSpanPairs);
        for (int64_t t = 0; t < tiles; ++t) {
          // Tile t of `tiles` prefetches every tiles-th pair of the next span; nothing beyond
          // the block's weights (the last span asks for nothing).
          WithTileRows(tile_rows[t], [&]<int R>() {
            TileSpan<X, R, NV>(wb, s0, s1, x + tile_row0[t] * x_stride, x_stride, sums[t],
                               s0 == c0, s1 + kSpanPairs <= pairs, t, tiles);
          });
        }
      }
      for (int64_t t = 0; t < tiles; ++t) {
        WithTileRows(tile_rows[t], [&]<int R>() {
          StoreTile<R, NV>(sums[t], c0 == 0, y + tile_row0[t] * y_stride + col0, y_stride, cols);
        });
      }
    }
  }
}

template <typename X>
void RunBlocks(const Bf16PackedLayout& l, const uint16_t* w, const X* x, int64_t m,
               int64_t x_stride, float* y, int64_t y_stride) {
  const int64_t blocks = (l.n + l.n_block - 1) / l.n_block;
  ForEachGemvBlockRange(blocks, l.n * l.k * 2, [&](int64_t begin, int64_t end) {
    constexpr int64_t kGroupRows = kMaxTiles * kMaxTileRows;
    for (int64_t g = 0; g < m; g += kGroupRows) {
      const int64_t rows = std::min(kGroupRows, m - g);
      const X* xg = x + g * x_stride;
      float* yg = y + g * y_stride;
      switch (l.n_block / 16) {
        case 1: BlocksNv<X, 1>(l, w, xg, rows, x_stride, yg, y_stride, begin, end); break;
        case 2: BlocksNv<X, 2>(l, w, xg, rows, x_stride, yg, y_stride, begin, end); break;
        case 3: BlocksNv<X, 3>(l, w, xg, rows, x_stride, yg, y_stride, begin, end); break;
        default: BlocksNv<X, 4>(l, w, xg, rows, x_stride, yg, y_stride, begin, end); break;
      }
    }
  });
}

// Sustained GFLOP/s of `op` (24 independent accumulators, as in the tiles) on this thread.
template <typename Op>
double PeakRate(Op op) {
  constexpr int kIters = 20000;
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    __m512 acc[24];
    for (auto& a : acc) a = _mm512_setzero_ps();
    __m512 b = _mm512_set1_ps(1e-3f);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kIters; ++i) {
#pragma GCC unroll 24
      for (auto& a : acc) a = op(a, b);
      asm volatile("" : "+v"(b));  // Keeps the loop from being folded.
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    float sink = 0;
    for (const auto& a : acc) sink += _mm512_reduce_add_ps(a);
    asm volatile("" : : "x"(sink));
    best = std::max(best, kIters * 24 * 64.0 / s / 1e9);  // Both ops below are 64 flops.
  }
  return best;
}

}  // namespace

Bf16GemvMethod FasterBf16GemvMethod() {
  static const Bf16GemvMethod method = [] {
    if (!Bf16GemvAvailable()) return Bf16GemvMethod::kDot;
    const double dot = PeakRate([](__m512 a, __m512 b) {
      const __m512bh bh = reinterpret_cast<__m512bh>(b);
      return _mm512_dpbf16_ps(a, bh, bh);
    });
    const double fma = PeakRate([](__m512 a, __m512 b) {
      return _mm512_fmadd_ps(b, b, _mm512_fmadd_ps(b, b, a));  // Two FMAs = one vdpbf16ps.
    });
    // Only a clear win is worth leaving oneDNN's instruction for.
    return fma > 1.25 * dot ? Bf16GemvMethod::kFma : Bf16GemvMethod::kDot;
  }();
  return method;
}

bool Bf16GemvAvailable() {
  static const bool available =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  return available;
}

void Bf16Gemv(const Bf16PackedLayout& l, const uint16_t* w, const uint16_t* x, int64_t m,
              int64_t x_stride, float* y, int64_t y_stride) {
  RunBlocks(l, w, x, m, x_stride, y, y_stride);
}

void Bf16GemvFma(const Bf16PackedLayout& l, const uint16_t* w, const float* x, int64_t m,
                 int64_t x_stride, float* y, int64_t y_stride) {
  RunBlocks(l, w, x, m, x_stride, y, y_stride);
}

#else  // No AVX512-BF16 at compile time: never available, never called.

bool Bf16GemvAvailable() { return false; }

Bf16GemvMethod FasterBf16GemvMethod() { return Bf16GemvMethod::kDot; }

void Bf16Gemv(const Bf16PackedLayout&, const uint16_t*, const uint16_t*, int64_t, int64_t, float*,
              int64_t) {}

void Bf16GemvFma(const Bf16PackedLayout&, const uint16_t*, const float*, int64_t, int64_t, float*,
                 int64_t) {}

#endif

}  // namespace kvserve::engine
