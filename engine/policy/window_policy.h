// WindowPolicy ("window", StreamingLLM, arXiv 2309.17453): attention sinks (the first
// `sinks` tokens, default 4) plus the most recent tokens; needs no attention statistics.
#ifndef KVSERVE_ENGINE_POLICY_WINDOW_POLICY_H_
#define KVSERVE_ENGINE_POLICY_WINDOW_POLICY_H_

#include "engine/policy/scoring_policy.h"

namespace kvserve::engine {

class WindowPolicy : public ScoringPolicy {
 public:
  // Everything but the sinks is "recent": recent = 1.
  WindowPolicy(PolicySpec spec, ScoringParams params) : ScoringPolicy(std::move(spec), params) {}
  std::string_view name() const override { return "window"; }
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_POLICY_WINDOW_POLICY_H_
