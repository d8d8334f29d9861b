#include "engine/compute/amx_gemm.h"

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "engine/compute/gemv_partition.h"

// GCC 12 reports false -W(maybe-)uninitialized errors inside its own AVX-512 intrinsic headers
// (the `_mm512_undefined_*()` pass-through operand of unmasked intrinsics) once inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace kvserve::engine {
namespace {

// Both layouts: column blocks of 16..64 columns by 16, each holding `k_step`-value tile steps
// of K (zero-padded) at 16 * n_block * 4 bytes per step.
bool SupportsBlocks(int64_t k, int64_t n, int64_t n_block, int64_t n_block_stride_bytes,
                    int64_t k_step) {
  if (k <= 0 || n <= 0 || n_block < 16 || n_block > 64 || n_block % 16 != 0) return false;
  const int64_t steps = (k + k_step - 1) / k_step;
  return n_block_stride_bytes >= steps * 16 * n_block * 4;
}

}  // namespace

bool AmxBf16SupportsLayout(const Bf16PackedLayout& l) {
  return SupportsBlocks(l.k, l.n, l.n_block, l.n_block_stride * 2, kAmxBf16KStep);
}

bool AmxInt8SupportsLayout(const Int8PackedLayout& l) {
  return SupportsBlocks(l.k, l.n, l.n_block, l.n_block_stride, kAmxInt8KStep);
}

int64_t AmxPaddedRows(int64_t m) { return m <= 16 ? m : (m + 15) / 16 * 16; }

#if defined(__AVX512F__) && defined(__AMX_TILE__) && defined(__AMX_BF16__) && \
    defined(__AMX_INT8__)

namespace {

// Linux keeps the 8 KiB AMX tile state off until a process asks (arch_prctl, kernel 5.16+).
constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtiledata = 18;

// CPUID.(EAX=7, ECX=0):EDX bit `bit`, with AMX-TILE (bit 24).
bool CpuHasAmx(int bit) {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  constexpr unsigned kAmxTile = 1u << 24;
  return (edx & (1u << bit)) != 0 && (edx & kAmxTile) != 0;
}

bool AmxPermitted() {
  static const bool permitted =
      syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  return permitted;
}

// The LDTILECFG operand (palette 1): tmm0..3 the C accumulators (rows x 16 32-bit lanes),
// tmm4 the A activations (rows x 64 bytes), tmm5..7 B weight tiles (16 K pairs / quads x 16
// columns).
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

// How far ahead (in K steps: 4 KiB of weights at n_block 64) the first tile row of a block
// asks for its weights. Tile registers are not renamed, so a tile load waits for the previous
// step's products and only about one step of DRAM reads is in flight otherwise; measured
// (compute_benchmark BM_Bf16Decode kernel:3, M = 1, Sapphire Rapids, 2 threads): 20-25 GB/s
// without, 25-29.6 GB/s at 3-4 steps ahead into L1, worse at 8 or into L2 only.
constexpr int64_t kPrefetchSteps = 4;

enum class Op { kBf16, kInt8 };

// One tile row of the output: `rows` x NV * 16 columns of one column block over the whole K,
// into `c` (NV tiles of 16 x 16 32-bit lanes, row-major per tile). `prefetch`: this is the
// block's first tile row, which streams its weights from DRAM (later ones find them in L2).
// Per step, A is 64 bytes of each row of x and B 16 rows of 64 bytes per 16 columns.
template <Op kOp, int NV>
void TileRow(const uint8_t* wb, int64_t k_steps, int64_t n_block, const uint8_t* x,
             int64_t x_stride_bytes, void* c, bool prefetch) {
  const int64_t b_stride = n_block * 4;       // Bytes from one K pair / quad to the next.
  const int64_t step_bytes = 16 * b_stride;   // 16 K pairs / quads of the block.
  _tile_zero(0);
  if constexpr (NV > 1) _tile_zero(1);
  if constexpr (NV > 2) _tile_zero(2);
  if constexpr (NV > 3) _tile_zero(3);
  for (int64_t s = 0; s < k_steps; ++s) {
    const uint8_t* ws = wb + s * step_bytes;
    if (prefetch) {
      // Past the block's end this is the next block's start, which this thread reads next
      // (or a harmless hint about another thread's).
      const auto* ahead = reinterpret_cast<const char*>(ws + kPrefetchSteps * step_bytes);
      for (int64_t off = 0; off < step_bytes; off += 64) _mm_prefetch(ahead + off, _MM_HINT_T0);
    }
    _tile_loadd(4, x + s * 64, x_stride_bytes);
    // One product per tile; the three B registers rotate so a load need not wait for the
    // product just issued.
#define KVSERVE_AMX_DP(C, B)                 \
  if constexpr (kOp == Op::kBf16) {          \
    _tile_dpbf16ps(C, 4, B);                 \
  } else {                                   \
    _tile_dpbusd(C, 4, B);                   \
  }
    _tile_loadd(5, ws, b_stride);
    KVSERVE_AMX_DP(0, 5)
    if constexpr (NV > 1) {
      _tile_loadd(6, ws + 64, b_stride);
      KVSERVE_AMX_DP(1, 6)
    }
    if constexpr (NV > 2) {
      _tile_loadd(7, ws + 128, b_stride);
      KVSERVE_AMX_DP(2, 7)
    }
    if constexpr (NV > 3) {
      _tile_loadd(5, ws + 192, b_stride);
      KVSERVE_AMX_DP(3, 5)
    }
#undef KVSERVE_AMX_DP
  }
  auto* c_bytes = static_cast<uint8_t*>(c);
  _tile_stored(0, c_bytes, 64);
  if constexpr (NV > 1) _tile_stored(1, c_bytes + 1024, 64);
  if constexpr (NV > 2) _tile_stored(2, c_bytes + 2048, 64);
  if constexpr (NV > 3) _tile_stored(3, c_bytes + 3072, 64);
}

// Copies `rows` x `cols` (<= NV * 16) of the tiles in `c` to y (32-bit lanes, f32 or s32).
template <int NV>
void CopyOut(const int32_t* c, int64_t rows, int64_t cols, int32_t* y, int64_t y_stride) {
  for (int v = 0; v < NV; ++v) {
    const int64_t live = std::clamp<int64_t>(cols - v * 16, 0, 16);
    if (live == 0) break;
    const auto mask = static_cast<__mmask16>((1u << live) - 1);
    for (int64_t r = 0; r < rows; ++r) {
      _mm512_mask_storeu_epi32(y + r * y_stride + v * 16, mask,
                               _mm512_load_si512(c + v * 256 + r * 16));
    }
  }
}

// Column blocks [b0, b1) for all m rows: per block, tile row after tile row over the whole K.
template <Op kOp, int NV>
void Blocks(const uint8_t* w, int64_t n, int64_t n_block, int64_t n_block_stride_bytes,
            int64_t k_steps, const uint8_t* x, int64_t m, int64_t x_stride_bytes, int32_t* y,
            int64_t y_stride, int64_t b0, int64_t b1) {
  const int tile_rows = static_cast<int>(std::min<int64_t>(m, 16));
  ConfigureTiles(tile_rows);
  alignas(64) int32_t c[NV * 256];
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* wb = w + b * n_block_stride_bytes;
    const int64_t col0 = b * n_block;
    const int64_t cols = std::min(n_block, n - col0);
    for (int64_t row0 = 0; row0 < m; row0 += tile_rows) {
      TileRow<kOp, NV>(wb, k_steps, n_block, x + row0 * x_stride_bytes, x_stride_bytes, c,
                       row0 == 0);
      CopyOut<NV>(c, std::min<int64_t>(tile_rows, m - row0), cols, y + row0 * y_stride + col0,
                  y_stride);
    }
  }
  _tile_release();
}

template <Op kOp>
void Run(const uint8_t* w, int64_t k, int64_t n, int64_t n_block, int64_t n_block_stride_bytes,
         int64_t k_step, const uint8_t* x, int64_t m, int64_t x_stride_bytes, int32_t* y,
         int64_t y_stride) {
  const int64_t blocks = (n + n_block - 1) / n_block;
  const int64_t k_steps = (k + k_step - 1) / k_step;
  const int64_t weight_bytes = k_steps * 64 * n;
  ForEachGemvBlockRange(blocks, weight_bytes, [&](int64_t begin, int64_t end) {
    auto blocks_nv = [&]<int NV>() {
      Blocks<kOp, NV>(w, n, n_block, n_block_stride_bytes, k_steps, x, m, x_stride_bytes, y,
                      y_stride, begin, end);
    };
    switch (n_block / 16) {
      case 1: blocks_nv.template operator()<1>(); break;
      case 2: blocks_nv.template operator()<2>(); break;
      case 3: blocks_nv.template operator()<3>(); break;
      default: blocks_nv.template operator()<4>(); break;
    }
  });
}

}  // namespace

bool AmxBf16Available() {
  static const bool available = CpuHasAmx(22) && AmxPermitted();  // 22: AMX-BF16.
  return available;
}

bool AmxInt8Available() {
  static const bool available = CpuHasAmx(25) && AmxPermitted();  // 25: AMX-INT8.
  return available;
}

void AmxBf16Gemm(const Bf16PackedLayout& l, const uint16_t* w, const uint16_t* x, int64_t m,
                 int64_t x_stride, float* y, int64_t y_stride) {
  // f32 sums travel as their 32-bit patterns (stored and copied, never converted).
  Run<Op::kBf16>(reinterpret_cast<const uint8_t*>(w), l.k, l.n, l.n_block, l.n_block_stride * 2,
                 kAmxBf16KStep, reinterpret_cast<const uint8_t*>(x), m, x_stride * 2,
                 reinterpret_cast<int32_t*>(y), y_stride);
}

void AmxInt8Gemm(const Int8PackedLayout& l, const int8_t* w, const uint8_t* x, int64_t m,
                 int64_t x_stride, int32_t* acc, int64_t acc_stride) {
  Run<Op::kInt8>(reinterpret_cast<const uint8_t*>(w), l.k, l.n, l.n_block, l.n_block_stride,
                 kAmxInt8KStep, x, m, x_stride, acc, acc_stride);
}

#else  // Built without AMX support: never available, never called.

bool AmxBf16Available() { return false; }
bool AmxInt8Available() { return false; }

void AmxBf16Gemm(const Bf16PackedLayout&, const uint16_t*, const uint16_t*, int64_t, int64_t,
                 float*, int64_t) {}
void AmxInt8Gemm(const Int8PackedLayout&, const int8_t*, const uint8_t*, int64_t, int64_t,
                 int32_t*, int64_t) {}

#endif

}  // namespace kvserve::engine
