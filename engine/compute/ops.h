// The non-matmul operations of the forward pass: plain f32 loops (AVX-512 where the compiler
// target has it), no allocation, no threads. Each result depends only on its own inputs and
// sizes (never on alignment or on what else is in a batch), so rows are batch-invariant.
//
// Thread safety: pure functions; safe from any thread. `out` may equal the input pointer
// where stated.
#ifndef KVSERVE_ENGINE_COMPUTE_OPS_H_
#define KVSERVE_ENGINE_COMPUTE_OPS_H_

#include <cstdint>

namespace kvserve::engine {

// out = x / sqrt(mean(x^2) + eps) * weight, over n values. out may equal x.
void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out);
// RmsNorm of each of `rows` contiguous rows of n values. out may equal x.
void RmsNormRows(const float* x, const float* weight, int64_t rows, int64_t n, float eps,
                 float* out);

// Rotary position embedding in place on n_heads contiguous heads of head_dim values: the
// interleaved pairs (v[2i], v[2i+1]) of the first rope_dim dims of each head are rotated by
// angle position * theta^(-2i/rope_dim) (llama.cpp's LLAMA "normal" mode, llama2.c). The
// angles are computed in double, so they stay accurate at large positions. rope_dim must be
// even and <= head_dim.
void ApplyRope(float* v, int64_t n_heads, int64_t head_dim, int64_t rope_dim, int64_t position,
               float theta);

// The cos/sin of every rotation angle ApplyRope uses at positions [0, positions): row p holds
// rope_dim / 2 values, cos into `cos`, sin into `sin` (each positions * rope_dim / 2 floats).
// Computed exactly as ApplyRope computes them, so ApplyRopeCached is bit-identical to it.
void RopeTable(int64_t rope_dim, int64_t positions, float theta, float* cos, float* sin);
// ApplyRope with the angles of one position taken from a RopeTable row (no transcendentals
// on the hot path).
void ApplyRopeCached(float* v, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
                     const float* cos, const float* sin);

// out = silu(gate) * up, silu(g) = g / (1 + e^-g). out may equal gate or up.
void SiluMul(const float* gate, const float* up, int64_t n, float* out);

// In place: x = e^(x - max) / sum. -inf entries (masked positions) become 0; n == 0 is a no-op.
void Softmax(float* x, int64_t n);

// The largest of x[0..n) (n >= 1); -inf for n == 0.
float MaxOf(const float* x, int64_t n);
// In place: x[i] = e^(x[i] - shift); returns their sum, accumulated in an order that depends
// only on n. (Softmax's building block for attention over chunks: shift is the chunk's max.)
float ExpShiftSum(float* x, int64_t n, float shift);

// x += y.
void Add(float* x, const float* y, int64_t n);

// sum a[i] * b[i], accumulated in f32 in a fixed order that depends only on n.
float Dot(const float* a, const float* b, int64_t n);

// y += a * x.
void Axpy(float a, const float* x, float* y, int64_t n);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_COMPUTE_OPS_H_
