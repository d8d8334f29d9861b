#include "engine/policy/scoring_policy.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kvserve::engine {

int32_t ScoringPolicy::Budget(int32_t num_tokens, double scale) const {
  const double keep = std::min(1.0, params_.keep * scale);
  int32_t budget = static_cast<int32_t>(std::ceil(keep * num_tokens - 1e-9));
  if (params_.max_tokens > 0) budget = std::min(budget, params_.max_tokens);
  return std::max(budget, params_.sinks + 1);
}

std::vector<int32_t> ScoringPolicy::SelectTopK(absl::Span<const float> scores, int32_t budget,
                                               int32_t recent) const {
  const int32_t n = static_cast<int32_t>(scores.size());
  if (budget >= n) return {};
  const int32_t sinks = std::min(params_.sinks, budget);
  recent = std::clamp(recent, 1, budget - sinks);  // The newest token is always kept.
  const int32_t recent_start = n - recent;
  std::vector<int32_t> keep;
  keep.reserve(budget);
  for (int32_t i = 0; i < sinks; ++i) keep.push_back(i);
  std::vector<int32_t> candidates;
  for (int32_t i = sinks; i < recent_start; ++i) candidates.push_back(i);
  const int32_t take = budget - sinks - recent;
  // Highest score first; equal scores keep the earlier position (stable, reproducible).
  std::partial_sort(candidates.begin(), candidates.begin() + take, candidates.end(),
                    [&](int32_t a, int32_t b) {
                      return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
                    });
  candidates.resize(take);
  keep.insert(keep.end(), candidates.begin(), candidates.end());
  for (int32_t i = recent_start; i < n; ++i) keep.push_back(i);
  std::sort(keep.begin(), keep.end());
  return keep;
}

std::vector<int32_t> ScoringPolicy::Plan(const SequenceKvView& view, PolicyState& state) const {
  if (!view.prompt_done) return {};
  const int32_t budget =
      Budget(view.num_slots + static_cast<int32_t>(state.evicted_tokens), state.budget_scale);
  state.budget = budget;
  if (view.num_slots <= budget) return {};
  const int32_t recent = static_cast<int32_t>(std::ceil(params_.recent * budget - 1e-9));
  return SelectTopK(state.scores, budget, recent);
}

absl::StatusOr<ScoringParams> ReadScoringParams(const PolicySpec& spec,
                                                const ScoringParams& defaults,
                                                const std::vector<std::string>& allowed) {
  ScoringParams p = defaults;
  for (const auto& [key, value] : spec.params) {
    if (key == "keep") {
      if (!(value > 0 && value <= 1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "KV policy ", spec.name, ": keep must be in (0, 1], got ", value));
      }
      p.keep = value;
    } else if (key == "max") {
      if (value < 0 || value != std::floor(value) || value > 1e9) {
        return absl::InvalidArgumentError(absl::StrCat(
            "KV policy ", spec.name, ": max must be a whole number of tokens >= 0, got ", value));
      }
      p.max_tokens = static_cast<int32_t>(value);
    } else if (key == "recent") {
      if (!(value >= 0 && value <= 1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "KV policy ", spec.name, ": recent must be in [0, 1], got ", value));
      }
      p.recent = value;
    } else if (key == "sinks") {
      if (value < 0 || value != std::floor(value) || value > 1e6) {
        return absl::InvalidArgumentError(absl::StrCat(
            "KV policy ", spec.name, ": sinks must be a whole number >= 0, got ", value));
      }
      p.sinks = static_cast<int32_t>(value);
    } else if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::vector<std::string> all = {"keep", "max", "recent", "sinks"};
      all.insert(all.end(), allowed.begin(), allowed.end());
      return absl::InvalidArgumentError(absl::StrCat("KV policy ", spec.name,
                                                     " has no parameter \"", key,
                                                     "\"; it takes: ", absl::StrJoin(all, ", ")));
    }
  }
  return p;
}

void SoftmaxInto(absl::Span<const float> logits, float tau, std::vector<float>& out) {
  out.resize(logits.size());
  if (logits.empty()) return;
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    out[i] = std::exp((logits[i] - max) / tau);
    sum += out[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (float& v : out) v *= inv;
}

void AccumulateAttention(absl::Span<const float> logits, std::vector<float>& scores) {
  thread_local std::vector<float> p;
  SoftmaxInto(logits, 1.0f, p);
  for (size_t i = 0; i < p.size(); ++i) scores[i] += p[i];
}

void AveragePool(absl::Span<const float> scores, int32_t kernel, std::vector<float>& out) {
  const int64_t n = static_cast<int64_t>(scores.size());
  const int64_t half = kernel / 2;
  out.assign(n, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    double sum = 0;
    const int64_t lo = std::max<int64_t>(0, i - half), hi = std::min(n - 1, i + half);
    for (int64_t j = lo; j <= hi; ++j) sum += scores[j];
    out[i] = static_cast<float>(sum / static_cast<double>(hi - lo + 1));
  }
}

}  // namespace kvserve::engine
