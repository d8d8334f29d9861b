// Loads llama.cpp's reference outputs for the bundled model
// (tests/testdata/stories260K_reference.json; see tests/testdata/README.md).
#ifndef KVSERVE_TESTS_ENGINE_RUNTIME_REFERENCE_DATA_H_
#define KVSERVE_TESTS_ENGINE_RUNTIME_REFERENCE_DATA_H_

#include <fstream>
#include <string>
#include <vector>

#include "engine/model/vocab.h"
#include "nlohmann/json.hpp"

namespace kvserve::engine::testing {

struct ReferenceCase {
  std::string prompt;
  std::vector<TokenId> prompt_ids;
  std::vector<TokenId> generated_ids;
  std::string generated_text;
  std::vector<std::pair<TokenId, float>> first_top5;  // (id, logit)
};

inline std::string SourcePath(const std::string& relative) {
  return std::string(KVSERVE_SOURCE_DIR) + "/" + relative;
}

inline std::vector<ReferenceCase> LoadReferenceCases() {
  std::ifstream in(SourcePath("tests/testdata/stories260K_reference.json"));
  const nlohmann::json j = nlohmann::json::parse(in);
  std::vector<ReferenceCase> cases;
  for (const auto& r : j.at("results")) {
    ReferenceCase c;
    c.prompt = r.at("prompt").get<std::string>();
    c.prompt_ids = r.at("prompt_ids").get<std::vector<TokenId>>();
    c.generated_ids = r.at("generated_ids").get<std::vector<TokenId>>();
    c.generated_text = r.at("generated_text").get<std::string>();
    for (const auto& t : r.at("first_position_top5_logits")) {
      c.first_top5.emplace_back(t.at("id").get<TokenId>(), t.at("logit").get<float>());
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace kvserve::engine::testing

#endif  // KVSERVE_TESTS_ENGINE_RUNTIME_REFERENCE_DATA_H_
