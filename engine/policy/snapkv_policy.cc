#include "engine/policy/snapkv_policy.h"

#include <algorithm>
#include <cmath>

namespace kvserve::engine {

void SnapKvPolicy::Observe(const AttentionRow& row, PolicyState& state) const {
  if (!row.prefill || state.one_shot_done) return;
  thread_local std::vector<float> p;
  SoftmaxInto(row.logits, 1.0f, p);
  for (size_t i = 0; i < p.size(); ++i) state.scores[i] += p[i];
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
  std::vector<float> pooled(n, 0.0f);
  const int32_t half = kernel_ / 2;
  for (int32_t i = 0; i < n; ++i) {
    double sum = 0;
    int32_t count = 0;
    for (int32_t j = std::max(0, i - half); j <= std::min(n - 1, i + half); ++j) {
      sum += state.scores[j];
      ++count;
    }
    pooled[i] = static_cast<float>(sum / count);
  }
  // The observation window is the protected "recent" part.
  return SelectTopK(pooled, budget, std::min(window_, n));
}

}  // namespace kvserve::engine
