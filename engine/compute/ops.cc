#include "engine/compute/ops.h"

#include <immintrin.h>

#include <cmath>

// GCC 12 reports false -W(maybe-)uninitialized errors inside its own AVX-512 intrinsic headers (the
// `_mm512_undefined_ps()` pass-through operand of unmasked intrinsics) once they are inlined.
// Clang also reads `#pragma GCC` but has no -Wmaybe-uninitialized (an error under -Werror).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace kvserve::engine {
namespace {

#if defined(__AVX512F__)

// Lanes [0, n) set, for the tail of a loop (n < 16).
inline __mmask16 TailMask(int64_t n) { return static_cast<__mmask16>((1u << n) - 1); }

// e^x for 16 lanes, about 1-2 ulp: x = k ln2 + r with |r| <= ln2/2, e^r from Cephes' expf
// polynomial, then scaled by 2^k with vscalefps (which also gets overflow to +inf and
// underflow to 0 right). Inputs are clamped so that -inf gives exactly 0.
inline __m512 Exp(__m512 x) {
  // Below e^-87.34 (FLT_MIN) the result is flushed to 0: denormal results (and later
  // products with them) take microcode assists on Intel cores, ~100x slower; softmax rows with
  // masked (-inf) slots (LazyLLM's pruned tokens) spent 20% of a prefill here.
  const __mmask16 normal = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33654f), _CMP_GE_OQ);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.33654f));
  x = _mm512_min_ps(x, _mm512_set1_ps(89.0f));    // e^89 overflows to +inf.
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_scalef_ps(normal, p, k);
}

// Sum of a[i] * b[i]: four independent 16-lane accumulators, then a fixed-order reduction.
inline float DotAvx512(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), acc2);
    acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), acc3);
  }
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
  }
  if (i < n) {
    const __mmask16 m = TailMask(n - i);
    acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

#endif  // __AVX512F__

}  // namespace

float Dot(const float* a, const float* b, int64_t n) {
#if defined(__AVX512F__)
  return DotAvx512(a, b, n);
#else
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
#endif
}

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  if (n <= 0) return;
  const float mean = Dot(x, x, n) / static_cast<float>(n);
  const float scale = 1.0f / std::sqrt(mean + eps);
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 vs = _mm512_set1_ps(scale);
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vs),
                                            _mm512_loadu_ps(weight + i)));
  }
  if (i < n) {
    const __mmask16 m = TailMask(n - i);
    _mm512_mask_storeu_ps(out + i, m,
                          _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs),
                                        _mm512_maskz_loadu_ps(m, weight + i)));
  }
#else
  for (; i < n; ++i) out[i] = x[i] * scale * weight[i];
#endif
}

void RmsNormRows(const float* x, const float* weight, int64_t rows, int64_t n, float eps,
                 float* out) {
  for (int64_t r = 0; r < rows; ++r) RmsNorm(x + r * n, weight, n, eps, out + r * n);
}

void ApplyRope(float* v, int64_t n_heads, int64_t head_dim, int64_t rope_dim, int64_t position,
               float theta) {
  // Pair-major: one cos/sin per pair, applied to every head (no buffer needed). The double
  // angle keeps position * frequency exact enough at long contexts.
  const double log_theta = std::log(static_cast<double>(theta));
  for (int64_t i = 0; i + 1 < rope_dim; i += 2) {
    const double inv_freq = std::exp(-log_theta * static_cast<double>(i) / rope_dim);
    const double angle = static_cast<double>(position) * inv_freq;
    const float c = static_cast<float>(std::cos(angle));
    const float s = static_cast<float>(std::sin(angle));
    for (int64_t h = 0; h < n_heads; ++h) {
      float* p = v + h * head_dim + i;
      const float v0 = p[0];
      const float v1 = p[1];
      p[0] = v0 * c - v1 * s;
      p[1] = v0 * s + v1 * c;
    }
  }
}

void RopeTable(int64_t rope_dim, int64_t positions, float theta, float* cos, float* sin) {
  const double log_theta = std::log(static_cast<double>(theta));
  const int64_t pairs = rope_dim / 2;
  for (int64_t i = 0; i < pairs; ++i) {
    const double inv_freq = std::exp(-log_theta * static_cast<double>(2 * i) / rope_dim);
    for (int64_t p = 0; p < positions; ++p) {
      const double angle = static_cast<double>(p) * inv_freq;
      cos[p * pairs + i] = static_cast<float>(std::cos(angle));
      sin[p * pairs + i] = static_cast<float>(std::sin(angle));
    }
  }
}

void ApplyRopeCached(float* v, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
                     const float* cos, const float* sin) {
  const int64_t pairs = rope_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* p = v + h * head_dim;
    // Same arithmetic per element as ApplyRope (v0*c - v1*s, v0*s + v1*c; no FMA contraction
    // differences: both are compiled with the same flags and written the same way).
    for (int64_t i = 0; i < pairs; ++i) {
      const float c = cos[i], s = sin[i];
      const float v0 = p[2 * i];
      const float v1 = p[2 * i + 1];
      p[2 * i] = v0 * c - v1 * s;
      p[2 * i + 1] = v0 * s + v1 * c;
    }
  }
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : TailMask(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 u = _mm512_maskz_loadu_ps(m, up + i);
    const __m512 e = Exp(_mm512_sub_ps(_mm512_setzero_ps(), g));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), u));
  }
#else
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
#endif
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
#if defined(__AVX512F__)
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : TailMask(n - i);
    vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, x + i));
  }
  const __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : TailMask(n - i);
    const __m512 e = Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), max));
    _mm512_mask_storeu_ps(x + i, m, e);
    vsum = _mm512_mask_add_ps(vsum, m, vsum, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : TailMask(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
#else
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = std::fmax(max, x[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
#endif
}

float MaxOf(const float* x, int64_t n) {
#if defined(__AVX512F__)
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : TailMask(n - i);
    vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, x + i));
  }
  return _mm512_reduce_max_ps(vmax);
#else
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max = std::fmax(max, x[i]);
  return max;
#endif
}

float ExpShiftSum(float* x, int64_t n, float shift) {
#if defined(__AVX512F__)
  const __m512 vshift = _mm512_set1_ps(shift);
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : TailMask(n - i);
    const __m512 e = Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vshift));
    _mm512_mask_storeu_ps(x + i, m, e);
    vsum = _mm512_mask_add_ps(vsum, m, vsum, e);
  }
  return _mm512_reduce_add_ps(vsum);
#else
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
#endif
}

void Add(float* x, const float* y, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : TailMask(n - i);
    _mm512_mask_storeu_ps(
        x + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
#else
  for (; i < n; ++i) x[i] += y[i];
#endif
}

void Axpy(float a, const float* x, float* y, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 va = _mm512_set1_ps(a);
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : TailMask(n - i);
    _mm512_mask_storeu_ps(
        y + i, m,
        _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
#else
  for (; i < n; ++i) y[i] += a * x[i];
#endif
}

}  // namespace kvserve::engine
