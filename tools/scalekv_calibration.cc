#include "tools/scalekv_calibration.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "engine/common/status_macros.h"

namespace kvserve::tools {

absl::StatusOr<engine::ScaleKvBudgets> CalibrateScaleKv(engine::Engine& engine,
                                                        absl::Span<const CorpusSequence> corpus,
                                                        const CalibrationOptions& options) {
  const int32_t layers = static_cast<int32_t>(engine.config().n_layers);
  const int32_t n = std::min<int32_t>(options.sequences, static_cast<int32_t>(corpus.size()));
  if (n < 1 || options.prompt_tokens < 1 || options.window < 1 || options.top_k < 0) {
    return absl::InvalidArgumentError(
        "calibration needs >= 1 sequence, prompt_tokens >= 1, window >= 1 and top_k >= 0");
  }
  if (layers < 2) return absl::InvalidArgumentError("ScaleKV needs a model with >= 2 layers");
  engine::ScaleKvBudgets budgets;
  budgets.model = engine.config().name;
  budgets.window = options.window;
  budgets.top_k = options.top_k;
  budgets.asi.assign(layers, 0.0);

  // All texts run together: one prefill step, then one teacher-forced token per step. Each
  // step's last query per sequence and layer is one ASI sample.
  std::vector<engine::SequenceId> ids;
  for (int32_t i = 0; i < n; ++i) {
    const CorpusSequence& text = corpus[i];
    if (static_cast<int32_t>(text.tokens.size()) <= options.prompt_tokens) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "calibration text %d has %d tokens; needs more than --prompt-tokens %d", i,
          text.tokens.size(), options.prompt_tokens));
    }
    engine::SequenceSpec spec;
    spec.prompt.assign(text.tokens.begin(), text.tokens.begin() + options.prompt_tokens);
    spec.sampling = {.temperature = 0.0f};
    spec.max_new_tokens = static_cast<int32_t>(text.tokens.size()) - options.prompt_tokens;
    spec.record_attention = true;
    const engine::SequenceId id = 1000 + i;
    KV_RETURN_IF_ERROR(engine.AddSequence(id, std::move(spec)));
    ids.push_back(id);
  }
  std::vector<int32_t> next(n, options.prompt_tokens);  // Next corpus token to force.
  absl::Status status = absl::OkStatus();
  while (status.ok()) {
    engine::StepPlan plan;
    for (int32_t i = 0; i < n; ++i) {
      if (next[i] < 0) continue;
      plan.entries.push_back({.sequence = ids[i], .num_tokens = engine.PendingTokens(ids[i])});
    }
    if (plan.empty()) break;
    absl::StatusOr<engine::StepResult> r = engine.Step(plan);
    if (!r.ok()) {
      status = r.status();
      break;
    }
    for (int32_t i = 0; i < n; ++i) {
      if (next[i] < 0) continue;
      for (int32_t l = 0; l < layers; ++l) {
        budgets.asi[l] += engine::AttentionSelectivity(engine.LastQueryAttention(ids[i], l),
                                                       options.window, options.top_k);
      }
      ++budgets.queries;
      const std::vector<engine::TokenId>& tokens = corpus[i].tokens;
      if (next[i] == static_cast<int32_t>(tokens.size())) {
        next[i] = -1;
        continue;
      }
      status = engine.ForceNextToken(ids[i], tokens[next[i]++]);
      if (!status.ok()) break;
    }
  }
  for (engine::SequenceId id : ids) engine.RemoveSequence(id);
  KV_RETURN_IF_ERROR(status);
  for (double& a : budgets.asi) a /= static_cast<double>(budgets.queries);
  const int32_t drafters =
      options.drafters > 0
          ? options.drafters
          : std::max(1, static_cast<int32_t>(std::lround(0.08 * layers)));
  KV_RETURN_IF_ERROR(engine::ClassifyLayers(drafters, budgets));
  return budgets;
}

}  // namespace kvserve::tools
