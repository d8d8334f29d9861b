// ScaleKV calibration on the bundled model and the checked-in held-out texts: every query is
// counted, the roles follow the measured selectivity, the checked-in budget file is exactly
// what the calibration command produces, and scalekv evaluates with it.
#include "tools/scalekv_calibration.h"

#include <algorithm>

#include "gtest/gtest.h"
#include "tools/kv_eval.h"

namespace kvserve::tools {
namespace {

std::string SourcePath(const std::string& relative) {
  return std::string(KVSERVE_SOURCE_DIR) + "/" + relative;
}

class ScaleKvCalibrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto engine = engine::Engine::Create(
        EvalEngineOptions(SourcePath("models/stories260K.gguf"), 16));
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    auto corpus = ReadCorpus(SourcePath("tests/testdata/eval/stories260K_calibration.jsonl"));
    ASSERT_TRUE(corpus.ok()) << corpus.status();
    corpus_ = std::move(*corpus);
  }
  std::unique_ptr<engine::Engine> engine_;
  std::vector<CorpusSequence> corpus_;
};

TEST_F(ScaleKvCalibrationTest, MatchesTheCheckedInBudgetFile) {
  auto budgets = CalibrateScaleKv(*engine_, corpus_, {});
  ASSERT_TRUE(budgets.ok()) << budgets.status();
  ASSERT_EQ(budgets->num_layers(), 5);
  // One query per token from the last prompt token on: 16 texts x (416 - 16 + 1).
  EXPECT_EQ(budgets->queries, 16 * (416 - 16 + 1));
  for (double a : budgets->asi) {
    EXPECT_GT(a, 0.0);
    EXPECT_LE(a, 1.0 + 1e-6);
  }
  // One drafter (8% of 5 layers, at least 1): the least selective layer.
  ASSERT_EQ(std::count(budgets->drafter.begin(), budgets->drafter.end(), true), 1);
  const auto lowest = std::min_element(budgets->asi.begin(), budgets->asi.end());
  EXPECT_TRUE(budgets->drafter[lowest - budgets->asi.begin()]);
  // Nothing of the engine is left behind.
  EXPECT_EQ(engine_->free_kv_blocks(), engine_->total_kv_blocks());

  // The checked-in file: the same layers, roles and counts, and the same statistics up to
  // the last bits of a double (the compiler may contract a*b+c into an FMA differently for
  // another -march=native CPU, so the 17th digit can move between machines).
  auto checked_in = engine::LoadScaleKvBudgets(SourcePath("models/stories260K.scalekv.json"));
  ASSERT_TRUE(checked_in.ok()) << checked_in.status();
  const std::string stale =
      "models/stories260K.scalekv.json is stale: re-run the command in models/README.md";
  EXPECT_EQ(budgets->model, checked_in->model) << stale;
  EXPECT_EQ(budgets->window, checked_in->window) << stale;
  EXPECT_EQ(budgets->top_k, checked_in->top_k) << stale;
  EXPECT_EQ(budgets->queries, checked_in->queries) << stale;
  EXPECT_EQ(budgets->drafter, checked_in->drafter) << stale;
  ASSERT_EQ(budgets->num_layers(), checked_in->num_layers()) << stale;
  for (int32_t l = 0; l < budgets->num_layers(); ++l) {
    EXPECT_NEAR(budgets->asi[l], checked_in->asi[l], 1e-12) << stale << " (layer " << l << ")";
    EXPECT_NEAR(budgets->z[l], checked_in->z[l], 1e-9) << stale << " (layer " << l << ")";
  }

  // Two drafters on request; bad options are refused.
  auto two = CalibrateScaleKv(*engine_, corpus_, {.sequences = 2, .drafters = 2});
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(std::count(two->drafter.begin(), two->drafter.end(), true), 2);
  EXPECT_FALSE(CalibrateScaleKv(*engine_, corpus_, {.drafters = 5}).ok());
  EXPECT_FALSE(CalibrateScaleKv(*engine_, corpus_, {.window = 0}).ok());
  EXPECT_FALSE(CalibrateScaleKv(*engine_, corpus_, {.prompt_tokens = 416}).ok());
}

TEST_F(ScaleKvCalibrationTest, ScaleKvEvaluatesWithTheBudgetFile) {
  auto budgets = engine::LoadScaleKvBudgets(SourcePath("models/stories260K.scalekv.json"));
  ASSERT_TRUE(budgets.ok()) << budgets.status();
  EvalOptions options;
  options.sequences = 2;
  options.bootstrap_samples = 0;
  options.policy_context.scalekv_budgets =
      std::make_shared<const engine::ScaleKvBudgets>(*budgets);
  double bytes[2];
  int i = 0;
  for (const char* spec : {"scalekv:keep=0.3", "scalekv:keep=0.3,refiner=1"}) {
    options.policy_spec = spec;
    auto r = EvaluatePolicy(*engine_, corpus_, options);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->policy_name, "scalekv");
    EXPECT_GT(r->mean_kl.value, 0.0) << spec;
    EXPECT_LT(r->retained_attention_mass, 1.0) << spec;
    EXPECT_LT(r->kv_bytes_per_sequence, r->kv_bytes_full_per_sequence) << spec;
    bytes[i++] = r->kv_bytes_per_sequence;
  }
  // Same average budget: the same bytes within a block per layer.
  EXPECT_NEAR(bytes[0], bytes[1], 5 * engine_->kv_block_bytes());
}

}  // namespace
}  // namespace kvserve::tools
