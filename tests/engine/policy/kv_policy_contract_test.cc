// The contract every registered KV policy keeps, checked on hand-made attention rows
// (pure deciders, no model) and then on the real engine with the bundled model.
#include <algorithm>
#include <cmath>
#include <random>

#include "engine/policy/kv_policy.h"
#include "engine/policy/scalekv_budgets.h"
#include "engine/runtime/engine.h"
#include "gtest/gtest.h"

namespace kvserve::engine {
namespace {

struct ContractCase {
  std::string name;
  std::string spec;
};

// ScaleKV roles for `layers` layers: layer 0 is the drafter, the rest refiners.
KvPolicyContext ScaleKvContext(int32_t layers) {
  auto budgets = std::make_shared<ScaleKvBudgets>();
  budgets->asi.assign(layers, 1.0);
  budgets->asi[0] = 0.5;
  EXPECT_TRUE(ClassifyLayers(1, *budgets).ok());
  return {.scalekv_budgets = std::move(budgets)};
}

// The simulation's 2 layers (hand-made rows) and the bundled model's 5.
constexpr int32_t kSimLayers = 2;
constexpr int32_t kModelLayers = 5;

std::vector<ContractCase> Cases() {
  return {{"full", "full"},
          {"window", "window:keep=0.3,sinks=4"},
          {"h2o", "h2o:keep=0.3,recent=0.5"},
          {"keyformer", "keyformer:keep=0.3,recent=0.3"},
          {"snapkv", "snapkv:keep=0.3,window=8"},
          {"window_max", "window:keep=1,max=24,sinks=2"},
          {"h2o_keep1", "h2o:keep=1"},
          {"lazyllm", "lazyllm:stages=3,first=0.7,keep=0.3"},
          {"lazyllm_keep1", "lazyllm:first=1,keep=1"},
          {"lazyllm_pool", "lazyllm:pool=13"},
          {"scalekv", "scalekv:keep=0.3,window=8"},
          {"scalekv_uniform", "scalekv:keep=0.3,refiner=1,window=8"},
          {"scalekv_keep1", "scalekv:keep=1"}};
}

class KvPolicyContractTest : public ::testing::TestWithParam<ContractCase> {};

// Drives a policy the way the engine does: a prompt of `prompt` tokens, then decode steps,
// with random attention rows for kSimLayers layers; returns the kept-slot history. A
// per-layer policy gets one state (and one set of live slots) per layer and plans each.
struct Simulation {
  std::vector<std::vector<int32_t>> plans;
  std::vector<std::vector<int32_t>> layer_live;  // Per state: positions of its live slots.
  std::vector<int32_t> live;                     // Those of state 0.
  std::vector<PolicyState> states;
};

Simulation Simulate(const KvPolicy& policy, int32_t prompt, int32_t steps, uint64_t seed) {
  Simulation sim;
  const bool per_layer = policy.num_layers() > 0;
  sim.states.resize(per_layer ? policy.num_layers() : 1);
  sim.layer_live.resize(sim.states.size());
  for (PolicyState& state : sim.states) {
    state.seed = seed;
    state.max_new_tokens = steps;
  }
  std::mt19937 rng(1234);
  std::normal_distribution<float> logit(0.0f, 2.0f);
  auto observe = [&](bool prefill) {
    for (int64_t layer = 0; layer < kSimLayers; ++layer) {
      const size_t i = per_layer ? layer : 0;
      const int32_t slot = static_cast<int32_t>(sim.layer_live[i].size()) - 1;
      std::vector<float> row(slot + 1);
      for (float& x : row) x = logit(rng);
      for (int64_t head = 0; head < 2; ++head) {
        policy.Observe({.layer = layer, .head = head, .query_slot = slot, .prefill = prefill,
                        .logits = absl::MakeConstSpan(row)},
                       sim.states[i]);
      }
    }
  };
  auto plan = [&](bool prompt_done) {
    for (size_t i = 0; i < sim.states.size(); ++i) {
      PolicyState& state = sim.states[i];
      std::vector<int32_t>& live = sim.layer_live[i];
      const SequenceKvView view{.num_slots = static_cast<int32_t>(live.size()),
                                .prompt_length = prompt,
                                .max_new_tokens = steps,
                                .prompt_done = prompt_done};
      std::vector<int32_t> keep =
          per_layer ? policy.PlanLayer(view, i, state) : policy.Plan(view, state);
      sim.plans.push_back(keep);
      if (keep.empty()) continue;
      std::vector<int32_t> kept;
      std::vector<float> scores;
      for (int32_t k : keep) {
        kept.push_back(live[k]);
        scores.push_back(state.scores[k]);
      }
      state.evicted_tokens += live.size() - keep.size();
      live = kept;
      state.scores = scores;
    }
  };
  auto append = [&](int32_t position) {
    for (size_t i = 0; i < sim.states.size(); ++i) {
      sim.layer_live[i].push_back(position);
      sim.states[i].scores.push_back(0.0f);
    }
  };
  // Prefill one token at a time, planned once at the end (as one chunk).
  for (int32_t i = 0; i < prompt; ++i) {
    append(i);
    observe(true);
  }
  plan(true);
  for (int32_t t = 0; t < steps; ++t) {
    append(prompt + t);
    observe(false);
    plan(true);
    for (PolicyState& state : sim.states) ++state.decode_step;
  }
  sim.live = sim.layer_live[0];
  return sim;
}

TEST_P(KvPolicyContractTest, BudgetProtectedTokensDeterminism) {
  auto policy = CreateKvPolicy(GetParam().spec, ScaleKvContext(kSimLayers));
  ASSERT_TRUE(policy.ok()) << policy.status();
  const Simulation a = Simulate(**policy, 120, 60, 7);
  const Simulation b = Simulate(**policy, 120, 60, 7);
  EXPECT_EQ(a.layer_live, b.layer_live) << "not deterministic under a seed";
  for (const std::vector<int32_t>& live : a.layer_live) {
    EXPECT_EQ(live.back(), 179);  // The newest token is always kept, in every layer.
    EXPECT_TRUE(std::is_sorted(live.begin(), live.end()));
  }

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
  } else if (name == "scalekv") {
    // Per layer: the drafter (layer 0) keeps 1.5 x keep of the tokens seen and the refiner
    // 0.5 x keep (or both keep, uniform), so the average is keep's budget. Compression is in
    // phases of `window` (8) tokens: a layer never holds a phase beyond its budget.
    const bool uniform = params.contains("refiner") && params.at("refiner") == 1.0;
    const int32_t drafter = std::ceil((uniform ? 0.3 : 0.45) * 180 - 1e-9);
    const int32_t refiner = std::ceil((uniform ? 0.3 : 0.15) * 180 - 1e-9);
    ASSERT_EQ(a.layer_live.size(), 2u);
    int32_t i = 0;
    for (const int32_t budget : {drafter, refiner}) {
      const int32_t live = static_cast<int32_t>(a.layer_live[i++].size());
      EXPECT_GE(live, budget - 1) << "layer " << i - 1;
      EXPECT_LT(live, budget + 8) << "layer " << i - 1;
    }
    for (const std::vector<int32_t>& live : a.layer_live) {
      for (int32_t p = 172; p < 180; ++p) {  // The current map: the newest window.
        EXPECT_TRUE(std::count(live.begin(), live.end(), p)) << p;
      }
    }
    if (!uniform) {
      EXPECT_NE(a.layer_live[0], a.layer_live[1]);
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
    auto policy = CreateKvPolicy(name, ScaleKvContext(kSimLayers));
    ASSERT_TRUE(policy.ok()) << name << ": " << policy.status();
    EXPECT_EQ((*policy)->name(), name);
  }
}

TEST(KvPolicyRegistryTest, ScaleKvWithoutBudgetsSaysHowToMakeThem) {
  auto policy = CreateKvPolicy("scalekv:keep=0.3");
  ASSERT_FALSE(policy.ok());
  // The spec is fine; what is missing is the target's budget file.
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(policy.status().message().find("--scalekv-budgets"), std::string::npos);
  EXPECT_NE(policy.status().message().find("--calibrate-scalekv"), std::string::npos);
  for (const std::string spec : {"scalekv:refiner=0", "scalekv:refiner=1.5", "scalekv:window=0",
                                 "scalekv:bogus=1", "scalekv:keep=2"}) {
    auto bad = CreateKvPolicy(spec, ScaleKvContext(kSimLayers));
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << spec;
    // A bad spec is INVALID_ARGUMENT with or without budgets.
    EXPECT_EQ(CreateKvPolicy(spec).status().code(), absl::StatusCode::kInvalidArgument) << spec;
    EXPECT_NE(bad.status().message().find("scalekv"), std::string::npos) << bad.status();
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
    auto policy = CreateKvPolicy(spec, ScaleKvContext(kSimLayers));
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
  const KvPolicyContext context = ScaleKvContext(kModelLayers);
  for (const std::string spec : {"full", "h2o:keep=1", "keyformer:keep=1", "window:keep=1",
                                 "snapkv:keep=1", "lazyllm:first=1,keep=1", "scalekv:keep=1"}) {
    EXPECT_EQ(RunWithPolicy(*engine, prompt, CreateKvPolicy(spec, context).value(), 60), plain)
        << spec;
  }
  for (const std::string spec : {"window:keep=0.3", "h2o:keep=0.3", "keyformer:keep=0.3",
                                 "snapkv:keep=0.3", "scalekv:keep=0.3"}) {
    int64_t free_blocks = 0;
    int32_t slots = 0;
    const auto out = RunWithPolicy(*engine, prompt, CreateKvPolicy(spec, context).value(), 60,
                                   &free_blocks, &slots);
    EXPECT_EQ(out.size(), 60u) << spec;
    EXPECT_LT(slots, 181) << spec;
    EXPECT_GT(free_blocks, free_plain) << spec << ": no KV block was freed";
    EXPECT_EQ(engine->free_kv_blocks(), total) << spec;  // Everything returns on removal.
  }
  EXPECT_GT(engine->stats().evicted_tokens_by_policy.at("h2o"), 0);
  EXPECT_GT(engine->stats().evicted_tokens_by_policy.at("scalekv"), 0);
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

namespace kvserve::engine {
namespace {

// ScaleKV on the engine: each layer keeps its own budget in its own blocks (the drafter more,
// the refiners less, the same total as uniform budgets), and a budget file for another layer
// count is refused.
TEST(ScaleKvEngineTest, LayersKeepTheirOwnBudgetsInTheirOwnBlocks) {
  EngineOptions options;
  options.model_path = std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf";
  options.enable_prefix_cache = false;
  auto engine = Engine::Create(options).value();
  std::mt19937 rng(9);
  std::vector<TokenId> prompt = {1};
  for (int i = 0; i < 159; ++i) prompt.push_back(259 + rng() % 253);  // 160 tokens.
  const KvPolicyContext context = ScaleKvContext(kModelLayers);
  const int64_t total = engine->total_kv_blocks();
  std::vector<int32_t> slots[2];
  int64_t free_blocks[2];
  int i = 0;
  for (const char* spec : {"scalekv:keep=0.25", "scalekv:keep=0.25,refiner=1"}) {
    ASSERT_TRUE(engine->AddSequence(1, {.prompt = prompt,
                                        .kv_policy = CreateKvPolicy(spec, context).value()})
                    .ok());
    ASSERT_TRUE(engine->Step({{{.sequence = 1, .num_tokens = 160}}}).ok());
    for (int64_t l = 0; l < kModelLayers; ++l) slots[i].push_back(engine->KvSlots(1, l));
    free_blocks[i] = engine->free_kv_blocks();
    engine->RemoveSequence(1);
    EXPECT_EQ(engine->free_kv_blocks(), total);
    ++i;
  }
  // Uniform: 40 of 160 in every layer. ScaleKV (refiner 0.5): refiners 20, the drafter the
  // rest of the 200 = 120.
  EXPECT_EQ(slots[1], std::vector<int32_t>(5, 40));
  EXPECT_EQ(slots[0], (std::vector<int32_t>{120, 20, 20, 20, 20}));
  // 120 + 4 x 20 slots hold 8 + 4 x 2 blocks of 16; 5 x 40 hold 5 x 3.
  EXPECT_EQ(total - free_blocks[0], 16);
  EXPECT_EQ(total - free_blocks[1], 15);

  const KvPolicyContext wrong = ScaleKvContext(3);
  const absl::Status status = engine->AddSequence(
      2, {.prompt = prompt, .kv_policy = CreateKvPolicy("scalekv", wrong).value()});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("3 layers; this model has 5"), std::string::npos) << status;
}

}  // namespace
}  // namespace kvserve::engine
