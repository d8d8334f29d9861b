// LazyLlmPolicy ("lazyllm", Fu et al., arXiv 2407.14057): progressive, layer-wise pruning of
// prompt tokens during prefill. It saves computation (TTFT), not memory: no KV slot is ever
// evicted (Plan keeps everything); the model runner executes the stages (LazyStages) and the
// per-sequence state lives in engine/runtime/lazy_tokens.h.
//
// Schedule for a model of L layers and S stages: stage i (1..S) prunes after layer
// floor(L * i / (S + 1)) - 1 and keeps the fraction k_i of the step's prompt rows, k_i going
// linearly from `first` (stage 1) to `keep` (stage S); with S = 1 the one stage keeps `keep`.
// Stages that would fall before layer 0 or on the layer of an earlier stage are skipped.
// Example, L = 5 (stories260K), defaults: after layers 0, 1, 2 keep 0.7, 0.5, 0.3.
//
// Parameters: stages (3, whole number in [1, 64]), first (0.7), keep (0.3), with
// 0 < keep <= first <= 1, and pool (1, odd whole number in [1, 255]): rank tokens by their
// score averaged over the `pool` positions centred on them (PoolLazyScores), as the llama.cpp
// LazyLLM port does with 13; 1 ranks by the raw score, as the paper. keep = first = 1 prunes
// nothing and is bit-identical to "full".
#ifndef KVSERVE_ENGINE_POLICY_LAZYLLM_POLICY_H_
#define KVSERVE_ENGINE_POLICY_LAZYLLM_POLICY_H_

#include <vector>

#include "absl/status/statusor.h"
#include "engine/policy/kv_policy.h"

namespace kvserve::engine {

class LazyLlmPolicy : public KvPolicy {
 public:
  // INVALID_ARGUMENT for an unknown parameter or an out-of-range value.
  static absl::StatusOr<std::shared_ptr<const LazyLlmPolicy>> Create(PolicySpec spec);

  LazyLlmPolicy(PolicySpec spec, int32_t stages, double first, double keep, int32_t pool)
      : spec_(std::move(spec)), stages_(stages), first_(first), keep_(keep), pool_(pool) {}
  std::string_view name() const override { return "lazyllm"; }
  const PolicySpec& spec() const override { return spec_; }
  // Never evicts: pruned tokens keep their slots (their KV exists for the layers they ran).
  std::vector<int32_t> Plan(const SequenceKvView&, PolicyState&) const override { return {}; }
  std::vector<LazyStage> LazyStages(int32_t n_layers) const override;

 private:
  const PolicySpec spec_;
  const int32_t stages_;
  const double first_;
  const double keep_;
  const int32_t pool_;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_POLICY_LAZYLLM_POLICY_H_
