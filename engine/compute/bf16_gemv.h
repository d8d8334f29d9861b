// Bf16Gemv: y = x W^T for a few rows of x (decode batches) with bf16 weights, an AVX512-BF16
// (vdpbf16ps) kernel written to stream the weights at the memory bandwidth roof.
//
// At one row a matmul is a matrix-vector product: each weight is used once, so the speed is
// the rate the weights are read from DRAM. oneDNN 2.6's bf16 brgemm reaches ~25 GB/s here at
// M = 1 (of ~33 GB/s); this kernel reads every byte of the packed weights exactly once per
// call in long sequential streams, one per thread, and does nothing else.
//
// Weight layout: oneDNN's blocked layout for the {K, N} (= W^T) bf16 weights that its brgemm
// matmul picks, written "BA16a<nb>b2a" (nb = 16, 32, 48 or 64), so Linear keeps ONE packed
// copy that both this kernel and the oneDNN primitives (larger M) read:
// - the N output columns are split into blocks of nb; block j starts at element
//   j * n_block_stride and holds its K rows as consecutive pairs (rows 2p and 2p+1):
//   pair p is nb * 2 elements at p * nb * 2, column c's two values at c * 2 and c * 2 + 1;
// - K is zero-padded (to a multiple of 32 by oneDNN) and so are the columns of the last block.
// Bf16PackedLayout describes one such buffer; Linear checks oneDNN's descriptor against it.
//
// Bit-identical to oneDNN: oneDNN 2.6's avx512_core_bf16 brgemm sums each output over K in
// chunks of k_chunk rows (one vdpbf16ps per K pair, in order, into a zeroed register), and
// adds each chunk's sum to the output in order; this kernel does exactly the same
// (Bf16GemvChunkRows gives oneDNN's chunk size, found by probing it bit for bit), so a row's
// result does not depend on whether it went through this kernel or through oneDNN (Linear's
// batch invariance); the tests check this.
//
// Where vdpbf16ps is slow (Intel Xeon without AMX, measured here: 166 GFLOP/s on 2 cores
// against 334 for f32 FMAs), Bf16GemvFma does the same sums with f32 FMAs, same bits, and
// Linear runs it for every row count from 2 up, prefill included (oneDNN's brgemm is held to
// vdpbf16ps's rate there); FasterBf16GemvMethod() measures which instruction is faster.
//
// Thread safety: Bf16Gemv is a pure function of its arguments; it runs on the calling
// thread's OpenMP team (omp_get_max_threads() threads), so call it from one thread at a time
// per team, like oneDNN.
#ifndef KVSERVE_ENGINE_COMPUTE_BF16_GEMV_H_
#define KVSERVE_ENGINE_COMPUTE_BF16_GEMV_H_

#include <cstdint>

namespace kvserve::engine {

struct Bf16PackedLayout {
  int64_t k = 0;               // In features (rows of W^T), unpadded.
  int64_t n = 0;               // Out features (columns of W^T), unpadded.
  int64_t n_block = 0;         // Columns per block: 16, 32, 48 or 64.
  int64_t n_block_stride = 0;  // Elements from one column block to the next.
  int64_t k_chunk = 0;         // K rows summed in registers before adding to y; even, > 0.
};

// oneDNN 2.6's K chunk for a bf16 brgemm matmul on AVX512-BF16 (no AMX), measured: the whole
// K up to 512, 512 up to 1024, 1024 beyond (independent of M, N and the thread count).
int64_t Bf16GemvChunkRows(int64_t k);

// Whether this build has the kernel (compiled with AVX512-BF16) and the CPU runs it.
bool Bf16GemvAvailable();

// Whether `layout` is one Bf16Gemv implements (n_block 16..64 by 16; strides that hold the
// blocks; k, n positive; k_chunk positive and even).
bool Bf16GemvSupportsLayout(const Bf16PackedLayout& layout);

// y{m, n} = x{m, k} * W^T, accumulated in f32.
// - w: the packed weights described by `layout` (best 64-byte aligned, as oneDNN allocates).
// - x: m rows of bf16 activations, row i at x + i * x_stride; x_stride >= k rounded up to
//   even, and when k is odd element k of each row must be 0 (the pair it completes is read).
// - y: m rows of f32, row i at y + i * y_stride; only the n real columns are written.
// Requires Bf16GemvAvailable(), Bf16GemvSupportsLayout(layout) and m >= 1 (checked by the
// caller: this is the hot path). Any m works: rows run in register tiles of at most 6, and
// every tile of a call works through the same 64 K pairs (16 KiB of weights, held in L1) before
// the next ones are read, so the weights stream from DRAM once per 144 rows.
void Bf16Gemv(const Bf16PackedLayout& layout, const uint16_t* w, const uint16_t* x, int64_t m,
              int64_t x_stride, float* y, int64_t y_stride);

// The same product with f32 FMAs instead of vdpbf16ps: each K pair's weights are widened to
// f32 and every row takes two vfmadd231ps, odd K row first, which is vdpbf16ps's own arithmetic
// (two exact bf16 products, each added with one rounding, in that order), so the result is
// Bf16Gemv's, bit for bit, except where vdpbf16ps flushes denormals (below 1.2e-38) to zero.
// It pays where the CPU runs f32 FMAs at a higher flop rate than vdpbf16ps (Intel Xeon,
// Sapphire Rapids class, measured 334 vs 166 GFLOP/s on 2 cores), i.e. when several rows make
// the product compute-bound.
// x: the activations as f32 values that are exactly bf16 (as ConvertToBf16 then widened),
// same row layout and odd-k padding as Bf16Gemv's.
void Bf16GemvFma(const Bf16PackedLayout& layout, const uint16_t* w, const float* x, int64_t m,
                 int64_t x_stride, float* y, int64_t y_stride);

// How Linear runs a bf16 chunk on the kernel path: Bf16Gemv (kDot), Bf16GemvFma (kFma), or,
// on CPUs with AMX, AmxBf16Gemm for every row count (kAmx, see amx_gemm.h).
enum class Bf16GemvMethod { kDot, kFma, kAmx };
// kFma when this CPU's f32 FMA rate is clearly (>1.25x) above its vdpbf16ps rate, measured once
// (a few ms, first call); kDot otherwise, and always when Bf16GemvAvailable() is false.
Bf16GemvMethod FasterBf16GemvMethod();

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_COMPUTE_BF16_GEMV_H_
