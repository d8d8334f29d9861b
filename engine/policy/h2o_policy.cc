#include "engine/policy/h2o_policy.h"

namespace kvserve::engine {

void H2oPolicy::Observe(const AttentionRow& row, PolicyState& state) const {
  thread_local std::vector<float> p;
  SoftmaxInto(row.logits, 1.0f, p);
  for (size_t i = 0; i < p.size(); ++i) state.scores[i] += p[i];
}

}  // namespace kvserve::engine
