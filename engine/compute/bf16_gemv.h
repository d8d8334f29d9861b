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
// caller: this is the hot path). Any m works, but rows are computed in register tiles of at
// most 6 that each re-read the weights (from L2 after the first), so it pays only for small m.
void Bf16Gemv(const Bf16PackedLayout& layout, const uint16_t* w, const uint16_t* x, int64_t m,
              int64_t x_stride, float* y, int64_t y_stride);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_COMPUTE_BF16_GEMV_H_
