// ScaleKV's layer roles (Li et al., arXiv 2505.19602, adapted to text; see
// ../shared/docs/KV-POLICIES.md section 3): a calibration measures each layer's Attention
// Selectivity Index, the layers with the lowest z-scores are "drafters" (broad attention,
// large KV budgets) and the rest "refiners" (concentrated attention, small budgets). The
// calibration (kvserve-eval --calibrate-scalekv) writes them to a JSON budget file that the
// server loads (kvserve --scalekv-budgets FILE) and the scalekv policy turns into per-layer
// budgets.
//
// Text has no "scales": the current map is the last `window` positions a query sees and the
// history is everything before them (ours, as in KV-POLICIES.md).
#ifndef KVSERVE_ENGINE_POLICY_SCALEKV_BUDGETS_H_
#define KVSERVE_ENGINE_POLICY_SCALEKV_BUDGETS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/policy/kv_policy.h"

namespace kvserve::engine {

struct ScaleKvBudgets {
  std::string model;            // Name of the model it was calibrated on (informational).
  int32_t window = 16;          // Current-map width used by the calibration.
  int32_t top_k = 16;           // K' of the history top-K' ratio.
  int64_t queries = 0;          // Queries averaged per layer.
  std::vector<double> asi;      // Per layer: mean Attention Selectivity Index.
  std::vector<double> z;        // Per layer: (asi - mean) / (sd + 1e-6) over layers.
  std::vector<bool> drafter;    // Per layer.

  int32_t num_layers() const { return static_cast<int32_t>(asi.size()); }
};

// ASI of one query (paper eq. 2 with "+"): the attention it pays to the current map (the last
// `window` of the visible positions) plus the sum of its `top_k` largest attention weights in
// the history (the positions before). `attention` is a distribution over the visible positions
// (its last element is the query itself).
double AttentionSelectivity(absl::Span<const float> attention, int32_t window, int32_t top_k);

// Fills z and drafter from asi (paper eq. 3 over layers): the `drafters` layers with the
// lowest z are drafters (ties to the lower layer). INVALID_ARGUMENT unless 1 <= drafters <
// layers.
absl::Status ClassifyLayers(int32_t drafters, ScaleKvBudgets& budgets);

// Per-layer budget multipliers (mean exactly 1, so the average budget equals the uniform
// one, paper eq. 4 with delta = 0): refiners get `refiner` (in (0, 1]; 1 = uniform), drafters
// share the rest equally; a drafter never gets more than 1 / keep (its whole cache), the excess
// going back to the refiners.
std::vector<double> LayerBudgetScales(const std::vector<bool>& drafter, double keep,
                                      double refiner);

std::string ScaleKvBudgetsToJson(const ScaleKvBudgets& budgets);
// INVALID_ARGUMENT (naming the problem) for malformed text or inconsistent fields.
absl::StatusOr<ScaleKvBudgets> ParseScaleKvBudgets(std::string_view json);
// NOT_FOUND / INVALID_ARGUMENT with the path in the message.
absl::StatusOr<ScaleKvBudgets> LoadScaleKvBudgets(const std::string& path);
// The policy context a --scalekv-budgets flag gives (the server's, kvserve-bench's,
// kvserve-eval's): empty for an empty path, else the loaded file; INVALID_ARGUMENT naming the
// flag and the file's problem.
absl::StatusOr<KvPolicyContext> LoadKvPolicyContext(const std::string& scalekv_budgets_path);
// INVALID_ARGUMENT (naming the file `path` and the model) unless the budgets have one layer per
// model layer: a file calibrated on another model.
absl::Status CheckScaleKvBudgetsFit(const ScaleKvBudgets& budgets, std::string_view path,
                                    std::string_view model_name, int32_t model_layers);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_POLICY_SCALEKV_BUDGETS_H_
