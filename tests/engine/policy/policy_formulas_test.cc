// Each KV policy against its paper's formulas on hand-made attention rows (the evidence behind
// the README's reading of the evaluation): what a policy accumulates per row, which tokens its
// plan keeps, and for Keyformer the noise and temperature schedule themselves.
#include <cmath>
#include <vector>

#include "engine/policy/keyformer_policy.h"
#include "engine/policy/kv_policy.h"
#include "engine/policy/scalekv_budgets.h"
#include "engine/policy/scalekv_policy.h"
#include "engine/policy/scoring_policy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvserve::engine {
namespace {

using ::testing::ElementsAre;

std::shared_ptr<const KvPolicy> Make(const std::string& spec, const KvPolicyContext& c = {}) {
  auto p = CreateKvPolicy(spec, c);
  EXPECT_TRUE(p.ok()) << spec << ": " << p.status();
  return *p;
}

std::vector<double> Softmax(const std::vector<float>& x, double tau = 1.0) {
  double m = *std::max_element(x.begin(), x.end());
  std::vector<double> e(x.size());
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += (e[i] = std::exp((x[i] - m) / tau));
  for (double& v : e) v /= s;
  return e;
}

AttentionRow Row(const std::vector<float>& logits, int64_t layer = 0, int64_t head = 0,
                 bool prefill = false) {
  return {.layer = layer,
          .head = head,
          .query_slot = static_cast<int32_t>(logits.size()) - 1,
          .prefill = prefill,
          .logits = absl::MakeConstSpan(logits)};
}

// H2O (arXiv 2306.14048, eq. for the accumulated score): F_i += softmax(q.k / sqrt(d))_i for
// every query, over heads and layers; keep the top heavy hitters + the recent window.
TEST(PolicyFormulaTest, H2oAccumulatesSoftmaxAndKeepsHeavyHittersPlusRecent) {
  auto h2o = Make("h2o:keep=0.5,recent=0.5");
  PolicyState s;
  s.scores.assign(8, 0.0f);
  const std::vector<float> a = {3, 0, 0, 2, 0, 0, 0, 0}, b = {0, 0, 4, 0, 0, 0, 0, 1};
  h2o->Observe(Row(a, 0, 0), s);
  h2o->Observe(Row(b, 1, 3), s);
  const std::vector<double> pa = Softmax(a), pb = Softmax(b);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(s.scores[i], pa[i] + pb[i], 1e-6) << i;
  // Budget ceil(0.5 * 8) = 4: recent 2 (slots 6, 7) + the 2 heaviest of slots 0..5: 0 and 2.
  EXPECT_THAT(h2o->Plan({.num_slots = 8, .prompt_length = 8, .prompt_done = true}, s),
              ElementsAre(0, 2, 6, 7));
}

// StreamingLLM (arXiv 2309.17453): the first `sinks` tokens and the most recent ones.
TEST(PolicyFormulaTest, WindowKeepsSinksAndTheNewestTokens) {
  auto window = Make("window:keep=0.4,sinks=2");
  PolicyState s;
  s.scores.assign(10, 0.0f);
  s.scores[5] = 100;  // Scores are ignored: the window needs no statistics.
  EXPECT_EQ(window->needs(), KvPolicy::Needs::kNone);
  EXPECT_THAT(window->Plan({.num_slots = 10, .prompt_length = 10, .prompt_done = true}, s),
              ElementsAre(0, 1, 8, 9));
}

// Keyformer (arXiv 2403.09054, eqs. 3-5): f_i = softmax((x_i + zeta_i) / tau_t) with standard
// Gumbel noise and tau_t = tau_init + t (tau_end - tau_init) / T.
TEST(PolicyFormulaTest, KeyformerGumbelNoiseAndTemperatureSchedule) {
  // Standard Gumbel: mean = Euler-Mascheroni 0.5772, variance pi^2 / 6, and reproducible.
  double sum = 0, sq = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double g = KeyformerPolicy::Gumbel(7, 0, 1, 2, i);
    sum += g;
    sq += g * g;
  }
  const double mean = sum / n, var = sq / n - mean * mean;
  EXPECT_NEAR(mean, 0.5772, 0.01);
  EXPECT_NEAR(var, M_PI * M_PI / 6, 0.03);
  EXPECT_EQ(KeyformerPolicy::Gumbel(7, 3, 1, 2, 5), KeyformerPolicy::Gumbel(7, 3, 1, 2, 5));
  EXPECT_NE(KeyformerPolicy::Gumbel(7, 3, 1, 2, 5), KeyformerPolicy::Gumbel(8, 3, 1, 2, 5));
  EXPECT_NE(KeyformerPolicy::Gumbel(7, 3, 1, 2, 5), KeyformerPolicy::Gumbel(7, 4, 1, 2, 5));

  auto policy = Make("keyformer:keep=0.5,tau_init=1,tau_end=3");
  const auto& k = static_cast<const KeyformerPolicy&>(*policy);
  EXPECT_DOUBLE_EQ(k.Temperature(0, 100), 1.0);
  EXPECT_DOUBLE_EQ(k.Temperature(50, 100), 2.0);
  EXPECT_DOUBLE_EQ(k.Temperature(100, 100), 3.0);
  EXPECT_DOUBLE_EQ(k.Temperature(500, 100), 3.0);  // Held at tau_end past T.

  // One decode row at step 50 of 100 (tau 2), seed 9, layer 1, head 2.
  PolicyState s{.decode_step = 50, .seed = 9, .max_new_tokens = 100};
  s.scores.assign(5, 0.0f);
  const std::vector<float> x = {1.0f, -0.5f, 2.0f, 0.0f, 0.25f};
  k.Observe(Row(x, 1, 2), s);
  std::vector<float> noisy(5);
  for (int i = 0; i < 5; ++i) noisy[i] = x[i] + KeyformerPolicy::Gumbel(9, 50, 1, 2, i);
  const std::vector<double> want = Softmax(noisy, 2.0);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(s.scores[i], want[i], 1e-6) << i;
  // Prompt rows use step 0 and tau_init.
  PolicyState p{.decode_step = 50, .seed = 9, .max_new_tokens = 100};
  p.scores.assign(5, 0.0f);
  k.Observe(Row(x, 1, 2, /*prefill=*/true), p);
  for (int i = 0; i < 5; ++i) noisy[i] = x[i] + KeyformerPolicy::Gumbel(9, 0, 1, 2, i);
  const std::vector<double> want_prefill = Softmax(noisy, 1.0);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(p.scores[i], want_prefill[i], 1e-6) << i;
}

// SnapKV (arXiv 2404.14469, Algorithm 1): votes of the last `window` prompt queries,
// average-pooled (kernel), top ceil(keep * prompt) plus the window itself, once.
// The two shared building blocks on hand-made numbers.
TEST(PolicyFormulaTest, AccumulateAttentionAndAveragePool) {
  std::vector<float> scores = {1, 0, 0};
  AccumulateAttention(std::vector<float>{0, std::log(3.0f)}, scores);  // softmax: 1/4, 3/4.
  EXPECT_FLOAT_EQ(scores[0], 1.25f);
  EXPECT_FLOAT_EQ(scores[1], 0.75f);
  EXPECT_EQ(scores[2], 0.0f);  // Beyond the row: untouched.
  std::vector<float> pooled;
  AveragePool(std::vector<float>{3, 0, 6, 0, 9}, 3, pooled);
  EXPECT_THAT(pooled, ElementsAre(1.5f, 3.0f, 2.0f, 5.0f, 4.5f));  // Clipped at both ends.
  AveragePool(std::vector<float>{3, 0, 6}, 1, pooled);
  EXPECT_THAT(pooled, ElementsAre(3.0f, 0.0f, 6.0f));
}

TEST(PolicyFormulaTest, SnapKvPoolsObservationWindowVotesOnce) {
  auto snapkv = Make("snapkv:keep=0.5,window=2,kernel=3");
  EXPECT_EQ(snapkv->needs(), KvPolicy::Needs::kLastPromptRows);
  EXPECT_EQ(snapkv->ObservationWindow(), 2);
  PolicyState s;
  // Hand-made votes over 10 prompt slots: a spike at 1 and a pair at 5, 6.
  s.scores = {0, 9, 0, 0, 0, 4, 4, 0, 0, 0};
  // Pooled (width 3): slot 0 = 4.5, 1 = 3, 2 = 3, 4 = 1.33, 5 = 2.67, 6 = 2.67, 7 = 1.33.
  // Budget 5 = window (8, 9) + 3 best of 0..7: 0, 1, 2 (4.5, 3, 3 beat 2.67).
  EXPECT_THAT(snapkv->Plan({.num_slots = 10, .prompt_length = 10, .prompt_done = true}, s),
              ElementsAre(0, 1, 2, 8, 9));
  EXPECT_TRUE(s.one_shot_done);
  // Once only: later plans keep everything.
  s.scores.assign(12, 1.0f);
  EXPECT_TRUE(snapkv->Plan({.num_slots = 12, .prompt_length = 10, .prompt_done = true}, s).empty());
}

// ScaleKV (arXiv 2505.19602, eqs. 4-5 adapted): layer l keeps ceil(keep * scale_l * seen)
// (at least window + 1), chosen by its own pooled window votes; it compresses at the prompt's
// end and then once a layer is a whole window over its budget, and restarts the votes.
TEST(PolicyFormulaTest, ScaleKvPerLayerBudgetsAndPhases) {
  auto budgets = std::make_shared<ScaleKvBudgets>();
  budgets->asi = {0.9, 0.5};  // Layer 1 is the drafter.
  ASSERT_TRUE(ClassifyLayers(1, *budgets).ok());
  auto policy = Make("scalekv:keep=0.4,refiner=0.5,window=2,kernel=1",
                     {.scalekv_budgets = budgets});
  const auto& skv = static_cast<const ScaleKvPolicy&>(*policy);
  EXPECT_THAT(skv.layer_scales(), ElementsAre(0.5, 1.5));
  EXPECT_EQ(skv.num_layers(), 2);

  // 20 prompt slots; votes rise with the slot index except two early spikes.
  PolicyState refiner, drafter;
  for (PolicyState* s : {&refiner, &drafter}) {
    s->scores.resize(20);
    for (int i = 0; i < 20; ++i) s->scores[i] = 0.01f * i;
    s->scores[3] = 5.0f;
    s->scores[7] = 4.0f;
  }
  const SequenceKvView view{.num_slots = 20, .prompt_length = 20, .prompt_done = true};
  // Refiner: ceil(0.2 * 20) = 4 slots: window (18, 19) + the spikes.
  EXPECT_THAT(skv.PlanLayer(view, 0, refiner), ElementsAre(3, 7, 18, 19));
  // Drafter: ceil(0.6 * 20) = 12: window + spikes + the 8 best of the rest (10..17).
  EXPECT_THAT(skv.PlanLayer(view, 1, drafter),
              ElementsAre(3, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19));
  // Votes restart with the next phase.
  EXPECT_THAT(refiner.scores, ::testing::Each(0.0f));
  // Next phase: the refiner holds 4 after eviction (16 evicted); it waits until it is a whole
  // window (2) over its budget ceil(0.2 * seen).
  refiner.evicted_tokens = 16;
  refiner.scores.assign(5, 1.0f);  // 4 kept + 1 new: seen 21, budget 5 (window+1 = 3 floor).
  EXPECT_TRUE(skv.PlanLayer({.num_slots = 5, .prompt_length = 20, .prompt_done = true}, 0,
                            refiner)
                  .empty());
  refiner.scores.assign(7, 1.0f);  // seen 23, budget 5, 7 = 5 + window: compress to 5.
  EXPECT_EQ(skv.PlanLayer({.num_slots = 7, .prompt_length = 20, .prompt_done = true}, 0,
                          refiner)
                .size(),
            5u);
}

}  // namespace
}  // namespace kvserve::engine
