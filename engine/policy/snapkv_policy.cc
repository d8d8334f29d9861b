#include "engine/policy/snapkv_policy.h"

#include <algorithm>
#include <cmath>

namespace kvserve::engine {

void SnapKvPolicy::Observe(const AttentionRow& row, PolicyState& state) const {
  if (!row.prefill || state.one_shot_done) return;
  AccumulateAttention(row.logits, state.scores);
}

std::vector<int32_t> SnapKvPolicy::Plan(const SequenceKvView& view, PolicyState& state) const {
  if (!view.prompt_done || state.one_shot_done) return {};
  state.one_shot_done = true;
  const int32_t n = view.num_slots;
  const int32_t budget =
      std::max(Budget(view.prompt_length, state.budget_scale), window_ + params().sinks + 1);
  state.budget = budget;
  if (n <= budget) return {};
  // Average pool (kernel_ wide, centred) so neighbours of important tokens survive too.
  thread_local std::vector<float> pooled;
  AveragePool(absl::MakeConstSpan(state.scores.data(), n), kernel_, pooled);
  // The observation window is the protected "recent" part.
  return SelectTopK(pooled, budget, std::min(window_, n));
}

}  // namespace kvserve::engine
