#include "client/load_generator.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace kvserve::client {
namespace {

TEST(BuildPromptTokenIdsTest, HasExactLengthAndOrdinaryIds) {
  absl::StatusOr<std::vector<int32_t>> ids = BuildPromptTokenIds(200, 512, 7);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->size(), 200u);
  for (int32_t id : *ids) {
    EXPECT_GE(id, kFirstPromptTokenId);
    EXPECT_LT(id, 512);
  }
}

TEST(BuildPromptTokenIdsTest, SameSeedSameIdsOtherSeedOtherIds) {
  const std::vector<int32_t> a = BuildPromptTokenIds(64, 512, 1).value();
  const std::vector<int32_t> b = BuildPromptTokenIds(64, 512, 1).value();
  const std::vector<int32_t> c = BuildPromptTokenIds(64, 512, 2).value();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(BuildPromptTokenIdsTest, SmallestVocabularyUsesItsOnlyOrdinaryId) {
  const std::vector<int32_t> ids = BuildPromptTokenIds(5, kFirstPromptTokenId + 1, 0).value();
  EXPECT_EQ(ids, std::vector<int32_t>(5, kFirstPromptTokenId));
}

TEST(BuildPromptTokenIdsTest, RejectsImpossibleRequests) {
  EXPECT_EQ(BuildPromptTokenIds(0, 512, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildPromptTokenIds(4, kFirstPromptTokenId, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BuildWorkloadPromptTest, SharedPrefixIsCommonAndTheRestIsPerRequest) {
  LoadGenOptions options;
  options.prompt_tokens = 40;
  options.shared_prefix_tokens = 32;
  options.seed = 5;
  const std::vector<int32_t> a = BuildWorkloadPrompt(options, 512, false, 0).value();
  const std::vector<int32_t> b = BuildWorkloadPrompt(options, 512, false, 1).value();
  const std::vector<int32_t> w = BuildWorkloadPrompt(options, 512, true, 0).value();
  ASSERT_EQ(a.size(), 40u);
  ASSERT_EQ(b.size(), 40u);
  ASSERT_EQ(w.size(), 40u);
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + 32, b.begin()));
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + 32, w.begin()));  // Warmup fills the cache.
  EXPECT_FALSE(std::equal(a.begin() + 32, a.end(), b.begin() + 32));
  EXPECT_FALSE(std::equal(a.begin() + 32, a.end(), w.begin() + 32));
  EXPECT_EQ(a, BuildWorkloadPrompt(options, 512, false, 0).value());  // Replayable.
  options.seed = 6;  // Another run, another prefix.
  const std::vector<int32_t> other = BuildWorkloadPrompt(options, 512, false, 0).value();
  EXPECT_FALSE(std::equal(a.begin(), a.begin() + 32, other.begin()));
}

TEST(BuildWorkloadPromptTest, WithoutSharedPrefixPromptsDifferFromTheFirstId) {
  LoadGenOptions options;
  options.prompt_tokens = 16;
  const std::vector<int32_t> a = BuildWorkloadPrompt(options, 512, false, 0).value();
  const std::vector<int32_t> b = BuildWorkloadPrompt(options, 512, false, 1).value();
  ASSERT_EQ(a.size(), 16u);
  EXPECT_NE(std::vector<int32_t>(a.begin(), a.begin() + 8),
            std::vector<int32_t>(b.begin(), b.begin() + 8));
}

TEST(BuildWorkloadPromptTest, WholePromptSharedMakesEveryPromptEqual) {
  LoadGenOptions options;
  options.prompt_tokens = 12;
  options.shared_prefix_tokens = 12;
  const std::vector<int32_t> a = BuildWorkloadPrompt(options, 512, false, 0).value();
  EXPECT_EQ(a.size(), 12u);
  EXPECT_EQ(a, BuildWorkloadPrompt(options, 512, false, 7).value());
  EXPECT_EQ(a, BuildWorkloadPrompt(options, 512, true, 3).value());
}

LoadGenOptions ValidOptions() {
  LoadGenOptions options;
  options.requests = 4;
  return options;
}

struct InvalidOptionsCase {
  std::string name;
  void (*mutate)(LoadGenOptions&);
  std::string flag;  // The message must name it.
};

class InvalidLoadGenOptionsTest : public ::testing::TestWithParam<InvalidOptionsCase> {};

TEST_P(InvalidLoadGenOptionsTest, IsRejectedNamingTheFlag) {
  LoadGenOptions options = ValidOptions();
  ASSERT_TRUE(ValidateLoadGenOptions(options).ok());
  GetParam().mutate(options);
  const absl::Status status = ValidateLoadGenOptions(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find(GetParam().flag), absl::string_view::npos) << status;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, InvalidLoadGenOptionsTest,
    ::testing::Values(
        InvalidOptionsCase{"zero_concurrency", [](LoadGenOptions& o) { o.concurrency = 0; },
                           "--concurrency"},
        InvalidOptionsCase{"negative_rate", [](LoadGenOptions& o) { o.rate = -1; }, "--rate"},
        InvalidOptionsCase{"infinite_rate", [](LoadGenOptions& o) { o.rate = 1.0 / 0.0; },
                           "--rate"},
        InvalidOptionsCase{"zero_in_flight_cap", [](LoadGenOptions& o) { o.max_in_flight = 0; },
                           "--max-in-flight"},
        InvalidOptionsCase{"negative_requests", [](LoadGenOptions& o) { o.requests = -1; },
                           "--requests"},
        InvalidOptionsCase{"unbounded",
                           [](LoadGenOptions& o) {
                             o.requests = 0;
                             o.duration_s = 0;
                           },
                           "--duration"},
        InvalidOptionsCase{"zero_prompt", [](LoadGenOptions& o) { o.prompt_tokens = 0; },
                           "--prompt-tokens"},
        InvalidOptionsCase{"negative_shared_prefix",
                           [](LoadGenOptions& o) { o.shared_prefix_tokens = -1; },
                           "--shared-prefix-tokens"},
        InvalidOptionsCase{"shared_prefix_longer_than_prompt",
                           [](LoadGenOptions& o) {
                             o.prompt_tokens = 8;
                             o.shared_prefix_tokens = 9;
                           },
                           "--shared-prefix-tokens"},
        InvalidOptionsCase{"zero_max_tokens", [](LoadGenOptions& o) { o.max_tokens = 0; },
                           "--max-tokens"},
        InvalidOptionsCase{"negative_temperature", [](LoadGenOptions& o) { o.temperature = -1; },
                           "--temperature"},
        InvalidOptionsCase{"negative_warmup", [](LoadGenOptions& o) { o.warmup_requests = -1; },
                           "--warmup"},
        InvalidOptionsCase{"zero_timeout", [](LoadGenOptions& o) { o.timeout_s = 0; },
                           "--timeout"},
        InvalidOptionsCase{"bad_kv_policy", [](LoadGenOptions& o) { o.kv_policy = "lazyllm:keep=2"; },
                           "--kv-policy"}),
    [](const ::testing::TestParamInfo<InvalidOptionsCase>& info) { return info.param.name; });

// A stand-in server for driving RunLoad without gRPC: each request runs on its own thread,
// streams `max_tokens` one-token chunks a little apart, and fails with UNAVAILABLE when its
// prompt's first id is divisible by `fail_every` (0 = never). Records what it was sent.
class ScriptedTarget final : public GenerationTarget {
 public:
  explicit ScriptedTarget(int fail_every) : fail_every_(fail_every) {}
  ~ScriptedTarget() override {
    for (std::thread& thread : threads_) thread.join();
  }

  std::string Describe() const override { return "scripted"; }
  absl::StatusOr<TargetInfo> GetInfo(double) override { return TargetInfo{"scripted", 64, 0}; }

  void StartGenerate(const WorkItem& item, GenerationCallbacks callbacks) override {
    absl::MutexLock lock(&mu_);
    ++in_flight_;
    max_in_flight_ = std::max(max_in_flight_, in_flight_);
    prompts_.push_back(item.prompt_token_ids);
    const bool fail = fail_every_ > 0 && item.prompt_token_ids[0] % fail_every_ == 0;
    threads_.emplace_back([this, item, callbacks = std::move(callbacks), fail] {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      GenerationOutcome outcome;
      if (fail) {
        outcome.status = absl::UnavailableError("scripted failure");
      } else {
        for (int i = 0; i < item.max_tokens; ++i) {
          callbacks.on_tokens(1);
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        outcome.prompt_tokens = static_cast<int>(item.prompt_token_ids.size());
        outcome.completion_tokens = item.max_tokens;
      }
      {
        absl::MutexLock lock(&mu_);
        --in_flight_;
      }
      callbacks.on_done(outcome);
    });
  }

  int max_in_flight() {
    absl::MutexLock lock(&mu_);
    return max_in_flight_;
  }
  std::vector<std::vector<int32_t>> prompts() {
    absl::MutexLock lock(&mu_);
    return prompts_;
  }

 private:
  const int fail_every_;
  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::vector<int32_t>> prompts_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

TEST(RunLoadTest, ClosedLoopCompletesEveryRequestWithinConcurrency) {
  ScriptedTarget target(/*fail_every=*/0);
  LoadGenOptions options;
  options.concurrency = 3;
  options.requests = 12;
  options.prompt_tokens = 9;
  options.max_tokens = 5;
  options.warmup_requests = 2;
  absl::StatusOr<BenchReport> report = RunLoad(target, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->issued, 12);
  EXPECT_EQ(report->completed, 12);
  EXPECT_EQ(report->errored, 0);
  EXPECT_EQ(report->lost, 0);
  EXPECT_EQ(report->config.mode, "closed");
  EXPECT_EQ(report->total_prompt_tokens, 12 * 9);
  EXPECT_EQ(report->total_output_tokens, 12 * 5);
  EXPECT_EQ(report->ttft_s.count, 12u);
  EXPECT_EQ(report->e2e_s.count, 12u);
  EXPECT_EQ(report->itl_s.count, 12u * 4);  // One sample per token after the first.
  EXPECT_GT(report->ttft_s.p50, 0);
  EXPECT_LE(report->ttft_s.p50, report->e2e_s.p50);
  EXPECT_GT(report->decode_tokens_per_s, 0);
  EXPECT_GT(report->requests_per_s, 0);
  EXPECT_LE(target.max_in_flight(), 3);
  // Warmup requests were sent too, each prompt exactly as long as asked, ids in range.
  const std::vector<std::vector<int32_t>> prompts = target.prompts();
  ASSERT_EQ(prompts.size(), 14u);
  for (const std::vector<int32_t>& prompt : prompts) {
    ASSERT_EQ(prompt.size(), 9u);
    for (int32_t id : prompt) {
      EXPECT_GE(id, kFirstPromptTokenId);
      EXPECT_LT(id, 64);
    }
  }
}

TEST(RunLoadTest, SharedPrefixReachesEveryRequest) {
  ScriptedTarget target(/*fail_every=*/0);
  LoadGenOptions options;
  options.concurrency = 2;
  options.requests = 6;
  options.prompt_tokens = 10;
  options.shared_prefix_tokens = 6;
  options.max_tokens = 1;
  options.warmup_requests = 1;
  absl::StatusOr<BenchReport> report = RunLoad(target, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->completed, 6);
  EXPECT_EQ(report->config.shared_prefix_tokens, 6);
  const std::vector<std::vector<int32_t>> prompts = target.prompts();
  ASSERT_EQ(prompts.size(), 7u);
  for (const std::vector<int32_t>& prompt : prompts) {
    ASSERT_EQ(prompt.size(), 10u);
    EXPECT_TRUE(std::equal(prompt.begin(), prompt.begin() + 6, prompts[0].begin()));
  }
}

TEST(RunLoadTest, FailedRequestsAreCountedByCode) {
  ScriptedTarget target(/*fail_every=*/2);
  LoadGenOptions options;
  options.concurrency = 4;
  options.requests = 40;
  options.max_tokens = 2;
  absl::StatusOr<BenchReport> report = RunLoad(target, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->issued, 40);
  EXPECT_EQ(report->lost, 0);
  EXPECT_EQ(report->completed + report->errored, 40);
  // Prompts start with a random id in [3, 64): some even, some odd, with this seed.
  EXPECT_GT(report->errored, 0);
  EXPECT_GT(report->completed, 0);
  ASSERT_EQ(report->errors.size(), 1u);
  EXPECT_EQ(report->errors.at("UNAVAILABLE"), report->errored);
  EXPECT_EQ(report->first_error, "UNAVAILABLE: scripted failure");
  EXPECT_EQ(report->e2e_s.count, static_cast<size_t>(report->completed));
}

TEST(RunLoadTest, OpenLoopIssuesTheRequestedCount) {
  ScriptedTarget target(/*fail_every=*/0);
  LoadGenOptions options;
  options.rate = 2000;  // Arrivals ~0.5 ms apart: far faster than requests finish.
  options.max_in_flight = 5;
  options.requests = 20;
  options.max_tokens = 3;
  absl::StatusOr<BenchReport> report = RunLoad(target, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->config.mode, "open");
  EXPECT_EQ(report->issued, 20);
  EXPECT_EQ(report->completed, 20);
  EXPECT_EQ(report->lost, 0);
  EXPECT_LE(target.max_in_flight(), 5);
  EXPECT_GT(target.max_in_flight(), 1);  // Open loop does not wait for completions.
}

TEST(RunLoadTest, DurationBoundStopsIssuing) {
  ScriptedTarget target(/*fail_every=*/0);
  LoadGenOptions options;
  options.concurrency = 2;
  options.duration_s = 0.1;
  options.max_tokens = 2;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<BenchReport> report = RunLoad(target, options);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_GT(report->issued, 2);
  EXPECT_EQ(report->completed, report->issued);
  EXPECT_EQ(report->lost, 0);
  EXPECT_LT(elapsed, 5.0);
}

TEST(RunLoadTest, InvalidOptionsSendNothing) {
  ScriptedTarget target(/*fail_every=*/0);
  LoadGenOptions options;  // No --requests or --duration.
  EXPECT_EQ(RunLoad(target, options).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(target.prompts().empty());
}

}  // namespace
}  // namespace kvserve::client
