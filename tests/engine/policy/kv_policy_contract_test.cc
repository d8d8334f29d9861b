// The contract every registered KV policy keeps, checked on hand-made attention rows
// (pure deciders, no model) and then on the real engine with the bundled model.
#include <algorithm>
#include <cmath>
#include <random>

#include "engine/policy/kv_policy.h"
#include "engine/runtime/engine.h"
#include "gtest/gtest.h"

namespace kvserve::engine {
namespace {

struct ContractCase {
  std::string name;
  std::string spec;
};

std::vector<ContractCase> Cases() {
  return {{"full", "full"},
          {"window", "window:keep=0.3,sinks=4"},
          {"h2o", "h2o:keep=0.3,recent=0.5"},
          {"keyformer", "keyformer:keep=0.3,recent=0.3"},
          {"snapkv", "snapkv:keep=0.3,window=8"},
          {"window_max", "window:keep=1,max=24,sinks=2"},
          {"h2o_keep1", "h2o:keep=1"},
          {"lazyllm", "lazyllm:stages=3,first=0.7,keep=0.3"},
          {"lazyllm_keep1", "lazyllm:first=1,keep=1"}};
}

class KvPolicyContractTest : public ::testing::TestWithParam<ContractCase> {};

// Drives a policy the way the engine does: a prompt of `prompt` tokens, then decode steps,
// with random attention rows; returns the kept-slot history.
struct Simulation {
  std::vector<std::vector<int32_t>> plans;
  std::vector<int32_t> live;  // Positions of the live slots at the end.
  int32_t max_live = 0;
  PolicyState state;
};

Simulation Simulate(const KvPolicy& policy, int32_t prompt, int32_t steps, uint64_t seed) {
  Simulation sim;
  sim.state.seed = seed;
  sim.state.max_new_tokens = steps;
  std::mt19937 rng(1234);
  std::normal_distribution<float> logit(0.0f, 2.0f);
  auto observe = [&](int32_t slot, bool prefill) {
    std::vector<float> row(slot + 1);
    for (float& x : row) x = logit(rng);
    for (int64_t layer = 0; layer < 2; ++layer) {
      for (int64_t head = 0; head < 2; ++head) {
        policy.Observe({.layer = layer, .head = head, .query_slot = slot, .prefill = prefill,
                        .logits = absl::MakeConstSpan(row)},
                       sim.state);
      }
    }
  };
  auto plan = [&](bool prompt_done) {
    std::vector<int32_t> keep = policy.Plan({.num_slots = static_cast<int32_t>(sim.live.size()),
                                             .prompt_length = prompt,
                                             .max_new_tokens = steps,
                                             .prompt_done = prompt_done},
                                            sim.state);
    sim.plans.push_back(keep);
    if (keep.empty()) return;
    std::vector<int32_t> live;
    std::vector<float> scores;
    for (int32_t k : keep) {
      live.push_back(sim.live[k]);
      scores.push_back(sim.state.scores[k]);
    }
    sim.state.evicted_tokens += sim.live.size() - keep.size();
    sim.live = live;
    sim.state.scores = scores;
  };
  // Prefill in one chunk.
  for (int32_t i = 0; i < prompt; ++i) {
    sim.live.push_back(i);
    sim.state.scores.push_back(0.0f);
    observe(i, true);
  }
  sim.max_live = std::max<int32_t>(sim.max_live, sim.live.size());
  plan(true);
  for (int32_t t = 0; t < steps; ++t) {
    sim.live.push_back(prompt + t);
    sim.state.scores.push_back(0.0f);
    sim.max_live = std::max<int32_t>(sim.max_live, sim.live.size());
    observe(static_cast<int32_t>(sim.live.size()) - 1, false);
    plan(true);
    ++sim.state.decode_step;
  }
  return sim;
}

TEST_P(KvPolicyContractTest, BudgetProtectedTokensDeterminism) {
  auto policy = CreateKvPolicy(GetParam().spec);
  ASSERT_TRUE(policy.ok()) << policy.status();
  const Simulation a = Simulate(**policy, 120, 60, 7);
  const Simulation b = Simulate(**policy, 120, 60, 7);
  EXPECT_EQ(a.live, b.live) << "not deterministic under a seed";

  for (const auto& keep : a.plans) {
    EXPECT_TRUE(std::is_sorted(keep.begin(), keep.end()));
    EXPECT_EQ(std::adjacent_find(keep.begin(), keep.end()), keep.end()) << "duplicate slot";
  }
  // The newest token is always kept, and positions stay in order.
  EXPECT_EQ(a.live.back(), 179);
  EXPECT_TRUE(std::is_sorted(a.live.begin(), a.live.end()));

  const std::string name(policy->get()->name());
  const auto& params = policy->get()->spec().params;
  const double keep = params.contains("keep") ? params.at("keep") : (name == "full" ? 1.0 : 0.5);
  // LazyLLM only defers computation: it never evicts, whatever its keep.
  if (name == "full" || name == "lazyllm" || (keep == 1.0 && !params.contains("max"))) {
    EXPECT_EQ(a.live.size(), 180u);  // Nothing evicted.
    for (const auto& p : a.plans) EXPECT_TRUE(p.empty());
    return;
  }
  if (name == "snapkv") {
    // One shot at prompt end: the prompt shrinks to its budget, generated tokens stay.
    EXPECT_EQ(a.live.size(), static_cast<size_t>(std::ceil(0.3 * 120)) + 60);
    // The observation window (last 8 prompt tokens) is kept.
    for (int32_t p = 112; p < 120; ++p) {
      EXPECT_TRUE(std::count(a.live.begin(), a.live.end(), p)) << p;
    }
  } else {
    int32_t budget = static_cast<int32_t>(std::ceil(keep * 180 - 1e-9));
    if (params.contains("max")) budget = std::min<int32_t>(budget, params.at("max"));
    EXPECT_EQ(static_cast<int32_t>(a.live.size()), budget);
  }
  const int32_t sinks = params.contains("sinks") ? params.at("sinks") : (name == "window" ? 4 : 0);
  for (int32_t p = 0; p < sinks; ++p) {
    EXPECT_EQ(a.live[p], p) << "sink " << p << " evicted";
  }
  if (name == "window") {  // Sinks + a contiguous recent window.
    for (size_t i = sinks + 1; i < a.live.size(); ++i) EXPECT_EQ(a.live[i], a.live[i - 1] + 1);
  }
}

INSTANTIATE_TEST_SUITE_P(AllPolicies, KvPolicyContractTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

TEST(KvPolicyRegistryTest, EveryRegisteredNameBuildsWithDefaults) {
  for (const std::string& name : RegisteredKvPolicyNames()) {
    auto policy = CreateKvPolicy(name);
    ASSERT_TRUE(policy.ok()) << name << ": " << policy.status();
    EXPECT_EQ((*policy)->name(), name);
  }
}

TEST(KvPolicyRegistryTest, MalformedSpecsAreInvalidArgumentWithAReason) {
  const std::pair<std::string, std::string> cases[] = {
      {"", "policy name"},
      {"nosuch",
       "unknown KV policy \"nosuch\"; known: full, window, h2o, keyformer, snapkv, lazyllm"},
      {"h2o:keep", "is not key=value"},
      {"h2o:keep=abc", "not a finite number"},
      {"h2o:keep=0", "keep must be in (0, 1]"},
      {"h2o:keep=1.5", "keep must be in (0, 1]"},
      {"h2o:keep=0.5,keep=0.4", "given twice"},
      {"h2o:bogus=1", "has no parameter \"bogus\""},
      {"keyformer:tau_init=0", "tau_init must be in"},
      {"snapkv:window=2.5", "whole numbers"},
      {"full:keep=0.5", "takes no parameters"},
      {"Window", "not [a-z0-9_]+"},
      {"window:sinks=-1", "sinks must be"},
      {"lazyllm:keep=0.9,first=0.5", "keep must be in (0, first]"},
      {"lazyllm:stages=0", "stages must be"},
      {"lazyllm:window=3", "has no parameter \"window\""},
  };
  for (const auto& [spec, message] : cases) {
    auto policy = CreateKvPolicy(spec);
    ASSERT_FALSE(policy.ok()) << spec;
    EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument) << spec;
    EXPECT_NE(std::string(policy.status().message()).find(message), std::string::npos)
        << spec << ": " << policy.status().message();
  }
}

// On the real engine: full and a budget above the length are bit-identical to no policy;
// compressing policies free real KV blocks and keep generating.
std::vector<TokenId> RunWithPolicy(Engine& engine, const std::vector<TokenId>& prompt,
                         std::shared_ptr<const KvPolicy> policy, int n, int64_t* min_free = nullptr,
                         int32_t* slots = nullptr) {
  EXPECT_TRUE(engine.AddSequence(1, {.prompt = prompt, .kv_policy = std::move(policy),
                                     .max_new_tokens = n})
                  .ok());
  std::vector<TokenId> out;
  while (static_cast<int>(out.size()) < n) {
    auto r = engine.Step({{{.sequence = 1, .num_tokens = engine.PendingTokens(1)}}});
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) break;
    out.push_back(*r->outputs[0].token);
  }
  if (min_free != nullptr) *min_free = engine.free_kv_blocks();
  if (slots != nullptr) *slots = engine.KvSlots(1);
  engine.RemoveSequence(1);
  return out;
}

// The engine-level contract holds for every KV storage type (compaction moves int8 scales
// with their rows; full budget stays bit-identical to no policy within one storage type).
class KvPolicyEngineTest : public ::testing::TestWithParam<KvDtype> {};

TEST_P(KvPolicyEngineTest, FullBudgetIsBitIdenticalAndCompressionFreesBlocks) {
  EngineOptions options;
  options.model_path = std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf";
  options.enable_prefix_cache = false;
  options.kv_dtype = GetParam();
  auto engine = Engine::Create(options).value();
  std::mt19937 rng(5);
  std::vector<TokenId> prompt = {1};
  for (int i = 0; i < 120; ++i) prompt.push_back(259 + rng() % 253);
  const int64_t total = engine->total_kv_blocks();

  int64_t free_plain = 0;
  const auto plain = RunWithPolicy(*engine, prompt, nullptr, 60, &free_plain);
  for (const std::string spec : {"full", "h2o:keep=1", "keyformer:keep=1", "window:keep=1",
                                 "snapkv:keep=1", "lazyllm:first=1,keep=1"}) {
    EXPECT_EQ(RunWithPolicy(*engine, prompt, CreateKvPolicy(spec).value(), 60), plain) << spec;
  }
  for (const std::string spec : {"window:keep=0.3", "h2o:keep=0.3", "keyformer:keep=0.3",
                                 "snapkv:keep=0.3"}) {
    int64_t free_blocks = 0;
    int32_t slots = 0;
    const auto out = RunWithPolicy(*engine, prompt, CreateKvPolicy(spec).value(), 60, &free_blocks, &slots);
    EXPECT_EQ(out.size(), 60u) << spec;
    EXPECT_LT(slots, 181) << spec;
    EXPECT_GT(free_blocks, free_plain) << spec << ": no KV block was freed";
    EXPECT_EQ(engine->free_kv_blocks(), total) << spec;  // Everything returns on removal.
  }
  EXPECT_GT(engine->stats().evicted_tokens_by_policy.at("h2o"), 0);
  // LazyLLM frees no KV (it defers computation): same slots and blocks as no policy, fewer
  // token-layers computed.
  int64_t free_lazy = 0;
  int32_t slots = 0;
  const int64_t layers_before = engine->stats().computed_token_layers;
  const auto lazy = RunWithPolicy(*engine, prompt, CreateKvPolicy("lazyllm").value(), 60,
                                  &free_lazy, &slots);
  EXPECT_EQ(lazy.size(), 60u);
  EXPECT_EQ(slots, 180);  // 121 prompt tokens + 59 computed of the 60 sampled.
  EXPECT_EQ(free_lazy, free_plain);
  EXPECT_LT(engine->stats().computed_token_layers - layers_before, 180 * 5);
  EXPECT_FALSE(engine->stats().evicted_tokens_by_policy.contains("lazyllm"));
}

INSTANTIATE_TEST_SUITE_P(AllKvDtypes, KvPolicyEngineTest,
                         ::testing::Values(KvDtype::kF32, KvDtype::kBf16, KvDtype::kInt8),
                         [](const auto& info) { return std::string(KvDtypeName(info.param)); });

}  // namespace
}  // namespace kvserve::engine
