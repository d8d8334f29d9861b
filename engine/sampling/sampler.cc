#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_format.h"

namespace kvserve::engine {
namespace {

constexpr float kMaxTemperature = 100.0f;

// Greedy argmax over `logits`: lowest id on ties; NaNs lose to everything.
TokenId Argmax(absl::Span<const float> logits) {
  TokenId best = 0;
  float best_value = -std::numeric_limits<float>::infinity();
  bool found = false;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    if (std::isnan(v)) continue;
    if (!found || v > best_value) {
      best = static_cast<TokenId>(i);
      best_value = v;
      found = true;
    }
  }
  return best;
}

// A uniform double in [0, 1) from the top 53 bits: the same on every standard library
// (std::uniform_real_distribution's algorithm is implementation-defined).
double UniformUnit(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& params) {
  if (!std::isfinite(params.temperature) || params.temperature < 0.0f ||
      params.temperature > kMaxTemperature) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "temperature is %g; it must be finite and in [0, %g] (0 = greedy)",
        params.temperature, kMaxTemperature));
  }
  if (params.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("top_k is %d; it must be >= 0 (0 = off)", params.top_k));
  }
  if (!std::isfinite(params.top_p) || params.top_p <= 0.0f || params.top_p > 1.0f) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "top_p is %g; it must be finite and in (0, 1] (1 = off)", params.top_p));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

TokenId Sampler::Sample(absl::Span<const float> logits) {
  if (logits.empty()) return 0;
  if (params_.temperature == 0.0f) return Argmax(logits);

  const size_t n = logits.size();
  if (scratch_.size() < n) scratch_.resize(n);
  // NaN logits are left out; if nothing remains there is nothing to sample from.
  const float inv_temperature = 1.0f / params_.temperature;
  size_t count = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(logits[i])) continue;
    scratch_[count++] = {logits[i] * inv_temperature, static_cast<TokenId>(i)};
  }
  if (count == 0) return 0;
  Candidate* const begin = scratch_.data();

  // Larger value first, lower id on ties: a total order, so every step is deterministic and
  // top_k = 1 or a tiny top_p reduce to greedy exactly.
  const auto better = [](const Candidate& a, const Candidate& b) {
    return a.value > b.value || (a.value == b.value && a.id < b.id);
  };
  size_t sorted = 0;  // Prefix of [begin, begin + count) known to be in `better` order.
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < count) {
    // Partial selection, O(n log k): no sort of the whole vocabulary. The tail beyond the
    // first k is ignored from here on.
    const size_t k = static_cast<size_t>(params_.top_k);
    std::partial_sort(begin, begin + k, begin + count, better);
    count = k;
    sorted = k;
  }

  // Softmax over the kept candidates (shifted by the maximum for stability).
  float max_value = begin[0].value;
  for (size_t i = 1; i < count; ++i) max_value = std::max(max_value, begin[i].value);
  if (!std::isfinite(max_value)) {
    // All -inf (or an inf): fall back to the best candidate.
    return std::min_element(begin, begin + count, better)->id;
  }
  double total = 0.0;
  for (size_t i = 0; i < count; ++i) {
    const float w = std::exp(begin[i].value - max_value);
    begin[i].value = w;
    total += w;
  }

  if (params_.top_p < 1.0f) {
    // Smallest most-likely prefix whose mass reaches top_p (at least one token). Sort only
    // as much as needed: grow a sorted prefix until it holds enough mass.
    const double target = static_cast<double>(params_.top_p) * total;
    size_t kept = 0;
    double mass = 0.0;
    size_t chunk = 64;
    while (true) {
      if (sorted < count) {
        const size_t upto = std::min(count, sorted + chunk);
        std::partial_sort(begin + sorted, begin + upto, begin + count, better);
        sorted = upto;
        chunk *= 4;
      }
      while (kept < sorted && mass < target) mass += begin[kept++].value;
      if (mass >= target || kept == count) break;
    }
    count = std::max<size_t>(kept, 1);
    total = 0.0;
    for (size_t i = 0; i < count; ++i) total += begin[i].value;
  }

  // One draw: the first candidate whose cumulative weight exceeds u * total.
  const double r = UniformUnit(rng_) * total;
  double cumulative = 0.0;
  for (size_t i = 0; i < count; ++i) {
    cumulative += begin[i].value;
    if (r < cumulative) return begin[i].id;
  }
  return begin[count - 1].id;  // Rounding left r at the very top.
}

}  // namespace kvserve::engine
