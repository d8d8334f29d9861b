#include "engine/compute/amx_bf16_gemm.h"

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "engine/compute/gemv_partition.h"

// GCC 12 reports false -W(maybe-)uninitialized errors inside its own AVX-512 intrinsic headers
// (the `_mm512_undefined_*()` pass-through operand of unmasked intrinsics) once inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace kvserve::engine {

int64_t AmxBf16PaddedRows(int64_t m) { return m <= 16 ? m : (m + 15) / 16 * 16; }

#if defined(__AVX512F__) && defined(__AMX_TILE__) && defined(__AMX_BF16__)

namespace {

// Linux keeps the 8 KiB AMX tile state off until a process asks (arch_prctl, kernel 5.16+).
constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtiledata = 18;

bool CpuHasAmxBf16() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  constexpr unsigned kAmxBf16 = 1u << 22, kAmxTile = 1u << 24;
  return (edx & kAmxBf16) != 0 && (edx & kAmxTile) != 0;
}

// The LDTILECFG operand (palette 1): tmm0..3 the C accumulators (rows x 16 f32), tmm4 the A
// activations (rows x 32 bf16), tmm5..7 B weight tiles (16 K pairs x 16 columns).
struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void ConfigureTiles(int rows) {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = static_cast<uint8_t>(t <= 4 ? rows : 16);
  }
  _tile_loadconfig(&cfg);
}

// How far ahead (in K steps of 16 pairs: 4 KiB of weights at n_block 64) the first tile row of
// a block asks for its weights. Tile registers are not renamed, so a tile load waits for the
// previous step's products and only about one step of DRAM reads is in flight otherwise;
// measured (compute_benchmark BM_Bf16Decode kernel:3, M = 1, Sapphire Rapids, 2 threads):
// 20-25 GB/s without, 25-29.6 GB/s at 3-4 steps ahead into L1, worse at 8 or into L2 only.
constexpr int64_t kPrefetchSteps = 4;

// One tile row of the output: `rows` x NV * 16 columns of one column block over the whole K,
// into `c` (NV tiles of 16 x 16 f32, row-major per tile). `prefetch`: this is the block's
// first tile row, which streams its weights from DRAM (later ones find them in L2).
template <int NV>
void TileRow(const uint16_t* wb, int64_t k_steps, int64_t n_block, const uint16_t* x,
             int64_t x_stride, float* c, bool prefetch) {
  const int64_t b_stride = n_block * 4;  // Bytes from one K pair to the next.
  const int64_t a_stride = x_stride * 2;
  const int64_t step_elems = 16 * n_block * 2;  // 16 K pairs of the block.
  _tile_zero(0);
  if constexpr (NV > 1) _tile_zero(1);
  if constexpr (NV > 2) _tile_zero(2);
  if constexpr (NV > 3) _tile_zero(3);
  for (int64_t s = 0; s < k_steps; ++s) {
    const uint16_t* ws = wb + s * step_elems;
    if (prefetch) {
      // Past the block's end this is the next block's start, which this thread reads next
      // (or a harmless hint about another thread's).
      const char* ahead = reinterpret_cast<const char*>(ws + kPrefetchSteps * step_elems);
      for (int64_t off = 0; off < step_elems * 2; off += 64) _mm_prefetch(ahead + off, _MM_HINT_T0);
    }
    _tile_loadd(4, x + s * kAmxBf16KStep, a_stride);
    _tile_loadd(5, ws, b_stride);
    _tile_dpbf16ps(0, 4, 5);
    if constexpr (NV > 1) {
      _tile_loadd(6, ws + 32, b_stride);
      _tile_dpbf16ps(1, 4, 6);
    }
    if constexpr (NV > 2) {
      _tile_loadd(7, ws + 64, b_stride);
      _tile_dpbf16ps(2, 4, 7);
    }
    if constexpr (NV > 3) {
      _tile_loadd(5, ws + 96, b_stride);
      _tile_dpbf16ps(3, 4, 5);
    }
  }
  _tile_stored(0, c, 64);
  if constexpr (NV > 1) _tile_stored(1, c + 256, 64);
  if constexpr (NV > 2) _tile_stored(2, c + 512, 64);
  if constexpr (NV > 3) _tile_stored(3, c + 768, 64);
}

// Copies `rows` x `cols` (<= NV * 16) of the tiles in `c` to y.
template <int NV>
void CopyOut(const float* c, int64_t rows, int64_t cols, float* y, int64_t y_stride) {
  for (int v = 0; v < NV; ++v) {
    const int64_t live = std::clamp<int64_t>(cols - v * 16, 0, 16);
    if (live == 0) break;
    const auto mask = static_cast<__mmask16>((1u << live) - 1);
    for (int64_t r = 0; r < rows; ++r) {
      _mm512_mask_storeu_ps(y + r * y_stride + v * 16, mask,
                            _mm512_load_ps(c + v * 256 + r * 16));
    }
  }
}

template <int NV>
void Blocks(const Bf16PackedLayout& l, const uint16_t* w, const uint16_t* x, int64_t m,
            int64_t x_stride, float* y, int64_t y_stride, int64_t b0, int64_t b1) {
  const int64_t k_steps = (l.k + kAmxBf16KStep - 1) / kAmxBf16KStep;
  const int tile_rows = static_cast<int>(std::min<int64_t>(m, 16));
  ConfigureTiles(tile_rows);
  alignas(64) float c[NV * 256];
  for (int64_t b = b0; b < b1; ++b) {
    const uint16_t* wb = w + b * l.n_block_stride;
    const int64_t col0 = b * l.n_block;
    const int64_t cols = std::min(l.n_block, l.n - col0);
    for (int64_t row0 = 0; row0 < m; row0 += tile_rows) {
      TileRow<NV>(wb, k_steps, l.n_block, x + row0 * x_stride, x_stride, c, row0 == 0);
      CopyOut<NV>(c, std::min<int64_t>(tile_rows, m - row0), cols, y + row0 * y_stride + col0,
                  y_stride);
    }
  }
  _tile_release();
}

}  // namespace

bool AmxBf16Available() {
  static const bool available =
      CpuHasAmxBf16() && syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  return available;
}

void AmxBf16Gemm(const Bf16PackedLayout& l, const uint16_t* w, const uint16_t* x, int64_t m,
                 int64_t x_stride, float* y, int64_t y_stride) {
  const int64_t blocks = (l.n + l.n_block - 1) / l.n_block;
  ForEachGemvBlockRange(blocks, l.n * l.k * 2, [&](int64_t begin, int64_t end) {
    switch (l.n_block / 16) {
      case 1: Blocks<1>(l, w, x, m, x_stride, y, y_stride, begin, end); break;
      case 2: Blocks<2>(l, w, x, m, x_stride, y, y_stride, begin, end); break;
      case 3: Blocks<3>(l, w, x, m, x_stride, y, y_stride, begin, end); break;
      default: Blocks<4>(l, w, x, m, x_stride, y, y_stride, begin, end); break;
    }
  });
}

#else  // Built without AMX support: never available, never called.

bool AmxBf16Available() { return false; }

void AmxBf16Gemm(const Bf16PackedLayout&, const uint16_t*, const uint16_t*, int64_t, int64_t,
                 float*, int64_t) {}

#endif

}  // namespace kvserve::engine
