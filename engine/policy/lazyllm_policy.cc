#include "engine/policy/lazyllm_policy.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvserve::engine {

absl::StatusOr<std::shared_ptr<const LazyLlmPolicy>> LazyLlmPolicy::Create(PolicySpec spec) {
  double stages = 3, first = 0.7, keep = 0.3, pool = 1;
  for (const auto& [key, value] : spec.params) {
    if (key == "stages") {
      stages = value;
    } else if (key == "first") {
      first = value;
    } else if (key == "keep") {
      keep = value;
    } else if (key == "pool") {
      pool = value;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("KV policy lazyllm has no parameter \"", key,
                       "\"; it takes stages, first, keep, pool"));
    }
  }
  if (!(stages >= 1 && stages <= 64) || stages != std::floor(stages)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV policy lazyllm: stages must be a whole number in [1, 64], got ", stages));
  }
  if (!(first > 0 && first <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV policy lazyllm: first must be in (0, 1], got ", first));
  }
  if (!(keep > 0 && keep <= first)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV policy lazyllm: keep must be in (0, first] (", first, "), got ", keep));
  }
  if (!(pool >= 1 && pool <= 255) || pool != std::floor(pool) || std::fmod(pool, 2.0) != 1.0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV policy lazyllm: pool must be an odd whole number in [1, 255], got ", pool));
  }
  return std::make_shared<const LazyLlmPolicy>(std::move(spec), static_cast<int32_t>(stages),
                                               first, keep, static_cast<int32_t>(pool));
}

std::vector<LazyStage> LazyLlmPolicy::LazyStages(int32_t n_layers) const {
  std::vector<LazyStage> out;
  for (int32_t i = 1; i <= stages_; ++i) {
    const int32_t after = static_cast<int32_t>(
        static_cast<int64_t>(n_layers) * i / (stages_ + 1)) - 1;
    if (after < 0 || (!out.empty() && after <= out.back().after_layer)) continue;
    const double keep =
        stages_ == 1 ? keep_ : first_ + (keep_ - first_) * (i - 1) / (stages_ - 1);
    out.push_back({.after_layer = after, .keep = static_cast<float>(keep), .pool = pool_});
  }
  return out;
}

}  // namespace kvserve::engine
