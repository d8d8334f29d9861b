// ScaleKvPolicy ("scalekv", arXiv 2505.19602, adapted to text): per-layer KV budgets from a
// calibration. Layers classified as drafters (engine/policy/scalekv_budgets.h) keep a large
// share of the tokens, refiners a small one, with the same average budget as uniform budgets.
// Within a layer, tokens are ranked by the paper's SnapKV-like score: the softmax attention of
// the current map's queries (summed over heads), average-pooled.
//
// Text has no scales; a "phase" is `window` tokens. The cache is compressed when the prompt
// is done (scored by its last `window` queries) and then whenever a layer holds `window`
// slots beyond its budget (scored by the queries since the last compression: the phase's own
// current map, as the released code compresses after each scale). The newest `window` tokens
// are always kept. Each layer keeps its own tokens in its own blocks: the memory saved is real.
//
// Parameters: keep (0.5), refiner (0.5: a refiner's budget relative to keep; 1 = uniform
// budgets, the baseline it is compared with), window (16, the paper's), kernel (5), sinks,
// max.
#ifndef KVSERVE_ENGINE_POLICY_SCALEKV_POLICY_H_
#define KVSERVE_ENGINE_POLICY_SCALEKV_POLICY_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/policy/scalekv_budgets.h"
#include "engine/policy/scoring_policy.h"

namespace kvserve::engine {

class ScaleKvPolicy : public ScoringPolicy {
 public:
  // INVALID_ARGUMENT for bad parameters or without budgets (the message says how to make
  // and load a budget file).
  static absl::StatusOr<std::shared_ptr<const ScaleKvPolicy>> Create(
      PolicySpec spec, std::shared_ptr<const ScaleKvBudgets> budgets);

  ScaleKvPolicy(PolicySpec spec, ScoringParams params, int32_t window, int32_t kernel,
                std::vector<double> scales)
      : ScoringPolicy(std::move(spec), params),
        window_(window),
        kernel_(kernel),
        scales_(std::move(scales)) {}

  std::string_view name() const override { return "scalekv"; }
  Needs needs() const override { return Needs::kLastPromptRows; }
  int32_t ObservationWindow() const override { return window_; }
  void Observe(const AttentionRow& row, PolicyState& state) const override;
  // Layer-shared use (not how the engine runs it): every layer at the uniform budget.
  std::vector<int32_t> Plan(const SequenceKvView& view, PolicyState& state) const override;
  int32_t num_layers() const override { return static_cast<int32_t>(scales_.size()); }
  std::vector<int32_t> PlanLayer(const SequenceKvView& view, int64_t layer,
                                 PolicyState& state) const override;

  // Each layer's budget relative to keep (mean 1).
  const std::vector<double>& layer_scales() const { return scales_; }

 private:
  std::vector<int32_t> PlanScaled(const SequenceKvView& view, PolicyState& state) const;

  const int32_t window_;
  const int32_t kernel_;
  const std::vector<double> scales_;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_POLICY_SCALEKV_POLICY_H_
