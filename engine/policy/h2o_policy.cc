#include "engine/policy/h2o_policy.h"

namespace kvserve::engine {

void H2oPolicy::Observe(const AttentionRow& row, PolicyState& state) const {
  AccumulateAttention(row.logits, state.scores);
}

}  // namespace kvserve::engine
