// EngineGenerationTarget (kvserve-bench --model) on models/stories260K.gguf: the real engine,
// request queue and engine loop, driven directly and through RunLoad. Token counts are checked
// against the engine's own usage and against tests/testdata/stories260K_reference.json
// (llama.cpp's greedy output; none of its four continuations reaches EOS in 64 tokens).
#include "client/engine_generation_target.h"

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/load_generator.h"
#include "engine/compute/linear.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kvserve::client {
namespace {

const std::string kModel = KVSERVE_SOURCE_DIR "/models/stories260K.gguf";
const std::string kReference = KVSERVE_SOURCE_DIR "/tests/testdata/stories260K_reference.json";

EngineTargetOptions SmallEngineOptions() {
  BenchOptions flags;
  flags.model = kModel;
  flags.threads = 1;
  EngineTargetOptions options = MakeEngineTargetOptions(flags).value();
  return options;
}

// What one generation's callbacks saw.
struct Observed {
  int tokens = 0;  // Sum of on_tokens counts.
  int chunks = 0;
  bool done = false;
  GenerationOutcome outcome;
};

// Collects callbacks of generations started with Callbacks(i); Wait blocks until n are done.
class Collector {
 public:
  explicit Collector(int n) : observed_(static_cast<size_t>(n)) {}

  GenerationCallbacks Callbacks(int i) {
    GenerationCallbacks callbacks;
    callbacks.on_tokens = [this, i](int n) {
      absl::MutexLock lock(&mu_);
      observed_[i].tokens += n;
      ++observed_[i].chunks;
    };
    callbacks.on_done = [this, i](const GenerationOutcome& outcome) {
      absl::MutexLock lock(&mu_);
      observed_[i].done = true;
      observed_[i].outcome = outcome;
      ++done_;
    };
    return callbacks;
  }

  bool Wait(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto all_done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return done_ == static_cast<int>(observed_.size());
    };
    return mu_.AwaitWithTimeout(absl::Condition(&all_done), timeout);
  }

  std::vector<Observed> observed() {
    absl::MutexLock lock(&mu_);
    return observed_;
  }

 private:
  absl::Mutex mu_;
  std::vector<Observed> observed_ ABSL_GUARDED_BY(mu_);
  int done_ ABSL_GUARDED_BY(mu_) = 0;
};

// Forwards to another target and adds up what the engine reported for every generation
// (usage.completion_tokens) and what the callbacks counted, to compare with RunLoad's report.
class UsageRecordingTarget final : public GenerationTarget {
 public:
  explicit UsageRecordingTarget(GenerationTarget& inner) : inner_(inner) {}

  std::string Describe() const override { return inner_.Describe(); }
  absl::StatusOr<TargetInfo> GetInfo(double timeout_s) override {
    return inner_.GetInfo(timeout_s);
  }
  void StartGenerate(const WorkItem& item, GenerationCallbacks callbacks) override {
    auto counted = std::make_shared<int>(0);
    GenerationCallbacks wrapped;
    wrapped.on_tokens = [counted, on_tokens = callbacks.on_tokens](int n) {
      *counted += n;  // Callbacks of one generation never overlap.
      on_tokens(n);
    };
    wrapped.on_done = [this, counted, max_tokens = item.max_tokens,
                       on_done = callbacks.on_done](const GenerationOutcome& outcome) {
      {
        absl::MutexLock lock(&mu_);
        ++generations_;
        usage_completion_tokens_ += outcome.completion_tokens;
        if (*counted != outcome.completion_tokens) ++count_mismatches_;
        if (outcome.completion_tokens < 1 || outcome.completion_tokens > max_tokens) {
          ++out_of_range_;
        }
      }
      on_done(outcome);
    };
    inner_.StartGenerate(item, std::move(wrapped));
  }

  struct Totals {
    int generations = 0;
    int64_t usage_completion_tokens = 0;
    int count_mismatches = 0;  // Generations whose counted tokens differ from their usage.
    int out_of_range = 0;      // Generations with usage outside [1, max_tokens].
  };
  Totals totals() {
    absl::MutexLock lock(&mu_);
    return {generations_, usage_completion_tokens_, count_mismatches_, out_of_range_};
  }

 private:
  GenerationTarget& inner_;
  absl::Mutex mu_;
  int generations_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t usage_completion_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int count_mismatches_ ABSL_GUARDED_BY(mu_) = 0;
  int out_of_range_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST(EngineGenerationTargetTest, DescribesTheModel) {
  auto target = EngineGenerationTarget::Create(SmallEngineOptions());
  ASSERT_TRUE(target.ok()) << target.status();
  absl::StatusOr<TargetInfo> info = (*target)->GetInfo(1);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->vocab_size, 512);
  EXPECT_GT(info->max_tokens_limit, 64);
  EXPECT_NE((*target)->Describe().find("stories260K.gguf"), std::string::npos);
}

TEST(EngineGenerationTargetTest, RunLoadCompletesEveryRequestAndCountsEveryToken) {
  auto engine_target = EngineGenerationTarget::Create(SmallEngineOptions());
  ASSERT_TRUE(engine_target.ok()) << engine_target.status();

  LoadGenOptions options;
  options.concurrency = 8;
  options.requests = 32;
  options.prompt_tokens = 24;
  options.max_tokens = 32;
  options.seed = 11;

  UsageRecordingTarget batched(**engine_target);
  absl::StatusOr<BenchReport> report = RunLoad(batched, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->issued, 32);
  EXPECT_EQ(report->completed, 32);
  EXPECT_EQ(report->errored, 0) << report->first_error;
  EXPECT_EQ(report->lost, 0);
  EXPECT_EQ(report->total_prompt_tokens, 32 * 24);
  const UsageRecordingTarget::Totals totals = batched.totals();
  EXPECT_EQ(totals.generations, 32);
  EXPECT_EQ(totals.count_mismatches, 0);
  EXPECT_EQ(totals.out_of_range, 0);
  EXPECT_EQ(report->total_output_tokens, totals.usage_completion_tokens);
  EXPECT_EQ(report->ttft_s.count, 32u);
  EXPECT_EQ(report->itl_s.count, static_cast<size_t>(report->total_output_tokens - 32));
  EXPECT_GT(report->output_tokens_per_s, 0);

  // Greedy decoding is batch invariant, so the same workload one request at a time produces
  // exactly as many tokens (where a continuation reaches EOS, it does so at the same step).
  options.concurrency = 1;
  absl::StatusOr<BenchReport> alone = RunLoad(**engine_target, options);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ(alone->completed, 32);
  EXPECT_EQ(alone->total_output_tokens, report->total_output_tokens);
}

TEST(EngineGenerationTargetTest, ReferencePromptsGenerateEveryRequestedToken) {
  std::ifstream file(kReference);
  const nlohmann::json reference = nlohmann::json::parse(file);
  const nlohmann::json& results = reference.at("results");
  auto target = EngineGenerationTarget::Create(SmallEngineOptions());
  ASSERT_TRUE(target.ok()) << target.status();

  const int n = static_cast<int>(results.size());
  Collector collector(n);
  for (int i = 0; i < n; ++i) {
    WorkItem item;
    item.index = i;
    item.prompt_token_ids = results[i].at("prompt_ids").get<std::vector<int32_t>>();
    item.max_tokens = static_cast<int>(results[i].at("generated_ids").size());
    if (i % 2 == 1) item.kv_policy = "lazyllm";  // Per-request policies reach the engine.
    (*target)->StartGenerate(item, collector.Callbacks(i));
  }
  ASSERT_TRUE(collector.Wait(absl::Seconds(60)));
  const std::vector<Observed> observed = collector.observed();
  for (int i = 0; i < n; ++i) {
    SCOPED_TRACE(results[i].at("prompt").get<std::string>());
    const int expected = static_cast<int>(results[i].at("generated_ids").size());
    EXPECT_TRUE(observed[i].outcome.status.ok()) << observed[i].outcome.status;
    EXPECT_EQ(observed[i].tokens, expected);
    EXPECT_EQ(observed[i].outcome.completion_tokens, expected);
    EXPECT_EQ(observed[i].outcome.prompt_tokens,
              static_cast<int>(results[i].at("prompt_ids").size()));
    EXPECT_GE(observed[i].chunks, 1);
  }
}

TEST(EngineGenerationTargetTest, FullQueueRefusesWithUnavailableAndLosesNothing) {
  EngineTargetOptions options = SmallEngineOptions();
  // No room at all, so every request is refused however fast the engine takes them (a lone
  // request is exempt from the prompt-token bound, so that bound would not do).
  options.queue.max_queued_requests = 0;
  auto target = EngineGenerationTarget::Create(options);
  ASSERT_TRUE(target.ok()) << target.status();
  LoadGenOptions load;
  load.concurrency = 2;
  load.requests = 6;
  load.prompt_tokens = 8;
  absl::StatusOr<BenchReport> report = RunLoad(**target, load);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->completed, 0);
  EXPECT_EQ(report->errored, 6);
  EXPECT_EQ(report->lost, 0);
  EXPECT_EQ(report->errors, (std::map<std::string, int64_t>{{"UNAVAILABLE", 6}}));
}

TEST(EngineGenerationTargetTest, BadItemsAndExpiredDeadlinesEndWithTheirStatus) {
  auto target = EngineGenerationTarget::Create(SmallEngineOptions());
  ASSERT_TRUE(target.ok()) << target.status();
  Collector collector(4);
  WorkItem zero_tokens;
  zero_tokens.prompt_token_ids = {1, 400, 401};
  zero_tokens.max_tokens = 0;
  (*target)->StartGenerate(zero_tokens, collector.Callbacks(0));
  WorkItem hot = zero_tokens;
  hot.max_tokens = 4;
  hot.temperature = 1000;  // Outside the sampler's range.
  (*target)->StartGenerate(hot, collector.Callbacks(1));
  WorkItem bad_policy = hot;
  bad_policy.temperature = 0;
  bad_policy.kv_policy = "nosuch";
  WorkItem late = zero_tokens;
  late.max_tokens = 400;
  late.timeout_s = 1e-3;  // Passes long before 400 tokens are generated.
  (*target)->StartGenerate(late, collector.Callbacks(2));
  (*target)->StartGenerate(bad_policy, collector.Callbacks(3));
  ASSERT_TRUE(collector.Wait(absl::Seconds(60)));
  const std::vector<Observed> observed = collector.observed();
  EXPECT_EQ(observed[0].outcome.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(observed[1].outcome.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(observed[2].outcome.status.code(), absl::StatusCode::kDeadlineExceeded)
      << observed[2].outcome.status;
  EXPECT_EQ(observed[3].outcome.status.code(), absl::StatusCode::kInvalidArgument);
}

TEST(EngineGenerationTargetTest, DestroyingTheTargetEndsEveryStartedGeneration) {
  constexpr int kRequests = 6;
  Collector collector(kRequests);
  {
    auto target = EngineGenerationTarget::Create(SmallEngineOptions());
    ASSERT_TRUE(target.ok()) << target.status();
    for (int i = 0; i < kRequests; ++i) {
      WorkItem item;
      item.prompt_token_ids = BuildPromptTokenIds(16, 512, static_cast<uint64_t>(i)).value();
      item.max_tokens = 48;
      (*target)->StartGenerate(item, collector.Callbacks(i));
    }
  }
  // The destructor waited: everything is done without any further waiting.
  EXPECT_TRUE(collector.Wait(absl::ZeroDuration()));
}

struct WeightTypeCase {
  std::string name;
  std::string flag;  // --weight-type value; "" = not given.
  bool ok;
  engine::WeightType expected;  // When ok.
};

class MakeEngineTargetOptionsTest : public ::testing::TestWithParam<WeightTypeCase> {};

TEST_P(MakeEngineTargetOptionsTest, MapsTheFlags) {
  const WeightTypeCase& c = GetParam();
  BenchOptions flags;
  flags.model = kModel;
  flags.threads = 3;
  flags.weight_type = c.flag;
  flags.kv_cache_mb = 7;
  flags.max_batch_tokens = 128;
  flags.max_running = 5;
  absl::StatusOr<EngineTargetOptions> options = MakeEngineTargetOptions(flags);
  if (!c.ok) {
    EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument);
    return;
  }
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->engine.model_path, kModel);
  EXPECT_EQ(options->engine.num_threads, 3);
  EXPECT_EQ(options->engine.weight_type, c.expected);
  EXPECT_EQ(options->engine.kv_cache_bytes, 7 << 20);
  EXPECT_EQ(options->engine.max_batch_tokens, 128);
  EXPECT_EQ(options->loop.max_batch_tokens, 128);
  EXPECT_EQ(options->loop.max_running, 5);
}

INSTANTIATE_TEST_SUITE_P(
    WeightTypes, MakeEngineTargetOptionsTest,
    ::testing::Values(
        WeightTypeCase{"default", "", true, engine::EngineOptions{}.weight_type},
        WeightTypeCase{"f32", "f32", true, engine::WeightType::kF32},
        WeightTypeCase{"bf16", "bf16", true, engine::WeightType::kBf16},
        WeightTypeCase{"int8", "int8", true, engine::WeightType::kInt8},
        WeightTypeCase{"auto", "auto", true, engine::WeightType::kAuto},
        WeightTypeCase{"unknown", "f13", false, engine::WeightType::kF32}),
    [](const ::testing::TestParamInfo<WeightTypeCase>& info) { return info.param.name; });

// scalekv in process: with the bundled model's budget file requests run; without one the
// --kv-policy is refused before the model loads (and a request naming it gets
// FAILED_PRECONDITION); a file for another model is refused at Create.
TEST(EngineGenerationTargetTest, ScaleKvUsesTheBudgetFile) {
  BenchOptions flags;
  flags.model = kModel;
  flags.threads = 1;
  flags.load.kv_policy = "scalekv:keep=0.3";
  EXPECT_EQ(MakeEngineTargetOptions(flags).status().code(), absl::StatusCode::kInvalidArgument);
  flags.scalekv_budgets_path = KVSERVE_SOURCE_DIR "/models/stories260K.scalekv.json";
  absl::StatusOr<EngineTargetOptions> options = MakeEngineTargetOptions(flags);
  ASSERT_TRUE(options.ok()) << options.status();
  ASSERT_NE(options->kv_policy.scalekv_budgets, nullptr);
  auto target = EngineGenerationTarget::Create(*options);
  ASSERT_TRUE(target.ok()) << target.status();
  LoadGenOptions load = flags.load;
  load.concurrency = 2;
  load.requests = 4;
  load.prompt_tokens = 40;
  load.max_tokens = 24;
  absl::StatusOr<BenchReport> report = RunLoad(**target, load);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->completed, 4);
  EXPECT_EQ(report->errored, 0);

  auto plain = EngineGenerationTarget::Create(SmallEngineOptions());
  ASSERT_TRUE(plain.ok()) << plain.status();
  Collector collector(1);
  WorkItem item;
  item.prompt_token_ids = {1, 400, 401};
  item.max_tokens = 4;
  item.kv_policy = "scalekv";
  (*plain)->StartGenerate(item, collector.Callbacks(0));
  ASSERT_TRUE(collector.Wait(absl::Seconds(60)));
  EXPECT_EQ(collector.observed()[0].outcome.status.code(),
            absl::StatusCode::kFailedPrecondition);

  const std::string path = ::testing::TempDir() + "/two_layers.scalekv.json";
  std::ofstream(path) << R"({"format": "kvserve-scalekv-budgets/1", "layers": [
      {"layer": 0, "asi": 0.5, "role": "drafter"}, {"layer": 1, "asi": 0.9, "role": "refiner"}]})";
  flags.scalekv_budgets_path = path;
  options = MakeEngineTargetOptions(flags);
  ASSERT_TRUE(options.ok()) << options.status();
  auto wrong = EngineGenerationTarget::Create(*options);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("has 2 layers"), std::string::npos) << wrong.status();
  std::remove(path.c_str());
  flags.scalekv_budgets_path = "/nonexistent.scalekv.json";
  EXPECT_EQ(MakeEngineTargetOptions(flags).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MakeEngineTargetOptionsTest, NeedsAModel) {
  EXPECT_EQ(MakeEngineTargetOptions(BenchOptions{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvserve::client
