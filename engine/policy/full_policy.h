// FullPolicy ("full"): keeps every token; bit-identical to running without a policy.
#ifndef KVSERVE_ENGINE_POLICY_FULL_POLICY_H_
#define KVSERVE_ENGINE_POLICY_FULL_POLICY_H_

#include "engine/policy/kv_policy.h"

namespace kvserve::engine {

class FullPolicy : public KvPolicy {
 public:
  explicit FullPolicy(PolicySpec spec) : spec_(std::move(spec)) {}
  std::string_view name() const override { return "full"; }
  const PolicySpec& spec() const override { return spec_; }
  std::vector<int32_t> Plan(const SequenceKvView&, PolicyState&) const override { return {}; }

 private:
  const PolicySpec spec_;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_POLICY_FULL_POLICY_H_
