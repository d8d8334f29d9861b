// PolicySpec: a KV policy chosen by a spec string, e.g. "keyformer:keep=0.5,recent=0.3".
// Plain value type.
#ifndef KVSERVE_ENGINE_POLICY_POLICY_SPEC_H_
#define KVSERVE_ENGINE_POLICY_POLICY_SPEC_H_

#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kvserve::engine {

struct PolicySpec {
  std::string name;                      // Lower-case policy name ("full", "h2o", ...).
  std::map<std::string, double> params;  // Numeric parameters by name.

  std::string ToString() const;          // Canonical form: name:k=v,... in key order.
};

// Parses "name" or "name:key=value,key=value". Names and keys are [a-z0-9_]+, values are
// finite numbers. INVALID_ARGUMENT with the offending part quoted otherwise.
absl::StatusOr<PolicySpec> ParsePolicySpec(std::string_view text);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_POLICY_POLICY_SPEC_H_
