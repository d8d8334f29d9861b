#include "engine/compute/reference_ops.h"

#include <cmath>

namespace kvserve::engine::reference {

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const double scale = 1.0 / std::sqrt(sum / static_cast<double>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(x[i] * scale * weight[i]);
}

void RmsNormRows(const float* x, const float* weight, int64_t rows, int64_t n, float eps,
                 float* out) {
  for (int64_t r = 0; r < rows; ++r) RmsNorm(x + r * n, weight, n, eps, out + r * n);
}

void ApplyRope(float* v, int64_t n_heads, int64_t head_dim, int64_t rope_dim, int64_t position,
               float theta) {
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t i = 0; i + 1 < rope_dim; i += 2) {
      const double angle = static_cast<double>(position) *
                           std::pow(static_cast<double>(theta), -static_cast<double>(i) / rope_dim);
      const double v0 = v[h * head_dim + i];
      const double v1 = v[h * head_dim + i + 1];
      v[h * head_dim + i] = static_cast<float>(v0 * std::cos(angle) - v1 * std::sin(angle));
      v[h * head_dim + i + 1] = static_cast<float>(v0 * std::sin(angle) + v1 * std::cos(angle));
    }
  }
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    out[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[i]);
  }
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  double max = x[0];
  for (int64_t i = 1; i < n; ++i) max = std::fmax(max, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(x[i] - max);
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(std::exp(x[i] - max) / sum);
}

void Add(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(static_cast<double>(x[i]) + y[i]);
}

float Dot(const float* a, const float* b, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(sum);
}

void Axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(y[i] + static_cast<double>(a) * x[i]);
}

void Matmul(const float* x, int64_t m, const float* w, int64_t n, int64_t k, float* y) {
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      double sum = 0.0;
      for (int64_t i = 0; i < k; ++i) sum += static_cast<double>(x[r * k + i]) * w[c * k + i];
      y[r * n + c] = static_cast<float>(sum);
    }
  }
}

}  // namespace kvserve::engine::reference
