#include "engine/policy/policy_spec.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kvserve::engine {
namespace {

bool IsIdentifier(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

absl::Status SpecError(std::string_view text, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      "bad KV policy spec \"", std::string(text.substr(0, 200)), "\": ", std::string(what),
      " (expected NAME or NAME:key=value,..., e.g. \"h2o:keep=0.5,recent=0.1\")"));
}

}  // namespace

std::string PolicySpec::ToString() const {
  std::string out = name;
  char sep = ':';
  for (const auto& [key, value] : params) {
    char number[32];
    std::snprintf(number, sizeof(number), "%g", value);
    absl::StrAppend(&out, std::string(1, sep), key, "=", number);
    sep = ',';
  }
  return out;
}

absl::StatusOr<PolicySpec> ParsePolicySpec(std::string_view text) {
  if (text.size() > 1024) return SpecError(text, "longer than 1024 characters");
  PolicySpec spec;
  const size_t colon = text.find(':');
  spec.name = std::string(text.substr(0, colon));
  if (!IsIdentifier(spec.name)) {
    return SpecError(text, absl::StrCat("policy name \"", spec.name, "\" is not [a-z0-9_]+"));
  }
  if (colon == std::string_view::npos) return spec;
  const std::string params(text.substr(colon + 1));
  for (absl::string_view part : absl::StrSplit(params, ',')) {
    const size_t eq = part.find('=');
    if (eq == absl::string_view::npos) {
      return SpecError(text, absl::StrCat("\"", part, "\" is not key=value"));
    }
    const std::string key(part.substr(0, eq));
    const std::string value(part.substr(eq + 1));
    if (!IsIdentifier(key)) return SpecError(text, absl::StrCat("bad key \"", key, "\""));
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(value.c_str(), &end);
    if (value.empty() || end != value.c_str() + value.size() || errno != 0 || !std::isfinite(v)) {
      return SpecError(text, absl::StrCat("value of ", key, " (\"", value, "\") is not a finite number"));
    }
    if (!spec.params.emplace(key, v).second) {
      return SpecError(text, absl::StrCat("key ", key, " given twice"));
    }
  }
  return spec;
}

}  // namespace kvserve::engine
