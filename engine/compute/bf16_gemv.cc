#include "engine/compute/bf16_gemv.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstring>

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

// One register tile: R rows x NV * 16 columns of one column block, over all `pairs` K pairs
// in oneDNN's order (see the header): per chunk of chunk_pairs pairs, one vdpbf16ps per pair
// into zeroed accumulators, then y = chunk sum (first chunk) or y + chunk sum. `cols` <=
// NV * 16 of the block's columns are real; only they are read and written in y.
template <int R, int NV>
void Tile(const uint16_t* wb, int64_t pairs, int64_t chunk_pairs, const uint16_t* x,
          int64_t x_stride, float* y, int64_t y_stride, int64_t cols) {
  constexpr int64_t kPairElems = NV * 32;  // n_block columns x 2 K rows.
  __mmask16 mask[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const int64_t live = std::clamp<int64_t>(cols - v * 16, 0, 16);
    mask[v] = static_cast<__mmask16>((1u << live) - 1);
  }
  for (int64_t c0 = 0; c0 < pairs; c0 += chunk_pairs) {
    const int64_t c1 = std::min(pairs, c0 + chunk_pairs);
    __m512 acc[R][NV];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
    }
    for (int64_t p = c0; p < c1; ++p) {
      const uint16_t* wp = wb + p * kPairElems;
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
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      float* yr = y + r * y_stride;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        __m512 sum = acc[r][v];
        if (c0 > 0) sum = _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], yr + v * 16), sum);
        _mm512_mask_storeu_ps(yr + v * 16, mask[v], sum);
      }
    }
  }
}

using TileFn = void (*)(const uint16_t*, int64_t, int64_t, const uint16_t*, int64_t, float*,
                        int64_t, int64_t);

template <int R>
constexpr std::array<TileFn, kMaxVectors> TilesForRows() {
  return {&Tile<R, 1>, &Tile<R, 2>, &Tile<R, 3>, &Tile<R, 4>};
}

// kTiles[R - 1][NV - 1].
constexpr std::array<std::array<TileFn, kMaxVectors>, kMaxTileRows> kTiles = {
    TilesForRows<1>(), TilesForRows<2>(), TilesForRows<3>(),
    TilesForRows<4>(), TilesForRows<5>(), TilesForRows<6>()};

// Column blocks [b0, b1) for all m rows, in register tiles of balanced row counts.
void Blocks(const Bf16PackedLayout& l, const uint16_t* w, const uint16_t* x, int64_t m,
            int64_t x_stride, float* y, int64_t y_stride, int64_t b0, int64_t b1) {
  const int64_t pairs = (l.k + 1) / 2;
  const int64_t chunk_pairs = l.k_chunk / 2;
  const int nv = static_cast<int>(l.n_block / 16);
  const int64_t tiles = (m + kMaxTileRows - 1) / kMaxTileRows;
  for (int64_t b = b0; b < b1; ++b) {
    const uint16_t* wb = w + b * l.n_block_stride;
    const int64_t col0 = b * l.n_block;
    const int64_t cols = std::min(l.n_block, l.n - col0);
    int64_t row = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t rows = (m - row) / (tiles - t);  // Spread m over the tiles evenly.
      kTiles[rows - 1][nv - 1](wb, pairs, chunk_pairs, x + row * x_stride, x_stride,
                               y + row * y_stride + col0, y_stride, cols);
      row += rows;
    }
  }
}

}  // namespace

bool Bf16GemvAvailable() {
  static const bool available =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  return available;
}

void Bf16Gemv(const Bf16PackedLayout& l, const uint16_t* w, const uint16_t* x, int64_t m,
              int64_t x_stride, float* y, int64_t y_stride) {
  const int64_t blocks = (l.n + l.n_block - 1) / l.n_block;
  ForEachGemvBlockRange(blocks, l.n * l.k * 2, [&](int64_t begin, int64_t end) {
    Blocks(l, w, x, m, x_stride, y, y_stride, begin, end);
  });
}

#else  // No AVX512-BF16 at compile time: never available, never called.

bool Bf16GemvAvailable() { return false; }

void Bf16Gemv(const Bf16PackedLayout&, const uint16_t*, const uint16_t*, int64_t, int64_t, float*,
              int64_t) {}

#endif

}  // namespace kvserve::engine
