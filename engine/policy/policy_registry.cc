// CreateKvPolicy: spec string -> policy object, with each policy's defaults.
#include <cmath>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/common/status_macros.h"
#include "engine/policy/full_policy.h"
#include "engine/policy/h2o_policy.h"
#include "engine/policy/keyformer_policy.h"
#include "engine/policy/kv_policy.h"
#include "engine/policy/lazyllm_policy.h"
#include "engine/policy/scalekv_policy.h"
#include "engine/policy/snapkv_policy.h"
#include "engine/policy/window_policy.h"

namespace kvserve::engine {
namespace {

absl::StatusOr<double> Param(const PolicySpec& spec, const std::string& key, double fallback,
                             double lo, double hi) {
  auto it = spec.params.find(key);
  const double v = it == spec.params.end() ? fallback : it->second;
  if (!(v >= lo && v <= hi)) {
    return absl::InvalidArgumentError(absl::StrCat("KV policy ", spec.name, ": ", key,
                                                   " must be in [", lo, ", ", hi, "], got ", v));
  }
  return v;
}

}  // namespace

std::vector<std::string> RegisteredKvPolicyNames() {
  return {"full", "window", "h2o", "keyformer", "snapkv", "lazyllm", "scalekv"};
}

absl::StatusOr<std::shared_ptr<const KvPolicy>> CreateKvPolicy(std::string_view text,
                                                               const KvPolicyContext& context) {
  KV_ASSIGN_OR_RETURN(PolicySpec spec, ParsePolicySpec(text));
  if (spec.name == "full") {
    if (!spec.params.empty()) {
      return absl::InvalidArgumentError("KV policy full takes no parameters");
    }
    return std::make_shared<const FullPolicy>(spec);
  }
  if (spec.name == "window") {
    KV_ASSIGN_OR_RETURN(ScoringParams p,
                        ReadScoringParams(spec, {.keep = 0.5, .recent = 1.0, .sinks = 4}, {}));
    p.recent = 1.0;  // Everything that is not a sink is the window.
    return std::make_shared<const WindowPolicy>(spec, p);
  }
  if (spec.name == "h2o") {
    KV_ASSIGN_OR_RETURN(ScoringParams p,
                        ReadScoringParams(spec, {.keep = 0.5, .recent = 0.5}, {}));
    return std::make_shared<const H2oPolicy>(spec, p);
  }
  if (spec.name == "keyformer") {
    KV_ASSIGN_OR_RETURN(ScoringParams p, ReadScoringParams(spec, {.keep = 0.5, .recent = 0.3},
                                                           {"tau_init", "tau_end"}));
    KV_ASSIGN_OR_RETURN(const double tau_init, Param(spec, "tau_init", 1.0, 1e-3, 100));
    KV_ASSIGN_OR_RETURN(const double tau_end, Param(spec, "tau_end", 2.0, 1e-3, 100));
    return std::make_shared<const KeyformerPolicy>(spec, p, tau_init, tau_end);
  }
  if (spec.name == "snapkv") {
    KV_ASSIGN_OR_RETURN(ScoringParams p,
                        ReadScoringParams(spec, {.keep = 0.5}, {"window", "kernel"}));
    KV_ASSIGN_OR_RETURN(const double window, Param(spec, "window", 8, 1, 4096));
    KV_ASSIGN_OR_RETURN(const double kernel, Param(spec, "kernel", 5, 1, 63));
    if (window != std::floor(window) || kernel != std::floor(kernel)) {
      return absl::InvalidArgumentError("KV policy snapkv: window and kernel must be whole numbers");
    }
    return std::make_shared<const SnapKvPolicy>(spec, p, static_cast<int32_t>(window),
                                                static_cast<int32_t>(kernel));
  }
  if (spec.name == "lazyllm") return LazyLlmPolicy::Create(std::move(spec));
  if (spec.name == "scalekv") return ScaleKvPolicy::Create(std::move(spec), context.scalekv_budgets);
  return absl::InvalidArgumentError(absl::StrCat("unknown KV policy \"", spec.name,
                                                 "\"; known: ",
                                                 absl::StrJoin(RegisteredKvPolicyNames(), ", ")));
}

}  // namespace kvserve::engine
