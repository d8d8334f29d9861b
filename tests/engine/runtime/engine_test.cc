// The engine against an independent implementation (llama.cpp's outputs for the bundled
// model) and against itself under batching, chunking and preemption.
#include "engine/runtime/engine.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <string>

#include "engine/model/gguf_model.h"
#include "engine/model/model_file.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/runtime/reference_data.h"

namespace kvserve::engine {
namespace {

using ::kvserve::engine::testing::LoadReferenceCases;
using ::kvserve::engine::testing::ReferenceCase;
using ::kvserve::engine::testing::SourcePath;

std::unique_ptr<Engine> MakeEngine(EngineOptions options) {
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return std::move(engine).value();
}

EngineOptions GgufOptions() {
  EngineOptions options;
  options.model_path = SourcePath("models/stories260K.gguf");
  return options;
}

// Greedy generation of `n` tokens for each prompt, all sequences stepping together with at
// most `chunk` prompt tokens per sequence per step.
std::vector<std::vector<TokenId>> GenerateTogether(Engine& engine,
                                                   const std::vector<std::vector<TokenId>>& prompts,
                                                   int n, int chunk = 1 << 20) {
  std::vector<std::vector<TokenId>> out(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_TRUE(engine.AddSequence(i + 1, {.prompt = prompts[i], .sampling = {}}).ok());
  }
  while (true) {
    StepPlan plan;
    int budget = engine.options().max_batch_tokens;
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (static_cast<int>(out[i].size()) >= n) continue;
      const int pending = engine.PendingTokens(i + 1);
      const int take = std::min({pending, chunk, budget});
      if (take <= 0) continue;
      plan.entries.push_back({.sequence = i + 1, .num_tokens = take});
      budget -= take;
    }
    if (plan.empty()) break;
    absl::StatusOr<StepResult> result = engine.Step(plan);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) break;
    for (const auto& o : result->outputs) {
      if (o.token.has_value()) out[o.sequence - 1].push_back(*o.token);
    }
  }
  for (size_t i = 0; i < prompts.size(); ++i) engine.RemoveSequence(i + 1);
  return out;
}

TEST(EngineReferenceTest, GgufGreedyMatchesLlamaCppTokenForToken) {
  auto engine = MakeEngine(GgufOptions());
  for (const ReferenceCase& c : LoadReferenceCases()) {
    absl::StatusOr<std::vector<TokenId>> ids = engine->tokenizer().Encode(c.prompt, true);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, c.prompt_ids) << c.prompt;
    const auto out = GenerateTogether(*engine, {c.prompt_ids}, c.generated_ids.size());
    EXPECT_EQ(out[0], c.generated_ids) << c.prompt;
    IncrementalDetokenizer detokenizer(engine->tokenizer());
    std::string text;
    for (TokenId id : out[0]) text += detokenizer.Push(id);
    text += detokenizer.Flush();
    EXPECT_EQ(text, c.generated_text) << c.prompt;
  }
}

// A q4_0 file: the bundled model re-encoded by our GGUF writer, read by llama.cpp and by us.
// tests/testdata/stories260K_q4_0_reference.json is llama.cpp's greedy output on it (see
// tests/testdata/README.md). llama.cpp multiplies q4_0 weights by activations rounded to 8
// bits, we by the exactly decoded weights (f32) or by 8-bit per-row requantised ones (int8,
// what auto picks), so late near-ties may go either way: every prompt must agree for its
// first 16 tokens, and most tokens overall. Measured 2026-12-02: f32 213/256 tokens before
// each prompt's first difference (two of four prompts identical for all 64), int8 152/256.
TEST(EngineReferenceTest, Q4_0FileFollowsLlamaCpp) {
  // Per process: ctest runs this suite in several processes at once (the openmp variants).
  const std::string path =
      ::testing::TempDir() + "/stories260K.q4_0." + std::to_string(::getpid()) + ".gguf";
  {
    absl::StatusOr<std::unique_ptr<ModelFile>> model =
        LoadModelFile(SourcePath("models/stories260K.gguf"));
    ASSERT_TRUE(model.ok()) << model.status();
    ASSERT_TRUE(WriteLlamaGguf(**model,
                               {.dtype = TensorType::kQ4_0,
                                .write_output = !(*model)->weights.tied_output},
                               path)
                    .ok());
  }
  std::ifstream in(SourcePath("tests/testdata/stories260K_q4_0_reference.json"));
  const nlohmann::json reference = nlohmann::json::parse(in);
  for (const auto& [type, min_share] :
       {std::pair{WeightType::kF32, 0.75}, std::pair{WeightType::kAuto, 0.5}}) {
    EngineOptions options;
    options.model_path = path;
    options.weight_type = type;
    auto engine = MakeEngine(options);
    EXPECT_EQ(engine->weight_type(),
              type == WeightType::kAuto ? WeightType::kInt8 : WeightType::kF32);
    size_t agree = 0, total = 0;
    for (const nlohmann::json& r : reference.at("results")) {
      const auto prompt = r.at("prompt_ids").get<std::vector<TokenId>>();
      const auto want = r.at("generated_ids").get<std::vector<TokenId>>();
      const auto got = GenerateTogether(*engine, {prompt}, static_cast<int>(want.size()))[0];
      size_t same = 0;
      while (same < want.size() && got[same] == want[same]) ++same;
      EXPECT_GE(same, 16u) << r.at("prompt");
      agree += same;
      total += want.size();
    }
    std::printf("[ info ] q4_0 file as %s: %zu/%zu greedy tokens before the first difference\n",
                std::string(WeightTypeName(engine->weight_type())).c_str(), agree, total);
    EXPECT_GE(static_cast<double>(agree), min_share * static_cast<double>(total));
  }
  std::remove(path.c_str());
}

TEST(EngineReferenceTest, Llama2cFilesGiveTheSameOutputAsGguf) {
  EngineOptions options;
  options.model_path = SourcePath("models/stories260K.bin");
  options.tokenizer_path = SourcePath("models/tok512.bin");
  auto engine = MakeEngine(options);
  for (const ReferenceCase& c : LoadReferenceCases()) {
    absl::StatusOr<std::vector<TokenId>> ids = engine->tokenizer().Encode(c.prompt, true);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, c.prompt_ids) << c.prompt;
    const auto out = GenerateTogether(*engine, {c.prompt_ids}, c.generated_ids.size());
    EXPECT_EQ(out[0], c.generated_ids) << c.prompt;
  }
}

TEST(EngineReferenceTest, FirstPositionLogitsAgreeWithinOnePerMille) {
  auto model = LoadModelFile(SourcePath("models/stories260K.gguf")).value();
  auto device = Device::Create(DeviceKind::kCpu).value();
  auto runner = ModelRunner::Create(*model, *device, {.max_batch_tokens = 64}).value();
  const ModelConfig& c = model->config;
  auto cache = KvCache::Create({.kv_dim = c.n_kv_heads * c.head_dim,
                                .block_size = 16,
                                .num_blocks = 4 * c.n_layers})
                   .value();
  for (const ReferenceCase& rc : LoadReferenceCases()) {
    std::vector<std::vector<BlockId>> tables(c.n_layers);
    for (auto& table : tables) {
      for (int i = 0; i < 4; ++i) table.push_back(*cache->Allocate());
    }
    ForwardBatch batch;
    batch.tokens = rc.prompt_ids;
    batch.entries.push_back({.first = 0,
                             .count = static_cast<int32_t>(rc.prompt_ids.size()),
                             .start_position = 0,
                             .tables = &tables,
                             .want_logits = true});
    absl::StatusOr<absl::Span<const float>> logits = runner->Forward(batch, *cache);
    ASSERT_TRUE(logits.ok()) << logits.status();
    ASSERT_EQ(logits->size(), static_cast<size_t>(c.vocab_size));
    for (const auto& [id, expected] : rc.first_top5) {
      EXPECT_NEAR((*logits)[id], expected, 1e-3 * std::abs(expected)) << rc.prompt << " id " << id;
    }
    for (auto& table : tables) {
      for (BlockId b : table) cache->Free(b);
    }
  }
}

// Batch invariance: a request's greedy tokens do not depend on what runs beside it, with each
// weight type (each has its own matmul kernels: AMX ones on CPUs that have it).
class EngineBatchingWeightTest : public ::testing::TestWithParam<WeightType> {};

TEST_P(EngineBatchingWeightTest, GreedyOutputIsTheSameAloneAndAmong31Others) {
  EngineOptions options = GgufOptions();
  options.max_batch_tokens = 512;
  options.default_kv_sequences = 40;
  options.weight_type = GetParam();
  auto engine = MakeEngine(options);
  ASSERT_EQ(engine->weight_type(), GetParam());
  std::mt19937 rng(7);
  std::vector<std::vector<TokenId>> prompts;
  for (int i = 0; i < 32; ++i) {
    std::vector<TokenId> p = {engine->vocab().bos_id};
    const int len = 1 + (i * 37) % 90;  // 2..91 tokens: different lengths.
    for (int t = 0; t < len; ++t) p.push_back(static_cast<TokenId>(259 + rng() % 253));
    prompts.push_back(std::move(p));
  }
  constexpr int kTokens = 24;
  const auto together = GenerateTogether(*engine, prompts, kTokens, /*chunk=*/32);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto alone = GenerateTogether(*engine, {prompts[i]}, kTokens);
    EXPECT_EQ(together[i], alone[0]) << "prompt " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(WeightTypes, EngineBatchingWeightTest,
                         ::testing::Values(WeightType::kF32, WeightType::kBf16, WeightType::kInt8),
                         [](const auto& info) { return std::string(WeightTypeName(info.param)); });

// bf16 / int8 KV on the bundled model: greedy continuations of 32 prompts (random tokens
// after BOS, 2..91 long) and of the llama.cpp reference prompts, 48 tokens each, against the
// same engine with f32 KV. A greedy continuation is chaotic (one flipped argmax changes the rest),
// so the measure is the tokens generated before the first difference, as a fraction of all.
// Measured: bf16 0.92 (31 of 36 continuations identical), int8 0.52 (12 of 36 identical; one
// f16 scale per 32 values spans all 4 KV heads of this model). Teacher forced, int8 keeps the
// next-token argmax at 97.6% of positions (docs/KV-EVAL.md). A kernel that misreads the cache
// (wrong scale, row or head) diverges within a token or two, i.e. below 0.1; the bounds sit
// well above that and below the measured values.
TEST(EngineKvDtypeTest, QuantisedKvGreedyOutputMostlyMatchesF32) {
  std::mt19937 rng(7);
  std::vector<std::vector<TokenId>> prompts;
  for (int i = 0; i < 32; ++i) {
    std::vector<TokenId> p = {1};
    const int len = 1 + (i * 37) % 90;
    for (int t = 0; t < len; ++t) p.push_back(static_cast<TokenId>(259 + rng() % 253));
    prompts.push_back(std::move(p));
  }
  for (const ReferenceCase& c : LoadReferenceCases()) prompts.push_back(c.prompt_ids);
  constexpr int kTokens = 48;
  EngineOptions options = GgufOptions();
  options.default_kv_sequences = 48;
  const auto f32 = GenerateTogether(*MakeEngine(options), prompts, kTokens, /*chunk=*/32);
  for (const auto& [dtype, bound] : {std::pair{KvDtype::kBf16, 0.8},
                                     std::pair{KvDtype::kInt8, 0.4}}) {
    options.kv_dtype = dtype;
    auto engine = MakeEngine(options);
    EXPECT_EQ(engine->kv_block_bytes(), KvCache::BlockBytes(1, 32, 16, dtype));  // One layer.
    const auto out = GenerateTogether(*engine, prompts, kTokens, /*chunk=*/32);
    int64_t before_divergence = 0, identical = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      ASSERT_EQ(out[i].size(), static_cast<size_t>(kTokens));
      const auto mismatch = std::mismatch(out[i].begin(), out[i].end(), f32[i].begin());
      before_divergence += mismatch.first - out[i].begin();
      identical += mismatch.first == out[i].end() ? 1 : 0;
    }
    const double agreement =
        static_cast<double>(before_divergence) / static_cast<double>(prompts.size() * kTokens);
    std::printf("%s KV: greedy agreement with f32 %.4f, %lld/%zu continuations identical\n",
                std::string(KvDtypeName(dtype)).c_str(), agreement,
                static_cast<long long>(identical), prompts.size());
    EXPECT_GE(agreement, bound) << KvDtypeName(dtype);
  }
}

TEST(EngineBatchingTest, ChunkedPrefillGivesTheSameTokens) {
  auto engine = MakeEngine(GgufOptions());
  const ReferenceCase c = LoadReferenceCases()[1];
  for (int chunk : {1, 3, 5, 100}) {
    const auto out = GenerateTogether(*engine, {c.prompt_ids}, c.generated_ids.size(), chunk);
    EXPECT_EQ(out[0], c.generated_ids) << "chunk " << chunk;
  }
}

TEST(EngineBatchingTest, PreemptedSequenceContinuesExactlyAsBefore) {
  auto engine = MakeEngine(GgufOptions());
  const ReferenceCase c = LoadReferenceCases()[0];
  ASSERT_TRUE(engine->AddSequence(1, {.prompt = c.prompt_ids, .sampling = {}}).ok());
  std::vector<TokenId> out;
  const int64_t free_at_start = engine->free_kv_blocks();
  while (out.size() < c.generated_ids.size()) {
    if (out.size() == 20 || out.size() == 41) {
      engine->Preempt(1);
      EXPECT_EQ(engine->free_kv_blocks(), free_at_start);
      EXPECT_EQ(engine->PendingTokens(1), engine->TotalTokens(1));
    }
    StepPlan plan{{{.sequence = 1, .num_tokens = engine->PendingTokens(1)}}};
    absl::StatusOr<StepResult> result = engine->Step(plan);
    ASSERT_TRUE(result.ok()) << result.status();
    out.push_back(*result->outputs[0].token);
  }
  EXPECT_EQ(out, c.generated_ids);
  engine->RemoveSequence(1);
  EXPECT_EQ(engine->free_kv_blocks(), free_at_start);
}

TEST(EnginePrefixCacheTest, CachedPrefixGivesTheSameTokensAndSkipsItsPrefill) {
  std::mt19937 rng(11);
  auto random_tokens = [&](int n) {
    std::vector<TokenId> t;
    for (int i = 0; i < n; ++i) t.push_back(static_cast<TokenId>(259 + rng() % 253));
    return t;
  };
  std::vector<TokenId> prefix = random_tokens(256);
  prefix[0] = 1;
  std::vector<TokenId> first = prefix, second = prefix;
  for (TokenId t : random_tokens(44)) first.push_back(t);
  for (TokenId t : random_tokens(30)) second.push_back(t);

  EngineOptions no_cache = GgufOptions();
  no_cache.enable_prefix_cache = false;
  auto plain = MakeEngine(no_cache);
  const auto expected = GenerateTogether(*plain, {second}, 32);
  EXPECT_EQ(plain->stats().prefix_cache_hit_tokens, 0);

  auto engine = MakeEngine(GgufOptions());
  GenerateTogether(*engine, {first}, 8);  // Leaves the shared prefix's blocks cached.
  const int64_t computed_before = engine->stats().computed_tokens;
  ASSERT_TRUE(engine->AddSequence(7, {.prompt = second}).ok());
  EXPECT_EQ(engine->CachedPromptTokens(7), 256);
  EXPECT_EQ(engine->PendingTokens(7), 30);  // Only the uncached tokens are prefilled.
  std::vector<TokenId> out;
  while (out.size() < 32) {
    auto r = engine->Step({{{.sequence = 7, .num_tokens = engine->PendingTokens(7)}}});
    ASSERT_TRUE(r.ok()) << r.status();
    out.push_back(*r->outputs[0].token);
  }
  EXPECT_EQ(out, expected[0]);
  EXPECT_EQ(engine->stats().computed_tokens - computed_before, 30 + 31);
  EXPECT_EQ(engine->stats().prefix_cache_hit_tokens, 256);
  engine->RemoveSequence(7);
}

TEST(EnginePrefixCacheTest, CachedBlocksAreReusedForNewDataWhenMemoryIsShort) {
  EngineOptions options = GgufOptions();
  options.kv_cache_bytes = 32 * KvCache::BlockBytes(5, 32, 16);  // One context.
  auto engine = MakeEngine(options);
  std::vector<TokenId> a(400, 300), b(400, 301);
  a[0] = b[0] = 1;
  GenerateTogether(*engine, {a}, 4);
  EXPECT_EQ(engine->free_kv_blocks(), 32 * 5);  // Cached blocks still count as available.
  // A different prompt needs most of the pool: cached blocks are evicted, not leaked.
  const auto out = GenerateTogether(*engine, {b}, 4);
  EXPECT_EQ(out[0].size(), 4u);
  ASSERT_TRUE(engine->AddSequence(3, {.prompt = a}).ok());
  EXPECT_LT(engine->CachedPromptTokens(3), 384);  // a's blocks were (at least partly) evicted.
  engine->RemoveSequence(3);
}

TEST(EngineTest, SeededSamplingIsReproducible) {
  auto engine = MakeEngine(GgufOptions());
  const ReferenceCase c = LoadReferenceCases()[2];
  auto run = [&](uint64_t seed) {
    EXPECT_TRUE(engine->AddSequence(9, {.prompt = c.prompt_ids,
                                        .sampling = {.temperature = 1.0f, .seed = seed}})
                    .ok());
    std::vector<TokenId> out;
    while (out.size() < 40) {
      auto r = engine->Step({{{.sequence = 9, .num_tokens = engine->PendingTokens(9)}}});
      EXPECT_TRUE(r.ok());
      out.push_back(*r->outputs[0].token);
    }
    engine->RemoveSequence(9);
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(EngineTest, TeacherForcingAndReturnedLogits) {
  auto engine = MakeEngine(GgufOptions());
  const ReferenceCase c = LoadReferenceCases()[0];
  ASSERT_TRUE(engine->AddSequence(1, {.prompt = c.prompt_ids}).ok());
  EXPECT_EQ(engine->ForceNextToken(1, 5).code(), absl::StatusCode::kFailedPrecondition);
  StepPlan plan{{{.sequence = 1, .num_tokens = engine->PendingTokens(1)}}};
  plan.return_logits = true;
  auto r = engine->Step(plan);
  ASSERT_TRUE(r.ok());
  const auto& logits = r->outputs[0].logits;
  ASSERT_EQ(logits.size(), 512u);
  EXPECT_EQ(std::max_element(logits.begin(), logits.end()) - logits.begin(),
            *r->outputs[0].token);  // Greedy picked the argmax.
  EXPECT_EQ(engine->ForceNextToken(1, 600).code(), absl::StatusCode::kInvalidArgument);
  // Force the second reference token in place of the first: the continuation follows it.
  ASSERT_TRUE(engine->ForceNextToken(1, c.generated_ids[1]).ok());
  r = engine->Step({{{.sequence = 1, .num_tokens = 1}}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(engine->TotalTokens(1), static_cast<int32_t>(c.prompt_ids.size()) + 2);
  EXPECT_TRUE(r->outputs[0].logits.empty());  // Not asked for.
  engine->RemoveSequence(1);
}

// record_attention (evaluation): slot positions follow eviction, the last query's attention
// is a distribution over the slots it saw, and recording changes no output.
TEST(EngineTest, RecordsSlotPositionsAndLastQueryAttention) {
  EngineOptions options = GgufOptions();
  options.enable_prefix_cache = false;
  auto engine = MakeEngine(options);
  // One token: its query sees only itself, so all the attention is on slot 0.
  ASSERT_TRUE(engine->AddSequence(9, {.prompt = {1}, .record_attention = true}).ok());
  ASSERT_TRUE(engine->Step({{{.sequence = 9, .num_tokens = 1}}}).ok());
  EXPECT_THAT(engine->LastQueryAttention(9),
              ::testing::ElementsAre(::testing::FloatNear(1.0f, 1e-6f)));
  EXPECT_THAT(engine->SlotPositions(9), ::testing::ElementsAre(0));
  engine->RemoveSequence(9);

  const ReferenceCase c = LoadReferenceCases()[0];
  std::vector<TokenId> outputs[2];
  for (bool record : {false, true}) {
    SequenceSpec spec{.prompt = c.prompt_ids,
                      .kv_policy = CreateKvPolicy("window:keep=0.5,sinks=2").value(),
                      .record_attention = record};
    ASSERT_TRUE(engine->AddSequence(1, std::move(spec)).ok());
    for (int step = 0; step < 30; ++step) {
      const int32_t slots_seen = engine->KvSlots(1) + engine->PendingTokens(1);
      auto r = engine->Step({{{.sequence = 1, .num_tokens = engine->PendingTokens(1)}}});
      ASSERT_TRUE(r.ok()) << r.status();
      outputs[record].push_back(*r->outputs[0].token);
      if (!record) {
        EXPECT_TRUE(engine->SlotPositions(1).empty());
        EXPECT_TRUE(engine->LastQueryAttention(1).empty());
        continue;
      }
      const absl::Span<const float> attention = engine->LastQueryAttention(1);
      ASSERT_EQ(static_cast<int32_t>(attention.size()), slots_seen);
      double sum = 0;
      for (float p : attention) {
        EXPECT_GE(p, 0.0f);
        sum += p;
      }
      EXPECT_NEAR(sum, 1.0, 1e-5);
      // Window: the 2 sinks, then a contiguous run ending at the newest computed token.
      const absl::Span<const int32_t> positions = engine->SlotPositions(1);
      ASSERT_EQ(static_cast<int32_t>(positions.size()), engine->KvSlots(1));
      const int32_t newest = engine->TotalTokens(1) - 2;  // The sampled token is pending.
      EXPECT_EQ(positions.back(), newest);
      EXPECT_EQ(positions[0], 0);
      EXPECT_EQ(positions[1], 1);
      for (size_t i = 3; i < positions.size(); ++i) EXPECT_EQ(positions[i], positions[i - 1] + 1);
    }
    EXPECT_LT(engine->KvSlots(1), engine->TotalTokens(1) - 1);  // Eviction really happened.
    engine->RemoveSequence(1);
  }
  EXPECT_EQ(outputs[0], outputs[1]);
}

TEST(EngineTest, RejectsBadSequencesAndPlans) {
  auto engine = MakeEngine(GgufOptions());
  EXPECT_EQ(engine->AddSequence(1, {.prompt = {}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->AddSequence(1, {.prompt = {1, 600}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->AddSequence(1, {.prompt = std::vector<TokenId>(512, 5)}).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(engine->AddSequence(1, {.prompt = {1, 403}}).ok());
  EXPECT_EQ(engine->AddSequence(1, {.prompt = {1}}).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(engine->Step({{{.sequence = 2, .num_tokens = 1}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Step({{{.sequence = 1, .num_tokens = 3}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Step({{{.sequence = 1, .num_tokens = 1}, {.sequence = 1, .num_tokens = 1}}})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EngineTest, StepFailsCleanlyWhenKvIsExhausted) {
  EngineOptions options = GgufOptions();
  // Exactly one full context (512 tokens / 16 per block = 32 blocks in each of 5 layers).
  options.kv_cache_bytes = 32 * KvCache::BlockBytes(5, 32, 16);
  auto engine = MakeEngine(options);
  ASSERT_EQ(engine->total_kv_blocks(), 32 * 5);
  std::vector<TokenId> prompt(300, 400);
  prompt[0] = 1;
  ASSERT_TRUE(engine->AddSequence(1, {.prompt = prompt}).ok());
  ASSERT_TRUE(engine->AddSequence(2, {.prompt = prompt}).ok());
  ASSERT_TRUE(engine->Step({{{.sequence = 1, .num_tokens = 300}}}).ok());
  const int64_t free_before = engine->free_kv_blocks();
  EXPECT_EQ(engine->Step({{{.sequence = 2, .num_tokens = 300}}}).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(engine->free_kv_blocks(), free_before);  // Nothing changed.
}

}  // namespace
}  // namespace kvserve::engine
