#include "engine/compute/int8_gemv.h"

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

// As in bf16_gemv.cc: kMaxTileRows x (n_block / 16) accumulators <= 24 zmm registers.
constexpr int kMaxTileRows = 6;
constexpr int kMaxVectors = 4;  // n_block / 16.

}  // namespace

bool Int8GemvSupportsLayout(const Int8PackedLayout& l) {
  if (l.k <= 0 || l.n <= 0) return false;
  if (l.n_block < 16 || l.n_block > 16 * kMaxVectors || l.n_block % 16 != 0) return false;
  const int64_t quads = (l.k + 3) / 4;
  return l.n_block_stride >= quads * l.n_block * 4;
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__)

namespace {

// The activation quad x[4q .. 4q+3] as one 32-bit lane value, for broadcasting.
inline int Quad(const uint8_t* x, int64_t q) {
  int v;
  std::memcpy(&v, x + 4 * q, sizeof(v));
  return v;
}

// One register tile: R rows x NV * 16 columns of one column block over all K quads; `cols`
// <= NV * 16 of the block's columns are real and stored.
template <int R, int NV>
void Tile(const int8_t* wb, int64_t quads, const uint8_t* x, int64_t x_stride, int32_t* acc,
          int64_t acc_stride, int64_t cols) {
  constexpr int64_t kQuadBytes = NV * 64;  // n_block columns x 4 K rows.
  __m512i sum[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) sum[r][v] = _mm512_setzero_si512();
  }
  for (int64_t q = 0; q < quads; ++q) {
    const int8_t* wq = wb + q * kQuadBytes;
    __m512i w[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) w[v] = _mm512_loadu_si512(wq + v * 64);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512i xb = _mm512_set1_epi32(Quad(x + r * x_stride, q));
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) sum[r][v] = _mm512_dpbusd_epi32(sum[r][v], xb, w[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    int32_t* ar = acc + r * acc_stride;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const int64_t live = std::clamp<int64_t>(cols - v * 16, 0, 16);
      _mm512_mask_storeu_epi32(ar + v * 16, static_cast<__mmask16>((1u << live) - 1), sum[r][v]);
    }
  }
}

using TileFn = void (*)(const int8_t*, int64_t, const uint8_t*, int64_t, int32_t*, int64_t,
                        int64_t);

template <int R>
constexpr std::array<TileFn, kMaxVectors> TilesForRows() {
  return {&Tile<R, 1>, &Tile<R, 2>, &Tile<R, 3>, &Tile<R, 4>};
}

// kTiles[R - 1][NV - 1].
constexpr std::array<std::array<TileFn, kMaxVectors>, kMaxTileRows> kTiles = {
    TilesForRows<1>(), TilesForRows<2>(), TilesForRows<3>(),
    TilesForRows<4>(), TilesForRows<5>(), TilesForRows<6>()};

// Column blocks [b0, b1) for all m rows, in register tiles of balanced row counts.
void Blocks(const Int8PackedLayout& l, const int8_t* w, const uint8_t* x, int64_t m,
            int64_t x_stride, int32_t* acc, int64_t acc_stride, int64_t b0, int64_t b1) {
  const int64_t quads = (l.k + 3) / 4;
  const int nv = static_cast<int>(l.n_block / 16);
  const int64_t tiles = (m + kMaxTileRows - 1) / kMaxTileRows;
  for (int64_t b = b0; b < b1; ++b) {
    const int8_t* wb = w + b * l.n_block_stride;
    const int64_t col0 = b * l.n_block;
    const int64_t cols = std::min(l.n_block, l.n - col0);
    int64_t row = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t rows = (m - row) / (tiles - t);  // Spread m over the tiles evenly.
      kTiles[rows - 1][nv - 1](wb, quads, x + row * x_stride, x_stride,
                               acc + row * acc_stride + col0, acc_stride, cols);
      row += rows;
    }
  }
}

}  // namespace

bool Int8GemvAvailable() {
  static const bool available =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni");
  return available;
}

void Int8Gemv(const Int8PackedLayout& l, const int8_t* w, const uint8_t* x, int64_t m,
              int64_t x_stride, int32_t* acc, int64_t acc_stride) {
  const int64_t blocks = (l.n + l.n_block - 1) / l.n_block;
  ForEachGemvBlockRange(blocks, l.n * l.k, [&](int64_t begin, int64_t end) {
    Blocks(l, w, x, m, x_stride, acc, acc_stride, begin, end);
  });
}

#else  // No AVX512-VNNI at compile time: never available, never called.

bool Int8GemvAvailable() { return false; }

void Int8Gemv(const Int8PackedLayout&, const int8_t*, const uint8_t*, int64_t, int64_t, int32_t*,
              int64_t) {}

#endif

}  // namespace kvserve::engine
