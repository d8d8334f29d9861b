// Int8Gemv: acc = xq W_q^T in s32 for a few rows (decode batches) of u8 activations and s8
// weights, an AVX512-VNNI (vpdpbusd) kernel written to stream the weights at the memory
// bandwidth roof; the int8 twin of Bf16Gemv (bf16_gemv.h), used by Linear for kInt8 decode rows.
//
// Weight layout: oneDNN's blocked layout for {K, N} (= W^T) s8 weights that its brgemm matmul
// picks, "BA16a<nb>b4a" (nb = 16, 32, 48 or 64), so Linear keeps ONE packed copy:
// - the N output columns are split into blocks of nb; block j starts at byte
//   j * n_block_stride and holds its K rows as consecutive quads (rows 4q .. 4q+3):
//   quad q is nb * 4 bytes at q * nb * 4, column c's four values at c * 4 .. c * 4 + 3;
// - K is zero-padded (to a multiple of 64 by oneDNN) and so are the last block's columns.
//
// The s32 sums are exact (Linear limits K so that they cannot overflow), so the result is the
// same bits as oneDNN's whatever the summation order.
//
// Thread safety: a pure function of its arguments, run on the calling thread's OpenMP team.
#ifndef KVSERVE_ENGINE_COMPUTE_INT8_GEMV_H_
#define KVSERVE_ENGINE_COMPUTE_INT8_GEMV_H_

#include <cstdint>

namespace kvserve::engine {

struct Int8PackedLayout {
  int64_t k = 0;               // In features (rows of W^T), unpadded.
  int64_t n = 0;               // Out features (columns of W^T), unpadded.
  int64_t n_block = 0;         // Columns per block: 16, 32, 48 or 64.
  int64_t n_block_stride = 0;  // Bytes from one column block to the next.
};

// Whether this build has the kernel (compiled with AVX512-VNNI) and the CPU runs it.
bool Int8GemvAvailable();

// Whether `layout` is one Int8Gemv implements (n_block 16..64 by 16; a stride that holds the
// blocks; k, n positive).
bool Int8GemvSupportsLayout(const Int8PackedLayout& layout);

// acc{m, n} = xq{m, k} (u8) * W{n, k}^T (s8), in s32.
// - x: m rows of u8, row i at x + i * x_stride; x_stride >= k rounded up to a multiple of 4;
//   the values past k in each row's last quad are read (and multiplied by zero weights), so
//   they only need to be readable.
// - acc: m rows of s32, row i at acc + i * acc_stride; only the n real columns are written.
// Requires Int8GemvAvailable(), Int8GemvSupportsLayout(layout) and m >= 1. Rows are computed
// in register tiles of at most 6 that each re-read the weights (from L2 after the first).
void Int8Gemv(const Int8PackedLayout& layout, const int8_t* w, const uint8_t* x, int64_t m,
              int64_t x_stride, int32_t* acc, int64_t acc_stride);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_COMPUTE_INT8_GEMV_H_
