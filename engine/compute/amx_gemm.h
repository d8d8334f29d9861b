// Matmuls on Intel AMX tiles, y = x W^T, straight from the packed weights oneDNN made:
// AmxBf16Gemm (tdpbf16ps, bf16 weights, every row count) and AmxInt8Gemm (tdpbusd, u8 x s8 ->
// exact s32, the decode batches above Int8Gemv's few rows).
//
// Why our own bf16 kernel: oneDNN 2.6's AMX brgemm does not give a row the same bits at every
// batch size (measured on Sapphire Rapids: M = 1..2 run its avx512_core_bf16 kernel, M >= 3
// AMX, and different M buckets sum K in different orders), which breaks Linear's batch
// invariance: a request's greedy tokens would depend on who else is in the batch. Here every
// output is the sum over K in 32-value steps, in order, in one tile accumulator, whatever m,
// the row's tile position, the thread count or the column split: tdpbf16ps computes each tile
// row from that row's own data alone, so a row's bits depend on nothing else.
// Why the int8 one: integer sums are exact, so batch invariance holds anyway; it is faster than
// oneDNN's at decode sizes because it prefetches the weight stream (amx_gemm.cc).
//
// Weight layouts: the packed buffers Bf16Gemv and Int8Gemv read (oneDNN's "BA16a<nb>b2a" /
// "BA16a<nb>b4a", which its AMX brgemm also picks). A 16 x 16-column slice of 16 K pairs
// (quads) is one AMX B tile (16 rows of 64 bytes, row stride nb * 4 bytes), so the weights are
// used in place. oneDNN zero-pads K to a multiple of one tile step (32 bf16 / 64 int8 values).
//
// Thread safety: pure functions of their arguments; they run on the calling thread's OpenMP
// team (like oneDNN), each thread configuring and releasing its own tiles.
#ifndef KVSERVE_ENGINE_COMPUTE_AMX_GEMM_H_
#define KVSERVE_ENGINE_COMPUTE_AMX_GEMM_H_

#include <cstdint>

#include "engine/compute/bf16_gemv.h"
#include "engine/compute/int8_gemv.h"

namespace kvserve::engine {

// K values per tile step: each row of x is read in 64-byte pieces.
inline constexpr int64_t kAmxBf16KStep = 32;
inline constexpr int64_t kAmxInt8KStep = 64;

// Whether the CPU has AMX-BF16 / AMX-INT8 and Linux granted this process the AMX tile state
// (asked for once, on the first call).
bool AmxBf16Available();
bool AmxInt8Available();

// Whether the packed weights hold whole tile steps of K in every column block (n_block 16..64
// by 16, stride >= K rounded up to the step x n_block).
bool AmxBf16SupportsLayout(const Bf16PackedLayout& layout);
bool AmxInt8SupportsLayout(const Int8PackedLayout& layout);

// The rows of x the kernels read for m rows: m up to 16 (one tile of m rows), else m rounded
// up to a multiple of 16 (full tiles; the extra rows' results are computed and dropped, so
// they need only be readable).
int64_t AmxPaddedRows(int64_t m);

// y{m, n} = x{m, k} * W^T, accumulated in f32.
// - w: the packed weights described by `layout` (AmxBf16SupportsLayout; k_chunk is unused).
// - x: AmxPaddedRows(m) rows of bf16, row i at x + i * x_stride; x_stride is a multiple of
//   kAmxBf16KStep and >= k, and elements k..(k rounded up to kAmxBf16KStep) of each real row
//   are 0.
// - y: m rows of f32, row i at y + i * y_stride; only the n real columns are written.
// Requires AmxBf16Available() and m >= 1 (checked by the caller: this is the hot path).
void AmxBf16Gemm(const Bf16PackedLayout& layout, const uint16_t* w, const uint16_t* x, int64_t m,
                 int64_t x_stride, float* y, int64_t y_stride);

// acc{m, n} = x{m, k} (u8) * W^T (s8), exact in s32: Int8Gemv's contract with AMX's K step.
// - w: the packed weights described by `layout` (AmxInt8SupportsLayout).
// - x: AmxPaddedRows(m) rows of u8, row i at x + i * x_stride (bytes); x_stride is a multiple
//   of kAmxInt8KStep and >= k; bytes past k meet only zero weights.
// - acc: m rows of s32, row i at acc + i * acc_stride; only the n real columns are written.
// Requires AmxInt8Available() and m >= 1.
void AmxInt8Gemm(const Int8PackedLayout& layout, const int8_t* w, const uint8_t* x, int64_t m,
                 int64_t x_stride, int32_t* acc, int64_t acc_stride);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_COMPUTE_AMX_GEMM_H_
