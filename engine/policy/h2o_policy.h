// H2oPolicy ("h2o", Heavy-Hitter Oracle, arXiv 2306.14048): keeps the tokens with the largest
// accumulated attention F_i += sum over queries of softmax(q.k/sqrt(d))_i (every prompt row and
// every decode step, summed over heads and layers), plus a recent window (default: half the
// budget, the paper's heavy 10% + recent 10%).
#ifndef KVSERVE_ENGINE_POLICY_H2O_POLICY_H_
#define KVSERVE_ENGINE_POLICY_H2O_POLICY_H_

#include "engine/policy/scoring_policy.h"

namespace kvserve::engine {

class H2oPolicy : public ScoringPolicy {
 public:
  H2oPolicy(PolicySpec spec, ScoringParams params) : ScoringPolicy(std::move(spec), params) {}
  std::string_view name() const override { return "h2o"; }
  Needs needs() const override { return Needs::kAll; }
  void Observe(const AttentionRow& row, PolicyState& state) const override;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_POLICY_H2O_POLICY_H_
