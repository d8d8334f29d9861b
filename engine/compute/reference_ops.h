// Scalar reference implementations of every compute op: the test oracle. Plain loops that
// accumulate in double and round once to f32 at the end; slow on purpose, never used to serve.
//
// Thread safety: pure functions; safe from any thread.
#ifndef KVSERVE_ENGINE_COMPUTE_REFERENCE_OPS_H_
#define KVSERVE_ENGINE_COMPUTE_REFERENCE_OPS_H_

#include <cstdint>

namespace kvserve::engine::reference {

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out);
void RmsNormRows(const float* x, const float* weight, int64_t rows, int64_t n, float eps,
                 float* out);
void ApplyRope(float* v, int64_t n_heads, int64_t head_dim, int64_t rope_dim, int64_t position,
               float theta);
void SiluMul(const float* gate, const float* up, int64_t n, float* out);
void Softmax(float* x, int64_t n);
void Add(float* x, const float* y, int64_t n);
float Dot(const float* a, const float* b, int64_t n);
void Axpy(float a, const float* x, float* y, int64_t n);

// y{m,n} = x{m,k} * w^T with w row-major {n,k} in f32 (what Linear computes).
void Matmul(const float* x, int64_t m, const float* w, int64_t n, int64_t k, float* y);

}  // namespace kvserve::engine::reference

#endif  // KVSERVE_ENGINE_COMPUTE_REFERENCE_OPS_H_
