#include "engine/policy/scalekv_policy.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvserve::engine {

absl::StatusOr<std::shared_ptr<const ScaleKvPolicy>> ScaleKvPolicy::Create(
    PolicySpec spec, std::shared_ptr<const ScaleKvBudgets> budgets) {
  double refiner = 0.5, window = 16, kernel = 5;
  if (auto it = spec.params.find("refiner"); it != spec.params.end()) refiner = it->second;
  if (auto it = spec.params.find("window"); it != spec.params.end()) window = it->second;
  if (auto it = spec.params.find("kernel"); it != spec.params.end()) kernel = it->second;
  if (!(refiner > 0 && refiner <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV policy scalekv: refiner must be in (0, 1], got ", refiner));
  }
  if (!(window >= 1 && window <= 4096) || window != std::floor(window) ||
      !(kernel >= 1 && kernel <= 63) || kernel != std::floor(kernel)) {
    return absl::InvalidArgumentError(
        "KV policy scalekv: window must be a whole number in [1, 4096] and kernel in [1, 63]");
  }
  absl::StatusOr<ScoringParams> p =
      ReadScoringParams(spec, {.keep = 0.5}, {"refiner", "window", "kernel"});
  if (!p.ok()) return p.status();
  // Checked after the parameters, so a bad spec is INVALID_ARGUMENT whatever the target.
  if (budgets == nullptr) {
    // Not the request's fault: the spec is valid on a server started with a budget file.
    return absl::FailedPreconditionError(
        "KV policy scalekv needs per-layer roles from a calibration: make a budget file with "
        "`kvserve-eval --model FILE --calibrate-scalekv OUT.json` and start kvserve with "
        "--scalekv-budgets OUT.json");
  }
  std::vector<double> scales = LayerBudgetScales(budgets->drafter, p->keep, refiner);
  return std::make_shared<const ScaleKvPolicy>(std::move(spec), *p, static_cast<int32_t>(window),
                                               static_cast<int32_t>(kernel), std::move(scales));
}

void ScaleKvPolicy::Observe(const AttentionRow& row, PolicyState& state) const {
  AccumulateAttention(row.logits, state.scores);
}

std::vector<int32_t> ScaleKvPolicy::Plan(const SequenceKvView& view, PolicyState& state) const {
  state.budget_scale = 1.0;
  return PlanScaled(view, state);
}

std::vector<int32_t> ScaleKvPolicy::PlanLayer(const SequenceKvView& view, int64_t layer,
                                              PolicyState& state) const {
  state.budget_scale = scales_[layer];
  return PlanScaled(view, state);
}

std::vector<int32_t> ScaleKvPolicy::PlanScaled(const SequenceKvView& view,
                                               PolicyState& state) const {
  if (!view.prompt_done) return {};
  const int32_t n = view.num_slots;
  const int32_t seen = n + static_cast<int32_t>(state.evicted_tokens);
  const int32_t budget =
      std::max(Budget(seen, state.budget_scale), window_ + params().sinks + 1);
  state.budget = budget;
  // At the prompt's end, then once a phase of `window_` tokens beyond the budget is in.
  const bool prompt_end = !state.one_shot_done;
  state.one_shot_done = true;
  if (n <= budget || (!prompt_end && n < budget + window_)) return {};
  // Average pool (kernel_ wide, centred) so neighbours of important tokens survive too.
  thread_local std::vector<float> pooled;
  AveragePool(absl::MakeConstSpan(state.scores.data(), n), kernel_, pooled);
  std::vector<int32_t> keep = SelectTopK(pooled, budget, std::min(window_, budget));
  // The next phase is scored by its own queries only.
  std::fill(state.scores.begin(), state.scores.end(), 0.0f);
  return keep;
}

}  // namespace kvserve::engine
