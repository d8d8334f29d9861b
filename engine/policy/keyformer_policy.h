// KeyformerPolicy ("keyformer", arXiv 2403.09054): key-token selection by the accumulated
// Gumbel-regularised score
//   f_i = softmax((x_i + zeta_i) / tau_t),  F_i += f_i,  zeta ~ Gumbel(0, 1)
//   tau_t = tau_init + t (tau_end - tau_init) / T   (t = decode step, T = max new tokens)
// over every prompt row (tau_init) and decode step, summed over heads and layers, plus a
// recent window (default 30% of the budget, the paper's best). The noise is keyed by
// (seed, step, layer, head, slot), so runs are reproducible and independent of batching.
// Parameters: keep, recent (0.3), tau_init (1), tau_end (2), sinks, max.
#ifndef KVSERVE_ENGINE_POLICY_KEYFORMER_POLICY_H_
#define KVSERVE_ENGINE_POLICY_KEYFORMER_POLICY_H_

#include "engine/policy/scoring_policy.h"

namespace kvserve::engine {

class KeyformerPolicy : public ScoringPolicy {
 public:
  KeyformerPolicy(PolicySpec spec, ScoringParams params, double tau_init, double tau_end)
      : ScoringPolicy(std::move(spec), params), tau_init_(tau_init), tau_end_(tau_end) {}
  std::string_view name() const override { return "keyformer"; }
  Needs needs() const override { return Needs::kAll; }
  void Observe(const AttentionRow& row, PolicyState& state) const override;

  // The temperature at decode step `step` of a request of `max_new_tokens`.
  double Temperature(int32_t step, int32_t max_new_tokens) const;
  // Standard Gumbel(0, 1) noise for one (seed, step, layer, head, slot) key.
  static float Gumbel(uint64_t seed, int32_t step, int64_t layer, int64_t head, int32_t slot);

 private:
  const double tau_init_;
  const double tau_end_;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_POLICY_KEYFORMER_POLICY_H_
