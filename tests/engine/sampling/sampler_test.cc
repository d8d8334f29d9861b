#include "engine/sampling/sampler.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <new>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

// Counts heap allocations in this test binary, to check that Sample() allocates nothing
// after its first call.
namespace {
std::atomic<int64_t> g_allocations{0};
}  // namespace

// The replacements pair malloc with free, which GCC cannot see through.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace kvserve::engine {
namespace {

using ::testing::HasSubstr;

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> RandomLogits(std::mt19937& rng, int n, int distinct_values) {
  // Few distinct values, so ties are common.
  std::uniform_int_distribution<int> value(0, distinct_values - 1);
  std::vector<float> logits(n);
  for (float& l : logits) l = 0.5f * static_cast<float>(value(rng)) - 3.0f;
  return logits;
}

TEST(SamplerTest, GreedyPicksArgmaxLowestIdOnTies) {
  Sampler sampler(SamplingParams{});
  EXPECT_EQ(sampler.Sample(std::vector<float>{1, 3, 3, 2}), 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{5}), 0);
  EXPECT_EQ(sampler.Sample(std::vector<float>{-1, -1, -0.5f, -0.5f}), 2);
  EXPECT_EQ(sampler.Sample(std::vector<float>{kNan, 1, 0}), 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{-kInf, -kInf, -kInf}), 0);
  EXPECT_EQ(sampler.Sample(std::vector<float>{0, kInf, 1}), 1);
  EXPECT_EQ(sampler.Sample({}), 0);
}

TEST(SamplerTest, SameSeedSameSequenceDifferentSeedDifferent) {
  std::mt19937 rng(7);
  const std::vector<float> logits = RandomLogits(rng, 512, 12);
  const SamplingParams params{.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 42};
  Sampler a(params), b(params);
  Sampler c(SamplingParams{.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 43});
  std::vector<TokenId> seq_a, seq_b, seq_c;
  for (int i = 0; i < 1000; ++i) {
    seq_a.push_back(a.Sample(logits));
    seq_b.push_back(b.Sample(logits));
    seq_c.push_back(c.Sample(logits));
  }
  EXPECT_EQ(seq_a, seq_b);
  EXPECT_NE(seq_a, seq_c);
  // The draws really vary (not stuck on one token).
  EXPECT_GT(std::set<TokenId>(seq_a.begin(), seq_a.end()).size(), 10u);
}

TEST(SamplerTest, TopKOneAndTinyTopPEqualGreedy) {
  std::mt19937 rng(11);
  Sampler greedy(SamplingParams{});
  Sampler top_k1(SamplingParams{.temperature = 1.5f, .top_k = 1, .top_p = 1.0f, .seed = 1});
  Sampler tiny_p(SamplingParams{.temperature = 0.8f, .top_k = 0, .top_p = 1e-6f, .seed = 2});
  Sampler both(SamplingParams{.temperature = 2.0f, .top_k = 50, .top_p = 1e-6f, .seed = 3});
  for (int i = 0; i < 300; ++i) {
    const std::vector<float> logits = RandomLogits(rng, 1 + i % 700, 4 + i % 5);
    const TokenId expected = greedy.Sample(logits);
    ASSERT_EQ(top_k1.Sample(logits), expected) << i;
    ASSERT_EQ(tiny_p.Sample(logits), expected) << i;
    ASSERT_EQ(both.Sample(logits), expected) << i;
  }
}

TEST(SamplerTest, TopKNeverLeavesTheTopK) {
  std::mt19937 rng(5);
  const std::vector<float> logits = RandomLogits(rng, 1000, 1000);
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const float threshold = sorted[4];  // Fifth largest (values are distinct enough).
  Sampler sampler(SamplingParams{.temperature = 100.0f, .top_k = 5, .top_p = 1.0f, .seed = 9});
  std::set<TokenId> seen;
  for (int i = 0; i < 2000; ++i) {
    const TokenId id = sampler.Sample(logits);
    ASSERT_GE(logits[id], threshold);
    seen.insert(id);
  }
  EXPECT_GE(seen.size(), 5u);  // At temperature 100 all five come up.
}

struct FrequencyCase {
  std::string name;
  SamplingParams params;
  std::vector<float> logits;
  std::vector<double> expected;  // Probability per id.
};

void PrintTo(const FrequencyCase& c, std::ostream* os) { *os << c.name; }

class SamplerFrequencyTest : public ::testing::TestWithParam<FrequencyCase> {};

TEST_P(SamplerFrequencyTest, MatchesExpectedDistribution) {
  const FrequencyCase& c = GetParam();
  Sampler sampler(c.params);
  constexpr int kDraws = 200000;
  std::vector<int> counts(c.logits.size());
  for (int i = 0; i < kDraws; ++i) ++counts[sampler.Sample(c.logits)];
  for (size_t id = 0; id < c.logits.size(); ++id) {
    // Binomial standard deviation is <= 0.0012 here: 0.006 is 5 sigma.
    EXPECT_NEAR(static_cast<double>(counts[id]) / kDraws, c.expected[id], 0.006) << "id " << id;
  }
}

std::vector<double> Softmax(const std::vector<float>& logits, double temperature) {
  std::vector<double> p;
  double total = 0;
  for (float l : logits) total += std::exp(l / temperature);
  for (float l : logits) p.push_back(std::exp(l / temperature) / total);
  return p;
}

const std::vector<float> kLogLogits = {std::log(0.15f), std::log(0.5f), std::log(0.05f),
                                       std::log(0.3f)};

INSTANTIATE_TEST_SUITE_P(
    Cases, SamplerFrequencyTest,
    ::testing::Values(
        FrequencyCase{"TemperatureOne", {.temperature = 1.0f, .seed = 1}, {0, 1, 2, 3},
                      Softmax({0, 1, 2, 3}, 1.0)},
        FrequencyCase{"TemperatureLow", {.temperature = 0.7f, .seed = 2}, {0, 1, 2, 3},
                      Softmax({0, 1, 2, 3}, 0.7)},
        FrequencyCase{"TemperatureHigh", {.temperature = 3.0f, .seed = 3}, {0, 1, 2, 3, -1},
                      Softmax({0, 1, 2, 3, -1}, 3.0)},
        // Keeps 0.5 + 0.3 (mass 0.8 >= 0.7), renormalized.
        FrequencyCase{"TopP", {.temperature = 1.0f, .top_p = 0.7f, .seed = 4}, kLogLogits,
                      {0, 0.5 / 0.8, 0, 0.3 / 0.8}},
        FrequencyCase{"TopK", {.temperature = 1.0f, .top_k = 3, .seed = 5}, kLogLogits,
                      {0.15 / 0.95, 0.5 / 0.95, 0, 0.3 / 0.95}},
        // top-k 3 then top-p 0.9 of the renormalized {0.526, 0.316, 0.158}: keeps all three.
        FrequencyCase{"TopKThenTopP", {.temperature = 1.0f, .top_k = 3, .top_p = 0.9f,
                                       .seed = 6},
                      kLogLogits, {0.15 / 0.95, 0.5 / 0.95, 0, 0.3 / 0.95}},
        FrequencyCase{"NanNeverDrawn", {.temperature = 1.0f, .seed = 7}, {0, kNan, 0},
                      {0.5, 0, 0.5}}),
    [](const ::testing::TestParamInfo<FrequencyCase>& info) { return info.param.name; });

TEST(SamplerTest, NoAllocationAfterFirstCall) {
  std::mt19937 rng(3);
  const std::vector<float> logits = RandomLogits(rng, 32000, 50);
  const std::vector<float> smaller(logits.begin(), logits.begin() + 1000);
  for (const SamplingParams& params :
       {SamplingParams{.temperature = 1.0f},
        SamplingParams{.temperature = 0.9f, .top_k = 40},
        SamplingParams{.temperature = 0.9f, .top_p = 0.95f},
        SamplingParams{.temperature = 0.9f, .top_k = 100, .top_p = 0.5f}}) {
    Sampler sampler(params);
    const int64_t first = g_allocations.load();
    sampler.Sample(logits);
    const int64_t before = g_allocations.load();
    EXPECT_GT(before, first);  // The counter works: the first call sizes the scratch.
    for (int i = 0; i < 20; ++i) {
      sampler.Sample(logits);
      sampler.Sample(smaller);
    }
    EXPECT_EQ(g_allocations.load(), before);
  }
}

struct ValidationCase {
  std::string name;
  SamplingParams params;
  std::string message;  // Expected substring; "" when valid.
};

void PrintTo(const ValidationCase& c, std::ostream* os) { *os << c.name; }

class ValidateSamplingParamsTest : public ::testing::TestWithParam<ValidationCase> {};

TEST_P(ValidateSamplingParamsTest, ChecksEachField) {
  const absl::Status status = ValidateSamplingParams(GetParam().params);
  if (GetParam().message.empty()) {
    EXPECT_TRUE(status.ok()) << status;
    return;
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ValidateSamplingParamsTest,
    ::testing::Values(
        ValidationCase{"Defaults", {}, ""},
        ValidationCase{"AllAtLimits", {.temperature = 100.0f, .top_k = 1, .top_p = 1.0f}, ""},
        ValidationCase{"SmallTopP", {.temperature = 1.0f, .top_p = 1e-9f}, ""},
        ValidationCase{"NegativeTemperature", {.temperature = -0.5f},
                       "temperature is -0.5; it must be finite and in [0, 100]"},
        ValidationCase{"HugeTemperature", {.temperature = 101.0f}, "temperature is 101"},
        ValidationCase{"NanTemperature", {.temperature = kNan}, "temperature is nan"},
        ValidationCase{"InfTemperature", {.temperature = kInf}, "temperature is inf"},
        ValidationCase{"NegativeTopK", {.top_k = -1}, "top_k is -1; it must be >= 0"},
        ValidationCase{"ZeroTopP", {.top_p = 0.0f}, "top_p is 0; it must be finite and in (0, 1]"},
        ValidationCase{"TopPAboveOne", {.top_p = 1.5f}, "top_p is 1.5"},
        ValidationCase{"NanTopP", {.top_p = kNan}, "top_p is nan"}),
    [](const ::testing::TestParamInfo<ValidationCase>& info) { return info.param.name; });

}  // namespace
}  // namespace kvserve::engine
