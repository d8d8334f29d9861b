// SnapKvPolicy ("snapkv", arXiv 2404.14469): one-shot prompt compression when the prompt is
// done. Scores s_i = sum over the last `window` prompt queries of softmax(q.k/sqrt(d))_i
// (summed over heads and layers), smoothed by a 1-D average pool of width `kernel`; keeps the
// observation window plus the best-scoring prompt tokens up to ceil(keep * prompt length).
// Generated tokens are never evicted afterwards. Parameters: keep, window (8), kernel (5), sinks.
#ifndef KVSERVE_ENGINE_POLICY_SNAPKV_POLICY_H_
#define KVSERVE_ENGINE_POLICY_SNAPKV_POLICY_H_

#include "engine/policy/scoring_policy.h"

namespace kvserve::engine {

class SnapKvPolicy : public ScoringPolicy {
 public:
  SnapKvPolicy(PolicySpec spec, ScoringParams params, int32_t window, int32_t kernel)
      : ScoringPolicy(std::move(spec), params), window_(window), kernel_(kernel) {}
  std::string_view name() const override { return "snapkv"; }
  Needs needs() const override { return Needs::kLastPromptRows; }
  int32_t ObservationWindow() const override { return window_; }
  void Observe(const AttentionRow& row, PolicyState& state) const override;
  std::vector<int32_t> Plan(const SequenceKvView& view, PolicyState& state) const override;

 private:
  const int32_t window_;
  const int32_t kernel_;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_POLICY_SNAPKV_POLICY_H_
