// AmxBf16Gemm: y = x W^T with bf16 weights on Intel AMX tiles (tdpbf16ps), for every row
// count, decode and prefill alike.
//
// Why our own: oneDNN 2.6's AMX brgemm does not give a row the same bits at every batch size
// (measured on Sapphire Rapids: M = 1..2 run its avx512_core_bf16 kernel, M >= 3 AMX, and
// different M buckets sum K in different orders), which breaks Linear's batch invariance: a
// request's greedy tokens would depend on who else is in the batch. Here every output is the
// sum over K in 32-value steps, in order, in one tile accumulator, whatever m, the row's tile
// position, the thread count or the column split: tdpbf16ps computes each tile row from that
// row's own data alone, so a row's bits depend on nothing else.
//
// Weight layout: the same packed buffer as Bf16Gemv reads (Bf16PackedLayout: oneDNN's
// "BA16a<nb>b2a", which its AMX brgemm also picks); a 16-pair x 16-column slice of it is one
// AMX B tile (rows 16 K pairs, 64 bytes each, row stride nb * 4 bytes), so the weights are
// used in place. K is zero-padded by oneDNN to a multiple of 32 (one tile step).
//
// Thread safety: a pure function of its arguments; it runs on the calling thread's OpenMP team
// (like Bf16Gemv and oneDNN), each thread configuring and releasing its own tiles.
#ifndef KVSERVE_ENGINE_COMPUTE_AMX_BF16_GEMM_H_
#define KVSERVE_ENGINE_COMPUTE_AMX_BF16_GEMM_H_

#include <cstdint>

#include "engine/compute/bf16_gemv.h"

namespace kvserve::engine {

// K values per tile step: the activations of each row are read in 32-value pieces.
inline constexpr int64_t kAmxBf16KStep = 32;

// Whether the CPU has AMX-BF16 and Linux granted this process the AMX tile state (asked for
// once, on the first call).
bool AmxBf16Available();

// The rows of x AmxBf16Gemm reads for m rows: m up to 16 (one tile of m rows), else m rounded
// up to a multiple of 16 (full tiles; the extra rows' results are computed and dropped, so
// they need only be readable).
int64_t AmxBf16PaddedRows(int64_t m);

// y{m, n} = x{m, k} * W^T, accumulated in f32.
// - w: the packed weights described by `layout` (Bf16GemvSupportsLayout; k_chunk is unused).
// - x: AmxBf16PaddedRows(m) rows of bf16, row i at x + i * x_stride; x_stride is a multiple of
//   kAmxBf16KStep and >= k, and elements k..(k rounded up to kAmxBf16KStep) of each real row
//   are 0.
// - y: m rows of f32, row i at y + i * y_stride; only the n real columns are written.
// Requires AmxBf16Available() and m >= 1 (checked by the caller: this is the hot path).
void AmxBf16Gemm(const Bf16PackedLayout& layout, const uint16_t* w, const uint16_t* x, int64_t m,
                 int64_t x_stride, float* y, int64_t y_stride);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_COMPUTE_AMX_BF16_GEMM_H_
