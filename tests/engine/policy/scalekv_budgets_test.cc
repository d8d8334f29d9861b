// ScaleKV's calibration math against the paper's formulas (arXiv 2505.19602, eqs. 2-4) on
// hand-made inputs, and the budget file format.
#include "engine/policy/scalekv_budgets.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvserve::engine {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(AttentionSelectivityTest, CurrentMapPlusHistoryTopK) {
  // 8 visible positions; window 3 = positions 5..7 (0.1 + 0.05 + 0.05 = 0.2); history 0..4 =
  // {0.3, 0.05, 0.25, 0.1, 0.1}: top-2 = 0.3 + 0.25.
  const std::vector<float> a = {0.3f, 0.05f, 0.25f, 0.1f, 0.1f, 0.1f, 0.05f, 0.05f};
  EXPECT_NEAR(AttentionSelectivity(a, 3, 2), 0.2 + 0.55, 1e-6);
  // K' larger than the history takes all of it: ASI = 1 for any distribution.
  EXPECT_NEAR(AttentionSelectivity(a, 3, 100), 1.0, 1e-6);
  // Concentrated attention scores higher than broad attention (refiner vs drafter).
  std::vector<float> broad(64, 1.0f / 64), peaked(64, 0.0f);
  peaked[10] = 0.9f;
  peaked[63] = 0.1f;
  EXPECT_LT(AttentionSelectivity(broad, 4, 4), AttentionSelectivity(peaked, 4, 4));
  EXPECT_NEAR(AttentionSelectivity(broad, 4, 4), 8.0 / 64, 1e-6);
  // Fewer positions than the window: everything is the current map.
  EXPECT_NEAR(AttentionSelectivity({0.5f, 0.5f}, 16, 16), 1.0, 1e-6);
}

TEST(ClassifyLayersTest, LowestZScoresAreDrafters) {
  ScaleKvBudgets b;
  b.asi = {0.9, 0.2, 0.8, 0.3, 0.7};
  ASSERT_TRUE(ClassifyLayers(2, b).ok());
  EXPECT_THAT(b.drafter, ElementsAre(false, true, false, true, false));
  // z = (asi - mean) / sd: mean 0.58, population sd 0.2786.
  const double mean = 0.58, sd = std::sqrt((0.1024 + 0.1444 + 0.0484 + 0.0784 + 0.0144) / 5);
  for (int l = 0; l < 5; ++l) EXPECT_NEAR(b.z[l], (b.asi[l] - mean) / (sd + 1e-6), 1e-9);
  // Ties go to the lower layer.
  b.asi = {0.5, 0.5, 0.5};
  ASSERT_TRUE(ClassifyLayers(1, b).ok());
  EXPECT_THAT(b.drafter, ElementsAre(true, false, false));
  EXPECT_FALSE(ClassifyLayers(0, b).ok());
  EXPECT_FALSE(ClassifyLayers(3, b).ok());
}

TEST(LayerBudgetScalesTest, SameAverageBudgetAsUniform) {
  const std::vector<bool> roles = {true, false, false, false, false, true, false, false};
  // Refiners 0.5 x keep; the 2 drafters share the rest: (8 - 6 x 0.5) / 2 = 2.5.
  std::vector<double> s = LayerBudgetScales(roles, 0.2, 0.5);
  EXPECT_THAT(s, ElementsAre(2.5, 0.5, 0.5, 0.5, 0.5, 2.5, 0.5, 0.5));
  EXPECT_NEAR(std::accumulate(s.begin(), s.end(), 0.0) / 8, 1.0, 1e-12);
  // refiner = 1 is the uniform baseline.
  EXPECT_THAT(LayerBudgetScales(roles, 0.2, 1.0), ElementsAre(1, 1, 1, 1, 1, 1, 1, 1));
  // A drafter cannot keep more than everything (1 / keep); the excess goes to refiners and
  // the mean stays 1.
  s = LayerBudgetScales(roles, 0.5, 0.25);
  EXPECT_THAT(s[0], DoubleNear(2.0, 1e-12));
  EXPECT_THAT(s[1], DoubleNear((8 - 2 * 2.0) / 6, 1e-12));
  EXPECT_NEAR(std::accumulate(s.begin(), s.end(), 0.0) / 8, 1.0, 1e-12);
}

TEST(ScaleKvBudgetsFileTest, RoundTripsAndRejectsMalformedFiles) {
  ScaleKvBudgets b;
  b.model = "stories260K";
  b.queries = 1234;
  b.asi = {0.3, 0.6, 0.9};
  ASSERT_TRUE(ClassifyLayers(1, b).ok());
  const std::string json = ScaleKvBudgetsToJson(b);
  auto parsed = ParseScaleKvBudgets(json);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->model, "stories260K");
  EXPECT_EQ(parsed->queries, 1234);
  EXPECT_EQ(parsed->asi, b.asi);
  EXPECT_EQ(parsed->drafter, b.drafter);

  const std::pair<std::string, std::string> bad[] = {
      {"not json", "not a JSON object"},
      {R"({"format": "other", "layers": []})", "\"format\" must be"},
      {R"({"format": "kvserve-scalekv-budgets/1", "layers": [{"layer": 0, "asi": 1, "role": "drafter"}]})",
       ">= 2 layers"},
      {R"({"format": "kvserve-scalekv-budgets/1", "layers": [{"layer": 0, "asi": 1, "role": "drafter"},
          {"layer": 2, "asi": 1, "role": "refiner"}]})",
       "layers[1] needs \"layer\": 1"},
      {R"({"format": "kvserve-scalekv-budgets/1", "layers": [{"layer": 0, "asi": 1, "role": "boss"},
          {"layer": 1, "asi": 1, "role": "refiner"}]})",
       "role must be"},
      {R"({"format": "kvserve-scalekv-budgets/1", "layers": [{"layer": 0, "asi": 1, "role": "refiner"},
          {"layer": 1, "asi": 1, "role": "refiner"}]})",
       "at least one drafter"},
  };
  for (const auto& [text, message] : bad) {
    auto r = ParseScaleKvBudgets(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(message));
  }

  EXPECT_EQ(LoadScaleKvBudgets("/nonexistent/budgets.json").status().code(),
            absl::StatusCode::kNotFound);
  const std::string path = ::testing::TempDir() + "/scalekv_budgets_test.json";
  std::ofstream(path) << json;
  auto loaded = LoadScaleKvBudgets(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->drafter, b.drafter);
  std::ofstream(path) << "{";
  EXPECT_THAT(std::string(LoadScaleKvBudgets(path).status().message()), HasSubstr(path));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kvserve::engine
